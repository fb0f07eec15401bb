"""Ordered, bounded thread-pool map."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from rasterlearn.execution.threads import ordered_map


def test_results_keep_input_order_whatever_finishes_first() -> None:
    delays = [0.05, 0.0, 0.03, 0.0, 0.01]

    def work(i: int) -> int:
        time.sleep(delays[i])
        return i * 10

    with ThreadPoolExecutor(3) as pool:
        assert list(ordered_map(pool, work, range(5), 4)) == [0, 10, 20, 30, 40]


def test_no_more_than_max_in_flight_are_submitted_ahead() -> None:
    submitted: list[int] = []

    def items():
        for i in range(20):
            submitted.append(i)
            yield i

    with ThreadPoolExecutor(2) as pool:
        for i, _ in enumerate(ordered_map(pool, lambda x: x, items(), 3)):
            assert len(submitted) <= i + 3


def test_stopping_early_cancels_what_has_not_started() -> None:
    started: list[int] = []
    running, gate = threading.Event(), threading.Event()

    def work(i: int) -> int:
        started.append(i)
        if i == 1:
            running.set()
            gate.wait(5)
        return i

    with ThreadPoolExecutor(1) as pool:
        results = ordered_map(pool, work, range(10), 5)
        assert next(results) == 0
        assert running.wait(5)
        results.close()  # the consumer stops while item 1 runs and 2-4 wait
        gate.set()
    assert started == [0, 1]
