"""Keras and TensorFlow models from elsewhere, built here, through the inference tools.

Every model is built in the test (tiny, fixed weights), saved as its framework saves it, and
run through each tool it fits; the tool's output must equal what the framework itself
predicts on the same tiles (computed here with the framework and numpy, tile by tile).
All tests that import TensorFlow are in this file: Keras imports it to save models and to read
``.h5`` files, and its import costs seconds per process.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from rasterlearn.errors import InputError
from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.backends.keras import KerasPredictor
from rasterlearn.inference.backends.tensorflow import TensorFlowPredictor
from rasterlearn.tools.classify_objects import classify_objects
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.detect_objects import detect_objects

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"  # Keras's torch backend, on numpy 2
)

ESRI = Path(__file__).parents[2] / "data" / "esri_raster_deep_learning"
TRANSFORM = from_origin(500000.0, 4000000.0, 1.0, 1.0)
TILE = 32
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CLASSES = [
    {"Value": 1, "Name": "field", "Color": [200, 200, 0]},
    {"Value": 4, "Name": "forest", "Color": [0, 120, 0]},
]


def write_raster(path: Path, data: np.ndarray) -> Path:
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
    ) as dst:
        dst.write(data)
    return path


def write_emd(folder: Path, name: str, **keys: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    emd = folder / f"{name}.emd"
    emd.write_text(json.dumps({"ImageHeight": TILE, "ImageWidth": TILE, **keys}))
    return emd


def tiles_of(data: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """The (row, col, pixels) of the TILE x TILE tiles that partition the raster."""
    rows, cols = data.shape[1:]
    return [
        (r, c, data[:, r : r + TILE, c : c + TILE])
        for r in range(0, rows, TILE)
        for c in range(0, cols, TILE)
    ]


def map_box(col0: float, row0: float, col1: float, row1: float) -> shapely.Geometry:
    a, _, x0, _, e, y0 = TRANSFORM[:6]
    return shapely.box(x0 + a * col0, y0 + e * row1, x0 + a * col1, y0 + e * row0)


def assert_same_detections(path: Path, expected: list[tuple[shapely.Geometry, str, float]]):
    found = gpd.read_file(path)
    assert len(found) == len(expected)
    for box, name, score in expected:
        hits = found[[shapely.symmetric_difference(g, box).area < 1e-6 for g in found.geometry]]
        assert len(hits) == 1, f"box {box.bounds} found {len(hits)} times"
        assert hits["Class"].iloc[0] == name
        assert hits["Confidence"].iloc[0] == pytest.approx(score * 100, abs=1e-4)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 3-band 8-bit raster of 2 x 2 tiles with smooth gradients and noise."""
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[0 : 2 * TILE, 0 : 2 * TILE]
    data = np.stack([rows * 4, cols * 4, (rows + cols) * 2]).astype(np.float64)
    data = np.clip(data + rng.normal(0, 20, data.shape), 0, 255).astype(np.uint8)
    return write_raster(tmp_path_factory.mktemp("scene") / "scene.tif", data), data


# ----------------------------------------------------------------------------------- Keras


def keras_pixel_model(channels: int, softmax: bool) -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    activation = "softmax" if softmax else None
    return keras.Model(inputs, keras.layers.Conv2D(channels, 1, activation=activation)(x))


