"""The process-wide byte-budget cache: LRU by bytes, single flight, no poisoning."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import omeframe
from omeframe.engine.cache import ByteCache, nbytes_of, shared_cache


def test_lru_evicts_by_bytes() -> None:
    cache = ByteCache(max_bytes=3000)
    for i in range(3):
        cache.put(("k", i), np.zeros(1000, np.uint8))
    assert cache.info().bytes == 3000
    cache.get(("k", 0))  # 0 becomes most recent; 1 is the oldest
    cache.put(("k", 3), np.zeros(1000, np.uint8))
    assert ("k", 1) not in cache
    assert ("k", 0) in cache and ("k", 3) in cache
    info = cache.info()
    assert (info.entries, info.evictions, info.bytes) == (3, 1, 3000)


def test_get_all_is_all_or_nothing_and_marks_every_key_recent() -> None:
    cache = ByteCache(max_bytes=3000)
    for i in range(3):
        cache.put(("k", i), np.full(1000, i, np.uint8))
    assert cache.get_all([("k", 2), ("k", 9)]) is None  # one missing: nothing counted, nothing moved
    assert cache.info().hits == 0
    got = cache.get_all([("k", 1), ("k", 0)])
    assert got is not None and [int(a[0]) for a in got] == [1, 0]
    assert cache.info().hits == 2
    cache.put(("k", 3), np.zeros(1000, np.uint8))  # 2 is now the least recently used
    assert ("k", 2) not in cache and ("k", 0) in cache and ("k", 1) in cache
    assert cache.get_all([]) == []


def test_value_larger_than_budget_is_not_kept() -> None:
    cache = ByteCache(max_bytes=100)
    out = cache.get_or_compute("big", lambda: b"x" * 500)
    assert out == b"x" * 500
    assert "big" not in cache and cache.info().bytes == 0


def test_shrinking_budget_evicts() -> None:
    cache = ByteCache(max_bytes=10_000)
    for i in range(10):
        cache.put(i, bytes(1000))
    cache.set_max_bytes(2500)
    assert cache.info().entries == 2 and 8 in cache and 9 in cache


def test_single_flight_computes_once() -> None:
    cache = ByteCache(max_bytes=1 << 20)
    calls = []
    gate = threading.Event()

    def compute() -> np.ndarray:
        calls.append(1)
        gate.wait(5)
        return np.ones(10)

    results: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("t", compute)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)
    info = cache.info()
    assert info.misses == 1 and info.hits == 7


def test_failure_reaches_every_waiter_and_does_not_poison() -> None:
    cache = ByteCache(max_bytes=1 << 20)
    gate = threading.Event()

    def failing() -> bytes:
        gate.wait(5)
        raise OSError("source went away")

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            cache.get_or_compute("k", failing)
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join()
    assert len(errors) == 4
    assert "k" not in cache
    assert cache.get_or_compute("k", lambda: b"ok") == b"ok"


@pytest.mark.parametrize("bad", [-1, 1.5, "1GB", True])
def test_bad_budget(bad: object) -> None:
    with pytest.raises(ValueError, match="cache budget"):
        ByteCache(max_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache budget"):
        omeframe.set_cache_bytes(bad)  # type: ignore[arg-type]


def test_public_functions_act_on_the_shared_cache() -> None:
    before = omeframe.cache_info().max_bytes
    try:
        omeframe.set_cache_bytes(12345)
        assert omeframe.cache_info().max_bytes == 12345 == shared_cache().max_bytes
    finally:
        omeframe.set_cache_bytes(before)


def test_nbytes_of() -> None:
    assert nbytes_of(np.zeros((4, 4), np.uint16)) == 32
    assert nbytes_of(b"abc") == 3
    assert nbytes_of(memoryview(b"abcd")) == 4


def test_discard_prefix() -> None:
    cache = ByteCache(1 << 20)
    cache.put(("tile", "a", 0), b"1")
    cache.put(("tile", "a", 1), b"2")
    cache.put(("tile", "b", 0), b"3")
    assert cache.discard_prefix(("tile", "a")) == 2
    assert cache.info().entries == 1 and cache.info().bytes == 1


def test_discard_prefix_from_inside_a_locked_section_does_not_deadlock() -> None:
    """A source collected by GC inside the cache's own lock (its finalizer discards its prefix)."""
    cache = ByteCache(1 << 20)
    cache.put(("stack", "dead", 0), b"x" * 10)

    class Key:
        def __hash__(self) -> int:  # runs inside get()'s locked section, as a GC finalizer would
            assert cache.discard_prefix(("stack", "dead")) == 0  # deferred, not waited for
            return 1

    done = threading.Event()

    def probe() -> None:
        cache.get(Key())
        done.set()

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(10)
    assert done.is_set(), "discard_prefix waited for a lock its own thread holds"
    assert ("stack", "dead", 0) not in cache and cache.info().bytes == 0  # dropped when the section ended
