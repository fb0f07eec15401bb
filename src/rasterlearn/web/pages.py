"""The pages (``/web/label``, ...) and their static files (``/web/static/...``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

HERE = Path(__file__).parent
PAGES = HERE / "pages"
STATIC = HERE / "static"
PAGE_NAMES = tuple(sorted(p.stem for p in PAGES.glob("*.html")))
"""The pages there are: ``/web/<name>`` serves ``pages/<name>.html``."""

router = APIRouter(prefix="/web", include_in_schema=False)


@router.get("")
def index() -> RedirectResponse:
    return RedirectResponse("/web/label")


@router.get("/{name}")
def page(name: str) -> FileResponse:
    """A page; what it shows comes from its query string (``?raster=files/scene.tif``)."""
    if name not in PAGE_NAMES:
        raise HTTPException(404, f"there is no page {name!r}; pages: {', '.join(PAGE_NAMES)}")
    return FileResponse(PAGES / f"{name}.html", headers={"Cache-Control": "no-cache"})


def mount_pages(app: FastAPI) -> None:
    """Serve the pages and their static files on ``app``."""
    app.mount("/web/static", StaticFiles(directory=STATIC), name="web-static")
    app.include_router(router)
