"""Lanes in worker processes: Python work side by side past the GIL, on this machine.

Lane threads overlap what releases the GIL (GDAL's reads and writes), not the Python between
them. :class:`ProcessLanes` starts ``count`` fresh Python processes for one job; each runs the
tasks sent to it one after the other and sends their results back in order, so a task may
leave its result in the process for a later task there (:func:`work_and_hold`,
:func:`finish_held`: the staged steps of
:func:`~rasterlearn.execution.blocks.run_blocks_staged`, whose payloads never travel).

The processes are started with ``python -c``, not :mod:`multiprocessing`: they never import
the caller's ``__main__`` (scripts without an ``if __name__ == "__main__":`` guard and notebooks
work), they get this process's environment as it is when they start, and they ignore Ctrl-C
(this process stops them). Tasks and results travel as length-prefixed pickles over the
processes' standard input and output; their own prints go to standard error.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from rasterlearn.errors import RasterLearnError

R = TypeVar("R")

logger = logging.getLogger("rasterlearn.execution")

_HEADER = struct.Struct("!Q")
# The package's folder replaces the working directory on the path (``python -c`` puts it
# first), unless it is on the path already: the process finds the package this one runs.
_BOOT = """import sys
root = {root!r}
sys.path[0:1] = [] if root in sys.path else [root]
from rasterlearn.execution.processes import serve
serve()
"""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _send(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
    """The next message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


class RemoteTraceback(Exception):
    """The traceback of an error raised in a lane process (the cause of the error here)."""

    def __str__(self) -> str:
        return str(self.args[0])


# --- in the lane process ----------------------------------------------------------------------


@dataclass
class _LaneState:
    """What a lane process keeps between tasks: the job and the payloads not finished yet."""

    job: Any = None
    payloads: dict[int, Any] = field(default_factory=dict)


_STATE = _LaneState()
_NO_JOB = object()


def preload_modules(modules: tuple[str, ...]) -> None:
    """In a lane process: import what a job will need while the caller is still preparing it."""
    for module in modules:
        importlib.import_module(module)


def keep_job(job: Any) -> bool:
    """In a lane process: keep the job every later task of the run gets."""
    _STATE.job = job
    _STATE.payloads.clear()
    return True


def work_and_hold(work: Callable[[Any, Any], tuple[Any, Any]], block: Any, key: int) -> tuple:
    """In a lane process: ``work(block, job)``; keep the payload under ``key``, return
    ``(summary, key)``."""
    summary, payload = work(block, _STATE.job)
    _STATE.payloads[key] = payload
    return summary, key


def finish_held(finish: Callable[[Any, Any, Any], R], key: int, decision: Any) -> R:
    """In a lane process: ``finish(payload, decision, job)`` with the payload kept under ``key``."""
    return finish(_STATE.payloads.pop(key), decision, _STATE.job)


