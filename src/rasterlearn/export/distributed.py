"""Distributed export on a Dask cluster, byte for byte that of a run in one process.

The client plans the chips; blocks of consecutive plans go to the workers, which open the
rasters themselves (path or URL), cut the chips and send back only what the statistics need.
In block order the client numbers each block's chips, and the worker holding them writes them
under their final names. The client merges the statistics in plan order.
"""

from __future__ import annotations

import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rasterio.crs import CRS
from rasterio.enums import Resampling

from rasterlearn.errors import OutputError
from rasterlearn.execution.dask import (
    map_blocks_staged,
    on_every_worker,
    worker_threads,
)
from rasterlearn.formats.chips import (
    ChipGeoref,
    ChipTally,
    ClassInfo,
    ExportWriter,
    chip_tally,
)
from rasterlearn.geo.raster import (
    RasterSource,
    bounded_gdal_cache,
)
from rasterlearn.geo.stats import BandStats
from rasterlearn.geo.vector import FeatureSet

if TYPE_CHECKING:
    from distributed import Client
from rasterlearn.export.cut import ChipCutter, CutChip
from rasterlearn.export.plan import ChipPlan
from rasterlearn.export.settings import ExportSettings

MAX_CHIPS_PER_BLOCK = 32


BLOCKS_PER_WORKER_THREAD = 4


@dataclass(frozen=True)
class SourceSpec:
    """How a worker opens a raster, and the georeference its chips get."""

    spec: str
    name: str
    cell_size: float | None
    resampling: Resampling
    crs: CRS | None
    nodata: float | None

    @classmethod
    def of(cls, src: RasterSource) -> SourceSpec:
        info = src.info
        return cls(src.spec, src.name, src.cell_size, src.resampling, info.grid.crs, info.nodata)

    def open(self) -> RasterSource:
        return RasterSource(self.spec, self.name, self.cell_size, self.resampling)


@dataclass(frozen=True)
class ExportJob:
    """Everything a worker needs, sent to each worker once."""

    token: str
    folder: Path
    settings: ExportSettings
    sources: tuple[SourceSpec, ...]
    features: FeatureSet | None
    class_source: SourceSpec | None
    classes: tuple[ClassInfo, ...]


@dataclass(frozen=True)
class _ChipBlock:
    """Consecutive chip plans of one source."""

    source: int
    plans: tuple[ChipPlan, ...]


@dataclass(frozen=True)
class _BlockSummary:
    """What the client needs of a cut block: its size, and per kept chip its statistics."""

    planned: int
    chips: tuple[tuple[ChipTally | None, list[BandStats]], ...]


class _WorkerRasters:
    """A job's rasters on one worker, opened when a block first needs them."""

    def __init__(self, job: ExportJob) -> None:
        self.job = job
        self.class_source = job.class_source.open() if job.class_source is not None else None
        self.cutters: dict[int, ChipCutter] = {}

    def cutter(self, source: int) -> ChipCutter:
        cutter = self.cutters.get(source)
        if cutter is None:
            job = self.job
            raster = job.sources[source].open()
            cutter = ChipCutter(raster, job.settings, job.features, self.class_source)
            self.cutters[source] = cutter
        return cutter

    def close(self) -> None:
        for cutter in self.cutters.values():
            cutter.source.close()
        if self.class_source is not None:
            self.class_source.close()


class _WorkerJobs:
    """Per worker process: the rasters of the last jobs, kept open for their next blocks."""

    KEEP = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, _WorkerRasters] = OrderedDict()

    def cutter(self, job: ExportJob, source: int) -> ChipCutter:
        with self._lock:
            rasters = self._jobs.get(job.token)
            if rasters is None:
                rasters = self._jobs[job.token] = _WorkerRasters(job)
                while len(self._jobs) > self.KEEP:
                    self._jobs.popitem(last=False)[1].close()
            self._jobs.move_to_end(job.token)
            return rasters.cutter(source)

    def forget(self, token: str) -> None:
        with self._lock:
            rasters = self._jobs.pop(token, None)
        if rasters is not None:
            rasters.close()


_WORKER_JOBS = _WorkerJobs()


def _cut_block(
    block: _ChipBlock, job: ExportJob
) -> tuple[_BlockSummary, tuple[int, list[CutChip]]]:
    """On a worker: cut a block's chips; the kept chips stay there until numbered."""
    with bounded_gdal_cache():
        cutter = _WORKER_JOBS.cutter(job, block.source)
        chips = [chip for chip in map(cutter, block.plans) if chip is not None]
    kind = job.settings.fmt.labels
    summary = _BlockSummary(
        len(block.plans), tuple((chip_tally(kind, c.labels), c.band_stats) for c in chips)
    )
    return summary, (block.source, chips)


def _write_block(
    payload: tuple[int, list[CutChip]], first_index: int, job: ExportJob
) -> list[tuple[int, str]]:
    """On a worker: write a block's chips numbered from ``first_index``; their map.txt lines."""
    source, chips = payload
    if not job.folder.is_dir():
        raise OutputError(
            f"the output folder {job.folder.parent} is not reachable from Dask worker "
            f"{socket.gethostname()}",
            "write to a folder every worker shares (a network file system), or use --cluster",
        )
    s = job.settings
    writer = ExportWriter(job.folder, s.fmt, s.chip_format, list(job.classes), create_folders=False)
    spec = job.sources[source]
    lines = []
    for k, chip in enumerate(chips):
        georef = ChipGeoref(chip.transform, spec.crs, spec.nodata)
        index = first_index + k
        lines.append((index, writer.write_chip(index, chip.data, georef, chip.labels)))
    return lines


def _blocks(plans_per_source: list[list[ChipPlan]], size: int) -> list[_ChipBlock]:
    return [
        _ChipBlock(source, tuple(plans[i : i + size]))
        for source, plans in enumerate(plans_per_source)
        for i in range(0, len(plans), size)
    ]


def _forget_job(token: str) -> None:
    """On a worker: close the rasters a finished job opened."""
    _WORKER_JOBS.forget(token)


def write_chips_distributed(
    client: Client,
    writer: ExportWriter,
    job: ExportJob,
    plans_per_source: list[list[ChipPlan]],
    advance: Callable[[int], None],
) -> None:
    """Cut and write every chip on the client's workers; statistics merged here in plan order."""
    total = sum(len(p) for p in plans_per_source)
    threads = worker_threads(client)
    size = max(1, min(MAX_CHIPS_PER_BLOCK, -(-total // (BLOCKS_PER_WORKER_THREAD * threads))))
    next_index = 0

    def number(summary: _BlockSummary) -> int:
        nonlocal next_index
        first = next_index
        next_index += len(summary.chips)
        return first

    try:
        for summary, lines in map_blocks_staged(
            client,
            _cut_block,
            _write_block,
            _blocks(plans_per_source, size),
            job,
            decide=number,
            name="export",
        ):
            for tally, band_stats in summary.chips:
                writer.count_chip(tally, band_stats)
            for index, line in lines:
                writer.add_map_line(index, line)
            advance(summary.planned)
    finally:
        on_every_worker(client, _forget_job, job.token)
