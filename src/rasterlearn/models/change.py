"""Change detection: a Siamese U-Net that compares the features of two dates.

One encoder (shared weights) reads the "before" and the "after" image; at every scale the
decoder sees the signed difference of their features (after minus before), so it can tell what
appeared from what went away; its last block sees the difference of the images themselves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rasterlearn.models.backbones import Encoder
from rasterlearn.models.segmentation import LEGACY_UNET_DECODER_CHANNELS, UNet


class ChangeDetector(UNet):
    """Siamese U-Net over an image pair given as one ``(N, 2 x bands, H, W)`` tensor.

    The first half of the channels is the "before" image, the second half the "after" image
    (the order :class:`~rasterlearn.data.datasets.ChangeDataset` and the inference engine
    stack them in). The output is ``(N, K + 1, H, W)`` change-class logits, 0 = no change.

    Args:
        encoder: The backbone body, built for the bands of one image.
        num_classes: Number of change classes K.
        decoder_channels: Channels of the five decoder blocks (stride 16, 8, 4, 2, 1); the
            wider ones the change benchmark was measured with by default.
    """

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int,
        decoder_channels: tuple[int, ...] = LEGACY_UNET_DECODER_CHANNELS,
    ) -> None:
        super().__init__(encoder, num_classes, decoder_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, K + 1, H, W)`` for image pairs ``(N, 2 x bands, H, W)``."""
        before, after = torch.chunk(x, 2, dim=1)
        n = x.shape[0]
        # both dates in one pass: the same weights, and batch statistics over both
        feats = self.encoder(torch.cat([before, after]))
        diffs = [f[n:] - f[:n] for f in feats]
        skips = [*reversed(diffs[:-1]), after - before]
        y = diffs[-1]
        for block, skip in zip(self.decoder, skips, strict=True):
            y = block(y, skip)
        return self.head(y)


__all__ = ["ChangeDetector"]
