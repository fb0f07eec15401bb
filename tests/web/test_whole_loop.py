"""The whole loop in one browser session: label a few buildings of the synthetic scene with the
mouse -> Export Training Data -> train a tiny detector -> Suggest in the view (a candidate
accepted into the samples) -> review the suggestions (decisions kept in their GeoPackage) ->
the jobs page (status, progress, log, result links of the loop's jobs; a job cancelled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import pyogrio
from test_label_page import LEFT, TIMEOUT, TOP, open_label, rendered, saved, to_screen, view
from web_helpers import LabelServer, Tab

from rasterlearn.formats.samples import read_samples
from rasterlearn.synthetic import SyntheticScene

JOB_TIMEOUT = 300_000
LABELLED = 4


def finished(page: Any, job: str) -> None:
    """Wait for the job shown by ``job`` to end; it must have succeeded."""
    page.wait_for_selector(
        f"{job}[data-status=successful], {job}[data-status=failed]", timeout=JOB_TIMEOUT
    )
    assert page.get_attribute(job, "data-status") == "successful", page.inner_text(job)


def label(tab: Tab, server: LabelServer, scene: SyntheticScene) -> None:
    """Rectangles around the first buildings of the top half, drawn with the mouse."""
    page = open_label(tab, server, "files/loop.gpkg")
    page.click("#add-class")
    page.fill("#classes tr[data-value='1'] input[data-field=name]", "building")
    page.keyboard.press("Tab")
    page.click("#map")
    page.keyboard.press("r")
    objects = gpd.read_file(scene.polygons_path)
    buildings = objects[(objects["ClassName"] == "building") & (objects.bounds["miny"] > TOP - 128)]
    state = view(tab)
    for bounds in buildings.geometry.bounds.head(LABELLED).itertuples(index=False):
        first = to_screen(state, bounds.minx, bounds.maxy)
        second = to_screen(state, bounds.maxx, bounds.miny)
        page.mouse.click(*first)
        page.mouse.move(*second, steps=3)
        page.wait_for_timeout(300)  # not a double click
        page.mouse.click(*second)
    page.wait_for_function(
        f"() => document.querySelectorAll('#samples tbody tr').length === {LABELLED}"
    )
    saved(tab, None)


def export_and_train(page: Any) -> tuple[str, str]:
    """64 px chips, then a tiny FCOS (2 epochs, a small backbone, a given learning rate);
    the chips' and the model's data paths."""
    export = page.locator("#export-form form")
    export.locator("[name=metadata_format]").select_option("PASCAL_VOC_rectangles")
    export.locator("[name=tile_size_x]").fill("64")
    export.locator("[name=tile_size_y]").fill("64")
    export.locator("summary").click()  # more parameters
    export.locator("[name=stride_x]").fill("32")
    export.locator("[name=stride_y]").fill("32")
    export.locator("button[type=submit]").click()
    finished(page, "#export-form .job")
    train = page.locator("#train-form form")
    chips = train.locator("[name=in_folder]").input_value()
    assert chips.startswith("jobs/") and chips.endswith("/results/chips")
    train.locator("[name=model_type]").select_option("FCOS")
    train.locator("[name=max_epochs]").fill("2")
    train.locator("[name=batch_size]").fill("4")
    train.locator("summary").click()
    train.locator("[name=learning_rate]").fill("0.002")
    train.locator("[name=backbone_model]").fill("mobilenet_v3_small")
    train.locator("button[type=submit]").click()
    finished(page, "#train-form .job")
    model = page.input_value("#model-path")
    assert model.startswith("jobs/") and model.endswith("/results/model")
    return chips, model


def suggest(tab: Tab, server: LabelServer) -> str:
    """Detect in the current view (the top-left quarter), accept a candidate, discard the
    others; the job's id."""
    page = tab.page
    page.evaluate(
        "(extent) => window.rasterlearn.map.getView().fit(extent)",
        [LEFT, TOP - 128, LEFT + 128, TOP],
    )
    rendered(tab)
    extent = page.evaluate(
        "() => window.rasterlearn.map.getView().calculateExtent(window.rasterlearn.map.getSize())"
    )
    page.fill("#suggest-threshold", "0.2")
    page.click("#suggest")
    finished(page, "#suggest-job")
    candidates = page.locator("#candidates tbody tr")
    found = candidates.count()
    assert found >= 1
    bounds = page.evaluate(
        """() => window.rasterlearn.assist.source.getFeatures()
            .map((f) => f.getGeometry().getExtent())"""
    )
    for xmin, ymin, xmax, ymax in bounds:  # only what the view shows was searched
        assert xmax > extent[0] and xmin < extent[2] and ymax > extent[1] and ymin < extent[3]
    before = page.evaluate("() => window.rasterlearn.page.store.revision")
    candidates.first.locator("[data-action=accept]").click()
    assert candidates.count() == found - 1
    saved(tab, before)
    samples = read_samples(server.files / "loop.gpkg").frame
    assert len(samples) == LABELLED + 1 and set(samples["Classname"]) == {"building"}
    page.click("#discard-all")
    assert page.locator("#candidates-section").is_hidden()
    return page.get_attribute("#suggest-job", "data-job") or ""


