"""Models trained with arcgis.learn, run without arcgis.learn.

Each model is built here as arcgis.learn builds it for training (torchvision's detector with
frozen batch norm on a ResNet-50 pyramid, sized 1.5x / 2x the chip, a box predictor for
background + the classes), saved as fastai saves it (a bare state dict) beside an ``.emd``
with the keys arcgis.learn 2.2 writes, and run through the inference tools (a ``.dlpk`` opens
through the same model source as every backend's). The reference is torchvision's own
prediction of the same network on the same tiles (pixels / 255: the network's transform
applies ImageNet's statistics).
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
import torchvision
from rasterio.transform import from_origin
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops.misc import FrozenBatchNorm2d
from typer.testing import CliRunner

from rasterlearn.cli import app
from rasterlearn.errors import InputError
from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.backends.arcgis_learn import ArcGISLearnPredictor
from rasterlearn.tools.detect_objects import detect_objects

CHIP = 64
CLASSES = [{"Value": 1, "Name": "Car", "Color": [174, 20, 39]}, {"Value": 4, "Name": "Truck"}]
TOP = 4_000_000.0


KWARGS = {"box_detections_per_img": 25}
"""torchvision arguments the ``.emd`` passes on (``Kwargs`` / ``MaskRCNNkwargs``)."""


def arcgis_learn_network(name: str) -> torch.nn.Module:
    """The network arcgis.learn trains (pretrained backbone: frozen batch norm), random weights
    with a sharpened classifier so that scores spread over 0-1."""
    torch.manual_seed(7)
    body = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    cls = MaskRCNN if name == "MaskRCNN" else FasterRCNN
    model = cls(body, 91, min_size=1.5 * CHIP, max_size=2 * CHIP, **KWARGS)
    model.roi_heads.box_predictor = FastRCNNPredictor(1024, len(CLASSES) + 1)
    if name == "MaskRCNN":
        model.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, len(CLASSES) + 1)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(12.0)
    return model.eval()


def arcgis_learn_emd(name: str, model_file: str) -> dict:
    """An ``.emd`` as arcgis.learn 2.2 writes it (reference §2.2-2.4)."""
    if name == "FasterRCNN":
        specific = {
            "Framework": "arcgis.learn.models._inferencing",
            "ModelType": "ObjectDetection",
            "InferenceFunction": "ArcGISObjectDetector.py",
            "ModelConfiguration": "_model_extension_inferencing",
            "ExtractBands": [0, 1, 2],
            "Classes": CLASSES,
            "ModelConfigurationFile": "ModelConfiguration.py",
            "ModelFileConfigurationClass": "MyFasterRCNN",
            "DatasetType": "PASCAL_VOC_rectangles",
            "Kwargs": {"pretrained_backbone": True, **KWARGS},
        }
    else:
        specific = {
            "ModelParameters": {"pointrend": False},
            "Framework": "arcgis.learn.models._inferencing",
            "ModelConfiguration": "_maskrcnn_inferencing",
            "InferenceFunction": "ArcGISInstanceDetector.py",
            "ModelType": "InstanceDetection",
            "MaskRCNNkwargs": KWARGS,
            "ExtractBands": [0, 1, 2],
            "SupportsVariableTileSize": True,
            "Classes": CLASSES,
        }
    return {
        **specific,
        "ModelFormat": "NCHW",
        "MinCellSize": None,
        "MaxCellSize": None,
        "SupportsVariableTileSize": name == "MaskRCNN",
        "ArcGISLearnVersion": "2.2.0.1",
        "monitored_valid_loss": 0.41,
        "ModelFile": model_file,
        "ImageHeight": CHIP,
        "ImageWidth": CHIP,
        "ImageSpaceUsed": "MAP_SPACE",
        "LearningRate": "8.3176e-04",
        "ModelName": name,
        "backend": "pytorch",
        "ModelParameters": {"backbone": "resnet50", "backend": "pytorch"},
        "average_precision_score": {"Car": 0.93, "Truck": 0.5},
        "resize_to": None,
        "IsMultispectral": False,
    }


def arcgis_learn_folder(root: Path, name: str, model: torch.nn.Module) -> Path:
    """A model folder as arcgis.learn saves it (with its Pro raster function); its ``.emd``."""
    folder = root / name.lower()
    folder.mkdir()
    torch.save(model.state_dict(), folder / f"{name.lower()}.pth")  # fastai: a bare state dict
    emd = arcgis_learn_emd(name, f"{name.lower()}.pth")
    (folder / f"{name.lower()}.emd").write_text(json.dumps(emd, indent=4))
    (folder / emd["InferenceFunction"]).write_text("import arcgis.learn  # needs arcgis.learn\n")
    return folder / f"{name.lower()}.emd"


@pytest.fixture(scope="module")
def raster(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """Two model tiles side by side, 8-bit RGB, one metre pixels."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (3, CHIP, 2 * CHIP), dtype=np.uint8)
    path = tmp_path_factory.mktemp("arcgis_learn") / "scene.tif"
    profile = {"driver": "GTiff", "width": 2 * CHIP, "height": CHIP, "count": 3}
    profile.update(dtype="uint8", crs="EPSG:32617", transform=from_origin(500_000, TOP, 1, 1))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(pixels)
    return path, pixels


