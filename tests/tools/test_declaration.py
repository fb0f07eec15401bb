"""Tool declarations: read from the signatures, checked against them, listed by the registry."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from rasterlearn.tools.declaration import INPUT, REQUIRED, Parameter, declare
from rasterlearn.tools.registry import TOOL_MODULES, find_tool, tools


def _tool(a: str, b: int = 3, *, flag: bool = False) -> str:
    """Do a thing.

    Returns:
        The thing.
    """
    return a * b


def _declared(**kwargs: object) -> object:
    return declare(
        _tool,
        label="A Tool",
        rest_name="ATool",
        command="a-tool",
        summary="A tool.",
        parameters=[
            Parameter("a", "string", "The text.", INPUT, positional=True),
            Parameter("b", "integer", "Repeats."),
            Parameter("flag", "boolean", "A switch."),
        ],
        report=lambda result: [str(result)],
        **kwargs,
    )


def test_defaults_and_names_come_from_the_signature() -> None:
    tool = _declared()
    assert [p.default for p in tool.parameters] == [REQUIRED, 3, False]
    assert tool.parameter("b").rest_name == "b"
    assert tool.parameter("a").label == "A"
    assert tool.to_json()["parameters"][0]["required"] is True
    assert "    b: Repeats." in inspect.getdoc(_tool)
    assert inspect.getdoc(_tool).index("Args:") < inspect.getdoc(_tool).index("Returns:")


def test_a_parameter_missing_from_the_declaration_is_refused() -> None:
    with pytest.raises(TypeError, match="differ from the signature"):
        declare(
            _tool,
            label="A Tool",
            rest_name="ATool",
            command="a-tool",
            summary="A tool.",
            parameters=[Parameter("a", "string", "The text.")],
            report=list,
        )


def test_a_default_declared_beside_the_signatures_is_refused() -> None:
    with pytest.raises(TypeError, match="the signature has its default"):
        declare(
            _tool,
            label="A Tool",
            rest_name="ATool",
            command="a-tool",
            summary="A tool.",
            parameters=[
                Parameter("a", "string", "The text."),
                Parameter("b", "integer", "Repeats.", default=4),
                Parameter("flag", "boolean", "A switch."),
            ],
            report=list,
        )


def test_every_tool_is_registered_once_with_unique_names() -> None:
    declared = tools()
    assert len(declared) == len(TOOL_MODULES)
    for attribute in ("name", "command", "rest_name"):
        values = [getattr(t, attribute) for t in declared]
        assert len(set(values)) == len(values), attribute
    for tool in declared:
        assert find_tool(tool.rest_name) is tool
        assert all(p.label and p.rest_name and p.help for p in tool.parameters)


def test_declared_model_types_are_the_registry_s() -> None:
    from rasterlearn.models.registry import MODEL_TYPES

    train = find_tool("train_deep_learning_model")
    assert train.parameter("model_type").choices == tuple(MODEL_TYPES)


def test_listing_the_tools_loads_no_deep_learning_framework() -> None:
    code = (
        "import sys; from rasterlearn.tools.registry import tools; tools(); "
        "import rasterlearn.cli; "
        "print(sorted(m for m in ('torch', 'lightning', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
