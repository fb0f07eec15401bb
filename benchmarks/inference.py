"""Inference benchmark: end-to-end classify-pixels and detect-objects against the bare model
forward pass on the same tiles, and peak memory on a raster 4x larger in area.

Run: ``.venv/bin/python benchmarks/inference.py [--size 2048] [--workdir DIR]
[--reference-size 4096]``. Models are
trained for one epoch on a small synthetic export (their quality does not matter here; their
cost does). The baseline reads nothing and writes nothing: the tiles of the same plan are read
into memory first and only the normalisation and forward pass are timed, in the same process.

With segmentation_models_pytorch installed (``pip install segmentation-models-pytorch``), Classify
Pixels with our UNET-ResNet18 is also timed against GeoAI's way of running smp's Unet-ResNet18
(the raster read whole, a plain sliding window, full-size probability sums) in the same run, at
the same tile, overlap and batch, each in its own process for its peak RSS.
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
from rasterlearn.inference.predictors import resolve_model_arguments, tile_shape
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


REFERENCE_CHILD = """
import json, sys, time
import numpy as np
import rasterio
import torch

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

which, raster, out, model, tile, overlap, batch = sys.argv[1:8]
tile, overlap, batch = int(tile), int(overlap), int(batch)
if which == "ours":
    from rasterlearn.tools.classify_pixels import classify_pixels
    arguments = {"padding": overlap // 2, "batch_size": batch}
    start = time.perf_counter()
    classify_pixels(raster, out, model, arguments=arguments)
else:  # GeoAI's way: whole raster in memory, sliding window, full-size probability sums
    import segmentation_models_pytorch as smp
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3).eval()
    start = time.perf_counter()
    with rasterio.open(raster) as src:
        image, profile = src.read(), src.profile
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    _, height, width = image.shape
    step = tile - overlap
    sums = np.zeros((3, height, width), np.float32)
    counts = np.zeros((height, width), np.float32)
    corners = [
        (min(r, height - tile), min(c, width - tile))
        for r in range(0, height - overlap, step)
        for c in range(0, width - overlap, step)
    ]
    with torch.inference_mode():
        for i in range(0, len(corners), batch):
            group = corners[i : i + batch]
            chips = np.stack([image[:, r : r + tile, c : c + tile] for r, c in group])
            chips = (chips.astype(np.float32) / 255 - mean) / std
            probs = torch.softmax(net(torch.from_numpy(chips)), 1).numpy()
            for (r, c), p in zip(group, probs):
                sums[:, r : r + tile, c : c + tile] += p
                counts[r : r + tile, c : c + tile] += 1
    classes = (sums / counts).argmax(0).astype(np.uint8)
    profile.update(count=1, dtype="uint8", compress="lzw", tiled=True, nodata=None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes, 1)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb()}))
"""


def reference_comparison(root: Path, model: Path, size: int, tile: int) -> None:
    """Classify Pixels with our UNET against a GeoAI-style run of segmentation_models_pytorch's
    Unet-ResNet18 (a plain sliding window over the raster read whole), each in its own process,
    at the same tile, overlap (64 px) and batch (4); prints Mpx/s and peak RSS."""
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        print("reference skipped: pip install segmentation-models-pytorch", flush=True)
        return
    scene = make_scene(root / "reference", width=size, height=size, seed=10)
    figures = {}
    for which in ("ours", "smp"):
        proc = subprocess.run(
            [sys.executable, "-c", REFERENCE_CHILD, which, str(scene.raster_path),
             str(root / f"reference-{which}.tif"), str(model), str(tile), "64", "4"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        figures[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, smp = figures["ours"], figures["smp"]
    mpx = size * size / 1e6
    print(
        f"classify-pixels UNET-ResNet18 {mpx / ours['seconds']:.3f} Mpx/s "
        f"({ours['seconds']:.0f} s), peak RSS {ours['peak_rss_mb']:.0f} MB; GeoAI-style smp "
        f"Unet-ResNet18 sliding window {mpx / smp['seconds']:.3f} Mpx/s ({smp['seconds']:.0f} s), "
        f"peak RSS {smp['peak_rss_mb']:.0f} MB; ours {smp['seconds'] / ours['seconds']:.2f}x "
        f"its speed ({size} x {size} px, tiles {tile}, overlap 64, batch 4)",
        flush=True,
    )


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
        tiles = plan_tiles(grid.box, *tile_shape(info, args), args["padding"])
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
    parser.add_argument(
        "--reference-size",
        type=int,
        default=4096,
        help="side of the raster of the comparison with smp's Unet (0: skip it)",
    )
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
    if opts.reference_size:
        reference_comparison(root, models["UNET"], opts.reference_size, opts.chip)
    if opts.workdir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
