"""The arcgis.learn backend: models trained with arcgis.learn, run without arcgis.learn or fastai.

A model folder or ``.dlpk`` saved by arcgis.learn (ArcGIS Pro's Train Deep Learning Model
tool writes the same) has ``Framework`` ``arcgis.learn.models._inferencing``; its Python
raster function imports arcgis.learn, so it cannot run here. Where arcgis.learn builds the
network from torchvision, the network is rebuilt here exactly as arcgis.learn builds it for
inference, its ``.pth`` is loaded (``weights_only``; fastai's bare state dict or
``{"model": state_dict, "opt": ...}``) and it is fed and decoded as arcgis.learn's inference
code does (reference §4.5-4.6, read in arcgis.learn's public source):

* **FasterRCNN** (``ModelConfiguration`` ``_model_extension_inferencing``, class
  ``MyFasterRCNN``): torchvision's ``fasterrcnn_resnet50_fpn`` (backbone ``resnet50``) or
  ``FasterRCNN`` on ``resnet_fpn_backbone`` (``resnet101``, ``resnet152``), with
  ``min_size = 1.5 x`` and ``max_size = 2 x`` the chip size (the model's own transform
  enlarges tiles 1.5 times and maps boxes back), ``Kwargs`` passed to torchvision, and a box
  predictor for background + the classes. Input: 8-bit RGB pixels / 255 (the model's
  transform applies ImageNet's statistics); multispectral models (``NormalizationStats``):
  min-max scaling then the scaled statistics, with the transform's mean 0 and std 1. The
  score threshold is ``threshold`` and the box NMS ``nms_overlap``.
* **MaskRCNN** (``_maskrcnn_inferencing``): ``maskrcnn_resnet50_fpn`` or ``MaskRCNN`` on
  ``resnet_fpn_backbone``, sized the same way from the tile size, ``MaskRCNNkwargs`` passed to
  torchvision. Input: pixels / 255; multispectral: min-max scaling only, the transform then
  standardises with the scaled statistics. The score threshold is ``threshold``; the box NMS
  stays the model's (``box_nms_thresh``, 0.5).

Both: class index 0 is background and index i the i-th entry of the ``.emd``'s ``Classes``;
multispectral models have a first convolution of ``len(ExtractBands)`` bands.

Every other arcgis.learn model (UnetClassifier, SingleShotDetector, RetinaNet, YOLOv3,
FeatureClassifier, ...) builds fastai or arcgis.learn code of its own; it is refused in one
line naming what runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from rasterlearn.errors import InputError
from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.inference.backends.pytorch import TorchPredictor
from rasterlearn.models.trained import read_weights

MODEL_TYPES = {"FasterRCNN": "ObjectDetection", "MaskRCNN": "InstanceDetection"}
"""The arcgis.learn models that run here, and their ``ModelType``."""

BACKBONES = ("resnet50", "resnet101", "resnet152")
"""The backbones they run with (torchvision's ResNet with a feature pyramid)."""

_CONFIGURATIONS = {"_maskrcnn_inferencing": "MaskRCNN", "MyFasterRCNN": "FasterRCNN"}
"""ModelName of old ``.emd`` files without one, by ModelConfiguration or configuration class."""

_SCALE_MIN, _SCALE_MAX = 1.5, 2.0
"""arcgis.learn builds its R-CNNs with ``min_size = 1.5 x`` and ``max_size = 2 x`` the chip."""


def model_name(definition: ModelDefinition) -> str:
    """The arcgis.learn model class of a definition (``ModelName``, else from its configuration)."""
    name = str(definition.get("ModelName") or "")
    if name:
        return name
    for key in ("ModelFileConfigurationClass", "ModelConfiguration"):
        found = _CONFIGURATIONS.get(str(definition.get(key) or ""))
        if found:
            return found
    return str(definition.get("ModelConfiguration") or "unnamed")


def runnable(definition: ModelDefinition) -> tuple[str, str]:
    """The model name and backbone of an arcgis.learn model that runs here.

    Raises:
        InputError: one line naming the model and what runs, for any other model or backbone.
    """
    name = model_name(definition)
    what_runs = f"{' and '.join(MODEL_TYPES)} with a {', '.join(BACKBONES)} backbone"
    if name not in MODEL_TYPES:
        raise InputError(
            f"arcgis.learn model {name} cannot run in rasterlearn: of arcgis.learn's models, "
            f"rasterlearn runs {what_runs}",
            "run it in ArcGIS Pro, or train a rasterlearn model on the same training data",
        )
    params = definition.get("ModelParameters") or {}
    backbone = str(params.get("backbone") or "resnet50").lower()
    if backbone not in BACKBONES:
        raise InputError(
            f"arcgis.learn {name} with backbone {backbone} cannot run in rasterlearn: it runs "
            f"{what_runs}",
            "run it in ArcGIS Pro, or train it again with a resnet50 backbone",
        )
    if name == "MaskRCNN" and params.get("pointrend"):
        raise InputError(
            "arcgis.learn MaskRCNN with PointRend cannot run in rasterlearn: it runs MaskRCNN "
            "without PointRend",
            "run it in ArcGIS Pro, or train it again with pointrend=False",
        )
    return name, backbone


def _constructor_kwargs(cls: type, given: Any) -> dict[str, Any]:
    """The ``.emd``'s keyword arguments that the torchvision class takes (as arcgis.learn
    splits them), without those fixed here."""
    accepted = set(inspect.signature(cls.__init__).parameters)
    fixed = {"self", "backbone", "num_classes", "min_size", "max_size", "image_mean", "image_std"}
    if not isinstance(given, Mapping):
        return {}
    return {k: v for k, v in given.items() if k in accepted - fixed}


def _bands(definition: ModelDefinition) -> list[int]:
    bands = definition.get("ExtractBands") or [0, 1, 2]
    return [int(b) for b in bands] if all(isinstance(b, int) for b in bands) else [0, 1, 2]


def is_multispectral(definition: ModelDefinition) -> bool:
    """Whether arcgis.learn fed the model min-max scaled pixels (``NormalizationStats``)."""
    return definition.get("NormalizationStats") is not None


def build_network(definition: ModelDefinition) -> nn.Module:
    """The torchvision network arcgis.learn builds for inference (random weights, eval mode).

    Raises:
        InputError: for a model or backbone that does not run here.
    """
    name, backbone = runnable(definition)
    classes = len(definition.get("Classes") or [])
    chip = int(definition.get("ImageHeight") or 224)
    bands = _bands(definition)
    cls = MaskRCNN if name == "MaskRCNN" else FasterRCNN
    key = "MaskRCNNkwargs" if name == "MaskRCNN" else "Kwargs"
    kwargs = _constructor_kwargs(cls, definition.get(key))
    sizes = {"min_size": _SCALE_MIN * chip, "max_size": _SCALE_MAX * chip}
    if backbone == "resnet50":
        builder = (
            torchvision.models.detection.maskrcnn_resnet50_fpn
            if name == "MaskRCNN"
            else torchvision.models.detection.fasterrcnn_resnet50_fpn
        )
        model = builder(
            weights=None, weights_backbone=None, num_classes=classes + 1, **sizes, **kwargs
        )
    else:
        body = resnet_fpn_backbone(backbone_name=backbone, weights=None)
        model = cls(body, classes + 1, **sizes, **kwargs)
    if is_multispectral(definition) or len(bands) != 3:
        old = model.backbone.body.conv1
        model.backbone.body.conv1 = nn.Conv2d(
            len(bands), old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
    if is_multispectral(definition):
        stats = definition.get("NormalizationStats").to_dict()
        if name == "MaskRCNN":
            mean = [float(stats["scaled_mean_values"][b]) for b in bands]
            std = [float(stats["scaled_std_values"][b]) for b in bands]
        else:
            mean, std = [0.0] * len(bands), [1.0] * len(bands)
        model.transform.image_mean, model.transform.image_std = mean, std
    return model.eval()


def load_network(definition: ModelDefinition) -> nn.Module:
    """The network with the weights of the ``.emd``'s ``ModelFile``.

    Raises:
        InputError: for a missing or damaged ``.pth`` or weights of another layout.
    """
    model = build_network(definition)
    path = definition.resolve("ModelFile")
    if path is None:
        raise InputError(
            f"model definition {definition.path or ''} names no ModelFile",
            "give the .pth saved by arcgis.learn in the .emd's ModelFile",
        )
    state = read_weights(path)
    own = model.state_dict()
    # arcgis.learn trains with frozen batch norm (no counters) and predicts with batch norm
    state = {k: v for k, v in state.items() if k in own or not k.endswith("num_batches_tracked")}
    state.update({k: v for k, v in own.items() if k.endswith("num_batches_tracked")})
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        detail = str(err).strip().splitlines()[1].strip() if "\n" in str(err).strip() else ""
        raise InputError(
            f"weights {path.name} do not fit arcgis.learn's {model_name(definition)} as its "
            f".emd describes it: {first} {detail}".strip(),
            "keep the .pth and .emd that arcgis.learn saved together",
        ) from None
    return model.eval()


class ArcGISLearnPredictor(TorchPredictor):
    """An arcgis.learn FasterRCNN or MaskRCNN (``.emd`` + ``.pth``) on the CPU or a GPU.

    Args:
        definition: The model definition (``Framework`` ``arcgis.learn.models._inferencing``).
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.

    Raises:
        InputError: for a model that does not run here (one line naming what runs) or
            missing or damaged weights.
    """

    def __init__(self, definition: ModelDefinition, device: str | None = None) -> None:
        name, _ = runnable(definition)
        if not definition.get("ModelType"):  # older arcgis.learn versions wrote none
            definition.set("ModelType", MODEL_TYPES[name])
        self.name = name
        super().__init__(definition, device)

    def _load(self, definition: ModelDefinition) -> None:
        self.model = load_network(definition).to(self.device)
        self.multi_label = False
        self.normalizer = None
        bands = _bands(definition)
        stats = definition.get("NormalizationStats")
        self._scaling: tuple[torch.Tensor, ...] | None = None
        if stats is not None:
            raw = stats.to_dict()
            vectors = [
                np.asarray(raw[k], dtype=np.float32)[bands].reshape(-1, 1, 1)
                for k in (
                    "band_min_values",
                    "band_max_values",
                    "scaled_mean_values",
                    "scaled_std_values",
                )
            ]
            self._scaling = tuple(torch.from_numpy(v).to(self.device) for v in vectors)

    def _inputs(self, tiles: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device)
        x = x[:, self.info.extract_bands].float()
        mask = torch.from_numpy(np.ascontiguousarray(valid)).to(self.device)
        x = torch.where(mask[:, None], x, torch.zeros((), device=self.device))
        if self._scaling is None:
            return x / 255.0
        low, high, mean, std = self._scaling
        scaled = (x - low) / (high - low)
        return scaled if self.name == "MaskRCNN" else (scaled - mean) / std

    def _forward(self, x: torch.Tensor) -> Any:
        # arcgis.learn builds the network for the tile size it predicts on (variable tiles)
        height, width = x.shape[-2:]
        self.model.transform.min_size = (_SCALE_MIN * min(height, width),)
        self.model.transform.max_size = _SCALE_MAX * max(height, width)
        return super()._forward(x)

    def _configure_postprocess(self, threshold: float, nms_overlap: float) -> None:
        heads = self.model.roi_heads
        heads.score_thresh = threshold
        if self.name == "FasterRCNN":  # arcgis.learn's MaskRCNN keeps its own box NMS
            heads.nms_thresh = nms_overlap
