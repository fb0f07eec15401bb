"""Reviewing results without a browser: decisions kept in the GeoPackage with its revision (409
on a stale save, 428 without one), written only where allowed, ground truth for accuracy,
classified rasters in their colour table's colours and their legend."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import httpx
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from serve_helpers import serve_in_thread
from test_serve_imagery import png_pixels

from rasterlearn.formats.classified_raster import write_class_names
from rasterlearn.serve.auth import hash_key
from rasterlearn.serve.service import Settings
from rasterlearn.synthetic import SyntheticScene

KEY = "key-review-0123456789"


@pytest.fixture(scope="module")
def results(web_data: Path, scene: SyntheticScene) -> str:
    """Detections of the scene's objects (Class names, Confidence 0-100) under files/."""
    objects = gpd.read_file(scene.polygons_path).head(6)
    frame = gpd.GeoDataFrame(
        {"Class": objects["ClassName"], "Confidence": np.linspace(95, 45, len(objects))},
        geometry=objects.geometry.envelope,
        crs=objects.crs,
    )
    frame.to_file(web_data / "files" / "review.gpkg", layer="review")
    return "files/review.gpkg"


def test_decisions_are_kept_in_the_results(
    web_client: httpx.Client, web_data: Path, results: str
) -> None:
    got = web_client.get("/review/features", params={"path": results})
    body = got.json()
    assert got.headers["etag"] == f'"{body["revision"]}"'
    assert (body["class_field"], body["score_field"], body["score_max"]) == (
        "Class",
        "Confidence",
        100.0,
    )
    features = body["features"]["features"]
    assert [f["id"] for f in features] == [1, 2, 3, 4, 5, 6]
    assert features[0]["properties"]["Status"] is None
    assert set(body["classes"]) <= {"building", "tree", "water"}
    decisions = [
        {"fid": 1, "Status": "accepted"},
        {"fid": 2, "Status": "accepted", "ReviewedClass": "water"},
        {"fid": 3, "Status": "rejected"},
    ]
    where = {"path": results}
    refused = web_client.patch("/review/features", params=where, json={"decisions": decisions})
    assert refused.status_code == 428
    headers = {"If-Match": got.headers["etag"]}
    saved = web_client.patch(
        "/review/features", params=where, json={"decisions": decisions}, headers=headers
    )
    assert saved.status_code == 200 and saved.json()["count"] == 3
    frame = pyogrio.read_dataframe(web_data / results, fid_as_index=True)
    assert frame["Status"][[1, 2, 3]].tolist() == ["accepted", "accepted", "rejected"]
    assert frame["ReviewedClass"][2] == "water" and frame["ReviewedClass"][1] == frame["Class"][1]
    assert frame["ReviewedAt"][[1, 2, 3]].notna().all() and pd.isna(frame["ReviewedAt"][4])
    stale = web_client.patch(
        "/review/features", params=where, json={"decisions": decisions[:1]}, headers=headers
    )
    assert stale.status_code == 409 and "reload the page" in stale.json()["detail"]
    bad = web_client.patch(
        "/review/features",
        params=where,
        json={"decisions": [{"fid": 1, "Status": "ok"}]},
        headers={"If-Match": f'"{saved.json()["revision"]}"'},
    )
    assert bad.status_code == 400 and "status 'ok' of feature 1 is unknown" in bad.json()["detail"]
    truth = web_client.post("/review/ground-truth", params=where).json()
    assert truth == {"path": "files/review_accepted.gpkg", "count": 2}
    truth_file = gpd.read_file(web_data / truth["path"])
    assert truth_file["Class"].tolist() == [frame["Class"][1], "water"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../review.gpkg", "contains '..'"),
        ("files/review.shp", "not a GeoPackage"),
        ("files/missing.gpkg", "do not exist"),
    ],
)
def test_bad_results_get_one_line(web_client: httpx.Client, path: str, message: str) -> None:
    response = web_client.get("/review/features", params={"path": path})
    assert response.status_code == 400 and message in response.json()["detail"]


def test_a_keyed_service_writes_decisions_only_in_the_callers_data(
    web_data: Path, results: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(hash_key(KEY) + "\n")
    auth = {"Authorization": f"Bearer {KEY}"}
    settings = Settings(data_dir=web_data, api_keys=keys)
    with serve_in_thread(settings) as url, httpx.Client(base_url=url, headers=auth) as keyed:
        decide = {"decisions": [{"fid": 1, "Status": "rejected"}]}
        revision = keyed.get("/review/features", params={"path": results}).headers["etag"]
        refused = keyed.patch(
            "/review/features",
            params={"path": results},
            json=decide,
            headers={"If-Match": revision},
        )
        assert refused.status_code == 400 and "your jobs' results" in refused.json()["detail"]
        owner = hash_key(KEY)[:16]
        (web_data / "uploads" / owner).mkdir(parents=True, exist_ok=True)
        shutil.copy(web_data / results, web_data / "uploads" / owner / "mine.gpkg")
        mine = {"path": f"uploads/{owner}/mine.gpkg"}
        revision = keyed.get("/review/features", params=mine).headers["etag"]
        ok = keyed.patch(
            "/review/features", params=mine, json=decide, headers={"If-Match": revision}
        )
        assert ok.status_code == 200


def test_classified_rasters_show_their_colour_table(
    web_client: httpx.Client, web_data: Path, scene: SyntheticScene
) -> None:
    classes = web_data / "files" / "classes.tif"
    shutil.copy(scene.class_raster_path, classes)
    names = [(c.value, c.name, c.color) for c in scene.classes]
    write_class_names(classes, names)
    with rasterio.open(classes) as ds:
        values, colours = ds.read(1, window=((256, 512), (0, 256))), ds.colormap(1)
    tile = web_client.get(
        "/imagery/tiles/1/0/1.png", params={"raster": "files/classes.tif", "stretch": "colormap"}
    )
    rgba = png_pixels(tile.content)
    lut = np.array([colours[v] for v in range(256)], dtype=np.uint8)
    objects = values > 0
    assert objects.any() and (~objects).any()
    assert np.array_equal(np.moveaxis(rgba[:3], 0, -1)[objects], lut[values[objects], :3])
    assert (rgba[3][objects] == 255).all() and (rgba[3][~objects] == 0).all()  # 0: background
    legend = web_client.get("/review/legend", params={"raster": "files/classes.tif"}).json()
    assert legend["classes"] == [{"Value": v, "Name": n, "Color": list(rgb)} for v, n, rgb in names]
    plain = web_client.get(
        "/imagery/tiles/1/0/1.png", params={"raster": "files/scene.tif", "stretch": "colormap"}
    )
    assert plain.status_code == 400 and "has no colour table" in plain.json()["detail"]
