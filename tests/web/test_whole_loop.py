"""The whole loop in one browser session: label a few buildings of the synthetic scene with the
mouse -> Export Training Data -> train a tiny detector -> Suggest in the view (candidates
accepted into the samples) -> review the suggestions (decisions kept in their GeoPackage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import pyogrio
from test_label_page import LEFT, TIMEOUT, TOP, open_label, rendered, saved, to_screen, view
from web_helpers import LabelServer

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


def test_label_export_train_suggest_review(
    label_server: LabelServer, tabs: Any, scene: SyntheticScene, tmp_path: Path
) -> None:
    tab = tabs()
    page = open_label(tab, label_server, "files/loop.gpkg")
    page.click("#add-class")
    page.fill("#classes tr[data-value='1'] input[data-field=name]", "building")
    page.keyboard.press("Tab")
    page.click("#map")
    page.keyboard.press("r")
    # label: rectangles around the first buildings of the top half, drawn with the mouse
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
    # export: 64 px chips of the samples
    export = page.locator("#export-form form")
    export.locator("[name=metadata_format]").select_option("PASCAL_VOC_rectangles")
    export.locator("[name=tile_size_x]").fill("64")
    export.locator("[name=tile_size_y]").fill("64")
    export.locator("summary").click()  # more parameters
    export.locator("[name=stride_x]").fill("32")
    export.locator("[name=stride_y]").fill("32")
    export.locator("button[type=submit]").click()
    finished(page, "#export-form .job")
    # train: a tiny FCOS (2 epochs, a small backbone, a given learning rate)
    train = page.locator("#train-form form")
    assert train.locator("[name=in_folder]").input_value().endswith("/results/chips")
    train.locator("[name=model_type]").select_option("FCOS")
    train.locator("[name=max_epochs]").fill("2")
    train.locator("[name=batch_size]").fill("4")
    train.locator("summary").click()  # more parameters
    train.locator("[name=learning_rate]").fill("0.002")
    train.locator("[name=backbone_model]").fill("mobilenet_v3_small")
    train.locator("button[type=submit]").click()
    finished(page, "#train-form .job")
    model = page.input_value("#model-path")
    assert model.startswith("jobs/") and model.endswith("/results/model")
    # suggest: detect in the current view (the top-left quarter) with the trained model
    shown = [LEFT, TOP - 128, LEFT + 128, TOP]
    page.evaluate("(extent) => window.rasterlearn.map.getView().fit(extent)", shown)
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
    samples = read_samples(label_server.files / "loop.gpkg").frame
    assert len(samples) == LABELLED + 1 and set(samples["Classname"]) == {"building"}
    page.click("#discard-all")
    assert page.locator("#candidates-section").is_hidden()
    # review the suggestions: accept the first, reject the second
    job = page.get_attribute("#suggest-job", "data-job")
    suggestions = f"jobs/{job}/results/suggestions.gpkg"
    page.goto(f"{label_server.url}/web/review?raster=files/scene.tif&features={suggestions}")
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
    download = httpx.get(f"{label_server.url}/jobs/{job}/results/out_detected_objects")
    (tmp_path / "suggestions.gpkg").write_bytes(download.content)
    reviewed = pyogrio.read_dataframe(tmp_path / "suggestions.gpkg", fid_as_index=True)
    decided = reviewed["Status"].dropna()
    assert decided.tolist() == ["accepted", "rejected"][: len(decided)]
    assert decided.index[0] == first and reviewed["ReviewedClass"][first] == "building"
