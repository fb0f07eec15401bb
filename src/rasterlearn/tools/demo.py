"""The workflow on the bundled NEON sample, as a command: ``rasterlearn demo``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rasterlearn.tools.declaration import OUTPUT, Parameter, declare


def demo(
    out_folder: str | Path = "demo-output", overwrite: bool = True, quick: bool = False
) -> Iterator[str]:
    """Run the whole workflow on the bundled NEON sample and score it on a held-out part.

    See :func:`rasterlearn.demo.run.run_demo`, which also takes other settings.

    Yields:
        One line per step, saying what was made and where; the headline figures last.
    """
    from rasterlearn.demo.run import run_demo  # its plots load matplotlib: only when it runs

    return run_demo(out_folder, overwrite=overwrite, quick=quick)


def _result_lines(lines: Iterator[str]) -> Iterator[str]:
    return lines  # the demo reports each step as it finishes


TOOL = declare(
    demo,
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
)
