"""Dask execution (rasterlearn.execution.dask) and Export Training Data on a cluster.

Everything runs on a real ``LocalCluster`` of two worker processes (started once for the
module). The distributed export must write a folder byte for byte identical to the export in
one process, also when a worker process dies in the middle of the run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster, WorkerPlugin
from typer.testing import CliRunner

from rasterlearn import export_training_data
from rasterlearn.cli import app
from rasterlearn.errors import InputError, ParameterError, RasterLearnError
from rasterlearn.execution.dask import (
    ClusterSpec,
    dask_client,
    map_blocks,
    map_blocks_staged,
    parse_cluster,
)
from rasterlearn.synthetic import SyntheticScene

pytest_plugins = ["conftest_http"]  # fixtures: cog, range_server, gdal_http_env, closed_port

WORKER_AGENT = "rasterlearn-test-worker"
SMALL = {"tile_size_x": 128, "tile_size_y": 128, "stride_x": 64, "stride_y": 64}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two single-threaded worker processes; their GDAL identifies itself as WORKER_AGENT."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env={"GDAL_HTTP_USERAGENT": WORKER_AGENT, "NO_PROXY": "127.0.0.1,localhost"},
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def healthy(client: Client) -> Client:
    """The module's client, once both workers are up (a test before may have killed one)."""
    client.wait_for_workers(2, timeout=60)
    return client


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under a folder, by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_same_folder(actual: Path, expected: Path) -> None:
    got, want = folder_bytes(actual), folder_bytes(expected)
    assert sorted(got) == sorted(want)
    differing = [name for name in want if got[name] != want[name]]
    assert not differing, f"files differ: {differing[:5]}"


# --- parse_cluster / dask_client ---------------------------------------------------------


def test_parse_cluster_accepts_local_and_scheduler() -> None:
    assert parse_cluster(None, None) is None
    assert parse_cluster("local:3", None) == ClusterSpec(n_workers=3)
    assert parse_cluster("LOCAL:1", None) == ClusterSpec(n_workers=1)
    assert parse_cluster("local", None).n_workers >= 1
    assert parse_cluster(None, "tcp://10.0.0.5:8786") == ClusterSpec(address="tcp://10.0.0.5:8786")
    assert parse_cluster(None, "tcp://[::1]:8786").address == "tcp://[::1]:8786"


@pytest.mark.parametrize(
    ("cluster", "scheduler"),
    [
        ("local:0", None),
        ("local:-2", None),
        ("local:two", None),
        ("remote:2", None),
        ("", None),
        (None, "10.0.0.5:8786"),
        (None, "http://10.0.0.5:8786"),
        (None, "tcp://10.0.0.5"),
        (None, "tcp://10.0.0.5:99999"),
        ("local:2", "tcp://10.0.0.5:8786"),
    ],
)
def test_parse_cluster_rejects_malformed(cluster: str | None, scheduler: str | None) -> None:
    with pytest.raises(ParameterError) as err:
        parse_cluster(cluster, scheduler)
    assert "\n" not in str(err.value)
    assert err.value.hint


def test_no_cluster_runs_in_process() -> None:
    with dask_client(None, None) as client:
        assert client is None
    assert list(map_blocks(None, pow, [1, 2, 3], 2)) == [1, 4, 9]


def test_unreachable_scheduler_fails_fast(closed_port: int) -> None:
    start = time.monotonic()
    with (
        pytest.raises(ParameterError) as err,
        dask_client(scheduler=f"tcp://127.0.0.1:{closed_port}", timeout=1),
    ):
        pass
    assert f"127.0.0.1:{closed_port}" in str(err.value)
    assert "\n" not in str(err.value)
    assert time.monotonic() - start < 60  # an error, not a hang


def test_scheduler_without_workers_is_an_error() -> None:
    with LocalCluster(
        n_workers=0, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    ) as empty:
        with (
            pytest.raises(ParameterError, match="has no workers") as err,
            dask_client(scheduler=empty.scheduler_address, timeout=1),
        ):
            pass
        assert "dask worker" in err.value.hint


