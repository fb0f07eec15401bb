"""Torch datasets over training data: pixel classification, object detection, classification.

Every dataset reads chips with rasterio (any band count, uint8/uint16/float32...), zeroes
invalid pixels (GDAL's dataset mask: the nodata value, an alpha band or an internal mask),
normalises them with a :class:`Normalizer` (the one the model emd will record), optionally
augments them jointly with their targets and brings them to ``chip_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from rasterlearn.data.augment import Augmenter, Sample, boxes_from_masks, fit_to_size
from rasterlearn.data.merge import TrainingData
from rasterlearn.data.normalization import Normalizer
from rasterlearn.errors import InputError
from rasterlearn.formats.export_reader import ExportFolder

SEGMENTATION_FORMATS = ("Classified_Tiles",)
DETECTION_FORMATS = ("PASCAL_VOC_rectangles", "KITTI_rectangles", "RCNN_Masks")
CLASSIFICATION_FORMATS = ("Labeled_Tiles", "Imagenet", "MultiLabeled_Tiles")
BACKGROUND_NAME = "NoData"


def read_chip(path: Path, band_count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A chip's ``(bands, rows, cols)`` pixels and ``(rows, cols)`` valid mask.

    Raises:
        InputError: if the chip cannot be read or has another band count than expected.
    """
    try:
        with rasterio.open(path) as ds:
            data = ds.read()
            valid = ds.dataset_mask() > 0
    except rasterio.errors.RasterioIOError as err:
        raise InputError(f"cannot read chip {path}: {err}", "re-export the training data") from None
    if band_count is not None and data.shape[0] != band_count:
        raise InputError(
            f"chip {path} has {data.shape[0]} bands but the training data has {band_count}",
            "re-export the training data",
        )
    return data, valid


def _read_label_raster(path: Path) -> np.ndarray:
    try:
        with rasterio.open(path) as ds:
            return ds.read()
    except rasterio.errors.RasterioIOError as err:
        raise InputError(
            f"cannot read label {path}: {err}", "re-export the training data"
        ) from None


def values_to_indices(raster: np.ndarray, class_values: Sequence[int]) -> np.ndarray:
    """Class values -> contiguous indices: the i-th of ``class_values`` (ascending) becomes
    ``i + 1``; 0 and values not in the list become 0 (NoData)."""
    values = np.asarray(sorted(class_values), dtype=np.int64)
    raster = np.asarray(raster).astype(np.int64, copy=False)
    if values.size == 0:
        return np.zeros(raster.shape, dtype=np.int64)
    pos = np.minimum(np.searchsorted(values, raster), values.size - 1)
    return np.where(values[pos] == raster, pos + 1, 0).astype(np.int64)


def _size(chip_size: int | Sequence[int] | None, data: TrainingData) -> tuple[int, int]:
    if chip_size is None:
        return data.tile_height, data.tile_width
    if isinstance(chip_size, int):
        chip_size = (chip_size, chip_size)
    h, w = (int(v) for v in chip_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"chip_size must be positive, got {chip_size}")
    return h, w


