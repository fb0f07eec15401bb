"""``rasterlearn compute-accuracy`` and ``compute-pixel-accuracy`` through the Typer app."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from affine import Affine
from typer.testing import CliRunner

from rasterlearn.cli import app
from rasterlearn.tools.compute_accuracy_for_object_detection import (
    compute_accuracy_for_object_detection,
)
from rasterlearn.tools.compute_pixel_accuracy import compute_pixel_accuracy

GRID = Affine(1.0, 0, 404_000.0, 0, -1.0, 3_285_000.0)


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, out: str, err: str, text: str) -> None:
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert text in err


@pytest.fixture
def detections(tmp_path: Path, neon: tuple[Path, Path], write_boxes: Callable[..., Path]) -> Path:
    """Jittered copies of 40 of the 61 NEON crowns, with Class "Tree" and Confidence."""
    rng = np.random.default_rng(0)
    boxes = gpd.read_file(neon[1]).geometry.bounds.to_numpy()[:40]
    boxes = boxes + rng.normal(0, 0.3, boxes.shape)
    return write_boxes(
        tmp_path / "det.gpkg", boxes, Class=["Tree"] * 40, Confidence=rng.uniform(0, 100, 40)
    )


def test_compute_accuracy(tmp_path: Path, neon: tuple[Path, Path], detections: Path) -> None:
    out = tmp_path / "acc.csv"
    report = tmp_path / "acc.pdf"
    code, stdout, err = run(
        "compute-accuracy", detections, neon[1], out, "--out-accuracy-report", report
    )
    assert code == 0, err
    table = pd.read_csv(out)
    expected = compute_accuracy_for_object_detection(
        detections, neon[1], tmp_path / "api.csv"
    ).table
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    lines = stdout.splitlines()
    tree = next(line for line in lines if line.startswith("Tree"))
    # TP and FN of the summary line are those of the table
    assert tree.split()[-3:] == [str(v) for v in table.iloc[0, -3:]]
    assert any(re.match(r"COCO mAP \(IoU 0\.50:0\.05:0\.95\): 0\.\d{3}$", line) for line in lines)
    assert report.read_bytes().startswith(b"%PDF")


def test_compute_accuracy_bad_inputs(
    tmp_path: Path, neon: tuple[Path, Path], detections: Path, write_boxes
) -> None:
    out = tmp_path / "acc.csv"
    numbers = write_boxes(tmp_path / "numbers.gpkg", [[0, 0, 1, 1]], Value=[7])
    assert_one_line_error(
        *run("compute-accuracy", tmp_path / "nope.gpkg", neon[1], out), "does not exist"
    )
    assert_one_line_error(*run("compute-accuracy", detections, numbers, out), "{Tree}")
    assert_one_line_error(
        *run("compute-accuracy", detections, neon[1], out, "--detected-class-value-field", "X"),
        "'X' is not in",
    )
    assert_one_line_error(
        *run("compute-accuracy", detections, neon[1], out, "--min-iou", "1.5"), "min_iou"
    )
    assert not out.exists()
    out.write_text("old")
    assert_one_line_error(*run("compute-accuracy", detections, neon[1], out), "--overwrite")
    assert out.read_text() == "old"
    code, _, err = run("compute-accuracy", detections, neon[1], out, "--overwrite")
    assert code == 0, err
    assert pd.read_csv(out)["Class"].tolist() == ["Tree", "All"]


def test_compute_pixel_accuracy(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    rng = np.random.default_rng(1)
    classified = rng.integers(1, 4, (50, 40)).astype(np.uint8)
    reference = np.where(rng.random((50, 40)) < 0.7, classified, 1).astype(np.uint8)
    cls = write_raster(tmp_path / "cls.tif", classified, GRID)
    ref = write_raster(tmp_path / "ref.tif", reference, GRID)
    out = tmp_path / "acc.csv"
    code, stdout, err = run(
        "compute-pixel-accuracy", cls, ref, out, "--out-accuracy-report", tmp_path / "r.html"
    )
    assert code == 0, err
    accuracy = np.mean(classified == reference)
    assert f"Overall accuracy: {accuracy:.3f}" in stdout
    assert pd.read_csv(out)["Overall_Accuracy"].iloc[-1] == pytest.approx(accuracy)
    assert (tmp_path / "acc_confusion.csv").exists() and (tmp_path / "r.html").exists()

    far = Affine(1.0, 0, 500_000.0, 0, -1.0, 3_285_000.0)
    away = write_raster(tmp_path / "away.tif", reference, far)
    assert_one_line_error(
        *run("compute-pixel-accuracy", cls, away, tmp_path / "b.csv"), "does not overlap"
    )
    assert_one_line_error(
        *run("compute-pixel-accuracy", cls, tmp_path / "none.tif", tmp_path / "b.csv"),
        "does not exist",
    )
    assert not list(tmp_path.glob("b*")) and not list(tmp_path.glob(".b*"))


@pytest.mark.parametrize(
    ("command", "function", "arguments"),
    [
        (
            "compute-accuracy",
            compute_accuracy_for_object_detection,
            ("detected_features", "ground_truth_features", "out_accuracy_table"),
        ),
        (
            "compute-pixel-accuracy",
            compute_pixel_accuracy,
            ("classified_raster", "reference", "out_accuracy_table"),
        ),
    ],
)
def test_every_parameter_is_on_the_command_line(command, function, arguments) -> None:
    code, help_text, _ = run(command, "--help")
    assert code == 0
    parameters = list(inspect.signature(function).parameters)
    assert tuple(parameters[:3]) == arguments
    for name in parameters[3:]:
        assert "--" + name.replace("_", "-") in help_text, name
