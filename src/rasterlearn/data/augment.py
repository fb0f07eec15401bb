"""Joint augmentation of a chip and its targets (boxes, instance masks, class raster).

Every transform works on numpy arrays and torch tensors alike and moves the image and all its
targets together. Coordinates are chip pixels with x to the right and y down; a box
``(xmin, ymin, xmax, ymax)`` spans pixel edges, so the box of the pixels ``c0..c1`` is
``(c0, ., c1 + 1, .)``.

Random choices come from a ``torch.Generator`` (or a seed), so a sample is reproducible.
In ``MAP_SPACE`` chips are north-up views of the ground and any of the 8 flips/rotations of the
dihedral group is a valid view; in ``PIXEL_SPACE`` (oblique or side views) only horizontal
flips are (reference §7).

ArcGIS's ``augmentation_parameters`` (reference §6.1: a value table of transform names and
values such as ``rotate 30.0;0.5``) are parsed by :func:`parse_augmentation_parameters` into
:class:`RandomTransform` values, which an :class:`Augmenter` applies (``augmentation=CUSTOM``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from rasterlearn.errors import ParameterError

Array = np.ndarray | torch.Tensor

IMAGE_SPACES = ("MAP_SPACE", "PIXEL_SPACE")


@dataclass
class Sample:
    """A chip and its targets.

    Attributes:
        image: ``(bands, rows, cols)`` pixels.
        boxes: ``(N, 4)`` boxes ``xmin, ymin, xmax, ymax`` in pixels, or None.
        labels: ``(N,)`` per-box labels (any values), kept in step with ``boxes``, or None.
        masks: ``(N, rows, cols)`` instance masks, one per box, or None.
        class_raster: ``(rows, cols)`` per-pixel classes, or None.
    """

    image: Array
    boxes: Array | None = None
    labels: Array | None = None
    masks: Array | None = None
    class_raster: Array | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[-2])

    @property
    def width(self) -> int:
        return int(self.image.shape[-1])


def _flip(a: Array, axis: int) -> Array:
    if isinstance(a, torch.Tensor):
        return torch.flip(a, dims=(axis,))
    return np.ascontiguousarray(np.flip(a, axis=axis))


def _rot90(a: Array) -> Array:
    if isinstance(a, torch.Tensor):
        return torch.rot90(a, 1, dims=(-2, -1))
    return np.ascontiguousarray(np.rot90(a, 1, axes=(-2, -1)))


def _stack(columns: Sequence[Array], like: Array) -> Array:
    if isinstance(like, torch.Tensor):
        return torch.stack(list(columns), dim=1)
    return np.stack(columns, axis=1).astype(like.dtype, copy=False)


def _map_rasters(sample: Sample, fn: Callable[[Array], Array]) -> Sample:
    return replace(
        sample,
        image=fn(sample.image),
        masks=fn(sample.masks) if sample.masks is not None else None,
        class_raster=fn(sample.class_raster) if sample.class_raster is not None else None,
    )


def hflip(sample: Sample) -> Sample:
    """Mirror left-right."""
    w = sample.width
    out = _map_rasters(sample, lambda a: _flip(a, -1))
    if sample.boxes is not None:
        b = sample.boxes
        out.boxes = _stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], b)
    return out


def vflip(sample: Sample) -> Sample:
    """Mirror top-bottom."""
    h = sample.height
    out = _map_rasters(sample, lambda a: _flip(a, -2))
    if sample.boxes is not None:
        b = sample.boxes
        out.boxes = _stack([b[:, 0], h - b[:, 3], b[:, 2], h - b[:, 1]], b)
    return out


def rot90(sample: Sample, k: int = 1) -> Sample:
    """Rotate by ``k`` quarter turns counter-clockwise (as ``numpy.rot90``).

    Height and width swap for odd ``k``.
    """
    out = sample
    for _ in range(k % 4):
        w = out.width
        rotated = _map_rasters(out, _rot90)
        if out.boxes is not None:
            b = out.boxes
            # A point (x, y) goes to (y, w - x).
            rotated.boxes = _stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], b)
        out = rotated
    return out


def dihedral(sample: Sample, index: int) -> Sample:
    """Element ``index`` (0..7) of the dihedral group: ``index >= 4`` flips left-right, then
    ``index % 4`` quarter turns counter-clockwise. 0 is the identity."""
    if not 0 <= index < 8:
        raise ValueError(f"dihedral index must be 0..7, got {index}")
    out = hflip(sample) if index >= 4 else sample
    return rot90(out, index % 4)


def boxes_from_masks(masks: Array) -> Array:
    """``(N, 4)`` float32 pixel-edge bounds of ``(N, rows, cols)`` masks (zeros for empty ones)."""
    is_torch = isinstance(masks, torch.Tensor)
    m = masks.cpu().numpy() if is_torch else np.asarray(masks)
    out = np.zeros((m.shape[0], 4), dtype=np.float32)
    for i, mask in enumerate(m):
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size:
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return torch.from_numpy(out).to(masks.device) if is_torch else out


def _select(sample: Sample, keep: Array) -> Sample:
    return replace(
        sample,
        boxes=sample.boxes[keep] if sample.boxes is not None else None,
        labels=sample.labels[keep] if sample.labels is not None else None,
        masks=sample.masks[keep] if sample.masks is not None else None,
    )


def crop(
    sample: Sample, top: int, left: int, height: int, width: int, min_box_size: float = 2.0
) -> Sample:
    """Cut a window out of the chip (the window must lie inside it).

    Boxes are shifted and clipped to the window. With instance masks, boxes are recomputed from
    the cropped masks and instances whose mask leaves the window are dropped. A box the crop
    cuts is dropped when it ends up narrower or lower than ``min_box_size`` pixels; boxes
    the crop does not cut are kept whatever their size.
    """
    if top < 0 or left < 0 or top + height > sample.height or left + width > sample.width:
        raise ValueError(
            f"crop window {(top, left, height, width)} is not inside a "
            f"{sample.height} x {sample.width} chip"
        )
    out = _map_rasters(sample, lambda a: a[..., top : top + height, left : left + width])
    if sample.boxes is None:
        return out
    b = sample.boxes
    shifted = _stack([b[:, 0] - left, b[:, 1] - top, b[:, 2] - left, b[:, 3] - top], b)
    limits = (width, height, width, height)
    if out.masks is not None:
        clipped = boxes_from_masks(out.masks)
        if isinstance(clipped, torch.Tensor):
            clipped = clipped.to(b.dtype)
        else:
            clipped = clipped.astype(b.dtype, copy=False)
        empty = ~(out.masks.reshape(out.masks.shape[0], -1) != 0).any(1)
    else:
        clipped = _stack([_clip(shifted[:, i], 0, limits[i]) for i in range(4)], b)
        empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    cut = (shifted[:, 0] < 0) | (shifted[:, 1] < 0) | (shifted[:, 2] > width)
    cut = cut | (shifted[:, 3] > height)
    small = (clipped[:, 2] - clipped[:, 0] < min_box_size) | (
        clipped[:, 3] - clipped[:, 1] < min_box_size
    )
    keep = ~(empty | (cut & small))
    out.boxes = clipped
    return _select(out, keep)


def _clip(a: Array, lo: float, hi: float) -> Array:
    return a.clamp(lo, hi) if isinstance(a, torch.Tensor) else np.clip(a, lo, hi)


def pad_to(sample: Sample, height: int, width: int, fill: float = 0.0) -> Sample:
    """Pad at the bottom and right to at least ``height`` x ``width`` (boxes do not move).

    The image is filled with ``fill``, masks and the class raster with 0.
    """
    dh, dw = max(0, height - sample.height), max(0, width - sample.width)
    if dh == 0 and dw == 0:
        return sample

    def _pad(a: Array, value: float) -> Array:
        if isinstance(a, torch.Tensor):
            return torch.nn.functional.pad(a, (0, dw, 0, dh), value=value)
        widths = [(0, 0)] * (a.ndim - 2) + [(0, dh), (0, dw)]
        return np.pad(a, widths, constant_values=value)

    return replace(
        sample,
        image=_pad(sample.image, fill),
        masks=_pad(sample.masks, 0) if sample.masks is not None else None,
        class_raster=_pad(sample.class_raster, 0) if sample.class_raster is not None else None,
    )


def fit_to_size(sample: Sample, height: int, width: int, min_box_size: float = 2.0) -> Sample:
    """Centre-crop a larger chip and pad a smaller one (bottom/right) to ``height`` x ``width``."""
    top = max(0, (sample.height - height) // 2)
    left = max(0, (sample.width - width) // 2)
    if sample.height > height or sample.width > width:
        sample = crop(
            sample,
            top,
            left,
            min(height, sample.height),
            min(width, sample.width),
            min_box_size,
        )
    return pad_to(sample, height, width)


def _to_torch(a: Array | None) -> torch.Tensor | None:
    return torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a


def _like(a: torch.Tensor | None, ref: Array | None) -> Array | None:
    if a is None or isinstance(ref, torch.Tensor):
        return a
    return a.numpy().astype(ref.dtype, copy=False)


def _warp(a: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample ``(..., H, W)`` at ``grid`` (zeros outside), keeping the dtype."""
    lead = a.shape[:-2]
    flat = a.reshape(1, -1, *a.shape[-2:])
    if flat.shape[1] == 0:
        return a.clone()
    out = torch.nn.functional.grid_sample(
        flat.float(), grid, mode=mode, padding_mode="zeros", align_corners=False
    )
    if not a.is_floating_point():
        out = out.round()
    return out.to(a.dtype).reshape(*lead, *a.shape[-2:])


