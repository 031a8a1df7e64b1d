"""One shared thread pool for decode/encode work (codecs release the GIL)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

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
