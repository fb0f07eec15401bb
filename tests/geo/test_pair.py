"""A raster read on another raster's grid, and two rasters read as one."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from rasterlearn.errors import InputError
from rasterlearn.geo.grid import Box
from rasterlearn.geo.pair import AlignedRaster, RasterPair, check_pair
from rasterlearn.geo.raster import RasterSource

UTM = "EPSG:32617"


def _smooth(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return (100 + 60 * np.sin(rows / 9.0) * np.cos(cols / 13.0)).astype(np.uint8)[None]


@pytest.fixture
def pair(tmp_path, write_raster):
    """A UTM raster and the same field in Web Mercator at another pixel size."""
    transform = Affine(1.0, 0, 400000.0, 0, -1.0, 3300000.0)
    data = _smooth(96, 96)
    first = write_raster(tmp_path / "first.tif", data, transform)
    dst_transform, width, height = calculate_default_transform(
        UTM, "EPSG:3857", 96, 96, 400000.0, 3300000.0 - 96, 400096.0, 3300000.0, resolution=1.3
    )
    other = np.zeros((1, height, width), dtype=np.uint8)
    reproject(
        data,
        other,
        src_transform=transform,
        src_crs=UTM,
        dst_transform=dst_transform,
        dst_crs="EPSG:3857",
        resampling=Resampling.bilinear,
        dst_nodata=0,
    )
    second = write_raster(tmp_path / "second.tif", other, dst_transform, crs="EPSG:3857")
    return first, second


def test_a_raster_in_another_crs_is_read_on_the_first_grid(pair):
    first, second = pair
    with RasterSource(str(first)) as a, RasterSource(str(second)) as own:
        check_pair(a, own)
        aligned = AlignedRaster(str(second), "second", a.info.grid)
        assert aligned.info.grid == a.info.grid and aligned.info.count == 1
        data, valid = aligned.read_box(Box(-8, -8, 112, 112))  # reaches past the grid
        assert data.shape == (1, 112, 112) and not valid[:8].any() and not valid[:, :8].any()
        truth, _ = a.read_box(Box(0, 0, 96, 96))
        inner = (slice(None), slice(12, 100), slice(12, 100))
        assert np.abs(data[inner].astype(int) - truth[:, 4:92, 4:92]).mean() < 2.0
        both, both_valid = RasterPair(a, aligned).read_box(Box(0, 0, 96, 96))
        assert both.shape == (2, 96, 96) and np.array_equal(both[0], truth[0])
        assert both_valid.mean() > 0.9
        aligned.close()


def test_rasters_that_cannot_be_compared_are_refused(pair, tmp_path, write_raster):
    first, _ = pair
    far = write_raster(
        tmp_path / "far.tif", _smooth(32, 32), Affine(1.0, 0, 500000.0, 0, -1.0, 3400000.0)
    )
    two = write_raster(
        tmp_path / "two.tif",
        np.concatenate([_smooth(32, 32)] * 2),
        Affine(1.0, 0, 400000.0, 0, -1.0, 3300000.0),
    )
    with RasterSource(str(first)) as a:
        for other, message in ((far, "do not overlap"), (two, "has 1 bands but")):
            with RasterSource(str(other)) as b, pytest.raises(InputError, match=message):
                check_pair(a, b)
