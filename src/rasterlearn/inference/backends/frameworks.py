"""Models from other frameworks: which ``Framework`` and ``ModelConfiguration`` run, and how.

An ``.emd`` written for ArcGIS names the framework a model was trained with (``Framework``) and,
for Esri's built-in raster functions, a well-known model layout (``ModelConfiguration``, see
Esri/raster-deep-learning ``docs/writing_model_definition.md``). :func:`runnable_framework`
tells which run here (``open_predictor`` then opens them with their backend), and refuses the
others with one line saying why and what to do:

=============  =========================================  ======================================
Framework      ModelConfiguration                         runs with
=============  =========================================  ======================================
Keras          none, ``KerasClassifier``,                 Keras 3 (``rasterlearn[keras]``)
               ``ObjectDetectionAPI``
TensorFlow     ``ObjectDetectionAPI``, ``DeepLab``        TensorFlow (``rasterlearn[tensorflow]``)
ONNX           none, ``ObjectDetectionAPI``, ``DeepLab``  onnxruntime
=============  =========================================  ======================================

Keras MaskRCNN (Matterport), CNTK, and Esri's fastai ``PyTorch`` samples get one line each
(:data:`NOT_RUN`). Other frameworks (rasterlearn's own, arcgis.learn's) are not handled here.
The input and output conventions are those of
:mod:`~rasterlearn.inference.backends.conventions`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelConfigurationSpec, ModelDefinition

KERAS, TENSORFLOW, ONNX = "keras", "tensorflow", "onnx"

CONFIGURATIONS: dict[str, tuple[str | None, ...]] = {
    KERAS: (None, "KerasClassifier", "ObjectDetectionAPI"),
    TENSORFLOW: ("ObjectDetectionAPI", "DeepLab"),
    ONNX: (None, "ObjectDetectionAPI", "DeepLab"),
}
"""The ``ModelConfiguration`` values that run, per framework (None: the generic conventions)."""

NOT_RUN: dict[tuple[str, str | None], tuple[str, str]] = {
    ("keras", "maskrcnn"): (
        "Keras MaskRCNN (Matterport) is TensorFlow 1 code that Keras 3 cannot load",
        "run it through a Python raster function: put Esri's MaskRCNN.py and the mrcnn code "
        "beside the .emd, name it in InferenceFunction and install TensorFlow 1, as "
        "docs/backends.md says",
    ),
    ("cntk", None): (
        "CNTK models do not run here: CNTK is discontinued (its last wheels are for Python 3.7)",
        "export the model to ONNX with CNTK's Function.save(path, format=C.ModelFormat.ONNX) "
        "and set Framework ONNX",
    ),
    ("pytorch", "fastaissd"): (
        "Esri's FastaiSSD sample is a fastai 0.7 model that only Esri's PyTorch raster "
        "function can build",
        "run it through a Python raster function named in InferenceFunction, or export it to "
        "ONNX and set Framework ONNX",
    ),
    ("pytorch", "featureclassifier"): (
        "Esri's PyTorch FeatureClassifier sample is a fastai model that only Esri's PyTorch "
        "raster function can build",
        "run it through a Python raster function named in InferenceFunction, or export it to "
        "ONNX and set Framework ONNX",
    ),
}
"""Framework (lower case) and ModelConfiguration (lower case, None: any) that do not run:
what is wrong and what to do."""

EXTRAS = {KERAS: "keras", TENSORFLOW: "tensorflow"}
"""The optional dependency (``pip install rasterlearn[...]``) of each framework's runtime."""


def framework_of(definition: ModelDefinition) -> str:
    """The ``.emd``'s ``Framework`` in lower case (``""`` when absent)."""
    return str(definition.get("Framework") or "").strip().lower()


def configuration_of(definition: ModelDefinition) -> str | None:
    """The ``ModelConfiguration`` name (of the string or the ``{Name}`` object), or None."""
    value = definition.get("ModelConfiguration")
    if isinstance(value, ModelConfigurationSpec):
        value = value.name
    text = str(value or "").strip()
    return text or None


def known_configuration(definition: ModelDefinition, framework: str) -> str | None:
    """The configuration as :data:`CONFIGURATIONS` spells it.

    Raises:
        InputError: for a configuration the framework does not run here, naming those it runs.
    """
    given = configuration_of(definition)
    for name in CONFIGURATIONS[framework]:
        if (name or "").lower() == (given or "").lower():
            return name
    names = [name or "none" for name in CONFIGURATIONS[framework]]
    runs = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    label = definition.get("Framework")
    raise InputError(
        f"model definition {definition.path or ''} has Framework {label} with "
        f"ModelConfiguration {given!r}, which rasterlearn cannot run",
        f"{label} models run with ModelConfiguration {runs} as docs/backends.md describes, "
        "or through a Python raster function named in InferenceFunction",
    )


def refuse_unsupported(definition: ModelDefinition) -> None:
    """Raise the one line of :data:`NOT_RUN` for a framework/configuration that does not run.

    Raises:
        InputError: what is wrong and what to do.
    """
    framework = framework_of(definition)
    configuration = (configuration_of(definition) or "").lower() or None
    for key in ((framework, configuration), (framework, None)):
        if key in NOT_RUN:
            what, fix = NOT_RUN[key]
            where = definition.path.name if definition.path else "the model definition"
            raise InputError(f"{where}: {what}", fix)


def require_extra(framework: str) -> None:
    """Refuse, before anything is loaded, a model whose framework's runtime is not installed.

    Raises:
        InputError: naming the extra to install (``pip install rasterlearn[...]``).
    """
    if framework not in EXTRAS:
        return
    try:
        found = importlib.util.find_spec(framework) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or broken
        found = False
    if not found:
        raise InputError(
            f"this model needs {'Keras' if framework == KERAS else 'TensorFlow'}, "
            "which is not installed",
            f"pip install rasterlearn[{EXTRAS[framework]}]",
        )


def import_framework(framework: str) -> ModuleType:
    """Import a framework's runtime, quietly, or say which extra to install.

    Keras runs on its torch backend (``KERAS_BACKEND=torch`` unless set: without it, importing
    keras imports TensorFlow). TensorFlow's start-up log lines are silenced and its oneDNN
    rewrites switched off (``TF_CPP_MIN_LOG_LEVEL``, ``TF_ENABLE_ONEDNN_OPTS``, unless set:
    TensorFlow warns that they change round-off); Keras reads ``.h5`` files and
    saves models with TensorFlow's help when it is installed, so this applies to Keras too.

    Raises:
        InputError: when the runtime is not installed, naming the extra to install.
    """
    require_extra(framework)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if framework == KERAS:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        return importlib.import_module(framework)
    except ImportError as err:
        raise InputError(
            f"cannot import {framework}: {err}",
            f"pip install --force-reinstall rasterlearn[{EXTRAS[framework]}]",
        ) from None


def runnable_framework(definition: ModelDefinition) -> str | None:
    """The framework (:data:`KERAS`, :data:`TENSORFLOW`, :data:`ONNX`) whose backend runs the
    model, checked before any runtime loads; None for other frameworks (rasterlearn's own,
    arcgis.learn's: the caller picks their backend).

    Raises:
        InputError: for a framework or configuration that does not run here (one line: why,
            and what to do), or a missing runtime (the extra to install).
    """
    refuse_unsupported(definition)
    framework = framework_of(definition)
    if framework not in CONFIGURATIONS:
        return None
    known_configuration(definition, framework)
    require_extra(framework)
    return framework
