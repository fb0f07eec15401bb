"""Model registry: the ArcGIS table, building every type for any band count, the task
interfaces, training signal, argument checking and model/data fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.models.detection import detector_args_from_sizes, fcos_strides
from rasterlearn.models.registry import (
    MODEL_TYPES,
    build_model,
    check_model_fits_data,
    get_encoder,
    model_spec,
    model_types_for,
    set_encoder_trainable,
)

CHIP = 64


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from threads, and OpenMP threads on a busy machine (pytest-xdist
    workers, other jobs) slow everything down; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Reference §6.2 / §2.3, written out independently of the code under test.
EXPECTED = {
    "UNET": ("pixel", {"Classified_Tiles"}, "RESNET34", 8,
             ("ImageClassification", "ArcGISImageClassifier.py", "_unet", "UnetClassifier")),
    "CHANGEDETECTOR": ("pixel", {"ChangeDetection"}, "RESNET18", 2,
                       ("ImageClassification", "ArcGISImageClassifier.py", "change_detection",
                        "ChangeDetector")),
    "DEEPLAB": ("pixel", {"Classified_Tiles"}, "RESNET101", 8,
                ("ImageClassification", "ArcGISImageClassifier.py", "_deeplab_infrencing",
                 "DeepLab")),
    "RETINANET": ("detection", {"PASCAL_VOC_rectangles", "KITTI_rectangles"}, "RESNET50", 16,
                  ("ObjectDetection", "ArcGISObjectDetector.py", "_RetinaNet_Inference",
                   "RetinaNet")),
    "FASTERRCNN": ("detection", {"PASCAL_VOC_rectangles", "KITTI_rectangles"}, "RESNET50", 4,
                   ("ObjectDetection", "ArcGISObjectDetector.py", "_model_extension_inferencing",
                    "FasterRCNN")),
    "MASKRCNN": ("instance", {"RCNN_Masks"}, "RESNET50", 4,
                 ("InstanceDetection", "ArcGISInstanceDetector.py", "_maskrcnn_inferencing",
                  "MaskRCNN")),
    "FEATURE_CLASSIFIER": ("classification",
                           {"Labeled_Tiles", "MultiLabeled_Tiles", "Imagenet"}, "RESNET34", 64,
                           ("ObjectClassification", "ArcGISObjectClassifier.py",
                            "_FeatureClassifier", "FeatureClassifier")),
}  # fmt: skip


# Fewer region proposals and samples than torchvision's defaults keep the R-CNN tests fast.
SMALL_RCNN = {
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 64,
    "box_detections_per_img": 20,
}


def _small(model_type: str) -> dict | None:
    return SMALL_RCNN if model_type in ("FASTERRCNN", "MASKRCNN") else None


def _targets(task: str, n: int, k: int, size: int = CHIP) -> list[dict[str, torch.Tensor]]:
    """Two boxes per image (labels cycling through 1..k), with masks for instance models."""
    out = []
    for i in range(n):
        boxes = torch.tensor([[6.0, 8.0, 30.0, 28.0], [34.0 - i, 30.0, 58.0, 60.0]])
        t = {"boxes": boxes, "labels": torch.tensor([1 + i % k, 1 + (i + 1) % k])}
        if task == "instance":
            masks = torch.zeros(2, size, size, dtype=torch.uint8)
            for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
                m[y0:y1, x0:x1] = 1
            t["masks"] = masks
        out.append(t)
    return out


def _loss(model: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """One scalar training loss for any task (fixed targets)."""
    n = x.shape[0]
    if model.task == "pixel":
        y = torch.zeros(n, CHIP, CHIP, dtype=torch.long)
        y[:, 10:40, 10:40] = 1
        y[:, 45:, :20] = k
        return nn.functional.cross_entropy(model(x), y)
    if model.task == "classification":
        return nn.functional.cross_entropy(model(x), torch.arange(n) % k)
    return sum(model(list(x), _targets(model.task, n, k)).values())


# --------------------------------------------------------------------------- the table


def test_table_matches_the_arcgis_reference() -> None:
    for name, (task, formats, backbone, batch, emd) in EXPECTED.items():
        spec = MODEL_TYPES[name]
        assert spec.task == task
        assert set(spec.metadata_formats) == formats
        assert spec.default_backbone == backbone
        assert spec.default_batch_size == batch
        got = spec.emd
        assert (
            got.model_type,
            got.inference_function,
            got.model_configuration,
            got.model_name,
        ) == emd
    fcos = MODEL_TYPES["FCOS"]
    assert fcos.task == "detection" and fcos.default_backbone == "RESNET18"
    assert set(fcos.metadata_formats) == {"PASCAL_VOC_rectangles", "KITTI_rectangles"}
    assert set(MODEL_TYPES) == {*EXPECTED, "FCOS"}


def test_default_arguments_match_the_reference() -> None:
    arcgis = {t: [a.name for a in s.arguments if a.arcgis] for t, s in MODEL_TYPES.items()}
    assert arcgis["UNET"] == [
        "class_balancing",
        "mixup",
        "focal_loss",
        "ignore_classes",
        "dice_loss_fraction",
        "dice_loss_average",
    ]
    assert set(arcgis["DEEPLAB"]) == {
        "class_balancing",
        "mixup",
        "focal_loss",
        "ignore_classes",
        "pointrend",
        "dice_loss_fraction",
        "dice_loss_average",
        "keep_dilation",
    }
    assert arcgis["FEATURE_CLASSIFIER"] == ["mixup", "oversample", "backend"]
    assert arcgis["RETINANET"] == ["scales", "ratios"]
    assert arcgis["FCOS"] == []
    assert arcgis["CHANGEDETECTOR"] == ["attention_type"]
    assert MODEL_TYPES["CHANGEDETECTOR"].default_arguments()["attention_type"] == "PAM"
    rcnn = MODEL_TYPES["FASTERRCNN"].default_arguments()
    assert rcnn["rpn_nms_thresh"] == 0.7 and rcnn["box_positive_fraction"] == 0.25
    # proposal and sample counts: 0 = scaled to the chip, torchvision's values at 800 px
    assert rcnn["rpn_pre_nms_top_n_train"] == 0 and rcnn["box_batch_size_per_image"] == 0
    at_800 = build_model("FASTERRCNN", 1, 3, "resnet18", 800).model_args
    assert at_800["rpn_pre_nms_top_n_train"] == at_800["rpn_post_nms_top_n_train"] == 2000
    assert at_800["rpn_pre_nms_top_n_test"] == at_800["rpn_post_nms_top_n_test"] == 1000
    assert at_800["box_batch_size_per_image"] == 512
    assert len(arcgis["FASTERRCNN"]) == 16 and arcgis["MASKRCNN"] == arcgis["FASTERRCNN"]
    ret = MODEL_TYPES["RETINANET"].default_arguments()
    assert ret["scales"] == (1.0, 0.7937, 0.63) and ret["ratios"] == (0.5, 1.0, 2.0)
    unet = {a.name: a for a in MODEL_TYPES["UNET"].arguments}
    assert unet["ignore_classes"].type is tuple and unet["dice_loss_fraction"].type is float


def test_lookup_by_keyword_or_model_name() -> None:
    assert model_spec("unet").model_type == "UNET"
    assert model_spec("UnetClassifier").model_type == "UNET"
    assert model_spec("FasterRCNN").model_type == "FASTERRCNN"
    with pytest.raises(ParameterError, match="FEATURE_CLASSIFIER"):
        model_spec("YOLOV3")


# --------------------------------------------------------------------------- forward passes


@pytest.mark.parametrize("in_channels", [1, 3, 5])
@pytest.mark.parametrize("model_type", [t for t in MODEL_TYPES if t != "CHANGEDETECTOR"])
def test_forward_train_and_eval(model_type: str, in_channels: int) -> None:
    torch.manual_seed(0)
    k = 3 if in_channels == 3 else 2
    args = _small(model_type) if in_channels != 3 else None  # torchvision's defaults once
    model = build_model(model_type, k, in_channels, "resnet18", CHIP, model_args=args)
    assert model.training and model.model_type == model_type and model.num_classes == k
    assert model.in_channels == in_channels and model.backbone_name == "resnet18"
    assert get_encoder(model).first_conv.in_channels == in_channels
    x = torch.rand(2, in_channels, CHIP, CHIP)
    if model.task in ("pixel", "classification"):
        shape = (2, k + 1, CHIP, CHIP) if model.task == "pixel" else (2, k)
        assert tuple(model(x).shape) == shape
        model.eval()
        with torch.no_grad():
            assert tuple(model(x).shape) == shape
        return
    losses = model(list(x), _targets(model.task, 2, k))
    rcnn = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert (
        set(losses)
        == {
            "FCOS": {"classification", "bbox_regression", "bbox_ctrness"},
            "RETINANET": {"classification", "bbox_regression"},
            "FASTERRCNN": rcnn,
            "MASKRCNN": {*rcnn, "loss_mask"},
        }[model_type]
    )
    for value in losses.values():
        assert value.dim() == 0 and torch.isfinite(value) and value.requires_grad
    model.eval()
    with torch.no_grad():
        out = model(list(x))
    assert len(out) == 2
    for det in out:
        m = det["boxes"].shape[0]
        assert det["boxes"].shape == (m, 4) and det["scores"].shape == det["labels"].shape == (m,)
        assert ((det["labels"] >= 1) & (det["labels"] <= k)).all()
        assert ((det["scores"] >= 0) & (det["scores"] <= 1)).all()
        assert (det["boxes"] >= 0).all() and (det["boxes"] <= CHIP).all()
        if model.task == "instance":
            assert det["masks"].shape == (m, 1, CHIP, CHIP)


@pytest.mark.parametrize("model_type", ["UNET", "DEEPLAB"])
def test_pixel_models_any_size(model_type: str) -> None:
    model = build_model(model_type, 2, 4, "mobilenet_v3_small", CHIP).eval()
    with torch.no_grad():
        assert tuple(model(torch.rand(1, 4, 70, 90)).shape) == (1, 3, 70, 90)


@pytest.mark.parametrize("model_type", ["FCOS", "RETINANET", "FASTERRCNN"])
def test_detectors_do_not_resize(model_type: str) -> None:
    model = build_model(model_type, 2, 5, "mobilenet_v3_small", CHIP).eval()
    imgs = [torch.rand(5, 50, 70), torch.rand(5, 64, 64)]
    batch, _ = model.transform(imgs)
    assert batch.image_sizes == [(50, 70), (64, 64)]
    assert tuple(batch.tensors.shape) == (2, 5, 64, 96)  # only padded to a multiple of 32
    assert torch.equal(batch.tensors[0, :, :50, :70], imgs[0])  # no normalisation either
    with torch.no_grad():
        assert len(model(torch.rand(2, 5, CHIP, CHIP))) == 2  # a batch tensor works too
    with pytest.raises(InputError, match="3 bands but the model was built for 5"):
        model([torch.rand(3, 64, 64)])


def test_detector_labels_are_checked() -> None:
    model = build_model("FCOS", 2, 3, "resnet18", CHIP)
    bad = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([0])}
    with pytest.raises(InputError, match=r"1\.\.2"):
        model([torch.rand(3, CHIP, CHIP)], [bad])


@pytest.mark.parametrize("model_type", ["UNET", "FCOS", "MASKRCNN"])
def test_state_dict_round_trip(model_type: str) -> None:
    a = build_model(model_type, 2, 4, "resnet18", CHIP)
    b = build_model(model_type, 2, 4, "resnet18", CHIP)
    b.load_state_dict(a.state_dict())  # strict: the same architecture from the same arguments
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_detectors_accept_images_without_objects() -> None:
    model = build_model("FCOS", 2, 3, "resnet18", CHIP)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model(list(torch.rand(2, 3, CHIP, CHIP)), [empty, _targets("detection", 1, 2)[0]])
    assert all(torch.isfinite(v) for v in losses.values())


def test_default_backbones_build() -> None:
    for model_type, spec in MODEL_TYPES.items():
        model = build_model(model_type, 2, 4, chip_size=CHIP)
        assert model.backbone_name == spec.default_backbone.lower()
        assert get_encoder(model).name == spec.default_backbone.lower()


def test_classifier_multi_label() -> None:
    model = build_model(
        "FEATURE_CLASSIFIER", 4, 3, "mobilenet_v3_small", CHIP, model_args={"multi_label": "True"}
    )
    assert model.multi_label
    probs = model.probabilities(torch.zeros(1, 4))
    torch.testing.assert_close(probs, torch.full((1, 4), 0.5))


# --------------------------------------------------------------------------- training signal


@pytest.mark.parametrize("model_type", list(MODEL_TYPES))
def test_a_few_steps_on_a_fixed_batch_reduce_the_loss(model_type: str) -> None:
    torch.manual_seed(1)
    k = 2
    model = build_model(model_type, k, 4, "resnet18", CHIP, model_args=_small(model_type))
    x = torch.rand(2, 4, CHIP, CHIP)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(4):
        torch.manual_seed(2)  # the same proposal / anchor sampling every step
        loss = _loss(model, x, k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    torch.manual_seed(2)
    with torch.no_grad():
        final = float(_loss(model, x, k))
    assert final < 0.98 * losses[0], (losses, final)


def test_encoder_freezing() -> None:
    model = build_model("UNET", 2, 3, "resnet18", CHIP)
    set_encoder_trainable(model, False)
    assert not any(p.requires_grad for p in get_encoder(model).parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    set_encoder_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- arguments


def test_unknown_model_arguments_are_refused_listing_the_valid_ones() -> None:
    with pytest.raises(ParameterError) as err:
        build_model("UNET", 2, 3, "resnet18", CHIP, model_args={"dropout_rate": 0.1})
    message = str(err.value)
    assert "dropout_rate" in message and "class_balancing" in message
    assert "dice_loss_average" in message and "\n" not in message


def test_argument_values_are_parsed_and_checked() -> None:
    model = build_model(
        "RETINANET",
        2,
        3,
        "resnet18",
        CHIP,
        model_args={"scales": "1, 0.5", "ratios": "[1.0]", "anchor_sizes": "8, 16, 32, 64, 128"},
    )
    assert model.model_args["scales"] == (1.0, 0.5)
    assert model.anchor_generator.sizes[0] == (8.0, 4.0)
    assert model.anchor_generator.sizes[4] == (128.0, 64.0)
    assert model.anchor_generator.aspect_ratios[0] == (1.0,)
    unet = build_model(
        "UNET",
        2,
        3,
        "resnet18",
        CHIP,
        model_args={
            "CLASS_BALANCING": "true",
            "ignore_classes": "1,3",
            "dice_loss_average": "MACRO",
        },
    )
    assert unet.model_args["class_balancing"] is True
    assert unet.model_args["ignore_classes"] == (1, 3)
    assert unet.model_args["dice_loss_average"] == "macro"
    with pytest.raises(ParameterError, match="rpn_nms_thresh"):
        build_model("FASTERRCNN", 2, 3, "resnet18", CHIP, model_args={"rpn_nms_thresh": "high"})
    with pytest.raises(ParameterError, match="micro"):
        build_model("UNET", 2, 3, "resnet18", CHIP, model_args={"dice_loss_average": "mean"})
    with pytest.raises(ParameterError, match="5 values"):
        build_model("FASTERRCNN", 2, 3, "resnet18", CHIP, model_args={"anchor_sizes": "8, 16"})
    with pytest.raises(ParameterError, match="pointrend"):
        build_model("DEEPLAB", 2, 3, "resnet18", CHIP, model_args={"pointrend": True})
    with pytest.raises(ParameterError, match="num_classes"):
        build_model("UNET", 0, 3)
    with pytest.raises(ParameterError, match="MOBILENET_V3_SMALL"):
        build_model("UNET", 2, 3, backbone="vgg16")


def test_rcnn_arguments_reach_torchvision() -> None:
    model = build_model(
        "MASKRCNN",
        2,
        3,
        "resnet18",
        CHIP,
        model_args={"box_detections_per_img": 7, "rpn_nms_thresh": 0.6},
    )
    assert model.roi_heads.detections_per_img == 7
    assert model.rpn.nms_thresh == 0.6


@pytest.mark.parametrize(
    ("chip", "train", "test", "sampled"),
    [(64, 256, 128, 64), (256, 256, 128, 64), (512, 819, 410, 210), (1024, 2000, 1000, 512)],
)
def test_rcnn_sampling_scales_with_the_chip(chip: int, train: int, test: int, sampled: int):
    # torchvision's values times (chip / 800)^2, at most torchvision's, at least the floors
    model = build_model("FASTERRCNN", 2, 3, "mobilenet_v3_small", chip)
    assert model.rpn._pre_nms_top_n == {"training": train, "testing": test}
    assert model.rpn._post_nms_top_n == {"training": train, "testing": test}
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == sampled
    assert model.model_args["box_batch_size_per_image"] == sampled  # recorded for a rebuild
    given = build_model(
        "MASKRCNN", 2, 3, "mobilenet_v3_small", chip, model_args={"rpn_post_nms_top_n_test": 7}
    )
    assert given.rpn._post_nms_top_n["testing"] == 7
    assert given.rpn._pre_nms_top_n["testing"] == test
    with pytest.raises(ParameterError, match="box_batch_size_per_image"):
        build_model(
            "FASTERRCNN", 2, 3, "resnet18", chip, model_args={"box_batch_size_per_image": -1}
        )


def test_deeplab_dilation() -> None:
    kept = build_model("DEEPLAB", 2, 3, "resnet18", CHIP, model_args={"keep_dilation": True})
    assert get_encoder(kept).strides[-1] == 8
    assert get_encoder(build_model("DEEPLAB", 2, 3, "resnet50", CHIP)).strides[-1] == 16


# --------------------------------------------------------------------------- the light detector


@pytest.mark.parametrize(
    ("sizes", "strides"),
    [((10, 60), (4,)), ((16, 224), (4, 8, 16)), ((30, 64), (8,)), ((100, 1000), (32, 64))],
)
def test_fcos_levels_follow_object_sizes(sizes: tuple[int, int], strides: tuple[int, ...]):
    assert fcos_strides(*sizes) == strides
    model = build_model(
        "FCOS",
        2,
        3,
        "resnet18",
        128,
        model_args={"min_object_size": sizes[0], "max_object_size": sizes[1]},
    )
    assert model.backbone.strides == strides
    assert model.anchor_generator.sizes == tuple((float(s),) for s in strides)
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats.values()] == [128 // s for s in strides]


def test_fcos_defaults_to_the_chip_size() -> None:
    model = build_model("FCOS", 1, 3, "resnet18", 224)
    assert model.backbone.strides == (4, 8, 16)
    assert model.head.classification_head.conv[0].out_channels == 64


def test_args_from_label_statistics() -> None:
    sizes = [12.0] * 10 + [20.0] * 80 + [50.0] * 10
    fcos = detector_args_from_sizes("FCOS", sizes, chip_size=40)
    assert fcos == {"min_object_size": 12.0, "max_object_size": 40.0}
    anchors = detector_args_from_sizes("FASTERRCNN", sizes, chip_size=400)["anchor_sizes"]
    assert anchors == (12.0, 24.0, 48.0, 96.0, 192.0)
    assert detector_args_from_sizes("UNET", sizes, 400) == {}
    build_model("FASTERRCNN", 1, 3, "resnet18", CHIP, model_args={"anchor_sizes": anchors})


# --------------------------------------------------------------------------- model vs data


def test_models_fit_their_data_formats() -> None:
    for model_type, spec in MODEL_TYPES.items():
        for fmt in spec.metadata_formats:
            assert check_model_fits_data(model_type.lower(), fmt.upper()) is spec
    assert model_types_for("PASCAL_VOC_rectangles")[0] == "FCOS"
    assert model_types_for("classified_tiles") == ("UNET", "DEEPLAB")
    assert model_types_for("Export_Tiles") == ()


def test_model_data_mismatch_is_a_one_line_parameter_error() -> None:
    with pytest.raises(ParameterError) as err:
        check_model_fits_data("UNET", "PASCAL_VOC_rectangles")
    message = str(err.value)
    assert "\n" not in message
    assert "UNET" in message and "Classified_Tiles" in message and "FASTERRCNN" in message
    with pytest.raises(ParameterError, match="no model type"):
        check_model_fits_data("MASKRCNN", "Export_Tiles")
    with pytest.raises(ParameterError, match="unknown metadata format"):
        check_model_fits_data("UNET", "GeoJSON")
    with pytest.raises(ParameterError, match="unknown model type"):
        check_model_fits_data("SSD", "PASCAL_VOC_rectangles")


def test_a_change_detector_shares_its_encoder_between_the_dates() -> None:
    model = build_model("CHANGEDETECTOR", num_classes=3, in_channels=8, backbone="resnet18")
    assert model.task == "pixel" and model.encoder.first_conv.in_channels == 4
    x = torch.randn(2, 8, 48, 48)
    model.eval()
    with torch.no_grad():
        out = model(x)
        same = model(torch.cat([x[:, :4], x[:, :4]], dim=1))
        swapped = model(torch.cat([x[:, 4:], x[:, :4]], dim=1))
    assert out.shape == (2, 4, 48, 48)
    assert not torch.allclose(out, swapped)  # the direction of the change matters
    # two identical dates: every difference is 0, whatever the image
    blank = model(torch.zeros(1, 8, 48, 48))
    assert torch.allclose(same, blank.expand_as(same), atol=1e-5)
    with pytest.raises(ParameterError, match="even number"):
        build_model("CHANGEDETECTOR", num_classes=3, in_channels=5)
