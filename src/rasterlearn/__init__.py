"""rasterlearn: deep learning on geospatial imagery, interoperable with ArcGIS Image Analyst."""

from typing import Any

from rasterlearn.formats.export_reader import read_export_folder
from rasterlearn.tools.export_training_data import export_training_data

__all__ = [
    "classify_objects",
    "classify_pixels",
    "compute_accuracy_for_object_detection",
    "compute_pixel_accuracy",
    "detect_objects",
    "export_training_data",
    "non_maximum_suppression",
    "read_export_folder",
    "train_deep_learning_model",
]
__version__ = "0.1.0"

_INFERENCE_TOOLS = {
    "classify_pixels": "rasterlearn.tools.classify_pixels",
    "detect_objects": "rasterlearn.tools.detect_objects",
    "classify_objects": "rasterlearn.tools.classify_objects",
}


def __getattr__(name: str) -> Any:
    # The training tool pulls in torch and Lightning: import it only when it is used.
    if name == "train_deep_learning_model":
        from rasterlearn.training.train import train_deep_learning_model

        return train_deep_learning_model
    if name == "non_maximum_suppression":
        from rasterlearn.tools.non_maximum_suppression import non_maximum_suppression

        return non_maximum_suppression
    if name == "compute_accuracy_for_object_detection":
        from rasterlearn.tools.compute_accuracy_for_object_detection import (
            compute_accuracy_for_object_detection,
        )

        return compute_accuracy_for_object_detection
    if name == "compute_pixel_accuracy":
        from rasterlearn.tools.compute_pixel_accuracy import compute_pixel_accuracy

        return compute_pixel_accuracy
    if name in _INFERENCE_TOOLS:
        import importlib

        return getattr(importlib.import_module(_INFERENCE_TOOLS[name]), name)
    raise AttributeError(f"module 'rasterlearn' has no attribute {name!r}")
