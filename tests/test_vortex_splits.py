"""Takes that walk a Vortex record table are served from decoded splits kept in the shared cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vortex")

import omeframe as of  # noqa: E402
from omeframe.engine.cache import DEFAULT_CACHE_BYTES, shared_cache  # noqa: E402
from omeframe.formats.record.vortex_splits import dense_splits, take_from_splits  # noqa: E402
from vortex_damage import write_flipped  # noqa: E402

N = 9000  # two splits: rows 0..8191 and 8192..8999


def crops(n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 3, 2, 2), dtype=np.uint8)


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    of.set_cache_bytes(DEFAULT_CACHE_BYTES)
    shared_cache().clear()
    yield
    of.set_cache_bytes(DEFAULT_CACHE_BYTES)
    shared_cache().clear()


@pytest.fixture
def table_path(tmp_path: Path) -> tuple[Path, np.ndarray]:
    stack = crops()
    path = tmp_path / "crops.vortex"
    of.write_table(path, stack, dim_order="CYX")
    return path, stack


def test_dense_splits() -> None:
    bounds = np.array([[0, 8192], [8192, 9000]])
    assert dense_splits(np.arange(0, 256), bounds).tolist() == [True, False]  # 1/32 of the split
    assert dense_splits(np.arange(8192, 8192 + 32), bounds).tolist() == [False, True]  # a run of 32
    assert dense_splits(np.arange(8192, 8192 + 20), bounds).tolist() == [False, False]  # 20 rows of 808
    assert dense_splits(np.arange(0, 8192, 100), bounds).tolist() == [False, False]  # 82 scattered rows
    assert dense_splits(np.arange(0, 8192, 30), bounds).tolist() == [True, False]  # 274 scattered rows
    assert dense_splits(np.array([], dtype=np.int64), bounds).tolist() == [False, False]


@pytest.mark.parametrize("batch", [256, 100, 1000])
def test_walking_the_table_returns_every_row_from_two_kept_splits(table_path, batch: int) -> None:
    path, stack = table_path
    t = of.ImageTable(path)
    for lo in range(0, N, batch):
        rows = np.arange(lo, min(lo + batch, N))
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    info = of.cache_info()
    assert info.entries == 2  # one decoded stack per split
    assert info.misses == 2 and info.hits > 0
    assert info.bytes == stack.nbytes  # the two splits hold every image once


def test_sparse_takes_of_a_large_table_gather_and_keep_nothing(tmp_path: Path) -> None:
    n = 5 * 8192  # 492 KB of images: more than half of the budget below, a split under a quarter
    stack = crops(n)
    path = tmp_path / "large.vortex"
    of.write_table(path, stack, dim_order="CYX")
    of.set_cache_bytes(800_000)
    t = of.ImageTable(path)
    rows = np.random.default_rng(1).choice(n, 64, replace=False)
    for _ in range(3):
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert of.cache_info().entries == 0
    t.to_numpy(np.arange(8192, 8192 + 300))  # dense in split 1: kept
    assert of.cache_info().entries == 1


def test_a_small_table_is_kept_whole_by_random_takes(table_path) -> None:
    path, stack = table_path  # 108 KB of images: under half of the default budget
    t = of.ImageTable(path)
    rng = np.random.default_rng(2)
    for _ in range(4):
        rows = rng.choice(N, 64, replace=False)
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    info = of.cache_info()
    assert info.entries == 2 and info.misses == 2 and info.hits >= 4  # both splits decoded once


def test_a_kept_split_serves_any_rows_in_any_order(table_path) -> None:
    path, stack = table_path
    t = of.ImageTable(path)
    t.to_numpy(np.arange(0, 256))  # the first take learns the image size
    t.to_numpy(np.arange(256, 512))  # dense: split 0 decoded and kept
    assert of.cache_info().entries == 1
    rows = np.array([4000, 7, 8191, 300])
    assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert np.array_equal(t.to_numpy(rows, dims="YXC"), stack[rows].transpose(0, 2, 3, 1))
    assert t.to_numpy(rows, dtype=np.float32).dtype == np.float32
    assert of.cache_info().entries == 1  # one stack of the split serves every dims
    mixed = np.array([10, 8500, 20])  # split 1 is neither kept nor dense: gathered
    assert np.array_equal(t.to_numpy(mixed), stack[mixed])


def test_returned_rows_are_the_callers_own(table_path) -> None:
    path, stack = table_path
    t = of.ImageTable(path)
    t.to_numpy(np.arange(0, 256))
    for rows in (np.arange(256, 512), np.array([600, 5, 900])):
        got = t.to_numpy(rows)
        assert got.flags.writeable
        got[:] = 0
        assert np.array_equal(t.to_numpy(rows), stack[rows])


def test_a_table_replaced_under_its_name_is_read_anew(tmp_path: Path) -> None:
    path = tmp_path / "crops.vortex"
    first, second = crops(seed=1), crops(seed=2)
    of.write_table(path, first, dim_order="CYX")
    t = of.ImageTable(path)
    t.to_numpy(np.arange(0, 256))
    assert np.array_equal(t.to_numpy(np.arange(256, 512)), first[256:512])
    of.write_table(path, second, dim_order="CYX")
    t2 = of.ImageTable(path)
    t2.to_numpy(np.arange(0, 256))
    assert np.array_equal(t2.to_numpy(np.arange(256, 512)), second[256:512])


def test_splits_of_several_shapes_are_read_row_by_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (3, 2, 2) if i % 50 else (3, 4, 4), dtype=np.uint8) for i in range(N)]
    path = tmp_path / "mixed.vortex"
    of.write_table(path, images, dim_order="CYX")
    t = of.ImageTable(path)
    rows = np.arange(1, 50)  # one shape, a dense run in a split of two shapes
    for _ in range(3):
        assert np.array_equal(t.to_numpy(rows), np.stack([images[r] for r in rows]))
    # the split was tried once and remembered as not one stack
    assert take_from_splits(os.fspath(path), t.column, rows, "CYX", 12) is None
    assert of.cache_info().misses == 1


def test_a_damaged_split_fails_every_time_and_is_not_kept(tmp_path: Path) -> None:
    stack = crops()
    path = tmp_path / "damaged.vortex"
    write_flipped(path, stack, row=300, chunk=0, mask=1)
    t = of.ImageTable(path)
    assert np.array_equal(t.to_numpy(np.arange(0, 256)), stack[:256])
    for _ in range(2):
        with pytest.raises(of.ChunkChecksumError, match=r"rows 300\b"):
            t.to_numpy(np.arange(256, 512))
    assert of.cache_info().entries == 0


def test_no_budget_keeps_nothing(table_path) -> None:
    path, stack = table_path
    of.set_cache_bytes(0)
    t = of.ImageTable(path)
    for lo in range(0, 1024, 256):
        rows = np.arange(lo, lo + 256)
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert of.cache_info().entries == 0


def test_loaders_shuffle_whole_splits_of_a_vortex_table(table_path, tmp_path: Path) -> None:
    from omeframe.torch import local_blocks, shuffled_rows

    path, stack = table_path
    t = of.ImageTable(path)
    assert t.block_rows == 8192
    assert local_blocks(t, None, None) == (8192, 1)  # one split per shuffle buffer
    assert local_blocks(t, 512, None) == (512, 16) and local_blocks(t, None, 3) == (8192, 3)
    parquet = of.ImageTable(of.write_table(tmp_path / "crops.parquet", stack[:10], dim_order="CYX"))
    assert parquet.block_rows is None and local_blocks(parquet, None, None) == (1024, 8)
    # a shuffled epoch in batches of 256 reads each split whole once, then serves it from memory
    rows, _ = shuffled_rows(len(t), seed=4, block_size=8192, buffer_blocks=1)
    assert sorted(rows.tolist()) == list(range(N)) and rows[:300].tolist() != list(range(300))
    t.to_numpy(rows[:256])  # learns the image size
    for i in range(0, N, 256):
        assert np.array_equal(t.to_numpy(rows[i : i + 256]), stack[rows[i : i + 256]])
    assert of.cache_info().misses == 2 and of.cache_info().entries == 2
