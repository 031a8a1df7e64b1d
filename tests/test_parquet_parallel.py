"""Parquet files written by several threads and stitched: same rows, same file as one writer would give.

Pins the Thrift compact codec on real footers (decode then encode gives the
same bytes), the stitched file against pyarrow's own reader (rows, order, row
groups, statistics, page checksums, metadata) and the failure paths (a lane
that fails, options that cannot be stitched, damaged footers).
"""

from __future__ import annotations

import struct
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.storage import parquet_parallel
from omeframe.storage.parquet_parallel import ParallelParquetWriter
from omeframe.storage.thrift_compact import I32, Field, decode_struct, encode_struct


def _footer_bytes(path) -> bytes:
    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[-8:-4])
    return data[-8 - length : -8]


SCHEMA = pa.schema({
    "i": pa.int64(), "f": pa.float64(), "s": pa.string(), "flag": pa.bool_(),
    "nested": pa.struct({"a": pa.int64(), "b": pa.list_(pa.int64())}), "blob": pa.large_binary(),
}, metadata={"who": "test"})


def _table(lo: int, n: int) -> pa.Table:
    rng = np.random.default_rng(lo)
    return pa.Table.from_pydict({
        "i": pa.array(np.arange(lo, lo + n, dtype=np.int64)),
        "f": pa.array(rng.random(n)),
        "s": pa.array([f"row-{k}" for k in range(lo, lo + n)]),
        "flag": pa.array((np.arange(n) % 3) == 0),
        "nested": pa.array([{"a": k, "b": [k, k + 1]} for k in range(lo, lo + n)]),
        "blob": pa.array([bytes([k % 256]) * (k % 7) for k in range(lo, lo + n)], type=pa.large_binary()),
    }, schema=SCHEMA)


