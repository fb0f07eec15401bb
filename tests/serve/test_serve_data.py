"""Keys, paths and uploads: another key sees nothing, traversal is refused, uploads are capped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from serve_helpers import KEY_A, KEY_B, UPLOAD_LIMIT_MB, Server, ogc_done, wait_job
from typer.testing import CliRunner

from rasterlearn.cli.app import app
from rasterlearn.serve.auth import hash_key, owner_of

ASYNC = {"Prefer": "respond-async"}
GP = "/arcgis/rest/services/RasterAnalysisTools/GPServer"


def test_another_key_cannot_see_a_job(server: Server) -> None:
    with server.client(KEY_A) as a, server.client(KEY_B) as b, server.client(None) as anon:
        job = a.post(
            "/processes/query_model_info/execution",
            json={"inputs": {"model": "files/unet/unet.emd"}},
            headers=ASYNC,
        ).json()["jobID"]
        assert wait_job(a, f"/jobs/{job}", ogc_done)["status"] == "successful"
        assert a.get(f"/jobs/{job}/results").status_code == 200
        for path in (f"/jobs/{job}", f"/jobs/{job}/results", f"/jobs/{job}/log"):
            assert b.get(path).status_code == 404
        assert b.delete(f"/jobs/{job}").status_code == 404
        assert job not in [j["jobID"] for j in b.get("/jobs").json()["jobs"]]
        arcgis = f"{GP}/QueryDeepLearningModelInfo/jobs/{job}"
        assert b.get(arcgis).status_code == 404
        assert httpx.get(server.url + arcgis, params={"token": KEY_A}).status_code == 200
        assert httpx.get(server.url + f"/jobs/{job}", headers={"X-API-Key": KEY_A}).is_success
        assert anon.get("/jobs").status_code == 401
        assert httpx.get(server.url + "/jobs", headers={"X-API-Key": "nope"}).status_code == 403


def test_traversal_paths_are_refused(server: Server, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.emd").write_text("{}")
    link = server.data_dir / "files" / "escape"
    if not link.is_symlink():
        os.symlink(outside, link)
    other = f"uploads/{owner_of(hash_key(KEY_B))}/x.emd"
    try:
        with server.client() as c:
            refused = (
                "../outside/secret.emd",
                str(outside / "secret.emd"),
                "files/escape/secret.emd",
            )
            for path in (*refused, other, "jobs.sqlite"):
                r = c.post(
                    "/processes/query_model_info/execution", json={"inputs": {"model": path}}
                )
                assert r.status_code == 400, (path, r.text)
                assert "outside" in r.json()["detail"] or "not" in r.json()["detail"]
    finally:
        link.unlink()  # it would dangle once tmp_path is gone, and the data folder is shared


def test_uploads_capped_streamed_and_used_by_id(server: Server, serve_data: Path) -> None:
    uploads = server.data_dir / "uploads"
    before = sorted(p for p in uploads.rglob("*") if p.is_file())
    limit = int(UPLOAD_LIMIT_MB * 1024 * 1024)
    with server.client() as c:
        for size in (limit + 20_000, 4 * limit):  # streamed past the limit; announced too big
            r = c.post("/uploads", files={"file": ("big.tif", b"x" * size)})
            assert r.status_code == 413, r.text
        assert sorted(p for p in uploads.rglob("*") if p.is_file()) == before
        emd = (serve_data / "files/unet/unet.emd").read_bytes()
        item = c.post("/uploads", files={"file": ("unet.emd", emd)}).json()
        assert (server.data_dir / item["path"]).read_bytes() == emd
        done = c.post(
            "/processes/query_model_info/execution",
            json={"inputs": {"model": f"item:{item['id']}"}},
        )
        assert done.status_code == 200 and "UNET" in done.json()["report"].upper()
    arcgis = httpx.post(
        f"{server.url}{GP}/uploads/upload",
        files={"file": ("unet.emd", emd)},
        data={"f": "json"},
        headers={"X-API-Key": KEY_A},
    ).json()
    assert arcgis["success"] and arcgis["item"]["itemID"]


def test_no_keys_means_loopback_only() -> None:
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--data-dir", "/nonexistent"])
    assert result.exit_code == 2
    assert "loopback" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--max-jobs", "0"], "max_jobs must be at least 1"), (["--max-upload-mb", "0"], "upload")],
)
def test_settings_it_cannot_run_with_are_refused_before_anything_is_made(
    tmp_path: Path, args: list[str], words: str
) -> None:
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(data), *args])
    assert result.exit_code == 2
    assert result.stdout == "" and result.stderr.startswith("error: ")
    assert words in result.stderr
    assert not data.exists()


def test_an_image_service_input_cannot_choose_where_its_tiles_go(server: Server) -> None:
    raster = "xyz:https://tiles.example.com/{z}/{x}/{y}.png#cell_size=1&cache=/etc"
    with server.client() as c:
        r = c.post(
            "/processes/classify_pixels/execution",
            json={"inputs": {"in_raster": raster, "in_model_definition": "files/m.emd"}},
        )
        assert r.status_code == 400, r.text
        assert "tile cache is the job service's own" in r.json()["detail"]


def test_a_stac_item_or_vrt_cannot_read_files_outside_the_data(
    server: Server, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.tif"
    files = server.data_dir / "files"
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "escape",
        "geometry": None,
        "properties": {"datetime": "2024-01-01T00:00:00Z"},
        "links": [],
        "assets": {"image": {"href": str(secret), "type": "image/tiff; application=geotiff"}},
    }
    (files / "escape.json").write_text(json.dumps(item))
    (files / "escape.vrt").write_text(
        '<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{secret}</SourceFilename>'
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    with server.client() as c:
        for raster in ("files/escape.json", "files/escape.vrt"):
            r = c.post(
                "/processes/classify_pixels/execution",
                json={"inputs": {"in_raster": raster, "in_model_definition": "files/m.emd"}},
            )
            assert r.status_code == 400, r.text
            assert "refers to 'secret.tif', outside the data you may read" in r.json()["detail"]
