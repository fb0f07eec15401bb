"""Export Training Data For Deep Learning: imagery + labels -> chips in ArcGIS's folder layout."""

from __future__ import annotations

import math
import socket
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize, shapes

from rasterlearn.distributed import (
    dask_client,
    map_blocks_staged,
    on_every_worker,
    parse_cluster,
    worker_threads,
)
from rasterlearn.errors import InputError, OutputError, ParameterError, RasterLearnError
from rasterlearn.formats.chip_images import ChipImageFormat, chip_image_format
from rasterlearn.formats.chips import (
    ACCUMULATED_STATS_FILE,
    EMD_FILE,
    STATS_FILE,
    ChipGeoref,
    ChipTally,
    ClassInfo,
    ExportWriter,
    accumulated_stats,
    chip_tally,
    training_emd,
    write_json,
)
from rasterlearn.formats.labels import ChipLabels, ObjectLabel
from rasterlearn.formats.metadata_formats import MetadataFormat
from rasterlearn.formats.metadata_formats import metadata_format as _metadata_format
from rasterlearn.geo.grid import Box, tile_grid
from rasterlearn.geo.raster import (
    RasterInfo,
    RasterSource,
    bounded_gdal_cache,
    open_raster_input,
)
from rasterlearn.geo.stats import BandStats, chip_band_stats
from rasterlearn.geo.vector import FeatureSet, load_features, load_mask
from rasterlearn.outputs import atomic_output
from rasterlearn.parallel import BoundedSubmitter, default_workers, ordered_map
from rasterlearn.progress import progress_bar

if TYPE_CHECKING:
    from distributed import Client

# rasterize() builds in-memory rasters that warn about their (deliberately) missing georeference.
warnings.filterwarnings("ignore", "Dataset has no geotransform", NotGeoreferencedWarning)
warnings.filterwarnings(
    "ignore", "The given matrix is equal to Affine.identity", NotGeoreferencedWarning
)

MIN_OBJECT_PX = 0.01
REFERENCE_SYSTEMS = ("MAP_SPACE", "PIXEL_SPACE")
PROCESSING_MODES = ("PROCESS_AS_MOSAICKED_IMAGE", "PROCESS_ITEMS_SEPARATELY")
CROP_MODES = ("FIXED_SIZE", "BOUNDING_BOX")

# A qualitative palette for classes that come without colours (value 1 gets the first).
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (0, 0, 128),
    (128, 128, 0),
)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        out_folder: The export folder.
        metadata_format: Its ``MetaDataMode``.
        num_chips: Number of image chips.
        num_features: Number of labelled objects over all chips (0 for pixel formats).
        classes: The class table.
    """

    out_folder: Path
    metadata_format: str
    num_chips: int
    num_features: int
    classes: list[ClassInfo]


@dataclass(frozen=True)
class ChipPlan:
    """One chip to cut: its pixel grid in the raster's space, and the feature it is cut for."""

    transform: Affine
    width: int
    height: int
    feature: int | None = None

    @property
    def footprint(self) -> shapely.Polygon:
        corners = [
            self.transform @ c
            for c in ((0, 0), (self.width, 0), (self.width, self.height), (0, self.height))
        ]
        return shapely.Polygon(corners)


@dataclass(frozen=True)
class _Hit:
    """A labelled object in a chip: its feature (None for raster labels), value, part, map area."""

    index: int | None
    value: int
    part: shapely.Geometry
    area: float


@dataclass
class CutChip:
    """A chip read and labelled, ready to be written."""

    data: np.ndarray
    transform: Affine
    labels: ChipLabels
    band_stats: list


@dataclass(frozen=True)
class ExportSettings:
    """The validated parameters of one export (everything but the input and output paths)."""

    fmt: MetadataFormat
    chip_format: ChipImageFormat
    tile_height: int
    tile_width: int
    stride_y: int
    stride_x: int
    angles: tuple[float, ...]
    output_nofeature_tiles: bool
    class_value_field: str | None
    buffer_radius: float
    reference_system: str
    processing_mode: str
    blacken_around_feature: bool
    crop_mode: str
    min_polygon_overlap_ratio: float
    extent: tuple[float, float, float, float] | None
    cell_size: float | None
    max_nodata_fraction: float
    overwrite: bool
    num_workers: int | None
    progress: bool | None


def _choice(value: str, allowed: tuple[str, ...], parameter: str) -> str:
    for option in allowed:
        if option.lower() == str(value).lower():
            return option
    raise ParameterError(f"unknown {parameter} '{value}'", f"use one of {', '.join(allowed)}")


