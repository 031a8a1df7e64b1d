"""Arrow schemas of OME-Arrow shape and relationship tables.

A *shape table* has one row per object (a cell, a nucleus, a spot ...): its
id, the image and label image it belongs to, one geometry column in a
registered encoding, a centroid, a bounding box, a class, a confidence and
any number of measurement columns. A *relationship table* holds edges between
objects. Both carry JSON in their schema metadata (keys
:data:`SHAPES_METADATA_KEY` / :data:`RELATIONSHIPS_METADATA_KEY`) that says
what they are, so the files interchange with ``ome_arrow.shapes`` 0.1.0.

Geometry encodings and their Arrow storage (``coord`` = ``list<double>``
with one value per axis):

=========================  ==============================================
``geoarrow.point``          ``coord``
``geoarrow.linestring``     ``list<coord>``
``ome.pointcloud``          ``list<coord>``
``geoarrow.polygon``        ``list<list<coord>>`` (rings, each closed)
``geoarrow.multipolygon``   ``list<list<list<coord>>>``
``ome.boundingbox``         ``struct<min: coord, max: coord>``
``ome.labelmask``           ``struct<label_image_id: string, label_value: int64>``
``ome.mesh3d``              ``struct<vertices: list<coord3>, faces: list<list<int32>>>``
=========================  ==============================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from omeframe.model.arrow import OME_ARROW_TAG_VERSION
from omeframe.model.errors import ShapeValidationError

__all__ = [
    "GEOMETRY_ENCODINGS",
    "RELATIONSHIP_TYPES",
    "SHAPES_METADATA_KEY",
    "RELATIONSHIPS_METADATA_KEY",
    "SHAPE_COLUMNS",
    "geometry_storage_type",
    "shape_metadata",
    "shape_schema",
    "relationship_schema",
    "read_shape_metadata",
    "table_kind",
]

#: Registered geometry encodings (GeoArrow names for planar geometry, ``ome.*`` for the rest).
GEOMETRY_ENCODINGS: tuple[str, ...] = (
    "geoarrow.point",
    "geoarrow.linestring",
    "geoarrow.polygon",
    "geoarrow.multipolygon",
    "ome.boundingbox",
    "ome.labelmask",
    "ome.pointcloud",
    "ome.mesh3d",
)
#: Allowed ``relationship_type`` values.
RELATIONSHIP_TYPES: frozenset[str] = frozenset({"adjacent", "contains", "derived_from", "parent", "touches", "track"})
#: Schema metadata key of shape tables (value: JSON).
SHAPES_METADATA_KEY = b"ome.arrow.shapes"
#: Schema metadata key of relationship tables (value: JSON).
RELATIONSHIPS_METADATA_KEY = b"ome.arrow.relationships"
#: The fixed columns of a shape table besides its geometry column.
SHAPE_COLUMNS: tuple[str, ...] = (
    "object_id", "image_id", "label_image_id", "label_value", "centroid", "bbox", "class", "confidence",
)

_COORD = pa.list_(pa.float64())


def _bbox_type() -> pa.StructType:
    return pa.struct([pa.field("min", _COORD, nullable=False), pa.field("max", _COORD, nullable=False)])


def _check_encoding(encoding: Any) -> str:
    if encoding not in GEOMETRY_ENCODINGS:
        raise ShapeValidationError(
            f"unknown geometry encoding {encoding!r}; use one of {', '.join(GEOMETRY_ENCODINGS)}",
            field="geometry_encoding",
        )
    return str(encoding)


def geometry_storage_type(geometry_encoding: str, *, dimensions: int = 2) -> pa.DataType:
    """The Arrow type of a geometry column in ``geometry_encoding``.

    Coordinates are ``list<double>`` whatever ``dimensions`` is (their length
    is checked by validation, not by the type); ``ome.mesh3d`` vertices are
    always 3-D.

    Example
    -------
    >>> geometry_storage_type("geoarrow.polygon")
    ListType(list<item: list<item: list<item: double>>>)
    """
    enc = _check_encoding(geometry_encoding)
    if int(dimensions) < 1:
        raise ValueError(f"dimensions must be >= 1, got {dimensions}")
    if enc == "geoarrow.point":
        return _COORD
    if enc in ("geoarrow.linestring", "ome.pointcloud"):
        return pa.list_(_COORD)
    if enc == "geoarrow.polygon":
        return pa.list_(pa.list_(_COORD))
    if enc == "geoarrow.multipolygon":
        return pa.list_(pa.list_(pa.list_(_COORD)))
    if enc == "ome.boundingbox":
        return _bbox_type()
    if enc == "ome.labelmask":
        return pa.struct(
            [
                pa.field("label_image_id", pa.string(), nullable=False),
                pa.field("label_value", pa.int64(), nullable=False),
            ]
        )
    return pa.struct(
        [
            pa.field("vertices", pa.list_(_COORD), nullable=False),
            pa.field("faces", pa.list_(pa.list_(pa.int32())), nullable=False),
        ]
    )


def shape_metadata(
    *,
    geometry_encoding: str,
    axes: Sequence[str] = ("y", "x"),
    units: Sequence[str] | None = None,
    coordinate_space: str = "pixel",
    geometry_column: str = "geometry",
) -> dict[str, Any]:
    """The JSON document stored under :data:`SHAPES_METADATA_KEY`.

    Example
    -------
    >>> shape_metadata(geometry_encoding="geoarrow.point")["units"]
    ['pixel', 'pixel']
    """
    enc = _check_encoding(geometry_encoding)
    axes = [str(a) for a in axes]
    if not axes:
        raise ShapeValidationError("axes must name at least one axis, e.g. ('y', 'x')", field="axes")
    if len(set(axes)) != len(axes):
        raise ShapeValidationError(f"axes {axes} repeat a name; give each axis once", field="axes")
    unit_list = ["pixel"] * len(axes) if units is None else [str(u) for u in units]
    if len(unit_list) != len(axes):
        raise ShapeValidationError(
            f"units {unit_list} do not match axes {axes}: give one unit per axis", field="units"
        )
    return {
        "axes": axes,
        "coordinate_space": str(coordinate_space),
        "geometry_column": str(geometry_column),
        "geometry_encoding": enc,
        "type": "ome.arrow.shapes",
        "units": unit_list,
        "version": str(OME_ARROW_TAG_VERSION),
    }


def _with_json(schema: pa.Schema, key: bytes, doc: dict[str, Any]) -> pa.Schema:
    meta = dict(schema.metadata or {})
    meta[key] = json.dumps(doc, sort_keys=True).encode("utf-8")
    return schema.with_metadata(meta)


def shape_schema(
    geometry_encoding: str,
    *,
    axes: Sequence[str] = ("y", "x"),
    units: Sequence[str] | None = None,
    coordinate_space: str = "pixel",
    geometry_column: str = "geometry",
    measurement_fields: Iterable[pa.Field] | None = None,
) -> pa.Schema:
    """The Arrow schema of a shape table (with its metadata).

    Parameters
    ----------
    geometry_encoding
        One of :data:`GEOMETRY_ENCODINGS`.
    axes, units
        Axis names of every coordinate (geometry, centroid, bbox) and their
        units (``"pixel"`` each by default).
    coordinate_space
        What the coordinates are relative to (``"pixel"``: the image's pixel grid).
    geometry_column
        Name of the geometry column.
    measurement_fields
        Further columns (areas, intensities ...), after the fixed ones.

    Example
    -------
    >>> s = shape_schema("geoarrow.point", axes=("z", "y", "x"))
    >>> s.names[:5]
    ['object_id', 'image_id', 'label_image_id', 'label_value', 'geometry']
    """
    doc = shape_metadata(
        geometry_encoding=geometry_encoding, axes=axes, units=units,
        coordinate_space=coordinate_space, geometry_column=geometry_column,
    )
    fields = [
        pa.field("object_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string()),
        pa.field("label_image_id", pa.string()),
        pa.field("label_value", pa.int64()),
        pa.field(geometry_column, geometry_storage_type(geometry_encoding, dimensions=len(doc["axes"]))),
        pa.field("centroid", _COORD),
        pa.field("bbox", _bbox_type()),
        pa.field("class", pa.string()),
        pa.field("confidence", pa.float32()),
    ]
    names = {f.name for f in fields}
    for f in measurement_fields or ():
        if f.name in names:
            raise ShapeValidationError(
                f"measurement column {f.name!r} clashes with a fixed shape-table column; rename it",
                field=f.name,
            )
        names.add(f.name)
        fields.append(f)
    return _with_json(pa.schema(fields), SHAPES_METADATA_KEY, doc)


_RELATIONSHIP_FIELDS = [
    pa.field("parent_id", pa.string(), nullable=False),
    pa.field("child_id", pa.string(), nullable=False),
    pa.field("relationship_type", pa.string(), nullable=False),
    pa.field("confidence", pa.float32()),
]


def relationship_schema() -> pa.Schema:
    """The Arrow schema of a relationship table (with its metadata).

    Example
    -------
    >>> relationship_schema().names
    ['parent_id', 'child_id', 'relationship_type', 'confidence']
    """
    doc = {
        "relationship_types": sorted(RELATIONSHIP_TYPES),
        "type": "ome.arrow.relationships",
        "version": str(OME_ARROW_TAG_VERSION),
    }
    return _with_json(pa.schema(_RELATIONSHIP_FIELDS), RELATIONSHIPS_METADATA_KEY, doc)


def table_kind(schema: pa.Schema) -> str | None:
    """``"shapes"``, ``"relationships"`` or ``None`` from a schema's metadata keys."""
    meta = schema.metadata or {}
    if SHAPES_METADATA_KEY in meta:
        return "shapes"
    if RELATIONSHIPS_METADATA_KEY in meta:
        return "relationships"
    return None


def _json_doc(schema: pa.Schema, key: bytes, kind: str) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(key)
    if raw is None:
        raise ShapeValidationError(
            f"the schema has no {key.decode()!r} metadata, so this is not an OME-Arrow {kind} table; "
            f"build it with omeframe.make_{'shape' if kind == 'shape' else 'relationship'}_table",
            field=key.decode(),
        )
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShapeValidationError(f"{key.decode()!r} metadata is not JSON: {exc}", field=key.decode()) from exc
    if not isinstance(doc, dict) or doc.get("type") != key.decode():
        got = doc.get("type") if isinstance(doc, dict) else doc
        raise ShapeValidationError(
            f"{key.decode()!r} metadata has type {got!r}, expected {key.decode()!r}", field=key.decode()
        )
    return doc


def read_shape_metadata(schema: pa.Schema) -> dict[str, Any]:
    """The checked shape metadata of a schema (encoding, axes, units ...).

    Raises
    ------
    ShapeValidationError
        The metadata is missing, not JSON, of another type, names an unknown
        encoding, or its axes and units disagree.
    """
    doc = _json_doc(schema, SHAPES_METADATA_KEY, "shape")
    checked = shape_metadata(
        geometry_encoding=str(doc.get("geometry_encoding")),
        axes=doc.get("axes") or (),
        units=doc.get("units"),
        coordinate_space=doc.get("coordinate_space", "pixel"),
        geometry_column=doc.get("geometry_column", "geometry"),
    )
    checked["version"] = str(doc.get("version", checked["version"]))
    return checked


def read_relationship_metadata(schema: pa.Schema) -> dict[str, Any]:
    """The relationship metadata of a schema (raises :class:`ShapeValidationError` if absent)."""
    return _json_doc(schema, RELATIONSHIPS_METADATA_KEY, "relationship")
