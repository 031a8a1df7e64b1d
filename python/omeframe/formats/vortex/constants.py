"""List columns that repeat one value in every row, handed to Vortex as constants.

vortex-data 0.93 writes a list column whose rows are all equal very slowly:
it notices the repetition and stores a constant, but finding it costs about
2 µs per row (10⁵ rows of ``pixels_meta.channels``, three channels each:
0.62 s, against 4 ms for lists that differ between rows and 25 ms for the
same column handed over as a constant). Every table of crops written from a
stack has such a column (the same channels on every image), so it set about
two thirds of a Vortex write.

:func:`to_vortex` therefore converts a record batch itself: each list field
(at the top level, or inside structs without nulls) whose rows are
bit-for-bit identical in the batch becomes a Vortex literal, the rest is
passed through unchanged. The file holds the same logical values and the same
types; Vortex would have stored the column as a constant anyway, and reading
is unchanged. A literal is used only when its first row reads back bit for
bit as the batch's first row (floats compared by their bits).

Example
-------
>>> import pyarrow as pa
>>> from omeframe.formats.vortex.constants import constant_lists
>>> batch = pa.record_batch({"tags": [["a", "b"]] * 300, "n": list(range(300))})
>>> constant_lists(batch)
[('tags',)]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["MIN_ROWS", "constant_lists", "RowPattern", "to_vortex"]

#: Batches with fewer rows are converted as they are (the check would cost more than it saves).
MIN_ROWS = 256


def _bits(arr: pa.Array) -> pa.Array:
    """``arr`` with floating-point values reinterpreted as unsigned integers (recursively), for exact equality."""
    kind = arr.type
    if pa.types.is_floating(kind):
        width = {16: pa.uint16(), 32: pa.uint32(), 64: pa.uint64()}[kind.bit_width]
        return pa.Array.from_buffers(width, len(arr), arr.buffers()[:2], null_count=arr.null_count, offset=arr.offset)
    if pa.types.is_struct(kind):
        children = [_bits(arr.field(i)) for i in range(kind.num_fields)]
        fields = [kind.field(i).with_type(c.type) for i, c in enumerate(children)]
        return pa.StructArray.from_arrays(children, fields=fields, mask=arr.is_null() if arr.null_count else None)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        values = _bits(arr.flatten())
        offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        offsets = offsets - offsets[0]
        list_type = pa.large_list(kind.value_field.with_type(values.type))
        return pa.LargeListArray.from_arrays(
            pa.array(offsets), values, type=list_type, mask=arr.is_null() if arr.null_count else None
        )
    return arr


class RowPattern:
    """The values every row of some list arrays holds, checked array by array, bit for bit.

    Floats are compared by their bits, nulls as nulls; a list array matches
    when it has no null rows and each of its rows holds exactly the values
    of the first row of the first array given (which must hold at least
    one). Used to find constant list columns before a write and, by
    :mod:`omeframe.formats.vortex.take`, list fields that repeat one pattern
    in every row of a file (there, split by split: the repeated pattern is
    built once per row count).

    Example
    -------
    >>> rp = RowPattern()
    >>> rp.matches(pa.array([[1, 2], [1, 2]])), rp.matches(pa.array([[1, 2]])), rp.values.to_pylist()
    (True, True, [1, 2])
    >>> rp.matches(pa.array([[1, 3]]))
    False
    """

    def __init__(self) -> None:
        #: the values of one row (``None`` until an array matched)
        self.values: pa.Array | None = None
        self._tiled: dict[int, pa.Array] = {}

    def matches(self, lst: pa.Array) -> bool:
        """Whether every row of the list array ``lst`` holds :attr:`values` (set from ``lst`` if unset)."""
        n = len(lst)
        if not n or lst.null_count:
            return False
        offsets = np.asarray(lst.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        lengths = np.diff(offsets)
        k = int(lengths[0]) if self.values is None else len(self.values)
        if k == 0 or (lengths != k).any():
            return False
        values = lst.flatten()
        if self.values is None:
            self.values = values.slice(0, k)
        # a few rows first: rows that differ (pixel bytes ...) are found without tiling the pattern n times
        first = _bits(self.values)
        if any(not _bits(values.slice(i * k, k)).equals(first) for i in sorted({1, n // 2, n - 1}) if i < n):
            return False
        tiled = self._tiled.get(n)
        if tiled is None:
            tiled = self._tiled[n] = _bits(self.values).take(pa.array(np.tile(np.arange(k), n)))
        return bool(tiled.equals(_bits(values)))


def _is_constant(lst: pa.Array) -> bool:
    """Whether every row of the list array ``lst`` equals its first row, bit for bit (no nulls, ≥ 2 rows)."""
    return len(lst) >= 2 and RowPattern().matches(lst)


def _children(arr: pa.StructArray) -> list[pa.Array]:
    return [arr.field(i) for i in range(arr.type.num_fields)]


def _constant_paths(arr: pa.Array, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Paths (field names from the batch's root) of the constant list fields in ``arr`` and below."""
    kind = arr.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return [path] if _is_constant(arr) else []
    if pa.types.is_struct(kind) and not arr.null_count:  # a rebuilt struct must keep its nulls: none
        pairs = zip(_children(arr), kind, strict=True)
        return [p for child, f in pairs for p in _constant_paths(child, (*path, f.name))]
    return []


