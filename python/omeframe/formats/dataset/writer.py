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

import functools
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa

from omeframe.engine import threads as _threads
from omeframe.engine.codec import (
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
from omeframe.formats.dataset.inputs import ImageInput, source_input
from omeframe.formats.dataset.locate import HEAD_BYTES, locate_payloads
from omeframe.formats.dataset.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.formats.dataset.schema import CHUNKS_SCHEMA, IMAGES_SCHEMA
from omeframe.formats.record.arrays import DEFAULT_COMPRESSION, DEFAULT_COMPRESSION_LEVEL
from omeframe.formats.vortex.file import write_vortex_stream, write_vortex_table
from omeframe.model.dtypes import dtype_name
from omeframe.model.errors import SchemaError
from omeframe.model.header import normalize_chunk_shape
from omeframe.storage.atomic import atomic_path

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
        total = sum(len(_grid_keys(log.inp.shape, log.grid)) for log in self.logs)
        bar = progress_bar(self.progress, total=total, desc="writing chunks", unit="chunk")
        cols: dict[str, list[Any]] = {f.name: [] for f in CHUNKS_SCHEMA}
        buffered = 0
        step = max(1, _threads.num_threads() * _BATCH_CHUNKS_PER_THREAD)
        try:
            for log in self.logs:
                log.row_start = self.rows
                keys = _grid_keys(log.inp.shape, log.grid)
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
        else:
            write_vortex_stream(CHUNKS_SCHEMA, take(), part.tmp)
        part.row_end = stream.rows
        if part.row_end == part.row_start and len(parts) > 1:  # an empty tail part
            part.tmp.unlink(missing_ok=True)
            parts.pop()


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


def _write_images_table(table: pa.Table, path: Path, fmt: str) -> None:
    # The fast-open copy: Arrow IPC needs no Parquet or Vortex reader, so a
    # cold process opens the dataset without importing either (see reader).
    with atomic_path(path.with_suffix(".arrow")) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    else:
        write_vortex_table(table, path)


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


class WriteItem(NamedTuple):
    """One image of a write: what to read, its id (``None``: the header's), level and parent."""

    image: LazySource | ImageInput
    image_id: str | None
    level: int
    parent_id: str | None


def write_items(
    items: Sequence[WriteItem | tuple[LazySource | ImageInput, str | None, int, str | None]],
    path: str | os.PathLike[str],
    options: WriteOptions = WriteOptions(),
) -> Manifest:
    """Write ``(image, image_id, level, parent_id)`` items as one committed generation.

    The engine behind :func:`omeframe.write_dataset` and the file ingesters
    (pyramid levels and label images). ``(image_id, level)`` pairs must be
    unique. Images are sources (read block by block) or :class:`ImageInput`.

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
    """
    format, mode, chunk_shape = options.format, options.mode, options.chunk_shape
    compression, compression_level = options.compression, options.compression_level
    row_group_bytes, frame_bytes, progress = options.row_group_bytes, options.frame_bytes, options.progress
    root = Path(path)
    if not items:
        raise ValueError("nothing to write: no images given")
    if mode not in ("create", "append", "overwrite"):
        raise ValueError(f"mode must be 'create', 'append' or 'overwrite', got {mode!r}")
    comp = normalize_compression(compression)
    if frame_bytes is not None and (not isinstance(frame_bytes, (int, np.integer)) or frame_bytes < 0):
        raise ValueError(
            f"frame_bytes must be None or a non-negative integer (0 = one frame per chunk), got {frame_bytes!r}"
        )
    existing: Manifest | None = None
    if root.exists() and (root / MANIFEST_NAME).exists():
        if mode == "create":
            raise FileExistsError(
                f"{str(root)!r} already holds a dataset; pass mode='append' to add images or "
                "mode='overwrite' to replace it"
            )
        if mode == "append":
            existing = read_manifest(root)
    elif root.exists() and any(root.iterdir()) and mode != "overwrite":
        raise FileExistsError(f"{str(root)!r} exists and is not an empty directory or a dataset")
    fmt = existing.format if existing else (format or "parquet")
    if format is not None and existing is not None and format != existing.format:
        raise ValueError(f"the dataset at {str(root)!r} is {existing.format}; cannot append {format}")
    if fmt not in ("parquet", "vortex"):
        raise ValueError(f"format must be 'parquet' or 'vortex', got {format!r}")

    prior = DatasetReader(root) if existing else None
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
        if (iid, int(lvl)) in taken:
            raise ValueError(
                f"image id {iid!r} level {lvl} is already in the dataset (or given twice); "
                "image ids must be unique"
            )
        taken.add((iid, int(lvl)))
        grid = normalize_chunk_shape(chunk_shape, *inp.shape[2:])
        frame_rows = frame_rows_for(comp, grid, np.dtype(inp.dtype).itemsize, frame_bytes)
        logs.append(_ImageLog(inp=inp, level=int(lvl), grid=grid, codec=comp, frame_rows=frame_rows))

    staging = root if existing else root.parent / f".{root.name}.staging-{uuid.uuid4().hex[:8]}"
    if not existing:
        if not root.parent.exists():
            raise FileNotFoundError(f"parent directory of {str(root)!r} does not exist")
        staging.mkdir()
    (staging / "chunks").mkdir(exist_ok=True)
    gen = (existing.generation + 1) if existing else 1
    ext = "parquet" if fmt == "parquet" else "vortex"
    part_prefix = f"chunks/part-{gen:05d}-{uuid.uuid4().hex[:8]}"
    images_rel = f"images-{gen:05d}.{ext}"
    parts: list[_Part] = []
    n_chunks = sum(len(_grid_keys(log.inp.shape, log.grid)) for log in logs)
    stream = _ChunkStream(
        logs,
        compression=comp,
        level=compression_level,
        row_group_bytes=row_group_bytes,
        progress=wanted(progress, large=n_chunks > 64),
    )
    try:
        _write_parts(
            staging, part_prefix, ext, fmt, stream, None if fmt == "parquet" else VORTEX_PART_BYTES, parts
        )
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
        offsets = np.concatenate(located) if located else None
        for part in parts:
            os.replace(part.tmp, staging / part.rel)
        new_rows = _images_rows(logs, parts, offsets)
        table = pa.concat_tables([prior.images_table, new_rows]) if prior is not None else new_rows
        _write_images_table(table, staging / images_rel, fmt)
        manifest = Manifest(
            format=fmt,
            generation=gen,
            images=images_rel,
            parts=(existing.parts if existing else []) + [p.rel for p in parts],
        )
        write_manifest(staging, manifest)
    except BaseException:
        if existing:  # leave the committed generation exactly as it was
            for part in parts:
                part.tmp.unlink(missing_ok=True)
                (staging / part.rel).unlink(missing_ok=True)
            for p in (staging / images_rel, (staging / images_rel).with_suffix(".arrow")):
                p.unlink(missing_ok=True)
        else:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if not existing:
        if root.exists():  # overwrite: swap the new dataset into place
            trash = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(root, trash)
            os.replace(staging, root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, root)
    else:
        # Keep this and the previous generation's images table (a reader may
        # have opened the previous manifest); older ones are garbage.
        keep = {images_rel, existing.images}
        keep |= {str(Path(k).with_suffix(".arrow")) for k in keep if k}
        for f in [*root.glob(f"images-*.{ext}"), *root.glob("images-*.arrow")]:
            if f.name not in keep:
                f.unlink(missing_ok=True)
    return manifest
