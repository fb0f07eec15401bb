"""The label page in Chromium: the imagery shows the raster's colours, a rectangle drawn with the
mouse is saved in the chosen class at the clicked coordinates, reshape and delete persist, two
tabs never overwrite each other, Export Training Data runs as a job from the page."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from web_helpers import LabelServer, Tab

from rasterlearn.formats.chips import ClassInfo
from rasterlearn.formats.samples import NO_REVISION, read_samples, samples_frame, write_samples

CELL = 0.5  # the scene's pixel size (m)
LEFT, TOP = 400000.0, 3300000.0
CLASSES = [ClassInfo(1, "building", (230, 25, 75)), ClassInfo(2, "tree", (60, 180, 75))]
TIMEOUT = 30_000


def open_label(tab: Tab, server: LabelServer, samples: str, raster: str = "files/scene.tif"):
    page = tab.page
    page.goto(f"{server.url}/web/label?{urlencode({'raster': raster, 'samples': samples})}")
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT)
    rendered(tab)
    return page


def rendered(tab: Tab) -> None:
    """Wait until the map has drawn every tile of the view."""
    tab.page.evaluate(
        """() => new Promise((done) => {
            const map = window.rasterlearn.map;
            map.once("rendercomplete", () => done(true));
            map.render();
        })"""
    )


def view(tab: Tab) -> dict[str, Any]:
    """Where the map is: its centre, resolution and size, and the map element's place."""
    return tab.page.evaluate(
        """() => {
            const map = window.rasterlearn.map, v = map.getView();
            const box = map.getTargetElement().getBoundingClientRect();
            return {center: v.getCenter(), resolution: v.getResolution(), size: map.getSize(),
                    left: box.left, top: box.top};
        }"""
    )


def to_screen(state: dict[str, Any], x: float, y: float) -> tuple[int, int]:
    """The page pixel showing map point (x, y), computed from the view, not by OpenLayers."""
    (cx, cy), res, (w, h) = state["center"], state["resolution"], state["size"]
    sx = state["left"] + w / 2 + (x - cx) / res
    sy = state["top"] + h / 2 - (y - cy) / res
    return round(sx), round(sy)


def to_map(state: dict[str, Any], sx: float, sy: float) -> tuple[float, float]:
    """The map point under page position (sx, sy)."""
    (cx, cy), res, (w, h) = state["center"], state["resolution"], state["size"]
    return cx + (sx - state["left"] - w / 2) * res, cy - (sy - state["top"] - h / 2) * res


def saved(tab: Tab, before: str | None) -> None:
    """Wait until the page has saved a revision other than ``before``."""
    tab.page.wait_for_function(
        """(before) => document.body.dataset.save === "saved"
            && window.rasterlearn.page.store.revision !== before""",
        arg=before,
        timeout=TIMEOUT,
    )


def revision(tab: Tab) -> str:
    return tab.page.evaluate("() => window.rasterlearn.page.store.revision")


def prepare(server: LabelServer, name: str, boxes: list[tuple[float, ...]]) -> str:
    """A samples file of class-1 rectangles (map bounds); its data path."""
    features = [
        {
            "type": "Feature",
            "geometry": shapely.box(*b).__geo_interface__,
            "properties": {"Classvalue": 1},
        }
        for b in boxes
    ]
    frame = samples_frame(features, CLASSES, CRS.from_epsg(32617))
    write_samples(server.files / name, frame, CLASSES, NO_REVISION)
    return f"files/{name}"


def test_the_imagery_shows_the_rasters_colours(label_server: LabelServer, tabs: Any) -> None:
    tab = tabs()
    open_label(tab, label_server, "files/render.gpkg")
    state = view(tab)
    with MemoryFile(tab.page.screenshot()) as memory, memory.open() as shot:
        screen = shot.read()[:3]
    with rasterio.open(label_server.files / "scene.tif") as ds:
        raster = ds.read()
    compared = 0
    for row in range(40, 480, 23):
        for col in range(40, 480, 29):
            sx, sy = to_screen(state, LEFT + (col + 0.5) * CELL, TOP - (row + 0.5) * CELL)
            x, y = to_map(state, sx + 0.5, sy + 0.5)  # the centre of that screen pixel
            fc, fr = (x - LEFT) / CELL, (TOP - y) / CELL
            if not (0.2 < fc % 1 < 0.8 and 0.2 < fr % 1 < 0.8):
                continue  # too near a raster pixel's edge to say which one is shown
            assert np.abs(screen[:, sy, sx].astype(int) - raster[:, int(fr), int(fc)]).max() <= 2
            compared += 1
    assert compared > 50


