"""The ``omeframe`` command line: demo, info, ingest, verify, sql, export.

``info``, ``verify``, ``sql --table``, ``ingest`` (its inputs) and ``export`` (source and output) take
URLs (``s3://``, ``gs://``, ``https://`` ...) as well as paths; options of
their filesystem come from the environment (``AWS_*`` ...) and from
``--storage-option KEY=VALUE`` (repeatable; values are parsed as JSON when
they can be, dotted keys nest: ``client_kwargs.region_name=eu-west-1``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import omeframe.duckdb as ofdb
from omeframe._sample import make_sample
from omeframe._version import __version__
from omeframe.catalog import CATALOG_SCHEMA, build, open_image, read_catalog
from omeframe.facade import OMEArrow, open_dataset, scan, write_dataset
from omeframe.formats.dataset.manifest import MANIFEST_NAME
from omeframe.formats.record.files import TABLE_FORMATS, detect_format, find_record_column
from omeframe.formats.record.image_table import open_table
from omeframe.formats.record.remote import write_remote
from omeframe.formats.record.tables import from_ome_parquet, read_table, write_table
from omeframe.formats.record.verify import verify_table
from omeframe.formats.tiff import TIFF_SUFFIXES
from omeframe.formats.tiff.writer import to_ome_tiff
from omeframe.formats.vortex.file import read_vortex_schema, vortex_has_digests, vortex_num_rows
from omeframe.formats.zarr import ZARR_SUFFIX
from omeframe.formats.zarr.writer import to_ome_zarr
from omeframe.model.errors import ImageNotFoundError, OmeframeError
from omeframe.ops.thumbnail import thumbnail_png
from omeframe.registry import find
from omeframe.shapes import read_shapes
from omeframe.shapes.schema import table_kind
from omeframe.storage.parquet import open_parquet
from omeframe.storage.remote import open_remote_file
from omeframe.storage.url import parse_location

__all__ = ["main"]


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {path!r}")
    return p


def _say(msg: str) -> None:
    print(msg, flush=True)


def _storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--storage-option KEY=VALUE`` flags as a (nested) dict; values parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for spec in getattr(args, "storage_option", None) or []:
        key, sep, text = spec.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option expects KEY=VALUE (e.g. endpoint_url=http://minio:9000), got {spec!r}")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = key.split(".")
        node = out
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"--storage-option {spec!r}: {k!r} is given both as a value and as a group")
        node[leaf] = value
    return out


def _url(path: str) -> str | None:
    """The normalised URL when ``path`` is one, ``None`` for a local path."""
    loc = parse_location(path)
    if loc is None:
        return None
    return loc.url


def _remote_kind(url: str, so: dict[str, Any]) -> str:
    """``"record-table"``, ``"dataset"`` or ``"image"`` (TIFF, OME-Zarr ...) for a URL."""
    name = url.split("?", 1)[0].rsplit("/", 1)[-1].lower()
    if any(name.endswith(sfx) for sfx in TABLE_FORMATS):
        return "record-table"
    if name.endswith(ZARR_SUFFIX) or any(name.endswith(sfx) for sfx in TIFF_SUFFIXES) or name.endswith(".npy"):
        return "image"
    try:
        open_dataset(url, storage_options=so)
    except FileNotFoundError:
        return "image"
    return "dataset"


def _info_remote(url: str, args: argparse.Namespace, so: dict[str, Any]) -> int:
    kind = _remote_kind(url, so)
    if kind == "dataset":
        return _describe_dataset(url, open_dataset(url, storage_options=so))
    if kind == "record-table":
        t = open_table(url, storage_options=so)  # the footer only (ranged reads)
        schema, n = t.schema, len(t)
        _say(f"record table {url} ({t.format}): {n} rows" + (" with a pixel index" if t.indexed else ""))
        _say(f"  OME-Arrow column: {t.column!r}; other columns: {[c for c in schema.names if c != t.column]}")
        for i in range(min(n, args.rows)):
            img = scan(url, row_index=i, column_name=t.column, storage_options=so)
            _say(f"  row {i}: {img.info()['summary']}")
        return 0
    img = scan(url, storage_options=so)
    _say(f"{url}: {img.info()['summary']}")
    _say(img.explain())
    return 0


def _describe_dataset(p: Any, ds: Any) -> int:
    _say(f"dataset {p} ({ds.format}), {len(ds)} images")
    for iid in ds.image_ids:
        for lv in ds.levels(iid):
            m = ds.image_metadata(iid, lv)
            _say(f"  {iid} level {lv}: TCZYX {m['shape']} {m['dtype']}, chunks {m['chunk_shape']}, "
                 f"{m['n_chunks']} chunks, {m['stored_bytes'] / 2**20:.1f} MiB, codec {m['codec']}")
    return 0


def _no_options_for_local(what: str, so: dict[str, Any]) -> None:
    if so:
        raise ValueError(f"--storage-option applies to URLs only, but {what!r} is a local path")


def _demo(args: argparse.Namespace) -> int:
    import duckdb
    import numpy as np
    import polars as pl



    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _say(f"omeframe {__version__} demo -> {out}/")
    sample = make_sample(size=args.size)
    slide = sample.slide
    _say(f"1. made a synthetic slide: CYX {slide.shape} uint16 with {len(sample.centers)} cells")

    # Ingest the slide as a chunked dataset, and one crop per cell as a record table.
    ds = write_dataset(
        slide, out / "slide.omeds", dim_order="CYX", image_ids=["slide-1"],
        chunk_shape=(1, 256, 256), mode="overwrite", progress=False,
    )
    e = ds.entry("slide-1")
    _say(f"2. wrote dataset {ds.path.name}: {e.n_chunks} chunks of 256x256, "
         f"{e.row['stored_bytes'] / 2**20:.1f} MiB stored (raw {slide.nbytes / 2**20:.1f} MiB)")
    crops: list[Any] = []
    rows: dict[str, list[Any]] = {"cell_id": [], "well": [], "y": [], "x": [], "radius": [], "dapi_mean": []}
    for i, ((cy, cx), r) in enumerate(zip(sample.centers, sample.radii, strict=True)):
        crop = slide[:, cy - 32 : cy + 32, cx - 32 : cx + 32]
        crops.append(crop)
        rows["cell_id"].append(i)
        rows["well"].append("AB"[i % 2] + str(1 + (i // 2) % 3))
        rows["y"].append(int(cy))
        rows["x"].append(int(cx))
        rows["radius"].append(float(r))
        rows["dapi_mean"].append(float(crop[0].mean()))
    table_path = Path(write_table(
        out / "cells.parquet", crops, dim_order="CYX", columns=rows,
        image_ids=[f"cell-{i}" for i in rows["cell_id"]], channel_names=list(sample.channel_names),
    ))
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
    plan = scan(out / "slide.omeds", image_id="slide-1").select(
        c=[0, 1], y=(y0, min(slide.shape[1], y0 + 400)), x=(x0, min(slide.shape[2], x0 + 400))
    )
    _say("6. lazy ROI plan:")
    for line in plan.explain().splitlines():
        _say("     " + line)
    roi = plan.export("numpy")
    assert np.array_equal(roi[0, :, 0], slide[:2, y0 : y0 + roi.shape[3], x0 : x0 + roi.shape[4]])
    _say(f"   read ROI {roi.shape} and checked it against the source pixels")

    # Thumbnail of the whole slide.
    png = thumbnail_png(scan(out / "slide.omeds"), size=512)
    (out / "thumbnail.png").write_bytes(png)
    crop_row = int(big["cell_id"][0]) if big.height else 0
    crop_png = thumbnail_png(from_ome_parquet(table_path, row_index=crop_row), size=128)
    (out / "cell.png").write_bytes(crop_png)
    _say(f"7. wrote thumbnail.png ({len(png) / 1024:.0f} KiB) and cell.png ({len(crop_png) / 1024:.0f} KiB)")
    _say(f"done in {time.perf_counter() - t0:.1f} s; outputs in {out}/")
    return 0


def _format_of(p: Path) -> str | None:
    """The registry's name for the format at ``p`` (``None``: no known format)."""
    entry = find(p)
    return None if entry is None else entry.name


