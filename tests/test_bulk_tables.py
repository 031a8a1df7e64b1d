"""Bulk writes of image stacks, the pixel index, ImageTable takes and to_numpy_stack."""

from __future__ import annotations

import pickle
import struct
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.formats.record import tables as tables_mod
from omeframe.formats.record.bulk import encode_stack
from omeframe.storage.parquet_pages import UnsupportedLayout, value_pages


def cells(n: int, c: int = 3, y: int = 24, x: int = 20, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Blobs plus noise, like cell crops."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:y, :x]
    cy = rng.uniform(0, y, (n, 1, 1, 1))
    cx = rng.uniform(0, x, (n, 1, 1, 1))
    blob = 180 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0) * rng.uniform(0.3, 1, (n, c, 1, 1))
    img = blob + rng.normal(12, 3, (n, c, y, x))
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    return np.clip(img, 0, info.max if info else None).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int16])
@pytest.mark.parametrize("comp", ["zstd", None])
def test_stack_encoding_equals_the_per_image_builder(dtype, comp):
    stack = cells(7, dtype=dtype, seed=1)
    fast = encode_stack(stack, dim_order="CYX", compression=comp, compression_level=3, chunk_shape=(1, 512, 512))
    slow = of.records_from_arrays(list(stack), dim_order="CYX", chunk_compression=comp)
    assert fast is not None and fast.type == slow.type
    for i in range(len(stack)):
        assert np.array_equal(of.to_numpy(fast[i]), of.to_numpy(slow[i]))
        for key in ("id", "name", "type", "version", "pixels_meta", "chunk_grid"):
            assert fast[i][key] == slow[i][key], key
    big = stack.astype(stack.dtype.newbyteorder(">"))
    again = encode_stack(big, dim_order="CYX", compression=comp, compression_level=3, chunk_shape=None)
    assert again is not None and np.array_equal(of.to_numpy_stack(again), stack)


@pytest.mark.parametrize(
    "order,shape", [("YX", (5, 9, 11)), ("ZYX", (4, 3, 9, 11)), ("TCZYX", (3, 2, 2, 3, 5, 6)), ("YXC", (4, 7, 8, 3))]
)
def test_stack_axes_follow_dim_order(order, shape):
    stack = np.random.default_rng(2).integers(0, 4000, shape, dtype=np.uint16)
    recs = of.records_from_arrays(stack, dim_order=order)
    for i in (0, len(stack) - 1):
        want = of.to_numpy(of.records_from_arrays(list(stack[i : i + 1]), dim_order=order)[0])
        assert np.array_equal(of.to_numpy(recs[i]), want)
    back = of.to_numpy_stack(recs, dims=order)
    assert np.array_equal(back, stack)


def test_stack_falls_back_when_chunks_are_smaller_than_the_image():
    stack = cells(4, y=40, x=36, seed=3)
    small = (1, 16, 16)
    assert encode_stack(stack, dim_order="CYX", compression="zstd", compression_level=1, chunk_shape=small) is None
    assert encode_stack(stack, dim_order="CYX", compression="lz4", compression_level=None, chunk_shape=None) is None
    recs = of.records_from_arrays(stack, dim_order="CYX", chunk_shape=(1, 16, 16))
    assert len(recs[0]["chunks"]) == 3 * 3 * 3
    assert np.array_equal(of.to_numpy_stack(recs), stack)


def test_write_table_from_a_stack_is_indexed_and_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(tables_mod, "BATCH_BYTES", 20 * 3 * 24 * 20)  # 20 images per batch
    stack = cells(130, seed=4)
    well = np.arange(130) % 7
    path = of.write_table(tmp_path / "c.parquet", stack, dim_order="CYX", columns={"well": well})
    t = of.open_table(path)
    assert t.indexed and len(t) == 130
    rows = [129, 3, 64, 0, 20, 19]
    assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert np.array_equal(t.to_numpy(), stack)
    assert np.array_equal(t.to_numpy(rows, dims="YXC"), stack[rows].transpose(0, 2, 3, 1))
    taken = t.take([5, 101], columns=["ome_arrow", "well"])
    assert taken["well"].to_pylist() == [5 % 7, 101 % 7]
    assert taken["ome_arrow"].to_pylist()[1]["id"] == "img-101"
    full = pq.read_table(path)
    assert full["ome_arrow"].combine_chunks().field("id").to_pylist() == [f"img-{i}" for i in range(130)]
    assert full["well"].to_pylist() == well.tolist()
    assert np.array_equal(of.to_numpy_stack(full["ome_arrow"]), stack)
    assert np.array_equal(of.to_numpy(of.read_table(path, rows=[77])["ome_arrow"][0])[0, :, 0], stack[77])


