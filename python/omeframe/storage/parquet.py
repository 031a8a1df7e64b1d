"""Parquet I/O for image tables: byte-sized row groups, targeted row reads.

Pixel payload columns are written without Parquet statistics or dictionary
encoding (both are useless on pixel bytes and bloat the footer), and without a
second compression pass when the chunks are already compressed. Row groups are
cut by bytes, so one large image gets a row group of its own and reading row
*k* reads only the row group that holds it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import pyarrow.parquet as pq

from omeframe.model.arrow import METADATA_KEY_FILE
from omeframe.model.errors import ChunkChecksumError, CorruptFileError, RowIndexError, reraise_access_error
from omeframe.storage.atomic import atomic_path
from omeframe.storage.parquet_crc import CheckedParquetFile
from omeframe.storage.parquet_footer import check_metadata

__all__ = [
    "DEFAULT_ROW_GROUP_BYTES",
    "leaf_paths",
    "parquet_codec",
    "footer_facts",
    "without_footer_only",
    "read_errors",
    "write_parquet_table",
    "open_parquet",
    "read_parquet_rows",
    "row_group_of",
]

#: Target uncompressed payload per row group. Small enough that fetching one
#: small image reads little beside it, large enough that a footer of a
#: 100k-row table stays a few hundred KiB (measured ~9 KB of footer per row
#: group of the OME-Arrow struct). Large images always get their own group.
DEFAULT_ROW_GROUP_BYTES = 4 << 20

_PIXEL_LEAVES = ("pixel_bytes", "pixels.list.element")


def leaf_paths(schema: pa.Schema) -> list[str]:
    """Dotted Parquet column paths of every leaf in ``schema``."""
    out: list[str] = []

    def walk(prefix: str, t: pa.DataType) -> None:
        if isinstance(t, pa.BaseExtensionType):  # stored as its storage type
            t = t.storage_type
        if pa.types.is_struct(t):
            for i in range(t.num_fields):
                f = t.field(i)
                walk(f"{prefix}.{f.name}", f.type)
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            walk(f"{prefix}.list.element", t.value_type)
        elif pa.types.is_map(t):
            walk(f"{prefix}.key_value.key", t.key_type)
            walk(f"{prefix}.key_value.value", t.item_type)
        else:
            out.append(prefix)

    for field in schema:
        walk(field.name, field.type)
    return out


def _is_pixel_leaf(path: str) -> bool:
    return path.endswith(_PIXEL_LEAVES)


#: Leaf paths inside a record's nested lists and chunk grid.
_NESTED_RECORD_LISTS = (".chunks.list.element.", ".planes.list.element.", ".channels.list.element.", ".chunk_grid.")


#: Page codecs Parquet defines that Arrow writes (when the build has them).
PARQUET_CODECS = ("zstd", "snappy", "gzip", "brotli", "lz4")


def parquet_codec(compression: str | None) -> str | None:
    """The Parquet page codec for a table writer's ``compression`` (``"auto"``: zstd).

    Record-table writers take ``"auto"`` for each format's own default
    (Parquet: zstd pages; Vortex: its default encodings).

    Raises
    ------
    TypeError, ValueError
        For anything but ``None`` or the name of a Parquet codec this Arrow writes.

    Example
    -------
    >>> parquet_codec("auto"), parquet_codec("AUTO"), parquet_codec(None), parquet_codec("snappy")
    ('zstd', 'zstd', None, 'snappy')
    """
    if compression is None:
        return None
    if not isinstance(compression, str):
        raise TypeError(f"compression must be a Parquet codec name or None, got {type(compression).__name__}")
    name = compression.lower()
    if name == "auto":
        return "zstd"
    usable = [c for c in PARQUET_CODECS if pa.Codec.is_available(c)]
    if name not in usable and name not in ("none", "uncompressed"):
        raise ValueError(
            f"unknown Parquet compression {compression!r}; expected None, 'auto' or one of {', '.join(usable)}"
        )
    return compression


def _writer_kwargs(
    schema: pa.Schema, compression: str | None, pixels_precompressed: bool
) -> dict[str, Any]:
    leaves = leaf_paths(schema)
    codec = compression or "NONE"
    comp = {
        p: ("NONE" if (pixels_precompressed and _is_pixel_leaf(p)) else codec) for p in leaves
    }
    plain = [p for p in leaves if not _is_pixel_leaf(p)]
    return {
        "compression": comp,
        # Statistics where a filter can use them: not on the elements of a record's
        # nested lists (chunk keys, planes, channels), which no row filter prunes
        # by, and which cost 13% of writing a table of small crops.
        "write_statistics": [p for p in plain if not any(part in p for part in _NESTED_RECORD_LISTS)],
        "use_dictionary": plain,
        # A CRC32 in every page header, verified by open_parquet's readers: a
        # damaged page is an error, never wrong values.
        "write_page_checksum": True,
    }


#: Thrift ``CompressionCodec`` values of the codec names Arrow's writer takes (its lz4 is LZ4_RAW).
_THRIFT_CODECS = {"none": 0, "uncompressed": 0, "snappy": 1, "gzip": 2, "brotli": 4, "zstd": 6, "lz4": 7, "lz4_raw": 7}


def _parquet_leaf_paths(schema: pa.Schema) -> list[str]:
    """The dotted column paths Arrow's Parquet writer gives ``schema``'s leaves (from a footer it writes)."""
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_metadata(schema, sink)
    md = pq.read_metadata(pa.BufferReader(sink.getvalue()))
    return [md.schema.column(i).path for i in range(md.num_columns)]


def footer_facts(schema: pa.Schema, compression: Mapping[str, str] | str | None) -> dict[bytes, bytes]:
    """The footer-only key (:data:`~omeframe.model.arrow.METADATA_KEY_FILE`) of a file omeframe writes.

    Pass it to ``ParquetWriter.add_key_value_metadata`` (it must not go into the
    table's schema metadata, which the stored Arrow schema copies). It marks
    the file as omeframe's, so the footer checks hold it to omeframe's writer
    (:func:`~omeframe.storage.parquet_footer.check_metadata`), and records the
    page codec of each leaf: ``compression`` maps every leaf's column path to
    its codec, as :func:`_writer_kwargs` gives them, or is the one codec of all
    (``None``: uncompressed). A codec flipped to another
    valid one is then refused before a page is decompressed with it. The
    codecs are left out unless the paths are exactly the ones Arrow's writer
    gives the leaves, in its order, each with a codec name it takes.

    Example
    -------
    >>> footer_facts(pa.schema([("a", pa.int8()), ("b", pa.list_(pa.string()))]),
    ...              {"a": "zstd", "b.list.element": "NONE"})
    {b'omeframe.file': b'{"codecs": "60"}'}
    """
    if not isinstance(compression, Mapping):
        compression = dict.fromkeys(leaf_paths(schema), compression or "none")
    digits = [_THRIFT_CODECS.get(str(c).lower()) for c in compression.values()]
    facts = {}
    if all(d is not None for d in digits) and list(compression) == _parquet_leaf_paths(schema):
        facts["codecs"] = "".join(str(d) for d in digits)
    return {METADATA_KEY_FILE: json.dumps(facts).encode()}


def without_footer_only(data: Any) -> Any:
    """``data`` (a table, batch or schema) without omeframe's footer-only key.

    pyarrow's ``ParquetFile.read`` hands a footer's key-value metadata to the
    table even when it is not in the stored Arrow schema; the key
    (:data:`~omeframe.model.arrow.METADATA_KEY_FILE`, :func:`footer_facts`)
    describes that one file, and a table written elsewhere must not carry it.
    Writers call this on what they are given.
    """
    meta = data.metadata if isinstance(data, pa.Schema) else data.schema.metadata
    if not meta or METADATA_KEY_FILE not in meta:
        return data
    kept = {k: v for k, v in meta.items() if k != METADATA_KEY_FILE}
    return data.with_metadata(kept) if isinstance(data, pa.Schema) else data.replace_schema_metadata(kept)


@contextlib.contextmanager
def read_errors(name: str | os.PathLike[str]) -> Iterator[None]:
    """Turn what pyarrow raises over a damaged Parquet file into omeframe's errors naming ``name``.

    Arrow's own page check (files opened with ``page_checksum_verification``)
    fails with a plain ``OSError`` (:class:`ChunkChecksumError` here), a damaged
    footer name with ``UnicodeDecodeError``, anything else pyarrow cannot decode
    with ``OSError`` or an Arrow error (:class:`CorruptFileError`). omeframe's
    own errors get the file's name when they lack it (a file object or a
    buffer was read); access errors (missing file, permissions, a failed
    request) propagate as they are.
    """
    try:
        yield
    except CorruptFileError as exc:
        if str(name) in str(exc):
            raise
        raise type(exc)(f"{str(name)!r}: {exc}") from exc
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        if isinstance(exc, OSError):
            reraise_access_error(exc)
        kind = ChunkChecksumError if "CRC" in str(exc) or "checksum" in str(exc) else CorruptFileError
        raise kind(f"{str(name)!r} cannot be read (the file is damaged): {exc}") from exc


def write_parquet_table(
    table: pa.Table,
    path: str | os.PathLike[str],
    *,
    row_sizes: np.ndarray | None = None,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    compression: str | None = "zstd",
    pixels_precompressed: bool = False,
    metadata: Mapping[bytes, bytes] | None = None,
) -> None:
    """Write ``table`` atomically with row groups of about ``row_group_bytes``.

    Parameters
    ----------
    row_sizes
        Estimated bytes of each row; defaults to an even share of ``table.nbytes``.
    pixels_precompressed
        Skip Parquet compression on pixel payload columns (chunks already
        compressed).
    metadata
        Schema-level key/value metadata merged over the table's own.
    """
    if row_group_bytes <= 0:
        raise ValueError(f"row_group_bytes must be positive, got {row_group_bytes}")
    merged = dict(without_footer_only(table.schema).metadata or {})
    merged.update(metadata or {})
    table = table.replace_schema_metadata(merged)
    n = table.num_rows
    if row_sizes is None:
        row_sizes = np.full(n, table.nbytes / max(n, 1))
    bounds = _group_bounds(np.asarray(row_sizes, dtype=np.float64), row_group_bytes)
    import pyarrow.parquet as pq

    kwargs = _writer_kwargs(table.schema, compression, pixels_precompressed)
    with atomic_path(path, sweep=True) as tmp:
        with pq.ParquetWriter(tmp, table.schema, **kwargs) as writer:
            if n == 0:
                writer.write_table(table)
            for lo, hi in bounds:
                writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
            writer.add_key_value_metadata(footer_facts(table.schema, kwargs["compression"]))


def _group_bounds(sizes: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Greedy split of rows into consecutive groups of about ``target`` bytes.

    A group takes rows while its total stays within ``target`` (and at least
    one row); found per group by a binary search over the running total, so
    the cost follows the number of groups, not of rows.
    """
    n = int(sizes.size)
    cum = np.zeros(n + 1, dtype=np.float64 if sizes.dtype.kind == "f" else np.int64)
    np.cumsum(sizes, out=cum[1:])
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < n:
        stop = int(np.searchsorted(cum, cum[start] + target, side="right")) - 1
        stop = min(n, max(stop, start + 1))
        bounds.append((start, stop))
        start = stop
    return bounds


