"""The other model backends: ONNX and TorchScript exports, and custom Python raster functions.

Exported models are compared with the PyTorch model they come from (random weights, saved
as a rasterlearn model folder); raster functions written here run through the inference
tools and must give exactly what numpy and shapely compute from the generated raster.
"""

from __future__ import annotations

import json
import sys
import textwrap
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin
from typer.testing import CliRunner

from rasterlearn.cli import app
from rasterlearn.data.normalization import NormalizationStats, Normalizer
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.dlpk import create_dlpk
from rasterlearn.formats.emd import PRO_FUNCTIONS_PREFIX, ModelDefinition
from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.backends.onnx import OnnxPredictor
from rasterlearn.inference.backends.pytorch import TorchPredictor
from rasterlearn.inference.backends.raster_function import RasterFunctionPredictor
from rasterlearn.inference.backends.torchscript import TorchScriptPredictor
from rasterlearn.inference.predictors import TileDetections, resolve_model_arguments
from rasterlearn.models.registry import build_model, model_spec
from rasterlearn.models.trained import architecture_parameters
from rasterlearn.tools.classify_objects import classify_objects
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.detect_objects import detect_objects
from rasterlearn.tools.export_model import export_model

runner = CliRunner()

CLASSES = [(1, "building", [200, 60, 50]), (2, "tree", [40, 140, 40]), (5, "water", [40, 80, 200])]
CHIP = 64


def make_model_folder(
    root: Path, model_type: str, name: str, bands: int = 3, stats: bool = False, seed: int = 0
) -> Path:
    """A rasterlearn model folder (.emd + .pth) of random weights, as training writes it.

    FCOS gets a sharper classification layer, so that its scores spread over 0-1.
    """
    spec = model_spec(model_type)
    torch.manual_seed(seed)
    model = build_model(model_type, len(CLASSES), bands, backbone="resnet18", chip_size=CHIP)
    if model_type == "FCOS":
        with torch.no_grad():
            model.head.classification_head.cls_logits.weight.mul_(40.0)
    folder = root / name
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / f"{name}.pth")
    norm_stats = None
    if stats:
        norm_stats = NormalizationStats.from_vectors(
            [0.0] * bands, [1000.0] * bands, [300.0] * bands, [100.0] * bands
        )
    normalizer = Normalizer(norm_stats, list(range(bands)))
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in model.model_args.items()}
    content = {
        "Framework": "rasterlearn",
        "ModelConfiguration": spec.emd.model_configuration,
        "ModelType": spec.emd.model_type,
        "InferenceFunction": PRO_FUNCTIONS_PREFIX
        + "System\\DeepLearning\\ArcGISLearn\\"
        + spec.emd.inference_function,
        "Classes": [{"Value": v, "Name": n, "Color": c} for v, n, c in CLASSES],
        **dict(spec.emd.extra),
        "ModelFormat": "NCHW",
        "SupportsVariableTileSize": spec.task == "pixel",
        "ModelFile": f"{name}.pth",
        "ImageHeight": CHIP,
        "ImageWidth": CHIP,
        "ImageSpaceUsed": "MAP_SPACE",
        "ModelName": spec.emd.model_name,
        "ModelParameters": {
            "backbone": model.backbone_name,
            "backend": "pytorch",
            **architecture_parameters(model),
            **params,
        },
        **normalizer.to_emd(),
    }
    (folder / "model_metrics.html").write_text("<html>metrics</html>")
    return ModelDefinition.load(content).save(folder / f"{name}.emd")


