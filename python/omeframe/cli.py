"""The ``omeframe`` command line: demo, info, ingest, verify, sql, export."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _say(msg: str) -> None:
    print(msg, flush=True)


def _demo(args: argparse.Namespace) -> int:
    import duckdb
    import numpy as np
    import polars as pl

    import omeframe as of

    from ._sample import make_sample

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _say(f"omeframe {of.__version__} demo -> {out}/")
    sample = make_sample(size=args.size)
    slide = sample.slide
    _say(f"1. made a synthetic slide: CYX {slide.shape} uint16 with {len(sample.centers)} cells")

    # Ingest the slide as a chunked dataset, and one crop per cell as a record table.
    ds = of.write_dataset(
        slide, out / "slide.omeds", dim_order="CYX", image_ids=["slide-1"],
        chunk_shape=(1, 256, 256), mode="overwrite", progress=False,
    )
    e = ds.entry("slide-1")
    _say(f"2. wrote dataset {ds.path.name}: {e.n_chunks} chunks of 256x256, "
         f"{e.row['stored_bytes'] / 2**20:.1f} MiB stored (raw {slide.nbytes / 2**20:.1f} MiB)")
    crops, rows = [], {"cell_id": [], "well": [], "y": [], "x": [], "radius": [], "dapi_mean": []}
    for i, ((cy, cx), r) in enumerate(zip(sample.centers, sample.radii)):
        crop = slide[:, cy - 32 : cy + 32, cx - 32 : cx + 32]
        crops.append(crop)
        rows["cell_id"].append(i)
        rows["well"].append("AB"[i % 2] + str(1 + (i // 2) % 3))
        rows["y"].append(int(cy))
        rows["x"].append(int(cx))
        rows["radius"].append(float(r))
        rows["dapi_mean"].append(float(crop[0].mean()))
    table_path = of.write_table(
        out / "cells.parquet", crops, dim_order="CYX", columns=rows,
        image_ids=[f"cell-{i}" for i in rows["cell_id"]], channel_names=list(sample.channel_names),
    )
    _say(f"3. wrote record table {table_path.name}: {len(crops)} rows (one 3x64x64 crop per cell + 6 feature columns)")

    # Query the image table with DuckDB and Polars, without omeframe in the loop.
    con = duckdb.connect()
    q = (
        "SELECT well, count(*) AS cells, round(avg(radius), 2) AS mean_radius, "
        "any_value(ome_arrow.pixels_meta.size_c) AS channels "
        f"FROM read_parquet('{table_path.as_posix()}') GROUP BY well ORDER BY well"
    )
    res = con.sql(q).fetchall()
    _say("4. DuckDB: cells per well (struct fields straight from the OME-Arrow column)")
    for well, n, rad, nc in res:
        _say(f"     {well}: {n} cells, mean radius {rad}, {nc} channels")
    big = (
        pl.scan_parquet(table_path)
        .filter(pl.col("radius") > 14.0)
        .select("cell_id", "well", pl.col("ome_arrow").struct.field("id").alias("image_id"))
        .collect()
    )
    _say(f"5. Polars: {big.height} cells with radius > 14, e.g. {big.head(3).to_dicts()}")

    # Lazy ROI read: only the chunks it touches.
    cy, cx = (int(v) for v in sample.centers[int(big['cell_id'][0]) if big.height else 0])
    y0, x0 = max(0, cy - 200), max(0, cx - 200)
    plan = of.scan(out / "slide.omeds", image_id="slide-1").select(
        c=[0, 1], y=(y0, min(slide.shape[1], y0 + 400)), x=(x0, min(slide.shape[2], x0 + 400))
    )
    _say("6. lazy ROI plan:")
    for line in plan.explain().splitlines():
        _say("     " + line)
    roi = plan.export("numpy")
    assert np.array_equal(roi[0, :, 0], slide[:2, y0 : y0 + roi.shape[3], x0 : x0 + roi.shape[4]])
    _say(f"   read ROI {roi.shape} and checked it against the source pixels")

    # Thumbnail of the whole slide.
    png = of.thumbnail_png(of.scan(out / "slide.omeds"), size=512)
    (out / "thumbnail.png").write_bytes(png)
    crop_png = of.thumbnail_png(of.from_ome_parquet(table_path, row_index=int(big["cell_id"][0]) if big.height else 0), size=128)
    (out / "cell.png").write_bytes(crop_png)
    _say(f"7. wrote thumbnail.png ({len(png) / 1024:.0f} KiB) and cell.png ({len(crop_png) / 1024:.0f} KiB)")
    _say(f"done in {time.perf_counter() - t0:.1f} s; outputs in {out}/")
    return 0


def _info(args: argparse.Namespace) -> int:
    import omeframe as of

    p = Path(args.path)
    if p.is_dir() and (p / "manifest.json").exists():
        ds = of.open_dataset(p)
        _say(f"dataset {p} ({ds.format}), {len(ds)} images")
        for iid in ds.image_ids:
            for lv in ds.levels(iid):
                m = ds.image_metadata(iid, lv)
                _say(f"  {iid} level {lv}: TCZYX {m['shape']} {m['dtype']}, chunks {m['chunk_shape']}, "
                     f"{m['n_chunks']} chunks, {m['stored_bytes'] / 2**20:.1f} MiB, codec {m['codec']}")
        return 0
    if p.suffix.lower() in (".parquet", ".vortex", ".pq", ".vtx"):
        from .storage.records import detect_format, find_record_column

        fmt = detect_format(p)
        if fmt == "parquet":
            from .storage.parquet import open_parquet

            pf = open_parquet(p)
            schema, n, groups = pf.schema_arrow, pf.metadata.num_rows, pf.metadata.num_row_groups
        else:
            from .storage._vortex import read_vortex_schema, vortex_num_rows

            schema, n, groups = read_vortex_schema(p), vortex_num_rows(p), None
        col = find_record_column(schema, None, source=str(p))
        _say(f"record table {p} ({fmt}): {n} rows" + (f" in {groups} row groups" if groups else ""))
        _say(f"  OME-Arrow column: {col!r}; other columns: {[c for c in schema.names if c != col]}")
        for i in range(min(n, args.rows)):
            _say(f"  row {i}: {of.scan(p, row_index=i, column_name=col).info()['summary']}")
        return 0
    img = of.scan(p)
    _say(f"{p}: {img.info()['summary']}")
    _say(img.explain())
    return 0


def _verify(args: argparse.Namespace) -> int:
    import omeframe as of

    p = Path(args.path)
    if p.is_dir() and (p / "manifest.json").exists():
        res = of.open_dataset(p).verify()
        _say(f"ok: {res['images']} images, {res['chunks']} chunks, {res['bytes'] / 2**20:.1f} MiB checked")
        return 0
    from .storage.records import detect_format, find_record_column

    n = 0
    if detect_format(p) == "parquet":
        from .storage.parquet import open_parquet

        pf = open_parquet(p)
        col = find_record_column(pf.schema_arrow, None, source=str(p))
        for g in range(pf.metadata.num_row_groups):  # one row group in memory at a time
            for rec in pf.read_row_group(g, columns=[col])[col]:
                of.to_numpy(rec)
                n += 1
    else:
        from .storage._vortex import read_vortex_schema, read_vortex_table, vortex_num_rows

        col = find_record_column(read_vortex_schema(p), None, source=str(p))
        for i in range(vortex_num_rows(p)):
            of.to_numpy(read_vortex_table(p, columns=[col], rows=[i])[col][0])
            n += 1
    _say(f"ok: {n} records decode")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="omeframe", description="Arrow-native image tables.")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the end-to-end demo on a synthetic sample")
    d.add_argument("--out", default="demo-output", help="output directory (default: demo-output)")
    d.add_argument("--size", type=int, default=2048, help="slide size in pixels (default 2048)")
    d.set_defaults(fn=_demo)
    i = sub.add_parser("info", help="describe a record table, dataset, OME-Zarr or TIFF")
    i.add_argument("path")
    i.add_argument("--rows", type=int, default=3, help="rows of a record table to describe")
    i.set_defaults(fn=_info)
    v = sub.add_parser("verify", help="check every chunk checksum (datasets) or decode every record")
    v.add_argument("path")
    v.set_defaults(fn=_verify)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``omeframe`` command; returns the exit status."""
    from .errors import OmeframeError

    args = _build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except (OmeframeError, FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        print(f"omeframe {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
