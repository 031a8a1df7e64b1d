"""Queries over record tables: DuckDB vs Polars, ome_stats in SQL vs ome-arrow 0.1.0, catalog build.

Data (generated here with fixed seeds, cached under ``bench-output/query-data/``):

* ``cells``: N (100,000; 10,000 with ``--quick``) 64x64x3 uint8 cell crops
  (``dim_order="YXC"``, the crop generator of ``bench_records.py``) with 20
  feature columns (plate, well, site, area + 16 float32 features), one file;
* ``cells-10000``: 10,000 crops (the generator's first 10,000; same pixels
  as the first rows of ``cells``), for the per-image statistics;
* ``tiffs/``: 2,000 (200 with ``--quick``) small 2x128x128 uint16 TIFFs.

Cases, each in a fresh interpreter:

* metadata/feature query ``well, count(*), avg(area) WHERE area > 100 AND
  well LIKE 'A%' GROUP BY well`` with DuckDB (``omeframe.duckdb``),
  ``omeframe.polars.scan(header_columns=True)`` and plain ``pl.scan_parquet``.
  The first run in the fresh process is "cold" (page cache is warm: it cannot
  be dropped here); "warm" is the best of the following runs. Bytes read are
  the ``/proc/self/io`` ``rchar`` delta of the first run (the read() syscalls
  of every thread, including DuckDB's own IO, plus a little of Python's own);
  memory-mapped reads do not show in ``rchar``, so an extra untimed run polls
  the resident size of mappings of the data file (``/proc/self/smaps``, every
  ~1 ms, so a short-lived mapping may be under-counted) and the larger of
  both is what the target checks.
* ``ome_stats(ome_arrow, 1)`` over 10,000 crops in DuckDB SQL vs ome-arrow
  0.1.0 per row: ``from_ome_parquet(row_index=i)`` + ``to_numpy`` + numpy
  min/max/mean/std of channel 1 (timed on a prefix of rows and extrapolated to
  10,000) and the fairer variant that reads the table once with pyarrow and
  calls ``to_numpy`` per row (all rows, unless a time budget cuts it short;
  then extrapolated too). Results are checked against the SQL statistics.
* ``omeframe.catalog.build(tiffs, out, workers=2)`` vs ``workers=1`` into
  fresh output directories, best of 2 (each run its own process).

Usage::

    python benchmarks/bench_query.py            # full size (~10 minutes)
    python benchmarks/bench_query.py --quick    # smoke run, under a minute
    python benchmarks/bench_query.py --only catalog   # one section: query, stats or catalog

Prints markdown tables plus the issue's targets (PASS/MISS, reported, not
asserted) and writes them to ``bench-output/bench_query.md``
(``bench_query-quick.md`` for ``--quick``; ``--only SECTION`` appends
``-SECTION``, so a partial run never overwrites the full report).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    OUT_DIR,
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
DATA_DIR = OUT_DIR / "query-data"
COLUMN = "ome_arrow"
N_FEATURES = 16  # float32 features besides plate, well, site, area (20 columns in all)
STATS_ROWS = 10_000
SQL_QUERY = (
    "SELECT well, count(*) AS n, avg(area) AS mean_area FROM cells "
    "WHERE area > 100 AND well LIKE 'A%' GROUP BY well ORDER BY well"
)
WELLS = [f"{r}{c:02d}" for r in "ABCDEFGH" for c in range(1, 13)]
SECTIONS = ("query", "stats", "catalog")  # --only choices: the report's sections


# ---------------------------------------------------------------- /proc helpers
def rchar() -> int:
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def mapped_rss(path: str) -> int:
    """Resident bytes of this process's memory mappings of ``path`` (0 if none)."""
    total, inside = 0, False
    target = os.path.realpath(path)
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                inside = line.rstrip("\n").endswith(target)
            elif inside and head == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


