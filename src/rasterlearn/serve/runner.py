"""The scheduler in the service: at most ``max_jobs`` job processes at once, in FIFO order.

Each job runs as ``python -m rasterlearn.serve.job`` in a new session (its own process group),
its output going to the job's log. Cancelling a job kills its process group and removes its
outputs. At start, jobs left running by a service that died are failed (their orphaned
process groups killed, their staging removed) and queued jobs run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from rasterlearn.serve.data import DataDir
from rasterlearn.serve.store import ACCEPTED, DISMISSED, FAILED, RUNNING, Job, JobStore

DIED = "the service stopped while the job was running; nothing was written (submit it again)"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _is_job_process(pid: int, job_id: str) -> bool:
    """Whether ``pid`` still runs the job ``job_id`` (not a reused process id)."""
    try:
        return job_id in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


class Runner:
    """Runs the store's jobs in subprocesses from a background thread."""

    def __init__(
        self,
        store: JobStore,
        data: DataDir,
        max_jobs: int,
        service: dict[str, Any] | None = None,
        poll_seconds: float = 0.2,
    ) -> None:
        self.store, self.data, self.max_jobs = store, data, max(1, max_jobs)
        self.service = service or {}
        self.poll_seconds = poll_seconds
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def recover(self) -> list[str]:
        """Fail the jobs a dead service left running; the ids of those jobs."""
        failed = []
        for job in self.store.list(status=RUNNING):
            if job.pid and _is_job_process(job.pid, job.id):
                _kill_group(job.pid)
            if self.store.finish(job.id, FAILED, DIED, only_from=(RUNNING,)):
                failed.append(job.id)
            self._remove_outputs(job.id)
        return failed

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="rasterlearn-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling; running jobs are killed and failed (a restart would do the same)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            procs = dict(self._procs)
            self._procs.clear()
        for job_id, proc in procs.items():
            _kill_group(proc.pid)
            proc.wait()
            self.store.finish(job_id, FAILED, DIED, only_from=(RUNNING,))
            self._remove_outputs(job_id)

    def wake(self) -> None:
        """Look for queued jobs now (a job was submitted)."""
        self._wake.set()

    def running(self) -> int:
        with self._lock:
            return len(self._procs)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._reap()
            self._fill()
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _fill(self) -> None:
        while not self._stop.is_set() and self.running() < self.max_jobs:
            job = self.store.claim_next()
            if job is None:
                return
            self._spawn(job)

    def _spawn(self, job: Job) -> None:
        log = self.data.log(job.id)
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "rasterlearn.serve.job", str(self.data.root), job.id]
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        with log.open("ab") as out, self._lock:
            proc = subprocess.Popen(
                [*command, json.dumps(self.service)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
            self._procs[job.id] = proc
        self.store.set_pid(job.id, proc.pid)

    def _reap(self) -> None:
        with self._lock:
            ended = {i: p for i, p in self._procs.items() if p.poll() is not None}
            for job_id in ended:
                del self._procs[job_id]
        for job_id, proc in ended.items():
            message = f"the job's process ended with exit code {proc.returncode}"
            tail = self._log_tail(job_id)
            self.store.finish(job_id, FAILED, f"{message}: {tail}" if tail else message)
            job = self.store.get(job_id)
            if job is not None and job.status in (FAILED, DISMISSED):
                self._remove_outputs(job_id)

    def cancel(self, job_id: str) -> bool:
        """Dismiss a queued or running job (its process group killed, its outputs removed);
        False when it had already finished."""
        dismissed = self.store.finish(
            job_id, DISMISSED, "dismissed by the client", only_from=(ACCEPTED, RUNNING)
        )
        with self._lock:
            proc = self._procs.pop(job_id, None)
        if proc is not None:
            _kill_group(proc.pid)
            proc.wait()
        self._remove_outputs(job_id)
        self._wake.set()
        return dismissed

    def _log_tail(self, job_id: str) -> str:
        try:
            lines = self.data.log(job_id).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def _remove_outputs(self, job_id: str) -> None:
        shutil.rmtree(self.data.staging(job_id), ignore_errors=True)
        shutil.rmtree(self.data.results(job_id), ignore_errors=True)
