"""Shape and relationship tables from Python rows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from omeframe.model.errors import ShapeValidationError
from omeframe.shapes.schema import SHAPE_COLUMNS, relationship_schema, shape_schema
from omeframe.shapes.validate import Errors, validate_relationship_table, validate_shape_table

__all__ = ["make_shape_table", "make_relationship_table"]


def _columns(rows: Sequence[Mapping[str, Any]], schema: pa.Schema, what: str) -> pa.Table:
    """Rows -> table, one column at a time so a value of the wrong type is named by row and field."""
    known = set(schema.names)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ShapeValidationError(f"{what} row {i} is a {type(row).__name__}, expected a dict", row=i)
        extra = set(row) - known
        if extra:
            raise ShapeValidationError(
                f"{what} row {i} has column(s) {sorted(extra)} the schema does not have", row=i,
                field=sorted(extra)[0],
            )
    arrays = []
    for f in schema:
        values = [row.get(f.name) for row in rows]
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            bad: int | None = next(_bad_row(values, f.type), None)
            oid = rows[bad].get("object_id") if bad is not None else None
            where = "a row" if bad is None else f"row {bad}" + (f" (object_id {oid!r})" if oid is not None else "")
            raise ShapeValidationError(
                f"{what} {where}, field {f.name!r}: the value does not fit {f.type} ({exc})",
                row=bad, field=f.name, object_id=None if oid is None else str(oid),
            ) from exc
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(None)).replace_schema_metadata(schema.metadata)


def _bad_row(values: list[Any], typ: pa.DataType) -> Iterator[int]:
    """Indices of the values that do not convert (only run after a conversion failed)."""
    for i, v in enumerate(values):
        try:
            pa.array([v], type=typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            yield i


def _measurement_fields(rows: Sequence[Mapping[str, Any]], geometry_column: str) -> list[pa.Field]:
    """Fields of the columns outside the fixed ones, by name, their types inferred from the values."""
    fixed = set(SHAPE_COLUMNS) | {geometry_column}
    names = sorted({k for row in rows if isinstance(row, Mapping) for k in row} - fixed)
    out = []
    for name in names:
        try:
            typ = pa.array([row.get(name) for row in rows]).type
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ShapeValidationError(
                f"measurement column {name!r} mixes values of incompatible types ({exc})", field=name
            ) from exc
        out.append(pa.field(name, typ))
    return out


def make_shape_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    geometry_encoding: str,
    axes: Sequence[str] = ("y", "x"),
    units: Sequence[str] | None = None,
    coordinate_space: str = "pixel",
    geometry_column: str = "geometry",
    validate: bool = True,
    errors: Errors = "raise",
) -> pa.Table:
    """A shape table from one dict per object.

    Parameters
    ----------
    rows
        Dicts with ``object_id`` (required) and any of ``image_id``,
        ``label_image_id``, ``label_value``, the geometry column, ``centroid``,
        ``bbox`` (``{"min": [...], "max": [...]}``), ``class``,
        ``confidence``; other keys become measurement columns (sorted by name).
    geometry_encoding, axes, units, coordinate_space, geometry_column
        As in :func:`~omeframe.shapes.shape_schema`.
    validate, errors
        Check the table (:func:`~omeframe.shapes.validate_shape_table`);
        ``errors="skip"`` adds an ``"error"`` column instead of raising.

    Returns
    -------
    pyarrow.Table

    Raises
    ------
    ShapeValidationError
        A value of the wrong type or an invalid geometry, named by row and field.

    Example
    -------
    >>> t = make_shape_table(
    ...     [{"object_id": "cell-1", "image_id": "img", "geometry": [[[0, 0], [0, 4], [4, 4], [0, 0]]], "area": 8.0}],
    ...     geometry_encoding="geoarrow.polygon",
    ... )
    >>> t.column_names[-1], t.num_rows
    ('area', 1)
    """
    rows = list(rows)
    schema = shape_schema(
        geometry_encoding, axes=axes, units=units, coordinate_space=coordinate_space,
        geometry_column=geometry_column, measurement_fields=_measurement_fields(rows, geometry_column),
    )
    table = _columns(rows, schema, "shape table")
    return validate_shape_table(table, errors=errors) if validate else table


def make_relationship_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    validate: bool = True,
    errors: Errors = "raise",
) -> pa.Table:
    """A relationship table from dicts with ``parent_id``, ``child_id``, ``relationship_type``, ``confidence``.

    Example
    -------
    >>> t = make_relationship_table([{"parent_id": "cell-1", "child_id": "nuc-1", "relationship_type": "contains"}])
    >>> t.to_pylist()[0]["confidence"] is None
    True
    """
    table = _columns(list(rows), relationship_schema(), "relationship table")
    return validate_relationship_table(table, errors=errors) if validate else table
