"""Train Deep Learning Model end to end on small synthetic exports (real torch, real Lightning)."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from rasterlearn import export_training_data
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.models.trained import load_trained_model
from rasterlearn.synthetic import make_scene
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model

FAST = {"batch_size": 8, "backbone_model": "resnet18", "seed": 7}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small export per metadata format of a 320 x 320 px scene (64 px chips)."""
    root = tmp_path_factory.mktemp("train")
    scene = make_scene(root / "scene", width=256, height=256, seed=5, cell=40)
    out = {}
    for fmt in (
        "Classified_Tiles",
        "PASCAL_VOC_rectangles",
        "RCNN_Masks",
        "Labeled_Tiles",
        "MultiLabeled_Tiles",
    ):
        out[fmt] = root / fmt
        export_training_data(
            scene.raster_path,
            out[fmt],
            scene.polygons_path,
            metadata_format=fmt,
            tile_size_x=64,
            tile_size_y=64,
            stride_x=48,
            stride_y=48,
        )
    return out


# (model type, data format, model arguments, learning rate); R-CNNs trained from scratch with
# batch norm need the lower rate.
CASES = [
    ("UNET", "Classified_Tiles", {}, 2e-3),
    ("DEEPLAB", "Classified_Tiles", {}, 2e-3),
    ("FCOS", "PASCAL_VOC_rectangles", {}, 2e-3),
    ("RETINANET", "PASCAL_VOC_rectangles", {}, 2e-3),
    # the R-CNNs' proposal and sample counts default to sizes scaled to the 64 px chips
    ("FASTERRCNN", "PASCAL_VOC_rectangles", {}, 3e-4),
    ("MASKRCNN", "RCNN_Masks", {}, 3e-4),
    ("FEATURE_CLASSIFIER", "Labeled_Tiles", {}, 2e-3),
    ("FEATURE_CLASSIFIER", "MultiLabeled_Tiles", {}, 3e-4),
]
EPOCHS = 3


@pytest.fixture(scope="module")
def trained(exports, tmp_path_factory):
    """Each model type trained once (shared by the tests below)."""
    root = tmp_path_factory.mktemp("models")
    results = {}
    for model_type, fmt, arguments, learning_rate in CASES:
        key = f"{model_type}-{fmt}"
        results[key] = train_deep_learning_model(
            exports[fmt],
            root / key,
            max_epochs=EPOCHS,
            model_type=model_type,
            arguments=arguments,
            learning_rate=learning_rate,
            stop_training=False,
            augmentation="NONE",
            **FAST,
        )
    return results


@pytest.mark.parametrize("key", [f"{m}-{f}" for m, f, _, _ in CASES])
def test_validation_loss_falls(trained, key):
    history = trained[key].history
    losses = [h.validation_loss for h in history]
    assert len(losses) == EPOCHS
    assert all(np.isfinite(losses))
    assert min(losses[1:]) < losses[0], losses


