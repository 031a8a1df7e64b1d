"""Region reads: omeframe datasets vs zarr v3, tifffile and ome-arrow 0.1.0.

Data (fixed seed, generated once and cached in ``bench-output/roi-data/``;
a marker per system says which generator, shape, chunks and library made it,
so reruns skip writing):

* ``image``: one 1x1x1x16384x16384 uint16 image, chunks 512x512;
* ``stack-512``: one 1x2x64x2048x2048 uint16 stack, chunks 1x512x512;
* ``stack-128``: the same stack, chunks 64x128x128 (the issue's 128^3 clipped to Z=64).

Pixels are a smooth field + Gaussian blobs + signal-dependent noise
(compressible but noisy: zstd-3 keeps ~55 %). Every system stores the same
pixels with the same chunks and zstd level 3: omeframe Parquet and Vortex
datasets (``write_dataset``), an omeframe record table (``write_table``, one
row: its reads are bounded by that row's row group), zarr v3, tifffile
(OME-TIFF tiles; 3-D tiles for ``stack-128``, read through ``aszarr``),
ome-arrow's typed-chunk dataset (``write_ome_arrow_dataset``, one chunk per
row group, Parquet zstd at its default level, the writer takes no level) and
ome-arrow's own record Parquet (byte chunks, zstd-3, read with its lazy
``OMEArrow.scan(...).tensor_view(...)``).

Cases: a 256x256 ROI of one plane placed to straddle 4 chunks of 512
(y0 = x0 = 512k + 384), a 64x256x256 sub-volume (stacks) and a full read.
Each (system, case) runs in a fresh process forked from a per-library
"zygote" that has only imported the library (``import omeframe``,
``import zarr``, ... -- so ome-arrow's 3-10 s import is paid once, and the
first ROI of a child is a cold open "after imports"); ``--no-fork`` runs
each case in a fresh interpreter instead. Modules a cold read imports
lazily are listed, and the cold read is repeated with them imported
beforehand (the "(pre-imported)" column) to separate import time. In a case: the cold first ROI
(open + read), then best of N warm reads on the open handle (each at a new
position, so no system can serve it from a cache of its own), then a fresh
open + ROI whose ``/proc/self/io`` ``rchar`` delta is the "bytes read"
(imports done, handle new). Page faults x 4 KiB and the resident size of
memory-mapped data files are reported as well (for mmap-based readers).
The OS page cache is warm (files are read once before their cases); cold
means a new process. The decode floor is the time to zstd-decompress just
the touched chunks' stored bytes (taken from omeframe's Parquet dataset) in
one thread, best of N; for ROIs and sub-volumes it also shows the time of
just the zstd frames under the selection (omeframe stores chunks as row-band
frames and decodes only those). Every result is checked against the source pixels.

Usage::

    python benchmarks/bench_roi.py            # full size (< 10 min once data is cached)
    python benchmarks/bench_roi.py --quick    # small sizes (< 90 s)
    python benchmarks/bench_roi.py --profile omeframe-parquet:image:roi   # cProfile one case

Prints a ratio table, one table per dataset and the issue's targets
(PASS/MISS, reported, not asserted) and writes ``bench-output/bench_roi.md``
(``bench_roi-quick.md`` with ``--quick``). Exits non-zero when a case fails
or returns wrong pixels.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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
    compile_omeframe,
    dir_size,
    fmt_ratio,
    machine_summary,
    markdown_table,
    peak_rss_bytes,
    rss_bytes,
    run_case,
)

SCRIPT = Path(__file__).resolve()
DATA_ROOT = OUT_DIR / "roi-data"

GEN_VERSION = 1  # bump when the generator or the file layout changes
SEED = 20260311
ZSTD_LEVEL = 3
ROI = 256
SUBVOL_Z = 64
IMAGE_ID = "img"
COLUMN = "ome_arrow"

SYSTEMS = (
    "omeframe-parquet",
    "omeframe-vortex",
    "omeframe-record",
    "zarr-v3",
    "tifffile-aszarr",
    "ome-arrow-dataset",
    "ome-arrow-tensor_view",
)
SHORT = {
    "omeframe-parquet": "of-parquet",
    "omeframe-vortex": "of-vortex",
    "omeframe-record": "of-record",
    "zarr-v3": "zarr v3",
    "tifffile-aszarr": "tiff aszarr",
    "ome-arrow-dataset": "oa dataset",
    "ome-arrow-tensor_view": "oa tensor_view",
}
FAMILY = {
    "omeframe-parquet": "omeframe",
    "omeframe-vortex": "omeframe",
    "omeframe-record": "omeframe",
    "zarr-v3": "zarr",
    "tifffile-aszarr": "tifffile",
    "ome-arrow-dataset": "ome_arrow",
    "ome-arrow-tensor_view": "ome_arrow",
}
BASE = "omeframe-parquet"


@dataclass(frozen=True)
class Sizes:
    image_shape: tuple[int, int, int, int, int]
    stack_shape: tuple[int, int, int, int, int]
    repeats: int  # warm ROI / sub-volume reads (each at a new position)
    full_repeats: int  # warm full reads
    floor_repeats: int
    budget_s: float  # a case stops repeating once its reads would exceed this
    timeout_s: float  # per case
    subvol_timeout_s: float  # sub-volume cases (ome-arrow's tensor_view redoes 3-D chunks per plane)


# 12 warm reads per ROI case: single reads of ~1 ms on a shared 2-core machine
# scatter by 2x, so a best of 3 mostly measured the scheduler.
FULL = Sizes((1, 1, 1, 16384, 16384), (1, 2, 64, 2048, 2048), 12, 2, 5, 20.0, 90.0, 45.0)
QUICK = Sizes((1, 1, 1, 4096, 4096), (1, 2, 8, 1536, 1536), 6, 1, 3, 4.0, 30.0, 20.0)


@dataclass(frozen=True)
class Layout:
    key: str
    dataset: str  # "image" | "stack"
    chunk: tuple[int, int, int]  # ZYX, clipped to the image
    ops: tuple[str, ...]


def layouts(sizes: Sizes) -> list[Layout]:
    sz = sizes.stack_shape[2]
    return [
        Layout("image", "image", (1, 512, 512), ("roi", "full")),
        Layout("stack-512", "stack", (1, 512, 512), ("roi", "subvol", "full")),
        Layout("stack-128", "stack", (min(128, sz), 128, 128), ("roi", "subvol", "full")),
    ]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# =============================================================== data
def make_pixels(out: Any, seed: int = SEED, band: int = 2048) -> None:
    """Fill a TCZYX uint16 array: smooth field + 3-D Gaussian blobs + noise.

    Noise is signal dependent (``sqrt(signal + 36)`` x N(0, 1), like shot +
    read noise), so chunks compress to ~55 % with zstd-3. Deterministic for a
    given seed and shape; built in bands of rows to bound memory.
    """
    import numpy as np

    st, sc, sz, sy, sx = out.shape
    xx = np.linspace(0.0, 1.0, sx, dtype=np.float32)[None, :]
    for t in range(st):
        for c in range(sc):
            rng = np.random.default_rng([seed, t, c])
            n = max(16, int(250 * sy * sx / 2048**2))
            by, bx = rng.uniform(0, sy, n), rng.uniform(0, sx, n)
            bz, wz = rng.uniform(0, sz, n), rng.uniform(1.0, max(1.5, sz / 8), n)
            rad, amp = rng.uniform(3, 20, n), rng.uniform(300, 3000, n)
            order = np.argsort(by)
            by, bx, bz, wz, rad, amp = (v[order] for v in (by, bx, bz, wz, rad, amp))
            reach = (3 * rad).astype(np.int64) + 1
            ph = rng.uniform(0, 2 * np.pi, 3)
            for z in range(sz):
                zr = np.random.default_rng([seed, t, c, z])
                wzv = np.exp(-((z - bz) ** 2) / (2 * wz**2)) if sz > 1 else np.ones(n)
                for y0 in range(0, sy, band):
                    y1 = min(sy, y0 + band)
                    yy = np.linspace(y0 / sy, y1 / sy, y1 - y0, endpoint=False, dtype=np.float32)[:, None]
                    img = (
                        250.0
                        + 60.0 * c
                        + 90.0 * np.sin(2 * np.pi * (1.5 * xx + ph[0])) * np.cos(2 * np.pi * (1.1 * yy + ph[1]))
                        + 40.0 * np.sin(2 * np.pi * (5.0 * xx + 3.0 * yy + ph[2]))
                        + 120.0 * xx
                        + 50.0 * yy
                    ).astype(np.float32)
                    lo, hi = np.searchsorted(by, y0 - 70), np.searchsorted(by, y1 + 70)
                    for k in range(lo, hi):
                        w = wzv[k] * amp[k]
                        if w < 10:
                            continue
                        r, cy, cx = int(reach[k]), by[k], bx[k]
                        a0, a1 = max(y0, int(cy) - r), min(y1, int(cy) + r)
                        b0, b1 = max(0, int(cx) - r), min(sx, int(cx) + r)
                        if a0 >= a1 or b0 >= b1:
                            continue
                        py = (np.arange(a0, a1, dtype=np.float32) - np.float32(cy))[:, None]
                        px = (np.arange(b0, b1, dtype=np.float32) - np.float32(cx))[None, :]
                        img[a0 - y0 : a1 - y0, b0:b1] += np.float32(w) * np.exp(
                            (py * py + px * px) * np.float32(-0.5 / rad[k] ** 2)
                        )
                    noise = zr.standard_normal(img.shape, dtype=np.float32)
                    noise *= np.sqrt(img + np.float32(36.0))
                    img += noise
                    np.clip(img, 0, 65535, out=img)
                    out[t, c, z, y0:y1] = img.astype(np.uint16)


def digest(arr: Any) -> str:
    """Hash a TCZYX array plane by plane (shape and dtype included)."""
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(arr.shape), arr.dtype.str)).encode())
    st, sc, sz = arr.shape[:3]
    for t in range(st):
        for c in range(sc):
            for z in range(sz):
                h.update(np.ascontiguousarray(arr[t, c, z]).data)
    return h.hexdigest()


def _omeframe_fingerprint() -> str:
    """Hash of the omeframe files that define its on-disk formats (cache key)."""
    h = hashlib.sha1()
    base = ROOT / "python" / "omeframe"
    for rel in ("dataset/schema.py", "dataset/manifest.py", "dataset/locate.py", "schema/types.py", "_version.py"):
        p = base / rel
        h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()[:12]


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def system_fingerprint(system: str) -> dict[str, str]:
    fam = FAMILY[system]
    if fam == "omeframe":
        return {"omeframe": _omeframe_fingerprint(), "vortex-data": _dist_version("vortex-data")}
    if fam == "zarr":
        return {"zarr": _dist_version("zarr")}
    if fam == "tifffile":
        return {"tifffile": _dist_version("tifffile"), "imagecodecs": _dist_version("imagecodecs")}
    return {"ome-arrow": _dist_version("ome-arrow")}


def source_spec(shape: tuple[int, ...]) -> dict[str, Any]:
    return {"gen": GEN_VERSION, "seed": SEED, "shape": list(shape), "dtype": "uint16"}


def system_spec(lay: Layout, shape: tuple[int, ...], system: str) -> dict[str, Any]:
    return {
        **source_spec(shape),
        "chunk": list(lay.chunk),
        "zstd": ZSTD_LEVEL,
        "system": system,
        "versions": system_fingerprint(system),
    }


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _system_paths(root: Path, system: str, lay: Layout) -> dict[str, str]:
    """Where a system's files live inside its directory ``root``."""
    if system in ("omeframe-parquet", "omeframe-vortex"):
        return {"path": str(root / "ds")}
    if system == "omeframe-record":
        return {"path": str(root / "image.parquet")}
    if system == "zarr-v3":
        return {"path": str(root / "image.zarr")}
    if system == "tifffile-aszarr":
        return {"path": str(root / ("image.tif" if lay.chunk[0] > 1 else "image.ome.tif"))}
    if system == "ome-arrow-dataset":
        return {"path": str(root / "dataset")}
    return {"path": str(root / "image.parquet")}


