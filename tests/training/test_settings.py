"""TrainingSettings: the train tool's parameters checked and normalised before data or torch."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rasterlearn.errors import OutputError, ParameterError
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model
from rasterlearn.training.settings import TrainingSettings


def _settings(in_folder: object = "export", out_folder: object = None, **changes: object):
    """Settings from the tool's defaults with ``changes``."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(train_deep_learning_model).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return TrainingSettings.from_parameters(in_folder, out_folder, **{**defaults, **changes})


def test_parameters_are_normalised(tmp_path):
    s = _settings(
        "a",
        tmp_path / "model",
        model_type="unet",
        monitor="miou",
        augmentation="custom",
        augmentation_parameters=["flip_lr=0.5"],
        devices="2",
        num_nodes="1",
        max_epochs="3",
        arguments={"mixup": "True"},
    )
    assert s.folders == ("a",)
    assert s.out_folder == (tmp_path / "model").absolute()
    assert s.checkpoints == tmp_path / ".model.checkpoints"
    assert (s.model_type, s.monitor, s.augmentation) == ("UNET", "MIOU", "CUSTOM")
    assert (s.devices, s.num_nodes, s.max_epochs) == (2, 1, 3)
    assert s.monitor_for("pixel") == "MIOU"
    assert s.arguments == {"mixup": "True"}
    assert _settings(["a", "b"], tmp_path / "m", devices="auto").devices == "auto"
    assert _settings(["a", "b"], tmp_path / "m").folders == ("a", "b")


def test_the_default_monitor_is_the_metric_users_judge_the_model_by(tmp_path):
    s = _settings("a", tmp_path / "model")
    assert s.monitor is None
    assert s.monitor_for("detection") == s.monitor_for("instance") == "AVERAGE_PRECISION"
    assert s.monitor_for("pixel") == s.monitor_for("classification") == "ACCURACY"
    assert _settings("a", tmp_path / "m", monitor="valid_loss").monitor_for("pixel") == (
        "VALID_LOSS"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_epochs": 0}, "max_epochs must be at least 1, got 0"),
        (
            {"validation_percentage": 100},
            "validation_percentage must be between 0 and 100, got 100",
        ),
        ({"monitor": "loss"}, "unknown monitor 'loss'"),
        ({"augmentation": "file"}, "augmentation FILE (fastai transforms.json) is not supported"),
        ({"augmentation": "blur"}, "unknown augmentation 'BLUR'"),
        (
            {"augmentation_parameters": ["rotate=10"]},
            "augmentation_parameters apply only with augmentation CUSTOM, not DEFAULT",
        ),
        ({"resume": True}, "there is no interrupted run of model to resume"),
    ],
)
def test_bad_parameters(tmp_path, changes, message):
    with pytest.raises(ParameterError) as err:
        _settings("export", tmp_path / "model", **changes)
    assert message in str(err.value)


def test_no_folder_and_existing_output(tmp_path):
    with pytest.raises(ParameterError, match="no training data folder given"):
        _settings([], tmp_path / "model")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.emd").write_text("{}")
    with pytest.raises(OutputError, match="already exists"):
        _settings("export", tmp_path / "model")
    assert _settings("export", tmp_path / "model", overwrite=True).overwrite


def test_a_bad_parameter_fails_before_torch_is_imported(tmp_path):
    script = (
        "import sys\n"
        "from rasterlearn import train_deep_learning_model\n"
        "from rasterlearn.errors import ParameterError\n"
        "try:\n"
        f"    train_deep_learning_model('export', {str(tmp_path / 'm')!r}, max_epochs=0)\n"
        "except ParameterError:\n"
        "    assert 'torch' not in sys.modules and 'lightning' not in sys.modules\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    src = str(Path(__file__).parents[2] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    subprocess.run(
        [sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": path}
    )
