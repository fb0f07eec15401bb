"""Reviewed results: an analyst's decisions kept in the results GeoPackage itself.

Detect Objects (``Class``, ``Confidence`` 0-100) or Classify Objects (``ClassLabel``,
``Confidence`` 0-1) write a GeoPackage; the review page adds three fields to its layer, as
ArcGIS's attributes pane would be used to: ``Status`` (``accepted`` or ``rejected``, empty
until reviewed), ``ReviewedClass`` (the class the analyst confirmed or gave) and
``ReviewedAt`` (when, UTC). Features are named by their FID, which a save keeps.

A save rewrites the layer into a copy of the file and renames it over the original, after
checking the file is still at the revision the page loaded
(:func:`rasterlearn.formats.samples.replace_at_revision`): no half-written file, no lost
edits. The accepted features, with their reviewed class, are ground truth for Compute
Accuracy For Object Detection (:func:`write_ground_truth`).
"""

from __future__ import annotations

import datetime
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.samples import replace_at_revision, revision_of

STATUS_FIELD = "Status"
REVIEWED_CLASS_FIELD = "ReviewedClass"
REVIEWED_AT_FIELD = "ReviewedAt"
REVIEW_FIELDS = (STATUS_FIELD, REVIEWED_CLASS_FIELD, REVIEWED_AT_FIELD)
ACCEPTED = "accepted"
REJECTED = "rejected"
STATUSES = (ACCEPTED, REJECTED)
CLASS_FIELDS = ("Class", "ClassLabel", "Classname", "Classvalue", "Value")
"""Class fields looked for (case-insensitive), in this order: detect-objects, classify-objects,
then the Label Objects schema."""
SCORE_FIELDS = ("Confidence", "Score")


@dataclass(frozen=True)
class ReviewedLayer:
    """A results layer as read, with its review fields (added empty when missing).

    Attributes:
        frame: The features, indexed by FID.
        layer: The layer's name.
        class_field: The class field (see :data:`CLASS_FIELDS`), None when there is none.
        score_field: The confidence field, None when there is none.
        revision: The file's revision.
    """

    frame: gpd.GeoDataFrame
    layer: str
    class_field: str | None
    score_field: str | None
    revision: str

    def reviewed_classes(self) -> pd.Series:
        """Each feature's class after review: the reviewed class, else the original one."""
        original = (
            self.frame[self.class_field].astype("string")
            if self.class_field
            else pd.Series("1", index=self.frame.index, dtype="string")
        )
        return self.frame[REVIEWED_CLASS_FIELD].astype("string").fillna(original)


@dataclass(frozen=True)
class Decision:
    """The review of one feature: its status (None: not reviewed) and reviewed class."""

    fid: int
    status: str | None
    reviewed_class: str | None


def _field(frame: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    columns = {str(c).lower(): str(c) for c in frame.columns if c != "geometry"}
    return next((columns[c.lower()] for c in candidates if c.lower() in columns), None)


def read_reviewed(path: Path) -> ReviewedLayer:
    """Read the layer of a results GeoPackage named after the file (as the tools write it),
    else its first layer.

    Raises:
        InputError: when the file is missing, not a GeoPackage layer of features, or has
            review fields of the wrong kind.
    """
    if path.suffix.lower() != ".gpkg":
        raise InputError(
            f"{path.name} is not a GeoPackage, so review decisions cannot be kept in it",
            "convert it first: ogr2ogr results.gpkg " + path.name,
        )
    if not path.is_file():
        raise InputError(f"results {path.name} do not exist", "check the path")
    revision = revision_of(path)
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        layer = path.stem if path.stem in layers else layers[0]
        frame = pyogrio.read_dataframe(path, layer=layer, fid_as_index=True)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, IndexError) as err:
        raise InputError(f"cannot read results {path.name}: {err}", "give a GeoPackage") from None
    if not isinstance(frame, gpd.GeoDataFrame):
        raise InputError(f"{path.name} has no geometries", "give detected or classified objects")
    for name in REVIEW_FIELDS:
        if name not in frame.columns:
            empty = pd.NaT if name == REVIEWED_AT_FIELD else None
            frame[name] = pd.Series(empty, frame.index, dtype=None if empty else object)
    frame[STATUS_FIELD] = frame[STATUS_FIELD].astype(object)
    bad = set(frame[STATUS_FIELD].dropna()) - set(STATUSES)
    if bad:
        raise InputError(
            f"{path.name} has a {STATUS_FIELD} field with values {sorted(map(str, bad))}",
            f"its {STATUS_FIELD} may only be {' or '.join(STATUSES)}: rename that field",
        )
    return ReviewedLayer(
        frame, layer, _field(frame, CLASS_FIELDS), _field(frame, SCORE_FIELDS), revision
    )


