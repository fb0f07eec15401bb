"""Imagery for the map pages: a raster's display metadata and PNG tiles in its own coordinates.

``GET /imagery/info?raster=PATH`` describes the raster (extent, CRS, tile resolutions, bands
and their statistics); ``GET /imagery/tiles/{z}/{x}/{y}.png?raster=PATH&bands=3,2,1&stretch=``
renders one tile (see :mod:`rasterlearn.geo.display`) from a windowed read that GDAL serves
from the overviews, so only what is shown is read. ``PATH`` is a data path, as for a job's
inputs, or an ``http(s)://``/``s3://`` URL (a COG read with range requests).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.execution.cache import WorkerCache
from rasterlearn.geo.display import (
    COLORMAP,
    STRETCHES,
    TilePyramid,
    check_bands,
    colormap_lut,
    default_bands,
    default_stretch,
    display_stats,
    png_bytes,
    render_classes,
    render_tile,
    stretch_range,
)
from rasterlearn.geo.raster import RasterSource, gdal_path
from rasterlearn.geo.stats import BandStats
from rasterlearn.serve.auth import caller
from rasterlearn.serve.service import Service
from rasterlearn.serve.values import URL

router = APIRouter(prefix="/imagery", tags=["imagery"])

_OPENED = WorkerCache(capacity=8)
TILE_THREADS = 4
"""Threads rendering tiles: each keeps its own handle of every raster shown (GDAL handles are
not shared between threads), so their number bounds the handles and the memory they hold."""
_TILE_THREADS = ThreadPoolExecutor(TILE_THREADS, thread_name_prefix="tiles")
_OL_UNITS = {"metre": "m", "meter": "m", "foot": "ft", "us survey foot": "us-ft"}


@dataclass
class ShownRaster:
    """An opened raster with what showing it needs, kept while the file is unchanged."""

    name: str
    source: RasterSource
    pyramid: TilePyramid
    stats: list[BandStats]
    info: dict[str, Any] | None = None

    def ranges(self, bands: list[int], stretch: str) -> list[tuple[float, float]]:
        dtype = self.source.info.dtype
        return [stretch_range(self.stats[b - 1], dtype, stretch) for b in bands]


def shown_raster(service: Service, value: str, owner: str) -> ShownRaster:
    """The raster ``value`` names (a data path or a URL), opened once per version.

    Raises:
        ParameterError: for a path outside the data directory.
        InputError: for a missing or unreadable raster.
    """
    if URL.match(value):
        spec, key = gdal_path(value), (value,)
    else:
        path = service.data.resolve(value, owner)
        if not path.is_file():
            raise InputError(f"raster {value!r} does not exist", "check the path")
        stat = path.stat()
        spec, key = str(path), (str(path), stat.st_mtime_ns, stat.st_size)

    def open_() -> ShownRaster:
        source = RasterSource(spec, name=value)
        try:
            pyramid = TilePyramid(source.info.grid)
            return ShownRaster(value, source, pyramid, display_stats(source))
        except BaseException:
            source.close()
            raise

    return _OPENED.get(key, open_, lambda shown: shown.source.close())


def _crs(shown: ShownRaster) -> dict[str, Any]:
    crs = shown.source.info.grid.crs
    if crs is None:
        return {"name": "pixels", "wkt": None, "epsg": None, "units": "pixels"}
    units = "degrees" if crs.is_geographic else _OL_UNITS.get(crs.linear_units.lower(), "m")
    return {"name": crs.to_string(), "wkt": crs.to_wkt(), "epsg": crs.to_epsg(), "units": units}


def raster_info(shown: ShownRaster) -> dict[str, Any]:
    """What the map needs to show the raster in its own coordinates (made once per raster)."""
    if shown.info is None:
        shown.info = _describe(shown)
    return shown.info


def _describe(shown: ShownRaster) -> dict[str, Any]:
    info, pyramid = shown.source.info, shown.pyramid
    bands = [
        {
            "index": i,
            "name": name,
            "min": s.min if s.num else None,
            "max": s.max if s.num else None,
            "mean": s.m1 if s.num else None,
            "std": s.std if s.num else None,
        }
        for i, (name, s) in enumerate(zip(info.band_names, shown.stats, strict=True), start=1)
    ]
    return {
        "name": shown.name,
        "width": info.grid.width,
        "height": info.grid.height,
        "dtype": info.dtype,
        "nodata": info.nodata,
        "bands": bands,
        "crs": _crs(shown),
        "georeferenced": info.is_georeferenced,
        "flip_y": pyramid.flip_y,
        "extent": list(pyramid.extent),
        "cell_size": list(info.grid.cell_size),
        "tile_size": pyramid.tile_size,
        "resolutions": pyramid.resolutions,
        "default_bands": default_bands(info.count),
        "default_stretch": default_stretch(info.dtype),
        "stretches": list(STRETCHES),
    }


@router.get("/info", summary="A raster's extent, CRS, tile resolutions and bands")
def info(
    request: Request, raster: str = Query(...), owner: str = Depends(caller)
) -> dict[str, Any]:
    return raster_info(shown_raster(request.app.state.service, raster, owner))


@router.get("/tiles/{z}/{x}/{y}.png", summary="A PNG tile in the raster's own coordinates")
async def tile(
    request: Request,
    z: int,
    x: int,
    y: int,
    raster: str = Query(...),
    bands: str = Query("", description="One or three band numbers, e.g. 4,3,2"),
    stretch: str = Query(
        "", description="none, minmax, stddev, or colormap (a classified raster's colour table)"
    ),
    owner: str = Depends(caller),
) -> Response:
    service = request.app.state.service
    loop = asyncio.get_running_loop()
    png = await loop.run_in_executor(
        _TILE_THREADS, _tile_png, service, raster, owner, (z, x, y), bands, stretch
    )
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


def _tile_png(
    service: Service, raster: str, owner: str, zxy: tuple[int, int, int], bands: str, stretch: str
) -> bytes:
    shown = shown_raster(service, raster, owner)
    if stretch == COLORMAP:
        lut = colormap_lut(shown.source)
        return png_bytes(render_classes(shown.source, shown.pyramid, *zxy, lut))
    count = shown.source.info.count
    try:
        chosen = [int(b) for b in bands.split(",")] if bands else default_bands(count)
    except ValueError:
        raise ParameterError(f"bands {bands!r} are not band numbers", "give e.g. 3,2,1") from None
    check_bands(chosen, count)
    ranges = shown.ranges(chosen, stretch or default_stretch(shown.source.info.dtype))
    return png_bytes(render_tile(shown.source, shown.pyramid, *zxy, chosen, ranges))