def _info(args: argparse.Namespace) -> int:
    so = _storage_options(args)
    url = _url(args.path)
    if url is not None:
        return _info_remote(url, args, so)
    _no_options_for_local(args.path, so)
    p = _existing(args.path)
    if _is_catalog(p):
        return _catalog_info(p)
    kind = _format_of(p)
    if kind == "dataset":
        return _describe_dataset(p, open_dataset(p))
    if kind == "record-table":
        fmt = detect_format(p)
        if fmt == "parquet":
            pf = open_parquet(p)
            schema, n, groups = pf.schema_arrow, pf.metadata.num_rows, pf.metadata.num_row_groups
        else:
            schema, n, groups = read_vortex_schema(p), vortex_num_rows(p), None
        col = find_record_column(schema, None, source=str(p))
        _say(f"record table {p} ({fmt}): {n} rows" + (f" in {groups} row groups" if groups else ""))
        _say(f"  OME-Arrow column: {col!r}; other columns: {[c for c in schema.names if c != col]}")
        for i in range(min(n, args.rows)):
            _say(f"  row {i}: {scan(p, row_index=i, column_name=col).info()['summary']}")
        return 0
    img = scan(p)
    _say(f"{p}: {img.info()['summary']}")
    _say(img.explain())
    return 0


def _verify(args: argparse.Namespace) -> int:
    so = _storage_options(args)
    url = _url(args.path)
    if url is not None:
        if _remote_kind(url, so) == "dataset":
            return _verify_dataset(open_dataset(url, storage_options=so))
        # verifying decodes every record, so every byte is read anyway: one download, then the local check
        f = open_remote_file(url, so)
        assert f is not None
        with tempfile.TemporaryDirectory(prefix="omeframe-verify-") as tmp:
            local = Path(tmp) / url.split("?", 1)[0].rsplit("/", 1)[-1]
            local.write_bytes(f.read_range(0, f.size))
            return _verify_table(local, url)
    _no_options_for_local(args.path, so)
    p = _existing(args.path)
    if _is_catalog(p):
        rc = _verify_catalog_table(p)
        for sub in ("images.parquet", "dataset"):
            if (p / sub).exists():
                _say(f"{sub}:")
                rc = max(rc, _verify(argparse.Namespace(path=str(p / sub))))
        return rc
    if _format_of(p) == "dataset":
        return _verify_dataset(open_dataset(p))
    kind = _shape_table_kind(p)
    if kind is not None:
        return _verify_shapes(p, kind)
    return _verify_table(p, str(p))


