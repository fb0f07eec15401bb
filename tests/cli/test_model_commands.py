"""``rasterlearn model info|package|edit`` on the command line."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rasterlearn.cli import app as rasterlearn_app

EMD = {
    "Framework": "arcgis.learn.models._inferencing",
    "ModelType": "ObjectDetection",
    "InferenceFunction": "ArcGISObjectDetector.py",
    "ModelConfiguration": "_model_extension_inferencing",
    "ExtractBands": [0, 1, 2],
    "Classes": [
        {"Value": 1, "Name": "Car", "Color": [174, 20, 39]},
        {"Value": 2, "Name": "Truck", "Color": [-1, -1, -1]},
    ],
    "ArcGISLearnVersion": "2.2.0.1",
    "monitored_valid_loss": 0.2545,
    "ModelFile": "cars.pth",
    "ImageHeight": 416,
    "ImageWidth": 320,
    "ImageSpaceUsed": "MAP_SPACE",
    "LearningRate": "8.3176e-04",
    "ModelName": "FasterRCNN",
    "average_precision_score": {"Car": 0.93, "Truck": 0.5},
}


@pytest.fixture(autouse=True)
def _private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the .dlpk extraction cache (under the system temporary folder) inside the test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


@pytest.fixture
def app() -> typer.Typer:
    return rasterlearn_app


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "cars"
    folder.mkdir()
    (folder / "cars.emd").write_text(json.dumps(EMD, indent=4))
    (folder / "cars.pth").write_bytes(bytes(12_345))
    (folder / "ArcGISObjectDetector.py").write_text("class ArcGISObjectDetector: pass\n")
    return folder


def run(app: typer.Typer, *args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, out: str, err: str, text: str) -> None:
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert text in err


def test_info_on_emd_folder_and_json_text(app: typer.Typer, folder: Path) -> None:
    for model in (folder / "cars.emd", folder, json.dumps(EMD)):
        code, out, err = run(app, "model", "info", model)
        assert code == 0, err
        lines = out.splitlines()
        assert "type: ObjectDetection" in lines
        assert "name: FasterRCNN" in lines
        assert (
            "framework: arcgis.learn.models._inferencing, configuration "
            "_model_extension_inferencing" in lines
        )
        assert "tile size: 416 x 320 px, MAP_SPACE" in lines
        assert "bands: 0, 1, 2" in lines
        assert "classes: 2" in lines
        assert "  1 Car (174, 20, 39)" in lines and "  2 Truck" in lines
        assert "  average_precision_score Car: 0.93" in lines
        assert "  monitored_valid_loss: 0.2545" in lines
    code, out, _ = run(app, "model", "info", folder)
    assert "  ModelFile cars.pth (12.3 kB)" in out.splitlines()
    assert "  InferenceFunction ArcGISObjectDetector.py (33 B)" in out.splitlines()
    assert f"model: {(folder / 'cars.emd').absolute()}" in out.splitlines()


def test_package_then_info_then_edit(app: typer.Typer, folder: Path) -> None:
    code, out, err = run(app, "model", "package", folder)
    assert code == 0, err
    package = folder / "cars.dlpk"
    assert out.strip().startswith(f"Wrote {package.absolute()}: 3 files")
    with zipfile.ZipFile(package) as zf:
        assert sorted(zf.namelist()) == ["ArcGISObjectDetector.py", "cars.emd", "cars.pth"]

    code, out, err = run(app, "model", "info", package)
    assert code == 0, err
    lines = out.splitlines()
    assert "type: ObjectDetection" in lines
    assert any(line.startswith("package: 3 entries, ") for line in lines)
    assert "  ModelFile cars.pth (in the package)" in lines
    assert "  cars.pth (12.3 kB)" in lines

    code, out, err = run(
        app,
        "model",
        "edit",
        package,
        "--framework",
        "rasterlearn.prf",
        "--model-configuration",
        '{"Name": "MyDetector"}',
        "--description",
        "Cars",
        "--tags",
        "cars,vehicles",
    )
    assert code == 0, err
    assert "Framework: rasterlearn.prf" in out and f"Updated {package.absolute()}" in out
    with zipfile.ZipFile(package) as zf:
        emd = json.loads(zf.read("cars.emd"))
    assert emd["Framework"] == "rasterlearn.prf"
    assert emd["ModelConfiguration"] == {"Name": "MyDetector"}
    assert (emd["Description"], emd["Tags"]) == ("Cars", "cars,vehicles")
    assert list(emd)[: len(EMD)] == list(EMD)

    code, out, err = run(app, "model", "info", package)
    assert "description: Cars" in out.splitlines()
    assert "framework: rasterlearn.prf, configuration MyDetector" in out.splitlines()


def test_errors_are_one_line_with_exit_code_2(app: typer.Typer, folder: Path) -> None:
    assert_one_line_error(
        *run(app, "model", "info", folder / "missing.emd"), "missing.emd not found"
    )
    bad = folder.parent / "bad.emd"
    bad.write_text(json.dumps({**EMD, "ImageHeight": "abc"}))
    assert_one_line_error(
        *run(app, "model", "info", bad),
        "esri emd key ImageHeight holds 'abc', expected a whole number",
    )
    assert_one_line_error(
        *run(app, "model", "package", folder, "--out", folder.parent / "trucks.dlpk"),
        "trucks.dlpk does not match the model definition cars.emd",
    )
    run(app, "model", "package", folder)
    assert_one_line_error(*run(app, "model", "package", folder), "already exists")
    assert_one_line_error(*run(app, "model", "edit", folder / "cars.dlpk"), "nothing to edit")
    broken = folder.parent / "broken.dlpk"
    broken.write_bytes((folder / "cars.dlpk").read_bytes()[:100])
    assert_one_line_error(*run(app, "model", "info", broken), "not a readable .dlpk")
    assert_one_line_error(
        *run(app, "model", "edit", broken, "--summary", "x"), "not a readable .dlpk"
    )


def test_info_lists_the_inference_arguments(app: typer.Typer, tmp_path: Path) -> None:
    builtin = {**EMD, "InferenceFunction": "[Functions]System\\DeepLearning\\ArcGISLearn\\X.py"}
    code, out, err = run(app, "model", "info", json.dumps(builtin))
    assert code == 0, err
    lines = out.splitlines()
    start = lines.index("inference arguments (--arg NAME=VALUE):")
    listed = {line.split()[0]: line.split()[2] for line in lines[start + 1 :]}
    # ArcGIS's defaults: padding = ImageHeight // 4, threshold 0.5, nms_overlap 0.1
    assert listed["padding"] == "104"
    assert listed["threshold"] == "0.5" and listed["nms_overlap"] == "0.1"
    assert listed["exclude_pad_detections"] == "true"
    # an arcgis.learn FasterRCNN runs in rasterlearn itself, with these arguments
    code, out, _ = run(app, "model", "info", json.dumps(EMD))
    assert "inference arguments (--arg NAME=VALUE):" in out.splitlines()
    custom = {**EMD, "Framework": "Custom"}
    code, out, _ = run(app, "model", "info", json.dumps(custom))
    assert "declared by the custom inference function ArcGISObjectDetector.py" in out
