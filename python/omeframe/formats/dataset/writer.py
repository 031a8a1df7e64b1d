"""Streaming writer of chunked image datasets (Parquet or Vortex).

Chunks are read block by block from each input, encoded, measured
(min/max/mean/non-zero) and checksummed in the shared thread pool, a bounded
batch at a time, and streamed to the part file as record batches: the whole
image is never held in memory by the writer. A write becomes visible only when
the manifest is replaced at the end; see :mod:`omeframe.formats.dataset.manifest`.

Sizing. Readers never need Parquet row groups or Vortex blocks to find a
chunk: the images table stores each chunk's byte offset, so a region read is
one ``pread`` per chunk whatever the container layout. Row groups are
therefore sized for SQL scans and for the writer's memory: the writer holds
one row group of encoded chunks (plus Parquet's page buffers, about three
times ``row_group_bytes`` at peak), so the default is 16 MiB. A 100k-chunk
image of 300 KB chunks then has ~1,900 row groups and a ~5 MB footer that
only DuckDB/Polars ever parse. Each write produces one part file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import pyarrow as pa

from omeframe.engine import threads as _threads
from omeframe.engine.codec import (
    check_level,
    encode_framed,
    frame_rows_for,
    normalize_compression,
    pack_large_binary,
    resolve_codec,
)
from omeframe.engine.pieces import regular_pieces
from omeframe.engine.progress import bar as progress_bar
from omeframe.engine.progress import wanted
from omeframe.engine.source import LazySource
from omeframe.engine.stats import checksum, chunk_stats
from omeframe.formats.dataset.gc import DEFAULT_GC_GRACE_SECONDS, maybe_collect
from omeframe.formats.dataset.inputs import ImageInput, source_input
from omeframe.formats.dataset.locate import HEAD_BYTES, locate_payloads
from omeframe.formats.dataset.manifest import (
    MANIFEST_NAME,
    Manifest,
    generation_path,
    list_generations,
    read_manifest,
    read_manifest_file,
    write_manifest,
)
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.formats.dataset.remote import commit_manifest_remote
from omeframe.formats.dataset.schema import CHUNKS_SCHEMA, IMAGES_SCHEMA
from omeframe.formats.record.arrays import DEFAULT_COMPRESSION, DEFAULT_COMPRESSION_LEVEL
from omeframe.formats.vortex.file import write_vortex_stream, write_vortex_table
from omeframe.model.checks import is_integer
from omeframe.model.dtypes import dtype_name
from omeframe.model.errors import ConcurrentWriteError, CorruptFileError, SchemaError
from omeframe.model.header import normalize_chunk_shape
from omeframe.storage.atomic import atomic_path, commit_step, fsync_dir, fsync_file
from omeframe.storage.crc import crc32_function
from omeframe.storage.remote import RemoteStore, _run_all
from omeframe.storage.url import local_path, parse_location

__all__ = [
    "WriteOptions",
    "WriteItem",
    "write_items",
    "DEFAULT_CHUNK_ROW_GROUP_BYTES",
    "DEFAULT_FRAME_BYTES",
]

DEFAULT_CHUNK_ROW_GROUP_BYTES = 16 << 20
#: Raw bytes per zstd frame inside a chunk: a 512x512 uint16 chunk becomes 8
#: frames of 64 rows; a region read decodes only the frames it touches. Frames
#: of 64 KiB cost about 1.5 % in size against one frame per chunk.
DEFAULT_FRAME_BYTES = 64 << 10
#: Payload per Vortex part file: vortex-data holds a file's batches until it
#: closes, so this bounds a Vortex write's memory (Parquet writes one part).
VORTEX_PART_BYTES = 16 << 20
_BATCH_CHUNKS_PER_THREAD = 4
#: A write in progress refreshes its files' modification times at least this
#: often (seconds), so garbage collection never mistakes them for debris.
KEEPALIVE_SECONDS = 60.0


@dataclass
class _ImageLog:
    """What the writer learned about one image while streaming its chunks."""

    inp: ImageInput
    level: int
    grid: tuple[int, int, int]
    codec: str | None
    frame_rows: int | None = None
    row_start: int = 0
    lengths: list[int] = field(default_factory=list)
    checksums: list[int] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    frame_lengths: list[int] = field(default_factory=list)
    raw: list[bool] = field(default_factory=list)
    #: ``[lo, hi)`` of the image's chunk keys (C order) this log writes; ``None``: all of them.
    key_range: tuple[int, int] | None = None

    def keys(self) -> np.ndarray:
        """The chunk keys (t, c, z, y, x, dz, dy, dx) this log writes, in C order."""
        keys = _grid_keys(self.inp.shape, self.grid)
        return keys if self.key_range is None else keys[self.key_range[0] : self.key_range[1]]


def _grid_keys(shape: tuple[int, ...], grid: tuple[int, int, int]) -> np.ndarray:
    """All chunk keys (t, c, z, y, x, dz, dy, dx) in C order."""
    origins, extents = regular_pieces(shape, grid)
    return np.concatenate([origins, extents], axis=1)


class _ChunkStream:
    """Produces chunk-table record batches for a list of images, logging offsets."""

    def __init__(
        self,
        logs: list[_ImageLog],
        *,
        compression: str | None,
        level: int | None,
        row_group_bytes: int,
        progress: bool,
    ) -> None:
        self.logs = logs
        self.compression = compression
        self.level = level
        self.row_group_bytes = row_group_bytes
        self.progress = progress
        self.rows = 0

    def batches(self) -> Iterator[pa.RecordBatch]:
        total = sum(len(log.keys()) for log in self.logs)
        bar = progress_bar(self.progress, total=total, desc="writing chunks", unit="chunk")
        cols: dict[str, list[Any]] = {f.name: [] for f in CHUNKS_SCHEMA}
        buffered = 0
        step = max(1, _threads.num_threads() * _BATCH_CHUNKS_PER_THREAD)
        try:
            for log in self.logs:
                log.row_start = self.rows
                keys = log.keys()
                dname = dtype_name(log.inp.dtype)
                image_id = log.inp.header.image_id
                for lo in range(0, len(keys), step):
                    batch = keys[lo : lo + step]
                    if len(batch) > 1 and _threads.can_parallelize():
                        results = list(_threads.pool().map(functools.partial(self._encode, log), batch))
                    else:
                        results = [self._encode(log, k) for k in batch]
                    for k, (stored, payload, frames, st, crc, raw_nbytes) in zip(batch, results, strict=True):
                        t, c, z, y, x, dz, dy, dx = (int(v) for v in k)
                        mv = memoryview(payload).cast("B")
                        cols["image_id"].append(image_id)
                        cols["level"].append(log.level)
                        keys8 = ("t", "c", "z", "y", "x", "shape_z", "shape_y", "shape_x")
                        for name, v in zip(keys8, (t, c, z, y, x, dz, dy, dx), strict=True):
                            cols[name].append(v)
                        cols["dtype"].append(dname)
                        cols["codec"].append(stored)
                        cols["min"].append(st.min)
                        cols["max"].append(st.max)
                        cols["mean"].append(st.mean)
                        cols["nonzero"].append(st.nonzero)
                        cols["checksum"].append(crc)
                        cols["nbytes"].append(raw_nbytes)
                        cols["pixel_bytes"].append(mv)
                        log.lengths.append(mv.nbytes)
                        log.checksums.append(crc)
                        log.heads.append(bytes(mv[:HEAD_BYTES]))
                        log.raw.append(stored is None)
                        if frames is not None:
                            log.frame_lengths.extend(frames)
                        elif log.frame_rows is not None and stored is not None:
                            log.frame_lengths.append(mv.nbytes)  # a chunk of one frame
                        buffered += mv.nbytes
                        self.rows += 1
                    bar.update(len(batch))
                    if buffered >= self.row_group_bytes:
                        yield _to_batch(cols)
                        cols = {f.name: [] for f in CHUNKS_SCHEMA}
                        buffered = 0
            if cols["image_id"]:
                yield _to_batch(cols)
        finally:
            bar.close()

    def _encode(self, log: _ImageLog, k: np.ndarray) -> tuple[str | None, Any, list[int] | None, Any, int, int]:
        inp = log.inp
        t, c, z, y, x, dz, dy, dx = (int(v) for v in k)
        block = np.ascontiguousarray(inp.read_block(t, c, z, z + dz, y, y + dy, x, x + dx))
        if block.shape != (dz, dy, dx):
            raise SchemaError(
                f"image {inp.header.image_id!r}: source returned a block of shape {block.shape} "
                f"for chunk (t={t}, c={c}, z={z}, y={y}, x={x}); expected {(dz, dy, dx)}"
            )
        stored, payload, frames = encode_framed(block, self.compression, self.level, log.frame_rows)
        return stored, payload, frames, chunk_stats(block), checksum(payload), block.nbytes


def _to_batch(cols: dict[str, list[Any]]) -> pa.RecordBatch:
    arrays = []
    for f in CHUNKS_SCHEMA:
        vals = cols[f.name]
        if f.name == "pixel_bytes":
            arrays.append(pack_large_binary(vals))
        else:
            arrays.append(pa.array(vals, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=CHUNKS_SCHEMA)


class _KeepAlive:
    """Refreshes the modification time of a write's uncommitted files while it works.

    Garbage collection removes a file no generation names only once it has
    not been modified for the grace period; touching the files of a write in
    progress (at most every :data:`KEEPALIVE_SECONDS`) keeps a concurrent
    collection from taking them however long the write runs.
    """

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.last = time.monotonic()

    def add(self, path: Path) -> None:
        self.paths.append(path)

    def rename(self, old: Path, new: Path) -> None:
        self.paths = [new if p == old else p for p in self.paths]

    def touch(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last < KEEPALIVE_SECONDS:
            return
        for p in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.utime(p)
        self.last = time.monotonic()


@dataclass
class _Part:
    """One chunk part file of a write: its path and the global rows it holds."""

    rel: str
    tmp: Path
    row_start: int
    row_end: int = 0


def _write_parts(
    staging: Path,
    prefix: str,
    ext: str,
    fmt: str,
    stream: _ChunkStream,
    part_bytes: int | None,
    parts: list[_Part],
    keepalive: _KeepAlive,
) -> None:
    """Stream the chunk batches into one part file, or several of about ``part_bytes``.

    Parquet writes one part per write (its writer flushes every row group).
    vortex-data's writer keeps every batch of a file alive until the file is
    finished, so Vortex writes roll over to a new part every ``part_bytes``
    of payload: memory stays bounded by one part, not by the image.
    """
    it = iter(stream.batches())
    done = False

    def take() -> Iterator[pa.RecordBatch]:
        nonlocal done
        size = 0
        for batch in it:
            yield batch
            size += batch.nbytes
            if part_bytes is not None and size >= part_bytes:
                return
        done = True

    while not done:
        rel = f"{prefix}-{len(parts):03d}.{ext}" if part_bytes is not None else f"{prefix}.{ext}"
        part = _Part(rel=rel, tmp=staging / (rel + ".tmp"), row_start=stream.rows)
        parts.append(part)
        keepalive.touch()
        if fmt == "parquet":
            import pyarrow.parquet as pq

            plain = [f.name for f in CHUNKS_SCHEMA if f.name != "pixel_bytes"]
            comp = {f.name: ("NONE" if f.name == "pixel_bytes" else "zstd") for f in CHUNKS_SCHEMA}
            with pq.ParquetWriter(
                part.tmp,
                CHUNKS_SCHEMA,
                compression=comp,
                use_dictionary=plain,
                write_statistics=plain,
                data_page_size=1 << 20,
            ) as writer:
                for batch in take():
                    writer.write_batch(batch, row_group_size=batch.num_rows)
            fsync_file(part.tmp)  # (Vortex parts are fsynced by their atomic write)
            commit_step(f"fsync:{rel}")
        else:
            write_vortex_stream(CHUNKS_SCHEMA, take(), part.tmp, digests=False)  # payload CRCs of their own
        part.row_end = stream.rows
        if part.row_end == part.row_start and len(parts) > 1:  # an empty tail part
            part.tmp.unlink(missing_ok=True)
            parts.pop()
        keepalive.add(part.tmp)


def _images_rows(logs: list[_ImageLog], parts: list[_Part], offsets: np.ndarray | None) -> pa.Table:
    """Images-table rows for ``logs``; ``offsets`` are byte offsets by global chunk row."""
    rows: dict[str, list[Any]] = {f.name: [] for f in IMAGES_SCHEMA}
    starts = np.array([p.row_start for p in parts], dtype=np.int64)
    for log in logs:
        h = log.inp.header
        rows["image_id"].append(h.image_id)
        rows["level"].append(log.level)
        rows["name"].append(h.name)
        rows["image_type"].append(h.image_type)
        rows["parent_id"].append(log.inp.parent_id)
        rows["acquisition_datetime"].append(h.acquisition_datetime or datetime.now(UTC))
        rows["pixels_meta"].append(h.pixels_meta(log.inp.shape, dtype_name(log.inp.dtype)))
        cz, cy, cx = log.grid
        rows["chunk_grid"].append(
            {"order": "TCZYX", "chunk_t": 1, "chunk_c": 1, "chunk_z": cz, "chunk_y": cy, "chunk_x": cx,
             "chunk_order": "ZYX"}
        )
        rows["dtype"].append(dtype_name(log.inp.dtype))
        rows["codec"].append(resolve_codec(log.codec))
        n = len(log.lengths)
        rows["n_chunks"].append(n)
        rows["stored_bytes"].append(int(sum(log.lengths)))
        glob = np.arange(log.row_start, log.row_start + n, dtype=np.int64)
        pidx = np.searchsorted(starts, glob, side="right") - 1
        first = int(pidx[0]) if n else 0
        rows["part"].append(parts[first].rel)
        rows["row_start"].append(log.row_start - int(starts[first]))
        if n and int(pidx[-1]) != first:
            used = sorted(set(pidx.tolist()))
            local = {p: i for i, p in enumerate(used)}
            rows["parts"].append([parts[p].rel for p in used])
            rows["chunk_part"].append([local[p] for p in pidx.tolist()])
            rows["chunk_rows"].append((glob - starts[pidx]).tolist())
        else:
            rows["parts"].append([parts[first].rel])
            rows["chunk_part"].append(None)
            rows["chunk_rows"].append(None)
        rows["chunk_offsets"].append(None if offsets is None else offsets[glob].tolist())
        rows["chunk_lengths"].append(log.lengths)
        rows["chunk_checksums"].append(log.checksums)
        rows["frame_rows"].append(log.frame_rows)
        rows["chunk_frame_lengths"].append(log.frame_lengths if log.frame_rows is not None else None)
        rows["chunk_raw"].append(log.raw if log.codec is not None and any(log.raw) else None)
    return pa.table({f.name: pa.array(rows[f.name], f.type) for f in IMAGES_SCHEMA}, schema=IMAGES_SCHEMA)


def _write_parts_here(
    folder: Path, prefix: str, ext: str, fmt: str, stream: _ChunkStream, txn: _Txn, keepalive: _KeepAlive,
    logs: list[_ImageLog],
) -> np.ndarray | None:
    """Write, locate and rename this process's part files; the byte offset of every chunk (or ``None``)."""
    _write_parts(
        folder, prefix, ext, fmt, stream, None if fmt == "parquet" else VORTEX_PART_BYTES, txn.parts, keepalive
    )
    parts = txn.parts
    heads = [h for log in logs for h in log.heads]
    lengths = [n for log in logs for n in log.lengths]
    crcs = [c for log in logs for c in log.checksums]
    located: list[np.ndarray] = []
    for part in parts:
        lo, hi = part.row_start, part.row_end
        off = locate_payloads(part.tmp, heads[lo:hi], lengths[lo:hi], crcs[lo:hi])
        if off is None:
            located = []
            break
        located.append(off)
        keepalive.touch()
    for part in parts:
        os.replace(part.tmp, folder / part.rel)
        keepalive.rename(part.tmp, folder / part.rel)
        commit_step(f"rename:{part.rel}")
    return np.concatenate(located) if located else None


