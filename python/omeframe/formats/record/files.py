"""Record tables: one OME-Arrow record per row, any user columns beside it.

This module hides the file format (Parquet or Vortex) behind three calls:
:func:`write_record_table`, :func:`read_record` and :func:`read_record_table`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe._version import __version__
from omeframe.formats.vortex.file import read_vortex_schema, read_vortex_table, write_vortex_table
from omeframe.model.arrow import (
    METADATA_KEY_TYPE,
    METADATA_KEY_VERSION,
    METADATA_KEY_WRITER,
    OME_ARROW_KNOWN_STRUCTS,
    OME_ARROW_TAG_TYPE,
    OME_ARROW_TAG_VERSION,
    field_type,
)
from omeframe.model.columns import check_column_name, check_columns
from omeframe.model.errors import CorruptFileError, NoOmeArrowColumnError, SchemaError, reraise_access_error
from omeframe.model.record import as_record_scalar, looks_like_record_type
from omeframe.storage import parquet as pqio

__all__ = [
    "FileFormat",
    "detect_format",
    "find_record_column",
    "record_row_sizes",
    "write_record_table",
    "read_record",
    "read_record_table",
    "table_metadata",
    "field_type",
    "TABLE_FORMATS",
    "TABLE_SUFFIXES",
]

FileFormat = Literal["parquet", "vortex"]

#: File suffix -> table format: the one list of record-table suffixes.
TABLE_FORMATS: dict[str, FileFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".parq": "parquet",
    ".vortex": "vortex",
    ".vtx": "vortex",
}
#: Suffixes of record-table files (Parquet and Vortex).
TABLE_SUFFIXES: tuple[str, ...] = tuple(TABLE_FORMATS)


def detect_format(path: str | os.PathLike[str], format: str | None = None) -> FileFormat:
    """Return the file format from ``format``, the suffix, or the magic bytes."""
    if format is not None:
        f = str(format).lower()
        if f not in ("parquet", "vortex"):
            raise ValueError(f"format must be 'parquet' or 'vortex', got {format!r}")
        return f  # type: ignore[return-value]
    p = Path(path)
    found = TABLE_FORMATS.get(p.suffix.lower())
    if found:
        return found
    if p.is_file():
        with open(p, "rb") as fh:
            head = fh.read(4)
        if head == b"PAR1":
            return "parquet"
        if head == b"VTXF":
            return "vortex"
        raise CorruptFileError(
            f"{str(p)!r} is neither a Parquet nor a Vortex file (first bytes {head!r}); "
            "pass format='parquet' or format='vortex' if the suffix misleads"
        )
    raise ValueError(
        f"cannot tell the format of {str(p)!r} from its suffix; use .parquet or .vortex, "
        "or pass format="
    )


def table_metadata(extra: Mapping[str, str] | None = None) -> dict[bytes, bytes]:
    """The file-level keys omeframe writes (the ones ome-arrow writes, plus ours).

    Raises
    ------
    TypeError
        When ``extra`` is not a mapping of keys to values.
    """
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"file_metadata must be a mapping of keys to values, got {type(extra).__name__} {extra!r}")
    meta = {
        METADATA_KEY_TYPE: OME_ARROW_TAG_TYPE.encode(),
        METADATA_KEY_VERSION: OME_ARROW_TAG_VERSION.encode(),
        METADATA_KEY_WRITER: f"omeframe {__version__}".encode(),
    }
    for k, v in (extra or {}).items():
        meta[str(k).encode()] = str(v).encode()
    return meta


def find_record_column(schema: pa.Schema, column_name: str | None, *, source: str = "table") -> str:
    """Return the name of the OME-Arrow column: ``column_name`` or auto-detected.

    When ``column_name`` is missing from the table, the first struct column with
    the OME-Arrow fields is used and a ``UserWarning`` says so.

    Raises
    ------
    NoOmeArrowColumnError
        When no column holds OME-Arrow records.
    SchemaError
        When the named column exists but is not an OME-Arrow struct.
    """
    check_column_name(column_name, optional=True)
    names = schema.names
    if column_name is not None and column_name in names:
        t = schema.field(column_name).type
        if not looks_like_record_type(t):
            raise SchemaError(
                f"column {column_name!r} of {source} is not an OME-Arrow struct (type {t}); "
                "pass column_name=None to auto-detect"
            )
        return column_name
    candidates = [f.name for f in schema if looks_like_record_type(f.type)]
    if not candidates:
        raise NoOmeArrowColumnError(
            f"{source} has no OME-Arrow column: none of its columns {names} is a struct "
            "with the OME-Arrow fields (type, version, id, name, pixels_meta, chunks/planes)"
        )
    # "ome_arrow" and "image" are the two conventional names (readers default to
    # the first, ome-arrow's one-record writers to the second): falling back
    # between them is expected, not worth a warning.
    conventional = {"ome_arrow", "image"}
    if column_name is not None and not (column_name in conventional and candidates[0] in conventional):
        warnings.warn(
            f"Requested column {column_name!r} not found in {source}; auto-detected the OME-Arrow column "
            f"{candidates[0]!r}",
            UserWarning,
            stacklevel=3,
        )
    return candidates[0]


#: The estimate of a record's bytes besides its pixels in :func:`record_row_sizes`.
ROW_HEADER_BYTES = 512


def record_row_sizes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Estimated bytes of each record: its pixel payload plus :data:`ROW_HEADER_BYTES`."""
    if isinstance(column, pa.ChunkedArray):
        parts = [record_row_sizes(c) for c in column.chunks]
        return np.concatenate(parts) if parts else np.zeros(0)
    n = len(column)
    sizes = np.full(n, float(ROW_HEADER_BYTES))
    if n == 0 or column.type.get_field_index("chunks") < 0:
        return sizes + column.nbytes / max(n, 1)
    arr = column if not column.offset else pa.StructArray.from_arrays(
        column.flatten(), fields=list(column.type)
    )
    chunks = arr.field("chunks")
    loffs = chunks.offsets.to_numpy().astype(np.int64)
    inner = chunks.values
    idx = inner.type.get_field_index("pixel_bytes")
    if idx >= 0:
        pb = inner.field(idx)
        poffs = np.frombuffer(pb.buffers()[1], dtype=np.int64 if pa.types.is_large_binary(pb.type) else np.int32)
        poffs = poffs[pb.offset :].astype(np.int64)
        sizes += poffs[loffs[1:]] - poffs[loffs[:-1]]
    else:
        idx = inner.type.get_field_index("pixels")
        if idx >= 0:
            px = inner.field(idx)
            po = px.offsets.to_numpy().astype(np.int64)
            width = px.type.value_type.bit_width // 8
            sizes += (po[loffs[1:]] - po[loffs[:-1]]) * width
    return sizes