class ChipDataset(Dataset):
    """Common part of the datasets: chip reading, normalisation and augmentation.

    Args:
        data: Training data (or one export folder).
        indices: Chips to use (indices into ``data.chips``, e.g. one part of
            :meth:`TrainingData.split`); default all.
        chip_size: Output size ``(rows, cols)`` or an int for squares; default the tile size.
        normalizer: Default :meth:`Normalizer.from_training_data` of ``data`` (build it once
            and share it between the training and validation datasets).
        extract_bands: Bands to read (indices); default the normaliser's (all bands).
        augment: Random augmentation (training only); give it ``chip_size`` for random crops.
        seed: Makes augmentation reproducible: sample ``i`` of epoch ``e`` always gets the
            same random draw (see :meth:`set_epoch`). None uses torch's global generator.
    """

    formats: tuple[str, ...] = ()
    task = "training"

    def __init__(
        self,
        data: TrainingData | ExportFolder,
        indices: Sequence[int] | None = None,
        *,
        chip_size: int | Sequence[int] | None = None,
        normalizer: Normalizer | None = None,
        extract_bands: Sequence[int] | None = None,
        augment: Augmenter | None = None,
        seed: int | None = None,
    ) -> None:
        data = data if isinstance(data, TrainingData) else TrainingData(data)
        if data.metadata_format not in self.formats:
            raise InputError(
                f"{data.metadata_format} training data cannot train a {self.task} model",
                f"export it as {' or '.join(self.formats)}",
            )
        self.data = data
        n = len(data.chips)
        indices = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise IndexError(f"chip indices {bad[:5]} out of range for {n} chips")
        self.indices = [i for i in indices if self.usable(i)]
        self.chip_size = _size(chip_size, data)
        self.normalizer = normalizer or Normalizer.from_training_data(data, extract_bands)
        self.extract_bands = [int(b) for b in extract_bands] if extract_bands is not None else None
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def usable(self, chip: int) -> bool:
        """Whether chip ``chip`` (an index into ``data.chips``) can be trained on."""
        return True

    @property
    def num_channels(self) -> int:
        """Bands of the images the dataset yields."""
        bands = self.extract_bands or self.normalizer.extract_bands
        return len(bands) if bands is not None else self.data.input_band_count

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of an epoch (with ``seed``)."""
        self.epoch = int(epoch)

    def generator(self, chip: int) -> torch.Generator | None:
        """The generator of a chip's augmentation in the current epoch (None without seed)."""
        if self.seed is None:
            return None
        state = np.random.SeedSequence([self.seed, self.epoch, chip]).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def image(self, chip: int) -> torch.Tensor:
        """Chip ``chip`` (an index into ``data.chips``) read and normalised, ``(C, H, W)``."""
        pixels, valid = read_chip(self.data.chips[chip].image, self.data.band_count)
        x = self.normalizer.normalize(pixels, self.extract_bands, mask=valid)
        return torch.from_numpy(np.ascontiguousarray(x))

    def _augment(self, sample: Sample, chip: int) -> Sample:
        if self.augment is not None:
            sample = self.augment(sample, self.generator(chip))
        min_box = self.augment.min_box_size if self.augment is not None else 2.0
        return fit_to_size(sample, *self.chip_size, min_box_size=min_box)


class SegmentationDataset(ChipDataset):
    """Pixel classification (Classified_Tiles): ``(image, target)`` pairs.

    ``image`` is a float32 ``(C, H, W)`` tensor; ``target`` an int64 ``(H, W)`` tensor of
    class indices: 0 = NoData/background (and values not in the class table), ``i`` = the
    ``i``-th class value. ``class_values[i]`` maps an index back to its class value. Chips are
    centre-cropped or padded (target 0) to ``chip_size``.
    """

    formats = SEGMENTATION_FORMATS
    task = "pixel classification"

    @property
    def class_values(self) -> list[int]:
        """Class value of each index (index 0 = NoData, value 0)."""
        return [0, *self.data.class_values]

    @property
    def class_names(self) -> list[str]:
        return [BACKGROUND_NAME, *(c.name for c in self.data.classes)]

    def target(self, chip: int) -> torch.Tensor:
        """The class indices of chip ``chip`` (an index into ``data.chips``), unaugmented."""
        record = self.data.chips[chip]
        if record.class_raster is None:
            raise InputError(f"chip {record.image} has no class raster", "re-export the data")
        raster = _read_label_raster(record.class_raster)[0]
        return torch.from_numpy(values_to_indices(raster, self.data.class_values))

    def class_pixel_counts(self) -> np.ndarray:
        """Pixels of each class index (0 = NoData) in the dataset's chips, unaugmented.

        Returns:
            int64 counts, ``len(class_values)`` of them.
        """
        counts = np.zeros(len(self.class_values), dtype=np.int64)
        for chip in self.indices:
            target = self.target(chip).numpy().ravel()
            counts += np.bincount(target, minlength=counts.size)[: counts.size]
        return counts

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chip = self.indices[i]
        image = self.image(chip)
        target = self.target(chip)
        if target.shape != image.shape[-2:]:
            raise InputError(
                f"label {self.data.chips[chip].class_raster} is {tuple(target.shape)} px but its "
                f"chip is {tuple(image.shape[-2:])}",
                "re-export the training data",
            )
        sample = self._augment(Sample(image, class_raster=target), chip)
        return sample.image, sample.class_raster


