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
   random initial weights, the tool's defaults),
3. ``detect_objects`` and ``classify_pixels`` over the held-out part (``processing_extent``),
4. ``compute_accuracy_for_object_detection`` and ``compute_pixel_accuracy`` against the
   held-out trees,
5. an HTML report (:mod:`rasterlearn.demo.report`) and ``summary.json``.

The sample and its split are in :mod:`rasterlearn.demo.sample`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd

from rasterlearn.demo.report import DemoFigures, render_demo_report
from rasterlearn.demo.sample import Split, sample_paths, split_sample
from rasterlearn.errors import OutputError
from rasterlearn.formats.export_reader import read_export_folder
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.compute_accuracy_for_object_detection import (
    DetectionAccuracyResult,
    compute_accuracy_for_object_detection,
)
from rasterlearn.tools.compute_pixel_accuracy import PixelAccuracyResult, compute_pixel_accuracy
from rasterlearn.tools.detect_objects import detect_objects
from rasterlearn.tools.export_training_data import export_training_data
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model

if TYPE_CHECKING:
    from rasterlearn.training.model_folder import TrainResult

SEED = 42
"""Seed of the training runs (the split, the initial weights and the augmentation)."""


@dataclass(frozen=True)
class DemoSettings:
    """How much work the demo does.

    Attributes:
        tile_size: Chip size in pixels (square), for both models.
        detection_stride: Step between the detector's training chips, in pixels.
        pixel_stride: Step between the pixel classifier's training chips, in pixels.
        batch_size: Chips per training batch (None: the Train tool's default).
        fcos_epochs: Epochs of the FCOS detector (None: the Train tool's default).
        unet_epochs: Epochs of the UNET pixel classifier (None: the Train tool's default).
        learning_rate: Peak learning rate of both (None: the range test chooses it).
        detection_threshold: Minimum confidence (0-1) of a detection (None: the model's).
        stop_training: Stop when the monitored metric stops improving (the Train tool's
            default), or train every epoch.
    """

    tile_size: int
    detection_stride: int
    pixel_stride: int
    batch_size: int | None = None
    fcos_epochs: int | None = None
    unet_epochs: int | None = None
    learning_rate: float | None = None
    detection_threshold: float | None = None
    stop_training: bool = True


FULL = DemoSettings(tile_size=96, detection_stride=32, pixel_stride=32)
"""The demo: chips of 96 px at a stride of 32, and training on the Train tool's defaults
(learning rate from the range test, ArcGIS's 20 epochs, the batch size and detection threshold
the tool chooses, early stopping); about 4 minutes on 2 shared CPU cores."""

QUICK = DemoSettings(
    tile_size=64,
    detection_stride=32,
    pixel_stride=64,
    batch_size=8,
    fcos_epochs=8,
    unet_epochs=10,
    learning_rate=2e-3,
    detection_threshold=0.4,
    stop_training=False,
)
"""A check of the pipeline end to end (for CI): about a minute on 2 CPU cores."""


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


def _settings_shown(
    settings: DemoSettings, exports: dict[str, Path], models: dict[str, TrainResult]
) -> dict[str, str]:
    """The run's settings as the report shows them (what the defaults chose, where left)."""
    chips = {fmt: len(read_export_folder(folder).chips) for fmt, folder in exports.items()}

    def rate(model_type: str) -> str:
        choice = models[model_type].learning_rate_choice
        chosen = "" if choice is None or choice.rule == "given" else ", range test"
        return f"{model_type} {models[model_type].learning_rate:.2g}{chosen}"

    threshold = settings.detection_threshold
    return {
        "Chips": f"{settings.tile_size} x {settings.tile_size} px",
        "Detector chips (stride)": (
            f"{chips['PASCAL_VOC_rectangles']} ({settings.detection_stride} px)"
        ),
        "Pixel classifier chips (stride)": (
            f"{chips['Classified_Tiles']} ({settings.pixel_stride} px)"
        ),
        "Backbone": "ResNet-18, random initial weights",
        "Epochs FCOS / UNET": f"{models['FCOS'].epochs} / {models['UNET'].epochs}",
        "Batch size": "the Train tool's default"
        if settings.batch_size is None
        else str(settings.batch_size),
        "Peak learning rate (one-cycle)": f"{rate('FCOS')}; {rate('UNET')}",
        "Detection threshold": "the model's" if threshold is None else f"{threshold:g}",
        "Classify Pixels": "test-time augmentation (8 flips and turns averaged)",
        "Seed": str(SEED),
    }


