"""The ArcGIS Pro raster function in rasterlearn's packages, driven as Pro drives it.

Pro cannot run here, so the contract is tested: ``arcgis_pro_host.py`` calls the packaged
``RasterlearnFunction.py`` through the Python raster function protocol (initialize,
getParameterInfo, getConfiguration, updateRasterInfo + updatePixels or vectorize) in a
subprocess where rasterlearn cannot be imported, and its output must equal the inference
tools' on the same raster.

Pro tiles a processing extent with blocks of ``tx`` x ``ty`` from the extent's corner, each
read with ``padding`` pixels of context; rasterlearn's tiles start at the raster's corner.
With the extent inset by the padding and a raster of ``chip + k * (chip - 2 padding)`` pixels,
Pro's blocks read exactly the windows of rasterlearn's tiles, so the outputs must agree on
the extent: class values equal, detections equal to float precision.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch
import torchvision

from rasterlearn.formats.emd import PRO_FUNCTIONS_PREFIX, ModelDefinition
from rasterlearn.inference.backends import open_predictor
from rasterlearn.inference.backends.pytorch import TorchPredictor
from rasterlearn.inference.pro_package import PRO_FUNCTION_FILE, pro_model_file
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.detect_objects import detect_objects
from rasterlearn.tools.package_model import package_model

HOST = Path(__file__).with_name("arcgis_pro_host.py")
PADDING = 16


def run_in_pro_host(tmp_path: Path, emd: Path, raster: Path, run: str, arguments: dict) -> Path:
    """Run the model's packaged raster function over the raster, inset by the padding."""
    with rasterio.open(raster) as ds:
        pixels = ds.read()
    np.save(tmp_path / "raster.npy", pixels)
    _, rows, cols = pixels.shape
    out = tmp_path / ("pro.npy" if run == "pixels" else "pro.json")
    spec = {
        "function": str(emd.parent / PRO_FUNCTION_FILE),
        "emd": str(emd),
        "raster": str(tmp_path / "raster.npy"),
        "extent": [PADDING, PADDING, rows - 2 * PADDING, cols - 2 * PADDING],
        "arguments": arguments,
        "run": run,
        "out": str(out),
        "site_packages": site.getsitepackages(),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(HOST), str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr
    return out


def test_pixel_function_equals_classify_pixels(models, tmp_path):
    raster, emd = models.scene.raster_path, models.unet
    arguments = {"padding": PADDING}
    classify_pixels(raster, tmp_path / "classes.tif", emd, arguments=arguments)
    pro = np.load(run_in_pro_host(tmp_path, emd, raster, "pixels", arguments))
    with rasterio.open(tmp_path / "classes.tif") as ds:
        want = ds.read(1)[PADDING:-PADDING, PADDING:-PADDING].astype(np.int64)
    assert pro.shape == want.shape == (352, 352)
    assert len(np.unique(want)) >= 3  # the trained model finds the scene's classes
    np.testing.assert_array_equal(pro, want)


def _off_the_border(rows: np.ndarray, size: int) -> np.ndarray:
    """The detections whose centre lies more than a pixel from the padding's border."""
    centre = (rows[:, :2] + rows[:, 2:4]) / 2
    near = (np.abs(centre - PADDING) <= 1) | (np.abs(centre - (size - PADDING)) <= 1)
    return rows[~near.any(axis=1)]


def test_detection_function_equals_detect_objects(models, tmp_path):
    raster, emd = models.scene.raster_path, models.fcos
    arguments = {"padding": PADDING, "threshold": 0.3, "nms_overlap": 0.1}
    # the Pro function runs its TorchScript copy (traced at the chip size) on tiles of one chip
    chip = {"tile_size": json.loads(emd.read_text())["ImageHeight"]}
    found = detect_objects(raster, tmp_path / "found.gpkg", emd, arguments=arguments | chip)
    pro = json.loads(run_in_pro_host(tmp_path, emd, raster, "objects", arguments).read_text())
    # Pro's tool merges blocks with a per-class NMS (run_nms), as rasterlearn's final NMS
    boxes = torch.tensor([f[:4] for f in pro], dtype=torch.float64).reshape(-1, 4)
    scores = torch.tensor([f[5] for f in pro], dtype=torch.float64)
    keep = torchvision.ops.batched_nms(boxes, scores, torch.tensor([f[4] for f in pro]), 0.1)
    got = np.array([[*pro[i][:4], pro[i][5]] for i in keep.tolist()]).reshape(-1, 5)

    frame = gpd.read_file(found)
    with rasterio.open(raster) as ds:
        inverse, size = ~ds.transform, ds.width
    corners = [(inverse @ (x0, y1), inverse @ (x1, y0)) for x0, y0, x1, y1 in frame.bounds.values]
    want = np.array([[*a, *b] for a, b in corners]).reshape(-1, 4)
    want = np.column_stack([want, frame["Confidence"]])
    centre = (want[:, :2] + want[:, 2:4]) / 2
    want = want[((centre >= PADDING) & (centre < size - PADDING)).all(axis=1)]
    # a centre within a pixel of the padding's border may fall on either side of it in the
    # two hosts' tilings (seen: 367.8 against a border at 368): compare the others
    want, got = (_off_the_border(rows, size) for rows in (want, got))
    assert len(want) >= 5
    assert got.shape == want.shape
    got, want = got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])]
    np.testing.assert_allclose(got[:, :4], want[:, :4], atol=1e-2)
    np.testing.assert_allclose(got[:, 4], want[:, 4], atol=1e-2)  # confidence 0-100


