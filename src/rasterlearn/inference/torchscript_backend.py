"""The TorchScript backend: a model saved with ``torch.jit.save`` (``ModelFile`` ``.pt``/``.ts``).

A TorchScript file holds the network and its weights; the ``.emd`` beside it gives the tile
size, bands, classes and normalisation, so the pre- and post-processing are exactly those of
the PyTorch backend (:class:`~rasterlearn.inference.torch_backend.TorchPredictor`); only the
forward pass differs.

Accepted modules:

* pixel classifiers ``(N, C, H, W) -> logits (N, K + 1, H, W)`` and object classifiers
  ``(N, C, H, W) -> logits (N, K)`` (a dict with ``"out"`` or a tuple whose first item is the
  logits is accepted too);
* detectors exported by ``rasterlearn model export``: one image ``(C, H, W)`` in, a tuple
  ``(boxes, scores, labels[, masks])`` out, the names stored in the file;
* scripted torchvision detectors: a list of images in, a list of
  ``{boxes, labels, scores[, masks]}`` dicts out, or the ``(losses, detections)`` tuple that
  scripted torchvision detectors return.

Detectors exported by rasterlearn carry no non-maximum suppression of their own; it is
applied here with the ``nms_overlap`` argument (:func:`suppress`), so the results equal the
PyTorch model's for any argument values.

Trust: a TorchScript file is a program (TorchScript code and weights) that
``torch.jit.load`` runs; load only models from sources you trust.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision

from rasterlearn.data.normalization import Normalizer
from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.predictors import DETECTION, INSTANCE
from rasterlearn.inference.torch_backend import MAX_DETECTIONS_PER_TILE, TorchPredictor

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "masks")
"""The outputs of an exported detector, in the order ``rasterlearn model export`` writes them."""

OUTPUT_NAMES_FILE = "rasterlearn_outputs.txt"
"""Extra file of an exported TorchScript detector naming its outputs (comma-separated)."""

DEFAULT_NMS_OVERLAP = 0.1


def model_file(definition: ModelDefinition, kind: str) -> Path:
    """The existing file the definition's ``ModelFile`` names.

    Raises:
        InputError: when the key is absent or the file is missing.
    """
    path = definition.resolve("ModelFile")
    if path is None:
        raise InputError(
            f"model definition {definition.path or ''} names no ModelFile",
            f"give the {kind} file in the .emd's ModelFile",
        )
    if not path.is_file():
        raise InputError(f"{kind} model file {path} does not exist", "check the .emd's ModelFile")
    return path


def multi_label(definition: ModelDefinition, default: bool) -> bool:
    """Whether a classifier gives several labels per object (sigmoid per class)."""
    params = definition.get("ModelParameters") or {}
    if "multi_label" in params:
        return bool(params["multi_label"])
    return default or definition.get("MetaDataMode") == "MultiLabeled_Tiles"


def _as_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def detection_dict(
    outputs: Mapping[str, Any] | Sequence[Any], names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """The ``{boxes, scores, labels[, masks]}`` of one image from an exported detector's outputs.

    Args:
        outputs: A dict keyed like torchvision's, or a sequence of arrays/tensors.
        names: The name of each item of a sequence (``boxes``, ``scores``, ``labels``,
            ``masks``); without names, items are recognised by shape and type: ``(M, 4)``
            boxes, integer labels, float scores, ``(M, 1, H, W)`` masks.

    Returns:
        Tensors with the batch dimension of one removed where a model adds it.

    Raises:
        InputError: when boxes, scores and labels cannot be told apart.
    """
    if isinstance(outputs, Mapping):
        named = {str(k): _as_tensor(v) for k, v in outputs.items()}
    else:
        tensors = [_as_tensor(v) for v in outputs]
        if names is not None and all(n in DETECTION_OUTPUTS for n in names):
            named = dict(zip(names, tensors, strict=False))
        else:
            named = _recognise(tensors)
    for key, ndim in (("boxes", 2), ("scores", 1), ("labels", 1), ("masks", 4)):
        value = named.get(key)
        if value is not None and value.ndim == ndim + 1 and value.shape[0] == 1:
            named[key] = value[0]
    missing = [k for k in ("boxes", "scores", "labels") if k not in named]
    if missing:
        raise InputError(
            f"the detector's outputs lack {', '.join(missing)} (it gave {', '.join(named)})",
            "export the model with rasterlearn model export, or name its outputs "
            "boxes, scores, labels[, masks]",
        )
    out = {
        "boxes": named["boxes"].float().reshape(-1, 4),
        "scores": named["scores"].float().reshape(-1),
        "labels": named["labels"].long().reshape(-1),
    }
    if "masks" in named:
        out["masks"] = named["masks"]
    return out


def _recognise(tensors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Name unnamed detector outputs by their shape and type."""
    named: dict[str, torch.Tensor] = {}
    floats_1d = []
    for t in tensors:
        squeezed = t[0] if t.ndim >= 2 and t.shape[0] == 1 and t.ndim != 2 else t
        if squeezed.ndim == 2 and squeezed.shape[-1] == 4 and "boxes" not in named:
            named["boxes"] = squeezed
        elif squeezed.ndim == 4 and "masks" not in named:
            named["masks"] = squeezed
        elif squeezed.ndim == 1 and not squeezed.is_floating_point() and "labels" not in named:
            named["labels"] = squeezed
        elif squeezed.ndim == 1:
            floats_1d.append(squeezed)
    if len(floats_1d) == 1:
        named["scores"] = floats_1d[0]
    elif len(floats_1d) == 2 and "labels" not in named:  # torchvision order: labels, scores
        named["labels"], named["scores"] = floats_1d
    return named


