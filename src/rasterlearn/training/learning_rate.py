"""The learning rate when none is given: a range test that is checked before it is trusted.

The range test (Smith's "LR range test", as fastai's ``lr_find``) trains a copy of the initial
weights for a few dozen steps while the rate grows exponentially, and records the loss of each
step. Lightning's suggestion (the steepest slope of that curve) follows the noise of 20-60
batches and is then clamped, which gave the floor for one detector and the ceiling for another.
Here instead:

1. the sweep runs from a tenth of the model family's lowest sensible rate upwards and stops
   once the loss diverges;
2. the curve is smoothed with a centred moving average (no lag, unlike an exponential one);
3. the *valley rule*: the longest descending stretch of the smoothed curve (as fastai's
   ``valley``), and the rate where the smoothed loss has come half way down it. fastai takes
   the rate half way along the stretch in steps, which lands on the flat start of the curve
   when the sweep begins far below the useful rates; half way down in loss is the steep part,
   wherever the stretch begins;
4. the rate is kept within the family's bounds (:data:`FAMILIES`);
5. the rate is *checked*: from the initial weights, a few steps at that constant rate must
   lower the loss of a few fixed batches; otherwise the family's known-good rate is used.

The initial weights (and batch-norm statistics), the random generators and the training
loader's shuffling are restored afterwards, so training starts exactly as it would have without
the test, and the choice is the same for the same seed. What was chosen and why is a
:class:`LearningRateChoice`, written to the training log and the ``.emd``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

SWEEP_STEPS = (40, 100)
"""Fewest and most steps of a sweep (three epochs' worth in between)."""
CHECK_STEPS = 8
"""Steps from the initial weights at the chosen rate that must lower the loss."""
PROBE_BATCHES = 2
"""Fixed batches whose loss is compared before and after the check's steps."""
DIVERGED = 4.0
"""The sweep stops when the loss exceeds this multiple of its lowest value so far."""
VALLEY_FRACTION = 0.5
"""The rate chosen is where the smoothed loss has come this fraction of the way down the valley."""
MIN_DESCENT = 0.05
"""A valley must lower the smoothed loss by at least this fraction of its start."""


@dataclass(frozen=True)
class RateFamily:
    """Bounds and a known-good rate for a kind of model (AdamW, one-cycle schedule).

    Attributes:
        name: The family, as the log names it.
        low: Lowest rate the range test may choose.
        high: Highest rate the range test may choose.
        known_good: The rate used when the range test's choice does not make the loss fall
            (measured on the synthetic scene and the NEON sample, from scratch).
    """

    name: str
    low: float
    high: float
    known_good: float


FAMILIES = {
    "segmentation": RateFamily("segmentation", 1e-4, 1e-2, 2e-3),
    "classification": RateFamily("classification", 1e-4, 1e-2, 2e-3),
    # the valley lies low for detectors trained from scratch (7e-5 RetinaNet, 3.7e-4 FCOS on
    # the synthetic scene, 8.5e-4 FCOS on NEON), and each did worse there than at 2e-3
    "one-stage detector": RateFamily("one-stage detector", 1e-3, 5e-3, 2e-3),
    # from scratch with batch norm and small batches the R-CNNs need lower rates
    "two-stage detector": RateFamily("two-stage detector", 3e-5, 1e-3, 3e-4),
}
"""The rate families, keyed by name."""
_TWO_STAGE = ("FASTERRCNN", "MASKRCNN")


def rate_family(model_type: str, task: str) -> RateFamily:
    """The family of a model type (by its task; R-CNNs apart from the one-stage detectors)."""
    if model_type.upper() in _TWO_STAGE:
        return FAMILIES["two-stage detector"]
    if task in ("detection", "instance"):
        return FAMILIES["one-stage detector"]
    if task == "classification":
        return FAMILIES["classification"]
    return FAMILIES["segmentation"]


@dataclass(frozen=True)
class LearningRateChoice:
    """The peak learning rate of a run and why it was chosen.

    Attributes:
        rate: The rate used.
        rule: ``given`` (by the user), ``valley`` (the range test's valley, checked),
            ``bounded valley`` (the valley clamped to the family's bounds, checked) or
            ``fallback`` (the family's known-good rate).
        reason: One sentence on why this rate.
        family: The model family whose bounds applied (None when given).
        suggestion: The range test's valley before the bounds (None without a valley).
        loss_before: Loss of the probe batches at the initial weights (None without check).
        loss_after: The same after :data:`CHECK_STEPS` steps at the chosen rate.
        curve: ``(rate, loss, smoothed loss)`` of each sweep step.
    """

    rate: float
    rule: str
    reason: str
    family: RateFamily | None = None
    suggestion: float | None = None
    loss_before: float | None = None
    loss_after: float | None = None
    curve: tuple[tuple[float, float, float], ...] = field(default=(), repr=False)

    @classmethod
    def given(cls, rate: float) -> LearningRateChoice:
        """The rate the user gave."""
        return cls(float(rate), "given", "given as learning_rate")

    def describe(self) -> str:
        """One line for the training log: the rate, the rule and why."""
        return f"learning rate {self.rate:.2e} ({self.rule}): {self.reason}"

    def to_emd(self) -> dict[str, Any]:
        """The ``LearningRateChoice`` value of the ``.emd``."""
        out: dict[str, Any] = {"Rule": self.rule, "Reason": self.reason}
        if self.family is not None:
            out["Family"] = self.family.name
            out["Bounds"] = [f"{self.family.low:.1e}", f"{self.family.high:.1e}"]
            out["KnownGood"] = f"{self.family.known_good:.1e}"
        if self.suggestion is not None:
            out["RangeTestValley"] = f"{self.suggestion:.4e}"
        if self.loss_before is not None and self.loss_after is not None:
            out["CheckLoss"] = [round(self.loss_before, 6), round(self.loss_after, 6)]
        return out


LossOf = Callable[[Any], torch.Tensor]
"""The training loss of one batch (the model in training mode)."""


def find_learning_rate(
    model: nn.Module,
    loss_of: LossOf,
    batches: Callable[[], Iterable[Any]],
    family: RateFamily,
    *,
    seed: int,
    sweep_steps: int = SWEEP_STEPS[0],
    weight_decay: float = 1e-4,
) -> LearningRateChoice:
    """Choose a peak learning rate for AdamW by a checked range test (see the module).

    Args:
        model: The network at its initial weights; they are restored before returning.
        loss_of: The training loss of a batch.
        batches: A fresh pass over the training batches each call (passes are chained).
        family: Bounds and the known-good rate of the model's family.
        seed: Seeds the random draws of the test (dropout, detector sampling).
        sweep_steps: Steps of the sweep.
        weight_decay: AdamW's weight decay, as in training.

    Returns:
        The rate and why it was chosen.
    """
    initial = copy.deepcopy(model.state_dict())
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=_cuda_devices(model)):
            torch.manual_seed(seed)
            stream = _chained(batches)
            probe = [next(stream) for _ in range(PROBE_BATCHES)]
            rates = np.geomspace(family.low / 10, min(1.0, family.high * 100), sweep_steps)
            losses = _sweep(model, loss_of, stream, rates, weight_decay)
            model.load_state_dict(initial)
            choice = _choose(rates[: len(losses)], np.asarray(losses), family)
            return _checked(choice, model, loss_of, probe, stream, initial, seed, weight_decay)
    finally:
        model.load_state_dict(initial)
        model.train(was_training)


