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

__all__ = ["thumbnail_png", "composite_rgb", "downsample_cyx"]

# Display colours for channels without one (or with the neutral white default).
_PALETTE = [(0, 255, 0), (255, 0, 255), (0, 255, 255), (255, 0, 0), (0, 0, 255), (255, 255, 0)]


def _rgba_to_rgb(value: int | None, i: int, n: int) -> tuple[int, int, int]:
    if n == 1:
        return (255, 255, 255)
    if value is None or value in (0xFFFFFFFF, 0xFFFFFF00):
        return _PALETTE[i % len(_PALETTE)]
    return ((value >> 24) & 0xFF, (value >> 16) & 0xFF, (value >> 8) & 0xFF)


def composite_rgb(
    cyx: np.ndarray,
    colors: list[int | None] | None = None,
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Blend a ``(C, Y, X)`` array into an 8-bit RGB image.

    Each channel is scaled between its ``percentiles`` and tinted with its
    ``color_rgba`` (packed 0xRRGGBBAA; a palette when unset); a single channel
    renders in grey.
    """
    if cyx.ndim != 3:
        raise ValueError(f"expected a (C, Y, X) array, got shape {cyx.shape}")
    n = cyx.shape[0]
    rgb = np.zeros(cyx.shape[1:] + (3,), dtype=np.float32)
    for i in range(n):
        ch = cyx[i].astype(np.float32, copy=False)
        lo, hi = np.percentile(ch, percentiles) if ch.size else (0.0, 1.0)
        scaled = np.clip((ch - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
        color = np.asarray(_rgba_to_rgb(None if not colors else colors[i], i, n), dtype=np.float32) / 255.0
        rgb += scaled[..., None] * color
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def downsample_cyx(cyx: np.ndarray, size: int) -> np.ndarray:
    """Box-average ``(C, Y, X)`` so the longer side is at most ``size``."""
    _, h, w = cyx.shape
    f = max(1, int(np.ceil(max(h, w) / size)))
    if f == 1:
        return cyx
    hh, ww = (h // f) * f, (w // f) * f
    if hh == 0 or ww == 0:
        return cyx[:, ::f, ::f]
    trimmed = cyx[:, :hh, :ww].astype(np.float32, copy=False)
    return trimmed.reshape(cyx.shape[0], hh // f, f, ww // f, f).mean(axis=(2, 4))


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
