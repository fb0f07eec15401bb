"""Pixel grids and windows: :class:`Grid` (a raster's pixels placed in map space), :class:`Box`
(a rectangle of a grid's pixels), the one rule rounding bounds to whole pixels, and tile grids.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

PIXEL_NOISE = 1e-6
"""Pixel coordinates this close to a whole pixel are on it: map-to-pixel transforms and
reprojections leave float noise (67.0000000037 and 66.9999999963 are both pixel edge 67)."""

Bounds = tuple[float, float, float, float]
"""``(xmin, ymin, xmax, ymax)``; in pixel coordinates ``(col_min, row_min, col_max, row_max)``."""


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

    @property
    def slices(self) -> tuple[slice, slice]:
        """The ``(rows, columns)`` slices of the box in an array of its grid."""
        return (slice(self.row, self.row_end), slice(self.col, self.col_end))

    @classmethod
    def covering(cls, bounds: Bounds) -> Box:
        """The whole pixels covering pixel bounds ``(col_min, row_min, col_max, row_max)``.

        The one rounding rule of bounds to pixels: outwards (floor, ceil), except that an edge
        within :data:`PIXEL_NOISE` of a whole pixel is on it. The box is empty (no rows or no
        columns) when the bounds have no width or height beyond that noise.
        """
        col_min, row_min, col_max, row_max = bounds
        row = math.floor(row_min + PIXEL_NOISE)
        col = math.floor(col_min + PIXEL_NOISE)
        height = math.ceil(row_max - PIXEL_NOISE) - row
        width = math.ceil(col_max - PIXEL_NOISE) - col
        return cls(row, col, height, width)

    @classmethod
    def from_window(cls, window: Window) -> Box:
        """The Box of a rasterio window, rounded outwards to whole pixels (see :meth:`covering`)."""
        return cls.covering(
            (
                window.col_off,
                window.row_off,
                window.col_off + window.width,
                window.row_off + window.height,
            )
        )

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

    def translate(self, rows: int, cols: int) -> Box:
        """The box moved down by ``rows`` and right by ``cols``."""
        return Box(self.row + rows, self.col + cols, self.height, self.width)

    def relative_to(self, origin: Box) -> Box:
        """The box in the pixels of ``origin`` (whose top-left pixel becomes ``(0, 0)``)."""
        return self.translate(-origin.row, -origin.col)

    def footprint(self, transform: Affine) -> shapely.Polygon:
        """The box's outline in the coordinates ``transform`` maps its grid's pixels to."""
        t = _window_transform(transform, self)
        w, h = self.width, self.height
        if t.b == 0 and t.d == 0:  # not rotated: a box (built a tenth faster, once a chip)
            x = sorted((t.c, t.c + t.a * w))
            y = sorted((t.f, t.f + t.e * h))
            return shapely.box(x[0], y[0], x[1], y[1])
        return shapely.Polygon([t @ c for c in ((0, 0), (w, 0), (w, h), (0, h))])


def _window_transform(transform: Affine, box: Box) -> Affine:
    """The transform of a box's pixels, given the transform of its grid."""
    return transform @ Affine.translation(box.col, box.row)


def object_chip(pixel_bounds: Bounds, shape: tuple[int, int] | None = None) -> Box:
    """The chip cut for an object, the same in training data and at inference.

    Args:
        pixel_bounds: The object's bounds in grid pixels.
        shape: ``(height, width)`` of a chip centred on the object; None for the object's
            bounding box (at least one pixel each way).
    """
    bbox = Box.covering(pixel_bounds)
    bbox = Box(bbox.row, bbox.col, max(1, bbox.height), max(1, bbox.width))
    return bbox if shape is None else bbox.centered(*shape)


@dataclass(frozen=True)
class Grid:
    """Pixels placed in map space: a raster's, a chip's, or a raster resampled on read.

    Attributes:
        transform: Pixel (column, row) to map (or, without a georeference, pixel) coordinates.
        width: Columns.
        height: Rows.
        crs: Coordinate system; None for a raster without georeference, or where not known.
    """

    transform: Affine
    width: int
    height: int
    crs: CRS | None = None

    @classmethod
    def of(cls, ds: DatasetReader | WarpedVRT) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(ds.transform, ds.width, ds.height, ds.crs if ds.crs else None)

    @property
    def box(self) -> Box:
        """All the grid's pixels."""
        return Box(0, 0, self.height, self.width)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def cell_size(self) -> tuple[float, float]:
        """``(x, y)`` size of a pixel in map units."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def footprint(self) -> shapely.Polygon:
        """The grid's outline in map coordinates."""
        return self.box.footprint(self.transform)

    def window(self, box: Box) -> Grid:
        """The grid of a box of this grid's pixels (which may reach past the grid)."""
        transform = _window_transform(self.transform, box)
        return replace(self, transform=transform, width=box.width, height=box.height)

    def resampled(self, height: int, width: int) -> Grid:
        """The grid's extent cut into ``height`` x ``width`` pixels."""
        scale = Affine.scale(self.width / width, self.height / height)
        return replace(self, transform=self.transform @ scale, width=width, height=height)

    def to_pixels(self, geoms: np.ndarray | shapely.Geometry) -> np.ndarray | shapely.Geometry:
        """Geometries in map coordinates moved to this grid's pixel coordinates."""
        inverse = ~self.transform
        return shapely.transform(geoms, lambda xy: np.column_stack(inverse @ (xy[:, 0], xy[:, 1])))

    def box_of(self, bounds: Bounds) -> Box:
        """The pixels covering map bounds (see :meth:`Box.covering`), inside the grid or not."""
        xmin, ymin, xmax, ymax = bounds
        inverse = ~self.transform
        corners = [inverse @ (x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
        cols, rows = zip(*corners, strict=True)
        return Box.covering((min(cols), min(rows), max(cols), max(rows)))

    def area_of(self, bounds: Bounds) -> Box | None:
        """The grid pixels covering map bounds, None when the bounds miss the grid."""
        return self.box.intersection(self.box_of(bounds))


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
