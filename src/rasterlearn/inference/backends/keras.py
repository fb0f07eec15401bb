"""The Keras backend: ``.keras`` and legacy ``.h5`` models (``Framework`` ``Keras``).

Models load with Keras 3 (``pip install rasterlearn[keras]``) on its torch backend, unless
``KERAS_BACKEND`` names another (see
:func:`~rasterlearn.inference.backends.frameworks.import_framework`); they run with the
conventions of :mod:`~rasterlearn.inference.backends.conventions`: channels-last unless the
model's input shape says otherwise, normalised per the ``.emd`` (``KerasClassifier``: raw
pixels, chips resized to the model's input size), outputs read by task.

Trust: models load in Keras's safe mode (its default), which refuses to deserialise the Python
code of ``Lambda`` layers; still, load only models from sources you trust.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.backends.conventions import ExternalPredictor
from rasterlearn.inference.backends.frameworks import KERAS, import_framework
from rasterlearn.inference.backends.pytorch import model_file
from rasterlearn.inference.predictors import use_all_cpu_threads

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


class KerasPredictor(ExternalPredictor):
    """A Keras model (``.keras``/``.h5``) run with the conventions of its configuration.

    Args:
        definition: The model definition; its ``ModelFile`` is the Keras file.
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.

    Raises:
        InputError: when Keras is not installed (naming the extra), or the file is missing,
            not a Keras model, or has other than one input.
    """

    framework = KERAS

    def _load(self, definition: ModelDefinition) -> None:
        path = model_file(definition, "Keras")
        if path.suffix.lower() not in KERAS_SUFFIXES:
            raise InputError(
                f"Keras model file {path} is not a .keras or .h5 file",
                "save the model with model.save('name.keras') and name it in ModelFile",
            )
        keras = import_framework(KERAS)
        if self.device.type == "cpu":
            use_all_cpu_threads()
        self._keras = keras
        self._device = "cpu" if self.device.type == "cpu" else f"cuda:{self.device.index or 0}"
        try:
            with warnings.catch_warnings(), keras.device(self._device):
                warnings.simplefilter("ignore")  # Keras warns about legacy .h5 and numpy copies
                self.model = keras.saving.load_model(str(path), compile=False)
        except Exception as err:  # Keras raises many kinds for a file it cannot read
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"cannot load Keras model {path}: {first[:200]}",
                "give a model saved by Keras (model.save('name.keras') or 'name.h5')",
            ) from None
        inputs = self.model.inputs
        if len(inputs) != 1:
            raise InputError(
                f"Keras model {path} has {len(inputs)} inputs, expected one image input",
                "give a model with a single image input",
            )
        self.input_shape = tuple(None if d is None else int(d) for d in inputs[0].shape)
        self.input_dtype = np.dtype(str(inputs[0].dtype))
        self.output_names = list(self.model.output_names)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with warnings.catch_warnings(), self._keras.device(self._device):
            warnings.simplefilter("ignore")
            out: Any = self.model.predict_on_batch(batch)
        convert = self._keras.ops.convert_to_numpy
        if isinstance(out, dict):
            return {str(k): np.asarray(convert(v)) for k, v in out.items()}
        if isinstance(out, list | tuple):
            return {n: np.asarray(convert(v)) for n, v in zip(self.output_names, out, strict=True)}
        return {self.output_names[0]: np.asarray(convert(out))}
