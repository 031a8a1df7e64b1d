"""Record tables on disk: the reference functions and a table-level writer.

``to_ome_parquet`` / ``to_ome_vortex`` write one record; :func:`write_table`
writes many (arrays or records) with extra user columns; ``from_ome_parquet``
/ ``from_ome_vortex`` read one row back touching only the row group it lives
in; :func:`read_table` reads the whole table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.engine.progress import track
from omeframe.formats.record.arrays import (
    DEFAULT_COMPRESSION,
    DEFAULT_COMPRESSION_LEVEL,
    UNSET,
    _check_array,
    clamp_u16,
    resolve_chunk_compression,
)
from omeframe.formats.record.builder import RecordBuilder
from omeframe.formats.record.decode import read_region
from omeframe.formats.record.files import (
    as_record_array,
    read_record,
    read_record_table,
    write_record_table,
)
from omeframe.formats.record.source import record_like
from omeframe.model.arrow import DEFAULT_COLUMN_NAME
from omeframe.model.dims import default_dim_order, to_tczyx
from omeframe.model.errors import SchemaError
from omeframe.model.header import ImageHeader, default_channels
from omeframe.model.record import RecordView, as_record_scalar
from omeframe.storage import parquet as pqio

__all__ = [
    "to_ome_parquet",
    "to_ome_vortex",
    "from_ome_parquet",
    "from_ome_vortex",
    "write_table",
    "read_table",
    "records_from_arrays",
]


def _single_record_table(data: Any, column_name: str) -> pa.Table:
    return pa.table({column_name: pa.repeat(as_record_scalar(data), 1)})


def _reencode(data: Any, encoding: str, compression: str | None, level: int | None) -> pa.StructScalar:
    """Return ``data`` stored as ``encoding`` (``"bytes"`` / ``"list"``)."""
    view = RecordView(data)
    if (encoding == "bytes") == (view.variant == "bytes"):
        return view.scalar  # already in that variant: stored as it is
    return record_like(
        view, read_region(view), encoding=encoding, compression=compression, compression_level=level
    )


def to_ome_parquet(
    data: Any,
    out_path: str | os.PathLike[str],
    column_name: str = "image",
    file_metadata: Mapping[str, str] | None = None,
    compression: str | None = "zstd",
    row_group_size: int | None = None,
    inline_chunk_encoding: Literal["existing", "list", "bytes"] = "existing",
    inline_chunk_compression: str | None = None,
    inline_chunk_compression_level: int | None = None,
) -> None:
    """Write one record to a Parquet file (one row, one struct column), atomically.

    ``compression`` is the Parquet codec of the metadata columns (and of the
    pixels when the chunks are stored raw); already-compressed chunk bytes
    are not compressed twice. The file carries the ``ome.arrow.type`` and
    ``ome.arrow.version`` keys plus ``file_metadata``.

    ``inline_chunk_encoding`` (as in ome-arrow) re-encodes the record on the
    way out: ``"existing"`` keeps it, ``"bytes"`` stores native-dtype chunks
    compressed with ``inline_chunk_compression`` (``None``: raw), ``"list"``
    stores ``list<uint16>`` chunks (``DtypeError`` for data that does not fit).
    """
    if inline_chunk_encoding not in ("existing", "list", "bytes"):
        raise ValueError(
            "inline_chunk_encoding must be 'existing', 'list' or 'bytes', got "
            f"{inline_chunk_encoding!r}"
        )
    if inline_chunk_encoding != "existing":
        data = _reencode(
            data, inline_chunk_encoding, inline_chunk_compression, inline_chunk_compression_level
        )
    write_record_table(
        _single_record_table(data, column_name),
        out_path,
        column_name=column_name,
        format="parquet",
        compression=compression,
        row_group_size=row_group_size,
        file_metadata=file_metadata,
    )


def to_ome_vortex(
    data: Any,
    out_path: str | os.PathLike[str],
    column_name: str = "image",
    file_metadata: Mapping[str, str] | None = None,
) -> None:
    """Write one record to a Vortex file (one row, one struct column), atomically."""
    write_record_table(
        _single_record_table(data, column_name),
        out_path,
        column_name=column_name,
        format="vortex",
        file_metadata=file_metadata,
    )


def from_ome_parquet(
    parquet_path: str | os.PathLike[str],
    *,
    column_name: str | None = DEFAULT_COLUMN_NAME,
    row_index: int = 0,
    strict_schema: bool = False,
    return_array: bool = False,
) -> pa.StructScalar | tuple[pa.StructScalar, pa.StructArray]:
    """Read record ``row_index`` from a Parquet record table.

    Only the row group holding the row and only the OME-Arrow column are
    read. ``column_name`` falls back to auto-detection (with a warning) when
    the column does not exist; ``None`` auto-detects silently.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    RowIndexError
        If ``row_index`` is outside the table (an ``IndexError`` and ``ValueError``).
    NoOmeArrowColumnError
        If no column holds OME-Arrow records.
    CorruptFileError
        If the file is truncated or not Parquet.
    """
    scalar, arr, _ = read_record(
        parquet_path,
        column_name=column_name,
        row_index=row_index,
        format="parquet",
        strict_schema=strict_schema,
    )
    return (scalar, arr) if return_array else scalar


def from_ome_vortex(
    vortex_path: str | os.PathLike[str],
    *,
    column_name: str | None = DEFAULT_COLUMN_NAME,
    row_index: int = 0,
    strict_schema: bool = False,
    return_array: bool = False,
) -> pa.StructScalar | tuple[pa.StructScalar, pa.StructArray]:
    """Read record ``row_index`` from a Vortex record table (memory-mapped take)."""
    scalar, arr, _ = read_record(
        vortex_path,
        column_name=column_name,
        row_index=row_index,
        format="vortex",
        strict_schema=strict_schema,
    )
    return (scalar, arr) if return_array else scalar


def records_from_arrays(
    images: Sequence[np.ndarray],
    *,
    dim_order: str | None = None,
    image_ids: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    chunk_shape: tuple[int, int, int] | None = (1, 512, 512),
    chunk_encoding: Literal["bytes", "list"] = "bytes",
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    clamp_to_uint16: bool = False,
    physical_size_x: float = 1.0,
    physical_size_y: float = 1.0,
    physical_size_z: float = 1.0,
    physical_size_unit: str = "µm",
    progress: bool | None = None,
    chunk_compression: str | None = UNSET,
    chunk_compression_level: int | None = UNSET,
) -> pa.StructArray:
    """Encode many arrays into one ``StructArray`` of records in a single pass.

    Much faster than calling :func:`from_numpy` per image for many small
    images (cell crops): all records are assembled in one Arrow build.
    ``progress`` shows a progress bar (default ``None``: only on an interactive
    terminal, for more than 1000 images).
    ``chunk_compression[_level]`` (ome-arrow's names) override
    ``compression[_level]``; through :func:`write_table`, whose own
    ``compression`` is the Parquet codec, they are the way to pick the chunk codec.
    """
    compression, compression_level = resolve_chunk_compression(
        compression, compression_level, chunk_compression, chunk_compression_level
    )
    n = len(images)
    for label, seq in (("image_ids", image_ids), ("names", names)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{label} has {len(seq)} entries for {n} images")
    builder = RecordBuilder(
        chunk_encoding=chunk_encoding,
        compression=compression if chunk_encoding == "bytes" else None,
        compression_level=compression_level if chunk_encoding == "bytes" else None,
        chunk_shape=chunk_shape,
    )
    it = track(images, progress, total=n, desc="encoding images", unit="img", large=n > 1000)
    for i, arr in enumerate(it):
        arr = _check_array(arr)
        tczyx = to_tczyx(arr, dim_order or default_dim_order(arr.ndim))
        if clamp_to_uint16:
            tczyx = clamp_u16(tczyx)
        builder.add(
            tczyx,
            ImageHeader(
                image_id=str(image_ids[i]) if image_ids is not None else f"img-{i}",
                name=str(names[i]) if names is not None else f"img-{i}",
                image_type=image_type,
                acquisition_datetime=None,
                channels=default_channels(channel_names, tczyx.shape[1]),
                physical_size_x=physical_size_x,
                physical_size_y=physical_size_y,
                physical_size_z=physical_size_z,
                physical_size_x_unit=physical_size_unit,
                physical_size_y_unit=physical_size_unit,
                physical_size_z_unit=physical_size_unit,
            ),
        )
    return builder.build()


def write_table(
    path: str | os.PathLike[str],
    images: Any,
    *,
    column_name: str = DEFAULT_COLUMN_NAME,
    columns: Mapping[str, Sequence[Any]] | pa.Table | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    row_group_bytes: int = pqio.DEFAULT_ROW_GROUP_BYTES,
    compression: str | None = "zstd",
    file_metadata: Mapping[str, str] | None = None,
    **encode: Any,
) -> Path:
    """Write an image table: one row per image, plus any extra columns.

    Parameters
    ----------
    path
        Target file; the format follows ``format`` or the suffix
        (``.parquet`` / ``.vortex``). Written to a temporary file, then
        renamed, so a failure never leaves a half-written table.
    images
        A sequence of numpy arrays (encoded with ``**encode``, the keyword
        arguments of :func:`records_from_arrays`; pick the chunk codec with
        ``chunk_compression=``, since ``compression`` here is the Parquet
        codec), a sequence of records, a
        ``StructArray`` of records, or a ``pa.Table`` already holding an
        OME-Arrow column named ``column_name``.
    columns
        Extra columns (plate, well, cell id, features ...) as a mapping of
        equal-length sequences or a table with one row per image.
    row_group_bytes
        Parquet row groups hold about this many pixel bytes; a large image
        gets a group of its own, so one image reads without its neighbours.
    compression
        Parquet codec for non-pixel columns (and raw pixel chunks).

    Returns
    -------
    pathlib.Path
        The written path.
    """
    if isinstance(images, pa.Table):
        table = images
    else:
        if isinstance(images, Sequence) and images and isinstance(images[0], np.ndarray):
            arr: Any = records_from_arrays(images, **encode)
        else:
            if encode:
                raise TypeError(
                    f"encoding options {sorted(encode)} apply to numpy images only; the "
                    "records given are already encoded"
                )
            arr = as_record_array(images)
        table = pa.table({column_name: arr})
    if columns is not None:
        extra = columns if isinstance(columns, pa.Table) else pa.table(dict(columns))
        if extra.num_rows != table.num_rows:
            raise ValueError(
                f"extra columns have {extra.num_rows} rows but there are {table.num_rows} images"
            )
        clash = set(extra.column_names) & set(table.column_names)
        if clash:
            raise SchemaError(f"extra column name(s) {sorted(clash)} clash with the image column")
        for name in extra.column_names:
            table = table.append_column(extra.schema.field(name), extra[name])
    return write_record_table(
        table,
        path,
        column_name=column_name,
        format=format,
        compression=compression,
        row_group_bytes=row_group_bytes,
        file_metadata=file_metadata,
    )


def read_table(
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    rows: Sequence[int] | None = None,
    format: Literal["parquet", "vortex"] | None = None,
) -> pa.Table:
    """Read an image table (all of it, or some ``columns`` / ``rows``)."""
    return read_record_table(path, columns=columns, rows=rows, format=format)
