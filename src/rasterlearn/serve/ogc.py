"""OGC API - Processes (Part 1: Core) over the job store: one process per tool.

Process descriptions come from the tools' declarations: an input per parameter (its JSON
schema, label and help; ``minOccurs`` 0 when it has a default), an output per output dataset,
and ``report``, the tool's result lines.
"""

from __future__ import annotations

import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from rasterlearn.serve.auth import caller
from rasterlearn.serve.service import SHORT_TOOLS, Service, ServiceError
from rasterlearn.serve.store import FAILED, SUCCESSFUL, Job
from rasterlearn.serve.values import client_parameters
from rasterlearn.tools.declaration import OUTPUT, Tool

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/ogc-process-description",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/dismiss",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/oas30",
]
_REL = "http://www.opengis.net/def/rel/ogc/1.0/"

router = APIRouter()


def _service(request: Request) -> Service:
    return request.app.state.service


def _link(request: Request, path: str, rel: str, title: str = "", **extra: str) -> dict[str, str]:
    link = {
        "href": str(request.base_url).rstrip("/") + path,
        "rel": rel,
        "type": "application/json",
    }
    if title:
        link["title"] = title
    return {**link, **extra}


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def _summary(request: Request, tool: Tool) -> dict[str, Any]:
    sync = ["sync-execute"] if tool.name in SHORT_TOOLS else []
    return {
        "id": tool.name,
        "title": tool.label,
        "description": tool.summary,
        "version": "1.0.0",
        "keywords": [tool.rest_name, tool.command],
        "jobControlOptions": ["async-execute", *sync, "dismiss"],
        "outputTransmission": ["reference", "value"],
        "links": [_link(request, f"/processes/{tool.name}", "self", tool.label)],
    }


def process_description(request: Request, tool: Tool) -> dict[str, Any]:
    """The OGC process description of ``tool``, from its declaration."""
    inputs, outputs = {}, {}
    for p in client_parameters(tool):
        declared = p.to_json()
        entry = {
            "title": p.label,
            "description": p.help,
            "schema": declared["schema"]
            | ({"default": declared["default"]} if declared["default"] is not None else {}),
            "minOccurs": 0 if not p.required or p.role == OUTPUT else 1,
            "maxOccurs": 1,
            "keywords": [p.rest_name, p.type, p.role],
        }
        if p.role == OUTPUT:
            inputs[p.name] = {**entry, "description": p.help + " A file or folder name."}
            outputs[p.name] = {
                "title": p.label,
                "description": p.help,
                "schema": {"type": "string", "format": "uri"},
            }
        else:
            inputs[p.name] = entry
    outputs["report"] = {
        "title": "Report",
        "description": "The lines the tool prints.",
        "schema": {"type": "string"},
    }
    return {**_summary(request, tool), "inputs": inputs, "outputs": outputs}


def job_status(request: Request, job: Job) -> dict[str, Any]:
    links = [_link(request, f"/jobs/{job.id}", "self", "status")]
    if job.status == SUCCESSFUL:
        links.append(_link(request, f"/jobs/{job.id}/results", _REL + "results", "results"))
    links.append(_link(request, f"/jobs/{job.id}/log", "log", "job log", type="text/plain"))
    return {
        "jobID": job.id,
        "processID": job.tool,
        "type": "process",
        "status": job.status,
        "message": job.message,
        "progress": round(job.progress),
        "created": _iso(job.created),
        "started": _iso(job.started),
        "finished": _iso(job.finished),
        "updated": _iso(job.updated),
        "links": links,
    }


def results_document(request: Request, service: Service, job: Job) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in job.outputs:
        path = service.output(job, name)
        entry: dict[str, Any] = {
            "href": _link(request, f"/jobs/{job.id}/results/{name}", "")["href"]
        }
        if path.is_dir():
            entry["files"] = service.files(path)
        results[name] = entry
    results["report"] = "\n".join(job.lines)
    return results


@router.get("/", summary="Landing page")
def landing(request: Request) -> dict[str, Any]:
    return {
        "title": "rasterlearn",
        "description": "Deep-learning raster analysis tools as OGC API - Processes and ArcGIS "
        "raster analysis tasks.",
        "links": [
            _link(request, "/", "self", "this document"),
            _link(
                request,
                "/openapi.json",
                "service-desc",
                "the API definition",
                type="application/vnd.oai.openapi+json;version=3.0",
            ),
            _link(request, "/conformance", _REL + "conformance", "conformance classes"),
            _link(request, "/processes", _REL + "processes", "processes"),
            _link(request, "/jobs", _REL + "job-list", "jobs"),
        ],
    }


@router.get("/conformance", summary="Conformance classes")
def conformance() -> dict[str, Any]:
    return {"conformsTo": CONFORMANCE}