def rotate_zoom(
    sample: Sample,
    angle: float = 0.0,
    scale: float = 1.0,
    row_pct: float = 0.5,
    col_pct: float = 0.5,
    min_box_size: float = 2.0,
) -> Sample:
    """Rotate by ``angle`` degrees and zoom by ``scale`` about a point; the size stays.

    The output centre shows the input point ``z``: with ``scale >= 1`` (zoom in), ``z`` lies
    where the visible window stays inside the chip, at ``row_pct``/``col_pct`` (0-1) of the
    positions it can take; with ``scale < 1`` the chip shrinks about its centre. An input point
    ``P`` goes to ``c + scale * R(angle) (P - z)``, ``c`` the chip centre (positive angles turn
    clockwise on screen, y being down). The image is resampled bilinearly, masks and the class
    raster by nearest neighbour; uncovered pixels are 0. Boxes are the bounds of their turned
    corners (masks: the bounds of the warped mask), clipped to the chip; boxes that end up
    empty, or cut by the border to less than ``min_box_size`` px, are dropped.
    """
    h, w = sample.height, sample.width
    th = math.radians(angle)
    cos, sin = math.cos(th), math.sin(th)
    zx = w / (2 * scale) + col_pct * (w - w / scale)
    zy = h / (2 * scale) + row_pct * (h - h / scale)
    cx, cy = w / 2, h / 2
    # inverse map of the output pixel centres: P = z + R(-angle) (Q - c) / scale
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) + 0.5,
        torch.arange(w, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    dx, dy = (xs - cx) / scale, (ys - cy) / scale
    px = zx + cos * dx + sin * dy
    py = zy - sin * dx + cos * dy
    grid = torch.stack([2 * px / w - 1, 2 * py / h - 1], dim=-1)[None].float()

    image = _to_torch(sample.image)
    masks = _to_torch(sample.masks)
    raster = _to_torch(sample.class_raster)
    out = replace(
        sample,
        image=_like(_warp(image, grid, "bilinear"), sample.image),
        masks=_like(_warp(masks, grid, "nearest"), sample.masks) if masks is not None else None,
        class_raster=(
            _like(_warp(raster, grid, "nearest"), sample.class_raster)
            if raster is not None
            else None
        ),
    )
    if sample.boxes is None:
        return out
    b = _to_torch(sample.boxes).double()
    corners_x = torch.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0]], 1) - zx
    corners_y = torch.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], 1) - zy
    qx = cx + scale * (cos * corners_x - sin * corners_y)
    qy = cy + scale * (sin * corners_x + cos * corners_y)
    moved = torch.stack([qx.min(1).values, qy.min(1).values, qx.max(1).values, qy.max(1).values], 1)
    if out.masks is not None:
        warped = _to_torch(out.masks)
        clipped = _to_torch(boxes_from_masks(warped)).double()
        empty = ~(warped.reshape(warped.shape[0], -1) != 0).any(1)
    else:
        limits = torch.tensor([w, h, w, h], dtype=torch.float64)
        clipped = torch.minimum(moved.clamp_min(0), limits)
        empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    cut = (moved[:, :2] < 0).any(1) | (moved[:, 2] > w) | (moved[:, 3] > h)
    small = ((clipped[:, 2:] - clipped[:, :2]) < min_box_size).any(1)
    keep = ~(empty | (cut & small))
    boxes = clipped.to(_to_torch(sample.boxes).dtype)
    out.boxes = _like(boxes, sample.boxes)
    keep_index = keep if isinstance(sample.boxes, torch.Tensor) else keep.numpy()
    return _select(out, keep_index)


