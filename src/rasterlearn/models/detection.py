"""Object and instance detectors on torchvision: Faster R-CNN, RetinaNet, FCOS, Mask R-CNN.

All follow torchvision's convention: in training ``model(images, targets)`` returns a dict of
losses, in eval ``model(images)`` returns one ``{boxes, labels, scores[, masks]}`` dict per
image. ``images`` is a list of ``(C, H, W)`` float tensors (or an ``(N, C, H, W)`` tensor),
already normalised by the data pipeline; ``labels`` are class indices 1..K (0 is background).

Every detector accepts any band count and never resizes: :class:`ChipTransform` replaces
torchvision's ``GeneralizedRCNNTransform`` with per-band mean 0 / std 1 and no resize (chips
are fed at native resolution; the batch is only zero-padded to a multiple of 32).

**The light detector (FCOS).** The default detector for little data on a CPU is torchvision's
FCOS on a small backbone (ResNet18 by default), sized to the objects:

* anchor-free, one prediction per feature location: no anchor shapes to get wrong, no
  anchor/IoU matching hyperparameters; centre sampling gives every object several positive
  locations, so each labelled object yields several training signals;
* the pyramid levels come from the object sizes of the training labels
  (:func:`fcos_strides`): the finest level is the coarsest stride that still puts about three
  feature pixels across the smallest objects (stride 4 for tree crowns of 10-60 px, so no 2x
  upsampling of the imagery is needed), and levels are added only until the largest objects
  are covered; the head runs on the chosen levels only;
* GroupNorm in the head (torchvision's FCOS head) and, when trained from scratch, in the
  backbone, so batches of 2-8 chips train well (BatchNorm statistics from such batches are
  noise); a thin FPN (64 channels) and 2 convolutions per head branch instead of 256 / 4,
  which cuts the head's cost about 30x against RetinaNet's on the same levels;
* GIoU box loss and centre-ness, which are scale-free and need no box-coder tuning.

**Faster/Mask R-CNN on chips.** torchvision's proposal counts and box-head sample size were
chosen for 800 px images; left at 0, they scale with the chip area (:func:`rcnn_chip_defaults`),
which makes a CPU training step on 128 px chips about 5x faster. Anchor
sizes come from the label statistics (:func:`detector_args_from_sizes`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.models.backbones import Encoder

RCNN_ANCHOR_SIZES = (32.0, 64.0, 128.0, 256.0, 512.0)
"""torchvision's anchor sizes for the five pyramid levels (Faster/Mask R-CNN P2-P6,
RetinaNet P3-P7)."""

FCOS_STRIDES = (4, 8, 16, 32, 64)
"""Strides the FCOS pyramid can use (P2-P6)."""


class ChipTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform for chips: per-band identity normalisation, no resize.

    Images arrive normalised by the data pipeline, at the model's chip size (or any size at
    inference); they are only batched (zero-padded to a multiple of ``size_divisible``).

    Args:
        in_channels: Band count; images with another count are refused.
        chip_size: Recorded as ``min_size``/``max_size`` (no resize happens).
    """

    def __init__(self, in_channels: int, chip_size: int) -> None:
        super().__init__(
            min_size=chip_size,
            max_size=chip_size,
            image_mean=[0.0] * in_channels,
            image_std=[1.0] * in_channels,
            size_divisible=32,
        )
        self.in_channels = in_channels

    def normalize(self, image: Tensor) -> Tensor:
        """Check the band count; the mean/std are 0/1, so the image is returned unchanged."""
        if image.shape[0] != self.in_channels:
            raise InputError(
                f"image has {image.shape[0]} bands but the model was built for {self.in_channels}"
            )
        if not image.is_floating_point():
            raise InputError(f"images must be floating point, got {image.dtype}")
        return image

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """No resizing: chips are used at their native resolution."""
        return image, target


