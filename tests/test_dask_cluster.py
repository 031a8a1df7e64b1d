"""omeframe on a real ``dask.distributed.LocalCluster``: 2 worker processes, loopback only.

One cluster for the whole module (starting one costs seconds). Workers are
separate processes, so everything they get travels by pickle: plans reopen
their files from their paths there.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import omeframe
from omeframe import catalog
from omeframe.catalog.build import Seams, build_with
from omeframe.catalog.commit import read_catalog
from omeframe.catalog.distributed import client_pool

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

# the helpers below travel to the workers by value (tests/ is not importable there)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, worker_dashboard_address=None,
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _worker_pids(client: Any) -> dict[str, int]:
    return client.run(os.getpid)


def test_to_dask_runs_on_worker_processes(client: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 60000, (1, 2, 3, 96, 80), dtype=np.uint16)
    ds = omeframe.write_dataset(img, tmp_path / "ds", image_ids=["a"], chunk_shape=(1, 32, 32))
    arr = ds.to_dask("a")
    # a per-chunk reduction: each task reads and reduces one chunk on a worker
    per_chunk = arr.map_blocks(lambda b: b.max(keepdims=True), chunks=(1, 1, 1, 1, 1)).compute()
    ref = np.array([[[[[img[0, c, z, y:y + 32, x:x + 32].max() for x in range(0, 80, 32)]
                      for y in range(0, 96, 32)] for z in range(3)] for c in range(2)]])
    np.testing.assert_array_equal(per_chunk, ref)
    assert int(arr.sum(dtype=np.int64).compute()) == int(img.sum(dtype=np.int64))
    tiff_plan = omeframe.scan(img[0, 0]).select(y=(5, 90))
    np.testing.assert_array_equal(tiff_plan.to_dask().compute(), img[:, :1, :, 5:90])
    # the tasks ran in the worker processes, which reopened the dataset there
    seen = client.run(lambda: sorted(k for k in sys.modules if k == "omeframe.formats.dataset.reader"))
    assert all(v == ["omeframe.formats.dataset.reader"] for v in seen.values())


def test_read_table_on_the_cluster(client: Any, tmp_path: Path) -> None:
    import omeframe.dask as ofd

    recs = [omeframe.from_numpy(np.full((1, 16, 16), i, np.uint8), dim_order="CYX") for i in range(6)]
    omeframe.write_table(tmp_path / "t.parquet", recs, row_group_bytes=600)
    ddf = ofd.read_table(tmp_path / "t.parquet")
    assert ddf.npartitions > 1
    maxes = ddf.map_partitions(
        lambda p: ofd.stats(p["ome_arrow"], c=0).struct.field("max"), meta=("max", "float64[pyarrow]")
    )
    assert maxes.compute().tolist() == [float(i) for i in range(6)]


def _kill_one_worker_soon(client: Any, delay: float) -> threading.Thread:
    pids = list(_worker_pids(client).values())

    def kill() -> None:
        time.sleep(delay)
        os.kill(pids[0], signal.SIGKILL)

    th = threading.Thread(target=kill, daemon=True)
    th.start()
    return th


def _slow_open(path: Path, reader: str) -> Any:
    time.sleep(0.05)
    return catalog.open_image(path, reader)


def test_catalog_build_on_the_cluster_survives_a_killed_worker(client: Any, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(24):
        np.save(src / f"img-{i:03d}.npy", np.full((8, 8), i, np.uint8))
    local = catalog.build(src, tmp_path / "local.catalog", workers=1)
    assert local.n_ingested == 24
    out = tmp_path / "dist.catalog"
    killer = _kill_one_worker_soon(client, 0.3)
    seams = Seams(open_image=_slow_open, open_pool=lambda n, ctx: client_pool(client, n, ctx))
    try:
        res = build_with(src, out, seams=seams, workers=2, batch_size=2)
        finished = True
    except Exception:  # noqa: BLE001 - a kill may also surface as a failed build
        finished = False
    killer.join()
    client.wait_for_workers(2, timeout=30)
    # committed state is readable whatever happened; a rerun finishes and resumes
    again = catalog.build(src, out, client=client)
    assert again.n_errors == 0
    if finished:
        assert res.n_ingested + res.n_errors == 24
    rows = read_catalog(out)
    assert rows.num_rows == 24 and set(rows["status"].to_pylist()) == {"ok"}
    # same deterministic row order as the local build
    assert rows["urlpath"].to_pylist() == read_catalog(tmp_path / "local.catalog")["urlpath"].to_pylist()
    assert (catalog.build(src, out, client=client)).n_skipped == 24
