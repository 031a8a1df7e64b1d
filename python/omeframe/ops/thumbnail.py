"""PNG previews of images, records and lazy plans (a plan reads one plane only).

:func:`thumbnail_png` renders one ``(t, z)`` plane of all channels;
:func:`composite_rgb` and :func:`downsample_cyx` are its numpy half, also
used by the SQL thumbnail kernel.
"""

from __future__ import annotations

import io

import numpy as np

from omeframe.engine.derived import as_source
from omeframe.engine.lazy import LazyImage
from omeframe.engine.thumbnail import composite_rgb, downsample_cyx
from omeframe.model.checks import is_integer

__all__ = ["thumbnail_png", "composite_rgb", "downsample_cyx"]

def thumbnail_png(data: object, size: int = 256, *, t: int = 0, z: int | None = None) -> bytes:
    """PNG bytes of a composite preview of one ``(t, z)`` plane of all channels.

    ``data`` is a record, an :class:`~omeframe.OMEArrow` (lazy plans read only
    that plane), a source, a path, or a TCZYX/CYX/YX numpy array.
    ``z=None`` uses the middle plane.

    Example
    -------
    >>> png = thumbnail_png(omeframe.scan("slides/", image_id="s1"), size=128)   # doctest: +SKIP
    """
    from PIL import Image  # Pillow: imported only when a thumbnail is drawn

    if not is_integer(size) or size <= 0:
        raise ValueError(f"thumbnail size must be a positive integer (pixels), got {size!r}")
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
        src = as_source(data)
        _, sc, sz, _, _ = src.shape
        zz = sz // 2 if z is None else z
        cyx = LazyImage(src).select(t=[t], z=[zz]).execute()[0, :, 0]
        try:
            chans = src.header().channels
            colors = [ch.color_rgba for ch in chans] if len(chans) == sc else None
        except Exception:  # noqa: BLE001 - colours are cosmetic
            colors = None
    rgb = composite_rgb(downsample_cyx(cyx, size), colors)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", optimize=True)
    return buf.getvalue()
