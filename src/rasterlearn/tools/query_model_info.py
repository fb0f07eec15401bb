"""Query Deep Learning Model Info: what a model is, what it needs and what it offers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterlearn.errors import RasterLearnError
from rasterlearn.formats.dlpk import DlpkInfo, inspect_dlpk
from rasterlearn.formats.emd import (
    ARCGIS_LEARN_FRAMEWORK,
    PRO_FUNCTIONS_PREFIX,
    ModelConfigurationSpec,
    ModelDefinition,
    is_rasterlearn_model,
)
from rasterlearn.formats.model_source import load_model_definition
from rasterlearn.tools.declaration import INPUT, Parameter, declare


@dataclass(frozen=True)
class ModelReport:
    """A model described.

    Attributes:
        definition: The model definition (.emd).
        package: The package's entries, when the model is a .dlpk.
        lines: The description, line by line, as ``model info`` prints it.
    """

    definition: ModelDefinition
    package: DlpkInfo | None
    lines: list[str]


def query_model_info(model: str) -> ModelReport:
    """Describe a model: type, name, framework, classes, tile size, bands, metrics, files and
    the inference arguments it takes.

    Raises:
        RasterLearnError: for a model that cannot be read.
    """
    package = None
    if not model.lstrip().startswith("{") and Path(model).suffix.lower() == ".dlpk":
        package = inspect_dlpk(model)
        md = package.model_definition
    else:
        md = load_model_definition(model)
    return ModelReport(md, package, _describe(md, package) + _inference_arguments(md))


def byte_size(num_bytes: int) -> str:
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
            state = byte_size(path.stat().st_size) if path and path.is_file() else "missing"
        lines.append(f"  {key} {value} ({state})")
    if package is not None:
        lines.append(f"package: {len(package.entries)} entries, {byte_size(package.size)}")
        lines.extend(f"  {e.name} ({byte_size(e.size)})" for e in package.entries if not e.is_dir)
        if not package.name_matches:
            lines.append(
                f"  note: ArcGIS Pro expects {package.path.stem}.emd at the top of the package"
            )
    return lines


def _inference_arguments(md: ModelDefinition) -> list[str]:
    """The model arguments the inference tools take for this model, with their defaults."""
    from rasterlearn.inference.predictors import model_info

    function = str(md.get("InferenceFunction") or "")
    custom = function.lower().endswith(".py") and not function.startswith("[Functions]")
    # rasterlearn runs its own and arcgis.learn's models itself, not through their function
    arcgis_learn = str(md.get("Framework") or "").strip() == ARCGIS_LEARN_FRAMEWORK
    if custom and not is_rasterlearn_model(md) and not arcgis_learn:
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


def _result_lines(report: ModelReport) -> list[str]:
    return report.lines


TOOL = declare(
    query_model_info,
    label="Query Deep Learning Model Info",
    rest_name="QueryDeepLearningModelInfo",
    command="model info",
    summary=(
        "Describe a model: type, name, framework, classes, tile size, bands, metrics and files."
    ),
    parameters=[
        Parameter(
            "model",
            "model",
            "An .emd, a .dlpk, a model folder, or the emd's JSON text.",
            INPUT,
            label="Model",
            positional=True,
        )
    ],
    report=_result_lines,
)
