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


def test_a_residency_answer_stands_for_its_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([True, False])
    asked: list[int] = []
    monkeypatch.setattr(prefetch, "resident", lambda mm: asked.append(1) or next(answers))
    check = prefetch.ResidencyCheck()
    assert check(None) is True and check(None) is True and len(asked) == 1  # asked once per interval
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_S", 0.0)
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_FACTOR", 0)
    check._until = -1.0
    assert check(None) is False and len(asked) == 2


def test_a_slow_answer_stands_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 102.0, 150.0, 299.0, 301.0, 301.5])  # asking took 2 s: the answer stands 200 s
    monkeypatch.setattr(prefetch, "time", SimpleNamespace(monotonic=lambda: next(clock)))  # this module's clock only
    asked: list[int] = []
    monkeypatch.setattr(prefetch, "resident", lambda mm: asked.append(1) or True)
    check = prefetch.ResidencyCheck()
    assert check(None) and len(asked) == 1  # t=100, done at 102
    assert check(None) and check(None) and len(asked) == 1  # t=150, t=299: still standing
    assert check(None) and len(asked) == 2  # t=301: asked again


@needs_advice
@needs_mincore
def test_takes_from_a_cached_table_skip_the_advice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    cells = rng.integers(0, 4000, (3000, 3, 16, 16), dtype=np.uint16)
    path = tmp_path / "crops.parquet"
    of.write_table(path, cells, dim_order="CYX", progress=False)
    path.read_bytes()  # every page cached
    calls: list[int] = []
    monkeypatch.setattr(image_table, "will_need", lambda fd, a, b: calls.append(1) or 1)
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_S", 0.0)  # ask the kernel before every take
    monkeypatch.setattr(prefetch, "RESIDENT_RECHECK_FACTOR", 0)
    table = of.open_table(path)
    rows = rng.choice(len(cells), 200, replace=False)
    np.testing.assert_array_equal(table.to_numpy(rows), cells[rows])
    assert calls == []
    _evict(path)
    np.testing.assert_array_equal(table.to_numpy(rows[::-1]), cells[rows[::-1]])
    assert calls == [1]  # part of the file left the cache: the take advised its ranges again
