"""The cost of omeframe's protections, side by side in one run.

Measured (best of N, same data, same process):

* **record tables, full read** (``read_table`` + every crop decoded to one
  array): the share of each check of a Parquet table in the unchecked full
  read (the same table written with frames that carry no checksum, read with
  no check), measured by short interleaved runs with and without it:
  decoding the crops' zstd frames with and without content checksums, and
  ``read_table`` with omeframe's page-CRC check on and off; their sum is the
  cost of all checks (the direct comparison of the two full reads is shown
  for reference: one difference of two long runs, noisier); and, for
  reference, the same read checked by Arrow;
  Vortex tables (the same crops, and tiny 3x16x16 crops stored raw, the
  worst case, each beside two feature columns) checked and not: a full read
  checks the body's CRC-32 kept in the footer's seal, in place of the rows'
  CRCs and digests, which are measured for reference on the tiny crops
  (the path of files written before the body's CRC, and of damaged bodies).
  Target: checksums cost <= 5% of a full read.
* **datasets, warm ROI**: a 512x512 region of a 4096x4096 uint16 image read
  with per-chunk CRC verification on and off. Target: <= 10% of a warm ROI.
* **commit latency** of `Dataset.append` (compare-and-swap on the manifest
  generation, fsyncs included) for one small image, median of N.
* **catalog throughput** with the per-file timeout (a timer in each worker,
  a watchdog in the parent) against ``timeout=None``.

Pixels are blobs plus noise. ``--quick`` uses small sizes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, machine_summary, markdown_table  # noqa: E402


def cells(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy = rng.uniform(0, size, (n, 1, 1, 1))
    cx = rng.uniform(0, size, (n, 1, 1, 1))
    blob = 180 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (size * 1.5)) * rng.uniform(0.3, 1, (n, 3, 1, 1))
    return np.clip(blob + rng.normal(12, 3, (n, 3, size, size)), 0, 255).astype(np.uint8)


def slide(size: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(300, 20, (size, size))
    for _ in range(size // 16):
        y, x = rng.integers(0, size, 2)
        r = int(rng.integers(4, 20))
        img[max(0, y - r) : y + r, max(0, x - r) : x + r] += 2000
    return np.clip(img, 0, 65535).astype(np.uint16)


def polygons(n: int, k: int, seed: int = 5) -> object:
    """A shape table of ``n`` closed polygons of ``k`` + 1 points (circles of random centres and radii)."""
    import pyarrow as pa

    import omeframe as of

    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, k, endpoint=False)
    cx, cy, r = rng.random(n) * 2000, rng.random(n) * 2000, 5 + rng.random(n) * 10
    ring = np.stack([cx[:, None] + r[:, None] * np.cos(angles), cy[:, None] + r[:, None] * np.sin(angles)], -1)
    ring = np.concatenate([ring, ring[:, :1]], 1).reshape(-1)
    coords = pa.ListArray.from_arrays(pa.array(np.arange(0, ring.size + 1, 2, dtype=np.int32)), pa.array(ring))
    rings = pa.ListArray.from_arrays(pa.array(np.arange(0, n * (k + 1) + 1, k + 1, dtype=np.int32)), coords)
    geometry = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), rings)
    table = of.make_shape_table([{"object_id": "x"}], geometry_encoding="geoarrow.polygon")  # its schema
    columns = {
        "object_id": pa.array([f"cell-{i}" for i in range(n)]), "image_id": pa.array(["img"] * n),
        "label_value": pa.array(np.arange(1, n + 1)), "geometry": geometry,
        "centroid": pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                                             pa.array(np.stack([cx, cy], -1).reshape(-1))),
        "area": pa.array(np.pi * r * r),
    }
    return pa.table({f.name: columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type)
                     for f in table.schema}, schema=table.schema)


def interleaved(fns: dict[object, Callable[[], object]], reps: int) -> dict[object, float]:
    """Best wall time of each function, runs alternating so drifting load hits all alike."""
    best = {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)

    import pyarrow.parquet as pq

    import omeframe as of
    from omeframe.formats.record.bulk import zstd_frames
    from omeframe.formats.record.stack import decode_zstd_into
    from omeframe.formats.vortex import checksum as vortex_checksum
    from omeframe.storage.crc import crc32_function

    fast = crc32_function()
    crc_name = "zlib" if fast is zlib.crc32 else "zlib-ng"

    out = OUT_DIR / "reliability"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    n, size = (5_000, 32) if args.quick else (50_000, 64)
    reps = 3 if args.quick else 5
    rows: list[list[str]] = []

    # -- record tables: every check of a full read, and each check's share -----------
    # A full read is read_table + decoding every crop to one array. The cost of one
    # check is the difference of short runs with and without it (best of many:
    # robust on a loaded machine) over the full read with no check at all.
    import functools

    from omeframe.formats.record import bulk
    from omeframe.storage import parquet_crc

    stack = cells(n, size)
    path, bare = out / "crops.parquet", out / "crops-bare.parquet"
    of.write_table(path, stack, dim_order="CYX", columns={"well": np.arange(n) % 96})
    framed = bulk.zstd_frames
    bulk.zstd_frames = functools.partial(framed, checksum=False)
    try:  # the same table with frames that carry no content checksum
        of.write_table(bare, stack, dim_order="CYX", columns={"well": np.arange(n) % 96})
    finally:
        bulk.zstd_frames = framed
    page_check = parquet_crc.CheckedParquetFile.check

    def read_parquet(check: bool, decode: bool, table_path: Path = path) -> object:
        parquet_crc.CheckedParquetFile.check = page_check if check else (lambda self, *a, **k: None)  # type: ignore[method-assign]
        try:
            table = of.read_table(table_path)
            return of.to_numpy_stack(table.column(0)) if decode else table
        finally:
            parquet_crc.CheckedParquetFile.check = page_check  # type: ignore[method-assign]

    full = interleaved({True: lambda: read_parquet(True, True), False: lambda: read_parquet(False, True, bare)},
                       reps * 4)
    unchecked = full[False]
    headline = len(rows)  # the total goes here once its parts are measured
    rows.append([
        "  the same, measured directly: full reads of the two tables (each check on / all off; noisier)",
        f"{full[True] * 1e3:.0f} ms", f"{unchecked * 1e3:.0f} ms", f"{full[True] / unchecked - 1:+.1%}", "-",
        "reference",
    ])

    flat = stack.reshape(-1)
    block = size * size  # one channel plane per frame, as written
    offsets = np.arange(flat.size // block + 1, dtype=np.int64) * block
    fns = {}
    target = np.empty_like(flat)
    for checksum in (True, False):
        frames, lengths = zstd_frames(flat, offsets, 3, checksum=checksum)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        sizes = np.full(len(lengths), block)
        fns[checksum] = lambda f=frames, s=starts, ln=lengths, z=sizes: decode_zstd_into(
            target, f, s, ln, z, what="bench"
        )
    timings = interleaved(fns, reps * 4)
    assert np.array_equal(target, flat)
    zstd_share = share = (timings[True] - timings[False]) / unchecked
    rows.append([
        "  of which: decoding the zstd frames with their content checksums (share of the full read)",
        f"{timings[True] * 1e3:.0f} ms", f"{timings[False] * 1e3:.0f} ms", f"{share:+.1%}", "-", "part",
    ])

    def share_row(label: str, read: Callable[[bool, bool], object], reference: bool = False) -> float:
        # reference: what another way of checking would cost (no target of omeframe's)
        full = interleaved({v: (lambda v=v: read(v, True)) for v in (True, False)}, reps * 4)
        table = interleaved({v: (lambda v=v: read(v, False)) for v in (True, False)}, reps * 20)
        share = (table[True] - table[False]) / full[False]
        verdict = "-" if reference else "PASS" if share <= 0.05 else "FAIL"
        rows.append([
            label, f"{full[True] * 1e3:.1f} ms", f"{full[False] * 1e3:.1f} ms", f"{share:+.1%}",
            verdict, "reference" if reference else "<= 5%",
        ])
        return share

    page_share = share_row("  of which: Parquet page CRCs "
                           f"({crc_name}; share of a full read)", read_parquet)
    total = zstd_share + page_share
    rows.insert(headline, [
        f"record table (Parquet), full read of {n} crops 3x{size}x{size}: all checks (page CRCs, {crc_name}, "
        "+ zstd content checksums; the sum of the two shares below)",
        "-", f"{unchecked * 1e3:.0f} ms", f"{total:+.1%}", "PASS" if total <= 0.05 else "FAIL", "<= 5%",
    ])

    def read_arrow(check: bool, decode: bool) -> object:  # the same read, checked by Arrow instead
        table = pq.ParquetFile(path, memory_map=True, page_checksum_verification=check).read()
        return of.to_numpy_stack(table.column(0)) if decode else table

    share_row("record table, the same read: Parquet page CRCs (Arrow's check; share of a full read)", read_arrow,
              reference=True)

    # -- record tables in Vortex: the body's CRC-32, or the rows' CRCs and digests --------
    # A full read of a whole local table checks the CRC-32 of every byte before the footer
    # (kept in the footer's seal) before vortex decodes them. Files without it check each
    # batch with one CRC over its bytes (zlib-ng, else zlib), taken where the scan converted
    # it, against the fold of the rows' stored CRCs, each XORed with the digest of the row's
    # header fields (ids, names, channels: all rows at once), and the features' digests.
    from omeframe.formats.vortex import file as vortex_file

    checks = vortex_file._stored_crc_type

    def vortex_rows(stack: np.ndarray, name: str) -> Callable[[str, bool], None]:
        vpath = out / name
        # crops beside their features, as a profiling table holds them: the row CRCs cover the
        # pixels, each row's digest the features
        features = {"well": np.arange(len(stack)) % 384, "area": np.random.default_rng(2).gamma(4.0, 50.0, len(stack))}
        of.write_table(vpath, stack, dim_order="CYX", columns=features)
        shape = "x".join(map(str, stack.shape[1:]))

        def read_vortex(check: bool, decode: bool = True) -> object:
            vortex_file._stored_crc_type = checks if check else (lambda vf, name: None)
            try:
                table = of.read_table(vpath)
                return of.to_numpy_stack(table.column(0)) if decode else table
            finally:
                vortex_file._stored_crc_type = checks

        def vortex_row(label: str, reference: bool = False) -> None:
            share_row(f"Vortex record table, full read of {len(stack)} crops {shape} and 2 features: {label} "
                      "(share of a full read)", read_vortex, reference)

        return vortex_row

    # the table of the issue (zstd frames per chunk), then tiny crops: raw chunks in
    # Vortex's own encodings, where the read is fastest
    body = f"the body's CRC-32 ({crc_name})"
    vortex_rows(stack, "crops.vortex")(body)
    vortex_row = vortex_rows(cells(n, 16, seed=3), "tiny.vortex")
    vortex_row(body)
    sealed_body = vortex_file._Sealed.body_intact
    vortex_file._Sealed.body_intact = lambda self, p: None  # type: ignore[method-assign] # as a file without it
    try:  # the rows' checks: files written before the body's CRC, and damaged bodies (reference)
        vortex_row(f"the rows' checks instead, row CRC-32 ({crc_name}), header and features' digests", reference=True)
        if fast is not zlib.crc32:  # the same with zlib's CRC: an install without zlib-ng (reference)
            saved = vortex_checksum.crc32_function
            vortex_checksum.crc32_function = lambda: zlib.crc32
            try:
                vortex_row("the rows' checks instead, row CRC-32 (zlib), header and features' digests",
                           reference=True)
            finally:
                vortex_checksum.crc32_function = saved
    finally:
        vortex_file._Sealed.body_intact = sealed_body  # type: ignore[method-assign]

    # -- shape tables in Vortex: each row's digest of all its values ------------------
    # (no pixels: the digest of the values is the only check; Parquet shape tables have page CRCs)
    n_shapes = 10_000 if args.quick else 100_000
    shapes_path = out / "shapes.vortex"
    shapes = polygons(n_shapes, 12)
    of.write_shapes(shapes, shapes_path)
    shapes_parquet = out / "shapes.parquet"
    of.write_shapes(shapes, shapes_parquet)
    has_digests = vortex_file._has_digests

    def read_shapes(check: bool) -> object:
        vortex_file._has_digests = has_digests if check else (lambda vf, name: False)
        try:
            return of.read_shapes(shapes_path)
        finally:
            vortex_file._has_digests = has_digests

    shape_reads = interleaved({True: lambda: read_shapes(True), False: lambda: read_shapes(False),
                               "parquet": lambda: of.read_shapes(shapes_parquet)}, reps * 4)
    rows.append([
        f"Vortex shape table, full read of {n_shapes} polygons of 13 points: the body's CRC-32 "
        f"(for comparison: the Parquet table, page CRCs checked, {shape_reads['parquet'] * 1e3:.1f} ms)",
        f"{shape_reads[True] * 1e3:.1f} ms", f"{shape_reads[False] * 1e3:.1f} ms",
        f"{shape_reads[True] / shape_reads[False] - 1:+.1%}", "-", "reported",
    ])

    # -- datasets: per-chunk CRC on a warm ROI --------------------------------------
    side = 2048 if args.quick else 4096
    ds_path = out / "slide.omeds"
    ds = of.write_dataset([slide(side)], ds_path, dim_order="YX", chunk_shape=(1, 512, 512), image_ids=["slide"])
    iid = ds.image_ids[0]
    from omeframe.engine.executor import assemble
    from omeframe.model.selection import Selection

    roi_fns = {}
    for verify in (True, False):
        src = ds.pixel_source(iid, 0, verify=verify)
        sel = Selection.of(y=(384, 896), x=(384, 896)).resolve(src.shape)
        assemble(src, sel)  # warm
        roi_fns[verify] = lambda s=src, q=sel: assemble(s, q)
    roi = interleaved(roi_fns, max(reps, 10) * 2)
    roi_cost = roi[True] / roi[False] - 1
    rows.append([
        f"dataset, warm 512x512 ROI of {side}x{side} uint16: chunk CRC",
        f"{roi[True] * 1e3:.1f} ms", f"{roi[False] * 1e3:.1f} ms", f"{roi_cost:+.1%}",
        "PASS" if roi_cost <= 0.10 else "FAIL", "<= 10%",
    ])

    # -- commit latency of an append (compare-and-swap + fsync) ----------------------
    small = slide(256, seed=3)
    lat = []
    for i in range(10 if args.quick else 30):
        t0 = time.perf_counter()
        ds = of.open_dataset(ds_path)
        ds.append([small], dim_order="YX", image_ids=[f"a{i}"])
        lat.append(time.perf_counter() - t0)
    rows.append([
        "dataset append of one 256x256 image (CAS commit, fsyncs)",
        f"{statistics.median(lat) * 1e3:.1f} ms (median)", "-", "-", "-", "reported",
    ])

    # -- catalog throughput with and without per-file timeouts ------------------------
    import tifffile

    src = out / "tiffs"
    src.mkdir()
    n_files = 60 if args.quick else 300
    for i in range(n_files):
        tifffile.imwrite(src / f"f{i:04d}.tif", slide(128, seed=10 + i))
    from omeframe import catalog

    cat = {}
    for timeout in (600.0, None):
        best = float("inf")
        for r in range(2):
            dest = out / f"cat-{timeout}-{r}"
            t0 = time.perf_counter()
            catalog.build(src, dest, workers=2, timeout=timeout, progress=False)
            best = min(best, time.perf_counter() - t0)
        cat[timeout] = best
    cat_cost = cat[600.0] / cat[None] - 1
    rows.append([
        f"catalog.build of {n_files} TIFFs, 2 workers: per-file timeout",
        f"{n_files / cat[600.0]:.0f} files/s", f"{n_files / cat[None]:.0f} files/s", f"{cat_cost:+.1%}",
        "-", "reported",
    ])

    print(machine_summary())
    print(markdown_table(["case", "protected", "unprotected", "cost", "target", "bound"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
