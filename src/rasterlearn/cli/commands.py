"""Typer commands built from tool declarations: one flag per declared parameter.

Each command's signature is made from the tool's :class:`~rasterlearn.tools.declaration.Parameter`
list (names, types, defaults, help), so the command line cannot drift from the Python function
it calls. Values are passed through unchanged except where the command line spells them
differently: ``NAME=VALUE`` items become a dict, and a lone ``--flag`` list stays a list.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from rasterio.errors import NotGeoreferencedWarning

from rasterlearn.cli.errors import err_console, out_console, user_errors
from rasterlearn.errors import ParameterError
from rasterlearn.tools.declaration import PYTHON_TYPES, Parameter, Tool

_CLI_TYPES: dict[str, Any] = {
    **PYTHON_TYPES,
    "key_values": list[str],  # repeatable NAME=VALUE
}


def key_values(items: list[str] | None, option: str) -> dict[str, str]:
    """``NAME=VALUE`` items as a dict.

    Raises:
        ParameterError: for an item without ``=`` or without a name.
    """
    values: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(
                f"{option} value '{item}' is not NAME=VALUE", f"e.g. {option} batch_size=8"
            )
        values[name.strip()] = value.strip()
    return values


def _help(p: Parameter) -> str:
    text = p.help
    if p.choices:
        text += " One of " + ", ".join(p.choices) + "."
    return text


def _typer_parameter(p: Parameter) -> inspect.Parameter:
    """The command-line parameter of a declared one, as typer reads it from a signature."""
    kind = _CLI_TYPES[p.type]
    if p.default is None or (p.required and not p.positional):
        kind = kind | None  # an option the tool requires is checked by typer as required
    if p.positional:
        info: Any = typer.Argument(help=_help(p), show_default=not p.required)
    elif p.required:
        info = typer.Option(p.option, help=_help(p))
    elif p.type == "boolean":
        off = f"--no-{p.option.removeprefix('--')}" if p.off_flag is None else p.off_flag
        info = typer.Option(f"{p.option}/{off}" if off else p.option, help=_help(p))
    else:
        info = typer.Option(p.option, help=_help(p), show_default=p.default is not None)
    return inspect.Parameter(
        p.name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[kind, info],
        default=inspect.Parameter.empty if p.required else p.default,
    )


def _python_values(tool: Tool, values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for p in tool.parameters:
        if p.type == "key_values":
            out[p.name] = key_values(values.get(p.name), p.option) or None
        elif p.type in ("string_list", "folder_list") and values.get(p.name) is not None:
            out[p.name] = list(values[p.name]) or None
    return out


def tool_command(tool: Tool) -> Callable[..., None]:
    """A function typer turns into the tool's command: it calls the tool, prints its report,
    and shows warnings as ``warning:`` lines."""

    def command(**values: Any) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            # chips and label rasters carry no georeference on purpose (the package's own
            # filter for it is overridden by the line above)
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            result = tool.function(**_python_values(tool, values))
            lines = tool.report(result)
            if isinstance(lines, Iterator):  # a long run reports as it goes
                for line in lines:
                    out_console.print(line, highlight=False, soft_wrap=True)
                lines = []
        for warning in caught:
            err_console.print(f"warning: {warning.message}", highlight=False, soft_wrap=True)
        for line in lines:
            out_console.print(line, highlight=False, soft_wrap=True)

    command.__name__ = tool.name
    command.__doc__ = tool.summary
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [_typer_parameter(p) for p in tool.parameters]
    )
    return user_errors(command)


def add_tool(app: typer.Typer, tool: Tool, name: str) -> None:
    """Add ``tool`` to ``app`` as the command ``name``."""
    app.command(name, help=tool.summary)(tool_command(tool))
