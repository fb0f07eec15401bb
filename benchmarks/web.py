"""The label page on a 20,000 x 20,000 px raster: it opens at once and pans with the server's
memory bounded, and the server reads only the tiles shown.

Run: ``.venv/bin/python benchmarks/web.py [--size 20000] [--pans 12] [--workdir DIR]``.

Writes a tiled, compressed 3-band GeoTIFF of constant 512 px blocks with overviews (cheap to
make: the test is what the service reads, not the pixels), starts ``rasterlearn label`` on it,
opens the page in Chromium (Playwright), zooms to full resolution and pans. Prints, with the
baselines measured in the same run: the page's time to its first complete render, the tiles
the browser asked for against the tiles the views cover, and the server's peak RSS against its
RSS before the page opened; all of it also for a small raster (the baseline, same run), so that
the memory a 20,000 px raster costs is compared with what a small one does.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import rasterio
from affine import Affine
from playwright.sync_api import sync_playwright
from rasterio.enums import Resampling
from rasterio.windows import Window

BLOCK = 512
VIEWPORT = {"width": 1200, "height": 800}


def make_raster(path: Path, size: int) -> None:
    """A tiled DEFLATE GeoTIFF of constant blocks (colour from the block's place), overviews
    down to one block."""
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "crs": "EPSG:32617",
        "transform": Affine(0.5, 0, 400000, 0, -0.5, 3300000),
    }
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, size, BLOCK):
            for col in range(0, size, BLOCK):
                h, w = min(BLOCK, size - row), min(BLOCK, size - col)
                colour = ((row // BLOCK * 37) % 256, (col // BLOCK * 53) % 256, 128)
                block = np.empty((3, h, w), dtype=np.uint8)
                block[:] = np.array(colour, dtype=np.uint8)[:, None, None]
                ds.write(block, window=Window(col, row, w, h))
        levels = [2**i for i in range(1, math.ceil(math.log2(size / BLOCK)) + 1)]
        ds.build_overviews(levels, Resampling.nearest)


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _start(raster: Path, data: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "rasterlearn.cli", "label", str(raster), "--port", str(port)]
    proc = subprocess.Popen(
        [*args, "--data-dir", str(data)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    page_url = proc.stdout.readline().decode().strip()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(url + "/conformance")
            return proc, url, page_url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("rasterlearn label did not start")


def _covered_tiles(views: list[dict], info: dict) -> set[tuple[int, int, int]]:
    """The tiles each view's extent covers at the level the map draws (independently of
    OpenLayers: from the view's centre, resolution and size)."""
    tiles = set()
    left, top, size = info["extent"][0], info["extent"][3], info["tile_size"]
    for v in views:
        z = v["z"]
        res = info["resolutions"][z]
        (cx, cy), r, (w, h) = v["center"], v["resolution"], v["size"]
        x0, x1 = cx - w / 2 * r, cx + w / 2 * r
        y0, y1 = cy - h / 2 * r, cy + h / 2 * r
        span = size * res
        columns = math.ceil((info["extent"][2] - left) / span)
        rows = math.ceil((top - info["extent"][1]) / span)
        xs = range(
            max(0, math.floor((x0 - left) / span)), min(columns, math.ceil((x1 - left) / span))
        )
        ys = range(max(0, math.floor((top - y1) / span)), min(rows, math.ceil((top - y0) / span)))
        tiles.update((z, tx, ty) for tx in xs for ty in ys)
    return tiles


_VIEW = """() => {
    const map = window.rasterlearn.map, v = map.getView();
    const layer = map.getLayers().item(0);
    const z = layer.getSource().getTileGrid().getZForResolution(v.getResolution(), 0);
    return {center: v.getCenter(), resolution: v.getResolution(), size: map.getSize(), z};
}"""
_RENDERED = """() => new Promise((done) => {
    const map = window.rasterlearn.map;
    map.once("rendercomplete", () => done(true));
    map.render();
})"""


def browse(page_url: str, pans: int, server: int) -> dict:
    requested: list[str] = []
    views = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport=VIEWPORT)
        page.on(
            "request", lambda r: requested.append(r.url) if "/imagery/tiles/" in r.url else None
        )
        start = time.perf_counter()
        page.goto(page_url)
        page.wait_for_selector("body[data-ready=true]", timeout=120_000)
        page.evaluate(_RENDERED)
        opened = time.perf_counter() - start
        views.append(page.evaluate(_VIEW))
        info = page.evaluate("() => window.rasterlearn.info")
        finest = info["resolutions"][-1]
        page.evaluate(f"() => window.rasterlearn.map.getView().setResolution({finest})")
        page.evaluate(_RENDERED)
        views.append(page.evaluate(_VIEW))
        step = VIEWPORT["width"] * finest * 0.8
        pan_seconds = []
        for i in range(pans):
            dx, dy = (step, 0) if i % 4 != 3 else (0, -step)
            t = time.perf_counter()
            page.evaluate(
                f"""() => {{
                    const v = window.rasterlearn.map.getView(), c = v.getCenter();
                    v.setCenter([c[0] + {dx}, c[1] + {dy}]);
                }}"""
            )
            page.evaluate(_RENDERED)
            pan_seconds.append(time.perf_counter() - t)
            views.append(page.evaluate(_VIEW))
        browser.close()
    return {
        "opened": opened,
        "pans": pan_seconds,
        "requested": requested,
        "covered": _covered_tiles(views, info),
        "views": len(views),
        "peak": _status(server, "VmHWM"),
    }


