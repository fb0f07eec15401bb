"""ONNX models exported by other tools (``Framework`` ``ONNX``) and the conventions they follow.

Each graph is made here from a tiny torch module with another tool's conventions (channels-last
``uint8`` input, ObjectDetectionAPI outputs, softmax probabilities without a background
channel) and run through the tools; the output must equal onnxruntime's own run of the graph
on the same tiles.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import onnxruntime as ort
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin

from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.backends.conventions import as_probabilities, scale_to_data_range
from rasterlearn.inference.backends.onnx import ExternalOnnxPredictor
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.detect_objects import detect_objects

TRANSFORM = from_origin(500000.0, 4000000.0, 1.0, 1.0)
TILE = 32
CLASSES = [{"Value": 3, "Name": "roof"}, {"Value": 7, "Name": "pool"}]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(11)
    rows, cols = np.mgrid[0 : 2 * TILE, 0 : 2 * TILE]
    data = np.stack([rows * 4, cols * 4, 255 - rows * 2]).astype(np.float64)
    data = np.clip(data + rng.normal(0, 25, data.shape), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("onnx") / "scene.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=2 * TILE, height=2 * TILE, count=3, dtype="uint8",
        crs="EPSG:32617", transform=TRANSFORM,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path, data


def tiles_of(data: np.ndarray):
    for r in range(0, data.shape[1], TILE):
        for c in range(0, data.shape[2], TILE):
            yield r, c, data[:, r : r + TILE, c : c + TILE]


class OdapiDetector(torch.nn.Module):
    """ObjectDetectionAPI's outputs from a uint8 NHWC image: two boxes, then a padding row."""

    def forward(self, image_tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image_tensor.float() / 255.0
        mean = x.mean(dim=(1, 2))
        n = x.shape[0]
        one = torch.ones(n)
        boxes = torch.stack(
            [
                torch.stack([0.15 * one, 0.2 * one, 0.45 * one, 0.5 * one], 1),
                torch.stack([0.5 * one, 0.55 * one, 0.8 * one, 0.85 * one], 1),
                torch.stack([0.0 * one, 0.0 * one, 1.0 * one, 1.0 * one], 1),
            ],
            1,
        )
        scores = torch.stack([mean[:, 0], mean[:, 2], 0.99 * one], 1)
        classes = torch.stack([one, 2 * one, 2 * one], 1)
        return boxes, scores, classes, 2 * one


class ProbabilityNet(torch.nn.Module):
    """A channels-last pixel classifier returning softmax probabilities of the 2 classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).softmax(1).permute(0, 2, 3, 1)


def export(module: torch.nn.Module, path: Path, example: torch.Tensor, names: list[str]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's TorchScript exporter
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["image_tensor"],
            output_names=names,
            dynamic_axes={"image_tensor": {0: "n", 1: "h", 2: "w"}},
            dynamo=False,
            opset_version=17,
        )
    return path


def write_emd(folder: Path, **keys: object) -> Path:
    emd = folder / "model.emd"
    content = {"Framework": "ONNX", "ImageHeight": TILE, "ImageWidth": TILE, **keys}
    emd.write_text(json.dumps({**content, "ExtractBands": [0, 1, 2], "Classes": CLASSES}))
    return emd


def test_object_detection_api_graph_equals_onnxruntime(tmp_path, scene):
    raster, data = scene
    names = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]
    example = torch.zeros(1, TILE, TILE, 3, dtype=torch.uint8)
    graph = export(OdapiDetector(), tmp_path / "saved_model.onnx", example, names)
    emd = write_emd(
        tmp_path,
        ModelConfiguration="ObjectDetectionAPI",
        ModelType="ObjectDetection",
        ModelFile="saved_model.onnx",
    )
    predictor = open_predictor(emd, "cpu")
    assert isinstance(predictor, ExternalOnnxPredictor)
    assert predictor.channels_last and predictor.input_dtype == np.uint8
    out = gpd.read_file(detect_objects(raster, tmp_path / "found.gpkg", emd, {"padding": 0}))
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    expected = []
    for r, c, tile in tiles_of(data):
        boxes, scores, classes, num = session.run(
            None, {"image_tensor": tile.transpose(1, 2, 0)[None]}
        )
        for i in range(int(num[0])):
            if scores[0, i] >= 0.5:
                y0, x0, y1, x1 = boxes[0, i].astype(np.float64) * TILE
                box = shapely.box(
                    500000 + c + x0, 4000000 - r - y1, 500000 + c + x1, 4000000 - r - y0
                )
                expected.append((box, CLASSES[int(classes[0, i]) - 1]["Name"], scores[0, i]))
    assert 2 <= len(expected) < 8
    assert len(out) == len(expected)
    for box, name, score in expected:
        hit = out[[shapely.symmetric_difference(g, box).area < 1e-6 for g in out.geometry]]
        assert len(hit) == 1
        assert hit["Class"].iloc[0] == name
        # onnxruntime's reductions may sum in another order on another number of threads
        assert hit["Confidence"].iloc[0] == pytest.approx(100 * score, abs=1e-3)


def test_channels_last_probabilities_with_data_range_equal_onnxruntime(tmp_path, scene):
    raster, data = scene
    example = torch.zeros(1, TILE, TILE, 3)
    graph = export(ProbabilityNet(), tmp_path / "net.onnx", example, ["probabilities"])
    emd = write_emd(
        tmp_path, ModelType="ImageClassification", ModelFile="net.onnx", DataRange=[0.0, 1.0]
    )
    out = classify_pixels(raster, tmp_path / "classes.tif", emd, {"padding": 0})
    with rasterio.open(out[0]) as ds:
        classes = ds.read(1)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for r, c, tile in tiles_of(data):
        x = tile.transpose(1, 2, 0)[None].astype(np.float32) / 255
        (probs,) = session.run(None, {"image_tensor": x})
        expected = np.array([3, 7])[probs[0].argmax(-1)]  # no background channel
        np.testing.assert_array_equal(classes[r : r + TILE, c : c + TILE], expected)
    assert set(np.unique(classes)) == {3, 7}


def test_probabilities_are_kept_and_logits_softmaxed():
    probs = np.array([[0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(as_probabilities(probs, multi_label=False), probs)
    logits = np.array([[2.0, -1.0]], dtype=np.float32)
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(as_probabilities(logits, multi_label=False), expected, rtol=1e-6)
    np.testing.assert_allclose(
        as_probabilities(logits, multi_label=True), 1 / (1 + np.exp(-logits)), rtol=1e-6
    )


def test_data_range_scales_from_the_pixel_type():
    x = np.array([0, 128, 255], dtype=np.uint8)
    np.testing.assert_allclose(scale_to_data_range(x, [-1.0, 1.0]), [-1.0, 1 / 255, 1.0], atol=1e-6)
    x16 = np.array([0, 65535], dtype=np.uint16)
    np.testing.assert_allclose(scale_to_data_range(x16, [0.0, 1.0]), [0.0, 1.0])
    floats = np.array([0.25, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(scale_to_data_range(floats, [0.0, 1.0]), floats)
