"""The model types of Train Deep Learning Model, and :func:`build_model`.

:data:`MODEL_TYPES` is keyed by the ArcGIS ``model_type`` keyword. Each :class:`ModelSpec`
records the task, the export formats (``MetaDataMode``) the model trains on, ArcGIS's default
backbone and batch size (reference §6.2), the ``.emd`` identity (§2.3) and the model arguments
with their types and defaults (§6.3; rasterlearn additions are marked ``arcgis=False``).

Every built model carries, as plain attributes: ``task`` (``pixel``, ``detection``,
``instance`` or ``classification``), ``model_type``, ``num_classes`` (K, without background),
``in_channels``, ``chip_size``, ``backbone_name``, ``model_args`` (all arguments, resolved),
``pretrained`` and ``encoder_path`` (dotted path of the backbone body, see :func:`get_encoder`).
The call conventions per task:

* ``pixel``: ``model(x) -> logits (N, K + 1, H, W)`` at the input resolution; 0 = background.
* ``detection`` / ``instance``: torchvision's; training ``model(images, targets) -> dict of
  losses`` with targets ``{boxes (M, 4) xyxy pixels, labels (M,) in 1..K[, masks (M, H, W)
  uint8]}``; eval ``model(images) -> [{boxes, labels, scores[, masks (M, 1, H, W) 0-1]}]``.
* ``classification``: ``model(x) -> logits (N, K)``; ``model.multi_label`` says whether a
  sigmoid per class (multi-label) or a softmax applies.

Images are float tensors normalised by the data pipeline, with ``in_channels`` bands.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from torch import nn

from rasterlearn.errors import ParameterError
from rasterlearn.formats.metadata_formats import CHANGE_DETECTION
from rasterlearn.formats.metadata_formats import metadata_format as _metadata_format
from rasterlearn.models.arguments import ModelArgument, resolve_arguments
from rasterlearn.models.backbones import BACKBONES, Encoder, backbone_info, build_encoder
from rasterlearn.models.change import ChangeDetector
from rasterlearn.models.classification import FeatureClassifier
from rasterlearn.models.detection import (
    RCNN_CHIP_SCALED,
    build_faster_rcnn,
    build_fcos,
    build_retinanet,
)
from rasterlearn.models.segmentation import (
    LEGACY_UNET_DECODER_CHANNELS,
    UNET_DECODER_CHANNELS,
    DeepLab,
    UNet,
)

TASKS = ("pixel", "detection", "instance", "classification")
"""What a model predicts: class per pixel, boxes, boxes with masks, classes per chip."""

DEFAULT_CHIP_SIZE = 224
"""ArcGIS's chip size when the data does not say."""


@dataclass(frozen=True)
class EmdInfo:
    """How a model type identifies itself in the ``.emd`` (reference §2.3).

    Attributes:
        model_type: ``ModelType`` (``ImageClassification``, ``ObjectDetection``...).
        inference_function: ``InferenceFunction`` (the PRF file name).
        model_configuration: ``ModelConfiguration``.
        model_name: ``ModelName`` (the arcgis.learn class name).
        extra: Other fixed keys this model type writes.
    """

    model_type: str
    inference_function: str
    model_configuration: str
    model_name: str
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ModelSpec:
    """One model type of Train Deep Learning Model.

    Attributes:
        model_type: The ArcGIS keyword (``UNET``).
        task: One of :data:`TASKS`.
        metadata_formats: ``MetaDataMode`` values of the training data it accepts.
        default_backbone: ArcGIS's default backbone keyword (``RESNET34``).
        backbones: Backbones it can be built with (lower-case names).
        default_batch_size: ArcGIS's default batch size.
        emd: The ``.emd`` identity.
        arguments: The model arguments, in the order ArcGIS lists them.
        description: One line.
    """

    model_type: str
    task: str
    metadata_formats: tuple[str, ...]
    default_backbone: str
    backbones: tuple[str, ...]
    default_batch_size: int
    emd: EmdInfo
    arguments: tuple[ModelArgument, ...]
    description: str

    def default_arguments(self) -> dict[str, Any]:
        """Every argument with its default value."""
        return {a.name: a.default for a in self.arguments}

    @property
    def argument_names(self) -> tuple[str, ...]:
        """The valid argument names."""
        return tuple(a.name for a in self.arguments)


