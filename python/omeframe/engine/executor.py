"""Assemble a TCZYX selection from decoded pieces (chunks, planes or tiles).

The executor reads a :class:`~omeframe.engine.pieces.Pieces` value (where each
piece sits, how to decode it, what it costs) for a
:class:`~omeframe.model.selection.Selection` resolved against the image
(:meth:`Selection.resolve <omeframe.model.selection.Selection.resolve>`).
:func:`select_pieces` picks the pieces a selection touches (index arithmetic on
:class:`~omeframe.engine.pieces.RegularPieces`, vectorised numpy tests on
explicit ones); :func:`assemble` decodes them (in the shared thread pool when
worthwhile; only the needed bands of rows of pieces that declare
:attr:`~omeframe.engine.pieces.Pieces.partial_decode`) and copies each one
straight into a single preallocated output. Nothing loops over pixels or planes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from omeframe.engine import threads as _threads
from omeframe.engine.limits import check_alloc
from omeframe.engine.pieces import Pieces, RegularPieces
from omeframe.model.dtypes import to_numpy_dtype
from omeframe.model.errors import SelectionError
from omeframe.model.selection import ResolvedSelection

__all__ = ["select_pieces", "assemble", "selected_nbytes", "clamp_cast"]

# Stored bytes a read must fetch before its pieces are decoded in the thread
# pool: below this, handing work to threads costs more than it saves.
_PARALLEL_MIN_BYTES = 192 << 10


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


def _select_regular(src: RegularPieces, sel: ResolvedSelection) -> np.ndarray:
    """Touched chunks of a regular grid by index arithmetic (storage order, each once)."""
    st, sc, sz, sy, sx = src.shape
    cz, cy, cx = src.chunk
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


def select_pieces(src: Pieces, sel: ResolvedSelection) -> np.ndarray:
    """Indices of the pieces that intersect ``sel`` (each once, in storage order)."""
    if isinstance(src, RegularPieces):
        return _select_regular(src, sel)
    o, e = src.origins, src.extents
    if not o.size:
        return np.zeros(0, dtype=np.int64)
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


def _row_spans(src: Pieces, sel: ResolvedSelection, pieces: np.ndarray) -> np.ndarray:
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
        origins = src.origins[pieces][:, 2:4].tolist()
        for (z0, yy), (dz, dy) in zip(origins, src.extents[pieces][:, :2].tolist(), strict=True):
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
    src: Pieces, sel: ResolvedSelection, pieces: np.ndarray, spans: np.ndarray | None = None
) -> int:
    """Stored bytes a read of ``pieces`` for ``sel`` fetches (partial pieces count their frames)."""
    bands = src.bands
    if bands is None:
        return int(src.stored_nbytes[pieces].sum())
    if spans is None:
        spans = _row_spans(src, sel, pieces)
    cost = bands.span_nbytes
    return sum(cost(i, r0, r1) for i, (r0, r1) in zip(pieces.tolist(), spans[:, :2].tolist(), strict=True))


def _estimated_nbytes(src: Pieces, pieces: np.ndarray, spans: np.ndarray | None) -> float:
    """Stored bytes a read fetches, pro rata of the rows it needs (to decide on threads)."""
    stored = src.stored_nbytes[pieces]
    if spans is None:
        return float(stored.sum())
    e = src.extents[pieces]
    if pieces.size <= 16:
        return sum(
            n * (r1 - r0) / (dz * dy)
            for n, (r0, r1), (dz, dy) in zip(stored.tolist(), spans[:, :2].tolist(), e[:, :2].tolist(), strict=True)
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
    src: Pieces,
    sel: ResolvedSelection,
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
        need = int(np.prod(sel.out_shape, dtype=object)) * out_dtype.itemsize
        check_alloc(need, f"a read of {src.describe} {sel.out_shape}")
        out = np.zeros(sel.out_shape, dtype=out_dtype)
    elif out.shape != sel.out_shape:
        raise ValueError(f"out has shape {out.shape}, expected {sel.out_shape}")
    else:
        out_dtype = out.dtype
    src.check_bounds()
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
    bands = src.bands
    partial = None if bands is None else bands.decode_rows
    spans = _row_spans(src, sel, picked) if partial is not None else None
    span_l = spans.tolist() if spans is not None else None

    picked_l = picked.tolist()
    prefetch = src.extra.get("prefetch")  # remote sources fetch all touched chunks in one round trip
    if prefetch is not None and picked.size:
        prefetch(picked, spans)

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
    o: np.ndarray, e: np.ndarray, sel: ResolvedSelection, t_pos: dict[int, np.ndarray], c_pos: dict[int, np.ndarray]
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
        [int(np.count_nonzero((sel.z >= a) & (sel.z < a + d))) for a, d in zip(o[:, 2], e[:, 0], strict=True)]
    )
    return int((nt * nc * nz * h * w).sum())
