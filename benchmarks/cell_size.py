"""One model across cell sizes: a detector trained at 0.1 m on imagery of 0.15 m.

Run: ``.venv/bin/python benchmarks/cell_size.py [--epochs 10]``. An FCOS detector is trained
on a synthetic scene at 0.1 m; a held-out scene of the same generator is scored at 0.1 m
(the baseline) and resampled to 0.15 m (pixel averages, as a coarser sensor sees it), where
detect-objects runs twice: at the model's cell size (what it does by default: the raster is
resampled to 0.1 m as it is read) and at the raster's own 0.15 m (``cell_size=0.15``: the
objects look two thirds of the size the model learnt). Prints recall and precision at IoU 0.5
against the held-out polygons' boxes, in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from torchvision.ops import box_iou

from rasterlearn import detect_objects, export_training_data, train_deep_learning_model
from rasterlearn.synthetic import make_scene

TRAINED_AT, COARSE = 0.1, 0.15


def coarser(src_path: Path, dst_path: Path, cell: float) -> Path:
    """The raster averaged onto ``cell`` metre pixels over the same extent."""
    with rasterio.open(src_path) as src:
        width = round(src.width * src.res[0] / cell)
        height = round(src.height * src.res[1] / cell)
        transform = Affine(cell, 0, src.transform.c, 0, -cell, src.transform.f)
        out = np.zeros((src.count, height, width), dtype=src.dtypes[0])
        reproject(
            src.read(),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs=src.crs,
            resampling=Resampling.average,
        )
        profile = {**src.profile, "width": width, "height": height, "transform": transform}
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(out)
    return dst_path


def scores(found: Path, truth: Path) -> tuple[float, float, int]:
    """Recall and precision at IoU 0.5 (each object and detection matched at most once)."""
    boxes = [
        torch.tensor(gpd.read_file(p).geometry.bounds.to_numpy(), dtype=torch.float64)
        for p in (truth, found)
    ]
    if not len(boxes[1]):
        return 0.0, 0.0, 0
    iou = box_iou(boxes[0], boxes[1]).numpy()
    matched, used = 0, set()
    for t in np.argsort(-iou.max(axis=1)):
        candidates = [d for d in np.argsort(-iou[t]) if iou[t, d] >= 0.5 and d not in used]
        if candidates:
            used.add(candidates[0])
            matched += 1
    return matched / len(boxes[0]), matched / len(boxes[1]), len(boxes[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rl-cell-bench-"))
    torch.set_num_threads(2)
    try:
        start = time.perf_counter()
        train = make_scene(work / "train", 768, 768, seed=21, cell=48, pixel_size=TRAINED_AT)
        test = make_scene(work / "test", 512, 512, seed=22, cell=48, pixel_size=TRAINED_AT)
        export_training_data(
            train.raster_path,
            work / "chips",
            train.polygons_path,
            metadata_format="PASCAL_VOC_rectangles",
            tile_size_x=96,
            tile_size_y=96,
            stride_x=48,
            stride_y=48,
        )
        model = train_deep_learning_model(
            work / "chips",
            work / "model",
            model_type="FCOS",
            max_epochs=args.epochs,
            backbone_model="resnet18",
            batch_size=16,
            learning_rate=2e-3,
            seed=1,
            progress=False,
        ).emd
        minutes = (time.perf_counter() - start) / 60
        coarse = coarser(test.raster_path, work / "coarse.tif", COARSE)
        runs = {
            f"{TRAINED_AT} m imagery (trained cell size; baseline)": (test.raster_path, None),
            f"{COARSE} m imagery at the model's {TRAINED_AT} m (default)": (coarse, None),
            f"{COARSE} m imagery at its own cell size (cell_size={COARSE})": (coarse, COARSE),
        }
        print(f"FCOS trained at {TRAINED_AT} m for {args.epochs} epochs in {minutes:.1f} min")
        for k, (label, (raster, cell)) in enumerate(runs.items()):
            began = time.perf_counter()
            found = detect_objects(
                raster, work / f"found{k}.gpkg", model, cell_size=cell, progress=False
            )
            recall, precision, count = scores(found, test.polygons_path)
            print(
                f"{label}: recall {recall:.3f}, precision {precision:.3f} "
                f"({count} detections, {time.perf_counter() - began:.1f} s)",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
