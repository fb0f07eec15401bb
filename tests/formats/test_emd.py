"""ModelDefinition against hand-built emds in the shapes real files have (reference section 2.4).

The fixtures are built by hand from the reference's description of real files (arcgis.learn
2.2 FasterRCNN, 1.8.4 UnetClassifier, an older MaskRCNN, the Pro 2.5 export template, Esri's
custom-framework samples, a Pro 2.7+ training-data emd). Round trips are checked against
``json.loads`` of the files, key order included.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.emd import ClassInfo, ModelConfigurationSpec, ModelDefinition

CELL = {
    "x": 0.036500000000000005,
    "y": 0.03650000000000001,
    "spatialReference": {"wkid": 32617, "latestWkid": 32617},
}

FASTER_RCNN = {  # arcgis.learn 2.2.0.1, a ModelExtension detector
    "Framework": "arcgis.learn.models._inferencing",
    "ModelType": "ObjectDetection",
    "InferenceFunction": "ArcGISObjectDetector.py",
    "ModelConfiguration": "_model_extension_inferencing",
    "ExtractBands": [0, 1, 2],
    "Classes": [{"Value": 1, "Name": "Car", "Color": [174, 20, 39]}],
    "ModelConfigurationFile": "ModelConfiguration.py",
    "ModelFileConfigurationClass": "MyFasterRCNN",
    "DatasetType": "PASCAL_VOC_rectangles",
    "Kwargs": {"pretrained_backbone": True},
    "ModelFormat": "NCHW",
    "MinCellSize": CELL,
    "MaxCellSize": CELL,
    "SupportsVariableTileSize": False,
    "ArcGISLearnVersion": "2.2.0.1",
    "monitored_valid_loss": 0.25448712706565857,
    "ModelFile": "UTMCarsV3_FasterRCNN_RN50_TS416.pth",
    "ImageHeight": 416,
    "ImageWidth": 416,
    "ImageSpaceUsed": "MAP_SPACE",
    "LearningRate": "8.3176e-04",
    "ModelName": "FasterRCNN",
    "backend": "pytorch",
    "ModelParameters": {"backbone": "resnet50", "backend": "pytorch"},
    "average_precision_score": {"Car": 0.9303845167160034},
    "resize_to": None,
    "IsMultispectral": False,
}

PER_CLASS = {
    "NoData": {"precision": 0.9612, "recall": 0.9801, "f1": 0.9705},
    "Water": {"precision": 0.9187, "recall": 0.8812, "f1": 0.8996},
    "Building": {"precision": 0.8421, "recall": 0.7903, "f1": 0.8154},
}

UNET_184 = {  # arcgis.learn 1.8.4, multispectral
    "Framework": "arcgis.learn.models._inferencing",
    "ModelConfiguration": "_unet",
    "ModelType": "ImageClassification",
    "InferenceFunction": "ArcGISImageClassifier.py",
    "ExtractBands": [0, 1, 2, 3],
    "ignore_mapped_class": [],
    "Classes": [
        {"Value": 1, "Name": "Water", "Color": [0, 112, 255]},
        {"Value": 2, "Name": "Building", "Color": [255, 0, 0]},
    ],
    "SupportsVariableTileSize": True,
    "ArcGISLearnVersion": "1.8.4",
    "ModelFile": "30e.pth",
    "ImageHeight": 256,
    "ImageWidth": 256,
    "ImageSpaceUsed": "MAP_SPACE",
    "LearningRate": "1.0965e-04",
    "ModelName": "UnetClassifier",
    "backend": "pytorch",
    "ModelParameters": {"backbone": "resnet34", "backend": "pytorch"},
    "accuracy": "9.5355e-01",
    "per_class_metrics": json.dumps(PER_CLASS),
    "resize_to": None,
    "IsMultispectral": True,
    "IsImageNetNormalization": False,
    "ImageryType": "ms",
    "NormalizationStats": {
        "band_min_values": [12.0, 30.0, 11.0, 0.0],
        "band_max_values": [2512.0, 2903.0, 3010.0, 4800.0],
        "band_mean_values": [410.2, 611.9, 520.3, 1903.7],
        "band_std_values": [120.5, 160.1, 140.9, 610.2],
        "scaled_min_values": [0.0, 0.0, 0.0, 0.0],
        "scaled_max_values": [1.0, 1.0, 1.0, 1.0],
        "scaled_mean_values": [0.1589, 0.2077, 0.1699, 0.3966],
        "scaled_std_values": [0.0467, 0.0543, 0.046, 0.1271],
    },
    "DoNormalize": True,
}

MASK_RCNN_OLD = {  # before ModelType/ModelFormat/ArcGISLearnVersion were written
    "Framework": "arcgis.learn.models._inferencing",
    "InferenceFunction": "ArcGISInstanceDetector.py",
    "ModelConfiguration": "_maskrcnn_inferencing",
    "ExtractBands": [0, 1, 2],
    "Classes": [{"Value": 1, "Name": "Building", "Color": [150, 200, 30]}],
    "MaskRCNNkwargs": {},
    "ModelFile": "111.pth",
    "ImageHeight": 400,
    "ImageWidth": 400,
    "ImageSpaceUsed": "PIXEL_SPACE",
    "LearningRate": "slice('1.0000e-04', '1.0000e-03', None)",
    "ModelName": "MaskRCNN",
    "ModelParameters": {"backbone": "resnet50"},
    "resize_to": None,
}

PRO25_TEMPLATE = {  # the placeholder emd Pro 2.5 wrote at the root of an export
    "Framework": "e.g. CNTK",
    "ModelConfiguration": "e.g. FasterRCNN",
    "ModelType": "e.g. ObjectDetection",
    "ModelFile": "e.g. .\\CoconutTreeDetection.model",
    "ImageHeight": "e.g. 256",
    "ImageWidth": "e.g. 256",
    "ExtractBands": "e.g. [0,1,2]",
    "DataRange": "e.g. [0, 1.0]",
    "ModelPadding": "e.g. 64",
    "BatchSize": "e.g. 1",
    "PerProcessGPUMemoryFraction": "e.g. 0.8",
    "Classes": [
        {"Value": 1, "Name": "Tree", "Color": [-1, -1, -1]},
        {"Value": 2, "Name": "Pool", "Color": [0, 112, 255]},
    ],
    "WellKnownBandNames (FYI, these band names can be used in ExtractBands)": [
        "Red",
        "Green",
        "Blue",
        "Infrared",
        "NearInfrared",
        "Panchromatic",
    ],
}

CUSTOM_TF = {  # an Esri custom-framework sample: ModelConfiguration as an object
    "Framework": "TensorFlow",
    "ModelConfiguration": {
        "Name": "ObjectDetectionAPI",
        "Config": {"PaddingType": "ZERO", "min_score": 0.4},
    },
    "ModelFile": ".\\frozen_inference_graph.pb",
    "ModelType": "ObjectDetection",
    "ImageHeight": 850,
    "ImageWidth": 850,
    "ExtractBands": ["Red", "Green", "Blue"],
    "DataRange": [0.1, 1.0],
    "BatchSize": 1,
    "Threshold": 0.5,
    "PerProcessGPUMemoryFraction": 0.8,
    "Classes": [{"Value": 1, "Name": "Tree", "Color": [0, 255, 0]}],
    "ModelName": "CoconutTree_TF_ObjectDetectionAPI",
    "Version": "2019.02",
}

KERAS_MASK_RCNN = {  # ModelConfiguration {Name, Architecture, Config} with path strings
    "Framework": "Keras",
    "ModelConfiguration": {
        "Name": "MaskRCNN",
        "Architecture": ".\\mrcnn\\spacenet",
        "Config": ".\\mrcnn\\spacenet",
    },
    "ModelFile": ".\\mask_rcnn_spacenet_0053.h5",
    "ModelType": "ObjectDetection",
    "ImageHeight": 650,
    "ImageWidth": 650,
    "ExtractBands": [0, 1, 2],
    "Classes": [{"Value": 1, "Name": "Building", "Color": [0, 255, 0]}],
    "ModelName": "Keras_MaskRCNN",
    "Version": "2019.02",
}

TRAINING_DATA_EMD = {  # Pro 2.7+ export, Labeled_Tiles with class rows keyed ClassValue
    "MetaDataMode": "Labeled_Tiles",
    "ImageHeight": 256,
    "ImageWidth": 256,
    "ImageSpaceUsed": "MAP_SPACE",
    "Classes": [
        {"ClassValue": 1, "ClassName": "Damaged", "Color": [-1, -1, -1]},
        {"ClassValue": 2, "ClassName": "Undamaged", "Color": [-1, -1, -1]},
    ],
    "InputRastersProps": {"RasterCount": 1, "SensorName": "", "BandNames": ["Red", "Green"]},
    "AllTilesStats": [
        {"BandName": "Red", "Min": 0, "Max": 255, "Mean": 101.3, "StdDev": 40.2},
        {"BandName": "Green", "Min": 2, "Max": 250, "Mean": 98.1, "StdDev": 38.7},
    ],
    "MinCellSize": CELL,
    "MaxCellSize": CELL,
    "CropTileMode": "Fixed_Size",
    "BlackenAroundFeature": False,
    "IsMultidimensional": False,
}

FIXTURES = {
    "faster_rcnn_2.2": FASTER_RCNN,
    "unet_1.8.4": UNET_184,
    "mask_rcnn_old": MASK_RCNN_OLD,
    "pro25_template": PRO25_TEMPLATE,
    "custom_tensorflow": CUSTOM_TF,
    "keras_mask_rcnn": KERAS_MASK_RCNN,
    "training_data": TRAINING_DATA_EMD,
}


def ordered(value: Any) -> Any:
    """JSON data with every object as a list of (key, value) pairs: equality checks order."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


