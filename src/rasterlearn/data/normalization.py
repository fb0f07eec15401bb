"""Input normalisation shared by training and inference (reference §7 and §4.6).

Two paths exist, as in arcgis.learn:

* **ImageNet** for 8-bit RGB data: ``(x / 255 - mean) / std`` with ImageNet's mean and std. A
  model trained this way has no ``NormalizationStats`` in its emd.
* **Min-max + scaled statistics** for everything else: ``s = (x - band_min) / (band_max -
  band_min)`` then ``(s - scaled_mean) / scaled_std``, with the eight vectors stored in the
  model emd as ``NormalizationStats``.

Both are written as the same two steps (min 0 / max 255 for ImageNet), in float32, in the same
order for numpy arrays and torch tensors, so that both give bit-identical results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rasterlearn.geo.stats import BandStats

if TYPE_CHECKING:
    from rasterlearn.data.merge import TrainingData
    from rasterlearn.formats.export_reader import ExportFolder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SCALED_STD = 0.01  # arcgis.learn's replacement for a zero scaled std
RGB_NAMES = ("red", "green", "blue")
_GENERIC_BAND_NAME = re.compile(r"^(band)?[\s_]*\d*$", re.IGNORECASE)

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class NormalizationStats:
    """The eight per-band vectors of the model emd's ``NormalizationStats``.

    The vectors cover every band of the training data (not only the extracted ones); inference
    indexes them with ``ExtractBands`` (reference §4.6).
    """

    band_min_values: tuple[float, ...]
    band_max_values: tuple[float, ...]
    band_mean_values: tuple[float, ...]
    band_std_values: tuple[float, ...]
    scaled_min_values: tuple[float, ...]
    scaled_max_values: tuple[float, ...]
    scaled_mean_values: tuple[float, ...]
    scaled_std_values: tuple[float, ...]

    def __post_init__(self) -> None:
        lengths = {len(getattr(self, f.name)) for f in fields(self)}
        if len(lengths) != 1:
            raise ValueError(f"NormalizationStats vectors differ in length: {sorted(lengths)}")

    @property
    def band_count(self) -> int:
        return len(self.band_min_values)

    @classmethod
    def from_vectors(
        cls,
        band_min: Sequence[float],
        band_max: Sequence[float],
        band_mean: Sequence[float],
        band_std: Sequence[float],
    ) -> NormalizationStats:
        """The statistics from per-band min, max, mean and standard deviation (reference §7).

        ``scaled_min`` = 0, ``scaled_max`` = 1, ``scaled_mean = (mean - min) / (max - min)`` and
        ``scaled_std = std * scaled_mean / mean`` (arcgis.learn's formula, kept for
        compatibility; it is not ``std / (max - min)``). Where ``min == max`` the max is raised
        by 1 first (so that the range is never 0); a scaled std of 0 becomes 0.01. Where the
        quirk has no finite value (a band mean of exactly 0), ``std / (max - min)`` is used.
        Bands without valid pixels (infinite min/max) are given min 0, max 1.
        """
        lo = _finite(band_min, 0.0)
        hi = _finite(band_max, 0.0)
        mean = _finite(band_mean, 0.0)
        std = _finite(band_std, 0.0)
        hi = np.where(hi == lo, hi + 1.0, hi)
        span = hi - lo
        scaled_mean = (mean - lo) / span
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled_std = std * scaled_mean / mean
        scaled_std = np.where(np.isfinite(scaled_std), scaled_std, std / span)
        scaled_std = np.where(scaled_std == 0, MIN_SCALED_STD, scaled_std)
        n = lo.size
        return cls(
            band_min_values=_floats(lo),
            band_max_values=_floats(hi),
            band_mean_values=_floats(mean),
            band_std_values=_floats(std),
            scaled_min_values=(0.0,) * n,
            scaled_max_values=(1.0,) * n,
            scaled_mean_values=_floats(scaled_mean),
            scaled_std_values=_floats(scaled_std),
        )

    @classmethod
    def from_band_stats(cls, stats: Sequence[BandStats]) -> NormalizationStats:
        """The statistics from per-band :class:`BandStats` (population standard deviation)."""
        return cls.from_vectors(
            [s.min for s in stats],
            [s.max for s in stats],
            [s.m1 for s in stats],
            [s.std for s in stats],
        )

    @classmethod
    def from_all_tiles_stats(cls, rows: Sequence[dict]) -> NormalizationStats:
        """The statistics from a training-data emd's ``AllTilesStats`` (Min, Max, Mean, StdDev)."""
        return cls.from_vectors(
            [float(r["Min"]) for r in rows],
            [float(r["Max"]) for r in rows],
            [float(r["Mean"]) for r in rows],
            [float(r["StdDev"]) for r in rows],
        )

    @classmethod
    def from_training_data(cls, data: TrainingData | ExportFolder) -> NormalizationStats:
        """The statistics of training data, as arcgis.learn derives them (reference §7).

        A single folder whose emd has ``AllTilesStats`` for every band uses those; several
        folders use their merged ``BandStatsState``; folders without statistics have them
        computed from their chips (valid pixels only).
        """
        data = _as_training_data(data)
        if len(data.folders) == 1 and not data.paired:
            rows = data.folders[0].emd.get("AllTilesStats") or []
            if len(rows) == data.band_count and all(
                all(k in r for k in ("Min", "Max", "Mean", "StdDev")) for r in rows
            ):
                return cls.from_all_tiles_stats(rows)
        return cls.from_band_stats(data.band_stats)

    def to_emd(self) -> dict[str, list[float]]:
        """The value of the model emd key ``NormalizationStats``."""
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_emd(cls, content: dict) -> NormalizationStats:
        """Read the value of ``NormalizationStats`` (or a whole emd holding that key).

        Raises:
            ValueError: if a vector is missing or holds something other than numbers.
        """
        content = content.get("NormalizationStats", content)
        missing = [f.name for f in fields(cls) if f.name not in content]
        if missing:
            raise ValueError(f"NormalizationStats lacks {', '.join(missing)}")
        vectors = {}
        for f in fields(cls):
            values = content[f.name]
            if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
            ):
                raise ValueError(f"NormalizationStats.{f.name} is not a list of numbers: {values}")
            vectors[f.name] = tuple(float(v) for v in values)
        return cls(**vectors)


