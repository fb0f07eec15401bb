"""Blocks of work, run in block order: on lanes (threads) in this process or on Dask workers.

A tool cuts its job into *blocks* of consecutive items (tiles, chips, features) with
:func:`block_size` and :func:`blocks_of`, then hands them to :func:`run_blocks` (or
:func:`run_blocks_staged`) with the job, a small picklable value. The results come back in
block order whichever way the blocks ran, with a bounded number of blocks in flight, so memory
stays bounded whatever the job's size; blocks not started yet are cancelled when the consumer
stops early or a block raises. A block opens the job's inputs through the per-process cache of
:mod:`rasterlearn.execution.cache`.
"""

from __future__ import annotations

import contextlib
import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, TypeVar

from rasterlearn.execution.dask import map_blocks, map_blocks_staged
from rasterlearn.execution.processes import ProcessLanes, finish_held, work_and_hold
from rasterlearn.execution.threads import ordered_map

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
B = TypeVar("B")
J = TypeVar("J")
R = TypeVar("R")
S = TypeVar("S")
P = TypeVar("P")
D = TypeVar("D")

TARGET_BLOCKS = 64
"""Blocks a job is cut into when it has enough items (see :func:`block_size`)."""

MAX_UNITS_PER_BLOCK = 8
"""Most units (batches, chips) in a block."""


def block_size(n_items: int, unit: int = 1) -> int:
    """Items in a block: whole units, the most that still make at least ``TARGET_BLOCKS``
    blocks, from one to ``MAX_UNITS_PER_BLOCK`` units.

    Many blocks keep every worker of a cluster busy to the end of a run (a few large blocks
    leave workers idle while the last ones finish); several units a block keep the cost of a
    task small beside its work. The size depends on the job only, never on the lanes or the
    workers, so every way of running a job forms the same blocks (and, with ``unit`` the
    batch size, the same batches, so the same floating-point results).

    Args:
        n_items: Items in the job.
        unit: Items that must stay together (a batch), 1 for none.
    """
    unit = max(1, unit)
    units = n_items // (unit * TARGET_BLOCKS)
    return unit * min(max(1, units), MAX_UNITS_PER_BLOCK)


