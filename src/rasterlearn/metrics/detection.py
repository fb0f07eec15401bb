"""Object-detection accuracy: IoU matching, precision/recall, all-point AP and COCO AP.

The AP definition (also written down in docs/accuracy.md): detections of one class from all
images are pooled and sorted by descending score (ties keep input order); each is a true
positive when its IoU with a not yet matched ground-truth box of the same class and image is
at least the threshold (the best-overlapping such box is taken), else a false positive.
Precision and recall are accumulated down the list; the precision envelope is made
monotonically non-increasing from the right and AP is the sum of recall steps times that
precision (VOC2010+ all-point AP, as arcgis.learn's ``compute_ap``).

COCO's AP (:func:`coco_ap`) uses the same matching and curves but reads the envelope at the 101
recall points 0, 0.01, ..., 1, as ``pycocotools.cocoeval.COCOeval.accumulate`` does.

Matching uses a spatial index over the reference boxes, so a whole map with many thousands of
objects is matched without an all-pairs IoU matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
"""IoU thresholds 0.50:0.05:0.95, the same floats as pycocotools' ``Params.iouThrs``."""

COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
"""Recall points 0:0.01:1, the same floats as pycocotools' ``Params.recThrs``."""


@dataclass(frozen=True)
class ClassAccuracy:
    """Detection accuracy of one class at one IoU threshold."""

    true_positives: int
    false_positives: int
    false_negatives: int
    average_precision: float
    recall_curve: np.ndarray
    precision_curve: np.ndarray

    @property
    def precision(self) -> float:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else 0.0

    @property
    def recall(self) -> float:
        n = self.true_positives + self.false_negatives
        return self.true_positives / n if n else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` (N, 4) and ``b`` (M, 4), both xmin, ymin, xmax, ymax."""
    a, b = _boxes(a), _boxes(b)
    return box_iou_pairs(a[:, None, :], b[None, :, :])


def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of boxes ``a[..., 4]`` and ``b[..., 4]`` (broadcast together).

    Boxes are xmin, ymin, xmax, ymax; pairs whose union has no area have IoU 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def rank_by_score(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` descending; equal scores keep their input order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64).ravel(), kind="stable")


