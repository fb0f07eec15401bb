"""Pixel window arithmetic and tile grids: one small value type for every window."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rasterio.windows import Window


@dataclass(frozen=True, order=True)
class Box:
    """A pixel rectangle: rows ``[row, row + height)`` and columns ``[col, col + width)``."""

    row: int
    col: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        return self.row + self.height

    @property
    def col_end(self) -> int:
        return self.col + self.width

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def area(self) -> int:
        return self.height * self.width

    @classmethod
    def from_window(cls, window: Window) -> Box:
        """The Box of a rasterio window, rounded outwards to whole pixels."""
        r0 = int(window.row_off // 1)
        c0 = int(window.col_off // 1)
        r1 = -int(-(window.row_off + window.height) // 1)
        c1 = -int(-(window.col_off + window.width) // 1)
        return cls(r0, c0, r1 - r0, c1 - c0)

    def to_window(self) -> Window:
        return Window(self.col, self.row, self.width, self.height)

    def intersection(self, other: Box) -> Box | None:
        """The overlap of two boxes, or None where they do not overlap."""
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_end, other.row_end), min(self.col_end, other.col_end)
        if r1 <= r0 or c1 <= c0:
            return None
        return Box(r0, c0, r1 - r0, c1 - c0)

    def contains(self, other: Box) -> bool:
        return (
            self.row <= other.row
            and self.col <= other.col
            and other.row_end <= self.row_end
            and other.col_end <= self.col_end
        )

    def pad(self, rows: int, cols: int | None = None) -> Box:
        """The box grown by ``rows`` on top and bottom and ``cols`` on left and right."""
        cols = rows if cols is None else cols
        return Box(self.row - rows, self.col - cols, self.height + 2 * rows, self.width + 2 * cols)

    def centered(self, height: int, width: int) -> Box:
        """A box of the given size with the same centre (rounded down to whole pixels)."""
        row = self.row + (self.height - height) // 2
        col = self.col + (self.width - width) // 2
        return Box(row, col, height, width)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` every ``stride`` pixels along ``length`` pixels.

    The last tile is moved flush with the end so that every pixel is covered.

    Raises:
        ValueError: if the tile is longer than ``length`` or the stride is not positive.
    """
    if tile > length:
        raise ValueError(f"tile {tile} is larger than the extent {length}")
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tile_grid(
    area: Box, tile_height: int, tile_width: int, stride_y: int, stride_x: int
) -> Iterator[Box]:
    """Tiles covering ``area`` row by row, each of ``tile_height`` x ``tile_width`` pixels."""
    for row in tile_starts(area.height, tile_height, stride_y):
        for col in tile_starts(area.width, tile_width, stride_x):
            yield Box(area.row + row, area.col + col, tile_height, tile_width)
