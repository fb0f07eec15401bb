"""The PyTorch backend: models trained by rasterlearn, normalised exactly as in training.

:class:`TorchPredictor` is also the base of the TorchScript and ONNX backends, which share its
pre-processing and its output decoding (:mod:`rasterlearn.inference.backends.decoding`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.backends.decoding import (
    MAX_DETECTIONS_PER_TILE,
    class_probabilities,
    pixel_probabilities,
    tile_detections,
)
from rasterlearn.inference.predictors import (
    CHANGE,
    PIXEL,
    Predictor,
    TileDetections,
    model_info,
    pick_device,
    use_all_cpu_threads,
)
from rasterlearn.models.trained import load_trained_model

logger = logging.getLogger("rasterlearn.inference")

CPU_PASS_PIXELS = 256 * 256
"""The most tile pixels a pixel classifier's forward pass takes on the CPU (whole tiles, at
least one)."""


class TorchPredictor(Predictor):
    """A rasterlearn model (``.emd`` + ``.pth``) on the CPU or a GPU.

    Subclasses for other runtimes override :meth:`_forward` only: it takes the normalised
    batch and returns what the PyTorch model would (logits, or torchvision's detection dicts).

    Args:
        definition: The model definition.
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.
    """

    def __init__(self, definition: ModelDefinition, device: str | None = None) -> None:
        self.definition = definition
        self.info = model_info(definition)
        self.device = torch.device(pick_device(device))
        if self.device.type == "cpu":
            use_all_cpu_threads()
        self._load(definition)

    channels_last = False
    """Whether batches go to the model in channels-last memory order (see :func:`fast_form`)."""

    @property
    def concurrent(self) -> bool:
        return self.device.type == "cpu"

    def _load(self, definition: ModelDefinition) -> None:
        trained = load_trained_model(definition)
        self.normalizer = trained.normalizer
        model = trained.model.to(self.device)
        self.multi_label = bool(getattr(model, "multi_label", self.info.multi_label))
        if self.info.task in ("detection", "instance"):
            self.model = model
        else:
            self.model = fast_form(model)
            self.channels_last = True

    def _inputs(self, tiles: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device)
        mask = torch.from_numpy(np.ascontiguousarray(valid)).to(self.device)
        return self.normalizer.normalize(x, extract_bands=self.info.extract_bands, mask=mask)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _forward(self, x: torch.Tensor) -> Any:
        with torch.inference_mode(), self._autocast():
            if self.info.task in ("detection", "instance"):
                return self.model(list(x))
            if self.info.task in (PIXEL, CHANGE) and self.device.type == "cpu":
                # Passes of at most CPU_PASS_PIXELS: one thread runs a 256 px tile alone as
                # fast as in a batch of 4, with a quarter of the activations in memory; smaller
                # tiles gain from their batch (one 64 px tile at a time: 1.5x slower).
                step = max(1, CPU_PASS_PIXELS // (x.shape[-2] * x.shape[-1]))
                return torch.cat([self._pass(x[i : i + step]) for i in range(0, len(x), step)])
            return self._pass(x)

    def _pass(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self.model(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.model(x)

    def predict_pixels(self, tiles: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return pixel_probabilities(self._forward(self._inputs(tiles, valid)))

    def classify(self, chips: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return class_probabilities(self._forward(self._inputs(chips, valid)), self.multi_label)

    def predict_objects(
        self, tiles: np.ndarray, valid: np.ndarray, arguments: dict[str, Any]
    ) -> list[TileDetections]:
        threshold = float(arguments.get("threshold", 0.5))
        self._configure_postprocess(threshold, float(arguments.get("nms_overlap", 0.1)))
        outputs = self._forward(self._inputs(tiles, valid))
        values = np.array([value for value, _, _ in self.info.classes], dtype=np.int64)
        with_masks = self.info.task == "instance" and not arguments.get("return_bboxes", False)
        return [tile_detections(out, values, threshold, with_masks) for out in outputs]

    def _configure_postprocess(self, threshold: float, nms_overlap: float) -> None:
        """Let the model's own post-processing keep what the arguments ask for.

        Every setting is assigned from this call's arguments alone, so that a predictor
        reused across runs gives the same detections as a freshly opened one.
        """
        heads = [self.model, getattr(self.model, "roi_heads", None)]
        for head in (h for h in heads if h is not None):
            if hasattr(head, "score_thresh"):
                head.score_thresh = threshold
            if hasattr(head, "nms_thresh"):
                head.nms_thresh = nms_overlap
            if hasattr(head, "detections_per_img"):
                head.detections_per_img = MAX_DETECTIONS_PER_TILE


def fast_form(model: torch.nn.Module) -> torch.nn.Module:
    """A pixel or chip classifier in the form that runs fastest; it takes its batches
    channels-last.

    Each batch normalisation is folded into the convolution before it (one pass over the
    features fewer), and the weights are laid out channels-last, which oneDNN's CPU and
    cuDNN's half-precision convolutions run fastest: together 1.5x the speed of UNET-ResNet18
    on 4 x 256 px tiles on a CPU. A model that cannot be traced is only laid out
    channels-last. The outputs differ from the model's by float rounding (about 1e-7).

    Detectors are left as they are: folding their backbones and laying them out channels-last
    sped up their forward pass 1.2x but not Detect Objects (6.6 s for 2,048 px either way).

    The model's layers are changed in place: use the model returned, not the one given.
    """
    from torch.fx.experimental.optimization import fuse

    model = model.eval()
    try:
        # in place (no second copy of the weights): tracing fails before anything changes
        model = fuse(model, inplace=True)
    except Exception as err:  # torch.fx cannot trace it (data-dependent control flow)
        logger.debug("batch normalisation not folded: %s", err)
    return model.to(memory_format=torch.channels_last)


def model_file(definition: ModelDefinition, kind: str) -> Path:
    """The existing file the definition's ``ModelFile`` names (TorchScript and ONNX backends).

    Raises:
        InputError: when the key is absent or the file is missing.
    """
    path = definition.resolve("ModelFile")
    if path is None:
        raise InputError(
            f"model definition {definition.path or ''} names no ModelFile",
            f"give the {kind} file in the .emd's ModelFile",
        )
    if not path.is_file():
        raise InputError(f"{kind} model file {path} does not exist", "check the .emd's ModelFile")
    return path
