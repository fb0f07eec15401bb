"""The demo end to end in quick mode: every output exists, the tables parse, the models learned.

The demo runs through the CLI in a child process (``rasterlearn demo OUT --quick`` calls
``run_demo(OUT, quick=True)``): that also checks the command, and the child's torch starts
with the demo's thread settings whatever this test process has loaded before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.features
import shapely

from rasterlearn.demo.run import QUICK, run_demo
from rasterlearn.demo.sample import SPLIT_COLUMN, sample_paths
from rasterlearn.errors import OutputError

OUTPUTS = (
    "labels/train_trees.gpkg",
    "labels/train_pixels.gpkg",
    "labels/heldout_trees.gpkg",
    "labels/heldout_pixels.gpkg",
    "trees_voc/esri_model_definition.emd",
    "trees_voc/map.txt",
    "trees_pixels/esri_model_definition.emd",
    "trees_pixels/map.txt",
    "models/trees_fcos/trees_fcos.emd",
    "models/trees_fcos/trees_fcos.pth",
    "models/trees_fcos/trees_fcos.dlpk",
    "models/trees_fcos/ModelCharacteristics/loss_graph.png",
    "models/trees_fcos/ModelCharacteristics/training_validation_loss.json",
    "models/trees_unet/trees_unet.emd",
    "models/trees_unet/trees_unet.pth",
    "models/trees_unet/trees_unet.dlpk",
    "models/trees_unet/ModelCharacteristics/loss_graph.png",
    "models/trees_unet/ModelCharacteristics/training_validation_loss.json",
    "heldout_detections.gpkg",
    "heldout_classified.tif",
    "accuracy/detection_accuracy.csv",
    "accuracy/detection_accuracy.html",
    "accuracy/pixel_accuracy.csv",
    "accuracy/pixel_accuracy_confusion.csv",
    "accuracy/pixel_accuracy.html",
    "report.html",
    "summary.json",
)

MIN_AP50 = 0.1
"""Quick mode reaches 0.27 on 2 CPU cores (measured); a detector that finds nothing, or
boxes in the wrong place, scores 0."""

MIN_GAIN_OVER_MAJORITY = 0.1
"""Quick mode's pixel accuracy (0.75, measured) beats labelling every pixel with the larger
class (0.52) by 0.23; a model that predicts one class everywhere gains nothing."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Run ``rasterlearn demo OUT --quick`` once; its folder and printed lines."""
    out = tmp_path_factory.mktemp("demo") / "out"
    done = subprocess.run(
        [sys.executable, "-m", "rasterlearn.cli", "demo", str(out), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout.splitlines()


def _truth() -> tuple[gpd.GeoDataFrame, rasterio.Affine, int]:
    raster, trees = sample_paths()
    with rasterio.open(raster) as src:
        return gpd.read_file(trees), src.transform, src.width


def test_every_output_exists(demo: tuple[Path, list[str]]) -> None:
    out, lines = demo
    missing = [name for name in OUTPUTS if not (out / name).is_file()]
    assert not missing
    assert all((out / name).stat().st_size > 0 for name in OUTPUTS)
    printed = "\n".join(lines)
    for name in ("report.html", "heldout_detections.gpkg", "trees_fcos", "trees_unet"):
        assert name in printed
    assert "AP50" in lines[-1] and "tree IoU" in lines[-1]


def test_no_held_out_tree_is_trained_on(demo: tuple[Path, list[str]]) -> None:
    out, _ = demo
    trees, transform, width = _truth()
    x_split = (transform @ (SPLIT_COLUMN, 0))[0]
    held = trees.geometry.centroid.x >= x_split
    first_held_x = trees[held].total_bounds[0]
    # Every training chip lies left of the first held-out crown.
    for folder in ("trees_voc", "trees_pixels"):
        chips = sorted((out / folder / "images").glob("*.tif"))
        assert chips
        for chip in chips:
            with rasterio.open(chip) as src:
                assert src.bounds.right <= first_held_x + 1e-6
                assert src.width == QUICK.tile_size
    # The detection truth is the held-out trees, inside the held-out part.
    truth = gpd.read_file(out / "labels" / "heldout_trees.gpkg")
    assert len(truth) == int(held.sum())
    assert truth.total_bounds[0] >= x_split - 1e-6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"]["heldout_columns"] == [SPLIT_COLUMN, width]
    assert summary["split"]["train_trees"] + summary["split"]["heldout_trees"] == len(trees)


def test_detection_table_and_ap(demo: tuple[Path, list[str]]) -> None:
    out, _ = demo
    table = pd.read_csv(out / "accuracy" / "detection_accuracy.csv")
    assert list(table.columns[:5]) == ["Class", "Precision", "Recall", "F1_Score", "AP"]
    row = table[table["Class"] == "All"].iloc[0]
    detections = gpd.read_file(out / "heldout_detections.gpkg")
    truth = gpd.read_file(out / "labels" / "heldout_trees.gpkg")
    assert row["True_Positive"] + row["False_Positive"] == len(detections)
    assert row["True_Positive"] + row["False_Negative"] == len(truth)
    assert (detections["Confidence"] >= QUICK.detection_threshold * 100 - 1e-6).all()
    # Detections stay near the held-out part (a tile may see a little beyond it).
    heldout = json.loads((out / "summary.json").read_text())["split"]["heldout_columns"]
    _, transform, _ = _truth()
    left = (transform @ (heldout[0], 0))[0]
    assert detections.geometry.centroid.x.min() >= left
    assert row["AP"] > MIN_AP50
    assert row["F1_Score"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["figures"]["ap50"] == pytest.approx(row["AP"])


def test_pixel_accuracy_against_numpy(demo: tuple[Path, list[str]]) -> None:
    out, _ = demo
    trees, _, _ = _truth()
    with rasterio.open(out / "heldout_classified.tif") as src:
        classified = src.read(1)
        shape, transform = (src.height, src.width), src.transform
        left = src.bounds.left
    x_split = (_truth()[1] @ (SPLIT_COLUMN, 0))[0]
    assert left == pytest.approx(x_split)  # the classified raster covers the held-out part
    tree = rasterio.features.rasterize(
        trees.geometry, out_shape=shape, transform=transform, fill=0, default_value=1
    ).astype(bool)
    predicted_tree = classified == 1
    assert set(np.unique(classified).tolist()) <= {1, 2}
    accuracy = float(np.mean(predicted_tree == tree))
    iou = float((predicted_tree & tree).sum() / (predicted_tree | tree).sum())
    majority = max(tree.mean(), 1 - tree.mean())

    table = pd.read_csv(out / "accuracy" / "pixel_accuracy.csv", dtype={"Class": str})
    rows = table.set_index("Class")
    assert rows.loc["Overall", "Overall_Accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert rows.loc["1", "IoU"] == pytest.approx(iou, abs=1e-9)
    assert rows.loc["Overall", "Pixels"] == classified.size
    assert accuracy > majority + MIN_GAIN_OVER_MAJORITY
    assert iou > 0.3  # measured 0.57; predicting no tree gives 0


def test_report_is_self_contained(demo: tuple[Path, list[str]]) -> None:
    out, _ = demo
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 4  # split, detections, pixels, losses
    assert 'src="http' not in page and "<script" not in page
    for text in ("AP50", "F1", "Pixel accuracy", "Tree IoU", "Minutes", "quick mode"):
        assert text in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quick"] is True
    assert summary["epochs"] == {"FCOS": QUICK.fcos_epochs, "UNET": QUICK.unet_epochs}
    assert set(summary["minutes"]) >= {"export", "train FCOS", "train UNET", "total"}
    assert shapely.box(*gpd.read_file(out / "labels" / "heldout_pixels.gpkg").total_bounds).area > 0


def test_earlier_outputs_are_kept_without_overwrite(tmp_path: Path) -> None:
    earlier = tmp_path / "report.html"
    earlier.write_text("earlier run")
    with pytest.raises(OutputError, match="not empty"):
        next(run_demo(tmp_path, overwrite=False, quick=True))
    assert earlier.read_text() == "earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
