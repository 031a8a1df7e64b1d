"""An open record table: random takes and full decodes of its pixels, fast.

:class:`ImageTable` keeps a Parquet table memory-mapped and, when the file
carries a pixel index, serves ``to_numpy(rows)`` with positional reads of
just those rows' chunk payloads and one multi-frame decode; opening it parses
neither the Parquet footer nor any row group. Tables without an index
(written by other tools, or Vortex) read through Parquet / Vortex and decode
with :func:`~omeframe.formats.record.stack.to_numpy_stack`.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa

from omeframe.engine.display import card, esc, fmt_bytes, shorten
from omeframe.formats.record.decode import _flat_struct
from omeframe.formats.record.files import (
    FileFormat,
    detect_format,
    find_record_column,
    read_record_table,
)
from omeframe.formats.record.kept_blocks import fixed_blocks, take_from_blocks
from omeframe.formats.record.pixel_index import (
    _MAGIC,
    _TRAILER,
    PixelIndex,
    check_prefixes,
    load_index,
    read_page_values,
)
from omeframe.formats.record.stack import (
    UniformLayout,
    decode_zstd_into,
    scatter_chunks,
    shape_dims,
    stack_dims,
    to_numpy_stack,
)
from omeframe.formats.record.vortex_pixels import take_vortex_stack
from omeframe.formats.record.vortex_splits import split_bounds, take_from_splits
from omeframe.formats.vortex.file import read_vortex_schema, read_vortex_table, vortex_num_rows
from omeframe.model.columns import check_column_name, check_columns
from omeframe.model.dtypes import output_dtype, to_numpy_dtype
from omeframe.model.errors import CorruptFileError, FileChangedError, RowIndexError, reraise_access_error
from omeframe.storage.files import file_key, file_version
from omeframe.storage.parquet import open_parquet, read_parquet_rows
from omeframe.storage.parquet_footer import check_metadata
from omeframe.storage.prefetch import CAN_ADVISE, ResidencyCheck, will_need
from omeframe.storage.remote import RemoteFile, open_remote_file
from omeframe.storage.url import check_storage_options, parse_location

if TYPE_CHECKING:
    import pyarrow.parquet as pq

__all__ = ["ImageTable", "open_table", "normalize_rows"]

#: Bytes read from the end of a remote Parquet table when it is opened: the
#: footer and, in most tables, the pixel index in front of it (one request).
REMOTE_TAIL_BYTES = 256 << 10


#: mmap keeps its own copy of the descriptor unless told not to (Python 3.13+); the table keeps one anyway.
_NO_FD_COPY: dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}


def normalize_rows(rows: Any, num_rows: int, name: str) -> np.ndarray:
    """Row indices as a validated ``int64`` array: in range, no negatives, no duplicates.

    Raises
    ------
    RowIndexError
        For an index outside ``0..num_rows-1`` or a repeated index (an ``IndexError``).
    TypeError
        For non-integer indices.
    """
    arr = np.asarray(rows)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        raise TypeError(f"rows must be integers, got {arr.dtype} values")
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    bad = (arr < 0) | (arr >= num_rows)
    if bad.any():
        first = int(arr[np.flatnonzero(bad)[0]])
        raise RowIndexError(
            f"row {first} is out of range for {name}, which has {num_rows} rows "
            f"(valid 0..{num_rows - 1}; negative indices are not allowed)"
        )
    ordered = np.sort(arr)
    twice = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(twice):
        raise RowIndexError(f"row {int(ordered[twice[0]])} is requested twice from {name}; pass each row once")
    return arr


# Takes of up to this many chunks advise the kernel of their byte ranges first (one call per
# range); larger reads are scans, which the kernel's sequential readahead already serves.
_ADVISE_MAX_CHUNKS = 1 << 16


_T = TypeVar("_T")

_OPEN_AGAIN = "open it again (omeframe.open_table) to read its current version"


def _table_changed(path: str, what: str) -> FileChangedError:
    """``FileChangedError`` (``ESTALE``) for the record table at ``path``: "the record table was <what>"."""
    return FileChangedError(errno.ESTALE, f"the record table was {what}", path)


class ImageTable:
    """A record table opened for reading pixels by row.

    Parameters
    ----------
    path
        A Parquet or Vortex record table: a local path or a URL (``s3://``,
        ``gs://``, ``https://`` ...; see :mod:`omeframe.storage.url`).
    column
        The OME-Arrow column (default: detected).
    format
        ``"parquet"`` / ``"vortex"`` (default: from the suffix or magic bytes).
    use_index
        Use the pixel index when the file has one (default ``True``); ``False``
        always reads through Parquet.
    storage_options
        Options of the URL's filesystem (credentials, ``endpoint_url`` ...),
        as in pandas; only for URLs.

    Notes
    -----
    An ``ImageTable`` pickles as its path, options and the version it
    opened: a copy sent to a worker process (a ``DataLoader`` worker, a Dask
    task) reopens the file there, and raises
    :class:`~omeframe.errors.FileChangedError` if the file was replaced or
    rewritten since, rather than serve rows of another version.

    A local table reads the version of its file it was opened on. When the
    file is replaced or rewritten under its name while the table is open, a
    Parquet table with a pixel index keeps reading pixels from the version it
    has mapped; any read that would open the file again by its name (a
    Vortex table, Parquet columns other than the pixels, a table without the
    index) raises :class:`~omeframe.errors.FileChangedError` instead of
    reading the new version. A file rewritten in place (``cp`` over it)
    changes the bytes under the map: takes from the map check the mapped
    file's size and modification time before and after reading, and raise
    ``FileChangedError`` too. Open the table again to read the new version.

    A remote table is read by byte ranges, never downloaded whole. Opening a
    Parquet table reads its last :data:`REMOTE_TAIL_BYTES` (footer and pixel
    index; one more request when they are larger); a take through the pixel
    index then fetches only its rows' chunk payloads (or the compressed
    pages holding them), ranges close together merged into one request and
    the requests sent at once, plus the row groups' other, small leaves. A
    Vortex table is opened through its footer and reads only the segments of
    the columns and rows asked for.

    Example
    -------
    >>> import numpy as np, omeframe as of, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "crops.parquet")
    >>> _ = of.write_table(path, np.zeros((10, 2, 8, 8), np.uint8), dim_order="CYX")
    >>> t = of.open_table(path)
    >>> t.to_numpy([3, 1]).shape
    (2, 2, 8, 8)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        column: str | None = None,
        format: str | None = None,
        use_index: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_column_name(column, "column", optional=True)
        self._column_arg = column
        self._use_index = use_index
        self._storage_options = dict(storage_options or {})
        self._mm: mmap.mmap | None = None
        self._fd: int | None = None  # the mapped file's descriptor
        self._close_fd: weakref.finalize | None = None
        self._mapped_key: tuple[Any, ...] | None = None  # file_key of the version mapped (kept blocks key on it)
        self._resident = ResidencyCheck()  # the map wholly cached: takes skip the read-ahead advice
        self._index: PixelIndex | None = None
        self._pf: pq.ParquetFile | None = None
        # pyarrow's ParquetFile is not safe for reads from several threads at once (its read-range
        # cache, its column readers): reads through the one this table keeps go one at a time
        self._pf_lock = threading.RLock()
        self._column: str | None = None
        self._column_names: tuple[str, ...] | None = None
        self._num_rows: int | None = None
        self._remote: RemoteFile | None = None
        self._meta: pq.FileMetaData | None = None
        self._schema: pa.Schema | None = None  # of a mapped Parquet file, read without the footer check
        self._row_nbytes: int | None = None  # decoded bytes of one image, once a take has shown it
        self._version: tuple[int, int, int, int] | None = None  # of the local file this table reads
        loc = parse_location(path)
        if loc is not None:
            self._path = loc.url
            self._remote = open_remote_file(loc.url, self._storage_options)
            self._format: FileFormat = self._remote_format(format)
            self._open_remote()
            self._check_column_arg()
            return
        check_storage_options(self._storage_options, path)
        self._path = os.fspath(path)
        if not os.path.exists(self._path):
            raise FileNotFoundError(f"no such record table: {self._path!r}")
        if os.path.isdir(self._path):
            raise IsADirectoryError(
                f"{self._path!r} is a directory; open a dataset with omeframe.open_dataset"
            )
        self._format = detect_format(self._path, format)
        self._version = file_version(os.stat(self._path))
        self._open()
        self._check_column_arg()

    def _check_column_arg(self) -> None:
        """A ``column=`` given must name an OME-Arrow column now: takes through the pixel index never ask."""
        if self._column_arg is not None:
            self.column  # noqa: B018 - raises SchemaError / warns as find_record_column does

    def _remote_format(self, format: str | None) -> FileFormat:
        """The format from ``format``, the URL's suffix, else the object's first bytes."""
        try:
            return detect_format(self._path.split("?", 1)[0], format)
        except ValueError:
            if format is not None:
                raise
        assert self._remote is not None
        head = self._remote.read_range(0, 4)
        if head == b"PAR1":
            return "parquet"
        if head == b"VTXF":
            return "vortex"
        raise CorruptFileError(
            f"{self._path!r} is neither a Parquet nor a Vortex file (first bytes {head!r}); "
            "pass format='parquet' or format='vortex' if the name misleads"
        )

    def _open_remote(self) -> None:
        """Read the footer (and pixel index) of a remote Parquet table from its tail."""
        import pyarrow.parquet as pq

        f = self._remote
        assert f is not None
        if self._format != "parquet":
            return
        size = f.size
        if size < 12:
            raise CorruptFileError(f"{self._path!r} is too short to be a Parquet file ({size} bytes)")
        n = min(size, REMOTE_TAIL_BYTES)
        tail = f.read_range(size - n, n)
        if tail[-4:] != b"PAR1":
            raise CorruptFileError(f"{self._path!r} is not a Parquet file (no PAR1 magic at its end)")
        footer_len = struct.unpack_from("<I", tail, n - 8)[0]
        need = min(size, footer_len + 8 + _TRAILER.size)
        if need > n:
            n = need
            tail = f.read_range(size - n, n)
        if footer_len + 8 > size:
            raise CorruptFileError(f"{self._path!r}: its footer length exceeds the file (truncated?)")
        try:
            self._meta = pq.read_metadata(pa.BufferReader(tail[n - 8 - footer_len :]))
            check_metadata(self._meta, repr(self._path), tail[n - 8 - footer_len : n - 8])
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{self._path!r}: unreadable Parquet footer: {exc}") from exc
        self._num_rows = int(self._meta.num_rows)
        if not self._use_index:
            return
        at = size - 8 - footer_len - _TRAILER.size
        if at < 4 or at < size - n:
            return
        magic, off, length, _, _ = _TRAILER.unpack_from(tail, at - (size - n))
        if magic != _MAGIC:
            return
        buf = mmap.mmap(-1, size)  # sparse: only the pages written below use memory
        try:
            buf[size - n :] = tail
            if 0 <= off < size - n and off + length == at:
                buf[off : size - n] = f.read_range(off, size - n - off)
            try:
                self._index = load_index(self._path, buf)
            except CorruptFileError as exc:
                warnings.warn(f"{exc}; reading through Parquet instead", UserWarning, stacklevel=4)
                self._index = None
        finally:
            buf.close()

    def _chunk_buffer(self, chunk_ids: np.ndarray) -> mmap.mmap:
        """A sparse map of the remote file holding the bytes ``chunk_ids`` are read from.

        Raw payloads are read with their 4-byte length prefixes, compressed
        pages whole; ranges that overlap or touch are merged here (vectorised),
        close ones into one request by :meth:`RemoteFile.read_ranges`.
        """
        f = self._remote
        assert f is not None
        starts, stops = self._chunk_ranges(chunk_ids)
        buf = mmap.mmap(-1, max(1, f.size))
        if not len(starts):
            return buf
        order = np.argsort(starts, kind="stable")
        starts, stops = starts[order], stops[order]
        reach = np.maximum.accumulate(stops)
        first = np.flatnonzero(np.concatenate([[True], starts[1:] > reach[:-1]]))
        last = np.concatenate([first[1:] - 1, [len(starts) - 1]])
        runs = list(zip(starts[first].tolist(), reach[last].tolist(), strict=True))
        try:
            for (a, _), block in zip(runs, f.read_ranges(runs), strict=True):
                buf[a : a + len(block)] = block
        except BaseException:
            buf.close()
            raise
        return buf

    def _pixel_buffer(self, chunk_ids: np.ndarray) -> Any:
        """What pixel payloads are read from: the file's memory map, or a remote file's sparse map.

        For a take from the memory map, the kernel is first told every byte
        range the take will touch, so that ranges not in the page cache are
        read from disk concurrently rather than one page fault at a time.
        """
        if self._mm is None:
            return self._chunk_buffer(chunk_ids)
        fd = self._fd
        if CAN_ADVISE and fd is not None and len(chunk_ids) <= _ADVISE_MAX_CHUNKS and not self._resident(self._mm):
            self._resident.advised(will_need(fd, *self._chunk_ranges(chunk_ids)))
        return self._mm

    def _chunk_ranges(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, stops)`` of the file bytes holding ``chunk_ids``: their pages, or length-prefixed frames."""
        index = self._index
        assert index is not None
        if index.pages is not None:
            pages = index.pages
            assert pages.body_start is not None and pages.body_len is not None
            used = np.unique(np.searchsorted(pages.first_value, chunk_ids, side="right") - 1)
            starts = pages.body_start[used].astype(np.int64)
            return starts, starts + pages.body_len[used].astype(np.int64)
        starts = index.offsets_of(chunk_ids) - 4
        return starts, starts + 4 + index.lengths[chunk_ids].astype(np.int64)

    def _release(self, buf: Any) -> None:
        if buf is not self._mm:
            buf.close()

    @contextlib.contextmanager
    def _reading(self, chunk_ids: np.ndarray) -> Iterator[Any]:
        """The buffer the payloads of ``chunk_ids`` are read from (:meth:`_pixel_buffer`), checked around the read.

        Before the read, and after it (or after a read that failed), a mapped
        file must not have been rewritten in place (:meth:`_check_mapped`):
        a truncated file is never read past its end, and bytes of another
        version are never returned.
        """
        self._check_mapped()
        buf = self._pixel_buffer(chunk_ids)
        try:
            yield buf
        except Exception:
            self._check_mapped()  # a read that failed on bytes rewritten under the map says so
            raise
        finally:
            self._release(buf)
        self._check_mapped()

    @property
    def _has_index(self) -> bool:
        return self._index is not None and (self._mm is not None or self._remote is not None)

    def _read_fallback(self, columns: Sequence[str] | None, rows: Sequence[int] | None) -> pa.Table:
        """Columns / rows through Parquet or Vortex (no pixel index)."""
        if self._remote is None:
            self._check_version()  # before too: a whole read of another version could be long
            return self._by_path(lambda p: read_record_table(p, columns=columns, rows=rows, format=self._format))
        if self._format == "vortex":
            return read_vortex_table(self._remote, columns=list(columns) if columns else None, rows=rows)
        with self._pf_lock:
            pf = self._parquet()
            if rows is not None:
                return read_parquet_rows(pf, rows, columns)
            return pf.read(columns=list(columns) if columns else None)

    def _open(self) -> None:
        if self._format != "parquet":
            return
        # The descriptor stays open beside the map: its fstat shows a rewrite in place (_check_mapped).
        fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            if size < 12:
                raise CorruptFileError(f"{self._path!r} is too short to be a Parquet file ({size} bytes)")
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ, **_NO_FD_COPY)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._close_fd = weakref.finalize(self, os.close, fd)
        self._mapped_key = file_key(self._path, st)
        self._version = file_version(st)  # what the map holds, even if the file changed since __init__
        if self._use_index:
            try:
                self._index = load_index(self._path, self._mm)
            except CorruptFileError as exc:
                self._check_mapped()  # not damage: the file was rewritten while it was being opened
                warnings.warn(f"{exc}; reading through Parquet instead", UserWarning, stacklevel=3)
                self._index = None
            self._check_mapped()
            if self._index is not None:
                self._num_rows = self._index.num_rows

    # -- pickling: reopen in the worker -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self._path, "column": self._column_arg, "format": self._format, "use_index": self._use_index,
                "storage_options": self._storage_options, "version": self._pinned()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"], column=state["column"], format=state["format"], use_index=state["use_index"],
            storage_options=state.get("storage_options"),
        )
        sent = state.get("version")
        if sent is not None and self._pinned() != sent:
            self.close()
            raise _table_changed(
                self._path,
                "replaced or rewritten since the table sent to this process was opened (its rows and its "
                "copies here would come from different versions); open it again (omeframe.open_table) and send that",
            )

    def _pinned(self) -> Any:
        """What a copy in another process must find at the path: the inode, size and mtime of a local file
        (not its device, which differs between machines sharing a file system), or an object's version."""
        if self._remote is not None:
            return self._remote._version
        return None if self._version is None else self._version[1:]

    def __repr__(self) -> str:
        return f"ImageTable({self._path!r}, rows={len(self)}, format={self._format!r}, indexed={self.indexed})"

    def _repr_html_(self) -> str:
        """Notebook display: file, format, rows and columns (no pixel is read)."""
        cols = [f.name for f in self.schema]
        rows = [
            ("path", esc(self._path)),
            ("format", esc(f"{self._format}, {fmt_bytes(self._size())} {'stored' if self._remote else 'on disk'}")),
            ("rows", esc(f"{len(self):,} images")),
            ("image column", esc(self.column)),
            ("pixel index", "yes: takes read only their rows' chunks" if self.indexed else "no"),
            ("columns", esc(", ".join(shorten(cols)))),
        ]
        return card("omeframe ImageTable", rows)

    def _size(self) -> int:
        if self._remote is not None:
            return self._remote.size
        return self._version[2] if self._version is not None else os.path.getsize(self._path)

    def close(self) -> None:
        """Release the memory map and the Parquet reader."""
        with self._pf_lock:  # not under a read of another thread
            if self._pf is not None:
                self._pf.close()
                self._pf = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._close_fd is not None:
            self._close_fd()
            self._close_fd = None
            self._fd = None

    def __enter__(self) -> ImageTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_version(self) -> None:
        """Raise :class:`FileChangedError` when the local file is no longer the version this table reads."""
        if self._version is None:
            return
        try:
            now = file_version(os.stat(self._path))
        except FileNotFoundError:
            now = None
        if now != self._version:
            raise _table_changed(self._path, f"replaced, rewritten or removed since it was opened; {_OPEN_AGAIN}")

    def _check_mapped(self) -> None:
        """Raise :class:`FileChangedError` when the file this table maps was modified in place.

        A replacement by rename leaves the map on the version it holds, which
        stays readable; a rewrite of the same file (``cp``, a writer that
        truncates and writes) changes the bytes under the map, which its
        descriptor's size and modification time show. Checked before a read
        of the map (never read a truncated file past its end) and after it.
        """
        if self._fd is None or self._version is None:
            return
        st = os.fstat(self._fd)
        if st.st_size != self._version[2] or st.st_mtime_ns != self._version[3]:
            raise _table_changed(
                self._path,
                "rewritten in place since it was opened (its bytes under this table's memory map changed); "
                + _OPEN_AGAIN,
            )

    def _by_path(self, read: Callable[[str], _T]) -> _T:
        """``read(path)``, checked to have read the version of the file this table was opened on.

        The check runs once the read is done (or has failed, perhaps on the
        mix of versions it met): a file that changed before or during the
        read is no longer the version then, as versions only move on.
        """
        try:
            out = read(self._path)
        except Exception:
            self._check_version()
            raise
        self._check_version()
        return out

    # -- properties ---------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The table's file path (or URL)."""
        return self._path

    @property
    def format(self) -> FileFormat:
        """``"parquet"`` or ``"vortex"``."""
        return self._format

    @property
    def block_rows(self) -> int | None:
        """Rows the format reads together, when takes are cheaper inside such a block.

        A local Vortex table reads in splits of 8,192 rows, and a take that walks a
        split decodes it once (see :mod:`omeframe.formats.record.vortex_splits`): the
        split length. ``None`` for Parquet (takes read single images through the
        pixel index) and remote tables. Loaders shuffle blocks of this many rows
        by default (:class:`omeframe.torch.ImageTableIterableDataset`).
        """
        if self._format != "vortex" or self._remote is not None:
            return None
        bounds = self._by_path(split_bounds)
        return int(bounds[0, 1] - bounds[0, 0]) if len(bounds) else None

    @property
    def indexed(self) -> bool:
        """True when takes use the pixel index (no row-group reads)."""
        return self._index is not None

    def _parquet(self) -> pq.ParquetFile:
        with self._pf_lock:  # one file object, however many threads ask first
            if self._pf is None:
                if self._remote is not None:
                    import pyarrow.parquet as pq

                    self._pf = pq.ParquetFile(
                        self._remote, metadata=self._meta, pre_buffer=True, page_checksum_verification=True
                    )
                else:
                    self._pf = self._by_path(open_parquet)
            return self._pf

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the table."""
        if self._format == "parquet":
            if self._pf is None and self._mm is not None:
                return self._mapped_schema()
            return self._parquet().schema_arrow
        if self._remote is not None:
            return read_vortex_schema(self._remote)
        return self._by_path(read_vortex_schema)

    def _mapped_schema(self) -> pa.Schema:
        """The schema from the mapped file's footer, without checking its column-chunk metadata.

        A take through the pixel index needs only the schema (to find the
        image column): it never asks pyarrow for column-chunk metadata, so the
        footer check of :func:`~omeframe.storage.parquet_footer.check_metadata`
        (a few hundred milliseconds for a table of millions of rows) waits
        until a read that does.
        """
        if self._schema is None:
            import pyarrow.parquet as pq

            mm = self._mm
            assert mm is not None
            self._check_mapped()  # a file truncated in place is not read past its end
            try:
                size = len(mm)
                footer_len = struct.unpack_from("<I", mm, size - 8)[0]
                if mm[size - 4 : size] != b"PAR1" or footer_len + 12 > size:
                    raise CorruptFileError(
                        f"{self._path!r} is not a Parquet file (its footer is missing or truncated)")
                try:
                    meta = pq.read_metadata(pa.BufferReader(mm[size - 8 - footer_len : size]))
                except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
                    raise CorruptFileError(f"{self._path!r}: unreadable Parquet footer: {exc}") from exc
            except CorruptFileError:
                self._check_mapped()  # a footer rewritten in place under the map says so
                raise
            self._check_mapped()
            self._schema = meta.schema.to_arrow_schema()
        return self._schema

    @property
    def column(self) -> str:
        """Name of the OME-Arrow column."""
        if self._column is None:
            self._column = find_record_column(self.schema, self._column_arg, source=repr(self._path))
        return self._column

    def __len__(self) -> int:
        if self._num_rows is None:
            if self._format == "parquet":
                self._num_rows = int(self._parquet().metadata.num_rows)
            else:
                self._num_rows = (
                    vortex_num_rows(self._remote) if self._remote is not None else self._by_path(vortex_num_rows)
                )
        return self._num_rows

    def _names(self) -> tuple[str, ...]:
        """The table's column names, read once (a Vortex schema is read from the file on every ``schema``)."""
        if self._column_names is None:
            self._column_names = tuple(self.schema.names)
        return self._column_names

    @property
    def num_rows(self) -> int:
        """Number of images (rows)."""
        return len(self)

    # -- reads --------------------------------------------------------------------------
    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Read the whole table (or some ``columns``) as Arrow.

        Raises
        ------
        KeyError
            For a column the table does not have (``TypeError`` for a string).
        """
        return self._read_fallback(check_columns(columns, self._names(), repr(self._path)), None)

    def take(self, rows: Any, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows ``rows`` (in that order) as an Arrow table of records and ``columns``.

        Raises
        ------
        RowIndexError
            For rows out of range, negative or repeated.
        KeyError
            For a column the table does not have (``TypeError`` for a string).
        """
        idx = normalize_rows(rows, len(self), repr(self._path))
        columns = check_columns(columns, self._names(), repr(self._path))
        if self._has_index and len(idx):
            return self._take_records(idx, columns)
        return self._read_fallback(columns, idx.tolist())

    def _take_records(self, idx: np.ndarray, columns: Sequence[str] | None) -> pa.Table:
        """Rows through the pixel index: every leaf but the pixel bytes from their row groups,
        the pixel bytes by position (a table of small images has large row groups)."""
        pf = self._parquet()
        md = pf.metadata
        wanted = list(columns) if columns is not None else pf.schema_arrow.names
        col = self.column
        pixel_leaf = f"{col}.chunks.list.element.pixel_bytes"
        leaves = [pf.schema.column(i).path for i in range(len(pf.schema))]
        keep = [p for p in leaves if p.split(".")[0] in wanted and p != pixel_leaf]
        sizes = np.asarray([md.row_group(g).num_rows for g in range(md.num_row_groups)], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        groups = np.searchsorted(starts, idx, side="right") - 1
        used = np.unique(groups)
        try:
            with self._pf_lock:
                part = pf.read_row_groups(used.tolist(), columns=keep)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            reraise_access_error(exc)  # a remote object overwritten since it was opened, a failed request
            raise CorruptFileError(f"cannot read row groups {used.tolist()} of {self._path!r}: {exc}") from exc
        # position of each wanted row inside the concatenated groups
        base = np.concatenate([[0], np.cumsum(sizes[used])])
        local = base[np.searchsorted(used, groups)] + (idx - starts[groups])
        part = part.take(pa.array(local))
        if col not in wanted:
            return part.select(wanted)
        rec = part[col].combine_chunks()
        full = pf.schema_arrow.field(col).type
        return part.set_column(part.column_names.index(col), col, self._with_pixels(rec, full, idx))

    def _with_pixels(self, rec: pa.StructArray, full: pa.StructType, idx: np.ndarray) -> pa.StructArray:
        index = self._index
        assert index is not None
        rec = _flat_struct(rec)
        chunks = rec.field("chunks")
        loffs = chunks.offsets.to_numpy().astype(np.int64)
        counts = np.diff(loffs)
        firsts = index.first_chunk[idx]
        if not np.array_equal(counts, index.first_chunk[idx + 1] - firsts):
            raise CorruptFileError(f"{self._path!r}: the pixel index disagrees with the chunk lists")
        chunk_ids = np.repeat(firsts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(
            int(counts.sum())
        )
        lens = index.lengths[chunk_ids]
        with self._reading(chunk_ids) as mm:
            if index.pages is not None:
                data = read_page_values(mm, index, chunk_ids, what=repr(self._path)).tobytes()
            else:
                offs = index.offsets_of(chunk_ids)
                if not check_prefixes(mm, offs, lens):
                    raise CorruptFileError(f"{self._path!r}: the pixel index does not match the file's bytes")
                view = memoryview(mm)
                data = b"".join([view[o : o + n] for o, n in zip(offs.tolist(), lens.tolist(), strict=True)])
                del view
        boffs = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=boffs[1:])
        pixel_bytes = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), len(lens), [None, pa.py_buffer(boffs), pa.py_buffer(data)]
        )
        inner = _flat_struct(chunks.values.slice(int(loffs[0]), int(loffs[-1] - loffs[0])))
        chunk_type = full.field("chunks").type.value_type
        children = [pixel_bytes if f.name == "pixel_bytes" else inner.field(f.name) for f in chunk_type]
        values = pa.StructArray.from_arrays(children, fields=list(chunk_type))
        new_chunks = pa.ListArray.from_arrays(
            pa.array(loffs - loffs[0], pa.int32()), values, type=full.field("chunks").type, mask=chunks.is_null()
        )
        tops = [new_chunks if f.name == "chunks" else rec.field(f.name) for f in full]
        return pa.StructArray.from_arrays(tops, fields=list(full), mask=rec.is_null())

    def to_numpy(self, rows: Any = None, *, dims: str = "CYX", dtype: Any = None) -> np.ndarray:
        """Decode the pixels of ``rows`` (default: all) into one ``(n, *dims)`` array.

        Parameters
        ----------
        rows
            Row indices, in the order wanted (no repeats); ``None`` for every row.
        dims
            Axes of each image in the output, from ``TCZYX`` (default ``"CYX"``).
            Axes left out must have length 1.
        dtype
            Cast the result (default: the stored pixel type).

        Raises
        ------
        RowIndexError
            For rows out of range, negative or repeated.
        ValueError
            When the selected images differ in shape.
        PixelPayloadError, CorruptFileError
            When stored bytes are damaged (checksums and length prefixes are
            checked on every read).

        Notes
        -----
        On a local table, random takes after the first from a table whose
        decoded images fit in half of the shared cache
        (:func:`omeframe.set_cache_bytes`), and on a Vortex table also takes
        that walk it in order, decode blocks of rows whole once and copy
        later rows out of them (:mod:`omeframe.formats.record.kept_blocks`).
        """
        d = stack_dims(dims)
        dtype = None if dtype is None else output_dtype(dtype)  # DtypeError for a name numpy does not know
        n = len(self)
        idx = np.arange(n, dtype=np.int64) if rows is None else normalize_rows(rows, n, repr(self._path))
        if not len(idx) and n and not self._has_index:  # no rows: an empty stack of the images' shape (row 0's)
            first = self.to_numpy([0], dims=dims, dtype=dtype)
            return np.empty((0, *first.shape[1:]), dtype=first.dtype)
        if self._has_index:
            if rows is not None and self._mapped_key is not None:
                # a sparse take from a small table: rows of decoded blocks kept in the shared cache
                # (see omeframe.formats.record.kept_blocks; consecutive rows gather cheaply through the pages).
                # Keyed by the version this table maps, which its blocks are decoded from, not by
                # whatever the path names now.
                key = ("parquet-block", *self._mapped_key, self.column)
                kept = take_from_blocks(
                    key, fixed_blocks(n), idx, d, self._row_nbytes, self._decode_block, keep_dense=False
                )
                if kept is not None:
                    return kept if dtype is None else kept.astype(dtype)
            out6 = self._take_indexed(idx)
            if out6 is not None:
                if len(out6):
                    self._row_nbytes = out6.nbytes // len(out6)
                res = shape_dims(out6, d)
                return res if dtype is None else res.astype(dtype)
        if rows is not None and self._format == "vortex" and self._remote is None:
            # a take dense in its splits: rows of decoded splits kept in the shared cache
            col = self.column
            kept = self._by_path(lambda p: take_from_splits(p, col, idx, d, self._row_nbytes))
            if kept is not None:
                return kept if dtype is None else kept.astype(dtype)
            # a sparse take: only the fields pixel decoding needs, from the lazily scanned file
            stacked = self._by_path(lambda p: take_vortex_stack(p, col, idx))
            if stacked is not None:
                out6, order = stacked
                self._row_nbytes = out6.nbytes // max(len(out6), 1)
                fast = shape_dims(out6 if order is None else out6[order], d)  # back to the order asked for
                return fast if dtype is None else fast.astype(dtype)
        if rows is None:
            col = self.read([self.column])[self.column]
        else:
            col = self._read_fallback([self.column], idx.tolist())[self.column]
        out = to_numpy_stack(col, dims=d)
        if len(out):
            self._row_nbytes = out.nbytes // len(out)
        return out if dtype is None else out.astype(dtype)

    def _decode_block(self, lo: int, hi: int) -> np.ndarray | None:
        """Rows ``lo:hi`` as one ``(hi - lo, T, C, Z, Y, X)`` stack through the pixel index (checked)."""
        return self._take_indexed(np.arange(lo, hi, dtype=np.int64))

    def _take_indexed(self, idx: np.ndarray) -> np.ndarray | None:
        index = self._index
        assert index is not None
        lay_ids = index.record_layout[idx]
        if len(idx) and (lay_ids != lay_ids[0]).any():
            return None  # mixed layouts among these rows: the general path stacks them
        lay = index.layouts[int(lay_ids[0])] if len(idx) else index.layouts[0] if index.layouts else None
        if lay is None or len(set(lay.codecs)) != 1:
            return None
        dtype = to_numpy_dtype(lay.dtype)
        ulay = UniformLayout(shape=lay.shape, dtype=dtype, keys=lay.keys, codec=lay.codecs[0])
        k = lay.num_chunks
        chunk_ids = (index.first_chunk[idx][:, None] + np.arange(k)).reshape(-1)
        out6 = np.empty((len(idx), *lay.shape), dtype=dtype)
        sizes = np.tile(ulay.chunk_bytes(), len(idx))
        whole = ulay.whole_blocks
        target = out6 if whole else np.empty(int(sizes.sum()), dtype=np.uint8)
        what = f"{self._path!r}"
        if index.pages is not None:
            if ulay.codec is not None or (sizes != index.value_size).any():
                return None
        elif ulay.codec != "zstd":
            return None  # an index over uncompressed pages holds zstd frames only (IndexBuilder)
        with self._reading(chunk_ids) as mm:
            if index.pages is not None:
                flat = target.reshape(-1).view(np.uint8).reshape(len(chunk_ids), index.value_size)
                read_page_values(mm, index, chunk_ids, what=what, out=flat)
            else:
                starts = index.offsets_of(chunk_ids)
                lengths = index.lengths[chunk_ids]
                if not check_prefixes(mm, starts, lengths):
                    raise CorruptFileError(
                        f"{self._path!r}: the pixel index does not match the file's bytes (was the file "
                        "modified in place?); reopen with use_index=False or rewrite the table"
                    )
                decode_zstd_into(target, mm, starts, lengths, sizes, what=what)
        if not whole:
            scatter_chunks(target, ulay, out6)
        return out6


def open_table(
    path: str | os.PathLike[str],
    *,
    column: str | None = None,
    format: str | None = None,
    use_index: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> ImageTable:
    """Open a record table for reading pixels by row (see :class:`ImageTable`).

    ``path`` may be a URL (``s3://bucket/crops.parquet``, options in
    ``storage_options``): the table is then read by byte ranges, a take
    fetching only its rows' pixel chunks.

    Example
    -------
    >>> import numpy as np, omeframe as of, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "crops.parquet")
    >>> _ = of.write_table(path, np.ones((5, 3, 16, 16), np.uint16), dim_order="CYX")
    >>> of.open_table(path).to_numpy().shape
    (5, 3, 16, 16)
    """
    return ImageTable(path, column=column, format=format, use_index=use_index, storage_options=storage_options)
