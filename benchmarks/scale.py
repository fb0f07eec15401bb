"""Scale-out benchmark: classify-pixels on a local Dask cluster of 2 workers against 1 worker
(one thread each) in the same run, the peak memory of each worker, 1 worker started with
Dask's default allocator setting, and a run in this process.

Run: ``.venv/bin/python benchmarks/scale.py [--size 2048] [--workdir DIR]``. The model is a
UNET trained for one epoch on a small synthetic export (its quality does not matter here).
All runs give byte-identical outputs; the script checks that too.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rasterlearn import export_training_data
from rasterlearn.execution.dask import local_cluster
from rasterlearn.execution.threads import default_workers
from rasterlearn.synthetic import make_scene
from rasterlearn.tools.classify_pixels import classify_pixels
from rasterlearn.tools.train_deep_learning_model import train_deep_learning_model


def worker_peak_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def train_unet(root: Path, chip: int) -> Path:
    scene = make_scene(root / "train-scene", width=768, height=768, seed=4)
    export_training_data(
        scene.raster_path,
        root / "chips",
        scene.polygons_path,
        metadata_format="Classified_Tiles",
        tile_size_x=chip,
        tile_size_y=chip,
        stride_x=chip // 2,
        stride_y=chip // 2,
    )
    result = train_deep_learning_model(
        root / "chips",
        root / "unet",
        max_epochs=1,
        model_type="UNET",
        batch_size=4,
        backbone_model="resnet18",
        learning_rate=1e-3,
    )
    return result.emd


def run_on_cluster(
    raster: Path, root: Path, model: Path, workers: int, dask_defaults: bool = False
) -> tuple[float, list]:
    """Seconds for classify-pixels on a warm LocalCluster, and each worker's peak RSS (MB).

    ``dask_defaults``: a LocalCluster as Dask starts it (``MALLOC_TRIM_THRESHOLD_=65536``)
    instead of rasterlearn's :func:`local_cluster`.
    """
    from distributed import Client, LocalCluster

    name = f"{workers}{'-dask' if dask_defaults else ''}"
    if dask_defaults:
        cluster_cm = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    else:
        cluster_cm = local_cluster(workers)
    with cluster_cm as cluster, Client(cluster) as client:
        address = cluster.scheduler_address
        # a first run warms the workers (imports, model load), as in any long job
        classify_pixels(raster, root / f"warm{name}.tif", model, scheduler=address)
        start = time.perf_counter()
        classify_pixels(raster, root / f"out{name}.tif", model, scheduler=address)
        seconds = time.perf_counter() - start
        peaks = sorted(client.run(worker_peak_mb).values())
    return seconds, peaks


def run_here(raster: Path, root: Path, model: Path) -> float:
    """Seconds for classify-pixels in this process (a lane a core), after a warm-up run."""
    classify_pixels(raster, root / "warm-here.tif", model)
    start = time.perf_counter()
    classify_pixels(raster, root / "out-here.tif", model)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2048, help="side of the raster (px)")
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--workdir", type=Path, default=None)
    opts = parser.parse_args()
    root = opts.workdir or Path(tempfile.mkdtemp(prefix="rl-bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    model = train_unet(root / "model", opts.chip)
    scene = make_scene(root / "scene", width=opts.size, height=opts.size, seed=8)
    one, peaks_one = run_on_cluster(scene.raster_path, root, model, 1)
    two, peaks_two = run_on_cluster(scene.raster_path, root, model, 2)
    dask_one, _ = run_on_cluster(scene.raster_path, root, model, 1, dask_defaults=True)
    here = run_here(scene.raster_path, root, model)
    outputs = ("out1.tif", "out2.tif", "out1-dask.tif", "out-here.tif")
    same = len({(root / name).read_bytes() for name in outputs}) == 1
    mpx = opts.size * opts.size / 1e6
    print(
        f"classify-pixels on 2 workers {one / two:.2f}x of 1 worker "
        f"({mpx / two:.2f} vs {mpx / one:.2f} Mpx/s, {opts.size} x {opts.size} px, one thread "
        f"a worker; identical outputs from 1 and 2 workers and this process: {same})",
        flush=True,
    )
    print(
        f"1 worker with Dask's default MALLOC_TRIM_THRESHOLD_ {one / dask_one:.2f}x of "
        f"rasterlearn's 1 worker ({mpx / dask_one:.2f} vs {mpx / one:.2f} Mpx/s)",
        flush=True,
    )
    print(
        f"in this process, {default_workers()} lanes: {two / here:.2f}x of 2 workers "
        f"({mpx / here:.2f} vs {mpx / two:.2f} Mpx/s)",
        flush=True,
    )
    print(
        "peak RSS per worker: "
        + ", ".join(f"{p:.0f} MB" for p in peaks_two)
        + f" (2 workers); {peaks_one[0]:.0f} MB (1 worker)",
        flush=True,
    )
    if opts.workdir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
