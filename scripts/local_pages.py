"""A local page server and Debian's Chromium on it, for the screenshot scripts."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from playwright.sync_api import Browser, sync_playwright


@dataclass(frozen=True)
class LocalPages:
    """What :func:`local_pages` started.

    Attributes:
        url: The page address the command printed.
        port: The loopback port the server listens on.
        browser: Chromium, driven by Playwright.
    """

    url: str
    port: int
    browser: Browser


@contextmanager
def local_pages(command: list[str], data_dir: Path) -> Iterator[LocalPages]:
    """Run ``rasterlearn <command> --port P --data-dir DATA_DIR`` (``label`` or ``review``),
    wait until it answers, and open Chromium; both stop afterwards (Ctrl+C, then a kill)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    arguments = [*command, "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rasterlearn.cli", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/conformance")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            yield LocalPages(url, port, browser)
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