def test_local_cluster_is_started_and_closed() -> None:
    """local:1 starts one single-threaded worker process; a worker that keeps dying is an error."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with dask_client("local:1") as client:
            assert list(client.nthreads().values()) == [1]
            pids = client.run(os.getpid)
            assert os.getpid() not in pids.values()
            assert list(map_blocks(client, pow, [2, 3], 3)) == [8, 27]
            with pytest.raises(RasterLearnError, match="died"):
                list(map_blocks(client, _exit_process, [1]))
        assert client.status == "closed"


_ENVIRON_KEYS = ("OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED")


def _environ() -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in _ENVIRON_KEYS}


def test_local_cluster_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers run one thread with glibc's own memory settings; this process's environment
    is left as it was (Dask's nanny writes its worker settings into it)."""
    for key in _ENVIRON_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PYTHONHASHSEED", "7")
    before = _environ()
    with dask_client("local:1") as client:
        (worker,) = client.run(_environ).values()
    assert worker["OMP_NUM_THREADS"] == "1"
    assert worker["MALLOC_TRIM_THRESHOLD_"] is None
    assert _environ() == before


def _exit_process(block: int) -> None:
    os._exit(1)


# --- map_blocks ----------------------------------------------------------------------------


def _slow_square(block: int, delays: list[float]) -> tuple[int, int]:
    time.sleep(delays[block])
    return block, block * block


def test_map_blocks_keeps_block_order(healthy: Client) -> None:
    delays = [0.2 if i % 3 == 0 else 0.0 for i in range(12)]  # early blocks finish last
    results = list(map_blocks(healthy, _slow_square, range(12), delays))
    assert results == [(i, i * i) for i in range(12)]
    assert results == list(map_blocks(None, _slow_square, range(12), [0.0] * 12))


def test_map_blocks_bounds_blocks_in_flight(healthy: Client) -> None:
    pulled = 0

    def blocks() -> Iterator[int]:
        nonlocal pulled
        for i in range(10):
            pulled += 1
            yield i

    for k, value in enumerate(map_blocks(healthy, abs, blocks(), max_in_flight=3)):
        assert value == k
        assert pulled <= k + 3


def _fail_once(block: int, flags: str) -> int:
    flag = Path(flags) / f"failed-{block}"
    if block == 3 and not flag.exists():
        flag.touch()
        raise RuntimeError("transient failure")
    return block


def test_map_blocks_retries_failed_blocks(healthy: Client, tmp_path: Path) -> None:
    assert list(map_blocks(healthy, _fail_once, range(6), str(tmp_path), retries=1)) == list(
        range(6)
    )
    assert (tmp_path / "failed-3").exists()
    (tmp_path / "failed-3").unlink()
    with pytest.raises(RuntimeError, match="transient"):
        list(map_blocks(healthy, _fail_once, range(6), str(tmp_path), retries=0))


def _user_error(block: int, flags: str) -> int:
    (Path(flags) / f"attempt-{time.monotonic_ns()}").touch()
    raise InputError(f"block {block} is unreadable", "fix block files")


def test_map_blocks_user_errors_keep_their_hint_and_are_not_retried(
    healthy: Client, tmp_path: Path
) -> None:
    with pytest.raises(InputError) as err:
        list(map_blocks(healthy, _user_error, [7], str(tmp_path), retries=3))
    assert str(err.value) == "block 7 is unreadable (fix block files)"
    assert len(list(tmp_path.glob("attempt-*"))) == 1


def _row_sum(block: int, matrix: np.ndarray) -> float:
    return float(matrix[block].sum())


def test_map_blocks_sends_large_arguments_once(healthy: Client) -> None:
    """A constant argument is one key on the cluster that every block task refers to."""
    matrix = np.arange(8 * 200_000, dtype=np.float64).reshape(8, -1)
    results = map_blocks(healthy, _row_sum, range(8), matrix)
    first = next(results)
    held = [k for k in healthy.who_has() if k.startswith("ndarray-")]
    assert len(held) == 1
    dependencies = healthy.run_on_scheduler(_dependencies_of_blocks)
    assert dependencies and all(deps == held for deps in dependencies.values())
    assert [first, *results] == [float(row.sum()) for row in matrix]


def _dependencies_of_blocks(dask_scheduler: object) -> dict[str, list[str]]:
    return {
        key: [d.key for d in ts.dependencies]
        for key, ts in dask_scheduler.tasks.items()
        if str(key).startswith("row_sum-")
    }


