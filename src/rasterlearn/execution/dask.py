"""Dask execution of blocks of work: the one place that talks to Dask, for every tool.

A tool cuts its job into *blocks* (consecutive chips, tiles, ...) and hands them to
:func:`map_blocks` (or :func:`map_blocks_staged`), which runs them in this process, on a local
cluster of worker processes (``cluster="local:N"``) or on a running cluster (``scheduler=
"tcp://HOST:PORT"``), and gives the results back **in block order**, with a bounded number of
blocks in flight so that memory stays bounded whatever the job's size.

Failures: a block whose function raises is retried (``retries``); a worker that dies mid-block
(killed, out of memory) has its blocks rescheduled by Dask on the other workers, and results
it held are recomputed, so a run survives lost workers and still gives the same result. A
:class:`~rasterlearn.errors.RasterLearnError` raised in a block is not retried (it is the user's
to fix) and reaches the caller intact, hint included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from rasterlearn.errors import ParameterError, RasterLearnError

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")
P = TypeVar("P")
D = TypeVar("D")

CONNECT_TIMEOUT_S = 10.0
_SCHEDULER_PATTERN = re.compile(r"^(tcp|tls)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_LOCAL_PATTERN = re.compile(r"^local(?::(\d+))?$", re.IGNORECASE)
_QUIET_LOGGERS = ("distributed", "tornado", "bokeh")
# Arguments of these types travel inline with each task; anything else is sent once.
_INLINE_TYPES = (type(None), bool, int, float, complex)
_INLINE_MAX_LEN = 4096
# Finishing a block frees its payload: run finishes before new work.
_FINISH_PRIORITY = 2**30


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run: a new local cluster of ``n_workers`` processes, or a running scheduler.

    Attributes:
        n_workers: Worker processes of a local cluster (one thread each), or None.
        address: Address of a running scheduler (``tcp://HOST:PORT``), or None.
    """

    n_workers: int | None = None
    address: str | None = None


def parse_cluster(cluster: str | None, scheduler: str | None) -> ClusterSpec | None:
    """Validate the ``cluster`` / ``scheduler`` parameters of a tool.

    Args:
        cluster: ``local:N`` for a local cluster of N worker processes (``local`` alone: one
            per core), or None.
        scheduler: ``tcp://HOST:PORT`` (or ``tls://``) of a running Dask scheduler, or None.

    Returns:
        The spec, or None when both are None (run in this process).

    Raises:
        ParameterError: if both are given or either is malformed.
    """
    if cluster is not None and scheduler is not None:
        raise ParameterError(
            "give either --cluster or --scheduler, not both",
            "--cluster local:N starts a local cluster, --scheduler tcp://HOST:PORT joins one",
        )
    if cluster is not None:
        match = _LOCAL_PATTERN.match(str(cluster).strip())
        if match is None:
            raise ParameterError(
                f"unknown cluster '{cluster}'",
                "use local:N for N local worker processes, or --scheduler tcp://HOST:PORT",
            )
        if match.group(1) is None:
            from rasterlearn.execution.threads import default_workers

            return ClusterSpec(n_workers=default_workers())
        n_workers = int(match.group(1))
        if n_workers < 1:
            raise ParameterError(
                f"a local cluster needs at least one worker, got '{cluster}'", "use e.g. local:4"
            )
        return ClusterSpec(n_workers=n_workers)
    if scheduler is not None:
        address = str(scheduler).strip()
        match = _SCHEDULER_PATTERN.match(address)
        if match is None or not 0 < int(match.group(3)) < 65536:
            raise ParameterError(
                f"invalid scheduler address '{scheduler}'",
                "give the address the Dask scheduler prints, e.g. tcp://10.0.0.5:8786",
            )
        return ClusterSpec(address=address)
    return None


