"""Classify Objects Using Deep Learning: a class label and confidence for every feature."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.execution.blocks import block_size, blocks_of
from rasterlearn.geo.grid import Box, object_chip
from rasterlearn.geo.raster import RasterSource, bounded_gdal_cache
from rasterlearn.geo.vector import read_vector, vector_driver, write_vector
from rasterlearn.inference import tta
from rasterlearn.inference.engine import (
    cached_predictor,
    cached_raster,
    one_thread_per_pass,
    prefetched,
    run_predictions,
)
from rasterlearn.inference.jobs import RunOptions, model_version, open_inputs, open_model
from rasterlearn.inference.model_input import (
    CellSizeRange,
    check_raster,
    processing_cell_size,
)
from rasterlearn.inference.predictors import (
    CLASSIFICATION,
    ModelInfo,
    Predictor,
    resolve_model_arguments,
)
from rasterlearn.progress import progress_bar
from rasterlearn.tools.declaration import INPUT, Parameter, declare
from rasterlearn.tools.parameters import (
    CELL_SIZE,
    CLUSTER,
    DEVICE,
    IN_MODEL_DEFINITION,
    IN_RASTER,
    NUM_WORKERS,
    OVERWRITE,
    PROCESSING_MODE,
    SCHEDULER,
    output,
)


def classify_objects(
    in_raster: str | Path,
    out_feature_class: str | Path,
    in_model_definition: str | Path | dict,
    in_features: str | Path | None = None,
    class_label_field: str = "ClassLabel",
    processing_mode: str = "PROCESS_AS_MOSAICKED_IMAGE",
    model_arguments: dict | None = None,
    cell_size: float | None = None,
    device: str | None = None,
    num_workers: int | None = None,
    cluster: str | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Label every feature (or, without features, every image) with an object classifier.

    Chips are cut as the model was trained (its ``.emd``): ``CropSizeFixed`` 1 cuts a chip of
    the model's size centred on the feature, 0 the feature's bounding box resampled to the
    model's size; ``BlackenAroundFeature`` 1 sets the pixels outside the feature to 0.
    Chips are cut at the model's cell size (or ``cell_size``) from rasters of another.
    The output is the same, to the last bit of every confidence, whatever ``num_workers``
    and on a cluster.

    Returns:
        The output path.

    Raises:
        RasterLearnError: for anything the user can fix, before any output is written.
    """
    vector_driver(out_feature_class)
    if not class_label_field:
        raise ParameterError("class_label_field must not be empty", "give a field name")
    options = RunOptions.of(
        in_model_definition,
        arguments=model_arguments,
        processing_mode=processing_mode,
        cell_size=cell_size,
        device=device,
        num_workers=num_workers,
        cluster=cluster,
        scheduler=scheduler,
        overwrite=overwrite,
        progress=progress,
    )
    predictor = open_model(
        options,
        (CLASSIFICATION,),
        ("an object classifier", "use detect-objects or classify-pixels with this model"),
    )
    info = predictor.info
    args = resolve_model_arguments(info, options.arguments)
    sources = [
        _at_model_cell_size(s, predictor, options)
        for s in open_inputs(in_raster, options, predictor)
    ]
    if in_features is None:
        frame = _footprints(sources)
        chips = [ObjectChip(k, k, s.info.grid.box) for k, s in enumerate(sources)]
    else:
        frame, chips = _feature_chips(sources[0], in_features, info)
    rasters = tuple((s.spec, s.name, s.cell_size) for s in sources)
    job = ObjectJob(rasters, options.model, model_version(options.model), options.device, args)
    with (
        options.client() as client,
        bounded_gdal_cache(),
        progress_bar("Classifying objects", len(frame), options.progress) as advance,
    ):
        advance(len(frame) - len(chips))  # features outside the raster get no label
        probabilities = list(_classify(predictor, job, chips, client, options.lanes, advance))
    labels, confidences = _labels(info, args, len(frame), chips, probabilities)
    frame = frame.copy()
    frame[class_label_field] = labels
    frame["Confidence"] = confidences
    return write_vector(frame, out_feature_class, options.overwrite)


