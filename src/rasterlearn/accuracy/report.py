"""Accuracy reports: HTML with embedded PNG figures, or PDF pages (matplotlib ``PdfPages``).

A :class:`Report` is a title, some key figures, tables and matplotlib figures. It is rendered by
the output's extension (``.html``/``.htm`` or ``.pdf``) and written atomically. Figures are made
with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so no global backend
state is touched.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rasterlearn.errors import ParameterError
from rasterlearn.outputs import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FORMATS = {".html": "html", ".htm": "html", ".pdf": "pdf"}
"""Report format by output extension."""


@dataclass
class Report:
    """The content of an accuracy report.

    Attributes:
        title: Heading of the report.
        facts: Key figures and settings, shown as "name: value" lines.
        tables: ``(caption, table)`` pairs.
        figures: ``(caption, figure)`` pairs.
        notes: Free-text remarks (definitions, warnings).
    """

    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Figure]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def report_format(path: str | Path) -> str:
    """``'html'`` or ``'pdf'``, from a report path's extension.

    Raises:
        ParameterError: for any other extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in REPORT_FORMATS:
        raise ParameterError(
            f"accuracy report {path} must end in .html or .pdf",
            "name the report e.g. accuracy.html or accuracy.pdf",
        )
    return REPORT_FORMATS[suffix]


def format_number(value: object) -> str:
    """A table cell: floats with 4 decimals, missing values empty, anything else as text."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.4f}"
    return str(value)


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _html_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for record in table.itertuples(index=False):
        cells = "".join(f"<td>{html.escape(format_number(v))}</td>" for v in record)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:right}"
    "th{background:#eee}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%}"
)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (figures as base64 PNG images)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    if report.facts:
        items = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in report.facts
        )
        parts.append(f"<ul>{items}</ul>")
    for caption, table in report.tables:
        parts.append(f"<h2>{html.escape(caption)}</h2>{_html_table(table)}")
    for caption, figure in report.figures:
        parts.append(
            f"<h2>{html.escape(caption)}</h2>"
            f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{_png(figure)}">'
        )
    if report.notes:
        parts.append("<h2>Notes</h2>")
        parts.extend(f"<p>{html.escape(n)}</p>" for n in report.notes)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _text_page(report: Report) -> Figure:
    """The first PDF page: title, key figures, notes (wrapped to the page width)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.27, 11.69))
    lines: list[tuple[str, int, str]] = [(report.title, 16, "bold"), ("", 10, "normal")]
    for key, value in report.facts:
        lines += [(t, 10, "normal") for t in textwrap.wrap(f"{key}: {value}", 95)]
    for note in report.notes:
        lines.append(("", 9, "normal"))
        lines += [(t, 9, "normal") for t in textwrap.wrap(note, 105)]
    y = 0.95
    for text, size, weight in lines:
        figure.text(0.06, y, text, fontsize=size, weight=weight, va="top")
        y -= 0.0024 * size
    return figure


def _table_page(caption: str, table: pd.DataFrame) -> Figure:
    rows = len(table) + 1
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.69, max(2.0, 0.3 * rows + 1.2)))
    ax = figure.add_subplot()
    ax.axis("off")
    ax.set_title(caption, fontsize=12, loc="left")
    cells = [[format_number(v) for v in record] for record in table.itertuples(index=False)]
    drawn = ax.table(
        cellText=cells or [[""] * len(table.columns)],
        colLabels=[str(c) for c in table.columns],
        loc="upper left",
        cellLoc="right",
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.auto_set_column_width(list(range(len(table.columns))))
    return figure


def render_pdf(report: Report, path: Path) -> None:
    """Write the report as PDF pages: text, one page per table, one per figure."""
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path, metadata={"Title": report.title, "Creator": "rasterlearn"}) as pdf:
        pdf.savefig(_text_page(report))
        for caption, table in report.tables:
            pdf.savefig(_table_page(caption, table))
        for caption, figure in report.figures:
            if not figure.texts and not any(ax.get_title() for ax in figure.axes):
                figure.suptitle(caption)
            pdf.savefig(figure)


def render_report(report: Report, path: Path, kind: str) -> None:
    """Write ``report`` to ``path`` as ``kind`` (``'html'`` or ``'pdf'``), not atomically.

    The tools call this on the temporary path of :func:`rasterlearn.outputs.atomic_output`.
    """
    if kind == "html":
        Path(path).write_text(render_html(report), encoding="utf-8")
    else:
        render_pdf(report, Path(path))


def write_report(report: Report, path: str | Path, overwrite: bool = False) -> Path:
    """Render ``report`` by the extension of ``path`` and write it atomically.

    Raises:
        ParameterError: for an extension other than .html, .htm or .pdf.
        OutputError: if the report exists and ``overwrite`` is false.
    """
    path = Path(path)
    kind = report_format(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        render_report(report, tmp, kind)
    return path


def pr_curve_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], iou: float) -> Figure:
    """Precision-recall curves, one panel per class.

    Args:
        curves: Per class name, ``(recall, precision, ap)`` down the ranked detections.
        iou: The IoU threshold the curves were matched at (shown in the titles).
    """
    n = max(1, len(curves))
    cols = min(3, n)
    rows = -(-n // cols)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * cols, 3.6 * rows))
    for k, (name, (recall, precision, ap)) in enumerate(curves.items()):
        ax = figure.add_subplot(rows, cols, k + 1)
        if len(recall):
            r = np.concatenate([[0.0], recall])
            p = np.concatenate([[precision[0]], precision])
            envelope = np.maximum.accumulate(p[::-1])[::-1]
            ax.plot(r, p, color="#9ab", lw=1, label="precision")
            ax.step(r, envelope, where="pre", color="#1f5fa8", lw=1.8, label="interpolated")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("Recall")
        ax.set_ylabel("Precision")
        ap_text = "no ground truth" if np.isnan(ap) else f"AP {ap:.3f}"
        ax.set_title(f"{name} (IoU \u2265 {iou:g}): {ap_text}", fontsize=10)
        ax.grid(alpha=0.3)
        if k == 0 and len(recall):
            ax.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    return figure


def confusion_figure(matrix: np.ndarray, names: list[str]) -> Figure:
    """The confusion matrix (rows: reference, columns: classified), counts and row shares."""
    matrix = np.asarray(matrix)
    size = max(4.5, 0.7 * len(names) + 2.5)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size + 1, size))
    ax = figure.add_subplot()
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(totals > 0, matrix / np.maximum(totals, 1), 0.0)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of reference pixels")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("Classified")
    ax.set_ylabel("Reference")
    if len(names) <= 20:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                f"{int(v)}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[i, j] > 0.5 else "black",
            )
    ax.set_title("Confusion matrix")
    figure.tight_layout()
    return figure
