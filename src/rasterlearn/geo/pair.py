"""Two rasters of one area read on one grid: the second warped onto the first's, window by window.

Change detection reads a "from" and a "to" raster that may differ in pixel size, extent and
coordinate system. :class:`AlignedRaster` reads any raster on another raster's grid through a
GDAL warped VRT (each window is warped when it is read, nothing is resampled ahead);
:class:`RasterPair` reads both as one raster whose bands are the first's, then the second's.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from rasterlearn.errors import InputError
from rasterlearn.geo.grid import Box, Grid
from rasterlearn.geo.raster import RasterInfo, RasterSource


class AlignedRaster(RasterSource):
    """A raster read on another grid (its CRS, transform and size).

    Pixels of the grid outside the raster are not valid. Without a nodata value the warped
    raster carries an alpha band that says which pixels are valid.

    Args:
        spec: A path or URL GDAL can open, or the XML text of a VRT.
        name: The name shown to users in messages.
        grid: The grid to read on.
        resampling: Resampling of the warp (nearest for class rasters).

    Raises:
        InputError: when only one of the raster and the grid is georeferenced, or two rasters
            without a georeference differ in size.
    """

    def __init__(
        self,
        spec: str,
        name: str | None,
        grid: Grid,
        resampling: Resampling = Resampling.bilinear,
    ) -> None:
        self.onto = grid
        self._warped = threading.local()
        self._vrts: list[contextlib.ExitStack] = []
        self._vrt_lock = threading.Lock()
        self._alpha = False
        super().__init__(spec, name, None, resampling)
        if self._alpha:
            # the alpha band the warp adds says which pixels are valid; it holds no data
            info = self.info
            self.info = replace(info, count=info.count - 1, band_names=info.band_names[:-1])

    def _dataset(self) -> rasterio.io.DatasetReader:
        vrt = getattr(self._warped, "vrt", None)
        if vrt is not None:
            return vrt
        ds = super()._dataset()
        grid = self.onto
        if ds.crs is None or grid.crs is None:
            if ds.crs is None and grid.crs is None and ds.shape == grid.shape:
                self._warped.vrt = ds  # pixel space: the same pixels
                return ds
            raise InputError(
                f"raster {self.name} cannot be read on the other raster's grid: one of them has "
                "no coordinate system (or, without one, they differ in size)",
                "georeference both rasters, or give rasters of the same size in pixel space",
            )
        self._alpha = ds.nodata is None
        stack = contextlib.ExitStack()
        vrt = stack.enter_context(
            WarpedVRT(
                ds,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=self.resampling,
                add_alpha=self._alpha,
            )
        )
        with self._vrt_lock:
            self._vrts.append(stack)
        self._warped.vrt = vrt
        return vrt

    def close(self) -> None:
        """Close every warped and plain handle opened by any thread."""
        with self._vrt_lock:
            for stack in self._vrts:
                stack.close()
            self._vrts.clear()
        self._warped = threading.local()
        super().close()

    def read(self, box: Box) -> np.ndarray:
        """Pixels of all bands in ``box``; nodata (or 0) outside the grid.

        A warped VRT cannot read past its edges, so the part inside is read and placed.
        """
        info = self.info
        fill = info.nodata if info.nodata is not None else 0
        out = np.full((info.count, box.height, box.width), fill, dtype=info.dtype)
        inside = info.grid.box.intersection(box)
        if inside is not None:
            with self._read_errors(box):
                data = self._dataset().read(
                    list(range(1, info.count + 1)), window=inside.to_window()
                )
            out[(slice(None), *inside.relative_to(box).slices)] = data
        return out


class RasterPair:
    """Two sources on one grid read as one raster: the first's bands, then the second's.

    A pixel is valid where it is valid in both.

    Args:
        first: The raster whose grid is used.
        second: A raster on the same grid (see :class:`AlignedRaster`).
    """

    def __init__(self, first: RasterSource, second: RasterSource) -> None:
        self.first = first
        self.second = second
        self.name = f"{first.name} and {second.name}"
        a, b = first.info, second.info
        self.info: RasterInfo = replace(
            a,
            count=a.count + b.count,
            dtype=np.result_type(a.dtype, b.dtype).name,
            band_names=a.band_names + b.band_names,
        )

    def read_box(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of a box of the grid (both rasters' bands) and where both are valid."""
        first, first_valid = self.first.read_box(box)
        second, second_valid = self.second.read_box(box)
        dtype = self.info.dtype
        data = np.concatenate([first.astype(dtype, copy=False), second.astype(dtype, copy=False)])
        return data, first_valid & second_valid

    def close(self) -> None:
        """Close both rasters."""
        self.first.close()
        self.second.close()


def check_pair(first: RasterSource, second: RasterSource) -> None:
    """Refuse two rasters that cannot be compared: other band counts, or no common area.

    Args:
        first: The "from" raster, as opened.
        second: The "to" raster, as opened (on its own grid).

    Raises:
        InputError: naming both rasters and what differs.
    """
    a, b = first.info, second.info
    if a.count != b.count:
        raise InputError(
            f"raster {first.name} has {a.count} bands but {second.name} has {b.count}",
            "give two rasters of the same sensor and band order",
        )
    if a.grid.crs is None or b.grid.crs is None:
        return  # pixel space: AlignedRaster checks the sizes
    left, bottom, right, top = transform_bounds(b.grid.crs, a.grid.crs, *b.grid.footprint.bounds)
    xmin, ymin, xmax, ymax = a.grid.footprint.bounds
    if not (left < xmax and right > xmin and bottom < ymax and top > ymin):
        raise InputError(
            f"rasters {first.name} and {second.name} do not overlap",
            "give two rasters of the same area (they may differ in cell size and coordinate "
            "system)",
        )
