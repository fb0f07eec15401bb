"""Compute pixel accuracy: a classified raster scored against a reference raster or polygons.

The reference is read onto the classified raster's grid block by block (see
:mod:`rasterlearn.accuracy.rasters`) and a confusion matrix is accumulated; pixels that are 0,
nodata or masked on either side are not assessed. Definitions are in docs/accuracy.md.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.windows import Window

from rasterlearn.accuracy.features import (
    Features,
    class_field,
    name_keys,
    read_features,
    to_crs,
)
from rasterlearn.accuracy.rasters import (
    PolygonReference,
    blocks,
    open_class_raster,
    raster_class_names,
    raster_on_grid,
    read_classes,
)
from rasterlearn.accuracy.report import Report, confusion_figure, render_report, report_format
from rasterlearn.accuracy.tables import (
    atomic_outputs,
    check_outputs,
    table_format,
    text_table,
    write_table,
)
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.grid import Grid
from rasterlearn.geo.raster import bounded_gdal_cache
from rasterlearn.geo.vector import VECTOR_DRIVERS
from rasterlearn.metrics.pixels import PixelAccuracy, confusion_matrix
from rasterlearn.progress import progress_bar
from rasterlearn.tools.declaration import INPUT, OUTPUT, Parameter, declare
from rasterlearn.tools.parameters import BLOCK_SIZE, OVERWRITE, output

logger = logging.getLogger("rasterlearn.accuracy")

MAX_CLASSES = 1000
"""More distinct values than this means the input is not a class raster."""

VECTOR_SUFFIXES = {*VECTOR_DRIVERS, ".gml", ".kml", ".sqlite", ".gdb", ".zip"}
"""Reference paths with these extensions are read as polygons, others as rasters."""

OVERALL = "Overall"
"""``Class`` of the row for all classes together."""


class ConfusionAccumulator:
    """A confusion matrix over class values that are discovered block by block."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self._index: dict[int, int] = {}
        self.matrix = np.zeros((0, 0), dtype=np.int64)

    def _indices(self, values: np.ndarray) -> np.ndarray:
        """Matrix index of each value (in sorted order of ``values``' distinct values)."""
        for v in values.tolist():
            if v not in self._index:
                self._index[v] = len(self.values)
                self.values.append(v)
        if len(self.values) > MAX_CLASSES:
            raise ParameterError(
                f"the inputs hold more than {MAX_CLASSES} distinct values, so they are not "
                "class rasters",
                "give rasters of class values (a classified raster and its reference)",
            )
        k = len(self.values)
        if self.matrix.shape[0] < k:
            grown = np.zeros((k, k), dtype=np.int64)
            n = self.matrix.shape[0]
            grown[:n, :n] = self.matrix
            self.matrix = grown
        return np.array([self._index[v] for v in values.tolist()], dtype=np.int64)

    def add(self, reference: np.ndarray, classified: np.ndarray) -> None:
        """Count pixel pairs (``reference[i]``, ``classified[i]``)."""
        if not reference.size:
            return
        low = int(min(reference.min(), classified.min()))
        high = int(max(reference.max(), classified.max()))
        span = high - low + 1
        if span <= 1024:  # small value range: one bincount, no sort
            counts = np.bincount(
                (reference - low) * span + (classified - low), minlength=span * span
            ).reshape(span, span)
            present = np.nonzero(counts.sum(axis=0) + counts.sum(axis=1))[0]
            idx = self._indices(present + low)
            self.matrix[np.ix_(idx, idx)] += counts[np.ix_(present, present)]
            return
        distinct, inverse = np.unique(np.concatenate([reference, classified]), return_inverse=True)
        idx = self._indices(distinct)[inverse.ravel()]
        n = len(reference)
        self.matrix += confusion_matrix(idx[:n], idx[n:], len(self.values))

    def result(self) -> tuple[list[int], np.ndarray]:
        """Class values in ascending order and the matrix (rows reference, columns classified)."""
        order = np.argsort(self.values)
        return [self.values[i] for i in order], self.matrix[np.ix_(order, order)]


@dataclass(frozen=True)
class PixelAccuracyResult:
    """What :func:`compute_pixel_accuracy` wrote and found.

    Attributes:
        table: The accuracy table (one row per class, then ``Overall``).
        confusion: The confusion matrix table in ArcGIS's Compute Confusion Matrix layout.
        accuracy: The figures (rows of its matrix: reference; columns: classified).
        classes: Class value of each matrix row and column.
        names: Class name per class value.
        out_accuracy_table: The table written.
        out_confusion_matrix: The confusion matrix CSV written beside it.
        out_accuracy_report: The report written, if one was asked for.
        notes: Remarks for the user.
    """

    table: pd.DataFrame
    confusion: pd.DataFrame
    accuracy: PixelAccuracy
    classes: list[int]
    names: dict[int, str]
    out_accuracy_table: Path
    out_confusion_matrix: Path
    out_accuracy_report: Path | None
    notes: list[str] = field(default_factory=list)


