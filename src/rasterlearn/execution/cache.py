"""What blocks of work open (rasters, models), kept per process for the blocks that follow.

A block runs in a lane of this process or on a Dask worker and opens its job's inputs itself:
a block carries positions, never pixels or weights. Opening a raster or a model for every block
would cost more than the block, so each process keeps what it opened in one cache, keyed by
what identifies it: a job's token, or a model's path and the version of its files (so that a
process never predicts with a stale copy of a model that changed on disk).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from rasterlearn.execution.dask import on_every_worker

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")

CAPACITY = 8
"""Entries a process keeps (a few jobs' rasters and models); the least recently used go first."""


class WorkerCache:
    """A thread-safe LRU of opened resources, each with an optional ``close``.

    Args:
        capacity: Entries kept; the least recently used one is dropped (and closed) beyond it.
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        # Re-entrant: opening one entry may look up another.
        self._lock = threading.RLock()
        self._entries: OrderedDict[Hashable, tuple[Any, Callable[[Any], None] | None]] = (
            OrderedDict()
        )

    def get(
        self, key: Hashable, open_: Callable[[], T], close: Callable[[T], None] | None = None
    ) -> T:
        """The value cached under ``key``, opened with ``open_()`` the first time.

        Lanes asking for the same key at once open it once: the others wait for it.

        Args:
            key: What identifies the value (include a version when its files may change).
            open_: Opens the value.
            close: Called with the value when it is dropped, or None to leave it to the
                garbage collector.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = (open_(), close)
                while len(self._entries) > self.capacity:
                    _, (old, old_close) = self._entries.popitem(last=False)
                    if old_close is not None:
                        old_close(old)
            self._entries.move_to_end(key)
            return entry[0]

    def forget(self, key: Hashable) -> None:
        """Drop (and close) the value under ``key``, if any."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None and entry[1] is not None:
            entry[1](entry[0])

    def __iter__(self) -> Iterator[Hashable]:
        """The keys held (a snapshot), least recently used first."""
        with self._lock:
            return iter(list(self._entries))

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries


WORKER_CACHE = WorkerCache()
"""This process's cache, shared by every tool and every lane."""


def cached(key: Hashable, open_: Callable[[], T], close: Callable[[T], None] | None = None) -> T:
    """``WORKER_CACHE.get``: the value under ``key`` in this process, opened once."""
    return WORKER_CACHE.get(key, open_, close)


def forget(key: Hashable) -> None:
    """Drop the value under ``key`` in this process (closing it)."""
    WORKER_CACHE.forget(key)


def forget_everywhere(client: Client | None, key: Hashable) -> None:
    """Drop the value under ``key`` here and, best effort, on every worker of ``client``."""
    forget(key)
    on_every_worker(client, forget, key)