class ChangeDataset(SegmentationDataset):
    """Change detection (Classified_Tiles pairs): ``(image, target)`` as
    :class:`SegmentationDataset`, the image holding the ``images/`` chip's bands, then the
    ``images2/`` chip's (``2 x bands`` channels), the target the change classes.

    A pixel is valid where it is valid in both images; augmentation moves both alike.

    Raises:
        InputError: for training data that is not made of pairs.
    """

    task = "change detection"

    def __init__(self, data: TrainingData | ExportFolder, *args: Any, **kwargs: Any) -> None:
        data = data if isinstance(data, TrainingData) else TrainingData(data)
        if not data.paired:
            raise InputError(
                f"{data!r} holds no image pairs (images2/), so it cannot train change detection",
                "export with an additional input raster (in_raster2)",
            )
        super().__init__(data, *args, **kwargs)

    def image(self, chip: int) -> torch.Tensor:
        """Both images of pair ``chip``, stacked and normalised, ``(2 x bands, H, W)``."""
        record = self.data.chips[chip]
        first, first_valid = read_chip(record.image, self.data.band_count)
        second, second_valid = read_chip(record.image2, self.data.band_count)
        if first.shape != second.shape:
            raise InputError(
                f"chips {record.image} and {record.image2} differ in size",
                "re-export the training data",
            )
        dtype = np.result_type(first, second)
        pixels = np.concatenate([first.astype(dtype), second.astype(dtype)])
        x = self.normalizer.normalize(pixels, self.extract_bands, mask=first_valid & second_valid)
        return torch.from_numpy(np.ascontiguousarray(x))


class DetectionDataset(ChipDataset):
    """Object detection (PASCAL_VOC_rectangles, KITTI_rectangles, RCNN_Masks).

    Yields ``(image, target)`` with torchvision's target dict: ``boxes`` float32 ``(N, 4)``
    xyxy chip pixels, ``labels`` int64 ``(N,)`` in 1..K (``class_values[label]`` is the class
    value) and, for RCNN_Masks, ``masks`` uint8 ``(N, H, W)``: one per instance of the
    instance rasters (each band of a raster read on its own), with boxes taken from the masks.
    Chips without objects give empty tensors. Boxes with no area are left out.
    """

    formats = DETECTION_FORMATS
    task = "object detection"

    @property
    def with_masks(self) -> bool:
        return self.data.metadata_format == "RCNN_Masks"

    @property
    def class_values(self) -> list[int]:
        """Class value of each label (label 0 = background, value 0)."""
        return [0, *self.data.class_values]

    @property
    def class_names(self) -> list[str]:
        return ["background", *(c.name for c in self.data.classes)]

    def targets(self, chip: int, height: int, width: int) -> Sample:
        """Boxes, labels (and masks) of chip ``chip``, unaugmented, on an empty image."""
        record = self.data.chips[chip]
        index = {v: i + 1 for i, v in enumerate(self.data.class_values)}
        if self.with_masks:
            masks: list[np.ndarray] = []
            labels: list[int] = []
            for value in sorted(record.instance_rasters):
                if value not in index:
                    continue
                raster = _read_label_raster(record.instance_rasters[value])
                if raster.shape[-2:] != (height, width):
                    raise InputError(
                        f"label {record.instance_rasters[value]} is {raster.shape[-2:]} px but "
                        f"its chip is {(height, width)}",
                        "re-export the training data",
                    )
                for band in raster:
                    for instance in np.unique(band[band != 0]):
                        masks.append((band == instance).astype(np.uint8))
                        labels.append(index[value])
            mask_array = np.stack(masks) if masks else np.zeros((0, height, width), dtype=np.uint8)
            return Sample(
                torch.empty(0),
                boxes=torch.from_numpy(boxes_from_masks(mask_array)),
                labels=torch.tensor(labels, dtype=torch.int64),
                masks=torch.from_numpy(mask_array),
            )
        objects = [
            o
            for o in record.objects
            if o.class_value in index and o.xmax > o.xmin and o.ymax > o.ymin
        ]
        boxes = torch.tensor([o.box for o in objects], dtype=torch.float32).reshape(-1, 4)
        labels_t = torch.tensor([index[o.class_value] for o in objects], dtype=torch.int64)
        return Sample(torch.empty(0), boxes=boxes, labels=labels_t)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chip = self.indices[i]
        image = self.image(chip)
        sample = replace(self.targets(chip, image.shape[-2], image.shape[-1]), image=image)
        sample = self._augment(sample, chip)
        target = {"boxes": sample.boxes, "labels": sample.labels}
        if sample.masks is not None:
            target["masks"] = sample.masks
        return sample.image, target


