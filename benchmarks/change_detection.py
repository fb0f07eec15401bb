"""Change detection on CPU: change F1 of a CHANGEDETECTOR on a held-out two-date scene.

Run: ``.venv/bin/python benchmarks/change_detection.py [--epochs 20] [--size 768]``.

A two-date synthetic scene (objects added, removed, changed class; the second date at 0.6 m
against 0.5 m) is exported as Classified_Tiles pairs and a CHANGEDETECTOR is trained on it.
The held-out part is a separate scene of the same generator (another seed, so no chip overlaps
the training area), run through detect-change and scored against its known change raster:

* change F1: change (any change class) against no change, per pixel;
* class F1: mean F1 of the three change classes.

The baseline, measured in the same run, is a per-pixel image difference: a pixel changed where
the mean absolute band difference of the two dates (the second warped onto the first's grid)
exceeds the threshold that scores best on the training scene.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from rasterlearn import detect_change, export_training_data
from rasterlearn.synthetic import ChangeScene, make_change_scene
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model


def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of boolean maps."""
    tp = int((truth & predicted).sum())
    fp = int((~truth & predicted).sum())
    fn = int((truth & ~predicted).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def class_f1(truth: np.ndarray, predicted: np.ndarray, classes: range) -> float:
    return float(np.mean([f1(truth == c, predicted == c) for c in classes]))


def image_difference(scene: ChangeScene) -> np.ndarray:
    """Mean absolute band difference of the two dates on the first date's grid."""
    with rasterio.open(scene.before.raster_path) as a, rasterio.open(scene.after.raster_path) as b:
        before = a.read().astype(np.float32)
        after = np.zeros_like(before)
        reproject(
            b.read().astype(np.float32),
            after,
            src_transform=b.transform,
            src_crs=b.crs,
            dst_transform=a.transform,
            dst_crs=a.crs,
            resampling=Resampling.bilinear,
        )
    return np.abs(after - before).mean(axis=0)


def truth_of(scene: ChangeScene) -> np.ndarray:
    with rasterio.open(scene.change_raster_path) as ds:
        return ds.read(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=768, help="training scene side in pixels")
    parser.add_argument("--chip", type=int, default=128)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="change-bench-"))
    scene = make_change_scene(root / "train", width=args.size, height=args.size, seed=1)
    held_out = make_change_scene(root / "test", width=512, height=512, seed=2)

    start, cpu = time.perf_counter(), time.process_time()
    export = export_training_data(
        scene.before.raster_path,
        root / "chips",
        scene.change_raster_path,
        metadata_format="Classified_Tiles",
        tile_size_x=args.chip,
        tile_size_y=args.chip,
        stride_x=args.chip // 2,
        stride_y=args.chip // 2,
        in_raster2=scene.after.raster_path,
    )
    model = train_deep_learning_model(
        export.out_folder,
        root / "model",
        max_epochs=args.epochs,
        model_type="CHANGEDETECTOR",
        batch_size=8,
        learning_rate=2e-3,
        backbone_model="resnet18",
        stop_training=False,
        seed=1,
    )
    train_wall = (time.perf_counter() - start) / 60
    train_cpu = (time.process_time() - cpu) / 60
    out = detect_change(
        held_out.before.raster_path, held_out.after.raster_path, root / "change.tif", model.emd
    )
    with rasterio.open(out) as ds:
        predicted = ds.read(1)
    truth = truth_of(held_out)
    valid = predicted != 255
    model_f1 = f1(truth[valid] > 0, (predicted[valid] > 0) & (predicted[valid] < 255))
    model_class_f1 = class_f1(truth[valid], predicted[valid], range(1, 4))

    train_diff, train_truth = image_difference(scene), truth_of(scene) > 0
    thresholds = np.linspace(2, 80, 79)
    best = max(thresholds, key=lambda t: f1(train_truth, train_diff > t))
    baseline_f1 = f1(truth > 0, image_difference(held_out) > best)

    print(
        f"change F1 {model_f1:.3f} ({model_f1 / baseline_f1:.2f}x of the image-difference "
        f"baseline {baseline_f1:.3f} at threshold {best:.0f}); class F1 {model_class_f1:.3f}; "
        f"{export.num_chips} chips, {len(model.history)} epochs, {train_wall:.1f} min wall "
        f"({train_cpu:.1f} CPU min) for export and training"
    )


if __name__ == "__main__":
    main()
