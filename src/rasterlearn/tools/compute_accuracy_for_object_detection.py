"""Compute Accuracy For Object Detection: detected polygons scored against ground truth.

Definitions (docs/accuracy.md): IoU of the features' bounding rectangles; per class, detections
are taken by descending confidence and matched greedily to unmatched ground truth with
IoU >= ``min_iou``; AP is the all-point interpolated AP of the pooled, ranked detections; the
``All`` row sums TP/FP/FN over classes (micro-averaged precision, recall and F1) and averages
AP over the classes that have ground truth; the report's COCO mAP is COCO's 101-point AP averaged
over IoU 0.50:0.05:0.95 and those classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rasterlearn.accuracy.features import (
    Features,
    class_field,
    class_keys,
    confidence,
    keep_in_mask,
    name_keys,
    read_features,
    to_crs,
)
from rasterlearn.accuracy.report import (
    Report,
    pr_curve_figure,
    render_report,
    report_format,
)
from rasterlearn.accuracy.tables import (
    atomic_outputs,
    check_outputs,
    table_format,
    text_table,
    write_table,
)
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    ClassAccuracy,
    all_point_ap,
    coco_ap,
    match_detections,
    precision_recall,
    rank_by_score,
)
from rasterlearn.tools.declaration import INPUT, OUTPUT, Parameter, declare
from rasterlearn.tools.parameters import OVERWRITE, output

logger = logging.getLogger("rasterlearn.accuracy")

TABLE_COLUMNS = (
    "Class",
    "Precision",
    "Recall",
    "F1_Score",
    "AP",
    "True_Positive",
    "False_Positive",
    "False_Negative",
)
"""Columns of the accuracy table, as ArcGIS names them (``Class`` is ours)."""

ALL_CLASSES = "All"
"""``Class`` of the row for all classes together."""


@dataclass(frozen=True)
class ClassEvaluation:
    """One class scored at ``min_iou`` and at COCO's IoU thresholds.

    Attributes:
        name: The class value or name, as text.
        accuracy: Counts, AP (NaN without ground truth) and the P-R curve at ``min_iou``.
        coco_ap: COCO 101-point AP at each of COCO's 10 IoU thresholds (NaN without ground truth).
    """

    name: str
    accuracy: ClassAccuracy
    coco_ap: np.ndarray

    @property
    def has_ground_truth(self) -> bool:
        """Whether the class has ground-truth features (then its AP is defined)."""
        return self.accuracy.true_positives + self.accuracy.false_negatives > 0


@dataclass(frozen=True)
class DetectionEvaluation:
    """Every class scored, and the figures over all classes."""

    classes: list[ClassEvaluation]
    min_iou: float

    @property
    def scored(self) -> list[ClassEvaluation]:
        """The classes with ground truth (those AP and mAP are averaged over)."""
        return [c for c in self.classes if c.has_ground_truth]

    @property
    def mean_ap(self) -> float:
        """Mean AP at ``min_iou`` over the classes with ground truth."""
        return float(np.mean([c.accuracy.average_precision for c in self.scored]))

    @property
    def coco_map(self) -> float:
        """COCO mAP: 101-point AP averaged over IoU 0.50:0.05:0.95 and classes with ground truth."""
        return float(np.mean([c.coco_ap for c in self.scored]))

    def totals(self) -> tuple[int, int, int]:
        """True positives, false positives and false negatives summed over classes."""
        tp = sum(c.accuracy.true_positives for c in self.classes)
        fp = sum(c.accuracy.false_positives for c in self.classes)
        fn = sum(c.accuracy.false_negatives for c in self.classes)
        return tp, fp, fn

    def table(self) -> pd.DataFrame:
        """One row per class and an ``All`` row, with ArcGIS's columns."""
        rows = []
        for c in self.classes:
            a = c.accuracy
            counts = (a.true_positives, a.false_positives, a.false_negatives)
            rows.append((c.name, a.precision, a.recall, a.f1, a.average_precision, *counts))
        tp, fp, fn = self.totals()
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((ALL_CLASSES, precision, recall, f1, self.mean_ap, tp, fp, fn))
        table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
        for column in TABLE_COLUMNS[5:]:
            table[column] = table[column].astype(np.int64)
        return table

    def coco_table(self) -> pd.DataFrame:
        """COCO figures per class: AP at IoU 0.50, 0.75 and averaged over 0.50:0.95."""
        rows = [
            (c.name, c.coco_ap[0], c.coco_ap[5], float(np.mean(c.coco_ap))) for c in self.classes
        ]
        rows.append(
            (
                ALL_CLASSES,
                float(np.mean([c.coco_ap[0] for c in self.scored])),
                float(np.mean([c.coco_ap[5] for c in self.scored])),
                self.coco_map,
            )
        )
        return pd.DataFrame(rows, columns=["Class", "AP50", "AP75", "mAP_50_95"])


