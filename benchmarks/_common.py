"""Shared helpers for the omeframe benchmarks.

* :func:`run_case` / :func:`case_main`: run one benchmark case in a fresh
  Python subprocess and get its result back as JSON, together with the
  interpreter's baseline RSS (after imports) and the process's peak RSS, so a
  peak belongs to that case alone.
* :func:`best_of`: best-of-N wall-clock timing with an optional time budget.
* :func:`compile_omeframe`: give omeframe the bytecode an installed package has
  (a fresh process then pays what a user's does, not a compile of the sources).
* :func:`markdown_table` and the ``fmt_*`` helpers: print results.

* :func:`make_crops` / :func:`make_cell_stack` / :func:`make_features`: realistic
  synthetic single-cell crops (blobs + noise) and their feature columns.

Only the standard library and psutil are used here (numpy and pyarrow are
imported inside the data generators).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MiB",
    "CaseContext",
    "CaseError",
    "Timing",
    "best_of",
    "case_main",
    "compile_omeframe",
    "run_case",
    "rss_bytes",
    "peak_rss_bytes",
    "markdown_table",
    "fmt_seconds",
    "fmt_mib",
    "fmt_ratio",
    "machine_summary",
    "dir_size",
    "preload_pyarrow",
    "make_crops",
    "make_cell_stack",
    "make_features",
]

#: The repository root and the (git-ignored) directory every benchmark writes to.
ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench-output"

_RESULT_MARK = "@@BENCH_RESULT@@ "
MiB = 1 << 20


# ---------------------------------------------------------------- memory
def rss_bytes() -> int:
    """Current resident set size of this process, in bytes."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - psutil is a bench dependency
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def preload_pyarrow() -> None:
    """Load what pyarrow imports lazily on first use, so a baseline includes it.

    pyarrow imports ``pyarrow.parquet`` on demand and pandas (when installed)
    on the first ``pa.array`` / ``to_numpy`` call: ~50 MiB and ~0.3 s that do
    not depend on the data. Call before :meth:`CaseContext.mark_baseline`.
    """
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401

    pa.array([0]).to_numpy()


def dir_size(path: str | os.PathLike[str]) -> int:
    """Apparent size in bytes of a file, or of every file under a directory."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


# ---------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of every run, the best one, and CPU seconds per run.

    ``cpu`` is this process's user + system time (all threads): ``cpu / wall``
    near the thread count means the work ran in parallel; near 1 with a
    threaded library means it did not (or the cores were busy elsewhere).
    """

    best: float
    runs: tuple[float, ...]
    cpu: tuple[float, ...]

    @property
    def best_cpu(self) -> float:
        """CPU seconds of the fastest run."""
        return self.cpu[self.runs.index(self.best)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "best": self.best, "runs": list(self.runs), "cpu": list(self.cpu),
            "best_cpu": self.best_cpu,
        }  # fmt: skip


def best_of(
    fn: Callable[[], Any],
    repeats: int,
    *,
    budget_s: float | None = None,
    setup: Callable[[], None] | None = None,
) -> tuple[Timing, Any]:
    """Run ``fn`` up to ``repeats`` times; return the timings and the last result.

    ``setup`` runs (untimed) before every run. With ``budget_s``, no further
    run starts once the time spent plus one more run would exceed the budget
    (the first run always happens). The previous result is dropped before the
    next run starts, so results of two runs never sit in memory together.
    """
    runs: list[float] = []
    cpu: list[float] = []
    result: Any = None
    for i in range(max(1, repeats)):
        if i and budget_s is not None and sum(runs) + runs[-1] > budget_s:
            break
        if setup is not None:
            setup()
        result = None
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return Timing(min(runs), tuple(runs), tuple(cpu)), result


# ---------------------------------------------------------------- subprocess cases
class CaseError(RuntimeError):
    """A benchmark case failed in its subprocess."""


@dataclass
class CaseContext:
    """What a case function gets: its parameters and a baseline-RSS marker."""

    params: dict[str, Any]
    baseline_rss: int | None = None

    def mark_baseline(self) -> None:
        """Record the current RSS as the interpreter baseline (call after imports)."""
        self.baseline_rss = rss_bytes()


CaseFn = Callable[[CaseContext], Mapping[str, Any]]


def case_main(cases: Mapping[str, CaseFn], argv: Sequence[str] | None = None) -> None:
    """Child side of :func:`run_case`: run one case and print its JSON result.

    The printed result is the case's own mapping plus ``baseline_rss`` (from
    :meth:`CaseContext.mark_baseline`, or the RSS at start when the case never
    marked it), ``peak_rss`` and ``case_seconds`` (whole case, all runs).
    """
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True, choices=sorted(cases))
    ap.add_argument("--params", default="{}")
    ns, _ = ap.parse_known_args(argv)
    start_rss = rss_bytes()
    ctx = CaseContext(params=json.loads(ns.params))
    t0 = time.perf_counter()
    out = dict(cases[ns.case](ctx))
    out["case_seconds"] = time.perf_counter() - t0
    out["baseline_rss"] = ctx.baseline_rss if ctx.baseline_rss is not None else start_rss
    out["peak_rss"] = peak_rss_bytes()
    sys.stdout.write(_RESULT_MARK + json.dumps(out) + "\n")
    sys.stdout.flush()