def measure(size: int, pans: int, work: Path) -> dict:
    """Make a raster of ``size`` px, serve it, browse it; the figures."""
    raster = work / f"raster-{size}.tif"
    start = time.perf_counter()
    if not raster.exists():
        make_raster(raster, size)
    made = time.perf_counter() - start
    proc, url, page_url = _start(raster, work / f"data-{size}")
    try:
        idle = _status(proc.pid, "VmRSS")
        t = time.perf_counter()
        httpx.get(url + "/imagery/info", params={"raster": f"files/{raster.name}"})
        info_seconds = time.perf_counter() - t
        result = browse(page_url, pans, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    return {**result, "size": size, "made": made, "idle": idle, "info": info_seconds,
            "disk": raster.stat().st_size}  # fmt: skip


def report(m: dict) -> None:
    size, mib = m["size"], 2**20
    distinct = {u.split("?")[0] for u in m["requested"]}
    pans = sorted(m["pans"])
    print(
        f"{size} x {size} px x 3 bands ({size**2 * 3 / mib:.0f} MiB of pixels, "
        f"{m['disk'] / 1e6:.1f} MB on disk, made in {m['made']:.1f} s):"
    )
    print(f"  raster info (open, statistics from an overview): {m['info']:.2f} s")
    print(f"  page open to its first complete render: {m['opened']:.2f} s")
    print(f"  pan at full resolution to a complete render: median {pans[len(pans) // 2]:.2f} s")
    print(
        f"  tiles requested: {len(m['requested'])} ({len(distinct)} distinct) over {m['views']} "
        f"views; tiles the views cover: {len(m['covered'])}; the raster at full resolution: "
        f"{math.ceil(size / 256) ** 2}"
    )
    print(
        f"  server RSS: peak {m['peak'] / mib:.0f} MiB, {m['idle'] / mib:.0f} MiB before the "
        f"page opened (+{(m['peak'] - m['idle']) / mib:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--baseline-size", type=int, default=2048)
    parser.add_argument("--pans", type=int, default=12)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rl-web-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        small = measure(args.baseline_size, args.pans, work)
        big = measure(args.size, args.pans, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    report(small)
    report(big)
    ratio = (big["peak"] - big["idle"]) / max(1, small["peak"] - small["idle"])
    pixels = (args.size / args.baseline_size) ** 2
    print(
        f"server memory growth while browsing: {ratio:.2f}x the {args.baseline_size} px "
        f"raster's for {pixels:.0f}x the pixels"
    )


if __name__ == "__main__":
    main()
