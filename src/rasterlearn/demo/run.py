"""The main job on the bundled NEON sample: export, train, infer and score on a held-out part.

The 400 x 400 px tile (0.1 m pixels, 61 tree crowns) is split by a vertical line at column
300. Trees whose centre lies left of it are training trees, the others held-out trees. The
training part is the area left of the first held-out crown (so that no pixel of a held-out
tree is trained on, not even as background); the held-out part is the right quarter. Then,
with the public tools only:

1. ``export_training_data``: the training part as ``PASCAL_VOC_rectangles`` (trees) and as
   ``Classified_Tiles`` (trees, class 1, and background, class 2: the pixel accuracy tool
   does not assess class 0, so background is labelled as a class of its own),
2. ``train_deep_learning_model``: an FCOS detector and a UNET pixel classifier (ResNet-18,
   random initial weights, a fixed number of epochs),
3. ``detect_objects`` and ``classify_pixels`` over the held-out part (``processing_extent``),
4. ``compute_accuracy_for_object_detection`` and ``compute_pixel_accuracy`` against the
   held-out trees,
5. an HTML report (:mod:`rasterlearn.demo.report`) and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import rasterio
import shapely

from rasterlearn.errors import OutputError
from rasterlearn.formats.export_reader import read_export_folder
from rasterlearn.tools.export_training_data import export_training_data

if TYPE_CHECKING:
    from rasterlearn.training.model_folder import TrainResult

SPLIT_COLUMN = 300
"""Trees centred left of this pixel column are for training, the others are held out."""

SEED = 42
"""Seed of the training runs (the split, the initial weights and the augmentation)."""


@dataclass(frozen=True)
class DemoSettings:
    """How much work the demo does.

    Attributes:
        tile_size: Chip size in pixels (square), for both models.
        detection_stride: Step between the detector's training chips, in pixels.
        pixel_stride: Step between the pixel classifier's training chips, in pixels.
        batch_size: Chips per training batch.
        fcos_epochs: Epochs of the FCOS detector.
        unet_epochs: Epochs of the UNET pixel classifier.
        learning_rate: Peak learning rate of both (given, so no range test runs).
        detection_threshold: Minimum confidence (0-1) of a detection.
    """

    tile_size: int
    detection_stride: int
    pixel_stride: int
    batch_size: int
    fcos_epochs: int
    unet_epochs: int
    learning_rate: float
    detection_threshold: float


FULL = DemoSettings(
    tile_size=96,
    detection_stride=32,
    pixel_stride=32,
    batch_size=8,
    fcos_epochs=25,
    unet_epochs=20,
    learning_rate=2e-3,
    detection_threshold=0.4,
)
"""The demo: about 4 minutes on 2 shared CPU cores (AP50 0.53, pixel accuracy 0.80)."""

QUICK = DemoSettings(
    tile_size=64,
    detection_stride=32,
    pixel_stride=64,
    batch_size=8,
    fcos_epochs=8,
    unet_epochs=10,
    learning_rate=2e-3,
    detection_threshold=0.4,
)
"""A check of the pipeline end to end (for CI): about a minute on 2 CPU cores."""


def sample_paths() -> tuple[Path, Path]:
    """The bundled NEON OSBS_029 tile and its tree-crown polygons."""
    root = Path(str(resources.files("rasterlearn") / "sample_data"))
    return root / "OSBS_029.tif", root / "OSBS_029_trees.gpkg"


@dataclass(frozen=True)
class Split:
    """The training and held-out parts of the sample, as extents and label files.

    Attributes:
        train_extent: ``(xmin, ymin, xmax, ymax)`` of the training part.
        heldout_extent: ``(xmin, ymin, xmax, ymax)`` of the held-out part.
        train_columns: Pixel columns ``[start, stop)`` of the training part.
        heldout_columns: Pixel columns ``[start, stop)`` of the held-out part.
        train_trees: Training tree crowns (detector labels).
        train_pixels: Training tree crowns (class 1) and background (class 2) polygons.
        heldout_trees: Held-out tree crowns, clipped to the held-out part (detection truth).
        heldout_pixels: Tree crowns (1) and background (2) clipped to the held-out part
            (pixel reference).
        num_train_trees: Trees used for training.
        num_heldout_trees: Trees held out.
    """

    train_extent: tuple[float, float, float, float]
    heldout_extent: tuple[float, float, float, float]
    train_columns: tuple[int, int]
    heldout_columns: tuple[int, int]
    train_trees: Path
    train_pixels: Path
    heldout_trees: Path
    heldout_pixels: Path
    num_train_trees: int
    num_heldout_trees: int


def _with_background(trees: gpd.GeoDataFrame, area: shapely.Polygon) -> gpd.GeoDataFrame:
    """Tree crowns in ``area`` as class 1 and the rest of ``area`` as class 2 (background)."""
    crowns = trees.geometry.intersection(area)
    crowns = crowns[~crowns.is_empty]
    background = area.difference(shapely.union_all(crowns.values))
    return gpd.GeoDataFrame(
        {
            "ClassValue": [1] * len(crowns) + [2],
            "ClassName": ["Tree"] * len(crowns) + ["Background"],
        },
        geometry=[*crowns.values, background],
        crs=trees.crs,
    )


def split_sample(folder: Path, split_column: int = SPLIT_COLUMN) -> Split:
    """Cut the sample into a training part and a held-out part and write their labels.

    Trees whose centre lies left of ``split_column`` are training trees, the others held-out
    trees. The training part ends where the first held-out crown begins, so that no pixel of
    a held-out tree is in the training chips; the held-out part starts at ``split_column``.
    Training crowns that reach into the held-out part are left out of the detection truth
    (less than half of each lies there) but their pixels count as tree pixels.

    Args:
        folder: Where the label files are written.
        split_column: First pixel column of the held-out part.

    Returns:
        The extents and the label files.
    """
    raster, trees_path = sample_paths()
    with rasterio.open(raster) as src:
        transform, width, height = src.transform, src.width, src.height
    trees = gpd.read_file(trees_path)
    x_split = (transform @ (split_column, 0))[0]
    held = trees.geometry.centroid.x >= x_split
    crown_column = (~transform @ (trees[held].total_bounds[0], 0))[0]
    first_held = min(split_column, math.floor(crown_column + 1e-6))
    top = transform.f
    bottom = (transform @ (0, height))[1]

    def x_of(col: int) -> float:
        return (transform @ (col, 0))[0]

    train_extent = (x_of(0), bottom, x_of(first_held), top)
    heldout_extent = (x_split, bottom, x_of(width), top)
    train_box, heldout_box = shapely.box(*train_extent), shapely.box(*heldout_extent)

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        name: folder / f"{name}.gpkg"
        for name in ("train_trees", "train_pixels", "heldout_trees", "heldout_pixels")
    }
    train_trees = trees[~held].reset_index(drop=True)
    heldout_trees = trees[held].reset_index(drop=True)
    heldout_trees = heldout_trees.set_geometry(heldout_trees.geometry.intersection(heldout_box))
    frames = {
        "train_trees": train_trees,
        "train_pixels": _with_background(train_trees, train_box),
        "heldout_trees": heldout_trees,
        "heldout_pixels": _with_background(trees, heldout_box),
    }
    for name, frame in frames.items():
        paths[name].unlink(missing_ok=True)
        frame.to_file(paths[name], driver="GPKG")
    return Split(
        train_extent=train_extent,
        heldout_extent=heldout_extent,
        train_columns=(0, first_held),
        heldout_columns=(split_column, width),
        train_trees=paths["train_trees"],
        train_pixels=paths["train_pixels"],
        heldout_trees=paths["heldout_trees"],
        heldout_pixels=paths["heldout_pixels"],
        num_train_trees=len(train_trees),
        num_heldout_trees=len(heldout_trees),
    )


class _Clock:
    """Minutes per step (a step timed twice adds up)."""

    def __init__(self) -> None:
        self.minutes: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) / 60
            self.minutes[step] = self.minutes.get(step, 0.0) + elapsed


def _settings_shown(settings: DemoSettings, exports: dict[str, Path]) -> dict[str, str]:
    """The run's settings as the report shows them."""
    chips = {fmt: len(read_export_folder(folder).chips) for fmt, folder in exports.items()}
    return {
        "Chips": f"{settings.tile_size} x {settings.tile_size} px",
        "Detector chips (stride)": (
            f"{chips['PASCAL_VOC_rectangles']} ({settings.detection_stride} px)"
        ),
        "Pixel classifier chips (stride)": (
            f"{chips['Classified_Tiles']} ({settings.pixel_stride} px)"
        ),
        "Backbone": "ResNet-18, random initial weights",
        "Epochs FCOS / UNET": f"{settings.fcos_epochs} / {settings.unet_epochs}",
        "Batch size, peak learning rate": (
            f"{settings.batch_size}, {settings.learning_rate:g} (one-cycle)"
        ),
        "Detection threshold": f"{settings.detection_threshold:g}",
        "Classify Pixels": "test-time augmentation (8 flips and turns averaged)",
        "Seed": str(SEED),
    }


