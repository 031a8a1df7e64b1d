"""PNG previews of images, records and lazy plans (a plan reads one plane only)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from omeframe.facade import OMEArrow
from omeframe.ops.thumbnail import composite_rgb, downsample_cyx

__all__ = ["thumbnail_png"]


def thumbnail_png(data: Any, size: int = 256, *, t: int = 0, z: int | None = None) -> bytes:
    """PNG bytes of a composite preview of one ``(t, z)`` plane of all channels.

    ``data`` is a record, an :class:`~omeframe.OMEArrow` (lazy plans read only
    that plane) or a TCZYX/CYX numpy array. ``z=None`` uses the middle plane.
    """
    from PIL import Image

    if size <= 0:
        raise ValueError(f"thumbnail size must be positive, got {size}")
    colors: list[int | None] | None = None
    if isinstance(data, np.ndarray):
        arr = data
        if arr.ndim == 5:
            zz = arr.shape[2] // 2 if z is None else z
            cyx = arr[t, :, zz]
        elif arr.ndim == 3:
            cyx = arr
        elif arr.ndim == 2:
            cyx = arr[None]
        else:
            raise ValueError(f"expected a 2-D, CYX or TCZYX array, got shape {arr.shape}")
    else:
        img = data if isinstance(data, OMEArrow) else OMEArrow(data)
        st, sc, sz, _, _ = img.shape
        zz = sz // 2 if z is None else z
        cyx = img.select(t=[t], z=[zz]).export("numpy")[0, :, 0]
        try:
            hdr = img._lazy().source.header()
            colors = [ch.get("color_rgba") for ch in hdr.channels] if len(hdr.channels) == sc else None
        except Exception:  # noqa: BLE001 - colours are cosmetic
            colors = None
    rgb = composite_rgb(downsample_cyx(cyx, size), colors)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", optimize=True)
    return buf.getvalue()