def confusion_path(table: str | Path) -> Path:
    """Where the confusion matrix of a table goes: ``<stem>_confusion.csv`` beside it."""
    table = Path(table)
    return table.with_name(f"{table.stem}_confusion.csv")


def accuracy_table(
    accuracy: PixelAccuracy, classes: list[int], names: dict[int, str]
) -> pd.DataFrame:
    """One row per class and an ``Overall`` row (macro means, overall accuracy and kappa)."""
    matrix = accuracy.matrix
    reference_pixels = matrix.sum(axis=1)
    table = pd.DataFrame(
        {
            "Class": [str(v) for v in classes],
            "Name": [names.get(v, str(v)) for v in classes],
            "Precision": accuracy.precision,
            "Recall": accuracy.recall,
            "F1_Score": accuracy.f1,
            "IoU": accuracy.iou,
            "Pixels": reference_pixels.astype(np.int64),
            "Overall_Accuracy": np.nan,
            "Kappa": np.nan,
        }
    )
    overall = {
        "Class": OVERALL,
        "Name": "All classes",
        "Precision": float(np.mean(accuracy.precision)),
        "Recall": float(np.mean(accuracy.recall)),
        "F1_Score": float(np.mean(accuracy.f1)),
        "IoU": float(np.mean(accuracy.iou)),
        "Pixels": int(matrix.sum()),
        "Overall_Accuracy": accuracy.overall,
        "Kappa": accuracy.kappa,
    }
    table = pd.concat([table, pd.DataFrame([overall])], ignore_index=True)
    table["Pixels"] = table["Pixels"].astype(np.int64)
    return table


def confusion_table(accuracy: PixelAccuracy, classes: list[int]) -> pd.DataFrame:
    """The matrix as ArcGIS's Compute Confusion Matrix writes it.

    Rows are classified classes ``C_<value>``, columns reference classes; a ``Total`` column and
    row, ``U_Accuracy`` (user's accuracy = precision) per row, ``P_Accuracy`` (producer's
    accuracy = recall) per column, overall accuracy where they meet and ``Kappa``.
    """
    by_classified = accuracy.matrix.T  # rows: classified, columns: reference
    labels = [f"C_{v}" for v in classes]
    columns = ["ClassValue", *labels, "Total", "U_Accuracy", "Kappa"]
    rows: list[list[object]] = []
    for i, label in enumerate(labels):
        row = by_classified[i]
        rows.append([label, *row.tolist(), int(row.sum()), float(accuracy.precision[i]), None])
    column_totals = by_classified.sum(axis=0).tolist()
    rows.append(["Total", *column_totals, int(by_classified.sum()), None, None])
    rows.append(["P_Accuracy", *accuracy.recall.tolist(), None, accuracy.overall, None])
    rows.append(["Kappa", *[None] * len(labels), None, None, accuracy.kappa])
    return pd.DataFrame(rows, columns=columns, dtype=object)  # counts stay integers


def _is_vector(path: str | Path) -> bool:
    return Path(str(path)).suffix.lower() in VECTOR_SUFFIXES


def _polygon_reference(
    path: str | Path,
    requested_field: str | None,
    grid: Grid,
    classified_label: str,
    raster_names: dict[int, str],
    notes: list[str],
) -> tuple[PolygonReference, dict[int, str]]:
    """Reference polygons with class values, and class names found on them."""
    features = read_features(path, "reference")
    if features.repaired:
        notes.append(f"repaired {features.repaired} invalid geometries in {features.label}")
    note = to_crs(features, grid.crs, classified_label)
    if note:
        notes.append(note)
    found = class_field(features, requested_field)
    names: dict[int, str] = {}
    if found is None:
        values = np.ones(len(features.frame), dtype=np.int64)
        notes.append(f"{features.label} has no class field: every polygon is class 1")
    else:
        values, names = _polygon_values(features, found, raster_names)
    if np.any(values < 0) or np.any(values > np.iinfo(np.int32).max):
        raise ParameterError(
            f"class values in '{found}' of {features.label} must be between 0 and 2147483647",
            "0 means not assessed; use positive class values",
        )
    reference = PolygonReference(features.frame.geometry.values, values, grid)
    if reference.overlap() is None:
        raise InputError(
            f"{features.label} does not overlap {classified_label}",
            "check that the polygons cover part of the raster",
        )
    return reference, names


