"""Decode OME-Arrow records into numpy arrays.

Every read goes through :func:`read_region`: it picks the chunks (or planes) a
selection touches with vectorised numpy tests, decodes them (in the shared
thread pool when they are compressed and large) and copies each one straight
into a single preallocated output. Nothing loops over pixels or planes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _threads
from ..chunks.codec import decode_payload, fit_length
from ..errors import PixelPayloadError, SchemaError, SelectionError
from ..schema.dtypes import to_numpy_dtype
from ..schema.record import RecordView

__all__ = ["to_numpy", "plane_from_chunks", "to_dict", "read_region", "PixelSource", "pixel_source"]

_PARALLEL_MIN_BYTES = 2 << 20


@dataclass(frozen=True)
class PixelSource:
    """Uniform access to a record's pixel pieces: chunks, or planes as 1-deep chunks."""

    origins: np.ndarray  # (n, 5) TCZYX
    extents: np.ndarray  # (n, 3) ZYX
    decode: Callable[[int, bool], np.ndarray]  # (i, strict) -> flat array
    compressed_nbytes: int
    compressed: bool


def pixel_source(view: RecordView) -> PixelSource:
    """Return the chunk (or plane) pieces of ``view`` with a decoder."""
    shape = view.shape
    native = view.dtype
    ct = view.chunks
    if ct is not None:
        if ct.kind == "bytes":
            dts = [to_numpy_dtype(d) if d else native for d in ct.dtypes or []]
            comps = ct.compressions or []
            ext = ct.extents

            def decode_bytes(i: int, strict: bool) -> np.ndarray:
                count = int(ext[i, 0] * ext[i, 1] * ext[i, 2])
                return decode_payload(
                    ct.payload(i), comps[i], dts[i], count, label=f"chunks[{i}]", strict=strict
                )

            compressed = any(c not in (None, "", "none") for c in comps)
            return PixelSource(ct.origins, ct.extents, decode_bytes, ct.stored_nbytes(), compressed)

        ext = ct.extents

        def decode_list(i: int, strict: bool) -> np.ndarray:
            count = int(ext[i, 0] * ext[i, 1] * ext[i, 2])
            flat = ct.payload(i)
            if flat.size != count:
                if strict:
                    raise PixelPayloadError(
                        f"chunks[{i}].pixels has {flat.size} values, expected {count}; "
                        "pass strict=False to pad/truncate"
                    )
                flat = fit_length(flat, count)
            return flat

        return PixelSource(ct.origins, ct.extents, decode_list, ct.stored_nbytes(), False)

    pt = view.planes
    if pt is None:
        raise SchemaError("record has neither chunks nor planes: no pixels to read")
    n = len(pt)
    origins = np.zeros((n, 5), dtype=np.int64)
    origins[:, :3] = pt.tcz
    extents = np.empty((n, 3), dtype=np.int64)
    extents[:] = (1, shape[3], shape[4])
    count = shape[3] * shape[4]

    def decode_plane(i: int, strict: bool) -> np.ndarray:
        flat = pt.payload(i)
        if flat.size != count:
            if strict:
                raise PixelPayloadError(
                    f"planes[{i}].pixels has {flat.size} values, expected size_y*size_x "
                    f"= {count}; pass strict=False to pad/truncate"
                )
            flat = fit_length(flat, count)
        return flat

    return PixelSource(origins, extents, decode_plane, int(pt.values.nbytes), False)


