"""One Parquet file written by several threads: row groups in parallel, stitched into one file.

Arrow's Parquet writer encodes a file on one thread. For tables of many tiny
crops its cost per write batch over the record's ~50 leaf columns dominates
(their pixel pages are one small batch each, see
:mod:`omeframe.formats.record.writer`), so a write uses one core of several.
:class:`ParallelParquetWriter` gives each of its lanes a writer of its own on a
thread of its own: lane 0 writes the target file, lane ``j`` a part file
beside it, and row groups go to the lanes in turn. :meth:`close` then stitches
the parts into the target:

1. the target's footer is cut off; each part's column chunks (everything
   between its leading ``PAR1`` and its footer) are appended, copied by the
   kernel where it can (``os.copy_file_range``);
2. one footer lists every row group in the order :meth:`write_table` received
   them, each part's byte offsets shifted by where its chunks landed
   (:mod:`omeframe.storage.thrift_compact` edits the footers);
3. the part files are removed.

The result is an ordinary Parquet file: any reader finds every row group
through the footer's offsets, and rows come back in the order they were
written. Row groups lie in the file in lane order rather than row order,
which Parquet allows. Structures that store absolute offsets outside the
footer (page indexes) cannot be moved this way: a lane that wrote one makes
:meth:`close` raise, so this writer is used without them.

Example
-------
>>> import os, tempfile, pyarrow as pa, pyarrow.parquet as pq
>>> path = os.path.join(tempfile.mkdtemp(), "t.parquet")
>>> with ParallelParquetWriter(path, pa.schema([("x", pa.int64())]), lanes=2) as w:
...     for lo in range(0, 40, 10):
...         w.write_table(pa.table({"x": list(range(lo, lo + 10))}), row_group_size=10)
>>> pq.read_table(path)["x"].to_pylist() == list(range(40))
True
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import struct
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from omeframe.model.errors import CorruptFileError
from omeframe.storage.atomic import fsync_file
from omeframe.storage.thrift_compact import I64, LIST, STRUCT, Field, Keep, Seq, decode_struct, encode_struct

__all__ = ["ParallelParquetWriter"]

_MAGIC = b"PAR1"
# FileMetaData: 3 num_rows, 4 row_groups. RowGroup: 1 columns, 3 num_rows, 5 file_offset, 7 ordinal.
# ColumnChunk: 2 file_offset, 3 meta_data, 4 offset_index_offset, 6 column_index_offset.
# ColumnMetaData: 9 data_page_offset, 10 index_page_offset, 11 dictionary_page_offset, 14 bloom_filter_offset.
_CHUNK_OFFSETS = (9, 10, 11, 14)
_PAGE_INDEX = (4, 6)
_DONE = object()
_BUFFER_BYTES = 1 << 20


class _Lane:
    """One writer on a thread of its own, fed through a queue of one table (bounded memory)."""

    def __init__(
        self, path: Path, schema: pa.Schema, kwargs: dict[str, Any], sync: bool = False,
        footer_only: Mapping[bytes, bytes] | None = None,
    ) -> None:
        self.path = path
        self.sync = sync
        self.footer_only = footer_only
        self.groups: list[int] = []  # row groups of each write_table call, in order
        self.error: BaseException | None = None
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(
            target=self._run, args=(schema, kwargs), name="omeframe-parquet-lane", daemon=True
        )
        self._thread.start()

    def _run(self, schema: pa.Schema, kwargs: dict[str, Any]) -> None:
        import pyarrow.parquet as pq

        writer = raw = sink = None
        job: Any = None
        try:
            # Buffered: Arrow writes each page with its own write and position call otherwise
            # (two system calls per 4 KiB page of a tiny-crop table, 12% of its write).
            raw = pa.OSFile(str(self.path), "wb")
            sink = pa.BufferedOutputStream(raw, buffer_size=_BUFFER_BYTES)
            writer = pq.ParquetWriter(sink, schema, **kwargs)
            while (job := self._jobs.get()) is not _DONE:
                writer.write_table(job[0], row_group_size=job[1])
            if self.footer_only:
                writer.add_key_value_metadata(dict(self.footer_only))
            writer.close()
            if self.sync:  # on disk while the caller stitches (Python work): its final fsync has less to do
                fsync_file(self.path)
        except BaseException as exc:  # re-raised by the caller's next put or close
            self.error = exc
            # drain: the caller must never block on a dead lane (nothing is left to drain when
            # the failure came after the last table, from closing or syncing the file)
            while job is not _DONE:
                job = self._jobs.get()
        finally:
            for closing in (writer, sink, raw):
                if closing is not None:
                    try:
                        closing.close()
                    except BaseException as exc:
                        self.error = self.error or exc

    def put(self, table: pa.Table, row_group_size: int) -> None:
        if self.error is not None:
            raise self.error
        # ParquetWriter cuts a table into ceil(rows / row_group_size) row groups, an empty one into one.
        self.groups.append(-(-table.num_rows // row_group_size) if table.num_rows else 1)
        self._jobs.put((table, row_group_size))

    def finish(self) -> None:
        self._jobs.put(_DONE)
        self._thread.join()


class ParallelParquetWriter:
    """A ``pyarrow.parquet.ParquetWriter`` whose row groups are written by ``lanes`` threads.

    Parameters
    ----------
    where
        Path of the file to write (a local file; parts are written beside it).
    schema
        The table schema, as for ``ParquetWriter``.
    lanes
        Writer threads (>= 1). With 1 the file is written exactly as by one
        ``ParquetWriter``, on a thread of its own.
    durable
        Flush lane 0's rows (the target file) to disk as soon as they are
        written, while the parts are stitched: a caller that fsyncs the
        finished file then waits only for the stitched parts and the footer.
    footer_only
        Key-value metadata for the footer alone (``add_key_value_metadata``):
        not in the stored Arrow schema, so a table read from the file does not
        carry it into another.
    **kwargs
        ``ParquetWriter`` options, the same for every lane. Page indexes
        (``write_page_index=True``) cannot be stitched and are refused.

    Each :meth:`write_table` call goes whole to the next lane (pass one row
    group's rows with ``row_group_size``); a lane's failure surfaces at the
    next call or at :meth:`close`, and leaves no part file behind.
    """

    def __init__(
        self, where: str | os.PathLike[str], schema: pa.Schema, *, lanes: int = 2, durable: bool = False,
        footer_only: Mapping[bytes, bytes] | None = None, **kwargs: Any,
    ) -> None:
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be an integer >= 1, got {lanes!r}")
        if kwargs.get("write_page_index"):
            raise ValueError("page indexes store absolute offsets and cannot be stitched: write them with one writer")
        self.path = Path(where)
        self._schema, self._kwargs = schema, kwargs
        self._lanes: list[_Lane] = []
        self._max_lanes = lanes
        self._durable = durable
        self._footer_only = footer_only
        self._order: list[int] = []  # lane of each write_table call
        self._closed = False

    def _lane(self, i: int) -> _Lane:
        while len(self._lanes) <= i:  # lanes start on first use: a one-row-group file has no parts
            j = len(self._lanes)
            path = self.path if j == 0 else self.path.with_name(f".{self.path.name}.part{j}-{uuid.uuid4().hex[:8]}")
            self._lanes.append(_Lane(path, self._schema, self._kwargs, sync=self._durable and j == 0,
                                     footer_only=self._footer_only if j == 0 else None))
        return self._lanes[i]

    def write_table(self, table: pa.Table, row_group_size: int | None = None) -> None:
        """Queue ``table`` on the next lane (blocks while that lane is still busy with its last table)."""
        if self._closed:
            raise ValueError("the writer is closed")
        lane = len(self._order) % self._max_lanes
        self._lane(lane).put(table, row_group_size or max(1, table.num_rows))
        self._order.append(lane)

    def close(self) -> None:
        """Wait for every lane, then stitch the parts into the target file."""
        if self._closed:
            return
        self._closed = True
        if not self._lanes:
            self._lane(0)
        try:
            for lane in self._lanes:
                lane.finish()
            for lane in self._lanes:
                if lane.error is not None:
                    raise lane.error
            if len(self._lanes) > 1:
                _stitch(self._lanes, self._order)
        finally:
            for lane in self._lanes[1:]:
                with contextlib.suppress(FileNotFoundError):
                    lane.path.unlink()

    def abort(self) -> None:
        """Stop every lane and remove the part files, without stitching (the target stays unfinished)."""
        if self._closed:
            return
        self._closed = True
        for lane in self._lanes:
            lane.finish()
        for lane in self._lanes[1:]:
            with contextlib.suppress(FileNotFoundError):
                lane.path.unlink()

    def __enter__(self) -> ParallelParquetWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller's error wins; the unfinished target is the caller's to discard
            self.abort()


#: What stitching reads of a footer (FileMetaData): the row count and, per row group, its
#: row count, offset and ordinal, and per column chunk its offsets (and page index
#: offsets, which it refuses); everything else is copied as it was (thrift_compact.Raw).
_STITCH_KEEP: Keep = {
    3: None,
    4: {  # row_groups
        1: {2: None, 3: dict.fromkeys(_CHUNK_OFFSETS), **dict.fromkeys(_PAGE_INDEX)},  # columns
        3: None, 5: None, 7: None,
    },
}


def _footer(path: Path) -> tuple[list[Field], int]:
    """``(FileMetaData decoded as far as stitching needs, byte offset where it starts)`` of a Parquet file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < 12:
            raise CorruptFileError(f"{str(path)!r} is too short for a Parquet file ({size} bytes)")
        f.seek(size - 8)
        tail = f.read(8)
        if tail[4:] != _MAGIC:
            raise CorruptFileError(f"{str(path)!r} does not end with PAR1 (an encrypted or unfinished file)")
        (length,) = struct.unpack("<I", tail[:4])
        start = size - 8 - length
        if start < 4:
            raise CorruptFileError(f"{str(path)!r}: its footer length {length} exceeds the file")
        f.seek(start)
        fields, _ = decode_struct(f.read(length), keep=_STITCH_KEEP)
    return fields, start


def _get(fields: list[Field], fid: int) -> Field | None:
    return next((f for f in fields if f.id == fid), None)


def _shift(row_group: list[Field], by: int) -> None:
    """Move a row group's byte offsets ``by`` bytes further into the file."""
    offset = _get(row_group, 5)
    if offset is not None:
        offset.value += by
    columns = _get(row_group, 1)
    for chunk in columns.value.items if columns is not None else ():
        if any(_get(chunk, fid) is not None for fid in _PAGE_INDEX):
            raise ValueError("a part holds a page index: its offsets cannot be moved")
        file_offset = _get(chunk, 2)
        if file_offset is not None and file_offset.value > 0:
            file_offset.value += by
        meta = _get(chunk, 3)
        if meta is None:
            continue
        for fid in _CHUNK_OFFSETS:
            field = _get(meta.value, fid)
            if field is not None:
                field.value += by


def _copy_range(src: Path, start: int, stop: int, dst: Any) -> None:
    """Append ``src[start:stop]`` to the open file ``dst`` (in the kernel where possible)."""
    with open(src, "rb") as f:
        f.seek(start)
        left = stop - start
        copy_range = getattr(os, "copy_file_range", None)
        if copy_range is not None:
            dst.flush()
            try:
                while left > 0:
                    done = copy_range(f.fileno(), dst.fileno(), left, start + (stop - start - left), None)
                    if done == 0:
                        break
                    left -= done
            except OSError:  # a filesystem without it: copy the rest through user space
                pass
            dst.seek(0, os.SEEK_END)  # the kernel moved the descriptor's offset under the buffered file
        if left > 0:
            f.seek(stop - left)
            shutil.copyfileobj(_Limited(f, left), dst, 8 << 20)


class _Limited:
    """A read-only view of the next ``left`` bytes of a file (for ``shutil.copyfileobj``)."""

    def __init__(self, f: Any, left: int) -> None:
        self.f, self.left = f, left

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return bytes(data)


def _stitch(lanes: list[_Lane], order: list[int]) -> None:
    """Append every part to lane 0's file and write one footer over all row groups."""
    footers = [_footer(lane.path) for lane in lanes]
    base, base_end = footers[0]
    groups: list[list[list[Field]]] = []  # per lane: its row groups in the order written
    with open(lanes[0].path, "r+b") as out:
        out.truncate(base_end)
        out.seek(base_end)
        for j, (meta, end) in enumerate(footers):
            found = _get(meta, 4)
            mine = list(found.value.items) if found is not None else []
            if j > 0:
                by = out.tell() - len(_MAGIC)
                _copy_range(lanes[j].path, len(_MAGIC), end, out)
                for group in mine:
                    _shift(group, by)
            groups.append(mine)
        ordered = _in_call_order(lanes, order, groups)
        for i, group in enumerate(ordered):
            ordinal = _get(group, 7)
            if ordinal is not None:
                ordinal.value = i
        total = sum(_rows(g) for g in ordered)
        merged = [f for f in base if f.id not in (3, 4)]
        merged += [Field(3, I64, total), Field(4, LIST, Seq(STRUCT, ordered))]
        merged.sort(key=lambda f: f.id)
        footer = encode_struct(merged)
        out.write(footer + struct.pack("<I", len(footer)) + _MAGIC)


def _in_call_order(lanes: list[_Lane], order: list[int], groups: list[list[list[Field]]]) -> list[list[Field]]:
    """The row groups of all lanes in the order their ``write_table`` calls came."""
    if [sum(lane.groups) for lane in lanes] != [len(g) for g in groups]:
        raise CorruptFileError("a Parquet part holds other row groups than were written to it")
    taken = [0] * len(lanes)
    calls = [iter(lane.groups) for lane in lanes]
    ordered: list[list[Field]] = []
    for lane in order:
        count = next(calls[lane])
        ordered += groups[lane][taken[lane] : taken[lane] + count]
        taken[lane] += count
    return ordered


def _rows(group: list[Field]) -> int:
    """Rows of a decoded RowGroup."""
    field = _get(group, 3)
    return int(field.value) if field is not None else 0
