"""The Esri model definition (``.emd``): a typed view of the JSON file that writes it back as read.

An emd is a JSON object read by ArcGIS Pro's deep learning tools and written by ``arcgis.learn``
(``json.dump(..., indent=4)``, keys in insertion order). :class:`ModelDefinition` types every key
of the reference (section 2) the way real files hold it, keeps unknown keys, and saves a loaded
file back with every key, value and the key order unchanged: a key that was not changed is
written exactly as it was read (``"e.g. 256"`` template placeholders, ``[-1, -1, -1]`` colours,
a float ``LearningRate``, ``ClassValue``/``ClassName`` class rows); a changed key is written
from its typed value in its old place; a new key goes at the end.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path, PureWindowsPath
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.outputs import atomic_output

__all__ = [
    "CellSize",
    "ClassInfo",
    "ModelConfigurationSpec",
    "ModelDefinition",
    "NormalizationStats",
    "is_placeholder",
    "is_rasterlearn_model",
]

PRO_FUNCTIONS_PREFIX = "[Functions]"
"""``InferenceFunction`` values starting with this name a file shipped inside ArcGIS Pro."""

MONITORED_PREFIX = "monitored_"

ARCGIS_LEARN_FRAMEWORK = "arcgis.learn.models._inferencing"
"""``Framework`` of models trained with arcgis.learn (ArcGIS Pro's Train tool, notebooks)."""

RASTERLEARN_FUNCTION_FILE = "RasterlearnFunction.py"
"""``InferenceFunction`` of rasterlearn's models: the raster function running them in Pro."""

RASTERLEARN_FRAMEWORK = "rasterlearn"
"""``Framework`` of models trained by rasterlearn before their packages ran in ArcGIS Pro."""

_MISSING = object()


def is_placeholder(value: Any) -> bool:
    """Whether ``value`` is a Pro 2.5 template placeholder such as ``"e.g. 256"``."""
    return isinstance(value, str) and value.strip().lower().startswith("e.g.")


def _expected(expected: str) -> PydanticCustomError:
    return PydanticCustomError("emd_value", "expected {expected}", {"expected": expected})


def _number_to_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _number_to_scientific(value: Any) -> Any:
    # arcgis.learn writes learning rates and accuracies as '{0:1.4e}'.format(value).
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4e}"
    return value


