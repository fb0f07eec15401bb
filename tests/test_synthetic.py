"""Tests of the synthetic scene generator, checked against independent computations."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize

from rasterlearn.synthetic import (
    CHANGE_CLASSES,
    SCENE_CLASSES,
    SyntheticScene,
    change_classes,
    make_change_scene,
    make_scene,
)

FILES = ("raster_path", "polygons_path", "points_path", "class_raster_path")


def read_raster(path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), {
            "profile": src.profile,
            "descriptions": src.descriptions,
            "crs": src.crs,
            "transform": src.transform,
            "nodata": src.nodata,
            "block_shapes": src.block_shapes,
        }


def pixel_geometries(scene: SyntheticScene, geoms) -> np.ndarray:
    a, b, c, d, e, f, *_ = ~scene.transform
    return shapely.transform(
        np.asarray(geoms),
        lambda xy: np.column_stack(
            [a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]
        ),
    )


def test_same_arguments_give_identical_files(tmp_path):
    kwargs = {"width": 200, "height": 170, "bands": 4, "seed": 7, "nodata": 0, "nodata_border": 9}
    first = make_scene(tmp_path / "a", **kwargs)
    second = make_scene(tmp_path / "b", **kwargs)
    for attr in FILES:
        assert getattr(first, attr).read_bytes() == getattr(second, attr).read_bytes(), attr
    third = make_scene(tmp_path / "c", **{**kwargs, "seed": 8})
    assert first.raster_path.read_bytes() != third.raster_path.read_bytes()


def test_rewriting_into_the_same_directory_is_identical(tmp_path):
    scene = make_scene(tmp_path, width=128, height=128)
    before = {attr: getattr(scene, attr).read_bytes() for attr in FILES}
    make_scene(tmp_path, width=128, height=128)
    assert {attr: getattr(scene, attr).read_bytes() for attr in FILES} == before


@pytest.mark.parametrize(
    ("bands", "dtype", "crs", "width", "height"),
    [
        (1, "float32", "EPSG:32617", 150, 100),
        (3, "uint8", "EPSG:32617", 256, 192),
        (5, "uint16", "EPSG:3857", 120, 260),
        (3, "uint8", None, 140, 130),
    ],
)
def test_raster_layout(tmp_path, bands, dtype, crs, width, height):
    scene = make_scene(
        tmp_path, width=width, height=height, bands=bands, dtype=dtype, crs=crs, pixel_size=2.0
    )
    data, meta = read_raster(scene.raster_path)
    assert data.shape == (bands, height, width)
    assert data.dtype == np.dtype(dtype)
    expected = Affine.identity() if crs is None else Affine(2.0, 0, 400000.0, 0, -2.0, 3300000.0)
    assert meta["transform"] == expected
    assert scene.transform == expected
    assert (scene.width, scene.height, scene.crs) == (width, height, crs)
    if crs is None:
        assert meta["crs"] is None
    else:
        assert meta["crs"] == rasterio.CRS.from_user_input(crs)
    assert meta["block_shapes"] == [(256, 256)] * bands
    names = ["red", "green", "blue", "nir", "band5"][:bands]
    assert list(meta["descriptions"]) == names
    top = {"uint8": 255, "uint16": 10000, "float32": 1.0}[dtype]
    assert data.min() >= 0
    assert data.max() <= top
    assert data.std() > 0

    classes, class_meta = read_raster(scene.class_raster_path)
    assert classes.shape == (1, height, width)
    assert classes.dtype == np.uint8
    assert class_meta["transform"] == expected
    assert class_meta["crs"] == meta["crs"]
    assert class_meta["nodata"] is None

    polygons = gpd.read_file(scene.polygons_path)
    points = gpd.read_file(scene.points_path)
    for frame in (polygons, points):
        if crs is None:
            assert frame.crs is None
        else:
            assert frame.crs == crs
    minx, miny, maxx, maxy = polygons.total_bounds
    left, bottom, right, top = rasterio.transform.array_bounds(height, width, expected)
    assert min(left, right) <= minx and maxx <= max(left, right)
    assert min(bottom, top) <= miny and maxy <= max(bottom, top)


def test_vector_fields_order_and_centroids(tmp_path):
    scene = make_scene(tmp_path, width=320, height=256, cell=64, fill=0.8, seed=3)
    polygons = gpd.read_file(scene.polygons_path)
    points = gpd.read_file(scene.points_path)
    assert len(polygons) > 5
    assert polygons["ClassValue"].dtype == np.int32
    assert points["ClassValue"].dtype == np.int32
    names = {c.value: c.name for c in SCENE_CLASSES}
    assert list(polygons["ClassName"]) == [names[v] for v in polygons["ClassValue"]]
    assert list(points["ClassValue"]) == list(polygons["ClassValue"])
    assert list(points["ClassName"]) == list(polygons["ClassName"])
    assert set(polygons.geom_type) == {"Polygon"}
    assert polygons.is_valid.all()
    assert set(points.geom_type) == {"Point"}
    centroids = polygons.geometry.centroid
    assert np.allclose(points.geometry.x, centroids.x)
    assert np.allclose(points.geometry.y, centroids.y)

    cell = 64
    cells = []
    for geom in pixel_geometries(scene, polygons.geometry):
        minx, miny, maxx, maxy = geom.bounds
        col, row = int(minx // cell), int(miny // cell)
        assert int(maxx // cell) == col and int(maxy // cell) == row
        assert minx >= col * cell + 2 - 1e-6 and miny >= row * cell + 2 - 1e-6
        assert maxx <= min((col + 1) * cell, scene.width) - 2 + 1e-6
        assert maxy <= min((row + 1) * cell, scene.height) - 2 + 1e-6
        cells.append((row, col))
    assert cells == sorted(set(cells))


@pytest.mark.parametrize("crs", ["EPSG:32617", None])
def test_class_raster_matches_rasterized_polygons(tmp_path, crs):
    scene = make_scene(tmp_path, width=300, height=220, crs=crs, block_size=128, seed=5)
    polygons = gpd.read_file(scene.polygons_path)
    with rasterio.open(scene.class_raster_path) as src:
        classes = src.read(1)
        colormap = src.colormap(1)
    expected = rasterize(
        zip(polygons.geometry, polygons["ClassValue"].astype(int), strict=True),
        out_shape=(scene.height, scene.width),
        transform=scene.transform,
        fill=0,
        dtype="uint8",
    )
    np.testing.assert_array_equal(classes, expected)
    assert set(np.unique(classes)) == {0, 1, 2, 3}
    for scene_class in SCENE_CLASSES:
        assert colormap[scene_class.value] == (*scene_class.color, 255)


def test_object_pixels_have_their_class_colour(tmp_path):
    scene = make_scene(tmp_path, width=384, height=320, seed=11)
    polygons = gpd.read_file(scene.polygons_path)
    data, _ = read_raster(scene.raster_path)
    with rasterio.open(scene.class_raster_path) as src:
        classes = src.read(1)
    colours = {c.value: np.array(c.color, dtype=float) for c in SCENE_CLASSES}
    assert len(polygons) > 10
    for geom, value in zip(polygons.geometry, polygons["ClassValue"], strict=True):
        point = geom.representative_point()
        row, col = rasterio.transform.rowcol(scene.transform, point.x, point.y)
        assert classes[row, col] == value
        pixel = data[:, row, col].astype(float)
        distances = {v: np.linalg.norm(pixel - c) for v, c in colours.items()}
        assert min(distances, key=distances.get) == value


def test_near_infrared_band(tmp_path):
    scene = make_scene(tmp_path, width=256, height=256, bands=4, seed=2)
    data, _ = read_raster(scene.raster_path)
    with rasterio.open(scene.class_raster_path) as src:
        classes = src.read(1)
    nir = data[3].astype(float)
    tree, water = nir[classes == 2].mean(), nir[classes == 3].mean()
    other = nir[(classes == 0) | (classes == 1)].mean()
    assert tree > other > water


@pytest.mark.parametrize(("dtype", "nodata"), [("uint8", 0), ("uint8", 255), ("float32", 0.0)])
def test_nodata_border(tmp_path, dtype, nodata):
    border = 13
    scene = make_scene(
        tmp_path, width=210, height=190, bands=4, dtype=dtype, nodata=nodata, nodata_border=border
    )
    data, meta = read_raster(scene.raster_path)
    assert meta["nodata"] == nodata
    mask = np.zeros(data.shape[1:], dtype=bool)
    mask[:border, :] = True
    mask[:, :border] = True
    assert (data[:, mask] == nodata).all()
    assert not (data[:, ~mask] == nodata).any()

    polygons = gpd.read_file(scene.polygons_path)
    assert len(polygons) > 0
    for geom in pixel_geometries(scene, polygons.geometry):
        minx, miny, _, _ = geom.bounds
        assert minx >= border and miny >= border
    with rasterio.open(scene.class_raster_path) as src:
        assert not src.read(1)[mask].any()


def test_nodata_value_never_appears_without_border(tmp_path):
    scene = make_scene(tmp_path, width=128, height=128, dtype="uint8", nodata=120)
    data, meta = read_raster(scene.raster_path)
    assert meta["nodata"] == 120
    assert not (data == 120).any()


@pytest.mark.parametrize("crs", ["EPSG:32617", None])
def test_block_size_does_not_change_the_output(tmp_path, crs):
    kwargs = {"width": 300, "height": 270, "bands": 5, "dtype": "uint16", "crs": crs, "seed": 4}
    reference = make_scene(tmp_path / "512", block_size=512, **kwargs)
    for block_size in (128, 100):
        scene = make_scene(tmp_path / str(block_size), block_size=block_size, **kwargs)
        for attr in ("raster_path", "class_raster_path"):
            expected, _ = read_raster(getattr(reference, attr))
            actual, _ = read_raster(getattr(scene, attr))
            np.testing.assert_array_equal(actual, expected)
        for attr in ("polygons_path", "points_path"):
            assert getattr(scene, attr).read_bytes() == getattr(reference, attr).read_bytes()


def test_empty_scene(tmp_path):
    scene = make_scene(tmp_path, width=64, height=48, fill=0.0)
    assert len(gpd.read_file(scene.polygons_path)) == 0
    assert len(gpd.read_file(scene.points_path)) == 0
    with rasterio.open(scene.class_raster_path) as src:
        assert not src.read(1).any()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bands": 0},
        {"dtype": "int16"},
        {"width": 0},
        {"fill": 1.5},
        {"nodata_border": 4},
        {"nodata": 300},
        {"nodata": -1, "dtype": "uint16"},
    ],
)
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_scene(tmp_path, **kwargs)


def test_a_change_scene_has_the_changes_it_says(tmp_path):
    scene = make_change_scene(tmp_path, width=160, height=128, seed=3, cell=32, change=0.5)
    before, after = scene.before, scene.after
    assert after.transform.a == pytest.approx(0.6) and before.transform.a == pytest.approx(0.5)
    assert (after.width, after.height) == (round(160 / 1.2), round(128 / 1.2))
    assert after.transform.c == before.transform.c and after.transform.f == before.transform.f
    assert min(scene.counts.values()) > 0  # objects added, removed and changed
    # the change raster against both dates' polygons rasterized on the first grid
    drawn = []
    for date in (before, after):
        frame = gpd.read_file(date.polygons_path)
        drawn.append(
            rasterize(
                zip(frame.geometry, frame["ClassValue"], strict=True),
                out_shape=(before.height, before.width),
                transform=before.transform,
                dtype="uint8",
            )
        )
    expected = change_classes(*drawn)
    with rasterio.open(scene.change_raster_path) as ds:
        assert np.array_equal(ds.read(1), expected)
    assert set(np.unique(expected)) == {0, 1, 2, 3}
    polygons = gpd.read_file(scene.change_polygons_path)
    assert set(polygons["ClassName"]) == {c.name for c in CHANGE_CLASSES}
    # the second date's class raster shows its own objects on its own grid
    with rasterio.open(after.class_raster_path) as ds:
        assert ds.shape == (after.height, after.width) and ds.read(1).any()


def test_change_classes_of_each_transition():
    before = np.array([0, 0, 1, 1, 2, 3])
    after = np.array([0, 2, 0, 1, 3, 1])
    assert change_classes(before, after).tolist() == [0, 1, 2, 0, 3, 3]