# --------------------------------------------------------------------------- arguments

_A = ModelArgument

_SEGMENTATION_ARGS = (
    _A(
        "class_balancing",
        bool,
        False,
        "weight the loss by inverse class frequency of the training pixels",
    ),
    _A("mixup", bool, False, "mixup augmentation (blend pairs of chips and their losses)"),
    _A("focal_loss", bool, False, "focal loss (gamma 2) instead of cross-entropy"),
    _A(
        "ignore_classes",
        tuple,
        (),
        "class values left out of the loss (0: NoData)",
        item_type=int,
    ),
)
_DICE_ARGS = (
    _A("dice_loss_fraction", float, 0.0, "share of soft dice loss in the loss (0-1)"),
    _A(
        "dice_loss_average",
        str,
        "micro",
        "dice over all classes at once (micro) or mean of per-class dice (macro)",
        choices=("micro", "macro"),
    ),
)

_UNET_ARGS = _SEGMENTATION_ARGS + _DICE_ARGS

_DEEPLAB_ARGS = (
    *_SEGMENTATION_ARGS,
    _A("pointrend", bool, False, "PointRend head (not supported by rasterlearn)"),
    *_DICE_ARGS,
    _A("keep_dilation", bool, False, "ResNet output stride 8 instead of 16 (more memory)"),
)

NORM_CHOICES = ("auto", "batch", "frozen_batch", "group")

_DETECTOR_NORM = _A(
    "norm",
    str,
    "auto",
    "backbone normalisation; auto: batch from scratch, frozen_batch when pretrained",
    choices=NORM_CHOICES,
    arcgis=False,
)

_SCALED = "; 0: scaled to the chip area (torchvision's {} at 800 px, at least {})"


def _scaled(name: str, doc: str) -> ModelArgument:
    default, floor = RCNN_CHIP_SCALED[name]
    return _A(name, int, 0, doc + _SCALED.format(default, floor))


_RCNN_ARGS = (
    _scaled("rpn_pre_nms_top_n_train", "RPN proposals kept before NMS per level, training"),
    _scaled("rpn_pre_nms_top_n_test", "RPN proposals kept before NMS per level, inference"),
    _scaled("rpn_post_nms_top_n_train", "RPN proposals kept after NMS, training"),
    _scaled("rpn_post_nms_top_n_test", "RPN proposals kept after NMS, inference"),
    _A("rpn_nms_thresh", float, 0.7, "RPN NMS IoU threshold"),
    _A("rpn_fg_iou_thresh", float, 0.7, "RPN anchor IoU for a positive"),
    _A("rpn_bg_iou_thresh", float, 0.3, "RPN anchor IoU below which a negative"),
    _A("rpn_batch_size_per_image", int, 256, "RPN anchors sampled per image"),
    _A("rpn_positive_fraction", float, 0.5, "share of positives among RPN samples"),
    _A("box_score_thresh", float, 0.05, "minimum score of a returned detection"),
    _A("box_nms_thresh", float, 0.5, "detection NMS IoU threshold"),
    _A("box_detections_per_img", int, 100, "maximum detections per image"),
    _A("box_fg_iou_thresh", float, 0.5, "proposal IoU for a positive"),
    _A("box_bg_iou_thresh", float, 0.5, "proposal IoU below which a negative"),
    _scaled("box_batch_size_per_image", "proposals sampled per image"),
    _A("box_positive_fraction", float, 0.25, "share of positives among proposal samples"),
    _A(
        "anchor_sizes",
        tuple,
        (),
        "anchor size per pyramid level P2-P6, 5 values (empty: 32, 64, 128, 256, 512)",
        item_type=float,
        arcgis=False,
    ),
    _A("ratios", tuple, (0.5, 1.0, 2.0), "anchor aspect ratios", item_type=float, arcgis=False),
    _DETECTOR_NORM,
)