def review(page: Any, server: LabelServer, job: str, tmp_path: Path) -> None:
    """Accept the first suggestion, reject the second; read them back from the file."""
    suggestions = f"jobs/{job}/results/suggestions.gpkg"
    page.goto(f"{server.url}/web/review?raster=files/scene.tif&features={suggestions}")
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT)
    page.click("#features tbody tr:first-child")
    first = int(page.get_attribute("#features tr.selected", "data-fid") or 0)
    page.focus("#map")
    page.keyboard.press("a")
    page.keyboard.press("x")
    page.wait_for_function(
        """() => document.body.dataset.save === "saved"
            && window.rasterlearn.page.store.pending.size === 0""",
        timeout=TIMEOUT,
    )
    download = httpx.get(f"{server.url}/jobs/{job}/results/out_detected_objects")
    (tmp_path / "suggestions.gpkg").write_bytes(download.content)
    reviewed = pyogrio.read_dataframe(tmp_path / "suggestions.gpkg", fid_as_index=True)
    decided = reviewed["Status"].dropna()
    assert decided.tolist() == ["accepted", "rejected"][: len(decided)]
    assert decided.index[0] == first and reviewed["ReviewedClass"][first] == "building"


def jobs_page(page: Any, server: LabelServer, chips: str, model: str) -> None:
    """The training's status, progress, log and results; another training cancelled while
    it runs."""
    endless = httpx.post(
        f"{server.url}/processes/train_deep_learning_model/execution",
        json={
            "inputs": {
                "in_folder": chips,
                "out_folder": "never",
                "max_epochs": 100000,
                "batch_size": 4,
                "backbone_model": "mobilenet_v3_small",
            }
        },
        headers={"Prefer": "respond-async"},
    ).json()["jobID"]
    page.goto(f"{server.url}/web/jobs")
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT)
    trained_id = model.split("/")[1]
    trained = page.locator(f"tr[data-job='{trained_id}']")
    assert trained.get_attribute("data-status") == "successful"
    assert trained.locator("td").nth(1).inner_text() == "Train Deep Learning Model"
    assert trained.locator("progress").get_attribute("value") == "100"
    link = trained.locator(".results a")
    assert link.inner_text() == "out_folder"
    assert any(
        f.endswith(".emd") for f in httpx.get(link.get_attribute("href") or "").json()["files"]
    )
    trained.locator("[data-action=log]").click()
    log = page.locator(f"tr[data-log='{trained_id}'] pre")
    log.wait_for(timeout=TIMEOUT)
    assert "Trained FCOS for 2 epochs" in log.inner_text()
    running = page.locator(f"tr[data-job='{endless}'][data-status=running]")
    running.wait_for(timeout=TIMEOUT)
    running.locator("[data-action=cancel]").click()
    page.wait_for_selector(f"tr[data-job='{endless}'][data-status=dismissed]", timeout=TIMEOUT)
    assert httpx.get(f"{server.url}/jobs/{endless}").json()["status"] == "dismissed"


def test_label_export_train_suggest_review(
    label_server: LabelServer, tabs: Any, scene: SyntheticScene, tmp_path: Path
) -> None:
    tab = tabs()
    label(tab, label_server, scene)
    chips, model = export_and_train(tab.page)
    job = suggest(tab, label_server)
    review(tab.page, label_server, job, tmp_path)
    jobs_page(tab.page, label_server, chips, model)
