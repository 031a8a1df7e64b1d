"""Sparse row takes from local Vortex files through their lazily scanned columns.

vortex-data 0.93 reads ``scan(indices=...)`` by filtering each 8,192-row split
the rows fall in, and converting a filtered *list* column to Arrow decodes the
list's elements of the whole split: to return 256 random crops of a table of
10⁶ crops 3×16×16 (pixel bytes in FSST, ``chunks`` a list of three chunks per
crop) it decoded the pixel bytes of ~105 splits, 5 MB each (140 ms for the
table, 120 ms of it the ``ome_arrow`` column).

A take on the columns scanned *without* indices does not: a memory-mapped
scan returns the file's encoded arrays without decoding anything (4 ms for
the ``chunks`` of 123 splits), and ``take`` on them decodes the rows asked
for only. Taking each leaf field of a struct on its own and assembling the
struct in Arrow is cheaper again than taking the struct (the same 256 rows:
10 ms for the whole ``ome_arrow`` column against 16 ms as one struct, 4.4 ms
for ``chunks`` alone on one thread, 2.2 ms on two).

:class:`LazyFile` keeps, per local file version, the file and the leaves it
has scanned; :func:`lazy_file` caches a few of them per process. A leaf that
is one constant in every split (the pixel metadata of a table of crops of one
shape) is taken by repeating its value, without calling into vortex. A
``list<struct>`` leaf whose elements are the same in every row but for their
bytes (the ``chunks`` of such a table: :class:`_Pattern`) is taken cast to its
bytes fields, and the other fields are repeated.

Which rows go this way is decided by :meth:`LazyFile.wants`: sparse takes
(few rows per split, over several splits: :func:`worth_taking`) from a file's
second sparse take on; dense ones keep the indices scan, which decodes each
split once for all its rows.

Example
-------
>>> import numpy as np, pyarrow as pa, tempfile, os
>>> from omeframe.formats.vortex.file import write_vortex_table
>>> p = os.path.join(tempfile.mkdtemp(), "t.vortex")
>>> write_vortex_table(pa.table({"x": np.arange(20000)}), p)
>>> lf = lazy_file(p)
>>> lf.take([pa.field("x", pa.int64())], np.array([3, 17000]))[0].to_pylist()
[3, 17000]
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.engine import threads as _threads
from omeframe.formats.vortex.constants import RowPattern
from omeframe.storage.files import file_key

__all__ = [
    "LazyFile", "MAX_FILES", "MIN_SPLITS", "MIN_SPLITS_PIXELS", "PARALLEL_ROWS",
    "lazy_file", "worth_taking",
]

#: Open files kept per process (each holds its memory map and scanned leaves).
MAX_FILES = 4
#: Takes of at least this many rows run on two threads, each over one half of the rows
#: (vortex releases the GIL while it decodes): 16 random rows of 10⁶ crops, every
#: column, took 7.1 ms so against 10.6 ms on one thread.
PARALLEL_ROWS = 8
#: A take goes through the lazy columns while it asks for at most this many rows per
#: split it touches on average (measured crossover: see :func:`worth_taking`).
MAX_ROWS_PER_SPLIT = 1024
#: ... and touches at least this many splits, or an eighth of the file's splits when that
#: is more (fewer cost less through the indices scan: see :meth:`LazyFile.wants`) ...
MIN_SPLITS = 4
#: ... or, for the pixel fields alone (:func:`omeframe.formats.vortex.file.read_vortex_pixels`),
#: at least this many: rows of one split too (a loader's batch of consecutive rows whose split
#: is too large to keep decoded; see :meth:`LazyFile.wants`).
MIN_SPLITS_PIXELS = 1

#: Constants repeated to a take's length kept per file (a loader asks for one length again and again).
MAX_REPEATS = 64

#: Leaf types whose constant value round-trips through Python exactly.
_SCALAR_KINDS: tuple[Callable[[pa.DataType], bool], ...] = (
    pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string,
    pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary, pa.types.is_null,
)


def worth_taking(rows: np.ndarray, bounds: np.ndarray, min_splits: int = MIN_SPLITS) -> bool:
    """Whether sorted, unique ``rows`` of a file with split ``bounds`` ``(k, 2)`` are sparse enough.

    Measured on 10⁶ crops 3×16×16 (123 splits; lazy leaves already scanned;
    ``read_table(rows=...)`` / ``ImageTable.to_numpy``), lazy columns against
    the indices scan: 2,000 random rows (16 per split) 14 / 6 ms against
    75 / 84 ms; 20,000 (163 per split) 36 / 25 against 98 / 114 ms; 120,000
    (976 per split) 124 / 155 against 154 / 220 ms; 250,000 (2,033 per split)
    477 / 684 against 213 / 348 ms. So: the lazy columns when the rows touch
    at least ``min_splits`` splits and ask for at most
    :data:`MAX_ROWS_PER_SPLIT` rows per split touched (one split alone: the
    indices scan, 6 ms for 8,192 consecutive rows).
    """
    return _sparse(len(rows), _splits_touched(rows, bounds), min_splits)


def _splits_touched(rows: np.ndarray, bounds: np.ndarray) -> int:
    """How many of the splits ``bounds`` the sorted, unique ``rows`` fall in."""
    if not len(rows) or not len(bounds):
        return 0
    which = np.searchsorted(bounds[:, 0], rows, side="right") - 1
    return int(np.count_nonzero(np.diff(which))) + 1


def _sparse(n: int, touched: int, min_splits: int) -> bool:
    """:func:`worth_taking`'s rule for ``n`` rows in ``touched`` splits."""
    return n > 0 and touched >= min_splits and n <= MAX_ROWS_PER_SPLIT * touched


