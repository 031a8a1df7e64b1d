"""``Pieces``: the one description of a chunked image the executor reads from.

Every source (record, dataset, TIFF, OME-Zarr, stack, CZI, arrays, plans)
hands the executor a :class:`Pieces` value: where each piece sits
(``origins``/``extents``), how to decode piece ``i`` and what each costs in
storage. Two kinds, told apart by type rather than re-detected per read:

* :class:`RegularPieces`: the pieces are exactly a regular ZYX grid in C
  order over ``(t, c, z, y, x)`` (datasets, OME-Zarr, pyramids, plans, and
  any explicit list found to be one by :func:`make_pieces`). Picking the
  pieces a selection touches is index arithmetic.
* :class:`ExplicitPieces`: any other layout (planes, TIFF tiles, CZI
  subblocks, record chunk lists in any order). Picking is a vectorised scan.

Partial decoding is a declared capability: pieces stored as independently
decodable bands of rows (framed zstd dataset chunks) carry a
:class:`RowBands`, and :attr:`Pieces.partial_decode` says so.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omeframe.engine.limits import check_alloc
from omeframe.model.errors import PixelPayloadError

__all__ = [
    "Pieces",
    "RegularPieces",
    "ExplicitPieces",
    "RowBands",
    "make_pieces",
    "regular_pieces",
]

Shape5 = tuple[int, int, int, int, int]
Decode = Callable[[int, bool], np.ndarray]

# Below this many pieces, make_pieces does not look for a regular grid: the
# executor's scan of a few pieces costs less than the check.
_REGULAR_MIN_PIECES = 64


@functools.lru_cache(maxsize=8)
def _regular_grid_arrays(shape: Shape5, chunk: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    st, sc, sz, sy, sx = shape
    cz, cy, cx = chunk
    grid = (st, sc, -(-sz // cz), -(-sy // cy), -(-sx // cx))
    check_alloc(math.prod(grid) * 5 * 8 * 3, f"the chunk grid {grid} of a {shape} image")  # origins, extents, temps
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
    origins.flags.writeable = False
    extents.flags.writeable = False
    return origins, extents


def regular_pieces(shape: Sequence[int], chunk_zyx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Origins ``(n, 5)`` and clipped ZYX extents ``(n, 3)`` of a regular chunk grid.

    T and C chunks are 1 deep (the OME-Arrow chunk model); chunks are listed in
    C order over ``(t, c, z, y, x)``, the order records and datasets store them.
    Vectorised (a 100k-chunk grid takes a few milliseconds) and memoised for
    the last few grids; the arrays are read-only (copy before changing them).

    Example
    -------
    >>> o, e = regular_pieces((1, 1, 1, 5, 4), (1, 4, 4))
    >>> o.tolist(), e.tolist()
    ([[0, 0, 0, 0, 0], [0, 0, 0, 4, 0]], [[1, 4, 4], [1, 1, 4]])
    """
    st, sc, sz, sy, sx = (int(v) for v in shape)
    cz, cy, cx = (max(1, int(v)) for v in chunk_zyx)
    return _regular_grid_arrays((st, sc, sz, sy, sx), (cz, cy, cx))


@dataclass(frozen=True)
class RowBands:
    """Partial decoding of pieces stored as independently decodable bands of rows.

    Rows are those of a piece's flattened ``Z*Y`` row space (each ``X`` wide).

    Attributes
    ----------
    decode_rows
        ``decode_rows(i, r0, r1, strict) -> (flat, ra)``: whole rows ``ra ..``
        of piece ``i`` (flattened), covering at least rows ``[r0, r1)``.
    span_nbytes
        ``span_nbytes(i, r0, r1)``: the stored bytes ``decode_rows`` reads for
        those rows (what ``explain()`` reports).
    """

    decode_rows: Callable[[int, int, int, bool], tuple[np.ndarray, int]]
    span_nbytes: Callable[[int, int, int], int]