def constant_lists(batch: pa.RecordBatch) -> list[tuple[str, ...]]:
    """Paths (field names from the root) of the list fields of ``batch`` whose rows are all the same."""
    if batch.num_rows < MIN_ROWS:
        return []
    pairs = zip(batch.columns, batch.schema.names, strict=True)
    return [p for col, name in pairs for p in _constant_paths(col, (name,))]


def _value_at(batch: pa.RecordBatch, path: tuple[str, ...]) -> pa.Array:
    arr: Any = batch.column(batch.schema.get_field_index(path[0]))
    for name in path[1:]:
        arr = arr.field(name)
    return arr


def _rebuild(ve: Any, schema_type: pa.DataType, expr: Any, path: tuple[str, ...],
             literals: dict[tuple[str, ...], Any], nullable: bool) -> Any:
    """``expr`` itself, or a ``pack`` of its fields with the constant lists below ``path`` as literals."""
    if path in literals:
        return literals[path]
    if not any(p[: len(path)] == path for p in literals):
        return expr
    fields = {}
    for f in schema_type:
        fields[f.name] = _rebuild(ve, f.type, ve.get_item(f.name, expr), (*path, f.name), literals, f.nullable)
    return ve.pack(fields, nullable=nullable)


def to_vortex(vortex: Any, batch: pa.RecordBatch) -> Any:
    """The Vortex array of ``batch``, with its constant list fields as literals (see the module notes)."""
    array = vortex.array(pa.Table.from_batches([batch]))
    paths = constant_lists(batch)
    if not paths:
        return array
    import vortex.expr as ve

    literals: dict[tuple[str, ...], Any] = {}
    for path in paths:
        column = _value_at(batch, path)
        try:
            literal = ve.literal(vortex.DType.from_arrow(column.type), column[0].as_py())
            # the literal must read back as the first row, bit for bit (float payloads, time units ...)
            back = array.slice(0, 1).apply(literal).to_arrow_array()
            same = _bits(back.cast(column.type)).equals(_bits(column.slice(0, 1)))
        except (ValueError, TypeError, RuntimeError, pa.ArrowException):  # no literal: as it is
            same = False
        if same:
            literals[path] = literal
    if not literals:
        return array
    root = {
        f.name: _rebuild(ve, f.type, ve.column(f.name), (f.name,), literals, f.nullable) for f in batch.schema
    }
    packed = array.apply(ve.pack(root, nullable=False))
    return packed if str(packed.dtype) == str(array.dtype) else array  # the same types, or as it was