_COMPILED: list[bool] = []


def compile_omeframe() -> None:
    """Write the bytecode of omeframe's modules, once per benchmark run.

    Peers come from wheels, whose installer compiles them; an editable
    checkout on a machine with ``PYTHONDONTWRITEBYTECODE`` set would otherwise
    compile every omeframe module in every fresh interpreter, and time it as
    part of import, open and first write.
    """
    if _COMPILED:
        return
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("omeframe")
    if spec is not None and spec.submodule_search_locations:
        for where in spec.submodule_search_locations:
            compileall.compile_dir(where, quiet=1, workers=1)
    _COMPILED.append(True)


def run_case(
    script: str | os.PathLike[str],
    case: str,
    params: Mapping[str, Any] | None = None,
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``case`` of ``script`` in a fresh interpreter and return its result dict.

    ``script`` must call :func:`case_main` when given ``--case``. Raises
    :class:`CaseError` with the tail of the child's stderr when it fails.
    """
    compile_omeframe()
    cmd = [sys.executable, os.fspath(script), "--case", case]
    cmd += ["--params", json.dumps(dict(params or {}))]
    child_env = dict(os.environ)
    child_env.update(env or {})
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=child_env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CaseError(f"case {case!r} timed out after {timeout} s") from exc
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_MARK) and proc.returncode == 0:
            return dict(json.loads(line[len(_RESULT_MARK) :]))
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
    raise CaseError(f"case {case!r} failed (exit code {proc.returncode}):\n{tail}")


# ---------------------------------------------------------------- printing
def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> str:
    """A padded markdown table; ``align`` holds one ``l``/``r`` per column."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    ncol = len(headers)
    align = (align or "l" + "r" * (ncol - 1)).ljust(ncol, "r")
    widths = [max(len(r[i]) for r in cells) for i in range(ncol)]

    def line(r: Sequence[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align, strict=False)]
        return "| " + " | ".join(parts) + " |"

    sep = "|" + "|".join(
        ("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1)) for w, a in zip(widths, align, strict=True)
    ) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1.0:
        return f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def fmt_mib(n: float | None, digits: int = 1) -> str:
    return "-" if n is None else f"{n / MiB:.{digits}f}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def machine_summary() -> str:
    """One line: CPU count, RAM, Python and OS."""
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB RAM"
    except ImportError:  # pragma: no cover
        ram = "RAM unknown"
    return (
        f"{os.cpu_count()} CPUs, {ram}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}"
    )


# ---------------------------------------------------------------- synthetic cells
def make_crops(n: int, seed: int = 1, size: int = 64) -> Any:
    """``n`` uint8 YXC crops of a cell (nucleus, cytoplasm, spots) on a dim background."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for lo in range(0, n, 1000):
        b = min(1000, n - lo)
        cy = rng.uniform(0.35 * size, 0.65 * size, (b, 1, 1)).astype(np.float32)
        cx = rng.uniform(0.35 * size, 0.65 * size, (b, 1, 1)).astype(np.float32)
        ry = rng.uniform(0.12 * size, 0.25 * size, (b, 1, 1)).astype(np.float32)
        rx = ry * rng.uniform(0.7, 1.3, (b, 1, 1)).astype(np.float32)
        d2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        cell = np.exp(-(d2**2) / 2)  # flat-topped cell body
        nucleus = np.exp(-d2 / (2 * 0.35**2))
        spots = np.zeros((b, size, size), dtype=np.float32)
        for _ in range(6):
            sy_ = cy + rng.normal(0, 0.5, (b, 1, 1)).astype(np.float32) * ry
            sx_ = cx + rng.normal(0, 0.5, (b, 1, 1)).astype(np.float32) * rx
            spots += np.exp(-((yy - sy_) ** 2 + (xx - sx_) ** 2) / (2 * 1.5**2))
        chans = [
            12 + 200 * rng.uniform(0.5, 1.0, (b, 1, 1)) * nucleus,
            18 + 110 * rng.uniform(0.5, 1.0, (b, 1, 1)) * cell,
            8 + 40 * cell + 150 * spots * cell,
        ]
        for c, ch in enumerate(chans):
            noisy = ch + rng.normal(0.0, 4.0, ch.shape)
            out[lo : lo + b, :, :, c] = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


def make_cell_stack(n: int, size: int, seed: int = 1) -> Any:
    """``n`` uint8 crops as one C-contiguous ``(n, 3, size, size)`` (CYX) stack.

    The same cells as :func:`make_crops`, generated in slabs of 20,000 so
    the float32 temporaries stay small for any ``n``.
    """
    import numpy as np

    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i, lo in enumerate(range(0, n, 20_000)):
        hi = min(n, lo + 20_000)
        out[lo:hi] = make_crops(hi - lo, seed=seed * 100_003 + i, size=size).transpose(0, 3, 1, 2)
    return out


WELLS = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]  # 384-well plate


def make_features(n: int, seed: int = 2, start: int = 0) -> Any:
    """A ``pyarrow.Table`` of per-cell features for rows ``start .. start + n - 1``.

    Columns: ``plate`` (string), ``well`` (string, 384 wells, cells grouped by
    well), ``cell_id`` (int64), ``area`` (float32, ~log-normal around 300 px),
    ``mean_dna`` / ``mean_rna`` / ``mean_agp`` (float32), ``eccentricity``
    (float32).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed + start)
    ids = np.arange(start, start + n, dtype=np.int64)
    per_well = 1_000
    well_idx = (ids // per_well) % len(WELLS)
    plate_idx = ids // (per_well * len(WELLS))
    wells = pa.array(WELLS).take(pa.array(well_idx))
    plates = pc.binary_join_element_wise(pa.scalar("plate-"), pc.cast(pa.array(plate_idx), pa.string()), "")
    return pa.table(
        {
            "plate": plates,
            "well": wells,
            "cell_id": ids,
            "area": rng.lognormal(np.log(300.0), 0.4, n).astype(np.float32),
            "mean_dna": rng.normal(90.0, 20.0, n).astype(np.float32),
            "mean_rna": rng.normal(60.0, 15.0, n).astype(np.float32),
            "mean_agp": rng.normal(40.0, 10.0, n).astype(np.float32),
            "eccentricity": rng.uniform(0.0, 0.95, n).astype(np.float32),
        }
    )


def zstd_chunk_frames(path: str, column: str) -> tuple[Any, Any, int, int, int] | None:
    """Every chunk payload of a record table as ``zstandard`` frames, for decode floors.

    Returns ``(frames, decompressed_sizes, n, compressed_bytes, raw_bytes)``:
    a ``zstandard.BufferWithSegments`` over one copy of the payload bytes and
    the ``uint64`` sizes they decode to, or ``None`` when the chunks are not
    all zstd frames (e.g. raw chunks in compressed Parquet pages).
    """
    import pyarrow.parquet as pq

    return _frames_of(pq.read_table(path, columns=[column])[column].combine_chunks())


def zstd_chunk_frame_blocks(
    path: str, column: str, max_raw_bytes: int = 512 << 20
) -> Iterator[tuple[Any, Any, int, int, int] | None]:
    """:func:`zstd_chunk_frames` row group by row group, in blocks of at most ``max_raw_bytes`` decoded.

    Memory stays bounded by one block (a 12 GB table does not have to fit in
    RAM twice to time its floor). Yields ``None`` once, and stops, when the
    chunks are not all zstd frames.
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    meta = pf.metadata
    col_idx = [i for i in range(meta.num_columns) if meta.schema.column(i).path.split(".")[0] == column]
    group: list[int] = []
    group_raw = 0
    for rg in range(meta.num_row_groups):
        rg_raw = sum(meta.row_group(rg).column(i).total_uncompressed_size for i in col_idx)
        if group and group_raw + rg_raw > max_raw_bytes:
            found = _frames_of(pf.read_row_groups(group, columns=[column])[column].combine_chunks())
            yield found
            if found is None:
                return
            group, group_raw = [], 0
        group.append(rg)
        group_raw += rg_raw
    if group:
        yield _frames_of(pf.read_row_groups(group, columns=[column])[column].combine_chunks())


def _frames_of(rec: Any) -> tuple[Any, Any, int, int, int] | None:
    import numpy as np
    import pyarrow as pa
    import zstandard

    chunks = rec.field("chunks").flatten()  # one entry per chunk, all records
    if set(chunks.field("compression").unique().to_pylist()) != {"zstd"}:
        return None
    payload = chunks.field("pixel_bytes")
    n = len(payload)
    width = 8 if pa.types.is_large_binary(payload.type) else 4
    offs = np.frombuffer(
        payload.buffers()[1], dtype=np.int64 if width == 8 else np.int32, count=n + 1, offset=payload.offset * width
    ).astype(np.uint64)
    data = np.frombuffer(payload.buffers()[2], dtype=np.uint8)[int(offs[0]) : int(offs[-1])].copy()
    seg = np.empty((n, 2), dtype=np.uint64)
    seg[:, 0] = offs[:-1] - offs[0]
    seg[:, 1] = offs[1:] - offs[:-1]
    itemsize = np.array([np.dtype(d).itemsize for d in chunks.field("dtype").to_pylist()], dtype=np.uint64)
    sizes = (
        chunks.field("shape_z").to_numpy().astype(np.uint64)
        * chunks.field("shape_y").to_numpy().astype(np.uint64)
        * chunks.field("shape_x").to_numpy().astype(np.uint64)
        * itemsize
    )
    return zstandard.BufferWithSegments(data, seg.tobytes()), sizes, n, int(data.size), int(sizes.sum())