# =============================================================== child cases
CASES: dict[str, Callable[[CaseContext], Mapping[str, Any]]] = {}


def case(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        CASES[name] = fn
        return fn

    return register


def import_family(family: str) -> float:
    """Import what a user of ``family`` imports up front; return the seconds it took."""
    t0 = time.perf_counter()
    import numpy  # noqa: F401

    if family == "omeframe":
        import omeframe  # noqa: F401
    elif family == "zarr":
        import zarr  # noqa: F401
    elif family == "tifffile":
        import tifffile  # noqa: F401
        import zarr  # noqa: F401,F811
    elif family == "ome_arrow":
        import ome_arrow  # noqa: F401
        import ome_arrow.dataset  # noqa: F401
    return time.perf_counter() - t0


@case("gen")
def _gen(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np

    p = ctx.params
    shape = tuple(p["shape"])
    tmp = Path(p["path"] + ".tmp")
    t0 = time.perf_counter()
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint16, shape=shape)
    make_pixels(out, seed=int(p["seed"]))
    out.flush()
    dig = digest(out)
    del out
    os.replace(tmp, p["path"])
    return {"seconds": time.perf_counter() - t0, "digest": dig}


@case("write")
def _write(ctx: CaseContext) -> dict[str, Any]:
    """Write one system's copy of a source array (fresh interpreter, untimed in the report)."""
    import numpy as np

    p = ctx.params
    system, out = p["system"], p["path"]
    cz, cy, cx = p["chunk"]
    src = np.load(p["source"], mmap_mode="r")
    t0 = time.perf_counter()
    if system in ("omeframe-parquet", "omeframe-vortex"):
        import omeframe

        omeframe.write_dataset(
            src,
            out,
            format="parquet" if system == "omeframe-parquet" else "vortex",
            chunk_shape=(cz, cy, cx),
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            image_ids=[IMAGE_ID],
            dim_order="TCZYX",
            progress=False,
        )
    elif system == "omeframe-record":
        import omeframe

        omeframe.write_table(
            out,
            [np.asarray(src)],
            dim_order="TCZYX",
            image_ids=[IMAGE_ID],
            chunk_shape=(cz, cy, cx),
            chunk_compression="zstd",
            chunk_compression_level=ZSTD_LEVEL,
        )
    elif system == "zarr-v3":
        import zarr
        from zarr.codecs import BytesCodec, ZstdCodec

        z = zarr.create_array(
            store=out,
            shape=src.shape,
            dtype=src.dtype,
            chunks=(1, 1, cz, cy, cx),
            serializer=BytesCodec(),
            compressors=[ZstdCodec(level=ZSTD_LEVEL)],
            fill_value=0,
            zarr_format=3,
        )
        z[...] = src
    elif system == "tifffile-aszarr":
        import tifffile

        comp = {"compression": "zstd", "compressionargs": {"level": ZSTD_LEVEL}}
        if cz > 1:  # volumetric tiles (ImageDepth): plain TIFF, OME-TIFF cannot hold them
            tifffile.imwrite(
                out, src[0], tile=(cz, cy, cx), photometric="minisblack", metadata={"axes": "CZYX"}, **comp
            )
        else:
            tifffile.imwrite(
                out, src, tile=(cy, cx), photometric="minisblack", metadata={"axes": "TCZYX"}, ome=True, **comp
            )
    elif system == "ome-arrow-dataset":
        from ome_arrow.dataset import write_ome_arrow_dataset

        write_ome_arrow_dataset(
            [np.asarray(src)],
            out,
            chunk_shape=(1, 1, cz, cy, cx),
            compression="zstd",
            chunk_rows_per_row_group=1,
        )
    elif system == "ome-arrow-tensor_view":
        from ome_arrow.export import to_ome_parquet
        from ome_arrow.ingest import from_numpy

        rec = from_numpy(
            np.asarray(src),
            dim_order="TCZYX",
            image_id=IMAGE_ID,
            clamp_to_uint16=False,
            chunk_shape=(cz, cy, cx),
            chunk_encoding="bytes",
            chunk_compression="zstd",
            chunk_compression_level=ZSTD_LEVEL,
        )
        # Byte chunks are already zstd-compressed: no second Parquet codec.
        to_ome_parquet(rec, out, column_name=COLUMN, compression=None)
    else:  # pragma: no cover
        raise ValueError(system)
    return {"seconds": time.perf_counter() - t0}


# ---- readers: open(path) -> handle; read(handle, sel) -> TCZYX ndarray
def _of_open(system: str, path: str) -> Any:
    import omeframe

    if system == "omeframe-record":
        return omeframe.scan(path)
    return omeframe.scan(path, image_id=IMAGE_ID)


def _of_read(h: Any, sel: dict[str, int] | None) -> Any:
    if sel is None:
        return h.export("numpy")
    return h.select(
        t=sel["t"], c=sel["c"], z=slice(sel["z0"], sel["z1"]), y=(sel["y0"], sel["y1"]), x=(sel["x0"], sel["x1"])
    ).export("numpy")


def _zarr_open(system: str, path: str) -> Any:
    import zarr

    return zarr.open_array(path, mode="r")


def _zarr_read(h: Any, sel: dict[str, int] | None) -> Any:
    if sel is None:
        return h[...]
    t, c = sel["t"], sel["c"]
    return h[t : t + 1, c : c + 1, sel["z0"] : sel["z1"], sel["y0"] : sel["y1"], sel["x0"] : sel["x1"]]


def _tiff_open(system: str, path: str) -> Any:
    import tifffile
    import zarr

    tf = tifffile.TiffFile(path)
    s = tf.series[0]
    axes = s.axes
    if any(a not in "TCZYX" for a in axes) or "".join(a for a in "TCZYX" if a in axes) != axes:
        raise ValueError(f"unexpected TIFF axes {axes!r}")
    full = {a: n for a, n in zip(axes, s.shape, strict=True)}
    shape5 = tuple(full.get(a, 1) for a in "TCZYX")
    return (tf, zarr.open(s.aszarr(), mode="r"), axes, shape5)


def _tiff_read(h: Any, sel: dict[str, int] | None) -> Any:
    _, za, axes, shape5 = h
    if sel is None:
        return za[...].reshape(shape5)
    rng = {
        "T": (sel["t"], sel["t"] + 1),
        "C": (sel["c"], sel["c"] + 1),
        "Z": (sel["z0"], sel["z1"]),
        "Y": (sel["y0"], sel["y1"]),
        "X": (sel["x0"], sel["x1"]),
    }
    out = za[tuple(slice(*rng[a]) for a in axes)]
    return out.reshape(tuple(rng[a][1] - rng[a][0] for a in "TCZYX"))


def _oad_open(system: str, path: str) -> Any:
    from ome_arrow.dataset import OMEArrowDataset

    d = OMEArrowDataset(path)
    return (d, d.image_ids[0])


def _oad_read(h: Any, sel: dict[str, int] | None) -> Any:
    d, iid = h
    if sel is None:
        return d.read_image(iid)
    return d.read_region(
        iid,
        y=slice(sel["y0"], sel["y1"]),
        x=slice(sel["x0"], sel["x1"]),
        t=slice(sel["t"], sel["t"] + 1),
        c=slice(sel["c"], sel["c"] + 1),
        z=slice(sel["z0"], sel["z1"]),
    )


def _oatv_open(system: str, path: str) -> Any:
    from ome_arrow import OMEArrow

    return OMEArrow.scan(path, column_name=COLUMN)


def _oatv_read(h: Any, sel: dict[str, int] | None) -> Any:
    if sel is None:
        return h.tensor_view(layout="TCZYX").to_numpy(contiguous=True)
    return h.tensor_view(
        t=sel["t"],
        c=sel["c"],
        z=slice(sel["z0"], sel["z1"]),
        roi=(sel["x0"], sel["y0"], sel["x1"] - sel["x0"], sel["y1"] - sel["y0"]),
        layout="TCZYX",
    ).to_numpy(contiguous=True)


READERS: dict[str, tuple[Callable[[str, str], Any], Callable[[Any, Any], Any]]] = {
    "omeframe-parquet": (_of_open, _of_read),
    "omeframe-vortex": (_of_open, _of_read),
    "omeframe-record": (_of_open, _of_read),
    "zarr-v3": (_zarr_open, _zarr_read),
    "tifffile-aszarr": (_tiff_open, _tiff_read),
    "ome-arrow-dataset": (_oad_open, _oad_read),
    "ome-arrow-tensor_view": (_oatv_open, _oatv_read),
}


def _proc_io() -> dict[str, int]:
    out = {"rchar": 0}
    try:
        with open("/proc/self/io") as fh:
            for line in fh:
                if line.startswith("rchar:"):
                    out["rchar"] = int(line.split()[1])
    except OSError:
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["faults"] = int(ru.ru_minflt + ru.ru_majflt)
    return out


def _mapped_data_rss() -> int:
    """Resident bytes of memory-mapped files under the data directory."""
    prefix = str(DATA_ROOT)
    mapped, on = 0, False
    try:
        with open("/proc/self/smaps") as fh:
            for line in fh:
                head = line.split(maxsplit=1)[0]
                if "-" in head and not head.endswith(":"):
                    parts = line.split(maxsplit=5)
                    on = len(parts) == 6 and parts[5].strip().startswith(prefix)
                elif on and head == "Rss:":
                    mapped += int(line.split()[1]) * 1024
    except OSError:
        pass
    return mapped


def io_begin() -> dict[str, int]:
    """I/O counters before an operation (smaps is read first: reading it counts in rchar)."""
    mapped = _mapped_data_rss()
    return {**_proc_io(), "mapped": mapped}


def io_end() -> dict[str, int]:
    """I/O counters after an operation (rchar first, then smaps)."""
    out = _proc_io()
    out["mapped"] = _mapped_data_rss()
    return out


def _io_delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {
        "rchar": b["rchar"] - a["rchar"],
        "faults_bytes": (b["faults"] - a["faults"]) * 4096,
        "mapped": max(0, b["mapped"] - a["mapped"]),
    }


@case("read")
def _read(ctx: CaseContext) -> dict[str, Any]:
    """Cold first read, warm reads on the open handle, then a fresh-handle read for bytes."""
    p = ctx.params
    system, path, sels = p["system"], p["path"], p["sels"]
    import_s = import_family(FAMILY[system])
    pre_failed = 0
    for name in p.get("preimport") or ():  # "cold after all imports": what the first read imports
        try:
            __import__(name)
        except BaseException:  # noqa: BLE001 - some private modules cannot be imported by name
            pre_failed += 1
    opener, reader = READERS[system]
    gc.collect()
    ctx.mark_baseline()
    mods0 = set(sys.modules)
    res: dict[str, Any] = {"import_s": import_s, "digests": {}, "warm": [], "warm_io": []}

    io0 = io_begin()
    t0 = time.perf_counter()
    h = opener(system, path)
    out = reader(h, sels[0])
    res["cold"] = time.perf_counter() - t0
    res["cold_io"] = _io_delta(io0, io_end())
    res["digests"]["0"] = digest(out)
    res["out_nbytes"] = int(out.nbytes)
    del out
    lazy = [m for m in sys.modules if m not in mods0]  # import order
    res["lazy_imports"] = len(lazy)
    res["lazy_list"] = lazy
    res["preimport_failed"] = pre_failed

    # Warm reads: same handle, a new position each (a full read repeats itself).
    n_warm = int(p["repeats"])
    budget = float(p["budget"])
    spent = 0.0
    full = sels[0] is None
    if res["cold"] > budget:  # a read this slow is reported from its cold run alone
        n_warm = 0
        res["cold_only"] = True
    for i in range(1, 1 + n_warm):
        if i > 1 and spent + res["warm"][-1] > budget:
            break
        sel = sels[min(i, len(sels) - 1)]
        out = None
        gc.collect()
        a = io_begin()
        t1 = time.perf_counter()
        out = reader(h, sel)
        dt = time.perf_counter() - t1
        res["warm_io"].append(_io_delta(a, io_end()))
        res["warm"].append(dt)
        spent += dt
        if not full:  # hashing 1 GiB takes a second: full reads are checked on the cold read
            res["digests"][str(min(i, len(sels) - 1))] = digest(out)
        del out

    # Bytes: a fresh handle (imports done) reading the last position (full reads: the cold read).
    if not full and not res.get("cold_only") and len(sels) >= n_warm + 2 and res["cold"] + spent < 4 * budget:
        del h
        gc.collect()
        a = io_begin()
        t1 = time.perf_counter()
        h2 = opener(system, path)
        out = reader(h2, sels[-1])
        res["reopen"] = time.perf_counter() - t1
        res["reopen_io"] = _io_delta(a, io_end())
        res["digests"][str(len(sels) - 1)] = digest(out)
        del out, h2
    return res


def _decompress_all(codec: Any, items: list[tuple[Any, int]]) -> None:
    """Decompress every ``(payload, decompressed size)`` of ``items`` (results dropped)."""
    for b, n in items:
        codec.decompress(b, decompressed_size=n, asbytes=False)


@case("floor")
def _floor(ctx: CaseContext) -> dict[str, Any]:
    """zstd-decompress exactly the touched chunks' stored bytes, one thread, best of N."""
    import numpy as np
    import pyarrow as pa

    import omeframe

    p = ctx.params
    ds = omeframe.open_dataset(p["path"])
    e = ds.entry(IMAGE_ID)
    origins, extents = e.origins_extents()
    codec = pa.Codec("zstd")
    itemsize = np.dtype(e.dtype).itemsize
    per_sel = []
    for sel in p["sels"]:
        if sel is None:
            idx = np.arange(len(origins))
        else:
            o, x = origins, extents
            mask = (
                (o[:, 0] == sel["t"])
                & (o[:, 1] == sel["c"])
                & (o[:, 2] < sel["z1"])
                & (o[:, 2] + x[:, 0] > sel["z0"])
                & (o[:, 3] < sel["y1"])
                & (o[:, 3] + x[:, 1] > sel["y0"])
                & (o[:, 4] < sel["x1"])
                & (o[:, 4] + x[:, 2] > sel["x0"])
            )
            idx = np.flatnonzero(mask)
        blobs = [ds.read_chunk_bytes(IMAGE_ID, 0, int(i), verify=False) for i in idx]
        sizes = [int(np.prod(extents[i])) * itemsize for i in idx]

        pairs = list(zip(blobs, sizes, strict=True))
        timing, _ = best_of(
            functools.partial(_decompress_all, codec, pairs), int(p["repeats"]), budget_s=float(p["budget"])
        )
        entry = {
            "best": timing.best,
            "chunks": int(len(idx)),
            "stored": int(sum(len(b) for b in blobs)),
            "raw": int(sum(sizes)),
        }
        if sel is not None and e.frames is not None:
            # Diagnostic: just the zstd frames holding the selection's rows
            # (what omeframe's framed chunks let a reader decode).
            first, ends = e.frames
            fr = int(e.frame_rows)
            spans = []
            for k, i in enumerate(idx.tolist()):
                oz, oy = int(origins[i, 2]), int(origins[i, 3])
                ez, ey, ex = (int(v) for v in extents[i])
                za, zb = max(sel["z0"], oz) - oz, min(sel["z1"], oz + ez) - 1 - oz
                r0 = za * ey + max(sel["y0"], oy) - oy
                r1 = zb * ey + min(sel["y1"], oy + ey) - oy
                fa, n = int(first[i]), int(first[i + 1] - first[i])
                ka, kb = r0 // fr, min(n, -(-r1 // fr))
                lo, hi = int(ends[fa + ka] - ends[fa]), int(ends[fa + kb] - ends[fa])
                spans.append((blobs[k][lo:hi], (min(kb * fr, ez * ey) - ka * fr) * ex * itemsize))

            ft, _ = best_of(
                functools.partial(_decompress_all, codec, spans), int(p["repeats"]), budget_s=float(p["budget"])
            )
            entry["frames_best"] = ft.best
            entry["frames_stored"] = int(sum(len(b) for b, _ in spans))
        if sel is None:  # full: also in 2 threads (Arrow's codecs release the GIL) = usable cores now
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                t0 = time.perf_counter()
                for _ in pool.map(lambda b, n: codec.decompress(b, decompressed_size=n, asbytes=False), blobs, sizes):
                    pass
                entry["best_2threads"] = time.perf_counter() - t0
        per_sel.append(entry)
        del blobs, pairs
    root = Path(p["path"])
    meta = (root / "manifest.json").stat().st_size + ds.images_path.stat().st_size
    return {"sels": per_sel, "metadata_bytes": int(meta)}


@case("profile")
def _profile(ctx: CaseContext) -> dict[str, Any]:
    """cProfile of a cold open + ROI and of warm ROIs (for diagnosing misses)."""
    import cProfile
    import io
    import pstats

    p = ctx.params
    system, path, sels = p["system"], p["path"], p["sels"]
    import_family(FAMILY[system])
    opener, reader = READERS[system]
    texts = {}
    prof = cProfile.Profile()
    prof.enable()
    h = opener(system, path)
    reader(h, sels[0])
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(int(p.get("top", 25)))
    texts["cold"] = s.getvalue()
    prof = cProfile.Profile()
    prof.enable()
    for sel in sels[1:]:
        for _ in range(int(p.get("loops", 20))):
            reader(h, sel)
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(int(p.get("top", 25)))
    texts["warm"] = s.getvalue()
    return texts


# =============================================================== fork server
_MARK = "@@ROI@@ "


def _threads_now() -> int:
    """Python threads alive (native helper threads such as OpenBLAS's or jemalloc's are not counted)."""
    import threading

    return threading.active_count()


def _native_threads() -> list[str]:
    names = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as fh:
                names.append(fh.read().strip())
    except OSError:
        pass
    return names


def _run_forked(req: dict[str, Any]) -> dict[str, Any]:
    threads = _threads_now()
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        payload = b""
        try:
            os.close(r)
            os.dup2(2, 1)  # keep the protocol channel clean
            timeout = int(req.get("timeout") or 0)
            if timeout:
                signal.alarm(timeout)
            ctx = CaseContext(params=req["params"])
            start_rss = rss_bytes()
            t0 = time.perf_counter()
            res = dict(CASES[req["case"]](ctx))
            res["case_seconds"] = time.perf_counter() - t0
            res["baseline_rss"] = ctx.baseline_rss if ctx.baseline_rss is not None else start_rss
            res["peak_rss"] = peak_rss_bytes()
            payload = json.dumps(res).encode()
        except BaseException:  # noqa: BLE001 - report everything to the parent
            payload = json.dumps({"error": traceback.format_exc()}).encode()
        finally:
            view = memoryview(payload)
            while view:
                n = os.write(w, view)
                view = view[n:]
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 1 << 20)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if not data:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            why = f"timed out after {req.get('timeout')} s" if sig == signal.SIGALRM else f"killed by signal {sig}"
        else:
            why = f"exit code {os.WEXITSTATUS(status)}"
        return {"error": f"case {req['case']!r} {why}", "fork_threads": threads}
    res = json.loads(data)
    res["fork_threads"] = threads
    return res


