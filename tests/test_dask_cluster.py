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
        dashboard_address=":0", worker_dashboard_address=None,  # any free port: 8787 may be taken
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
    arr = ds.to_dask("a", block_bytes=None)  # one task per chunk
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


def _maps_for_a_megabyte() -> int:
    """New memory maps the process makes to hold a 1 MiB buffer (0: it came from the heap)."""
    def maps() -> int:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)

    before = maps()
    held = bytearray(1 << 20)
    after = maps()
    del held
    return after - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc are Linux's")
def test_to_dask_of_a_dataset_in_a_bucket_reads_its_generation_on_the_workers(client: Any, bucket: Any) -> None:
    """The tasks carry the dataset's URL, storage options and generation: an overwrite does not reach them."""
    url, opts, _ = bucket
    rng = np.random.default_rng(4)
    img = rng.integers(0, 60000, (1, 1, 2, 64, 48), dtype=np.uint16)
    ds = omeframe.write_dataset(img, f"{url}/ds", image_ids=["a"], chunk_shape=(1, 32, 32), storage_options=opts)
    arr = ds.to_dask("a", block_bytes=None)
    omeframe.write_dataset(img[..., ::-1, :] // 2, f"{url}/ds", image_ids=["a"], mode="overwrite",
                           chunk_shape=(1, 32, 32), storage_options=opts)
    assert omeframe.open_dataset(f"{url}/ds", storage_options=opts).generation == ds.generation + 1
    np.testing.assert_array_equal(arr.compute(), img)  # the generation the graph was built on


def test_workers_keep_chunk_buffers_on_the_heap(client: Any, tmp_path: Path) -> None:
    """The nanny's MALLOC_TRIM_THRESHOLD_ freezes glibc's mmap threshold at 128 KiB; the first
    omeframe task on a worker raises it, so chunk-sized buffers stop costing a map each."""
    assert all(client.run(lambda: "MALLOC_TRIM_THRESHOLD_" in os.environ).values())
    img = np.arange(64 * 64, dtype=np.uint16).reshape(1, 1, 1, 64, 64)
    ds = omeframe.write_dataset(img, tmp_path / "ds", image_ids=["a"], chunk_shape=(1, 32, 32))
    arr = ds.to_dask("a")
    for addr in client.run(lambda: 0):  # an omeframe read on every worker
        client.submit(lambda a=arr: int(a[..., :32, :32].sum().compute(scheduler="sync")), workers=[addr],
                      pure=False).result()
    assert all(n == 0 for n in client.run(_maps_for_a_megabyte).values())


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


def test_catalog_build_of_a_bucket_on_the_cluster(client: Any, bucket: Any, tmp_path: Path) -> None:
    """URL inputs travel to the cluster's workers with their storage options and are read there."""
    import io

    from omeframe.storage.remote import RemoteStore

    url, opts, server = bucket
    store = RemoteStore(url, opts)
    for i in range(6):
        buf = io.BytesIO()
        np.save(buf, np.full((8, 8), i, np.uint8))
        store.put(f"in/img-{i:03d}.npy", buf.getvalue())
    local = catalog.build(f"{url}/in", tmp_path / "local.catalog", workers=1, storage_options=opts)
    server.counts.reset()
    res = catalog.build(f"{url}/in", tmp_path / "dist.catalog", client=client, batch_size=2, storage_options=opts)
    assert (res.n_ingested, res.n_errors) == (6, 0)
    assert server.counts.requests(f"{url.split('://')[1]}/in/img-", "GET") >= 6  # read by the workers
    keep = ["image_id", "urlpath", "size", "mtime", "checksum", "status", "shape"]
    assert read_catalog(tmp_path / "dist.catalog").select(keep).equals(read_catalog(local.out).select(keep))
    assert catalog.build(f"{url}/in", tmp_path / "dist.catalog", client=client, storage_options=opts).n_skipped == 6


# ---------------------------------------------------------------------------
# distributed ingest: write_dataset(client=) and to_ome_zarr(client=)
# ---------------------------------------------------------------------------

_CHUNK_COLUMNS = ["image_id", "level", "n_chunks", "chunk_lengths", "chunk_checksums", "chunk_frame_lengths", "dtype"]


def test_write_dataset_on_the_cluster_equals_the_local_write(client: Any, tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 60000, (1, 2, 3, 70, 90), dtype=np.uint16) for _ in range(3)]
    tifffile.imwrite(tmp_path / "a.ome.tif", imgs[0][0], metadata={"axes": "CZYX"})
    # a file-backed source (travels as its path) and two in-memory images (by value)
    inputs = [omeframe.scan(tmp_path / "a.ome.tif"), imgs[1], imgs[2]]
    opts: dict[str, Any] = {"image_ids": ["a", "b", "c"], "chunk_shape": (1, 32, 32)}
    local = omeframe.write_dataset(inputs, tmp_path / "local.ds", **opts)
    dist = omeframe.write_dataset(inputs, tmp_path / "dist.ds", client=client, **opts)
    assert dist.generation == 1 and len(dist.manifest.parts) > 2  # one part file per task
    for iid, img in zip("abc", imgs, strict=True):
        np.testing.assert_array_equal(dist.scan(iid).export("numpy"), img)
    # byte for byte the same chunks (payload lengths and checksums), only spread over more parts
    assert dist.images_table.select(_CHUNK_COLUMNS).equals(local.images_table.select(_CHUNK_COLUMNS))
    assert all(o is not None for o in dist.images_table["chunk_offsets"].to_pylist())
    # append on the cluster too: one more generation with the old parts kept
    grown = dist.append(imgs[1][:, :1], image_ids=["d"], client=client)
    assert grown.generation == 2 and set(dist.manifest.parts) < set(grown.manifest.parts)
    np.testing.assert_array_equal(grown.scan("d").export("numpy"), imgs[1][:, :1])
    np.testing.assert_array_equal(grown.scan("a").export("numpy"), imgs[0])
    with pytest.raises(TypeError, match="dask.distributed.Client"):
        omeframe.write_dataset(imgs[1], tmp_path / "bad.ds", client="tcp://127.0.0.1:1")


