"""The per-process cache of what blocks open."""

from __future__ import annotations

import threading
import time

from rasterlearn.execution.cache import WorkerCache, forget_everywhere


def test_opens_once_and_closes_what_it_drops():
    cache = WorkerCache(capacity=2)
    opened: list[str] = []
    closed: list[str] = []

    def opener(name: str):
        def open_() -> str:
            opened.append(name)
            return name.upper()

        return open_

    assert cache.get("a", opener("a"), closed.append) == "A"
    assert cache.get("a", opener("a"), closed.append) == "A"
    cache.get("b", opener("b"), closed.append)
    cache.get("a", opener("a"), closed.append)  # a is now the most recently used
    cache.get("c", opener("c"))  # drops b
    assert opened == ["a", "b", "c"]
    assert closed == ["B"]
    assert list(cache) == ["a", "c"]
    cache.forget("a")
    cache.forget("missing")
    assert closed == ["B", "A"] and list(cache) == ["c"]


def test_a_new_version_is_a_new_entry():
    cache = WorkerCache()
    assert cache.get(("model", "m.emd", 1), lambda: "v1") == "v1"
    assert cache.get(("model", "m.emd", 2), lambda: "v2") == "v2"


def test_lanes_asking_at_once_open_once():
    cache = WorkerCache()
    calls: list[int] = []

    def slow_open() -> object:
        calls.append(1)
        time.sleep(0.05)
        return object()

    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(cache.get("k", slow_open))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(g) for g in got}) == 1


def test_forget_everywhere_without_a_cluster_forgets_here():
    from rasterlearn.execution.cache import WORKER_CACHE

    closed: list[str] = []
    WORKER_CACHE.get(("test", "x"), lambda: "x", closed.append)
    forget_everywhere(None, ("test", "x"))
    assert closed == ["x"] and ("test", "x") not in WORKER_CACHE