def zygote_main(family: str) -> None:
    """Import ``family`` once, then fork one child per case request (JSON lines on stdin)."""
    import_s = import_family(family)
    gc.collect()
    gc.freeze()
    ready = {
        "ready": True,
        "family": family,
        "import_s": import_s,
        "rss": rss_bytes(),
        "threads": _threads_now(),
        "native_threads": _native_threads(),
    }
    sys.stdout.write(_MARK + json.dumps(ready) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req.get("quit"):
            break
        res = _run_forked(req)
        sys.stdout.write(_MARK + json.dumps(res) + "\n")
        sys.stdout.flush()


class Runner:
    """Runs cases in processes forked from per-library zygotes (or fresh interpreters)."""

    def __init__(self, fork: bool, log_dir: Path) -> None:
        self.fork = fork
        self.log_dir = log_dir
        self.zygotes: dict[str, tuple[subprocess.Popen[str], Any]] = {}
        self.ready: dict[str, dict[str, Any]] = {}

    def _zygote(self, family: str) -> subprocess.Popen[str]:
        z = self.zygotes.get(family)
        if z is not None and z[0].poll() is None:
            return z[0]
        compile_omeframe()
        log = open(self.log_dir / f"zygote-{family}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--zygote", family],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
        )
        self.zygotes[family] = (proc, log)
        self.ready[family] = self._reply(proc, family)
        r = self.ready[family]
        _log(f"  [{family}] zygote ready: import {r['import_s']:.2f} s, RSS {r['rss'] / MiB:.0f} MiB, "
             f"Python threads {r['threads']}, native threads {r['native_threads']}")
        return proc

    def _reply(self, proc: subprocess.Popen[str], family: str) -> dict[str, Any]:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            if not line:
                tail = (self.log_dir / f"zygote-{family}.log").read_text()[-3000:]
                raise CaseError(f"zygote {family!r} died:\n{tail}")
            if line.startswith(_MARK):
                return dict(json.loads(line[len(_MARK) :]))

    def run(self, family: str, case_name: str, params: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        if not self.fork:
            return run_case(SCRIPT, case_name, params, timeout=timeout + 60)
        proc = self._zygote(family)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"case": case_name, "params": dict(params), "timeout": timeout}) + "\n")
        proc.stdin.flush()
        res = self._reply(proc, family)
        if "error" in res:
            raise CaseError(res["error"].strip().splitlines()[-1] if res["error"].strip() else "error")
        return res

    def restart(self, family: str) -> None:
        z = self.zygotes.pop(family, None)
        if z is not None:
            z[0].kill()
            z[0].wait()
            z[1].close()

    def close(self) -> None:
        for proc, log in self.zygotes.values():
            try:
                if proc.poll() is None and proc.stdin is not None:
                    proc.stdin.write(json.dumps({"quit": True}) + "\n")
                    proc.stdin.flush()
                    proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
            log.close()


