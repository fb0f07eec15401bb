"""The TorchScript backend: a model saved with ``torch.jit.save`` (``ModelFile`` ``.pt``/``.ts``).

A TorchScript file holds the network and its weights; the ``.emd`` beside it gives the tile
size, bands, classes and normalisation, so the pre- and post-processing are exactly those of
the PyTorch backend (:class:`~rasterlearn.inference.backends.pytorch.TorchPredictor`); only
the forward pass differs.

Accepted modules:

* pixel classifiers ``(N, C, H, W) -> logits (N, K + 1, H, W)`` and object classifiers
  ``(N, C, H, W) -> logits (N, K)`` (a dict with ``"out"`` or a tuple whose first item is the
  logits is accepted too);
* detectors exported by ``rasterlearn model export``: one image ``(C, H, W)`` in, a tuple
  ``(boxes, scores, labels[, masks])`` out, the names stored in the file;
* scripted torchvision detectors: a list of images in, a list of
  ``{boxes, labels, scores[, masks]}`` dicts out, or the ``(losses, detections)`` tuple that
  scripted torchvision detectors return.

Detectors exported by rasterlearn carry no non-maximum suppression of their own; it is
applied here with the ``nms_overlap`` argument
(:func:`~rasterlearn.inference.backends.decoding.suppress`), so the results equal the
PyTorch model's for any argument values.

Trust: a TorchScript file is a program (TorchScript code and weights) that
``torch.jit.load`` runs; load only models from sources you trust.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from rasterlearn.data.normalization import Normalizer
from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.backends.decoding import (
    DEFAULT_NMS_OVERLAP,
    dense_output,
    detection_dict,
    is_multi_label,
    suppress,
)
from rasterlearn.inference.backends.pytorch import TorchPredictor, model_file
from rasterlearn.inference.predictors import DETECTION, INSTANCE

OUTPUT_NAMES_FILE = "rasterlearn_outputs.txt"
"""Extra file of an exported TorchScript detector naming its outputs (comma-separated)."""


def _unwrap_detections(out: Any) -> Any:
    """The detections of a scripted torchvision detector, which returns ``(losses, dets)``."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict):
        return out[1]
    return out


class TorchScriptPredictor(TorchPredictor):
    """A TorchScript model (``.pt``/``.ts``) with the ``.emd``'s pre- and post-processing.

    Args:
        definition: The model definition; its ``ModelFile`` is the TorchScript file.
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.

    Raises:
        InputError: for a missing or damaged TorchScript file.
    """

    def _load(self, definition: ModelDefinition) -> None:
        path = model_file(definition, "TorchScript")
        extra = {OUTPUT_NAMES_FILE: ""}
        try:
            with warnings.catch_warnings():  # torch.jit.load is deprecated for torch.export
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(str(path), self.device, _extra_files=extra)
        except Exception as err:  # torch raises many kinds for a damaged file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"cannot load TorchScript model {path}: {first}",
                "give a file saved with torch.jit.save (or rasterlearn model export)",
            ) from None
        self.model.eval()
        text = extra[OUTPUT_NAMES_FILE]
        text = text.decode() if isinstance(text, bytes) else str(text)
        self.output_names = [n.strip() for n in text.split(",") if n.strip()] or None
        self.normalizer = Normalizer.from_emd(definition.to_dict())
        self.multi_label = is_multi_label(definition, self.info.multi_label)
        self.nms_overlap = DEFAULT_NMS_OVERLAP
        self.takes_list = _takes_list(self.model)
        if self.device.type == "cuda" and self.info.task in (DETECTION, INSTANCE):
            self._fall_back_to_cpu(path)

    def _fall_back_to_cpu(self, path: Path) -> None:
        """Run a traced detector on the CPU when its graph cannot run on the GPU.

        Tracing records the devices of tensors created inside the model (anchors, image
        sizes) as constants, so a detector traced on the CPU may fail on a GPU.
        """
        bands = len(self.info.extract_bands) or 3
        image = torch.zeros(bands, self.info.tile_height, self.info.tile_width)
        try:
            self._forward(image[None].to(self.device))
        except RuntimeError:
            self.device = torch.device("cpu")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(str(path), self.device).eval()

    def _configure_postprocess(self, threshold: float, nms_overlap: float) -> None:
        self.nms_overlap = nms_overlap
        super()._configure_postprocess(threshold, nms_overlap)

    def _forward(self, x: torch.Tensor) -> Any:
        with torch.inference_mode():
            if self.info.task not in (DETECTION, INSTANCE):
                return dense_output(self.model(x))
            if self.takes_list:
                outputs = _unwrap_detections(self.model(list(x)))
                found = [detection_dict(o) for o in outputs]
            else:
                found = [detection_dict(self.model(image), self.output_names) for image in x]
            return [suppress(d, self.nms_overlap) for d in found]


def _takes_list(module: Any) -> bool:
    """Whether a TorchScript module's forward takes a list of tensors (torchvision detectors)."""
    try:
        args = module.forward.schema.arguments
    except (AttributeError, RuntimeError):
        return False
    return len(args) > 1 and "List" in str(args[1].type)
