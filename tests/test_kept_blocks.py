"""Takes served from decoded blocks kept in the shared cache: the rules both formats share, and Parquet's.

Vortex keeps its splits for takes that walk the table too (see
``test_vortex_splits.py``); an indexed Parquet table gathers consecutive rows
through its pages and keeps blocks only for sparse takes of a small table.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np
import pytest

import omeframe as of
from omeframe.engine.cache import shared_cache
from omeframe.formats.record import kept_blocks
from omeframe.formats.record.kept_blocks import BLOCK_ROWS, dense_blocks, fixed_blocks
from omeframe.formats.vortex.file import rows_per_split

pytestmark = pytest.mark.usefixtures("default_cache")

N = 9000  # two blocks: rows 0..8191 and 8192..8999
#: Whether a take dense in a block has it decoded and kept, per format.
KEEPS_DENSE = {"parquet": False, "vortex": True}


def crops(n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 3, 4, 4), dtype=np.uint8)


@pytest.fixture(params=["parquet", "vortex"])
def fmt(request: pytest.FixtureRequest) -> str:
    if request.param == "vortex":
        pytest.importorskip("vortex")
    return str(request.param)


@pytest.fixture
def table_path(tmp_path: Path, fmt: str) -> tuple[Path, np.ndarray]:
    stack = crops()
    path = tmp_path / f"crops.{fmt}"
    of.write_table(path, stack, dim_order="CYX")
    if fmt == "parquet":
        t = of.ImageTable(path)
        assert t._index is not None and t._index.pages is not None  # raw chunks in compressed pages
    return path, stack


def test_blocks_and_density() -> None:
    assert fixed_blocks(0).shape == (0, 2)
    assert fixed_blocks(BLOCK_ROWS).tolist() == [[0, BLOCK_ROWS]]
    bounds = fixed_blocks(N, 4096)
    assert bounds.tolist() == [[0, 4096], [4096, 8192], [8192, 9000]]
    assert not bounds.flags.writeable
    count, first, last = rows_per_split(np.array([1, 2, 5000, 8999]), bounds)
    assert count.tolist() == [2, 1, 1] and first.tolist() == [1, 5000, 8999] and last.tolist() == [2, 5000, 8999]
    two = np.array([[0, 8192], [8192, 9000]])
    assert dense_blocks(np.arange(0, 256), two).tolist() == [True, False]  # 1/32 of the block
    assert dense_blocks(np.arange(8192, 8192 + 32), two).tolist() == [False, True]  # a run of 32
    assert dense_blocks(np.arange(8192, 8192 + 20), two).tolist() == [False, False]  # 20 rows of 808
    assert dense_blocks(np.arange(0, 8192, 100), two).tolist() == [False, False]  # 82 scattered rows
    assert dense_blocks(np.arange(0, 8192, 30), two).tolist() == [True, False]  # 274 scattered rows
    assert dense_blocks(np.array([], dtype=np.int64), two).tolist() == [False, False]


def test_the_block_of_the_first_row_settles_a_take_only_as_every_block_would() -> None:
    """A take that the block of its first row calls sparse and never decoded is one the test over every
    block it touches sends to its rows too; random batches are settled so, runs and dense takes are not."""
    bounds = fixed_blocks(100_000)
    key = ("test-first-block", id(bounds))
    kept_blocks._remember_decoded(key, np.array([2]))
    rng = np.random.default_rng(4)
    settled = {"random": 0, "run": 0, "seen": 0}
    for i in range(600):
        kind = ["random", "run", "seen"][i % 3]
        if kind == "random":
            idx = rng.choice(100_000, int(rng.integers(1, 600)), replace=False)
        elif kind == "run":
            start = int(rng.integers(0, 99_000))
            idx = rng.permutation(np.arange(start, start + int(rng.integers(1, 300))))
        else:  # a first row in the block decoded before, then random rows
            first = 2 * BLOCK_ROWS + int(rng.integers(BLOCK_ROWS))
            idx = np.concatenate([[first], np.setdiff1d(rng.choice(100_000, 20, replace=False), [first])])
        if sparse := kept_blocks._sparse_and_new(key, bounds, idx):
            touched = np.unique(np.searchsorted(bounds[:, 0], idx, side="right") - 1)
            dense = dense_blocks(np.sort(idx), bounds)[touched]
            assert not (dense | np.isin(touched, [2])).all(), (kind, idx[:5])
        settled[kind] += int(sparse)
    assert settled["random"] > 100 and settled["seen"] == 0
    assert 0 < settled["run"] < 200  # short runs are sparse; runs of 32 rows or more may be dense


@pytest.mark.parametrize("batch", [256, 100, 1000])
def test_walking_the_table_keeps_blocks_where_the_format_gathers_slowly(table_path, fmt: str, batch: int) -> None:
    path, stack = table_path
    t = of.ImageTable(path)
    for lo in range(0, N, batch):
        rows = np.arange(lo, min(lo + batch, N))
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    info = of.cache_info()
    if KEEPS_DENSE[fmt]:  # each block decoded once, then both stitched into one stack of every image
        assert info.entries == 1 and info.misses == 2 and info.hits > 0 and info.bytes == stack.nbytes
    else:  # consecutive rows cost about 1 us each through the pages: no block is worth decoding
        assert info.entries == 0


def test_a_small_table_is_kept_whole_by_random_takes(table_path) -> None:
    path, stack = table_path
    t = of.ImageTable(path)
    rng = np.random.default_rng(2)
    for _ in range(4):
        rows = rng.choice(N, 64, replace=False)
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    info = of.cache_info()  # both blocks decoded once, then stitched into one stack of every image
    assert info.entries == 1 and info.misses == 2 and info.hits >= 4 and info.bytes == stack.nbytes
    hits = info.hits
    assert np.array_equal(t.to_numpy(np.arange(100, 1100)), stack[100:1100])  # dense, from the stack
    assert of.cache_info().hits == hits + 1 and of.cache_info().misses == 2


def test_sparse_takes_of_a_large_table_gather_and_keep_nothing(tmp_path: Path, fmt: str, monkeypatch) -> None:
    n = 5 * 8192  # 1.97 MB of images: more than half of the budget below, a block (393 KB) under a quarter
    stack = crops(n)
    path = tmp_path / f"large.{fmt}"
    of.write_table(path, stack, dim_order="CYX")
    of.set_cache_bytes(2_000_000)
    t = of.ImageTable(path)
    rows = np.random.default_rng(1).choice(n, 64, replace=False)
    for _ in range(3):
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert of.cache_info().entries == 0
    assert np.array_equal(t.to_numpy(np.arange(8192, 8192 + 300)), stack[8192:8492])  # dense in block 1
    assert of.cache_info().entries == int(KEEPS_DENSE[fmt])
    if KEEPS_DENSE[fmt]:
        few = np.array([8200, 9000, 12000])  # sparse, all in the kept block 1: served from it
        before = of.cache_info()
        assert np.array_equal(t.to_numpy(few), stack[few])
        assert of.cache_info().hits == before.hits + 1
        other = np.array([10, 9000, 20000])  # blocks 0 and 2 were never decoded: not even looked up
        cache, lookups = shared_cache(), []
        real = cache.get_all
        monkeypatch.setattr(cache, "get_all", lambda keys: lookups.append(keys) or real(keys))
        assert np.array_equal(t.to_numpy(other), stack[other])
        assert lookups == []
        assert np.array_equal(t.to_numpy(few), stack[few]) and len(lookups) == 1


def test_a_kept_block_serves_any_rows_dims_and_dtype(table_path) -> None:
    path, stack = table_path
    t = of.ImageTable(path)
    t.to_numpy(np.arange(0, 256))  # the first take learns the image size
    t.to_numpy(np.array([5, 900, 3000]))  # sparse in block 0 of a small table: decoded and kept
    rows = np.array([4000, 7, 8191, 300])
    assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert np.array_equal(t.to_numpy(rows, dims="YXC"), stack[rows].transpose(0, 2, 3, 1))
    assert t.to_numpy(rows, dtype=np.float32).dtype == np.float32
    for got in (t.to_numpy(rows), t.to_numpy(np.arange(300, 340))):  # gathered and sliced: the caller's own
        assert got.flags.writeable
        got[:] = 0
    assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert np.array_equal(t.to_numpy(np.arange(300, 340)), stack[300:340])
    assert of.cache_info().entries == 1  # block 0 only, one stack for every dims


def test_a_table_replaced_under_its_name_is_read_anew(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"crops.{fmt}"
    first, second = crops(seed=1), crops(seed=2)
    of.write_table(path, first, dim_order="CYX")
    t = of.ImageTable(path)
    rows = np.array([3, 700, 5000, 8500])
    t.to_numpy(np.arange(0, 256))
    assert np.array_equal(t.to_numpy(rows), first[rows])
    assert of.cache_info().entries == 1  # both blocks, stitched
    of.write_table(path, second, dim_order="CYX")
    t2 = of.ImageTable(path)
    t2.to_numpy(np.arange(0, 256))
    assert np.array_equal(t2.to_numpy(rows), second[rows])
    assert of.cache_info().entries == 2  # the new version's stack beside the old one


def test_blocks_of_several_shapes_are_remembered_and_gathered(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (3, 2, 2) if i % 50 else (3, 4, 4), dtype=np.uint8) for i in range(N)]
    path = tmp_path / f"mixed.{fmt}"
    of.write_table(path, images, dim_order="CYX")
    t = of.ImageTable(path)
    rows = np.array([1, 701, 3001, 8999])  # one shape, sparse in the blocks of a small table of two shapes
    for _ in range(3):
        assert np.array_equal(t.to_numpy(rows), np.stack([images[r] for r in rows]))
    info = of.cache_info()  # each block tried once and remembered as not one stack
    assert info.misses == 2 and info.entries == 2 and info.bytes < 1000


def test_no_budget_keeps_nothing(table_path) -> None:
    path, stack = table_path
    of.set_cache_bytes(0)
    t = of.ImageTable(path)
    rng = np.random.default_rng(6)
    for rows in [rng.choice(N, 64, replace=False) for _ in range(3)] + [np.arange(0, 256), np.arange(256, 512)]:
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert of.cache_info().entries == 0


def test_a_damaged_parquet_page_fails_every_time_and_nothing_is_kept(tmp_path: Path) -> None:
    stack = crops()
    path = tmp_path / "crops.parquet"
    of.write_table(path, stack, dim_order="CYX")
    pages = of.ImageTable(path)._index.pages  # type: ignore[union-attr]
    assert pages is not None
    raw = bytearray(path.read_bytes())
    raw[int(pages.values_start[5]) + 3] ^= 0x10  # inside the compressed values of a page of block 0
    path.write_bytes(bytes(raw))
    t = of.ImageTable(path)
    assert np.array_equal(t.to_numpy(np.arange(8192, 8448)), stack[8192:8448])  # learns the size
    for _ in range(2):  # sparse in block 0 of a small table: decoding it whole meets the damaged page
        with pytest.raises(of.ChunkChecksumError, match="CRC"):
            t.to_numpy(np.array([3, 4000, 8000]))
    assert all(key[0] != "parquet-block" or key[-1] != 0 for key in shared_cache()._data)
    assert np.array_equal(t.to_numpy(np.array([8200, 8900])), stack[[8200, 8900]])


def test_a_table_held_open_across_a_replacement_keeps_its_own_blocks(tmp_path: Path) -> None:
    """Kept blocks are keyed by the version a table maps: a table opened before its file was
    replaced decodes the old pixels, and a table opened after reads the new ones, whichever
    decoded its blocks first."""
    old, new = crops(seed=1), crops(seed=2)
    path = tmp_path / "crops.parquet"
    of.write_table(path, old, dim_order="CYX")
    before = of.ImageTable(path)
    of.write_table(path, new, dim_order="CYX")  # replaced by rename, while `before` maps the old file
    after = of.ImageTable(path)
    rows = np.random.default_rng(4).permutation(N)[:256]
    for _ in range(3):  # the second take of each decodes and keeps blocks; the third copies from them
        assert np.array_equal(before.to_numpy(rows), old[rows])
        assert np.array_equal(after.to_numpy(rows), new[rows])
    assert any(k[0] == "parquet-block" for k in shared_cache()._data)  # the takes went through kept blocks


def test_the_blocks_remembered_per_table_are_bounded(table_path, monkeypatch) -> None:
    """A long-lived process reading many tables forgets the oldest tables' decoded blocks; a
    forgotten table's takes still read exact pixels, and its blocks still in the cache serve them."""
    from omeframe.formats.record import kept_blocks

    monkeypatch.setattr(kept_blocks, "MAX_TABLES", 3)
    monkeypatch.setattr(kept_blocks, "_stitch", lambda *args: None)  # the blocks themselves serve the takes
    monkeypatch.setattr(kept_blocks, "_DECODED", type(kept_blocks._DECODED)())
    path, stack = table_path
    t = of.ImageTable(path)
    rng = np.random.default_rng(5)
    for _ in range(2):  # the first take shows the images' size, the second decodes and keeps both blocks
        rows = rng.choice(N, 64, replace=False)
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert len(kept_blocks._DECODED) == 1 and of.cache_info().entries == 2
    for k in range(5):  # other tables come and go
        kept_blocks._remember_decoded(("other", k), np.arange(2))
    assert len(kept_blocks._DECODED) == 3 and ("other", 4) in kept_blocks._DECODED
    assert not any(key[0] != "other" for key in kept_blocks._DECODED)  # ours was forgotten
    misses = of.cache_info().misses
    for _ in range(3):
        rows = rng.choice(N, 64, replace=False)
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert of.cache_info().misses == misses  # its blocks were still kept: nothing decoded again
    assert len(kept_blocks._DECODED) == 3


