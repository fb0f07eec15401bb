"""``rasterlearn nms``: the Non Maximum Suppression tool on the command line.

``cli.py`` calls :func:`register` on its app. This module does not import ``cli.py`` when it
is imported (that would be circular): the CLI's ``user_errors`` is imported when the command
runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``nms`` command to ``app``."""
    app.command("nms")(nms_cmd)


def nms_cmd(
    in_features: Annotated[str, typer.Argument(help="Polygon features, e.g. detections.")],
    out_features: Annotated[
        Path, typer.Argument(help="Output features; the format follows the extension (.gpkg).")
    ],
    confidence_score_field: Annotated[
        str, typer.Option(help="Numeric field with each feature's confidence.")
    ] = "Confidence",
    class_value_field: Annotated[
        str | None,
        typer.Option(
            help="Class field (numbers or names): classes never suppress each other. "
            "Default Classvalue or Value when present, else one class."
        ),
    ] = None,
    max_overlap_ratio: Annotated[
        float,
        typer.Option(
            help="Remove the less confident of two features overlapping by more "
            "than this IoU (0 to 1; 0: any overlap)."
        ),
    ] = 0.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Non Maximum Suppression: keep the most confident of overlapping polygons."""
    from rasterlearn.cli.errors import err_console, out_console, user_errors
    from rasterlearn.tools.non_maximum_suppression import run_non_maximum_suppression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = user_errors(run_non_maximum_suppression)(
            in_features,
            confidence_score_field,
            out_features,
            class_value_field=class_value_field,
            max_overlap_ratio=max_overlap_ratio,
            overwrite=overwrite,
        )
    for warning in caught:
        err_console.print(f"warning: {warning.message}", highlight=False, soft_wrap=True)
    per_class = f" (per class of '{result.class_field}')" if result.class_field else ""
    out_console.print(
        f"Kept {result.kept} of {result.total} features{per_class}: {result.path}",
        highlight=False,
        soft_wrap=True,
    )
