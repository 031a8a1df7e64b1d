"""Parquet page CRCs checked by omeframe, at memory speed, on every local read.

Parquet writers may store a CRC-32 of each page's stored bytes in the page
header; omeframe's writers always do. Arrow's reader can check them
(``page_checksum_verification=True``), but with a table-driven CRC that runs
at about 3.5 GB/s on one core: on a full read of a record table of 3×64×64
crops that is a tenth of the time. zlib-ng's CRC-32
(:func:`~omeframe.storage.crc.crc32_function`) runs at about 29 GB/s.

So a local Parquet file is opened as a :class:`CheckedParquetFile`: Arrow's
own check is off, and every read first checks the pages of exactly the column
chunks it is about to decode (the row groups asked for, the leaf columns
asked for) with :func:`~omeframe.storage.crc.crc32_function`, before any of
them is decoded. The page table of a column chunk (where each page body lies,
and its stored CRC) is parsed once per version of a file in a process (kept
for the :data:`CACHED_FILES` files read last, keyed by device, inode, size and
modification time); the CRCs of the bytes are computed on every read, so
bytes that change under a reader are still caught. Once a chunk's pages have
all matched, later reads check the chunk with a single CRC over all of its
bytes, headers included, against the value taken then. A page whose header
carries no CRC (written by another tool without one) is read unchecked, as
Arrow would.

A damaged page raises :class:`~omeframe.model.errors.ChunkChecksumError`
naming the file, row group, column and page; a page header that cannot be
parsed, or page sizes that do not add up to the column chunk's size, raise
:class:`~omeframe.model.errors.CorruptFileError`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from omeframe.model.errors import ChunkChecksumError, CorruptFileError
from omeframe.storage.crc import crc32_function, run_each
from omeframe.storage.parquet_footer import check_metadata
from omeframe.storage.parquet_pages import UnsupportedLayout, read_header, usual_v2_headers

__all__ = ["CACHED_FILES", "CheckedParquetFile", "PageTable", "chunk_pages"]


class PageTable:
    """The pages of one column chunk ``[start, end)`` of a file.

    ``starts``/``lengths`` locate each page body, ``crcs`` hold the CRC-32
    its header stores (``-1``: none). ``whole`` is the CRC-32 of the whole
    chunk (headers and bodies) once every page has matched its own CRC:
    later reads compare one CRC of the chunk against it, and check page by
    page again only when it differs (to name the damaged page).
    """

    __slots__ = ("start", "end", "starts", "lengths", "crcs", "whole")

    def __init__(self, start: int, end: int, starts: np.ndarray, lengths: np.ndarray, crcs: np.ndarray) -> None:
        self.start, self.end = start, end
        self.starts, self.lengths, self.crcs = starts, lengths, crcs
        self.whole: int | None = None


#: How many files' page tables a process keeps (parsing them costs ~60 µs per column chunk).
CACHED_FILES = 64
_TABLES: OrderedDict[tuple[int, ...], dict[tuple[int, int], PageTable]] = OrderedDict()
_TABLES_LOCK = threading.Lock()
#: Checks of at least this many bytes spread their column chunks over the engine's threads.
PARALLEL_CHECK_BYTES = 8 << 20


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _page_tables(st: os.stat_result) -> dict[tuple[int, int], PageTable]:
    """The page tables of one version of a file, shared by every handle on it in this process."""
    key = _identity(st)
    with _TABLES_LOCK:
        found = _TABLES.get(key)
        if found is None:
            found = _TABLES[key] = {}
            while len(_TABLES) > CACHED_FILES:
                _TABLES.popitem(last=False)
        else:
            _TABLES.move_to_end(key)
        return found


#: Page types of data pages (``PageType``), whose values a column chunk counts
_DATA_PAGE, _DATA_PAGE_V2 = 0, 3


def chunk_pages(buf: Any, start: int, end: int, what: str, num_values: int | None = None) -> PageTable:
    """Parse the page headers of the column chunk ``buf[start:end]``.

    Parameters
    ----------
    buf
        The file's bytes (an ``mmap`` or ``bytes``).
    start, end
        The column chunk's first byte (its dictionary page if any, else its
        first data page) and the byte after its last page.
    what
        Names the column chunk in errors.
    num_values
        The values the footer says the chunk holds, checked against the sum
        over its data pages when given (pyarrow reads a chunk's pages whatever
        its footer says; other readers, Polars', trust the footer).

    Raises
    ------
    CorruptFileError
        When a header cannot be parsed, the pages overrun the chunk or hold
        another number of values.

    Example
    -------
    >>> import io, pyarrow as pa, pyarrow.parquet as pq
    >>> sink = io.BytesIO()
    >>> pq.write_table(pa.table({"a": list(range(100))}), sink, write_page_checksum=True)
    >>> cc = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata.row_group(0).column(0)
    >>> start = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
    >>> pages = chunk_pages(sink.getvalue(), start, start + cc.total_compressed_size, "a")
    >>> len(pages.starts), bool((pages.crcs >= 0).all())
    (2, True)
    """
    if start < 0 or end > len(buf) or start > end:
        raise CorruptFileError(f"{what}: the column chunk lies outside the file (bytes {start}..{end} of {len(buf)})")
    blocks: list[np.ndarray] = []
    pos = start
    values = 0
    while pos < end:
        heads, pos = usual_v2_headers(buf, pos, end)
        if heads is not None:  # the v2 data page headers Arrow writes, matched in C and decoded in bulk
            block = np.stack([heads.body, heads.compressed_size, heads.crc, heads.start], axis=1)
            values += int(heads.num_values.sum())
        else:
            try:
                h, body = read_header(buf, pos, end)
            except UnsupportedLayout as exc:
                raise CorruptFileError(f"{what}: the page header at byte {pos} is unreadable ({exc})") from None
            block = np.array([[body, h.compressed_size, -1 if h.crc is None else h.crc, pos]], dtype=np.int64)
            pos = body + h.compressed_size
            if h.type in (_DATA_PAGE, _DATA_PAGE_V2):
                values += h.num_values
        bad = np.flatnonzero((block[:, 1] < 0) | (block[:, 0] + block[:, 1] > end))
        if len(bad):
            size, at = int(block[bad[0], 1]), int(block[bad[0], 3])
            raise CorruptFileError(
                f"{what}: the page at byte {at} claims {size} bytes, past the column chunk's end at {end}"
            )
        blocks.append(block)
    if num_values is not None and values != num_values:
        raise CorruptFileError(
            f"{what}: the pages hold {values} values, the footer says {num_values} (the file is damaged)"
        )
    arr = np.concatenate(blocks) if blocks else np.zeros((0, 4), dtype=np.int64)
    return PageTable(start, end, arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())


def _stored_footer(view: memoryview) -> bytes | None:
    """A copy of the Thrift footer of the mapped Parquet file ``view`` (``None`` if its length does not fit).

    A copy, not a view of the mapping: a writer that changes the file in
    place cannot make the bytes checked differ from the bytes parsed.
    """
    n = len(view)
    if n < 12:
        return None
    length = int.from_bytes(view[n - 8 : n - 4], "little")
    return bytes(view[n - 8 - length : n - 8]) if length + 12 <= n else None


def _parse_footer(footer: bytes) -> pq.FileMetaData:
    """pyarrow's metadata parsed from the Thrift ``footer`` bytes alone (raises ``OSError`` as pyarrow does)."""
    return pq.read_metadata(pa.BufferReader(footer + len(footer).to_bytes(4, "little") + b"PAR1"))


class CheckedParquetFile(pq.ParquetFile):
    """A memory-mapped :class:`pyarrow.parquet.ParquetFile` whose reads check page CRCs first.

    Every ``read``, ``read_row_group``, ``read_row_groups``, ``iter_batches``
    and ``scan_contents`` checks the pages of the column chunks it decodes
    (see the module docstring) and raises
    :class:`~omeframe.model.errors.ChunkChecksumError` before decoding a
    damaged page. Other methods behave as pyarrow's.

    Example
    -------
    >>> import os, tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> path = os.path.join(tempfile.mkdtemp(), "t.parquet")
    >>> pq.write_table(pa.table({"a": [1, 2, 3]}), path, write_page_checksum=True)
    >>> with CheckedParquetFile(path) as pf:
    ...     pf.read()["a"].to_pylist()
    [1, 2, 3]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        # Arrow's own mapping, shared with the reader: the pages the check touches first
        # are the pages Arrow then decodes, so a read faults each page in once, not twice.
        for _ in range(3):
            before = os.stat(self._path)
            self._file = pa.memory_map(self._path)
            if _identity(os.stat(self._path)) == _identity(before):
                break
            self._file.close()  # replaced while it was mapped: map the new version
        else:
            raise OSError(f"{self._path!r} keeps being replaced while it is opened; retry when its writer is done")
        self._view: memoryview | None = memoryview(self._file.read_buffer()).cast("B")
        self._tables = _page_tables(before)
        try:
            # The footer is copied once and both parsed and checked from that copy, so what
            # pyarrow reads is what was checked even if another writer rewrites the file in place.
            footer = _stored_footer(self._view)
            metadata = None if footer is None else _parse_footer(footer)
            super().__init__(self._file, page_checksum_verification=False, metadata=metadata)
            check_metadata(self.metadata, repr(self._path), footer)  # before column metadata
            self._stored_meta = self.schema_arrow.metadata
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # a damaged footer pyarrow could not take
            self.close()
            raise CorruptFileError(
                f"{self._path!r} is not a readable Parquet file (its footer is damaged): {exc}"
            ) from exc
        except BaseException:
            self.close()
            raise

    def close(self, force: bool = False) -> None:
        """Close the file and its mapping."""
        if getattr(self, "reader", None) is not None:
            super().close(force=force)
        if self._view is not None:
            self._view.release()
            self._view = None
        self._file.close()

    def check(self, row_groups: Iterable[int] | None = None, leaves: Sequence[int] | None = None) -> None:
        """Check the page CRCs of the chunks of ``leaves`` (default: all) in ``row_groups`` (default: all).

        Raises
        ------
        ChunkChecksumError
            When a page's bytes do not match its CRC-32, or a column chunk's
            page headers changed since this process last verified it.
        CorruptFileError
            When a page header is unreadable or the pages overrun their column chunk.
        """
        md = self.metadata
        groups = range(md.num_row_groups) if row_groups is None else row_groups
        cols = range(md.num_columns) if leaves is None else leaves
        view = self._view
        if view is None:
            raise ValueError(f"{self._path!r}: the file is closed")
        chunks: list[tuple[int, int, Any, PageTable]] = []
        try:
            for g in groups:
                g = int(g)
                if not 0 <= g < md.num_row_groups:
                    continue  # pyarrow raises its own error for a row group that is not there
                rg = md.row_group(g)
                chunks += [(g, int(c), rg, self._pages(rg, g, int(c))) for c in cols]
        except (pa.ArrowException, UnicodeDecodeError) as exc:  # column metadata of a damaged footer
            raise CorruptFileError(f"{self._path!r}: its footer's column metadata is damaged: {exc}") from exc
        crc32 = crc32_function()

        def one(chunk: tuple[int, int, Any, PageTable]) -> None:
            g, c, rg, pages = chunk
            # A chunk verified page by page before: one CRC over all of it (headers too)
            if pages.whole is not None and crc32(view[pages.start : pages.end]) == pages.whole:
                return
            self._check_pages(view, pages, rg, g, c)

        # Chunks in parallel (the CRC releases the GIL) once there is enough to share
        if sum(pages.end - pages.start for *_, pages in chunks) >= PARALLEL_CHECK_BYTES:
            run_each(one, chunks)
        else:
            for chunk in chunks:
                one(chunk)

    def _check_pages(self, view: memoryview, pages: PageTable, rg: Any, g: int, c: int) -> None:
        crc32 = crc32_function()
        for p, (lo, n, crc) in enumerate(
            zip(pages.starts.tolist(), pages.lengths.tolist(), pages.crcs.tolist(), strict=True)
        ):
            if crc >= 0 and crc32(view[lo : lo + n]) != crc:
                raise ChunkChecksumError(
                    f"{self._path!r}: page {p} of column {rg.column(c).path_in_schema!r} "
                    f"in row group {g} fails its CRC-32 (the file is damaged)"
                )
        whole = crc32(view[pages.start : pages.end])
        # Every page matches its stored CRC, yet the chunk is not what it was when its pages last
        # passed. (Another thread may have checked the same chunk meanwhile and recorded the same
        # value: that is no change.)
        if pages.whole is not None and pages.whole != whole:
            raise ChunkChecksumError(
                f"{self._path!r}: the bytes of column {rg.column(c).path_in_schema!r} in row group {g} changed "
                "since this process first read them (a page header or an unchecked page: the file was "
                "modified in place, or is damaged)"
            )
        pages.whole = whole

    def _pages(self, rg: Any, g: int, c: int) -> PageTable:
        found = self._tables.get((g, c))
        if found is None:
            cc = rg.column(c)
            start = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
            what = f"{self._path!r}: column {cc.path_in_schema!r} in row group {g}"
            assert self._view is not None
            end = int(start + cc.total_compressed_size)
            found = self._tables[(g, c)] = chunk_pages(self._view, int(start), end, what, int(cc.num_values))
        return found

    def _as_stored(self, data: Any) -> Any:
        """``data`` with the metadata of the stored Arrow schema, as ``pq.read_table`` gives it.

        pyarrow's ``ParquetFile`` reads also hand over key-value metadata of the
        footer that the stored schema does not hold (omeframe's footer-only
        key, :data:`~omeframe.model.arrow.METADATA_KEY_FILE`, describes that one
        file); a damaged byte there would otherwise change the table returned.
        """
        if data.schema.metadata == self._stored_meta:  # (None when the stored schema has no metadata)
            return data
        return data.replace_schema_metadata(self._stored_meta)

    def _leaves(self, columns: Any, use_pandas_metadata: bool = False) -> list[int] | None:
        return self._get_column_indices(columns, use_pandas_metadata=use_pandas_metadata)

    def read_row_group(
        self, i: int, columns: Any = None, use_threads: bool = True, use_pandas_metadata: bool = False
    ) -> Any:
        self.check([i], self._leaves(columns, use_pandas_metadata))
        return self._as_stored(super().read_row_group(i, columns, use_threads, use_pandas_metadata))

    def read_row_groups(
        self, row_groups: Any, columns: Any = None, use_threads: bool = True, use_pandas_metadata: bool = False
    ) -> Any:
        self.check(row_groups, self._leaves(columns, use_pandas_metadata))
        return self._as_stored(super().read_row_groups(row_groups, columns, use_threads, use_pandas_metadata))

    def iter_batches(
        self, batch_size: int = 65536, row_groups: Any = None, columns: Any = None, use_threads: bool = True,
        use_pandas_metadata: bool = False,
    ) -> Any:
        self.check(row_groups, self._leaves(columns, use_pandas_metadata))
        batches = super().iter_batches(batch_size, row_groups, columns, use_threads, use_pandas_metadata)
        return (self._as_stored(b) for b in batches)

    def read(self, columns: Any = None, use_threads: bool = True, use_pandas_metadata: bool = False) -> Any:
        self.check(None, self._leaves(columns, use_pandas_metadata))
        return self._as_stored(super().read(columns, use_threads, use_pandas_metadata))

    def scan_contents(self, columns: Any = None, batch_size: int = 65536) -> Any:
        self.check(None, self._leaves(columns))
        return super().scan_contents(columns, batch_size)