class PyramidBackbone(nn.Module):
    """An encoder with a feature pyramid on some of its levels (torchvision's FPN).

    Args:
        encoder: The backbone body.
        levels: Indices into the encoder's feature maps fed to the FPN, fine to coarse.
        out_channels: FPN channels.
        extra_block: torchvision extra FPN block (``LastLevelMaxPool``, ``LastLevelP6P7``).
        num_outputs: Keep only the first (finest) ``num_outputs`` pyramid maps; ``None`` keeps
            them all.

    Attributes:
        out_channels: Channels of every returned map (torchvision's backbone contract).
        strides: Stride of each returned map.
    """

    def __init__(
        self,
        encoder: Encoder,
        levels: Sequence[int],
        out_channels: int,
        extra_block: ExtraFPNBlock | None = None,
        num_outputs: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.levels = tuple(levels)
        self.fpn = FeaturePyramidNetwork(
            [encoder.channels[i] for i in self.levels], out_channels, extra_blocks=extra_block
        )
        self.out_channels = out_channels
        strides = [encoder.strides[i] for i in self.levels]
        if isinstance(extra_block, LastLevelP6P7):
            strides += [strides[-1] * 2, strides[-1] * 4]
        elif extra_block is not None:
            strides += [strides[-1] * 2]
        self.num_outputs = num_outputs
        self.strides = tuple(strides[:num_outputs] if num_outputs else strides)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Pyramid maps keyed ``"0"``, ``"1"``, ... (plus torchvision's extra names)."""
        feats = self.encoder(x)
        out = self.fpn(OrderedDict((str(k), feats[i]) for k, i in enumerate(self.levels)))
        if self.num_outputs is not None:
            out = OrderedDict(list(out.items())[: self.num_outputs])
        return out


class _OneBasedLabels:
    """For sigmoid-classifier detectors (FCOS, RetinaNet) built with K outputs: labels 1..K
    outside, 0..K-1 inside, so no output is wasted on a background class that could be
    predicted."""

    def forward(self, images: Any, targets: list[dict[str, Tensor]] | None = None) -> Any:
        """torchvision's forward with labels shifted between 1..K and 0..K-1."""
        if targets is not None:
            k = self.head.classification_head.num_classes  # type: ignore[attr-defined]
            for t in targets:
                labels = t["labels"]
                if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > k):
                    raise InputError(
                        f"target labels must be class indices 1..{k}, got "
                        f"{int(labels.min())}..{int(labels.max())}"
                    )
            targets = [{**t, "labels": t["labels"] - 1} for t in targets]
        out = super().forward(images, targets)  # type: ignore[misc]
        if isinstance(out, list):
            for det in out:
                det["labels"] = det["labels"] + 1
        return out


class FCOSDetector(_OneBasedLabels, FCOS):
    """torchvision FCOS with K class outputs and labels 1..K."""


class RetinaNetDetector(_OneBasedLabels, RetinaNet):
    """torchvision RetinaNet with K class outputs and labels 1..K."""


def fcos_strides(min_object_size: float, max_object_size: float) -> tuple[int, ...]:
    """The FCOS pyramid strides for objects of the given sizes (longer box side, pixels).

    torchvision's FCOS gives the level of stride ``s`` (anchor size ``s``) the locations whose
    largest distance to the box edges lies in ``(4s, 8s]``, i.e. boxes up to about ``16 s``
    across; the finest level takes everything smaller, the coarsest everything larger.

    * finest stride: the coarsest of 4, 8, 16, 32 with ``stride <= min_object_size / 3``
      (at least 4), so the smallest objects span about three feature pixels;
    * further levels (doubling, up to 64) while ``16 * stride < max_object_size``.

    Args:
        min_object_size: Small object size, e.g. the 5th percentile of the label boxes.
        max_object_size: Large object size, e.g. the 95th percentile or the chip size.

    Returns:
        Strides, fine to coarse, e.g. ``(4,)`` for 10-60 px crowns, ``(4, 8, 16)`` for
        16-224 px objects.
    """
    first = 4
    while first < 32 and first * 2 <= min_object_size / 3:
        first *= 2
    strides = [first]
    while strides[-1] < FCOS_STRIDES[-1] and 16 * strides[-1] < max_object_size:
        strides.append(strides[-1] * 2)
    return tuple(strides)


def _encoder_level(encoder: Encoder, stride: int) -> int:
    return encoder.strides.index(stride)


def _check_positive(name: str, values: Sequence[float], count: int | None = None) -> None:
    if not values or any(v <= 0 for v in values):
        raise ParameterError(f"model argument {name} needs positive values, got {tuple(values)}")
    if count is not None and len(values) != count:
        raise ParameterError(
            f"model argument {name} needs {count} values (one per pyramid level), got {len(values)}"
        )


def _rcnn_backbone(encoder: Encoder, out_channels: int = 256) -> PyramidBackbone:
    """torchvision's R-CNN pyramid: C2-C5 (strides 4-32) and a max-pooled P6."""
    levels = [_encoder_level(encoder, s) for s in (4, 8, 16, 32)]
    return PyramidBackbone(encoder, levels, out_channels, LastLevelMaxPool())


def _rcnn_anchors(args: dict[str, Any]) -> AnchorGenerator:
    sizes = args["anchor_sizes"] or RCNN_ANCHOR_SIZES
    _check_positive("anchor_sizes", sizes, 5)
    _check_positive("ratios", args["ratios"])
    return AnchorGenerator(tuple((float(s),) for s in sizes), (tuple(args["ratios"]),) * 5)


RCNN_REFERENCE_SIZE = 800
"""Image size (px) torchvision's R-CNN proposal and sampling defaults were chosen for."""

RCNN_CHIP_SCALED = {
    "rpn_pre_nms_top_n_train": (2000, 256),
    "rpn_pre_nms_top_n_test": (1000, 128),
    "rpn_post_nms_top_n_train": (2000, 256),
    "rpn_post_nms_top_n_test": (1000, 128),
    "box_batch_size_per_image": (512, 64),
}
"""R-CNN arguments whose default (0) scales with the chip area: name -> (torchvision's value
for 800 px images, the least value used)."""


def rcnn_chip_defaults(chip_size: int) -> dict[str, int]:
    """R-CNN proposal and sampling sizes for square chips of ``chip_size`` pixels.

    torchvision's defaults (2000 proposals kept in training, 1000 at inference, 512 proposals
    sampled per image for the box head) were chosen for images of about 800 px. The proposals
    an image needs grow with its area, and on a CPU the box head's cost (its RoIAlign backward
    and 12,544 x 1024 layer) grows with the proposals sampled: a 128 px chip with torchvision's
    values spends about 80 % of a training step there. Each value is scaled by the area ratio
    ``(chip_size / 800) ** 2`` (at most 1), with a floor (:data:`RCNN_CHIP_SCALED`); e.g. a 128
    px chip keeps 256 proposals in training, 128 at inference and samples 64 per image.

    Args:
        chip_size: Chip size in pixels.

    Returns:
        A value for each argument of :data:`RCNN_CHIP_SCALED`.
    """
    factor = min(1.0, (float(chip_size) / RCNN_REFERENCE_SIZE) ** 2)
    return {
        name: max(min(floor, default), round(default * factor))
        for name, (default, floor) in RCNN_CHIP_SCALED.items()
    }


RCNN_KWARGS = (
    "rpn_pre_nms_top_n_train",
    "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_train",
    "rpn_post_nms_top_n_test",
    "rpn_nms_thresh",
    "rpn_fg_iou_thresh",
    "rpn_bg_iou_thresh",
    "rpn_batch_size_per_image",
    "rpn_positive_fraction",
    "box_score_thresh",
    "box_nms_thresh",
    "box_detections_per_img",
    "box_fg_iou_thresh",
    "box_bg_iou_thresh",
    "box_batch_size_per_image",
    "box_positive_fraction",
)
"""torchvision Faster/Mask R-CNN keyword arguments offered as model arguments."""


def build_faster_rcnn(
    encoder: Encoder, num_classes: int, chip_size: int, args: dict[str, Any], masks: bool = False
) -> FasterRCNN:
    """torchvision Faster R-CNN (or Mask R-CNN) with an FPN on ``encoder``.

    Args:
        encoder: Backbone body (strides 4-32 are used).
        num_classes: Object classes K (the model has K + 1 outputs, 0 = background).
        chip_size: Chip size in pixels.
        args: Resolved model arguments (RPN/ROI settings, ``anchor_sizes``, ``ratios``).
        masks: Build Mask R-CNN.

    Returns:
        The model, with a :class:`ChipTransform`.

    Raises:
        ParameterError: for negative proposal or sample counts.

    The arguments of :data:`RCNN_CHIP_SCALED` left at 0 are set (in ``args`` too, so that the
    model records them) from :func:`rcnn_chip_defaults`.
    """
    for name, value in rcnn_chip_defaults(chip_size).items():
        if args[name] < 0:
            raise ParameterError(
                f"model argument {name} must be positive (0: scaled to the chip), got {args[name]}"
            )
        if args[name] == 0:
            args[name] = value
    kwargs = {k: args[k] for k in RCNN_KWARGS}
    cls = MaskRCNN if masks else FasterRCNN
    model = cls(
        _rcnn_backbone(encoder),
        num_classes=num_classes + 1,
        min_size=chip_size,
        max_size=chip_size,
        image_mean=[0.0] * encoder.in_channels,
        image_std=[1.0] * encoder.in_channels,
        rpn_anchor_generator=_rcnn_anchors(args),
        **kwargs,
    )
    model.transform = ChipTransform(encoder.in_channels, chip_size)
    return model


def build_retinanet(
    encoder: Encoder, num_classes: int, chip_size: int, args: dict[str, Any]
) -> RetinaNetDetector:
    """torchvision RetinaNet: FPN P3-P7, anchors ``anchor_sizes[i] * scales`` x ``ratios``,
    GroupNorm in the head (torchvision's v2 head).

    Args:
        encoder: Backbone body (strides 8-32 are used; P6/P7 by convolution).
        num_classes: Object classes K (K sigmoid outputs; labels 1..K outside).
        chip_size: Chip size in pixels.
        args: Resolved model arguments (``scales``, ``ratios``, ``anchor_sizes``).

    Returns:
        The model, with a :class:`ChipTransform`.
    """
    base = args["anchor_sizes"] or RCNN_ANCHOR_SIZES
    _check_positive("anchor_sizes", base, 5)
    _check_positive("scales", args["scales"])
    _check_positive("ratios", args["ratios"])
    anchors = AnchorGenerator(
        tuple(tuple(float(b * s) for s in args["scales"]) for b in base),
        (tuple(args["ratios"]),) * 5,
    )
    levels = [_encoder_level(encoder, s) for s in (8, 16, 32)]
    backbone = PyramidBackbone(encoder, levels, 256, LastLevelP6P7(256, 256))
    # GroupNorm in the head, as torchvision's RetinaNet v2: stable from scratch at small batch
    head = RetinaNetHead(
        256,
        anchors.num_anchors_per_location()[0],
        num_classes,
        norm_layer=partial(nn.GroupNorm, 32),
    )
    model = RetinaNetDetector(
        backbone,
        num_classes,
        min_size=chip_size,
        max_size=chip_size,
        image_mean=[0.0] * encoder.in_channels,
        image_std=[1.0] * encoder.in_channels,
        anchor_generator=anchors,
        head=head,
    )
    model.transform = ChipTransform(encoder.in_channels, chip_size)
    return model


def build_fcos(
    encoder: Encoder, num_classes: int, chip_size: int, args: dict[str, Any]
) -> FCOSDetector:
    """The light detector: torchvision FCOS sized to the objects (see the module docstring).

    Args:
        encoder: Backbone body (strides 4-32).
        num_classes: Object classes K (K sigmoid outputs; labels 1..K outside).
        chip_size: Chip size in pixels (the default largest object size).
        args: Resolved model arguments: ``min_object_size``, ``max_object_size`` (0 = unknown:
            16 px and the chip size), ``fpn_channels``, ``head_convs``,
            ``center_sampling_radius``, ``score_thresh``, ``nms_thresh``,
            ``detections_per_img``.

    Returns:
        The model, with a :class:`ChipTransform`.

    Raises:
        ParameterError: for sizes or channel counts that do not fit.
    """
    min_size = args["min_object_size"] or 16.0
    max_size = args["max_object_size"] or float(chip_size)
    if min_size < 0 or max_size < 0 or min_size > max_size:
        raise ParameterError(
            f"object sizes must satisfy 0 < min_object_size <= max_object_size, "
            f"got {min_size} and {max_size}"
        )
    channels = args["fpn_channels"]
    if channels <= 0 or channels % 32:
        raise ParameterError(f"fpn_channels must be a positive multiple of 32, got {channels}")
    if args["head_convs"] < 1:
        raise ParameterError(f"head_convs must be at least 1, got {args['head_convs']}")
    strides = fcos_strides(min_size, max_size)
    inputs = [s for s in (4, 8, 16, 32) if s >= strides[0]]
    extra = LastLevelMaxPool() if strides[-1] == 64 else None
    backbone = PyramidBackbone(
        encoder,
        [_encoder_level(encoder, s) for s in inputs],
        channels,
        extra,
        num_outputs=len(strides),
    )
    anchors = AnchorGenerator(tuple((float(s),) for s in strides), ((1.0,),) * len(strides))
    head = FCOSHead(channels, 1, num_classes, num_convs=args["head_convs"])
    model = FCOSDetector(
        backbone,
        num_classes,
        min_size=chip_size,
        max_size=chip_size,
        image_mean=[0.0] * encoder.in_channels,
        image_std=[1.0] * encoder.in_channels,
        anchor_generator=anchors,
        head=head,
        center_sampling_radius=args["center_sampling_radius"],
        score_thresh=args["score_thresh"],
        nms_thresh=args["nms_thresh"],
        detections_per_img=args["detections_per_img"],
    )
    model.transform = ChipTransform(encoder.in_channels, chip_size)
    return model


def _quantile(values: Sequence[float], q: float) -> float:
    data = torch.as_tensor([float(v) for v in values], dtype=torch.float64)
    return float(torch.quantile(data, q))


def detector_args_from_sizes(
    model_type: str, object_sizes: Sequence[float], chip_size: int
) -> dict[str, Any]:
    """Suggested model arguments for objects of the given sizes (from the label statistics).

    Args:
        model_type: ``FCOS``, ``RETINANET``, ``FASTERRCNN`` or ``MASKRCNN``.
        object_sizes: The longer side of each training box, in pixels (at the chip
            resolution). Empty: no suggestion.
        chip_size: Chip size in pixels.

    Returns:
        For FCOS, ``min_object_size``/``max_object_size`` (5th/95th percentiles, the latter
        capped at the chip size). For the anchor-based models, ``anchor_sizes``: five sizes
        doubling from a base of at least 8 px: the 5th percentile for the R-CNNs, the 5th
        percentile / 0.63 for RetinaNet (so that its smallest default scale, 0.63, gives
        anchors of the 5th percentile). Other types: ``{}``.
    """
    sizes = [float(s) for s in object_sizes if float(s) > 0]
    if not sizes:
        return {}
    lo, hi = _quantile(sizes, 0.05), _quantile(sizes, 0.95)
    kind = model_type.upper()
    if kind == "FCOS":
        return {
            "min_object_size": round(lo, 2),
            "max_object_size": round(min(max(hi, lo), float(chip_size)), 2),
        }
    if kind in ("RETINANET", "FASTERRCNN", "MASKRCNN"):
        base = max(8.0, lo / 0.63 if kind == "RETINANET" else lo)
        return {"anchor_sizes": tuple(round(base * 2**i, 2) for i in range(5))}
    return {}


__all__ = [
    "FCOS_STRIDES",
    "RCNN_ANCHOR_SIZES",
    "RCNN_CHIP_SCALED",
    "RCNN_KWARGS",
    "RCNN_REFERENCE_SIZE",
    "ChipTransform",
    "FCOSDetector",
    "PyramidBackbone",
    "RetinaNetDetector",
    "build_faster_rcnn",
    "build_fcos",
    "build_retinanet",
    "detector_args_from_sizes",
    "fcos_strides",
    "rcnn_chip_defaults",
]