def test_a_small_table_is_stitched_into_one_stack_once_every_block_is_kept(tmp_path: Path, fmt: str) -> None:
    n = 20_000  # three blocks
    stack = crops(n, seed=7)
    path = tmp_path / f"three.{fmt}"
    of.write_table(path, stack, dim_order="CYX")
    t = of.ImageTable(path)
    rng = np.random.default_rng(3)
    near = rng.choice(8192, 64, replace=False)  # block 0 only: nothing to stitch yet
    t.to_numpy(near)
    assert np.array_equal(t.to_numpy(near), stack[near])
    assert of.cache_info().entries == 1 and of.cache_info().bytes < stack.nbytes
    for _ in range(3):
        rows = rng.choice(n, 256, replace=False)
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    info = of.cache_info()
    assert info.entries == 1 and info.bytes == stack.nbytes and info.misses == 3  # each block decoded once
    rows = rng.choice(n, 300, replace=False)
    got = t.to_numpy(rows, dims="YXC", dtype=np.float32)
    assert np.array_equal(got, stack[rows].transpose(0, 2, 3, 1).astype(np.float32))
    mine = t.to_numpy(rows)
    mine[:] = 0  # the caller's own copy: the kept stack is untouched
    assert np.array_equal(t.to_numpy(rows), stack[rows]) and of.cache_info().misses == 3
    shared_cache().clear()  # evicted: the blocks are decoded (and stitched) again
    for _ in range(2):
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert of.cache_info().entries == 1 and of.cache_info().bytes == stack.nbytes