def open_parquet(source: str | os.PathLike[str] | BinaryIO | io.RawIOBase) -> pq.ParquetFile:
    """Open a Parquet file, turning low-level failures into precise errors.

    A path is memory-mapped. Arrow's reader holds a whole data page in memory
    while it decodes the page, and a record's pixel payloads form one page
    (Arrow cuts pages of a nested column only between rows): read into the
    memory pool, that page doubles the payload's footprint, and the pool keeps
    the freed page for later Arrow allocations, never for numpy's. Mapped, the
    page is the file's own pages, which go back to the system as soon as the
    returned :class:`pyarrow.parquet.ParquetFile` is released; no column of a
    table read from it keeps the mapping alive (the reader copies values out).
    Reads of mapped files are also faster (no copy into the pool). The file
    must not be truncated in place while it is read (omeframe's writers
    replace files atomically).

    Every read checks the page CRC-32s of what it decodes: a path opens as a
    :class:`~omeframe.storage.parquet_crc.CheckedParquetFile` (omeframe
    checks the pages with zlib-ng's CRC, seven times faster than Arrow's),
    a file object with Arrow's own check.

    Parameters
    ----------
    source
        A local path, or a seekable binary file object (read as is, e.g. a
        :class:`~omeframe.storage.files.InputFile`).

    Returns
    -------
    pyarrow.parquet.ParquetFile
        The opened file (its footer parsed).

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        When ``source`` is a path to nothing or to a directory.
    CorruptFileError
        When the file is not a readable Parquet file.
    """
    if isinstance(source, (str, os.PathLike)):
        p = os.fspath(source)
        if not os.path.exists(p):
            raise FileNotFoundError(f"no such Parquet file: {p!r}")
        if os.path.isdir(p):
            raise IsADirectoryError(
                f"{p!r} is a directory; record tables are single files (open a dataset "
                "directory with omeframe.open_dataset)"
            )
    import pyarrow.parquet as pq

    try:
        if isinstance(source, (str, os.PathLike)):
            return CheckedParquetFile(source)  # checks its footer
        pf = pq.ParquetFile(source, page_checksum_verification=True)
        check_metadata(pf.metadata, _name(source))
        return pf
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        reraise_access_error(exc)
        raise CorruptFileError(
            f"{_name(source)} is not a readable Parquet file (truncated or corrupt?): {exc}"
        ) from exc


