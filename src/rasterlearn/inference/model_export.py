"""Export a rasterlearn model to ONNX or TorchScript (``rasterlearn model export``).

The export is a new model folder beside the original, ``<name>_onnx/`` or
``<name>_torchscript/``, holding ``<name>.onnx`` (or ``<name>.pt``), a copy of the ``.emd``
whose ``ModelFile`` names it, the training report (``model_metrics.html``,
``ModelCharacteristics/``) when there is one, and ``<name>.dlpk`` of it all. Any inference tool
runs it through :func:`~rasterlearn.inference.backends.open_predictor`, with the same
normalisation and post-processing as the PyTorch model.

How models are exported:

* pixel and object classifiers: ``(N, C, H, W)`` in, logits out, the batch, height and width
  dynamic (ONNX ``dynamic_axes``; TorchScript by tracing, which keeps shapes symbolic);
* detectors: torchvision's detection models traced on one image ``(C, H, W)``, giving
  ``boxes, scores, labels[, masks]`` (``torch.onnx.export(..., dynamo=False,
  opset_version=17)``, the exporter torchvision's detectors need). The model's score
  threshold stays in the graph; its non-maximum suppression is switched off (IoU 1) and the
  detection limit raised, so that the predictor applies NMS with the ``nms_overlap`` argument
  of each run, which gives the PyTorch model's detections for any argument values.

Before the folder appears, the exported model is opened like any model and must reproduce
the PyTorch model's predictions on random tiles (and, for models of variable tile size, on a
second tile size); otherwise nothing is written and an error says by how much they differ.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.dlpk import create_dlpk
from rasterlearn.formats.emd import PRO_FUNCTIONS_PREFIX, ModelDefinition, is_rasterlearn_model
from rasterlearn.formats.model_source import load_model_definition
from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.backends.decoding import DETECTION_OUTPUTS
from rasterlearn.inference.backends.torchscript import OUTPUT_NAMES_FILE
from rasterlearn.inference.predictors import (
    DETECTION,
    INSTANCE,
    PIXEL,
    Predictor,
    TileDetections,
)
from rasterlearn.models.trained import TrainedModel, load_trained_model
from rasterlearn.outputs import atomic_output

EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
"""Export format -> extension of the model file."""

ONNX_OPSET = 17

EXPORT_DETECTIONS = {DETECTION: 5000, INSTANCE: 1000}
"""Detections an exported detector returns per image before the predictor's NMS (sorted by
score, so the best survive; instance models compute a mask for each)."""

PROBABILITY_TOLERANCE = 1e-3
"""Largest difference of a class probability allowed between the PyTorch and exported model."""

BOX_TOLERANCE = 0.05
"""Largest difference of a box coordinate (pixels) allowed between the two."""

SCORE_TOLERANCE = 1e-3
"""Largest difference of a detection score allowed between the two."""

REPORT_FILES = ("model_metrics.html", "ModelCharacteristics")
"""Files of the model folder copied into the export."""


@dataclass(frozen=True)
class ExportedModel:
    """A model folder written by :func:`export_model`.

    Attributes:
        folder: The new model folder.
        emd: Its ``.emd``.
        model_file: The ``.onnx`` or ``.pt`` file.
        dlpk: The package of the folder.
        format: ``onnx`` or ``torchscript``.
        max_difference: Largest difference between the exported and the PyTorch model's
            predictions on the check tiles (probabilities, or box pixels for detectors).
    """

    folder: Path
    emd: Path
    model_file: Path
    dlpk: Path
    format: str
    max_difference: float


def export_trained_model(
    in_model_definition: str | Path | dict,
    format: str = "onnx",
    out_folder: str | Path | None = None,
    overwrite: bool = False,
) -> ExportedModel:
    """A new model folder in ONNX or TorchScript: the work of the Export Deep Learning Model
    tool (:func:`rasterlearn.tools.export_model.export_model` documents it)."""
    fmt = str(format).strip().lower()
    if fmt not in EXPORT_FORMATS:
        raise ParameterError(
            f"unknown export format {format!r}", f"use {' or '.join(EXPORT_FORMATS)}"
        )
    definition = load_model_definition(in_model_definition)
    _check_exportable(definition)
    name = definition.path.stem if definition.path else str(definition.get("ModelName") or "model")
    target = _target(definition, name, fmt, out_folder)
    trained = load_trained_model(definition)
    task = trained.model.task
    with atomic_output(target, overwrite=overwrite, folder=True) as tmp:
        model_path = tmp / f"{name}{EXPORT_FORMATS[fmt]}"
        details = _export(trained, task, fmt, model_path)
        exported = ModelDefinition.load(definition.to_dict())
        exported.set("ModelFile", model_path.name)
        exported.remove("InferenceTileSize")  # the export is checked at the chip size only
        exported.set("RasterlearnExport", details)
        emd_path = exported.save(tmp / f"{name}.emd")
        difference = check_export(definition, emd_path)
        exported.set("RasterlearnExport", {**details, "MaxDifference": float(difference)})
        exported.save(emd_path)
        _copy_report(definition, tmp)
        create_dlpk(tmp, tmp / f"{name}.dlpk")
    return ExportedModel(
        folder=target,
        emd=target / f"{name}.emd",
        model_file=target / model_path.name,
        dlpk=target / f"{name}.dlpk",
        format=fmt,
        max_difference=float(difference),
    )


def _check_exportable(definition: ModelDefinition) -> None:
    function = str(definition.get("InferenceFunction") or "")
    custom = function.lower().endswith(".py") and not function.startswith(PRO_FUNCTIONS_PREFIX)
    if custom and not is_rasterlearn_model(definition):
        path = definition.resolve("InferenceFunction")
        if path is not None and not path.is_file():
            raise InputError(
                f"the model's inference function {path} does not exist",
                "restore the .py file next to the .emd, or fix the .emd's InferenceFunction",
            )
        raise InputError(
            f"the model runs through the custom inference function {function}, which cannot "
            "be exported",
            "export a model trained by rasterlearn (its .emd names a .pth ModelFile)",
        )
    suffix = Path(str(definition.get("ModelFile") or "")).suffix.lower()
    if suffix in (".onnx", ".pt", ".ts", ".torchscript"):
        raise InputError(
            f"the model is already exported (ModelFile {definition.get('ModelFile')})",
            "export the original model, whose ModelFile is a .pth",
        )


def _target(
    definition: ModelDefinition, name: str, fmt: str, out_folder: str | Path | None
) -> Path:
    if out_folder is not None:
        return Path(out_folder).absolute()
    if definition.package is not None:
        return definition.package.parent / f"{name}_{fmt}"
    if definition.path is not None:
        return definition.path.parent.parent / f"{name}_{fmt}"
    raise ParameterError(
        "the model is JSON text, so there is no folder to write the export beside",
        "give the output folder (--out)",
    )


# -- export ----------------------------------------------------------------------------------


class _DetectorOutputs(nn.Module):
    """One image ``(C, H, W)`` in, the torchvision detector's outputs as a tuple out."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model([image])[0]
        return tuple(out[name] for name in self.names)