def overlapping_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` of boxes ``a[i]`` and ``b[j]`` that touch or overlap.

    Found through an STRtree over ``b``; pairs are sorted by ``i`` then ``j``.
    """
    a, b = _boxes(a), _boxes(b)
    if not len(a) or not len(b):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    tree = shapely.STRtree(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]))
    envelopes = shapely.box(a[:, 0], a[:, 1], a[:, 2], a[:, 3])
    i, j = tree.query(envelopes, predicate="intersects")
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64)


def match_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    reference: np.ndarray,
    iou_thresholds: np.ndarray | list[float],
) -> np.ndarray:
    """Greedy matching of one class's detections to its reference boxes, in one image.

    Detections are taken by descending score (ties in input order). Each is a true positive
    at a threshold when an unmatched reference box overlaps it with IoU at least the threshold;
    the best-overlapping one (first in reference order among equals) is then matched. Every
    threshold is matched independently, in one pass.

    Args:
        boxes: Detected boxes ``(N, 4)``, xmin, ymin, xmax, ymax.
        scores: Detection scores ``(N,)``.
        reference: Reference boxes ``(M, 4)``.
        iou_thresholds: ``T`` IoU thresholds.

    Returns:
        Boolean ``(T, N)``: whether each detection (in input order) is a true positive.
    """
    boxes, reference = _boxes(boxes), _boxes(reference)
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).ravel()
    tp = np.zeros((len(thresholds), len(boxes)), dtype=bool)
    det, ref = overlapping_pairs(boxes, reference)
    if not det.size:
        return tp
    ious = box_iou_pairs(boxes[det], reference[ref])
    starts = np.searchsorted(det, np.arange(len(boxes) + 1))
    matched = np.zeros((len(thresholds), len(reference)), dtype=bool)
    rows = np.arange(len(thresholds))
    for k in rank_by_score(np.asarray(scores).ravel()):
        lo, hi = starts[k], starts[k + 1]
        if lo == hi:
            continue
        cand, iou = ref[lo:hi], ious[lo:hi]
        ok = ~matched[:, cand] & (iou[None, :] >= thresholds[:, None])
        if not ok.any():
            continue
        best = np.argmax(np.where(ok, iou[None, :], -1.0), axis=1)
        hit = ok[rows, best]
        matched[rows[hit], cand[best[hit]]] = True
        tp[hit, k] = True
    return tp


def precision_recall(tp: np.ndarray, n_reference: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative ``(recall, precision)`` down a ranked list of true-positive flags."""
    tp = np.asarray(tp, dtype=np.float64).ravel()
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1 - tp)
    recall = ctp / n_reference if n_reference else np.zeros_like(ctp)
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    return recall, precision


def all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope at each recall step (VOC2010+ all-point AP)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def coco_ap(ranked_tp: np.ndarray, n_reference: int) -> float:
    """COCO's 101-point interpolated AP of a ranked list of true-positive flags.

    As ``COCOeval.accumulate``: precision ``tp / (tp + fp + eps)``, made non-increasing from the
    right, read at the first rank reaching each recall point 0, 0.01, ..., 1 (0 past the last
    rank), averaged over the 101 points.

    Args:
        ranked_tp: True-positive flags in descending score order.
        n_reference: Number of reference boxes (must be positive).
    """
    tp = np.asarray(ranked_tp, dtype=np.float64).ravel()
    tps = np.cumsum(tp)
    fps = np.cumsum(1 - tp)
    recall = tps / n_reference
    precision = tps / (fps + tps + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, COCO_RECALL_THRESHOLDS, side="left")
    q = np.zeros(len(COCO_RECALL_THRESHOLDS))
    inside = idx < len(precision)
    q[inside] = precision[idx[inside]]
    return float(q.mean())


def class_accuracy(
    detections: list[tuple[np.ndarray, np.ndarray]],
    ground_truth: list[np.ndarray],
    iou_threshold: float = 0.5,
) -> ClassAccuracy:
    """Accuracy of one class over several images.

    Args:
        detections: Per image, ``(boxes (N, 4), scores (N,))`` of this class.
        ground_truth: Per image, reference boxes ``(M, 4)`` of this class.
        iou_threshold: Minimum IoU for a true positive.
    """
    all_scores, all_tp = [], []
    for (boxes, scores), gt in zip(detections, ground_truth, strict=True):
        scores = np.asarray(scores, dtype=np.float64).ravel()
        all_scores.append(scores)
        all_tp.append(match_detections(boxes, scores, gt, [iou_threshold])[0])
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    tp = tp[rank_by_score(scores)]
    n_gt = sum(len(_boxes(g)) for g in ground_truth)
    recall, precision = precision_recall(tp, n_gt)
    n_tp = int(tp.sum())
    return ClassAccuracy(
        true_positives=n_tp,
        false_positives=len(tp) - n_tp,
        false_negatives=n_gt - n_tp,
        average_precision=all_point_ap(recall, precision) if n_gt else 0.0,
        recall_curve=recall,
        precision_curve=precision,
    )


def best_f1_threshold(
    detections: list[list[tuple[np.ndarray, np.ndarray]]],
    ground_truth: list[list[np.ndarray]],
    iou_threshold: float = 0.5,
) -> tuple[float, float] | None:
    """The score threshold that gives the best F1 over all classes together.

    Detections of every class are matched as for :func:`class_accuracy`, pooled and ranked by
    score; keeping the ``k`` best gives ``F1 = 2 TP_k / (k + references)``. The threshold is
    the lowest score kept at the best ``k``.

    Args:
        detections: Per class, per image ``(boxes (N, 4), scores (N,))``.
        ground_truth: Per class, per image reference boxes ``(M, 4)``.
        iou_threshold: Minimum IoU for a true positive.

    Returns:
        ``(threshold, F1)``, or None when there are no detections or no references.
    """
    scores, hits, references = [], [], 0
    for class_detections, class_truth in zip(detections, ground_truth, strict=True):
        for (boxes, image_scores), truth in zip(class_detections, class_truth, strict=True):
            image_scores = np.asarray(image_scores, dtype=np.float64).ravel()
            scores.append(image_scores)
            hits.append(match_detections(boxes, image_scores, truth, [iou_threshold])[0])
            references += len(_boxes(truth))
    if not references or not sum(len(s) for s in scores):
        return None
    pooled = np.concatenate(scores)
    order = rank_by_score(pooled)
    true_positives = np.cumsum(np.concatenate(hits)[order])
    f1 = 2 * true_positives / (np.arange(1, len(order) + 1) + references)
    best = int(np.argmax(f1))
    return float(pooled[order][best]), float(f1[best])