def test_streamed_batches_larger_than_an_encode_batch_keep_their_columns_aligned(tmp_path, monkeypatch):
    """A yielded (stack, columns) batch is encoded in several parts: each part gets its own rows."""
    monkeypatch.setattr(tables_mod, "BATCH_BYTES", 20 * 3 * 24 * 20)  # 20 images per encoded part
    stack = cells(130, seed=5)
    batches = ((stack[lo : lo + 65], {"k": np.arange(lo, lo + 65)}) for lo in (0, 65))
    path = of.write_table(tmp_path / "s.parquet", batches, dim_order="CYX")
    full = pq.read_table(path)
    assert full["k"].to_pylist() == list(range(130))
    assert np.array_equal(of.to_numpy_stack(full["ome_arrow"]), stack)
    with pytest.raises(ValueError, match=r"batch 0: its columns have 64 rows but it holds 65 images"):
        of.write_table(tmp_path / "bad.parquet", iter([(stack[:65], {"k": np.arange(64)})]), dim_order="CYX")


def test_indexed_tables_stay_plain_parquet(tmp_path):
    import duckdb
    import polars as pl

    stack = cells(50, seed=5)
    path = of.write_table(tmp_path / "c.parquet", stack, dim_order="CYX", columns={"area": np.arange(50.0)})
    got = duckdb.sql(f"select count(*), sum(area), min(ome_arrow.id) from '{path}' where area >= 10").fetchall()[0]
    assert got == (40, float(sum(range(10, 50))), "img-10")
    df = pl.read_parquet(path)
    assert df.height == 50 and df["area"].to_list() == list(np.arange(50.0))
    meta = pq.ParquetFile(path).schema_arrow.metadata
    assert meta[b"omeframe.pixel_index"] == b"2" and meta[b"ome.arrow.type"] == b"ome.arrow"


def test_streaming_batches_number_images_globally(tmp_path):
    stacks = [cells(n, seed=10 + n) for n in (5, 8, 3)]

    def gen():
        for k, s in enumerate(stacks):
            yield s, {"batch": [k] * len(s)}

    path = of.write_table(tmp_path / "s.parquet", gen(), dim_order="CYX")
    tbl = of.read_table(path)
    assert tbl["batch"].to_pylist() == [0] * 5 + [1] * 8 + [2] * 3
    assert tbl["ome_arrow"].combine_chunks().field("id").to_pylist() == [f"img-{i}" for i in range(16)]
    assert np.array_equal(of.open_table(path).to_numpy(), np.concatenate(stacks))
    with pytest.raises(ValueError, match="no batches"):
        of.write_table(tmp_path / "e.parquet", iter([]))
    with pytest.raises(TypeError, match="batch 0"):
        of.write_table(tmp_path / "e.parquet", iter([(1, 2, 3)]))
    with pytest.raises(ValueError, match="not both"):
        of.write_table(tmp_path / "e.parquet", gen(), dim_order="CYX", columns={"x": list(range(16))})


def test_takes_reject_bad_rows(tmp_path):
    path = of.write_table(tmp_path / "c.parquet", cells(10), dim_order="CYX")
    t = of.open_table(path)
    for bad in ([10], [-1], [3, 3]):
        with pytest.raises(of.RowIndexError) as info:
            t.to_numpy(bad)
        assert isinstance(info.value, IndexError) and "c.parquet" in str(info.value)
    with pytest.raises(of.RowIndexError, match="twice"):
        t.take([1, 2, 1])
    with pytest.raises(TypeError, match="integers"):
        t.to_numpy([0.5])
    assert t.to_numpy([]).shape == (0, 3, 24, 20)
    with pytest.raises(ValueError, match="drops axes"):
        t.to_numpy([0], dims="YX")
    with pytest.raises(ValueError, match="dims must"):
        t.to_numpy([0], dims="CYQ")


def test_ragged_and_multichunk_tables(tmp_path):
    a, b = cells(6, y=30, x=28, seed=6), cells(4, y=16, x=16, seed=7)
    imgs = [*a[:3], *b, *a[3:]]
    path = of.write_table(tmp_path / "r.parquet", imgs, dim_order="CYX", chunk_shape=(1, 16, 16))
    t = of.open_table(path)
    assert t.indexed
    assert np.array_equal(t.to_numpy([0, 8, 2]), a[[0, 4, 2]])
    assert np.array_equal(t.to_numpy([3, 6]), b[[0, 3]])
    with pytest.raises(ValueError, match="differ in shape"):
        t.to_numpy([0, 3])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pixel_index": False},
        {"chunk_compression": "lz4"},
        {"format": "vortex"},
        {"chunk_compression": None, "compression": None},  # raw chunks in raw pages: Parquet reads them
    ],
)
def test_tables_without_an_index_read_the_same(tmp_path, kwargs):
    stack = cells(40, seed=8)
    suffix = ".vortex" if kwargs.get("format") == "vortex" else ".parquet"
    path = of.write_table(tmp_path / f"n{suffix}", stack, dim_order="CYX", **kwargs)
    t = of.open_table(path)
    assert not t.indexed
    assert np.array_equal(t.to_numpy([39, 0, 17]), stack[[39, 0, 17]])
    assert np.array_equal(t.to_numpy(), stack)
    t2 = pickle.loads(pickle.dumps(t))
    assert t2.path == t.path and np.array_equal(t2.to_numpy([5]), stack[[5]])


