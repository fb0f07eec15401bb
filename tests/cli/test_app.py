"""The command line is built from the tool declarations and keeps every flag and default.

``cli_contract.json`` holds what users typed before the commands were generated from the
declarations (flags, defaults, switches, repeatable options, positional arguments), taken
from the hand-written commands they replaced.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from rasterlearn.cli import app
from rasterlearn.tools.declaration import REQUIRED, Parameter
from rasterlearn.tools.registry import find_tool, tools

CONTRACT = json.loads((Path(__file__).parent / "cli_contract.json").read_text())
ADDED = {
    "classify-objects": {"--num-workers", "--cluster", "--scheduler", "--cell-size"},
    "export-training-data": {"--in-raster2"},
}
"""Options added since the contract was taken."""

runner = CliRunner()


def _commands() -> dict[str, Any]:
    found = {}

    def walk(cmd: Any, prefix: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])
        else:
            found[" ".join(prefix)] = cmd

    walk(typer.main.get_command(app), [])
    return found


def _surface(param: Any) -> dict[str, Any]:
    argument = type(param).__name__ == "TyperArgument"
    default = param.default
    if isinstance(default, tuple | list):
        default = list(default) or None
    return {
        "kind": "argument" if argument else "option",
        "opts": [] if argument else list(param.opts),
        "secondary_opts": list(getattr(param, "secondary_opts", [])),
        "default": None
        if default is None
        else str(default)
        if isinstance(default, Path)
        else default,
        "required": param.required,
        "multiple": bool(getattr(param, "multiple", False)),
        "nargs": param.nargs,
        "is_flag": bool(getattr(param, "is_flag", False)),
    }


def _usage(surfaces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Positional arguments in their order, then options in any order (sorted)."""
    arguments = [s for s in surfaces if s["kind"] == "argument"]
    options = sorted((s for s in surfaces if s["kind"] == "option"), key=lambda s: s["opts"])
    return arguments + options


COMMANDS = _commands()


@pytest.mark.parametrize("command", sorted(CONTRACT))
def test_every_command_keeps_its_flags_and_defaults(command: str) -> None:
    now = [_surface(p) for p in COMMANDS[command].params]
    added = ADDED.get(command, set())
    kept = [s for s in now if not set(s["opts"]) & added]
    assert _usage(kept) == _usage(CONTRACT[command])


def _expected(p: Parameter) -> dict[str, Any]:
    """The command-line parameter a declared parameter must give."""
    default = None if p.required or p.default is None else p.default
    if isinstance(default, tuple):
        default = list(default)
    boolean = p.type == "boolean"
    off = p.off_flag if p.off_flag is not None else "--no-" + p.option.removeprefix("--")
    return {
        "kind": "argument" if p.positional else "option",
        "opts": [] if p.positional else [p.option],
        "secondary_opts": [off] if boolean and off else [],
        "default": str(default) if isinstance(default, Path) else default,
        "required": p.required,
        "multiple": p.type in ("key_values", "string_list"),
        "nargs": -1 if p.positional and p.type == "folder_list" else 4 if p.type == "extent" else 1,
        "is_flag": boolean,
    }


@pytest.mark.parametrize("tool", tools(), ids=lambda t: t.name)
def test_commands_are_derived_from_the_declarations(tool: Any) -> None:
    command = COMMANDS[tool.command]
    assert [_surface(p) for p in command.params] == [_expected(p) for p in tool.parameters]
    assert command.help.startswith(tool.summary)


@pytest.mark.parametrize("tool", tools(), ids=lambda t: t.name)
def test_help_shows_every_parameter_with_its_default(tool: Any) -> None:
    result = runner.invoke(app, [*tool.command.split(), "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", result.output))
    for p in tool.parameters:
        shown = p.name if p.positional else p.option
        assert shown in text, shown
        if p.positional or p.type == "boolean" or p.default in (None, REQUIRED):
            continue
        default = p.default if not isinstance(p.default, float) else f"{p.default:g}"
        pattern = rf"{re.escape(p.option)}\b.*?\[default: {re.escape(str(default))}"
        assert re.search(pattern, text) or re.search(
            rf"{re.escape(p.option)}\b.*?\[default: {re.escape(str(p.default))}", text
        ), (p.option, p.default)


def test_describe_json_lists_every_parameter() -> None:
    result = runner.invoke(app, ["describe", "detect_objects", "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["rest_name"] == "DetectObjectsUsingDeepLearning"
    params = {p["name"]: p for p in described["parameters"]}
    assert list(params) == [p.name for p in find_tool("detect-objects").parameters]
    assert params["in_raster"]["required"] is True
    assert params["in_raster"]["rest_name"] == "inputRaster"
    assert params["confidence_score_field"]["default"] == "Confidence"
    assert params["max_overlap_ratio"]["type"] == "float"
    assert params["max_overlap_ratio"]["default"] == 0.0
    assert params["processing_mode"]["choices"] == [
        "PROCESS_AS_MOSAICKED_IMAGE",
        "PROCESS_ITEMS_SEPARATELY",
    ]
    assert params["processing_extent"]["schema"]["maxItems"] == 4
    assert params["arguments"]["schema"]["type"] == "object"
    assert params["out_detected_objects"]["role"] == "output"


@pytest.mark.parametrize("name", ["DetectObjectsUsingDeepLearning", "detect-objects", "model info"])
def test_describe_finds_tools_by_every_name(name: str) -> None:
    result = runner.invoke(app, ["describe", name])
    assert result.exit_code == 0, result.output
    assert "in_raster" in result.output or "model" in result.output


def test_describe_an_unknown_tool_says_which_exist() -> None:
    result = runner.invoke(app, ["describe", "detect_everything"])
    assert result.exit_code == 2
    assert "there is no tool called 'detect_everything'" in result.output
    assert "classify_pixels" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["export-training-data", "a.tif", "out", "--tile-size-x", "abc"], "--tile-size-x"),
        (["train", "only-one-folder"], "Missing argument"),
        (["no-such-command"], "No such command"),
        (["detect-objects", "a.tif", "b.gpkg", "--model", "m.emd", "--no-such-flag"], "no-such"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(args: list[str], words: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert words in lines[0] and "--help" in lines[0]
