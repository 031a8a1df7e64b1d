"""Selections of 5-D ``TCZYX`` images: one value type, normalised and composable.

A :class:`Selection` picks explicit index lists along T, C and Z (``None`` =
the whole axis) and half-open ranges ``[y0, y1)``, ``[x0, x1)`` along Y and X
(``None`` = the whole axis). Index lists may be unsorted and may repeat; the
output follows list order, exactly like ``arr[np.ix_(t, c, z)][..., y0:y1,
x0:x1]``. Axes are never dropped: the output is always 5-D.

* :meth:`Selection.normalize` builds one from user input (ints, slices,
  negative indices, lists, integer arrays) against an image shape;
* :meth:`Selection.compose` maps a selection of a selection straight back to
  source coordinates (plans compose this way);
* :meth:`Selection.resolve` checks it against an image shape and returns the
  :class:`ResolvedSelection` (index arrays and ranges) the executor reads with.

Pure values: this module imports numpy and :mod:`omeframe.model.errors` only.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from omeframe.model.errors import SelectionError

__all__ = ["Shape5", "Selection", "ResolvedSelection"]

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
        return value
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


def _shape_of(shape_or_array: Sequence[int] | Any) -> Shape5:
    """Image shape from an array-like (its ``shape``) or a 5-sequence."""
    shape = getattr(shape_or_array, "shape", shape_or_array)
    return _as_shape5(shape, "image shape")


# --------------------------------------------------------------------------- #
# Selection
# --------------------------------------------------------------------------- #
def _check_index_tuple(value: Any, axis: str) -> tuple[int, ...] | None:
    """Validate a stored (already normalized) index tuple."""
    if value is None:
        return None
    if type(value) in (tuple, list) and value and all(type(v) is int and v >= 0 for v in value):
        return tuple(value)  # the common case, checked without the loop below
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
                f"Selection.{axis} holds the negative index {v}: a Selection "
                "stores source indices counted from 0; use Selection.normalize "
                "to pass Python-style negative indices"
            )
    return items


def _check_range_pair(
    value: Any, axis: str, size: int | None = None
) -> tuple[int, int] | None:
    """Validate a half-open range ``(lo, hi)``; ``size`` only refines messages."""
    if value is None:
        return None
    if type(value) is tuple and len(value) == 2:
        lo, hi = value
        if type(lo) is int and type(hi) is int and 0 <= lo < hi:
            return value  # the common case, checked without the checks below
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
        shape: Sequence[int] | Any,
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
        shape : sequence of 5 int or array-like
            The shape of the image the selection applies to (or an array,
            whose ``shape`` is used).
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
        shape = _shape_of(shape)
        return cls(
            t=_normalize_indices(t, "t", shape[0]),
            c=_normalize_indices(c, "c", shape[1]),
            z=_normalize_indices(z, "z", shape[2]),
            y=_normalize_range(y, "y", shape[3]),
            x=_normalize_range(x, "x", shape[4]),
        )

    @classmethod
    def of(
        cls,
        *,
        t: Iterable[int] | np.ndarray | None = None,
        c: Iterable[int] | np.ndarray | None = None,
        z: Iterable[int] | np.ndarray | None = None,
        y: Sequence[int] | None = None,
        x: Sequence[int] | None = None,
    ) -> Selection:
        """A selection of source indices given as any sequences (the constructor's checks).

        Unlike :meth:`normalize` nothing is interpreted: indices must be
        non-negative, lists non-empty, ranges ``(start, stop)`` with
        ``0 <= start < stop``. The image is checked by :meth:`resolve`.

        Example
        -------
        >>> Selection.of(z=[2, 0], y=[0, 4])
        Selection(t=None, c=None, z=(2, 0), y=(0, 4), x=None)
        """
        return cls(t=t, c=c, z=z, y=y, x=x)  # type: ignore[arg-type]

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
        for a, axis in zip((3, 4), _RANGE_AXES, strict=True):
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
        for a, axis in zip((3, 4), _RANGE_AXES, strict=True):
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

    def resolve(self, shape5: Sequence[int]) -> ResolvedSelection:
        """Check the selection against an image and return its index form.

        Parameters
        ----------
        shape5 : sequence of 5 int
            Image shape ``(T, C, Z, Y, X)``.

        Returns
        -------
        ResolvedSelection
            Source index arrays for T/C/Z (whole axes spelled out) and
            ``(start, stop)`` ranges for Y/X: what the executor reads with.

        Raises
        ------
        SelectionError
            If an index or range does not fit ``shape5``; the message names
            the axis, the bad value and the valid range.

        Example
        -------
        >>> r = Selection(z=(3, 1), y=(0, 8)).resolve((1, 2, 4, 16, 16))
        >>> r.z.tolist(), r.c.tolist(), r.x, r.out_shape
        ([3, 1], [0, 1], (0, 16), (1, 2, 2, 8, 16))
        """
        st, sc, sz, sy, sx = _as_shape5(shape5, "image shape")
        return ResolvedSelection(
            _resolve_indices(self.t, "t", st),
            _resolve_indices(self.c, "c", sc),
            _resolve_indices(self.z, "z", sz),
            _resolve_range(self.y, "y", sy),
            _resolve_range(self.x, "x", sx),
        )

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




def _resolve_indices(idx: tuple[int, ...] | None, axis: str, size: int) -> np.ndarray:
    """Source indices of one list axis as an int64 array (``None``: all)."""
    if idx is None:
        return np.arange(size, dtype=np.int64)
    bad = idx[0] if len(idx) == 1 else max(idx)
    if bad >= size:
        raise SelectionError(
            f"{axis} index {bad} is out of range: axis {axis.upper()} "
            f"has size {size}, valid indices are 0..{size - 1}"
        )
    return np.array(idx, dtype=np.int64)


def _resolve_range(pair: tuple[int, int] | None, axis: str, size: int) -> tuple[int, int]:
    """``(start, stop)`` of one range axis (``None``: the whole axis)."""
    if pair is None:
        return (0, size)
    _check_range_fits(pair, axis, size)
    return pair


@dataclass(frozen=True, eq=False, slots=True)
class ResolvedSelection:
    """A :class:`Selection` checked against one image, in the executor's index form.

    Built by :meth:`Selection.resolve`; not a second selection type but the
    same selection with whole axes spelled out.

    Attributes
    ----------
    t, c, z : numpy.ndarray
        int64 source indices in output order (unsorted and repeated indices
        allowed; a whole axis is ``arange(size)``); not to be modified.
    y, x : tuple of (int, int)
        Half-open source ranges ``(start, stop)``.

    Example
    -------
    >>> Selection(t=(0, 0)).resolve((1, 1, 1, 4, 4)).out_shape
    (2, 1, 1, 4, 4)
    """

    t: np.ndarray
    c: np.ndarray
    z: np.ndarray
    y: tuple[int, int]
    x: tuple[int, int]

    @property
    def out_shape(self) -> Shape5:
        """Shape ``(T, C, Z, Y, X)`` of the result of reading this selection."""
        return (
            int(self.t.size),
            int(self.c.size),
            int(self.z.size),
            self.y[1] - self.y[0],
            self.x[1] - self.x[0],
        )
