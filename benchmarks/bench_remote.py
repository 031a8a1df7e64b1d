"""Remote reads: an omeframe dataset vs zarr v3 vs tifffile, against an S3 server with latency.

Starts moto's S3 server on 127.0.0.1, in a process of its own (as an object
store is: moto reads a whole object for every ranged GET, work that must not
compete with the clients for their interpreter), behind the counting,
latency-injecting proxy of ``tests/s3server.py`` (nothing leaves the
loopback), writes one image
three ways with the same chunking, then for each injected latency measures:

* **cold open + first ROI** (256 x 256): a fresh object, empty caches;
* **warm ROI**: another 256 x 256 region through the same opened object;
* **full read**: the whole image (MB/s);
* requests and bytes per operation, counted on the server side.

The systems: ``omeframe.open_dataset`` (manifest, images index, coalesced
concurrent chunk GETs), zarr v3 over ``zarr.storage.FsspecStore`` (same chunk
shape, zstd; what ``zarr.open_array("s3://...")`` uses) and, when obstore is
installed, over ``zarr.storage.ObjectStore`` (a fresh ``S3Store`` per cold
open), and tifffile over an fsspec file object (tiled TIFF, zstd tiles
when imagecodecs is installed, else zlib) opened with a 256 KiB read-ahead,
read as a zarr array through ``tifffile``'s own store. The warm ROI is the
first read of a second region through the object the cold read opened. A second table compares the raw clients (fsspec /
s3fs vs obstore) on the same server.

Run: ``python benchmarks/bench_remote.py [--size 4096] [--latency 5 25] [--repeat 3]``.
Results also go to ``bench-output/bench_remote.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT_DIR, machine_summary, markdown_table  # noqa: E402

MiB = 1 << 20


def _env() -> None:
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    })


def _clear() -> None:
    from omeframe.engine.cache import shared_cache

    shared_cache().clear()


def _measure(server: Any, fn: Callable[[], Any], repeat: int) -> tuple[float, int, int]:
    """Best wall time of ``fn`` over ``repeat`` runs, with the requests and bytes of the last one."""
    best = float("inf")
    for _ in range(repeat):
        server.counts.reset()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best, server.counts.requests(), server.counts.bytes()


def _print_targets(results: list[dict[str, Any]]) -> None:
    """The issue's targets, at the highest latency measured: cold open <= 0.5x zarr's, full read >= zarr's."""
    lat = max(r["latency_ms"] for r in results)
    at = {r["system"]: r for r in results if r["latency_ms"] == lat}
    ours, zarr = at.get("omeframe dataset"), at.get("zarr v3 (FsspecStore)")
    if ours is None or zarr is None:
        return
    cold = ours["cold_s"] / zarr["cold_s"]
    full = ours["full_mb_s"] / zarr["full_mb_s"]
    print(f"\nTargets at {lat:g} ms (against zarr v3 over FsspecStore, what zarr.open_array('s3://...') uses):")
    print(f"- {'PASS' if cold <= 0.5 else 'FAIL'} cold open + first ROI / zarr's: {cold:.2f} (target <= 0.5)")
    print(f"- {'PASS' if full >= 1.0 else 'FAIL'} full-read throughput / zarr's: {full:.2f} (target >= 1)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4096, help="image side (uint16); default 4096 (32 MiB)")
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--latency", type=float, nargs="+", default=[5, 25], help="per-request latency, ms")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    _env()

    import boto3
    import numpy as np
    import tifffile
    import zarr
    from zarr.storage import FsspecStore

    import omeframe as of
    import s3server
    from omeframe.storage.remote import RemoteStore, filesystem

    server = s3server.start(own_process=True)  # a server of its own, as S3 is: not sharing this interpreter
    so = server.storage_options
    boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    n, c = args.size, args.chunk
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:n, 0:n]
    img = ((np.sin(yy / 37.0) + np.cos(xx / 53.0) + 2) * 8000 + rng.integers(0, 500, (n, n))).astype(np.uint16)

    # --- write the three copies -----------------------------------------------------------
    of.write_dataset(img, "s3://bench/ds", image_ids=["img"], chunk_shape=(1, c, c), storage_options=so)
    zstore = FsspecStore.from_url("s3://bench/img.zarr", storage_options=so, read_only=False)
    za = zarr.create_array(zstore, shape=(n, n), chunks=(c, c), dtype="uint16",
                           compressors=zarr.codecs.ZstdCodec(level=3))
    za[:] = img
    try:
        import imagecodecs  # noqa: F401

        tiff_comp = "zstd"
    except ImportError:
        tiff_comp = "zlib"
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "img.tif"
        tifffile.imwrite(p, img, tile=(c, c), compression=tiff_comp)
        RemoteStore("s3://bench", so).upload(p, "img.tif")
    fs = filesystem("s3", so)

    y0, x0 = n // 3, n // 3  # a ROI away from the origin, inside one chunk or across two
    roi = (slice(y0, y0 + 256), slice(x0, x0 + 256))
    roi2 = (slice(y0 + 300, y0 + 556), slice(x0 + 300, x0 + 556))

    def omeframe_cold() -> Any:
        _clear()
        ds = of.open_dataset("s3://bench/ds", storage_options=so)
        return ds, ds.read("img", y=(roi[0].start, roi[0].stop), x=(roi[1].start, roi[1].stop))

    def zarr_cold() -> Any:
        a = zarr.open_array(FsspecStore.from_url("s3://bench/img.zarr", storage_options=so, read_only=True), mode="r")
        return a, a[roi]

    def tiff_cold() -> Any:
        # ranged reads in 256 KiB blocks (fsspec's default would fetch 50 MiB, i.e. the whole file)
        fh = fs.open("bench/img.tif", "rb", cache_type="readahead", block_size=256 << 10)
        store = tifffile.imread(fh, aszarr=True)
        a = zarr.open_array(store, mode="r")
        return a, a[roi]

    try:  # zarr's other remote store, when obstore is installed: what a user after speed would pick
        from obstore.store import S3Store as _S3Store
        from zarr.storage import ObjectStore
    except ImportError:
        ObjectStore = None  # noqa: N806

    def zarr_obstore_cold() -> Any:
        ost = _S3Store("bench", endpoint=server.endpoint, access_key_id="testing", secret_access_key="testing",
                       region="us-east-1", client_options={"allow_http": True})
        a = zarr.open_array(ObjectStore(ost, read_only=True), path="img.zarr", mode="r")
        return a, a[roi]

    systems: dict[str, dict[str, Callable[..., Any]]] = {
        "omeframe dataset": {
            "cold": omeframe_cold,
            "warm": lambda h: h.read("img", y=(roi2[0].start, roi2[0].stop), x=(roi2[1].start, roi2[1].stop)),
            "full": lambda h: (_clear(), h.read("img")),
        },
        "zarr v3 (FsspecStore)": {
            "cold": zarr_cold, "warm": lambda h: h[roi2], "full": lambda h: h[:],
        },
        **({"zarr v3 (ObjectStore, obstore)": {
            "cold": zarr_obstore_cold, "warm": lambda h: h[roi2], "full": lambda h: h[:],
        }} if ObjectStore is not None else {}),
        f"tifffile over fsspec ({tiff_comp})": {
            "cold": tiff_cold, "warm": lambda h: h[roi2], "full": lambda h: h[:],
        },
    }
    rows: list[list[str]] = []
    results: list[dict[str, Any]] = []
    for lat_ms in args.latency:
        server.faults.latency = lat_ms / 1000
        for name, ops in systems.items():
            t_cold = t_warm = float("inf")
            for _ in range(args.repeat):  # each repeat: a fresh object, then its first other ROI
                server.counts.reset()
                t = time.perf_counter()
                h, _ = ops["cold"]()
                t_cold = min(t_cold, time.perf_counter() - t)
                r_cold, b_cold = server.counts.requests(), server.counts.bytes()
                server.counts.reset()
                t = time.perf_counter()
                ops["warm"](h)
                t_warm = min(t_warm, time.perf_counter() - t)
                r_warm = server.counts.requests()
            full = functools.partial(ops["full"], h)
            t_full, r_full, b_full = _measure(server, full, max(1, args.repeat - 1))
            mbps = img.nbytes / MiB / t_full
            results.append({
                "latency_ms": lat_ms, "system": name,
                "cold_s": t_cold, "cold_requests": r_cold, "cold_bytes": b_cold,
                "warm_s": t_warm, "warm_requests": r_warm,
                "full_s": t_full, "full_requests": r_full, "full_bytes": b_full, "full_mb_s": mbps,
            })
            rows.append([
                f"{lat_ms:g} ms", name, f"{t_cold * 1000:.0f} ms ({r_cold} req, {b_cold / 1024:.0f} KiB)",
                f"{t_warm * 1000:.0f} ms ({r_warm} req)", f"{mbps:.0f} MB/s ({r_full} req)",
            ])
    print(machine_summary())
    print(f"\nimage {n}x{n} uint16 ({img.nbytes / MiB:.0f} MiB), chunks {c}x{c}, ROI 256x256; "
          f"best of {args.repeat}; requests and bytes counted by the proxy\n")
    print(markdown_table(["latency", "system", "cold open + first ROI", "warm ROI", "full read"], rows))
    _print_targets(results)

    # --- raw clients ------------------------------------------------------------------------
    client_rows: list[list[str]] = []
    try:
        import obstore
        from obstore.store import S3Store
    except ImportError:
        obstore = None
    if obstore is not None:
        parts = fs.ls("bench/ds/chunks")
        key = parts[0].split("/", 1)[1]
        ost = S3Store("bench", endpoint=server.endpoint, access_key_id="testing", secret_access_key="testing",
                      region="us-east-1", client_options={"allow_http": True})
        size = fs.info(parts[0])["size"]
        starts = [i * (size // 16) for i in range(16)]
        ends = [s + min(256 << 10, size // 16) for s in starts]
        for lat_ms in args.latency:
            server.faults.latency = lat_ms / 1000
            from omeframe.storage.remote import _run_all

            cases = {
                "fsspec 16 ranges (concurrent)": lambda: _run_all([
                    functools.partial(fs.cat_file, parts[0], start=a, end=b)
                    for a, b in zip(starts, ends, strict=True)
                ]),
                "obstore get_ranges (16)": lambda: obstore.get_ranges(ost, key, starts=starts, ends=ends),
                "fsspec 1 small range": lambda: fs.cat_file(parts[0], start=0, end=100),
                "obstore 1 small range": lambda: obstore.get_range(ost, key, start=0, end=100),
            }
            for cname, fn in cases.items():
                t, r, _ = _measure(server, fn, args.repeat)
                client_rows.append([f"{lat_ms:g} ms", cname, f"{t * 1000:.1f} ms", str(r)])
        print("\nraw clients on the same server\n")
        print(markdown_table(["latency", "client / call", "best time", "requests"], client_rows))
    server.stop()
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "bench_remote.json").write_text(json.dumps({"reads": results, "clients": client_rows}, indent=1))


if __name__ == "__main__":
    main()
