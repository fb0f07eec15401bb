"""The workflow on the bundled NEON sample, as a command: ``rasterlearn demo``."""

from __future__ import annotations

from collections.abc import Iterator

from rasterlearn.demo.run import run_demo
from rasterlearn.tools.declaration import OUTPUT, Parameter, declare


def _result_lines(lines: Iterator[str]) -> Iterator[str]:
    return lines  # the demo reports each step as it finishes


TOOL = declare(
    run_demo,
    name="demo",
    label="Run the Demo",
    rest_name="RunDemo",
    command="demo",
    summary=(
        "Run the workflow on the bundled NEON sample: export, train FCOS and UNET, detect "
        "and classify a held-out part, score it, and write report.html."
    ),
    parameters=[
        Parameter(
            "out_folder",
            "folder",
            "Folder for the demo outputs.",
            OUTPUT,
            label="Output Folder",
            positional=True,
            default="demo-output",
        ),
        Parameter("overwrite", "boolean", "Replace earlier demo outputs.", label="Overwrite"),
        Parameter(
            "quick",
            "boolean",
            "Fewer epochs and smaller chips: checks the pipeline in about a minute.",
            label="Quick",
            off_flag="",
        ),
    ],
    report=_result_lines,
    python_only=("settings",),
)