def write_emd(path: Path, data: dict, **dumps: Any) -> Path:
    path.write_text(json.dumps(data, **({"indent": 4} | dumps)), encoding="utf-8")
    return path


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_of_arcgis_learn_text_is_byte_identical(tmp_path: Path, name: str) -> None:
    source = write_emd(tmp_path / f"{name}.emd", FIXTURES[name])
    out = ModelDefinition.load(source).save(tmp_path / "out" / "copy.emd")
    assert out.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_keeps_every_key_value_and_order(tmp_path: Path, name: str) -> None:
    # Written differently from us (indent 2, BOM, newline): the data must survive, not the bytes.
    text = "\ufeff" + json.dumps(FIXTURES[name], indent=2) + "\n"
    source = tmp_path / f"{name}.emd"
    source.write_text(text, encoding="utf-8")
    out = ModelDefinition.load(source).save(tmp_path / "copy.emd")
    written = out.read_text(encoding="utf-8")
    assert ordered(json.loads(written)) == ordered(json.loads(text.lstrip("\ufeff")))
    assert written.startswith('{\n    "')  # json indent=4, as arcgis.learn writes


def test_faster_rcnn_typed_values() -> None:
    md = ModelDefinition.load(json.dumps(FASTER_RCNN))
    assert md.model_type == "ObjectDetection"
    assert md.framework == "arcgis.learn.models._inferencing"
    assert md.model_configuration == "_model_extension_inferencing"
    assert md.tile_size == (416, 416)
    assert md.extract_bands == [0, 1, 2]
    assert md.classes == [ClassInfo(value=1, name="Car", color=(174, 20, 39))]
    assert md.min_cell_size is not None
    assert md.min_cell_size.x == CELL["x"]
    assert md.min_cell_size.spatial_reference == {"wkid": 32617, "latestWkid": 32617}
    assert md.supports_variable_tile_size is False
    assert md.learning_rate == "8.3176e-04"
    assert md.arcgis_learn_version == "2.2.0.1"
    assert md.model_parameters == {"backbone": "resnet50", "backend": "pytorch"}
    assert md.kwargs == {"pretrained_backbone": True}
    assert md.model_file_configuration_class == "MyFasterRCNN"
    assert md.resize_to is None
    assert md.is_multispectral is False
    assert md.monitored == {"valid_loss": FASTER_RCNN["monitored_valid_loss"]}
    assert md.metrics() == {
        "average_precision_score": {"Car": FASTER_RCNN["average_precision_score"]["Car"]},
        "monitored_valid_loss": FASTER_RCNN["monitored_valid_loss"],
    }
    # Esri names work as attributes and through get().
    assert md.ImageHeight == 416
    assert md.get("ModelFileConfigurationClass") == "MyFasterRCNN"
    assert md.get("monitored_valid_loss") == FASTER_RCNN["monitored_valid_loss"]
    assert md.get("NoSuchKey", "default") == "default"


