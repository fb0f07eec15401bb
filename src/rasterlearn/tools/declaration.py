"""Tool declarations: each tool's parameters written once, as data.

A tool module defines its public function (the Python API, with its defaults) and declares it
with :func:`declare`: for each parameter the ArcGIS display and REST names, a type, choices,
help text and whether it is an input, an output or a value. The command line, ``rasterlearn
describe``, the job service and the web forms are all built from these declarations; the
defaults are read from the function's signature, so they exist in one place only.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

INPUT = "input"
OUTPUT = "output"
VALUE = "value"
ROLES = (INPUT, OUTPUT, VALUE)

REQUIRED: Any = inspect.Parameter.empty
"""The default of a parameter that must be given."""

PYTHON_TYPES: dict[str, Any] = {
    "raster": str,  # path, URL, VRT or folder of rasters
    "features": str,  # vector dataset
    "model": str,  # .emd, .dlpk, model folder or the emd's JSON text
    "folder": Path,
    "file": Path,
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "extent": tuple[float, float, float, float],
    "key_values": dict[str, str],
    "string_list": list[str],
    "folder_list": list[Path],
}
"""What each parameter type holds, as a Python type."""

_JSON_SCHEMAS: dict[str, dict[str, Any]] = {
    "raster": {"type": "string"},
    "features": {"type": "string"},
    "model": {"type": "string"},
    "folder": {"type": "string"},
    "file": {"type": "string"},
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "float": {"type": "number"},
    "boolean": {"type": "boolean"},
    "extent": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
    "key_values": {"type": "object", "additionalProperties": {"type": "string"}},
    "string_list": {"type": "array", "items": {"type": "string"}},
    "folder_list": {"type": "array", "items": {"type": "string"}, "minItems": 1},
}


@dataclass(frozen=True)
class Parameter:
    """One parameter of a tool.

    Attributes:
        name: The Python keyword (ArcGIS's name in snake_case).
        type: One of :data:`PYTHON_TYPES`.
        help: One or two sentences for forms and ``--help``.
        role: :data:`INPUT` (a dataset read), :data:`OUTPUT` (a dataset written) or
            :data:`VALUE`.
        label: ArcGIS's display name, e.g. "Input Raster".
        rest_name: The name in ArcGIS's REST API, e.g. ``inputRaster``.
        choices: The keywords the parameter accepts, when it is a choice.
        default: Read from the tool function's signature (:data:`REQUIRED` when it has none).
            Declared only where the signature requires a value because of its place in
            ArcGIS's parameter order, for callers that name parameters (command line,
            service).
        positional: A positional argument on the command line.
        flag: The command-line option, when it is not ``--kebab-name``.
        off_flag: For booleans, the option that turns it off: None gives ``--no-NAME``, ""
            gives none (a plain switch).
    """

    name: str
    type: str
    help: str
    role: str = VALUE
    label: str = ""
    rest_name: str = ""
    choices: tuple[str, ...] = ()
    default: Any = REQUIRED
    positional: bool = False
    flag: str | None = None
    off_flag: str | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def option(self) -> str:
        """The command-line option (or argument name) of the parameter."""
        return self.flag or "--" + self.name.replace("_", "-")

    def to_json(self) -> dict[str, Any]:
        """The declaration as JSON: what ``describe --json`` prints and the service serves."""
        schema = dict(_JSON_SCHEMAS[self.type])
        if self.choices:
            schema["enum"] = list(self.choices)
        entry: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "rest_name": self.rest_name,
            "type": self.type,
            "role": self.role,
            "required": self.required,
            "default": None if self.required else _jsonable(self.default),
            "choices": list(self.choices),
            "help": self.help,
            "schema": schema,
        }
        entry["command_line"] = self.name.upper() if self.positional else self.option
        return entry


@dataclass(frozen=True)
class Tool:
    """A declared tool.

    Attributes:
        name: The Python function's name (``detect_objects``).
        label: ArcGIS's tool name ("Detect Objects Using Deep Learning").
        rest_name: The task name in ArcGIS's raster analysis REST service.
        command: The ``rasterlearn`` command, e.g. ``detect-objects`` or ``model info``.
        summary: One line on what the tool does.
        function: The tool function.
        parameters: The declared parameters, in the function's order.
        report: Turns the function's result into the lines the command prints.
        python_only: Function parameters that only the Python API has (e.g. ``progress``).
    """

    name: str
    label: str
    rest_name: str
    command: str
    summary: str
    function: Callable[..., Any]
    parameters: tuple[Parameter, ...]
    report: Callable[[Any], Iterable[str]] = field(repr=False)
    python_only: tuple[str, ...] = ()

    def parameter(self, name: str) -> Parameter:
        """The parameter called ``name``.

        Raises:
            KeyError: when the tool has no such parameter.
        """
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The tool's declaration as JSON."""
        return {
            "name": self.name,
            "label": self.label,
            "rest_name": self.rest_name,
            "command": self.command,
            "summary": self.summary,
            "parameters": [p.to_json() for p in self.parameters],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(w[:1].upper() + w[1:] for w in rest)


def _title(name: str) -> str:
    words = re.sub(r"^(in|out)_", lambda m: "Input " if m[1] == "in" else "Output ", name)
    return " ".join(w[:1].upper() + w[1:] for w in words.replace("_", " ").split())


def declare(
    function: Callable[..., Any],
    *,
    label: str,
    rest_name: str,
    command: str,
    summary: str,
    parameters: Iterable[Parameter],
    report: Callable[[Any], Iterable[str]],
    python_only: tuple[str, ...] = (),
    name: str | None = None,
) -> Tool:
    """Declare ``function`` as a tool, taking each parameter's default from its signature.

    ``summary`` is the one line the command line and the service show for the tool.

    Every parameter of the signature must be declared (or listed in ``python_only``), in the
    same order, so the function, the command line and the service cannot drift apart. The
    function's docstring gets an ``Args:`` section made from the declared help.

    Raises:
        TypeError: when the declared parameters and the signature differ.
    """
    signature = inspect.signature(function)
    declared = list(parameters)
    names = [n for n in signature.parameters if n not in python_only]
    if [p.name for p in declared] != names:
        raise TypeError(
            f"{function.__name__}: declared parameters {[p.name for p in declared]} "
            f"differ from the signature's {names}"
        )
    filled = []
    for p in declared:
        if p.type not in PYTHON_TYPES or p.role not in ROLES:
            raise TypeError(f"{function.__name__}.{p.name}: unknown type or role")
        default = signature.parameters[p.name].default
        if p.default is not REQUIRED and default is not REQUIRED:
            raise TypeError(f"{function.__name__}.{p.name}: the signature has its default")
        filled.append(
            replace(
                p,
                default=p.default if default is REQUIRED else default,
                label=p.label or _title(p.name),
                rest_name=p.rest_name or _camel(p.name),
            )
        )
    function.__doc__ = _with_arguments(inspect.getdoc(function) or "", filled)
    return Tool(
        name=name or function.__name__,
        label=label,
        rest_name=rest_name,
        command=command,
        summary=summary,
        function=function,
        parameters=tuple(filled),
        report=report,
        python_only=python_only,
    )


def _with_arguments(doc: str, parameters: list[Parameter]) -> str:
    """``doc`` with an ``Args:`` section (before ``Returns:``) from the parameters' help."""
    lines = ["Args:"]
    for p in parameters:
        choices = f" One of {', '.join(p.choices)}." if p.choices else ""
        lines.append(f"    {p.name}: {p.help}{choices}")
    section = "\n".join(lines)
    head, sep, tail = doc.partition("\nReturns:")
    if "\nArgs:" in head:
        return doc
    return f"{head.rstrip()}\n\n{section}\n{sep}{tail}" if sep else f"{doc}\n\n{section}"