# =============================================================== parent side
def ensure_data(
    lay: Layout, shape: tuple[int, ...], systems: list[str], root: Path, rewrite: bool
) -> tuple[Path, dict[str, Any]]:
    """Generate the source array and every system's copy unless cached with a matching marker."""
    droot = root / lay.dataset
    droot.mkdir(parents=True, exist_ok=True)
    src = droot / "source.npy"
    smark = droot / "source.json"
    want = source_spec(shape)
    m = _read_marker(smark)
    if rewrite or m is None or m.get("spec") != want or not src.exists():
        _log(f"[{lay.dataset}] generating {'x'.join(map(str, shape))} uint16 ...")
        smark.unlink(missing_ok=True)
        res = run_case(SCRIPT, "gen", {"path": str(src), "shape": list(shape), "seed": SEED}, timeout=1800)
        m = {"spec": want, "digest": res["digest"], "seconds": res["seconds"]}
        smark.write_text(json.dumps(m, indent=1))
        _log(f"[{lay.dataset}] generated in {res['seconds']:.1f} s")
    lroot = root / lay.key
    lroot.mkdir(parents=True, exist_ok=True)
    for system in systems:
        sdir = lroot / system
        spec = system_spec(lay, shape, system)
        mk = _read_marker(sdir / "MARKER.json")
        if not rewrite and mk is not None and mk.get("spec") == spec and mk.get("source") == m["digest"]:
            continue
        shutil.rmtree(sdir, ignore_errors=True)
        tmp = lroot / f".tmp-{system}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        paths = _system_paths(tmp, system, lay)
        t0 = time.perf_counter()
        res = run_case(
            SCRIPT,
            "write",
            {"system": system, "source": str(src), "chunk": list(lay.chunk), **paths},
            timeout=1800,
        )
        (tmp / "MARKER.json").write_text(
            json.dumps(
                {"spec": spec, "source": m["digest"], "write_s": res["seconds"], "bytes": dir_size(tmp)}, indent=1
            )
        )
        os.replace(tmp, sdir)
        _log(f"[{lay.key}] wrote {system} in {time.perf_counter() - t0:.1f} s ({dir_size(sdir) / MiB:.0f} MiB)")
    return src, m


