"""Blocks of work in block order: the size policy, lanes, staged runs, and a Dask cluster."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rasterlearn.errors import InputError
from rasterlearn.execution.blocks import (
    MAX_UNITS_PER_BLOCK,
    TARGET_BLOCKS,
    block_size,
    blocks_of,
    run_blocks,
    run_blocks_staged,
)
from rasterlearn.execution.dask import dask_client


def test_blocks_keep_order():
    items = list(range(100))
    blocks = blocks_of(items, 7)
    assert [x for b in blocks for x in b] == items
    assert all(len(b) == 7 for b in blocks[:-1]) and len(blocks[-1]) == 100 % 7
    assert blocks_of([], 4) == []


@pytest.mark.parametrize("n_items", [0, 1, 5, 64, 225, 1000, 2048, 4097, 100_000])
@pytest.mark.parametrize("unit", [1, 4, 16])
def test_blocks_are_whole_units_and_many(n_items, unit):
    size = block_size(n_items, unit)
    assert size % unit == 0
    assert unit <= size <= unit * MAX_UNITS_PER_BLOCK
    blocks = -(-n_items // size)
    largest = size == unit * MAX_UNITS_PER_BLOCK
    # at least the target number of blocks, unless blocks would be smaller than a unit
    assert blocks >= min(TARGET_BLOCKS, -(-n_items // unit)) or largest
    # and no more than needed: one unit more a block would make fewer than the target
    if not largest:
        assert n_items // (size + unit) < TARGET_BLOCKS


def _square_all(block: list[int], job: int) -> list[int]:
    time.sleep(0.002 * (block[0] % 3))  # finish out of order on lanes
    return [x * x + job for x in block]


@pytest.mark.parametrize("lanes", [1, 2, 5])
def test_results_come_in_block_order_whatever_the_lanes(lanes):
    blocks = blocks_of(list(range(50)), 3)
    results = list(run_blocks(_square_all, blocks, 1, lanes=lanes))
    assert results == [[x * x + 1 for x in b] for b in blocks]


def test_lanes_run_side_by_side_and_bound_the_blocks_in_flight():
    pulled: list[int] = []
    running: set[int] = set()
    most = 0
    lock = threading.Lock()

    def blocks() -> Iterator[int]:
        for i in range(40):
            pulled.append(i)
            yield i

    def work(block: int, job: None) -> int:
        nonlocal most
        with lock:
            running.add(block)
            most = max(most, len(running))
        time.sleep(0.005)
        with lock:
            running.discard(block)
        return block

    for i, _ in enumerate(run_blocks(work, blocks(), None, lanes=3)):
        assert len(pulled) <= i + 2 * 3
    assert most > 1


def test_stopping_early_cancels_queued_blocks():
    started: list[int] = []
    gate = threading.Event()

    def work(block: int, job: None) -> int:
        started.append(block)
        if block == 1:
            gate.wait(5)
        return block

    results = run_blocks(work, range(100), None, lanes=2)
    assert next(results) == 0
    results.close()
    gate.set()
    time.sleep(0.05)
    assert len(started) <= 1 + 2 * 2  # what was in flight, never the rest


def test_a_block_error_reaches_the_caller():
    def work(block: int, job: None) -> int:
        if block == 3:
            raise InputError("bad block", "fix it")
        return block

    with pytest.raises(InputError, match="bad block"):
        list(run_blocks(work, range(10), None, lanes=2))


def _staged_work(block: list[int], job: str) -> tuple[int, list[str]]:
    time.sleep(0.002 * (block[0] % 2))
    return len(block), [f"{job}{x}" for x in block]


def _staged_finish(payload: list[str], first: int, job: str) -> list[str]:
    return [f"{first + k}:{name}" for k, name in enumerate(payload)]


def _numbered(lanes: int, client=None, processes=False) -> list[tuple[int, list[str]]]:
    next_index = 0

    def number(count: int) -> int:
        nonlocal next_index
        first, next_index = next_index, next_index + count
        return first

    blocks = blocks_of(list(range(30)), 4)
    return list(
        run_blocks_staged(
            _staged_work,
            _staged_finish,
            blocks,
            "c",
            decide=number,
            client=client,
            lanes=lanes,
            processes=processes,
        )
    )


def test_staged_blocks_are_decided_in_block_order_on_lanes():
    one = _numbered(1)
    assert [s for s, _ in one] == [4] * 7 + [2]
    assert [x for _, r in one for x in r] == [f"{i}:c{i}" for i in range(30)]
    assert _numbered(3) == one


def test_staged_on_lanes_finishes_what_was_decided_when_a_block_fails():
    finished: list[int] = []
    started: list[int] = []

    def work(block: int, job: None) -> tuple[int, int]:
        started.append(block)
        if block == 1:
            raise InputError("unreadable block", "fix it")
        return block, block

    def finish(payload: int, decision: int, job: None) -> int:
        time.sleep(0.02)
        finished.append(payload)
        return payload

    runs = run_blocks_staged(work, finish, range(100), None, decide=lambda s: s, lanes=2)
    with pytest.raises(InputError, match="unreadable"):
        list(runs)
    assert finished == [0]  # block 0 was decided before block 1 failed: written, then stop
    assert len(started) <= 4  # at most 2 x lanes blocks were ever held


def test_staged_on_lanes_stopping_early_cancels_the_rest():
    started: list[int] = []

    def work(block: int, job: None) -> tuple[int, int]:
        started.append(block)
        time.sleep(0.005)
        return block, block

    runs = run_blocks_staged(work, lambda p, d, j: p, range(100), None, decide=lambda s: s, lanes=2)
    assert next(runs) == (0, 0)
    runs.close()
    count = len(started)
    time.sleep(0.05)
    assert len(started) == count <= 4  # nothing runs after close


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lane processes can import this module (its work and finish functions)."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))


def _where(block: list[int], parent: int) -> tuple[int, list[int]]:
    if os.getpid() == parent:
        # the lane here (while the processes start) is slow, so they take blocks even on a
        # loaded machine where starting takes seconds
        time.sleep(0.5)
    return len(block), [os.getpid()] * len(block)


def _pids(payload: list[int], first: int, parent: int) -> list[int]:
    return payload


def test_staged_in_lane_processes_as_on_one_lane(importable):
    assert _numbered(2, processes=True) == _numbered(1)
    blocks = blocks_of(list(range(40)), 2)
    runs = run_blocks_staged(
        _where, _pids, blocks, os.getpid(), decide=abs, lanes=2, processes=True
    )
    pids = [pid for _, payload in runs for pid in payload]
    assert len(pids) == 40
    assert set(pids) - {os.getpid()}, "the lane processes worked blocks"


class _Unimportable:
    """A job the lane processes cannot unpickle: this module is not on their path."""

    def __str__(self) -> str:
        return "c"


def _staged_work_slowly(block: list[int], job: str) -> tuple[int, list[str]]:
    time.sleep(0.6)  # the blocks outlast the processes' failed start, even on a loaded machine
    return _staged_work(block, job)


def test_staged_in_lane_processes_that_cannot_start_runs_here(caplog):
    """Processes that fail to start take no blocks: the lane here works them all."""
    blocks = blocks_of(list(range(40)), 8)
    job = _Unimportable()
    one = list(run_blocks_staged(_staged_work, _staged_finish, blocks, job, decide=abs))
    with caplog.at_level("WARNING", logger="rasterlearn.execution"):
        runs = run_blocks_staged(
            _staged_work_slowly, _staged_finish, blocks, job, decide=abs, lanes=2, processes=True
        )
        assert list(runs) == one
    assert "could not start" in caplog.text and "test_blocks" in caplog.text


def test_on_a_cluster_as_here():
    """map_blocks behind run_blocks: the same results, in block order, as one lane."""
    blocks = blocks_of(list(range(40)), 3)
    here = list(run_blocks(_square_all, blocks, 2))
    with dask_client("local:2") as client:
        assert list(run_blocks(_square_all, blocks, 2, client=client)) == here
        assert _numbered(1, client) == _numbered(1)