def _polygon_values(
    features: Features, found: str, raster_names: dict[int, str]
) -> tuple[np.ndarray, dict[int, str]]:
    column = features.frame[found]
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        numbers = column.to_numpy(dtype=np.float64)
        if np.isnan(numbers).any() or not np.all(np.mod(numbers, 1) == 0):
            raise ParameterError(
                f"class field '{found}' of {features.label} must hold a whole number for "
                "every polygon",
                "choose an integer class field, or a field of class names",
            )
        values = numbers.astype(np.int64)
        names: dict[int, str] = {}
        named = name_keys(features, found)
        if named is not None:
            for value, name in zip(values.tolist(), named[1].tolist(), strict=True):
                names.setdefault(value, name)
        return values, names
    by_name = {name.lower(): value for value, name in raster_names.items()}
    texts = column.astype(str).str.strip()
    unknown = sorted({t for t in texts if t.lower() not in by_name})
    if unknown:
        known = ", ".join(raster_names.values()) or "none: the raster has no class names"
        raise ParameterError(
            f"class names {unknown[:8]} in '{found}' of {features.label} are not classes of "
            f"the classified raster ({known})",
            "give a field of class values, or names as in the raster's attribute table",
        )
    return np.array([by_name[t.lower()] for t in texts], dtype=np.int64), {}


def compute_pixel_accuracy(
    classified_raster: str | Path,
    reference: str | Path,
    out_accuracy_table: str | Path,
    out_accuracy_report: str | Path | None = None,
    reference_class_value_field: str | None = None,
    overwrite: bool = False,
    *,
    block_size: int = 1024,
) -> PixelAccuracyResult:
    """Score a classified raster against a reference raster or reference polygons.

    The reference is brought onto the classified raster's grid: a raster on another grid or
    CRS is resampled by nearest neighbour, polygons are rasterized (a pixel belongs to a
    polygon when its centre is inside). The rasters are read block by block into a confusion
    matrix; pixels that are 0, nodata or masked on either side are not assessed.

    Returns:
        The tables, the figures and the paths written.

    Raises:
        InputError: for missing, unreadable or empty inputs, multi-band rasters, a missing CRS
            or inputs that do not overlap.
        ParameterError: for an unknown class field, names that are not classes, or rasters that
            are not class rasters.
        OutputError: if an output exists and ``overwrite`` is false.
    """
    if block_size < 16:
        raise ParameterError(f"block_size must be at least 16, not {block_size}")
    table_path = Path(out_accuracy_table)
    kind = table_format(table_path)
    matrix_path = confusion_path(table_path)
    report_path = Path(out_accuracy_report) if out_accuracy_report else None
    report_kind = report_format(report_path) if report_path else None
    outputs = [table_path, matrix_path] + ([report_path] if report_path else [])
    check_outputs(outputs, overwrite)

    notes: list[str] = []
    cls_label = f"classified raster {Path(str(classified_raster)).name}"
    ref_label = f"reference {Path(str(reference)).name}"
    counts = ConfusionAccumulator()
    with (
        bounded_gdal_cache(),
        open_class_raster(classified_raster, "classified raster") as cls_ds,
        contextlib.ExitStack() as stack,
    ):
        grid = Grid.of(cls_ds)
        names = raster_class_names(cls_ds)
        if _is_vector(reference):
            polygons, polygon_names = _polygon_reference(
                reference, reference_class_value_field, grid, cls_label, names, notes
            )
            for value, name in polygon_names.items():
                names.setdefault(value, name)
            region = polygons.overlap()

            def read_reference(window: Window) -> np.ndarray:
                return polygons.read(window)

        else:
            if reference_class_value_field:
                raise ParameterError(
                    "reference_class_value_field applies to reference polygons, but "
                    f"{ref_label} is a raster",
                    "leave it out for a reference raster",
                )
            ref_ds = stack.enter_context(open_class_raster(reference, "reference raster"))
            ref_view, region = stack.enter_context(
                raster_on_grid(ref_ds, grid, (ref_label, cls_label))
            )
            if ref_view is not ref_ds:
                notes.append(f"{ref_label} resampled (nearest) onto the classified raster's grid")

            def read_reference(window: Window) -> np.ndarray:
                return read_classes(ref_view, window, ref_label)

        assert region is not None
        windows = list(blocks(cls_ds, region, block_size))
        with progress_bar("Comparing pixels", len(windows)) as advance:
            for window in windows:
                classified = read_classes(cls_ds, window, cls_label)
                truth = read_reference(window)
                keep = (classified != 0) & (truth != 0)
                counts.add(truth[keep], classified[keep])
                advance(1)

    classes, matrix = counts.result()
    if not classes:
        raise InputError(
            f"no pixel has a class in both {cls_label} and {ref_label} (0 and nodata are not "
            "assessed)",
            "check that the reference covers classified pixels",
        )
    accuracy = PixelAccuracy(matrix)
    table = accuracy_table(accuracy, classes, names)
    confusion = confusion_table(accuracy, classes)
    for note in notes:
        logger.info(note)
    with atomic_outputs(outputs, overwrite) as temporary:
        write_table(table, temporary[0], kind, layer=table_path.stem)
        confusion.to_csv(temporary[1], index=False)
        if report_path is not None and report_kind is not None:
            report = _report(accuracy, classes, names, table, (cls_label, ref_label), notes)
            render_report(report, temporary[2], report_kind)
    return PixelAccuracyResult(
        table=table,
        confusion=confusion,
        accuracy=accuracy,
        classes=classes,
        names={v: names.get(v, str(v)) for v in classes},
        out_accuracy_table=table_path,
        out_confusion_matrix=matrix_path,
        out_accuracy_report=report_path,
        notes=notes,
    )


