"""Joint augmentation: boxes must move exactly as the pixels they outline.

The independent check: draw each box as a mask (here as an image channel, so that it goes
through exactly the transform the pixels get), transform, and take the mask's bounds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rasterlearn.data.augment import (
    AUGMENTATION_NAMES,
    Augmenter,
    RandomTransform,
    Sample,
    boxes_from_masks,
    crop,
    dihedral,
    fit_to_size,
    hflip,
    jitter,
    pad_to,
    parse_augmentation_parameters,
    rot90,
    rotate_zoom,
    vflip,
)
from rasterlearn.errors import ParameterError


def _random_boxes(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Integer (pixel-edge) boxes inside an ``h`` x ``w`` chip, at least 1 px."""
    x0 = rng.integers(0, w - 1, n)
    y0 = rng.integers(0, h - 1, n)
    x1 = np.minimum(w, x0 + rng.integers(1, w // 2, n))
    y1 = np.minimum(h, y0 + rng.integers(1, h // 2, n))
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)


def _draw(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    masks = np.zeros((len(boxes), h, w), dtype=np.uint8)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.astype(int), strict=True):
        m[y0:y1, x0:x1] = 1
    return masks


def _as(kind: str, a: np.ndarray) -> np.ndarray | torch.Tensor:
    return torch.from_numpy(a) if kind == "torch" else a


def _np(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_fixed_transforms_move_boxes_like_masks(kind: str) -> None:
    rng = np.random.default_rng(0)
    h, w = 37, 52  # not square: rotations swap the sides
    boxes = _random_boxes(rng, 12, h, w)
    image = _draw(boxes, h, w).astype(np.float32)
    sample = Sample(_as(kind, image), boxes=_as(kind, boxes), class_raster=_as(kind, image[0]))
    transforms = [hflip, vflip, rot90, lambda s: rot90(s, 3)] + [
        (lambda s, i=i: dihedral(s, i)) for i in range(8)
    ]
    for transform in transforms:
        out = transform(sample)
        assert type(out.image) is type(sample.image)
        np.testing.assert_array_equal(_np(out.boxes), boxes_from_masks(_np(out.image)))
        np.testing.assert_array_equal(_np(out.class_raster), _np(out.image)[0])
    assert rot90(sample).image.shape == (12, w, h)
    assert np.array_equal(_np(dihedral(sample, 0).image), image)
    # numpy rot90 direction: the top-right corner goes to the top-left.
    corner = np.zeros((1, 3, 4), dtype=np.float32)
    corner[0, 0, 3] = 1
    assert _np(rot90(Sample(_as(kind, corner))).image)[0, 0, 0] == 1


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("space", ["MAP_SPACE", "PIXEL_SPACE"])
def test_random_augmentation_boxes_equal_mask_bounds(kind: str, space: str) -> None:
    rng = np.random.default_rng(1)
    h, w, size, min_box = 64, 80, 40, 2.0
    aug = Augmenter(space, chip_size=size, brightness=0, contrast=0, min_box_size=min_box)
    dropped = 0
    for seed in range(40):
        boxes = _random_boxes(rng, 10, h, w)
        image = _draw(boxes, h, w).astype(np.float32)
        labels = np.arange(len(boxes))
        sample = Sample(_as(kind, image), boxes=_as(kind, boxes), labels=_as(kind, labels))
        out = aug(sample, seed)
        assert out.image.shape[-2:] == (size, size)
        kept = _np(out.labels)
        got = _np(out.boxes)
        expected = boxes_from_masks(_np(out.image)[kept])
        np.testing.assert_array_equal(got, expected)
        # A kept box under 2 px is one the crop did not cut (its sides are the original ones).
        sides = np.sort(got[:, 2:] - got[:, :2], axis=1)
        original = np.sort(boxes[kept, 2:] - boxes[kept, :2], axis=1)
        small = (sides < min_box).any(axis=1)
        np.testing.assert_array_equal(sides[small], original[small])
        dropped += len(boxes) - len(kept)
        # Dropped boxes: those the crop leaves empty, or cuts to under 2 px.
        all_boxes = boxes_from_masks(_np(out.image))
        for i in set(range(len(boxes))) - set(kept.tolist()):
            bw = all_boxes[i, 2] - all_boxes[i, 0]
            bh = all_boxes[i, 3] - all_boxes[i, 1]
            assert not _np(out.image)[i].any() or bw < min_box or bh < min_box
    assert dropped > 0


def test_instance_masks_follow_and_boxes_come_from_masks() -> None:
    rng = np.random.default_rng(2)
    h, w = 50, 50
    boxes = _random_boxes(rng, 8, h, w)
    masks = _draw(boxes, h, w)
    # Make the masks non-rectangular: clear a corner pixel of the bigger ones.
    for m, (x0, y0, _, _) in zip(masks, boxes.astype(int), strict=True):
        m[y0, x0] = 0 if m.sum() > 4 else 1
    image = masks.astype(np.float32)
    aug = Augmenter("MAP_SPACE", chip_size=30, brightness=0, contrast=0)
    for seed in range(20):
        sample = Sample(
            torch.from_numpy(image),
            boxes=torch.from_numpy(boxes_from_masks(masks)),
            labels=torch.arange(len(masks)),
            masks=torch.from_numpy(masks),
        )
        out = aug(sample, seed)
        assert out.masks.dtype == torch.uint8 and out.masks.shape[-2:] == (30, 30)
        assert torch.equal(out.masks.float(), out.image[out.labels])
        assert torch.equal(out.boxes, boxes_from_masks(out.masks))
        assert bool((out.masks.flatten(1) != 0).any(1).all())


def test_pixel_space_never_flips_vertically_or_rotates() -> None:
    image = np.arange(2 * 9 * 9, dtype=np.float32).reshape(2, 9, 9)
    views = [_np(dihedral(Sample(image), i).image) for i in range(8)]
    assert len({v.tobytes() for v in views}) == 8  # the pattern tells every view apart

    def view_of(out: np.ndarray) -> int:
        return next(i for i, v in enumerate(views) if np.array_equal(v, out))

    seen = {"MAP_SPACE": set(), "PIXEL_SPACE": set()}
    for space, found in seen.items():
        aug = Augmenter(space, brightness=0, contrast=0)
        for seed in range(64):
            found.add(view_of(_np(aug(Sample(image), seed).image)))
    assert seen["PIXEL_SPACE"] == {0, 4}  # identity and left-right flip only
    assert seen["MAP_SPACE"] == set(range(8))


def test_deterministic_and_numpy_equals_torch() -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(size=(3, 48, 48)).astype(np.float32)
    boxes = _random_boxes(rng, 5, 48, 48)
    aug = Augmenter("MAP_SPACE", chip_size=32, brightness=0.2, contrast=0.2)
    a = aug(Sample(image, boxes=boxes), 11)
    b = aug(Sample(image, boxes=boxes), torch.Generator().manual_seed(11))
    t = aug(Sample(torch.from_numpy(image), boxes=torch.from_numpy(boxes)), 11)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    np.testing.assert_allclose(t.image.numpy(), a.image, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(t.boxes.numpy(), a.boxes)
    c = aug(Sample(image, boxes=boxes), 12)
    assert not np.array_equal(a.image, c.image)
    # A generator advances: two calls on one generator differ, like two seeds.
    g = torch.Generator().manual_seed(5)
    first, second = aug(Sample(image), g), aug(Sample(image), g)
    assert not np.array_equal(first.image, second.image)


def test_jitter() -> None:
    image = np.random.default_rng(4).normal(size=(2, 16, 16)).astype(np.float32)
    out = jitter(image, 0.5, 1.0)
    np.testing.assert_allclose(out, image + 0.5, atol=1e-6)
    out = jitter(image, 0.0, 2.0)
    np.testing.assert_allclose(out.std(), 2 * image.std(), rtol=1e-5)
    np.testing.assert_allclose(out.mean(), image.mean(), atol=1e-5)
    np.testing.assert_allclose(
        jitter(torch.from_numpy(image), 0.3, 0.7).numpy(), jitter(image, 0.3, 0.7), atol=1e-6
    )
    with pytest.raises(ValueError, match="float"):
        jitter(np.zeros((1, 2, 2), dtype=np.uint8), 0.1, 1.0)


def test_crop_drop_rule_and_class_raster() -> None:
    boxes = np.array(
        [
            [0.5, 0.5, 1.5, 1.5],  # tiny but not cut: kept
            [8.0, 8.0, 20.0, 12.0],  # cut to 1 px wide by the crop: dropped
            [2.0, 2.0, 6.0, 6.0],  # inside: kept as is
            [30.0, 30.0, 35.0, 35.0],  # outside: dropped
            [5.0, 7.0, 12.0, 9.5],  # cut to 4 x 2.5: kept, clipped
        ],
        dtype=np.float32,
    )
    raster = np.arange(40 * 40).reshape(40, 40)
    sample = Sample(np.zeros((1, 40, 40), np.float32), boxes, np.arange(5), class_raster=raster)
    out = crop(sample, 0, 0, 9, 9)
    assert out.labels.tolist() == [0, 2, 4]
    np.testing.assert_array_equal(out.boxes[2], [5, 7, 9, 9])
    np.testing.assert_array_equal(out.class_raster, raster[:9, :9])
    with pytest.raises(ValueError, match="inside"):
        crop(sample, 35, 0, 9, 9)


def test_fit_and_pad() -> None:
    boxes = np.array([[1.0, 1.0, 4.0, 4.0]], dtype=np.float32)
    masks = _draw(boxes, 6, 5)
    small = Sample(np.ones((2, 6, 5), np.float32), boxes, np.array([1]), masks, masks[0])
    padded = pad_to(small, 8, 8)
    assert padded.image.shape == (2, 8, 8) and padded.masks.shape == (1, 8, 8)
    assert padded.image[:, 6:, :].sum() == 0 and padded.class_raster[:, 5:].sum() == 0
    np.testing.assert_array_equal(padded.boxes, boxes)
    big = Sample(torch.ones(1, 20, 30), class_raster=torch.arange(600).reshape(20, 30))
    fitted = fit_to_size(big, 10, 40)  # rows cropped (centred), columns padded
    assert fitted.image.shape == (1, 10, 40)
    assert torch.equal(fitted.class_raster[:, :30], torch.arange(600).reshape(20, 30)[5:15])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="image_space"):
        Augmenter("GROUND_SPACE")
    with pytest.raises(ValueError, match="dihedral"):
        dihedral(Sample(np.zeros((1, 2, 2))), 8)


# --------------------------------------------------------------------------- rotate and zoom


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_quarter_turn_equals_rot90(kind: str) -> None:
    rng = np.random.default_rng(5)
    n = 40
    boxes = _random_boxes(rng, 6, n, n)
    masks = _draw(boxes, n, n)
    image = rng.normal(size=(3, n, n)).astype(np.float32)
    raster = rng.integers(0, 4, (n, n)).astype(np.uint8)
    sample = Sample(
        _as(kind, image),
        boxes=_as(kind, boxes),
        masks=_as(kind, masks),
        class_raster=_as(kind, raster),
    )
    # positive angles turn clockwise on screen; numpy's rot90 turns counter-clockwise
    turned = rotate_zoom(sample, -90.0)
    expected = rot90(Sample(image, boxes=boxes, masks=masks, class_raster=raster))
    assert type(turned.image) is type(sample.image) and _np(turned.masks).dtype == np.uint8
    np.testing.assert_allclose(_np(turned.image), expected.image, atol=1e-4)
    np.testing.assert_array_equal(_np(turned.masks), expected.masks)
    np.testing.assert_array_equal(_np(turned.class_raster), expected.class_raster)
    np.testing.assert_allclose(_np(turned.boxes), expected.boxes, atol=1e-4)


def test_zoom_into_a_corner_repeats_its_pixels() -> None:
    rng = np.random.default_rng(6)
    raster = rng.integers(0, 5, (32, 48)).astype(np.int64)
    boxes = np.array([[2.0, 2.0, 10.0, 6.0], [20.0, 3.0, 30.0, 9.0], [30.0, 20.0, 40.0, 30.0]])
    boxes = boxes.astype(np.float32)
    out = rotate_zoom(
        Sample(raster[None].astype(np.float32), boxes=boxes, labels=np.arange(3),
               class_raster=raster),
        scale=2.0, row_pct=0.0, col_pct=0.0,
    )  # fmt: skip
    quarter = raster[:16, :24]
    expected = np.repeat(np.repeat(quarter, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(out.class_raster, expected)
    # the image is bilinear: output centre j + 0.5 samples the input at (j + 0.5) / 2, i.e.
    # pixel-centre index j / 2 - 0.25 (zero outside): index (j + 1) // 2 of the zero-padded
    # raster and the next one, the next weighing 0.75 for even j and 0.25 for odd j
    padded = np.pad(raster.astype(np.float64), 1)
    along = np.arange(48)
    lo = (along + 1) // 2
    wt = np.where(along % 2, 0.25, 0.75)
    rows = padded[lo[:32]] * (1 - wt[:32, None]) + padded[lo[:32] + 1] * wt[:32, None]
    bilinear = rows[:, lo] * (1 - wt) + rows[:, lo + 1] * wt
    np.testing.assert_allclose(out.image[0], bilinear, atol=1e-5)
    # box 0 doubles, box 1 is cut at the right edge, box 2 leaves the view
    np.testing.assert_array_equal(out.labels, [0, 1])
    np.testing.assert_allclose(out.boxes, [[4, 4, 20, 12], [40, 6, 48, 18]])


def test_a_zooming_augmenter_scales_objects_within_its_range() -> None:
    n, side = 64, 16
    masks = np.zeros((1, n, n), dtype=np.float32)
    masks[0, 24:40, 24:40] = 1
    box = np.array([[24.0, 24.0, 40.0, 40.0]], dtype=np.float32)
    aug = Augmenter("MAP_SPACE", brightness=0, contrast=0, zoom=(0.8, 1.25))
    plain = Augmenter("MAP_SPACE", brightness=0, contrast=0)
    scales, unzoomed = [], 0
    for seed in range(100):
        out = aug(Sample(masks, boxes=box, labels=np.arange(1)), seed)
        # the flips are drawn as without the zoom: an unzoomed sample is the plain one
        if np.array_equal(out.image, plain(Sample(masks), seed).image):
            unzoomed += 1
            continue
        if len(out.boxes) == 0:
            continue
        x0, y0, x1, y1 = out.boxes[0]
        if min(x0, y0) > 0 and max(x1, y1) < n:  # not cut by the border
            scales.append((x1 - x0) / side)
            inside = boxes_from_masks((out.image > 0.5).astype(np.uint8))[0]
            np.testing.assert_allclose(inside, out.boxes[0], atol=1.0)
    assert 30 < unzoomed < 70  # half of the samples are zoomed
    scales = np.array(scales)
    assert ((scales > 0.8 - 1e-4) & (scales < 1.25 + 1e-4)).all()
    assert (scales < 0.95).any() and (scales > 1.05).any()
    with pytest.raises(ValueError, match="zoom"):
        Augmenter(zoom=(1.25, 0.8))


def test_random_turns_keep_boxes_around_their_pixels() -> None:
    rng = np.random.default_rng(7)
    h = w = 48
    for _ in range(12):
        boxes = _random_boxes(rng, 6, h, w)
        masks = _draw(boxes, h, w)
        angle, scale = rng.uniform(-45, 45), rng.uniform(0.8, 1.3)
        row, col = rng.uniform(0, 1, 2)
        plain = rotate_zoom(
            Sample(masks.astype(np.float32), boxes=boxes, labels=np.arange(6)),
            angle, scale, row, col, min_box_size=0.0,
        )  # fmt: skip
        # a box is the bounds of its turned corners: it holds every pixel of the turned box
        inside = boxes_from_masks((plain.image > 0.5).astype(np.uint8))
        for label, box in zip(plain.labels, plain.boxes, strict=True):
            pix = inside[label]
            if pix[2] > pix[0]:
                # (a pixel counts when its centre is inside: its edge may lie 0.5 px out)
                assert (box[:2] <= pix[:2] + 0.501).all() and (box[2:] >= pix[2:] - 0.501).all()
        # with instance masks, boxes are the bounds of the warped masks
        with_masks = rotate_zoom(
            Sample(torch.from_numpy(masks.astype(np.float32)), boxes=torch.from_numpy(boxes),
                   labels=torch.arange(6), masks=torch.from_numpy(masks)),
            angle, scale, row, col,
        )  # fmt: skip
        assert torch.equal(with_masks.boxes, boxes_from_masks(with_masks.masks))
        assert bool((with_masks.masks.flatten(1) != 0).any(1).all())


# --------------------------------------------------------------------------- CUSTOM transforms


def test_parse_arcgis_defaults_and_forms() -> None:
    defaults = parse_augmentation_parameters(None, chip_size=128)
    assert [t.name for t in defaults] == ["crop", "rotate", "zoom", "brightness", "contrast"]
    by_name = {t.name: t for t in defaults}
    assert by_name["rotate"] == RandomTransform("rotate", -30.0, 30.0, 0.5)
    assert by_name["brightness"] == RandomTransform("brightness", 0.4, 0.6, 1.0)
    assert by_name["contrast"] == RandomTransform("contrast", 0.75, 1.5, 1.0)
    assert by_name["zoom"] == RandomTransform("zoom", 1.0, 1.2, 1.0)
    assert by_name["crop"] == RandomTransform("crop", 128.0, 128.0, 1.0)
    rows = parse_augmentation_parameters(
        ["ROTATE=(-5,20);0.25", "zoom 1.5", "crop=100;0.5;(0.2,0.8);(0,1)", "flip_lr=0.5"],
        chip_size=100,
        max_crop=128,
    )
    assert rows == (
        RandomTransform("crop", 100.0, 100.0, 0.5, (0.2, 0.8), (0.0, 1.0)),
        RandomTransform("flip_lr", p=0.5),
        RandomTransform("rotate", -5.0, 20.0, 0.25),
        RandomTransform("zoom", 1.0, 1.5, 1.0),
    )
    as_values = parse_augmentation_parameters(
        {"rotate": (10, 1.0), "contrast": ((0.5, 2.0), 0.3), "dihedral": 1}, chip_size=64
    )
    assert as_values == (
        RandomTransform("dihedral", p=1.0),
        RandomTransform("rotate", -10.0, 10.0, 1.0),
        RandomTransform("contrast", 0.5, 2.0, 0.3),
    )


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["blur=1"], "unknown augmentation 'blur'"),
        (["rotate"], "not NAME=VALUE"),
        (["rotate=abc"], "is not DEGREES"),
        (["rotate=30;1.5"], "probability 1.5"),
        (["rotate=(0,270)"], "between -180 and 180"),
        (["zoom=(0.1,1)"], "between 0.25 and 4"),
        (["brightness=(0.2,1.4)"], "between 0 and 1"),
        (["contrast=(0,2)"], "above 0"),
        (["crop=300"], r"between 16 and the tile size \(128\)"),
        (["crop=64.5"], "whole number"),
        (["crop=64;1;(0.8,0.2)"], "ranges within"),
        (["flip_lr=0.5;1"], "is not P"),
        (["rotate=1", "Rotate=2"], "given twice"),
    ],
)
def test_parse_errors_are_one_line(rows: list[str], message: str) -> None:
    with pytest.raises(ParameterError, match=message) as err:
        parse_augmentation_parameters(rows, chip_size=128)
    assert "\n" not in str(err.value) and err.value.hint


def _pattern(n: int = 32) -> np.ndarray:
    return np.arange(2 * n * n, dtype=np.float32).reshape(2, n, n) / (2 * n * n)


def test_custom_transforms_apply_only_what_is_asked() -> None:
    image = _pattern()
    boxes = np.array([[2.0, 3.0, 12.0, 9.0]], dtype=np.float32)
    sample = Sample(image, boxes=boxes)
    never = Augmenter.from_parameters(
        ["rotate=30;0", "zoom=(1.5,2);0", "brightness=(0.8,0.9);0", "flip_lr=0", "dihedral=0"],
        chip_size=32,
    )
    for seed in range(5):
        out = never(sample, seed)
        assert np.array_equal(out.image, image) and np.array_equal(out.boxes, boxes)
    flip = Augmenter.from_parameters({"flip_lr": 1.0}, chip_size=32)
    out = flip(sample, 0)
    expected = hflip(sample)
    assert np.array_equal(out.image, expected.image) and np.array_equal(out.boxes, expected.boxes)
    bright = Augmenter.from_parameters({"brightness": "(0.7,0.7);1.0"}, chip_size=32)
    np.testing.assert_allclose(bright(sample, 0).image, image + 0.4, atol=1e-6)
    contrast = Augmenter.from_parameters({"contrast": "(2,2);1.0"}, chip_size=32)
    np.testing.assert_allclose(
        contrast(sample, 0).image, (image - image.mean()) * 2 + image.mean(), atol=1e-5
    )
    # a crop at the bottom-right corner of the allowed positions
    corner = Augmenter.from_parameters({"crop": "20;1.0;(1,1);(1,1)"}, chip_size=20, max_crop=32)
    out = corner(Sample(image), 3)
    assert np.array_equal(out.image, image[:, 12:, 12:])
    turned = Augmenter.from_parameters({"rotate": "(-90,-90);1.0"}, chip_size=32)
    np.testing.assert_allclose(turned(sample, 0).image, rot90(sample).image, atol=1e-5)


def test_custom_transforms_are_reproducible_and_vary() -> None:
    image = _pattern()
    boxes = np.array([[4.0, 4.0, 20.0, 14.0]], dtype=np.float32)
    aug = Augmenter.from_parameters(None, chip_size=32)  # ArcGIS's defaults
    assert [t.name for t in aug.transforms] == [
        n for n in AUGMENTATION_NAMES if n not in ("flip_lr", "dihedral")
    ]
    a = aug(Sample(image, boxes=boxes), 9)
    b = aug(Sample(image, boxes=boxes), 9)
    t = aug(Sample(torch.from_numpy(image), boxes=torch.from_numpy(boxes)), 9)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    np.testing.assert_allclose(t.image.numpy(), a.image, atol=1e-5)
    np.testing.assert_allclose(t.boxes.numpy(), a.boxes, atol=1e-4)
    outs = {aug(Sample(image), seed).image.tobytes() for seed in range(6)}
    assert len(outs) == 6
