"""Models trained elsewhere: the input and output conventions they are run with.

:class:`ExternalPredictor` is the base of the Keras, TensorFlow and ONNX-from-elsewhere
backends: it prepares the pixels a model takes and reads what it returns, following the
``.emd`` and its ``ModelConfiguration``; a backend only loads the model and runs a batch
(:meth:`ExternalPredictor._run`). The conventions, in full (docs/backends.md has them too):

**Input.** One image input with a batch dimension, ``(N, H, W, C)`` or ``(N, C, H, W)``: the
layout is read from the model's input shape (the dimension that equals the number of
``ExtractBands``), else from the ``.emd``'s ``ModelFormat`` (``NHWC``/``NCHW``), else
channels-last for Keras and TensorFlow and channels-first for ONNX. The bands are
``ExtractBands``; nodata pixels are 0. Their values:

* with ``DataRange`` ``[lo, hi]``: pixel values scaled linearly from the range of the
  raster's pixel type (0-255 for 8-bit, 0-65535 for 16-bit; float pixels unchanged) to
  ``[lo, hi]``, as ArcGIS does for every configuration;
* otherwise for ``ObjectDetectionAPI``, ``DeepLab``, ``KerasClassifier``: the raw pixel values
  (these models scale their input themselves);
* otherwise as rasterlearn's own models: ``NormalizationStats`` (min-max, then the scaled mean
  and standard deviation), or ImageNet's mean and standard deviation for 3 bands when the
  ``.emd`` has none, unless ``IsImageNetNormalization`` is false (raw values).

Values are passed in the input's type (``uint8`` for ``image_tensor``, clipped to its range).

A model with a fixed input size other than the tile's takes Classify Objects chips resized
(bilinear) to it (Esri's ``KerasClassifier`` resamples chips so); pixel and detection models
must take the tile size.

**Output**, by task:

* pixel classification (``ImageClassification``): ``DeepLab``'s ``SemanticPredictions``, or
  any integer output, holds class ``Value``\\ s per pixel; a float output holds per-class scores
  in the input's layout with ``K + 1`` channels (background first, as rasterlearn's models) or
  ``K`` channels (the ``Classes`` in order, no background). Scores that are already
  probabilities (non-negative, summing to 1, as after a softmax layer) are kept; others are
  taken as logits (softmax).
* object classification: ``(N, K)`` scores for the ``Classes`` in order, probabilities kept,
  logits through softmax (sigmoid per class for multi-label models).
* object detection, ``ObjectDetectionAPI``: ``detection_boxes`` ``(N, M, 4)`` as ``ymin, xmin,
  ymax, xmax`` in 0-1 of the tile, ``detection_scores`` and ``detection_classes`` ``(N, M)``
  (1-based positions in ``Classes``), optional ``num_detections`` ``(N,)``; the model's own
  non-maximum suppression is kept.
* object detection, other models: ``boxes`` ``(N, M, 4)`` as ``xmin, ymin, xmax, ymax`` in tile
  pixels, ``scores`` ``(N, M)``, ``labels`` (or ``classes``) ``(N, M)`` 1-based positions in
  ``Classes``, by name (or recognised by shape and type); labels below 1 are padding. Per-class
  non-maximum suppression with the ``nms_overlap`` argument is applied, as for rasterlearn's
  exported detectors.

Scores below the ``threshold`` argument are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from rasterlearn.data.normalization import Normalizer
from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.backends.decoding import (
    class_probabilities,
    detection_dict,
    is_multi_label,
    pixel_probabilities,
    suppress,
    tile_detections,
)
from rasterlearn.inference.backends.frameworks import known_configuration
from rasterlearn.inference.predictors import (
    CLASSIFICATION,
    DETECTION,
    PIXEL,
    Predictor,
    TileDetections,
    class_value_probabilities,
    model_info,
    pick_device,
)

OBJECT_DETECTION_API, DEEPLAB, KERAS_CLASSIFIER = "ObjectDetectionAPI", "DeepLab", "KerasClassifier"

RAW_INPUT_CONFIGURATIONS = (OBJECT_DETECTION_API, DEEPLAB, KERAS_CLASSIFIER)
"""Configurations whose models take raw pixel values."""

CONFIGURATION_TASKS = {
    OBJECT_DETECTION_API: DETECTION,
    DEEPLAB: PIXEL,
    KERAS_CLASSIFIER: CLASSIFICATION,
}
"""The task each named configuration does (the ``.emd``'s ``ModelType`` must agree)."""

ODAPI_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes")
NUM_DETECTIONS = "num_detections"
SEMANTIC_PREDICTIONS = "SemanticPredictions"

_OUTPUT_ALIASES = {"classes": "labels", "confidence": "scores"}
"""Detector output names of other libraries, read as rasterlearn's."""

_TASK_NAMES = {
    PIXEL: "ImageClassification",
    DETECTION: "ObjectDetection",
    CLASSIFICATION: "ObjectClassification",
}


class ExternalPredictor(Predictor):
    """A model trained with another framework, run with the conventions of its configuration.

    Subclasses set :attr:`framework` and implement :meth:`_load` (setting
    :attr:`input_shape` and :attr:`input_dtype`) and :meth:`_run`.

    Args:
        definition: The model definition.
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.

    Raises:
        InputError: for a configuration or ``ModelType`` that does not run, or a model file
            that cannot be loaded or has another input than one image batch.
    """

    framework: ClassVar[str] = ""
    default_channels_last: ClassVar[bool] = True
    input_shape: tuple[int | None, ...]
    """The model's input shape, batch first; None for a size that varies."""
    input_dtype: np.dtype

    def __init__(self, definition: ModelDefinition, device: str | None = None) -> None:
        self.definition = definition
        self.info = model_info(definition)
        self.configuration = known_configuration(definition, self.framework)
        self._check_task()
        self.device = torch.device(pick_device(device))
        self.multi_label = is_multi_label(definition, self.info.multi_label)
        self._load(definition)
        if len(self.input_shape) != 4:
            raise InputError(
                f"{self._name()} takes input of shape {self._shape_text()}, expected one "
                "batch of images (N, H, W, C) or (N, C, H, W)",
                "export the model with a batch dimension",
            )
        self.channels_last = self._channels_last()
        self.normalizer = self._normalizer()

    def _load(self, definition: ModelDefinition) -> None:
        raise NotImplementedError

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs for one batch, by output name, as numpy arrays."""
        raise NotImplementedError

    # -- checks ----------------------------------------------------------------------------

    def _name(self) -> str:
        return f"{self.definition.get('Framework')} model {self.definition.get('ModelFile')}"

    def _shape_text(self) -> str:
        return "(" + ", ".join("?" if d is None else str(d) for d in self.input_shape) + ")"

    def _check_task(self) -> None:
        task = CONFIGURATION_TASKS.get(self.configuration or "")
        if task is not None and task != self.info.task:
            raise InputError(
                f"ModelConfiguration {self.configuration} is a {_TASK_NAMES[task]} model but "
                f"the .emd's ModelType is {self.definition.get('ModelType')}",
                f"set ModelType {_TASK_NAMES[task]}",
            )
        if self.info.task not in _TASK_NAMES:
            framework, model_type = (self.definition.get(k) for k in ("Framework", "ModelType"))
            raise InputError(
                f"{framework} models run here for pixel classification, object detection and "
                f"object classification, not {model_type}",
                "run instance segmentation models through a Python raster function "
                "(InferenceFunction)",
            )

    def _channels_last(self) -> bool:
        bands = len(self.info.extract_bands)
        second, last = self.input_shape[1], self.input_shape[-1]
        if last == bands and second != bands:
            return True
        if second == bands and last != bands:
            return False
        if None not in (second, last) and bands not in (second, last):
            raise InputError(
                f"{self._name()} takes input of shape {self._shape_text()}, which has no "
                f"dimension of {bands} bands (ExtractBands {self.info.extract_bands})",
                "set ExtractBands to the bands the model takes",
            )
        model_format = str(self.definition.get("ModelFormat") or "").upper()
        if model_format in ("NHWC", "NCHW"):
            return model_format == "NHWC"
        return self.default_channels_last

    def _normalizer(self) -> Normalizer | None:
        raw = self.definition.to_dict()
        if self.configuration in RAW_INPUT_CONFIGURATIONS or raw.get("DataRange"):
            return None
        if not raw.get("NormalizationStats") and raw.get("IsImageNetNormalization") is False:
            return None
        try:
            return Normalizer.from_emd(raw)
        except ValueError as err:
            raise InputError(
                f"cannot normalise the input of {self._name()}: {err}",
                "give NormalizationStats, DataRange, or IsImageNetNormalization false for "
                "raw pixel values (ImageNet normalisation needs 3 ExtractBands)",
            ) from None

    # -- input -----------------------------------------------------------------------------

    def _inputs(self, tiles: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The model's input batch from raw tiles ``(N, bands, H, W)``."""
        bands = self.info.extract_bands
        if self.normalizer is not None:
            x = self.normalizer.normalize(tiles, extract_bands=bands, mask=valid)
        else:
            x = np.where(valid[:, None], tiles[:, bands], np.zeros((), tiles.dtype))
            data_range = self.definition.get("DataRange")
            if data_range:
                x = scale_to_data_range(x, data_range)
            x = _cast(x, self.input_dtype)
        x = self._resized(x)
        if self.channels_last:
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x)

    def _resized(self, x: np.ndarray) -> np.ndarray:
        """Chips resized (bilinear) to a classifier's fixed input size."""
        size = self.input_shape[1:3] if self.channels_last else self.input_shape[2:4]
        if None in size or tuple(size) == x.shape[2:]:
            return x
        if self.info.task != CLASSIFICATION:
            raise InputError(
                f"{self._name()} takes {size[0]} x {size[1]} pixel tiles, not "
                f"{x.shape[2]} x {x.shape[3]}",
                f"set ImageHeight {size[0]} and ImageWidth {size[1]} in the .emd "
                "(and no tile_size argument)",
            )
        t = torch.from_numpy(x.astype(np.float32, copy=False))
        resized = torch.nn.functional.interpolate(
            t, size=tuple(size), mode="bilinear", align_corners=False
        )
        return resized.numpy().astype(self.input_dtype, copy=False)

    def _outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The outputs for a batch; a model with a fixed batch of 1 is run image by image."""
        fixed = self.input_shape[0]
        if fixed is None or fixed == len(x):
            return self._run(x)
        if fixed != 1:
            raise InputError(
                f"{self._name()} takes batches of exactly {fixed} images",
                f"give the argument batch_size={fixed}",
            )
        parts = [self._run(x[i : i + 1]) for i in range(len(x))]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    # -- the predictor interface -----------------------------------------------------------

    def predict_pixels(self, tiles: np.ndarray, valid: np.ndarray) -> np.ndarray:
        outputs = self._outputs(self._inputs(tiles, valid))
        if self.configuration == DEEPLAB:
            out = _named(outputs, SEMANTIC_PREDICTIONS, self._name())
        else:
            out = next(iter(outputs.values()))
        values = np.array([0, *(v for v, _, _ in self.info.classes)], dtype=np.int64)
        n, _, height, width = tiles.shape
        if not np.issubdtype(out.dtype, np.floating) or out.ndim == 3:
            classes = out.reshape(n, height, width) if out.size == n * height * width else out
            self._check_shape(classes, (n, height, width))
            classes = np.rint(classes) if np.issubdtype(classes.dtype, np.floating) else classes
            return class_value_probabilities(classes.astype(np.int64), values, self._name())
        if self.channels_last:
            out = out.transpose(0, 3, 1, 2)
        k = len(values) - 1
        if out.shape[1] not in (k, k + 1):
            raise InputError(
                f"{self._name()} returns {out.shape[1]} channels for {k} Classes",
                f"return {k + 1} channels (background first) or {k} (the Classes in order)",
            )
        self._check_shape(out, (n, out.shape[1], height, width))
        probs = as_probabilities(out, multi_label=False)
        if out.shape[1] == k:
            probs = np.concatenate([np.zeros_like(probs[:, :1]), probs], axis=1)
        return probs

    def classify(self, chips: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = next(iter(self._outputs(self._inputs(chips, valid)).values()))
        k = len(self.info.classes)
        out = out.reshape(len(chips), -1) if out.ndim > 2 else out
        if out.ndim != 2 or out.shape[1] != k:
            raise InputError(
                f"{self._name()} returns scores of shape {out.shape} for {k} Classes",
                f"return (N, {k}) scores, the Classes in order",
            )
        return as_probabilities(out, self.multi_label)

    def predict_objects(
        self, tiles: np.ndarray, valid: np.ndarray, arguments: dict[str, Any]
    ) -> list[TileDetections]:
        threshold = float(arguments.get("threshold", 0.5))
        nms_overlap = float(arguments.get("nms_overlap", 0.1))
        outputs = self._outputs(self._inputs(tiles, valid))
        height, width = tiles.shape[2:]
        values = np.array([v for v, _, _ in self.info.classes], dtype=np.int64)
        found = []
        for i in range(len(tiles)):
            if self.configuration == OBJECT_DETECTION_API:
                dets = _odapi_detections(outputs, i, height, width, self._name())
            else:
                dets = suppress(self._detections(outputs, i), nms_overlap)
            self._check_labels(dets["labels"], len(values))
            found.append(tile_detections(dets, values, threshold, with_masks=False))
        return found

    def _detections(self, outputs: dict[str, np.ndarray], i: int) -> dict[str, torch.Tensor]:
        """One image's detections; rows with labels below 1 are padding."""
        named = {_OUTPUT_ALIASES.get(k.lower(), k.lower()): v[i] for k, v in outputs.items()}
        named.pop(NUM_DETECTIONS, None)
        if {"boxes", "scores", "labels"} <= set(named):
            dets = detection_dict(named)
        else:
            dets = detection_dict(list(named.values()))  # recognised by shape and type
        real = dets["labels"] >= 1
        return {k: v[real] for k, v in dets.items()}

    def _check_labels(self, labels: torch.Tensor, k: int) -> None:
        if labels.numel() and int(labels.max()) > k:
            raise InputError(
                f"{self._name()} returned class {int(labels.max())} but the .emd has {k} Classes",
                "list every class the model detects in Classes, in order",
            )

    def _check_shape(self, out: np.ndarray, expected: tuple[int, ...]) -> None:
        if out.shape != expected:
            raise InputError(
                f"{self._name()} returns output of shape {out.shape}, expected {expected}",
                "return one value per pixel of the input tile (docs/backends.md)",
            )