_RETINANET_ARGS = (
    _A("scales", tuple, (1.0, 0.7937, 0.63), "anchor scales per level", item_type=float),
    _A("ratios", tuple, (0.5, 1.0, 2.0), "anchor aspect ratios", item_type=float),
    _A(
        "anchor_sizes",
        tuple,
        (),
        "base anchor size per pyramid level P3-P7, 5 values, times each scale "
        "(empty: 32, 64, 128, 256, 512)",
        item_type=float,
        arcgis=False,
    ),
    _DETECTOR_NORM,
)

_FCOS_ARGS = (
    _A(
        "min_object_size",
        float,
        0.0,
        "small object size in px, e.g. 5th percentile of the box sides (0: 16)",
        arcgis=False,
    ),
    _A(
        "max_object_size",
        float,
        0.0,
        "large object size in px, e.g. 95th percentile of the box sides (0: chip size)",
        arcgis=False,
    ),
    _A("fpn_channels", int, 64, "feature pyramid channels (multiple of 32)", arcgis=False),
    _A("head_convs", int, 2, "3x3 convolutions per head branch", arcgis=False),
    _A(
        "center_sampling_radius",
        float,
        1.5,
        "positive locations lie within this many strides of a box centre",
        arcgis=False,
    ),
    _A("score_thresh", float, 0.05, "minimum score of a returned detection", arcgis=False),
    _A("nms_thresh", float, 0.6, "detection NMS IoU threshold", arcgis=False),
    _A("detections_per_img", int, 300, "maximum detections per image", arcgis=False),
    _A(
        "norm",
        str,
        "auto",
        "backbone normalisation; auto: group from scratch, frozen_batch when pretrained",
        choices=NORM_CHOICES,
        arcgis=False,
    ),
)

_CLASSIFIER_ARGS = (
    _A("mixup", bool, False, "mixup augmentation (blend pairs of chips and their labels)"),
    _A("oversample", bool, False, "draw chips of rare classes as often as common ones"),
    _A("backend", str, "pytorch", "deep learning framework", choices=("pytorch",)),
    _A(
        "multi_label",
        bool,
        False,
        "several classes per chip (MultiLabeled_Tiles): sigmoid per class",
        arcgis=False,
    ),
    _A("dropout", float, 0.0, "dropout before the last layer", arcgis=False),
)

_CHANGE_ARGS = (
    _A(
        "attention_type",
        str,
        "PAM",
        "ArcGIS's STANet attention module; recorded in the .emd only: rasterlearn's Siamese "
        "U-Net has no attention module",
        choices=("PAM", "BAM"),
    ),
    *(replace(a, arcgis=False) for a in _UNET_ARGS),
)

# --------------------------------------------------------------------------- the table

_ALL = tuple(BACKBONES)
_DETECTION_FORMATS = ("PASCAL_VOC_rectangles", "KITTI_rectangles")
_IMAGE_CLASSIFIER = "ArcGISImageClassifier.py"
_OBJECT_DETECTOR = "ArcGISObjectDetector.py"


def _extension(model_name: str, config_class: str) -> EmdInfo:
    return EmdInfo(
        "ObjectDetection",
        _OBJECT_DETECTOR,
        "_model_extension_inferencing",
        model_name,
        MappingProxyType(
            {
                "ModelConfigurationFile": "ModelConfiguration.py",
                "ModelFileConfigurationClass": config_class,
                "DatasetType": "PASCAL_VOC_rectangles",
            }
        ),
    )


