"""Stream batches of records into one Parquet or Vortex table, in bounded memory.

:func:`write_record_batches` pulls ``pa.Table`` batches (each holding the
OME-Arrow column and any user columns) from an iterator and writes them as
they come: Parquet row groups are cut by bytes across batch boundaries, and
Vortex reads the batches as a stream. The file appears atomically when the
last batch is written. A Parquet table whose chunk payloads are compressed per
chunk also gets its pixel index (see :mod:`~omeframe.formats.record.pixel_index`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omeframe.engine import threads as _threads
from omeframe.engine.cache import DEFAULT_CACHE_BYTES
from omeframe.formats.record.files import (
    ROW_HEADER_BYTES,
    _pixels_precompressed,
    detect_format,
    record_row_sizes,
    table_metadata,
)
from omeframe.formats.record.kept_blocks import WHOLE_TABLE_SHARE
from omeframe.formats.record.pixel_index import INDEX_KEY, INDEX_VERSION, IndexBuilder, append_index
from omeframe.formats.vortex.file import write_vortex_stream
from omeframe.model.checks import is_integer
from omeframe.model.columns import check_column_name
from omeframe.model.errors import SchemaError
from omeframe.model.record import looks_like_record_type
from omeframe.storage import parquet as pqio
from omeframe.storage.atomic import atomic_path, fsync_file
from omeframe.storage.parquet_parallel import ParallelParquetWriter

__all__ = [
    "KEPT_TABLE_BYTES", "LARGE_TABLE_PAGE_BYTES", "RAW_PAGE_BYTES", "SMALL_IMAGE_BYTES", "SMALL_IMAGE_ROW_GROUP_BYTES",
    "raw_page_bytes", "write_record_batches",
]

#: Images below this many stored bytes on average count as small (cell crops).
SMALL_IMAGE_BYTES = 256 << 10
#: Row-group size of tables of small images: takes use the pixel index, not row
#: groups, so groups are sized for scans and a small footer (measured in
#: ``benchmarks/bench_tables.py``; see docs/concepts/layouts.md).
SMALL_IMAGE_ROW_GROUP_BYTES = 64 << 20
#: Pending rows are written once they reach this many row groups (the last one stays pending).
FLUSH_FACTOR = 2.0
#: The last rows of a write are cut into one row group per writer lane when each gets at least this much.
LANE_MIN_BYTES = 1 << 20
#: Data-page size of raw chunks compressed by Parquet: a random take
#: decompresses one page per row it reads, a scan pays a small cost per page
#: (measured in ``benchmarks/bench_tables.py``; see docs/concepts/layouts.md).
RAW_PAGE_BYTES = 8 << 10
#: ... and of tables known to hold more raw pixel bytes than :data:`KEPT_TABLE_BYTES`,
#: whose random takes always read pages: half the page, half the decompression per
#: row taken, for slower writes and scans (measured in ``benchmarks/bench_tables.py``;
#: see docs/concepts/layouts.md).
LARGE_TABLE_PAGE_BYTES = 4 << 10
#: Tables up to this many raw pixel bytes are served from blocks kept decoded in the
#: shared cache once taken from twice (:mod:`omeframe.formats.record.kept_blocks`, at
#: the default cache size), so their page size only matters to writes and scans.
KEPT_TABLE_BYTES = int(WHOLE_TABLE_SHARE * DEFAULT_CACHE_BYTES)


def raw_page_bytes(expected_rows: int | None, row_bytes: float) -> int:
    """Page size for raw chunks of a table of ``expected_rows`` rows (``None``: unknown), ``row_bytes`` of pixels each.

    Example
    -------
    >>> raw_page_bytes(10_000, 768), raw_page_bytes(1_000_000, 768), raw_page_bytes(None, 768)
    (8192, 4096, 8192)
    """
    if expected_rows is not None and expected_rows * row_bytes > KEPT_TABLE_BYTES:
        return LARGE_TABLE_PAGE_BYTES
    return RAW_PAGE_BYTES


def _check_batch(batch: pa.Table, column_name: str, schema: pa.Schema | None) -> pa.Table:
    if column_name not in batch.column_names:
        raise SchemaError(f"table has no column {column_name!r}; columns: {batch.column_names}")
    if not looks_like_record_type(batch.schema.field(column_name).type):
        raise SchemaError(
            f"column {column_name!r} is not an OME-Arrow struct: {batch.schema.field(column_name).type}"
        )
    if schema is not None and not batch.schema.equals(schema, check_metadata=False):
        try:
            return batch.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            raise SchemaError(
                "every batch must have the schema of the first one; first "
                f"{schema}, got {batch.schema} ({exc})"
            ) from exc
    return batch


def _batches_along(table: pa.Table, column_name: str) -> list[pa.RecordBatch]:
    """The record batches of ``table`` cut where its record column's chunks are cut.

    ``Table.to_batches`` cuts at every chunk boundary of every column, so
    feature columns chunked differently (a table read from Parquet, say)
    would slice the record column; the features are re-chunked instead (they
    are small), and the record column is handed over as built.
    """
    rec = table.column(column_name)
    sizes = [len(c) for c in rec.chunks]
    if all([len(c) for c in col.chunks] == sizes for col in table.columns):
        return table.to_batches()
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    batches = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        arrays = [rec.chunk(i) if name == column_name else col.slice(a, b - a).combine_chunks()
                  for name, col in zip(table.column_names, table.columns, strict=True)]
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=table.schema))
    return batches


def write_record_batches(
    path: str | os.PathLike[str],
    batches: Iterable[pa.Table],
    *,
    column_name: str,
    format: str | None = None,
    compression: str | None = "auto",
    row_group_bytes: int | None = None,
    file_metadata: Mapping[str, str] | None = None,
    pixel_index: bool = True,
    expected_rows: int | None = None,
) -> Path:
    """Write record batches to ``path`` atomically; return the path.

    Parameters
    ----------
    batches
        Tables of one schema, each with the OME-Arrow column ``column_name``.
        An empty iterator writes nothing and raises ``ValueError``.
    compression
        Parquet codec of the metadata columns (and of raw pixel chunks;
        ``"auto"``: zstd); for Vortex, ``"auto"`` or ``None`` write Vortex's
        default encodings and ``"zstd"`` its compact ones (see
        :func:`~omeframe.formats.vortex.file.vortex_write_options`).
    row_group_bytes
        Parquet row groups hold about this many bytes (estimated per record).
        Default (``None``): :data:`SMALL_IMAGE_ROW_GROUP_BYTES` when the first
        batch's images are small (below :data:`SMALL_IMAGE_BYTES` on average),
        else :data:`~omeframe.storage.parquet.DEFAULT_ROW_GROUP_BYTES`, so
        that every large image gets a row group of its own.
    pixel_index
        Add the pixel index to a Parquet table when its layout allows one.
    expected_rows
        How many rows the batches hold in all, when the caller knows: raw
        tiny chunks of a table larger than :data:`KEPT_TABLE_BYTES` go into
        smaller Parquet pages (:func:`raw_page_bytes`). ``None``: unknown.
    """
    check_column_name(column_name)
    fmt = detect_format(path, format)
    if expected_rows is not None and expected_rows < 0:
        raise ValueError(f"expected_rows must be >= 0 or None, got {expected_rows}")
    if row_group_bytes is not None and (
        not is_integer(row_group_bytes) or row_group_bytes <= 0
    ):
        raise ValueError(f"row_group_bytes must be a positive integer (bytes per row group), got {row_group_bytes!r}")
    # The next batch is encoded while the writer compresses and writes this one.
    it = _threads.read_ahead(iter(batches))
    first = next(it, None)
    if first is None:
        raise ValueError("no batches to write; pass at least one batch of images")
    first = _check_batch(first, column_name, None)
    meta = table_metadata(file_metadata)
    if fmt == "vortex":
        schema = first.schema

        def all_batches() -> Iterator[pa.RecordBatch]:
            yield from _batches_along(first, column_name)
            for b in it:
                yield from _batches_along(_check_batch(b, column_name, schema), column_name)

        write_vortex_stream(schema, all_batches(), path, metadata=meta, compression=compression)
        return Path(path)
    return _write_parquet(
        path, first, it, column_name, pqio.parquet_codec(compression), row_group_bytes, meta, pixel_index,
        expected_rows,
    )


def _mean_chunk_bytes(column: pa.ChunkedArray) -> tuple[int, float]:
    """Average stored bytes of one chunk payload (plus its 4-byte Parquet length), and of one record's payloads."""
    if not len(column) or column.type.get_field_index("chunks") < 0:
        return 1, 0.0
    # Chunk by chunk: combining the column would copy every pixel byte once more.
    n_chunks = sum(int(pc.sum(pc.list_value_length(pc.struct_field(c, "chunks"))).as_py() or 0) for c in column.chunks)
    pixels = float(record_row_sizes(column).sum()) - float(ROW_HEADER_BYTES) * len(column)
    return max(1, int(pixels / max(n_chunks, 1)) + 4), pixels / len(column)