def suppress(
    detections: dict[str, torch.Tensor], nms_overlap: float, limit: int = MAX_DETECTIONS_PER_TILE
) -> dict[str, torch.Tensor]:
    """Per-class non-maximum suppression, then the ``limit`` best, as torchvision's detectors.

    The detections are assumed sorted by score (as torchvision returns them); the kept ones
    come out sorted by score.
    """
    if detections["scores"].numel() == 0:
        return detections
    keep = torchvision.ops.batched_nms(
        detections["boxes"].float(),
        detections["scores"].float(),
        detections["labels"],
        float(nms_overlap),
    )[:limit]
    return {key: value[keep] for key, value in detections.items()}


def _unwrap_detections(out: Any) -> Any:
    """The detections of a scripted torchvision detector, which returns ``(losses, dets)``."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict):
        return out[1]
    return out


def dense_output(out: Any) -> torch.Tensor:
    """The logits of a pixel or object classifier's output (tensor, ``{"out": ...}``, tuple)."""
    if isinstance(out, Mapping):
        out = out["out"] if "out" in out else next(iter(out.values()))
    if isinstance(out, list | tuple):
        out = out[0]
    return _as_tensor(out)


class TorchScriptPredictor(TorchPredictor):
    """A TorchScript model (``.pt``/``.ts``) with the ``.emd``'s pre- and post-processing.

    Args:
        definition: The model definition; its ``ModelFile`` is the TorchScript file.
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.

    Raises:
        InputError: for a missing or damaged TorchScript file.
    """

    def _load(self, definition: ModelDefinition) -> None:
        path = model_file(definition, "TorchScript")
        extra = {OUTPUT_NAMES_FILE: ""}
        try:
            with warnings.catch_warnings():  # torch.jit.load is deprecated for torch.export
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(str(path), self.device, _extra_files=extra)
        except Exception as err:  # torch raises many kinds for a damaged file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"cannot load TorchScript model {path}: {first}",
                "give a file saved with torch.jit.save (or rasterlearn model export)",
            ) from None
        self.model.eval()
        text = extra[OUTPUT_NAMES_FILE]
        text = text.decode() if isinstance(text, bytes) else str(text)
        self.output_names = [n.strip() for n in text.split(",") if n.strip()] or None
        self.normalizer = Normalizer.from_emd(definition.to_dict())
        self.multi_label = multi_label(definition, self.info.multi_label)
        self.nms_overlap = DEFAULT_NMS_OVERLAP
        self.takes_list = _takes_list(self.model)
        if self.device.type == "cuda" and self.info.task in (DETECTION, INSTANCE):
            self._fall_back_to_cpu(path)

    def _fall_back_to_cpu(self, path: Path) -> None:
        """Run a traced detector on the CPU when its graph cannot run on the GPU.

        Tracing records the devices of tensors created inside the model (anchors, image
        sizes) as constants, so a detector traced on the CPU may fail on a GPU.
        """
        bands = len(self.info.extract_bands) or 3
        image = torch.zeros(bands, self.info.tile_height, self.info.tile_width)
        try:
            self._forward(image[None].to(self.device))
        except RuntimeError:
            self.device = torch.device("cpu")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(str(path), self.device).eval()

    def _configure_postprocess(self, threshold: float, nms_overlap: float) -> None:
        self.nms_overlap = nms_overlap
        super()._configure_postprocess(threshold, nms_overlap)

    def _forward(self, x: torch.Tensor) -> Any:
        with torch.inference_mode():
            if self.info.task not in (DETECTION, INSTANCE):
                return dense_output(self.model(x))
            if self.takes_list:
                outputs = _unwrap_detections(self.model(list(x)))
                found = [detection_dict(o) for o in outputs]
            else:
                found = [detection_dict(self.model(image), self.output_names) for image in x]
            return [suppress(d, self.nms_overlap) for d in found]


def _takes_list(module: Any) -> bool:
    """Whether a TorchScript module's forward takes a list of tensors (torchvision detectors)."""
    try:
        args = module.forward.schema.arguments
    except (AttributeError, RuntimeError):
        return False
    return len(args) > 1 and "List" in str(args[1].type)
