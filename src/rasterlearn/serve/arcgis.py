"""ArcGIS's geoprocessing service shape over the same jobs: the RasterAnalysisTools GPServer.

Tasks are the tools' REST names, parameters their REST names (``inputRaster``, ``model``,
``modelArguments`` as JSON...), given in the query string or a form as ArcGIS clients send
them; ``f=json`` or ``f=pjson``. A job's status is ArcGIS's (esriJobSubmitted...), its
messages typed, its results ``{paramName, dataType, value}``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from rasterlearn.serve.auth import caller
from rasterlearn.serve.service import Service, ServiceError
from rasterlearn.serve.store import ACCEPTED, DISMISSED, FAILED, RUNNING, SUCCESSFUL, Job
from rasterlearn.serve.values import client_parameters
from rasterlearn.tools.declaration import INPUT, OUTPUT, Parameter, Tool

PREFIX = "/arcgis/rest/services/RasterAnalysisTools/GPServer"
STATUS = {
    ACCEPTED: "esriJobSubmitted",
    RUNNING: "esriJobExecuting",
    SUCCESSFUL: "esriJobSucceeded",
    FAILED: "esriJobFailed",
    DISMISSED: "esriJobCancelled",
}
_CONTROL = ("f", "token", "context", "returnZ", "returnM", "returnFeatureCollection")
_TYPES = {
    "raster": "GPRasterDataLayer",
    "features": "GPFeatureRecordSetLayer",
    "model": "GPString",
    "folder": "GPDataFile",
    "file": "GPDataFile",
    "string": "GPString",
    "integer": "GPLong",
    "float": "GPDouble",
    "boolean": "GPBoolean",
    "extent": "GPExtent",
    "key_values": "GPString",
    "string_list": "GPMultiValue:GPString",
    "folder_list": "GPMultiValue:GPDataFile",
}

router = APIRouter(prefix=PREFIX)


def data_type(p: Parameter) -> str:
    """ArcGIS's data type of a parameter (an output file by what its label says it holds)."""
    if p.role == OUTPUT and p.type == "file":
        if "Raster" in p.label:
            return "GPRasterDataLayer"
        if "Objects" in p.label or "Features" in p.label:
            return "GPFeatureRecordSetLayer"
    return _TYPES[p.type]


def reply(request: Request, body: dict[str, Any], status: int = 200) -> Response:
    """``body`` as JSON, indented for ``f=pjson``."""
    pretty = request.query_params.get("f") == "pjson"
    text = json.dumps(body, indent=2 if pretty else None)
    return Response(text, status_code=status, media_type="application/json")


def _service(request: Request) -> Service:
    return request.app.state.service


def _task(request: Request, name: str) -> Tool:
    tool = _service(request).tool(name)
    if tool.rest_name != name:
        raise ServiceError(404, "no-such-process", f"there is no task {name!r}")
    return tool


def _parameter_info(p: Parameter) -> dict[str, Any]:
    declared = p.to_json()
    info = {
        "name": p.rest_name,
        "dataType": data_type(p),
        "displayName": p.label,
        "description": p.help,
        "direction": "esriGPParameterDirection" + ("Output" if p.role == OUTPUT else "Input"),
        "defaultValue": declared["default"],
        "parameterType": "esriGPParameterType" + ("Required" if p.required else "Optional"),
        "category": "",
    }
    if p.choices:
        info["choiceList"] = list(p.choices)
    return info


@router.get("")
def service_info(request: Request) -> Response:
    return reply(
        request,
        {
            "currentVersion": 11.3,
            "serviceDescription": "rasterlearn raster analysis tools",
            "tasks": [t.rest_name for t in _service(request).tools()],
            "executionType": "esriExecutionTypeAsynchronous",
            "resultMapServerName": "",
            "maximumRecords": 1000,
        },
    )


@router.get("/{task}")
def task_info(request: Request, task: str) -> Response:
    tool = _task(request, task)
    params = [_parameter_info(p) for p in client_parameters(tool)]
    params.append(
        {
            "name": "report",
            "dataType": "GPString",
            "displayName": "Report",
            "description": "The lines the tool prints.",
            "direction": "esriGPParameterDirectionOutput",
            "defaultValue": None,
            "parameterType": "esriGPParameterTypeDerived",
            "category": "",
        }
    )
    body = {
        "name": tool.rest_name,
        "displayName": tool.label,
        "description": tool.summary,
        "category": "",
        "helpUrl": "",
        "executionType": "esriExecutionTypeAsynchronous",
        "parameters": params,
    }
    return reply(request, body)


async def _request_values(request: Request) -> dict[str, Any]:
    values: dict[str, Any] = dict(request.query_params)
    if request.method == "POST":
        values.update({k: v for k, v in (await request.form()).items() if isinstance(v, str)})
    return values


def _with_context(tool: Tool, values: dict[str, Any]) -> dict[str, Any]:
    """The task's values, with those of ArcGIS's ``context`` (processorType, extent, cellSize,
    parallelProcessingFactor) that are the tool's parameters and not given."""
    given = {k: v for k, v in values.items() if k not in _CONTROL}
    try:
        context = json.loads(values.get("context") or "{}")
    except json.JSONDecodeError:
        raise ServiceError(400, "invalid-parameter", "context is not JSON") from None
    names = {p.rest_name for p in client_parameters(tool)}
    if isinstance(context, dict):
        for key, value in context.items():
            if key in names and key not in given:
                given[key] = value
    return given


