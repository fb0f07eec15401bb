"""Cutting chips: read a plan's pixels, find its features and build its labels."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize, shapes

from rasterlearn.export.plan import ChipPlan
from rasterlearn.export.settings import ExportSettings
from rasterlearn.formats.labels import ChipLabels, ObjectLabel
from rasterlearn.geo.raster import RasterSource
from rasterlearn.geo.stats import chip_band_stats
from rasterlearn.geo.vector import FeatureSet

# rasterize() builds in-memory rasters that warn about their (deliberately) missing georeference.
warnings.filterwarnings("ignore", "Dataset has no geotransform", NotGeoreferencedWarning)
warnings.filterwarnings(
    "ignore", "The given matrix is equal to Affine.identity", NotGeoreferencedWarning
)


MIN_OBJECT_PX = 0.01


@dataclass(frozen=True)
class _Hit:
    """A labelled object in a chip: its feature (None for raster labels), value, part, the
    part's bounds in chip pixels, its map area."""

    index: int | None
    value: int
    part: shapely.Geometry
    bounds: tuple[float, float, float, float]
    area: float


@dataclass
class CutChip:
    """A chip read and labelled, ready to be written.

    ``data2`` and ``band_stats2`` are the additional raster's chip (``images2/``) and its
    statistics, when the export has one.
    """

    data: np.ndarray
    transform: Affine
    labels: ChipLabels
    band_stats: list
    data2: np.ndarray | None = None
    band_stats2: list | None = None


class ChipCutter:
    """Reads and labels chips; safe to call from several threads at once.

    With a ``second`` raster (on the source's grid), each chip is also read from it; a pixel
    is then valid where both rasters are.
    """

    def __init__(
        self,
        source: RasterSource,
        settings: ExportSettings,
        features: FeatureSet | None,
        class_source: RasterSource | None,
        second: RasterSource | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.features = features
        self.tree = features.tree if features is not None else None
        self.class_source = class_source
        self.second = second

    def __call__(self, plan: ChipPlan) -> CutChip | None:
        s = self.settings
        data, valid = self.source.read_onto(plan.grid)
        data2 = valid2 = None
        if self.second is not None:
            data2, valid2 = self.second.read_onto(plan.grid)
        both = valid if valid2 is None else valid & valid2
        nodata_fraction = 1.0 - np.count_nonzero(both) / both.size
        if nodata_fraction >= 1.0 or nodata_fraction > s.max_nodata_fraction:
            return None
        labels = self._labels(plan, data)
        if labels is None:
            return None
        return CutChip(
            data,
            plan.grid.transform,
            labels,
            chip_band_stats(data, valid),
            data2,
            None if data2 is None else chip_band_stats(data2, valid2),
        )

    def _objects(self, plan: ChipPlan) -> list[_Hit]:
        """Features overlapping the chip by at least the minimum ratio, clipped to it."""
        grid = plan.grid
        candidates = np.sort(self.tree.query(grid.footprint, predicate="intersects"))
        if candidates.size == 0:
            return []
        pixel = grid.to_pixels(self.features.geometries[candidates])
        parts = shapely.clip_by_rect(pixel, 0, 0, grid.width, grid.height)
        areas = shapely.area(parts)
        bounds = shapely.bounds(parts)
        # A feature sharing an edge with the chip leaves a float-noise sliver inside it: only
        # parts at least as wide and tall as a label can express (0.01 px) are objects.
        keep = (bounds[:, 2] - bounds[:, 0] >= MIN_OBJECT_PX) & (
            bounds[:, 3] - bounds[:, 1] >= MIN_OBJECT_PX
        )
        if self.settings.min_polygon_overlap_ratio > 0:
            keep &= areas >= self.settings.min_polygon_overlap_ratio * shapely.area(pixel)
        kept = candidates[keep]
        map_areas = areas[keep] * abs(grid.transform.determinant)
        # Python scalars from whole arrays at once: per-element numpy indexing costs more
        # than the clipping itself.
        return [
            _Hit(i, value, part, tuple(box), area)
            for i, value, part, box, area in zip(
                kept.tolist(),
                self.features.values[kept].tolist(),
                parts[keep],
                bounds[keep].tolist(),
                map_areas.tolist(),
                strict=True,
            )
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
            hits = _objects_from_class_raster(class_raster, abs(plan.grid.transform.determinant))
        else:
            hits = self._objects(plan)
        if not hits and not keep_empty:
            return None
        if kind == "rectangles":
            return ChipLabels(objects=[ObjectLabel(h.value, *h.bounds, area=h.area) for h in hits])
        if kind == "instances":
            instances, drawn = _instance_rasters(hits, plan)
            if not drawn and not keep_empty:
                return None
            objects = [ObjectLabel(h.value, *h.bounds, area=h.area) for h in drawn]
            return ChipLabels(objects=objects, instances=instances)
        if kind == "multitile":
            return ChipLabels(tile_classes=sorted({h.value for h in hits}))
        raise AssertionError(kind)

    def _feature_chip_labels(self, plan: ChipPlan, data: np.ndarray) -> ChipLabels:
        i, grid = plan.feature, plan.grid
        value = int(self.features.values[i])
        geom = grid.to_pixels(self.features.geometries[i])
        part = shapely.clip_by_rect(geom, 0, 0, grid.width, grid.height)
        if self.settings.blacken_around_feature:
            inside = rasterize_pixels(part, grid.shape)
            data[:, ~inside] = 0
        area = part.area * abs(grid.transform.determinant)
        return ChipLabels(
            objects=[ObjectLabel(value, *part.bounds, area=area)], tile_classes=[value]
        )

    def _rasterize(self, plan: ChipPlan, hits: list[_Hit]) -> np.ndarray:
        """Class values of the features in the chip, drawn in file order (later ones on top)."""
        dtype = "uint8" if self.features.values.max(initial=0) < 256 else "uint16"
        shape = plan.grid.shape
        if not hits:
            return np.zeros(shape, dtype=dtype)
        shapes_values = [(self.features.geometries[h.index], h.value) for h in hits]
        return rasterize(
            shapes_values,
            out_shape=shape,
            transform=plan.grid.transform,
            fill=0,
            dtype=dtype,
        )

    def _class_raster(self, plan: ChipPlan) -> np.ndarray:
        data, valid = self.class_source.read_onto(plan.grid, Resampling.nearest)
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
        hits.append(_Hit(None, int(value), geom, geom.bounds, geom.area * pixel_area))
    return hits


def _instance_rasters(hits: list[_Hit], plan: ChipPlan) -> tuple[dict[int, np.ndarray], list[_Hit]]:
    """Per class, instance-id rasters; overlapping instances spill into extra bands.

    Returns:
        The rasters by class value, and the objects that cover at least one pixel centre
        (only those are instances; a sliver without pixels is no label).
    """
    shape = plan.grid.shape
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
