"""Detection and pixel metrics against small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rasterlearn.metrics.detection import all_point_ap, box_iou, class_accuracy
from rasterlearn.metrics.pixels import PixelAccuracy, confusion_matrix


def test_box_iou_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 1.0]])


def test_class_accuracy_by_hand():
    # Image 0: two references; detections 0.9 (hit), 0.8 (miss), 0.7 (hit).
    # Image 1: one reference never found; one false detection at 0.6.
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 5, 5]])]
    det = [
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 30, 30]]), np.array([0.9, 0.8, 0.7])),
        (np.array([[40, 40, 45, 45]]), np.array([0.6])),
    ]
    acc = class_accuracy(det, gt, iou_threshold=0.5)
    assert (acc.true_positives, acc.false_positives, acc.false_negatives) == (2, 2, 1)
    # ranked: TP, FP, TP, FP -> recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2
    # envelope at the recall steps: 1 (0 -> 1/3) and 2/3 (1/3 -> 2/3)
    assert acc.average_precision == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert acc.precision == pytest.approx(0.5)
    assert acc.recall == pytest.approx(2 / 3)
    assert acc.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_a_reference_is_matched_once():
    gt = [np.array([[0, 0, 10, 10]])]
    det = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([0.9, 0.8]))]
    acc = class_accuracy(det, gt)
    assert (acc.true_positives, acc.false_positives, acc.false_negatives) == (1, 1, 0)
    assert acc.average_precision == pytest.approx(1.0)


def test_all_point_ap_of_a_perfect_ranking():
    assert all_point_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)


def test_pixel_accuracy_by_hand():
    ref = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    m = confusion_matrix(ref, pred, 3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    acc = PixelAccuracy(m)
    assert acc.overall == pytest.approx(4 / 6)
    np.testing.assert_allclose(acc.precision, [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(acc.recall, [1 / 2, 1, 1 / 2])
    np.testing.assert_allclose(acc.iou, [1 / 3, 2 / 3, 1 / 2])
    pe = (2 * 2 + 3 * 2 + 1 * 2) / 36
    assert acc.kappa == pytest.approx((4 / 6 - pe) / (1 - pe))
