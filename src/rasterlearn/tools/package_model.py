"""Package a model folder as a .dlpk: a flat zip of the folder holding exactly one .emd."""

from __future__ import annotations

from pathlib import Path

from rasterlearn.formats.dlpk import create_dlpk, inspect_dlpk
from rasterlearn.tools.declaration import INPUT, OUTPUT, Parameter, declare
from rasterlearn.tools.parameters import OVERWRITE
from rasterlearn.tools.query_model_info import byte_size


def package_model(
    model_folder: str | Path, out: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Package a model folder as a .dlpk: a flat zip of the folder holding exactly one .emd.

    Returns:
        The package written.

    Raises:
        RasterLearnError: for a folder without exactly one .emd, or an existing package.
    """
    return create_dlpk(model_folder, out, overwrite=overwrite)


def _result_lines(path: Path) -> list[str]:
    info = inspect_dlpk(path)
    files = sum(not e.is_dir for e in info.entries)
    return [f"Wrote {path}: {files} files, {byte_size(info.size)}"]


TOOL = declare(
    package_model,
    label="Package Deep Learning Model",
    rest_name="PackageDeepLearningModel",
    command="model package",
    summary=(
        "Package a model folder as a .dlpk: a flat zip of the folder holding exactly one .emd."
    ),
    parameters=[
        Parameter(
            "model_folder",
            "folder",
            "The folder holding <name>.emd.",
            INPUT,
            label="Model Folder",
            positional=True,
        ),
        Parameter(
            "out",
            "file",
            "The package to write (default MODEL_FOLDER/<name>.dlpk).",
            OUTPUT,
            label="Output Package",
            rest_name="outputPackage",
            flag="--out",
        ),
        OVERWRITE,
    ],
    report=_result_lines,
)
