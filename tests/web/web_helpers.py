"""The web pages' fixtures (loaded by this folder's conftest.py): one ``rasterlearn label``
server and one Chromium per session.

Playwright drives Debian's Chromium (``/usr/bin/chromium``); no browser is ever downloaded.
Every page's console errors and uncaught exceptions are collected, and a test fails when its
pages had any it did not expect.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import rasterio
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, sync_playwright

from rasterlearn.synthetic import SyntheticScene

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1200, "height": 800}


class LabelServer:
    """``rasterlearn label`` on loopback, started as a subprocess: the folder it serves as
    files/, and, once it answers (the browser starts meanwhile), its URL and the page URL it
    printed."""

    def __init__(self, files: Path, data: Path, command: list[str] | None = None) -> None:
        self.files = files
        self.port = _free_port()
        command = command or ["label", str(files / "scene.tif")]  # review: ["review", ...]
        args = [sys.executable, "-m", "rasterlearn.cli", *command]
        args += ["--port", str(self.port), "--data-dir", str(data)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        self._printed: str | None = None

    @property
    def url(self) -> str:
        url = f"http://127.0.0.1:{self.port}"
        if self._printed is None:
            assert self.proc.stdout is not None
            self._printed = self.proc.stdout.readline().decode().strip()
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/conformance", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("rasterlearn label did not start") from None
                    time.sleep(0.1)
        return url

    @property
    def printed(self) -> str:
        return self._printed if self.url and self._printed is not None else ""


@dataclass
class Tab:
    """A browser page and the errors it logged (``expected``: patterns a test allows)."""

    page: Page
    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(re.search(p, e) for p in self.expected)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def label_files(tmp_path_factory: pytest.TempPathFactory, scene: SyntheticScene) -> Path:
    """The folder labelled: the scene (georeferenced) and the same pixels without a
    georeference (pixel space)."""
    folder = tmp_path_factory.mktemp("label")
    shutil.copy(scene.raster_path, folder / "scene.tif")
    with rasterio.open(scene.raster_path) as src:
        pixels, profile = src.read(), src.profile
    profile.update(crs=None, transform=rasterio.Affine.identity())
    with rasterio.open(folder / "pixels.tif", "w", **profile) as dst:
        dst.write(pixels)
    return folder


@pytest.fixture(scope="session")
def label_server(
    label_files: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabelServer]:
    """``rasterlearn label scene.tif``, starting (see :class:`LabelServer`)."""
    server = LabelServer(label_files, tmp_path_factory.mktemp("label-data"))
    yield server
    server.proc.kill()  # its data are temporary; a graceful stop is not what is tested here
    server.proc.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[BrowserContext]:
    """One Chromium for the session (Debian's, headless, canvas rendering), and one context:
    the pages share its cache (OpenLayers is compiled once)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        context = launched.new_context(viewport=VIEWPORT, device_scale_factor=1)
        yield context
        context.close()
        launched.close()


def _watch(page: Page, tab: Tab) -> None:
    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.errors.append(f"console: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda error: tab.errors.append(f"pageerror: {error}"))


@pytest.fixture
def tabs(browser: BrowserContext) -> Iterator[Any]:
    """``tabs()`` opens a page; after the test none of them may have logged an error it did
    not expect."""
    opened: list[Tab] = []

    def open_tab() -> Tab:
        tab = Tab(browser.new_page())
        _watch(tab.page, tab)
        opened.append(tab)
        return tab

    yield open_tab
    errors = [e for tab in opened for e in tab.unexpected()]
    for tab in opened:
        tab.page.close()
    assert not errors, f"the pages logged errors: {errors}"
