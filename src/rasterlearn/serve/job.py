"""The job process: ``python -m rasterlearn.serve.job DATA_DIR JOB_ID [SERVICE_JSON]``.

It runs one job's tool, as the command line would: the stored values become the function's
arguments (:func:`~rasterlearn.serve.values.python_values`), outputs are written into the
job's staging folder, progress bars report to the job store, and the tool's result lines are
kept. On success the staging folder becomes the results folder in one rename; a
:class:`~rasterlearn.errors.RasterLearnError` becomes the failed job's one-line message, and
a failed job leaves no output.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from rasterlearn.errors import RasterLearnError
from rasterlearn.progress import report_to
from rasterlearn.serve.data import DataDir
from rasterlearn.serve.store import FAILED, RUNNING, SUCCESSFUL, Job, JobStore
from rasterlearn.serve.values import python_values
from rasterlearn.tools.declaration import OUTPUT
from rasterlearn.tools.registry import find_tool


class _Progress:
    """A progress listener writing to the job store at most twice a second."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id, self.last = store, job_id, 0.0

    def __call__(self, description: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and done != total and done != 0:
            return
        self.last = now
        percent = min(100.0, 100.0 * done / total) if total else 0.0
        shown = f"{description}: {done}/{total}" if total else f"{description}: {done}"
        self.store.set_progress(self.job_id, percent, shown)


def _relative(line: str, staging: Path, results: Path, root: Path) -> str:
    """A result line with server paths made relative to the data directory."""
    return line.replace(str(staging), str(results.relative_to(root))).replace(f"{root}/", "")


def run_job(data: DataDir, store: JobStore, job: Job, service: dict[str, Any]) -> int:
    """Run ``job`` (claimed: status running); its exit code (0 done, 2 user error, 1 crash)."""
    staging, results = data.staging(job.id), data.results(job.id)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    report_to(_Progress(store, job.id))
    try:
        tool = find_tool(job.tool)
        kwargs = python_values(tool, job.inputs, staging, service)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            lines = [str(line) for line in tool.report(tool.function(**kwargs))]
        lines += [f"warning: {w.message}" for w in caught]
    except RasterLearnError as err:
        shutil.rmtree(staging, ignore_errors=True)
        print(f"error: {err}", flush=True)
        message = _relative(str(err), staging, results, data.root)
        store.finish(job.id, FAILED, message, only_from=(RUNNING,))
        return 2
    except Exception as err:
        shutil.rmtree(staging, ignore_errors=True)
        traceback.print_exc()
        message = _relative(f"{type(err).__name__}: {err}", staging, results, data.root)
        store.finish(job.id, FAILED, message, only_from=(RUNNING,))
        return 1
    finally:
        report_to(None)
    outputs = {
        p.name: job.inputs[p.name]
        for p in tool.parameters
        if p.role == OUTPUT and p.name in job.inputs and (staging / job.inputs[p.name]).exists()
    }
    lines = [_relative(line, staging, results, data.root) for line in lines]
    for line in lines:
        print(line, flush=True)
    shutil.rmtree(results, ignore_errors=True)
    staging.rename(results)
    if not store.finish(job.id, SUCCESSFUL, "done", lines, outputs, only_from=(RUNNING,)):
        shutil.rmtree(results, ignore_errors=True)  # dismissed meanwhile: keep nothing
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    data = DataDir.at(args[0])
    store = JobStore(data.database)
    job = store.get(args[1])
    if job is None or job.status != RUNNING:
        print(f"job {args[1]} is not running", file=sys.stderr)
        return 1
    service = json.loads(args[2]) if len(args) > 2 else {}
    return run_job(data, store, job, service)


if __name__ == "__main__":
    sys.exit(main())
