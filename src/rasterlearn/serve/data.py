"""The data directory: its layout, safe path resolution and streamed uploads.

::

    DATA_DIR/
      jobs.sqlite                 the job store (WAL)
      files/                      data put there by the operator, readable by every key
      uploads/<owner>/<id>/NAME   uploaded rasters, features and models (items, used by id)
      jobs/<id>/staging/          a running job's outputs
      jobs/<id>/results/          a successful job's outputs
      jobs/<id>/log.txt           the job process's output

A path a client gives is relative to the data directory; it is resolved (symlinks included)
and must stay inside it, and inside the caller's own uploads and jobs.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.serve.store import JobStore

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_ID = re.compile(r"^[0-9a-f]{32}$")


class UploadTooLarge(Exception):
    """An upload went past the size limit (its partial file is removed)."""


@dataclass(frozen=True)
class DataDir:
    """The service's data directory."""

    root: Path
    files: Path

    @classmethod
    def at(cls, root: str | Path, files: str | Path | None = None) -> DataDir:
        """The data directory at ``root``, its folders made; ``files``: a folder served as
        ``files/`` instead of ``root/files`` (``rasterlearn label`` serves the imagery's)."""
        root = Path(root).resolve()
        data = cls(root, Path(files).resolve() if files is not None else root / "files")
        for sub in ("files", "uploads", "jobs"):
            (data.root / sub).mkdir(parents=True, exist_ok=True)
        return data

    @property
    def database(self) -> Path:
        return self.root / "jobs.sqlite"

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def staging(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "staging"

    def results(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "results"

    def log(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "log.txt"

    def upload(self, owner: str, item_id: str) -> Path:
        """The file of the caller's upload (item) ``item_id``.

        Raises:
            InputError: when the caller has no such upload.
        """
        folder = self.root / "uploads" / owner / item_id
        files = sorted(folder.iterdir()) if _ID.match(item_id) and folder.is_dir() else []
        if not files:
            raise InputError(f"there is no uploaded item {item_id!r}", "upload it first")
        return files[0]

    def resolve(self, value: str, owner: str) -> Path:
        """The path ``value`` names in the data directory, checked.

        Raises:
            ParameterError: for a path outside the data directory (``..``, an absolute path
                elsewhere, a symlink pointing out), or in another caller's files.
        """
        raw = Path(value)
        if ".." in raw.parts:
            raise ParameterError(f"path {value!r} contains '..'", "give a path in the data dir")
        if self.files != self.root / "files":
            in_files = self._in_files(raw)
            if in_files is not None:
                return in_files
        target = (raw if raw.is_absolute() else self.root / raw).resolve()
        if not target.is_relative_to(self.root) or target == self.root / "jobs.sqlite":
            raise ParameterError(
                f"path {value!r} is outside the service's data directory",
                "upload the file or give a path relative to the data directory",
            )
        parts = target.relative_to(self.root).parts
        if parts[:1] == ("uploads",) and parts[1:2] != (owner,):
            raise ParameterError(f"path {value!r} is not yours", "give your own uploads")
        if parts[:1] == ("jobs",) and len(parts) > 1:
            self._check_job_path(value, parts, owner)
        if not parts or parts[0].startswith("jobs.sqlite"):
            raise ParameterError(f"path {value!r} is not a data file", "give a data file")
        return target

    def _in_files(self, raw: Path) -> Path | None:
        """The path ``files/...`` names in a files folder served from elsewhere, or None."""
        if raw.is_absolute():
            target = raw.resolve()
            return target if target.is_relative_to(self.files) else None
        if raw.parts[:1] != ("files",):
            return None
        target = self.files.joinpath(*raw.parts[1:]).resolve()
        if not target.is_relative_to(self.files):
            raise ParameterError(
                f"path {str(raw)!r} points outside the files folder", "give a file inside it"
            )
        return target

    def shown(self, value: object) -> object:
        """A value as clients see it: paths inside the data directory relative to it, so
        the server's own folders are never disclosed."""
        if isinstance(value, str) and Path(value).is_absolute():
            path = Path(value)
            if path.is_relative_to(self.files):
                return str(Path("files") / path.relative_to(self.files))
            return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else value
        if isinstance(value, list):
            return [self.shown(v) for v in value]
        return value

    def _check_job_path(self, value: str, parts: tuple[str, ...], owner: str) -> None:
        job = JobStore(self.database).get(parts[1], owner)
        if job is None or parts[2:3] != ("results",):
            raise ParameterError(
                f"path {value!r} is not one of your jobs' results", "give your own results"
            )

    async def receive(
        self, owner: str, content_type: str, body: AsyncIterator[bytes], limit: int
    ) -> Path:
        """Stream the first file of a multipart ``body`` into a new upload of at most ``limit``
        bytes; past it the partial file is removed and
        :class:`UploadTooLarge` raised.

        Raises:
            ParameterError: when the body is not multipart or has no file.
        """
        kind_, params = parse_options_header(content_type)
        if kind_ != b"multipart/form-data" or b"boundary" not in params:
            raise ParameterError("an upload must be multipart/form-data", "send a 'file' part")
        folder = self.root / "uploads" / owner / uuid.uuid4().hex
        folder.mkdir(parents=True)
        receiver = _Receiver(folder, limit)
        parser = MultipartParser(params[b"boundary"], receiver.callbacks())
        try:
            async for chunk in body:
                parser.write(chunk)
            parser.finalize()
            if receiver.path is None:
                raise ParameterError("the upload has no file part", "send a 'file' part")
        except BaseException:
            receiver.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        target = receiver.path.with_name(
            receiver.path.name.removeprefix(".").removesuffix(".partial")
        )
        receiver.path.rename(target)
        return target


class _Receiver:
    """python-multipart callbacks writing the first file part to ``folder``, counting bytes."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit, self.size = folder, limit, 0
        self.field, self.value = b"", b""
        self.headers: dict[bytes, bytes] = {}
        self.out: BinaryIO | None = None
        self.path: Path | None = None
        self.writing = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.headers.clear,
            "on_header_field": lambda d, s, e: self._add("field", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self.close,
        }

    def _add(self, which: str, data: bytes) -> None:
        setattr(self, which, getattr(self, which) + data)

    def _header_end(self) -> None:
        self.headers[self.field.lower()] = self.value
        self.field, self.value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        filename = params.get(b"filename")
        if filename is None or self.path is not None:
            return
        name = Path(filename.decode("utf-8", "replace").replace("\\", "/")).name
        safe = _SAFE_NAME.sub("_", name).lstrip(".") or "upload"
        self.path = self.folder / f".{safe}.partial"
        self.out = self.path.open("wb")
        self.writing = True

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self.writing or self.out is None:
            return
        self.size += end - start
        if self.size > self.limit:
            raise UploadTooLarge(f"the upload is larger than the limit of {self.limit} bytes")
        self.out.write(data[start:end])

    def close(self) -> None:
        self.writing = False
        if self.out is not None:
            self.out.close()
            self.out = None
