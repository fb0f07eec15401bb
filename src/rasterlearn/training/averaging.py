"""An exponential moving average of the weights, validated and kept as the model.

Detectors trained from random weights on a few dozen objects end in very different places
from seed to seed; the average of the weights over the last steps of the one-cycle schedule
varies less. On the NEON demo split (FCOS, the Train tool's defaults with early stopping,
seeds 42, 1, 3, 4, 6, 7) the held-out AP50 of the raw weights ranged 0.09-0.41 (mean 0.27), of
the averaged weights 0.32-0.44 (mean 0.37; with a first version of the stop below, which
compared with the earlier scores too).

The average starts when the schedule's warm-up ends (:data:`~rasterlearn.training.task.WARM_UP`
of the steps), is a plain mean of the weights so far for its first steps and then an
exponential average with :data:`DECAY`. Validation scores the averaged weights, and the
best checkpoint holds them: they are swapped back when the next epoch starts, after the
checkpoints are written.

Early stopping (the Train tool's default) judges an averaged model only from
:func:`first_stop_epoch` on, once the average spans its horizon, and against its own scores
from then on (:class:`AverageEarlyStopping`): judged earlier, it still lags the weights.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, WeightAveraging

from rasterlearn.models.registry import ModelSpec
from rasterlearn.training.learning_rate import FAMILIES, rate_family
from rasterlearn.training.task import WARM_UP

DECAY = 0.98
"""Per-step decay of the average (its weights fall to 1/e in about 50 steps)."""
HORIZON_STEPS = round(1 / (1 - DECAY))
"""The steps the average spans once it is exponential."""
AVERAGED_FAMILIES = (FAMILIES["one-stage detector"],)
"""The model families trained with the average (where it was measured)."""


def averages_weights(spec: ModelSpec) -> bool:
    """Whether a model type trains with :class:`WeightAverage` (when it trains its whole
    schedule, without early stopping)."""
    return rate_family(spec.model_type, spec.task) in AVERAGED_FAMILIES


def first_stop_epoch(max_epochs: int, steps_per_epoch: int) -> int:
    """The first epoch after which early stopping may end an averaged run: the warm-up's
    epochs and then :data:`HORIZON_STEPS` steps of averaging (the whole schedule at most).

    A 9-chip FCOS run that early stopping judged from the end of the warm-up stopped after 8
    of 20 epochs with held-out AP50 0.28, against 0.85 trained through.
    """
    steps = WARM_UP * max_epochs * steps_per_epoch + HORIZON_STEPS
    return min(max_epochs, math.ceil(steps / max(1, steps_per_epoch)))


class AverageEarlyStopping(EarlyStopping):
    """Early stopping of an averaged run that judges its epochs from ``first_epoch`` on (see
    :func:`first_stop_epoch`), against their own scores only. The scores before are of the raw
    weights or a young average, which the average may not beat for several epochs: measured
    against them, a RetinaNet run on the synthetic scene (the Train tool's defaults, zooming
    then) stopped after 12 epochs at held-out AP50 0.32; judged from its first epoch on, it
    trained all 20 (0.67).

    Args:
        first_epoch: Epochs trained before the first one judged.
        *args: :class:`~lightning.pytorch.callbacks.EarlyStopping`'s.
        **kwargs: :class:`~lightning.pytorch.callbacks.EarlyStopping`'s.
    """

    def __init__(self, first_epoch: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_epoch = first_epoch

    def _should_skip_check(self, trainer: L.Trainer) -> bool:
        return super()._should_skip_check(trainer) or trainer.current_epoch + 1 < self.first_epoch


def _average(averaged: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    decay = min(DECAY, float(count) / (float(count) + 1))  # a plain mean until it reaches DECAY
    return decay * averaged + (1 - decay) * current


class WeightAverage(WeightAveraging):
    """Lightning's weight averaging, started after the warm-up and checkpointed as the model.

    Validation swaps the averaged weights into the model and they stay there until the next
    epoch starts (or training ends), so the checkpoints written after validation hold them
    (Lightning runs checkpoint callbacks after all others): the best model's, weights only,
    is the average; the last one keeps the current weights too, for ``--resume``.
    """

    def __init__(self) -> None:
        super().__init__(avg_fn=_average)
        self._first_step = 0
        self._in_place = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_step = int(WARM_UP * trainer.estimated_stepping_batches)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self._first_step

    def _averaged(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def _swap_back(self, pl_module: L.LightningModule) -> None:
        if self._in_place:
            self._swap_models(pl_module)
            self._in_place = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._averaged() and not self._in_place:
            self._swap_models(pl_module)
            self._in_place = True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # swapped back when the next epoch starts (see the class)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_back(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_back(pl_module)
        if self._averaged():
            super().on_train_end(trainer, pl_module)  # the model ends as the average

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not self._in_place:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            return
        # the model holds the average (already the checkpoint's state_dict) and the averaged
        # model the current weights
        state = self._average_model.state_dict()
        checkpoint["current_model_state"] = {
            name[len("module.") :]: value
            for name, value in state.items()
            if name.startswith("module.")
        }
        checkpoint["averaging_state"] = {
            name: value for name, value in state.items() if not name.startswith("module.")
        }
