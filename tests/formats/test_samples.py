"""The samples GeoPackage: Label Objects schema, safe saves (revisions, crashes), class schemas,
and Export Training Data reading it as it is."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from rasterio.crs import CRS

from rasterlearn import export_training_data
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.chips import ClassInfo
from rasterlearn.formats.export_reader import read_export_folder
from rasterlearn.formats.samples import (
    NO_REVISION,
    RevisionConflict,
    classes_from_json,
    load_class_schema,
    read_samples,
    revision_of,
    samples_frame,
    write_samples,
)
from rasterlearn.synthetic import SyntheticScene

UTM = CRS.from_epsg(32617)
CLASSES = [ClassInfo(1, "building", (230, 25, 75)), ClassInfo(2, "tree", (60, 180, 75))]


def feature(geometry: shapely.Geometry, value: int) -> dict:
    return {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(geometry),
        "properties": {"Classvalue": value},
    }


def test_samples_round_trip_in_the_label_objects_schema(tmp_path: Path) -> None:
    path = tmp_path / "samples.gpkg"
    assert read_samples(path).revision == NO_REVISION and read_samples(path).frame.empty
    box, point = shapely.box(400010, 3299950, 400020, 3299960), shapely.Point(400030, 3299940)
    classes = [*CLASSES, ClassInfo(3, "water")]  # a class without samples is kept
    frame = samples_frame([feature(box, 1), feature(point, 2)], classes, UTM)
    revision = write_samples(path, frame, classes, NO_REVISION)
    assert revision == revision_of(path) != NO_REVISION
    # what any GDAL reader sees: one layer named after the file, the fields, the CRS
    info = pyogrio.read_info(path)
    assert pyogrio.list_layers(path)[:, 0].tolist() == ["samples"]
    assert list(info["fields"]) == ["Classvalue", "Classname"]
    assert info["dtypes"].tolist() == ["int32", "object"]
    plain = gpd.read_file(path)
    assert plain.crs == UTM and plain["Classname"].tolist() == ["building", "tree"]
    assert plain.geometry[0].equals(box) and plain.geometry[1].equals(point)
    read = read_samples(path)
    assert read.revision == revision and read.classes == classes


def test_a_save_based_on_an_old_revision_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "samples.gpkg"
    one = samples_frame([feature(shapely.box(0, 0, 1, 1), 1)], CLASSES, UTM)
    first = write_samples(path, one, CLASSES, NO_REVISION)
    with pytest.raises(RevisionConflict, match=r"was saved elsewhere .*reload the page"):
        write_samples(path, one.iloc[:0], CLASSES, NO_REVISION)  # a second tab, loaded before
    assert len(read_samples(path).frame) == 1 and revision_of(path) == first
    assert write_samples(path, one.iloc[:0], CLASSES, first) != first  # the up-to-date tab
    assert read_samples(path).frame.empty


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ([feature(shapely.box(0, 0, 1, 1), 9)], "class value 9, which is not in the class schema"),
        ([feature(shapely.LineString([(0, 0), (1, 1)]), 1)], "not a polygon or a point"),
        ([{"properties": {"Classvalue": 1}}], "not a polygon or a point"),
    ],
)
def test_bad_samples_are_refused_in_one_line(features: list, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        samples_frame(features, CLASSES, UTM)


def test_bad_class_schemas_are_refused() -> None:
    with pytest.raises(ParameterError, match="gives a value twice"):
        classes_from_json([{"Value": 1, "Name": "a"}, {"Value": 1, "Name": "b"}])
    with pytest.raises(ParameterError, match="no whole-number Value"):
        classes_from_json([{"Value": "one"}])
    assert classes_from_json([{"ClassValue": 4, "ClassName": "x", "Color": [-1, -1, -1]}]) == [
        ClassInfo(4, "x")
    ]


def test_a_crash_while_saving_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "samples.gpkg"
    frame = samples_frame([feature(shapely.box(0, 0, 1, 1), 1)], CLASSES, UTM)
    before = write_samples(path, frame, CLASSES, NO_REVISION)
    xs = np.arange(40000, dtype=float)
    big = gpd.GeoDataFrame(
        {"Classvalue": np.ones(len(xs), int), "Classname": "building"},
        geometry=shapely.box(xs, 0, xs + 1, 1),
        crs=UTM,
    )
    child = os.fork()  # a process that already has everything imported, killed mid-write
    if child == 0:
        try:
            write_samples(path, big, CLASSES, before)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".samples.partial-*.gpkg")) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert list(tmp_path.glob(".samples.partial-*.gpkg")), "the save was not caught mid-write"
    assert revision_of(path) == before
    assert read_samples(path).frame.geometry[0].equals(shapely.box(0, 0, 1, 1))
    # the next save removes what the crashed one left
    write_samples(path, frame, CLASSES, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.gpkg"]


def test_export_training_data_reads_the_samples_as_they_are(
    tmp_path: Path, scene: SyntheticScene
) -> None:
    polygons = gpd.read_file(scene.polygons_path)
    wanted = polygons[polygons["ClassName"].isin(["building", "tree"])].head(6)
    values = {"building": 1, "tree": 2}
    features = [
        feature(g, values[n]) for g, n in zip(wanted.geometry, wanted["ClassName"], strict=True)
    ]
    path = tmp_path / "samples.gpkg"
    write_samples(path, samples_frame(features, CLASSES, UTM), CLASSES, NO_REVISION)
    out = tmp_path / "chips"
    export_training_data(str(scene.raster_path), out, str(path), tile_size_x=128, tile_size_y=128)
    export = read_export_folder(out)
    assert {c.value: c.name for c in export.classes} == {1: "building", 2: "tree"}
    counted = export.objects_per_class()
    assert set(counted) == {1, 2} and sum(counted.values()) >= len(wanted)


def test_class_schemas_from_models_exports_and_features(
    tmp_path: Path, scene: SyntheticScene
) -> None:
    emd = tmp_path / "model.emd"
    emd.write_text(
        json.dumps(
            {
                "Framework": "PyTorch",
                "ModelConfiguration": "FasterRCNN",
                "ModelFile": "model.pth",
                "Classes": [{"Value": 5, "Name": "car", "Color": [1, 2, 3]}],
            }
        )
    )
    assert load_class_schema(emd) == [ClassInfo(5, "car", (1, 2, 3))]
    out = tmp_path / "chips"
    export_training_data(
        str(scene.raster_path), out, str(scene.polygons_path), tile_size_x=128, tile_size_y=128
    )
    from_export = load_class_schema(out)
    names = {c.name for c in scene.classes}
    assert {c.name for c in from_export} <= names and from_export
    from_features = load_class_schema(Path(scene.polygons_path))
    assert {(c.value, c.name) for c in from_features} == {(c.value, c.name) for c in from_export}
    samples = tmp_path / "samples.gpkg"
    frame = samples_frame([feature(shapely.Point(1, 1), 2)], CLASSES, UTM)
    write_samples(samples, frame, CLASSES, NO_REVISION)
    assert load_class_schema(samples) == CLASSES  # colours and unused classes kept
    empty = tmp_path / "empty.emd"
    empty.write_text(json.dumps({"Framework": "PyTorch", "ModelConfiguration": "FasterRCNN"}))
    with pytest.raises(InputError, match="holds no classes"):
        load_class_schema(empty)
    other = tmp_path / "other.gpkg"
    gpd.GeoDataFrame({"kind": ["x"]}, geometry=[shapely.Point(0, 0)], crs=UTM).to_file(other)
    with pytest.raises(InputError, match=r"other\.gpkg has no Classvalue field"):
        read_samples(other)
