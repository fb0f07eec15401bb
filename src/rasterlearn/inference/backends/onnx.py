"""The ONNX backend: a model run by onnxruntime (``ModelFile`` ending ``.onnx``).

The ``.emd`` beside the ``.onnx`` file gives the tile size, bands, classes and
``NormalizationStats``, so the input normalisation and the post-processing are exactly those
of the PyTorch backend (:class:`~rasterlearn.inference.backends.pytorch.TorchPredictor`);
only the forward pass runs in onnxruntime, without torch models (torch tensors still carry the
data between the steps).

Accepted graphs, with one input:

* pixel classifiers ``(N, C, H, W) -> logits (N, K + 1, H, W)`` and object classifiers
  ``(N, C, H, W) -> logits (N, K)``; a graph with a fixed batch size of 1 is run image by
  image;
* detectors taking one image ``(C, H, W)`` (or ``(1, C, H, W)``), as torchvision detectors
  export, with outputs named ``boxes``, ``scores``, ``labels`` (and ``masks`` for instance
  models), or recognisable by their shapes. ``rasterlearn model export`` writes them without
  non-maximum suppression in the graph; it is applied here with the ``nms_overlap`` argument.

The CUDA execution provider is used when a GPU is asked for (or none is named and one is
there) and onnxruntime has it; otherwise the CPU provider, on all the cores this process may
use.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from rasterlearn.data.normalization import Normalizer
from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.backends.conventions import ExternalPredictor
from rasterlearn.inference.backends.decoding import (
    DEFAULT_NMS_OVERLAP,
    dense_output,
    detection_dict,
    is_multi_label,
    suppress,
)
from rasterlearn.inference.backends.frameworks import ONNX
from rasterlearn.inference.backends.pytorch import TorchPredictor, model_file
from rasterlearn.inference.predictors import DETECTION, INSTANCE

_NUMPY_TYPES = {
    "tensor(uint8)": np.uint8,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def inference_session(path: str | os.PathLike[str], device: torch.device) -> Any:
    """An onnxruntime session on the device: CUDA first when asked for and available.

    Returns:
        The session; its ``get_providers()`` says where it runs.

    Raises:
        InputError: for a file onnxruntime cannot load.
    """
    import onnxruntime as ort

    providers: list[Any] = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    options = ort.SessionOptions()
    options.intra_op_num_threads = _cores()
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own kinds for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"cannot load ONNX model {path}: {first}",
            "give an .onnx file saved by torch.onnx.export (or rasterlearn model export)",
        ) from None


class OnnxPredictor(TorchPredictor):
    """An ONNX model with the ``.emd``'s pre- and post-processing, run by onnxruntime.

    Args:
        definition: The model definition; its ``ModelFile`` is the ``.onnx`` file.
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.

    Raises:
        InputError: for a missing or damaged ``.onnx`` file, or a graph with other than one
            input.
    """

    @property
    def concurrent(self) -> bool:
        return False  # onnxruntime runs its own threads over one batch

    def _load(self, definition: ModelDefinition) -> None:
        path = model_file(definition, "ONNX")
        self.session = inference_session(path, self.device)
        if "CUDAExecutionProvider" not in self.session.get_providers():
            self.device = torch.device("cpu")  # normalise where the session reads from
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputError(
                f"ONNX model {path} has {len(inputs)} inputs, expected one image input",
                "export the model with a single (N, C, H, W) or (C, H, W) input",
            )
        self.input_name = inputs[0].name
        self.input_rank = len(inputs[0].shape)
        first = inputs[0].shape[0] if inputs[0].shape else None
        self.fixed_batch = first if isinstance(first, int) and self.input_rank == 4 else None
        self.input_type = _NUMPY_TYPES.get(inputs[0].type, np.float32)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model = None  # no torch model: post-processing settings go to the predictor
        self.normalizer = Normalizer.from_emd(definition.to_dict())
        self.multi_label = is_multi_label(definition, self.info.multi_label)
        self.nms_overlap = DEFAULT_NMS_OVERLAP

    def _configure_postprocess(self, threshold: float, nms_overlap: float) -> None:
        self.nms_overlap = nms_overlap

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: array.astype(self.input_type, copy=False)})

    def _forward(self, x: torch.Tensor) -> Any:
        array = x.detach().cpu().numpy()
        if self.info.task in (DETECTION, INSTANCE):
            found = []
            for i in range(len(array)):
                image = array[i] if self.input_rank == 3 else array[i : i + 1]
                found.append(detection_dict(self._run(image), self.output_names))
            return [suppress(d, self.nms_overlap) for d in found]
        if self.fixed_batch == 1 and len(array) > 1:
            parts = [dense_output(self._run(array[i : i + 1])) for i in range(len(array))]
            return torch.cat(parts).float()
        return dense_output(self._run(array)).float()


class ExternalOnnxPredictor(ExternalPredictor):
    """An ONNX model exported by another tool (``Framework`` ``ONNX``), run by onnxruntime.

    Args:
        definition: The model definition; its ``ModelFile`` is the ``.onnx`` file.
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.

    Raises:
        InputError: for a missing or damaged ``.onnx`` file, or a graph with other than one
            input.
    """

    framework = ONNX
    default_channels_last = False

    def _load(self, definition: ModelDefinition) -> None:
        path = model_file(definition, "ONNX")
        self.session = inference_session(path, self.device)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputError(
                f"ONNX model {path} has {len(inputs)} inputs, expected one image input",
                "export the model with a single image input",
            )
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in shape)
        self.input_dtype = np.dtype(_NUMPY_TYPES.get(inputs[0].type, np.float32))
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {self.input_name: batch})
        return dict(zip(self.output_names, values, strict=True))