def _reply(value: Any, ok: bool) -> bytes:
    try:
        return pickle.dumps((ok, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # an unpicklable result or error: its text, as an error
        text = f"{type(value).__name__}: {value}" if not ok else f"unpicklable result: {err}"
        return pickle.dumps((False, (RuntimeError(text), None)))


def serve() -> None:
    """A lane process's loop: run each task received, send back its result, until the end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not break replies
    while (data := _receive(requests)) is not None:
        try:
            fn, args = pickle.loads(data)
            reply = _reply(fn(*args), ok=True)
        except RasterLearnError as err:  # the user's to fix: no traceback
            reply = _reply((err, None), ok=False)
        except Exception as err:
            reply = _reply((err, traceback.format_exc()), ok=False)
        try:
            _send(replies, reply)
        except BrokenPipeError:  # the caller is gone
            return


# --- in this process --------------------------------------------------------------------------


class _Lane:
    """One lane process; a writer thread sends its tasks, a reader thread resolves their
    futures in order."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT.format(root=_PACKAGE_ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._outbox: queue.SimpleQueue[tuple[Future, bytes] | None] = queue.SimpleQueue()
        self._sent: deque[Future] = deque()
        self._lock = threading.Lock()
        self._ended: RasterLearnError | None = None
        self._threads = [
            threading.Thread(target=self._write, name="rasterlearn-lane-writer", daemon=True),
            threading.Thread(target=self._read, name="rasterlearn-lane-reader", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        """Run ``fn(*args)`` in the process after the tasks submitted before; a future not
        sent yet can still be cancelled."""
        return self.send(pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL))

    def send(self, task: bytes) -> Future:
        """:meth:`submit` for a task pickled already (one pickle for every lane)."""
        future: Future = Future()
        self._outbox.put((future, task))
        return future

    def _write(self) -> None:
        while (item := self._outbox.get()) is not None:
            future, data = item
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                ended = self._ended
                if ended is None:
                    self._sent.append(future)
            if ended is not None:
                future.set_exception(ended)
                continue
            with contextlib.suppress(OSError):  # the process is gone: the reader fails it
                _send(self.proc.stdin, data)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def _read(self) -> None:
        while (data := _receive(self.proc.stdout)) is not None:
            try:
                ok, value = pickle.loads(data)
            except Exception as err:
                ok, value = False, (RuntimeError(f"unreadable result: {err}"), None)
            with self._lock:
                future = self._sent.popleft()
            if ok:
                future.set_result(value)
            else:
                err, remote = value
                if remote is not None:
                    err.__cause__ = RemoteTraceback(remote)
                future.set_exception(err)
        code = self.proc.wait()
        ended = RasterLearnError(
            f"a worker process of the run stopped unexpectedly (exit code {code})",
            "it may have run out of memory: pass a smaller --num-workers",
        )
        with self._lock:
            self._ended = ended
            unanswered = list(self._sent)
            self._sent.clear()
        for future in unanswered:
            future.set_exception(ended)

    def end(self, kill: bool) -> None:
        """Ask the process to end after its tasks, or kill it; :meth:`join` waits for it."""
        if kill:
            self.proc.kill()
        self._outbox.put(None)

    def join(self) -> None:
        """Wait for the ended process and the threads."""
        self.proc.wait()
        for thread in self._threads:
            thread.join()
        self.proc.stdout.close()


class ProcessLanes:
    """``count`` lane processes running one job; a context manager that ends them on exit.

    On a normal exit the processes finish their tasks and leave; when an exception leaves the
    block, or a process has not started yet, they are killed. Either way they have ended when
    the ``with`` block is left.

    The processes can be started before their job is known (:meth:`send_job`), importing
    what it will need meanwhile (``preload``).

    Args:
        count: Processes to start.
        job: Sent to each process once, first (see :func:`keep_job`); or later, with
            :meth:`send_job`.
        preload: Modules the processes import at once.
    """

    def __init__(self, count: int, job: Any = _NO_JOB, *, preload: tuple[str, ...] = ()) -> None:
        self.lanes = [_Lane() for _ in range(count)]
        self.ready: list[Future] = []
        """Per process, done once it has started and holds the job (or failed to)."""
        self._closing = False
        if preload:
            task = pickle.dumps((preload_modules, (preload,)), protocol=pickle.HIGHEST_PROTOCOL)
            for lane in self.lanes:
                lane.send(task)
        if job is not _NO_JOB:
            self.send_job(job)

    def send_job(self, job: Any) -> None:
        """Send every process the job of the tasks to come (see :func:`keep_job`)."""
        task = pickle.dumps((keep_job, (job,)), protocol=pickle.HIGHEST_PROTOCOL)
        self.ready = [lane.send(task) for lane in self.lanes]
        for future in self.ready:
            future.add_done_callback(self._report_failed_start)

    def _report_failed_start(self, ready: Future) -> None:
        err = ready.exception()
        if err is not None and not self._closing:
            logger.warning("a worker process could not start: %s", err)

    def __len__(self) -> int:
        return len(self.lanes)

    def submit(self, lane: int, fn: Callable[..., R], *args: Any) -> Future[R]:
        """``fn(*args)`` in process ``lane``, after what was submitted to it before."""
        return self.lanes[lane].submit(fn, *args)

    def __enter__(self) -> ProcessLanes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        ready = self.ready or [None] * len(self.lanes)  # no job sent: nothing to finish
        for lane, started in zip(self.lanes, ready, strict=True):
            # one still starting has nothing to finish: waiting would cost its imports
            lane.end(kill=exc_type is not None or started is None or not started.done())
        for lane in self.lanes:  # they end side by side
            lane.join()