def _payload_span(path):
    t = of.open_table(path)
    assert t._index is not None
    return int(t._index.offsets_of([0])[0]), int(t._index.lengths[0])


def test_a_flipped_pixel_byte_is_an_error_not_a_wrong_pixel(tmp_path):
    stack = cells(30, seed=9)
    path = of.write_table(tmp_path / "c.parquet", stack, dim_order="CYX", chunk_compression="zstd")
    start, length = _payload_span(path)
    raw = bytearray(path.read_bytes())
    raw[start + length // 2] ^= 0x5A
    path.write_bytes(bytes(raw))
    t = of.open_table(path)
    assert np.array_equal(t.to_numpy([1, 2]), stack[[1, 2]])  # other rows are fine
    with pytest.raises(of.PixelPayloadError, match="does not decode"):
        t.to_numpy([0])
    with pytest.raises(of.PixelPayloadError):
        t.to_numpy()


def test_a_damaged_index_is_never_trusted(tmp_path):
    stack = cells(30, seed=11)
    path = of.write_table(tmp_path / "c.parquet", stack, dim_order="CYX")
    raw = bytearray(path.read_bytes())
    footer_len = struct.unpack_from("<I", raw, len(raw) - 8)[0]
    trailer_at = len(raw) - 8 - footer_len - 32
    blob_at = struct.unpack_from("<Q", raw, trailer_at + 8)[0]
    raw[blob_at + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="CRC"):
        t = of.open_table(path)
    assert not t.indexed
    assert np.array_equal(t.to_numpy([4, 29]), stack[[4, 29]])
    assert pq.read_table(path).num_rows == 30  # Parquet readers never look at the block


def test_value_pages_locate_plain_values_in_v1_and_v2_pages(tmp_path):
    rng = np.random.default_rng(12)
    values = [rng.bytes(int(n)) for n in rng.integers(1, 3000, 500)]
    for version in ("1.0", "2.0"):
        path = tmp_path / f"v{version}.parquet"
        pq.write_table(
            pa.table({"v": pa.array(values, pa.large_binary())}), path, compression="NONE",
            use_dictionary=False, data_page_version=version, data_page_size=20_000, row_group_size=170,
            write_batch_size=16,
        )
        pf = pq.ParquetFile(path)
        pages = value_pages(path, pf, 0)
        assert pages.num_values.sum() == 500 and len(pages.num_values) > 3
        lengths = np.array([len(v) for v in values])
        from omeframe.formats.record.pixel_index import _plain_values

        data = path.read_bytes()
        plain = _plain_values(lengths, pages.first_value, pages.values_start, pages.num_values, len(data), "t")
        offs = plain.offsets_of(np.arange(len(values)))
        assert all(data[o : o + len(v)] == v for o, v in zip(offs.tolist(), values, strict=True))
    zpath = tmp_path / "z.parquet"
    zstd_v1 = pa.table({"v": pa.array(values, pa.large_binary())})
    pq.write_table(zstd_v1, zpath, compression="zstd", use_dictionary=False)
    with pytest.raises(UnsupportedLayout, match="v1 data page is compressed"):
        value_pages(zpath, pq.ParquetFile(zpath), 0)


def test_to_numpy_stack_of_in_memory_records():
    stack = cells(12, seed=13)
    recs = of.records_from_arrays(stack, dim_order="CYX")
    chunked = pa.chunked_array([recs.slice(0, 5), recs.slice(5)])
    assert np.array_equal(of.to_numpy_stack(chunked), stack)
    assert np.array_equal(of.to_numpy_stack(recs.slice(3, 4)), stack[3:7])
    assert of.to_numpy_stack(recs, dtype=np.float32).dtype == np.float32
    listed = of.records_from_arrays(list(stack), dim_order="CYX", chunk_encoding="list")
    assert np.array_equal(of.to_numpy_stack(listed), stack)
    mixed = [recs[0], of.records_from_arrays([stack[1, :, :10]], dim_order="CYX")[0]]
    with pytest.raises(ValueError, match="differ in shape"):
        of.to_numpy_stack(mixed)


@pytest.mark.parametrize("kind", ["stack", "stack-frames", "list-raw", "vortex", "vortex-raw"])
def test_byte_flips_anywhere_give_an_error_or_exact_pixels(tmp_path, kind):
    """Flip bytes all over a record table: every read is exact or a typed error."""
    stack = cells(24, seed=21)
    suffix = ".vortex" if kind.startswith("vortex") else ".parquet"
    opts = {"chunk_compression": None} if kind in ("list-raw", "vortex-raw") else {}
    if kind == "stack-frames":
        opts = {"chunk_compression": "zstd"}
    images = list(stack) if kind == "list-raw" else stack
    path = of.write_table(tmp_path / f"f{suffix}", images, dim_order="CYX", **opts)
    pristine = path.read_bytes()
    rng = np.random.default_rng(22)
    positions = rng.choice(len(pristine), 40, replace=False)
    wrong = []
    for pos in positions.tolist():
        damaged = bytearray(pristine)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        try:
            with warnings.catch_warnings():  # a chunk no record stores is announced: it counts as an error
                warnings.simplefilter("error", of.MissingChunksWarning)
                got = of.open_table(path).to_numpy()
        except (of.OmeframeError, OSError, ValueError, pa.ArrowException, RuntimeError, UserWarning):
            continue
        if not np.array_equal(got, stack):
            wrong.append(pos)
    assert not wrong, f"silently wrong pixels after flips at {wrong}"


def test_vortex_tables_store_row_crcs_and_verify_names_damaged_rows(tmp_path):
    """Vortex record tables carry a CRC-32 of each row's pixel bytes in the hidden column."""
    from omeframe.formats.vortex.checksum import row_crcs, stored_crcs
    from vortex_damage import stale_body

    stack = cells(30, y=16, x=16, seed=24)  # tiny crops: raw chunks, Vortex's own encodings
    path = of.write_table(tmp_path / "t.vortex", stack, dim_order="CYX")
    assert of.verify_table(path).ok
    table = of.read_table(path, rows=[4, 2, 4])
    assert np.array_equal(of.to_numpy_stack(table.column(0)), stack[[4, 2, 4]])
    assert table.column_names == ["ome_arrow"]  # the hidden column never leaks
    # Damage the pixel bytes of rows 3 and 17 in the Arrow data, rewrite the file with
    # the original CRCs (as a byte flip inside a compressed Vortex segment would).
    from omeframe.formats.vortex import file as vfile

    good = of.read_table(path)
    crcs = row_crcs([good.column(0).combine_chunks()])
    recs = good.column(0).to_pylist()
    for r in (3, 17):
        chunk = recs[r]["chunks"][1]
        chunk["pixel_bytes"] = bytes([chunk["pixel_bytes"][0] ^ 1]) + chunk["pixel_bytes"][1:]
    damaged = pa.table({"ome_arrow": pa.array(recs, type=good.schema.field(0).type)})
    assert (row_crcs([damaged.column(0).combine_chunks()]) != crcs).sum() == 2
    intact = stored_crcs([good.column(0).combine_chunks()])
    original = vfile.stored_crcs
    try:
        vfile.stored_crcs = lambda cols, scope, start: intact  # the writer stores the CRCs of the intact rows
        with stale_body():  # and a CRC of the file's body that its bytes no longer match
            vfile.write_vortex_table(damaged, tmp_path / "d.vortex")
    finally:
        vfile.stored_crcs = original
    with pytest.raises(of.ChunkChecksumError, match=r"rows 3, 17"):
        of.read_table(tmp_path / "d.vortex")
    assert np.array_equal(of.to_numpy_stack(of.read_table(tmp_path / "d.vortex", rows=[5]).column(0)), stack[[5]])
    report = of.verify_table(tmp_path / "d.vortex")
    assert [d.rows for d in report.damaged] == [(3, 4), (17, 18)]


def test_verify_table_names_every_damaged_record(tmp_path):
    stack = cells(40, seed=23)
    path = of.write_table(tmp_path / "v.parquet", stack, dim_order="CYX", chunk_compression="zstd")
    assert of.verify_table(path).ok and of.verify_table(path).records == 40
    t = of.open_table(path)
    index = t._index
    assert index is not None
    raw = bytearray(path.read_bytes())
    for row in (3, 31):
        chunk = int(index.first_chunk[row]) + 1
        raw[int(index.offsets_of([chunk])[0]) + int(index.lengths[chunk]) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    report = of.verify_table(path)
    assert not report.ok
    text = "\n".join(str(d) for d in report.damaged)
    assert "row 3 (img-3)" in text and "row 31 (img-31)" in text and len(report.damaged) == 2


def test_raw_chunks_get_compressed_pages_and_page_takes(tmp_path):
    """Raw chunks: Parquet compresses small v2 pages; takes decompress only their pages."""
    stack = cells(300, seed=31)
    path = of.write_table(tmp_path / "raw.parquet", stack, dim_order="CYX", chunk_compression=None,
                          columns={"well": np.arange(300) % 7})
    t = of.open_table(path)
    assert t.indexed and t._index is not None and t._index.pages is not None
    assert len(t._index.pages.num_values) > 3  # many small pages, not one per row group
    rows = [299, 0, 150, 151, 7]
    assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert np.array_equal(t.to_numpy(), stack)
    taken = t.take(rows, columns=["ome_arrow", "well"])
    assert np.array_equal(of.to_numpy_stack(taken["ome_arrow"]), stack[rows])
    assert taken.equals(of.read_table(path, rows=rows, columns=["ome_arrow", "well"]))
    rec = taken["ome_arrow"].combine_chunks()[0]
    assert rec["chunks"][0]["compression"].as_py() is None  # canonical raw chunks, readable anywhere
    pages = t._index.pages
    raw = bytearray(path.read_bytes())
    raw[int(pages.values_start[2]) + 5] ^= 0x10  # inside page 2's compressed values
    path.write_bytes(bytes(raw))
    damaged = of.open_table(path)
    first_in_page = int(pages.first_value[2]) // 3  # 3 chunks per record
    with pytest.raises(of.ChunkChecksumError, match="CRC"):
        damaged.to_numpy([first_in_page])
    assert np.array_equal(damaged.to_numpy([0]), stack[[0]])
    assert not of.verify_table(path).ok


def test_small_chunks_go_to_compressed_pages_unless_a_codec_is_chosen(tmp_path):
    """Parquet: chunks under PAGE_CHUNK_BYTES go raw into pages, larger ones are zstd frames."""
    from omeframe.formats.record.tables import PAGE_CHUNK_BYTES

    tiny = cells(50, y=16, x=16, seed=41)  # 256-byte chunks
    crops = cells(40, y=64, x=64, seed=42)  # 4 KiB chunks
    auto = of.open_table(of.write_table(tmp_path / "a.parquet", tiny, dim_order="CYX"))
    framed = of.open_table(of.write_table(tmp_path / "f.parquet", tiny, dim_order="CYX", chunk_compression="zstd"))
    paged = of.open_table(of.write_table(tmp_path / "p.parquet", crops, dim_order="CYX"))
    side = int(np.sqrt(PAGE_CHUNK_BYTES))  # uint8 chunks of exactly PAGE_CHUNK_BYTES: frames
    big = of.open_table(of.write_table(tmp_path / "b.parquet", cells(3, y=side, x=side, seed=43), dim_order="CYX"))
    assert auto._index is not None and auto._index.pages is not None
    assert framed._index is not None and framed._index.pages is None
    assert paged._index is not None and paged._index.pages is not None
    assert big._index is not None and big._index.pages is None
    assert np.array_equal(auto.to_numpy([3, 49]), framed.to_numpy([3, 49]))
    assert np.array_equal(paged.to_numpy([39, 2, 17]), crops[[39, 2, 17]])
    assert np.array_equal(paged.to_numpy(), crops)


def test_vortex_keeps_frames_for_chunks_its_encodings_compress_less(tmp_path):
    """Vortex stores chunks raw only under VORTEX_RAW_CHUNK_BYTES (its encodings are no zstd)."""
    import pyarrow.compute as pc

    from omeframe.formats.record.tables import VORTEX_RAW_CHUNK_BYTES

    def codecs(path):
        col = of.read_table(path)["ome_arrow"].combine_chunks()
        return set(pc.list_flatten(pc.struct_field(col, "chunks")).field("compression").to_pylist())

    assert VORTEX_RAW_CHUNK_BYTES <= 64 * 64
    small = of.write_table(tmp_path / "s.vortex", cells(20, y=16, x=16, seed=46), dim_order="CYX")
    crops = of.write_table(tmp_path / "c.vortex", cells(20, y=64, x=64, seed=47), dim_order="CYX")
    assert codecs(small) == {None} and codecs(crops) == {"zstd"}


def test_tables_too_large_to_keep_decoded_get_smaller_pages(tmp_path, monkeypatch):
    """A stack whose raw pixels exceed KEPT_TABLE_BYTES goes into 4 KiB pages; the same rows as
    batches (size unknown up front), or a smaller stack, into 8 KiB pages. All read back the same."""
    from omeframe.formats.record import writer

    tiny = cells(2000, y=16, x=16, seed=44)  # 768 pixel bytes a row: 1.5 MB
    monkeypatch.setattr(writer, "KEPT_TABLE_BYTES", 1_000_000)

    def page_raw(path):
        t = of.open_table(path)
        assert t._index is not None and t._index.pages is not None
        return t, float(np.median(t._index.pages.values_raw))  # about the page size (a page is whole values)

    large, large_raw = page_raw(of.write_table(tmp_path / "large.parquet", tiny, dim_order="CYX"))
    small, small_raw = page_raw(of.write_table(tmp_path / "small.parquet", tiny[:1000], dim_order="CYX"))
    streamed, streamed_raw = page_raw(
        of.write_table(tmp_path / "streamed.parquet", (tiny[lo : lo + 500] for lo in range(0, 2000, 500)),
                       dim_order="CYX")
    )
    for got, want in ((large_raw, writer.LARGE_TABLE_PAGE_BYTES), (small_raw, writer.RAW_PAGE_BYTES),
                      (streamed_raw, writer.RAW_PAGE_BYTES)):
        assert abs(got - want) < 0.1 * want
    rows = np.random.default_rng(3).permutation(1000)[:300]
    for t, stack in ((large, tiny), (small, tiny[:1000]), (streamed, tiny)):
        assert np.array_equal(t.to_numpy(rows), stack[rows])
        assert np.array_equal(t.to_numpy(), stack)
    with pytest.raises(ValueError, match="expected_rows"):
        writer.write_record_batches(tmp_path / "x.parquet", iter([]), column_name="ome_arrow", expected_rows=-1)


@pytest.mark.parametrize("threads", [0, 2])
def test_gather_segments_equals_joining_every_frame(threads):
    """The decoder's buffers are copied run by run, exactly as joining frame by frame would."""
    import zstandard

    from omeframe.formats.record.stack import gather_segments

    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 3000, 700)
    raw = [rng.integers(0, 9, int(s), dtype=np.uint8).tobytes() for s in sizes]
    frames = [zstandard.ZstdCompressor().compress(r) for r in raw]
    lens = np.array([len(f) for f in frames], dtype=np.uint64)
    seg = np.stack([np.concatenate([[0], np.cumsum(lens)[:-1]]), lens], axis=1).astype(np.uint64)
    decoded = zstandard.ZstdDecompressor().multi_decompress_to_buffer(
        zstandard.BufferWithSegments(b"".join(frames), seg.tobytes()),
        decompressed_sizes=sizes.astype(np.uint64).tobytes(), threads=threads,
    )
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    gather_segments(decoded, sizes, out)
    assert out.tobytes() == b"".join(raw)


def test_page_tables_decode_in_blocks_with_raw_stored_pages(tmp_path, monkeypatch):
    """Full scans and takes over many decode blocks, with pages zstd cannot shrink stored raw."""
    from omeframe.formats.record import pixel_index

    monkeypatch.setattr(pixel_index, "DECODE_BLOCK_BYTES", 64 << 10)  # many blocks from a small table
    rng = np.random.default_rng(5)
    tiny = cells(3000, y=16, x=16, seed=43)
    tiny[1000:1400] = rng.integers(0, 256, tiny[1000:1400].shape, dtype=np.uint8)  # incompressible noise
    t = of.open_table(of.write_table(tmp_path / "t.parquet", tiny, dim_order="CYX"))
    pages = t._index.pages
    assert pages is not None and len(pages.num_values) > 50
    assert (pages.values_stored < 0).any() and (pages.values_stored > 0).any()  # raw and compressed pages
    assert np.array_equal(t.to_numpy(), tiny)
    rows = rng.permutation(3000)[:700]  # unsorted, across every block
    assert np.array_equal(t.to_numpy(rows), tiny[rows])
    assert np.array_equal(t.to_numpy(np.arange(1200, 1300)), tiny[1200:1300])


_FAULTS_OF_A_SCAN = """
import resource, sys
import numpy as np
import omeframe as of
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = of.open_table(sys.argv[1])
first = t.to_numpy()  # kept (as is the array below): a freed result would change how the allocator reuses memory
before = faults()
same = np.ones_like(first)  # what the result's own pages cost, with or without huge pages
alloc = faults() - before
before = faults()
out = t.to_numpy()
print(faults() - before, alloc, out.nbytes // 4096)
"""


def test_page_scans_decode_into_a_reused_buffer_not_fresh_memory(tmp_path):
    """A scan of a page table does not fault in fresh memory for every decoded page.

    Each decoded run of pages used to get a fresh megabyte that the allocator
    handed back to the system when freed, so every decoded byte faulted once
    more beside the result's own pages (measured: 30,000 faults and 30% of
    the time of a scan of 123 MB). A fresh interpreter: how eagerly freed
    memory is returned depends on what the process allocated before.
    """
    import subprocess
    import sys

    crops = cells(1700, y=64, x=64, seed=8)  # 21 MB of raw 3×64×64 chunks in pages
    path = of.write_table(tmp_path / "p.parquet", crops, dim_order="CYX")
    assert of.open_table(path)._index.pages is not None
    run = subprocess.run([sys.executable, "-c", _FAULTS_OF_A_SCAN, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    faults, result_faults, result_pages = (int(v) for v in run.stdout.split())
    assert faults < result_faults + result_pages // 2, (faults, result_faults, result_pages)


@pytest.mark.parametrize("stats", [False, True])
@pytest.mark.parametrize("checksum", [False, True])
def test_page_header_parsers_agree_on_every_page(tmp_path, stats, checksum):
    """The regex match, the flat loop and the general Thrift walk read every page header alike."""
    import mmap

    from omeframe.storage import parquet_pages as pp

    rng = np.random.default_rng(3)
    values = [rng.integers(0, 40, int(n), dtype=np.uint8).tobytes() for n in rng.integers(200, 900, 400)]
    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"v": pa.array(values, pa.large_binary())}), path, compression="zstd", use_dictionary=False,
        data_page_version="2.0", data_page_size=4000, write_batch_size=8, write_statistics=stats,
        write_page_checksum=checksum, row_group_size=150,
    )
    md = pq.ParquetFile(path).metadata
    seen = {"regex": 0, "flat": 0}
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for g in range(md.num_row_groups):
            cc = md.row_group(g).column(0)
            pos, end = cc.data_page_offset, cc.data_page_offset + cc.total_compressed_size
            while pos < end:
                general, hlen = pp._parse_header(mm[pos : pos + 4096])
                flat = pp._fast_header(mm, pos)
                if flat is not None:
                    seen["flat"] += 1
                    assert flat == (general, pos + hlen)
                m = pp._V2_HEADER.match(mm, pos)
                if m is not None:
                    seen["regex"] += 1
                    unc, comp, crc, nv, *_ = (pp._zigzag_varint(b) for b in m.groups()[:-1])
                    assert m.end() == pos + hlen
                    assert (unc, comp, nv) == (general.uncompressed_size, general.compressed_size, general.num_values)
                    assert crc & 0xFFFFFFFF == general.crc
                pos += hlen + general.compressed_size
    # Arrow's usual header (checksum, no statistics) takes the regex; statistics need the general walk
    assert seen["regex"] > 0 if (checksum and not stats) else seen["regex"] == 0
    pages = value_pages(path, pq.ParquetFile(path), 0)
    assert int(pages.num_values.sum()) == 400


