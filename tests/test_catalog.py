"""Catalogs: many files -> images.parquet + dataset/ + catalog.parquet.

A temporary tree of small TIFFs, ``.npy`` files, an OME-Zarr store and one
corrupt TIFF is ingested; the tests check pixels against the sources, error
rows, path-derived columns, resume (skip unchanged, re-ingest touched files
without duplicates), appends, that 2 workers write what 1 worker writes (rows in
discovery order, the same row groups), crash isolation, Ctrl-C, locking, and
FileRecord's to_record / from_obj round trips. Slowness, failures and crashes
are injected through the build's seams (``omeframe.catalog.build.Seams``).
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.catalog import CatalogError, FileRecord, build, discover, read_catalog
from omeframe.catalog.commit import LOCK_NAME, ImagesWriter, Staging, rewrite_images
from omeframe.catalog.discover import detect_reader, open_image
from omeframe.catalog.records import file_checksum, records_from_table, records_to_table

build_mod = importlib.import_module("omeframe.catalog.build")  # the package attribute is the function
Seams, build_with = build_mod.Seams, build_mod.build_with
tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

REGEX = r"(?P<plate>P\d+)_(?P<well>[A-H]\d+)"


def _arr(shape, seed, dtype=np.uint16):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(dtype)


def _write_ome_zarr(path: Path, arr: np.ndarray) -> None:
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.5]}]}]
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets, "name": "zimg"}]
    z = zarr.create_array(
        store=str(path), name="0", shape=arr.shape, chunks=(1, 16, 16), dtype=arr.dtype, zarr_format=2
    )
    z[:] = arr


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, object]:
    """src/: 6 TIFFs (P1/P2 x wells), 2 .npy, 1 OME-Zarr, 1 corrupt TIFF, 1 ignored .txt."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    expected: dict[str, np.ndarray] = {}  # image id -> TCZYX pixels
    wells = [("P1", "A1"), ("P1", "A2"), ("P1", "B1"), ("P2", "A1"), ("P2", "C3"), ("P2", "H12")]
    for i, (plate, well) in enumerate(wells):
        a = _arr((2, 24, 20), i)
        where = src if i < 3 else src / "sub"
        tifffile.imwrite(where / f"{plate}_{well}_f{i}.tif", a, metadata={"axes": "CYX"})
        expected[f"{plate}_{well}_f{i}"] = a[None, :, None]
    a2 = _arr((30, 26), 10, np.float32)
    np.save(src / "plain2d.npy", a2)
    expected["plain2d"] = a2[None, None, None]
    a3 = _arr((5, 16, 18), 11, np.uint8)
    np.save(src / "sub" / "stack.npy", a3)
    expected["stack"] = a3[None, None]  # 3-D .npy: ZYX
    rgb = _arr((12, 10, 3), 13, np.uint8)
    np.save(src / "sub" / "rgb.npy", rgb)
    expected["rgb"] = rgb.transpose(2, 0, 1)[None, :, None]  # trailing samples -> C
    z = _arr((2, 40, 36), 12)
    _write_ome_zarr(src / "zimg.ome.zarr", z)
    expected["zimg"] = z[None, :, None]
    (src / "broken.tif").write_bytes(np.random.default_rng(5).bytes(3000))
    (src / "notes.txt").write_text("not an image")
    return {"src": src, "expected": expected, "root": tmp_path}


def _images(out: Path) -> pa.Table:
    return pq.read_table(out / "images.parquet")


def _pixels(out: Path, image_id: str) -> np.ndarray:
    cat = read_catalog(out)
    row = cat.filter(pc.equal(cat["image_id"], image_id)).to_pylist()[0]
    if row["location"] == "dataset":
        return of.scan(out / "dataset", image_id=image_id).export("numpy")
    ids = _images(out)["image_id"].to_pylist()
    return of.scan(out / "images.parquet", row_index=ids.index(image_id)).export("numpy")


def _strip(t: pa.Table) -> pa.Table:
    return t.drop_columns([c for c in ("ingested_at", "duration_s") if c in t.column_names])


