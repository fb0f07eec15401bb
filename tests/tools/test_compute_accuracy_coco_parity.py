"""The accuracy tool against pycocotools (the reference implementation of COCO's evaluation).

pycocotools gives, independently of our code: the matches of every detection at every IoU
threshold, and COCO's 101-point AP. From its matches at IoU 0.5 the all-point (VOC) AP of the
table is recomputed here with its textbook formula, and its COCO mAP is compared with the one the
tool reports.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rasterlearn.tools.compute_accuracy_for_object_detection import (
    compute_accuracy_for_object_detection,
)

MAX_DETS = 100  # COCO keeps this many detections per class and image: stay below it


def coco_evaluation(
    gt_boxes: np.ndarray,
    gt_classes: list[str],
    boxes: np.ndarray,
    classes: list[str],
    scores: np.ndarray,
    origin: tuple[float, float] = (0.0, 0.0),
) -> tuple[COCOeval, list[str]]:
    """pycocotools' evaluation of one image; boxes xmin, ymin, xmax, ymax."""
    names = sorted(set(gt_classes) | set(classes))
    assert max(classes.count(n) for n in names) <= MAX_DETS
    cat = {n: i + 1 for i, n in enumerate(names)}

    def xywh(b: np.ndarray) -> list[float]:
        return [b[0] - origin[0], b[1] - origin[1], b[2] - b[0], b[3] - b[1]]

    dataset = {
        "images": [{"id": 1, "width": 1, "height": 1}],
        "categories": [{"id": cat[n], "name": n} for n in names],
        "annotations": [
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": cat[c],
                "bbox": xywh(b),
                "area": float((b[2] - b[0]) * (b[3] - b[1])),
                "iscrowd": 0,
            }
            for k, (b, c) in enumerate(zip(gt_boxes, gt_classes, strict=True))
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        results = truth.loadRes(
            [
                {"image_id": 1, "category_id": cat[c], "bbox": xywh(b), "score": float(s)}
                for b, c, s in zip(boxes, classes, scores, strict=True)
            ]
        )
        evaluation = COCOeval(truth, results, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation, names


def voc_ap_from_coco_matches(evaluation: COCOeval, category: int, n_gt: int) -> float:
    """All-point AP = (1 / n_gt) * sum over true positives k of max precision at ranks >= k."""
    entry = next(
        e
        for e in evaluation.evalImgs
        if e is not None and e["category_id"] == category and e["aRng"] == [0, 1e10]
    )
    tp = entry["dtMatches"][0] > 0  # IoU 0.5; detections already in COCO's score order
    precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    return sum(precision[k:].max() for k in range(len(tp)) if tp[k]) / n_gt


def compare(
    tmp_path: Path,
    write_boxes: Callable[..., Path],
    gt_boxes: np.ndarray,
    gt_classes: list[str],
    boxes: np.ndarray,
    classes: list[str],
    scores: np.ndarray,
    crs: str | None,
    origin: tuple[float, float] = (0.0, 0.0),
) -> None:
    gt = write_boxes(tmp_path / "gt.gpkg", gt_boxes, crs=crs, Class=gt_classes)
    det = write_boxes(tmp_path / "det.gpkg", boxes, crs=crs, Class=classes, Confidence=scores)
    result = compute_accuracy_for_object_detection(det, gt, tmp_path / "a.csv", min_iou=0.5)
    evaluation, names = coco_evaluation(gt_boxes, gt_classes, boxes, classes, scores, origin)

    # COCO mAP over IoU 0.50:0.05:0.95, and per class at 0.50 and 0.75
    assert result.coco_map == pytest.approx(evaluation.stats[0], abs=1e-6)
    assert result.coco_map > 0.05  # a real comparison, not 0 == 0
    precision = evaluation.eval["precision"]  # (T, R, K, A, M)
    by_name = {c.name: c for c in result.evaluation.classes}
    table = result.table.set_index("Class")
    for k, name in enumerate(names):
        n_gt = gt_classes.count(name)
        if n_gt == 0:
            assert np.all(precision[:, :, k, 0, -1] == -1)
            assert np.isnan(table.loc[name, "AP"])
            continue
        for t in (0, 5):
            expected = precision[t, :, k, 0, -1].mean()
            assert by_name[name].coco_ap[t] == pytest.approx(expected, abs=1e-6)
        # TP count and VOC AP at IoU 0.5, from pycocotools' own matching
        entry = next(
            e
            for e in evaluation.evalImgs
            if e is not None and e["category_id"] == k + 1 and e["aRng"] == [0, 1e10]
        )
        assert table.loc[name, "True_Positive"] == int((entry["dtMatches"][0] > 0).sum())
        assert table.loc[name, "False_Negative"] == n_gt - int((entry["gtMatches"][0] > 0).sum())
        voc = voc_ap_from_coco_matches(evaluation, k + 1, n_gt)
        assert table.loc[name, "AP"] == pytest.approx(voc, abs=1e-9)


def _random_boxes(rng: np.random.Generator, n: int, extent: float) -> np.ndarray:
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(3, 20, (n, 2))
    return np.hstack([xy, xy + wh])


def _jitter(rng: np.random.Generator, boxes: np.ndarray, scale: float) -> np.ndarray:
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(2, axis=0).reshape(-1, 4)
    out = boxes + rng.normal(0, scale, boxes.shape) * size
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 0.05 * size[:, :2])
    return out


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_boxes_agree_with_pycocotools(
    tmp_path: Path, write_boxes: Callable[..., Path], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # classes a, b, c with ground truth; d only detected; e only in the ground truth
    gt_classes = list(rng.choice(["a", "b", "c"], 150)) + ["e"] * 5
    gt_boxes = _random_boxes(rng, len(gt_classes), 300)
    found = rng.random(len(gt_boxes)) < 0.8
    found[-5:] = False
    boxes = np.vstack([_jitter(rng, gt_boxes[found], 0.12), _random_boxes(rng, 40, 300)])
    classes = [c for c, f in zip(gt_classes, found, strict=True) if f]
    classes += list(rng.choice(["a", "b", "c", "d"], 40))
    # some detections labelled with another class
    swap = rng.random(len(classes)) < 0.05
    classes = [rng.choice(["a", "b", "c"]) if s else c for c, s in zip(classes, swap, strict=True)]
    scores = rng.uniform(0, 100, len(boxes))
    compare(tmp_path, write_boxes, gt_boxes, gt_classes, boxes, classes, scores, crs=None)


def test_neon_crowns_agree_with_pycocotools(
    tmp_path: Path, write_boxes: Callable[..., Path], neon: tuple[Path, Path]
) -> None:
    # Real boxes: the 61 NEON crowns (UTM, metres); detections are jittered copies of 50 of
    # them, 15 false boxes nearby, confidences loosely tied to the jitter.
    rng = np.random.default_rng(7)
    frame = gpd.read_file(neon[1])
    gt_boxes = frame.geometry.bounds.to_numpy()
    picked = rng.choice(len(gt_boxes), 50, replace=False)
    jitter = rng.uniform(0.02, 0.25, 50)
    pairs = zip(picked, jitter, strict=True)
    near = np.vstack([_jitter(rng, gt_boxes[i : i + 1], s) for i, s in pairs])
    x0, y0 = gt_boxes[:, 0].min(), gt_boxes[:, 1].min()
    false = _random_boxes(rng, 15, 40) + np.array([x0, y0, x0, y0])
    boxes = np.vstack([near, false])
    scores = np.concatenate([100 * (1 - jitter) + rng.normal(0, 5, 50), rng.uniform(0, 80, 15)])
    classes = ["Tree"] * len(boxes)
    gt_classes = ["Tree"] * len(gt_boxes)
    compare(
        tmp_path,
        write_boxes,
        gt_boxes,
        gt_classes,
        boxes,
        classes,
        scores,
        crs=str(frame.crs),
        origin=(x0, y0),
    )
