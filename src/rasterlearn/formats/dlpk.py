"""The deep learning package (``.dlpk``): a flat zip of a model folder holding one ``.emd``.

arcgis.learn builds it with ``shutil.make_archive(..., root_dir=<model folder>)``: entries are
relative to the model folder (no top folder) and include everything in it. ArcGIS Pro's Train
tool expects ``<name>.dlpk`` to hold ``<name>.emd``. Packages are untrusted input: opening one
refuses entries that would land outside the destination, links, and oversized contents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rasterlearn.errors import InputError, OutputError, ParameterError
from rasterlearn.formats.emd import PRO_FUNCTIONS_PREFIX, ModelDefinition
from rasterlearn.outputs import atomic_output

__all__ = [
    "DEFAULT_MAX_SIZE",
    "EDITABLE_PROPERTIES",
    "DlpkEntry",
    "DlpkInfo",
    "create_dlpk",
    "dlpk_cache_root",
    "edit_dlpk",
    "inspect_dlpk",
    "open_dlpk",
]

DEFAULT_MAX_SIZE = 8 * 1024**3
"""The most bytes :func:`open_dlpk` unpacks unless told otherwise (8 GiB)."""

EDITABLE_PROPERTIES = ("Framework", "ModelConfiguration", "Description", "Summary", "Tags")
"""The emd keys :func:`edit_dlpk` sets."""

_PROPERTY_NAMES = {
    **{key: key for key in EDITABLE_PROPERTIES},
    "framework": "Framework",
    "model_configuration": "ModelConfiguration",
    "description": "Description",
    "summary": "Summary",
    "tags": "Tags",
}

_INFO_PROPERTIES = (
    "ModelType",
    "ModelName",
    "Framework",
    "ModelConfiguration",
    "ArcGISLearnVersion",
    "Version",
    "Description",
    "Summary",
    "Tags",
)

_CHUNK = 1024 * 1024
_PRUNE_GRACE_S = 60.0
_STORED_SUFFIXES = {".pth", ".pt", ".ts", ".torchscript", ".onnx", ".h5", ".keras", ".pb"}
"""Weights: float arrays that deflate by a few percent at the cost of seconds, so stored."""
_S_IFMT = 0o170000
_S_IFLNK = 0o120000
# Our own atomic outputs (outputs.atomic_output) and other leftovers that are not model files.
_TEMPORARY = re.compile(r"^\..*\.(partial|old)-[0-9a-f]{8}$|~$|^~\$|^\.~lock\.")
_TEMPORARY_FOLDERS = {"__pycache__", ".ipynb_checkpoints"}
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError)


@dataclass(frozen=True)
class DlpkEntry:
    """One entry of a package.

    Attributes:
        name: The entry's name in the zip (``/``-separated, folders end with ``/``).
        size: Uncompressed size in bytes.
        compressed_size: Size inside the zip in bytes.
    """

    name: str
    size: int
    compressed_size: int

    @property
    def is_dir(self) -> bool:
        """Whether the entry is a folder."""
        return self.name.endswith("/")


@dataclass(frozen=True)
class DlpkInfo:
    """What a package holds, read without extracting it.

    Attributes:
        path: The package.
        emd_name: The entry name of its model definition.
        entries: Every entry, in zip order.
        model_definition: The packaged model definition (no folder: files are inside the zip).
        properties: ``ModelType``, ``ModelName``, ``Framework``, ``ModelConfiguration``,
            ``ArcGISLearnVersion``, ``Version``, ``Description``, ``Summary`` and ``Tags`` as
            plain values (None when absent).
    """

    path: Path
    emd_name: str
    entries: tuple[DlpkEntry, ...]
    model_definition: ModelDefinition
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Total uncompressed size in bytes."""
        return sum(e.size for e in self.entries)

    @property
    def name_matches(self) -> bool:
        """Whether the emd is ``<package name>.emd`` at the top of the package, as Pro expects."""
        return self.emd_name == f"{self.path.stem}.emd"

    @property
    def missing_files(self) -> list[str]:
        """Relative files named by ``ModelFile``/``InferenceFunction`` that the package lacks."""
        names = {e.name for e in self.entries}
        folder = self.emd_name.rpartition("/")[0]
        missing = []
        for key in ("ModelFile", "InferenceFunction"):
            value = self.model_definition.get(key)
            entry = _packaged_name(value, folder)
            if entry is not None and entry not in names:
                missing.append(value)
        return missing


