"""Training cost on the CPU: seconds per training chip of each model type, whole run included.

Run: ``.venv/bin/python benchmarks/train_speed.py [--epochs 3] [--models UNET,FCOS,...]``.
Each model type trains for a few epochs on 64 px chips of a synthetic scene (a given learning
rate, so no range test) and the wall time of the whole Train tool, checkpoints, model folder
and ``.dlpk`` included, is divided by chips x epochs. To compare two versions, run the script
of both on the same machine one after the other (``PYTHONPATH=<other checkout>/src``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rasterlearn import export_training_data, read_export_folder
from rasterlearn.synthetic import make_scene
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model

CASES = {
    "UNET": ("Classified_Tiles", 2e-3),
    "DEEPLAB": ("Classified_Tiles", 2e-3),
    "FCOS": ("PASCAL_VOC_rectangles", 2e-3),
    "RETINANET": ("PASCAL_VOC_rectangles", 2e-3),
    "FASTERRCNN": ("PASCAL_VOC_rectangles", 3e-4),
    "MASKRCNN": ("RCNN_Masks", 3e-4),
    "FEATURE_CLASSIFIER": ("Labeled_Tiles", 2e-3),
}
"""Model type -> (export format, learning rate)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default=",".join(CASES))
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rl-train-speed-"))
    try:
        scene = make_scene(root / "scene", width=384, height=384, seed=5, cell=40)
        for model_type in opts.models.split(","):
            fmt, rate = CASES[model_type]
            export = root / fmt
            if not export.exists():
                export_training_data(
                    scene.raster_path,
                    export,
                    scene.polygons_path,
                    metadata_format=fmt,
                    tile_size_x=64,
                    tile_size_y=64,
                    stride_x=48,
                    stride_y=48,
                )
            chips = len(read_export_folder(export).chips)
            start = time.perf_counter()
            train_deep_learning_model(
                export,
                root / model_type,
                model_type=model_type,
                max_epochs=opts.epochs,
                learning_rate=rate,
                batch_size=8,
                backbone_model="resnet18",
                stop_training=False,
                seed=1,
            )
            seconds = time.perf_counter() - start
            print(
                f"{model_type}: {seconds / (chips * opts.epochs):.3f} s a chip "
                f"({seconds:.1f} s for {chips} chips x {opts.epochs} epochs, whole run)",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
