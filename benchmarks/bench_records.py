"""Record tables: omeframe vs ome-arrow 0.1.0 (list and byte encodings) vs zarr v3.

Two datasets, generated here with a fixed seed (same bytes for every system):

* ``stack``: one 1x2x8x2048x2048 uint16 TCZYX image (smooth background,
  Gaussian blobs, Poisson + Gaussian noise), chunks (1, 1, 1, 512, 512),
  zstd level 3 everywhere;
* ``crops``: 10,000 64x64x3 uint8 cell crops (``dim_order="YXC"``), one file
  with one row per crop (zarr: one (N, 3, 64, 64) array, 256 crops per chunk).

Every (dataset, system, write|read) case runs in a fresh interpreter, so its
peak RSS is its own; times are the best of N runs (N=3, 1 with ``--quick``;
slow cases stop repeating once they exhaust a time budget). The decode floor
is the time to zstd-decompress exactly the chunk payloads stored in
omeframe's file in one thread, with ``zstandard`` (the library omeframe
itself decodes with; pyarrow's codec costs ~6x more per small chunk) in one
``multi_decompress_to_buffer`` call.

Usage::

    python benchmarks/bench_records.py            # full size (a few minutes)
    python benchmarks/bench_records.py --quick    # smoke run, under a minute

Prints one markdown table per dataset plus the issue's targets (PASS/MISS,
reported, not asserted) and writes them to ``bench-output/bench_records.md``
(``bench_records-quick.md`` for ``--quick``; ``-stack`` / ``-crops`` suffix with
``--only``). Exits non-zero when a case fails or a system reads back different
pixels than were written.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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
    make_crops,
    markdown_table,
    preload_pyarrow,
    run_case,
    zstd_chunk_frames,
)

SCRIPT = Path(__file__).resolve()

COLUMN = "ome_arrow"  # record column name in every Parquet file
CHUNK_ZYX = (1, 512, 512)  # record chunk shape (Z, Y, X); clipped to 64x64 for crops
ZSTD_LEVEL = 3
ZARR_CROPS_PER_CHUNK = 256  # zarr crops layout: one (N, 3, Y, X) array, 256 crops per chunk

SYSTEMS = ("omeframe", "ome-arrow list", "ome-arrow bytes", "zarr v3")


@dataclass(frozen=True)
class Sizes:
    stack_shape: tuple[int, int, int, int, int]
    n_crops: int
    repeats: int
    budget_s: float  # stop repeating a case once its runs would exceed this
    timeout_s: float  # per subprocess


FULL = Sizes((1, 2, 8, 2048, 2048), 10_000, 3, 15.0, 900.0)
QUICK = Sizes((1, 2, 2, 1024, 1024), 1_000, 1, 5.0, 120.0)


# =============================================================== data
def make_stack(shape: tuple[int, int, int, int, int], seed: int = 0) -> Any:
    """A fluorescence-like uint16 TCZYX stack: smooth background, blobs, noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    st, sc, sz, sy, sx = shape
    yy = np.linspace(0.0, 1.0, sy, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, sx, dtype=np.float32)[None, :]
    out = np.empty(shape, dtype=np.uint16)
    n_blobs = max(16, int(300 * sy * sx / 2048**2))
    for t in range(st):
        for c in range(sc):
            bg = (
                300.0
                + 80.0 * c
                + 120.0 * np.sin(2 * np.pi * (1.3 * xx + 0.2 * c)) * np.cos(2 * np.pi * 0.7 * yy)
                + 150.0 * xx
                + 60.0 * yy
            ).astype(np.float32)
            cy, cx = rng.uniform(0, sy, n_blobs), rng.uniform(0, sx, n_blobs)
            cz, wz = rng.uniform(0, sz, n_blobs), rng.uniform(0.8, 2.5, n_blobs)
            rad, amp = rng.uniform(4, 25, n_blobs), rng.uniform(400, 4000, n_blobs)
            patches = []
            for k in range(n_blobs):
                r0 = int(3 * rad[k]) + 1
                y0, y1 = max(0, int(cy[k]) - r0), min(sy, int(cy[k]) + r0)
                x0, x1 = max(0, int(cx[k]) - r0), min(sx, int(cx[k]) + r0)
                py = np.arange(y0, y1, dtype=np.float32)[:, None] - cy[k]
                px = np.arange(x0, x1, dtype=np.float32)[None, :] - cx[k]
                patch = amp[k] * np.exp(-(py * py + px * px) / (2 * rad[k] ** 2))
                patches.append((y0, y1, x0, x1, patch.astype(np.float32)))
            for z in range(sz):
                img = bg.copy()
                for k, (y0, y1, x0, x1, patch) in enumerate(patches):
                    w = np.exp(-((z - cz[k]) ** 2) / (2 * wz[k] ** 2))
                    if w > 0.02:
                        img[y0:y1, x0:x1] += w * patch
                noisy = rng.poisson(img).astype(np.float32) + rng.normal(0.0, 6.0, img.shape)
                out[t, c, z] = np.clip(noisy, 0, 65535).astype(np.uint16)
    return out


