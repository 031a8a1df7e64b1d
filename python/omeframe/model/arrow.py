"""Arrow types of the canonical OME-Arrow record (both struct variants).

The types match the OME-Arrow specification as published by ``ome-arrow``
0.1.0 field for field, in the same order and with the same Arrow types, so
files written by either implementation open in the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

__all__ = [
    "field_type",
    "OME_ARROW_TAG_TYPE",
    "OME_ARROW_TAG_VERSION",
    "METADATA_KEY_TYPE",
    "METADATA_KEY_VERSION",
    "METADATA_KEY_WRITER",
    "METADATA_KEY_FILE",
    "CHANNEL_STRUCT",
    "PIXELS_META_STRUCT",
    "CHUNK_GRID_STRUCT",
    "LIST_CHUNK_STRUCT",
    "BYTE_CHUNK_STRUCT",
    "PLANE_STRUCT",
    "OME_ARROW_STRUCT",
    "OME_ARROW_BYTE_STRUCT",
    "OME_ARROW_KNOWN_STRUCTS",
    "DEFAULT_COLUMN_NAME",
]

#: Value of the record's ``type`` field and of the ``ome.arrow.type`` file key.
OME_ARROW_TAG_TYPE = "ome.arrow"
#: Version of the OME-Arrow specification omeframe writes.
OME_ARROW_TAG_VERSION = "0.1.0"

#: File-level (schema) metadata keys that mark an OME-Arrow table.
METADATA_KEY_TYPE = b"ome.arrow.type"
METADATA_KEY_VERSION = b"ome.arrow.version"
#: omeframe's own key: which library and version wrote the file.
METADATA_KEY_WRITER = b"omeframe.writer"
#: omeframe's key in the footer alone of a Parquet file its writers wrote (never in the
#: stored Arrow schema, so a table read from the file does not carry it into another): it
#: marks the file as omeframe's own, held to its writers' rules, and records facts the
#: footer keeps no second copy of (JSON; ``codecs``: each leaf column's page codec, one
#: digit per leaf, the Thrift ``CompressionCodec`` value, in leaf order).
METADATA_KEY_FILE = b"omeframe.file"

#: Default name of the column that holds OME-Arrow records.
DEFAULT_COLUMN_NAME = "ome_arrow"

CHANNEL_STRUCT = pa.struct(
    [
        pa.field("id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("emission_um", pa.float32()),
        pa.field("excitation_um", pa.float32()),
        pa.field("illumination", pa.string()),
        pa.field("color_rgba", pa.uint32()),  # packed 0xRRGGBBAA
    ]
)

PIXELS_META_STRUCT = pa.struct(
    [
        pa.field("dimension_order", pa.string()),
        pa.field("type", pa.string()),
        pa.field("size_x", pa.int32()),
        pa.field("size_y", pa.int32()),
        pa.field("size_z", pa.int32()),
        pa.field("size_c", pa.int16()),
        pa.field("size_t", pa.int32()),
        pa.field("physical_size_x", pa.float32()),
        pa.field("physical_size_y", pa.float32()),
        pa.field("physical_size_z", pa.float32()),
        pa.field("physical_size_x_unit", pa.string()),
        pa.field("physical_size_y_unit", pa.string()),
        pa.field("physical_size_z_unit", pa.string()),
        pa.field("channels", pa.list_(CHANNEL_STRUCT)),
    ]
)

CHUNK_GRID_STRUCT = pa.struct(
    [
        pa.field("order", pa.string()),
        pa.field("chunk_t", pa.int32()),
        pa.field("chunk_c", pa.int16()),
        pa.field("chunk_z", pa.int32()),
        pa.field("chunk_y", pa.int32()),
        pa.field("chunk_x", pa.int32()),
        pa.field("chunk_order", pa.string()),
    ]
)

_CHUNK_KEY_FIELDS = [
    pa.field("t", pa.int32()),
    pa.field("c", pa.int16()),
    pa.field("z", pa.int32()),
    pa.field("y", pa.int32()),
    pa.field("x", pa.int32()),
    pa.field("shape_z", pa.int32()),
    pa.field("shape_y", pa.int32()),
    pa.field("shape_x", pa.int32()),
]

#: A chunk of the list variant: pixels as a flat ``list<uint16>`` in ZYX order.
LIST_CHUNK_STRUCT = pa.struct([*_CHUNK_KEY_FIELDS, pa.field("pixels", pa.list_(pa.uint16()))])

#: A chunk of the byte variant: native-dtype bytes, optionally compressed.
BYTE_CHUNK_STRUCT = pa.struct(
    [
        *_CHUNK_KEY_FIELDS,
        pa.field("dtype", pa.string()),
        pa.field("compression", pa.string()),
        pa.field("pixel_bytes", pa.large_binary()),
    ]
)

PLANE_STRUCT = pa.struct(
    [
        pa.field("z", pa.int32()),
        pa.field("t", pa.int32()),
        pa.field("c", pa.int16()),
        pa.field("pixels", pa.list_(pa.uint16())),
    ]
)


def _record_struct(chunk_struct: pa.StructType) -> pa.StructType:
    return pa.struct(
        [
            pa.field("type", pa.string()),
            pa.field("version", pa.string()),
            pa.field("id", pa.string()),
            pa.field("name", pa.string()),
            pa.field("image_type", pa.string()),
            pa.field("acquisition_datetime", pa.timestamp("us")),
            pa.field("pixels_meta", PIXELS_META_STRUCT),
            pa.field("chunk_grid", CHUNK_GRID_STRUCT),
            pa.field("chunks", pa.list_(chunk_struct)),
            pa.field("planes", pa.list_(PLANE_STRUCT)),
            pa.field("masks", pa.null()),
        ]
    )


#: The list variant: SQL-friendly ``list<uint16>`` pixels (uint16-range data only).
OME_ARROW_STRUCT: pa.StructType = _record_struct(LIST_CHUNK_STRUCT)
#: The byte variant: native-dtype, optionally compressed chunk bytes (default).
OME_ARROW_BYTE_STRUCT: pa.StructType = _record_struct(BYTE_CHUNK_STRUCT)
#: Both canonical variants.
OME_ARROW_KNOWN_STRUCTS: tuple[pa.StructType, pa.StructType] = (
    OME_ARROW_STRUCT,
    OME_ARROW_BYTE_STRUCT,
)


def field_type(schema: pa.Schema, path: Sequence[str]) -> pa.DataType | None:
    """Arrow type at a struct path (``("ome_arrow", "pixels_meta", "size_x")``), or ``None``."""
    if not path or path[0] not in schema.names:
        return None
    t = schema.field(path[0]).type
    for name in path[1:]:
        if not pa.types.is_struct(t) or t.get_field_index(name) < 0:
            return None
        t = t.field(name).type
    return t
