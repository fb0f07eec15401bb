"""Training data for the models: merged export folders, normalisation, augmentation, datasets.

Unlike ``geo/`` and ``formats/``, this layer uses torch.
"""

from rasterlearn.data.augment import (
    Augmenter,
    RandomTransform,
    Sample,
    parse_augmentation_parameters,
)
from rasterlearn.data.datasets import (
    ClassificationDataset,
    DetectionDataset,
    SegmentationDataset,
    collate_detection,
)
from rasterlearn.data.merge import TrainingData
from rasterlearn.data.normalization import NormalizationStats, Normalizer, uses_imagenet_stats

__all__ = [
    "Augmenter",
    "ClassificationDataset",
    "DetectionDataset",
    "NormalizationStats",
    "Normalizer",
    "RandomTransform",
    "Sample",
    "SegmentationDataset",
    "TrainingData",
    "collate_detection",
    "parse_augmentation_parameters",
    "uses_imagenet_stats",
]
