"""Which frameworks and configurations run: one clear line for those that do not.

Esri's example model definitions (tests/data/esri_raster_deep_learning, unchanged) that cannot
run here are refused by the inference tools with one line and exit code 2, and nothing is
written; a missing optional runtime names the extra to install. (Those that run, with their
model files, are in test_keras_and_tensorflow.py, which imports TensorFlow.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from rasterlearn.cli import app
from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.backends.frameworks import configuration_of, framework_of

ESRI = Path(__file__).parents[2] / "data" / "esri_raster_deep_learning"
runner = CliRunner()

TOOLS = {
    "ImageClassification": ("classify-pixels", "result.tif"),
    "ObjectDetection": ("detect-objects", "result.gpkg"),
    "ObjectClassification": ("classify-objects", "result.gpkg"),
}


@pytest.fixture(scope="module")
def raster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raster") / "small.tif"
    data = np.random.default_rng(0).integers(0, 255, (4, 40, 40)).astype(np.uint8)
    with rasterio.open(
        path, "w", driver="GTiff", width=40, height=40, count=4, dtype="uint8",
        crs="EPSG:32617", transform=from_origin(500000.0, 4000000.0, 1.0, 1.0),
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def run_tool(emd: Path, raster: Path, folder: Path) -> tuple[int, str]:
    """Run the inference tool of the model's type on the CLI: exit code and output."""
    command, name = TOOLS[json.loads(emd.read_text())["ModelType"]]
    out = folder / name
    result = runner.invoke(app, [command, str(raster), str(out), "--model", str(emd)])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mask_rcnn.emd", "Keras MaskRCNN (Matterport) is TensorFlow 1 code"),
        ("azure_pixel_level_land_classification.emd", "CNTK models do not run here"),
        ("cntk_fasterrcnn_coconut_tree.emd", "CNTK models do not run here"),
        ("pytorch_fastai_ssd.emd", "Esri's FastaiSSD sample is a fastai 0.7 model"),
        ("woolseyFire_600_50.emd", "Esri's PyTorch FeatureClassifier sample"),
        ("trained.emd", "ModelConfiguration 'CntkLandClassification', which rasterlearn cannot"),
        ("xview_onnx.emd", "saved_model.onnx does not exist"),
        ("tensorflow_deeplab_landclassification.emd", "frozen_inference_graph.pb does not exist"),
    ],
)
def test_esri_examples_that_cannot_run_get_one_line(tmp_path, raster, name, message):
    emd = Path(shutil.copy(ESRI / name, tmp_path))
    code, output = run_tool(emd, raster, tmp_path / "out")
    assert code == 2, output
    assert message in output
    assert len(output.strip().splitlines()) == 1
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists()


def test_framework_and_configuration_are_read_from_both_forms():
    keras = ModelDefinition.load(ESRI / "mask_rcnn.emd")
    assert (framework_of(keras), configuration_of(keras)) == ("keras", "MaskRCNN")
    tf = ModelDefinition.load(ESRI / "tensorflow_objectdetectionapi_coconuttree.emd")
    assert (framework_of(tf), configuration_of(tf)) == ("tensorflow", "ObjectDetectionAPI")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"Framework": "Keras", "ModelConfiguration": "YOLO"},
            "Keras models run with ModelConfiguration none, KerasClassifier or ObjectDetectionAPI",
        ),
        (
            {"Framework": "TensorFlow"},
            "TensorFlow models run with ModelConfiguration ObjectDetectionAPI or DeepLab",
        ),
        (
            {"Framework": "ONNX", "ModelConfiguration": "DeepLab"},
            "ModelConfiguration DeepLab is a ImageClassification model but the .emd's "
            "ModelType is ObjectDetection",
        ),
        (
            {"Framework": "ONNX", "ModelType": "InstanceDetection"},
            "ONNX models run here for pixel classification, object detection and object "
            "classification, not InstanceDetection",
        ),
    ],
)
def test_unsupported_configurations_are_one_line(tmp_path, keys, message):
    content = {"ModelType": "ObjectDetection", "ModelFile": "m.bin", "ImageHeight": 32, **keys}
    emd = tmp_path / "m.emd"
    emd.write_text(json.dumps(content))
    with pytest.raises(InputError) as err:
        open_predictor(emd, "cpu")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


MISSING = """
import json, sys
sys.modules["keras"] = None  # as if the extras were not installed
sys.modules["tensorflow"] = None
from rasterlearn.cli import app
for args in json.loads(sys.argv[1]):  # each as the rasterlearn command, in one process
    try:
        app(args, prog_name="rasterlearn")
    except SystemExit as done:
        print(done.code, flush=True)
    print("--", file=sys.stderr, flush=True)
"""


def test_missing_extras_name_the_pip_install(tmp_path, raster):
    """In a process where keras and tensorflow cannot be imported: one line, exit code 2."""
    cases = [
        ({"Framework": "Keras", "ModelFile": "m.keras"}, "pip install rasterlearn[keras]"),
        (
            {"Framework": "TensorFlow", "ModelConfiguration": "DeepLab", "ModelFile": "m.pb"},
            "pip install rasterlearn[tensorflow]",
        ),
    ]
    commands = []
    for i, (keys, _) in enumerate(cases):
        emd = tmp_path / f"m{i}.emd"
        content = {"ModelType": "ImageClassification", "ImageHeight": 32, **keys}
        emd.write_text(json.dumps({**content, "Classes": [{"Value": 1, "Name": "a"}]}))
        out = tmp_path / f"out{i}.tif"
        commands.append(["classify-pixels", str(raster), str(out), "--model", str(emd)])
    src = str(Path(__file__).parents[3] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", MISSING, json.dumps(commands)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.stdout.split() == ["2", "2"], done.stderr
    errors = done.stderr.strip().split("--")[:2]
    for (_, message), error in zip(cases, errors, strict=True):
        lines = error.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr
    assert not list(tmp_path.glob("out*"))