def torchvision_detections(
    model: torch.nn.Module, pixels: np.ndarray, threshold: float, nms: float | None
) -> np.ndarray:
    """``xmin, ymin, xmax, ymax, class value, confidence`` of torchvision's own predict on each
    tile, in raster pixels, tile duplicates removed by a per-class NMS as the tool does."""
    model.roi_heads.score_thresh = threshold
    if nms is not None:
        model.roi_heads.nms_thresh = nms
    boxes, scores, labels = [], [], []
    for col in range(0, pixels.shape[2], CHIP):
        tile = torch.from_numpy(pixels[:, :, col : col + CHIP]).float() / 255
        with torch.no_grad():
            out = model([tile])[0]
        boxes.append(out["boxes"] + torch.tensor([col, 0, col, 0]))
        scores.append(out["scores"])
        labels.append(out["labels"])
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = torchvision.ops.batched_nms(boxes, scores, labels, nms if nms is not None else 0.5)
    values = np.array([c["Value"] for c in CLASSES])
    rows = np.column_stack(
        [
            boxes[keep].numpy(),
            values[labels[keep].numpy() - 1],
            scores[keep].numpy() * 100,
        ]
    )
    return rows[np.lexsort(rows.T[::-1])]


def tool_detections(path: Path) -> np.ndarray:
    found = gpd.read_file(path)
    names = {c["Name"]: c["Value"] for c in CLASSES}
    bounds = np.array([g.bounds for g in found.geometry]).reshape(-1, 4)
    rows = np.column_stack(
        [
            bounds[:, 0] - 500_000,
            TOP - bounds[:, 3],
            bounds[:, 2] - 500_000,
            TOP - bounds[:, 1],
            [names[c] for c in found["Class"]],
            found["Confidence"],
        ]
    )
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("name", ["FasterRCNN", "MaskRCNN"])
def test_arcgis_learn_detector_equals_torchvision(name, raster, tmp_path):
    path, pixels = raster
    model = arcgis_learn_network(name)
    emd = arcgis_learn_folder(tmp_path, name, model)
    predictor = open_predictor(emd, "cpu")
    assert isinstance(predictor, ArcGISLearnPredictor)
    assert predictor.info.task == ("instance" if name == "MaskRCNN" else "detection")
    arguments = {"padding": 0, "threshold": 0.6, "exclude_pad_detections": False}
    if name == "MaskRCNN":  # compare boxes (masks give outlines); the tool's NMS as the model's
        arguments.update(return_bboxes=True, nms_overlap=0.5)
    out = detect_objects(path, tmp_path / "found.gpkg", emd, arguments=arguments)
    got = tool_detections(out)
    # arcgis.learn: FasterRCNN's box NMS is nms_overlap (0.1); MaskRCNN keeps its own (0.5)
    want = torchvision_detections(model, pixels, 0.6, 0.1 if name == "FasterRCNN" else None)
    assert len(want) >= 3
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_unsupported_arcgis_learn_model_is_one_line(raster, tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    emd = {
        "Framework": "arcgis.learn.models._inferencing",
        "ModelConfiguration": "_unet",
        "ModelType": "ImageClassification",
        "InferenceFunction": "ArcGISImageClassifier.py",
        "ExtractBands": [0, 1, 2],
        "Classes": CLASSES,
        "ModelFile": "unet.pth",
        "ImageHeight": CHIP,
        "ImageWidth": CHIP,
        "ModelName": "UnetClassifier",
        "ModelParameters": {"backbone": "resnet34"},
    }
    (folder / "unet.emd").write_text(json.dumps(emd))
    result = CliRunner().invoke(
        app,
        ["classify-pixels", str(raster[0]), str(tmp_path / "c.tif"), "--model", str(folder)],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "arcgis.learn model UnetClassifier cannot run" in lines[0]
    assert "FasterRCNN and MaskRCNN" in lines[0] and "resnet50" in lines[0]
    assert not (tmp_path / "c.tif").exists()

    emd.update(ModelName="FasterRCNN", ModelType="ObjectDetection")
    emd["ModelParameters"] = {"backbone": "resnet34"}
    with pytest.raises(InputError, match="FasterRCNN with backbone resnet34 cannot run"):
        open_predictor(emd, "cpu")
