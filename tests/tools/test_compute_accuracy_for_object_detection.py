"""Compute Accuracy For Object Detection on cases worked out by hand, and its input checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from rasterlearn.errors import InputError, OutputError, ParameterError
from rasterlearn.tools.compute_accuracy_for_object_detection import (
    TABLE_COLUMNS,
    compute_accuracy_for_object_detection,
)

# Ground truth: three cars A, B, C and one truck D.
GT_BOXES = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 20, 10, 30]]
GT_CLASSES = ["car", "car", "car", "truck"]
# Detections, written in shuffled file order so that the Confidence field decides the ranking.
#   d1 car 90  [0,0,10,10]      IoU(A) = 1                      -> TP
#   d2 car 80  triangle in [20,0,30,10]: bounding-rectangle IoU(B) = 1 -> TP
#              (the polygons' own IoU is 0.5, below min_iou 0.6)
#   d3 car 70  [0,0,10,10]      A already matched               -> FP
#   d4 car 60  [42,0,52,10]     IoU(C) = 80 / (100+100-80) = 2/3 -> TP
#   d5 car 50  [100,100,110,110] no overlap                      -> FP
#   e1 truck 95 [5,20,15,30]    IoU(D) = 50 / 150 = 1/3 < 0.6   -> FP
#   f1 bus 10  [200,200,210,210] class not in the ground truth  -> FP
DETECTIONS = {
    "d4": ("car", 60.0, [42, 0, 52, 10]),
    "f1": ("bus", 10.0, [200, 200, 210, 210]),
    "d1": ("car", 90.0, [0, 0, 10, 10]),
    "d5": ("car", 50.0, [100, 100, 110, 110]),
    "d3": ("car", 70.0, [0, 0, 10, 10]),
    "e1": ("truck", 95.0, [5, 20, 15, 30]),
    "d2": ("car", 80.0, None),
}
TRIANGLE = shapely.Polygon([(20, 0), (30, 0), (20, 10)])

# car: ranked TP TP FP TP FP, 3 references -> TP 3, FP 2, FN 0
#   precision 3/5, recall 1, F1 = 2 * 0.6 * 1 / 1.6 = 0.75
#   recall 1/3 2/3 2/3 1 1, precision 1 1 2/3 3/4 3/5; envelope at the recall steps 1, 1, 3/4
#   AP = 1/3 * 1 + 1/3 * 1 + 1/3 * 3/4 = 11/12
# truck: FP only, 1 reference -> TP 0, FP 1, FN 1, P = R = F1 = 0, AP 0
# bus: no ground truth -> TP 0, FP 1, FN 0, AP undefined (empty)
# All: TP 3, FP 4, FN 1 -> P 3/7, R 3/4, F1 = 2 (3/7)(3/4) / (3/7 + 3/4) = 6/11,
#   AP = mean over classes with ground truth = (11/12 + 0) / 2 = 11/24
EXPECTED = pd.DataFrame(
    [
        ("car", 3 / 5, 1.0, 0.75, 11 / 12, 3, 2, 0),
        ("truck", 0.0, 0.0, 0.0, 0.0, 0, 1, 1),
        ("bus", 0.0, 0.0, 0.0, np.nan, 0, 1, 0),
        ("All", 3 / 7, 3 / 4, 6 / 11, 11 / 24, 3, 4, 1),
    ],
    columns=list(TABLE_COLUMNS),
)


@pytest.fixture
def hand_case(tmp_path: Path, write_boxes: Callable[..., Path]) -> tuple[Path, Path]:
    gt = write_boxes(tmp_path / "gt.gpkg", GT_BOXES, Class=GT_CLASSES)
    names = list(DETECTIONS)
    geoms = [TRIANGLE if box is None else shapely.box(*box) for _, _, box in DETECTIONS.values()]
    det = write_boxes(
        tmp_path / "det.gpkg",
        np.zeros((len(names), 4)),
        geometries=geoms,
        Class=[c for c, _, _ in DETECTIONS.values()],
        Confidence=[s for _, s, _ in DETECTIONS.values()],
    )
    return det, gt


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    order = {"car": 0, "truck": 1, "bus": 2, "All": 3}
    return table.sort_values("Class", key=lambda c: c.map(order)).reset_index(drop=True)


def test_hand_case_table(hand_case: tuple[Path, Path], tmp_path: Path) -> None:
    det, gt = hand_case
    out = tmp_path / "accuracy.csv"
    result = compute_accuracy_for_object_detection(det, gt, out, min_iou=0.6)
    written = pd.read_csv(out)
    assert list(written.columns) == list(TABLE_COLUMNS)
    assert written["Class"].iloc[-1] == "All"
    for table in (written, result.table):
        pd.testing.assert_frame_equal(
            _sorted(table), EXPECTED, check_exact=False, atol=1e-9, check_dtype=False
        )
    assert any("bus" in n and "false positives" in n for n in result.notes)


def test_file_order_without_confidence(tmp_path: Path, write_boxes: Callable[..., Path]) -> None:
    # Same car detections without Confidence, in the order d5 d3 d1 d4:
    # FP, TP (d3 takes A), FP (A taken), TP -> recall 0 1/2 1/2 1 with 2 references (A, C),
    # precision 0 1/2 1/3 1/2 -> envelope 1/2 at both steps -> AP = 1/2 * 1/2 + 1/2 * 1/2 = 1/2.
    gt = write_boxes(tmp_path / "gt.gpkg", [GT_BOXES[0], GT_BOXES[2]])
    boxes = [[100, 100, 110, 110], [0, 0, 10, 10], [0, 0, 10, 10], [42, 0, 52, 10]]
    det = write_boxes(tmp_path / "det.gpkg", boxes)
    result = compute_accuracy_for_object_detection(det, gt, tmp_path / "a.csv")
    row = result.table.iloc[0]
    assert (row["True_Positive"], row["False_Positive"], row["False_Negative"]) == (2, 2, 0)
    assert row["AP"] == pytest.approx(0.5)
    assert any("file order" in n for n in result.notes)


def test_min_iou_decides(hand_case: tuple[Path, Path], tmp_path: Path) -> None:
    # At min_iou 0.3 the truck detection (IoU 1/3) becomes a true positive.
    det, gt = hand_case
    table = compute_accuracy_for_object_detection(det, gt, tmp_path / "a.csv", min_iou=0.3).table
    truck = table[table["Class"] == "truck"].iloc[0]
    assert (truck["True_Positive"], truck["False_Negative"], truck["AP"]) == (1, 0, 1.0)


def test_geopackage_table_and_reports(hand_case: tuple[Path, Path], tmp_path: Path) -> None:
    det, gt = hand_case
    result = compute_accuracy_for_object_detection(
        det, gt, tmp_path / "acc.gpkg", tmp_path / "report.html", min_iou=0.6
    )
    layers = pyogrio.list_layers(tmp_path / "acc.gpkg")
    assert [list(layer) for layer in layers] == [["acc", None]]  # a table without geometry
    table = pyogrio.read_dataframe(tmp_path / "acc.gpkg", read_geometry=False)
    pd.testing.assert_frame_equal(
        _sorted(table), EXPECTED, check_exact=False, atol=1e-9, check_dtype=False
    )
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1
    assert "COCO mAP" in html and f"{result.coco_map:.4f}" in html
    compute_accuracy_for_object_detection(det, gt, tmp_path / "b.csv", tmp_path / "r.pdf")
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


def test_reprojects_detections(tmp_path: Path, neon: tuple[Path, Path]) -> None:
    # The NEON crowns themselves, stored in WGS 84, are found again after reprojection.
    _, trees = neon
    frame = gpd.read_file(trees)
    det = tmp_path / "det.geojson"
    frame.to_crs("EPSG:4326").to_file(det)
    result = compute_accuracy_for_object_detection(det, trees, tmp_path / "a.csv", min_iou=0.9)
    all_row = result.table.iloc[-1]
    assert (all_row["True_Positive"], all_row["False_Positive"]) == (len(frame), 0)
    assert any("reprojected" in n for n in result.notes)


def test_mask(hand_case: tuple[Path, Path], tmp_path: Path, write_boxes) -> None:
    # Mask x in [0, 25], y in [-5, 15]: keeps cars A and B, and detections d1 d2 d3
    # (the truck, the bus, d4 and d5 lie outside). Ranked d1 TP, d2 TP, d3 FP:
    # TP 2, FP 1, FN 0; recall 1/2 1 1 -> AP 1.
    det, gt = hand_case
    mask = write_boxes(tmp_path / "mask.gpkg", [[0, -5, 25, 15]])
    table = compute_accuracy_for_object_detection(
        det, gt, tmp_path / "a.csv", min_iou=0.6, mask_features=mask
    ).table
    assert table["Class"].tolist() == ["car", "All"]
    car = table.iloc[0]
    assert (car["True_Positive"], car["False_Positive"], car["False_Negative"]) == (2, 1, 0)
    assert car["AP"] == pytest.approx(1.0)


def test_invalid_geometries_are_repaired(
    tmp_path: Path, write_boxes: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    # A bow-tie over [0,0,10,10] is invalid; repaired, its bounding rectangle is unchanged.
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert not bowtie.is_valid
    gt = write_boxes(tmp_path / "gt.gpkg", [[0, 0, 10, 10]])
    det = write_boxes(tmp_path / "det.gpkg", [[0, 0, 1, 1]], geometries=[bowtie])
    with caplog.at_level(logging.WARNING, logger="rasterlearn.accuracy"):
        result = compute_accuracy_for_object_detection(det, gt, tmp_path / "a.csv")
    assert "repaired 1 invalid geometries" in caplog.text
    assert any("repaired 1" in n for n in result.notes)
    assert result.table.iloc[0]["True_Positive"] == 1


def test_class_fields_by_default(tmp_path: Path, write_boxes: Callable[..., Path]) -> None:
    # Ground truth 'ClassValue', detections 'value' (letter case ignored): matched as numbers.
    gt = write_boxes(tmp_path / "gt.gpkg", GT_BOXES[:2], ClassValue=[1, 2])
    det = write_boxes(tmp_path / "det.gpkg", GT_BOXES[:2], value=[2.0, 2.0])
    table = compute_accuracy_for_object_detection(det, gt, tmp_path / "a.csv").table
    assert table["Class"].tolist() == ["1", "2", "All"]
    assert table["True_Positive"].tolist() == [0, 1, 1]
    assert table["False_Negative"].tolist() == [1, 0, 1]


def test_names_of_the_ground_truth_match_detected_names(
    tmp_path: Path, neon: tuple[Path, Path], write_boxes: Callable[..., Path]
) -> None:
    # Detect Objects writes Class = "Tree"; the NEON ground truth has ClassValue 1 and
    # ClassName "Tree": the names are matched.
    _, trees = neon
    frame = gpd.read_file(trees)
    boxes = frame.geometry.bounds.to_numpy()
    det = write_boxes(tmp_path / "det.gpkg", boxes, Class=["Tree"] * len(boxes))
    result = compute_accuracy_for_object_detection(det, trees, tmp_path / "a.csv")
    assert result.table["Class"].tolist() == ["Tree", "All"]
    assert result.table.iloc[0]["True_Positive"] == len(boxes)


def test_one_class_without_fields(tmp_path: Path, write_boxes: Callable[..., Path]) -> None:
    gt = write_boxes(tmp_path / "gt.gpkg", GT_BOXES)
    det = write_boxes(tmp_path / "det.gpkg", GT_BOXES[:3], Confidence=[1.0, 2.0, 3.0])
    table = compute_accuracy_for_object_detection(det, gt, tmp_path / "a.csv").table
    assert table["Class"].tolist() == ["1", "All"]
    assert table["True_Positive"].tolist() == [3, 3]
    assert table["False_Negative"].tolist() == [1, 1]


def test_errors_leave_no_output(
    hand_case: tuple[Path, Path], tmp_path: Path, write_boxes: Callable[..., Path]
) -> None:
    det, gt = hand_case
    out = tmp_path / "a.csv"
    numbers = write_boxes(tmp_path / "numbers.gpkg", GT_BOXES, Classvalue=[1, 2, 3, 4])
    cases = [
        (InputError, "does not exist", dict(detected_features=tmp_path / "missing.gpkg")),
        (ParameterError, "{1, 2, 3, 4}", dict(ground_truth_features=numbers)),
        (ParameterError, "'Kind' is not in", dict(detected_class_value_field="Kind")),
        (ParameterError, "min_iou", dict(min_iou=0.0)),
        (ParameterError, ".html or .pdf", dict(out_accuracy_report=tmp_path / "r.docx")),
    ]
    for error, text, changes in cases:
        args = dict(detected_features=det, ground_truth_features=gt, out_accuracy_table=out)
        args.update(changes)
        with pytest.raises(error, match=None) as caught:
            compute_accuracy_for_object_detection(**args)
        assert text in str(caught.value), str(caught.value)
        assert not out.exists() and not (tmp_path / "r.docx").exists()
    # The class mismatch names both sets: detected {bus, car, truck} vs ground truth {1, ...}
    with pytest.raises(ParameterError, match=r"\{bus, car, truck\}"):
        compute_accuracy_for_object_detection(det, numbers, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.gpkg", "gt.gpkg", "numbers.gpkg"]


def test_empty_and_point_inputs(tmp_path: Path, write_boxes: Callable[..., Path]) -> None:
    gt = write_boxes(tmp_path / "gt.gpkg", GT_BOXES)
    empty = write_boxes(tmp_path / "empty.gpkg", np.zeros((0, 4)))
    points = write_boxes(tmp_path / "points.gpkg", [[0, 0, 0, 0]], geometries=[shapely.Point(1, 1)])
    with pytest.raises(InputError, match="has no features"):
        compute_accuracy_for_object_detection(empty, gt, tmp_path / "a.csv")
    with pytest.raises(InputError, match="Point geometries, not polygons"):
        compute_accuracy_for_object_detection(gt, points, tmp_path / "a.csv")
    assert not (tmp_path / "a.csv").exists()


def test_existing_output_needs_overwrite(hand_case: tuple[Path, Path], tmp_path: Path) -> None:
    det, gt = hand_case
    out = tmp_path / "a.csv"
    out.write_text("keep me")
    with pytest.raises(OutputError, match="already exists"):
        compute_accuracy_for_object_detection(det, gt, out)
    assert out.read_text() == "keep me"
    compute_accuracy_for_object_detection(det, gt, out, overwrite=True)
    assert pd.read_csv(out)["Class"].iloc[-1] == "All"
