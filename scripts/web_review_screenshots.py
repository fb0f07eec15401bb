"""Screenshots of the review and jobs pages for the docs (docs/images/), on a synthetic scene.

Run: ``.venv/bin/python scripts/web_review_screenshots.py [--out docs/images]``. Starts
``rasterlearn review`` on a 512 x 512 px synthetic scene, detections made from its objects
(boxes with falling confidences) and its class raster, reviews a few detections, computes the
accuracy, and saves the review page and the jobs page (Debian's Chromium, Playwright).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import geopandas as gpd
import httpx
import numpy as np
from local_pages import local_pages

from rasterlearn.formats.classified_raster import write_class_names
from rasterlearn.synthetic import make_scene


def _scene(folder: Path) -> list[str]:
    scene = make_scene(folder, width=512, height=512, seed=3)
    write_class_names(
        Path(scene.class_raster_path), [(c.value, c.name, c.color) for c in scene.classes]
    )
    objects = gpd.read_file(scene.polygons_path)
    detections = gpd.GeoDataFrame(
        {"Class": objects["ClassName"], "Confidence": np.linspace(98, 30, len(objects)).round(1)},
        geometry=objects.geometry.envelope,
        crs=objects.crs,
    )
    detections.to_file(folder / "detections.gpkg", layer="detections")
    return [str(scene.raster_path), str(folder / "detections.gpkg"), str(scene.class_raster_path)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rl-review-shots-"))
    files = _scene(work / "scene")
    with local_pages(["review", *files], work / "data") as pages:
        port, browser = pages.port, pages.browser
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(pages.url)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        page.click("#features tbody tr:first-child")
        page.focus("#map")
        for key in "aaxa2aax":  # accept, reject, reclass as the second class
            page.keyboard.press(key)
        page.click("#accuracy-run")
        page.wait_for_selector("#accuracy-result[data-status=successful]", timeout=300_000)
        page.click("#features tbody tr:nth-child(10)")
        page.evaluate(
            """() => {
                    const slider = document.getElementById("confidence");
                    slider.value = "40";
                    slider.dispatchEvent(new Event("input"));
                    const view = window.rasterlearn.map.getView();
                    const [x0, y0, x1, y1] = window.rasterlearn.info.extent;
                    view.fit([x0, (y0 + y1) / 2, (x0 + x1) / 2, y1]);
                }"""
        )
        page.wait_for_timeout(1500)
        page.screenshot(path=str(args.out / "review-page.jpg"), quality=85)
        export = {
            "in_raster": "files/scene.tif",
            "in_class_data": "files/scene_polygons.gpkg",
            "out_folder": "chips",
            "tile_size_x": 64,
            "tile_size_y": 64,
        }
        httpx.post(
            f"http://127.0.0.1:{port}/processes/export_training_data/execution",
            json={"inputs": export},
            headers={"Prefer": "respond-async"},
        )
        jobs = browser.new_page(viewport={"width": 1280, "height": 400})
        jobs.goto(f"http://127.0.0.1:{port}/web/jobs")
        jobs.wait_for_selector("body[data-ready=true]", timeout=60_000)
        jobs.click("#jobs tr[data-status=successful] [data-action=log]")
        jobs.wait_for_selector(".log-row pre")
        jobs.screenshot(path=str(args.out / "jobs-page.jpg"), quality=85)
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
