"""classify-pixels, detect-objects and classify-objects with models trained in the session.

All tests that need the trained models live in this file so that one xdist worker trains
them (``--dist loadfile``).
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from torchvision.ops import box_iou
from typer.testing import CliRunner

from rasterlearn.cli import app
from rasterlearn.errors import InputError, ParameterError
from rasterlearn.formats.dlpk import create_dlpk
from rasterlearn.formats.model_source import load_model_definition
from rasterlearn.inference.predictors import model_info, resolve_model_arguments
from rasterlearn.tools.classify_objects import classify_objects
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.detect_objects import detect_objects

runner = CliRunner()


def whole_image_model(emd: Path, size: int) -> str:
    """The same model as JSON text, with a chip size covering the whole raster (one tile)."""
    content = json.loads(emd.read_text())
    content["ImageHeight"] = content["ImageWidth"] = size
    content["ModelFile"] = str(emd.with_suffix(".pth"))
    return json.dumps(content)


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


# ----------------------------------------------------------------------- classify pixels


def test_tiled_classification_equals_whole_image(models, tmp_path):
    raster = models.scene.raster_path
    whole = classify_pixels(raster, tmp_path / "whole.tif", whole_image_model(models.unet, 384))
    tiled = classify_pixels(
        raster, tmp_path / "tiled.tif", models.unet, {"tile_size": 160, "padding": 48}
    )
    a, b = read_band(tiled[0]), read_band(whole[0])
    # not bit-equal: tiles start off the encoder's stride-32 grid of the whole image, which
    # moves the few pixels of a briefly trained model that lie on a class boundary
    assert (a == b).mean() >= 0.995
    # and it is a real classification: the reference classes are mostly right
    assert (a == read_band(models.scene.class_raster_path)).mean() > 0.85


def gdal_class_names(path: Path) -> tuple[list[str], list[str]]:
    """Category names and the RAT's Class column as GDAL itself reads them (C API)."""
    lib = glob.glob(os.path.join(os.path.dirname(rasterio.__file__) + ".libs", "libgdal*"))
    gdal = ctypes.CDLL(lib[0]) if lib else ctypes.CDLL("libgdal.so")
    gdal.GDALAllRegister()
    gdal.GDALOpen.restype = ctypes.c_void_p
    gdal.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALGetRasterBand.restype = ctypes.c_void_p
    gdal.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALGetDefaultRAT.restype = ctypes.c_void_p
    gdal.GDALGetDefaultRAT.argtypes = [ctypes.c_void_p]
    gdal.GDALRATGetRowCount.argtypes = [ctypes.c_void_p]
    gdal.GDALRATGetValueAsString.restype = ctypes.c_char_p
    gdal.GDALRATGetValueAsString.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    gdal.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    gdal.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    ds = gdal.GDALOpen(str(path).encode(), 0)
    band = gdal.GDALGetRasterBand(ds, 1)
    rat = gdal.GDALGetDefaultRAT(band)
    rows = [
        gdal.GDALRATGetValueAsString(rat, i, 1).decode()
        for i in range(gdal.GDALRATGetRowCount(rat))
    ]
    names = gdal.GDALGetRasterCategoryNames(band)
    categories = []
    while names[len(categories)] is not None:
        categories.append(names[len(categories)].decode())
    gdal.GDALClose(ds)
    return categories, rows


def test_classified_raster_format(models, tmp_path):
    out = classify_pixels(models.scene.raster_path, tmp_path / "c.tif", models.unet, cog=True)[0]
    with rasterio.open(out) as src, rasterio.open(models.scene.raster_path) as ref:
        assert src.count == 1 and src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.crs == ref.crs and src.transform == ref.transform
        assert src.shape == ref.shape
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        colours = src.colormap(1)
        for c in json.loads(models.unet.read_text())["Classes"]:
            assert colours[c["Value"]] == (*c["Color"], 255)
        assert set(np.unique(src.read(1))) <= {0, 1, 2, 3}
    categories, rat_names = gdal_class_names(out)
    assert categories == ["", "building", "tree", "water"]
    assert rat_names == ["building", "tree", "water"]


