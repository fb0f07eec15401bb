"""The ArcGIS GPServer shape driven with plain HTTP as ArcGIS's Python API does it: submitJob
(a form with ``token``), poll the job, read its results; export and train equal the CLI's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from serve_helpers import KEY_A, Server
from typer.testing import CliRunner

from rasterlearn.cli.app import app

GP = "/arcgis/rest/services/RasterAnalysisTools/GPServer"
TERMINAL = ("esriJobSucceeded", "esriJobFailed", "esriJobCancelled")


def cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


def run_task(server: Server, task: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """submitJob, then poll until the job ends: its id and last status."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        form = {**params, "f": "json", "token": KEY_A}
        submitted = c.post(f"{GP}/{task}/submitJob", data=form).json()
        assert submitted["jobStatus"] == "esriJobSubmitted", submitted
        job_id = submitted["jobId"]
        deadline = time.monotonic() + 240
        while True:
            status = c.get(f"{GP}/{task}/jobs/{job_id}", params={"f": "json", "token": KEY_A})
            info = status.json()
            if info["jobStatus"] in TERMINAL or time.monotonic() > deadline:
                return job_id, info
            time.sleep(0.3)


def result(server: Server, task: str, job_id: str, param: str) -> dict[str, Any]:
    url = f"{server.url}{GP}/{task}/jobs/{job_id}/results/{param}"
    return httpx.get(url, params={"f": "pjson", "token": KEY_A}).json()


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_service_and_task_descriptions(server: Server) -> None:
    info = httpx.get(server.url + GP, params={"f": "json"}).json()
    for task in (
        "DetectObjectsUsingDeepLearning",
        "ClassifyPixelsUsingDeepLearning",
        "ClassifyObjectsUsingDeepLearning",
        "DetectChangeUsingDeepLearning",
        "TrainDeepLearningModel",
        "ExportTrainingDataforDeepLearning",
        "QueryDeepLearningModelInfo",
        "NonMaximumSuppression",
        "ComputeAccuracyForObjectDetection",
        "ComputePixelAccuracy",
    ):
        assert task in info["tasks"]
    task = httpx.get(f"{server.url}{GP}/ClassifyPixelsUsingDeepLearning?f=pjson").json()
    by_name = {p["name"]: p for p in task["parameters"]}
    assert by_name["inputRaster"]["dataType"] == "GPRasterDataLayer"
    assert by_name["outputClassifiedRaster"]["dataType"] == "GPRasterDataLayer"
    assert by_name["outputClassifiedRaster"]["direction"] == "esriGPParameterDirectionOutput"
    assert by_name["modelArguments"]["dataType"] == "GPString"
    assert by_name["cog"]["dataType"] == "GPBoolean"
    missing = httpx.get(f"{server.url}{GP}/NoSuchTask?f=json")
    assert missing.status_code == 404 and "error" in missing.json()


def test_export_then_train_equal_the_cli(server: Server, serve_data: Path, tmp_path: Path) -> None:
    export = {
        "inputRaster": "files/scene.tif",
        "outputLocation": "chips",
        "inputClassData": "files/scene_polygons.gpkg",
        "metadataFormat": "Classified_Tiles",
        "tileSizeX": "64",
        "tileSizeY": "64",
        "strideX": "64",
        "strideY": "64",
    }
    task = "ExportTrainingDataforDeepLearning"
    export_id, info = run_task(server, task, export)
    assert info["jobStatus"] == "esriJobSucceeded", info
    assert any(m["description"].startswith("Wrote ") for m in info["messages"])
    value = result(server, task, export_id, "outputLocation")
    assert value["paramName"] == "outputLocation" and "map.txt" in value["value"]["files"]
    url = f"{server.url}{GP}/{task}/jobs/{export_id}/inputs/inputRaster"
    given = httpx.get(url, params={"f": "json", "token": KEY_A}).json()
    assert given["value"] == "files/scene.tif"  # the server's own folders are not disclosed
    served = serve_data / "jobs" / export_id / "results" / "chips"
    cli_export = tmp_path / "chips"
    cli(
        "export-training-data", str(serve_data / "files/scene.tif"), str(cli_export),
        "--class-data", str(serve_data / "files/scene_polygons.gpkg"),
        "--metadata-format", "Classified_Tiles", "--tile-size-x", "64", "--tile-size-y", "64",
        "--stride-x", "64", "--stride-y", "64",
    )  # fmt: skip
    mine, theirs = files_of(served), files_of(cli_export)
    assert sorted(mine) == sorted(theirs)
    images = [n for n in mine if n.startswith(("images", "labels"))]
    assert images and all(mine[n] == theirs[n] for n in images)

    train = {
        "inFolder": json.dumps([f"jobs/{export_id}/results/chips"]),
        "outputModel": "model",
        "maxEpochs": "1",
        "modelType": "UNET",
        "batchSize": "16",
        "learningRate": "0.002",
        "backboneModel": "resnet18",
        "seed": "3",
        "stopTraining": "false",
    }
    task = "TrainDeepLearningModel"
    train_id, info = run_task(server, task, train)
    assert info["jobStatus"] == "esriJobSucceeded", info
    report = result(server, task, train_id, "report")["value"]
    assert "Trained UNET for 1 epochs" in report
    model = serve_data / "jobs" / train_id / "results" / "model"
    cli_model = tmp_path / "model"
    cli(
        "train", str(cli_export), str(cli_model), "--max-epochs", "1", "--model-type", "UNET",
        "--batch-size", "16", "--learning-rate", "0.002", "--backbone-model", "resnet18",
        "--seed", "3", "--continue-training",
    )  # fmt: skip
    assert sorted(files_of(model)) == sorted(files_of(cli_model))
    emd, cli_emd = (json.loads((m / "model.emd").read_text()) for m in (model, cli_model))
    for key in ("ModelType", "Framework", "ImageHeight", "ExtractBands", "Classes"):
        assert emd.get(key) == cli_emd.get(key)
