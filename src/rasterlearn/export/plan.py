"""Planning chips: a chip is a small grid (a transform and a size), so planning a 20 GB raster is
cheap."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import shapely
from affine import Affine

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.export.settings import ExportSettings
from rasterlearn.geo.grid import Box, Grid, object_chip, tile_grid, tile_starts
from rasterlearn.geo.raster import RasterInfo, RasterSource
from rasterlearn.geo.vector import FeatureSet


@dataclass(frozen=True)
class ChipPlan:
    """One chip to cut: its pixel grid in the raster's space, and the feature it is cut for."""

    grid: Grid
    feature: int | None = None


def _grid_plans(info: RasterInfo, area: Box, s: ExportSettings) -> Iterator[ChipPlan]:
    for tile in tile_grid(area, s.tile_height, s.tile_width, s.stride_y, s.stride_x):
        yield from _rotations(info.grid.window(tile), s.angles, None)


def _rotations(chip: Grid, angles: tuple[float, ...], feature: int | None) -> Iterator[ChipPlan]:
    for angle in angles:
        grid = chip
        if angle:
            cx, cy = chip.width / 2, chip.height / 2
            transform = (
                chip.transform
                @ Affine.translation(cx, cy)
                @ Affine.rotation(angle)
                @ Affine.translation(-cx, -cy)
            )
            grid = replace(chip, transform=transform)
        yield ChipPlan(grid, feature)


def _feature_plans(
    info: RasterInfo, area: Box, features: FeatureSet, settings: ExportSettings
) -> Iterator[ChipPlan]:
    area_poly = shapely.box(area.col, area.row, area.col_end, area.row_end)
    shape = (settings.tile_height, settings.tile_width)
    fixed = settings.crop_mode == "FIXED_SIZE"
    for i, geom in enumerate(features.geometries):
        pixel = info.grid.to_pixels(geom)
        if not pixel.intersects(area_poly):
            continue
        box = object_chip(pixel.bounds, shape if fixed else None)
        yield from _rotations(info.grid.window(box), settings.angles, i)


def _processing_area(
    info: RasterInfo, extent: tuple[float, float, float, float] | None, name: str
) -> Box:
    if extent is None:
        return info.grid.box
    inside = info.grid.area_of(extent)
    if inside is None:
        raise ParameterError(
            f"processing extent {extent} does not overlap raster {name}",
            "give the extent as xmin ymin xmax ymax in the raster's coordinate system",
        )
    return inside


def _check_overlap(features: FeatureSet, info: RasterInfo, name: str, source: str) -> None:
    if not features.tree.query(info.grid.footprint, predicate="intersects").size:
        raise InputError(
            f"none of the {len(features)} features of {source} overlap raster {name}",
            "check that features and raster cover the same area and are in the right "
            "coordinate systems",
        )


def grid_chip_count(src: RasterSource, s: ExportSettings) -> int:
    """The chips a tiled (not per-feature) export plans on a raster, before any mask; 0 for
    per-feature formats or an extent the raster does not hold (known only later)."""
    if s.fmt.per_feature:
        return 0
    try:
        area = _processing_area(src.info, s.extent, src.name)
        rows = tile_starts(area.height, s.tile_height, s.stride_y)
        cols = tile_starts(area.width, s.tile_width, s.stride_x)
    except (ParameterError, ValueError):
        return 0
    return len(rows) * len(cols) * len(s.angles)


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
        plans = [p for p in plans if prepared.contains(p.grid.footprint)]
    return plans
