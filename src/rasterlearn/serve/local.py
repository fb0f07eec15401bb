"""A page on local files: ``rasterlearn label IMAGERY`` serves the folder holding the imagery
and its samples as the service's ``files/`` and gives the page's URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlparse

from rasterlearn.errors import InputError, ParameterError
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
    files_dir = Path(os.path.commonpath(folders))
    if files_dir == Path(files_dir.anchor):
        raise ParameterError(
            "the imagery and the samples share no folder but the filesystem's root",
            "put the samples beside the imagery (--samples)",
        )

    def data_path(path: Path) -> str:
        return (Path("files") / path.relative_to(files_dir)).as_posix()

    raster_value = imagery if remote else data_path(raster)
    return LocalPage(files_dir, {"raster": raster_value, "samples": data_path(target)})