def _rewrite_index(path, change) -> None:
    """Rewrite the pixel index blob of ``path`` after ``change(arrays)`` (a valid CRC: only the content lies)."""
    import zlib

    from omeframe.formats.record import pixel_index as pi

    data = path.read_bytes()
    footer_len = struct.unpack_from("<I", data, len(data) - 8)[0]
    at = len(data) - 8 - footer_len - pi._TRAILER.size
    magic, off, length, _, _ = pi._TRAILER.unpack_from(data, at)
    arrays, meta = pi._unpack(data[off : off + length])
    arrays = {k: v.copy() for k, v in arrays.items()}
    change(arrays)
    blob = pi._pack(arrays, meta)
    trailer = pi._TRAILER.pack(magic, off, len(blob), zlib.crc32(blob), 0)
    path.write_bytes(data[:off] + blob + trailer + data[at + pi._TRAILER.size :])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.__setitem__("page_start", a["page_start"] + 10**9), "points outside the data"),
        (lambda a: a["lengths"].__setitem__(-1, a["lengths"][-1] + 10**6), "points outside the data"),
        (lambda a: a["page_first"].__setitem__(-1, a["page_first"][-1] + 1), "page table does not cover"),
        (lambda a: a.__setitem__("lengths", a["lengths"].astype(np.float32)), "stores lengths as float32"),
        (lambda a: a.__setitem__("lengths", a["lengths"].astype(np.int64) * -1), "negative length"),
    ],
    ids=["pages-past-the-end", "a-long-last-value", "pages-out-of-order", "float-lengths", "negative-lengths"],
)
def test_a_pixel_index_that_lies_is_refused_and_the_table_reads_through_parquet(tmp_path, change, message):
    stack = np.random.default_rng(8).integers(0, 50, (300, 2, 16, 16), dtype=np.uint8)
    path = of.write_table(
        tmp_path / "t.parquet", stack, dim_order="CYX", row_group_bytes=20_000, chunk_compression="zstd"
    )
    assert of.open_table(path).indexed
    _rewrite_index(path, change)
    with pytest.warns(UserWarning, match=message):
        t = of.open_table(path)
    assert not t.indexed
    np.testing.assert_array_equal(t.to_numpy([5, 299, 0]), stack[[5, 299, 0]])