def test_unet_metrics_strings_and_normalization_stats() -> None:
    md = ModelDefinition.load(json.dumps(UNET_184))
    assert md.accuracy == "9.5355e-01"
    assert md.per_class_metrics == json.dumps(PER_CLASS)  # kept a string
    assert md.per_class_metrics_dict() == PER_CLASS
    assert md.metrics()["accuracy"] == pytest.approx(0.95355)
    assert md.metrics()["per_class_metrics"] == PER_CLASS
    assert md.ignore_mapped_class == []
    assert md.normalization_stats is not None
    assert md.normalization_stats.band_max_values == [2512.0, 2903.0, 3010.0, 4800.0]
    assert md.normalization_stats.scaled_std_values == [0.0467, 0.0543, 0.046, 0.1271]
    assert md.is_imagenet_normalization is False and md.do_normalize is True


def test_old_mask_rcnn_has_slice_learning_rate_and_no_model_type() -> None:
    md = ModelDefinition.load(json.dumps(MASK_RCNN_OLD))
    assert md.learning_rate == "slice('1.0000e-04', '1.0000e-03', None)"
    assert md.model_type is None and md.model_format is None and md.arcgis_learn_version is None
    assert md.model_extra == {"MaskRCNNkwargs": {}}
    assert md.image_space_used == "PIXEL_SPACE"


