"""Predictors: the one interface the tiling engine calls, whatever the model's backend.

A predictor receives raw pixels, exactly as read from the raster (all bands, nodata and
masked pixels set to 0, ``valid`` saying which are real), and does everything model-specific
itself: band selection, normalisation as in training, the forward pass, and turning outputs
into class values. The engine never sees tensors.

This module holds what the engine and every backend share: the :class:`Predictor`
interface, :class:`ModelInfo` read from the ``.emd``, :class:`TileDetections`, the model
arguments of the inference tools, and the device and torch thread settings. The backends are
in :mod:`rasterlearn.inference.backends`, whose
:func:`~rasterlearn.inference.backends.open_predictor` picks one from the model definition.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.models.arguments import ModelArgument, resolve_arguments

PIXEL, DETECTION, INSTANCE, CLASSIFICATION = "pixel", "detection", "instance", "classification"
CHANGE = "change"
"""What a change detector does (:attr:`ModelInfo.kind`): a pixel model over two rasters."""
CHANGE_MODEL_NAMES = ("ChangeDetector",)
"""``ModelName`` of change detectors (arcgis.learn's and ours)."""

_EMD_MODEL_TYPES = {
    "ImageClassification": PIXEL,
    "ObjectDetection": DETECTION,
    "InstanceDetection": INSTANCE,
    "ObjectClassification": CLASSIFICATION,
}
"""The task of each ``.emd`` ``ModelType``."""

MERGE_POLICIES = ("mean", "max", "min")


@dataclass
class TileDetections:
    """Objects found in one tile, in the tile's pixel coordinates (x right, y down).

    Attributes:
        boxes: ``(M, 4)`` float64 ``xmin, ymin, xmax, ymax``.
        scores: ``(M,)`` confidence in 0-1.
        classes: ``(M,)`` class values (the ``.emd``'s ``Classes`` ``Value``).
        shapes: One polygon per object (a mask outline) or None where the box is the shape.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    shapes: list[shapely.Geometry | None] | None = None

    @classmethod
    def empty(cls) -> TileDetections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, keep: np.ndarray) -> TileDetections:
        """The detections at the given indices or boolean mask."""
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        shapes = [self.shapes[i] for i in idx] if self.shapes is not None else None
        return TileDetections(self.boxes[idx], self.scores[idx], self.classes[idx], shapes)


@dataclass
class ModelInfo:
    """What the engine needs to know of a model, whatever its backend.

    Attributes:
        task: One of ``pixel``, ``detection``, ``instance``, ``classification``.
        tile_height: Rows of the tiles (chips) the model takes (``ImageHeight``).
        tile_width: Columns (``ImageWidth``).
        extract_bands: Input band indices (0-based) the model reads.
        image_space: ``MAP_SPACE`` or ``PIXEL_SPACE``.
        classes: ``(value, name, (r, g, b))`` per class, in the ``.emd``'s order.
        multi_label: For classifiers, several labels per object.
        crop_size_fixed: Classify Objects chips of fixed size centred on the feature (True)
            or cropped to the feature's bounds (False).
        blacken_around_feature: Classify Objects sets pixels outside the feature to 0.
        change: A change detector: a pixel model reading two rasters, the "from" raster's
            bands then the "to" raster's (``ExtractBands`` covers both).
    """

    task: str
    tile_height: int
    tile_width: int
    extract_bands: list[int]
    image_space: str
    classes: list[tuple[int, str, tuple[int, int, int]]]
    multi_label: bool = False
    crop_size_fixed: bool = True
    blacken_around_feature: bool = False
    arguments: tuple[ModelArgument, ...] = field(default=())
    change: bool = False

    @property
    def class_names(self) -> dict[int, str]:
        return {value: name for value, name, _ in self.classes}

    @property
    def kind(self) -> str:
        """What the model does, as the tools ask for it: its task, or ``change``."""
        return CHANGE if self.change else self.task

    def check_bands(self, band_count: int, raster_name: str) -> None:
        """Refuse a raster without the bands the model reads (a change detector: of each date).

        Raises:
            InputError: naming the band counts.
        """
        needed = max(self.extract_bands) + 1 if self.extract_bands else 0
        bands = [b + 1 for b in self.extract_bands]
        if self.change:
            needed = (needed + 1) // 2
            bands = sorted({(b - 1) % needed + 1 for b in bands})
        if band_count < needed:
            of_each = " of each date" if self.change else ""
            raise InputError(
                f"raster {raster_name} has {band_count} bands but the model reads bands "
                f"{bands}{of_each} (ExtractBands)",
                "give imagery of the sensor and band order the model was trained on",
            )


def model_info(definition: ModelDefinition) -> ModelInfo:
    """The engine-facing description of a model from its ``.emd``.

    Raises:
        InputError: for a definition without a known ``ModelType`` or with bad sizes.
    """
    raw = definition.to_dict()
    task = _EMD_MODEL_TYPES.get(str(raw.get("ModelType")))
    if task is None:
        raise InputError(
            f"model definition {definition.path or ''} has ModelType "
            f"{raw.get('ModelType')!r}, which rasterlearn cannot run",
            "give a pixel classification, object detection, instance segmentation or "
            "object classification model",
        )
    height = int(raw.get("ImageHeight") or 224)
    width = int(raw.get("ImageWidth") or height)
    if height < 8 or width < 8:
        raise InputError(
            f"model definition has ImageHeight {height} x ImageWidth {width}",
            "the .emd's chip size must be at least 8 pixels",
        )
    classes = []
    for c in raw.get("Classes") or []:
        color = c.get("Color") or [-1, -1, -1]
        rgb = tuple(int(v) for v in color[:3]) if min(color[:3]) >= 0 else (0, 0, 0)
        classes.append((int(c["Value"]), str(c.get("Name", c["Value"])), rgb))
    bands = raw.get("ExtractBands")
    if not isinstance(bands, list) or not all(isinstance(b, int) for b in bands):
        bands = [0, 1, 2]
    return ModelInfo(
        task=task,
        tile_height=height,
        tile_width=width,
        extract_bands=list(bands),
        image_space=str(raw.get("ImageSpaceUsed") or "MAP_SPACE").upper(),
        classes=classes,
        multi_label=bool(raw.get("IsMultilabel") or raw.get("MultiLabel")),
        crop_size_fixed=int(raw.get("CropSizeFixed", 1) or 0) == 1,
        blacken_around_feature=int(raw.get("BlackenAroundFeature", 0) or 0) == 1,
        arguments=inference_arguments(task, height, raw),
        change=task == PIXEL and str(raw.get("ModelName")) in CHANGE_MODEL_NAMES,
    )


def inference_arguments(task: str, tile_height: int, raw: dict) -> tuple[ModelArgument, ...]:
    """The model arguments of the inference tools for a task, ArcGIS's names and defaults.

    ``batch_size`` defaults to the ``.emd``'s ``BatchSize`` when it has one. A model whose
    ``.emd`` gives an ``InferenceTileSize`` (rasterlearn's FCOS: twice its chip size) is run on
    tiles of that size by default, in batches of as many pixels as at its chip size.
    """
    a = ModelArgument
    tile = int(raw.get("InferenceTileSize") or tile_height)
    chips = 4 if task != DETECTION else 16
    batch = int(raw.get("BatchSize") or max(1, chips * tile_height**2 // tile**2))
    tta = a("test_time_augmentation", bool, False, "predict on flipped/rotated copies and merge")
    padding = a("padding", int, tile // 4, "pixels of each tile edge used only as context")
    batch_arg = a("batch_size", int, batch, "tiles per forward pass")
    variable = (
        (a("tile_size", int, tile, "tile size in pixels (square)"),)
        if raw.get("SupportsVariableTileSize") or tile != tile_height
        else ()
    )
    if task == PIXEL:
        return (
            padding,
            batch_arg,
            a("predict_background", bool, True, "background (0) is a predicted class"),
            tta,
            a(
                "merge_policy",
                str,
                "mean",
                "merging of augmented predictions",
                choices=MERGE_POLICIES,
            ),
            a("return_probability_raster", bool, False, "also write class probabilities"),
            *variable,
        )
    if task in (DETECTION, INSTANCE):
        threshold = raw.get("DetectionThreshold") or (
            0.9 if task == INSTANCE and raw.get("ModelName") == "MaskRCNN" else 0.5
        )
        args = [
            padding,
            a("threshold", float, threshold, "minimum confidence of a detection (0-1)"),
            a("nms_overlap", float, 0.1, "IoU above which the weaker of two detections goes"),
            batch_arg,
            a("exclude_pad_detections", bool, True, "drop detections cut by a tile edge"),
            tta,
        ]
        if task == INSTANCE:
            args.append(a("return_bboxes", bool, False, "boxes instead of mask outlines"))
        return (*args, *variable)
    return (
        batch_arg,
        a("threshold", float, 0.5, "minimum probability of a label (multi-label models)"),
        tta,
    )


def resolve_model_arguments(info: ModelInfo, given: dict[str, Any] | None) -> dict[str, Any]:
    """Check user arguments against the model's and fill in defaults.

    Raises:
        ParameterError: for an unknown name (listing the valid ones) or a bad value.
    """
    values = resolve_arguments("this model", info.arguments, given)
    for name in ("batch_size",):
        if name in values and values[name] < 1:
            raise ParameterError(f"{name} must be at least 1, got {values[name]}", "give 1 or more")
    height, width = tile_shape(info, values)
    if "tile_size" in values and not 32 <= values["tile_size"] <= 8192:
        raise ParameterError(
            f"tile_size {values['tile_size']} is out of range", "give 32 to 8192 pixels"
        )
    if "padding" in values:
        limit = (min(height, width) - 1) // 2
        if not 0 <= values["padding"] <= limit:
            raise ParameterError(
                f"padding {values['padding']} does not fit tiles of {height} x {width} pixels",
                f"give a padding from 0 to {limit}",
            )
    for name in ("threshold", "nms_overlap"):
        if name in values and not 0.0 <= values[name] <= 1.0:
            raise ParameterError(
                f"{name} must be between 0 and 1, got {values[name]}",
                f"give {name} as a fraction, e.g. {name}=0.5",
            )
    return values


def tile_shape(info: ModelInfo, arguments: dict[str, Any]) -> tuple[int, int]:
    """Rows and columns of the tiles to cut: the model's chip size or ``tile_size``."""
    size = arguments.get("tile_size")
    return (int(size), int(size)) if size else (info.tile_height, info.tile_width)


class Predictor:
    """The interface every backend implements.

    Attributes:
        info: The model as the engine sees it.
        definition: The model definition it was opened from.
    """

    info: ModelInfo
    definition: ModelDefinition

    @property
    def concurrent(self) -> bool:
        """Whether several threads may predict at once, each on one core.

        The engine then runs every forward pass of this predictor on one thread, in this
        process as on cluster workers, and spreads batches over threads instead. The float
        results of a batch then never depend on how many threads or processes share the
        work. False (the default) runs one batch at a time with the backend's own threads.
        """
        return False

    def configure(self, arguments: dict[str, Any]) -> None:
        """Take the run's resolved model arguments before the first prediction (backends
        whose model reads its own arguments, such as Python raster functions, override it)."""

    def predict_pixels(self, tiles: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class probabilities per pixel.

        Args:
            tiles: ``(N, bands, H, W)`` raw pixels of every raster band (invalid pixels 0).
            valid: ``(N, H, W)`` bool, True where the pixel is real data.

        Returns:
            ``(N, K + 1, H, W)`` float32 probabilities; channel 0 is background (value 0),
            channel i the i-th class of :attr:`ModelInfo.classes`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not classify pixels")

    def predict_objects(
        self, tiles: np.ndarray, valid: np.ndarray, arguments: dict[str, Any]
    ) -> list[TileDetections]:
        """Objects per tile, in tile pixel coordinates, with confidence >= ``threshold``."""
        raise NotImplementedError(f"{type(self).__name__} does not detect objects")

    def classify(self, chips: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, K)`` per chip (softmax, or sigmoid per class when
        multi-label), columns in :attr:`ModelInfo.classes` order."""
        raise NotImplementedError(f"{type(self).__name__} does not classify objects")


def class_value_probabilities(
    classes: np.ndarray, class_values: np.ndarray, source: str
) -> np.ndarray:
    """One-hot probabilities ``(N, K + 1, H, W)`` from class values ``(N, H, W)``.

    Args:
        classes: The class value of each pixel (0 for background).
        class_values: ``[0, *Values of Classes]``, the value of each output channel.
        source: What gave the values, for the error message.

    Raises:
        InputError: for values that are neither 0 nor a class ``Value``.
    """
    order = np.argsort(class_values, kind="stable")
    ordered = class_values[order]
    index = np.clip(np.searchsorted(ordered, classes), 0, len(class_values) - 1)
    known = ordered[index] == classes
    if not known.all():
        unknown = sorted({int(v) for v in np.unique(classes[~known])})
        raise InputError(
            f"{source} returned class values {unknown[:10]} that the model's Classes do not "
            f"hold ({list(class_values[1:])})",
            "return 0 or a class Value of the .emd's Classes",
        )
    out = np.zeros((classes.shape[0], len(class_values), *classes.shape[1:]), dtype=np.float32)
    np.put_along_axis(out, order[index][:, None], 1.0, axis=1)
    return out


def pick_device(device: str | None) -> str:
    """``cuda`` when a GPU is there and no device is asked for, else ``cpu``.

    Raises:
        ParameterError: when a GPU is asked for and there is none.
    """
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"device {device} asked for but no GPU is visible", "use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ParameterError(f"unknown device {device!r}", "give cpu, cuda or cuda:N")
    return device


def set_torch_threads(threads: int) -> int:
    """Set the threads torch's CPU operations use; returns the number used before."""
    import torch

    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    return before


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch's CPU operations on ``threads`` threads meanwhile (restored on exit)."""
    before = set_torch_threads(threads)
    try:
        yield
    finally:
        set_torch_threads(before)


def use_all_cpu_threads() -> None:
    """Let torch use every core this process may run on, or ``OMP_NUM_THREADS`` when set
    (Dask sets it for its worker processes so that workers do not oversubscribe cores)."""
    import torch

    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores))
