"""The ``rasterlearn`` command line: one thin command per tool; user errors -> one line, exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rasterlearn.cli.accuracy import register as _register_accuracy
from rasterlearn.cli.errors import out_console, user_errors
from rasterlearn.cli.inference import register as _register_inference
from rasterlearn.cli.model import model_app
from rasterlearn.cli.nms import register as _register_nms
from rasterlearn.errors import ParameterError
from rasterlearn.export.settings import CROP_MODES, PROCESSING_MODES, REFERENCE_SYSTEMS
from rasterlearn.formats.chip_images import CHIP_IMAGE_FORMATS
from rasterlearn.formats.export_reader import read_export_folder
from rasterlearn.formats.metadata_formats import METADATA_FORMATS
from rasterlearn.tools.export_training_data import export_training_data

app = typer.Typer(
    name="rasterlearn",
    help="Deep learning on geospatial imagery, interoperable with ArcGIS Image Analyst.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _one_of(keywords: Any) -> str:
    return "One of " + ", ".join(keywords) + "."


@app.command("export-training-data")
@user_errors
def export_training_data_cmd(
    in_raster: Annotated[str, typer.Argument(help="Input raster, VRT, URL or folder of rasters.")],
    out_folder: Annotated[Path, typer.Argument(help="Output folder (must be empty or new).")],
    class_data: Annotated[
        str | None,
        typer.Option(
            "--class-data",
            help="Labelled features (polygons; points/lines with --buffer-radius), a classified "
            "raster, or a folder of classified rasters.",
        ),
    ] = None,
    image_chip_format: Annotated[
        str, typer.Option(help=f"Chip image format. {_one_of(CHIP_IMAGE_FORMATS)}")
    ] = "TIFF",
    tile_size_x: Annotated[int, typer.Option(help="Chip width in pixels.")] = 256,
    tile_size_y: Annotated[int, typer.Option(help="Chip height in pixels.")] = 256,
    stride_x: Annotated[int, typer.Option(help="Horizontal step between chips in pixels.")] = 128,
    stride_y: Annotated[int, typer.Option(help="Vertical step between chips in pixels.")] = 128,
    output_nofeature_tiles: Annotated[
        bool,
        typer.Option(
            "--output-nofeature-tiles/--only-tiles-with-features",
            help="Also write chips without labels (ALL_TILES).",
        ),
    ] = False,
    metadata_format: Annotated[
        str, typer.Option(help=f"Label format. {_one_of(METADATA_FORMATS)}")
    ] = "PASCAL_VOC_rectangles",
    class_value_field: Annotated[
        str | None,
        typer.Option(help="Integer class field; default 'value'/'classvalue', else one class."),
    ] = None,
    buffer_radius: Annotated[
        float, typer.Option(help="Buffer around features, in the features' map units.")
    ] = 0.0,
    mask_polygons: Annotated[
        str | None,
        typer.Option("--mask-polygons", help="Only chips completely inside these polygons."),
    ] = None,
    rotation_angle: Annotated[
        float, typer.Option(help="Also write chips rotated by multiples of this angle (degrees).")
    ] = 0.0,
    reference_system: Annotated[
        str, typer.Option(help=f"Image space of the chips. {_one_of(REFERENCE_SYSTEMS)}")
    ] = "MAP_SPACE",
    processing_mode: Annotated[
        str,
        typer.Option(help=f"For folders: one mosaic, or item by item. {_one_of(PROCESSING_MODES)}"),
    ] = "PROCESS_AS_MOSAICKED_IMAGE",
    blacken_around_feature: Annotated[
        bool, typer.Option(help="Labeled_Tiles: zero the pixels outside the feature.")
    ] = False,
    crop_mode: Annotated[
        str,
        typer.Option(help=f"Labeled_Tiles/Imagenet: chip size. {_one_of(CROP_MODES)}"),
    ] = "FIXED_SIZE",
    min_polygon_overlap_ratio: Annotated[
        float, typer.Option(help="Drop features with less than this fraction inside a chip.")
    ] = 0.0,
    extent: Annotated[
        tuple[float, float, float, float] | None,
        typer.Option(help="Processing extent XMIN YMIN XMAX YMAX in the raster's coordinates."),
    ] = None,
    cell_size: Annotated[
        float | None, typer.Option(help="Resample the raster to this cell size (map units).")
    ] = None,
    max_nodata_fraction: Annotated[
        float, typer.Option(help="Skip chips with a larger fraction of nodata pixels.")
    ] = 1.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    num_workers: Annotated[
        int | None, typer.Option(help="Threads to use (default: every core).")
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(help="Run on a local Dask cluster of N worker processes: local:N."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Run on a running Dask cluster: its scheduler's tcp://HOST:PORT. Its workers "
            "must reach the input and the output folder."
        ),
    ] = None,
) -> None:
    """Export Training Data For Deep Learning: image chips and labels in ArcGIS's layout."""
    result = export_training_data(
        in_raster,
        out_folder,
        in_class_data=class_data,
        image_chip_format=image_chip_format,
        tile_size_x=tile_size_x,
        tile_size_y=tile_size_y,
        stride_x=stride_x,
        stride_y=stride_y,
        output_nofeature_tiles=output_nofeature_tiles,
        metadata_format=metadata_format,
        class_value_field=class_value_field,
        buffer_radius=buffer_radius,
        in_mask_polygons=mask_polygons,
        rotation_angle=rotation_angle,
        reference_system=reference_system,
        processing_mode=processing_mode,
        blacken_around_feature=blacken_around_feature,
        crop_mode=crop_mode,
        min_polygon_overlap_ratio=min_polygon_overlap_ratio,
        extent=extent,
        cell_size=cell_size,
        max_nodata_fraction=max_nodata_fraction,
        overwrite=overwrite,
        num_workers=num_workers,
        cluster=cluster,
        scheduler=scheduler,
    )
    out_console.print(
        f"Wrote {result.num_chips} {result.metadata_format} chips"
        + (f" with {result.num_features} features" if result.num_features else "")
        + f" to {result.out_folder}",
        highlight=False,
    )


