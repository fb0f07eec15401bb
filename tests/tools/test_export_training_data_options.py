"""End-to-end checks of every option of ``export_training_data`` on real rasters.

Each test exports a small scene (or the NEON sample) and compares what was written with an
independent computation: rasterio windows and ``rasterize``, shapely geometry and numpy.
"""

from __future__ import annotations

import json
import math
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from pathlib import Path, PureWindowsPath

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import reproject
from rasterio.windows import Window

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.execution import blocks
from rasterlearn.export import write
from rasterlearn.formats.chips import ExportWriter
from rasterlearn.synthetic import SyntheticScene, make_scene
from rasterlearn.tools import export_training_data as tool
from rasterlearn.tools.export_training_data import export_training_data

TOL = 0.011  # VOC coordinates are written with two decimals
MIN_AREA_PX = 1e-6  # overlaps below this many pixels are floating-point noise, not overlaps


# --- independent helpers -----------------------------------------------------------------------


def starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets every ``stride`` px, the last one moved flush with the end."""
    out = list(range(0, length - tile + 1, stride))
    if out[-1] + tile < length:
        out.append(length - tile)
    return out


def grid(width: int, height: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(row, col) of the grid tiles, row by row."""
    return [(r, c) for r in starts(height, tile, stride) for c in starts(width, tile, stride)]


def map_entries(folder: Path) -> list[list[Path]]:
    """The paths of each ``map.txt`` line (image first), in file order."""
    text = (folder / "map.txt").read_bytes().decode()
    rows = []
    for line in text.splitlines():
        tokens = line.split()
        if tokens:
            rows.append([folder / PureWindowsPath(t).as_posix() for t in tokens])
    return rows


def read(path: Path) -> tuple[np.ndarray, Affine, CRS | None, float | None]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs, ds.nodata