def _write_parquet(
    path: str | os.PathLike[str],
    first: pa.Table,
    rest: Iterator[pa.Table],
    column_name: str,
    compression: str | None,
    row_group_bytes: int | None,
    meta: dict[bytes, bytes],
    pixel_index: bool,
    expected_rows: int | None,
) -> Path:
    if row_group_bytes is None:
        mean = float(record_row_sizes(first[column_name]).mean()) if first.num_rows else 0.0
        row_group_bytes = SMALL_IMAGE_ROW_GROUP_BYTES if mean < SMALL_IMAGE_BYTES else pqio.DEFAULT_ROW_GROUP_BYTES

    precompressed = _pixels_precompressed(first[column_name])
    # Chunks compressed one by one: pages stored raw, each chunk read by position.
    # Raw chunks: Parquet compresses small v2 pages of them, read page by page.
    mode = "frames" if precompressed else "pages"
    index = IndexBuilder(usable=pixel_index and (precompressed or compression is not None), mode=mode)
    if index.usable:
        meta = {**meta, INDEX_KEY: INDEX_VERSION.encode()}
    merged = dict(pqio.without_footer_only(first.schema).metadata or {})
    merged.update(meta)
    schema = first.schema.with_metadata(merged)
    kwargs = pqio._writer_kwargs(schema, compression, precompressed)
    if mode == "pages" and index.usable:
        value_bytes, row_pixels = _mean_chunk_bytes(first[column_name])
        page_values = max(1, raw_page_bytes(expected_rows, row_pixels) // value_bytes)
        kwargs.update(
            data_page_version="2.0",  # levels apart from values: a page's values are found from its header
            # Pages are cut between write batches, once a page holds ``data_page_size`` bytes: a
            # batch of one page's values and a size just under it make every page one batch.
            data_page_size=max(1, page_values * value_bytes - value_bytes // 2),
            write_batch_size=page_values,
        )
    pending: list[pa.Table] = []
    sizes: list[np.ndarray] = []
    with atomic_path(path, sweep=True) as tmp:
        # Row groups are written on all cores (Arrow's writer encodes a file on one thread) and
        # stitched into one file; each lane holds one row group at a time.
        lanes = _threads.num_threads() if _threads.can_parallelize() else 1
        facts = pqio.footer_facts(schema, kwargs["compression"])
        with ParallelParquetWriter(tmp, schema, lanes=lanes, durable=True, footer_only=facts, **kwargs) as writer:

            def flush(final: bool) -> None:
                if not pending:
                    return
                table = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
                row_sizes = np.concatenate(sizes)
                bounds = pqio._group_bounds(row_sizes, row_group_bytes)
                if final and len(bounds) < lanes:  # a small table or tail: one row group per lane
                    share = max(LANE_MIN_BYTES, -(-int(row_sizes.sum()) // lanes))
                    bounds = pqio._group_bounds(row_sizes, min(share, row_group_bytes))
                keep_from = table.num_rows if final or len(bounds) < 2 else bounds[-1][0]
                for lo, hi in bounds:
                    if lo >= keep_from:
                        break
                    writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
                pending.clear()
                sizes.clear()
                if keep_from < table.num_rows:
                    pending.append(table.slice(keep_from))
                    sizes.append(row_sizes[keep_from:])

            batch: pa.Table | None = first
            total = 0
            while batch is not None:
                batch = _check_batch(batch, column_name, schema).replace_schema_metadata(merged)
                col = batch[column_name]
                index.observe(col)
                pending.append(batch)
                sizes.append(record_row_sizes(col))
                total += batch.num_rows
                if sum(int(s.sum()) for s in sizes) >= FLUSH_FACTOR * row_group_bytes:
                    flush(final=False)
                batch = next(rest, None)
            flush(final=True)
            if total == 0:
                writer.write_table(schema.empty_table())
        if index.usable and total:
            # The bulk of the file goes to disk while the index is built from its
            # page headers; the commit's own fsync then has only the index left.
            flushing = threading.Thread(target=fsync_file, args=(tmp,), name="omeframe-fsync", daemon=True)
            flushing.start()
            try:
                append_index(tmp, f"{column_name}.chunks.list.element.pixel_bytes", index)
            finally:
                flushing.join()
    return Path(path)