def make_generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    """A generator from a seed (an existing generator is returned as is; None stays None)."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


AUGMENTATION_NAMES = ("crop", "flip_lr", "dihedral", "rotate", "zoom", "brightness", "contrast")
"""Transforms of ``augmentation_parameters``, in the order they are applied."""

DEFAULT_AUGMENTATION_PARAMETERS: Mapping[str, str] = {
    "rotate": "30.0;0.5",
    "brightness": "(0.4,0.6);1.0",
    "contrast": "(0.75,1.5);1.0",
    "zoom": "(1.0,1.2);1.0",
    "crop": "{chip_size};1.0;(0,1);(0,1)",
}
"""ArcGIS's default value table (reference §6.1); the crop size is the chip size."""

_FORMS = {
    "crop": "SIZE[;P[;(ROW0,ROW1)[;(COL0,COL1)]]], e.g. 224;1.0;(0,1);(0,1)",
    "flip_lr": "P, e.g. 0.5",
    "dihedral": "P, e.g. 1.0",
    "rotate": "DEGREES or (MIN,MAX), then ;P, e.g. 30.0;0.5",
    "zoom": "SCALE or (MIN,MAX), then ;P, e.g. (1.0,1.2);1.0",
    "brightness": "(MIN,MAX) in 0-1 (0.5: unchanged), then ;P, e.g. (0.4,0.6);1.0",
    "contrast": "(MIN,MAX) above 0 (1: unchanged), then ;P, e.g. (0.75,1.5);1.0",
}


