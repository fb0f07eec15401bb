"""Load a trained model from its .emd, .dlpk or JSON definition: architecture, weights, inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rasterlearn.data.normalization import Normalizer
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.formats.model_source import load_model_definition
from rasterlearn.models.registry import build_model, model_spec
from rasterlearn.models.segmentation import LEGACY_UNET_DECODER_CHANNELS

# ModelParameters keys that describe the build, not model arguments
_BUILD_KEYS = {"backbone", "backend", "decoder_channels"}


@dataclass
class TrainedModel:
    """A model ready to predict, with everything needed to feed it as in training.

    Attributes:
        definition: The model definition (.emd).
        model: The network in eval mode, on the CPU.
        normalizer: Input normalisation (the training data's).
        class_values: Class value per output index (index 0 = background for pixel and
            detection models).
        model_type: ArcGIS model type keyword.
    """

    definition: ModelDefinition
    model: nn.Module
    normalizer: Normalizer
    class_values: list[int]
    model_type: str


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth`` (bare, or fastai's ``{"model", "opt"}``), loaded safely.

    Raises:
        InputError: for a missing or damaged file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model weights {path} do not exist", "check the .emd's ModelFile")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"cannot read model weights {path}: {first_line}",
            "the .pth file is damaged; restore it or train again",
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError(f"{path} holds no model weights", "give the .pth saved with the model")
    return state


def architecture_parameters(model: nn.Module) -> dict[str, Any]:
    """The ``ModelParameters`` entries that describe a network beyond its model arguments
    and backbone, so that :func:`build_from_definition` rebuilds it exactly."""
    widths = getattr(model, "decoder_channels", None)
    return {} if widths is None else {"decoder_channels": list(widths)}


def recorded_decoder_channels(definition: ModelDefinition) -> tuple[int, ...] | None:
    """The U-Net decoder widths a definition records; a U-Net saved before they were recorded
    has the legacy widths. None for other models."""
    widths = (definition.get("ModelParameters") or {}).get("decoder_channels")
    if widths is not None:
        return tuple(int(w) for w in widths)
    try:
        model_type = model_spec(str(definition.get("ModelName"))).model_type
    except ParameterError:  # not one of ours: no U-Net to rebuild
        return None
    return LEGACY_UNET_DECODER_CHANNELS if model_type in ("UNET", "CHANGEDETECTOR") else None


def build_from_definition(
    definition: ModelDefinition, num_classes: int | None = None
) -> tuple[nn.Module, Any]:
    """The architecture an emd describes (random weights), and its registry spec."""
    name = definition.get("ModelName")
    if not name:
        raise InputError(
            f"model definition {definition.path or ''} has no ModelName",
            "give the .emd of a model trained with rasterlearn",
        )
    spec = model_spec(str(name))
    params = dict(definition.get("ModelParameters") or {})
    classes = definition.get("Classes") or []
    bands = definition.get("ExtractBands") or [0, 1, 2]
    model = build_model(
        spec.model_type,
        num_classes=num_classes or len(classes),
        in_channels=len(bands),
        backbone=params.get("backbone"),
        chip_size=int(definition.get("ImageHeight") or 224),
        model_args={k: v for k, v in params.items() if k not in _BUILD_KEYS},
        decoder_channels=recorded_decoder_channels(definition),
    )
    return model, spec


def load_trained_model(source: str | Path | dict | ModelDefinition) -> TrainedModel:
    """Load a model trained by rasterlearn from an ``.emd``, a ``.dlpk``, a folder, JSON or
    an already loaded definition.

    Raises:
        InputError: for missing or damaged files and weights that do not fit the definition.
    """
    definition = source if isinstance(source, ModelDefinition) else load_model_definition(source)
    model, spec = build_from_definition(definition)
    state = read_weights(definition.resolve("ModelFile"))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(
            f"weights {definition.get('ModelFile')} do not fit the {spec.model_type} model its "
            f".emd describes: {str(err).splitlines()[0]}",
            "keep the .pth and .emd of one training run together",
        ) from None
    model.eval()
    raw = definition.to_dict()
    values = [int(c["Value"]) for c in raw.get("Classes") or []]
    if spec.task != "classification":
        values = [0, *values]
    return TrainedModel(definition, model, Normalizer.from_emd(raw), values, spec.model_type)
