"""Training samples as ArcGIS's Label Objects for Deep Learning pane saves them.

A GeoPackage layer (named after the file) of polygons and/or points with ``Classvalue``
(integer) and ``Classname`` (text), in the raster's CRS (none for pixel space): what Export
Training Data reads as it is. The class schema (value, name, colour, in the .emd's ``Classes``
form) is kept in the layer's metadata so that classes without samples, and colours, survive.

Saving is safe: the layer is written to a hidden file in the same folder and renamed over the
old one (a crash leaves the old file whole), and a save names the revision it edits (a hash of
the file's bytes): when the file changed since, the save is refused with
:class:`RevisionConflict`, so two editors never overwrite each other's work.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from rasterio.crs import CRS

from rasterlearn.errors import InputError, ParameterError, RasterLearnError
from rasterlearn.formats.chips import ClassInfo

VALUE_FIELD = "Classvalue"
NAME_FIELD = "Classname"
CLASSES_METADATA = "RASTERLEARN_CLASSES"
"""The layer metadata item holding the class schema as JSON."""
NO_REVISION = "none"
"""The revision of samples not saved yet (no file)."""
_SHAPES = ("Polygon", "MultiPolygon", "Point")
_EMPTY = gpd.GeoDataFrame({VALUE_FIELD: [], NAME_FIELD: []}, geometry=[])


class RevisionConflict(RasterLearnError):
    """The samples file changed since the revision a save was based on."""


@dataclass(frozen=True)
class Samples:
    """A samples layer as read.

    Attributes:
        frame: ``Classvalue``, ``Classname`` and the geometry, one row per sample.
        classes: The class schema (from the metadata, plus any value only the features use).
        revision: The file's revision (:data:`NO_REVISION` when there is no file).
    """

    frame: gpd.GeoDataFrame
    classes: list[ClassInfo]
    revision: str


def revision_of(path: Path) -> str:
    """A hash of the file's bytes: changes whenever anyone rewrites it."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except FileNotFoundError:
        return NO_REVISION
    return digest.hexdigest()[:24]


def classes_to_json(classes: list[ClassInfo]) -> list[dict[str, Any]]:
    """The schema in the .emd's ``Classes`` form."""
    return [
        {"Value": c.value, "Name": c.name, "Color": list(c.color) if c.color else None}
        for c in classes
    ]


def classes_from_json(rows: Any) -> list[ClassInfo]:
    """A schema from ``[{Value, Name, Color}]`` (``ClassValue``/``ClassName`` also read).

    Raises:
        ParameterError: for a row without a whole-number value, or values given twice.
    """
    if not isinstance(rows, list):
        raise ParameterError("the class schema must be a list", "give [{Value, Name, Color}]")
    classes = []
    for row in rows:
        value = row.get("Value", row.get("ClassValue")) if isinstance(row, dict) else None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(
                f"class {row!r} has no whole-number Value", "give each class an integer Value"
            )
        name = str(row.get("Name", row.get("ClassName")) or value)
        color = row.get("Color")
        valid_color = isinstance(color, list) and len(color) >= 3
        if valid_color and all(isinstance(c, int) and 0 <= c <= 255 for c in color[:3]):
            classes.append(ClassInfo(value, name, (color[0], color[1], color[2])))
        else:
            classes.append(ClassInfo(value, name))
    values = [c.value for c in classes]
    if len(set(values)) != len(values):
        raise ParameterError("the class schema gives a value twice", "give each class once")
    return classes


def read_samples(path: Path) -> Samples:
    """Read a samples layer; a missing file is an empty one.

    Raises:
        InputError: when the file is not a layer with ``Classvalue``.
    """
    revision = revision_of(path)
    if revision == NO_REVISION:
        return Samples(_EMPTY, [], revision)
    try:
        info = pyogrio.read_info(path)
        frame = pyogrio.read_dataframe(path)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:
        raise InputError(f"cannot read samples {path.name}: {err}", "give a GeoPackage") from None
    fields = {c.lower(): c for c in frame.columns}
    if VALUE_FIELD.lower() not in fields:
        raise InputError(
            f"{path.name} has no {VALUE_FIELD} field, so it is not a samples layer",
            "give a new file name, or samples saved by the label page or ArcGIS",
        )
    frame = frame.rename(columns={fields[VALUE_FIELD.lower()]: VALUE_FIELD})
    if NAME_FIELD.lower() in fields:
        frame = frame.rename(columns={fields[NAME_FIELD.lower()]: NAME_FIELD})
    else:
        frame[NAME_FIELD] = frame[VALUE_FIELD].astype(str)
    metadata = (info.get("layer_metadata") or {}).get(CLASSES_METADATA)
    classes = classes_from_json(json.loads(metadata)) if metadata else []
    known = {c.value for c in classes}
    for value, name in zip(frame[VALUE_FIELD], frame[NAME_FIELD], strict=True):
        if int(value) not in known:
            known.add(int(value))
            classes.append(ClassInfo(int(value), str(name)))
    return Samples(frame[[VALUE_FIELD, NAME_FIELD, "geometry"]], classes, revision)


