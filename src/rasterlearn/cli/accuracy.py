"""``rasterlearn compute-accuracy`` and ``rasterlearn compute-pixel-accuracy``.

``cli.py`` calls :func:`register` on its app. This module does not import ``cli.py`` when it is
imported (that would be circular), and imports the tools (pandas, matplotlib) only when a
command runs, so the CLI starts quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rasterlearn.cli.errors import user_errors


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.3f}"
    return str(value)


def _print_table(rows: list[list[Any]], header: list[str]) -> None:
    """A plain aligned table (first column left, the others right)."""
    cells = [header, *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        parts = [row[0].ljust(widths[0]), *rest]
        typer.echo("  ".join(parts).rstrip())


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        typer.echo(f"note: {note}")


def compute_accuracy_cmd(
    detected_features: Annotated[
        Path, typer.Argument(help="Detected polygons (e.g. from detect-objects).")
    ],
    ground_truth_features: Annotated[Path, typer.Argument(help="Ground-truth polygons.")],
    out_accuracy_table: Annotated[
        Path, typer.Argument(help="Output table: .csv, or .gpkg for a GeoPackage table.")
    ],
    out_accuracy_report: Annotated[
        Path | None,
        typer.Option(help="Report with P-R curves and COCO mAP: .html or .pdf."),
    ] = None,
    detected_class_value_field: Annotated[
        str | None,
        typer.Option(help="Class field of the detections; default Classvalue/Value/Class."),
    ] = None,
    ground_truth_class_value_field: Annotated[
        str | None,
        typer.Option(help="Class field of the ground truth; default Classvalue/Value/Class."),
    ] = None,
    min_iou: Annotated[
        float, typer.Option(help="Minimum IoU of bounding rectangles for a true positive.")
    ] = 0.5,
    mask_features: Annotated[
        Path | None, typer.Option(help="Only features intersecting these polygons are assessed.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
) -> None:
    """Compute Accuracy For Object Detection: precision, recall, F1 and AP per class."""
    from rasterlearn.tools.compute_accuracy_for_object_detection import (
        compute_accuracy_for_object_detection,
    )

    result = compute_accuracy_for_object_detection(
        detected_features,
        ground_truth_features,
        out_accuracy_table,
        out_accuracy_report=out_accuracy_report,
        detected_class_value_field=detected_class_value_field,
        ground_truth_class_value_field=ground_truth_class_value_field,
        min_iou=min_iou,
        mask_features=mask_features,
        overwrite=overwrite,
    )
    _print_notes(result.notes)
    columns = ["Class", "Precision", "Recall", "F1_Score", "AP"]
    columns += ["True_Positive", "False_Positive", "False_Negative"]
    header = ["Class", "Precision", "Recall", "F1", "AP", "TP", "FP", "FN"]
    _print_table(result.table[columns].values.tolist(), header)
    typer.echo(f"COCO mAP (IoU 0.50:0.05:0.95): {result.coco_map:.3f}")
    written = [str(result.out_accuracy_table)]
    if result.out_accuracy_report:
        written.append(str(result.out_accuracy_report))
    typer.echo(f"Wrote {', '.join(written)}")


def compute_pixel_accuracy_cmd(
    classified_raster: Annotated[
        str, typer.Argument(help="One-band raster of class values (e.g. from classify-pixels).")
    ],
    reference: Annotated[
        str, typer.Argument(help="Reference raster of class values, or reference polygons.")
    ],
    out_accuracy_table: Annotated[
        Path,
        typer.Argument(
            help="Output table: .csv or .gpkg; the confusion matrix goes to "
            "<stem>_confusion.csv beside it."
        ),
    ],
    out_accuracy_report: Annotated[
        Path | None, typer.Option(help="Report with the confusion matrix: .html or .pdf.")
    ] = None,
    reference_class_value_field: Annotated[
        str | None,
        typer.Option(help="Class field of reference polygons; default Classvalue/Value/Class."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    block_size: Annotated[
        int, typer.Option(help="Rows and columns read at a time (bounds memory).")
    ] = 1024,
) -> None:
    """Pixel classification accuracy: per-class precision, recall, F1, IoU; accuracy, kappa."""
    from rasterlearn.tools.compute_pixel_accuracy import compute_pixel_accuracy

    result = compute_pixel_accuracy(
        classified_raster,
        reference,
        out_accuracy_table,
        out_accuracy_report=out_accuracy_report,
        reference_class_value_field=reference_class_value_field,
        overwrite=overwrite,
        block_size=block_size,
    )
    _print_notes(result.notes)
    columns = ["Class", "Name", "Precision", "Recall", "F1_Score", "IoU", "Pixels"]
    header = ["Class", "Name", "Precision", "Recall", "F1", "IoU", "Pixels"]
    _print_table(result.table[columns].values.tolist(), header)
    typer.echo(
        f"Overall accuracy: {result.accuracy.overall:.3f}, kappa: {result.accuracy.kappa:.3f}"
    )
    written = [str(result.out_accuracy_table), str(result.out_confusion_matrix)]
    if result.out_accuracy_report:
        written.append(str(result.out_accuracy_report))
    typer.echo(f"Wrote {', '.join(written)}")


def register(app: typer.Typer) -> None:
    """Add ``compute-accuracy`` and ``compute-pixel-accuracy`` to ``app``."""
    app.command("compute-accuracy")(user_errors(compute_accuracy_cmd))
    app.command("compute-pixel-accuracy")(user_errors(compute_pixel_accuracy_cmd))
