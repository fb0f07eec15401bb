"""RasterSource reads by box and onto grids (geo.raster), on small generated rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from rasterlearn.geo.grid import Box, Grid
from rasterlearn.geo.raster import RasterSource

TRANSFORM = Affine(2, 0, 500_000, 0, -2, 3_300_000)


@pytest.fixture
def raster(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(3).integers(1, 255, (2, 40, 50), dtype=np.uint8)
    data[:, :5, :5] = 0  # nodata corner
    profile = {"driver": "GTiff", "width": 50, "height": 40, "count": 2, "dtype": "uint8"}
    path = tmp_path / "r.tif"
    with rasterio.open(path, "w", crs="EPSG:32617", transform=TRANSFORM, nodata=0, **profile) as ds:
        ds.write(data)
    return path, data


def test_info_holds_the_grid(raster):
    path, _ = raster
    with RasterSource(str(path)) as source:
        assert source.info.grid == Grid(TRANSFORM, 50, 40, rasterio.crs.CRS.from_epsg(32617))
        assert source.info.is_georeferenced


@pytest.mark.parametrize(
    "box", [Box(10, 12, 8, 9), Box(0, 0, 40, 50), Box(-3, 45, 10, 10), Box(2, 2, 6, 6)]
)
def test_read_box_is_the_box_of_the_raster(raster, box):
    path, data = raster
    with RasterSource(str(path)) as source:
        pixels, valid = source.read_box(box)
    padded = np.zeros((2, 60, 70), dtype=np.uint8)  # the raster at (10, 10), nodata around it
    padded[:, 10:50, 10:60] = data
    expected = padded[(slice(None), *box.translate(10, 10).slices)]
    assert np.array_equal(pixels, expected)
    assert np.array_equal(valid, expected.any(axis=0))


@pytest.mark.parametrize("box", [Box(10, 12, 8, 9), Box(-3, 45, 10, 10)])
def test_read_onto_a_window_grid_reads_the_box(raster, box):
    path, _ = raster
    with RasterSource(str(path)) as source:
        by_box = source.read_box(box)
        onto = source.read_onto(source.info.grid.window(box))
    assert all(np.array_equal(a, b) for a, b in zip(by_box, onto, strict=True))


def test_read_onto_a_resampled_grid_nearest(raster):
    # Resampling.nearest is 0: it once fell back to the source's bilinear resampling, which
    # blended class values of classified rasters on rotated or resampled chips
    path, data = raster
    with RasterSource(str(path)) as source:
        grid = source.info.grid.window(Box(10, 10, 21, 21)).resampled(7, 7)
        pixels, valid = source.read_onto(grid, rasterio.enums.Resampling.nearest)
    assert pixels.shape == (2, 7, 7) and valid.all()
    # each pixel's centre is the centre of the middle one of 3 x 3 raster pixels
    assert np.array_equal(pixels, data[:, 11:31:3, 11:31:3])