def _shape_table_kind(p: Path) -> str | None:
    """``"shapes"`` / ``"relationships"`` when ``p`` is a shape or relationship table file, else ``None``."""
    fmt = TABLE_FORMATS.get(p.suffix.lower()) if p.is_file() else None
    if fmt is None:
        return None
    if fmt == "parquet":
        with open_parquet(p) as pf:  # a damaged footer is an error here already
            return table_kind(pf.schema_arrow)
    return table_kind(read_vortex_schema(p))


def _verify_shapes(p: Path, kind: str) -> int:
    try:
        n = read_shapes(p).num_rows  # every row validated; Parquet: the footer and every page's CRC checked
    except OmeframeError as exc:  # CorruptFileError, ChunkChecksumError, ShapeValidationError
        print(f"damaged: {p}: {exc}", file=sys.stderr)
        _say(f"FAILED: the {kind} table is damaged or invalid")
        return 1
    if detect_format(p) == "parquet":
        what = "page CRCs and rows checked"
    elif vortex_has_digests(p):
        what = "each row's values against its digest and every row checked"
    else:
        what = "rows checked; this Vortex file stores no checksums (written by another tool or an earlier omeframe)"
    _say(f"ok: {n} {'shapes' if kind == 'shapes' else 'relationships'}, {what}")
    return 0


def _verify_catalog_table(p: Path) -> int:
    _say("catalog.parquet:")
    try:
        n = read_catalog(p).num_rows  # footer and every page's CRC checked
    except OmeframeError as exc:  # CorruptFileError, ChunkChecksumError
        print(f"damaged: {p / 'catalog.parquet'}: {exc}", file=sys.stderr)
        _say("FAILED: catalog.parquet is damaged")
        return 1
    _say(f"ok: {n} source files listed")
    return 0


