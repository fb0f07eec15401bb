"""Class data of an export: labelled features or a classified raster, and the class table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.export.settings import ExportSettings
from rasterlearn.formats.chips import (
    ClassInfo,
)
from rasterlearn.geo.grid import tile_grid
from rasterlearn.geo.raster import (
    RasterInfo,
    RasterSource,
    open_raster_input,
)
from rasterlearn.geo.vector import FeatureSet, load_features

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


def class_table(features: FeatureSet | None, class_source: RasterSource | None) -> list[ClassInfo]:
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
    grid = info.grid
    for box in tile_grid(grid.box, min(1024, grid.height), min(1024, grid.width), 1024, 1024):
        data = source.read(box)[0]
        if info.nodata is not None:
            data = data[data != info.nodata]
        present.update(int(v) for v in np.unique(data))
    present.discard(0)
    return sorted(present), source.colormap()


def load_class_data(
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
        if (class_source.info.grid.crs is None) != (info.grid.crs is None):
            class_source.close()
            raise InputError(
                f"classified raster {path.name} and the input raster must both have a "
                "coordinate system or both lack one",
                "georeference both the same way",
            )
        return None, class_source
    features = load_features(path, info.grid.crs, s.class_value_field, s.buffer_radius)
    return features, None
