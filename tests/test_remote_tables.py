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