def _arrow(array: Any, arrow_type: pa.DataType) -> pa.Array:
    """A vortex ``array`` as one Arrow array of ``arrow_type``.

    Converted to that type by vortex (the chunk keys of 10⁶ crops: 154 ms,
    against 276 ms converted to vortex's view types and cast), else cast.
    """
    try:
        out = array.to_arrow_array(arrow_type=arrow_type)
    except (TypeError, ValueError, NotImplementedError, pa.ArrowException):
        out = array.to_arrow_array()
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    return out if out.type == arrow_type else out.cast(arrow_type)


def _take(vortex: Any, array: Any, rows: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """``array`` (a lazily scanned vortex array) at ``rows``, as Arrow."""
    return _arrow(array.take(vortex.array(pa.array(rows.astype(np.uint64, copy=False)))), arrow_type)


def _by_halves(decode: Callable[[np.ndarray], list[pa.Array]], rows: np.ndarray) -> list[pa.Array]:
    """``decode(rows)``, on two threads over one half of the rows each from :data:`PARALLEL_ROWS` rows on."""
    if len(rows) < PARALLEL_ROWS or not _threads.can_parallelize():
        return decode(rows)
    half = len(rows) // 2
    later = _threads.pool().submit(decode, rows[half:])
    first = decode(rows[:half])
    return [pa.concat_arrays([a, b]) for a, b in zip(first, later.result(), strict=True)]


def _is_payload(t: pa.DataType) -> bool:
    """Whether an element field of a list leaf is payload (bytes, different in every row)."""
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


class _Repeats:
    """Values built once and asked for again, remembered (at most :data:`MAX_REPEATS`): the arrays built
    for a take's length (a loader asks for one length again and again), the plan of a list of fields."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._made.get(key)
        if hit is None:
            hit = make()
            with self._lock:
                if len(self._made) >= MAX_REPEATS:
                    self._made.clear()
                self._made[key] = hit
        return hit


class _Pattern:
    """A ``list<struct>`` leaf whose rows hold the same elements but for their payload fields.

    The ``chunks`` of a table of crops of one shape: every record lists the
    same chunk keys, shapes, dtype and codec, and only ``pixel_bytes``
    differ. vortex-data converts every field of every 8,192-row split a take
    touches, about 60 µs per split for the eleven fields of a ``chunks``
    element; a take of the leaf cast to its payload fields converts one
    (about 35 µs), and the other fields are repeated from :attr:`small`.

    Whether the rows repeat one pattern is checked split by split, the first
    time a take touches the split (:meth:`covers`): its fields other than
    payload are converted and compared with the pattern bit for bit (about
    1 ms per split of 8,192 crops), so a take never pays for splits it does
    not read. The first split that breaks the pattern ends it for the file:
    its takes go through the whole leaf.
    """

    def __init__(self, payload: Any, payload_type: pa.DataType, small: Sequence[Any], small_type: pa.DataType,
                 arrow_type: pa.DataType) -> None:
        self.payload = payload  # the leaf cast to list<struct<payload fields>>, lazily scanned
        self.payload_type = payload_type
        self.arrow_type = arrow_type
        self._element_fields = list(arrow_type.value_type)
        #: per element field, in order: its name and whether it is payload (taken) or repeated
        self._element_parts = [(f.name, _is_payload(f.type)) for f in self._element_fields]
        self._small = list(small)  # per split: the leaf cast to its other fields, lazily scanned
        self._small_type = small_type
        self._starts = np.cumsum([0, *(len(c) for c in self._small)])
        self._checked = np.zeros(len(self._small), dtype=bool)
        self._rows = RowPattern()
        self._lock = threading.Lock()
        self._repeats = _Repeats()
        self.broken = False

    @property
    def small(self) -> pa.StructArray:
        """The elements every row checked so far holds, without their payload fields."""
        if self._rows.values is None:
            raise RuntimeError("no split has been checked yet")
        return self._rows.values

    def covers(self, rows: np.ndarray) -> bool:
        """Whether every split holding the sorted ``rows`` repeats the pattern (checking the new ones)."""
        if self.broken:
            return False
        which = np.unique(np.searchsorted(self._starts, rows, side="right") - 1)
        for i in which[~self._checked[which]].tolist():
            try:
                values = _arrow(self._small[i], self._small_type)
            except (RuntimeError, ValueError, TypeError, pa.ArrowException):  # the whole leaf decides
                values = None
            with self._lock:
                if values is None or not self._rows.matches(values):
                    self.broken = True
                if self.broken:
                    return False
                self._checked[i] = True
        return True

    def take(self, vortex: Any, rows: np.ndarray) -> pa.Array:
        """The leaf at sorted ``rows``, all in splits :meth:`covers` accepted."""
        got = _take(vortex, self.payload, rows, self.payload_type)
        pattern = self.small
        n, k = len(rows), len(pattern)
        values = got.flatten()
        if got.null_count or len(values) != n * k:  # the splits were checked
            raise RuntimeError(f"a list field changed since it was checked: {len(values)} elements for {n} rows")
        small, offsets = self._repeats.get(n, lambda: self._repeated(pattern, n))
        kids = [(values if payload else small).field(name) for name, payload in self._element_parts]
        mask = values.is_null() if values.null_count else None
        elements = pa.StructArray.from_arrays(kids, fields=self._element_fields, mask=mask)
        kind = pa.LargeListArray if pa.types.is_large_list(self.arrow_type) else pa.ListArray
        return kind.from_arrays(offsets, elements, type=self.arrow_type)

    def _repeated(self, pattern: pa.StructArray, n: int) -> tuple[pa.StructArray, pa.Array]:
        """The pattern's elements repeated for ``n`` rows, and the list offsets of those rows."""
        k = len(pattern)
        large = pa.types.is_large_list(self.arrow_type)
        return (
            pattern.take(pa.array(np.tile(np.arange(k, dtype=np.int32), n))),
            pa.array(np.arange(n + 1, dtype=np.int64 if large else np.int32) * k),
        )


@dataclass
class _Leaf:
    """One scanned leaf: its lazily read vortex array and, when it is one value throughout, that value."""

    array: Any
    arrow_type: pa.DataType
    constant: pa.Array | None
    pattern: _Pattern | None = None

    def take(self, vortex: Any, rows: np.ndarray) -> pa.Array:
        """The leaf at ``rows`` (not constant: constants are repeated by the caller)."""
        if self.pattern is not None and self.pattern.covers(rows):
            return self.pattern.take(vortex, rows)
        return _take(vortex, self.array, rows, self.arrow_type)


def _constant(array: Any, arrow_type: pa.DataType) -> pa.Array | None:
    """The value of a leaf stored as one constant in every chunk, as a length-1 array, else ``None``."""
    if not any(kind(arrow_type) for kind in _SCALAR_KINDS):
        return None
    chunks = array.chunks() if hasattr(array, "chunks") else [array]
    if not chunks or any(c.id != "vortex.constant" for c in chunks):
        return None
    values = [c.scalar_at(0).as_py() for c in chunks]
    first = values[0]
    keys: list[Any]
    if pa.types.is_floating(arrow_type):  # bit for bit: 0.0 and -0.0 differ, NaN equals itself
        keys = [None if v is None else np.float64(v).tobytes() for v in values]
    else:
        keys = [(type(v), v) for v in values]
    if any(k != keys[0] for k in keys[1:]):
        return None
    return pa.array([first], type=arrow_type)


@dataclass
class _Node:
    """A requested field: a leaf, or a struct assembled from its children and its validity."""

    field: pa.Field
    path: tuple[str, ...]
    children: list[_Node] = field(default_factory=list)
    #: the children's names, nested (what a struct node of a given path holds)
    names: tuple[Any, ...] = ()


def _plan(f: pa.Field, path: tuple[str, ...]) -> _Node:
    if pa.types.is_struct(f.type):
        kids = [_plan(k, (*path, k.name)) for k in f.type]
        return _Node(f, path, kids, tuple((k.field.name, k.names) for k in kids))
    return _Node(f, path)


class LazyFile:
    """A local Vortex file, memory-mapped, with the leaves it has scanned kept for later takes.

    Parameters
    ----------
    vf
        The ``vortex.VortexFile``, opened with ``memory_map=True``.
    """

    def __init__(self, vf: Any) -> None:
        import vortex

        self._vortex = vortex
        self.file = vf
        #: ``(k, 2)`` row bounds of the file's splits
        self.bounds = np.asarray(vf.splits(), dtype=np.int64).reshape(-1, 2)
        self._leaves: dict[tuple[str, ...], _Leaf] = {}
        self._constant_structs: dict[tuple[Any, ...], pa.Array | None] = {}
        self._repeats = _Repeats()
        self._plans = _Repeats()  # per list of fields asked for: its nodes and the leaves they decode
        #: facts about the file its readers work out once (keyed by the reader)
        self.memo: dict[Any, Any] = {}
        self._sparse_takes = 0
        self._lock = threading.Lock()

    def wants(self, rows: np.ndarray, *, pixels: bool = False) -> bool:
        """Whether a take of sorted, unique ``rows`` should go through the lazy columns.

        Sparse rows (:func:`worth_taking`), from the file's second sparse take
        on: scanning the leaves once costs about as much as one take through
        the indices scan (30–90 ms for the whole rows of 10⁶ crops, 5–15 ms at
        10⁵), so a file read once by a few sparse rows keeps the indices scan,
        and a training loop pays the scan with its second batch.

        How many splits the rows must touch: the lazy columns cost a little per
        leaf and split of the *file*, the indices scan per split *touched*.
        Measured at 10⁶ crops (123 splits; the whole rows, warm): 4 random rows
        5.1 ms lazily against 3.0 ms, 16 rows 7.1 against 8.0 ms, 64 rows 9.9
        against 21.9 ms; at 10⁵ crops (13 splits) 3 rows 2.4 against 2.8 ms.
        Hence at least :data:`MIN_SPLITS`, or an eighth of the file's splits.
        ``pixels=True`` (the few leaves pixel decoding needs) goes lazily from
        :data:`MIN_SPLITS_PIXELS`: 2 rows of 10⁶ crops in 1.2 against 2.5 ms;
        rows of one split too, since the indices scan reads whole records:
        256 consecutive crops 3×64×64 of 10⁵ (zstd frames) 8.6 against 13.4 ms
        decoded, one row 0.8 against 4.7 ms, 16 rows of 10⁶ crops 3×16×16 1.4
        against 6.0 ms.

        Every sparse take counts once. A pixel take that this turns away falls
        back to a read of its rows whose own ``wants`` counts the rows that
        the general rule finds sparse; a pixel take counts only the others
        (rows of fewer splits: a loader's batch of consecutive rows).
        """
        general = max(MIN_SPLITS, -(-len(self.bounds) // 8))
        touched = _splits_touched(rows, self.bounds)
        if not _sparse(len(rows), touched, MIN_SPLITS_PIXELS if pixels else general):
            return False
        counts = not pixels or not _sparse(len(rows), touched, general)
        with self._lock:
            seen = self._sparse_takes
            self._sparse_takes += int(counts)
        return seen > 0

    def _expr(self, path: tuple[str, ...], validity: bool) -> Any:
        import vortex.expr as ve

        expr = ve.root()
        for name in path:
            expr = ve.get_item(name, expr)
        return ve.is_not_null(expr) if validity else expr

    def _leaf(self, path: tuple[str, ...], arrow_type: pa.DataType, validity: bool = False) -> _Leaf:
        key = (*path, "\x00valid") if validity else path
        with self._lock:
            leaf = self._leaves.get(key)
            if leaf is None:
                array = self.file.scan(self._expr(path, validity)).read_all()
                kind = pa.bool_() if validity else arrow_type
                pattern = None if validity else self._pattern(path, arrow_type)
                constant = None if pattern is not None else _constant(array, kind)
                leaf = self._leaves[key] = _Leaf(array, kind, constant, pattern)
        return leaf

    def _pattern(self, path: tuple[str, ...], arrow_type: pa.DataType) -> _Pattern | None:
        """The leaf at ``path`` as a :class:`_Pattern`, when it is a ``list<struct>`` of payload and other fields.

        ``None`` also when vortex cannot cast the leaf to either part (the
        leaf is then taken whole). Nothing is checked yet: :meth:`_Pattern.covers`
        checks each split when a take first touches it.
        """
        if not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
            return None
        element = arrow_type.value_type
        if not pa.types.is_struct(element):
            return None
        payload = [f for f in element if _is_payload(f.type)]
        small = [f for f in element if not _is_payload(f.type)]
        if not payload or not small:
            return None
        import vortex.expr as ve

        listed = pa.large_list if pa.types.is_large_list(arrow_type) else pa.list_
        expr = self._expr(path, False)
        small_type, payload_type = listed(pa.struct(small)), listed(pa.struct(payload))
        try:
            scanned = self.file.scan(ve.cast(expr, self._vortex.DType.from_arrow(small_type))).read_all()
            array = self.file.scan(ve.cast(expr, self._vortex.DType.from_arrow(payload_type))).read_all()
            if not len(array):
                return None
            _take(self._vortex, array, np.zeros(1, dtype=np.int64), payload_type)  # vortex can convert it
        except (RuntimeError, ValueError, TypeError, pa.ArrowException):
            return None
        chunks = scanned.chunks() if hasattr(scanned, "chunks") else [scanned]
        return _Pattern(array, payload_type, chunks, small_type, arrow_type)

    def _folded(self, node: _Node) -> pa.Array | None:
        """A struct node every leaf of which is constant (and never null), as one length-1 array.

        Remembered by the node's path, nullability and children's names (its leaves are
        remembered by path, :meth:`_leaf`): hashing a nested Arrow type costs 10-30 µs.
        """
        key = (node.path, node.field.nullable, node.names)
        with self._lock:
            if key in self._constant_structs:
                return self._constant_structs[key]
        kids = []
        for k in node.children:
            kid = self._folded(k) if k.children else self._leaf(k.path, k.field.type).constant
            if kid is None:
                break
            kids.append(kid)
        else:
            valid = self._leaf(node.path, node.field.type, validity=True).constant if node.field.nullable else None
            if not node.field.nullable or (valid is not None and valid[0].as_py() is True):
                folded = pa.StructArray.from_arrays(kids, fields=list(node.field.type))
                with self._lock:
                    self._constant_structs[key] = folded
                return folded
        with self._lock:
            self._constant_structs[key] = None
        return None

    def _needed(self, node: _Node, out: list[_Leaf]) -> None:
        """The leaves (and struct validities) a take of ``node`` decodes, appended to ``out``."""
        if not node.children:
            leaf = self._leaf(node.path, node.field.type)
            if leaf.constant is None:
                out.append(leaf)
        elif self._folded(node) is None:
            for kid in node.children:
                self._needed(kid, out)
            if node.field.nullable:
                valid = self._leaf(node.path, node.field.type, validity=True)
                if valid.constant is None:
                    out.append(valid)

    def _repeated(self, value: pa.Array, n: int) -> pa.Array:
        """The length-1 array ``value`` repeated ``n`` times (remembered: a loader asks for the same ``n``).

        Keyed by ``id(value)``: the entry holds ``value`` too, so no other array takes that id meanwhile.
        """
        pair = self._repeats.get((id(value), n), lambda: (value, value.take(pa.array(np.zeros(n, dtype=np.int32)))))
        return pair[1]

    def _assemble(self, node: _Node, n: int, decoded: dict[int, pa.Array]) -> pa.Array:
        """``node`` at the ``n`` rows taken (constants repeated)."""
        if not node.children:
            leaf = self._leaf(node.path, node.field.type)
            return self._repeated(leaf.constant, n) if leaf.constant is not None else decoded[id(leaf)]
        folded = self._folded(node)
        if folded is not None:
            return self._repeated(folded, n)
        kids = [self._assemble(k, n, decoded) for k in node.children]
        mask = None
        if node.field.nullable:
            leaf = self._leaf(node.path, node.field.type, validity=True)
            valid = self._repeated(leaf.constant, n) if leaf.constant is not None else decoded[id(leaf)]
            if valid.null_count or not pa.compute.all(valid).as_py():
                mask = pa.compute.invert(valid.fill_null(False))
        return pa.StructArray.from_arrays(kids, fields=list(node.field.type), mask=mask)

    def _decode(self, leaves: Sequence[_Leaf], rows: np.ndarray) -> list[pa.Array]:
        return [leaf.take(self._vortex, rows) for leaf in leaves]

    def _prepare(self, fields: Sequence[pa.Field]) -> tuple[list[_Node], list[_Leaf]]:
        """The nodes of ``fields`` and the leaves a take of them decodes."""
        nodes = [_plan(f, (f.name,)) for f in fields]
        leaves: list[_Leaf] = []
        for node in nodes:
            self._needed(node, leaves)
        return nodes, leaves

    def take(self, fields: Sequence[pa.Field], rows: np.ndarray) -> list[pa.Array]:
        """The top-level ``fields`` (by name, with their Arrow types) at sorted, unique ``rows``.

        The leaves that are not constant are decoded first, by vortex (on two
        threads, each over one half of the rows, for :data:`PARALLEL_ROWS` or
        more), then assembled in Arrow. Raises whatever vortex raises for a
        damaged file (``RuntimeError``, ``pyarrow.ArrowException``); the caller
        translates it.
        """
        import pyarrow.compute  # noqa: F401 - pa.compute in _assemble

        # a reader that asks with the same list of fields again and again (its own memo) gets the
        # plan it got before; the entry holds the list, so no other list takes its id meanwhile
        _, nodes, leaves = self._plans.get(id(fields), lambda: (fields, *self._prepare(fields)))
        arrays = _by_halves(lambda part: self._decode(leaves, part), rows) if leaves else []
        decoded = {id(leaf): arr for leaf, arr in zip(leaves, arrays, strict=True)}
        return [self._assemble(node, len(rows), decoded) for node in nodes]

    def take_payloads(
        self, fields: Sequence[pa.Field], rows: np.ndarray
    ) -> tuple[pa.Array, int, list[pa.Array]] | None:
        """``(payloads, k, others)``: the payloads of ``fields[0]`` and the other ``fields`` at ``rows``, or ``None``.

        For a record field all of whose leaves are one value throughout the
        file but one :class:`_Pattern` leaf with a single payload field (the
        records of a table of crops of one layout), whose splits holding the
        sorted, unique ``rows`` all repeat the pattern: the payloads of
        ``rows``, ``k`` per row in the pattern's order (``len(rows) * k``
        items), and each other field (a leaf) at ``rows``. Nothing is
        assembled: the records of these rows are the pattern's and the
        constants' but for these payloads. ``None`` when ``fields`` are not
        such, the rows reach a split that breaks the pattern, or the rows
        taken do not hold ``k`` payloads each, none null: the caller takes the
        records (:meth:`take`).
        """
        plan = self._plans.get(("payloads", id(fields)), lambda: (fields, self._payload_plan(fields)))[1]
        if plan is None:
            return None
        leaf, name, others = plan
        pattern = leaf.pattern
        assert pattern is not None
        if not pattern.covers(rows):
            return None

        def decode(part: np.ndarray) -> list[pa.Array]:
            got = _take(self._vortex, pattern.payload, part, pattern.payload_type)
            return [got, *(
                other.take(self._vortex, part) if other.constant is None else self._repeated(other.constant, len(part))
                for other in others
            )]

        arrays = _by_halves(decode, rows)
        listed = arrays[0]
        if listed.null_count or not (np.diff(listed.offsets.to_numpy()) == len(pattern.small)).all():
            return None  # the splits were checked: a file changed since, or damaged (the caller's read tells)
        elements = listed.flatten()
        if elements.null_count:
            return None
        payloads = elements.field(name)
        if payloads.null_count:
            return None
        return payloads, len(pattern.small), arrays[1:]

    def _payload_plan(self, fields: Sequence[pa.Field]) -> tuple[_Leaf, str, list[_Leaf]] | None:
        """``(pattern leaf, payload field name, other leaves)`` for :meth:`take_payloads`, or ``None``."""
        if not fields or not pa.types.is_struct(fields[0].type):
            return None
        node = _plan(fields[0], (fields[0].name,))
        needed: list[_Leaf] = []
        self._needed(node, needed)
        if len(needed) != 1 or needed[0].pattern is None or not self._never_null(node):
            return None
        leaf = needed[0]
        assert leaf.pattern is not None
        payload = list(leaf.pattern.payload_type.value_type)
        if len(payload) != 1:
            return None
        others = []
        for f in fields[1:]:
            if pa.types.is_struct(f.type):
                return None
            other = self._leaf((f.name,), f.type)
            if other.pattern is not None:
                return None
            others.append(other)
        return leaf, payload[0].name, others

    def _never_null(self, node: _Node) -> bool:
        """Whether no struct of ``node`` is null in any row: each nullable one is valid throughout the file.

        (A struct whose validity varies has it among the leaves a take decodes;
        one that is null in every row has it constant, and false.)
        """
        if not node.children or self._folded(node) is not None:  # folded: only when valid
            return True
        if node.field.nullable:
            valid = self._leaf(node.path, node.field.type, validity=True).constant
            if valid is None or valid[0].as_py() is not True:
                return False
        return all(self._never_null(kid) for kid in node.children)


_FILES: OrderedDict[tuple[Any, ...], LazyFile] = OrderedDict()
_FILES_LOCK = threading.Lock()
#: The files a forked process inherited: kept, never used (their vortex objects are not
#: dropped in the child, whose copy of vortex's runtime may hold locks of the parent's threads).
_INHERITED: list[Any] = []


def _after_fork_in_child() -> None:
    global _FILES, _FILES_LOCK
    _INHERITED.append(_FILES)
    _FILES, _FILES_LOCK = OrderedDict(), threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def lazy_file(path: str, opener: Callable[[str], Any] | None = None) -> LazyFile:
    """The cached :class:`LazyFile` of the current version of local ``path``.

    A version is the file's identity (:func:`file_key`): a file replaced by a
    rename is a new entry, and a forked worker starts with none of its
    parent's. ``opener`` opens the file memory-mapped (default:
    ``vortex.open(path, memory_map=True)``).
    """
    key = file_key(path)
    with _FILES_LOCK:
        lf = _FILES.get(key)
        if lf is not None:
            _FILES.move_to_end(key)
            return lf
    if opener is None:
        import vortex

        vf = vortex.open(path, memory_map=True)
    else:
        vf = opener(path)
    lf = LazyFile(vf)
    with _FILES_LOCK:
        lf = _FILES.setdefault(key, lf)
        while len(_FILES) > MAX_FILES:
            _FILES.popitem(last=False)
    return lf
