"""How a raster is shown on a map in its own coordinates: a tile pyramid over its pixels, a band
combination, a stretch from band statistics, and RGBA PNG tiles.

The map's coordinates are the raster's own (its CRS, or pixel coordinates for a raster without
a georeference, with y negated so that north, the first row, is up): nothing is reprojected.
Level ``z`` of the pyramid shows ``2 ** (levels - z)`` raster columns per tile pixel; the finest
level is the raster's full resolution and the coarsest fits the raster in one tile.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.grid import Box, Grid
from rasterlearn.geo.raster import RasterSource
from rasterlearn.geo.stats import BandStats, chip_band_stats

TILE_SIZE = 256
STRETCHES = ("none", "minmax", "stddev")
"""``none``: the data type's range (0-255 for 8-bit); ``minmax``: each band's minimum to maximum;
``stddev``: each band's mean +- :data:`STDDEV_FACTOR` standard deviations, within min-max."""
STDDEV_FACTOR = 2.0
STATS_PIXELS = 1024
"""The long side of the decimated read the display statistics are computed from."""


@dataclass(frozen=True)
class TilePyramid:
    """Tiles over a north-up raster's pixels, in the raster's own map coordinates.

    Attributes:
        grid: The raster's grid.
        tile_size: Tile side in pixels.
    """

    grid: Grid
    tile_size: int = TILE_SIZE

    def __post_init__(self) -> None:
        t = self.grid.transform
        if t.b != 0 or t.d != 0:
            raise InputError(
                "the raster is rotated and cannot be shown in its own coordinates",
                "warp it north-up first (gdalwarp)",
            )

    @property
    def levels(self) -> int:
        """The finest level (full resolution); level 0 shows the raster in one tile."""
        longest = max(self.grid.width, self.grid.height)
        return max(0, math.ceil(math.log2(longest / self.tile_size)))

    @property
    def flip_y(self) -> bool:
        """Whether map y is the raster's y negated (rows that go up in y: pixel space)."""
        return self.grid.transform.e > 0

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the raster in map coordinates."""
        t, g = self.grid.transform, self.grid
        xs = (t.c, t.c + t.a * g.width)
        ys = [t.f, t.f + t.e * g.height]
        if self.flip_y:
            ys = [-y for y in ys]
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def resolutions(self) -> list[float]:
        """Map units per tile pixel at each level, coarsest first."""
        x_size = self.grid.cell_size[0]
        return [x_size * 2 ** (self.levels - z) for z in range(self.levels + 1)]

    def tile(self, z: int, x: int, y: int) -> tuple[Box, Box] | None:
        """The raster pixels tile ``(z, x, y)`` shows and where they go in the tile.

        Returns:
            ``(pixels, placement)``: the box of raster pixels inside the raster, and the box of
            tile pixels they fill; None for a tile wholly outside the raster.

        Raises:
            ParameterError: for a level outside the pyramid.
        """
        if not 0 <= z <= self.levels:
            raise ParameterError(f"tile level {z} is not in 0-{self.levels}", "ask another tile")
        cols_per_px = 2.0 ** (self.levels - z)
        rows_per_px = cols_per_px * self.grid.cell_size[0] / self.grid.cell_size[1]
        size = self.tile_size
        c0, r0 = x * size * cols_per_px, y * size * rows_per_px
        c1, r1 = c0 + size * cols_per_px, r0 + size * rows_per_px
        inside = Box.covering((c0, r0, c1, r1)).intersection(self.grid.box)
        if inside is None:
            return None
        place = Box.covering(
            (
                (inside.col - c0) / cols_per_px,
                (inside.row - r0) / rows_per_px,
                (inside.col_end - c0) / cols_per_px,
                (inside.row_end - r0) / rows_per_px,
            )
        ).intersection(Box(0, 0, size, size))
        return (inside, place) if place is not None else None


def display_stats(source: RasterSource) -> list[BandStats]:
    """Per-band statistics of a decimated read of the whole raster (from its overviews)."""
    grid = source.info.grid
    scale = max(1.0, max(grid.width, grid.height) / STATS_PIXELS)
    shape = (max(1, round(grid.height / scale)), max(1, round(grid.width / scale)))
    data, valid = source.read_scaled(grid.box, shape)
    return chip_band_stats(data, valid)


def stretch_range(stats: BandStats, dtype: str, stretch: str) -> tuple[float, float]:
    """The band values shown black and white under ``stretch`` (see :data:`STRETCHES`).

    Raises:
        ParameterError: for an unknown stretch.
    """
    if stretch not in STRETCHES:
        raise ParameterError(f"stretch {stretch!r} is unknown", "one of " + ", ".join(STRETCHES))
    if stats.num == 0:
        return (0.0, 1.0)
    if stretch == "none" and np.dtype(dtype).kind in "ui":
        limits = np.iinfo(np.dtype(dtype))
        return (float(limits.min), float(limits.max))
    low, high = stats.min, stats.max
    if stretch == "stddev":
        low = max(low, stats.m1 - STDDEV_FACTOR * stats.std)
        high = min(high, stats.m1 + STDDEV_FACTOR * stats.std)
    return (low, high) if high > low else (low, low + 1.0)


def default_stretch(dtype: str) -> str:
    """8-bit imagery as it is; anything else stretched by its standard deviation."""
    return "none" if dtype == "uint8" else "stddev"


def default_bands(count: int) -> list[int]:
    """Bands shown as red, green, blue (1-based): the first three, or the first as grey."""
    return [1, 2, 3] if count >= 3 else [1]


def _tile_read(
    source: RasterSource, pyramid: TilePyramid, z: int, x: int, y: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, Box] | None]:
    """A transparent RGBA tile, and the raster's pixels it shows (data, validity and where
    they go in the tile), read at the tile's scale; None outside the raster."""
    size = pyramid.tile_size
    rgba = np.zeros((4, size, size), dtype=np.uint8)
    found = pyramid.tile(z, x, y)
    if found is None:
        return rgba, None
    pixels, place = found
    data, valid = source.read_scaled(pixels, place.shape)
    return rgba, (data, valid, place)


