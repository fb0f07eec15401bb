"""Everything training needs before its first epoch: data, model, loss and loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from rasterlearn.data.augment import Augmenter
from rasterlearn.data.datasets import (
    ChangeDataset,
    ChipDataset,
    ClassificationDataset,
    DetectionDataset,
    SegmentationDataset,
    collate_detection,
)
from rasterlearn.data.merge import TrainingData
from rasterlearn.data.normalization import Normalizer
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.model_source import load_model_definition
from rasterlearn.models.detection import detector_args_from_sizes
from rasterlearn.models.registry import (
    ModelSpec,
    build_model,
    check_model_fits_data,
    model_types_for,
    set_encoder_trainable,
)
from rasterlearn.models.trained import read_weights, recorded_decoder_channels
from rasterlearn.training.losses import SegmentationLoss, class_balance_weights
from rasterlearn.training.settings import MONITORS, TrainingSettings
from rasterlearn.training.task import TASK_METRICS

DETECTION_TASKS = ("detection", "instance")
OBJECT_ZOOM = (0.8, 1.25)
"""The default augmentation's zoom range (half of the chips) for :data:`ZOOMED_MODEL_TYPES`:
objects seen at other sizes than the few labelled ones."""
ZOOMED_MODEL_TYPES = ("FCOS",)
"""The model types whose default augmentation zooms: where it was measured to help (RetinaNet
on the synthetic scene: held-out AP50 0.67 with it after 20 epochs, still rising)."""
MIN_STEPS_PER_EPOCH = 8
"""The default batch size leaves at least this many training steps an epoch (down to 2 chips)."""


@dataclass(frozen=True)
class TrainingSetup:
    """The data and the untrained model of one training run.

    Attributes:
        data: The merged export folders.
        spec: The model type trained.
        chip_size: Training chip size (pixels, square).
        normalizer: What the model's input is normalised with (written to the ``.emd``).
        train_set: The training chips (augmented).
        valid_set: The validation chips.
        model: The network, built for the data's bands and classes.
        criterion: The pixel loss the model arguments ask for; None: the task's default.
        train_loader: Batches of ``train_set``.
        valid_loader: Batches of ``valid_set``.
        monitor: The monitor keyword (a key of :data:`MONITORS`) that picks the best model.
    """

    data: TrainingData
    spec: ModelSpec
    chip_size: int
    normalizer: Normalizer
    train_set: ChipDataset
    valid_set: ChipDataset
    model: torch.nn.Module = field(repr=False)
    criterion: torch.nn.Module | None
    train_loader: DataLoader
    valid_loader: DataLoader
    monitor: str = "VALID_LOSS"

    @property
    def monitored_metric(self) -> str:
        """The metric the training task logs for :attr:`monitor`."""
        return MONITORS[self.monitor][0]

    @property
    def monitor_mode(self) -> str:
        """``min`` or ``max``: whether a lower or a higher :attr:`monitored_metric` is better."""
        return MONITORS[self.monitor][1]


@dataclass(frozen=True)
class _BaseModel:
    """A model of ours to fine-tune: its type and backbone are the defaults of the new one."""

    model_type: str | None
    backbone: str | None
    state: dict[str, torch.Tensor] = field(repr=False)
    decoder_channels: tuple[int, ...] | None = None

    @classmethod
    def read(cls, path: str | Path) -> _BaseModel:
        emd = load_model_definition(path)
        state = read_weights(emd.resolve("ModelFile"))
        params = emd.get("ModelParameters") or {}
        widths = recorded_decoder_channels(emd)
        return cls(emd.get("ModelName"), params.get("backbone"), state, widths)


def prepare_training(settings: TrainingSettings) -> TrainingSetup:
    """Read the data, check it against the settings, and build the model and its loaders.

    Seeds every random generator with ``settings.seed`` (after the train/validation split), so
    that the initial weights and the augmentation are the same for the same seed.

    Raises:
        InputError: for export folders that cannot be trained on, or a pretrained model that
            does not fit.
        ParameterError: for parameters that do not fit the data or the model type.
    """
    data = TrainingData(list(settings.folders))
    base = None
    if settings.pretrained_model is not None:
        base = _BaseModel.read(settings.pretrained_model)
    model_type = settings.model_type or (base.model_type if base else None)
    spec = check_model_fits_data(
        (model_type or model_types_for(data.dataset_type)[0]).upper(), data.dataset_type
    )
    monitor = settings.monitor_for(spec.task)
    _check_monitor(monitor, spec)
    chip = _chip_size(settings.chip_size, data)
    train_idx, valid_idx = data.split(settings.validation_percentage, settings.seed)
    batch = _batch_size(settings.batch_size, spec, len(train_idx))

    L.seed_everything(settings.seed, workers=True, verbose=False)
    normalizer = Normalizer.from_training_data(data)
    dataset_cls = ChangeDataset if data.paired else _dataset_class(spec.task)
    train_set = dataset_cls(
        data,
        train_idx,
        chip_size=chip,
        normalizer=normalizer,
        augment=_augmenter(settings, data, chip, spec),
        seed=settings.seed,
    )
    valid_set = dataset_cls(data, valid_idx, chip_size=chip, normalizer=normalizer)
    if len(train_set) == 0 or len(valid_set) == 0:
        raise InputError(
            f"{len(train_set)} training and {len(valid_set)} validation chips are usable",
            "export more chips with labels, or change validation_percentage",
        )
    model = _build_model(settings, data, spec, chip, normalizer.band_count, base)
    criterion = _criterion(model, train_set)
    train_loader, valid_loader = _loaders(
        train_set,
        valid_set,
        spec.task,
        batch,
        settings.seed,
        oversample=bool(model.model_args.get("oversample")),
    )
    return TrainingSetup(
        data=data,
        spec=spec,
        chip_size=chip,
        normalizer=normalizer,
        train_set=train_set,
        valid_set=valid_set,
        model=model,
        criterion=criterion,
        train_loader=train_loader,
        valid_loader=valid_loader,
        monitor=monitor,
    )


def _check_monitor(monitor: str, spec: ModelSpec) -> None:
    metric = MONITORS[monitor][0]
    if metric != "valid_loss" and metric not in TASK_METRICS[spec.task]:
        raise ParameterError(
            f"monitor {monitor} is not measured for {spec.model_type} models",
            "use VALID_LOSS or one of "
            + ", ".join(k for k, (m, _) in MONITORS.items() if m in TASK_METRICS[spec.task]),
        )


def _chip_size(chip_size: int | None, data: TrainingData) -> int:
    tile = min(data.tile_height, data.tile_width)
    chip = int(chip_size or tile)
    if chip > tile or chip < 16:
        raise ParameterError(
            f"chip_size {chip} must be between 16 and the tile size ({tile})",
            "leave chip_size out to use the tile size",
        )
    return chip


def _batch_size(batch_size: int | None, spec: ModelSpec, train_chips: int) -> int:
    """The batch size given, or the model type's default made small enough for
    :data:`MIN_STEPS_PER_EPOCH` steps an epoch (a few hundred chips at ArcGIS's 64 a batch
    would give the one-cycle schedule 2-5 steps an epoch)."""
    if batch_size is None:
        fitting = max(2, min(spec.default_batch_size, train_chips // MIN_STEPS_PER_EPOCH))
        return max(1, min(fitting, train_chips))
    batch = int(batch_size)
    if batch < 1:
        raise ParameterError(f"batch_size must be at least 1, got {batch_size}", "use e.g. 8")
    if batch > train_chips:
        raise ParameterError(
            f"batch size {batch} is larger than the {train_chips} training chips",
            f"use --batch-size {max(1, train_chips)} or less, or export more chips",
        )
    return batch


def _dataset_class(task: str) -> type[ChipDataset]:
    return {
        "pixel": SegmentationDataset,
        "detection": DetectionDataset,
        "instance": DetectionDataset,
        "classification": ClassificationDataset,
    }[task]


def _augmenter(
    settings: TrainingSettings, data: TrainingData, chip: int, spec: ModelSpec
) -> Augmenter | None:
    if settings.augmentation == "DEFAULT":
        zooms = spec.model_type in ZOOMED_MODEL_TYPES
        return Augmenter(
            image_space=data.image_space, chip_size=chip, zoom=OBJECT_ZOOM if zooms else None
        )
    if settings.augmentation == "CUSTOM":
        return Augmenter.from_parameters(
            settings.augmentation_parameters,
            data.image_space,
            chip_size=chip,
            max_crop=min(data.tile_height, data.tile_width),
        )
    return None


def _build_model(
    settings: TrainingSettings,
    data: TrainingData,
    spec: ModelSpec,
    chip: int,
    band_count: int,
    base: _BaseModel | None,
) -> torch.nn.Module:
    """The network for the data, from the pretrained model's weights when one is given."""
    model_args = dict(settings.arguments)
    if spec.task == "classification":
        model_args["multi_label"] = data.metadata_format == "MultiLabeled_Tiles"
    if spec.task in DETECTION_TASKS:
        suggested = detector_args_from_sizes(spec.model_type, _object_sizes(data), chip)
        model_args = {**suggested, **model_args}
    model = build_model(
        spec.model_type,
        num_classes=len(data.class_values),
        in_channels=band_count,
        backbone=settings.backbone_model or (base.backbone if base else None),
        chip_size=chip,
        pretrained_backbone=settings.pretrained_backbone,
        model_args=model_args,
        weight_init_scheme=(settings.weight_init_scheme or "mean"),
        decoder_channels=base.decoder_channels if base else None,
    )
    if base is not None and _load_matching(model, base.state) == 0:
        raise InputError(
            f"no weights of {settings.pretrained_model} fit a {spec.model_type} model",
            "fine-tune from a model of the same type and backbone",
        )
    if settings.freeze and (model.pretrained or base is not None):
        set_encoder_trainable(model, False)
    return model


