"""Cut and write chips in blocks, on lanes in this process or on a Dask cluster, byte for byte
the same either way.

This process plans the chips; blocks of consecutive plans go to the lanes or workers, which
open the rasters themselves (path or URL, once per process), cut the chips and send back only
what the statistics need. In block order this process numbers each block's chips, and the lane
or worker holding them writes them under their final names. The statistics are merged here in
plan order.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rasterio.crs import CRS
from rasterio.enums import Resampling

from rasterlearn.errors import OutputError
from rasterlearn.execution.blocks import block_size, blocks_of, run_blocks_staged
from rasterlearn.execution.cache import cached, forget_everywhere
from rasterlearn.execution.processes import ProcessLanes
from rasterlearn.export.cut import ChipCutter, CutChip
from rasterlearn.export.plan import ChipPlan
from rasterlearn.export.settings import ExportSettings
from rasterlearn.formats.chips import (
    ChipGeoref,
    ChipTally,
    ClassInfo,
    ExportWriter,
    chip_tally,
)
from rasterlearn.geo.grid import Grid
from rasterlearn.geo.pair import AlignedRaster
from rasterlearn.geo.raster import (
    RasterSource,
    bounded_gdal_cache,
)
from rasterlearn.geo.stats import BandStats
from rasterlearn.geo.vector import FeatureSet

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class SourceSpec:
    """How a worker opens a raster, and the georeference its chips get.

    ``onto`` is the grid an additional raster is read on (the first raster's), or None.
    """

    spec: str
    name: str
    cell_size: float | None
    resampling: Resampling
    crs: CRS | None
    nodata: float | None
    onto: Grid | None = None

    @classmethod
    def of(cls, src: RasterSource) -> SourceSpec:
        info = src.info
        onto = src.onto if isinstance(src, AlignedRaster) else None
        return cls(
            src.spec, src.name, src.cell_size, src.resampling, info.grid.crs, info.nodata, onto
        )

    def open(self) -> RasterSource:
        if self.onto is not None:
            return AlignedRaster(self.spec, self.name, self.onto, self.resampling)
        return RasterSource(self.spec, self.name, self.cell_size, self.resampling)


@dataclass(frozen=True)
class ExportJob:
    """Everything a lane or worker needs, sent to each worker once."""

    token: str
    folder: Path
    settings: ExportSettings
    sources: tuple[SourceSpec, ...]
    features: FeatureSet | None
    class_source: SourceSpec | None
    classes: tuple[ClassInfo, ...]
    second: SourceSpec | None = None


@dataclass(frozen=True)
class _ChipBlock:
    """Consecutive chip plans of one source."""

    source: int
    plans: tuple[ChipPlan, ...]


@dataclass(frozen=True)
class _BlockSummary:
    """What the client needs of a cut block: its size, and per kept chip its statistics
    (labels, bands, additional raster's bands)."""

    planned: int
    chips: tuple[tuple[ChipTally | None, list[BandStats], list[BandStats] | None], ...]


class _JobRasters:
    """A job's rasters in one process, opened when a block first needs them."""

    def __init__(self, job: ExportJob) -> None:
        self.job = job
        self.class_source = job.class_source.open() if job.class_source is not None else None
        self.cutters: dict[int, ChipCutter] = {}
        self._lock = threading.Lock()

    def cutter(self, source: int) -> ChipCutter:
        with self._lock:  # lanes of this process share it
            cutter = self.cutters.get(source)
            if cutter is None:
                job = self.job
                raster = job.sources[source].open()
                second = job.second.open() if job.second is not None else None
                cutter = ChipCutter(raster, job.settings, job.features, self.class_source, second)
                self.cutters[source] = cutter
            return cutter

    def close(self) -> None:
        for cutter in self.cutters.values():
            cutter.source.close()
            if cutter.second is not None:
                cutter.second.close()
        if self.class_source is not None:
            self.class_source.close()


def _cache_key(job: ExportJob) -> tuple[str, str]:
    return ("export", job.token)


def _job_rasters(job: ExportJob) -> _JobRasters:
    return cached(_cache_key(job), lambda: _JobRasters(job), _JobRasters.close)


def _cut_block(
    block: _ChipBlock, job: ExportJob
) -> tuple[_BlockSummary, tuple[int, list[CutChip]]]:
    """On a lane or worker: cut a block's chips; the kept chips stay there until numbered."""
    with bounded_gdal_cache():
        cutter = _job_rasters(job).cutter(block.source)
        chips = [chip for chip in map(cutter, block.plans) if chip is not None]
    kind = job.settings.fmt.labels
    summary = _BlockSummary(
        len(block.plans),
        tuple((chip_tally(kind, c.labels), c.band_stats, c.band_stats2) for c in chips),
    )
    return summary, (block.source, chips)


def _write_block(
    payload: tuple[int, list[CutChip]], first_index: int, job: ExportJob
) -> list[tuple[int, str]]:
    """On a lane or worker: write a block's chips numbered from ``first_index``; their map.txt
    lines."""
    source, chips = payload
    if not job.folder.is_dir():
        raise OutputError(
            f"the output folder {job.folder.parent} is not reachable from Dask worker "
            f"{socket.gethostname()}",
            "write to a folder every worker shares (a network file system), or use --cluster",
        )
    s = job.settings
    writer = ExportWriter(
        job.folder,
        s.fmt,
        s.chip_format,
        list(job.classes),
        create_folders=False,
        paired=job.second is not None,
    )
    spec = job.sources[source]
    lines = []
    for k, chip in enumerate(chips):
        georef = ChipGeoref(chip.transform, spec.crs, spec.nodata)
        second = None
        if chip.data2 is not None and job.second is not None:  # on the first raster's grid
            second = (chip.data2, ChipGeoref(chip.transform, spec.crs, job.second.nodata))
        index = first_index + k
        lines.append((index, writer.write_chip(index, chip.data, georef, chip.labels, second)))
    return lines


def _blocks(plans_per_source: list[list[ChipPlan]]) -> list[_ChipBlock]:
    """Blocks of consecutive plans of one source, sized by the whole job."""
    size = block_size(sum(len(plans) for plans in plans_per_source))
    return [
        _ChipBlock(source, tuple(plans))
        for source, all_plans in enumerate(plans_per_source)
        for plans in blocks_of(all_plans, size)
    ]


PROCESS_MIN_PLANS = 512
"""Planned chips from which several lanes are worker processes, not threads. Cutting a chip
is Python work (labels, statistics) that threads cannot overlap; starting a process (Python,
rasterio, shapely: about half a second of one core) pays for itself from a few hundred chips."""


def start_lanes_early(estimated_plans: int, lanes: int) -> ProcessLanes | None:
    """Lane processes for an export of about ``estimated_plans`` chips, started before its
    features are loaded and its chips planned: they import the export's modules meanwhile
    (about 0.3 s). None when the export will not use processes.

    The caller ends them (a context manager) and passes them to :func:`write_chips`.
    """
    if lanes <= 1 or estimated_plans < PROCESS_MIN_PLANS:
        return None
    return ProcessLanes(lanes, preload=(__name__,))


def write_chips(
    writer: ExportWriter,
    job: ExportJob,
    plans_per_source: list[list[ChipPlan]],
    advance: Callable[[int], None],
    client: Client | None = None,
    lanes: int = 1,
    started: ProcessLanes | None = None,
) -> None:
    """Cut and write every chip on ``lanes`` here or on the client's workers; the statistics
    and ``map.txt`` lines are counted here in plan order.

    Args:
        writer: The export's writer (this process's), which counts the statistics.
        job: The job; its folder is the export's temporary folder.
        plans_per_source: The planned chips of each source, in order.
        advance: Called with the number of plans done.
        client: A Dask client, or None to run in this process.
        lanes: Blocks cut and written side by side here, without a client: in worker
            processes from :data:`PROCESS_MIN_PLANS` planned chips, else on threads.
        started: Lane processes started already (:func:`start_lanes_early`), used whatever
            the number of chips.
    """
    blocks = _blocks(plans_per_source)
    planned = sum(len(plans) for plans in plans_per_source)
    lanes = min(lanes, len(blocks))
    next_index = 0

    def number(summary: _BlockSummary) -> int:
        nonlocal next_index
        first = next_index
        next_index += len(summary.chips)
        return first

    try:
        for summary, lines in run_blocks_staged(
            _cut_block,
            _write_block,
            blocks,
            job,
            decide=number,
            client=client,
            lanes=lanes,
            processes=started if started is not None else planned >= PROCESS_MIN_PLANS,
            name="export",
        ):
            for tally, band_stats, band_stats2 in summary.chips:
                writer.count_chip(tally, band_stats, band_stats2)
            for index, line in lines:
                writer.add_map_line(index, line)
            advance(summary.planned)
    finally:
        forget_everywhere(client, _cache_key(job))
