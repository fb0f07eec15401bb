"""The output decoding the PyTorch, TorchScript and ONNX backends share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.backends.decoding import (
    class_probabilities,
    detection_dict,
    is_multi_label,
    pixel_probabilities,
    suppress,
    tile_detections,
)


def test_probabilities_sum_to_one_or_are_per_class() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert pixel_probabilities(logits[..., None, None]).sum(axis=1) == pytest.approx(1.0)
    assert class_probabilities(logits, multi_label=False).sum() == pytest.approx(1.0)
    sigmoid = class_probabilities(logits, multi_label=True)
    assert sigmoid == pytest.approx(torch.sigmoid(logits).numpy())


def test_multi_label_from_model_parameters_or_metadata() -> None:
    assert is_multi_label(ModelDefinition.load({"ModelParameters": {"multi_label": True}}), False)
    assert is_multi_label(ModelDefinition.load({"MetaDataMode": "MultiLabeled_Tiles"}), False)
    assert not is_multi_label(ModelDefinition.load({}), False)


def test_detection_outputs_are_recognised_by_name_or_shape() -> None:
    boxes = np.array([[[0, 0, 4, 4], [1, 1, 5, 5]]], dtype=np.float32)  # batch of one
    scores = np.array([0.9, 0.4], dtype=np.float32)
    labels = np.array([1, 2], dtype=np.int64)
    named = detection_dict([boxes, scores, labels], ["boxes", "scores", "labels"])
    unnamed = detection_dict([labels, boxes, scores])
    for out in (named, unnamed):
        assert out["boxes"].shape == (2, 4) and out["labels"].tolist() == [1, 2]
    with pytest.raises(InputError, match="lack scores"):
        detection_dict({"boxes": boxes, "labels": labels})


def test_suppression_then_tile_detections_with_class_values() -> None:
    found = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]),
        "scores": torch.tensor([0.9, 0.8, 0.3]),
        "labels": torch.tensor([1, 1, 2]),
    }
    kept = suppress(found, nms_overlap=0.5)
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.3])
    dets = tile_detections(kept, np.array([10, 20]), threshold=0.5, with_masks=False)
    assert dets.classes.tolist() == [10] and dets.shapes is None
