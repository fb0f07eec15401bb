"""rasterlearn's Python raster function for ArcGIS Pro (``RasterlearnFunction.py`` in a .dlpk).

Every model package rasterlearn writes carries this file, a TorchScript copy of the model and
the ``.emd`` keys that make ArcGIS Pro's Classify Pixels, Detect Objects and Classify Objects
Using Deep Learning tools run it (``Framework`` ``PyTorch``, ``InferenceFunction``
``RasterlearnFunction.py``, ``TorchScript`` ``{"CPU": "<name>-cpu.pt"}``). Pro instantiates
:class:`RasterlearnFunction` and calls it through the Python raster function protocol:
``initialize``, ``getParameterInfo``, ``getConfiguration``, then ``updateRasterInfo`` and
``updatePixels`` per block (pixel classification) or ``getFields``, ``getGeometryType`` and
``vectorize`` per block (object detection) or per batch of chips (object classification).

The file is self-contained: it imports numpy and torch, never rasterlearn (a detector's
TorchScript graph calls torchvision's compiled operators, so detectors also import
torchvision, which ArcGIS Pro's deep learning libraries include). It does what rasterlearn's
inference does around the network, the same way: the ``.emd``'s bands, normalisation
(``NormalizationStats``, else ImageNet's statistics for 8-bit RGB), softmax, score threshold,
per-class non-maximum suppression and class values.

Blocks: pixel and detection models get blocks of ``ImageHeight`` x ``ImageWidth`` pixels,
``padding`` of which at each edge are context (``tx``/``ty`` = the chip size less twice the
padding), so one block is one model tile. A pixel block's output is its centre; a
detector keeps the objects whose box centre lies in the centre and (``exclude_pad_detections``)
drops boxes within 2 pixels of the block's edge. Rings are in the block's pixel coordinates
(x = column, y = row). Instance segmentation models give their boxes (not mask outlines).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_DETECTIONS = 500
EDGE_MARGIN = 2
OUTPUT_NAMES_FILE = "rasterlearn_outputs.txt"
TASKS = {
    "ImageClassification": "pixel",
    "ObjectDetection": "detection",
    "InstanceDetection": "detection",
    "ObjectClassification": "classification",
}


def _flag(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "t", "y", "yes")


def _read_definition(model: str) -> tuple[dict, str]:
    """The ``.emd`` (a path, or its JSON text as Pro may pass it) and its folder."""
    text = str(model)
    if os.path.isfile(text):
        with open(text, encoding="utf-8-sig") as f:
            return json.load(f), os.path.dirname(os.path.abspath(text))
    return json.loads(text), os.getcwd()


def _dense(out: object) -> torch.Tensor:
    """The logits of a classifier's output (a tensor, a dict with ``out``, or a tuple)."""
    if isinstance(out, dict):
        out = out["out"] if "out" in out else next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out


