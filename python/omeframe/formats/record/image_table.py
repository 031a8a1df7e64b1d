"""An open record table: random takes and full decodes of its pixels, fast.

:class:`ImageTable` keeps a Parquet table memory-mapped and, when the file
carries a pixel index, serves ``to_numpy(rows)`` with positional reads of
just those rows' chunk payloads and one multi-frame decode; opening it parses
neither the Parquet footer nor any row group. Tables without an index
(written by other tools, or Vortex) read through Parquet / Vortex and decode
with :func:`~omeframe.formats.record.stack.to_numpy_stack`.
"""

from __future__ import annotations

import mmap
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
from omeframe.formats.record.pixel_index import PixelIndex, check_prefixes, load_index, read_page_values
from omeframe.formats.record.stack import (
    UniformLayout,
    decode_zstd_into,
    scatter_chunks,
    shape_dims,
    stack_dims,
    to_numpy_stack,
)
from omeframe.formats.vortex.file import read_vortex_schema, vortex_num_rows
from omeframe.model.dtypes import to_numpy_dtype
from omeframe.model.errors import CorruptFileError, RowIndexError
from omeframe.storage.parquet import open_parquet

if TYPE_CHECKING:
    import pyarrow.parquet as pq

__all__ = ["ImageTable", "open_table", "normalize_rows"]


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
    if len(np.unique(arr)) != arr.size:
        u, counts = np.unique(arr, return_counts=True)
        raise RowIndexError(f"row {int(u[counts > 1][0])} is requested twice from {name}; pass each row once")
    return arr