def test_pro25_template_placeholders_are_missing_but_written_back(tmp_path: Path) -> None:
    md = ModelDefinition.load(json.dumps(PRO25_TEMPLATE))
    for key in ("Framework", "ModelConfiguration", "ModelType", "ModelFile", "ImageHeight"):
        assert md.get(key) is None, key
    assert md.extract_bands is None and md.data_range is None and md.batch_size is None
    assert md.per_process_gpu_memory_fraction is None and md.tile_size is None
    assert [c.color for c in md.classes or []] == [None, (0, 112, 255)]
    assert md.resolve("ModelFile") is None
    assert md.to_dict() == PRO25_TEMPLATE
    # Setting a placeholder key writes the real value in the placeholder's place.
    md.image_height = 256
    out = md.to_dict()
    assert list(out) == list(PRO25_TEMPLATE)
    assert out["ImageHeight"] == 256 and out["ImageWidth"] == "e.g. 256"


def test_custom_framework_model_configuration_object() -> None:
    md = ModelDefinition.load(json.dumps(CUSTOM_TF))
    assert isinstance(md.model_configuration, ModelConfigurationSpec)
    assert md.model_configuration.name == "ObjectDetectionAPI"
    assert md.model_configuration.config == {"PaddingType": "ZERO", "min_score": 0.4}
    assert md.extract_bands == ["Red", "Green", "Blue"]
    assert md.data_range == [0.1, 1.0] and md.threshold == 0.5 and md.version == "2019.02"
    keras = ModelDefinition.load(json.dumps(KERAS_MASK_RCNN))
    assert isinstance(keras.model_configuration, ModelConfigurationSpec)
    assert keras.model_configuration.architecture == ".\\mrcnn\\spacenet"
    assert keras.model_configuration.config == ".\\mrcnn\\spacenet"