def _verify_dataset(ds: Any) -> int:
    res = ds.verify(collect=True)
    for message in res["damaged"]:
        print(f"damaged: {message}", file=sys.stderr)
    if res["damaged"]:
        _say(f"FAILED: {len(res['damaged'])} of {res['chunks']} chunks damaged")
        return 1
    _say(f"ok: {res['images']} images, {res['chunks']} chunks, {res['bytes'] / 2**20:.1f} MiB checked")
    return 0


def _verify_table(p: Path, name: str) -> int:
    report = verify_table(p)
    for damage in report.damaged:
        print(f"damaged: {name}: {damage}", file=sys.stderr)
    if not report.ok:
        _say(f"FAILED: {len(report.damaged)} damaged, {report.records} records decode")
        return 1
    _say(f"ok: {report.records} records decode ({report.pixel_bytes / 2**20:.1f} MiB of pixels checked)")
    return 0


def _is_catalog(p: Path) -> bool:
    return p.is_dir() and (p / "catalog.parquet").is_file()


def _progress_default(args: argparse.Namespace) -> bool:
    flag = getattr(args, "progress", None)
    return sys.stderr.isatty() if flag is None else bool(flag)


def _ingest(args: argparse.Namespace) -> int:

    res = build(
        args.paths,
        args.out,
        layout=args.layout,
        workers=args.workers,
        progress=_progress_default(args),
        columns_from_path=args.columns_from_path,
        image_id_from=args.image_id_from,
        max_record_bytes=int(args.max_record_mib * 2**20),
        resume=not args.no_resume,
        compression=None if args.compression == "none" else args.compression,
        timeout=None if args.timeout == 0 else args.timeout,
        storage_options=_storage_options(args) or None,
    )
    _say(f"catalog {res.out}: {res.n_files} files found; {res.summary()}")
    for name, path in res.paths.items():
        _say(f"  {name}: {path}")
    if res.n_errors:
        rows = res.errors.select(["urlpath", "error_type", "error"]).to_pylist()
        for r in rows[:10]:
            _say(f"  failed: {r['urlpath']}: {r['error_type']}: {r['error']}")
        if len(rows) > 10:
            _say(f"  ... and {len(rows) - 10} more (SELECT * FROM errors, with omeframe sql --catalog {res.out})")
        print(
            f"omeframe ingest: error: {res.n_errors} of {res.n_ingested + res.n_errors} files failed "
            f"(status='error' rows in {res.catalog_path})",
            file=sys.stderr,
        )
        return 2
    return 0


def _plain_view(con: Any, name: str, path: Path) -> list[str]:
    """A DuckDB view over a plain Parquet file (a catalog's ``catalog.parquet``)."""
    if not path.exists():
        raise FileNotFoundError(f"no such table: {str(path)!r}")
    lit = "'" + path.as_posix().replace("'", "''") + "'"
    ident = '"' + name.replace('"', '""') + '"'
    con.execute(f"CREATE OR REPLACE VIEW {ident} AS SELECT * FROM read_parquet({lit})")
    return [name]


def _register(con: Any, name: str, path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"no such table or dataset: {str(path)!r}")
    return list(ofdb.register(con, name, path) or [name])


def _register_catalog(con: Any, root: Path, prefix: str = "") -> list[str]:
    views: list[str] = []
    if (root / "images.parquet").is_file():
        views += _register(con, prefix + "images", root / "images.parquet")
    if (root / "dataset" / MANIFEST_NAME).is_file():
        views += _register(con, prefix + "dataset", root / "dataset")
    views += _plain_view(con, prefix + "catalog", root / "catalog.parquet")
    con.execute(
        f'CREATE OR REPLACE VIEW "{prefix}errors" AS SELECT urlpath, error_type, error, ingested_at '
        f"FROM \"{prefix}catalog\" WHERE status = 'error'"
    )
    return views + [prefix + "errors"]


