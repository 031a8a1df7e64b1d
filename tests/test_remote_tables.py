"""Record tables in object storage: read/write, takes, DuckDB and Polars over s3:// (moto on loopback)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import omeframe
from omeframe.errors import RemoteStorageError


@pytest.fixture
def table(bucket):  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    crops = np.random.default_rng(0).integers(0, 60000, (32, 2, 256, 256), dtype=np.uint16)  # 8 MiB of pixels
    path = f"{url}/cells.parquet"
    out = omeframe.write_table(path, crops, dim_order="CYX", columns={"well": [f"w{i % 4}" for i in range(32)]},
                               storage_options=opts)
    assert out == path
    server.counts.reset()
    return path, opts, server, crops


def test_read_table_and_from_ome_parquet(table) -> None:  # type: ignore[no-untyped-def]
    path, opts, server, crops = table
    t = omeframe.read_table(path, columns=["well"], storage_options=opts)
    assert t.num_rows == 32 and t["well"][5].as_py() == "w1"
    total = server.counts.bytes()
    server.counts.reset()
    rows = omeframe.read_table(path, rows=[30, 3], storage_options=opts)
    assert rows["well"].to_pylist() == ["w2", "w3"]
    rec = omeframe.from_ome_parquet(path, row_index=30, storage_options=opts)
    np.testing.assert_array_equal(omeframe.OMEArrow(rec).export("numpy")[0, :, 0], crops[30])
    size = server.counts.bytes()
    assert total < size  # the projection read far less than the row-group reads
    img = omeframe.scan(path, row_index=7, storage_options=opts).export("numpy")
    np.testing.assert_array_equal(img[0, :, 0], crops[7])


def test_write_table_never_leaves_half_objects(bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    server.faults.status(403, 1, match="/t.parquet")
    with pytest.raises(RemoteStorageError, match=r"t\.parquet.*HTTP 403"):
        omeframe.write_table(f"{url}/t.parquet", np.zeros((2, 8, 8), np.uint8), storage_options=opts)
    with pytest.raises(FileNotFoundError):
        omeframe.read_table(f"{url}/t.parquet", storage_options=opts)
    omeframe.to_ome_parquet(omeframe.scan(np.ones((8, 8), np.uint8)).data, f"{url}/one.parquet",
                            storage_options=opts)
    rec = omeframe.from_ome_parquet(f"{url}/one.parquet", column_name=None, storage_options=opts)
    assert omeframe.OMEArrow(rec).export("numpy").sum() == 64


def test_duckdb_metadata_query_reads_under_two_percent(table) -> None:  # type: ignore[no-untyped-def]
    duckdb = pytest.importorskip("duckdb")
    path, opts, server, _ = table
    size = omeframe.storage.remote.RemoteStore(path.rsplit("/", 1)[0], opts).size("cells.parquet")
    con = duckdb.connect()
    server.counts.reset()
    omeframe.duckdb.register(con, "cells", path, storage_options=opts)
    got = con.execute("SELECT well, count(*) FROM cells GROUP BY well ORDER BY well").fetchall()
    assert got == [("w0", 8), ("w1", 8), ("w2", 8), ("w3", 8)]
    assert server.counts.bytes() < 0.02 * size, (server.counts.bytes(), size)


def test_duckdb_and_polars_over_a_remote_dataset(bucket) -> None:  # type: ignore[no-untyped-def]
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    url, opts, server = bucket
    omeframe.write_dataset([np.ones((64, 64), np.uint8), np.zeros((32, 32), np.uint8)], f"{url}/ds",
                           image_ids=["a", "b"], chunk_shape=(1, 32, 32), storage_options=opts)
    con = duckdb.connect()
    assert omeframe.duckdb.register(con, "ds", f"{url}/ds", storage_options=opts) == ["ds_images", "ds_chunks"]
    assert con.execute("SELECT count(*) FROM ds_chunks").fetchone() == (5,)
    lf = omeframe.polars.scan(f"{url}/ds", table="chunks", storage_options=opts)
    assert lf.filter(pl.col("max") > 0).select(pl.len()).collect().item() == 4


def test_polars_scan_pushes_projection(table) -> None:  # type: ignore[no-untyped-def]
    pl = pytest.importorskip("polars")
    path, opts, server, _ = table
    size = omeframe.storage.remote.RemoteStore(path.rsplit("/", 1)[0], opts).size("cells.parquet")
    server.counts.reset()
    lf = omeframe.polars.scan(path, storage_options=opts)
    out = lf.filter(pl.col("well") == "w2").select("well").collect()
    assert out.height == 8
    assert server.counts.bytes() < 0.02 * size, (server.counts.bytes(), size)
    assert isinstance(lf.select("well").collect().to_arrow(), pa.Table)


def _writer_and_reader(bucket, client, fmt, monkeypatch):  # type: ignore[no-untyped-def]
    """``(write(crops, area), read_url, read_options, conditional)`` for one read client of a held-open table.

    ``s3 obstore`` and ``s3 s3fs`` read the S3 server through either client, ``http`` reads the same
    objects as public HTTP resources (If-Match on a strong ETag), ``http ignoring If-Match`` through
    a proxy that drops the header (the probe finds that out: reads are checked by a HEAD after each
    batch), ``memory`` is fsspec's in-memory store, which has no conditional GET (HEAD checks too).
    """
    from omeframe.storage import obstore_reads, remote

    url, opts, server = bucket
    monkeypatch.setattr(remote, "_IF_MATCH_HONOURED", {})  # learnt afresh for this test's server
    monkeypatch.setattr(server.faults, "ignore_if_match", client == "http ignoring If-Match")
    monkeypatch.setenv(obstore_reads.CLIENT_ENV, "fsspec" if client == "s3 s3fs" else "auto")
    obstore_reads._CACHE.clear()
    if client == "memory":
        path = f"memory://{url[5:]}/held.{fmt}"

        def write_memory(crops, area):  # type: ignore[no-untyped-def]
            omeframe.write_table(path, crops, dim_order="CYX", columns={"area": area})
        return write_memory, path, {}
    path = f"{url}/held.{fmt}"

    def write_s3(crops, area):  # type: ignore[no-untyped-def]
        omeframe.write_table(path, crops, dim_order="CYX", columns={"area": area}, storage_options=opts)
        if client.startswith("http"):
            import boto3

            boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1").put_object_acl(
                Bucket=url[5:], Key=f"held.{fmt}", ACL="public-read")
    if client.startswith("http"):
        return write_s3, f"{server.endpoint}/{url[5:]}/held.{fmt}", {}
    return write_s3, path, opts


@pytest.mark.parametrize("client", ["s3 obstore", "s3 s3fs", "http", "http ignoring If-Match", "memory"])
@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_a_table_held_open_while_its_object_is_overwritten_never_reads_the_new_object(  # type: ignore[no-untyped-def]
        bucket, fmt, client, monkeypatch, default_cache) -> None:
    """Range GETs are conditional on the ETag seen at open (If-Match), or followed by a check of the version."""
    write, path, opts = _writer_and_reader(bucket, client, fmt, monkeypatch)
    rng = np.random.default_rng(5)
    n = 20_000  # Vortex: three splits of 8,192 rows, so rows of the last ones are not read (or cached) yet
    old = rng.integers(0, 255, (n, 3, 4, 4), dtype=np.uint8)  # random bytes: the same sizes in both versions
    new = rng.integers(0, 255, (n, 3, 4, 4), dtype=np.uint8)
    write(old, np.arange(n) * 0.5)
    t = omeframe.open_table(path, storage_options=opts)
    assert t._remote is not None
    assert (t._remote.store.reader is not None) == (client == "s3 obstore")
    np.testing.assert_array_equal(t.to_numpy([0, 5]), old[[0, 5]])
    write(new, np.arange(n) * 2.0)
    try:  # the old version's rows where their ranges were read before (cached under its version), else refused
        np.testing.assert_array_equal(t.to_numpy([9000, 17000]), old[[9000, 17000]])
    except omeframe.FileChangedError:
        pass
    with pytest.raises(omeframe.FileChangedError, match="overwritten") as err:
        t.read(["area"])  # never read before: a GET of the old version, which is gone
    assert err.value.filename == path
    np.testing.assert_array_equal(t.to_numpy([0, 5]), old[[0, 5]])  # read before: the old version's
    again = omeframe.open_table(path, storage_options=opts)
    np.testing.assert_array_equal(again.to_numpy([9000, 17000]), new[[9000, 17000]])
    if client.startswith("http"):  # what the one probe learnt of the server
        from omeframe.storage import remote

        assert remote._IF_MATCH_HONOURED == {bucket[2].endpoint: client == "http"}


def test_an_earlier_request_failure_is_not_blamed_for_a_damaged_vortex_object(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A remote Vortex read reports the request failures of its own reads only."""
    from omeframe.errors import CorruptFileError
    from omeframe.formats.vortex.file import read_vortex_table
    from omeframe.storage.remote import RemoteStore

    local = tmp_path / "t.vortex"
    omeframe.write_table(local, np.zeros((10, 1, 4, 4), np.uint8), dim_order="CYX")
    store = RemoteStore("memory://omeframe-stale-failure")
    store.put("t.vortex", local.read_bytes()[: local.stat().st_size // 2])  # truncated: not readable
    remote = store.open("t.vortex")
    remote.failure = OSError("an earlier read that failed")
    with pytest.raises(CorruptFileError, match="not a readable Vortex file"):
        read_vortex_table(remote)


def test_a_pickled_remote_table_reopens_only_the_version_its_sender_opened(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pickle

    path = f"memory://pickled-{tmp_path.name}/t.parquet"
    crops = np.arange(40 * 2 * 8 * 8, dtype=np.uint16).reshape(40, 2, 8, 8)
    omeframe.write_table(path, crops, dim_order="CYX")
    sent = pickle.dumps(omeframe.open_table(path))
    np.testing.assert_array_equal(pickle.loads(sent).to_numpy([3]), crops[[3]])
    omeframe.write_table(path, crops[::-1].copy(), dim_order="CYX")
    with pytest.raises(omeframe.FileChangedError, match="replaced or rewritten since") as err:
        pickle.loads(sent)
    assert err.value.filename == path


@pytest.mark.parametrize("client", ["auto", "fsspec"])
def test_an_object_replaced_by_another_writer_after_a_listing_opens_as_its_new_version(  # type: ignore[no-untyped-def]
        bucket, tmp_path, client, monkeypatch) -> None:
    """The HEAD that pins an opened file's version is never answered from a listing this process made."""
    import boto3

    from omeframe.storage import obstore_reads
    from omeframe.storage.remote import RemoteStore

    monkeypatch.setenv(obstore_reads.CLIENT_ENV, client)
    obstore_reads._CACHE.clear()
    url, opts, server = bucket
    old = np.arange(2 * 16 * 16, dtype=np.uint8).reshape(1, 2, 16, 16)
    omeframe.write_table(f"{url}/p/t.parquet", old, dim_order="CYX", storage_options=opts)
    assert list(RemoteStore(f"{url}/p", opts).find("")) == ["t.parquet"]  # fsspec keeps this listing
    omeframe.write_table(tmp_path / "t.parquet", old + 1, dim_order="CYX")
    boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1").put_object(  # another writer
        Bucket=url[5:], Key="p/t.parquet", Body=(tmp_path / "t.parquet").read_bytes())
    t = omeframe.open_table(f"{url}/p/t.parquet", storage_options=opts)
    np.testing.assert_array_equal(t.to_numpy([0]), old + 1)


def test_readers_report_an_object_overwritten_under_them_as_changed_not_corrupt(  # type: ignore[no-untyped-def]
        bucket, tmp_path) -> None:
    """Parsers (pyarrow, tifffile) pass on the FileChangedError of the file under them; readers keep its type."""
    from omeframe.storage.remote import RemoteStore

    url, opts, _ = bucket
    store = RemoteStore(url, opts)
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 255, (3000, 2, 16, 16), dtype=np.uint8) for _ in range(2)]
    for i, c in enumerate(crops):  # no pixel index: takes read row groups through pyarrow
        omeframe.write_table(tmp_path / f"t{i}.parquet", c, dim_order="CYX", pixel_index=False)
    store.put("t.parquet", (tmp_path / "t0.parquet").read_bytes())
    t = omeframe.open_table(f"{url}/t.parquet", storage_options=opts)
    assert not t.indexed
    np.testing.assert_array_equal(t.to_numpy([0]), crops[0][[0]])
    store.put("t.parquet", (tmp_path / "t1.parquet").read_bytes())
    with pytest.raises(omeframe.FileChangedError, match="overwritten"):
        t.to_numpy([2900])

    planes = [rng.integers(0, 4000, (2, 256, 256), dtype=np.uint16) for _ in range(2)]
    for i, p in enumerate(planes):
        omeframe.to_ome_tiff(p[None, :, None], tmp_path / f"i{i}.ome.tif", tile=(64, 64), compression=None)
    store.put("i.ome.tif", (tmp_path / "i0.ome.tif").read_bytes())
    plan = omeframe.scan(f"{url}/i.ome.tif", storage_options=opts)
    store.put("i.ome.tif", (tmp_path / "i1.ome.tif").read_bytes())
    with pytest.raises(omeframe.FileChangedError, match="overwritten"):
        plan.export("numpy")


def test_an_http_object_removed_before_the_if_match_probe_is_reported_removed(bucket, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The probe of a server's If-Match learns nothing from a missing object; the read reports it removed."""
    import boto3

    from omeframe.storage import remote

    url, opts, server = bucket
    monkeypatch.setattr(remote, "_IF_MATCH_HONOURED", {})
    crops = np.arange(4 * 2 * 8 * 8, dtype=np.uint8).reshape(4, 2, 8, 8)
    omeframe.write_table(f"{url}/gone.parquet", crops, dim_order="CYX", storage_options=opts)
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    s3.put_object_acl(Bucket=url[5:], Key="gone.parquet", ACL="public-read")
    f = remote.RemoteStore(f"{server.endpoint}/{url[5:]}").open("gone.parquet")
    assert f.size > 0  # the HEAD that pins the version
    s3.delete_object(Bucket=url[5:], Key="gone.parquet")
    with pytest.raises(omeframe.FileChangedError, match="removed"):
        f.read_ranges([(0, 4)])
    assert remote._IF_MATCH_HONOURED == {}  # nothing learnt: asked again next time