@pytest.mark.parametrize("key", [f"{m}-{f}" for m, f, _, _ in CASES])
def test_model_folder_and_package(trained, key):
    result = trained[key]
    folder = result.out_folder
    name = folder.name
    for rel in (
        f"{name}.emd",
        f"{name}.pth",
        f"{name}.dlpk",
        "model_metrics.html",
        "ModelCharacteristics/loss_graph.png",
        "ModelCharacteristics/show_results.png",
        "ModelCharacteristics/training_validation_loss.json",
    ):
        assert (folder / rel).is_file(), rel
    with zipfile.ZipFile(folder / f"{name}.dlpk") as z:
        names = set(z.namelist())
    assert f"{name}.emd" in names and f"{name}.pth" in names
    # what ArcGIS Pro runs: the raster function and the TorchScript copy of the model
    assert {"RasterlearnFunction.py", f"{name}-cpu.pt"} <= names
    assert all(not n.startswith("/") and ".." not in n for n in names)
    assert [n for n in names if n.endswith(".emd")] == [f"{name}.emd"]

    emd = json.loads((folder / f"{name}.emd").read_text())
    assert emd["ModelFile"] == f"{name}.pth"
    assert emd["Framework"] == "PyTorch" and emd["InferenceFunction"] == "RasterlearnFunction.py"
    assert emd["TorchScript"] == {"CPU": f"{name}-cpu.pt"} and "RasterlearnVersion" in emd
    assert emd["ImageHeight"] == emd["ImageWidth"] == 64
    assert emd["ModelFormat"] == "NCHW"
    assert isinstance(emd["LearningRate"], str)
    rate = next(lr for m, f, _, lr in CASES if f"{m}-{f}" == key)
    assert float(emd["LearningRate"]) == pytest.approx(rate)
    assert emd["ModelParameters"]["backbone"] == "resnet18"
    classes = {c["Value"]: c["Name"] for c in emd["Classes"]}
    assert classes == {1: "building", 2: "tree", 3: "water"}
    log = json.loads((folder / "ModelCharacteristics/training_validation_loss.json").read_text())
    epochs = log["training_validation_loss_per_epoch"]
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS))
    assert all(isinstance(e["training_loss"], str) for e in epochs)
    html = (folder / "model_metrics.html").read_text()
    assert "data:image/png;base64," in html and emd["ModelName"] in html


def test_emd_keys_per_model_family(trained):
    unet = json.loads(next(trained["UNET-Classified_Tiles"].out_folder.glob("*.emd")).read_text())
    assert unet["ModelType"] == "ImageClassification"
    assert unet["ModelName"] == "UnetClassifier"
    assert isinstance(unet["accuracy"], str) and 0 <= float(unet["accuracy"]) <= 1
    per_class = json.loads(unet["per_class_metrics"])
    assert set(per_class) == {"NoData", "building", "tree", "water"}
    assert (
        trained["UNET-Classified_Tiles"].out_folder / "ModelCharacteristics/confusion_matrix.png"
    ).is_file()

    rcnn = json.loads(
        next(trained["FASTERRCNN-PASCAL_VOC_rectangles"].out_folder.glob("*.emd")).read_text()
    )
    assert rcnn["ModelType"] == "ObjectDetection"
    assert set(rcnn["average_precision_score"]) <= {"building", "tree", "water"}
    assert all(0 <= v <= 1 for v in rcnn["average_precision_score"].values())

    mask = json.loads(next(trained["MASKRCNN-RCNN_Masks"].out_folder.glob("*.emd")).read_text())
    assert mask["ModelType"] == "InstanceDetection"

    fc = json.loads(
        next(trained["FEATURE_CLASSIFIER-Labeled_Tiles"].out_folder.glob("*.emd")).read_text()
    )
    assert fc["ModelType"] == "ObjectClassification"
    assert fc["MetaDataMode"] == "Labeled_Tiles"
    assert fc["CropSizeFixed"] == 1 and fc["BlackenAroundFeature"] == 0


def test_emd_round_trip_keeps_every_key(trained, tmp_path):
    src = next(trained["RETINANET-PASCAL_VOC_rectangles"].out_folder.glob("*.emd"))
    again = ModelDefinition.load(src).save(tmp_path / "again.emd")
    original = json.loads(src.read_text())
    reloaded = json.loads(again.read_text())
    assert reloaded == original
    assert list(reloaded) == list(original)


@pytest.mark.parametrize(
    "key",
    ["UNET-Classified_Tiles", "FCOS-PASCAL_VOC_rectangles", "FEATURE_CLASSIFIER-Labeled_Tiles"],
)
def test_saved_model_predicts_like_the_trained_one(trained, key):
    result = trained[key]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for source in (result.emd, result.dlpk):
        loaded = load_trained_model(source)
        with torch.no_grad():
            ours, theirs = result.model.eval()(x), loaded.model(x)
        if isinstance(ours, list):
            for a, b in zip(ours, theirs, strict=True):
                torch.testing.assert_close(a["boxes"], b["boxes"])
                torch.testing.assert_close(a["scores"], b["scores"])
        else:
            torch.testing.assert_close(ours, theirs)


