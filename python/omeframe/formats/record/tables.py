"""Record tables on disk: the reference functions and a table-level writer.

``to_ome_parquet`` / ``to_ome_vortex`` write one record; :func:`write_table`
writes many (arrays or records) with extra user columns; ``from_ome_parquet``
/ ``from_ome_vortex`` read one row back touching only the row group it lives
in; :func:`read_table` reads the whole table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
from omeframe.formats.record.builder import RecordBuilder, list_or_bytes_codec
from omeframe.formats.record.bulk import encode_stack
from omeframe.formats.record.decode import read_region
from omeframe.formats.record.files import (
    as_record_array,
    detect_format,
    find_record_column,
    read_record,
    read_record_table,
    write_record_table,
)
from omeframe.formats.record.image_table import ImageTable, normalize_rows
from omeframe.formats.record.remote import read_table_remote, write_remote
from omeframe.formats.record.source import record_like
from omeframe.formats.record.writer import write_record_batches
from omeframe.formats.vortex.file import BLOCK_ROWS as VORTEX_BLOCK_ROWS
from omeframe.model.arrow import DEFAULT_COLUMN_NAME, OME_ARROW_KNOWN_STRUCTS
from omeframe.model.checks import is_integer
from omeframe.model.columns import check_column_name
from omeframe.model.dims import default_dim_order, to_tczyx
from omeframe.model.errors import CorruptFileError, RowIndexError, SchemaError
from omeframe.model.header import ImageHeader, check_labels
from omeframe.model.record import RecordView, as_record_scalar
from omeframe.model.units import check_physical_sizes
from omeframe.storage import parquet as pqio
from omeframe.storage.remote import open_remote_file
from omeframe.storage.url import check_storage_options, parse_location

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
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write one record to a Parquet file (one row, one struct column), atomically.

    ``out_path`` may be a URL (``s3://`` ...; ``storage_options`` configure
    it): the file is written locally, then uploaded whole under its key.

    ``compression`` is the Parquet codec of the metadata columns (and of the
    pixels when the chunks are stored raw); already-compressed chunk bytes
    are not compressed twice. The file carries the ``ome.arrow.type`` and
    ``ome.arrow.version`` keys plus ``file_metadata``.

    ``inline_chunk_encoding`` (as in ome-arrow) re-encodes the record on the
    way out: ``"existing"`` keeps it, ``"bytes"`` stores native-dtype chunks
    compressed with ``inline_chunk_compression`` (``None``: raw), ``"list"``
    stores ``list<uint16>`` chunks (``DtypeError`` for data that does not fit).
    As in ome-arrow, a record that already holds byte chunks keeps them as
    they are (its codec included) with ``"bytes"``; to change the codec of
    such a record, rebuild it (``omeframe.from_numpy(omeframe.to_numpy(rec),
    compression=...)``). ``inline_chunk_compression[_level]`` with another
    encoding than ``"bytes"`` would do nothing and raise ``ValueError``.
    """
    check_column_name(column_name)
    check_storage_options(storage_options, out_path)
    if parse_location(out_path) is not None:
        return write_remote(os.fspath(out_path), storage_options, lambda p: to_ome_parquet(
            data, p, column_name, file_metadata, compression, row_group_size, inline_chunk_encoding,
            inline_chunk_compression, inline_chunk_compression_level,
        ))
    if inline_chunk_encoding not in ("existing", "list", "bytes"):
        raise ValueError(
            "inline_chunk_encoding must be 'existing', 'list' or 'bytes', got "
            f"{inline_chunk_encoding!r}"
        )
    if inline_chunk_encoding != "bytes" and (
        inline_chunk_compression is not None or inline_chunk_compression_level is not None
    ):
        raise ValueError(
            f"inline_chunk_compression applies with inline_chunk_encoding='bytes', not "
            f"{inline_chunk_encoding!r}; pass inline_chunk_encoding='bytes', or drop inline_chunk_compression[_level]="
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
    check_column_name(column_name)
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
    storage_options: Mapping[str, Any] | None = None,
) -> pa.StructScalar | tuple[pa.StructScalar, pa.StructArray]:
    """Read record ``row_index`` from a Parquet record table.

    ``parquet_path`` may be a URL (``storage_options`` configure it): ranged
    reads fetch the footer and the row group holding the row.

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
    check_storage_options(storage_options, parquet_path)
    if parse_location(parquet_path) is not None:
        url = os.fspath(parquet_path)
        t = read_table_remote(url, rows=[row_index], storage_options=storage_options)
        col = find_record_column(t.schema, column_name, source=repr(url))
        arr = t[col].combine_chunks()
        if strict_schema and arr.type not in OME_ARROW_KNOWN_STRUCTS:
            raise SchemaError(
                f"column {col!r} is not exactly a canonical OME-Arrow struct (strict_schema=True); got {arr.type}"
            )
        return (arr[0], arr) if return_array else arr[0]
    indexed = _indexed_table(parquet_path, "parquet")
    if indexed is not None and is_integer(row_index):
        col = find_record_column(indexed.schema, column_name, source=repr(os.fspath(parquet_path)))
        if 0 <= row_index < len(indexed):
            arr = indexed.take([int(row_index)], columns=[col])[col].combine_chunks()
            if strict_schema and arr.type not in OME_ARROW_KNOWN_STRUCTS:
                raise SchemaError(
                    f"column {col!r} is not exactly a canonical OME-Arrow struct (strict_schema=True); "
                    f"got {arr.type}"
                )
            return (arr[0], arr) if return_array else arr[0]
    scalar, arr, _ = read_record(
        parquet_path,
        column_name=column_name,
        row_index=row_index,
        format="parquet",
        strict_schema=strict_schema,
    )
    return (scalar, arr) if return_array else scalar


def _indexed_table(path: str | os.PathLike[str], format: str | None) -> ImageTable | None:
    """The table opened for takes when it is a Parquet table with a pixel index, else ``None``."""
    if not os.path.isfile(os.fspath(path)) or detect_format(path, format) != "parquet":
        return None
    try:
        table = ImageTable(path, format="parquet")
    except (CorruptFileError, OSError, ValueError):
        return None  # the regular reader reports what is wrong
    return table if table.indexed else None


def from_ome_vortex(
    vortex_path: str | os.PathLike[str],
    *,
    column_name: str | None = DEFAULT_COLUMN_NAME,
    row_index: int = 0,
    strict_schema: bool = False,
    return_array: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.StructScalar | tuple[pa.StructScalar, pa.StructArray]:
    """Read record ``row_index`` from a Vortex record table (memory-mapped take).

    A URL (``storage_options`` configure it) is downloaded whole to a
    temporary file first: Vortex files are read memory-mapped.
    """
    check_storage_options(storage_options, vortex_path)
    remote = open_remote_file(vortex_path, storage_options)
    if remote is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="omeframe-download-") as tmp:
            local = Path(tmp) / "table.vortex"
            local.write_bytes(remote.read_range(0, remote.size))
            return from_ome_vortex(
                local, column_name=column_name, row_index=row_index, strict_schema=strict_schema,
                return_array=return_array,
            )
    scalar, arr, _ = read_record(
        vortex_path,
        column_name=column_name,
        row_index=row_index,
        format="vortex",
        strict_schema=strict_schema,
    )
    return (scalar, arr) if return_array else scalar


def records_from_arrays(
    images: Sequence[np.ndarray] | np.ndarray,
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
    physical_size_x: float | None = None,
    physical_size_y: float | None = None,
    physical_size_z: float | None = None,
    physical_size_unit: str | None = "µm",
    progress: bool | None = None,
    chunk_compression: str | None = UNSET,
    chunk_compression_level: int | None = UNSET,
) -> pa.StructArray:
    """Encode many arrays into one ``StructArray`` of records in a single pass.

    Much faster than calling :func:`from_numpy` per image for many small
    images (cell crops): all records are assembled in one Arrow build. A
    numpy stack ``(N, *image_axes)`` of images whose chunk shape covers the
    image (the default for crops) is encoded without Python work per image.
    ``progress`` shows a progress bar (default ``None``: only on an interactive
    terminal, for more than 1000 images).
    ``chunk_compression[_level]`` (ome-arrow's names) override
    ``compression[_level]``; through :func:`write_table`, whose own
    ``compression`` is the Parquet codec, they are the way to pick the chunk codec.
    """
    if isinstance(images, (str, bytes)) or not isinstance(images, (np.ndarray, Sequence)):
        raise TypeError(
            f"images must be a numpy stack (N, ...) or a sequence of numpy arrays, got {type(images).__name__}"
        )
    check_physical_sizes(
        {"physical_size_x": physical_size_x, "physical_size_y": physical_size_y, "physical_size_z": physical_size_z},
        physical_size_unit,
    )
    compression, compression_level = resolve_chunk_compression(
        compression, compression_level, chunk_compression, chunk_compression_level
    )
    if isinstance(images, np.ndarray) and chunk_encoding == "bytes" and not clamp_to_uint16 and images.ndim >= 3:
        stacked = encode_stack(
            images, dim_order=dim_order or default_dim_order(images.ndim - 1), compression=compression,
            compression_level=compression_level, chunk_shape=chunk_shape, image_ids=image_ids,
            names=names, image_type=image_type, channel_names=channel_names,
            physical_size_x=physical_size_x, physical_size_y=physical_size_y,
            physical_size_z=physical_size_z, physical_size_unit=physical_size_unit,
        )
        if stacked is not None:
            return stacked
    n = len(images)
    check_labels("image_ids", image_ids, n)
    check_labels("names", names, n)
    codec, level = list_or_bytes_codec(chunk_encoding, compression, compression_level)
    builder = RecordBuilder(
        chunk_encoding=chunk_encoding,
        compression=codec,
        compression_level=level,
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
            ImageHeader.basic(
                str(image_ids[i]) if image_ids is not None else f"img-{i}",
                str(names[i]) if names is not None else f"img-{i}",
                tczyx.shape[1],
                channel_names=channel_names,
                image_type=image_type,
                physical={"x": physical_size_x, "y": physical_size_y, "z": physical_size_z, "unit": physical_size_unit},
            ),
        )
    return builder.build()


#: Raw pixel bytes per encoded batch when writing a stack or a list of arrays:
#: bounds the memory a write holds beside its input.
BATCH_BYTES = 64 << 20
#: Chunks of a stack below this many raw bytes are stored raw in a Parquet table
#: with a pixel index, in zstd-compressed pages of at least two images, unless a
#: chunk codec is chosen explicitly: zstd decodes a 4 KiB frame at about half
#: its speed on large ones (each frame builds its own entropy tables), so
#: per-chunk frames of small crops scan slower than a zarr array of many crops
#: per chunk (measured in ``benchmarks/bench_tables.py``; see docs/concepts/layouts.md).
PAGE_CHUNK_BYTES = 16 << 10
#: ... and in a Vortex table, raw in its compressed column (Vortex's default
#: encodings compress raw crops larger than this less than zstd frames do).
VORTEX_RAW_CHUNK_BYTES = 2048
#: Images per batch on the per-image (general) path.
BATCH_IMAGES = 4096

_STACK_OPTIONS = {
    "dim_order", "image_ids", "names", "image_type", "channel_names", "chunk_shape",
    "compression", "compression_level", "chunk_compression", "chunk_compression_level",
    "physical_size_x", "physical_size_y", "physical_size_z", "physical_size_unit", "progress",
}


def _slice_opt(value: Any, lo: int, hi: int) -> Any:
    return None if value is None else value[lo:hi]


def _encode_stack_batches(
    stack: np.ndarray, encode: dict[str, Any], *, raw_below: int = 0, start: int = 0
) -> Iterator[pa.StructArray]:
    """Records of an ``(N, ...)`` stack, batch by batch (vectorised when the layout allows).

    ``start`` numbers the default ids (``img-<start + i>``) of a stack that
    continues an earlier one. Chunks under ``raw_below`` bytes are stored raw
    when no chunk codec is chosen (the table compresses them across records).
    """
    n = int(stack.shape[0])
    opts = dict(encode)
    progress = opts.pop("progress", None)
    dim_order = opts.pop("dim_order", None) or default_dim_order(stack.ndim - 1)
    chosen = {"compression", "chunk_compression"} & set(opts)
    comp, level = resolve_chunk_compression(
        opts.pop("compression", DEFAULT_COMPRESSION),
        opts.pop("compression_level", DEFAULT_COMPRESSION_LEVEL),
        opts.pop("chunk_compression", UNSET),
        opts.pop("chunk_compression_level", UNSET),
    )
    if not chosen and raw_below and stack.ndim >= 3:
        # Small chunks: zstd's cost per frame outweighs per-chunk frames; raw
        # chunks compressed by the table across records are faster to write and
        # to scan (measured in benchmarks/bench_tables.py; docs/concepts/layouts.md).
        six = to_tczyx(stack[:1], dim_order, stacked=True)
        if int(np.prod(six.shape[3:])) * stack.dtype.itemsize < raw_below:
            comp, level = None, None
    ids, names = opts.pop("image_ids", None), opts.pop("names", None)
    check_labels("image_ids", ids, n)
    check_labels("names", names, n)
    fast = set(opts) <= _STACK_OPTIONS
    per_image = max(1, stack[:1].nbytes)
    step = max(1, BATCH_BYTES // per_image)
    if step > VORTEX_BLOCK_ROWS:  # whole Vortex blocks: written as they are (see vortex.file._in_blocks)
        step -= step % VORTEX_BLOCK_ROWS
    bounds = list(range(0, n, step))
    for lo in track(bounds, progress, total=len(bounds), desc="encoding batches", unit="batch", large=n > 10000):
        hi = min(n, lo + step)
        part = stack[lo:hi]
        arr = None
        if fast:
            arr = encode_stack(
                part, dim_order=dim_order, compression=comp, compression_level=level,
                chunk_shape=opts.get("chunk_shape", (1, 512, 512)),
                image_ids=_slice_opt(ids, lo, hi), names=_slice_opt(names, lo, hi), start=start + lo,
                **{k: v for k, v in opts.items() if k != "chunk_shape"},
            )
        if arr is None:
            arr = records_from_arrays(
                list(part), dim_order=dim_order, chunk_compression=comp, chunk_compression_level=level,
                image_ids=ids[lo:hi] if ids is not None else [f"img-{i}" for i in range(start + lo, start + hi)],
                names=names[lo:hi] if names is not None else [f"img-{i}" for i in range(start + lo, start + hi)],
                **opts,
            )
        yield arr


def _uniform(images: Sequence[np.ndarray]) -> bool:
    """True when every array of ``images`` has the first one's shape and dtype."""
    first = images[0]
    return all(isinstance(a, np.ndarray) and a.shape == first.shape and a.dtype == first.dtype for a in images)


def _encode_uniform_list_batches(
    images: Sequence[np.ndarray], encode: dict[str, Any], *, raw_below: int = 0
) -> Iterator[pa.StructArray]:
    """Records of a list of same-shape arrays: stacked a bounded batch at a time, then
    encoded like a stack (one copy per batch instead of Python work per image)."""
    n = len(images)
    opts = dict(encode)
    ids, names = opts.pop("image_ids", None), opts.pop("names", None)
    check_labels("image_ids", ids, n)
    check_labels("names", names, n)
    step = max(1, BATCH_BYTES // max(1, images[0].nbytes))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        part_opts = dict(opts)
        if ids is not None:
            part_opts["image_ids"] = ids[lo:hi]
        if names is not None:
            part_opts["names"] = names[lo:hi]
        yield from _encode_stack_batches(np.stack(images[lo:hi]), part_opts, raw_below=raw_below, start=lo)


def _encode_list_batches(images: Sequence[np.ndarray], encode: dict[str, Any]) -> Iterator[pa.StructArray]:
    """Records of a list of arrays (any shapes), a bounded batch at a time."""
    n = len(images)
    ids, names = encode.pop("image_ids", None), encode.pop("names", None)
    check_labels("image_ids", ids, n)
    check_labels("names", names, n)
    lo = 0
    while lo < n:
        hi, acc = lo, 0
        while hi < n and (hi == lo or (acc < BATCH_BYTES and hi - lo < BATCH_IMAGES)):
            acc += int(getattr(images[hi], "nbytes", 0))
            hi += 1
        yield records_from_arrays(
            images[lo:hi],
            image_ids=ids[lo:hi] if ids is not None else [f"img-{i}" for i in range(lo, hi)],
            names=names[lo:hi] if names is not None else [f"img-{i}" for i in range(lo, hi)],
            **encode,
        )
        lo = hi


def _is_array_list(images: Any) -> bool:
    return isinstance(images, Sequence) and bool(images) and isinstance(images[0], np.ndarray)


def _record_batches(
    images: Any, encode: dict[str, Any], *, raw_below: int = 0
) -> Iterator[tuple[Any, Any, bool]]:
    """``(records, columns_or_None, encoded_here)`` triples from any accepted ``images`` input."""
    if isinstance(images, pa.Table):
        if encode:
            raise TypeError(f"encoding options {sorted(encode)} apply to numpy images only")
        yield images, None, False
    elif isinstance(images, np.ndarray):
        for arr in _encode_stack_batches(images, encode, raw_below=raw_below):
            yield arr, None, True
    elif _is_array_list(images) and _uniform(images):
        for arr in _encode_uniform_list_batches(images, encode, raw_below=raw_below):
            yield arr, None, True
    elif _is_array_list(images):
        for arr in _encode_list_batches(images, dict(encode)):
            yield arr, None, True
    elif isinstance(images, Sequence) and not isinstance(images, (str, bytes)) and not len(images):
        raise ValueError("no images to write: the list is empty; pass at least one image")
    elif isinstance(images, (pa.StructArray, pa.ChunkedArray, pa.StructScalar, Sequence)):
        if encode:
            raise TypeError(
                f"encoding options {sorted(encode)} apply to numpy images only; the "
                "records given are already encoded"
            )
        yield as_record_array(images), None, False
    elif isinstance(images, Iterable):
        for i, item in enumerate(images):
            if isinstance(item, tuple) and len(item) != 2:
                raise TypeError(
                    f"batch {i}: expected images or an (images, columns) pair, got a tuple of {len(item)}"
                )
            imgs, cols = item if isinstance(item, tuple) else (item, None)
            if not isinstance(imgs, (np.ndarray, pa.Table, pa.Array, pa.ChunkedArray, Sequence)):
                raise TypeError(
                    f"batch {i}: expected a numpy stack, a list of arrays, records or a table; "
                    f"got {type(imgs).__name__}"
                )
            extra = None if cols is None else _extra_table(cols)
            if extra is not None:
                size = imgs.num_rows if isinstance(imgs, pa.Table) else len(imgs)
                if size != extra.num_rows:
                    raise ValueError(f"batch {i}: its columns have {extra.num_rows} rows but it holds {size} images")
            at = 0
            for arr, _, here in _record_batches(imgs, encode, raw_below=raw_below):
                # A large batch is encoded in several parts: each gets its own rows of the columns.
                n = arr.num_rows if isinstance(arr, pa.Table) else len(arr)
                yield arr, None if extra is None else extra.slice(at, n), here
                at += n
    else:
        raise TypeError(
            "images must be a numpy stack (N, ...), a sequence of numpy arrays, OME-Arrow "
            f"records, a pyarrow Table or an iterable of batches; got {type(images).__name__}"
        )


def _extra_table(columns: Mapping[str, Any] | pa.Table) -> pa.Table:
    return columns if isinstance(columns, pa.Table) else pa.table(dict(columns))


def _with_columns(table: pa.Table, extra: pa.Table | None) -> pa.Table:
    if extra is None:
        return table
    if extra.num_rows != table.num_rows:
        raise ValueError(f"extra columns have {extra.num_rows} rows but there are {table.num_rows} images")
    clash = set(extra.column_names) & set(table.column_names)
    if clash:
        raise SchemaError(f"extra column name(s) {sorted(clash)} clash with the image column")
    for name in extra.column_names:
        table = table.append_column(extra.schema.field(name), extra[name])
    return table


def _numbered_batches(
    images: Any,
    column_name: str,
    columns: Mapping[str, Any] | pa.Table | None,
    encode: dict[str, Any],
    *,
    raw_below: int = 0,
) -> Iterator[pa.Table]:
    """Tables of records plus their user columns, batch by batch.

    Default ids and names (``img-<i>``) of images encoded here count over the
    whole stream, not per batch.
    """
    extra = _extra_table(columns) if columns is not None else None
    streaming = not isinstance(images, (pa.Table, np.ndarray, Sequence, pa.Array, pa.ChunkedArray, pa.StructScalar))
    defaults = [k for k, opt in (("id", "image_ids"), ("name", "names")) if opt not in encode]
    if extra is not None and not streaming and not isinstance(images, pa.StructScalar):
        total = images.num_rows if isinstance(images, pa.Table) else len(images)
        if total != extra.num_rows:
            raise ValueError(f"extra columns have {extra.num_rows} rows but there are {total} images")
    pos = 0
    for recs, cols, encoded_here in _record_batches(images, encode, raw_below=raw_below):
        table = recs if isinstance(recs, pa.Table) else pa.table({column_name: recs})
        if streaming and encoded_here and defaults:
            table = _renumber(table, column_name, pos, defaults)
        n = table.num_rows
        if cols is not None:
            if extra is not None:
                raise ValueError("pass user columns either with columns= or inside the batches, not both")
            table = _with_columns(table, _extra_table(cols))
        elif extra is not None:
            if pos + n > extra.num_rows:
                raise ValueError(f"extra columns have {extra.num_rows} rows but there are more images")
            table = _with_columns(table, extra.slice(pos, n))
        pos += n
        yield table
    if extra is not None and pos != extra.num_rows:
        raise ValueError(f"extra columns have {extra.num_rows} rows but there are {pos} images")


def _renumber(table: pa.Table, column_name: str, start: int, keys: Sequence[str]) -> pa.Table:
    """Set the ``keys`` fields (``id`` / ``name``) of every record to ``img-<start + i>``."""
    import pyarrow.compute as pc

    col = table[column_name].combine_chunks()
    n = len(col)
    numbers = pc.cast(pa.array(np.arange(start, start + n, dtype=np.int64)), pa.string())
    label = pc.binary_join_element_wise(pa.scalar("img-"), numbers, "")
    children = [label if f.name in keys else col.field(f.name) for f in col.type]
    rebuilt = pa.StructArray.from_arrays(children, fields=list(col.type))
    return table.set_column(table.column_names.index(column_name), column_name, rebuilt)


def write_table(
    path: str | os.PathLike[str],
    images: Any,
    *,
    column_name: str = DEFAULT_COLUMN_NAME,
    columns: Mapping[str, Sequence[Any]] | pa.Table | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    row_group_bytes: int | None = None,
    compression: str | None = "auto",
    file_metadata: Mapping[str, str] | None = None,
    pixel_index: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    **encode: Any,
) -> Path | str:
    """Write an image table: one row per image, plus any extra columns.

    A stack of same-shape images is encoded without Python work per image
    (chunk keys and headers as whole columns, every chunk compressed by
    zstd's multi-frame compressor in parallel), and any input is written in
    bounded batches, so memory stays flat for any number of images.

    Parameters
    ----------
    path
        Target file; the format follows ``format`` or the suffix
        (``.parquet`` / ``.vortex``). Written to a temporary file, then
        renamed, so a failure never leaves a half-written table.
    images
        One of:

        - a numpy stack ``(N, *image_axes)``: ``dim_order`` names the axes of
          one image (e.g. ``"CYX"``; default by rank as for one array);
        - a sequence of numpy arrays (any shapes: the general path);
        - OME-Arrow records (a ``StructArray``, scalars) or a ``pa.Table``
          holding an OME-Arrow column named ``column_name``;
        - an iterable of batches, each any of the above or an
          ``(images, columns)`` pair, written as they arrive (streaming).

        Numpy images are encoded with ``**encode``, the keyword arguments of
        :func:`records_from_arrays`; pick the chunk codec with
        ``chunk_compression=`` (``compression`` here is the Parquet codec).
        Without one, chunks of a stack are zstd frames, except small chunks
        (under :data:`PAGE_CHUNK_BYTES` in Parquet, e.g. 64×64 uint16 or
        16×16 uint8 crops), which are stored raw in zstd-compressed Parquet
        pages: faster to write and to scan (measured; see
        docs/concepts/layouts.md). Pages hold 8 KiB of them (4 KiB when
        ``images`` is a stack or records too large to be kept decoded for
        random takes: over 256 MiB of pixels, ``KEPT_TABLE_BYTES``), and at
        least two images. In Vortex, chunks under :data:`VORTEX_RAW_CHUNK_BYTES`
        are stored raw, in its compressed column.
    columns
        Extra columns (plate, well, cell id, features ...) as a mapping of
        equal-length sequences or a table with one row per image.
    row_group_bytes
        Parquet row groups hold about this many bytes. Default: 64 MiB for
        small images (takes go through the pixel index, not row groups; large
        groups keep the footer small and scans fast), else 4 MiB, so every
        large image gets a row group of its own.
    compression
        ``"auto"`` (default): each format's own choice, zstd pages in
        Parquet and Vortex's default encodings in Vortex. Parquet: the page
        codec of non-pixel columns (and of raw pixel chunks); ``None``
        writes uncompressed pages. Vortex: ``"zstd"`` writes Vortex's
        compact encodings, which add zstd: about 12% smaller tables of tiny
        raw crops, but a take decompresses whole 8,192-row blocks, so random
        rows of a large table cost about 5× more (measured; see
        docs/concepts/layouts.md); ``None`` is the same as ``"auto"``.
        Other codecs are refused for Vortex.
    pixel_index
        Add the pixel index (see :class:`ImageTable`) when chunks are
        compressed per chunk, as by default.
    storage_options
        When ``path`` is a URL (``s3://`` ...): options of its fsspec
        filesystem. The table is written locally, then uploaded whole under
        its key (never half a table under the final name).

    Returns
    -------
    pathlib.Path or str
        The written path (the URL for remote tables).

    Example
    -------
    >>> import numpy as np, omeframe as of, tempfile, os
    >>> crops = np.zeros((100, 3, 32, 32), np.uint8)
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.parquet")
    >>> of.write_table(path, crops, dim_order="CYX", columns={"area": np.arange(100)}).name
    'cells.parquet'
    """
    check_column_name(column_name)
    check_storage_options(storage_options, path)
    if parse_location(path) is not None:
        url = os.fspath(path)
        write_remote(url, storage_options, lambda p: write_table(
            p, images, column_name=column_name, columns=columns, format=format or detect_format(url, None),
            row_group_bytes=row_group_bytes, compression=compression, file_metadata=file_metadata,
            pixel_index=pixel_index, **encode,
        ))
        return url
    # Small chunks of a stack are stored raw when the table compresses them
    # across records: Parquet with zstd pages and a pixel index, or Vortex,
    # whose own encodings compress the column (see PAGE_CHUNK_BYTES).
    fmt = detect_format(path, format)
    codec = pqio.parquet_codec(compression)
    pages = pixel_index and codec is not None and str(codec).lower() == "zstd" and fmt == "parquet"
    raw_below = VORTEX_RAW_CHUNK_BYTES if fmt == "vortex" else PAGE_CHUNK_BYTES if pages else 0
    return write_record_batches(
        path,
        _numbered_batches(images, column_name, columns, encode, raw_below=raw_below),
        column_name=column_name,
        format=format,
        compression=compression,
        row_group_bytes=row_group_bytes,
        file_metadata=file_metadata,
        pixel_index=pixel_index,
        expected_rows=_known_rows(images),
    )


def _known_rows(images: Any) -> int | None:
    """How many images ``images`` holds when that is known before writing: a stack or records, not batches."""
    if isinstance(images, (np.ndarray, pa.Array, pa.ChunkedArray, pa.Table)):
        return len(images)
    return None


def read_table(
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    rows: Sequence[int] | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Read an image table (all of it, or some ``columns`` / ``rows``).

    ``path`` may be a URL (``s3://``, ``gs://``, ``https://`` ...; options in
    ``storage_options``): a Parquet table is read by ranged requests (the
    footer, the projected column chunks, and for ``rows`` only their row
    groups); a Vortex table is downloaded whole first.

    Rows of a Parquet table with a pixel index are read by position (their
    row groups' other columns, and just their own pixel bytes).
    """
    check_storage_options(storage_options, path)
    remote = parse_location(path)
    if remote is not None:
        url = os.fspath(path)
        if detect_format(url.split("?", 1)[0], format) == "vortex":
            f = open_remote_file(url, storage_options)
            assert f is not None
            import tempfile

            with tempfile.TemporaryDirectory(prefix="omeframe-download-") as tmp:
                local = Path(tmp) / "table.vortex"
                local.write_bytes(f.read_range(0, f.size))
                return read_record_table(local, columns=columns, rows=rows, format="vortex")
        return read_table_remote(url, columns=columns, rows=rows, storage_options=storage_options)
    if rows is not None:
        indexed = _indexed_table(path, format)
        if indexed is not None:
            try:
                idx = normalize_rows(rows, len(indexed), repr(os.fspath(path)))
            except (RowIndexError, TypeError):
                idx = None  # the regular reader raises its own precise error
            if idx is not None and len(idx):
                return indexed.take(idx, columns)
    return read_record_table(path, columns=columns, rows=rows, format=format)