def test_build_mixed_sources_with_one_corrupt_file(tree):
    src, out = tree["src"], tree["root"] / "cat"
    res = build(src, out, workers=1, progress=False)
    expected = tree["expected"]
    assert res.n_files == len(expected) + 1
    assert (res.n_ingested, res.n_errors, res.n_skipped) == (len(expected), 1, 0)
    assert res.n_records == len(expected) and res.n_dataset == 0
    cat = read_catalog(out)
    assert cat.num_rows == len(expected) + 1
    bad = cat.filter(pc.equal(cat["status"], "error")).to_pylist()
    assert len(bad) == 1 and bad[0]["urlpath"].endswith("broken.tif")
    assert bad[0]["error"] and bad[0]["error_type"] and bad[0]["location"] is None
    assert res.errors.num_rows == 1 and res.errors["urlpath"][0].as_py().endswith("broken.tif")
    readers = dict(zip(cat["image_id"].to_pylist(), cat["reader"].to_pylist(), strict=True))
    assert readers["zimg"] == "ome-zarr" and readers["stack"] == "numpy" and readers["P1_A1_f0"] == "tiff"
    for iid, arr in expected.items():
        got = _pixels(out, iid)
        assert got.dtype == arr.dtype, iid
        np.testing.assert_array_equal(got, arr, err_msg=iid)
    imgs = _images(out)
    assert sorted(imgs["image_id"].to_pylist()) == sorted(expected)
    assert pc.all(pc.equal(imgs["ome_arrow"].combine_chunks().field("id"), imgs["image_id"])).as_py()
    ok = cat.filter(pc.equal(cat["status"], "ok"))
    assert set(ok["location"].to_pylist()) == {"images.parquet"}
    assert all(len(c) == 32 for c in ok["checksum"].to_pylist())
    # the record's acquisition time is the file's mtime: deterministic
    fr = FileRecord.from_path(src / "P1_A1_f0.tif")
    rec = imgs.filter(pc.equal(imgs["image_id"], "P1_A1_f0"))["ome_arrow"][0].as_py()
    assert abs(rec["acquisition_datetime"].timestamp() - fr.mtime / 1e9) < 1e-5


def test_columns_from_path_and_dataset_layout(tree):
    src, out = tree["src"], tree["root"] / "cat"
    # anything above 100 bytes decoded goes to the dataset
    res = build(src, out, workers=1, progress=False, columns_from_path=REGEX, max_record_bytes=100)
    assert res.n_dataset == len(tree["expected"]) and res.n_records == 0
    cat = read_catalog(out)
    rows = {r["image_id"]: r for r in cat.to_pylist()}
    assert (rows["P2_H12_f5"]["plate"], rows["P2_H12_f5"]["well"]) == ("P2", "H12")
    assert rows["zimg"]["plate"] is None and rows["zimg"]["location"] == "dataset"
    ds = of.open_dataset(out / "dataset")
    assert sorted(ds.image_ids) == sorted(tree["expected"])
    for iid, arr in tree["expected"].items():
        np.testing.assert_array_equal(_pixels(out, iid), arr)
    assert not (out / "images.parquet").exists()
    # records layout: extra columns land in images.parquet too
    out2 = tree["root"] / "cat2"
    build(src, out2, workers=1, progress=False, columns_from_path=REGEX, layout="records")
    imgs = _images(out2)
    pw = zip(imgs["plate"].to_pylist(), imgs["well"].to_pylist(), strict=True)
    got = dict(zip(imgs["image_id"].to_pylist(), pw, strict=True))
    assert got["P1_B1_f2"] == ("P1", "B1") and got["plain2d"] == (None, None)
    with pytest.raises(ValueError, match="named groups"):
        build(src, out2, progress=False, columns_from_path=r"P\d+")
    with pytest.raises(ValueError, match="clash"):
        build(src, out2, progress=False, columns_from_path=r"(?P<status>P\d+)")


