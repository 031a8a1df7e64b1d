"""Chunk-grid arithmetic for 5-D ``TCZYX`` images.

This module is pure math: no I/O, numpy only.  It answers three questions for
an image of shape ``(T, C, Z, Y, X)`` stored as a regular grid of chunks:

* which chunks exist and how large each one is (:class:`ChunkGrid`);
* what part of the image a user asked for (:class:`Selection`);
* which chunks a selection touches and how to copy each decoded chunk into a
  preallocated output array (:func:`plan_copies`, :class:`CopyPlan`,
  :func:`chunks_for_roi`).

Conventions
-----------
* A chunk is identified by its *origin* ``(t, c, z, y, x)``: element
  coordinates of its first element, always multiples of the chunk shape.
* Edge chunks are clipped to the image; :meth:`ChunkGrid.chunk_extent` gives
  the clipped shape of the chunk at an origin.
* A selection picks explicit index lists along T, C and Z (``None`` = all) and
  half-open ranges ``[y0, y1)``, ``[x0, x1)`` along Y and X (``None`` = all).
  Index lists may be unsorted and may repeat; the output follows list order,
  exactly like ``arr[np.ix_(t, c, z)][..., y0:y1, x0:x1]``.  Axes are never
  dropped: the output is always 5-D.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from omeframe.model.errors import PixelPayloadError, SelectionError

__all__ = [
    "Shape5",
    "ChunkGrid",
    "Selection",
    "CopyPlan",
    "plan_copies",
    "chunks_for_roi",
]

Shape5: TypeAlias = tuple[int, int, int, int, int]
"""A 5-tuple of ints in ``TCZYX`` order."""

AXES: str = "TCZYX"
_LIST_AXES: tuple[str, str, str] = ("t", "c", "z")
_RANGE_AXES: tuple[str, str] = ("y", "x")

IndexSpec: TypeAlias = "int | slice | Iterable[int] | np.ndarray | None"
RangeSpec: TypeAlias = "tuple[int, int] | Sequence[int] | slice | None"


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _as_int(value: Any, what: str) -> int:
    """Return ``value`` as a Python int, rejecting bools and non-integers."""
    if type(value) is int:  # the common case, checked first (bool is not int here)
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be an integer, not a bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{what} must be an integer, got {type(value).__name__} ({value!r})"
        ) from None


def _as_shape5(value: Any, what: str) -> Shape5:
    """Validate a 5-entry sequence of positive ints and return it as a tuple."""
    if type(value) is tuple and len(value) == 5 and all(type(v) is int and v > 0 for v in value):
        return value  # type: ignore[return-value]
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(
            f"{what} must be a sequence of 5 ints (TCZYX), got {value!r}"
        ) from None
    if len(items) != 5:
        raise ValueError(
            f"{what} must have 5 entries (TCZYX), got {len(items)}: {items!r}"
        )
    out = tuple(_as_int(v, f"{what}[{AXES[i]}]") for i, v in enumerate(items))
    for i, v in enumerate(out):
        if v <= 0:
            raise ValueError(
                f"{what} entries must be positive, got {AXES[i]}={v} in {out!r}"
            )
    return out  # type: ignore[return-value]


def _shape_of(grid_or_shape: ChunkGrid | Sequence[int] | Any) -> Shape5:
    """Image shape from a :class:`ChunkGrid`, an array-like or a 5-sequence."""
    if isinstance(grid_or_shape, ChunkGrid):
        return grid_or_shape.shape
    shape = getattr(grid_or_shape, "shape", grid_or_shape)
    return _as_shape5(shape, "image shape")


def _product_rows(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Cartesian product of 1-D int64 arrays as a C-ordered ``(n, len)`` array."""
    sizes = [len(col) for col in columns]
    n = int(np.prod(sizes, dtype=np.int64))
    out = np.empty((n, len(columns)), dtype=np.int64)
    inner = n
    outer = 1
    for a, col in enumerate(columns):
        inner //= sizes[a] if sizes[a] else 1
        if n:
            out[:, a] = np.tile(np.repeat(col, inner), outer)
        outer *= sizes[a]
    return out


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


