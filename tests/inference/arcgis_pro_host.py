"""Runs a Python raster function as ArcGIS Pro's deep learning tools call it, without rasterlearn.

Used by ``test_pro_function.py`` in a subprocess started with ``python -I -S`` (no site: the
editable install of rasterlearn is not on the path) and the spec's ``site_packages`` folders
appended to ``sys.path``: the raster function of a rasterlearn package must run where
rasterlearn cannot be imported, as in ArcGIS Pro.

Usage: ``python -I -S arcgis_pro_host.py SPEC.json``. The spec names the function file, the
``.emd``, the raster (a ``.npy`` of ``(bands, rows, cols)``), the processing extent
``[row, col, rows, cols]``, the model arguments (given as text, as Pro passes them), what to
run (``pixels``, ``objects`` or ``chips``) and the output file.

As Pro does: ``initialize(model=..., device=-1)``, ``getParameterInfo()`` (its values are the
defaults of the arguments), ``getConfiguration(**scalars)``, then blocks of ``ty`` x ``tx``
pixels tiling the extent from its corner, each given with ``padding`` pixels of context on
every side (nodata, mask 0, beyond the raster), restricted to ``extractBands``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SPEC = json.loads(Path(sys.argv[1]).read_text()) if __name__ == "__main__" else {}
sys.path.extend(SPEC.get("site_packages", []))

import numpy as np  # noqa: E402  (from the site packages just added)


def _function(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, path.stem)()


def _window(raster: np.ndarray, row: int, col: int, rows: int, cols: int):
    """Pixels of a window (zeros beyond the raster) and its mask, as Pro passes them."""
    bands, height, width = raster.shape
    pixels = np.zeros((bands, rows, cols), dtype=raster.dtype)
    mask = np.zeros((bands, rows, cols), dtype=np.uint8)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + rows, height), min(col + cols, width)
    if r1 > r0 and c1 > c0:
        pixels[:, r0 - row : r1 - row, c0 - col : c1 - col] = raster[:, r0:r1, c0:c1]
        mask[:, r0 - row : r1 - row, c0 - col : c1 - col] = 1
    return pixels, mask


def _blocks(extent: list[int], ty: int, tx: int):
    row, col, rows, cols = extent
    for r in range(row, row + rows, ty):
        for c in range(col, col + cols, tx):
            yield r, c


def _pixels(function: object, raster: np.ndarray, spec: dict, config: dict, scalars: dict):
    pad, ty, tx = int(config["padding"]), int(config["ty"]), int(config["tx"])
    info = function.updateRasterInfo(
        raster_info={"bandCount": raster.shape[0], "pixelType": "u1"},
        output_info={"bandCount": 1, "pixelType": "i4", "noData": None},
        **scalars,
    )["output_info"]
    row, col, rows, cols = spec["extent"]
    out = np.full((rows, cols), -1, dtype=np.int64)
    for r, c in _blocks(spec["extent"], ty, tx):
        pixels, mask = _window(raster, r - pad, c - pad, ty + 2 * pad, tx + 2 * pad)
        blocks = function.updatePixels(
            (c, r),
            (ty, tx),
            {"pixelType": info["pixelType"]},
            raster_pixels=pixels,
            raster_mask=mask,
        )
        values = np.where(blocks["output_mask"] != 0, blocks["output_pixels"], -1)
        h, w = min(ty, row + rows - r), min(tx, col + cols - c)
        out[r - row : r - row + h, c - col : c - col + w] = values[:h, :w]
    np.save(spec["out"], out)
    return info


def _objects(function: object, raster: np.ndarray, spec: dict, config: dict) -> None:
    pad, ty, tx = int(config["padding"]), int(config["ty"]), int(config["tx"])
    found = []
    for r, c in _blocks(spec["extent"], ty, tx):
        top, left = r - pad, c - pad
        pixels, mask = _window(raster, top, left, ty + 2 * pad, tx + 2 * pad)
        result = function.vectorize(raster_pixels=pixels, raster_mask=mask)
        for feature in json.loads(result["output_vectors"])["features"]:
            ring = np.asarray(feature["geometry"]["rings"][0], dtype=np.float64)
            xs, ys = ring[:, 0] + left, ring[:, 1] + top
            attributes = feature["attributes"]
            found.append([xs.min(), ys.min(), xs.max(), ys.max(), attributes["Classvalue"],
                          attributes["Confidence"], attributes["Class"]])  # fmt: skip
    Path(spec["out"]).write_text(json.dumps(found))


def _chips(function: object, spec: dict) -> None:
    chips = np.load(spec["raster"])
    result = function.vectorize(
        rasters_pixels=list(chips), rasters_mask=[np.ones_like(c, dtype=np.uint8) for c in chips]
    )
    features = json.loads(result["output_vectors"])["features"]
    Path(spec["out"]).write_text(json.dumps([f["attributes"] for f in features]))


def main() -> None:
    try:
        import rasterlearn  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("rasterlearn is importable: the host must run without it")
    spec = SPEC
    function = _function(Path(spec["function"]))
    function.initialize(model=spec["emd"], device=-1)
    parameters = function.getParameterInfo()
    names = [p["name"] for p in parameters]
    assert names[:2] in (["raster", "model"], ["rasters", "model"]), names
    scalars = {p["name"]: str(p["value"]) for p in parameters[2:] if p.get("value") is not None}
    scalars.update({k: str(v) for k, v in spec.get("arguments", {}).items()})
    config = function.getConfiguration(**scalars)
    if spec["run"] == "chips":
        _chips(function, spec)
        return
    raster = np.load(spec["raster"])[list(config["extractBands"])]
    if spec["run"] == "pixels":
        _pixels(function, raster, spec, config, scalars)
    else:
        assert function.getGeometryType() == 4
        assert "Confidence" in function.getFields()
        _objects(function, raster, spec, config)


if __name__ == "__main__":
    main()