def test_a_read_that_would_open_a_replaced_file_again_raises(tmp_path: Path, fmt: str) -> None:
    """A table reads the version it was opened on: Parquet's pixels from its map; any read by the
    file's name (every Vortex read, Parquet columns) raises FileChangedError, never the new rows."""
    old, new = crops(seed=1), crops(n=500, seed=2)
    path = tmp_path / f"crops.{fmt}"
    of.write_table(path, old, dim_order="CYX")
    t = of.ImageTable(path)
    assert len(t) == N
    of.write_table(path, new, dim_order="CYX")
    rows = np.array([3, 8500, 17])
    if fmt == "parquet":  # the pixels come from the version it maps
        assert np.array_equal(t.to_numpy(rows), old[rows]) and np.array_equal(t.to_numpy(), old)
    else:
        for read in (lambda: t.to_numpy(rows), t.to_numpy, lambda: t.schema):
            with pytest.raises(of.FileChangedError, match="open it again") as err:
                read()
            assert err.value.errno == errno.ESTALE and err.value.filename == str(path)
    with pytest.raises(of.FileChangedError):  # Parquet too: columns are read through the file's name
        t.read()
    fresh = of.ImageTable(path)
    assert len(fresh) == 500 and np.array_equal(fresh.to_numpy(rows[[0, 2]]), new[[3, 17]])
    path.unlink()
    with pytest.raises(of.FileChangedError):  # removed: no version to read by name any more
        fresh.read()


