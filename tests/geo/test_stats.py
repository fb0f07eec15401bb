"""Unit tests of mergeable band statistics (geo.stats)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rasterlearn.geo.stats import BandStats, chip_band_stats, merge_band_stats

# --- BandStats ---------------------------------------------------------------------------------


def _assert_matches_numpy(stats: BandStats, values: np.ndarray) -> None:
    values = values.astype(np.float64)
    assert stats.num == values.size
    assert stats.m1 == pytest.approx(values.mean(), rel=1e-12, abs=1e-12)
    assert stats.m2 == pytest.approx(values.var() * values.size, rel=1e-9, abs=1e-9)
    assert stats.std == pytest.approx(values.std(), rel=1e-9, abs=1e-12)
    assert stats.min == values.min()
    assert stats.max == values.max()


@pytest.mark.parametrize(
    "values",
    [
        np.arange(10, dtype=np.uint8),
        np.array([5.5]),
        np.array([-3.0, 7.0, 7.0, 1e6]),
        np.random.default_rng(0).normal(100.0, 20.0, 1000).astype(np.float32),
        np.random.default_rng(1).integers(0, 65535, 5000).astype(np.uint16),
    ],
)
def test_band_stats_of_matches_numpy(values):
    _assert_matches_numpy(BandStats.of(values), values)


def test_band_stats_of_empty():
    empty = BandStats.of(np.array([], dtype=np.float32))
    assert empty.num == 0
    assert empty.std == 0.0
    assert math.isinf(empty.min) and empty.min > 0
    assert math.isinf(empty.max) and empty.max < 0


@pytest.mark.parametrize("seed", range(6))
def test_band_stats_merge_of_random_splits_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(rng.uniform(-1000, 1000), rng.uniform(0.1, 500), rng.integers(2, 4000))
    if seed % 2:
        values = np.round(values).astype(np.int32)
    # Random split points, including empty parts.
    cuts = np.sort(rng.integers(0, values.size + 1, rng.integers(1, 8)))
    parts = np.split(values, cuts)
    merged = BandStats()
    for part in parts:
        merged = merged.merge(BandStats.of(part))
    _assert_matches_numpy(merged, values)
    # Merging as a balanced tree (another order) gives the same statistics.
    stats = [BandStats.of(p) for p in parts]
    while len(stats) > 1:
        stats = [
            stats[i].merge(stats[i + 1]) if i + 1 < len(stats) else stats[i]
            for i in range(0, len(stats), 2)
        ]
    _assert_matches_numpy(stats[0], values)


def test_band_stats_merge_with_empty_is_identity():
    a = BandStats.of(np.array([1.0, 2.0, 4.0]))
    assert a.merge(BandStats()) == a
    assert BandStats().merge(a) == a
    assert BandStats().merge(BandStats()).num == 0


def test_band_stats_merge_does_not_modify_operands():
    a = BandStats.of(np.array([1.0, 2.0]))
    b = BandStats.of(np.array([10.0, 20.0, 30.0]))
    a_before, b_before = BandStats(**vars(a)), BandStats(**vars(b))
    a.merge(b)
    assert (a, b) == (a_before, b_before)


def test_band_stats_state_round_trip():
    stats = BandStats.of(np.random.default_rng(3).normal(50, 10, 777))
    state = stats.to_state()
    assert set(state) == {"Min", "Max", "M1", "M2", "Num"}
    assert state["Num"] == 777
    assert state["M1"] == stats.m1 and state["M2"] == stats.m2
    assert BandStats.from_state(state) == stats
    # Through JSON, as in esri_accumulated_stats.json.
    assert BandStats.from_state(json.loads(json.dumps(state))) == stats


def test_band_stats_from_partial_state():
    stats = BandStats.from_state({})
    assert stats.num == 0 and stats.m1 == 0 and stats.m2 == 0
    assert stats.min == float("inf") and stats.max == float("-inf")
    merged = stats.merge(BandStats.from_state({"Num": 2, "M1": 3.0, "M2": 2.0, "Min": 2, "Max": 4}))
    assert (merged.num, merged.m1, merged.m2, merged.min, merged.max) == (2, 3.0, 2.0, 2.0, 4.0)


@pytest.mark.parametrize("offset", [0, -7, 1000])
def test_band_stats_of_histogram_matches_numpy(offset):
    rng = np.random.default_rng(8)
    values = rng.integers(3, 200, 3000)
    counts = np.bincount(values, minlength=256)
    _assert_matches_numpy(BandStats.of_histogram(counts, offset), values + offset)
    assert BandStats.of_histogram(np.zeros(10, dtype=np.int64)).num == 0


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
@pytest.mark.parametrize("all_valid", [True, False])
def test_chip_band_stats_uses_only_valid_pixels(dtype, all_valid):
    rng = np.random.default_rng(5)
    top = 255 if dtype == "uint8" else 10000
    data = rng.integers(0, top, (3, 16, 20)).astype(dtype)
    if dtype == "float32":
        data = data / np.float32(7.0)
    valid = np.ones((16, 20), dtype=bool) if all_valid else rng.random((16, 20)) > 0.3
    stats = chip_band_stats(data, valid)
    assert len(stats) == 3
    for band, s in zip(data, stats, strict=True):
        _assert_matches_numpy(s, band[valid])


def test_merge_band_stats_lists():
    rng = np.random.default_rng(6)
    chips = [rng.normal(0, 1, (2, 8, 8)) for _ in range(5)]
    valids = [rng.random((8, 8)) > 0.2 for _ in range(5)]
    total: list[BandStats] = []
    for data, valid in zip(chips, valids, strict=True):
        total = merge_band_stats(total, chip_band_stats(data, valid))
    for b in range(2):
        values = np.concatenate([d[b][v] for d, v in zip(chips, valids, strict=True)])
        _assert_matches_numpy(total[b], values)
    with pytest.raises(ValueError):
        merge_band_stats(total, total[:1])