def digest_planes(arr: Any) -> str:
    """Hash a TCZYX array plane by plane (never copies more than one plane)."""
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    st, sc, sz = arr.shape[:3]
    for t in range(st):
        for c in range(sc):
            for z in range(sz):
                h.update(np.ascontiguousarray(arr[t, c, z]).data)
    return h.hexdigest()


def digest_crops(crops: Iterable[Any], layout: str) -> str:
    """Hash crops in YXC order; ``layout`` is what the reader returned per crop."""
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    for a in crops:
        if layout == "TCZYX":  # (1, C, 1, Y, X)
            a = a[0, :, 0].transpose(1, 2, 0)
        elif layout == "CYX":
            a = a.transpose(1, 2, 0)
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


# =============================================================== cases (child side)
CASES: dict[str, Callable[[CaseContext], Mapping[str, Any]]] = {}  # name -> case


CaseFn = Callable[[CaseContext], Mapping[str, Any]]


def case(dataset: str, system: str, op: str) -> Callable[[CaseFn], CaseFn]:
    """Register a child-side case function under ``dataset:system:op``."""

    def register(fn: CaseFn) -> CaseFn:
        CASES[f"{dataset}:{system}:{op}"] = fn
        return fn

    return register


def _timed(
    ctx: CaseContext, fn: Callable[[], Any], setup: Callable[[], None] | None = None
) -> tuple[dict[str, Any], Any]:
    p = ctx.params
    timing, result = best_of(fn, int(p["repeats"]), budget_s=float(p["budget"]), setup=setup)
    return timing.as_dict(), result


def _load_stack(ctx: CaseContext) -> Any:
    import numpy as np

    return np.load(ctx.params["data"])


def _load_crops(ctx: CaseContext) -> list[Any]:
    import numpy as np

    return list(np.load(ctx.params["data"]))  # C-contiguous (64, 64, 3) views


def _oa_encode_kwargs(encoding: str) -> dict[str, Any]:
    if encoding == "bytes":
        return {"chunk_compression": "zstd", "chunk_compression_level": ZSTD_LEVEL}
    return {}


# ome-arrow byte chunks are already zstd-compressed: a second Parquet zstd pass
# costs write time and saves nothing, so its best setting is no Parquet codec.
# The list encoding relies on Parquet's default zstd.
_OA_PARQUET_CODEC = {"list": "zstd", "bytes": None}


# ---- stack ---------------------------------------------------------------
@case("stack", "omeframe", "write")
def _of_write_stack(ctx: CaseContext) -> dict[str, Any]:
    import omeframe

    preload_pyarrow()
    ctx.mark_baseline()
    data, path = _load_stack(ctx), ctx.params["path"]

    def fn() -> None:
        omeframe.write_table(
            path, [data], dim_order="TCZYX", chunk_shape=CHUNK_ZYX, compression_level=ZSTD_LEVEL
        )

    timing, _ = _timed(ctx, fn)
    return {"write": timing, "size": dir_size(path)}


