"""The Lightning module's validation of detectors (no trainer needed)."""

from __future__ import annotations

import torch

from rasterlearn.models.registry import build_model
from rasterlearn.training.task import TrainingTask, trains_channels_last


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


def test_channels_last_training_gives_the_same_losses_and_gradients() -> None:
    """Same loss, and with batch norms on their running statistics the same gradients. (With
    batch statistics of a fresh model on two small chips both layouts' float32 gradients are
    about 0.5 % from a float64 run's, the layouts as close to it as each other.)"""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 64, 64, generator=g)
    masks = torch.randint(0, 3, (2, 64, 64), generator=g)
    tasks = []
    for channels_last in (False, True):
        torch.manual_seed(5)
        model = build_model("UNET", 2, 3, "resnet18")
        tasks.append(TrainingTask(model, channels_last=channels_last))
    plain, laid_out = tasks
    first = next(laid_out.model.parameters())
    assert first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        train_losses = [float(task._loss((images, masks))) for task in tasks]
    assert abs(train_losses[0] - train_losses[1]) < 1e-5
    for task in tasks:
        task.model.eval()
        task._loss((images, masks)).backward()
    for a, b in zip(plain.model.parameters(), laid_out.model.parameters(), strict=True):
        assert float((a.grad - b.grad).norm()) <= 1e-4 * float(a.grad.norm()) + 1e-8


def test_pixel_classifiers_train_channels_last_from_192_px() -> None:
    assert trains_channels_last("pixel", 256) and trains_channels_last("pixel", 192)
    assert not trains_channels_last("pixel", 128)
    assert not trains_channels_last("classification", 256)
    assert not trains_channels_last("detection", 512)
