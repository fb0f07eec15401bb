"""Parameters several tools share, declared once (see :mod:`rasterlearn.tools.declaration`)."""

from __future__ import annotations

from rasterlearn.geo.raster import PROCESSING_MODES
from rasterlearn.tools.declaration import INPUT, OUTPUT, Parameter

IN_RASTER = Parameter(
    "in_raster",
    "raster",
    "Input raster: a file, VRT, URL (http, s3) or folder of rasters.",
    INPUT,
    label="Input Raster",
    rest_name="inputRaster",
    positional=True,
)
IN_MODEL_DEFINITION = Parameter(
    "in_model_definition",
    "model",
    "The model: an .emd file, a .dlpk package, a model folder or the emd's JSON text.",
    INPUT,
    label="Model Definition",
    rest_name="model",
    flag="--model",
)
PROCESSING_MODE = Parameter(
    "processing_mode",
    "string",
    "How a folder of rasters is processed: as one mosaic, or item by item.",
    label="Processing Mode",
    rest_name="processingMode",
    choices=PROCESSING_MODES,
)
PROCESSING_EXTENT = Parameter(
    "processing_extent",
    "extent",
    "Processing extent XMIN YMIN XMAX YMAX in the raster's coordinate system.",
    label="Processing Extent",
    rest_name="extent",
)
MASK = Parameter(
    "mask",
    "features",
    "Polygons outside which nothing is processed (reprojected to the raster's CRS).",
    INPUT,
    label="Processing Mask",
    rest_name="mask",
)
CELL_SIZE = Parameter(
    "cell_size",
    "float",
    "Process on a grid of this cell size (map units).",
    label="Cell Size",
    rest_name="cellSize",
)
DEVICE = Parameter(
    "device",
    "string",
    "cpu, cuda or cuda:N; default the GPU when there is one.",
    label="Processor Type",
    rest_name="processorType",
)
NUM_WORKERS = Parameter(
    "num_workers",
    "integer",
    "CPU cores to use in this process (default: every core); each works on its own batch.",
    label="Parallel Processing Factor",
    rest_name="parallelProcessingFactor",
)
CLUSTER = Parameter(
    "cluster",
    "string",
    "Run on a local Dask cluster of N worker processes: local:N.",
    label="Local Cluster",
)
SCHEDULER = Parameter(
    "scheduler",
    "string",
    "Run on a running Dask cluster: its scheduler's tcp://HOST:PORT. Its workers must reach "
    "the inputs and the output folder.",
    label="Dask Scheduler",
)
PIXEL_MODEL_ARGUMENTS = Parameter(
    "arguments",
    "key_values",
    "Model arguments NAME=VALUE (padding, batch_size, predict_background, "
    "test_time_augmentation, merge_policy, return_probability_raster); see "
    "'model info'.",
    label="Arguments",
    rest_name="modelArguments",
    flag="--arg",
)
"""The model arguments of the tools that write a classified raster."""
COG = Parameter(
    "cog", "boolean", "Write a Cloud-Optimized GeoTIFF (with overviews).", off_flag=None
)
OVERWRITE = Parameter(
    "overwrite",
    "boolean",
    "Replace existing outputs.",
    label="Overwrite",
    rest_name="overwrite",
)
BLOCK_SIZE = Parameter(
    "block_size",
    "integer",
    "Rows and columns read at a time (bounds memory).",
    label="Block Size",
)


def output(name: str, type_: str, help_: str, label: str, rest_name: str) -> Parameter:
    """A positional output dataset."""
    return Parameter(name, type_, help_, OUTPUT, label=label, rest_name=rest_name, positional=True)