@case("stack", "omeframe", "read")
def _of_read_stack(ctx: CaseContext) -> dict[str, Any]:
    import omeframe

    preload_pyarrow()
    ctx.mark_baseline()
    path = ctx.params["path"]

    # read_table + to_numpy: as fast as from_ome_parquet + to_numpy, and it skips
    # the copy from_ome_parquet makes with combine_chunks (~0.6x raw of peak RSS).
    def fn() -> Any:
        return omeframe.to_numpy(omeframe.read_table(path)[COLUMN][0])

    timing, arr = _timed(ctx, fn)
    return {"read": timing, "digest": digest_planes(arr)}


@case("stack", "ome-arrow list", "write")
@case("stack", "ome-arrow bytes", "write")
def _oa_write_stack(ctx: CaseContext) -> dict[str, Any]:
    import ome_arrow

    preload_pyarrow()
    ctx.mark_baseline()
    data, path, enc = _load_stack(ctx), ctx.params["path"], ctx.params["encoding"]

    def fn() -> None:
        rec = ome_arrow.from_numpy(
            data,
            dim_order="TCZYX",
            clamp_to_uint16=False,
            chunk_shape=CHUNK_ZYX,
            chunk_encoding=enc,
            **_oa_encode_kwargs(enc),
        )
        ome_arrow.to_ome_parquet(rec, path, column_name=COLUMN, compression=_OA_PARQUET_CODEC[enc])

    timing, _ = _timed(ctx, fn)
    return {"write": timing, "size": dir_size(path)}


@case("stack", "ome-arrow list", "read")
@case("stack", "ome-arrow bytes", "read")
def _oa_read_stack(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np
    import ome_arrow

    preload_pyarrow()
    ctx.mark_baseline()
    path, enc = ctx.params["path"], ctx.params["encoding"]

    if enc == "list":
        # TensorView reads list chunks straight from Arrow; ome_arrow.to_numpy
        # would go through .as_py() (~20x slower and GBs of Python ints).
        def fn() -> Any:
            _, arr = ome_arrow.from_ome_parquet(path, column_name=COLUMN, return_array=True)
            return ome_arrow.TensorView(arr, layout="TCZYX").to_numpy()

    else:

        def fn() -> Any:
            rec = ome_arrow.from_ome_parquet(path, column_name=COLUMN)
            return ome_arrow.to_numpy(rec, dtype=np.uint16)

    timing, arr = _timed(ctx, fn)
    return {"read": timing, "digest": digest_planes(arr)}


@case("stack", "zarr v3", "write")
def _zarr_write_stack(ctx: CaseContext) -> dict[str, Any]:
    import zarr
    import zarr.codecs

    ctx.mark_baseline()
    data, path = _load_stack(ctx), ctx.params["path"]

    def fn() -> None:
        z = zarr.create_array(
            store=path,
            shape=data.shape,
            dtype=data.dtype,
            chunks=(1, 1) + CHUNK_ZYX,
            compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL),
            zarr_format=3,
        )
        z[...] = data

    timing, _ = _timed(ctx, fn, setup=lambda: shutil.rmtree(path, ignore_errors=True))
    return {"write": timing, "size": dir_size(path)}


@case("stack", "zarr v3", "read")
def _zarr_read_stack(ctx: CaseContext) -> dict[str, Any]:
    import zarr

    ctx.mark_baseline()
    path = ctx.params["path"]
    timing, arr = _timed(ctx, lambda: zarr.open_array(path, mode="r")[...])
    return {"read": timing, "digest": digest_planes(arr)}


# ---- crops ---------------------------------------------------------------
@case("crops", "omeframe", "write")
def _of_write_crops(ctx: CaseContext) -> dict[str, Any]:
    import omeframe

    preload_pyarrow()
    ctx.mark_baseline()
    crops, path = _load_crops(ctx), ctx.params["path"]

    def fn() -> None:
        omeframe.write_table(path, crops, dim_order="YXC", progress=False)

    timing, _ = _timed(ctx, fn)
    return {"write": timing, "size": dir_size(path)}


@case("crops", "omeframe", "read")
def _of_read_crops(ctx: CaseContext) -> dict[str, Any]:
    import omeframe

    preload_pyarrow()
    ctx.mark_baseline()
    path = ctx.params["path"]

    def fn() -> Any:
        # the fast path: open the table (pixel index, no footer parse) and decode every
        # record into one (N, C, Y, X) array in one multi-frame call
        return omeframe.open_table(path).to_numpy(dims="CYX")

    timing, out = _timed(ctx, fn)
    return {"read": timing, "digest": digest_crops(out, "CYX"), "n": len(out)}


