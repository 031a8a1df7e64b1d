"""One shared thread pool for decode/encode work (codecs release the GIL)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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


class Crew:
    """Helpers woken ahead of the work they will share with the calling thread.

    Waking an idle worker thread can take longer than decoding a chunk, so a
    read that will likely go parallel starts its helpers first
    (:func:`crew`), plans meanwhile, then hands them the items with
    :meth:`run` (the caller takes items too) or releases them with
    :meth:`cancel` when the read turned out small.
    """

    def __init__(self, helpers: int) -> None:
        self._ready = threading.Event()
        self._take = threading.Lock()
        self._it: Any = iter(())
        self._fn: Callable[[Any], object] | None = None
        self._failed: list[BaseException] = []
        self._futures = [pool().submit(self._loop) for _ in range(helpers)]

    def _loop(self) -> None:
        self._ready.wait()
        fn = self._fn
        while fn is not None and not self._failed:
            with self._take:
                item = next(self._it, _DONE)
            if item is _DONE:
                return
            try:
                fn(item)
            except BaseException as exc:  # re-raised by run()
                self._failed.append(exc)
                return

    def run(self, fn: Callable[[T], object], items: Sequence[T]) -> None:
        """Call ``fn`` on every item in this thread and the helpers; re-raise the first error."""
        self._fn, self._it = fn, iter(items)
        self._ready.set()
        self._loop()
        for f in self._futures:
            if not f.cancel():  # a helper that never started (a busy pool) is not waited for
                f.result()
        if self._failed:
            raise self._failed[0]

    def cancel(self) -> None:
        """Release the helpers without work (they return at once)."""
        for f in self._futures:
            f.cancel()
        self._ready.set()


def crew() -> Crew | None:
    """Start ``num_threads() - 1`` helpers for :meth:`Crew.run`, or ``None`` when work must stay inline."""
    if not can_parallelize():
        return None
    return Crew(_workers - 1)
