"""Backbone bodies: band-count adaptation, feature shapes, local weights, offline behaviour."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.models.backbones import (
    BACKBONES,
    adapt_first_conv_weight,
    build_encoder,
    load_backbone_weights,
)
from rasterlearn.models.registry import build_model, get_encoder

RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's file name for ImageNet ResNet18


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from threads, and OpenMP threads on a busy machine (pytest-xdist
    workers, other jobs) slow everything down; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision ResNet18 state_dict (stands in for ImageNet)."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.fixture
def resnet18_file(tmp_path: Path, resnet18_state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "my_resnet18.pth"
    torch.save(resnet18_state, path)
    return path


@pytest.fixture
def hub_dir(tmp_path: Path):
    """torch.hub's directory pointed at an empty temporary folder."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt or socket connection fails the test."""

    def tripwire(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", tripwire)
    monkeypatch.setattr(torch.hub, "download_url_to_file", tripwire)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", tripwire)


# --------------------------------------------------------------------------- first conv


def test_three_bands_keep_the_filters() -> None:
    w = torch.randn(8, 3, 7, 7)
    assert torch.equal(adapt_first_conv_weight(w, 3), w)


def test_extra_bands_keep_rgb_exactly_and_get_scaled_mean() -> None:
    w = torch.randn(8, 3, 7, 7, dtype=torch.float64)
    out = adapt_first_conv_weight(w, 5)
    assert out.shape == (8, 5, 7, 7)
    assert torch.equal(out[:, :3], w)
    expected = w.numpy().mean(axis=1) * 3 / 5
    for band in (3, 4):
        np.testing.assert_allclose(out[:, band].numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("bands", [1, 2])
def test_fewer_bands_average_rgb_scaled(bands: int) -> None:
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    out = adapt_first_conv_weight(w, bands)
    # each band: mean of the RGB filters * 3 / bands; for one band that is their sum
    expected = w.numpy().sum(axis=1) / bands
    for band in range(bands):
        np.testing.assert_allclose(out[:, band].numpy(), expected, rtol=1e-12)
    # an image whose bands all equal a grey value responds as the RGB filters to grey RGB
    grey = torch.rand(1, 1, 9, 9, dtype=torch.float64)
    rgb = nn.functional.conv2d(grey.expand(1, 3, 9, 9), w)
    ours = nn.functional.conv2d(grey.expand(1, bands, 9, 9), out)
    torch.testing.assert_close(ours, rgb)


def test_arcgis_weight_init_schemes() -> None:
    w = torch.randn(4, 3, 3, 3)
    rand = torch.randn(4, 6, 3, 3)
    red = adapt_first_conv_weight(w, 6, "RED_BAND".lower())
    assert torch.equal(red[:, :3], w) and all(torch.equal(red[:, b], w[:, 0]) for b in (3, 4, 5))
    kept = adapt_first_conv_weight(w, 6, "random", random_weight=rand)
    assert torch.equal(kept[:, :3], w) and torch.equal(kept[:, 3:], rand[:, 3:])
    assert torch.equal(adapt_first_conv_weight(w, 6, "all_random", random_weight=rand), rand)
    with pytest.raises(ParameterError, match="scheme"):
        adapt_first_conv_weight(w, 6, "sideways")


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("name", "output_stride"),
    [
        ("resnet18", 32),
        ("resnet18", 8),
        ("resnet34", 16),
        ("resnet50", 8),
        ("mobilenet_v3_large", 32),
        ("mobilenet_v3_small", 32),
        ("mobilenet_v3_small", 16),
    ],
)
def test_encoder_reports_its_feature_shapes(name: str, output_stride: int) -> None:
    enc = build_encoder(name, in_channels=4, output_stride=output_stride).eval()
    with torch.no_grad():
        feats = enc(torch.rand(1, 4, 64, 96))
    assert len(feats) == len(enc.channels) == len(enc.strides)
    assert enc.strides[-1] == output_stride and enc.first_conv.in_channels == 4
    for f, c, s in zip(feats, enc.channels, enc.strides, strict=True):
        assert tuple(f.shape) == (1, c, 64 // s, 96 // s)


def test_unknown_backbone_and_bad_band_count() -> None:
    with pytest.raises(ParameterError, match="RESNET18"):
        build_encoder("vgg16")
    with pytest.raises(ParameterError, match="timm"):
        build_encoder("timm:convnext_tiny")
    with pytest.raises(ParameterError, match="in_channels"):
        build_encoder("resnet18", in_channels=0)
    assert build_encoder("RESNET18").name == "resnet18"


def test_torchvision_file_names() -> None:
    assert BACKBONES["resnet18"].weights_files == (RESNET18_FILE,)
    assert BACKBONES["mobilenet_v3_small"].weights_files == ("mobilenet_v3_small-047dcff4.pth",)
    assert BACKBONES["resnet50"].arcgis_name == "RESNET50"


# --------------------------------------------------------------------------- weights


def test_weights_from_a_local_file(resnet18_file: Path, resnet18_state: dict) -> None:
    enc = build_encoder("resnet18", in_channels=5, pretrained=resnet18_file)
    own = enc.state_dict()
    assert not any(k.startswith("fc.") for k in own)
    for key, value in resnet18_state.items():
        if key.startswith("fc.") or key == "conv1.weight":
            continue
        assert torch.equal(own[key], value), key
    rgb = resnet18_state["conv1.weight"]
    assert torch.equal(own["conv1.weight"][:, :3], rgb)
    torch.testing.assert_close(own["conv1.weight"][:, 3], rgb.mean(dim=1) * 3 / 5)
    torch.testing.assert_close(own["conv1.weight"][:, 4], rgb.mean(dim=1) * 3 / 5)


def test_weights_from_the_torch_cache(
    hub_dir: Path, resnet18_state: dict, no_network: None
) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(resnet18_state, hub_dir / "checkpoints" / RESNET18_FILE)
    enc = build_encoder("RESNET18", in_channels=3, pretrained="torch-cache")
    assert torch.equal(enc.state_dict()["conv1.weight"], resnet18_state["conv1.weight"])
    assert torch.equal(
        enc.state_dict()["layer4.1.bn2.running_var"], resnet18_state["layer4.1.bn2.running_var"]
    )


def test_mobilenet_weights_from_the_torch_cache(hub_dir: Path, no_network: None) -> None:
    state = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(state, hub_dir / "checkpoints" / "mobilenet_v3_small-047dcff4.pth")
    enc = build_encoder("mobilenet_v3_small", in_channels=4, pretrained="torch-cache")
    own = enc.state_dict()
    assert torch.equal(own["features.0.0.weight"][:, :3], state["features.0.0.weight"])
    assert torch.equal(own["features.9.block.0.0.weight"], state["features.9.block.0.0.weight"])


def test_missing_weights_offline_is_an_input_error(hub_dir: Path, no_network: None) -> None:
    with pytest.raises(InputError) as err:
        build_encoder("resnet18", pretrained="torch-cache")
    assert str(hub_dir / "checkpoints" / RESNET18_FILE) in str(err.value)
    with pytest.raises(InputError, match=r"nope\.pth"):
        build_model("UNET", 2, 3, "resnet18", 64, pretrained_backbone=hub_dir / "nope.pth")


def test_unreadable_or_unfit_weights(tmp_path: Path, resnet18_file: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        build_encoder("resnet18", pretrained=junk)
    pickled = tmp_path / "pickled.pth"
    torch.save({"layer": nn.Linear(2, 2)}, pickled)  # not loadable with weights_only=True
    with pytest.raises(InputError, match=r"pickled\.pth"):
        load_backbone_weights("resnet18", pickled)
    with pytest.raises(InputError, match="does not fit resnet34"):
        build_encoder("resnet34", pretrained=resnet18_file)
    with pytest.raises(ParameterError, match="group norm"):
        build_encoder("resnet18", pretrained=resnet18_file, norm="group")


def test_wrapped_checkpoints_are_unwrapped(tmp_path: Path, resnet18_state: dict) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet18_state.items()}}, path)
    state = load_backbone_weights("resnet18", path)
    assert torch.equal(state["layer1.0.conv1.weight"], resnet18_state["layer1.0.conv1.weight"])


