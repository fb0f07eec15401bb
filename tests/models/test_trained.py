"""Loading a trained model from its definition: the architecture it records, and older ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from rasterlearn import train_deep_learning_model
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.models.registry import build_model
from rasterlearn.models.segmentation import LEGACY_UNET_DECODER_CHANNELS, UNET_DECODER_CHANNELS
from rasterlearn.models.trained import load_trained_model


def older_unet(unet_emd: Path, folder: Path) -> tuple[Path, nn.Module]:
    """A copy of a UNET model folder as rasterlearn wrote it before it recorded the decoder's
    widths: no ``decoder_channels`` in the .emd, weights of the wider decoder of the time."""
    shutil.copytree(unet_emd.parent, folder)
    emd = folder / unet_emd.name
    content = ModelDefinition.load(emd).to_dict()
    del content["ModelParameters"]["decoder_channels"]
    ModelDefinition.load(content).save(emd)
    torch.manual_seed(0)
    model = build_model(
        "UNET",
        len(content["Classes"]),
        3,
        backbone="resnet18",
        decoder_channels=LEGACY_UNET_DECODER_CHANNELS,
    ).eval()
    torch.save(model.state_dict(), folder / content["ModelFile"])
    return emd, model


def test_a_unet_records_its_decoder_and_loads_as_trained(models) -> None:
    md = ModelDefinition.load(models.unet)
    assert md.get("ModelParameters")["decoder_channels"] == list(UNET_DECODER_CHANNELS)
    assert load_trained_model(models.unet).model.decoder_channels == UNET_DECODER_CHANNELS


def test_a_unet_saved_before_the_decoder_was_recorded_still_loads(models, tmp_path: Path) -> None:
    emd, old = older_unet(models.unet, tmp_path / "old")
    loaded = load_trained_model(emd).model
    assert loaded.decoder_channels == LEGACY_UNET_DECODER_CHANNELS
    image = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(image), old(image))


def test_fine_tuning_an_older_unet_keeps_its_decoder(models, tmp_path: Path) -> None:
    emd, _ = older_unet(models.unet, tmp_path / "old")
    result = train_deep_learning_model(
        models.unet.parent.parent / "Classified_Tiles",
        tmp_path / "tuned",
        pretrained_model=str(emd),
        max_epochs=1,
        learning_rate=1e-3,
        batch_size=16,
    )
    assert result.model.decoder_channels == LEGACY_UNET_DECODER_CHANNELS
    tuned = ModelDefinition.load(result.emd).get("ModelParameters")["decoder_channels"]
    assert tuned == list(LEGACY_UNET_DECODER_CHANNELS)
