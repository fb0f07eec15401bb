"""Showing rasters: the tile pyramid over a raster's pixels, stretches, overviews, PNG tiles."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.display import (
    TilePyramid,
    display_stats,
    png_bytes,
    render_tile,
    stretch_range,
)
from rasterlearn.geo.grid import Box, Grid
from rasterlearn.geo.raster import RasterSource
from rasterlearn.geo.stats import BandStats


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGBA PNG without filters (as png_bytes writes it) as (rows, cols, 4)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks[kind] = chunks.get(kind, b"") + data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    cols, rows = struct.unpack(">II", chunks[b"IHDR"][:8])
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8)
    return raw.reshape(rows, 1 + 4 * cols)[:, 1:].reshape(rows, cols, 4)


def test_pyramid_levels_resolutions_and_tiles() -> None:
    grid = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), width=600, height=300)
    pyramid = TilePyramid(grid)
    assert pyramid.levels == 2  # 600 px -> 150 px on level 0: one tile
    assert pyramid.resolutions == [2.0, 1.0, 0.5]
    assert pyramid.extent == (1000, 1850, 1300, 2000)
    # level 0: the whole raster in the top-left 150 x 75 tile pixels
    assert pyramid.tile(0, 0, 0) == (Box(0, 0, 300, 600), Box(0, 0, 75, 150))
    # finest level: tile (2, 0) holds columns 512-599 of rows 0-255
    assert pyramid.tile(2, 2, 0) == (Box(0, 512, 256, 88), Box(0, 0, 256, 88))
    assert pyramid.tile(2, 3, 0) is None and pyramid.tile(2, -1, 0) is None
    with pytest.raises(ParameterError, match="tile level 3"):
        pyramid.tile(3, 0, 0)


def test_pixel_space_and_non_square_pixels() -> None:
    pixels = TilePyramid(Grid(Affine.identity(), width=100, height=50))
    assert pixels.flip_y and pixels.extent == (0, -50, 100, 0)
    # rows twice as tall as columns are wide: a tile covers half as many rows
    tall = TilePyramid(Grid(Affine(1, 0, 0, 0, -2, 0), width=512, height=512))
    assert tall.tile(1, 0, 0) == (Box(0, 0, 128, 256), Box(0, 0, 256, 256))
    with pytest.raises(InputError, match="rotated"):
        TilePyramid(Grid(Affine(1, 0.2, 0, 0.2, -1, 0), width=10, height=10))


def test_stretches() -> None:
    values = np.concatenate([[10.0, 250.0], np.full(100, 100.0), np.full(100, 120.0)])
    stats = BandStats.of(values)
    assert stretch_range(stats, "uint8", "none") == (0, 255)
    assert stretch_range(stats, "uint16", "none") == (0, 65535)
    assert stretch_range(stats, "uint8", "minmax") == (10, 250)
    low, high = stretch_range(stats, "uint8", "stddev")  # mean +- 2 std, inside min-max
    assert (low, high) == pytest.approx(
        (values.mean() - 2 * values.std(), values.mean() + 2 * values.std())
    )
    assert 10 < low < high < 250
    assert stretch_range(BandStats.of(np.array([3.0, 3.0])), "float32", "minmax") == (3, 4)
    with pytest.raises(ParameterError, match="stretch 'gamma'"):
        stretch_range(stats, "uint8", "gamma")


def test_png_bytes_round_trip() -> None:
    rgba = np.random.default_rng(0).integers(0, 256, (4, 3, 5), dtype=np.uint8)
    assert np.array_equal(decode_png(png_bytes(rgba)), np.moveaxis(rgba, 0, -1))


def _raster_with_stale_overviews(path: Path) -> np.ndarray:
    """A 1024 px raster whose overviews were built from other data than it holds now: a read
    that returns the overviews' values can only have come from them."""
    profile = {
        "driver": "GTiff",
        "width": 1024,
        "height": 1024,
        "count": 3,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "transform": Affine(1, 0, 0, 0, -1, 1024),
        "crs": "EPSG:32617",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.full((3, 1024, 1024), 50, dtype=np.uint8))
        ds.build_overviews([2, 4], Resampling.nearest)
    data = np.zeros((3, 1024, 1024), dtype=np.uint8)
    data[0], data[1], data[2] = 200, 100, 10
    with rasterio.open(path, "r+") as ds:
        ds.write(data)
    return data


def test_tiles_come_from_overviews(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    _raster_with_stale_overviews(path)
    with RasterSource(str(path)) as source:
        pyramid = TilePyramid(source.info.grid)
        ranges = [(0.0, 255.0)] * 3
        coarse = render_tile(source, pyramid, 0, 0, 0, [1, 2, 3], ranges)
        assert (coarse[:3] == 50).all() and (coarse[3] == 255).all()  # the overview's values
        full = render_tile(source, pyramid, 2, 1, 2, [3, 2, 1], ranges)  # bands reordered
        assert (full[0] == 10).all() and (full[1] == 100).all() and (full[2] == 200).all()
        grey = render_tile(source, pyramid, 2, 0, 0, [2], [(0.0, 200.0)])
        assert (grey[:3] == 128).all()  # 100 of 0-200 stretched to 0-255
        # statistics from a read of at most 1024 px: this raster at full resolution
        assert [s.m1 for s in display_stats(source)] == [200, 100, 10]


def test_nodata_is_transparent(tmp_path: Path) -> None:
    path = tmp_path / "nodata.tif"
    data = np.full((1, 20, 30), 7, dtype=np.uint16)
    data[0, :, :10] = 0
    with rasterio.open(
        path, "w", driver="GTiff", width=30, height=20, count=1, dtype="uint16", nodata=0
    ) as ds:
        ds.write(data)
    with RasterSource(str(path)) as source:
        pyramid = TilePyramid(source.info.grid)
        rgba = render_tile(source, pyramid, 0, 0, 0, [1], [(0.0, 28.0)])
    assert (rgba[3, :20, :10] == 0).all() and (rgba[3, :20, 10:30] == 255).all()
    assert (rgba[:3, :20, 10:30] == 64).all()  # 7 of 0-28
    assert (rgba[3, 20:] == 0).all() and (rgba[3, :, 30:] == 0).all()  # outside the raster
