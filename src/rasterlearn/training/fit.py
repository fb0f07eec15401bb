"""Fitting the model with Lightning: learning-rate range test, checkpoints, early stopping."""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from rasterlearn.progress import progress_bar
from rasterlearn.training.averaging import (
    AverageEarlyStopping,
    WeightAverage,
    averages_weights,
    first_stop_epoch,
)
from rasterlearn.training.learning_rate import (
    LearningRateChoice,
    find_learning_rate,
    rate_family,
    sweep_steps,
)
from rasterlearn.training.report import EpochRecord
from rasterlearn.training.settings import TrainingSettings
from rasterlearn.training.setup import TrainingSetup
from rasterlearn.training.task import TASK_METRICS, WARM_UP, TrainingTask, trains_channels_last

PATIENCE = 5
"""Epochs without improvement of the monitored metric before training stops early."""
# Lightning's banners and tips are noise in a tool's output; warnings still show.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class FitResult:
    """The fitted model, at its best checkpoint.

    Attributes:
        task: The Lightning task holding the model, with the best checkpoint's weights.
        learning_rate: The (peak) learning rate used and why.
        history: Loss and metrics per epoch.
        best_score: The monitored metric of the best checkpoint, or None if none was saved.
    """

    task: TrainingTask = field(repr=False)
    learning_rate: LearningRateChoice
    history: list[EpochRecord]
    best_score: float | None


class _History(Callback):
    """Records losses and metrics per epoch (the ArcGIS training log)."""

    def __init__(self, advance: Callable[..., None] = lambda n=1: None) -> None:
        self.records: list[EpochRecord] = []
        self._start = time.perf_counter()
        self._advance = advance

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
        self._advance(1)


def fit(settings: TrainingSettings, setup: TrainingSetup) -> FitResult | None:
    """Train ``setup.model`` for at most ``settings.max_epochs`` and reload its best checkpoint.

    Checkpoints go to ``settings.checkpoints``; with ``settings.resume`` training goes on from
    the last one.

    Returns:
        The fitted model (None in the other processes of a distributed run).
    """
    trainer_kwargs = _trainer_kwargs(settings)
    task = TrainingTask(
        setup.model,
        criterion=setup.criterion,
        mixup=bool(setup.model.model_args.get("mixup")),
        channels_last=trains_channels_last(setup.model.task, setup.chip_size),
    )
    choice = _learning_rate(settings, task, setup)
    task.lr = choice.rate

    epochs = contextlib.ExitStack()  # the epochs as a progress bar (its listener only)
    history = _History(epochs.enter_context(progress_bar("Training", settings.max_epochs, False)))
    # the best model needs only its weights; the last epoch's optimizer state is for --resume
    best = ModelCheckpoint(
        dirpath=settings.checkpoints,
        filename="best",
        monitor=setup.monitored_metric,
        mode=setup.monitor_mode,
        save_top_k=1,
        save_weights_only=True,
    )
    last = ModelCheckpoint(dirpath=settings.checkpoints, filename="last", save_top_k=1)
    callbacks: list[Callback] = [history, best, last]
    averaged = averages_weights(setup.spec)
    if averaged:
        callbacks.append(WeightAverage())
    if settings.stop_training:
        metric, mode = setup.monitored_metric, setup.monitor_mode
        callbacks.append(
            # an averaged run is judged once the average spans its steps, on its own scores
            AverageEarlyStopping(
                first_stop_epoch(settings.max_epochs, len(setup.train_loader)),
                metric,
                patience=PATIENCE,
                mode=mode,
            )
            if averaged
            else EarlyStopping(metric, patience=PATIENCE, mode=mode)
        )
    trainer = L.Trainer(
        **trainer_kwargs,
        max_epochs=settings.max_epochs,
        # no stop while the one-cycle schedule warms up: detectors score ~0 AP before that
        min_epochs=math.ceil(WARM_UP * settings.max_epochs),
        callbacks=callbacks,
        default_root_dir=str(settings.checkpoints),
    )
    resume_from = settings.checkpoints / "last.ckpt"
    with epochs, _quiet_lightning():
        trainer.fit(
            task,
            setup.train_loader,
            setup.valid_loader,
            ckpt_path=str(resume_from) if settings.resume and resume_from.exists() else None,
        )
    if not trainer.is_global_zero:
        return None  # in distributed training only the first process writes the model folder
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        task.load_state_dict(state["state_dict"])
    score = best.best_model_score
    return FitResult(task, choice, history.records, float(score) if score is not None else None)


def _trainer_kwargs(settings: TrainingSettings) -> dict[str, Any]:
    """The Lightning trainer options.

    Several devices or nodes train with DDP (over gloo on the CPU, where the processes of a
    machine share its cores); some parameters of a detector may get no gradient in a step
    (e.g. encoder stages past the pyramid levels used), which DDP must be told.
    """
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    devices = settings.devices or ("auto" if accelerator == "gpu" else 1)
    distributed = settings.num_nodes > 1 or (isinstance(devices, int) and devices > 1)
    if accelerator == "cpu" and isinstance(devices, int) and devices > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // devices))
    return {
        "accelerator": accelerator,
        "devices": devices,
        "strategy": "ddp_find_unused_parameters_true" if distributed else "auto",
        "num_nodes": settings.num_nodes,
        "precision": "16-mixed" if accelerator == "gpu" else "32-true",
        "logger": False,
        "enable_model_summary": False,
        "enable_progress_bar": bool(settings.progress),
        "deterministic": False,
        "num_sanity_val_steps": 0,
    }


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


def _learning_rate(
    settings: TrainingSettings, task: TrainingTask, setup: TrainingSetup
) -> LearningRateChoice:
    """The learning rate given, or a checked range test's (see :mod:`.learning_rate`).

    The range test leaves the model's weights and the training loader's shuffling as they were.
    """
    if settings.learning_rate:
        return LearningRateChoice.given(settings.learning_rate)
    family = rate_family(setup.spec.model_type, setup.spec.task)
    devices = settings.devices
    if settings.num_nodes > 1 or (isinstance(devices, int) and devices > 1):
        return LearningRateChoice(
            family.known_good,
            "fallback",
            "a distributed run does not run the range test (its processes would have to "
            f"agree); the known-good {family.name} rate is used",
            family,
        )
    loader = setup.train_loader
    generators = [
        g for g in (loader.generator, getattr(loader.sampler, "generator", None)) if g is not None
    ]
    states = [g.get_state() for g in generators]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task.to(device)
    try:
        return find_learning_rate(
            task.model,
            lambda batch: task.batch_loss(_on(device, batch)),
            lambda: iter(loader),
            family,
            seed=settings.seed,
            sweep_steps=sweep_steps(len(loader)),
            weight_decay=task.weight_decay,
        )
    finally:
        task.cpu()
        for g, state in zip(generators, states, strict=True):
            g.set_state(state)


def _on(device: torch.device, batch: Any) -> Any:
    """A batch (tensors in tuples, lists and dicts) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _on(device, v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_on(device, v) for v in batch)
    return batch
