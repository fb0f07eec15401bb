"""Warnings for models whose validation metrics say they learned (almost) nothing."""

from __future__ import annotations

import numpy as np

from rasterlearn.training.quality import quality_warnings


def test_a_detector_with_near_zero_ap_is_reported():
    (line,) = quality_warnings("detection", {"average_precision": 0.03}, None, ["tree"])
    assert line.startswith("validation average precision is 0.030")
    assert "--max-epochs" in line and "--learning-rate" in line and "labels" in line
    assert quality_warnings("instance", {"average_precision": 0.45}, None, ["tree"]) == []


def test_a_pixel_classifier_no_better_than_its_majority_class_is_reported():
    # truth rows: 90 NoData pixels, 10 tree pixels; everything predicted NoData
    confusion = np.array([[90, 0], [10, 0]])
    (line,) = quality_warnings("pixel", {"accuracy": 0.90}, confusion, ["NoData", "tree"])
    assert "no better than predicting NoData everywhere (0.900)" in line
    learned = np.array([[88, 2], [1, 9]])
    assert quality_warnings("pixel", {"accuracy": 0.97}, learned, ["NoData", "tree"]) == []


def test_chip_classifiers():
    confusion = np.array([[5, 5], [5, 5]])
    (line,) = quality_warnings("classification", {"accuracy": 0.5}, confusion, ["a", "b"])
    assert "for every chip" in line
    # multi-label: accuracy is the F1 score, there is no confusion matrix
    assert quality_warnings("classification", {"accuracy": 0.02}, None, ["a", "b"])
    assert quality_warnings("classification", {"accuracy": 0.6}, None, ["a", "b"]) == []
