"""Every tool, by name: what the command line, ``describe`` and the job service list."""

from __future__ import annotations

import importlib

from rasterlearn.errors import ParameterError
from rasterlearn.tools.declaration import Tool

TOOL_MODULES = (
    "export_training_data",
    "read_export_folder",
    "train_deep_learning_model",
    "classify_pixels",
    "detect_change",
    "detect_objects",
    "classify_objects",
    "non_maximum_suppression",
    "compute_accuracy_for_object_detection",
    "compute_pixel_accuracy",
    "compute_change",
    "query_model_info",
    "package_model",
    "edit_model",
    "export_model",
    "demo",
)
"""The modules of :mod:`rasterlearn.tools` that declare a tool, in the order tools are listed."""


def tools() -> list[Tool]:
    """Every declared tool (importing a tool module loads no deep-learning framework)."""
    return [importlib.import_module(f"rasterlearn.tools.{m}").TOOL for m in TOOL_MODULES]


def find_tool(name: str) -> Tool:
    """The tool called ``name``: its Python name, its command or its ArcGIS REST task name.

    Raises:
        ParameterError: for an unknown name.
    """
    wanted = name.strip().lower().replace("-", "_").replace(" ", "_")
    for tool in tools():
        names = (tool.name, tool.command.replace(" ", "_").replace("-", "_"), tool.rest_name)
        if wanted in (n.lower() for n in names):
            return tool
    raise ParameterError(
        f"there is no tool called {name!r}",
        "give one of " + ", ".join(t.name for t in tools()),
    )