def _packaged_name(value: Any, folder: str) -> str | None:
    """The entry a relative file name of the emd refers to; None for absolute or Pro files."""
    if not isinstance(value, str) or value.startswith(PRO_FUNCTIONS_PREFIX):
        return None
    text = value.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        return None
    parts = [p for p in (*folder.split("/"), *text.split("/")) if p not in ("", ".")]
    return "/".join(parts)


# -- reading --------------------------------------------------------------------------------


def _existing_package(path: str | os.PathLike[str]) -> Path:
    package = Path(path)
    if not package.is_file():
        what = "is a folder" if package.is_dir() else "not found"
        raise InputError(f"package {package} {what}", "give a .dlpk file")
    return package


@contextmanager
def _open_zip(package: Path) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(package)
    except (*_ZIP_ERRORS, ValueError) as err:
        raise InputError(
            f"{package} is not a readable .dlpk (zip) file: {err}",
            "the file is corrupted or incomplete; copy or save the package again",
        ) from None
    except OSError as err:
        raise InputError(f"cannot read {package}: {err.strerror}", "check the path") from None
    with zf:
        try:
            yield zf
        except (*_ZIP_ERRORS, RuntimeError) as err:
            raise InputError(
                f"{package} is corrupted: {err}",
                "the file is damaged or incomplete; copy or save the package again",
            ) from None


