"""Pixel losses of the model arguments, against independent numpy formulas and torch's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rasterlearn.training.losses import (
    SegmentationLoss,
    class_balance_weights,
    mixup_batch,
    mixup_loss,
)

K1 = 4  # classes with background


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Imbalanced targets: mostly class 0, a few pixels of 1 and 2, none of 3."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, K1, 8, 8, generator=g)
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, :2, :3] = 1
    target[1, 5:, 6:] = 2
    return logits, target


def _np_softmax(logits: torch.Tensor) -> np.ndarray:
    x = logits.double().numpy()
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _p_true(logits: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    p = _np_softmax(logits)
    t = target.numpy()
    return np.take_along_axis(p, t[:, None], 1)[:, 0]


def test_class_balance_weights_are_arcgis_inverse_frequencies() -> None:
    counts = np.array([900, 80, 20, 0])
    w = class_balance_weights(counts).numpy()
    expected = counts.sum() / counts[:3]
    np.testing.assert_allclose(w[:3], expected, rtol=1e-6)
    assert w[3] == pytest.approx(expected.max())  # an unseen class: the largest weight
    with pytest.raises(ValueError, match="at least one"):
        class_balance_weights([0, 0])


def test_plain_loss_is_cross_entropy(batch) -> None:
    logits, target = batch
    torch.testing.assert_close(
        SegmentationLoss(K1)(logits, target), torch.nn.functional.cross_entropy(logits, target)
    )


def test_class_weights_change_the_loss_as_weighted_cross_entropy(batch) -> None:
    logits, target = batch
    counts = np.bincount(target.numpy().ravel(), minlength=K1)
    weights = class_balance_weights(counts)
    balanced = SegmentationLoss(K1, weights)(logits, target)
    w = weights.numpy()[target.numpy()]
    expected = (w * -np.log(_p_true(logits, target))).sum() / w.sum()
    assert float(balanced) == pytest.approx(expected, rel=1e-5)
    assert abs(float(balanced) - float(SegmentationLoss(K1)(logits, target))) > 0.01
    torch.testing.assert_close(
        balanced, torch.nn.functional.cross_entropy(logits, target, weight=weights)
    )


def test_focal_loss(batch) -> None:
    logits, target = batch
    pt = _p_true(logits, target)
    expected = np.mean((1 - pt) ** 2 * -np.log(pt))
    got = SegmentationLoss(K1, focal=True)(logits, target)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(got) < float(SegmentationLoss(K1)(logits, target))  # easy pixels count less


def test_ignored_classes_add_nothing(batch) -> None:
    logits, target = batch
    got = SegmentationLoss(K1, ignore=[0])(logits, target)
    torch.testing.assert_close(
        got, torch.nn.functional.cross_entropy(logits, target, ignore_index=0)
    )
    changed = logits.permute(0, 2, 3, 1).clone()  # new logits on background pixels only
    changed[target == 0] = torch.randn(int((target == 0).sum()), K1)
    changed = changed.permute(0, 3, 1, 2)
    torch.testing.assert_close(SegmentationLoss(K1, ignore=[0])(changed, target), got)
    everything = SegmentationLoss(K1, ignore=[0, 1, 2])(logits, target)
    assert float(everything) == 0.0  # no pixel left: 0, not NaN


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_dice_share(batch, average: str) -> None:
    logits, target = batch
    p = _np_softmax(logits)
    y = np.eye(K1)[target.numpy()].transpose(0, 3, 1, 2)
    inter = (p * y).sum((0, 2, 3))
    total = p.sum((0, 2, 3)) + y.sum((0, 2, 3))
    dice = 2 * inter.sum() / total.sum() if average == "micro" else np.mean(2 * inter / total)
    ce = -np.log(_p_true(logits, target)).mean()
    got = SegmentationLoss(K1, dice_fraction=0.3, dice_average=average)(logits, target)
    assert float(got) == pytest.approx(0.7 * ce + 0.3 * (1 - dice), rel=1e-4)
    only = SegmentationLoss(K1, dice_fraction=1.0, dice_average=average)(logits, target)
    assert float(only) == pytest.approx(1 - dice, rel=1e-4)


def test_loss_options_are_checked() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        SegmentationLoss(K1, dice_fraction=1.5)
    with pytest.raises(ValueError, match="dice average"):
        SegmentationLoss(K1, dice_average="mean")
    with pytest.raises(ValueError, match=r"0\.\.3"):
        SegmentationLoss(K1, ignore=[4])
    with pytest.raises(ValueError, match="class weights"):
        SegmentationLoss(K1, torch.ones(3))


def test_mixup_blends_images_and_losses() -> None:
    images = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).reshape(4, 2, 3, 3)
    torch.manual_seed(5)
    mixed, order, lam = mixup_batch(images)
    assert 0.5 <= lam <= 1.0 and sorted(order.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images[order])
    torch.manual_seed(5)
    again, order2, lam2 = mixup_batch(images)
    assert lam2 == lam and torch.equal(order2, order) and torch.equal(again, mixed)

    logits = torch.randn(4, 3)
    target = torch.tensor([0, 1, 2, 1])
    ce = torch.nn.functional.cross_entropy
    expected = lam * ce(logits, target) + (1 - lam) * ce(logits, target[order])
    torch.testing.assert_close(mixup_loss(ce, logits, target, order, lam), expected)
