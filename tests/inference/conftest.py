"""Models trained once per test session on a synthetic scene, for the inference tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from rasterlearn import export_training_data
from rasterlearn.synthetic import SyntheticScene, make_scene
from rasterlearn.train import train_deep_learning_model


@dataclass(frozen=True)
class TrainedModels:
    """A synthetic scene and the models trained on it (``.emd`` paths)."""

    scene: SyntheticScene
    unet: Path
    fcos: Path
    classifier: Path


def train_models(root: Path) -> TrainedModels:
    """Export a 384 x 384 px scene in 64 px chips and train a UNET and an FCOS detector."""
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
def models(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    return train_models(tmp_path_factory.mktemp("inference-models"))
