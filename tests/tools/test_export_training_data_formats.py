"""Every metadata format of export_training_data, checked against independent computations.

The expected chips, boxes, masks and statistics are computed here from the source raster and
polygons with rasterio, shapely, numpy and geopandas only, never with rasterlearn's own code.
Datasets: the synthetic RGB scene, the NEON sample and the 5-band uint16 scene with a nodata
border. Tiles are small and strides chosen so that the last tile is flush with the raster edge
(stride does not reach it) on at least one axis of every dataset.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

from rasterlearn import export_training_data, read_export_folder

VOC, KITTI, CLASSIFIED, RCNN = (
    "PASCAL_VOC_rectangles",
    "KITTI_rectangles",
    "Classified_Tiles",
    "RCNN_Masks",
)
LABELED, MULTI, IMAGENET, EXPORT = (
    "Labeled_Tiles",
    "MultiLabeled_Tiles",
    "Imagenet",
    "Export_Tiles",
)
FORMATS = (VOC, KITTI, CLASSIFIED, RCNN, LABELED, MULTI, IMAGENET, EXPORT)
GRID_FORMATS = (VOC, KITTI, CLASSIFIED, RCNN, MULTI, EXPORT)
PER_FEATURE = (LABELED, IMAGENET)
DATASETS = ("scene", "neon", "multiband")
ACC_STATS = "esri_accumulated_stats.json"
EMD = "esri_model_definition.emd"
BOX_TOL = 0.01  # two-decimal coordinates: at most 0.005 px of rounding
# A polygon sharing an edge with a chip leaves a float-noise sliver (~1e-9 px) inside it: that is
# no overlap. Real overlaps in these datasets are at least 0.06 px wide.
EDGE_EPS = 1e-6


@dataclass
class Source:
    """A dataset: raster + polygons, read once with rasterio/geopandas, and its tiling."""

    name: str
    raster: Path
    polygons: Path
    tile: tuple[int, int]  # (x, y)
    stride: tuple[int, int]  # (x, y)
    data: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        with rasterio.open(self.raster) as ds:
            self.data = ds.read()
            self.transform = ds.transform
            self.crs = ds.crs
            self.width, self.height, self.count = ds.width, ds.height, ds.count
            self.dtype = ds.dtypes[0]
            self.nodata = ds.nodata  # a pixel is nodata when all its bands equal it
            self.band_names = [
                desc or ci.name for desc, ci in zip(ds.descriptions, ds.colorinterp, strict=True)
            ]
        frame = gpd.read_file(self.polygons, engine="pyogrio").to_crs(self.crs)
        self.geoms = list(frame.geometry)
        self.values = [int(v) for v in frame["ClassValue"]]
        self.names = dict(zip(self.values, frame["ClassName"].astype(str), strict=True))
        self.classes = [(v, self.names[v]) for v in sorted(self.names)]
        footprint = shapely.box(*self.bounds())
        self.in_raster = [i for i, g in enumerate(self.geoms) if g.intersects(footprint)]
        self.geom_bounds = np.array([g.bounds for g in self.geoms])  # map units
        self.selection_cache: dict = {}

    def near(self, transform: Affine, width: int, height: int) -> list[int]:
        """Features whose bounding box meets the grid's (a cheap pre-filter)."""
        corners = [transform @ (c, r) for c in (0, width) for r in (0, height)]
        xs, ys = zip(*corners, strict=True)
        b = self.geom_bounds
        hit = (
            (b[:, 0] <= max(xs))
            & (b[:, 2] >= min(xs))
            & (b[:, 1] <= max(ys))
            & (b[:, 3] >= min(ys))
        )
        return np.nonzero(hit)[0].tolist()

    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = zip(
            *(self.transform @ (c, r) for c in (0, self.width) for r in (0, self.height)),
            strict=True,
        )
        return min(xs), min(ys), max(xs), max(ys)

    def fill(self) -> float:
        return self.nodata if self.nodata is not None else 0

    def window(self, col: int, row: int, width: int, height: int) -> np.ndarray:
        """The source pixels of a window, read with rasterio (boundless where it sticks out)."""
        inside = col >= 0 and row >= 0 and col + width <= self.width and row + height <= self.height
        with rasterio.open(self.raster) as ds:
            return ds.read(
                window=Window(col, row, width, height),
                boundless=not inside,
                fill_value=self.fill(),
            )

    def valid(self, col: int, row: int, width: int, height: int) -> np.ndarray:
        """Pixels of a window that lie on the raster and are not nodata in every band."""
        valid = np.zeros((height, width), dtype=bool)
        r0, r1 = max(row, 0), min(row + height, self.height)
        c0, c1 = max(col, 0), min(col + width, self.width)
        if r1 > r0 and c1 > c0:
            block = self.data[:, r0:r1, c0:c1]
            ok = np.ones(block.shape[1:], bool)
            if self.nodata is not None:
                ok = ~np.all(block == self.nodata, axis=0)
            valid[r0 - row : r1 - row, c0 - col : c1 - col] = ok
        return valid

    def grid(self, tile: tuple[int, int] | None = None, stride: tuple[int, int] | None = None):
        """Every (col, row) tile offset: 0, stride, 2*stride... plus a tile flush with the edge."""

        def starts(length: int, tile: int, stride: int) -> list[int]:
            out = list(range(0, length - tile + 1, stride))
            if out[-1] + tile < length:
                out.append(length - tile)
            return out

        (tx, ty), (sx, sy) = tile or self.tile, stride or self.stride
        return [(c, r) for r in starts(self.height, ty, sy) for c in starts(self.width, tx, sx)]


