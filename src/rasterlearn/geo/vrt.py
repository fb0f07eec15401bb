"""VRT datasets written as XML text: rasters stacked band by band or mosaicked side by side.

A VRT built here is the ``spec`` of a :class:`~rasterlearn.geo.raster.RasterSource`: XML text
GDAL opens like a file, small enough to send to cluster workers, reading its sources window by
window (a remote source through ``/vsicurl/`` byte ranges) and never copying them.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError

from rasterlearn.errors import InputError
from rasterlearn.geo.paths import network_env

GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def xml_text(text: str) -> str:
    """Text escaped for an XML element (``&``, ``<``, ``>``), as ``xml.sax.saxutils.escape``
    without its import of urllib."""
    return html.escape(text, quote=False)


@dataclass(frozen=True)
class RasterFacts:
    """What a VRT needs to know of a source raster, read from its header.

    Attributes:
        path: The GDAL path (a file, a ``/vsicurl/`` URL...).
        crs: Coordinate system, or None.
        transform: Pixel to map transform.
        width: Columns.
        height: Rows.
        dtypes: Data type of each band.
        nodata: Nodata value, or None.
        descriptions: Band descriptions ("" where none).
        color_interps: Colour interpretation of each band (``Red``, ``Gray``, ``Undefined``...).
    """

    path: str
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    dtypes: tuple[str, ...]
    nodata: float | None
    descriptions: tuple[str, ...]
    color_interps: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.dtypes)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of a north-up raster."""
        left, top = self.transform.c, self.transform.f
        right = left + self.transform.a * self.width
        bottom = top + self.transform.e * self.height
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    @property
    def resolution(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def rotated(self) -> bool:
        return (self.transform.b, self.transform.d) != (0, 0)


def raster_facts(path: str, name: str | None = None) -> RasterFacts:
    """Read a raster's header.

    Raises:
        InputError: when GDAL cannot open it.
    """
    try:
        with network_env(path), rasterio.open(path) as ds:
            return RasterFacts(
                path=path,
                crs=ds.crs if ds.crs else None,
                transform=ds.transform,
                width=ds.width,
                height=ds.height,
                dtypes=tuple(ds.dtypes),
                nodata=ds.nodata,
                descriptions=tuple(d or "" for d in ds.descriptions),
                color_interps=tuple(c.name.capitalize() for c in ds.colorinterp),
            )
    except (RasterioIOError, OSError) as err:
        reason = " ".join(str(err).split())
        raise InputError(
            f"cannot read raster {name or path}: {reason}", "remove or fix the file"
        ) from None


@dataclass(frozen=True)
class VrtBand:
    """One band of a VRT: its sources (a raster and its 1-based band each), drawn in order, and
    its description and colour interpretation."""

    sources: tuple[tuple[RasterFacts, int], ...]
    description: str = ""
    color_interp: str = ""


def vrt_xml(bands: Sequence[VrtBand], resolution: tuple[float, float]) -> str:
    """A north-up VRT covering every source, at ``resolution``, with one band per
    :class:`VrtBand`.

    The sources must share a coordinate system and be north-up; the VRT takes the coordinate
    system, data type and nodata value of the first source. A source of another cell size is
    resampled (nearest) by GDAL as it reads; one on the VRT's pixel grid is copied exactly.
    """
    rasters = [raster for band in bands for raster, _ in band.sources]
    first = rasters[0]
    res_x, res_y = resolution
    left = min(r.bounds[0] for r in rasters)
    bottom = min(r.bounds[1] for r in rasters)
    right = max(r.bounds[2] for r in rasters)
    top = max(r.bounds[3] for r in rasters)
    width = max(1, round((right - left) / res_x))
    height = max(1, round((top - bottom) / res_y))
    out = []
    for index, band in enumerate(bands, start=1):
        raster, source_band = band.sources[0]
        gdal_type = GDAL_TYPES.get(raster.dtypes[source_band - 1], "Float32")
        meta = f"<NoDataValue>{first.nodata}</NoDataValue>" if first.nodata is not None else ""
        meta += (
            f"<Description>{xml_text(band.description)}</Description>" if band.description else ""
        )
        meta += f"<ColorInterp>{band.color_interp}</ColorInterp>" if band.color_interp else ""
        sources = "".join(_simple_source(r, b, left, top, resolution) for r, b in band.sources)
        out.append(
            f'<VRTRasterBand dataType="{gdal_type}" band="{index}">{meta}{sources}</VRTRasterBand>'
        )
    srs = f"<SRS>{xml_text(first.crs.to_wkt())}</SRS>" if first.crs else ""
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{srs}'
        f"<GeoTransform>{left}, {res_x}, 0, {top}, 0, {-res_y}</GeoTransform>"
        f"{''.join(out)}</VRTDataset>"
    )


def _simple_source(
    raster: RasterFacts, band: int, left: float, top: float, resolution: tuple[float, float]
) -> str:
    res_x, res_y = resolution
    r_left, r_bottom, r_right, r_top = raster.bounds
    x_off = (r_left - left) / res_x
    y_off = (top - r_top) / res_y
    x_size = (r_right - r_left) / res_x
    y_size = (r_top - r_bottom) / res_y
    return (
        f'<SimpleSource><SourceFilename relativeToVRT="0">{xml_text(raster.path)}'
        f"</SourceFilename><SourceBand>{band}</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{raster.width}" ySize="{raster.height}"/>'
        f'<DstRect xOff="{x_off}" yOff="{y_off}" xSize="{x_size}" ySize="{y_size}"/>'
        "</SimpleSource>"
    )


def vrt_source_files(path: Path) -> list[Path]:
    """The local files a VRT reads (its ``SourceFilename`` elements that are not GDAL virtual
    paths); an unreadable VRT has none (GDAL says why when it is opened)."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return []
    files = []
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name or name.startswith("/vsi") or "://" in name:
            continue
        relative = element.get("relativeToVRT", "0") == "1"
        files.append((path.parent / name) if relative else Path(name))
    return files
