"""From a tool's parameters to an :class:`~rasterlearn.inference.engine.InferenceJob`.

Shared by every inference tool: open and check the model and the raster, resolve the model
arguments, the processing extent, mask and cell size, and plan the tiles.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from rasterlearn.errors import ParameterError
from rasterlearn.execution.threads import default_workers
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.geo.grid import Box, Grid
from rasterlearn.geo.raster import (
    GDAL_CACHE_BYTES,
    PROCESSING_MODES,
    RasterSource,
    open_raster_input,
)
from rasterlearn.geo.vector import load_mask
from rasterlearn.inference.engine import (
    InferenceJob,
    Tile,
    area_of_extent,
    cached_predictor,
    plan_tiles,
)
from rasterlearn.inference.model_input import (
    CellSizeRange,
    check_raster,
    model_band_names,
    processing_cell_size,
)
from rasterlearn.inference.predictors import Predictor, resolve_model_arguments, tile_shape

Extent = tuple[float, float, float, float]


@dataclass
class PreparedRun:
    """One raster ready to run: the job, its tiles, the opened parts and the processing area
    (grid pixels).

    When the raster is processed at another cell size (the model's, or the one given), the
    job's grid is the resampled one; ``input_grid`` and ``input_area`` are then the raster's
    own grid and the processing area on it, where outputs are written.
    """

    job: InferenceJob
    tiles: list[Tile]
    source: RasterSource
    predictor: Predictor
    area: Box
    input_grid: Grid | None = None
    input_area: Box | None = None

    @property
    def resampled(self) -> bool:
        """Whether the raster is processed on another grid than its own."""
        return self.input_grid is not None and self.input_grid != self.job.grid

    def gdal_cache_bytes(self, output_bytes_per_pixel: int = 0) -> int:
        """GDAL's block cache for this run: its working set, not the raster.

        Tiles are read a row at a time, so the blocks worth keeping are the input's under one
        row of tiles (and the row of blocks below, which the next row of tiles overlaps) and
        the output's block rows being filled (a block row evicted half-written would be
        compressed and stored twice). Blocks of up to :data:`IO_BLOCK_ROWS` rows are assumed.
        At least :data:`MIN_GDAL_CACHE_BYTES`, at most
        :data:`~rasterlearn.geo.raster.GDAL_CACHE_BYTES`.

        Args:
            output_bytes_per_pixel: Bytes a pixel of the raster outputs written meanwhile.
        """
        info = self.source.info
        rows = tile_shape(self.predictor.info, self.job.arguments)[0] + IO_BLOCK_ROWS
        per_pixel = info.count * np.dtype(info.dtype).itemsize + output_bytes_per_pixel
        return int(
            min(GDAL_CACHE_BYTES, max(MIN_GDAL_CACHE_BYTES, self.area.width * rows * per_pixel))
        )


IO_BLOCK_ROWS = 512
"""The block height assumed for rasters read and written (a COG's default)."""

MIN_GDAL_CACHE_BYTES = 16 * 2**20
"""The smallest GDAL block cache an inference run gets."""


@dataclass(frozen=True)
class RunOptions:
    """How an inference tool runs: built once from the tool's parameters, checked, and passed
    on as one value.

    Attributes:
        model: The model as a worker process opens it (:func:`model_text`).
        arguments: Model arguments as given (resolved per raster against the model's list).
        processing_mode: ``PROCESS_AS_MOSAICKED_IMAGE`` or ``PROCESS_ITEMS_SEPARATELY``.
        processing_extent: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS, or None.
        mask: Polygons outside which nothing is processed, or None.
        cell_size: Cell size the raster is resampled to, or None.
        device: Torch device, or None for the default.
        lanes: Batches predicted at once in this process.
        cluster: ``local:N``, or None.
        scheduler: ``tcp://HOST:PORT`` of a running Dask scheduler, or None.
        overwrite: Replace existing outputs.
        progress: Show progress bars (None: on terminals).
    """

    model: str
    arguments: dict[str, Any] | None = None
    processing_mode: str = PROCESSING_MODES[0]
    processing_extent: Extent | None = None
    mask: str | Path | None = None
    cell_size: float | None = None
    device: str | None = None
    lanes: int = 1
    cluster: str | None = None
    scheduler: str | None = None
    overwrite: bool = False
    progress: bool | None = None

    @classmethod
    def of(
        cls,
        in_model_definition: str | Path | dict,
        *,
        num_workers: int | None = None,
        **options: Any,
    ) -> RunOptions:
        """The options of a run, checked before anything is opened.

        Args:
            in_model_definition: The model: ``.emd``, ``.dlpk``, model folder or JSON text.
            num_workers: CPU cores to use here (default every core).
            **options: The other attributes, by name.

        Raises:
            ParameterError: for an unknown processing mode, a cell size that is not
                positive, fewer than one worker, or a bad cluster or scheduler.
        """
        from rasterlearn.execution.dask import parse_cluster

        run = cls(model_text(in_model_definition), lanes=cpu_lanes(num_workers), **options)
        mode = str(run.processing_mode).upper()
        if mode not in PROCESSING_MODES:
            raise ParameterError(
                f"processing_mode {run.processing_mode!r} is not valid",
                "give " + " or ".join(PROCESSING_MODES),
            )
        if run.cell_size is not None and not run.cell_size > 0:
            raise ParameterError(
                f"cell size must be positive, got {run.cell_size}",
                "give the cell size in the raster's units, or leave it out for the model's",
            )
        parse_cluster(run.cluster, run.scheduler)
        return replace(run, processing_mode=mode)

    @property
    def separately(self) -> bool:
        """Each raster of a folder is processed on its own."""
        return self.processing_mode == "PROCESS_ITEMS_SEPARATELY"

    def client(self) -> contextlib.AbstractContextManager:
        """A Dask client for the cluster or scheduler, or nothing (run in this process)."""
        if self.cluster is None and self.scheduler is None:
            return contextlib.nullcontext()
        from rasterlearn.execution.dask import dask_client

        return dask_client(self.cluster, self.scheduler)


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
        model_files += ("*.keras", "*.h5", "*.hdf5", "*.pb", "*/saved_model.pb")  # elsewhere
        files = [path, *(f for g in model_files for f in sorted(path.parent.glob(g)))]
    stamps = []
    for f in files:
        try:
            st = Path(f).stat()
            stamps.append(f"{f}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            stamps.append(f"{f}:missing")
    return "|".join(stamps)


def open_inputs(
    in_raster: str | Path, options: RunOptions, predictor: Predictor | None = None
) -> list[RasterSource]:
    """The raster(s) to process: one mosaic, or each item of a folder separately.

    With the model, a STAC input gives the bands the model was trained on (by name), and an
    image service is read at the cell size given or else the model's.
    """
    names, cell = None, options.cell_size
    if predictor is not None:
        names = model_band_names(predictor.definition)
        trained = CellSizeRange.of(predictor.definition)
        cell = cell or (trained.low if trained is not None else None)
    return open_raster_input(
        in_raster,
        separately=options.separately,
        band_names=names,
        extent=options.processing_extent,
        default_cell_size=cell,
    )


def prepare_run(source: RasterSource, predictor: Predictor, options: RunOptions) -> PreparedRun:
    """Check a raster against the model and plan its tiles.

    Raises:
        InputError: when the raster lacks the model's bands or a georeference it needs.
        ParameterError: for bad arguments, extents or masks.
    """
    info = predictor.info
    check_raster(source, predictor)
    input_grid = source.info.grid
    input_area = area_of_extent(input_grid, options.processing_extent)
    cell = processing_cell_size(
        input_grid, CellSizeRange.of(predictor.definition), options.cell_size, source.name
    )
    if cell is not None:
        source = RasterSource(source.spec, source.name, cell)
    raster = source.info
    values = resolve_model_arguments(info, options.arguments)
    grid = raster.grid
    area = area_of_extent(grid, options.processing_extent)
    mask_geom = None
    if options.mask is not None:
        mask_geom = load_mask(options.mask, grid.crs)
        if not shapely.intersects(mask_geom, grid.footprint):
            raise ParameterError(
                f"mask {Path(options.mask).name} does not overlap raster {source.name}",
                "give mask polygons over the raster (they are reprojected to its CRS)",
            )
    height, width = tile_shape(info, values)
    tiles = plan_tiles(area, height, width, values.get("padding", 0), grid.box)
    job = InferenceJob(
        raster=source.spec,
        raster_name=source.name,
        grid=grid,
        model=options.model,
        arguments=values,
        mask_wkb=shapely.to_wkb(mask_geom) if mask_geom is not None else None,
        device=options.device,
        cell_size=cell,
        model_version=model_version(options.model),
    )
    return PreparedRun(job, tiles, source, predictor, area, input_grid, input_area)


def prepare_runs(
    in_raster: str | Path,
    options: RunOptions,
    tasks: tuple[str, ...],
    wrong_task_hint: tuple[str, str],
) -> list[PreparedRun]:
    """Open the model (once per process) and every input raster, and plan their tiles.

    Raises:
        ParameterError: when the model's task is not one of ``tasks``.
        RasterLearnError: from :func:`prepare_run`.
    """
    predictor = open_model(options, tasks, wrong_task_hint)
    sources = open_inputs(in_raster, options, predictor)
    return [prepare_run(s, predictor, options) for s in sources]


def open_model(
    options: RunOptions, tasks: tuple[str, ...], wrong_task_hint: tuple[str, str]
) -> Predictor:
    """The run's model, opened once per process, checked to be of one of ``tasks``.

    Raises:
        ParameterError: when the model's task is not one of ``tasks``.
    """
    predictor = cached_predictor(options.model, options.device, model_version(options.model))
    if predictor.info.kind not in tasks:
        raise ParameterError(
            f"the model is a {predictor.info.kind} model, not {wrong_task_hint[0]}",
            wrong_task_hint[1],
        )
    return predictor


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
