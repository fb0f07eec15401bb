"""OGC API - Processes over a real service: descriptions, jobs, results equal to the CLI's."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
from owslib.ogcapi.processes import Processes
from serve_helpers import KEY_A, Server, ogc_done, wait_job
from typer.testing import CliRunner

from rasterlearn.cli.app import app
from rasterlearn.tools.registry import find_tool

PREFER_ASYNC = {"Prefer": "respond-async"}


def cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


def test_landing_conformance_and_processes_from_declarations(server: Server) -> None:
    with server.client() as c:
        landing = c.get("/").json()
        rels = {link["rel"] for link in landing["links"]}
        assert {"service-desc", "http://www.opengis.net/def/rel/ogc/1.0/processes"} <= rels
        assert any(u.endswith("/conf/core") for u in c.get("/conformance").json()["conformsTo"])
        ids = [p["id"] for p in c.get("/processes").json()["processes"]]
        assert {"classify_pixels", "detect_objects", "train_deep_learning_model"} <= set(ids)
        described = c.get("/processes/classify_pixels").json()
        tool = find_tool("classify_pixels")
        assert described["inputs"]["in_raster"]["minOccurs"] == 1
        assert described["inputs"]["cog"]["minOccurs"] == 0
        assert described["inputs"]["cog"]["schema"]["type"] == "boolean"
        assert described["inputs"]["in_raster"]["title"] == tool.parameter("in_raster").label
        assert "cluster" not in described["inputs"]  # the service's own
        assert set(described["outputs"]) == {
            "out_classified_raster",
            "out_classified_folder",
            "report",
        }
        missing = c.get("/processes/no_such_tool")
        assert missing.status_code == 404
        assert missing.json()["type"].endswith("no-such-process")
        assert c.get("/openapi.json").json()["info"]["title"] == "rasterlearn"


def test_classify_pixels_async_equals_cli_byte_for_byte(
    server: Server, serve_data: Path, tmp_path: Path
) -> None:
    inputs = {
        "in_raster": "files/scene.tif",
        "out_classified_raster": "classes.tif",
        "in_model_definition": "files/unet/unet.emd",
        "arguments": {"batch_size": 4},
        "num_workers": 1,
    }
    with server.client() as c:
        submitted = c.post(
            "/processes/classify_pixels/execution", json={"inputs": inputs}, headers=PREFER_ASYNC
        )
        assert submitted.status_code == 201, submitted.text
        location = submitted.headers["Location"]
        status = wait_job(c, location, ogc_done)
        assert status["status"] == "successful", status
        assert status["progress"] == 100
        results = c.get(location + "/results").json()
        href = results["out_classified_raster"]["href"]
        served = c.get(href).content
        part = c.get(href, headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == served[:100]
    out = tmp_path / "cli.tif"
    cli(
        "classify-pixels", str(serve_data / "files/scene.tif"), str(out),
        "--model", str(serve_data / "files/unet/unet.emd"), "--arg", "batch_size=4",
        "--num-workers", "1",
    )  # fmt: skip
    assert served == out.read_bytes()


def test_owslib_runs_a_detection_job_with_the_cli_features(
    server: Server, serve_data: Path, tmp_path: Path
) -> None:
    client = Processes(server.url, headers={"Authorization": f"Bearer {KEY_A}"})
    assert "detect_objects" in [p["id"] for p in client.processes()]
    assert "in_raster" in client.process("detect_objects")["inputs"]
    inputs = {
        "in_raster": "files/scene.tif",
        "out_detected_objects": "objects.gpkg",
        "in_model_definition": {"value": "files/fcos/fcos.emd"},
        "num_workers": 1,
    }
    status = client.execute("detect_objects", inputs=inputs, async_=True)
    location = client.response_headers["Location"]
    job_path = location.removeprefix(server.url + "/")
    while status["status"] not in ("successful", "failed"):
        status = client._request(path=job_path)
    assert status["status"] == "successful", status
    results = client._request(path=job_path + "/results")
    assert "Detected" in results["report"]
    served = tmp_path / "served.gpkg"
    with server.client() as c:
        served.write_bytes(c.get(results["out_detected_objects"]["href"]).content)
    out = tmp_path / "cli.gpkg"
    cli(
        "detect-objects", str(serve_data / "files/scene.tif"), str(out),
        "--model", str(serve_data / "files/fcos/fcos.emd"), "--num-workers", "1",
    )  # fmt: skip
    a, b = gpd.read_file(served), gpd.read_file(out)
    assert len(a) == len(b) > 0
    assert list(a.columns) == list(b.columns)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.geom_equals_exact(b.geometry, tolerance=0).all()


def test_owslib_sync_execution_of_a_short_tool(server: Server) -> None:
    client = Processes(server.url, headers={"Authorization": f"Bearer {KEY_A}"})
    results = client.execute("query_model_info", inputs={"model": "files/unet/unet.emd"})
    assert "UNET" in results["report"] or "Unet" in results["report"]


def test_bad_parameters_get_the_tools_message(server: Server) -> None:
    with server.client() as c:
        bad_type = c.post(
            "/processes/export_training_data/execution",
            json={"inputs": {"in_raster": "files/scene.tif", "tile_size_x": "wide"}},
        )
        assert bad_type.status_code == 400
        assert "tile_size_x 'wide' is not an integer" in bad_type.json()["detail"]
        missing = c.post("/processes/classify_pixels/execution", json={"inputs": {}})
        assert missing.status_code == 400 and "in_raster is required" in missing.json()["detail"]
        assert c.get("/jobs/0123456789abcdef0123456789abcdef").status_code == 404
        # a failure inside the tool: the failed job carries the tool's own one-line message
        failing = c.post(
            "/processes/classify_pixels/execution",
            json={
                "inputs": {
                    "in_raster": "files/scene.tif",
                    "in_model_definition": "files/fcos/fcos.emd",
                }
            },
            headers=PREFER_ASYNC,
        )
        status = wait_job(c, failing.headers["Location"], ogc_done)
        assert status["status"] == "failed"
        assert "pixel classifier" in status["message"]
        assert "\n" not in status["message"]
