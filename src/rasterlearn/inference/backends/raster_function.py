"""Custom inference functions: models that run through the Esri Python raster function protocol.

A model definition whose ``InferenceFunction`` names a ``.py`` file (not one of ArcGIS Pro's
``[Functions]...`` built-ins) is run by that file, as ArcGIS Pro runs it (reference §4.5):
the module is loaded from the model's folder, the class named like the module is
instantiated, and the inference tools call it through :class:`RasterFunctionPredictor`:

* ``initialize(model=<.emd path or JSON text>, device=<GPU index, -1 for the CPU>)``;
* ``getParameterInfo()``: the entries after ``raster``/``rasters``, ``model`` and ``device``
  become the model's arguments (checked and listed like any model's); the inference tools'
  own arguments (``padding``, ``batch_size``, ``threshold``, ...) are added where the
  function does not declare them;
* ``getConfiguration(**scalars)``, with the function's arguments as strings (as Pro passes
  them), whenever their values change: ``extractBands`` picks the bands passed to the
  function, ``padding`` the context added around each pixel block, ``tx``/``ty`` the tile size;
* pixel classification models: ``updatePixels(tlc, shape, props, raster_pixels=...,
  raster_mask=...)`` per tile; ``output_pixels`` holds class values, turned into one-hot
  probabilities over ``[0, *class values]`` (an ``output_mask`` of 0 gives background);
* object detection and instance segmentation models: ``vectorize(raster_pixels=...,
  raster_mask=...)`` per tile; ``output_vectors`` is an Esri JSON featureset of polygons
  (rings in the block's pixel coordinates, x = column, y = row) whose attributes hold
  ``Confidence`` (0-100, as Pro writes it) and ``Class``/``Classname``/``Label`` (a class
  name or value of the ``.emd``'s ``Classes``);
* object classification models: ``vectorize(rasters_pixels=[...], rasters_mask=[...])`` per
  batch of chips; one feature per chip, with ``Label`` (``;``-joined for multi-label) and
  ``Confidence`` (0-1, as Classify Objects writes it).

Tiles and blocks: for pixel models the engine's tiles are ``ty`` x ``tx`` (default the
``.emd``'s ``ImageHeight`` x ``ImageWidth``) and each tile reaches the function with
``padding`` pixels of nodata (0, mask 0) around it, so the block has Pro's size and the output
covers the whole tile; the engine's ``padding`` argument (default the function's) overlaps the
tiles so that every kept pixel has that much real context. For detectors the tile (default
``ty + 2 padding`` x ``tx + 2 padding``) is the block. ``tlc`` is ``(0.0, 0.0)``: the
function works in the block's pixel coordinates.

**Trust.** An inference function is Python code from the model package: opening such a
model runs that code with the rights of the user, exactly as ArcGIS Pro does. It is imported
only from the file the ``.emd`` names, in the folder of the ``.emd`` or of the extracted
``.dlpk`` the user gave (never from ``sys.path``); open models with custom functions only from
sources you trust.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import shapely

from rasterlearn.errors import InputError, RasterLearnError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.predictors import (
    CLASSIFICATION,
    DETECTION,
    INSTANCE,
    PIXEL,
    ModelInfo,
    Predictor,
    TileDetections,
    class_value_probabilities,
    inference_arguments,
    model_info,
    pick_device,
)
from rasterlearn.models.arguments import ModelArgument, resolve_arguments

BUILTIN_PARAMETERS = ("raster", "rasters", "model", "device")
"""``getParameterInfo`` entries that are inputs of the tool, not model arguments."""

_DATA_TYPES: dict[str, type] = {
    "numeric": float,
    "double": float,
    "gpdouble": float,
    "float": float,
    "long": int,
    "gplong": int,
    "integer": int,
    "int": int,
    "boolean": bool,
    "gpboolean": bool,
    "bool": bool,
    "string": str,
    "gpstring": str,
    "gpstringkeyword": str,
}
"""``dataType`` of a parameter -> the type of its model argument."""

_PIXEL_TYPES = {
    "int8": "i1",
    "uint8": "u1",
    "int16": "i2",
    "uint16": "u2",
    "int32": "i4",
    "uint32": "u4",
    "float32": "f4",
    "float64": "f8",
}

_VALUE_KEYS = ("classvalue", "value")
_NAME_KEYS = ("class", "classname", "label")


def load_function_module(path: Path) -> ModuleType:
    """Import a Python file by its path, as a module of a name private to that path.

    The file is executed: this runs the model package's code (see the module docstring).

    Raises:
        InputError: when the file is missing or raises while it is imported.
    """
    if not path.is_file():
        raise InputError(
            f"the model's inference function {path} does not exist",
            "restore the .py file next to the .emd, or fix the .emd's InferenceFunction",
        )
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"rasterlearn_function_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {path}", "give a Python (.py) inference function")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the function's own code: any error is the package's
        sys.modules.pop(name, None)
        raise _function_error(path, "import", err) from None
    return module


def _function_error(path: Path, step: str, err: BaseException) -> InputError:
    line = ""
    if isinstance(err, SyntaxError) and err.lineno:
        line = f" (line {err.lineno})"
    else:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == str(path)]
        if frames:
            line = f" (line {frames[-1].lineno})"
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return InputError(
        f"inference function {path.name} failed in {step}{line}: {type(err).__name__}"
        + (f": {message}" if message else ""),
        "fix the function, or give the raster and arguments it was written for",
    )


def _function_class(module: ModuleType, path: Path) -> type:
    """The class named like the module (Pro's default), else the module's only PRF class."""
    found = getattr(module, path.stem, None)
    if inspect.isclass(found):
        return found
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and hasattr(obj, "getParameterInfo")
        and (hasattr(obj, "updatePixels") or hasattr(obj, "vectorize"))
    ]
    if len(classes) == 1:
        return classes[0]
    raise InputError(
        f"inference function {path.name} defines no class {path.stem}",
        f"name the raster function class {path.stem}, like its file",
    )


def _argument(entry: Mapping[str, Any], engine: Mapping[str, ModelArgument]) -> ModelArgument:
    """A model argument from a ``getParameterInfo`` entry (typed like the engine's own when
    it has the same name)."""
    name = str(entry["name"])
    doc = str(entry.get("description") or entry.get("displayName") or "")
    same = engine.get(name.lower())
    if same is not None:
        kind, choices = same.type, same.choices
    else:
        kind = _DATA_TYPES.get(str(entry.get("dataType", "string")).lower(), str)
        domain = entry.get("domain")
        choices = tuple(str(v) for v in domain) if kind is str and domain else ()
    arg = ModelArgument(name, kind, None, doc, choices=choices)
    value = entry.get("value")
    if value is None or (isinstance(value, str) and not value.strip() and kind is not str):
        default = None
    else:
        default = arg.parse(value)
    return dataclasses.replace(arg, default=default)


def _scalar(value: Any) -> str:
    """An argument value as Pro passes scalars: text."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class RasterFunctionPredictor(Predictor):
    """A model run by its own Python raster function (the ``.emd``'s ``InferenceFunction``).

    This runs Python code from the model package (see the module docstring): only open models
    from sources you trust.

    Args:
        definition: The model definition; ``InferenceFunction`` names the ``.py`` file,
            relative to the ``.emd`` (or the extracted ``.dlpk``).
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one. The
            function receives it as Pro passes it: the GPU index, -1 for the CPU.

    Raises:
        InputError: for a missing or failing function file, or a definition without a known
            ``ModelType``.
    """

    def __init__(self, definition: ModelDefinition, device: str | None = None) -> None:
        self.definition = definition
        base = model_info(definition)
        path = definition.resolve("InferenceFunction")
        if path is None:
            raise InputError(
                "the model definition names no inference function file",
                "give the .py file in the .emd's InferenceFunction",
            )
        self.path = path
        module = load_function_module(path)
        self.function = self._call("creating the function", _function_class(module, path))
        chosen = pick_device(device)
        self.device_id = -1 if chosen == "cpu" else int(chosen.partition(":")[2] or 0)
        model = str(definition.path) if definition.path is not None else definition.to_json()
        self._call("initialize", self.function.initialize, model=model, device=self.device_id)
        self.model_text = model
        self.task = base.task
        raw = definition.to_dict()
        engine = inference_arguments(base.task, base.tile_height, raw)
        by_name = {a.name.lower(): a for a in engine}
        entries = self._call("getParameterInfo", self.function.getParameterInfo) or []
        self.declared = tuple(
            _argument(e, by_name)
            for e in entries
            if isinstance(e, Mapping) and str(e.get("name", "")).lower() not in BUILTIN_PARAMETERS
        )
        declared_names = {a.name.lower() for a in self.declared}
        self._configuration: dict[str, Any] = {}
        self._configured_with: tuple | None = None
        self._props: dict[str, Any] | None = None
        self._given: dict[str, Any] | None = None
        config = self._configure(self._function_values(None))
        padding = int(config.get("padding") or 0)
        height, width = base.tile_height, base.tile_width
        if config.get("tx") and config.get("ty"):
            extra = 0 if base.task == PIXEL else 2 * padding
            height, width = int(config["ty"]) + extra, int(config["tx"]) + extra
        engine = inference_arguments(base.task, height, raw)
        own = tuple(
            dataclasses.replace(a, default=padding) if a.name == "padding" else a
            for a in engine
            if a.name.lower() not in declared_names
        )
        self.info: ModelInfo = dataclasses.replace(
            base,
            tile_height=height,
            tile_width=width,
            extract_bands=self._extract_bands(config, raw),
            arguments=(*self.declared, *own),
        )

    # -- calling the function ------------------------------------------------------------

    def _call(self, step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RasterLearnError:
            raise
        except Exception as err:  # the function's own code: any error is the package's
            raise _function_error(self.path, step, err) from None

    def _function_values(self, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """The function's own arguments, resolved: given values (any case) and defaults."""
        names = {a.name.lower() for a in self.declared}
        given = {k: v for k, v in (arguments or {}).items() if str(k).lower() in names}
        return resolve_arguments("this inference function", self.declared, given)

    def _configure(self, values: dict[str, Any]) -> dict[str, Any]:
        """``getConfiguration`` for these argument values (called again only when they change)."""
        scalars = {name: _scalar(v) for name, v in values.items() if v is not None}
        key = tuple(sorted(scalars.items()))
        if key != self._configured_with:
            getter = getattr(self.function, "getConfiguration", None)
            config = {}
            if getter is not None:
                config = self._call("getConfiguration", getter, model=self.model_text, **scalars)
            self._configuration = dict(config or {})
            self._configured_with = key
            self._props = None
        return self._configuration

    def _extract_bands(self, config: Mapping[str, Any], raw: Mapping[str, Any]) -> list[int]:
        bands = config.get("extractBands")
        if bands is None:
            bands = raw.get("ExtractBands")
        if isinstance(bands, list | tuple) and all(
            isinstance(b, int | np.integer) and not isinstance(b, bool) for b in bands
        ):
            return [int(b) for b in bands]
        return []  # every band of the raster

    def _bands(self, config: Mapping[str, Any], count: int) -> list[int]:
        bands = self._extract_bands(config, self.definition.to_dict())
        return bands or list(range(count))

    def configure(self, arguments: Mapping[str, Any] | None) -> None:
        """Set the argument values of later :meth:`predict_pixels` calls (the engine passes
        them to :meth:`predict_objects` itself)."""
        self._given = dict(arguments) if arguments is not None else None

    def _output_props(self, tiles: np.ndarray, values: dict[str, Any]) -> dict[str, Any]:
        """The output raster's properties (``updateRasterInfo``), once per configuration."""
        if self._props is not None:
            return self._props
        height, width = tiles.shape[-2:]
        output_info: dict[str, Any] = {
            "bandCount": 1,
            "pixelType": "i4",
            "noData": None,
            "cellSize": (1.0, 1.0),
            "width": int(width),
            "height": int(height),
            "statistics": (),
            "histogram": (),
        }
        updater = getattr(self.function, "updateRasterInfo", None)
        if updater is not None:
            raster_info = {
                "bandCount": int(tiles.shape[1]),
                "pixelType": _PIXEL_TYPES.get(str(tiles.dtype), "f8"),
                "noData": None,
                "cellSize": (1.0, 1.0),
            }
            scalars = {n: _scalar(v) for n, v in values.items() if v is not None}
            result = self._call(
                "updateRasterInfo",
                updater,
                raster_info=raster_info,
                output_info=dict(output_info),
                **scalars,
            )
            if isinstance(result, Mapping) and isinstance(result.get("output_info"), Mapping):
                output_info = dict(result["output_info"])
        self._props = output_info
        return output_info

    # -- the predictor interface ---------------------------------------------------------

    def predict_pixels(
        self,
        tiles: np.ndarray,
        valid: np.ndarray,
        arguments: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """One-hot class probabilities from the function's ``updatePixels`` class values.

        Args:
            tiles: ``(N, bands, H, W)`` raw pixels (invalid pixels 0).
            valid: ``(N, H, W)`` True where the pixel is real data.
            arguments: Argument values; default those given to :meth:`configure`, else the
                defaults.

        Returns:
            ``(N, K + 1, H, W)`` float32: 1 in the channel of the pixel's class (channel 0 is
            background, value 0), 0 elsewhere.

        Raises:
            InputError: when the function fails, returns a block of another shape, or class
                values the model's ``Classes`` do not hold.
        """
        if self.task != PIXEL:
            raise NotImplementedError(f"a {self.task} inference function does not classify pixels")
        values = self._function_values(arguments if arguments is not None else self._given)
        config = self._configure(values)
        props = self._output_props(tiles, values)
        bands = self._bands(config, tiles.shape[1])
        pad = int(config.get("padding") or 0)
        class_values = np.array([0, *(v for v, _, _ in self.info.classes)], dtype=np.int64)
        n, _, height, width = tiles.shape
        out = np.zeros((n, len(class_values), height, width), dtype=np.float32)
        for i in range(n):
            pixels = tiles[i, bands]
            mask = np.broadcast_to(valid[i], pixels.shape).astype(np.uint8)
            if pad:
                widths = ((0, 0), (pad, pad), (pad, pad))
                pixels, mask = np.pad(pixels, widths), np.pad(mask, widths)
            blocks: dict[str, Any] = {"raster_pixels": pixels, "raster_mask": mask}
            result = self._call(
                "updatePixels",
                self.function.updatePixels,
                (0.0, 0.0),
                (height, width),
                props,
                **blocks,
            )
            result = result if isinstance(result, Mapping) else blocks
            classes = self._block(result.get("output_pixels"), height, width, "output_pixels")
            output_mask = result.get("output_mask")
            if output_mask is not None:
                keep = self._block(output_mask, height, width, "output_mask") != 0
                classes = np.where(keep, classes, 0)
            source = f"inference function {self.path.name}"
            out[i] = class_value_probabilities(classes[None], class_values, source)[0]
        return out

    def _block(self, array: Any, height: int, width: int, key: str) -> np.ndarray:
        if array is None:
            raise InputError(
                f"inference function {self.path.name} set no {key} in updatePixels",
                "set pixelBlocks['output_pixels'] to the class values and return pixelBlocks",
            )
        block = np.asarray(array)
        if block.ndim == 3 and block.shape[0] == 1:
            block = block[0]
        if block.shape != (height, width):
            raise InputError(
                f"inference function {self.path.name} returned {key} of shape {block.shape}, "
                f"expected {(height, width)}",
                "return one value per pixel of the requested block (the shape argument)",
            )
        if not np.issubdtype(block.dtype, np.integer):
            block = np.rint(block)
        return block.astype(np.int64)

    def predict_objects(
        self, tiles: np.ndarray, valid: np.ndarray, arguments: dict[str, Any]
    ) -> list[TileDetections]:
        """Objects from the function's ``vectorize`` featureset, one call per tile.

        Raises:
            InputError: when the function fails or returns features that cannot be read.
        """
        if self.task not in (DETECTION, INSTANCE):
            raise NotImplementedError(f"a {self.task} inference function does not detect objects")
        values = self._function_values(arguments)
        config = self._configure(values)
        bands = self._bands(config, tiles.shape[1])
        threshold = float(arguments.get("threshold", 0.0) or 0.0)
        as_boxes = bool(arguments.get("return_bboxes", False))
        out = []
        for i in range(len(tiles)):
            pixels = tiles[i, bands]
            mask = np.broadcast_to(valid[i], pixels.shape).astype(np.uint8)
            result = self._call(
                "vectorize", self.function.vectorize, raster_pixels=pixels, raster_mask=mask
            )
            features = self._features(result)
            dets = self._detections(features)
            dets = dets.subset(dets.scores >= threshold)
            if as_boxes:
                dets.shapes = None
            out.append(dets)
        return out

    def classify(self, chips: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, K)`` from the labels and confidences ``vectorize`` gives.

        The label's column holds its confidence (0-1); the other columns share the rest
        (multi-label: each label's column holds its confidence, the others 0).
        """
        if self.task != CLASSIFICATION:
            raise NotImplementedError(f"a {self.task} inference function does not classify")
        config = self._configure(self._function_values(self._given))
        bands = self._bands(config, chips.shape[1])
        pixels = [chips[i, bands] for i in range(len(chips))]
        masks = [np.broadcast_to(valid[i], p.shape).astype(np.uint8) for i, p in enumerate(pixels)]
        result = self._call(
            "vectorize", self.function.vectorize, rasters_pixels=pixels, rasters_mask=masks
        )
        features = self._features(result)
        if len(features) != len(chips):
            raise InputError(
                f"inference function {self.path.name} returned {len(features)} features for "
                f"{len(chips)} chips",
                "return one feature per chip, in the order of rasters_pixels",
            )
        columns = {value: j for j, (value, _, _) in enumerate(self.info.classes)}
        k = len(columns)
        probs = np.zeros((len(chips), k), dtype=np.float32)
        for i, feature in enumerate(features):
            attributes = _lower_keys(feature.get("attributes") or {})
            labels = str(_first(attributes, _NAME_KEYS + _VALUE_KEYS, "")).split(";")
            scores = str(_first(attributes, ("confidence", "score"), "1")).split(";")
            for label, score in zip(labels, scores + [scores[-1]] * len(labels), strict=False):
                if not label.strip():
                    continue
                j = columns[self._class_value(label.strip())]
                probs[i, j] = float(score)
            if not self.info.multi_label and k > 1 and probs[i].sum() > 0:
                top = probs[i].max()
                probs[i] = np.where(probs[i] == top, top, (1.0 - top) / (k - 1))
        return probs

    # -- reading featuresets -------------------------------------------------------------

    def _features(self, result: Any) -> list[dict[str, Any]]:
        vectors = result.get("output_vectors") if isinstance(result, Mapping) else None
        if vectors is None or (isinstance(vectors, str) and not vectors.strip()):
            return []
        try:
            featureset = json.loads(vectors) if isinstance(vectors, str | bytes) else vectors
        except json.JSONDecodeError as err:
            raise InputError(
                f"inference function {self.path.name} returned output_vectors that are not "
                f"JSON: {err.msg}",
                "return json.dumps of a featureset {'features': [...]}",
            ) from None
        features = featureset.get("features") if isinstance(featureset, Mapping) else None
        if not isinstance(features, list):
            raise InputError(
                f"inference function {self.path.name} returned output_vectors without features",
                "return json.dumps of a featureset {'features': [...]}",
            )
        return features

    def _class_value(self, label: Any) -> int:
        names = {name.lower(): value for value, name, _ in self.info.classes}
        values = {value for value, _, _ in self.info.classes}
        text = str(label).strip()
        if text.lower() in names:
            return names[text.lower()]
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and number.is_integer() and int(number) in values:
            return int(number)
        raise InputError(
            f"inference function {self.path.name} returned the class {text!r}, which the "
            f"model's Classes do not hold ({', '.join(n for _, n, _ in self.info.classes)})",
            "return a class Name or Value of the .emd's Classes",
        )

    def _detections(self, features: list[dict[str, Any]]) -> TileDetections:
        if not features:
            return TileDetections.empty()
        shapes, scores, classes = [], [], []
        only = self.info.classes[0][0] if len(self.info.classes) == 1 else None
        for feature in features:
            geometry = feature.get("geometry") or {}
            rings = geometry.get("rings")
            if not rings:
                raise InputError(
                    f"inference function {self.path.name} returned a feature without polygon rings",
                    "return polygons: {'geometry': {'rings': [[[x, y], ...]]}}",
                )
            attributes = _lower_keys(feature.get("attributes") or {})
            label = _first(attributes, _VALUE_KEYS + _NAME_KEYS, None)
            if label is None and only is None:
                raise InputError(
                    f"inference function {self.path.name} returned a feature without a class",
                    "give each feature a Class (name) or Classvalue attribute",
                )
            classes.append(only if label is None else self._class_value(label))
            confidence = _first(attributes, ("confidence", "score"), 100.0)
            scores.append(min(max(float(confidence) / 100.0, 0.0), 1.0))
            shapes.append(_polygon(rings))
        boxes = np.array([s.bounds for s in shapes], dtype=np.float64).reshape(-1, 4)
        return TileDetections(
            boxes, np.array(scores, dtype=np.float64), np.array(classes, dtype=np.int64), shapes
        )


def _lower_keys(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in attributes.items()}


def _first(attributes: Mapping[str, Any], keys: tuple[str, ...], default: Any) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None and str(value).strip() != "":
            return value
    return default


def _polygon(rings: list[list[list[float]]]) -> shapely.Geometry:
    """An Esri polygon (rings: outer boundaries and holes) as one shapely geometry.

    Rings are combined by the even-odd rule, which needs no ring orientation (Esri's
    clockwise outer rings become counter-clockwise in y-down pixel coordinates).
    """
    parts = [
        shapely.make_valid(shapely.Polygon(np.asarray(r, dtype=np.float64)[:, :2])) for r in rings
    ]
    shape = parts[0]
    for part in parts[1:]:
        shape = shapely.symmetric_difference(shape, part)
    return shape
