"""Small inputs for the accuracy tools, written into ``tmp_path`` with geopandas and rasterio."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

UTM = "EPSG:32617"


def _write_boxes(
    path: Path,
    boxes: list | np.ndarray,
    crs: str | None = UTM,
    geometries: list | None = None,
    **fields: list,
) -> Path:
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    geoms = geometries if geometries is not None else list(shapely.box(*boxes.T))
    frame = gpd.GeoDataFrame(fields, geometry=geoms, crs=crs)
    frame.to_file(path, engine="pyogrio")
    return path


@pytest.fixture
def write_boxes() -> Callable[..., Path]:
    """``write_boxes(path, boxes, crs=UTM, geometries=None, **fields)``: polygons to a file."""
    return _write_boxes


def _write_raster(
    path: Path,
    array: np.ndarray,
    transform: Affine,
    crs: str | None = UTM,
    nodata: float | None = None,
    block: int = 32,
) -> Path:
    array = np.asarray(array)
    height, width = array.shape[-2:]
    bands = array.reshape(-1, height, width)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=bands.shape[0],
        dtype=bands.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=block,
        blockysize=block,
    ) as ds:
        ds.write(bands)
    return path


@pytest.fixture
def write_raster() -> Callable[..., Path]:
    """``write_raster(path, array, transform, crs=UTM, nodata=None, block=32)``: a GeoTIFF."""
    return _write_raster