def test_the_codec_gives_back_the_bytes_it_read(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(_table(0, 500), path, row_group_size=128, write_page_checksum=True)
    footer = _footer_bytes(path)
    fields, end = decode_struct(footer)
    assert end == len(footer) and encode_struct(fields) == footer
    assert encode_struct([Field(1, I32, -3), Field(40, I32, 7)]) == bytes([0x15, 0x05, 0x05, 0x50, 0x0E, 0x00])
    assert decode_struct(bytes([0x15, 0x05, 0x05, 0x50, 0x0E, 0x00]))[0] == [Field(1, I32, -3), Field(40, I32, 7)]


@pytest.mark.parametrize("keep", [{}, {4: None}, {3: None, 4: {1: {3: {9: None}}, 7: None}}])
def test_a_selective_decode_keeps_the_rest_as_its_bytes(tmp_path, keep):
    """Fields left out of ``keep`` come back as Raw bytes; the struct encodes to the bytes read,
    and the kept fields hold the values a full decode gives."""
    from omeframe.storage.thrift_compact import Raw

    path = tmp_path / "t.parquet"
    pq.write_table(_table(0, 500), path, row_group_size=128, write_page_checksum=True)
    footer = _footer_bytes(path)
    full, _ = decode_struct(footer)
    part, end = decode_struct(footer, keep=keep)
    assert end == len(footer) and encode_struct(part) == footer
    assert [f.id for f in part] == [f.id for f in full]
    for got, want in zip(part, full, strict=True):
        if got.id in keep and keep[got.id] is None:
            assert got == want
        elif got.id not in keep:
            assert isinstance(got.value, Raw)
            assert encode_struct([got]) == encode_struct([Field(got.id, got.type, want.value)])
    if 4 in keep and keep[4]:  # row groups -> columns -> meta_data -> data_page_offset
        groups = next(f for f in part if f.id == 4).value.items
        meta = next(f for f in groups[0] if f.id == 1).value.items[0]
        offsets = next(f for f in meta if f.id == 3).value
        assert [f.id for f in offsets if not isinstance(f.value, Raw)] == [9]
        first = pq.ParquetFile(path).metadata.row_group(0).column(0)
        assert next(f.value for f in offsets if f.id == 9) == first.data_page_offset


def test_truncated_thrift_is_a_corrupt_file():
    with pytest.raises(of.CorruptFileError, match="ends early"):
        decode_struct(bytes([0x15]))
    with pytest.raises(of.CorruptFileError, match="unknown Thrift wire type"):
        decode_struct(bytes([0x1D, 0x00]))
    for keep in ({}, {1: {}}):  # the same refusals when the fields are skipped, not decoded
        with pytest.raises(of.CorruptFileError, match="ends early"):
            decode_struct(bytes([0x1C, 0x15]), keep=keep)
        with pytest.raises(of.CorruptFileError, match="unknown Thrift wire type"):
            decode_struct(bytes([0x1C, 0x1D, 0x00, 0x00]), keep=keep)
        with pytest.raises(of.CorruptFileError, match="past the end"):
            decode_struct(bytes([0x1C, 0x18, 0x09, 0x61, 0x00, 0x00]), keep=keep)


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_rows_come_back_in_the_order_written(tmp_path, lanes):
    path = tmp_path / "t.parquet"
    sizes = [100, 37, 256, 1, 90, 64, 0, 12]
    with ParallelParquetWriter(path, SCHEMA, lanes=lanes, write_page_checksum=True) as writer:
        lo = 0
        for n in sizes:
            writer.write_table(_table(lo, n), row_group_size=max(n, 1) if n != 256 else 100)
            lo += n
    expected = pa.concat_tables([_table(0, 0)] + [_table(sum(sizes[:i]), n) for i, n in enumerate(sizes)])
    pf = pq.ParquetFile(path, page_checksum_verification=True)
    assert pf.read().equals(expected)
    md = pf.metadata
    assert md.num_rows == sum(sizes)
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [100, 37, 100, 100, 56, 1, 90, 64, 0, 12]
    for i in range(md.num_row_groups):  # each row group's statistics still describe its own rows
        stats = md.row_group(i).column(0).statistics
        if md.row_group(i).num_rows:
            group = pf.read_row_group(i).column("i").to_numpy()
            assert (stats.min, stats.max) == (group.min(), group.max())
    assert pf.schema_arrow.metadata == {b"who": b"test"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]  # no part files left


@pytest.mark.parametrize("kernel", ["refused", "partial", "absent"])
def test_parts_are_appended_without_the_kernel_copy_too(tmp_path, monkeypatch, kernel):
    real = getattr(parquet_parallel.os, "copy_file_range", None)
    calls = []

    def partial(src, dst, count, offset_src, offset_dst):
        calls.append(count)
        if kernel == "refused" or len(calls) > 1:
            raise OSError(18, "cross-device")
        return real(src, dst, min(count, 100), offset_src, offset_dst)

    if kernel == "absent" or real is None:
        monkeypatch.delattr(parquet_parallel.os, "copy_file_range", raising=False)
    else:
        monkeypatch.setattr(parquet_parallel.os, "copy_file_range", partial)
    path = tmp_path / "t.parquet"
    with ParallelParquetWriter(path, SCHEMA, lanes=2) as writer:
        for lo in range(0, 300, 100):
            writer.write_table(_table(lo, 100))
    assert pq.ParquetFile(path, page_checksum_verification=True).read().equals(
        pa.concat_tables([_table(lo, 100) for lo in range(0, 300, 100)])
    )


def test_a_single_row_group_writes_no_part(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    monkeypatch.setattr(parquet_parallel, "_stitch", None)  # calling it would fail the test
    with ParallelParquetWriter(path, SCHEMA, lanes=4) as writer:
        writer.write_table(_table(0, 10))
    assert pq.read_table(path).equals(_table(0, 10))
    with ParallelParquetWriter(tmp_path / "empty.parquet", SCHEMA, lanes=2):
        pass  # no table at all: a valid file without row groups
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0


def test_a_failing_lane_raises_and_leaves_no_part(tmp_path):
    path = tmp_path / "t.parquet"
    with pytest.raises(ValueError, match="Table schema does not match"):
        with ParallelParquetWriter(path, SCHEMA, lanes=2) as writer:
            writer.write_table(_table(0, 5))
            writer.write_table(pa.table({"other": [1, 2]}))  # the second lane cannot write another schema
            for k in range(4):
                writer.write_table(_table(10 * k, 5))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match="closed"):
        writer.write_table(_table(0, 1))
    late = ParallelParquetWriter(tmp_path / "late.parquet", SCHEMA, lanes=2)
    late.write_table(_table(0, 5))
    late.write_table(pa.table({"other": [1, 2]}))
    with pytest.raises(ValueError, match="Table schema does not match"):
        late.close()  # the error of a lane that failed after the last call
    late.close()  # closing again does nothing
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_lane_failing_after_its_last_table_does_not_hang_close(tmp_path, monkeypatch):
    def full_disk(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(parquet_parallel, "fsync_file", full_disk)  # lane 0 syncs its file after closing it
    writer = ParallelParquetWriter(tmp_path / "t.parquet", SCHEMA, lanes=2, durable=True)
    writer.write_table(_table(0, 5))
    writer.write_table(_table(5, 5))
    done: list[BaseException] = []

    def close() -> None:
        try:
            writer.close()
        except OSError as exc:
            done.append(exc)

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive(), "close() hangs on a lane that failed after its last table"
    assert len(done) == 1 and done[0].errno == 28
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_options_that_cannot_be_stitched_are_refused(tmp_path):
    with pytest.raises(ValueError, match="page indexes"):
        ParallelParquetWriter(tmp_path / "t.parquet", SCHEMA, write_page_index=True)
    with pytest.raises(ValueError, match="lanes must be an integer >= 1"):
        ParallelParquetWriter(tmp_path / "t.parquet", SCHEMA, lanes=0)


def test_damaged_footers_are_named(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(_table(0, 10), path)
    data = path.read_bytes()
    path.write_bytes(data[:-4] + b"PARE")
    with pytest.raises(of.CorruptFileError, match="does not end with PAR1"):
        parquet_parallel._footer(path)
    path.write_bytes(data[:4] + struct.pack("<I", 10**6) + b"PAR1")
    with pytest.raises(of.CorruptFileError, match="footer length"):
        parquet_parallel._footer(path)


def test_record_tables_written_on_two_lanes_read_back_exactly(tmp_path, monkeypatch):
    """A table of tiny crops big enough for several row groups: the stitched file's pixels and index."""
    from omeframe.formats.record import writer

    monkeypatch.setattr(writer, "SMALL_IMAGE_ROW_GROUP_BYTES", 64 << 10)
    crops = np.random.default_rng(5).integers(0, 256, (3_000, 3, 8, 8), dtype=np.uint8)
    path = tmp_path / "crops.parquet"
    of.write_table(path, crops, dim_order="CYX", columns={"k": np.arange(3_000)})
    assert pq.ParquetFile(path).metadata.num_row_groups >= 4
    table = of.open_table(path)
    assert np.array_equal(table.to_numpy(), crops)
    rows = np.array([2_999, 0, 1_500, 17, 2_048])
    assert np.array_equal(table.to_numpy(rows), crops[rows])
    assert pq.read_table(path, columns=["k"])["k"].to_pylist() == list(range(3_000))
