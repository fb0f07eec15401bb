"""Read labelled features (pyogrio), reproject them to a raster's CRS and resolve class fields.

GeoPandas, pandas and pyogrio are imported by the functions that read or write files: a
:class:`FeatureSet` needs only shapely, so the worker processes that cut chips with one
start without them (a third of their start-up).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely
from rasterio.crs import CRS

from rasterlearn.errors import InputError, ParameterError

if TYPE_CHECKING:
    import geopandas as gpd

CLASS_VALUE_FALLBACKS = ("value", "classvalue")
CLASS_NAME_FIELDS = ("classname", "class_name", "name", "label")


@dataclass(frozen=True)
class FeatureSet:
    """Labelled features in one CRS, in file order.

    Attributes:
        geometries: Shapely geometries (polygons after buffering), one per feature.
        values: Integer class value per feature.
        names: Class name per class value.
        crs: CRS of the geometries, or None for pixel coordinates.
    """

    geometries: np.ndarray
    values: np.ndarray
    names: dict[int, str]
    crs: CRS | None

    def __len__(self) -> int:
        return len(self.geometries)

    @cached_property
    def tree(self) -> shapely.STRtree:
        """Spatial index of the geometries, built once."""
        return shapely.STRtree(self.geometries)

    def __getstate__(self) -> dict:
        # Sent to every worker: one vectorised WKB pass instead of a pickle call per
        # geometry (a tenth of the time), and without the index, which is rebuilt there.
        state = {k: v for k, v in self.__dict__.items() if k != "tree"}
        state["geometries"] = shapely.to_wkb(self.geometries)
        return state

    def __setstate__(self, state: dict) -> None:
        state["geometries"] = shapely.from_wkb(state["geometries"])
        self.__dict__.update(state)


def read_vector(path: str | Path) -> gpd.GeoDataFrame:
    """Read a vector file (GeoPackage, Shapefile, GeoJSON, ...) with pyogrio.

    Raises:
        InputError: if the file is missing or GDAL cannot read it.
    """
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise InputError(f"feature file {path} does not exist", "check the path")
    try:
        return gpd.read_file(path, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as err:
        raise InputError(
            f"cannot read features from {path}: {err}", "check it opens in QGIS or with ogrinfo"
        ) from None


def resolve_class_field(frame: gpd.GeoDataFrame, requested: str | None, source: str) -> str | None:
    """The class value field: as requested, else ``value``/``classvalue``, else None (one class).

    Raises:
        ParameterError: if the requested field does not exist or is not integer-valued.
    """
    columns = {c.lower(): c for c in frame.columns if c != frame.geometry.name}
    if requested:
        field = columns.get(requested.lower())
        if field is None:
            raise ParameterError(
                f"class value field '{requested}' is not in {source}",
                f"use one of: {', '.join(sorted(columns.values())) or 'no fields'}",
            )
    else:
        field = next((columns[c] for c in CLASS_VALUE_FALLBACKS if c in columns), None)
        if field is None:
            return None
    import pandas as pd

    values = frame[field]
    numeric = pd.api.types.is_numeric_dtype(values.dtype) and not values.isna().any()
    if not numeric or not np.all(np.mod(values.to_numpy(dtype=float), 1) == 0):
        raise ParameterError(
            f"class value field '{field}' of {source} must hold whole numbers",
            "pick an integer (Short/Long) field with --class-value-field",
        )
    return field


def class_names(frame: gpd.GeoDataFrame, field: str | None, values: np.ndarray) -> dict[int, str]:
    """The class name of each value: from a Classname/Name/Label field, else the value."""
    columns = {c.lower(): c for c in frame.columns if c not in (field, frame.geometry.name)}
    name_field = next((columns[c] for c in CLASS_NAME_FIELDS if c in columns), None)
    names: dict[int, str] = {}
    for i, value in enumerate(values.tolist()):
        if value in names:
            continue
        name = frame[name_field].iloc[i] if name_field is not None else None
        names[value] = str(name) if name is not None and str(name).strip() else str(value)
    return dict(sorted(names.items()))


def load_features(
    path: str | Path,
    target_crs: CRS | None,
    class_value_field: str | None = None,
    buffer_radius: float = 0.0,
    require_areas: bool = True,
) -> FeatureSet:
    """Read labelled features, buffer them and bring them into the raster's CRS.

    Args:
        path: Vector file of polygons, points or lines.
        target_crs: CRS of the raster; None when the raster has no georeference.
        class_value_field: Integer class field; None looks for ``value``/``classvalue``,
            else every feature is class 1.
        buffer_radius: Buffer distance in the units of the features' CRS (points become circles).
        require_areas: Refuse points and lines that would be left without area.

    Raises:
        InputError: for unreadable or empty files and CRS mismatches.
        ParameterError: for unknown class fields or points without a buffer radius.
    """
    frame = read_vector(path)
    source = Path(path).name
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    if frame.empty:
        raise InputError(f"{source} has no features with a geometry", "check the feature file")
    field = resolve_class_field(frame, class_value_field, source)
    values = frame[field].to_numpy(dtype=np.int64) if field else np.ones(len(frame), dtype=np.int64)
    if np.any(values < 0):
        raise ParameterError(
            f"class values in '{field}' of {source} must not be negative",
            "use values 1..n; 0 is NoData",
        )
    geoms = frame.geometry
    if buffer_radius and buffer_radius > 0:
        geoms = geoms.buffer(buffer_radius, quad_segs=16)
    elif require_areas and not geoms.geom_type.isin(["Polygon", "MultiPolygon"]).all():
        raise ParameterError(
            f"{source} holds points or lines, which have no area to label",
            "give --buffer-radius (in the features' map units) to turn them into polygons",
        )
    geoms = geoms.make_valid() if not geoms.is_valid.all() else geoms
    feature_crs = frame.crs
    if target_crs is not None:
        if feature_crs is None:
            raise InputError(
                f"{source} has no coordinate system but the raster does",
                "define the features' projection (e.g. in QGIS) so they can be placed on the "
                "raster",
            )
        geoms = geoms.to_crs(target_crs)
    elif feature_crs is not None:
        raise InputError(
            f"{source} has a coordinate system but the raster has none, so they cannot be "
            "placed on each other in MAP_SPACE",
            "georeference the raster, or use --reference-system PIXEL_SPACE with features in "
            "pixel coordinates",
        )
    return FeatureSet(
        geometries=np.asarray(geoms.values, dtype=object),
        values=values,
        names=class_names(frame, field, values),
        crs=target_crs,
    )


def load_mask(path: str | Path, target_crs: CRS | None) -> shapely.Geometry:
    """The union of mask polygons in the raster's CRS."""
    frame = read_vector(path)
    if frame.empty:
        raise InputError(f"mask {Path(path).name} has no polygons", "check the mask file")
    if target_crs is not None and frame.crs is not None:
        frame = frame.to_crs(target_crs)
    return shapely.union_all(frame.geometry.make_valid().values)


