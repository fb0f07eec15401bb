"""One model across areas and dates: a raster of another cell size is processed at the model's
cell size and the outputs land on the raster's own grid (classified rasters) or in map
coordinates (detections)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from torchvision.ops import box_iou
from typer.testing import CliRunner

from rasterlearn.cli import app
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.detect_objects import detect_objects

COARSE = 0.75  # the models were trained at 0.5 m


def resampled_copy(src_path: Path, dst_path: Path, cell: float, resampling: Resampling) -> Path:
    """The raster on a grid of ``cell`` metres over the same extent (an independent warp)."""
    with rasterio.open(src_path) as src:
        left, top = src.transform.c, src.transform.f
        width = round(src.width * src.res[0] / cell)
        height = round(src.height * src.res[1] / cell)
        transform = Affine(cell, 0, left, 0, -cell, top)
        out = np.zeros((src.count, height, width), dtype=src.dtypes[0])
        reproject(
            src.read(),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs=src.crs,
            resampling=resampling,
        )
        profile = {**src.profile, "width": width, "height": height, "transform": transform}
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(out)
    return dst_path


@pytest.fixture(scope="module")
def coarse(models, tmp_path_factory) -> tuple[Path, Path]:
    """The models' scene at 0.75 m, and its class raster on that grid."""
    root = tmp_path_factory.mktemp("coarse")
    scene = models.scene
    image = resampled_copy(scene.raster_path, root / "coarse.tif", COARSE, Resampling.average)
    truth = resampled_copy(scene.class_raster_path, root / "truth.tif", COARSE, Resampling.mode)
    return image, truth


def boxes_of(frame: gpd.GeoDataFrame):
    import torch

    return torch.tensor(frame.geometry.bounds.to_numpy(), dtype=torch.float64)


def test_detections_at_the_model_cell_size_land_on_the_objects(models, coarse, tmp_path):
    image, _ = coarse
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1.5x the model's cell size: no warning
        found = gpd.read_file(detect_objects(image, tmp_path / "d.gpkg", models.fcos))
    truth = gpd.read_file(models.scene.polygons_path)
    with rasterio.open(image) as src:
        left, bottom, right, top = src.bounds
    bounds = found.total_bounds
    assert left <= bounds[0] and bounds[2] <= right and bottom <= bounds[1] and bounds[3] <= top
    # boxes in map coordinates over the objects: a grid mix-up (0.5 m pixels placed as
    # 0.75 m ones) would move most of them off their object
    iou = box_iou(boxes_of(truth), boxes_of(found)).numpy()
    recall = ((iou > 0.3).sum(axis=1) >= 1).mean()
    precision = ((iou > 0.3).sum(axis=0) >= 1).mean()
    assert recall > 0.5 and precision > 0.7, (recall, precision)


def test_classified_raster_is_written_on_the_input_grid(models, coarse, tmp_path):
    image, truth = coarse
    out = classify_pixels(image, tmp_path / "c.tif", models.unet)[0]
    with rasterio.open(out) as ds, rasterio.open(image) as src, rasterio.open(truth) as t:
        assert (ds.transform, ds.shape, ds.crs) == (src.transform, src.shape, src.crs)
        agreement = (ds.read(1) == t.read(1)).mean()
    # classified at 0.5 m and resampled back: as good as on the 0.5 m scene itself (0.98)
    assert agreement > 0.95, agreement
    assert not list(tmp_path.glob(".*")), "no staging or processing-grid file is left"


def test_far_cell_sizes_warn_and_data_types_that_cannot_match_fail(models, tmp_path):
    scene = models.scene
    runner = CliRunner()
    # the model's 0.5 m asked at 2 m: a warning line, and the output on the input grid
    out = tmp_path / "far.tif"
    extent = ["400000", "3299880", "400060", "3299940"]
    args = ["classify-pixels", str(scene.raster_path), str(out), "--model", str(models.unet)]
    result = runner.invoke(app, [*args, "--cell-size", "2", "--processing-extent", *extent])
    assert result.exit_code == 0, result.output
    assert "warning: processing" in result.output and "far from the 0.5" in result.output
    with rasterio.open(out) as ds:
        assert ds.res == (0.5, 0.5) and ds.shape == (120, 120)
    # 16-bit imagery for a model trained on 8-bit imagery: one line, exit 2, no output
    wide = tmp_path / "uint16.tif"
    with rasterio.open(scene.raster_path) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(wide, "w", **{**profile, "dtype": "uint16"}) as dst:
        dst.write(data.astype("uint16") * 40)
    bad = tmp_path / "bad" / "c.tif"
    result = runner.invoke(
        app, ["classify-pixels", str(wide), str(bad), "--model", str(models.unet)]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "trained on 8-bit imagery" in lines[0], result.output
    assert not bad.parent.exists()
    assert json.loads(models.unet.read_text())["MinCellSize"]["x"] == 0.5