def voc(path: Path) -> list[tuple[int, tuple[float, float, float, float]]]:
    root = ET.parse(path).getroot()
    out = []
    for obj in root.iter("object"):
        box = tuple(float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
        out.append((int(obj.findtext("name")), box))
    return out


def assert_boxes_match(actual, expected, tol: float = TOL) -> None:
    """Both lists hold the same (value, box) objects, boxes equal within ``tol``."""
    assert len(actual) == len(expected), (actual, expected)
    left = list(actual)
    for value, box in expected:
        match = next(
            (
                i
                for i, (v, b) in enumerate(left)
                if v == value and np.allclose(b, box, rtol=0, atol=tol)
            ),
            None,
        )
        assert match is not None, f"no written box matches {value} {box}; written: {left}"
        left.pop(match)


def chip_footprint(transform: Affine, width: int, height: int) -> shapely.Polygon:
    return shapely.Polygon(
        [transform @ c for c in ((0, 0), (width, 0), (width, height), (0, height))]
    )


def expected_boxes(
    geoms, values, transform: Affine, width: int, height: int, ratio: float = 0.0
) -> list[tuple[int, tuple[float, float, float, float]]]:
    """VOC boxes of north-up chip ``transform``: the features clipped to the chip, in pixels."""
    footprint = chip_footprint(transform, width, height)
    inverse = ~transform
    pixel_area = abs(transform.determinant)
    out = []
    for geom, value in zip(geoms, values, strict=True):
        inside = geom.intersection(footprint)
        # Features that only touch the chip (no area inside, up to rounding) are not in it.
        if inside.area <= MIN_AREA_PX * pixel_area or inside.area / geom.area < ratio:
            continue
        x0, y0, x1, y1 = inside.bounds
        c0, r0 = inverse @ (x0, y1)
        c1, r1 = inverse @ (x1, y0)
        out.append((int(value), (c0, r0, c1, r1)))
    return out


def burn(geoms, values, transform: Affine, width: int, height: int) -> np.ndarray:
    pairs = [(g, int(v)) for g, v in zip(geoms, values, strict=True)]
    return rasterize(pairs, out_shape=(height, width), transform=transform, fill=0, dtype="uint8")


def window_of(scene_transform: Affine, transform: Affine) -> tuple[int, int]:
    """(row, col) of a north-up chip in the grid of ``scene_transform``."""
    col, row = ~scene_transform @ (transform.c, transform.f)
    assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6
    return round(row), round(col)


def polygons(scene: SyntheticScene) -> gpd.GeoDataFrame:
    return gpd.read_file(scene.polygons_path)


def components(raster: np.ndarray) -> list[tuple[int, tuple[float, float, float, float]]]:
    """Bounding boxes (pixel edges) of 8-connected regions of equal non-zero value."""
    seen = np.zeros(raster.shape, dtype=bool)
    h, w = raster.shape
    out = []
    for r0, c0 in zip(*np.nonzero(raster), strict=True):
        if seen[r0, c0]:
            continue
        value = raster[r0, c0]
        seen[r0, c0] = True
        queue = deque([(r0, c0)])
        rmin, rmax, cmin, cmax = r0, r0, c0, c0
        while queue:
            r, c = queue.popleft()
            rmin, rmax, cmin, cmax = min(rmin, r), max(rmax, r), min(cmin, c), max(cmax, c)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < h and 0 <= cc < w and not seen[rr, cc] and raster[rr, cc] == value:
                        seen[rr, cc] = True
                        queue.append((rr, cc))
        out.append((int(value), (float(cmin), float(rmin), float(cmax + 1), float(rmax + 1))))
    return out


def all_files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def emd(folder: Path) -> dict:
    return json.loads((folder / "esri_model_definition.emd").read_text())


def tiles(**kwargs) -> dict:
    """Small-tile defaults for the tests."""
    return {"tile_size_x": 128, "tile_size_y": 128, "stride_x": 128, "stride_y": 128, **kwargs}


# --- in_mask_polygons --------------------------------------------------------------------------


@pytest.mark.parametrize("mask_crs", ["EPSG:32617", "EPSG:4326"])
def test_mask_polygons_keep_only_chips_completely_inside(scene, tmp_path, mask_crs):
    t = scene.transform
    # A rectangle whose edges lie on tile edges (col 64..320, row 0..192) and a circle.
    rect_px = (64, 0, 320, 192)
    margin = 0.0 if mask_crs == "EPSG:32617" else 0.25  # reprojection round trip noise
    x0, y0 = t @ (rect_px[0] - margin, rect_px[3] + margin)
    x1, y1 = t @ (rect_px[2] + margin, rect_px[1] - margin)
    rect = shapely.box(x0, y0, x1, y1)
    circle = shapely.Point(t @ (380.3, 370.7)).buffer(120.0 * t.a)  # 120 px radius
    masks = gpd.GeoDataFrame({"id": [1, 2]}, geometry=[rect, circle], crs="EPSG:32617")
    mask_path = tmp_path / "mask.gpkg"
    masks.to_crs(mask_crs).to_file(mask_path)

    union = shapely.union_all([rect, circle])
    expected = []
    for r, c in grid(scene.width, scene.height, 128, 64):
        tr = t @ Affine.translation(c, r)
        if union.contains(chip_footprint(tr, 128, 128)):
            expected.append((r, c))
    # Tiles in the rectangle (edges shared with the mask count as inside) and a few in the circle.
    assert {(0, 64), (0, 192), (64, 64), (64, 192)} <= set(expected)
    assert any(r >= 256 for r, _ in expected)
    assert len(expected) < len(grid(scene.width, scene.height, 128, 64)) / 2

    out = tmp_path / "out"
    result = export_training_data(
        scene.raster_path,
        out,
        metadata_format="Export_Tiles",
        in_mask_polygons=mask_path,
        **tiles(stride_x=64, stride_y=64),
    )
    entries = map_entries(out)
    assert result.num_chips == len(entries) == len(expected)
    with rasterio.open(scene.raster_path) as src:
        for (image,), (r, c) in zip(entries, expected, strict=True):
            data, transform, crs, _ = read(image)
            assert transform == t @ Affine.translation(c, r)
            assert crs == src.crs
            np.testing.assert_array_equal(data, src.read(window=Window(c, r, 128, 128)))


def test_mask_polygons_with_labels_on_neon(neon, tmp_path):
    raster, trees = neon
    with rasterio.open(raster) as src:
        t, width, height = src.transform, src.width, src.height
    # An irregular mask polygon: a triangle over most of the tile.
    tri = shapely.Polygon([t @ (0, 0), t @ (400, 40), t @ (30, 400)])
    mask_path = tmp_path / "mask.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[tri], crs="EPSG:32617").to_file(mask_path)
    features = gpd.read_file(trees)
    geoms, values = features.geometry.values, features["ClassValue"].to_numpy()

    expected = []
    for r, c in grid(width, height, 96, 48):
        tr = t @ Affine.translation(c, r)
        if tri.contains(chip_footprint(tr, 96, 96)):
            boxes = expected_boxes(geoms, values, tr, 96, 96)
            if boxes:
                expected.append((tr, boxes))
    assert 0 < len(expected) < len(grid(width, height, 96, 48))

    out = tmp_path / "out"
    export_training_data(
        raster,
        out,
        trees,
        tile_size_x=96,
        tile_size_y=96,
        stride_x=48,
        stride_y=48,
        in_mask_polygons=mask_path,
    )
    entries = map_entries(out)
    assert len(entries) == len(expected)
    for (image, label), (tr, boxes) in zip(entries, expected, strict=True):
        transform = read(image)[1]
        assert transform.almost_equals(tr, precision=1e-6)
        # Zero-area boxes of features touching the chip edge are the subject of
        # test_no_degenerate_boxes_for_features_touching_the_chip_edge; ignore them here.
        written = [(v, b) for v, b in voc(label) if b[2] > b[0] and b[3] > b[1]]
        assert_boxes_match(written, boxes)


# --- extent ------------------------------------------------------------------------------------


def test_extent_limits_chips_to_it(scene, tmp_path):
    t = scene.transform
    # Pixel-aligned extent: cols 100..420, rows 60..316 (320 x 256 px).
    xmin, ymax = t @ (100, 60)
    xmax, ymin = t @ (420, 316)
    extent_poly = shapely.box(xmin, ymin, xmax, ymax)
    expected = [(60 + r, 100 + c) for r, c in grid(320, 256, 128, 64)]
    assert len(expected) == 4 * 3

    out = tmp_path / "out"
    export_training_data(
        scene.raster_path,
        out,
        metadata_format="Export_Tiles",
        extent=(xmin, ymin, xmax, ymax),
        **tiles(stride_x=64, stride_y=64),
    )
    entries = map_entries(out)
    assert len(entries) == len(expected)
    got = []
    for (image,) in entries:
        data, transform, _, _ = read(image)
        assert data.shape == (3, 128, 128)
        footprint = chip_footprint(transform, 128, 128)
        assert extent_poly.buffer(1e-6).contains(footprint)
        got.append(window_of(t, transform))
    assert got == expected


def test_extent_with_classified_tiles_and_partial_overlap(scene, tmp_path):
    t = scene.transform
    frame = polygons(scene)
    # Extent from left of the raster to pixel (300.4, 250.6): clipped to the raster on the left,
    # unaligned on the right and bottom.
    xmin, ymax = t @ (-50, -10)
    xmax, ymin = t @ (300.4, 250.6)
    out = tmp_path / "out"
    export_training_data(
        scene.raster_path,
        out,
        scene.polygons_path,
        metadata_format="Classified_Tiles",
        extent=(xmin, ymin, xmax, ymax),
        output_nofeature_tiles=True,
        **tiles(stride_x=64, stride_y=64),
    )
    entries = map_entries(out)
    extent_poly = shapely.box(xmin, ymin, xmax, ymax)
    origins = set()
    for image, label in entries:
        _, transform, _, _ = read(image)
        footprint = chip_footprint(transform, 128, 128)
        # Within the extent, up to the rounding of the extent to whole pixels.
        assert extent_poly.buffer(abs(t.a) * 1.0001).contains(footprint)
        assert shapely.box(*chip_footprint(t, scene.width, scene.height).bounds).contains(footprint)
        labels, ltransform, _, _ = read(label)
        assert ltransform == transform
        np.testing.assert_array_equal(
            labels[0], burn(frame.geometry, frame["ClassValue"], transform, 128, 128)
        )
        origins.add(window_of(t, transform))
    # Tiles start at the raster's edge (the extent is clipped to the raster) and reach the
    # extent's right and bottom edges.
    assert min(c for _, c in origins) == 0
    assert min(r for r, _ in origins) == 0
    assert max(c for _, c in origins) + 128 in (300, 301)
    assert max(r for r, _ in origins) + 128 in (250, 251)


def test_extent_outside_the_raster_is_refused(scene, tmp_path):
    x, y = scene.transform @ (0, 0)
    with pytest.raises(ParameterError):
        export_training_data(
            scene.raster_path,
            tmp_path / "out",
            metadata_format="Export_Tiles",
            extent=(x - 1000, y - 1000, x - 500, y - 500),
            **tiles(),
        )
    assert not (tmp_path / "out").exists()


# --- cell_size ---------------------------------------------------------------------------------


def test_cell_size_resamples_on_read(scene, tmp_path):
    frame = polygons(scene)
    cell = 2 * scene.transform.a  # 1.0 m, twice the source cell size
    out = tmp_path / "out"
    export_training_data(
        scene.raster_path,
        out,
        scene.polygons_path,
        metadata_format="Classified_Tiles",
        cell_size=cell,
        output_nofeature_tiles=True,
        tile_size_x=64,
        tile_size_y=64,
        stride_x=64,
        stride_y=64,
    )
    entries = map_entries(out)
    new_width = round(scene.width * scene.transform.a / cell)
    new_height = round(scene.height * scene.transform.a / cell)
    resampled = Affine(cell, 0, scene.transform.c, 0, -cell, scene.transform.f)
    expected = grid(new_width, new_height, 64, 64)
    assert len(entries) == len(expected) == 16
    with rasterio.open(scene.raster_path) as src:
        for (image, label), (r, c) in zip(entries, expected, strict=True):
            data, transform, crs, _ = read(image)
            assert crs == src.crs
            assert transform == resampled @ Affine.translation(c, r)
            assert (transform.a, transform.e) == (cell, -cell)
            assert data.shape == (3, 64, 64)
            warped = np.zeros_like(data)
            reproject(
                rasterio.band(src, [1, 2, 3]),
                warped,
                src_transform=src.transform,
                src_crs=src.crs,
                dst_transform=transform,
                dst_crs=src.crs,
                resampling=Resampling.bilinear,
            )
            assert np.abs(data.astype(int) - warped.astype(int)).max() <= 1
            # Resampled, not a crop of the source pixels.
            assert not np.array_equal(data, src.read(window=Window(2 * c, 2 * r, 64, 64)))
            labels, ltransform, _, _ = read(label)
            assert ltransform == transform
            np.testing.assert_array_equal(
                labels[0], burn(frame.geometry, frame["ClassValue"], transform, 64, 64)
            )
    cell_size = emd(out)["MinCellSize"]
    assert (cell_size["x"], cell_size["y"]) == (cell, cell)


# --- rotation_angle ----------------------------------------------------------------------------


def test_rotation_90_adds_rotated_chips(scene, tmp_path):
    frame = polygons(scene)
    kwargs = dict(
        metadata_format="Classified_Tiles",
        output_nofeature_tiles=True,
        tile_size_x=64,
        tile_size_y=64,
        stride_x=128,
        stride_y=128,
    )
    plain = export_training_data(scene.raster_path, tmp_path / "r0", scene.polygons_path, **kwargs)
    rotated = export_training_data(
        scene.raster_path, tmp_path / "r90", scene.polygons_path, rotation_angle=90, **kwargs
    )
    assert plain.num_chips == len(grid(scene.width, scene.height, 64, 128)) == 25
    assert rotated.num_chips == 4 * plain.num_chips

    zero = map_entries(tmp_path / "r0")
    entries = map_entries(tmp_path / "r90")
    for i, (image0, label0) in enumerate(zero):
        data0, t0, _, _ = read(image0)
        labels0 = read(label0)[0]
        footprint0 = chip_footprint(t0, 64, 64)
        for k in range(4):
            image, label = entries[4 * i + k]
            data, transform, _, _ = read(image)
            labels, ltransform, _, _ = read(label)
            assert ltransform.almost_equals(transform, precision=1e-9)
            # A rotation by k * 90 degrees about the chip centre of the unrotated chip.
            expected_t = (
                t0
                @ Affine.translation(32, 32)
                @ Affine.rotation(90 * k)
                @ Affine.translation(-32, -32)
            )
            assert transform.almost_equals(expected_t, precision=1e-9)
            linear = np.array([[transform.a, transform.b], [transform.d, transform.e]])
            linear0 = np.array([[t0.a, t0.b], [t0.d, t0.e]])
            rot = np.linalg.solve(linear0, linear)
            np.testing.assert_allclose(rot @ rot.T, np.eye(2), atol=1e-12)  # orthogonal
            assert np.linalg.det(rot) == pytest.approx(1.0)  # no reflection
            assert (
                chip_footprint(transform, 64, 64)
                .normalize()
                .equals_exact(footprint0.normalize(), 1e-6)
            )
            # Pixels: the unrotated chip turned counter-clockwise (as displayed) k times.
            np.testing.assert_array_equal(data, np.rot90(data0, k, axes=(1, 2)))
            # Labels: polygons burnt onto the rotated grid, and the unrotated labels turned.
            burnt = burn(frame.geometry, frame["ClassValue"], transform, 64, 64)
            np.testing.assert_array_equal(labels[0], burnt)
            np.testing.assert_array_equal(labels[0], np.rot90(labels0[0], k))


def test_rotation_45_writes_eight_chips_per_tile(scene, tmp_path):
    result = export_training_data(
        scene.raster_path,
        tmp_path / "out",
        metadata_format="Export_Tiles",
        rotation_angle=45,
        **tiles(),
    )
    assert result.num_chips == 8 * 16
    entries = map_entries(tmp_path / "out")
    for i in range(0, len(entries), 8):
        t0 = read(entries[i][0])[1]
        assert t0.b == t0.d == 0
        for k in range(8):
            transform = read(entries[i + k][0])[1]
            # The chip grid turned by k * 45 degrees about the tile centre (clockwise on the map).
            angle = math.degrees(math.atan2(transform.d, transform.a))
            assert (angle + 45 * k + 180) % 360 - 180 == pytest.approx(0, abs=1e-6)
            assert math.hypot(transform.a, transform.d) == pytest.approx(scene.transform.a)
            np.testing.assert_allclose(transform @ (64, 64), t0 @ (64, 64), atol=1e-6)


def test_rotation_angle_out_of_range(scene, tmp_path):
    with pytest.raises(ParameterError):
        export_training_data(
            scene.raster_path,
            tmp_path / "out",
            metadata_format="Export_Tiles",
            rotation_angle=-30,
            **tiles(),
        )


# --- features in another CRS -------------------------------------------------------------------


def test_features_in_another_crs_give_the_same_labels(scene, tmp_path):
    frame = polygons(scene)
    wgs84 = tmp_path / "polygons_4326.gpkg"
    frame.to_crs("EPSG:4326").to_file(wgs84)
    assert gpd.read_file(wgs84).crs.to_epsg() == 4326
    kwargs = tiles(stride_x=64, stride_y=64)
    export_training_data(scene.raster_path, tmp_path / "utm", scene.polygons_path, **kwargs)
    export_training_data(scene.raster_path, tmp_path / "wgs", wgs84, **kwargs)
    utm, wgs = map_entries(tmp_path / "utm"), map_entries(tmp_path / "wgs")
    assert len(utm) == len(wgs) > 0
    for (image_a, label_a), (image_b, label_b) in zip(utm, wgs, strict=True):
        assert image_a.read_bytes() == image_b.read_bytes()
        assert_boxes_match(voc(label_b), voc(label_a), tol=0.05)
        # And both match the polygons in the raster's CRS.
        transform = read(image_a)[1]
        expected = expected_boxes(frame.geometry, frame["ClassValue"], transform, 128, 128)
        assert_boxes_match(voc(label_b), expected, tol=0.05)


# --- points with buffer_radius -----------------------------------------------------------------


@pytest.mark.parametrize("points_crs", ["EPSG:32617", "EPSG:3857"])
def test_points_with_buffer_radius(scene, tmp_path, points_crs):
    points = gpd.read_file(scene.points_path).to_crs(points_crs)
    path = tmp_path / "points.gpkg"
    points.to_file(path)
    radius = 3.0  # in the points' CRS units
    buffered = points.geometry.buffer(radius).to_crs("EPSG:32617")
    values = points["ClassValue"].to_numpy()
    out = tmp_path / "out"
    export_training_data(scene.raster_path, out, path, buffer_radius=radius, **tiles())
    entries = map_entries(out)
    expected_count = 0
    for r, c in grid(scene.width, scene.height, 128, 128):
        transform = scene.transform @ Affine.translation(c, r)
        if expected_boxes(buffered, values, transform, 128, 128):
            expected_count += 1
    assert len(entries) == expected_count > 0
    n_boxes = 0
    for image, label in entries:
        transform = read(image)[1]
        expected = expected_boxes(buffered, values, transform, 128, 128)
        assert_boxes_match(voc(label), expected)
        n_boxes += len(expected)
        for _, (x0, y0, x1, y1) in expected:
            # A whole circle is 2 * radius across in the points' units.
            if min(x0, y0) > 0 and max(x1, y1) < 128 and points_crs == "EPSG:32617":
                assert x1 - x0 == pytest.approx(2 * radius / scene.transform.a, abs=TOL)
    assert n_boxes >= len(points)


def test_points_without_buffer_radius_are_refused(scene, tmp_path):
    with pytest.raises(ParameterError):
        export_training_data(scene.raster_path, tmp_path / "out", scene.points_path, **tiles())
    assert not (tmp_path / "out").exists()


# --- class_value_field -------------------------------------------------------------------------


def _labelled_copy(scene: SyntheticScene, path: Path, columns: dict) -> gpd.GeoDataFrame:
    frame = polygons(scene)
    out = gpd.GeoDataFrame(
        {k: f(frame) for k, f in columns.items()}, geometry=frame.geometry, crs=frame.crs
    )
    out.to_file(path)
    return out


@pytest.mark.parametrize(
    ("columns", "field", "expected_field"),
    [
        (
            {
                "kind": lambda f: f["ClassValue"] * 2 + 1,
                "value": lambda f: f["ClassValue"],
                "other": lambda f: f["ClassValue"] + 10,
            },
            "kind",
            "kind",
        ),
        (
            {"other": lambda f: f["ClassValue"] + 10, "value": lambda f: f["ClassValue"] + 4},
            None,
            "value",
        ),
        (
            {"other": lambda f: f["ClassValue"] + 10, "classvalue": lambda f: 4 - f["ClassValue"]},
            None,
            "classvalue",
        ),
        ({"other": lambda f: f["ClassValue"] + 10}, None, None),
    ],
    ids=["explicit", "fallback-value", "fallback-classvalue", "no-field-one-class"],
)
def test_class_value_field(scene, tmp_path, columns, field, expected_field):
    path = tmp_path / "labelled.gpkg"
    frame = _labelled_copy(scene, path, columns)
    values = frame[expected_field].to_numpy() if expected_field else np.ones(len(frame), dtype=int)
    out = tmp_path / "out"
    export_training_data(
        scene.raster_path,
        out,
        path,
        metadata_format="Classified_Tiles",
        class_value_field=field,
        **tiles(),
    )
    entries = map_entries(out)
    assert entries
    seen = set()
    for image, label in entries:
        transform = read(image)[1]
        labels = read(label)[0][0]
        np.testing.assert_array_equal(labels, burn(frame.geometry, values, transform, 128, 128))
        seen |= set(np.unique(labels).tolist())
    assert seen - {0} == set(values.tolist())
    assert sorted(c["Value"] for c in emd(out)["Classes"]) == sorted(set(values.tolist()))


def test_class_value_field_that_does_not_exist(scene, tmp_path):
    with pytest.raises(ParameterError):
        export_training_data(
            scene.raster_path,
            tmp_path / "out",
            scene.polygons_path,
            class_value_field="nope",
            **tiles(),
        )


# --- a classified raster as class data ---------------------------------------------------------


def test_class_raster_gives_the_same_classified_tiles_as_polygons(scene, tmp_path):
    kwargs = dict(metadata_format="Classified_Tiles", **tiles(stride_x=64, stride_y=64))
    export_training_data(scene.raster_path, tmp_path / "poly", scene.polygons_path, **kwargs)
    export_training_data(scene.raster_path, tmp_path / "ras", scene.class_raster_path, **kwargs)
    poly, ras = map_entries(tmp_path / "poly"), map_entries(tmp_path / "ras")
    assert len(poly) == len(ras) > 0
    with rasterio.open(scene.class_raster_path) as cls:
        for (image_p, label_p), (image_r, label_r) in zip(poly, ras, strict=True):
            assert image_p.read_bytes() == image_r.read_bytes()
            a, b = read(label_p)[0], read(label_r)[0]
            np.testing.assert_array_equal(a, b)
            r, c = window_of(scene.transform, read(image_r)[1])
            np.testing.assert_array_equal(b[0], cls.read(1, window=Window(c, r, 128, 128)))
    classes = emd(tmp_path / "ras")["Classes"]
    assert [c["Value"] for c in classes] == [1, 2, 3]
    colors = {c.value: list(c.color) for c in scene.classes}
    assert {c["Value"]: c["Color"] for c in classes} == colors


def test_class_raster_as_rectangles_gives_boxes_of_connected_regions(scene, tmp_path):
    out = tmp_path / "out"
    export_training_data(
        scene.raster_path,
        out,
        scene.class_raster_path,
        metadata_format="PASCAL_VOC_rectangles",
        **tiles(stride_x=64, stride_y=64),
    )
    entries = map_entries(out)
    with rasterio.open(scene.class_raster_path) as cls:
        expected_chips = [
            (r, c)
            for r, c in grid(scene.width, scene.height, 128, 64)
            if cls.read(1, window=Window(c, r, 128, 128)).any()
        ]
        assert len(entries) == len(expected_chips)
        for (image, label), (r, c) in zip(entries, expected_chips, strict=True):
            assert window_of(scene.transform, read(image)[1]) == (r, c)
            expected = components(cls.read(1, window=Window(c, r, 128, 128)))
            assert_boxes_match(voc(label), expected, tol=1e-9)


# --- a folder of rasters -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def halves(scene, tmp_path_factory) -> Path:
    """The scene split into a left and a right GeoTIFF."""
    folder = tmp_path_factory.mktemp("halves")
    with rasterio.open(scene.raster_path) as src:
        for name, window in (
            ("a_left", Window(0, 0, 256, 512)),
            ("b_right", Window(256, 0, 256, 512)),
        ):
            profile = {
                **src.profile,
                "width": 256,
                "height": 512,
                "transform": src.transform @ Affine.translation(window.col_off, window.row_off),
            }
            with rasterio.open(folder / f"{name}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
                dst.descriptions = src.descriptions
    return folder


def test_folder_mosaic_gives_the_same_chips_as_the_whole_raster(scene, halves, tmp_path):
    kwargs = dict(metadata_format="Classified_Tiles", **tiles(stride_x=64, stride_y=64))
    whole = export_training_data(
        scene.raster_path, tmp_path / "whole", scene.polygons_path, **kwargs
    )
    mosaic = export_training_data(
        halves,
        tmp_path / "mosaic",
        scene.polygons_path,
        processing_mode="PROCESS_AS_MOSAICKED_IMAGE",
        **kwargs,
    )
    assert mosaic.num_chips == whole.num_chips > 0
    a, b = map_entries(tmp_path / "whole"), map_entries(tmp_path / "mosaic")
    assert [[p.name for p in e] for e in a] == [[p.name for p in e] for e in b]
    spanning = 0
    for (image_a, label_a), (image_b, label_b) in zip(a, b, strict=True):
        data_a, t_a, crs_a, _ = read(image_a)
        data_b, t_b, crs_b, _ = read(image_b)
        assert (t_a, crs_a) == (t_b, crs_b)
        np.testing.assert_array_equal(data_a, data_b)
        np.testing.assert_array_equal(read(label_a)[0], read(label_b)[0])
        _, col = window_of(scene.transform, t_a)
        spanning += col < 256 < col + 128
    assert spanning > 0  # chips across the seam between the two files


def test_folder_items_separately_numbered_continuously(scene, halves, tmp_path):
    frame = polygons(scene)
    out = tmp_path / "out"
    result = export_training_data(
        halves,
        out,
        scene.polygons_path,
        metadata_format="Classified_Tiles",
        processing_mode="PROCESS_ITEMS_SEPARATELY",
        **tiles(stride_x=96, stride_y=96),
    )
    expected = []  # (item, row, col) with labels, item by item in name order
    for item in sorted(halves.glob("*.tif")):
        with rasterio.open(item) as ds:
            for r, c in grid(ds.width, ds.height, 128, 96):
                transform = ds.transform @ Affine.translation(c, r)
                labels = burn(frame.geometry, frame["ClassValue"], transform, 128, 128)
                if labels.any():
                    expected.append((item, r, c, transform, labels))
    # Per item the grid starts at the item's own edge: columns 0, 96, 128 within each half.
    assert {c for _, _, c, _, _ in expected} <= {0, 96, 128}
    entries = map_entries(out)
    assert result.num_chips == len(entries) == len(expected)
    names = [e[0].name for e in entries]
    assert names == [f"{i:09d}.tif" for i in range(len(expected))]
    for (image, label), (item, r, c, transform, labels) in zip(entries, expected, strict=True):
        data, t, _, _ = read(image)
        assert t == transform
        with rasterio.open(item) as ds:
            np.testing.assert_array_equal(data, ds.read(window=Window(c, r, 128, 128)))
        np.testing.assert_array_equal(read(label)[0][0], labels)


def test_folder_items_separately_with_features_on_one_item_only(scene, halves, tmp_path):
    """An item without features contributes no chips; it does not fail the export."""
    frame = polygons(scene)
    seam_x = (scene.transform @ (256, 0))[0]
    left = frame[frame.geometry.bounds["maxx"] < seam_x]
    assert 0 < len(left) < len(frame)
    path = tmp_path / "left.gpkg"
    left.to_file(path)
    out = tmp_path / "out"
    result = export_training_data(
        halves, out, path, processing_mode="PROCESS_ITEMS_SEPARATELY", **tiles()
    )
    expected = [
        scene.transform @ Affine.translation(c, r)
        for r, c in grid(256, 512, 128, 128)
        if expected_boxes(
            left.geometry, left["ClassValue"], scene.transform @ Affine.translation(c, r), 128, 128
        )
    ]
    assert result.num_chips == len(expected)
    assert [read(image)[1] for image, _ in map_entries(out)] == expected


def test_folder_items_separately_with_an_extent_over_one_item_only(scene, halves, tmp_path):
    """An item outside the processing extent contributes no chips; it does not fail the export."""
    t = scene.transform
    xmin, ymax = t @ (0, 0)
    xmax, ymin = t @ (200, 512)
    out = tmp_path / "out"
    result = export_training_data(
        halves,
        out,
        metadata_format="Export_Tiles",
        processing_mode="PROCESS_ITEMS_SEPARATELY",
        extent=(xmin, ymin, xmax, ymax),
        **tiles(),
    )
    expected = [t @ Affine.translation(c, r) for r in starts(512, 128, 128) for c in (0, 72)]
    assert result.num_chips == len(expected)
    assert [read(image)[1] for (image,) in map_entries(out)] == expected


def test_folder_mosaic_keeps_band_names(scene, halves, tmp_path):
    """The mosaic of rasters with band descriptions describes its bands like the rasters do."""
    kwargs = dict(metadata_format="Export_Tiles", **tiles())
    export_training_data(scene.raster_path, tmp_path / "whole", **kwargs)
    export_training_data(halves, tmp_path / "mosaic", **kwargs)
    with rasterio.open(scene.raster_path) as src:
        assert src.descriptions == ("red", "green", "blue")
    whole = emd(tmp_path / "whole")["InputRastersProps"]["BandNames"]
    assert whole == ["red", "green", "blue"]
    assert emd(tmp_path / "mosaic")["InputRastersProps"]["BandNames"] == whole


# --- a VRT as input ----------------------------------------------------------------------------


def test_vrt_input(scene, tmp_path):
    """A hand-written VRT of a window of the scene exports that window's chips."""
    col0, row0, width, height = 128, 64, 256, 384
    with rasterio.open(scene.raster_path) as src:
        t = src.transform @ Affine.translation(col0, row0)
        bands = "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{scene.raster_path}</SourceFilename>'
            f"<SourceBand>{b}</SourceBand>"
            f'<SrcRect xOff="{col0}" yOff="{row0}" xSize="{width}" ySize="{height}"/>'
            f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            "</SimpleSource></VRTRasterBand>"
            for b in (1, 2, 3)
        )
        vrt = (
            f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f"<SRS>{src.crs.to_wkt().replace('&', '&amp;').replace('<', '&lt;')}</SRS>"
            f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>"
            f"{bands}</VRTDataset>"
        )
        path = tmp_path / "window.vrt"
        path.write_text(vrt)
        with rasterio.open(path) as ds:
            assert (ds.width, ds.height, ds.count, ds.transform) == (width, height, 3, t)
        frame = polygons(scene)
        out = tmp_path / "out"
        export_training_data(
            path,
            out,
            scene.polygons_path,
            metadata_format="Classified_Tiles",
            output_nofeature_tiles=True,
            **tiles(),
        )
        entries = map_entries(out)
        expected = grid(width, height, 128, 128)
        assert len(entries) == len(expected) == 6
        for (image, label), (r, c) in zip(entries, expected, strict=True):
            data, transform, crs, _ = read(image)
            assert transform == scene.transform @ Affine.translation(col0 + c, row0 + r)
            assert crs == src.crs
            np.testing.assert_array_equal(
                data, src.read(window=Window(col0 + c, row0 + r, 128, 128))
            )
            np.testing.assert_array_equal(
                read(label)[0][0], burn(frame.geometry, frame["ClassValue"], transform, 128, 128)
            )


# --- rasters and features without a CRS --------------------------------------------------------


@pytest.fixture(scope="module")
def scene_nocrs(tmp_path_factory) -> SyntheticScene:
    return make_scene(tmp_path_factory.mktemp("nocrs"), width=256, height=256, seed=3, crs=None)


@pytest.mark.parametrize("reference_system", ["PIXEL_SPACE", "MAP_SPACE"])
def test_raster_and_features_without_crs(scene_nocrs, tmp_path, reference_system):
    scene = scene_nocrs
    frame = polygons(scene)
    assert frame.crs is None
    out = tmp_path / "out"
    export_training_data(
        scene.raster_path,
        out,
        scene.polygons_path,
        metadata_format="Classified_Tiles",
        reference_system=reference_system,
        output_nofeature_tiles=True,
        **tiles(stride_x=64, stride_y=64),
    )
    entries = map_entries(out)
    expected = grid(256, 256, 128, 64)
    assert len(entries) == len(expected) == 9
    with rasterio.open(scene.raster_path) as src:
        for (image, label), (r, c) in zip(entries, expected, strict=True):
            data, transform, crs, _ = read(image)
            assert crs is None
            assert transform == Affine.translation(c, r)
            np.testing.assert_array_equal(data, src.read(window=Window(c, r, 128, 128)))
            np.testing.assert_array_equal(
                read(label)[0][0], burn(frame.geometry, frame["ClassValue"], transform, 128, 128)
            )
    assert emd(out)["ImageSpaceUsed"] == reference_system


def test_features_with_crs_on_raster_without_crs_are_refused(scene, scene_nocrs, tmp_path):
    with pytest.raises(InputError):
        export_training_data(
            scene_nocrs.raster_path, tmp_path / "out", scene.polygons_path, **tiles()
        )


# --- band count and data type ------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene_float(tmp_path_factory) -> SyntheticScene:
    return make_scene(
        tmp_path_factory.mktemp("float"), width=256, height=192, bands=4, dtype="float32", seed=4
    )


@pytest.mark.parametrize("which", ["uint16x5", "float32x4"])
def test_multiband_and_float_rasters_export_as_tiff(scene_multiband, scene_float, tmp_path, which):
    scene = scene_multiband if which == "uint16x5" else scene_float
    bands, dtype = (5, "uint16") if which == "uint16x5" else (4, "float32")
    frame = polygons(scene)
    out = tmp_path / "out"
    result = export_training_data(
        scene.raster_path,
        out,
        scene.polygons_path,
        metadata_format="Classified_Tiles",
        tile_size_x=64,
        tile_size_y=64,
        stride_x=64,
        stride_y=64,
    )
    entries = map_entries(out)
    assert result.num_chips == len(entries) > 0
    with rasterio.open(scene.raster_path) as src:
        for image, label in entries:
            assert image.suffix == ".tif"
            with rasterio.open(image) as ds:
                assert (ds.count, ds.dtypes[0]) == (bands, dtype)
                assert ds.nodata == src.nodata
                data, transform = ds.read(), ds.transform
            r, c = window_of(src.transform, transform)
            np.testing.assert_array_equal(data, src.read(window=Window(c, r, 64, 64)))
            np.testing.assert_array_equal(
                read(label)[0][0], burn(frame.geometry, frame["ClassValue"], transform, 64, 64)
            )
    stats = json.loads((out / "esri_accumulated_stats.json").read_text())
    assert stats["NumBands"] == bands
    assert len(stats["BandStatsState"]) == bands
    assert len(emd(out)["AllTilesStats"]) == bands


@pytest.mark.parametrize("chip_format", ["PNG", "JPEG"])
def test_png_and_jpeg_refuse_more_than_three_bands(scene_multiband, tmp_path, chip_format):
    with pytest.raises(ParameterError):
        export_training_data(
            scene_multiband.raster_path,
            tmp_path / "out",
            metadata_format="Export_Tiles",
            image_chip_format=chip_format,
            tile_size_x=64,
            tile_size_y=64,
        )
    assert not (tmp_path / "out").exists()


# --- max_nodata_fraction -----------------------------------------------------------------------


@pytest.mark.parametrize("max_nodata", [0.0, 0.3125, 0.5, 1.0])
def test_max_nodata_fraction(scene_multiband, tmp_path, max_nodata):
    scene = scene_multiband
    with rasterio.open(scene.raster_path) as src:
        data = src.read()
        nodata = src.nodata
    valid = ~np.all(data == nodata, axis=0)
    assert not valid[:20].any() and not valid[:, :20].any() and valid[20:, 20:].all()
    kept = []
    fractions = set()
    for r, c in grid(scene.width, scene.height, 64, 64):
        fraction = 1.0 - valid[r : r + 64, c : c + 64].mean()
        fractions.add(fraction)
        if fraction < 1.0 and fraction <= max_nodata:
            kept.append((r, c))
    assert {0.0, 20 / 64} < fractions  # fully valid, edge and corner tiles
    out = tmp_path / "out"
    result = export_training_data(
        scene.raster_path,
        out,
        metadata_format="Export_Tiles",
        max_nodata_fraction=max_nodata,
        tile_size_x=64,
        tile_size_y=64,
        stride_x=64,
        stride_y=64,
    )
    entries = map_entries(out)
    assert result.num_chips == len(entries) == len(kept)
    assert [window_of(scene.transform, read(image)[1]) for (image,) in entries] == kept
    # The band statistics count exactly the valid pixels of the written chips.
    stats = json.loads((out / "esri_accumulated_stats.json").read_text())
    n_valid = sum(int(valid[r : r + 64, c : c + 64].sum()) for r, c in kept)
    assert [s["Num"] for s in stats["BandStatsState"]] == [n_valid] * 5
    chips = np.stack([data[:, r : r + 64, c : c + 64] for r, c in kept])
    masks = np.stack([valid[r : r + 64, c : c + 64] for r, c in kept])
    for b, s in enumerate(stats["BandStatsState"]):
        values = chips[:, b][masks].astype(np.float64)
        assert s["M1"] == pytest.approx(values.mean(), rel=1e-9)
        assert (s["Min"], s["Max"]) == (values.min(), values.max())


# --- min_polygon_overlap_ratio -----------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.8])
def test_min_polygon_overlap_ratio(scene, tmp_path, ratio):
    t = scene.transform
    frame = polygons(scene)

    def square(c0, r0, c1, r1):
        x0, y1 = t @ (c0, r0)
        x1, y0 = t @ (c1, r1)
        return shapely.box(x0, y0, x1, y1)

    extra = [
        square(118, 40, 138, 50),  # 50 % / 50 % across the column edge at 128
        square(250, 300, 260, 340),  # 60 % left of 256 / 40 % right
        square(120, 120, 136, 136),  # 25 % in each of four chips
        square(380, 100, 400, 124),  # 20 % left of the column edge at 384 / 80 % right
    ]
    geoms = list(frame.geometry) + extra
    values = [*frame["ClassValue"].tolist(), 1, 2, 3, 1]
    path = tmp_path / "features.gpkg"
    gpd.GeoDataFrame({"ClassValue": values}, geometry=geoms, crs=frame.crs).to_file(path)
    out = tmp_path / "out"
    export_training_data(scene.raster_path, out, path, min_polygon_overlap_ratio=ratio, **tiles())
    expected = {}
    for r, c in grid(scene.width, scene.height, 128, 128):
        transform = t @ Affine.translation(c, r)
        boxes = expected_boxes(geoms, values, transform, 128, 128, ratio)
        if boxes:
            expected[(r, c)] = boxes
    entries = map_entries(out)
    assert len(entries) == len(expected)
    for (image, label), ((r, c), boxes) in zip(entries, expected.items(), strict=True):
        assert window_of(t, read(image)[1]) == (r, c)
        assert_boxes_match(voc(label), boxes)
    n_parts = sum(len(b) for b in expected.values())
    if ratio == 0.0:
        assert n_parts == len(frame) + 2 + 2 + 4 + 2
    elif ratio == 0.5:
        assert n_parts == len(frame) + 2 + 1 + 0 + 1
    elif ratio == 0.8:
        assert n_parts == len(frame) + 0 + 0 + 0 + 1


@pytest.mark.parametrize("metadata_format", ["PASCAL_VOC_rectangles", "KITTI_rectangles"])
def test_no_degenerate_boxes_for_features_touching_the_chip_edge(neon, tmp_path, metadata_format):
    """A tree polygon whose edge lies on a chip edge has no area in that chip: no box.

    On the NEON grid (0.1 m cells, origin 404211.9) such an edge comes out at
    x = 95.9999999995 px, leaving a sliver of ~1e-8 px^2 inside the chip.
    """
    raster, trees = neon
    out = tmp_path / "out"
    result = export_training_data(
        raster,
        out,
        trees,
        metadata_format=metadata_format,
        tile_size_x=96,
        tile_size_y=96,
        stride_x=48,
        stride_y=48,
    )
    boxes = []
    for _, label in map_entries(out):
        if label.suffix == ".xml":
            boxes += [b for _, b in voc(label)]
        else:
            boxes += [
                tuple(float(v) for v in line.split()[4:8])
                for line in label.read_text().splitlines()
            ]
    assert len(boxes) == result.num_features > 0
    degenerate = [b for b in boxes if not (b[2] > b[0] and b[3] > b[1])]
    assert degenerate == []


# --- determinism -------------------------------------------------------------------------------


def _jittered(write_chip):
    """``ExportWriter.write_chip`` slowed down by a few ms for some chips: a different, but
    legitimate, thread timing that makes chips finish out of order."""

    def write(self, index, *args):
        time.sleep(0.004 * (index % 3 == 0))
        return write_chip(self, index, *args)

    return write


@pytest.fixture(scope="module")
def neon_runs(neon, tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The NEON sample exported three times: twice with 4 threads, once with 1 thread.

    VOC rectangles with 120-degree rotations, so that rotated (resampled) reads, feature areas
    and band statistics all go through the worker threads. Run ``b`` delays some chip writes
    to vary the thread timing the way a busy machine does.
    """
    raster, trees = neon
    root = tmp_path_factory.mktemp("determinism")
    runs = {}
    for name, workers in (("a", 4), ("b", 4), ("c", 1)):
        with pytest.MonkeyPatch.context() as mp:
            if name == "b":
                mp.setattr(ExportWriter, "write_chip", _jittered(ExportWriter.write_chip))
            export_training_data(raster, root / name, trees, num_workers=workers, **NEON_RUN)
        runs[name] = all_files(root / name)
    return runs


NEON_RUN = {
    "tile_size_x": 96,
    "tile_size_y": 96,
    "stride_x": 64,
    "stride_y": 64,
    "rotation_angle": 120,
}


def test_deterministic_chips_and_labels(neon_runs):
    a, b, c = neon_runs["a"], neon_runs["b"], neon_runs["c"]
    assert len(a) > 100
    assert a.keys() == b.keys() == c.keys()
    chips = [k for k in a if k.startswith(("images", "labels")) or k == "map.txt"]
    assert [k for k in chips if not a[k] == b[k] == c[k]] == []


def test_deterministic_all_files(neon_runs):
    """Two runs, and one thread against four, write byte-identical folders (metadata too)."""
    a, b, c = neon_runs["a"], neon_runs["b"], neon_runs["c"]
    assert a.keys() == b.keys() == c.keys()
    assert [k for k in a if a[k] != c[k]] == []
    assert [k for k in a if a[k] != b[k]] == []


def test_worker_processes_write_the_same_folder_as_one_thread(
    neon, neon_runs, tmp_path, monkeypatch
):
    """Lanes in worker processes (forced for this small export): byte for byte run ``c``'s
    folder. This process's lane (it works while the processes start) writes its chips once
    a process has work, so that the processes cut and write the other blocks."""
    raster, trees = neon
    here: list[int] = []
    processes_working = threading.Event()
    work = blocks._ProcessSteps.work

    def recorded_work(self, lane, *args):
        if lane < len(self.processes):
            processes_working.set()
        return work(self, lane, *args)

    write_chip = ExportWriter.write_chip

    def write_chip_later(self, index, *args):
        here.append(index)
        processes_working.wait(60)
        return write_chip(self, index, *args)

    monkeypatch.setattr(write, "PROCESS_MIN_PLANS", 0)
    monkeypatch.setattr(blocks._ProcessSteps, "work", recorded_work)
    monkeypatch.setattr(ExportWriter, "write_chip", write_chip_later)
    result = export_training_data(raster, tmp_path / "d", trees, num_workers=2, **NEON_RUN)
    assert len(here) < result.num_chips / 2, "the worker processes wrote most chips"
    d, c = all_files(tmp_path / "d"), neon_runs["c"]
    assert d.keys() == c.keys()
    assert [k for k in c if d[k] != c[k]] == []


def test_a_tiled_export_starts_its_lane_processes_before_the_features_load(
    neon, neon_runs, tmp_path, monkeypatch
):
    """The processes are started (importing the export's modules) on an estimate of the
    chips, which is the number planned, before the class data is read; the folder is run
    ``c``'s."""
    raster, trees = neon
    events: list[tuple] = []
    start, load, write_chips = tool.start_lanes_early, tool.load_class_data, tool.write_chips

    def recorded_start(estimate: int, lanes: int):
        events.append(("start", estimate))
        return start(estimate, lanes)

    def recorded_load(*args):
        events.append(("load",))
        return load(*args)

    def recorded_write(writer, job, plans, *args):
        events.append(("write", sum(map(len, plans)), args[-1] is not None))
        return write_chips(writer, job, plans, *args)

    monkeypatch.setattr(write, "PROCESS_MIN_PLANS", 0)
    monkeypatch.setattr(tool, "start_lanes_early", recorded_start)
    monkeypatch.setattr(tool, "load_class_data", recorded_load)
    monkeypatch.setattr(tool, "write_chips", recorded_write)
    export_training_data(raster, tmp_path / "d", trees, num_workers=2, **NEON_RUN)
    (first, estimate), (second,), (_, planned, early) = events
    assert (first, second) == ("start", "load")
    assert estimate == planned > 0 and early
    d, c = all_files(tmp_path / "d"), neon_runs["c"]
    assert d.keys() == c.keys() and [k for k in c if d[k] != c[k]] == []


# --- PNG and JPEG chips ------------------------------------------------------------------------


@pytest.mark.parametrize("chip_format", ["PNG", "JPEG"])
def test_png_and_jpeg_chips_with_world_files(scene, tmp_path, chip_format):
    ext, world = (".png", ".pgw") if chip_format == "PNG" else (".jpg", ".jgw")
    frame = polygons(scene)
    out = tmp_path / "out"
    export_training_data(
        scene.raster_path,
        out,
        scene.polygons_path,
        metadata_format="Classified_Tiles",
        image_chip_format=chip_format,
        **tiles(),
    )
    entries = map_entries(out)
    assert entries
    assert all(image.parent.name == "images" for image, _ in entries)
    with rasterio.open(scene.raster_path) as src:
        for image, label in entries:
            assert image.suffix == ext
            assert label.suffix == ".png"  # class rasters stay lossless
            lines = image.with_suffix(world).read_text().split()
            assert len(lines) == 6
            a, d, b, e, x, y = (float(v) for v in lines)
            transform = Affine(a, b, x - a / 2 - b / 2, d, e, y - d / 2 - e / 2)
            r, c = window_of(scene.transform, transform)
            assert transform.almost_equals(
                scene.transform @ Affine.translation(c, r), precision=1e-6
            )
            assert (a, d, b, e) == (scene.transform.a, 0.0, 0.0, scene.transform.e)
            aux = ET.parse(image.with_name(image.name + ".aux.xml")).getroot()
            assert CRS.from_wkt(aux.findtext("SRS")) == src.crs
            with rasterio.open(image) as ds:
                assert ds.driver == chip_format
                assert (ds.count, ds.dtypes[0]) == (3, "uint8")
                assert ds.crs == src.crs
                assert ds.transform.almost_equals(transform, precision=1e-6)
                data = ds.read()
            source = src.read(window=Window(c, r, 128, 128))
            if chip_format == "PNG":
                np.testing.assert_array_equal(data, source)
            else:
                # Lossy, but close (the scene's pixel noise has a sigma of 6).
                assert np.abs(data.astype(int) - source.astype(int)).mean() < 8
            with rasterio.open(label) as ds:
                assert ds.driver == "PNG"
                assert ds.crs == src.crs
                assert ds.transform.almost_equals(transform, precision=1e-6)
                labels = ds.read(1)
            assert label.with_suffix(".pgw").exists()
            np.testing.assert_array_equal(
                labels, burn(frame.geometry, frame["ClassValue"], transform, 128, 128)
            )
