"""Image services as input: XYZ tiles of a synthetic scene served on loopback, read through
GDAL's WMS driver at a cell size and over an extent, give what the scene file gives."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from rasterlearn import detect_objects
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.raster import open_raster_input
from rasterlearn.geo.services import WEB_MERCATOR_HALF, zoom_cell_size
from rasterlearn.synthetic import make_scene

pytest_plugins = ["conftest_http"]  # fixtures: range_server, gdal_http_env

ZOOM = 18
TILE_X, TILE_Y = 70000, 100000  # the scene's top-left tile


@pytest.fixture(scope="module")
def mercator_scene(tmp_path_factory):
    """A 256 x 512 px scene in Web Mercator on the pixels of tile level 18 (two tiles)."""
    size = zoom_cell_size(ZOOM)
    origin = (-WEB_MERCATOR_HALF + TILE_X * 256 * size, WEB_MERCATOR_HALF - TILE_Y * 256 * size)
    root = tmp_path_factory.mktemp("mercator")
    return make_scene(
        root, width=512, height=256, crs="EPSG:3857", pixel_size=size, origin=origin, seed=7
    )


def serve_tiles(scene, root: Path) -> None:
    """Write the scene as XYZ PNG tiles ``root/z/x/y.png``."""
    with rasterio.open(scene.raster_path) as src:
        for row in range(src.height // 256):
            for col in range(src.width // 256):
                folder = root / str(ZOOM) / str(TILE_X + col)
                folder.mkdir(parents=True, exist_ok=True)
                data = src.read(window=Window(col * 256, row * 256, 256, 256))
                profile = {"driver": "PNG", "width": 256, "height": 256, "count": 3}
                with rasterio.open(
                    folder / f"{TILE_Y + row}.png", "w", dtype="uint8", **profile
                ) as dst:
                    dst.write(data)


def xyz(server, cache: Path, **options: str) -> str:
    fragment = urllib.parse.urlencode({"cache": str(cache), **options}, safe=",/:")
    return f"xyz:{server.base_url}/{{z}}/{{x}}/{{y}}.png#{fragment}"


def test_tiles_read_at_a_cell_size_over_an_extent(
    mercator_scene, range_server, gdal_http_env, tmp_path
):
    serve_tiles(mercator_scene, range_server.root)
    with rasterio.open(mercator_scene.raster_path) as src:
        scene, bounds, size = src.read(), src.bounds, src.res[0]
    extent = ",".join(str(v) for v in bounds)
    (source,) = open_raster_input(
        xyz(range_server, tmp_path / "cache", extent=extent, cell_size=str(size))
    )
    assert source.info.grid == open_raster_input(mercator_scene.raster_path)[0].info.grid
    assert np.array_equal(source.read(source.info.grid.box), scene)
    assert len([p for p in (tmp_path / "cache").rglob("*") if p.is_file()]) == 2
    range_server.clear()  # read again: from the cache
    (again,) = open_raster_input(xyz(range_server, tmp_path / "cache", extent=extent, zoom="18"))
    assert np.array_equal(again.read(again.info.grid.box), scene)
    assert not range_server.log()
    # an extent inside the left tile (the tool's extent and cell size) reads that tile only
    range_server.clear()
    inside = (bounds.left + 10, bounds.bottom + 10, bounds.left + 60, bounds.top - 10)
    (part,) = open_raster_input(
        xyz(range_server, tmp_path / "cache2"), cell_size=size * 1.5, extent=inside
    )
    assert part.info.grid.cell_size == pytest.approx((size * 1.5, size * 1.5))
    part.read(part.info.grid.box)
    assert {r.path for r in range_server.log()} == {f"/{ZOOM}/{TILE_X}/{TILE_Y}.png"}


def test_detections_on_tiles_equal_those_on_the_scene(
    models, mercator_scene, range_server, gdal_http_env, tmp_path
):
    serve_tiles(mercator_scene, range_server.root)
    size = zoom_cell_size(ZOOM)
    with rasterio.open(mercator_scene.raster_path) as src:
        extent = tuple(src.bounds)
    on_file = gpd.read_file(
        detect_objects(mercator_scene.raster_path, tmp_path / "f.gpkg", models.fcos, cell_size=size)
    )
    on_tiles = gpd.read_file(
        detect_objects(
            xyz(range_server, tmp_path / "cache"),
            tmp_path / "t.gpkg",
            models.fcos,
            cell_size=size,
            processing_extent=extent,
        )
    )
    assert len(on_file) > 3
    assert on_tiles.drop(columns="geometry").equals(on_file.drop(columns="geometry"))
    assert on_tiles.geometry.geom_equals_exact(on_file.geometry, 1e-6).all()


def test_service_requests_stay_inside_the_extent(range_server, gdal_http_env, tmp_path):
    """An ArcGIS ImageServer is asked for exportImage over the extent at the cell size."""
    url = f"arcgis:{range_server.base_url}/arcgis/rest/services/scene/ImageServer"
    (source,) = open_raster_input(
        f"{url}#cache=none", cell_size=2.0, extent=(1000, 2000, 1400, 2100)
    )
    assert source.info.grid.shape == (50, 200) and source.info.grid.crs.to_epsg() == 3857
    with pytest.raises(InputError, match="reading raster arcgis:"):
        source.read(source.info.grid.box)  # the test server has no such service
    (request,) = {r.path for r in range_server.log()}
    path, _, query = request.partition("?")
    assert path == "/arcgis/rest/services/scene/ImageServer/exportImage"
    asked = urllib.parse.parse_qs(query)
    xmin, ymin, xmax, ymax = (float(v) for v in asked["bbox"][0].split(","))
    assert 1000 <= xmin < xmax <= 1400 and 2000 <= ymin < ymax <= 2100
    width, height = (int(v) for v in asked["size"][0].split(","))
    assert (xmax - xmin) / width == pytest.approx(2.0) == (ymax - ymin) / height


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("xyz:https://h/{z}/{x}/{y}.png", "needs a cell size or zoom level"),
        ("xyz:https://h/{z}/{x}/{y}.png#zoom=3", "needs an extent"),
        ("xyz:https://h/{z}/{x}/{y}.png#zoom=3&extent=1,2,3", "is not xmin,ymin,xmax,ymax"),
        ("xyz:https://h/{z}/{x}/{y}.png#colour=red", "unknown option 'colour'"),
        ("wms:https://h/wms#cell_size=1&extent=0,0,10,10", "needs a layer"),
        ("xyz:h/{z}/{x}/{y}.png", "has no http(s) URL"),
    ],
)
def test_bad_service_inputs(spec, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_raster_input(spec)