def usable_bands(stats: Sequence[BandStats]) -> list[int]:
    """Indices of the bands arcgis.learn keeps in ``extract_bands``: those with max > min."""
    return [i for i, s in enumerate(stats) if s.num > 0 and s.max > s.min]


def uses_imagenet_stats(data: TrainingData | ExportFolder) -> bool:
    """Whether arcgis.learn would treat the data as 8-bit RGB (ImageNet normalisation).

    The rules of reference §7: 3 bands (or 4 with the 4th named ``alpha``), 8-bit chips, band
    names (where set and not generic like ``Band_1``) red/green/blue, and recorded band values
    within 0..255. Everything else is multispectral (min-max + scaled statistics), and so are
    image pairs (change detection), whose model reads the bands of both images.
    """
    data = _as_training_data(data)
    if data.paired:  # the model reads both images of a pair: min-max statistics of each band
        return False
    names = [str(n) for n in data.band_names]
    bands = data.band_count
    if bands == 4 and len(names) == 4 and names[3].strip().lower() == "alpha":
        bands, names = 3, names[:3]
    if bands != 3 or data.dtype != "uint8":
        return False
    if any(n.strip().lower() not in RGB_NAMES and not _GENERIC_BAND_NAME.match(n) for n in names):
        return False
    lows, highs = _recorded_ranges(data)
    return all(lo >= 0 for lo in lows) and all(hi <= 255 for hi in highs)


