"""Pixel accuracy against numpy on generated rasters: same grid, another grid, another CRS,
reference polygons, class names, and the checks on bad inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import calculate_default_transform, reproject

from rasterlearn.errors import InputError, ParameterError
from rasterlearn.tools.compute_pixel_accuracy import compute_pixel_accuracy

UTM = "EPSG:32617"
ORIGIN = (404_000.0, 3_285_000.0)
CELL = 3.0
GRID = Affine(CELL, 0, ORIGIN[0], 0, -CELL, ORIGIN[1])


def patches(rng: np.random.Generator, shape: tuple[int, int], classes: int, cell: int = 6):
    """Class patches of ``cell`` x ``cell`` pixels, so that resampling has regions to keep."""
    coarse = rng.integers(1, classes + 1, (shape[0] // cell + 1, shape[1] // cell + 1))
    return np.kron(coarse, np.ones((cell, cell), dtype=np.int64))[: shape[0], : shape[1]]


def expected_confusion(reference: np.ndarray, classified: np.ndarray, valid: np.ndarray):
    """Classes and ``C[i, j]`` (reference i, classified j) counted with numpy."""
    keep = valid & (reference != 0) & (classified != 0)
    classes = np.union1d(reference[keep], classified[keep])
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(
        matrix,
        (np.searchsorted(classes, reference[keep]), np.searchsorted(classes, classified[keep])),
        1,
    )
    return classes.tolist(), matrix


def check_table(table: pd.DataFrame, matrix: np.ndarray, classes: list[int]) -> None:
    """Every figure of the table, recomputed from the matrix with the textbook formulas."""
    n = matrix.sum()
    rows = table.iloc[:-1]
    assert rows["Class"].astype(int).tolist() == classes
    for i, row in enumerate(rows.itertuples()):
        tp = matrix[i, i]
        predicted, actual = matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert row.Precision == pytest.approx(precision, abs=1e-12)
        assert row.Recall == pytest.approx(recall, abs=1e-12)
        assert row.F1_Score == pytest.approx(f1, abs=1e-12)
        assert row.IoU == pytest.approx(tp / (predicted + actual - tp), abs=1e-12)
        assert row.Pixels == actual
    overall = table.iloc[-1]
    assert overall["Class"] == "Overall" and overall["Pixels"] == n
    po = np.trace(matrix) / n
    pe = sum(matrix[i, :].sum() * matrix[:, i].sum() for i in range(len(classes))) / n**2
    assert overall["Overall_Accuracy"] == pytest.approx(po, abs=1e-12)
    assert overall["Kappa"] == pytest.approx((po - pe) / (1 - pe), abs=1e-12)
    assert overall["IoU"] == pytest.approx(rows["IoU"].mean(), abs=1e-12)


def test_same_grid_with_nodata(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    rng = np.random.default_rng(0)
    shape = (150, 97)  # not a multiple of the blocks
    classified = patches(rng, shape, 4).astype(np.uint8)
    reference = classified.copy()
    wrong = rng.random(shape) < 0.25
    reference[wrong] = rng.integers(0, 5, wrong.sum())  # includes some 0 (not assessed)
    classified[:10] = 255  # nodata band across the top
    reference[:, -7:] = 0
    cls = write_raster(tmp_path / "cls.tif", classified, GRID, nodata=255)
    ref = write_raster(tmp_path / "ref.tif", reference, GRID)
    result = compute_pixel_accuracy(
        cls, ref, tmp_path / "acc.csv", tmp_path / "acc.html", block_size=40
    )
    valid = classified != 255
    classes, matrix = expected_confusion(reference, classified, valid)
    assert result.classes == classes == [1, 2, 3, 4]
    np.testing.assert_array_equal(result.accuracy.matrix, matrix)
    written = pd.read_csv(tmp_path / "acc.csv")
    check_table(written, matrix, classes)
    assert "data:image/png;base64," in (tmp_path / "acc.html").read_text()

    # the confusion matrix as ArcGIS lays it out: rows classified, columns reference
    confusion = pd.read_csv(tmp_path / "acc_confusion.csv").set_index("ClassValue")
    labels = [f"C_{v}" for v in classes]
    np.testing.assert_array_equal(confusion.loc[labels, labels].to_numpy(), matrix.T)
    assert confusion.loc["Total", "Total"] == matrix.sum()
    assert confusion.loc["P_Accuracy", "U_Accuracy"] == pytest.approx(
        np.trace(matrix) / matrix.sum(), abs=1e-9
    )
    assert confusion.loc["C_2", "U_Accuracy"] == pytest.approx(
        matrix[1, 1] / matrix[:, 1].sum(), abs=1e-9
    )


def test_reference_on_a_finer_offset_grid(
    tmp_path: Path, write_raster: Callable[..., Path]
) -> None:
    # The reference has 1 m cells starting 5 classified columns left and 4 rows above the
    # classified raster, and ends 10 columns before its right edge. The centre of classified
    # pixel (r, c) falls in the middle of reference pixel (3 (r + 4) + 1, 3 (c + 5) + 1).
    rng = np.random.default_rng(1)
    shape = (60, 50)
    classified = patches(rng, shape, 3).astype(np.uint8)
    fine = rng.integers(1, 4, ((shape[0] + 4) * 3, (shape[1] + 5 - 10) * 3)).astype(np.uint8)
    fine_grid = Affine(1.0, 0, ORIGIN[0] - 5 * CELL, 0, -1.0, ORIGIN[1] + 4 * CELL)
    cls = write_raster(tmp_path / "cls.tif", classified, GRID)
    ref = write_raster(tmp_path / "ref.tif", fine, fine_grid)
    result = compute_pixel_accuracy(cls, ref, tmp_path / "acc.csv", block_size=16)
    on_grid = np.zeros(shape, dtype=np.uint8)
    sampled = fine[13::3, 16::3]
    on_grid[: sampled.shape[0], : sampled.shape[1]] = sampled
    classes, matrix = expected_confusion(on_grid, classified, np.ones(shape, bool))
    assert matrix.sum() == shape[0] * (shape[1] - 10)
    np.testing.assert_array_equal(result.accuracy.matrix, matrix)
    check_table(result.table, matrix, classes)
    assert any("resampled" in n for n in result.notes)


def test_reference_in_another_crs(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    # The reference is the classified raster's truth warped to WGS 84. Expected: for every
    # classified pixel centre, the WGS 84 pixel it falls in, found with pyproj (exact).
    rng = np.random.default_rng(2)
    shape = (80, 70)
    truth = patches(rng, shape, 5, cell=8).astype(np.uint8)
    classified = truth.copy()
    noise = rng.random(shape) < 0.2
    classified[noise] = rng.integers(1, 6, noise.sum())
    cls = write_raster(tmp_path / "cls.tif", classified, GRID)
    left, top = ORIGIN
    right, bottom = left + shape[1] * CELL, top - shape[0] * CELL
    transform, width, height = calculate_default_transform(
        UTM, "EPSG:4326", shape[1], shape[0], left, bottom, right, top
    )
    warped = np.zeros((height, width), dtype=np.uint8)
    reproject(
        truth,
        warped,
        src_transform=GRID,
        src_crs=UTM,
        dst_transform=transform,
        dst_crs="EPSG:4326",
        resampling=Resampling.nearest,
        dst_nodata=0,
    )
    ref = write_raster(tmp_path / "ref.tif", warped, transform, crs="EPSG:4326", nodata=0)
    result = compute_pixel_accuracy(cls, ref, tmp_path / "acc.csv", block_size=32)

    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    xs, ys = GRID @ (cols + 0.5, rows + 0.5)
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(xs, ys)
    ref_cols, ref_rows = ~transform @ (lon, lat)
    ref_cols, ref_rows = np.floor(ref_cols).astype(int), np.floor(ref_rows).astype(int)
    inside = (ref_cols >= 0) & (ref_cols < width) & (ref_rows >= 0) & (ref_rows < height)
    on_grid = np.zeros(shape, dtype=np.uint8)
    on_grid[inside] = warped[ref_rows[inside], ref_cols[inside]]
    classes, matrix = expected_confusion(on_grid, classified, np.ones(shape, bool))
    assert matrix.sum() > 0.9 * classified.size
    np.testing.assert_array_equal(result.accuracy.matrix, matrix)
    check_table(result.table, matrix, classes)


def _polygons(rng: np.random.Generator, n: int) -> tuple[list, np.ndarray]:
    xy = rng.uniform([ORIGIN[0] - 30, ORIGIN[1] - 330], [ORIGIN[0] + 300, ORIGIN[1] + 30], (n, 2))
    wh = rng.uniform(10, 80, (n, 2))
    geoms = list(shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + wh[:, 0], xy[:, 1] + wh[:, 1]))
    x0, y0 = ORIGIN
    geoms[0] = shapely.Polygon([(x0 + 20, y0 - 20), (x0 + 200, y0 - 90), (x0 + 60, y0 - 250)])
    return geoms, rng.integers(1, 4, n)


def test_polygon_reference(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    # Polygons (overlapping, some partly outside the raster), stored in WGS 84; expected: the
    # same polygons rasterized on the whole grid at once, later ones drawn over earlier ones.
    rng = np.random.default_rng(3)
    shape = (100, 90)
    classified = patches(rng, shape, 3).astype(np.uint8)
    cls = write_raster(tmp_path / "cls.tif", classified, GRID, block=16)
    geoms, values = _polygons(rng, 25)
    frame = gpd.GeoDataFrame({"Classvalue": values}, geometry=geoms, crs=UTM)
    ref = tmp_path / "ref.gpkg"
    frame.to_crs("EPSG:4326").to_file(ref)
    result = compute_pixel_accuracy(cls, ref, tmp_path / "acc.gpkg", block_size=32)

    back = gpd.read_file(ref).to_crs(UTM)
    expected_ref = rasterize(
        zip(back.geometry, back["Classvalue"].tolist(), strict=True),
        out_shape=shape,
        transform=GRID,
        fill=0,
        dtype="int32",
    )
    classes, matrix = expected_confusion(expected_ref, classified, np.ones(shape, bool))
    assert 0.2 * classified.size < matrix.sum() < classified.size
    np.testing.assert_array_equal(result.accuracy.matrix, matrix)
    table = pyogrio.read_dataframe(tmp_path / "acc.gpkg", read_geometry=False)
    check_table(table, matrix, classes)
    assert (tmp_path / "acc_confusion.csv").exists()


def _with_rat(path: Path) -> None:
    """Class names as GDAL keeps them for a GeoTIFF: a raster attribute table in .aux.xml."""
    path.with_name(path.name + ".aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1">'
        '<GDALRasterAttributeTable tableType="thematic">'
        '<FieldDefn index="0"><Name>Value</Name><Type>0</Type><Usage>5</Usage></FieldDefn>'
        '<FieldDefn index="1"><Name>Class</Name><Type>2</Type><Usage>2</Usage></FieldDefn>'
        '<Row index="0"><F>1</F><F>Water</F></Row><Row index="1"><F>2</F><F>Trees</F></Row>'
        '<Row index="2"><F>3</F><F>Roads</F></Row>'
        "</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>"
    )


def test_class_names_and_named_polygons(
    tmp_path: Path, write_raster: Callable[..., Path], write_boxes: Callable[..., Path]
) -> None:
    rng = np.random.default_rng(4)
    classified = patches(rng, (40, 40), 3).astype(np.uint8)
    cls = write_raster(tmp_path / "cls.tif", classified, GRID)
    _with_rat(cls)
    # reference polygons name their classes as the raster does (any letter case)
    x0, y0 = ORIGIN
    boxes = [[x0, y0 - 60, x0 + 60, y0], [x0 + 60, y0 - 120, x0 + 120, y0 - 60]]
    ref = write_boxes(tmp_path / "ref.gpkg", boxes, Land=["trees", "ROADS"])
    result = compute_pixel_accuracy(
        cls, ref, tmp_path / "acc.csv", reference_class_value_field="land"
    )
    expected_ref = np.zeros((40, 40), dtype=np.int64)
    expected_ref[:20, :20] = 2
    expected_ref[20:40, 20:40] = 3
    classes, matrix = expected_confusion(expected_ref, classified, np.ones((40, 40), bool))
    np.testing.assert_array_equal(result.accuracy.matrix, matrix)
    names = dict(zip(result.table["Class"], result.table["Name"], strict=True))
    assert {names[str(c)] for c in classes} <= {"Water", "Trees", "Roads"}
    assert names["2"] == "Trees" and names["Overall"] == "All classes"

    unknown = write_boxes(tmp_path / "bad.gpkg", boxes, Land=["trees", "Forest"])
    with pytest.raises(ParameterError, match=r"\['Forest'\].*Water, Trees, Roads"):
        compute_pixel_accuracy(cls, unknown, tmp_path / "b.csv", reference_class_value_field="Land")


def test_wide_class_values(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    # Values far apart (1, 7, 5000) take the sorting path instead of one bincount.
    rng = np.random.default_rng(5)
    values = np.array([1, 7, 5000], dtype=np.uint16)
    classified = values[rng.integers(0, 3, (50, 50))]
    reference = values[rng.integers(0, 3, (50, 50))]
    cls = write_raster(tmp_path / "cls.tif", classified, GRID)
    ref = write_raster(tmp_path / "ref.tif", reference, GRID)
    result = compute_pixel_accuracy(cls, ref, tmp_path / "acc.csv", block_size=16)
    classes, matrix = expected_confusion(reference, classified, np.ones((50, 50), bool))
    assert result.classes == classes == [1, 7, 5000]
    np.testing.assert_array_equal(result.accuracy.matrix, matrix)


def test_bad_inputs_leave_no_output(
    tmp_path: Path, write_raster: Callable[..., Path], write_boxes: Callable[..., Path]
) -> None:
    classes = np.ones((20, 20), dtype=np.uint8)
    cls = write_raster(tmp_path / "cls.tif", classes, GRID)
    far = Affine(CELL, 0, ORIGIN[0] + 10_000, 0, -CELL, ORIGIN[1])
    cases = [
        (InputError, "does not exist", dict(reference=tmp_path / "missing.tif")),
        (
            InputError,
            "does not overlap",
            dict(reference=write_raster(tmp_path / "far.tif", classes, far)),
        ),
        (
            InputError,
            "has 2 bands",
            dict(reference=write_raster(tmp_path / "two.tif", np.ones((2, 20, 20), "u1"), GRID)),
        ),
        (
            InputError,
            "no coordinate system",
            dict(reference=write_raster(tmp_path / "nocrs.tif", classes, far, crs=None)),
        ),
        (
            ParameterError,
            "not whole numbers",
            dict(reference=write_raster(tmp_path / "f.tif", np.full((20, 20), 1.5, "f4"), GRID)),
        ),
        (
            ParameterError,
            "'Kind' is not in",
            dict(
                reference=write_boxes(tmp_path / "p.gpkg", [[*ORIGIN, *(np.add(ORIGIN, 9))]]),
                reference_class_value_field="Kind",
            ),
        ),
        (
            InputError,
            "no pixel has a class",
            dict(reference=write_raster(tmp_path / "zero.tif", classes * 0, GRID)),
        ),
        (ParameterError, ".csv or .gpkg", dict(out_accuracy_table=tmp_path / "a.xlsx")),
    ]
    for error, text, changes in cases:
        args = dict(
            classified_raster=cls,
            reference=cls,
            out_accuracy_table=tmp_path / "a.csv",
        )
        args.update(changes)
        with pytest.raises(error) as caught:
            compute_pixel_accuracy(**args)
        assert text in str(caught.value), str(caught.value)
        assert not list(tmp_path.glob("a*")) and not list(tmp_path.glob(".a*"))
