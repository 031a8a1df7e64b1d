"""Record tables on disk: Parquet/Vortex writers, readers, row groups, bytes read."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.formats.vortex.file import read_vortex_schema
from omeframe.storage.parquet import open_parquet, read_parquet_rows

pytest.importorskip("vortex")


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 60000, (2, 10 + i, 12 + 2 * i)).astype(np.uint16) for i in range(n)]


EXTRAS = {
    "plate": ["P1", "P1", "P2", "P2", "P3"],
    "well": [1, 2, 3, 4, 5],
    "area": [1.5, 2.25, float("nan"), -4.0, 1e9],
}


@pytest.mark.parametrize("suffix", [".parquet", ".vortex"])
def test_write_read_table_with_user_columns(tmp_path, suffix):
    imgs = _images(5)
    path = tmp_path / f"t{suffix}"
    out = of.write_table(path, imgs, dim_order="ZYX", columns=EXTRAS, chunk_shape=(1, 8, 8))
    assert out == path and path.is_file()
    table = of.read_table(path)
    assert table.column_names == ["ome_arrow", "plate", "well", "area"]
    assert table["plate"].to_pylist() == EXTRAS["plate"]
    assert table["well"].to_pylist() == EXTRAS["well"]
    assert table["well"].type == pa.int64()
    area = table["area"].to_numpy()
    assert np.isnan(area[2]) and area[[0, 1, 3, 4]].tolist() == [1.5, 2.25, -4.0, 1e9]
    assert table["ome_arrow"].type == of.OME_ARROW_BYTE_STRUCT
    reader = of.from_ome_parquet if suffix == ".parquet" else of.from_ome_vortex
    for k in (4, 0, 2):
        rec = reader(path, row_index=k)
        assert np.array_equal(of.to_numpy(rec)[0, 0], imgs[k])
    sub = of.read_table(path, columns=["well", "plate"], rows=[3, 1, 3])
    assert sub.column_names == ["well", "plate"]
    assert sub["well"].to_pylist() == [4, 2, 4] and sub["plate"].to_pylist() == ["P2", "P1", "P2"]
    scalar, arr = reader(path, row_index=3, return_array=True)
    assert len(arr) == 1 and arr[0] == scalar


@pytest.mark.parametrize("suffix", [".parquet", ".vortex"])
def test_write_table_from_records_and_tables(tmp_path, suffix):
    imgs = _images(3, seed=1)
    recs = [of.from_numpy(a, dim_order="ZYX", image_id=f"r{i}") for i, a in enumerate(imgs)]
    p1 = of.write_table(tmp_path / f"recs{suffix}", recs, column_name="img", columns={"k": [7, 8, 9]})
    p2 = of.write_table(tmp_path / f"arr{suffix}", of.records_from_arrays(imgs, dim_order="ZYX"))
    tbl = pa.table({"ome_arrow": of.records_from_arrays(imgs, dim_order="ZYX"), "k": [1, 2, 3]})
    p3 = of.write_table(tmp_path / f"tbl{suffix}", tbl)
    reader = of.from_ome_parquet if suffix == ".parquet" else of.from_ome_vortex
    for p, col in ((p1, "img"), (p2, "ome_arrow"), (p3, "ome_arrow")):
        assert np.array_equal(of.to_numpy(reader(p, column_name=col, row_index=1))[0, 0], imgs[1])
    assert reader(p1, column_name="img", row_index=2)["id"].as_py() == "r2"
    with pytest.raises(TypeError, match="numpy images only"):
        of.write_table(tmp_path / f"x{suffix}", recs, chunk_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="2 rows but there are 3 images"):
        of.write_table(tmp_path / f"x{suffix}", recs, columns={"k": [1, 2]})


@pytest.mark.parametrize("encoding", ["bytes", "list"])
def test_to_and_from_single_record_files(tmp_path, encoding):
    arr = np.random.default_rng(2).integers(0, 255, (3, 2, 17, 19)).astype(np.uint8)
    rec = of.from_numpy(arr, dim_order="CZYX", chunk_encoding=encoding, chunk_shape=(1, 8, 8))
    pq_path, vx_path = tmp_path / "one.parquet", tmp_path / "one.vortex"
    of.to_ome_parquet(rec, str(pq_path), file_metadata={"lab": "x"})
    of.to_ome_vortex(rec, str(vx_path), file_metadata={"lab": "x"})
    assert pq.read_schema(pq_path).names == ["image"]  # reference default column name
    for path, reader in ((pq_path, of.from_ome_parquet), (vx_path, of.from_ome_vortex)):
        got = reader(path, column_name="image")
        assert got.type == rec.type
        assert np.array_equal(of.to_numpy(got)[0], arr)
        assert got["pixels_meta"] == rec["pixels_meta"]
        got2 = reader(path, column_name="image", strict_schema=True)
        assert got2 == got
    pq_meta = pq.read_schema(pq_path).metadata
    vx_meta = read_vortex_schema(vx_path).metadata
    for meta in (pq_meta, vx_meta):
        assert meta[b"ome.arrow.type"] == b"ome.arrow"
        assert meta[b"ome.arrow.version"] == of.OME_ARROW_TAG_VERSION.encode()
        assert meta[b"lab"] == b"x"


@pytest.mark.parametrize("suffix", [".parquet", ".vortex"])
def test_column_name_autodetection(tmp_path, suffix):
    arr = np.arange(30, dtype=np.uint16).reshape(5, 6)
    path = tmp_path / f"a{suffix}"
    writer = of.to_ome_parquet if suffix == ".parquet" else of.to_ome_vortex
    writer(of.from_numpy(arr), str(path), column_name="pixels_here")
    reader = of.from_ome_parquet if suffix == ".parquet" else of.from_ome_vortex
    with pytest.warns(UserWarning, match=r"'ome_arrow' not found.*'pixels_here'"):
        rec = reader(path)  # default column_name='ome_arrow' is missing
    assert np.array_equal(of.to_numpy(rec)[0, 0, 0], arr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec = reader(path, column_name=None)  # silent auto-detection
        rec2 = reader(path, column_name="pixels_here")
    assert rec == rec2


def test_file_metadata_and_writer_keys(tmp_path):
    path = of.write_table(tmp_path / "m.parquet", _images(2), dim_order="ZYX", file_metadata={"k": "v"})
    md = pq.ParquetFile(path).metadata.metadata
    assert md[b"ome.arrow.type"] == b"ome.arrow"
    assert md[b"ome.arrow.version"] == b"0.1.0"
    assert md[b"k"] == b"v"
    assert md[b"omeframe.writer"].startswith(b"omeframe ")


def test_large_images_get_own_row_groups(tmp_path):
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 65535, (1024, 2048), dtype=np.uint16) for _ in range(10)]  # 4 MiB each
    path = of.write_table(tmp_path / "big.parquet", imgs, compression=None, chunk_shape=(1, 1024, 1024))
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_row_groups == 10
    assert [pf.metadata.row_group(g).num_rows for g in range(10)] == [1] * 10
    rec = of.from_ome_parquet(path, row_index=7)
    assert np.array_equal(of.to_numpy(rec)[0, 0, 0], imgs[7])


def test_small_crops_share_row_groups(tmp_path):
    rng = np.random.default_rng(4)
    crops = [rng.integers(0, 65535, (24, 24), dtype=np.uint16) for _ in range(400)]  # 1152 B
    one = of.write_table(tmp_path / "crops.parquet", crops, compression=None)
    assert pq.ParquetFile(one).metadata.num_row_groups == 1
    many = of.write_table(tmp_path / "crops64k.parquet", crops, compression=None, row_group_bytes=64 << 10)
    md = pq.ParquetFile(many).metadata
    rows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
    assert sum(rows) == 400
    assert 5 <= len(rows) <= 20
    assert min(rows[:-1]) >= 20  # many crops per group
    rec = of.from_ome_parquet(many, row_index=333)
    assert np.array_equal(of.to_numpy(rec)[0, 0, 0], crops[333])


class CountingFile(io.RawIOBase):
    """A read-only file object that counts every byte handed to its reader."""

    def __init__(self, path):
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.bytes_read = 0
        self.calls = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def read(self, size=-1):
        data = self._f.read(size)
        self.bytes_read += len(data)
        self.calls += 1
        return data

    def readinto(self, b):
        n = self._f.readinto(b)
        self.bytes_read += n or 0
        self.calls += 1
        return n

    def close(self):
        self._f.close()
        super().close()


def test_reading_one_row_reads_only_its_row_group(tmp_path):
    rng = np.random.default_rng(5)
    n = 20
    imgs = [rng.integers(0, 65535, (1024, 1024), dtype=np.uint16) for _ in range(n)]  # ~2 MiB each
    path = of.write_table(
        tmp_path / "rows.parquet", imgs, columns={"label": [f"cell{i}" for i in range(n)], "i": list(range(n))}
    )
    file_size = path.stat().st_size
    k = 13
    md = pq.ParquetFile(path).metadata
    assert md.num_row_groups == n  # one image per row group
    # Bytes of row k's row group for the OME-Arrow column (all its leaves).
    g_start = sum(md.row_group(g).num_rows for g in range(k))
    g = next(g for g in range(md.num_row_groups) if sum(md.row_group(j).num_rows for j in range(g + 1)) > k)
    assert g_start == k and g == k
    rg = md.row_group(g)
    col_bytes = sum(
        rg.column(j).total_compressed_size
        for j in range(rg.num_columns)
        if rg.column(j).path_in_schema.startswith("ome_arrow.")
    )
    footer = md.serialized_size + 8
    slack = 64 << 10
    bound = col_bytes + footer + slack

    fh = CountingFile(path)
    try:
        pf = open_parquet(fh)
        tbl = read_parquet_rows(pf, [k], columns=["ome_arrow"])
    finally:
        fh.close()
    # The bound: row group k's OME-Arrow column chunks + the footer + 64 KiB.
    assert fh.bytes_read <= bound, (fh.bytes_read, bound)
    assert fh.bytes_read >= col_bytes  # it really read the pixels
    assert col_bytes > 2_000_000 and fh.bytes_read < file_size / 10
    assert np.array_equal(of.to_numpy(tbl["ome_arrow"][0])[0, 0, 0], imgs[k])


def test_vortex_row_reads_return_the_right_row(tmp_path):
    imgs = _images(5, seed=6)
    path = of.write_table(tmp_path / "v.vortex", imgs, dim_order="ZYX", columns=EXTRAS, chunk_compression="lz4")
    for k in (3, 0, 4, 1):
        rec = of.from_ome_vortex(path, row_index=k)
        assert rec["pixels_meta"]["size_x"].as_py() == imgs[k].shape[2]
        assert np.array_equal(of.to_numpy(rec)[0, 0], imgs[k])
        assert rec["id"].as_py() == f"img-{k}"
    t = of.read_table(path, rows=[4, 2])
    assert t["plate"].to_pylist() == ["P3", "P2"]
    assert np.array_equal(of.to_numpy(t["ome_arrow"][0])[0, 0], imgs[4])


def test_chunk_codec_and_parquet_codec_are_separate(tmp_path):
    imgs = _images(3, seed=7)
    path = of.write_table(
        tmp_path / "c.parquet", imgs, dim_order="ZYX", chunk_compression="lz4", compression="snappy"
    )
    recs = of.read_table(path)["ome_arrow"].to_pylist()
    assert {c["compression"] for r in recs for c in r["chunks"]} == {"lz4"}
    rg = pq.ParquetFile(path).metadata.row_group(0)
    codecs = {rg.column(j).path_in_schema: rg.column(j).compression for j in range(rg.num_columns)}
    assert codecs["ome_arrow.chunks.list.element.pixel_bytes"] == "UNCOMPRESSED"  # not twice
    assert codecs["ome_arrow.id"] == "SNAPPY"
    raw = of.write_table(tmp_path / "r.parquet", imgs, dim_order="ZYX", chunk_compression=None)
    recs = of.read_table(raw)["ome_arrow"].to_pylist()
    assert {c["compression"] for r in recs for c in r["chunks"]} == {None}
    rg = pq.ParquetFile(raw).metadata.row_group(0)
    codecs = {rg.column(j).path_in_schema: rg.column(j).compression for j in range(rg.num_columns)}
    assert codecs["ome_arrow.chunks.list.element.pixel_bytes"] == "ZSTD"  # raw chunks: Parquet compresses
    for p in (path, raw):
        assert np.array_equal(of.to_numpy(of.from_ome_parquet(p, row_index=2))[0, 0], imgs[2])


def test_read_table_does_not_keep_the_file_mapped(tmp_path):
    # Paths are memory-mapped while read; no column of the table may keep the
    # mapping (and with it the file, on Windows) alive after the read.
    import os

    maps = "/proc/self/maps"
    if not os.path.exists(maps):
        pytest.skip("needs /proc/self/maps")
    path = of.write_table(tmp_path / "t.parquet", _images(3), dim_order="ZYX", chunk_shape=(1, 8, 8))
    table = of.read_table(path)
    rec = of.from_ome_parquet(path, row_index=1)
    # pyarrow's decode threads drop their references to the mapped file just after
    # the read returns (seen on Python 3.12), so give them a moment; a column that
    # keeps the mapping alive keeps it for good and still fails.
    import time

    deadline = time.monotonic() + 2.0
    while True:
        with open(maps) as fh:
            mapped = os.fspath(path) in fh.read()
        if not mapped or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not mapped, f"{path} is still memory-mapped 2 s after read_table / from_ome_parquet returned"
    imgs = _images(3)
    assert np.array_equal(of.to_numpy(table["ome_arrow"][2])[0, 0], imgs[2])
    assert np.array_equal(of.to_numpy(rec)[0, 0], imgs[1])


def test_auto_compression_is_zstd_pages_in_parquet(tmp_path):
    # write_table's default "auto" is each format's own choice: zstd pages in Parquet
    crops = (np.arange(600 * 3 * 16 * 16) % 37).astype(np.uint8).reshape(600, 3, 16, 16)
    codecs = {}
    for codec in ("auto", "zstd", None):
        path = of.write_table(tmp_path / f"{codec}.parquet", crops, dim_order="CYX", compression=codec)
        rg = pq.ParquetFile(path).metadata.row_group(0)
        codecs[codec] = {rg.column(j).compression for j in range(rg.num_columns)}
        assert np.array_equal(of.open_table(path).to_numpy(), crops)
    assert codecs["auto"] == codecs["zstd"] == {"ZSTD"}
    assert codecs[None] == {"UNCOMPRESSED"}
