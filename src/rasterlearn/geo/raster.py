"""Input rasters (file, VRT, folder mosaic, URL) opened for thread-safe windowed reads."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.grid import PIXEL_NOISE, Box, Grid
from rasterlearn.geo.paths import NETWORK_VSI, gdal_path, is_network_path, network_env
from rasterlearn.geo.services import is_image_service, service_raster, split_options
from rasterlearn.geo.stac import is_stac_input, meaningful_names, stac_rasters
from rasterlearn.geo.vrt import VrtBand, raster_facts, vrt_xml

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".jpg", ".jpeg", ".mrf", ".dat"}


@dataclass(frozen=True)
class RasterInfo:
    """What a raster is: its grid (pixels and georeference) and bands."""

    grid: Grid
    count: int
    dtype: str
    nodata: float | None
    band_names: tuple[str, ...]
    has_mask: bool

    @property
    def is_georeferenced(self) -> bool:
        return self.grid.crs is not None


def _band_names(ds: rasterio.io.DatasetReader) -> tuple[str, ...]:
    names = []
    for i, desc in enumerate(ds.descriptions, start=1):
        interp = ds.colorinterp[i - 1].name if i <= len(ds.colorinterp) else "undefined"
        if desc:
            names.append(desc)
        elif interp in ("red", "green", "blue", "alpha", "gray"):
            names.append(interp.capitalize())
        else:
            names.append(f"Band_{i}")
    return tuple(names)


class RasterSource:
    """A raster opened for concurrent windowed reads.

    Every thread gets its own GDAL handle (rasterio datasets are not thread-safe); handles
    are closed by :meth:`close`. With ``cell_size`` the raster is resampled on read through
    a warped VRT.

    Args:
        spec: A path or URL GDAL can open, or the XML text of a VRT.
        name: The name shown to users in messages.
        cell_size: Cell size to resample to, in the raster's map units.
        resampling: Resampling used for ``cell_size`` and rotated reads.
    """

    def __init__(
        self,
        spec: str,
        name: str | None = None,
        cell_size: float | None = None,
        resampling: Resampling = Resampling.bilinear,
    ) -> None:
        self.spec = spec
        self.name = name or spec
        self.cell_size = cell_size
        self.resampling = resampling
        self._local = threading.local()
        self._stacks: list[contextlib.ExitStack] = []
        self._lock = threading.Lock()
        ds = self._dataset()
        dtypes = set(ds.dtypes)
        if len(dtypes) > 1:
            raise InputError(
                f"raster {self.name} mixes band data types {sorted(dtypes)}",
                "convert it to one data type first (gdal_translate -ot)",
            )
        self.info = RasterInfo(
            grid=Grid.of(ds),
            count=ds.count,
            dtype=ds.dtypes[0],
            nodata=ds.nodata,
            band_names=_band_names(ds),
            has_mask=any(
                MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in ds.mask_flag_enums
            )
            and ds.nodata is None,
        )

    def _dataset(self) -> rasterio.io.DatasetReader:
        ds = getattr(self._local, "dataset", None)
        if ds is not None:
            return ds
        _ensure_thread_env()
        stack = contextlib.ExitStack()
        try:
            with network_env(self.spec):
                ds = stack.enter_context(rasterio.open(self.spec))
        except (RasterioIOError, OSError) as err:
            stack.close()
            reason = " ".join(str(err).split())  # GDAL's messages may span lines
            if self.spec.startswith(NETWORK_VSI):
                hint = (
                    "check the URL is right and reachable from here (curl -I URL) and that the "
                    "server answers HTTP range requests"
                )
            else:
                hint = "check the path and that GDAL can open the file (gdalinfo)"
            raise InputError(f"cannot read raster {self.name}: {reason}", hint) from None
        if self.cell_size:
            ds = stack.enter_context(_resampled(ds, self.cell_size, self.resampling, self.name))
        with self._lock:
            self._stacks.append(stack)
        self._local.dataset = ds
        return ds

    def close(self) -> None:
        """Close every handle opened by any thread."""
        with self._lock:
            for stack in self._stacks:
                stack.close()
            self._stacks.clear()
        self._local = threading.local()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, box: Box) -> np.ndarray:
        """Pixels of all bands in ``box`` as ``(bands, height, width)``.

        Pixels outside the raster are nodata (or 0 without a nodata value).
        """
        inside = self.info.grid.box.contains(box)
        fill = self.info.nodata if self.info.nodata is not None else 0
        with self._read_errors(box):
            return self._dataset().read(
                window=box.to_window(), boundless=not inside, fill_value=fill
            )

    @contextlib.contextmanager
    def _read_errors(self, where: Box | None = None) -> Iterator[None]:
        """Report GDAL read failures (a missing mosaic item, a truncated file) as user errors."""
        try:
            yield
        except (RasterioIOError, rasterio.errors.WindowError) as err:
            at = f" at rows {where.row}-{where.row_end}, columns {where.col}-{where.col_end}"
            raise InputError(
                f"reading raster {self.name} failed{at if where else ''}: {err}",
                "check the file is complete and every file it refers to exists",
            ) from None

    def colormap(self) -> dict[int, tuple[int, int, int]]:
        """The first band's colour table (value -> RGB), empty when it has none."""
        try:
            return {k: tuple(v[:3]) for k, v in self._dataset().colormap(1).items()}
        except ValueError:
            return {}

    def read_valid(self, box: Box, data: np.ndarray) -> np.ndarray:
        """Boolean mask of valid (not nodata, inside the raster) pixels of a read of ``box``."""
        valid = np.zeros(data.shape[1:], dtype=bool)
        inside = self.info.grid.box.intersection(box)
        if inside is None:
            return valid
        sl = inside.relative_to(box).slices
        if self.info.has_mask:
            valid[sl] = self._dataset().read_masks(1, window=inside.to_window()) > 0
        elif self.info.nodata is not None:
            valid[sl] = ~np.all(_equals_nodata(data[(slice(None), *sl)], self.info.nodata), axis=0)
        else:
            valid[sl] = True
        return valid

    def read_box(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of a box of the raster's own grid, and which of them are valid.

        Returns:
            ``(data, valid)``: data ``(bands, height, width)``, nodata (or 0) outside the
            raster, and the mask of valid pixels.
        """
        data = self.read(box)
        return data, self.read_valid(box, data)

    def read_scaled(self, box: Box, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of a box inside the raster read into ``shape`` ``(rows, columns)``.

        GDAL takes a smaller ``shape`` from the overview nearest its resolution (nearest
        neighbour) and reads only the blocks the box covers, so a view of a large raster costs
        what is shown, not the raster's size.

        Returns:
            ``(data, valid)``: data ``(bands, rows, columns)`` and the mask of valid pixels.
        """
        info = self.info
        window = box.to_window()
        with self._read_errors(box):
            ds = self._dataset()
            data = ds.read(window=window, out_shape=(info.count, *shape))
            if info.has_mask:
                valid = ds.read_masks(1, window=window, out_shape=shape) > 0
            elif info.nodata is not None:
                valid = ~np.all(_equals_nodata(data, info.nodata), axis=0)
            else:
                valid = np.ones(shape, dtype=bool)
        return data, valid

    def read_onto(
        self, grid: Grid, resampling: Resampling | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pixels resampled onto another grid of the raster's CRS (e.g. a rotated chip).

        A grid that is a whole-pixel shift of the raster's is read as a box of it.

        Returns:
            ``(data, valid)``: data ``(bands, height, width)`` and the mask of pixels that
            fell on valid raster pixels.
        """
        info = self.info
        box = _as_window_of(info.grid.transform, grid)
        if box is not None:
            return self.read_box(box)
        fill = info.nodata if info.nodata is not None else 0
        data = np.full((info.count, grid.height, grid.width), fill, dtype=info.dtype)
        # GDAL's warper needs some CRS; both sides share it
        crs = info.grid.crs or CRS.from_epsg(3857)
        with self._read_errors():
            reproject(
                source=rasterio.band(self._dataset(), list(range(1, info.count + 1))),
                destination=data,
                src_transform=info.grid.transform,
                src_crs=crs,
                src_nodata=info.nodata,
                dst_transform=grid.transform,
                dst_crs=crs,
                dst_nodata=fill,
                resampling=self.resampling if resampling is None else resampling,
            )
        valid = _footprint_mask(info.grid, grid)
        if info.nodata is not None:
            valid &= ~np.all(_equals_nodata(data, info.nodata), axis=0)
        return data, valid


GDAL_CACHE_BYTES = 128 * 2**20


@contextlib.contextmanager
def bounded_gdal_cache(limit: int = GDAL_CACHE_BYTES) -> Iterator[None]:
    """Cap GDAL's block cache while a tool runs, unless the user set ``GDAL_CACHEMAX``.

    GDAL's default cache is 5 % of RAM: on a large raster it fills with blocks already used and
    memory grows with the raster. The cap only costs re-reads of blocks outside the working set.
    """
    if "GDAL_CACHEMAX" in os.environ:
        yield
        return
    previous = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", limit)
    try:
        yield
    finally:
        rasterio.env.set_gdal_config("GDAL_CACHEMAX", previous)


_THREAD_ENV = threading.local()


def _ensure_thread_env() -> None:
    """Give this thread a GDAL environment that lives as long as the thread.

    Without one, rasterio ties a per-dataset environment to the opening thread and the
    dataset cannot be closed from another thread.
    """
    if not rasterio.env.hasenv() and getattr(_THREAD_ENV, "env", None) is None:
        _THREAD_ENV.env = rasterio.Env()
        _THREAD_ENV.env.__enter__()


def _equals_nodata(data: np.ndarray, nodata: float) -> np.ndarray:
    if np.isnan(nodata):
        return np.isnan(data)
    return data == np.asarray(nodata).astype(data.dtype)


def _footprint_mask(raster: Grid, grid: Grid) -> np.ndarray:
    """Which pixels of ``grid`` fall inside the raster's extent."""
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    xs, ys = grid.transform @ (cols + 0.5, rows + 0.5)
    src_cols, src_rows = ~raster.transform @ (xs, ys)
    inside_cols = (src_cols >= 0) & (src_cols < raster.width)
    return inside_cols & (src_rows >= 0) & (src_rows < raster.height)


def _as_window_of(src: Affine, grid: Grid) -> Box | None:
    """The box of the grid of ``src`` that ``grid`` is, when it is a whole-pixel shift of it."""
    dst = grid.transform
    tolerance = 1e-12 * max(abs(src.a), 1)
    pairs = ((dst.a, src.a), (dst.b, src.b), (dst.d, src.d), (dst.e, src.e))
    if any(abs(x - y) > tolerance for x, y in pairs):
        return None
    col, row = ~src @ (dst.c, dst.f)
    if abs(col - round(col)) > PIXEL_NOISE or abs(row - round(row)) > PIXEL_NOISE:
        return None
    return Box(round(row), round(col), grid.height, grid.width)


@contextlib.contextmanager
def _resampled(
    ds: rasterio.io.DatasetReader, cell_size: float, resampling: Resampling, name: str
) -> Iterator[WarpedVRT]:
    if not ds.crs:
        raise ParameterError(
            f"cell_size needs a georeferenced raster, but {name} has no coordinate system",
            "leave cell_size out or georeference the raster",
        )
    left, bottom, right, top = ds.bounds
    width = max(1, round((right - left) / cell_size))
    height = max(1, round((top - bottom) / cell_size))
    transform = Affine(cell_size, 0, left, 0, -cell_size, top)
    with WarpedVRT(
        ds, crs=ds.crs, transform=transform, width=width, height=height, resampling=resampling
    ) as vrt:
        yield vrt


def list_rasters(folder: Path) -> list[Path]:
    """The rasters directly in a folder, sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
    )


def mosaic_vrt_xml(paths: list[Path]) -> str:
    """A VRT mosaic of rasters sharing a CRS and band layout, on the first raster's cell size.

    Raises:
        InputError: if the rasters differ in CRS, band count or data type.
    """
    infos = [raster_facts(str(path.resolve()), str(path)) for path in paths]
    first = infos[0]
    for path, info in zip(paths[1:], infos[1:], strict=True):
        if info.crs != first.crs or info.count != first.count or info.dtypes != first.dtypes:
            raise InputError(
                f"{path.name} does not match {paths[0].name} (coordinate system, band count or "
                "data type differ), so they cannot be mosaicked",
                "give rasters of one sensor and projection, or use PROCESS_ITEMS_SEPARATELY",
            )
        if info.rotated:
            raise InputError(
                f"{path.name} is rotated and cannot be mosaicked", "warp it north-up first"
            )
    bands = [
        VrtBand(
            tuple((info, b) for info in infos),
            first.descriptions[b - 1],
            first.color_interps[b - 1],
        )
        for b in range(1, first.count + 1)
    ]
    return vrt_xml(bands, first.resolution)


PROCESSING_MODES = ("PROCESS_AS_MOSAICKED_IMAGE", "PROCESS_ITEMS_SEPARATELY")
"""How a folder of rasters is processed: as one mosaic, or item by item (ArcGIS's keywords)."""


def open_raster_input(
    in_raster: str | Path,
    separately: bool = False,
    cell_size: float | None = None,
    resampling: Resampling = Resampling.bilinear,
    *,
    band_names: Sequence[str] | None = None,
    extent: tuple[float, float, float, float] | None = None,
    default_cell_size: float | None = None,
) -> list[RasterSource]:
    """Open a raster, VRT, URL, folder of rasters, STAC item or catalog, or image service.

    The input forms are in docs/inputs.md: a path or URL GDAL can open; a folder (a mosaic,
    or one source per raster); a STAC JSON file or URL (``ITEM.json#bands=red,green,blue``);
    an image service (``xyz:https://host/{z}/{x}/{y}.png#cell_size=0.6&extent=...``).

    Args:
        in_raster: The input.
        separately: For a folder or a STAC catalog, one source per raster or item instead of
            one mosaic.
        cell_size: Resample on read to this cell size (an image service is read at it).
        resampling: Resampling for ``cell_size``.
        band_names: The bands a STAC input should give, when its ``#bands=`` does not say
            (e.g. the model's band names); None or generic names choose by default.
        extent: Where an image service is read, when its ``#extent=`` does not say.
        default_cell_size: The cell size an image service is read at when neither its
            ``#cell_size=`` nor ``cell_size`` says (e.g. the model's); files keep their own.

    Raises:
        InputError: if nothing readable is there.
        ParameterError: for bad input options, or an image service without cell size or
            extent.
    """
    text = str(in_raster)
    if is_image_service(text):
        spec, name, read_at = service_raster(text, cell_size or default_cell_size, extent)
        resample = cell_size if cell_size and not _same_size(cell_size, read_at) else None
        return [RasterSource(spec, name, resample, resampling)]
    base, options = split_options(text) if is_stac_input(text.partition("#")[0]) else (text, {})
    if is_stac_input(base):
        unknown = set(options) - {"bands"}
        if unknown:
            raise ParameterError(
                f"unknown option {sorted(unknown)[0]!r} of STAC input {base}",
                "give #bands=NAME,NAME,...",
            )
        wanted = [b for b in options["bands"].split(",") if b] if "bands" in options else None
        rasters = stac_rasters(base, wanted or meaningful_names(band_names), separately)
        return [RasterSource(spec, name, cell_size, resampling) for spec, name in rasters]
    path = Path(text)
    is_url = text.startswith("/vsi") or is_network_path(text)
    if not is_url and not path.exists():
        raise InputError(f"input raster {text} does not exist", "check the path")
    if path.is_dir():
        rasters = list_rasters(path)
        if not rasters:
            raise InputError(
                f"folder {text} holds no rasters ({', '.join(sorted(RASTER_SUFFIXES))})",
                "point at a raster file or a folder of rasters",
            )
        if separately:
            return [RasterSource(str(p), p.name, cell_size, resampling) for p in rasters]
        return [RasterSource(mosaic_vrt_xml(rasters), f"mosaic of {text}", cell_size, resampling)]
    return [RasterSource(gdal_path(text), str(in_raster), cell_size, resampling)]


def _same_size(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))
