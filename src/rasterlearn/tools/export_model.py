"""Export a rasterlearn model to ONNX or TorchScript, checked against the PyTorch model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rasterlearn.tools.declaration import INPUT, OUTPUT, Parameter, declare
from rasterlearn.tools.parameters import OVERWRITE

if TYPE_CHECKING:
    from rasterlearn.inference.model_export import ExportedModel

FORMATS = ("onnx", "torchscript")


def export_model(
    in_model_definition: str | Path | dict,
    format: str = "onnx",
    out_folder: str | Path | None = None,
    overwrite: bool = False,
) -> ExportedModel:
    """Export a rasterlearn model to ONNX or TorchScript, checked against the PyTorch model.

    Writes a new model folder (<name>.emd, <name>.onnx or <name>.pt, <name>.dlpk) that every
    inference tool opens like the original.

    Returns:
        The folder written and its files.

    Raises:
        ParameterError: for an unknown format, or JSON text without ``out_folder``.
        InputError: for a model that is not a rasterlearn PyTorch model (missing weights,
            a custom inference function, an already exported model), or when the exported
            model does not reproduce the PyTorch model's predictions.
        OutputError: when the output folder exists and ``overwrite`` is false.
    """
    from rasterlearn.inference.model_export import export_trained_model

    return export_trained_model(in_model_definition, format, out_folder, overwrite)


def _result_lines(result: ExportedModel) -> list[str]:
    return [
        f"Wrote {result.folder}: {result.model_file.name}, {result.emd.name}, "
        f"{result.dlpk.name} (largest difference to the PyTorch model "
        f"{result.max_difference:.2g})"
    ]


TOOL = declare(
    export_model,
    label="Export Deep Learning Model",
    rest_name="ExportDeepLearningModel",
    command="model export",
    summary=(
        "Export a rasterlearn model to ONNX or TorchScript, checked against the PyTorch model."
    ),
    parameters=[
        Parameter(
            "in_model_definition",
            "model",
            "The model to export: an .emd, a .dlpk or a model folder.",
            INPUT,
            label="Model",
            rest_name="model",
            positional=True,
        ),
        Parameter(
            "format",
            "string",
            "Export format (any letter case).",
            label="Format",
            choices=FORMATS,
            flag="--format",
        ),
        Parameter(
            "out_folder",
            "folder",
            "The model folder to write (default <name>_<format> beside the model).",
            OUTPUT,
            label="Output Folder",
            flag="--out",
        ),
        OVERWRITE,
    ],
    report=_result_lines,
)