def render_tile(
    source: RasterSource,
    pyramid: TilePyramid,
    z: int,
    x: int,
    y: int,
    bands: list[int],
    ranges: list[tuple[float, float]],
) -> np.ndarray:
    """Tile ``(z, x, y)`` as ``(4, size, size)`` RGBA bytes: the chosen bands (one: grey)
    stretched to 0-255 by ``ranges`` (one per chosen band), transparent outside the raster
    and on nodata."""
    rgba, read = _tile_read(source, pyramid, z, x, y)
    if read is None:
        return rgba
    data, valid, place = read
    for i, band in enumerate(bands if len(bands) == 3 else bands[:1] * 3):
        low, high = ranges[min(i, len(ranges) - 1)]
        values = data[band - 1].astype(np.float32)
        scaled = np.clip((values - low) * (255.0 / (high - low)), 0, 255)
        rgba[(i, *place.slices)] = np.rint(scaled).astype(np.uint8)
    rgba[(3, *place.slices)] = np.where(valid, 255, 0).astype(np.uint8)
    return rgba


def check_bands(bands: list[int], count: int) -> None:
    """Refuse a band combination the raster cannot show.

    Raises:
        ParameterError: not one or three bands, or a band the raster lacks.
    """
    if len(bands) not in (1, 3) or any(not 1 <= b <= count for b in bands):
        raise ParameterError(
            f"bands {bands} cannot be shown from a raster of {count} band(s)",
            f"give one or three band numbers in 1-{count}",
        )


def png_bytes(rgba: np.ndarray) -> bytes:
    """A ``(4, rows, columns)`` uint8 array as an RGBA PNG (zlib's fastest level: tiles are
    made on request)."""
    _, rows, cols = rgba.shape
    scanlines = np.zeros((rows, 1 + 4 * cols), dtype=np.uint8)  # filter byte 0 per row
    scanlines[:, 1:] = np.moveaxis(rgba, 0, -1).reshape(rows, 4 * cols)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", cols, rows, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


COLORMAP = "colormap"
"""The display of a classified raster: band 1's class values in its colour table's colours."""


def colormap_lut(source: RasterSource) -> np.ndarray:
    """Band 1's colour table as a lookup table ``(values, 4)`` of RGBA bytes: class 0
    (background) and values the table lacks are transparent.

    Raises:
        InputError: for a raster without a colour table on an integer band 1.
    """
    colours = source.colormap()
    dtype = np.dtype(source.info.dtype)
    if not colours or dtype.kind != "u" or dtype.itemsize > 2:
        raise InputError(
            f"{source.name} has no colour table, so it cannot be shown as classes",
            "give a classified raster (classify-pixels writes one with its colour table)",
        )
    lut = np.zeros((int(np.iinfo(dtype).max) + 1, 4), dtype=np.uint8)
    for value, rgb in colours.items():
        if 0 < value < len(lut):
            lut[value] = (*rgb, 255)
    return lut


def render_classes(
    source: RasterSource, pyramid: TilePyramid, z: int, x: int, y: int, lut: np.ndarray
) -> np.ndarray:
    """Tile ``(z, x, y)`` of a classified raster as ``(4, size, size)`` RGBA bytes: each
    pixel its class's colour from ``lut`` (:func:`colormap_lut`), transparent outside the
    raster and on nodata. Class values are read by nearest neighbour (never averaged)."""
    rgba, read = _tile_read(source, pyramid, z, x, y)
    if read is None:
        return rgba
    data, valid, place = read
    coloured = np.moveaxis(lut[data[0]], -1, 0)
    coloured[3] = np.where(valid, coloured[3], 0)
    rgba[(slice(None), *place.slices)] = coloured
    return rgba