def test_training_data_emd_class_value_rows() -> None:
    md = ModelDefinition.load(json.dumps(TRAINING_DATA_EMD))
    assert [(c.value, c.name, c.color) for c in md.classes or []] == [
        (1, "Damaged", None),
        (2, "Undamaged", None),
    ]
    assert md.metadata_mode == "Labeled_Tiles" and md.crop_tile_mode == "Fixed_Size"
    assert md.blacken_around_feature == 0 and md.is_multidimensional is False
    assert md.input_rasters_props == TRAINING_DATA_EMD["InputRastersProps"]
    # Renaming a class keeps the row's keys as read (ClassValue/ClassName, colour -1s).
    assert md.classes is not None
    md.classes[1].name = "Intact"
    rows = md.to_dict()["Classes"]
    assert rows[0] == TRAINING_DATA_EMD["Classes"][0]
    assert ordered(rows[1]) == ordered(
        {"ClassValue": 2, "ClassName": "Intact", "Color": [-1, -1, -1]}
    )


def test_float_learning_rate_reads_as_arcgis_string_and_writes_back_as_given() -> None:
    data = {"ModelName": "X", "LearningRate": 0.00083176, "accuracy": 0.953551}
    md = ModelDefinition.load(data)
    assert md.learning_rate == "8.3176e-04"
    assert md.accuracy == "9.5355e-01"
    assert md.to_dict() == data
    md.learning_rate = 0.001  # a float set later is written the arcgis.learn way
    assert md.to_dict()["LearningRate"] == "1.0000e-03"
    assert data["LearningRate"] == 0.00083176  # the mapping read is not changed


def test_numbers_given_as_text_read_as_numbers_and_write_back_as_text() -> None:
    data = {"ImageHeight": "256", "ImageWidth": 256.0, "Version": 2019.02}
    md = ModelDefinition.load(data)
    assert (md.image_height, md.image_width, md.version) == (256, 256, "2019.02")
    assert ordered(md.to_dict()) == ordered(data)


def test_changes_stay_in_place_and_new_keys_go_last() -> None:
    md = ModelDefinition.load(json.dumps(FASTER_RCNN))
    md.image_width = 512
    md.set("ModelName", "FasterRCNN2")
    md.set("Description", "cars")
    md.set("monitored_average_precision", 0.5)  # an extra key
    md.Kwargs = {"pretrained_backbone": False}  # an Esri name as attribute
    assert md.classes is not None
    md.classes.append(ClassInfo(value=2, name="Truck"))
    out = md.to_dict()
    expected = dict(FASTER_RCNN)
    expected.update(
        ImageWidth=512,
        ModelName="FasterRCNN2",
        Kwargs={"pretrained_backbone": False},
        Classes=[*FASTER_RCNN["Classes"], {"Value": 2, "Name": "Truck"}],
        Description="cars",
        monitored_average_precision=0.5,
    )
    assert ordered(out) == ordered(expected)


def test_remove_and_model_built_in_code() -> None:
    md = ModelDefinition.load(json.dumps(FASTER_RCNN))
    md.remove("MaxCellSize")
    md.remove("monitored_valid_loss")
    md.remove("resize_to")
    md.remove("NotThere")
    expected = {
        k: v
        for k, v in FASTER_RCNN.items()
        if k not in ("MaxCellSize", "monitored_valid_loss", "resize_to")
    }
    assert ordered(md.to_dict()) == ordered(expected)
    # Built in code: Python names are written under their Esri keys, in the order given.
    built = ModelDefinition(model_type="ObjectDetection", image_height=256, image_width=256)
    assert list(built.to_dict().items()) == [
        ("ModelType", "ObjectDetection"),
        ("ImageHeight", 256),
        ("ImageWidth", 256),
    ]


