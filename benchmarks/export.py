"""Export benchmark: chips per second against a bare rasterio read+write of the same windows,
and peak memory on a 10,000 x 10,000 px 3-band raster.

Run: ``.venv/bin/python benchmarks/export.py [--size 10000] [--workdir DIR]``. Prints one line
per figure with its same-run baseline. Timings are medians of ``--repeats`` runs (the machines
are shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rasterio

from rasterlearn import export_training_data, read_export_folder
from rasterlearn.synthetic import make_scene

RSS_CHILD = """
import json, resource, sys, time
from rasterlearn import export_training_data

def peak_mb():  # VmHWM: unlike ru_maxrss it does not carry over the parent's peak across exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

before = peak_mb()
t = time.perf_counter()
r = export_training_data(sys.argv[1], sys.argv[2], sys.argv[3], metadata_format=sys.argv[4],
                         tile_size_x=256, tile_size_y=256, stride_x=128, stride_y=128)
lanes_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest lane process
print(json.dumps({"chips": r.num_chips, "seconds": time.perf_counter() - t,
                  "import_rss_mb": before, "peak_rss_mb": peak_mb(), "lane_rss_mb": lanes_mb}))
"""


def baseline_copy(raster: Path, chips: list[Path], out: Path) -> float:
    """Read each chip's window from the source with rasterio and write it as a GeoTIFF."""
    out.mkdir(parents=True)
    windows = []
    with rasterio.open(raster) as src:
        inverse = ~src.transform
        for chip in chips:
            with rasterio.open(chip) as ds:
                col, row = inverse @ (ds.transform.c, ds.transform.f)
                windows.append(rasterio.windows.Window(round(col), round(row), ds.width, ds.height))
        profile = {"driver": "GTiff", "count": src.count, "dtype": src.dtypes[0], "crs": src.crs}
        start = time.perf_counter()
        for i, window in enumerate(windows):
            data = src.read(window=window)
            with rasterio.open(
                out / f"{i:09d}.tif",
                "w",
                width=window.width,
                height=window.height,
                transform=src.window_transform(window),
                nodata=src.nodata,
                **profile,
            ) as dst:
                dst.write(data)
        return time.perf_counter() - start


def throughput(raster: Path, polygons: Path, work: Path, repeats: int, stride: int) -> None:
    ours, base, n = [], [], 0
    for k in range(repeats):
        out = work / f"export{k}"
        start = time.perf_counter()
        result = export_training_data(
            raster,
            out,
            polygons,
            tile_size_x=256,
            tile_size_y=256,
            stride_x=stride,
            stride_y=stride,
        )
        ours.append(time.perf_counter() - start)
        n = result.num_chips
        chips = [c.image for c in read_export_folder(out).chips]
        base.append(baseline_copy(raster, chips, work / f"baseline{k}"))
        shutil.rmtree(out)
        shutil.rmtree(work / f"baseline{k}")
    t_ours, t_base = statistics.median(ours), statistics.median(base)
    print(
        f"export throughput {t_base / t_ours:.2f}x of bare rasterio read+write of the same windows "
        f"({n / t_ours:.0f} vs {n / t_base:.0f} chips/s, {n} PASCAL_VOC chips of 256 px at "
        f"stride {stride}, median of {repeats})"
    )


def peak_memory(raster: Path, polygons: Path, work: Path, fmt: str) -> None:
    out = work / f"rss_{fmt}"
    proc = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(raster), str(out), str(polygons), fmt],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    size_mb = raster.stat().st_size / 2**20
    lanes = f", largest lane process {r['lane_rss_mb']:.0f} MB" if r["lane_rss_mb"] else ""
    print(
        f"export peak RSS {r['peak_rss_mb']:.0f} MB for a {size_mb:.0f} MB raster "
        f"({fmt}, {r['chips']} chips of 256 px stride 128 in {r['seconds']:.0f} s; "
        f"after imports alone {r['import_rss_mb']:.0f} MB{lanes})"
    )
    shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10_000, help="raster width and height in px")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(dir=args.workdir, prefix="rl-bench-"))
    try:
        t = time.perf_counter()
        scene = make_scene(work / "scene", width=args.size, height=args.size, bands=3, seed=0)
        elapsed = time.perf_counter() - t
        print(f"synthetic {args.size} x {args.size} px 3-band scene in {elapsed:.0f} s")
        for stride in (128, 256):  # the tool's default stride, and chips that do not overlap
            throughput(scene.raster_path, scene.polygons_path, work, args.repeats, stride)
        for fmt in ("PASCAL_VOC_rectangles", "Classified_Tiles"):
            peak_memory(scene.raster_path, scene.polygons_path, work, fmt)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
