"""The model folder of a fitted model: ``.pth``, ``.emd``, report files and ``.dlpk``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from rasterlearn.data.datasets import ChipDataset
from rasterlearn.formats.dlpk import create_dlpk
from rasterlearn.formats.emd import PRO_FUNCTIONS_PREFIX, ModelDefinition
from rasterlearn.inference.pro_package import add_pro_function
from rasterlearn.models.trained import architecture_parameters
from rasterlearn.outputs import atomic_output
from rasterlearn.training.fit import FitResult
from rasterlearn.training.learning_rate import LearningRateChoice
from rasterlearn.training.quality import quality_warnings
from rasterlearn.training.report import (
    EpochRecord,
    plot_confusion,
    plot_losses,
    plot_results,
    write_loss_log,
    write_metrics_html,
)
from rasterlearn.training.settings import TrainingSettings
from rasterlearn.training.setup import DETECTION_TASKS, TrainingSetup
from rasterlearn.training.task import TrainingTask, ValidationResults

VERSION = "0.1.0"

CONTEXT_TILE_MODEL_TYPES = ("FCOS",)
"""Model types whose ``.emd`` has Detect Objects cut tiles of :data:`CONTEXT_TILE_CHIPS` chips
across (``InferenceTileSize``). FCOS is fully convolutional; on tiles of its own chip size most
objects lie near a tile's edge. On the NEON demo split (11 seeds, the Train tool's defaults,
96 px chips) its held-out AP50 rose from 0.407 on 96 px tiles to 0.503 on 192 px tiles (0.485
on 128 px, 0.496 on 256 px)."""

CONTEXT_TILE_CHIPS = 2
"""The ``InferenceTileSize`` of :data:`CONTEXT_TILE_MODEL_TYPES`, in chips across."""


@dataclass(frozen=True)
class TrainResult:
    """What training produced.

    Attributes:
        out_folder: The model folder.
        emd: Path of ``<name>.emd``.
        dlpk: Path of ``<name>.dlpk``.
        model_type: The ArcGIS model type trained.
        epochs: Epochs run.
        learning_rate: The (peak) learning rate used.
        metrics: Validation metrics of the saved model.
        history: Loss and metrics per epoch.
        model: The trained network (eval mode), as saved.
        learning_rate_choice: How the learning rate was chosen, and why.
        warnings: What the validation metrics say is wrong with the model (empty when none).
    """

    out_folder: Path
    emd: Path
    dlpk: Path
    model_type: str
    epochs: int
    learning_rate: float
    metrics: dict[str, float]
    history: list[EpochRecord]
    model: torch.nn.Module = field(repr=False, default=None)
    learning_rate_choice: LearningRateChoice | None = None
    warnings: tuple[str, ...] = ()


def write_model_folder(
    settings: TrainingSettings, setup: TrainingSetup, fitted: FitResult
) -> TrainResult:
    """Validate the fitted model once more and write its model folder atomically.

    The files are named after the folder: ``<name>.pth`` (state dict), ``<name>.emd``,
    ``model_metrics.html`` with ``ModelCharacteristics/`` (loss log and figures), the ArcGIS
    Pro raster function with its TorchScript copy of the model
    (:func:`~rasterlearn.inference.pro_package.add_pro_function`), and ``<name>.dlpk`` built
    from them.
    """
    out_folder = settings.out_folder
    results = _validate(fitted.task, setup.valid_loader)
    names = [c.name for c in setup.data.classes]
    warnings = quality_warnings(
        setup.spec.task,
        results.metrics,
        results.confusion,
        ["NoData", *names] if setup.spec.task == "pixel" else names,
    )
    with atomic_output(
        out_folder, overwrite=settings.overwrite or settings.resume, folder=True
    ) as tmp:
        emd_path, dlpk_path = _write_files(tmp, out_folder.name, setup, fitted, results, warnings)
    return TrainResult(
        out_folder=out_folder,
        emd=out_folder / emd_path.name,
        dlpk=out_folder / dlpk_path.name,
        model_type=setup.spec.model_type,
        epochs=len(fitted.history),
        learning_rate=fitted.learning_rate.rate,
        metrics=results.metrics,
        history=fitted.history,
        model=fitted.task.model.eval(),
        learning_rate_choice=fitted.learning_rate,
        warnings=tuple(warnings),
    )


def _validate(task: TrainingTask, loader: DataLoader) -> ValidationResults:
    """Validation metrics of the final model, measured once more in eval mode."""
    task.eval()
    task.accumulator.reset()
    with torch.no_grad():
        for images, targets in loader:
            outputs = task.model(list(images) if task.task in DETECTION_TASKS else images)
            task.accumulator.add(outputs, targets)
    results = task.accumulator.results()
    if task.task in DETECTION_TASKS:
        results.detection_threshold = task.accumulator.detection_threshold()
    return results


def _write_files(
    folder: Path,
    name: str,
    setup: TrainingSetup,
    fitted: FitResult,
    results: ValidationResults,
    warnings: list[str],
) -> tuple[Path, Path]:
    torch.save(fitted.task.model.state_dict(), folder / f"{name}.pth")
    per_class = _per_class_by_name(setup, results)
    content = _emd_content(name, setup, fitted, results, per_class, setup.monitored_metric)
    emd_path = ModelDefinition.load(content).save(folder / f"{name}.emd")
    add_pro_function(emd_path)
    _write_report(folder, setup, fitted, results, per_class, warnings)
    dlpk_path = create_dlpk(folder, folder / f"{name}.dlpk")
    return emd_path, dlpk_path


def _per_class_by_name(
    setup: TrainingSetup, results: ValidationResults
) -> dict[str, dict[str, float]]:
    """Per-class validation metrics keyed by class name (pixel tasks: NoData for value 0)."""
    names = {c.value: c.name for c in setup.data.classes}
    by_value = _by_value(results, setup.valid_set)
    if setup.spec.task in DETECTION_TASKS:
        return {names[v]: m for v, m in by_value.items()}
    return {("NoData" if v == 0 else names.get(v, str(v))): m for v, m in by_value.items()}


def _emd_content(
    name: str,
    setup: TrainingSetup,
    fitted: FitResult,
    results: ValidationResults,
    per_class: dict[str, dict[str, float]],
    monitored_metric: str,
) -> dict[str, Any]:
    """The ``.emd`` keys, in the order arcgis.learn writes them."""
    data, spec, normalizer, model = setup.data, setup.spec, setup.normalizer, fitted.task.model
    classes = [
        {"Value": c.value, "Name": c.name, "Color": list(c.color) if c.color else [-1, -1, -1]}
        for c in data.classes
    ]
    training_emd = data.folders[0].emd
    content: dict[str, Any] = {
        "Framework": "rasterlearn",
        "ModelConfiguration": spec.emd.model_configuration,
        "ModelType": spec.emd.model_type,
        # as Pro's Train tool writes it: the raster function shipped inside ArcGIS Pro
        "InferenceFunction": PRO_FUNCTIONS_PREFIX
        + "System\\DeepLearning\\ArcGISLearn\\"
        + spec.emd.inference_function,
        "ExtractBands": list(range(normalizer.band_count)),
        "Classes": classes,
        **dict(spec.emd.extra),
        "ModelFormat": "NCHW",
        "MinCellSize": training_emd.get("MinCellSize"),
        "MaxCellSize": training_emd.get("MaxCellSize"),
        # the training raster's band names: STAC inputs give the model these bands
        **{k: v for k, v in training_emd.items() if k == "InputRastersProps"},
        "SupportsVariableTileSize": spec.task == "pixel",
        "RasterlearnVersion": VERSION,
        "ModelFile": f"{name}.pth",
        "ImageHeight": setup.chip_size,
        "ImageWidth": setup.chip_size,
        "ImageSpaceUsed": data.image_space,
        "LearningRate": f"{fitted.learning_rate.rate:.4e}",
        "LearningRateChoice": fitted.learning_rate.to_emd(),
        **(
            {"InferenceTileSize": CONTEXT_TILE_CHIPS * setup.chip_size}
            if spec.model_type in CONTEXT_TILE_MODEL_TYPES
            else {}
        ),
        # Detect Objects' default threshold: the best F1 on the validation chips
        **(
            {"DetectionThreshold": results.detection_threshold}
            if results.detection_threshold is not None
            else {}
        ),
        "ModelName": spec.emd.model_name,
        "backend": "pytorch",
        "ModelParameters": {
            "backbone": model.backbone_name,
            "backend": "pytorch",
            **architecture_parameters(model),
            **{k: _jsonable(v) for k, v in model.model_args.items()},
        },
        "MetaDataMode": data.metadata_format,
        "resize_to": None,
        "IsMultispectral": not normalizer.imagenet,
        "IsImageNetNormalization": normalizer.imagenet,
        **normalizer.to_emd(),
    }
    if spec.task == "classification":
        content["CropSizeFixed"] = int(
            training_emd.get("CropTileMode", "Fixed_Size") == "Fixed_Size"
        )
        content["BlackenAroundFeature"] = int(bool(training_emd.get("BlackenAroundFeature", False)))
    if data.paired:
        content.update(_change_keys(setup, normalizer.imagenet, results))
    if fitted.best_score is not None:
        content[f"monitored_{monitored_metric}"] = fitted.best_score
    if spec.task in DETECTION_TASKS:
        content["average_precision_score"] = {
            k: round(m["average_precision"], 6) for k, m in per_class.items()
        }
    else:
        content["accuracy"] = f"{results.metrics.get('accuracy', 0.0):.4e}"
        content["per_class_metrics"] = json.dumps(per_class)
    return content


def _change_keys(setup: TrainingSetup, imagenet: bool, results: ValidationResults) -> dict:
    """What arcgis.learn's ChangeDetector adds: ``DataAttributes`` and its metrics (mean over
    the change classes; strings, as ``accuracy``)."""
    classes = setup.data.classes
    return {
        "DataAttributes": {
            "chip_size": setup.chip_size,
            "class_mapping": {str(c.value): c.name for c in classes},
            "color_mapping": {str(c.value): list(c.color or (255, 255, 0)) for c in classes},
            "classes": ["NoData", *(c.name for c in classes)],
            "batch_size": setup.train_loader.batch_size,
            "_is_multispectral": not imagenet,
        },
        **{k: f"{results.metrics.get(k, 0.0):.4e}" for k in ("precision", "recall", "f1_score")},
    }


def _write_report(
    folder: Path,
    setup: TrainingSetup,
    fitted: FitResult,
    results: ValidationResults,
    per_class: dict[str, dict[str, float]],
    warnings: list[str],
) -> None:
    """The loss log, the figures and ``model_metrics.html``."""
    write_loss_log(folder, fitted.history)
    figures = [plot_losses(folder, fitted.history)]
    figures.append(_show_results(folder, fitted.task, setup))
    classes = [c.name for c in setup.data.classes]
    if results.confusion is not None:
        labels = ["NoData", *classes] if setup.spec.task == "pixel" else classes
        figures.append(plot_confusion(folder, results.confusion, labels))
    write_metrics_html(
        folder,
        setup.spec.emd.model_name,
        fitted.task.model.backbone_name,
        fitted.learning_rate.describe(),
        {k: round(v, 4) for k, v in results.metrics.items()},
        per_class,
        figures,
        warnings,
    )


def _by_value(results: ValidationResults, valid_set: ChipDataset) -> dict[int, dict[str, float]]:
    """Per-class results keyed by class value (results are keyed by class index)."""
    values = list(valid_set.class_values)
    return {values[i]: m for i, m in results.per_class.items() if i < len(values)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _display(image: torch.Tensor) -> np.ndarray:
    """A normalised chip as an RGB picture (first three bands, each stretched 2-98 %)."""
    bands = image[:3].detach().cpu().numpy()
    if bands.shape[0] < 3:
        bands = np.repeat(bands[:1], 3, axis=0)
    out = np.empty_like(bands)
    for i, b in enumerate(bands):
        lo, hi = np.percentile(b, (2, 98))
        out[i] = np.clip((b - lo) / (hi - lo + 1e-6), 0, 1)
    return out.transpose(1, 2, 0)


def _show_results(folder: Path, task: TrainingTask, setup: TrainingSetup) -> Path:
    """``show_results.png``: the first validation chips with their truth and prediction."""
    valid_set = setup.valid_set
    samples = [valid_set[i] for i in range(min(3, len(valid_set)))]
    images = [s[0] for s in samples]
    classes = setup.data.classes
    colors = [(0, 0, 0), *[c.color or (255, 255, 0) for c in classes]]
    task.eval()
    with torch.no_grad():
        if task.task in DETECTION_TASKS:
            truths, preds = _boxes(task.model(images), samples)
            kind = "boxes"
        elif task.task == "pixel":
            outputs = task(torch.stack(images))
            truths = [s[1].numpy() for s in samples]
            preds = list(outputs.argmax(1).numpy())
            kind = "pixels"
        else:
            outputs = task(torch.stack(images))
            truths, preds = _labels(outputs, samples, [c.name for c in classes], task.multi_label)
            kind = "labels"
    return plot_results(folder, [_display(i) for i in images], truths, preds, kind, colors)


def _boxes(outputs: list[dict], samples: list[tuple]) -> tuple[list, list]:
    """True boxes and predicted boxes scoring 0.5 or more, as (class, xmin, ymin, xmax, ymax)."""
    truths = [
        [(int(c), *b.tolist()) for c, b in zip(s[1]["labels"], s[1]["boxes"], strict=True)]
        for s in samples
    ]
    preds = [
        [
            (int(c), *b.tolist())
            for c, b, sc in zip(o["labels"], o["boxes"], o["scores"], strict=True)
            if sc >= 0.5
        ]
        for o in outputs
    ]
    return truths, preds


def _labels(
    outputs: torch.Tensor, samples: list[tuple], names: list[str], multi_label: bool
) -> tuple[list[str], list[str]]:
    """True and predicted class names (multi-label: comma-separated, probability over 0.5)."""
    if multi_label:
        truths = [
            ",".join(n for n, t in zip(names, s[1].tolist(), strict=True) if t > 0.5)
            for s in samples
        ]
        preds = [
            ",".join(n for n, p in zip(names, torch.sigmoid(o).tolist(), strict=True) if p > 0.5)
            for o in outputs
        ]
        return truths, preds
    return [names[int(s[1])] for s in samples], [names[int(o.argmax())] for o in outputs]
