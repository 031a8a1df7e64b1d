"""Assemble a TCZYX selection from decoded pieces (chunks, planes or tiles).

A :class:`PixelSource` describes any chunked image: where each piece sits
(``origins``/``extents``), how to fetch and decode piece ``i``, and how many
stored bytes each piece costs. :func:`select_pieces` picks, with vectorised
numpy tests, the pieces a selection touches; :func:`assemble` decodes them
(in the shared thread pool when worthwhile) and copies each one straight into a
single preallocated output. Nothing loops over pixels or planes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omeframe.engine import threads as _threads
from omeframe.model.dtypes import to_numpy_dtype
from omeframe.model.errors import PixelPayloadError, SelectionError
from omeframe.model.selection import regular_pieces

__all__ = ["PixelSource", "IndexSelection", "select_pieces", "assemble", "index_selection", "selected_nbytes"]

# Stored bytes a read must fetch before its pieces are decoded in the thread
# pool: below this, handing work to threads costs more than it saves.
_PARALLEL_MIN_BYTES = 192 << 10


@dataclass(frozen=True)
class PixelSource:
    """Uniform description of a chunked image.

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
    regular
        The ZYX chunk shape when the pieces are exactly a regular grid in C
        order over (t, c, z, y, x) (as :func:`~omeframe.model.selection.regular_pieces`
        lists them): piece selection is then index arithmetic, not a scan.
    decode_rows
        Optional partial decoder ``decode_rows(i, r0, r1, strict) -> (flat, ra)``
        for pieces stored in independently decodable bands of rows (framed
        chunks): it returns whole rows ``ra ..`` of piece ``i``'s flattened
        Z*Y row space covering at least rows ``[r0, r1)``.
    span_nbytes
        ``span_nbytes(i, r0, r1)``: stored bytes :attr:`decode_rows` reads for
        those rows (what :func:`selected_nbytes` reports).
    """

    shape: tuple[int, int, int, int, int]
    dtype: np.dtype[Any]
    origins: np.ndarray
    extents: np.ndarray
    decode: Callable[[int, bool], np.ndarray]
    stored_nbytes: np.ndarray
    parallel: bool
    describe: str = "pixels"
    metadata_nbytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    regular: tuple[int, int, int] | None = None
    decode_rows: Callable[[int, int, int, bool], tuple[np.ndarray, int]] | None = None
    span_nbytes: Callable[[int, int, int], int] | None = None

    def __len__(self) -> int:
        return int(self.origins.shape[0])


@dataclass(frozen=True)
class IndexSelection:
    """Explicit source indices per axis: T/C/Z index arrays, Y/X half-open ranges."""

    t: np.ndarray
    c: np.ndarray
    z: np.ndarray
    y: tuple[int, int]
    x: tuple[int, int]

    @property
    def out_shape(self) -> tuple[int, int, int, int, int]:
        return (
            int(self.t.size),
            int(self.c.size),
            int(self.z.size),
            self.y[1] - self.y[0],
            self.x[1] - self.x[0],
        )


def _index_array(sel: Sequence[int] | np.ndarray | None, size: int, axis: str) -> np.ndarray:
    if sel is None:
        return np.arange(size, dtype=np.int64)
    if type(sel) in (tuple, list) and len(sel) == 1 and type(sel[0]) is int:
        # one index (the common region read): checked without numpy
        if not 0 <= sel[0] < size:
            raise SelectionError(
                f"{axis} index {sel[0]} is out of range: the image has {axis}={size} (valid 0..{size - 1})"
            )
        return np.array(sel, dtype=np.int64)
    idx = np.asarray(sel if isinstance(sel, np.ndarray) else list(sel), dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise SelectionError(f"empty {axis} selection: select at least one index in [0, {size})")
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.size:
        raise SelectionError(
            f"{axis} index {int(bad[0])} is out of range: the image has {axis}={size} "
            f"(valid 0..{size - 1})"
        )
    return idx


def _range(r: tuple[int, int] | None, size: int, axis: str) -> tuple[int, int]:
    if r is None:
        return 0, size
    lo, hi = int(r[0]), int(r[1])
    if lo < 0 or hi > size or lo >= hi:
        raise SelectionError(
            f"{axis} range [{lo}, {hi}) is invalid for an image with {axis}={size}: "
            f"bounds must satisfy 0 <= min < max <= {size}"
        )
    return lo, hi


def index_selection(
    shape: tuple[int, int, int, int, int],
    *,
    t: Sequence[int] | np.ndarray | None = None,
    c: Sequence[int] | np.ndarray | None = None,
    z: Sequence[int] | np.ndarray | None = None,
    y: tuple[int, int] | None = None,
    x: tuple[int, int] | None = None,
) -> IndexSelection:
    """Validate a selection against ``shape`` (precise ``SelectionError`` otherwise)."""
    st, sc, sz, sy, sx = shape
    return IndexSelection(
        _index_array(t, st, "T"),
        _index_array(c, sc, "C"),
        _index_array(z, sz, "Z"),
        _range(y, sy, "Y"),
        _range(x, sx, "X"),
    )


def regular_grid(src: PixelSource) -> tuple[int, int, int] | None:
    """The source's regular ZYX chunk shape, declared or detected once (then cached)."""
    if src.regular is not None:
        return src.regular
    if "_regular" not in src.extra:
        found: tuple[int, int, int] | None = None
        o, e = src.origins, src.extents
        if len(o) > 64:  # a scan of a few pieces is cheaper than the check
            cand = tuple(int(v) for v in e[0])
            ro, re_ = regular_pieces(src.shape, cand)
            if ro.shape == o.shape and np.array_equal(ro, o) and np.array_equal(re_, e):
                found = cand  # type: ignore[assignment]
        src.extra["_regular"] = found
    return src.extra["_regular"]