# ---------------------------------------------------------------------------
# distributed writes: chunk batches on dask.distributed workers, one commit here
# ---------------------------------------------------------------------------

#: Raw (decoded) bytes of chunks per task of a distributed write, at most.
DASK_TASK_BYTES = 64 << 20
#: A distributed write cuts at least this many tasks per worker thread (when it has the chunks).
DASK_TASKS_PER_THREAD = 4


@dataclass
class _TaskResult:
    """What one worker task of a distributed write wrote: its parts and per-image chunk logs."""

    parts: list[tuple[str, int, int]]  # (rel, first row, end row) within the task
    logs: list[tuple[list[int], list[int], list[int], list[bool]]]  # lengths, checksums, frames, raw
    offsets: np.ndarray | None


#: One image segment of a task: (input, level, grid, codec, frame_rows, first key, end key).
_Segment = tuple[ImageInput, int, tuple[int, int, int], str | None, int | None, int, int]


def _write_task(
    segments: list[_Segment],
    folder: str,
    prefix: str,
    fmt: str,
    compression: str | None,
    level: int | None,
    row_group_bytes: int,
) -> _TaskResult:
    """Run on a worker: encode the segments' chunks into part files ``<prefix>*`` under ``folder``.

    Names depend only on ``prefix`` (one per task), so a task the scheduler
    runs again after its worker died rewrites its own files; they are
    written as ``.tmp`` files, located (byte offsets) and renamed, and stay
    invisible to readers until the driver commits a manifest naming them.
    """
    root = Path(folder)
    logs = [
        _ImageLog(inp=inp, level=lv, grid=grid, codec=codec, frame_rows=fr, key_range=(lo, hi))
        for inp, lv, grid, codec, fr, lo, hi in segments
    ]
    stream = _ChunkStream(logs, compression=compression, level=level, row_group_bytes=row_group_bytes, progress=False)
    txn = _Txn(root)
    ext = "parquet" if fmt == "parquet" else "vortex"
    try:
        offsets = _write_parts_here(root, prefix, ext, fmt, stream, txn, _KeepAlive(), logs)
    except BaseException:
        txn.rollback()
        raise
    fsync_dir(root / "chunks")
    return _TaskResult(
        parts=[(p.rel, p.row_start, p.row_end) for p in txn.parts],
        logs=[(log.lengths, log.checksums, log.frame_lengths, log.raw) for log in logs],
        offsets=offsets,
    )


