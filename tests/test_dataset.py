"""Chunked image datasets: write/open/read, append, atomic commits, checksums, streaming.

A dataset is a directory with ``manifest.json``, an images table and chunk
part files, in Parquet or Vortex. These tests check the round trip in both
formats, the chunks table contents against numpy, that plain DuckDB/Polars/
vortex read the tables, that a failed or killed append leaves the previous
generation intact, that corrupt chunks are detected, and that the writer
streams block by block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import omeframe as of
import omeframe.formats.dataset.writer as writer_mod
from omeframe.errors import ChunkChecksumError
from omeframe.formats.dataset import CHUNKS_SCHEMA, IMAGES_SCHEMA
from omeframe.formats.dataset.inputs import ImageInput
from omeframe.model.header import ImageHeader, default_channels

vortex = pytest.importorskip("vortex")

FORMATS = ["parquet", "vortex"]
REPO = Path(__file__).resolve().parents[1]


def _img(shape, dtype=np.uint16, seed=0, zero_frac=0.3):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        a = rng.normal(0, 100, shape).astype(dt)
    elif dt.kind == "b":
        a = rng.random(shape) > 0.5
    else:
        info = np.iinfo(dt)
        a = rng.integers(max(info.min, -3000), min(info.max, 3000), shape, endpoint=True).astype(dt)
    a[rng.random(shape) < zero_frac] = 0
    return a


def _header(image_id: str, size_c: int = 1) -> ImageHeader:
    return ImageHeader(
        image_id=image_id, name=image_id, image_type=None, acquisition_datetime=None,
        channels=default_channels(None, size_c),
        physical_size_x=1.0, physical_size_y=1.0, physical_size_z=1.0,
        physical_size_x_unit="µm", physical_size_y_unit="µm", physical_size_z_unit="µm",
    )


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def images():
    return {
        "a": _img((2, 3, 5, 70, 90), np.uint16, seed=1),
        "b": _img((1, 2, 3, 33, 47), np.float32, seed=2),
        "c": _img((1, 1, 1, 64, 64), np.int16, seed=3),
    }


@pytest.fixture(params=FORMATS)
def fmt(request):
    return request.param


@pytest.fixture()
def ds_path(tmp_path, fmt, images):
    path = tmp_path / f"ds-{fmt}"
    of.write_dataset([images["a"], images["b"]], path, format=fmt, chunk_shape=(2, 32, 40),
                     image_ids=["a", "b"], dim_order="TCZYX", progress=False)
    return path


# ---------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------
def test_round_trip_both_formats(ds_path, fmt, images):
    ds = of.open_dataset(ds_path)
    assert isinstance(ds, of.Dataset)
    assert ds.format == fmt and ds.image_ids == ["a", "b"] and len(ds) == 2
    assert ds.manifest.generation == 1 and len(ds.chunk_paths) == 1
    for iid in ("a", "b"):
        a = images[iid]
        meta = ds.image_metadata(iid)
        assert meta["shape"] == a.shape and meta["dtype"] == a.dtype.name
        assert meta["chunk_shape"] == (min(2, a.shape[2]), 32, 40)
        assert meta["n_chunks"] == ds.entry(iid).n_chunks == int(np.prod(ds.entry(iid).grid_shape))
        assert meta["pixels_meta"]["size_x"] == a.shape[4]
        assert np.array_equal(ds.read(iid), a)
        plan = ds.scan(iid)
        assert plan.is_lazy and plan.shape == a.shape and plan.dtype == a.dtype
        assert np.array_equal(plan.collect().export("numpy"), a)
        assert np.array_equal(of.scan(ds_path, image_id=iid).export("numpy"), a)
    # a region, with T/C/Z lists in any order
    sel = ds.read("a", t=[1, 0], c=[2, 0, 2], z=[4, 1], y=(5, 66), x=(39, 81))
    a = images["a"]
    assert np.array_equal(sel, a[np.ix_([1, 0], [2, 0, 2], [4, 1])][..., 5:66, 39:81])
    # to_record copies the chunks into an OME-Arrow record
    assert np.array_equal(of.to_numpy(ds.to_record("b")), images["b"])
    ds.close()


def test_many_images_one_write(tmp_path, fmt):
    imgs = [_img((1, 1, 2, 20 + i, 30 - i), np.uint8, seed=i) for i in range(12)]
    ds = of.write_dataset(imgs, tmp_path / "many", format=fmt, chunk_shape=(1, 16, 16), dim_order="TCZYX")
    assert ds.image_ids == [f"img-{i}" for i in range(12)]
    for i, a in enumerate(imgs):
        assert np.array_equal(ds.read(f"img-{i}"), a)
    # one part file holds all images; rows are contiguous per image
    assert len(ds.chunk_paths) == 1
    starts = [ds.entry(f"img-{i}").row_start for i in range(12)]
    counts = [ds.entry(f"img-{i}").n_chunks for i in range(12)]
    assert starts == list(np.cumsum([0] + counts[:-1]))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint32, np.int32, np.float64, np.bool_])
def test_native_dtypes_and_raw_codec(tmp_path, dtype):
    a = _img((1, 2, 3, 17, 19), dtype, seed=4)
    ds = of.write_dataset(a, tmp_path / "d", chunk_shape=(2, 8, 8), compression=None, dim_order="TCZYX")
    e = ds.entry()
    assert e.codec is None and e.dtype == np.dtype(dtype)
    assert np.array_equal(ds.read(), a)
    assert (ds.chunk_table(e.image_id)["codec"].null_count) == e.n_chunks


@pytest.mark.parametrize("frame_bytes", [None, 4 * 16 * 2])  # one frame per chunk, or frames of 4 rows
def test_vortex_fallback_without_byte_index(tmp_path, frame_bytes):
    """Compressible payloads that vortex re-encodes are read through vortex row takes."""
    ramp = np.tile(np.arange(64, dtype=np.uint16), (4, 64, 1))  # identical chunks
    ds = of.write_dataset(ramp, tmp_path / "vx", format="vortex", chunk_shape=(1, 16, 16), dim_order="ZYX",
                          frame_bytes=frame_bytes)
    e = ds.entry()
    assert (e.frame_rows is None) == (frame_bytes is None)
    if e.offsets is not None:
        pytest.skip("vortex stored these payloads verbatim; the fallback path is not exercised")
    assert "vortex row takes" in ds.pixel_source().describe
    assert np.array_equal(ds.read()[0, 0], ramp)
    assert np.array_equal(ds.read(z=[3, 0], y=(5, 40), x=(17, 18))[0, 0], ramp[[3, 0], 5:40, 17:18])
    assert ds.verify()["chunks"] == e.n_chunks


# ---------------------------------------------------------------------------
# the chunks table
# ---------------------------------------------------------------------------
def test_chunks_table_columns_stats_and_order(ds_path, images):
    ds = of.open_dataset(ds_path)
    full = ds.chunk_table(level=None, columns=[f.name for f in CHUNKS_SCHEMA])
    assert full.schema.names == CHUNKS_SCHEMA.names
    for name in ("image_id", "level", "t", "c", "z", "y", "x", "shape_z", "shape_y", "shape_x", "dtype",
                 "codec", "min", "max", "mean", "nonzero", "checksum", "nbytes", "pixel_bytes"):
        assert name in full.schema.names
    assert full.num_rows == sum(ds.entry(i).n_chunks for i in ds.image_ids)
    # images are contiguous, in write order
    ids = full["image_id"].to_pylist()
    assert ids == ["a"] * ds.entry("a").n_chunks + ["b"] * ds.entry("b").n_chunks
    for iid in ("a", "b"):
        a = images[iid]
        t = ds.chunk_table(iid, columns=[f.name for f in CHUNKS_SCHEMA]).to_pydict()
        keys = np.array([t[k] for k in ("t", "c", "z", "y", "x")]).T
        order = np.lexsort(keys.T[::-1])
        assert np.array_equal(order, np.arange(len(keys))), "chunks not sorted by (t, c, z, y, x)"
        assert len({tuple(k) for k in keys}) == len(keys)
        for i, (tt, cc, zz, yy, xx) in enumerate(keys):
            dz, dy, dx = t["shape_z"][i], t["shape_y"][i], t["shape_x"][i]
            block = a[tt, cc, zz : zz + dz, yy : yy + dy, xx : xx + dx]
            assert block.shape == (dz, dy, dx) and block.size > 0
            assert t["dtype"][i] == a.dtype.name and t["codec"][i] == "zstd" and t["level"][i] == 0
            assert t["min"][i] == float(block.min())
            assert t["max"][i] == float(block.max())
            assert t["mean"][i] == pytest.approx(float(block.mean(dtype=np.float64)), rel=1e-12, abs=1e-12)
            assert t["nonzero"][i] == int(np.count_nonzero(block))
            assert t["nbytes"][i] == block.nbytes
            payload = t["pixel_bytes"][i]
            assert t["checksum"][i] == zlib.crc32(payload) & 0xFFFFFFFF
            raw = pa.Codec("zstd").decompress(payload, decompressed_size=block.nbytes)
            assert np.array_equal(np.frombuffer(raw, a.dtype).reshape(block.shape), block)
        # the grid covers every pixel exactly once
        shapes = zip(t["shape_z"], t["shape_y"], t["shape_x"], strict=True)
        assert sum(int(np.prod(s)) for s in shapes) == a[0, 0].size * a.shape[0] * a.shape[1]
        stats = ds.chunk_stats(iid)
        assert np.array_equal(stats["max"], np.array(t["max"]))
    ds.close()


def test_images_table_schema(ds_path):
    ds = of.open_dataset(ds_path)
    t = ds.images_table
    assert t.schema.equals(IMAGES_SCHEMA)
    assert t["image_id"].to_pylist() == ["a", "b"]
    assert t["n_chunks"].to_pylist() == [ds.entry("a").n_chunks, ds.entry("b").n_chunks]
    row = t.to_pylist()[0]
    assert len(row["chunk_lengths"]) == len(row["chunk_checksums"]) == row["n_chunks"]
    assert row["stored_bytes"] == sum(row["chunk_lengths"])
    assert row["part"] == ds.manifest.parts[0]


# ---------------------------------------------------------------------------
# plain readers: DuckDB, Polars, vortex
# ---------------------------------------------------------------------------
def test_duckdb_reads_parquet_tables(tmp_path, images):
    duckdb = pytest.importorskip("duckdb")
    ds = of.write_dataset([images["a"], images["b"]], tmp_path / "d", chunk_shape=(2, 32, 40),
                          image_ids=["a", "b"], dim_order="TCZYX")
    part = ds.chunk_paths[0].as_posix()
    imgs = ds.images_path.as_posix()
    rows = duckdb.sql(
        f"select image_id, count(*), min(min), max(max), sum(nonzero), sum(nbytes) "
        f"from read_parquet('{part}') group by image_id order by image_id"
    ).fetchall()
    for (iid, n, mn, mx, nz, nbytes), key in zip(rows, ("a", "b"), strict=True):
        a = images[key]
        assert iid == key and n == ds.entry(key).n_chunks
        assert (mn, mx) == (float(a.min()), float(a.max()))
        assert nz == np.count_nonzero(a) and nbytes == a.nbytes
    hot = duckdb.sql(
        f"select t, c, z, y, x from read_parquet('{part}') where image_id = 'a' and max > 2990 order by t, c, z, y, x"
    ).fetchall()
    assert len(hot) > 0
    meta = duckdb.sql(
        f"select image_id, pixels_meta.size_t, pixels_meta.size_c, pixels_meta.size_z, pixels_meta.size_y, "
        f"pixels_meta.size_x, chunk_grid.chunk_y, dtype, n_chunks from read_parquet('{imgs}') order by image_id"
    ).fetchall()
    assert meta[0] == ("a", 2, 3, 5, 70, 90, 32, "uint16", ds.entry("a").n_chunks)
    assert meta[1][0] == "b" and meta[1][7] == "float32"


def test_polars_reads_parquet_tables(tmp_path, images):
    pl = pytest.importorskip("polars")
    ds = of.write_dataset([images["a"], images["b"]], tmp_path / "d", chunk_shape=(2, 32, 40),
                          image_ids=["a", "b"], dim_order="TCZYX")
    part = ds.chunk_paths[0]
    df = pl.read_parquet(part)
    assert df.columns == CHUNKS_SCHEMA.names and df.height == ds.entry("a").n_chunks + ds.entry("b").n_chunks
    lazy = (
        pl.scan_parquet(part)
        .filter((pl.col("image_id") == "a") & (pl.col("nonzero") > 0))
        .group_by("c").agg(pl.col("max").max().alias("mx"))
        .sort("c")
        .collect()
    )
    a = images["a"]
    assert lazy["mx"].to_list() == [float(a[:, c].max()) for c in range(3)]
    imgs = pl.read_parquet(ds.images_path)
    assert imgs["image_id"].to_list() == ["a", "b"]
    assert imgs.select(pl.col("pixels_meta").struct.field("size_x"))["size_x"].to_list() == [90, 47]
    assert pl.scan_parquet(ds.images_path).select("n_chunks").collect()["n_chunks"].sum() == df.height


def test_vortex_tables_open_with_plain_vortex(tmp_path, images):
    ds = of.write_dataset([images["a"], images["b"]], tmp_path / "d", format="vortex",
                          chunk_shape=(2, 32, 40), image_ids=["a", "b"], dim_order="TCZYX")
    from omeframe.formats.vortex.file import SCHEMA_COLUMN_PREFIX

    chunks = vortex.open(str(ds.chunk_paths[0])).to_arrow().read_all()
    # omeframe appends one hidden, null-typed column whose name carries the Arrow schema
    assert chunks.schema.names[:-1] == CHUNKS_SCHEMA.names
    assert chunks.schema.names[-1].startswith(SCHEMA_COLUMN_PREFIX)
    assert chunks.column(chunks.num_columns - 1).null_count == chunks.num_rows
    assert chunks.num_rows == ds.entry("a").n_chunks + ds.entry("b").n_chunks
    ref = ds.chunk_table(level=None)
    for name in ("image_id", "t", "c", "z", "y", "x", "min", "max", "nonzero", "checksum"):
        assert chunks[name].cast(ref.schema.field(name).type).to_pylist() == ref[name].to_pylist()
    imgs = vortex.open(str(ds.images_path)).to_arrow().read_all()
    assert imgs.schema.names[:-1] == IMAGES_SCHEMA.names
    assert [str(v) for v in imgs["image_id"].to_pylist()] == ["a", "b"]


# ---------------------------------------------------------------------------
# modes and append
# ---------------------------------------------------------------------------
def test_append_new_generation(ds_path, fmt, images):
    old = of.open_dataset(ds_path)
    _ = old.images_table  # a reader holding the previous generation
    before = {iid: old.read(iid) for iid in old.image_ids}
    ds = of.write_dataset(images["c"], ds_path, mode="append", image_ids=["c"], chunk_shape=(1, 16, 16),
                          dim_order="TCZYX")
    assert ds.manifest.generation == 2 and ds.image_ids == ["a", "b", "c"]
    assert len(ds.chunk_paths) == 2 and ds.entry("c").part != ds.entry("a").part
    assert np.array_equal(ds.read("c"), images["c"])
    for iid, arr in before.items():
        assert np.array_equal(ds.read(iid), arr)
    # the reader opened on generation 1 still reads its images
    assert old.image_ids == ["a", "b"] and np.array_equal(old.read("a"), images["a"])
    # Dataset.append is the same operation; superseded images tables stay for the
    # garbage-collection grace period (readers may hold them), then go
    ds3 = ds.append(images["c"][..., :10, :10], image_ids=["c-crop"], dim_order="TCZYX")
    assert ds3.manifest.generation == 3 and ds3.image_ids[-1] == "c-crop"
    ext = "parquet" if fmt == "parquet" else "vortex"
    gens = [p.name.split("-")[1] for p in sorted(ds_path.glob(f"images-*.{ext}"))]
    assert gens == ["00001", "00002", "00003"]
    report = ds3.gc(grace_seconds=0)
    assert report.current == 3 and report.kept == [3]
    assert [p.name for p in ds_path.glob(f"images-*.{ext}")] == [Path(ds3.manifest.images).name]
    assert np.array_equal(of.open_dataset(ds_path).read("a"), images["a"])


def test_append_duplicate_id_rejected(ds_path, images):
    listing = _listing(ds_path)
    manifest = (ds_path / "manifest.json").read_text()
    with pytest.raises(ValueError, match=r"image id 'a' (level 0 )?is already in the dataset"):
        of.write_dataset(images["c"], ds_path, mode="append", image_ids=["a"], dim_order="TCZYX")
    with pytest.raises(ValueError, match=r"image id 'x' (level 0 )?is already in the dataset \(or given twice\)"):
        of.write_dataset([images["c"], images["c"]], ds_path, mode="append", image_ids=["x", "x"], dim_order="TCZYX")
    assert _listing(ds_path) == listing and (ds_path / "manifest.json").read_text() == manifest


def test_modes(ds_path, fmt, images, tmp_path):
    with pytest.raises(FileExistsError, match="already holds a dataset; pass mode='append'"):
        of.write_dataset(images["c"], ds_path, dim_order="TCZYX")
    with pytest.raises(ValueError, match="mode must be"):
        of.write_dataset(images["c"], tmp_path / "x", mode="update", dim_order="TCZYX")
    other = "vortex" if fmt == "parquet" else "parquet"
    with pytest.raises(ValueError, match=f"is {fmt}; cannot append {other}"):
        of.write_dataset(images["c"], ds_path, mode="append", format=other, dim_order="TCZYX")
    with pytest.raises(ValueError, match="format must be"):
        of.write_dataset(images["c"], tmp_path / "y", format="csv", dim_order="TCZYX")
    with pytest.raises(ValueError, match="at least one image"):
        of.write_dataset([], tmp_path / "z")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hi")
    with pytest.raises(FileExistsError, match="not an empty directory or a dataset"):
        of.write_dataset(images["c"], junk, dim_order="TCZYX")
    with pytest.raises(FileNotFoundError, match="parent directory"):
        of.write_dataset(images["c"], tmp_path / "no" / "such" / "dir", dim_order="TCZYX")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # overwrite replaces the dataset as a whole, as its next generation (in place, no swap)
    ds = of.write_dataset(images["c"], ds_path, mode="overwrite", image_ids=["only"], dim_order="TCZYX")
    assert ds.image_ids == ["only"] and ds.manifest.generation == 2 and ds.format == "parquet"
    assert np.array_equal(of.open_dataset(ds_path).read("only"), images["c"])
    assert not list(tmp_path.glob(".*staging*")) and not list(tmp_path.glob(".*old*"))
    # append to a missing path creates the dataset
    ds = of.write_dataset(images["c"], tmp_path / "fresh", mode="append", image_ids=["n"], dim_order="TCZYX")
    assert ds.image_ids == ["n"]
    with pytest.raises(FileNotFoundError, match="no dataset directory"):
        of.open_dataset(tmp_path / "nothing-here")
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        of.open_dataset(junk)


# ---------------------------------------------------------------------------
# atomicity
# ---------------------------------------------------------------------------
def _state(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    ds = of.open_dataset(path)
    out = (ds.image_ids, {iid: ds.read(iid) for iid in ds.image_ids})
    ds.close()
    return out


@pytest.mark.parametrize("where", ["_write_images_table", "write_manifest"])
def test_failed_append_leaves_previous_state(ds_path, images, monkeypatch, where):
    ids, pixels = _state(ds_path)
    listing = _listing(ds_path)
    real = getattr(writer_mod, where)
    seen = {}

    def crash(*args, **kwargs):
        real(*args, **kwargs) if where == "_write_images_table" else None
        # the new part file is complete on disk when we crash
        seen["parts"] = sorted(p.name for p in (ds_path / "chunks").iterdir())
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(writer_mod, where, crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        of.write_dataset(images["c"], ds_path, mode="append", image_ids=["new"], dim_order="TCZYX")
    assert len(seen["parts"]) == 2  # the part had been written
    monkeypatch.undo()
    ids2, pixels2 = _state(ds_path)
    assert ids2 == ids and "new" not in ids2
    for iid in ids:
        assert np.array_equal(pixels2[iid], pixels[iid])
    assert _listing(ds_path) == listing  # the failed write cleaned up after itself
    # and the dataset still takes appends
    ds = of.write_dataset(images["c"], ds_path, mode="append", image_ids=["new"], dim_order="TCZYX")
    assert ds.image_ids == ids + ["new"]


def test_killed_append_leaves_previous_state(ds_path, images, tmp_path):
    """A process killed (os._exit, no cleanup) just before the manifest commit."""
    ids, pixels = _state(ds_path)
    np.save(tmp_path / "c.npy", images["c"])
    script = textwrap.dedent(
        f"""
        import os, numpy as np, omeframe as of
        import omeframe.formats.dataset.writer as w
        def die(*a, **k):
            os._exit(17)
        w.write_manifest = die
        of.write_dataset(np.load({str(tmp_path / "c.npy")!r}), {str(ds_path)!r}, mode="append",
                         image_ids=["ghost"], dim_order="TCZYX", progress=False)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 17, res.stderr
    # the crash left an orphan part and images table behind ...
    assert len(list((ds_path / "chunks").iterdir())) == 2
    manifest = json.loads((ds_path / "manifest.json").read_text())
    assert manifest["generation"] == 1 and len(manifest["parts"]) == 1
    # ... which readers ignore
    ids2, pixels2 = _state(ds_path)
    assert ids2 == ids and "ghost" not in ids2
    for iid in ids:
        assert np.array_equal(pixels2[iid], pixels[iid])
    # the next append commits normally over the debris
    ds = of.write_dataset(images["c"], ds_path, mode="append", image_ids=["ghost"], dim_order="TCZYX")
    assert ds.image_ids == ids + ["ghost"] and np.array_equal(ds.read("ghost"), images["c"])
    assert ds.verify()["images"] == 3