def _postprocess_heads(model: nn.Module) -> list[nn.Module]:
    return [m for m in (model, getattr(model, "roi_heads", None)) if m is not None]


def _prepare_detector(model: nn.Module, task: str) -> float | None:
    """Switch off the detector's NMS, raise its detection limit; return its score threshold."""
    score = None
    for head in _postprocess_heads(model):
        if hasattr(head, "nms_thresh"):
            head.nms_thresh = 1.0  # ONNX and torchvision keep boxes of IoU <= threshold
        if hasattr(head, "detections_per_img"):
            head.detections_per_img = EXPORT_DETECTIONS[task]
        if hasattr(head, "score_thresh"):
            score = float(head.score_thresh)
    return score


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Tracing warns about every Python-level shape computation; none concern the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _sample_input(trained: TrainedModel, batch: int) -> torch.Tensor:
    definition = trained.definition
    height = int(definition.get("ImageHeight") or 224)
    width = int(definition.get("ImageWidth") or height)
    bands = len(definition.get("ExtractBands") or [0, 1, 2])
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, bands, height, width, generator=generator)


def _export(trained: TrainedModel, task: str, fmt: str, path: Path) -> dict[str, Any]:
    """Write the model file; return what the ``.emd`` records of the export."""
    model = trained.model.eval().cpu()
    details: dict[str, Any] = {
        "Format": "ONNX" if fmt == "onnx" else "TorchScript",
        "SourceModelFile": str(trained.definition.get("ModelFile")),
        "Torch": torch.__version__.split("+")[0],
    }
    if fmt == "onnx":
        details["OpsetVersion"] = ONNX_OPSET
    if task in (DETECTION, INSTANCE):
        score = _prepare_detector(model, task)
        image = _sample_input(trained, 1)[0]
        with torch.no_grad():
            keys = model([image])[0].keys()
        names = tuple(n for n in DETECTION_OUTPUTS if n in keys)
        module: nn.Module = _DetectorOutputs(model, names).eval()
        details.update({"Outputs": list(names), "NMS": "predictor"})
        if score is not None:
            details["ScoreThreshold"] = score
        _write(module, (image,), fmt, path, ["image"], list(names), _detector_axes(names))
        return details
    axes: dict[str, dict[int, str]] = {
        "input": {0: "batch", 2: "height", 3: "width"},
        "output": {0: "batch", 2: "height", 3: "width"} if task == PIXEL else {0: "batch"},
    }
    _write(model, (_sample_input(trained, 2),), fmt, path, ["input"], ["output"], axes)
    return details


