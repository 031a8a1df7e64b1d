"""omeframe's Polars scan and DuckDB views vs the native scans of the same file.

Data (generated here with fixed seeds, cached under ``bench-output/query-scan-data/``):
N (5,000; 1,000 with ``--quick``) cell crops 3x64x64 uint8 (the blob + noise
crop generator of ``bench_records.py``) written with ``omeframe.write_table``
beside four feature columns (``well`` of 96, ``site``, ``area``, ``feat_0``),
once as Parquet and once as Vortex.

Queries, each timed for omeframe and for the native scan of the same file,
interleaved (omeframe, native, omeframe, ...) and best of 5 (3 with ``--quick``):

* header-only count by well: ``group_by(well).len()`` / ``GROUP BY well``;
* filter + pixels: ``well, ome_arrow WHERE area > 200`` (~10 % of the rows);
* all rows + pixels: ``ome_arrow`` of every row;
* header column filter: count by well of the rows whose ``size_x`` is 64,
  through ``header_columns`` for omeframe and ``struct.field`` for Polars
  (DuckDB: ``ome_arrow.pixels_meta.size_x`` on both sides).

Systems: ``omeframe.polars.scan`` (per-query routing, ``reader="auto"``) vs
``pl.scan_parquet`` (Parquet) and ``pl.scan_pyarrow_dataset`` over omeframe's
Vortex Arrow dataset (Vortex); ``omeframe.polars.scan(reader="omeframe")`` (the
plugin alone, the pre-routing behaviour) for reference; ``omeframe.duckdb``
views from ``register()`` vs ``read_parquet`` (Parquet) and the registered
Vortex Arrow dataset (Vortex). Every pair's results are checked to be equal.
Each system and format runs in its own fresh interpreter.

Usage::

    python benchmarks/bench_query_scan.py            # 5,000 crops (~1 minute)
    python benchmarks/bench_query_scan.py --quick    # 1,000 crops, smoke run

Prints a markdown table (times and omeframe / native ratios: below 1.00x means
omeframe is faster) and writes it to ``bench-output/bench_query_scan.md``
(``bench_query_scan-quick.md`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    OUT_DIR,
    CaseContext,
    CaseError,
    case_main,
    fmt_ratio,
    fmt_seconds,
    machine_summary,
    markdown_table,
    run_case,
)

SCRIPT = Path(__file__).resolve()
DATA_DIR = OUT_DIR / "query-scan-data"
WELLS = [f"{r}{c:02d}" for r in "ABCDEFGH" for c in range(1, 13)]
AREA = 200.0
QUERIES = ["header-only count by well", "filter + pixels", "all rows + pixels", "header column filter"]


# ---------------------------------------------------------------- data
def make_tables(n: int) -> dict[str, Path]:
    """The n-crop table as Parquet and Vortex (cached)."""
    import numpy as np

    import omeframe as of
    from bench_records import make_crops

    paths = {fmt: DATA_DIR / f"crops-{n}.{fmt}" for fmt in ("parquet", "vortex")}
    if all(p.exists() for p in paths.values()):
        return paths
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    crops = np.ascontiguousarray(make_crops(n, seed=1).transpose(0, 3, 1, 2))  # N, C, Y, X
    rng = np.random.default_rng(7)
    cols = {
        "well": [WELLS[i] for i in rng.integers(0, len(WELLS), n)],
        "site": rng.integers(1, 10, n).astype(np.int32),
        "area": rng.gamma(4.0, 30.0, n).astype(np.float32),
        "feat_0": rng.normal(0, 1, n).astype(np.float32),
    }
    ids = [f"cell{i:06d}" for i in range(n)]
    for fmt, path in paths.items():
        tmp = path.with_name(path.name + ".tmp")
        of.write_table(tmp, list(crops), dim_order="CYX", columns=cols, image_ids=ids, format=fmt)
        tmp.replace(path)
    print(f"generated {n:,} crops (Parquet + Vortex) in {time.perf_counter() - t0:.1f} s", flush=True)
    return paths


# ---------------------------------------------------------------- timing
def interleaved(pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], repeats: int) -> dict[str, Any]:
    """Best-of-``repeats`` of each (omeframe, native) pair, alternating the two."""
    out: dict[str, Any] = {}
    for name, (ours, native) in pairs.items():
        ours(), native()  # warm-up: imports, page cache, footers
        best = [float("inf"), float("inf")]
        results: list[Any] = [None, None]
        for _ in range(repeats):
            for i, fn in enumerate((ours, native)):
                t0 = time.perf_counter()
                results[i] = fn()
                best[i] = min(best[i], time.perf_counter() - t0)
        out[name] = {"ours": best[0], "native": best[1], "results": results}
    return out


# ---------------------------------------------------------------- cases
def _polars_queries(pl: Any) -> dict[str, Callable[[Any, bool], Any]]:
    def size_x(lf: Any, ours: bool) -> Any:
        col = pl.col("ome_size_x") if ours else (
            pl.col("ome_arrow").struct.field("pixels_meta").struct.field("size_x"))
        return lf.filter(col == 64).group_by("well").len().sort("well")

    return {
        "header-only count by well": lambda lf, ours: lf.group_by("well").len().sort("well"),
        "filter + pixels": lambda lf, ours: lf.filter(pl.col("area") > AREA).select("well", "ome_arrow"),
        "all rows + pixels": lambda lf, ours: lf.select("ome_arrow"),
        "header column filter": size_x,
    }


def case_polars(ctx: CaseContext) -> dict[str, Any]:
    import polars as pl
    from polars.testing import assert_frame_equal

    import omeframe.polars as ofpl
    from omeframe.formats.vortex.arrow_dataset import vortex_plain_dataset

    path, reader, repeats = ctx.params["path"], ctx.params["reader"], ctx.params["repeats"]
    vortex = path.endswith(".vortex")
    ctx.mark_baseline()

    def native_lf() -> Any:
        if vortex:
            return pl.scan_pyarrow_dataset(vortex_plain_dataset(path))
        return pl.scan_parquet(path)

    def ours_lf(name: str) -> Any:  # header columns only where the query uses them
        return ofpl.scan(path, header_columns=name == "header column filter", reader=reader)

    pairs = {}
    for name, q in _polars_queries(pl).items():
        pairs[name] = (
            lambda q=q, name=name: q(ours_lf(name), True).collect(),
            lambda q=q: q(native_lf(), False).collect(),
        )
    res = interleaved(pairs, repeats)
    routes = {}
    for name, q in _polars_queries(pl).items():
        ours, native = res[name].pop("results")
        assert_frame_equal(ours, native)
        lf = q(ours_lf(name), True)
        lf.collect()
        taken = ofpl.scan_routes(lf)
        routes[name] = taken[0].via if taken else "pl.scan_parquet (returned as is)"
    return {"timings": res, "routes": routes}


def _duckdb_queries() -> dict[str, str]:
    return {
        "header-only count by well": "SELECT well, count(*) FROM {t} GROUP BY well ORDER BY well",
        "filter + pixels": f"SELECT well, ome_arrow FROM {{t}} WHERE area > {AREA}",
        "all rows + pixels": "SELECT ome_arrow FROM {t}",
        "header column filter": (
            "SELECT well, count(*) FROM {t} WHERE ome_arrow.pixels_meta.size_x = 64 "
            "GROUP BY well ORDER BY well"
        ),
    }


def _comparable(table: Any) -> Any:
    """Rows in a canonical order (DuckDB's may vary); each record as its id and pixel byte count."""
    import pyarrow.compute as pc

    if "ome_arrow" in table.column_names:
        rec = table["ome_arrow"]
        chunks = pc.struct_field(rec, "chunks")
        n_bytes = pc.list_value_length(chunks)  # chunks per record
        table = table.drop_columns(["ome_arrow"])
        table = table.append_column("id", pc.struct_field(rec, "id")).append_column("n_chunks", n_bytes)
    return table.sort_by([(c, "ascending") for c in table.column_names])


def case_duckdb(ctx: CaseContext) -> dict[str, Any]:
    import omeframe.duckdb as ofdb
    from omeframe.formats.vortex.arrow_dataset import vortex_plain_dataset

    path, repeats = ctx.params["path"], ctx.params["repeats"]
    con = ofdb.connect()
    ctx.mark_baseline()
    ofdb.register(con, "cells", path)
    if path.endswith(".vortex"):
        native_ds = vortex_plain_dataset(path)
        con.register("native_cells", native_ds)
        native = "native_cells"
    else:
        native = "read_parquet('" + path.replace("'", "''") + "')"
    pairs = {
        name: (
            lambda sql=sql: con.sql(sql.format(t="cells")).to_arrow_table(),
            lambda sql=sql: con.sql(sql.format(t=native)).to_arrow_table(),
        )
        for name, sql in _duckdb_queries().items()
    }
    res = interleaved(pairs, repeats)
    routes = {}
    for name, sql in _duckdb_queries().items():
        ours, theirs = (_comparable(t) for t in res[name].pop("results"))
        assert ours.equals(theirs), name
        plan = "\n".join(r[1] for r in con.sql("EXPLAIN " + sql.format(t="cells")).fetchall())
        routes[name] = "read_parquet" if "READ_PARQUET" in plan else (
            "arrow dataset" if "ARROW_SCAN" in plan else "?")
    return {"timings": res, "routes": routes}


CASES = {"polars": case_polars, "duckdb": case_duckdb}


# ---------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 crops, best of 3")
    args = ap.parse_args()
    n = 1_000 if args.quick else 5_000
    repeats = 3 if args.quick else 5
    paths = make_tables(n)
    lines: list[str] = []

    def emit(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    versions = {p: metadata.version(p) for p in ("omeframe", "duckdb", "polars", "pyarrow", "vortex-data")}
    emit(f"# bench_query_scan{' (--quick)' if args.quick else ''}")
    emit()
    emit(f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}; {machine_summary()}; "
         + ", ".join(f"{k} {v}" for k, v in versions.items()))
    emit(f"{n:,} crops 3x64x64 uint8 + 4 feature columns; Parquet {paths['parquet'].stat().st_size / 1e6:.1f} MB, "
         f"Vortex {paths['vortex'].stat().st_size / 1e6:.1f} MB. Warm page cache; best of {repeats}, "
         "omeframe and native runs interleaved; results checked equal. ratio = omeframe / native "
         "(below 1.00x: omeframe faster).")
    emit()
    rows = []
    failures = 0
    systems = [
        ("Polars", "polars", {"reader": "auto"}, "omeframe.polars.scan", "pl.scan_parquet / pl.scan_pyarrow_dataset"),
        ("Polars (plugin only)", "polars", {"reader": "omeframe"}, "scan(reader='omeframe')", "same"),
        ("DuckDB", "duckdb", {}, "register() view", "read_parquet / Arrow dataset"),
    ]
    for label, case, extra, _, _ in systems:
        for fmt in ("parquet", "vortex"):
            try:
                r = run_case(SCRIPT, case, {"path": str(paths[fmt]), "repeats": repeats, **extra}, timeout=900)
            except CaseError as exc:
                failures += 1
                print(f"!! {exc}", file=sys.stderr, flush=True)
                continue
            for q in QUERIES:
                t = r["timings"][q]
                rows.append([q, fmt, label, fmt_seconds(t["ours"]), fmt_seconds(t["native"]),
                             fmt_ratio(t["ours"] / t["native"]), r["routes"][q]])
    rows.sort(key=lambda row: (QUERIES.index(row[0]), row[1]))
    emit(markdown_table(["query", "format", "engine", "omeframe", "native", "ratio", "omeframe read via"],
                        rows, "lllrrrl"))
    emit()
    emit("native: Polars `pl.scan_parquet` (Parquet) or `pl.scan_pyarrow_dataset` over omeframe's Vortex "
         "Arrow dataset; DuckDB `read_parquet` (Parquet) or that Arrow dataset registered directly (Vortex).")
    out = OUT_DIR / f"bench_query_scan{'-quick' if args.quick else ''}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    if "--case" in sys.argv:
        case_main(CASES)
    else:
        sys.exit(main())
