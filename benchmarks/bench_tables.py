"""Tables of many small images: omeframe vs Lance vs zarr v3 vs ome-arrow, side by side.

Realistic synthetic cells (:func:`_common.make_cell_stack`: cell body, nucleus,
spots, Gaussian noise; uint8, 3 channels) beside per-cell features
(:func:`_common.make_features`: plate, well, cell id, area, intensities), at
10^4 and 10^5 crops of 3x16x16 and 3x64x64 and 10^6 crops of 3x16x16
(``--full`` adds 10^6 x 3x64x64, 12 GB raw, written in streaming batches).

Systems (zstd level 3 wherever a codec is chosen):

* ``omeframe parquet`` / ``omeframe vortex``: ``omeframe.write_table(path,
  stack, dim_order="CYX", columns=features)`` (an iterator of ``(stack,
  features)`` batches when streaming);
* ``omeframe vortex-zstd``: the same with ``compression="zstd"`` (Vortex's
  compact encodings, which add zstd: an opt-in, shown without targets);
* ``lance zstd``: pylance, pixels in a ``binary`` column with field metadata
  ``lance-encoding:compression=zstd`` (Lance leaves a ``fixed_size_list<uint8>``
  column uncompressed whatever the metadata says), features beside them;
* ``lance raw``: pixels as ``fixed_size_list<uint8>[3*Y*X]``, no compression;
* ``zarr v3``: one ``(N, 3, Y, X)`` array, 256 crops per chunk, zstd; the
  features in a Parquet file beside it;
* ``ome-arrow bytes``: ome-arrow 0.1.0, one record per crop (``from_numpy``,
  byte chunks, zstd), features beside them in one Parquet file; at most
  10,000 crops (its writer is per record), so its numbers are for that subset.

Measured per system (one fresh interpreter per system and size, files on a
warm page cache): write (s, MB/s of raw pixels), size, full decode to one
``(N, 3, Y, X)`` array, a random batch of 256 rows decoded to numpy (each
repeat a different batch, the same batches for every system), a fresh
process that imports, opens and decodes its first random batch (wall time of
the whole subprocess; once every system has written its files, the systems
take turns, one fresh process each per round, when the disk holds all their
files at once), a metadata query in DuckDB (``count(*) GROUP BY well
WHERE area > 300``, each format's natural way), a DuckDB ``ome_stats`` pass
(omeframe only; on a subset when the table is large), and one torch
``DataLoader`` epoch with 2 workers, batches of 256 (samples/s, the best of 3
epochs). Times are the best of 5 runs (fewer for slow cases, 1 with ``--quick``;
15 for configurations under ``SMALL_RAW_BYTES`` of raw pixels, whose writes and
decodes take about 0.1 s, where the machine's noise is largest); random batches,
from 0.1 to a few milliseconds each, the best of 20 plus up to ``TAKE_MORE``
more within ``TAKE_MORE_SECONDS`` (the same rule for every system).
An omeframe Vortex table whose decoded images fit in half of omeframe's cache
(10^5 crops 3x16x16 do, 10^6 do not) keeps the blocks its takes decode, so its
best random batch is a copy from memory (the take that decodes the table, a
process's second, costs about 0.3 s at 10^5 crops and is not the best).

The decode floor is computed with ``zstandard`` (the library omeframe decodes
with): one ``multi_decompress_to_buffer`` call over exactly the chunk payloads
of omeframe's Parquet file, in 1 thread and in 2.

Usage::

    python benchmarks/bench_tables.py --quick   # smoke run, about a minute
    python benchmarks/bench_tables.py           # 10^4, 10^5, 10^6 crops
    python benchmarks/bench_tables.py --full    # adds 10^6 x 3x64x64 (12 GB raw)

Prints one table per size, ratio tables, the issue's targets (PASS/FAIL,
reported, not asserted) and the cost-per-record exponents, and writes them to
``bench-output/bench_tables.md`` (``bench_tables-quick.md`` for ``--quick``).
Exits non-zero when a case fails or a system reads back different pixels.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    OUT_DIR,
    CaseContext,
    CaseError,
    Timing,
    best_of,
    case_main,
    dir_size,
    fmt_ratio,
    fmt_seconds,
    machine_summary,
    make_cell_stack,
    make_features,
    markdown_table,
    preload_pyarrow,
    run_case,
    zstd_chunk_frame_blocks,
)

SCRIPT = Path(__file__).resolve()
COLUMN = "ome_arrow"
IMAGE = "image"  # pixel column of the Lance tables
ZSTD_LEVEL = 3
ZARR_CROPS_PER_CHUNK = 256
BATCH = 256  # random-batch and DataLoader batch size
TAKE_MORE = 180  # after 20 random batches, up to this many more ...
TAKE_MORE_SECONDS = 0.5  # ... while they take less than this in all
LOADER_EPOCHS = 3  # best of this many DataLoader epochs (one with --quick)
SMALL_RAW_BYTES = 20e6  # configurations below this many raw pixel bytes (10^4 crops 3x16x16) ...
SMALL_REPEATS = 15  # ... take the best of this many writes and decodes
AREA_CUT = 300.0
QUERY = "SELECT well, count(*) AS n FROM cells WHERE area > {cut} GROUP BY well ORDER BY well"
STATS_QUERY = "SELECT well, avg((ome_stats({col}, 0)).mean) AS m FROM {src} GROUP BY well"
STREAM_BATCH = 100_000  # rows per batch of a streamed write / windowed scan
OA_MAX_ROWS = 10_000  # ome-arrow writes one record at a time: a subset at most this large
STATS_MAX_ROWS = 20_000  # the ome_stats pass runs over at most this many rows

#: Use ``omeframe.torch.ImageTableDataset`` for the omeframe DataLoader when it
#: can be imported (``--loader auto``); ``--loader minimal`` forces the small
#: map-style dataset below (one ``ImageTable.to_numpy(rows)`` per batch).
LOADER_CHOICES = ("auto", "omeframe.torch", "minimal")

SYSTEMS = (
    "omeframe parquet", "omeframe parquet-pages", "omeframe vortex", "omeframe vortex-zstd", "lance zstd",
    "lance raw", "zarr v3", "ome-arrow bytes",
)
#: "parquet": one zstd frame per chunk (the default); "parquet-pages": raw
#: chunks in zstd-compressed Parquet pages (``chunk_compression=None``).
#: "vortex-zstd" (``compression="zstd"``: Vortex's compact encodings) is an
#: opt-in variant shown beside them: no targets, no shuffled epoch (a
#: random take of it decompresses whole blocks; see docs/concepts/layouts.md).
OMEFRAME = ("omeframe parquet", "omeframe parquet-pages", "omeframe vortex")


@dataclass(frozen=True)
class Config:
    n: int
    size: int
    stream: bool = False  # written from an iterator of batches, scanned in windows

    @property
    def label(self) -> str:
        return f"{self.n:,} x 3x{self.size}x{self.size}"

    @property
    def raw_bytes(self) -> int:
        return self.n * 3 * self.size * self.size


FULL_CONFIGS = (
    Config(10_000, 16), Config(10_000, 64), Config(100_000, 16), Config(100_000, 64), Config(1_000_000, 16),
)  # fmt: skip
HUGE = Config(1_000_000, 64, stream=True)
QUICK_CONFIGS = (Config(2_000, 16), Config(8_000, 16), Config(2_000, 64))


# =============================================================== data (both sides)
def stream_rows(bank: Any, lo: int, hi: int, step: int = STREAM_BATCH) -> Any:
    """Rows ``lo .. hi-1`` of a streamed table: cells drawn from ``bank``.

    Batch ``k`` (rows ``k * step ..``) draws its cells with seed ``k``
    and is mirrored in X when ``k`` is odd, so any row range can be
    regenerated to check what a reader returns. A cell repeats only about
    ``len(bank)`` rows later, far beyond any codec window.
    """
    import numpy as np

    parts = []
    for b0 in range(lo - lo % step, hi, step):
        k = b0 // step
        idx = np.random.default_rng(k).integers(0, len(bank), step)[max(lo, b0) - b0 : min(hi, b0 + step) - b0]
        part = bank[idx]
        parts.append(part[..., ::-1] if k % 2 else part)
    return np.ascontiguousarray(np.concatenate(parts)) if len(parts) > 1 else np.ascontiguousarray(parts[0])


class Source:
    """The cells and features of one configuration, whole or batch by batch."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        import numpy as np
        import pyarrow.parquet as pq

        self.n = int(params["n"])
        self.size = int(params["size"])
        self.stream = bool(params["stream"])
        self.step = int(params.get("stream_batch", STREAM_BATCH))
        self.features = pq.read_table(params["features"])
        self._cells = None if self.stream else np.load(params["cells"])
        self._bank = np.load(params["cells"]) if self.stream else None

    def cells(self) -> Any:
        if self._cells is None:
            raise RuntimeError("a streamed source has no whole array; iterate batches()")
        return self._cells

    def rows(self, lo: int, hi: int) -> Any:
        return self._cells[lo:hi] if self._cells is not None else stream_rows(self._bank, lo, hi, self.step)

    def batches(self, limit: int | None = None) -> Iterator[tuple[int, Any, Any]]:
        n = self.n if limit is None else min(limit, self.n)
        step = n if not self.stream else self.step
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            yield lo, self.rows(lo, hi), self.features.slice(lo, hi - lo)


