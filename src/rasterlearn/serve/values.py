"""A job's parameter values: from what a client sent to what the tool function takes.

Both REST shapes go through :func:`normalize` before a job is queued (every value checked by
its declared type, input paths resolved inside the data directory, outputs reduced to names);
the job process turns the stored values into the tool's arguments with :func:`python_values`,
as the command line does (``NAME=VALUE`` pairs a dict, lists lists, paths :class:`Path`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.services import is_image_service, split_options
from rasterlearn.geo.stac import is_stac_input, stac_local_files
from rasterlearn.geo.vrt import vrt_source_files
from rasterlearn.serve.data import DataDir
from rasterlearn.tools.declaration import INPUT, OUTPUT, Parameter, Tool

SERVICE_PARAMETERS = ("cluster", "scheduler")
"""Parameters the service sets (from ``--cluster``/``--scheduler``), never a client."""

URL = re.compile(r"^(https?|s3|gs)://", re.I)
"""Raster inputs given as URLs (read remotely by GDAL, range requests)."""
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_PATH_TYPES = ("raster", "features", "model", "file", "folder")


def client_parameters(tool: Tool) -> list[Parameter]:
    """The parameters a client gives (all but the service's own)."""
    return [p for p in tool.parameters if p.name not in SERVICE_PARAMETERS]


def default_output_name(p: Parameter) -> str:
    """An output's name when the client gives none: its name and the first extension its
    help mentions (``out_classified_raster.tif``)."""
    found = re.search(r"\((\.\w+)", p.help)
    return p.name + (found[1] if found and p.type == "file" else "")


def normalize(
    tool: Tool, given: dict[str, Any], data: DataDir, owner: str, rest_names: bool = False
) -> dict[str, Any]:
    """The client's values checked and made JSON, by Python name.

    Args:
        given: Values by Python name (or by REST name with ``rest_names``), as JSON values or,
            from HTML forms and ArcGIS clients, as strings.

    Raises:
        ParameterError: an unknown parameter, a missing required one, a value of the wrong
            type or not among the choices, a path outside the data directory.
        InputError: an input that does not exist.
    """
    params = client_parameters(tool)
    by_name = {(p.rest_name if rest_names else p.name): p for p in params}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise ParameterError(
            f"{tool.name} has no parameter {unknown[0]!r}",
            "its parameters are " + ", ".join(by_name),
        )
    values: dict[str, Any] = {}
    for key, p in by_name.items():
        value = given.get(key)
        if value is None or value == "" or value == []:
            if p.role == OUTPUT and p.required:
                values[p.name] = default_output_name(p)
            elif p.required:
                raise ParameterError(f"{key} is required", f"give {key}: {p.help}")
            continue
        values[p.name] = _normalize_value(p, key, value, data, owner)
    return values


def _normalize_value(p: Parameter, key: str, value: Any, data: DataDir, owner: str) -> Any:
    if p.role == OUTPUT:
        return _output_name(key, value)
    if (p.type in _PATH_TYPES and p.role == INPUT) or p.type == "folder_list":
        items = _as_list(key, value) if p.type == "folder_list" else [value]
        resolved = [_input_path(p, key, v, data, owner) for v in items]
        return resolved if p.type == "folder_list" else resolved[0]
    converted = _convert(p, key, value)
    if p.choices:  # in any letter case, as the tools take them
        matches = [c for c in p.choices if c.lower() == str(converted).lower()]
        if not matches:
            raise ParameterError(
                f"{key} {converted!r} is not one of the choices",
                "one of " + ", ".join(p.choices),
            )
        converted = matches[0]
    return converted


def _bad(key: str, value: Any, what: str) -> ParameterError:
    return ParameterError(f"{key} {value!r} is not {what}", f"give {key} as {what}")


def _convert(p: Parameter, key: str, value: Any) -> Any:
    kind = p.type
    try:
        if kind == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        raise _bad(key, value, "an integer" if kind == "integer" else "a number") from None
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in _TRUE + _FALSE:
            return str(value).strip().lower() in _TRUE
        raise _bad(key, value, "true or false")
    if kind == "extent":
        return _extent(key, value)
    if kind == "key_values":
        return _key_values(key, value)
    if kind == "string_list":
        return [str(v) for v in _as_list(key, value)]
    if isinstance(value, (dict, list)):
        if p.type == "model":
            return json.dumps(value)
        raise _bad(key, value, "a string")
    return str(value)


def _parsed(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _as_list(key: str, value: Any) -> list[Any]:
    value = _parsed(value)
    if isinstance(value, list):
        return value
    if isinstance(value, (str, dict)):
        return [value]
    raise _bad(key, value, "a list")


def _extent(key: str, value: Any) -> list[float]:
    value = _parsed(value)
    if isinstance(value, dict):
        value = [value.get(k) for k in ("xmin", "ymin", "xmax", "ymax")]
    elif isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 4:
        raise _bad(key, value, "an extent [xmin, ymin, xmax, ymax]")
    return numbers


def _key_values(key: str, value: Any) -> dict[str, str]:
    value = _parsed(value)
    if isinstance(value, str):
        pairs = [item.partition("=") for item in re.split(r"[;\n]", value) if item.strip()]
        if any(not sep or not name.strip() for name, sep, _ in pairs):
            raise _bad(key, value, "a JSON object or NAME=VALUE pairs")
        value = {name.strip(): v.strip() for name, _, v in pairs}
    if not isinstance(value, dict):
        raise _bad(key, value, "a JSON object")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _output_name(key: str, value: Any) -> str:
    value = _parsed(value)
    if isinstance(value, dict):
        value = value.get("name") or (value.get("serviceProperties") or {}).get("name")
    name = Path(str(value or "")).name
    if not name or name in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._ -]+", name):
        raise _bad(key, value, "a file or folder name (letters, digits, . _ -)")
    return name


def _input_path(p: Parameter, key: str, value: Any, data: DataDir, owner: str) -> str:
    value = _parsed(value)
    if isinstance(value, dict):
        item = value.get("itemID") or value.get("itemId") or value.get("item")
        if item:
            return str(data.upload(owner, str(item)))
        if p.type == "model" and ("ModelConfiguration" in value or "Framework" in value):
            return json.dumps(value)
        value = value.get("url") or value.get("uri") or value.get("path") or ""
    text = str(value).strip()
    if p.type == "model" and text.startswith("{"):
        return text  # the emd's JSON text
    if text.startswith("item:"):
        return str(data.upload(owner, text.removeprefix("item:")))
    if p.type == "raster" and is_image_service(text):
        if "cache" in split_options(text)[1]:
            raise ParameterError(
                f"{key}: an image service's tile cache is the job service's own",
                "leave out #cache=",
            )
        return text
    if p.type == "raster" and URL.match(text):
        return text
    options = ""
    if p.type == "raster" and is_stac_input(text.partition("#")[0]):
        text, sep, fragment = text.partition("#")  # a STAC file's #bands=
        options = sep + fragment
    path = data.resolve(text, owner)
    if not path.exists():
        raise InputError(f"{key} {text!r} does not exist", "upload it or check the path")
    if p.type == "raster":
        for reference in referenced_files(path):
            try:
                data.resolve(str(reference), owner)
            except ParameterError:
                raise ParameterError(
                    f"{key} {text!r} refers to {reference.name!r}, outside the data you may read",
                    "upload the files it refers to beside it and refer to them by relative paths",
                ) from None
    return str(path) + options


def referenced_files(path: Path) -> list[Path]:
    """The local files a raster input reads besides itself: a STAC file's items and assets, a
    VRT's sources (a job may read only what its caller may)."""
    if is_stac_input(str(path)):
        return stac_local_files(str(path))
    if path.suffix.lower() == ".vrt":
        return vrt_source_files(path)
    return []


def python_values(
    tool: Tool, values: dict[str, Any], staging: Path, service: dict[str, Any]
) -> dict[str, Any]:
    """The tool function's arguments from normalized ``values``: outputs inside ``staging``,
    and the service's own parameters (``cluster``, ``scheduler``) from ``service``."""
    kwargs: dict[str, Any] = {}
    for p in tool.parameters:
        if p.name in SERVICE_PARAMETERS:
            if service.get(p.name) is not None:
                kwargs[p.name] = service[p.name]
            continue
        if p.name not in values:
            continue
        value = values[p.name]
        if p.role == OUTPUT:
            kwargs[p.name] = staging / value
        elif p.type in ("folder", "file"):
            kwargs[p.name] = Path(value)
        elif p.type == "folder_list":
            kwargs[p.name] = [Path(v) for v in value]
        elif p.type == "extent":
            kwargs[p.name] = tuple(value)
        else:
            kwargs[p.name] = value
    return kwargs
