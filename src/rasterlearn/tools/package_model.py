"""Package a model folder as a .dlpk: a flat zip of the folder holding exactly one .emd.

A rasterlearn model folder written before its packages ran in ArcGIS Pro (no
``RasterlearnFunction.py``) is packaged from a copy that gets the Pro raster function and the
TorchScript copy of the model (:mod:`rasterlearn.inference.pro_package`); the folder itself is
left as it is.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rasterlearn.formats.dlpk import create_dlpk, inspect_dlpk
from rasterlearn.formats.emd import (
    RASTERLEARN_FUNCTION_FILE,
    ModelDefinition,
    is_rasterlearn_model,
)
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
    folder = Path(model_folder)
    emds = sorted(folder.glob("*.emd")) if folder.is_dir() else []
    if len(emds) != 1 or not _lacks_pro_function(emds[0]):
        return create_dlpk(folder, out, overwrite=overwrite)
    from rasterlearn.inference.pro_package import add_pro_function

    target = Path(out) if out is not None else folder / f"{emds[0].stem}.dlpk"
    with tempfile.TemporaryDirectory(prefix="rasterlearn-package-") as tmp:
        staged = Path(tmp) / folder.name
        shutil.copytree(folder, staged, ignore=shutil.ignore_patterns("*.dlpk"))
        add_pro_function(staged / emds[0].name)
        return create_dlpk(staged, target.absolute(), overwrite=overwrite)


def _lacks_pro_function(emd: Path) -> bool:
    """A rasterlearn model whose folder lacks the ArcGIS Pro raster function."""
    definition = ModelDefinition.load(emd)
    function = definition.get("InferenceFunction")
    has_it = function == RASTERLEARN_FUNCTION_FILE and (emd.parent / function).is_file()
    return is_rasterlearn_model(definition) and not has_it


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