def test_resume_touch_and_append(tree):
    src, out = tree["src"], tree["root"] / "cat"
    n = len(tree["expected"])
    build(src, out, workers=1, progress=False, max_record_bytes=1500)  # TIFFs (1920 B) -> dataset
    before = read_catalog(out)
    again = build(src, out, workers=1, progress=False, max_record_bytes=1500)
    assert (again.n_skipped, again.n_ingested, again.n_errors) == (n, 0, 1)  # the broken file is retried
    # touch one record file and one dataset file: both re-ingested, nothing duplicated
    rec_file, ds_file = src / "sub" / "stack.npy", src / "P1_A2_f1.tif"
    for f in (rec_file, ds_file):
        st = os.stat(f)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new = _arr((2, 24, 20), 99)
    tifffile.imwrite(ds_file, new, metadata={"axes": "CYX"})  # new content as well
    res = build(src, out, workers=1, progress=False, max_record_bytes=1500)
    assert (res.n_ingested, res.n_skipped) == (2, n - 2)
    cat = read_catalog(out)
    assert cat.num_rows == before.num_rows
    assert sorted(cat["image_id"].to_pylist()) == sorted(before["image_id"].to_pylist())
    ds = of.open_dataset(out / "dataset")
    assert len(ds.image_ids) == len(set(ds.image_ids))
    np.testing.assert_array_equal(_pixels(out, "P1_A2_f1"), new[None, :, None])
    assert _images(out)["image_id"].to_pylist().count("stack") == 1
    cat = read_catalog(out)
    assert cat.filter(pc.equal(cat["image_id"], "stack"))["location"][0].as_py() == "images.parquet"
    # append: new files only; a clashing stem gets a distinct id
    (src / "more").mkdir()
    tifffile.imwrite(src / "more" / "P3_D4_f9.tif", _arr((2, 8, 8), 7), metadata={"axes": "CYX"})
    np.save(src / "more" / "plain2d.npy", _arr((9, 9), 8))
    res = build(src, out, workers=1, progress=False, max_record_bytes=1500, columns_from_path=REGEX)
    assert (res.n_ingested, res.n_skipped) == (2, n)
    cat = read_catalog(out)
    assert cat.num_rows == before.num_rows + 2
    ids = cat["image_id"].to_pylist()
    assert len(ids) == len(set(ids)) and "P3_D4_f9" in ids
    clash = [i for i in ids if i.startswith("plain2d-")]
    assert len(clash) == 1
    np.testing.assert_array_equal(_pixels(out, clash[0])[0, 0, 0], np.load(src / "more" / "plain2d.npy"))
    assert "plate" in cat.column_names  # a new path column joins older rows as nulls
    # resume=False re-ingests everything without duplicating
    res = build(src, out, workers=1, progress=False, max_record_bytes=1500, resume=False)
    assert res.n_skipped == 0 and read_catalog(out).num_rows == cat.num_rows
    ds = of.open_dataset(out / "dataset")
    assert len(ds.image_ids) == len(set(ds.image_ids))


def test_two_workers_write_what_one_worker_writes(tree):
    src = tree["src"]
    one, two = tree["root"] / "one", tree["root"] / "two"
    r1 = build(src, one, workers=1, progress=False, columns_from_path=REGEX, max_record_bytes=5000)
    r2 = build(src, two, workers=2, progress=False, columns_from_path=REGEX, max_record_bytes=5000, batch_size=2)
    assert r2.workers == 2
    counts = [(r.n_ingested, r.n_records, r.n_dataset, r.n_errors) for r in (r1, r2)]
    assert counts[0] == counts[1]
    assert r1.n_records and r1.n_dataset
    assert _images(one).equals(_images(two))
    assert _strip(read_catalog(one)).equals(_strip(read_catalog(two)))
    for iid in tree["expected"]:
        np.testing.assert_array_equal(_pixels(one, iid), _pixels(two, iid))


def _row_groups(path: Path) -> list[int]:
    md = pq.ParquetFile(path).metadata
    return [md.row_group(g).num_rows for g in range(md.num_row_groups)]


def test_parallel_build_writes_the_serial_files_row_group_for_row_group(tmp_path):
    # many small batches finishing in any order, and row groups of a few rows
    # (records are ~2 KiB): the streamed images.parquet must still equal the
    # serial one, rows in discovery order, cut into the same row groups
    seams = Seams(open_images_writer=functools.partial(ImagesWriter, row_group_bytes=5000))
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        tifffile.imwrite(src / f"P{i % 3}_A{i % 7 + 1}_{i:03d}.tif", _arr((2, 16, 16), 100 + i),
                         metadata={"axes": "CYX"})
    (src / "P9_B1_bad.tif").write_bytes(b"not a tiff")
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = build_with(src, one, seams=seams, workers=1, progress=False, columns_from_path=REGEX, batch_size=3)
    r2 = build_with(src, two, seams=seams, workers=2, progress=False, columns_from_path=REGEX, batch_size=3)
    assert (r1.n_records, r1.n_errors) == (r2.n_records, r2.n_errors) == (40, 1) and r2.workers == 2
    assert _images(one).equals(_images(two))
    assert _row_groups(one / "images.parquet") == _row_groups(two / "images.parquet")
    assert len(_row_groups(one / "images.parquet")) > 5
    assert _images(one)["urlpath"].to_pylist() == sorted(_images(one)["urlpath"].to_pylist())
    assert _strip(read_catalog(one)).equals(_strip(read_catalog(two)))
    for out in (one, two):  # no temporary images file, no record file of a worker left behind
        assert not list(out.glob(".pending-*"))


