"""Check a Parquet footer for what pyarrow's column-chunk metadata assumes, before anyone asks for it.

pyarrow builds a column chunk's metadata (``RowGroupMetaData.column(i)``, and
everything that goes through it: ``statistics``, ``to_dict()``, the datasets'
row-group statistics) in C++ code whose exceptions it does not translate. A
footer that contradicts itself therefore does not raise: it *aborts the
interpreter* (``terminate called after throwing an instance of
'parquet::ParquetException'``). One flipped bit in a schema element is enough,
for example when it turns a ``BYTE_ARRAY`` leaf into an ``INT64`` one whose
chunks still carry byte-array size statistics, or a required field into an
optional one whose chunks carry a definition-level histogram one entry short.
Reading the same file with ``pyarrow.parquet.read_table`` raises ``OSError``;
only the metadata accessors abort.

:func:`check_metadata` refuses, with a :class:`CorruptFileError` naming the
row group, the column and the field, every footer in which, for some column
chunk:

- the row group lists another number of column chunks than the schema has leaves;
- the chunk's metadata is missing or encrypted (omeframe reads no encrypted Parquet);
- its physical type differs from its schema leaf's;
- it holds values in no bytes (pyarrow finds pages without the chunk's size, other readers do not);
- its size statistics carry a level histogram whose length is not the leaf's
  maximum level + 1, or a byte-array size for a leaf that holds no byte arrays;
- its min/max statistics of a fixed-width type are not that width;
- its page codec is not the one omeframe's writer recorded for the column
  (in the footer-only key ``omeframe.file`` of files omeframe wrote: the
  footer keeps no other copy, and a codec flipped to another valid one would
  fail only when a page is decompressed).

Besides, the footer must have the shape ``parquet.thrift`` gives it
(:mod:`omeframe.storage.parquet_shape`: wire types, enum values, required
fields, non-negative sizes, no bytes after it), which readers generated from
the Thrift schema (DuckDB's) enforce and pyarrow does not; and its Parquet
schema and omeframe's metadata must agree with their second copy, the Arrow
schema stored beside them (:mod:`omeframe.storage.stored_schema`), so a
flipped byte in a name, a string annotation or ``omeframe.*`` metadata is
refused rather than read.

It decodes the footer as stored when the caller holds its bytes (else as
pyarrow re-serialises it) with omeframe's Thrift codec,
keeping only the fields above, and remembers footers found sound (by CRC-32
and length), so reopening a file costs one CRC of its footer.
:func:`omeframe.storage.parquet.open_parquet` and every reader of omeframe's
that asks pyarrow for column-chunk metadata call it first.

Example
-------
>>> import io, pyarrow as pa, pyarrow.parquet as pq
>>> sink = io.BytesIO()
>>> pq.write_table(pa.table({"a": [1, 2, 3]}), sink)
>>> md = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata
>>> check_metadata(md, "t.parquet")
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import pyarrow as pa

from omeframe.model.arrow import METADATA_KEY_FILE
from omeframe.model.errors import CorruptFileError
from omeframe.storage.crc import crc32_function
from omeframe.storage.parquet_shape import FILE_METADATA
from omeframe.storage.stored_schema import check_stored_schema, key_values
from omeframe.storage.thrift_compact import Field, Keep, Seq, by_id, check_shape, decode_struct

__all__ = ["check_metadata", "read_footer"]

#: Footers found sound, by (CRC-32, length, as stored in the file) of their Thrift bytes,
#: as stored in the file or as pyarrow re-serialises them.
MAX_REMEMBERED = 256
_SOUND: OrderedDict[tuple[int, int, bool], None] = OrderedDict()
_LOCK = threading.Lock()

#: Thrift field ids of ``parquet.thrift``
_SCHEMA, _ROW_GROUPS, _KEY_VALUE, _CREATED_BY = 2, 4, 5, 6  # FileMetaData
_COLUMNS = 1  # RowGroup
_META, _CRYPTO, _ENCRYPTED_META = 3, 8, 9  # ColumnChunk
_TYPE, _CODEC, _NUM_VALUES, _COMPRESSED, _STATISTICS, _SIZE_STATISTICS = 1, 4, 5, 7, 12, 16  # ColumnMetaData
#: Thrift ``CompressionCodec`` names, by value
_CODECS = ("UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW")
_STAT_VALUES = (1, 2, 5, 6)  # Statistics: max, min, max_value, min_value
_UNENCODED_BYTES, _REP_HISTOGRAM, _DEF_HISTOGRAM = 1, 2, 3  # SizeStatistics

_KEEP: Keep = {
    _SCHEMA: None,  # compared with the stored Arrow schema (omeframe.storage.stored_schema)
    _KEY_VALUE: None,
    _CREATED_BY: None,
    _ROW_GROUPS: {
        _COLUMNS: {
            _META: {
                _TYPE: None,
                _CODEC: None,
                _NUM_VALUES: None,
                _COMPRESSED: None,
                _STATISTICS: dict.fromkeys(_STAT_VALUES),
                _SIZE_STATISTICS: None,
            },
            _CRYPTO: {},  # only whether they are there
            _ENCRYPTED_META: None,
        },
    },
}

#: pyarrow's physical type names, by their Thrift value
_TYPES = ("BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")
_WIDTHS = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}
_DAMAGED = "(the Parquet footer is damaged)"


def read_footer(fh: Any) -> tuple[Any, bytes | None]:
    """The metadata of the Parquet file ``fh`` and the footer bytes it was parsed from, reading exactly the footer.

    ``fh`` is an :class:`omeframe.storage.files.InputFile` (``size``,
    ``read_range``). pyarrow's own open reads the last 64 KiB speculatively,
    which in a small image table is mostly pixel bytes. Pass both to
    :func:`check_metadata`. ``(None, None)`` lets pyarrow handle what this
    does not (encrypted footers).

    Raises
    ------
    pyarrow.ArrowInvalid
        When the tail is not a Parquet footer (no magic bytes, a length that does not fit).
    """
    import pyarrow.parquet as pq

    size = fh.size
    if size < 12:
        raise pa.ArrowInvalid(f"file of {size} bytes is too small to be Parquet")
    tail = fh.read_range(size - 8, 8)
    if tail[4:] != b"PAR1":
        if tail[4:] == b"PARE":
            return None, None
        raise pa.ArrowInvalid("Parquet magic bytes not found in footer")
    n = int.from_bytes(tail[:4], "little")
    if n + 12 > size:
        raise pa.ArrowInvalid(f"footer of {n} bytes does not fit in a file of {size} bytes")
    footer = bytes(fh.read_range(size - 8 - n, n))
    return pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail)), footer


def _thrift_bytes(md: Any) -> bytes:
    sink = pa.BufferOutputStream()
    md.write_metadata_file(sink)  # "PAR1", the Thrift FileMetaData, its length, "PAR1"
    data = sink.getvalue().to_pybytes()
    return data[4:-8]


def check_metadata(md: Any, what: str, footer: bytes | memoryview | None = None) -> None:
    """Raise :class:`CorruptFileError` when pyarrow's ``md`` (a ``FileMetaData``) contradicts itself.

    See the module docstring for what is checked. ``what`` names the file in
    the error. ``footer``, the file's Thrift footer bytes ``md`` was parsed
    from when the caller holds them, lets a footer found sound before be
    recognised by one CRC of them, without re-serialising ``md``.

    Raises
    ------
    CorruptFileError
        Naming the row group, the column and the field that is wrong.
    """
    num_leaves = md.num_columns
    for g in range(md.num_row_groups):  # num_columns of a row group is safe to ask
        if md.row_group(g).num_columns != num_leaves:
            raise CorruptFileError(
                f"{what}: row group {g} has {md.row_group(g).num_columns} column chunks, but the schema has "
                f"{num_leaves} leaf columns {_DAMAGED}"
            )
    crc32 = crc32_function()
    if footer is not None:
        # the bytes ``md`` was parsed from, decoded as they are: re-serialising a damaged
        # FileMetaData (pyarrow's write_metadata_file) can end the process with SIGSEGV
        data = bytes(footer)
        keys = [(crc32(data), len(data), True)]
    else:
        data = _thrift_bytes(md)
        keys = [(crc32(data), len(data), False)]
    with _LOCK:
        if keys[0] in _SOUND:
            _SOUND.move_to_end(keys[0])
            return
    leaves = [md.schema.column(j) for j in range(num_leaves)]  # schema accessors are safe
    try:
        end = check_shape(data, FILE_METADATA, f"{what}: FileMetaData")
        fields, _ = decode_struct(data, keep=_KEEP, raw=False)
    except CorruptFileError as exc:
        raise CorruptFileError(f"{exc} {_DAMAGED}" if str(exc).startswith(what) else f"{what}: {exc}") from exc
    if end != len(data):  # a damaged field length or type ends the structure early
        raise CorruptFileError(f"{what}: the footer's metadata ends after {end} of its {len(data)} bytes {_DAMAGED}")
    footer_fields = by_id(fields)
    groups = footer_fields.get(_ROW_GROUPS)
    chunks = [
        (g, j, by_id(chunk))
        for g, group in enumerate(groups.items if isinstance(groups, Seq) else [])
        for columns in [by_id(group).get(_COLUMNS)]
        for j, chunk in enumerate(columns.items if isinstance(columns, Seq) else [])
    ]
    for g, j, chunk in chunks:
        _check_chunk(chunk, leaves[j], f"{what}: column {leaves[j].path!r} in row group {g}")
    own = check_stored_schema(footer_fields, what)  # a file omeframe's writers wrote
    codecs = _recorded_codecs(footer_fields, num_leaves, what) if own else None
    if codecs is not None:
        for g, j, chunk in chunks:
            _check_codec(chunk, codecs[j], f"{what}: column {leaves[j].path!r} in row group {g}")
    with _LOCK:
        for key in keys:
            _SOUND[key] = None
        while len(_SOUND) > MAX_REMEMBERED:
            _SOUND.popitem(last=False)


def _recorded_codecs(footer: dict[int, Any], num_leaves: int, what: str) -> list[int] | None:
    """The page codec omeframe's writer recorded for each leaf (``codecs`` of ``omeframe.file``), or ``None``."""
    facts = key_values(footer.get(_KEY_VALUE)).get(METADATA_KEY_FILE, b"{}")
    try:
        recorded = json.loads(facts).get("codecs")
    except (ValueError, AttributeError) as exc:  # not JSON, or not an object
        raise CorruptFileError(f"{what}: omeframe.file ({facts[:40]!r}) is not omeframe's JSON {_DAMAGED}") from exc
    if recorded is None:
        return None
    if not isinstance(recorded, str) or len(recorded) != num_leaves or not set(recorded) <= set("0124567"):
        raise CorruptFileError(
            f"{what}: omeframe.file records codecs {str(recorded)[:40]!r}, not one for each of the "
            f"{num_leaves} leaf columns {_DAMAGED}"
        )
    return [int(d) for d in recorded]