def test_fine_tuning_starts_from_the_package(trained, exports, tmp_path):
    base = trained["UNET-Classified_Tiles"]
    tuned = train_deep_learning_model(
        exports["Classified_Tiles"],
        tmp_path / "tuned",
        max_epochs=1,
        pretrained_model=base.dlpk,
        batch_size=8,
        learning_rate=1e-9,
        augmentation="NONE",
        freeze=False,
    )
    assert tuned.model_type == "UNET"
    # a near-zero learning rate keeps the packaged weights (batch-norm statistics still move)
    a = dict(base.model.named_parameters())
    b = dict(tuned.model.named_parameters())
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).detach().abs().max()) for k in a) < 1e-4


def test_bad_inputs(exports, tmp_path):
    with pytest.raises(ParameterError, match="cannot train on Classified_Tiles"):
        train_deep_learning_model(exports["Classified_Tiles"], tmp_path / "a", model_type="FCOS")
    with pytest.raises(ParameterError, match="larger than the"):
        train_deep_learning_model(exports["Classified_Tiles"], tmp_path / "b", batch_size=10_000)
    with pytest.raises(InputError, match=r"differ|format"):
        train_deep_learning_model(
            [exports["Classified_Tiles"], exports["PASCAL_VOC_rectangles"]], tmp_path / "c"
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="images"):
        train_deep_learning_model(tmp_path / "empty", tmp_path / "d")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_corrupted_weights_are_refused(trained, tmp_path):
    folder = trained["UNET-Classified_Tiles"].out_folder
    broken = tmp_path / "broken"
    broken.mkdir()
    emd = json.loads(next(folder.glob("*.emd")).read_text())
    (broken / "broken.emd").write_text(json.dumps({**emd, "ModelFile": "broken.pth"}))
    (broken / "broken.pth").write_bytes(next(folder.glob("*.pth")).read_bytes()[:5000])
    with pytest.raises(InputError, match="cannot read model weights"):
        load_trained_model(broken / "broken.emd")


