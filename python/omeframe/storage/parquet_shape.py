"""The wire types, enum values and required fields of a Parquet footer (``FileMetaData``), from ``parquet.thrift``.

:func:`omeframe.storage.parquet_footer.check_metadata` checks every footer
against :data:`FILE_METADATA` with :func:`~omeframe.storage.thrift_compact.check_shape`:
readers generated from the Thrift schema (DuckDB, Polars) refuse a footer
whose field has another wire type or lacks a required field, where pyarrow
may read it. A footer that passes opens in all of them, or in none.
Encryption and geospatial structures are checked for their wire type only.

Example
-------
>>> import io, pyarrow as pa, pyarrow.parquet as pq
>>> from omeframe.storage.thrift_compact import check_shape
>>> sink = io.BytesIO()
>>> pq.write_table(pa.table({"a": [1, 2]}), sink)
>>> data = sink.getvalue()
>>> n = int.from_bytes(data[-8:-4], "little")
>>> check_shape(data[-8 - n : -8], FILE_METADATA, "footer") == n
True
"""

from __future__ import annotations

from omeframe.storage.thrift_compact import BINARY, BOOL, I8, I16, I32, I64, LIST, STRING, STRUCT, Shape

__all__ = ["FILE_METADATA"]

_TYPES = range(8)  # Type: BOOLEAN .. FIXED_LEN_BYTE_ARRAY
_REPETITIONS = range(3)  # REQUIRED, OPTIONAL, REPEATED
_CONVERTED = range(22)  # ConvertedType: UTF8 .. INTERVAL
_CODECS = range(8)  # CompressionCodec: UNCOMPRESSED .. LZ4_RAW
_ENCODINGS = range(10)  # Encoding: PLAIN .. BYTE_STREAM_SPLIT
_PAGE_TYPES = range(4)  # PageType: DATA_PAGE .. DATA_PAGE_V2
#: Counts, sizes and offsets
_SIZE = range(1 << 63)


def _fields(*specs: tuple[int, str, int, object]) -> dict[int, tuple[str, int, object]]:
    return {fid: (name, wire, inner) for fid, name, wire, inner in specs}


