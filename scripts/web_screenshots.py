"""Screenshots of the web pages for the docs (docs/images/), on a synthetic scene.

Run: ``.venv/bin/python scripts/web_screenshots.py [--out docs/images]``. Starts
``rasterlearn label`` on a 512 x 512 px synthetic scene with a few samples (the scene's own
buildings and trees) and Debian's Chromium (Playwright), and saves each page.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import geopandas as gpd
import shapely
from local_pages import local_pages

from rasterlearn.formats.chips import ClassInfo
from rasterlearn.formats.samples import NO_REVISION, samples_frame, write_samples
from rasterlearn.synthetic import make_scene

CLASSES = [ClassInfo(1, "building", (230, 25, 75)), ClassInfo(2, "tree", (60, 180, 75))]


def _samples(scene_dir: Path) -> Path:
    scene = make_scene(scene_dir, width=512, height=512, seed=3)
    polygons = gpd.read_file(scene.polygons_path)
    values = {"building": 1, "tree": 2}
    wanted = polygons[polygons["ClassName"].isin(list(values))].head(8)
    features = [
        {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(g),
            "properties": {"Classvalue": values[n]},
        }
        for g, n in zip(wanted.geometry, wanted["ClassName"], strict=True)
    ]
    path = scene_dir / "scene_samples.gpkg"
    write_samples(path, samples_frame(features, CLASSES, polygons.crs), CLASSES, NO_REVISION)
    return Path(scene.raster_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rl-shots-"))
    raster = _samples(work / "scene")
    with local_pages(["label", str(raster)], work / "data") as pages:
        page = pages.browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(pages.url)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        page.click("#samples tbody tr:nth-child(2)")  # a selected sample
        page.evaluate("() => window.rasterlearn.map.getView().fit(window.rasterlearn.info.extent)")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(args.out / "label-page.jpg"), quality=85)
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
