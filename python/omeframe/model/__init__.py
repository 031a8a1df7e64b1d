"""The canonical OME-Arrow schema: Arrow types, dtypes, record access."""

from omeframe.model.arrow import (
    BYTE_CHUNK_STRUCT,
    CHANNEL_STRUCT,
    CHUNK_GRID_STRUCT,
    DEFAULT_COLUMN_NAME,
    LIST_CHUNK_STRUCT,
    OME_ARROW_BYTE_STRUCT,
    OME_ARROW_KNOWN_STRUCTS,
    OME_ARROW_STRUCT,
    OME_ARROW_TAG_TYPE,
    OME_ARROW_TAG_VERSION,
    PIXELS_META_STRUCT,
    PLANE_STRUCT,
)
from omeframe.model.dtypes import SUPPORTED_DTYPES, dtype_name, to_numpy_dtype

__all__ = [
    "SUPPORTED_DTYPES",
    "dtype_name",
    "to_numpy_dtype",
    "BYTE_CHUNK_STRUCT",
    "CHANNEL_STRUCT",
    "CHUNK_GRID_STRUCT",
    "DEFAULT_COLUMN_NAME",
    "LIST_CHUNK_STRUCT",
    "OME_ARROW_BYTE_STRUCT",
    "OME_ARROW_KNOWN_STRUCTS",
    "OME_ARROW_STRUCT",
    "OME_ARROW_TAG_TYPE",
    "OME_ARROW_TAG_VERSION",
    "PIXELS_META_STRUCT",
    "PLANE_STRUCT",
]
