"""The FastAPI app: both REST shapes over one service, errors as each shape writes them."""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rasterlearn.errors import ParameterError, RasterLearnError
from rasterlearn.geo.raster import bounded_gdal_cache
from rasterlearn.serve import arcgis, imagery, ogc, review, samples
from rasterlearn.serve.auth import AuthError
from rasterlearn.serve.data import UploadTooLarge
from rasterlearn.serve.service import Service, ServiceError, Settings, running
from rasterlearn.web.pages import mount_pages

SERVICE_GDAL_CACHE_BYTES = 64 * 2**20
"""GDAL's block cache in the service process (``GDAL_CACHEMAX`` in the environment wins)."""
_OGC_EXCEPTION = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
_CODES = {401: "unauthorized", 403: "forbidden", 404: "not-found", 413: "payload-too-large"}


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    """An error in the shape of the route asked: ArcGIS's ``{"error": ...}`` under /arcgis,
    else an OGC exception (RFC 7807)."""
    body: dict[str, Any]
    if request.url.path.startswith("/arcgis"):
        body = {"error": {"code": status, "message": message, "details": [message]}}
    else:
        body = {"type": _OGC_EXCEPTION + code, "title": code, "status": status, "detail": message}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, err: ServiceError) -> JSONResponse:
        return error_response(request, err.status, err.code, err.message)

    @app.exception_handler(RasterLearnError)
    async def user_error(request: Request, err: RasterLearnError) -> JSONResponse:
        return error_response(request, 400, "invalid-parameter", str(err))

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, err: AuthError) -> JSONResponse:
        return error_response(request, err.status, _CODES[err.status], str(err))

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, err: UploadTooLarge) -> JSONResponse:
        return error_response(request, 413, _CODES[413], str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}"
        return error_response(request, 400, "invalid-request", message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        code = _CODES.get(err.status_code, "http-error")
        return error_response(request, err.status_code, code, str(err.detail))


def create_app(settings: Settings) -> FastAPI:
    """The service's app; its job runner runs while the app does."""
    service = Service(settings)
    app = FastAPI(
        title="rasterlearn",
        description="Deep-learning raster analysis tools: OGC API - Processes and ArcGIS "
        "raster analysis tasks over one job store.",
        version="1.0.0",
        lifespan=lambda _: running(service),
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.service = service
    _handlers(app)
    app.include_router(arcgis.router)
    app.include_router(ogc.router)
    app.include_router(imagery.router)
    app.include_router(samples.router)
    app.include_router(review.router)
    mount_pages(app)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: Settings, host: str) -> None:
    """Refuse settings the service cannot run with, before anything is created.

    Raises:
        ParameterError: a host other than loopback without API keys, fewer than one job at
            once, or an upload limit that is not positive.
    """
    if settings.api_keys is None and not is_loopback(host):
        raise ParameterError(
            f"without API keys the service binds to loopback only, not {host}",
            "give --api-keys FILE, or --host 127.0.0.1",
        )
    if settings.max_jobs < 1:
        raise ParameterError(
            f"max_jobs must be at least 1, got {settings.max_jobs}", "give --max-jobs 1 or more"
        )
    if settings.max_upload_bytes < 1:
        raise ParameterError("the upload limit must be positive", "give --max-upload-mb > 0")


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted.

    Raises:
        ParameterError: from :func:`check_settings`.
    """
    import uvicorn

    check_settings(settings, host)
    app = create_app(settings)
    # the tiles of the pages read through GDAL's block cache: capped, it does not grow with
    # the rasters viewed (GDAL's default is 5 % of the RAM)
    with bounded_gdal_cache(SERVICE_GDAL_CACHE_BYTES):
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