def _bytes_label(v: bytes | bytearray) -> str:
    """How the CSV and JSON outputs show a binary value: its size, not its bytes."""
    return f"<{len(v)} bytes>"


def _json_value(v: Any) -> str:
    """``json.dumps`` fallback: binary values as their size, anything else as ``str``."""
    return _bytes_label(v) if isinstance(v, (bytes, bytearray)) else str(v)


def _cell(v: Any, width: int) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, (bytes, bytearray, memoryview)):
        s = f"<{len(v)} bytes>"
    elif isinstance(v, float):
        s = f"{v:.6g}"
    else:
        s = str(v)
    s = " ".join(s.split())
    return s if len(s) <= width else s[: width - 3] + "..."


def _print_table(names: list[str], rows: list[tuple[Any, ...]], width: int) -> None:
    cells = [[_cell(v, width) for v in r] for r in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    _say("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip())
    _say("  ".join("-" * w for w in widths))
    for r in cells:
        _say("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _without_nanoseconds(batch: Any) -> Any:
    """``batch`` (a ``pyarrow.RecordBatch``) with nanosecond timestamps shown to the microsecond.

    Python's ``datetime`` has no nanoseconds, and pyarrow converts them to
    Python objects only through pandas, which omeframe does not require.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = [
        pc.cast(col, pa.timestamp("us", col.type.tz), safe=False)
        if pa.types.is_timestamp(col.type) and col.type.unit == "ns" else col
        for col in batch.columns
    ]
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def _sql(args: argparse.Namespace) -> int:
    so = _storage_options(args)
    con = ofdb.connect()
    views: list[str] = []
    catalogs = [Path(c) for c in (args.catalog or [])]
    if not catalogs and not args.table and _is_catalog(Path.cwd()):
        catalogs = [Path.cwd()]
    for c in catalogs:
        if not _is_catalog(c):
            raise FileNotFoundError(f"{str(c)!r} is not a catalog directory (no catalog.parquet)")
        views += _register_catalog(con, c)
    for spec in args.table or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--table expects NAME=PATH, got {spec!r}")
        url = _url(path)
        if url is not None:
            views += list(ofdb.register(con, name, url, storage_options=so) or [name])
            continue
        p = Path(path)
        if _is_catalog(p):
            views += _register_catalog(con, p, prefix=name + "_")
        else:
            views += _register(con, name, p)
    if args.verbose and views:
        print(f"views: {', '.join(views)}", file=sys.stderr)
    rel = con.sql(args.query)
    if rel is None:  # a statement without a result (CREATE, SET ...)
        return 0
    names = list(rel.columns)

    def rows_of(limit: int | None) -> Any:
        # Through Arrow: no pytz/pandas needed for timestamps with time zones.
        n = 0
        for batch in rel.to_arrow_reader(1024):
            for r in _without_nanoseconds(batch).to_pylist():
                if limit is not None and n >= limit:
                    return
                n += 1
                yield tuple(r[k] for k in batch.schema.names)

    if args.format == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(names)
        for r in rows_of(None):
            w.writerow(["" if v is None else (_bytes_label(v) if isinstance(v, (bytes, bytearray)) else v) for v in r])
        return 0
    if args.format == "json":
        import json

        for r in rows_of(None):
            print(json.dumps(dict(zip(names, r, strict=True)), default=_json_value))
        return 0
    rows = list(rows_of(args.max_rows + 1))
    more = len(rows) > args.max_rows
    _print_table(names, rows[: args.max_rows], args.width)
    if more:
        _say(f"({args.max_rows}+ rows shown: --max-rows to see more)")
    else:
        _say(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return 0


def _parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    if not text:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--roi expects x,y,w,h (four integers), got {text!r}") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise ValueError(f"--roi {text!r}: x and y must be >= 0, w and h > 0")
    return x, y, w, h


def _row_of_id(path: Path | str, image_id: str, so: dict[str, Any] | None = None) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(path, str):  # a URL: the id leaf of the record column, by ranged reads
        t = open_table(path, storage_options=so)
        ids = pc.struct_field(t.read([t.column])[t.column], "id")
    elif detect_format(path) == "parquet":
        with open_parquet(path) as pf:  # footer and page CRCs checked
            col = find_record_column(pf.schema_arrow, None, source=str(path))
            ids = pf.read(columns=[f"{col}.id"]).column(0).combine_chunks().field("id")
    else:
        t = read_table(path)
        col = find_record_column(t.schema, None, source=str(path))
        ids = pc.struct_field(t[col], "id")
    hits = pc.indices_nonzero(pc.equal(ids, pa.scalar(image_id, pa.string()))).to_pylist()
    if not hits:
        raise ImageNotFoundError(f"no image {image_id!r} in {str(path)!r}")
    return int(hits[0])


def _open_remote_for_export(url: str, image_id: str | None, row: int | None, so: dict[str, Any]) -> OMEArrow:
    kind = _remote_kind(url, so)
    if kind == "dataset":
        return scan(url, image_id=image_id, storage_options=so)
    if kind == "record-table":
        idx = _row_of_id(url, image_id, so) if image_id is not None else (row or 0)
        return scan(url, row_index=idx, storage_options=so)
    return scan(url, storage_options=so)


def _open_for_export(src: Path, image_id: str | None, row: int | None) -> OMEArrow:
    if _is_catalog(src):
        cat = read_catalog(src)
        ok = [r for r in cat.select(["image_id", "status", "location"]).to_pylist() if r["status"] == "ok"]
        if image_id is None:
            if len(ok) != 1:
                raise ValueError(f"catalog {str(src)!r} holds {len(ok)} images; pick one with --image-id")
            image_id = ok[0]["image_id"]
        hit = next((r for r in ok if r["image_id"] == image_id), None)
        if hit is None:
            raise ImageNotFoundError(f"no ingested image {image_id!r} in catalog {str(src)!r}")
        if hit["location"] == "dataset":
            return scan(src / "dataset", image_id=image_id)
        return scan(src / "images.parquet", row_index=_row_of_id(src / "images.parquet", image_id))
    kind = _format_of(src)
    if kind == "dataset":
        return scan(src, image_id=image_id)
    if kind == "record-table":
        idx = _row_of_id(src, image_id) if image_id is not None else (row or 0)
        return scan(src, row_index=idx)
    if src.suffix.lower() == ".npy":

        return scan(open_image(src))
    return scan(src)


def _export_kind(name: str) -> str | None:
    """``"npy"``, ``"parquet"``/``"vortex"``, ``"ome-tiff"`` or ``"ome-zarr"`` from an output file name."""
    suffix = Path(name).suffix
    if suffix == ".npy":
        return "npy"
    if suffix in TABLE_FORMATS:
        return TABLE_FORMATS[suffix]
    if suffix == ZARR_SUFFIX:
        return "ome-zarr"
    if suffix in TIFF_SUFFIXES and Path(name).stem.endswith(".ome"):
        return "ome-tiff"
    return None


def _export(args: argparse.Namespace) -> int:

    so = _storage_options(args)
    src_url, out_url = _url(args.src), _url(args.out)
    if so and src_url is None and out_url is None:
        _no_options_for_local(args.src, so)
    src, out = Path(args.src), Path(args.out)
    if src_url is None and not src.exists():
        raise FileNotFoundError(f"no such file or directory: {str(src)!r}")
    name = (out_url.split("?", 1)[0].rsplit("/", 1)[-1] if out_url is not None else out.name).lower()
    kind = _export_kind(name)
    if kind is None:
        raise ValueError(
            f"cannot tell the export format of {name!r}; use .npy, .parquet, .vortex, .ome.tif or .ome.zarr"
        )
    if out_url is None and out.exists() and not args.overwrite:
        raise FileExistsError(f"{str(out)!r} exists; pass --overwrite to replace it")
    if src_url is not None:
        img = _open_remote_for_export(src_url, args.image_id, args.row, so)
    else:
        img = _open_for_export(src, args.image_id, args.row)
    roi = _parse_roi(args.roi)
    if roi is not None:
        x, y, w, h = roi
        _, _, _, sy, sx = img.shape
        if x + w > sx or y + h > sy:
            raise ValueError(f"--roi {args.roi!r} reaches outside the image (X {sx}, Y {sy})")
        img = img.select(y=(y, y + h), x=(x, x + w))
    shape = img.shape
    if out_url is not None and kind in ("npy", "parquet", "vortex"):
        # written locally, uploaded whole once complete (never half a file under the key)
        if not args.overwrite and open_remote_file_or_none(out_url, so) is not None:
            raise FileExistsError(f"{out_url!r} exists; pass --overwrite to replace it")
        write_remote(out_url, so, lambda local: _write_local(img, kind, local))
    elif kind in ("npy", "parquet", "vortex"):
        _write_local(img, kind, out)
    else:
        fn = to_ome_tiff if kind == "ome-tiff" else to_ome_zarr
        fn(img, out_url or out, overwrite=args.overwrite, storage_options=so if out_url else None)
    _say(f"wrote {out_url or out} ({kind}, TCZYX {tuple(int(v) for v in shape)})")
    return 0


def open_remote_file_or_none(url: str, so: dict[str, Any]) -> Any:
    """The object at ``url``, or ``None`` when there is none."""
    try:
        return open_remote_file(url, so)
    except FileNotFoundError:
        return None


def _write_local(img: OMEArrow, kind: str, out: Path) -> None:
    import numpy as np

    if kind == "npy":
        with open(out, "wb") as fh:
            np.save(fh, img.export("numpy"))
    else:
        img.export(kind, out=out)


def _catalog_info(p: Path) -> int:
    import pyarrow.compute as pc


    cat = read_catalog(p)
    status = cat["status"].to_pylist()
    n_ok = status.count("ok")
    locs = cat["location"].to_pylist()
    _say(f"catalog {p}: {cat.num_rows} files, {n_ok} ok, {cat.num_rows - n_ok} errors")
    _say(f"  images.parquet: {locs.count('images.parquet')} records; dataset/: {locs.count('dataset')} images")
    readers = pc.value_counts(cat["reader"]).to_pylist()
    _say("  readers: " + ", ".join(f"{r['values']} {r['counts']}" for r in readers))
    extra = [c for c in cat.column_names if c not in CATALOG_SCHEMA.names]
    if extra:
        _say(f"  path columns: {extra}")
    for r in cat.filter(pc.equal(cat["status"], "error")).select(["urlpath", "error_type", "error"]).to_pylist()[:5]:
        _say(f"  failed: {r['urlpath']}: {r['error_type']}: {r['error']}")
    return 0


def _number(kind: type[int] | type[float], minimum: int, what: str) -> Any:
    """An argparse ``type=`` that parses ``kind`` and refuses values below ``minimum`` (exit 2)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value != value or value < minimum or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 1, "a positive integer")
_non_negative_int = _number(int, 0, "an integer >= 0")
_non_negative_float = _number(float, 0, "a number >= 0")


def _positive_float(text: str) -> float:
    """A number > 0 (argparse ``type=``)."""
    value = _non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return float(value)


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="omeframe", description="Arrow-native image tables.")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the end-to-end demo on a synthetic sample")
    d.add_argument("--out", default="demo-output", help="output directory (default: demo-output)")
    d.add_argument("--size", type=_positive_int, default=2048, help="slide size in pixels (default 2048)")
    d.set_defaults(fn=_demo)
    i = sub.add_parser("info", help="describe a record table, dataset, OME-Zarr or TIFF (path or URL)")
    i.add_argument("path")
    i.add_argument("--rows", type=_positive_int, default=3, help="rows of a record table to describe")
    i.set_defaults(fn=_info)
    v = sub.add_parser("verify", help="check every chunk checksum (datasets) or decode every record")
    v.add_argument("path")
    v.set_defaults(fn=_verify)

    g = sub.add_parser("ingest", help="build or extend a catalog from image files, directories or globs")
    g.add_argument("paths", nargs="+", help="files, directories or glob patterns (TIFF, OME-Zarr, .npy, CZI); "
                   "local, or object-store URLs such as s3://bucket/plates/")
    g.add_argument("--out", required=True, help="catalog directory (created, or appended to), or its URL (s3://bucket/plates.catalog)")
    g.add_argument("--workers", type=_positive_int, default=None, help="worker processes (default: CPU count)")
    g.add_argument("--layout", choices=["auto", "records", "dataset"], default="auto",
                   help="auto: small images as records, large ones in the dataset (default)")
    g.add_argument("--columns-from-path", metavar="REGEX",
                   help=r"regex with named groups turned into columns, e.g. '(?P<plate>P\d+)_(?P<well>[A-H]\d+)'")
    g.add_argument("--image-id-from", choices=["stem", "path"], default="stem")
    g.add_argument("--max-record-mib", type=_positive_float, default=64.0,
                   help="layout auto: images larger than this (decoded) go to the dataset (default 64)")
    g.add_argument("--compression", default="zstd", help="chunk codec (zstd, lz4, none ...)")
    g.add_argument("--no-resume", action="store_true", help="re-ingest files even when unchanged")
    g.add_argument("--timeout", type=_non_negative_float, default=600.0,
                   help="seconds one file may take before it gets an error row (default 600; 0: no limit)")
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    g.set_defaults(fn=_ingest)

    q = sub.add_parser("sql", help="run a DuckDB query over image tables, datasets and catalogs")
    q.add_argument("query")
    q.add_argument("--table", action="append", metavar="NAME=PATH",
                   help="register a record table / dataset (NAME_images, NAME_chunks) "
                        "/ catalog (NAME_images, NAME_catalog ...)")
    q.add_argument("--catalog", action="append", metavar="DIR",
                   help="register a catalog: views images, catalog, errors, dataset_images, dataset_chunks "
                        "(default: the current directory when it is a catalog)")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.add_argument("--max-rows", type=_positive_int, default=100, help="most rows printed (default 100)")
    q.add_argument("--width", type=_positive_int, default=48, help="widest column shown (table format)")
    q.add_argument("-v", "--verbose", action="store_true", help="list the registered views on stderr")
    q.set_defaults(fn=_sql)

    e = sub.add_parser("export", help="export one image (or an ROI) to .npy, .parquet, .vortex, .ome.tif or .ome.zarr")
    e.add_argument("src", help="catalog dir, dataset dir, record table, TIFF, OME-Zarr or .npy")
    e.add_argument("out")
    e.add_argument("--image-id", help="image to export (catalogs, datasets, record tables)")
    e.add_argument("--row", type=_non_negative_int, default=None, help="row of a record table (default 0)")
    e.add_argument("--roi", metavar="x,y,w,h", help="export only this region (pixels)")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(fn=_export)
    for cmd in (i, v, q, e, g):
        cmd.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                         help="an option of the URL's filesystem (repeatable; JSON values, dotted keys nest), "
                              "e.g. endpoint_url=http://127.0.0.1:9000 or anon=true")
    return ap


