"""Planning chips: a chip is an affine transform and a size, so planning a 20 GB raster is cheap."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.export.settings import ExportSettings
from rasterlearn.geo.grid import Box, tile_grid
from rasterlearn.geo.raster import (
    RasterInfo,
    RasterSource,
)
from rasterlearn.geo.vector import FeatureSet


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


def pixel_geometries(geoms: np.ndarray | shapely.Geometry, inverse: Affine) -> np.ndarray:
    """Geometries in the pixel coordinates of a grid, given the grid's inverse transform."""
    return shapely.transform(geoms, lambda xy: np.column_stack(inverse @ (xy[:, 0], xy[:, 1])))


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
        pixel = pixel_geometries(geom, inverse)
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


def _check_overlap(features: FeatureSet, info: RasterInfo, name: str, source: str) -> None:
    footprint = ChipPlan(info.transform, info.width, info.height).footprint
    if not features.tree.query(footprint, predicate="intersects").size:
        raise InputError(
            f"none of the {len(features)} features of {source} overlap raster {name}",
            "check that features and raster cover the same area and are in the right "
            "coordinate systems",
        )


def plan_chips(
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
