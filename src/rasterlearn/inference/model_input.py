"""What a model expects of a raster, and the cell size the raster is processed at.

One model serves imagery of other dates and areas of the same sensor: a raster whose cell size
is outside the range the model was trained at (the ``.emd``'s ``MinCellSize`` and
``MaxCellSize``) is resampled to the nearest end of that range as it is read, or to the
``cell_size`` given. A raster far outside the range gets a warning; one whose bands or data
type cannot be what the model read in training is refused.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError

from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.geo.grid import Grid
from rasterlearn.geo.raster import RasterSource
from rasterlearn.inference.predictors import Predictor

SAME_CELL_SIZE = 0.01
"""Cell sizes within 1 % of the model's range are used as they are (resampling would only blur)."""
FAR_OUTSIDE = 2.0
"""A cell size more than twice (or less than half) the model's range gets a warning."""
METRES_PER_DEGREE = 111_320.0
"""Approximate, for comparing cell sizes in degrees with cell sizes in metres."""


@dataclass(frozen=True)
class CellSizeRange:
    """The cell sizes a model was trained at, in the units of ``crs`` (None: unknown units).

    Attributes:
        low: ``MinCellSize``.
        high: ``MaxCellSize``.
        crs: The ``spatialReference`` they are given in.
    """

    low: float
    high: float
    crs: CRS | None = None

    @classmethod
    def of(cls, definition: ModelDefinition) -> CellSizeRange | None:
        """The range an ``.emd`` gives, or None when it gives none."""
        sizes = [_cell(definition.get(key)) for key in ("MinCellSize", "MaxCellSize")]
        found = [s for s in sizes if s is not None]
        if not found:
            return None
        low = sizes[0] if sizes[0] is not None else sizes[1]
        high = sizes[1] if sizes[1] is not None else sizes[0]
        assert low is not None and high is not None
        crs = _spatial_reference(definition.get("MinCellSize") or definition.get("MaxCellSize"))
        return cls(min(low, high), max(low, high), crs)

    def in_units_of(self, crs: CRS | None) -> tuple[float, float]:
        """``(low, high)`` in the units of another coordinate system (the same when unknown)."""
        factor = _metres_per_unit(self.crs) / _metres_per_unit(crs)
        return (self.low * factor, self.high * factor)

    def __str__(self) -> str:
        return f"{self.low:g}" if self.low == self.high else f"{self.low:g}-{self.high:g}"


def _cell(value: Any) -> float | None:
    if isinstance(value, dict):
        sizes = [value.get("x"), value.get("y")]
    else:
        sizes = [getattr(value, "x", None), getattr(value, "y", None)]
    sizes = [float(s) for s in sizes if isinstance(s, (int, float)) and s > 0]
    return float(np.mean(sizes)) if sizes else None


def _spatial_reference(value: Any) -> CRS | None:
    if isinstance(value, dict):
        ref = value.get("spatialReference")
    else:
        ref = getattr(value, "spatial_reference", None)
    if not isinstance(ref, dict):
        return None
    for key in ("latestWkid", "wkid"):
        code = ref.get(key)
        if isinstance(code, int):
            for authority in ("EPSG", "ESRI"):
                try:
                    return CRS.from_user_input(f"{authority}:{code}")
                except CRSError:
                    continue
    return None


def _metres_per_unit(crs: CRS | None) -> float:
    if crs is None:
        return 1.0
    if crs.is_geographic:
        return METRES_PER_DEGREE
    try:
        return float(crs.linear_units_factor[1])
    except CRSError:
        return 1.0