@dataclass(frozen=True)
class ObjectChip:
    """One object to classify.

    Attributes:
        row: The object's row in the output.
        source: Which of the job's rasters it is cut from.
        box: The window cut, resampled to the model's chip size.
        feature: The feature to blacken around, or None to keep every pixel.
    """

    row: int
    source: int
    box: Box
    feature: shapely.Geometry | None = None


@dataclass(frozen=True)
class ObjectJob:
    """What a lane or a cluster worker needs to classify blocks of chips (small, picklable).

    Attributes:
        rasters: ``(spec, name, cell_size)`` of each raster, as :class:`RasterSource` opens it.
        model: The model definition: an ``.emd``/``.dlpk`` path or the emd's JSON text.
        model_version: Changes when the model's files change.
        device: Torch device, or None for the default.
        arguments: Resolved model arguments.
    """

    rasters: tuple[tuple[str, str, float | None], ...]
    model: str
    model_version: str
    device: str | None
    arguments: dict[str, Any] = field(hash=False)

    def predictor(self) -> Predictor:
        return cached_predictor(self.model, self.device, self.model_version)

    def raster(self, source: int) -> RasterSource:
        return cached_raster(*self.rasters[source])


def _at_model_cell_size(
    source: RasterSource, predictor: Predictor, options: RunOptions
) -> RasterSource:
    """The raster checked against the model, read at the model's cell size (or the one given)."""
    check_raster(source, predictor)
    trained = CellSizeRange.of(predictor.definition)
    cell = processing_cell_size(source.info.grid, trained, options.cell_size, source.name)
    return source if cell is None else RasterSource(source.spec, source.name, cell)


def _classify(
    predictor: Predictor,
    job: ObjectJob,
    chips: list[ObjectChip],
    client: Any,
    lanes: int,
    advance: Callable[[int], None],
) -> Iterator[np.ndarray]:
    """Every chip's class probabilities, in chip order, on lanes here or on a cluster.

    Blocks are whole batches of consecutive chips, so every way forms the same batches.
    """
    batch_size = int(job.arguments["batch_size"])
    blocks = blocks_of(chips, block_size(len(chips), batch_size))

    def serial() -> Iterator[np.ndarray]:
        batches = (b for block in blocks for b in _chip_batches(job, block, predictor.info))
        for batch, data, valid in prefetched(batches):
            yield from _predict(predictor, data, valid, job.arguments)
            advance(len(batch))

    yield from run_predictions(
        predictor,
        _classify_block,
        blocks,
        job,
        serial=serial,
        client=client,
        lanes=lanes,
        on_progress=advance,
    )


def _classify_block(block: list[ObjectChip], job: ObjectJob) -> list[np.ndarray]:
    """On a lane or worker: the class probabilities of a block's chips."""
    predictor = job.predictor()
    one_thread_per_pass(predictor)
    return [
        p
        for _, data, valid in _chip_batches(job, block, predictor.info)
        for p in _predict(predictor, data, valid, job.arguments)
    ]


def _chip_batches(
    job: ObjectJob, chips: list[ObjectChip], info: ModelInfo
) -> Iterator[tuple[list[ObjectChip], np.ndarray, np.ndarray]]:
    batch_size = int(job.arguments["batch_size"])
    for i in range(0, len(chips), batch_size):
        batch = chips[i : i + batch_size]
        read = [_read_chip(job.raster(chip.source), chip, info) for chip in batch]
        yield batch, np.stack([d for d, _ in read]), np.stack([v for _, v in read])


def _predict(
    predictor: Predictor, data: np.ndarray, valid: np.ndarray, args: dict[str, Any]
) -> np.ndarray:
    if args.get("test_time_augmentation"):
        return tta.classify(predictor, data, valid, predictor.info.image_space)
    return predictor.classify(data, valid)