def _nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float):
    """Indices kept by greedy per-class NMS, best first (torchvision's batched NMS)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    offsets = labels.to(boxes) * (boxes.max() + 1)
    return torch.ops.torchvision.nms(boxes + offsets[:, None], scores, float(iou))


class RasterlearnFunction:
    """A rasterlearn model in ArcGIS Pro's deep learning tools."""

    def __init__(self) -> None:
        self.name = "rasterlearn model"
        self.description = "Runs a model trained by rasterlearn (TorchScript copy)."
        self.padding = 0
        self.threshold = 0.5
        self.nms_overlap = 0.1
        self.exclude_pad = True
        self.predict_background = True
        self.batch_size = 4

    # -- the protocol ----------------------------------------------------------------------

    def initialize(self, **kwargs: object) -> None:
        """Read the ``.emd`` and load the TorchScript copy of the model it names."""
        emd, folder = _read_definition(str(kwargs["model"]))
        self.emd = emd
        self.task = TASKS[str(emd["ModelType"])]
        self.height = int(emd.get("ImageHeight") or 224)
        self.width = int(emd.get("ImageWidth") or self.height)
        self.bands = [int(b) for b in emd.get("ExtractBands") or [0, 1, 2]]
        self.classes = [(int(c["Value"]), str(c["Name"]), c.get("Color")) for c in emd["Classes"]]
        params = emd.get("ModelParameters") or {}
        self.multi_label = bool(
            params.get("multi_label", emd.get("MetaDataMode") == "MultiLabeled_Tiles")
        )
        self.padding = self.height // 4 if self.task != "classification" else 0
        self.batch_size = int(emd.get("BatchSize") or 4)
        self.threshold = float(emd.get("DetectionThreshold") or 0.5)
        self._normalization(emd.get("NormalizationStats"))
        if self.task == "detection":
            import torchvision  # noqa: F401  (registers the operators a detector's graph calls)
        device = int(float(kwargs.get("device", -1) or -1))
        use_gpu = device >= 0 and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{device}" if use_gpu else "cpu")
        self.path = os.path.join(folder, emd["TorchScript"]["CPU"])
        self._load()

    def _load(self) -> None:
        extra = {OUTPUT_NAMES_FILE: ""}
        with warnings.catch_warnings():  # torch.jit.load is deprecated for torch.export
            warnings.simplefilter("ignore", FutureWarning)
            self.model = torch.jit.load(self.path, map_location=self.device, _extra_files=extra)
        self.model.eval()
        names = extra[OUTPUT_NAMES_FILE]
        names = names.decode() if isinstance(names, bytes) else str(names)
        self.outputs = [n.strip() for n in names.split(",") if n.strip()]

    def _normalization(self, stats: dict | None) -> None:
        """Per-band float32 ``(x - low) / span``, then ``(. - mean) / std``, as in training."""
        if stats:
            low = np.asarray(stats["band_min_values"], dtype=np.float64)[self.bands]
            span = np.asarray(stats["band_max_values"], dtype=np.float64)[self.bands] - low
            mean = np.asarray(stats["scaled_mean_values"], dtype=np.float64)[self.bands]
            std = np.asarray(stats["scaled_std_values"], dtype=np.float64)[self.bands]
        else:
            low, span = np.zeros(3), np.full(3, 255.0)
            mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
        self._constants = [v.astype(np.float32).reshape(-1, 1, 1) for v in (low, span, mean, std)]

    def getParameterInfo(self) -> list[dict]:
        """The tool's inputs, then the model arguments with rasterlearn's defaults."""
        raster = "rasters" if self.task == "classification" else "raster"
        params = [
            {
                "name": raster,
                "dataType": raster,
                "required": True,
                "displayName": "Input Raster",
                "description": "The imagery to run the model on.",
            },
            {
                "name": "model",
                "dataType": "string",
                "required": True,
                "displayName": "Input Model Definition (EMD) File",
                "description": "The model's .emd or its JSON.",
            },
            {
                "name": "device",
                "dataType": "numeric",
                "required": False,
                "displayName": "Device ID",
                "description": "GPU index; -1 for the CPU.",
            },
        ]
        return params + self._arguments()

    def _arguments(self) -> list[dict]:
        def arg(name: str, kind: str, value: object, text: str, domain=None) -> dict:
            entry = {"name": name, "dataType": kind, "value": value, "required": False}
            entry.update({"displayName": name.replace("_", " ").title(), "description": text})
            if domain is not None:
                entry["domain"] = domain
            return entry

        yes_no = ("True", "False")
        padding = arg("padding", "numeric", self.height // 4, "Pixels of context at each edge.")
        if self.task == "pixel":
            background = "Background (0) is a predicted class."
            return [padding, arg("predict_background", "string", "True", background, yes_no)]
        if self.task == "detection":
            return [
                padding,
                arg(
                    "threshold",
                    "numeric",
                    self.threshold,
                    "Minimum confidence of a detection (0-1).",
                ),
                arg("nms_overlap", "numeric", 0.1, "IoU above which the weaker box goes."),
                arg(
                    "exclude_pad_detections",
                    "string",
                    "True",
                    "Drop boxes cut by the block edge.",
                    yes_no,
                ),
            ]
        return [
            arg("batch_size", "numeric", self.batch_size, "Chips per forward pass."),
            arg("threshold", "numeric", 0.5, "Minimum probability of a label (multi-label)."),
        ]

    def getConfiguration(self, **scalars: object) -> dict:
        """Bands, padding and block size (one model tile per block) for the argument values."""
        self.threshold = float(scalars.get("threshold", self.threshold))
        self.nms_overlap = float(scalars.get("nms_overlap", 0.1))
        self.exclude_pad = _flag(scalars.get("exclude_pad_detections", "True"))
        self.predict_background = _flag(scalars.get("predict_background", "True"))
        self.batch_size = int(float(scalars.get("batch_size", self.batch_size)))
        config = {"extractBands": tuple(self.bands), "inputMask": True}
        if self.task == "classification":
            config.update(
                CropSizeFixed=int(self.emd.get("CropSizeFixed", 1)),
                BlackenAroundFeature=int(self.emd.get("BlackenAroundFeature", 0)),
                batch_size=self.batch_size,
            )
            return config
        self.padding = int(float(scalars.get("padding", self.height // 4)))
        config.update(
            padding=self.padding,
            tx=self.width - 2 * self.padding,
            ty=self.height - 2 * self.padding,
            fixedTileSize=1,
            inheritProperties=2 | 4 | 8,
            invalidateProperties=2 | 4 | 8,
        )
        return config

    def updateRasterInfo(self, **kwargs: dict) -> dict:
        """A single-band ``i4`` class raster with the class table as attribute table."""
        info = kwargs["output_info"]
        info.update(bandCount=1, pixelType="i4", statistics=(), histogram=())
        fields = [("OID", "esriFieldTypeOID"), ("Value", "esriFieldTypeInteger")]
        fields += [("Class", "esriFieldTypeString")]
        fields += [(c, "esriFieldTypeInteger") for c in ("Red", "Green", "Blue")]
        rows = []
        for oid, (value, name, color) in enumerate(self.classes):
            red, green, blue = [*(color or []), 0, 0, 0][:3]
            rows.append(
                {
                    "attributes": {
                        "OID": oid,
                        "Value": value,
                        "Class": name,
                        "Red": red,
                        "Green": green,
                        "Blue": blue,
                    }
                }
            )
        columns = [{"name": n, "type": t, "alias": n} for n, t in fields]
        table = {"fields": columns, "features": rows}
        info["rasterAttributeTable"] = json.dumps(table)
        return kwargs

    def updatePixels(self, tlc: object, shape: object, props: dict, **pixelBlocks: object) -> dict:
        """Class values of the block's centre (``output_pixels``) and its validity mask."""
        pixels, valid = self._block(pixelBlocks["raster_pixels"], pixelBlocks.get("raster_mask"))
        x = torch.from_numpy(self._normalize(pixels, valid)[None]).to(self.device)
        with torch.no_grad():
            logits = _dense(self.model(x))
        probs = logits.float().softmax(dim=1).cpu().numpy()[0]
        values = np.array([0, *(v for v, _, _ in self.classes)], dtype=np.int64)
        first = 0 if self.predict_background else 1
        classes = values[first + probs[first:].argmax(axis=0)]
        p = self.padding
        rows, cols = classes.shape[0] - 2 * p, classes.shape[1] - 2 * p
        pixel_type = props.get("pixelType", "i4") if isinstance(props, dict) else "i4"
        pixelBlocks["output_pixels"] = classes[p : p + rows, p : p + cols].astype(pixel_type)
        pixelBlocks["output_mask"] = valid[p : p + rows, p : p + cols].astype(np.uint8)
        return pixelBlocks

    def getFields(self) -> str:
        """``Class``, ``Classvalue``, ``Confidence`` (0-100); classifiers: ``Label``,
        ``Confidence`` (0-1)."""
        if self.task == "classification":
            fields = [("Label", "esriFieldTypeString"), ("Confidence", "esriFieldTypeDouble")]
        else:
            fields = [
                ("Class", "esriFieldTypeString"),
                ("Classvalue", "esriFieldTypeInteger"),
                ("Confidence", "esriFieldTypeDouble"),
            ]
        fields = [("OID", "esriFieldTypeOID"), *fields, ("Shape", "esriFieldTypeGeometry")]
        return json.dumps({"fields": [{"name": n, "type": t, "alias": n} for n, t in fields]})

    def getGeometryType(self) -> int:
        return 4  # polygons

    def vectorize(self, **pixelBlocks: object) -> dict:
        """Objects of one block, or the label of every chip of a batch (Classify Objects)."""
        if self.task == "classification":
            features = self._classify(
                pixelBlocks["rasters_pixels"], pixelBlocks.get("rasters_mask")
            )
        else:
            pixels, valid = self._block(
                pixelBlocks["raster_pixels"], pixelBlocks.get("raster_mask")
            )
            features = self._detect(pixels, valid)
        return {"output_vectors": json.dumps({"features": features})}

    # -- the model around the network ------------------------------------------------------

    @staticmethod
    def _block(pixels: object, mask: object) -> tuple[np.ndarray, np.ndarray]:
        """The block's pixels and per-pixel validity (a pixel is valid when a band is)."""
        pixels = np.asarray(pixels)
        if mask is None:
            return pixels, np.ones(pixels.shape[-2:], dtype=bool)
        mask = np.asarray(mask)
        return pixels, (mask.any(axis=0) if mask.ndim == 3 else mask.astype(bool))

    def _normalize(self, pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Invalid pixels set to 0, then normalised as in training (float32)."""
        x = np.where(valid[None], pixels.astype(np.float32), np.float32(0))
        low, span, mean, std = self._constants
        return (((x - low) / span) - mean) / std

    def _detect(self, pixels: np.ndarray, valid: np.ndarray) -> list[dict]:
        x = torch.from_numpy(np.ascontiguousarray(self._normalize(pixels, valid)))
        with torch.no_grad():
            try:
                out = self.model(x.to(self.device))
            except RuntimeError:
                if self.device.type == "cpu":
                    raise
                self.device = torch.device("cpu")  # a detector traced on the CPU
                self._load()
                out = self.model(x)
        # no zip(strict=...): ArcGIS Pro 3.0 runs Python 3.9
        named = dict(zip(self.outputs or ["boxes", "scores", "labels"], out))  # noqa: B905
        boxes = named["boxes"].float().reshape(-1, 4).cpu()
        scores = named["scores"].float().reshape(-1).cpu()
        labels = named["labels"].long().reshape(-1).cpu()
        keep = _nms(boxes, scores, labels, self.nms_overlap)[:MAX_DETECTIONS]
        boxes = boxes[keep].numpy().astype(np.float64)
        scores = scores[keep].numpy().astype(np.float64)
        labels = labels[keep].numpy()
        height, width = pixels.shape[-2:]
        p = self.padding
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        ok = (scores >= self.threshold) & (cx >= p) & (cx < width - p)
        ok &= (cy >= p) & (cy < height - p)
        if self.exclude_pad:
            ok &= (boxes[:, 0] > EDGE_MARGIN) & (boxes[:, 1] > EDGE_MARGIN)
            ok &= (boxes[:, 2] < width - EDGE_MARGIN) & (boxes[:, 3] < height - EDGE_MARGIN)
        features = []
        for (x0, y0, x1, y1), score, label in zip(boxes[ok], scores[ok], labels[ok]):  # noqa: B905
            value, name, _ = self.classes[int(label) - 1]
            ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
            features.append(
                {
                    "attributes": {"Class": name, "Classvalue": value, "Confidence": score * 100},
                    "geometry": {"rings": [[[float(a), float(b)] for a, b in ring]]},
                }
            )
        return features

    def _classify(self, chips: list, masks: list | None) -> list[dict]:
        features = []
        names = [name for _, name, _ in self.classes]
        for i, chip in enumerate(chips):
            pixels, valid = self._block(chip, None if masks is None else masks[i])
            x = torch.from_numpy(self._normalize(pixels, valid)[None]).to(self.device)
            with torch.no_grad():
                logits = _dense(self.model(x)).float()
            if self.multi_label:
                probs = logits.sigmoid().cpu().numpy()[0]
                chosen = [j for j, p in enumerate(probs) if p >= self.threshold]
                label = ";".join(names[j] for j in chosen)
                confidence = ";".join(f"{probs[j]:.6f}" for j in chosen)
            else:
                probs = logits.softmax(dim=1).cpu().numpy()[0]
                best = int(probs.argmax())
                label, confidence = names[best], float(probs[best])
            features.append({"attributes": {"Label": label, "Confidence": confidence}})
        return features