def test_a_read_that_fails_because_the_file_changed_under_it_says_so(tmp_path: Path, monkeypatch) -> None:
    from omeframe.formats.record import image_table

    path = tmp_path / "crops.vortex"
    of.write_table(path, crops(n=50, seed=1), dim_order="CYX")
    t = of.ImageTable(path)

    def replaced_mid_read(p, **kw):  # the file is replaced while the read runs, which then fails
        of.write_table(path, crops(n=60, seed=2), dim_order="CYX")
        raise of.CorruptFileError(f"{p!r}: bytes of two versions")

    monkeypatch.setattr(image_table, "read_record_table", replaced_mid_read)
    with pytest.raises(of.FileChangedError) as err:
        t.read()
    assert isinstance(err.value.__context__, of.CorruptFileError)


@pytest.mark.parametrize("pixels", ["frames", "pages"])
def test_a_table_rewritten_in_place_under_its_map_raises_instead_of_reading_other_bytes(
        tmp_path: Path, pixels: str) -> None:
    """``cp`` over an open Parquet table changes the bytes under its memory map: a take refuses them."""
    import shutil

    rng = np.random.default_rng(7)
    shape = (2000, 3, 64, 64) if pixels == "frames" else (3000, 3, 16, 16)  # zstd frames, or raw chunks in pages
    old, new = (rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(2))
    for x in (old, new):  # noise compresses to nothing: frames of one size, at the same offsets in both files
        x[..., 0, 0], x[..., 0, 1] = 0, 254  # and the same statistics
    path, other = tmp_path / "t.parquet", tmp_path / "other.parquet"
    of.write_table(path, old, dim_order="CYX")
    of.write_table(other, new, dim_order="CYX")
    of.set_cache_bytes(0)  # no kept blocks: every take reads the map (the module's fixture restores the budget)
    t = of.ImageTable(path)
    assert t.indexed and np.array_equal(t.to_numpy([0, 5]), old[[0, 5]])
    time.sleep(0.02)  # beyond the file system's timestamp granularity (same-size rewrites show by mtime only)
    shutil.copyfile(other, path)  # in place: the same inode, new bytes
    for read in (lambda: t.to_numpy([1000, 1500]), lambda: t.take([7], columns=[t.column])):
        with pytest.raises(of.FileChangedError, match="rewritten") as err:
            read()
        assert err.value.errno == errno.ESTALE and err.value.filename == str(path)
    unread = of.ImageTable(path)  # its footer not read from the map yet
    os.truncate(path, 100_000)  # a writer that truncated first: refused before the map is read past its end
    for table in (t, unread):
        with pytest.raises(of.FileChangedError, match="rewritten in place"):
            table.to_numpy([shape[0] - 1])
    t.close()
    assert t._fd is None


def test_a_copy_sent_to_another_process_refuses_a_file_replaced_since(tmp_path: Path, fmt: str) -> None:
    """A pickled table (a DataLoader or Dask worker's copy) reopens only the version its sender opened."""
    import pickle

    old, new = crops(seed=1), crops(n=500, seed=2)
    path = tmp_path / f"crops.{fmt}"
    of.write_table(path, old, dim_order="CYX")
    sent = pickle.dumps(of.ImageTable(path))
    assert np.array_equal(pickle.loads(sent).to_numpy([3, 8500]), old[[3, 8500]])  # unchanged: reopened
    of.write_table(path, new, dim_order="CYX")
    with pytest.raises(of.FileChangedError, match="replaced or rewritten since") as err:
        pickle.loads(sent)
    assert err.value.errno == errno.ESTALE and err.value.filename == str(path)
    assert len(pickle.loads(pickle.dumps(of.ImageTable(path)))) == 500  # a table opened now travels