MODEL_TYPES: Mapping[str, ModelSpec] = MappingProxyType(
    {
        s.model_type: s
        for s in (
            ModelSpec(
                "UNET",
                "pixel",
                ("Classified_Tiles",),
                "RESNET34",
                _ALL,
                8,
                EmdInfo(
                    "ImageClassification",
                    _IMAGE_CLASSIFIER,
                    "_unet",
                    "UnetClassifier",
                    MappingProxyType({"SupportsVariableTileSize": True}),
                ),
                _UNET_ARGS,
                "U-Net with a ResNet/MobileNetV3 encoder",
            ),
            ModelSpec(
                "CHANGEDETECTOR",
                "pixel",
                (CHANGE_DETECTION,),
                "RESNET18",
                _ALL,
                2,
                EmdInfo(
                    "ImageClassification", _IMAGE_CLASSIFIER, "change_detection", "ChangeDetector"
                ),
                _CHANGE_ARGS,
                "Siamese U-Net (shared encoder) on the feature differences of two dates",
            ),
            ModelSpec(
                "DEEPLAB",
                "pixel",
                ("Classified_Tiles",),
                "RESNET101",
                _ALL,
                8,
                EmdInfo("ImageClassification", _IMAGE_CLASSIFIER, "_deeplab_infrencing", "DeepLab"),
                _DEEPLAB_ARGS,
                "DeepLabV3 (torchvision) on a dilated encoder",
            ),
            ModelSpec(
                "FCOS",
                "detection",
                _DETECTION_FORMATS,
                "RESNET18",
                _ALL,
                8,
                _extension("FCOS", "MyFCOS"),
                _FCOS_ARGS,
                "light anchor-free detector sized to the objects; trains from scratch on a CPU",
            ),
            ModelSpec(
                "RETINANET",
                "detection",
                _DETECTION_FORMATS,
                "RESNET50",
                _ALL,
                16,
                EmdInfo("ObjectDetection", _OBJECT_DETECTOR, "_RetinaNet_Inference", "RetinaNet"),
                _RETINANET_ARGS,
                "RetinaNet (torchvision), FPN P3-P7",
            ),
            ModelSpec(
                "FASTERRCNN",
                "detection",
                _DETECTION_FORMATS,
                "RESNET50",
                _ALL,
                4,
                _extension("FasterRCNN", "MyFasterRCNN"),
                _RCNN_ARGS,
                "Faster R-CNN (torchvision), FPN P2-P6",
            ),
            ModelSpec(
                "MASKRCNN",
                "instance",
                ("RCNN_Masks",),
                "RESNET50",
                _ALL,
                4,
                EmdInfo(
                    "InstanceDetection",
                    "ArcGISInstanceDetector.py",
                    "_maskrcnn_inferencing",
                    "MaskRCNN",
                    MappingProxyType({"SupportsVariableTileSize": True}),
                ),
                _RCNN_ARGS,
                "Mask R-CNN (torchvision), FPN P2-P6",
            ),
            ModelSpec(
                "FEATURE_CLASSIFIER",
                "classification",
                ("Labeled_Tiles", "MultiLabeled_Tiles", "Imagenet"),
                "RESNET34",
                _ALL,
                64,
                EmdInfo(
                    "ObjectClassification",
                    "ArcGISObjectClassifier.py",
                    "_FeatureClassifier",
                    "FeatureClassifier",
                ),
                _CLASSIFIER_ARGS,
                "chip classifier (single- or multi-label)",
            ),
        )
    }
)
"""The model types, keyed by ArcGIS ``model_type``; for each data format the first type that
accepts it is the default."""


def model_spec(model_type: str) -> ModelSpec:
    """The spec of a model type, by ArcGIS keyword or ``.emd`` ``ModelName`` (any case).

    Raises:
        ParameterError: for an unknown model type, listing the valid ones.
    """
    key = str(model_type).strip().upper()
    if key in MODEL_TYPES:
        return MODEL_TYPES[key]
    for spec in MODEL_TYPES.values():
        if spec.emd.model_name.upper() == key:
            return spec
    raise ParameterError(
        f"unknown model type '{model_type}'", f"use one of {', '.join(MODEL_TYPES)}"
    )


def model_types_for(metadata_format: str) -> tuple[str, ...]:
    """The model types that train on a data format, the default first.

    Raises:
        ParameterError: for an unknown metadata format.
    """
    keyword = _data_kind(metadata_format)
    return tuple(t for t, s in MODEL_TYPES.items() if keyword in s.metadata_formats)


