"""Reviewing results for the review page: decisions kept in the results GeoPackage, the
accepted features as ground truth, a classified raster's legend.

``GET /review/features?path=P`` answers the features (GeoJSON, ``id`` = FID), their class and
confidence fields and the file's revision (also the ``ETag``). ``PATCH /review/features?path=P``
with ``If-Match: REVISION`` keeps decisions (``Status``, ``ReviewedClass``, ``ReviewedAt``) in
the file (see :mod:`rasterlearn.formats.reviewed`): a file changed since gets 409.
``POST /review/ground-truth?path=P`` writes the accepted features beside it
(``<name>_accepted.gpkg``) for Compute Accuracy For Object Detection.
``GET /review/legend?raster=R`` lists a classified raster's classes (value, name, colour).

Results are written where the caller may write: under ``files/`` by a service without API
keys, the caller's ``uploads/<owner>/``, or the results of the caller's own jobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import rasterio
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response

from rasterlearn.accuracy.rasters import raster_class_names
from rasterlearn.errors import ParameterError
from rasterlearn.formats.reviewed import (
    ReviewedLayer,
    decisions_from_json,
    read_reviewed,
    write_decisions,
    write_ground_truth,
)
from rasterlearn.formats.samples import RevisionConflict
from rasterlearn.geo.display import colormap_lut
from rasterlearn.serve.auth import caller
from rasterlearn.serve.imagery import shown_raster
from rasterlearn.serve.service import Service, ServiceError

router = APIRouter(prefix="/review", tags=["review"])


def _service(request: Request) -> Service:
    return request.app.state.service


def results_path(service: Service, value: str, owner: str, writing: bool = False) -> Path:
    """The results GeoPackage ``value`` names; for ``writing``, one the caller may write.

    Raises:
        ParameterError: outside the data directory, or not writable by the caller.
    """
    path = service.data.resolve(value, owner)
    if writing:
        root = service.data.root
        own = [root / "uploads" / owner, root / "jobs"]  # resolve() checked the job is theirs
        if service.keys is None:
            own.append(service.data.files)
        if not any(path.is_relative_to(folder) for folder in own):
            where = "files/, " if service.keys is None else ""
            raise ParameterError(
                f"results {value!r} cannot be written there",
                f"review results under {where}uploads/<your key>/ or your jobs' results",
            )
    return path


@router.get("/features", summary="Results to review (GeoJSON), their fields and revision")
def features(
    request: Request, response: Response, path: str = Query(...), owner: str = Depends(caller)
) -> dict[str, Any]:
    reviewed = read_reviewed(results_path(_service(request), path, owner))
    frame = reviewed.frame
    response.headers["ETag"] = f'"{reviewed.revision}"'
    response.headers["Cache-Control"] = "no-store"
    score = frame[reviewed.score_field] if reviewed.score_field else None
    collection = json.loads(_as_text_times(frame).to_json(na="null", drop_id=False))
    for feature, fid in zip(collection["features"], frame.index, strict=True):
        feature["id"] = int(fid)  # the FID decisions name
    return {
        "revision": reviewed.revision,
        "layer": reviewed.layer,
        "class_field": reviewed.class_field,
        "score_field": reviewed.score_field,
        "score_max": 100.0 if score is not None and score.max() > 1.0 else 1.0,
        "classes": sorted(set(reviewed.reviewed_classes()) | _original_classes(reviewed)),
        "features": collection,
    }


def _as_text_times(frame: Any) -> Any:
    """The frame with its date-time columns as ISO 8601 text (what JSON can hold)."""
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_datetime64_any_dtype(shown[column]):
            times = shown[column]
            shown[column] = [None if pd.isna(t) else t.isoformat() for t in times]
    return shown


def _original_classes(reviewed: ReviewedLayer) -> set[str]:
    if reviewed.class_field is None:
        return {"1"}
    return {str(v) for v in reviewed.frame[reviewed.class_field].dropna()}


@router.patch("/features", summary="Keep review decisions (If-Match: the revision they edit)")
def decide(
    request: Request,
    path: str = Query(...),
    body: dict[str, Any] = Body(...),
    if_match: str | None = Header(None),
    owner: str = Depends(caller),
) -> dict[str, Any]:
    target = results_path(_service(request), path, owner, writing=True)
    if not if_match:
        raise ServiceError(
            428, "precondition-required", "send If-Match with the revision the decisions edit"
        )
    decisions = decisions_from_json(body.get("decisions"))
    try:
        revision = write_decisions(target, decisions, if_match.strip().strip('"'))
    except RevisionConflict as err:
        raise ServiceError(409, "conflict", str(err)) from None
    return {"revision": revision, "count": len(decisions)}


@router.post("/ground-truth", summary="Write the accepted features: ground truth for accuracy")
def ground_truth(
    request: Request, path: str = Query(...), owner: str = Depends(caller)
) -> dict[str, Any]:
    service = _service(request)
    source = results_path(service, path, owner, writing=True)
    target = source.with_name(f"{source.stem}_accepted.gpkg")
    count = write_ground_truth(read_reviewed(source), target)
    return {"path": str(service.data.shown(str(target))), "count": count}


@router.get("/legend", summary="A classified raster's classes: value, name and colour")
def legend(
    request: Request, raster: str = Query(...), owner: str = Depends(caller)
) -> dict[str, Any]:
    source = shown_raster(_service(request), raster, owner).source
    lut = colormap_lut(source)
    with rasterio.open(source.spec) as ds:
        names = raster_class_names(ds)
    values = sorted(names) if names else [v for v in range(1, len(lut)) if lut[v, :3].any()]
    return {
        "classes": [
            {"Value": v, "Name": names.get(v, str(v)), "Color": lut[v, :3].tolist()}
            for v in values
            if 0 < v < len(lut)
        ]
    }
