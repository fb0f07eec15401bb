"""The TensorFlow backend: SavedModel folders and frozen graphs (``Framework`` ``TensorFlow``).

Runs with TensorFlow (``pip install rasterlearn[tensorflow]``, the CPU wheel) the two
configurations of Esri's built-in raster functions, by their tensor names:

* ``ObjectDetectionAPI`` (TensorFlow Object Detection API exports): ``image_tensor`` (``uint8``
  ``(N, H, W, 3)``) -> ``detection_boxes``, ``detection_scores``, ``detection_classes``,
  ``num_detections``;
* ``DeepLab``: ``ImageTensor`` (``uint8`` ``(N, H, W, 3)``) -> ``SemanticPredictions``
  (class values per pixel).

``ModelFile`` is a SavedModel folder (its ``serving_default`` signature, whose one input may
have any name, e.g. ``input_tensor`` in TF2 exports) or a frozen graph ``.pb`` (a ``GraphDef``
with those node names, as TF1 exports write ``frozen_inference_graph.pb``). Inputs and outputs
follow :mod:`~rasterlearn.inference.backends.conventions` (raw pixel values, channels-last).

Trust: a SavedModel or a graph is a TensorFlow program; load only models from sources you
trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.backends.conventions import (
    DEEPLAB,
    NUM_DETECTIONS,
    ODAPI_OUTPUTS,
    SEMANTIC_PREDICTIONS,
    ExternalPredictor,
)
from rasterlearn.inference.backends.frameworks import TENSORFLOW, import_framework

GRAPH_INPUTS = {DEEPLAB: "ImageTensor"}
"""The input tensor of a frozen graph, by configuration (default ``image_tensor``)."""

GRAPH_OUTPUTS = {DEEPLAB: (SEMANTIC_PREDICTIONS,)}
"""The output tensors of a frozen graph, by configuration (default ObjectDetectionAPI's)."""


class TensorFlowPredictor(ExternalPredictor):
    """A TensorFlow SavedModel or frozen graph of a known configuration.

    Args:
        definition: The model definition; its ``ModelFile`` is the SavedModel folder or the
            ``.pb`` file.
        device: ``cpu``, ``cuda`` or ``cuda:N``; the CPU wheel runs on the CPU.

    Raises:
        InputError: when TensorFlow is not installed (naming the extra), or the model is
            missing, damaged, or lacks its configuration's tensors.
    """

    framework = TENSORFLOW

    def _load(self, definition: ModelDefinition) -> None:
        path = definition.resolve("ModelFile")
        if path is None or not path.exists():
            raise InputError(
                f"TensorFlow model {path or '(no ModelFile)'} does not exist",
                "name the SavedModel folder or the frozen graph (.pb) in the .emd's ModelFile",
            )
        self._tf = import_framework(TENSORFLOW)
        try:
            if path.is_dir():
                self._load_saved_model(path)
            else:
                self._load_frozen_graph(path)
        except InputError:
            raise
        except Exception as err:  # TensorFlow raises many kinds for a damaged model
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"cannot load TensorFlow model {path}: {first[:200]}",
                "give a SavedModel folder or a frozen graph (.pb) written by TensorFlow",
            ) from None

    def _required_outputs(self) -> tuple[str, ...]:
        return GRAPH_OUTPUTS.get(self.configuration or "", ODAPI_OUTPUTS)

    def _load_saved_model(self, path: Path) -> None:
        self._saved = self._tf.saved_model.load(str(path))
        signatures = dict(self._saved.signatures)
        signature = signatures.get("serving_default") or next(iter(signatures.values()), None)
        if signature is None:
            raise InputError(f"SavedModel {path} has no signature", "export it with a signature")
        inputs = signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise InputError(
                f"SavedModel {path} takes {len(inputs)} inputs ({', '.join(inputs)}), expected "
                "one image input",
                "export a signature with the one image input",
            )
        (self._input_name, spec), *_ = inputs.items()
        self._check_outputs(path, list(signature.structured_outputs))
        self._function = signature
        self._set_input(spec.shape.as_list(), spec.dtype)

    def _load_frozen_graph(self, path: Path) -> None:
        tf = self._tf
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(path.read_bytes())
        nodes = {node.name: node for node in graph_def.node}
        input_name = GRAPH_INPUTS.get(self.configuration or "", "image_tensor")
        if input_name not in nodes:
            raise InputError(
                f"frozen graph {path} has no input tensor {input_name}",
                f"give a {self.configuration} graph (docs/backends.md)",
            )
        self._check_outputs(path, list(nodes))
        outputs = [n for n in (*self._required_outputs(), NUM_DETECTIONS) if n in nodes]

        def imports() -> None:
            tf.compat.v1.import_graph_def(graph_def, name="")

        wrapped = tf.compat.v1.wrap_function(imports, [])
        self._input_name = None
        self._output_names = outputs
        self._function = wrapped.prune(feeds=f"{input_name}:0", fetches=[f"{n}:0" for n in outputs])
        shape_attr = nodes[input_name].attr["shape"].shape
        shape = [None if d.size < 0 else d.size for d in shape_attr.dim]
        dtype = tf.dtypes.as_dtype(nodes[input_name].attr["dtype"].type)
        self._set_input(shape or [None, None, None, 3], dtype)

    def _check_outputs(self, path: Path, names: list[str]) -> None:
        missing = [n for n in self._required_outputs() if n not in names]
        if missing:
            raise InputError(
                f"TensorFlow model {path} has no {', '.join(missing)} (a "
                f"{self.configuration} model has them)",
                "give a model exported by its project, or the ModelConfiguration it follows",
            )

    def _set_input(self, shape: list[int | None], dtype: Any) -> None:
        self.input_shape = tuple(shape)
        self.input_dtype = np.dtype(dtype.as_numpy_dtype)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        tensor = self._tf.constant(batch)
        if self._input_name is not None:
            out = self._function(**{self._input_name: tensor})
            return {str(k): v.numpy() for k, v in out.items()}
        values = self._function(tensor)
        return {n: v.numpy() for n, v in zip(self._output_names, values, strict=True)}