def test_staging_writes_batches_in_order_whatever_order_they_finish(tmp_path):
    small_groups = functools.partial(ImagesWriter, row_group_bytes=3000)
    rows = [of.records_from_arrays([_arr((8, 8), k)], dim_order="YX", image_ids=[f"im{k}"], progress=False)
            for k in range(7)]

    def batch(ks):
        return pa.table({"ome_arrow": pa.concat_arrays([rows[k] for k in ks]),
                         "urlpath": pa.array([f"/x/{k}" for k in ks]), "_index": pa.array(ks, pa.int64())})

    ref = tmp_path / "ref"
    ref.mkdir()
    rewrite_images(ref / "images.parquet", set(), batch(range(7)).drop_columns(["_index"]),
                   column_name="ome_arrow", compression="zstd", open_writer=small_groups)
    st = Staging(tmp_path, open_writer=small_groups)
    st.add(2, batch([5, 6]))
    st.add(1, None)  # a batch without records (errors, large images)
    assert st.writer is None and set(st.waiting) == {1, 2}  # nothing written before batch 0 is in
    st.add(0, batch([0, 1, 2, 3, 4]))
    assert not st.waiting and st.writer is not None and st.nbytes > 0
    st.add(4, None)
    with pytest.raises(RuntimeError, match="twice"):
        st.add(4, None)
    assert st.commit() and not list(tmp_path.glob(".pending-*"))
    assert _images(tmp_path).equals(_images(ref))
    assert _row_groups(tmp_path / "images.parquet") == _row_groups(ref / "images.parquet")
    # a commit over a gap (batch 3 never finished) writes what waits; a late batch is appended
    st.drop = {"/x/0"}
    st.add(5, batch([6]))
    assert st.commit()
    st.add(3, batch([5]))
    assert st.commit()
    assert _images(tmp_path)["urlpath"].to_pylist() == [f"/x/{k}" for k in (1, 2, 3, 4, 5, 6, 6, 5)]
    st.add(None, batch([0]))
    st.discard()  # uncommitted: the file is left as it was, the temporary file removed
    assert _images(tmp_path).num_rows == 8 and not list(tmp_path.glob(".pending-*"))


_SLOW = {"name": ""}


def _slow_open(path, reader=None):
    if Path(path).name == _SLOW["name"]:
        time.sleep(1.0)  # the first batch finishes last: the others wait in the staging
    return _real_open(path, reader)


def test_ctrl_c_while_batches_are_written_keeps_catalog_and_images_in_step(tree, monkeypatch, request):
    import signal

    # Ctrl-C as in an interactive session: a shell starts background jobs (a CI
    # runner's, say) with SIGINT ignored, and Python then installs no handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    monkeypatch.setenv("OMEFRAME_MP_START", "fork")  # the workers inherit the test's reader
    src, out = tree["src"], tree["root"] / "cat"
    _SLOW["name"] = discover(src)[0].name
    calls = {"n": 0}

    class InterruptedWriter(ImagesWriter):
        def append(self, table):
            calls["n"] += 1
            if calls["n"] == 2:  # batch 1, written after batch 0 came in: its catalog rows are taken already
                os.kill(os.getpid(), signal.SIGINT)
            super().append(table)

    seams = Seams(open_image=_slow_open, open_images_writer=InterruptedWriter)
    with pytest.raises(KeyboardInterrupt):
        build_with(src, out, seams=seams, workers=2, progress=False, batch_size=2, max_record_bytes=5000)
    assert calls["n"] >= 2
    cat = read_catalog(out)
    in_images = cat.filter(pc.equal(cat["location"], "images.parquet"))
    assert in_images.num_rows >= 2
    assert sorted(_images(out)["urlpath"].to_pylist()) == sorted(in_images["urlpath"].to_pylist())
    assert not list(out.glob(".pending-*")) and not (out / LOCK_NAME).exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    res = build(src, out, workers=1, progress=False, max_record_bytes=5000)
    assert res.n_skipped == cat["status"].to_pylist().count("ok")  # what was committed is not redone
    assert read_catalog(out).num_rows == len(tree["expected"]) + 1
    assert sorted(_images(out)["urlpath"].to_pylist()) == sorted(set(_images(out)["urlpath"].to_pylist()))


