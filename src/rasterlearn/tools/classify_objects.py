"""Classify Objects Using Deep Learning: a class label and confidence for every feature."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from affine import Affine

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.geo.grid import Box
from rasterlearn.geo.raster import RasterSource, bounded_gdal_cache
from rasterlearn.geo.vector import read_vector, vector_driver, write_vector
from rasterlearn.inference import tta
from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.engine import prefetched
from rasterlearn.inference.jobs import model_text, open_inputs
from rasterlearn.inference.predictors import (
    CLASSIFICATION,
    ModelInfo,
    Predictor,
    resolve_model_arguments,
)
from rasterlearn.progress import progress_bar


def classify_objects(
    in_raster: str | Path,
    out_feature_class: str | Path,
    in_model_definition: str | Path | dict,
    in_features: str | Path | None = None,
    class_label_field: str = "ClassLabel",
    processing_mode: str = "PROCESS_AS_MOSAICKED_IMAGE",
    model_arguments: dict | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Label every feature (or, without features, every image) with an object classifier.

    Chips are cut as the model was trained (its ``.emd``): ``CropSizeFixed`` 1 cuts a chip of
    the model's size centred on the feature, 0 the feature's bounding box resampled to the
    model's size; ``BlackenAroundFeature`` 1 sets the pixels outside the feature to 0.

    Args:
        in_raster: Raster, VRT, URL or folder of rasters.
        out_feature_class: Output features: the input features and fields, plus
            ``class_label_field`` (class name) and ``Confidence`` (0-1). Multi-label models
            write ``;``-joined labels and confidences.
        in_model_definition: ``.emd`` path, ``.dlpk`` or the emd's JSON text.
        in_features: Features to classify; without them each raster is one object (its
            footprint).
        class_label_field: Name of the label field.
        processing_mode: ``PROCESS_AS_MOSAICKED_IMAGE`` or ``PROCESS_ITEMS_SEPARATELY``.
        model_arguments: ``batch_size``, ``threshold`` (multi-label), ``test_time_augmentation``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        overwrite: Replace an existing output.
        progress: Show a progress bar (default: on terminals).

    Returns:
        The output path.

    Raises:
        RasterLearnError: for anything the user can fix, before any output is written.
    """
    vector_driver(out_feature_class)
    if not class_label_field:
        raise ParameterError("class_label_field must not be empty", "give a field name")
    predictor = open_predictor(model_text(in_model_definition), device)
    info = predictor.info
    if info.task != CLASSIFICATION:
        raise ParameterError(
            f"the model is a {info.task} model, not an object classifier",
            "use detect-objects or classify-pixels with this model",
        )
    args = resolve_model_arguments(info, model_arguments)
    sources = open_inputs(in_raster, processing_mode)
    for source in sources:
        info.check_bands(source.info.count, source.name)
    if in_features is None:
        frame = _footprints(sources)
        chips = [(s, Box(0, 0, s.info.height, s.info.width), None) for s in sources]
    else:
        frame, chips = _feature_chips(sources[0], in_features, info)
    labels, confidences = _predict(predictor, chips, args, progress)
    frame = frame.copy()
    frame[class_label_field] = labels
    frame["Confidence"] = confidences
    return write_vector(frame, out_feature_class, overwrite)


Chip = tuple[RasterSource, Box, shapely.Geometry | None]
"""The raster, the window to cut (resampled to the model's size) and the feature to blacken
around (None: keep every pixel)."""


def _footprints(sources: list[RasterSource]) -> gpd.GeoDataFrame:
    geoms = []
    for s in sources:
        t, w, h = s.info.transform, s.info.width, s.info.height
        geoms.append(shapely.Polygon([t @ c for c in ((0, 0), (w, 0), (w, h), (0, h))]))
    crs = sources[0].info.crs
    return gpd.GeoDataFrame(
        {"Image": [Path(s.name).name for s in sources]}, geometry=geoms, crs=crs
    )


def _feature_chips(
    source: RasterSource, features: str | Path, info: ModelInfo
) -> tuple[gpd.GeoDataFrame, list[Chip | None]]:
    frame = read_vector(features)
    if frame.empty:
        raise InputError(f"features {Path(features).name} are empty", "give features to classify")
    raster = source.info
    if raster.crs is not None and frame.crs is not None and frame.crs != raster.crs:
        frame = frame.to_crs(raster.crs)
    geoms = shapely.make_valid(frame.geometry.values)
    inverse = (~raster.transform).to_shapely()
    chips: list[Chip | None] = []
    for geom in geoms:
        if geom is None or geom.is_empty:
            chips.append(None)
            continue
        x0, y0, x1, y1 = shapely.affinity.affine_transform(geom, inverse).bounds
        r0, c0 = math.floor(y0), math.floor(x0)
        bbox = Box(r0, c0, max(1, math.ceil(y1) - r0), max(1, math.ceil(x1) - c0))
        box = bbox.centered(info.tile_height, info.tile_width) if info.crop_size_fixed else bbox
        if raster.bounds_box.intersection(box) is None:
            chips.append(None)  # outside the raster: no label
            continue
        chips.append((source, box, geom if info.blacken_around_feature else None))
    return frame, chips


def _read_chip(chip: Chip, info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    source, box, feature = chip
    h, w = info.tile_height, info.tile_width
    transform = (
        source.info.transform
        @ Affine.translation(box.col, box.row)
        @ Affine.scale(box.width / w, box.height / h)
    )
    data, valid = source.read_onto(transform, w, h)
    if feature is not None:
        inside = rasterio.features.geometry_mask([feature], (h, w), transform, invert=True)
        data = np.where(inside, data, np.zeros((), data.dtype))
    data = np.where(valid, data, np.zeros((), data.dtype))
    return data, valid


def _batches(
    chips: list[Chip | None], info: ModelInfo, batch_size: int
) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    index, data, valid = [], [], []
    for i, chip in enumerate(chips):
        if chip is None:
            continue
        d, v = _read_chip(chip, info)
        index.append(i)
        data.append(d)
        valid.append(v)
        if len(index) == batch_size:
            yield index, np.stack(data), np.stack(valid)
            index, data, valid = [], [], []
    if index:
        yield index, np.stack(data), np.stack(valid)


def _predict(
    predictor: Predictor, chips: list[Chip | None], args: dict, progress: bool | None
) -> tuple[list[str | None], list]:
    info = predictor.info
    names = [name for _, name, _ in info.classes]
    labels: list[str | None] = [None] * len(chips)
    confidences: list = [None] * len(chips)
    threshold = float(args.get("threshold", 0.5))
    with bounded_gdal_cache(), progress_bar("Classifying objects", len(chips), progress) as advance:
        for index, data, valid in prefetched(_batches(chips, info, int(args["batch_size"]))):
            if args.get("test_time_augmentation"):
                probs = tta.classify(predictor, data, valid, info.image_space)
            else:
                probs = predictor.classify(data, valid)
            for i, p in zip(index, probs, strict=True):
                if info.multi_label:
                    chosen = np.flatnonzero(p >= threshold)
                    labels[i] = ";".join(names[k] for k in chosen)
                    confidences[i] = ";".join(f"{p[k]:.4f}" for k in chosen)
                else:
                    k = int(p.argmax())
                    labels[i], confidences[i] = names[k], float(p[k])
            advance(len(index))
    if not info.multi_label:
        confidences = [np.nan if c is None else c for c in confidences]
    return labels, confidences
