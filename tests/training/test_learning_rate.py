"""The learning-rate choice: a checked range test against rates found by a grid search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rasterlearn.training.learning_rate import (
    FAMILIES,
    RateFamily,
    find_learning_rate,
    rate_family,
    smooth,
    valley,
)

WIDE = RateFamily("test", 1e-5, 1.0, 1e-2)
"""Bounds that leave the range test's valley alone."""
STEPS = 40
"""Training steps of the grid search (about the sweep's length)."""


def _problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP regressing a smooth non-linear function of 8 inputs (fast on a CPU)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=g)
    w = torch.randn(8, 4, generator=g)
    y = torch.tanh(x @ w).sum(1, keepdim=True) + 0.05 * torch.randn(512, 1, generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    return model, x, y


def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 32):
    """A fresh shuffled pass each call (the order of each pass is fixed by a counter)."""
    passes = iter(range(10**6))

    def one_pass():
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(next(passes)))
        for i in range(0, len(x), size):
            idx = order[i : i + size]
            yield x[idx], y[idx]

    return one_pass


def _mse(model: nn.Module):
    return lambda batch: nn.functional.mse_loss(model(batch[0]), batch[1])


def _grid_best(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The rate of the lowest loss after STEPS AdamW steps (one-cycle, as training does)."""
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    rates = np.geomspace(1e-4, 1.0, 9)
    finals = []
    for rate in rates:
        model.load_state_dict(initial)
        optimizer = torch.optim.AdamW(model.parameters(), lr=rate, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, rate, total_steps=STEPS)
        stream = _batches(x, y)
        batches = (b for _ in range(100) for b in stream())
        for _ in range(STEPS):
            xb, yb = next(batches)
            optimizer.zero_grad()
            nn.functional.mse_loss(model(xb), yb).backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            loss = float(nn.functional.mse_loss(model(x), y))
        finals.append(loss if np.isfinite(loss) else np.inf)
    model.load_state_dict(initial)
    return float(rates[int(np.argmin(finals))])


def test_range_test_lands_within_10x_of_the_grid_search_best():
    model, x, y = _problem()
    best = _grid_best(model, x, y)
    choice = find_learning_rate(model, _mse(model), _batches(x, y), WIDE, seed=3)
    assert choice.rule == "valley", choice
    assert best / 10 <= choice.rate <= best * 10, (choice.rate, best)
    assert choice.loss_after < choice.loss_before
    assert "valley" in choice.describe()


def test_weights_and_random_state_are_restored_and_the_choice_repeats():
    model, x, y = _problem(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    first = find_learning_rate(model, _mse(model), _batches(x, y), WIDE, seed=5)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), rng)
    again = find_learning_rate(model, _mse(model), _batches(x, y), WIDE, seed=5)
    assert again.rate == first.rate and again.curve == first.curve


def test_a_rate_at_which_the_loss_does_not_fall_is_replaced_by_the_known_good_one():
    model, x, y = _problem(2)
    # bounds far above any usable rate: the valley is clamped to 10, which the check refuses
    absurd = RateFamily("absurd", 10.0, 100.0, 3e-3)
    choice = find_learning_rate(model, _mse(model), _batches(x, y), absurd, seed=0)
    assert choice.rule == "fallback"
    assert choice.rate == 3e-3
    assert "did not lower the loss" in choice.reason and "known-good" in choice.reason
    assert choice.loss_after < choice.loss_before  # the fallback was checked too
    emd = choice.to_emd()
    assert emd["Rule"] == "fallback" and emd["Family"] == "absurd"


def test_smoothing_and_the_valley_rule():
    flat = np.full(20, 2.0)
    np.testing.assert_allclose(smooth(flat), flat)
    assert valley(flat) is None
    # flat, then a descent from step 10 to 30, then divergence
    curve = np.concatenate([np.full(10, 3.0), np.linspace(3.0, 1.0, 21)[1:], np.linspace(1, 5, 8)])
    start, end = valley(smooth(curve, 3))
    assert start <= 10 and 28 <= end <= 30  # the flat start is level: any point of it


@pytest.mark.parametrize(
    ("model_type", "task", "family"),
    [
        ("FASTERRCNN", "detection", "two-stage detector"),
        ("MASKRCNN", "instance", "two-stage detector"),
        ("FCOS", "detection", "one-stage detector"),
        ("UNET", "pixel", "segmentation"),
        ("FEATURE_CLASSIFIER", "classification", "classification"),
    ],
)
def test_families(model_type, task, family):
    chosen = rate_family(model_type, task)
    assert chosen is FAMILIES[family]
    assert chosen.low <= chosen.known_good <= chosen.high
