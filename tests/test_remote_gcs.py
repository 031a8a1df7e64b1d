"""``gs://`` against a Google Cloud Storage emulator on the loopback address (the ``gcs`` fixture).

GCS reads go through gcsfs, whose ``cat_file`` takes no per-request
condition: an open table pins the version its first HEAD saw, and each batch
of range reads is followed by one HEAD comparing it (see
``omeframe.storage.remote``). These tests run that path against a server.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

import omeframe


def _crops(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 2, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_tables_on_gcs_write_read_and_take(gcs, fmt) -> None:  # type: ignore[no-untyped-def]
    url, opts = gcs
    crops = _crops(300, 1)
    path = f"{url}/cells.{fmt}"
    assert omeframe.write_table(path, crops, dim_order="CYX", columns={"area": np.arange(300.0)},
                                storage_options=opts) == path
    rows = [299, 0, 150]
    got = omeframe.read_table(path, rows=rows, storage_options=opts)
    assert got["area"].to_pylist() == [299.0, 0.0, 150.0]
    np.testing.assert_array_equal(omeframe.to_numpy_stack(got["ome_arrow"], dims="CYX"), crops[rows])
    t = omeframe.open_table(path, storage_options=opts)
    np.testing.assert_array_equal(t.to_numpy(rows), crops[rows])
    np.testing.assert_array_equal(t.to_numpy(), crops)


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_a_gcs_table_held_open_while_its_object_is_overwritten_never_reads_the_new_object(  # type: ignore[no-untyped-def]
        gcs, fmt, default_cache) -> None:
    """No If-Match through gcsfs: the HEAD after each batch of reads finds the new version and refuses."""
    url, opts = gcs
    path = f"{url}/held.{fmt}"
    old, new = _crops(20_000, 2), _crops(20_000, 3)  # Vortex: rows 17,000 on sit in a split not read yet
    omeframe.write_table(path, old, dim_order="CYX", columns={"area": np.arange(20_000) * 0.5}, storage_options=opts)
    t = omeframe.open_table(path, storage_options=opts)
    np.testing.assert_array_equal(t.to_numpy([0, 5]), old[[0, 5]])
    omeframe.write_table(path, new, dim_order="CYX", columns={"area": np.arange(20_000) * 2.0}, storage_options=opts)
    with pytest.raises(omeframe.FileChangedError, match="overwritten") as err:
        t.read(["area"])  # never read before: its bytes would be the new object's
    assert err.value.filename == path
    np.testing.assert_array_equal(t.to_numpy([0, 5]), old[[0, 5]])  # read before: the old version's
    np.testing.assert_array_equal(omeframe.open_table(path, storage_options=opts).to_numpy([17_000]), new[[17_000]])


def test_a_catalog_of_a_gcs_prefix_published_to_gcs(gcs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Inputs listed and read from the bucket (ETags pinned), the catalog published under its lock."""
    import gcsfs

    from omeframe.catalog.commit import CatalogError

    url, opts = gcs
    fs = gcsfs.GCSFileSystem(**opts)
    for i in range(3):
        local = tmp_path / f"img{i}.tif"
        tifffile.imwrite(local, np.full((2, 32, 32), i, np.uint16))
        fs.put_file(os.fspath(local), f"{url[5:]}/imgs/img{i}.tif")
    out = f"{url}/out/imgs.catalog"
    result = omeframe.catalog.build(f"{url}/imgs", out, storage_options=opts, workers=1, progress=False)
    assert (result.n_files, result.n_ingested, result.n_errors) == (3, 3, 0)
    rows = omeframe.catalog.read_catalog(out, storage_options=opts).to_pylist()
    assert sorted(r["urlpath"] for r in rows) == [f"{url}/imgs/img{i}.tif" for i in range(3)]
    for r in rows:
        assert r["status"] == "ok" and r["checksum"].startswith("etag:"), r
        assert (r["shape"], r["dtype"]) == ([1, 1, 2, 32, 32], "uint16"), r  # a plain TIFF's pages are Z
    images = omeframe.read_table(f"{out}/images.parquet", storage_options=opts)
    stack = omeframe.to_numpy_stack(images["ome_arrow"], dims="ZYX")
    ids = [int(rec["id"][-1]) for rec in images["ome_arrow"].to_pylist()]  # img0 ... img2, in any order
    np.testing.assert_array_equal(stack, np.stack([np.full((2, 32, 32), i, np.uint16) for i in ids]))
    assert sorted(ids) == [0, 1, 2]
    fs.invalidate_cache()
    assert not fs.exists(f"{out[5:]}/.omeframe-catalog.lock")  # released
    fs.pipe_file(f"{out[5:]}/.omeframe-catalog.lock", b'{"token": "t", "host": "h", "pid": 7, "started": "s"}')
    with pytest.raises(CatalogError, match=r"another build is writing the catalog .*pid 7"):
        omeframe.catalog.build(f"{url}/imgs", out, storage_options=opts, workers=1, progress=False)


def test_a_dataset_on_gcs_commits_appends_and_reads(gcs) -> None:  # type: ignore[no-untyped-def]
    url, opts = gcs
    slide = (np.arange(256 * 256, dtype=np.uint32).reshape(256, 256) % 65521).astype(np.uint16)
    ds = omeframe.write_dataset(slide, f"{url}/ds", image_ids=["s1"], chunk_shape=(1, 64, 64), storage_options=opts)
    ds.append(slide[::-1].copy(), image_ids=["s2"])
    again = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    assert again.generation == 2 and sorted(again.image_ids) == ["s1", "s2"]
    np.testing.assert_array_equal(again.scan("s2").select(y=(10, 90), x=(30, 200)).export("numpy")[0, 0, 0],
                                  slide[::-1][10:90, 30:200])
    checked = again.verify(collect=True)  # every chunk's CRC, read back from the store
    assert (checked["images"], checked["chunks"], checked["damaged"]) == (2, 32, [])


def test_a_gcs_failure_gcsfs_already_retried_is_reported_with_its_status_not_retried_again() -> None:
    from gcsfs.retry import HttpError

    from omeframe.errors import RemoteStorageError
    from omeframe.storage import remote

    calls = []

    def failing() -> None:
        calls.append(1)
        raise HttpError({"code": 503, "message": "backend unavailable"})

    stats = remote.RequestStats()
    with pytest.raises(RemoteStorageError, match=r"HTTP 503; gave up after the client's own retries") as err:
        remote._call("GET", "gs://b/k", failing, stats)
    assert err.value.status == 503 and len(calls) == 1 and stats.snapshot()["retries"] == 0

    def refused() -> None:
        raise HttpError({"code": 400, "message": "bad"})

    with pytest.raises(RemoteStorageError, match=r"HTTP 400; the request is not valid"):
        remote._call("GET", "gs://b/k", refused, None)