def _error_line(exc: BaseException) -> str:
    """One line saying what went wrong (DuckDB's multi-line messages folded, no traceback)."""

    text = str(exc)
    if isinstance(exc, KeyError) and not isinstance(exc, OmeframeError) and exc.args:
        text = str(exc.args[0])
    lines: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("LINE "):
            if lines:
                break
            continue
        lines.append(line.strip())
    msg = " ".join(lines) or type(exc).__name__
    builtin = isinstance(exc, (OmeframeError, FileNotFoundError, FileExistsError, ValueError, KeyError))
    if not builtin and not msg.startswith(type(exc).__name__) and "Error" not in msg.split(":")[0]:
        msg = f"{type(exc).__name__}: {msg}"
    return msg if len(msg) <= 1000 else msg[:997] + "..."


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``omeframe`` command; returns the exit status.

    Errors print one line on stderr (``omeframe <command>: error: ...``) and
    exit 1; set ``OMEFRAME_DEBUG=1`` to see the traceback instead.
    ``omeframe ingest`` exits 2 when some files failed (the others are ingested).
    """
    import os

    args = _build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        print(f"omeframe {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `omeframe sql ... | head`
        return 0
    except Exception as exc:  # noqa: BLE001 - the CLI reports, it does not crash
        if os.environ.get("OMEFRAME_DEBUG"):
            raise
        print(f"omeframe {args.command}: error: {_error_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