@dataclass(frozen=True)
class RandomTransform:
    """One transform of ``augmentation_parameters``.

    Attributes:
        name: One of :data:`AUGMENTATION_NAMES`.
        low: Smallest magnitude drawn (degrees, zoom scale, brightness 0-1 with 0.5 unchanged,
            contrast factor; the crop size for ``crop``; unused by the flips).
        high: Largest magnitude drawn.
        p: Probability that the transform applies to a chip.
        rows: Range (0-1) of the crop's relative vertical position (``crop``) or of the zoom
            centre (``zoom``).
        cols: The same horizontally.
    """

    name: str
    low: float = 0.0
    high: float = 0.0
    p: float = 1.0
    rows: tuple[float, float] = (0.0, 1.0)
    cols: tuple[float, float] = (0.0, 1.0)


def _split_top(text: str) -> list[str]:
    """Split at ``;`` outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "(["
        depth -= ch in ")]"
        if ch == ";" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _is_range(part: Any) -> bool:
    if isinstance(part, (tuple, list)):
        return True
    return str(part).strip()[:1] in "(["


def _number_or_range(part: Any) -> tuple[float, float]:
    if isinstance(part, (int, float)) and not isinstance(part, bool):
        return float(part), float(part)
    if isinstance(part, (tuple, list)) and len(part) == 2:
        lo, hi = (float(v) for v in part)
        return lo, hi
    text = str(part).strip()
    if text[:1] in "([" and text[-1:] in ")]":
        values = [float(v) for v in text[1:-1].split(",")]
        if len(values) != 2:
            raise ValueError(text)
        return values[0], values[1]
    value = float(text)
    return value, value


def _parse_one(name: str, value: Any, chip_size: int, max_crop: int) -> RandomTransform:
    form = _FORMS[name]
    # a string "A;B;..." or its parts as a sequence, e.g. ((0.4, 0.6), 1.0); a number: one part
    if isinstance(value, str):
        parts: list[Any] = _split_top(value)
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = [value]
    parts = [q for q in parts if q != ""]
    try:
        if name in ("flip_lr", "dihedral"):
            if len(parts) > 1:
                raise ValueError(value)
            p = float(parts[0]) if parts else 1.0
            t = RandomTransform(name, p=p)
        else:
            if not parts or len(parts) > (4 if name == "crop" else 2):
                raise ValueError(value)
            lo, hi = _number_or_range(parts[0])
            p = float(parts[1]) if len(parts) > 1 else 1.0
            rows = _number_or_range(parts[2]) if len(parts) > 2 else (0.0, 1.0)
            cols = _number_or_range(parts[3]) if len(parts) > 3 else (0.0, 1.0)
            if name == "rotate" and lo == hi and not _is_range(parts[0]):
                lo, hi = -abs(lo), abs(lo)  # one number: +- that many degrees
            if name == "zoom" and lo == hi and lo > 1 and not _is_range(parts[0]):
                lo = 1.0  # one scale: up to it, as fastai's zoom
            t = RandomTransform(name, min(lo, hi), max(lo, hi), p, rows, cols)
    except (ValueError, TypeError):
        raise ParameterError(
            f"augmentation {name}={value!r} is not {form.split(', e.g.')[0]}",
            f"e.g. {form.split('e.g. ')[1]}",
        ) from None
    problem = None
    if not 0.0 <= t.p <= 1.0:
        problem = f"its probability {t.p} is not between 0 and 1"
    elif name == "rotate" and not -180 <= t.low <= t.high <= 180:
        problem = "angles must lie between -180 and 180 degrees"
    elif name == "zoom" and not 0.25 <= t.low <= t.high <= 4:
        problem = "zoom scales must lie between 0.25 and 4"
    elif name == "brightness" and not 0 <= t.low <= t.high <= 1:
        problem = "brightness must lie between 0 and 1 (0.5: unchanged)"
    elif name == "contrast" and not 0 < t.low <= t.high <= 10:
        problem = "contrast factors must lie above 0 and at most 10 (1: unchanged)"
    elif name == "crop" and (t.low != t.high or not t.low.is_integer()):
        problem = "the crop size must be one whole number of pixels"
    elif name == "crop" and not 16 <= t.low <= max_crop:
        problem = f"the crop size must be between 16 and the tile size ({max_crop})"
    elif (
        any(not 0 <= v <= 1 for v in (*t.rows, *t.cols))
        or t.rows[0] > t.rows[1]
        or (t.cols[0] > t.cols[1])
    ):
        problem = "crop positions must be ranges within (0,1)"
    if problem:
        raise ParameterError(
            f"augmentation {name}={value!r}: {problem}", f"e.g. {form.split('e.g. ')[1]}"
        )
    return t


def parse_augmentation_parameters(
    parameters: Mapping[str, Any] | Sequence[Any] | None,
    chip_size: int,
    max_crop: int | None = None,
) -> tuple[RandomTransform, ...]:
    """Parse ArcGIS's ``augmentation_parameters`` value table.

    Each row is a transform name and its value: numbers and ``(MIN,MAX)`` ranges separated by
    ``;``, the last of the magnitude parts followed by the probability (reference §6.1):

    * ``rotate 30.0;0.5``: turn by up to +-30 degrees (or ``(MIN,MAX)``), half of the chips;
    * ``zoom (1.0,1.2);1.0``: zoom by a scale drawn log-uniformly from the range (> 1 zooms
      in, about a random point; < 1 zooms out);
    * ``brightness (0.4,0.6);1.0``: 0.5 leaves the chip unchanged; ``b`` adds ``2 (b - 0.5)``
      to the normalised image (about as many band standard deviations);
    * ``contrast (0.75,1.5);1.0``: scale the normalised image about its mean by a factor
      drawn log-uniformly from the range;
    * ``crop 224;1.0;(0,1);(0,1)``: a window of 224 px (at most the tile size) at a random
      relative position within the row and column ranges (else the centre window);
    * ``flip_lr 0.5`` / ``dihedral 1.0``: a left-right flip / a random flip or rotation by
      quarter turns, with that probability.

    Args:
        parameters: ``{name: value}``, or rows as ``(name, value)`` pairs or ``"NAME=VALUE"``
            / ``"NAME VALUE"`` strings; values as strings like ``"(0.4,0.6);1.0"`` or as
            numbers and tuples. None or empty: ArcGIS's defaults
            (:data:`DEFAULT_AUGMENTATION_PARAMETERS`).
        chip_size: The training chip size (the default crop size).
        max_crop: Largest crop size (the tile size); default ``chip_size``.

    Returns:
        The transforms, in the order they are applied (:data:`AUGMENTATION_NAMES`).

    Raises:
        ParameterError: for unknown or repeated names and values that do not fit, one line.
    """
    if not parameters:
        parameters = {
            k: v.format(chip_size=chip_size) for k, v in DEFAULT_AUGMENTATION_PARAMETERS.items()
        }
    rows: list[tuple[str, Any]] = []
    if isinstance(parameters, Mapping):
        rows = list(parameters.items())
    else:
        for row in parameters:
            if isinstance(row, str):
                text = row.strip()
                cut = min((i for i in (text.find("="), text.find(" ")) if i > 0), default=-1)
                if cut < 0:
                    raise ParameterError(
                        f"augmentation parameter {row!r} is not NAME=VALUE",
                        "e.g. rotate=30.0;0.5",
                    )
                rows.append((text[:cut], text[cut + 1 :].strip()))
            else:
                name, value = row
                rows.append((name, value))
    parsed: dict[str, RandomTransform] = {}
    for name, value in rows:
        key = str(name).strip().lower()
        if key not in AUGMENTATION_NAMES:
            raise ParameterError(
                f"unknown augmentation '{name}'", f"use {', '.join(AUGMENTATION_NAMES)}"
            )
        if key in parsed:
            raise ParameterError(f"augmentation {key} is given twice", "give each one once")
        parsed[key] = _parse_one(key, value, chip_size, max_crop or chip_size)
    return tuple(parsed[n] for n in AUGMENTATION_NAMES if n in parsed)


class Augmenter:
    """Random joint augmentation for training.

    In this order: a random crop to ``chip_size`` (when the chip is larger), a random element
    of the dihedral group (``MAP_SPACE``) or a random left-right flip (``PIXEL_SPACE``), a
    random zoom (when ``zoom`` is given), and a brightness/contrast jitter of the (already
    normalised) image.

    Args:
        image_space: ``MAP_SPACE`` or ``PIXEL_SPACE``.
        chip_size: Crop size ``(rows, cols)`` or one int for squares; None = no crop.
        flips: Apply the flips/rotations.
        brightness: Add ``b ~ U(-brightness, brightness)`` to the image (normalised units).
        contrast: Scale the image about its mean by ``c ~ U(1 - contrast, 1 + contrast)``.
        min_box_size: Boxes cut by the crop to less than this many pixels are dropped.
        zoom: ``(smallest, largest)`` scale of a zoom about a random point, drawn uniformly
            in log scale, applied to ``zoom_probability`` of the samples; None: no zoom.
        zoom_probability: Share of the samples zoomed.
        transforms: ArcGIS's custom transforms (:func:`parse_augmentation_parameters`),
            applied after the above; use :meth:`from_parameters` to apply only them.
    """

    def __init__(
        self,
        image_space: str = "MAP_SPACE",
        chip_size: int | tuple[int, int] | None = None,
        flips: bool = True,
        brightness: float = 0.1,
        contrast: float = 0.1,
        min_box_size: float = 2.0,
        *,
        zoom: tuple[float, float] | None = None,
        zoom_probability: float = 0.5,
        transforms: Sequence[RandomTransform] = (),
    ) -> None:
        space = str(image_space).upper()
        if space not in IMAGE_SPACES:
            raise ValueError(f"image_space must be one of {IMAGE_SPACES}, got {image_space!r}")
        if brightness < 0 or not 0 <= contrast < 1:
            raise ValueError("brightness must be >= 0 and contrast in [0, 1)")
        if zoom is not None and not 0 < zoom[0] <= zoom[1]:
            raise ValueError(f"zoom must be (smallest, largest) scales above 0, got {zoom}")
        self.image_space = space
        if isinstance(chip_size, int):
            chip_size = (chip_size, chip_size)
        self.chip_size = tuple(chip_size) if chip_size is not None else None
        self.flips = flips
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.min_box_size = float(min_box_size)
        self.zoom = None if zoom is None else (float(zoom[0]), float(zoom[1]))
        self.zoom_probability = float(zoom_probability)
        self.transforms = tuple(transforms)
        unknown = [t.name for t in self.transforms if t.name not in AUGMENTATION_NAMES]
        if unknown:
            raise ValueError(f"unknown transforms {unknown}")

    @classmethod
    def from_parameters(
        cls,
        parameters: Mapping[str, Any] | Sequence[Any] | None,
        image_space: str = "MAP_SPACE",
        chip_size: int = 224,
        max_crop: int | None = None,
        min_box_size: float = 2.0,
    ) -> Augmenter:
        """An augmenter that applies only ArcGIS's custom transforms (``augmentation=CUSTOM``).

        Args:
            parameters: The ``augmentation_parameters`` value table (see
                :func:`parse_augmentation_parameters`); None: ArcGIS's defaults.
            image_space: ``MAP_SPACE`` or ``PIXEL_SPACE``.
            chip_size: Training chip size (default crop size).
            max_crop: Largest crop size (the tile size).
            min_box_size: Boxes cut to less than this many pixels are dropped.

        Raises:
            ParameterError: for parameters that do not parse or fit.
        """
        transforms = parse_augmentation_parameters(parameters, chip_size, max_crop)
        return cls(
            image_space,
            None,
            flips=False,
            brightness=0.0,
            contrast=0.0,
            min_box_size=min_box_size,
            transforms=transforms,
        )

    def __repr__(self) -> str:
        return (
            f"Augmenter({self.image_space!r}, chip_size={self.chip_size}, flips={self.flips}, "
            f"brightness={self.brightness}, contrast={self.contrast}, zoom={self.zoom}, "
            f"transforms={[t.name for t in self.transforms]})"
        )

    def __call__(self, sample: Sample, generator: torch.Generator | int | None = None) -> Sample:
        """Augment one sample; the same generator state (or seed) gives the same result."""
        # Always draw the same numbers, so the stream does not depend on the chip.
        gen = make_generator(generator)
        u = torch.rand(6, generator=gen, dtype=torch.float64).tolist()
        if self.chip_size is not None:
            ch, cw = self.chip_size
            if sample.height > ch or sample.width > cw:
                h, w = min(ch, sample.height), min(cw, sample.width)
                top = min(int(u[0] * (sample.height - h + 1)), sample.height - h)
                left = min(int(u[1] * (sample.width - w + 1)), sample.width - w)
                sample = crop(sample, top, left, h, w, self.min_box_size)
        if self.flips:
            flip = u[2] < 0.5
            if self.image_space == "MAP_SPACE":
                sample = dihedral(sample, 4 * flip + min(int(u[3] * 4), 3))
            elif flip:
                sample = hflip(sample)
        if self.zoom is not None:
            # drawn only by a zooming augmenter: the others' streams stay as they were
            z = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
            if z[0] < self.zoom_probability:
                scale = _log_uniform(*self.zoom, z[1])
                sample = rotate_zoom(sample, 0.0, scale, z[2], z[3], self.min_box_size)
        if self.brightness or self.contrast:
            b = (2 * u[4] - 1) * self.brightness
            c = 1 + (2 * u[5] - 1) * self.contrast
            sample = replace(sample, image=jitter(sample.image, b, c))
        if self.transforms:
            v = torch.rand(4 * len(AUGMENTATION_NAMES), generator=gen, dtype=torch.float64)
            sample = self._custom(sample, v.tolist())
        return sample

    def _custom(self, sample: Sample, v: list[float]) -> Sample:
        """Apply :attr:`transforms` with the draws ``v`` (four per known transform)."""
        angle, scale, centre = 0.0, 1.0, (0.5, 0.5)
        brightness, contrast = 0.0, 1.0
        for t in self.transforms:
            slot = 4 * AUGMENTATION_NAMES.index(t.name)
            apply, m, r, c = v[slot : slot + 4]
            row = t.rows[0] + r * (t.rows[1] - t.rows[0])
            col = t.cols[0] + c * (t.cols[1] - t.cols[0])
            if apply >= t.p:
                if t.name == "crop":  # not applied: the centre window
                    row = col = 0.5
                else:
                    continue
            if t.name == "crop":
                size = int(t.low)
                h, w = min(size, sample.height), min(size, sample.width)
                if (h, w) != (sample.height, sample.width):
                    top = min(int(row * (sample.height - h + 1)), sample.height - h)
                    left = min(int(col * (sample.width - w + 1)), sample.width - w)
                    sample = crop(sample, top, left, h, w, self.min_box_size)
            elif t.name == "flip_lr":
                sample = hflip(sample)
            elif t.name == "dihedral":
                sample = dihedral(sample, 1 + min(int(m * 7), 6))  # any but the identity
            elif t.name == "rotate":
                angle = t.low + m * (t.high - t.low)
            elif t.name == "zoom":
                scale = _log_uniform(t.low, t.high, m)
                centre = (row, col)
            elif t.name == "brightness":
                brightness = 2 * (t.low + m * (t.high - t.low) - 0.5)
            elif t.name == "contrast":
                contrast = _log_uniform(t.low, t.high, m)
        if angle or scale != 1.0:
            sample = rotate_zoom(sample, angle, scale, *centre, min_box_size=self.min_box_size)
        if brightness or contrast != 1.0:
            sample = replace(sample, image=jitter(sample.image, brightness, contrast))
        return sample


def _log_uniform(low: float, high: float, u: float) -> float:
    """The value at ``u`` (0-1) of ``[low, high]`` on a log scale (scales, contrasts)."""
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def jitter(image: Array, brightness: float, contrast: float) -> Array:
    """``(image - mean) * contrast + mean + brightness`` with the image's overall mean.

    Raises:
        ValueError: for an integer image (jitter applies to normalised, float images).
    """
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise ValueError("brightness/contrast jitter needs a normalised (float) image")
        mean = image.mean()
        return (image - mean) * contrast + mean + brightness
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError("brightness/contrast jitter needs a normalised (float) image")
    mean = image.mean(dtype=np.float64)
    return ((image - mean) * contrast + mean + brightness).astype(image.dtype, copy=False)
