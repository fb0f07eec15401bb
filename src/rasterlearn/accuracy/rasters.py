"""Class rasters for pixel accuracy: class names, and references read onto a classified grid.

A reference is read window by window onto the classified raster's grid: a raster reference on
the same grid directly, on another grid or CRS through a nearest-neighbour ``WarpedVRT``;
polygons are rasterized per window (pixel centres) from an STRtree. Memory is bounded by the
window size, never by the raster size.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import shapely
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.features import rasterize
from rasterio.io import DatasetReader, MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.grid import Bounds, Grid

RAT_VALUE_FIELDS = ("value", "classvalue", "class_value")
RAT_NAME_FIELDS = ("class", "classname", "class_name", "name", "label")
_RAT_USAGE_NAME, _RAT_USAGE_MINMAX = "2", "5"


@contextlib.contextmanager
def open_class_raster(path: str | Path, role: str) -> Iterator[DatasetReader]:
    """Open a one-band class raster, naming it in errors.

    Raises:
        InputError: if it is missing, unreadable or has several bands.
    """
    text = str(path)
    is_url = text.startswith(("/vsi", "http://", "https://", "s3://"))
    if not is_url and not Path(text).exists():
        raise InputError(f"{role} {text} does not exist", "check the path")
    try:
        ds = rasterio.open(text)
    except (RasterioError, OSError) as err:
        raise InputError(
            f"cannot read {role} {text}: {err}", "check that GDAL can open it (gdalinfo)"
        ) from None
    with ds:
        if ds.count != 1:
            raise InputError(
                f"{role} {Path(text).name} has {ds.count} bands; a class raster has one",
                "give the single-band raster of class values",
            )
        yield ds


def raster_class_names(ds: DatasetReader) -> dict[int, str]:
    """Class names of band 1: from its raster attribute table, else its category names.

    GDAL gives both through its VRT serialisation of the band (the dataset is copied to an
    in-memory VRT), which reads them from any format GDAL knows (.aux.xml, HFA, VRT, ...).
    """
    try:
        with MemoryFile(ext=".vrt") as memory:
            rasterio.shutil.copy(ds, memory.name, driver="VRT")
            root = ET.fromstring(memory.read())
    except (RasterioError, ET.ParseError):
        return {}
    band = root.find("VRTRasterBand")
    if band is None:
        return {}
    names = _rat_names(band.find("GDALRasterAttributeTable"))
    if names:
        return names
    categories = band.find("CategoryNames")
    if categories is None:
        return {}
    return {
        i: (c.text or "").strip()
        for i, c in enumerate(categories.findall("Category"))
        if (c.text or "").strip()
    }


def _rat_names(table: ET.Element | None) -> dict[int, str]:
    if table is None:
        return {}
    fields = []
    for f in table.findall("FieldDefn"):
        fields.append(((f.findtext("Name") or "").strip(), (f.findtext("Usage") or "").strip()))
    lower = [name.lower() for name, _ in fields]
    value_col = next((i for i, (_, u) in enumerate(fields) if u == _RAT_USAGE_MINMAX), None)
    if value_col is None:
        value_col = next((lower.index(n) for n in RAT_VALUE_FIELDS if n in lower), None)
    name_col = next((lower.index(n) for n in RAT_NAME_FIELDS if n in lower), None)
    if name_col is None:
        name_col = next((i for i, (_, u) in enumerate(fields) if u == _RAT_USAGE_NAME), None)
    if value_col is None or name_col is None:
        return {}
    names = {}
    for row in table.findall("Row"):
        cells = [c.text or "" for c in row.findall("F")]
        if max(value_col, name_col) >= len(cells):
            continue
        try:
            value = float(cells[value_col])
        except ValueError:
            continue
        if value == int(value) and cells[name_col].strip():
            names[int(value)] = cells[name_col].strip()
    return names


def class_values(data: np.ndarray, valid: np.ndarray, role: str) -> np.ndarray:
    """Class values of a read as int64; refuses rasters that are not whole numbers.

    Raises:
        ParameterError: if a valid pixel is not a whole number.
    """
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.int64, copy=False)
    valid &= np.isfinite(data)
    picked = data[valid]
    if picked.size and not np.all(np.mod(picked, 1) == 0):
        raise ParameterError(
            f"{role} holds values that are not whole numbers, so it is not a class raster",
            "give a raster of integer class values",
        )
    out = np.zeros(data.shape, dtype=np.int64)
    out[valid] = picked.astype(np.int64)
    return out


def read_classes(ds: DatasetReader | WarpedVRT, window: Window, role: str) -> np.ndarray:
    """Class values of a window, 0 where the raster is nodata, masked or outside its extent."""
    data = ds.read(1, window=window)
    valid = ds.read_masks(1, window=window) > 0
    values = class_values(data, valid, role)
    return np.where(valid, values, 0)


def _overlap(grid: Grid, bounds: Bounds) -> Window | None:
    """The window of the grid covering map bounds, None when they miss it."""
    if grid.transform.b or grid.transform.d:
        return grid.box.to_window()  # rotated: the whole grid
    box = grid.area_of(bounds)
    return box.to_window() if box is not None else None


def _same_grid(ds: DatasetReader, grid: Grid) -> bool:
    other = Grid.of(ds)
    same_transform = other.transform.almost_equals(grid.transform, precision=1e-9)
    return other.crs == grid.crs and same_transform and other.shape == grid.shape


@contextlib.contextmanager
def raster_on_grid(
    ds: DatasetReader, grid: Grid, names: tuple[str, str]
) -> Iterator[tuple[DatasetReader | WarpedVRT, Window]]:
    """The reference raster as seen on ``grid`` (nearest neighbour), and the overlap window.

    Args:
        ds: The reference raster.
        grid: The classified raster's grid.
        names: How messages name the reference and the classified raster.

    Raises:
        InputError: if one has no CRS, neither has one and the grids differ, or they do not
            overlap.
    """
    ref_name, cls_name = names
    if _same_grid(ds, grid):
        yield ds, grid.box.to_window()
        return
    if ds.crs is None or grid.crs is None:
        if ds.crs is None and grid.crs is None:
            raise InputError(
                f"{ref_name} and {cls_name} have no coordinate system and different grids",
                "georeference both, or give a reference on the classified raster's grid",
            )
        missing = ref_name if ds.crs is None else cls_name
        raise InputError(
            f"{missing} has no coordinate system, so the reference cannot be placed on the "
            "classified raster",
            "define its projection (e.g. gdal_edit -a_srs)",
        )
    overlap = _overlap(grid, transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21))
    if overlap is None:
        raise InputError(
            f"{ref_name} does not overlap {cls_name}", "check that both cover the same area"
        )
    nodata = ds.nodata if ds.nodata is not None else 0
    with WarpedVRT(
        ds,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling.nearest,
        nodata=nodata,
    ) as vrt:
        yield vrt, overlap


class PolygonReference:
    """Reference polygons rasterized window by window onto a grid (pixel centres inside).

    Features later in the file are drawn over earlier ones where they overlap.

    Args:
        geometries: Polygons in the grid's CRS.
        values: Class value per polygon (positive; 0 is not assessed).
        grid: The classified raster's grid.
    """

    def __init__(self, geometries: np.ndarray, values: np.ndarray, grid: Grid) -> None:
        self.geometries = geometries
        self.values = np.asarray(values, dtype=np.int64)
        self.grid = grid
        self.tree = shapely.STRtree(geometries)

    def overlap(self) -> Window | None:
        """The window of the grid the polygons cover, None when they miss it."""
        return _overlap(self.grid, tuple(shapely.total_bounds(self.geometries)))

    def read(self, window: Window) -> np.ndarray:
        """Class values of a window (0 outside the polygons)."""
        shape = (int(window.height), int(window.width))
        box = shapely.box(*window_bounds(window, self.grid.transform))
        hits = np.sort(self.tree.query(box))
        if not hits.size:
            return np.zeros(shape, dtype=np.int64)
        out = rasterize(
            zip(self.geometries[hits], self.values[hits].tolist(), strict=True),
            out_shape=shape,
            transform=window_transform(window, self.grid.transform),
            fill=0,
            dtype="int32",
        )
        return out.astype(np.int64)


def blocks(ds: DatasetReader, region: Window, block_size: int) -> Iterator[Window]:
    """Windows covering ``region`` about ``block_size`` pixels square, aligned to the file's
    blocks; striped files are read in full-width bands of about ``block_size`` squared pixels.
    """
    block_h, block_w = ds.block_shapes[0]
    c0, r0 = int(region.col_off), int(region.row_off)
    c1, r1 = c0 + int(region.width), r0 + int(region.height)
    if block_w >= ds.width:
        step_w = ds.width
        rows = max(1, block_size * block_size // max(1, int(region.width)))
        step_h = max(block_h, rows // block_h * block_h)
    else:
        step_w = max(block_w, block_size // block_w * block_w)
        step_h = max(block_h, block_size // block_h * block_h)
    start_r = r0 // step_h * step_h
    start_c = c0 // step_w * step_w
    for row in range(start_r, r1, step_h):
        for col in range(start_c, c1, step_w):
            top, left = max(row, r0), max(col, c0)
            bottom, right = min(row + step_h, r1), min(col + step_w, c1)
            if bottom > top and right > left:
                yield Window(left, top, right - left, bottom - top)
