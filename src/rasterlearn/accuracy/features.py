"""Reading the features the detection accuracy tool compares: geometry checks, CRS, classes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.vector import CLASS_NAME_FIELDS, read_vector

logger = logging.getLogger("rasterlearn.accuracy")

CLASS_FIELD_DEFAULTS = ("classvalue", "value", "class")
"""Class fields looked for (case-insensitive) when none is given, in this order."""

CONFIDENCE_FIELDS = ("confidence", "score")
"""Ranking fields looked for (case-insensitive), in this order."""

_AREAL = ("Polygon", "MultiPolygon", "GeometryCollection")


@dataclass
class Features:
    """Features of one side of the comparison, in file order.

    Attributes:
        frame: The features (null and empty geometries dropped, invalid ones repaired).
        label: How messages name the input, e.g. "ground truth gt.gpkg".
        name: The file name.
        repaired: How many invalid geometries were repaired.
    """

    frame: gpd.GeoDataFrame
    label: str
    name: str
    repaired: int = 0

    @property
    def boxes(self) -> np.ndarray:
        """Bounding rectangles ``(N, 4)``: xmin, ymin, xmax, ymax."""
        return shapely.bounds(self.frame.geometry.values).reshape(-1, 4)

    def field(self, name: str) -> str | None:
        """The column called ``name`` in any letter case, or None."""
        columns = {c.lower(): c for c in self.frame.columns if c != self.frame.geometry.name}
        return columns.get(name.lower())

    def fields(self) -> list[str]:
        """The attribute columns."""
        return [c for c in self.frame.columns if c != self.frame.geometry.name]


def read_features(path: str | Path, role: str) -> Features:
    """Read polygons, drop empty geometries and repair invalid ones.

    Args:
        path: A vector file.
        role: What the input is, for messages ("detected features", "ground truth", "mask").

    Raises:
        InputError: if the file is missing, unreadable, empty, or holds points or lines.
    """
    label = f"{role} {Path(path).name}"
    frame = read_vector(path)
    if not isinstance(frame, gpd.GeoDataFrame):
        raise InputError(f"{label} has no geometries", "give a polygon feature file")
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)].reset_index(drop=True)
    if frame.empty:
        raise InputError(f"{label} has no features", "check the file and its first layer")
    kinds = frame.geometry.geom_type
    if not kinds.isin(_AREAL).all():
        other = sorted(set(kinds[~kinds.isin(_AREAL)]))
        raise InputError(
            f"{label} holds {', '.join(other)} geometries, not polygons",
            "buffer points and lines into polygons first (e.g. geopandas buffer or QGIS Buffer)",
        )
    invalid = ~frame.geometry.is_valid
    repaired = int(invalid.sum())
    if repaired:
        frame.loc[invalid, frame.geometry.name] = frame.geometry[invalid].make_valid()
        logger.warning("repaired %d invalid geometries in %s", repaired, label)
    return Features(frame=frame, label=label, name=Path(path).name, repaired=repaired)


def to_crs(features: Features, crs: CRS | None, target_label: str) -> str | None:
    """Bring ``features`` into ``crs`` in place; returns a note when they were reprojected.

    Raises:
        InputError: if exactly one of the two has a coordinate system.
    """
    own = features.frame.crs
    if crs is None and own is None:
        return None
    hint = "define the projection of the file that lacks one (e.g. in QGIS)"
    if own is None:
        raise InputError(f"{features.label} has no coordinate system but {target_label} has", hint)
    if crs is None:
        raise InputError(f"{target_label} has no coordinate system but {features.label} has", hint)
    if CRS.from_user_input(own) == CRS.from_user_input(crs):
        return None
    features.frame = features.frame.to_crs(crs)
    return f"reprojected {features.label} from {own.to_string()} to {crs.to_string()}"


def keep_in_mask(features: Features, mask: Features) -> int:
    """Keep only the features that intersect a mask polygon; returns how many were dropped."""
    tree = shapely.STRtree(mask.frame.geometry.values)
    hits = tree.query(features.frame.geometry.values, predicate="intersects")[0]
    keep = np.zeros(len(features.frame), dtype=bool)
    keep[hits] = True
    features.frame = features.frame[keep].reset_index(drop=True)
    return int((~keep).sum())


def class_field(features: Features, requested: str | None) -> str | None:
    """The class field: as requested, else Classvalue/Value/Class, else None (one class).

    Raises:
        ParameterError: if the requested field does not exist.
    """
    if requested:
        found = features.field(requested)
        if found is None:
            raise ParameterError(
                f"class value field '{requested}' is not in {features.label}",
                f"use one of: {', '.join(features.fields()) or 'it has no fields'}",
            )
        return found
    return next((f for f in map(features.field, CLASS_FIELD_DEFAULTS) if f is not None), None)


def class_keys(features: Features, field: str) -> np.ndarray:
    """The class of every feature as text: whole numbers without decimals, names stripped.

    Raises:
        ParameterError: if a feature has no class or a number is not whole.
    """
    values = features.frame[field]
    missing = values.isna() | (values.astype(str).str.strip() == "")
    if missing.any():
        raise ParameterError(
            f"{int(missing.sum())} features of {features.label} have no value in '{field}'",
            "fill the class field of every feature, or choose another field",
        )
    if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype(str).str.strip().to_numpy(dtype=object)
    numbers = values.to_numpy(dtype=np.float64)
    if not np.all(np.mod(numbers, 1) == 0):
        raise ParameterError(
            f"class field '{field}' of {features.label} holds numbers that are not whole",
            "choose a Short/Long or text class field",
        )
    return np.array([str(int(v)) for v in numbers], dtype=object)


def name_keys(features: Features, value_field: str) -> tuple[str, np.ndarray] | None:
    """Class names of the features from a name field beside ``value_field``, if there is one."""
    candidates = [*CLASS_NAME_FIELDS, "class"]
    for name in candidates:
        found = features.field(name)
        if found is None or found == value_field:
            continue
        try:
            return found, class_keys(features, found)
        except ParameterError:
            continue
    return None


def confidence(features: Features) -> tuple[np.ndarray, str | None]:
    """Ranking score of every feature (``Confidence`` or ``Score``), all equal when absent.

    Raises:
        ParameterError: if the field is not numeric or has missing values.
    """
    found = next((f for f in map(features.field, CONFIDENCE_FIELDS) if f is not None), None)
    if found is None:
        return np.zeros(len(features.frame)), None
    values = features.frame[found]
    if not pd.api.types.is_numeric_dtype(values.dtype) or values.isna().any():
        raise ParameterError(
            f"field '{found}' of {features.label} must hold a number for every feature",
            "fix the field, or rename it so that detections are ranked in file order",
        )
    return values.to_numpy(dtype=np.float64), found