def _named(outputs: Mapping[str, np.ndarray], name: str, model: str) -> np.ndarray:
    for key, value in outputs.items():
        if key.split(":")[0] == name:
            return value
    raise InputError(
        f"{model} has no output {name} (it has {', '.join(outputs)})",
        "give the graph its configuration's output names (docs/backends.md)",
    )


def _odapi_detections(
    outputs: Mapping[str, np.ndarray], i: int, height: int, width: int, model: str
) -> dict[str, torch.Tensor]:
    """One image's detections from ObjectDetectionAPI outputs (boxes ``ymin, xmin, ymax, xmax``
    in 0-1 of the tile, classes 1-based)."""
    boxes, scores, classes = (_named(outputs, name, model)[i] for name in ODAPI_OUTPUTS)
    count = len(scores)
    if any(k.split(":")[0] == NUM_DETECTIONS for k in outputs):
        count = int(_named(outputs, NUM_DETECTIONS, model)[i])
    yx = np.asarray(boxes[:count], dtype=np.float64).reshape(-1, 4)
    scale = np.array([width, height, width, height], dtype=np.float64)
    xyxy = yx[:, [1, 0, 3, 2]] * scale
    return {
        "boxes": torch.from_numpy(xyxy),
        "scores": torch.from_numpy(np.asarray(scores[:count], dtype=np.float64)),
        "labels": torch.from_numpy(np.rint(classes[:count]).astype(np.int64)),
    }


