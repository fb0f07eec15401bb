"""Inference runs: the GDAL block cache a run gets is its working set, not its raster."""

from __future__ import annotations

import numpy as np
from rasterio.transform import from_origin

from rasterlearn.geo.raster import GDAL_CACHE_BYTES
from rasterlearn.inference.jobs import (
    IO_BLOCK_ROWS,
    MIN_GDAL_CACHE_BYTES,
    RunOptions,
    prepare_runs,
)
from rasterlearn.inference.predictors import PIXEL


def _run(model, raster):
    options = RunOptions.of(model, arguments={})
    return prepare_runs(raster, options, (PIXEL,), ("a pixel classifier", "-"))[0]


def test_gdal_cache_holds_a_row_of_tiles_of_input_and_output(tmp_path, models, write_raster):
    wide = write_raster(
        tmp_path / "wide.tif",
        np.zeros((3, 96, 12_000), np.uint8),
        from_origin(0, 96, 1, 1),
    )
    run = _run(models.unet, wide)
    tile_rows = max(t.read.height for t in run.tiles)
    row_of_input = run.area.width * (tile_rows + IO_BLOCK_ROWS) * 3
    assert MIN_GDAL_CACHE_BYTES < row_of_input < GDAL_CACHE_BYTES
    assert run.gdal_cache_bytes() == row_of_input
    assert run.gdal_cache_bytes(1) == row_of_input * 4 // 3
    assert run.gdal_cache_bytes(100) == GDAL_CACHE_BYTES


def test_a_small_raster_gets_the_smallest_cache(models):
    run = _run(models.unet, models.scene.raster_path)
    assert run.gdal_cache_bytes(1) == MIN_GDAL_CACHE_BYTES
