"""Describe and verify OME-Arrow records."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from omeframe.model.record import RecordView

__all__ = ["describe_ome_arrow", "verify_ome_arrow"]


def describe_ome_arrow(data: Any) -> dict[str, Any]:
    """Describe a record: TCZYX shape, kind of image, channels, dtype.

    Returns
    -------
    dict
        ``shape`` (T, C, Z, Y, X), ``type`` ("2D image", "3D image (z-stack)",
        "movie / timelapse", "4D timelapse-volume"), ``channels``,
        ``is_multichannel``, ``dtype``, ``encoding`` ("bytes", "list" or
        "planes"), ``stored_bytes`` (pixel payload as stored) and ``summary``.
    """
    view = RecordView(data)
    t, c, z, y, x = view.shape
    if t == 1 and z == 1:
        kind = "2D image"
    elif t == 1:
        kind = "3D image (z-stack)"
    elif z == 1:
        kind = "movie / timelapse"
    else:
        kind = "4D timelapse-volume"
    channel_info = f"multi-channel ({c} channels)" if c > 1 else "single-channel"
    ct = view.chunks
    stored = ct.stored_nbytes() if ct is not None else (view.planes.values.nbytes if view.planes else 0)
    return {
        "shape": (t, c, z, y, x),
        "type": kind,
        "channels": c,
        "is_multichannel": c > 1,
        "dtype": view.dtype.name,
        "encoding": view.variant,
        "stored_bytes": int(stored),
        "summary": f"{kind}, {channel_info} - shape (T={t}, C={c}, Z={z}, Y={y}, X={x}), "
        f"{view.dtype.name}",
    }


def verify_ome_arrow(data: Any, struct: pa.StructType) -> bool:
    """Return True when ``data`` converts to (or already has) the Arrow type ``struct``.

    ``None`` is no record (a null would convert to any struct type): False.
    """
    if data is None:
        return False
    if isinstance(data, (pa.StructScalar, pa.Array, pa.ChunkedArray)):
        return data.type == struct
    try:
        pa.scalar(data, type=struct)
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True