def _work(block: int, scale: int) -> tuple[int, tuple[int, list[int]]]:
    return block, (os.getpid(), [block * scale] * (block + 1))


def _finish(payload: tuple[int, list[int]], first: int, scale: int) -> tuple[int, int, list]:
    pid, items = payload
    return first, int(pid == os.getpid()), items


def test_map_blocks_staged_decides_in_order_and_finishes_in_place(healthy: Client) -> None:
    offset = 0

    def decide(summary: int) -> int:
        nonlocal offset
        first, offset = offset, offset + summary + 1
        return first

    results = list(
        map_blocks_staged(healthy, _work, _finish, range(8), 10, decide=decide, max_in_flight=4)
    )
    assert [s for s, _ in results] == list(range(8))
    firsts = [r[0] for _, r in results]
    assert firsts == [sum(range(1, i + 1)) for i in range(8)]  # running totals, block order
    assert all(r[1] == 1 for _, r in results), "finish ran where its payload was"
    assert [r[2] for _, r in results] == [[i * 10] * (i + 1) for i in range(8)]
    offset = 0
    assert list(map_blocks_staged(None, _work, _finish, range(8), 10, decide=decide)) == [
        (s, (r[0], 1, r[2])) for s, r in results
    ]


# --- distributed export ----------------------------------------------------------------------

