"""The validated parameters of one export."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rasterlearn.errors import ParameterError
from rasterlearn.formats.chip_images import ChipImageFormat
from rasterlearn.formats.metadata_formats import MetadataFormat

REFERENCE_SYSTEMS = ("MAP_SPACE", "PIXEL_SPACE")


CROP_MODES = ("FIXED_SIZE", "BOUNDING_BOX")


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


def choice(value: str, allowed: tuple[str, ...], parameter: str) -> str:
    for option in allowed:
        if option.lower() == str(value).lower():
            return option
    raise ParameterError(f"unknown {parameter} '{value}'", f"use one of {', '.join(allowed)}")


def rotation_angles(rotation_angle: float) -> tuple[float, ...]:
    if not rotation_angle or rotation_angle % 360 == 0:
        return (0.0,)
    if rotation_angle < 0 or rotation_angle >= 360:
        raise ParameterError(
            f"rotation angle {rotation_angle} is out of range", "use 0 < angle < 360"
        )
    return tuple(k * rotation_angle for k in range(math.ceil(360 / rotation_angle)))