def _name(source: Any) -> str:
    return repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "the stream"


def row_group_of(pf: pq.ParquetFile, row: int) -> tuple[int, int]:
    """Return ``(row_group_index, row_within_group)`` for a global row index."""
    md = pf.metadata
    n = md.num_rows
    if not isinstance(row, (int, np.integer)) or isinstance(row, bool):
        raise TypeError(f"row_index must be an integer, got {type(row).__name__}")
    if not 0 <= row < n:
        raise RowIndexError(
            f"row_index {row} is out of range: the table has {n} rows (valid 0..{n - 1})"
            if n
            else f"row_index {row} is out of range: the table is empty"
        )
    acc = 0
    for g in range(md.num_row_groups):
        k = md.row_group(g).num_rows
        if row < acc + k:
            return g, int(row - acc)
        acc += k
    raise RowIndexError(f"row_index {row} not found in any row group")  # pragma: no cover


def read_parquet_rows(
    pf: pq.ParquetFile, rows: Iterable[int], columns: Sequence[str] | None = None
) -> pa.Table:
    """Read the given rows (in order) reading only the row groups that hold them."""
    rows = list(rows)
    for r in rows:  # no silent int("1") / int(1.7): a row index must be an integer
        if not isinstance(r, (int, np.integer)) or isinstance(r, bool):
            raise TypeError(f"row_index must be an integer, got {type(r).__name__}")
    rows = [int(r) for r in rows]
    located = [row_group_of(pf, r) for r in rows]
    groups = sorted({g for g, _ in located})
    try:
        parts = {g: pf.read_row_group(g, columns=list(columns) if columns else None) for g in groups}
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        reraise_access_error(exc)
        raise CorruptFileError(f"cannot read row groups {groups}: {exc}") from exc
    pieces = [parts[g].slice(i, 1) for g, i in located]
    if not pieces:
        schema = pf.schema_arrow if not columns else pa.schema([pf.schema_arrow.field(c) for c in columns])
        return schema.empty_table()
    return pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
