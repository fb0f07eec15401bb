"""Model architectures for Train Deep Learning Model, keyed by ArcGIS model type.

Models never read data files; the only file they may read is a backbone weights file.
"""

from rasterlearn.models.arguments import ModelArgument
from rasterlearn.models.backbones import (
    BACKBONES,
    TORCH_CACHE,
    Encoder,
    adapt_first_conv_weight,
    build_encoder,
    load_backbone_weights,
)
from rasterlearn.models.detection import detector_args_from_sizes, fcos_strides
from rasterlearn.models.registry import (
    DEFAULT_CHIP_SIZE,
    MODEL_TYPES,
    TASKS,
    EmdInfo,
    ModelSpec,
    build_model,
    check_model_fits_data,
    get_encoder,
    model_spec,
    model_types_for,
    set_encoder_trainable,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_CHIP_SIZE",
    "MODEL_TYPES",
    "TASKS",
    "TORCH_CACHE",
    "EmdInfo",
    "Encoder",
    "ModelArgument",
    "ModelSpec",
    "adapt_first_conv_weight",
    "build_encoder",
    "build_model",
    "check_model_fits_data",
    "detector_args_from_sizes",
    "fcos_strides",
    "get_encoder",
    "load_backbone_weights",
    "model_spec",
    "model_types_for",
    "set_encoder_trainable",
]
