"""Bad inputs a real user gives to export-training-data, through the API and the CLI.

Each case must fail with a RasterLearnError naming the problem (API), exit code 2 with a single
line on stderr (CLI), and leave no output behind: no output folder (an existing empty one stays
empty) and no ``.NAME.partial-*`` temporary folder beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import geopandas as gpd
import pytest
import rasterio

from rasterlearn.errors import InputError, OutputError, ParameterError, RasterLearnError
from rasterlearn.execution import blocks
from rasterlearn.export import write
from rasterlearn.formats.chips import ExportWriter
from rasterlearn.synthetic import make_scene
from rasterlearn.tools.export_training_data import export_training_data

SCRIPT = Path(sys.executable).with_name("rasterlearn")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "rasterlearn.cli"]
RENAMED = {"in_class_data": "--class-data", "in_mask_polygons": "--mask-polygons"}


def rasterlearn(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    return subprocess.run(
        [*COMMAND, *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )


def cli_args(raster: Path, out: Path, options: dict) -> list[str]:
    """The export-training-data command line for API keyword arguments."""
    args = ["export-training-data", str(raster), str(out)]
    for name, value in options.items():
        option = RENAMED.get(name, "--" + name.replace("_", "-"))
        if value is True:
            args.append(option)
        elif isinstance(value, tuple):
            args += [option, *map(str, value)]
        else:
            args += [option, str(value)]
    return args


def write_half_missing_vrt(path: Path, raster: Path, missing: Path) -> None:
    """A VRT twice as wide as ``raster``: its right half reads a file that does not exist."""
    with rasterio.open(raster) as ds:
        width, height, count, t, crs = ds.width, ds.height, ds.count, ds.transform, ds.crs
    bands = []
    for b in range(1, count + 1):
        sources = "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(src))}'
            f"</SourceFilename><SourceBand>{b}</SourceBand>"
            f'<SourceProperties RasterXSize="{width}" RasterYSize="{height}" DataType="Byte" '
            f'BlockXSize="{width}" BlockYSize="1"/>'
            f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f'<DstRect xOff="{x}" yOff="0" xSize="{width}" ySize="{height}"/></SimpleSource>'
            for x, src in ((0, raster), (width, missing))
        )
        bands.append(f'<VRTRasterBand dataType="Byte" band="{b}">{sources}</VRTRasterBand>')
    path.write_text(
        f'<VRTDataset rasterXSize="{2 * width}" rasterYSize="{height}">'
        f"<SRS>{escape(crs.to_wkt())}</SRS>"
        f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>"
        f"{''.join(bands)}</VRTDataset>"
    )


@pytest.fixture(scope="module")
def inputs(scene, tmp_path_factory) -> dict[str, Path]:
    """Every input the cases refer to (as ``@name``)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    small = make_scene(root / "small", width=128, height=128, seed=3)
    four = make_scene(root / "four", width=128, height=128, bands=4, seed=4)
    sixteen = make_scene(root / "sixteen", width=128, height=128, dtype="uint16", seed=5)
    nocrs = make_scene(root / "nocrs", width=256, height=256, seed=6, crs=None)

    text_tif = root / "not_a_raster.tif"
    text_tif.write_text("this is a text file, not a GeoTIFF\n")

    crs_features = root / "nocrs_features.gpkg"
    gpd.read_file(nocrs.polygons_path).set_crs("EPSG:32617").to_file(crs_features)

    polygons = gpd.read_file(scene.polygons_path)
    far = polygons.copy()
    far.geometry = far.geometry.translate(100_000, 0)  # 100 km east of the raster
    far.to_file(root / "far_away.gpkg")
    polygons.iloc[:0].to_file(root / "no_features.gpkg")
    fractions = polygons.copy()
    fractions["Weight"] = fractions["ClassValue"] + 0.5
    fractions.to_file(root / "fractions.gpkg")

    write_half_missing_vrt(root / "half.vrt", scene.raster_path, root / "gone" / "right.tif")
    return {
        "raster": scene.raster_path,
        "polygons": scene.polygons_path,
        "points": scene.points_path,
        "missing": root / "missing.tif",
        "bracketed": root / "ortho [final].tif",
        "text_tif": text_tif,
        "nocrs_raster": nocrs.raster_path,
        "crs_features": crs_features,
        "far": root / "far_away.gpkg",
        "empty": root / "no_features.gpkg",
        "fractions": root / "fractions.gpkg",
        "small": small.raster_path,
        "small_polygons": small.polygons_path,
        "four": four.raster_path,
        "four_polygons": four.polygons_path,
        "sixteen": sixteen.raster_path,
        "sixteen_polygons": sixteen.polygons_path,
        "half_vrt": root / "half.vrt",
    }


