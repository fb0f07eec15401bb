"""Samples for the label page without a browser: saved with their revision (409 on a stale
save), written only where allowed, class schemas."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import shapely
from serve_helpers import serve_in_thread

from rasterlearn.serve.auth import hash_key
from rasterlearn.serve.service import Settings

KEY = "key-web-0123456789"


def _box(value: int, x: float = 400010) -> dict:
    return {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(shapely.box(x, 3299900, x + 10, 3299910)),
        "properties": {"Classvalue": value},
    }


CLASSES = [{"Value": 1, "Name": "building", "Color": [230, 25, 75]}]


def test_samples_are_saved_with_their_revision(web_client: httpx.Client) -> None:
    where = {"path": "files/web.gpkg", "raster": "files/scene.tif"}
    empty = web_client.get("/samples", params={"path": "files/web.gpkg"})
    assert empty.json()["revision"] == "none" and empty.headers["etag"] == '"none"'
    body = {"classes": CLASSES, "features": [_box(1)]}
    assert web_client.put("/samples", params=where, json=body).status_code == 428
    saved = web_client.put("/samples", params=where, json=body, headers={"If-Match": '"none"'})
    assert saved.status_code == 200 and saved.json()["count"] == 1
    got = web_client.get("/samples", params={"path": "files/web.gpkg"}).json()
    assert got["revision"] == saved.json()["revision"] and got["classes"] == CLASSES
    [feature] = got["features"]["features"]
    assert feature["properties"] == {"Classvalue": 1, "Classname": "building"}
    assert shapely.geometry.shape(feature["geometry"]).equals(
        shapely.box(400010, 3299900, 400020, 3299910)
    )
    # a second tab that loaded before the save: 409 and one line, the file untouched
    stale = web_client.put(
        "/samples", params=where, json={**body, "features": []}, headers={"If-Match": '"none"'}
    )
    assert stale.status_code == 409
    assert "reload the page" in stale.json()["detail"] and "\n" not in stale.json()["detail"]
    assert (
        len(
            web_client.get("/samples", params={"path": "files/web.gpkg"}).json()["features"][
                "features"
            ]
        )
        == 1
    )
    schema = web_client.get("/samples/classes", params={"source": "files/web.gpkg"})
    assert schema.json()["classes"] == CLASSES
    missing = web_client.get("/samples/classes", params={"source": "files/none.emd"})
    assert missing.status_code == 400 and "does not exist" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("files/web.shp", "are not a GeoPackage"),
        ("web.gpkg", "cannot be written there"),
        ("files/nowhere/web.gpkg", "does not exist"),
        ("/etc/web.gpkg", "outside the service's data directory"),
    ],
)
def test_samples_are_written_only_under_files(
    web_client: httpx.Client, path: str, message: str
) -> None:
    response = web_client.put(
        "/samples",
        params={"path": path, "raster": "files/scene.tif"},
        json={"classes": CLASSES, "features": []},
        headers={"If-Match": '"none"'},
    )
    assert response.status_code == 400 and message in response.json()["detail"]


def test_a_keyed_service_writes_samples_in_the_callers_uploads(
    web_data: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(hash_key(KEY) + "\n")
    settings = Settings(data_dir=web_data, api_keys=keys)
    auth = {"Authorization": f"Bearer {KEY}"}
    with serve_in_thread(settings) as url, httpx.Client(base_url=url, headers=auth) as keyed:
        body = {"classes": CLASSES, "features": [_box(1)]}
        where = {"raster": "files/scene.tif"}
        refused = keyed.put(
            "/samples",
            params={**where, "path": "files/k.gpkg"},
            json=body,
            headers={"If-Match": "none"},
        )
        assert refused.status_code == 400 and "uploads/<your key>/" in refused.json()["detail"]
        owner = hash_key(KEY)[:16]
        (web_data / "uploads" / owner).mkdir(parents=True, exist_ok=True)
        path = f"uploads/{owner}/k.gpkg"
        ok = keyed.put(
            "/samples", params={**where, "path": path}, json=body, headers={"If-Match": "none"}
        )
        assert ok.status_code == 200
        assert httpx.get(url + "/samples", params={"path": path}).status_code == 401
