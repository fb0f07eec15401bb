"""The weight average: its arithmetic, when it starts, and that the best checkpoint holds it."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from rasterlearn.models.registry import MODEL_TYPES
from rasterlearn.training.averaging import (
    DECAY,
    HORIZON_STEPS,
    AverageEarlyStopping,
    WeightAverage,
    averages_weights,
    first_stop_epoch,
)
from rasterlearn.training.task import WARM_UP


class _Drift(L.LightningModule):
    """One weight that plain SGD on ``(w - 1)^2`` moves towards 1; validation reports it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return ((self.w - 1) ** 2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("score", self.w.detach().sum())  # the last epoch's weight is the best

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Trajectory(Callback):
    def __init__(self) -> None:
        self.weights: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append(float(pl_module.w.detach()))


def _expected_average(weights: list[float], first: int) -> float:
    average = weights[first]
    for count, w in enumerate(weights[first + 1 :], start=1):
        decay = min(DECAY, count / (count + 1))
        average = decay * average + (1 - decay) * w
    return average


def test_the_best_checkpoint_holds_the_average_and_validation_scores_it(tmp_path):
    data = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1)
    trajectory = _Trajectory()
    best = ModelCheckpoint(tmp_path, "best", monitor="score", mode="max", save_weights_only=True)
    last = ModelCheckpoint(tmp_path, "last", save_top_k=1)
    trainer = L.Trainer(
        max_epochs=5,
        callbacks=[trajectory, best, last, WeightAverage()],  # as training/fit.py
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(_Drift(), data, data)

    first = int(WARM_UP * 20)
    average = _expected_average(trajectory.weights, first)
    assert 0.5 < average < trajectory.weights[-1]  # the average lags the raw weight
    state = torch.load(best.best_model_path, weights_only=True)["state_dict"]
    assert float(state["w"]) == pytest.approx(average, rel=1e-5)
    assert float(best.best_model_score) == pytest.approx(average, rel=1e-5)
    resumable = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert float(resumable["state_dict"]["w"]) == pytest.approx(average, rel=1e-5)
    assert float(resumable["current_model_state"]["w"]) == pytest.approx(trajectory.weights[-1])


class _Worsening(_Drift):
    """Validation reports a score that falls every epoch: early stopping wants to stop."""

    def validation_step(self, batch, batch_idx):
        self.log("score", -self.w.detach().sum())


def test_early_stopping_judges_the_average_once_it_spans_its_horizon(tmp_path):
    steps, epochs, patience = 4, 30, 5
    first = first_stop_epoch(epochs, steps)
    assert HORIZON_STEPS == 50
    assert first == 20  # 30 warm-up steps and 50 more
    data = torch.utils.data.DataLoader(torch.zeros(steps, 1), batch_size=1)
    trajectory = _Trajectory()
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[
            trajectory,
            AverageEarlyStopping(first, "score", patience=patience, mode="max"),
            WeightAverage(),
        ],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    module = _Worsening()  # its score falls every epoch: plain early stopping ends at epoch 6
    trainer.fit(module, data, data)
    # the first epoch judged sets the best score; the patience runs from there
    assert trainer.current_epoch == first + patience
    # the model ends as the average of the steps after the warm-up
    average = _expected_average(trajectory.weights, int(WARM_UP * steps * epochs))
    assert float(module.w.detach()) == pytest.approx(average, rel=1e-5)


def test_a_short_run_is_judged_only_at_its_end():
    assert first_stop_epoch(20, 2) == 20
    assert first_stop_epoch(3, 100) == 2  # 75 warm-up steps and 50 more


def test_the_average_starts_after_the_warm_up_and_is_a_plain_mean_at_first():
    averager = WeightAverage()
    averager._first_step = 3
    assert not averager.should_update(step_idx=2)
    assert averager.should_update(step_idx=3)
    assert not averager.should_update(epoch_idx=1)
    assert _expected_average([0.0, 0.0, 0.0, 1.0, 2.0, 3.0], 3) == pytest.approx(2.0)


def test_only_one_stage_detectors_average_their_weights():
    averaged = {name for name, spec in MODEL_TYPES.items() if averages_weights(spec)}
    assert {"FCOS", "RETINANET"} <= averaged
    assert not averaged & {"FASTERRCNN", "MASKRCNN", "UNET", "FEATURE_CLASSIFIER"}