def _pixel_geometries(geoms: np.ndarray | shapely.Geometry, inverse: Affine) -> np.ndarray:
    """Geometries in the pixel coordinates of a grid, given the grid's inverse transform."""
    return shapely.transform(geoms, lambda xy: np.column_stack(inverse @ (xy[:, 0], xy[:, 1])))


class ChipCutter:
    """Reads and labels chips; safe to call from several threads at once."""

    def __init__(
        self,
        source: RasterSource,
        settings: ExportSettings,
        features: FeatureSet | None,
        class_source: RasterSource | None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.features = features
        self.tree = features.tree if features is not None else None
        self.class_source = class_source

    def __call__(self, plan: ChipPlan) -> CutChip | None:
        s = self.settings
        data, valid = self.source.read_onto(plan.transform, plan.width, plan.height)
        nodata_fraction = 1.0 - float(valid.mean())
        if nodata_fraction >= 1.0 or nodata_fraction > s.max_nodata_fraction:
            return None
        labels = self._labels(plan, data)
        if labels is None:
            return None
        return CutChip(data, plan.transform, labels, chip_band_stats(data, valid))

    def _objects(self, plan: ChipPlan) -> list[_Hit]:
        """Features overlapping the chip by at least the minimum ratio, clipped to it."""
        candidates = np.sort(self.tree.query(plan.footprint, predicate="intersects"))
        if candidates.size == 0:
            return []
        pixel = _pixel_geometries(self.features.geometries[candidates], ~plan.transform)
        parts = shapely.clip_by_rect(pixel, 0, 0, plan.width, plan.height)
        areas = shapely.area(parts)
        bounds = shapely.bounds(parts)
        # A feature sharing an edge with the chip leaves a float-noise sliver inside it: only
        # parts at least as wide and tall as a label can express (0.01 px) are objects.
        keep = (bounds[:, 2] - bounds[:, 0] >= MIN_OBJECT_PX) & (
            bounds[:, 3] - bounds[:, 1] >= MIN_OBJECT_PX
        )
        if self.settings.min_polygon_overlap_ratio > 0:
            keep &= areas >= self.settings.min_polygon_overlap_ratio * shapely.area(pixel)
        pixel_area = abs(plan.transform.determinant)
        values = self.features.values
        return [
            _Hit(int(i), int(values[i]), part, area * pixel_area)
            for i, part, area in zip(candidates[keep], parts[keep], areas[keep], strict=True)
        ]

    def _labels(self, plan: ChipPlan, data: np.ndarray) -> ChipLabels | None:
        kind = self.settings.fmt.labels
        keep_empty = self.settings.output_nofeature_tiles
        if kind == "none":
            return ChipLabels()
        if plan.feature is not None:
            return self._feature_chip_labels(plan, data)
        class_raster = self._class_raster(plan) if self.class_source is not None else None
        if kind == "pixels":
            if class_raster is None:
                class_raster = self._rasterize(plan, self._objects(plan))
            if not keep_empty and not class_raster.any():
                return None
            return ChipLabels(class_raster=class_raster)
        if class_raster is not None:
            hits = _objects_from_class_raster(class_raster, abs(plan.transform.determinant))
        else:
            hits = self._objects(plan)
        if not hits and not keep_empty:
            return None
        if kind == "rectangles":
            return ChipLabels(
                objects=[ObjectLabel(h.value, *h.part.bounds, area=h.area) for h in hits]
            )
        if kind == "instances":
            instances, drawn = _instance_rasters(hits, plan)
            if not drawn and not keep_empty:
                return None
            objects = [ObjectLabel(h.value, *h.part.bounds, area=h.area) for h in drawn]
            return ChipLabels(objects=objects, instances=instances)
        if kind == "multitile":
            return ChipLabels(tile_classes=sorted({h.value for h in hits}))
        raise AssertionError(kind)

    def _feature_chip_labels(self, plan: ChipPlan, data: np.ndarray) -> ChipLabels:
        i = plan.feature
        value = int(self.features.values[i])
        geom = _pixel_geometries(self.features.geometries[i], ~plan.transform)
        part = shapely.clip_by_rect(geom, 0, 0, plan.width, plan.height)
        if self.settings.blacken_around_feature:
            inside = rasterize_pixels(part, (plan.height, plan.width))
            data[:, ~inside] = 0
        area = part.area * abs(plan.transform.determinant)
        return ChipLabels(
            objects=[ObjectLabel(value, *part.bounds, area=area)], tile_classes=[value]
        )

    def _rasterize(self, plan: ChipPlan, hits: list[_Hit]) -> np.ndarray:
        """Class values of the features in the chip, drawn in file order (later ones on top)."""
        dtype = "uint8" if self.features.values.max(initial=0) < 256 else "uint16"
        if not hits:
            return np.zeros((plan.height, plan.width), dtype=dtype)
        shapes_values = [(self.features.geometries[h.index], h.value) for h in hits]
        return rasterize(
            shapes_values,
            out_shape=(plan.height, plan.width),
            transform=plan.transform,
            fill=0,
            dtype=dtype,
        )

    def _class_raster(self, plan: ChipPlan) -> np.ndarray:
        data, valid = self.class_source.read_onto(
            plan.transform, plan.width, plan.height, Resampling.nearest
        )
        band = data[0]
        band = np.where(valid, band, 0)
        return band.astype(np.uint8 if band.max(initial=0) < 256 else np.uint16)


def rasterize_pixels(geom: shapely.Geometry, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of a geometry given in pixel coordinates."""
    return rasterize([(geom, 1)], out_shape=shape, dtype="uint8") > 0


def _objects_from_class_raster(class_raster: np.ndarray, pixel_area: float) -> list[_Hit]:
    """Connected regions of one class value as objects, in chip pixels."""
    hits = []
    for geojson, value in shapes(class_raster, mask=class_raster > 0, connectivity=8):
        geom = shapely.geometry.shape(geojson)
        hits.append(_Hit(None, int(value), geom, geom.area * pixel_area))
    return hits


def _instance_rasters(hits: list[_Hit], plan: ChipPlan) -> tuple[dict[int, np.ndarray], list[_Hit]]:
    """Per class, instance-id rasters; overlapping instances spill into extra bands.

    Returns:
        The rasters by class value, and the objects that cover at least one pixel centre
        (only those are instances; a sliver without pixels is no label).
    """
    shape = (plan.height, plan.width)
    out: dict[int, np.ndarray] = {}
    drawn: list[_Hit] = []
    for value in sorted({h.value for h in hits}):
        bands: list[np.ndarray] = []
        instance_id = 0
        for hit in (h for h in hits if h.value == value):
            mask = rasterize_pixels(hit.part, shape)
            if not mask.any():
                continue
            instance_id += 1
            drawn.append(hit)
            target = next((b for b in bands if not b[mask].any()), None)
            if target is None:
                target = np.zeros(shape, dtype=np.uint16)
                bands.append(target)
            target[mask] = instance_id
        if bands:
            out[value] = np.stack(bands)
    return out, drawn


def _grid_plans(info: RasterInfo, area: Box, s: ExportSettings) -> Iterator[ChipPlan]:
    for tile in tile_grid(area, s.tile_height, s.tile_width, s.stride_y, s.stride_x):
        base = info.transform @ Affine.translation(tile.col, tile.row)
        yield from _rotations(base, tile.width, tile.height, s.angles, None)


def _rotations(
    base: Affine, width: int, height: int, angles: tuple[float, ...], feature: int | None
) -> Iterator[ChipPlan]:
    for angle in angles:
        transform = base
        if angle:
            cx, cy = width / 2, height / 2
            transform = (
                base
                @ Affine.translation(cx, cy)
                @ Affine.rotation(angle)
                @ Affine.translation(-cx, -cy)
            )
        yield ChipPlan(transform, width, height, feature)


def _floor(value: float) -> int:
    """Floor that forgives the float noise of map-to-pixel transforms (67.0000000037 -> 67)."""
    return math.floor(value + 1e-6)


def _ceil(value: float) -> int:
    return math.ceil(value - 1e-6)


def _feature_plans(
    info: RasterInfo, area: Box, features: FeatureSet, settings: ExportSettings
) -> Iterator[ChipPlan]:
    inverse = ~info.transform
    area_poly = shapely.box(area.col, area.row, area.col_end, area.row_end)
    for i, geom in enumerate(features.geometries):
        pixel = _pixel_geometries(geom, inverse)
        if not pixel.intersects(area_poly):
            continue
        x0, y0, x1, y1 = pixel.bounds
        c0, r0 = _floor(x0), _floor(y0)
        bbox = Box(r0, c0, max(1, _ceil(y1) - r0), max(1, _ceil(x1) - c0))
        box = (
            bbox.centered(settings.tile_height, settings.tile_width)
            if settings.crop_mode == "FIXED_SIZE"
            else bbox
        )
        base = info.transform @ Affine.translation(box.col, box.row)
        yield from _rotations(base, box.width, box.height, settings.angles, i)


def _processing_area(
    info: RasterInfo, extent: tuple[float, float, float, float] | None, name: str
) -> Box:
    if extent is None:
        return info.bounds_box
    xmin, ymin, xmax, ymax = extent
    inverse = ~info.transform
    cols, rows = zip(*(inverse @ (x, y) for x in (xmin, xmax) for y in (ymin, ymax)), strict=True)
    window = Box(math.floor(min(rows)), math.floor(min(cols)), 0, 0)
    box = Box(
        window.row, window.col, math.ceil(max(rows)) - window.row, math.ceil(max(cols)) - window.col
    )
    inside = info.bounds_box.intersection(box) if box.area > 0 else None
    if inside is None:
        raise ParameterError(
            f"processing extent {extent} does not overlap raster {name}",
            "give the extent as xmin ymin xmax ymax in the raster's coordinate system",
        )
    return inside


def _rotation_angles(rotation_angle: float) -> tuple[float, ...]:
    if not rotation_angle or rotation_angle % 360 == 0:
        return (0.0,)
    if rotation_angle < 0 or rotation_angle >= 360:
        raise ParameterError(
            f"rotation angle {rotation_angle} is out of range", "use 0 < angle < 360"
        )
    return tuple(k * rotation_angle for k in range(math.ceil(360 / rotation_angle)))


def _class_table(features: FeatureSet | None, class_source: RasterSource | None) -> list[ClassInfo]:
    if features is not None:
        names = features.names
        return [ClassInfo(v, n, PALETTE[(v - 1) % len(PALETTE)]) for v, n in names.items()]
    if class_source is None:
        return []
    values, colormap = _class_raster_values(class_source)
    return [ClassInfo(v, str(v), colormap.get(v, PALETTE[(v - 1) % len(PALETTE)])) for v in values]


def _class_raster_values(source: RasterSource) -> tuple[list[int], dict[int, tuple[int, int, int]]]:
    """The class values in a classified raster (block by block), and its colour table."""
    info = source.info
    if not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise InputError(
            f"classified raster {source.name} holds {info.dtype} values, not class values",
            "give an integer raster of class values (0 = NoData)",
        )
    present: set[int] = set()
    for box in tile_grid(
        info.bounds_box, min(1024, info.height), min(1024, info.width), 1024, 1024
    ):
        data = source.read(box)[0]
        if info.nodata is not None:
            data = data[data != info.nodata]
        present.update(int(v) for v in np.unique(data))
    present.discard(0)
    return sorted(present), source.colormap()


def _check_overlap(features: FeatureSet, info: RasterInfo, name: str, source: str) -> None:
    footprint = ChipPlan(info.transform, info.width, info.height).footprint
    if not features.tree.query(footprint, predicate="intersects").size:
        raise InputError(
            f"none of the {len(features)} features of {source} overlap raster {name}",
            "check that features and raster cover the same area and are in the right "
            "coordinate systems",
        )


def export_training_data(
    in_raster: str | Path,
    out_folder: str | Path,
    in_class_data: str | Path | None = None,
    image_chip_format: str = "TIFF",
    tile_size_x: int = 256,
    tile_size_y: int = 256,
    stride_x: int = 128,
    stride_y: int = 128,
    output_nofeature_tiles: bool = False,
    metadata_format: str = "PASCAL_VOC_rectangles",
    class_value_field: str | None = None,
    buffer_radius: float = 0.0,
    in_mask_polygons: str | Path | None = None,
    rotation_angle: float = 0.0,
    reference_system: str = "MAP_SPACE",
    processing_mode: str = "PROCESS_AS_MOSAICKED_IMAGE",
    blacken_around_feature: bool = False,
    crop_mode: str = "FIXED_SIZE",
    min_polygon_overlap_ratio: float = 0.0,
    extent: tuple[float, float, float, float] | None = None,
    cell_size: float | None = None,
    max_nodata_fraction: float = 1.0,
    overwrite: bool = False,
    num_workers: int | None = None,
    progress: bool | None = None,
    cluster: str | None = None,
    scheduler: str | None = None,
) -> ExportResult:
    """Export Training Data For Deep Learning: cut image chips and labels in ArcGIS's layout.

    Parameters follow ArcGIS's tool (names in snake_case, same defaults).

    Args:
        in_raster: Raster file, VRT, URL or folder of rasters.
        out_folder: Output folder; must be empty or missing unless ``overwrite``.
        in_class_data: Labelled features (polygons, or points/lines with ``buffer_radius``),
            a classified raster, or a folder of classified rasters.
        image_chip_format: ``TIFF``, ``PNG`` or ``JPEG`` (PNG/JPEG: at most 3 bands of 8-bit data).
        tile_size_x: Chip width in pixels.
        tile_size_y: Chip height in pixels.
        stride_x: Horizontal step between chips in pixels.
        stride_y: Vertical step between chips in pixels.
        output_nofeature_tiles: Also write chips that contain no labels (``ALL_TILES``).
        metadata_format: ``PASCAL_VOC_rectangles``, ``KITTI_rectangles``, ``Classified_Tiles``,
            ``RCNN_Masks``, ``Labeled_Tiles``, ``MultiLabeled_Tiles``, ``Imagenet`` or
            ``Export_Tiles``.
        class_value_field: Integer class field; default ``value``/``classvalue``, else one class.
        buffer_radius: Buffer around features, in the features' map units.
        in_mask_polygons: Only chips lying completely inside these polygons are written.
        rotation_angle: Also write chips rotated by multiples of this angle (degrees).
        reference_system: ``MAP_SPACE`` or ``PIXEL_SPACE`` (recorded as ``ImageSpaceUsed``).
        processing_mode: For folders: ``PROCESS_AS_MOSAICKED_IMAGE`` or
            ``PROCESS_ITEMS_SEPARATELY``.
        blacken_around_feature: Labeled_Tiles: zero the pixels outside the feature.
        crop_mode: Labeled_Tiles/Imagenet: ``FIXED_SIZE`` chips centred on the feature, or
            ``BOUNDING_BOX`` chips cropped to it.
        min_polygon_overlap_ratio: Drop a feature from a chip when less than this fraction of
            it lies inside the chip.
        extent: Processing extent ``(xmin, ymin, xmax, ymax)`` in the raster's coordinates.
        cell_size: Resample the raster to this cell size on read.
        max_nodata_fraction: Skip chips with a larger fraction of nodata pixels; chips that are
            entirely nodata are always skipped.
        overwrite: Replace an existing output folder.
        num_workers: Threads to use (default: every core); without ``cluster``/``scheduler``.
        progress: Show a progress bar (default: on terminals).
        cluster: ``local:N`` runs the export on a local Dask cluster of N worker processes.
        scheduler: ``tcp://HOST:PORT`` runs it on a running Dask cluster, whose workers must
            reach the input raster (same path or URL) and write to the output folder's parent.
            Either way the output is byte for byte that of a run in this process.

    Returns:
        What was written.

    Raises:
        RasterLearnError: for any input or parameter the user must fix; nothing is left behind.
    """
    fmt = _metadata_format(metadata_format)
    for name, value in (
        ("tile_size_x", tile_size_x),
        ("tile_size_y", tile_size_y),
        ("stride_x", stride_x),
        ("stride_y", stride_y),
    ):
        if int(value) <= 0:
            raise ParameterError(
                f"{name} must be a positive number of pixels, got {value}", "use e.g. 256"
            )
    if not 0 <= min_polygon_overlap_ratio <= 1:
        raise ParameterError("min_polygon_overlap_ratio must be between 0 and 1", "use e.g. 0.5")
    if not 0 <= max_nodata_fraction <= 1:
        raise ParameterError("max_nodata_fraction must be between 0 and 1", "use e.g. 0.5")
    if cell_size is not None and cell_size <= 0:
        raise ParameterError(f"cell size must be positive, got {cell_size}", "give it in map units")
    if fmt.needs_class_data and in_class_data is None:
        raise ParameterError(f"metadata format {fmt.keyword} needs class data", "give --class-data")
    parse_cluster(cluster, scheduler)
    settings = ExportSettings(
        fmt=fmt,
        chip_format=chip_image_format(image_chip_format),
        tile_height=int(tile_size_y),
        tile_width=int(tile_size_x),
        stride_y=int(stride_y),
        stride_x=int(stride_x),
        angles=_rotation_angles(rotation_angle),
        output_nofeature_tiles=output_nofeature_tiles,
        class_value_field=class_value_field,
        buffer_radius=float(buffer_radius or 0.0),
        reference_system=_choice(reference_system, REFERENCE_SYSTEMS, "reference system"),
        processing_mode=_choice(processing_mode, PROCESSING_MODES, "processing mode"),
        blacken_around_feature=blacken_around_feature,
        crop_mode=_choice(crop_mode, CROP_MODES, "crop mode"),
        min_polygon_overlap_ratio=float(min_polygon_overlap_ratio),
        extent=tuple(extent) if extent is not None else None,
        cell_size=cell_size,
        max_nodata_fraction=float(max_nodata_fraction),
        overwrite=overwrite,
        num_workers=num_workers,
        progress=progress,
    )
    with bounded_gdal_cache():
        return _export(
            in_raster, out_folder, in_class_data, in_mask_polygons, settings, (cluster, scheduler)
        )


def _export(
    in_raster: str | Path,
    out_folder: str | Path,
    in_class_data: str | Path | None,
    in_mask_polygons: str | Path | None,
    s: ExportSettings,
    where: tuple[str | None, str | None] = (None, None),
) -> ExportResult:
    separately = s.processing_mode == "PROCESS_ITEMS_SEPARATELY"
    sources = open_raster_input(in_raster, separately, s.cell_size)
    class_source = None
    try:
        first = sources[0].info
        for src in sources:
            s.chip_format.check(src.info.count, src.info.dtype)
            if (src.info.count, src.info.dtype) != (first.count, first.dtype):
                raise InputError(
                    f"{src.name} has {src.info.count} {src.info.dtype} bands, "
                    f"unlike {sources[0].name}",
                    "export rasters of one band layout together",
                )
            if src.info.height < s.tile_height or src.info.width < s.tile_width:
                raise ParameterError(
                    f"tile size {s.tile_width} x {s.tile_height} is larger than raster "
                    f"{src.name} ({src.info.width} x {src.info.height} px)",
                    "use a smaller --tile-size-x/--tile-size-y",
                )
        features, class_source = _load_class_data(in_class_data, first, s)
        mask = load_mask(in_mask_polygons, first.crs) if in_mask_polygons is not None else None
        classes = _class_table(features, class_source)
        return _run_export(sources, out_folder, s, features, class_source, classes, mask, where)
    finally:
        for src in sources:
            src.close()
        if class_source is not None:
            class_source.close()


def _load_class_data(
    in_class_data: str | Path | None, info: RasterInfo, s: ExportSettings
) -> tuple[FeatureSet | None, RasterSource | None]:
    fmt = s.fmt
    if in_class_data is None or fmt.labels == "none":
        return None, None
    path = Path(in_class_data)
    if not path.exists():
        raise InputError(f"class data {path} does not exist", "check the path")
    is_raster = path.is_dir() or path.suffix.lower() in {".tif", ".tiff", ".vrt", ".img"}
    if is_raster:
        if fmt.per_feature:
            raise ParameterError(
                f"{fmt.keyword} cuts one chip per feature, so it needs features, "
                "not a classified raster",
                "give polygons as class data",
            )
        class_source = open_raster_input(path)[0]
        if (class_source.info.crs is None) != (info.crs is None):
            class_source.close()
            raise InputError(
                f"classified raster {path.name} and the input raster must both have a "
                "coordinate system or both lack one",
                "georeference both the same way",
            )
        return None, class_source
    features = load_features(path, info.crs, s.class_value_field, s.buffer_radius)
    return features, None


def _plan_chips(
    src: RasterSource, s: ExportSettings, features: FeatureSet | None, mask: shapely.Geometry | None
) -> list[ChipPlan]:
    if features is not None:
        _check_overlap(features, src.info, src.name, "the class data")
    area = _processing_area(src.info, s.extent, src.name)
    if area.height < s.tile_height or area.width < s.tile_width:
        raise ParameterError(
            f"the processing extent ({area.width} x {area.height} px) is smaller than a tile",
            "enlarge the extent or use a smaller tile size",
        )
    if s.fmt.per_feature:
        plans = list(_feature_plans(src.info, area, features, s))
    else:
        plans = list(_grid_plans(src.info, area, s))
    if mask is not None:
        prepared = shapely.prepared.prep(mask)
        plans = [p for p in plans if prepared.contains(p.footprint)]
    return plans


def _run_export(
    sources: list[RasterSource],
    out_folder: str | Path,
    s: ExportSettings,
    features: FeatureSet | None,
    class_source: RasterSource | None,
    classes: list[ClassInfo],
    mask: shapely.Geometry | None,
    where: tuple[str | None, str | None] = (None, None),
) -> ExportResult:
    plans_per_source = []
    skipped: list[RasterLearnError] = []
    for src in sources:
        try:
            plans_per_source.append(_plan_chips(src, s, features, mask))
        except (InputError, ParameterError) as err:
            if len(sources) == 1:
                raise
            skipped.append(err)  # an item outside the features or extent adds no chips
            plans_per_source.append([])
    total = sum(len(p) for p in plans_per_source)
    if total == 0 and skipped:
        raise skipped[0]
    if total == 0:
        raise InputError(
            "no chip fits inside the mask polygons and the extent",
            "check --mask-polygons and --extent",
        )
    first = sources[0].info
    with (
        atomic_output(out_folder, overwrite=s.overwrite, folder=True) as tmp,
        dask_client(*where) as client,
    ):
        writer = ExportWriter(tmp, s.fmt, s.chip_format, classes)
        with progress_bar("Exporting chips", total, s.progress) as advance:
            if client is None:
                _write_chips(writer, sources, plans_per_source, s, features, class_source, advance)
            else:
                job = _ExportJob(
                    token=uuid.uuid4().hex,
                    folder=tmp,
                    settings=s,
                    sources=tuple(_SourceSpec.of(src) for src in sources),
                    features=features,
                    class_source=_SourceSpec.of(class_source) if class_source else None,
                    classes=tuple(classes),
                )
                _write_chips_distributed(client, writer, job, plans_per_source, advance)
        if writer.num_chips == 0:
            raise InputError(
                "no chip was written: no tile holds labelled features with enough valid pixels",
                "check the class data overlaps the raster's valid pixels, "
                "or pass --output-nofeature-tiles",
            )
        _write_metadata(tmp, writer, first, s)
    return ExportResult(
        Path(out_folder), s.fmt.keyword, writer.num_chips, writer.num_features, classes
    )


def _write_chips(
    writer: ExportWriter,
    sources: list[RasterSource],
    plans_per_source: list[list[ChipPlan]],
    s: ExportSettings,
    features: FeatureSet | None,
    class_source: RasterSource | None,
    advance: Callable[[int], None],
) -> None:
    """Cut and write every chip in this process, on a pool of threads."""
    workers = default_workers(s.num_workers)
    with ThreadPoolExecutor(workers) as pool:
        submitter = BoundedSubmitter(pool, 2 * workers)
        index = 0
        for src, plans in zip(sources, plans_per_source, strict=True):
            cutter = ChipCutter(src, s, features, class_source)
            for chip in ordered_map(pool, cutter, plans, 2 * workers):
                advance(1)
                if chip is None:
                    continue
                georef = ChipGeoref(chip.transform, src.info.crs, src.info.nodata)
                submitter.submit(writer.write_chip, index, chip.data, georef, chip.labels)
                writer.count_chip(chip.labels, chip.band_stats)
                index += 1
        submitter.wait()


# --- Distributed export -------------------------------------------------------------------
#
# The client plans the chips; blocks of consecutive plans go to the workers, which open the
# rasters themselves (path or URL), cut the chips and send back only what the statistics need.
# In block order the client numbers each block's chips, and the worker holding them writes them
# under their final names. The client merges the statistics in plan order, so the folder is
# byte for byte that of a run in one process.

MAX_CHIPS_PER_BLOCK = 32
BLOCKS_PER_WORKER_THREAD = 4


@dataclass(frozen=True)
class _SourceSpec:
    """How a worker opens a raster, and the georeference its chips get."""

    spec: str
    name: str
    cell_size: float | None
    resampling: Resampling
    crs: CRS | None
    nodata: float | None

    @classmethod
    def of(cls, src: RasterSource) -> _SourceSpec:
        return cls(src.spec, src.name, src.cell_size, src.resampling, src.info.crs, src.info.nodata)

    def open(self) -> RasterSource:
        return RasterSource(self.spec, self.name, self.cell_size, self.resampling)


@dataclass(frozen=True)
class _ExportJob:
    """Everything a worker needs, sent to each worker once."""

    token: str
    folder: Path
    settings: ExportSettings
    sources: tuple[_SourceSpec, ...]
    features: FeatureSet | None
    class_source: _SourceSpec | None
    classes: tuple[ClassInfo, ...]


@dataclass(frozen=True)
class _ChipBlock:
    """Consecutive chip plans of one source."""

    source: int
    plans: tuple[ChipPlan, ...]


@dataclass(frozen=True)
class _BlockSummary:
    """What the client needs of a cut block: its size, and per kept chip its statistics."""

    planned: int
    chips: tuple[tuple[ChipTally | None, list[BandStats]], ...]


class _WorkerRasters:
    """A job's rasters on one worker, opened when a block first needs them."""

    def __init__(self, job: _ExportJob) -> None:
        self.job = job
        self.class_source = job.class_source.open() if job.class_source is not None else None
        self.cutters: dict[int, ChipCutter] = {}

    def cutter(self, source: int) -> ChipCutter:
        cutter = self.cutters.get(source)
        if cutter is None:
            job = self.job
            raster = job.sources[source].open()
            cutter = ChipCutter(raster, job.settings, job.features, self.class_source)
            self.cutters[source] = cutter
        return cutter

    def close(self) -> None:
        for cutter in self.cutters.values():
            cutter.source.close()
        if self.class_source is not None:
            self.class_source.close()


class _WorkerJobs:
    """Per worker process: the rasters of the last jobs, kept open for their next blocks."""

    KEEP = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, _WorkerRasters] = OrderedDict()

    def cutter(self, job: _ExportJob, source: int) -> ChipCutter:
        with self._lock:
            rasters = self._jobs.get(job.token)
            if rasters is None:
                rasters = self._jobs[job.token] = _WorkerRasters(job)
                while len(self._jobs) > self.KEEP:
                    self._jobs.popitem(last=False)[1].close()
            self._jobs.move_to_end(job.token)
            return rasters.cutter(source)

    def forget(self, token: str) -> None:
        with self._lock:
            rasters = self._jobs.pop(token, None)
        if rasters is not None:
            rasters.close()


_WORKER_JOBS = _WorkerJobs()


def _cut_block(
    block: _ChipBlock, job: _ExportJob
) -> tuple[_BlockSummary, tuple[int, list[CutChip]]]:
    """On a worker: cut a block's chips; the kept chips stay there until numbered."""
    with bounded_gdal_cache():
        cutter = _WORKER_JOBS.cutter(job, block.source)
        chips = [chip for chip in map(cutter, block.plans) if chip is not None]
    kind = job.settings.fmt.labels
    summary = _BlockSummary(
        len(block.plans), tuple((chip_tally(kind, c.labels), c.band_stats) for c in chips)
    )
    return summary, (block.source, chips)


def _write_block(
    payload: tuple[int, list[CutChip]], first_index: int, job: _ExportJob
) -> list[tuple[int, str]]:
    """On a worker: write a block's chips numbered from ``first_index``; their map.txt lines."""
    source, chips = payload
    if not job.folder.is_dir():
        raise OutputError(
            f"the output folder {job.folder.parent} is not reachable from Dask worker "
            f"{socket.gethostname()}",
            "write to a folder every worker shares (a network file system), or use --cluster",
        )
    s = job.settings
    writer = ExportWriter(job.folder, s.fmt, s.chip_format, list(job.classes), create_folders=False)
    spec = job.sources[source]
    lines = []
    for k, chip in enumerate(chips):
        georef = ChipGeoref(chip.transform, spec.crs, spec.nodata)
        index = first_index + k
        lines.append((index, writer.write_chip(index, chip.data, georef, chip.labels)))
    return lines


def _blocks(plans_per_source: list[list[ChipPlan]], size: int) -> list[_ChipBlock]:
    return [
        _ChipBlock(source, tuple(plans[i : i + size]))
        for source, plans in enumerate(plans_per_source)
        for i in range(0, len(plans), size)
    ]


def _forget_job(token: str) -> None:
    """On a worker: close the rasters a finished job opened."""
    _WORKER_JOBS.forget(token)


def _write_chips_distributed(
    client: Client,
    writer: ExportWriter,
    job: _ExportJob,
    plans_per_source: list[list[ChipPlan]],
    advance: Callable[[int], None],
) -> None:
    """Cut and write every chip on the client's workers; statistics merged here in plan order."""
    total = sum(len(p) for p in plans_per_source)
    threads = worker_threads(client)
    size = max(1, min(MAX_CHIPS_PER_BLOCK, -(-total // (BLOCKS_PER_WORKER_THREAD * threads))))
    next_index = 0

    def number(summary: _BlockSummary) -> int:
        nonlocal next_index
        first = next_index
        next_index += len(summary.chips)
        return first

    try:
        for summary, lines in map_blocks_staged(
            client,
            _cut_block,
            _write_block,
            _blocks(plans_per_source, size),
            job,
            decide=number,
            name="export",
        ):
            for tally, band_stats in summary.chips:
                writer.count_chip(tally, band_stats)
            for index, line in lines:
                writer.add_map_line(index, line)
            advance(summary.planned)
    finally:
        on_every_worker(client, _forget_job, job.token)


def _write_metadata(
    folder: Path, writer: ExportWriter, info: RasterInfo, s: ExportSettings
) -> None:
    writer.write_map()
    (folder / STATS_FILE).write_text(writer.stats_text(info.count, s.tile_height, s.tile_width))
    write_json(
        folder / ACCUMULATED_STATS_FILE,
        accumulated_stats(writer, info.count, s.tile_height, s.tile_width),
    )
    emd = training_emd(
        writer,
        s.tile_height,
        s.tile_width,
        s.reference_system,
        info.band_names,
        info.cell_size if info.crs is not None else None,
        info.crs,
        "Fixed_Size" if s.crop_mode == "FIXED_SIZE" else "Variable_Size",
        s.blacken_around_feature,
    )
    write_json(folder / EMD_FILE, emd)
