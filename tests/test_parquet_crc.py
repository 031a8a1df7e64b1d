"""Parquet page CRCs checked by omeframe on local reads (storage/parquet_crc.py)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.errors import ChunkChecksumError
from omeframe.storage.parquet import open_parquet
from omeframe.storage.parquet_crc import CheckedParquetFile, chunk_pages

OPTIONS = [
    {"data_page_version": "1.0", "compression": "NONE", "use_dictionary": False},
    {"data_page_version": "2.0", "compression": "zstd", "use_dictionary": True},
    {"data_page_version": "1.0", "compression": "snappy", "use_dictionary": True, "write_statistics": True},
    {"data_page_version": "2.0", "compression": "NONE", "use_dictionary": False, "write_statistics": False},
]


def _table(n: int = 3000) -> pa.Table:
    rng = np.random.default_rng(5)
    return pa.table({
        "id": np.arange(n),
        "well": pa.array([f"W{i % 17:02d}" for i in range(n)]),
        "blob": pa.array([rng.bytes(int(k)) for k in rng.integers(0, 200, n)], pa.binary()),
        "vals": pa.array([list(range(i % 5)) for i in range(n)], pa.list_(pa.int32())),
    })


def _chunks(path):
    md = pq.ParquetFile(path).metadata
    for g in range(md.num_row_groups):
        for c in range(md.num_columns):
            cc = md.row_group(g).column(c)
            start = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
            yield g, c, cc.path_in_schema, int(start), int(start + cc.total_compressed_size)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_every_page_of_every_layout_is_found_and_its_crc_matches(tmp_path, opts):
    path = tmp_path / "t.parquet"
    pq.write_table(
        _table(), path, write_page_checksum=True, data_page_size=2000, row_group_size=1000, write_batch_size=100, **opts
    )
    data = path.read_bytes()
    num_pages = 0
    for *_, start, end in _chunks(path):
        pages = chunk_pages(data, start, end, "chunk")
        assert (pages.crcs >= 0).all()
        assert pages.starts[0] > start and pages.starts[-1] + pages.lengths[-1] == end
        num_pages += len(pages.starts)
    assert num_pages > 12  # more pages than column chunks: the walk crossed page boundaries
    with CheckedParquetFile(path) as pf:
        pf.check()
        assert pf.read().equals(pq.read_table(path))


@pytest.mark.parametrize("opts", OPTIONS[:2], ids=["v1", "v2-zstd-dict"])
def test_a_flipped_byte_in_any_page_body_is_named(tmp_path, opts):
    path = tmp_path / "t.parquet"
    pq.write_table(
        _table(), path, write_page_checksum=True, data_page_size=2000, row_group_size=1000, write_batch_size=100, **opts
    )
    pristine = path.read_bytes()
    for g, _c, name, start, end in _chunks(path):
        pages = chunk_pages(pristine, start, end, "chunk")
        at = int(pages.starts[-1] + pages.lengths[-1] // 2)
        damaged = bytearray(pristine)
        damaged[at] ^= 0x10
        path.write_bytes(bytes(damaged))
        with CheckedParquetFile(path) as pf:
            pf.read(columns=[n for n in pf.schema_arrow.names if n != name.split(".")[0]])  # other columns read
            named = rf"page {len(pages.starts) - 1} of column '{name}' in row group {g}"
            with pytest.raises(of.ChunkChecksumError, match=named):
                pf.read_row_group(g)
            with pytest.raises(of.ChunkChecksumError):
                list(pf.iter_batches(row_groups=[g], columns=[name.split(".")[0]]))
    path.write_bytes(pristine)


def test_a_record_tables_metadata_column_is_checked_on_every_read(tmp_path):
    stack = np.arange(40 * 2 * 8 * 8, dtype=np.uint8).reshape(40, 2, 8, 8)
    path = of.write_table(tmp_path / "c.parquet", stack, dim_order="CYX", columns={"score": np.arange(40.0)})
    ((g, c, name, start, end),) = [k for k in _chunks(path) if k[2] == "score"]
    pages = chunk_pages(path.read_bytes(), start, end, "score")
    raw = bytearray(path.read_bytes())
    raw[int(pages.starts[-1] + pages.lengths[-1] - 3)] ^= 0x40  # inside the last double
    path.write_bytes(bytes(raw))
    unchecked = pq.ParquetFile(path, page_checksum_verification=False).read(columns=["score"])["score"]
    assert unchecked.to_pylist() != list(np.arange(40.0))  # without a check the value is silently wrong
    with pytest.raises(of.ChunkChecksumError, match="'score'"):
        of.read_table(path)
    with pytest.raises(of.ChunkChecksumError, match="'score'"):
        of.open_table(path).take([3])
    assert np.array_equal(of.open_table(path).to_numpy([3]), stack[[3]])  # the pixels are intact


def test_pages_without_a_crc_read_unchecked_and_bad_sizes_are_corrupt(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(_table(200), path)  # no page checksums written
    pf = open_parquet(path)
    assert isinstance(pf, CheckedParquetFile)
    assert pf.read().equals(pq.read_table(path))
    _g, _c, _name, start, end = next(_chunks(path))
    assert (chunk_pages(path.read_bytes(), start, end, "x").crcs == -1).all()
    with pytest.raises(of.CorruptFileError, match="past the column chunk's end"):
        chunk_pages(path.read_bytes(), start, end - 1, "x")
    with pytest.raises(of.CorruptFileError, match="outside the file"):
        chunk_pages(b"abc", 0, 10, "x")
    pf.close()
    with pytest.raises(ValueError, match="closed"):
        pf.check()


def _rewrite_in_place(path, at: int, mask: int) -> None:
    """Flip bits at ``at`` in place, keeping inode, size and modification time (what the cache keys on)."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)[0]
        fh.seek(at)
        fh.write(bytes([b ^ mask]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_later_reads_check_whole_chunks_and_catch_changed_headers(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(_table(), path, write_page_checksum=True, data_page_size=2000, write_batch_size=100)
    expected = pq.read_table(path)
    with CheckedParquetFile(path) as pf:
        assert pf.read().equals(expected)  # verified page by page: whole-chunk CRCs kept
        tables = dict(pf._tables)
    assert tables and all(t.whole is not None for t in tables.values())
    (g, c), first = sorted(tables.items())[0]
    body = int(first.starts[0])
    _rewrite_in_place(path, body - 2, 0x01)  # inside the first page header, not its body
    with CheckedParquetFile(path) as pf:
        assert pf._tables is not None and pf._tables[(g, c)] is first  # the same file version: tables reused
        with pytest.raises(of.ChunkChecksumError, match="changed since this process first read them"):
            pf.read()
    _rewrite_in_place(path, body - 2, 0x01)  # restored
    _rewrite_in_place(path, body + 1, 0x20)  # now a page body
    with CheckedParquetFile(path) as pf, pytest.raises(of.ChunkChecksumError, match="page 0 of column"):
        pf.read_row_group(g)


def test_large_checks_spread_chunks_over_threads_and_still_name_the_damage(tmp_path, monkeypatch):
    from omeframe.storage import parquet_crc

    path = tmp_path / "t.parquet"
    pq.write_table(_table(), path, write_page_checksum=True, data_page_size=2000, row_group_size=1000)
    calls = []
    real = parquet_crc.run_each

    def recorded(fn, items):
        calls.append(len(items))
        real(fn, items)

    monkeypatch.setattr(parquet_crc, "run_each", recorded)
    monkeypatch.setattr(parquet_crc, "PARALLEL_CHECK_BYTES", 0)  # this small table counts as large
    with CheckedParquetFile(path) as pf:
        assert pf.read().equals(pq.read_table(path))
    assert calls == [3 * 4]  # every chunk of the 3 row groups x 4 columns, in one parallel check
    g, _c, name, start, end = list(_chunks(path))[-1]
    pages = chunk_pages(path.read_bytes(), start, end, "chunk")
    raw = bytearray(path.read_bytes())
    raw[int(pages.starts[0] + pages.lengths[0] // 2)] ^= 0x08
    path.write_bytes(bytes(raw))
    with CheckedParquetFile(path) as pf, pytest.raises(of.ChunkChecksumError, match=f"'{name}' in row group {g}"):
        pf.read()
    monkeypatch.setattr(parquet_crc, "PARALLEL_CHECK_BYTES", 1 << 40)  # small checks run in the calling thread
    with CheckedParquetFile(path) as pf, pytest.raises(of.ChunkChecksumError, match=f"'{name}' in row group {g}"):
        pf.read()
    assert len(calls) == 2


def test_the_footer_checked_is_the_footer_parsed_even_if_the_file_changes_in_place(tmp_path, monkeypatch):
    # A writer rewriting the file in place between the parse and the check must not make the
    # check vouch for other bytes than those pyarrow parsed: both come from one copy.
    from omeframe.storage import parquet_crc

    path = tmp_path / "t.parquet"
    pq.write_table(_table(200).replace_schema_metadata({"k": "marker-A"}), path, write_page_checksum=True)
    original = path.read_bytes()
    at = original.rindex(b"marker-A")
    real = parquet_crc.check_metadata
    seen = []

    def rewrite_then_check(md, what, footer=None):
        with open(path, "r+b") as f:  # in place: the reader's mapping sees it
            f.seek(at)
            f.write(b"marker-B")
        seen.append(bytes(footer))
        return real(md, what, footer)

    monkeypatch.setattr(parquet_crc, "check_metadata", rewrite_then_check)
    with CheckedParquetFile(path) as pf:
        assert b"marker-A" in seen[0] and b"marker-B" not in seen[0]
        assert pf.metadata.metadata[b"k"] == b"marker-A"
        assert pf.read()["id"].to_pylist() == list(range(200))


def test_a_chunk_two_readers_check_at_once_is_not_called_changed(tmp_path):
    """Readers of one file version share its page tables. Two threads that both find a chunk not yet
    verified check its pages side by side; the one that finishes second finds the whole-chunk CRC the
    first recorded. The same value is no change (it used to raise "changed since this process first
    read them" for a file nobody touched)."""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": np.arange(1000)}), path, write_page_checksum=True)
    first, second = CheckedParquetFile(path), CheckedParquetFile(path)
    rg = first.metadata.row_group(0)
    pages = first._pages(rg, 0, 0)
    assert second._pages(rg, 0, 0) is pages and pages.whole is None  # one table for both readers
    first._check_pages(first._view, pages, rg, 0, 0)  # the first thread records the chunk's CRC ...
    second._check_pages(second._view, pages, rg, 0, 0)  # ... while the second had found none: no error
    pages.whole ^= 1  # a chunk whose bytes really differ from what was recorded is still refused
    with pytest.raises(ChunkChecksumError, match="changed since this process first read them"):
        second._check_pages(second._view, pages, rg, 0, 0)
    first.close()
    second.close()


def test_reads_return_the_stored_schemas_metadata_not_footer_only_keys(tmp_path):
    """pyarrow's ParquetFile.read hands footer-only keys to the table; omeframe's reads return the metadata of
    the stored Arrow schema, as pq.read_table does, also when that schema has none."""
    from omeframe.model.arrow import METADATA_KEY_FILE

    for meta in ({b"k": b"v"}, None):
        path = tmp_path / f"t{meta is None}.parquet"
        table = pa.table({"a": [1, 2]}).replace_schema_metadata(meta)
        with pq.ParquetWriter(path, table.schema, write_page_checksum=True) as w:
            w.write_table(table)
            w.add_key_value_metadata({METADATA_KEY_FILE: b"{}"})
        assert METADATA_KEY_FILE in pq.ParquetFile(path).read().schema.metadata
        with open_parquet(path) as pf:
            assert pf.read().schema.metadata == meta
            assert next(pf.iter_batches()).schema.metadata == meta