@router.get("/processes", summary="Processes (one per tool)")
def processes(request: Request) -> dict[str, Any]:
    tools = _service(request).tools()
    return {
        "processes": [_summary(request, t) for t in tools],
        "links": [_link(request, "/processes", "self")],
    }


@router.get("/processes/{process_id}", summary="A process's description")
def process(request: Request, process_id: str) -> dict[str, Any]:
    return process_description(request, _service(request).tool(process_id))


@router.post("/processes/{process_id}/execution", summary="Execute a process")
async def execute(request: Request, process_id: str, owner: str = Depends(caller)) -> Response:
    service = _service(request)
    tool = service.tool(process_id)
    try:
        body = await request.json()
    except ValueError:
        raise ServiceError(400, "invalid-request", "the body is not JSON") from None
    inputs = body.get("inputs", {}) if isinstance(body, dict) else None
    if not isinstance(inputs, dict):
        raise ServiceError(400, "invalid-request", "'inputs' must be an object")
    given = {k: v.get("value", v.get("href")) if _wrapped(v) else v for k, v in inputs.items()}
    job = service.submit(tool, given, owner, rest_names=False)
    location = {"Location": _link(request, f"/jobs/{job.id}", "")["href"]}
    wants_async = "respond-async" in request.headers.get("prefer", "")
    if not wants_async and tool.name in SHORT_TOOLS:
        job = await service.wait(job, service.settings.sync_seconds)
        if job.status == SUCCESSFUL:
            return JSONResponse(results_document(request, service, job), headers=location)
        if job.status == FAILED:
            raise ServiceError(400, "job-failed", job.message)
    headers = {**location, "Preference-Applied": "respond-async"} if wants_async else location
    return JSONResponse(job_status(request, job), status_code=201, headers=headers)


def _wrapped(value: Any) -> bool:
    return isinstance(value, dict) and set(value) & {"value", "href"} == set(value) - {
        "mediaType",
        "type",
    }


@router.get("/jobs", summary="The caller's jobs")
def jobs(request: Request, owner: str = Depends(caller)) -> dict[str, Any]:
    listed = _service(request).store.list(owner)
    return {
        "jobs": [job_status(request, j) for j in listed],
        "links": [_link(request, "/jobs", "self")],
    }


@router.get("/jobs/{job_id}", summary="A job's status")
def job(request: Request, job_id: str, owner: str = Depends(caller)) -> dict[str, Any]:
    return job_status(request, _service(request).job(job_id, owner))


@router.delete("/jobs/{job_id}", summary="Cancel a job, or dismiss a finished one")
def dismiss(request: Request, job_id: str, owner: str = Depends(caller)) -> dict[str, Any]:
    service = _service(request)
    return job_status(request, service.dismiss(service.job(job_id, owner)))


@router.get("/jobs/{job_id}/results", summary="A job's results")
def results(request: Request, job_id: str, owner: str = Depends(caller)) -> dict[str, Any]:
    service = _service(request)
    found = service.job(job_id, owner)
    if found.status == FAILED:
        raise ServiceError(400, "job-results-failed", found.message)
    if found.status != SUCCESSFUL:
        raise ServiceError(404, "result-not-ready", f"job {job_id} is {found.status}")
    return results_document(request, service, found)


@router.get("/jobs/{job_id}/results/{name}", summary="Download an output (range requests)")
def result_file(request: Request, job_id: str, name: str, owner: str = Depends(caller)) -> Response:
    return _file(request, job_id, name, "", owner)


@router.get("/jobs/{job_id}/results/{name}/{path:path}", summary="A file of an output folder")
def result_folder_file(
    request: Request, job_id: str, name: str, path: str, owner: str = Depends(caller)
) -> Response:
    return _file(request, job_id, name, path, owner)


def _file(request: Request, job_id: str, name: str, sub: str, owner: str) -> Response:
    service = _service(request)
    path = service.output(service.job(job_id, owner), name, sub)
    if path.is_dir():
        return JSONResponse({"files": service.files(path)})
    return FileResponse(path, filename=path.name)


@router.get("/jobs/{job_id}/log", summary="A job's log")
def log(request: Request, job_id: str, owner: str = Depends(caller)) -> Response:
    service = _service(request)
    found = service.job(job_id, owner)
    path = service.data.log(found.id)
    text = path.read_text(errors="replace") if path.exists() else ""
    return Response(text, media_type="text/plain")


@router.post("/uploads", status_code=201, summary="Upload a raster, features or a model")
async def upload(request: Request, owner: str = Depends(caller)) -> dict[str, Any]:
    service = _service(request)
    path = await service.upload(owner, request.headers, request.stream())
    return {
        "id": path.parent.name,
        "name": path.name,
        "path": str(path.relative_to(service.data.root)),
        "size": path.stat().st_size,
    }
