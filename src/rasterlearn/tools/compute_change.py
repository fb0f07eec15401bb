"""Compute Change: two classified rasters of one model over two dates -> a from-to change table.

The "to" raster is read onto the "from" raster's grid (nearest neighbour, window by window;
see :mod:`rasterlearn.geo.pair`), and the class transitions are counted block by block,
so memory is bounded by the block size. Optionally the transitions are written as a raster of
transition codes on the "from" grid.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.enums import Resampling

from rasterlearn.accuracy.rasters import class_values, open_class_raster, raster_class_names
from rasterlearn.accuracy.tables import atomic_outputs, check_outputs, table_format, write_table
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.classified_raster import ClassEntry, ClassifiedRasterWriter
from rasterlearn.geo.grid import Box, Grid
from rasterlearn.geo.pair import AlignedRaster, check_pair
from rasterlearn.geo.raster import RasterSource, bounded_gdal_cache, open_raster_input
from rasterlearn.outputs import staged_files
from rasterlearn.progress import progress_bar
from rasterlearn.tools.declaration import INPUT, OUTPUT, Parameter, declare
from rasterlearn.tools.parameters import BLOCK_SIZE, OVERWRITE, output

TABLE_COLUMNS = ("FromValue", "FromClass", "ToValue", "ToClass", "Changed", "Pixels", "Area")
"""The columns of the change table, one row per transition (class pair)."""


@dataclass(frozen=True)
class ChangeResult:
    """What compute-change found and wrote.

    Attributes:
        table: One row per transition: the classes at both dates (values and names), whether
            they differ, the pixels and the area (map units squared of the "from" raster).
        out_change_table: The table written.
        out_change_raster: The raster of transition codes written, or None.
        code_base: A transition's code is ``from_value * code_base + to_value``; pixels whose
            class did not change are 0.
    """

    table: pd.DataFrame
    out_change_table: Path
    out_change_raster: Path | None
    code_base: int

    @property
    def changed_area(self) -> float:
        """The area whose class changed."""
        return float(self.table.loc[self.table["Changed"], "Area"].sum())


def compute_change(
    from_raster: str | Path,
    to_raster: str | Path,
    out_change_table: str | Path,
    out_change_raster: str | Path | None = None,
    overwrite: bool = False,
    *,
    block_size: int = 1024,
) -> ChangeResult:
    """Count the class transitions between two classified rasters of one area.

    The rasters are classified by the same model for two dates (classify-pixels). Pixels that
    are nodata or masked in either raster, or outside the "to" raster, are left out; class 0
    (background) is a class like the others.

    Returns:
        The table and the paths written.

    Raises:
        InputError: for missing or multi-band rasters, a missing CRS, rasters that do not
            overlap or share no valid pixel.
        OutputError: if an output exists and ``overwrite`` is false.
    """
    if block_size < 16:
        raise ParameterError(f"block_size must be at least 16, not {block_size}")
    table_path = Path(out_change_table)
    kind = table_format(table_path)
    raster_path = Path(out_change_raster) if out_change_raster is not None else None
    outputs = [table_path] + ([raster_path] if raster_path is not None else [])
    check_outputs(outputs, overwrite)
    labels = (
        f"from raster {Path(str(from_raster)).name}",
        f"to raster {Path(str(to_raster)).name}",
    )
    with (
        bounded_gdal_cache(),
        open_class_raster(from_raster, "from raster") as first_ds,
        open_class_raster(to_raster, "to raster") as second_ds,
    ):
        names = {**raster_class_names(second_ds), **raster_class_names(first_ds)}
    first = open_raster_input(from_raster)[0]
    later = open_raster_input(to_raster)[0]
    with contextlib.closing(first), contextlib.closing(later), bounded_gdal_cache():
        check_pair(first, later)
        grid = first.info.grid
        second = AlignedRaster(later.spec, later.name, grid, Resampling.nearest)
        with contextlib.closing(second):
            boxes = _blocks(grid, block_size)
            counts: Counter[tuple[int, int]] = Counter()
            with progress_bar("Counting class transitions", len(boxes)) as advance:
                for box in boxes:
                    before, after, valid = _read_pair(first, second, box, labels)
                    pairs, n = np.unique(
                        np.stack([before[valid], after[valid]]), axis=1, return_counts=True
                    )
                    counts.update(
                        {(int(a), int(b)): int(k) for (a, b), k in zip(pairs.T, n, strict=True)}
                    )
                    advance(1)
            if not counts:
                raise InputError(
                    f"no pixel is valid in both the {labels[0]} and the {labels[1]}",
                    "give two classified rasters of one area",
                )
            table = _table(counts, names, abs(grid.transform.determinant))
            base = 10 ** len(str(max(max(k) for k in counts)))
            with (
                atomic_outputs([table_path], overwrite) as temporary,
                contextlib.ExitStack() as out,
            ):
                write_table(table, temporary[0], kind, layer=table_path.stem)
                if raster_path is not None:  # staged with its .aux.xml side-car
                    staged = out.enter_context(staged_files(raster_path, overwrite))
                    _write_codes(staged, (first, second), grid, boxes, (counts, names, base))
    return ChangeResult(table, table_path, raster_path, base)


def _blocks(grid: Grid, size: int) -> list[Box]:
    """Boxes of at most ``size`` x ``size`` pixels covering the grid, row by row."""
    return [
        Box(row, col, min(size, grid.height - row), min(size, grid.width - col))
        for row in range(0, grid.height, size)
        for col in range(0, grid.width, size)
    ]


def _read_pair(
    first: RasterSource, second: RasterSource, box: Box, labels: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class values of a box in both rasters, and where both are valid."""
    before, valid = first.read_box(box)
    after, valid2 = second.read_box(box)
    valid &= valid2
    return (
        class_values(before[0], valid, labels[0]),
        class_values(after[0], valid, labels[1]),
        valid,
    )


