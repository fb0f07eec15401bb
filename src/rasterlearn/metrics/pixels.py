"""Pixel-classification accuracy from a confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = pixels of reference class index ``i`` predicted as ``j``."""
    ref = np.asarray(reference, dtype=np.int64).ravel()
    pred = np.asarray(predicted, dtype=np.int64).ravel()
    keep = (ref >= 0) & (ref < num_classes) & (pred >= 0) & (pred < num_classes)
    flat = ref[keep] * num_classes + pred[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class PixelAccuracy:
    """Accuracy figures of a confusion matrix (rows = reference, columns = predicted)."""

    matrix: np.ndarray

    @property
    def overall(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 0.0

    @property
    def kappa(self) -> float:
        total = self.matrix.sum()
        if not total:
            return 0.0
        expected = float((self.matrix.sum(0) * self.matrix.sum(1)).sum()) / total**2
        return (self.overall - expected) / (1 - expected) if expected < 1 else 0.0

    def _ratio(self, axis: int) -> np.ndarray:
        totals = self.matrix.sum(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(totals > 0, np.diag(self.matrix) / totals, 0.0)

    @property
    def precision(self) -> np.ndarray:
        return self._ratio(0)

    @property
    def recall(self) -> np.ndarray:
        return self._ratio(1)

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)

    @property
    def iou(self) -> np.ndarray:
        tp = np.diag(self.matrix)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, 0.0)
