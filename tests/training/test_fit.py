"""Fitting with Lightning: distributed data-parallel training really run on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from rasterlearn import export_training_data
from rasterlearn.models.trained import load_trained_model
from rasterlearn.synthetic import make_scene


def test_train_on_two_cpu_processes(tmp_path):
    """``--devices 2`` on the CPU: Lightning DDP over gloo, two processes; rank 0 alone
    reports and writes the model folder, and the model loads and predicts."""
    scene = make_scene(tmp_path / "scene", width=160, height=160, seed=4, cell=40)
    chips = tmp_path / "chips"
    export_training_data(
        scene.raster_path,
        chips,
        scene.polygons_path,
        metadata_format="Classified_Tiles",
        tile_size_x=64,
        tile_size_y=64,
        stride_x=48,
        stride_y=48,
    )
    out = tmp_path / "model"
    command = [
        sys.executable, "-m", "rasterlearn.cli", "train", str(chips), str(out),
        "--model-type", "UNET", "--backbone-model", "RESNET18", "--batch-size", "2",
        "--max-epochs", "1", "--validation-percentage", "25", "--devices", "2",
    ]  # fmt: skip
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("Trained UNET for 1 epochs") == 1, done.stdout
    assert "learning rate 2.00e-03 (fallback): a distributed run" in done.stdout
    # one model folder, complete; no partial folder of another process, no checkpoints left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chips", "model", "scene"]
    assert {p.name for p in out.iterdir()} >= {"model.emd", "model.pth", "model.dlpk"}
    emd = json.loads((out / "model.emd").read_text())
    assert emd["LearningRateChoice"]["Rule"] == "fallback"
    trained = load_trained_model(out / "model.emd")
    with torch.no_grad():
        logits = trained.model(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, 4, 64, 64) and torch.isfinite(logits).all()
