"""List fields that repeat one value in every row are handed to Vortex as constants: same file, same values."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

vortex = pytest.importorskip("vortex")

import omeframe as of  # noqa: E402
from omeframe.formats.vortex import file as vfile  # noqa: E402
from omeframe.formats.vortex.constants import MIN_ROWS, RowPattern, constant_lists, to_vortex  # noqa: E402

N = 1000


def _plain(vx: object, batch: pa.RecordBatch) -> object:
    return vortex.array(pa.Table.from_batches([batch]))


def write_both(tmp_path: Path, table: pa.Table, monkeypatch: pytest.MonkeyPatch) -> tuple[pa.Table, pa.Table, Path]:
    """``table`` written with constants and as plain Arrow; both read back (and the first file's path)."""
    fast, plain = tmp_path / "fast.vortex", tmp_path / "plain.vortex"
    vfile.write_vortex_table(table, fast)
    with monkeypatch.context() as m:
        m.setattr(vfile, "to_vortex", _plain)
        vfile.write_vortex_table(table, plain)
    def unsealed(path: Path) -> str:  # the dtype but the seal of its file's footer
        return re.sub(r"@[0-9a-f]{32}~", "@~", str(vortex.open(str(path)).dtype))

    assert unsealed(fast) == unsealed(plain)  # the same file types
    return vfile.read_vortex_table(fast), vfile.read_vortex_table(plain), fast


def f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def f32_bits(arr: pa.Array) -> list[int]:
    return np.frombuffer(arr.buffers()[1], dtype=np.uint32)[arr.offset : arr.offset + len(arr)].tolist()


def test_crops_of_a_stack_have_constant_channels_and_read_back_exactly(tmp_path: Path, monkeypatch) -> None:
    stack = np.random.default_rng(0).integers(0, 255, (N, 3, 4, 4), dtype=np.uint8)
    records = of.records_from_arrays(stack, dim_order="CYX")
    batch = pa.record_batch({"ome_arrow": records, "n": np.arange(N)})
    assert ("ome_arrow", "pixels_meta", "channels") in constant_lists(batch)
    assert constant_lists(batch.slice(0, MIN_ROWS - 1)) == []  # small batches: as they are
    fast, plain, path = write_both(tmp_path, pa.Table.from_batches([batch]), monkeypatch)
    assert fast.equals(plain) and fast.column("ome_arrow").combine_chunks().equals(records)
    assert np.array_equal(of.to_numpy_stack(of.read_table(path).column(0)), stack)  # row CRCs checked too


def test_batches_with_different_constants_keep_their_own(tmp_path: Path, monkeypatch) -> None:
    tags = pa.array([["a", "b"]] * N + [["c"]] * N + [["a", "b"]] * (N - 1) + [["a", "c"]])
    table = pa.table({"tags": tags, "n": np.arange(len(tags))})
    batches = table.to_batches(max_chunksize=N)
    assert [constant_lists(b) for b in batches] == [[("tags",)], [("tags",)], []]
    fast, plain, _ = write_both(tmp_path, pa.Table.from_batches(batches), monkeypatch)
    assert fast.equals(plain) and fast.column("tags").to_pylist() == tags.to_pylist()


@pytest.mark.parametrize(
    ("first", "rest", "constant"),
    [
        (0x00000000, 0x80000000, False),  # 0.0 then -0.0: equal as floats, not as bits
        (0x7FC00000, 0x7FC00000, True),  # the same NaN everywhere
        (0x7FC00001, 0x7FC00001, True),  # a NaN with a payload: constant, kept bit for bit
        (0x3F800000, 0x3F800000, True),  # 1.0
    ],
)
def test_float_lists_keep_their_bits(tmp_path: Path, monkeypatch, first: int, rest: int, constant: bool) -> None:
    values = np.array([first] + [rest] * (N - 1), dtype=np.uint32).view(np.float32)
    lists = pa.ListArray.from_arrays(pa.array(np.arange(N + 1, dtype=np.int32)), pa.array(values, pa.float32()))
    batch = pa.record_batch({"x": lists})
    assert bool(constant_lists(batch)) == constant
    fast, plain, _ = write_both(tmp_path, pa.Table.from_batches([batch]), monkeypatch)
    assert f32_bits(fast.column("x").combine_chunks().flatten()) == [first] + [rest] * (N - 1)
    assert fast.equals(plain) or np.isnan(f32(first))  # NaN != NaN for equals; the bits above decide


def test_lists_with_nulls_or_under_null_structs_are_passed_as_they_are(tmp_path: Path, monkeypatch) -> None:
    lists = pa.array([[1, 2]] * (N - 1) + [None], pa.list_(pa.int32()))
    inner = pa.array([[7]] * N, pa.list_(pa.int32()))
    parent = pa.StructArray.from_arrays([inner], names=["tags"], mask=pa.array([i == 5 for i in range(N)]))
    batch = pa.record_batch({"lists": lists, "parent": parent})
    assert constant_lists(batch) == []
    fast, plain, _ = write_both(tmp_path, pa.Table.from_batches([batch]), monkeypatch)
    assert fast.equals(plain) and fast.column("parent").to_pylist()[5] is None


def test_nested_names_with_dots_and_time_units(tmp_path: Path, monkeypatch) -> None:
    stamps = pa.array([[1_000_000_001, 2]] * N, pa.list_(pa.timestamp("ns")))
    dotted = pa.StructArray.from_arrays([pa.array([["x"]] * N), pa.array(range(N))], names=["a.b", "n"])
    batch = pa.record_batch({"stamps": stamps, "s.t": dotted})
    assert constant_lists(batch) == [("stamps",), ("s.t", "a.b")]
    fast, plain, _ = write_both(tmp_path, pa.Table.from_batches([batch]), monkeypatch)
    assert fast.equals(plain)
    assert fast.column("stamps").combine_chunks().equals(stamps)  # nanoseconds kept


def test_to_vortex_without_constants_is_the_plain_conversion() -> None:
    batch = pa.record_batch({"n": np.arange(N), "lists": pa.array([[i] for i in range(N)])})
    assert constant_lists(batch) == []
    assert to_vortex(vortex, batch).to_arrow_table().equals(pa.Table.from_batches([batch]))


@pytest.mark.parametrize("odd", [0, 1, 2, N // 2 - 1, N // 2, N // 2 + 1, N - 2, N - 1])
def test_one_differing_row_anywhere_breaks_the_pattern(odd: int) -> None:
    rows = [[1, 2, 3]] * N
    rows[odd] = [1, 2, 4]
    assert constant_lists(pa.record_batch({"x": pa.array(rows)})) == []
    rows[odd] = [1, 2, 3]
    assert constant_lists(pa.record_batch({"x": pa.array(rows)})) == [("x",)]


def test_rows_that_differ_early_are_refused_without_tiling_the_pattern(monkeypatch) -> None:
    # chunk lists of crops hold every pixel byte: the pattern is not repeated N times to compare them
    stack = np.random.default_rng(1).integers(0, 255, (N, 3, 8, 8), dtype=np.uint8)
    chunks = of.records_from_arrays(stack, dim_order="CYX").field("chunks")
    patterns: list[RowPattern] = []
    real = RowPattern.__init__

    def tracked(self: RowPattern) -> None:
        real(self)
        patterns.append(self)

    monkeypatch.setattr(RowPattern, "__init__", tracked)
    assert constant_lists(pa.record_batch({"chunks": chunks})) == []
    assert patterns and all(not p._tiled for p in patterns)
