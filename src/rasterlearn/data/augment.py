"""Joint augmentation of a chip and its targets (boxes, instance masks, class raster).

Every transform works on numpy arrays and torch tensors alike and moves the image and all its
targets together. Coordinates are chip pixels with x to the right and y down; a box
``(xmin, ymin, xmax, ymax)`` spans pixel edges, so the box of the pixels ``c0..c1`` is
``(c0, ., c1 + 1, .)``.

Random choices come from a ``torch.Generator`` (or a seed), so a sample is reproducible.
In ``MAP_SPACE`` chips are north-up views of the ground and any of the 8 flips/rotations of the
dihedral group is a valid view; in ``PIXEL_SPACE`` (oblique or side views) only horizontal
flips are (reference §7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

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


def make_generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    """A generator from a seed (an existing generator is returned as is; None stays None)."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


class Augmenter:
    """Random joint augmentation for training.

    In this order: a random crop to ``chip_size`` (when the chip is larger), a random element
    of the dihedral group (``MAP_SPACE``) or a random left-right flip (``PIXEL_SPACE``), and a
    brightness/contrast jitter of the (already normalised) image.

    Args:
        image_space: ``MAP_SPACE`` or ``PIXEL_SPACE``.
        chip_size: Crop size ``(rows, cols)`` or one int for squares; None = no crop.
        flips: Apply the flips/rotations.
        brightness: Add ``b ~ U(-brightness, brightness)`` to the image (normalised units).
        contrast: Scale the image about its mean by ``c ~ U(1 - contrast, 1 + contrast)``.
        min_box_size: Boxes cut by the crop to less than this many pixels are dropped.
    """

    def __init__(
        self,
        image_space: str = "MAP_SPACE",
        chip_size: int | tuple[int, int] | None = None,
        flips: bool = True,
        brightness: float = 0.1,
        contrast: float = 0.1,
        min_box_size: float = 2.0,
    ) -> None:
        space = str(image_space).upper()
        if space not in IMAGE_SPACES:
            raise ValueError(f"image_space must be one of {IMAGE_SPACES}, got {image_space!r}")
        if brightness < 0 or not 0 <= contrast < 1:
            raise ValueError("brightness must be >= 0 and contrast in [0, 1)")
        self.image_space = space
        if isinstance(chip_size, int):
            chip_size = (chip_size, chip_size)
        self.chip_size = tuple(chip_size) if chip_size is not None else None
        self.flips = flips
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.min_box_size = float(min_box_size)

    def __repr__(self) -> str:
        return (
            f"Augmenter({self.image_space!r}, chip_size={self.chip_size}, flips={self.flips}, "
            f"brightness={self.brightness}, contrast={self.contrast})"
        )

    def __call__(self, sample: Sample, generator: torch.Generator | int | None = None) -> Sample:
        """Augment one sample; the same generator state (or seed) gives the same result."""
        # Always draw the same six numbers, so the stream does not depend on the chip.
        u = torch.rand(6, generator=make_generator(generator), dtype=torch.float64).tolist()
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
        if self.brightness or self.contrast:
            b = (2 * u[4] - 1) * self.brightness
            c = 1 + (2 * u[5] - 1) * self.contrast
            sample = replace(sample, image=jitter(sample.image, b, c))
        return sample


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