def _chained(batches: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    while True:
        empty = True
        for batch in batches():
            empty = False
            yield batch
        if empty:
            raise ValueError("no training batches for the learning-rate range test")


def _optimizer(model: nn.Module, rate: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=rate, weight_decay=weight_decay)


def _sweep(
    model: nn.Module,
    loss_of: LossOf,
    stream: Iterator[Any],
    rates: np.ndarray,
    weight_decay: float,
) -> list[float]:
    """The loss of each step as the rate grows; stops early once it diverges."""
    optimizer = _optimizer(model, float(rates[0]), weight_decay)
    losses: list[float] = []
    average, best = None, math.inf
    for rate in rates:
        for group in optimizer.param_groups:
            group["lr"] = float(rate)
        loss = _step(model, loss_of, next(stream), optimizer)
        if not math.isfinite(loss):
            break
        losses.append(loss)
        average = loss if average is None else 0.7 * average + 0.3 * loss
        best = min(best, average)
        if len(losses) >= 5 and average > DIVERGED * best:
            break
    return losses


def _step(model: nn.Module, loss_of: LossOf, batch: Any, optimizer: torch.optim.Optimizer) -> float:
    """One optimisation step; the loss before it (NaN when the model broke down)."""
    optimizer.zero_grad(set_to_none=True)
    try:
        loss = loss_of(batch)
    except (RuntimeError, ValueError, AssertionError):
        return math.nan  # e.g. torchvision refusing boxes made of NaNs at a far too high rate
    if not torch.isfinite(loss):
        return math.nan
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def smooth(losses: np.ndarray, window: int | None = None) -> np.ndarray:
    """Centred moving average (the window shrinks at the ends), so the curve does not lag.

    Args:
        losses: The loss of each sweep step.
        window: Odd window length; default about a tenth of the steps, at least 3.
    """
    n = len(losses)
    if window is None:
        window = max(3, n // 10)
    half = window // 2
    sums = np.concatenate([[0.0], np.cumsum(losses, dtype=float)])
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + half + 1, 0, n)
    return (sums[hi] - sums[lo]) / (hi - lo)


def valley(smoothed: np.ndarray) -> tuple[int, int] | None:
    """Start and end step of the longest descending stretch of a smoothed loss curve.

    The stretch is the longest strictly decreasing subsequence (fastai's ``valley``); None when
    it lowers the loss by less than :data:`MIN_DESCENT` of its start (no valley).
    """
    n = len(smoothed)
    if n < 3:
        return None
    length = np.ones(n, dtype=int)
    first = np.arange(n)
    for i in range(1, n):
        lower = np.nonzero(smoothed[:i] > smoothed[i])[0]
        if len(lower):
            j = lower[np.argmax(length[lower])]
            length[i], first[i] = length[j] + 1, first[j]
    end = int(np.argmax(length))
    start = int(first[end])
    if smoothed[start] - smoothed[end] < MIN_DESCENT * abs(smoothed[start]):
        return None
    return start, end


def _choose(rates: np.ndarray, losses: np.ndarray, family: RateFamily) -> LearningRateChoice:
    """The valley rule and the family's bounds, before the check."""
    if len(losses) < 5:
        return _fallback(family, f"the loss diverged after {len(losses)} of the sweep's steps")
    smoothed = smooth(losses)
    curve = tuple(zip(rates.tolist(), losses.tolist(), smoothed.tolist(), strict=True))
    found = valley(smoothed)
    if found is None:
        return _fallback(
            family,
            f"the range test's loss did not fall between {rates[0]:.1e} and {rates[-1]:.1e}",
            curve,
        )
    start, end = found
    target = smoothed[start] - VALLEY_FRACTION * (smoothed[start] - smoothed[end])
    step = start + int(np.argmax(smoothed[start : end + 1] <= target))
    suggestion = float(rates[step])
    rate = min(max(suggestion, family.low), family.high)
    where = (
        f"half way down the range test's valley in loss ({smoothed[start]:.4g} at "
        f"{rates[start]:.1e} to {smoothed[end]:.4g} at {rates[end]:.1e})"
    )
    if rate == suggestion:
        return LearningRateChoice(rate, "valley", where, family, suggestion, curve=curve)
    side = "lowest" if rate > suggestion else "highest"
    reason = (
        f"{where} was {suggestion:.1e}, outside the {family.name} bounds "
        f"{family.low:.0e}-{family.high:.0e}: the {side} bound"
    )
    return LearningRateChoice(rate, "bounded valley", reason, family, suggestion, curve=curve)


def _fallback(
    family: RateFamily, why: str, curve: tuple = (), suggestion: float | None = None
) -> LearningRateChoice:
    reason = f"{why}; the known-good {family.name} rate is used instead"
    return LearningRateChoice(
        family.known_good, "fallback", reason, family, suggestion, curve=curve
    )


def _checked(
    choice: LearningRateChoice,
    model: nn.Module,
    loss_of: LossOf,
    probe: list[Any],
    stream: Iterator[Any],
    initial: dict[str, torch.Tensor],
    seed: int,
    weight_decay: float,
) -> LearningRateChoice:
    """The choice if the loss falls at its rate from the initial weights, else the fallback."""
    before, after = _check(model, loss_of, probe, stream, initial, choice.rate, seed, weight_decay)
    fell = math.isfinite(after) and after < before
    numbers = {"loss_before": before, "loss_after": after}
    if choice.rule == "fallback" or fell:
        reason = choice.reason
        if choice.rule != "fallback":
            reason += f"; {CHECK_STEPS} steps at it lowered the loss ({before:.4g} -> {after:.4g})"
        return replace(choice, reason=reason, **numbers)
    family = choice.family
    assert family is not None
    why = (
        f"{CHECK_STEPS} steps at the range test's {choice.rate:.1e} did not lower the loss "
        f"({before:.4g} -> {after:.4g})"
    )
    fallback = _fallback(family, why, choice.curve, choice.suggestion)
    before, after = _check(
        model, loss_of, probe, stream, initial, fallback.rate, seed, weight_decay
    )
    return replace(fallback, loss_before=before, loss_after=after)


def _check(
    model: nn.Module,
    loss_of: LossOf,
    probe: list[Any],
    stream: Iterator[Any],
    initial: dict[str, torch.Tensor],
    rate: float,
    seed: int,
    weight_decay: float,
) -> tuple[float, float]:
    """Probe loss at the initial weights and after :data:`CHECK_STEPS` steps at ``rate``."""
    model.load_state_dict(initial)
    before = _probe_loss(model, loss_of, probe, seed)
    optimizer = _optimizer(model, rate, weight_decay)
    for _ in range(CHECK_STEPS):
        if not math.isfinite(_step(model, loss_of, next(stream), optimizer)):
            return before, math.nan
    after = _probe_loss(model, loss_of, probe, seed)
    model.load_state_dict(initial)
    return before, after


def _probe_loss(model: nn.Module, loss_of: LossOf, probe: list[Any], seed: int) -> float:
    """Mean training-mode loss of the probe batches, with the same random draws each time."""
    total = 0.0
    with torch.no_grad(), torch.random.fork_rng(devices=_cuda_devices(model)):
        torch.manual_seed(seed)
        for batch in probe:
            try:
                total += float(loss_of(batch))
            except (RuntimeError, ValueError, AssertionError):
                return math.nan
    return total / len(probe)


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def sweep_steps(batches_per_epoch: int) -> int:
    """Steps of a sweep: three epochs' worth, within :data:`SWEEP_STEPS`."""
    return int(min(max(3 * batches_per_epoch, SWEEP_STEPS[0]), SWEEP_STEPS[1]))
