"""Shared fixtures: generated scenes and the bundled NEON sample (real components, small data)."""

from __future__ import annotations

import os

# as the CLI does (rasterlearn.cli.main): idle OpenMP threads must not spin on 2 shared cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pickle
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from filelock import FileLock

from rasterlearn import export_training_data
from rasterlearn.demo.sample import sample_paths
from rasterlearn.synthetic import SyntheticScene, make_scene


@pytest.fixture(scope="session", autouse=True)
def _dlpk_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Packages opened without a destination extract under the test run's own folder."""
    os.environ["RASTERLEARN_DLPK_CACHE"] = str(tmp_path_factory.mktemp("dlpk-cache"))


@pytest.fixture(scope="session")
def neon() -> tuple[Path, Path]:
    """The NEON OSBS_029 tile (400 x 400 px RGB uint8, EPSG:32617, no nodata) and its trees."""
    return sample_paths()


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    """A 512 x 512 px 3-band uint8 scene with buildings, trees and water in EPSG:32617."""
    return make_scene(tmp_path_factory.mktemp("scene"), width=512, height=512, seed=1)


@pytest.fixture(scope="session")
def scene_multiband(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    """A 384 x 320 px 5-band uint16 scene with a nodata border."""
    return make_scene(
        tmp_path_factory.mktemp("scene5"),
        width=384,
        height=320,
        bands=5,
        dtype="uint16",
        seed=2,
        nodata=0,
        nodata_border=20,
    )


@dataclass(frozen=True)
class TrainedModels:
    """A synthetic scene and the models trained on it (``.emd`` paths)."""

    scene: SyntheticScene
    unet: Path
    fcos: Path
    classifier: Path


def train_models(root: Path) -> TrainedModels:
    """Export a 384 x 384 px scene in 64 px chips and train a UNET and an FCOS detector."""
    from rasterlearn import train_deep_learning_model

    scene = make_scene(root / "scene", width=384, height=384, seed=11, cell=48)
    exports = {}
    for fmt in ("Classified_Tiles", "PASCAL_VOC_rectangles", "Labeled_Tiles"):
        exports[fmt] = root / fmt
        export_training_data(
            scene.raster_path,
            exports[fmt],
            scene.polygons_path,
            metadata_format=fmt,
            tile_size_x=64,
            tile_size_y=64,
            stride_x=32,
            stride_y=32,
        )
    common = {"batch_size": 16, "backbone_model": "resnet18", "seed": 3, "stop_training": False}
    unet = train_deep_learning_model(
        exports["Classified_Tiles"],
        root / "unet",
        max_epochs=3,
        model_type="UNET",
        learning_rate=2e-3,
        **common,
    )
    fcos = train_deep_learning_model(
        exports["PASCAL_VOC_rectangles"],
        root / "fcos",
        max_epochs=8,
        model_type="FCOS",
        learning_rate=2e-3,
        **common,
    )
    classifier = train_deep_learning_model(
        exports["Labeled_Tiles"],
        root / "classifier",
        max_epochs=4,
        model_type="FEATURE_CLASSIFIER",
        learning_rate=2e-3,
        **{**common, "batch_size": 8},
    )
    return TrainedModels(scene, unet.emd, fcos.emd, classifier.emd)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TrainedModels:
    """The trained models, made once per test run: under pytest-xdist the first worker that
    needs them trains them and the others wait for them and reuse them (read only)."""
    if worker_id == "master":
        return train_models(tmp_path_factory.mktemp("inference-models"))
    root = tmp_path_factory.getbasetemp().parent / "inference-models"
    with FileLock(f"{root}.lock"):
        made = root / "models.pickle"
        if not made.exists():
            models = train_models(root)
            made.write_bytes(pickle.dumps(tuple(getattr(models, f.name) for f in fields(models))))
        return TrainedModels(*pickle.loads(made.read_bytes()))


# Small inputs for the accuracy tools, written into tmp_path with geopandas and rasterio.

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
