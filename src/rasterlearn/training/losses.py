"""Training losses for the model arguments of ArcGIS's pixel and chip classifiers.

* ``class_balancing``: cross-entropy weighted per class by :func:`class_balance_weights`
  (arcgis.learn's inverse frequency, ``sum(counts) / count``) of the training chips' pixels.
* ``focal_loss``: focal loss ``-(1 - p_t) ** gamma * log(p_t)`` (Lin et al. 2017) instead of
  cross-entropy, with the class weights as ``alpha``.
* ``ignore_classes``: pixels of these classes add nothing to the loss.
* ``dice_loss_fraction`` / ``dice_loss_average``: ``(1 - f) * CE + f * (1 - soft Dice)``, the
  Dice over all kept classes at once (``micro``) or the mean of the per-class Dice (``macro``).
* ``mixup``: :func:`mixup_batch` blends pairs of images, and the loss is the same blend of the
  losses against both targets (Zhang et al. 2018, fastai's recipe: ``lambda ~ Beta(0.4, 0.4)``,
  the larger share kept for the first image).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

DICE_AVERAGES = ("micro", "macro")
FOCAL_GAMMA = 2.0
MIXUP_ALPHA = 0.4
_EPS = 1e-6


def class_balance_weights(counts: Sequence[int] | Tensor) -> Tensor:
    """Inverse-frequency class weights, as arcgis.learn's ``class_balancing``.

    ``weight[c] = sum(counts) / counts[c]``. A class without pixels in the training chips
    cannot occur in a training batch; it gets the largest weight of the others (arcgis.learn
    gives it 0, which would make a validation batch of only such pixels undefined).

    Args:
        counts: Pixels (or objects) per class index.

    Returns:
        float32 weights, one per class.

    Raises:
        ValueError: when no class has any count.
    """
    c = torch.as_tensor(counts, dtype=torch.float64)
    if c.numel() == 0 or float(c.sum()) <= 0:
        raise ValueError("class balancing needs at least one labelled pixel")
    present = c > 0
    weights = torch.zeros_like(c)
    weights[present] = c.sum() / c[present]
    weights[~present] = weights[present].max()
    return weights.float()


class SegmentationLoss(nn.Module):
    """Per-pixel loss of the pixel classifiers: weighted cross-entropy or focal loss, with an
    optional share of soft Dice loss, leaving out ignored classes.

    With no options it equals ``torch.nn.functional.cross_entropy``.

    Args:
        num_outputs: Classes the model predicts, background included (K + 1).
        class_weights: Loss weight per class index (``class_balancing``), or None.
        ignore: Class indices whose pixels add nothing to the loss (``ignore_classes``).
        focal: Focal loss instead of cross-entropy (``focal_loss``).
        gamma: Focusing parameter of the focal loss.
        dice_fraction: Share of Dice loss, 0 to 1 (``dice_loss_fraction``).
        dice_average: ``micro`` or ``macro`` (``dice_loss_average``).

    Raises:
        ValueError: for weights of another length, indices out of range, a share outside
            0 to 1 or an unknown averaging.
    """

    def __init__(
        self,
        num_outputs: int,
        class_weights: Tensor | None = None,
        ignore: Sequence[int] = (),
        focal: bool = False,
        gamma: float = FOCAL_GAMMA,
        dice_fraction: float = 0.0,
        dice_average: str = "micro",
    ) -> None:
        super().__init__()
        weights = torch.ones(num_outputs) if class_weights is None else class_weights.float()
        if weights.shape != (num_outputs,):
            raise ValueError(f"{num_outputs} class weights needed, got {tuple(weights.shape)}")
        keep = torch.ones(num_outputs, dtype=torch.bool)
        for index in ignore:
            if not 0 <= int(index) < num_outputs:
                raise ValueError(f"ignored class index {index} is not in 0..{num_outputs - 1}")
            keep[int(index)] = False
        if not 0.0 <= dice_fraction <= 1.0:
            raise ValueError(f"dice fraction must be between 0 and 1, got {dice_fraction}")
        if dice_average not in DICE_AVERAGES:
            raise ValueError(f"dice average must be one of {DICE_AVERAGES}, got {dice_average!r}")
        self.register_buffer("weight", weights * keep, persistent=False)
        self.register_buffer("keep", keep, persistent=False)
        self.focal = bool(focal)
        self.gamma = float(gamma)
        self.dice_fraction = float(dice_fraction)
        self.dice_average = dice_average

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """The loss of ``(N, K + 1, H, W)`` logits against ``(N, H, W)`` class indices."""
        log_p = torch.log_softmax(logits.float(), dim=1)
        log_pt = log_p.gather(1, target[:, None]).squeeze(1)
        w = self.weight[target]
        per_pixel = -log_pt
        if self.focal:
            per_pixel = per_pixel * (1 - log_pt.exp()).pow(self.gamma)
        # a weighted mean as cross_entropy's; 0 (not NaN) when every pixel is ignored
        loss = (w * per_pixel).sum() / w.sum().clamp_min(_EPS)
        if self.dice_fraction > 0:
            loss = (1 - self.dice_fraction) * loss + self.dice_fraction * self._dice(log_p, target)
        return loss

    def _dice(self, log_p: Tensor, target: Tensor) -> Tensor:
        valid = self.keep[target][:, None].to(log_p.dtype)  # pixels of kept classes
        probs = log_p.exp() * valid
        truth = nn.functional.one_hot(target, log_p.shape[1]).permute(0, 3, 1, 2) * valid
        dims = (0, 2, 3)
        inter = (probs * truth).sum(dims)[self.keep]
        total = (probs.sum(dims) + truth.sum(dims))[self.keep]
        if self.dice_average == "micro":
            return 1 - (2 * inter.sum() + _EPS) / (total.sum() + _EPS)
        return 1 - ((2 * inter + _EPS) / (total + _EPS)).mean()


def mixup_batch(images: Tensor, alpha: float = MIXUP_ALPHA) -> tuple[Tensor, Tensor, float]:
    """Blend each image of a batch with another one of the batch.

    The draws come from torch's global generator (seeded by the trainer).

    Args:
        images: ``(N, C, H, W)`` images.
        alpha: Parameter of the ``Beta(alpha, alpha)`` draw of the share.

    Returns:
        The blended images ``lam * images + (1 - lam) * images[order]``, ``order`` and
        ``lam`` (at least 0.5).
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    lam = max(lam, 1 - lam)
    order = torch.randperm(images.shape[0]).to(images.device)
    return lam * images + (1 - lam) * images[order], order, lam


def mixup_loss(
    criterion: Callable[[Tensor, Tensor], Tensor],
    outputs: Tensor,
    target: Tensor,
    order: Tensor,
    lam: float,
) -> Tensor:
    """``lam * criterion(outputs, target) + (1 - lam) * criterion(outputs, target[order])``."""
    return lam * criterion(outputs, target) + (1 - lam) * criterion(outputs, target[order])


__all__ = [
    "DICE_AVERAGES",
    "FOCAL_GAMMA",
    "MIXUP_ALPHA",
    "SegmentationLoss",
    "class_balance_weights",
    "mixup_batch",
    "mixup_loss",
]