def make_sels(lay: Layout, shape: tuple[int, ...], op: str, n: int) -> list[dict[str, int] | None]:
    """``n`` distinct selections for ``op``; ROIs straddle 4 chunks of 512 (y0 = x0 = 512k + 384)."""
    st, sc, sz, sy, sx = shape
    if op == "full":
        return [None] * n
    kys = list(range(0, (sy - 384 - ROI) // 512 + 1))
    kxs = list(range(0, (sx - 384 - ROI) // 512 + 1))
    rnd = random.Random(f"{SEED}:{lay.key}:{op}")
    if op == "roi":
        combos = [(ky, kx, z, c) for ky in kys for kx in kxs for z in range(sz) for c in range(sc)]
    else:
        combos = [(ky, kx, -1, c) for ky in kys for kx in kxs for c in range(sc)]
    if len(combos) < n:
        raise ValueError(f"{lay.key}: only {len(combos)} distinct {op} positions for {n} reads")
    picks = rnd.sample(combos, n)
    depth = min(SUBVOL_Z, sz)
    out: list[dict[str, int] | None] = []
    for ky, kx, z, c in picks:
        y0, x0 = 512 * ky + 384, 512 * kx + 384
        z0, z1 = (z, z + 1) if op == "roi" else ((sz - depth) // 2, (sz - depth) // 2 + depth)
        out.append({"t": 0, "c": c, "z0": z0, "z1": z1, "y0": y0, "y1": y0 + ROI, "x0": x0, "x1": x0 + ROI})
    return out


def touched_raw(lay: Layout, shape: tuple[int, ...], sel: dict[str, int]) -> int:
    """Raw bytes of the chunks a selection touches (what a chunked reader must decode)."""
    cz, cy, cx = lay.chunk
    sz, sy, sx = shape[2:]
    n = 1
    axes = ((sel["z0"], sel["z1"], cz, sz), (sel["y0"], sel["y1"], cy, sy), (sel["x0"], sel["x1"], cx, sx))
    for lo, hi, c, size in axes:
        first, last = lo // c, (hi - 1) // c
        n_ax = 0
        for k in range(first, last + 1):
            n_ax += min(c, size - k * c)
        n *= n_ax
    return n * 2  # uint16


def warm_cache(path: Path) -> None:
    """Read every file under ``path`` once so the OS page cache holds it."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    buf = bytearray(8 << 20)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def expected_digests(src: Any, sels: list[dict[str, int] | None], full_digest: str) -> list[str]:
    out = []
    for sel in sels:
        if sel is None:
            out.append(full_digest)
        else:
            out.append(digest(src[sel["t"] : sel["t"] + 1, sel["c"] : sel["c"] + 1, sel["z0"] : sel["z1"],
                                  sel["y0"] : sel["y1"], sel["x0"] : sel["x1"]]))
    return out


def _ok(res: dict[str, Any] | None) -> bool:
    return bool(res) and "error" not in res and "skipped" not in res  # type: ignore[operator]


def _best(res: dict[str, Any] | None) -> float | None:
    if not _ok(res):
        return None
    return min(res["warm"]) if res.get("warm") else res.get("cold")  # cold-only: slow cases


def _bytes_io(res: dict[str, Any]) -> tuple[dict[str, int], str]:
    """The I/O figures for "bytes read": fresh-handle read, else first warm read, else cold."""
    if "reopen_io" in res:
        return res["reopen_io"], "reopen"
    # A handle that caches what it read (omeframe's record source keeps the row) reads ~0 when
    # warm: then the cold read's figure is the honest one.
    if res.get("warm_io") and res["warm_io"][0]["rchar"] >= 0.01 * res.get("out_nbytes", 0):
        return res["warm_io"][0], "warm"
    return res["cold_io"], "cold"


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.1f}" if s < 0.1 else f"{s * 1e3:.0f}"


def _mib(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / MiB:.2f}" if n < 10 * MiB else f"{n / MiB:.0f}"


def run_layout(
    lay: Layout, sizes: Sizes, systems: list[str], runner: Runner, root: Path, rewrite: bool
) -> dict[str, Any]:
    import numpy as np

    shape = sizes.image_shape if lay.dataset == "image" else sizes.stack_shape
    src_path, smark = ensure_data(lay, shape, systems, root, rewrite)
    src = np.load(src_path, mmap_mode="r")
    results: dict[tuple[str, str], dict[str, Any]] = {}
    problems: list[str] = []
    sels_by_op = {
        op: make_sels(lay, shape, op, (1 + sizes.full_repeats) if op == "full" else (2 + sizes.repeats))
        for op in lay.ops
    }
    exp = {op: expected_digests(src, sels, smark["digest"]) for op, sels in sels_by_op.items()}
    for system in systems:
        sdir = root / lay.key / system
        paths = _system_paths(sdir, system, lay)
        warm_cache(sdir)
        for op in lay.ops:
            repeats = sizes.full_repeats if op == "full" else sizes.repeats
            sub = results.get((system, "subvol"))
            if op == "full" and "subvol" in lay.ops:
                # Readers that redo work per plane (ome-arrow's tensor_view over 3-D chunks decodes
                # each chunk once per plane) would take minutes: estimate from the sub-volume.
                why = None
                if not _ok(sub):
                    why = "skipped (sub-vol failed)"
                else:
                    factor = int(np.prod(shape)) * 2 / touched_raw(lay, shape, sels_by_op["subvol"][-1])
                    est = _best(sub) * factor
                    if est > sizes.timeout_s:
                        why = f"skipped (~{est:.0f} s est.)"
                if why:
                    results[(system, op)] = {"skipped": why}
                    _log(f"  [{lay.key}] {system:22s} {op:6s} {why}")
                    continue
            params = {
                "system": system,
                "path": paths["path"],
                "sels": sels_by_op[op],
                "repeats": repeats,
                "budget": sizes.budget_s,
            }
            timeout = sizes.subvol_timeout_s if op == "subvol" else sizes.timeout_s
            t0 = time.perf_counter()
            try:
                try:
                    res = runner.run(FAMILY[system], "read", params, timeout)
                except CaseError as exc:
                    if "ImportError" not in str(exc) or not runner.fork:
                        raise
                    # The package changed on disk since the zygote imported it: start afresh.
                    _log(f"  [{lay.key}] {system} {op}: {str(exc).strip()[:120]} -- restarting zygote")
                    runner.restart(FAMILY[system])
                    res = runner.run(FAMILY[system], "read", params, timeout)
            except CaseError as exc:
                msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "error"
                if "timed out" in msg:  # a reader too slow for the time limit: reported, not a failure
                    results[(system, op)] = {"skipped": f"timed out (> {timeout:g} s)"}
                    _log(f"  [{lay.key}] {system:22s} {op:6s} timed out after {timeout:g} s")
                    continue
                problems.append(f"{lay.key} {system} {op}: {msg}")
                results[(system, op)] = {"error": msg}
                _log(f"  [{lay.key}] {system:22s} {op:6s} FAILED: {msg}")
                continue
            if op == "roi":
                if not res.get("lazy_imports"):
                    res["cold_all"] = res["cold"]
                elif res["cold"] < 1.0:
                    try:  # the same cold read with everything it imported imported beforehand
                        res2 = runner.run(
                            FAMILY[system],
                            "read",
                            {**params, "sels": sels_by_op[op][:1], "repeats": 0, "preimport": res["lazy_list"]},
                            sizes.timeout_s,
                        )
                        res["cold_all"] = res2["cold"]
                        res["cold_all_lazy"] = res2["lazy_imports"]
                        if res2["digests"]["0"] != exp[op][0]:
                            problems.append(f"{lay.key} {system} {op}: wrong pixels (pre-imported cold read)")
                    except CaseError as exc:
                        problems.append(f"{lay.key} {system} {op} (pre-imported cold read): {exc}")
            bad = [i for i, d in res["digests"].items() if d != exp[op][int(i)]]
            if bad:
                problems.append(f"{lay.key} {system} {op}: wrong pixels at selection(s) {bad}")
                res["wrong"] = True
            results[(system, op)] = res
            _log(
                f"  [{lay.key}] {system:22s} {op:6s} cold {_ms(res['cold'])} ms"
                + (f" ({_ms(res['cold_all'])} ms pre-imported)" if "cold_all" in res else "")
                + f", warm {_ms(_best(res))} ms, "
                f"case {time.perf_counter() - t0:.1f} s{'  WRONG PIXELS' if bad else ''}"
            )
    floors: dict[str, Any] = {}
    if "omeframe-parquet" in systems:
        fpath = _system_paths(root / lay.key / "omeframe-parquet", "omeframe-parquet", lay)["path"]
        for op in lay.ops:
            sels = sels_by_op[op]
            fsels = [sels[0]] if op == "full" else sels[1:]  # the warm positions + the reopen one
            try:
                floors[op] = runner.run(
                    "omeframe",
                    "floor",
                    {"path": fpath, "sels": fsels, "repeats": 1 if op == "full" else sizes.floor_repeats,
                     "budget": sizes.budget_s},
                    sizes.timeout_s,
                )
            except CaseError as exc:
                problems.append(f"{lay.key} floor {op}: {exc}")
    raw_full = int(np.prod(shape)) * 2
    sizes_on_disk = {
        s: dir_size(root / lay.key / s) - (root / lay.key / s / "MARKER.json").stat().st_size for s in systems
    }
    return {
        "layout": lay,
        "shape": shape,
        "results": results,
        "floors": floors,
        "problems": problems,
        "raw_full": raw_full,
        "disk": sizes_on_disk,
        "sels": sels_by_op,
    }


def layout_table(run: dict[str, Any], systems: list[str]) -> str:
    lay: Layout = run["layout"]
    rows = []
    for system in systems:
        for op in lay.ops:
            res = run["results"].get((system, op))
            if res is None:
                continue
            label = {"roi": "ROI", "subvol": "sub-vol", "full": "full"}[op]
            if not _ok(res):
                why = res.get("skipped") or res.get("error", "?")
                rows.append([SHORT[system], label, "-", "-", why[:48], "-", "-", "-", "-", "-"])
                continue
            best = _best(res)
            base = _best(run["results"].get((BASE, op)))
            io, where = _bytes_io(res)
            nbytes = max(io["rchar"], io["mapped"])
            mark = ("m" if io["mapped"] > io["rchar"] else "") + {"reopen": "", "warm": " w", "cold": " c"}[where]
            mbs = (res["out_nbytes"] / best / 1e6) if best else None
            peak = res["peak_rss"] - res["baseline_rss"]
            rows.append(
                [
                    SHORT[system] + (" (!)" if res.get("wrong") else ""),
                    label,
                    _ms(res["cold"]) if op != "full" else f"{res['cold']:.2f} s",
                    _ms(res["cold_all"]) if "cold_all" in res else "",
                    (_ms(best) if op != "full" else f"{best:.2f} s") + (" (cold)" if res.get("cold_only") else ""),
                    f"{mbs:.0f}" if mbs is not None else "-",
                    _mib(nbytes) + mark,
                    _mib(io["faults_bytes"]),
                    f"{peak / MiB:.0f}",
                    fmt_ratio(best / base) if best and base else "-",
                ]
            )
    headers = [
        "system", "case", "cold 1st read ms", "(pre-imported)", "warm ms", "MB/s", "bytes read MiB",
        "faults x4K MiB", "peak RSS MiB", "vs of-parquet",
    ]
    return markdown_table(headers, rows, align="ll" + "r" * 8)


def ratio_table(runs: list[dict[str, Any]], systems: list[str]) -> str:
    cols: list[tuple[dict[str, Any], str, str]] = []
    for run in runs:
        lay = run["layout"]
        for op in lay.ops:
            cols.append((run, op, "warm"))
            if op == "roi":
                cols.append((run, op, "cold"))
    headers = ["system"] + [
        f"{r['layout'].key} {'open+ROI' if kind == 'cold' else {'roi': 'ROI', 'subvol': 'sub-vol', 'full': 'full'}[op]}"
        for r, op, kind in cols
    ]
    rows = []
    for system in systems:
        row = [SHORT[system]]
        for run, op, kind in cols:
            res = run["results"].get((system, op))
            base = run["results"].get((BASE, op))
            if not _ok(res) or not _ok(base):
                row.append("fail" if res and "error" in res else "skip" if res and "skipped" in res else "-")
                continue
            v = res["cold"] if kind == "cold" else _best(res)
            b = base["cold"] if kind == "cold" else _best(base)
            if system == BASE:
                row.append(f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s")
            else:
                row.append(fmt_ratio(v / b))
        rows.append(row)
    return markdown_table(headers, rows, align="l" + "r" * (len(headers) - 1))


def targets(runs: list[dict[str, Any]], systems: list[str]) -> list[str]:
    """The issue's targets for omeframe's Parquet and Vortex datasets, PASS/MISS per dataset."""
    lines: list[str] = []

    def verdicts(fmt: str, fn: Callable[[dict[str, Any]], tuple[float, float, bool] | None], unit: str) -> str | None:
        parts, ok_all, any_ = [], True, False
        for run in runs:
            v = fn(run)
            if v is None:
                continue
            val, lim, ok = v
            any_ = True
            ok_all &= ok
            parts.append(f"{run['layout'].key} {val:.2f}{unit} {'PASS' if ok else 'MISS'}")
        if not any_:
            return None
        return f"{'PASS' if ok_all else 'MISS'} {SHORT[fmt]:10s}: " + " | ".join(parts)

    def res(run: dict[str, Any], system: str, op: str) -> dict[str, Any] | None:
        r = run["results"].get((system, op))
        return r if _ok(r) else None

    specs: list[tuple[str, Callable[[str], Callable[[dict[str, Any]], Any]], str]] = []

    def vs(other: str, limit: float) -> Callable[[str], Callable[[dict[str, Any]], Any]]:
        def mk(fmt: str) -> Callable[[dict[str, Any]], Any]:
            def f(run: dict[str, Any]) -> Any:
                a, b = res(run, fmt, "roi"), res(run, other, "roi")
                if not a or not b:
                    return None
                r = _best(a) / _best(b)
                return r, limit, r <= limit

            return f

        return mk

    def floor(fmt: str) -> Callable[[dict[str, Any]], Any]:
        def f(run: dict[str, Any]) -> Any:
            a, fl = res(run, fmt, "roi"), run["floors"].get("roi")
            if not a or not fl:
                return None
            r = _best(a) / min(s["best"] for s in fl["sels"])
            return r, 2.0, r <= 2.0

        return f

    def nbytes(fmt: str) -> Callable[[dict[str, Any]], Any]:
        def f(run: dict[str, Any]) -> Any:
            a, fl = res(run, fmt, "roi"), run["floors"].get("roi")
            if not a or not fl or "reopen_io" not in a:
                return None
            root = DATA_ROOT_ACTIVE / run["layout"].key / fmt / "ds"
            man = json.loads((root / "manifest.json").read_text())
            meta = (root / "manifest.json").stat().st_size + (root / man["images"]).stat().st_size
            allowed = fl["sels"][-1]["stored"] + meta
            io = a["reopen_io"]
            got = max(io["rchar"], io["mapped"])
            r = got / allowed
            return r, 1.25, r <= 1.25

        return f

    def cold(fmt: str) -> Callable[[dict[str, Any]], Any]:
        def f(run: dict[str, Any]) -> Any:
            a = res(run, fmt, "roi")
            if not a or run["layout"].key != "image":
                return None
            ms = a["cold"] * 1e3
            return ms, 50.0, ms <= 50.0

        return f

    def cold_all(fmt: str) -> Callable[[dict[str, Any]], Any]:
        def f(run: dict[str, Any]) -> Any:
            a = res(run, fmt, "roi")
            if not a or run["layout"].key != "image" or "cold_all" not in a:
                return None
            ms = a["cold_all"] * 1e3
            return ms, 50.0, ms <= 50.0

        return f

    def full(fmt: str) -> Callable[[dict[str, Any]], Any]:
        def f(run: dict[str, Any]) -> Any:
            a, b = res(run, fmt, "full"), res(run, "zarr-v3", "full")
            if not a or not b:
                return None
            r = _best(b) / _best(a)  # throughput ratio
            return r, 1.2, r >= 1.2

        return f

    specs = [
        ("ROI 256x256 warm time <= 0.5x zarr v3", vs("zarr-v3", 0.5), "x"),
        ("ROI 256x256 warm time <= 0.2x ome-arrow OMEArrowDataset.read_region", vs("ome-arrow-dataset", 0.2), "x"),
        ("ROI 256x256 warm time <= 2x decode floor (touched chunks, zstd, 1 thread)", floor, "x"),
        ("ROI bytes read (fresh handle) <= 1.25x touched chunks' stored bytes + manifest + images table", nbytes, "x"),
        ("Cold open + first ROI of the image <= 50 ms beyond imports (after `import omeframe`)", cold, " ms"),
        ("  the same, with what the first read imports lazily imported beforehand (diagnostic)", cold_all, " ms"),
        ("Full read throughput >= 1.2x zarr v3 (2 cores)", full, "x"),
    ]
    for title, mk, unit in specs:
        lines.append(f"- {title}")
        for fmt in ("omeframe-parquet", "omeframe-vortex"):
            if fmt not in systems:
                continue
            v = verdicts(fmt, mk(fmt), unit)
            if v:
                lines.append(f"  {v}")
    return lines


DATA_ROOT_ACTIVE = DATA_ROOT


def _versions() -> str:
    names = ("omeframe", "ome-arrow", "zarr", "tifffile", "imagecodecs", "pyarrow", "vortex-data", "numpy")
    return ", ".join(f"{n} {_dist_version(n)}" for n in names)


def main(argv: list[str] | None = None) -> int:
    global DATA_ROOT_ACTIVE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 90 s)")
    ap.add_argument("--only", action="append", help="run only these datasets (image, stack-512, stack-128)")
    ap.add_argument("--systems", help="comma-separated subset of: " + ", ".join(SYSTEMS))
    ap.add_argument("--no-fork", action="store_true", help="every case in a fresh interpreter (slower)")
    ap.add_argument("--rewrite", action="store_true", help="regenerate and rewrite the cached data")
    ap.add_argument("--profile", metavar="SYSTEM:DATASET:OP", help="print cProfile of one case and exit")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    root = DATA_ROOT / "quick" if args.quick else DATA_ROOT
    DATA_ROOT_ACTIVE = root
    root.mkdir(parents=True, exist_ok=True)
    systems = list(SYSTEMS) if not args.systems else [s.strip() for s in args.systems.split(",")]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    lays = [lay for lay in layouts(sizes) if not args.only or lay.key in args.only]
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    runner = Runner(fork=not args.no_fork, log_dir=root)

    if args.profile:
        system, key, op = args.profile.split(":")
        lay = next(x for x in layouts(sizes) if x.key == key)
        shape = sizes.image_shape if lay.dataset == "image" else sizes.stack_shape
        ensure_data(lay, shape, [system], root, False)
        sdir = root / key / system
        warm_cache(sdir)
        try:
            res = runner.run(
                FAMILY[system], "profile",
                {"system": system, "path": _system_paths(sdir, system, lay)["path"],
                 "sels": make_sels(lay, shape, op, 4)}, sizes.timeout_s,
            )
        finally:
            runner.close()
        print("### cold open + first read (cumulative)\n" + res["cold"])
        print("### warm reads (tottime)\n" + res["warm"])
        return 0

    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        for lay in lays:
            _log(f"[{lay.key}] chunks {lay.chunk} ZYX")
            run = run_layout(lay, sizes, systems, runner, root, args.rewrite)
            runs.append(run)
            problems += run["problems"]
    finally:
        runner.close()

    out_lines = [
        f"## bench_roi ({'quick' if args.quick else 'full'} run, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {machine_summary()}. Versions: {_versions()}.",
        f"Load average (1 min) at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f} "
        f"(on {os.cpu_count()} CPUs; other work on the machine slows every system alike, but adds noise).",
        "",
    ]
    for run in runs:
        lay, shape = run["layout"], run["shape"]
        out_lines.append(
            f"- {lay.key}: TCZYX {'x'.join(map(str, shape))} uint16 ({run['raw_full'] / MiB:.0f} MiB raw), "
            f"chunks {'x'.join(map(str, lay.chunk))} ZYX, zstd-3; on disk (MiB): "
            + ", ".join(f"{SHORT[s]} {run['disk'][s] / MiB:.0f}" for s in systems)
        )
    out_lines += [
        "",
        "### Ratios vs omeframe-parquet (warm best; 'open+ROI' = cold first ROI in a new process after imports)",
        "",
        ratio_table(runs, systems),
        "",
        "(> 1x: slower than omeframe-parquet, whose row shows absolute times.)",
    ]
    for run in runs:
        lay = run["layout"]
        out_lines += ["", f"### {lay.key}", "", layout_table(run, systems), ""]
        fl = run["floors"]
        parts = []
        for op in lay.ops:
            if op in fl:
                s = fl[op]["sels"]
                b = min(x["best"] for x in s)
                two = s[-1].get("best_2threads")
                parts.append(
                    f"{op}: {_ms(b)} ms for {s[-1]['chunks']} chunks ({s[-1]['stored'] / MiB:.2f} MiB stored -> "
                    f"{s[-1]['raw'] / MiB:.2f} MiB)"
                    + (f", {_ms(two)} ms in 2 threads (x{b / two:.2f}: the cores actually free)" if two else "")
                    + (
                        f" (of which the zstd frames under the selection: {_ms(min(x['frames_best'] for x in s))} ms, "
                        f"{s[-1]['frames_stored'] / MiB:.2f} MiB stored)"
                        if "frames_best" in s[-1] else ""
                    )
                )
        if parts:
            out_lines.append("Decode floor (zstd, 1 thread, best): " + "; ".join(parts) + ".")
        lazy = {}
        for s in systems:
            r = run["results"].get((s, "roi"))
            if r and r.get("lazy_imports"):
                tops = []
                for m in r["lazy_list"]:
                    top = m.split(".")[0]
                    if top not in tops and not top.startswith("_") and top not in sys.stdlib_module_names:
                        tops.append(top)
                lazy[SHORT[s]] = f"{r['lazy_imports']} modules ({', '.join(tops[:8]) or 'stdlib only'})"
        if lazy:
            out_lines.append(
                "First imported during the cold ROI read: " + "; ".join(f"{k}: {v}" for k, v in lazy.items()) + "."
            )
    out_lines += ["", "### Targets (omeframe datasets; reported, not asserted)", "", *targets(runs, systems)]
    notes = [
        "",
        "Notes: times are wall clock; warm = best of "
        f"{sizes.repeats} reads (full: {sizes.full_repeats}) on the open handle, each at a new position "
        "(slow cases stop repeating after "
        f"{sizes.budget_s:g} s). Cold = open + first read in a new process whose library is already imported "
        "(forked from a per-library process; OS page cache warm: files are read once before their cases). "
        "Bytes read = /proc/self/io rchar of a fresh open + read after the warm reads ('w': of a warm read on "
        "the open handle, 'c': of the cold read, which includes reading lazily imported modules); "
        "an 'm' suffix means the resident size of memory-mapped data files was larger and is shown instead; "
        "'faults x4K' = (minor + major page faults) x 4 KiB over the same read, an upper bound that also "
        "counts anonymous memory. Peak RSS = ru_maxrss of the case's process minus its RSS after imports. "
        "ROI/sub-volume positions straddle 4 chunks of 512 (y0 = x0 = 512k + 384; aligned with 128-chunks). "
        "MB/s = output bytes / warm time. '(cold)': a read slower than the repeat budget, timed once.",
    ]
    if any("ome-arrow-dataset" == s for s in systems):
        notes.append(
            "ome-arrow-dataset: write_ome_arrow_dataset(chunk_shape, compression='zstd', "
            "chunk_rows_per_row_group=1) (Parquet zstd at its default level; the writer takes none); "
            "ome-arrow-tensor_view: from_numpy(chunk_encoding='bytes', zstd-3) + to_ome_parquet(compression=None), "
            "read with OMEArrow.scan(path).tensor_view(..., layout='TCZYX').to_numpy(); each read re-reads the record."
        )
    if any(r.get("fork_threads", 1) > 1 for run in runs for r in run["results"].values()):
        notes.append("WARNING: some zygote had more than one Python thread when forking.")
    report = "\n".join(out_lines + notes) + "\n"
    if problems:
        report += "\nProblems:\n" + "\n".join(f"- {p}" for p in problems) + "\n"
    OUT_DIR.mkdir(exist_ok=True)
    partial = "-partial" if (args.only or args.systems) else ""  # never overwrite the full report
    out = OUT_DIR / f"bench_roi{'-quick' if args.quick else ''}{partial}.md"
    out.write_text(report, encoding="utf-8")
    print(report, flush=True)
    print(f"written to {out} in {time.perf_counter() - t_start:.0f} s", flush=True)
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--zygote":
        zygote_main(sys.argv[2])
    elif "--case" in sys.argv[1:]:
        case_main(CASES)
    else:
        sys.exit(main())
