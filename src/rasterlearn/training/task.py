"""The Lightning module that trains any model of the registry, and its validation metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from torch import nn

from rasterlearn.metrics.detection import best_f1_threshold, class_accuracy
from rasterlearn.metrics.pixels import PixelAccuracy, confusion_matrix
from rasterlearn.training.losses import SegmentationLoss, mixup_batch, mixup_loss

WARM_UP = 0.25
"""Share of the training steps in which the one-cycle schedule raises the rate to its peak."""
VALIDATION_SEED = 1234
"""Seed of the random sampling in detector validation losses (plus the batch index)."""
TASK_METRICS = {
    "pixel": ("accuracy", "miou", "dice", "precision", "recall", "f1_score"),
    "detection": ("average_precision",),
    "instance": ("average_precision",),
    "classification": ("accuracy", "precision", "recall", "f1_score"),
}


@dataclass
class ValidationResults:
    """What one pass over the validation chips measured."""

    metrics: dict[str, float] = field(default_factory=dict)
    per_class: dict[int, dict[str, float]] = field(default_factory=dict)
    confusion: np.ndarray | None = None
    detection_threshold: float | None = None


class _Accumulator:
    """Collects predictions and truths of a validation pass for one task."""

    def __init__(self, task: str, num_classes: int, multi_label: bool = False) -> None:
        self.task = task
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.reset()

    def reset(self) -> None:
        k = self.num_classes + (1 if self.task == "pixel" else 0)
        self.confusion = np.zeros((k, k), dtype=np.int64)
        self.detections: list[list[tuple[np.ndarray, np.ndarray]]] = [
            [] for _ in range(self.num_classes)
        ]
        self.truths: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        self.multi_hits = np.zeros((3, self.num_classes))  # tp, fp, fn

    def add(self, outputs: object, targets: object) -> None:
        if self.task == "pixel":
            pred = outputs.argmax(1).cpu().numpy()
            k = self.confusion.shape[0]
            self.confusion += confusion_matrix(targets.cpu().numpy(), pred, k)
        elif self.task == "classification":
            if self.multi_label:
                pred = (torch.sigmoid(outputs) > 0.5).cpu().numpy()
                truth = targets.cpu().numpy() > 0.5
                self.multi_hits += np.stack(
                    [(pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0)]
                )
            else:
                pred = outputs.argmax(1).cpu().numpy()
                k = self.confusion.shape[0]
                self.confusion += confusion_matrix(targets.cpu().numpy(), pred, k)
        else:
            for out, tgt in zip(outputs, targets, strict=True):
                boxes = out["boxes"].detach().cpu().numpy()
                scores = out["scores"].detach().cpu().numpy()
                labels = out["labels"].cpu().numpy()
                true_boxes = tgt["boxes"].cpu().numpy()
                true_labels = tgt["labels"].cpu().numpy()
                for c in range(self.num_classes):
                    mine = labels == c + 1
                    self.detections[c].append((boxes[mine], scores[mine]))
                    self.truths[c].append(true_boxes[true_labels == c + 1])

    def detection_threshold(self) -> float | None:
        """The score threshold of the best F1 over all classes (floored to 0.01, at most 0.5),
        or None when no detection is right.

        Never above 0.5: validation chips that overlap training chips (an export's stride
        below its tile size) score higher than unseen imagery does, and on the NEON demo a
        higher threshold chosen there lost a third of the held-out trees.
        """
        best = best_f1_threshold(self.detections, self.truths)
        if best is None or best[1] == 0.0:
            return None
        return min(0.5, max(0.01, math.floor(best[0] * 100) / 100))

    def results(self) -> ValidationResults:
        if self.task in ("detection", "instance"):
            per_class = {}
            for c in range(self.num_classes):
                if not self.truths[c]:
                    continue
                acc = class_accuracy(self.detections[c], self.truths[c], 0.5)
                per_class[c + 1] = {
                    "average_precision": acc.average_precision,
                    "precision": acc.precision,
                    "recall": acc.recall,
                    "f1": acc.f1,
                }
            aps = [v["average_precision"] for v in per_class.values()]
            return ValidationResults(
                {"average_precision": float(np.mean(aps)) if aps else 0.0}, per_class
            )
        if self.task == "classification" and self.multi_label:
            tp, fp, fn = self.multi_hits
            p = tp.sum() / max(tp.sum() + fp.sum(), 1)
            r = tp.sum() / max(tp.sum() + fn.sum(), 1)
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            return ValidationResults({"precision": p, "recall": r, "f1_score": f1, "accuracy": f1})
        acc = PixelAccuracy(self.confusion)
        offset = 0 if self.task == "pixel" else 1  # class index -> position in the class table
        per_class = {
            i + offset: {
                "precision": float(acc.precision[i]),
                "recall": float(acc.recall[i]),
                "f1": float(acc.f1[i]),
            }
            for i in range(self.confusion.shape[0])
        }
        classes = slice(1, None) if self.task == "pixel" else slice(None)
        metrics = {
            "accuracy": acc.overall,
            "precision": float(np.mean(acc.precision[classes])),
            "recall": float(np.mean(acc.recall[classes])),
            "f1_score": float(np.mean(acc.f1[classes])),
        }
        if self.task == "pixel":
            metrics["miou"] = float(np.mean(acc.iou[classes]))
            metrics["dice"] = metrics["f1_score"]
        return ValidationResults(metrics, per_class, self.confusion.copy())


def _batch_norms_frozen(model: nn.Module) -> list[nn.Module]:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.eval()
    return norms


def default_criterion(model: nn.Module, class_weights: torch.Tensor | None = None) -> nn.Module:
    """The loss of a pixel or chip classifier without model-argument options.

    Pixel models: :class:`SegmentationLoss` (cross-entropy); multi-label classifiers: binary
    cross-entropy per class; other classifiers: cross-entropy. Detectors compute their own.
    """
    if model.task == "pixel":
        return SegmentationLoss(model.num_classes + 1, class_weights)
    if bool(getattr(model, "multi_label", False)):
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(weight=class_weights)


CHANNELS_LAST_MIN_CHIP = 192
"""Chip size (px) from which pixel classifiers train channels-last."""


def trains_channels_last(task: str, chip_size: int) -> bool:
    """Whether a model trains faster with channels-last features: pixel classifiers on chips
    of :data:`CHANNELS_LAST_MIN_CHIP` px or more. Measured on a CPU, batch 8, per step: UNET
    1.27x as fast at 256 px, 1.03x at 128 px, 0.9x at 64 px; DEEPLAB 1.1x, 0.97x, 0.7x; chip
    classifiers 1.03x at 224 px."""
    return task == "pixel" and chip_size >= CHANNELS_LAST_MIN_CHIP


class TrainingTask(L.LightningModule):
    """Trains a registry model: loss per task, one-cycle schedule, validation metrics.

    Args:
        model: A model from :func:`rasterlearn.models.build_model`.
        learning_rate: Peak learning rate of the one-cycle schedule.
        class_weights: Optional loss weight per class index (pixel models), used when no
            ``criterion`` is given.
        weight_decay: AdamW weight decay.
        criterion: Loss of a pixel or chip classifier, ``criterion(outputs, targets)``;
            default :func:`default_criterion`. Detectors use the losses they return.
        mixup: Train pixel and chip classifiers on mixed-up batches (:func:`mixup_batch`).
        channels_last: Lay the features out channels-last (see :func:`trains_channels_last`).
    """

    def __init__(
        self,
        model: nn.Module,
        learning_rate: float = 1e-3,
        class_weights: torch.Tensor | None = None,
        weight_decay: float = 1e-4,
        *,
        criterion: nn.Module | None = None,
        mixup: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr = learning_rate
        self.weight_decay = weight_decay
        self.task = model.task
        self.multi_label = bool(getattr(model, "multi_label", False))
        if mixup and self.task not in ("pixel", "classification"):
            raise ValueError("mixup applies to pixel and chip classifiers only")
        self.mixup = bool(mixup)
        self.criterion = (
            None
            if self.task in ("detection", "instance")
            else criterion or default_criterion(model, class_weights)
        )
        self.accumulator = _Accumulator(self.task, model.num_classes, self.multi_label)
        self.last_results = ValidationResults()
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> object:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _loss(self, batch: tuple, mix: bool = False) -> torch.Tensor:
        images, targets = batch
        if self.task in ("detection", "instance"):
            losses = self.model(list(images), targets)
            return sum(losses.values())
        if mix and len(images) > 1:
            mixed, order, lam = mixup_batch(images)
            return mixup_loss(self.criterion, self(mixed), targets, order, lam)
        return self.criterion(self(images), targets)

    def batch_loss(self, batch: tuple) -> torch.Tensor:
        """The training loss of a batch ``(images, targets)``, without mixup."""
        return self._loss(batch)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, mix=self.mixup)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        images, targets = batch
        if self.task in ("detection", "instance"):
            # torchvision detectors give losses only in training mode: use it without
            # updating batch-norm statistics, then predict in eval mode.
            # The losses sample anchors and proposals at random: draw them from a generator
            # seeded per batch, so that the validation loss varies only with the model and
            # validation leaves the training draws alone.
            self.model.train()
            _batch_norms_frozen(self.model)
            cuda = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(VALIDATION_SEED + batch_idx)
                loss = self._loss(batch)
            self.model.eval()
            outputs = self.model(list(images))
        else:
            outputs = self(images)
            loss = self.criterion(outputs, targets)
        self.log(
            "valid_loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=len(images),
            sync_dist=True,  # distributed: every process checkpoints and stops on the same mean
        )
        self.accumulator.add(outputs, targets)

    def on_validation_epoch_start(self) -> None:
        self.accumulator.reset()

    def on_validation_epoch_end(self) -> None:
        self.last_results = self.accumulator.results()
        for name, value in self.last_results.metrics.items():
            self.log(name, float(value), sync_dist=True)

    def configure_optimizers(self) -> dict:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        # OneCycleLR needs a few steps to shape its cycle; extra ones are never reached
        total = max(10, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.lr, total_steps=total, pct_start=WARM_UP
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
