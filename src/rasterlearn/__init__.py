"""rasterlearn: deep learning on geospatial imagery, interoperable with ArcGIS Image Analyst."""

from typing import Any

from rasterlearn.export import export_training_data
from rasterlearn.formats.export_reader import read_export_folder

__all__ = ["export_training_data", "read_export_folder", "train_deep_learning_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The training tool pulls in torch and Lightning: import it only when it is used.
    if name == "train_deep_learning_model":
        from rasterlearn.train import train_deep_learning_model

        return train_deep_learning_model
    raise AttributeError(f"module 'rasterlearn' has no attribute {name!r}")