def _index_array(sel: Sequence[int] | None, size: int, axis: str) -> np.ndarray:
    if sel is None:
        return np.arange(size, dtype=np.int64)
    idx = np.asarray(list(sel) if not isinstance(sel, np.ndarray) else sel, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise SelectionError(f"empty {axis} selection: select at least one index in [0, {size})")
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.size:
        raise SelectionError(
            f"{axis} index {int(bad[0])} is out of range: the image has {axis}={size} "
            f"(valid 0..{size - 1})"
        )
    return idx


def _cast_limits(dtype: np.dtype[Any]) -> tuple[float, float] | None:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype.kind == "b":
        return 0.0, 1.0
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return float(info.min), float(info.max)
    return None


def read_region(
    data: Any,
    *,
    t: Sequence[int] | None = None,
    c: Sequence[int] | None = None,
    z: Sequence[int] | None = None,
    y: tuple[int, int] | None = None,
    x: tuple[int, int] | None = None,
    dtype: Any = None,
    clamp: bool = False,
    strict: bool = True,
    fill_missing: bool = True,
) -> np.ndarray:
    """Read a TCZYX region of a record into a new array.

    ``t``/``c``/``z`` are index lists (``None`` = all; order and repeats are
    kept, like numpy fancy indexing); ``y``/``x`` are half-open ranges.
    Regions that no chunk covers are zero when ``fill_missing`` is true and an
    error otherwise.
    """
    view = data if isinstance(data, RecordView) else RecordView(data)
    st, sc, sz, sy, sx = view.shape
    ti = _index_array(t, st, "T")
    ci = _index_array(c, sc, "C")
    zi = _index_array(z, sz, "Z")
    y0, y1 = _range(y, sy, "Y")
    x0, x1 = _range(x, sx, "X")
    out_dtype = view.dtype if dtype is None else to_numpy_dtype(dtype)
    out = np.zeros((ti.size, ci.size, zi.size, y1 - y0, x1 - x0), dtype=out_dtype)
    src = pixel_source(view)
    o, e = src.origins, src.extents
    if o.size:
        _check_bounds(o, e, view.shape)
    # Vectorised choice of the pieces the selection touches.
    zs = np.sort(zi)
    z_first = np.searchsorted(zs, o[:, 2], side="left")
    z_hit = z_first < np.searchsorted(zs, o[:, 2] + e[:, 0], side="left")
    mask = (
        np.isin(o[:, 0], ti)
        & np.isin(o[:, 1], ci)
        & z_hit
        & (o[:, 3] < y1)
        & (o[:, 3] + e[:, 1] > y0)
        & (o[:, 4] < x1)
        & (o[:, 4] + e[:, 2] > x0)
    )
    picked = np.flatnonzero(mask)
    limits = _cast_limits(out_dtype) if clamp else None
    contiguous_z = zi.size == 1 or bool(np.all(np.diff(zi) == 1))

    def place(i: int) -> int:
        t0, c0, z0, yy, xx = (int(v) for v in o[i])
        dz, dy, dx = (int(v) for v in e[i])
        block = src.decode(i, strict).reshape(dz, dy, dx)
        ot = np.flatnonzero(ti == t0)
        oc = np.flatnonzero(ci == c0)
        oz = np.flatnonzero((zi >= z0) & (zi < z0 + dz))
        ly0, ly1 = max(yy, y0), min(yy + dy, y1)
        lx0, lx1 = max(xx, x0), min(xx + dx, x1)
        piece = block[:, ly0 - yy : ly1 - yy, lx0 - xx : lx1 - xx]
        if limits is not None and piece.dtype != out_dtype:
            piece = np.clip(piece, limits[0], limits[1])
        ys = slice(ly0 - y0, ly1 - y0)
        xs = slice(lx0 - x0, lx1 - x0)
        if ot.size == 1 and oc.size == 1 and contiguous_z:
            zs_out = slice(int(oz[0]), int(oz[-1]) + 1)
            src_z = slice(int(zi[oz[0]]) - z0, int(zi[oz[-1]]) - z0 + 1)
            out[int(ot[0]), int(oc[0]), zs_out, ys, xs] = piece[src_z]
        else:
            sub = piece[zi[oz] - z0]
            out[ot[:, None, None], oc[None, :, None], oz[None, None, :], ys, xs] = sub[None, None]
        return ot.size * oc.size * oz.size * (ly1 - ly0) * (lx1 - lx0)

    if (
        src.compressed
        and picked.size > 1
        and src.compressed_nbytes >= _PARALLEL_MIN_BYTES
        and _threads.num_threads() > 1
    ):
        covered = sum(_threads.pool().map(place, picked.tolist()))
    else:
        covered = sum(place(i) for i in picked.tolist())
    if not fill_missing and covered < out.size:
        raise SelectionError(
            f"the selection covers {out.size} pixels but the record stores only {covered} "
            "of them; pass fill_missing=True to zero-fill the missing planes/chunks"
        )
    return out


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


def _check_bounds(o: np.ndarray, e: np.ndarray, shape: tuple[int, ...]) -> None:
    st, sc, sz, sy, sx = shape
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
            f"{tuple(int(v) for v in e[i])} lies outside the image TCZYX={shape}"
        )


def to_numpy(
    data: Any, dtype: Any = None, strict: bool = True, clamp: bool = False
) -> np.ndarray:
    """Decode a record into a dense ``(T, C, Z, Y, X)`` array.

    Parameters
    ----------
    data
        Record as ``pa.StructScalar``, one-row ``StructArray`` or dict.
    dtype
        Output dtype; ``None`` (default) keeps the native dtype of the record.
    strict
        Raise when a chunk or plane holds the wrong number of pixels; when
        false, such payloads are truncated or zero-padded.
    clamp
        Clip values into the range of ``dtype`` before casting.
    """
    return read_region(data, dtype=dtype, strict=strict, clamp=clamp)


def plane_from_chunks(
    data: Any,
    *,
    t: int,
    c: int,
    z: int,
    dtype: Any = None,
    strict: bool = True,
    clamp: bool = False,
) -> np.ndarray:
    """Decode the single ``(t, c, z)`` plane as a ``(Y, X)`` array.

    Only the chunks that hold the plane are decoded.
    """
    return read_region(data, t=[t], c=[c], z=[z], dtype=dtype, strict=strict, clamp=clamp)[0, 0, 0]


def to_dict(data: Any) -> dict[str, Any]:
    """Return the record as plain Python objects (pixel payloads as bytes/lists)."""
    return RecordView(data).scalar.as_py()