def _task_segments(logs: list[_ImageLog], slots: int) -> list[list[tuple[int, int, int]]]:
    """Cut the write's chunks (images in order, keys in C order) into tasks of ``(log, lo, hi)`` runs.

    At most :data:`DASK_TASK_BYTES` raw bytes per task, and at least
    :data:`DASK_TASKS_PER_THREAD` tasks per worker thread while there are chunks.
    """
    counts = np.array([len(_grid_keys(log.inp.shape, log.grid)) for log in logs], dtype=np.int64)
    chunk_bytes = np.array(
        [int(np.prod(log.grid)) * np.dtype(log.inp.dtype).itemsize for log in logs], dtype=np.int64
    )
    total = int(counts.sum())
    raw = int((counts * chunk_bytes).sum())
    n_tasks = max(1, min(total, max(-(-raw // DASK_TASK_BYTES), DASK_TASKS_PER_THREAD * max(1, slots))))
    bounds = np.unique(np.linspace(0, total, n_tasks + 1).round().astype(np.int64))
    starts = np.concatenate(([0], np.cumsum(counts)))
    tasks = []
    for g0, g1 in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        first = int(np.searchsorted(starts, g0, side="right")) - 1
        last = int(np.searchsorted(starts, g1, side="left"))  # images [first, last) overlap [g0, g1)
        segs = []
        for i in range(first, last):
            lo, hi = max(g0, int(starts[i])) - int(starts[i]), min(g1, int(starts[i + 1])) - int(starts[i])
            if hi > lo:
                segs.append((i, lo, hi))
        tasks.append(segs)
    return tasks


def _write_parts_on_client(
    client: Any,
    folder: Path,
    prefix: str,
    fmt: str,
    logs: list[_ImageLog],
    compression: str | None,
    level: int | None,
    row_group_bytes: int,
    progress: bool | None,
    txn: _Txn,
    keepalive: _KeepAlive,
) -> np.ndarray | None:
    """Write the part files on ``client``'s workers; fill ``logs`` and ``txn.parts`` as the local write does.

    Every task writes ``<prefix>-t<task>*`` (parts of a task that failed on
    the driver's side are removed here; files of a task still running after
    a failure are left to garbage collection). Inputs travel to the workers
    by pickle: file-backed sources as their paths, in-memory ones by value.
    """
    from distributed import as_completed  # lazy: distributed

    slots = sum(int(n) for n in client.nthreads().values())
    tasks = _task_segments(logs, slots)
    futures = []
    for k, segs in enumerate(tasks):
        payload = [
            (logs[i].inp, logs[i].level, logs[i].grid, logs[i].codec, logs[i].frame_rows, lo, hi)
            for i, lo, hi in segs
        ]
        futures.append(client.submit(
            _write_task, payload, str(folder), f"{prefix}-t{k:05d}", fmt, compression, level, row_group_bytes,
            key=f"omeframe-write-{Path(prefix).name}-t{k:05d}", pure=False,
        ))
    order = {f.key: k for k, f in enumerate(futures)}
    results: list[_TaskResult | None] = [None] * len(tasks)
    n_chunks = sum(hi - lo for segs in tasks for _, lo, hi in segs)
    bar = progress_bar(progress, total=n_chunks, desc="writing chunks", unit="chunk", large=n_chunks > 64)
    try:
        for fut in as_completed(futures, loop=client.loop):  # this client, not the default one
            res: _TaskResult = fut.result()
            k = order[fut.key]
            results[k] = res
            for rel, _, _ in res.parts:
                keepalive.add(folder / rel)
            keepalive.touch()
            bar.update(sum(hi - lo for _, lo, hi in tasks[k]))
    except BaseException:
        client.cancel(futures)
        stem = Path(prefix).name
        for p in (folder / Path(prefix).parent).glob(f"{stem}-t*"):
            p.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    row = 0
    located: list[np.ndarray] = []
    have_offsets = True
    for segs, maybe in zip(tasks, results, strict=True):
        assert maybe is not None  # every future completed
        for rel, r0, r1 in maybe.parts:
            txn.parts.append(_Part(rel=rel, tmp=folder / (rel + ".tmp"), row_start=row + r0, row_end=row + r1))
        for (i, _, _), (lengths, crcs, frames, raw) in zip(segs, maybe.logs, strict=True):
            log = logs[i]
            log.lengths.extend(lengths)
            log.checksums.extend(crcs)
            log.frame_lengths.extend(frames)
            log.raw.extend(raw)
        if maybe.offsets is None:
            have_offsets = False
        else:
            located.append(maybe.offsets)
        row += sum(len(lengths) for lengths, _, _, _ in maybe.logs)
    start = 0
    for log in logs:
        log.row_start = start
        start += len(log.lengths)
    return np.concatenate(located) if have_offsets and located else None


def _write_images_table(table: pa.Table, path: Path, fmt: str) -> dict[str, int]:
    """Write the images table at ``path`` and its Arrow IPC copy beside it.

    Returns the CRC-32 of each file's bytes as written, by file name, for the
    manifest (:attr:`Manifest.checksums`), read back from the files.
    """
    # The fast-open copy: Arrow IPC needs no Parquet or Vortex reader, so a
    # cold process opens the dataset without importing either (see reader).
    fast = path.with_suffix(".arrow")
    with atomic_path(fast) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with atomic_path(path) as tmp:  # page CRCs too: DuckDB and Polars read this file themselves
            pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)
    else:
        write_vortex_table(table, path)
    crc32 = crc32_function()
    return {p.name: crc32(p.read_bytes()) for p in (path, fast)}


@dataclass(frozen=True, kw_only=True)
class WriteOptions:
    """How a dataset is written: the options shared by every function that writes one.

    ``omeframe.write_dataset``, ``from_tiff(out=...)``, ``from_ome_zarr``,
    ``from_stack_pattern_path`` and ``ingest_source`` build one from their
    flat keyword arguments; the defaults here are the only ones.

    Attributes
    ----------
    format
        ``"parquet"`` (default for new datasets) or ``"vortex"``; an existing
        dataset keeps its format.
    mode
        ``"create"`` (fail if a dataset exists), ``"append"`` (add images, or
        create) or ``"overwrite"``.
    chunk_shape
        ``(Z, Y, X)`` chunk shape, clipped to each image. ``None``: the chunk
        shape of the dataset's first image when appending, else (1, 512, 512).
    compression, compression_level
        Per-chunk codec (``"zstd"`` level 3 by default; ``None`` = raw).
    row_group_bytes
        Parquet row-group size of the chunks table (affects SQL scans only).
    frame_bytes
        With zstd, chunks are stored as independent frames of about this many
        raw bytes (whole rows) so region reads decode only the frames they
        touch; ``None`` or 0 stores one frame per chunk.
    progress
        Show a progress bar (``None``: only on an interactive terminal, when
        writing more than 64 chunks).
    retries
        How often a write that lost the commit race to a concurrent writer
        rebases onto the new generation and tries again (appends merge their
        images into it; overwrites replace it). ``0``: raise
        :class:`~omeframe.model.errors.ConcurrentWriteError` at once.
    gc_grace_seconds
        Grace period of the garbage collection run after the commit:
        superseded generations stay readable this long (see
        :mod:`omeframe.formats.dataset.gc`).
    storage_options
        Options of the fsspec filesystem when the dataset is a URL
        (credentials, ``endpoint_url`` ...).
    before_commit
        Called once every chunk has been read and written, before anything
        is committed; an exception there commits nothing (the write's files
        are removed). Catalog builds check there that the files they read did
        not change meanwhile.

    Example
    -------
    >>> opts = WriteOptions(format="vortex", chunk_shape=(1, 256, 256))   # doctest: +SKIP
    >>> write_items([(source, "img", 0, None)], "out/", opts)            # doctest: +SKIP
    """

    format: Literal["parquet", "vortex"] | None = None
    mode: Literal["create", "append", "overwrite"] = "create"
    chunk_shape: tuple[int, int, int] | None = None
    compression: str | None = DEFAULT_COMPRESSION
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL
    row_group_bytes: int = DEFAULT_CHUNK_ROW_GROUP_BYTES
    frame_bytes: int | None = DEFAULT_FRAME_BYTES
    progress: bool | None = None
    retries: int = 0
    gc_grace_seconds: float = DEFAULT_GC_GRACE_SECONDS
    storage_options: dict[str, Any] | None = None
    before_commit: Callable[[], None] | None = None


class WriteItem(NamedTuple):
    """One image of a write: what to read, its id (``None``: the header's), level and parent."""

    image: LazySource | ImageInput
    image_id: str | None
    level: int
    parent_id: str | None


class _Txn:
    """What one write created and has not committed yet (removed again when it fails)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.staging = False  # ``folder`` is a private staging folder (removed whole)
        self.parts: list[_Part] = []
        self.files: list[str] = []
        self.committed = False

    def drop(self, rel: str) -> None:
        (self.folder / rel).unlink(missing_ok=True)
        if rel in self.files:
            self.files.remove(rel)

    def rollback(self) -> None:
        if self.staging:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        for part in self.parts:
            part.tmp.unlink(missing_ok=True)
            (self.folder / part.rel).unlink(missing_ok=True)
        for rel in list(self.files):
            self.drop(rel)


def _is_dataset(root: Path) -> bool:
    return root.is_dir() and ((root / MANIFEST_NAME).is_file() or bool(list_generations(root)))


def _is_committed(root: Path, manifest: Manifest) -> bool:
    """Whether ``manifest`` is what generation ``manifest.generation`` of ``root`` holds."""
    try:
        return read_manifest_file(generation_path(root, manifest.generation)) == manifest
    except (FileNotFoundError, CorruptFileError):
        return False


def _commit_manifest(root: Path, manifest: Manifest, txn: _Txn) -> None:
    """:func:`write_manifest`, noting in ``txn`` when a failure came after the commit point."""
    try:
        write_manifest(root, manifest)
    except ConcurrentWriteError:
        raise
    except BaseException:
        if _is_committed(root, manifest):
            txn.committed = True
        raise
    txn.committed = True


def _rebase(root: Path, mode: str, fmt: str, new_rows: pa.Table) -> tuple[Manifest, DatasetReader | None]:
    """The generation a write that lost the commit race retries on (and its images, for appends).

    Raises
    ------
    ConcurrentWriteError
        When the new generation cannot take this append: it holds one of its
        image ids, or it changed the dataset's format.
    """
    if mode != "append":
        return read_manifest(root), None
    prior = DatasetReader(root)
    gen = prior.manifest.generation
    if prior.format != fmt:
        raise ConcurrentWriteError(
            f"concurrent write to dataset {str(root)!r}: generation {gen}, committed by another writer, "
            f"stores {prior.format} chunks; this append wrote {fmt} chunks and committed nothing; "
            f"write again with format={prior.format!r}"
        )
    mine = set(zip(new_rows["image_id"].to_pylist(), new_rows["level"].to_pylist(), strict=True))
    clash = sorted(mine & set(prior._entries))
    if clash:
        shown = ", ".join(f"{iid!r} level {lv}" for iid, lv in clash[:5]) + (" ..." if len(clash) > 5 else "")
        raise ConcurrentWriteError(
            f"concurrent write to dataset {str(root)!r}: generation {gen}, committed by another writer, "
            f"already holds image {shown}; this append cannot be merged into it and committed nothing; "
            "use other image ids"
        )
    return prior.manifest, prior


def _commit_in_place(
    root: Path,
    base: Manifest,
    prior: DatasetReader | None,
    mode: str,
    fmt: str,
    token: str,
    new_rows: pa.Table,
    retries: int,
    keepalive: _KeepAlive,
    txn: _Txn,
) -> Manifest:
    """Write the images table of the next generation and commit it by compare-and-swap.

    Appends keep ``base``'s parts and images and add this write's; overwrites
    name only this write's parts. A lost race is retried ``retries`` times on
    the newest generation (see :func:`_rebase`).
    """
    ext = "parquet" if fmt == "parquet" else "vortex"
    mine = [p.rel for p in txn.parts]
    for attempt in range(retries + 1):
        gen = base.generation + 1
        images_rel = f"images-{gen:05d}-{token}.{ext}"
        txn.files += [images_rel, str(Path(images_rel).with_suffix(".arrow"))]
        table = pa.concat_tables([prior.images_table, new_rows]) if prior is not None else new_rows
        sums = _write_images_table(table, root / images_rel, fmt)
        manifest = Manifest(
            format=fmt, generation=gen, images=images_rel,
            parts=(list(base.parts) if mode == "append" else []) + mine, checksums=sums,
        )
        gone = [rel for rel in mine if not (root / rel).is_file()]
        if gone:
            raise FileNotFoundError(
                f"cannot commit to dataset {str(root)!r}: chunk part(s) {gone[:3]} of this write were "
                "removed before it committed (a garbage collection with a grace period shorter than "
                "this write took?); nothing was committed; write again"
            )
        keepalive.touch(force=True)
        try:
            _commit_manifest(root, manifest, txn)
            return manifest
        except ConcurrentWriteError as exc:
            for rel in (images_rel, str(Path(images_rel).with_suffix(".arrow"))):
                txn.drop(rel)
            if attempt == retries:
                if retries:
                    raise ConcurrentWriteError(f"{exc} (gave up after {retries} retries)") from None
                raise
            base, prior = _rebase(root, mode, fmt, new_rows)
    raise AssertionError("unreachable")  # the loop returns or raises


def _create(root: Path, txn: _Txn, fmt: str, token: str, new_rows: pa.Table) -> Manifest | None:
    """Commit generation 1 in the staging folder, then move it to ``root`` in one rename.

    Returns ``None`` when another writer created a dataset at ``root`` first.
    ``root`` may be missing or an empty folder (replaced by the rename); a
    non-empty folder that is no dataset (``mode="overwrite"`` only) is moved
    aside and removed, as there is no dataset to keep.
    """
    staging = txn.folder
    ext = "parquet" if fmt == "parquet" else "vortex"
    images_rel = f"images-00001-{token}.{ext}"
    sums = _write_images_table(new_rows, staging / images_rel, fmt)
    manifest = Manifest(
        format=fmt, generation=1, images=images_rel, parts=[p.rel for p in txn.parts], checksums=sums
    )
    write_manifest(staging, manifest)
    fsync_dir(staging)
    if root.is_dir() and not _is_dataset(root) and any(root.iterdir()):
        trash = root.parent / f".{root.name}.old-{token}"
        os.replace(root, trash)
        os.replace(staging, root)
        txn.committed = True
        fsync_dir(root.parent)
        shutil.rmtree(trash, ignore_errors=True)
        return manifest
    try:
        os.rename(staging, root)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            return None
        raise
    txn.committed = True
    commit_step("rename:dataset")
    fsync_dir(root.parent)
    commit_step("fsync-dir:parent")
    return manifest


def write_items(
    items: Sequence[WriteItem | tuple[LazySource | ImageInput, str | None, int, str | None]],
    path: str | os.PathLike[str],
    options: WriteOptions = WriteOptions(),
    *,
    client: Any = None,
) -> Manifest:
    """Write ``(image, image_id, level, parent_id)`` items as one committed generation.

    The engine behind :func:`omeframe.write_dataset` and the file ingesters
    (pyramid levels and label images). ``(image_id, level)`` pairs must be
    unique. Images are sources (read block by block) or :class:`ImageInput`.

    Every file is written and fsynced before the commit. A new dataset is
    built in a hidden staging folder beside ``path`` and moved into place with
    one rename. Appends and overwrites of an existing dataset write their
    files into it and commit the next generation by compare-and-swap (see
    :mod:`omeframe.formats.dataset.manifest`): a crash at any point leaves
    the old or the new generation, and readers that opened the old one keep
    reading it (see :mod:`omeframe.formats.dataset.gc`).

    With ``client`` (a ``dask.distributed.Client``) the chunks are read,
    encoded and written into part files by tasks on the cluster's workers
    (runs of chunks in write order, at most :data:`DASK_TASK_BYTES` raw
    bytes each, named per task so a task re-run after a worker died
    rewrites its own files); this process then commits one manifest exactly
    as a local write does. The workers must see ``path`` (one machine or a
    shared file system) and open the inputs themselves: file-backed sources
    travel as their paths, in-memory arrays by value.

    Returns
    -------
    Manifest
        The manifest this write committed (open it with
        :class:`~omeframe.formats.dataset.reader.DatasetReader` or
        :func:`omeframe.open_dataset`).

    Raises
    ------
    FileExistsError
        In ``"create"`` mode when ``path`` already holds a dataset.
    ValueError
        For duplicate image ids or bad options; nothing is committed then.
    ConcurrentWriteError
        When another writer committed first and ``options.retries`` did not
        allow (or could not) rebase onto its generation; nothing is committed then.

    Example
    -------
    >>> write_items([(source, "img", 0, None)], "out/", WriteOptions(mode="append", retries=3))  # doctest: +SKIP
    """
    format, mode, chunk_shape = options.format, options.mode, options.chunk_shape
    compression, compression_level = options.compression, options.compression_level
    row_group_bytes, frame_bytes, progress = options.row_group_bytes, options.frame_bytes, options.progress
    retries = options.retries
    if parse_location(path) is not None:
        if client is not None:
            raise ValueError(
                f"client= writes part files from the workers onto a path they all see; {os.fspath(path)!r} "
                "is a URL: write to object storage without client= (the driver uploads and commits), "
                "or write to a shared file system with client="
            )
        return _write_remote(items, os.fspath(path), options)
    root = local_path(path)
    if not items:
        raise ValueError("nothing to write: no images given")
    if mode not in ("create", "append", "overwrite"):
        raise ValueError(f"mode must be 'create', 'append' or 'overwrite', got {mode!r}")
    if not isinstance(retries, (int, np.integer)) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    if not options.gc_grace_seconds >= 0:
        raise ValueError(f"gc_grace_seconds must be a non-negative number, got {options.gc_grace_seconds!r}")
    if client is not None and not all(callable(getattr(client, a, None)) for a in ("submit", "nthreads")):
        raise TypeError(
            f"client must be a dask.distributed.Client (or None for a local write), got a {type(client).__name__}"
        )
    comp = normalize_compression(compression)
    compression_level = check_level(comp, compression_level)  # the default level on snappy or raw: none
    if not is_integer(row_group_bytes) or row_group_bytes < 1:
        raise ValueError(
            f"row_group_bytes must be a positive integer (bytes per row group), got {row_group_bytes!r}"
        )
    if frame_bytes is not None and (not isinstance(frame_bytes, (int, np.integer)) or frame_bytes < 0):
        raise ValueError(
            f"frame_bytes must be None or a non-negative integer (0 = one frame per chunk), got {frame_bytes!r}"
        )
    base: Manifest | None = None
    prior: DatasetReader | None = None
    if _is_dataset(root):
        if mode == "create":
            raise FileExistsError(
                f"{str(root)!r} already holds a dataset; pass mode='append' to add images or "
                "mode='overwrite' to replace it"
            )
        if mode == "append":
            prior = DatasetReader(root)
            base = prior.manifest
        else:
            base = read_manifest(root)
    elif root.exists() and any(root.iterdir()) and mode != "overwrite":
        raise FileExistsError(f"{str(root)!r} exists and is not an empty directory or a dataset")
    fmt = prior.format if prior is not None else (format or "parquet")
    if format is not None and prior is not None and format != prior.format:
        raise ValueError(f"the dataset at {str(root)!r} is {prior.format}; cannot append {format}")
    if fmt not in ("parquet", "vortex"):
        raise ValueError(f"format must be 'parquet' or 'vortex', got {format!r}")

    if chunk_shape is None and prior is not None and prior._entries:
        chunk_shape = next(iter(prior._entries.values())).chunk_shape
    taken: set[tuple[str, int]] = set(prior._entries) if prior is not None else set()
    n_ids = len({iid for iid, _ in taken})
    logs: list[_ImageLog] = []
    for obj, iid_given, lvl, parent in items:
        inp = obj if isinstance(obj, ImageInput) else source_input(obj)
        if iid_given is not None:
            inp = replace(inp, header=replace(inp.header, image_id=str(iid_given)))
        if iid_given is None and inp.header.image_id in ("unnamed", ""):
            inp = replace(inp, header=replace(inp.header, image_id=f"img-{n_ids}"))
            n_ids += 1
        if parent is not None:
            inp = replace(inp, parent_id=parent)
        iid = inp.header.image_id
        if not isinstance(iid, str) or not iid:
            raise ValueError(f"image id {iid!r} is empty; give every image a non-empty id (image_ids=[...])")
        if not is_integer(lvl) or lvl < 0:
            raise ValueError(f"level must be a non-negative integer (0: full resolution), got {lvl!r}")
        if (iid, int(lvl)) in taken:
            raise ValueError(
                f"image id {iid!r} level {lvl} is already in the dataset (or given twice); "
                "image ids must be unique"
            )
        taken.add((iid, int(lvl)))
        grid = normalize_chunk_shape(chunk_shape, *inp.shape[2:])
        frame_rows = frame_rows_for(comp, grid, np.dtype(inp.dtype).itemsize, frame_bytes)
        logs.append(_ImageLog(inp=inp, level=int(lvl), grid=grid, codec=comp, frame_rows=frame_rows))

    token = uuid.uuid4().hex[:8]
    if base is not None:
        txn = _Txn(root)
    else:
        if not root.parent.exists():
            raise FileNotFoundError(f"parent directory of {str(root)!r} does not exist")
        txn = _Txn(root.parent / f".{root.name}.staging-{token}")
        txn.staging = True
        txn.folder.mkdir()
    folder = txn.folder
    (folder / "chunks").mkdir(exist_ok=True)
    gen = base.generation + 1 if base is not None else 1
    ext = "parquet" if fmt == "parquet" else "vortex"
    n_chunks = sum(len(_grid_keys(log.inp.shape, log.grid)) for log in logs)
    stream = _ChunkStream(
        logs,
        compression=comp,
        level=compression_level,
        row_group_bytes=row_group_bytes,
        progress=wanted(progress, large=n_chunks > 64),
    )
    keepalive = _KeepAlive()
    manifest: Manifest | None = None
    try:
        prefix = f"chunks/part-{gen:05d}-{token}"
        if client is None:
            offsets = _write_parts_here(folder, prefix, ext, fmt, stream, txn, keepalive, logs)
        else:
            offsets = _write_parts_on_client(
                client, folder, prefix, fmt, logs, comp, compression_level, row_group_bytes, progress, txn,
                keepalive,
            )
        parts = txn.parts
        fsync_dir(folder / "chunks")
        commit_step("fsync-dir:chunks")
        new_rows = _images_rows(logs, parts, offsets)
        if options.before_commit is not None:
            options.before_commit()
        if base is None:
            manifest = _create(root, txn, fmt, token, new_rows)
            if manifest is None:  # another writer created the dataset first
                if not _is_dataset(root):
                    raise FileExistsError(f"{str(root)!r} exists and is not an empty directory or a dataset")
                if mode == "create" or retries == 0:
                    raise ConcurrentWriteError(
                        f"concurrent write to dataset {str(root)!r}: another writer created it while this "
                        f"{mode} was writing its first generation; nothing was committed"
                        + ("; pass mode='append' to add to it" if mode == "create" else
                           "; write again, or pass retries=N to rebase and retry automatically")
                    )
                # Adopt the other writer's dataset: move this write's parts into it and commit on top.
                (root / "chunks").mkdir(exist_ok=True)
                for part in parts:
                    os.rename(folder / part.rel, root / part.rel)
                    keepalive.rename(folder / part.rel, root / part.rel)
                fsync_dir(root / "chunks")
                shutil.rmtree(folder, ignore_errors=True)
                txn.folder, txn.staging = root, False
                base, prior = _rebase(root, mode, fmt, new_rows)
                manifest = _commit_in_place(
                    root, base, prior, mode, fmt, token, new_rows, retries - 1, keepalive, txn
                )
        else:
            manifest = _commit_in_place(root, base, prior, mode, fmt, token, new_rows, retries, keepalive, txn)
    except BaseException:
        if not txn.committed:
            txn.rollback()
        raise
    if base is not None:
        maybe_collect(root, options.gc_grace_seconds)
    return manifest


def _write_remote(
    items: Sequence[WriteItem | tuple[LazySource | ImageInput, str | None, int, str | None]],
    url: str,
    options: WriteOptions,
) -> Manifest:
    """:func:`write_items` into object storage: build locally, upload, commit by conditional put.

    The chunk parts and the images table are written (and checked) in a
    local temporary dataset exactly as a local write does, then uploaded
    under their final names; only then is the generation committed by the
    conditional creation of ``_manifests/<generation>.json``. A lost race
    (:class:`~omeframe.model.errors.ConcurrentWriteError`) is retried
    ``options.retries`` times on the newest generation; when it gives up, the
    uploaded files are removed again.
    """
    import tempfile

    store = RemoteStore(url, options.storage_options)
    mode = options.mode
    if mode not in ("create", "append", "overwrite"):
        raise ValueError(f"mode must be 'create', 'append' or 'overwrite', got {mode!r}")
    if not isinstance(options.retries, (int, np.integer)) or isinstance(options.retries, bool) or options.retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {options.retries!r}")
    if not items:
        raise ValueError("nothing to write: no images given")

    def current() -> DatasetReader | None:
        try:
            return DatasetReader(url, storage_options=options.storage_options)
        except FileNotFoundError:
            return None

    prior = current()
    if prior is not None and mode == "create":
        raise FileExistsError(
            f"{url!r} already holds a dataset; pass mode='append' to add images or mode='overwrite' to replace it"
        )
    fmt = prior.format if prior is not None and mode == "append" else (options.format or "parquet")
    if options.format is not None and prior is not None and mode == "append" and options.format != prior.format:
        raise ValueError(f"the dataset at {url!r} is {prior.format}; cannot append {options.format}")
    chunk_shape = options.chunk_shape
    keep = prior if mode == "append" else None
    if chunk_shape is None and keep is not None and keep._entries:
        chunk_shape = next(iter(keep._entries.values())).chunk_shape
    # Unnamed images get ids after the dataset's, as a local append names them.
    n_ids = len({iid for iid, _ in keep._entries}) if keep is not None else 0
    named: list[WriteItem] = []
    for obj, iid, lvl, parent in items:
        if iid is None:
            inp = obj if isinstance(obj, ImageInput) else source_input(obj)
            if inp.header.image_id in ("unnamed", ""):
                iid, n_ids = f"img-{n_ids}", n_ids + 1
        named.append(WriteItem(obj, iid, lvl, parent))
    token = uuid.uuid4().hex[:8]
    uploaded: list[str] = []
    with tempfile.TemporaryDirectory(prefix="omeframe-upload-") as tmp:
        local = Path(tmp) / "dataset"
        built = write_items(
            named, local,
            replace(options, mode="create", format=cast(Literal["parquet", "vortex"], fmt), chunk_shape=chunk_shape,
                    storage_options=None, retries=0),
        )
        new_rows = DatasetReader(local).images_table
        mine = list(built.parts)
        try:
            _run_all([functools.partial(_upload, store, local / rel, rel, uploaded) for rel in mine])
            base = prior.manifest if prior is not None else None
            for attempt in range(options.retries + 1):
                if keep is not None:
                    clash = sorted(set(zip(new_rows["image_id"].to_pylist(), new_rows["level"].to_pylist(),
                                           strict=True)) & set(keep._entries))
                    if clash:
                        shown = ", ".join(f"{i!r} level {lv}" for i, lv in clash[:5])
                        raise (ConcurrentWriteError if attempt else ValueError)(
                            f"dataset {url!r} already holds image {shown}; image ids must be unique "
                            "(nothing was committed)"
                        )
                gen = base.generation + 1 if base is not None else 1
                ext = "parquet" if fmt == "parquet" else "vortex"
                images_rel = f"images-{gen:05d}-{token}.{ext}"
                table = pa.concat_tables([keep.images_table, new_rows]) if keep is not None else new_rows
                sums = _write_images_table(table, Path(tmp) / images_rel, fmt)
                for rel in (images_rel, images_rel.rsplit(".", 1)[0] + ".arrow"):
                    _upload(store, Path(tmp) / rel, rel, uploaded)
                manifest = Manifest(
                    format=fmt, generation=gen, images=images_rel,
                    parts=(list(base.parts) if keep is not None and base is not None else []) + mine,
                    checksums=sums,
                )
                try:
                    commit_manifest_remote(store, manifest, table)
                    return manifest
                except ConcurrentWriteError as exc:
                    if attempt == options.retries:
                        if options.retries:
                            raise ConcurrentWriteError(f"{exc} (gave up after {options.retries} retries)") from None
                        raise
                    prior = current()
                    base = prior.manifest if prior is not None else None
                    keep = prior if mode == "append" else None
                    if prior is not None and prior.format != fmt and keep is not None:
                        raise ConcurrentWriteError(
                            f"concurrent write to dataset {url!r}: the generation another writer committed "
                            f"stores {prior.format} chunks; this append wrote {fmt} and committed nothing"
                        ) from None
        except BaseException:
            for rel in uploaded:
                with contextlib.suppress(Exception):
                    store.delete(rel)
            raise
    raise AssertionError("unreachable")  # the loop returns or raises


def _upload(store: RemoteStore, src: Path, rel: str, uploaded: list[str]) -> None:
    """Upload the complete local file ``src`` as object ``rel`` (recorded for clean-up)."""
    uploaded.append(rel)
    store.upload(src, rel)