CASES = {
    "voc": ("polygons", {"metadata_format": "PASCAL_VOC_rectangles"}),
    "kitti-resampled": (
        "polygons",
        {"metadata_format": "KITTI_rectangles", "cell_size": 0.75},
    ),
    "classified-raster-png": (
        "class_raster",
        {"metadata_format": "Classified_Tiles", "image_chip_format": "PNG"},
    ),
    "classified-rotated": (
        "polygons",
        {"metadata_format": "Classified_Tiles", "rotation_angle": 90},
    ),
    "rcnn": ("polygons", {"metadata_format": "RCNN_Masks"}),
    "labeled": ("polygons", {"metadata_format": "Labeled_Tiles", "tile_size_x": 64}),
    "imagenet": ("polygons", {"metadata_format": "Imagenet", "crop_mode": "BOUNDING_BOX"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_export_on_cluster_is_byte_identical(
    case: str, scene: SyntheticScene, healthy: Client, cluster: LocalCluster, tmp_path: Path
) -> None:
    labels, options = CASES[case]
    class_data = getattr(scene, f"{labels}_path")
    kwargs = {**SMALL, "output_nofeature_tiles": True, **options}
    one = export_training_data(scene.raster_path, tmp_path / "one", class_data, **kwargs)
    many = export_training_data(
        scene.raster_path,
        tmp_path / "many",
        class_data,
        scheduler=cluster.scheduler_address,
        **kwargs,
    )
    assert many == dataclasses.replace(one, out_folder=tmp_path / "many")
    assert one.num_chips > 8  # several blocks per worker
    assert_same_folder(tmp_path / "many", tmp_path / "one")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folders
    # the workers closed the rasters of the finished job
    assert set(healthy.run(_open_jobs).values()) == {0}


def _open_jobs() -> int:
    from rasterlearn.execution.cache import WORKER_CACHE

    return sum(1 for key in WORKER_CACHE if key[0] == "export")


def test_export_on_cluster_multiband_nodata_and_items_separately(
    scene_multiband: SyntheticScene, scene: SyntheticScene, cluster: LocalCluster, tmp_path: Path
) -> None:
    """Float statistics over several sources, merged in plan order, give identical sums."""
    folder = tmp_path / "items"
    folder.mkdir()
    shutil.copy(scene_multiband.raster_path, folder / "a.tif")
    shutil.copy(scene_multiband.raster_path, folder / "b.tif")
    kwargs = {
        **SMALL,
        "metadata_format": "Export_Tiles",
        "processing_mode": "PROCESS_ITEMS_SEPARATELY",
        "output_nofeature_tiles": True,
        "max_nodata_fraction": 0.3,
    }
    one = export_training_data(folder, tmp_path / "one", **kwargs)
    export_training_data(folder, tmp_path / "many", scheduler=cluster.scheduler_address, **kwargs)
    assert one.num_chips > 8
    assert_same_folder(tmp_path / "many", tmp_path / "one")


def test_export_survives_killed_workers(
    scene: SyntheticScene, healthy: Client, cluster: LocalCluster, tmp_path: Path
) -> None:
    """A worker dies while cutting block 2 and another while writing block 1: same folder."""
    kwargs = {**SMALL, "metadata_format": "PASCAL_VOC_rectangles", "output_nofeature_tiles": True}
    export_training_data(scene.raster_path, tmp_path / "one", scene.polygons_path, **kwargs)
    flags = {
        r"export-work-[0-9a-f]+-2": str(tmp_path / "killed-work-2"),
        r"export-finish-[0-9a-f]+-1": str(tmp_path / "killed-finish-1"),
    }

    class KillOnFirstAttempt(WorkerPlugin):
        """Kills the worker process the first time it starts one of the given tasks."""

        name = "kill-on-first-attempt"

        def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
            if finish != "executing":
                return
            for pattern, flag in flags.items():
                if re.fullmatch(pattern, str(key)) and not os.path.exists(flag):
                    open(flag, "w").close()
                    os._exit(1)

    healthy.register_plugin(KillOnFirstAttempt())  # a local class travels by value
    try:
        export_training_data(
            scene.raster_path,
            tmp_path / "many",
            scene.polygons_path,
            scheduler=cluster.scheduler_address,
            **kwargs,
        )
    finally:
        healthy.unregister_worker_plugin(KillOnFirstAttempt.name)
    assert all(Path(flag).exists() for flag in flags.values()), "both workers were killed"
    assert_same_folder(tmp_path / "many", tmp_path / "one")


def test_export_on_cluster_reads_url_on_the_workers(
    scene: SyntheticScene,
    cog: Path,
    range_server,
    gdal_http_env,
    cluster: LocalCluster,
    healthy: Client,
    tmp_path: Path,
) -> None:
    """Workers read their windows straight from the URL; this process reads only the header."""
    shutil.copy(cog, range_server.root / "scene.tif")
    kwargs = {**SMALL, "metadata_format": "PASCAL_VOC_rectangles"}
    export_training_data(cog, tmp_path / "local", scene.polygons_path, **kwargs)
    export_training_data(
        range_server.url("scene.tif"),
        tmp_path / "remote",
        scene.polygons_path,
        scheduler=cluster.scheduler_address,
        **kwargs,
    )
    assert_same_folder(tmp_path / "remote", tmp_path / "local")
    requests = range_server.log()
    by_workers = sum(r.body_bytes for r in requests if r.user_agent == WORKER_AGENT)
    by_client = sum(r.body_bytes for r in requests if r.user_agent != WORKER_AGENT)
    assert by_workers > cog.stat().st_size / 2
    assert by_client <= 64 * 1024  # the header: GDAL reads 16 KiB at a time
    assert all(r.status == 206 for r in requests if r.method == "GET")


def test_cli_export_on_cluster(
    scene: SyntheticScene, cluster: LocalCluster, tmp_path: Path
) -> None:
    args = ["--class-data", str(scene.polygons_path), "--tile-size-x", "128"]
    args += ["--tile-size-y", "128", "--stride-x", "64", "--stride-y", "64"]
    one = CliRunner().invoke(
        app, ["export-training-data", str(scene.raster_path), str(tmp_path / "one"), *args]
    )
    assert one.exit_code == 0, one.output
    many = CliRunner().invoke(
        app,
        [
            "export-training-data",
            str(scene.raster_path),
            str(tmp_path / "many"),
            *args,
            "--scheduler",
            cluster.scheduler_address,
        ],
    )
    assert many.exit_code == 0, many.output
    assert_same_folder(tmp_path / "many", tmp_path / "one")
    bad = CliRunner().invoke(
        app,
        [
            "export-training-data",
            str(scene.raster_path),
            str(tmp_path / "bad"),
            *args,
            "--cluster",
            "local:0",
        ],
    )
    assert bad.exit_code == 2
    assert bad.output.count("\n") == 1 and "local:0" in bad.output
    assert not (tmp_path / "bad").exists()
