"""The model backends, and :func:`open_predictor`, which picks one from the model definition.

Each backend implements :class:`~rasterlearn.inference.predictors.Predictor`:

* :mod:`.pytorch`: models trained by rasterlearn (``.pth``);
* :mod:`.torchscript` and :mod:`.onnx`: the same pre- and post-processing around another
  runtime's forward pass;
* :mod:`.raster_function`: custom inference functions (Esri Python raster functions);
* :mod:`.keras`, :mod:`.tensorflow`, and :mod:`.onnx` for ``Framework`` ``ONNX``: models
  trained elsewhere (:mod:`.frameworks` says which run; :mod:`.conventions` how);
* :mod:`.arcgis_learn`: models trained with arcgis.learn whose network torchvision builds;

with the output decoding they share in :mod:`.decoding`. The backends never import this
package's ``__init__``; it imports them only when a model needs them, so opening an ONNX model
does not import the others' runtimes.
"""

from __future__ import annotations

from pathlib import Path

from rasterlearn.formats.emd import (
    ARCGIS_LEARN_FRAMEWORK,
    ModelDefinition,
    is_rasterlearn_model,
)
from rasterlearn.formats.model_source import load_model_definition
from rasterlearn.inference.backends.frameworks import KERAS, ONNX, TENSORFLOW, runnable_framework
from rasterlearn.inference.predictors import Predictor


def open_predictor(model: str | Path | dict, device: str | None = None) -> Predictor:
    """Open a model for inference from an ``.emd`` path, a ``.dlpk``, a folder or JSON.

    The backend follows the definition: an arcgis.learn model (its ``Framework``) is rebuilt
    from torchvision; a custom ``InferenceFunction`` ``.py`` file runs through the Python
    raster function protocol (except in rasterlearn's own models, whose function is for
    ArcGIS Pro); a ``Framework`` of Keras, TensorFlow or ONNX with that framework
    (:func:`~.frameworks.runnable_framework`); a ``ModelFile`` ending ``.onnx`` through
    onnxruntime; ``.pt``/``.ts`` as TorchScript; anything else is a rasterlearn PyTorch model.

    Args:
        model: The model definition.
        device: ``cpu``, ``cuda``, ``cuda:N``; default the GPU when there is one.

    Raises:
        InputError: for missing or damaged model files.
    """
    definition = load_model_definition(model)
    if str(definition.get("Framework") or "").strip() == ARCGIS_LEARN_FRAMEWORK:
        from rasterlearn.inference.backends.arcgis_learn import ArcGISLearnPredictor

        return ArcGISLearnPredictor(definition, device)
    function = str(definition.get("InferenceFunction") or "")
    custom = function.lower().endswith(".py") and not function.startswith("[Functions]")
    ours = is_rasterlearn_model(definition)
    if custom and not ours:
        from rasterlearn.inference.backends.raster_function import RasterFunctionPredictor

        return RasterFunctionPredictor(definition, device)
    framework = None if ours else runnable_framework(definition)
    if framework is not None:
        return _other_framework(framework, definition, device)
    model_file = str(definition.get("ModelFile") or "")
    suffix = Path(model_file).suffix.lower()
    if suffix == ".onnx":
        from rasterlearn.inference.backends.onnx import OnnxPredictor

        return OnnxPredictor(definition, device)
    if suffix in (".pt", ".ts", ".torchscript"):
        from rasterlearn.inference.backends.torchscript import TorchScriptPredictor

        return TorchScriptPredictor(definition, device)
    from rasterlearn.inference.backends.pytorch import TorchPredictor

    return TorchPredictor(definition, device)


def _other_framework(framework: str, definition: ModelDefinition, device: str | None) -> Predictor:
    """The predictor of a model trained with Keras, TensorFlow, or exported to ONNX elsewhere."""
    if framework == KERAS:
        from rasterlearn.inference.backends.keras import KerasPredictor

        return KerasPredictor(definition, device)
    if framework == TENSORFLOW:
        from rasterlearn.inference.backends.tensorflow import TensorFlowPredictor

        return TensorFlowPredictor(definition, device)
    assert framework == ONNX
    from rasterlearn.inference.backends.onnx import ExternalOnnxPredictor

    return ExternalOnnxPredictor(definition, device)