def processing_cell_size(
    grid: Grid, model: CellSizeRange | None, given: float | None, name: str
) -> float | None:
    """The cell size to process a raster at, in its units; None for its own.

    ``given`` wins (None when it is the raster's own); otherwise a raster outside the model's
    range (beyond :data:`SAME_CELL_SIZE`) is resampled to the nearest end of it. Warns when
    the raster, or the cell size given, is more than :data:`FAR_OUTSIDE` times outside the
    range.
    """
    native = float(np.mean(grid.cell_size))
    if given is not None:
        if grid.crs is None:
            return given  # refused where it is read: resampling needs a georeference
        if model is not None:
            low, high = model.in_units_of(grid.crs)
            if given > high * FAR_OUTSIDE or given < low / FAR_OUTSIDE:
                warnings.warn(
                    f"processing {name} at cell size {given:g} {_units(grid.crs)}, far from "
                    f"the {model} the model was trained at: objects appear at a scale it has "
                    "not seen",
                    UserWarning,
                    stacklevel=2,
                )
        # the raster's own cell size: resampling onto the same grid would change nothing
        return None if abs(given - native) <= 1e-9 * native else given
    if grid.crs is None or model is None:
        return None
    low, high = model.in_units_of(grid.crs)
    units = _units(grid.crs)
    if low * (1 - SAME_CELL_SIZE) <= native <= high * (1 + SAME_CELL_SIZE):
        return None
    target = low if native < low else high
    if native > high * FAR_OUTSIDE:
        warnings.warn(
            f"raster {name} has cell size {native:g} {units}, far coarser than the {model} the "
            f"model was trained at: it is resampled to {target:g}, but detail finer than "
            f"{native:g} {units} is missing, so results may be poor",
            UserWarning,
            stacklevel=2,
        )
    elif native < low / FAR_OUTSIDE:
        warnings.warn(
            f"raster {name} has cell size {native:g} {units}, far finer than the {model} the "
            f"model was trained at: it is resampled to {target:g}",
            UserWarning,
            stacklevel=2,
        )
    return target


def _units(crs: CRS) -> str:
    if crs.is_geographic:
        return "degrees"
    try:
        return {"metre": "m", "meter": "m"}.get(crs.linear_units, crs.linear_units)
    except CRSError:
        return "units"


def model_band_names(definition: ModelDefinition) -> list[str] | None:
    """The names of the bands a model reads, in the order of the raster it was trained on:
    ``ExtractBands`` given as names, or ``InputRastersProps.BandNames``; None when unknown."""
    bands = definition.get("ExtractBands")
    if isinstance(bands, list) and bands and all(isinstance(b, str) for b in bands):
        return list(bands)
    props = definition.get("InputRastersProps")
    names = props.get("BandNames") if isinstance(props, dict) else None
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    return None


def check_raster(source: RasterSource, predictor: Predictor) -> None:
    """Refuse a raster the model cannot read: too few bands, a data type that cannot hold
    the values it was trained on, or no georeference for a MAP_SPACE model.

    Raises:
        InputError: saying what differs and what to give instead.
    """
    info, raster = predictor.info, source.info
    info.check_bands(raster.count, source.name)
    _check_data_type(predictor, raster.dtype, source.name)
    if info.image_space == "MAP_SPACE" and not raster.is_georeferenced:
        raise InputError(
            f"raster {source.name} has no coordinate system but the model works in MAP_SPACE",
            "georeference the raster, or use a model trained in PIXEL_SPACE",
        )


def _check_data_type(predictor: Predictor, dtype: str, name: str) -> None:
    normalizer = getattr(predictor, "normalizer", None)
    if normalizer is None:
        return  # a raster function normalises its own way
    kind = np.dtype(dtype)
    if normalizer.imagenet:
        if kind.kind not in "ui" or kind.itemsize != 1:
            raise InputError(
                f"raster {name} is {dtype} but the model was trained on 8-bit imagery",
                "give 8-bit imagery of the sensor it was trained on (or scale yours: "
                "gdal_translate -ot Byte -scale)",
            )
        return
    if kind.kind in "ui":
        bands = predictor.info.extract_bands or range(normalizer.band_count)
        top = max(normalizer.stats.band_max_values[b] for b in bands)
        if top > np.iinfo(kind).max:
            raise InputError(
                f"raster {name} is {dtype} (at most {np.iinfo(kind).max}) but the model was "
                f"trained on values up to {top:g}",
                "give imagery of the data type and sensor the model was trained on",
            )
