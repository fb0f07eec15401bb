"""Accuracy tables on disk (CSV, or a GeoPackage attribute table) and all-or-nothing outputs."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyogrio

from rasterlearn.errors import ParameterError
from rasterlearn.outputs import atomic_output, check_output_path

TABLE_FORMATS = {".csv": "csv", ".gpkg": "gpkg"}
"""Table format by output extension."""


def table_format(path: str | Path) -> str:
    """``'csv'`` or ``'gpkg'``, from an output table's extension.

    Raises:
        ParameterError: for any other extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ParameterError(
            f"accuracy table {path} must end in .csv or .gpkg",
            "name the table e.g. accuracy.csv, or accuracy.gpkg for a GeoPackage table",
        )
    return TABLE_FORMATS[suffix]


def write_table(table: pd.DataFrame, path: Path, kind: str, layer: str) -> None:
    """Write ``table`` to ``path`` (not atomically: call it on a temporary path).

    Args:
        table: The rows to write.
        path: Where to write (its extension is not looked at).
        kind: ``'csv'``, or ``'gpkg'`` for a GeoPackage 1.3 attribute table without geometry.
        layer: Name of the GeoPackage table.
    """
    if kind == "csv":
        table.to_csv(path, index=False)
        return
    with warnings.catch_warnings():
        # The temporary name does not end in .gpkg; GDAL warns about that and writes it anyway.
        warnings.filterwarnings("ignore", message="The filename extension should be")
        pyogrio.write_dataframe(
            pd.DataFrame(table),
            path,
            driver="GPKG",
            layer=layer,
            dataset_options={"VERSION": "1.3"},
        )


def check_outputs(paths: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, outputs that exist (without ``overwrite``) or repeat.

    Raises:
        OutputError: if an output exists and ``overwrite`` is false.
        ParameterError: if two outputs are the same file.
    """
    seen: set[Path] = set()
    for path in paths:
        resolved = path.absolute()
        if resolved in seen:
            raise ParameterError(
                f"output {path} is given twice", "give each output its own file name"
            )
        seen.add(resolved)
        check_output_path(resolved, overwrite, folder=False)


@contextlib.contextmanager
def atomic_outputs(paths: list[Path], overwrite: bool) -> Iterator[list[Path]]:
    """Temporary paths for several outputs: all are moved into place, or none on an error."""
    check_outputs(paths, overwrite)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_output(p, overwrite=overwrite)) for p in paths]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.3f}"
    return str(value)


def text_table(rows: list[list[object]], header: list[str]) -> list[str]:
    """A plain aligned table as lines (first column left, the others right)."""
    cells = [header, *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([row[0].ljust(widths[0]), *rest]).rstrip())
    return lines