def _safe_name(info: zipfile.ZipInfo, package: Path) -> str:
    """The entry's relative ``/``-separated name, or InputError if it could escape the folder."""
    name = info.filename
    norm = name.replace("\\", "/")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    reason = None
    if any(ord(c) < 32 for c in name):
        reason = "control characters in the name"
    elif norm.startswith("/"):
        reason = "an absolute path"
    elif re.match(r"^[A-Za-z]:", norm):
        reason = "a drive letter"
    elif ".." in parts:
        reason = "a parent-folder (..) path"
    elif any(":" in p for p in parts):
        reason = "a colon in the name"
    elif (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
        reason = "a symbolic link"
    elif not parts:
        reason = "an empty name"
    if reason is not None:
        raise InputError(
            f"{package} holds an unsafe entry {name!r} ({reason}); refusing to open it",
            "use packages from trusted sources only",
        )
    return "/".join(parts) + ("/" if info.is_dir() else "")


def _checked_entries(
    zf: zipfile.ZipFile, package: Path, max_size: int | None
) -> list[tuple[zipfile.ZipInfo, str]]:
    """Every entry with its safe name; InputError for unsafe names, duplicates or a big total."""
    entries = []
    seen: set[str] = set()
    for info in zf.infolist():
        name = _safe_name(info, package)
        if name in seen:
            raise InputError(
                f"{package} holds the entry {name!r} twice; refusing to open it",
                "the package is damaged or was not made by ArcGIS; package the model again",
            )
        seen.add(name)
        entries.append((info, name))
    total = sum(info.file_size for info, _ in entries)
    if max_size is not None and total > max_size:
        raise InputError(
            f"{package} unpacks to {total} bytes, more than the limit of {max_size} bytes",
            "raise max_size if you trust the package",
        )
    return entries


def _single_emd(entries: list[tuple[zipfile.ZipInfo, str]], package: Path) -> tuple[Any, str]:
    emds = [(i, n) for i, n in entries if not i.is_dir() and n.lower().endswith(".emd")]
    if len(emds) != 1:
        found = f"{len(emds)} .emd files ({', '.join(n for _, n in emds)})" if emds else "no .emd"
        raise InputError(
            f"{package} holds {found}, expected exactly one",
            "a .dlpk holds one model definition; package the model folder again",
        )
    return emds[0]


def _read_emd(zf: zipfile.ZipFile, info: zipfile.ZipInfo, package: Path) -> ModelDefinition:
    data = zf.read(info)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(
            f"{package}: {info.filename} is not UTF-8 text", "package the model again"
        ) from None
    return ModelDefinition.from_json(text, where=f"{package}:{info.filename}")


def _extract(
    zf: zipfile.ZipFile,
    entries: list[tuple[zipfile.ZipInfo, str]],
    dest: Path,
    package: Path,
    max_size: int,
) -> None:
    root = dest.resolve()
    written = 0
    for info, name in entries:
        target = dest / name
        if not target.resolve().is_relative_to(root):  # defence in depth after _safe_name
            raise InputError(f"{package} holds an unsafe entry {info.filename!r}; refusing it")
        try:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > max_size:
                        raise InputError(
                            f"{package} unpacks to more than the limit of {max_size} bytes",
                            "raise max_size if you trust the package",
                        )
                    out.write(chunk)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise InputError(
                f"{package} holds {info.filename!r} both as a file and as a folder",
                "the package is damaged; package the model again",
            ) from None
        except OSError as err:
            raise OutputError(
                f"cannot extract {package} to {dest}: {err.strerror}",
                "check the free space and permissions there, or extract elsewhere",
            ) from None


def dlpk_cache_root() -> Path:
    """The folder packages are extracted to when no destination is given.

    ``$RASTERLEARN_DLPK_CACHE`` when set, else ``rasterlearn-<uid>/dlpk`` in the system
    temporary folder.
    """
    if configured := os.environ.get("RASTERLEARN_DLPK_CACHE"):
        return Path(configured).expanduser()
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"rasterlearn-{user}" / "dlpk"


def _cache_key(package: Path) -> str:
    stat = package.stat()
    return f"{package.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _cache_folder(package: Path) -> Path:
    digest = hashlib.sha256(_cache_key(package).encode()).hexdigest()[:16]
    return dlpk_cache_root() / f"{package.stem}-{digest}"


def _key_file(folder: Path) -> Path:
    return folder.with_name(f"{folder.name}.key")


def _prune_cache(root: Path, keep: Path) -> None:
    """Remove extracted copies of packages that were deleted or changed since.

    Each copy has a ``<folder>.key`` file beside it holding the key it was made for; a copy
    whose package no longer has that key can never be reused. Copies touched within the
    last minute are left alone: another process may have just made or opened one.
    """
    recent = time.time() - _PRUNE_GRACE_S
    for key_file in root.glob("*.key"):
        folder = key_file.with_name(key_file.name.removesuffix(".key"))
        if folder == keep:
            continue
        try:
            if key_file.stat().st_mtime > recent:
                continue
            key = key_file.read_text(encoding="utf-8")
            source = Path(key.rsplit("|", 2)[0])
            if source.is_file() and _cache_key(source) == key:
                continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        key_file.unlink(missing_ok=True)
    for partial in root.glob(".*.partial-*"):  # left by a process that was killed
        with contextlib.suppress(OSError):
            if partial.stat().st_mtime < recent - 3600:
                shutil.rmtree(partial, ignore_errors=True)


def open_dlpk(
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str] | None = None,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    overwrite: bool = False,
) -> Path:
    """Extract a package safely and return its model definition's path.

    Every entry is checked before anything is written: absolute names, drive letters,
    ``..`` (also with backslashes), colons, control characters, symbolic links and duplicate
    names are refused, and so is a total size above ``max_size``. Extraction is atomic.

    Args:
        path: The ``.dlpk``.
        dest: The folder to extract to (new, or empty unless ``overwrite``). Default: a cache
            folder under the system temporary folder, keyed by the package's path, size and
            modification time, reused while the package is unchanged.
        max_size: The most uncompressed bytes to extract (default 8 GiB).
        overwrite: Replace an existing, non-empty ``dest``.

    Returns:
        The extracted ``.emd`` (its folder is the model folder).

    Raises:
        InputError: if the package is missing, corrupted, unsafe, too large, or does not hold
            exactly one ``.emd`` (the message lists them).
        OutputError: if ``dest`` exists and is not empty, and ``overwrite`` is false, or the
            files cannot be written.
    """
    package = _existing_package(path)
    with _open_zip(package) as zf:
        entries = _checked_entries(zf, package, max_size)
        _, emd_name = _single_emd(entries, package)
        if dest is not None:
            with atomic_output(dest, overwrite=overwrite, folder=True) as tmp:
                _extract(zf, entries, tmp, package, max_size)
            return Path(dest).absolute() / emd_name
        folder = _cache_folder(package)
        if (folder / emd_name).is_file():
            with contextlib.suppress(OSError):
                _key_file(folder).touch()
            return folder / emd_name
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = folder.with_name(f".{folder.name}.partial-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            _extract(zf, entries, tmp, package, max_size)
            if folder.exists():  # an incomplete earlier copy
                shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
            _key_file(folder).write_text(_cache_key(package), encoding="utf-8")
        except OSError as err:
            if not (folder / emd_name).is_file():  # not another process's complete copy
                raise OutputError(
                    f"cannot extract {package} to {folder}: {err.strerror}",
                    "check the free space there, or pass a destination folder",
                ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune_cache(folder.parent, keep=folder)
        return folder / emd_name


def inspect_dlpk(path: str | os.PathLike[str]) -> DlpkInfo:
    """Describe a package without extracting it.

    Args:
        path: The ``.dlpk``.

    Returns:
        Its entries (names and sizes), model definition and properties.

    Raises:
        InputError: if the package is missing, corrupted, unsafe, or does not hold exactly one
            ``.emd``, or the emd is invalid.
    """
    package = _existing_package(path)
    with _open_zip(package) as zf:
        entries = _checked_entries(zf, package, None)
        info, emd_name = _single_emd(entries, package)
        md = _read_emd(zf, info, package)
    properties = {key: _plain(md.get(key)) for key in _INFO_PROPERTIES}
    return DlpkInfo(
        path=package.absolute(),
        emd_name=emd_name,
        entries=tuple(DlpkEntry(n, i.file_size, i.compress_size) for i, n in entries),
        model_definition=md,
        properties=properties,
    )


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


# -- writing --------------------------------------------------------------------------------


def _is_temporary(name: str) -> bool:
    return bool(_TEMPORARY.search(name))


def _package_members(folder: Path, exclude: Path | None) -> tuple[list[str], list[str]]:
    """The folders and files to package, relative ``/``-separated names in sorted walk order."""
    excluded = exclude.resolve() if exclude is not None else None
    folders: list[str] = []
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if d not in _TEMPORARY_FOLDERS and not _is_temporary(d)
        )
        for d in dirnames:
            if (here / d).is_symlink():
                raise InputError(
                    f"{here / d} is a link to a folder; a package cannot hold links",
                    "copy the folder into the model folder",
                )
            folders.append((here / d).relative_to(folder).as_posix() + "/")
        for f in sorted(filenames):
            path = here / f
            if _is_temporary(f) or path.suffix.lower() == ".dlpk":
                continue
            if excluded is not None and path.resolve() == excluded:
                continue
            files.append(path.relative_to(folder).as_posix())
    return folders, files


def _check_references(md: ModelDefinition, emd: Path, files: list[str]) -> None:
    """Refuse a package whose emd names model files that will not be inside it."""
    for key in ("ModelFile", "InferenceFunction"):
        value = md.get(key)
        if not isinstance(value, str) or value.startswith(PRO_FUNCTIONS_PREFIX):
            continue
        entry = _packaged_name(value, "")
        if entry is None:
            raise InputError(
                f"{emd.name} names {key} {value!r}, an absolute path that will not be in "
                "the package",
                f"copy the file next to {emd.name} and give its name relative to it",
            )
        if entry not in files:
            raise InputError(
                f"{emd.name} names {key} {value!r}, which is not in {emd.parent}",
                "save the model's files next to its .emd, or fix the name",
            )


def create_dlpk(
    model_folder: str | os.PathLike[str],
    dlpk_path: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Package a model folder as a ``.dlpk``: a flat zip of everything in it.

    Entries are relative to the folder (no top folder), folders included, as arcgis.learn
    writes them. Left out: ``.dlpk`` files (the package itself and stale ones), temporary
    files (``.<name>.partial-*``/``.old-*`` of atomic outputs, ``~`` backups, ``__pycache__``,
    ``.ipynb_checkpoints``). The folder must hold exactly one ``.emd``, at its top, named like
    the package (``<name>.dlpk`` holds ``<name>.emd``, as ArcGIS Pro expects), and the files
    its ``ModelFile`` and ``InferenceFunction`` name (unless the latter is Pro's own).

    Args:
        model_folder: The model folder.
        dlpk_path: The package to write; default ``<model_folder>/<emd name>.dlpk``.
        overwrite: Replace an existing package.

    Returns:
        The package's absolute path.

    Raises:
        InputError: if the folder is missing, does not hold exactly one valid ``.emd`` at its
            top, or lacks a file the emd names.
        ParameterError: if ``dlpk_path`` does not end in ``.dlpk`` or is not named like the emd.
        OutputError: if the package exists and ``overwrite`` is false.
    """
    folder = Path(model_folder)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "not found"
        raise InputError(f"model folder {folder} {what}", "give the folder the model was saved to")
    target = Path(dlpk_path).absolute() if dlpk_path is not None else None
    folders, files = _package_members(folder, target)
    emds = [f for f in files if f.lower().endswith(".emd")]
    if len(emds) != 1:
        found = f"{len(emds)} .emd files ({', '.join(emds)})" if emds else "no .emd file"
        raise InputError(
            f"model folder {folder} holds {found}; a package holds exactly one",
            "save the model to its own folder" if emds else "save the model first",
        )
    emd_name = emds[0]
    if "/" in emd_name:
        raise InputError(
            f"the model definition {emd_name} is in a subfolder of {folder}",
            "package the folder that holds the .emd",
        )
    name = emd_name[:-4]
    if target is None:
        target = (folder / f"{name}.dlpk").absolute()
    elif target.suffix.lower() != ".dlpk":
        raise ParameterError(f"package {target} does not end in .dlpk", f"name it {name}.dlpk")
    elif target.stem != name:
        raise ParameterError(
            f"package {target.name} does not match the model definition {emd_name}: "
            "ArcGIS Pro expects <name>.dlpk to hold <name>.emd",
            f"name the package {name}.dlpk",
        )
    md = ModelDefinition.load(folder / emd_name)
    _check_references(md, folder / emd_name, files)
    with (
        atomic_output(target, overwrite=overwrite) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as zf,
    ):
        for rel in [*folders, *files]:
            stored = Path(rel).suffix.lower() in _STORED_SUFFIXES
            zf.write(folder / rel, rel, zipfile.ZIP_STORED if stored else None)
    return target


def _property_updates(properties: dict[str, Any]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for key, value in properties.items():
        esri_key = _PROPERTY_NAMES.get(key)
        if esri_key is None:
            raise ParameterError(
                f"cannot edit {key!r} of a package", "give " + ", ".join(EDITABLE_PROPERTIES)
            )
        if value is None:
            continue
        if esri_key == "ModelConfiguration" and isinstance(value, str):
            value = _model_configuration(value)
        if esri_key in ("Framework", "ModelConfiguration") and value in ("", {}):
            raise ParameterError(f"{esri_key} cannot be empty", f"give the {esri_key} to set")
        updates[esri_key] = value
    return updates


def _model_configuration(value: str) -> Any:
    if not value.lstrip().startswith("{"):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise ParameterError(
            f"ModelConfiguration {value!r} is not valid JSON: {err.msg}",
            'give a module name or a JSON object such as {"Name": "MyModel"}',
        ) from None


def edit_dlpk(path: str | os.PathLike[str], **properties: Any) -> DlpkInfo:
    """Set properties of the model definition inside a package, rewriting it atomically.

    Only the emd entry changes (its keys keep their order; new keys go last); every other
    entry keeps its name, order, timestamp, attributes, compression and content.

    Args:
        path: The ``.dlpk``.
        **properties: ``framework``, ``model_configuration`` (a module name, a JSON object
            text or a dict ``{Name, Architecture, Config}``), ``description``, ``summary``,
            ``tags`` (a comma-separated string or a list; written comma-separated); the Esri
            key names (``Framework``...) are accepted too. None leaves a property unchanged.

    Returns:
        The package as rewritten.

    Raises:
        ParameterError: if a property is unknown, empty where it cannot be, or of a wrong type,
            or none is given.
        InputError: if the package is missing, corrupted, unsafe, or its emd is invalid.
    """
    updates = _property_updates(properties)
    if not updates:
        raise ParameterError("nothing to edit", "give " + ", ".join(EDITABLE_PROPERTIES))
    package = _existing_package(path)
    # The package is read inside the atomic output: it is closed before the rename replaces it.
    with atomic_output(package, overwrite=True) as tmp, _open_zip(package) as zin:
        entries = _checked_entries(zin, package, None)
        emd_info, _ = _single_emd(entries, package)
        md = _read_emd(zin, emd_info, package)
        for key, value in updates.items():
            md.set(key, value)
        with zipfile.ZipFile(tmp, "w") as zout:
            zout.comment = zin.comment
            for info, _ in entries:
                _copy_entry(zin, zout, info, md.to_json() if info is emd_info else None)
    return inspect_dlpk(package)


def _copy_entry(
    zin: zipfile.ZipFile, zout: zipfile.ZipFile, info: zipfile.ZipInfo, text: str | None
) -> None:
    new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    new.compress_type = info.compress_type
    new.external_attr = info.external_attr
    new.create_system = info.create_system
    new.comment = info.comment
    new.extra = info.extra if not _has_zip64_extra(info.extra) else b""
    if text is not None:
        zout.writestr(new, text.encode("utf-8"))
    elif info.is_dir():
        zout.writestr(new, b"")
    else:
        new.file_size = info.file_size  # lets zipfile choose zip64 for big entries
        with zin.open(info) as src, zout.open(new, "w") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


def _has_zip64_extra(extra: bytes) -> bool:
    """Whether a zip extra field holds a zip64 record (zipfile writes its own)."""
    i = 0
    while i + 4 <= len(extra):
        tag = int.from_bytes(extra[i : i + 2], "little")
        size = int.from_bytes(extra[i + 2 : i + 4], "little")
        if tag == 0x0001:
            return True
        i += 4 + size
    return False
