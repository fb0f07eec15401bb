"""Image services as rasters: XYZ/TMS tiles, WMS, ArcGIS MapServer and ImageServer.

An input such as ``xyz:https://host/{z}/{x}/{y}.png`` becomes a GDAL WMS service description
(XML, with a local tile cache) read at a given cell size over a given extent: only the
service's pixels inside the extent exist for the tools, so nothing outside it is ever asked
for, and GDAL fetches the tiles or images a window needs when the window is read.

Forms (options after ``#``, separated by ``&``; see docs/inputs.md):

* ``xyz:URL`` with ``{z}``, ``{x}``, ``{y}`` (Web Mercator tiles, row 0 at the top);
  ``tms:URL`` the same with row 0 at the bottom. The zoom level is the coarsest whose cell
  size is at most the cell size asked for (or ``zoom=``).
* ``wms:URL`` (a WMS endpoint; ``layers=`` required, ``crs=``, ``format=``, ``version=``).
* ``arcgis:URL`` (an ArcGIS ``.../MapServer`` (export) or ``.../ImageServer`` (exportImage);
  ``layers=``, ``crs=`` as the service's WKID). A cached service is also an ``xyz:`` input:
  ``xyz:https://host/.../MapServer/tile/{z}/{y}/{x}``.

Options: ``cell_size=`` and ``extent=xmin,ymin,xmax,ymax`` (required here or from the tool's
cell size and processing extent), ``extent_crs=`` (default the service's CRS), ``bands=``
(band count, default 3), ``cache=`` (a folder, or ``none``; default
``$RASTERLEARN_TILE_CACHE`` or ``~/.cache/rasterlearn/tiles``).
"""

from __future__ import annotations

import math
import os
import urllib.parse
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds

from rasterlearn.errors import ParameterError
from rasterlearn.geo.grid import Box, Grid
from rasterlearn.geo.vrt import xml_text

SERVICE_SCHEMES = ("xyz:", "tms:", "wms:", "arcgis:")
WEB_MERCATOR_HALF = 20037508.342789244
TILE = 256
MAX_ZOOM = 24
SERVICE_OPTIONS = {
    "cell_size",
    "extent",
    "extent_crs",
    "crs",
    "zoom",
    "bands",
    "layers",
    "format",
    "version",
    "cache",
}

Extent = tuple[float, float, float, float]


def is_image_service(text: str) -> bool:
    """Whether an input is an image service (``xyz:``, ``tms:``, ``wms:``, ``arcgis:``)."""
    return text.lower().startswith(SERVICE_SCHEMES)


def split_options(text: str) -> tuple[str, dict[str, str]]:
    """``BASE#name=value&name=value`` -> ``(BASE, {name: value})``; no ``#``: no options."""
    if "#" not in text:
        return text, {}
    base, _, fragment = text.rpartition("#")
    options = {}
    for part in fragment.split("&"):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ParameterError(
                f"input option {part!r} of {base} is not NAME=VALUE",
                "write options after # as NAME=VALUE joined by &",
            )
        options[name.strip().lower()] = urllib.parse.unquote(value.strip())
    return base, options


def zoom_cell_size(zoom: int) -> float:
    """The cell size of a Web Mercator tile level (metres at the equator)."""
    return 2 * WEB_MERCATOR_HALF / (TILE * 2**zoom)


def service_raster(
    text: str, cell_size: float | None, extent: Extent | None
) -> tuple[str, str, float]:
    """The GDAL dataset (XML text) of an image service input, its name for messages, and the
    cell size it is read at (for tiles, the cell size of their zoom level).

    Args:
        text: ``scheme:URL#options``.
        cell_size: Cell size when the input's options give none (the tool's or the model's).
        extent: ``(xmin, ymin, xmax, ymax)`` when the options give none, in ``extent_crs``
            (default the service's CRS).

    Raises:
        ParameterError: for an unknown option, a missing cell size or extent, or bad values.
    """
    base, options = split_options(text)
    unknown = set(options) - SERVICE_OPTIONS
    if unknown:
        raise ParameterError(
            f"unknown option {sorted(unknown)[0]!r} of image service {base}",
            "give " + ", ".join(sorted(SERVICE_OPTIONS)),
        )
    scheme, _, url = base.partition(":")
    scheme = scheme.lower()
    if not url.startswith(("http://", "https://")):
        raise ParameterError(
            f"image service {base} has no http(s) URL after {scheme}:",
            f"write {scheme}:https://HOST/...",
        )
    crs = CRS.from_epsg(3857) if scheme in ("xyz", "tms") else _crs(options.get("crs", "EPSG:3857"))
    size = _float(options["cell_size"], "cell_size", base) if "cell_size" in options else cell_size
    zoom = None
    if scheme in ("xyz", "tms"):
        zoom = _zoom(options, size, base)
        size = zoom_cell_size(zoom)
    if size is None or not size > 0:
        raise ParameterError(
            f"image service {base} needs a cell size to be read at",
            "give --cell-size or #cell_size= after the URL",
        )
    bounds = _extent(options, extent, crs, base)
    bands = int(_float(options.get("bands", "3"), "bands", base))
    cache = _cache(options.get("cache"))
    if scheme in ("xyz", "tms"):
        return _tiles_vrt(url, scheme == "tms", zoom, bounds, bands, cache, crs), base, size
    grid = _snapped_grid(bounds, size, crs)
    return _image_service_xml(scheme, url, options, grid, bands, cache), base, size


