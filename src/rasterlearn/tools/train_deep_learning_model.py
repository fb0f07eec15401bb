"""Train Deep Learning Model: export folders -> model folder (.emd, .pth, .dlpk, metrics).

This module loads no deep-learning framework when imported; training does, when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rasterlearn.tools.declaration import INPUT, Parameter, declare
from rasterlearn.tools.parameters import OVERWRITE, output
from rasterlearn.training.settings import AUGMENTATIONS, MONITORS, TrainingSettings

if TYPE_CHECKING:
    from rasterlearn.training.model_folder import TrainResult

MODEL_TYPES = (
    "UNET",
    "CHANGEDETECTOR",
    "DEEPLAB",
    "FCOS",
    "RETINANET",
    "FASTERRCNN",
    "MASKRCNN",
    "FEATURE_CLASSIFIER",
)
"""The model types (:data:`rasterlearn.models.registry.MODEL_TYPES`; a test keeps them equal)."""


def train_deep_learning_model(
    in_folder: str | Path | list[str | Path],
    out_folder: str | Path,
    max_epochs: int = 20,
    model_type: str | None = None,
    batch_size: int | None = None,
    arguments: dict[str, Any] | None = None,
    learning_rate: float | None = None,
    backbone_model: str | None = None,
    pretrained_model: str | Path | None = None,
    validation_percentage: float = 10,
    stop_training: bool = True,
    freeze: bool = True,
    augmentation: str = "DEFAULT",
    augmentation_parameters: Mapping[str, Any] | Sequence[Any] | None = None,
    chip_size: int | None = None,
    weight_init_scheme: str | None = None,
    monitor: str | None = None,
    pretrained_backbone: str | Path | None = None,
    devices: int | str | None = None,
    num_nodes: int = 1,
    seed: int = 42,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> TrainResult | None:
    """Train Deep Learning Model: train on export folders and write an ArcGIS model folder.

    Parameters follow ArcGIS's tool (names in snake_case, same defaults).

    Returns:
        What was trained and written (None in the other processes of a distributed run).

    Raises:
        RasterLearnError: for inputs and parameters the user must fix.
    """
    settings = TrainingSettings.from_parameters(
        in_folder,
        out_folder,
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
        augmentation_parameters=augmentation_parameters,
        chip_size=chip_size,
        weight_init_scheme=weight_init_scheme,
        monitor=monitor,
        pretrained_backbone=pretrained_backbone,
        devices=devices,
        num_nodes=num_nodes,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )
    from rasterlearn.training.run import train  # only now: it loads torch and Lightning

    return train(settings)


def _result_lines(result: TrainResult | None) -> list[str]:
    if result is None:  # another process of a distributed run: rank 0 reports
        return []
    shown = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    lines = [
        f"Trained {result.model_type} for {result.epochs} epochs (learning rate "
        f"{result.learning_rate:.2e}): {shown}",
    ]
    choice = result.learning_rate_choice
    if choice is not None and choice.rule != "given":
        lines.append(f"The {choice.describe()}")
    return [
        *lines,
        f"Model: {result.emd}",
        f"Package: {result.dlpk}",
        *(f"warning: {w}" for w in result.warnings),
    ]


TOOL = declare(
    train_deep_learning_model,
    label="Train Deep Learning Model",
    rest_name="TrainDeepLearningModel",
    command="train",
    summary=(
        "Train Deep Learning Model: a model folder (.emd, .pth, .dlpk, metrics) from exports."
    ),
    parameters=[
        Parameter(
            "in_folder",
            "folder_list",
            "Export folder(s): one, or several of the same format and band count.",
            INPUT,
            label="Input Training Data",
            rest_name="inFolder",
            positional=True,
        ),
        output(
            "out_folder",
            "folder",
            "The model folder; its files are named after it.",
            "Output Model",
            "outputModel",
        ),
        Parameter("max_epochs", "integer", "Epochs to train at most.", label="Max Epochs"),
        Parameter(
            "model_type",
            "string",
            "The model to train; default the first that fits the data.",
            label="Model Type",
            choices=MODEL_TYPES,
        ),
        Parameter(
            "batch_size",
            "integer",
            "Chips per batch; default the model type's (capped at the training chips).",
            label="Batch Size",
        ),
        Parameter(
            "arguments",
            "key_values",
            "Model argument NAME=VALUE (repeatable), e.g. mixup=True.",
            label="Model Arguments",
            flag="--arg",
        ),
        Parameter(
            "learning_rate",
            "float",
            "Peak learning rate; default: found by a range test.",
            label="Learning Rate",
        ),
        Parameter(
            "backbone_model",
            "string",
            "RESNET18/34/50/101, MOBILENET_V3_LARGE/SMALL; default per model type.",
            label="Backbone Model",
        ),
        Parameter(
            "pretrained_model",
            "model",
            "An .emd or .dlpk of ours to fine-tune (its type and backbone are used).",
            INPUT,
            label="Pre-trained Model",
        ),
        Parameter(
            "validation_percentage",
            "float",
            "Percentage of chips held out for validation.",
            label="Validation %",
            rest_name="validationPercent",
        ),
        Parameter(
            "stop_training",
            "boolean",
            "Stop when the model stops improving.",
            label="Stop when model stops improving",
            off_flag="--continue-training",
        ),
        Parameter(
            "freeze",
            "boolean",
            "Keep a pretrained backbone frozen (only the heads train).",
            label="Freeze Model",
            rest_name="freezeModel",
            off_flag="--unfreeze",
        ),
        Parameter(
            "augmentation",
            "string",
            "DEFAULT (dihedral flips/rotations in MAP_SPACE, horizontal flip in PIXEL_SPACE, "
            "brightness/contrast), NONE, or CUSTOM (only the transforms of "
            "augmentation_parameters).",
            label="Data Augmentation",
            choices=AUGMENTATIONS,
        ),
        Parameter(
            "augmentation_parameters",
            "string_list",
            "With augmentation CUSTOM: a transform NAME=VALUE (repeatable), e.g. "
            "'rotate=30.0;0.5', 'zoom=(1.0,1.2);1.0', 'brightness=(0.4,0.6);1.0', "
            "'contrast=(0.75,1.5);1.0', 'crop=224;1.0', 'flip_lr=0.5', 'dihedral=1.0'.",
            label="Augmentation Parameters",
            flag="--augmentation-parameter",
        ),
        Parameter(
            "chip_size",
            "integer",
            "Training chip size; default the tile size of the inputs.",
            label="Chip Size",
        ),
        Parameter(
            "weight_init_scheme",
            "string",
            "First-layer weights of bands beyond RGB with pretrained weights; default the "
            "mean of the RGB filters.",
            label="Weight Initialization Scheme",
            choices=("RANDOM", "RED_BAND", "ALL_RANDOM"),
        ),
        Parameter(
            "monitor",
            "string",
            "The metric that picks the best model and stops training; default the model "
            "type's: AVERAGE_PRECISION for detectors, ACCURACY for pixel and chip classifiers.",
            label="Monitor Metric",
            choices=tuple(MONITORS),
        ),
        Parameter(
            "pretrained_backbone",
            "string",
            "ImageNet backbone weights: a file, or 'torch-cache' for the local torch hub cache "
            "(never downloaded).",
            label="Pretrained Backbone Weights",
        ),
        Parameter(
            "devices",
            "string",
            "Lightning devices (number of GPUs, or CPU processes); default all GPUs or 1 CPU.",
            label="Devices",
        ),
        Parameter("num_nodes", "integer", "Machines for DDP training.", label="Nodes"),
        Parameter("seed", "integer", "Random seed.", label="Seed"),
        Parameter(
            "resume",
            "boolean",
            "Continue an interrupted run from its last checkpoint.",
            label="Resume",
        ),
        OVERWRITE,
    ],
    report=_result_lines,
    python_only=("progress",),
)
