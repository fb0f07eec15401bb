"""Edit the model definition inside a .dlpk; the package's other files stay unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rasterlearn.formats.dlpk import DlpkInfo, edit_dlpk
from rasterlearn.tools.declaration import INPUT, Parameter, declare


@dataclass(frozen=True)
class EditedModel:
    """An edited package and the properties that were set (ArcGIS's key names)."""

    package: DlpkInfo
    changed: tuple[str, ...]


def edit_model(
    dlpk: str | Path,
    framework: str | None = None,
    model_configuration: str | None = None,
    description: str | None = None,
    summary: str | None = None,
    tags: str | None = None,
) -> EditedModel:
    """Set properties of the model definition inside a .dlpk; other files stay unchanged.

    Returns:
        The package as it is now.

    Raises:
        RasterLearnError: for a package that cannot be read or a property that cannot be set.
    """
    changes = {
        "Framework": framework,
        "ModelConfiguration": model_configuration,
        "Description": description,
        "Summary": summary,
        "Tags": tags,
    }
    info = edit_dlpk(dlpk, **changes)
    return EditedModel(info, tuple(k for k, v in changes.items() if v is not None))


def _result_lines(edited: EditedModel) -> list[str]:
    lines = []
    for key in edited.changed:
        shown = edited.package.properties.get(key)
        lines.append(f"{key}: {json.dumps(shown) if isinstance(shown, dict) else shown}")
    return [*lines, f"Updated {edited.package.path}"]


TOOL = declare(
    edit_model,
    label="Edit Deep Learning Model",
    rest_name="EditDeepLearningModel",
    command="model edit",
    summary=("Set properties of the model definition inside a .dlpk; other files stay unchanged."),
    parameters=[
        Parameter(
            "dlpk", "file", "The .dlpk to edit in place.", INPUT, label="Package", positional=True
        ),
        Parameter(
            "framework",
            "string",
            "Python package of the model's inference module.",
            label="Framework",
        ),
        Parameter(
            "model_configuration",
            "string",
            'Module name, or a JSON object such as {"Name": "MyModel"}.',
            label="Model Configuration",
        ),
        Parameter("description", "string", "Description of the model.", label="Description"),
        Parameter("summary", "string", "One-line summary of the model.", label="Summary"),
        Parameter("tags", "string", "Comma-separated tags.", label="Tags"),
    ],
    report=_result_lines,
)