def _crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text if not text.isdigit() else int(text))
    except CRSError:
        raise ParameterError(f"unknown coordinate system {text!r}", "give EPSG:NNNN") from None


def _float(text: str, name: str, base: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ParameterError(
            f"{name}={text!r} of {base} is not a number", f"give {name} as a number"
        ) from None


def _zoom(options: dict[str, str], size: float | None, base: str) -> int:
    if "zoom" in options:
        zoom = int(_float(options["zoom"], "zoom", base))
    elif size is not None and size > 0:
        # the coarsest level at least as fine as asked (relative tolerance for float noise)
        zoom = next(
            (z for z in range(MAX_ZOOM + 1) if zoom_cell_size(z) <= size * (1 + 1e-9)), MAX_ZOOM
        )
    else:
        raise ParameterError(
            f"tile service {base} needs a cell size or zoom level to be read at",
            "give --cell-size, or #cell_size= or #zoom= after the URL",
        )
    if not 0 <= zoom <= MAX_ZOOM:
        raise ParameterError(f"zoom {zoom} of {base} is out of range", f"give 0 to {MAX_ZOOM}")
    return zoom


def _extent(options: dict[str, str], given: Extent | None, crs: CRS, base: str) -> Extent:
    if "extent" in options:
        parts = options["extent"].replace(" ", ",").split(",")
        values = [_float(p, "extent", base) for p in parts if p]
        if len(values) != 4:
            raise ParameterError(
                f"extent of {base} is not xmin,ymin,xmax,ymax", "give four numbers"
            )
        given = (values[0], values[1], values[2], values[3])
    if given is None:
        raise ParameterError(
            f"image service {base} needs an extent to read",
            "give --processing-extent (--extent) or #extent=xmin,ymin,xmax,ymax after the URL",
        )
    xmin, ymin, xmax, ymax = given
    if not (xmax > xmin and ymax > ymin):
        raise ParameterError(f"extent {given} of {base} is empty", "give xmin < xmax, ymin < ymax")
    if "extent_crs" in options:
        given = transform_bounds(_crs(options["extent_crs"]), crs, *given)
    return given


def _cache(option: str | None) -> str | None:
    if option is not None and option.lower() == "none":
        return None
    if option:
        return str(Path(option).expanduser().absolute())
    default = os.environ.get("RASTERLEARN_TILE_CACHE") or "~/.cache/rasterlearn/tiles"
    return str(Path(default).expanduser().absolute())


def _snapped_grid(bounds: Extent, size: float, crs: CRS) -> Grid:
    """The grid of ``size`` cells covering ``bounds`` from their top-left corner."""
    xmin, ymin, xmax, ymax = bounds
    width = max(1, math.ceil((xmax - xmin) / size - 1e-9))
    height = max(1, math.ceil((ymax - ymin) / size - 1e-9))
    return Grid(Affine(size, 0, xmin, 0, -size, ymax), width, height, crs)


def _cache_xml(cache: str | None) -> str:
    return f"<Cache><Path>{xml_text(cache)}</Path></Cache>" if cache else ""


def _tiles_vrt(
    url: str, tms: bool, zoom: int, bounds: Extent, bands: int, cache: str | None, crs: CRS
) -> str:
    """A VRT of the tiles' pixels inside ``bounds`` at ``zoom`` (whole pixels of the level)."""
    template = url
    for name in ("z", "x", "y"):
        template = template.replace("${" + name + "}", "{" + name + "}")
        template = template.replace("{" + name + "}", "${" + name + "}")
    side = TILE * 2**zoom
    size = zoom_cell_size(zoom)
    world = Grid(Affine(size, 0, -WEB_MERCATOR_HALF, 0, -size, WEB_MERCATOR_HALF), side, side, crs)
    box = world.area_of(bounds)
    if box is None:
        raise ParameterError(
            f"extent {bounds} is outside the Web Mercator world", "give an extent in EPSG:3857"
        )
    h = WEB_MERCATOR_HALF
    wms = (
        f'<GDAL_WMS><Service name="TMS"><ServerUrl>{xml_text(template)}</ServerUrl></Service>'
        f"<DataWindow><UpperLeftX>{-h}</UpperLeftX><UpperLeftY>{h}</UpperLeftY>"
        f"<LowerRightX>{h}</LowerRightX><LowerRightY>{-h}</LowerRightY>"
        f"<TileLevel>{zoom}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>"
        f"<YOrigin>{'bottom' if tms else 'top'}</YOrigin></DataWindow>"
        f"<Projection>EPSG:3857</Projection><BlockSizeX>{TILE}</BlockSizeX>"
        f"<BlockSizeY>{TILE}</BlockSizeY><BandsCount>{bands}</BandsCount>"
        f"<ZeroBlockHttpCodes>204,404</ZeroBlockHttpCodes>{_cache_xml(cache)}</GDAL_WMS>"
    )
    return _window_vrt(wms, world, box, bands)


def _window_vrt(source: str, grid: Grid, box: Box, bands: int) -> str:
    """A VRT of a box of a (huge) dataset's pixels, given as GDAL connection text."""
    t = grid.window(box).transform
    band_xml = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{xml_text(source)}</SourceFilename>'
        f"<SourceBand>{b}</SourceBand>"
        f'<SrcRect xOff="{box.col}" yOff="{box.row}" xSize="{box.width}" ySize="{box.height}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{box.width}" ySize="{box.height}"/>'
        "</SimpleSource></VRTRasterBand>"
        for b in range(1, bands + 1)
    )
    return (
        f'<VRTDataset rasterXSize="{box.width}" rasterYSize="{box.height}">'
        f"<SRS>{xml_text(grid.crs.to_wkt())}</SRS>"
        f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>{band_xml}</VRTDataset>"
    )