def test_chunk_offsets_are_computed_for_the_chunks_asked_for(tmp_path):
    stack = np.random.default_rng(9).integers(0, 50, (500, 3, 8, 8), dtype=np.uint8)
    path = of.write_table(
        tmp_path / "t.parquet", stack, dim_order="CYX", row_group_bytes=20_000, chunk_compression="zstd"
    )
    index = of.open_table(path)._index
    assert index is not None and index.plain is not None and len(index.plain.page_first) > 3
    data = np.frombuffer(path.read_bytes(), np.uint8)
    ids = np.array([0, 1499, 700, 64 * 3, 64 * 3 - 1])
    offs = index.offsets_of(ids)
    prefixes = data[(offs - 4)[:, None] + np.arange(4)].copy().view("<u4").reshape(-1)
    np.testing.assert_array_equal(prefixes, index.lengths[ids])  # each offset follows its value's length prefix


@pytest.mark.parametrize("damage", ["cut", "garbled"])
def test_a_take_from_a_table_whose_footer_is_damaged_is_refused(tmp_path, damage):
    stack = np.random.default_rng(10).integers(0, 50, (20, 2, 8, 8), dtype=np.uint8)
    path = of.write_table(tmp_path / "t.parquet", stack, dim_order="CYX", chunk_compression="zstd")
    data = bytearray(path.read_bytes())
    if damage == "cut":
        data = data[:-3]
    else:  # the footer's Thrift bytes overwritten, its length and magic intact
        footer_len = struct.unpack_from("<I", data, len(data) - 8)[0]
        data[len(data) - 8 - footer_len : len(data) - 8] = b"\xff" * footer_len
    path.write_bytes(bytes(data))
    table = of.open_table(path)  # without its magic the file has no pixel index (cut); the footer is unread (garbled)
    with pytest.raises(of.CorruptFileError, match="t.parquet"):
        table.to_numpy([0, 1])


