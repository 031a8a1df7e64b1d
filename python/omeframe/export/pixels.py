"""Decode OME-Arrow records into numpy arrays.

A record's chunks (or planes) become a :class:`~omeframe.chunks.assemble.PixelSource`;
every read goes through :func:`~omeframe.chunks.assemble.assemble`, which
decodes only the pieces a selection touches and copies each straight into one
preallocated output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..chunks.assemble import PixelSource, assemble, index_selection
from ..chunks.codec import decode_payload, fit_length
from ..errors import PixelPayloadError, SchemaError
from ..schema.dtypes import to_numpy_dtype
from ..schema.record import RecordView

__all__ = ["to_numpy", "plane_from_chunks", "to_dict", "read_region", "record_source"]


def record_source(view: RecordView) -> PixelSource:
    """Return the chunk (or plane) pieces of a record as a :class:`PixelSource`."""
    shape = view.shape
    native = view.dtype
    ct = view.chunks
    name = f"record {view.header('id')!r}"
    if ct is not None:
        ext = ct.extents
        sizes = np.diff(ct.offsets) * (1 if ct.kind == "bytes" else ct.values.dtype.itemsize)  # type: ignore[union-attr, arg-type]
        if ct.kind == "bytes":
            dts = [to_numpy_dtype(d) if d else native for d in ct.dtypes or []]
            comps = ct.compressions or []

            def decode_bytes(i: int, strict: bool) -> np.ndarray:
                count = int(ext[i, 0] * ext[i, 1] * ext[i, 2])
                return decode_payload(
                    ct.payload(i), comps[i], dts[i], count, label=f"chunks[{i}]", strict=strict
                )

            compressed = any(c not in (None, "", "none") for c in comps)
            return PixelSource(
                shape, native, ct.origins, ext, decode_bytes, sizes, compressed, name + " (byte chunks)"
            )

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

        return PixelSource(shape, native, ct.origins, ext, decode_list, sizes, False, name + " (list chunks)")

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

    sizes = np.diff(pt.offsets) * pt.values.dtype.itemsize
    return PixelSource(shape, native, origins, extents, decode_plane, sizes, False, name + " (planes)")


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
    src = record_source(view)
    sel = index_selection(view.shape, t=t, c=c, z=z, y=y, x=x)
    return assemble(src, sel, dtype=dtype, clamp=clamp, strict=strict, fill_missing=fill_missing)


def to_numpy(data: Any, dtype: Any = None, strict: bool = True, clamp: bool = False) -> np.ndarray:
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
