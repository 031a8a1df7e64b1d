"""Struct types and tags of OME-Arrow records (``ome_arrow.meta``)."""

from __future__ import annotations

from omeframe.model.arrow import (
    OME_ARROW_BYTE_STRUCT,
    OME_ARROW_STRUCT,
    OME_ARROW_TAG_TYPE,
    OME_ARROW_TAG_VERSION,
)

#: The record struct types a reader accepts as-is (list and byte variants).
OME_ARROW_KNOWN_STRUCTS = (OME_ARROW_STRUCT, OME_ARROW_BYTE_STRUCT)

__all__ = [
    "OME_ARROW_STRUCT",
    "OME_ARROW_BYTE_STRUCT",
    "OME_ARROW_TAG_TYPE",
    "OME_ARROW_TAG_VERSION",
    "OME_ARROW_KNOWN_STRUCTS",
]
