"""The parameters of Train Deep Learning Model as one validated value, before any data or torch.

This module imports no deep-learning framework, so that a bad argument fails at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterlearn.errors import ParameterError
from rasterlearn.outputs import check_output_path

AUGMENTATIONS = ("DEFAULT", "NONE", "CUSTOM")
"""The augmentation keywords."""
MONITORS = {
    "VALID_LOSS": ("valid_loss", "min"),
    "AVERAGE_PRECISION": ("average_precision", "max"),
    "ACCURACY": ("accuracy", "max"),
    "F1_SCORE": ("f1_score", "max"),
    "MIOU": ("miou", "max"),
    "DICE": ("dice", "max"),
    "PRECISION": ("precision", "max"),
    "RECALL": ("recall", "max"),
}
"""ArcGIS monitor keyword -> (metric the training task logs, whether lower or higher is better)."""
TASK_MONITORS = {
    "pixel": "ACCURACY",
    "classification": "ACCURACY",
    "detection": "AVERAGE_PRECISION",
    "instance": "AVERAGE_PRECISION",
}
"""The monitor when none is given: the metric users judge a model of the task by (ArcGIS's
VALID_LOSS kept, for detectors, models whose AP had fallen while their loss still fell)."""


@dataclass(frozen=True)
class TrainingSettings:
    """What to train and where to write it, validated as far as it can be without the data.

    The fields are the tool's parameters (see
    :func:`rasterlearn.tools.train_deep_learning_model.train_deep_learning_model`), normalised:

    Attributes:
        folders: The export folders (at least one).
        out_folder: The model folder, absolute.
        checkpoints: The hidden checkpoints folder beside it, ``.<name>.checkpoints``.
        max_epochs: Epochs to train at most (at least 1).
        model_type: The model type, upper-cased, or None (from the pretrained model or data).
        batch_size: Chips per batch as given, or None (the model type's default).
        arguments: The model arguments (a copy).
        learning_rate: The peak learning rate, or None (a range test finds it).
        backbone_model: The backbone, or None (the pretrained model's, or the default).
        pretrained_model: An ``.emd``/``.dlpk`` to fine-tune, or None.
        validation_percentage: Percentage of chips held out, in [0, 100).
        stop_training: Stop early when the monitored metric stops improving.
        freeze: Keep a pretrained backbone frozen.
        augmentation: ``DEFAULT``, ``NONE`` or ``CUSTOM``.
        augmentation_parameters: The custom transforms (only with ``CUSTOM``), or None.
        chip_size: Training chip size as given, or None (the tile size).
        weight_init_scheme: First-layer init of bands beyond RGB, or None (the RGB mean).
        monitor: A key of :data:`MONITORS`, or None (the task's, :data:`TASK_MONITORS`).
        pretrained_backbone: Backbone weights file, ``torch-cache``, or None.
        devices: Lightning devices (an int when given as digits), or None.
        num_nodes: Machines for distributed training.
        seed: Random seed.
        resume: Continue from the last checkpoint in :attr:`checkpoints`.
        overwrite: Replace an existing model folder.
        progress: Show progress bars.
    """

    folders: tuple[str | Path, ...]
    out_folder: Path
    checkpoints: Path
    max_epochs: int
    model_type: str | None
    batch_size: int | None
    arguments: dict[str, Any]
    learning_rate: float | None
    backbone_model: str | None
    pretrained_model: str | Path | None
    validation_percentage: float
    stop_training: bool
    freeze: bool
    augmentation: str
    augmentation_parameters: Mapping[str, Any] | Sequence[Any] | None
    chip_size: int | None
    weight_init_scheme: str | None
    monitor: str | None
    pretrained_backbone: str | Path | None
    devices: int | str | None
    num_nodes: int
    seed: int
    resume: bool
    overwrite: bool
    progress: bool | None

    @classmethod
    def from_parameters(
        cls,
        in_folder: str | Path | Sequence[str | Path],
        out_folder: str | Path,
        *,
        max_epochs: int,
        model_type: str | None,
        batch_size: int | None,
        arguments: Mapping[str, Any] | None,
        learning_rate: float | None,
        backbone_model: str | None,
        pretrained_model: str | Path | None,
        validation_percentage: float,
        stop_training: bool,
        freeze: bool,
        augmentation: str,
        augmentation_parameters: Mapping[str, Any] | Sequence[Any] | None,
        chip_size: int | None,
        weight_init_scheme: str | None,
        monitor: str | None,
        pretrained_backbone: str | Path | None,
        devices: int | str | None,
        num_nodes: int,
        seed: int,
        resume: bool,
        overwrite: bool,
        progress: bool | None,
    ) -> TrainingSettings:
        """Validate and normalise the tool's parameters (the defaults are the tool's).

        Raises:
            ParameterError: for a parameter out of range, an unknown keyword, or ``resume``
                without an interrupted run.
            OutputError: if the model folder exists and neither ``overwrite`` nor ``resume``
                is given.
        """
        folders = (in_folder,) if isinstance(in_folder, (str, Path)) else tuple(in_folder)
        if not folders:
            raise ParameterError("no training data folder given", "give at least one export folder")
        out = Path(out_folder).absolute()
        checkpoints = out.with_name(f".{out.name}.checkpoints")
        _check_output(out, checkpoints, resume=resume, overwrite=overwrite)
        if int(max_epochs) < 1:
            raise ParameterError(f"max_epochs must be at least 1, got {max_epochs}", "use e.g. 20")
        if not 0 <= validation_percentage < 100:
            raise ParameterError(
                f"validation_percentage must be between 0 and 100, got {validation_percentage}",
                "use e.g. 10",
            )
        monitor_key = str(monitor).upper() if monitor else None
        if monitor_key is not None and monitor_key not in MONITORS:
            raise ParameterError(
                f"unknown monitor '{monitor}'", f"use one of {', '.join(MONITORS)}"
            )
        augmentation_key = _augmentation(augmentation, augmentation_parameters)
        return cls(
            folders=folders,
            out_folder=out,
            checkpoints=checkpoints,
            max_epochs=int(max_epochs),
            model_type=model_type.upper() if model_type else None,
            batch_size=batch_size,
            arguments=dict(arguments or {}),
            learning_rate=learning_rate,
            backbone_model=backbone_model,
            pretrained_model=pretrained_model,
            validation_percentage=validation_percentage,
            stop_training=stop_training,
            freeze=freeze,
            augmentation=augmentation_key,
            augmentation_parameters=augmentation_parameters,
            chip_size=chip_size,
            weight_init_scheme=weight_init_scheme,
            monitor=monitor_key,
            pretrained_backbone=pretrained_backbone,
            devices=int(devices) if isinstance(devices, str) and devices.isdigit() else devices,
            num_nodes=int(num_nodes),
            seed=seed,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
        )

    def monitor_for(self, task: str) -> str:
        """The monitor keyword given, or the task's (:data:`TASK_MONITORS`)."""
        return self.monitor or TASK_MONITORS.get(task, "VALID_LOSS")


def _check_output(out: Path, checkpoints: Path, *, resume: bool, overwrite: bool) -> None:
    """A fresh run needs a free model folder; resuming needs the last checkpoint."""
    if not resume:
        check_output_path(out, overwrite, folder=True)
    elif not (checkpoints / "last.ckpt").exists():
        raise ParameterError(
            f"there is no interrupted run of {out.name} to resume "
            f"({checkpoints / 'last.ckpt'} does not exist)",
            "run without --resume",
        )


def _augmentation(augmentation: str, parameters: Mapping[str, Any] | Sequence[Any] | None) -> str:
    """The upper-cased augmentation keyword, checked against its parameters."""
    key = str(augmentation).upper()
    if key == "FILE":
        raise ParameterError(
            "augmentation FILE (fastai transforms.json) is not supported",
            "use CUSTOM with augmentation_parameters",
        )
    if key not in AUGMENTATIONS:
        raise ParameterError(
            f"unknown augmentation '{key}'", f"use one of {', '.join(AUGMENTATIONS)}"
        )
    if parameters and key != "CUSTOM":
        raise ParameterError(
            f"augmentation_parameters apply only with augmentation CUSTOM, not {key}",
            "add --augmentation CUSTOM",
        )
    return key
