"""The one tiling engine: window plan -> read (prefetch) -> batch -> predict -> merge.

Every inference tool, in process or on a Dask cluster, runs through here:

1. :func:`plan_tiles` covers the processing area with tiles of the model's chip size that
   overlap by twice the padding. Each tile *owns* a part of the area (its ``keep`` box) so
   that the owned parts partition the area exactly: tile borders fall in the middle of the
   overlaps, so every owned pixel was predicted with at least ``padding`` pixels of context
   (except at the raster's own edges).
2. Tiles are grouped into blocks of consecutive whole batches
   (:func:`~rasterlearn.execution.blocks.block_size`); batches are formed inside a block, so
   the batches, and therefore the floating-point results, are the same whether blocks run on
   one lane, on several or on a cluster (:func:`run_tiles`).
3. :func:`predict_block` reads the tiles (a prefetch thread overlaps reading with the
   forward pass), drops tiles without valid pixels, runs the predictor and turns each tile's
   output into a compact result: owned class values for pixel models, owned detections in
   grid pixel coordinates for detectors. Memory is bounded by block and batch size, never by
   the raster.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import rasterio.features
import shapely

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.execution.blocks import block_size, blocks_of, run_blocks
from rasterlearn.execution.cache import cached
from rasterlearn.geo.grid import Box, Grid
from rasterlearn.geo.pair import AlignedRaster, RasterPair
from rasterlearn.geo.raster import RasterSource
from rasterlearn.inference import tta
from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.predictors import (
    DETECTION,
    INSTANCE,
    PIXEL,
    Predictor,
    TileDetections,
    set_torch_threads,
    torch_threads,
)

B = TypeVar("B")
J = TypeVar("J")
R = TypeVar("R")

EDGE_MARGIN = 2
"""Detections within this many pixels of a tile edge are cut by it (``exclude_pad_detections``)."""

PREFETCH_BATCHES = 2


@dataclass(frozen=True)
class Tile:
    """One window the model sees, and the part of the output it decides.

    Attributes:
        index: Position in the plan (row-major).
        read: The window read, of the model's chip size; it may reach past the grid, where
            the pixels are nodata.
        keep: The part of the grid this tile's predictions are kept for.
    """

    index: int
    read: Box
    keep: Box


def _axis_plan(
    length: int, tile: int, padding: int, room: tuple[int, int] = (0, 0)
) -> list[tuple[int, int, int]]:
    """``(read_start, keep_start, keep_end)`` along one axis of ``length`` pixels.

    ``room`` is how far the raster reaches before and after the area: a tile longer than the
    area is centred on it and moved inside the raster where it can be, so that it reads real
    pixels rather than nodata.
    """
    if length <= tile:
        before, after = room
        start = min(-((tile - length) // 2), length + after - tile)  # not past the far edge
        start = min(max(start, -before), 0)  # nor before the near edge
        return [(start, 0, length)]
    stride = tile - 2 * padding
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    # The boundary between two tiles is the middle of their overlap.
    bounds = [0, *((a + tile + b) // 2 for a, b in itertools.pairwise(starts)), length]
    return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def plan_tiles(
    area: Box, tile_height: int, tile_width: int, padding: int, bounds: Box | None = None
) -> list[Tile]:
    """Tiles covering ``area`` whose ``keep`` boxes partition it, in row-major order.

    Args:
        area: The processing area in grid pixels.
        tile_height: Rows of a tile (the model's chip height).
        tile_width: Columns of a tile.
        padding: Pixels at each tile edge used as context only; neighbouring tiles overlap
            by ``2 * padding``.
        bounds: The raster's grid box, when the area is part of it: a tile longer than the
            area then reads real pixels around it instead of nodata.
    """
    room = bounds or area
    rows = _axis_plan(
        area.height, tile_height, padding, (area.row - room.row, room.row_end - area.row_end)
    )
    cols = _axis_plan(
        area.width, tile_width, padding, (area.col - room.col, room.col_end - area.col_end)
    )
    tiles = []
    for r, r0, r1 in rows:
        for c, c0, c1 in cols:
            read = Box(area.row + r, area.col + c, tile_height, tile_width)
            keep = Box(area.row + r0, area.col + c0, r1 - r0, c1 - c0)
            tiles.append(Tile(len(tiles), read, keep))
    return tiles


def area_of_extent(grid: Grid, extent: tuple[float, float, float, float] | None) -> Box:
    """The grid pixels inside a processing extent ``(xmin, ymin, xmax, ymax)``.

    Raises:
        ParameterError: when the extent misses the raster.
    """
    if extent is None:
        return grid.box
    xmin, ymin, xmax, ymax = extent
    if not (xmax > xmin and ymax > ymin):
        raise ParameterError(
            f"processing extent {extent} is empty", "give xmin ymin xmax ymax with min < max"
        )
    inside = grid.area_of(extent)
    if inside is None:
        raise ParameterError(
            f"processing extent {extent} does not overlap the raster",
            "give the extent as xmin ymin xmax ymax in the raster's coordinate system",
        )
    return inside


@dataclass(frozen=True)
class InferenceJob:
    """Everything a process needs to predict tiles, small and picklable for Dask workers.

    Attributes:
        raster: What :class:`RasterSource` opens (a path, ``/vsicurl/`` URL or VRT XML).
        raster_name: The name users know it by, for messages.
        grid: The grid inference runs on.
        model: The model definition: an ``.emd``/``.dlpk`` path or the emd's JSON text.
        arguments: Resolved model arguments.
        mask_wkb: Processing mask in grid map coordinates (WKB), or None.
        device: Torch device, or None for the default.
        cell_size: Cell size the raster is resampled to on read, or None.
        model_version: Changes when the model's files change, so that a process never
            predicts with a stale copy of a model it opened before.
        raster2: A second raster read on ``grid`` whose bands follow the first's (the "to"
            raster of change detection), or None.
        raster2_name: Its name for messages.
    """

    raster: str
    raster_name: str
    grid: Grid
    model: str
    arguments: dict[str, Any] = field(hash=False)
    mask_wkb: bytes | None = None
    device: str | None = None
    cell_size: float | None = None
    model_version: str = ""
    raster2: str | None = None
    raster2_name: str = ""


def cached_raster(raster: str, raster_name: str, cell_size: float | None = None) -> RasterSource:
    """A raster opened once per process and kept for the next blocks."""
    return cached(
        ("raster", raster, raster_name, cell_size),
        lambda: RasterSource(raster, raster_name, cell_size),
    )


def cached_predictor(model: str, device: str | None, version: str) -> Predictor:
    """The predictor of a model, opened once per process for a given version of its files."""
    return cached(("model", model, device, version), lambda: open_predictor(model, device))


def open_job(job: InferenceJob) -> tuple[RasterSource | RasterPair, Predictor]:
    """The raster (or pair) and predictor of a job, opened once per process and kept."""
    source: RasterSource | RasterPair = cached_raster(job.raster, job.raster_name, job.cell_size)
    if job.raster2 is not None:
        first, grid = source, job.grid
        key = ("pair", job.raster, job.raster_name, job.cell_size, job.raster2, job.raster2_name)
        source = cached(
            (*key, grid.transform, grid.width, grid.height, grid.crs),
            lambda: RasterPair(first, AlignedRaster(job.raster2, job.raster2_name, grid)),
            lambda pair: pair.second.close(),
        )
    return source, cached_predictor(job.model, job.device, job.model_version)


@contextlib.contextmanager
def model_lanes(predictor: Predictor, lanes: int) -> Iterator[int]:
    """The lanes a predictor runs on in this process, with torch's threads set for it meanwhile.

    A :attr:`~Predictor.concurrent` predictor (PyTorch on the CPU) runs every forward pass on
    one thread (restored on exit) on ``lanes`` lanes side by side, as on cluster workers, so
    that its results are the same to the last bit however blocks are spread. Others run one
    batch at a time with their own threads: one lane.
    """
    if not predictor.concurrent:
        yield 1
        return
    with torch_threads(1):
        yield max(1, lanes)


def one_thread_per_pass(predictor: Predictor) -> None:
    """In a block on a worker or a lane: a concurrent predictor's forward passes on one thread.

    A worker process is the job's, so the setting is left for its next blocks (in this
    process, :func:`model_lanes` has set it already and restores it).
    """
    if predictor.concurrent:
        set_torch_threads(1)


@dataclass
class PixelResult:
    """A tile's owned class values (and probabilities) in the grid.

    Attributes:
        box: The owned window (the tile's ``keep`` box).
        classes: ``(rows, cols)`` class values; ``nodata`` where the input is not valid.
        probabilities: ``(K, rows, cols)`` float32 class probabilities, when asked for.
    """

    box: Box
    classes: np.ndarray
    probabilities: np.ndarray | None = None


@dataclass
class _Batch:
    tiles: list[Tile]
    data: np.ndarray
    valid: np.ndarray


def read_tile(
    source: RasterSource | RasterPair, grid: Grid, box: Box, mask: shapely.Geometry | None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a box of the source's grid and their validity; invalid pixels are set to 0."""
    data, valid = source.read_box(box)
    if mask is not None and valid.any():
        valid &= rasterio.features.geometry_mask(
            [mask], box.shape, grid.window(box).transform, invert=True
        )
    if not valid.all():
        data = np.where(valid, data, np.zeros((), data.dtype))
    return data, valid


def _tile_batches(
    source: RasterSource | RasterPair,
    grid: Grid,
    tiles: Iterable[Tile],
    batch_size: int,
    mask: shapely.Geometry | None,
) -> Iterator[_Batch]:
    pending: list[tuple[Tile, np.ndarray, np.ndarray]] = []
    for tile in tiles:
        if mask is not None and not mask.intersects(tile.read.footprint(grid.transform)):
            continue
        data, valid = read_tile(source, grid, tile.read, mask)
        if not valid.any():
            continue  # all nodata: nothing to predict
        pending.append((tile, data, valid))
        if len(pending) == batch_size:
            yield _stack(pending)
            pending = []
    if pending:
        yield _stack(pending)


def _stack(items: list[tuple[Tile, np.ndarray, np.ndarray]]) -> _Batch:
    tiles, data, valid = zip(*items, strict=True)
    return _Batch(list(tiles), np.stack(data), np.stack(valid))


def prefetched(items: Iterator[Any], depth: int = PREFETCH_BATCHES) -> Iterator[Any]:
    """Iterate ``items`` with a thread producing up to ``depth`` items ahead.

    Reading the next batch (GDAL releases the GIL) then overlaps the current forward pass.
    An exception in the producer is raised here; leaving the loop early stops the producer.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((done, None))
        except BaseException as err:  # handed to the consumer
            slots.put((done, err))

    worker = threading.Thread(target=produce, name="rasterlearn-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, err = slots.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        worker.join()


def predict_blocks(
    job: InferenceJob,
    blocks: list[list[Tile]],
    on_progress: Callable[[int], None] | None = None,
    prefetch: bool = True,
) -> Iterator[PixelResult | TileDetections]:
    """Predict blocks of tiles: one result per tile that had valid pixels, in plan order.

    Pixel models give :class:`PixelResult`; detectors give the tile's owned
    :class:`TileDetections` in grid pixel coordinates. Batches never span two blocks.

    Args:
        job: What to run.
        blocks: Runs of consecutive tiles (see :func:`blocks_of`).
        on_progress: Called with the number of tiles finished since the last call.
        prefetch: Read ahead on a thread.
    """
    source, predictor = open_job(job)
    args = job.arguments
    predictor.configure(args)
    mask = shapely.from_wkb(job.mask_wkb) if job.mask_wkb else None
    batches: Iterator[_Batch] = (
        batch
        for block in blocks
        for batch in _tile_batches(source, job.grid, block, int(args["batch_size"]), mask)
    )
    if prefetch:
        batches = prefetched(batches)
    task = predictor.info.task
    if task not in (PIXEL, DETECTION, INSTANCE):
        raise InputError(
            f"a {task} model cannot run on tiles", "use classify-objects for this model"
        )
    done = blocks[0][0].index if blocks and blocks[0] else 0
    for batch in batches:
        if task == PIXEL:
            yield from _pixel_results(predictor, batch, args)
        else:
            yield from _detection_results(predictor, batch, args, job.grid)
        if on_progress is not None:
            on_progress(batch.tiles[-1].index + 1 - done)
            done = batch.tiles[-1].index + 1
    if on_progress is not None and blocks and blocks[-1]:
        on_progress(blocks[-1][-1].index + 1 - done)


def _pixel_results(predictor: Predictor, batch: _Batch, args: dict[str, Any]) -> list[PixelResult]:
    info = predictor.info
    if args.get("test_time_augmentation"):
        probs = tta.predict_pixels(
            predictor, batch.data, batch.valid, info.image_space, args["merge_policy"]
        )
    else:
        probs = predictor.predict_pixels(batch.data, batch.valid)
    values = np.array([0, *(v for v, _, _ in info.classes)], dtype=np.int64)
    first = 0 if args.get("predict_background", True) else 1
    out = []
    for tile, p, valid in zip(batch.tiles, probs, batch.valid, strict=True):
        sl = tile.keep.relative_to(tile.read).slices
        owned = p[(slice(None), *sl)]
        classes = values[first + owned[first:].argmax(axis=0)]
        keep_valid = valid[sl]
        out.append(
            PixelResult(
                tile.keep,
                np.where(keep_valid, classes, -1),
                np.where(keep_valid, owned[1:], np.float32(np.nan))
                if args.get("return_probability_raster")
                else None,
            )
        )
    return out


def _detection_results(
    predictor: Predictor, batch: _Batch, args: dict[str, Any], grid: Grid
) -> list[TileDetections]:
    if args.get("test_time_augmentation"):
        found = tta.predict_objects(
            predictor, batch.data, batch.valid, args, predictor.info.image_space
        )
    else:
        found = predictor.predict_objects(batch.data, batch.valid, args)
    return [
        _owned(dets, tile, grid, bool(args.get("exclude_pad_detections", True)))
        for tile, dets in zip(batch.tiles, found, strict=True)
    ]


def _owned(dets: TileDetections, tile: Tile, grid: Grid, exclude_pad: bool) -> TileDetections:
    """The tile's detections whose box centre it owns, shifted to grid pixel coordinates."""
    if not len(dets):
        return dets
    b = dets.boxes
    keep = np.ones(len(dets), dtype=bool)
    if exclude_pad:
        read = tile.read
        # a box touching an edge of the tile is cut by it, unless the edge is the grid's
        # own edge (nothing lies beyond it)
        edges = (
            (b[:, 0] <= EDGE_MARGIN) & (read.col > 0),
            (b[:, 1] <= EDGE_MARGIN) & (read.row > 0),
            (b[:, 2] >= read.width - EDGE_MARGIN) & (read.col_end < grid.width),
            (b[:, 3] >= read.height - EDGE_MARGIN) & (read.row_end < grid.height),
        )
        keep &= ~np.logical_or.reduce(edges)
    cx = (b[:, 0] + b[:, 2]) / 2 + tile.read.col
    cy = (b[:, 1] + b[:, 3]) / 2 + tile.read.row
    k = tile.keep
    keep &= (cx >= k.col) & (cx < k.col_end) & (cy >= k.row) & (cy < k.row_end)
    owned = dets.subset(keep)
    shift = np.array([tile.read.col, tile.read.row] * 2, dtype=np.float64)
    # nothing lies beyond the raster: boxes reaching into a tile's nodata fill are cut there
    limits = np.array([grid.width, grid.height] * 2, dtype=np.float64)
    owned.boxes = np.clip(owned.boxes + shift, 0, limits)
    if owned.shapes is not None:
        owned.shapes = [
            None if s is None else shapely.affinity.translate(s, tile.read.col, tile.read.row)
            for s in owned.shapes
        ]
    return owned


def run_tiles(
    job: InferenceJob,
    tiles: list[Tile],
    client: Any = None,
    on_progress: Callable[[int], None] | None = None,
    lanes: int = 1,
) -> Iterator[PixelResult | TileDetections]:
    """Predict every tile, in plan order, in this process or on a Dask client's workers.

    Every way forms the same blocks and batches, and gives the same results to the last bit
    (see :func:`run_predictions`).

    Args:
        job: What to run.
        tiles: The planned tiles.
        client: A Dask client, or None to run in this process.
        on_progress: Called with the number of tiles finished since the last call.
        lanes: Batches predicted at once in this process (each holds one batch in memory).
    """
    blocks = blocks_of(tiles, block_size(len(tiles), int(job.arguments["batch_size"])))
    yield from run_predictions(
        cached_predictor(job.model, job.device, job.model_version),
        _block_results,
        blocks,
        job,
        serial=lambda: predict_blocks(job, blocks, on_progress),
        client=client,
        lanes=lanes,
        on_progress=on_progress,
    )


def run_predictions(
    predictor: Predictor,
    fn: Callable[[list[B], J], list[R]],
    blocks: list[list[B]],
    job: J,
    *,
    serial: Callable[[], Iterator[R]],
    client: Any = None,
    lanes: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[R]:
    """A model's results for blocks of items, in block order, here or on a cluster.

    A :attr:`~Predictor.concurrent` predictor (PyTorch on the CPU) runs each forward pass on
    one thread, on ``lanes`` lanes side by side here (:func:`model_lanes`) as on workers, so
    the results are the same to the last bit however the blocks are spread, provided ``fn``
    forms its batches inside a block and calls :func:`one_thread_per_pass`. With one lane
    (and for other predictors) ``serial`` runs instead: one batch at a time, reading ahead.

    Args:
        predictor: The model, opened in this process.
        fn: Predicts one block on a lane or worker: ``fn(block, job)``, one result an item.
        blocks: The blocks (see :func:`~rasterlearn.execution.blocks.block_size`).
        job: What ``fn`` needs (picklable for a cluster).
        serial: Gives every block's results in order, in this thread (and reports progress).
        client: A Dask client, or None to run in this process.
        lanes: Blocks predicted at once in this process.
        on_progress: Called with the number of items of each block done (not for ``serial``).
    """
    if client is not None:
        results = run_blocks(fn, blocks, job, client=client)
        yield from _in_block_order(blocks, results, on_progress)
        return
    with model_lanes(predictor, lanes) as lanes:
        if lanes <= 1:
            yield from serial()
            return
        yield from _in_block_order(blocks, run_blocks(fn, blocks, job, lanes=lanes), on_progress)


def _in_block_order(
    blocks: list[list[B]],
    results: Iterable[list[R]],
    on_progress: Callable[[int], None] | None,
) -> Iterator[R]:
    for block, block_results in zip(blocks, results, strict=True):
        yield from block_results
        if on_progress is not None:
            on_progress(len(block))


def _block_results(block: list[Tile], job: InferenceJob) -> list[PixelResult | TileDetections]:
    one_thread_per_pass(open_job(job)[1])
    return list(predict_blocks(job, [block], prefetch=False))
