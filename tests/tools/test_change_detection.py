"""Change detection end to end on a synthetic two-date scene: export of image pairs, a tiny
CHANGEDETECTOR, detect-change (tiled, whole, Dask) and compute-change.

The model is trained once for this file (module fixture), so one xdist worker runs it all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject
from typer.testing import CliRunner

from rasterlearn import compute_change, detect_change, export_training_data
from rasterlearn.cli import app
from rasterlearn.errors import ParameterError
from rasterlearn.models.registry import check_model_fits_data
from rasterlearn.synthetic import ChangeScene, make_change_scene
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model

runner = CliRunner()
SIZE = 192


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("change")
    scene = make_change_scene(root / "scene", width=SIZE, height=SIZE, seed=5, cell=48, change=0.6)
    export = export_training_data(
        scene.before.raster_path,
        root / "chips",
        scene.change_raster_path,
        metadata_format="Classified_Tiles",
        tile_size_x=64,
        tile_size_y=64,
        stride_x=64,
        stride_y=64,
        in_raster2=scene.after.raster_path,
    )
    model = train_deep_learning_model(
        export.out_folder,
        root / "model",
        max_epochs=2,
        batch_size=4,
        backbone_model="resnet18",
        learning_rate=3e-3,
        validation_percentage=20,
        stop_training=False,
        seed=2,
    )
    return scene, export, model


def read(path: Path) -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform


def test_export_writes_the_after_image_on_the_before_grid(trained):
    scene, export, _ = trained
    folder = export.out_folder
    images = sorted((folder / "images").iterdir())
    assert [p.name for p in images] == sorted(p.name for p in (folder / "images2").iterdir())
    before, transform = read(images[0])
    after, transform2 = read(folder / "images2" / images[0].name)
    assert transform2 == transform and after.shape == before.shape
    # the after image warped onto the chip's grid by GDAL's reprojection, independently
    expected = np.zeros_like(after)
    with rasterio.open(scene.after.raster_path) as src:
        reproject(
            rasterio.band(src, [1, 2, 3]),
            expected,
            dst_transform=transform,
            dst_crs=src.crs,
            resampling=Resampling.bilinear,
        )
    inner = (slice(None), slice(2, -2), slice(2, -2))
    assert np.abs(after[inner].astype(int) - expected[inner]).max() <= 1
    labels, _ = read(folder / "labels" / images[0].name)
    with rasterio.open(scene.change_raster_path) as src:
        window = rasterio.windows.from_bounds(
            *rasterio.transform.array_bounds(64, 64, transform), src.transform
        )
        assert np.array_equal(labels[0], src.read(1, window=window))
    stats = json.loads((folder / "esri_accumulated_stats.json").read_text())
    emd = json.loads((folder / "esri_model_definition.emd").read_text())
    assert len(stats["BandStatsState2"]) == 3 and len(emd["AllTilesStats2"]) == 3
    assert emd["InputRastersProps"]["RasterCount"] == 2


def test_a_change_detector_trains_and_writes_arcgis_keys(trained):
    _, _, model = trained
    losses = [epoch.training_loss for epoch in model.history]
    assert model.model_type == "CHANGEDETECTOR"
    assert losses[-1] < losses[0]
    emd = json.loads(model.emd.read_text())
    assert emd["ModelName"] == "ChangeDetector"
    assert emd["ModelType"] == "ImageClassification"
    assert emd["ExtractBands"] == [0, 1, 2, 3, 4, 5]
    assert len(emd["NormalizationStats"]["band_min_values"]) == 6
    assert emd["ModelParameters"]["attention_type"] == "PAM"
    assert {"precision", "recall", "f1_score"} <= emd.keys()
    assert emd["DataAttributes"]["chip_size"] == 64
    with pytest.raises(ParameterError, match="for ChangeDetection data use CHANGEDETECTOR"):
        check_model_fits_data("UNET", "ChangeDetection")


def whole_image_model(emd: Path) -> str:
    content = json.loads(emd.read_text())
    content["ImageHeight"] = content["ImageWidth"] = SIZE
    content["ModelFile"] = str(emd.with_suffix(".pth"))
    return json.dumps(content)


def test_tiled_change_map_equals_whole_image_and_lies_on_the_before_grid(trained, tmp_path):
    scene, _, model = trained
    pair = (scene.before.raster_path, scene.after.raster_path)
    whole = detect_change(*pair, tmp_path / "whole.tif", whole_image_model(model.emd))
    tiled = detect_change(
        *pair, tmp_path / "tiled.tif", model.emd, {"tile_size": 96, "padding": 24}
    )
    (a,), transform = read(tiled)
    (b,), _ = read(whole)
    assert transform == scene.before.transform and a.shape == (SIZE, SIZE)
    assert (a == b).mean() >= 0.999
    assert (tmp_path / "tiled.tif.aux.xml").exists()  # class names, as classify-pixels writes


def test_a_dask_run_equals_one_process_byte_for_byte(trained, tmp_path):
    scene, _, model = trained
    pair = (scene.before.raster_path, scene.after.raster_path)
    args = {"batch_size": 2}
    runs = {"one": {"num_workers": 1}, "dask": {"cluster": "local:2"}}
    for name, how in runs.items():
        detect_change(*pair, tmp_path / f"{name}.tif", model.emd, args, **how)
    for suffix in (".tif", ".tif.aux.xml"):
        files = [(tmp_path / f"{name}{suffix}").read_bytes() for name in runs]
        assert files[0] == files[1], suffix


def shifted_copy(src_path: Path, out: Path, bands: list[int], dx: float = 0.0) -> Path:
    with rasterio.open(src_path) as src:
        profile = {**src.profile, "count": len(bands)}
        profile["transform"] = rasterio.Affine.translation(dx, 0) @ src.transform
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(bands))
    return out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("far-away", "do not overlap"),
        ("two-bands", "has 3 bands but"),
        ("pixel-tool", "not a pixel classifier"),
    ],
)
def test_bad_inputs_give_one_line_and_leave_nothing(trained, tmp_path, case, message):
    scene, _, model = trained
    before, after = str(scene.before.raster_path), str(scene.after.raster_path)
    out = tmp_path / "out" / "change.tif"
    command = ["detect-change", before, after, str(out), "--model", str(model.emd)]
    if case == "far-away":
        command[2] = str(
            shifted_copy(scene.after.raster_path, tmp_path / "far.tif", [1, 2, 3], 1e5)
        )
    if case == "two-bands":
        command[2] = str(shifted_copy(scene.after.raster_path, tmp_path / "two.tif", [1, 2]))
    if case == "pixel-tool":
        command = ["classify-pixels", before, str(out), "--model", str(model.emd)]
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "out").exists()


def nearest_on_grid(path: Path, like: Path) -> tuple[np.ndarray, np.ndarray]:
    """A class raster resampled (nearest) onto another's grid, and its own pixels."""
    with rasterio.open(like) as ref, rasterio.open(path) as src:
        out = np.full((ref.height, ref.width), 255, dtype=np.uint8)
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=ref.transform,
            dst_crs=ref.crs,
            dst_nodata=255,
            resampling=Resampling.nearest,
        )
        return ref.read(1), out


