"""Detection and pixel metrics against small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rasterlearn.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    COCO_RECALL_THRESHOLDS,
    all_point_ap,
    best_f1_threshold,
    box_iou,
    box_iou_pairs,
    class_accuracy,
    coco_ap,
    match_detections,
)
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


def _dense_greedy(boxes, scores, reference, threshold):
    """Greedy matching written out with a full IoU matrix (the independent check)."""
    ious = np.zeros((len(boxes), len(reference)))
    for i, a in enumerate(boxes):
        for j, b in enumerate(reference):
            w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
            ious[i, j] = w * h / union if union > 0 else 0.0
    matched = np.zeros(len(reference), dtype=bool)
    tp = np.zeros(len(boxes), dtype=bool)
    for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
        best, best_iou = -1, -1.0
        for j in range(len(reference)):
            if not matched[j] and ious[i, j] >= threshold and ious[i, j] > best_iou:
                best, best_iou = j, ious[i, j]
        if best >= 0:
            matched[best] = True
            tp[i] = True
    return tp


def _random_boxes(rng: np.random.Generator, n: int, extent: float = 100.0) -> np.ndarray:
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(2, 15, (n, 2))
    return np.hstack([xy, xy + wh])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_detections_agrees_with_dense_greedy(seed: int):
    rng = np.random.default_rng(seed)
    reference = _random_boxes(rng, 60)
    near = reference[rng.choice(60, 45)] + rng.normal(0, 1.5, (45, 4))
    near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 0.5)
    boxes = np.vstack([near, _random_boxes(rng, 20)])
    scores = rng.uniform(0, 1, len(boxes))
    thresholds = [0.3, 0.5, 0.75, 0.9]
    tp = match_detections(boxes, scores, reference, thresholds)
    assert tp.shape == (4, len(boxes))
    for row, threshold in zip(tp, thresholds, strict=True):
        np.testing.assert_array_equal(row, _dense_greedy(boxes, scores, reference, threshold))
    # the case is not trivial: some but not all detections match at 0.5
    assert 0 < tp[1].sum() < len(boxes)


def test_match_detections_without_boxes():
    assert match_detections(np.zeros((0, 4)), np.zeros(0), np.ones((1, 4)), [0.5]).shape == (1, 0)
    tp = match_detections(np.array([[0, 0, 1, 1]]), np.ones(1), np.zeros((0, 4)), [0.5])
    np.testing.assert_array_equal(tp, [[False]])


def test_box_iou_pairs_is_the_diagonal_of_box_iou():
    rng = np.random.default_rng(3)
    a, b = _random_boxes(rng, 10), _random_boxes(rng, 10)
    np.testing.assert_allclose(box_iou_pairs(a, b), np.diag(box_iou(a, b)), rtol=0, atol=0)


def test_coco_ap_by_hand():
    # ranked TP, FP, TP with 2 references: recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # Envelope from the right: 1, 2/3, 2/3. Recall points 0..0.50 (51 points) first reach
    # recall at rank 0 -> 1; points 0.51..1.00 (50 points) reach it at rank 2 -> 2/3.
    eps = np.spacing(1)
    expected = (51 * (1 / (1 + eps)) + 50 * (2 / (3 + eps))) / 101
    assert coco_ap(np.array([1, 0, 1]), 2) == pytest.approx(expected, abs=1e-15)
    # never reaching full recall: points past recall 1/2 score 0
    assert coco_ap(np.array([1, 0]), 2) == pytest.approx(51 / 101, abs=1e-12)


def test_coco_thresholds_are_cocos():
    np.testing.assert_allclose(COCO_IOU_THRESHOLDS, np.arange(10) * 0.05 + 0.5, atol=1e-12)
    assert len(COCO_RECALL_THRESHOLDS) == 101 and COCO_RECALL_THRESHOLDS[-1] == 1.0


def test_best_f1_threshold_keeps_the_detections_that_pay() -> None:
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=float)
    # two right detections scored 0.9 and 0.6, a wrong one at 0.7, the third right at 0.2
    boxes = np.array([[0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 30, 30], [40, 40, 50, 50]])
    scores = np.array([0.9, 0.7, 0.6, 0.2])
    # k=1: F1 2/4; k=2: 2/5; k=3: 4/6; k=4: 6/7 -> keep all four, down to 0.2
    threshold, f1 = best_f1_threshold([[(boxes, scores)]], [[truth]])
    assert threshold == 0.2 and f1 == pytest.approx(6 / 7)
    # with the third truth box gone the fourth detection is wrong: stop at 0.6
    threshold, f1 = best_f1_threshold([[(boxes, scores)]], [[truth[:2]]])
    assert threshold == 0.6 and f1 == pytest.approx(4 / 5)
    # classes are pooled: a second class's right detection at 0.65 is kept too
    other = (np.array([[0, 0, 5, 5]]), np.array([0.65]))
    threshold, f1 = best_f1_threshold(
        [[(boxes, scores)], [other]], [[truth[:2]], [np.array([[0, 0, 5, 5]])]]
    )
    assert threshold == 0.6 and f1 == pytest.approx(6 / 7)
    assert best_f1_threshold([[(boxes[:0], scores[:0])]], [[truth]]) is None
