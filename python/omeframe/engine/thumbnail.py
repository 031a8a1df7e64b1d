"""Bounded thumbnails of plans for notebook displays, and the numpy half of every preview.

A display thumbnail is read from the coarsest pyramid level that is still at
least :data:`THUMBNAIL_SIZE` pixels on its longer side (the full-resolution
image when there is no pyramid): one ``(t=0, middle z)`` plane of the first
few channels. Before reading, the plan's own accounting (``explain()``'s
numbers) is checked against :data:`THUMBNAIL_READ_BUDGET` stored bytes and
:data:`THUMBNAIL_DECODE_BUDGET` decoded bytes; a display whose thumbnail would
cost more shows a note instead, so rendering an image is cheap whatever its
size. The picture is embedded as a PNG (JPEG when the PNG would be larger than
:data:`THUMBNAIL_MAX_BYTES`). :func:`composite_rgb` and :func:`downsample_cyx`
turn a ``(C, Y, X)`` plane into RGB (also used by
:func:`omeframe.ops.thumbnail.thumbnail_png` and the SQL thumbnail kernel).

This module sits in the engine so that a plan (:class:`~omeframe.engine.lazy.LazyImage`)
renders its own thumbnail; :mod:`omeframe.ops.display` re-exports it.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np

from omeframe.engine.display import card, esc, fmt_bytes, plan_facts

if TYPE_CHECKING:
    from omeframe.engine.lazy import LazyImage

__all__ = [
    "composite_rgb",
    "downsample_cyx",
    "thumbnail_of",
    "image_html",
    "THUMBNAIL_SIZE",
    "THUMBNAIL_READ_BUDGET",
    "THUMBNAIL_DECODE_BUDGET",
    "THUMBNAIL_MAX_BYTES",
    "THUMBNAIL_CHANNELS",
]

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


#: Longer side of a display thumbnail, in pixels.
THUMBNAIL_SIZE = 128
#: Most stored bytes a display reads for its thumbnail.
THUMBNAIL_READ_BUDGET = 4 << 20
#: Most decoded bytes a display's thumbnail plane may hold.
THUMBNAIL_DECODE_BUDGET = 16 << 20
#: Largest embedded picture (bytes before base64).
THUMBNAIL_MAX_BYTES = 12 << 10
#: Channels composited into a thumbnail.
THUMBNAIL_CHANNELS = 4


def _thumbnail_level(plan: LazyImage, size: int) -> tuple[int, LazyImage]:
    """The coarsest level of ``plan`` at least ``size`` pixels on its longer side (else level 0)."""
    levels = plan.levels
    for k in range(len(levels) - 1, -1, -1):
        if max(levels[k].shape[3], levels[k].shape[4]) >= size:
            return k, levels[k]
    return 0, levels[0]


def _encode(rgb: np.ndarray) -> tuple[str, bytes]:
    """``(mime type, bytes)`` of ``rgb``: PNG, or JPEG (smaller each round) over the size cap."""
    from PIL import Image  # lazy: Pillow

    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", optimize=True)
    if buf.tell() <= THUMBNAIL_MAX_BYTES:
        return "image/png", buf.getvalue()
    img = Image.fromarray(rgb, mode="RGB")
    while True:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=70)
        if buf.tell() <= THUMBNAIL_MAX_BYTES or max(img.size) <= 16:
            return "image/jpeg", buf.getvalue()
        img = img.resize((max(1, img.size[0] // 2), max(1, img.size[1] // 2)))


def thumbnail_of(plan: LazyImage, size: int = THUMBNAIL_SIZE) -> tuple[str | None, str]:
    """A bounded thumbnail of ``plan``: ``(data URI or None, note)``.

    Reads one plane (``t=0``, middle ``z``, the first :data:`THUMBNAIL_CHANNELS`
    channels) of the coarsest level that is at least ``size`` pixels wide,
    and only when that read fits :data:`THUMBNAIL_READ_BUDGET` (stored) and
    :data:`THUMBNAIL_DECODE_BUDGET` (decoded) bytes; otherwise returns
    ``None`` and a note saying why. Never raises for a failing source.

    Example
    -------
    >>> uri, note = thumbnail_of(omeframe.scan("slides/", image_id="s1")._lazy())   # doctest: +SKIP
    >>> note                                                                         # doctest: +SKIP
    'level 6 (256×256), plane t=0 z=0, read 128.0 KiB'
    """
    try:
        idx, lv = _thumbnail_level(plan, size)
        _, sc, sz, ly, lx = lv.shape
        k = min(sc, THUMBNAIL_CHANNELS)
        one = lv.select(t=[0], c=list(range(k)), z=[sz // 2])
        decoded = one.nbytes
        if decoded > THUMBNAIL_DECODE_BUDGET:
            return None, (
                f"no thumbnail: the smallest level's plane is {ly}×{lx} ({fmt_bytes(decoded)} decoded, more "
                f"than {fmt_bytes(THUMBNAIL_DECODE_BUDGET)}); write a pyramid or call omeframe.thumbnail_png(img)"
            )
        info = one.info()
        if info.bytes_read > THUMBNAIL_READ_BUDGET:
            return None, (
                f"no thumbnail: its plane would read {fmt_bytes(info.bytes_read)} (more than "
                f"{fmt_bytes(THUMBNAIL_READ_BUDGET)}); write a pyramid or call omeframe.thumbnail_png(img)"
            )
        cyx = one.execute(clamp=True)[0, :, 0]
        colors = [ch.color_rgba for ch in one.header.channels]
        rgb = composite_rgb(downsample_cyx(cyx, size), colors if len(colors) == k else None)
        mime, data = _encode(rgb)
    except Exception as exc:  # noqa: BLE001 - a display must render whatever the source does
        return None, f"no thumbnail ({type(exc).__name__}: {str(exc)[:120]})"
    note = (
        f"level {idx} ({ly}×{lx}), plane t=0 z={sz // 2}"
        + (f", channels 0-{k - 1}" if sc > k else "")
        + f", read {fmt_bytes(info.bytes_read)}"
    )
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", note


def image_html(plan: LazyImage, title: str, *, lazy: bool = True, thumbnail: bool = True) -> str:
    """The display of one image or plan: thumbnail, shape, dtype, channels, sizes, levels, read cost."""
    rows = plan_facts(plan, read_facts=lazy)
    side = ""
    if thumbnail:
        uri, note = thumbnail_of(plan)
        if uri is not None:
            style = "image-rendering:pixelated;max-width:160px"
            side = f'<img src="{uri}" alt="thumbnail" title="{esc(note)}" style="{style}"/>'
        rows.append(("thumbnail", esc(note)))
    return card(title, rows, side=side)