# --------------------------------------------------------------------------- #
# ChunkGrid
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ChunkGrid:
    """A regular grid of chunks covering a ``TCZYX`` image.

    Parameters
    ----------
    shape : tuple of 5 int
        Image shape ``(T, C, Z, Y, X)``; every entry must be positive.
    chunk_shape : tuple of 5 int
        Nominal chunk shape ``(ct, cc, cz, cy, cx)``; every entry must be
        positive.  Entries larger than the image along that axis are clipped
        to the image size, so ``ChunkGrid((2, 1, 3, 10, 10), (1, 1, 8, 64, 64))``
        stores ``chunk_shape == (1, 1, 3, 10, 10)``.

    Raises
    ------
    TypeError
        If an entry is not an integer (bools are rejected).
    ValueError
        If a tuple does not have 5 entries or an entry is not positive.

    Notes
    -----
    Chunks along an axis start at multiples of the chunk size; the last chunk
    along an axis is clipped to the image (see :meth:`chunk_extent`).
    """

    shape: Shape5
    chunk_shape: Shape5

    def __post_init__(self) -> None:
        shape = _as_shape5(self.shape, "shape")
        chunk = _as_shape5(self.chunk_shape, "chunk_shape")
        chunk = tuple(min(c, s) for c, s in zip(chunk, shape))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "chunk_shape", chunk)

    # -- counts ------------------------------------------------------------ #
    @property
    def grid_shape(self) -> Shape5:
        """Number of chunks along each axis, ``ceil(shape / chunk_shape)``."""
        return tuple(  # type: ignore[return-value]
            -(-s // c) for s, c in zip(self.shape, self.chunk_shape)
        )

    @property
    def n_chunks(self) -> int:
        """Total number of chunks in the grid."""
        return int(np.prod(self.grid_shape, dtype=np.int64))

    # -- single chunks ----------------------------------------------------- #
    def chunk_origin(self, index5: Sequence[int]) -> Shape5:
        """Origin (element coordinates) of the chunk at grid index ``index5``.

        Parameters
        ----------
        index5 : sequence of 5 int
            Chunk index along each axis, ``0 <= index5[a] < grid_shape[a]``.

        Returns
        -------
        tuple of 5 int
            ``index5 * chunk_shape``.

        Raises
        ------
        IndexError
            If an index is outside the grid.
        """
        idx = tuple(index5)
        if len(idx) != 5:
            raise ValueError(f"chunk index must have 5 entries (TCZYX), got {idx!r}")
        out = []
        for a, (i, g, c) in enumerate(zip(idx, self.grid_shape, self.chunk_shape)):
            i = _as_int(i, f"chunk index[{AXES[a]}]")
            if not 0 <= i < g:
                raise IndexError(
                    f"chunk index {AXES[a]}={i} is outside the grid: axis {AXES[a]} "
                    f"has {g} chunk(s), valid indices are 0..{g - 1}"
                )
            out.append(i * c)
        return tuple(out)  # type: ignore[return-value]

    def chunk_extent(self, origin5: Sequence[int]) -> Shape5:
        """Clipped shape of the chunk starting at ``origin5``.

        Parameters
        ----------
        origin5 : sequence of 5 int
            A chunk origin: multiples of ``chunk_shape`` inside the image.

        Returns
        -------
        tuple of 5 int
            ``min(chunk_shape, shape - origin5)`` per axis.

        Raises
        ------
        ValueError
            If ``origin5`` is not aligned to the grid or lies outside the image.
        """
        org = tuple(origin5)
        if len(org) != 5:
            raise ValueError(f"chunk origin must have 5 entries (TCZYX), got {org!r}")
        out = []
        for a, (o, s, c) in enumerate(zip(org, self.shape, self.chunk_shape)):
            o = _as_int(o, f"chunk origin[{AXES[a]}]")
            if not 0 <= o < s:
                raise ValueError(
                    f"chunk origin {AXES[a]}={o} is outside the image: axis "
                    f"{AXES[a]} has size {s}, valid origins are 0..{s - 1}"
                )
            if o % c:
                raise ValueError(
                    f"chunk origin {AXES[a]}={o} is not a multiple of the chunk "
                    f"size {c} along {AXES[a]}"
                )
            out.append(min(c, s - o))
        return tuple(out)  # type: ignore[return-value]

    # -- all chunks -------------------------------------------------------- #
    def iter_origins(self) -> Iterator[Shape5]:
        """Yield every chunk origin in C order over ``(t, c, z, y, x)``."""
        ranges = [range(0, s, c) for s, c in zip(self.shape, self.chunk_shape)]
        return itertools.product(*ranges)  # type: ignore[return-value]

    def origins_array(self) -> np.ndarray:
        """All chunk origins as an int64 array of shape ``(n_chunks, 5)``.

        Rows are in the same C order as :meth:`iter_origins`.
        """
        cols = [
            np.arange(0, s, c, dtype=np.int64)
            for s, c in zip(self.shape, self.chunk_shape)
        ]
        return _product_rows(cols)

    def extents_array(self) -> np.ndarray:
        """Clipped chunk shapes matching :meth:`origins_array`, ``(n_chunks, 5)``."""
        return self.extents_for(self.origins_array())

    def extents_for(self, origins: np.ndarray) -> np.ndarray:
        """Clipped chunk shapes for an ``(n, 5)`` array of (valid) origins."""
        origins = np.asarray(origins, dtype=np.int64).reshape(-1, 5)
        shape = np.asarray(self.shape, dtype=np.int64)
        chunk = np.asarray(self.chunk_shape, dtype=np.int64)
        return np.minimum(chunk, shape - origins)


# --------------------------------------------------------------------------- #
# Selection
# --------------------------------------------------------------------------- #
def _check_index_tuple(value: Any, axis: str) -> tuple[int, ...] | None:
    """Validate a stored (already normalized) index tuple."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"Selection.{axis} must be None or a sequence of non-negative ints, "
            f"got {value!r}; use Selection.normalize for ints, slices and "
            "negative indices"
        )
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        items = tuple(int(v) for v in value.ravel().tolist())
    else:
        items = tuple(_as_int(v, f"Selection.{axis} index") for v in value)
    if not items:
        raise SelectionError(
            f"{axis} selection is empty: at least one index is required"
        )
    for v in items:
        if v < 0:
            raise SelectionError(
                f"Selection.{axis} holds the negative index {v}; stored selections "
                "are normalized, use Selection.normalize for negative indices"
            )
    return items


def _check_range_pair(
    value: Any, axis: str, size: int | None = None
) -> tuple[int, int] | None:
    """Validate a half-open range ``(lo, hi)``; ``size`` only refines messages."""
    if value is None:
        return None
    if isinstance(value, slice):
        raise TypeError(
            f"Selection.{axis} must be None or a (start, stop) pair; use "
            "Selection.normalize to pass a slice"
        )
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(
            f"{axis} range must be None or a (start, stop) pair, got {value!r}"
        ) from None
    if len(items) != 2:
        raise TypeError(
            f"{axis} range must be a (start, stop) pair, got {len(items)} "
            f"value(s): {items!r}"
        )
    lo = _as_int(items[0], f"{axis} range start")
    hi = _as_int(items[1], f"{axis} range stop")
    hint = (
        f"need 0 <= {axis}0 < {axis}1"
        if size is None
        else _bounds_hint(axis, size)
    )
    if lo < 0 or hi < 0:
        raise SelectionError(f"{axis} range ({lo}, {hi}) has a negative bound: {hint}")
    if lo >= hi:
        raise SelectionError(
            f"{axis} range ({lo}, {hi}) is empty or reversed: {hint}"
        )
    return (lo, hi)


def _normalize_indices(spec: Any, axis: str, size: int) -> tuple[int, ...] | None:
    """Turn a user index spec for T/C/Z into an explicit non-negative tuple."""
    label = axis.upper()
    if spec is None:
        return None
    if isinstance(spec, slice):
        idx = tuple(range(*spec.indices(size)))
        if not idx:
            raise SelectionError(
                f"{axis} {spec!r} selects no index of axis {label} "
                f"(size {size})"
            )
        return idx
    if isinstance(spec, (bool, np.bool_)):
        raise TypeError(f"{axis} index must be an integer, not a bool ({spec!r})")
    if isinstance(spec, (int, np.integer)):
        values: list[int] = [int(spec)]
    elif isinstance(spec, np.ndarray):
        if spec.dtype.kind == "b":
            raise TypeError(
                f"{axis} selection is a boolean array; pass integer indices "
                "(e.g. np.flatnonzero(mask))"
            )
        if spec.dtype.kind not in "iu":
            raise TypeError(
                f"{axis} index array must have an integer dtype, got {spec.dtype}"
            )
        if spec.ndim > 1:
            raise TypeError(
                f"{axis} index array must be 0-D or 1-D, got shape {spec.shape}"
            )
        values = [int(v) for v in spec.reshape(-1).tolist()]
    elif isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
        raise TypeError(
            f"{axis} selection must be None, an int, a slice or an iterable of "
            f"ints, got {type(spec).__name__} ({spec!r})"
        )
    else:
        values = [_as_int(v, f"{axis} index") for v in spec]
    if not values:
        raise SelectionError(
            f"{axis} selection is empty: at least one index is required "
            f"(axis {label} has size {size})"
        )
    out: list[int] = []
    for v in values:
        if not -size <= v < size:
            raise SelectionError(
                f"{axis} index {v} is out of range: axis {label} has size {size}, "
                f"valid indices are {-size}..{size - 1}"
            )
        out.append(v + size if v < 0 else v)
    return tuple(out)


def _normalize_range(spec: Any, axis: str, size: int) -> tuple[int, int] | None:
    """Turn a user Y/X range spec into a validated ``(lo, hi)`` pair."""
    if spec is None:
        return None
    if isinstance(spec, slice):
        if spec.step not in (None, 1):
            raise SelectionError(
                f"{axis} {spec!r} has step {spec.step}; {axis.upper()} "
                "selections are contiguous ranges (step 1)"
            )
        lo = 0 if spec.start is None else _as_int(spec.start, f"{axis} start")
        hi = size if spec.stop is None else _as_int(spec.stop, f"{axis} stop")
        pair: tuple[int, int] | None = _check_range_pair((lo, hi), axis, size)
    else:
        pair = _check_range_pair(spec, axis, size)
    assert pair is not None
    _check_range_fits(pair, axis, size)
    return pair


def _bounds_hint(axis: str, size: int) -> str:
    return (
        f"need 0 <= {axis}0 < {axis}1 <= {size} "
        f"(axis {axis.upper()} has size {size})"
    )


def _check_range_fits(pair: tuple[int, int], axis: str, size: int) -> None:
    lo, hi = pair
    if hi > size:
        raise SelectionError(
            f"{axis} range ({lo}, {hi}) extends past the image: "
            + _bounds_hint(axis, size)
        )


@dataclass(frozen=True)
class Selection:
    """A rectangular-by-lists selection of a ``TCZYX`` image.

    Attributes
    ----------
    t, c, z : tuple of int or None
        Explicit non-negative indices along T, C, Z in output order (may be
        unsorted and may repeat), or ``None`` for the whole axis.
    y, x : tuple of (int, int) or None
        Half-open ranges ``(start, stop)`` with ``0 <= start < stop``, or
        ``None`` for the whole axis.

    Notes
    -----
    The constructor checks the form of the fields (non-negative, non-empty,
    ordered bounds) but cannot check them against an image; use
    :meth:`normalize` to build a selection from user input against a shape.
    Applying a selection is equivalent to
    ``arr[np.ix_(t, c, z)][..., y0:y1, x0:x1]``; axes are never dropped.
    """

    t: tuple[int, ...] | None = None
    c: tuple[int, ...] | None = None
    z: tuple[int, ...] | None = None
    y: tuple[int, int] | None = None
    x: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for axis in _LIST_AXES:
            object.__setattr__(
                self, axis, _check_index_tuple(getattr(self, axis), axis)
            )
        for axis in _RANGE_AXES:
            object.__setattr__(
                self, axis, _check_range_pair(getattr(self, axis), axis)
            )

    # -- construction ------------------------------------------------------ #
    @classmethod
    def normalize(
        cls,
        grid_or_shape: ChunkGrid | Sequence[int] | Any,
        *,
        t: IndexSpec = None,
        c: IndexSpec = None,
        z: IndexSpec = None,
        y: RangeSpec = None,
        x: RangeSpec = None,
    ) -> Selection:
        """Build a validated selection from user-style specs.

        Parameters
        ----------
        grid_or_shape : ChunkGrid, array-like or sequence of 5 int
            The image the selection applies to (its ``shape`` is used).
        t, c, z : None, int, slice or iterable of int
            ``None`` selects the whole axis.  An int selects one index (the
            axis is kept, with length 1).  A slice follows Python semantics
            (steps and negative bounds allowed, bounds clipped).  An iterable
            of ints (or integer numpy array) is taken in order, repeats
            allowed; negative indices count from the end as in Python.
        y, x : None, (start, stop) or slice
            Half-open range along Y / X.  A slice must have step ``None`` or
            1; ``None`` bounds mean the image edges.  Negative bounds are not
            allowed.

        Returns
        -------
        Selection
            With explicit, in-range, non-negative index tuples (``None`` stays
            ``None``).

        Raises
        ------
        SelectionError
            For an out-of-range index, an empty selection (empty list, empty
            slice, ``start >= stop``), a negative Y/X bound or a Y/X bound past
            the image.  The message names the axis, the bad value and the
            valid range.
        TypeError
            For values that are not integers (bools and boolean masks are
            rejected).
        """
        shape = _shape_of(grid_or_shape)
        return cls(
            t=_normalize_indices(t, "t", shape[0]),
            c=_normalize_indices(c, "c", shape[1]),
            z=_normalize_indices(z, "z", shape[2]),
            y=_normalize_range(y, "y", shape[3]),
            x=_normalize_range(x, "x", shape[4]),
        )

    # -- queries ----------------------------------------------------------- #
    def check_fits(self, shape5: Sequence[int]) -> None:
        """Raise :class:`SelectionError` unless the selection fits ``shape5``."""
        shape = _as_shape5(shape5, "image shape")
        for a, axis in enumerate(_LIST_AXES):
            idx = getattr(self, axis)
            if idx is not None:
                bad = max(idx)
                if bad >= shape[a]:
                    raise SelectionError(
                        f"{axis} index {bad} is out of range: axis {axis.upper()} "
                        f"has size {shape[a]}, valid indices are 0..{shape[a] - 1}"
                    )
        for a, axis in zip((3, 4), _RANGE_AXES):
            pair = getattr(self, axis)
            if pair is not None:
                _check_range_fits(pair, axis, shape[a])

    def out_shape(self, shape5: Sequence[int]) -> Shape5:
        """Shape of the result of applying this selection to an image.

        Parameters
        ----------
        shape5 : sequence of 5 int
            Image shape ``(T, C, Z, Y, X)``.

        Returns
        -------
        tuple of 5 int

        Raises
        ------
        SelectionError
            If the selection does not fit ``shape5``.
        """
        shape = _as_shape5(shape5, "image shape")
        self.check_fits(shape)
        out = []
        for a, axis in enumerate(_LIST_AXES):
            idx = getattr(self, axis)
            out.append(shape[a] if idx is None else len(idx))
        for a, axis in zip((3, 4), _RANGE_AXES):
            pair = getattr(self, axis)
            out.append(shape[a] if pair is None else pair[1] - pair[0])
        return tuple(out)  # type: ignore[return-value]

    def compose(self, inner: Selection) -> Selection:
        """Selection equivalent to applying ``self`` and then ``inner``.

        Parameters
        ----------
        inner : Selection
            A selection expressed in the coordinates of the *output* of
            ``self`` (e.g. built with
            ``Selection.normalize(self.out_shape(shape), ...)``).

        Returns
        -------
        Selection
            A selection in source coordinates such that
            ``self.compose(inner).apply(a) == inner.apply(self.apply(a))``.

        Raises
        ------
        SelectionError
            If ``inner`` reaches past the output of ``self`` along an axis
            where ``self`` is explicit.  (Where ``self`` is ``None`` the
            output size is the image size, which is only checked when the
            result is used.)
        """
        if not isinstance(inner, Selection):
            raise TypeError(f"inner must be a Selection, got {type(inner).__name__}")
        kw: dict[str, Any] = {}
        for axis in _LIST_AXES:
            outer_idx: tuple[int, ...] | None = getattr(self, axis)
            inner_idx: tuple[int, ...] | None = getattr(inner, axis)
            if inner_idx is None:
                kw[axis] = outer_idx
            elif outer_idx is None:
                kw[axis] = inner_idx
            else:
                n = len(outer_idx)
                bad = max(inner_idx)
                if bad >= n:
                    raise SelectionError(
                        f"inner {axis} index {bad} is out of range: the outer "
                        f"selection keeps {n} {axis} index(es), valid indices "
                        f"are 0..{n - 1}"
                    )
                kw[axis] = tuple(outer_idx[i] for i in inner_idx)
        for axis in _RANGE_AXES:
            outer_r: tuple[int, int] | None = getattr(self, axis)
            inner_r: tuple[int, int] | None = getattr(inner, axis)
            if inner_r is None:
                kw[axis] = outer_r
            elif outer_r is None:
                kw[axis] = inner_r
            else:
                n = outer_r[1] - outer_r[0]
                if inner_r[1] > n:
                    raise SelectionError(
                        f"inner {axis} range {inner_r} extends past the outer "
                        f"selection: need 0 <= {axis}0 < {axis}1 <= {n}"
                    )
                kw[axis] = (outer_r[0] + inner_r[0], outer_r[0] + inner_r[1])
        return Selection(**kw)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Apply the selection to an in-memory 5-D array (reference semantics).

        Parameters
        ----------
        array : numpy.ndarray
            Array of shape ``(T, C, Z, Y, X)``.

        Returns
        -------
        numpy.ndarray
            ``array[np.ix_(t, c, z)][..., y0:y1, x0:x1]`` with ``None`` axes
            taken whole; a view when no index list is given.
        """
        arr = np.asarray(array)
        if arr.ndim != 5:
            raise ValueError(f"expected a 5-D TCZYX array, got shape {arr.shape}")
        self.check_fits(arr.shape)
        for a, axis in enumerate(_LIST_AXES):
            idx = getattr(self, axis)
            if idx is not None:
                arr = np.take(arr, np.asarray(idx, dtype=np.intp), axis=a)
        ys = slice(None) if self.y is None else slice(*self.y)
        xs = slice(None) if self.x is None else slice(*self.x)
        return arr[..., ys, xs]


# --------------------------------------------------------------------------- #
# copy planning
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class _AxisPlan:
    """Per-axis part of a :class:`CopyPlan`.

    For each touched chunk ``g`` along the axis (sorted by origin):
    ``starts[g]`` is the chunk origin; if ``contig[g]`` the chunk contributes
    ``length[g]`` consecutive elements from local offset ``loc_start[g]`` to
    output offset ``out_start[g]`` (basic slicing); otherwise it contributes
    the fancy index pairs ``flat_loc[s:s+n]`` -> ``flat_out[s:s+n]`` with
    ``s = offset[g]``, ``n = length[g]``.
    """

    starts: np.ndarray
    loc_start: np.ndarray
    out_start: np.ndarray
    length: np.ndarray
    contig: np.ndarray
    offset: np.ndarray
    flat_loc: np.ndarray
    flat_out: np.ndarray

    def index(self, g: int) -> tuple[slice | np.ndarray, slice | np.ndarray]:
        """``(chunk_index, out_index)`` for touched chunk ``g`` along the axis."""
        n = int(self.length[g])
        if self.contig[g]:
            lo = int(self.loc_start[g])
            oo = int(self.out_start[g])
            return slice(lo, lo + n), slice(oo, oo + n)
        s = int(self.offset[g])
        return self.flat_loc[s : s + n], self.flat_out[s : s + n]


def _axis_plan_range(lo: int, hi: int, chunk: int) -> _AxisPlan:
    """Axis plan for the contiguous range ``[lo, hi)`` (vectorised)."""
    ks = np.arange(lo // chunk, (hi - 1) // chunk + 1, dtype=np.int64)
    starts = ks * chunk
    a = np.maximum(starts, lo)
    b = np.minimum(starts + chunk, hi)
    empty = np.empty(0, dtype=np.int64)
    return _AxisPlan(
        starts=_readonly(starts),
        loc_start=_readonly(a - starts),
        out_start=_readonly(a - lo),
        length=_readonly(b - a),
        contig=_readonly(np.ones(len(ks), dtype=bool)),
        offset=_readonly(np.zeros(len(ks), dtype=np.int64)),
        flat_loc=_readonly(empty),
        flat_out=_readonly(empty.copy()),
    )


def _axis_plan_list(idx: Sequence[int], chunk: int) -> _AxisPlan:
    """Axis plan for an explicit index list (vectorised over the list)."""
    src = np.asarray(idx, dtype=np.int64)
    n = len(src)
    ck = src // chunk
    order = np.argsort(ck, kind="stable").astype(np.int64)  # output positions
    sck = ck[order]
    sloc = src[order] - sck * chunk
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sck[1:], sck[:-1], out=new[1:])
    gstart = np.flatnonzero(new)
    gend = np.append(gstart[1:], n)
    # a group is contiguous when every consecutive pair inside it steps by
    # one both in the output and in the chunk
    brk = np.zeros(n, dtype=np.int64)
    if n > 1:
        step_ok = (np.diff(order) == 1) & (np.diff(sloc) == 1)
        brk[1:] = (~step_ok & ~new[1:]).astype(np.int64)
    cum = np.cumsum(brk)
    contig = (cum[gend - 1] - cum[gstart]) == 0
    return _AxisPlan(
        starts=_readonly(sck[gstart] * chunk),
        loc_start=_readonly(sloc[gstart]),
        out_start=_readonly(order[gstart]),
        length=_readonly((gend - gstart).astype(np.int64)),
        contig=_readonly(contig),
        offset=_readonly(gstart.astype(np.int64)),
        flat_loc=_readonly(sloc.astype(np.intp)),
        flat_out=_readonly(order.astype(np.intp)),
    )


def _axis_plans(grid: ChunkGrid, sel: Selection) -> tuple[_AxisPlan, ...]:
    plans = []
    for a, axis in enumerate(_LIST_AXES):
        idx = getattr(sel, axis)
        if idx is None:
            plans.append(_axis_plan_range(0, grid.shape[a], grid.chunk_shape[a]))
        else:
            plans.append(_axis_plan_list(idx, grid.chunk_shape[a]))
    for a, axis in zip((3, 4), _RANGE_AXES):
        pair = getattr(sel, axis)
        lo, hi = (0, grid.shape[a]) if pair is None else pair
        plans.append(_axis_plan_range(lo, hi, grid.chunk_shape[a]))
    return tuple(plans)


@dataclass(frozen=True, eq=False)
class CopyPlan:
    """How to assemble a selection from the chunks it touches.

    Attributes
    ----------
    grid : ChunkGrid
        The grid the plan was made for.
    selection : Selection
        The (validated) selection.
    origins : numpy.ndarray
        ``(k, 5)`` int64 origins of the touched chunks, each exactly once, in
        C order over ``(t, c, z, y, x)``.  Read-only.
    extents : numpy.ndarray
        ``(k, 5)`` int64 clipped shapes of those chunks.  Read-only.
    out_shape : tuple of 5 int
        Shape of the assembled output.

    Notes
    -----
    The touched chunks form a Cartesian product of touched chunk positions
    per axis, so the plan stores per-axis index data (vectorised, ``O(number
    of selected indices + touched chunks per axis)``) and decomposes a chunk
    number into per-axis positions at :meth:`copy` time.
    """

    grid: ChunkGrid
    selection: Selection
    origins: np.ndarray
    extents: np.ndarray
    out_shape: Shape5
    _axes: tuple[_AxisPlan, ...] = field(repr=False)

    def __len__(self) -> int:
        return int(self.origins.shape[0])

    @property
    def n_chunks(self) -> int:
        """Number of touched chunks ``k``."""
        return len(self)

    def indices(
        self, chunk_index: int
    ) -> tuple[tuple[slice | np.ndarray, ...], tuple[slice | np.ndarray, ...]]:
        """Index tuples ``(src, dst)`` with ``out[dst] = chunk[src]`` for a chunk.

        Each tuple has 5 entries, a ``slice`` or an int index array per axis;
        index arrays are shaped for mutual broadcasting like ``np.ix_``.

        Raises
        ------
        IndexError
            If ``chunk_index`` is not in ``0..k-1``.
        """
        i = _as_int(chunk_index, "chunk_index")
        k = len(self)
        if not 0 <= i < k:
            raise IndexError(
                f"chunk_index {i} is out of range: the plan touches {k} chunk(s), "
                f"valid indices are 0..{k - 1}"
            )
        pos = [0] * 5
        for a in range(4, -1, -1):
            n_a = len(self._axes[a].starts)
            i, pos[a] = divmod(i, n_a)
        src: list[slice | np.ndarray] = []
        dst: list[slice | np.ndarray] = []
        for a in range(5):
            s, d = self._axes[a].index(pos[a])
            src.append(s)
            dst.append(d)
        fancy = [a for a in range(5) if not isinstance(src[a], slice)]
        m = len(fancy)
        if m > 1:
            for j, a in enumerate(fancy):
                shp = [1] * m
                shp[j] = -1
                src[a] = src[a].reshape(shp)  # type: ignore[union-attr]
                dst[a] = dst[a].reshape(shp)  # type: ignore[union-attr]
        return tuple(src), tuple(dst)

    def copy(self, chunk_index: int, chunk_data: np.ndarray, out: np.ndarray) -> None:
        """Copy the selected part of one decoded chunk into ``out``.

        Parameters
        ----------
        chunk_index : int
            Row of :attr:`origins` the data belongs to.
        chunk_data : numpy.ndarray
            The decoded chunk, of its clipped extent ``extents[chunk_index]``:
            5-D ``(ct, cc, cz, cy, cx)``, or 3-D ``(cz, cy, cx)`` when the
            chunk has ``ct == cc == 1``.
        out : numpy.ndarray
            Preallocated output of shape :attr:`out_shape`; written in place
            (numpy assignment casting rules apply).

        Raises
        ------
        IndexError
            If ``chunk_index`` is out of range.
        PixelPayloadError
            If ``chunk_data`` does not have the chunk's clipped shape.
        SelectionError
            If ``out`` does not have :attr:`out_shape`.

        Notes
        -----
        One numpy assignment per chunk: T/C/Z index lists that pick several
        (possibly repeated or unordered) planes are handled by fancy indexing,
        contiguous runs by basic slicing; there is no Python loop over planes
        or pixels.
        """
        src, dst = self.indices(chunk_index)
        extent = tuple(int(v) for v in self.extents[chunk_index])
        data = chunk_data
        if not isinstance(data, np.ndarray):
            data = np.asarray(data)
        if data.ndim == 3 and extent[0] == 1 and extent[1] == 1:
            data = data[np.newaxis, np.newaxis]
        if data.shape != extent:
            raise PixelPayloadError(
                f"chunk {chunk_index} at origin "
                f"{tuple(int(v) for v in self.origins[chunk_index])} has shape "
                f"{data.shape}, expected {extent}"
                + (
                    f" or {extent[2:]}"
                    if extent[0] == 1 and extent[1] == 1
                    else ""
                )
            )
        if tuple(out.shape) != self.out_shape:
            raise SelectionError(
                f"output array has shape {tuple(out.shape)}, but the selection "
                f"produces {self.out_shape}"
            )
        out[dst] = data[src]


def plan_copies(grid: ChunkGrid, sel: Selection) -> CopyPlan:
    """Plan reading ``sel`` from ``grid``: touched chunks and copy indices.

    Parameters
    ----------
    grid : ChunkGrid
        The chunk grid of the image.
    sel : Selection
        A selection that fits ``grid.shape``.

    Returns
    -------
    CopyPlan
        ``origins`` lists exactly the chunks that intersect the selection,
        each once, in C order; ``copy`` moves a decoded chunk into the output.

    Raises
    ------
    SelectionError
        If ``sel`` does not fit the image.
    """
    out_shape = sel.out_shape(grid.shape)
    axes = _axis_plans(grid, sel)
    origins = _product_rows([ax.starts for ax in axes])
    extents = grid.extents_for(origins)
    return CopyPlan(
        grid=grid,
        selection=sel,
        origins=_readonly(origins),
        extents=_readonly(extents),
        out_shape=out_shape,
        _axes=axes,
    )


def chunks_for_roi(grid: ChunkGrid, sel: Selection) -> np.ndarray:
    """Origins of the chunks a selection touches, ``(k, 5)`` int64, C order.

    Equal to ``plan_copies(grid, sel).origins`` but cheaper (no copy indices).

    Raises
    ------
    SelectionError
        If ``sel`` does not fit the image.
    """
    sel.check_fits(grid.shape)
    cols: list[np.ndarray] = []
    for a, axis in enumerate(_LIST_AXES):
        idx = getattr(sel, axis)
        c = grid.chunk_shape[a]
        if idx is None:
            cols.append(np.arange(0, grid.shape[a], c, dtype=np.int64))
        else:
            cols.append(np.unique(np.asarray(idx, dtype=np.int64) // c) * c)
    for a, axis in zip((3, 4), _RANGE_AXES):
        pair = getattr(sel, axis)
        lo, hi = (0, grid.shape[a]) if pair is None else pair
        c = grid.chunk_shape[a]
        cols.append(np.arange(lo // c, (hi - 1) // c + 1, dtype=np.int64) * c)
    return _product_rows(cols)


def regular_pieces(
    shape: Sequence[int], chunk_zyx: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Origins ``(n, 5)`` and clipped ZYX extents ``(n, 3)`` of a regular chunk grid.

    T and C chunks are 1 deep (the OME-Arrow chunk model); chunks are listed in
    C order over ``(t, c, z, y, x)``, the order records and datasets store them.
    Vectorised: a 100k-chunk grid takes a few milliseconds.
    """
    st, sc, sz, sy, sx = (int(v) for v in shape)
    cz, cy, cx = (max(1, int(v)) for v in chunk_zyx)
    grid = (st, sc, -(-sz // cz), -(-sy // cy), -(-sx // cx))
    origins = np.indices(grid).reshape(5, -1).T.astype(np.int64)
    origins *= np.array([1, 1, cz, cy, cx], dtype=np.int64)
    extents = np.stack(
        [
            np.minimum(cz, sz - origins[:, 2]),
            np.minimum(cy, sy - origins[:, 3]),
            np.minimum(cx, sx - origins[:, 4]),
        ],
        axis=1,
    )
    return origins, extents