_TIME_UNIT = Shape(
    "TimeUnit",
    _fields((1, "MILLIS", STRUCT, None), (2, "MICROS", STRUCT, None), (3, "NANOS", STRUCT, None)),
    union=True,
)
_TIME = Shape(
    "TimeType", _fields((1, "isAdjustedToUTC", BOOL, None), (2, "unit", STRUCT, _TIME_UNIT)), frozenset({1, 2})
)
_LOGICAL = Shape(
    "LogicalType",
    _fields(
        *((fid, name, STRUCT, None) for fid, name in (
            (1, "STRING"), (2, "MAP"), (3, "LIST"), (4, "ENUM"), (6, "DATE"), (11, "UNKNOWN"), (12, "JSON"),
            (13, "BSON"), (14, "UUID"), (15, "FLOAT16"), (16, "VARIANT"), (17, "GEOMETRY"), (18, "GEOGRAPHY"),
        )),
        (5, "DECIMAL", STRUCT, Shape("DecimalType", _fields((1, "scale", I32, None), (2, "precision", I32, None)),
                                     frozenset({1, 2}))),
        (7, "TIME", STRUCT, _TIME),
        (8, "TIMESTAMP", STRUCT, _TIME),
        (10, "INTEGER", STRUCT, Shape("IntType", _fields((1, "bitWidth", I8, None), (2, "isSigned", BOOL, None)),
                                      frozenset({1, 2}))),
    ),
    union=True,
)
_SCHEMA_ELEMENT = Shape(
    "SchemaElement",
    _fields(
        (1, "type", I32, None), (2, "type_length", I32, None), (3, "repetition_type", I32, None),
        (4, "name", BINARY, STRING), (5, "num_children", I32, None), (6, "converted_type", I32, None),
        (7, "scale", I32, None), (8, "precision", I32, None), (9, "field_id", I32, None),
        (10, "logicalType", STRUCT, _LOGICAL),
    ),
    frozenset({4}),
    {1: _TYPES, 2: _SIZE, 3: _REPETITIONS, 5: _SIZE, 6: _CONVERTED},
)
_KEY_VALUE = Shape("KeyValue", _fields((1, "key", BINARY, STRING), (2, "value", BINARY, STRING)), frozenset({1}))
_STATISTICS = Shape(
    "Statistics",
    _fields(
        (1, "max", BINARY, None), (2, "min", BINARY, None), (3, "null_count", I64, None),
        (4, "distinct_count", I64, None), (5, "max_value", BINARY, None), (6, "min_value", BINARY, None),
        (7, "is_max_value_exact", BOOL, None), (8, "is_min_value_exact", BOOL, None),
    ),
    values={3: _SIZE, 4: _SIZE},
)
_PAGE_ENCODING_STATS = Shape(
    "PageEncodingStats",
    _fields((1, "page_type", I32, None), (2, "encoding", I32, None), (3, "count", I32, None)),
    frozenset({1, 2, 3}),
    {1: _PAGE_TYPES, 2: _ENCODINGS, 3: _SIZE},
)
_SIZE_STATISTICS = Shape(
    "SizeStatistics",
    _fields(
        (1, "unencoded_byte_array_data_bytes", I64, None),
        (2, "repetition_level_histogram", LIST, (I64, _SIZE)),
        (3, "definition_level_histogram", LIST, (I64, _SIZE)),
    ),
    values={1: _SIZE},
)
_COLUMN_META = Shape(
    "ColumnMetaData",
    _fields(
        (1, "type", I32, None), (2, "encodings", LIST, (I32, _ENCODINGS)),
        (3, "path_in_schema", LIST, (BINARY, STRING)),
        (4, "codec", I32, None), (5, "num_values", I64, None), (6, "total_uncompressed_size", I64, None),
        (7, "total_compressed_size", I64, None), (8, "key_value_metadata", LIST, (STRUCT, _KEY_VALUE)),
        (9, "data_page_offset", I64, None), (10, "index_page_offset", I64, None),
        (11, "dictionary_page_offset", I64, None), (12, "statistics", STRUCT, _STATISTICS),
        (13, "encoding_stats", LIST, (STRUCT, _PAGE_ENCODING_STATS)), (14, "bloom_filter_offset", I64, None),
        (15, "bloom_filter_length", I32, None), (16, "size_statistics", STRUCT, _SIZE_STATISTICS),
        (17, "geospatial_statistics", STRUCT, None),
    ),
    frozenset({1, 2, 3, 4, 5, 6, 7, 9}),
    {1: _TYPES, 4: _CODECS, **dict.fromkeys((5, 6, 7, 9, 10, 11, 14, 15), _SIZE)},
)
_COLUMN_CHUNK = Shape(
    "ColumnChunk",
    _fields(
        (1, "file_path", BINARY, STRING), (2, "file_offset", I64, None), (3, "meta_data", STRUCT, _COLUMN_META),
        (4, "offset_index_offset", I64, None), (5, "offset_index_length", I32, None),
        (6, "column_index_offset", I64, None), (7, "column_index_length", I32, None),
        (8, "crypto_metadata", STRUCT, None), (9, "encrypted_column_metadata", BINARY, None),
    ),
    frozenset({2}),
    dict.fromkeys((2, 4, 5, 6, 7), _SIZE),
)
_SORTING_COLUMN = Shape(
    "SortingColumn",
    _fields((1, "column_idx", I32, None), (2, "descending", BOOL, None), (3, "nulls_first", BOOL, None)),
    frozenset({1, 2, 3}),
    {1: _SIZE},
)
_ROW_GROUP = Shape(
    "RowGroup",
    _fields(
        (1, "columns", LIST, (STRUCT, _COLUMN_CHUNK)), (2, "total_byte_size", I64, None),
        (3, "num_rows", I64, None), (4, "sorting_columns", LIST, (STRUCT, _SORTING_COLUMN)),
        (5, "file_offset", I64, None), (6, "total_compressed_size", I64, None), (7, "ordinal", I16, None),
    ),
    frozenset({1, 2, 3}),
    dict.fromkeys((2, 3, 5, 6, 7), _SIZE),
)
_COLUMN_ORDER = Shape(
    "ColumnOrder", _fields((1, "TYPE_ORDER", STRUCT, None), (2, "IEEE_754_TOTAL_ORDER", STRUCT, None)), union=True
)
#: ``FileMetaData``, the footer's root struct.
FILE_METADATA = Shape(
    "FileMetaData",
    _fields(
        (1, "version", I32, None), (2, "schema", LIST, (STRUCT, _SCHEMA_ELEMENT)), (3, "num_rows", I64, None),
        (4, "row_groups", LIST, (STRUCT, _ROW_GROUP)), (5, "key_value_metadata", LIST, (STRUCT, _KEY_VALUE)),
        (6, "created_by", BINARY, STRING), (7, "column_orders", LIST, (STRUCT, _COLUMN_ORDER)),
        (8, "encryption_algorithm", STRUCT, None), (9, "footer_signing_key_metadata", BINARY, None),
    ),
    frozenset({1, 2, 3, 4}),
    {3: _SIZE},
)