def _check_out_folder(out_folder: Path, overwrite: bool) -> None:
    if out_folder.exists() and any(out_folder.iterdir()) and not overwrite:
        raise OutputError(
            f"the demo output folder {out_folder} is not empty",
            "give another folder, or overwrite=True (--overwrite)",
        )


@dataclass
class _DemoRun:
    """What every step of one demo run shares: where it writes, what it does, its clock."""

    out: Path
    settings: DemoSettings
    overwrite: bool
    quick: bool
    raster: Path = field(default_factory=lambda: sample_paths()[0])
    clock: _Clock = field(default_factory=_Clock)


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
    out = Path(out_folder)
    _check_out_folder(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    run = _DemoRun(out, settings or (QUICK if quick else FULL), overwrite, quick)
    with run.clock("split"):
        split = split_sample(out / "labels")
    yield (
        f"Split: {split.num_train_trees} training trees in columns {split.train_columns[0]}-"
        f"{split.train_columns[1] - 1}, {split.num_heldout_trees} held-out trees in columns "
        f"{split.heldout_columns[0]}-{split.heldout_columns[1] - 1} -> {out / 'labels'}"
    )
    exports = yield from _export(run, split)
    models = yield from _train(run, exports)
    detections, classified = yield from _infer(run, split, models)
    detection_result, pixel_result = yield from _score(run, split, detections, classified)
    figures = _figures(detection_result, pixel_result)
    report = run.out / "report.html"
    with run.clock("report"):
        render_demo_report(
            report,
            raster=run.raster,
            split=split,
            detections=detections,
            classified=classified,
            detection_table=detection_result.table,
            pixel_table=pixel_result.table,
            model_folders={k: v.out_folder for k, v in models.items()},
            figures=figures,
            minutes=run.clock.minutes,
            settings=_settings_shown(run.settings, exports, models),
            quick=quick,
        )
    total = _write_summary(run, split, figures, len(gpd.read_file(detections)), models)
    yield f"Report -> {report}"
    yield (
        f"Held-out trees: AP50 {figures.ap50:.3f}, precision {figures.precision:.3f}, "
        f"recall {figures.recall:.3f}, F1 {figures.f1:.3f}; pixels: accuracy "
        f"{figures.pixel_accuracy:.3f}, tree IoU {figures.tree_iou:.3f}; {total:.1f} min"
    )


def _export(run: _DemoRun, split: Split) -> Generator[str, None, dict[str, Path]]:
    """Export the training part for the detector and for the pixel classifier.

    Returns:
        The export folder per metadata format.
    """
    settings = run.settings
    exports: dict[str, Path] = {}
    for fmt, name, labels, stride in (
        ("PASCAL_VOC_rectangles", "trees_voc", split.train_trees, settings.detection_stride),
        ("Classified_Tiles", "trees_pixels", split.train_pixels, settings.pixel_stride),
    ):
        with run.clock("export"):
            result = export_training_data(
                run.raster,
                run.out / name,
                labels,
                metadata_format=fmt,
                tile_size_x=settings.tile_size,
                tile_size_y=settings.tile_size,
                stride_x=stride,
                stride_y=stride,
                extent=split.train_extent,
                overwrite=run.overwrite,
            )
        exports[fmt] = result.out_folder
        export = read_export_folder(result.out_folder)
        objects = sum(len(c.objects) for c in export.chips)
        yield (
            f"Exported {fmt}: {result.num_chips} chips of {settings.tile_size} px"
            + (f", {objects} boxes" if objects else "")
            + f" -> {result.out_folder}"
        )
    return exports


def _train(run: _DemoRun, exports: dict[str, Path]) -> Generator[str, None, dict[str, TrainResult]]:
    """Train the FCOS detector and the UNET pixel classifier.

    Returns:
        The training result per model type.
    """
    settings = run.settings
    models: dict[str, TrainResult] = {}
    for model_type, fmt, epochs in (
        ("FCOS", "PASCAL_VOC_rectangles", settings.fcos_epochs),
        ("UNET", "Classified_Tiles", settings.unet_epochs),
    ):
        step = f"train {model_type}"
        with run.clock(step):
            tuned = {
                "max_epochs": epochs,
                "batch_size": settings.batch_size,
                "learning_rate": settings.learning_rate,
            }
            trained = train_deep_learning_model(
                exports[fmt],
                run.out / "models" / f"trees_{model_type.lower()}",
                model_type=model_type,
                backbone_model="resnet18",
                **{k: v for k, v in tuned.items() if v is not None},
                stop_training=settings.stop_training,
                seed=SEED,
                overwrite=run.overwrite,
            )
        assert trained is not None  # a single process writes the model folder
        models[model_type] = trained
        yield (
            f"Trained {model_type} for {trained.epochs} epochs in "
            f"{run.clock.minutes[step]:.1f} min -> {trained.out_folder}"
        )
    return models


def _infer(
    run: _DemoRun, split: Split, models: dict[str, TrainResult]
) -> Generator[str, None, tuple[Path, Path]]:
    """Detect trees and classify pixels over the held-out part.

    Returns:
        The detections and the classified raster.
    """
    detections = run.out / "heldout_detections.gpkg"
    with run.clock("detect objects"):
        detect_objects(
            run.raster,
            detections,
            models["FCOS"].emd,
            arguments=(
                {}
                if run.settings.detection_threshold is None
                else {"threshold": run.settings.detection_threshold}
            ),
            processing_extent=split.heldout_extent,
            overwrite=run.overwrite,
        )
    num_detections = len(gpd.read_file(detections))
    yield f"Detected {num_detections} trees in the held-out part -> {detections}"
    classified = run.out / "heldout_classified.tif"
    with run.clock("classify pixels"):
        classify_pixels(
            run.raster,
            classified,
            models["UNET"].emd,
            # Every pixel is a tree or background; flips and quarter turns averaged.
            arguments={"predict_background": False, "test_time_augmentation": True},
            processing_extent=split.heldout_extent,
            overwrite=run.overwrite,
        )
    yield f"Classified the held-out part -> {classified}"
    return detections, classified


def _score(
    run: _DemoRun, split: Split, detections: Path, classified: Path
) -> Generator[str, None, tuple[DetectionAccuracyResult, PixelAccuracyResult]]:
    """Score the detections and the classified raster against the held-out trees.

    Returns:
        The detection and the pixel accuracy results.
    """
    accuracy = run.out / "accuracy"
    accuracy.mkdir(exist_ok=True)
    with run.clock("accuracy"):
        detection_result = compute_accuracy_for_object_detection(
            detections,
            split.heldout_trees,
            accuracy / "detection_accuracy.csv",
            out_accuracy_report=accuracy / "detection_accuracy.html",
            overwrite=run.overwrite,
        )
        pixel_result = compute_pixel_accuracy(
            classified,
            split.heldout_pixels,
            accuracy / "pixel_accuracy.csv",
            out_accuracy_report=accuracy / "pixel_accuracy.html",
            overwrite=run.overwrite,
        )
    yield (
        f"Accuracy tables -> {detection_result.out_accuracy_table}, "
        f"{pixel_result.out_accuracy_table}"
    )
    return detection_result, pixel_result


def _figures(detection: DetectionAccuracyResult, pixel: PixelAccuracyResult) -> DemoFigures:
    """The headline figures from the accuracy tables (the detection table's last row is all
    classes together)."""
    all_row = detection.table.iloc[-1]
    pixels = pixel.table.set_index("Class")
    return DemoFigures(
        ap50=float(all_row["AP"]),
        precision=float(all_row["Precision"]),
        recall=float(all_row["Recall"]),
        f1=float(all_row["F1_Score"]),
        pixel_accuracy=float(pixels.loc["Overall", "Overall_Accuracy"]),
        tree_iou=float(pixels.loc["1", "IoU"]) if "1" in pixels.index else 0.0,
    )


def _write_summary(
    run: _DemoRun,
    split: Split,
    figures: DemoFigures,
    num_detections: int,
    models: dict[str, TrainResult],
) -> float:
    """Write ``summary.json``; returns the total minutes of the run."""
    total = sum(run.clock.minutes.values())
    summary = {
        "quick": run.quick,
        "settings": asdict(run.settings),
        "split": {
            "train_columns": list(split.train_columns),
            "heldout_columns": list(split.heldout_columns),
            "train_trees": split.num_train_trees,
            "heldout_trees": split.num_heldout_trees,
        },
        "figures": asdict(figures),
        "detections": num_detections,
        "epochs": {k: v.epochs for k, v in models.items()},
        "minutes": {**run.clock.minutes, "total": total},
    }
    (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return total


__all__ = ["FULL", "QUICK", "DemoSettings", "run_demo"]
