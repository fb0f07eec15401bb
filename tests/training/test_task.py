"""The Lightning module's validation of detectors (no trainer needed)."""

from __future__ import annotations

import torch

from rasterlearn.models.registry import build_model
from rasterlearn.training.task import TrainingTask


def _batch() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=g)
    boxes = torch.tensor([[4.0, 6.0, 30.0, 28.0], [36.0, 30.0, 60.0, 58.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2])} for _ in range(2)]
    return images, targets


def test_detector_validation_loss_is_reproducible_and_leaves_training_draws_alone() -> None:
    torch.manual_seed(3)
    task = TrainingTask(build_model("FASTERRCNN", 2, 3, "mobilenet_v3_small", 64))
    logged: dict[str, list[float]] = {}
    task.log = lambda name, value, **_: logged.setdefault(name, []).append(float(value))
    batch = _batch()
    # the training-mode loss samples anchors and proposals: two draws differ
    task.model.train()
    with torch.no_grad():
        assert float(task._loss(batch)) != float(task._loss(batch))
    state = torch.get_rng_state()
    with torch.no_grad():
        task.validation_step(batch, 0)
        task.validation_step(batch, 0)
    assert logged["valid_loss"][0] == logged["valid_loss"][1]
    assert torch.equal(torch.get_rng_state(), state)