def _check_out_folder(out_folder: Path, overwrite: bool) -> None:
    if out_folder.exists() and any(out_folder.iterdir()) and not overwrite:
        raise OutputError(
            f"the demo output folder {out_folder} is not empty",
            "give another folder, or overwrite=True (--overwrite)",
        )


def run_demo(
    out_folder: str | Path,
    overwrite: bool = True,
    quick: bool = False,
    settings: DemoSettings | None = None,
) -> Iterator[str]:
    """Run the whole workflow on the bundled NEON sample and score it on a held-out part.

    Writes into ``out_folder``: ``labels/`` (the split), ``trees_voc/`` and ``trees_pixels/``
    (training chips), ``models/trees_fcos/`` and ``models/trees_unet/`` (model folders),
    ``heldout_detections.gpkg`` and ``heldout_classified.tif`` (inference on the held-out
    part), ``accuracy/`` (tables and the tools' reports), ``report.html`` and
    ``summary.json`` (the headline figures and minutes per step).

    Args:
        out_folder: Folder for everything the demo writes.
        overwrite: Replace the outputs of an earlier run.
        quick: Fewer epochs and smaller chips: checks the pipeline end to end in about a
            minute, with lower accuracy.
        settings: Chip size, epochs and learning rates instead of those of ``quick``.

    Yields:
        One line per step, saying what was made and where; the headline figures last.

    Raises:
        RasterLearnError: if ``out_folder`` holds earlier outputs and ``overwrite`` is false.
    """
    from rasterlearn.demo.report import DemoFigures, render_demo_report
    from rasterlearn.tools.classify_pixels import classify_pixels
    from rasterlearn.tools.compute_accuracy_for_object_detection import (
        compute_accuracy_for_object_detection,
    )
    from rasterlearn.tools.compute_pixel_accuracy import compute_pixel_accuracy
    from rasterlearn.tools.detect_objects import detect_objects
    from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model

    settings = settings or (QUICK if quick else FULL)
    out = Path(out_folder)
    _check_out_folder(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    raster, _ = sample_paths()
    clock = _Clock()
    with clock("split"):
        split = split_sample(out / "labels")
    yield (
        f"Split: {split.num_train_trees} training trees in columns {split.train_columns[0]}-"
        f"{split.train_columns[1] - 1}, {split.num_heldout_trees} held-out trees in columns "
        f"{split.heldout_columns[0]}-{split.heldout_columns[1] - 1} -> {out / 'labels'}"
    )

    exports: dict[str, Path] = {}
    for fmt, name, labels, stride in (
        ("PASCAL_VOC_rectangles", "trees_voc", split.train_trees, settings.detection_stride),
        ("Classified_Tiles", "trees_pixels", split.train_pixels, settings.pixel_stride),
    ):
        with clock("export"):
            result = export_training_data(
                raster,
                out / name,
                labels,
                metadata_format=fmt,
                tile_size_x=settings.tile_size,
                tile_size_y=settings.tile_size,
                stride_x=stride,
                stride_y=stride,
                extent=split.train_extent,
                overwrite=overwrite,
            )
        exports[fmt] = result.out_folder
        export = read_export_folder(result.out_folder)
        objects = sum(len(c.objects) for c in export.chips)
        yield (
            f"Exported {fmt}: {result.num_chips} chips of {settings.tile_size} px"
            + (f", {objects} boxes" if objects else "")
            + f" -> {result.out_folder}"
        )

    models: dict[str, TrainResult] = {}
    for model_type, fmt, epochs in (
        ("FCOS", "PASCAL_VOC_rectangles", settings.fcos_epochs),
        ("UNET", "Classified_Tiles", settings.unet_epochs),
    ):
        step = f"train {model_type}"
        with clock(step):
            trained = train_deep_learning_model(
                exports[fmt],
                out / "models" / f"trees_{model_type.lower()}",
                max_epochs=epochs,
                model_type=model_type,
                batch_size=settings.batch_size,
                learning_rate=settings.learning_rate,
                backbone_model="resnet18",
                stop_training=False,
                seed=SEED,
                overwrite=overwrite,
            )
        assert trained is not None  # a single process writes the model folder
        models[model_type] = trained
        yield (
            f"Trained {model_type} for {trained.epochs} epochs in {clock.minutes[step]:.1f} min "
            f"-> {trained.out_folder}"
        )

    detections = out / "heldout_detections.gpkg"
    with clock("detect objects"):
        detect_objects(
            raster,
            detections,
            models["FCOS"].emd,
            arguments={"threshold": settings.detection_threshold},
            processing_extent=split.heldout_extent,
            overwrite=overwrite,
        )
    num_detections = len(gpd.read_file(detections))
    yield f"Detected {num_detections} trees in the held-out part -> {detections}"
    classified = out / "heldout_classified.tif"
    with clock("classify pixels"):
        classify_pixels(
            raster,
            classified,
            models["UNET"].emd,
            # Every pixel is a tree or background; flips and quarter turns averaged.
            arguments={"predict_background": False, "test_time_augmentation": True},
            processing_extent=split.heldout_extent,
            overwrite=overwrite,
        )
    yield f"Classified the held-out part -> {classified}"

    accuracy = out / "accuracy"
    accuracy.mkdir(exist_ok=True)
    with clock("accuracy"):
        detection_result = compute_accuracy_for_object_detection(
            detections,
            split.heldout_trees,
            accuracy / "detection_accuracy.csv",
            out_accuracy_report=accuracy / "detection_accuracy.html",
            overwrite=overwrite,
        )
        pixel_result = compute_pixel_accuracy(
            classified,
            split.heldout_pixels,
            accuracy / "pixel_accuracy.csv",
            out_accuracy_report=accuracy / "pixel_accuracy.html",
            overwrite=overwrite,
        )
    all_row = detection_result.table.iloc[-1]
    pixels = pixel_result.table.set_index("Class")
    figures = DemoFigures(
        ap50=float(all_row["AP"]),
        precision=float(all_row["Precision"]),
        recall=float(all_row["Recall"]),
        f1=float(all_row["F1_Score"]),
        pixel_accuracy=float(pixels.loc["Overall", "Overall_Accuracy"]),
        tree_iou=float(pixels.loc["1", "IoU"]) if "1" in pixels.index else 0.0,
    )
    yield (
        f"Accuracy tables -> {detection_result.out_accuracy_table}, "
        f"{pixel_result.out_accuracy_table}"
    )

    report = out / "report.html"
    with clock("report"):
        render_demo_report(
            report,
            raster=raster,
            split=split,
            detections=detections,
            classified=classified,
            detection_table=detection_result.table,
            pixel_table=pixel_result.table,
            model_folders={k: v.out_folder for k, v in models.items()},
            figures=figures,
            minutes=clock.minutes,
            settings=_settings_shown(settings, exports),
            quick=quick,
        )
    total = sum(clock.minutes.values())
    summary = {
        "quick": quick,
        "settings": asdict(settings),
        "split": {
            "train_columns": list(split.train_columns),
            "heldout_columns": list(split.heldout_columns),
            "train_trees": split.num_train_trees,
            "heldout_trees": split.num_heldout_trees,
        },
        "figures": asdict(figures),
        "detections": num_detections,
        "epochs": {k: v.epochs for k, v in models.items()},
        "minutes": {**clock.minutes, "total": total},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    yield f"Report -> {report}"
    yield (
        f"Held-out trees: AP50 {figures.ap50:.3f}, precision {figures.precision:.3f}, "
        f"recall {figures.recall:.3f}, F1 {figures.f1:.3f}; pixels: accuracy "
        f"{figures.pixel_accuracy:.3f}, tree IoU {figures.tree_iou:.3f}; {total:.1f} min"
    )


__all__ = ["FULL", "QUICK", "DemoSettings", "Split", "run_demo", "sample_paths", "split_sample"]