def _data_kind(metadata_format: str) -> str:
    """A metadata format's keyword, or ``ChangeDetection`` (Classified_Tiles pairs)."""
    if str(metadata_format).lower() == CHANGE_DETECTION.lower():
        return CHANGE_DETECTION
    return _metadata_format(metadata_format).keyword


def check_model_fits_data(model_type: str, metadata_format: str) -> ModelSpec:
    """Check that a model type can train on data exported in a metadata format.

    Args:
        model_type: ArcGIS model type (``UNET``...), any case.
        metadata_format: The export's ``MetaDataMode`` (``Classified_Tiles``...).

    Returns:
        The model's spec.

    Raises:
        ParameterError: for an unknown model type or format, or one that does not fit; the
            message names the formats the model needs and the models the data fits.
    """
    spec = model_spec(model_type)
    keyword = _data_kind(metadata_format)
    if keyword not in spec.metadata_formats:
        fitting = model_types_for(keyword)
        hint = (
            f"for {keyword} data use {', '.join(fitting)}"
            if fitting
            else f"no model type trains on {keyword} data"
        )
        raise ParameterError(
            f"model type {spec.model_type} cannot train on {keyword} data "
            f"(it needs {' or '.join(spec.metadata_formats)})",
            hint,
        )
    return spec


# --------------------------------------------------------------------------- building


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    return value


