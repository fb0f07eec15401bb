"""Test-time augmentation: predict on flipped and rotated copies of tiles and merge.

MAP_SPACE models see all 8 dihedral transforms of square tiles (4 rotations x flip; the 4
flips only for tiles that are not square); PIXEL_SPACE models, whose images have an up,
see the identity and a horizontal flip only. Pixel probabilities are merged by the
``merge_policy`` (mean, max or min); detections by weighted box fusion.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rasterlearn.inference.predictors import Predictor, TileDetections
from rasterlearn.metrics.detection import box_iou

Transform = tuple[int, bool]
"""Counter-clockwise quarter turns after an optional horizontal flip."""


def transforms(image_space: str, height: int, width: int) -> list[Transform]:
    """The transforms used for tiles of a shape in a model's image space."""
    if image_space.upper() == "PIXEL_SPACE":
        return [(0, False), (0, True)]
    turns = (0, 1, 2, 3) if height == width else (0, 2)
    return [(k, flip) for flip in (False, True) for k in turns]


def apply(array: np.ndarray, t: Transform) -> np.ndarray:
    """Transform the last two (row, column) axes of an array."""
    k, flip = t
    if flip:
        array = array[..., ::-1]
    return np.ascontiguousarray(np.rot90(array, k, axes=(-2, -1)))


def undo(array: np.ndarray, t: Transform) -> np.ndarray:
    """The inverse of :func:`apply`."""
    k, flip = t
    array = np.rot90(array, -k, axes=(-2, -1))
    if flip:
        array = array[..., ::-1]
    return np.ascontiguousarray(array)


def undo_boxes(boxes: np.ndarray, t: Transform, height: int, width: int) -> np.ndarray:
    """Boxes ``(M, 4)`` found in a transformed tile, in the original tile's pixels."""
    k, flip = t
    corners = [(boxes[:, 0], boxes[:, 1]), (boxes[:, 2], boxes[:, 3])]
    out = []
    for x, y in corners:
        for i in range(k, 0, -1):
            w = width if (i - 1) % 2 == 0 else height  # columns before the i-th turn
            x, y = w - y, x
        if flip:
            x = width - x
        out.append((x, y))
    (x0, y0), (x1, y1) = out
    return np.stack(
        [np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)], axis=1
    )


def predict_pixels(
    predictor: Predictor, tiles: np.ndarray, valid: np.ndarray, image_space: str, policy: str
) -> np.ndarray:
    """Class probabilities merged over the transforms (``mean``, ``max`` or ``min``)."""
    merged = None
    ts = transforms(image_space, tiles.shape[-2], tiles.shape[-1])
    for t in ts:
        probs = undo(predictor.predict_pixels(apply(tiles, t), apply(valid, t)), t)
        if merged is None:
            merged = probs.astype(np.float32)
        elif policy == "max":
            np.maximum(merged, probs, out=merged)
        elif policy == "min":
            np.minimum(merged, probs, out=merged)
        else:
            merged += probs
    assert merged is not None
    return merged / len(ts) if policy == "mean" else merged


def predict_objects(
    predictor: Predictor,
    tiles: np.ndarray,
    valid: np.ndarray,
    arguments: dict[str, Any],
    image_space: str,
) -> list[TileDetections]:
    """Detections found on every transform of the tiles, fused per tile."""
    height, width = tiles.shape[-2:]
    ts = transforms(image_space, height, width)
    per_tile: list[list[TileDetections]] = [[] for _ in range(len(tiles))]
    for t in ts:
        found = predictor.predict_objects(apply(tiles, t), apply(valid, t), arguments)
        for i, dets in enumerate(found):
            dets.boxes = undo_boxes(dets.boxes, t, height, width)
            if dets.shapes is not None:
                dets.shapes = [None] * len(dets)  # outlines are not fused; boxes are
            per_tile[i].append(dets)
    return [fuse(d, float(arguments.get("nms_overlap", 0.1)), len(ts)) for d in per_tile]


def fuse(found: list[TileDetections], iou: float, runs: int) -> TileDetections:
    """Weighted box fusion: clusters of same-class boxes overlapping more than ``iou``
    become one box, their coordinates weighted by confidence; the confidence is the
    cluster's summed confidence over the number of runs (a box found in every run keeps its
    confidence, one found once is discounted)."""
    boxes = np.concatenate([d.boxes for d in found]) if found else np.zeros((0, 4))
    if not len(boxes):
        return TileDetections.empty()
    scores = np.concatenate([d.scores for d in found])
    classes = np.concatenate([d.classes for d in found])
    order = np.argsort(-scores, kind="stable")
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    overlap = box_iou(boxes, boxes) > iou
    overlap &= classes[:, None] == classes[None, :]
    taken = np.zeros(len(boxes), dtype=bool)
    fused_boxes, fused_scores, fused_classes = [], [], []
    for i in range(len(boxes)):
        if taken[i]:
            continue
        members = np.flatnonzero(overlap[i] & ~taken)
        taken[members] = True
        w = scores[members]
        fused_boxes.append((boxes[members] * w[:, None]).sum(axis=0) / w.sum())
        fused_scores.append(min(1.0, w.sum() / runs))
        fused_classes.append(classes[i])
    return TileDetections(
        np.array(fused_boxes), np.array(fused_scores), np.array(fused_classes, dtype=np.int64)
    )


def classify(
    predictor: Predictor, chips: np.ndarray, valid: np.ndarray, image_space: str
) -> np.ndarray:
    """Class probabilities of chips averaged over the transforms."""
    ts = transforms(image_space, chips.shape[-2], chips.shape[-1])
    total = sum(predictor.classify(apply(chips, t), apply(valid, t)) for t in ts)
    return np.asarray(total, dtype=np.float32) / len(ts)
