"""rasterlearn: deep learning on geospatial imagery, interoperable with ArcGIS Image Analyst."""

from rasterlearn.export import export_training_data
from rasterlearn.formats.export_reader import read_export_folder

__all__ = ["export_training_data", "read_export_folder"]
__version__ = "0.1.0"
