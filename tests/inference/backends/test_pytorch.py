"""The PyTorch backend: pixel batches on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.backends.decoding import pixel_probabilities


def test_cpu_pixel_batch_of_large_tiles_runs_tile_by_tile_and_equals_the_batched_pass(models):
    predictor = open_predictor(models.unet, "cpu")
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (4, 3, 256, 256)).astype(np.uint8)
    valid = np.ones((4, 256, 256), bool)
    valid[2, :10] = False

    probabilities = predictor.predict_pixels(tiles, valid)

    for i in range(4):  # a 256 px tile's result does not depend on the batch it came in
        alone = predictor.predict_pixels(tiles[i : i + 1], valid[i : i + 1])
        np.testing.assert_array_equal(probabilities[i : i + 1], alone)
    with torch.inference_mode():
        batched = pixel_probabilities(predictor._pass(predictor._inputs(tiles, valid)))
    np.testing.assert_allclose(probabilities, batched, atol=1e-5)
