"""Non-maximum suppression: torchvision's NMS as the oracle for boxes, a brute-force O(N²)
greedy for polygons, and the Non Maximum Suppression tool and ``rasterlearn nms`` end to end."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
import torchvision
from typer.testing import CliRunner

import rasterlearn
from rasterlearn.cli import app
from rasterlearn.errors import InputError, OutputError, ParameterError
from rasterlearn.inference.nms import _candidate_pairs, nms_boxes, nms_polygons
from rasterlearn.tools.non_maximum_suppression import (
    non_maximum_suppression,
    run_non_maximum_suppression,
)

CRS = "EPSG:32617"


def torch_nms(boxes: np.ndarray, scores: np.ndarray, thr: float, classes=None) -> np.ndarray:
    """torchvision's kept indices, sorted ascending (float64, as nms_boxes computes)."""
    b, s = torch.from_numpy(boxes), torch.from_numpy(scores)
    if classes is None:
        kept = torchvision.ops.nms(b, s, thr)
    else:
        kept = torchvision.ops.batched_nms(b, s, torch.from_numpy(classes), thr)
    return np.sort(kept.numpy())


def random_boxes(
    rng: np.random.Generator, n: int, extent: float = 1000.0, size: tuple = (5.0, 80.0)
) -> np.ndarray:
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(*size, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def brute_force_polygon_nms(geoms: list, scores: np.ndarray, ratio: float, classes=None) -> list:
    """Greedy NMS with every pair's IoU from shapely's intersection and union: O(N²)."""
    order = sorted(range(len(geoms)), key=lambda k: (-scores[k], k))
    kept: list[int] = []
    for k in order:
        suppressed = False
        for m in kept:
            if classes is not None and classes[k] != classes[m]:
                continue
            union = shapely.union(geoms[k], geoms[m]).area
            inter = shapely.intersection(geoms[k], geoms[m]).area
            if union > 0 and inter / union > ratio:
                suppressed = True
                break
        if not suppressed:
            kept.append(k)
    return sorted(kept)


class TestNmsBoxes:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    @pytest.mark.parametrize("n", [1, 2, 50, 2000, 20000])
    def test_equals_torchvision_nms(self, seed: int, n: int) -> None:
        rng = np.random.default_rng(seed)
        extent = 1000.0 * max(1.0, np.sqrt(n / 2000))
        boxes = random_boxes(rng, n, extent)
        scores = rng.random(n)
        classes = rng.integers(0, 3, n)
        for thr in (0.0, 0.3, 0.5, 0.7, 1.0):
            got = nms_boxes(boxes, scores, thr)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, torch_nms(boxes, scores, thr))
            np.testing.assert_array_equal(
                nms_boxes(boxes, scores, thr, classes), torch_nms(boxes, scores, thr, classes)
            )

    @pytest.mark.parametrize("seed", [3, 4])
    def test_equals_torchvision_batched_nms(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = 20000
        boxes = random_boxes(rng, n, 3000.0)
        scores = rng.random(n)
        classes = rng.integers(0, 5, n)
        names = np.array(["car", "tree", "roof", "pool", "boat"])[classes]
        for thr in (0.0, 0.4, 0.6):
            expected = torch_nms(boxes, scores, thr, classes)
            np.testing.assert_array_equal(nms_boxes(boxes, scores, thr, classes), expected)
            # class labels of any sortable kind
            np.testing.assert_array_equal(nms_boxes(boxes, scores, thr, names), expected)
            # classes change the result (else this test would not test them)
            assert not np.array_equal(expected, torch_nms(boxes, scores, thr))

    def test_integer_boxes_threshold_zero_touching_is_not_overlap(self) -> None:
        # Whole-pixel boxes touch each other often: zero-area contacts must not suppress.
        rng = np.random.default_rng(5)
        xy = rng.integers(0, 200, (3000, 2)).astype(float)
        boxes = np.concatenate([xy, xy + rng.integers(1, 12, (3000, 2))], axis=1)
        scores = rng.permutation(3000) / 3000.0
        for thr in (0.0, 0.25, 0.5):
            np.testing.assert_array_equal(
                nms_boxes(boxes, scores, thr), torch_nms(boxes, scores, thr)
            )
        row = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [19.5, 9.5, 30, 30]])
        np.testing.assert_array_equal(nms_boxes(row, np.array([4.0, 3, 2, 1]), 0.0), [0, 1, 2])

    def test_mixed_sizes_use_coarse_grid_levels(self) -> None:
        # Boxes from 0.5 to 5000 units: tiny ones inside huge ones, found on coarser levels.
        rng = np.random.default_rng(6)
        boxes = np.concatenate(
            [
                random_boxes(rng, 4000, 5000.0, (0.5, 20.0)),
                random_boxes(rng, 300, 5000.0, (50.0, 800.0)),
                random_boxes(rng, 5, 1000.0, (3000.0, 5000.0)),
            ]
        )
        scores = rng.random(len(boxes))
        classes = rng.integers(0, 2, len(boxes))
        for thr in (0.0, 0.001, 0.5):
            np.testing.assert_array_equal(
                nms_boxes(boxes, scores, thr), torch_nms(boxes, scores, thr)
            )
            np.testing.assert_array_equal(
                nms_boxes(boxes, scores, thr, classes), torch_nms(boxes, scores, thr, classes)
            )

    def test_long_chain_of_overlaps(self) -> None:
        # Each box overlaps the next: vectorised rounds settle two boxes each, so the
        # greedy pass must finish in its loop; the result alternates.
        n = 5000
        x = np.arange(n) * 6.0
        boxes = np.stack([x, np.zeros(n), x + 10, np.full(n, 10.0)], axis=1)
        scores = 1.0 - np.arange(n) / n
        got = nms_boxes(boxes, scores, 0.2)
        np.testing.assert_array_equal(got, np.arange(0, n, 2))
        np.testing.assert_array_equal(got, torch_nms(boxes, scores, 0.2))
        shuffled = np.random.default_rng(7).permutation(scores)
        np.testing.assert_array_equal(
            nms_boxes(boxes, shuffled, 0.2), torch_nms(boxes, shuffled, 0.2)
        )

    def test_dense_duplicates(self) -> None:
        # 40 jittered copies of 300 objects: clusters where every box overlaps every other.
        rng = np.random.default_rng(8)
        objects = random_boxes(rng, 300, 2000.0, (10.0, 30.0))
        boxes = np.repeat(objects, 40, axis=0) + rng.normal(0, 2.0, (12000, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = rng.random(len(boxes))
        for thr in (0.0, 0.5, 0.8):
            np.testing.assert_array_equal(
                nms_boxes(boxes, scores, thr), torch_nms(boxes, scores, thr)
            )

    def test_ties_keep_the_lower_index(self) -> None:
        boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], dtype=float)
        np.testing.assert_array_equal(nms_boxes(boxes, np.ones(3), 0.5), [0])
        np.testing.assert_array_equal(nms_boxes(boxes, np.array([1.0, 2.0, 2.0]), 0.5), [1])

    def test_degenerate_and_empty_inputs(self) -> None:
        assert nms_boxes(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
        # zero-area boxes neither suppress nor are suppressed (torchvision: 0/0 is not > thr)
        boxes = np.array([[0, 0, 10, 10], [5, 5, 5, 5], [0, 0, 10, 0], [2, 2, 8, 8]], float)
        scores = np.array([1.0, 0.9, 0.8, 0.7])
        np.testing.assert_array_equal(nms_boxes(boxes, scores, 0.0), [0, 1, 2])
        np.testing.assert_array_equal(torch_nms(boxes, scores, 0.0), [0, 1, 2])
        same = np.tile([[3.0, 3.0, 3.0, 3.0]], (4, 1))
        np.testing.assert_array_equal(nms_boxes(same, scores, 0.0), [0, 1, 2, 3])

    @pytest.mark.parametrize(
        ("boxes", "scores", "thr"),
        [
            (np.zeros((3, 3)), np.zeros(3), 0.5),
            (np.zeros((3, 4)), np.zeros(2), 0.5),
            (np.array([[0, 0, np.nan, 1.0]]), np.zeros(1), 0.5),
            (np.array([[2.0, 0, 1, 1]]), np.zeros(1), 0.5),
            (np.zeros((1, 4)), np.array([np.nan]), 0.5),
            (np.zeros((1, 4)), np.zeros(1), -0.1),
            (np.zeros((1, 4)), np.zeros(1), 1.5),
        ],
    )
    def test_rejects_bad_arguments(self, boxes: np.ndarray, scores: np.ndarray, thr: float):
        with pytest.raises(ValueError):
            nms_boxes(boxes, scores, thr)


def test_candidate_pairs_are_all_overlapping_pairs_once() -> None:
    rng = np.random.default_rng(9)
    boxes = np.concatenate(
        [
            random_boxes(rng, 1500, 500.0, (1.0, 20.0)),
            random_boxes(rng, 40, 500.0, (60.0, 300.0)),
            np.array([[0.0, 0.0, 40.0, 40.0], [40.0, 0.0, 80.0, 40.0]]),  # touching
        ]
    )
    groups = rng.integers(0, 3, len(boxes))
    i, j = np.triu_indices(len(boxes), 1)
    width = np.minimum(boxes[i, 2], boxes[j, 2]) - np.maximum(boxes[i, 0], boxes[j, 0])
    height = np.minimum(boxes[i, 3], boxes[j, 3]) - np.maximum(boxes[i, 1], boxes[j, 1])
    overlap = (width > 0) & (height > 0)
    # group ids too large to be part of the cell key are compared pair by pair instead
    for grouping in (None, groups, groups << 22):
        expected = overlap if grouping is None else overlap & (groups[i] == groups[j])
        want = set(zip(i[expected].tolist(), j[expected].tolist(), strict=True))
        for chunk in (7, 1 << 22):  # tiny chunks split cells across chunks
            got = [
                (min(a, b), max(a, b))
                for ci, cj in _candidate_pairs(boxes, grouping, chunk=chunk)
                for a, b in zip(ci.tolist(), cj.tolist(), strict=True)
            ]
            assert len(got) == len(set(got))
            assert set(got) == want


def random_polygons(rng: np.random.Generator, n: int, extent: float = 300.0) -> np.ndarray:
    """Rotated rectangles, circles and triangles of 5-40 units."""
    centres = rng.uniform(0, extent, (n, 2))
    geoms = []
    for k, (x, y) in enumerate(centres):
        size = rng.uniform(5, 40)
        kind = k % 3
        if kind == 0:
            rect = shapely.box(x - size / 2, y - size / 4, x + size / 2, y + size / 4)
            angle = rng.uniform(0, np.pi)
            c, s = np.cos(angle), np.sin(angle)
            coords = shapely.get_coordinates(rect) - (x, y)
            geoms.append(shapely.Polygon(coords @ np.array([[c, s], [-s, c]]) + (x, y)))
        elif kind == 1:
            geoms.append(shapely.Point(x, y).buffer(size / 2, quad_segs=8))
        else:
            pts = rng.uniform(-size / 2, size / 2, (3, 2)) + np.array([x, y])
            geoms.append(shapely.Polygon(pts))
    return np.array(geoms, dtype=object)


class TestNmsPolygons:
    @pytest.mark.parametrize("seed", [0, 1])
    def test_equals_brute_force(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        geoms = random_polygons(rng, 250)
        scores = rng.random(len(geoms))
        classes = rng.integers(0, 2, len(geoms))
        for ratio in (0.0, 0.1, 0.3, 0.6):
            expected = brute_force_polygon_nms(list(geoms), scores, ratio)
            assert nms_polygons(geoms, scores, ratio).tolist() == expected
            expected = brute_force_polygon_nms(list(geoms), scores, ratio, classes)
            assert nms_polygons(geoms, scores, ratio, classes).tolist() == expected

    def test_polygon_overlap_not_box_overlap(self) -> None:
        # Two triangles whose bounding boxes coincide but which share only an edge.
        a = shapely.Polygon([(0, 0), (10, 0), (0, 10)])
        b = shapely.Polygon([(10, 0), (10, 10), (0, 10)])
        geoms = np.array([a, b], dtype=object)
        assert nms_polygons(geoms, np.array([1.0, 0.5]), 0.0).tolist() == [0, 1]
        assert nms_boxes(np.array([[0, 0, 10, 10]] * 2, float), np.array([1, 0.5]), 0).tolist() == [
            0
        ]

    def test_missing_and_invalid_geometries(self) -> None:
        bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # invalid, area 50 valid
        geoms = np.array(
            [shapely.box(0, 0, 10, 10), None, shapely.Polygon(), bowtie, shapely.box(0, 0, 10, 9)],
            dtype=object,
        )
        scores = np.array([0.5, 0.9, 0.8, 0.7, 0.6])
        # The bowtie, repaired to two triangles of area 50, goes first; it overlaps the
        # 10 x 9 box by 49 (IoU 49/91 = 0.54) and the square by 50 (IoU 0.5), which the box
        # overlaps by IoU 0.9. Null and empty geometries are kept and never suppress.
        assert nms_polygons(geoms, scores, 0.5).tolist() == [0, 1, 2, 3]
        assert nms_polygons(geoms, scores, 0.49).tolist() == [1, 2, 3]
        assert nms_polygons(geoms, scores, 0.55).tolist() == [1, 2, 3, 4]


# --- the tool -------------------------------------------------------------------------------


def detections(rng: np.random.Generator, n_objects: int = 60) -> gpd.GeoDataFrame:
    """Detections as from tiles: 1-3 jittered copies per object, of two classes."""
    rows = []
    for k in range(n_objects):
        x, y = rng.uniform(0, 400, 2) + np.array([500_000, 3_000_000])
        w, h = rng.uniform(8, 20, 2)
        cls = int(rng.integers(1, 3))
        for copy in range(int(rng.integers(1, 4))):
            dx, dy = rng.normal(0, 1.5, 2)
            rows.append(
                {
                    "Class": "tree" if cls == 1 else "house",
                    "Classvalue": cls,
                    "Confidence": float(np.round(rng.uniform(10, 100), 6)),
                    "Tile": f"t{k}-{copy}",
                    "Count": k * 10 + copy,
                    "geometry": shapely.box(x + dx, y + dy, x + dx + w, y + dy + h),
                }
            )
    return gpd.GeoDataFrame(rows, crs=CRS)


@pytest.fixture
def frame() -> gpd.GeoDataFrame:
    return detections(np.random.default_rng(11))


def expected_rows(frame: gpd.GeoDataFrame, ratio: float, class_field: str | None) -> list[int]:
    classes = frame[class_field].tolist() if class_field else None
    return brute_force_polygon_nms(
        list(frame.geometry.values), frame["Confidence"].to_numpy(), ratio, classes
    )


def assert_same_features(got: gpd.GeoDataFrame, want: gpd.GeoDataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got.crs == want.crs
    for column in ("Class", "Classvalue", "Tile", "Count"):
        assert got[column].tolist() == want[column].tolist()
    np.testing.assert_allclose(got["Confidence"], want["Confidence"])
    assert shapely.equals_exact(got.geometry.values, want.geometry.values, tolerance=1e-6).all()


class TestTool:
    @pytest.mark.parametrize("suffix", [".gpkg", ".shp"])
    def test_end_to_end(self, tmp_path: Path, frame: gpd.GeoDataFrame, suffix: str) -> None:
        source = tmp_path / f"in{suffix}"
        frame.to_file(source, engine="pyogrio")
        read_back = gpd.read_file(source)
        cases = [
            (None, 0.0, "Classvalue"),  # ArcGIS's default class field
            ("Class", 0.3, "Class"),  # names as classes
            (None, 0.5, "Classvalue"),
        ]
        for k, (field, ratio, used) in enumerate(cases):
            out = tmp_path / f"out{k}{suffix}"
            path = non_maximum_suppression(source, "Confidence", out, field, ratio)
            assert path == out.absolute()
            got = gpd.read_file(out)
            rows = expected_rows(read_back, ratio, used)
            assert 0 < len(rows) < len(read_back)
            assert_same_features(got, read_back.iloc[rows].reset_index(drop=True))
        # without classes more features go
        out = tmp_path / f"one-class{suffix}"
        result = run_non_maximum_suppression(source, "confidence", out, max_overlap_ratio=0.0)
        assert result.class_field == "Classvalue"
        read_back = read_back.drop(columns=["Classvalue"])
        read_back.to_file(tmp_path / f"noclass{suffix}")
        result = run_non_maximum_suppression(
            tmp_path / f"noclass{suffix}", "Confidence", out, overwrite=True
        )
        assert result.class_field is None
        assert result.kept == len(expected_rows(read_back, 0.0, None))
        assert result.total == len(read_back)

    def test_exported_from_package(self) -> None:
        assert rasterlearn.non_maximum_suppression is non_maximum_suppression
        assert "non_maximum_suppression" in rasterlearn.__all__

    def test_empty_input_writes_empty_output(self, tmp_path: Path, frame) -> None:
        source = tmp_path / "empty.gpkg"
        frame.iloc[:0].to_file(source)
        out = non_maximum_suppression(source, "Confidence", tmp_path / "out.gpkg")
        got = gpd.read_file(out)
        assert len(got) == 0
        assert list(got.columns) == list(frame.columns)
        assert got.crs == frame.crs

    def test_null_empty_and_invalid_geometries(self, tmp_path: Path, frame) -> None:
        frame = frame.iloc[:4].copy()
        frame.geometry = [
            shapely.box(0, 0, 10, 10),
            None,
            shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)]),  # bowtie, IoU 0.5 when valid
            shapely.box(20, 0, 30, 10),
        ]
        frame["Confidence"] = [90.0, 80.0, 95.0, 70.0]
        source = tmp_path / "messy.gpkg"
        frame.to_file(source)
        with pytest.warns(UserWarning, match="1 features without a geometry"):
            result = run_non_maximum_suppression(
                source, "Confidence", tmp_path / "out.gpkg", max_overlap_ratio=0.4
            )
        assert (result.kept, result.total, result.dropped) == (2, 3, 1)
        got = gpd.read_file(result.path)
        assert got["Count"].tolist() == frame["Count"].iloc[[2, 3]].tolist()
        assert got.geometry.is_valid.all()
        assert got.geometry.area.tolist() == pytest.approx([50.0, 100.0])

    def test_bad_inputs(self, tmp_path: Path, frame: gpd.GeoDataFrame) -> None:
        source = tmp_path / "in.gpkg"
        frame.to_file(source)
        out = tmp_path / "out.gpkg"
        with pytest.raises(ParameterError, match="Classvalue, Confidence, Count"):
            non_maximum_suppression(source, "Score", out)
        with pytest.raises(ParameterError, match="not numeric"):
            non_maximum_suppression(source, "Tile", out)
        with pytest.raises(ParameterError, match="class value field 'Kind'"):
            non_maximum_suppression(source, "Confidence", out, "Kind")
        for ratio in (-0.1, 1.01, float("nan")):
            with pytest.raises(ParameterError, match="between 0 and 1"):
                non_maximum_suppression(source, "Confidence", out, max_overlap_ratio=ratio)
        with pytest.raises(InputError, match="does not exist"):
            non_maximum_suppression(tmp_path / "nope.gpkg", "Confidence", out)
        nulls = frame.copy()
        nulls.loc[3, "Confidence"] = None
        nulls.to_file(tmp_path / "nulls.gpkg")
        with pytest.raises(InputError, match=r"1 features .* no value"):
            non_maximum_suppression(tmp_path / "nulls.gpkg", "Confidence", out)
        assert not out.exists()
        non_maximum_suppression(source, "Confidence", out)
        with pytest.raises(OutputError, match="already exists"):
            non_maximum_suppression(source, "Confidence", out)