def _detector_axes(names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    axes = {"image": {1: "height", 2: "width"}}
    axes.update({n: {0: "detections"} for n in names})
    if "masks" in names:
        axes["masks"] = {0: "detections", 2: "height", 3: "width"}
    return axes


def write_torchscript(trained: TrainedModel, path: Path) -> dict[str, Any]:
    """Write a TorchScript copy of a trained model as ``rasterlearn model export`` does.

    Returns:
        What the ``.emd`` records of the export (format, outputs, score threshold...).
    """
    return _export(trained, trained.model.task, "torchscript", path)


def _write(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    fmt: str,
    path: Path,
    input_names: list[str],
    output_names: list[str],
    axes: dict[str, dict[int, str]],
) -> None:
    try:
        with _quiet(), torch.no_grad():
            if fmt == "onnx":
                buffer = io.BytesIO()
                torch.onnx.export(
                    module,
                    args,
                    buffer,
                    dynamo=False,
                    opset_version=ONNX_OPSET,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes=axes,
                )
                path.write_bytes(buffer.getvalue())
            else:
                traced = torch.jit.trace(module, args, check_trace=False)
                extra = {OUTPUT_NAMES_FILE: ",".join(output_names)}
                torch.jit.save(traced, str(path), _extra_files=extra)
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"cannot export the model to {'ONNX' if fmt == 'onnx' else 'TorchScript'}: {first}",
            "use the PyTorch model (.emd with a .pth), or the other export format",
        ) from None


def _copy_report(definition: ModelDefinition, folder: Path) -> None:
    """The training report and, when the model has them, its ArcGIS Pro raster function and
    TorchScript copy (so that the exported folder runs in ArcGIS Pro too)."""
    source = definition.path.parent if definition.path is not None else None
    if source is None:
        return
    pro_files = [str(v) for v in (definition.get("TorchScript") or {}).values() if v]
    function = str(definition.get("InferenceFunction") or "")
    if function.lower().endswith(".py") and not function.startswith(PRO_FUNCTIONS_PREFIX):
        pro_files.append(function)
    for name in (*REPORT_FILES, *pro_files):
        path = source / name
        if path.is_dir():
            shutil.copytree(path, folder / name)
        elif path.is_file():
            shutil.copy2(path, folder / name)


# -- check -----------------------------------------------------------------------------------


