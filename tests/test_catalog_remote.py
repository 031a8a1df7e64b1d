"""Catalogs of object-store folders: ``catalog.build("s3://bucket/prefix", out, storage_options=...)``.

Against moto's S3 server on loopback behind the counting proxy (tests/s3server.py)
and fsspec's ``memory://``: a prefix with TIFFs, ``.npy`` files, an OME-Zarr
store and a non-image object is listed once and ingested with ranged reads;
resume reads nothing of unchanged objects (counted on the server) and
re-ingests a rewritten one; missing keys, missing buckets and refused
listings are reported naming the URL; two worker processes write what one
writes; an output URL is refused with what to do instead.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.catalog import CatalogError, build, discover, open_image, read_catalog
from omeframe.catalog.build import Seams, build_with
from omeframe.catalog.objects import RemoteInput
from omeframe.model.errors import RemoteStorageError
from omeframe.storage.remote import RemoteStore

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")


def _arr(shape, seed, dtype=np.uint16):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(dtype)


def _tiff_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, a, metadata={"axes": "CYX"}, tile=(16, 16))
    return buf.getvalue()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _put_ome_zarr(store: RemoteStore, rel: str, arr: np.ndarray, tmp: Path) -> None:
    """Write a small OME-Zarr 0.4 store locally and upload its files under ``rel``."""
    local = tmp / "z.ome.zarr"
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    g = zarr.open_group(str(local), mode="w", zarr_format=2)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}]
    z = zarr.create_array(store=str(local), name="0", shape=arr.shape, chunks=(1, 16, 16), dtype=arr.dtype,
                          zarr_format=2)
    z[:] = arr
    for f in sorted(local.rglob("*")):
        if f.is_file():
            store.put(f"{rel}/{f.relative_to(local).as_posix()}", f.read_bytes())


def _fill(store: RemoteStore, tmp: Path) -> dict[str, np.ndarray]:
    """plates/: 3 TIFFs (one in sub/), 2 .npy, 1 OME-Zarr, a notes.txt and a hidden TIFF."""
    expected: dict[str, np.ndarray] = {}
    for i, name in enumerate(["P1_A1", "P1_A2", "sub/P2_B1"]):
        a = _arr((2, 40, 36), i)
        store.put(f"plates/{name}.tif", _tiff_bytes(a))
        expected[name.rsplit("/", 1)[-1]] = a[None, :, None]
    a = _arr((3, 20, 24), 7, np.uint8)
    store.put("plates/stack.npy", _npy_bytes(a))
    expected["stack"] = a[None, None]
    rgb = _arr((12, 10, 3), 8, np.uint8)
    store.put("plates/sub/rgb.npy", _npy_bytes(rgb))
    expected["rgb"] = rgb.transpose(2, 0, 1)[None, :, None]
    z = _arr((2, 24, 20), 9)
    _put_ome_zarr(store, "plates/zimg.ome.zarr", z, tmp)
    expected["zimg"] = z[None, :, None]
    store.put("plates/notes.txt", b"not an image")
    store.put("plates/.trash/old.tif", b"hidden")
    return expected


def _pixels(out: Path, image_id: str) -> np.ndarray:
    cat = read_catalog(out)
    row = cat.filter(pc.equal(cat["image_id"], image_id)).to_pylist()[0]
    if row["location"] == "dataset":
        return of.scan(out / "dataset", image_id=image_id).export("numpy")
    ids = pq.read_table(out / "images.parquet", columns=["image_id"])["image_id"].to_pylist()
    return of.scan(out / "images.parquet", row_index=ids.index(image_id)).export("numpy")


def _check(out: Path, expected: dict[str, np.ndarray]) -> None:
    for iid, arr in expected.items():
        got = _pixels(out, iid)
        assert got.dtype == arr.dtype and np.array_equal(got, arr), iid


def test_bucket_prefix_listed_once_read_by_ranges_and_resumed(bucket, tmp_path):
    url, opts, server = bucket
    store = RemoteStore(url, opts)
    expected = _fill(store, tmp_path)
    bname = url.split("://", 1)[1]
    out = tmp_path / "cat"
    server.counts.reset()
    found = discover(f"{url}/plates", storage_options=opts)
    assert server.counts.requests() == 1  # one listing of the prefix, no request per object
    assert [i.name for i in found] == ["P1_A1.tif", "P1_A2.tif", "stack.npy", "P2_B1.tif", "rgb.npy",
                                       "zimg.ome.zarr"]
    res = build(f"{url}/plates", out, workers=1, progress=False, storage_options=opts)
    assert (res.n_files, res.n_ingested, res.n_errors) == (len(expected), len(expected), 0)
    cat = read_catalog(out)
    urls = cat["urlpath"].to_pylist()
    assert urls == sorted(urls) and all(u.startswith(f"{url}/plates/") for u in urls)
    assert not any(u.endswith((".txt", "old.tif")) for u in urls)
    readers = dict(zip(cat["image_id"].to_pylist(), cat["reader"].to_pylist(), strict=True))
    assert readers == {"P1_A1": "tiff", "P1_A2": "tiff", "P2_B1": "tiff", "stack": "numpy", "rgb": "numpy",
                       "zimg": "ome-zarr"}
    checks = dict(zip(cat["image_id"].to_pylist(), cat["checksum"].to_pylist(), strict=True))
    assert checks["P1_A1"].startswith("etag:") and checks["zimg"].startswith("listing:")
    assert checks["P1_A1"] != checks["P1_A2"]
    sizes = dict(zip(cat["image_id"].to_pylist(), cat["size"].to_pylist(), strict=True))
    assert sizes["stack"] == len(_npy_bytes(expected["stack"][0, 0]))
    _check(out, expected)

    # resume: one listing, no object read at all
    server.counts.reset()
    res2 = build(f"{url}/plates", out, workers=1, progress=False, storage_options=opts)
    assert (res2.n_skipped, res2.n_ingested, res2.n_errors) == (len(expected), 0, 0)
    assert server.counts.requests() == 1  # the listing
    assert server.counts.requests(f"{bname}/plates/") == 0

    # a rewritten object is re-ingested under its id, the others are not read
    new = _arr((2, 40, 36), 99)
    store.put("plates/P1_A2.tif", _tiff_bytes(new))
    server.counts.reset()
    res3 = build(f"{url}/plates", out, workers=1, progress=False, storage_options=opts)
    assert (res3.n_skipped, res3.n_ingested) == (len(expected) - 1, 1)
    touched = {p.split("/", 2)[-1] for p in server.counts.by_path() if p.startswith(f"/{bname}/")}
    assert touched == {"plates/P1_A2.tif"}
    cat3 = read_catalog(out)
    assert cat3.num_rows == len(expected) and sorted(cat3["urlpath"].to_pylist()) == urls
    _check(out, {**expected, "P1_A2": new[None, :, None]})


REPLACEMENT = _arr((2, 40, 36), 98)


def _replaced_after_listing(path, reader=None):
    """Opens an input, after another writer replaced ``P1_A2.tif`` (once: while it is still the one listed)."""
    if isinstance(path, RemoteInput) and path.name == "P1_A2.tif":
        base, name = path.url.rsplit("/", 1)
        store, new = RemoteStore(base, path.storage_options), _tiff_bytes(REPLACEMENT)
        if store.cat(name) != new:
            store.put(name, new)  # same size, other pixels
    return open_image(path, reader)


@pytest.mark.parametrize("layout", ["records", "dataset"])
def test_an_object_replaced_after_the_listing_is_not_read_as_the_one_listed(bucket, tmp_path, layout):
    url, opts, server = bucket
    store = RemoteStore(url, opts)
    old = _arr((2, 40, 36), 1)
    store.put("replaced/P1_A1.tif", _tiff_bytes(_arr((2, 40, 36), 0)))
    store.put("replaced/P1_A2.tif", _tiff_bytes(old))
    out = tmp_path / "cat"
    server.counts.reset()
    res = build_with(f"{url}/replaced", out, seams=Seams(open_image=_replaced_after_listing), workers=1,
                     progress=False, layout=layout, storage_options=opts)
    rows = {r["image_id"]: r for r in read_catalog(out).to_pylist()}
    assert rows["P1_A2"]["error_type"] == "FileChangedError", rows["P1_A2"]["error"]
    assert "P1_A2.tif" in rows["P1_A2"]["error"] and rows["P1_A1"]["status"] == "ok"
    assert (res.n_ingested, res.n_errors) == (1, 1)
    assert server.counts.requests(method="HEAD") == 0  # the listing told each object's size and ETag
    again = build(f"{url}/replaced", out, workers=1, progress=False, layout=layout, storage_options=opts)
    assert (again.n_ingested, again.n_errors) == (1, 0)  # read again, as the object it is now
    assert _pixels(out, "P1_A2").reshape(REPLACEMENT.shape).tolist() == REPLACEMENT.tolist()
    assert read_catalog(out).num_rows == 2


def test_glob_missing_key_and_workers_2_match_workers_1(bucket, tmp_path):
    url, opts, server = bucket
    store = RemoteStore(url, opts)
    expected = _fill(store, tmp_path)
    sources = [f"{url}/plates/**/*.tif", f"{url}/plates/stack.npy", f"{url}/plates/gone.tif"]
    one = build(sources, tmp_path / "one", workers=1, progress=False, storage_options=opts)
    two = build(sources, tmp_path / "two", workers=2, batch_size=1, progress=False, storage_options=opts)
    for res in (one, two):
        assert (res.n_ingested, res.n_errors) == (4, 1)
        err = res.errors.to_pylist()[0]
        assert err["urlpath"] == f"{url}/plates/gone.tif" and err["error_type"] == "FileNotFoundError"
        assert f"{url}/plates/gone.tif" in err["error"]
    keep = ["image_id", "urlpath", "size", "mtime", "checksum", "reader", "status", "shape", "dtype"]
    assert read_catalog(tmp_path / "one").select(keep).equals(read_catalog(tmp_path / "two").select(keep))
    assert read_catalog(tmp_path / "two")["urlpath"].to_pylist()[:3] == [
        f"{url}/plates/P1_A1.tif", f"{url}/plates/P1_A2.tif", f"{url}/plates/sub/P2_B1.tif"]
    _check(tmp_path / "two", {k: expected[k] for k in ("P1_A1", "P1_A2", "P2_B1", "stack")})


def test_missing_bucket_and_refused_listing_name_the_url(bucket, tmp_path):
    url, opts, server = bucket
    with pytest.raises(FileNotFoundError, match="s3://no-such-bucket-c1/plates.*does not exist"):
        build("s3://no-such-bucket-c1/plates", tmp_path / "c", progress=False, storage_options=opts)
    RemoteStore(url, opts).put("plates/a.npy", _npy_bytes(_arr((4, 4), 1)))
    server.faults.status(403)
    with pytest.raises(RemoteStorageError, match=rf"{url}/plates.*HTTP 403.*credentials"):
        build(f"{url}/plates", tmp_path / "c", progress=False, storage_options=opts)
    assert not (tmp_path / "c" / "catalog.parquet").exists()


def test_memory_store_without_etag_uses_the_edge_checksum(tmp_path):
    store = RemoteStore("memory://omeframe-catalog-t1")
    a = _arr((30, 26), 3, np.float32)
    store.put("in/a.npy", _npy_bytes(a))
    store.put("in/b.npy", _npy_bytes(a + 1))
    out = tmp_path / "cat"
    res = build("memory://omeframe-catalog-t1/in", out, workers=1, progress=False)
    assert res.n_ingested == 2
    local = tmp_path / "a.npy"
    local.write_bytes(_npy_bytes(a))
    cat = read_catalog(out)
    assert cat["checksum"][0].as_py() == of.catalog.file_checksum(local)  # same bytes, same checksum
    assert build("memory://omeframe-catalog-t1/in", out, workers=1, progress=False).n_skipped == 2
    store.put("in/b.npy", _npy_bytes(a + 2))  # same size; its mtime and bytes change
    res3 = build("memory://omeframe-catalog-t1/in", out, workers=1, progress=False)
    assert (res3.n_skipped, res3.n_ingested) == (1, 1)
    np.testing.assert_array_equal(_pixels(out, "b")[0, 0, 0], a + 2)


def test_inputs_pickle_without_showing_credentials():
    item = RemoteInput(url="s3://b/a.tif", reader="tiff", size=3, mtime=1, checksum="etag:x",
                       storage_options={"secret": "hunter2"})
    assert "hunter2" not in repr(item)
    back = pickle.loads(pickle.dumps(item))
    assert back == item and back.storage_options == {"secret": "hunter2"}


def test_file_urls_and_local_only_options(tmp_path):
    with pytest.raises(ValueError, match="storage_options apply to URLs only"):
        discover(tmp_path, storage_options={"anon": True})
    np.save(tmp_path / "b.npy", _arr((4, 4), 2))
    res = build(f"file://{tmp_path}/b.npy", f"file://{tmp_path}/local.catalog", workers=1, progress=False)
    assert res.n_ingested == 1 and (tmp_path / "local.catalog" / "catalog.parquet").is_file()
    assert read_catalog(tmp_path / "local.catalog")["urlpath"].to_pylist() == [(tmp_path / "b.npy").as_posix()]


def test_catalog_written_to_a_bucket(bucket, tmp_path):
    url, opts, server = bucket
    store = RemoteStore(url, opts)
    expected = _fill(store, tmp_path)
    cat_url = f"{url}/out/plates.catalog"
    kw = {"progress": False, "storage_options": opts, "max_record_bytes": 4000}  # the TIFFs go to dataset/
    server.counts.reset()
    res = build(f"{url}/plates", cat_url, workers=2, **kw)
    assert (res.n_ingested, res.n_dataset, res.n_errors) == (len(expected), 3, 0)
    assert res.out == cat_url and sorted(res.paths) == ["catalog", "dataset", "images"]
    puts = [p for m, p, *_ in server.counts.log if m == "PUT"]
    assert puts[-1].endswith("/plates.catalog/catalog.parquet")  # the commit point is written last
    assert not store.exists("out/plates.catalog/.omeframe-catalog.lock")  # released
    cat = read_catalog(cat_url, storage_options=opts)
    assert cat.num_rows == len(expected) and res.catalog().equals(cat)
    for iid, arr in expected.items():
        row = cat.filter(pc.equal(cat["image_id"], iid)).to_pylist()[0]
        if row["location"] == "dataset":
            got = of.scan(f"{cat_url}/dataset", image_id=iid, storage_options=opts).export("numpy")
        else:
            ids = of.open_table(f"{cat_url}/images.parquet", storage_options=opts).read(
                columns=["image_id"])["image_id"].to_pylist()
            got = of.scan(f"{cat_url}/images.parquet", row_index=ids.index(iid), storage_options=opts).export("numpy")
        assert np.array_equal(got, arr), iid

    server.counts.reset()  # resume: no input read, nothing written but the lock object
    assert build(f"{url}/plates", cat_url, workers=1, **kw).n_skipped == len(expected)
    lock = f"/{url[5:]}/out/plates.catalog/.omeframe-catalog.lock"
    assert [p for m, p, *_ in server.counts.log if m == "PUT"] == [lock]
    assert server.counts.requests(f"{url[5:]}/plates/") == 0

    new = _arr((2, 40, 36), 77)
    store.put("plates/P1_A2.tif", _tiff_bytes(new))
    again = build(f"{url}/plates", cat_url, workers=1, **kw)
    assert (again.n_ingested, again.n_skipped) == (1, len(expected) - 1)
    ds = of.open_dataset(f"{cat_url}/dataset", storage_options=opts)
    assert sorted(ds.image_ids) == ["P1_A1", "P1_A2", "P2_B1"]  # replaced, not duplicated
    got = of.scan(f"{cat_url}/dataset", image_id="P1_A2", storage_options=opts).export("numpy")
    assert np.array_equal(got, new[None, :, None])

    # a second build while one holds the lock: refused, nothing written
    store.put("out/plates.catalog/.omeframe-catalog.lock", b'{"token": "t", "host": "h", "pid": 7, "started": "s"}')
    before = store.stat("out/plates.catalog/catalog.parquet")
    store.put("plates/P1_A1.tif", _tiff_bytes(new))
    with pytest.raises(CatalogError, match=r"another build is writing the catalog .*pid 7.*delete .*\.omeframe-ca"):
        build(f"{url}/plates", cat_url, workers=1, **kw)
    assert store.stat("out/plates.catalog/catalog.parquet") == before


def test_local_files_into_a_bucket_with_the_outputs_options(bucket, tmp_path):
    url, opts, server = bucket
    np.save(tmp_path / "a.npy", _arr((5, 6), 4))
    res = build(tmp_path / "a.npy", f"{url}/c.catalog", workers=1, progress=False, storage_options=opts)
    assert res.n_ingested == 1
    assert read_catalog(f"{url}/c.catalog", storage_options=opts)["urlpath"].to_pylist() == [
        (tmp_path / "a.npy").as_posix()]
    with pytest.raises(FileNotFoundError, match="holds no catalog"):
        read_catalog(f"{url}/nothing.catalog", storage_options=opts)


def test_cli_ingest_of_a_bucket(bucket, tmp_path, capsys):
    from omeframe.cli import main

    url, opts, server = bucket
    RemoteStore(url, opts).put("in/P1_A1.npy", _npy_bytes(_arr((6, 7), 2)))
    flags = [f"--storage-option={k}={v}" for k, v in opts.items() if isinstance(v, str)]
    flags.append(f"--storage-option=client_kwargs.region_name={opts['client_kwargs']['region_name']}")
    assert main(["ingest", f"{url}/in", "--out", str(tmp_path / "c"), "--workers", "1", "--no-progress",
                 *flags]) == 0
    assert "1 ingested" in capsys.readouterr().out
    assert read_catalog(tmp_path / "c")["urlpath"].to_pylist() == [f"{url}/in/P1_A1.npy"]


@pytest.mark.parametrize(("shape", "fortran"), [
    ((2, 3, 5, 6), False), ((12, 10, 3), False), ((5, 6), True),           # read with the header
    ((2, 3, 64, 100), False), ((200, 120, 3), False), ((180, 200), True),  # read by ranges
])
def test_remote_npy_reads_its_stacks_by_range(shape, fortran):
    from omeframe.engine.lazy import LazyImage
    from omeframe.formats.array.npy import infer_array_dims
    from omeframe.formats.array.npy_remote import open_remote_npy
    from omeframe.registry import array_source
    from omeframe.storage.remote import STATS

    a = np.arange(int(np.prod(shape)), dtype=">u2").reshape(shape)
    a = np.asfortranarray(a) if fortran else a
    name = f"a-{'x'.join(map(str, shape))}-{fortran}.npy"
    RemoteStore("memory://omeframe-catalog-npy").put(name, _npy_bytes(a))
    src = open_remote_npy(f"memory://omeframe-catalog-npy/{name}")
    before = STATS.snapshot()["ranges"]
    got = LazyImage(src).execute()
    want = LazyImage(array_source(np.ascontiguousarray(a), infer_array_dims(a.shape))).execute()
    assert got.dtype == np.uint16 and np.array_equal(got, want)
    stacks = src.shape[0] * src.shape[1]
    # read with the header (small arrays); else TCZYX-ordered C arrays: one range per (t, c) stack,
    # interleaved / Fortran ones: the payload once
    assert (src._head is not None) == (a.nbytes < 60_000)
    ranges = STATS.snapshot()["ranges"] - before
    assert ranges == (0 if src._head is not None else stacks if src.contiguous else 1)
    assert src.contiguous == (len(shape) != 3 and not fortran)


def test_a_rewritten_object_is_not_served_from_cached_blocks():
    store = RemoteStore("memory://omeframe-catalog-cache")
    store.put("x.bin", b"a" * 100)
    from omeframe.storage.remote import open_remote_file

    f1 = open_remote_file("memory://omeframe-catalog-cache/x.bin")
    assert f1 is not None and f1.read_range(10, 5) == b"aaaaa"
    store.put("x.bin", b"b" * 100)
    f2 = open_remote_file("memory://omeframe-catalog-cache/x.bin")
    assert f2 is not None and f2.read_range(10, 5) == b"bbbbb"


_LOCK_THIEF = "memory://omeframe-catalog-t3/out.catalog"


def _open_and_steal_the_lock(path, reader):  # a Seams.open_image: another build takes the lock over
    from omeframe.catalog.discover import open_image

    RemoteStore(_LOCK_THIEF).put(".omeframe-catalog.lock", b'{"token": "other"}')
    return open_image(path, reader)


def test_a_build_that_lost_its_lock_publishes_nothing():
    import importlib

    build_mod = importlib.import_module("omeframe.catalog.build")
    store = RemoteStore("memory://omeframe-catalog-t3")
    store.put("in/a.npy", _npy_bytes(_arr((4, 4), 1)))
    with pytest.raises(CatalogError, match="no longer this build's"):
        build_mod.build_with("memory://omeframe-catalog-t3/in", _LOCK_THIEF, workers=1, progress=False,
                             seams=build_mod.Seams(open_image=_open_and_steal_the_lock))
    assert store.find("out.catalog").keys() == {"out.catalog/.omeframe-catalog.lock"}  # the other build's
