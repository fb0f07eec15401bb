"""``rasterlearn classify-pixels | detect-objects | classify-objects``: the inference tools.

``cli.py`` calls :func:`register`. Each command maps its options one to one onto the Python
function of the same name in :mod:`rasterlearn.inference`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rasterlearn.cli.errors import out_console, user_errors
from rasterlearn.errors import ParameterError

PROCESSING_MODE_HELP = "PROCESS_AS_MOSAICKED_IMAGE or PROCESS_ITEMS_SEPARATELY (a folder)."

Model = Annotated[str, typer.Option("--model", help="Model: .emd file, .dlpk or JSON text.")]
Args = Annotated[
    list[str] | None,
    typer.Option("--arg", help="Model argument NAME=VALUE (repeatable); see 'model info'."),
]
Mode = Annotated[str, typer.Option(help=PROCESSING_MODE_HELP)]
ExtentOpt = Annotated[
    tuple[float, float, float, float] | None,
    typer.Option(
        help="Processing extent XMIN YMIN XMAX YMAX in the raster's CRS.", show_default=False
    ),
]
MaskOpt = Annotated[str | None, typer.Option(help="Polygons outside which nothing is processed.")]
CellSize = Annotated[float | None, typer.Option(help="Process at this cell size (map units).")]
Device = Annotated[
    str | None, typer.Option(help="cpu, cuda or cuda:N; default the GPU when there is one.")
]
Workers = Annotated[
    int | None,
    typer.Option(help="CPU cores to use, each on its own batch (default: every core)."),
]
Cluster = Annotated[
    str | None, typer.Option(help="Run on a local Dask cluster of N worker processes: local:N.")
]
Scheduler = Annotated[
    str | None,
    typer.Option(help="Run on a running Dask cluster: its scheduler's tcp://HOST:PORT."),
]
Overwrite = Annotated[bool, typer.Option(help="Replace existing outputs.")]


def key_values(items: list[str] | None, example: str) -> dict[str, str]:
    """``NAME=VALUE`` items as a dict.

    Raises:
        ParameterError: for an item without ``=``.
    """
    values: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"model argument '{item}' is not NAME=VALUE", f"e.g. {example}")
        values[name.strip()] = value.strip()
    return values


def classify_pixels_cmd(
    in_raster: Annotated[str, typer.Argument(help="Input raster, VRT, URL or folder.")],
    out_classified_raster: Annotated[Path, typer.Argument(help="Output classified GeoTIFF.")],
    model: Model,
    arg: Args = None,
    processing_mode: Mode = "PROCESS_AS_MOSAICKED_IMAGE",
    out_classified_folder: Annotated[
        Path | None, typer.Option(help="Output folder for PROCESS_ITEMS_SEPARATELY.")
    ] = None,
    processing_extent: ExtentOpt = None,
    mask: MaskOpt = None,
    cell_size: CellSize = None,
    cog: Annotated[bool, typer.Option(help="Write a Cloud-Optimized GeoTIFF.")] = False,
    device: Device = None,
    num_workers: Workers = None,
    cluster: Cluster = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
) -> None:
    """Classify Pixels Using Deep Learning: a classified raster of the model's class values."""
    from rasterlearn.tools.classify_pixels import classify_pixels

    written = classify_pixels(
        in_raster,
        out_classified_raster,
        model,
        arguments=key_values(arg, "--arg padding=64"),
        processing_mode=processing_mode,
        out_classified_folder=out_classified_folder,
        processing_extent=processing_extent,
        mask=mask,
        cell_size=cell_size,
        cog=cog,
        device=device,
        num_workers=num_workers,
        cluster=cluster,
        scheduler=scheduler,
        overwrite=overwrite,
    )
    for path in written:
        out_console.print(f"Classified raster: {path}", highlight=False)


def detect_objects_cmd(
    in_raster: Annotated[str, typer.Argument(help="Input raster, VRT, URL or folder.")],
    out_detected_objects: Annotated[
        Path, typer.Argument(help="Output features (.gpkg, .shp, .geojson, .fgb, .parquet).")
    ],
    model: Model,
    arg: Args = None,
    run_nms: Annotated[
        bool, typer.Option(help="Also remove detections overlapping more than the ratio.")
    ] = False,
    confidence_score_field: Annotated[str, typer.Option(help="Confidence field.")] = "Confidence",
    class_value_field: Annotated[str, typer.Option(help="Class name field.")] = "Class",
    max_overlap_ratio: Annotated[float, typer.Option(help="IoU limit for --run-nms.")] = 0.0,
    processing_mode: Mode = "PROCESS_AS_MOSAICKED_IMAGE",
    processing_extent: ExtentOpt = None,
    mask: MaskOpt = None,
    cell_size: CellSize = None,
    device: Device = None,
    num_workers: Workers = None,
    cluster: Cluster = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
) -> None:
    """Detect Objects Using Deep Learning: polygons with Class and Confidence (0-100)."""
    from rasterlearn.geo.vector import read_vector
    from rasterlearn.tools.detect_objects import detect_objects

    path = detect_objects(
        in_raster,
        out_detected_objects,
        model,
        arguments=key_values(arg, "--arg threshold=0.3"),
        run_nms=run_nms,
        confidence_score_field=confidence_score_field,
        class_value_field=class_value_field,
        max_overlap_ratio=max_overlap_ratio,
        processing_mode=processing_mode,
        processing_extent=processing_extent,
        mask=mask,
        cell_size=cell_size,
        device=device,
        num_workers=num_workers,
        cluster=cluster,
        scheduler=scheduler,
        overwrite=overwrite,
    )
    count = len(read_vector(path))
    out_console.print(f"Detected {count} objects: {path}", highlight=False)


def classify_objects_cmd(
    in_raster: Annotated[str, typer.Argument(help="Input raster, VRT, URL or folder.")],
    out_feature_class: Annotated[Path, typer.Argument(help="Output features.")],
    model: Model,
    in_features: Annotated[
        str | None, typer.Option(help="Features to classify; default each image is one.")
    ] = None,
    class_label_field: Annotated[str, typer.Option(help="Label field.")] = "ClassLabel",
    processing_mode: Mode = "PROCESS_AS_MOSAICKED_IMAGE",
    arg: Args = None,
    device: Device = None,
    overwrite: Overwrite = False,
) -> None:
    """Classify Objects Using Deep Learning: a label and confidence (0-1) per feature."""
    from rasterlearn.tools.classify_objects import classify_objects

    path = classify_objects(
        in_raster,
        out_feature_class,
        model,
        in_features=in_features,
        class_label_field=class_label_field,
        processing_mode=processing_mode,
        model_arguments=key_values(arg, "--arg batch_size=8"),
        device=device,
        overwrite=overwrite,
    )
    out_console.print(f"Classified objects: {path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the inference commands to the ``rasterlearn`` app."""
    app.command("classify-pixels")(user_errors(classify_pixels_cmd))
    app.command("detect-objects")(user_errors(detect_objects_cmd))
    app.command("classify-objects")(user_errors(classify_objects_cmd))