def take_rows(n: int, k: int) -> Any:
    """The ``k``-th random batch: ``BATCH`` distinct rows of ``0..n-1`` (same for every system)."""
    import numpy as np

    return np.random.default_rng(1_000 + k).choice(n, size=min(BATCH, n), replace=False)


# =============================================================== systems (child side)
def _fsl_to_numpy(col: Any, size: int) -> Any:
    import numpy as np

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    vals = arr.values.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(vals).reshape(len(arr), 3, size, size)


def _binary_to_numpy(col: Any, size: int) -> Any:
    """A ``binary`` column of same-size payloads -> one array, without Python per row."""
    import numpy as np

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    n = len(arr)
    if n == 0:
        return np.empty((0, 3, size, size), np.uint8)
    offs = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    return data[offs[0] : offs[-1]].reshape(n, 3, size, size).copy()


def lance_to_tensor(batch: Any, **_: Any) -> Any:
    """``to_tensor_fn`` for ``lance.torch.data.LanceDataset``: the pixel column as ``(n, 3, Y, X)``."""
    import torch

    col = batch[IMAGE]
    size = int(math.isqrt(col.type.list_size // 3)) if hasattr(col.type, "list_size") else None
    if size is not None:
        return torch.from_numpy(_fsl_to_numpy(col, size))
    first = len(col[0].as_buffer()) if len(col) else 3
    return torch.from_numpy(_binary_to_numpy(col, int(math.isqrt(first // 3))))


class LanceShards:
    """Lance's own ``LanceDataset``, created inside each DataLoader worker.

    Worker ``i`` of ``k`` reads batches ``i, i+k, ...``. Lance's runtime does
    not survive a fork once used, so nothing Lance is opened before the
    workers start (the loader epochs run in a process of their own for the
    same reason).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self) -> Iterator[Any]:
        import torch
        from lance.torch.data import LanceDataset

        info = torch.utils.data.get_worker_info()
        rank, world = (0, 1) if info is None else (info.id, info.num_workers)
        ds = LanceDataset(
            self.path, batch_size=BATCH, columns=[IMAGE], to_tensor_fn=lance_to_tensor,
            shard_granularity="batch", rank=rank, world_size=world,
        )  # fmt: skip
        yield from ds


class RowBatches:
    """Minimal map-style torch dataset: one ``ImageTable.to_numpy(rows)`` per batch of row indices.

    Used with a ``BatchSampler`` as the sampler and ``batch_size=None``, so
    ``__getitem__`` receives a whole list of rows. The ``ImageTable`` pickles
    as its path and reopens in each worker.
    """

    def __init__(self, path: str) -> None:
        import omeframe

        self.table = omeframe.open_table(path)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, rows: list[int]) -> Any:
        import torch

        return torch.from_numpy(self.table.to_numpy(rows))


class System:
    """One storage system: how it writes, decodes, takes, queries and loads."""

    name = ""
    suffix = ""

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size

    def remove(self) -> None:
        if os.path.isdir(self.path):
            shutil.rmtree(self.path)
        elif os.path.exists(self.path):
            os.remove(self.path)
        side = self.path + ".features.parquet"
        if os.path.exists(side):
            os.remove(side)

    def size_bytes(self) -> int:
        side = self.path + ".features.parquet"
        return dir_size(self.path) + (dir_size(side) if os.path.exists(side) else 0)

    # overridden below
    def write(self, src: Source, limit: int | None) -> None:
        raise NotImplementedError

    def open(self) -> Any:
        raise NotImplementedError

    def take(self, handle: Any, rows: Any) -> Any:
        raise NotImplementedError

    def decode_window(self, handle: Any, lo: int, hi: int) -> Any:
        return self.take(handle, list(range(lo, hi)))

    def decode_all(self, handle: Any) -> Any:
        raise NotImplementedError

    def query(self, con: Any) -> Any:
        raise NotImplementedError


class OmeframeSystem(System):
    def __init__(self, path: str, size: int, fmt: str) -> None:
        super().__init__(path, size)
        self.fmt = {"parquet-pages": "parquet", "vortex-zstd": "vortex"}.get(fmt, fmt)
        self.options: dict[str, Any] = {
            "parquet-pages": {"chunk_compression": None}, "vortex-zstd": {"compression": "zstd"},
        }.get(fmt, {})

    def write(self, src: Source, limit: int | None) -> None:
        import omeframe

        if src.stream:
            batches = ((cells, feats) for _, cells, feats in src.batches(limit))
            omeframe.write_table(
                self.path, batches, dim_order="CYX", format=self.fmt, progress=False, **self.options
            )
        else:
            omeframe.write_table(
                self.path, src.cells(), dim_order="CYX", columns=src.features, format=self.fmt, progress=False,
                **self.options,
            )

    def open(self) -> Any:
        import omeframe

        return omeframe.open_table(self.path)

    def take(self, handle: Any, rows: Any) -> Any:
        return handle.to_numpy(rows)

    def decode_window(self, handle: Any, lo: int, hi: int) -> Any:
        import numpy as np

        return handle.to_numpy(np.arange(lo, hi))

    def decode_all(self, handle: Any) -> Any:
        return handle.to_numpy()

    def query(self, con: Any) -> Any:
        import omeframe.duckdb

        omeframe.duckdb.register(con, "cells", self.path)
        return con.sql(QUERY.format(cut=AREA_CUT)).fetchall()


class LanceSystem(System):
    def __init__(self, path: str, size: int, compressed: bool) -> None:
        super().__init__(path, size)
        self.compressed = compressed

    def _schema(self, feats: Any) -> Any:
        import pyarrow as pa

        if self.compressed:
            meta = {"lance-encoding:compression": "zstd", "lance-encoding:compression-level": str(ZSTD_LEVEL)}
            img = pa.field(IMAGE, pa.binary(), metadata=meta)
        else:
            img = pa.field(IMAGE, pa.list_(pa.uint8(), 3 * self.size * self.size))
        return pa.schema([img, *feats.schema])

    def _batch(self, schema: Any, cells: Any, feats: Any) -> Any:
        import numpy as np
        import pyarrow as pa

        n = len(cells)
        flat = pa.array(np.ascontiguousarray(cells).reshape(-1))
        if self.compressed:
            per = 3 * self.size * self.size
            offs = pa.array(np.arange(0, (n + 1) * per, per, dtype=np.int32))
            img = pa.Array.from_buffers(pa.binary(), n, [None, offs.buffers()[1], flat.buffers()[1]])
        else:
            img = pa.FixedSizeListArray.from_arrays(flat, 3 * self.size * self.size)
        return pa.RecordBatch.from_arrays([img, *(c.combine_chunks() for c in feats.columns)], schema=schema)

    def write(self, src: Source, limit: int | None) -> None:
        import lance
        import pyarrow as pa

        schema = self._schema(src.features)
        batches = (self._batch(schema, cells, feats) for _, cells, feats in src.batches(limit))
        lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches), self.path, mode="overwrite")

    def open(self) -> Any:
        import lance

        return lance.dataset(self.path)

    def _decode(self, col: Any) -> Any:
        return _binary_to_numpy(col, self.size) if self.compressed else _fsl_to_numpy(col, self.size)

    def take(self, handle: Any, rows: Any) -> Any:
        return self._decode(handle.take(rows, columns=[IMAGE])[IMAGE])

    def decode_window(self, handle: Any, lo: int, hi: int) -> Any:
        import numpy as np

        return self.take(handle, np.arange(lo, hi))

    def decode_all(self, handle: Any) -> Any:
        return self._decode(handle.to_table(columns=[IMAGE])[IMAGE])

    def query(self, con: Any) -> Any:
        import lance

        cells = lance.dataset(self.path)  # noqa: F841 - DuckDB scans the Python variable `cells`
        return con.sql(QUERY.format(cut=AREA_CUT)).fetchall()


class ZarrSystem(System):
    def write(self, src: Source, limit: int | None) -> None:
        import pyarrow.parquet as pq
        import zarr
        import zarr.codecs

        n = src.n if limit is None else min(limit, src.n)
        z = zarr.create_array(
            store=self.path,
            shape=(n, 3, self.size, self.size),
            dtype="uint8",
            chunks=(ZARR_CROPS_PER_CHUNK, 3, self.size, self.size),
            compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL),
            zarr_format=3,
            overwrite=True,
        )
        for lo, cells, _ in src.batches(limit):
            z[lo : lo + len(cells)] = cells
        pq.write_table(src.features.slice(0, n), self.path + ".features.parquet", compression="zstd")

    def open(self) -> Any:
        import zarr

        return zarr.open_array(self.path, mode="r")

    def take(self, handle: Any, rows: Any) -> Any:
        return handle.oindex[rows]

    def decode_window(self, handle: Any, lo: int, hi: int) -> Any:
        return handle[lo:hi]

    def decode_all(self, handle: Any) -> Any:
        return handle[...]

    def query(self, con: Any) -> Any:
        con.sql(f"CREATE OR REPLACE VIEW cells AS SELECT * FROM read_parquet('{self.path}.features.parquet')")
        return con.sql(QUERY.format(cut=AREA_CUT)).fetchall()


class OmeArrowSystem(System):
    def write(self, src: Source, limit: int | None) -> None:
        import ome_arrow
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = {
            b"ome.arrow.type": str(ome_arrow.OME_ARROW_TAG_TYPE).encode(),
            b"ome.arrow.version": str(ome_arrow.OME_ARROW_TAG_VERSION).encode(),
        }
        writer = None
        try:
            for _, cells, feats in src.batches(limit):
                recs = [
                    ome_arrow.from_numpy(
                        c, dim_order="CYX", clamp_to_uint16=False, chunk_shape=(1, self.size, self.size),
                        chunk_encoding="bytes", chunk_compression="zstd", chunk_compression_level=ZSTD_LEVEL,
                    )
                    for c in cells
                ]  # fmt: skip
                col = pa.concat_arrays([pa.repeat(r, 1) for r in recs])
                table = pa.Table.from_arrays([col, *feats.columns], names=[COLUMN, *feats.column_names])
                if writer is None:
                    writer = pq.ParquetWriter(self.path, table.schema.with_metadata(meta), compression="none")
                writer.write_table(table.replace_schema_metadata(meta))
        finally:
            if writer is not None:
                writer.close()

    def open(self) -> Any:
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path)

    @staticmethod
    def _stack(col: Any) -> Any:
        import numpy as np
        import ome_arrow

        arrs = [ome_arrow.to_numpy(ch[i], dtype=np.uint8) for ch in col.chunks for i in range(len(ch))]
        return np.stack(arrs)[:, 0, :, 0]  # TCZYX -> CYX

    def take(self, handle: Any, rows: Any) -> Any:
        import pyarrow.parquet as pq

        return self._stack(pq.read_table(self.path, columns=[COLUMN]).take(rows)[COLUMN])

    def decode_all(self, handle: Any) -> Any:
        import pyarrow.parquet as pq

        return self._stack(pq.read_table(self.path, columns=[COLUMN])[COLUMN])

    def query(self, con: Any) -> Any:
        con.sql(f"CREATE OR REPLACE VIEW cells AS SELECT * FROM read_parquet('{self.path}')")
        return con.sql(QUERY.format(cut=AREA_CUT)).fetchall()


def make_system(name: str, path: str, size: int) -> System:
    if name.startswith("omeframe"):
        return OmeframeSystem(path, size, name.split()[-1])
    if name.startswith("lance"):
        return LanceSystem(path, size, name.endswith("zstd"))
    if name.startswith("zarr"):
        return ZarrSystem(path, size)
    if name.startswith("ome-arrow"):
        return OmeArrowSystem(path, size)
    raise ValueError(f"unknown system {name!r}; expected one of {SYSTEMS}")


def store_path(workdir: Path, cfg: Config, system: str) -> str:
    slug = system.replace(" ", "_").replace("-", "")
    suffix = {
        "omeframe parquet": ".parquet", "omeframe parquet-pages": ".parquet", "omeframe vortex": ".vortex",
        "omeframe vortex-zstd": ".vortex",
        "ome-arrow bytes": ".parquet",
    }
    ext = suffix.get(system, ".lance" if system.startswith("lance") else ".zarr")
    return str(workdir / f"cells_{cfg.n}_{cfg.size}_{slug}{ext}")


# =============================================================== the child case
def _loader_epoch(system: System, params: Mapping[str, Any], n: int, shuffle: bool) -> dict[str, Any]:
    """One DataLoader epoch with 2 workers: seconds, samples seen, which dataset."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

    if isinstance(system, LanceSystem):
        from torch.utils.data import IterableDataset

        class _Iterable(LanceShards, IterableDataset):  # type: ignore[misc]
            pass

        loader = DataLoader(_Iterable(system.path), batch_size=None, num_workers=2)
        kind = "lance.torch.data.LanceDataset (sharded by batch over the workers)"
    else:
        sampler_cls = RandomSampler if shuffle else SequentialSampler
        choice = params["loader"]
        dataset: Any = None
        if choice in ("auto", "omeframe.torch"):
            try:
                from omeframe.torch import ImageTableDataset, collate

                dataset = ImageTableDataset(system.path)
                kind = "omeframe.torch.ImageTableDataset"
            except ImportError:
                if choice == "omeframe.torch":
                    raise
        if dataset is not None:
            loader = DataLoader(dataset, batch_size=BATCH, shuffle=shuffle, num_workers=2, collate_fn=collate)
        else:
            dataset = RowBatches(system.path)
            kind = "minimal map-style dataset: ImageTable.to_numpy(rows) per batch"
            sampler = BatchSampler(sampler_cls(range(n)), BATCH, drop_last=False)
            loader = DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=2)
    seen = 0
    t0 = time.perf_counter()
    for batch in loader:
        if isinstance(batch, dict):  # omeframe.torch samples: {"image": ..., "row": ...}
            batch = batch["image"]
        assert isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8
        seen += int(batch.shape[0])
    dt = time.perf_counter() - t0
    if seen != n:
        raise RuntimeError(f"{system.name} DataLoader epoch saw {seen} samples, expected {n}")
    return {"seconds": dt, "samples_per_s": n / dt, "dataset": kind + (" (shuffled)" if shuffle else "")}


def _stats_pass(system: System, n: int) -> dict[str, Any]:
    import omeframe.duckdb

    con = omeframe.duckdb.connect()
    omeframe.duckdb.register(con, "cells", system.path)
    rows = min(n, STATS_MAX_ROWS)
    src = "cells" if rows == n else f"(SELECT * FROM cells LIMIT {rows})"
    q = STATS_QUERY.format(col=COLUMN, src=src)
    timing, res = best_of(lambda: con.sql(q).fetchall(), 1)
    if not res:
        raise RuntimeError("ome_stats pass returned no rows")
    return {"timing": timing.as_dict(), "rows": rows}


def run_system(ctx: CaseContext) -> dict[str, Any]:
    """Child side: every measurement of one system at one configuration."""
    import duckdb
    import numpy as np

    p = ctx.params
    preload_pyarrow()
    src = Source(p)
    ctx.mark_baseline()
    name = p["system"]
    system = make_system(name, p["path"], src.size)
    system.name = name
    reps, fast = int(p["repeats"]), int(p["fast_repeats"])
    limit = OA_MAX_ROWS if name.startswith("ome-arrow") and src.n > OA_MAX_ROWS else None
    n = src.n if limit is None else limit
    out: dict[str, Any] = {"system": name, "rows": n, "subset": limit is not None}

    timing, _ = best_of(lambda: system.write(src, limit), reps, budget_s=float(p["budget"]), setup=system.remove)
    out["write"] = timing.as_dict()
    out["size"] = system.size_bytes()

    handle = system.open()
    if src.stream:  # scan in windows: the whole table does not fit in memory next to its source

        def scan() -> bool:
            ok = True
            for lo in range(0, n, src.step):
                hi = min(n, lo + src.step)
                ok &= bool(np.array_equal(system.decode_window(handle, lo, hi), src.rows(lo, hi)))
            return ok

        timing, ok = best_of(scan, reps, budget_s=float(p["budget"]))
        out["decode"] = timing.as_dict()
        out["decode_ok"] = ok
    else:
        expected = src.cells()[:n]
        timing, arr = best_of(lambda: system.decode_all(handle), reps, budget_s=float(p["budget"]))
        out["decode"] = timing.as_dict()
        out["decode_ok"] = bool(arr.shape == expected.shape and np.array_equal(arr, expected))
        del arr
        if name == "omeframe parquet":
            import pyarrow.parquet as pq

            import omeframe

            def via_pyarrow() -> Any:
                return omeframe.to_numpy_stack(pq.read_table(system.path, columns=[COLUMN])[COLUMN])

            timing, arr = best_of(via_pyarrow, reps, budget_s=float(p["budget"]))
            out["decode_pq"] = timing.as_dict()
            out["decode_ok"] &= bool(np.array_equal(arr, expected))
            del arr

    counter = iter(range(1_000_000))
    last_rows: list[Any] = []

    def one_take() -> Any:
        last_rows[:] = [take_rows(n, next(counter))]
        return system.take(handle, last_rows[0])

    timing, got = best_of(one_take, int(p["take_repeats"]))
    if p["take_repeats"] > 1:  # then more batches within a fixed time, the same rule for every system:
        # a batch of well under 1 ms is at the machine's noise after 20 runs
        more, got = best_of(one_take, TAKE_MORE, budget_s=TAKE_MORE_SECONDS)
        timing = Timing(min(timing.best, more.best), timing.runs + more.runs, timing.cpu + more.cpu)
    out["take"] = timing.as_dict()
    rows = last_rows[0]
    want = np.stack([src.rows(int(r), int(r) + 1)[0] for r in rows[:8]])  # checked outside the timing
    out["take_ok"] = bool(got.shape == (len(rows), 3, src.size, src.size) and np.array_equal(got[:8], want))

    con = duckdb.connect()
    result: list[Any] = []

    def one_query() -> None:
        result[:] = system.query(con)

    timing, _ = best_of(one_query, fast)
    out["query"] = timing.as_dict()
    out["query_groups"] = len(result)

    if name in OMEFRAME and p["stats"]:
        out["stats"] = _stats_pass(system, n)
    return out


def run_loader(ctx: CaseContext) -> dict[str, Any]:
    """Child side: DataLoader epochs in a process that has not used Lance (or omeframe) before forking."""
    p = ctx.params
    name = p["system"]
    system = make_system(name, p["path"], int(p["size"]))
    system.name = name
    n = int(p["rows"])
    budget = float(p["budget"])
    epochs = min(LOADER_EPOCHS, int(p["repeats"]))

    def best_epoch(shuffle: bool) -> dict[str, Any]:
        """The fastest of up to LOADER_EPOCHS epochs (workers start anew each epoch), within the budget."""
        runs = [_loader_epoch(system, p, n, shuffle=shuffle)]
        while len(runs) < epochs and sum(r["seconds"] for r in runs) + runs[-1]["seconds"] <= budget:
            runs.append(_loader_epoch(system, p, n, shuffle=shuffle))
        best = min(runs, key=lambda r: r["seconds"])
        return {**best, "epochs": len(runs)}

    out = {"loader": best_epoch(False)}
    if name in OMEFRAME:
        out["loader_shuffled"] = best_epoch(True)
    return out


def run_floor(ctx: CaseContext) -> dict[str, Any]:
    """``zstandard`` decode of exactly the chunk payloads in omeframe's Parquet file, 1 and 2 threads.

    Timed block by block (at most 512 MB decoded each, so a 12 GB table fits
    in memory): each block's best of ``repeats``, summed over the blocks.
    """
    import zstandard

    preload_pyarrow()
    ctx.mark_baseline()
    dctx = zstandard.ZstdDecompressor()
    out: dict[str, Any] = {"chunks": 0, "compressed": 0, "raw": 0}
    best = {"one_thread": 0.0, "two_threads": 0.0}
    for found in zstd_chunk_frame_blocks(ctx.params["path"], COLUMN):
        if found is None:  # raw chunks in compressed pages: there are no per-chunk frames to time
            return {"chunks": 0}
        frames, sizes_arr, n, compressed, raw = found
        sizes = sizes_arr.tobytes()
        out["chunks"] += n
        out["compressed"] += compressed
        out["raw"] += raw
        for threads, key in ((0, "one_thread"), (2, "two_threads")):
            decode = partial(dctx.multi_decompress_to_buffer, frames, decompressed_sizes=sizes, threads=threads)
            timing, _ = best_of(decode, int(ctx.params["repeats"]))
            best[key] += float(timing.best)
    for key, seconds in best.items():
        out[key] = {"best": seconds}
    return out


CASES: dict[str, Callable[[CaseContext], Mapping[str, Any]]] = {
    "system": run_system,
    "floor": run_floor,
    "loader": run_loader,
}


# =============================================================== fresh process (parent side)
FRESH = {
    "omeframe": (
        "import sys, json, omeframe\n"
        "rows = json.load(open(sys.argv[2]))\n"
        "a = omeframe.open_table(sys.argv[1]).to_numpy(rows)\n"
    ),
    "lance": (
        "import sys, json, lance, numpy as np\n"
        "rows = json.load(open(sys.argv[2]))\n"
        "col = lance.dataset(sys.argv[1]).take(rows, columns=['image'])['image'].combine_chunks()\n"
        "if hasattr(col.type, 'list_size'):\n"
        "    a = col.values.to_numpy()\n"
        "else:\n"
        "    o = np.frombuffer(col.buffers()[1], np.int32, len(col) + 1, col.offset * 4)\n"
        "    a = np.frombuffer(col.buffers()[2], np.uint8)[o[0]:o[-1]].copy()\n"
    ),
    "zarr": (
        "import sys, json, zarr\n"
        "rows = json.load(open(sys.argv[2]))\n"
        "a = zarr.open_array(sys.argv[1], mode='r').oindex[rows]\n"
    ),
    "ome-arrow": (
        "import sys, json, numpy as np, ome_arrow, pyarrow.parquet as pq\n"
        "rows = json.load(open(sys.argv[2]))\n"
        "col = pq.read_table(sys.argv[1], columns=['ome_arrow']).take(rows)['ome_arrow']\n"
        "a = np.stack([ome_arrow.to_numpy(c, dtype=np.uint8) for c in col])\n"
    ),
}


def _fresh_once(system: str, path: str, n: int, workdir: Path) -> float:
    """Wall time of one new interpreter that imports, opens and decodes one random batch (the same rows for every
    system of ``n`` rows)."""
    rows_file = workdir / f"fresh_rows_{n}.json"
    if not rows_file.exists():
        rows_file.write_text(json.dumps([int(r) for r in take_rows(n, 999)]))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", FRESH[system.split()[0]], path, str(rows_file)], capture_output=True, text=True
    )
    took = time.perf_counter() - t0
    if proc.returncode:
        raise CaseError(f"fresh open of {system} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return took


def fresh_round_robin(tables: list[tuple[str, str, int]], repeats: int, workdir: Path) -> dict[str, Any]:
    """Best wall time of ``repeats`` new interpreters per ``(system, path, rows)`` in ``tables``, taking turns.

    One process of each system per round (the order reversed every other
    round), so a slower or busier minute of the machine weighs on all of them
    alike rather than on the system whose turn it was. Per system:
    ``{"best": ..., "runs": [...]}``, or the :class:`CaseError` of its first
    failed run (it runs no more).
    """
    out: dict[str, Any] = {s: {"runs": []} for s, _, _ in tables}
    for k in range(repeats):
        for system, path, n in tables if k % 2 == 0 else tables[::-1]:
            if isinstance(out[system], CaseError):
                continue
            try:
                out[system]["runs"].append(_fresh_once(system, path, n, workdir))
            except CaseError as exc:
                out[system] = exc
    for r in out.values():
        if isinstance(r, dict):
            r["best"] = min(r["runs"])
    return out


def _record_fresh(res: Result, tables: list[tuple[str, str, int]], repeats: int, workdir: Path, how: str) -> None:
    """Measure the fresh opens of ``tables`` (:func:`fresh_round_robin`) into ``res``, logging each."""
    for system, fresh in fresh_round_robin(tables, repeats, workdir).items():
        if isinstance(fresh, CaseError):
            res.problems.append(f"{res.cfg.label} {system}: {fresh}")
            _log(f"[{res.cfg.label}] {system} fresh open FAILED: {fresh}")
        else:
            res.rows[system]["fresh"] = fresh
            _log(f"[{res.cfg.label}] {system:<16} fresh {fmt_seconds(fresh['best'])}{how}")


# =============================================================== orchestration
@dataclass
class Result:
    cfg: Config
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    floor: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    def t(self, system: str, key: str) -> float | None:
        r = self.rows.get(system)
        if r is None or key not in r:
            return None
        v = r[key]
        return float(v["timing"]["best"] if "timing" in v else v["best"]) if isinstance(v, dict) else None

    def size(self, system: str) -> int | None:
        r = self.rows.get(system)
        return None if r is None else int(r["size"])

    def throughput(self, system: str) -> float | None:
        """Raw pixel MB/s written."""
        r, t = self.rows.get(system), self.t(system, "write")
        return None if r is None or not t else r["rows"] * 3 * self.cfg.size**2 / t / 1e6

    def loader(self, system: str, key: str = "loader") -> float | None:
        r = self.rows.get(system)
        return None if r is None or key not in r else float(r[key]["samples_per_s"])


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _prepare(cfg: Config, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    cells = workdir / f"cells_{cfg.n}_{cfg.size}.npy"
    feats = workdir / f"features_{cfg.n}.parquet"
    bank_n = min(cfg.n, 100_000, max(args.stream_batch, 1_000)) if cfg.stream else cfg.n
    np.save(cells, make_cell_stack(bank_n, cfg.size, seed=cfg.size))
    pq.write_table(make_features(cfg.n), feats)
    _log(f"[{cfg.label}] data generated in {time.perf_counter() - t0:.1f} s")
    return {"cells": str(cells), "features": str(feats), "n": cfg.n, "size": cfg.size, "stream": cfg.stream}


def _room_for_all(cfg: Config, systems: tuple[str, ...], workdir: Path) -> bool:
    """Whether every system's files of ``cfg`` fit on the disk at once (raw size each, with half the disk spare)."""
    return cfg.raw_bytes * len(systems) * 2 < shutil.disk_usage(workdir).free


def run_config(cfg: Config, workdir: Path, args: argparse.Namespace, systems: tuple[str, ...]) -> Result:
    base = _prepare(cfg, workdir, args)
    res = Result(cfg)
    slow = cfg.raw_bytes > 200e6
    base.update(
        # write and decode: fewer once a run would pass the budget, more for runs of ~0.1 s
        repeats=1 if args.quick else SMALL_REPEATS if cfg.raw_bytes < SMALL_RAW_BYTES else 5,
        fast_repeats=1 if args.quick else 5,
        take_repeats=1 if args.quick else 20,  # a few ms each: more batches, less noise
        budget=60.0 if not args.quick else 5.0,
        loader=args.loader,
        loader_epoch=not args.no_loader,
        stats=True,
        stream_batch=args.stream_batch,
    )
    if slow:
        base["budget"] = 120.0
    fresh_repeats = 1 if args.quick else 5
    # every system's files kept until all are written, when the disk has room: fresh opens then take turns
    together = _room_for_all(cfg, systems, workdir)
    kept: list[tuple[str, str, int]] = []
    for system in systems:
        path = store_path(workdir, cfg, system)
        t0 = time.perf_counter()
        try:
            r = run_case(SCRIPT, "system", dict(base, system=system, path=path), timeout=args.timeout)
            res.rows[system] = r
            fresh_n = r["rows"]
            if together:
                kept.append((system, path, fresh_n))
            else:
                _record_fresh(res, [(system, path, fresh_n)], fresh_repeats, workdir, "")
            if base["loader_epoch"] and (system in OMEFRAME or system.startswith("lance")):
                lp = dict(base, system=system, path=path, rows=fresh_n)
                r.update(run_case(SCRIPT, "loader", lp, timeout=args.timeout))
            if not (r["decode_ok"] and r["take_ok"]):
                res.problems.append(f"{cfg.label} {system}: pixels read back differ from the source")
            if system == "omeframe parquet":
                res.floor = run_case(SCRIPT, "floor", {"path": path, "repeats": base["fast_repeats"]})
            _log(
                f"[{cfg.label}] {system:<16} write {fmt_seconds(res.t(system, 'write'))} "
                f"decode {fmt_seconds(res.t(system, 'decode'))} take {fmt_seconds(res.t(system, 'take'))} "
                f"query {fmt_seconds(res.t(system, 'query'))} ({time.perf_counter() - t0:.0f} s)"
            )
        except CaseError as exc:
            res.problems.append(f"{cfg.label} {system}: {exc}")
            _log(f"[{cfg.label}] {system} FAILED: {exc}")
        finally:
            if not args.keep and not (kept and kept[-1][0] == system):  # removed now unless kept for later
                make_system(system, path, cfg.size).remove()
    if kept:
        _record_fresh(res, kept, fresh_repeats, workdir, " (systems taking turns)")
        for system, path, _ in kept:
            if not args.keep:
                make_system(system, path, cfg.size).remove()
    for f in (base["cells"], base["features"]):
        if not args.keep:
            os.remove(f)
    return res


# =============================================================== report
def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def table_for(res: Result) -> str:
    systems = [s for s in SYSTEMS if s in res.rows]
    cfg = res.cfg

    def cell(fn: Callable[[str], str]) -> list[str]:
        return [fn(s) for s in systems]

    def sub(s: str) -> str:
        r = res.rows[s]
        return f" ({r['rows']:,} rows)" if r.get("subset") else ""

    def tm(key: str) -> Callable[[str], str]:
        return lambda s: fmt_seconds(res.t(s, key)) + (sub(s) if key in ("write", "decode") else "")

    def stats(s: str) -> str:
        st = res.rows[s].get("stats")
        if st is None:
            return "-"
        t = float(st["timing"]["best"])
        return f"{fmt_seconds(t)} ({st['rows']:,} rows, {st['rows'] / t:,.0f} rows/s)"

    def loader(key: str) -> Callable[[str], str]:
        return lambda s: "-" if res.loader(s, key) is None else f"{res.loader(s, key):,.0f}"

    body = [
        ["write"] + cell(tm("write")),
        ["write MB/s (raw pixels)"] + cell(lambda s: f"{res.throughput(s):.0f}" if res.throughput(s) else "-"),
        ["size (pixels + features)"] + cell(lambda s: _mb(res.size(s)) + sub(s)),
        ["decode all crops to one array" + (" (in windows)" if cfg.stream else "")] + cell(tm("decode")),
        ["  same, pq.read_table + to_numpy_stack"] + cell(tm("decode_pq")),
        [f"random batch of {BATCH} rows"] + cell(tm("take")),
        ["fresh process: import + open + first batch"] + cell(tm("fresh")),
        ["metadata query (DuckDB)"] + cell(tm("query")),
        ["DuckDB ome_stats pass"] + cell(stats),
        ["DataLoader epoch, 2 workers (samples/s)"] + cell(loader("loader")),
        ["  same, shuffled (samples/s)"] + cell(loader("loader_shuffled")),
    ]
    return markdown_table(["", *systems], body, "l" + "r" * len(systems))


def ratio_table(res: Result) -> str:
    """Every system's time (size) divided by Lance-zstd's and by zarr's: < 1 is better."""
    systems = [s for s in SYSTEMS if s in res.rows]
    metrics = [("write", "write"), ("decode", "decode"), ("random batch", "take"), ("fresh open", "fresh")]
    body = []
    for label, key in metrics:
        for ref in ("lance zstd", "zarr v3"):
            body.append([f"{label} / {ref}"] + [fmt_ratio(_ratio(res.t(s, key), res.t(ref, key))) for s in systems])
    for ref in ("lance zstd", "zarr v3"):
        body.append([f"size / {ref}"] + [fmt_ratio(_ratio(res.size(s), res.size(ref))) for s in systems])
    return markdown_table(["time or size ratio (< 1: better)", *systems], body, "l" + "r" * len(systems))


def floor_line(res: Result) -> str:
    f = res.floor
    if f is None or not f.get("chunks"):
        return ""
    one, two = float(f["one_thread"]["best"]), float(f["two_threads"]["best"])
    of = res.t("omeframe parquet", "decode")
    return (
        f"Decode floor (zstandard multi_decompress_to_buffer over omeframe's {f['chunks']:,} chunk payloads, "
        f"{f['compressed'] / 1e6:.1f} MB -> {f['raw'] / 1e6:.1f} MB): {fmt_seconds(one)} in 1 thread, "
        f"{fmt_seconds(two)} in 2; omeframe parquet full decode = {fmt_ratio(_ratio(of, one))} the 1-thread "
        f"floor, {fmt_ratio(_ratio(of, two))} the 2-thread floor."
    )


def target_lines(res: Result) -> list[str]:
    lines = []

    def check(label: str, value: float | None, op: str, limit: float) -> None:
        if value is None:
            lines.append(f"- n/a  {label}: not measured")
            return
        ok = value >= limit if op == ">=" else value <= limit
        lines.append(f"- {'PASS' if ok else 'FAIL'} {label}: {value:.2f} (target {op} {limit:g})")

    lz, zr = "lance zstd", "zarr v3"
    for s in OMEFRAME:
        if s not in res.rows:
            continue
        check(f"[{s}] write throughput / Lance-zstd's", _ratio(res.throughput(s), res.throughput(lz)), ">=", 1.0)
        check(f"[{s}] file size / Lance-zstd's", _ratio(res.size(s), res.size(lz)), "<=", 1.0)
        check(f"[{s}] full decode speed-up vs Lance-zstd", _ratio(res.t(lz, "decode"), res.t(s, "decode")), ">=", 1.2)
        check(f"[{s}] full decode speed-up vs zarr", _ratio(res.t(zr, "decode"), res.t(s, "decode")), ">=", 1.0)
        check(f"[{s}] random batch time / Lance-zstd's", _ratio(res.t(s, "take"), res.t(lz, "take")), "<=", 1.0)
        check(
            f"[{s}] fresh open + first batch / Lance-zstd's", _ratio(res.t(s, "fresh"), res.t(lz, "fresh")), "<=", 1.5
        )
        check(f"[{s}] DataLoader samples/s / Lance torch dataset's", _ratio(res.loader(s), res.loader(lz)), ">=", 1.0)
    return lines


def exponent_lines(results: list[Result]) -> list[str]:
    """Fit time ~ N^b per system and metric over the sizes of one crop shape (b = 1: flat cost per record)."""
    lines = []
    for size in sorted({r.cfg.size for r in results}):
        rs = sorted((r for r in results if r.cfg.size == size), key=lambda r: r.cfg.n)
        if len(rs) < 2:
            continue
        ns = ", ".join(f"{r.cfg.n:,}" for r in rs)
        lines.append(f"3x{size}x{size}, N = {ns}: exponent b of time ~ N^b (write/decode: 1 = flat cost per record; "
                     "random batch: 0 = flat per batch)")  # fmt: skip
        for s in SYSTEMS:
            parts = []
            for key, limit in (("write", 1.1), ("decode", 1.1), ("take", 0.15)):
                pts = [
                    (math.log(r.cfg.n), math.log(t)) for r in rs if (t := r.t(s, key)) and not r.rows[s].get("subset")
                ]
                if len(pts) < 2:
                    continue
                mx = sum(x for x, _ in pts) / len(pts)
                my = sum(y for _, y in pts) / len(pts)
                b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
                verdict = ("PASS" if b <= limit else "FAIL") if s in OMEFRAME else ""
                parts.append(f"{key} {b:.2f} {verdict}".rstrip())
            if parts:
                lines.append(f"- {s}: " + ", ".join(parts))
    return lines


def _versions() -> str:
    out = []
    for dist in ("omeframe", "pylance", "zarr", "ome-arrow", "vortex-data", "pyarrow", "zstandard", "duckdb", "torch"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} -")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run per case")
    ap.add_argument("--full", action="store_true", help="add 10^6 x 3x64x64 (12 GB raw, streamed)")
    ap.add_argument("--sizes", default="", help="only these configurations, e.g. 10000x16,100000x64[s] (s: streamed)")
    ap.add_argument("--systems", default="", help="comma-separated subset of: " + ", ".join(SYSTEMS))
    ap.add_argument("--loader", choices=LOADER_CHOICES, default="auto", help="omeframe DataLoader dataset")
    ap.add_argument("--no-loader", action="store_true", help="skip the DataLoader epochs")
    ap.add_argument("--keep", action="store_true", help="keep the written files")
    ap.add_argument("--stream-batch", type=int, default=STREAM_BATCH, help="rows per streamed batch / scan window")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per system and size")
    args = ap.parse_args(argv)
    if args.sizes:
        configs: tuple[Config, ...] = tuple(
            Config(int(a), int(b.rstrip("s")), stream=b.endswith("s"))
            for a, b in (c.split("x") for c in args.sizes.split(","))
        )
    else:
        configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS + ((HUGE,) if args.full else ())
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip()) or SYSTEMS
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        ap.error(f"unknown system(s) {bad}; choose from {', '.join(SYSTEMS)}")
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    scratch = os.environ.get("BENCH_TMP")  # where the tables go (a disk with room for them); made if missing
    if scratch:
        os.makedirs(scratch, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="omeframe-bench-tables-", dir=scratch))
    results: list[Result] = []
    sections: list[str] = []
    try:
        for cfg in configs:
            res = run_config(cfg, workdir, args, systems)
            results.append(res)
            lines = [f"### {cfg.label} uint8 ({cfg.raw_bytes / 1e6:,.0f} MB raw)", "", table_for(res), ""]
            lines += [ratio_table(res), ""]
            if res.floor is not None:
                lines += [floor_line(res), ""]
            lines += ["Targets:", *target_lines(res)]
            loaders = {r["loader"]["dataset"] for r in res.rows.values() if "loader" in r}
            if loaders:
                lines += ["", "DataLoader datasets: " + "; ".join(sorted(loaders)) + "."]
            sections.append("\n".join(lines))
            print("\n" + sections[-1], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            _log(f"files kept in {workdir}")
    exps = exponent_lines(results)
    takes = "1" if args.quick else f"20 plus up to {TAKE_MORE} more within {TAKE_MORE_SECONDS} s"
    header = [
        f"## bench_tables ({'quick' if args.quick else 'full' if args.full else 'standard'} run, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {machine_summary()}; 1-min load average {load_start:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end. {_versions()}.",
        "",
        f"Best of {1 if args.quick else 5} runs (write and decode: fewer where another run would pass "
        f"60 s, 120 s above 200 MB raw, {1 if args.quick else SMALL_REPEATS} under {SMALL_RAW_BYTES / 1e6:.0f} MB "
        f"raw; random batches: best of {takes}); DataLoader: best of "
        f"{1 if args.quick else LOADER_EPOCHS} epochs, each starting its workers. Every system runs in a "
        "fresh interpreter; the fresh-process time includes interpreter start-up, and once every system has "
        "written its files the systems take turns at it (when the disk holds them all). ome-arrow bytes writes at most "
        f"{OA_MAX_ROWS:,} crops (the subset is marked); the ome_stats pass runs over at most "
        f"{STATS_MAX_ROWS:,} rows.",
    ]
    problems = [p for r in results for p in r.problems]
    report = "\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n"
    if exps:
        report += "\nCost per record (least-squares fit over the sizes):\n" + "\n".join(exps) + "\n"
    if problems:
        report += "\nProblems:\n" + "".join(f"- {p.splitlines()[0]}\n" for p in problems)
    OUT_DIR.mkdir(exist_ok=True)
    out = OUT_DIR / f"bench_tables{'-quick' if args.quick else ''}.md"
    out.write_text(report, encoding="utf-8")
    if exps:
        print("\nCost per record:\n" + "\n".join(exps), flush=True)
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