@app.command("export-info")
@user_errors
def export_info_cmd(
    folder: Annotated[Path, typer.Argument(help="A training-data folder (ours or ArcGIS Pro's).")],
) -> None:
    """Describe a training-data folder: format, chip size, classes and label counts."""
    export = read_export_folder(folder)
    out_console.print(
        f"{export.path}: {export.metadata_format}, {len(export.chips)} chips of "
        f"{export.band_count} x {export.tile_height} x {export.tile_width}, {export.image_space}",
        highlight=False,
    )
    chips = export.chips_per_class()
    objects = export.objects_per_class()
    for c in export.classes:
        line = f"  class {c.value} {c.name}: {chips.get(c.value, 0)} chips"
        if objects:
            line += f", {objects.get(c.value, 0)} objects"
        out_console.print(line, highlight=False)
    if export.dropped_chips or export.dropped_objects:
        out_console.print(
            f"  left out: {export.dropped_chips} chips without labels, "
            f"{export.dropped_objects} objects of unknown classes",
            highlight=False,
        )


@app.command("train")
@user_errors
def train_cmd(
    folders: Annotated[
        list[Path],
        typer.Argument(help="IN_FOLDER... OUT_FOLDER: export folder(s), then the model folder."),
    ],
    max_epochs: Annotated[int, typer.Option(help="Epochs to train at most.")] = 20,
    model_type: Annotated[
        str | None,
        typer.Option(
            help="UNET, DEEPLAB, FCOS, RETINANET, FASTERRCNN, MASKRCNN or FEATURE_CLASSIFIER; "
            "default the first that fits the data."
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Chips per batch; default the model type's.")
    ] = None,
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", help="Model argument NAME=VALUE (repeatable)."),
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Peak learning rate; default: found by a range test.")
    ] = None,
    backbone_model: Annotated[
        str | None,
        typer.Option(help="RESNET18/34/50/101, MOBILENET_V3_LARGE/SMALL; default per model."),
    ] = None,
    pretrained_model: Annotated[
        str | None, typer.Option(help="An .emd or .dlpk of ours to fine-tune.")
    ] = None,
    validation_percentage: Annotated[
        float, typer.Option(help="Percentage of chips held out for validation.")
    ] = 10,
    stop_training: Annotated[
        bool,
        typer.Option(
            "--stop-training/--continue-training", help="Stop when the model stops improving."
        ),
    ] = True,
    freeze: Annotated[
        bool, typer.Option("--freeze/--unfreeze", help="Keep a pretrained backbone frozen.")
    ] = True,
    augmentation: Annotated[str, typer.Option(help="DEFAULT, NONE or CUSTOM.")] = "DEFAULT",
    augmentation_parameter: Annotated[
        list[str] | None,
        typer.Option(
            "--augmentation-parameter",
            help="With --augmentation CUSTOM: a transform NAME=VALUE (repeatable), e.g. "
            "'rotate=30.0;0.5', 'zoom=(1.0,1.2);1.0', 'brightness=(0.4,0.6);1.0', "
            "'contrast=(0.75,1.5);1.0', 'crop=224;1.0', 'flip_lr=0.5', 'dihedral=1.0'.",
        ),
    ] = None,
    chip_size: Annotated[
        int | None, typer.Option(help="Training chip size; default the tile size.")
    ] = None,
    weight_init_scheme: Annotated[
        str | None, typer.Option(help="RANDOM, RED_BAND or ALL_RANDOM for bands beyond RGB.")
    ] = None,
    monitor: Annotated[
        str,
        typer.Option(help="VALID_LOSS, AVERAGE_PRECISION, ACCURACY, F1_SCORE, MIOU, DICE, ..."),
    ] = "VALID_LOSS",
    pretrained_backbone: Annotated[
        str | None,
        typer.Option(help="ImageNet backbone weights: a file, or 'torch-cache'."),
    ] = None,
    devices: Annotated[
        str | None, typer.Option(help="Lightning devices (number of GPUs); default all/1 CPU.")
    ] = None,
    num_nodes: Annotated[int, typer.Option(help="Machines for DDP training.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model folder.")] = False,
) -> None:
    """Train Deep Learning Model: a model folder (.emd, .pth, .dlpk, metrics) from exports."""
    from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model

    if len(folders) < 2:
        raise ParameterError("give one or more export folders and then the model folder")
    arguments = {}
    for item in arg or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(
                f"model argument '{item}' is not NAME=VALUE", "e.g. --arg mixup=True"
            )
        arguments[name.strip()] = value.strip()
    result = train_deep_learning_model(
        [str(f) for f in folders[:-1]],
        folders[-1],
        max_epochs=max_epochs,
        model_type=model_type,
        batch_size=batch_size,
        arguments=arguments,
        learning_rate=learning_rate,
        backbone_model=backbone_model,
        pretrained_model=pretrained_model,
        validation_percentage=validation_percentage,
        stop_training=stop_training,
        freeze=freeze,
        augmentation=augmentation,
        augmentation_parameters=augmentation_parameter or None,
        chip_size=chip_size,
        weight_init_scheme=weight_init_scheme,
        monitor=monitor,
        pretrained_backbone=pretrained_backbone,
        devices=int(devices) if devices and devices.isdigit() else devices,
        num_nodes=num_nodes,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        progress=None,
    )
    if result is None:  # another process of a distributed run: rank 0 reports
        return
    shown = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    out_console.print(
        f"Trained {result.model_type} for {result.epochs} epochs (learning rate "
        f"{result.learning_rate:.2e}): {shown}\nModel: {result.emd}\nPackage: {result.dlpk}",
        highlight=False,
    )


app.add_typer(model_app, name="model", help="Inspect, package and edit models (.emd / .dlpk).")


@app.command("demo")
@user_errors
def demo_cmd(
    out_folder: Annotated[Path, typer.Argument(help="Folder for the demo outputs.")] = Path(
        "demo-output"
    ),
    overwrite: Annotated[bool, typer.Option(help="Replace earlier demo outputs.")] = True,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Fewer epochs and smaller chips: checks the pipeline in about a minute."
        ),
    ] = False,
) -> None:
    """Run the workflow on the bundled NEON sample: export, train FCOS and UNET, detect and
    classify a held-out part, score it, and write report.html."""

    from rasterlearn.demo.run import run_demo

    for line in run_demo(out_folder, overwrite=overwrite, quick=quick):
        out_console.print(line, highlight=False, soft_wrap=True)


_register_inference(app)

_register_nms(app)

_register_accuracy(app)


def main() -> None:
    """Entry point of the ``rasterlearn`` script."""
    # Idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads take
    # the cores from the working ones (training ran 3-4x slower on 2 loaded cores). Torch
    # reads it when it loads, which every command does lazily; an explicit setting is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app(prog_name="rasterlearn")


if __name__ == "__main__":
    sys.exit(main())