def test_failed_create_leaves_nothing(tmp_path, images, monkeypatch):
    monkeypatch.setattr(writer_mod, "write_manifest", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        of.write_dataset(images["c"], tmp_path / "new", dim_order="TCZYX")
    assert list(tmp_path.iterdir()) == []


def test_failing_source_commits_nothing(ds_path):
    listing = _listing(ds_path)

    def bad_block(t, c, z0, z1, y0, y1, x0, x1):
        if y0 >= 32:
            raise OSError("source went away")
        return np.zeros((z1 - z0, y1 - y0, x1 - x0), np.uint8)

    inp = ImageInput((1, 1, 1, 64, 64), np.dtype(np.uint8), _header("flaky"), bad_block)
    with pytest.raises(OSError, match="source went away"):
        of.write_dataset(inp, ds_path, mode="append", chunk_shape=(1, 16, 16))
    assert _listing(ds_path) == listing
    assert "flaky" not in of.open_dataset(ds_path).image_ids


# ---------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------
def test_corrupt_chunk_is_detected(tmp_path, fmt):
    a = np.random.default_rng(7).integers(0, 65535, (1, 2, 1, 64, 96), dtype=np.uint16)  # incompressible
    ds = of.write_dataset(a, tmp_path / "d", format=fmt, chunk_shape=(1, 32, 32), image_ids=["im-7"], dim_order="TCZYX")
    e = ds.entry("im-7")
    assert e.offsets is not None  # payloads stored verbatim: we know where to flip a byte
    origins, _ = e.origins_extents()
    i = int(np.flatnonzero((origins[:, 1] == 1) & (origins[:, 3] == 32) & (origins[:, 4] == 64))[0])
    part = ds.path / e.part
    with open(part, "r+b") as fh:
        fh.seek(int(e.offsets[i] + e.lengths[i] // 2))
        b = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([b[0] ^ 0xFF]))
    ds = of.open_dataset(tmp_path / "d")
    key = r"\{'t': 0, 'c': 1, 'z': 0, 'y': 32, 'x': 64\}"
    with pytest.raises(ChunkChecksumError, match=rf"image 'im-7' level 0 chunk {key}") as ei:
        ds.scan("im-7").select(c=[1], y=(40, 50), x=(60, 70)).export("numpy")
    assert e.part in str(ei.value) and "CRC-32" in str(ei.value)
    assert isinstance(ei.value, of.CorruptFileError)
    with pytest.raises(ChunkChecksumError, match=key):
        ds.read("im-7")
    with pytest.raises(ChunkChecksumError, match="'im-7'"):
        ds.verify()
    # chunks that are intact still read
    assert np.array_equal(ds.read("im-7", c=[0]), a[:, [0]])
    assert np.array_equal(ds.read("im-7", c=[1], y=(0, 32)), a[:, [1], :, :32])


def _smooth(shape: tuple[int, ...], seed: int = 3) -> np.ndarray:
    """Compressible uint16 pixels (a ramp plus noise)."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(shape[-2]), np.arange(shape[-1])).astype(np.int64)
    return (ramp + rng.integers(0, 50, shape)).astype(np.uint16)


def test_framed_chunks_decode_only_touched_frames(tmp_path, fmt):
    a = _smooth((1, 1, 3, 256, 200))
    ds = of.write_dataset(a, tmp_path / "d", format=fmt, chunk_shape=(2, 128, 128), frame_bytes=32 * 128 * 2)
    e = ds.entry()
    assert e.frame_rows == 32
    first, ends = e.frames
    # full chunks: 2 planes x 128 rows = 8 frames; the z edge chunk has 4
    _, ext = e.origins_extents()
    assert np.array_equal(np.diff(first), -(-(ext[:, 0] * ext[:, 1]) // 32))
    # frames are independent zstd frames; the payload is still one valid zstd stream
    whole = pa.Codec("zstd").decompress(ds.read_chunk_bytes(None, 0, 0), decompressed_size=2 * 128 * 128 * 2)
    assert np.array_equal(np.frombuffer(whole, np.uint16).reshape(2, 128, 128), a[0, 0, :2, :128, :128])
    for sel in ({"z": [1], "y": (40, 70), "x": (100, 150)}, {"z": [0, 2], "y": (120, 140), "x": (0, 200)},
                {"z": [2, 0, 1], "y": (255, 256), "x": (3, 4)}, {}):
        plan = ds.scan().select(**sel)
        want = a[:, :, sel.get("z", slice(None))][..., slice(*sel.get("y", (0, 256))), slice(*sel.get("x", (0, 200)))]
        assert np.array_equal(plan.export("numpy"), want)
    info = ds.scan().select(z=[1], y=(40, 70), x=(100, 150))._lazy().info()
    # z=1 is the second plane of the first chunk layer: rows 168..198 = frames 5..6
    want_bytes = sum(int(ends[first[i] + 7] - ends[first[i] + 5]) for i in (0, 1))
    assert info.bytes_read == want_bytes < int(e.lengths[:2].sum()) // 3


def test_corrupt_frame_names_image_chunk_and_frames(tmp_path):
    a = _smooth((1, 1, 1, 256, 256))
    ds = of.write_dataset(a, tmp_path / "d", chunk_shape=(1, 256, 256), image_ids=["im-9"], frame_bytes=64 * 256 * 2)
    e = ds.entry("im-9")
    first, ends = e.frames
    assert int(first[1]) == 4
    with open(ds.path / e.part, "r+b") as fh:  # damage the middle of frame 2 (rows 128..192)
        pos = int(e.offsets[0] + (ends[2] + ends[3]) // 2)
        fh.seek(pos)
        b = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([b[0] ^ 0x5A]))
    ds = of.open_dataset(tmp_path / "d")
    # rows outside frame 2 still read (their frames verify on their own)
    assert np.array_equal(ds.read("im-9", y=(0, 128)), a[..., :128, :])
    assert np.array_equal(ds.read("im-9", y=(200, 256)), a[..., 200:, :])
    key = r"\{'t': 0, 'c': 0, 'z': 0, 'y': 0, 'x': 0\}"
    with pytest.raises(ChunkChecksumError, match=rf"image 'im-9' level 0 chunk {key}.*frames 2\.\.2"):
        ds.read("im-9", y=(130, 140), x=(0, 10))
    # whole-chunk reads verify every frame's checksum (the chunk CRC-32 stays for verify())
    with pytest.raises(ChunkChecksumError, match=rf"chunk {key}.*frames 0\.\.3"):
        ds.read("im-9")
    with pytest.raises(ChunkChecksumError, match="CRC-32"):
        ds.verify()


def test_frame_bytes_is_validated(tmp_path):
    with pytest.raises(ValueError, match="frame_bytes must be None or a non-negative integer"):
        of.write_dataset(np.zeros((8, 8), np.uint8), tmp_path / "d", frame_bytes=-1)
    assert not (tmp_path / "d").exists()


def test_compression_preset_keeps_incompressible_chunks_raw(tmp_path, fmt):
    a = _smooth((1, 1, 1, 256, 256))
    a[..., :128, :128] = np.random.default_rng(1).integers(0, 65535, (128, 128), dtype=np.uint16)
    ds = of.write_dataset(a, tmp_path / "d", format=fmt, chunk_shape=(1, 128, 128), compression="auto")
    e = ds.entry()
    assert e.codec == "zstd"
    assert e.raw is not None and e.raw.tolist() == [True, False, False, False]
    assert ds.chunk_table(columns=["codec"])["codec"].to_pylist() == [None, "zstd", "zstd", "zstd"]
    assert np.array_equal(ds.read(), a)
    assert np.array_equal(ds.read(y=(100, 140), x=(100, 140)), a[..., 100:140, 100:140])
    assert np.array_equal(of.to_numpy(ds.to_record()), a)


def test_record_of_framed_dataset_reads_in_ome_arrow(tmp_path):
    oa = pytest.importorskip("ome_arrow")
    a = _smooth((1, 1, 1, 300, 260))
    ds = of.write_dataset(a, tmp_path / "d", chunk_shape=(1, 256, 256))
    assert ds.entry().frames is not None
    rec = ds.to_record()
    assert np.array_equal(of.to_numpy(rec), a)
    from ome_arrow.export import to_numpy as oa_to_numpy

    assert np.array_equal(np.asarray(oa_to_numpy(rec)), a)
    del oa


def test_verify_counts(ds_path):
    ds = of.open_dataset(ds_path)
    res = ds.verify()
    assert res["images"] == 2
    assert res["chunks"] == ds.entry("a").n_chunks + ds.entry("b").n_chunks
    assert res["bytes"] == int(ds.entry("a").lengths.sum() + ds.entry("b").lengths.sum())


# ---------------------------------------------------------------------------
# streaming inputs
# ---------------------------------------------------------------------------
def test_block_reader_is_called_per_chunk(tmp_path, fmt):
    shape = (2, 2, 5, 50, 70)
    chunk = (2, 16, 32)
    full = _img(shape, np.uint16, seed=11)
    calls = []

    def read_block(t, c, z0, z1, y0, y1, x0, x1):
        calls.append((t, c, z0, y0, x0))
        assert (z1 - z0) <= chunk[0] and (y1 - y0) <= chunk[1] and (x1 - x0) <= chunk[2]
        return full[t, c, z0:z1, y0:y1, x0:x1]

    inp = ImageInput(shape, np.dtype(np.uint16), _header("s", 2), read_block)
    ds = of.write_dataset(inp, tmp_path / "s", format=fmt, chunk_shape=chunk)
    assert len(calls) == ds.entry("s").n_chunks == 2 * 2 * 3 * 4 * 3
    assert len(set(calls)) == len(calls)  # every block read exactly once
    assert np.array_equal(ds.read("s"), full)


_STREAM_SCRIPT = r"""
import json, sys, tracemalloc
import numpy as np, pyarrow as pa, omeframe as of
from omeframe.formats.dataset.inputs import ImageInput
from omeframe.model.header import ImageHeader, default_channels
out, fmt, Z, rg = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
C = (1, 512, 512)
hdr = ImageHeader(image_id="big", name="big", image_type=None, acquisition_datetime=None,
                  channels=default_channels(None, 1), physical_size_x=1.0, physical_size_y=1.0,
                  physical_size_z=1.0, physical_size_x_unit="um", physical_size_y_unit="um",
                  physical_size_z_unit="um")
calls = [0]
def read_block(t, c, z0, z1, y0, y1, x0, x1):
    calls[0] += 1
    assert (z1 - z0) * (y1 - y0) * (x1 - x0) <= C[0] * C[1] * C[2], "block larger than a chunk"
    v = np.add.outer(np.arange(y0, y1, dtype=np.uint16) // 8, np.arange(x0, x1, dtype=np.uint16) // 8)
    v += np.random.default_rng([z0, y0, x0]).integers(0, 16, v.shape, dtype=np.uint16)
    return np.broadcast_to(v, (z1 - z0,) + v.shape)
shape = (1, 1, Z, 4096, 4096)
# warm up (imports, thread pool) on a small image
of.write_dataset(ImageInput((1, 1, 1, 512, 512), np.dtype(np.uint16), hdr, read_block), out + "-warm",
                 format=fmt, progress=False)
calls[0] = 0
pool0 = pa.default_memory_pool().max_memory()
tracemalloc.start()
ds = of.write_dataset(ImageInput(shape, np.dtype(np.uint16), hdr, read_block), out, format=fmt,
                      chunk_shape=C, row_group_bytes=rg, progress=False)
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({
    "raw": int(np.prod(shape)) * 2, "calls": calls[0], "n_chunks": ds.entry("big").n_chunks,
    "stored": int(ds.entry("big").lengths.sum()), "tracemalloc_peak": peak,
    "arrow_pool_peak": pa.default_memory_pool().max_memory(), "arrow_pool_before": pool0,
    "check": bool(np.array_equal(ds.read(z=[Z - 1], y=(1024, 1124), x=(3072, 3172))[0, 0, 0],
                                 read_block(0, 0, Z - 1, Z, 1024, 1536, 3072, 3584)[0, :100, :100])),
}))
"""


def _stream(tmp_path: Path, fmt: str, z: int, row_group_bytes: int) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", _STREAM_SCRIPT, str(tmp_path / "big"), fmt, str(z), str(row_group_bytes)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads(res.stdout.strip().splitlines()[-1])
    print(fmt, {k: (f"{v / 2**20:.1f} MiB" if isinstance(v, int) and v > 4096 else v) for k, v in m.items()})
    assert m["check"] and m["calls"] == m["n_chunks"]
    return m


def test_streaming_write_memory_parquet(tmp_path):
    """Writing a 128 MiB image (1x1x4x4096x4096 uint16) from a block-only source.

    The source can only hand out blocks (each <= one 512x512 chunk); the writer
    holds at most one row group of encoded chunks (``row_group_bytes`` = 4 MiB
    here; the default 64 MiB is sized for SQL scans) plus one batch of blocks
    being encoded. Bound (stated): the Python-heap peak (tracemalloc, which sees
    numpy blocks and the batch buffers) and the Arrow memory-pool peak (codec
    outputs, Parquet writer buffers) each stay below 1/4 of the raw image size.
    """
    m = _stream(tmp_path, "parquet", 4, 4 << 20)
    assert m["raw"] == 128 << 20
    assert m["tracemalloc_peak"] < m["raw"] / 4
    assert m["arrow_pool_peak"] < m["raw"] / 4


def test_streaming_write_memory_vortex(tmp_path):
    """The same 128 MiB write into a Vortex dataset.

    vortex-data's writer keeps every batch of a file alive until the file is
    finished, so the writer rolls over to a new part file every
    ``VORTEX_PART_BYTES`` (16 MiB) of payload. Bound (stated): the Python-heap
    peak stays below 1/4 of the raw image (one part + one row group in flight),
    and the image is spread over several part files.
    """
    from omeframe.formats.dataset.writer import VORTEX_PART_BYTES

    m = _stream(tmp_path, "vortex", 4, 4 << 20)
    assert m["raw"] == 128 << 20
    assert m["stored"] > 2 * VORTEX_PART_BYTES  # several parts were needed
    assert m["tracemalloc_peak"] < m["raw"] / 4
    ds = of.open_dataset(tmp_path / "big")
    assert len(ds.entry("big").parts) > 1


# ---------------------------------------------------------------------------
# other inputs: lazy plans, records, OMEArrow, sources
# ---------------------------------------------------------------------------
def test_write_from_lazy_plan(ds_path, images, tmp_path):
    plan = of.scan(ds_path, image_id="a").select(t=[1], c=[2, 0], z=slice(1, 4), y=(10, 60), x=(5, 85))
    ds = of.write_dataset(plan, tmp_path / "from-plan", image_ids=["a-crop"], chunk_shape=(1, 16, 16))
    want = images["a"][np.ix_([1], [2, 0], [1, 2, 3])][..., 10:60, 5:85]
    assert ds.entry("a-crop").shape == want.shape
    assert np.array_equal(ds.read("a-crop"), want)
    # metadata travels: channel names of the selected channels
    chans = ds.image_metadata("a-crop")["pixels_meta"]["channels"]
    assert [ch["name"] for ch in chans] == ["C2", "C0"]
    assert plan.is_lazy  # writing did not materialise the plan


def test_write_from_record_and_omearrow(tmp_path):
    a = _img((2, 3, 20, 24), np.int16, seed=5)  # CZYX
    rec = of.from_numpy(a, dim_order="CZYX", image_id="rec-1", name="cells", chunk_shape=(1, 8, 8),
                        channel_names=["dna", "actin"])
    ds = of.write_dataset(rec, tmp_path / "r", chunk_shape=(2, 16, 16))
    assert ds.image_ids == ["rec-1"]  # the record's own id
    assert np.array_equal(ds.read("rec-1")[0], a)
    meta = ds.image_metadata("rec-1")
    assert meta["name"] == "cells"
    assert [ch["name"] for ch in meta["pixels_meta"]["channels"]] == ["dna", "actin"]
    obj = of.OMEArrow(rec)
    ds2 = of.write_dataset([obj, a[0]], tmp_path / "o", image_ids=["obj", "arr"], dim_order="ZYX")
    assert np.array_equal(ds2.read("obj")[0], a) and np.array_equal(ds2.read("arr")[0, 0], a[0])
    with pytest.raises(TypeError, match="cannot write an image from a str"):
        of.write_dataset("not an image", tmp_path / "bad")
    with pytest.raises(ValueError, match="image_ids has 1 entries for 2 images"):
        of.write_dataset([a, a], tmp_path / "bad2", image_ids=["x"])


def test_write_from_zarr_source(tmp_path):
    zarr = pytest.importorskip("zarr")
    a = _img((3, 40, 50), np.uint8, seed=6)
    z = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=a.shape, chunks=(1, 16, 16), dtype=a.dtype)
    z[:] = a
    ds = of.write_dataset(of.scan(z, dim_order="ZYX"), tmp_path / "z", image_ids=["z"], chunk_shape=(2, 32, 32))
    assert np.array_equal(ds.read("z")[0, 0], a)


def _forget_checksums(path: Path) -> None:
    """Make the dataset's current manifest one written before manifests recorded the images files' CRCs."""
    from omeframe.formats.dataset.manifest import _encode, generation_path, read_manifest

    m = read_manifest(path)
    m.checksums = {}
    generation_path(path, m.generation).write_bytes(_encode(m))


def test_an_images_index_with_offsets_out_of_bounds_is_refused(tmp_path, images):
    """The Arrow IPC copy of the images table is validated in full before any value is read: offsets
    that point outside their buffer (a flipped bit) once crashed the open with a segmentation fault.
    Runs in a child process, so a regression fails the test instead of killing the suite."""
    path = tmp_path / "ds"
    ds = of.write_dataset([images["a"], images["b"]], path, chunk_shape=(2, 32, 40),
                          image_ids=["alpha-0001", "b"], dim_order="TCZYX", progress=False)
    fast = ds.images_read_path
    assert fast.suffix == ".arrow"
    data = bytearray(fast.read_bytes())
    offsets = np.array([0, 10, 11], dtype=np.int32).tobytes()  # the image_id offsets of the two rows
    at = data.find(offsets)
    assert at > 0 and data.find(offsets, at + 1) < 0
    data[at + 4 : at + 8] = np.array([(1 << 28) + 10], dtype=np.int32).tobytes()  # a high bit flipped
    fast.write_bytes(bytes(data))
    script = textwrap.dedent(
        f"""
        import omeframe as of
        try:
            of.open_dataset({str(path)!r}).image_ids
            print("no error")
        except of.CorruptFileError as exc:
            print(type(exc).__name__ + ":", exc)
        """
    )

    def run_open() -> str:
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"opening the dataset killed the process ({run.returncode}): {run.stderr[-1500:]}"
        return run.stdout

    # the CRC the manifest records for the copy catches it before it is parsed
    assert run_open().startswith("ChunkChecksumError: (images index)"), run_open()
    # a dataset written before manifests recorded CRCs: the full validation catches it
    _forget_checksums(path)
    out = run_open()
    assert out.startswith("CorruptFileError: unreadable Arrow IPC file (images index)"), out
    assert "out of bounds" in out  # only a full validation looks at the offsets between the ends


def test_an_images_table_value_python_cannot_hold_is_refused(tmp_path, images):
    """A timestamp beyond Python's dates in the images table (a flipped high bit) is a CorruptFileError."""
    path = tmp_path / "ds"
    ds = of.write_dataset([images["a"], images["b"]], path, chunk_shape=(2, 32, 40), image_ids=["a", "b"],
                          dim_order="TCZYX", progress=False)
    fast = ds.images_read_path
    table = pa.ipc.open_file(fast).read_all()
    stamps = [i for i, f in enumerate(table.schema) if pa.types.is_timestamp(f.type)]
    if not stamps:
        pytest.fail("the images table has no timestamp column to damage")
    i = stamps[0]
    far = pa.array([2**62] * table.num_rows, pa.int64()).cast(table.schema.field(i).type)
    with pa.OSFile(str(fast), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table.set_column(i, table.schema.field(i), far))
    with pytest.raises(of.ChunkChecksumError, match="images index.*fails the CRC-32"):
        list(of.open_dataset(path).image_ids)
    _forget_checksums(path)  # as written before manifests recorded CRCs: the value itself is refused
    with pytest.raises(of.CorruptFileError, match="cannot be read"):
        list(of.open_dataset(path).image_ids)
