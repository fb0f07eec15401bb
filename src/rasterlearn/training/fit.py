"""Fitting the model with Lightning: learning-rate range test, checkpoints, early stopping."""

from __future__ import annotations

import contextlib
import io
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
from torch.utils.data import DataLoader

from rasterlearn.progress import progress_bar
from rasterlearn.training.report import EpochRecord
from rasterlearn.training.settings import TrainingSettings
from rasterlearn.training.setup import TrainingSetup
from rasterlearn.training.task import TASK_METRICS, TrainingTask

DEFAULT_LEARNING_RATE = 1e-3
"""The learning rate when none is given and the range test cannot decide (or cannot run)."""
# Lightning's banners and tips are noise in a tool's output; warnings still show.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class FitResult:
    """The fitted model, at its best checkpoint.

    Attributes:
        task: The Lightning task holding the model, with the best checkpoint's weights.
        learning_rate: The (peak) learning rate used.
        history: Loss and metrics per epoch.
        best_score: The monitored metric of the best checkpoint, or None if none was saved.
    """

    task: TrainingTask = field(repr=False)
    learning_rate: float
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
        learning_rate=settings.learning_rate or 1e-3,
        criterion=setup.criterion,
        mixup=bool(setup.model.model_args.get("mixup")),
    )
    lr = float(settings.learning_rate) if settings.learning_rate else None
    if lr is None:
        lr = _learning_rate(settings, trainer_kwargs, task, setup)
        task.lr = lr

    epochs = contextlib.ExitStack()  # the epochs as a progress bar (its listener only)
    history = _History(epochs.enter_context(progress_bar("Training", settings.max_epochs, False)))
    best = ModelCheckpoint(
        dirpath=settings.checkpoints,
        filename="best",
        monitor=settings.monitored_metric,
        mode=settings.monitor_mode,
        save_last=True,
        save_top_k=1,
    )
    callbacks: list[Callback] = [history, best]
    if settings.stop_training:
        callbacks.append(
            EarlyStopping(settings.monitored_metric, patience=5, mode=settings.monitor_mode)
        )
    trainer = L.Trainer(
        **trainer_kwargs,
        max_epochs=settings.max_epochs,
        callbacks=callbacks,
        default_root_dir=str(settings.checkpoints),
    )
    last = settings.checkpoints / "last.ckpt"
    with epochs, _quiet_lightning():
        trainer.fit(
            task,
            setup.train_loader,
            setup.valid_loader,
            ckpt_path=str(last) if settings.resume and last.exists() else None,
        )
    if not trainer.is_global_zero:
        return None  # in distributed training only the first process writes the model folder
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        task.load_state_dict(state["state_dict"])
    score = best.best_model_score
    return FitResult(task, lr, history.records, float(score) if score is not None else None)


def _trainer_kwargs(settings: TrainingSettings) -> dict[str, Any]:
    """The Lightning trainer options shared by the range test and the fit."""
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    return {
        "accelerator": accelerator,
        "devices": settings.devices or ("auto" if accelerator == "gpu" else 1),
        "num_nodes": settings.num_nodes,
        "precision": "16-mixed" if accelerator == "gpu" else "32-true",
        "logger": False,
        "enable_model_summary": False,
        "enable_progress_bar": bool(settings.progress),
        "deterministic": False,
        "num_sanity_val_steps": 0,
    }


def _learning_rate(
    settings: TrainingSettings,
    trainer_kwargs: dict[str, Any],
    task: TrainingTask,
    setup: TrainingSetup,
) -> float:
    """The learning rate when none is given."""
    devices = settings.devices
    distributed = settings.num_nodes > 1 or (isinstance(devices, int) and devices > 1)
    if distributed:  # Lightning's range test runs in one process
        return DEFAULT_LEARNING_RATE
    return _learning_rate_finder(
        {**trainer_kwargs, "default_root_dir": str(settings.checkpoints)},
        task,
        setup.train_loader,
        setup.valid_loader,
    )


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


def _learning_rate_finder(
    trainer_kwargs: dict[str, Any],
    task: TrainingTask,
    train_loader: DataLoader,
    valid_loader: DataLoader,
) -> float:
    """Lightning's learning-rate range test; a safe default when it cannot decide."""
    from lightning.pytorch.tuner import Tuner

    trainer = L.Trainer(**{**trainer_kwargs, "callbacks": [], "max_epochs": 1000})
    steps = max(20, min(60, 3 * len(train_loader)))
    try:
        with _quiet_lightning(), contextlib.redirect_stderr(io.StringIO()):
            finder = Tuner(trainer).lr_find(
                task,
                train_loader,
                valid_loader,
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
