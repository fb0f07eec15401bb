"""Where a model definition comes from: an ``.emd``, a ``.dlpk``, a model folder or JSON text.

The tools take a model in any of these forms; :func:`load_model_definition` turns each into
a :class:`~rasterlearn.formats.emd.ModelDefinition`, extracting a ``.dlpk`` safely (see
:func:`~rasterlearn.formats.dlpk.open_dlpk`) so that the files it names can be read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rasterlearn.errors import InputError
from rasterlearn.formats.dlpk import open_dlpk
from rasterlearn.formats.emd import ModelDefinition


def load_model_definition(
    source: str | os.PathLike[str] | Mapping[str, Any],
    base_folder: str | os.PathLike[str] | None = None,
) -> ModelDefinition:
    """Read a model definition from any of the forms the tools accept.

    Args:
        source: A path to an ``.emd``; a path to a ``.dlpk`` (extracted safely to a cache
            folder, see :func:`rasterlearn.formats.dlpk.open_dlpk`); a model folder holding
            exactly one ``.emd`` (or, without one, exactly one ``.dlpk``); the emd's JSON
            text; or a mapping of emd keys.
        base_folder: The folder relative file names are resolved against; default: the
            folder of the ``.emd`` (none for JSON text or a mapping).

    Returns:
        The model definition; it remembers its file, folder and package (see
        :meth:`ModelDefinition.resolve`).

    Raises:
        InputError: if the source is missing, a folder without exactly one model, a damaged
            or unsafe package, not JSON, or holds an invalid value (the message names the
            key, what it holds and what is expected).
    """
    if isinstance(source, Mapping) or (isinstance(source, str) and source.lstrip().startswith("{")):
        return ModelDefinition.load(source, base_folder)
    path = Path(source)
    if not path.exists():
        raise InputError(
            f"model {path} not found",
            "give an .emd, a .dlpk, a model folder or the emd's JSON text",
        )
    if path.is_dir():
        path = _model_in_folder(path)
    if path.suffix.lower() == ".dlpk":
        return ModelDefinition.load(open_dlpk(path), base_folder, package=path)
    return ModelDefinition.load(path, base_folder)


def _model_in_folder(folder: Path) -> Path:
    """The single .emd of a model folder (or its single .dlpk when it has no .emd)."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    emds = [p for p in files if p.suffix.lower() == ".emd"]
    if len(emds) == 1:
        return emds[0]
    if len(emds) > 1:
        names = ", ".join(p.name for p in emds)
        raise InputError(
            f"model folder {folder} holds {len(emds)} .emd files ({names}), expected exactly one",
            "give the .emd you mean",
        )
    packages = [p for p in files if p.suffix.lower() == ".dlpk"]
    if len(packages) == 1:
        return packages[0]
    raise InputError(
        f"model folder {folder} holds no .emd file", "give a model folder, an .emd or a .dlpk"
    )
