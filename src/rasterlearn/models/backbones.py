"""Backbone bodies (encoders) for every model: ResNet 18/34/50/101 and MobileNetV3 large/small.

An :class:`Encoder` wraps a torchvision network without its classification head and returns
its feature maps at strides 2, 4, 8, 16 and 32 (less with dilation). Its parameter names are
torchvision's (``conv1.weight``, ``layer1.0.conv1.weight``, ``features.0.0.weight``, ...), so
a torchvision ImageNet ``state_dict`` loads into it directly.

Any band count: the first convolution is rebuilt for ``in_channels`` bands. When pretrained RGB
weights are loaded, :func:`adapt_first_conv_weight` maps the RGB filters to the bands:

* ``in_channels == 3``: the filters as they are.
* ``in_channels > 3`` (scheme ``"mean"``, the default): bands 0-2 keep the R, G, B filters
  exactly; every extra band gets the mean of the three RGB filters times ``3 / in_channels``.
  The extra bands (NIR, SWIR, elevation...) start as a luminance-like edge detector, a
  response that is useful for any band, and with a total weight of ``3 (in_channels - 3) /
  in_channels`` RGB-means they add signal without swamping the pretrained RGB response
  (their sum is below that of the RGB filters for any band count).
* ``in_channels < 3``: every band gets the mean of the three RGB filters times
  ``3 / in_channels``, so an input whose bands are all equal to a grey value gives the same
  activations as the RGB network on the grey RGB image.

The ArcGIS ``weight_init_scheme`` values are also available for ``in_channels > 3``:
``"random"`` (extra bands keep their random Kaiming initialisation), ``"red_band"`` (extra
bands copy the red filter) and ``"all_random"`` (no pretrained first convolution at all).

Weights come from an explicit file or from the local torch hub cache
(``torch.hub.get_dir()/checkpoints/<torchvision file name>``); they are read with
``torch.load(weights_only=True)``. Nothing is ever downloaded: a missing file is an
:class:`~rasterlearn.errors.InputError` naming the file expected.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rasterlearn.errors import InputError, ParameterError

TORCH_CACHE = "torch-cache"
"""Value of ``pretrained`` that means: the torchvision file in the local torch hub cache."""

NORMS = ("batch", "frozen_batch", "group")
"""Normalisation layers an encoder can be built with."""

WEIGHT_INIT_SCHEMES = ("mean", "random", "red_band", "all_random")
"""How extra bands of the first convolution are initialised from RGB weights."""


@dataclass(frozen=True)
class BackboneInfo:
    """One supported backbone.

    Attributes:
        name: Lower-case name, as torchvision's builder (``resnet34``).
        family: ``resnet`` or ``mobilenet_v3``.
        weights: Name of the torchvision weights enum (``ResNet34_Weights``).
    """

    name: str
    family: str
    weights: str

    @property
    def arcgis_name(self) -> str:
        """The upper-case keyword ArcGIS uses (``RESNET34``)."""
        return self.name.upper()

    @property
    def weights_files(self) -> tuple[str, ...]:
        """File names of torchvision's ImageNet weights, the default version first."""
        enum = getattr(torchvision.models, self.weights)
        members = [enum.DEFAULT, *[w for w in enum if w is not enum.DEFAULT]]
        return tuple(os.path.basename(urlparse(w.url).path) for w in members)


BACKBONES: dict[str, BackboneInfo] = {
    b.name: b
    for b in (
        BackboneInfo("resnet18", "resnet", "ResNet18_Weights"),
        BackboneInfo("resnet34", "resnet", "ResNet34_Weights"),
        BackboneInfo("resnet50", "resnet", "ResNet50_Weights"),
        BackboneInfo("resnet101", "resnet", "ResNet101_Weights"),
        BackboneInfo("mobilenet_v3_large", "mobilenet_v3", "MobileNet_V3_Large_Weights"),
        BackboneInfo("mobilenet_v3_small", "mobilenet_v3", "MobileNet_V3_Small_Weights"),
    )
}


def backbone_info(name: str, supported: tuple[str, ...] | None = None) -> BackboneInfo:
    """Look a backbone up by name, case-insensitively (``RESNET34`` or ``resnet34``).

    Args:
        name: The backbone name.
        supported: Names allowed in this context (default: all of :data:`BACKBONES`).

    Returns:
        The backbone's description.

    Raises:
        ParameterError: for an unknown or unsupported name, listing the valid ones.
    """
    allowed = supported if supported is not None else tuple(BACKBONES)
    key = str(name).strip().lower()
    if key not in allowed:
        valid = ", ".join(n.upper() for n in allowed)
        if key.startswith("timm:"):
            raise ParameterError(f"backbone '{name}': timm backbones are not supported", valid)
        raise ParameterError(f"unknown backbone '{name}'", f"use one of {valid}")
    return BACKBONES[key]