@contextlib.contextmanager
def quiet_dask() -> Iterator[None]:
    """Silence Dask's informational logging and warnings (restored on exit)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"distributed(\..*)?$")
            warnings.filterwarnings("ignore", module=r"dask(\..*)?$")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def dask_client(
    cluster: str | None = None,
    scheduler: str | None = None,
    *,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Iterator[Client | None]:
    """A Dask client for a tool run, or None to run in this process.

    ``cluster="local:N"`` starts a ``LocalCluster`` of N worker processes with one thread each
    (closed on exit); ``scheduler`` connects to a running cluster (the connection is closed on
    exit, the cluster is left running). Dask's logging and warnings are silenced meanwhile.

    Worker processes are started with Python's ``spawn``: a script that calls a tool with
    ``cluster=`` must guard its entry point with ``if __name__ == "__main__":``.

    Args:
        cluster: ``local:N`` or None (see :func:`parse_cluster`).
        scheduler: ``tcp://HOST:PORT`` or None.
        timeout: Seconds to wait for a scheduler to answer and to have a worker.

    Yields:
        The client, or None when both ``cluster`` and ``scheduler`` are None.

    Raises:
        ParameterError: for malformed parameters, an unreachable scheduler or one without workers.
    """
    spec = parse_cluster(cluster, scheduler)
    if spec is None:
        yield None
        return
    with quiet_dask(), contextlib.ExitStack() as stack:
        from distributed import Client

        if spec.n_workers is not None:
            local = stack.enter_context(local_cluster(spec.n_workers))
            client = Client(local, set_as_default=False)
            stack.callback(client.close)
        else:
            try:
                client = Client(spec.address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError):
                raise ParameterError(
                    f"cannot reach the Dask scheduler at {spec.address} within {timeout:g} s",
                    "check the address and that `dask scheduler` runs there, or use "
                    "--cluster local:N",
                ) from None
            stack.callback(client.close)
            try:
                client.wait_for_workers(1, timeout=timeout)
            except (OSError, TimeoutError):
                raise ParameterError(
                    f"the Dask scheduler at {spec.address} has no workers",
                    f"start some with `dask worker {spec.address}`",
                ) from None
        yield client


# Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's adaptive
# mmap threshold: every large tensor of a forward pass is then mapped and unmapped anew, and
# inference runs slower (0.91x in benchmarks/scale.py). Workers we start keep glibc's defaults.
_WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextlib.contextmanager
def _environ_restored(keys: Iterable[str]) -> Iterator[None]:
    """Put environment variables back as they were on exit (set, changed or removed).

    Without it, this process would keep ``OMP_NUM_THREADS=1`` after a local cluster closes,
    and later runs in it would use one core.
    """
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def local_cluster(n_workers: int) -> Iterator[LocalCluster]:
    """A Dask ``LocalCluster`` of ``n_workers`` processes with one thread each, as
    ``cluster="local:N"`` starts, closed on exit.

    Workers keep glibc's memory defaults, and this process's environment is as before once
    the cluster is closed.
    """
    import dask
    from distributed import LocalCluster

    # Dask's nanny sets its pre-spawn variables (and PYTHONHASHSEED) in the environment of the
    # process that holds it, this one for a local cluster, before each worker start.
    nanny_keys = [*dask.config.get("distributed.nanny.pre-spawn-environ"), "PYTHONHASHSEED"]
    with _environ_restored(nanny_keys):
        with dask.config.set(_WORKER_ENVIRON):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        try:
            yield cluster
        finally:
            cluster.close()


def worker_threads(client: Client | None) -> int:
    """Threads over all the client's workers (1 for None: this process)."""
    if client is None:
        return 1
    return max(1, sum(client.nthreads().values()))


@dataclass(frozen=True)
class _UserError:
    """A RasterLearnError caught on a worker, sent back as a value so its hint survives."""

    kind: type[RasterLearnError]
    message: str
    hint: str | None

    def raise_(self) -> None:
        raise self.kind(self.message, self.hint)


def _run(fn: Callable[..., R], *args: Any) -> R | _UserError:
    try:
        return fn(*args)
    except RasterLearnError as err:
        return _UserError(type(err), err.message, err.hint)