@dataclass(frozen=True)
class Case:
    """A bad export: the raster and keyword arguments (``@name`` = an input), what must fail."""

    raster: str
    options: dict
    error: type[RasterLearnError]
    words: tuple[str, ...]  # what the message must name (case-insensitive)
    cli: bool = True  # also run through the CLI

    def resolve(self, inputs: dict[str, Path]) -> tuple[Path, dict]:
        options = {k: resolve(v, inputs) for k, v in self.options.items()}
        return resolve(self.raster, inputs), options


POLYGONS = {"in_class_data": "@polygons"}
HALF_VRT_OPTIONS = {
    **POLYGONS,
    "tile_size_x": 256,
    "tile_size_y": 256,
    "stride_x": 256,
    "stride_y": 256,
    "output_nofeature_tiles": True,
    "num_workers": 2,
}

CASES = {
    "missing raster": Case("@missing", POLYGONS, InputError, ("missing.tif", "does not exist")),
    "missing raster with brackets in its name": Case(
        "@bracketed", POLYGONS, InputError, ("ortho [final].tif", "does not exist")
    ),
    "unreadable raster": Case("@text_tif", POLYGONS, InputError, ("not_a_raster.tif", "read")),
    "features with a CRS on a raster without one": Case(
        "@nocrs_raster",
        {"in_class_data": "@crs_features", "reference_system": "MAP_SPACE"},
        InputError,
        ("nocrs_features.gpkg", "coordinate system"),
    ),
    "features that miss the raster": Case(
        "@raster", {"in_class_data": "@far"}, InputError, ("overlap", "scene.tif")
    ),
    "unknown class value field": Case(
        "@raster",
        {**POLYGONS, "class_value_field": "Klass"},
        ParameterError,
        ("Klass", "ClassName", "ClassValue"),
    ),
    "text class value field": Case(
        "@raster", {**POLYGONS, "class_value_field": "ClassName"}, ParameterError, ("ClassName",)
    ),
    "fractional class value field": Case(
        "@raster",
        {"in_class_data": "@fractions", "class_value_field": "Weight"},
        ParameterError,
        ("Weight",),
        cli=False,
    ),
    "PNG of 4 bands": Case(
        "@four",
        {"in_class_data": "@four_polygons", "image_chip_format": "PNG"},
        ParameterError,
        ("PNG", "4 band"),
    ),
    "JPEG of 4 bands": Case(
        "@four",
        {"in_class_data": "@four_polygons", "image_chip_format": "JPEG"},
        ParameterError,
        ("JPEG", "4 band"),
    ),
    "PNG of 16-bit data": Case(
        "@sixteen",
        {"in_class_data": "@sixteen_polygons", "image_chip_format": "PNG"},
        ParameterError,
        ("PNG", "uint16"),
    ),
    "JPEG of 16-bit data": Case(
        "@sixteen",
        {"in_class_data": "@sixteen_polygons", "image_chip_format": "JPEG"},
        ParameterError,
        ("JPEG", "uint16"),
    ),
    "tile larger than the raster": Case(
        "@small", {"in_class_data": "@small_polygons"}, ParameterError, ("tile size", "128 x 128")
    ),
    "points without a buffer radius": Case(
        "@raster", {"in_class_data": "@points"}, ParameterError, ("scene_points.gpkg", "buffer")
    ),
    "empty feature file": Case(
        "@raster", {"in_class_data": "@empty"}, InputError, ("no_features.gpkg",)
    ),
    "VOC without class data": Case(
        "@raster", {}, ParameterError, ("PASCAL_VOC_rectangles", "class data")
    ),
    "unknown metadata format": Case(
        "@raster",
        {**POLYGONS, "metadata_format": "YOLO_rectangles"},
        ParameterError,
        ("YOLO_rectangles", "PASCAL_VOC_rectangles"),
    ),
    "negative stride": Case(
        "@raster", {**POLYGONS, "stride_x": -64}, ParameterError, ("stride", "-64")
    ),
    "overlap ratio above 1": Case(
        "@raster",
        {**POLYGONS, "min_polygon_overlap_ratio": 1.5},
        ParameterError,
        ("min_polygon_overlap_ratio",),
    ),
    "extent off the raster": Case(
        "@raster", {**POLYGONS, "extent": (0.0, 0.0, 100.0, 100.0)}, ParameterError, ("extent",)
    ),
    "raster unreadable midway": Case("@half_vrt", HALF_VRT_OPTIONS, InputError, ("half.vrt",)),
}


def resolve(value: object, inputs: dict[str, Path]) -> object:
    return inputs[value[1:]] if isinstance(value, str) and value.startswith("@") else value


def leftovers(parent: Path, keep: tuple[str, ...] = ()) -> list[str]:
    """What is in ``parent`` besides ``keep`` (partial and old folders included)."""
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