class MmapProbe:
    """Poll the resident size of mappings of one file in a thread (max seen)."""

    def __init__(self, path: str) -> None:
        import threading

        self.path, self.peak, self._stop = path, 0, threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, mapped_rss(self.path))
            self._stop.wait(0.001)

    def __enter__(self) -> MmapProbe:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, mapped_rss(self.path))


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- data
def _features(n: int, seed: int = 7) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {
        "plate": [f"P{(i // 10_000) + 1:02d}" for i in range(n)],
        "well": [WELLS[i] for i in rng.integers(0, len(WELLS), n)],
        "site": rng.integers(1, 10, n).astype(np.int32),
        "area": rng.gamma(4.0, 30.0, n).astype(np.float32),
    }
    for k in range(N_FEATURES):
        cols[f"feat_{k:02d}"] = rng.normal(0, 1, n).astype(np.float32)
    return cols


def make_tables(n: int) -> tuple[Path, Path]:
    """Write the n-row table and its 10k-row prefix (cached)."""
    import pyarrow as pa

    import omeframe
    from bench_records import make_crops

    big = DATA_DIR / f"cells-{n}.parquet"
    small = DATA_DIR / f"cells-{min(n, STATS_ROWS)}.parquet"
    if big.exists() and small.exists():
        return big, small
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chunks = []
    batch = 10_000
    for lo in range(0, n, batch):
        crops = make_crops(min(batch, n - lo), seed=1 + lo // batch)
        ids = [f"cell{i:06d}" for i in range(lo, lo + len(crops))]
        chunks.append(
            omeframe.records_from_arrays(list(crops), dim_order="YXC", image_ids=ids, progress=False)
        )
        del crops
    col = pa.chunked_array(chunks)
    feats = _features(n)
    table = pa.table({COLUMN: col, **{k: pa.array(v) for k, v in feats.items()}})
    for path, t in ((big, table), (small, table.slice(0, STATS_ROWS))):
        if not path.exists():
            omeframe.write_table(path, t, column_name=COLUMN)
    print(f"generated {n:,} crops in {time.perf_counter() - t0:.1f} s", flush=True)
    return big, small


def make_tiffs(n: int) -> Path:
    import numpy as np
    import tifffile

    d = DATA_DIR / "tiffs"
    d.mkdir(parents=True, exist_ok=True)
    have = len(list(d.glob("*.tif")))
    if have < n:
        rng = np.random.default_rng(3)
        for i in range(n):
            p = d / f"img{i:05d}.tif"
            if not p.exists():
                img = rng.integers(0, 4096, (2, 128, 128), dtype=np.uint16)
                tifffile.imwrite(p, img)
    return d


def tiff_subset(n: int) -> Path:
    """A directory with exactly n TIFFs (symlinks into the cache) for the build."""
    src = make_tiffs(n)
    d = DATA_DIR / f"tiffs-{n}"
    if not d.exists() or len(list(d.iterdir())) != n:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for i in range(n):
            shutil.copy2(src / f"img{i:05d}.tif", d / f"img{i:05d}.tif")
    return d


# ---------------------------------------------------------------- cases
def _query_case(ctx: CaseContext, run: Any) -> dict[str, Any]:
    """Time `run()` cold (first, with IO counters) and warm (best of the rest)."""
    ctx.mark_baseline()
    r0 = rchar()
    t0 = time.perf_counter()
    result = run()
    cold = time.perf_counter() - t0
    r1 = rchar()
    warm, result2 = best_of(run, ctx.params.get("repeats", 5), budget_s=5.0)
    r2 = rchar()
    assert result == result2
    # One more, untimed run with a thread watching mmaps of the data file: a
    # reader that memory-maps the file reads pages rchar never counts.
    with MmapProbe(ctx.params["path"]) as probe:
        run()
    return {
        "cold": cold,
        "warm": warm.best,
        "rchar": r1 - r0,
        "mmap": probe.peak,
        "rchar_warm_per_run": (r2 - r1) / len(warm.runs),
        "result": result,
        "file_size": dir_size(ctx.params["path"]),
    }


def case_duckdb(ctx: CaseContext) -> dict[str, Any]:
    import omeframe.duckdb  # noqa: F401
    from omeframe.query import duckdb_conn

    preload_pyarrow()
    con = duckdb_conn.connect()
    con.execute("SELECT 1").fetchall()
    path = ctx.params["path"]

    def run() -> list[Any]:
        duckdb_conn.register(con, "cells", path)  # in the timing: a fresh view each run
        return [(w, n, round(a, 3)) for w, n, a in con.execute(SQL_QUERY).fetchall()]

    return _query_case(ctx, run)


def _polars_query(lf: Any) -> list[Any]:
    """The benchmark's filter + group-by on a Polars LazyFrame (the SQL query's twin)."""
    import polars as pl

    df = (
        lf.filter((pl.col("area") > 100) & pl.col("well").str.starts_with("A"))
        .group_by("well")
        .agg(pl.len().alias("n"), pl.col("area").mean().alias("mean_area"))
        .sort("well")
        .collect()
    )
    return [(w, n, round(a, 3)) for w, n, a in df.iter_rows()]


def case_polars_omeframe(ctx: CaseContext) -> dict[str, Any]:
    import polars  # noqa: F401 - imported before the timing, as in the plain case

    import omeframe.polars as op

    preload_pyarrow()
    path = ctx.params["path"]
    return _query_case(ctx, lambda: _polars_query(op.scan(path, header_columns=True)))


def case_polars_plain(ctx: CaseContext) -> dict[str, Any]:
    import polars as pl

    preload_pyarrow()
    path = ctx.params["path"]
    return _query_case(ctx, lambda: _polars_query(pl.scan_parquet(path)))


def case_stats_sql(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np

    from omeframe.query import duckdb_conn

    preload_pyarrow()
    con = duckdb_conn.connect()
    duckdb_conn.register(con, "cells", ctx.params["path"])
    ctx.mark_baseline()
    sql = f"SELECT ome_stats({COLUMN}, 1) AS s FROM cells LIMIT {STATS_ROWS}"

    def run() -> Any:
        res = con.execute(sql)
        fetch = getattr(res, "to_arrow_table", None) or res.fetch_arrow_table
        return fetch()

    t0 = time.perf_counter()
    tab = run()
    cold = time.perf_counter() - t0
    warm, tab = best_of(run, 3, budget_s=20.0)
    s = tab.column("s").combine_chunks()
    stats = np.stack([s.field(k).to_numpy() for k in ("min", "max", "mean", "std")], axis=1)
    np.save(ctx.params["out"], stats)
    return {"cold": cold, "warm": warm.best, "rows": len(s)}


def _oa_stats(arr: Any) -> list[float]:
    ch = arr[:, 1]
    return [float(ch.min()), float(ch.max()), float(ch.mean()), float(ch.std())]


def case_stats_oa_loop(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np
    import ome_arrow

    preload_pyarrow()
    ctx.mark_baseline()
    path, n, budget = ctx.params["path"], ctx.params["rows"], ctx.params["budget"]
    out = []
    t0 = time.perf_counter()
    for i in range(n):
        rec = ome_arrow.from_ome_parquet(path, column_name=COLUMN, row_index=i)
        out.append(_oa_stats(ome_arrow.to_numpy(rec, dtype=np.uint8)))
        if time.perf_counter() - t0 > budget:
            break
    dt = time.perf_counter() - t0
    np.save(ctx.params["out"], np.array(out))
    return {"seconds": dt, "rows": len(out)}


def case_stats_oa_table(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np
    import ome_arrow
    import pyarrow.parquet as pq

    preload_pyarrow()
    ctx.mark_baseline()
    path, n, budget = ctx.params["path"], ctx.params["rows"], ctx.params["budget"]
    out = []
    t0 = time.perf_counter()
    col = pq.read_table(path, columns=[COLUMN])[COLUMN]
    t_read = time.perf_counter() - t0
    done = False
    for ch in col.chunks:
        for i in range(len(ch)):
            out.append(_oa_stats(ome_arrow.to_numpy(ch[i], dtype=np.uint8)))
            if len(out) >= n or time.perf_counter() - t0 > budget:
                done = True
                break
        if done:
            break
    dt = time.perf_counter() - t0
    np.save(ctx.params["out"], np.array(out))
    return {"seconds": dt, "read_seconds": t_read, "rows": len(out)}


def case_catalog(ctx: CaseContext) -> dict[str, Any]:
    import omeframe.catalog

    out = Path(ctx.params["out"])
    shutil.rmtree(out, ignore_errors=True)
    # files/s is a throughput: the one-off first import of the file readers
    # (identical for the serial and the parallel build) stays out of the timing.
    import tifffile  # noqa: F401
    import zarr  # noqa: F401

    import omeframe.formats.dataset.ingest  # noqa: F401
    import omeframe.registry  # noqa: F401

    ctx.mark_baseline()
    t0 = time.perf_counter()
    res = omeframe.catalog.build(ctx.params["src"], out, workers=ctx.params["workers"], progress=False)
    dt = time.perf_counter() - t0
    summary = str(res)
    n_ok = None
    for attr in ("n_ok", "ok", "succeeded", "n_files"):
        v = getattr(res, attr, None)
        if isinstance(v, int):
            n_ok = v
            break
    import pyarrow.parquet as pq

    cat = pq.read_table(out / "catalog.parquet")
    status = cat.column("status").to_pylist() if "status" in cat.column_names else []
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": dt,
        "rows": cat.num_rows,
        "ok": sum(s == "ok" for s in status) if status else n_ok,
        "summary": summary[:200],
    }


CASES = {
    "duckdb": case_duckdb,
    "polars_omeframe": case_polars_omeframe,
    "polars_plain": case_polars_plain,
    "stats_sql": case_stats_sql,
    "stats_oa_loop": case_stats_oa_loop,
    "stats_oa_table": case_stats_oa_table,
    "catalog": case_catalog,
}


# ---------------------------------------------------------------- driver
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k rows, 200 TIFFs, < 60 s")
    ap.add_argument("--only", choices=SECTIONS, help="run one section only (its own report file)")
    args = ap.parse_args()
    quick = args.quick
    todo = [sec for sec in SECTIONS if args.only in (None, sec)]
    n_rows = 10_000 if quick else 100_000
    n_tiffs = 200 if quick else 2_000
    loop_rows = 50 if quick else 300
    table_budget = 3.0 if quick else 60.0
    t_start = time.perf_counter()
    load_start = loadavg()
    out_lines: list[str] = []

    def emit(s: str = "") -> None:
        print(s, flush=True)
        out_lines.append(s)

    if "query" in todo or "stats" in todo:
        big, small = make_tables(n_rows)
    if "catalog" in todo:
        tdir = tiff_subset(n_tiffs)
    tmp = DATA_DIR / "tmp"
    tmp.mkdir(exist_ok=True)
    failures = 0

    def run(case: str, **params: Any) -> dict[str, Any] | None:
        nonlocal failures
        try:
            return run_case(SCRIPT, case, params, timeout=900)
        except CaseError as exc:
            failures += 1
            print(f"!! {exc}", file=sys.stderr, flush=True)
            return None

    versions = {p: metadata.version(p) for p in ("omeframe", "ome-arrow", "duckdb", "polars", "pyarrow")}
    emit(f"# bench_query{' (--quick)' if quick else ''}{f' (--only {args.only})' if args.only else ''}")
    emit()
    emit(f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}; {machine_summary()}; "
         + ", ".join(f"{k} {v}" for k, v in versions.items()))
    emit(f"Load average (1/5/15 min) at start: {load_start} (shared machine; timings are noisy).")
    emit("Page cache is warm for every case (it cannot be dropped here): 'cold' = first run in a "
         "fresh process.")
    emit()

    agree = True
    q: dict[str, dict[str, Any] | None] = {}
    n_stats = min(n_rows, STATS_ROWS)
    loop_est: float | None = None
    tab_est: float | None = None
    sql_s: float | None = None
    cat: dict[int, float | None] = {}
    # ---- metadata/feature query
    if "query" in todo:
        qrows = []
        for label, case in (("DuckDB (omeframe.duckdb)", "duckdb"),
                            ("Polars omeframe.polars.scan", "polars_omeframe"),
                            ("Polars pl.scan_parquet", "polars_plain")):
            r = q[case] = run(case, path=str(big))
            if r is None:
                qrows.append([label, "failed", "", "", "", "", ""])
                continue
            read = max(r["rchar"], r["mmap"])
            qrows.append([
                label, fmt_seconds(r["cold"]), fmt_seconds(r["warm"]),
                fmt_mib(r["rchar"], 2), fmt_mib(r["mmap"], 2),
                f"{100 * read / r['file_size']:.2f}%", fmt_mib(r["peak_rss"] - r["baseline_rss"]),
            ])
        results = {k: v["result"] for k, v in q.items() if v}
        agree = len({repr(v) for v in results.values()}) == 1
        fsize = dir_size(big)
        emit(f"## Metadata/feature query over {n_rows:,} crops ({fsize / MiB:.0f} MiB file)")
        emit()
        emit(f"`{SQL_QUERY}` (Polars: the same filter/group_by/agg). Results agree across engines: "
             f"{'yes' if agree else 'NO'}.")
        emit()
        emit(markdown_table(
            ["engine", "cold", "warm (best)", "rchar MiB", "mmap RSS MiB", "% of file", "peak RSS +MiB"],
            qrows, "lrrrrrr"))
        emit()

    # ---- ome_stats
    if "stats" in todo:
        sql_npy, loop_npy, tab_npy = (tmp / f"{k}.npy" for k in ("sql", "loop", "tab"))
        s_sql = run("stats_sql", path=str(small), out=str(sql_npy))
        s_loop = run("stats_oa_loop", path=str(small), out=str(loop_npy), rows=loop_rows, budget=60.0)
        s_tab = run("stats_oa_table", path=str(small), out=str(tab_npy), rows=n_stats, budget=table_budget)
        import numpy as np

        def check(npy: Path, r: dict[str, Any] | None) -> str:
            if r is None or s_sql is None:
                return "-"
            a, b = np.load(sql_npy), np.load(npy)
            return "yes" if np.allclose(a[: len(b)], b, rtol=1e-6, atol=1e-6) else "NO"

        srows = []
        sql_s = s_sql["warm"] if s_sql else None
        if s_sql:
            srows.append(["SQL `ome_stats(ome_arrow, 1)` (DuckDB)", f"{s_sql['rows']:,}",
                          fmt_seconds(s_sql["cold"]), fmt_seconds(s_sql["warm"]), "measured", "1.00x", "ref"])
        for label, r, npy in (("ome-arrow `from_ome_parquet(row_index=i)` + to_numpy", s_loop, loop_npy),
                              ("ome-arrow pyarrow read once + to_numpy per row", s_tab, tab_npy)):
            if r is None:
                srows.append([label, "failed", "", "", "", "", ""])
                continue
            est = r["seconds"] * n_stats / r["rows"]
            if r is s_loop:
                loop_est = est
            else:
                tab_est = est
            how = "measured" if r["rows"] >= n_stats else f"extrapolated from {r['rows']:,} rows"
            srows.append([label, f"{n_stats:,}", fmt_seconds(est), "-", how,
                          fmt_ratio(est / sql_s) if sql_s else "-", check(npy, r)])
        emit(f"## Per-image statistics of channel 1 over {n_stats:,} crops")
        emit()
        emit(markdown_table(["method", "rows", "time (cold)", "warm", "how", "slower than SQL (warm)",
                             "stats match SQL"], srows, "lrrrlrl"))
        emit()

    # ---- catalog
    if "catalog" in todo:
        crows = []
        for workers in (1, 2):
            runs = []
            for k in range(2):
                r = run("catalog", src=str(tdir), out=str(tmp / f"catalog-w{workers}-{k}"), workers=workers)
                if r is not None:
                    runs.append(r)
            if not runs:
                cat[workers] = None
                crows.append([f"workers={workers}", "failed", "", "", ""])
                continue
            best = min(x["seconds"] for x in runs)
            cat[workers] = n_tiffs / best
            crows.append([f"workers={workers}" + (" (serial)" if workers == 1 else ""),
                          " / ".join(fmt_seconds(x["seconds"]) for x in runs), fmt_seconds(best),
                          f"{n_tiffs / best:.0f}", f"{runs[-1]['ok']}/{runs[-1]['rows']}"])
        emit(f"## Catalog build: {n_tiffs:,} TIFFs (2x128x128 uint16), best of 2, fresh output dirs")
        emit()
        emit(markdown_table(["build", "runs", "best", "files/s", "ok rows"], crows, "lrrrr"))
        emit()

    # ---- targets
    emit("## Targets")
    emit()
    query_targets = (("DuckDB", "duckdb"), ("omeframe.polars", "polars_omeframe"))
    for label, case in query_targets if "query" in todo else ():
        r = q.get(case)
        if r is None:
            emit(f"- MISS: metadata query ({label}): case failed")
            continue
        frac = max(r["rchar"], r["mmap"]) / r["file_size"]
        ok = frac < 0.02 and r["cold"] < 0.1
        emit(f"- {'PASS' if ok else 'MISS'}: metadata query ({label}) over {n_rows:,} images reads "
             f"{100 * frac:.2f}% of the file's bytes (< 2%) in {fmt_seconds(r['cold'])} cold / "
             f"{fmt_seconds(r['warm'])} warm (< 100 ms, checked on cold; warm "
             f"{'also under' if r['warm'] < 0.1 else 'over'} 100 ms)")
    stats_targets = (("from_ome_parquet loop", loop_est), ("pyarrow read + to_numpy loop", tab_est))
    for label, est in stats_targets if "stats" in todo else ():
        if est is None or sql_s is None:
            emit(f"- MISS: ome_stats SQL vs ome-arrow {label}: case failed")
            continue
        ratio = est / sql_s
        emit(f"- {'PASS' if ratio >= 10 else 'MISS'}: ome_stats over {n_stats:,} crops in SQL "
             f"{fmt_seconds(sql_s)} vs ome-arrow {label} {fmt_seconds(est)}: {fmt_ratio(ratio)} (>= 10x)")
    if "catalog" in todo:
        if cat.get(1) and cat.get(2):
            sp = cat[2] / cat[1]
            emit(f"- {'PASS' if sp >= 1.7 else 'MISS'}: catalog build 2 workers {cat[2]:.0f} files/s vs "
                 f"serial {cat[1]:.0f} files/s: {fmt_ratio(sp)} (>= 1.7x)")
        else:
            emit("- MISS: catalog build: case failed")
    emit()
    emit(f"Load average at end: {loadavg()}; total {time.perf_counter() - t_start:.0f} s.")

    OUT_DIR.mkdir(exist_ok=True)
    tag = ("-quick" if quick else "") + (f"-{args.only}" if args.only else "")  # never overwrite the full report
    md = OUT_DIR / f"bench_query{tag}.md"
    md.write_text("\n".join(out_lines) + "\n")
    print(f"wrote {md}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures or not agree else 0


if __name__ == "__main__":
    if "--case" in sys.argv:
        case_main(CASES)
    else:
        sys.exit(main())
