"""One shared thread pool for decode/encode work (codecs release the GIL)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_DONE = object()

_lock = threading.Lock()
_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_workers: int = max(1, os.cpu_count() or 1)


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
    global _pool, _workers
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads expects an integer >= 1, got {n!r}")
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _workers = n


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


def run_each(fn: Callable[[T], object], items: Sequence[T]) -> None:
    """Call ``fn`` on every item, in the calling thread plus up to ``num_threads() - 1`` workers.

    The caller takes items too, so a short batch (e.g. the 4 chunks of a small
    region) costs one hand-off instead of one per item and never waits idle.
    The first exception stops the remaining items and is re-raised here.
    """
    n = min(_workers, len(items)) if can_parallelize() else 1
    if n <= 1:
        for item in items:
            fn(item)
        return
    it = iter(items)
    take = threading.Lock()
    failed: list[BaseException] = []

    def loop() -> None:
        while not failed:
            with take:
                item = next(it, _DONE)
            if item is _DONE:
                return
            try:
                fn(item)  # type: ignore[arg-type]
            except BaseException as exc:  # re-raised in the caller
                failed.append(exc)
                return

    helpers = [pool().submit(loop) for _ in range(n - 1)]
    loop()
    for f in helpers:
        f.result()
    if failed:
        raise failed[0]
