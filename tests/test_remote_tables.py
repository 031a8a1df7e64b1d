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


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_a_table_held_open_while_its_object_is_overwritten_never_reads_the_new_object(bucket, fmt) -> None:  # type: ignore[no-untyped-def]
    """Range GETs are conditional on the ETag the table saw when it opened (obstore's If-Match)."""
    url, opts, server = bucket
    rng = np.random.default_rng(5)
    n = 20_000  # Vortex: three splits of 8,192 rows, so rows of the last ones are not read (or cached) yet
    old = rng.integers(0, 255, (n, 3, 4, 4), dtype=np.uint8)  # random bytes: the same sizes in both versions
    new = rng.integers(0, 255, (n, 3, 4, 4), dtype=np.uint8)
    path = f"{url}/held.{fmt}"
    omeframe.write_table(path, old, dim_order="CYX", columns={"area": np.arange(n) * 0.5}, storage_options=opts)
    t = omeframe.open_table(path, storage_options=opts)
    assert t._remote is not None and t._remote.store.reader is not None  # the conditional GETs go through obstore
    np.testing.assert_array_equal(t.to_numpy([0, 5]), old[[0, 5]])
    omeframe.write_table(path, new, dim_order="CYX", columns={"area": np.arange(n) * 2.0}, storage_options=opts)
    try:  # the old version's rows where their ranges were read before (cached under its ETag), else refused
        np.testing.assert_array_equal(t.to_numpy([9000, 17000]), old[[9000, 17000]])
    except omeframe.FileChangedError:
        pass
    with pytest.raises(omeframe.FileChangedError, match="overwritten since it was opened") as err:
        t.read(["area"])  # never read before: a GET of the old version, which is gone
    assert err.value.filename == path
    np.testing.assert_array_equal(t.to_numpy([0, 5]), old[[0, 5]])  # read before: the old version's
    again = omeframe.open_table(path, storage_options=opts)
    np.testing.assert_array_equal(again.to_numpy([9000, 17000]), new[[9000, 17000]])


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
