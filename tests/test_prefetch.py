"""Takes advise the kernel of every byte range they will touch: ranges merged by page, exact pixels from a cold file."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pytest

import omeframe as of
from omeframe.formats.record import image_table
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
    rows = rng.choice(len(cells), 200, replace=False)
    _evict(path)
    np.testing.assert_array_equal(table.to_numpy(rows), cells[rows])
    assert calls and calls[-1] >= 2  # scattered rows: several ranges advised
    taken = table.take(rows[:5])
    np.testing.assert_array_equal(of.to_numpy_stack(taken[table.column]), cells[rows[:5]])
