"""``rasterlearn label``: the folder it serves as files/ and the page's URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.serve.local import label_page, review_page


def test_label_serves_the_folder_of_the_imagery(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    raster = tmp_path / "a" / "scene.tif"
    raster.write_bytes(b"")
    page = label_page(str(raster), None)
    assert page.files_dir == tmp_path / "a"
    assert page.params == {"raster": "files/scene.tif", "samples": "files/scene_samples.gpkg"}
    (tmp_path / "b").mkdir()
    page = label_page(str(raster), tmp_path / "b" / "s.gpkg")
    assert page.files_dir == tmp_path
    assert page.params == {"raster": "files/a/scene.tif", "samples": "files/b/s.gpkg"}
    assert "127.0.0.1:8000/web/label?raster=files%2Fa%2Fscene.tif" in page.url(
        "127.0.0.1", 8000, "label"
    )
    remote = label_page("https://example.com/cog/scene.tif", tmp_path / "r.gpkg")
    assert remote.params["raster"] == "https://example.com/cog/scene.tif"
    with pytest.raises(InputError, match="does not exist"):
        label_page(str(tmp_path / "none.tif"), None)
    with pytest.raises(ParameterError, match="not a GeoPackage"):
        label_page(str(raster), tmp_path / "s.shp")


def test_review_serves_the_folder_of_the_imagery_and_the_results(tmp_path: Path) -> None:
    import geopandas as gpd
    import shapely

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    raster = tmp_path / "a" / "scene.tif"
    raster.write_bytes(b"")
    classified = tmp_path / "a" / "classes.tif"
    classified.write_bytes(b"")
    detections = tmp_path / "b" / "det.gpkg"
    gpd.GeoDataFrame({"Class": ["x"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=3857).to_file(
        detections
    )
    page = review_page(str(raster), [detections, classified])
    assert page.files_dir == tmp_path
    assert page.params == {
        "raster": "files/a/scene.tif",
        "features": "files/b/det.gpkg",
        "classified": "files/a/classes.tif",
    }
    assert "/web/review?raster=files%2Fa%2Fscene.tif&features=" in page.url(
        "127.0.0.1", 1, "review"
    )
    with pytest.raises(ParameterError, match="are both features"):
        review_page(str(raster), [detections, detections])
    with pytest.raises(InputError, match="not a GeoPackage"):
        review_page(str(raster), [tmp_path / "a" / "scene.tif", tmp_path / "a"])
    with pytest.raises(InputError, match="do not exist"):
        review_page(str(raster), [tmp_path / "none.gpkg"])