def check_pieces(src: PixelSource) -> None:
    """Raise ``PixelPayloadError`` when a piece lies outside the image (checked once per source)."""
    o, e = src.origins, src.extents
    if not o.size or src.extra.get("_checked") or regular_grid(src) is not None:
        return
    st, sc, sz, sy, sx = src.shape
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
            f"{tuple(int(v) for v in e[i])} lies outside the image TCZYX={src.shape}"
        )
    src.extra["_checked"] = True


_FIRST = np.zeros(1, dtype=np.int64)
_FIRST.flags.writeable = False


def _positions(idx: np.ndarray) -> dict[int, np.ndarray]:
    """Output positions of each source index in an index selection."""
    if idx.size == 1:
        return {int(idx[0]): _FIRST}
    return {int(v): np.flatnonzero(idx == v) for v in np.unique(idx)}


def _uniq(a: np.ndarray) -> np.ndarray:
    """``np.unique`` without its cost for the common one-index selection."""
    return a if a.size == 1 else np.unique(a)


def _select_regular(src: PixelSource, sel: IndexSelection) -> np.ndarray:
    st, sc, sz, sy, sx = src.shape
    cz, cy, cx = regular_grid(src)  # type: ignore[misc]
    gz, gy, gx = -(-sz // cz), -(-sy // cy), -(-sx // cx)
    ys = range(sel.y[0] // cy, (sel.y[1] - 1) // cy + 1)
    xs = range(sel.x[0] // cx, (sel.x[1] - 1) // cx + 1)
    if sel.t.size == 1 and sel.c.size == 1 and sel.z.size == 1 and len(ys) * len(xs) <= 64:
        # one plane, a few chunks: plain ints (numpy calls cost more than this)
        base = ((int(sel.t[0]) * sc + int(sel.c[0])) * gz + int(sel.z[0]) // cz) * gy
        return np.array([(base + yi) * gx + xi for yi in ys for xi in xs], dtype=np.int64)
    t = _uniq(sel.t)
    c = _uniq(sel.c)
    z = _uniq(sel.z // cz)
    y = np.arange(ys.start, ys.stop)
    x = np.arange(xs.start, xs.stop)
    lin = (
        (((t[:, None, None, None, None] * sc + c[None, :, None, None, None]) * gz
          + z[None, None, :, None, None]) * gy + y[None, None, None, :, None]) * gx
        + x[None, None, None, None, :]
    )
    return lin.reshape(-1).astype(np.int64)


def select_pieces(src: PixelSource, sel: IndexSelection) -> np.ndarray:
    """Indices of the pieces that intersect ``sel`` (each once, in storage order)."""
    o, e = src.origins, src.extents
    if not o.size:
        return np.zeros(0, dtype=np.int64)
    if regular_grid(src) is not None:
        return _select_regular(src, sel)
    zs = np.sort(sel.z)
    z_hit = np.searchsorted(zs, o[:, 2], side="left") < np.searchsorted(zs, o[:, 2] + e[:, 0], side="left")
    y0, y1 = sel.y
    x0, x1 = sel.x
    mask = (
        np.isin(o[:, 0], sel.t)
        & np.isin(o[:, 1], sel.c)
        & z_hit
        & (o[:, 3] < y1)
        & (o[:, 3] + e[:, 1] > y0)
        & (o[:, 4] < x1)
        & (o[:, 4] + e[:, 2] > x0)
    )
    return np.flatnonzero(mask)


def _row_spans(src: PixelSource, sel: IndexSelection, pieces: np.ndarray) -> np.ndarray:
    """Per piece, the rows of its flattened Z*Y row space that ``sel`` needs.

    Returns an ``(n, 6)`` array of ``r0, r1, za, zb, ly0, ly1``: rows
    ``[r0, r1)``, the first and last needed local z and the local Y range.
    Pieces without a selected z (not produced by :func:`select_pieces`) get
    their whole depth.
    """
    if pieces.size <= 16 and sel.z.size == 1:
        # a plane of a few pieces (a typical region read): plain ints beat numpy here
        z = int(sel.z[0])
        out = []
        for (z0, yy), (dz, dy) in zip(src.origins[pieces][:, 2:4].tolist(), src.extents[pieces][:, :2].tolist()):
            za, zb = (z - z0, z - z0) if z0 <= z < z0 + dz else (0, dz - 1)
            ly0, ly1 = max(yy, sel.y[0]) - yy, min(yy + dy, sel.y[1]) - yy
            out.append((za * dy + ly0, zb * dy + ly1, za, zb, ly0, ly1))
        return np.array(out, dtype=np.int64).reshape(-1, 6)
    o, e = src.origins[pieces], src.extents[pieces]
    z0, dz, dy, yy = o[:, 2], e[:, 0], e[:, 1], o[:, 3]
    zs = np.unique(sel.z)
    ia = np.searchsorted(zs, z0, side="left")
    ib = np.searchsorted(zs, z0 + dz, side="left") - 1
    hit = ia <= ib
    za = np.where(hit, zs[np.minimum(ia, zs.size - 1)] - z0, 0)
    zb = np.where(hit, zs[np.maximum(ib, 0)] - z0, dz - 1)
    ly0 = np.maximum(yy, sel.y[0]) - yy
    ly1 = np.minimum(yy + dy, sel.y[1]) - yy
    return np.stack([za * dy + ly0, zb * dy + ly1, za, zb, ly0, ly1], axis=1)


def selected_nbytes(
    src: PixelSource, sel: IndexSelection, pieces: np.ndarray, spans: np.ndarray | None = None
) -> int:
    """Stored bytes a read of ``pieces`` for ``sel`` fetches (partial pieces count their frames)."""
    if src.span_nbytes is None:
        return int(src.stored_nbytes[pieces].sum())
    if spans is None:
        spans = _row_spans(src, sel, pieces)
    cost = src.span_nbytes
    return sum(cost(i, r0, r1) for i, (r0, r1) in zip(pieces.tolist(), spans[:, :2].tolist()))


def _estimated_nbytes(src: PixelSource, pieces: np.ndarray, spans: np.ndarray | None) -> float:
    """Stored bytes a read fetches, pro rata of the rows it needs (to decide on threads)."""
    stored = src.stored_nbytes[pieces]
    if spans is None:
        return float(stored.sum())
    e = src.extents[pieces]
    if pieces.size <= 16:
        return sum(
            n * (r1 - r0) / (dz * dy)
            for n, (r0, r1), (dz, dy) in zip(stored.tolist(), spans[:, :2].tolist(), e[:, :2].tolist())
        )
    return float((stored * (spans[:, 1] - spans[:, 0]) / (e[:, 0] * e[:, 1])).sum())


def clamp_cast(piece: np.ndarray, out_dtype: np.dtype[Any]) -> np.ndarray:
    """Saturating cast: values beyond ``out_dtype``'s range become its min/max.

    Integer bounds are compared exactly (no float round trip, which loses
    64-bit precision and rounds e.g. float32(2**31 - 1) up past int32's max);
    NaN becomes 0 for integer targets.
    """
    if piece.dtype == out_dtype or out_dtype.kind not in "iuf":
        return piece.astype(out_dtype, copy=False)
    if out_dtype.kind == "f":
        fi = np.finfo(out_dtype)
        return np.clip(piece, fi.min, fi.max).astype(out_dtype)
    info = np.iinfo(out_dtype)
    if piece.dtype.kind in "iu":
        si = np.iinfo(piece.dtype)
        lo, hi = max(info.min, si.min), min(info.max, si.max)
        return np.clip(piece, piece.dtype.type(lo), piece.dtype.type(hi)).astype(out_dtype)
    if piece.dtype.kind == "b":
        return piece.astype(out_dtype)
    with np.errstate(invalid="ignore"):
        res = np.where(np.isnan(piece), 0, np.clip(piece, info.min, info.max)).astype(out_dtype)
    res[piece >= info.max] = info.max
    res[piece <= info.min] = info.min
    return res


def assemble(
    src: PixelSource,
    sel: IndexSelection,
    *,
    dtype: Any = None,
    clamp: bool = False,
    strict: bool = True,
    fill_missing: bool = True,
    pieces: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode the pieces ``sel`` touches into one new ``out_shape`` array.

    Parameters
    ----------
    pieces
        Precomputed piece indices (e.g. after a statistics filter); pieces of
        the selection left out are not read and stay zero.
    fill_missing
        When false, raise if part of the selection is covered by no piece.
    out
        Optional preallocated, zeroed output of ``sel.out_shape``.
    """
    out_dtype = src.dtype if dtype is None else to_numpy_dtype(dtype)
    if out is None:
        out = np.zeros(sel.out_shape, dtype=out_dtype)
    elif out.shape != sel.out_shape:
        raise ValueError(f"out has shape {out.shape}, expected {sel.out_shape}")
    else:
        out_dtype = out.dtype
    check_pieces(src)
    all_hit = select_pieces(src, sel)
    picked = all_hit if pieces is None else pieces
    o, e = src.origins, src.extents
    ti, ci, zi = sel.t, sel.c, sel.z
    y0, y1 = sel.y
    x0, x1 = sel.x
    z_runs = zi.size == 1 or bool(np.all(np.diff(zi) == 1))
    zfirst, zlast = int(zi[0]), int(zi[-1])
    t_pos = _positions(ti)
    c_pos = _positions(ci)
    # Per piece, as Python ints: origin, extent and (partial decoders) the rows needed.
    o_l, e_l = o[picked].tolist(), e[picked].tolist()
    partial = src.decode_rows
    spans = _row_spans(src, sel, picked) if partial is not None else None
    span_l = spans.tolist() if spans is not None else None

    picked_l = picked.tolist()

    def place(k: int) -> None:
        i = picked_l[k]
        t0, c0, z0, yy, xx = o_l[k]
        dz, dy, dx = e_l[k]
        ot, oc = t_pos[t0], c_pos[c0]
        ly0, ly1 = max(yy, y0), min(yy + dy, y1)
        lx0, lx1 = max(xx, x0), min(xx + dx, x1)
        zoff = z0
        if partial is not None:
            r0, r1, za, zb, ya, yb = span_l[k]  # type: ignore[index]
            flat, ra = partial(i, r0, r1, strict)
            if ra == 0 and flat.size == dz * dy * dx:
                piece = flat.reshape(dz, dy, dx)[:, ya:yb, lx0 - xx : lx1 - xx]
            else:
                # Only rows ra.. were decoded: view them as (z, y, x) from the
                # first needed (z, y), without copying.
                rows = flat.reshape(-1, dx)
                if za == zb:
                    piece = rows[r0 - ra : r1 - ra, lx0 - xx : lx1 - xx][None]
                else:
                    rs = rows.strides[0]
                    piece = np.lib.stride_tricks.as_strided(
                        rows[r0 - ra :], shape=(zb - za + 1, yb - ya, dx),
                        strides=(dy * rs, rs, rows.strides[1]), writeable=False,
                    )[:, :, lx0 - xx : lx1 - xx]
                zoff = z0 + za
        else:
            block = src.decode(i, strict).reshape(dz, dy, dx)
            piece = block[:, ly0 - yy : ly1 - yy, lx0 - xx : lx1 - xx]
        if clamp and piece.dtype != out_dtype:
            piece = clamp_cast(piece, out_dtype)
        ys = slice(ly0 - y0, ly1 - y0)
        xs = slice(lx0 - x0, lx1 - x0)
        if ot.size == 1 and oc.size == 1 and z_runs:
            # zi is a run zfirst..zlast: output planes a..b hold this piece's z
            a, b = max(z0, zfirst) - zfirst, min(z0 + dz - 1, zlast) - zfirst + 1
            out[int(ot[0]), int(oc[0]), a:b, ys, xs] = piece[zfirst + a - zoff : zfirst + b - zoff]
        else:
            oz = np.flatnonzero((zi >= z0) & (zi < z0 + dz))
            sub = piece[zi[oz] - zoff]
            out[ot[:, None, None], oc[None, :, None], oz[None, None, :], ys, xs] = sub[None, None]

    work = list(range(picked.size))
    # Helpers are woken only now, right before this thread starts decoding:
    # a helper woken earlier takes the GIL back and forth with the planning
    # above, which on a VM costs more than it saves.
    if src.parallel and len(work) > 1 and _estimated_nbytes(src, picked, spans) >= _PARALLEL_MIN_BYTES:
        _threads.run_each(place, work)
    else:
        for k in work:
            place(k)
    if not fill_missing:
        covered = _covered(o[all_hit], e[all_hit], sel, t_pos, c_pos)
        if covered < out.size:
            raise SelectionError(
                f"the selection covers {out.size} pixels but the stored pieces hold only "
                f"{covered} of them; pass fill_missing=True to zero-fill missing planes/chunks"
            )
    return out


def _covered(
    o: np.ndarray, e: np.ndarray, sel: IndexSelection, t_pos: dict[int, np.ndarray], c_pos: dict[int, np.ndarray]
) -> int:
    """Output pixels the given pieces cover (pieces assumed not to overlap)."""
    if not o.size:
        return 0
    y0, y1 = sel.y
    x0, x1 = sel.x
    h = np.minimum(o[:, 3] + e[:, 1], y1) - np.maximum(o[:, 3], y0)
    w = np.minimum(o[:, 4] + e[:, 2], x1) - np.maximum(o[:, 4], x0)
    nt = np.array([t_pos[int(v)].size for v in o[:, 0]])
    nc = np.array([c_pos[int(v)].size for v in o[:, 1]])
    nz = np.array(
        [int(np.count_nonzero((sel.z >= a) & (sel.z < a + d))) for a, d in zip(o[:, 2], e[:, 0])]
    )
    return int((nt * nc * nz * h * w).sum())