# -- sources -----------------------------------------------------------------------------------


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        ModelDefinition.load(tmp_path / "nope.emd")


def test_folders_and_packages_are_opened_by_load_model_definition(tmp_path: Path) -> None:
    package = tmp_path / "m.dlpk"
    package.write_bytes(b"zip")
    for source in (tmp_path, package):
        with pytest.raises(InputError, match=r"not an \.emd") as err:
            ModelDefinition.load(source)
        assert "load_model_definition" in (err.value.hint or "")


def test_resolve_relative_backslash_absolute_and_pro_files(tmp_path: Path) -> None:
    emd = write_emd(tmp_path / "m.emd", {**KERAS_MASK_RCNN, "InferenceFunction": "My.py"})
    md = ModelDefinition.load(emd)
    assert md.resolve() == tmp_path.absolute() / "mask_rcnn_spacenet_0053.h5"
    assert md.resolve("InferenceFunction") == tmp_path.absolute() / "My.py"
    md.model_file = str(tmp_path / "elsewhere" / "w.pth")
    assert md.resolve("ModelFile") == tmp_path / "elsewhere" / "w.pth"
    md.inference_function = "[Functions]System\\DeepLearning\\ArcGISLearn\\ArcGISObjectDetector.py"
    assert md.resolve("InferenceFunction") is None
    assert md.resolve("ModelConfigurationFile") is None  # absent
    with pytest.raises(ParameterError, match="not a file name"):
        md.resolve("Classes")
    text_only = ModelDefinition.load(json.dumps(FASTER_RCNN))
    with pytest.raises(InputError, match="relative file name"):
        text_only.resolve("ModelFile")
    assert ModelDefinition.load(json.dumps(FASTER_RCNN), base_folder=tmp_path).resolve() == (
        tmp_path.absolute() / FASTER_RCNN["ModelFile"]
    )


def test_save_is_atomic_and_refuses_without_overwrite(tmp_path: Path) -> None:
    md = ModelDefinition.load(json.dumps(MASK_RCNN_OLD))
    target = tmp_path / "out" / "m.emd"
    assert md.save(target) == target.absolute()
    assert md.path == target.absolute() and md.base_folder == target.parent.absolute()
    assert md.save(target) == target.absolute()  # overwrite by default
    with pytest.raises(Exception, match="already exists"):
        md.save(target, overwrite=False)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.emd"]
    assert target.read_text() == json.dumps(MASK_RCNN_OLD, indent=4)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ImageHeight": "abc"}, "esri emd key ImageHeight holds 'abc', expected a whole number"),
        ({"ImageWidth": 12.5}, "esri emd key ImageWidth holds 12.5, expected a whole number"),
        (
            {"ExtractBands": "0,1,2"},
            "esri emd key ExtractBands holds '0,1,2', expected a list of band indices or band "
            "names",
        ),
        (
            {"ExtractBands": [0, 1.5]},
            "esri emd key ExtractBands[1] holds 1.5, expected a band index",
        ),
        (
            {"Classes": [{"Value": 1, "Name": "a"}, {"Value": "two", "Name": "b"}]},
            "esri emd key Classes[1].Value holds 'two', expected a whole number",
        ),
        (
            {"Classes": [{"Name": "a", "Color": [1, 2, 3]}]},
            "esri emd key Classes[0].Value is missing, expected a whole number",
        ),
        (
            {"Classes": [{"Value": 1, "Name": "a", "Color": [300, 0, 0]}]},
            "esri emd key Classes[0].Color holds [300, 0, 0], expected [red, green, blue]",
        ),
        (
            {"ModelConfiguration": 5},
            "esri emd key ModelConfiguration holds 5, expected a module name or an object",
        ),
        (
            {"ModelConfiguration": {"Config": "x"}},
            "esri emd key ModelConfiguration.Name is missing, expected a string",
        ),
        (
            {"SupportsVariableTileSize": "maybe"},
            "esri emd key SupportsVariableTileSize holds 'maybe', expected true or false",
        ),
        (
            {"per_class_metrics": "{not json"},
            "esri emd key per_class_metrics holds '{not json', expected a JSON object encoded",
        ),
        (
            {"monitored_valid_loss": "low"},
            "esri emd key monitored_valid_loss holds 'low', expected a number",
        ),
        ({"MinCellSize": {"x": "a", "y": 1}}, "esri emd key MinCellSize.x holds 'a', expected a"),
        ({"DataRange": [0]}, "esri emd key DataRange holds [0], expected [min, max]"),
        (
            {"average_precision_score": {"Car": "high"}},
            "esri emd key average_precision_score.Car holds 'high', expected a number",
        ),
        (
            {"ImageSpaceUsed": "MAP"},
            "esri emd key ImageSpaceUsed holds 'MAP', expected MAP_SPACE or PIXEL_SPACE",
        ),
        ({"CropSizeFixed": 2}, "esri emd key CropSizeFixed holds 2, expected 0 or 1"),
        (
            {"NormalizationStats": {"band_min_values": [0.0, "x"]}},
            "esri emd key NormalizationStats.band_min_values[1] holds 'x', expected a number",
        ),
    ],
)
def test_validation_error_names_key_value_and_expectation(
    tmp_path: Path, data: dict, message: str
) -> None:
    emd = write_emd(tmp_path / "bad.emd", {**MASK_RCNN_OLD, **data})
    with pytest.raises(InputError) as err:
        ModelDefinition.load(emd)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    assert str(emd) in (err.value.hint or "")