# --------------------------------------------------------------------------- weights


def _weights_path(info: BackboneInfo, pretrained: str | os.PathLike[str]) -> Path:
    """The weights file to read: an explicit path, or the first torchvision file in the cache."""
    if str(pretrained) == TORCH_CACHE:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        for file_name in info.weights_files:
            if (folder / file_name).is_file():
                return folder / file_name
        raise InputError(
            f"no pretrained {info.name} weights offline: expected "
            f"{folder / info.weights_files[0]} (nothing is downloaded)",
            "copy torchvision's file there, pass the path of a weights file, "
            "or train from scratch (no pretrained backbone)",
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise InputError(
            f"pretrained {info.name} weights file not found: {path}",
            f"pass an existing file such as torchvision's {info.weights_files[0]}, "
            f"'{TORCH_CACHE}', or no pretrained backbone",
        )
    return path


def load_backbone_weights(name: str, pretrained: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a backbone's pretrained ``state_dict`` from a local file; never downloads.

    Args:
        name: Backbone name (``resnet18``, ``MOBILENET_V3_LARGE``...).
        pretrained: A weights file path, or ``"torch-cache"`` for torchvision's file
            (:attr:`BackboneInfo.weights_files`) in ``torch.hub.get_dir()/checkpoints``.

    Returns:
        The state dict (tensors on the CPU). A checkpoint that wraps it under ``state_dict``
        or ``model`` is unwrapped and a ``module.`` prefix is removed.

    Raises:
        InputError: when the file is missing or unreadable.
    """
    info = backbone_info(name)
    path = _weights_path(info, pretrained)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"cannot read weights file {path}: {exc}".splitlines()[0],
            "pass a PyTorch state_dict saved with torch.save",
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"weights file {path} holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def adapt_first_conv_weight(
    weight: Tensor,
    in_channels: int,
    scheme: str = "mean",
    random_weight: Tensor | None = None,
) -> Tensor:
    """Map a pretrained RGB first-convolution weight to ``in_channels`` bands.

    Args:
        weight: The RGB filters, shape ``(out, 3, kh, kw)``.
        in_channels: Band count of the data.
        scheme: ``"mean"`` (default): extra bands get ``mean(RGB filters) * 3 / in_channels``;
            ``"red_band"``: extra bands copy the red filter; ``"random"``: extra bands take
            ``random_weight``'s filters; ``"all_random"``: ``random_weight`` as a whole. For fewer
            than three bands every scheme but ``"all_random"`` gives each band
            ``mean(RGB filters) * 3 / in_channels``.
        random_weight: A randomly initialised weight ``(out, in_channels, kh, kw)``, needed by
            ``"random"`` and ``"all_random"``.

    Returns:
        The weight, shape ``(out, in_channels, kh, kw)``; bands 0-2 equal the RGB filters
        exactly when ``in_channels >= 3`` (except for ``"all_random"``).

    Raises:
        ParameterError: for an unknown scheme or a missing ``random_weight``.
    """
    scheme = scheme.lower()
    if scheme not in WEIGHT_INIT_SCHEMES:
        raise ParameterError(
            f"unknown weight init scheme '{scheme}'", f"use one of {', '.join(WEIGHT_INIT_SCHEMES)}"
        )
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ParameterError(f"expected RGB filters (out, 3, kh, kw), got {tuple(weight.shape)}")
    out, _, kh, kw = weight.shape
    if scheme in ("random", "all_random") and (
        random_weight is None or tuple(random_weight.shape) != (out, in_channels, kh, kw)
    ):
        raise ParameterError(f"scheme '{scheme}' needs a random weight of the target shape")
    if scheme == "all_random":
        return random_weight.detach().clone()  # type: ignore[union-attr]
    mean = weight.mean(dim=1, keepdim=True) * (3.0 / in_channels)
    if in_channels < 3:
        return mean.expand(out, in_channels, kh, kw).clone()
    extra = in_channels - 3
    if scheme == "red_band":
        rest = weight[:, :1].expand(out, extra, kh, kw)
    elif scheme == "random":
        rest = random_weight[:, 3:].detach()  # type: ignore[index]
    else:
        rest = mean.expand(out, extra, kh, kw)
    return torch.cat([weight, rest], dim=1).clone()


# --------------------------------------------------------------------------- encoders


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide ``channels`` (any channel count works)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def norm_layer(norm: str, eps: float = 1e-5) -> Callable[[int], nn.Module]:
    """A normalisation-layer factory: ``"batch"``, ``"frozen_batch"`` or ``"group"``.

    Raises:
        ParameterError: for another name.
    """
    if norm == "batch":
        return partial(nn.BatchNorm2d, eps=eps)
    if norm == "frozen_batch":
        return partial(FrozenBatchNorm2d, eps=eps)
    if norm == "group":
        return _group_norm
    raise ParameterError(f"unknown norm '{norm}'", f"use one of {', '.join(NORMS)}")


class Encoder(nn.Module):
    """A backbone body returning feature maps from fine to coarse.

    Attributes:
        name: Backbone name.
        in_channels: Band count.
        channels: Channels of each returned feature map.
        strides: Stride (input pixels per feature pixel) of each returned feature map.
        first_conv_key: ``state_dict`` key of the first convolution's weight.
    """

    name: str
    in_channels: int
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    first_conv_key: str

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        """Feature maps, one per entry of :attr:`strides`."""
        raise NotImplementedError

    def stages(self) -> list[list[nn.Module]]:  # pragma: no cover - abstract
        """The modules that compute each returned feature map, one list per stride."""
        raise NotImplementedError

    @property
    def first_conv(self) -> nn.Conv2d:
        """The first convolution (the one adapted to the band count)."""
        module = self.get_submodule(self.first_conv_key.removesuffix(".weight"))
        assert isinstance(module, nn.Conv2d)
        return module


class ResNetEncoder(Encoder):
    """torchvision ResNet without ``avgpool``/``fc``: features at the stem and each layer."""

    def __init__(self, resnet: torchvision.models.ResNet, name: str, dilation: tuple[bool, ...]):
        super().__init__()
        self.name = name
        self.conv1, self.bn1, self.relu, self.maxpool = (
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.maxpool,
        )
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
            resnet.layer4,
        )
        self.in_channels = self.conv1.in_channels
        expansion = 4 if isinstance(resnet.layer1[0], torchvision.models.resnet.Bottleneck) else 1
        self.channels = (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)
        strides = [2, 4]
        for dilate in dilation:
            strides.append(strides[-1] * (1 if dilate else 2))
        self.strides = tuple(strides)
        self.first_conv_key = "conv1.weight"

    def stages(self) -> list[list[nn.Module]]:
        """``[[conv1, bn1], [layer1], [layer2], [layer3], [layer4]]``."""
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features at strides 2, 4, 8, 16, 32 (less where dilated)."""
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c1, c2, c3, c4, c5]


def _downsamples(block: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in block.modules())


class MobileNetV3Encoder(Encoder):
    """torchvision MobileNetV3 ``features``: the output before each down-sampling block."""

    def __init__(self, mobilenet: torchvision.models.MobileNetV3, name: str):
        super().__init__()
        self.name = name
        self.features = mobilenet.features
        blocks = list(self.features)
        downs = [i for i, b in enumerate(blocks) if i > 0 and _downsamples(b)]
        self._stage_ends = tuple([i - 1 for i in downs] + [len(blocks) - 1])
        self.channels = tuple(int(blocks[i].out_channels) for i in self._stage_ends)
        self.strides = tuple(2 ** (k + 1) for k in range(len(self._stage_ends)))
        self.in_channels = self.features[0][0].in_channels
        self.first_conv_key = "features.0.0.weight"

    def stages(self) -> list[list[nn.Module]]:
        """The ``features`` blocks of each stage."""
        blocks = list(self.features)
        starts = [0, *[e + 1 for e in self._stage_ends[:-1]]]
        return [blocks[a : b + 1] for a, b in zip(starts, self._stage_ends, strict=True)]

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features at strides 2, 4, 8, 16, 32 (16 when built dilated)."""
        out = []
        ends = self._stage_ends
        for i, block in enumerate(self.features):
            x = block(x)
            if i in ends:
                out.append(x)
        return out


def _dilate_basic_blocks(net: torchvision.models.ResNet, dilate: tuple[bool, ...]) -> None:
    """Trade stride for dilation in ResNet18/34 layers (torchvision only does it for
    bottleneck ResNets), the way torchvision does: the first block of a dilated layer keeps the
    previous dilation in its first convolution and loses its stride."""
    dilation = 1
    for layer, flag in zip((net.layer2, net.layer3, net.layer4), dilate, strict=True):
        if not flag:
            continue
        previous, dilation = dilation, dilation * 2
        for i, block in enumerate(layer):
            for conv, d in (
                (block.conv1, previous if i == 0 else dilation),
                (block.conv2, dilation),
            ):
                conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
            block.stride = 1


def _new_first_conv(old: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        bias=old.bias is not None,
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def build_encoder(
    name: str,
    in_channels: int = 3,
    pretrained: str | os.PathLike[str] | None = None,
    norm: str = "batch",
    output_stride: int = 32,
    weight_init_scheme: str = "mean",
) -> Encoder:
    """Build a backbone body for any band count, optionally with pretrained weights.

    Args:
        name: One of :data:`BACKBONES` (case-insensitive, ``RESNET34`` works).
        in_channels: Band count of the data.
        pretrained: ``None`` (random initialisation), a weights file, or ``"torch-cache"``
            (torchvision's file in ``torch.hub.get_dir()/checkpoints``). The first convolution's
            RGB filters are mapped to the bands with :func:`adapt_first_conv_weight`.
        norm: ``"batch"``, ``"frozen_batch"`` (fixed statistics, for fine-tuning pretrained
            detectors) or ``"group"`` (from scratch at small batch sizes; not with pretrained
            weights, which hold batch-norm statistics).
        output_stride: 32; 16 or 8 dilate the last stages (ResNet 16 or 8, MobileNetV3 16).
        weight_init_scheme: See :func:`adapt_first_conv_weight`.

    Returns:
        The encoder, in training mode.

    Raises:
        ParameterError: for an unknown name, norm, output stride or band count, or group
            norm with pretrained weights.
        InputError: when pretrained weights are asked for but the file is missing or does not
            fit the backbone.
    """
    info = backbone_info(name)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ParameterError(f"in_channels must be a positive integer, got {in_channels!r}")
    if pretrained is not None and norm == "group":
        raise ParameterError(
            "group norm cannot use pretrained weights (they hold batch-norm statistics)",
            "use norm 'batch' or 'frozen_batch', or no pretrained backbone",
        )
    if info.family == "resnet":
        dilations = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}
        if output_stride not in dilations:
            raise ParameterError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        dilate = dilations[output_stride]
        basic = info.name in ("resnet18", "resnet34")
        net = getattr(torchvision.models, info.name)(
            weights=None,
            norm_layer=norm_layer(norm),
            replace_stride_with_dilation=[False] * 3 if basic else list(dilate),
        )
        if basic and any(dilate):
            _dilate_basic_blocks(net, dilate)
        net.conv1 = _new_first_conv(net.conv1, in_channels)
        encoder: Encoder = ResNetEncoder(net, info.name, dilations[output_stride])
    else:
        if output_stride not in (16, 32):
            raise ParameterError(f"output_stride must be 16 or 32 for {name}, got {output_stride}")
        net = getattr(torchvision.models, info.name)(
            weights=None, norm_layer=norm_layer(norm, eps=1e-3), dilated=output_stride == 16
        )
        first = net.features[0]
        first[0] = _new_first_conv(first[0], in_channels)
        encoder = MobileNetV3Encoder(net, info.name)
    if pretrained is not None:
        _load_into(encoder, info, pretrained, weight_init_scheme)
    return encoder


def _load_into(
    encoder: Encoder,
    info: BackboneInfo,
    pretrained: str | os.PathLike[str],
    scheme: str,
) -> None:
    state = load_backbone_weights(info.name, pretrained)
    own = encoder.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    key = encoder.first_conv_key
    rgb = state.get(key)
    if rgb is None or rgb.dim() != 4 or rgb.shape[1] != 3:
        raise InputError(
            f"weights file for {info.name} has no RGB first convolution '{key}'",
            f"pass torchvision's {info.weights_files[0]} or a file saved from it",
        )
    state[key] = adapt_first_conv_weight(
        rgb.to(own[key].dtype), encoder.in_channels, scheme, random_weight=own[key]
    )
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or wrong:
        bad = (missing or wrong)[:3]
        raise InputError(
            f"weights file does not fit {info.name}: "
            f"{'missing' if missing else 'wrong shape for'} {', '.join(bad)}"
            f"{' ...' if len(missing or wrong) > 3 else ''}",
            f"pass torchvision's {info.weights_files[0]} or a file saved from it",
        )
    encoder.load_state_dict(state, strict=False)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "BACKBONES",
    "NORMS",
    "TORCH_CACHE",
    "WEIGHT_INIT_SCHEMES",
    "BackboneInfo",
    "Encoder",
    "MobileNetV3Encoder",
    "ResNetEncoder",
    "adapt_first_conv_weight",
    "backbone_info",
    "build_encoder",
    "count_parameters",
    "load_backbone_weights",
    "norm_layer",
]
