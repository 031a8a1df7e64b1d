"""Takes advise the kernel of the ranges they will touch unless the file is cached; exact pixels from a cold file."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import omeframe as of
from omeframe.formats.record import image_table
from omeframe.storage import prefetch
from omeframe.storage.prefetch import CAN_ADVISE, will_need

PAGE = mmap.PAGESIZE
needs_advice = pytest.mark.skipif(not CAN_ADVISE, reason="this platform has no posix_fadvise")


@needs_advice
def test_ranges_are_widened_to_pages_and_merged(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(64 * PAGE))
    with open(path, "rb") as fh:
        fd = fh.fileno()
        assert will_need(fd, np.array([0, 100]), np.array([10, 200])) == 1  # one page
        assert will_need(fd, np.array([5 * PAGE + 7, 10]), np.array([5 * PAGE + 9, 20])) == 2  # unsorted, apart
        assert will_need(fd, np.array([PAGE - 1, PAGE + 3]), np.array([PAGE + 1, 3 * PAGE])) == 1  # overlapping
        assert will_need(fd, np.array([60 * PAGE]), np.array([999 * PAGE])) == 1  # past the end: a hint
        assert will_need(fd, np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == 0
    assert will_need(fd, np.array([0]), np.array([1])) == 0  # a closed descriptor: no advice, no error


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@needs_advice
@pytest.mark.parametrize("size", [16, 48])  # raw chunks in compressed pages; one zstd frame per chunk
def test_take_from_a_cold_file_advises_and_is_exact(tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(size)
    cells = rng.integers(0, 4000, (3000, 3, size, size), dtype=np.uint16)
    path = tmp_path / "crops.parquet"
    of.write_table(path, cells, dim_order="CYX", progress=False)
    calls: list[int] = []
    real = image_table.will_need
    monkeypatch.setattr(image_table, "will_need", lambda fd, a, b: calls.append(real(fd, a, b)) or calls[-1])
    table = of.open_table(path)
    assert table.indexed
    assert table.column  # opens the Parquet reader now: the kernel's read-ahead of its open must not refill the file
    rows = rng.choice(len(cells), 200, replace=False)
    _evict(path)
    np.testing.assert_array_equal(table.to_numpy(rows), cells[rows])
    assert calls and calls[-1] >= 2  # scattered rows: several ranges advised
    taken = table.take(rows[:5])
    np.testing.assert_array_equal(of.to_numpy_stack(taken[table.column]), cells[rows[:5]])


needs_mincore = pytest.mark.skipif(not prefetch._MINCORE, reason="mincore is Linux-only here")


@needs_advice
@needs_mincore
def test_resident_tells_a_cached_map_from_an_evicted_one(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(64 * PAGE))
    _evict(path)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert not prefetch.resident(mm)
        assert len(fh.read()) == 64 * PAGE  # reading the file caches it
        assert prefetch.resident(mm)


MAP = bytes(100 * PAGE)  # what a check asks about: its size sets the first estimate of asking's cost


def _paid(check: prefetch.ResidencyCheck) -> None:
    """Report enough advice to pay for asking about :data:`MAP`."""
    check.advised(int(100 * prefetch.ASK_S_PER_PAGE / prefetch.ADVICE_S) + 1)


def test_a_map_is_asked_about_once_the_advice_has_paid_for_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr(prefetch, "resident", lambda mm: asked.append(1) or False)
    check = prefetch.ResidencyCheck()
    assert check(MAP) is False and asked == []  # a first take advises rather than asks
    check.advised(int(100 * prefetch.ASK_S_PER_PAGE / prefetch.ADVICE_S) - 1)
    assert check(MAP) is False and asked == []  # not paid for yet
    check.advised(2)
    assert check(MAP) is False and asked == [1]
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_S", 0.0)
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_FACTOR", 0)
    check._until = -1.0
    assert check(MAP) is False and asked == [1]  # the count starts again after each answer


def test_a_large_map_is_not_asked_about_on_the_first_take(monkeypatch: pytest.MonkeyPatch) -> None:
    class Huge:
        def __len__(self) -> int:
            return 8 << 30

    monkeypatch.setattr(prefetch, "resident", lambda mm: pytest.fail("asked about an 8 GB map on its first take"))
    check = prefetch.ResidencyCheck()
    check.advised(768)  # a first batch's advice
    assert check(Huge()) is False  # type: ignore[arg-type]


def test_a_residency_answer_stands_for_its_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([True, False])
    asked: list[int] = []
    monkeypatch.setattr(prefetch, "resident", lambda mm: asked.append(1) or next(answers))
    check = prefetch.ResidencyCheck()
    _paid(check)
    assert check(MAP) is True and check(MAP) is True and len(asked) == 1  # asked once per interval
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_S", 0.0)
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_FACTOR", 0)
    check._until = -1.0
    assert check(MAP) is False and len(asked) == 2  # a "cached" answer is checked again when it expires


def test_a_slow_answer_stands_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 102.0, 150.0, 299.0, 301.0, 301.5])  # asking took 2 s: the answer stands 200 s
    monkeypatch.setattr(prefetch, "time", SimpleNamespace(monotonic=lambda: next(clock)))  # this module's clock only
    asked: list[int] = []
    monkeypatch.setattr(prefetch, "resident", lambda mm: asked.append(1) or True)
    check = prefetch.ResidencyCheck()
    _paid(check)
    assert check(MAP) and len(asked) == 1  # t=100, done at 102
    assert check(MAP) and check(MAP) and len(asked) == 1  # t=150, t=299: still standing
    assert check(MAP) and len(asked) == 2  # t=301: asked again


@needs_advice
@needs_mincore
def test_takes_from_a_cached_table_stop_advising_once_asking_has_paid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_cache: None
) -> None:
    rng = np.random.default_rng(7)
    cells = rng.integers(0, 4000, (3000, 3, 16, 16), dtype=np.uint16)
    path = tmp_path / "crops.parquet"
    of.write_table(path, cells, dim_order="CYX", progress=False)
    path.read_bytes()  # every page cached
    calls: list[int] = []
    monkeypatch.setattr(image_table, "will_need", lambda fd, a, b: calls.append(1) or 100)  # 100 calls each
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_S", 0.0)  # an answer stands until the next take
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_FACTOR", 0)
    of.set_cache_bytes(0)  # every take reads the file (no decoded blocks kept; default_cache restores the budget)
    table = of.open_table(path)
    pages = -(-os.path.getsize(path) // PAGE)
    takes_to_pay = -(-pages * prefetch.ASK_S_PER_PAGE // (100 * prefetch.ADVICE_S))
    for _ in range(int(takes_to_pay) + 2):
        rows = rng.choice(len(cells), 200, replace=False)
        np.testing.assert_array_equal(table.to_numpy(rows), cells[rows])
    assert len(calls) == takes_to_pay  # advised until asking had paid; then asked, and the map was cached
    calls.clear()
    monkeypatch.setattr(prefetch, "resident", lambda mm: False)  # pages left the cache (the takes keep theirs mapped)
    np.testing.assert_array_equal(table.to_numpy(rows[::-1]), cells[rows[::-1]])
    assert calls == [1]  # the answer expired, was asked again, and the take advised its ranges again
