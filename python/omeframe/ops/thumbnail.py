"""Channel composites of (C, Y, X) arrays: the numpy half of thumbnails."""

from __future__ import annotations

import numpy as np

__all__ = ["composite_rgb", "downsample_cyx"]

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