def _table(counts: Counter, names: dict[int, str], pixel_area: float) -> pd.DataFrame:
    rows = [
        (a, names.get(a, str(a)), b, names.get(b, str(b)), a != b, n, n * pixel_area)
        for (a, b), n in sorted(counts.items())
    ]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _write_codes(
    path: Path,
    rasters: tuple[RasterSource, RasterSource],
    grid: Grid,
    boxes: list[Box],
    found: tuple[Counter, dict[int, str], int],
) -> None:
    """The raster of transition codes (0: unchanged, nodata: not valid in both)."""
    counts, names, base = found
    classes: list[ClassEntry] = [
        (a * base + b, f"{names.get(a, a)} -> {names.get(b, b)}", _colour(a * base + b))
        for a, b in sorted(counts)
        if a != b
    ]
    writer = ClassifiedRasterWriter(
        path, grid.transform, grid.crs, grid.width, grid.height, classes
    )
    try:
        for box in boxes:
            before, after, valid = _read_pair(*rasters, box, ("from raster", "to raster"))
            code = np.where(before == after, 0, before * base + after)
            writer.write(box, np.where(valid, code, -1))
    finally:
        writer.close()
    writer.finish()


def _colour(code: int) -> tuple[int, int, int]:
    """A fixed, distinct-looking colour per transition code (golden-angle hues)."""
    hue = (code * 0.618033988749895) % 1.0
    r, g, b = (0.5 + 0.5 * math.cos(2 * math.pi * (hue + k / 3)) for k in range(3))
    return (round(255 * r), round(255 * g), round(255 * b))


def _result_lines(result: ChangeResult) -> list[str]:
    table = result.table
    changed = table[table["Changed"]]
    lines = [
        f"{len(changed)} class transitions over {int(changed['Pixels'].sum())} pixels "
        f"(area {result.changed_area:g})"
    ]
    written = [str(result.out_change_table)]
    if result.out_change_raster is not None:
        written.append(f"{result.out_change_raster} (codes FROM * {result.code_base} + TO)")
    lines.append(f"Wrote {', '.join(written)}")
    return lines


TOOL = declare(
    compute_change,
    label="Compute Change",
    rest_name="ComputeChange",
    command="compute-change",
    summary="Compute Change: a from-to table of class transitions between two classified rasters.",
    parameters=[
        Parameter(
            "from_raster",
            "raster",
            "Classified raster of the earlier date (e.g. from classify-pixels).",
            INPUT,
            label="From Raster",
            positional=True,
        ),
        Parameter(
            "to_raster",
            "raster",
            "Classified raster of the later date, by the same model (any grid; read onto the "
            "from raster's by nearest neighbour).",
            INPUT,
            label="To Raster",
            positional=True,
        ),
        output(
            "out_change_table",
            "file",
            "Output table (.csv or .gpkg): one row per class transition with pixels and area "
            "(map units squared).",
            "Output Change Table",
            "outChangeTableName",
        ),
        Parameter(
            "out_change_raster",
            "file",
            "Optional raster of transition codes FROM * base + TO on the from raster's grid "
            "(0: unchanged), with a colour table and names.",
            OUTPUT,
            label="Output Change Raster",
            rest_name="outChangeRasterName",
        ),
        OVERWRITE,
        BLOCK_SIZE,
    ],
    report=_result_lines,
)