def _pixels_precompressed(column: pa.ChunkedArray | pa.Array) -> bool:
    """True when every chunk payload in the column is already compressed."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    seen = False
    for arr in chunks:
        if arr.type.get_field_index("chunks") < 0:
            return False
        inner = pa.StructArray.from_arrays(arr.flatten(), fields=list(arr.type)).field("chunks").values
        idx = inner.type.get_field_index("compression")
        if idx < 0:
            return False
        comp = inner.field(idx)
        if comp.null_count:
            return False
        seen = seen or len(comp) > 0
    return seen


def write_record_table(
    table: pa.Table,
    path: str | os.PathLike[str],
    *,
    column_name: str,
    format: str | None = None,
    compression: str | None = "auto",
    row_group_bytes: int = pqio.DEFAULT_ROW_GROUP_BYTES,
    row_group_size: int | None = None,
    file_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a table holding an OME-Arrow column atomically; return the path.

    ``compression``: ``"auto"`` is zstd pages in Parquet and Vortex's default
    encodings in Vortex; see :func:`~omeframe.formats.record.writer.write_record_batches`.
    """
    if column_name not in table.column_names:
        raise SchemaError(f"table has no column {column_name!r}; columns: {table.column_names}")
    col = table[column_name]
    if not looks_like_record_type(col.type):
        raise SchemaError(f"column {column_name!r} is not an OME-Arrow struct: {col.type}")
    fmt = detect_format(path, format)
    meta = table_metadata(file_metadata)
    if fmt == "parquet":
        sizes = record_row_sizes(col)
        if row_group_size is not None:
            if row_group_size <= 0:
                raise ValueError(f"row_group_size must be positive, got {row_group_size}")
            # Fixed row count per group: express it as equal-size rows.
            sizes = np.ones(table.num_rows)
            row_group_bytes = row_group_size
        pqio.write_parquet_table(
            table,
            path,
            row_sizes=sizes,
            row_group_bytes=row_group_bytes,
            compression=pqio.parquet_codec(compression),
            pixels_precompressed=_pixels_precompressed(col),
            metadata=meta,
        )
    else:
        write_vortex_table(table, path, metadata=meta, compression=compression)
    return Path(path)


