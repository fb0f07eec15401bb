"""One training run: settings -> prepared data and model -> fit -> model folder."""

from __future__ import annotations

import shutil

from rasterlearn.training.fit import fit
from rasterlearn.training.model_folder import TrainResult, write_model_folder
from rasterlearn.training.settings import TrainingSettings
from rasterlearn.training.setup import prepare_training


def train(settings: TrainingSettings) -> TrainResult | None:
    """Train a model as ``settings`` say and write its model folder.

    Checkpoints live in ``settings.checkpoints`` while training runs: a fresh run starts
    without them, ``resume`` continues from them, and they are removed once the model folder
    is written.

    Returns:
        What was trained and written (None in the other processes of a distributed run).

    Raises:
        RasterLearnError: for data and parameters the user must fix.
    """
    if not settings.resume:
        shutil.rmtree(settings.checkpoints, ignore_errors=True)
    setup = prepare_training(settings)
    fitted = fit(settings, setup)
    if fitted is None:
        return None
    result = write_model_folder(settings, setup, fitted)
    shutil.rmtree(settings.checkpoints, ignore_errors=True)
    return result
