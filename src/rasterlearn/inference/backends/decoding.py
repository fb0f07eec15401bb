"""Output decoding shared by the backends: raw model outputs to probabilities and detections.

The PyTorch, TorchScript and ONNX backends run the same network in different runtimes; what
comes out (logits, torchvision-style detection dicts, or the tuples an exported detector
returns) is decoded here, by the same code for all three, so that their results agree:

* classifiers: logits to class probabilities (:func:`pixel_probabilities`,
  :func:`class_probabilities`, sigmoid per class when :func:`is_multi_label`);
* detectors: outputs to ``{boxes, scores, labels[, masks]}`` (:func:`detection_dict`),
  non-maximum suppression for graphs exported without it (:func:`suppress`), then
  :class:`~rasterlearn.inference.predictors.TileDetections` with mask outlines
  (:func:`tile_detections`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import rasterio.features
import shapely
import torch
import torchvision

from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.predictors import TileDetections

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "masks")
"""The outputs of an exported detector, in the order ``rasterlearn model export`` writes them."""

MASK_THRESHOLD = 0.5
"""Mask probability above which a pixel belongs to an instance."""

MAX_DETECTIONS_PER_TILE = 500

DEFAULT_NMS_OVERLAP = 0.1


def is_multi_label(definition: ModelDefinition, default: bool) -> bool:
    """Whether a classifier gives several labels per object (sigmoid per class)."""
    params = definition.get("ModelParameters") or {}
    if "multi_label" in params:
        return bool(params["multi_label"])
    return default or definition.get("MetaDataMode") == "MultiLabeled_Tiles"


def pixel_probabilities(logits: Any) -> np.ndarray:
    """Per-pixel class probabilities ``(N, K + 1, H, W)`` (softmax over the channels)."""
    return torch.as_tensor(logits).float().softmax(dim=1).cpu().numpy()


def class_probabilities(logits: Any, multi_label: bool) -> np.ndarray:
    """Per-chip class probabilities ``(N, K)``: softmax, or sigmoid per class when multi-label."""
    logits = torch.as_tensor(logits).float()
    probs = logits.sigmoid() if multi_label else logits.softmax(dim=1)
    return probs.cpu().numpy()


def dense_output(out: Any) -> torch.Tensor:
    """The logits of a pixel or object classifier's output (tensor, ``{"out": ...}``, tuple)."""
    if isinstance(out, Mapping):
        out = out["out"] if "out" in out else next(iter(out.values()))
    if isinstance(out, list | tuple):
        out = out[0]
    return _as_tensor(out)


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


def tile_detections(
    out: dict[str, torch.Tensor], values: np.ndarray, threshold: float, with_masks: bool
) -> TileDetections:
    """One tile's detections from a ``{boxes, scores, labels[, masks]}`` dict.

    Args:
        out: The detector's output for the tile (labels 1-based, in ``Classes`` order).
        values: The class value of each label (the ``.emd``'s ``Classes`` ``Value``).
        threshold: The lowest score kept.
        with_masks: Outline the masks (instance models) instead of keeping the boxes.
    """
    scores = out["scores"].float().cpu().numpy().astype(np.float64)
    keep = scores >= threshold
    boxes = out["boxes"].float().cpu().numpy().astype(np.float64)[keep]
    labels = out["labels"].cpu().numpy().astype(np.int64)[keep]
    shapes = None
    if with_masks and "masks" in out:
        masks = out["masks"][keep].float().cpu().numpy()
        shapes = [mask_outline(m[0] > MASK_THRESHOLD) for m in masks]
    return TileDetections(boxes, scores[keep], values[labels - 1], shapes)


def mask_outline(mask: np.ndarray) -> shapely.Geometry | None:
    """The polygon(s) of a boolean mask in pixel coordinates, or None for an empty mask."""
    if not mask.any():
        return None
    parts = [
        shapely.geometry.shape(geom)
        for geom, value in rasterio.features.shapes(mask.astype(np.uint8), mask=mask)
        if value == 1
    ]
    return shapely.union_all(parts) if len(parts) > 1 else parts[0]
