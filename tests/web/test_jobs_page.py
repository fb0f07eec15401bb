"""The jobs page in Chromium: every job with its status, progress, log and result links; a
running job cancelled from the page stops (its process killed, nothing kept)."""

from __future__ import annotations

import time
from typing import Any

import geopandas as gpd
import httpx
import shapely
from test_label_page import TIMEOUT
from web_helpers import LabelServer

from rasterlearn import export_training_data
from rasterlearn.synthetic import SyntheticScene


def submit(server: LabelServer, process: str, inputs: dict[str, Any]) -> str:
    response = httpx.post(
        f"{server.url}/processes/{process}/execution",
        json={"inputs": inputs},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 201, response.text
    return response.json()["jobID"]


def status(server: LabelServer, job: str) -> dict[str, Any]:
    return httpx.get(f"{server.url}/jobs/{job}").json()


def test_jobs_show_status_log_results_and_cancel(
    label_server: LabelServer, tabs: Any, scene: SyntheticScene
) -> None:
    boxes = gpd.GeoDataFrame(
        {"Class": ["building"]},
        geometry=[shapely.box(400020, 3299900, 400040, 3299920)],
        crs="EPSG:32617",
    )
    boxes.to_file(label_server.files / "jobs-boxes.gpkg")
    export_training_data(
        label_server.files / "scene.tif",
        label_server.files / "jobs-chips",
        label_server.files / "jobs-boxes.gpkg",
        metadata_format="PASCAL_VOC_rectangles",
        tile_size_x=64,
        tile_size_y=64,
        stride_x=32,
        stride_y=32,
    )
    done = submit(
        label_server,
        "compute_accuracy_for_object_detection",
        {
            "detected_features": "files/jobs-boxes.gpkg",
            "ground_truth_features": "files/jobs-boxes.gpkg",
            "out_accuracy_table": "accuracy.csv",
        },
    )
    deadline = time.monotonic() + 120
    while status(label_server, done)["status"] in ("accepted", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status(label_server, done)["status"] == "successful"
    endless = submit(
        label_server,
        "train_deep_learning_model",
        {"in_folder": "files/jobs-chips", "out_folder": "never", "max_epochs": 100000},
    )
    tab = tabs()
    page = tab.page
    page.goto(f"{label_server.url}/web/jobs")
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT)
    row = page.locator(f"tr[data-job='{done}']")
    assert row.get_attribute("data-status") == "successful"
    assert row.locator("progress").get_attribute("value") == "100"
    assert row.locator("td").nth(1).inner_text() == "Compute Accuracy For Object Detection"
    link = row.locator(".results a")
    assert link.inner_text() == "out_accuracy_table"
    table = httpx.get(link.get_attribute("href") or "")
    assert table.status_code == 200 and table.text.startswith("Class,Precision")
    row.locator("[data-action=log]").click()
    log = page.locator(f"tr[data-log='{done}'] pre")
    log.wait_for(timeout=TIMEOUT)
    assert "Wrote" in log.inner_text()
    running = page.locator(f"tr[data-job='{endless}'][data-status=running]")
    running.wait_for(timeout=TIMEOUT)
    running.locator("[data-action=cancel]").click()
    page.wait_for_selector(f"tr[data-job='{endless}'][data-status=dismissed]", timeout=TIMEOUT)
    assert status(label_server, endless)["status"] == "dismissed"
    assert (
        not page.locator(f"tr[data-job='{endless}'] [data-action]")
        .filter(has_text="Cancel")
        .count()
    )