def test_packages_carry_the_pro_function_and_stay_ours(models, tmp_path):
    emd = models.unet
    folder, name = emd.parent, emd.stem
    definition = ModelDefinition.load(emd)
    assert definition.get("Framework") == "PyTorch"
    assert definition.get("InferenceFunction") == PRO_FUNCTION_FILE
    assert definition.get("TorchScript") == {"CPU": pro_model_file(name)}
    assert definition.get("ModelFile") == f"{name}.pth"
    with zipfile.ZipFile(folder / f"{name}.dlpk") as package:
        names = set(package.namelist())
        source = package.read(PRO_FUNCTION_FILE).decode()
    assert {PRO_FUNCTION_FILE, pro_model_file(name), f"{name}.pth", f"{name}.emd"} <= names
    assert "rasterlearn." not in source.replace("rasterlearn.inference", "")
    assert "import rasterlearn" not in source and "from rasterlearn" not in source
    assert isinstance(open_predictor(folder / f"{name}.dlpk", "cpu"), TorchPredictor)

    # a package written before: Framework rasterlearn, Pro's own function, no TorchScript copy
    old = tmp_path / name
    shutil.copytree(folder, old, ignore=shutil.ignore_patterns("*.dlpk", "*.py", "*-cpu.pt"))
    content = json.loads((old / f"{name}.emd").read_text())
    for key in ("TorchScript", "RasterlearnVersion"):
        content.pop(key)
    content["Framework"] = "rasterlearn"
    content["InferenceFunction"] = PRO_FUNCTIONS_PREFIX + "System\\X\\ArcGISImageClassifier.py"
    (old / f"{name}.emd").write_text(json.dumps(content, indent=4))
    assert isinstance(open_predictor(old, "cpu"), TorchPredictor)
    before = sorted(p.name for p in old.iterdir())
    package = package_model(old)
    assert sorted(p.name for p in old.iterdir()) == sorted([*before, f"{name}.dlpk"])
    with zipfile.ZipFile(package) as z:
        assert {PRO_FUNCTION_FILE, pro_model_file(name)} <= set(z.namelist())
        packaged = json.loads(z.read(f"{name}.emd"))
    assert packaged["Framework"] == "PyTorch"
    assert packaged["InferenceFunction"] == PRO_FUNCTION_FILE
