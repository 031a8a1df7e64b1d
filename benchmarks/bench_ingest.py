"""Ingest throughput and peak RSS: omeframe vs ome-arrow 0.1.0 vs a plain tifffile->zarr copy.

Inputs (fixed seed, generated once and cached in ``bench-output/ingest-data/``
with a marker file; pixels from ``bench_roi.make_pixels``: smooth field +
Gaussian blobs + signal-dependent noise):

* ``stack``: 1x2x32x2048x2048 uint16 (512 MiB raw; ``--quick``: 1x2x8x1024x1024),
  written as a tiled OME-TIFF (tifffile, tiles 512x512, zstd level 3 through
  imagecodecs) and as an OME-Zarr 0.5 store (``omeframe.to_ome_zarr``, zarr v3,
  chunks 1x1x1x512x512, zstd level 3);
* ``big`` (only with ``--big``): 1x1x1x32768x32768 uint16 (2 GiB raw; with
  ``--quick``: 8192x8192) tiled OME-TIFF, same tiles and codec, written from a
  temporary raw memmap.

Systems (every ingest ends on disk):

* ``omeframe dataset``: ``omeframe.from_tiff(path, out=dir, chunk_shape=(1,512,512),
  compression="zstd", compression_level=3)`` / ``omeframe.from_ome_zarr(path, out=dir,
  ...same...)``: streams into a Parquet dataset;
* ``omeframe record``: ``omeframe.from_tiff(path)`` / ``from_ome_zarr(path)`` returning a
  record, then ``omeframe.to_ome_parquet(record, file)``;
* ``ome-arrow 0.1.0``: ``ome_arrow.from_tiff(path)`` / ``from_ome_zarr(path)`` (defaults:
  reads through bioio, list chunk encoding) then ``ome_arrow.to_ome_parquet(record, file)``;
  a failure is recorded with its error text instead of a time;
* ``plain tifffile->zarr``: ``TiffFile(path).series[0].aszarr()`` opened with
  ``zarr.open``, copied plane by plane (each plane = a whole row of 512x512 chunks,
  so zarr encodes chunks with its own concurrency) into a zarr v3 array with the
  same chunks and zstd-3. This is the "plain chunk copy" baseline.

Each (system, input) runs in a fresh interpreter (``_common.run_case``); the
baseline RSS is taken after imports (and pyarrow's lazy imports); the peak is
``ru_maxrss`` (= VmHWM) of that process, reported over the baseline and
absolute. Throughput = raw (uncompressed) bytes / wall time of the whole
ingest, best of 2 runs (1 run for ome-arrow and for the big image); the
output is deleted before every run. Input files are read once beforehand, so
the page cache is warm for every system.

Usage::

    python benchmarks/bench_ingest.py            # 512 MiB stack (~5 min with cached data)
    python benchmarks/bench_ingest.py --quick    # 32 MiB stack (< 60 s with cached data)
    python benchmarks/bench_ingest.py --big      # also the 2 GiB 32768x32768 RSS target

Prints a table and the issue's targets (PASS/MISS, reported, not asserted) and
writes ``bench-output/bench_ingest.md`` (``bench_ingest-quick.md`` with ``--quick``).
Exits non-zero when an omeframe or plain-copy case fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    OUT_DIR,
    ROOT,
    CaseContext,
    CaseError,
    MiB,
    best_of,
    case_main,
    dir_size,
    fmt_mib,
    fmt_ratio,
    fmt_seconds,
    machine_summary,
    markdown_table,
    preload_pyarrow,
    run_case,
)

SCRIPT = Path(__file__).resolve()
DATA_ROOT = OUT_DIR / "ingest-data"
WORK_ROOT = OUT_DIR / "ingest-out"

GEN_VERSION = 1
SEED = 20260311
ZSTD_LEVEL = 3
TILE = 512
RSS_LIMIT = 600 * MiB

STACK_FULL = (1, 2, 32, 2048, 2048)
STACK_QUICK = (1, 2, 8, 1024, 1024)
BIG_FULL = (1, 1, 1, 32768, 32768)
BIG_QUICK = (1, 1, 1, 8192, 8192)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "n/a"


def _versions() -> str:
    names = ("omeframe", "ome-arrow", "zarr", "tifffile", "imagecodecs", "pyarrow", "numpy", "bioio")
    return ", ".join(f"{n} {_dist_version(n)}" for n in names)


def _nbytes(shape: tuple[int, ...]) -> int:
    n = 2
    for s in shape:
        n *= s
    return n


def _rm(path: str | os.PathLike[str]) -> None:
    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


# ---------------------------------------------------------------- data (child)
def _write_tiff(path: str, data: Any) -> None:
    import tifffile

    tifffile.imwrite(
        path,
        data,
        tile=(TILE, TILE),
        photometric="minisblack",
        metadata={"axes": "TCZYX"},
        ome=True,
        compression="zstd",
        compressionargs={"level": ZSTD_LEVEL},
    )


def _gen(ctx: CaseContext) -> dict[str, Any]:
    """Write the cached inputs for one shape (``kind``: stack or big)."""
    import numpy as np

    from bench_roi import make_pixels

    p = ctx.params
    shape = tuple(p["shape"])
    tif, zpath = p["tiff"], p.get("zarr")
    t0 = time.perf_counter()
    if p["kind"] == "big":
        raw = p["tiff"] + ".raw"
        mm = np.memmap(raw, dtype=np.uint16, mode="w+", shape=shape)
        make_pixels(mm, seed=SEED, band=TILE)
        mm.flush()
        _write_tiff(tif, mm)
        del mm
        os.unlink(raw)
    else:
        src = np.zeros(shape, dtype=np.uint16)
        make_pixels(src, seed=SEED)
        _write_tiff(tif, src)
        import omeframe

        omeframe.to_ome_zarr(
            src,
            zpath,
            dim_order="TCZYX",
            zarr_format=3,
            chunks=(1, 1, 1, TILE, TILE),
            compressor="zstd",
            compressor_level=ZSTD_LEVEL,
            overwrite=True,
        )
    return {"seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- cases (child)
def _rss_watchdog(cap: int) -> None:
    """Abort this case process when its RSS passes ``cap`` (shared machine: no OOM)."""
    import threading

    import psutil

    proc = psutil.Process()

    def watch() -> None:
        while True:
            rss = proc.memory_info().rss
            if rss > cap:
                sys.stderr.write(f"aborted: RSS {rss / (1 << 30):.1f} GiB > cap {cap / (1 << 30):.0f} GiB\n")
                sys.stderr.flush()
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def _ingest(ctx: CaseContext) -> dict[str, Any]:
    p = ctx.params
    system, fmt, src, out = p["system"], p["fmt"], p["src"], p["out"]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if system.startswith("omeframe"):
        import omeframe as lib
    elif system == "ome-arrow":
        import resource

        # ome-arrow 0.1.0 builds Python lists under the GIL (the watchdog thread
        # cannot run then): cap private memory so it fails with MemoryError
        # instead of pushing a shared machine into swap / the OOM killer.
        cap = int(p.get("rss_cap", 10 << 30))
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
        import ome_arrow as lib
    else:
        import numpy as np  # noqa: F401
        import tifffile
        import zarr
        from zarr.codecs import BytesCodec, ZstdCodec
    preload_pyarrow()
    ctx.mark_baseline()
    _rss_watchdog(int(p.get("rss_cap", 10 << 30)))

    if system == "omeframe-dataset":
        fn = lib.from_tiff if fmt == "tiff" else lib.from_ome_zarr

        def run() -> Any:
            fn(src, out=out, chunk_shape=(1, TILE, TILE), compression="zstd", compression_level=ZSTD_LEVEL)

    elif system in ("omeframe-record", "ome-arrow"):
        fn = lib.from_tiff if fmt == "tiff" else lib.from_ome_zarr

        def run() -> Any:
            rec = fn(src)
            lib.to_ome_parquet(rec, out)

    elif system == "plain-copy":

        def run() -> Any:
            with tifffile.TiffFile(src) as tf:
                store = tf.series[0].aszarr()
                a = zarr.open(store, mode="r")
                if isinstance(a, zarr.Group):  # pragma: no cover - multiscale store
                    a = a["0"]
                dst = zarr.create_array(
                    out,
                    shape=a.shape,
                    dtype=a.dtype,
                    chunks=(1,) * (a.ndim - 2) + (TILE, TILE),
                    serializer=BytesCodec(),
                    compressors=[ZstdCodec(level=ZSTD_LEVEL)],
                    fill_value=0,
                    zarr_format=3,
                )
                lead = a.shape[:-2]
                import itertools

                for idx in itertools.product(*(range(n) for n in lead)):
                    dst[idx] = a[idx]
                store.close()

    else:  # pragma: no cover
        raise ValueError(system)

    timing, _ = best_of(run, int(p["repeats"]), setup=lambda: _rm(out), budget_s=p.get("budget_s"))
    size = dir_size(out)
    return {"timing": timing.as_dict(), "out_bytes": size}


CASES = {"gen": _gen, "ingest": _ingest}


# ---------------------------------------------------------------- parent
def _warm(path: Path) -> None:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(16 * MiB):
                pass


def ensure_data(kind: str, shape: tuple[int, ...], rewrite: bool) -> dict[str, Path]:
    tag = f"{kind}-" + "x".join(map(str, shape))
    d = DATA_ROOT / tag
    paths = {"tiff": d / "image.ome.tif"}
    if kind == "stack":
        paths["zarr"] = d / "image.ome.zarr"
    marker = d / "MARKER.json"
    want = {"gen": GEN_VERSION, "seed": SEED, "shape": list(shape), "tile": TILE, "zstd": ZSTD_LEVEL}
    if not rewrite and marker.exists() and json.loads(marker.read_text()) == want:
        if all(p.exists() for p in paths.values()):
            return paths
    _rm(d)
    d.mkdir(parents=True)
    _log(f"writing {tag} inputs (once; cached in {d.relative_to(ROOT)})")
    params = {"kind": kind, "shape": list(shape), **{k: str(v) for k, v in paths.items()}}
    res = run_case(SCRIPT, "gen", params, timeout=1800)
    _log(f"  wrote in {res['seconds']:.0f} s")
    marker.write_text(json.dumps(want))
    return paths


LABELS = {
    "omeframe-dataset": "omeframe dataset",
    "omeframe-record": "omeframe record",
    "ome-arrow": "ome-arrow 0.1.0",
    "plain-copy": "plain tifffile->zarr",
}
INPUT_LABEL = {"tiff": "OME-TIFF", "zarr": "OME-Zarr 0.5"}


def run_one(system: str, fmt: str, src: Path, shape: tuple[int, ...], repeats: int, timeout: float) -> dict[str, Any]:
    out = WORK_ROOT / f"{system}-{fmt}" / ("out.parquet" if system in ("omeframe-record", "ome-arrow") else "out")
    _rm(out.parent)
    params = {"system": system, "fmt": fmt, "src": str(src), "out": str(out), "repeats": repeats, "budget_s": 240}
    _log(f"{LABELS[system]} <- {INPUT_LABEL[fmt]} {'x'.join(map(str, shape))} (x{repeats})")
    row: dict[str, Any] = {"system": system, "fmt": fmt, "shape": shape, "raw": _nbytes(shape)}
    try:
        res = run_case(SCRIPT, "ingest", params, timeout=timeout)
    except CaseError as exc:
        msg = str(exc).strip().splitlines()
        err = next((ln.strip() for ln in reversed(msg) if ln.strip()), "failed")
        row["error"] = err[:160]
        _log(f"  FAILED: {err[:300]}")
    else:
        row.update(
            best=res["timing"]["best"],
            runs=res["timing"]["runs"],
            peak=res["peak_rss"],
            base=res["baseline_rss"],
            out_bytes=res["out_bytes"],
        )
        rate = row["raw"] / row["best"] / 1e6
        _log(f"  {fmt_seconds(row['best'])}, {rate:.0f} MB/s, peak {fmt_mib(row['peak'])} MiB")
    _rm(out.parent)
    return row


def _mbps(r: dict[str, Any]) -> float | None:
    return r["raw"] / r["best"] / 1e6 if "best" in r else None


def table(rows: list[dict[str, Any]]) -> str:
    ref: dict[tuple[str, tuple[int, ...]], float] = {}
    for r in rows:
        if r["system"] == "omeframe-dataset" and "best" in r:
            ref[(r["fmt"], r["shape"])] = r["best"]
    body = []
    for r in rows:
        inp = f"{INPUT_LABEL[r['fmt']]} {'x'.join(map(str, r['shape']))}"
        if "error" in r:
            body.append([LABELS[r["system"]], inp, f"FAILED: {r['error']}", "-", "-", "-", "-", "-"])
            continue
        rt = ref.get((r["fmt"], r["shape"]))
        runs = "/".join(f"{x:.2f}" for x in r["runs"])
        body.append(
            [
                LABELS[r["system"]],
                inp,
                f"{fmt_seconds(r['best'])} ({runs})",
                f"{_mbps(r):.0f}",
                fmt_mib(r["peak"] - r["base"]),
                fmt_mib(r["peak"]),
                fmt_mib(r["out_bytes"]),
                fmt_ratio(r["best"] / rt) if rt else "-",
            ]
        )
    headers = [
        "system",
        "input",
        "time, best (runs s)",
        "MB/s",
        "peak RSS over base MiB",
        "peak RSS MiB",
        "output MiB",
        "time ÷ omeframe dataset",
    ]
    return markdown_table(headers, body, align="ll" + "r" * 6)


def targets(rows: list[dict[str, Any]], big: bool) -> list[str]:
    def find(system: str, fmt: str, kind: str) -> dict[str, Any] | None:
        for r in rows:
            is_big = r["shape"][2:] == (1, r["shape"][3], r["shape"][4]) and r["shape"][3] >= 8192
            if r["system"] == system and r["fmt"] == fmt and is_big == (kind == "big"):
                return r
        return None

    lines = []
    for fmt in ("tiff", "zarr"):
        of, oa = find("omeframe-dataset", fmt, "stack"), find("ome-arrow", fmt, "stack")
        name = f"throughput >= 3x ome-arrow 0.1.0 ({INPUT_LABEL[fmt]})"
        if oa is not None and "error" in oa:
            lines.append(f"n/a  {name}, full stack: ome-arrow failed ({oa['error'][:90]})")
            small = [r for r in rows if r["fmt"] == fmt and r["shape"] == STACK_QUICK]
            if small:
                of = next((r for r in small if r["system"] == "omeframe-dataset"), None)
                oa = next((r for r in small if r["system"] == "ome-arrow"), None)
                name += ", quick stack " + "x".join(map(str, STACK_QUICK))
            else:
                continue
        if of is None or "best" not in of:
            lines.append(f"MISS {name}: omeframe case failed")
        elif oa is None or "best" not in oa:
            err = oa["error"] if oa else "not run"
            lines.append(f"n/a  {name}: ome-arrow failed ({err[:100]}); omeframe {_mbps(of):.0f} MB/s")
        else:
            ratio = _mbps(of) / _mbps(oa)
            verdict = "PASS" if ratio >= 3 else "MISS"
            lines.append(f"{verdict} {name}: {_mbps(of):.0f} vs {_mbps(oa):.0f} MB/s = {ratio:.2f}x")
    of, pc = find("omeframe-dataset", "tiff", "stack"), find("plain-copy", "tiff", "stack")
    name = "throughput >= 0.8x plain tifffile->zarr chunk copy (OME-TIFF)"
    if of and pc and "best" in of and "best" in pc:
        ratio = _mbps(of) / _mbps(pc)
        verdict = "PASS" if ratio >= 0.8 else "MISS"
        lines.append(f"{verdict} {name}: {_mbps(of):.0f} vs {_mbps(pc):.0f} MB/s = {ratio:.2f}x")
    else:
        lines.append(f"MISS {name}: a case failed")
    name = f"peak RSS < {RSS_LIMIT // MiB} MiB ingesting the big tiled TIFF into a dataset"
    b = find("omeframe-dataset", "tiff", "big")
    if not big:
        lines.append(f"n/a  {name}: not run (pass --big)")
    elif b is None or "best" not in b:
        lines.append(f"MISS {name}: case failed ({b['error'] if b else 'not run'})")
    else:
        verdict = "PASS" if b["peak"] < RSS_LIMIT else "MISS"
        shape = "x".join(map(str, b["shape"]))
        lines.append(
            f"{verdict} {name} ({shape}, {b['raw'] / (1 << 30):.2f} GiB raw): peak {fmt_mib(b['peak'])} MiB "
            f"absolute ({fmt_mib(b['peak'] - b['base'])} MiB over base) = {b['peak'] / RSS_LIMIT:.2f}x the limit, "
            f"{_mbps(b):.0f} MB/s"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small stack, one run per case (< 60 s once cached)")
    ap.add_argument("--big", action="store_true", help="also the 32768x32768 (2 GiB raw) peak-RSS case")
    ap.add_argument("--rewrite", action="store_true", help="regenerate the cached inputs")
    ap.add_argument("--no-ome-arrow", action="store_true", help="skip the (slow) ome-arrow cases")
    args = ap.parse_args(argv)

    t_start, load_start = time.perf_counter(), os.getloadavg()
    stack = STACK_QUICK if args.quick else STACK_FULL
    reps = 1 if args.quick else 2
    timeout = 120 if args.quick else 900
    paths = ensure_data("stack", stack, args.rewrite)
    big_paths = ensure_data("big", BIG_QUICK if args.quick else BIG_FULL, args.rewrite) if args.big else None
    for p in paths.values():
        _warm(p)

    rows: list[dict[str, Any]] = []
    plan: list[tuple[str, str, int]] = [
        ("omeframe-dataset", "tiff", reps),
        ("omeframe-record", "tiff", reps),
        ("plain-copy", "tiff", reps),
        ("ome-arrow", "tiff", 1),
        ("omeframe-dataset", "zarr", reps),
        ("omeframe-record", "zarr", reps),
        ("ome-arrow", "zarr", 1),
    ]
    for system, fmt, n in plan:
        if system == "ome-arrow" and args.no_ome_arrow:
            continue
        rows.append(run_one(system, fmt, paths[fmt], stack, n, timeout))
    small_rows: list[dict[str, Any]] = []
    oa_failed = any(r["system"] == "ome-arrow" and "error" in r for r in rows)
    if oa_failed and not args.quick:
        # ome-arrow cannot ingest the full stack here: compare at the quick size too.
        _log("ome-arrow failed on the full stack: comparing on the quick stack as well")
        qpaths = ensure_data("stack", STACK_QUICK, args.rewrite)
        for p in qpaths.values():
            _warm(p)
        for fmt in ("tiff", "zarr"):
            small_rows.append(run_one("omeframe-dataset", fmt, qpaths[fmt], STACK_QUICK, 2, timeout))
            small_rows.append(run_one("ome-arrow", fmt, qpaths[fmt], STACK_QUICK, 1, timeout))
        rows.extend(small_rows)
    if big_paths is not None:
        _warm(big_paths["tiff"])
        bshape = BIG_QUICK if args.quick else BIG_FULL
        rows.append(run_one("omeframe-dataset", "tiff", big_paths["tiff"], bshape, 1, timeout))
        rows.append(run_one("plain-copy", "tiff", big_paths["tiff"], bshape, 1, timeout))
    shutil.rmtree(WORK_ROOT, ignore_errors=True)

    load_end = os.getloadavg()
    tbl = table(rows)
    tgt = targets(rows, args.big)
    header = (
        f"# bench_ingest{' (--quick)' if args.quick else ''}{' (--big)' if args.big else ''}\n\n"
        f"{machine_summary()}. Load average (1/5/15 min) at start "
        f"{load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, at end "
        f"{load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} (machine shared with other jobs). "
        f"{_versions()}.\n\n"
        f"Raw bytes / wall time (MB = 1e6 B), best of {reps} (ome-arrow and big: 1 run); "
        f"fresh process per case, warm page cache; tiles/chunks 512x512, zstd level 3 everywhere "
        f"except ome-arrow (its defaults: list chunk encoding, Parquet zstd). "
        f"Peak RSS = ru_maxrss (VmHWM) of the case process; base = RSS after imports.\n"
    )
    report = f"{header}\n{tbl}\n\nTargets (reported, not asserted):\n\n" + "\n".join(f"- {t}" for t in tgt)
    report += f"\n\nTotal {time.perf_counter() - t_start:.0f} s.\n"
    print(report)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"bench_ingest{'-quick' if args.quick else ''}.md"
    out.write_text(report, encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")
    bad = [r for r in rows if "error" in r and r["system"] != "ome-arrow"]
    return 1 if bad else 0


if __name__ == "__main__":
    if "--case" in sys.argv:
        case_main(CASES)
    else:
        sys.exit(main())
