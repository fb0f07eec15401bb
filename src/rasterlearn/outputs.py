"""Atomic outputs: write under a temporary name beside the target, rename when complete."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from rasterlearn.errors import OutputError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_output_path(target: Path, overwrite: bool, folder: bool) -> None:
    """Refuse an output that exists (unless ``overwrite``) or cannot be created.

    An existing empty folder is accepted as a folder output.

    Raises:
        OutputError: if the output exists and ``overwrite`` is false, or is of the wrong kind.
    """
    if target.exists():
        if folder and target.is_file():
            raise OutputError(f"output folder {target} is a file", "give a folder path")
        empty_dir = folder and target.is_dir() and not any(target.iterdir())
        if not empty_dir and not overwrite:
            raise OutputError(
                f"output {target} already exists and is not empty",
                "choose another output or pass --overwrite",
            )


@contextlib.contextmanager
def atomic_output(
    target: str | Path, overwrite: bool = False, folder: bool = False
) -> Iterator[Path]:
    """Yield a temporary path to write to: on success it replaces ``target``, else it is removed.

    Args:
        target: The final output path.
        overwrite: Replace an existing output.
        folder: The output is a folder (the temporary path is created as one).

    Raises:
        OutputError: see :func:`check_output_path`.
    """
    target = Path(target).absolute()
    check_output_path(target, overwrite, folder)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"cannot create {target.parent}: {err.strerror}", "check the path"
        ) from None
    tmp = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    if folder:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
        tmp.rename(target)
        _remove(old)
    else:
        tmp.rename(target)


@contextlib.contextmanager
def staged_files(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield ``<hidden folder>/<target name>`` to write a file and its side-cars into.

    On success every file written in the hidden folder (the target, ``.aux.xml``, a
    Shapefile's ``.shx``/``.dbf``...) is moved beside the target under the same name; on
    failure the folder is removed and nothing appears.

    Raises:
        OutputError: see :func:`check_output_path`.
    """
    target = Path(target).absolute()
    check_output_path(target, overwrite, folder=False)
    staging = target.with_name(target.name + ".staging")
    with atomic_output(staging, overwrite=True, folder=True) as tmp:
        yield tmp / target.name
        # the target last, so that side-cars are in place when it appears
        produced = sorted(tmp.iterdir(), key=lambda p: p.name == target.name)
        for path in produced:
            path.replace(target.parent / path.name)
    shutil.rmtree(staging, ignore_errors=True)
