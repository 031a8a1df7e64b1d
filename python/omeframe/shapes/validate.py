"""Validation of shape and relationship tables, vectorised over Arrow buffers.

Each check works on whole columns (flattened list levels mapped back to their
rows with ``list_parent_indices``), so a table of a million objects is checked
without a Python loop per object; only the messages of rows that fail are
formatted one by one.

Checked: the metadata (present, JSON, a known encoding, one unit per axis),
the geometry column's type against the encoding, ``object_id`` present and
not null, every coordinate of geometry, centroid and bbox having one finite
value per axis (no NaN), polygon rings closed with at least 4 points, bbox
``min <= max``, mesh faces of >= 3 in-range vertex indices, labelmask fields
set, confidences in [0, 1]; for relationship tables the ids and type set and
the type one of :data:`~omeframe.shapes.schema.RELATIONSHIP_TYPES`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omeframe.model.errors import ShapeValidationError
from omeframe.shapes.schema import (
    RELATIONSHIP_TYPES,
    geometry_storage_type,
    read_relationship_metadata,
    read_shape_metadata,
)

__all__ = ["validate_shape_table", "validate_relationship_table", "ERROR_COLUMN"]

#: The column ``errors="skip"`` adds: ``None`` for valid rows, else what was wrong.
ERROR_COLUMN = "error"

Errors = Literal["raise", "skip"]


class _Problems:
    """Per-row problems, gathered as (row mask, field, message) triples."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.items: list[tuple[np.ndarray, str, str]] = []

    def add(self, rows: np.ndarray, field: str, message: str) -> None:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if rows.size:
            self.items.append((rows, field, message))

    def bad_fields(self) -> dict[int, list[tuple[str, str]]]:
        out: dict[int, list[tuple[str, str]]] = {}
        for rows, field, msg in self.items:
            for r in rows.tolist():
                out.setdefault(r, []).append((field, msg))
        return out

    def first(self) -> tuple[int, str, str] | None:
        best: tuple[int, str, str] | None = None
        for rows, field, msg in self.items:
            r = int(rows[0])
            if best is None or r < best[0]:
                best = (r, field, msg)
        return best


