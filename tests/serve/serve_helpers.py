"""A real ``rasterlearn serve`` on loopback, started as a subprocess, and HTTP helpers (its
fixtures are loaded by this folder's conftest.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import rasterio
import uvicorn

from rasterlearn.serve.app import create_app
from rasterlearn.serve.auth import hash_key
from rasterlearn.serve.service import Settings
from rasterlearn.synthetic import SyntheticScene

KEY_A = "key-a-0123456789"
KEY_B = "key-b-9876543210"
UPLOAD_LIMIT_MB = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running service: its URL, data directory and process."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)

    def client(self, key: str | None = KEY_A) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(data_dir: Path, *extra: str, port: int | None = None) -> Server:
    """``rasterlearn serve`` on 127.0.0.1, once it answers."""
    port = port or free_port()
    keys = data_dir.parent / f"{data_dir.name}-keys.txt"
    keys.write_text(f"# test keys\n{hash_key(KEY_A)} a\n{hash_key(KEY_B)} b\n")
    args = [
        sys.executable,
        "-m",
        "rasterlearn.cli",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--api-keys",
        str(keys),
        "--max-upload-mb",
        str(UPLOAD_LIMIT_MB),
        *extra,
    ]
    log = (data_dir.parent / f"{data_dir.name}-server.log").open("ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", data_dir, proc, args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rasterlearn serve exited with {proc.returncode}")
        try:
            if httpx.get(server.url + "/conformance", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("rasterlearn serve did not start")


@pytest.fixture(scope="session")
def serve_data(tmp_path_factory: pytest.TempPathFactory, models: Any) -> Path:
    """A data directory holding the trained models' scene and models under files/."""
    root = tmp_path_factory.mktemp("serve") / "data"
    files = root / "files"
    files.mkdir(parents=True)
    scene = models.scene
    shutil.copy(scene.raster_path, files / "scene.tif")
    for path in Path(scene.polygons_path).parent.glob(Path(scene.polygons_path).stem + ".*"):
        shutil.copy(path, files / path.name)
    for name in ("unet", "fcos"):
        shutil.copytree(Path(getattr(models, name)).parent, files / name)
    return root


@pytest.fixture(scope="session")
def server(serve_data: Path) -> Iterator[Server]:
    """The shared service: --max-jobs 2, keys A and B."""
    running = start_server(serve_data, "--max-jobs", "2")
    yield running
    running.stop()


def wait_job(
    client: httpx.Client, url: str, done: Callable[[dict[str, Any]], bool], timeout: float = 180
) -> dict[str, Any]:
    """Poll ``url`` until ``done(status)``."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(url).json()
        if done(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def ogc_done(status: dict[str, Any]) -> bool:
    return status.get("status") in ("successful", "failed", "dismissed")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="session")
def web_data(tmp_path_factory: pytest.TempPathFactory, scene: SyntheticScene) -> Path:
    """A data directory with the scene under files/, and a copy without a georeference."""
    root = tmp_path_factory.mktemp("web") / "data"
    (root / "files").mkdir(parents=True)
    shutil.copy(scene.raster_path, root / "files" / "scene.tif")
    with rasterio.open(scene.raster_path) as src:  # the same pixels without a georeference
        pixels = src.read()
    with rasterio.open(
        root / "files" / "pixels.tif",
        "w",
        driver="GTiff",
        width=512,
        height=512,
        count=3,
        dtype="uint8",
    ) as dst:
        dst.write(pixels)
    return root


@contextlib.contextmanager
def serve_in_thread(settings: Settings) -> Iterator[str]:
    """The service on a free loopback port, run by uvicorn in a thread of this process (no
    start-up cost); yields its URL."""
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning"
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        running.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="session")
def web_client(web_data: Path) -> Iterator[httpx.Client]:
    """A client of the service (no API keys) on web_data, running in this process."""
    with serve_in_thread(Settings(data_dir=web_data)) as url, httpx.Client(base_url=url) as client:
        yield client