def _check_exists(path: str | os.PathLike[str]) -> None:
    if not os.path.exists(os.fspath(path)):
        raise FileNotFoundError(f"no such file: {os.fspath(path)!r}")


def read_record(
    path: str | os.PathLike[str],
    *,
    column_name: str | None = "ome_arrow",
    row_index: int = 0,
    format: str | None = None,
    strict_schema: bool = False,
) -> tuple[pa.StructScalar, pa.StructArray, str]:
    """Read one record, touching only the row group (Parquet) or rows (Vortex) it needs.

    Returns ``(scalar, one_row_array, column_name_used)``.
    """
    _check_exists(path)
    fmt = detect_format(path, format)
    if fmt == "parquet":
        with contextlib.closing(pqio.open_parquet(path)) as pf:  # unmap now, not at GC
            col = find_record_column(pf.schema_arrow, column_name, source=repr(os.fspath(path)))
            tbl = pqio.read_parquet_rows(pf, [row_index], columns=[col])
    else:
        schema = read_vortex_schema(path)
        col = find_record_column(schema, column_name, source=repr(os.fspath(path)))
        if not isinstance(row_index, (int, np.integer)) or isinstance(row_index, bool):
            raise TypeError(f"row_index must be an integer, got {type(row_index).__name__}")
        tbl = read_vortex_table(path, columns=[col], rows=[int(row_index)])
    col_data = tbl[col]
    arr = col_data.chunk(0) if col_data.num_chunks == 1 else col_data.combine_chunks()
    if strict_schema and arr.type not in OME_ARROW_KNOWN_STRUCTS:
        raise SchemaError(
            f"column {col!r} is not exactly a canonical OME-Arrow struct (strict_schema=True); "
            f"got {arr.type}"
        )
    return arr[0], arr, col


def read_record_table(
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    rows: Sequence[int] | None = None,
    format: str | None = None,
) -> pa.Table:
    """Read a whole record table (or some columns / rows of it)."""
    _check_exists(path)
    fmt = detect_format(path, format)
    if fmt == "parquet":
        with contextlib.closing(pqio.open_parquet(path)) as pf:  # unmap now, not at GC
            columns = check_columns(columns, pf.schema_arrow.names, repr(os.fspath(path)))
            if rows is not None:
                return pqio.read_parquet_rows(pf, rows, columns)
            try:
                return pf.read(columns=list(columns) if columns else None)
            except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
                reraise_access_error(exc)
                raise CorruptFileError(f"cannot read {os.fspath(path)!r}: {exc}") from exc
    return read_vortex_table(path, columns=columns or None, rows=rows)  # a str is refused there


def as_record_array(records: Any) -> pa.StructArray | pa.ChunkedArray:
    """Turn records (scalars, arrays, a sequence of either) into one Arrow array."""
    if isinstance(records, (pa.StructArray, pa.ChunkedArray)):
        return records
    if isinstance(records, pa.StructScalar):
        return pa.repeat(records, 1)
    if isinstance(records, Sequence) and records:
        parts = []
        for r in records:
            if isinstance(r, pa.StructScalar):
                parts.append(pa.repeat(r, 1))
            elif isinstance(r, pa.StructArray):
                parts.append(r)
            else:
                parts.append(pa.repeat(as_record_scalar(r), 1))
        types = {p.type for p in parts}
        if len(types) > 1:
            raise SchemaError(
                "records mix struct variants (list and byte); write them to separate "
                "tables or re-encode them to one variant first"
            )
        return pa.chunked_array(parts)
    raise TypeError(f"expected OME-Arrow records, got {type(records).__name__}")