def test_resume_after_the_process_is_killed(exports, tmp_path):
    out = tmp_path / "resumed"
    script = (
        "from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model\n"
        f"train_deep_learning_model({str(exports['Classified_Tiles'])!r}, {str(out)!r}, "
        "max_epochs=30, model_type='UNET', batch_size=8, backbone_model='resnet18', "
        "learning_rate=2e-3, stop_training=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "CI": "1"})
    last = out.with_name(f".{out.name}.checkpoints") / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "no checkpoint was written before the kill"
    assert not out.exists()  # a killed run leaves no model folder that looks finished
    done = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    result = train_deep_learning_model(
        exports["Classified_Tiles"],
        out,
        max_epochs=done + 3,
        model_type="UNET",
        batch_size=8,
        backbone_model="resnet18",
        learning_rate=2e-3,
        stop_training=False,
        resume=True,
    )
    # the checkpoint holds finished epoch `done`: training goes on with the next one
    assert [h.epoch for h in result.history] == [done + 1, done + 2]
    assert (out / "resumed.dlpk").is_file()


# --------------------------------------------------------------------------- model arguments


def _trained_weights(exports, tmp_path, model_type, fmt, arguments, name, **kwargs) -> dict:
    options = {"augmentation": "NONE", **FAST, **kwargs}
    result = train_deep_learning_model(
        exports[fmt],
        tmp_path / name,
        max_epochs=1,
        model_type=model_type,
        arguments=arguments,
        learning_rate=2e-3,
        stop_training=False,
        **options,
    )
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def _differ(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


ARGUMENT_CASES = {
    "class_balancing": ("UNET", "Classified_Tiles", {"class_balancing": "True"}),
    "focal_loss": ("UNET", "Classified_Tiles", {"focal_loss": True}),
    "mixup-pixels": ("UNET", "Classified_Tiles", {"mixup": True}),
    "ignore_classes": ("UNET", "Classified_Tiles", {"ignore_classes": "0"}),
    "dice_loss_fraction": ("UNET", "Classified_Tiles", {"dice_loss_fraction": 0.5}),
    "mixup-chips": ("FEATURE_CLASSIFIER", "Labeled_Tiles", {"mixup": True}),
    "oversample": ("FEATURE_CLASSIFIER", "Labeled_Tiles", {"oversample": True}),
}


@pytest.fixture(scope="module")
def baselines(exports, tmp_path_factory) -> dict[str, dict]:
    """Weights after one epoch without model arguments, per model type; trained twice to show
    that training is deterministic, so that any difference comes from an argument."""
    root = tmp_path_factory.mktemp("baselines")
    out = {}
    for model_type, fmt in {(m, f) for m, f, _ in ARGUMENT_CASES.values()}:
        first = _trained_weights(exports, root, model_type, fmt, {}, f"{model_type}-a")
        again = _trained_weights(exports, root, model_type, fmt, {}, f"{model_type}-b")
        assert _differ(first, again) == 0.0, f"{model_type} training is not deterministic"
        out[model_type] = first
    return out


@pytest.mark.parametrize("case", list(ARGUMENT_CASES))
def test_model_arguments_change_training(exports, baselines, tmp_path, case):
    model_type, fmt, arguments = ARGUMENT_CASES[case]
    changed = _trained_weights(exports, tmp_path, model_type, fmt, arguments, "changed")
    assert _differ(baselines[model_type], changed) > 1e-4


def test_model_argument_errors(exports, tmp_path):
    with pytest.raises(ParameterError, match="ignore_classes 9 is not a class") as err:
        _trained_weights(
            exports, tmp_path, "UNET", "Classified_Tiles", {"ignore_classes": "9"}, "a"
        )
    assert "\n" not in str(err.value) and "1, 2, 3" in str(err.value)
    with pytest.raises(ParameterError, match="no class to train on"):
        _trained_weights(
            exports, tmp_path, "UNET", "Classified_Tiles", {"ignore_classes": "1,2,3"}, "b"
        )
    with pytest.raises(ParameterError, match="dice_loss_fraction must be between 0 and 1"):
        _trained_weights(
            exports, tmp_path, "UNET", "Classified_Tiles", {"dice_loss_fraction": 2}, "c"
        )
    # arguments that do not apply to a model type are refused, naming the valid ones
    for model_type, fmt, name in (
        ("FCOS", "PASCAL_VOC_rectangles", "class_balancing"),
        ("FASTERRCNN", "PASCAL_VOC_rectangles", "mixup"),
        ("FEATURE_CLASSIFIER", "Labeled_Tiles", "focal_loss"),
    ):
        with pytest.raises(ParameterError, match=f"unknown model argument '{name}'") as err:
            _trained_weights(exports, tmp_path, model_type, fmt, {name: True}, f"d-{name}")
        assert "valid arguments" in str(err.value) and "\n" not in str(err.value)
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))


# --------------------------------------------------------------------------- augmentation


def test_custom_augmentation_parameters_are_applied(exports, baselines, tmp_path):
    def weights(name: str, rows: list[str]) -> dict:
        return _trained_weights(
            exports, tmp_path, "UNET", "Classified_Tiles", {}, name,
            augmentation="CUSTOM", augmentation_parameters=rows,
        )  # fmt: skip

    # transforms that never apply leave training exactly as without augmentation
    assert _differ(baselines["UNET"], weights("never", ["flip_lr=0", "rotate=30;0"])) == 0.0
    assert _differ(baselines["UNET"], weights("flipped", ["flip_lr=1.0"])) > 1e-4