def decisions_from_json(rows: Any) -> list[Decision]:
    """Decisions from ``[{"fid": 3, "Status": "accepted", "ReviewedClass": "building"}]``.

    Raises:
        ParameterError: for a row without a whole-number fid or with an unknown status.
    """
    if not isinstance(rows, list) or not rows:
        raise ParameterError("decisions must be a non-empty list", "send [{fid, Status, ...}]")
    decisions = []
    for row in rows:
        fid = row.get("fid") if isinstance(row, dict) else None
        if isinstance(fid, bool) or not isinstance(fid, int):
            raise ParameterError(f"decision {row!r} has no whole-number fid", "give each a fid")
        status = row.get(STATUS_FIELD)
        if status is not None and status not in STATUSES:
            raise ParameterError(
                f"status {status!r} of feature {fid} is unknown",
                f"give {' or '.join(STATUSES)}, or null to clear the review",
            )
        reviewed = row.get(REVIEWED_CLASS_FIELD)
        decisions.append(Decision(fid, status, None if reviewed is None else str(reviewed)))
    return decisions


def write_decisions(
    path: Path, decisions: list[Decision], based_on: str, now: datetime.datetime | None = None
) -> str:
    """Keep ``decisions`` in the results file if it is still at revision ``based_on``: each
    decided feature gets its status and the time; an accepted one its reviewed class (the
    one given, else the one it had); a rejected or cleared one none.

    Returns:
        The new revision.

    Raises:
        RevisionConflict: when the file changed since ``based_on``.
        ParameterError: for a FID the layer does not have.
    """
    # GeoPackage date-times hold milliseconds
    when = pd.Timestamp(now or datetime.datetime.now(datetime.timezone.utc)).floor("ms")

    def write(temporary: Path) -> None:
        reviewed = read_reviewed(path)  # the file is locked and at ``based_on`` now
        frame = reviewed.frame
        missing = sorted({d.fid for d in decisions} - set(frame.index))
        if missing:
            raise ParameterError(
                f"{path.name} has no feature with fid {missing[0]}", "reload the results"
            )
        frame[REVIEWED_CLASS_FIELD] = frame[REVIEWED_CLASS_FIELD].astype(object)
        at = pd.to_datetime(frame[REVIEWED_AT_FIELD], utc=True)
        frame[REVIEWED_AT_FIELD] = at.astype("datetime64[ms, UTC]")
        classes = reviewed.reviewed_classes()
        for d in decisions:
            accepted = d.status == ACCEPTED
            frame.loc[d.fid, STATUS_FIELD] = d.status
            kept = (d.reviewed_class or classes[d.fid]) if accepted else None
            frame.loc[d.fid, REVIEWED_CLASS_FIELD] = kept
            frame.loc[d.fid, REVIEWED_AT_FIELD] = when if d.status else pd.NaT
        shutil.copyfile(path, temporary)  # other layers and tables are kept
        _write_layer(temporary, reviewed.layer, frame.reset_index(), path)

    return replace_at_revision(path, based_on, write)


def _write_layer(target: Path, layer: str, frame: gpd.GeoDataFrame, source: Path) -> None:
    info = pyogrio.read_info(source, layer=layer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)  # pixel space
        pyogrio.write_dataframe(
            frame,
            target,
            layer=layer,
            driver="GPKG",
            geometry_type=info["geometry_type"],
            layer_options={"FID": "fid"},  # the column of that name: FIDs kept
            layer_metadata=info.get("layer_metadata") or None,
        )


def ground_truth(reviewed: ReviewedLayer) -> gpd.GeoDataFrame:
    """The accepted features with their reviewed class in the layer's class field (``Class``
    when it has none): ground truth for the detection accuracy tool.

    Raises:
        InputError: when no feature is accepted.
    """
    frame = reviewed.frame
    accepted = (frame[STATUS_FIELD] == ACCEPTED).to_numpy()
    if not accepted.any():
        raise InputError(
            "no feature is accepted yet, so there is no ground truth",
            "accept (A) the features that are right first",
        )
    name = reviewed.class_field or "Class"
    classes = reviewed.reviewed_classes()[accepted]
    if reviewed.class_field and pd.api.types.is_integer_dtype(frame[name].dtype):
        classes = pd.to_numeric(classes, errors="coerce")
    return gpd.GeoDataFrame(
        {name: classes.to_numpy()}, geometry=frame.geometry[accepted].values, crs=frame.crs
    )


def write_ground_truth(reviewed: ReviewedLayer, target: Path) -> int:
    """Write :func:`ground_truth` to ``target`` (a GeoPackage, replaced whole); its count."""
    truth = ground_truth(reviewed)

    def write(temporary: Path) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            pyogrio.write_dataframe(truth, temporary, layer=target.stem, driver="GPKG")

    replace_at_revision(target, revision_of(target), write)
    return len(truth)