def _crashing_open(path, reader=None):
    if Path(path).name == "P1_A2_f1.tif":
        os._exit(3)  # a reader segfault, as far as the pool can tell
    return _real_open(path, reader)


_real_open = open_image


def test_a_crashing_worker_costs_only_its_file(tree, monkeypatch):
    monkeypatch.setenv("OMEFRAME_MP_START", "fork")  # the workers inherit the test's reader
    out = tree["root"] / "cat"
    res = build_with(tree["src"], out, seams=Seams(open_image=_crashing_open), workers=2, progress=False, batch_size=3)
    cat = read_catalog(out)
    errs = {r["urlpath"].rsplit("/", 1)[-1]: r["error_type"] for r in cat.to_pylist() if r["status"] == "error"}
    assert errs == {"P1_A2_f1.tif": "WorkerCrashed", "broken.tif": errs["broken.tif"]}
    assert res.n_ingested == len(tree["expected"]) - 1


def test_on_error_raise_and_lock(tree):
    src, out = tree["src"], tree["root"] / "cat"
    with pytest.raises(CatalogError, match="broken.tif"):
        build(src, out, workers=1, progress=False, on_error="raise")
    cat = read_catalog(out)  # what succeeded before the failure is committed
    assert "error" in cat["status"].to_pylist()
    assert not (out / LOCK_NAME).exists()
    (out / LOCK_NAME).write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(CatalogError, match="being written"):
        build(src, out, workers=1, progress=False)
    (out / LOCK_NAME).write_text("999999999")  # stale: taken over
    build(src, out, workers=1, progress=False)
    with pytest.raises(ValueError, match="layout"):
        build(src, out, layout="tiles", progress=False)
    with pytest.raises(ValueError, match="no image files"):
        build(tree["root"] / "src" / "nothing-*.tif", out, progress=False)


def test_discover_globs_dirs_and_exclusions(tree):
    src = tree["src"]
    out = src / "catalog-out"  # inside the source tree: never ingested
    out.mkdir()
    tifffile.imwrite(out / "junk.tif", _arr((4, 4), 1))
    (src / ".hidden.tif").write_bytes(b"x")
    found = [p.name for p in discover(src, exclude=out)]
    assert "junk.tif" not in found and ".hidden.tif" not in found and "notes.txt" not in found
    assert "zimg.ome.zarr" in found and "0" not in found  # a store is one entry
    found = sorted(p.name for p in discover(str(src / "**" / "P2_*.tif")))
    assert found == ["P2_A1_f3.tif", "P2_C3_f4.tif", "P2_H12_f5.tif"]
    assert [p.name for p in discover([src / "plain2d.npy", src / "plain2d.npy"])] == ["plain2d.npy"]
    assert [p.name for p in discover(src / "missing.tif")] == ["missing.tif"]  # becomes an error row
    # one function names every kind: files, stores, and folders that are walked
    kinds = {p.name: detect_reader(p) for p in (src / "sub", src / "zimg.ome.zarr", src / "notes.txt",
                                                src / "plain2d.npy", src / "P1_A1_f0.tif")}
    assert kinds == {"sub": "directory", "zimg.ome.zarr": "ome-zarr", "notes.txt": "unknown",
                     "plain2d.npy": "numpy", "P1_A1_f0.tif": "tiff"}


