"""Classify Pixels Using Deep Learning: a classified raster from a pixel classification model."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from rasterlearn.errors import ParameterError
from rasterlearn.formats.classified_raster import ClassifiedRasterWriter, pixel_bytes
from rasterlearn.geo.grid import Box, Grid
from rasterlearn.geo.raster import bounded_gdal_cache
from rasterlearn.inference.engine import PixelResult, run_tiles
from rasterlearn.inference.jobs import Extent, PreparedRun, RunOptions, prepare_runs
from rasterlearn.inference.predictors import PIXEL
from rasterlearn.outputs import staged_files
from rasterlearn.progress import progress_bar
from rasterlearn.tools.declaration import OUTPUT, Parameter, declare
from rasterlearn.tools.parameters import (
    CELL_SIZE,
    CLUSTER,
    COG,
    DEVICE,
    IN_MODEL_DEFINITION,
    IN_RASTER,
    MASK,
    NUM_WORKERS,
    OVERWRITE,
    PIXEL_MODEL_ARGUMENTS,
    PROCESSING_EXTENT,
    PROCESSING_MODE,
    SCHEDULER,
    output,
)


def classify_pixels(
    in_raster: str | Path,
    out_classified_raster: str | Path,
    in_model_definition: str | Path | dict,
    arguments: dict[str, Any] | None = None,
    processing_mode: str = "PROCESS_AS_MOSAICKED_IMAGE",
    out_classified_folder: str | Path | None = None,
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
) -> list[Path]:
    """Classify every pixel of a raster of any size with a pixel classification model.

    The raster is cut into tiles of the model's chip size overlapping by twice the padding;
    each tile's padded margin is dropped, so the result has no seams. The output holds the
    model's class values, nodata where the input is nodata, a colour table and class names.

    Returns:
        The classified raster(s) written.

    Raises:
        RasterLearnError: for anything the user can fix, before any output is written.
    """
    options = RunOptions.of(
        in_model_definition,
        arguments=arguments,
        processing_mode=processing_mode,
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
    runs = prepare_runs(
        in_raster,
        options,
        (PIXEL,),
        ("a pixel classifier", "use detect-objects or classify-objects with this model"),
    )
    targets = _targets(runs, out_classified_raster, out_classified_folder, options.separately)
    with options.client() as client:
        for run, target in zip(runs, targets, strict=True):
            write_classified_raster(run, target, cog, options, client)
    return targets


def _targets(
    runs: list[PreparedRun], out_raster: str | Path, out_folder: str | Path | None, separately: bool
) -> list[Path]:
    if not separately:
        return [Path(out_raster)]
    if out_folder is None:
        raise ParameterError(
            "processing items separately needs an output folder",
            "give out_classified_folder (--out-classified-folder)",
        )
    folder = Path(out_folder)
    return [folder / (Path(r.source.name).stem + ".tif") for r in runs]


def write_classified_raster(
    run: PreparedRun, target: Path, cog: bool, options: RunOptions, client: Any
) -> None:
    """Predict a run's tiles and write its classified raster (and probabilities, when asked)
    over the processing area, on the raster's grid, staged and moved into place when complete.

    A raster processed at another cell size is classified on that grid into hidden files of
    the staging folder, then resampled (nearest) onto the raster's own grid.
    """
    job, info = run.job, run.predictor.info
    with_probs = bool(job.arguments.get("return_probability_raster"))
    targets = [target] + (
        [target.with_name(target.stem + "_probability.tif")] if with_probs else []
    )
    written = pixel_bytes(info.classes) + (pixel_bytes(info.classes, True) if with_probs else 0)
    with contextlib.ExitStack() as stack:
        stack.enter_context(bounded_gdal_cache(run.gdal_cache_bytes(written)))
        paths = [stack.enter_context(staged_files(t, options.overwrite)) for t in targets]
        if run.resampled:
            work = [p.with_name(f".processing-grid-{p.name}") for p in paths]
            stack.callback(lambda: [p.unlink(missing_ok=True) for p in work])
        else:
            work = paths
        writers = _writers(work, job.grid, run.area, info.classes, stack)
        label = f"Classifying {Path(run.source.name).name}"
        with progress_bar(label, len(run.tiles), options.progress) as advance:
            for result in run_tiles(job, run.tiles, client, advance, options.lanes):
                assert isinstance(result, PixelResult)
                box = result.box.relative_to(run.area)
                writers[0].write(box, result.classes)
                if with_probs and result.probabilities is not None:
                    writers[1].write(box, result.probabilities)
        if run.resampled:
            assert run.input_grid is not None and run.input_area is not None
            for writer in writers:
                writer.close()
            writers = _writers(paths, run.input_grid, run.input_area, info.classes, stack)
            for writer, processed in zip(writers, work, strict=True):
                writer.write_resampled(processed)
        for writer in writers:
            writer.finish(cog)


def _writers(
    paths: list[Path], grid: Grid, area: Box, classes: list, stack: contextlib.ExitStack
) -> list[ClassifiedRasterWriter]:
    """A class raster writer (and a probability raster writer) covering ``area`` of ``grid``."""
    transform = grid.window(area).transform
    writers = []
    for k, path in enumerate(paths):
        writer = ClassifiedRasterWriter(
            path, transform, grid.crs, area.width, area.height, classes, k == 1
        )
        stack.callback(writer.close)
        writers.append(writer)
    return writers


def _result_lines(written: list[Path]) -> list[str]:
    return [f"Classified raster: {path}" for path in written]


TOOL = declare(
    classify_pixels,
    label="Classify Pixels Using Deep Learning",
    rest_name="ClassifyPixelsUsingDeepLearning",
    command="classify-pixels",
    summary=(
        "Classify Pixels Using Deep Learning: a classified raster of the model's class values."
    ),
    parameters=[
        IN_RASTER,
        output(
            "out_classified_raster",
            "file",
            "Output classified GeoTIFF (.tif) of the model's class values. With "
            "return_probability_raster a float32 <name>_probability.tif with one band a class "
            "is written beside it.",
            "Output Raster Dataset",
            "outputClassifiedRaster",
        ),
        IN_MODEL_DEFINITION,
        PIXEL_MODEL_ARGUMENTS,
        PROCESSING_MODE,
        Parameter(
            "out_classified_folder",
            "folder",
            "Output folder for PROCESS_ITEMS_SEPARATELY: one classified raster per item.",
            OUTPUT,
            label="Output Folder",
            rest_name="outputClassifiedFolder",
        ),
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
