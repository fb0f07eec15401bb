"""Streaming per-band statistics that merge exactly across chips, threads and folders."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class BandStats:
    """Running min, max, mean and sum of squared deviations of one band (Chan et al. merge).

    The fields are those of ArcGIS's ``BandStatsState``: ``M1`` is the mean, ``M2`` the sum
    of squared deviations from it and ``Num`` the pixel count.
    """

    num: int = 0
    m1: float = 0.0
    m2: float = 0.0
    min: float = field(default=float("inf"))
    max: float = field(default=float("-inf"))

    @classmethod
    def of(cls, values: np.ndarray) -> BandStats:
        """Statistics of an array of valid pixel values."""
        if values.size == 0:
            return cls()
        values = values.astype(np.float64, copy=False)
        mean = float(values.mean())
        return cls(
            num=int(values.size),
            m1=mean,
            m2=float(np.square(values - mean).sum()),
            min=float(values.min()),
            max=float(values.max()),
        )

    def merge(self, other: BandStats) -> BandStats:
        """The statistics of both sets of pixels together."""
        if other.num == 0:
            return self
        if self.num == 0:
            return other
        num = self.num + other.num
        delta = other.m1 - self.m1
        return BandStats(
            num=num,
            m1=self.m1 + delta * other.num / num,
            m2=self.m2 + other.m2 + delta * delta * self.num * other.num / num,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return float(np.sqrt(self.m2 / self.num)) if self.num else 0.0

    def to_state(self) -> dict[str, float]:
        """The ``BandStatsState`` entry of ``esri_accumulated_stats.json``."""
        return {"Min": self.min, "Max": self.max, "M1": self.m1, "M2": self.m2, "Num": self.num}

    @classmethod
    def from_state(cls, state: dict) -> BandStats:
        return cls(
            num=int(state.get("Num", 0)),
            m1=float(state.get("M1", 0.0)),
            m2=float(state.get("M2", 0.0)),
            min=float(state.get("Min", float("inf"))),
            max=float(state.get("Max", float("-inf"))),
        )

    @classmethod
    def of_histogram(cls, counts: np.ndarray, offset: int = 0) -> BandStats:
        """Statistics from a histogram: ``counts[i]`` pixels of value ``i + offset``."""
        levels = np.nonzero(counts)[0]
        if levels.size == 0:
            return cls()
        counts = counts[levels].astype(np.float64)
        values = levels.astype(np.float64) + offset
        num = counts.sum()
        mean = float((counts * values).sum() / num)
        return cls(
            num=int(num),
            m1=mean,
            m2=float((counts * np.square(values - mean)).sum()),
            min=float(values[0]),
            max=float(values[-1]),
        )


def chip_band_stats(data: np.ndarray, valid: np.ndarray) -> list[BandStats]:
    """Per-band statistics of the valid pixels of a ``(bands, rows, cols)`` chip."""
    all_valid = bool(valid.all())
    if data.dtype in (np.uint8, np.uint16):
        # A histogram is exact for small integers and much faster than float reductions.
        bins = 256 if data.dtype == np.uint8 else 65536
        out = []
        for band in data:
            values = band.ravel() if all_valid else band[valid]
            out.append(BandStats.of_histogram(np.bincount(values, minlength=bins)))
        return out
    return [BandStats.of(band.ravel() if all_valid else band[valid]) for band in data]


def merge_band_stats(a: list[BandStats], b: list[BandStats]) -> list[BandStats]:
    if not a:
        return b
    return [x.merge(y) for x, y in zip(a, b, strict=True)]
