"""From a tool's parameters to an :class:`~rasterlearn.inference.engine.InferenceJob`.

Shared by every inference tool: open and check the model and the raster, resolve the model
arguments, the processing extent, mask and cell size, and plan the tiles.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.execution.threads import default_workers
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.geo.grid import Box
from rasterlearn.geo.raster import RasterSource, open_raster_input
from rasterlearn.geo.vector import load_mask
from rasterlearn.inference.engine import (
    InferenceJob,
    Tile,
    area_of_extent,
    cached_predictor,
    plan_tiles,
)
from rasterlearn.inference.predictors import Predictor, resolve_model_arguments, tile_shape

PROCESSING_MODES = ("PROCESS_AS_MOSAICKED_IMAGE", "PROCESS_ITEMS_SEPARATELY")

Extent = tuple[float, float, float, float]


@dataclass
class PreparedRun:
    """One raster ready to run: the job, its tiles, the opened parts and the processing area
    (grid pixels)."""

    job: InferenceJob
    tiles: list[Tile]
    source: RasterSource
    predictor: Predictor
    area: Box


def model_text(model: str | Path | dict) -> str:
    """The model as a string a worker process can open: a path or the emd's JSON text."""
    if isinstance(model, dict):
        return json.dumps(model)
    text = str(model)
    if text.lstrip().startswith("{"):
        return text
    return str(Path(text).absolute())


def model_version(model: str) -> str:
    """A token that changes when the model's files change (modification times and sizes)."""
    if model.lstrip().startswith("{"):
        definition = ModelDefinition.load(model)
        files = [definition.resolve("ModelFile")] if definition.get("ModelFile") else []
    else:
        path = Path(model)
        model_files = ("*.pth", "*.onnx", "*.pt", "*.ts", "*.py")
        files = [path, *(f for g in model_files for f in sorted(path.parent.glob(g)))]
    stamps = []
    for f in files:
        try:
            st = Path(f).stat()
            stamps.append(f"{f}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            stamps.append(f"{f}:missing")
    return "|".join(stamps)


def open_inputs(in_raster: str | Path, processing_mode: str) -> list[RasterSource]:
    """The raster(s) to process: one mosaic, or each item of a folder separately.

    Raises:
        ParameterError: for an unknown processing mode.
    """
    mode = str(processing_mode).upper()
    if mode not in PROCESSING_MODES:
        raise ParameterError(
            f"processing_mode {processing_mode!r} is not valid",
            "give " + " or ".join(PROCESSING_MODES),
        )
    return open_raster_input(in_raster, separately=mode == "PROCESS_ITEMS_SEPARATELY")


def prepare_run(
    source: RasterSource,
    predictor: Predictor,
    model: str,
    arguments: dict[str, Any] | None,
    processing_extent: Extent | None = None,
    mask: str | Path | None = None,
    cell_size: float | None = None,
    device: str | None = None,
) -> PreparedRun:
    """Check a raster against the model and plan its tiles.

    Raises:
        InputError: when the raster lacks the model's bands or a georeference it needs.
        ParameterError: for bad arguments, extents or cell sizes.
    """
    info = predictor.info
    if cell_size is not None:
        if not cell_size > 0:
            raise ParameterError(f"cell size must be positive, got {cell_size}", "")
        source = RasterSource(source.spec, source.name, cell_size)
    raster = source.info
    info.check_bands(raster.count, source.name)
    if info.image_space == "MAP_SPACE" and not raster.is_georeferenced:
        raise InputError(
            f"raster {source.name} has no coordinate system but the model works in MAP_SPACE",
            "georeference the raster, or use a model trained in PIXEL_SPACE",
        )
    values = resolve_model_arguments(info, arguments)
    grid = raster.grid
    area = area_of_extent(grid, processing_extent)
    mask_geom = None
    if mask is not None:
        mask_geom = load_mask(mask, grid.crs)
        if not shapely.intersects(mask_geom, grid.footprint):
            raise ParameterError(
                f"mask {Path(mask).name} does not overlap raster {source.name}",
                "give mask polygons over the raster (they are reprojected to its CRS)",
            )
    height, width = tile_shape(info, values)
    tiles = plan_tiles(area, height, width, values.get("padding", 0), grid.box)
    job = InferenceJob(
        raster=source.spec,
        raster_name=source.name,
        grid=grid,
        model=model,
        arguments=values,
        mask_wkb=shapely.to_wkb(mask_geom) if mask_geom is not None else None,
        device=device,
        cell_size=cell_size,
        model_version=model_version(model),
    )
    return PreparedRun(job, tiles, source, predictor, area)


def prepare_runs(
    in_raster: str | Path,
    in_model_definition: str | Path | dict,
    tasks: tuple[str, ...],
    wrong_task_hint: tuple[str, str],
    arguments: dict[str, Any] | None,
    processing_mode: str,
    processing_extent: Extent | None,
    mask: str | Path | None,
    cell_size: float | None,
    device: str | None,
) -> list[PreparedRun]:
    """Open the model (once per process) and every input raster, and plan their tiles.

    Raises:
        ParameterError: when the model's task is not one of ``tasks``.
        RasterLearnError: from :func:`prepare_run`.
    """
    model = model_text(in_model_definition)
    predictor = cached_predictor(model, device, model_version(model))
    if predictor.info.task not in tasks:
        raise ParameterError(
            f"the model is a {predictor.info.task} model, not {wrong_task_hint[0]}",
            wrong_task_hint[1],
        )
    return [
        prepare_run(s, predictor, model, arguments, processing_extent, mask, cell_size, device)
        for s in open_inputs(in_raster, processing_mode)
    ]


def cpu_lanes(num_workers: int | None) -> int:
    """Batches predicted at once in this process: ``num_workers``, else every core.

    Raises:
        ParameterError: for fewer than one.
    """
    if num_workers is not None and num_workers < 1:
        raise ParameterError(
            f"num_workers must be at least 1, got {num_workers}",
            "give 1 or more, or leave it out to use every core",
        )
    return default_workers(num_workers)


def cluster_client(cluster: str | None, scheduler: str | None) -> contextlib.AbstractContextManager:
    """A Dask client for ``cluster``/``scheduler``, or nothing (run in this process)."""
    if cluster is None and scheduler is None:
        return contextlib.nullcontext()
    from rasterlearn.execution.dask import dask_client

    return dask_client(cluster, scheduler)