def test_compute_change_counts_the_transitions(trained, tmp_path):
    scene: ChangeScene = trained[0]
    first, second = scene.before.class_raster_path, scene.after.class_raster_path
    result = compute_change(first, second, tmp_path / "change.csv", tmp_path / "codes.tif")
    before, after = nearest_on_grid(second, first)
    valid = after != 255
    pairs, counts = np.unique(np.stack([before[valid], after[valid]]), axis=1, return_counts=True)
    table = result.table
    assert list(zip(table["FromValue"], table["ToValue"], table["Pixels"], strict=True)) == [
        (int(a), int(b), int(n)) for (a, b), n in zip(pairs.T, counts, strict=True)
    ]
    assert np.allclose(table["Area"], table["Pixels"] * 0.25)  # 0.5 m pixels
    assert table["Changed"].tolist() == (table["FromValue"] != table["ToValue"]).tolist()
    (codes,), _ = read(tmp_path / "codes.tif")
    expected = np.where(before == after, 0, before * result.code_base + after)
    assert np.array_equal(codes[valid], expected[valid])
    assert (tmp_path / "change.csv").read_text().splitlines()[0].startswith("FromValue,FromClass")
    far = shifted_copy(second, tmp_path / "far.tif", [1], 1e5)
    result = runner.invoke(app, ["compute-change", str(first), str(far), str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "do not overlap" in result.output
    assert not (tmp_path / "x.csv").exists()