def test_nodata_mask_extent_and_probabilities(models, tmp_path):
    # a copy of the scene with nodata 0 over the left 100 columns
    src_path = tmp_path / "holes.tif"
    with rasterio.open(models.scene.raster_path) as src:
        data, profile = src.read(), src.profile
    data[:, :, :100] = 0
    with rasterio.open(src_path, "w", **{**profile, "nodata": 0}) as dst:
        dst.write(data)
    t = profile["transform"]
    mask_path = tmp_path / "mask.gpkg"
    # the mask leaves out the bottom 84 rows
    mask_poly = shapely.box(t.c, t.f + 300 * t.e, t.c + 384 * t.a, t.f)
    gpd.GeoDataFrame(geometry=[mask_poly], crs=profile["crs"]).to_file(mask_path)
    out = classify_pixels(
        src_path,
        tmp_path / "c.tif",
        models.unet,
        {"return_probability_raster": "true"},
        mask=mask_path,
    )[0]
    classes = read_band(out)
    assert (classes[:, :100] == 255).all()
    assert (classes[300:] == 255).all()
    assert (classes[:300, 100:] != 255).all()
    with rasterio.open(tmp_path / "c_probability.tif") as prob:
        p = prob.read()
        assert prob.count == 3 and prob.descriptions == ("building", "tree", "water")
    assert np.isnan(p[:, :, :100]).all()
    inside = p[:, :300, 100:]
    assert np.all((inside >= 0) & (inside <= 1))
    assert ((inside.sum(axis=0)) <= 1 + 1e-5).all()  # background takes the rest
    # a processing extent: the output covers just the extent
    x0, y1 = t.c + 64 * t.a, t.f + 32 * t.e
    extent = (x0, y1 + 200 * t.e, x0 + 160 * t.a, y1)
    part = classify_pixels(
        models.scene.raster_path, tmp_path / "part.tif", models.unet, processing_extent=extent
    )[0]
    with rasterio.open(part) as src:
        assert src.shape == (200, 160)
        assert src.transform.c == pytest.approx(x0) and src.transform.f == pytest.approx(y1)


def test_test_time_augmentation_agrees_with_plain(models, tmp_path):
    plain = read_band(classify_pixels(models.scene.raster_path, tmp_path / "a.tif", models.unet)[0])
    tta = read_band(
        classify_pixels(
            models.scene.raster_path,
            tmp_path / "b.tif",
            models.unet,
            {"test_time_augmentation": "True", "merge_policy": "max"},
        )[0]
    )
    reference = read_band(models.scene.class_raster_path)
    assert (tta == plain).mean() > 0.95
    assert (tta == reference).mean() > 0.85


# ------------------------------------------------------------------------ detect objects


def boxes_of(frame: gpd.GeoDataFrame) -> torch.Tensor:
    return torch.tensor(np.array([g.bounds for g in frame.geometry]), dtype=torch.float64)


def test_objects_across_tile_borders_are_found_once(models, tmp_path):
    scene = models.scene
    out = detect_objects(scene.raster_path, tmp_path / "d.gpkg", models.fcos)
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:32617"
    assert list(info["fields"]) == ["Class", "Confidence"]
    assert info["geometry_type"] == "Polygon"
    found = gpd.read_file(out)
    truth = gpd.read_file(scene.polygons_path)
    assert found["Confidence"].between(50, 100).all()  # threshold 0.5, in percent
    iou = box_iou(boxes_of(truth), boxes_of(found)).numpy()
    matches = (iou > 0.3).sum(axis=1)
    assert (matches <= 1).all(), "an object was detected twice"
    assert (matches == 1).mean() > 0.6  # a real detector: most objects are found
    # objects crossing a tile border (tiles of 64 px, padding 16: borders every 32 px)
    # are found once, as on the whole image in one tile
    whole = gpd.read_file(
        detect_objects(scene.raster_path, tmp_path / "w.gpkg", whole_image_model(models.fcos, 384))
    )
    pixel = 0.5
    bounds = boxes_of(truth).numpy()
    col0, col1 = (bounds[:, 0] - 400000) / pixel, (bounds[:, 2] - 400000) / pixel
    crossing = np.floor((col0 - 16) / 32) != np.floor((col1 - 16) / 32)
    assert crossing.sum() >= 5
    whole_matches = (box_iou(boxes_of(truth), boxes_of(whole)).numpy() > 0.3).sum(axis=1)
    assert (matches[crossing] <= 1).all()
    assert matches[crossing].sum() >= whole_matches[crossing].sum() - 2