def _as_version_1(path):
    """Rewrite the pixel index of the table at ``path`` as omeframe wrote it before version 2:
    every array as int64 (lengths uint32), page offsets absolute, page body lengths stored."""
    import json
    import zlib

    import zstandard

    from omeframe.formats.record import pixel_index as pix

    data = path.read_bytes()
    size = len(data)
    at = size - 8 - struct.unpack_from("<I", data, size - 8)[0] - pix._TRAILER.size
    magic, off, length, _, _ = pix._TRAILER.unpack_from(data, at)
    arrays, meta = pix._unpack(data[off : off + length])
    if "page_body_extra" in arrays:
        arrays["page_start"] = arrays["page_body"] + arrays["page_start"]
        arrays["page_body_len"] = np.abs(arrays["page_stored"]) + arrays.pop("page_body_extra")
    zc = zstandard.ZstdCompressor(level=3)
    parts, desc = [], []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a.astype(np.uint32 if name == "lengths" else np.int64))
        parts.append(zc.compress(a.tobytes()))
        desc.append({"name": name, "dtype": a.dtype.str, "count": int(a.size), "nbytes": len(parts[-1])})
    head = json.dumps({"version": "1", "meta": meta, "arrays": desc}).encode()
    blob = struct.pack("<I", len(head)) + head + b"".join(parts)
    trailer = pix._TRAILER.pack(magic, off, len(blob), zlib.crc32(blob), 0)
    path.write_bytes(data[:off] + blob + trailer + data[at + pix._TRAILER.size :])