def _report(
    accuracy: PixelAccuracy,
    classes: list[int],
    names: dict[int, str],
    table: pd.DataFrame,
    labels: tuple[str, str],
    notes: list[str],
) -> Report:
    shown = [names.get(v, str(v)) for v in classes]
    labels_shown = [
        f"{v} {n}" if n != str(v) else str(v) for v, n in zip(classes, shown, strict=True)
    ]
    return Report(
        title="Pixel classification accuracy",
        facts=[
            ("Classified raster", labels[0]),
            ("Reference", labels[1]),
            ("Pixels assessed", f"{int(accuracy.matrix.sum()):,}"),
            ("Classes", str(len(classes))),
            ("Overall accuracy", f"{accuracy.overall:.4f}"),
            ("Kappa", f"{accuracy.kappa:.4f}"),
            ("Mean IoU", f"{float(np.mean(accuracy.iou)):.4f}"),
        ],
        tables=[
            ("Accuracy per class", table),
            (
                "Confusion matrix (rows: classified, columns: reference)",
                confusion_table(accuracy, classes),
            ),
        ],
        figures=[("Confusion matrix", confusion_figure(accuracy.matrix, labels_shown))],
        notes=[
            "Pixels that are 0, nodata or masked in either input are not assessed. Precision "
            "(user's accuracy) and recall (producer's accuracy) are per class; the Overall row "
            "gives their means over classes, the overall accuracy and Cohen's kappa.",
            *notes,
        ],
    )


def _result_lines(result: PixelAccuracyResult) -> list[str]:
    lines = [f"note: {note}" for note in result.notes]
    columns = ["Class", "Name", "Precision", "Recall", "F1_Score", "IoU", "Pixels"]
    header = ["Class", "Name", "Precision", "Recall", "F1", "IoU", "Pixels"]
    lines += text_table(result.table[columns].values.tolist(), header)
    accuracy = result.accuracy
    lines.append(f"Overall accuracy: {accuracy.overall:.3f}, kappa: {accuracy.kappa:.3f}")
    written = [str(result.out_accuracy_table), str(result.out_confusion_matrix)]
    if result.out_accuracy_report:
        written.append(str(result.out_accuracy_report))
    lines.append(f"Wrote {', '.join(written)}")
    return lines


TOOL = declare(
    compute_pixel_accuracy,
    label="Compute Pixel Accuracy",
    rest_name="ComputePixelAccuracy",
    command="compute-pixel-accuracy",
    summary=(
        "Pixel classification accuracy: per-class precision, recall, F1, IoU; accuracy, kappa."
    ),
    parameters=[
        Parameter(
            "classified_raster",
            "raster",
            "One-band raster of class values (e.g. from classify-pixels).",
            INPUT,
            label="Classified Raster",
            positional=True,
        ),
        Parameter(
            "reference",
            "raster",
            "Reference raster of class values, or reference polygons.",
            INPUT,
            label="Reference Data",
            positional=True,
        ),
        output(
            "out_accuracy_table",
            "file",
            "Output table: .csv or .gpkg; the confusion matrix goes to <stem>_confusion.csv "
            "beside it.",
            "Output Accuracy Table",
            "outAccuracyTableName",
        ),
        Parameter(
            "out_accuracy_report",
            "file",
            "Report with the confusion matrix: .html or .pdf.",
            OUTPUT,
            label="Output Accuracy Report",
            rest_name="outAccuracyReportName",
        ),
        Parameter(
            "reference_class_value_field",
            "string",
            "Class field of reference polygons; default Classvalue/Value/Class.",
            label="Reference Class Value Field",
        ),
        OVERWRITE,
        BLOCK_SIZE,
    ],
    report=_result_lines,
)