def _combine(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _down(arr: pa.Array, rows: np.ndarray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """One list level down: (children, row of each child, length of each list, nulls 0)."""
    child = pc.list_flatten(arr)
    parents = np.asarray(pc.list_parent_indices(arr), dtype=np.int64)
    lengths = np.asarray(pc.list_value_length(arr).fill_null(0), dtype=np.int64)
    return child, rows[parents] if parents.size else parents, lengths


def _coords(
    problems: _Problems, coords: pa.Array, rows: np.ndarray, dims: int, field: str, what: str,
    axes: list[str],
) -> np.ndarray:
    """Check a ``list<double>`` array of coordinates; return them as ``(n, dims)`` (NaN where bad)."""
    n = len(coords)
    null = np.asarray(coords.is_null(), dtype=bool)
    lengths = np.asarray(pc.list_value_length(coords).fill_null(0), dtype=np.int64)
    problems.add(rows[null], field, f"a {what} is null")
    wrong = ~null & (lengths != dims)
    if wrong.any():
        problems.add(
            rows[wrong], field,
            f"a {what} has {int(lengths[wrong][0])} value(s); expected {dims} (one per axis {tuple(axes)})",
        )
    values = np.asarray(pc.list_flatten(coords).cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n else np.zeros(0, np.int64)
    if values.size:
        vrow = np.repeat(np.arange(n), lengths)
        nonfinite = ~np.isfinite(values)
        problems.add(rows[vrow[nonfinite]], field, f"a {what} holds NaN, infinite or null values")
    ok = ~null & (lengths == dims)
    out = np.full((n, dims), np.nan)
    if ok.any():
        idx = starts[ok][:, None] + np.arange(dims)[None, :]
        out[ok] = values[idx]
    return out


def _check_rings(
    problems: _Problems, rings: pa.Array, rows: np.ndarray, dims: int, field: str, axes: list[str]
) -> None:
    coords, crow, nper = _down(rings, rows)
    xy = _coords(problems, coords, crow, dims, field, "polygon point", axes)
    ring_null = np.asarray(rings.is_null(), dtype=bool)
    problems.add(rows[ring_null], field, "a polygon ring is null")
    short = ~ring_null & (nper < 4)
    problems.add(rows[short], field, "a polygon ring has fewer than 4 points (a closed ring repeats its first point)")
    has = ~ring_null & (nper >= 1)
    if has.any():
        starts = np.concatenate([[0], np.cumsum(nper)[:-1]])
        first = xy[starts[has]]
        last = xy[starts[has] + nper[has] - 1]
        known = np.isfinite(first).all(axis=1) & np.isfinite(last).all(axis=1)
        open_ = known & ~(first == last).all(axis=1)
        problems.add(
            rows[has][open_], field,
            "a polygon ring is not closed (its last point must repeat its first); append the first point",
        )


def _check_bbox(problems: _Problems, col: pa.Array, rows: np.ndarray, dims: int, field: str, axes: list[str]) -> None:
    valid = np.asarray(col.is_valid(), dtype=bool)
    if not valid.any():
        return
    sub = col.filter(pa.array(valid))
    r = rows[valid]
    lo = _coords(problems, sub.field("min"), r, dims, field, "bbox min", axes)
    hi = _coords(problems, sub.field("max"), r, dims, field, "bbox max", axes)
    inverted = (lo > hi).any(axis=1)
    problems.add(r[inverted], field, "a bbox has min > max on some axis")


def _check_geometry(
    problems: _Problems, col: pa.Array, encoding: str, dims: int, field: str, axes: list[str]
) -> None:
    rows = np.arange(len(col), dtype=np.int64)
    if encoding == "geoarrow.point":
        present = np.asarray(col.is_valid(), dtype=bool)
        _coords(problems, col.filter(pa.array(present)), rows[present], dims, field, "point", axes)
    elif encoding in ("geoarrow.linestring", "ome.pointcloud"):
        coords, crow, _ = _down(col, rows)
        _coords(problems, coords, crow, dims, field, "point", axes)
    elif encoding == "geoarrow.polygon":
        rings, rrow, _ = _down(col, rows)
        _check_rings(problems, rings, rrow, dims, field, axes)
    elif encoding == "geoarrow.multipolygon":
        polys, prow, _ = _down(col, rows)
        problems.add(prow[np.asarray(polys.is_null(), dtype=bool)], field, "a polygon of the multipolygon is null")
        rings, rrow, _ = _down(polys, prow)
        _check_rings(problems, rings, rrow, dims, field, axes)
    elif encoding == "ome.boundingbox":
        _check_bbox(problems, col, rows, dims, field, axes)
    elif encoding == "ome.labelmask":
        valid = np.asarray(col.is_valid(), dtype=bool)
        for sub in ("label_image_id", "label_value"):
            missing = valid & np.asarray(col.field(sub).is_null(), dtype=bool)
            problems.add(rows[missing], field, f"a label mask has no {sub}")
    else:  # ome.mesh3d
        valid = np.asarray(col.is_valid(), dtype=bool)
        sub = col.filter(pa.array(valid))
        r = rows[valid]
        verts = sub.field("vertices")
        faces = sub.field("faces")
        problems.add(r[np.asarray(verts.is_null(), dtype=bool)], field, "a mesh has no vertices")
        problems.add(r[np.asarray(faces.is_null(), dtype=bool)], field, "a mesh has no faces")
        vcoords, vrow, nverts = _down(verts, r)
        _coords(problems, vcoords, vrow, 3, field, "mesh vertex", ["z", "y", "x"])
        face_list, frow, _ = _down(faces, np.arange(len(sub), dtype=np.int64))
        flen = np.asarray(pc.list_value_length(face_list).fill_null(0), dtype=np.int64)
        problems.add(r[frow[flen < 3]], field, "a mesh face has fewer than 3 vertex indices")
        idx, irow, _ = _down(face_list, frow)
        ix = np.asarray(idx.cast(pa.int64()).fill_null(-1), dtype=np.int64)
        bad = (ix < 0) | (ix >= nverts[irow])
        problems.add(r[irow[bad]], field, "a mesh face refers to a vertex index outside the mesh's vertices")


def _check_confidence(problems: _Problems, table: pa.Table) -> None:
    if "confidence" not in table.column_names:
        return
    c = np.asarray(_combine(table["confidence"]).cast(pa.float64()).fill_null(0.5), dtype=np.float64)
    bad = ~((c >= 0) & (c <= 1))
    problems.add(np.flatnonzero(bad), "confidence", "confidence must be between 0 and 1")


def _object_ids(table: pa.Table) -> list[Any] | None:
    return _combine(table["object_id"]).to_pylist() if "object_id" in table.column_names else None


def _finish(
    table: pa.Table, problems: _Problems, errors: Errors, what: str, ids: list[Any] | None
) -> pa.Table:
    if errors == "raise":
        first = problems.first()
        if first is None:
            return table
        row, field, msg = first
        oid = None if ids is None else ids[row]
        who = f"row {row}" + (f" (object_id {oid!r})" if oid is not None else "")
        total = len(problems.bad_fields())
        more = f"; {total - 1} more row(s) are invalid too" if total > 1 else ""
        raise ShapeValidationError(
            f"{what} {who}, field {field!r}: {msg}{more}. Fix the value, or pass errors='skip' to keep "
            f"the rows with the reason in an {ERROR_COLUMN!r} column and the bad values set to null",
            row=row, field=field, object_id=None if oid is None else str(oid),
        )
    bad = problems.bad_fields()
    texts: list[str | None] = [None] * table.num_rows
    null_rows: dict[str, list[int]] = {}
    for r, items in bad.items():
        texts[r] = "; ".join(f"{f}: {m}" for f, m in items)
        for f, _ in items:
            null_rows.setdefault(f, []).append(r)
    for f, rs in null_rows.items():
        idx = table.column_names.index(f)
        if not table.schema.field(f).nullable:
            continue  # an id column: the row keeps it, the error column says what is wrong
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[rs] = True
        col = _combine(table[f])
        nulled = pc.if_else(pa.array(mask), pa.nulls(len(col), col.type), col)
        table = table.set_column(idx, table.schema.field(f), nulled)
    err = pa.array(texts, pa.string())
    if ERROR_COLUMN in table.column_names:
        return table.set_column(table.column_names.index(ERROR_COLUMN), ERROR_COLUMN, err)
    return table.append_column(pa.field(ERROR_COLUMN, pa.string()), err)


def _check_errors_arg(errors: str) -> Errors:
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    return errors  # type: ignore[return-value]


def validate_shape_table(table: pa.Table, *, errors: Errors = "raise") -> pa.Table:
    """Check a shape table; return it (with an error column under ``errors="skip"``).

    Parameters
    ----------
    table
        A shape table (schema metadata under ``b"ome.arrow.shapes"``).
    errors
        ``"raise"``: raise on the first invalid row. ``"skip"``: return the
        table with a string column ``"error"`` (``None`` for valid rows, the
        field and reason for invalid ones) and the invalid values set to null,
        so the result is a valid table. Schema problems always raise.

    Returns
    -------
    pyarrow.Table

    Raises
    ------
    ShapeValidationError
        A ``ValueError`` naming the row, its ``object_id`` and the field
        (``.row``, ``.field``, ``.object_id``), or the schema problem.

    Example
    -------
    >>> from omeframe.shapes import make_shape_table
    >>> t = make_shape_table([{"object_id": "a", "geometry": [1.0, 2.0]}], geometry_encoding="geoarrow.point")
    >>> validate_shape_table(t).num_rows
    1
    """
    errs = _check_errors_arg(errors)
    if not isinstance(table, pa.Table):
        raise TypeError(f"expected a pyarrow.Table, got {type(table).__name__}")
    meta = read_shape_metadata(table.schema)
    gcol, enc, axes = meta["geometry_column"], meta["geometry_encoding"], meta["axes"]
    dims = len(axes)
    for name in ("object_id", gcol):
        if name not in table.column_names:
            raise ShapeValidationError(f"shape table has no {name!r} column (columns: {table.column_names})",
                                       field=name)
    want = geometry_storage_type(enc, dimensions=dims)
    got = table.schema.field(gcol).type
    if got != want:
        raise ShapeValidationError(
            f"column {gcol!r} is {got}, but encoding {enc!r} is stored as {want}", field=gcol
        )
    problems = _Problems(table.num_rows)
    problems.add(np.flatnonzero(np.asarray(_combine(table["object_id"]).is_null(), dtype=bool)),
                 "object_id", "object_id is null")
    _check_geometry(problems, _combine(table[gcol]), enc, dims, gcol, axes)
    rows = np.arange(table.num_rows, dtype=np.int64)
    if "centroid" in table.column_names:
        cen = _combine(table["centroid"])
        present = np.asarray(cen.is_valid(), dtype=bool)
        _coords(problems, cen.filter(pa.array(present)), rows[present], dims, "centroid", "centroid", axes)
    if "bbox" in table.column_names and gcol != "bbox":
        _check_bbox(problems, _combine(table["bbox"]), rows, dims, "bbox", axes)
    _check_confidence(problems, table)
    return _finish(table, problems, errs, "shape table", _object_ids(table) if problems.items else None)


def validate_relationship_table(table: pa.Table, *, errors: Errors = "raise") -> pa.Table:
    """Check a relationship table (``parent_id, child_id, relationship_type, confidence``).

    ``errors`` as in :func:`validate_shape_table`; rows whose ids or type are
    invalid keep their values and get the reason in the ``"error"`` column.

    Example
    -------
    >>> from omeframe.shapes import make_relationship_table
    >>> t = make_relationship_table([{"parent_id": "cell-1", "child_id": "nuc-1", "relationship_type": "contains"}])
    >>> validate_relationship_table(t).num_rows
    1
    """
    errs = _check_errors_arg(errors)
    if not isinstance(table, pa.Table):
        raise TypeError(f"expected a pyarrow.Table, got {type(table).__name__}")
    read_relationship_metadata(table.schema)
    problems = _Problems(table.num_rows)
    for name in ("parent_id", "child_id", "relationship_type"):
        if name not in table.column_names:
            raise ShapeValidationError(
                f"relationship table has no {name!r} column (columns: {table.column_names})", field=name
            )
        problems.add(np.flatnonzero(np.asarray(_combine(table[name]).is_null(), dtype=bool)), name, f"{name} is null")
    rtype = _combine(table["relationship_type"])
    known = pa.array(sorted(RELATIONSHIP_TYPES), pa.string())
    unknown = np.asarray(pc.invert(pc.is_in(rtype.cast(pa.string()), value_set=known)).fill_null(False), dtype=bool)
    if unknown.any():
        first = rtype[int(np.flatnonzero(unknown)[0])].as_py()
        problems.add(
            np.flatnonzero(unknown), "relationship_type",
            f"relationship_type {first!r} is not one of {', '.join(sorted(RELATIONSHIP_TYPES))}",
        )
    _check_confidence(problems, table)
    return _finish(table, problems, errs, "relationship table", None)
