"""Objects: OME-Arrow shape tables and relationship tables.

Shape tables hold one row per object (geometry in a GeoArrow-style or
``ome.*`` encoding, centroid, bbox, class, measurements) tied to images by
``image_id`` / ``label_image_id``; relationship tables hold edges between
objects. The schemas and their metadata are those of ``ome_arrow.shapes``
0.1.0, so files interchange both ways. Beyond the reference,
:func:`shapes_from_labels` measures the objects of a label image, streaming,
and :func:`crop_objects` crops objects out of their images into a record table.
"""

from __future__ import annotations

from omeframe.shapes.build import make_relationship_table, make_shape_table
from omeframe.shapes.crop import crop_objects
from omeframe.shapes.io import read_shapes, write_shapes
from omeframe.shapes.labels import shapes_from_labels
from omeframe.shapes.schema import (
    GEOMETRY_ENCODINGS,
    RELATIONSHIP_TYPES,
    RELATIONSHIPS_METADATA_KEY,
    SHAPES_METADATA_KEY,
    geometry_storage_type,
    read_shape_metadata,
    relationship_schema,
    shape_metadata,
    shape_schema,
)
from omeframe.shapes.validate import ERROR_COLUMN, validate_relationship_table, validate_shape_table

__all__ = [
    "GEOMETRY_ENCODINGS",
    "RELATIONSHIP_TYPES",
    "SHAPES_METADATA_KEY",
    "RELATIONSHIPS_METADATA_KEY",
    "ERROR_COLUMN",
    "geometry_storage_type",
    "shape_metadata",
    "shape_schema",
    "relationship_schema",
    "read_shape_metadata",
    "make_shape_table",
    "make_relationship_table",
    "validate_shape_table",
    "validate_relationship_table",
    "write_shapes",
    "read_shapes",
    "shapes_from_labels",
    "crop_objects",
]
