"""The job store: one SQLite database (WAL) that the service and the job processes share.

A job is a row: who submitted it (the hash of its key), the tool, the validated inputs as JSON,
its status, progress, last message, the tool's result lines and outputs, timestamps and the
process running it. Jobs are claimed in submission order (FIFO), atomically, so none runs twice.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCEPTED = "accepted"
RUNNING = "running"
SUCCESSFUL = "successful"
FAILED = "failed"
DISMISSED = "dismissed"
STATUSES = (ACCEPTED, RUNNING, SUCCESSFUL, FAILED, DISMISSED)
FINISHED = (SUCCESSFUL, FAILED, DISMISSED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    tool TEXT NOT NULL,
    inputs TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    lines TEXT NOT NULL DEFAULT '[]',
    outputs TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    updated REAL NOT NULL,
    pid INTEGER,
    runs INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""


@dataclass(frozen=True)
class Job:
    """One job as stored."""

    id: str
    owner: str
    tool: str
    inputs: dict[str, Any]
    status: str
    progress: float
    message: str
    lines: list[str]
    outputs: dict[str, str]
    created: float
    started: float | None
    finished: float | None
    updated: float
    pid: int | None
    runs: int

    @property
    def done(self) -> bool:
        return self.status in FINISHED


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values.pop("seq")
    for key in ("inputs", "lines", "outputs"):
        values[key] = json.loads(values[key])
    return Job(**values)


class JobStore:
    """The jobs table of ``path`` (created on first use, in WAL mode)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def create(self, owner: str, tool: str, inputs: dict[str, Any]) -> Job:
        """Queue a job (status accepted)."""
        job_id = uuid.uuid4().hex
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, owner, tool, inputs, status, message, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, owner, tool, json.dumps(inputs), ACCEPTED, "queued", now, now),
            )
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job ``job_id`` (None when there is none, or it belongs to another owner)."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            return None
        return _job(row)

    def list(self, owner: str | None = None, status: str | None = None) -> list[Job]:
        """Jobs in submission order, of one owner and/or status."""
        query, args = "SELECT * FROM jobs WHERE 1=1", []
        if owner is not None:
            query, args = query + " AND owner = ?", [*args, owner]
        if status is not None:
            query, args = query + " AND status = ?", [*args, status]
        with self._connect() as db:
            return [_job(r) for r in db.execute(query + " ORDER BY seq", args)]

    def claim_next(self) -> Job | None:
        """The oldest accepted job, marked running (atomically: no job is claimed twice)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY seq LIMIT 1", (ACCEPTED,)
            ).fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute(
                "UPDATE jobs SET status = ?, started = ?, updated = ?, runs = runs + 1, "
                "message = 'starting' WHERE id = ?",
                (RUNNING, now, now, row["id"]),
            )
        return self.get(row["id"])

    def set_pid(self, job_id: str, pid: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET pid = ? WHERE id = ?", (pid, job_id))

    def set_progress(self, job_id: str, percent: float, message: str) -> None:
        """Record a running job's progress (ignored once it has finished)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, message = ?, updated = ? "
                "WHERE id = ? AND status = ?",
                (percent, message, time.time(), job_id, RUNNING),
            )

    def finish(
        self,
        job_id: str,
        status: str,
        message: str,
        lines: list[str] | None = None,
        outputs: dict[str, str] | None = None,
        only_from: tuple[str, ...] = (ACCEPTED, RUNNING),
    ) -> bool:
        """Mark the job finished, if it is still in one of ``only_from``; True if it was."""
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE jobs SET status = ?, message = ?, lines = ?, outputs = ?, "
                f"progress = CASE WHEN ? = '{SUCCESSFUL}' THEN 100 ELSE progress END, "
                f"finished = ?, updated = ? "
                f"WHERE id = ? AND status IN ({', '.join('?' for _ in only_from)})",
                (
                    status,
                    message,
                    json.dumps(lines or []),
                    json.dumps(outputs or {}),
                    status,
                    now,
                    now,
                    job_id,
                    *only_from,
                ),
            )
            return cursor.rowcount == 1
