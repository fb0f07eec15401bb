"""Object-detection accuracy: IoU matching, precision/recall and all-point average precision.

The AP definition (also written down in docs/accuracy.md): detections of one class from all
images are pooled and sorted by descending score (ties keep input order); each is a true
positive when its IoU with a not yet matched ground-truth box of the same class and image is
at least the threshold (the best-overlapping such box is taken), else a false positive.
Precision and recall are accumulated down the list; the precision envelope is made
monotonically non-increasing from the right and AP is the sum of recall steps times that
precision (VOC2010+ all-point AP, as arcgis.learn's ``compute_ap``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` (N, 4) and ``b`` (M, 4), both xmin, ymin, xmax, ymax."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope at each recall step (VOC2010+ all-point AP)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


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
    records = []  # (score, image, detection index)
    for image, (_, scores) in enumerate(detections):
        records.extend((float(s), image, i) for i, s in enumerate(np.asarray(scores).ravel()))
    records.sort(key=lambda r: -r[0])
    n_gt = sum(len(np.asarray(g).reshape(-1, 4)) for g in ground_truth)
    ious = [box_iou(d[0], g) for d, g in zip(detections, ground_truth, strict=True)]
    matched = [np.zeros(iou.shape[1], dtype=bool) for iou in ious]
    tp = np.zeros(len(records))
    for k, (_, image, i) in enumerate(records):
        iou = ious[image][i] if ious[image].size else np.zeros(0)
        candidates = np.where(~matched[image] & (iou >= iou_threshold))[0]
        if candidates.size:
            best = candidates[np.argmax(iou[candidates])]
            matched[image][best] = True
            tp[k] = 1
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1 - tp)
    recall = ctp / n_gt if n_gt else np.zeros_like(ctp)
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    n_tp = int(tp.sum())
    return ClassAccuracy(
        true_positives=n_tp,
        false_positives=len(records) - n_tp,
        false_negatives=n_gt - n_tp,
        average_precision=all_point_ap(recall, precision) if n_gt else 0.0,
        recall_curve=recall,
        precision_curve=precision,
    )
