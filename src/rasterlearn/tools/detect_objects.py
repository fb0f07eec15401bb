"""Detect Objects Using Deep Learning: polygons with ``Class`` and ``Confidence`` from a detector.

Tiles overlap by twice the padding; each detection is kept only by the tile that owns its
box centre, boxes cut by a tile edge are dropped (``exclude_pad_detections``), and a final
non-maximum suppression over the whole raster (a spatial grid, not all pairs) removes what
is left of duplicates at tile borders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from rasterlearn.errors import ParameterError
from rasterlearn.geo.grid import Grid
from rasterlearn.geo.raster import bounded_gdal_cache
from rasterlearn.geo.vector import read_vector, vector_driver, write_vector
from rasterlearn.inference.engine import run_tiles
from rasterlearn.inference.jobs import Extent, PreparedRun, RunOptions, prepare_runs
from rasterlearn.inference.nms import nms_boxes, nms_polygons
from rasterlearn.inference.predictors import DETECTION, INSTANCE, TileDetections
from rasterlearn.progress import progress_bar
from rasterlearn.tools.declaration import Parameter, declare
from rasterlearn.tools.parameters import (
    CELL_SIZE,
    CLUSTER,
    DEVICE,
    IN_MODEL_DEFINITION,
    IN_RASTER,
    MASK,
    NUM_WORKERS,
    OVERWRITE,
    PROCESSING_EXTENT,
    PROCESSING_MODE,
    SCHEDULER,
    output,
)


def detect_objects(
    in_raster: str | Path,
    out_detected_objects: str | Path,
    in_model_definition: str | Path | dict,
    arguments: dict[str, Any] | None = None,
    run_nms: bool = False,
    confidence_score_field: str = "Confidence",
    class_value_field: str = "Class",
    max_overlap_ratio: float = 0.0,
    processing_mode: str = "PROCESS_AS_MOSAICKED_IMAGE",
    processing_extent: Extent | None = None,
    mask: str | Path | None = None,
    cell_size: float | None = None,
    device: str | None = None,
    num_workers: int | None = None,
    cluster: str | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Find objects in a raster of any size with an object detection or instance model.

    Returns:
        The output path.

    Raises:
        RasterLearnError: for anything the user can fix, before any output is written.
    """
    vector_driver(out_detected_objects)
    if not 0.0 <= max_overlap_ratio <= 1.0:
        raise ParameterError(
            f"max_overlap_ratio must be between 0 and 1, got {max_overlap_ratio}",
            "give a fraction, e.g. 0 to keep no overlapping detections",
        )
    if not confidence_score_field or not class_value_field:
        raise ParameterError(
            "the confidence and class field names must not be empty",
            "leave them out for Confidence and Class, or give names",
        )
    options = RunOptions.of(
        in_model_definition,
        arguments=arguments,
        processing_mode=processing_mode,
        processing_extent=processing_extent,
        mask=mask,
        cell_size=cell_size,
        device=device,
        num_workers=num_workers,
        cluster=cluster,
        scheduler=scheduler,
        overwrite=overwrite,
        progress=progress,
    )
    runs = prepare_runs(
        in_raster,
        options,
        (DETECTION, INSTANCE),
        ("an object detector", "use classify-pixels or classify-objects with this model"),
    )
    frames = []
    with options.client() as client:
        for run in runs:
            with bounded_gdal_cache(run.gdal_cache_bytes()):
                frame = _detect_one(run, options, client)
            if options.separately:
                frame.insert(0, "Image", Path(run.source.name).name)
            frames.append(frame)
    result = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if run_nms and len(result):
        keep = nms_polygons(
            result.geometry.values,
            result["Confidence"].to_numpy(),
            max_overlap_ratio,
            classes=result["Class"].to_numpy(),
        )
        result = result.iloc[keep].reset_index(drop=True)
    result = result.rename(
        columns={"Class": class_value_field, "Confidence": confidence_score_field}
    )
    return write_vector(result, out_detected_objects, overwrite)