def _summary(value: tuple[S, P] | _UserError) -> S | _UserError:
    return value if isinstance(value, _UserError) else value[0]


def _finish(
    finish: Callable[..., R], value: tuple[S, P], decision: Any, *args: Any
) -> R | _UserError:
    return _run(finish, value[1], decision, *args)


def _result(future: Future, what: str) -> Any:
    """A task's value; user errors re-raised as such, repeated worker deaths as one line."""
    from distributed.scheduler import KilledWorker

    try:
        value = future.result()
    except KilledWorker:
        raise RasterLearnError(
            f"Dask workers died repeatedly while running {what}",
            "they may be running out of memory: give them more or use smaller blocks/tiles",
        ) from None
    if isinstance(value, _UserError):
        value.raise_()
    return value


def _is_inline(arg: Any) -> bool:
    if isinstance(arg, _INLINE_TYPES):
        return True
    return isinstance(arg, (str, bytes)) and len(arg) <= _INLINE_MAX_LEN


def _identity(value: T) -> T:
    return value


def _share(client: Client, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Send constant arguments to the cluster once; tasks then refer to them by key.

    Each becomes the result of a task of its own, not scattered data: a worker fetches it once
    from a peer, and if every worker holding it dies, Dask recomputes it from the task instead
    of failing the run (scattered data would be lost for good).
    """
    from distributed import Future

    out = []
    for arg in args:
        if _is_inline(arg) or isinstance(arg, Future):
            out.append(arg)
        else:
            key = f"{type(arg).__name__.strip('_')}-{uuid.uuid4().hex}"
            with warnings.catch_warnings():  # a large constant is the point: sent once
                warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
                out.append(client.submit(_identity, arg, key=key, pure=False, priority=1))
    return tuple(out)


def _task_name(fn: Callable[..., Any], name: str | None) -> str:
    base = name or getattr(fn, "__name__", "block").strip("_<>") or "block"
    return f"{base}-{uuid.uuid4().hex[:8]}"


def map_blocks(
    client: Client | None,
    fn: Callable[..., R],
    blocks: Iterable[T],
    *args: Any,
    retries: int = 3,
    max_in_flight: int | None = None,
    name: str | None = None,
) -> Iterator[R]:
    """``fn(block, *args)`` for every block, on the client's workers; results in block order.

    At most ``max_in_flight`` blocks are submitted and not yet consumed (``blocks`` is pulled
    lazily), so memory stays bounded by the consumer's pace. Constant ``args`` other than small
    scalars and strings are sent to the cluster once (each worker fetches them once), not with
    each task. Earlier blocks run first.

    Args:
        client: A client from :func:`dask_client`, or None to run here, one block at a time.
        fn: A picklable function (module-level, or a closure cloudpickle can carry).
        blocks: The blocks, each small (a description of the work, not its data).
        *args: Constant arguments passed after the block.
        retries: Times a block that raised (other than a RasterLearnError) is run again.
        max_in_flight: Blocks in flight; default twice the workers' threads.
        name: Task-name prefix shown in Dask's dashboard (default: ``fn``'s name); task keys
            are ``{name}-{token}-{block index}``.

    Yields:
        ``fn``'s results, in the order of ``blocks``.

    Raises:
        RasterLearnError: what ``fn`` raised, or when workers died running one block more
            often than Dask allows (``distributed.scheduler.allowed-failures``).
    """
    if client is None:
        for block in blocks:
            yield fn(block, *args)
        return
    remote_args = _share(client, args)
    limit = max(1, max_in_flight or 2 * worker_threads(client))
    prefix = _task_name(fn, name)
    pending: deque[tuple[int, Future]] = deque()
    try:
        for i, block in enumerate(blocks):
            future = client.submit(
                _run,
                fn,
                block,
                *remote_args,
                key=f"{prefix}-{i}",
                retries=retries,
                priority=-i,
                pure=False,
            )
            pending.append((i, future))
            if len(pending) >= limit:
                j, head = pending.popleft()
                yield _result(head, f"block {j}")
        while pending:
            j, head = pending.popleft()
            yield _result(head, f"block {j}")
    finally:
        if pending:
            client.cancel([f for _, f in pending])


def map_blocks_staged(
    client: Client | None,
    work: Callable[..., tuple[S, P]],
    finish: Callable[..., R],
    blocks: Iterable[T],
    *args: Any,
    decide: Callable[[S], D],
    retries: int = 3,
    max_in_flight: int | None = None,
    name: str | None = None,
) -> Iterator[tuple[S, R]]:
    """Two steps per block, with a decision in block order between them, on the workers.

    ``work(block, *args)`` returns ``(summary, payload)``. Only the small summary comes to this
    process; there, in block order, ``decide(summary)`` gives a decision that may depend on every
    earlier block (e.g. the number of the block's first output file). Then
    ``finish(payload, decision, *args)`` runs where the payload already is (it never travels).
    If that worker dies in between, Dask recomputes the payload elsewhere.

    Args:
        client: A client from :func:`dask_client`, or None to run here, one block at a time.
        work: First step, on a worker.
        finish: Second step, on the worker holding the payload.
        blocks: The blocks.
        *args: Constant arguments passed to both steps (sent once, see :func:`map_blocks`).
        decide: Called here, once per block, in block order.
        retries: Times a step that raised (other than a RasterLearnError) is run again.
        max_in_flight: Blocks in flight (payloads held on workers); default three times the
            workers' threads.
        name: Task-name prefix; keys are ``{name}-work-{token}-{i}`` and
            ``{name}-finish-{token}-{i}``.

    Yields:
        ``(summary, finish's result)`` per block, in block order.

    Raises:
        RasterLearnError: as :func:`map_blocks`.
    """
    if client is None:
        for block in blocks:
            summary, payload = work(block, *args)
            decision = decide(summary)
            yield summary, finish(payload, decision, *args)
        return
    from distributed import as_completed

    remote_args = _share(client, args)
    limit = max(1, max_in_flight or 3 * worker_threads(client))
    base = name or getattr(work, "__name__", "block").strip("_<>") or "block"
    token = uuid.uuid4().hex[:8]
    source = iter(enumerate(blocks))
    working: deque[tuple[int, Future, Future]] = deque()
    finishing: deque[tuple[int, S, Future]] = deque()

    def fill() -> None:
        while len(working) + len(finishing) < limit:
            item = next(source, None)
            if item is None:
                return
            i, block = item
            value = client.submit(
                _run,
                work,
                block,
                *remote_args,
                key=f"{base}-work-{token}-{i}",
                retries=retries,
                priority=-i,
                pure=False,
            )
            summary = client.submit(
                _summary, value, key=f"{base}-summary-{token}-{i}", priority=-i, pure=False
            )
            working.append((i, value, summary))

    try:
        fill()
        while working or finishing:
            heads = [f for f in (working[0][2] if working else None,) if f is not None]
            heads += [finishing[0][2]] if finishing else []
            if not any(f.done() for f in heads):
                next(as_completed(heads, loop=client.loop))
            if working and working[0][2].done():
                i, value, summary_future = working.popleft()
                summary = _result(summary_future, f"block {i}")
                decision = decide(summary)
                done = client.submit(
                    _finish,
                    finish,
                    value,
                    decision,
                    *remote_args,
                    key=f"{base}-finish-{token}-{i}",
                    retries=retries,
                    priority=_FINISH_PRIORITY - i,
                    pure=False,
                )
                finishing.append((i, summary, done))
                continue
            if finishing and finishing[0][2].done():
                i, summary, done = finishing.popleft()
                result = _result(done, f"block {i}")
                yield summary, result
                fill()
    finally:
        leftover = [f for _, v, s in working for f in (v, s)] + [f for *_, f in finishing]
        if leftover:
            client.cancel(leftover)


def on_every_worker(client: Client | None, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` once on every worker (e.g. to release a job's resources).

    Best effort: a worker that is gone or fails is skipped. Nothing happens for None.
    """
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.run(fn, *args, on_error="ignore")
