"""Non Maximum Suppression tool: remove duplicate detections (e.g. at tile borders) from features.

ArcGIS Image Analyst's *Non Maximum Suppression*: of two polygons overlapping by more than
``max_overlap_ratio`` (intersection over union), the one with the lower confidence is removed,
per class when a class field is given. The output keeps the input's fields and CRS.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.vector import read_vector, vector_driver, write_vector
from rasterlearn.inference.nms import nms_polygons
from rasterlearn.outputs import check_output_path
from rasterlearn.tools.declaration import INPUT, Parameter, declare
from rasterlearn.tools.parameters import OVERWRITE, output

__all__ = ["NmsResult", "non_maximum_suppression", "run_non_maximum_suppression"]

CLASS_VALUE_FALLBACKS = ("classvalue", "value")
"""Class fields ArcGIS uses when none is given (case-insensitive), in this order."""

_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class NmsResult:
    """What :func:`run_non_maximum_suppression` did.

    Attributes:
        path: The output feature file.
        kept: Features written.
        total: Features read (with a geometry) and compared.
        dropped: Features left out because their geometry was null or empty.
        class_field: The class field used, or None when all features were one class.
    """

    path: Path
    kept: int
    total: int
    dropped: int
    class_field: str | None


def non_maximum_suppression(
    in_featureclass: str | Path,
    confidence_score_field: str,
    out_featureclass: str | Path,
    class_value_field: str | None = None,
    max_overlap_ratio: float = 0.0,
    overwrite: bool = False,
) -> Path:
    """Non Maximum Suppression: keep the most confident of overlapping polygons.

    Features are taken in descending confidence (ties: file order); a feature is removed when
    the intersection over union of its polygon with an already kept one (of the same class,
    with a class field) is greater than ``max_overlap_ratio``. With the default 0 any overlap
    of positive area removes the less confident feature; polygons that only touch are kept.

    Args:
        in_featureclass: Polygon features, e.g. the output of detect objects (any vector
            format GDAL reads).
        confidence_score_field: Numeric field holding each feature's confidence.
        out_featureclass: Output file; the format follows the extension (.gpkg, .shp,
            .geojson, .fgb, .parquet).
        class_value_field: Field whose values are the classes (numbers or names); features of
            different classes never remove each other. By default ``Classvalue`` or ``Value``
            when present (as ArcGIS), else all features are one class.
        max_overlap_ratio: IoU above which the less confident feature is removed, 0 to 1.
        overwrite: Replace an existing output.

    Returns:
        The output path. It holds the kept features with all input fields, in input order,
        in the input's CRS; invalid geometries are written repaired.

    Raises:
        ParameterError: for a missing or non-numeric confidence field, an unknown class field
            or a ratio outside [0, 1].
        InputError: for unreadable input, points or lines, or features without a confidence.
        OutputError: if the output exists and ``overwrite`` is false.
    """
    return run_non_maximum_suppression(
        in_featureclass,
        confidence_score_field,
        out_featureclass,
        class_value_field=class_value_field,
        max_overlap_ratio=max_overlap_ratio,
        overwrite=overwrite,
    ).path


def run_non_maximum_suppression(
    in_featureclass: str | Path,
    confidence_score_field: str,
    out_featureclass: str | Path,
    class_value_field: str | None = None,
    max_overlap_ratio: float = 0.0,
    overwrite: bool = False,
) -> NmsResult:
    """:func:`non_maximum_suppression`, returning counts as well as the output path.

    Raises:
        See :func:`non_maximum_suppression`.
    """
    ratio = _check_ratio(max_overlap_ratio)
    out_path = Path(out_featureclass).absolute()
    vector_driver(out_path)
    check_output_path(out_path, overwrite, folder=False)
    frame = read_vector(in_featureclass)
    source = Path(in_featureclass).name
    confidence = _confidence_field(frame, confidence_score_field, source)
    class_field = _class_field(frame, class_value_field, source)

    geometry = frame.geometry
    missing = geometry.isna().to_numpy() | geometry.is_empty.to_numpy()
    _check_polygons(geometry[~missing], source)
    invalid = ~missing & ~geometry.is_valid.to_numpy()
    if invalid.any():
        repaired = np.asarray(geometry.values, dtype=object)
        repaired[invalid] = [_polygonal(g) for g in shapely.make_valid(repaired[invalid])]
        frame = frame.set_geometry(gpd.GeoSeries(repaired, index=frame.index, crs=frame.crs))
        missing |= shapely.is_empty(repaired)
    dropped = int(missing.sum())
    if dropped:
        warnings.warn(
            f"{source}: {dropped} features without a geometry (null or empty) were left out",
            UserWarning,
            stacklevel=2,
        )
        frame = frame[~missing]

    scores = frame[confidence]
    if scores.isna().any():
        raise InputError(
            f"{int(scores.isna().sum())} features of {source} have no value in the confidence "
            f"field '{confidence}'",
            "fill in or remove those features",
        )
    classes = None
    if class_field is not None:
        classes, _ = pd.factorize(frame[class_field], use_na_sentinel=False)
    kept = nms_polygons(
        np.asarray(frame.geometry.values, dtype=object),
        scores.to_numpy(dtype=np.float64),
        ratio,
        classes,
    )
    path = write_vector(frame.iloc[kept], out_path, overwrite=overwrite)
    return NmsResult(
        path=path, kept=len(kept), total=len(frame), dropped=dropped, class_field=class_field
    )


def _check_ratio(value: float) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        ratio = float("nan")
    if not 0.0 <= ratio <= 1.0:
        raise ParameterError(
            f"max_overlap_ratio must be between 0 and 1, not {value}",
            "0 removes any overlap, 0.5 removes features overlapping by more than half (IoU)",
        )
    return ratio


def _fields(frame: gpd.GeoDataFrame) -> list[str]:
    return [str(c) for c in frame.columns if c != frame.geometry.name]


def _find_field(frame: gpd.GeoDataFrame, name: str) -> str | None:
    """The column called ``name``: exact match first, else case-insensitive (as ArcGIS)."""
    fields = _fields(frame)
    if name in fields:
        return name
    return next((f for f in fields if f.lower() == name.lower()), None)


def _confidence_field(frame: gpd.GeoDataFrame, requested: str, source: str) -> str:
    numeric = [f for f in _fields(frame) if pd.api.types.is_numeric_dtype(frame[f].dtype)]
    numeric = [f for f in numeric if not pd.api.types.is_bool_dtype(frame[f].dtype)]
    choices = ", ".join(numeric) if numeric else "none: add a Float or Double field"
    field = _find_field(frame, requested)
    if field is None:
        raise ParameterError(
            f"confidence field '{requested}' is not in {source}",
            f"numeric fields: {choices}",
        )
    if field not in numeric:
        raise ParameterError(
            f"confidence field '{field}' of {source} is not numeric ({frame[field].dtype})",
            f"numeric fields: {choices}",
        )
    return field


def _class_field(frame: gpd.GeoDataFrame, requested: str | None, source: str) -> str | None:
    if requested:
        field = _find_field(frame, requested)
        if field is None:
            raise ParameterError(
                f"class value field '{requested}' is not in {source}",
                f"fields: {', '.join(_fields(frame)) or 'none'}",
            )
        return field
    for name in CLASS_VALUE_FALLBACKS:
        field = _find_field(frame, name)
        if field is not None:
            return field
    return None


def _check_polygons(geometry: gpd.GeoSeries, source: str) -> None:
    types = geometry.geom_type
    other = types[~types.isin(_POLYGONAL)]
    if len(other):
        kinds = ", ".join(sorted(set(other)))
        raise InputError(
            f"{source} holds {kinds} features; non maximum suppression compares the areas of "
            "polygons",
            "give polygon features (buffer points or lines first if they stand for areas)",
        )


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """The polygonal part of a repaired geometry (make_valid may add lines or points)."""
    if geom is None or shapely.get_type_id(geom) in (3, 6):  # Polygon, MultiPolygon
        return geom
    parts = [p for p in shapely.get_parts(geom) if shapely.get_type_id(p) in (3, 6)]
    if not parts:
        return shapely.Polygon()
    return shapely.union_all(parts) if len(parts) > 1 else parts[0]


def _result_lines(result: NmsResult) -> list[str]:
    per_class = f" (per class of '{result.class_field}')" if result.class_field else ""
    return [f"Kept {result.kept} of {result.total} features{per_class}: {result.path}"]


TOOL = declare(
    run_non_maximum_suppression,
    name="non_maximum_suppression",
    label="Non Maximum Suppression",
    rest_name="NonMaximumSuppression",
    command="nms",
    summary="Non Maximum Suppression: keep the most confident of overlapping polygons.",
    parameters=[
        Parameter(
            "in_featureclass",
            "features",
            "Polygon features, e.g. detections (any vector format GDAL reads).",
            INPUT,
            label="Input Feature Class",
            rest_name="inputFeatures",
            positional=True,
        ),
        Parameter(
            "confidence_score_field",
            "string",
            "Numeric field with each feature's confidence.",
            label="Confidence Score Field",
            default="Confidence",
        ),
        output(
            "out_featureclass",
            "file",
            "Output features; the format follows the extension (.gpkg, .shp, .geojson, .fgb, "
            ".parquet).",
            "Output Feature Class",
            "outputFeatureClass",
        ),
        Parameter(
            "class_value_field",
            "string",
            "Class field (numbers or names): classes never suppress each other. Default "
            "Classvalue or Value when present, else one class.",
            label="Class Value Field",
        ),
        Parameter(
            "max_overlap_ratio",
            "float",
            "Remove the less confident of two features overlapping by more than this IoU (0 to "
            "1; 0: any overlap).",
            label="Max Overlap Ratio",
        ),
        OVERWRITE,
    ],
    report=_result_lines,
)
