"""Image (chip) classifiers for FEATURE_CLASSIFIER: an encoder, global pooling, a linear layer."""

from __future__ import annotations

from torch import Tensor, nn

from rasterlearn.models.backbones import Encoder


class FeatureClassifier(nn.Module):
    """Classify a chip: ``(N, C, H, W)`` images to ``(N, K)`` logits.

    Single-label training uses softmax cross-entropy on the logits; multi-label training
    (``MultiLabeled_Tiles``) uses a sigmoid per class (binary cross-entropy). The model is the
    same; :attr:`multi_label` tells the trainer and the predictor which one applies.

    Args:
        encoder: The backbone body (its last feature map is pooled).
        num_classes: Number of classes K.
        multi_label: Several classes may apply to one chip.
        dropout: Dropout probability before the linear layer.
    """

    def __init__(
        self, encoder: Encoder, num_classes: int, multi_label: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.multi_label = multi_label
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(encoder.channels[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, K)``."""
        feat = self.encoder(x)[-1]
        return self.fc(self.dropout(self.pool(feat).flatten(1)))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Class probabilities: sigmoid per class when multi-label, else softmax."""
        return logits.sigmoid() if self.multi_label else logits.softmax(dim=1)


__all__ = ["FeatureClassifier"]
