"""NMS benchmark: ``nms_boxes`` on a million tiled detections, against torchvision in the same run.

The input looks like detect-objects output over a 100,000 x 100,000 px raster cut into 512 px
tiles at a 448 px stride: objects of 12-28 px, each detected by every tile that sees at least
30 % of it (clipped at the tile edge, with a lower score when clipped), with a few pixels of
jitter, three classes. Objects near tile borders therefore come two to four times, partly cut.

torchvision's CPU kernel compares every kept box with every later box, O(N x kept): at a million
boxes that is ~10^12 IoUs (hours), so it is compared on a 100,000-box corner of the same layout
(same density). Its CUDA kernel needs an N x N/64 bit mask (125 GB at a million boxes).

Run: ``.venv/bin/python benchmarks/nms.py [--boxes 1000000] [--repeats 3]``. Timings are medians
(the machines are shared and noisy); peak RSS comes from a child process doing only the NMS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import shapely

from rasterlearn.inference.nms import _candidate_pairs, nms_boxes, nms_polygons

EXTENT = 100_000.0
TILE, STRIDE = 512.0, 448.0

RSS_CHILD = """
import sys, json
import numpy as np
from rasterlearn.inference.nms import nms_boxes

def peak_mb():  # VmHWM of this process only
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

data = np.load(sys.argv[1])
boxes, scores, classes = data["boxes"], data["scores"], data["classes"]
before = peak_mb()
kept = nms_boxes(boxes, scores, 0.5, classes)
print(json.dumps({"before_mb": before, "peak_mb": peak_mb(), "kept": len(kept)}))
"""


def tiled_detections(
    n_boxes: int, extent: float = EXTENT, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_boxes`` detections (boxes, scores, classes) from tiled inference over ``extent`` px."""
    rng = np.random.default_rng(seed)
    n_objects = int(n_boxes / 1.25) + 1000
    x0, y0 = rng.uniform(0, extent - 30, (2, n_objects))
    x1, y1 = x0 + rng.uniform(12, 28, n_objects), y0 + rng.uniform(12, 28, n_objects)
    cls = rng.integers(0, 3, n_objects)
    base = rng.uniform(0.3, 1.0, n_objects)

    def tiles(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = np.maximum(np.floor((lo - TILE) / STRIDE) + 1, 0).astype(np.int64)
        last = (np.ceil(hi / STRIDE) - 1).astype(np.int64)
        return first, last - first + 1

    fx, nx = tiles(x0, x1)
    fy, ny = tiles(y0, y1)
    obj = np.repeat(np.arange(n_objects), nx * ny)
    k = np.arange(len(obj)) - np.repeat(np.cumsum(nx * ny) - nx * ny, nx * ny)
    tx = (fx[obj] + k // ny[obj]) * STRIDE
    ty = (fy[obj] + k % ny[obj]) * STRIDE
    boxes = np.stack(
        [
            np.maximum(x0[obj], tx),
            np.maximum(y0[obj], ty),
            np.minimum(x1[obj], tx + TILE),
            np.minimum(y1[obj], ty + TILE),
        ],
        axis=1,
    )
    seen = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) / ((x1 - x0) * (y1 - y0))[obj]
    keep = seen >= 0.3
    boxes, obj, seen = boxes[keep], obj[keep], seen[keep]
    boxes += rng.normal(0, 1.0, boxes.shape)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
    scores = np.clip(base[obj] * np.sqrt(seen) + rng.normal(0, 0.02, len(obj)), 0.01, 1.0)
    order = rng.permutation(len(obj))[:n_boxes]
    return boxes[order], scores[order], cls[obj[order]]


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def strtree_pairs(boxes: np.ndarray) -> np.ndarray:
    """The alternative candidate search: a bulk STRtree query of the boxes against themselves."""
    geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    return shapely.STRtree(geoms).query(geoms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boxes", type=int, default=1_000_000)
    parser.add_argument("--baseline-boxes", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    import torchvision

    torch.set_num_threads(1)  # the kernel is single-threaded; keep the comparison fair
    n = args.boxes
    boxes, scores, classes = tiled_detections(n)
    print(f"input: {n} boxes over {EXTENT:.0f} x {EXTENT:.0f} px, 3 classes", flush=True)

    def grid() -> int:
        return sum(len(i) for i, _ in _candidate_pairs(boxes, None))

    t_grid, pairs = median_seconds(grid, args.repeats)
    t_tree, _ = median_seconds(lambda: strtree_pairs(boxes), args.repeats)
    print(
        f"candidate pairs at {n}: grid {t_tree / t_grid:.1f}x faster than shapely STRtree "
        f"bulk query ({t_grid:.2f} vs {t_tree:.2f} s, {pairs} overlapping pairs)",
        flush=True,
    )
    figures = {}
    for label, cls, thr in (("classes, IoU>0.5", classes, 0.5), ("one class, IoU>0", None, 0.0)):
        seconds, kept = median_seconds(lambda c=cls, t=thr: nms_boxes(boxes, scores, t, c), 3)
        figures[label] = seconds
        print(
            f"nms_boxes at {n} ({label}): {seconds:.2f} s, {n / seconds / 1e6:.2f} M boxes/s, "
            f"kept {len(kept)}",
            flush=True,
        )

    # torchvision on a corner of the same layout with the same density
    side = EXTENT * np.sqrt(args.baseline_boxes / n)
    small = tiled_detections(args.baseline_boxes, extent=side, seed=1)
    b, s, c = small
    tb, ts, tc = torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(c)
    for label, cls, thr in (("classes, IoU>0.5", c, 0.5), ("one class, IoU>0", None, 0.0)):
        ours, kept = median_seconds(lambda c=cls, t=thr: nms_boxes(b, s, t, c), args.repeats)

        def baseline(cls=cls, thr=thr) -> np.ndarray:
            if cls is None:
                return torchvision.ops.nms(tb, ts, thr).numpy()
            return torchvision.ops.batched_nms(tb, ts, tc, thr).numpy()

        theirs, reference = median_seconds(baseline, 1)
        same = np.array_equal(np.sort(reference), kept)
        print(
            f"nms_boxes at {len(b)} ({label}): {theirs / ours:.1f}x faster than torchvision "
            f"{'batched_nms' if cls is not None else 'nms'} CPU float64 "
            f"({ours:.3f} vs {theirs:.2f} s, same result: {same})",
            flush=True,
        )
        # torchvision's cost grows as N x kept: its time at the full size, extrapolated
        est = theirs * (n / len(b)) ** 2
        print(
            f"  torchvision at {n} extrapolated as N x kept: ~{duration(est)} vs "
            f"{figures[label]:.2f} s measured for nms_boxes",
            flush=True,
        )

    polys = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
    t_poly, kept_poly = median_seconds(lambda: nms_polygons(polys, s, 0.5, c), args.repeats)
    t_box, kept_box = median_seconds(lambda: nms_boxes(b, s, 0.5, c), args.repeats)
    print(
        f"nms_polygons at {len(b)} (box polygons, classes, IoU>0.5): {t_poly / t_box:.1f}x the "
        f"time of nms_boxes ({t_poly:.3f} vs {t_box:.3f} s, same result: "
        f"{np.array_equal(kept_poly, kept_box)})",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "detections.npz"
        np.savez(saved, boxes=boxes, scores=scores, classes=classes)
        child = subprocess.run(
            [sys.executable, "-c", RSS_CHILD, str(saved)],
            capture_output=True,
            text=True,
            check=True,
        )
    r = json.loads(child.stdout)
    input_mb = (boxes.nbytes + scores.nbytes + classes.nbytes) / 2**20
    print(
        f"nms_boxes peak RSS at {n}: {r['peak_mb']:.0f} MB, {r['peak_mb'] - r['before_mb']:.0f} MB "
        f"above the {r['before_mb']:.0f} MB after loading the input ({input_mb:.0f} MB of arrays)"
    )


if __name__ == "__main__":
    main()