def test_file_record_round_trips(tree, tmp_path):
    f = tree["src"] / "P1_A1_f0.tif"
    rec = FileRecord.from_path(f, image_id="P1_A1_f0")
    d = rec.to_record()
    assert set(d) == {"urlpath", "size", "mtime", "checksum", "reader", "spec_version", "image_id"}
    assert d["size"] == f.stat().st_size and d["mtime"] == f.stat().st_mtime_ns and d["reader"] == "tiff"
    assert FileRecord.from_obj(d) == rec
    assert FileRecord.from_obj(rec) is rec
    assert FileRecord.from_obj(str(f)).same_file(rec)
    assert rec.to_record(image_id="other", plate="P1")["plate"] == "P1"
    # through Arrow (timestamp[ns, UTC]) and back, exactly
    t = records_to_table([rec])
    assert t.schema.field("mtime").type == pa.timestamp("ns", tz="UTC")
    assert records_from_table(t) == [rec]
    # a catalog row works too (the mtime is exact when read as int64 or pandas Timestamp)
    out = tree["root"] / "cat"
    build(tree["src"], out, workers=1, progress=False)
    row = read_catalog(out).filter(pc.equal(read_catalog(out)["image_id"], "P1_A1_f0"))
    assert records_from_table(row)[0].same_file(rec)
    assert FileRecord.from_obj({**d, "mtime": rec.mtime / 1e9}).mtime == pytest.approx(rec.mtime, abs=1000)
    with pytest.raises(ValueError, match="missing"):
        FileRecord.from_obj({"urlpath": "x"})
    with pytest.raises(TypeError):
        FileRecord.from_obj(3)
    # checksum: content-sensitive, edges of big files, directory listings
    g = tmp_path / "g.bin"
    g.write_bytes(b"a" * (3 << 20))
    c1 = file_checksum(g)
    with open(g, "r+b") as fh:
        fh.seek((3 << 20) - 10)
        fh.write(b"b")
    assert file_checksum(g) != c1
    z = tree["src"] / "zimg.ome.zarr"
    zc = file_checksum(z)
    assert FileRecord.from_path(z).reader == "ome-zarr" and FileRecord.from_path(z).size > 0
    shutil.copytree(z, tmp_path / "copy.ome.zarr")
    assert file_checksum(tmp_path / "copy.ome.zarr") == zc


def test_checkpoints_and_crash_recovery_never_duplicate(tree):
    src, out = tree["src"], tree["root"] / "cat"
    ref = tree["root"] / "ref"
    build(src, ref, workers=1, progress=False, max_record_bytes=1500)
    # checkpoint after every batch of one file
    every_batch = Seams(checkpoint_min_bytes=1)
    build_with(src, out, seams=every_batch, workers=1, progress=False, max_record_bytes=1500, batch_size=1)
    assert _images(out).equals(_images(ref))
    f = src / "sub" / "stack.npy"
    np.save(f, _arr((5, 16, 18), 77, np.uint8))
    build_with(src, out, seams=every_batch, workers=1, progress=False, max_record_bytes=1500, batch_size=1)
    ids = _images(out)["image_id"].to_pylist()
    assert sorted(ids) == sorted(_images(ref)["image_id"].to_pylist())
    np.testing.assert_array_equal(_pixels(out, "stack")[0, 0], np.load(f))
    # a crash after images.parquet and the dataset were written but before the
    # catalog commit: the next build re-ingests those files, replacing (not
    # duplicating) their rows and dataset images
    f2 = src / "sub" / "P2_C3_f4.tif"
    tifffile.imwrite(f2, _arr((2, 24, 20), 78), metadata={"axes": "CYX"})
    np.save(f, _arr((5, 16, 18), 79, np.uint8))
    def boom(*a, **k):
        raise OSError("disk full")

    full_disk = Seams(checkpoint_min_bytes=1 << 40, write_catalog=boom)
    with pytest.raises(OSError):
        build_with(src, out, seams=full_disk, workers=1, progress=False, max_record_bytes=1500)
    res = build(src, out, workers=1, progress=False, max_record_bytes=1500)
    assert res.n_ingested == 2
    assert sorted(_images(out)["image_id"].to_pylist()) == sorted(ids)
    ds = of.open_dataset(out / "dataset")
    assert sorted(ds.image_ids) == sorted(set(ds.image_ids))
    np.testing.assert_array_equal(_pixels(out, "P2_C3_f4")[0, :, 0], tifffile.imread(f2))
    np.testing.assert_array_equal(_pixels(out, "stack")[0, 0], np.load(f))
    assert not (out / LOCK_NAME).exists()


def test_interrupted_build_keeps_its_progress(tree):
    src, out = tree["src"], tree["root"] / "cat"
    calls = {"n": 0}

    def ctrl_c_at_the_fifth_file(path, reader=None):
        calls["n"] += 1
        if calls["n"] == 5:  # the first file of the third batch: two batches (4 files) are in
            raise KeyboardInterrupt
        return open_image(path, reader)

    with pytest.raises(KeyboardInterrupt):
        build_with(src, out, seams=Seams(open_image=ctrl_c_at_the_fifth_file), workers=1, progress=False,
                   batch_size=2)
    done = read_catalog(out).num_rows
    assert done == 4 and not list(out.glob(".pending-*")) and not (out / LOCK_NAME).exists()
    res = build(src, out, workers=1, progress=False)
    assert res.n_skipped == 4 and read_catalog(out).num_rows == len(tree["expected"]) + 1
