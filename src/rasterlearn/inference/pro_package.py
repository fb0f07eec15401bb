"""The ArcGIS Pro side of a rasterlearn model folder: what makes its ``.dlpk`` run in Pro.

ArcGIS Pro cannot build rasterlearn's architectures from a ``.pth``. :func:`add_pro_function`
therefore writes beside the ``.emd``:

* ``<name>-cpu.pt``: a TorchScript copy of the model, traced as ``rasterlearn model export
  --format torchscript`` traces it (detectors without their own NMS, which the function
  applies with each run's ``nms_overlap``; instance models without their mask branch, as
  the function gives their boxes);
* ``RasterlearnFunction.py``: a self-contained Esri Python raster function
  (:mod:`rasterlearn.inference.pro_function`, numpy and torch only) that loads it;

and sets the ``.emd`` keys Pro's Classify Pixels, Detect Objects and Classify Objects tools
read: ``Framework`` ``PyTorch``, ``ModelConfiguration`` ``RasterlearnTorchScript``,
``InferenceFunction`` ``RasterlearnFunction.py`` and ``TorchScript`` ``{"CPU": ...}``, next to
``ModelType``, ``Classes``, ``ExtractBands``, ``ImageHeight``/``ImageWidth`` and the
normalisation keys it already has. ``ModelFile`` stays the ``.pth`` and ``RasterlearnVersion``
marks the model as rasterlearn's, so rasterlearn itself keeps running the PyTorch model
(:func:`rasterlearn.formats.emd.is_rasterlearn_model`).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from rasterlearn.errors import InputError
from rasterlearn.formats.emd import (
    RASTERLEARN_FUNCTION_FILE,
    ModelDefinition,
    is_rasterlearn_model,
)
from rasterlearn.inference import pro_function
from rasterlearn.inference.model_export import write_torchscript
from rasterlearn.models.trained import load_trained_model

PRO_FUNCTION_FILE = RASTERLEARN_FUNCTION_FILE
"""The raster function's file name (Pro instantiates the class of the same name)."""

PRO_FRAMEWORK = "PyTorch"
PRO_MODEL_CONFIGURATION = "RasterlearnTorchScript"


def pro_model_file(name: str) -> str:
    """The TorchScript copy's file name for a model named ``name``."""
    return f"{name}-cpu.pt"


def function_source() -> str:
    """The raster function's source, as written into packages."""
    return inspect.getsource(pro_function)


def add_pro_function(emd: str | Path) -> ModelDefinition:
    """Make a rasterlearn model folder run in ArcGIS Pro (see the module docstring).

    Args:
        emd: The ``.emd`` of a model trained by rasterlearn; its folder receives the files.

    Returns:
        The updated model definition (saved).

    Raises:
        InputError: for a model not trained by rasterlearn, or missing or damaged weights.
    """
    path = Path(emd)
    definition = ModelDefinition.load(path)
    if not is_rasterlearn_model(definition):
        raise InputError(
            f"{path.name} is not a model trained by rasterlearn (no RasterlearnVersion)",
            "only rasterlearn's own models get its ArcGIS Pro raster function",
        )
    script = path.parent / pro_model_file(path.stem)
    trained = load_trained_model(definition)
    heads = getattr(trained.model, "roi_heads", None)
    if heads is not None and heads.has_mask():
        # the function gives instance models' boxes: their copy leaves out the mask branch
        heads.mask_roi_pool = heads.mask_head = heads.mask_predictor = None
    write_torchscript(trained, script)
    (path.parent / PRO_FUNCTION_FILE).write_text(function_source(), encoding="utf-8")
    definition.set("Framework", PRO_FRAMEWORK)
    definition.set("ModelConfiguration", PRO_MODEL_CONFIGURATION)
    definition.set("InferenceFunction", PRO_FUNCTION_FILE)
    definition.set("TorchScript", {"CPU": script.name})
    definition.save(path)
    return definition