def _bool_to_int(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _check_flag(value: int) -> int:
    if value not in (0, 1):
        raise _expected("0 or 1 (or true/false)")
    return value


def _object_to_json_text(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict) else value


def _check_json_object_text(value: str) -> str:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise _expected("a JSON object encoded as a string") from None
    if not isinstance(parsed, dict):
        raise _expected("a JSON object encoded as a string")
    return value


def _no_colour(value: Any) -> Any:
    if isinstance(value, list | tuple) and value and all(v == -1 for v in value):
        return None
    return value


def _check_colour(value: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if value is not None and (len(value) not in (3, 4) or not all(0 <= v <= 255 for v in value)):
        raise _expected("[red, green, blue] with values 0-255 (or [-1, -1, -1] for none)")
    return value


def _check_range(value: list[float]) -> list[float]:
    if len(value) != 2:
        raise _expected("[min, max]")
    return value


def _tags_to_text(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ",".join(str(tag).strip() for tag in value if str(tag).strip())
    return value


Text = Annotated[str, BeforeValidator(_number_to_text)]
"""A string; numbers are accepted and kept as their text."""
Scientific = Annotated[str, BeforeValidator(_number_to_scientific)]
"""A number as arcgis.learn writes it, a string like ``"8.3176e-04"``; floats are formatted so."""
Flag = Annotated[int, BeforeValidator(_bool_to_int), AfterValidator(_check_flag)]
"""0 or 1; ``true``/``false`` are accepted."""
JsonObjectText = Annotated[
    str, BeforeValidator(_object_to_json_text), AfterValidator(_check_json_object_text)
]
"""A JSON object encoded as a string (``per_class_metrics``); an object is accepted and encoded."""
Colour = Annotated[
    tuple[int, ...] | None, BeforeValidator(_no_colour), AfterValidator(_check_colour)
]
"""``(r, g, b)``, or None for no colour (``[-1, -1, -1]`` in the file)."""
Tags = Annotated[str, BeforeValidator(_tags_to_text)]
"""Comma-separated tags; a list is accepted and joined with commas."""


@functools.cache
def _key_map(cls: type[BaseModel]) -> dict[str, str]:
    """Every key a model accepts (field names, aliases, alias choices) -> its field name."""
    keys: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        keys[name] = name
        if field.alias:
            keys[field.alias] = name
        choices = field.validation_alias
        if isinstance(choices, str):
            keys[choices] = name
        elif isinstance(choices, AliasChoices):
            keys.update({choice: name for choice in choices.choices if isinstance(choice, str)})
    return keys


def _output_key(cls: type[BaseModel], name: str) -> str:
    field = cls.model_fields[name]
    return field.serialization_alias or field.alias or name


def _to_json(value: Any) -> Any:
    """A typed value as plain JSON data, Esri objects keeping what they read."""
    if isinstance(value, EsriObject):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """A typed value as plain data (typed fields, not what was read): what changes are seen on."""
    if isinstance(value, EsriObject):
        fields = {name: _plain(getattr(value, name)) for name in type(value).model_fields}
        return {**fields, **{k: _plain(v) for k, v in (value.model_extra or {}).items()}}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _fingerprint(value: Any) -> str:
    return json.dumps(_plain(value), default=repr)


class EsriObject(BaseModel):
    """A JSON object of an Esri file that is written back with the keys, values and order read.

    Fields are reachable by their Python name and by their Esri key (``md.image_height`` and
    ``md.ImageHeight``); unknown keys are kept as extra attributes. Assignments are validated.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True, validate_assignment=True)

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _snapshot: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_what_was_read(cls, data: Any, handler: Any) -> Any:
        obj = handler(data)
        if isinstance(data, Mapping):  # construction (an assignment passes the model itself)
            keys = _key_map(cls)
            raw = {}
            for key, value in data.items():
                # A field given by its Python name is recorded under its Esri key.
                out = _output_key(cls, keys[key]) if keys.get(key) == key else key
                raw[out] = value
            obj._raw = copy.deepcopy(raw)
            obj._snapshot = obj._fingerprints()
        return obj

    def _fingerprints(self) -> dict[str, str]:
        return {name: _fingerprint(getattr(self, name)) for name in type(self).model_fields}

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        name = _key_map(type(self)).get(name, name)
        extras = self.__pydantic_extra__
        if name in type(self).model_fields or extras is None:
            super().__setattr__(name, value)
            return
        # An extra key is stored before the model validators check it: undo a refused value.
        old = extras.get(name, _MISSING)
        try:
            super().__setattr__(name, value)
        except ValidationError:
            extras = self.__pydantic_extra__ or {}  # pydantic may have replaced the dict
            if old is _MISSING:
                extras.pop(name, None)
            else:
                extras[name] = old
            raise

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            field = _key_map(type(self)).get(name)
            if field is not None and field != name:
                return getattr(self, field)
        return super().__getattr__(name)  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        """Equal when of the same type with equal typed values and extra keys (not as read)."""
        if type(other) is not type(self):
            return NotImplemented
        return _plain(self) == _plain(other)

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """The object as JSON data: keys read come first in their order, unchanged values as read.

        Returns:
            A new dict (safe to modify).
        """
        cls = type(self)
        keys = _key_map(cls)
        extras = self.model_extra or {}
        current = self._fingerprints()
        out: dict[str, Any] = {}
        written: set[str] = set()
        for key, raw_value in self._raw.items():
            name = keys.get(key)
            if name is not None:
                if name in written:
                    continue
                written.add(name)
                if current[name] == self._snapshot.get(name):
                    out[key] = copy.deepcopy(raw_value)
                else:
                    out[key] = _to_json(getattr(self, name))
            elif key in extras:
                out[key] = _to_json(extras[key])
        for name in cls.model_fields:
            value = getattr(self, name)
            if name not in written and value is not None:
                out[_output_key(cls, name)] = _to_json(value)
        for key, value in extras.items():
            if key not in out:
                out[key] = _to_json(value)
        return out


class ClassInfo(EsriObject):
    """One row of ``Classes``: ``{Value, Name, Color}`` (``ClassValue``/``ClassName`` also read).

    Attributes:
        value: The class value (the pixel value in classified rasters).
        name: The class name.
        color: ``(r, g, b)``; None when absent or ``[-1, -1, -1]`` (no colour).
    """

    value: int = Field(alias="Value", validation_alias=AliasChoices("Value", "ClassValue"))
    name: Text = Field(alias="Name", validation_alias=AliasChoices("Name", "ClassName"))
    color: Colour = Field(None, alias="Color")


class ModelConfigurationSpec(EsriObject):
    """``ModelConfiguration`` in its object form: ``{Name, Architecture?, Config?}``.

    Attributes:
        name: The configuration (module) name.
        architecture: Path or name of the architecture, if given.
        config: Configuration: a path, or an object of settings.
    """

    name: str = Field(alias="Name")
    architecture: str | None = Field(None, alias="Architecture")
    config: str | dict[str, Any] | None = Field(None, alias="Config")


class CellSize(EsriObject):
    """``MinCellSize``/``MaxCellSize``: ``{x, y, spatialReference: {wkid, latestWkid}}``."""

    x: float
    y: float
    spatial_reference: dict[str, Any] | None = Field(None, alias="spatialReference")


FloatList = list[float | None] | None


class NormalizationStats(EsriObject):
    """``NormalizationStats``: per-band statistics of multispectral or non-8-bit training data."""

    band_min_values: FloatList = None
    band_max_values: FloatList = None
    band_mean_values: FloatList = None
    band_std_values: FloatList = None
    scaled_min_values: FloatList = None
    scaled_max_values: FloatList = None
    scaled_mean_values: FloatList = None
    scaled_std_values: FloatList = None


def _esri(alias: str) -> Any:
    return Field(None, alias=alias)


class ModelDefinition(EsriObject):
    """An Esri model definition (``.emd``), typed, written back as read.

    Fields hold the keys of reference section 2 (``None`` when absent or a Pro 2.5 template
    placeholder); any other key is kept as an extra attribute (``md.model_extra``) and, like
    ``monitored_<metric>``, reachable with :meth:`get`. Load with :meth:`load`, write with
    :meth:`save`; a file loaded and saved keeps every key, its value and the key order.

    Example:
        >>> md = ModelDefinition.load('{"ModelType": "ObjectDetection", "ImageHeight": 256}')
        >>> md.image_height, md.ImageHeight
        (256, 256)
    """

    # Keys understood by Pro and the built-in raster functions (reference 2.1), in the order
    # arcgis.learn writes them (2.2): keys set after loading are written in this order.
    framework: str | None = _esri("Framework")
    model_configuration: str | ModelConfigurationSpec | None = _esri("ModelConfiguration")
    model_type: str | None = _esri("ModelType")
    inference_function: str | None = _esri("InferenceFunction")
    extract_bands: list[int | str] | None = _esri("ExtractBands")
    classes: list[ClassInfo] | None = _esri("Classes")
    model_format: str | None = _esri("ModelFormat")
    min_cell_size: CellSize | None = _esri("MinCellSize")
    max_cell_size: CellSize | None = _esri("MaxCellSize")
    supports_variable_tile_size: bool | None = _esri("SupportsVariableTileSize")
    arcgis_learn_version: Text | None = _esri("ArcGISLearnVersion")
    model_file: str | None = _esri("ModelFile")
    image_height: int | None = _esri("ImageHeight")
    image_width: int | None = _esri("ImageWidth")
    image_space_used: str | None = _esri("ImageSpaceUsed")
    learning_rate: Scientific | None = _esri("LearningRate")
    model_name: Text | None = _esri("ModelName")
    backend: str | None = _esri("backend")
    model_parameters: dict[str, Any] | None = _esri("ModelParameters")
    accuracy: Scientific | None = _esri("accuracy")
    average_precision_score: dict[str, float | None] | None = _esri("average_precision_score")
    panoptic_quality: Scientific | None = _esri("panoptic_quality")
    per_class_metrics: JsonObjectText | None = _esri("per_class_metrics")
    resize_to: int | list[int] | None = _esri("resize_to")
    is_multispectral: bool | None = _esri("IsMultispectral")
    is_imagenet_normalization: bool | None = _esri("IsImageNetNormalization")
    imagery_type: str | None = _esri("ImageryType")
    normalization_stats: NormalizationStats | None = _esri("NormalizationStats")
    do_normalize: bool | None = _esri("DoNormalize")
    # Other keys of Pro, the Esri samples and arcgis.learn's model families (2.1, 2.3).
    data_range: Annotated[list[float], AfterValidator(_check_range)] | None = _esri("DataRange")
    model_padding: int | None = _esri("ModelPadding")
    batch_size: int | None = _esri("BatchSize")
    threshold: float | None = _esri("Threshold")
    per_process_gpu_memory_fraction: float | None = _esri("PerProcessGPUMemoryFraction")
    version: Text | None = _esri("Version")
    crop_size_fixed: Flag | None = _esri("CropSizeFixed")
    blacken_around_feature: Flag | None = _esri("BlackenAroundFeature")
    metadata_mode: str | None = _esri("MetaDataMode")
    ignore_mapped_class: list[int] | None = _esri("ignore_mapped_class")
    model_configuration_file: str | None = _esri("ModelConfigurationFile")
    model_file_configuration_class: str | None = _esri("ModelFileConfigurationClass")
    dataset_type: str | None = _esri("DatasetType")
    kwargs: dict[str, Any] | None = _esri("Kwargs")
    is_edge_detection: bool | None = _esri("IsEdgeDetection")
    crop_tile_mode: str | None = _esri("CropTileMode")
    input_rasters_props: dict[str, Any] | None = _esri("InputRastersProps")
    all_tiles_stats: list[dict[str, Any]] | None = _esri("AllTilesStats")
    is_multidimensional: bool | None = _esri("IsMultidimensional")
    description: Text | None = _esri("Description")
    summary: Text | None = _esri("Summary")
    tags: Tags | None = _esri("Tags")

    _path: Path | None = PrivateAttr(None)
    _base_folder: Path | None = PrivateAttr(None)
    _package: Path | None = PrivateAttr(None)

    @field_validator("*", mode="before")
    @classmethod
    def _placeholder_is_missing(cls, value: Any) -> Any:
        return None if is_placeholder(value) else value

    @field_validator("image_space_used")
    @classmethod
    def _check_image_space(cls, value: str | None) -> str | None:
        if value is not None and value not in ("MAP_SPACE", "PIXEL_SPACE"):
            raise _expected("MAP_SPACE or PIXEL_SPACE")
        return value

    @model_validator(mode="after")
    def _check_monitored(self) -> ModelDefinition:
        for key, value in (self.model_extra or {}).items():
            if key.startswith(MONITORED_PREFIX) and not (
                value is None or (isinstance(value, int | float) and not isinstance(value, bool))
            ):
                raise PydanticCustomError(
                    "emd_key", "expected {expected}", {"key": key, "expected": "a number"}
                )
        return self

    # -- reading ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] | Mapping[str, Any],
        base_folder: str | os.PathLike[str] | None = None,
        *,
        package: str | os.PathLike[str] | None = None,
    ) -> ModelDefinition:
        """Read a model definition from an ``.emd`` file, its JSON text or a mapping.

        A model folder or a ``.dlpk`` is opened by
        :func:`rasterlearn.formats.model_source.load_model_definition`, which extracts the
        package and calls this with the extracted ``.emd``.

        Args:
            source: A path to an ``.emd``; the emd's JSON text; or a mapping of emd keys.
            base_folder: The folder relative file names are resolved against; default: the
                folder of the ``.emd`` (none for JSON text or a mapping).
            package: The ``.dlpk`` the ``.emd`` was extracted from, if any: error messages
                name it, and :attr:`package` returns it.

        Returns:
            The model definition; it remembers its file and folder (see :meth:`resolve`).

        Raises:
            InputError: if the source is missing, a folder or a ``.dlpk``, not JSON, or holds
                an invalid value (the message names the key, what it holds and what is
                expected).
        """
        if isinstance(source, Mapping):
            md = cls._validated(dict(source), "the model definition")
            path = None
        elif isinstance(source, str) and source.lstrip().startswith("{"):
            md = cls.from_json(source)
            path = None
        else:
            path = Path(source)
            if not path.exists():
                raise InputError(
                    f"model {path} not found", "give an .emd file or the emd's JSON text"
                )
            if path.is_dir() or path.suffix.lower() == ".dlpk":
                raise InputError(
                    f"model {path} is a {'folder' if path.is_dir() else 'package'}, not an .emd",
                    "open model folders and .dlpk files with "
                    "rasterlearn.formats.model_source.load_model_definition",
                )
            md = cls.from_json(_read_text(path), where=str(package or path))
        md._path = path.absolute() if path is not None else None
        md._package = Path(package).absolute() if package is not None else None
        if base_folder is not None:
            md._base_folder = Path(base_folder).absolute()
        elif md._path is not None:
            md._base_folder = md._path.parent
        return md

    @classmethod
    def from_json(cls, text: str, where: str | None = None) -> ModelDefinition:
        """Parse the emd's JSON text.

        Args:
            text: The JSON text.
            where: What the text is, for error messages (a file name); default "the model
                definition text".

        Raises:
            InputError: if the text is not a JSON object or holds an invalid value.
        """
        where = where or "the model definition text"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{where} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}",
                "fix the JSON or save the model again",
            ) from None
        if not isinstance(data, dict):
            raise InputError(
                f"{where} holds a JSON {type(data).__name__}, expected an object of emd keys",
                "give an Esri model definition (.emd)",
            )
        return cls._validated(data, where)

    @classmethod
    def _validated(cls, data: dict[str, Any], where: str) -> ModelDefinition:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise InputError(_describe_error(err, data), f"fix it in {where}") from None

    # -- the file it came from -------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The ``.emd`` file read (inside the extraction folder for a package), if any."""
        return self._path

    @property
    def package(self) -> Path | None:
        """The ``.dlpk`` read, if the definition came from one."""
        return self._package

    @property
    def base_folder(self) -> Path | None:
        """The folder ``ModelFile`` and ``InferenceFunction`` are relative to, if known."""
        return self._base_folder

    def resolve(self, key: str = "ModelFile") -> Path | None:
        """The file a key names (``ModelFile``, ``InferenceFunction``, ...), relative to the emd.

        Backslashes (``".\\\\model.pth"``, as Windows tools write) are folder separators.

        Args:
            key: The emd key holding a file name.

        Returns:
            The file's path (not checked to exist), or None when the key is absent or names a
            file inside ArcGIS Pro (``[Functions]System\\DeepLearning\\...``).

        Raises:
            ParameterError: if the key does not hold a file name.
            InputError: if the name is relative and the definition has no folder (JSON text).
        """
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ParameterError(
                f"esri emd key {key} holds {_show(value)}, not a file name", "give a file key"
            )
        if value.startswith(PRO_FUNCTIONS_PREFIX):
            return None
        if PureWindowsPath(value).is_absolute() and not Path(value).is_absolute():
            return Path(value)  # a Windows path, seen from another system
        name = Path(value.replace("\\", "/") if os.sep == "/" else value)
        if name.is_absolute():
            return name
        if self._base_folder is None:
            raise InputError(
                f"esri emd key {key} holds the relative file name {value!r} and the model "
                "definition was not read from a folder",
                "load it from its .emd file, or pass base_folder",
            )
        return self._base_folder / name

    # -- keys ------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The typed value of an emd key (Esri or Python name), or of an extra key as read.

        Args:
            key: ``"ImageHeight"``, ``"image_height"``, ``"monitored_valid_loss"``...
            default: Returned when the key is absent (or a placeholder).
        """
        name = _key_map(type(self)).get(key)
        value = getattr(self, name) if name is not None else (self.model_extra or {}).get(key)
        return default if value is None else value

    def set(self, key: str, value: Any) -> None:
        """Set an emd key (Esri or Python name), validating known keys.

        Raises:
            ParameterError: if the value does not fit the key.
        """
        keys = _key_map(type(self))
        try:
            setattr(self, keys.get(key, key), value)
        except ValidationError as err:
            name = keys.get(key, key)
            esri_key = _output_key(type(self), name) if name in type(self).model_fields else key
            # Assignment errors are located by Python name: locate them by the Esri key.
            fixed = [
                {**e, "loc": (esri_key, *e["loc"][1:])} if e["loc"][:1] == (name,) else e
                for e in err.errors()
            ]
            message = _describe_errors(fixed, {esri_key: value}).replace(" holds ", " cannot be ")
            raise ParameterError(message, "give a value of the expected type") from None

    def remove(self, key: str) -> None:
        """Remove a key, so that :meth:`save` does not write it.

        Args:
            key: The Esri or Python name of a key; absent keys are ignored.
        """
        keys = _key_map(type(self))
        name = keys.get(key)
        if name is not None:
            setattr(self, name, None)
            aliases = {k for k, n in keys.items() if n == name}
            self._raw = {k: v for k, v in self._raw.items() if k not in aliases}
        else:
            (self.model_extra or {}).pop(key, None)
            self._raw.pop(key, None)

    @property
    def tile_size(self) -> tuple[int, int] | None:
        """``(ImageHeight, ImageWidth)``, or None when either is missing."""
        if self.image_height is None or self.image_width is None:
            return None
        return self.image_height, self.image_width

    @property
    def monitored(self) -> dict[str, float | None]:
        """The ``monitored_<metric>`` values by metric name (``{"valid_loss": 0.21}``)."""
        return {
            key[len(MONITORED_PREFIX) :]: value
            for key, value in (self.model_extra or {}).items()
            if key.startswith(MONITORED_PREFIX)
        }

    def per_class_metrics_dict(self) -> dict[str, Any]:
        """``per_class_metrics`` (a JSON string in the file) as a dict; empty when absent.

        Returns:
            ``{"NoData": {"precision": ..., "recall": ..., "f1": ...}, "<class>": {...}}``.
        """
        if self.per_class_metrics is None:
            return {}
        return json.loads(self.per_class_metrics)

    def metrics(self) -> dict[str, Any]:
        """The model's recorded metrics, numbers as floats.

        Returns:
            Those present of ``accuracy``, ``average_precision_score`` (by class),
            ``panoptic_quality``, ``per_class_metrics`` (by class) and ``monitored_<metric>``.
        """
        out: dict[str, Any] = {}
        for key in ("accuracy", "panoptic_quality"):
            value = getattr(self, key)
            if value is not None:
                out[key] = _as_float(value)
        if self.average_precision_score:
            out["average_precision_score"] = dict(self.average_precision_score)
        if self.per_class_metrics is not None:
            out["per_class_metrics"] = self.per_class_metrics_dict()
        out.update({MONITORED_PREFIX + k: v for k, v in self.monitored.items()})
        return out

    # -- writing ---------------------------------------------------------------------------

    def to_json(self) -> str:
        """The emd text as arcgis.learn writes it: ``json.dumps(..., indent=4)``."""
        return json.dumps(self.to_dict(), indent=4)

    def save(self, path: str | os.PathLike[str], overwrite: bool = True) -> Path:
        """Write the emd (indent 4, keys as read, new keys last) atomically.

        A definition not read from a file takes ``path`` as its file and folder.

        Args:
            path: The ``.emd`` to write.
            overwrite: Replace an existing file.

        Returns:
            The absolute path written.

        Raises:
            OutputError: if the file exists and ``overwrite`` is false, or cannot be written.
        """
        target = Path(path).absolute()
        with atomic_output(target, overwrite=overwrite) as tmp:
            tmp.write_text(self.to_json(), encoding="utf-8")
        if self._path is None:
            self._path = target
            if self._base_folder is None:
                self._base_folder = target.parent
        return target


def is_rasterlearn_model(definition: ModelDefinition) -> bool:
    """Whether a model was trained by rasterlearn (its ``.pth`` is one of our architectures).

    Our models carry ``RasterlearnVersion``; packages written before they ran in ArcGIS Pro
    say so by ``Framework`` ``rasterlearn`` instead (their Framework is now ``PyTorch``, with
    a Python raster function for ArcGIS Pro that rasterlearn itself does not need).
    """
    framework = str(definition.get("Framework") or "").strip().lower()
    return definition.get("RasterlearnVersion") is not None or framework == RASTERLEARN_FRAMEWORK


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(
            f"{path} is not UTF-8 text", "give an Esri model definition (.emd, JSON)"
        ) from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}", "check the path") from None


def _as_float(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


# -- validation errors as one line -----------------------------------------------------------

_EXPECTED = {
    "Framework": "a string (the Python package of the model's module)",
    "ModelConfiguration": "a module name or an object {Name, Architecture, Config}",
    "ModelConfiguration.Name": "a string",
    "ModelConfiguration.Architecture": "a string",
    "ModelConfiguration.Config": "a string or an object",
    "ExtractBands": "a list of band indices or band names",
    "ExtractBands[]": "a band index (whole number) or a band name",
    "Classes": "a list of {Value, Name, Color}",
    "Classes[]": "an object {Value, Name, Color}",
    "Classes[].Value": "a whole number",
    "Classes[].ClassValue": "a whole number",
    "Classes[].Name": "a string",
    "Classes[].ClassName": "a string",
    "Classes[].Color": "[red, green, blue] with values 0-255 (or [-1, -1, -1] for none)",
    "MinCellSize": "an object {x, y, spatialReference} or null",
    "MaxCellSize": "an object {x, y, spatialReference} or null",
    "LearningRate": 'a string such as "8.3176e-04"',
    "accuracy": 'a string such as "9.5355e-01"',
    "panoptic_quality": 'a string such as "0.1234"',
    "average_precision_score": "an object {class name: number}",
    "average_precision_score.*": "a number",
    "resize_to": "a whole number, [height, width] or null",
    "DataRange": "[min, max]",
    "NormalizationStats": "an object of per-band value lists",
    "NormalizationStats.*": "a list of numbers or null",
    "NormalizationStats.*[]": "a number",
}

_EXPECTED_BY_TYPE = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _walk(data: Any, loc: tuple[Any, ...]) -> tuple[list[str | int], Any]:
    """Follow an error location through the data read: the keys found and the value there.

    Parts that are not keys of the data (pydantic's union member tags) are skipped.
    """
    path: list[str | int] = []
    value = data
    for part in loc:
        is_key = isinstance(part, str) and isinstance(value, Mapping) and part in value
        is_index = isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value)
        if is_key or is_index:
            value = value[part]
            path.append(part)
    return path, value


def _path_text(path: list[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _expected_text(path: list[str | int], error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        return str(ctx["expected"])
    pattern = re.sub(r"\[\d+\]", "[]", _path_text(path))
    wildcard = re.sub(r"^([^.\[]+)\.[^.\[]+", r"\1.*", pattern)
    for candidate in (pattern, wildcard):
        if candidate in _EXPECTED:
            return _EXPECTED[candidate]
    return _EXPECTED_BY_TYPE.get(error["type"], error.get("msg", "another value").lower())


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe_errors(errors: list[Mapping[str, Any]], data: Any) -> str:
    best: tuple[int, list[str | int], Any, Mapping[str, Any]] | None = None
    for error in errors:
        path, value = _walk(data, tuple(error["loc"]))
        key = (error.get("ctx") or {}).get("key")
        if key is not None and not path and isinstance(data, Mapping) and key in data:
            path, value = [key], data[key]
        if error["type"] == "missing" and error["loc"]:
            path = [*path, error["loc"][-1]]
            value = None
        if best is None or len(path) > best[0]:
            best = (len(path), path, value, error)
    assert best is not None
    _, path, value, error = best
    key = _path_text(path) or "(the whole object)"
    expected = _expected_text(path, error)
    if error["type"] == "missing":
        return f"esri emd key {key} is missing, expected {expected}"
    return f"esri emd key {key} holds {_show(value)}, expected {expected}"


def _describe_error(err: ValidationError, data: Any) -> str:
    """One line naming the key, what it holds and what is expected (the first, deepest error)."""
    return _describe_errors(list(err.errors(include_url=False)), data)