def random_tiles(
    predictor: Predictor, count: int, height: int, width: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Raw tiles of random pixels in the range the model was trained on, all valid.

    8-bit RGB models (ImageNet normalisation) get ``uint8`` pixels; others values uniform
    between each band's ``NormalizationStats`` minimum and maximum.
    """
    rng = np.random.default_rng(seed)
    normalizer = getattr(predictor, "normalizer", None)
    bands = max(predictor.info.extract_bands, default=2) + 1
    valid = np.ones((count, height, width), dtype=bool)
    if normalizer is None or normalizer.imagenet:
        tiles = rng.integers(0, 256, (count, bands, height, width), dtype=np.uint8)
        return tiles, valid
    stats = normalizer.stats
    lo = np.asarray(stats.band_min_values, dtype=np.float64)[:bands].reshape(1, -1, 1, 1)
    hi = np.asarray(stats.band_max_values, dtype=np.float64)[:bands].reshape(1, -1, 1, 1)
    unit = rng.random((count, bands, height, width))
    return (lo + unit * (hi - lo)).astype(np.float32), valid


def check_export(definition: ModelDefinition, exported_emd: Path) -> float:
    """Compare the exported model's predictions with the PyTorch model's, both on the CPU.

    Returns:
        The largest difference: of a class probability (pixel and object classifiers) or of
        a box coordinate in pixels (detectors).

    Raises:
        InputError: when they differ by more than the tolerances (or in detection counts).
    """
    from rasterlearn.inference.backends.pytorch import TorchPredictor

    reference = TorchPredictor(definition, "cpu")
    exported = open_predictor(str(exported_emd), "cpu")
    info = reference.info
    sizes = [(info.tile_height, info.tile_width)]
    if definition.get("SupportsVariableTileSize"):
        sizes.append((info.tile_height + 32, info.tile_width + 32))
    worst = 0.0
    for i, (height, width) in enumerate(sizes):
        tiles, valid = random_tiles(reference, 2, height, width, seed=i)
        if info.task in (DETECTION, INSTANCE):
            worst = max(worst, _check_detections(reference, exported, tiles, valid))
            continue
        if info.task == PIXEL:
            want = reference.predict_pixels(tiles, valid)
            got = exported.predict_pixels(tiles, valid)
        else:
            want = reference.classify(tiles, valid)
            got = exported.classify(tiles, valid)
        difference = float(np.abs(want - got).max()) if want.shape == got.shape else np.inf
        if not difference <= PROBABILITY_TOLERANCE:
            raise InputError(
                f"the exported model does not reproduce the PyTorch model: class probabilities "
                f"differ by up to {difference:.3g} on {height} x {width} px tiles (tolerance "
                f"{PROBABILITY_TOLERANCE:g})",
                "use the PyTorch model, or try the other export format",
            )
        worst = max(worst, difference)
    return worst


def _check_detections(
    reference: Predictor, exported: Predictor, tiles: np.ndarray, valid: np.ndarray
) -> float:
    recorded = exported.definition.get("RasterlearnExport") or {}
    score = float(recorded.get("ScoreThreshold") or 0.05)
    arguments = {"threshold": score, "nms_overlap": 0.1}
    want = reference.predict_objects(tiles, valid, arguments)
    got = exported.predict_objects(tiles, valid, arguments)
    worst = 0.0
    for a, b in zip(want, got, strict=True):
        boxes, scores = detection_differences(a, b)
        if not (boxes <= BOX_TOLERANCE and scores <= SCORE_TOLERANCE):
            what = (
                f"{len(a)} detections against {len(b)}"
                if len(a) != len(b)
                else f"boxes differ by up to {boxes:.3g} px and scores by up to {scores:.3g}"
            )
            raise InputError(
                f"the exported model does not reproduce the PyTorch model: {what} on a "
                f"{tiles.shape[-2]} x {tiles.shape[-1]} px tile",
                "use the PyTorch model, or try the other export format",
            )
        worst = max(worst, boxes)
    return worst


def detection_differences(a: TileDetections, b: TileDetections) -> tuple[float, float]:
    """The largest box-coordinate and score differences between matched detections.

    Each detection of ``a`` (best first) is matched with the unmatched detection of ``b`` of
    the same class and nearest box, so that near-equal scores listed in another order match.

    Returns:
        ``(box difference in pixels, score difference)``; infinite when the counts differ.
    """
    if len(a) != len(b):
        return np.inf, np.inf
    free = np.ones(len(b), dtype=bool)
    box_worst = score_worst = 0.0
    for i in np.argsort(-a.scores, kind="stable"):
        candidates = np.flatnonzero(free & (b.classes == a.classes[i]))
        if not len(candidates):
            return np.inf, np.inf
        distance = np.abs(b.boxes[candidates] - a.boxes[i]).max(axis=1)
        distance = distance + np.abs(b.scores[candidates] - a.scores[i])
        j = candidates[int(np.argmin(distance))]
        free[j] = False
        box_worst = max(box_worst, float(np.abs(b.boxes[j] - a.boxes[i]).max()))
        score_worst = max(score_worst, float(abs(b.scores[j] - a.scores[i])))
    return box_worst, score_worst