def as_probabilities(out: np.ndarray, multi_label: bool) -> np.ndarray:
    """Scores along axis 1 as probabilities: kept when they are already, else from logits."""
    out = np.asarray(out, dtype=np.float32)
    if multi_label:
        in_range = out.size == 0 or (out.min() >= 0 and out.max() <= 1)
        return out if in_range else class_probabilities(out, multi_label=True)
    if out.size and out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out
    return pixel_probabilities(out) if out.ndim == 4 else class_probabilities(out, False)


_TYPE_RANGES = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max) for t in (np.uint8, np.uint16)}


def scale_to_data_range(x: np.ndarray, data_range: list[float]) -> np.ndarray:
    """Pixels scaled from their type's range (8 and 16 bit) to ``DataRange``."""
    lo, hi = float(data_range[0]), float(data_range[1])
    low, high = _TYPE_RANGES.get(x.dtype, (None, None))
    if low is None:
        return x.astype(np.float32)
    return (x.astype(np.float32) - low) * np.float32((hi - lo) / (high - low)) + np.float32(lo)


def _cast(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Pixels in the model's input type, clipped to an integer type's range."""
    if np.issubdtype(dtype, np.integer) and not np.can_cast(x.dtype, dtype):
        info = np.iinfo(dtype)
        x = np.clip(x, info.min, info.max)
    return x.astype(dtype, copy=False)
