"""Thread pools that keep order and bound how much work is in flight (and so memory)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers(requested: int | None = None) -> int:
    """The number of worker threads: the request, else every core."""
    if requested is not None and requested > 0:
        return requested
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], max_in_flight: int
) -> Iterator[R]:
    """``map`` over a pool: results in input order, at most ``max_in_flight`` pending.

    Tasks not yet started are cancelled when the caller stops early (or one raises).
    """
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max_in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
