"""The review page in Chromium, served by ``rasterlearn review``: the confidence slider filters,
the attribute table and the map select each other, accept/reject/reclass (keys and buttons)
persist in the GeoPackage, the classified raster shows its colour table's colours, accuracy
runs as a job against the accepted features."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.io import MemoryFile
from test_label_page import TIMEOUT, rendered, to_map, to_screen, view
from web_helpers import LabelServer, Tab

from rasterlearn.formats.classified_raster import write_class_names
from rasterlearn.synthetic import SyntheticScene

SCORES = [95.0, 85.0, 75.0, 65.0, 55.0, 45.0, 35.0, 25.0]


@pytest.fixture(scope="module")
def review_server(
    tmp_path_factory: pytest.TempPathFactory, scene: SyntheticScene
) -> Iterator[LabelServer]:
    """``rasterlearn review scene.tif detections.gpkg classes.tif``: detections are the
    scene's first objects' boxes with their class names and falling confidences; the class
    raster has its colour table and class names."""
    folder = tmp_path_factory.mktemp("review")
    shutil.copy(scene.raster_path, folder / "scene.tif")
    shutil.copy(scene.class_raster_path, folder / "classes.tif")
    write_class_names(folder / "classes.tif", [(c.value, c.name, c.color) for c in scene.classes])
    objects = gpd.read_file(scene.polygons_path).head(len(SCORES))
    frame = gpd.GeoDataFrame(
        {"Class": objects["ClassName"], "Confidence": SCORES},
        geometry=objects.geometry.envelope,
        crs=objects.crs,
    )
    for name in ("detections", "keys", "accuracy"):
        frame.to_file(folder / f"{name}.gpkg", layer=name)
    command = ["review", str(folder / "scene.tif"), str(folder / "detections.gpkg")]
    server = LabelServer(folder, folder / "data", [*command, str(folder / "classes.tif")])
    yield server
    server.proc.kill()
    server.proc.wait()


def open_review(tab: Tab, server: LabelServer, **params: str) -> Any:
    page = tab.page
    page.goto(f"{server.url}/web/review?{urlencode({'raster': 'files/scene.tif', **params})}")
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT)
    rendered(tab)
    return page


def saved(tab: Tab) -> None:
    tab.page.wait_for_function(
        """() => document.body.dataset.save === "saved"
            && window.rasterlearn.page.store.pending.size === 0""",
        timeout=TIMEOUT,
    )


def selected_fid(tab: Tab) -> int:
    return int(tab.page.get_attribute("#features tr.selected", "data-fid") or 0)


def slide(tab: Tab, value: float) -> None:
    tab.page.evaluate(
        """(value) => {
            const slider = document.getElementById("confidence");
            slider.value = String(value);
            slider.dispatchEvent(new Event("input"));
        }""",
        value,
    )


def test_review_prints_the_page_url(review_server: LabelServer) -> None:
    query = urlencode(
        {
            "raster": "files/scene.tif",
            "features": "files/detections.gpkg",
            "classified": "files/classes.tif",
        }
    )
    assert review_server.printed == f"{review_server.url}/web/review?{query}"


def test_decisions_persist_in_the_geopackage(review_server: LabelServer, tabs: Any) -> None:
    tab = tabs()
    page = open_review(tab, review_server, features="files/keys.gpkg")
    frame = gpd.read_file(review_server.files / "keys.gpkg")
    classes = sorted(set(frame["Class"]))
    assert page.locator("#features tbody tr").count() == len(SCORES)
    slide(tab, 50)  # the confidence slider hides what scores less
    assert page.locator("#features tbody tr").count() == 5
    assert (
        page.evaluate(
            """() => window.rasterlearn.page.source.getFeatures()
            .filter((f) => window.rasterlearn.page.style(f, false) === null).length"""
        )
        == len(SCORES) - 5
    )
    # feature -> row: a click on feature 4 on the map selects its row
    centre = frame.geometry[3].centroid
    page.mouse.click(*to_screen(view(tab), centre.x, centre.y))
    page.wait_for_selector("#features tr.selected[data-fid='4']")
    # row -> zoom: a click on row 2 selects feature 2 and centres the map on it
    page.click("#features tr[data-fid='2']")
    state = view(tab)
    assert frame.geometry[1].buffer(1.0).contains(shapely.Point(state["center"]))
    assert selected_fid(tab) == 2
    page.click("#features tr[data-fid='1']")
    page.focus("#map")
    page.keyboard.press("a")  # accept 1, move on to 2
    assert selected_fid(tab) == 2
    page.keyboard.press("x")  # reject 2
    page.keyboard.press("2")  # 3 becomes the second class (accepted)
    assert selected_fid(tab) == 4
    page.select_option("#review-class", classes[0])
    page.click("#reclass")  # 4 becomes the first class
    saved(tab)
    stored = pyogrio.read_dataframe(review_server.files / "keys.gpkg", fid_as_index=True)
    expected = ["accepted", "rejected", "accepted", "accepted"]
    assert stored["Status"][[1, 2, 3, 4]].tolist() == expected
    assert stored["ReviewedClass"][1] == frame["Class"][0] and pd.isna(stored["ReviewedClass"][2])
    assert stored["ReviewedClass"][[3, 4]].tolist() == [classes[1], classes[0]]
    assert stored["ReviewedAt"][[1, 2, 3, 4]].notna().all()
    assert stored["Status"][[5, 6, 7, 8]].isna().all()
    page.reload()
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT)
    statuses = page.eval_on_selector_all(
        "#features tbody tr", "(rows) => rows.map((r) => r.dataset.status)"
    )
    assert statuses[:5] == ["accepted", "rejected", "accepted", "accepted", ""]
    assert page.inner_text("#review-counts").startswith("3 accepted · 1 rejected")


def test_the_classified_raster_shows_its_colours(review_server: LabelServer, tabs: Any) -> None:
    tab = tabs()
    page = open_review(tab, review_server, classified="files/classes.tif")
    assert page.eval_on_selector_all("#legend tbody tr", "(rows) => rows.length") == 3
    page.evaluate(
        """() => {
            const slider = document.getElementById("classified-opacity");
            slider.value = "1";
            slider.dispatchEvent(new Event("input"));
        }"""
    )
    rendered(tab)
    state = view(tab)
    with MemoryFile(page.screenshot()) as memory, memory.open() as shot:
        screen = shot.read()[:3]
    with rasterio.open(review_server.files / "classes.tif") as ds:
        classes, colours = ds.read(1), ds.colormap(1)
        transform = ds.transform
    with rasterio.open(review_server.files / "scene.tif") as ds:
        imagery = ds.read()
    compared = {"class": 0, "background": 0}
    for row in range(10, 500, 9):
        for col in range(10, 500, 11):
            x, y = transform @ (col + 0.5, row + 0.5)
            sx, sy = to_screen(state, x, y)
            mx, my = to_map(state, sx + 0.5, sy + 0.5)
            fc, fr = ~transform @ (mx, my)
            if not (0.2 < fc % 1 < 0.8 and 0.2 < fr % 1 < 0.8):
                continue
            value = classes[int(fr), int(fc)]
            shown = screen[:, sy, sx].astype(int)
            if value:
                expected = np.array(colours[value][:3])
                compared["class"] += 1
            else:  # background: transparent, the imagery shows
                expected = imagery[:, int(fr), int(fc)].astype(int)
                compared["background"] += 1
            assert np.abs(shown - expected).max() <= 2, (row, col, value)
    assert compared["class"] > 20 and compared["background"] > 20


def test_accuracy_against_the_accepted_features(review_server: LabelServer, tabs: Any) -> None:
    tab = tabs()
    page = open_review(tab, review_server, features="files/accuracy.gpkg")
    slide(tab, 50)
    page.click("#accept-shown")
    page.click("#accuracy-run")
    page.wait_for_selector("#accuracy-result[data-status=successful]", timeout=120_000)
    report = page.inner_text("#accuracy-result")
    assert "5 accepted features as ground truth" in report
    assert "Precision" in report and "All" in report
    truth = gpd.read_file(review_server.files / "accuracy_accepted.gpkg")
    assert len(truth) == 5
