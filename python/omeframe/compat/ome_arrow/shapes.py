"""Shape and relationship tables (``ome_arrow.shapes``), mapped onto :mod:`omeframe.shapes`.

Tables, metadata and checks are omeframe's; the errors (``ValueError``
subclasses naming the offending row and field) start with ome-arrow's words
(``"Unsupported geometry_encoding"``, ``"Missing schema metadata"``,
``"geometry row 0"``, ``"child_id values must not be null"``,
``"Unsupported relationship_type"``), followed by omeframe's explanation.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from omeframe import shapes as _shapes
from omeframe.model.errors import ShapeValidationError
from omeframe.shapes import relationship_schema, shape_metadata
from omeframe.shapes.schema import read_shape_metadata

OME_ARROW_SHAPES_METADATA_KEY = _shapes.SHAPES_METADATA_KEY
OME_ARROW_RELATIONSHIPS_METADATA_KEY = _shapes.RELATIONSHIPS_METADATA_KEY
SUPPORTED_GEOMETRY_ENCODINGS = frozenset(_shapes.GEOMETRY_ENCODINGS)
RELATIONSHIP_TYPES = frozenset(_shapes.RELATIONSHIP_TYPES)

__all__ = [
    "OME_ARROW_SHAPES_METADATA_KEY",
    "OME_ARROW_RELATIONSHIPS_METADATA_KEY",
    "SUPPORTED_GEOMETRY_ENCODINGS",
    "RELATIONSHIP_TYPES",
    "OMEArrowShapes",
    "geometry_storage_type",
    "make_relationship_table",
    "make_shape_table",
    "read_shape_parquet",
    "relationship_schema",
    "shape_metadata",
    "shape_schema",
    "validate_relationship_table",
    "validate_shape_table",
    "write_shape_parquet",
]


_METADATA_KEYS = {
    k.decode() if isinstance(k, bytes) else str(k)
    for k in (OME_ARROW_SHAPES_METADATA_KEY, OME_ARROW_RELATIONSHIPS_METADATA_KEY)
}
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reference_words(err: ShapeValidationError) -> str:
    """``err``'s message led by the words ome-arrow 0.1.0 uses for the same problem."""
    msg, field, row = str(err), err.field, err.row
    if field == "geometry_encoding":
        head = "Unsupported geometry_encoding"
    elif row is None and field in _METADATA_KEYS:
        head = f"Missing schema metadata {field!r}"
    elif row is not None and field == "relationship_type" and "is not one of" in msg:
        head = f"Unsupported relationship_type in row {row}"
    elif row is not None and msg.split(". Fix the value")[0].endswith(f"{field} is null"):
        head = f"{field} values must not be null (row {row})"
    elif row is not None and field is not None:
        head = f"{field} row {row}"
    else:
        return msg
    return f"{head}: {msg}"


def _with_reference_words(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` raising its :class:`ShapeValidationError` with :func:`_reference_words`."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except ShapeValidationError as err:
            raise ShapeValidationError(
                _reference_words(err), row=err.row, field=err.field, object_id=err.object_id
            ) from err

    return wrapper


shape_schema = _with_reference_words(_shapes.shape_schema)
geometry_storage_type = _with_reference_words(_shapes.geometry_storage_type)
make_shape_table = _with_reference_words(_shapes.make_shape_table)
make_relationship_table = _with_reference_words(_shapes.make_relationship_table)


@_with_reference_words
def validate_shape_table(table: pa.Table) -> None:
    """Raise ``ValueError`` naming the first invalid row and field; return ``None`` when valid."""
    _shapes.validate_shape_table(table)


@_with_reference_words
def validate_relationship_table(table: pa.Table) -> None:
    """Raise ``ValueError`` naming the first invalid edge; return ``None`` when valid."""
    _shapes.validate_relationship_table(table)


def write_shape_parquet(
    table: pa.Table,
    path: str | os.PathLike[str],
    *,
    compression: str | None = "zstd",
    row_group_size: int | None = 65536,
    use_dictionary: bool | list[str] = True,
    validate: bool = True,
) -> None:
    """Write a shape or relationship table to Parquet (validated first unless ``validate=False``)."""
    if validate:
        _validate_any(table)
    pq.write_table(
        table, os.fspath(path), compression=compression, row_group_size=row_group_size,
        use_dictionary=use_dictionary, write_page_checksum=True,  # checked by read_shape_parquet
    )


def _validate_any(table: pa.Table) -> None:
    meta = table.schema.metadata or {}
    if OME_ARROW_RELATIONSHIPS_METADATA_KEY in meta:
        validate_relationship_table(table)
    else:
        validate_shape_table(table)


def read_shape_parquet(
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    filters: Any | None = None,
    memory_map: bool = True,
    validate: bool = True,
) -> pa.Table:
    """Read a shape table with column projection and row filters (pyarrow filter syntax).

    Pages that carry a CRC-32 (all pages :func:`write_shape_parquet` writes) are
    checked: a damaged one raises ``OSError`` naming the CRC mismatch.
    """
    table = pq.read_table(
        os.fspath(path), columns=None if columns is None else list(columns), filters=filters,
        memory_map=memory_map, page_checksum_verification=True,
    )
    if validate and columns is None:
        _validate_any(table)
    return table


class OMEArrowShapes:
    """A validated shape table with its metadata (``ome_arrow.shapes.OMEArrowShapes``).

    Example
    -------
    >>> s = OMEArrowShapes.from_rows(
    ...     [{"object_id": "o1", "image_id": "img", "geometry": [1.0, 2.0]}],
    ...     geometry_encoding="geoarrow.point")
    >>> s.geometry_encoding
    'geoarrow.point'
    """

    def __init__(self, table: pa.Table) -> None:
        validate_shape_table(table)
        self.table = table

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[dict[str, Any]],
        *,
        geometry_encoding: str,
        axes: Sequence[str] = ("y", "x"),
        units: Sequence[str] | None = None,
        coordinate_space: str = "pixel",
        geometry_column: str = "geometry",
    ) -> OMEArrowShapes:
        """Build the table from row dicts (see :func:`make_shape_table`)."""
        return cls(
            make_shape_table(
                rows, geometry_encoding=geometry_encoding, axes=axes, units=units,
                coordinate_space=coordinate_space, geometry_column=geometry_column,
            )
        )

    @property
    def metadata(self) -> dict[str, Any]:
        """The table's ``ome.arrow.shapes`` metadata document."""
        return read_shape_metadata(self.table.schema)

    @property
    def geometry_encoding(self) -> str:
        """The geometry encoding (``geoarrow.polygon``, ``ome.boundingbox`` ...)."""
        return str(self.metadata["geometry_encoding"])

    @property
    def axes(self) -> tuple[str, ...]:
        """The coordinate axes, e.g. ``("y", "x")``."""
        return tuple(self.metadata["axes"])

    def for_image(self, image_id: str) -> OMEArrowShapes:
        """The shapes of one image (a vectorised filter on ``image_id``)."""
        import pyarrow.compute as pc

        return OMEArrowShapes(self.table.filter(pc.equal(self.table["image_id"], image_id)))
