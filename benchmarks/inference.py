"""Inference benchmark: end-to-end classify-pixels and detect-objects against the bare model
forward pass on the same tiles, and peak memory on a raster 4x larger in area.

Run: ``.venv/bin/python benchmarks/inference.py [--size 2048] [--workdir DIR]``. Models are
trained for one epoch on a small synthetic export (their quality does not matter here; their
cost does). The baseline reads nothing and writes nothing: the tiles of the same plan are read
into memory first and only the normalisation and forward pass are timed, in the same process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rasterlearn import export_training_data
from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.engine import plan_tiles, read_tile
from rasterlearn.inference.predictors import resolve_model_arguments
from rasterlearn.synthetic import make_scene
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.detect_objects import detect_objects
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model

RSS_CHILD = """
import json, sys
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.detect_objects import detect_objects

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

tool, raster, out, model = sys.argv[1:5]
import rasterlearn.inference.backends.pytorch  # imports before the first figure
before = peak_mb()
if tool == "pixels":
    classify_pixels(raster, out, model)
else:
    detect_objects(raster, out, model)
print(json.dumps({"import_rss_mb": before, "peak_rss_mb": peak_mb()}))
"""


def train_models(root: Path, chip: int) -> dict[str, Path]:
    scene = make_scene(root / "train-scene", width=768, height=768, seed=4)
    models = {}
    for fmt, model_type in (("Classified_Tiles", "UNET"), ("PASCAL_VOC_rectangles", "FCOS")):
        export_training_data(
            scene.raster_path,
            root / fmt,
            scene.polygons_path,
            metadata_format=fmt,
            tile_size_x=chip,
            tile_size_y=chip,
            stride_x=chip // 2,
            stride_y=chip // 2,
        )
        result = train_deep_learning_model(
            root / fmt,
            root / model_type,
            max_epochs=1,
            model_type=model_type,
            batch_size=4,
            backbone_model="resnet18",
            learning_rate=1e-3,
        )
        models[model_type] = result.emd
    return models


def bare_forward_seconds(raster: Path, model: Path, tool: str) -> tuple[float, int]:
    """Normalisation + forward pass of every tile of the tool's plan, tiles already in memory."""
    predictor = open_predictor(str(model))
    info = predictor.info
    args = resolve_model_arguments(info, None)
    from rasterlearn.geo.raster import RasterSource

    with RasterSource(str(raster)) as source:
        grid = source.info.grid
        tiles = plan_tiles(grid.box, info.tile_height, info.tile_width, args["padding"])
        reads = [read_tile(source, grid, t.read, None) for t in tiles]
    batch = int(args["batch_size"])
    start = time.perf_counter()
    for i in range(0, len(reads), batch):
        data = np.stack([r[0] for r in reads[i : i + batch]])
        valid = np.stack([r[1] for r in reads[i : i + batch]])
        if tool == "pixels":
            predictor.predict_pixels(data, valid)
        else:
            predictor.predict_objects(data, valid, args)
    return time.perf_counter() - start, grid.width * grid.height


def peak_rss(tool: str, raster: Path, out: Path, model: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, tool, str(raster), str(out), str(model)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2048, help="side of the timed raster (px)")
    parser.add_argument("--chip", type=int, default=256, help="model chip size (px)")
    parser.add_argument("--workdir", type=Path, default=None)
    opts = parser.parse_args()
    root = opts.workdir or Path(tempfile.mkdtemp(prefix="rl-bench-infer-"))
    root.mkdir(parents=True, exist_ok=True)
    models = train_models(root / "models", opts.chip)
    small = make_scene(root / "small", width=opts.size, height=opts.size, seed=8)
    big = make_scene(root / "big", width=2 * opts.size, height=2 * opts.size, seed=9)
    for tool, model, run in (
        ("pixels", models["UNET"], classify_pixels),
        ("objects", models["FCOS"], detect_objects),
    ):
        name = "classify-pixels" if tool == "pixels" else "detect-objects"
        suffix = ".tif" if tool == "pixels" else ".gpkg"
        run(small.raster_path, root / f"warm{suffix}", model)  # warm caches and the model
        bare, pixels = bare_forward_seconds(small.raster_path, model, tool)
        start = time.perf_counter()
        run(small.raster_path, root / f"timed{suffix}", model)
        e2e = time.perf_counter() - start
        print(
            f"{name} throughput {bare / e2e:.2f}x of bare model forward "
            f"({pixels / e2e / 1e6:.2f} vs {pixels / bare / 1e6:.2f} Mpx/s, "
            f"{opts.size} x {opts.size} px, chips {opts.chip})",
            flush=True,
        )
        a = peak_rss(tool, small.raster_path, root / f"rss-small{suffix}", model)
        b = peak_rss(tool, big.raster_path, root / f"rss-big{suffix}", model)
        ratio = b["peak_rss_mb"] / a["peak_rss_mb"]
        print(
            f"{name} peak RSS {b['peak_rss_mb']:.0f} MB on {2 * opts.size} px vs "
            f"{a['peak_rss_mb']:.0f} MB on {opts.size} px = {ratio:.2f}x "
            f"for 4x the area (imports {a['import_rss_mb']:.0f} MB)",
            flush=True,
        )
    if opts.workdir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