@pytest.mark.parametrize("raster", ["scene.tif", "pixels.tif"])
def test_a_rectangle_drawn_with_the_mouse_is_saved_in_the_chosen_class(
    label_server: LabelServer, tabs: Any, raster: str
) -> None:
    tab = tabs()
    page = open_label(tab, label_server, f"files/draw-{raster}.gpkg", f"files/{raster}")
    info = page.evaluate("() => window.rasterlearn.info")
    page.click("#add-class")
    page.click("#add-class")
    page.fill("#classes tr[data-value='2'] input[data-field=name]", "tree")
    page.keyboard.press("Tab")
    page.click("#map")
    page.keyboard.press("2")  # the second class
    page.keyboard.press("r")
    state = view(tab)
    left, top = info["extent"][0], info["extent"][3]
    corners = [(left + col * CELL, top - row * CELL) for col, row in ((100, 80), (180, 141))]
    if raster == "pixels.tif":
        corners = [(col, -row) for col, row in ((100, 80), (180, 141))]
    screen = [to_screen(state, *c) for c in corners]
    page.mouse.click(*screen[0])
    page.mouse.move(*screen[1], steps=4)
    page.wait_for_timeout(300)  # not a double click
    page.mouse.click(*screen[1])
    saved(tab, None)
    clicked = np.array([to_map(state, *s) for s in screen])
    if info["flip_y"]:
        clicked[:, 1] *= -1  # pixel space: rows go down
    samples = read_samples(label_server.files / f"draw-{raster}.gpkg")
    assert samples.frame["Classvalue"].tolist() == [2]
    assert samples.frame["Classname"].tolist() == ["tree"]
    bounds = np.array(samples.frame.geometry[0].bounds).reshape(2, 2)
    expected = np.array([clicked.min(axis=0), clicked.max(axis=0)])
    pixel = CELL if raster == "scene.tif" else 1.0
    assert np.abs(bounds - expected).max() <= pixel
    drawn = samples.frame.geometry[0]
    assert drawn.area == pytest.approx(drawn.envelope.area)  # a rectangle
    assert page.inner_text("#classes tr[data-value='2'] .count") == "1"
    assert page.locator("#samples tbody tr").count() == 1


def test_reshape_and_delete_persist_after_a_reload(label_server: LabelServer, tabs: Any) -> None:
    a = (LEFT + 20, TOP - 100, LEFT + 40, TOP - 80)
    b = (LEFT + 80, TOP - 100, LEFT + 100, TOP - 80)
    samples = prepare(label_server, "edit.gpkg", [a, b])
    tab = tabs()
    page = open_label(tab, label_server, samples)
    page.keyboard.press("s")
    state = view(tab)
    page.mouse.click(*to_screen(state, LEFT + 30, TOP - 90))  # select a
    page.wait_for_selector("#samples tr.selected[data-sample='1']")
    before = revision(tab)
    corner, moved = to_screen(state, a[2], a[3]), to_screen(state, a[2] + 10, a[3] + 6)
    page.mouse.move(*corner)
    page.mouse.down()
    page.mouse.move(*moved, steps=6)
    page.mouse.up()
    saved(tab, before)
    target = np.array(to_map(state, *moved))
    page.mouse.click(*to_screen(state, LEFT + 90, TOP - 90))  # select b
    page.wait_for_selector("#samples tr.selected[data-sample='2']")
    before = revision(tab)
    page.keyboard.press("Delete")
    saved(tab, before)
    page.reload()
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT)
    shown = page.evaluate(
        """() => window.rasterlearn.page.source.getFeatures()
            .map((f) => f.getGeometry().getCoordinates()[0])"""
    )
    assert len(shown) == 1
    stored = read_samples(label_server.files / "edit.gpkg").frame.geometry
    assert len(stored) == 1
    for ring in (np.array(shown[0]), shapely.get_coordinates(stored[0])):
        nearest = np.abs(ring - target).sum(axis=1).min()
        assert nearest <= CELL  # the dragged corner is where the mouse let it go
        assert not np.any(np.all(np.abs(ring - (a[2], a[3])) < 1e-6, axis=1))  # not where it was


def test_a_second_tab_cannot_overwrite_the_first(label_server: LabelServer, tabs: Any) -> None:
    samples = prepare(label_server, "tabs.gpkg", [(LEFT + 20, TOP - 100, LEFT + 40, TOP - 80)])
    first, second = tabs(), tabs()
    second.expected.append("status of 409")  # the browser logs the refused save
    for tab in (first, second):
        open_label(tab, label_server, samples)
    for tab, x in ((first, 60), (second, 100)):
        tab.page.keyboard.press("p")
        tab.page.keyboard.press("t")  # points
        tab.page.mouse.click(*to_screen(view(tab), LEFT + x, TOP - 50))
    saved(first, revision(first))
    second.page.wait_for_selector("#conflict:not([hidden])", timeout=TIMEOUT)
    message = second.page.inner_text("#conflict .message")
    assert "saved elsewhere" in message and "reload the page" in message
    assert len(read_samples(label_server.files / "tabs.gpkg").frame) == 2  # the first tab's
    second.page.click("#reload")
    second.page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT)
    assert second.page.locator("#samples tbody tr").count() == 2


def test_export_training_data_runs_as_a_job_from_the_page(
    label_server: LabelServer, tabs: Any
) -> None:
    boxes = [(LEFT + 20 + 40 * i, TOP - 100, LEFT + 40 + 40 * i, TOP - 80) for i in range(4)]
    samples = prepare(label_server, "export.gpkg", boxes)
    tab = tabs()
    page = open_label(tab, label_server, samples)
    form = page.locator("#export-form form")
    assert form.locator("[name=in_class_data]").input_value() == samples
    form.locator("[name=tile_size_x]").fill("128")
    form.locator("[name=tile_size_y]").fill("128")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#export-form .job[data-status=successful]", timeout=120_000)
    assert form.locator("progress").get_attribute("value") == "100"
    folder = page.locator("#train-form [name=in_folder]").input_value()
    assert folder.startswith("jobs/") and folder.endswith("/results/chips")
    chips = page.evaluate(
        "(path) => fetch(path).then((r) => r.json())",
        "/" + folder.replace("/results/chips", "/results/out_folder"),
    )
    assert any(name.startswith("images/") for name in chips["files"])


def test_label_prints_the_page_url(label_server: LabelServer) -> None:
    assert label_server.printed == (
        f"{label_server.url}/web/label?raster=files%2Fscene.tif&samples=files%2Fscene_samples.gpkg"
    )