class Normalizer:
    """Turns raw chip pixels into model input, the same way at training and inference.

    Args:
        stats: Min-max + scaled statistics, or None for ImageNet normalisation of 8-bit RGB.
        extract_bands: Default bands to keep (indices into the input bands), or None for all.
        nodata: A pixel whose bands all equal this value is zeroed before normalisation.
    """

    def __init__(
        self,
        stats: NormalizationStats | None = None,
        extract_bands: Sequence[int] | None = None,
        nodata: float | None = None,
    ) -> None:
        self.stats = stats
        self.extract_bands = [int(b) for b in extract_bands] if extract_bands is not None else None
        self.nodata = nodata
        if stats is None:
            lo = np.zeros(3)
            span = np.full(3, 255.0)
            mean = np.asarray(IMAGENET_MEAN)
            std = np.asarray(IMAGENET_STD)
        else:
            lo = np.asarray(stats.band_min_values)
            span = np.asarray(stats.band_max_values) - lo
            mean = np.asarray(stats.scaled_mean_values)
            std = np.asarray(stats.scaled_std_values)
        # float32 constants: numpy and torch then do the same IEEE float32 operations.
        self._lo = lo.astype(np.float32)
        self._span = span.astype(np.float32)
        self._mean = mean.astype(np.float32)
        self._std = std.astype(np.float32)
        if self.extract_bands is not None:
            self._check_bands(self.extract_bands, self.band_count)

    @property
    def imagenet(self) -> bool:
        """True for ImageNet normalisation (8-bit RGB), False for min-max + scaled statistics."""
        return self.stats is None

    @property
    def band_count(self) -> int:
        """Number of input bands the statistics describe."""
        return int(self._lo.size)

    @classmethod
    def from_training_data(
        cls,
        data: TrainingData | ExportFolder,
        extract_bands: Sequence[int] | None = None,
        imagenet: bool | None = None,
    ) -> Normalizer:
        """The normaliser arcgis.learn would use for this training data.

        Args:
            data: Merged training data or one export folder.
            extract_bands: Bands to keep; default all (the first three for RGB + alpha).
            imagenet: Force (True) or refuse (False) ImageNet normalisation; default decided
                by :func:`uses_imagenet_stats`.
        """
        data = _as_training_data(data)
        if imagenet is None:
            imagenet = uses_imagenet_stats(data)
        if imagenet:
            if extract_bands is None and data.band_count == 4:
                extract_bands = [0, 1, 2]
            if extract_bands is None and data.band_count != 3:
                raise ValueError(
                    f"ImageNet normalisation needs 3 bands but the data has {data.band_count}; "
                    "give extract_bands"
                )
            return cls(None, extract_bands)
        return cls(NormalizationStats.from_training_data(data), extract_bands)

    @classmethod
    def from_emd(cls, emd: dict, nodata: float | None = None) -> Normalizer:
        """The normaliser a model emd describes: ``NormalizationStats`` (absent = ImageNet)
        and ``ExtractBands``."""
        content = emd.get("NormalizationStats")
        stats = NormalizationStats.from_emd(content) if content else None
        bands = emd.get("ExtractBands")
        if not isinstance(bands, list) or not all(isinstance(b, int) for b in bands):
            bands = None
        return cls(stats, bands, nodata)

    def to_emd(self) -> dict[str, Any]:
        """The model emd keys of this normaliser: ``NormalizationStats`` (min-max only) and
        ``ExtractBands`` (the bands a model reads)."""
        out: dict[str, Any] = {}
        if self.stats is not None:
            out["NormalizationStats"] = self.stats.to_emd()
        out["ExtractBands"] = (
            list(self.extract_bands)
            if self.extract_bands is not None
            else list(range(self.band_count))
        )
        return out

    def normalize(
        self,
        array: Array,
        extract_bands: Sequence[int] | None = None,
        mask: Array | None = None,
    ) -> Array:
        """Normalise pixels: pick bands, zero masked pixels, min-max scale, standardise.

        Args:
            array: ``(bands, rows, cols)`` or ``(batch, bands, rows, cols)`` pixels of every
                input band, any numeric dtype; numpy array or torch tensor (any device).
            extract_bands: Bands to keep (indices into ``array``'s bands); default the
                normaliser's ``extract_bands``, else all bands.
            mask: Valid pixels, ``(rows, cols)`` (or with the batch dimension), True / non-zero
                = valid, as GDAL's dataset mask. Pixels that are invalid, or whose bands all
                equal ``nodata``, are set to 0 before normalisation.

        Returns:
            float32 array of the same kind, ``(len(extract_bands), rows, cols)`` (plus batch).

        Raises:
            ValueError: if the array's band count does not fit the statistics.
        """
        if array.ndim not in (3, 4):
            raise ValueError(f"expected (bands, rows, cols) pixels, got shape {tuple(array.shape)}")
        bands = self.extract_bands if extract_bands is None else [int(b) for b in extract_bands]
        in_bands = int(array.shape[-3])
        if bands is None:
            if in_bands != self.band_count:
                raise ValueError(
                    f"pixels have {in_bands} bands but the normalisation statistics describe "
                    f"{self.band_count}"
                )
            bands = list(range(in_bands))
        self._check_bands(bands, min(in_bands, self.band_count))
        is_torch = isinstance(array, torch.Tensor)
        valid = self._valid(array, mask, is_torch)
        x = array[..., bands, :, :]
        consts = [c[bands].reshape(-1, 1, 1) for c in (self._lo, self._span, self._mean, self._std)]
        if is_torch:
            x = x.to(torch.float32)
            lo, span, mean, std = (torch.from_numpy(c).to(x.device) for c in consts)
            if valid is not None:
                x = torch.where(valid.unsqueeze(-3), x, torch.zeros((), device=x.device))
        else:
            x = np.asarray(x, dtype=np.float32)
            lo, span, mean, std = consts
            if valid is not None:
                x = np.where(np.expand_dims(valid, -3), x, np.float32(0))
        x = (x - lo) / span
        return (x - mean) / std

    def _valid(self, array: Array, mask: Array | None, is_torch: bool) -> Array | None:
        valid = None
        if mask is not None:
            if is_torch:
                valid = torch.as_tensor(mask, device=array.device).to(torch.bool)
            else:
                valid = np.asarray(mask).astype(bool)
        if self.nodata is not None:
            # A NaN nodata value: array == array is False exactly where a value is NaN.
            data = array == array if math.isnan(self.nodata) else array != self.nodata
            data = data.any(dim=-3) if is_torch else data.any(-3)
            valid = data if valid is None else valid & data
        return valid

    @staticmethod
    def _check_bands(bands: Sequence[int], count: int) -> None:
        bad = [b for b in bands if not 0 <= b < count]
        if bad or not bands:
            raise ValueError(
                f"extract_bands {list(bands)} do not fit {count} bands (use indices 0..{count - 1})"
            )


def _finite(values: Sequence[float], default: float) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(arr), arr, default)


def _floats(arr: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in arr)


def _as_training_data(data: TrainingData | ExportFolder) -> TrainingData:
    from rasterlearn.data.merge import TrainingData

    return data if isinstance(data, TrainingData) else TrainingData(data)


def _recorded_ranges(data: TrainingData) -> tuple[list[float], list[float]]:
    """Per-band minima and maxima as recorded in the metadata (no chip is read)."""
    stats = [s for f in data.folders for s in f.band_stats if s.num > 0]
    if stats:
        return [s.min for s in stats], [s.max for s in stats]
    rows = [r for f in data.folders for r in (f.emd.get("AllTilesStats") or [])]
    return [float(r["Min"]) for r in rows if "Min" in r], [
        float(r["Max"]) for r in rows if "Max" in r
    ]