@dataclass
class Chip:
    """One line of map.txt with the chip's grid read from the chip file."""

    stem: str
    image: Path
    labels: list[Path]
    transform: Affine
    width: int
    height: int
    col: int
    row: int

    def objects(self, src: Source) -> list[tuple[int, int, tuple[float, ...]]]:
        """(feature, class value, clipped pixel bounds) of polygons with area inside the chip."""
        return objects_in(src, self.transform, self.width, self.height)

    def mask(self, geoms: list) -> np.ndarray:
        """Pixels whose centre lies in any of the polygons (rasterio's rasterize)."""
        if not geoms:
            return np.zeros((self.height, self.width), bool)
        shapes = [(g, 1) for g in geoms]
        out_shape = (self.height, self.width)
        return rasterize(shapes, out_shape=out_shape, transform=self.transform) > 0


def objects_in(
    src: Source, transform: Affine, width: int, height: int
) -> list[tuple[int, int, tuple[float, ...]]]:
    """(feature, class value, clipped pixel bounds) of polygons with area inside a pixel grid."""
    out = []
    for i in src.near(transform, width, height):
        geom, value = src.geoms[i], src.values[i]
        part = shapely.clip_by_rect(to_pixels(geom, transform), 0, 0, width, height)
        if part.is_empty or part.area <= 0:
            continue
        x0, y0, x1, y1 = part.bounds
        if min(x1 - x0, y1 - y0) > EDGE_EPS:
            out.append((i, value, part.bounds))
    return out


def to_pixels(geom, transform: Affine):
    inv = ~transform
    return shapely.affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])


def token_path(folder: Path, token: str) -> Path:
    return folder.joinpath(*token.split("\\"))


def map_lines(folder: Path) -> list[str]:
    raw = (folder / "map.txt").read_bytes().decode("ascii")
    assert raw.endswith("\n")
    return [line.removesuffix("\r") for line in raw[:-1].split("\n")]