class ClassificationDataset(ChipDataset):
    """Chip classification (Labeled_Tiles, Imagenet, MultiLabeled_Tiles).

    Yields ``(image, target)``: the image resized (bilinear) to ``chip_size``; the target an
    int64 scalar class index 0..K-1 (``class_values[index]`` is the value), or for
    MultiLabeled_Tiles a float32 multi-hot ``(K,)`` vector. Chips without a class
    (Labeled_Tiles/Imagenet) are left out of ``indices``.
    """

    formats = CLASSIFICATION_FORMATS
    task = "classification"

    def usable(self, chip: int) -> bool:
        """Single-label chips need a class of the class table."""
        if self.multi_label:
            return True
        classes = self.data.chips[chip].tile_classes
        return bool(classes) and classes[0] in self.data.class_values

    @property
    def multi_label(self) -> bool:
        return self.data.metadata_format == "MultiLabeled_Tiles"

    @property
    def class_values(self) -> list[int]:
        """Class value of each index (no background class)."""
        return list(self.data.class_values)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.data.classes]

    def target(self, chip: int) -> torch.Tensor:
        """The class index (or multi-hot vector) of chip ``chip`` (an index into ``data.chips``)."""
        index = {v: i for i, v in enumerate(self.class_values)}
        classes = self.data.chips[chip].tile_classes
        if self.multi_label:
            hot = torch.zeros(len(index), dtype=torch.float32)
            for v in classes:
                if v in index:
                    hot[index[v]] = 1.0
            return hot
        return torch.tensor(index[classes[0]], dtype=torch.int64)

    def class_counts(self) -> np.ndarray:
        """How many of the dataset's chips hold each class index (int64, K values)."""
        counts = np.zeros(len(self.class_values), dtype=np.int64)
        for chip in self.indices:
            counts += self._hot(chip)
        return counts

    def _hot(self, chip: int) -> np.ndarray:
        target = self.target(chip)
        if self.multi_label:
            return (target.numpy() > 0.5).astype(np.int64)
        return np.eye(len(self.class_values), dtype=np.int64)[int(target)]

    def oversampling_weights(self) -> list[float]:
        """A sampling weight per item (ArcGIS's ``oversample``): chips of rare classes are
        drawn as often as chips of common ones.

        A chip's weight is ``1 / count`` of its class (:meth:`class_counts`); with several
        classes, that of its rarest class; a MultiLabeled_Tiles chip without classes counts as
        a class of its own.
        """
        counts = self.class_counts()
        hots = [self._hot(chip) for chip in self.indices]
        empty = sum(1 for h in hots if not h.any())
        return [float((1.0 / counts[h > 0]).max()) if h.any() else 1.0 / empty for h in hots]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chip = self.indices[i]
        image = self.image(chip)
        if tuple(image.shape[-2:]) != self.chip_size:
            image = torch.nn.functional.interpolate(
                image[None],
                size=self.chip_size,
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0]
        sample = self._augment(Sample(image), chip)
        return sample.image, self.target(chip)


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Batch detection samples: images stacked ``(N, C, H, W)`` (padded at the bottom/right to
    the largest when sizes differ; boxes do not move, masks are padded too), targets as a list."""
    images = [b[0] for b in batch]
    targets = [dict(b[1]) for b in batch]
    h = max(int(x.shape[-2]) for x in images)
    w = max(int(x.shape[-1]) for x in images)
    padded = []
    for x, t in zip(images, targets, strict=True):
        dh, dw = h - x.shape[-2], w - x.shape[-1]
        if dh or dw:
            x = torch.nn.functional.pad(x, (0, dw, 0, dh))
            if "masks" in t:
                t["masks"] = torch.nn.functional.pad(t["masks"], (0, dw, 0, dh))
        padded.append(x)
    return torch.stack(padded), targets
