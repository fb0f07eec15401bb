"""Unit tests of pixel-window arithmetic (geo.grid) and mergeable band statistics (geo.stats)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rasterio.windows import Window

from rasterlearn.geo.grid import Box, tile_grid, tile_starts
from rasterlearn.geo.stats import BandStats, chip_band_stats, merge_band_stats

# --- Box ---------------------------------------------------------------------------------------


def test_box_ends_and_area():
    box = Box(row=3, col=5, height=7, width=11)
    assert (box.row_end, box.col_end, box.area) == (10, 16, 77)
    assert Box(0, 0, 0, 4).area == 0


def test_box_window_round_trip():
    box = Box(row=-2, col=9, height=4, width=6)
    window = box.to_window()
    assert (window.col_off, window.row_off, window.width, window.height) == (9, -2, 6, 4)
    assert Box.from_window(window) == box


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (Window(0.5, 1.5, 2.0, 2.0), Box(1, 0, 3, 3)),  # partial pixels at both ends
        (Window(2.0, 3.0, 4.0, 5.0), Box(3, 2, 5, 4)),  # already whole pixels
        (Window(-0.5, -1.25, 1.0, 1.0), Box(-2, -1, 2, 2)),  # negative offsets floor
        (Window(0.1, 0.1, 0.2, 0.2), Box(0, 0, 1, 1)),  # inside one pixel
    ],
)
def test_box_from_window_rounds_outwards(window, expected):
    box = Box.from_window(window)
    assert box == expected
    # Outward rounding: the box covers the window.
    assert box.col <= window.col_off and box.row <= window.row_off
    assert box.col_end >= window.col_off + window.width
    assert box.row_end >= window.row_off + window.height


def _cells(box: Box) -> set[tuple[int, int]]:
    return {(r, c) for r in range(box.row, box.row_end) for c in range(box.col, box.col_end)}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Box(0, 0, 10, 10), Box(5, 5, 10, 10)),
        (Box(0, 0, 10, 10), Box(2, 3, 4, 5)),
        (Box(0, 0, 10, 10), Box(10, 0, 5, 5)),  # touching edge: no overlap
        (Box(0, 0, 10, 10), Box(-3, -4, 5, 6)),
        (Box(0, 0, 4, 4), Box(20, 20, 2, 2)),
        (Box(-5, 7, 3, 9), Box(-6, 10, 10, 2)),
    ],
)
def test_box_intersection_and_contains_match_pixel_sets(a, b):
    expected = _cells(a) & _cells(b)
    for x, y in ((a, b), (b, a)):
        inter = x.intersection(y)
        if not expected:
            assert inter is None
        else:
            assert inter is not None
            assert _cells(inter) == expected
        assert x.contains(y) == (_cells(y) <= _cells(x))


def test_box_contains_itself_and_not_a_larger_box():
    box = Box(2, 2, 5, 5)
    assert box.contains(box)
    assert not box.contains(box.pad(1))
    assert box.pad(1).contains(box)


def test_box_pad():
    box = Box(10, 20, 5, 6)
    assert box.pad(2) == Box(8, 18, 9, 10)
    assert box.pad(2, 3) == Box(8, 17, 9, 12)
    assert box.pad(0) == box
    assert box.pad(-1) == Box(11, 21, 3, 4)


@pytest.mark.parametrize(
    ("box", "size"),
    [
        (Box(10, 10, 4, 4), (8, 8)),
        (Box(10, 10, 5, 7), (8, 8)),
        (Box(0, 0, 3, 3), (64, 32)),
        (Box(100, 50, 40, 30), (16, 16)),  # shrinking
    ],
)
def test_box_centered_keeps_the_centre(box, size):
    height, width = size
    out = box.centered(height, width)
    assert (out.height, out.width) == (height, width)
    # Centres agree to within half a pixel (rounded down when they cannot agree exactly).
    for start, length, new_start, new_length in (
        (box.row, box.height, out.row, out.height),
        (box.col, box.width, out.col, out.width),
    ):
        centre = start + length / 2
        new_centre = new_start + new_length / 2
        assert 0 <= centre - new_centre <= 0.5


def test_box_is_ordered_and_hashable():
    boxes = [Box(1, 0, 1, 1), Box(0, 5, 1, 1), Box(0, 1, 1, 1)]
    assert sorted(boxes) == [Box(0, 1, 1, 1), Box(0, 5, 1, 1), Box(1, 0, 1, 1)]
    assert len({Box(0, 0, 1, 1), Box(0, 0, 1, 1)}) == 1


# --- tile_starts / tile_grid -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "tile", "stride", "expected"),
    [
        (512, 128, 128, [0, 128, 256, 384]),
        (512, 128, 64, [0, 64, 128, 192, 256, 320, 384]),
        (500, 128, 128, [0, 128, 256, 372]),  # flush last tile
        (130, 128, 64, [0, 2]),
        (128, 128, 64, [0]),  # tile == length
        (128, 128, 500, [0]),
        (10, 3, 5, [0, 5, 7]),  # stride > tile: gaps, but the end is still reached
        (10, 1, 1, list(range(10))),
    ],
)
def test_tile_starts(length, tile, stride, expected):
    assert tile_starts(length, tile, stride) == expected


@pytest.mark.parametrize("length", [64, 65, 100, 127, 200, 333])
@pytest.mark.parametrize(("tile", "stride"), [(64, 64), (64, 32), (48, 20), (17, 64)])
def test_tile_starts_properties(length, tile, stride):
    starts = tile_starts(length, tile, stride)
    assert starts[0] == 0
    assert starts[-1] + tile == length  # the last tile is flush with the end
    assert all(0 <= s <= length - tile for s in starts)
    assert starts == sorted(set(starts))
    # Every start but the flush one lies on the stride.
    assert all(s % stride == 0 for s in starts[:-1])
    gaps = np.diff(starts)
    assert np.all(gaps <= stride)
    if stride <= tile:  # overlapping or touching tiles cover every pixel
        covered = np.zeros(length, dtype=bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all()


def test_tile_starts_errors():
    with pytest.raises(ValueError):
        tile_starts(100, 101, 10)
    with pytest.raises(ValueError):
        tile_starts(100, 10, 0)
    with pytest.raises(ValueError):
        tile_starts(100, 10, -5)


def test_tile_grid_row_major_and_offset():
    area = Box(row=10, col=20, height=200, width=300)
    tiles = list(tile_grid(area, tile_height=128, tile_width=100, stride_y=64, stride_x=100))
    rows = [0, 64, 72]
    cols = [0, 100, 200]
    expected = [Box(10 + r, 20 + c, 128, 100) for r in rows for c in cols]
    assert tiles == expected
    assert all(area.contains(t) for t in tiles)
    # Union covers the area.
    covered = np.zeros((area.height, area.width), dtype=bool)
    for t in tiles:
        covered[
            t.row - area.row : t.row_end - area.row, t.col - area.col : t.col_end - area.col
        ] = True
    assert covered.all()


def test_tile_grid_single_tile():
    assert list(tile_grid(Box(5, 5, 64, 64), 64, 64, 32, 32)) == [Box(5, 5, 64, 64)]


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
