"""Dask scale-out: 1 vs 2 worker processes on a ``LocalCluster`` (loopback).

Two workloads, each timed with a cluster of one worker and one of two
(1 thread each, ``processes=True``), best of ``--repeat`` runs after a
warm-up run that opens the files on the workers:

* ``reduction``: a per-chunk reduction (max and sum of every chunk) over a
  large dataset image through ``Dataset.to_dask`` -- one task per stored
  chunk, each one byte-range read and one zstd decode. Target: 2 workers at
  least 1.7x as fast as one.
* ``reduction, 16 MiB blocks``: the same with ``to_dask(..., block_bytes=16 << 20)``:
  each task reads 16 neighbouring chunks (blocks still aligned with them), so
  the work per task outweighs the scheduler's cost per task (about 5 ms).
* ``catalog``: ``catalog.build(..., client=)`` of ``--files`` small ``.npy``
  files (a fresh catalog each run).
* ``ingest``: ``write_dataset(..., client=)`` of the reduced image read from
  its dataset (decode, re-encode with zstd, write part files on the
  workers, one commit on the driver; a fresh dataset each run).

Usage::

    python benchmarks/bench_dask.py [--size 8192] [--files 2000] [--repeat 3]
    python benchmarks/bench_dask.py --quick      # 4096², 400 files, 1 run: a loaded machine

Data is generated under ``bench-output/dask-data/`` (fixed seed) and reused.
The machine's other load shows in the numbers: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

import omeframe
from omeframe import catalog
from omeframe.engine import threads as _threads

OUT = Path("bench-output") / "dask-data"


def _dataset(size: int) -> Path:
    path = OUT / f"image-{size}.ds"
    if not path.exists():
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:size, 0:size]
        img = ((np.sin(yy / 97.0) + np.cos(xx / 53.0) + 2) * 4000).astype(np.uint16)
        img += rng.integers(0, 300, img.shape, dtype=np.uint16)
        omeframe.write_dataset(img, path, image_ids=["big"], chunk_shape=(1, 512, 512))
    return path


def _files(n: int) -> Path:
    folder = OUT / f"files-{n}"
    if not folder.exists():
        folder.mkdir(parents=True)
        rng = np.random.default_rng(1)
        for i in range(n):
            np.save(folder / f"img-{i:05d}.npy", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    return folder


def _reduce(block: np.ndarray) -> np.ndarray:
    out = np.empty((1, 1, 1, 1, 2), np.float64)
    out[..., 0] = block.max()
    out[..., 1] = block.sum(dtype=np.float64)
    return out


def _time(fn: Any, repeat: int) -> float:
    fn()  # warm-up: workers import omeframe and open the files
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="Y and X of the reduced image")
    ap.add_argument("--files", type=int, default=2000, help="files of the catalog build")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes and one run (--size 4096 --files 400 --repeat 1)")
    args = ap.parse_args()
    if args.quick:
        args.size, args.files, args.repeat = 4096, 400, 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    from dask.distributed import Client, LocalCluster

    OUT.mkdir(parents=True, exist_ok=True)
    ds_path, folder = _dataset(args.size), _files(args.files)
    results: dict[str, dict[int, float]] = {"reduction": {}, "reduction16": {}, "catalog": {}, "ingest": {}}
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            client.run(_threads.set_num_threads, 1)  # one core per worker process, as in a catalog build
            arr = omeframe.open_dataset(ds_path).to_dask("big")

            def reduction(arr: Any = arr) -> None:
                arr.map_blocks(_reduce, chunks=(1, 1, 1, 1, 2), dtype=np.float64).compute()

            results["reduction"][n] = _time(reduction, args.repeat)
            big_blocks = omeframe.open_dataset(ds_path).to_dask("big", block_bytes=16 << 20)
            results["reduction16"][n] = _time(lambda a=big_blocks: reduction(a), args.repeat)
            out = OUT / f"catalog-{n}"

            def build(client: Any = client, out: Path = out) -> None:
                shutil.rmtree(out, ignore_errors=True)
                catalog.build(folder, out, client=client)

            results["catalog"][n] = _time(build, args.repeat)
            plan = omeframe.open_dataset(ds_path).scan("big")
            target = OUT / f"ingest-{n}.ds"

            def ingest(client: Any = client, plan: Any = plan, target: Path = target) -> None:
                shutil.rmtree(target, ignore_errors=True)
                omeframe.write_dataset(plan, target, image_ids=["big"], chunk_shape=(1, 512, 512), client=client)

            results["ingest"][n] = _time(ingest, args.repeat)
            shutil.rmtree(target, ignore_errors=True)
    chunks = (-(-args.size // 512)) ** 2
    print(f"load average at start: {load:.2f} on {os.cpu_count()} cores")
    print("| workload | 1 worker | 2 workers | speed-up |\n|---|---|---|---|")
    image = f"{args.size}² uint16, {chunks} chunks"
    rows = (
        ("reduction", "reduction", image), ("reduction16", "reduction, 16 MiB blocks", image),
        ("catalog", "catalog", f"{args.files} files"), ("ingest", "ingest", image),
    )
    for key, name, what in rows:
        one, two = results[key][1], results[key][2]
        print(f"| {name} ({what}) | {one:.2f} s | {two:.2f} s | {one / two:.2f}x |")


if __name__ == "__main__":
    main()