def _check_codec(chunk: dict[int, Any], codec: int, where: str) -> None:
    got = by_id(chunk.get(_META)).get(_CODEC)
    if got != codec:
        shown = _CODECS[got] if isinstance(got, int) and 0 <= got < len(_CODECS) else repr(got)
        raise CorruptFileError(
            f"{where}: the footer says its pages are compressed with {shown}, the writer recorded "
            f"{_CODECS[codec]} (omeframe.file) {_DAMAGED}"
        )


def _check_chunk(chunk: dict[int, Any], leaf: Any, where: str) -> None:
    if _CRYPTO in chunk or _ENCRYPTED_META in chunk:
        raise CorruptFileError(f"{where}: its metadata is encrypted, which omeframe does not read {_DAMAGED}")
    meta = chunk.get(_META)
    if not isinstance(meta, list):
        raise CorruptFileError(f"{where}: the column chunk has no metadata {_DAMAGED}")
    meta_fields = by_id(meta)
    kind = meta_fields.get(_TYPE)
    name = _TYPES[kind] if isinstance(kind, int) and 0 <= kind < len(_TYPES) else f"unknown type {kind!r}"
    if name != leaf.physical_type:
        raise CorruptFileError(
            f"{where}: the chunk holds {name} values, its schema leaf {leaf.physical_type} values {_DAMAGED}"
        )
    # pyarrow finds the pages without the chunk's size; the page checks and other readers use it
    if meta_fields.get(_NUM_VALUES, 0) > 0 and meta_fields.get(_COMPRESSED, 0) <= 0:
        raise CorruptFileError(
            f"{where}: the chunk holds {meta_fields[_NUM_VALUES]} values in {meta_fields.get(_COMPRESSED, 0)} "
            f"bytes {_DAMAGED}"
        )
    width = _WIDTHS.get(name) if name != "FIXED_LEN_BYTE_ARRAY" else leaf.length
    stats = meta_fields.get(_STATISTICS)
    if width is not None and isinstance(stats, list):
        for f in stats:
            if f.id in _STAT_VALUES and isinstance(f.value, bytes) and len(f.value) != width:
                raise CorruptFileError(
                    f"{where}: a min/max statistic of {len(f.value)} bytes for {name} values of {width} {_DAMAGED}"
                )
    sizes = meta_fields.get(_SIZE_STATISTICS)
    if isinstance(sizes, list):
        _check_sizes(sizes, leaf, name, where)


def _check_sizes(sizes: list[Field], leaf: Any, name: str, where: str) -> None:
    for f in sizes:
        if f.id == _UNENCODED_BYTES and name != "BYTE_ARRAY":
            raise CorruptFileError(f"{where}: size statistics count byte-array bytes of {name} values {_DAMAGED}")
        for fid, label, level in (
            (_REP_HISTOGRAM, "repetition", leaf.max_repetition_level),
            (_DEF_HISTOGRAM, "definition", leaf.max_definition_level),
        ):
            if f.id == fid:
                n = len(f.value.items) if isinstance(f.value, Seq) else -1
                if n not in (0, level + 1):
                    raise CorruptFileError(
                        f"{where}: a {label}-level histogram of {n} entries, for a maximum level of {level} {_DAMAGED}"
                    )
