"""Accuracy tools: Compute Accuracy For Object Detection and pixel classification accuracy."""

from rasterlearn.accuracy.detection import compute_accuracy_for_object_detection
from rasterlearn.accuracy.pixels import compute_pixel_accuracy

__all__ = ["compute_accuracy_for_object_detection", "compute_pixel_accuracy"]