def _image_service_xml(
    scheme: str, url: str, options: dict[str, str], grid: Grid, bands: int, cache: str | None
) -> str:
    """A GDAL WMS description of a WMS or ArcGIS service over exactly ``grid``."""
    xmin, ymax = grid.transform.c, grid.transform.f
    xmax = xmin + grid.transform.a * grid.width
    ymin = ymax + grid.transform.e * grid.height
    epsg = grid.crs.to_epsg()
    layers = xml_text(options.get("layers", ""))
    if scheme == "wms":
        if not layers:
            raise ParameterError(f"WMS {url} needs a layer", "add #layers=NAME after the URL")
        version = options.get("version", "1.1.1")
        srs_tag = "CRS" if version.startswith("1.3") else "SRS"
        service = (
            f'<Service name="WMS"><Version>{xml_text(version)}</Version>'
            f"<ServerUrl>{xml_text(url)}</ServerUrl>"
            f"<{srs_tag}>EPSG:{epsg}</{srs_tag}>"
            f"<ImageFormat>{xml_text(options.get('format', 'image/png'))}</ImageFormat>"
            f"<Layers>{layers}</Layers><Styles></Styles></Service>"
        )
    else:
        server = url.rstrip("/")
        if server.lower().endswith("/imageserver"):
            server += "/exportImage?"  # GDAL adds the request's parameters after it
        service = (
            f'<Service name="AGS"><ServerUrl>{xml_text(server)}</ServerUrl>'
            f"<BBoxOrder>xyXY</BBoxOrder><SRS>{epsg}</SRS>"
            + (f"<Layers>{layers}</Layers>" if layers else "")
            + "</Service>"
        )
    return (
        f"<GDAL_WMS>{service}<DataWindow><UpperLeftX>{xmin}</UpperLeftX>"
        f"<UpperLeftY>{ymax}</UpperLeftY><LowerRightX>{xmax}</LowerRightX>"
        f"<LowerRightY>{ymin}</LowerRightY><SizeX>{grid.width}</SizeX>"
        f"<SizeY>{grid.height}</SizeY></DataWindow><Projection>EPSG:{epsg}</Projection>"
        f"<BlockSizeX>{TILE}</BlockSizeX><BlockSizeY>{TILE}</BlockSizeY>"
        f"<BandsCount>{bands}</BandsCount>{_cache_xml(cache)}</GDAL_WMS>"
    )