def _detect_one(run: PreparedRun, options: RunOptions, client: Any) -> gpd.GeoDataFrame:
    job, info = run.job, run.predictor.info
    found: list[TileDetections] = []
    with progress_bar(
        f"Detecting in {Path(run.source.name).name}", len(run.tiles), options.progress
    ) as advance:
        for result in run_tiles(job, run.tiles, client, advance, options.lanes):
            assert isinstance(result, TileDetections)
            if len(result):
                found.append(result)
    merged = _merge(found)
    keep = nms_boxes(
        merged.boxes, merged.scores, float(job.arguments["nms_overlap"]), merged.classes
    )
    merged = merged.subset(keep)
    names = info.class_names
    return gpd.GeoDataFrame(
        {
            "Class": [names.get(int(v), str(v)) for v in merged.classes],
            "Confidence": merged.scores * 100.0,
        },
        geometry=_map_geometries(merged, job.grid),
        crs=job.grid.crs,
    )


def _merge(found: list[TileDetections]) -> TileDetections:
    if not found:
        return TileDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), [])
    shapes: list[shapely.Geometry | None] = []
    for d in found:
        shapes.extend(d.shapes if d.shapes is not None else [None] * len(d))
    return TileDetections(
        np.concatenate([d.boxes for d in found]),
        np.concatenate([d.scores for d in found]),
        np.concatenate([d.classes for d in found]),
        shapes,
    )


def _map_geometries(dets: TileDetections, grid: Grid) -> np.ndarray:
    """Polygons in map coordinates: the outline where there is one, else the box."""
    boxes = shapely.box(*dets.boxes.T) if len(dets) else np.array([], dtype=object)
    shapes = dets.shapes or [None] * len(dets)
    geoms = np.array([s if s is not None else b for s, b in zip(shapes, boxes, strict=True)])
    a, b, c, d, e, f = grid.transform[:6]
    return shapely.transform(
        geoms,
        lambda xy: np.column_stack(
            [a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]
        ),
    )


def _result_lines(path: Path) -> list[str]:
    return [f"Detected {len(read_vector(path))} objects: {path}"]


TOOL = declare(
    detect_objects,
    label="Detect Objects Using Deep Learning",
    rest_name="DetectObjectsUsingDeepLearning",
    command="detect-objects",
    summary="Detect Objects Using Deep Learning: polygons with Class and Confidence (0-100).",
    parameters=[
        IN_RASTER,
        output(
            "out_detected_objects",
            "file",
            "Output features (.gpkg, .shp, .geojson, .fgb, .parquet): polygons with the class "
            "name and a confidence of 0-100.",
            "Output Detected Objects",
            "outputObjects",
        ),
        IN_MODEL_DEFINITION,
        Parameter(
            "arguments",
            "key_values",
            "Model arguments NAME=VALUE (padding, threshold, nms_overlap, batch_size, "
            "exclude_pad_detections, test_time_augmentation, tile_size); see 'model info'.",
            label="Arguments",
            rest_name="modelArguments",
            flag="--arg",
        ),
        Parameter(
            "run_nms",
            "boolean",
            "Also remove detections overlapping more than max_overlap_ratio (NMS).",
            label="Non Maximum Suppression",
            rest_name="runNMS",
        ),
        Parameter(
            "confidence_score_field",
            "string",
            "Name of the confidence field (0-100).",
            label="Confidence Score Field",
        ),
        Parameter(
            "class_value_field",
            "string",
            "Name of the class name field.",
            label="Class Value Field",
        ),
        Parameter(
            "max_overlap_ratio",
            "float",
            "IoU above which the less confident of two detections is removed, with run_nms.",
            label="Max Overlap Ratio",
        ),
        PROCESSING_MODE,
        PROCESSING_EXTENT,
        MASK,
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