@pytest.mark.parametrize("name", CASES)
def test_api_refuses_and_leaves_nothing(name, inputs, tmp_path):
    case = CASES[name]
    raster, options = case.resolve(inputs)
    parent = tmp_path / "outputs"
    parent.mkdir()

    with pytest.raises(RasterLearnError) as err:
        export_training_data(raster, parent / "export", progress=False, **options)

    assert leftovers(parent) == []
    assert isinstance(err.value, case.error), repr(err.value)
    message = str(err.value)
    assert "\n" not in message
    for word in case.words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"


@pytest.fixture(scope="module")
def cli_runs(inputs, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Every CLI case, run at once (each ~1 s of start-up) into an existing empty folder."""
    root = tmp_path_factory.mktemp("cli_errors")

    def run(index: int, case: Case) -> tuple[Path, subprocess.CompletedProcess]:
        parent = root / f"case{index}"
        (parent / "out").mkdir(parents=True)
        raster, options = case.resolve(inputs)
        return parent, rasterlearn(*cli_args(raster, parent / "out", options))

    with ThreadPoolExecutor(4) as pool:
        futures = {
            name: pool.submit(run, i, case)
            for i, (name, case) in enumerate(CASES.items())
            if case.cli
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.cli])
def test_cli_refuses_in_one_line_and_leaves_nothing(name, cli_runs):
    case = CASES[name]
    parent, result = cli_runs[name]

    assert leftovers(parent, keep=("out",)) == []
    assert list((parent / "out").iterdir()) == []
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in case.words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "empty-folder"])
def test_failure_midway_leaves_nothing_behind(inputs, tmp_path, monkeypatch, existing):
    """Chips are written, then a window of the raster cannot be read: nothing may remain."""
    written = []
    write_chip = ExportWriter.write_chip

    def counting_write_chip(self, index, *args):
        written.append(index)
        return write_chip(self, index, *args)

    monkeypatch.setattr(ExportWriter, "write_chip", counting_write_chip)
    raster, options = CASES["raster unreadable midway"].resolve(inputs)
    out = tmp_path / "export"
    if existing:
        out.mkdir()

    with pytest.raises(Exception):  # noqa: B017 - whatever it is, nothing may be left
        export_training_data(raster, out, progress=False, **options)

    assert written, "the export failed before writing any chip: not a failure midway"
    assert out.exists() is existing
    if existing:
        assert list(out.iterdir()) == []
    assert leftovers(tmp_path, keep=("export",)) == []


def test_failure_midway_in_worker_processes_leaves_nothing_behind(inputs, tmp_path, monkeypatch):
    """This process's lane writes the first chip once a worker process has work: the
    processes cut the unreadable half, the error reaches the caller whole, the chips are
    removed and the processes end."""
    worked_by: list[int] = []
    processes_working = threading.Event()
    work = blocks._ProcessSteps.work

    def recorded_work(self, lane, *args):
        worked_by.append(lane)
        if lane < len(self.processes):
            processes_working.set()
        return work(self, lane, *args)

    write_chip = ExportWriter.write_chip

    def write_chip_later(self, index, *args):
        processes_working.wait(60)
        return write_chip(self, index, *args)

    monkeypatch.setattr(write, "PROCESS_MIN_PLANS", 0)
    monkeypatch.setattr(blocks._ProcessSteps, "work", recorded_work)
    monkeypatch.setattr(ExportWriter, "write_chip", write_chip_later)
    raster, options = CASES["raster unreadable midway"].resolve(inputs)

    with pytest.raises(InputError) as err:
        export_training_data(raster, tmp_path / "export", progress=False, **options)

    assert "half.vrt" in err.value.message and err.value.hint
    assert "\n" not in str(err.value)
    # this process's lane (2), then whichever worker process started first (0 or 1)
    assert worked_by[0] == 2 and worked_by[1] in (0, 1), worked_by
    assert leftovers(tmp_path) == []


def test_output_folder_not_empty_is_refused_unless_overwrite(inputs, tmp_path):
    raster = inputs["raster"]
    options = {"in_class_data": inputs["polygons"], "tile_size_x": 256, "tile_size_y": 256}
    options |= {"stride_x": 256, "stride_y": 256}
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")

    with pytest.raises(OutputError) as err:
        export_training_data(raster, out, progress=False, **options)
    assert str(out) in str(err.value) and "overwrite" in str(err.value)
    assert leftovers(out) == ["notes.txt"]
    assert leftovers(tmp_path) == ["export"]

    refused = rasterlearn(*cli_args(raster, out, options))
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "export" in refused.stderr and "--overwrite" in refused.stderr
    assert leftovers(out) == ["notes.txt"]
    assert leftovers(tmp_path) == ["export"]

    replaced = rasterlearn(*cli_args(raster, out, {**options, "overwrite": True}))
    assert replaced.returncode == 0, replaced.stderr
    assert leftovers(tmp_path) == ["export"]  # no .export.partial-* or .export.old-*
    content = leftovers(out)
    assert "notes.txt" not in content
    assert {"images", "labels", "map.txt", "esri_accumulated_stats.json"} <= set(content)
    assert any((out / "images").iterdir())
