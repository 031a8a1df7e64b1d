"""Catalog builds on a ``dask.distributed`` cluster: the client as the build's worker pool.

``catalog.build(..., client=client)`` hands the per-file work (stat,
checksum, open, ingest into records) to the cluster's workers through a
``concurrent.futures`` executor over the client. Everything else stays as in
a local build: batches are submitted in order and their records taken in by
batch number, so the row order is the same whatever the number of workers;
checkpoints commit what is done, so a build whose driver dies resumes; a
batch whose worker dies is re-run by the scheduler on another worker (and,
when it keeps failing, file by file like a crash of a local worker). The
workers hand their records over in files under the catalog folder, which
they must therefore see under the same path (one machine, or a shared file
system).

Example
-------
>>> from dask.distributed import Client                                   # doctest: +SKIP
>>> res = omeframe.catalog.build("plates/", "plates.catalog", client=Client())   # doctest: +SKIP
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Any

from omeframe.engine import threads as _threads

__all__ = ["ClientPool", "client_pool", "client_threads"]


def _one_thread() -> None:
    """Run on every worker: omeframe's decode pool of one thread (a process per core, as locally)."""
    _threads.set_num_threads(1)


class ClientPool(Executor):
    """A ``concurrent.futures.Executor`` that runs tasks on a ``dask.distributed`` client.

    Tasks are submitted impure (every submit runs, even with equal arguments).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._futures: set[Any] = set()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        inner = self._client.get_executor(pure=False)
        fut: Future[Any] = inner.submit(fn, *args, **kwargs)
        self._futures.add(fut)
        fut.add_done_callback(self._futures.discard)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            for fut in list(self._futures):
                fut.cancel()
        if wait:
            for fut in list(self._futures):
                if not fut.cancelled():
                    fut.exception()  # wait for it; its outcome was taken by the caller
        self._futures.clear()


def client_pool(client: Any, max_workers: int, mp_context: Any) -> ClientPool:
    """The :class:`~omeframe.catalog.build.Seams` ``open_pool`` of a build on ``client``.

    ``max_workers`` and ``mp_context`` are the local pool's arguments; the
    cluster decides its own processes.
    """
    client.run(_one_thread)
    return ClientPool(client)


def client_threads(client: Any) -> int:
    """Task slots of ``client``'s cluster (the sum of its workers' threads), at least 1."""
    info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else client.scheduler_info()
    return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False
