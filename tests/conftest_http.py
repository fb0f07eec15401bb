"""A loopback HTTP server with range requests, and a COG to serve: cloud-native input in tests.

Python's ``SimpleHTTPRequestHandler`` ignores ``Range:``; GDAL's ``/vsicurl/`` reads a COG
through byte ranges, so :class:`RangeRequestHandler` implements them (``206 Partial Content``,
``Content-Range``, ``Accept-Ranges``, ``416`` when unsatisfiable) and logs every request, so a
test can check what GDAL asked for.

The server runs in its own process (``python conftest_http.py FOLDER LOG``), as a real one
would: GDAL makes some HTTP requests while holding the GIL, which would deadlock a server
thread in the test's own process. Load the fixtures in a test module with::

    pytest_plugins = ["conftest_http"]  # in the test module
"""

from __future__ import annotations

import functools
import io
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rasterlearn.synthetic import SyntheticScene

COG_BLOCK = 128
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class Request:
    """One request the server answered."""

    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int
    user_agent: str


@dataclass
class RangeServer:
    """A running server: its folder, base URL and the log of the requests it answered."""

    root: Path
    base_url: str
    log_path: Path

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def log(self) -> list[Request]:
        """The requests answered so far, in order."""
        text = self.log_path.read_text() if self.log_path.exists() else ""
        return [Request(**json.loads(line)) for line in text.splitlines() if line]

    def clear(self) -> None:
        self.log_path.write_text("")


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Serves files of a folder, honouring single byte-range requests (RFC 9110 §14)."""

    protocol_version = "HTTP/1.1"

    def __init__(
        self, *args: object, log_path: Path, lock: threading.Lock, **kwargs: object
    ) -> None:
        self.log_path = log_path
        self.lock = lock
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests are recorded in the log file, not printed

    def _record(self, status: int, body: int) -> None:
        request = Request(
            self.command,
            self.path,
            self.headers.get("Range"),
            int(status),
            body if self.command == "GET" else 0,
            self.headers.get("User-Agent", ""),
        )
        with self.lock, open(self.log_path, "a") as f:
            f.write(json.dumps(asdict(request)) + "\n")

    def send_head(self) -> io.BytesIO | None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self._record(HTTPStatus.NOT_FOUND, 0)
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        size = path.stat().st_size
        start, end, status = 0, size - 1, HTTPStatus.OK
        header = self.headers.get("Range")
        # A malformed or multi-range header may be ignored (answered with the whole file).
        match = _RANGE.fullmatch(header.strip()) if header else None
        if match is not None and (match[1] or match[2]):
            if match[1]:
                start = int(match[1])
                end = min(int(match[2]), size - 1) if match[2] else size - 1
            else:
                start = max(0, size - int(match[2]))
            if start >= size or start > end:
                self._record(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, 0)
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            status = HTTPStatus.PARTIAL_CONTENT
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(status)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self._record(status, len(body))
        return io.BytesIO(body)


def serve_forever(root: Path, log_path: Path) -> None:
    """Serve ``root`` on a free loopback port; print the port, then serve until killed."""
    handler = functools.partial(
        RangeRequestHandler, log_path=log_path, lock=threading.Lock(), directory=str(root)
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


def start_server(root: Path, log_path: Path) -> tuple[RangeServer, subprocess.Popen]:
    """Start a server process for ``root``; returns it once it listens."""
    proc = subprocess.Popen(
        [sys.executable, __file__, str(root), str(log_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(proc.stdout.readline())
    return RangeServer(root, f"http://127.0.0.1:{port}", log_path), proc


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


def write_cog(src: Path, dst: Path, block: int = COG_BLOCK) -> Path:
    """Copy a raster as a Cloud Optimized GeoTIFF: tiles, overviews and header up front."""
    import rasterio
    import rasterio.shutil

    with rasterio.open(src) as ds:
        rasterio.shutil.copy(
            ds, dst, driver="COG", BLOCKSIZE=block, COMPRESS="DEFLATE", OVERVIEWS="AUTO"
        )
    return dst


@pytest.fixture
def range_server(tmp_path: Path) -> Iterator[RangeServer]:
    """A range-capable HTTP server on loopback serving an empty folder (a new port per test)."""
    root = tmp_path / "www"
    root.mkdir()
    server, proc = start_server(root, tmp_path / "requests.jsonl")
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.fixture(scope="session")
def cog(scene: SyntheticScene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic scene as a COG (128 px tiles, DEFLATE, overviews)."""
    return write_cog(scene.raster_path, tmp_path_factory.mktemp("cog") / "scene.tif")


@pytest.fixture
def gdal_http_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """GDAL settings for sane /vsicurl/ reads: no sidecar probing, no proxy for loopback."""
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    monkeypatch.setenv("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", ".tif")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


if __name__ == "__main__":
    serve_forever(Path(sys.argv[1]), Path(sys.argv[2]))