def test_augmentation_errors(exports, tmp_path):
    folder = exports["Classified_Tiles"]
    with pytest.raises(ParameterError, match="only with augmentation CUSTOM"):
        train_deep_learning_model(folder, tmp_path / "a", augmentation_parameters=["rotate=10"])
    with pytest.raises(ParameterError, match="FILE"):
        train_deep_learning_model(folder, tmp_path / "b", augmentation="FILE")
    with pytest.raises(ParameterError, match=r"tile size \(64\)"):
        train_deep_learning_model(
            folder, tmp_path / "c", augmentation="CUSTOM", augmentation_parameters=["crop=100"]
        )
    assert not any((tmp_path / n).exists() for n in "abc")


def test_train_command_passes_augmentation_parameters(exports, tmp_path):
    from typer.testing import CliRunner

    from rasterlearn.cli import app

    folder = str(exports["Classified_Tiles"])
    out = str(tmp_path / "m")
    common = ["train", folder, out, "--augmentation", "CUSTOM", "--max-epochs", "1"]
    runner = CliRunner()
    for option, message in (
        ("rotate=30;2", "probability 2.0 is not between 0 and 1"),  # ';' reaches the parser
        ("blur=1", "unknown augmentation 'blur'"),
    ):
        result = runner.invoke(app, [*common, "--augmentation-parameter", option])
        assert result.exit_code == 2, result.output
        assert message in result.output and result.output.strip().count("\n") == 0
    result = runner.invoke(
        app,
        [
            *common,
            "--augmentation-parameter", "flip_lr=0.5",
            "--augmentation-parameter", "rotate=(-10,10);0.5",
            "--model-type", "UNET", "--backbone-model", "RESNET18",
            "--batch-size", "8", "--learning-rate", "2e-3",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "m.dlpk").is_file()


def test_a_model_that_learned_nothing_ends_with_a_warning(exports, tmp_path):
    """One epoch at a far too low rate: AP ~0, and the command says so last, with advice."""
    from typer.testing import CliRunner

    from rasterlearn.cli import app

    result = CliRunner().invoke(
        app,
        [
            "train", str(exports["PASCAL_VOC_rectangles"]), str(tmp_path / "m"),
            "--model-type", "FCOS", "--backbone-model", "RESNET18", "--batch-size", "8",
            "--max-epochs", "1", "--learning-rate", "1e-8", "--augmentation", "NONE",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("warning: validation average precision is 0.0"), result.output
    assert "--max-epochs" in last and "--learning-rate" in last
    html = (tmp_path / "m" / "model_metrics.html").read_text()
    assert "Warning:" in html and "given as learning_rate" in html
    emd = json.loads((tmp_path / "m" / "m.emd").read_text())
    assert emd["LearningRateChoice"] == {"Rule": "given", "Reason": "given as learning_rate"}


# --------------------------------------------------------------------------- default augmentation


@pytest.mark.parametrize(
    ("model_type", "fmt", "zooms"),
    [
        ("FCOS", "PASCAL_VOC_rectangles", True),
        ("RETINANET", "PASCAL_VOC_rectangles", False),
        ("FASTERRCNN", "PASCAL_VOC_rectangles", False),
        ("UNET", "Classified_Tiles", False),
    ],
)
def test_fcos_zooms_by_default(exports, tmp_path, model_type, fmt, zooms):
    from rasterlearn.training.settings import TrainingSettings
    from rasterlearn.training.setup import OBJECT_ZOOM, prepare_training

    defaults = {
        name: p.default
        for name, p in inspect.signature(train_deep_learning_model).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    setup = prepare_training(
        TrainingSettings.from_parameters(
            exports[fmt], tmp_path / "m", **{**defaults, "model_type": model_type}
        )
    )
    assert setup.train_set.augment.zoom == (OBJECT_ZOOM if zooms else None)
    assert setup.train_set.augment.flips  # the rest of the default augmentation is kept