def save_quietly(model: keras.Model, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy .h5 and numpy-copy warnings of Keras
        model.save(path)


@pytest.mark.parametrize(
    ("fmt", "channels", "softmax", "stats"),
    [(".keras", 3, True, False), (".h5", 2, False, True)],
    ids=["keras-probabilities-background-imagenet", "h5-logits-no-background-stats"],
)
def test_keras_pixel_classifier_equals_keras_predict(
    tmp_path, scene, fmt, channels, softmax, stats
):
    raster, data = scene
    model = keras_pixel_model(channels, softmax)
    save_quietly(model, tmp_path / f"seg{fmt}")
    keys: dict = {"NormalizationStats": None}
    lo, hi = np.array([10.0, 0.0, 5.0]), np.array([250.0, 255.0, 240.0])
    mean, std = np.array([0.4, 0.5, 0.45]), np.array([0.2, 0.25, 0.22])
    if stats:
        keys["NormalizationStats"] = {
            "band_min_values": lo.tolist(),
            "band_max_values": hi.tolist(),
            "band_mean_values": [0.0] * 3,
            "band_std_values": [0.0] * 3,
            "scaled_min_values": [0.0] * 3,
            "scaled_max_values": [1.0] * 3,
            "scaled_mean_values": mean.tolist(),
            "scaled_std_values": std.tolist(),
        }
    emd = write_emd(
        tmp_path,
        "seg",
        Framework="Keras",
        ModelType="ImageClassification",
        ModelFile=f"seg{fmt}",
        ExtractBands=[0, 1, 2],
        Classes=CLASSES,
        **{k: v for k, v in keys.items() if v is not None},
    )
    assert isinstance(open_predictor(emd, "cpu"), KerasPredictor)
    out = classify_pixels(raster, tmp_path / "classes.tif", emd, {"padding": 0})
    with rasterio.open(out[0]) as ds:
        classes = ds.read(1)
    values = np.array([0, 1, 4])
    for r, c, tile in tiles_of(data):
        x = tile.transpose(1, 2, 0).astype(np.float32)
        if stats:
            x = ((x - lo) / (hi - lo) - mean) / std
        else:
            x = (x / 255 - IMAGENET_MEAN) / IMAGENET_STD
        scores = np.asarray(model.predict_on_batch(x[None].astype(np.float32)))[0]
        if channels == 2:  # no background channel: its probability is 0
            scores = np.concatenate([np.full((*scores.shape[:2], 1), -np.inf), scores], -1)
        expected = values[scores.argmax(-1)]
        np.testing.assert_array_equal(classes[r : r + TILE, c : c + TILE], expected)
    assert len(np.unique(classes)) > 1


def test_keras_classifier_equals_keras_predict(tmp_path):
    """Esri's KerasClassifier configuration: raw pixels, chips resized to the model's input."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.layers[-1].set_weights([np.array([[9.0, -9], [-9, 9], [0, 0]]), np.zeros(2)])
    save_quietly(model, tmp_path / "damage.h5")
    colours = [(220, 30, 90), (30, 220, 90), (150, 120, 90), (100, 160, 90)]
    data = np.zeros((3, 40, 160), dtype=np.uint8)
    for i, colour in enumerate(colours):  # uniform 40 x 40 blocks: chips are one colour
        data[:, :, i * 40 : (i + 1) * 40] = np.array(colour, dtype=np.uint8)[:, None, None]
    raster = write_raster(tmp_path / "houses.tif", data)
    centres = [(20 + 40 * i, 20) for i in range(4)]
    features = gpd.GeoDataFrame(
        {"id": range(4)},
        geometry=[map_box(c - 3, r - 3, c + 3, r + 3) for c, r in centres],
        crs="EPSG:32617",
    )
    features.to_file(tmp_path / "houses.gpkg")
    emd = write_emd(
        tmp_path,
        "damage",
        Framework="Keras",
        ModelConfiguration={"Name": "KerasClassifier"},
        ModelType="ObjectClassification",
        ModelFile=".\\damage.h5",
        ImageHeight=16,
        ImageWidth=16,
        ExtractBands=[0, 1, 2],
        CropSizeFixed=1,
        BlackenAroundFeature=0,
        Classes=[{"Value": 0, "Name": "undamaged"}, {"Value": 1, "Name": "damaged"}],
    )
    out = gpd.read_file(
        classify_objects(raster, tmp_path / "labels.gpkg", emd, tmp_path / "houses.gpkg")
    )
    chips = np.stack([np.broadcast_to(np.array(c, np.float32), (8, 8, 3)) for c in colours])
    probs = np.asarray(model.predict_on_batch(chips))
    names = np.array(["undamaged", "damaged"])
    assert out["ClassLabel"].tolist() == names[probs.argmax(1)].tolist()
    assert out["Confidence"].to_numpy() == pytest.approx(probs.max(1), abs=1e-6)
    assert set(out["ClassLabel"]) == {"undamaged", "damaged"}


def keras_detector() -> keras.Model:
    """Two fixed boxes per tile (tile pixels), scored from the tile's mean colour."""
    inputs = keras.Input((None, None, 3))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    scores = keras.layers.Dense(2, activation="sigmoid", name="scores")(mean)
    boxes = keras.layers.Reshape((2, 4), name="boxes")(keras.layers.Dense(8, name="corners")(mean))
    labels = keras.layers.Dense(2, name="labels")(mean)
    model = keras.Model(inputs, {"boxes": boxes, "scores": scores, "labels": labels})
    model.get_layer("scores").set_weights([np.array([[3.0, -2], [-3, 2], [1, 0]]), np.zeros(2)])
    corners = np.array([4, 5, 12, 14, 15, 17, 27, 28], dtype=np.float32)
    model.get_layer("corners").set_weights([np.zeros((3, 8)), corners])
    model.get_layer("labels").set_weights([np.zeros((3, 2)), np.array([1.0, 2.0])])
    return model


def test_keras_detector_equals_keras_predict(tmp_path, scene):
    raster, data = scene
    model = keras_detector()
    save_quietly(model, tmp_path / "boxes.keras")
    emd = write_emd(
        tmp_path,
        "boxes",
        Framework="Keras",
        ModelType="ObjectDetection",
        ModelFile="boxes.keras",
        ExtractBands=[0, 1, 2],
        Classes=CLASSES,
    )
    args = {"padding": 0, "threshold": 0.3}
    out = detect_objects(raster, tmp_path / "found.gpkg", emd, args)
    expected = []
    for r, c, tile in tiles_of(data):
        x = (tile.transpose(1, 2, 0) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        pred = model.predict_on_batch(x[None].astype(np.float32))
        for box, score, label in zip(
            pred["boxes"][0], pred["scores"][0], pred["labels"][0], strict=True
        ):
            if score >= 0.3:
                x0, y0, x1, y1 = box.astype(np.float64)
                name = CLASSES[round(float(label)) - 1]["Name"]
                expected.append((map_box(c + x0, r + y0, c + x1, r + y1), name, score))
    assert 2 <= len(expected) < 8
    assert_same_detections(out, expected)


# ------------------------------------------------------------------------------ TensorFlow


class ObjectDetectionAPI(tf.Module):
    """The Object Detection API's signature: three boxes per image, the last one padding."""

    def __init__(self, second_class: float = 2.0) -> None:
        super().__init__()
        self.second_class = second_class

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image_tensor")]
    )
    def __call__(self, image_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.cast(image_tensor, tf.float32) / 255.0
        n = tf.shape(x)[0]
        mean = tf.reduce_mean(x, axis=[1, 2])
        score = tf.stack([mean[:, 0], 1.0 - mean[:, 1], tf.fill([n], 0.99)], axis=1)
        one = tf.ones([n])
        boxes = tf.stack(
            [
                tf.stack([0.1 * one, 0.2 * one, 0.4 * one, 0.5 * one], axis=1),
                tf.stack([0.55 * one, 0.5 * one, 0.85 * one, 0.9 * one], axis=1),
                tf.stack([0.0 * one, 0.0 * one, 1.0 * one, 1.0 * one], axis=1),
            ],
            axis=1,
        )
        classes = tf.stack([one, self.second_class * one, one], axis=1)
        return {
            "detection_boxes": tf.identity(boxes, name="detection_boxes"),
            "detection_scores": tf.identity(score, name="detection_scores"),
            "detection_classes": tf.identity(classes, name="detection_classes"),
            "num_detections": tf.identity(2.0 * one, name="num_detections"),
        }


class DeepLab(tf.Module):
    """DeepLab's signature: class values from band brightness, one image at a time."""

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="ImageTensor")])
    def __call__(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.cast(image, tf.int32)
        value = tf.where(x[..., 0] > 120, 2, tf.where(x[..., 1] > 120, 5, 0))
        return {"SemanticPredictions": tf.identity(tf.cast(value, tf.int64), "SemanticPredictions")}


def freeze(module: tf.Module, path: Path) -> Path:
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(module.__call__.get_concrete_function())
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return path


def odapi_expected(module: ObjectDetectionAPI, data: np.ndarray, height: int = TILE):
    expected = []
    for r, c, tile in tiles_of(data):
        out = module(tf.constant(tile.transpose(1, 2, 0)[None]))
        count = int(out["num_detections"][0])
        for box, score, label in zip(
            out["detection_boxes"][0][:count].numpy(),
            out["detection_scores"][0][:count].numpy(),
            out["detection_classes"][0][:count].numpy(),
            strict=True,
        ):
            if score >= 0.5:
                y0, x0, y1, x1 = box.astype(np.float64) * height
                name = CLASSES[int(label) - 1]["Name"]
                expected.append((map_box(c + x0, r + y0, c + x1, r + y1), name, float(score)))
    return expected


@pytest.mark.parametrize("form", ["saved_model", "frozen_graph"])
def test_object_detection_api_equals_tensorflow(tmp_path, scene, form):
    raster, data = scene
    module = ObjectDetectionAPI()
    if form == "saved_model":
        tf.saved_model.save(module, str(tmp_path / "od"), signatures=module.__call__)
        model_file = "od"
    else:
        model_file = freeze(module, tmp_path / "frozen_inference_graph.pb").name
    emd = write_emd(
        tmp_path,
        "od",
        Framework="TensorFlow",
        ModelConfiguration="ObjectDetectionAPI",
        ModelType="ObjectDetection",
        ModelFile=model_file,
        ExtractBands=[0, 1, 2],
        Classes=CLASSES,
    )
    assert isinstance(open_predictor(emd, "cpu"), TensorFlowPredictor)
    out = detect_objects(raster, tmp_path / "found.gpkg", emd, {"padding": 0})
    expected = odapi_expected(module, data)
    assert 2 <= len(expected) < 8  # the padding row (score 0.99) is never kept
    assert_same_detections(out, expected)


def test_deeplab_frozen_graph_equals_tensorflow(tmp_path, scene):
    raster, data = scene
    module = DeepLab()
    freeze(module, tmp_path / "deeplab.pb")
    classes = [{"Value": 2, "Name": "bright red"}, {"Value": 5, "Name": "bright green"}]
    emd = write_emd(
        tmp_path,
        "deeplab",
        Framework="TensorFlow",
        ModelConfiguration="DeepLab",
        ModelType="ImageClassification",
        ModelFile="deeplab.pb",
        ExtractBands=[0, 1, 2],
        Classes=classes,
    )
    out = classify_pixels(raster, tmp_path / "classes.tif", emd, {"padding": 0, "batch_size": 4})
    with rasterio.open(out[0]) as ds:
        classes_out = ds.read(1)
    for r, c, tile in tiles_of(data):
        own = module(tf.constant(tile.transpose(1, 2, 0)[None]))["SemanticPredictions"][0]
        np.testing.assert_array_equal(classes_out[r : r + TILE, c : c + TILE], own.numpy())
    assert set(np.unique(classes_out)) == {0, 2, 5}


# -------------------------------------------------------- Esri's example model definitions


def test_esri_examples_run_with_their_model_files(tmp_path, scene):
    """Esri's TensorFlow ObjectDetectionAPI, DeepLab and Keras classifier .emd files, unchanged,
    run when a model is put under the name they give."""
    _, data = scene
    folder = tmp_path / "odapi"
    folder.mkdir()
    emd = Path(shutil.copy(ESRI / "tensorflow_objectdetectionapi_coconuttree.emd", folder))
    with pytest.raises(InputError, match=r"frozen_inference_graph\.pb does not exist"):
        open_predictor(emd, "cpu")
    module = ObjectDetectionAPI(second_class=1.0)
    freeze(module, folder / "frozen_inference_graph.pb")
    predictor = open_predictor(emd, "cpu")
    assert (predictor.info.tile_height, predictor.info.class_names) == (850, {1: "Tree"})
    big = np.pad(data, ((0, 0), (0, 850 - 2 * TILE), (0, 850 - 2 * TILE)), mode="reflect")
    out = gpd.read_file(
        detect_objects(write_raster(tmp_path / "big.tif", big), tmp_path / "t.gpkg", emd)
    )
    own = module(tf.constant(big.transpose(1, 2, 0)[None]))
    scores = own["detection_scores"][0][:2].numpy()
    assert sorted(out["Confidence"]) == pytest.approx(sorted(100 * scores[scores >= 0.5]))
    assert set(out["Class"]) <= {"Tree"}

    folder = tmp_path / "deeplab"
    folder.mkdir()
    emd = Path(shutil.copy(ESRI / "tensorflow_deeplab_landclassification.emd", folder))
    freeze(DeepLab(), folder / "frozen_inference_graph.pb")
    predictor = open_predictor(emd, "cpu")
    assert isinstance(predictor, TensorFlowPredictor)
    assert predictor.info.tile_height == 256
    # DeepLab's class values are the Classes' Values (2 = Bare Land, 5 = Impervious Surface)
    probs = predictor.predict_pixels(data[None, :, :TILE, :TILE], np.ones((1, TILE, TILE), bool))
    own = DeepLab()(tf.constant(data[:, :TILE, :TILE].transpose(1, 2, 0)[None]))
    values = np.array([0, 0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(values[probs[0].argmax(0)], own["SemanticPredictions"][0])

    folder = tmp_path / "houses"
    folder.mkdir()
    emd = Path(shutil.copy(ESRI / "HouseDamageClassifier_ProBuiltin.emd", folder))
    with pytest.raises(InputError, match=r"Damage_Classification_Model_V7\.h5 does not exist"):
        open_predictor(emd, "cpu")
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    save_quietly(
        keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)),
        folder / "Damage_Classification_Model_V7.h5",
    )
    predictor = open_predictor(emd, "cpu")
    chips = np.full((2, 3, 256, 256), 100, np.uint8)
    chips[1, 0] = 250
    assert predictor.classify(chips, np.ones((2, 256, 256), bool)).shape == (2, 2)


def test_bad_models_are_one_line(tmp_path):
    """Files that are not models of their configuration, and models of the wrong task."""
    (tmp_path / "broken.keras").write_text("not a zip")
    emd = write_emd(
        tmp_path,
        "a",
        Framework="Keras",
        ModelType="ImageClassification",
        ModelFile="broken.keras",
        Classes=CLASSES,
    )
    with pytest.raises(InputError, match="cannot load Keras model") as err:
        open_predictor(emd, "cpu")
    assert "\n" not in str(err.value)
    freeze(DeepLab(), tmp_path / "deeplab.pb")
    emd = write_emd(
        tmp_path,
        "b",
        Framework="TensorFlow",
        ModelConfiguration="ObjectDetectionAPI",
        ModelType="ObjectDetection",
        ModelFile="deeplab.pb",
        Classes=CLASSES,
    )
    with pytest.raises(InputError, match="no input tensor image_tensor"):
        open_predictor(emd, "cpu")
    emd = write_emd(
        tmp_path,
        "c",
        Framework="TensorFlow",
        ModelConfiguration="DeepLab",
        ModelType="ObjectDetection",
        ModelFile="deeplab.pb",
        Classes=CLASSES,
    )
    with pytest.raises(InputError, match="set ModelType ImageClassification"):
        open_predictor(emd, "cpu")