def build_model(
    model_type: str,
    num_classes: int,
    in_channels: int,
    backbone: str | None = None,
    chip_size: int = DEFAULT_CHIP_SIZE,
    pretrained_backbone: str | os.PathLike[str] | None = None,
    model_args: Mapping[str, Any] | None = None,
    *,
    weight_init_scheme: str = "mean",
    decoder_channels: tuple[int, ...] | None = None,
) -> nn.Module:
    """Build a model of an ArcGIS model type for ``num_classes`` classes and any band count.

    Args:
        model_type: ``UNET``, ``CHANGEDETECTOR``, ``DEEPLAB``, ``FCOS``, ``RETINANET``,
            ``FASTERRCNN``, ``MASKRCNN`` or ``FEATURE_CLASSIFIER`` (any case; an ``.emd``
            ModelName works too).
        num_classes: Number of classes K, without background / NoData.
        in_channels: Number of image bands (a change detector's: both images' together).
        backbone: Backbone name (``RESNET18``, ``resnet50``, ``MOBILENET_V3_LARGE``...);
            default: the model type's.
        chip_size: Chip size in pixels (detectors record it; nothing is resized).
        pretrained_backbone: ``None`` to train from scratch, a weights file path, or
            ``"torch-cache"`` for torchvision's ImageNet file in the local torch hub cache.
            Never downloads.
        model_args: Model arguments (values or their ArcGIS string forms); see
            ``MODEL_TYPES[model_type].arguments``.
        weight_init_scheme: How bands beyond RGB get pretrained first-layer weights:
            ``mean`` (default), or ArcGIS's ``random``, ``red_band``, ``all_random`` (any case).
        decoder_channels: Widths of a U-Net's five decoder blocks (UNET, CHANGEDETECTOR);
            default :data:`~rasterlearn.models.segmentation.UNET_DECODER_CHANNELS` (a change
            detector's: the legacy widths it was measured with).

    Returns:
        The model in training mode, with the attributes described in the module docstring.

    Raises:
        ParameterError: for an unknown model type, backbone, argument name or value, or
            non-positive sizes.
        InputError: when pretrained weights are asked for and cannot be found or read.
    """
    spec = model_spec(model_type)
    num_classes = _positive_int("num_classes", num_classes)
    in_channels = _positive_int("in_channels", in_channels)
    chip_size = _positive_int("chip_size", chip_size)
    args = resolve_arguments(spec.model_type, spec.arguments, model_args)
    info = backbone_info(backbone or spec.default_backbone, spec.backbones)
    scheme = str(weight_init_scheme).lower()
    pretrained = pretrained_backbone is not None

    def encoder(norm: str = "batch", output_stride: int = 32, bands: int = in_channels) -> Encoder:
        return build_encoder(info.name, bands, pretrained_backbone, norm, output_stride, scheme)

    kind = spec.model_type
    if "dice_loss_fraction" in args and not 0.0 <= args["dice_loss_fraction"] <= 1.0:
        raise ParameterError(
            f"model argument dice_loss_fraction must be between 0 and 1, "
            f"got {args['dice_loss_fraction']}",
            "e.g. 0.5 for an even mix of cross-entropy and dice loss",
        )
    model: nn.Module
    if kind == "UNET":
        model = UNet(encoder(), num_classes, decoder_channels or UNET_DECODER_CHANNELS)
        encoder_path = "encoder"
    elif kind == "CHANGEDETECTOR":
        if in_channels % 2:
            raise ParameterError(
                f"a change detector reads two images of the same bands, so an even number of "
                f"input channels, got {in_channels}",
                "stack the before and after images' bands",
            )
        # measured (benchmarks/change_detection.py) with the wider decoder; kept until re-measured
        model = ChangeDetector(
            encoder(bands=in_channels // 2),
            num_classes,
            decoder_channels or LEGACY_UNET_DECODER_CHANNELS,
        )
        encoder_path = "encoder"
    elif kind == "DEEPLAB":
        if args["pointrend"]:
            raise ParameterError(
                "model argument pointrend=True is not supported", "leave pointrend False"
            )
        stride = 8 if args["keep_dilation"] and info.family == "resnet" else 16
        model = DeepLab(encoder(output_stride=stride), num_classes)
        encoder_path = "backbone.encoder"
    elif kind == "FEATURE_CLASSIFIER":
        if not 0.0 <= args["dropout"] < 1.0:
            raise ParameterError(f"dropout must be in [0, 1), got {args['dropout']}")
        model = FeatureClassifier(encoder(), num_classes, args["multi_label"], args["dropout"])
        encoder_path = "encoder"
    else:
        if args["norm"] == "auto":
            # fine-tuning: frozen ImageNet statistics (torchvision's recipe); from scratch:
            # GroupNorm for the light detector (small batches), batch norm as torchvision else
            scratch = "group" if kind == "FCOS" else "batch"
            args["norm"] = "frozen_batch" if pretrained else scratch
        body = encoder(args["norm"])  # the resolved norm is kept so that a rebuild matches
        if kind == "FCOS":
            model = build_fcos(body, num_classes, chip_size, args)
        else:
            if kind == "RETINANET":
                model = build_retinanet(body, num_classes, chip_size, args)
            else:
                model = build_faster_rcnn(
                    body, num_classes, chip_size, args, masks=kind == "MASKRCNN"
                )
        if pretrained:  # torchvision's trainable_backbone_layers=3: stem and stride-4 stage fixed
            for stage in body.stages()[:2]:
                for module in stage:
                    module.requires_grad_(False)
        encoder_path = "backbone.encoder"

    model.task = spec.task
    model.model_type = spec.model_type
    model.num_classes = num_classes
    model.in_channels = in_channels
    model.chip_size = chip_size
    model.backbone_name = info.name
    model.model_args = args
    model.pretrained = pretrained
    model.encoder_path = encoder_path
    return model.train()


def get_encoder(model: nn.Module) -> Encoder:
    """The backbone body of a model made by :func:`build_model`."""
    module = model.get_submodule(model.encoder_path)
    assert isinstance(module, Encoder)
    return module


def set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (ArcGIS ``FREEZE_MODEL``) or unfreeze (``UNFREEZE_MODEL``) the backbone body.

    Frozen batch-norm layers hold no parameters and stay frozen either way.
    """
    get_encoder(model).requires_grad_(trainable)


__all__ = [
    "DEFAULT_CHIP_SIZE",
    "MODEL_TYPES",
    "TASKS",
    "EmdInfo",
    "ModelSpec",
    "build_model",
    "check_model_fits_data",
    "get_encoder",
    "model_spec",
    "model_types_for",
    "set_encoder_trainable",
]