class ImageTable:
    """A record table opened for reading pixels by row.

    Parameters
    ----------
    path
        A Parquet or Vortex record table.
    column
        The OME-Arrow column (default: detected).
    format
        ``"parquet"`` / ``"vortex"`` (default: from the suffix or magic bytes).
    use_index
        Use the pixel index when the file has one (default ``True``); ``False``
        always reads through Parquet.

    Notes
    -----
    An ``ImageTable`` pickles as its path and options: a copy sent to a
    worker process (a ``DataLoader`` worker, a Dask task) reopens the file
    there.

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
    ) -> None:
        self._path = os.fspath(path)
        if not os.path.exists(self._path):
            raise FileNotFoundError(f"no such record table: {self._path!r}")
        if os.path.isdir(self._path):
            raise IsADirectoryError(
                f"{self._path!r} is a directory; open a dataset with omeframe.open_dataset"
            )
        self._column_arg = column
        self._format: FileFormat = detect_format(self._path, format)
        self._use_index = use_index
        self._mm: mmap.mmap | None = None
        self._index: PixelIndex | None = None
        self._pf: pq.ParquetFile | None = None
        self._column: str | None = None
        self._num_rows: int | None = None
        self._open()

    def _open(self) -> None:
        if self._format != "parquet":
            return
        with open(self._path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 12:
                raise CorruptFileError(f"{self._path!r} is too short to be a Parquet file ({size} bytes)")
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if self._use_index:
            try:
                self._index = load_index(self._path, self._mm)
            except CorruptFileError as exc:
                warnings.warn(f"{exc}; reading through Parquet instead", UserWarning, stacklevel=3)
                self._index = None
            if self._index is not None:
                self._num_rows = self._index.num_rows

    # -- pickling: reopen in the worker -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self._path, "column": self._column_arg, "format": self._format, "use_index": self._use_index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"], column=state["column"], format=state["format"], use_index=state["use_index"]
        )

    def __repr__(self) -> str:
        return f"ImageTable({self._path!r}, rows={len(self)}, format={self._format!r}, indexed={self.indexed})"

    def _repr_html_(self) -> str:
        """Notebook display: file, format, rows and columns (no pixel is read)."""
        cols = [f.name for f in self.schema]
        rows = [
            ("path", esc(self._path)),
            ("format", esc(f"{self._format}, {fmt_bytes(os.path.getsize(self._path))} on disk")),
            ("rows", esc(f"{len(self):,} images")),
            ("image column", esc(self.column)),
            ("pixel index", "yes: takes read only their rows' chunks" if self.indexed else "no"),
            ("columns", esc(", ".join(shorten(cols)))),
        ]
        return card("omeframe ImageTable", rows)

    def close(self) -> None:
        """Release the memory map and the Parquet reader."""
        if self._pf is not None:
            self._pf.close()
            self._pf = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def __enter__(self) -> ImageTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties ---------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The table's file path."""
        return self._path

    @property
    def format(self) -> FileFormat:
        """``"parquet"`` or ``"vortex"``."""
        return self._format

    @property
    def indexed(self) -> bool:
        """True when takes use the pixel index (no row-group reads)."""
        return self._index is not None

    def _parquet(self) -> pq.ParquetFile:
        if self._pf is None:
            self._pf = open_parquet(self._path)
        return self._pf

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the table."""
        if self._format == "parquet":
            return self._parquet().schema_arrow
        return read_vortex_schema(self._path)

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
                self._num_rows = vortex_num_rows(self._path)
        return self._num_rows

    @property
    def num_rows(self) -> int:
        """Number of images (rows)."""
        return len(self)

    # -- reads --------------------------------------------------------------------------
    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Read the whole table (or some ``columns``) as Arrow."""
        return read_record_table(self._path, columns=columns, format=self._format)

    def take(self, rows: Any, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows ``rows`` (in that order) as an Arrow table of records and ``columns``.

        Raises
        ------
        RowIndexError
            For rows out of range, negative or repeated.
        """
        idx = normalize_rows(rows, len(self), repr(self._path))
        if self._index is not None and self._mm is not None and len(idx):
            return self._take_records(idx, columns)
        return read_record_table(self._path, columns=columns, rows=idx.tolist(), format=self._format)

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
            part = pf.read_row_groups(used.tolist(), columns=keep)
        except (pa.ArrowInvalid, OSError) as exc:
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
        index, mm = self._index, self._mm
        assert index is not None and mm is not None
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
        if index.pages is not None:
            data = read_page_values(mm, index, chunk_ids, what=repr(self._path)).tobytes()
        else:
            offs = index.offsets[chunk_ids]
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
        """
        d = stack_dims(dims)
        n = len(self)
        idx = np.arange(n, dtype=np.int64) if rows is None else normalize_rows(rows, n, repr(self._path))
        if self._index is not None and self._mm is not None:
            out6 = self._take_indexed(idx)
            if out6 is not None:
                res = shape_dims(out6, d)
                return res if dtype is None else res.astype(dtype)
        if rows is None:
            col = self.read([self.column])[self.column]
        else:
            col = read_record_table(self._path, columns=[self.column], rows=idx.tolist(), format=self._format)[
                self.column
            ]
        return to_numpy_stack(col, dims=d, dtype=dtype)

    def _take_indexed(self, idx: np.ndarray) -> np.ndarray | None:
        index = self._index
        mm = self._mm
        assert index is not None and mm is not None
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
            flat = target.reshape(-1).view(np.uint8).reshape(len(chunk_ids), index.value_size)
            read_page_values(mm, index, chunk_ids, what=what, out=flat)
            if not whole:
                scatter_chunks(target, ulay, out6)
            return out6
        if ulay.codec != "zstd":
            return None  # an index over uncompressed pages holds zstd frames only (IndexBuilder)
        starts = index.offsets[chunk_ids]
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
) -> ImageTable:
    """Open a record table for reading pixels by row (see :class:`ImageTable`).

    Example
    -------
    >>> import numpy as np, omeframe as of, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "crops.parquet")
    >>> _ = of.write_table(path, np.ones((5, 3, 16, 16), np.uint16), dim_order="CYX")
    >>> of.open_table(path).to_numpy().shape
    (5, 3, 16, 16)
    """
    return ImageTable(path, column=column, format=format, use_index=use_index)
