"""Chip image files as ArcGIS writes them: GeoTIFF, or PNG/JPEG with a world file."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from rasterlearn.errors import ParameterError


@dataclass(frozen=True)
class ChipImageFormat:
    """One ``image_chip_format`` keyword and how its files are written."""

    keyword: str
    driver: str
    extension: str
    world_file_extension: str | None
    creation_options: dict[str, str]

    def check(self, band_count: int, dtype: str) -> None:
        """Refuse data the format cannot hold.

        Raises:
            ParameterError: PNG/JPEG asked for more than 3 bands or data that is not 8-bit.
        """
        if self.driver == "GTiff":
            return
        if band_count > 3 or dtype != "uint8":
            raise ParameterError(
                f"image chip format {self.keyword} holds at most 3 bands of 8-bit data, but the "
                f"raster has {band_count} band(s) of {dtype}",
                "use --image-chip-format TIFF",
            )


CHIP_IMAGE_FORMATS = {
    "TIFF": ChipImageFormat("TIFF", "GTiff", ".tif", None, {}),
    "PNG": ChipImageFormat("PNG", "PNG", ".png", ".pgw", {}),
    "JPEG": ChipImageFormat("JPEG", "JPEG", ".jpg", ".jgw", {"QUALITY": "90"}),
}

# Class rasters must stay lossless: JPEG exports get PNG label rasters.
LABEL_IMAGE_FORMATS = {
    "TIFF": CHIP_IMAGE_FORMATS["TIFF"],
    "PNG": CHIP_IMAGE_FORMATS["PNG"],
    "JPEG": CHIP_IMAGE_FORMATS["PNG"],
}


def chip_image_format(keyword: str) -> ChipImageFormat:
    """The chip format for a keyword (TIFF, PNG, JPEG; case-insensitive)."""
    fmt = CHIP_IMAGE_FORMATS.get(keyword.upper())
    if fmt is None:
        raise ParameterError(
            f"unknown image chip format '{keyword}'", f"use one of {', '.join(CHIP_IMAGE_FORMATS)}"
        )
    return fmt


def world_file_lines(transform: Affine) -> list[str]:
    """The six lines of an Esri world file; it refers to the centre of the upper-left pixel."""
    x, y = transform @ (0.5, 0.5)
    return [f"{v:.12f}" for v in (transform.a, transform.d, transform.b, transform.e, x, y)]


def write_chip_image(
    path: Path,
    data: np.ndarray,
    fmt: ChipImageFormat,
    transform: Affine | None,
    crs: CRS | None,
    nodata: float | None = None,
    colormap: dict[int, tuple[int, int, int]] | None = None,
) -> None:
    """Write a ``(bands, rows, cols)`` array as one chip file, keeping its georeference."""
    profile = {
        "driver": fmt.driver,
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        **fmt.creation_options,
    }
    georeferenced = transform is not None and (crs is not None or transform != Affine.identity())
    if georeferenced and fmt.world_file_extension is None:
        profile["transform"] = transform
        if crs is not None:
            profile["crs"] = crs
    if nodata is not None and fmt.driver == "GTiff":
        profile["nodata"] = nodata
    # PNG/JPEG get their georeference from our world file and .aux.xml, not from GDAL's PAM.
    env = (
        rasterio.Env(GDAL_PAM_ENABLED="NO")
        if fmt.world_file_extension
        else contextlib.nullcontext()
    )
    with env, rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colormap:
            dst.write_colormap(1, colormap)
    if georeferenced and fmt.world_file_extension is not None:
        path.with_suffix(fmt.world_file_extension).write_text(
            "\n".join(world_file_lines(transform)) + "\n"
        )
        if crs is not None:
            path.with_name(path.name + ".aux.xml").write_text(_pam_srs_xml(crs))


def _pam_srs_xml(crs: CRS) -> str:
    """A GDAL PAM side-car holding only the coordinate system (read by GDAL and ArcGIS)."""
    wkt = crs.to_wkt().replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return f"<PAMDataset>\n  <SRS>{wkt}</SRS>\n</PAMDataset>\n"
