"""Classified rasters as ArcGIS, QGIS and GDAL read them: class values, colours and names.

The raster is a single-band tiled, compressed GeoTIFF (or a Cloud-Optimized GeoTIFF) of the
model's class **Values**. Its colour table and nodata live in the TIFF; the class names live
in a GDAL PAM side-car (``<name>.aux.xml``) as category names and as a raster attribute
table with ArcGIS's fields ``Value, Class, Red, Green, Blue``, which GDAL, QGIS and ArcGIS
read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from rasterlearn.geo.grid import Box

BLOCK_SIZE = 512

ClassEntry = tuple[int, str, tuple[int, int, int]]
"""``(value, name, (red, green, blue))`` of one class."""


@dataclass(frozen=True)
class ClassRasterType:
    """Pixel type and nodata value that hold a set of class values."""

    dtype: str
    nodata: int

    @property
    def has_colormap(self) -> bool:
        return self.dtype in ("uint8", "uint16")  # GeoTIFF colour tables need these


def class_raster_type(values: Sequence[int]) -> ClassRasterType:
    """The smallest type holding the class values (and 0) with a spare value for nodata."""
    low, high = min([0, *values]), max([0, *values])
    if low >= 0 and high < 255:
        return ClassRasterType("uint8", 255)
    if low >= 0 and high < 65535:
        return ClassRasterType("uint16", 65535)
    return ClassRasterType("int32", -(2**31))


def pixel_bytes(classes: Sequence[ClassEntry], probabilities: bool = False) -> int:
    """Bytes a pixel of a classified raster (or of its probability raster) takes."""
    if probabilities:
        return 4 * len(classes)
    return np.dtype(class_raster_type([v for v, _, _ in classes]).dtype).itemsize


class ClassifiedRasterWriter:
    """Write a classified raster window by window.

    Args:
        path: The file to write (a staging path; see :func:`rasterlearn.outputs.staged_files`).
        transform: Grid transform.
        crs: Grid CRS (None for pixel space).
        width: Columns.
        height: Rows.
        classes: The model's classes.
        probabilities: Write a float32 probability raster (one band a class) instead of
            class values.
    """

    def __init__(
        self,
        path: Path,
        transform: object,
        crs: object,
        width: int,
        height: int,
        classes: Sequence[ClassEntry],
        probabilities: bool = False,
    ) -> None:
        self.path = path
        self.classes = list(classes)
        self.probabilities = probabilities
        kind = class_raster_type([v for v, _, _ in classes])
        self.kind = kind
        dtype, nodata = ("float32", float("nan")) if probabilities else (kind.dtype, kind.nodata)
        count = len(self.classes) if probabilities else 1
        profile = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": count,
            "dtype": dtype,
            "nodata": nodata,
            "transform": transform,
            "crs": crs,
            "compress": "deflate",
            "predictor": 3 if probabilities else 2,
            "tiled": True,
            "blockxsize": BLOCK_SIZE,
            "blockysize": BLOCK_SIZE,
            "BIGTIFF": "IF_SAFER",
            "SPARSE_OK": True,
            "interleave": "band",
        }
        if not probabilities and kind.dtype == "int32":
            profile["predictor"] = 1
        self._ds = rasterio.open(path, "w", **profile)
        if probabilities:
            for i, (_, name, _) in enumerate(self.classes, start=1):
                self._ds.set_band_description(i, name)
        else:
            self._ds.set_band_description(1, "Class")
            if kind.has_colormap:
                colours = {0: (0, 0, 0, 0)}
                colours.update({v: (*rgb, 255) for v, _, rgb in self.classes})
                self._ds.write_colormap(1, colours)

    def write(self, box: Box, data: np.ndarray) -> None:
        """Write ``data`` (rows, cols) of class values, -1 = nodata; or (K, rows, cols)
        probabilities with NaN for nodata."""
        window = Window(box.col, box.row, box.width, box.height)
        if self.probabilities:
            self._ds.write(data.astype(np.float32), window=window)
            return
        out = np.where(data < 0, self.kind.nodata, data).astype(self.kind.dtype)
        self._ds.write(out, 1, window=window)

    def write_resampled(self, source: Path) -> None:
        """Fill the whole raster from another classified (or probability) raster of the same
        classes on another grid, resampled to this one (nearest), a block at a time."""
        height, width = self._ds.height, self._ds.width
        with (
            rasterio.open(source) as src,
            WarpedVRT(
                src,
                crs=self._ds.crs or src.crs,
                transform=self._ds.transform,
                width=width,
                height=height,
                resampling=Resampling.nearest,
                nodata=src.nodata,
            ) as vrt,
        ):
            for row in range(0, height, BLOCK_SIZE):
                for col in range(0, width, BLOCK_SIZE):
                    box = Box(row, col, min(BLOCK_SIZE, height - row), min(BLOCK_SIZE, width - col))
                    data = vrt.read(window=box.to_window())
                    if not self.probabilities:
                        data = np.where(data[0] == src.nodata, -1, data[0])
                    self.write(box, data)

    def close(self) -> None:
        if not self._ds.closed:
            self._ds.close()

    def finish(self, cog: bool = False) -> None:
        """Close the file, convert it to a COG if asked, and write the class names."""
        self.close()
        if cog:
            tmp = self.path.with_name(self.path.stem + ".cogtmp.tif")
            self.path.rename(tmp)
            rasterio.shutil.copy(
                tmp,
                self.path,
                driver="COG",
                COMPRESS="DEFLATE",
                BLOCKSIZE=BLOCK_SIZE,
                OVERVIEW_RESAMPLING="NEAREST" if not self.probabilities else "AVERAGE",
                BIGTIFF="IF_SAFER",
            )
            tmp.unlink()
        if not self.probabilities:
            write_class_names(self.path, self.classes)


def pam_xml(classes: Sequence[ClassEntry]) -> str:
    """The PAM side-car XML with category names and a raster attribute table."""
    names = {0: ""} | {v: n for v, n, _ in classes if v >= 0}
    categories = ""
    if max(names) < 65536:
        categories = (
            "<CategoryNames>"
            + "".join(
                f"<Category>{escape(names.get(i, ''))}</Category>" for i in range(max(names) + 1)
            )
            + "</CategoryNames>"
        )
    # GDAL field types: 0 integer, 2 string; usages: 5 MinMax (the value), 2 name, 6-8 RGB
    fields = [("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    defs = "".join(
        f'<FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>'
        for i, (n, t, u) in enumerate(fields)
    )
    rows = "".join(
        f'<Row index="{i}"><F>{v}</F><F>{escape(n)}</F><F>{r}</F><F>{g}</F><F>{b}</F></Row>'
        for i, (v, n, (r, g, b)) in enumerate(classes)
    )
    return (
        '<PAMDataset><PAMRasterBand band="1">'
        f'{categories}<GDALRasterAttributeTable tableType="thematic">{defs}{rows}'
        "</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>\n"
    )


def write_class_names(path: Path, classes: Sequence[ClassEntry]) -> Path:
    """Write the class names of a classified raster to its ``.aux.xml`` side-car."""
    aux = path.with_name(path.name + ".aux.xml")
    aux.write_text(pam_xml(classes), encoding="utf-8")
    return aux