def test_models_load_pretrained_backbones(resnet18_file: Path, resnet18_state: dict) -> None:
    unet = build_model("UNET", 2, 4, "resnet18", 64, pretrained_backbone=resnet18_file)
    enc = get_encoder(unet)
    assert torch.equal(enc.layer3[0].conv1.weight, resnet18_state["layer3.0.conv1.weight"])
    assert torch.equal(enc.conv1.weight[:, :3], resnet18_state["conv1.weight"])
    assert unet.pretrained

    # detectors fine-tune as torchvision does: frozen BN statistics, stem and layer1 fixed
    det = build_model("FASTERRCNN", 2, 4, "resnet18", 64, pretrained_backbone=resnet18_file)
    enc = get_encoder(det)
    assert isinstance(enc.bn1, FrozenBatchNorm2d)
    assert not enc.conv1.weight.requires_grad and not enc.layer1[0].conv1.weight.requires_grad
    assert enc.layer2[0].conv1.weight.requires_grad
    torch.testing.assert_close(
        enc.layer2[0].bn1.running_mean, resnet18_state["layer2.0.bn1.running_mean"]
    )

    fcos = build_model("FCOS", 2, 3, "resnet18", 64, pretrained_backbone=resnet18_file)
    assert isinstance(get_encoder(fcos).bn1, FrozenBatchNorm2d)
    scratch = build_model("FCOS", 2, 3, "resnet18", 64)
    assert isinstance(get_encoder(scratch).bn1, nn.GroupNorm)


@pytest.mark.parametrize("model_type", ["FCOS", "RETINANET"])
def test_fine_tuned_detectors_rebuild_from_their_arguments(model_type: str, resnet18_file: Path):
    tuned = build_model(model_type, 2, 3, "resnet18", 64, pretrained_backbone=resnet18_file)
    assert tuned.model_args["norm"] == "frozen_batch"
    # what a saved model's .emd holds (ModelParameters) rebuilds the same architecture
    rebuilt = build_model(model_type, 2, 3, "resnet18", 64, model_args=tuned.model_args)
    rebuilt.load_state_dict(tuned.state_dict())
    assert not rebuilt.pretrained and isinstance(get_encoder(rebuilt).bn1, FrozenBatchNorm2d)
