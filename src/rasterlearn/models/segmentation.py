"""Pixel classification models: a ResNet/MobileNetV3-encoder U-Net and torchvision DeepLabV3.

Both map ``(N, C, H, W)`` float images to ``(N, K + 1, H, W)`` logits at the input resolution
(class index 0 is background / NoData). H and W need not be multiples of 32.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPPPooling, DeepLabHead, DeepLabV3

from rasterlearn.models.backbones import Encoder

UNET_DECODER_CHANNELS = (256, 128, 64, 32, 32)
"""Output channels of the U-Net decoder blocks, from stride 16 up to stride 1: the field's
standard widths (segmentation_models_pytorch's U-Net) but 32 channels at full resolution, where
16 lost a tenth of a point of held-out pixel accuracy (benchmarks/train_quality.py)."""

LEGACY_UNET_DECODER_CHANNELS = (256, 128, 64, 64, 32)
"""The widths of models whose ``.emd`` does not record them (trained before it did): 1.5x the
compute of :data:`UNET_DECODER_CHANNELS`, read so that those models still load."""


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class _UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate it, then two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv_bn_relu(cin + cskip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """U-Net on an :class:`~rasterlearn.models.backbones.Encoder` (ResNet or MobileNetV3).

    The decoder climbs the encoder's five feature maps (strides 32 to 2) with skip connections,
    and a last block at full resolution concatenates the input image itself, so thin
    structures survive; a 1x1 convolution gives the class logits.

    Args:
        encoder: The backbone body (five feature maps, strides 2-32).
        num_classes: Number of classes K; the output has K + 1 channels.
        decoder_channels: Channels of the five decoder blocks (stride 16, 8, 4, 2, 1).
    """

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int,
        decoder_channels: tuple[int, ...] = UNET_DECODER_CHANNELS,
    ) -> None:
        super().__init__()
        if len(encoder.channels) != 5 or len(decoder_channels) != 5:
            raise ValueError("UNet needs an encoder with five feature maps and five decoder widths")
        self.encoder = encoder
        self.decoder_channels = tuple(decoder_channels)
        skips = [*reversed(encoder.channels[:-1]), encoder.in_channels]
        blocks = []
        cin = encoder.channels[-1]
        for cskip, cout in zip(skips, decoder_channels, strict=True):
            blocks.append(_UpBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, num_classes + 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, K + 1, H, W)`` for images ``(N, C, H, W)``."""
        feats = self.encoder(x)
        skips = [*reversed(feats[:-1]), x]
        y = feats[-1]
        for block, skip in zip(self.decoder, skips, strict=True):
            y = block(y, skip)
        return self.head(y)


class _LastFeature(nn.Module):
    """Adapts an encoder to DeepLabV3's backbone contract: ``{"out": last feature map}``."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return OrderedDict(out=self.encoder(x)[-1])


class DeepLab(DeepLabV3):
    """torchvision DeepLabV3 (ASPP head) whose ``forward`` returns the logits tensor.

    The image-pooling branch of ASPP uses GroupNorm instead of BatchNorm so that a training
    batch of one image works (BatchNorm over a 1x1 map of one image is undefined).

    Args:
        encoder: A dilated backbone body (output stride 8 or 16).
        num_classes: Number of classes K; the output has K + 1 channels.
    """

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        head = DeepLabHead(encoder.channels[-1], num_classes + 1)
        for module in head.modules():
            if isinstance(module, ASPPPooling):
                channels = module[1].out_channels
                module[2] = nn.GroupNorm(32, channels)
        super().__init__(_LastFeature(encoder), head, aux_classifier=None)

    @property
    def encoder(self) -> Encoder:
        """The backbone body."""
        return self.backbone.encoder

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Logits ``(N, K + 1, H, W)`` for images ``(N, C, H, W)``."""
        return super().forward(x)["out"]


__all__ = ["UNET_DECODER_CHANNELS", "DeepLab", "UNet"]