def test_set_invalid_value_is_a_parameter_error_and_changes_nothing() -> None:
    md = ModelDefinition.load(json.dumps(FASTER_RCNN))
    with pytest.raises(ParameterError, match=r"ImageHeight cannot be 'abc', expected a whole"):
        md.set("ImageHeight", "abc")
    with pytest.raises(ParameterError, match=r"monitored_valid_loss cannot be 'low', expected a"):
        md.set("monitored_valid_loss", "low")
    with pytest.raises(ParameterError, match=r"monitored_new cannot be 'low', expected a number"):
        md.set("monitored_new", "low")
    with pytest.raises(ValidationError):
        md.monitored_valid_loss = "low"
    assert ordered(md.to_dict()) == ordered(FASTER_RCNN)
    md.set("ImageHeight", None)  # still valid after the refusals
    assert md.to_dict()["ImageHeight"] is None


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    emd = tmp_path / "broken.emd"
    emd.write_text('{\n    "ModelType": "ObjectDetection",\n    "ImageHeight": ,\n}')
    with pytest.raises(InputError) as err:
        ModelDefinition.load(emd)
    assert str(emd) in err.value.message
    assert "line 3" in err.value.message
    listed = tmp_path / "list.emd"
    listed.write_text("[1, 2]")
    with pytest.raises(InputError, match="holds a JSON list, expected an object"):
        ModelDefinition.load(listed)
    with pytest.raises(InputError, match="model definition text is not valid JSON"):
        ModelDefinition.load('{"ModelType": }')


def test_formats_modules_do_not_import_torch() -> None:
    formats = Path(__file__).parents[2] / "src" / "rasterlearn" / "formats"
    for name in ("emd.py", "dlpk.py", "model_source.py"):
        tree = ast.parse((formats / name).read_text())
        modules = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(m.split(".")[0] in ("torch", "torchvision", "lightning") for m in modules)
        ours = {m for m in modules if m.startswith("rasterlearn")}
        allowed = {"rasterlearn.errors", "rasterlearn.outputs", "rasterlearn.formats.emd"}
        assert ours <= allowed | {"rasterlearn.formats.dlpk"}, ours
