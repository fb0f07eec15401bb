"""Classify Objects cuts, for every feature, the chip Export Training Data cut for it."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from rasterlearn import export_training_data
from rasterlearn.geo.raster import RasterSource
from rasterlearn.inference.predictors import CLASSIFICATION, ModelInfo
from rasterlearn.tools.classify_objects import _feature_chips, _read_chip

CHIP = 16
SIZE = 160

# Offsets of feature edges from whole pixels: plain fractions, whole pixels, and the float noise
# reprojection leaves (k + 1e-9 and k - 1e-9 are pixel k's edge).
OFFSETS = (0.0, 0.3, 0.5, 1e-9, -1e-9, 0.999999999, 0.7)

CASES = {
    # raster CRS, raster transform, features CRS (None: the raster's)
    "utm": ("EPSG:32617", Affine(0.5, 0, 500_000, 0, -0.5, 3_300_000), None),
    "geographic": ("EPSG:4326", Affine(1e-4, 0, -81.2, 0, -1e-4, 29.7), None),
    "features_in_another_crs": (
        "EPSG:32617",
        Affine(0.5, 0, 400_000, 0, -0.5, 3_280_000),
        "EPSG:4326",
    ),
}


def _raster(path: Path, crs: str, transform: Affine) -> Path:
    data = np.random.default_rng(7).integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _features(path: Path, crs: str, transform: Affine, features_crs: str | None) -> Path:
    """Rectangles of 3 to 5 px whose pixel edges sit at every pair of offsets."""
    boxes = []
    pairs = [(a, b) for a in OFFSETS for b in OFFSETS]
    for k, (first, second) in enumerate(pairs):
        size = 3 + k % 2
        row, col = 12 + 18 * (k // 8), 12 + 18 * (k % 8)
        c0, r0 = col + first, row + second
        c1, r1 = col + size + second, row + size + 1 + first
        corners = [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]
        boxes.append(shapely.Polygon([transform @ c for c in corners]))
    frame = gpd.GeoDataFrame({"ClassValue": [1] * len(boxes)}, geometry=boxes, crs=crs)
    if features_crs is not None:
        frame = frame.to_crs(features_crs)
    frame.to_file(path)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_classify_objects_cuts_the_exported_chip_of_each_feature(case, tmp_path):
    crs, transform, features_crs = CASES[case]
    raster = _raster(tmp_path / "image.tif", crs, transform)
    features = _features(tmp_path / "features.gpkg", crs, transform, features_crs)
    result = export_training_data(
        raster,
        tmp_path / "export",
        features,
        metadata_format="Labeled_Tiles",
        tile_size_x=CHIP,
        tile_size_y=CHIP,
        num_workers=1,
        progress=False,
    )
    exported = sorted((result.out_folder / "images").rglob("*.tif"))
    model = ModelInfo(
        task=CLASSIFICATION,
        tile_height=CHIP,
        tile_width=CHIP,
        extract_bands=[0, 1, 2],
        image_space="MAP_SPACE",
        classes=[(1, "object", (255, 0, 0))],
    )
    with RasterSource(str(raster)) as source:
        _, chips = _feature_chips(source, features, model)
        assert len(exported) == len(chips)
        for i, (path, chip) in enumerate(zip(exported, chips, strict=True)):
            assert chip is not None
            with rasterio.open(path) as ds:
                expected = ds.read()
            data, valid = _read_chip(source, chip, model)
            assert valid.all()
            assert np.array_equal(data, expected), f"feature {i}: chips differ"
