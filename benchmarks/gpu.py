"""GPU check: training with mixed precision, and every inference tool on CUDA against the CPU.

Run on a machine with an NVIDIA GPU: ``python benchmarks/gpu.py [--out gpu.json]``. It makes a
synthetic scene, exports it (Classified_Tiles, PASCAL_VOC_rectangles, Labeled_Tiles), trains
UNET, FCOS and FEATURE_CLASSIFIER on the GPU (Lightning's 16-bit mixed precision, as the tool
chooses when a GPU is present), then runs classify-pixels, detect-objects and classify-objects
with ``device="cuda"`` and ``device="cpu"`` on an unseen scene of the same kind and compares
the outputs and the speeds, and exports the UNET to ONNX and checks the ONNX run. Each figure
is printed beside its same-run baseline; everything is also written as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import torch

from rasterlearn import (
    classify_objects,
    classify_pixels,
    detect_objects,
    export_training_data,
    train_deep_learning_model,
)
from rasterlearn.synthetic import make_scene
from rasterlearn.tools.export_model import export_model

CHIP = 128
GPU = "cuda" if torch.cuda.is_available() else "cpu"  # without a GPU: a dry run of the script


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def train(root: Path, epochs: int) -> dict[str, Any]:
    scene = make_scene(root / "train_scene", width=1024, height=1024, seed=5, cell=64)
    out: dict[str, Any] = {}
    for fmt, model_type in (
        ("Classified_Tiles", "UNET"),
        ("PASCAL_VOC_rectangles", "FCOS"),
        ("Labeled_Tiles", "FEATURE_CLASSIFIER"),
    ):
        chips = root / fmt
        export_training_data(
            scene.raster_path,
            chips,
            scene.polygons_path,
            metadata_format=fmt,
            tile_size_x=CHIP,
            tile_size_y=CHIP,
            stride_x=CHIP // 2,
            stride_y=CHIP // 2,
        )
        result, seconds = _timed(
            train_deep_learning_model,
            chips,
            root / "models" / model_type.lower(),
            model_type=model_type,
            max_epochs=epochs,
            backbone_model="resnet18",
            seed=1,
            stop_training=False,
        )
        out[model_type] = {
            "emd": str(result.emd),
            "seconds": round(seconds, 1),
            "epochs": result.epochs,
            "learning_rate": result.learning_rate,
            "metrics": {k: round(v, 4) for k, v in result.metrics.items()},
        }
        print(f"train {model_type}: {seconds:.1f} s, {result.epochs} epochs, {result.metrics}")
    return out


def compare_pixels(root: Path, raster: Path, emd: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, device in (("cuda", GPU), ("cpu", "cpu")):
        target = root / f"classified_{key}.tif"
        _, seconds = _timed(classify_pixels, raster, target, emd, device=device, overwrite=True)
        with rasterio.open(target) as ds:
            out[key] = {"seconds": round(seconds, 2), "data": ds.read(1)}
    with rasterio.open(raster) as ds:
        mpx = ds.width * ds.height / 1e6
    agree = float((out["cuda"]["data"] == out["cpu"]["data"]).mean())
    line = {
        "agreement": round(agree, 5),
        "cuda_mpx_s": round(mpx / out["cuda"]["seconds"], 2),
        "cpu_mpx_s": round(mpx / out["cpu"]["seconds"], 2),
    }
    print(f"classify-pixels: {line}")
    return line


def compare_detections(root: Path, raster: Path, emd: str, truth: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, device in (("cuda", GPU), ("cpu", "cpu")):
        target = root / f"detections_{key}.gpkg"
        _, seconds = _timed(detect_objects, raster, target, emd, device=device, overwrite=True)
        out[key] = (gpd.read_file(target), seconds)
    cuda, cpu = out["cuda"][0], out["cpu"][0]
    a_idx, b_idx = shapely.STRtree(cpu.geometry.values).query(
        cuda.geometry.values, predicate="intersects"
    )
    a, b = cuda.geometry.values[a_idx], cpu.geometry.values[b_idx]
    iou = shapely.area(shapely.intersection(a, b)) / shapely.area(shapely.union(a, b))
    matched = len(np.unique(a_idx[iou > 0.9]))
    line = {
        "cuda_objects": len(cuda),
        "cpu_objects": len(cpu),
        "matched_iou_0.9": matched,
        "truth_objects": len(gpd.read_file(truth)),
        "cuda_seconds": round(out["cuda"][1], 2),
        "cpu_seconds": round(out["cpu"][1], 2),
    }
    print(f"detect-objects: {line}")
    return line


def compare_objects(root: Path, raster: Path, emd: str, features: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, device in (("cuda", GPU), ("cpu", "cpu")):
        target = root / f"objects_{key}.gpkg"
        _, seconds = _timed(
            classify_objects,
            raster,
            target,
            emd,
            in_features=features,
            device=device,
            overwrite=True,
        )
        out[key] = (gpd.read_file(target), seconds)
    cuda, cpu = out["cuda"][0], out["cpu"][0]
    line = {
        "labels_equal": float((cuda["ClassLabel"] == cpu["ClassLabel"]).mean()),
        "max_confidence_difference": float(np.abs(cuda["Confidence"] - cpu["Confidence"]).max()),
        "cuda_seconds": round(out["cuda"][1], 2),
        "cpu_seconds": round(out["cpu"][1], 2),
    }
    print(f"classify-objects: {line}")
    return line


def check_onnx(root: Path, raster: Path, emd: str) -> dict[str, Any]:
    import onnxruntime

    exported = export_model(emd, "onnx", root / "unet_onnx", overwrite=True)
    target = root / "classified_onnx.tif"
    _, seconds = _timed(classify_pixels, raster, target, str(exported.emd), overwrite=True)
    with rasterio.open(target) as a, rasterio.open(root / "classified_cuda.tif") as b:
        agree = float((a.read(1) == b.read(1)).mean())
    line = {
        "providers": onnxruntime.get_available_providers(),
        "max_difference_to_pytorch": exported.max_difference,
        "agreement_with_cuda": round(agree, 5),
        "seconds": round(seconds, 2),
    }
    print(f"onnx: {line}")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=4096, help="side of the inference raster")
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    args = parser.parse_args()
    summary: dict[str, Any] = {
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    print(summary)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        summary["train"] = models = train(root, args.epochs)
        unseen = make_scene(root / "unseen", width=args.size, height=args.size, seed=9, cell=64)
        summary["classify_pixels"] = compare_pixels(root, unseen.raster_path, models["UNET"]["emd"])
        summary["detect_objects"] = compare_detections(
            root, unseen.raster_path, models["FCOS"]["emd"], unseen.polygons_path
        )
        summary["classify_objects"] = compare_objects(
            root, unseen.raster_path, models["FEATURE_CLASSIFIER"]["emd"], unseen.polygons_path
        )
        summary["onnx"] = check_onnx(root, unseen.raster_path, models["UNET"]["emd"])
    args.out.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
