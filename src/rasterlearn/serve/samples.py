"""Training samples for the label page: read and save a samples GeoPackage, load class schemas.

``GET /samples?path=P`` answers the samples (GeoJSON in the raster's CRS), the class schema and
the file's revision (also the ``ETag``). ``PUT /samples?path=P&raster=R`` saves them, in R's
CRS, with ``If-Match: REVISION``: a file saved elsewhere since gets 409 and one line saying to
reload (see :mod:`rasterlearn.formats.samples`). ``GET /samples/classes?source=S`` reads a
class schema from a model, an export folder or labelled features.

Samples are written under ``files/`` by a service without API keys (one person on loopback,
as ``rasterlearn label`` runs it), else under the caller's own ``uploads/<owner>/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.samples import (
    RevisionConflict,
    classes_from_json,
    classes_to_json,
    load_class_schema,
    read_samples,
    samples_frame,
    write_samples,
)
from rasterlearn.serve.auth import caller
from rasterlearn.serve.imagery import shown_raster
from rasterlearn.serve.service import Service, ServiceError

router = APIRouter(prefix="/samples", tags=["samples"])


def _service(request: Request) -> Service:
    return request.app.state.service


def samples_path(service: Service, value: str, owner: str, writing: bool = False) -> Path:
    """The GeoPackage ``value`` names; for ``writing``, one the caller may write.

    Raises:
        ParameterError: not a ``.gpkg``, outside the data directory, or not writable.
    """
    if not value.lower().endswith(".gpkg"):
        raise ParameterError(f"samples {value!r} are not a GeoPackage", "give a .gpkg path")
    path = service.data.resolve(value, owner)
    if writing:
        keyed = service.keys is not None
        allowed = service.data.root / "uploads" / owner if keyed else service.data.files
        if not path.is_relative_to(allowed):
            where = "uploads/<your key>/" if keyed else "files/"
            raise ParameterError(
                f"samples {value!r} cannot be written there", f"give a path under {where}"
            )
        if not path.parent.is_dir():
            raise InputError(f"the folder of {value!r} does not exist", "create it first")
    return path


@router.get("", summary="Training samples (GeoJSON), their class schema and revision")
def get_samples(
    request: Request, response: Response, path: str = Query(...), owner: str = Depends(caller)
) -> dict[str, Any]:
    samples = read_samples(samples_path(_service(request), path, owner))
    response.headers["ETag"] = f'"{samples.revision}"'
    response.headers["Cache-Control"] = "no-store"
    return {
        "revision": samples.revision,
        "classes": classes_to_json(samples.classes),
        "features": json.loads(samples.frame.to_json(drop_id=True)),
    }


@router.put("", summary="Save training samples (If-Match: the revision they edit)")
def put_samples(
    request: Request,
    path: str = Query(...),
    raster: str = Query(..., description="The raster the samples are drawn on (its CRS)"),
    body: dict[str, Any] = Body(...),
    if_match: str | None = Header(None),
    owner: str = Depends(caller),
) -> dict[str, Any]:
    service = _service(request)
    target = samples_path(service, path, owner, writing=True)
    if not if_match:
        raise ServiceError(
            428, "precondition-required", "send If-Match with the revision the samples edit"
        )
    crs = shown_raster(service, raster, owner).source.info.grid.crs
    classes = classes_from_json(body.get("classes", []))
    frame = samples_frame(body.get("features", []), classes, crs)
    try:
        revision = write_samples(target, frame, classes, if_match.strip().strip('"'))
    except RevisionConflict as err:
        raise ServiceError(409, "conflict", str(err)) from None
    return {"revision": revision, "count": len(frame)}


@router.get("/classes", summary="A class schema from a model, export folder or features")
def classes(
    request: Request, source: str = Query(...), owner: str = Depends(caller)
) -> dict[str, Any]:
    path = _service(request).data.resolve(source, owner)
    if not path.exists():
        raise InputError(f"{source!r} does not exist", "check the path")
    return {"classes": classes_to_json(load_class_schema(path))}
