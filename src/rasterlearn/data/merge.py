"""Training data: one or more export folders merged into one set of chips (reference §7)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import rasterio

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.chips import ClassInfo
from rasterlearn.formats.export_reader import ChipRecord, ExportFolder, read_export_folder
from rasterlearn.geo.stats import BandStats, chip_band_stats, merge_band_stats

FolderLike = ExportFolder | str | Path


class TrainingData:
    """One or more export folders merged, as arcgis.learn's ``prepare_data`` merges a list.

    The folders must share the metadata format and the band count. Classes are unioned by value
    (the first folder's name and colour win), band statistics are merged exactly
    (:meth:`BandStats.merge`) and chips are concatenated in folder order.

    Args:
        folders: Export folders, read or as paths (one, or a sequence).

    Raises:
        InputError: if no folder is given, or the folders differ in format or band count.
    """

    def __init__(self, folders: FolderLike | Sequence[FolderLike]) -> None:
        if isinstance(folders, (ExportFolder, str, Path)):
            folders = [folders]
        read = tuple(f if isinstance(f, ExportFolder) else read_export_folder(f) for f in folders)
        if not read:
            raise InputError("no training-data folder given", "give at least one export folder")
        first = read[0]
        for other in read[1:]:
            if other.metadata_format != first.metadata_format:
                raise InputError(
                    f"cannot merge training data: {first.path} is {first.metadata_format} but "
                    f"{other.path} is {other.metadata_format}",
                    "merge only folders exported with the same metadata format",
                )
            if other.dataset_type != first.dataset_type:
                raise InputError(
                    f"cannot merge training data: {first.path} is {first.dataset_type} but "
                    f"{other.path} is {other.dataset_type}",
                    "merge only folders of one kind (image pairs with image pairs)",
                )
            if other.band_count != first.band_count:
                raise InputError(
                    f"cannot merge training data: {first.path} has {first.band_count} bands but "
                    f"{other.path} has {other.band_count}",
                    "merge only folders exported from imagery with the same bands",
                )
        self.folders: tuple[ExportFolder, ...] = read
        classes: dict[int, ClassInfo] = {}
        for folder in read:
            for c in folder.classes:
                classes.setdefault(c.value, c)
        self.classes: tuple[ClassInfo, ...] = tuple(classes[v] for v in sorted(classes))
        self.chips: tuple[ChipRecord, ...] = tuple(c for f in read for c in f.chips)
        self.chip_folders: tuple[int, ...] = tuple(i for i, f in enumerate(read) for _ in f.chips)

    def __len__(self) -> int:
        return len(self.chips)

    def __repr__(self) -> str:
        paths = ", ".join(str(f.path) for f in self.folders)
        return f"TrainingData({self.metadata_format}, {len(self)} chips, [{paths}])"

    @property
    def metadata_format(self) -> str:
        return self.folders[0].metadata_format

    @property
    def band_count(self) -> int:
        """Bands of each chip image."""
        return self.folders[0].band_count

    @property
    def paired(self) -> bool:
        """Chips come in pairs (``images/`` and ``images2/``), fed to a model stacked."""
        return self.folders[0].paired

    @property
    def dataset_type(self) -> str:
        """arcgis.learn's dataset type (``ChangeDetection`` for Classified_Tiles pairs)."""
        return self.folders[0].dataset_type

    @property
    def input_band_count(self) -> int:
        """Bands a model reads: the chip's, or both chips' of a pair (first, then second)."""
        return self.band_count * (2 if self.paired else 1)

    @property
    def tile_height(self) -> int:
        """The largest chip height of the folders."""
        return max(f.tile_height for f in self.folders)

    @property
    def tile_width(self) -> int:
        """The largest chip width of the folders."""
        return max(f.tile_width for f in self.folders)

    @property
    def image_space(self) -> str:
        """``MAP_SPACE`` when every folder is, else ``PIXEL_SPACE`` (no vertical flips then)."""
        spaces = {f.image_space for f in self.folders}
        return "MAP_SPACE" if spaces == {"MAP_SPACE"} else "PIXEL_SPACE"

    @property
    def class_values(self) -> list[int]:
        """The class values, ascending."""
        return [c.value for c in self.classes]

    @cached_property
    def band_names(self) -> tuple[str, ...]:
        """Band names from the first folder's emd (``InputRastersProps.BandNames``), or ()."""
        props = self.folders[0].emd.get("InputRastersProps") or {}
        names = props.get("BandNames") if isinstance(props, dict) else None
        if not isinstance(names, list):
            names = [r.get("BandName") for r in self.folders[0].emd.get("AllTilesStats") or []]
        if not names or not all(isinstance(n, str) for n in names):
            return ()
        return tuple(names)

    @cached_property
    def dtype(self) -> str:
        """The data type of the chips (of the first chip)."""
        with rasterio.open(self.chips[0].image) as ds:
            return ds.dtypes[0]

    @cached_property
    def band_stats(self) -> tuple[BandStats, ...]:
        """Per-band statistics of the valid pixels of every chip, merged over the folders.

        A folder's ``BandStatsState`` is used where recorded; otherwise its chips are read.
        Pairs have :attr:`input_band_count` statistics: the first images' bands, then the
        second images' (``BandStatsState2``).
        """
        merged: list[BandStats] = []
        for folder in self.folders:
            stats = list(folder.band_stats) or chips_band_stats(folder.chips)
            if self.paired:
                stats += list(folder.band_stats2) or chips_band_stats(folder.chips, second=True)
            if len(stats) != self.input_band_count:
                raise InputError(
                    f"{folder.path} records statistics for {len(stats)} bands but has "
                    f"{self.input_band_count}",
                    "re-export the training data",
                )
            merged = merge_band_stats(merged, stats)
        return tuple(merged)

    def folder_of(self, index: int) -> ExportFolder:
        """The folder chip ``index`` comes from."""
        return self.folders[self.chip_folders[index]]

    def split(
        self, validation_percent: float = 10.0, seed: int = 42
    ) -> tuple[list[int], list[int]]:
        """A deterministic random split of chip indices into training and validation.

        Args:
            validation_percent: Share of chips held out, in percent (0 <= p < 100). When it is
                above 0, both parts get at least one chip.
            seed: Seed of the permutation; the same seed gives the same split.

        Returns:
            ``(train, validation)`` chip indices, each ascending.

        Raises:
            ParameterError: for a percentage outside 0..100.
            InputError: if there are too few chips to hold any out.
        """
        if not 0 <= validation_percent < 100:
            raise ParameterError(
                f"validation percentage must be at least 0 and below 100, got {validation_percent}",
                "use e.g. 10",
            )
        n = len(self.chips)
        if validation_percent == 0:
            return list(range(n)), []
        if n < 2:
            raise InputError(
                f"{n} chip{'' if n == 1 else 's'} in {self!r}: too few to hold out "
                f"{validation_percent}% for validation",
                "export more chips (smaller stride or tiles) or set the validation percentage to 0",
            )
        n_val = math.floor(n * validation_percent / 100 + 0.5)
        n_val = min(max(n_val, 1), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        return sorted(int(i) for i in order[n_val:]), sorted(int(i) for i in order[:n_val])


def chips_band_stats(chips: Sequence[ChipRecord], second: bool = False) -> list[BandStats]:
    """Per-band statistics of the valid pixels (GDAL dataset mask) of chip images (with
    ``second``, of their ``images2/`` images)."""
    merged: list[BandStats] = []
    for chip in chips:
        with rasterio.open(chip.image2 if second else chip.image) as ds:
            data = ds.read()
            valid = ds.dataset_mask() > 0
        merged = merge_band_stats(merged, chip_band_stats(data, valid))
    return merged