def read_chips(src: Source, folder: Path) -> list[Chip]:
    chips = []
    for line in map_lines(folder):
        tokens = line[:-1].split("  ")
        image = token_path(folder, tokens[0])
        with rasterio.open(image) as ds:
            t, w, h = ds.transform, ds.width, ds.height
        col, row = ~src.transform @ (t.c, t.f)
        chips.append(
            Chip(
                image.stem,
                image,
                [token_path(folder, tok) for tok in tokens[1:]],
                t,
                w,
                h,
                round(col),
                round(row),
            )
        )
    assert chips, f"{folder} holds no chips"
    return chips


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def voc(path: Path) -> tuple[ET.Element, list[tuple[str, tuple[float, ...]]]]:
    root = ET.parse(path).getroot()
    objects = [
        (
            obj.findtext("name"),
            tuple(float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
        )
        for obj in root.findall("object")
    ]
    return root, objects


def kitti(path: Path) -> list[tuple[str, tuple[float, ...]]]:
    rows = [line.split(" ") for line in path.read_text().splitlines()]
    return [(r[0], tuple(float(v) for v in r[4:8])) for r in rows]


def assert_same_boxes(actual, expected, where: str) -> None:
    """Multisets of (class text, box) equal within BOX_TOL px."""
    left = list(actual)
    for value, box in expected:
        match = next(
            (
                a
                for a in left
                if a[0] == str(value) and np.allclose(a[1], box, rtol=0, atol=BOX_TOL)
            ),
            None,
        )
        assert match is not None, f"{where}: no label for class {value} box {box}; got {left}"
        left.remove(match)
    assert not left, f"{where}: labels without a polygon: {left}"


def assert_close(got, expected, where: str) -> None:
    """Nested lists/dicts of numbers equal (floats approximately)."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), where
        for key in expected:
            assert_close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_close(g, e, f"{where}[{i}]")
    else:
        assert got == pytest.approx(expected, rel=1e-9), where


def summary(values: list[float]) -> dict:
    if not values:
        return {"Min": 0, "Max": 0, "Mean": 0, "Sum": 0, "Count": 0}
    return {
        "Min": min(values),
        "Max": max(values),
        "Mean": sum(values) / len(values),
        "Sum": sum(values),
        "Count": len(values),
    }


@pytest.fixture(scope="module")
def sources(scene, neon, scene_multiband) -> dict[str, Source]:
    return {
        # 512 x 512: x tiles 0..384 reach the edge, y tiles 0..384 plus a flush 416.
        "scene": Source("scene", scene.raster_path, scene.polygons_path, (128, 96), (96, 64)),
        # 400 x 400: 0, 64, ..., 256 plus a flush 272 on both axes; no nodata value.
        "neon": Source("neon", neon[0], neon[1], (128, 128), (64, 64)),
        # 384 x 320, 5 bands: x 0, 96, 192 + 256, y 0, 128 + 192.
        "multiband": Source(
            "multiband",
            scene_multiband.raster_path,
            scene_multiband.polygons_path,
            (128, 128),
            (96, 128),
        ),
    }


@pytest.fixture(scope="module")
def export(sources, tmp_path_factory):
    """export(dataset, format, **kwargs) -> (Source, folder), each export written once."""
    cache: dict = {}

    def run(dataset: str, fmt: str, **kwargs) -> tuple[Source, Path]:
        key = (dataset, fmt, tuple(sorted(kwargs.items())))
        if key not in cache:
            src = sources[dataset]
            out = tmp_path_factory.mktemp(f"{dataset}_{fmt}") / "export"
            params = {
                "metadata_format": fmt,
                "tile_size_x": src.tile[0],
                "tile_size_y": src.tile[1],
                "stride_x": src.stride[0],
                "stride_y": src.stride[1],
                "num_workers": 2,
                "progress": False,
                **kwargs,
            }
            class_data = None if fmt == EXPORT else src.polygons
            export_training_data(src.raster, out, class_data, **params)
            cache[key] = out
        return sources[dataset], cache[key]

    return run


def expected_feature_stats(src: Source, fmt: str, chips: list[Chip]) -> dict:
    """Per-chip class contents computed independently, summarised as ArcGIS's FeatureStats."""
    per_chip: list[Counter] = []
    for k, chip in enumerate(chips):
        if fmt in PER_FEATURE:
            per_chip.append(Counter([src.values[src.in_raster[k]]]))
        elif fmt == MULTI:
            per_chip.append(Counter({v for _, v, _ in chip.objects(src)}))
        elif fmt == RCNN:  # the instances in the masks: a feature with no pixel is none
            per_chip.append(
                Counter(
                    v for g, v in zip(src.geoms, src.values, strict=True) if chip.mask([g]).any()
                )
            )
        else:
            per_chip.append(Counter(v for _, v, _ in chip.objects(src)))
    values = [v for v, _ in src.classes]
    return {
        "NumClasses": len(values),
        "NumImagesTotal": len(chips),
        "NumImagesPerClass": [sum(1 for c in per_chip if c[v]) for v in values],
        "NumFeaturesPerClass": [sum(c[v] for c in per_chip) for v in values],
        "NumFeaturesTotal": sum(sum(c.values()) for c in per_chip),
        "NumFeaturesPerImage": summary([sum(c.values()) for c in per_chip]),
    }


def expected_pixel_stats(src: Source, chips: list[Chip]) -> dict:
    values = [v for v, _ in src.classes]
    counts = []
    for chip in chips:
        label = rasterize(
            list(zip(src.geoms, src.values, strict=True)),
            out_shape=(chip.height, chip.width),
            transform=chip.transform,
            dtype="uint16",
        )
        counts.append({v: int((label == v).sum()) for v in values})
    return {
        "NumClasses": len(values),
        "NumImagesTotal": len(chips),
        "NumImagesPerClass": [sum(1 for c in counts if c[v]) for v in values],
        "NumPixelsPerClass": [sum(c[v] for c in counts) for v in values],
        "NumClassesPerImage": summary([sum(1 for v in values if c[v]) for c in counts]),
        "PixelsPerClass": [summary([c[v] for c in counts if c[v]]) for v in values],
    }


# ---------------------------------------------------------------------------------------------
# Layout: folders, chip names, map.txt, stats.txt


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_folder_layout_and_map_txt(export, dataset, fmt):
    src, folder = export(dataset, fmt)
    entries = {p.name for p in folder.iterdir()}
    assert {"images", "map.txt", "stats.txt", ACC_STATS, EMD} <= entries
    assert ("labels" in entries) == (fmt not in (IMAGENET, EXPORT))
    lines = map_lines(folder)
    assert lines
    stems, images, labels = [], set(), set()
    class_dirs = {name for _, name in src.classes}
    for line in lines:
        # two spaces between columns, one trailing space, backslash paths
        assert line.endswith(" ") and not line.endswith("  "), repr(line)
        tokens = line[:-1].split("  ")
        assert all(t and " " not in t and "/" not in t for t in tokens), repr(line)
        sub = r"(\d+)\\" if fmt == IMAGENET else ""
        m = re.fullmatch(rf"images\\{sub}(\d{{9}})\.tif", tokens[0])
        assert m, repr(line)
        stem = m.group(m.lastindex)
        stems.append(stem)
        rest = tokens[1:]
        if fmt in (VOC, LABELED, MULTI):
            assert rest == [f"labels\\{stem}.xml"]
        elif fmt == KITTI:
            assert rest == [f"labels\\{stem}.txt"]
        elif fmt == CLASSIFIED:
            assert rest == [f"labels\\{stem}.tif"]
        elif fmt == RCNN:
            assert rest, f"RCNN chip {stem} without any mask"
            for tok in rest:
                m = re.fullmatch(rf"labels\\([^\\]+)\\{stem}\.tif", tok)
                assert m and m.group(1) in class_dirs, tok
        else:
            assert rest == []
        images.add(token_path(folder, tokens[0]))
        labels.update(token_path(folder, t) for t in rest)
    assert stems == [f"{i:09d}" for i in range(len(lines))]
    assert {p for p in (folder / "images").rglob("*.tif")} == images
    assert all(p.is_file() for p in images | labels)
    if (folder / "labels").exists():
        written = {
            p
            for p in (folder / "labels").rglob("*")
            if p.suffix in (".xml", ".txt", ".tif") and not p.name.endswith(".aux.xml")
        }
        assert written == labels
    first = (folder / "stats.txt").read_text().splitlines()[0]
    assert first == f"images = {len(lines)} *{src.count}*{src.tile[1]}*{src.tile[0]}"


# ---------------------------------------------------------------------------------------------
# esri_accumulated_stats.json and the training emd


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_accumulated_stats_and_emd(export, dataset, fmt):
    src, folder = export(dataset, fmt)
    chips = read_chips(src, folder)
    stats = load_json(folder / ACC_STATS)
    (tx, ty) = src.tile
    assert stats["MetaDataMode"] == fmt
    assert stats["NumBands"] == src.count
    assert (stats["TileSizeX"], stats["TileSizeY"]) == (tx, ty)
    assert stats["NumTiles"] == len(chips)
    assert len(stats["BandStatsState"]) == src.count
    classes = [(c["ClassValue"], c["ClassName"]) for c in stats["Classes"]]
    assert stats["NumClasses"] == len(classes)
    if fmt != EXPORT:
        assert classes == src.classes
    if fmt == CLASSIFIED:
        assert "FeatureStats" not in stats
        expected = expected_pixel_stats(src, chips)
        got = stats["ClassPixelStats"]
        for key, value in expected.items():
            assert_close(got[key], value, key)
    elif fmt != EXPORT:
        got = stats["FeatureStats"]
        expected = expected_feature_stats(src, fmt, chips)
        keys = ["NumClasses", "NumImagesTotal", "NumImagesPerClass"]
        if fmt != MULTI:  # a multi-label chip holds classes, not features
            keys += ["NumFeaturesPerClass", "NumFeaturesTotal", "NumFeaturesPerImage"]
        for key in keys:
            assert_close(got[key], expected[key], key)

    emd = load_json(folder / EMD)
    assert emd["MetaDataMode"] == fmt
    assert (emd["ImageHeight"], emd["ImageWidth"]) == (ty, tx)
    assert emd["ImageSpaceUsed"] == "MAP_SPACE"
    if fmt != EXPORT:
        assert [(c["Value"], c["Name"]) for c in emd["Classes"]] == src.classes
    for c in emd["Classes"]:
        assert len(c["Color"]) == 3 and all(isinstance(x, int) for x in c["Color"])
    props = emd["InputRastersProps"]
    assert [n.lower() for n in props["BandNames"]] == [n.lower() for n in src.band_names]
    assert len(emd["AllTilesStats"]) == src.count
    for key in ("MinCellSize", "MaxCellSize"):
        cell = emd[key]
        assert (cell["x"], cell["y"]) == pytest.approx((src.transform.a, -src.transform.e))
        assert cell["spatialReference"]["wkid"] == src.crs.to_epsg() == 32617
    if fmt in PER_FEATURE:
        assert emd["CropTileMode"] == "Fixed_Size"


# ---------------------------------------------------------------------------------------------
# Georeferencing: chips are whole-pixel windows of the source


def assert_is_window_of_source(src: Source, ds, chip: Chip) -> None:
    t = ds.transform
    assert (t.a, t.b, t.d, t.e) == pytest.approx(
        (src.transform.a, src.transform.b, src.transform.d, src.transform.e), abs=1e-12
    )
    col, row = ~src.transform @ (t.c, t.f)
    assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6, (col, row)
    assert ds.crs == src.crs


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_chips_are_source_windows(export, dataset, fmt):
    src, folder = export(dataset, fmt)
    chips = read_chips(src, folder)
    for chip in chips:
        with rasterio.open(chip.image) as ds:
            assert_is_window_of_source(src, ds, chip)
            assert (ds.count, ds.dtypes[0], ds.nodata) == (src.count, src.dtype, src.nodata)
            data = ds.read()
        if fmt not in PER_FEATURE:
            assert (chip.width, chip.height) == src.tile
            assert (chip.col, chip.row) in set(src.grid())
        expected = src.window(chip.col, chip.row, chip.width, chip.height)
        np.testing.assert_array_equal(data, expected, err_msg=str(chip.image))
        for label in chip.labels:
            if label.suffix == ".tif":
                with rasterio.open(label) as ds:
                    assert ds.transform == chip.transform
                    assert (ds.width, ds.height, ds.crs) == (chip.width, chip.height, src.crs)


def jpeg_error(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference of two pixel arrays."""
    return float(np.sqrt(np.mean((a.astype(float) - b.astype(float)) ** 2)))


@pytest.mark.parametrize("chip_format", ["PNG", "JPEG"])
@pytest.mark.parametrize("dataset", ["scene", "neon"])
def test_png_and_jpeg_chips_carry_world_files(export, dataset, chip_format):
    src, folder = export(dataset, CLASSIFIED, image_chip_format=chip_format)
    _, tiff_folder = export(dataset, CLASSIFIED)
    ext = {"PNG": ".png", "JPEG": ".jpg"}[chip_format]
    lines = map_lines(folder)
    tiff_chips = read_chips(src, tiff_folder)
    assert len(lines) == len(tiff_chips)
    for line, tiff_chip in zip(lines, tiff_chips, strict=True):
        image_tok, label_tok = line[:-1].split("  ")
        assert image_tok == f"images\\{tiff_chip.stem}{ext}"
        assert label_tok == f"labels\\{tiff_chip.stem}.png"  # class rasters stay lossless
        for path in (token_path(folder, image_tok), token_path(folder, label_tok)):
            world = {".png": ".pgw", ".jpg": ".jgw"}[path.suffix]
            a, d, b, e, x, y = (float(v) for v in path.with_suffix(world).read_text().split())
            from_world = Affine(a, b, x - a / 2 - b / 2, d, e, y - d / 2 - e / 2)
            assert from_world.almost_equals(tiff_chip.transform, precision=1e-6)
            with rasterio.open(path) as ds:
                assert ds.transform.almost_equals(tiff_chip.transform, precision=1e-6)
                assert_is_window_of_source(src, ds, tiff_chip)
                data = ds.read()
            if path.parent.name == "labels":
                expected = rasterize(
                    list(zip(src.geoms, src.values, strict=True)),
                    out_shape=(tiff_chip.height, tiff_chip.width),
                    transform=tiff_chip.transform,
                    dtype="uint8",
                )
                np.testing.assert_array_equal(data[0], expected)
                continue
            window = src.window(tiff_chip.col, tiff_chip.row, tiff_chip.width, tiff_chip.height)
            if chip_format == "PNG":
                np.testing.assert_array_equal(data, window)
            else:  # lossy: close to its window, and closer than to the window one pixel off
                error = jpeg_error(data, window)
                assert error < 12, error
                for dc, dr in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    col, row = tiff_chip.col + dc, tiff_chip.row + dr
                    shifted = src.window(col, row, tiff_chip.width, tiff_chip.height)
                    assert error < jpeg_error(data, shifted), (path, dc, dr)


# ---------------------------------------------------------------------------------------------
# Rectangles: PASCAL VOC and KITTI


@pytest.mark.parametrize("all_tiles", [False, True])
@pytest.mark.parametrize("fmt", [VOC, KITTI])
@pytest.mark.parametrize("dataset", DATASETS)
def test_rectangle_labels_are_projected_polygon_bounds(export, dataset, fmt, all_tiles):
    src, folder = export(dataset, fmt, output_nofeature_tiles=all_tiles)
    chips = read_chips(src, folder)
    for chip in chips:
        (label,) = chip.labels
        expected = [(v, box) for _, v, box in chip.objects(src)]
        if fmt == VOC:
            root, objects = voc(label)
            assert root.tag == "annotation"
            assert [c.tag for c in root] == ["filename", "source", "size"] + ["object"] * len(
                objects
            )
            assert root.findtext("filename") == chip.image.name
            assert [c.tag for c in root.find("source")] == ["annotation"]
            assert root.findtext("source/annotation") == "ArcGIS Pro 2.1"
            assert [(c.tag, c.text) for c in root.find("size")] == [
                ("width", str(chip.width)),
                ("height", str(chip.height)),
                ("depth", str(src.count)),
            ]
            for obj in root.findall("object"):
                assert [c.tag for c in obj] == ["name", "bndbox"]
                assert re.fullmatch(r"\d+", obj.findtext("name"))
                coords = obj.find("bndbox")
                assert [c.tag for c in coords] == ["xmin", "ymin", "xmax", "ymax"]
                assert all(re.fullmatch(r"-?\d+\.\d\d", c.text) for c in coords)
        else:
            rows = [line.split(" ") for line in label.read_text().splitlines()]
            assert all(len(r) == 15 for r in rows), rows
            assert all(float(v) == 0 for r in rows for v in r[1:4] + r[8:])
            objects = kitti(label)
        assert_same_boxes(objects, expected, str(label))
        if not all_tiles:
            assert expected, f"{chip.image} holds no feature"


# ---------------------------------------------------------------------------------------------
# Which grid tiles become chips


# Smaller tiles than elsewhere, so that some tiles hold no feature, with last tiles flush with
# the edge: scene 512 px: x 0..432 + 448, y 0..440 + 464 (one tile there holds only a 0.06 px
# sliver of a building: an object, but no labelled pixel); multiband 384 x 320 px: x 0..320,
# y 0..240 + 272; NEON (densely covered with trees) 400 px: x 0..360, y 0..330 + 360.
SELECTION_TILING = {
    "scene": ((64, 48), (48, 40)),
    "neon": ((40, 40), (40, 33)),
    "multiband": ((64, 48), (64, 48)),
}
# ALL_TILES for one format of each label kind (Export_Tiles ignores the flag).
SELECTION_CASES = [(fmt, False) for fmt in GRID_FORMATS] + [
    (fmt, True) for fmt in (VOC, CLASSIFIED, RCNN, MULTI)
]


@pytest.mark.parametrize(("fmt", "all_tiles"), SELECTION_CASES)
@pytest.mark.parametrize("dataset", DATASETS)
def test_chips_are_the_grid_tiles_with_features(export, dataset, fmt, all_tiles):
    (tx, ty), (sx, sy) = SELECTION_TILING[dataset]
    src, folder = export(
        dataset,
        fmt,
        output_nofeature_tiles=all_tiles,
        tile_size_x=tx,
        tile_size_y=ty,
        stride_x=sx,
        stride_y=sy,
    )
    offsets = [(c.col, c.row) for c in read_chips(src, folder)]
    grid = src.grid((tx, ty), (sx, sy))
    pixels = fmt in (CLASSIFIED, RCNN)  # pixel labels: a feature must cover a pixel centre
    key = ((tx, ty), (sx, sy), pixels)
    if key not in src.selection_cache:
        with_features = []
        for col, row in grid:
            t = src.transform @ Affine.translation(col, row)
            chip = Chip("", Path(), [], t, tx, ty, col, row)
            near = [src.geoms[i] for i in src.near(t, tx, ty)]
            if chip.mask(near).any() if pixels else chip.objects(src):
                with_features.append((col, row))
        src.selection_cache[key] = with_features
    with_features = src.selection_cache[key]
    assert 0 < len(with_features) < len(grid)
    expected = grid if all_tiles or fmt == EXPORT else with_features
    assert len(offsets) == len(set(offsets))
    assert sorted(offsets) == sorted(expected)


@pytest.mark.parametrize("fmt", [EXPORT, VOC])
@pytest.mark.parametrize("max_fraction", [0.0, 0.2])
def test_max_nodata_fraction_skips_chips(export, fmt, max_fraction):
    src, folder = export("multiband", fmt, max_nodata_fraction=max_fraction)
    offsets = sorted((c.col, c.row) for c in read_chips(src, folder))
    _, every = export("multiband", fmt)
    unfiltered = {(c.col, c.row) for c in read_chips(src, every)}
    (tx, ty) = src.tile
    expected = sorted(
        (col, row)
        for col, row in unfiltered
        if 1 - src.valid(col, row, tx, ty).mean() <= max_fraction
    )
    assert offsets == expected
    assert len(expected) < len(unfiltered)  # the border really removes chips


# ---------------------------------------------------------------------------------------------
# Pixel labels: Classified_Tiles and RCNN_Masks


@pytest.mark.parametrize("dataset", DATASETS)
def test_classified_tiles_equal_rasterized_polygons(export, dataset):
    src, folder = export(dataset, CLASSIFIED)
    for chip in read_chips(src, folder):
        with rasterio.open(chip.labels[0]) as ds:
            assert ds.count == 1 and ds.dtypes[0] == "uint8"
            label = ds.read(1)
        expected = rasterize(
            list(zip(src.geoms, src.values, strict=True)),
            out_shape=(chip.height, chip.width),
            transform=chip.transform,
            fill=0,
            dtype="uint8",
        )
        np.testing.assert_array_equal(label, expected, err_msg=str(chip.labels[0]))


@pytest.mark.parametrize("dataset", DATASETS)
def test_rcnn_masks_hold_one_instance_per_polygon(export, dataset):
    src, folder = export(dataset, RCNN)
    assert {p.name for p in (folder / "labels").iterdir()} <= {n for _, n in src.classes}
    for chip in read_chips(src, folder):
        for value, name in src.classes:
            polys = [g for g, v in zip(src.geoms, src.values, strict=True) if v == value]
            masks = [m for m in (chip.mask([g]) for g in polys) if m.any()]
            path = folder / "labels" / name / f"{chip.stem}.tif"
            assert path.exists() == bool(masks), path
            assert (path in chip.labels) == bool(masks)
            if not masks:
                continue
            with rasterio.open(path) as ds:
                ids = ds.read()
            np.testing.assert_array_equal((ids > 0).any(axis=0), chip.mask(polys))
            distinct = np.unique(ids[ids > 0])
            assert len(distinct) == len(masks), path
            got = sorted((ids == i).any(axis=0).tobytes() for i in distinct)
            assert got == sorted(m.tobytes() for m in masks), path


# ---------------------------------------------------------------------------------------------
# Band statistics


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_band_statistics_match_chip_pixels(export, dataset, fmt):
    src, folder = export(dataset, fmt)
    pixels = []
    for chip in read_chips(src, folder):
        with rasterio.open(chip.image) as ds:
            data = ds.read()
        valid = src.valid(chip.col, chip.row, chip.width, chip.height)
        pixels.append(data[:, valid])
    values = np.concatenate(pixels, axis=1).astype(np.float64)
    states = load_json(folder / ACC_STATS)["BandStatsState"]
    tiles = load_json(folder / EMD)["AllTilesStats"]
    assert len(states) == len(tiles) == src.count
    for band, state, tile in zip(values, states, tiles, strict=True):
        mean = band.mean()
        assert state["Num"] == band.size
        assert state["M1"] == pytest.approx(mean, rel=1e-9)
        assert state["M2"] == pytest.approx(((band - mean) ** 2).sum(), rel=1e-6)
        assert (state["Min"], state["Max"]) == (band.min(), band.max())
        assert tile["Mean"] == pytest.approx(mean, rel=1e-9)
        assert tile["StdDev"] == pytest.approx(band.std(), rel=1e-6)
        assert (tile["Min"], tile["Max"]) == (band.min(), band.max())


# ---------------------------------------------------------------------------------------------
# Tile classification formats


def feature_pixel_bounds(src: Source, i: int) -> tuple[float, ...]:
    return to_pixels(src.geoms[i], src.transform).bounds


@pytest.mark.parametrize("crop_mode", ["FIXED_SIZE", "BOUNDING_BOX"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_labeled_tiles_one_chip_per_feature(export, dataset, crop_mode):
    src, folder = export(dataset, LABELED, crop_mode=crop_mode)
    chips = read_chips(src, folder)
    assert len(chips) == len(src.in_raster)
    for chip, i in zip(chips, src.in_raster, strict=True):
        x0, y0, x1, y1 = feature_pixel_bounds(src, i)
        if crop_mode == "FIXED_SIZE":
            assert (chip.width, chip.height) == src.tile
            assert abs(chip.col + chip.width / 2 - (x0 + x1) / 2) <= 1
            assert abs(chip.row + chip.height / 2 - (y0 + y1) / 2) <= 1
        else:  # the feature's bounding box, rounded outwards to whole pixels
            eps = 1e-6
            c0, r0 = math.floor(x0 + eps), math.floor(y0 + eps)
            c1, r1 = math.ceil(x1 - eps), math.ceil(y1 - eps)
            assert (chip.col, chip.row, chip.width, chip.height) == (c0, r0, c1 - c0, r1 - r0), i
        root, objects = voc(chip.labels[0])
        assert root.findtext("size/depth") == str(src.count)
        part = shapely.clip_by_rect(
            to_pixels(src.geoms[i], chip.transform), 0, 0, chip.width, chip.height
        )
        assert_same_boxes(objects, [(src.values[i], part.bounds)], str(chip.labels[0]))
    emd = load_json(folder / EMD)
    assert (
        emd["CropTileMode"]
        == {"FIXED_SIZE": "Fixed_Size", "BOUNDING_BOX": "Variable_Size"}[crop_mode]
    )
    assert emd["BlackenAroundFeature"] is False


@pytest.mark.parametrize("dataset", DATASETS)
def test_blacken_around_feature_zeroes_outside_pixels(export, dataset):
    src, folder = export(dataset, LABELED, blacken_around_feature=True)
    chips = read_chips(src, folder)
    assert len(chips) == len(src.in_raster)
    for chip, i in zip(chips, src.in_raster, strict=True):
        with rasterio.open(chip.image) as ds:
            data = ds.read()
        inside = chip.mask([src.geoms[i]])
        assert inside.any()
        assert not data[:, ~inside].any(), chip.image
        window = src.window(chip.col, chip.row, chip.width, chip.height)
        np.testing.assert_array_equal(data[:, inside], window[:, inside])
    assert load_json(folder / EMD)["BlackenAroundFeature"] is True


@pytest.mark.parametrize("dataset", DATASETS)
def test_multilabeled_tiles_list_the_classes_in_each_chip(export, dataset):
    src, folder = export(dataset, MULTI)
    for chip in read_chips(src, folder):
        root, objects = voc(chip.labels[0])
        assert root.findtext("size/depth") == str(src.count)
        assert len(objects) == 1, chip.labels[0]
        names = objects[0][0].split(",")
        assert len(names) == len(set(names))
        assert {int(n) for n in names} == {v for _, v, _ in chip.objects(src)}


@pytest.mark.parametrize("dataset", DATASETS)
def test_imagenet_class_folders(export, dataset):
    src, folder = export(dataset, IMAGENET)
    chips = read_chips(src, folder)
    folders = Counter(int(c.image.parent.name) for c in chips)
    assert folders == Counter(src.values[i] for i in src.in_raster)
    assert {p.name for p in (folder / "images").iterdir()} == {str(v) for v in folders}
    for chip, i in zip(chips, src.in_raster, strict=True):
        assert chip.image.parent.name == str(src.values[i])
        x0, y0, x1, y1 = feature_pixel_bounds(src, i)
        assert (chip.width, chip.height) == src.tile
        assert abs(chip.col + chip.width / 2 - (x0 + x1) / 2) <= 1
        assert abs(chip.row + chip.height / 2 - (y0 + y1) / 2) <= 1


# ---------------------------------------------------------------------------------------------
# Reading back


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_read_export_folder_reads_back_the_labels(export, dataset, fmt):
    src, folder = export(dataset, fmt)
    chips = read_chips(src, folder)
    back = read_export_folder(folder)
    assert back.metadata_format == fmt
    assert (back.dropped_chips, back.dropped_objects) == (0, 0)
    if fmt != EXPORT:
        assert [(c.value, c.name) for c in back.classes] == src.classes
    assert (back.band_count, back.tile_width, back.tile_height) == (src.count, *src.tile)
    states = load_json(folder / ACC_STATS)["BandStatsState"]
    assert [(s.num, s.m1, s.m2) for s in back.band_stats] == [
        (s["Num"], s["M1"], s["M2"]) for s in states
    ]
    records = {r.image: r for r in back.chips}
    assert sorted(records) == sorted(c.image for c in chips)
    for chip in chips:
        record = records[chip.image]
        objects = [(str(o.class_value), o.box) for o in record.objects]
        if fmt in (VOC, LABELED):
            assert objects == voc(chip.labels[0])[1]
        elif fmt == KITTI:
            assert objects == kitti(chip.labels[0])
        else:
            assert objects == []
        if fmt == LABELED:
            assert record.tile_classes == (int(voc(chip.labels[0])[1][0][0]),)
        elif fmt == MULTI:
            names = voc(chip.labels[0])[1][0][0].split(",")
            assert list(record.tile_classes) == [int(n) for n in names]
        elif fmt == IMAGENET:
            assert record.tile_classes == (int(chip.image.parent.name),)
        else:
            assert record.tile_classes == ()
        assert record.class_raster == (chip.labels[0] if fmt == CLASSIFIED else None)
        by_name = {n: v for v, n in src.classes}
        expected_instances = {by_name[p.parent.name]: p for p in chip.labels} if fmt == RCNN else {}
        assert record.instance_rasters == expected_instances