def test_detection_options_and_formats(models, tmp_path):
    raster = models.scene.raster_path
    base = gpd.read_file(detect_objects(raster, tmp_path / "a.gpkg", models.fcos))
    # a lower threshold than training chose finds more; NMS over polygons with ratio 0 leaves
    # no overlaps per class
    chosen = json.loads(models.fcos.read_text())["DetectionThreshold"]
    low = gpd.read_file(
        detect_objects(
            raster,
            tmp_path / "b.shp",
            models.fcos,
            {"threshold": chosen / 2},
            run_nms=True,
            confidence_score_field="Score",
            class_value_field="Label",
        )
    )
    assert {"Score", "Label"} <= set(low.columns)
    assert len(low) >= len(base)
    for _, group in low.groupby("Label"):
        geoms = group.geometry.values
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        overlapping = [
            (i, j)
            for i, j in zip(left, right, strict=True)
            if i < j and shapely.intersection(geoms[i], geoms[j]).area > 1e-9
        ]
        assert not overlapping
    # the model opened once per process gives the same detections after another threshold
    again = gpd.read_file(detect_objects(raster, tmp_path / "a2.gpkg", models.fcos))
    assert again.drop(columns="geometry").equals(base.drop(columns="geometry"))
    # nothing above a threshold of 1: an empty layer with the fields
    empty = detect_objects(raster, tmp_path / "c.gpkg", models.fcos, {"threshold": 1.0})
    info = pyogrio.read_info(empty)
    assert info["features"] == 0 and list(info["fields"]) == ["Class", "Confidence"]


def test_detection_defaults_to_the_threshold_of_the_best_validation_f1(models, tmp_path):
    chosen = json.loads(models.fcos.read_text())["DetectionThreshold"]
    assert 0.01 <= chosen < 1
    raster = models.scene.raster_path
    default = gpd.read_file(detect_objects(raster, tmp_path / "a.gpkg", models.fcos))
    given = gpd.read_file(
        detect_objects(raster, tmp_path / "b.gpkg", models.fcos, {"threshold": chosen})
    )
    assert len(default) and default.equals(given)
    assert default["Confidence"].min() >= chosen * 100 - 1e-6


