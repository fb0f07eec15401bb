"""The service's core, shared by both REST shapes: settings, tools, jobs, outputs, uploads."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterlearn.errors import ParameterError
from rasterlearn.serve.auth import load_keys
from rasterlearn.serve.data import DataDir, UploadTooLarge
from rasterlearn.serve.runner import Runner
from rasterlearn.serve.store import DISMISSED, FAILED, SUCCESSFUL, Job, JobStore
from rasterlearn.serve.values import normalize
from rasterlearn.tools.declaration import Tool
from rasterlearn.tools.registry import find_tool, tools

SHORT_TOOLS = (
    "read_export_folder",
    "query_model_info",
    "non_maximum_suppression",
    "compute_accuracy_for_object_detection",
    "compute_pixel_accuracy",
)
"""Tools quick enough to run synchronously (a request waits for the job)."""

NOT_SERVED = ("demo",)
"""Tools the service does not offer (the demo downloads nothing but writes a report folder
meant for a person at a terminal)."""


@dataclass(frozen=True)
class Settings:
    """How the service runs.

    Attributes:
        data_dir: The data directory (see :mod:`rasterlearn.serve.data`).
        max_jobs: Jobs running at once; the others wait in submission order.
        cluster: ``local:N``: tools that can fan out do so on a local Dask cluster.
        scheduler: ``tcp://HOST:PORT`` of a running Dask cluster the tools use.
        api_keys: The file of hashed API keys (None: no keys, loopback only).
        max_upload_bytes: The largest upload accepted (413 past it).
        sync_seconds: How long a synchronous execution waits before answering as a job.
        files_dir: A folder served as ``files/`` instead of ``DATA_DIR/files``.
    """

    data_dir: Path
    max_jobs: int = 2
    cluster: str | None = None
    scheduler: str | None = None
    api_keys: Path | None = None
    max_upload_bytes: int = 1 << 30
    sync_seconds: float = 120.0
    files_dir: Path | None = None


class ServiceError(Exception):
    """An HTTP error: its status, an OGC exception code and the one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Service:
    """The job store, the runner and the data directory behind both REST shapes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data = DataDir.at(settings.data_dir, settings.files_dir)
        self.store = JobStore(self.data.database)
        self.keys = load_keys(settings.api_keys) if settings.api_keys else None
        service = {"cluster": settings.cluster, "scheduler": settings.scheduler}
        self.runner = Runner(self.store, self.data, settings.max_jobs, service)

    def tools(self) -> list[Tool]:
        return [t for t in tools() if t.name not in NOT_SERVED]

    def tool(self, name: str) -> Tool:
        """The served tool ``name`` (Python name, command or REST task name).

        Raises:
            ServiceError: 404 for an unknown tool.
        """
        try:
            tool = find_tool(name)
        except ParameterError as err:
            raise ServiceError(404, "no-such-process", str(err)) from None
        if tool.name in NOT_SERVED:
            raise ServiceError(404, "no-such-process", f"{name} is not offered by this service")
        return tool

    def submit(self, tool: Tool, given: dict[str, Any], owner: str, rest_names: bool) -> Job:
        """Check the values (a RasterLearnError: 400) and queue the job."""
        values = normalize(tool, given, self.data, owner, rest_names)
        job = self.store.create(owner, tool.name, values)
        self.runner.wake()
        return job

    def job(self, job_id: str, owner: str) -> Job:
        """The caller's job ``job_id``.

        Raises:
            ServiceError: 404 when there is none (or it is another key's).
        """
        job = self.store.get(job_id, owner)
        if job is None:
            raise ServiceError(404, "no-such-job", f"there is no job {job_id!r}")
        return job

    async def wait(self, job: Job, seconds: float) -> Job:
        """The job once finished, or as it is after ``seconds``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not job.done and loop.time() < end:
            await asyncio.sleep(0.1)
            job = self.store.get(job.id) or job
        return job

    def dismiss(self, job: Job) -> Job:
        """Cancel a queued or running job; remove a finished job's outputs."""
        if not self.runner.cancel(job.id) and job.status in (SUCCESSFUL, FAILED):
            self.store.finish(
                job.id, DISMISSED, "dismissed by the client", only_from=(SUCCESSFUL, FAILED)
            )
            shutil.rmtree(self.data.results(job.id), ignore_errors=True)
        return self.store.get(job.id) or job

    def output(self, job: Job, name: str, sub: str = "") -> Path:
        """The file or folder of the output ``name`` of a successful job (``sub``: a file in
        an output folder).

        Raises:
            ServiceError: 404 when the job has not succeeded or has no such output.
        """
        if job.status != SUCCESSFUL:
            raise ServiceError(404, "result-not-ready", f"job {job.id} is {job.status}")
        if name not in job.outputs:
            raise ServiceError(404, "no-such-output", f"job {job.id} has no output {name!r}")
        results = self.data.results(job.id).resolve()
        path = (results / job.outputs[name] / sub).resolve()
        if not path.is_relative_to(results) or not path.exists():
            raise ServiceError(404, "no-such-output", f"{name}/{sub} is not an output file")
        return path

    def files(self, folder: Path) -> list[str]:
        """The files of an output folder, relative to it."""
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    async def upload(
        self, owner: str, headers: Mapping[str, str], body: AsyncIterator[bytes]
    ) -> Path:
        """Store an uploaded file (see :meth:`DataDir.receive`); a body announced larger
        than the limit is refused before it is read.

        Raises:
            UploadTooLarge: past the size limit.
        """
        limit = self.settings.max_upload_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit + 64 * 1024:
            raise UploadTooLarge(f"the upload is larger than the limit of {limit} bytes")
        content_type = headers.get("content-type", "")
        return await self.data.receive(owner, content_type, body, self.settings.max_upload_bytes)


@contextlib.asynccontextmanager
async def running(service: Service) -> AsyncIterator[None]:
    """The runner started for the app's lifetime."""
    service.runner.start()
    try:
        yield
    finally:
        service.runner.stop()
