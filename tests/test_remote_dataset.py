"""Datasets in object storage: open, ROI reads, explain, writes and concurrent appends (moto S3 on loopback)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import omeframe
from omeframe.engine.cache import shared_cache
from omeframe.errors import ConcurrentWriteError, RemoteStorageError


def _image(h: int = 512, w: int = 512) -> np.ndarray:
    return (np.arange(h * w, dtype=np.uint32).reshape(h, w) % 65521).astype(np.uint16)


def test_cold_open_and_roi_in_three_round_trips(bucket) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    img = _image()
    omeframe.write_dataset(img, f"{url}/ds", image_ids=["a"], chunk_shape=(1, 128, 128), storage_options=opts)
    shared_cache().clear()
    server.counts.reset()
    server.faults.latency = 0.03  # keeps concurrent requests overlapping, so rounds are visible
    ds = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    roi = ds.read("a", y=(100, 356), x=(100, 356))
    server.faults.latency = 0.0
    np.testing.assert_array_equal(roi[0, 0, 0], img[100:356, 100:356])
    # round 1: the listing and the latest images index (which carries the manifest);
    # round 2: one coalesced GET for the 9 chunks
    assert server.counts.rounds() == 2, server.counts.log
    gets = [p for m, p, *_ in server.counts.log if m == "GET" and "/chunks/" in p]
    assert len(gets) == 1
    assert server.counts.requests() == 3
    assert not any(p.endswith(".json") for _, p, *_ in server.counts.log), server.counts.log
    before = server.counts.requests()
    np.testing.assert_array_equal(ds.read("a", y=(120, 200), x=(120, 200))[0, 0, 0], img[120:200, 120:200])
    assert server.counts.requests() == before  # warm: the shared cache holds the chunks


def test_framed_chunks_fetch_whole_and_decode_only_the_rows_read(bucket) -> None:  # type: ignore[no-untyped-def]
    from omeframe.engine import codec

    url, opts, server = bucket
    rng = np.random.default_rng(1)
    img = rng.integers(0, 4000, (512, 512), dtype=np.uint16)
    omeframe.write_dataset(img, f"{url}/ds", image_ids=["a"], chunk_shape=(1, 256, 256), frame_bytes=16 << 10,
                           storage_options=opts)  # frames of 32 rows, 8 per chunk
    ds = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    e = ds.entry("a")
    assert e.frame_rows == 32
    shared_cache().clear()
    decoded: list[int] = []
    real = codec.decode_frames

    def counting(data, lengths, *args, **kw):  # type: ignore[no-untyped-def]
        decoded.append(len(lengths))
        return real(data, lengths, *args, **kw)

    import omeframe.formats.dataset.reader as reader_mod

    old = reader_mod.decode_frames
    reader_mod.decode_frames = counting
    try:
        server.counts.reset()
        np.testing.assert_array_equal(ds.read("a", y=(200, 300), x=(10, 500))[0, 0, 0], img[200:300, 10:500])
        # whole chunks travel (one coalesced GET, cached) ...
        assert server.counts.requests() == 1 and server.counts.bytes() >= int(e.lengths.sum())
        # ... but only the frames of rows 200..255 and 0..43 are decoded: 2 + 2 per chunk column
        assert sorted(decoded) == [2, 2, 2, 2], decoded
        before = server.counts.requests()
        np.testing.assert_array_equal(ds.read("a", y=(0, 512), x=(0, 512))[0, 0, 0], img)
        assert server.counts.requests() == before  # the cached chunks serve every other row
    finally:
        reader_mod.decode_frames = old


def test_explain_and_scan_of_a_url(bucket) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    img = _image()
    omeframe.write_dataset(img, f"{url}/ds", image_ids=["a"], chunk_shape=(1, 128, 128), storage_options=opts)
    plan = omeframe.scan(f"{url}/ds", image_id="a", storage_options=opts).select(y=(0, 256), x=(0, 128))
    text = plan.explain()
    assert "requests:  1 concurrent GET" in text and "for 2 chunks" in text and url in text
    np.testing.assert_array_equal(plan.export("numpy")[0, 0, 0], img[:256, :128])


def _race(monkeypatch, ds, names: list[str], retries: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Append one image per name from as many threads, all reaching their commit together."""
    from omeframe.formats.dataset import remote, writer

    barrier = threading.Barrier(len(names), timeout=30)
    real = remote.commit_manifest_remote
    first: set[int] = set()

    def commit(store, manifest, images=None):  # type: ignore[no-untyped-def]
        if threading.get_ident() not in first:  # every writer's first attempt starts from the same base
            first.add(threading.get_ident())
            barrier.wait()
        return real(store, manifest, images)

    monkeypatch.setattr(writer, "commit_manifest_remote", commit)
    results: dict[str, object] = {}

    def append(name: str) -> None:
        try:
            results[name] = ds.append(np.full((32, 32), len(name), np.uint8), image_ids=[name], retries=retries)
        except ConcurrentWriteError as exc:
            results[name] = exc

    threads = [threading.Thread(target=append, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("where", ["s3", "gcs"])
def test_concurrent_appenders_never_lose_images(where, request, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Commits are conditional creates: S3's If-None-Match, GCS's ifGenerationMatch=0 (the emulator)."""
    url, opts = request.getfixturevalue("bucket")[:2] if where == "s3" else request.getfixturevalue("gcs")
    ds = omeframe.write_dataset(_image(64, 64), f"{url}/ds", image_ids=["a"], storage_options=opts)
    with pytest.raises(FileExistsError):
        omeframe.write_dataset(_image(64, 64), f"{url}/ds", image_ids=["z"], storage_options=opts)
    results = _race(monkeypatch, ds, ["b", "cc"], retries=2)
    assert not any(isinstance(r, Exception) for r in results.values()), results
    final = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    assert sorted(final.image_ids) == ["a", "b", "cc"] and final.generation == 3
    np.testing.assert_array_equal(final.read("cc")[0, 0, 0], np.full((32, 32), 2, np.uint8))
    # Without retries the loser gets the conflict, and nothing of it is committed or left behind.
    results = _race(monkeypatch, final, ["d", "ee"], retries=0)
    lost = [n for n, r in results.items() if isinstance(r, ConcurrentWriteError)]
    assert len(lost) == 1 and "committed nothing" in str(results[lost[0]]), results
    now = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    assert now.generation == 4 and lost[0] not in now.image_ids and len(now.image_ids) == 4
    assert len(now.manifest.parts) == 4 and all(now.store.exists(p) for p in now.manifest.parts)
    names = now.store.list("chunks")
    assert len(names) == 4  # the loser's uploaded part was removed again


def test_bad_remote_datasets(bucket) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    with pytest.raises(FileNotFoundError, match="not an omeframe dataset"):
        omeframe.open_dataset(f"{url}/nothing", storage_options=opts)
    with pytest.raises(ValueError, match="unknown URL scheme 'ftp'"):
        omeframe.open_dataset("ftp://host/x")
    with pytest.raises(FileNotFoundError, match=f"no dataset or zarr store at '{url}/nothing'"):
        omeframe.scan(f"{url}/nothing", storage_options=opts)
    omeframe.write_dataset(_image(64, 64), f"{url}/ds", image_ids=["a"], storage_options=opts)
    shared_cache().clear()
    ds = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    server.faults.status(403, 1, match="/chunks/")
    with pytest.raises(RemoteStorageError, match=r"chunks/part-.*HTTP 403"):
        ds.read("a")
    server.faults.status(503, 2, match="/chunks/")
    np.testing.assert_array_equal(ds.read("a")[0, 0, 0], _image(64, 64))
    with pytest.raises(omeframe.errors.UnsupportedFormatError, match="lifecycle rule"):
        ds.gc()
    # A damaged or stale copy of the latest images index is a missed shortcut, never a wrong answer.
    from omeframe.formats.dataset.remote import LATEST_INDEX

    assert ds.store is not None
    ds.store.put(LATEST_INDEX, b"not arrow")
    server.counts.reset()
    again = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    assert again.image_ids == ["a"]
    fetched = [p.rsplit("/", 1)[-1] for m, p, *_ in server.counts.log if m == "GET"]
    assert "0000000001.json" in fetched  # the generation's own manifest
    assert any(n.startswith("images-") and n.endswith(".arrow") for n in fetched), fetched  # the real index


def test_a_stale_latest_index_is_not_used(bucket) -> None:  # type: ignore[no-untyped-def]
    """A copy left behind by an older generation (a writer that stopped between its commit and the
    copy's refresh) is ignored: the listing names the current generation, whose own files are read."""
    from omeframe.formats.dataset.remote import LATEST_INDEX

    url, opts, server = bucket
    ds = omeframe.write_dataset(_image(64, 64), f"{url}/ds", image_ids=["a"], storage_options=opts)
    assert ds.store is not None
    old_copy = ds.store.cat(LATEST_INDEX)
    ds.append(np.full((32, 32), 7, np.uint8), image_ids=["b"])
    ds.store.put(LATEST_INDEX, old_copy)
    server.counts.reset()
    now = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    assert now.generation == 2 and now.image_ids == ["a", "b"]
    np.testing.assert_array_equal(now.read("b")[0, 0, 0], np.full((32, 32), 7, np.uint8))
    fetched = [p.rsplit("/", 1)[-1] for m, p, *_ in server.counts.log if m == "GET"]
    assert "0000000002.json" in fetched, fetched


def test_the_latest_index_is_used_only_when_it_holds_the_checked_images_index(bucket) -> None:  # type: ignore[no-untyped-def]
    """The latest-index shortcut is checked against the CRC the manifest records for the images index."""
    import pyarrow as pa

    from omeframe.formats.dataset.remote import LATEST_INDEX

    url, opts, server = bucket
    ds = omeframe.write_dataset(_image(64, 64), f"{url}/ds", image_ids=["a"], storage_options=opts)
    assert ds.store is not None

    def opened_via_index_copy() -> bool:
        shared_cache().clear()
        server.counts.reset()
        again = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
        assert again.image_ids == ["a"]
        fetched = [p.rsplit("/", 1)[-1] for m, p, *_ in server.counts.log if m == "GET"]
        return not any(n.startswith("images-0") and n.endswith(".arrow") for n in fetched)  # the generation's

    assert opened_via_index_copy()  # the shortcut: one GET for manifest and index
    copy = pa.ipc.open_file(pa.BufferReader(ds.store.cat(LATEST_INDEX))).read_all()
    i = copy.schema.get_field_index("image_id")
    changed = copy.set_column(i, copy.schema.field(i), pa.array(["z"], copy.schema.field(i).type))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, changed.schema) as w:  # well-formed, metadata intact, one value changed
        w.write_table(changed)
    ds.store.put(LATEST_INDEX, sink.getvalue().to_pybytes())
    assert not opened_via_index_copy()  # the checked images index is read instead


def test_a_dataset_without_generations_opens_from_its_manifest_json(bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The layout before ``_manifests/`` (only ``manifest.json``), e.g. an old local dataset uploaded as is."""
    import shutil

    from omeframe.storage.remote import RemoteStore

    url, opts, server = bucket
    img = _image(64, 64)
    omeframe.write_dataset(img, tmp_path / "ds", image_ids=["a"], chunk_shape=(1, 32, 32))
    shutil.rmtree(tmp_path / "ds" / "_manifests")
    store = RemoteStore(url, opts)
    store.fs.put(str(tmp_path / "ds"), f"{store.location.path}/old", recursive=True)
    server.counts.reset()
    ds = omeframe.open_dataset(f"{url}/old", storage_options=opts)
    np.testing.assert_array_equal(ds.read("a")[0, 0, 0], img)
    fetched = [p.rsplit("/", 1)[-1] for m, p, *_ in server.counts.log if m == "GET"]
    assert "manifest.json" in fetched, fetched


def test_tiff_and_ome_zarr_from_s3(bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import tifffile

    from omeframe.storage.remote import RemoteStore

    url, opts, server = bucket
    img = _image(512, 512)
    tifffile.imwrite(tmp_path / "slide.tif", img, tile=(128, 128))
    store = RemoteStore(url, opts)
    store.upload(tmp_path / "slide.tif", "slide.tif")
    server.counts.reset()
    roi = omeframe.scan(f"{url}/slide.tif", storage_options=opts).select(y=(0, 128), x=(128, 256)).export("numpy")
    np.testing.assert_array_equal(roi[0, 0, 0], img[:128, 128:256])
    tile_gets = server.counts.requests("", "GET")
    assert tile_gets <= 3  # the IFD read-ahead block, then the one tile
    ds = omeframe.from_tiff(f"{url}/slide.tif", out=f"{url}/from-tiff", chunk_shape=(1, 256, 256),
                            storage_options=opts)
    np.testing.assert_array_equal(ds.read()[0, 0, 0], img)
    assert ds.where == f"{url}/from-tiff"


def test_ome_zarr_from_s3(bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from omeframe.storage.remote import RemoteStore

    url, opts, server = bucket
    img = _image(256, 256)
    omeframe.scan(img).export("ome-zarr", out=tmp_path / "cells.ome.zarr")
    store = RemoteStore(url, opts)
    store.fs.put(str(tmp_path / "cells.ome.zarr"), f"{store.location.path}/cells.ome.zarr", recursive=True)
    plan = omeframe.scan(f"{url}/cells.ome.zarr", storage_options=opts)
    np.testing.assert_array_equal(plan.select(y=(10, 90), x=(0, 50)).export("numpy")[0, 0, 0], img[10:90, :50])
    rec = omeframe.from_ome_zarr(f"{url}/cells.ome.zarr", storage_options=opts)
    assert omeframe.OMEArrow(rec).shape == (1, 1, 1, 256, 256)


def test_reads_larger_than_the_cache_fetch_each_chunk_once(bucket) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    img = _image(512, 512)
    omeframe.write_dataset(img, f"{url}/ds", image_ids=["a"], chunk_shape=(1, 64, 64), compression=None,
                           storage_options=opts)
    ds = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    old = shared_cache().max_bytes
    try:
        omeframe.set_cache_bytes(128 << 10)  # a quarter of the image
        shared_cache().clear()
        server.counts.reset()
        np.testing.assert_array_equal(ds.read("a")[0, 0, 0], img)
        assert server.counts.bytes() <= img.nbytes * 1.05  # nothing fetched twice
    finally:
        omeframe.set_cache_bytes(old)
