"""A page on local files: ``rasterlearn label IMAGERY`` (and ``rasterlearn review IMAGERY
RESULTS``) serves the folder holding the imagery and its samples (results) as the service's
``files/`` and gives the page's URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlparse

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.reviewed import read_reviewed
from rasterlearn.formats.samples import read_samples
from rasterlearn.serve.values import URL


@dataclass(frozen=True)
class LocalPage:
    """What to serve for a page on local files.

    Attributes:
        files_dir: The folder served as ``files/``.
        params: The page's query parameters (data paths: ``files/scene.tif``).
    """

    files_dir: Path
    params: dict[str, str]

    def url(self, host: str, port: int, page: str) -> str:
        return f"http://{host}:{port}/web/{page}?{urlencode(self.params)}"


def label_page(imagery: str, samples: Path | None) -> LocalPage:
    """The label page on ``imagery`` (a file or a URL) and its samples GeoPackage (default
    ``<imagery>_samples.gpkg`` beside it, or in the current folder for a URL).

    Raises:
        InputError: a missing imagery file, or samples that are not a samples layer.
        ParameterError: samples that are not a .gpkg in an existing folder, or that share no
            folder with the imagery but the filesystem's root.
    """
    remote = bool(URL.match(imagery))
    if remote:
        stem = Path(urlparse(imagery).path).stem or "imagery"
        default = Path.cwd() / f"{stem}_samples.gpkg"
    else:
        raster = Path(imagery).resolve()
        if not raster.is_file():
            raise InputError(f"imagery {imagery} does not exist", "check the path")
        default = raster.with_name(f"{raster.stem}_samples.gpkg")
    target = (samples or default).absolute()
    if target.suffix.lower() != ".gpkg":
        raise ParameterError(f"samples {target.name} are not a GeoPackage", "give a .gpkg file")
    if not target.parent.is_dir():
        raise ParameterError(f"the folder of {target} does not exist", "create it first")
    target = target.parent.resolve() / target.name
    read_samples(target)  # refuse a file that is not a samples layer before starting
    folders = [target.parent] if remote else [target.parent, raster.parent]
    files_dir = _files_dir(folders, "put the samples beside the imagery (--samples)")
    raster_value = imagery if remote else _data_path(raster, files_dir)
    return LocalPage(files_dir, {"raster": raster_value, "samples": _data_path(target, files_dir)})


def _files_dir(folders: list[Path], fix: str) -> Path:
    """The folder served as ``files/``: the one holding all ``folders``.

    Raises:
        ParameterError: when they share no folder but the filesystem's root.
    """
    files_dir = Path(os.path.commonpath(folders))
    if files_dir == Path(files_dir.anchor):
        raise ParameterError("the files share no folder but the filesystem's root", fix)
    return files_dir


def _data_path(path: Path, files_dir: Path) -> str:
    return (Path("files") / path.relative_to(files_dir)).as_posix()


RASTER_SUFFIXES = (".tif", ".tiff", ".img", ".vrt", ".jp2", ".png", ".crf")
"""Results shown as a classified raster layer (the others are features to review)."""


def review_page(imagery: str, results: list[Path]) -> LocalPage:
    """The review page on ``imagery`` (a file or a URL) and results: detected or classified
    objects (a GeoPackage, reviewed in place) and/or a classified raster (shown as a layer).

    Raises:
        InputError: missing imagery or results, or a results layer that cannot be read.
        ParameterError: features that are not a GeoPackage, more than one of each kind, or
            files that share no folder but the filesystem's root.
    """
    remote = bool(URL.match(imagery))
    folders = []
    if not remote:
        raster = Path(imagery).resolve()
        if not raster.is_file():
            raise InputError(f"imagery {imagery} does not exist", "check the path")
        folders.append(raster.parent)
    kinds: dict[str, Path] = {}
    for given in results:
        path = given.resolve()
        if not path.exists():
            raise InputError(f"results {given} do not exist", "check the path")
        kind = "classified" if path.suffix.lower() in RASTER_SUFFIXES else "features"
        if kind in kinds:
            raise ParameterError(
                f"{given} and {kinds[kind].name} are both {kind}", "give one of each at most"
            )
        if kind == "features":
            read_reviewed(path)  # refuse what cannot be reviewed before starting
        kinds[kind] = path
        folders.append(path.parent)
    if not kinds:
        raise ParameterError("no results to review", "give detected objects or a raster")
    files_dir = _files_dir(folders, "put the results beside the imagery")
    params = {"raster": imagery if remote else _data_path(raster, files_dir)}
    params.update({kind: _data_path(path, files_dir) for kind, path in kinds.items()})
    return LocalPage(files_dir, params)