def _object_sizes(data: TrainingData) -> list[float]:
    return [max(o.xmax - o.xmin, o.ymax - o.ymin) for chip in data.chips for o in chip.objects]


def _load_matching(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Load the weights whose names and shapes match (new heads keep their initialisation)."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return len(usable)


def _criterion(model: torch.nn.Module, train_set: ChipDataset) -> torch.nn.Module | None:
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


def _loaders(
    train_set: ChipDataset,
    valid_set: ChipDataset,
    task: str,
    batch: int,
    seed: int,
    *,
    oversample: bool,
) -> tuple[DataLoader, DataLoader]:
    """Seeded training batches (shuffled, or oversampling rare classes) and validation ones."""
    collate = collate_detection if task in DETECTION_TASKS else None
    sampler = None
    if oversample:
        sampler = WeightedRandomSampler(
            train_set.oversampling_weights(),
            len(train_set),
            replacement=True,
            generator=torch.Generator().manual_seed(seed),
        )
    train_loader = DataLoader(
        train_set,
        batch_size=batch,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collate,
        drop_last=len(train_set) > batch,
        generator=torch.Generator().manual_seed(seed) if sampler is None else None,
    )
    valid_loader = DataLoader(valid_set, batch_size=batch, shuffle=False, collate_fn=collate)
    return train_loader, valid_loader