class Pieces:
    """A chunked image as the executor sees it (abstract: use a subclass).

    Attributes
    ----------
    shape
        ``(T, C, Z, Y, X)`` of the whole image.
    dtype
        Native pixel dtype.
    origins, extents
        ``(n, 5)`` TCZYX origins and ``(n, 3)`` ZYX extents of the pieces
        (T and C extents are 1).
    decode
        ``decode(i, strict) -> ndarray`` of piece ``i``'s ``prod(extent)`` values.
    stored_nbytes
        ``(n,)`` bytes each piece occupies in storage (what a read costs).
    parallel
        Whether decoding is heavy enough (compressed, or I/O) to use threads.
    describe
        One line naming the source, for ``explain()``.
    metadata_nbytes
        Bytes of metadata an open reads (for ``explain()``).
    extra
        Source-specific facts (e.g. ``row_group_bytes`` of a record table).
    bands
        The :class:`RowBands` of pieces that decode by bands of rows, else ``None``.
    """

    shape: Shape5
    dtype: np.dtype[Any]
    origins: np.ndarray
    extents: np.ndarray
    decode: Decode
    stored_nbytes: np.ndarray
    parallel: bool
    describe: str
    metadata_nbytes: int
    extra: dict[str, Any]
    bands: RowBands | None

    def __len__(self) -> int:
        return int(self.stored_nbytes.shape[0])

    @property
    def partial_decode(self) -> bool:
        """Whether part of a piece can be decoded alone (see :class:`RowBands`)."""
        return self.bands is not None

    @property
    def grid(self) -> tuple[int, int, int] | None:
        """The regular ZYX chunk shape, or ``None`` when the pieces are not a regular grid."""
        return None

    def check_bounds(self) -> None:
        """Raise ``PixelPayloadError`` when a piece lies outside the image."""

    def replace(self, **changes: Any) -> Pieces:
        """A copy with some fields changed (e.g. ``describe``, ``metadata_nbytes``, ``extra``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True, eq=False)
class RegularPieces(Pieces):
    """Pieces that are exactly a regular ZYX grid, in C order over ``(t, c, z, y, x)``.

    ``origins`` and ``extents`` follow from ``shape`` and ``chunk`` (see
    :func:`regular_pieces`); piece ``i`` is the ``i``-th chunk of that grid.

    Example
    -------
    >>> import numpy as np
    >>> a = np.arange(2 * 6 * 4, dtype=np.uint8).reshape(1, 2, 1, 6, 4)
    >>> o, e = regular_pieces(a.shape, (1, 4, 4))
    >>> p = RegularPieces(a.shape, a.dtype, (1, 4, 4),
    ...     lambda i, strict: a[o[i, 0], o[i, 1], :, o[i, 3]:o[i, 3] + e[i, 1]].ravel(),
    ...     e.prod(axis=1), False)
    >>> len(p), p.grid, p.partial_decode
    (4, (1, 4, 4), False)
    """

    shape: Shape5
    dtype: np.dtype[Any]
    chunk: tuple[int, int, int]
    decode: Decode
    stored_nbytes: np.ndarray
    parallel: bool
    describe: str = "pixels"
    metadata_nbytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    bands: RowBands | None = None

    def __post_init__(self) -> None:
        chunk = tuple(int(v) for v in self.chunk)
        if len(chunk) != 3 or min(chunk) < 1:
            raise ValueError(f"RegularPieces chunk must be 3 positive ints (ZYX), got {self.chunk!r}")
        object.__setattr__(self, "chunk", chunk)

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.chunk

    @functools.cached_property
    def origins(self) -> np.ndarray:  # type: ignore[override]
        return regular_pieces(self.shape, self.chunk)[0]

    @functools.cached_property
    def extents(self) -> np.ndarray:  # type: ignore[override]
        return regular_pieces(self.shape, self.chunk)[1]


@dataclass(frozen=True, eq=False)
class ExplicitPieces(Pieces):
    """Pieces listed one by one (any layout, any order; pieces must not overlap).

    Example
    -------
    >>> import numpy as np
    >>> a = np.arange(12, dtype=np.uint8).reshape(1, 1, 2, 2, 3)
    >>> o = np.array([[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]])
    >>> e = np.array([[1, 2, 3], [1, 2, 3]])
    >>> p = ExplicitPieces(a.shape, a.dtype, o, e, lambda i, s: a[0, 0, o[i, 2]].ravel(),
    ...     np.array([6, 6]), False)
    >>> len(p), p.grid
    (2, None)
    """

    shape: Shape5
    dtype: np.dtype[Any]
    origins: np.ndarray
    extents: np.ndarray
    decode: Decode
    stored_nbytes: np.ndarray
    parallel: bool
    describe: str = "pixels"
    metadata_nbytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    bands: RowBands | None = None

    def check_bounds(self) -> None:
        """Raise ``PixelPayloadError`` when a piece lies outside the image (checked once)."""
        if "_checked" in self.__dict__:
            return
        o, e = self.origins, self.extents
        if o.size:
            st, sc, sz, sy, sx = self.shape
            bad = (
                (o < 0).any(axis=1)
                | (e <= 0).any(axis=1)
                | (o[:, 0] >= st)
                | (o[:, 1] >= sc)
                | (o[:, 2] + e[:, 0] > sz)
                | (o[:, 3] + e[:, 1] > sy)
                | (o[:, 4] + e[:, 2] > sx)
            )
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise PixelPayloadError(
                    f"chunks[{i}] at TCZYX origin {tuple(int(v) for v in o[i])} with ZYX shape "
                    f"{tuple(int(v) for v in e[i])} lies outside the image TCZYX={self.shape}"
                )
        self.__dict__["_checked"] = True


def make_pieces(
    shape: Sequence[int],
    dtype: np.dtype[Any],
    origins: np.ndarray,
    extents: np.ndarray,
    decode: Decode,
    stored_nbytes: np.ndarray,
    parallel: bool,
    describe: str = "pixels",
    *,
    metadata_nbytes: int = 0,
    extra: dict[str, Any] | None = None,
    bands: RowBands | None = None,
) -> Pieces:
    """Pieces listed by arrays: :class:`RegularPieces` when they form a regular grid.

    The one place that looks at a piece list to find a regular grid (a
    record's chunk list, a TIFF's tiles): sources that know their grid build
    :class:`RegularPieces` directly.

    Example
    -------
    >>> import numpy as np
    >>> o, e = regular_pieces((1, 1, 1, 90, 90), (1, 10, 10))
    >>> p = make_pieces((1, 1, 1, 90, 90), np.dtype("u1"), o, e, lambda i, s: np.zeros(100),
    ...     np.full(len(o), 100), False)
    >>> type(p).__name__, p.grid
    ('RegularPieces', (1, 10, 10))
    """
    t, c, z, y, x = (int(v) for v in shape)
    shp: Shape5 = (t, c, z, y, x)
    kw: dict[str, Any] = {
        "describe": describe,
        "metadata_nbytes": metadata_nbytes,
        "extra": {} if extra is None else extra,
        "bands": bands,
    }
    o, e = origins, extents
    if len(o) > _REGULAR_MIN_PIECES and e.shape == (len(o), 3):
        cz, cy, cx = (int(v) for v in e[0])
        cand = (cz, cy, cx)
        if min(cand) >= 1:
            ro, re_ = regular_pieces(shp, cand)
            if ro.shape == o.shape and np.array_equal(ro, o) and np.array_equal(re_, e):
                return RegularPieces(shp, dtype, cand, decode, stored_nbytes, parallel, **kw)
    return ExplicitPieces(shp, dtype, origins, extents, decode, stored_nbytes, parallel, **kw)