@pytest.mark.parametrize("chunks", ["pages", "frames"])
def test_a_table_indexed_before_version_2_still_reads_through_its_index(tmp_path, chunks):
    crops = cells(30, y=64, x=64, seed=48)
    kw = {"chunk_compression": "zstd"} if chunks == "frames" else {}
    path = of.write_table(tmp_path / "t.parquet", crops, dim_order="CYX", **kw)
    now = of.open_table(path)._index
    _as_version_1(path)
    old = of.open_table(path)
    assert old.indexed and (old._index.pages is None) == (chunks == "frames")
    assert np.array_equal(old._index.lengths, now.lengths) and np.array_equal(old._index.first_chunk, now.first_chunk)
    if chunks == "pages":
        for field in ("first_value", "values_start", "values_stored", "values_raw", "body_start", "body_len", "crc"):
            assert np.array_equal(getattr(old._index.pages, field), getattr(now.pages, field)), field
    assert np.array_equal(old.to_numpy([29, 3, 11]), crops[[29, 3, 11]])
    assert np.array_equal(old.to_numpy(), crops)


def test_pixel_index_arrays_are_stored_in_their_smallest_form():
    """Rising offsets as differences, every integer array in its smallest type, values round-trip exactly."""
    from omeframe.formats.record import pixel_index as pix

    rng = np.random.default_rng(7)
    arrays = {
        "offsets": np.cumsum(rng.integers(8_000, 9_000, 5_000)).astype(np.int64) + 3_000_000_000,
        "sizes": rng.integers(0, 9_000, 5_000).astype(np.int64),
        "crc": rng.integers(0, 2**32, 5_000).astype(np.int64),
        "negative": rng.integers(-(2**40), 2**40, 100).astype(np.int64),
        "lengths": np.full(7, 4096, np.uint32),
        "empty": np.zeros(0, np.int64),
    }
    blob = pix._pack(arrays, {"k": 1})
    back, meta = pix._unpack(blob)
    assert meta == {"k": 1}
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and np.array_equal(back[name], a), name
    import json

    desc = {d["name"]: d for d in json.loads(blob[4 : 4 + struct.unpack_from("<I", blob)[0]])["arrays"]}
    assert desc["offsets"]["delta"] == "1" and desc["offsets"]["dtype"] == "<u2"
    assert "delta" not in desc["sizes"] and desc["sizes"]["dtype"] == "<u2"
    assert desc["crc"]["dtype"] == "<u4" and desc["negative"]["dtype"] == "<i8"
    assert desc["offsets"]["base"] == str(arrays["offsets"][0])
    assert len(blob) < 5_000 * (2 + 2 + 4) + 2_000