def evaluate_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    reference_boxes: np.ndarray,
    reference_classes: np.ndarray,
    min_iou: float = 0.5,
) -> DetectionEvaluation:
    """Score detections against reference boxes, class by class, in one map.

    Args:
        boxes: Detected boxes ``(N, 4)``: xmin, ymin, xmax, ymax.
        scores: Ranking score per detection; equal scores keep input order.
        classes: Class (text) per detection.
        reference_boxes: Ground-truth boxes ``(M, 4)``.
        reference_classes: Class (text) per ground-truth box.
        min_iou: Minimum IoU for a true positive.

    Returns:
        The evaluation of every class found on either side.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    reference_boxes = np.asarray(reference_boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    classes = np.asarray(classes, dtype=object)
    reference_classes = np.asarray(reference_classes, dtype=object)
    thresholds = np.concatenate([[min_iou], COCO_IOU_THRESHOLDS])
    names = sorted(set(classes.tolist()) | set(reference_classes.tolist()), key=_class_order)
    evaluated = []
    for name in names:
        d = classes == name
        g = reference_classes == name
        n_gt = int(g.sum())
        tp = match_detections(boxes[d], scores[d], reference_boxes[g], thresholds)
        ranked = tp[:, rank_by_score(scores[d])]
        recall, precision = precision_recall(ranked[0], n_gt)
        n_tp = int(ranked[0].sum())
        accuracy = ClassAccuracy(
            true_positives=n_tp,
            false_positives=int(d.sum()) - n_tp,
            false_negatives=n_gt - n_tp,
            average_precision=all_point_ap(recall, precision) if n_gt else float("nan"),
            recall_curve=recall,
            precision_curve=precision,
        )
        coco = (
            np.array([coco_ap(row, n_gt) for row in ranked[1:]])
            if n_gt
            else np.full(len(COCO_IOU_THRESHOLDS), np.nan)
        )
        evaluated.append(ClassEvaluation(name=name, accuracy=accuracy, coco_ap=coco))
    return DetectionEvaluation(classes=evaluated, min_iou=min_iou)


def _class_order(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name.lower())


@dataclass(frozen=True)
class DetectionAccuracyResult:
    """What :func:`compute_accuracy_for_object_detection` wrote and found.

    Attributes:
        table: The accuracy table as written (one row per class, then ``All``).
        evaluation: Per-class curves and COCO figures.
        out_accuracy_table: The table written.
        out_accuracy_report: The report written, if one was asked for.
        notes: Remarks for the user (reprojection, repaired geometries, unmatched classes).
    """

    table: pd.DataFrame
    evaluation: DetectionEvaluation
    out_accuracy_table: Path
    out_accuracy_report: Path | None
    notes: list[str] = field(default_factory=list)

    @property
    def coco_map(self) -> float:
        """COCO mAP over IoU 0.50:0.05:0.95 (see docs/accuracy.md)."""
        return self.evaluation.coco_map


def _class_keys_of_both(
    detected: Features,
    truth: Features,
    detected_field: str | None,
    truth_field: str | None,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """The class of every detection and every reference feature, made comparable."""
    det_name = class_field(detected, detected_field)
    gt_name = class_field(truth, truth_field)
    if det_name is None and gt_name is None:
        return np.full(len(detected.frame), "1", dtype=object), np.full(
            len(truth.frame), "1", dtype=object
        )
    if det_name is None or gt_name is None:
        with_field, without = (truth, detected) if det_name is None else (detected, truth)
        keys = class_keys(with_field, gt_name or det_name)  # type: ignore[arg-type]
        distinct = sorted(set(keys.tolist()), key=_class_order)
        if len(distinct) > 1:
            argument = "detected" if det_name is None else "ground_truth"
            raise ParameterError(
                f"{with_field.label} has classes {_shown(distinct)} but {without.label} has no "
                "class field (Classvalue, Value or Class)",
                f"name its class field with {argument}_class_value_field",
            )
        other = np.full(len(without.frame), distinct[0], dtype=object)
        return (other, keys) if det_name is None else (keys, other)

    det_options = [(det_name, class_keys(detected, det_name))]
    gt_options = [(gt_name, class_keys(truth, gt_name))]
    if not detected_field and (named := name_keys(detected, det_name)):
        det_options.append(named)
    if not truth_field and (named := name_keys(truth, gt_name)):
        gt_options.append(named)
    for det_used, det_keys in det_options:
        for gt_used, gt_keys in gt_options:
            if set(det_keys.tolist()) & set(gt_keys.tolist()):
                if (det_used, gt_used) != (det_name, gt_name):
                    notes.append(
                        f"classes matched by field '{det_used}' of the detections and "
                        f"'{gt_used}' of the ground truth"
                    )
                _note_one_sided(det_keys, gt_keys, notes)
                return det_keys, gt_keys
    det_keys, gt_keys = det_options[0][1], gt_options[0][1]
    raise ParameterError(
        f"no detected class ({_shown(det_keys)} in field '{det_name}' of {detected.label}) "
        f"is a ground-truth class ({_shown(gt_keys)} in field '{gt_name}' of {truth.label})",
        "class values or names must match exactly: choose matching fields with "
        "detected_class_value_field / ground_truth_class_value_field",
    )


def _shown(keys: np.ndarray | list[str], limit: int = 8) -> str:
    distinct = sorted(set(np.asarray(keys, dtype=object).tolist()), key=_class_order)
    more = f", ... ({len(distinct)} classes)" if len(distinct) > limit else ""
    return "{" + ", ".join(distinct[:limit]) + more + "}"


def _note_one_sided(det_keys: np.ndarray, gt_keys: np.ndarray, notes: list[str]) -> None:
    det, gt = set(det_keys.tolist()), set(gt_keys.tolist())
    if det - gt:
        notes.append(
            f"detected classes {_shown(sorted(det - gt))} are not in the ground truth: "
            "all their detections are false positives"
        )
    if gt - det:
        notes.append(
            f"ground-truth classes {_shown(sorted(gt - det))} were never detected: "
            "all their features are false negatives"
        )


def _check_min_iou(min_iou: float) -> float:
    value = float(min_iou)
    if not 0 < value <= 1:
        raise ParameterError(
            f"min_iou must be greater than 0 and at most 1, not {min_iou}",
            "the default is 0.5",
        )
    return value


def compute_accuracy_for_object_detection(
    detected_features: str | Path,
    ground_truth_features: str | Path,
    out_accuracy_table: str | Path,
    out_accuracy_report: str | Path | None = None,
    detected_class_value_field: str | None = None,
    ground_truth_class_value_field: str | None = None,
    min_iou: float = 0.5,
    mask_features: str | Path | None = None,
    overwrite: bool = False,
) -> DetectionAccuracyResult:
    """Compute Accuracy For Object Detection: precision, recall, F1 and AP per class.

    Detections and ground truth are compared by the IoU of their bounding rectangles, class by
    class: detections are taken by descending ``Confidence`` (or ``Score``; file order without
    one), each is a true positive when it overlaps a not yet matched ground-truth feature of its
    class with IoU >= ``min_iou``, else a false positive; unmatched ground truth are false
    negatives. See docs/accuracy.md for the AP, ``All`` row and COCO mAP definitions.

    Returns:
        The table and figures, and the paths written.

    Raises:
        InputError: for missing, unreadable or empty inputs, points or lines, or a missing CRS.
        ParameterError: for unknown or non-matching class fields, or ``min_iou`` out of (0, 1].
        OutputError: if an output exists and ``overwrite`` is false.
    """
    min_iou = _check_min_iou(min_iou)
    table_path = Path(out_accuracy_table)
    kind = table_format(table_path)
    report_path = Path(out_accuracy_report) if out_accuracy_report else None
    report_kind = report_format(report_path) if report_path else None
    outputs = [table_path] + ([report_path] if report_path else [])
    check_outputs(outputs, overwrite)

    notes: list[str] = []
    truth = read_features(ground_truth_features, "ground truth")
    detected = read_features(detected_features, "detected features")
    note = to_crs(detected, truth.frame.crs, truth.label)
    if note:
        notes.append(note)
    for side in (detected, truth):
        if side.repaired:
            notes.append(f"repaired {side.repaired} invalid geometries in {side.label}")
    if mask_features is not None:
        mask = read_features(mask_features, "mask")
        note = to_crs(mask, truth.frame.crs, truth.label)
        if note:
            notes.append(note)
        for side in (detected, truth):
            dropped = keep_in_mask(side, mask)
            if dropped:
                notes.append(f"{dropped} features of {side.label} are outside the mask")
            if side.frame.empty:
                raise InputError(
                    f"no feature of {side.label} intersects the mask {Path(mask_features).name}",
                    "check that the mask covers the features",
                )

    det_classes, gt_classes = _class_keys_of_both(
        detected, truth, detected_class_value_field, ground_truth_class_value_field, notes
    )
    scores, score_field = confidence(detected)
    if score_field is None:
        notes.append("detections have no Confidence or Score field: ranked in file order")
    evaluation = evaluate_detections(
        detected.boxes, scores, det_classes, truth.boxes, gt_classes, min_iou
    )
    for note in notes:
        logger.info(note)
    table = evaluation.table()

    with atomic_outputs(outputs, overwrite) as temporary:
        write_table(table, temporary[0], kind, layer=table_path.stem)
        if report_path is not None and report_kind is not None:
            report = _report(evaluation, table, detected, truth, notes)
            render_report(report, temporary[1], report_kind)
    return DetectionAccuracyResult(
        table=table,
        evaluation=evaluation,
        out_accuracy_table=table_path,
        out_accuracy_report=report_path,
        notes=notes,
    )


def _report(
    evaluation: DetectionEvaluation,
    table: pd.DataFrame,
    detected: Features,
    truth: Features,
    notes: list[str],
) -> Report:
    tp, fp, fn = evaluation.totals()
    all_row = table.iloc[-1]
    facts = [
        ("Detected features", f"{detected.name} ({len(detected.frame)})"),
        ("Ground truth", f"{truth.name} ({len(truth.frame)})"),
        ("Minimum IoU", f"{evaluation.min_iou:g}"),
        ("Classes", str(len(evaluation.classes))),
        (f"AP at IoU {evaluation.min_iou:g} (mean over classes)", f"{evaluation.mean_ap:.4f}"),
        ("F1 score (all classes)", f"{all_row['F1_Score']:.4f}"),
        ("COCO mAP (IoU 0.50:0.05:0.95)", f"{evaluation.coco_map:.4f}"),
        ("True / false positives, false negatives", f"{tp} / {fp}, {fn}"),
    ]
    curves = {
        c.name: (c.accuracy.recall_curve, c.accuracy.precision_curve, c.accuracy.average_precision)
        for c in evaluation.classes
    }
    return Report(
        title="Accuracy for object detection",
        facts=facts,
        tables=[
            ("Accuracy per class", table),
            ("COCO average precision (101-point)", evaluation.coco_table()),
        ],
        figures=[("Precision-recall curves", pr_curve_figure(curves, evaluation.min_iou))],
        notes=[
            "IoU is that of the features' bounding rectangles. AP is the all-point "
            "interpolated average precision of the detections ranked by confidence; the All "
            "row sums the counts over classes and averages AP over classes with ground truth.",
            *notes,
        ],
    )


def _result_lines(result: DetectionAccuracyResult) -> list[str]:
    lines = [f"note: {note}" for note in result.notes]
    columns = ["Class", "Precision", "Recall", "F1_Score", "AP"]
    columns += ["True_Positive", "False_Positive", "False_Negative"]
    header = ["Class", "Precision", "Recall", "F1", "AP", "TP", "FP", "FN"]
    lines += text_table(result.table[columns].values.tolist(), header)
    lines.append(f"COCO mAP (IoU 0.50:0.05:0.95): {result.coco_map:.3f}")
    written = [str(result.out_accuracy_table)]
    if result.out_accuracy_report:
        written.append(str(result.out_accuracy_report))
    lines.append(f"Wrote {', '.join(written)}")
    return lines


TOOL = declare(
    compute_accuracy_for_object_detection,
    label="Compute Accuracy For Object Detection",
    rest_name="ComputeAccuracyForObjectDetection",
    command="compute-accuracy",
    summary="Compute Accuracy For Object Detection: precision, recall, F1 and AP per class.",
    parameters=[
        Parameter(
            "detected_features",
            "features",
            "Detected polygons (e.g. from detect-objects, with Class and Confidence).",
            INPUT,
            label="Detected Features",
            positional=True,
        ),
        Parameter(
            "ground_truth_features",
            "features",
            "Ground-truth polygons.",
            INPUT,
            label="Ground Truth Features",
            positional=True,
        ),
        output(
            "out_accuracy_table",
            "file",
            "Output table: .csv, or .gpkg for a GeoPackage table.",
            "Output Accuracy Table",
            "outAccuracyTableName",
        ),
        Parameter(
            "out_accuracy_report",
            "file",
            "Report with precision-recall curves and COCO mAP: .html or .pdf.",
            OUTPUT,
            label="Output Accuracy Report",
            rest_name="outAccuracyReportName",
        ),
        Parameter(
            "detected_class_value_field",
            "string",
            "Class field of the detections; default Classvalue/Value/Class.",
            label="Detected Class Value Field",
        ),
        Parameter(
            "ground_truth_class_value_field",
            "string",
            "Class field of the ground truth; default Classvalue/Value/Class.",
            label="Ground Truth Class Value Field",
        ),
        Parameter(
            "min_iou",
            "float",
            "Minimum IoU of bounding rectangles for a true positive.",
            label="Minimum Intersection Over Union (IoU)",
            rest_name="minIOU",
        ),
        Parameter(
            "mask_features",
            "features",
            "Only features intersecting these polygons are assessed.",
            INPUT,
            label="Mask Features",
        ),
        OVERWRITE,
    ],
    report=_result_lines,
)
