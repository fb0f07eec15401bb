"""TrainingData (merging, splitting) and the torch datasets on small synthetic exports.

Expected targets are read here straight from the label files (XML / KITTI text with the
standard library, label rasters with rasterio), not through rasterlearn's reader.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from rasterlearn.data.augment import Augmenter, boxes_from_masks
from rasterlearn.data.datasets import (
    ClassificationDataset,
    DetectionDataset,
    SegmentationDataset,
    collate_detection,
)
from rasterlearn.data.merge import TrainingData
from rasterlearn.data.normalization import Normalizer
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.chips import ClassInfo
from rasterlearn.synthetic import make_scene
from rasterlearn.tools.export_training_data import export_training_data

TILE = 64
FORMATS = (
    "PASCAL_VOC_rectangles",
    "KITTI_rectangles",
    "Classified_Tiles",
    "RCNN_Masks",
    "Labeled_Tiles",
    "MultiLabeled_Tiles",
    "Imagenet",
)


def _export(scene, out: Path, fmt: str, tile: int = TILE, **kwargs) -> Path:
    export_training_data(
        scene.raster_path,
        out,
        scene.polygons_path,
        tile_size_x=tile,
        tile_size_y=tile,
        stride_x=tile,
        stride_y=tile,
        metadata_format=fmt,
        progress=False,
        **kwargs,
    )
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("datasets")
    scene = make_scene(root / "scene", width=256, height=192, seed=3, cell=40)
    out = {fmt: _export(scene, root / fmt, fmt) for fmt in FORMATS}
    scene_b = make_scene(root / "scene_b", width=192, height=128, seed=9)
    out["VOC_b"] = _export(scene_b, root / "VOC_b", "PASCAL_VOC_rectangles", tile=96)
    multi = make_scene(
        root / "scene5", width=192, height=128, bands=5, dtype="uint16", seed=4, nodata=0,
        nodata_border=10,
    )  # fmt: skip
    out["RCNN_5band"] = _export(multi, root / "RCNN_5band", "RCNN_Masks")
    out["VOC_5band"] = _export(multi, root / "VOC_5band", "PASCAL_VOC_rectangles")
    float_scene = make_scene(root / "scenef", width=128, height=128, dtype="float32", seed=5)
    out["Classified_float"] = _export(float_scene, root / "Classified_float", "Classified_Tiles")
    return out


def _valid_pixels(paths: list[Path]) -> np.ndarray:
    parts = []
    for path in paths:
        with rasterio.open(path) as ds:
            parts.append(ds.read().astype(np.float64)[:, ds.dataset_mask() > 0])
    return np.concatenate(parts, axis=1)


def _class_values(folder: Path) -> list[int]:
    return sorted(c.value for c in TrainingData(folder).classes)


# --- merging and splitting -------------------------------------------------------------------


def test_merge_stats_equal_union_of_chips(exports: dict[str, Path]) -> None:
    a, b = exports["PASCAL_VOC_rectangles"], exports["VOC_b"]
    data = TrainingData([a, b])
    assert len(data) == len(TrainingData(a)) + len(TrainingData(b))
    assert data.chips == (*TrainingData(a).chips, *TrainingData(b).chips)
    assert data.folder_of(len(data) - 1).path == b and data.folder_of(0).path == a
    pixels = _valid_pixels([c.image for c in data.chips])
    assert len(data.band_stats) == 3
    for band, stats in zip(pixels, data.band_stats, strict=True):
        assert stats.num == band.size
        assert stats.min == band.min() and stats.max == band.max()
        assert stats.m1 == pytest.approx(band.mean(), rel=1e-12)
        assert stats.std == pytest.approx(band.std(), rel=1e-9)
    values = {c.value for f in (a, b) for c in TrainingData(f).classes}
    assert [c.value for c in data.classes] == sorted(values)
    assert data.tile_height == 96 and data.tile_width == 96
    # A dataset over both pads the 64 px chips to the largest tile; boxes stay where they are.
    ds = DetectionDataset(data)
    image, target = ds[0]
    alone, alone_target = DetectionDataset(TrainingData(a))[0]
    assert image.shape == (3, 96, 96) and torch.equal(image[:, :TILE, :TILE], alone)
    assert image[:, TILE:, :].abs().sum() == 0
    assert torch.equal(target["boxes"], alone_target["boxes"])
    assert ds[len(ds) - 1][0].shape == (3, 96, 96)


def test_merge_refuses_mixed_formats_and_band_counts(exports: dict[str, Path]) -> None:
    voc, kitti = exports["PASCAL_VOC_rectangles"], exports["KITTI_rectangles"]
    with pytest.raises(InputError) as err:
        TrainingData([voc, kitti])
    message = str(err.value)
    assert "\n" not in message
    assert str(voc) in message and str(kitti) in message
    assert "PASCAL_VOC_rectangles" in message and "KITTI_rectangles" in message
    with pytest.raises(InputError, match=r"3 bands.*5"):
        TrainingData([voc, exports["VOC_5band"]])
    with pytest.raises(InputError, match="no training-data folder"):
        TrainingData([])


def test_classes_unioned_by_value(exports: dict[str, Path]) -> None:
    a = TrainingData(exports["PASCAL_VOC_rectangles"]).folders[0]
    b = TrainingData(exports["VOC_b"]).folders[0]
    data = TrainingData(
        [
            replace(a, classes=(ClassInfo(3, "water"), ClassInfo(1, "building"))),
            replace(b, classes=(ClassInfo(1, "renamed"), ClassInfo(5, "extra"))),
        ]
    )
    assert [(c.value, c.name) for c in data.classes] == [
        (1, "building"),
        (3, "water"),
        (5, "extra"),
    ]


def test_band_stats_computed_from_chips_when_not_recorded(exports: dict[str, Path]) -> None:
    data = TrainingData(exports["VOC_5band"])
    bare = TrainingData(replace(data.folders[0], band_stats=()))
    for got, want in zip(bare.band_stats, data.band_stats, strict=True):
        assert got.num == want.num and got.min == want.min and got.max == want.max
        assert got.m1 == pytest.approx(want.m1, rel=1e-12)
        assert got.m2 == pytest.approx(want.m2, rel=1e-9)


def test_split(exports: dict[str, Path]) -> None:
    data = TrainingData([exports["PASCAL_VOC_rectangles"], exports["VOC_b"]])
    n = len(data)
    train, val = data.split(25, seed=3)
    assert (train, val) == data.split(25, seed=3)
    assert sorted(train + val) == list(range(n)) and not set(train) & set(val)
    assert len(val) == int(np.floor(n * 0.25 + 0.5)) and train == sorted(train)
    assert data.split(25, seed=4) != (train, val)
    assert len(data.split(0.1)[1]) == 1  # at least one validation chip
    assert len(data.split(99.9)[0]) == 1  # at least one training chip
    assert data.split(0) == (list(range(n)), [])
    with pytest.raises(ParameterError):
        data.split(100)
    one = TrainingData(exports["PASCAL_VOC_rectangles"])
    single = TrainingData(replace(one.folders[0], chips=one.folders[0].chips[:1]))
    with pytest.raises(InputError, match="too few"):
        single.split(10)


# --- detection -----------------------------------------------------------------------------


def _voc_targets(label: Path, values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    root = ET.parse(label).getroot()
    boxes, labels = [], []
    for obj in root.iter("object"):
        bnd = obj.find("bndbox")
        boxes.append([float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(values.index(int(obj.findtext("name"))) + 1)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def _kitti_targets(label: Path, values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
    boxes = [[float(v) for v in r[4:8]] for r in rows]
    labels = [values.index(int(r[0])) + 1 for r in rows]
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


@pytest.mark.parametrize("fmt", ["PASCAL_VOC_rectangles", "KITTI_rectangles"])
def test_detection_targets_equal_label_files(exports: dict[str, Path], fmt: str) -> None:
    folder = exports[fmt]
    values = _class_values(folder)
    ds = DetectionDataset(TrainingData(folder))
    assert ds.class_values == [0, *values]
    assert len(ds) == len(list((folder / "images").glob("*.tif")))
    parse = _voc_targets if fmt == "PASCAL_VOC_rectangles" else _kitti_targets
    suffix = ".xml" if fmt == "PASCAL_VOC_rectangles" else ".txt"
    total = 0
    for i in range(len(ds)):
        image, target = ds[i]
        stem = ds.data.chips[ds.indices[i]].image.stem
        boxes, labels = parse(folder / "labels" / f"{stem}{suffix}", values)
        assert image.shape == (3, TILE, TILE) and image.dtype == torch.float32
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        np.testing.assert_array_equal(target["boxes"].numpy(), boxes)
        np.testing.assert_array_equal(target["labels"].numpy(), labels)
        assert "masks" not in target
        total += len(labels)
    assert total > 0


def _instances(folder: Path, stem: str, names: dict[str, int]) -> list[tuple[int, np.ndarray]]:
    out = []
    for class_dir in sorted((folder / "labels").iterdir(), key=lambda d: names[d.name]):
        path = class_dir / f"{stem}.tif"
        if not path.exists():
            continue
        with rasterio.open(path) as ds:
            raster = ds.read()
        for band in raster:
            for instance in sorted(set(band[band > 0].tolist())):
                out.append((names[class_dir.name], band == instance))
    return out


@pytest.mark.parametrize("key", ["RCNN_Masks", "RCNN_5band"])
def test_instance_masks_equal_label_rasters(exports: dict[str, Path], key: str) -> None:
    folder = exports[key]
    data = TrainingData(folder)
    names = {c.name: c.value for c in data.classes}
    values = sorted(names.values())
    ds = DetectionDataset(data)
    count = 0
    for i in range(len(ds)):
        image, target = ds[i]
        expected = _instances(folder, ds.data.chips[ds.indices[i]].image.stem, names)
        masks = target["masks"]
        assert masks.dtype == torch.uint8 and masks.shape == (len(expected), TILE, TILE)
        assert image.shape == (data.band_count, TILE, TILE)
        for k, (value, mask) in enumerate(expected):
            assert np.array_equal(masks[k].numpy().astype(bool), mask)
            assert int(target["labels"][k]) == values.index(value) + 1
            rows, cols = np.nonzero(mask)
            assert target["boxes"][k].tolist() == [
                cols.min(),
                rows.min(),
                cols.max() + 1,
                rows.max() + 1,
            ]
        count += len(expected)
    assert count > 0


def test_detection_without_objects_and_collate(exports: dict[str, Path], tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "s", width=192, height=192, seed=6, fill=0.5)
    folder = _export(scene, tmp_path / "all", "PASCAL_VOC_rectangles", output_nofeature_tiles=True)
    ds = DetectionDataset(TrainingData(folder))
    empty = [i for i in range(len(ds)) if len(ds.data.chips[ds.indices[i]].objects) == 0]
    assert empty
    _, target = ds[empty[0]]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    loader = DataLoader(ds, batch_size=3, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert images.shape == (3, 3, TILE, TILE) and len(targets) == 3
    # Different sizes are padded bottom/right, masks too.
    a = (torch.ones(1, 4, 6), {"boxes": torch.zeros(0, 4), "masks": torch.ones(1, 4, 6)})
    b = (torch.ones(1, 5, 3), {"boxes": torch.zeros(0, 4)})
    images, targets = collate_detection([a, b])
    assert images.shape == (2, 1, 5, 6) and targets[0]["masks"].shape == (1, 5, 6)
    assert images[1, 0, :, 3:].sum() == 0


def test_detection_augmented_and_resized(exports: dict[str, Path]) -> None:
    data = TrainingData(exports["RCNN_Masks"])
    aug = Augmenter(data.image_space, chip_size=48)
    ds = DetectionDataset(data, chip_size=48, augment=aug, seed=5)
    first = [ds[i] for i in range(len(ds))]
    again = [ds[i] for i in range(len(ds))]
    for (x1, t1), (x2, t2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(t1["boxes"], t2["boxes"])
        assert x1.shape == (3, 48, 48) and t1["masks"].shape[-2:] == (48, 48)
        assert len(t1["boxes"]) == len(t1["labels"]) == len(t1["masks"])
        if len(t1["masks"]):
            assert torch.equal(t1["boxes"], boxes_from_masks(t1["masks"]))
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i][0], first[i][0]) for i in range(len(ds)))
    # Without augmentation, a larger chip_size pads (bottom/right), boxes unchanged.
    big = DetectionDataset(TrainingData(exports["PASCAL_VOC_rectangles"]), chip_size=80)
    plain = DetectionDataset(TrainingData(exports["PASCAL_VOC_rectangles"]))
    xb, tb = big[0]
    xp, tp = plain[0]
    assert xb.shape == (3, 80, 80) and torch.equal(xb[:, :TILE, :TILE], xp)
    assert torch.equal(tb["boxes"], tp["boxes"])


# --- segmentation --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["Classified_Tiles", "Classified_float"])
def test_segmentation_targets_equal_class_rasters(exports: dict[str, Path], key: str) -> None:
    folder = exports[key]
    data = TrainingData(folder)
    values = _class_values(folder)
    ds = SegmentationDataset(data)
    assert ds.class_values == [0, *values] and ds.class_names[0] == "NoData"
    lut = np.zeros(256, dtype=np.int64)
    for index, value in enumerate(values, start=1):
        lut[value] = index
    seen = set()
    for i in range(len(ds)):
        image, target = ds[i]
        with rasterio.open(
            folder / "labels" / f"{ds.data.chips[ds.indices[i]].image.stem}.tif"
        ) as f:
            raster = f.read(1)
        assert image.shape == (3, TILE, TILE) and image.dtype == torch.float32
        assert target.dtype == torch.int64 and target.shape == (TILE, TILE)
        assert np.array_equal(target.numpy(), lut[raster])
        assert np.array_equal(np.asarray(ds.class_values)[target.numpy()], raster)
        seen |= set(np.unique(raster).tolist())
    assert len(seen) > 1
    loader = DataLoader(ds, batch_size=4)
    images, targets = next(iter(loader))
    assert images.shape == (min(4, len(ds)), 3, TILE, TILE) and targets.shape[1:] == (TILE, TILE)


def test_segmentation_maps_non_contiguous_values(exports: dict[str, Path], tmp_path: Path) -> None:
    data = TrainingData(exports["Classified_Tiles"])
    folder = data.folders[0]
    # Pretend class 1 is absent from the table and 7 present: 1 becomes NoData.
    classes = (*(c for c in folder.classes if c.value != 1), ClassInfo(7, "seven"))
    ds = SegmentationDataset(TrainingData(replace(folder, classes=classes)))
    kept = [c.value for c in classes if c.value != 7]
    assert ds.class_values == [0, *sorted([*kept, 7])]
    _, target = ds[0]
    with rasterio.open(ds.data.chips[0].class_raster) as f:
        raster = f.read(1)
    expected = np.zeros_like(raster, dtype=np.int64)
    for index, value in enumerate(ds.class_values[1:], start=1):
        expected[raster == value] = index
    assert np.array_equal(target.numpy(), expected)


def test_segmentation_crop_and_augment(exports: dict[str, Path]) -> None:
    data = TrainingData(exports["Classified_Tiles"])
    plain = SegmentationDataset(data)
    small = SegmentationDataset(data, chip_size=40)  # centre crop
    x, y = small[0]
    xp, yp = plain[0]
    assert x.shape == (3, 40, 40) and torch.equal(x, xp[:, 12:52, 12:52])
    assert torch.equal(y, yp[12:52, 12:52])
    aug = SegmentationDataset(
        data, chip_size=40, augment=Augmenter(chip_size=40, brightness=0, contrast=0), seed=1
    )
    # The image and the target move together: undo each of the 8 views on the augmented
    # image, find where it was cropped from, and check the target came from the same place.
    views = 0
    for i in range(len(aug)):
        xa, ya = (a.numpy() for a in aug[i])
        xf, yf = (a.numpy() for a in plain[i])
        windows = np.lib.stride_tricks.sliding_window_view(xf, (40, 40), axis=(1, 2))
        matches = []
        for flip in (False, True):
            for k in range(4):
                x_back = np.rot90(xa, -k, axes=(1, 2))
                y_back = np.rot90(ya, -k)
                if flip:
                    x_back, y_back = x_back[:, :, ::-1], y_back[:, ::-1]
                hits = np.argwhere((windows == x_back[:, None, None]).all(axis=(0, 3, 4)))
                matches += [(top, left, y_back) for top, left in hits]
        assert matches
        for top, left, y_back in matches:
            assert np.array_equal(y_back, yf[top : top + 40, left : left + 40])
        views += len(matches)
    assert views >= len(aug)


def test_class_pixel_counts_equal_label_rasters(exports: dict[str, Path]) -> None:
    folder = exports["Classified_Tiles"]
    values = _class_values(folder)
    data = TrainingData(folder)
    train, _ = data.split(25, seed=2)
    ds = SegmentationDataset(data, train)
    expected = np.zeros(len(values) + 1, dtype=np.int64)
    for chip in train:
        with rasterio.open(folder / "labels" / f"{data.chips[chip].image.stem}.tif") as f:
            raster = f.read(1)
        expected[0] += int((raster == 0).sum())
        for index, value in enumerate(values, start=1):
            expected[index] += int((raster == value).sum())
    counts = ds.class_pixel_counts()
    assert counts.tolist() == expected.tolist()
    assert counts.sum() == len(train) * TILE * TILE and (counts[1:] > 0).all()


# --- classification ------------------------------------------------------------------------


def test_labeled_tiles_and_imagenet(exports: dict[str, Path]) -> None:
    for fmt in ("Labeled_Tiles", "Imagenet"):
        folder = exports[fmt]
        values = _class_values(folder)
        ds = ClassificationDataset(TrainingData(folder), chip_size=32)
        assert ds.class_values == values and len(ds) > 0
        for i in range(len(ds)):
            image, target = ds[i]
            chip = ds.data.chips[ds.indices[i]]
            if fmt == "Imagenet":
                value = int(chip.image.parent.name)  # class = sub-folder named by value
            else:
                root = ET.parse(folder / "labels" / f"{chip.image.stem}.xml").getroot()
                value = int(root.find("object").findtext("name"))
            assert image.shape == (3, 32, 32) and image.dtype == torch.float32
            assert target.dtype == torch.int64 and target.ndim == 0
            assert ds.class_values[int(target)] == value
    # Resizing matches torch's bilinear (antialiased) resize of the normalised chip.
    ds = ClassificationDataset(TrainingData(exports["Labeled_Tiles"]), chip_size=32)
    full = ClassificationDataset(TrainingData(exports["Labeled_Tiles"]))
    x, _ = ds[0]
    xf, _ = full[0]
    assert xf.shape == (3, TILE, TILE)
    expected = torch.nn.functional.interpolate(
        xf[None], size=(32, 32), mode="bilinear", antialias=True, align_corners=False
    )[0]
    assert torch.allclose(x, expected)


def test_multilabeled_tiles(exports: dict[str, Path]) -> None:
    folder = exports["MultiLabeled_Tiles"]
    values = _class_values(folder)
    ds = ClassificationDataset(TrainingData(folder))
    several = 0
    for i in range(len(ds)):
        _, target = ds[i]
        chip = ds.data.chips[ds.indices[i]]
        root = ET.parse(folder / "labels" / f"{chip.image.stem}.xml").getroot()
        names = root.find("object").findtext("name").split(",")
        expected = np.zeros(len(values), dtype=np.float32)
        for name in names:
            expected[values.index(int(name))] = 1
        assert target.dtype == torch.float32
        assert np.array_equal(target.numpy(), expected)
        several += expected.sum() > 1
    assert several > 0


@pytest.mark.parametrize("fmt", ["Labeled_Tiles", "MultiLabeled_Tiles"])
def test_oversampling_draws_classes_evenly(exports: dict[str, Path], fmt: str) -> None:
    ds = ClassificationDataset(TrainingData(exports[fmt]))
    hots = []
    for i in range(len(ds)):
        target = ds[i][1]
        hot = np.zeros(len(ds.class_values))
        if target.ndim == 0:
            hot[int(target)] = 1
        else:
            hot = target.numpy()
        hots.append(hot > 0.5)
    hots = np.array(hots)
    counts = hots.sum(0)
    assert ds.class_counts().tolist() == counts.tolist()
    assert counts.max() > counts.min()  # the classes are imbalanced
    weights = np.array(ds.oversampling_weights())
    # a chip weighs 1 / count of its rarest class
    expected = [(1.0 / counts[h]).max() if h.any() else None for h in hots]
    for w, e in zip(weights, expected, strict=True):
        if e is not None:
            assert w == pytest.approx(e)
    if fmt == "Labeled_Tiles":  # single label: every class is drawn with the same probability
        per_class = (weights[:, None] * hots).sum(0)
        np.testing.assert_allclose(per_class, per_class[0])


def test_wrong_format_refused(exports: dict[str, Path]) -> None:
    data = TrainingData(exports["Classified_Tiles"])
    with pytest.raises(InputError, match="object detection"):
        DetectionDataset(data)
    with pytest.raises(InputError, match="classification"):
        ClassificationDataset(data)
    with pytest.raises(InputError, match="pixel classification"):
        SegmentationDataset(TrainingData(exports["PASCAL_VOC_rectangles"]))


# --- multiband, extract_bands --------------------------------------------------------------


def test_multiband_uint16_and_extract_bands(exports: dict[str, Path]) -> None:
    folder = exports["VOC_5band"]
    data = TrainingData(folder)
    ds = DetectionDataset(data)
    assert not ds.normalizer.imagenet and ds.num_channels == 5
    stats = ds.normalizer.stats
    image, _ = ds[0]
    with rasterio.open(data.chips[ds.indices[0]].image) as f:
        pixels = f.read().astype(np.float64)
        valid = f.dataset_mask() > 0
    assert f.dtypes[0] == "uint16" and not valid.all()
    pixels[:, ~valid] = 0
    lo = np.asarray(stats.band_min_values)[:, None, None]
    hi = np.asarray(stats.band_max_values)[:, None, None]
    mean = np.asarray(stats.scaled_mean_values)[:, None, None]
    std = np.asarray(stats.scaled_std_values)[:, None, None]
    expected = ((pixels - lo) / (hi - lo) - mean) / std
    np.testing.assert_allclose(image.numpy(), expected, rtol=1e-5, atol=1e-4)
    sub = DetectionDataset(data, extract_bands=[3, 0, 2], normalizer=ds.normalizer)
    assert sub.num_channels == 3
    xs, _ = sub[0]
    assert torch.equal(xs, image[[3, 0, 2]])
    shared = Normalizer.from_training_data(data, extract_bands=[4])
    assert DetectionDataset(data, normalizer=shared)[0][0].shape == (1, TILE, TILE)
