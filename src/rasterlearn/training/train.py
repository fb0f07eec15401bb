"""Train Deep Learning Model: export folders -> model folder (.emd, .pth, .dlpk, metrics)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, WeightedRandomSampler

from rasterlearn.data.augment import Augmenter
from rasterlearn.data.datasets import (
    ClassificationDataset,
    DetectionDataset,
    SegmentationDataset,
    collate_detection,
)
from rasterlearn.data.merge import TrainingData
from rasterlearn.data.normalization import Normalizer
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.dlpk import create_dlpk
from rasterlearn.formats.emd import PRO_FUNCTIONS_PREFIX, ModelDefinition
from rasterlearn.formats.model_source import load_model_definition
from rasterlearn.models import (
    build_model,
    check_model_fits_data,
    detector_args_from_sizes,
    model_types_for,
    set_encoder_trainable,
)
from rasterlearn.models.trained import read_weights
from rasterlearn.outputs import atomic_output, check_output_path
from rasterlearn.training.losses import SegmentationLoss, class_balance_weights
from rasterlearn.training.report import (
    EpochRecord,
    plot_confusion,
    plot_losses,
    plot_results,
    write_loss_log,
    write_metrics_html,
)
from rasterlearn.training.task import MONITORS, TASK_METRICS, TrainingTask, ValidationResults

AUGMENTATIONS = ("DEFAULT", "NONE", "CUSTOM")
DEFAULT_LEARNING_RATE = 1e-3
# Lightning's banners and tips are noise in a tool's output; warnings still show.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
VERSION = "0.1.0"


@dataclass(frozen=True)
class TrainResult:
    """What training produced.

    Attributes:
        out_folder: The model folder.
        emd: Path of ``<name>.emd``.
        dlpk: Path of ``<name>.dlpk``.
        model_type: The ArcGIS model type trained.
        epochs: Epochs run.
        learning_rate: The (peak) learning rate used.
        metrics: Validation metrics of the saved model.
        history: Loss and metrics per epoch.
        model: The trained network (eval mode), as saved.
    """

    out_folder: Path
    emd: Path
    dlpk: Path
    model_type: str
    epochs: int
    learning_rate: float
    metrics: dict[str, float]
    history: list[EpochRecord]
    model: torch.nn.Module = field(repr=False, default=None)


class _History(Callback):
    """Records losses and metrics per epoch (the ArcGIS training log)."""

    def __init__(self) -> None:
        self.records: list[EpochRecord] = []
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: TrainingTask) -> None:
        m = trainer.callback_metrics
        metrics = {k: float(m[k]) for k in TASK_METRICS[pl_module.task] if k in m}
        self.records.append(
            EpochRecord(
                epoch=trainer.current_epoch,
                training_loss=float(m.get("train_loss", float("nan"))),
                validation_loss=float(m.get("valid_loss", float("nan"))),
                metrics=metrics,
                seconds=time.perf_counter() - self._start,
            )
        )


def _dataset_class(task: str) -> type:
    return {
        "pixel": SegmentationDataset,
        "detection": DetectionDataset,
        "instance": DetectionDataset,
        "classification": ClassificationDataset,
    }[task]


def _object_sizes(data: TrainingData) -> list[float]:
    return [max(o.xmax - o.xmin, o.ymax - o.ymin) for chip in data.chips for o in chip.objects]


def _criterion(model: torch.nn.Module, train_set: Any) -> torch.nn.Module | None:
    """The pixel loss the model arguments ask for (None: the task's default).

    ``class_balancing`` weighs classes by the pixels of the training chips; ``ignore_classes``
    (class values; 0 is NoData) leaves classes out; ``focal_loss`` and ``dice_loss_fraction``/
    ``dice_loss_average`` choose the loss (see :mod:`rasterlearn.training.losses`).

    Raises:
        ParameterError: for ignored values that are not classes of the data, or ignoring all.
    """
    if model.task != "pixel":
        return None
    args = model.model_args
    values = list(train_set.class_values)  # index -> value, 0 = NoData
    unknown = [v for v in args["ignore_classes"] if v not in values]
    if unknown:
        raise ParameterError(
            f"ignore_classes {', '.join(map(str, unknown))} "
            f"{'is not a class' if len(unknown) == 1 else 'are not classes'} of the training data",
            f"use class values of {', '.join(map(str, values[1:]))} (0 for NoData)",
        )
    ignore = sorted({values.index(v) for v in args["ignore_classes"]})
    if set(range(1, len(values))) <= set(ignore):
        raise ParameterError("ignore_classes leaves no class to train on", "ignore fewer classes")
    weights = None
    if args["class_balancing"]:
        weights = class_balance_weights(train_set.class_pixel_counts())
    return SegmentationLoss(
        len(values),
        weights,
        ignore=ignore,
        focal=args["focal_loss"],
        dice_fraction=args["dice_loss_fraction"],
        dice_average=args["dice_loss_average"],
    )


def _load_matching(model: torch.nn.Module, state: dict) -> int:
    """Load the weights whose names and shapes match (new heads keep their initialisation)."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return len(usable)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's advice that does not apply to small chip datasets."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*weights_only.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")  # resuming reuses it
        yield


def _learning_rate_finder(trainer_kwargs: dict, task: TrainingTask, loaders: tuple) -> float:
    """Lightning's learning-rate range test; a safe default when it cannot decide."""
    from lightning.pytorch.tuner import Tuner

    trainer = L.Trainer(**{**trainer_kwargs, "callbacks": [], "max_epochs": 1000})
    steps = max(20, min(60, 3 * len(loaders[0])))
    try:
        with _quiet_lightning(), contextlib.redirect_stderr(io.StringIO()):
            finder = Tuner(trainer).lr_find(
                task,
                loaders[0],
                loaders[1],
                num_training=steps,
                min_lr=1e-6,
                max_lr=1e-1,
                early_stop_threshold=None,
                update_attr=False,
            )
        suggestion = finder.suggestion() if finder is not None else None
    except Exception:
        suggestion = None
    if suggestion is None or not math.isfinite(suggestion):
        return DEFAULT_LEARNING_RATE
    return float(min(max(suggestion, 1e-5), 1e-2))


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
    monitor: str = "VALID_LOSS",
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

    Args:
        in_folder: One export folder or several of the same format and band count.
        out_folder: The model folder; ``<name>`` of its files is the folder's name.
        max_epochs: Epochs to train at most.
        model_type: ``UNET``, ``DEEPLAB``, ``FCOS``, ``RETINANET``, ``FASTERRCNN``,
            ``MASKRCNN`` or ``FEATURE_CLASSIFIER``; default the first that fits the data.
        batch_size: Chips per batch; default the model type's (capped at the training chips).
        arguments: Model arguments (see ``rasterlearn model-types``).
        learning_rate: Peak learning rate; None runs a learning-rate finder.
        backbone_model: Backbone (``RESNET18`` ... ``RESNET101``, ``MOBILENET_V3_LARGE``).
        pretrained_model: An ``.emd``/``.dlpk`` of ours to fine-tune (its type and backbone
            are used).
        validation_percentage: Percentage of chips held out for validation.
        stop_training: Stop early when the monitored metric stops improving.
        freeze: Keep a pretrained backbone frozen (only heads train).
        augmentation: ``DEFAULT`` (dihedral flips/rotations in MAP_SPACE, horizontal flip in
            PIXEL_SPACE, brightness/contrast), ``NONE``, or ``CUSTOM`` (only the transforms of
            ``augmentation_parameters``).
        augmentation_parameters: ArcGIS's value table of transforms for ``CUSTOM``:
            ``{"rotate": "30.0;0.5", "zoom": "(1.0,1.2);1.0", ...}`` or rows ``"NAME=VALUE"``
            (``rotate``, ``zoom``, ``brightness``, ``contrast``, ``crop``, ``flip_lr``,
            ``dihedral``; see :func:`rasterlearn.data.augment.parse_augmentation_parameters`).
            None with ``CUSTOM``: ArcGIS's defaults.
        chip_size: Training chip size; default the smallest tile size of the inputs.
        weight_init_scheme: First-layer init of bands beyond RGB with pretrained weights
            (``RANDOM``, ``RED_BAND``, ``ALL_RANDOM``; default the mean of the RGB filters).
        monitor: ``VALID_LOSS``, ``AVERAGE_PRECISION``, ``ACCURACY``, ``F1_SCORE``, ``MIOU``,
            ``DICE``, ``PRECISION`` or ``RECALL``.
        pretrained_backbone: ImageNet backbone weights: a file, or ``torch-cache`` for the
            local torch hub cache. Never downloaded.
        devices: Lightning devices (GPUs, or CPU processes); default all of one machine.
        num_nodes: Machines for distributed (DDP) training.
        seed: Random seed for the split, initialisation and augmentation.
        resume: Continue an interrupted run from its last checkpoint.
        overwrite: Replace an existing model folder.
        progress: Show progress bars (default: on terminals).

    Returns:
        What was trained and written (None in the other processes of a distributed run).

    Raises:
        RasterLearnError: for inputs and parameters the user must fix.
    """
    folders = [in_folder] if isinstance(in_folder, (str, Path)) else list(in_folder)
    if not folders:
        raise ParameterError("no training data folder given", "give at least one export folder")
    out_folder = Path(out_folder).absolute()
    checkpoints = out_folder.with_name(f".{out_folder.name}.checkpoints")
    if not resume:
        check_output_path(out_folder, overwrite, folder=True)
        shutil.rmtree(checkpoints, ignore_errors=True)  # a fresh run starts clean
    elif not (checkpoints / "last.ckpt").exists():
        raise ParameterError(
            f"there is no interrupted run of {out_folder.name} to resume "
            f"({checkpoints / 'last.ckpt'} does not exist)",
            "run without --resume",
        )
    if int(max_epochs) < 1:
        raise ParameterError(f"max_epochs must be at least 1, got {max_epochs}", "use e.g. 20")
    if not 0 <= validation_percentage < 100:
        raise ParameterError(
            f"validation_percentage must be between 0 and 100, got {validation_percentage}",
            "use e.g. 10",
        )
    monitor_key = str(monitor).upper()
    if monitor_key not in MONITORS:
        raise ParameterError(f"unknown monitor '{monitor}'", f"use one of {', '.join(MONITORS)}")
    augmentation = str(augmentation).upper()
    if augmentation == "FILE":
        raise ParameterError(
            "augmentation FILE (fastai transforms.json) is not supported",
            "use CUSTOM with augmentation_parameters",
        )
    if augmentation not in AUGMENTATIONS:
        raise ParameterError(
            f"unknown augmentation '{augmentation}'", f"use one of {', '.join(AUGMENTATIONS)}"
        )
    if augmentation_parameters and augmentation != "CUSTOM":
        raise ParameterError(
            f"augmentation_parameters apply only with augmentation CUSTOM, not {augmentation}",
            "add --augmentation CUSTOM",
        )

    data = TrainingData(folders)
    base_state = None
    if pretrained_model is not None:
        base_emd = load_model_definition(pretrained_model)
        base_state = read_weights(base_emd.resolve("ModelFile"))
        model_type = model_type or base_emd.get("ModelName")
        params = base_emd.get("ModelParameters") or {}
        backbone_model = backbone_model or params.get("backbone")
    model_type = (model_type or model_types_for(data.metadata_format)[0]).upper()
    spec = check_model_fits_data(model_type, data.metadata_format)
    metric_name, _ = MONITORS[monitor_key]
    if metric_name != "valid_loss" and metric_name not in TASK_METRICS[spec.task]:
        raise ParameterError(
            f"monitor {monitor_key} is not measured for {spec.model_type} models",
            "use VALID_LOSS or one of "
            + ", ".join(k for k, (m, _) in MONITORS.items() if m in TASK_METRICS[spec.task]),
        )
    chip = int(chip_size or min(data.tile_height, data.tile_width))
    if chip > min(data.tile_height, data.tile_width) or chip < 16:
        raise ParameterError(
            f"chip_size {chip} must be between 16 and the tile size "
            f"({min(data.tile_height, data.tile_width)})",
            "leave chip_size out to use the tile size",
        )
    train_idx, valid_idx = data.split(validation_percentage, seed)
    batch = int(batch_size or spec.default_batch_size)
    if batch < 1:
        raise ParameterError(f"batch_size must be at least 1, got {batch_size}", "use e.g. 8")
    if batch_size is not None and batch > len(train_idx):
        raise ParameterError(
            f"batch size {batch} is larger than the {len(train_idx)} training chips",
            f"use --batch-size {max(1, len(train_idx))} or less, or export more chips",
        )
    batch = min(batch, len(train_idx))

    L.seed_everything(seed, workers=True, verbose=False)
    normalizer = Normalizer.from_training_data(data)
    dataset_cls = _dataset_class(spec.task)
    augment = None
    if augmentation == "DEFAULT":
        augment = Augmenter(image_space=data.image_space, chip_size=chip)
    elif augmentation == "CUSTOM":
        augment = Augmenter.from_parameters(
            augmentation_parameters,
            data.image_space,
            chip_size=chip,
            max_crop=min(data.tile_height, data.tile_width),
        )
    train_set = dataset_cls(
        data, train_idx, chip_size=chip, normalizer=normalizer, augment=augment, seed=seed
    )
    valid_set = dataset_cls(data, valid_idx, chip_size=chip, normalizer=normalizer)
    if len(train_set) == 0 or len(valid_set) == 0:
        raise InputError(
            f"{len(train_set)} training and {len(valid_set)} validation chips are usable",
            "export more chips with labels, or change validation_percentage",
        )
    model_args = dict(arguments or {})
    if spec.task == "classification":
        model_args["multi_label"] = data.metadata_format == "MultiLabeled_Tiles"
    if spec.task in ("detection", "instance"):
        suggested = detector_args_from_sizes(spec.model_type, _object_sizes(data), chip)
        model_args = {**suggested, **model_args}
    model = build_model(
        spec.model_type,
        num_classes=len(data.class_values),
        in_channels=normalizer.band_count,
        backbone=backbone_model,
        chip_size=chip,
        pretrained_backbone=pretrained_backbone,
        model_args=model_args,
        weight_init_scheme=(weight_init_scheme or "mean"),
    )
    if base_state is not None and _load_matching(model, base_state) == 0:
        raise InputError(
            f"no weights of {pretrained_model} fit a {spec.model_type} model",
            "fine-tune from a model of the same type and backbone",
        )
    if freeze and (model.pretrained or base_state is not None):
        set_encoder_trainable(model, False)
    criterion = _criterion(model, train_set)

    collate = collate_detection if spec.task in ("detection", "instance") else None
    sampler = None
    if model.model_args.get("oversample"):
        sampler = WeightedRandomSampler(
            train_set.oversampling_weights(),
            len(train_set),
            replacement=True,
            generator=torch.Generator().manual_seed(seed),
        )
    loaders = (
        DataLoader(
            train_set,
            batch_size=batch,
            shuffle=sampler is None,
            sampler=sampler,
            collate_fn=collate,
            drop_last=len(train_set) > batch,
            generator=torch.Generator().manual_seed(seed) if sampler is None else None,
        ),
        DataLoader(valid_set, batch_size=batch, shuffle=False, collate_fn=collate),
    )

    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    show = progress if progress is not None else None
    trainer_kwargs = {
        "accelerator": accelerator,
        "devices": devices or ("auto" if accelerator == "gpu" else 1),
        "num_nodes": int(num_nodes),
        "precision": "16-mixed" if accelerator == "gpu" else "32-true",
        "logger": False,
        "enable_model_summary": False,
        "enable_progress_bar": bool(show) if show is not None else False,
        "deterministic": False,
        "num_sanity_val_steps": 0,
    }
    task = TrainingTask(
        model,
        learning_rate=learning_rate or 1e-3,
        criterion=criterion,
        mixup=bool(model.model_args.get("mixup")),
    )
    lr = float(learning_rate) if learning_rate else None
    distributed = int(num_nodes) > 1 or (isinstance(devices, int) and devices > 1)
    if lr is None:
        # Lightning's range test runs in one process; distributed runs use a safe default.
        lr = DEFAULT_LEARNING_RATE
        if not distributed:
            lr = _learning_rate_finder(
                {**trainer_kwargs, "default_root_dir": str(checkpoints)}, task, loaders
            )
        task.lr = lr

    history = _History()
    monitor_mode = MONITORS[monitor_key][1]
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor=metric_name,
        mode=monitor_mode,
        save_last=True,
        save_top_k=1,
    )
    callbacks: list[Callback] = [history, best]
    if stop_training:
        callbacks.append(EarlyStopping(metric_name, patience=5, mode=monitor_mode))
    trainer = L.Trainer(
        **trainer_kwargs,
        max_epochs=int(max_epochs),
        callbacks=callbacks,
        default_root_dir=str(checkpoints),
    )
    last = checkpoints / "last.ckpt"
    with _quiet_lightning():
        trainer.fit(
            task, loaders[0], loaders[1], ckpt_path=str(last) if resume and last.exists() else None
        )
    if not trainer.is_global_zero:
        return None  # in distributed training only the first process writes the model folder
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        task.load_state_dict(state["state_dict"])
    results = _validate(task, loaders[1])
    with atomic_output(out_folder, overwrite=overwrite or resume, folder=True) as tmp:
        emd_path, dlpk_path = _write_model_folder(
            tmp,
            out_folder.name,
            task,
            data,
            spec,
            normalizer,
            chip,
            lr,
            model_args,
            history.records,
            results,
            best,
            metric_name,
            valid_set,
        )
    shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainResult(
        out_folder=out_folder,
        emd=out_folder / emd_path.name,
        dlpk=out_folder / dlpk_path.name,
        model_type=spec.model_type,
        epochs=len(history.records),
        learning_rate=lr,
        metrics=results.metrics,
        history=history.records,
        model=task.model.eval(),
    )


def _validate(task: TrainingTask, loader: DataLoader) -> ValidationResults:
    """Validation metrics of the final model, measured once more in eval mode."""
    task.eval()
    task.accumulator.reset()
    with torch.no_grad():
        for images, targets in loader:
            outputs = task.model(list(images) if task.task in ("detection", "instance") else images)
            task.accumulator.add(outputs, targets)
    return task.accumulator.results()


def _write_model_folder(
    folder: Path,
    name: str,
    task: TrainingTask,
    data: TrainingData,
    spec: Any,
    normalizer: Normalizer,
    chip: int,
    lr: float,
    model_args: dict,
    history: list[EpochRecord],
    results: ValidationResults,
    best: ModelCheckpoint,
    metric_name: str,
    valid_set: Any,
) -> tuple[Path, Path]:
    model = task.model
    torch.save(model.state_dict(), folder / f"{name}.pth")
    names = {c.value: c.name for c in data.classes}
    classes = [
        {"Value": c.value, "Name": c.name, "Color": list(c.color) if c.color else [-1, -1, -1]}
        for c in data.classes
    ]
    training_emd = data.folders[0].emd
    content: dict[str, Any] = {
        "Framework": "rasterlearn",
        "ModelConfiguration": spec.emd.model_configuration,
        "ModelType": spec.emd.model_type,
        # as Pro's Train tool writes it: the raster function shipped inside ArcGIS Pro
        "InferenceFunction": PRO_FUNCTIONS_PREFIX
        + "System\\DeepLearning\\ArcGISLearn\\"
        + spec.emd.inference_function,
        "ExtractBands": list(range(normalizer.band_count)),
        "Classes": classes,
        **dict(spec.emd.extra),
        "ModelFormat": "NCHW",
        "MinCellSize": training_emd.get("MinCellSize"),
        "MaxCellSize": training_emd.get("MaxCellSize"),
        "SupportsVariableTileSize": spec.task == "pixel",
        "RasterlearnVersion": VERSION,
        "ModelFile": f"{name}.pth",
        "ImageHeight": chip,
        "ImageWidth": chip,
        "ImageSpaceUsed": data.image_space,
        "LearningRate": f"{lr:.4e}",
        "ModelName": spec.emd.model_name,
        "backend": "pytorch",
        "ModelParameters": {
            "backbone": model.backbone_name,
            "backend": "pytorch",
            **{k: _jsonable(v) for k, v in model.model_args.items()},
        },
        "MetaDataMode": data.metadata_format,
        "resize_to": None,
        "IsMultispectral": not normalizer.imagenet,
        "IsImageNetNormalization": normalizer.imagenet,
        **normalizer.to_emd(),
    }
    if spec.task == "classification":
        content["CropSizeFixed"] = int(
            training_emd.get("CropTileMode", "Fixed_Size") == "Fixed_Size"
        )
        content["BlackenAroundFeature"] = int(bool(training_emd.get("BlackenAroundFeature", False)))
    if best.best_model_score is not None:
        content[f"monitored_{metric_name}"] = float(best.best_model_score)
    per_class_named: dict[str, dict[str, float]] = {}
    if spec.task in ("detection", "instance"):
        content["average_precision_score"] = {
            names[v]: round(m["average_precision"], 6)
            for v, m in _by_value(results, valid_set).items()
        }
        per_class_named = {names[v]: m for v, m in _by_value(results, valid_set).items()}
    else:
        content["accuracy"] = f"{results.metrics.get('accuracy', 0.0):.4e}"
        by_value = _by_value(results, valid_set)
        per_class_named = {
            ("NoData" if v == 0 else names.get(v, str(v))): m for v, m in by_value.items()
        }
        content["per_class_metrics"] = json.dumps(per_class_named)
    emd = ModelDefinition.load(content)
    emd_path = emd.save(folder / f"{name}.emd")

    write_loss_log(folder, history)
    figures = [plot_losses(folder, history)]
    figures.append(_show_results(folder, task, valid_set, data))
    if results.confusion is not None:
        labels = (
            ["NoData", *[c.name for c in data.classes]]
            if spec.task == "pixel"
            else [c.name for c in data.classes]
        )
        figures.append(plot_confusion(folder, results.confusion, labels))
    shown = {k: round(v, 4) for k, v in results.metrics.items()}
    write_metrics_html(
        folder,
        spec.emd.model_name,
        model.backbone_name,
        f"{lr:.4e}",
        shown,
        per_class_named,
        figures,
    )
    dlpk_path = create_dlpk(folder, folder / f"{name}.dlpk")
    return emd_path, dlpk_path


def _by_value(results: ValidationResults, valid_set: Any) -> dict[int, dict[str, float]]:
    """Per-class results keyed by class value (results are keyed by class index)."""
    values = list(valid_set.class_values)
    return {values[i]: m for i, m in results.per_class.items() if i < len(values)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _display(image: torch.Tensor) -> np.ndarray:
    """A normalised chip as an RGB picture (first three bands, each stretched 2-98 %)."""
    bands = image[:3].detach().cpu().numpy()
    if bands.shape[0] < 3:
        bands = np.repeat(bands[:1], 3, axis=0)
    out = np.empty_like(bands)
    for i, b in enumerate(bands):
        lo, hi = np.percentile(b, (2, 98))
        out[i] = np.clip((b - lo) / (hi - lo + 1e-6), 0, 1)
    return out.transpose(1, 2, 0)


def _show_results(folder: Path, task: TrainingTask, valid_set: Any, data: TrainingData) -> Path:
    n = min(3, len(valid_set))
    samples = [valid_set[i] for i in range(n)]
    images = [s[0] for s in samples]
    colors = [(0, 0, 0), *[c.color or (255, 255, 0) for c in data.classes]]
    task.eval()
    with torch.no_grad():
        if task.task in ("detection", "instance"):
            outputs = task.model(images)
            truths = [
                [(int(c), *b.tolist()) for c, b in zip(s[1]["labels"], s[1]["boxes"], strict=True)]
                for s in samples
            ]
            preds = [
                [
                    (int(c), *b.tolist())
                    for c, b, sc in zip(o["labels"], o["boxes"], o["scores"], strict=True)
                    if sc >= 0.5
                ]
                for o in outputs
            ]
            kind = "boxes"
        elif task.task == "pixel":
            outputs = task.model(torch.stack(images))
            truths = [s[1].numpy() for s in samples]
            preds = list(outputs.argmax(1).numpy())
            kind = "pixels"
        else:
            outputs = task.model(torch.stack(images))
            names = [c.name for c in data.classes]
            if task.multi_label:
                truths = [
                    ",".join(n for n, t in zip(names, s[1].tolist(), strict=True) if t > 0.5)
                    for s in samples
                ]
                preds = [
                    ",".join(
                        n for n, p in zip(names, torch.sigmoid(o).tolist(), strict=True) if p > 0.5
                    )
                    for o in outputs
                ]
            else:
                truths = [names[int(s[1])] for s in samples]
                preds = [names[int(o.argmax())] for o in outputs]
            kind = "labels"
    return plot_results(folder, [_display(i) for i in images], truths, preds, kind, colors)
