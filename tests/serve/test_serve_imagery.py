"""Imagery for the map pages without a browser: a raster's info in its own coordinates, tiles
that hold its pixels, one-line errors."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile

from rasterlearn.synthetic import SyntheticScene

pytest_plugins = ["conftest_http"]  # fixtures: cog, range_server, gdal_http_env


def png_pixels(content: bytes) -> np.ndarray:
    """A PNG's pixels as (bands, rows, columns), read by GDAL."""
    with MemoryFile(content) as memory, memory.open() as ds:
        assert ds.driver == "PNG"
        return ds.read()


def test_info_describes_the_raster_in_its_own_coordinates(web_client: httpx.Client) -> None:
    info = web_client.get("/imagery/info", params={"raster": "files/scene.tif"}).json()
    assert info["crs"]["epsg"] == 32617 and info["crs"]["units"] == "m"
    assert info["extent"] == [400000, 3299744, 400256, 3300000] and not info["flip_y"]
    assert info["resolutions"] == [1.0, 0.5] and info["tile_size"] == 256
    assert info["default_bands"] == [1, 2, 3] and info["default_stretch"] == "none"
    assert [b["name"] for b in info["bands"]] == ["red", "green", "blue"]
    pixels = web_client.get("/imagery/info", params={"raster": "files/pixels.tif"}).json()
    assert pixels["crs"]["units"] == "pixels" and pixels["flip_y"]
    assert pixels["extent"] == [0, -512, 512, 0]


def test_tiles_hold_the_raster_pixels(web_client: httpx.Client, scene: SyntheticScene) -> None:
    with rasterio.open(scene.raster_path) as ds:
        expected = ds.read(window=((256, 512), (0, 256)))
    response = web_client.get("/imagery/tiles/1/0/1.png", params={"raster": "files/scene.tif"})
    assert response.headers["content-type"] == "image/png"
    rgba = png_pixels(response.content)
    assert np.array_equal(rgba[:3], expected)
    assert (rgba[3] == 255).all()
    swapped = web_client.get(
        "/imagery/tiles/1/0/1.png", params={"raster": "files/scene.tif", "bands": "3,2,1"}
    )
    assert np.array_equal(png_pixels(swapped.content)[0], expected[2])
    outside = png_pixels(web_client.get("/imagery/tiles/1/5/5.png?raster=files/scene.tif").content)
    assert (outside[3] == 0).all()


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"raster": "files/scene.tif", "bands": "1,2"}, 400, "give one or three band numbers"),
        ({"raster": "files/scene.tif", "bands": "x"}, 400, "are not band numbers"),
        ({"raster": "files/scene.tif", "stretch": "gamma"}, 400, "stretch 'gamma' is unknown"),
        ({"raster": "../scene.tif"}, 400, "contains '..'"),
        ({"raster": "files/missing.tif"}, 400, "does not exist"),
    ],
)
def test_bad_tile_requests_get_one_line(
    web_client: httpx.Client, params: dict, status: int, message: str
) -> None:
    response = web_client.get("/imagery/tiles/0/0/0.png", params=params)
    assert response.status_code == status and message in response.json()["detail"]


def test_a_remote_cog_is_shown_from_the_ranges_a_view_needs(
    web_client: httpx.Client, cog, range_server, gdal_http_env, scene: SyntheticScene
) -> None:
    shutil.copy(cog, range_server.root / "remote.tif")
    url = range_server.url("remote.tif")
    info = web_client.get("/imagery/info", params={"raster": url}).json()
    assert info["extent"] == [400000, 3299744, 400256, 3300000]
    range_server.clear()
    whole = png_pixels(web_client.get("/imagery/tiles/0/0/0.png", params={"raster": url}).content)
    with rasterio.open(scene.raster_path) as ds:
        assert np.abs(whole[:3].astype(int) - ds.read(out_shape=(3, 256, 256))).mean() < 8
    fetched = sum(r.body_bytes for r in range_server.log())
    assert all(r.status == 206 for r in range_server.log())
    assert fetched < cog.stat().st_size / 2  # the overview, not the full-resolution tiles