def test_cluster_writes_use_the_client_given_not_the_default_one(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed.client

    def no_default(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the default client was looked up instead of the client= passed")

    monkeypatch.setattr(distributed.client, "default_client", no_default)
    img = np.random.default_rng(8).integers(0, 4000, (1, 1, 2, 70, 60), dtype=np.uint16)
    ds = omeframe.write_dataset(img, tmp_path / "a.ds", image_ids=["a"], chunk_shape=(1, 32, 32), client=client)
    np.testing.assert_array_equal(ds.scan("a").export("numpy"), img)
    store = omeframe.to_ome_zarr(ds.scan("a"), tmp_path / "a.zarr", client=client)
    np.testing.assert_array_equal(omeframe.scan(store).export("numpy"), img)


def test_to_ome_zarr_on_the_cluster_equals_the_local_export(client: Any, tmp_path: Path) -> None:
    import zarr

    rng = np.random.default_rng(6)
    img = rng.integers(0, 4000, (1, 2, 2, 100, 80), dtype=np.uint16)
    src = omeframe.write_dataset(img, tmp_path / "in.ds", image_ids=["a"], chunk_shape=(1, 64, 64)).scan("a")
    kw: dict[str, Any] = {"multiscale_levels": 2, "chunks": (1, 1, 1, 16, 16), "shards": (1, 1, 1, 32, 64)}
    a = omeframe.to_ome_zarr(src, tmp_path / "local.zarr", **kw)
    b = omeframe.to_ome_zarr(src, tmp_path / "dist.zarr", client=client, **kw)
    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    assert dict(gb.attrs) == dict(ga.attrs)  # same OME metadata, display windows included
    assert sorted(gb.array_keys()) == ["0", "1"]
    np.testing.assert_array_equal(gb["0"][...], img)
    np.testing.assert_array_equal(gb["1"][...], ga["1"][...])  # level 1 reduced from level 0 as written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist.zarr", "in.ds", "local.zarr"]  # no temp stores


def _kill_once(read: Any, marker: str, t: int, c: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> Any:
    """A block reader that kills its worker process (mid-task) the first time it reads a given chunk."""
    if (c, z0, y0, x0) == (1, 1, 32, 32) and not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return read(t, c, z0, z1, y0, y1, x0, x1)


def _fail_on(read: Any, t: int, c: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> Any:
    if (c, z0, y0, x0) == (0, 2, 32, 0):
        raise OSError("injected read error")
    return read(t, c, z0, z1, y0, y1, x0, x1)


def _with_reader(img: np.ndarray, wrap: Any, *args: Any) -> Any:
    import functools
    from dataclasses import replace

    from omeframe.formats.dataset.inputs import source_input
    from omeframe.registry import open_source

    inp = source_input(open_source(img))
    return replace(inp, read_block=functools.partial(wrap, inp.read_block, *args))


def test_a_worker_killed_mid_write_leaves_the_committed_state_intact(client: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 255, (1, 1, 1, 40, 40), dtype=np.uint8)
    imgs = [rng.integers(0, 60000, (1, 2, 3, 64, 64), dtype=np.uint16) for _ in range(3)]
    path = tmp_path / "ds"
    omeframe.write_dataset(base, path, image_ids=["base"], chunk_shape=(1, 32, 32))
    seen: set[tuple[int, tuple[str, ...]]] = set()
    done = threading.Event()

    def watch() -> None:  # what a reader sees while the distributed append runs
        while not done.is_set():
            ds = omeframe.open_dataset(path)
            seen.add((ds.generation, tuple(sorted(ds.image_ids))))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    marker = str(tmp_path / "killed")
    inputs = [_with_reader(imgs[0], _kill_once, marker), imgs[1], imgs[2]]
    try:
        grown = omeframe.write_dataset(inputs, path, mode="append", image_ids=["a", "b", "c"],
                                       chunk_shape=(1, 32, 32), client=client)
    finally:
        done.set()
        watcher.join()
    assert os.path.exists(marker)  # a worker did die in the middle of a task
    # the scheduler re-ran the dead worker's task, which rewrote its own part file
    assert seen <= {(1, ("base",)), (2, ("a", "b", "base", "c"))}  # never a half generation
    assert grown.generation == 2
    for iid, img in zip("abc", imgs, strict=True):
        np.testing.assert_array_equal(grown.scan(iid).export("numpy"), img)
    assert not list((path / "chunks").glob("*.tmp"))

    # a task that fails for good: nothing is committed, generation 2 stays as it was
    bad = [imgs[0], _with_reader(imgs[1], _fail_on)]
    with pytest.raises(OSError, match="injected read error"):
        omeframe.write_dataset(bad, path, mode="append", image_ids=["x", "y"], chunk_shape=(1, 32, 32),
                               client=client)
    again = omeframe.open_dataset(path)
    assert again.generation == 2 and sorted(again.image_ids) == ["a", "b", "base", "c"]
    # and the rerun finishes
    fixed = omeframe.write_dataset(imgs[:2], path, mode="append", image_ids=["x", "y"], chunk_shape=(1, 32, 32),
                                   client=client)
    assert fixed.generation == 3
    np.testing.assert_array_equal(fixed.scan("y").export("numpy"), imgs[1])
    np.testing.assert_array_equal(omeframe.open_dataset(path).scan("base").export("numpy"), base)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