def test_fcos_detects_on_tiles_of_two_chips_by_default(models, tmp_path):
    emd = json.loads(models.fcos.read_text())
    chip = emd["ImageHeight"]
    assert emd["InferenceTileSize"] == 2 * chip
    assert "InferenceTileSize" not in json.loads(models.unet.read_text())
    info = model_info(load_model_definition(models.fcos))
    defaults = resolve_model_arguments(info, None)
    assert (defaults["tile_size"], defaults["padding"]) == (2 * chip, chip // 2)
    assert defaults["batch_size"] == 4  # the pixels of 16 chips
    raster = models.scene.raster_path
    default = gpd.read_file(detect_objects(raster, tmp_path / "a.gpkg", models.fcos))
    given = gpd.read_file(
        detect_objects(raster, tmp_path / "b.gpkg", models.fcos, {"tile_size": 2 * chip})
    )
    chips = gpd.read_file(
        detect_objects(
            raster, tmp_path / "c.gpkg", models.fcos, {"tile_size": chip, "padding": chip // 4}
        )
    )
    assert len(default) and default.equals(given)
    assert not default.equals(chips)


# ---------------------------------------------------------------------- classify objects


def test_classify_objects_labels_features(models, tmp_path):
    scene = models.scene
    out = classify_objects(
        scene.raster_path, tmp_path / "o.gpkg", models.classifier, in_features=scene.polygons_path
    )
    result = gpd.read_file(out)
    truth = gpd.read_file(scene.polygons_path)
    assert len(result) == len(truth)
    assert {"ClassLabel", "Confidence", "ClassName"} <= set(result.columns)
    assert result["Confidence"].between(0, 1).all()
    assert (result["ClassLabel"] == truth["ClassName"]).mean() > 0.7
    # without features every image is one object
    images = gpd.read_file(
        classify_objects(scene.raster_path, tmp_path / "i.gpkg", models.classifier)
    )
    assert len(images) == 1 and images["ClassLabel"].iloc[0] in {"building", "tree", "water"}


# ----------------------------------------------------------------------------- CLI


def test_cli_runs_the_tools(models, tmp_path):
    raster = str(models.scene.raster_path)
    result = runner.invoke(
        app, ["classify-pixels", raster, str(tmp_path / "c.tif"), "--model", str(models.unet)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.tif").exists() and (tmp_path / "c.tif.aux.xml").exists()
    result = runner.invoke(
        app,
        [
            "detect-objects",
            raster,
            str(tmp_path / "d.gpkg"),
            "--model",
            str(models.fcos),
            "--arg",
            "threshold=0.4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Detected" in result.output
    result = runner.invoke(
        app,
        [
            "classify-objects",
            raster,
            str(tmp_path / "o.gpkg"),
            "--model",
            str(models.classifier),
            "--in-features",
            str(models.scene.polygons_path),
        ],
    )
    assert result.exit_code == 0, result.output


def bad_models(models, root: Path) -> dict[str, str]:
    """Model definitions a user might give by mistake."""
    content = json.loads(models.unet.read_text())
    missing = root / "missing.emd"
    missing.write_text(json.dumps({**content, "ModelFile": "gone.pth"}))
    broken = root / "broken.dlpk"
    (root / "ok").mkdir()
    broken.write_bytes(
        create_dlpk(models.unet.parent, root / "ok" / "unet.dlpk").read_bytes()[:3000]
    )
    return {"missing": str(missing), "broken": str(broken)}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "do not exist"),
        ("broken", "dlpk"),
        ("two-bands", "has 2 bands but the model reads bands [1, 2, 3]"),
        ("unknown-arg", "unknown"),
        ("no-crs", "no coordinate system"),
        ("detector-for-pixels", "not a pixel classifier"),
        ("bad-padding", "padding"),
        ("no-workers", "num_workers must be at least 1"),
    ],
)
def test_bad_inputs_give_one_line_and_no_output(models, tmp_path, case, message):
    bad = bad_models(models, tmp_path)
    raster, model, args = str(models.scene.raster_path), str(models.unet), []
    if case in bad:
        model = bad[case]
    if case == "unknown-arg":
        args = ["--arg", "paddding=3"]
    if case == "bad-padding":
        args = ["--arg", "padding=40"]
    if case == "no-workers":
        args = ["--num-workers", "0"]
    if case == "detector-for-pixels":
        model = str(models.fcos)
    if case == "two-bands":
        raster = str(tmp_path / "two.tif")
        with rasterio.open(models.scene.raster_path) as src:
            data, profile = src.read([1, 2]), src.profile
        with rasterio.open(raster, "w", **{**profile, "count": 2}) as dst:
            dst.write(data)
    if case == "no-crs":
        raster = str(tmp_path / "plain.tif")
        with rasterio.open(models.scene.raster_path) as src:
            data, profile = src.read(), src.profile
        profile.pop("crs")
        profile["transform"] = rasterio.Affine.identity()
        with rasterio.open(raster, "w", **profile) as dst:
            dst.write(data)
    out = tmp_path / "out" / "c.tif"
    result = runner.invoke(app, ["classify-pixels", raster, str(out), "--model", model, *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists() and not (tmp_path / "out").exists()


def test_python_errors_are_typed(models, tmp_path):
    with pytest.raises(ParameterError, match=r"valid arguments|unknown"):
        detect_objects(models.scene.raster_path, tmp_path / "d.gpkg", models.fcos, {"nope": 1})
    with pytest.raises(ParameterError, match="vector format"):
        detect_objects(models.scene.raster_path, tmp_path / "d.txt", models.fcos)
    with pytest.raises(InputError, match="does not exist"):
        classify_pixels(tmp_path / "nothing.tif", tmp_path / "c.tif", models.unet)


def test_a_killed_run_leaves_nothing_that_looks_finished(models, tmp_path):
    out = tmp_path / "big.tif"
    # a larger raster so that the run lasts long enough to be killed halfway
    from rasterlearn.synthetic import make_scene

    scene = make_scene(tmp_path / "big", width=1024, height=1024, seed=3)
    cmd = [
        sys.executable,
        "-m",
        "rasterlearn.cli",
        "classify-pixels",
        str(scene.raster_path),
        str(out),
        "--model",
        str(models.unet),
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "CI": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(".big.tif") for p in tmp_path.iterdir()):
            time.sleep(1.0)  # let it write some tiles
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert not (tmp_path / "big.tif.aux.xml").exists()
    assert all(p.name.startswith(".") or p.name == "big" for p in tmp_path.iterdir())


# ------------------------------------------------------------------------------- Dask


def test_cluster_output_equals_single_process_output(models, tmp_path):
    """Bit for bit: a cluster, one lane and two lanes in this process give the same outputs."""
    raster = models.scene.raster_path
    args = {"batch_size": 2, "return_probability_raster": True}  # several blocks
    threads = torch.get_num_threads()
    runs = {"cluster": {"cluster": "local:2"}, "one": {"num_workers": 1}, "two": {"num_workers": 2}}
    for name, how in runs.items():
        classify_pixels(raster, tmp_path / f"{name}.tif", models.unet, args, **how)
    assert torch.get_num_threads() == threads  # lanes leave this process's setting alone
    for suffix in (".tif", ".tif.aux.xml", "_probability.tif"):
        files = [(tmp_path / f"{name}{suffix}").read_bytes() for name in runs]
        assert files[0] == files[1] == files[2], suffix
    del args["return_probability_raster"]
    found = [
        gpd.read_file(detect_objects(raster, tmp_path / f"{name}.gpkg", models.fcos, args, **how))
        for name, how in runs.items()
    ]
    assert len(found[0]) > 0
    for other in found[1:]:
        assert found[0]["Class"].equals(other["Class"])
        assert found[0]["Confidence"].equals(other["Confidence"])
        assert found[0].geometry.geom_equals_exact(other.geometry, tolerance=0).all()


def test_pixel_space_model_on_an_image_without_georeference(models, tmp_path):
    plain = tmp_path / "plain.tif"
    with rasterio.open(models.scene.raster_path) as src:
        data, profile = src.read(), src.profile
    profile.pop("crs")
    profile["transform"] = rasterio.Affine.identity()
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(data)
    content = json.loads(models.unet.read_text())
    content.update(ImageSpaceUsed="PIXEL_SPACE", ModelFile=str(models.unet.with_suffix(".pth")))
    out = classify_pixels(plain, tmp_path / "c.tif", json.dumps(content))[0]
    georef = classify_pixels(models.scene.raster_path, tmp_path / "g.tif", models.unet)[0]
    with rasterio.open(out) as src:
        assert src.crs is None and src.transform == rasterio.Affine.identity()
    assert np.array_equal(read_band(out), read_band(georef))
    found = detect_objects(
        plain,
        tmp_path / "d.gpkg",
        json.dumps(
            {
                **json.loads(models.fcos.read_text()),
                "ImageSpaceUsed": "PIXEL_SPACE",
                "ModelFile": str(models.fcos.with_suffix(".pth")),
            }
        ),
    )
    boxes = gpd.read_file(found).total_bounds
    assert boxes[0] >= 0 and boxes[2] <= 384 and boxes[1] >= 0 and boxes[3] <= 384


def test_a_folder_item_by_item(models, tmp_path):
    folder = tmp_path / "items"
    folder.mkdir()
    with rasterio.open(models.scene.raster_path) as src:
        profile = src.profile
        for name, window in (("a", ((0, 192), (0, 192))), ("b", ((192, 384), (96, 384)))):
            w = rasterio.windows.Window.from_slices(*window)
            with rasterio.open(
                folder / f"{name}.tif",
                "w",
                **{
                    **profile,
                    "width": w.width,
                    "height": w.height,
                    "transform": src.window_transform(w),
                },
            ) as dst:
                dst.write(src.read(window=w))
    outs = classify_pixels(
        folder,
        tmp_path / "unused.tif",
        models.unet,
        processing_mode="PROCESS_ITEMS_SEPARATELY",
        out_classified_folder=tmp_path / "out",
    )
    assert [p.name for p in outs] == ["a.tif", "b.tif"]
    assert read_band(outs[1]).shape == (192, 288)
    with pytest.raises(ParameterError, match="output folder"):
        classify_pixels(
            folder, tmp_path / "x.tif", models.unet, processing_mode="PROCESS_ITEMS_SEPARATELY"
        )
    found = gpd.read_file(
        detect_objects(
            folder, tmp_path / "d.gpkg", models.fcos, processing_mode="PROCESS_ITEMS_SEPARATELY"
        )
    )
    assert set(found["Image"]) <= {"a.tif", "b.tif"} and len(found) > 0


def test_classify_objects_lanes_and_a_cluster_give_one_lanes_output(models, tmp_path):
    """Same labels, same confidences bit for bit, same order: 1 lane, 2 lanes, local:2."""
    scene = models.scene
    args = {"batch_size": 2}  # several blocks of whole batches
    runs = {"one": {"num_workers": 1}, "two": {"num_workers": 2}, "cluster": {"cluster": "local:2"}}
    threads = torch.get_num_threads()
    frames = {}
    for name, how in runs.items():
        out = classify_objects(
            scene.raster_path,
            tmp_path / f"{name}.gpkg",
            models.classifier,
            in_features=scene.polygons_path,
            model_arguments=args,
            **how,
        )
        frames[name] = gpd.read_file(out)
    assert torch.get_num_threads() == threads  # lanes leave this process's setting alone
    one = frames["one"]
    assert len(one) == len(gpd.read_file(scene.polygons_path)) > 2 * args["batch_size"]
    assert one["Confidence"].between(0, 1).all()
    for name in ("two", "cluster"):
        other = frames[name]
        assert list(other.columns) == list(one.columns)
        assert one["ClassLabel"].equals(other["ClassLabel"]), name
        assert one["Confidence"].to_numpy().tobytes() == other["Confidence"].to_numpy().tobytes()
        assert one.geometry.geom_equals_exact(other.geometry, tolerance=0).all(), name


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ({"num_workers": 0}, "num_workers must be at least 1"),
        ({"cluster": "local:2", "scheduler": "tcp://127.0.0.1:8786"}, "not both"),
        ({"cluster": "remote"}, "unknown cluster"),
    ],
)
def test_classify_objects_bad_execution_parameters_give_one_line(models, tmp_path, how, message):
    out = tmp_path / "o.gpkg"
    with pytest.raises(ParameterError, match=message) as err:
        classify_objects(
            models.scene.raster_path,
            out,
            models.classifier,
            in_features=models.scene.polygons_path,
            **how,
        )
    assert "\n" not in str(err.value)
    assert not out.exists()