def blocks_of(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive runs of ``size`` items (the last may be shorter), in order."""
    size = max(1, size)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@functools.lru_cache(maxsize=1)
def _lane_pool(lanes: int) -> ThreadPoolExecutor:
    # Kept from run to run: a lane thread keeps its raster handles for the next blocks.
    return ThreadPoolExecutor(lanes, thread_name_prefix="rasterlearn-lane")


def run_blocks(
    fn: Callable[[B, J], R],
    blocks: Iterable[B],
    job: J,
    *,
    client: Client | None = None,
    lanes: int = 1,
    name: str | None = None,
) -> Iterator[R]:
    """``fn(block, job)`` for every block; the results in block order.

    Args:
        fn: Runs one block. With a client it must be picklable (module-level in the package).
        blocks: The blocks, pulled lazily; each small (positions, not data).
        job: What every block needs, passed as is (on a cluster, sent to it once).
        client: A Dask client to run on its workers, or None to run in this process.
        lanes: Blocks run side by side in this process (threads), without a client.
        name: Task-name prefix shown in Dask's dashboard.

    Yields:
        ``fn``'s result for each block, in the order of ``blocks``; at most twice the lanes
        (or the workers' threads) are in flight.

    Raises:
        RasterLearnError: what ``fn`` raised (see :func:`~rasterlearn.execution.dask.map_blocks`
            for retries on a cluster).
    """
    if client is not None:
        yield from map_blocks(client, fn, blocks, job, name=name)
    elif lanes <= 1:
        for block in blocks:
            yield fn(block, job)
    else:
        yield from ordered_map(_lane_pool(lanes), lambda b: fn(b, job), blocks, 2 * lanes)


def run_blocks_staged(
    work: Callable[[B, J], tuple[S, P]],
    finish: Callable[[P, D, J], R],
    blocks: Iterable[B],
    job: J,
    *,
    decide: Callable[[S], D],
    client: Client | None = None,
    lanes: int = 1,
    processes: bool | ProcessLanes = False,
    name: str | None = None,
) -> Iterator[tuple[S, R]]:
    """Two steps a block with a decision in block order between them, here or on a cluster.

    ``work(block, job)`` gives ``(summary, payload)``; ``decide(summary)`` runs in this
    thread in block order (it may depend on every earlier block, e.g. the number of the
    block's first file); ``finish(payload, decision, job)`` runs where the payload is: on a
    lane here, in the lane process that made it, or on the worker holding it (it never
    travels).

    Args:
        work: First step. In processes or on a cluster it must be picklable (module-level in
            the package), as must ``finish``, ``job`` and the summaries.
        finish: Second step.
        blocks: The blocks, pulled lazily.
        job: What every step needs (sent to each lane process or worker once).
        decide: Called here, once a block, in block order.
        client: A Dask client, or None to run in this process.
        lanes: Steps run side by side here, without a client.
        processes: The lanes are worker processes (:mod:`~rasterlearn.execution.processes`),
            started for this run, rather than threads: Python work then runs side by side
            too, for the cost of starting them. Or the caller's :class:`ProcessLanes`, started
            earlier and not yet sent a job (the caller ends them).
        name: Task-name prefix shown in Dask's dashboard.

    Yields:
        ``(summary, finish's result)`` per block, in block order.
    """
    if client is not None:
        yield from map_blocks_staged(client, work, finish, blocks, job, decide=decide, name=name)
        return
    if lanes <= 1:
        for block in blocks:
            summary, payload = work(block, job)
            yield summary, finish(payload, decide(summary), job)
        return
    if not processes:
        steps = _ThreadSteps(_lane_pool(lanes), lanes, job)
        yield from _staged_on_lanes(work, finish, iter(blocks), decide, steps)
        return
    with contextlib.ExitStack() as stack:
        if isinstance(processes, ProcessLanes):
            running = processes
            running.send_job(job)
        else:
            running = stack.enter_context(ProcessLanes(lanes, job))
        here = stack.enter_context(
            ThreadPoolExecutor(1, thread_name_prefix="rasterlearn-lane-here")
        )
        steps = _ProcessSteps(running, here, job)
        yield from _staged_on_lanes(work, finish, iter(blocks), decide, steps)


class _ThreadSteps:
    """Staged steps on the lane threads: a payload stays in this process's memory."""

    def __init__(self, pool: ThreadPoolExecutor, lanes: int, job: object) -> None:
        self.pool = pool
        self.lanes = lanes
        self.job = job

    def open_lanes(self) -> list[int]:
        """The lanes that may take new work."""
        return list(range(self.lanes))

    def starting(self) -> list[Future]:
        """What ends when a lane opens."""
        return []

    def work(self, lane: int, work: Callable, block: object, key: int) -> Future:
        return self.pool.submit(work, block, self.job)

    def finish(self, lane: int, finish: Callable, held: object, decision: object) -> Future:
        return self.pool.submit(finish, held, decision, self.job)


class _ProcessSteps:
    """Staged steps in lane processes: a payload stays in the process that made it, under a
    key, and its block is finished there.

    Until the first process has started (imported what the job needs: a fraction of a
    second), blocks are worked and finished on a thread here, the last lane, rather than
    queued behind the start. A process that fails to start (its error is logged) takes
    no blocks; without any, the thread here works them all.
    """

    def __init__(self, processes: ProcessLanes, here: ThreadPoolExecutor, job: object) -> None:
        self.processes = processes
        self.here = here
        self.job = job
        self.lanes = len(processes) + 1

    def open_lanes(self) -> list[int]:
        ready = [
            lane
            for lane, f in enumerate(self.processes.ready)
            if f.done() and f.exception() is None
        ]
        return ready or [len(self.processes)]

    def starting(self) -> list[Future]:
        return [f for f in self.processes.ready if not f.done()]

    def work(self, lane: int, work: Callable, block: object, key: int) -> Future:
        if lane == len(self.processes):
            return self.here.submit(work, block, self.job)
        return self.processes.submit(lane, work_and_hold, work, block, key)

    def finish(self, lane: int, finish: Callable, held: object, decision: object) -> Future:
        if lane == len(self.processes):
            return self.here.submit(finish, held, decision, self.job)
        return self.processes.submit(lane, finish_held, finish, held, decision)


_END = object()


def _staged_on_lanes(
    work: Callable[[B, J], tuple[S, P]],
    finish: Callable[[P, D, J], R],
    blocks: Iterator[B],
    decide: Callable[[S], D],
    steps: _ThreadSteps | _ProcessSteps,
) -> Iterator[tuple[S, R]]:
    """:func:`run_blocks_staged` on lanes: finishing goes before new work, as on Dask.

    New work goes only to a free lane, so a finish (which frees its payload) never waits
    behind it; a block is finished on the lane that worked it. At most twice the lanes
    blocks are held. When the run ends early (an error, or the consumer stops), work not
    started is cancelled, and everything started or decided is waited for: nothing of the run
    is still running afterwards, and no decided block is left half-finished (e.g. files
    half-written in a folder about to be removed).
    """
    working: deque[tuple[int, Future[tuple[S, object]]]] = deque()
    finishing: deque[tuple[S, Future[R]]] = deque()
    on_lane: list[list[Future]] = [[] for _ in range(steps.lanes)]
    started = 0
    exhausted = False
    try:
        while True:
            if working and working[0][1].done():
                lane, done = working.popleft()
                summary, held = done.result()
                finishing.append((summary, steps.finish(lane, finish, held, decide(summary))))
                on_lane[lane].append(finishing[-1][1])
                continue
            if finishing and finishing[0][1].done():
                summary, done = finishing.popleft()
                yield summary, done.result()
                continue
            on_lane = [[f for f in futures if not f.done()] for futures in on_lane]
            free = [lane for lane in steps.open_lanes() if not on_lane[lane]]
            while free and not exhausted and len(working) + len(finishing) < 2 * steps.lanes:
                block = next(blocks, _END)
                if block is _END:
                    exhausted = True
                    break
                lane = free.pop(0)
                working.append((lane, steps.work(lane, work, block, started)))
                on_lane[lane].append(working[-1][1])
                started += 1
            in_flight = [f for futures in on_lane for f in futures]
            if not in_flight and exhausted:
                return
            wait([*in_flight, *steps.starting()], return_when=FIRST_COMPLETED)
    finally:
        for _, future in working:
            future.cancel()
        wait([*(f for _, f in working), *(f for _, f in finishing)])
