"""Detect Change Using Deep Learning: a classified change raster from two dates of one area."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from rasterlearn.geo.pair import check_pair
from rasterlearn.geo.raster import bounded_gdal_cache, open_raster_input
from rasterlearn.inference.jobs import Extent, RunOptions, open_inputs, open_model, prepare_run
from rasterlearn.inference.predictors import CHANGE
from rasterlearn.tools.classify_pixels import write_classified_raster
from rasterlearn.tools.declaration import INPUT, Parameter, declare
from rasterlearn.tools.parameters import (
    CELL_SIZE,
    CLUSTER,
    COG,
    DEVICE,
    IN_MODEL_DEFINITION,
    MASK,
    NUM_WORKERS,
    OVERWRITE,
    PIXEL_MODEL_ARGUMENTS,
    PROCESSING_EXTENT,
    SCHEDULER,
    output,
)


def detect_change(
    from_raster: str | Path,
    to_raster: str | Path,
    out_classified_raster: str | Path,
    in_model_definition: str | Path | dict,
    arguments: dict[str, Any] | None = None,
    processing_extent: Extent | None = None,
    mask: str | Path | None = None,
    cell_size: float | None = None,
    cog: bool = False,
    device: str | None = None,
    num_workers: int | None = None,
    cluster: str | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Classify the change between two rasters of one area with a change detection model.

    The output lies on the "from" raster's grid. The "to" raster may differ in cell size,
    extent and coordinate system: each tile of it is warped onto that grid as it is read. The
    tiles go through the same engine as classify-pixels (seam-free, streaming, every core or a
    Dask cluster), and the output has the same form: the model's change-class values, nodata
    where either raster is nodata or the "to" raster does not reach, a colour table and names.

    Returns:
        The classified change raster written.

    Raises:
        RasterLearnError: for anything the user can fix (rasters without a common area or of
            other band counts, a model that is not a change detector), before any output.
    """
    options = RunOptions.of(
        in_model_definition,
        arguments=arguments,
        processing_extent=processing_extent,
        mask=mask,
        cell_size=cell_size,
        device=device,
        num_workers=num_workers,
        cluster=cluster,
        scheduler=scheduler,
        overwrite=overwrite,
        progress=progress,
    )
    sources = open_inputs(from_raster, options)
    later = open_raster_input(to_raster)[0]
    try:
        check_pair(sources[0], later)
    finally:
        later.close()
    predictor = open_model(
        options,
        (CHANGE,),
        ("a change detector", "train one with model type CHANGEDETECTOR, or use classify-pixels"),
    )
    run = prepare_run(sources[0], predictor, options)
    run = replace(run, job=replace(run.job, raster2=later.spec, raster2_name=later.name))
    target = Path(out_classified_raster)
    with options.client() as client, bounded_gdal_cache():
        write_classified_raster(run, target, cog, options, client)
    return target


def _result_lines(written: Path) -> list[str]:
    return [f"Change raster: {written}"]


TOOL = declare(
    detect_change,
    label="Detect Change Using Deep Learning",
    rest_name="DetectChangeUsingDeepLearning",
    command="detect-change",
    summary=(
        "Detect Change Using Deep Learning: a classified change raster from two rasters of one "
        "area."
    ),
    parameters=[
        Parameter(
            "from_raster",
            "raster",
            "The earlier raster: a file, VRT, URL (http, s3) or folder of rasters. The output "
            "lies on its grid.",
            INPUT,
            label="From Raster",
            rest_name="fromRaster",
            positional=True,
        ),
        Parameter(
            "to_raster",
            "raster",
            "The later raster of the same area and bands (any cell size and coordinate system).",
            INPUT,
            label="To Raster",
            rest_name="toRaster",
            positional=True,
        ),
        output(
            "out_classified_raster",
            "file",
            "Output classified GeoTIFF (.tif) of the model's change classes. With "
            "return_probability_raster a float32 <name>_probability.tif is written beside it.",
            "Output Classified Raster",
            "outputClassifiedRaster",
        ),
        IN_MODEL_DEFINITION,
        PIXEL_MODEL_ARGUMENTS,
        PROCESSING_EXTENT,
        MASK,
        CELL_SIZE,
        COG,
        DEVICE,
        NUM_WORKERS,
        CLUSTER,
        SCHEDULER,
        OVERWRITE,
    ],
    report=_result_lines,
    python_only=("progress",),
)