def samples_frame(features: Any, classes: list[ClassInfo], crs: CRS | None) -> gpd.GeoDataFrame:
    """Samples from GeoJSON features: a geometry (polygon or point) and a ``Classvalue`` of the
    schema each (``Classname`` is taken from the schema).

    Raises:
        ParameterError: for a feature without a valid geometry or with an unknown class.
    """
    names = {c.value: c.name for c in classes}
    if not isinstance(features, list):
        raise ParameterError("features must be a list of GeoJSON features", "send a list")
    values, geometries = [], []
    for i, feature in enumerate(features):
        props = feature.get("properties") or {} if isinstance(feature, dict) else {}
        value = props.get(VALUE_FIELD)
        if isinstance(value, bool) or not isinstance(value, int) or value not in names:
            raise ParameterError(
                f"sample {i + 1} has class value {value!r}, which is not in the class schema",
                "add the class to the schema first",
            )
        try:
            geometry = shapely.geometry.shape(feature["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException):
            geometry = None
        if geometry is None or geometry.geom_type not in _SHAPES or geometry.is_empty:
            raise ParameterError(
                f"sample {i + 1} is not a polygon or a point", "draw polygons or points"
            )
        values.append(value)
        geometries.append(geometry)
    return gpd.GeoDataFrame(
        {VALUE_FIELD: values, NAME_FIELD: [names[v] for v in values]},
        geometry=geometries,
        crs=crs,
    )


def write_samples(
    path: Path, frame: gpd.GeoDataFrame, classes: list[ClassInfo], based_on: str
) -> str:
    """Save samples over ``path`` if it is still at revision ``based_on``.

    Returns:
        The new revision.

    Raises:
        RevisionConflict: when the file is no longer at ``based_on``.
    """
    return replace_at_revision(
        path, based_on, lambda temporary: _write_layer(temporary, path.stem, frame, classes)
    )


def replace_at_revision(path: Path, based_on: str, write: Callable[[Path], None]) -> str:
    """Replace ``path`` by the file ``write(temporary)`` writes, if ``path`` is still at
    revision ``based_on``: under a lock, into a hidden file beside it (same extension), synced
    and renamed over it, so a crash leaves the old file whole.

    Returns:
        The new revision.

    Raises:
        RevisionConflict: when the file is no longer at ``based_on``.
    """
    with _exclusive(path):
        current = revision_of(path)
        if current != based_on:
            raise RevisionConflict(
                f"{path.name} was saved elsewhere (another tab or program) since this copy "
                "was loaded, so saving would lose those edits",
                "reload the page to get them, then redo your changes",
            )
        for stale in path.parent.glob(partial_pattern(path)):  # a crashed save's
            stale.unlink(missing_ok=True)
        # GDAL wants the .gpkg extension on the temporary file too
        temporary = path.with_name(partial_pattern(path).replace("*", uuid.uuid4().hex[:8]))
        try:
            write(temporary)
            with temporary.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return revision_of(path)


def partial_pattern(path: Path) -> str:
    """The names a save of ``path`` writes before its rename (``*``: a random part)."""
    return f".{path.stem}.partial-*{path.suffix}"


def _write_layer(path: Path, layer: str, frame: gpd.GeoDataFrame, classes: list[ClassInfo]) -> None:
    kinds = set(frame.geometry.geom_type)
    if kinds <= {"Point"} and kinds:
        geometry_type = "Point"
    elif kinds <= {"Polygon", "MultiPolygon"}:
        geometry_type = "MultiPolygon" if "MultiPolygon" in kinds else "Polygon"
    else:
        geometry_type = "Unknown"
    frame = frame.astype({VALUE_FIELD: "int32", NAME_FIELD: "str"})
    with warnings.catch_warnings():
        # samples in pixel space have no CRS, and that is right
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        pyogrio.write_dataframe(
            frame,
            path,
            layer=layer,
            driver="GPKG",
            geometry_type=geometry_type,
            promote_to_multi=geometry_type == "MultiPolygon",
            dataset_options={"VERSION": "1.3"},
            layer_metadata={CLASSES_METADATA: json.dumps(classes_to_json(classes))},
        )


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold the samples file for a check-and-write: against this process's other threads and
    against other processes (an advisory lock on its folder)."""
    key = path.absolute()
    with _LOCKS_LOCK:
        lock = _LOCKS.setdefault(key, threading.Lock())
    with lock:
        folder = os.open(key.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)


def load_class_schema(path: Path) -> list[ClassInfo]:
    """A class schema from a model (.emd, .dlpk, model folder), an export folder (its
    ``esri_model_definition.emd``) or existing samples or labelled features.

    Raises:
        InputError: when the source holds no classes or cannot be read.
    """
    from rasterlearn.formats.export_reader import read_export_folder
    from rasterlearn.formats.model_source import load_model_definition
    from rasterlearn.geo.vector import class_names, read_vector, resolve_class_field

    if path.is_dir() and (path / "images").is_dir():
        classes = list(read_export_folder(path).classes)
    elif path.is_dir() or path.suffix.lower() in (".emd", ".dlpk"):
        found = load_model_definition(path).classes or []
        classes = [ClassInfo(c.value, str(c.name), c.color) for c in found]
    else:
        frame = read_vector(path)
        if VALUE_FIELD.lower() in {c.lower() for c in frame.columns}:
            classes = read_samples(path).classes
        else:
            field = resolve_class_field(frame, None, path.name)
            values = frame[field].to_numpy(dtype=int) if field else np.ones(len(frame), int)
            classes = [ClassInfo(v, n) for v, n in class_names(frame, field, values).items()]
    if not classes:
        raise InputError(f"{path.name} holds no classes", "give a model, export folder or samples")
    return sorted(classes, key=lambda c: c.value)
