"""Vortex specifics of decoded splits kept in the shared cache (the shared rules: ``test_kept_blocks.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vortex")

import omeframe as of  # noqa: E402
from omeframe.formats.record.vortex_splits import take_from_splits  # noqa: E402
from vortex_damage import write_flipped  # noqa: E402

N = 9000  # two splits: rows 0..8191 and 8192..8999


def crops(n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 3, 2, 2), dtype=np.uint8)


pytestmark = pytest.mark.usefixtures("default_cache")


@pytest.fixture
def table_path(tmp_path: Path) -> tuple[Path, np.ndarray]:
    stack = crops()
    path = tmp_path / "crops.vortex"
    of.write_table(path, stack, dim_order="CYX")
    return path, stack


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
    info = of.cache_info()  # both splits decoded once, then stitched into one stack of every image
    assert info.misses == 2 and info.entries == 1 and info.bytes == stack.nbytes


@pytest.mark.parametrize("row", [0, 300, 8191, 8192, 8193, 8999])
def test_a_full_read_names_the_damaged_row_in_any_split(tmp_path: Path, row: int) -> None:
    """A full read checks each batch from the running CRC before it: damage at either end of a split, in the
    first rows of the file or the last, is named by its row."""
    stack = crops()
    path = tmp_path / "damaged.vortex"
    write_flipped(path, stack, row=row, chunk=1, mask=0x10)
    with pytest.raises(of.ChunkChecksumError, match=rf"1 row\(s\) fail their CRC-32 \(rows {row}\)"):
        of.read_table(path)
    intact = tmp_path / "intact.vortex"
    of.write_table(intact, stack, dim_order="CYX")
    assert np.array_equal(of.to_numpy_stack(of.read_table(intact).column(0)), stack)