# --- the command line -----------------------------------------------------------------------


def run_cli(*args: str | Path) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


class TestCli:
    def test_nms(self, tmp_path: Path, frame: gpd.GeoDataFrame) -> None:
        source = tmp_path / "in.gpkg"
        frame.to_file(source)
        out = tmp_path / "out.shp"
        args = ["nms", source, out, "--confidence-score-field", "Confidence"]
        code, stdout, err = run_cli(
            *args, "--class-value-field", "Class", "--max-overlap-ratio", "0.3"
        )
        assert code == 0, err
        rows = expected_rows(frame, 0.3, "Class")
        assert (
            stdout.strip()
            == f"Kept {len(rows)} of {len(frame)} features (per class of 'Class'): {out.absolute()}"
        )
        assert len(gpd.read_file(out)) == len(rows)
        code, _, err = run_cli(*args)
        assert code == 2 and "already exists" in err
        code, stdout, err = run_cli(*args, "--overwrite")
        assert code == 0, err
        assert stdout.startswith(f"Kept {len(expected_rows(frame, 0.0, 'Classvalue'))} of ")

    def test_warns_about_features_without_geometry(self, tmp_path: Path, frame) -> None:
        frame = frame.copy()
        frame.loc[[0, 5], "geometry"] = None
        frame.to_file(tmp_path / "in.gpkg")
        code, stdout, err = run_cli("nms", tmp_path / "in.gpkg", tmp_path / "out.gpkg")
        assert code == 0, err
        assert (
            err == "warning: in.gpkg: 2 features without a geometry (null or empty) were left out\n"
        )
        rows = expected_rows(frame.drop(index=[0, 5]), 0.0, "Classvalue")
        assert stdout.startswith(f"Kept {len(rows)} of {len(frame) - 2} features")

    def test_errors_are_one_line_with_exit_code_2(self, tmp_path: Path, frame) -> None:
        source = tmp_path / "in.gpkg"
        frame.to_file(source)
        points = frame.copy()
        points.geometry = frame.geometry.centroid
        points.to_file(tmp_path / "points.gpkg")
        lines = frame.copy()
        lines.geometry = frame.geometry.boundary
        lines.to_file(tmp_path / "lines.shp")
        text = frame.copy()
        text["Confidence"] = text["Confidence"].astype(str)
        text.to_file(tmp_path / "text.gpkg")
        out = tmp_path / "out.gpkg"
        cases = [
            (
                [source, out, "--confidence-score-field", "Score"],
                "numeric fields: Classvalue, Confidence, Count",
            ),
            ([tmp_path / "text.gpkg", out], "'Confidence' of text.gpkg is not numeric"),
            ([source, out, "--class-value-field", "Kind"], "class value field 'Kind' is not in"),
            ([source, out, "--max-overlap-ratio", "1.5"], "between 0 and 1"),
            ([source, out, "--max-overlap-ratio", "-0.5"], "between 0 and 1"),
            ([tmp_path / "points.gpkg", out], "holds Point features"),
            ([tmp_path / "lines.shp", out], "holds LineString features"),
            ([tmp_path / "missing.gpkg", out], "does not exist"),
            ([source, tmp_path / "out.txt"], "no vector format extension"),
        ]
        for args, message in cases:
            code, stdout, err = run_cli("nms", *args)
            assert code == 2, (args, err)
            assert stdout == ""
            assert err.startswith("error: ") and err.count("\n") == 1, err
            assert message in err, err
            assert (
                sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("out", ".out")))
                == []
            )
