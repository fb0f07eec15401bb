"""Inference: tiling engine, predictors, merging of tiled predictions, non-maximum suppression."""