def raw_tiles(
    count: int, bands: int, height: int, width: int, stats: bool, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels as read from a raster (uint8 RGB or uint16), with a nodata corner."""
    rng = np.random.default_rng(seed)
    if stats:
        tiles = rng.integers(0, 1000, (count, bands, height, width)).astype(np.uint16)
    else:
        tiles = rng.integers(0, 256, (count, bands, height, width)).astype(np.uint8)
    valid = np.ones((count, height, width), dtype=bool)
    valid[:, :5, :7] = False
    tiles[:, :, :5, :7] = 0
    return tiles, valid


def match_detections(a: TileDetections, b: TileDetections) -> tuple[float, float]:
    """Largest box and score differences after pairing each detection of ``a`` with the
    detection of ``b`` of the same class whose box is closest (scores can tie)."""
    assert len(a) == len(b), f"{len(a)} detections against {len(b)}"
    assert sorted(a.classes.tolist()) == sorted(b.classes.tolist())
    used: set[int] = set()
    box_diff = score_diff = 0.0
    for i in range(len(a)):
        dist = np.abs(b.boxes - a.boxes[i]).max(axis=1) + np.abs(b.scores - a.scores[i])
        dist[b.classes != a.classes[i]] = np.inf
        dist[list(used)] = np.inf
        j = int(np.argmin(dist))
        used.add(j)
        box_diff = max(box_diff, float(np.abs(b.boxes[j] - a.boxes[i]).max()))
        score_diff = max(score_diff, float(abs(b.scores[j] - a.scores[i])))
    return box_diff, score_diff


# ------------------------------------------------------------------- ONNX and TorchScript

EXPORTS = [
    ("UNET", "onnx", 4, True),
    ("UNET", "torchscript", 3, False),
    ("FEATURE_CLASSIFIER", "onnx", 3, False),
    ("FEATURE_CLASSIFIER", "torchscript", 4, True),
    ("FCOS", "onnx", 3, False),
    ("FCOS", "torchscript", 3, False),
]


@pytest.mark.parametrize(("model_type", "fmt", "bands", "stats"), EXPORTS)
def test_exported_model_agrees_with_pytorch(tmp_path, model_type, fmt, bands, stats):
    emd = make_model_folder(tmp_path, model_type, "m", bands, stats)
    result = export_model(emd, fmt)
    assert result.folder == tmp_path / f"m_{fmt}"
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    assert sorted(p.name for p in result.folder.iterdir()) == sorted(
        ["m.emd", f"m{suffix}", "m.dlpk", "model_metrics.html"]
    )
    exported = ModelDefinition.load(result.emd)
    assert exported.get("ModelFile") == f"m{suffix}"
    assert exported.get("Classes") == ModelDefinition.load(emd).get("Classes")
    with zipfile.ZipFile(result.dlpk) as zf:
        assert sorted(zf.namelist()) == sorted(["m.emd", f"m{suffix}", "model_metrics.html"])
    assert not list(tmp_path.glob(".*partial*"))

    reference = TorchPredictor(ModelDefinition.load(emd), "cpu")
    backend = open_predictor(result.emd, "cpu")
    assert type(backend) is (OnnxPredictor if fmt == "onnx" else TorchScriptPredictor)
    packaged = open_predictor(result.dlpk, "cpu")
    task = reference.info.task
    sizes = [(CHIP, CHIP), (96, 128)] if task == "pixel" else [(CHIP, CHIP), (80, 96)]
    for seed, (height, width) in enumerate(sizes):
        tiles, valid = raw_tiles(3, bands, height, width, stats, seed)
        if task == "pixel":
            want = reference.predict_pixels(tiles, valid)
            got = backend.predict_pixels(tiles, valid)
            assert got.shape == want.shape == (3, len(CLASSES) + 1, height, width)
            assert np.abs(got - want).max() < 1e-4
            assert np.array_equal(packaged.predict_pixels(tiles, valid), got)
        elif task == "classification":
            want = reference.classify(tiles, valid)
            got = backend.classify(tiles, valid)
            assert got.shape == want.shape == (3, len(CLASSES))
            assert np.abs(got - want).max() < 1e-4
        else:
            for args in ({"threshold": 0.5, "nms_overlap": 0.1}, {"threshold": 0.3}):
                args.setdefault("nms_overlap", 0.5)
                want = reference.predict_objects(tiles, valid, args)
                got = backend.predict_objects(tiles, valid, args)
                assert sum(len(d) for d in want) > 10  # the comparison has something to compare
                for a, b in zip(want, got, strict=True):
                    assert set(b.classes.tolist()) <= {1, 2, 5}  # class values, not indices
                    assert (b.scores >= args["threshold"]).all()
                    box_diff, score_diff = match_detections(a, b)
                    assert box_diff < 1e-2 and score_diff < 1e-4


def test_export_from_a_package_and_to_a_chosen_folder(tmp_path):
    emd = make_model_folder(tmp_path, "FEATURE_CLASSIFIER", "clf")
    package = create_dlpk(emd.parent)
    out = tmp_path / "exports" / "classifier"
    result = export_model(package, "ONNX", out)
    assert result.folder == out and result.emd == out / "clf.emd"
    assert (out / "clf.onnx").is_file()
    assert 0.0 <= result.max_difference < 1e-3
    recorded = ModelDefinition.load(result.emd).get("RasterlearnExport")
    assert recorded["Format"] == "ONNX" and recorded["OpsetVersion"] == 17
    # already exported models and existing outputs are refused, the output left as it was
    with pytest.raises(InputError, match="already exported"):
        export_model(result.emd, "onnx", tmp_path / "again")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(Exception, match="already exists"):
        export_model(package, "onnx", out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not (tmp_path / "again").exists()


# ------------------------------------------------------------------------ raster functions

DETECTOR = '''
import json

import numpy as np
import rasterio.features


class BrightObjects:
    """Objects: connected pixels of band 1 above a brightness; confidence = brightness."""

    def __init__(self):
        self.name = "Bright objects"
        self.level = 100.0

    def initialize(self, **kwargs):
        model = kwargs["model"]
        try:
            with open(model) as f:
                self.emd = json.load(f)
        except OSError:
            self.emd = json.loads(model)
        self.device = kwargs.get("device")

    def getParameterInfo(self):
        return [
            {"name": "raster", "dataType": "raster", "value": None, "required": True,
             "displayName": "Raster", "description": "input"},
            {"name": "model", "dataType": "string", "value": None, "required": True,
             "displayName": "Model", "description": "emd"},
            {"name": "device", "dataType": "numeric", "value": None, "required": False,
             "displayName": "Device", "description": "GPU id"},
            {"name": "brightness", "dataType": "numeric", "value": 100, "required": False,
             "displayName": "Brightness", "description": "band 1 value of bright pixels"},
        ]

    def getConfiguration(self, **scalars):
        self.level = float(scalars.get("brightness", 100))
        return {"extractBands": (0,), "padding": 16, "tx": 32, "ty": 32, "inputMask": True}

    def getFields(self):
        return json.dumps({"fields": [
            {"name": "Class", "type": "esriFieldTypeString", "alias": "Class"},
            {"name": "Confidence", "type": "esriFieldTypeDouble", "alias": "Confidence"},
        ]})

    def getGeometryType(self):
        return 4

    def vectorize(self, **pixelBlocks):
        band = pixelBlocks["raster_pixels"][0]
        bright = (band > self.level) & (pixelBlocks["raster_mask"][0] > 0)
        features = []
        for geom, value in rasterio.features.shapes(band, mask=bright):
            features.append({
                "attributes": {"OID": len(features) + 1, "Class": "bright",
                               "Confidence": float(value) / 255 * 100},
                "geometry": {"rings": geom["coordinates"]},
            })
        return {"output_vectors": json.dumps({"features": features})}
'''

PIXELS = '''
import numpy as np


class Threshold:
    """Class 5 where the 3 x 3 maximum of band 3 exceeds a level, else 2 where band 1 > 100."""

    def initialize(self, **kwargs):
        self.model = kwargs["model"]

    def getParameterInfo(self):
        return [
            {"name": "raster", "dataType": "raster", "value": None, "required": True,
             "displayName": "Raster", "description": "input"},
            {"name": "model", "dataType": "string", "value": None, "required": True,
             "displayName": "Model", "description": "emd"},
            {"name": "level", "dataType": "numeric", "value": 128, "required": False,
             "displayName": "Level", "description": "band 3 level of class 5"},
        ]

    def getConfiguration(self, **scalars):
        self.level = float(scalars.get("level", 128))
        return {"extractBands": (2, 0), "padding": 1, "inputMask": True}

    def updateRasterInfo(self, **kwargs):
        kwargs["output_info"]["pixelType"] = "u1"
        return kwargs

    def updatePixels(self, tlc, shape, props, **pixelBlocks):
        p = pixelBlocks["raster_pixels"].astype(float)
        rows, cols = shape
        assert p.shape == (2, rows + 2, cols + 2), p.shape
        top = np.max([p[0, i:i + rows, j:j + cols] for i in range(3) for j in range(3)], axis=0)
        out = np.where(top > self.level, 5, np.where(p[1, 1:-1, 1:-1] > 100, 2, 0))
        pixelBlocks["output_pixels"] = out.astype(props["pixelType"])
        return pixelBlocks
'''


def write_function_model(
    folder: Path, name: str, source: str, model_type: str, classes: list, size: int = 48
) -> Path:
    """A model folder holding only an .emd and its raster function ``<name>.py``."""
    folder.mkdir(parents=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    content = {
        "Framework": "Custom",
        "ModelType": model_type,
        "InferenceFunction": f"{name}.py",
        "ImageHeight": size,
        "ImageWidth": size,
        "ImageSpaceUsed": "MAP_SPACE",
        "Classes": [{"Value": v, "Name": n, "Color": c} for v, n, c in classes],
    }
    return ModelDefinition.load(content).save(folder / f"{name}.emd")


TRANSFORM = from_origin(400000.0, 3300000.0, 0.5, 0.5)


def write_raster(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:32617",
        transform=TRANSFORM,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


def map_polygon(polygon: shapely.Geometry) -> shapely.Geometry:
    """Pixel coordinates (x = column, y = row) to the raster's map coordinates."""
    a, _, c, _, e, f = TRANSFORM[:6]
    return shapely.transform(
        polygon, lambda xy: np.column_stack([a * xy[:, 0] + c, e * xy[:, 1] + f])
    )


@pytest.fixture
def bright_scene(tmp_path: Path) -> tuple[Path, list[tuple[shapely.Geometry, int]]]:
    """A raster with bright (200) and dim (140) objects in band 1, one with a hole; the
    objects as pixel-space polygons with their brightness."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 90, (3, 150, 170)).astype(np.uint8)
    objects = []
    rects = [  # row, col, height, width, brightness: across tile borders and at raster edges
        (10, 0, 6, 9, 200),
        (28, 26, 10, 12, 140),
        (60, 60, 8, 8, 200),
        (90, 28, 12, 5, 200),
        (120, 150, 9, 14, 140),
        (140, 90, 10, 10, 200),
        (5, 120, 7, 7, 140),
    ]
    for row, col, height, width, value in rects:
        data[0, row : row + height, col : col + width] = value
        objects.append((shapely.box(col, row, col + width, row + height), value))
    # a ring: 12 x 12 with a 4 x 4 hole
    data[0, 95:107, 100:112] = 200
    data[0, 99:103, 104:108] = 30
    ring = shapely.box(100, 95, 112, 107).difference(shapely.box(104, 99, 108, 103))
    objects.append((ring, 200))
    raster = write_raster(tmp_path / "bright.tif", data)
    return raster, objects


def found_polygons(path: Path) -> gpd.GeoDataFrame:
    frame = gpd.read_file(path)
    assert set(frame["Class"]) <= {"bright"}
    return frame


def assert_same_objects(frame: gpd.GeoDataFrame, expected: list[tuple[shapely.Geometry, int]]):
    assert len(frame) == len(expected)
    for polygon, value in expected:
        target = map_polygon(polygon)
        hits = [
            i
            for i, g in enumerate(frame.geometry)
            if shapely.symmetric_difference(g, target).area < 1e-9
        ]
        assert len(hits) == 1, f"object {polygon.bounds} found {len(hits)} times"
        assert frame["Confidence"].iloc[hits[0]] == pytest.approx(value / 255 * 100, abs=1e-9)


def test_detector_function_through_the_engine(tmp_path, bright_scene):
    raster, objects = bright_scene
    emd = write_function_model(
        tmp_path / "bright",
        "BrightObjects",
        DETECTOR,
        "ObjectDetection",
        [(1, "bright", [255] * 3)],
    )
    predictor = open_predictor(emd, "cpu")
    assert isinstance(predictor, RasterFunctionPredictor)
    info = predictor.info
    # tile = ty + 2 padding; the function's argument first, then the engine's
    assert (info.tile_height, info.tile_width) == (64, 64)
    assert info.extract_bands == [0]
    names = [a.name for a in info.arguments]
    assert names == [
        "brightness",
        "padding",
        "threshold",
        "nms_overlap",
        "batch_size",
        "exclude_pad_detections",
        "test_time_augmentation",
    ]
    values = resolve_model_arguments(info, {"Brightness": "150"})
    assert values["brightness"] == 150.0 and values["padding"] == 16
    with pytest.raises(ParameterError, match="brightness"):
        resolve_model_arguments(info, {"brightnes": 3})

    found = found_polygons(detect_objects(raster, tmp_path / "all.gpkg", emd))
    assert_same_objects(found, objects)
    # Confidence is read as 0-100: a threshold of 0.6 drops the dim (140/255) objects
    bright = found_polygons(detect_objects(raster, tmp_path / "b.gpkg", emd, {"threshold": 0.6}))
    assert_same_objects(bright, [o for o in objects if o[1] == 200])
    # the function's own argument reaches it: only pixels above 150 are objects
    own = found_polygons(detect_objects(raster, tmp_path / "o.gpkg", emd, {"brightness": 150}))
    assert_same_objects(own, [o for o in objects if o[1] == 200])
    # from a package: the function is loaded from the extracted folder
    package = create_dlpk(emd.parent)
    packaged = found_polygons(detect_objects(raster, tmp_path / "p.gpkg", package))
    assert_same_objects(packaged, objects)
    # imported by its path only, under a private name
    assert "BrightObjects" not in sys.modules


def expected_threshold(data: np.ndarray, valid: np.ndarray, level: float) -> np.ndarray:
    """What the Threshold function gives for the whole raster (nodata pixels read as 0)."""
    band3 = np.pad(np.where(valid, data[2], 0).astype(float), 1)
    rows, cols = valid.shape
    top = np.max([band3[i : i + rows, j : j + cols] for i in range(3) for j in range(3)], axis=0)
    band1 = np.where(valid, data[0], 0)
    return np.where(top > level, 5, np.where(band1 > 100, 2, 0))


def test_pixel_function_through_classify_pixels(tmp_path):
    rng = np.random.default_rng(9)
    data = rng.integers(1, 256, (3, 150, 170)).astype(np.uint8)
    data[2] = np.where(rng.random((150, 170)) < 0.05, 200, 60).astype(np.uint8)
    data[:, 70:80, 20:50] = 0  # nodata (0 in every band)
    raster = write_raster(tmp_path / "scene.tif", data, nodata=0)
    valid = ~(data == 0).all(axis=0)
    classes = [(2, "vegetation", [0, 200, 0]), (5, "roof", [200, 0, 0])]
    emd = write_function_model(
        tmp_path / "thr", "Threshold", PIXELS, "ImageClassification", classes
    )

    predictor = open_predictor(emd, "cpu")
    assert [a.name for a in predictor.info.arguments][:2] == ["level", "padding"]
    assert predictor.info.arguments[1].default == 1  # the function's padding
    assert predictor.info.extract_bands == [2, 0]

    out = classify_pixels(raster, tmp_path / "classes.tif", emd)
    with rasterio.open(out[0]) as src:
        result = src.read(1)
        nodata = src.nodata
    want = expected_threshold(data, valid, 128)
    assert np.array_equal(result[valid], want[valid])  # exact, across tile seams
    assert (result[~valid] == nodata).all()
    assert {0, 2, 5} <= set(np.unique(result[valid]).tolist())

    # the function's argument, given to the predictor (one-hot probabilities over 0, 2, 5)
    tiles = data[None].copy()
    probs = predictor.predict_pixels(tiles, valid[None], {"level": 50})
    assert probs.shape == (1, 3, 150, 170)
    assert np.array_equal(probs.sum(axis=1), np.ones((1, 150, 170)))
    values = np.array([0, 2, 5])[probs[0].argmax(axis=0)]
    assert np.array_equal(values, expected_threshold(data, valid, 50))


def test_function_errors_are_one_line_and_leave_no_output(tmp_path):
    data = np.full((3, 40, 40), 120, dtype=np.uint8)
    raster = write_raster(tmp_path / "r.tif", data)
    classes = [(2, "vegetation", [0, 200, 0]), (5, "roof", [200, 0, 0])]
    # a bug in the function names the file, the step and the line
    broken = PIXELS.replace("rows, cols = shape", "rows, cols = shape\n        1 / 0")
    emd = write_function_model(
        tmp_path / "broken", "Threshold", broken, "ImageClassification", classes
    )
    with pytest.raises(InputError, match=r"Threshold.py failed in updatePixels \(line \d+\)"):
        classify_pixels(raster, tmp_path / "a.tif", emd)
    assert not (tmp_path / "a.tif").exists()
    # class values the model does not know
    wrong = PIXELS.replace("np.where(top > self.level, 5,", "np.where(top > self.level, 7,")
    emd = write_function_model(
        tmp_path / "wrong", "Threshold", wrong, "ImageClassification", classes
    )
    with pytest.raises(InputError, match=r"class values \[7\]"):
        open_predictor(emd, "cpu").predict_pixels(
            np.full((1, 3, 40, 40), 200, np.uint8), np.ones((1, 40, 40), bool)
        )
    # a missing function file: the tool and the CLI refuse before writing anything
    emd = write_function_model(
        tmp_path / "gone", "Threshold", PIXELS, "ImageClassification", classes
    )
    (emd.parent / "Threshold.py").unlink()
    with pytest.raises(InputError, match=r"Threshold\.py does not exist"):
        classify_pixels(raster, tmp_path / "b.tif", emd)
    result = runner.invoke(
        app, ["classify-pixels", str(raster), str(tmp_path / "c.tif"), "--model", str(emd)]
    )
    assert result.exit_code == 2
    assert "Threshold.py does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("[abc].tif*"))


CLASSIFIER = '''
import json

import numpy as np


class Brightness:
    """Each chip: "bright" (confidence 0.9) if band 1 averages over 128, else "dark" (0.7)."""

    def initialize(self, **kwargs):
        self.device = kwargs["device"]

    def getParameterInfo(self):
        return [
            {"name": "rasters", "dataType": "rasters", "value": None, "required": True,
             "displayName": "Rasters", "description": "chips"},
            {"name": "model", "dataType": "string", "value": None, "required": True,
             "displayName": "Model", "description": "emd"},
        ]

    def getConfiguration(self, **scalars):
        return {"extractBands": (0,), "CropSizeFixed": 1, "BlackenAroundFeature": 0}

    def vectorize(self, **pixelBlocks):
        features = []
        for pixels, mask in zip(pixelBlocks["rasters_pixels"], pixelBlocks["rasters_mask"]):
            mean = pixels[0][mask[0] > 0].mean()
            label, confidence = ("bright", 0.9) if mean > 128 else ("dark", 0.7)
            features.append({"attributes": {"Label": label, "Confidence": confidence}})
        return {"output_vectors": json.dumps({"features": features})}
'''


def test_classifier_function_through_classify_objects(tmp_path):
    data = np.full((3, 60, 80), 90, dtype=np.uint8)
    data[0, :, :40] = 200
    data[0, :, 40:] = 40
    raster = write_raster(tmp_path / "halves.tif", data)
    classes = [(1, "bright", [255, 255, 255]), (2, "dark", [0, 0, 0])]
    emd = write_function_model(
        tmp_path / "cls", "Brightness", CLASSIFIER, "ObjectClassification", classes, size=16
    )
    boxes = [(10, 10, 16, 16), (50, 30, 56, 36), (20, 40, 26, 46), (60, 8, 66, 14)]
    features = gpd.GeoDataFrame(
        {"Name": ["a", "b", "c", "d"]},
        geometry=[map_polygon(shapely.box(*b)) for b in boxes],
        crs="EPSG:32617",
    )
    features.to_file(tmp_path / "features.gpkg")
    out = classify_objects(raster, tmp_path / "labels.gpkg", emd, tmp_path / "features.gpkg")
    result = gpd.read_file(out)
    assert result["ClassLabel"].tolist() == ["bright", "dark", "bright", "dark"]
    assert result["Confidence"].tolist() == pytest.approx([0.9, 0.7, 0.9, 0.7], abs=1e-6)


# -------------------------------------------------------------------------- the CLI


def test_cli_export_and_bad_inputs(tmp_path):
    emd = make_model_folder(tmp_path, "UNET", "seg")
    result = runner.invoke(app, ["model", "export", str(emd), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and (tmp_path / "seg_torchscript" / "seg.pt").is_file()
    exported = open_predictor(tmp_path / "seg_torchscript", "cpu")
    assert isinstance(exported, TorchScriptPredictor)

    def refused(args: list[str], message: str) -> None:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        outcome = runner.invoke(app, ["model", "export", *args])
        assert outcome.exit_code == 2, outcome.output
        assert message in outcome.output
        assert len(outcome.output.strip().splitlines()) == 1
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written

    refused([str(emd), "--format", "tensorflow"], "unknown export format 'tensorflow'")
    refused([str(emd), "--format", "torchscript"], "already exists")
    refused([str(tmp_path / "seg_torchscript")], "already exported")
    refused([json.dumps(json.loads(emd.read_text()))], "--out")
    # a model folder without weights
    empty = make_model_folder(tmp_path, "UNET", "noweights")
    (empty.parent / "noweights.pth").unlink()
    refused([str(empty.parent)], "do not exist")
    # a model whose custom inference function is missing, and one whose function is there
    classes = [(1, "bright", [255, 255, 255])]
    function = write_function_model(
        tmp_path / "fn", "BrightObjects", DETECTOR, "ObjectDetection", classes
    )
    refused([str(function)], "custom inference function BrightObjects.py")
    (function.parent / "BrightObjects.py").unlink()
    refused([str(function)], "BrightObjects.py does not exist")