VECTOR_DRIVERS = {
    ".gpkg": "GPKG",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".parquet": "Parquet",
}
"""Output vector format by file extension."""


def vector_driver(path: str | Path) -> str:
    """The OGR driver an output path's extension asks for.

    Raises:
        ParameterError: for an extension that is not a supported vector format.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VECTOR_DRIVERS:
        raise ParameterError(
            f"output {path} has no vector format extension",
            "end it with " + ", ".join(VECTOR_DRIVERS),
        )
    return VECTOR_DRIVERS[suffix]


def write_vector(
    frame: gpd.GeoDataFrame, path: str | Path, overwrite: bool = False, layer: str | None = None
) -> Path:
    """Write features atomically, the format following the extension (GeoPackage 1.3 default).

    The file (with a Shapefile's side-cars) is written in a hidden folder beside the target
    and moved into place when complete. A GeoPackage is written as version 1.3 so that older
    GDALs and ArcGIS read it.

    Args:
        frame: Features (a GeoDataFrame; its CRS is written).
        path: Output path (``.gpkg``, ``.shp``, ``.geojson``, ``.fgb``, ``.parquet``).
        overwrite: Replace an existing output.
        layer: Layer name (GeoPackage); defaults to the file stem.

    Returns:
        The output path.

    Raises:
        ParameterError: for an unsupported extension.
        OutputError: if the output exists and ``overwrite`` is false.
    """
    import pyogrio

    from rasterlearn.outputs import staged_files

    driver = vector_driver(path)
    with staged_files(path, overwrite) as written:
        if driver == "Parquet":
            frame.to_parquet(written)
        else:
            options = {"VERSION": "1.3"} if driver == "GPKG" else None
            with warnings.catch_warnings():
                # features in pixel space have no CRS, and that is right
                warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
                pyogrio.write_dataframe(
                    frame,
                    written,
                    driver=driver,
                    layer=layer or written.stem,
                    dataset_options=options,
                )
    return Path(path)
