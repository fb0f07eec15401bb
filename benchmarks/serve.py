"""Job service overhead: a small classify-pixels job through ``rasterlearn serve`` (submit,
poll, download) against the same call in-process, in the same run.

Run: ``.venv/bin/python benchmarks/serve.py [--size 512] [--repeats 3] [--workdir DIR]``.
Prints the median seconds of each and the difference: the service's overhead (a new job
process importing the tool and loading the model, polling, the download), which a job pays
once whatever the raster's size.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rasterlearn import classify_pixels, export_training_data, train_deep_learning_model
from rasterlearn.synthetic import make_scene


def _model(work: Path) -> Path:
    scene = make_scene(work / "train", width=256, height=256, seed=5, cell=48)
    export_training_data(
        scene.raster_path, work / "chips", scene.polygons_path,
        metadata_format="Classified_Tiles", tile_size_x=64, tile_size_y=64,
    )  # fmt: skip
    trained = train_deep_learning_model(
        work / "chips", work / "model", max_epochs=1, model_type="UNET",
        backbone_model="resnet18", learning_rate=1e-3, batch_size=8,
    )  # fmt: skip
    return trained.emd


def _serve(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "rasterlearn.cli", "serve", "--data-dir", str(data)]
    proc = subprocess.Popen([*command, "--port", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/conformance")
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the service did not start")


def _through_service(url: str, inputs: dict) -> float:
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as c:
        r = c.post(
            "/processes/classify_pixels/execution",
            json={"inputs": inputs},
            headers={"Prefer": "respond-async"},
        )
        location = r.headers["Location"]
        while (status := c.get(location).json())["status"] not in ("successful", "failed"):
            time.sleep(0.05)
        assert status["status"] == "successful", status
        href = c.get(location + "/results").json()["out_classified_raster"]["href"]
        c.get(href).raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rl-serve-bench-"))
    data = work / "data"
    (data / "files").mkdir(parents=True, exist_ok=True)
    emd = _model(work)
    shutil.copytree(emd.parent, data / "files" / "model", dirs_exist_ok=True)
    scene = make_scene(data / "files", width=args.size, height=args.size, seed=6)
    raster = Path(scene.raster_path)
    local: list[float] = []
    for i in range(args.repeats):
        start = time.perf_counter()
        classify_pixels(raster, work / f"local-{i}.tif", emd, num_workers=1)
        local.append(time.perf_counter() - start)
    proc, url = _serve(data)
    try:
        inputs = {
            "in_raster": str(raster.relative_to(data)),
            "out_classified_raster": "classes.tif",
            "in_model_definition": f"files/model/{emd.name}",
            "num_workers": 1,
        }
        served = [_through_service(url, inputs) for _ in range(args.repeats)]
    finally:
        proc.terminate()
        proc.wait()
    a, b = statistics.median(local), statistics.median(served)
    size = f"{args.size}x{args.size} px"
    print(f"classify-pixels {size} in-process: {a:.2f} s (median of {args.repeats})")
    print(f"same job through the service (submit, poll, download): {b:.2f} s")
    print(f"service overhead: {b - a:+.2f} s per job ({100 * (b - a) / a:+.0f}%)")


if __name__ == "__main__":
    main()