@case("crops", "ome-arrow list", "write")
@case("crops", "ome-arrow bytes", "write")
def _oa_write_crops(ctx: CaseContext) -> dict[str, Any]:
    import ome_arrow
    import pyarrow as pa
    import pyarrow.parquet as pq

    preload_pyarrow()
    ctx.mark_baseline()
    crops, path, enc = _load_crops(ctx), ctx.params["path"], ctx.params["encoding"]
    meta = {
        b"ome.arrow.type": str(ome_arrow.OME_ARROW_TAG_TYPE).encode(),
        b"ome.arrow.version": str(ome_arrow.OME_ARROW_TAG_VERSION).encode(),
    }

    def fn() -> None:
        # ome-arrow has no multi-record writer: one record per crop, one table,
        # one Parquet write (what its to_ome_parquet does, for N rows).
        recs = [
            ome_arrow.from_numpy(
                c,
                dim_order="YXC",
                clamp_to_uint16=False,
                chunk_shape=CHUNK_ZYX,
                chunk_encoding=enc,
                **_oa_encode_kwargs(enc),
            )
            for c in crops
        ]
        col = pa.concat_arrays([pa.repeat(r, 1) for r in recs])
        table = pa.table({COLUMN: col}).replace_schema_metadata(meta)
        pq.write_table(table, path, compression=_OA_PARQUET_CODEC[enc])

    timing, _ = _timed(ctx, fn)
    return {"write": timing, "size": dir_size(path)}


