"""Loading a trained model from its definition: the architecture it records, and older ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.models.registry import build_model
from rasterlearn.models.segmentation import LEGACY_UNET_DECODER_CHANNELS, UNET_DECODER_CHANNELS
from rasterlearn.models.trained import load_trained_model


def test_a_unet_records_its_decoder_and_loads_as_trained(models) -> None:
    md = ModelDefinition.load(models.unet)
    assert md.get("ModelParameters")["decoder_channels"] == list(UNET_DECODER_CHANNELS)
    assert load_trained_model(models.unet).model.decoder_channels == UNET_DECODER_CHANNELS


def test_a_unet_saved_before_the_decoder_was_recorded_still_loads(models, tmp_path: Path) -> None:
    folder = tmp_path / "old"
    shutil.copytree(models.unet.parent, folder)
    emd = folder / models.unet.name
    content = ModelDefinition.load(emd).to_dict()
    del content["ModelParameters"]["decoder_channels"]
    ModelDefinition.load(content).save(emd)
    torch.manual_seed(0)
    old = build_model(
        "UNET",
        len(content["Classes"]),
        3,
        backbone="resnet18",
        decoder_channels=LEGACY_UNET_DECODER_CHANNELS,
    ).eval()
    torch.save(old.state_dict(), folder / content["ModelFile"])
    loaded = load_trained_model(emd).model
    assert loaded.decoder_channels == LEGACY_UNET_DECODER_CHANNELS
    image = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(image), old(image))