def _labels(
    info: ModelInfo,
    args: dict[str, Any],
    rows: int,
    chips: list[ObjectChip],
    probabilities: list[np.ndarray],
) -> tuple[list[str | None], list]:
    """The label and confidence of every row (None, or NaN, for rows without a chip)."""
    names = [name for _, name, _ in info.classes]
    labels: list[str | None] = [None] * rows
    confidences: list = [None] * rows
    threshold = float(args.get("threshold", 0.5))
    for chip, p in zip(chips, probabilities, strict=True):
        if info.multi_label:
            chosen = np.flatnonzero(p >= threshold)
            labels[chip.row] = ";".join(names[k] for k in chosen)
            confidences[chip.row] = ";".join(f"{p[k]:.4f}" for k in chosen)
        else:
            k = int(p.argmax())
            labels[chip.row], confidences[chip.row] = names[k], float(p[k])
    if not info.multi_label:
        confidences = [np.nan if c is None else c for c in confidences]
    return labels, confidences


def _footprints(sources: list[RasterSource]) -> gpd.GeoDataFrame:
    geoms = [s.info.grid.footprint for s in sources]
    crs = sources[0].info.grid.crs
    return gpd.GeoDataFrame(
        {"Image": [Path(s.name).name for s in sources]}, geometry=geoms, crs=crs
    )


def _feature_chips(
    source: RasterSource, features: str | Path, info: ModelInfo
) -> tuple[gpd.GeoDataFrame, list[ObjectChip]]:
    """The features, and a chip for each one that is valid and overlaps the raster."""
    frame = read_vector(features)
    if frame.empty:
        raise InputError(f"features {Path(features).name} are empty", "give features to classify")
    grid = source.info.grid
    if grid.crs is not None and frame.crs is not None and frame.crs != grid.crs:
        frame = frame.to_crs(grid.crs)
    geoms = shapely.make_valid(frame.geometry.values)
    shape = (info.tile_height, info.tile_width) if info.crop_size_fixed else None
    chips: list[ObjectChip] = []
    for row, geom in enumerate(geoms):
        if geom is None or geom.is_empty:
            continue
        # the chip Export Training Data cuts for the feature, so the model sees what it learnt
        box = object_chip(grid.to_pixels(geom).bounds, shape)
        if grid.box.intersection(box) is None:
            continue  # outside the raster: no label
        chips.append(ObjectChip(row, 0, box, geom if info.blacken_around_feature else None))
    return frame, chips


def _read_chip(
    source: RasterSource, chip: ObjectChip, info: ModelInfo
) -> tuple[np.ndarray, np.ndarray]:
    box, feature = chip.box, chip.feature
    grid = source.info.grid.window(box).resampled(info.tile_height, info.tile_width)
    data, valid = source.read_onto(grid)
    if feature is not None:
        inside = rasterio.features.geometry_mask([feature], grid.shape, grid.transform, invert=True)
        data = np.where(inside, data, np.zeros((), data.dtype))
    data = np.where(valid, data, np.zeros((), data.dtype))
    return data, valid


def _result_lines(path: Path) -> list[str]:
    return [f"Classified objects: {path}"]


TOOL = declare(
    classify_objects,
    label="Classify Objects Using Deep Learning",
    rest_name="ClassifyObjectsUsingDeepLearning",
    command="classify-objects",
    summary="Classify Objects Using Deep Learning: a label and confidence (0-1) per feature.",
    parameters=[
        IN_RASTER,
        output(
            "out_feature_class",
            "file",
            "Output features: the input features and fields, plus the label field (class name) "
            "and Confidence (0-1). Multi-label models write ;-joined labels and confidences.",
            "Output Classified Objects Feature Class",
            "outputFeatureClass",
        ),
        IN_MODEL_DEFINITION,
        Parameter(
            "in_features",
            "features",
            "Features to classify; without them each raster is one object (its footprint).",
            INPUT,
            label="Input Features",
            rest_name="inputFeatures",
        ),
        Parameter(
            "class_label_field",
            "string",
            "Name of the label field written.",
            label="Class Label Field",
        ),
        PROCESSING_MODE,
        Parameter(
            "model_arguments",
            "key_values",
            "Model arguments NAME=VALUE (batch_size, threshold for multi-label models, "
            "test_time_augmentation).",
            label="Model Arguments",
            rest_name="modelArguments",
            flag="--arg",
        ),
        CELL_SIZE,
        DEVICE,
        NUM_WORKERS,
        CLUSTER,
        SCHEDULER,
        OVERWRITE,
    ],
    report=_result_lines,
    python_only=("progress",),
)
