"""Review decisions kept in the results GeoPackage: Status, ReviewedClass and ReviewedAt written
safely (revisions, FIDs and other layers kept, nothing half-written), ground truth from the
accepted features."""

from __future__ import annotations

import datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import shapely

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.reviewed import (
    Decision,
    decisions_from_json,
    ground_truth,
    read_reviewed,
    write_decisions,
    write_ground_truth,
)
from rasterlearn.formats.samples import RevisionConflict, revision_of

WHEN = datetime.datetime(2026, 5, 4, 12, 30, tzinfo=datetime.timezone.utc)


def detections(path: Path, classes: list, field: str = "Class") -> Path:
    """Detect Objects' output: boxes with a class and a confidence, FIDs 1, 2, 3 ... (with a
    gap at 2 when there are more than two), a second layer, layer metadata."""
    frame = gpd.GeoDataFrame(
        {field: classes, "Confidence": [90.0 - 10 * i for i in range(len(classes))]},
        geometry=[shapely.box(i * 10, 0, i * 10 + 5, 5) for i in range(len(classes))],
        crs="EPSG:32617",
    )
    frame.index = [1, *range(3, len(classes) + 2)] if len(classes) > 2 else [1, 2]
    pyogrio.write_dataframe(
        frame.rename_axis("fid").reset_index(),
        path,
        layer=path.stem,
        layer_options={"FID": "fid"},
        layer_metadata={"SOURCE": "detect-objects"},
    )
    pyogrio.write_dataframe(frame.head(1), path, layer="extra")
    return path


def test_decisions_are_kept_in_the_file_with_fids_and_other_layers(tmp_path: Path) -> None:
    path = detections(tmp_path / "det.gpkg", ["building", "tree", "building"])
    before = read_reviewed(path)
    assert (before.class_field, before.score_field, before.layer) == ("Class", "Confidence", "det")
    assert before.frame.index.tolist() == [1, 3, 4] and before.frame["Status"].isna().all()
    decided = [
        Decision(1, "accepted", None),  # as detected
        Decision(3, "accepted", "building"),  # reclassed
        Decision(4, "rejected", "tree"),  # a rejected feature keeps no class
    ]
    revision = write_decisions(path, decided, before.revision, now=WHEN)
    assert revision == revision_of(path) != before.revision
    frame = pyogrio.read_dataframe(path, layer="det", fid_as_index=True)
    assert frame.index.tolist() == [1, 3, 4]
    assert frame["Status"].tolist() == ["accepted", "accepted", "rejected"]
    assert frame["ReviewedClass"].tolist()[:2] == ["building", "building"]
    assert pd.isna(frame["ReviewedClass"][4])
    assert (frame["ReviewedAt"] == pd.Timestamp(WHEN)).all()
    assert frame["Class"].tolist() == ["building", "tree", "building"]  # the detections stay
    assert {name for name, _ in pyogrio.list_layers(path)} == {"det", "extra"}
    assert pyogrio.read_info(path, layer="det")["layer_metadata"] == {"SOURCE": "detect-objects"}
    cleared = write_decisions(path, [Decision(3, None, None)], revision)
    again = read_reviewed(path).frame
    assert pd.isna(again["Status"][3]) and pd.isna(again["ReviewedAt"][3])
    assert again["Status"][1] == "accepted"
    with pytest.raises(RevisionConflict, match="reload the page"):
        write_decisions(path, [Decision(1, "rejected", None)], revision)  # a stale tab
    assert revision_of(path) == cleared


def test_a_bad_decision_leaves_the_file_whole(tmp_path: Path) -> None:
    path = detections(tmp_path / "det.gpkg", ["building", "tree"])
    revision = revision_of(path)
    with pytest.raises(ParameterError, match="no feature with fid 9"):
        write_decisions(path, [Decision(9, "accepted", None)], revision)
    assert revision_of(path) == revision
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.gpkg"]  # no partial file


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "non-empty list"),
        ([{"Status": "accepted"}], "no whole-number fid"),
        ([{"fid": 1, "Status": "maybe"}], "status 'maybe' of feature 1 is unknown"),
    ],
)
def test_bad_decisions_are_refused_in_one_line(rows: list, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        decisions_from_json(rows)


def test_ground_truth_is_the_accepted_features_in_their_reviewed_class(tmp_path: Path) -> None:
    path = detections(tmp_path / "det.gpkg", ["building", "tree", "building"])
    with pytest.raises(InputError, match="no feature is accepted yet"):
        ground_truth(read_reviewed(path))
    decided = [Decision(1, "accepted", None), Decision(3, "accepted", "water")]
    write_decisions(path, [*decided, Decision(4, "rejected", None)], revision_of(path))
    target = tmp_path / "det_accepted.gpkg"
    assert write_ground_truth(read_reviewed(path), target) == 2
    truth = gpd.read_file(target)
    assert truth["Class"].tolist() == ["building", "water"] and truth.crs.to_epsg() == 32617
    # class values stay numbers when the class field holds numbers
    numbers = detections(tmp_path / "values.gpkg", [1, 2], field="Classvalue")
    write_decisions(numbers, [Decision(2, "accepted", "1")], revision_of(numbers))
    assert ground_truth(read_reviewed(numbers))["Classvalue"].tolist() == [1]


def test_what_cannot_be_reviewed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a GeoPackage"):
        read_reviewed(tmp_path / "det.shp")
    with pytest.raises(InputError, match="do not exist"):
        read_reviewed(tmp_path / "none.gpkg")
    frame = gpd.GeoDataFrame(
        {"Status": ["done"]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:32617"
    )
    frame.to_file(tmp_path / "other.gpkg")
    with pytest.raises(InputError, match="may only be accepted or rejected"):
        read_reviewed(tmp_path / "other.gpkg")
