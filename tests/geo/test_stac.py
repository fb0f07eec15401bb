"""STAC input: items (local and over HTTP), catalogs, band choice, and bad items.

An item points at single-band GeoTIFFs cut from a scene; the tools must give, byte for byte,
what they give on the scene itself, and read remote assets by byte ranges only.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.windows import Window
from typer.testing import CliRunner

from rasterlearn import classify_pixels
from rasterlearn.cli import app
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.raster import open_raster_input

pytest_plugins = ["conftest_http"]  # fixtures: range_server, gdal_http_env

BANDS = (("B04", "red"), ("B03", "green"), ("B02", "blue"))
EXTENT = (400040.0, 3299840.0, 400104.0, 3299904.0)  # 128 x 128 px of the models' scene


def item_of(raster: Path, folder: Path, item_id: str = "scene", split: bool = True) -> Path:
    """A STAC item whose assets hold the raster's bands (one file per band, eo:bands with
    common names), with a thumbnail beside them; asset hrefs relative to the item."""
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(raster) as src:
        data, profile, bbox = src.read(), src.profile, list(src.bounds)
    item = pystac.Item(item_id, None, bbox, datetime.datetime(2024, 5, 1), {})
    if split:
        for index, (name, common) in enumerate(BANDS):
            with rasterio.open(folder / f"{name}.tif", "w", **{**profile, "count": 1}) as dst:
                dst.write(data[index : index + 1])
            band = {"name": name, "common_name": common}
            asset = pystac.Asset(f"./{name}.tif", media_type=pystac.MediaType.COG, roles=["data"])
            asset.extra_fields["eo:bands"] = [band]
            item.add_asset(name, asset)
    else:
        shutil.copy(raster, folder / "visual.tif")
        item.add_asset("visual", pystac.Asset("./visual.tif", media_type=pystac.MediaType.GEOTIFF))
    (folder / "thumb.png").write_bytes(b"not read")
    item.add_asset(
        "thumbnail", pystac.Asset("./thumb.png", media_type="image/png", roles=["thumbnail"])
    )
    item.set_self_href(str(folder / f"{item_id}.json"))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=False)
    return folder / f"{item_id}.json"


@pytest.fixture(scope="module")
def stac_item(models, tmp_path_factory) -> Path:
    """An item of the models' scene, split into single-band assets B04, B03, B02."""
    return item_of(models.scene.raster_path, tmp_path_factory.mktemp("stac") / "item")


def pixels(source) -> np.ndarray:
    return source.read(source.info.grid.box)


def test_an_item_stacks_the_bands_asked_for(models, stac_item):
    with rasterio.open(models.scene.raster_path) as src:
        scene = src.read()
    (rgb,) = open_raster_input(stac_item)  # red, green and blue by common name
    assert rgb.info.grid == open_raster_input(models.scene.raster_path)[0].info.grid
    assert np.array_equal(pixels(rgb), scene)
    assert rgb.info.band_names == ("red", "green", "blue")
    (two,) = open_raster_input(f"{stac_item}#bands=blue,B04")  # by common name or name
    assert np.array_equal(pixels(two), scene[[2, 0]])
    # the model's band names choose, unless they are generic
    (model,) = open_raster_input(stac_item, band_names=["Green", "Red"])
    assert np.array_equal(pixels(model), scene[[1, 0]])
    (generic,) = open_raster_input(stac_item, band_names=["Band_1"])
    assert generic.info.count == 3
    with pytest.raises(InputError, match=r"no band 'nir' \(bands: B04 \(red\)"):
        open_raster_input(f"{stac_item}#bands=red,nir")
    with pytest.raises(ParameterError, match="unknown option 'band'"):
        open_raster_input(f"{stac_item}#band=red")


def test_a_catalog_is_one_mosaic_or_item_by_item(scene, tmp_path):
    with rasterio.open(scene.raster_path) as src:
        whole, profile = src.read(), src.profile
        halves = []
        for k, col in enumerate((0, 256)):
            window = Window(col, 0, 256, 512)
            path = tmp_path / f"half{k}.tif"
            half = {**profile, "width": 256, "transform": src.window_transform(window)}
            with rasterio.open(path, "w", **half) as dst:
                dst.write(src.read(window=window))
            halves.append(path)
    catalog = pystac.Catalog("tiles", "two halves of a scene")
    for k, path in enumerate(halves):
        item_path = item_of(path, tmp_path / "catalog" / f"half{k}", f"half{k}", split=False)
        catalog.add_item(pystac.Item.from_file(str(item_path)))
    catalog.normalize_hrefs(str(tmp_path / "catalog"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    (mosaic,) = open_raster_input(tmp_path / "catalog" / "catalog.json")
    assert np.array_equal(pixels(mosaic), whole)
    items = open_raster_input(tmp_path / "catalog" / "catalog.json", separately=True)
    assert [s.name for s in items] == ["half0", "half1"]
    assert np.array_equal(pixels(items[1]), whole[:, :, 256:])


def test_classify_pixels_on_an_item_local_or_remote_equals_the_files(
    models, stac_item, range_server, gdal_http_env, tmp_path
):
    outputs = {}
    shutil.copytree(stac_item.parent, range_server.root, dirs_exist_ok=True)
    inputs = {
        "files": models.scene.raster_path,
        "item": stac_item,
        "remote": range_server.url(stac_item.name),
    }
    for name, raster in inputs.items():
        out = classify_pixels(
            raster, tmp_path / f"{name}.tif", models.unet, processing_extent=EXTENT
        )
        outputs[name] = out[0].read_bytes()
    assert outputs["item"] == outputs["files"]
    assert outputs["remote"] == outputs["files"]
    gets = [r for r in range_server.log() if r.method == "GET" and r.path.endswith(".tif")]
    assert {r.path for r in gets} == {f"/{name}.tif" for name, _ in BANDS}
    sizes = {p.name: p.stat().st_size for p in range_server.root.glob("*.tif")}
    assert all(r.range is not None and r.status == 206 for r in gets), gets
    assert all(r.body_bytes < sizes[r.path[1:]] for r in gets)


def test_an_item_without_a_usable_asset_is_one_line(models, tmp_path):
    item = pystac.Item("empty", None, [0, 0, 1, 1], datetime.datetime(2024, 5, 1), {})
    item.add_asset(
        "thumbnail", pystac.Asset("thumb.png", media_type="image/png", roles=["thumbnail"])
    )
    item.add_asset(
        "metadata", pystac.Asset("meta.xml", media_type="application/xml", roles=["metadata"])
    )
    path = tmp_path / "empty.json"
    item.set_self_href(str(path))
    item.save_object(include_self_link=False)
    out = tmp_path / "out" / "c.tif"
    result = CliRunner().invoke(
        app, ["classify-pixels", str(path), str(out), "--model", str(models.unet)]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "STAC item empty has no raster asset GDAL can read" in lines[0]
    assert "thumbnail (image/png)" in lines[0]
    assert not (tmp_path / "out").exists()
