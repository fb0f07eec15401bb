"""The demo's FCOS detector over several seeds: the Train tool's defaults (what the demo runs)
against the settings the demo was tuned to before, scored on the held-out trees of the
bundled NEON sample.

The held-out part has 16 trees (one tree is ~0.06 of AP50), and training from random weights
on ~45 trees varies a lot with the seed, so one run says little; this prints every seed and
the mean, minimum and maximum of each arm. Both arms export the same chips (the demo's tile
size and stride) and differ only in what the demo tunes: learning rate, batch size, epochs and
detection threshold, and the tuned arm trains every epoch (no early stopping).

Run: ``.venv/bin/python benchmarks/demo_seeds.py [--seeds 42,1,2,3,4,5,6,7] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rasterlearn.demo.run import FULL
from rasterlearn.demo.sample import Split, sample_paths, split_sample
from rasterlearn.tools.compute_accuracy_for_object_detection import (
    compute_accuracy_for_object_detection,
)
from rasterlearn.tools.detect_objects import detect_objects
from rasterlearn.tools.export_training_data import export_training_data
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model

TUNED = {"learning_rate": 2e-3, "batch_size": 8, "max_epochs": 25, "stop_training": False}
"""The Train tool's arguments the demo was tuned to before it ran on the defaults."""
TUNED_THRESHOLD = 0.4
"""The detection threshold of the tuned demo (the defaults arm uses the model's)."""


def held_out_ap50(work: Path, split: Split, chips: Path, seed: int, tuned: bool) -> float:
    """Train one detector, detect over the held-out part, print and return its AP50."""
    raster, _ = sample_paths()
    name = f"{'tuned' if tuned else 'defaults'}_{seed}"
    start = time.perf_counter()
    trained = train_deep_learning_model(
        chips,
        work / name,
        model_type="FCOS",
        backbone_model="resnet18",
        seed=seed,
        **(TUNED if tuned else {}),
    )
    minutes = (time.perf_counter() - start) / 60
    assert trained is not None
    threshold = {"threshold": TUNED_THRESHOLD} if tuned else {}
    detections = work / f"{name}.gpkg"
    detect_objects(
        raster, detections, trained.emd, arguments=threshold, processing_extent=split.heldout_extent
    )
    table = compute_accuracy_for_object_detection(
        detections, split.heldout_trees, work / f"{name}.csv"
    ).table
    ap50 = float(table.iloc[-1]["AP"])
    print(
        f"{name}: AP50 {ap50:.3f} (learning rate {trained.learning_rate:.2g}, "
        f"{trained.epochs} epochs, {minutes:.1f} min)",
        flush=True,
    )
    return ap50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,1,2,3,4,5,6,7")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        split = split_sample(work / "labels")
        chips = work / "chips"
        export_training_data(
            sample_paths()[0],
            chips,
            split.train_trees,
            metadata_format="PASCAL_VOC_rectangles",
            tile_size_x=FULL.tile_size,
            tile_size_y=FULL.tile_size,
            stride_x=FULL.detection_stride,
            stride_y=FULL.detection_stride,
            extent=split.train_extent,
        )
        for tuned in (False, True):
            aps = [held_out_ap50(work, split, chips, s, tuned) for s in seeds]
            print(
                f"{'tuned' if tuned else 'defaults'} over {len(seeds)} seeds: AP50 mean "
                f"{statistics.mean(aps):.3f}, min {min(aps):.3f}, max {max(aps):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
