"""rasterlearn: deep learning on geospatial imagery, interoperable with ArcGIS Image Analyst."""

import importlib
from typing import Any

__all__ = [
    "classify_objects",
    "classify_pixels",
    "compute_accuracy_for_object_detection",
    "compute_change",
    "compute_pixel_accuracy",
    "detect_change",
    "detect_objects",
    "export_training_data",
    "non_maximum_suppression",
    "read_export_folder",
    "train_deep_learning_model",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Each tool is imported when it is first used, so `import rasterlearn` stays light.
    if name in __all__:
        return getattr(importlib.import_module(f"rasterlearn.tools.{name}"), name)
    raise AttributeError(f"module 'rasterlearn' has no attribute {name!r}")
