"""Unit tests of pixel grids and windows (geo.grid), against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from rasterlearn.geo.grid import PIXEL_NOISE, Box, Grid, object_chip, tile_grid, tile_starts

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
        covered[t.relative_to(area).slices] = True
    assert covered.all()


def test_tile_grid_single_tile():
    assert list(tile_grid(Box(5, 5, 64, 64), 64, 64, 32, 32)) == [Box(5, 5, 64, 64)]


# --- Box: moves, slices, footprints ------------------------------------------------------------


def test_box_translate_and_relative_to():
    box = Box(10, 20, 5, 6)
    assert box.translate(3, -4) == Box(13, 16, 5, 6)
    origin = Box(7, 25, 100, 100)
    inside = box.relative_to(origin)
    assert inside == Box(3, -5, 5, 6)
    assert inside.translate(origin.row, origin.col) == box


@pytest.mark.parametrize("box", [Box(2, 3, 4, 5), Box(0, 0, 10, 10), Box(9, 1, 1, 1)])
def test_box_slices_select_its_pixels(box):
    rows, cols = np.mgrid[0:12, 0:12]
    picked = set(zip(rows[box.slices].ravel(), cols[box.slices].ravel(), strict=True))
    assert picked == _cells(box)


def test_box_slices_of_a_box_relative_to_another():
    array = np.arange(400).reshape(20, 20)
    read, keep = Box(4, 6, 10, 12), Box(7, 8, 3, 5)
    window = array[read.slices]
    assert np.array_equal(window[keep.relative_to(read).slices], array[keep.slices])


def test_box_footprint_north_up_is_its_map_rectangle():
    transform = Affine(0.5, 0, 1000, 0, -0.5, 2000)
    box = Box(4, 10, 6, 8)
    footprint = box.footprint(transform)
    x0, y1 = transform @ (box.col, box.row)
    x1, y0 = transform @ (box.col_end, box.row_end)
    assert footprint.equals(shapely.box(x0, y0, x1, y1))
    assert footprint.area == pytest.approx(box.area * 0.25)


def test_box_footprint_rotated_maps_every_corner():
    transform = Affine.translation(100, 50) @ Affine.rotation(30) @ Affine.scale(2, -2)
    box = Box(-3, 5, 4, 7)
    corners = [(5, -3), (12, -3), (12, 1), (5, 1)]
    expected = shapely.Polygon([transform @ c for c in corners])
    assert box.footprint(transform).equals_exact(expected, 1e-9)


# --- the rounding rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ((0.5, 1.5, 2.5, 4.5), Box(1, 0, 4, 3)),  # fractions round outwards
        ((2.0, 3.0, 6.0, 8.0), Box(3, 2, 5, 4)),  # whole pixels stay
        ((-0.5, -1.25, 0.5, -0.25), Box(-2, -1, 2, 2)),  # negative coordinates floor
        ((0.1, 0.1, 0.3, 0.3), Box(0, 0, 1, 1)),  # inside one pixel
        ((67.0000000037, 3 - 1e-9, 70 - 4e-9, 5 + 1e-9), Box(3, 67, 2, 3)),  # float noise
        ((2.0, 2.0, 2.0, 2.0), Box(2, 2, 0, 0)),  # a point on a pixel corner: empty
        ((2 - 1e-9, 2 + 1e-9, 2 + 1e-9, 2 + 2e-9), Box(2, 2, 0, 0)),  # ... give or take noise
    ],
)
def test_box_covering(bounds, expected):
    assert Box.covering(bounds) == expected


@pytest.mark.parametrize("seed", range(5))
def test_box_covering_covers_what_is_more_than_noise(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        c0, r0 = rng.uniform(-50, 50, 2)
        c1, r1 = c0 + rng.uniform(0, 20), r0 + rng.uniform(0, 20)
        box = Box.covering((c0, r0, c1, r1))
        assert box.height >= 0 and box.width >= 0
        # outwards, but never by a pixel that the bounds only touch within the noise
        assert box.col <= c0 + PIXEL_NOISE and box.col_end >= c1 - PIXEL_NOISE
        assert box.row <= r0 + PIXEL_NOISE and box.row_end >= r1 - PIXEL_NOISE
        assert box.col > c0 - 1 and box.col_end < c1 + 1
        assert box.row > r0 - 1 and box.row_end < r1 + 1


@pytest.mark.parametrize("noise", [0.0, 1e-9, -1e-9, 3e-7, -3e-7])
def test_box_covering_forgives_noise_around_whole_pixels(noise):
    assert Box.covering((4 + noise, 7 + noise, 9 + noise, 8 + noise)) == Box(7, 4, 1, 5)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (Window(0.5, 1.5, 2.0, 2.0), Box(1, 0, 3, 3)),
        (Window(3 + 1e-9, 3 - 1e-9, 4.0, 5.0), Box(3, 3, 5, 4)),
    ],
)
def test_box_from_window_follows_the_rule(window, expected):
    assert Box.from_window(window) == expected


@pytest.mark.parametrize(
    ("bounds", "shape", "expected"),
    [
        ((10.2, 20.7, 14.9, 23.1), None, Box(20, 10, 4, 5)),  # the bounding box
        ((10.0, 20.0, 10.0, 20.0), None, Box(20, 10, 1, 1)),  # a point: one pixel
        ((10.2, 20.7, 14.9, 23.1), (16, 16), Box(14, 4, 16, 16)),  # centred on it
        ((10 - 1e-9, 20 + 1e-9, 15 + 1e-9, 24 - 1e-9), (16, 16), Box(14, 4, 16, 16)),
    ],
)
def test_object_chip(bounds, shape, expected):
    assert object_chip(bounds, shape) == expected


# --- Grid --------------------------------------------------------------------------------------

GRID = Grid(Affine(0.5, 0, 1000, 0, -0.5, 2000), 400, 300, CRS.from_epsg(32617))


def test_grid_of_a_dataset(tmp_path):
    path = tmp_path / "g.tif"
    profile = {"driver": "GTiff", "width": 7, "height": 5, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", crs="EPSG:4326", transform=Affine(1, 0, 3, 0, -1, 9), **profile):
        pass
    with rasterio.open(path) as ds:
        assert Grid.of(ds) == Grid(Affine(1, 0, 3, 0, -1, 9), 7, 5, CRS.from_epsg(4326))
    with rasterio.open(tmp_path / "n.tif", "w", **profile):
        pass
    with rasterio.open(tmp_path / "n.tif") as ds:
        assert Grid.of(ds).crs is None


def test_grid_box_shape_cell_size_footprint():
    assert GRID.box == Box(0, 0, 300, 400)
    assert GRID.shape == (300, 400)
    assert GRID.cell_size == (0.5, 0.5)
    assert GRID.footprint.equals(shapely.box(1000, 1850, 1200, 2000))


def test_grid_window():
    box = Box(10, 20, 30, 40)
    window = GRID.window(box)
    assert window.shape == box.shape and window.crs == GRID.crs
    # pixel (0, 0) of the window is pixel (row 10, col 20) of the grid
    assert window.transform @ (0, 0) == GRID.transform @ (20, 10)
    assert window.transform @ (40, 30) == GRID.transform @ (60, 40)
    assert window.footprint.equals(box.footprint(GRID.transform))
    assert GRID.window(GRID.box) == GRID


def test_grid_resampled_keeps_the_extent():
    grid = GRID.window(Box(10, 20, 30, 40)).resampled(15, 80)
    assert grid.shape == (15, 80)
    assert grid.cell_size == (0.25, 1.0)
    assert grid.footprint.equals(GRID.window(Box(10, 20, 30, 40)).footprint)


def test_grid_to_pixels_inverts_the_transform():
    pixels = shapely.box(20.5, 10.25, 60, 40)
    geom = shapely.affinity.affine_transform(pixels, GRID.transform.to_shapely())
    assert GRID.to_pixels(geom).equals_exact(pixels, 1e-9)
    several = GRID.to_pixels(np.array([geom, geom]))
    assert all(g.equals_exact(pixels, 1e-9) for g in several)


def test_grid_box_of_and_area_of():
    assert GRID.box_of((1010, 1900, 1050, 1980)) == Box(40, 20, 160, 80)
    assert GRID.box_of((1010.1, 1900.1, 1049.9, 1979.9)) == Box(40, 20, 160, 80)
    # map-to-pixel noise does not add a row or column
    assert GRID.box_of((1010 + 1e-10, 1900 - 1e-10, 1050 - 1e-10, 1980 + 1e-10)) == Box(
        40, 20, 160, 80
    )
    assert GRID.box_of((900, 1800, 1010, 1990)) == Box(20, -200, 380, 220)
    assert GRID.area_of((900, 1800, 1010, 1990)) == Box(20, 0, 280, 20)
    assert GRID.area_of((0, 0, 10, 10)) is None
    assert GRID.area_of((1010, 1900, 1010, 1980)) is None  # no width


def test_grid_box_of_rotated_covers_every_corner():
    grid = Grid(Affine.rotation(45) @ Affine.scale(1, -1), 100, 100)
    bounds = (-5, -20, 5, -10)
    box = grid.box_of(bounds)
    inverse = ~grid.transform
    for x in bounds[0::2]:
        for y in bounds[1::2]:
            col, row = inverse @ (x, y)
            assert box.col <= col <= box.col_end and box.row <= row <= box.row_end


def test_geo_grid_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, rasterlearn.geo.grid, rasterlearn.geo.raster; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
