"""The tiling engine's plan, extent and prefetch, against independent computations."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from affine import Affine

from rasterlearn.errors import ParameterError
from rasterlearn.geo.grid import Box, Grid
from rasterlearn.inference.engine import area_of_extent, plan_tiles, prefetched


@pytest.mark.parametrize(
    ("area", "tile", "padding"),
    [
        (Box(0, 0, 512, 512), 128, 32),
        (Box(0, 0, 500, 333), 128, 32),  # last tiles flush with the edge
        (Box(7, 11, 300, 301), 64, 16),  # an area inside the raster
        (Box(0, 0, 100, 50), 128, 32),  # smaller than one tile
        (Box(0, 0, 256, 256), 64, 0),  # no overlap
        (Box(0, 0, 129, 1000), 128, 63),  # stride 2
    ],
)
def test_keep_boxes_partition_the_area_with_context(area, tile, padding):
    tiles = plan_tiles(area, tile, tile, padding)
    owner = np.zeros((area.row_end, area.col_end), dtype=int)
    for t in tiles:
        assert t.read.height == tile and t.read.width == tile
        assert t.read.intersection(t.keep) == t.keep  # owned pixels were read
        owner[t.keep.row : t.keep.row_end, t.keep.col : t.keep.col_end] += 1
        # every owned pixel has `padding` pixels of context, except at the area's edges
        if t.keep.row > area.row:
            assert t.keep.row - t.read.row >= padding
        if t.keep.col > area.col:
            assert t.keep.col - t.read.col >= padding
        if t.keep.row_end < area.row_end:
            assert t.read.row_end - t.keep.row_end >= padding
        if t.keep.col_end < area.col_end:
            assert t.read.col_end - t.keep.col_end >= padding
    inside = owner[area.row :, area.col :]
    assert (inside == 1).all(), "every pixel of the area belongs to exactly one tile"
    assert owner.sum() == area.area
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert tiles == sorted(tiles, key=lambda t: (t.read.row, t.read.col))


def test_tiles_stay_inside_a_raster_larger_than_a_tile():
    tiles = plan_tiles(Box(0, 0, 300, 300), 128, 128, 32)
    assert all(Box(0, 0, 300, 300).contains(t.read) for t in tiles)
    starts = sorted({t.read.col for t in tiles})
    assert starts == [0, 64, 128, 172]  # stride 64, the last flush with the edge


def test_area_of_extent():
    grid = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), 400, 300, None)
    # x 1010..1050 -> cols 20..100; y 1900..1980 -> rows 40..200
    assert area_of_extent(grid, (1010, 1900, 1050, 1980)) == Box(40, 20, 160, 80)
    assert area_of_extent(grid, None) == Box(0, 0, 300, 400)
    # clipped to the raster
    assert area_of_extent(grid, (900, 1800, 1010, 1990)) == Box(20, 0, 280, 20)
    with pytest.raises(ParameterError, match="does not overlap"):
        area_of_extent(grid, (0, 0, 10, 10))
    with pytest.raises(ParameterError, match="empty"):
        area_of_extent(grid, (1050, 1900, 1010, 1980))


def test_prefetch_keeps_order_raises_errors_and_stops_early():
    assert list(prefetched(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("broken read")

    with pytest.raises(ValueError, match="broken read"):
        list(prefetched(failing()))

    produced = []

    def counting():
        for i in range(1000):
            produced.append(i)
            yield i

    before = threading.active_count()
    for item in prefetched(counting(), depth=2):
        if item == 3:
            break
    assert len(produced) < 10  # the producer stopped shortly after the consumer did
    assert threading.active_count() == before


def test_a_tile_longer_than_the_area_reads_real_pixels_around_it():
    grid = Box(0, 0, 400, 400)
    # a strip at the right edge, narrower than a tile: the tile moves inside the raster
    (tile,) = plan_tiles(Box(0, 300, 128, 100), 128, 128, 32, grid)
    assert tile.read == Box(0, 272, 128, 128) and tile.keep == Box(0, 300, 128, 100)
    # in the middle it is centred on the area
    (tile,) = plan_tiles(Box(100, 100, 100, 100), 128, 128, 32, grid)
    assert tile.read == Box(86, 86, 128, 128)
    # a raster smaller than a tile: the tile starts at the raster's origin
    (tile,) = plan_tiles(Box(0, 0, 50, 60), 128, 128, 32, Box(0, 0, 50, 60))
    assert tile.read == Box(0, 0, 128, 128)
