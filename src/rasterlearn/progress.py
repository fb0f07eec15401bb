"""Progress bars for long loops: Rich on a terminal, silent elsewhere (CI, pipes).

A process may also send every bar's state to a listener (:func:`report_to`): the job
service's job process does, to record a job's progress.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

Advance = Callable[..., None]

Listener = Callable[[str, int, "int | None"], None]
"""Called with a bar's description, the steps done and the total (None when unknown)."""

_listener: Listener | None = None


def report_to(listener: Listener | None) -> None:
    """Send the state of every progress bar of this process to ``listener`` (None: stop)."""
    global _listener
    _listener = listener


def _wanted(enabled: bool | None) -> bool:
    if enabled is not None:
        return enabled
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool | None = None
) -> Iterator[Advance]:
    """A bar for ``total`` steps yielding ``advance(n)``; ``enabled=None``: on terminals only."""
    with _bar(description, total, enabled) as shown:
        listener = _listener
        if listener is None:
            yield shown
            return
        done = 0
        listener(description, done, total)

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            shown(n)
            listener(description, done, total)

        yield advance


@contextlib.contextmanager
def _bar(description: str, total: int | None, enabled: bool | None) -> Iterator[Advance]:
    if not _wanted(enabled):
        yield lambda n=1: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