async def submit_job(request: Request, task: str, owner: str = Depends(caller)) -> Response:
    tool = _task(request, task)
    values = _with_context(tool, await _request_values(request))
    job = _service(request).submit(tool, values, owner, rest_names=True)
    return reply(request, {"jobId": job.id, "jobStatus": STATUS[job.status]})


def _messages(job: Job) -> list[dict[str, str]]:
    messages = [{"type": "esriJobMessageTypeInformative", "description": "Submitted."}]
    if job.started is not None:
        messages.append({"type": "esriJobMessageTypeInformative", "description": "Executing..."})
    for line in job.lines:
        kind = "Warning" if line.startswith("warning:") else "Informative"
        messages.append({"type": f"esriJobMessageType{kind}", "description": line})
    if job.status == FAILED:
        messages.append({"type": "esriJobMessageTypeError", "description": job.message})
        messages.append({"type": "esriJobMessageTypeError", "description": "Failed."})
    elif job.status == DISMISSED:
        messages.append({"type": "esriJobMessageTypeWarning", "description": job.message})
    elif job.status == SUCCESSFUL:
        messages.append({"type": "esriJobMessageTypeInformative", "description": "Succeeded."})
    elif job.status == RUNNING and job.message:
        messages.append({"type": "esriJobMessageTypeInformative", "description": job.message})
    return messages


def _job_info(tool: Tool, job: Job) -> dict[str, Any]:
    info: dict[str, Any] = {
        "jobId": job.id,
        "jobStatus": STATUS[job.status],
        "progress": {"type": "default", "message": job.message, "percent": round(job.progress)},
        "messages": _messages(job),
        "inputs": {
            p.rest_name: {"paramUrl": f"inputs/{p.rest_name}"}
            for p in tool.parameters
            if p.role != OUTPUT and p.name in job.inputs
        },
        "results": {},
    }
    if job.status == SUCCESSFUL:
        names = [p.rest_name for p in tool.parameters if p.name in job.outputs] + ["report"]
        info["results"] = {n: {"paramUrl": f"results/{n}"} for n in names}
    return info


@router.get("/{task}/jobs/{job_id}")
def job_info(request: Request, task: str, job_id: str, owner: str = Depends(caller)) -> Response:
    tool = _task(request, task)
    return reply(request, _job_info(tool, _job(request, tool, job_id, owner)))


def _job(request: Request, tool: Tool, job_id: str, owner: str) -> Job:
    job = _service(request).job(job_id, owner)
    if job.tool != tool.name:
        raise ServiceError(404, "no-such-job", f"there is no {tool.rest_name} job {job_id!r}")
    return job


def cancel(request: Request, task: str, job_id: str, owner: str = Depends(caller)) -> Response:
    tool = _task(request, task)
    service = _service(request)
    job = _job(request, tool, job_id, owner)
    if not job.done:
        job = service.dismiss(job)
    return reply(request, {"jobId": job.id, "jobStatus": STATUS[job.status]})


for _method in ("get", "post"):  # ArcGIS clients use either
    getattr(router, _method)("/{task}/submitJob", operation_id=f"submitJob_{_method}")(submit_job)
    getattr(router, _method)("/{task}/jobs/{job_id}/cancel", operation_id=f"cancelJob_{_method}")(
        cancel
    )


@router.get("/{task}/jobs/{job_id}/results/{param}")
def result(
    request: Request, task: str, job_id: str, param: str, owner: str = Depends(caller)
) -> Response:
    tool = _task(request, task)
    service = _service(request)
    job = _job(request, tool, job_id, owner)
    if param == "report" and job.status == SUCCESSFUL:
        body = {"paramName": "report", "dataType": "GPString", "value": "\n".join(job.lines)}
        return reply(request, body)
    found = [p for p in tool.parameters if p.rest_name == param and p.role == OUTPUT]
    if not found:
        raise ServiceError(404, "no-such-output", f"{task} has no output {param!r}")
    path = service.output(job, found[0].name)
    url = str(request.base_url).rstrip("/") + f"/jobs/{job.id}/results/{found[0].name}"
    value: dict[str, Any] = {"url": url}
    if path.is_dir():
        value["files"] = service.files(path)
    return reply(request, {"paramName": param, "dataType": data_type(found[0]), "value": value})


@router.get("/{task}/jobs/{job_id}/inputs/{param}")
def job_input(
    request: Request, task: str, job_id: str, param: str, owner: str = Depends(caller)
) -> Response:
    tool = _task(request, task)
    job = _job(request, tool, job_id, owner)
    found = [p for p in tool.parameters if p.rest_name == param and p.role == INPUT]
    found = found or [p for p in tool.parameters if p.rest_name == param and p.role != OUTPUT]
    if not found or found[0].name not in job.inputs:
        raise ServiceError(404, "no-such-input", f"job {job_id} has no input {param!r}")
    value = _service(request).data.shown(job.inputs[found[0].name])
    return reply(request, {"paramName": param, "dataType": data_type(found[0]), "value": value})


@router.post("/uploads/upload")
async def upload(request: Request, owner: str = Depends(caller)) -> Response:
    """ArcGIS's upload: the item is then given as ``{"itemID": ID}``."""
    service = _service(request)
    path = await service.upload(owner, request.headers, request.stream())
    item = {"itemID": path.parent.name, "itemName": path.name, "committed": True}
    return reply(request, {"success": True, "item": item})
