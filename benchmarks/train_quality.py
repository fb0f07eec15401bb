"""Training quality on CPU: pixel accuracy and AP50 on held-out chips, with epochs and minutes.

Run: ``.venv/bin/python benchmarks/train_quality.py [--epochs 12] [--models UNET,FCOS,...]
[--only synthetic|neon] [--defaults]``.

``--defaults`` trains as a new user would: no learning rate (the range test chooses it), no
batch size, no epochs (ArcGIS's 20, early stopping on the model type's metric), only the model
type and a ResNet-18 backbone; it prints the chosen learning rate and why, and the bar of each
model type (UNET >= 0.90 pixel accuracy, detectors >= 0.80 AP50, FEATURE_CLASSIFIER >= 0.90
accuracy on held-out chips).
MASKRCNN trains on RCNN_Masks chips and is scored by its boxes. Trains on a synthetic scene
(the held-out part is a separate scene of the same generator, so
no chip overlaps the training area) and a detector on the NEON sample (west 3/4 for training,
the east quarter held out). Prints one line per model.
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
from rasterio.windows import Window

from rasterlearn import export_training_data, read_export_folder
from rasterlearn.data.datasets import (
    ClassificationDataset,
    DetectionDataset,
    SegmentationDataset,
    collate_detection,
)
from rasterlearn.data.merge import TrainingData
from rasterlearn.demo.sample import sample_paths
from rasterlearn.metrics.detection import class_accuracy
from rasterlearn.models.trained import load_trained_model
from rasterlearn.synthetic import make_scene
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model

DETECTORS = ("FCOS", "RETINANET", "FASTERRCNN", "MASKRCNN")
ALL_MODELS = "UNET,FCOS,RETINANET,FASTERRCNN,MASKRCNN,FEATURE_CLASSIFIER"
BARS = {"UNET": 0.90, "DEEPLAB": 0.90, "FEATURE_CLASSIFIER": 0.90}
"""The quality each model type must reach on held-out chips (detectors: 0.80 AP50)."""
FORMATS = {
    "UNET": "Classified_Tiles",
    "DEEPLAB": "Classified_Tiles",
    "MASKRCNN": "RCNN_Masks",
    "FEATURE_CLASSIFIER": "Labeled_Tiles",
}
"""The export format of each model type (others: PASCAL_VOC_rectangles)."""


def tuning(model_type: str, epochs: int, defaults: bool) -> dict:
    """The training arguments: the tuned ones, or none but the backbone with ``defaults``."""
    if defaults:
        return {"backbone_model": "resnet18", "seed": 1}
    return {
        "max_epochs": epochs,
        "backbone_model": "resnet18",
        "batch_size": 8,
        "learning_rate": 3e-4 if model_type in ("FASTERRCNN", "MASKRCNN") else 2e-3,
        "seed": 1,
    }


def held_out_scores(model_dir: Path, test_folder: Path, task: str) -> float:
    """Pixel accuracy (pixel task), accuracy (chip classifiers) or mean AP50 (detectors) of a
    saved model on test chips."""
    trained = load_trained_model(next(model_dir.glob("*.emd")))
    data = TrainingData(test_folder)
    chip = trained.definition.get("ImageHeight")
    if task == "classification":
        ds = ClassificationDataset(data, chip_size=chip, normalizer=trained.normalizer)
        with torch.no_grad():
            right = sum(
                int(trained.model(ds[i][0][None]).argmax(1)[0] == ds[i][1]) for i in range(len(ds))
            )
        return right / len(ds)
    if task == "pixel":
        ds = SegmentationDataset(data, chip_size=chip, normalizer=trained.normalizer)
        right = total = 0
        with torch.no_grad():
            for i in range(len(ds)):
                image, target = ds[i]
                pred = trained.model(image[None]).argmax(1)[0]
                right += int((pred == target).sum())
                total += target.numel()
        return right / total
    ds = DetectionDataset(data, chip_size=chip, normalizer=trained.normalizer)
    k = len(trained.class_values) - 1
    dets = [[] for _ in range(k)]
    truths = [[] for _ in range(k)]
    with torch.no_grad():
        for start in range(0, len(ds), 8):
            images, targets = collate_detection(
                [ds[i] for i in range(start, min(start + 8, len(ds)))]
            )
            for out, tgt in zip(trained.model(list(images)), targets, strict=True):
                for c in range(k):
                    m = out["labels"] == c + 1
                    dets[c].append((out["boxes"][m].numpy(), out["scores"][m].numpy()))
                    truths[c].append(tgt["boxes"][tgt["labels"] == c + 1].numpy())
    aps = [
        class_accuracy(dets[c], truths[c], 0.5).average_precision
        for c in range(k)
        if any(len(t) for t in truths[c])
    ]
    return float(np.mean(aps))


def _minutes(start: float, cpu: float) -> str:
    """Wall minutes since ``start`` and CPU minutes of this process (all threads) since ``cpu``.

    The machines are shared: CPU time does not grow when other jobs slow the run down.
    """
    wall = (time.perf_counter() - start) / 60
    used = (time.process_time() - cpu) / 60
    return f"{wall:.1f} wall minutes / {used:.1f} CPU minutes on {torch.get_num_threads()} threads"


def split_neon(work: Path) -> tuple[Path, Path, Path, Path]:
    """NEON tile cut into a training part (west 300 px) and a held-out part (east 100 px)."""
    raster, trees = sample_paths()
    out = []
    with rasterio.open(raster) as src:
        for name, window in (("train", Window(0, 0, 300, 400)), ("test", Window(300, 0, 100, 400))):
            profile = {
                **src.profile,
                "width": window.width,
                "height": window.height,
                "transform": src.window_transform(window),
            }
            path = work / f"neon_{name}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
            frame = gpd.read_file(trees)
            left, _, right, _ = rasterio.windows.bounds(window, src.transform)
            inside = frame[frame.geometry.centroid.x.between(left, right)]
            gpkg = work / f"neon_{name}.gpkg"
            inside.to_file(gpkg)
            out += [path, gpkg]
    return tuple(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", default=None, help=f"default {ALL_MODELS}")
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="no learning rate, batch size or epochs: the defaults a new user gets",
    )
    parser.add_argument("--neon-model", default="FCOS")
    parser.add_argument(
        "--only",
        choices=("synthetic", "neon"),
        help="run only the synthetic-scene models or only the NEON detector",
    )
    args = parser.parse_args()
    models = [] if args.only == "neon" else (args.models or ALL_MODELS).split(",")
    work = Path(tempfile.mkdtemp(prefix="rl-train-bench-"))
    torch.set_num_threads(2)
    try:
        if models:
            train_scene = make_scene(work / "train", width=768, height=768, seed=11, cell=48)
            test_scene = make_scene(work / "test", width=384, height=384, seed=12, cell=48)
        for model_type in models:
            fmt = FORMATS.get(model_type, "PASCAL_VOC_rectangles")
            for scene, name in ((train_scene, "train"), (test_scene, "test")):
                folder = work / f"{name}_{fmt}"
                if not folder.exists():
                    export_training_data(
                        scene.raster_path,
                        folder,
                        scene.polygons_path,
                        metadata_format=fmt,
                        tile_size_x=128,
                        tile_size_y=128,
                        stride_x=64,
                        stride_y=64,
                    )
            start, cpu = time.perf_counter(), time.process_time()
            result = train_deep_learning_model(
                work / f"train_{fmt}",
                work / f"model_{model_type}",
                model_type=model_type,
                **tuning(model_type, args.epochs, args.defaults),
            )
            minutes = _minutes(start, cpu)
            task = {"Classified_Tiles": "pixel", "Labeled_Tiles": "classification"}.get(
                fmt, "detection"
            )
            score = held_out_scores(result.out_folder, work / f"test_{fmt}", task)
            what = {"pixel": "pixel accuracy", "classification": "accuracy"}.get(task, "AP50")
            bar = BARS.get(model_type, 0.80)
            chips = len(read_export_folder(work / f"train_{fmt}").chips)
            print(
                f"synthetic {model_type}{' (defaults)' if args.defaults else ''}: held-out "
                f"{what} {score:.3f} (bar {bar:.2f}: {'met' if score >= bar else 'NOT met'}) "
                f"after {result.epochs} epochs, {minutes} ({chips} training chips); "
                f"{result.learning_rate_choice.describe()}",
                flush=True,
            )
            for warning in result.warnings:
                print(f"  warning: {warning}", flush=True)
        if args.only == "synthetic":
            return
        tr, trg, te, teg = split_neon(work)
        for raster, gpkg, name in ((tr, trg, "neon_train"), (te, teg, "neon_test")):
            export_training_data(
                raster,
                work / name,
                gpkg,
                tile_size_x=100,
                tile_size_y=100,
                stride_x=50,
                stride_y=50,
            )
        start, cpu = time.perf_counter(), time.process_time()
        neon = tuning(args.neon_model, args.epochs * 2, args.defaults)
        result = train_deep_learning_model(
            work / "neon_train", work / "neon_model", model_type=args.neon_model, **neon
        )
        minutes = _minutes(start, cpu)
        score = held_out_scores(result.out_folder, work / "neon_test", "detection")
        print(
            f"NEON {args.neon_model}: held-out AP50 {score:.3f} (east quarter of the tile) after "
            f"{result.epochs} epochs, {minutes}; {result.learning_rate_choice.describe()}",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