@case("crops", "ome-arrow list", "read")
@case("crops", "ome-arrow bytes", "read")
def _oa_read_crops(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np
    import ome_arrow
    import pyarrow.parquet as pq

    preload_pyarrow()
    ctx.mark_baseline()
    path = ctx.params["path"]

    # ome_arrow.from_ome_parquet(row_index=i) reads the row's whole row group
    # (the whole file here) per call, ~0.1 s per row: pyarrow + to_numpy per
    # row is its fastest public path (faster than TensorView per row for crops).
    def fn() -> list[Any]:
        col = pq.read_table(path, columns=[COLUMN])[COLUMN]
        return [
            ome_arrow.to_numpy(ch[i], dtype=np.uint8)
            for ch in col.chunks
            for i in range(len(ch))
        ]

    timing, out = _timed(ctx, fn)
    return {"read": timing, "digest": digest_crops(out, "TCZYX"), "n": len(out)}


@case("crops", "zarr v3", "write")
def _zarr_write_crops(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np
    import zarr
    import zarr.codecs

    ctx.mark_baseline()
    crops, path = _load_crops(ctx), ctx.params["path"]
    n, sy, sx, sc = len(crops), *crops[0].shape

    def fn() -> None:
        z = zarr.create_array(
            store=path,
            shape=(n, sc, sy, sx),
            dtype=crops[0].dtype,
            chunks=(min(ZARR_CROPS_PER_CHUNK, n), sc, sy, sx),
            compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL),
            zarr_format=3,
        )
        z[...] = np.stack(crops).transpose(0, 3, 1, 2)

    timing, _ = _timed(ctx, fn, setup=lambda: shutil.rmtree(path, ignore_errors=True))
    return {"write": timing, "size": dir_size(path)}


@case("crops", "zarr v3", "read")
def _zarr_read_crops(ctx: CaseContext) -> dict[str, Any]:
    import zarr

    ctx.mark_baseline()
    path = ctx.params["path"]
    timing, arr = _timed(ctx, lambda: zarr.open_array(path, mode="r")[...])
    return {"read": timing, "digest": digest_crops(arr, "CYX"), "n": len(arr)}


# ---- decode floor ----------------------------------------------------------
@case("stack", "floor", "read")
@case("crops", "floor", "read")
def _decode_floor(ctx: CaseContext) -> dict[str, Any]:
    """One-thread ``zstandard`` decompression of exactly the chunk payloads in omeframe's file."""
    import zstandard

    preload_pyarrow()
    ctx.mark_baseline()
    found = zstd_chunk_frames(ctx.params["path"], COLUMN)
    if found is None:
        raise RuntimeError("expected only zstd chunks in omeframe's file")
    frames, sizes, n, compressed, _ = found
    dctx = zstandard.ZstdDecompressor()

    def fn() -> int:
        out = dctx.multi_decompress_to_buffer(frames, decompressed_sizes=sizes.tobytes(), threads=0)
        return int(out.size())

    timing, total = _timed(ctx, fn)
    return {
        "read": timing,
        "chunks": n,
        "compressed": compressed,
        "raw": int(total),
    }


# =============================================================== orchestration (parent side)
@dataclass
class Row:
    system: str
    write: dict[str, Any] | None = None
    read: dict[str, Any] | None = None
    error: str | None = None

    def t(self, op: str) -> float | None:
        """Best time of ``op`` ("write" or "read"), ``None`` when not measured."""
        res = self.write if op == "write" else self.read
        return None if res is None else float(res[op]["best"])


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _store_path(workdir: Path, dataset: str, system: str) -> Path:
    slug = system.replace(" ", "_").replace("-", "")
    suffix = ".zarr" if system.startswith("zarr") else ".parquet"
    return workdir / f"{dataset}_{slug}{suffix}"


def _run_dataset(
    name: str, data_path: Path, workdir: Path, expected: str, sizes: Sizes
) -> tuple[dict[str, Row], dict[str, Any] | None, list[str]]:
    """Run write then read of every system, then the decode floor, for one dataset."""
    base = {"data": str(data_path), "repeats": sizes.repeats, "budget": sizes.budget_s}
    rows: dict[str, Row] = {}
    problems: list[str] = []
    for system in SYSTEMS:
        params = dict(
            base, path=str(_store_path(workdir, name, system)), encoding=system.split()[-1]
        )
        row = rows[system] = Row(system)
        try:
            for op in ("write", "read"):
                t0 = time.perf_counter()
                res = run_case(SCRIPT, f"{name}:{system}:{op}", params, timeout=sizes.timeout_s)
                setattr(row, op, res)
                runs = ", ".join(fmt_seconds(x) for x in res[op]["runs"])
                _log(
                    f"[{name}] {system:<16} {op:<5} best {fmt_seconds(res[op]['best']):>9} "
                    f"(CPU {res[op]['best_cpu']:.2f} s; runs {runs}; "
                    f"case {time.perf_counter() - t0:.1f} s wall)"
                )
            if row.read and row.read["digest"] != expected:
                row.error = "pixels read back differ from the source"
                problems.append(f"{name}/{system}: {row.error}")
        except CaseError as exc:
            row.error = str(exc).splitlines()[0]
            problems.append(f"{name}/{system}: {exc}")
            _log(f"[{name}] {system} FAILED: {exc}")
    floor = None
    try:
        floor_params = dict(base, path=str(_store_path(workdir, name, "omeframe")))
        floor = run_case(SCRIPT, f"{name}:floor:read", floor_params, timeout=sizes.timeout_s)
        _log(f"[{name}] decode floor     best {fmt_seconds(floor['read']['best']):>9}")
    except CaseError as exc:
        problems.append(f"{name}/decode floor: {exc}")
    return rows, floor, problems


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _table(rows: dict[str, Row], raw_bytes: int) -> str:
    of = rows["omeframe"]
    of_size = None if of.write is None else of.write["size"]
    headers = [
        "system", "write", "w vs of", "read", "r vs of", "file MiB", "size vs of",
        "read peak RSS MiB", "read RSS over base", "base MiB", "write peak RSS MiB",
        "CPU s w/r", "runs w/r",
    ]  # fmt: skip
    body = []
    for r in rows.values():
        if r.write is None or r.read is None:
            body.append([r.system, "error"] + ["-"] * (len(headers) - 2))
            continue
        size, peak, basel = r.write["size"], r.read["peak_rss"], r.read["baseline_rss"]
        body.append(
            [
                r.system + (" (WRONG PIXELS)" if r.error else ""),
                fmt_seconds(r.t("write")),
                fmt_ratio(_ratio(r.t("write"), of.t("write"))),
                fmt_seconds(r.t("read")),
                fmt_ratio(_ratio(r.t("read"), of.t("read"))),
                fmt_mib(size),
                fmt_ratio(_ratio(size, of_size)),
                fmt_mib(peak, 0),
                f"{(peak - basel) / raw_bytes:.2f}x raw",
                fmt_mib(basel, 0),
                fmt_mib(r.write["peak_rss"], 0),
                f"{r.write['write']['best_cpu']:.2f}/{r.read['read']['best_cpu']:.2f}",
                f"{len(r.write['write']['runs'])}/{len(r.read['read']['runs'])}",
            ]
        )
    return markdown_table(headers, body, "l" + "r" * (len(headers) - 1))


def _floor_line(rows: dict[str, Row], floor: dict[str, Any]) -> str:
    best = float(floor["read"]["best"])
    return (
        f"Decode floor: {fmt_seconds(best)} to zstd-decompress omeframe's "
        f"{floor['chunks']:,} chunk payloads ({floor['compressed'] / MiB:.1f} MiB -> "
        f"{floor['raw'] / MiB:.1f} MiB) in one thread with zstandard; omeframe's full "
        f"read = {fmt_ratio(_ratio(rows['omeframe'].t('read'), best))} the floor."
    )


def _targets(
    rows: dict[str, Row], floor: dict[str, Any] | None, raw_bytes: int
) -> list[str]:
    """The issue's targets for the stack, each as a PASS/MISS line."""
    of, oal, oab, zr = (rows[s] for s in SYSTEMS)
    floor_t = None if floor is None else float(floor["read"]["best"])
    rss_over = None
    if of.read is not None:
        rss_over = (of.read["peak_rss"] - of.read["baseline_rss"]) / raw_bytes
    size_ratio = None
    if of.write is not None and zr.write is not None:
        size_ratio = of.write["size"] / zr.write["size"]
    checks: list[tuple[str, float | None, str, float]] = [
        ("write >= 5x faster than ome-arrow list",
         _ratio(oal.t("write"), of.t("write")), ">=", 5.0),
        ("read >= 5x faster than ome-arrow list",
         _ratio(oal.t("read"), of.t("read")), ">=", 5.0),
        ("write >= 1.5x faster than ome-arrow bytes",
         _ratio(oab.t("write"), of.t("write")), ">=", 1.5),
        ("read >= 1.5x faster than ome-arrow bytes",
         _ratio(oab.t("read"), of.t("read")), ">=", 1.5),
        ("read at least as fast as zarr v3 (zarr time / omeframe time)",
         _ratio(zr.t("read"), of.t("read")), ">=", 1.0),
        ("read within 2x of the 1-thread decode floor (omeframe / floor)",
         _ratio(of.t("read"), floor_t), "<=", 2.0),
        ("file size <= 1.05x zarr v3 (omeframe / zarr)", size_ratio, "<=", 1.05),
        ("read peak RSS <= interpreter + 2.5x raw ((peak - base) / raw)",
         rss_over, "<=", 2.5),
    ]  # fmt: skip
    lines = []
    for label, value, op, limit in checks:
        if value is None:
            lines.append(f"- n/a  {label}: not measured")
            continue
        ok = value >= limit if op == ">=" else value <= limit
        verdict = "PASS" if ok else "MISS"
        lines.append(f"- {verdict} {label}: {value:.2f}x (target {op} {limit:g}x)")
    return lines


def _versions() -> str:
    out = []
    for dist in ("omeframe", "ome-arrow", "zarr", "pyarrow", "numpy", "numcodecs"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} ?")
    return ", ".join(out)


def _header(quick: bool, sizes: Sizes, load_start: float) -> list[str]:
    lines = [
        f"## bench_records ({'quick' if quick else 'full'} run, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {machine_summary()}; 1-min load average {load_start:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end. {_versions()}.",
        "",
        f"- Times: best of {sizes.repeats} runs (fewer when the runs of a case would "
        f"exceed {sizes.budget_s:g} s; see 'runs w/r'), warm page cache, every case in a "
        "fresh interpreter. 'vs of' = system / omeframe (> 1: omeframe is faster or "
        "smaller). 'CPU s' = process CPU time (all threads) of the best write/read run: "
        "CPU well above wall time = parallel work; CPU near wall for omeframe/zarr = "
        "no free second core (check the load average).",
        "- Peak RSS = ru_maxrss of the case's process. 'base' = RSS after imports; for "
        "pyarrow-based systems that includes pyarrow.parquet and the pandas pyarrow "
        "imports on first use (~50 MiB). Write peaks include the source array.",
        "- omeframe: write_table; read_table + to_numpy (stack), open_table + to_numpy "
        "into one (N, C, Y, X) array (crops). ome-arrow: "
        "from_numpy + to_ome_parquet (stack) or one pyarrow table + pq.write_table "
        "(crops); reads from_ome_parquet + TensorView (list stack), from_ome_parquet + "
        "to_numpy (bytes stack), pq.read_table + to_numpy per row (crops). ome-arrow "
        "bytes: chunk zstd-3, no second Parquet codec; list: Parquet zstd. zarr: "
        "create_array(ZstdCodec(3)) + `z[...] = a` / `z[...]`; crops: one (N, 3, 64, 64) array, "
        "256 crops per chunk.",
    ]
    if quick:
        lines.append(
            "- Quick run: small sizes and one run per case, so times include first-call "
            "costs (lazy imports, thread-pool start). A smoke test, not a measurement."
        )
    return lines


def _make_dataset(name: str, sizes: Sizes) -> tuple[Any, str, str]:
    """Return ``(array, expected digest, description)`` for ``name``."""
    if name == "stack":
        src = make_stack(sizes.stack_shape)
        shape = "x".join(map(str, src.shape))
        return src, digest_planes(src), f"1 image {shape} (TCZYX) {src.dtype}, chunks 512²"
    src = make_crops(sizes.n_crops)
    shape = "x".join(map(str, src.shape[1:]))
    desc = f"{len(src):,} crops {shape} (YXC) {src.dtype}, one chunk per channel"
    return src, digest_crops(src, "YXC"), desc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run per case")
    ap.add_argument("--keep", action="store_true", help="keep the written files")
    ap.add_argument("--only", choices=("stack", "crops"), help="run one dataset only")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]

    import numpy as np

    workdir = Path(tempfile.mkdtemp(prefix="omeframe-bench-records-"))
    sections: list[str] = []
    problems: list[str] = []
    try:
        for name in [d for d in ("stack", "crops") if args.only in (None, d)]:
            t0 = time.perf_counter()
            src, expected, desc = _make_dataset(name, sizes)
            raw_bytes = int(src.nbytes)
            data_path = workdir / f"{name}.npy"
            np.save(data_path, src)
            del src
            _log(f"[{name}] data generated in {time.perf_counter() - t0:.1f} s: {desc}")
            rows, floor, probs = _run_dataset(name, data_path, workdir, expected, sizes)
            problems += probs
            lines = [f"### {name}: {desc}, raw {raw_bytes / MiB:.1f} MiB", ""]
            lines += [_table(rows, raw_bytes), ""]
            if floor is not None:
                lines.append(_floor_line(rows, floor))
            if name == "stack":
                lines += ["", "Targets (stack; reported, not asserted):"]
                lines += _targets(rows, floor, raw_bytes)
            sections.append("\n".join(lines))
            print("\n" + sections[-1], flush=True)
    finally:
        if args.keep:
            _log(f"files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    header = _header(args.quick, sizes, load_start)
    report = "\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n"
    if problems:
        report += "\nProblems:\n" + "".join(f"- {p.splitlines()[0]}\n" for p in problems)
    OUT_DIR.mkdir(exist_ok=True)
    # Only a full run of both datasets writes bench_records.md.
    tag = ("-quick" if args.quick else "") + (f"-{args.only}" if args.only else "")
    out = OUT_DIR / f"bench_records{tag}.md"
    out.write_text(report, encoding="utf-8")
    print("\n" + "\n".join(header[2:]), flush=True)
    print(f"\nwritten to {out} in {time.perf_counter() - t_start:.0f} s", flush=True)
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    if "--case" in sys.argv[1:]:
        case_main(CASES)
    else:
        sys.exit(main())
