"""One shared thread pool for decode/encode work (codecs release the GIL)."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, cast

from omeframe.model.checks import is_integer
from omeframe.storage import crc as _crc

T = TypeVar("T")
_DONE = object()

_lock = threading.Lock()
_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_workers: int = max(1, os.cpu_count() or 1)
_chosen = False  # set_num_threads was called: automatic sharing leaves the count alone


def num_threads() -> int:
    """Return how many worker threads omeframe uses for pixel work."""
    return _workers


def set_num_threads(n: int) -> None:
    """Set how many worker threads omeframe uses for decode/encode (>= 1).

    Parameters
    ----------
    n
        Number of threads. ``1`` makes every read and write single-threaded.
    """
    global _chosen
    if not is_integer(n) or n < 1:
        raise ValueError(f"set_num_threads expects an integer >= 1, got {n!r}")
    _set(int(n))
    _chosen = True


def _set(n: int) -> None:
    global _pool, _workers
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _workers = n


def share_cores(processes: int) -> None:
    """Use this process's share of the cores when ``processes`` processes read side by side.

    Called in each worker of a loader: ``num_workers`` workers each running
    a pool as large as the machine would keep twice as many threads busy as
    there are cores. A count chosen with :func:`set_num_threads` (in the
    parent before the workers start, or in a ``worker_init_fn``) is kept.
    """
    if not _chosen and processes > 1:
        _set(max(1, (os.cpu_count() or 1) // processes))


def _mark_worker() -> None:
    _local.worker = True


def can_parallelize() -> bool:
    """True when the caller may hand work to the shared pool.

    False inside a pool worker: nested submissions would wait on tasks queued
    behind the very workers that wait for them (a deadlock), so nested pixel
    work runs inline in the worker instead.
    """
    return _workers > 1 and not getattr(_local, "worker", False)


def pool() -> ThreadPoolExecutor:
    """Return the shared executor, creating it on first use."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=_workers, thread_name_prefix="omeframe", initializer=_mark_worker
            )
        return _pool


class _Job:
    """One helper's share of a :func:`run_each` call (items come from a shared iterator)."""

    __slots__ = ("fn", "it", "take", "failed", "state", "done")

    def __init__(self, fn: Callable[[Any], object], it: Any, take: Any, failed: list[BaseException]) -> None:
        self.fn, self.it, self.take, self.failed = fn, it, take, failed
        self.state = 0  # 0 queued, 1 taken by a helper, 2 withdrawn by the caller
        self.done = threading.Lock()
        self.done.acquire()


def _drain(fn: Callable[[Any], object], it: Any, take: Any, failed: list[BaseException]) -> None:
    while not failed:
        with take:
            item = next(it, _DONE)
        if item is _DONE:
            return
        try:
            fn(item)
        except BaseException as exc:  # re-raised by run_each in the caller
            failed.append(exc)
            return


def _helper_main(jobs: Any) -> None:
    _local.worker = True
    while True:
        job = jobs.get()
        with job.take:
            withdrawn = job.state == 2
            job.state = 1 if not withdrawn else 2
        if not withdrawn:
            try:
                _drain(job.fn, job.it, job.take, job.failed)
            finally:
                job.done.release()
        # Drop the finished job before waiting for the next one: it references
        # the caller's function, and through it the read's output and payloads.
        job = None


_jobs: Any = queue.SimpleQueue()
_helpers: list[threading.Thread] = []


def _ensure_helpers(n: int) -> None:
    with _lock:
        while len(_helpers) < n:
            t = threading.Thread(
                target=_helper_main, args=(_jobs,), name=f"omeframe-helper-{len(_helpers)}", daemon=True
            )
            t.start()
            _helpers.append(t)


def run_each(fn: Callable[[T], object], items: Sequence[T]) -> None:
    """Call ``fn`` on every item, in the calling thread plus up to ``num_threads() - 1`` helpers.

    The caller takes items too, and helpers are parked threads woken through
    one C-level queue (no futures): a short batch such as the 4 chunks of a
    small region costs one wake-up. A helper still busy elsewhere when the
    caller runs out of items is not waited for. The first exception stops the
    remaining items and is re-raised here.
    """
    n = min(_workers, len(items)) if can_parallelize() else 1
    if n <= 1:
        for item in items:
            fn(item)
        return
    _ensure_helpers(n - 1)
    it, take, failed = iter(items), threading.Lock(), []  # type: ignore[var-annotated]
    jobs = [_Job(fn, it, take, failed) for _ in range(n - 1)]
    for job in jobs:
        _jobs.put(job)
    _drain(fn, it, take, failed)
    for job in jobs:
        with take:
            withdrawn = job.state == 0
            if withdrawn:
                job.state = 2
        if not withdrawn:
            job.done.acquire()
    if failed:
        raise failed[0]


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield the items of ``items`` while the next one is computed on another thread.

    For a producer and a consumer that both release the GIL (encoding a batch
    while the previous one is written), the two overlap. The producer is only
    ever advanced by one thread, one item ahead; its exceptions surface where
    the item would have been yielded.

    A read-ahead abandoned before its end (closed, or dropped after an error
    and finalized by the garbage collector) does not wait for the item in
    flight: it finishes on its own and is dropped. Joining the producer there
    can deadlock, since the collector may finalize the generator inside
    ``threading``'s own bookkeeping of a thread being started (seen on
    Python 3.12: the joining thread waits for a lock it already holds).
    """
    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omeframe-ahead")
    finished = False
    try:
        nxt: Future[Any] = ex.submit(next, items, _DONE)
        while True:
            item = nxt.result()
            if item is _DONE:
                finished = True
                return
            nxt = ex.submit(next, items, _DONE)
            yield cast(T, item)
    finally:
        ex.shutdown(wait=finished, cancel_futures=True)


def _after_fork_in_child() -> None:
    """Threads do not survive ``fork``: forget the pool and helpers (new ones start on demand)."""
    global _pool, _jobs, _lock
    _lock = threading.Lock()
    _pool = None
    _jobs = queue.SimpleQueue()
    _helpers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_crc.set_runner(run_each)  # the storage layer's checks (below the engine) use this pool
