"""``rasterlearn model``: inspect, package and edit models (Esri ``.emd`` and ``.dlpk``).

``cli.py`` registers :data:`model_app` with ``app.add_typer(model_app, name="model")``. This
module does not import ``cli.py`` when it is imported (that would be circular): the CLI's
``user_errors`` is imported when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rasterlearn.cli.errors import user_errors
from rasterlearn.formats.dlpk import DlpkInfo, create_dlpk, edit_dlpk, inspect_dlpk
from rasterlearn.formats.emd import PRO_FUNCTIONS_PREFIX, ModelConfigurationSpec, ModelDefinition
from rasterlearn.formats.model_source import load_model_definition

model_app = typer.Typer(
    help="Inspect, package and edit deep learning models: Esri .emd files and .dlpk packages.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _size(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _configuration(value: Any) -> str:
    if isinstance(value, ModelConfigurationSpec):
        return value.name
    return str(value)


def _describe(md: ModelDefinition, package: DlpkInfo | None) -> list[str]:
    """The lines ``model info`` prints."""
    lines = [f"model: {package.path if package else md.path or '(JSON text)'}"]
    lines.append(f"type: {md.model_type or 'not given'}")
    lines.append(f"name: {md.model_name or 'not given'}")
    framework = md.framework or "not given"
    if md.model_configuration is not None:
        framework += f", configuration {_configuration(md.model_configuration)}"
    lines.append(f"framework: {framework}")
    if md.arcgis_learn_version:
        lines.append(f"arcgis.learn version: {md.arcgis_learn_version}")
    for key in ("Description", "Summary", "Tags"):
        if md.get(key) is not None:
            lines.append(f"{key.lower()}: {md.get(key)}")
    tile = f"{md.image_height} x {md.image_width} px" if md.tile_size else "not given"
    if md.image_space_used:
        tile += f", {md.image_space_used}"
    lines.append(f"tile size: {tile}")
    bands = ", ".join(map(str, md.extract_bands)) if md.extract_bands else "not given"
    lines.append(f"bands: {bands}")
    classes = md.classes or []
    lines.append(f"classes: {len(classes)}")
    for c in classes:
        colour = f" ({', '.join(map(str, c.color))})" if c.color else ""
        lines.append(f"  {c.value} {c.name}{colour}")
    metrics = md.metrics()
    if metrics:
        lines.append("metrics:")
    for key, value in metrics.items():
        if isinstance(value, dict):
            for name, row in value.items():
                if isinstance(row, dict):
                    row = ", ".join(f"{k} {_number(v)}" for k, v in row.items())
                else:
                    row = _number(row)
                lines.append(f"  {key} {name}: {row}")
        else:
            lines.append(f"  {key}: {_number(value)}")
    file_keys = [key for key in ("ModelFile", "InferenceFunction") if md.get(key) is not None]
    if file_keys:
        lines.append("files:")
    for key in file_keys:
        value = md.get(key)
        if str(value).startswith(PRO_FUNCTIONS_PREFIX):
            state = "in ArcGIS Pro"
        elif package is not None:
            state = "missing" if value in package.missing_files else "in the package"
        elif md.base_folder is None:
            state = "not checked"
        else:
            path = md.resolve(key)
            state = _size(path.stat().st_size) if path and path.is_file() else "missing"
        lines.append(f"  {key} {value} ({state})")
    if package is not None:
        lines.append(f"package: {len(package.entries)} entries, {_size(package.size)}")
        lines.extend(f"  {e.name} ({_size(e.size)})" for e in package.entries if not e.is_dir)
        if not package.name_matches:
            lines.append(
                f"  note: ArcGIS Pro expects {package.path.stem}.emd at the top of the package"
            )
    return lines


@model_app.command("info")
@user_errors
def info_cmd(
    model: Annotated[
        str, typer.Argument(help="An .emd, a .dlpk, a model folder, or the emd's JSON text.")
    ],
) -> None:
    """Describe a model: type, name, framework, classes, tile size, bands, metrics and files."""
    package = None
    if not model.lstrip().startswith("{") and Path(model).suffix.lower() == ".dlpk":
        package = inspect_dlpk(model)
        md = package.model_definition
    else:
        md = load_model_definition(model)
    for line in _describe(md, package):
        typer.echo(line)
    for line in _inference_arguments(md):
        typer.echo(line)


def _inference_arguments(md: ModelDefinition) -> list[str]:
    """The model arguments the inference tools take for this model, with their defaults."""
    from rasterlearn.errors import RasterLearnError
    from rasterlearn.inference.predictors import model_info

    function = str(md.get("InferenceFunction") or "")
    if function.lower().endswith(".py") and not function.startswith("[Functions]"):
        return [
            f"inference arguments: declared by the custom inference function {function} "
            "(its getParameterInfo); pass them with --arg NAME=VALUE"
        ]
    try:
        arguments = model_info(md).arguments
    except RasterLearnError:
        return []
    lines = ["inference arguments (--arg NAME=VALUE):"]
    for a in arguments:
        default = str(a.default).lower() if isinstance(a.default, bool) else a.default
        lines.append(f"  {a.name} = {default}  {a.doc}")
    return lines


@model_app.command("package")
@user_errors
def package_cmd(
    model_folder: Annotated[Path, typer.Argument(help="The folder holding <name>.emd.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The package to write (default MODEL_FOLDER/<name>.dlpk)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package.")] = False,
) -> None:
    """Package a model folder as a .dlpk: a flat zip of the folder holding exactly one .emd."""
    path = create_dlpk(model_folder, out, overwrite=overwrite)
    info = inspect_dlpk(path)
    files = sum(not e.is_dir for e in info.entries)
    typer.echo(f"Wrote {path}: {files} files, {_size(info.size)}")


@model_app.command("edit")
@user_errors
def edit_cmd(
    dlpk: Annotated[Path, typer.Argument(help="The .dlpk to edit in place.")],
    framework: Annotated[
        str | None, typer.Option(help="Python package of the model's inference module.")
    ] = None,
    model_configuration: Annotated[
        str | None,
        typer.Option(help='Module name, or a JSON object such as {"Name": "MyModel"}.'),
    ] = None,
    description: Annotated[str | None, typer.Option(help="Description of the model.")] = None,
    summary: Annotated[str | None, typer.Option(help="One-line summary of the model.")] = None,
    tags: Annotated[str | None, typer.Option(help="Comma-separated tags.")] = None,
) -> None:
    """Set properties of the model definition inside a .dlpk; other files stay unchanged."""
    changes = {
        "Framework": framework,
        "ModelConfiguration": model_configuration,
        "Description": description,
        "Summary": summary,
        "Tags": tags,
    }
    info = edit_dlpk(dlpk, **changes)
    for key, value in changes.items():
        if value is not None:
            shown = info.properties.get(key)
            typer.echo(f"{key}: {json.dumps(shown) if isinstance(shown, dict) else shown}")
    typer.echo(f"Updated {info.path}")


@model_app.command("export")
@user_errors
def export_cmd(
    model: Annotated[
        str, typer.Argument(help="The model to export: an .emd, a .dlpk or a model folder.")
    ],
    format: Annotated[
        str, typer.Option("--format", help="Export format: onnx or torchscript.")
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="The model folder to write (default <name>_<format> beside the model)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Export a rasterlearn model to ONNX or TorchScript, checked against the PyTorch model.

    Writes a new model folder (<name>.emd, <name>.onnx or <name>.pt, <name>.dlpk) that every
    inference tool opens like the original.
    """
    from rasterlearn.inference.model_export import export_model

    result = export_model(model, format, out, overwrite=overwrite)
    typer.echo(
        f"Wrote {result.folder}: {result.model_file.name}, {result.emd.name}, {result.dlpk.name} "
        f"(largest difference to the PyTorch model {result.max_difference:.2g})"
    )
