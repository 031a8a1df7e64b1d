"""One process-wide, byte-bounded cache shared by every source, provider and store.

Decoded tiles and planes, remote byte blocks and anything else worth keeping is
held in one least-recently-used cache whose budget is counted in bytes, so a
viewer that pans over ten images and a loader that reads remote chunks share one
memory limit instead of each keeping its own.

Keys are tuples whose first item names the kind of entry (``("tile", token,
level, ...)``, ``("remote", url, version, start, stop)``), so kinds never collide.
:meth:`ByteCache.get_or_compute` is *single-flight*: however many threads ask for
a missing key at once, the value is computed once and every caller receives it;
if the computation raises, every waiting caller receives that exception and
nothing is stored, so a failing source never poisons the cache.

Example
-------
>>> import numpy as np
>>> from omeframe.engine.cache import ByteCache
>>> cache = ByteCache(max_bytes=1 << 20)
>>> tile = cache.get_or_compute(("tile", "demo", 0), lambda: np.zeros((8, 8), np.uint8))
>>> cache.info().misses, cache.get(("tile", "demo", 0)) is tile
(1, True)
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from omeframe.storage import remote

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "ByteCache",
    "CacheInfo",
    "cache_info",
    "nbytes_of",
    "set_cache_bytes",
    "shared_cache",
]

T = TypeVar("T")

#: Budget of the shared cache until :func:`set_cache_bytes` changes it (512 MiB).
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class CacheInfo:
    """Counters of a :class:`ByteCache`.

    Attributes
    ----------
    hits, misses : int
        Lookups that found / did not find their key (a single-flight waiter that
        receives another thread's result counts as a hit).
    bytes : int
        Bytes held now.
    max_bytes : int
        The budget.
    entries : int
        Number of entries held.
    evictions : int
        Entries dropped to stay within the budget.
    """

    hits: int
    misses: int
    bytes: int
    max_bytes: int
    entries: int
    evictions: int


def nbytes_of(value: Any) -> int:
    """Size in bytes charged for ``value``: ``.nbytes`` where it has one
    (numpy arrays, Arrow buffers and arrays), ``len`` of bytes-like values,
    ``sys.getsizeof`` otherwise."""
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    return sys.getsizeof(value)


class _Flight:
    """One computation in progress; waiters block on ``done``."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _Guard:
    """The cache's lock, remembering its holder and running deferred discards on release."""

    __slots__ = ("cache",)

    def __init__(self, cache: ByteCache) -> None:
        self.cache = cache

    def __enter__(self) -> None:
        self.cache._lock.acquire()
        self.cache._owner = threading.get_ident()

    def __exit__(self, *exc: object) -> None:
        cache = self.cache
        try:
            while cache._pending:
                cache._discard_locked(cache._pending.pop())
        finally:
            cache._owner = None
            cache._lock.release()


class ByteCache:
    """A thread-safe LRU cache bounded by the bytes of its values.

    Parameters
    ----------
    max_bytes : int
        Budget in bytes (``0`` disables caching: values are computed and handed
        out but never kept).

    Raises
    ------
    ValueError
        If ``max_bytes`` is negative or not an integer.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._max = _check_budget(max_bytes)
        self._lock = threading.Lock()
        self._guard = _Guard(self)
        self._owner: int | None = None  # the thread inside a locked section
        self._pending: list[tuple[Any, ...]] = []  # prefixes discarded from inside one
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    # ---- budget ---------------------------------------------------------
    @property
    def max_bytes(self) -> int:
        """The budget in bytes."""
        return self._max

    def set_max_bytes(self, max_bytes: int) -> None:
        """Change the budget, evicting least recently used entries to fit."""
        budget = _check_budget(max_bytes)
        with self._guard:
            self._max = budget
            self._evict_locked()

    # ---- lookups --------------------------------------------------------
    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value stored under ``key`` (marked most recently used), else ``default``."""
        with self._guard:
            item = self._data.get(key)
            if item is None:
                self._misses += 1
                return default
            self._data.move_to_end(key)
            self._hits += 1
            return item[0]

    def get_all(self, keys: Sequence[Hashable]) -> list[Any] | None:
        """The values under every one of ``keys`` (marked most recently used), or ``None`` if one is missing.

        One lock for all keys; counts a hit per key when all are present and
        nothing when one is missing (the caller then computes what it needs).

        Example
        -------
        >>> c = ByteCache(1 << 20)
        >>> c.put("a", b"x"); c.put("b", b"y")
        >>> c.get_all(["a", "b"]), c.get_all(["a", "z"])
        ([b'x', b'y'], None)
        """
        with self._guard:
            data = self._data
            items = [data.get(key) for key in keys]
            if any(item is None for item in items):
                return None
            for key in keys:
                data.move_to_end(key)
            self._hits += len(items)
            return [item[0] for item in items]  # type: ignore[index]

    def __contains__(self, key: Hashable) -> bool:
        with self._guard:
            return key in self._data

    def put(self, key: Hashable, value: Any, nbytes: int | None = None) -> None:
        """Store ``value`` under ``key``; values larger than the budget are not kept."""
        size = nbytes_of(value) if nbytes is None else int(nbytes)
        with self._guard:
            self._store_locked(key, value, size)

    def get_or_compute(
        self, key: Hashable, compute: Callable[[], T], nbytes: Callable[[T], int] | None = None
    ) -> T:
        """The value under ``key``, computing it once with ``compute()`` if missing.

        Concurrent callers of a missing key wait for the one computation. If it
        raises, every waiting caller gets the exception and nothing is stored.
        """
        with self._guard:
            item = self._data.get(key)
            if item is not None:
                self._data.move_to_end(key)
                self._hits += 1
                return item[0]
            flight = self._flights.get(key)
            owner = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
                self._misses += 1
            else:
                self._hits += 1
        if not owner:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            value = compute()
        except BaseException as exc:
            flight.error = exc
            with self._guard:
                self._flights.pop(key, None)
            flight.done.set()
            raise
        size = nbytes(value) if nbytes is not None else nbytes_of(value)
        flight.value = value
        with self._guard:
            self._flights.pop(key, None)
            self._store_locked(key, value, size)
        flight.done.set()
        return value

    def discard(self, key: Hashable) -> None:
        """Drop ``key`` if present."""
        with self._guard:
            item = self._data.pop(key, None)
            if item is not None:
                self._bytes -= item[1]

    def discard_prefix(self, prefix: tuple[Any, ...]) -> int:
        """Drop every tuple key starting with ``prefix``; returns how many.

        Sources call this from ``weakref.finalize`` when they are collected, and
        a collection can run inside one of this cache's own locked sections
        (any allocation may trigger it). Called from there, the prefix is
        dropped when that section ends (and 0 returned) instead of waiting
        for the lock its own thread holds.
        """
        if self._owner == threading.get_ident():
            self._pending.append(prefix)
            return 0
        with self._guard:
            return self._discard_locked(prefix)

    def _discard_locked(self, prefix: tuple[Any, ...]) -> int:
        n = len(prefix)
        doomed = [k for k in self._data if isinstance(k, tuple) and k[:n] == prefix]
        for k in doomed:
            self._bytes -= self._data.pop(k)[1]
        return len(doomed)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._guard:
            self._data.clear()
            self._bytes = 0
            self._hits = self._misses = self._evictions = 0

    def info(self) -> CacheInfo:
        """A snapshot of the counters."""
        with self._guard:
            return CacheInfo(
                hits=self._hits,
                misses=self._misses,
                bytes=self._bytes,
                max_bytes=self._max,
                entries=len(self._data),
                evictions=self._evictions,
            )

    # ---- internals ------------------------------------------------------
    def _store_locked(self, key: Hashable, value: Any, size: int) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        if size > self._max:
            return
        self._data[key] = (value, size)
        self._bytes += size
        self._evict_locked()

    def _evict_locked(self) -> None:
        while self._bytes > self._max and self._data:
            _, (_, size) = self._data.popitem(last=False)
            self._bytes -= size
            self._evictions += 1

    def __repr__(self) -> str:
        i = self.info()
        return (
            f"ByteCache({i.bytes}/{i.max_bytes} bytes, {i.entries} entries, "
            f"hits={i.hits}, misses={i.misses}, evictions={i.evictions})"
        )


def _check_budget(max_bytes: int) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise ValueError(
            f"cache budget must be an integer number of bytes, got {max_bytes!r}; "
            "pass e.g. 512 * 2**20 for 512 MiB"
        )
    if max_bytes < 0:
        raise ValueError(
            f"cache budget must be >= 0 bytes, got {max_bytes}; pass 0 to disable caching"
        )
    return max_bytes


_SHARED = ByteCache()
remote.set_block_cache(_SHARED)  # remote byte blocks share the budget


def shared_cache() -> ByteCache:
    """The process-wide cache every source, provider and remote store uses."""
    return _SHARED


def set_cache_bytes(max_bytes: int) -> None:
    """Set the budget of the process-wide cache in bytes (``0`` disables it).

    Example
    -------
    >>> import omeframe
    >>> omeframe.set_cache_bytes(256 * 2**20)
    >>> omeframe.cache_info().max_bytes
    268435456
    >>> from omeframe.engine.cache import DEFAULT_CACHE_BYTES
    >>> omeframe.set_cache_bytes(DEFAULT_CACHE_BYTES)
    """
    _SHARED.set_max_bytes(max_bytes)


def cache_info() -> CacheInfo:
    """Counters of the process-wide cache (hits, misses, bytes, evictions).

    Example
    -------
    >>> import omeframe
    >>> info = omeframe.cache_info()
    >>> info.bytes <= info.max_bytes
    True
    """
    return _SHARED.info()
