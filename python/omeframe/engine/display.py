"""Small, bounded HTML for notebook displays (``_repr_html_``), without pixels.

Every display omeframe renders is a *card*: a title, a two-column table of
facts and optional extra HTML (a thumbnail, an image list). The helpers here
escape every value and cut long lists, so a display stays a few kilobytes
whatever the object holds. Images and plans add a thumbnail in
:mod:`omeframe.ops.display`; everything here reads metadata only.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omeframe.engine.lazy import LazyImage
    from omeframe.model.header import Channel

__all__ = ["card", "esc", "fmt_bytes", "shorten", "channel_html", "plan_facts", "rgba_hex", "MAX_LIST"]

#: Longest list (channels, images, levels) a display spells out before "... (+n)".
MAX_LIST = 8
#: Longest text value a display shows before cutting it.
MAX_TEXT = 160

_STYLE = (
    "<style>.omeframe-card{font-family:var(--jp-ui-font-family,sans-serif);font-size:12px;"
    "display:flex;gap:12px;align-items:flex-start}.omeframe-card table{border-collapse:collapse}"
    ".omeframe-card th{text-align:left;padding:1px 8px 1px 0;color:#666;font-weight:normal;"
    "vertical-align:top}.omeframe-card td{padding:1px 0;text-align:left}.omeframe-sw{display:inline-block;"
    "width:9px;height:9px;margin:0 3px 0 6px;border:1px solid #999}</style>"
)


def esc(value: object, limit: int = MAX_TEXT) -> str:
    """``value`` as escaped HTML text, cut to ``limit`` characters."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return html.escape(text)


def fmt_bytes(n: float) -> str:
    """``n`` bytes in B, KiB, MiB, GiB or TiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def rgba_hex(value: int | None) -> str | None:
    """``0xRRGGBBAA`` as ``"#rrggbb"`` (``None`` when unset)."""
    if value is None:
        return None
    return f"#{(int(value) >> 8) & 0xFFFFFF:06x}"


def shorten(items: Sequence[str], limit: int = MAX_LIST) -> list[str]:
    """The first ``limit`` items, plus ``"... (+n)"`` when there are more."""
    out = list(items[:limit])
    if len(items) > limit:
        out.append(f"... (+{len(items) - limit})")
    return out


def channel_html(channels: Sequence[Channel]) -> str:
    """Channel names with colour swatches (at most :data:`MAX_LIST`)."""
    parts = []
    for i, ch in enumerate(channels[:MAX_LIST]):
        color = rgba_hex(ch.color_rgba)
        sw = f'<span class="omeframe-sw" style="background:{color}"></span>' if color else ""
        wl = f" ({ch.emission_um:g} µm em.)" if ch.emission_um else ""
        parts.append(f"{sw}{esc(ch.name or f'C{i}', 40)}{esc(wl, 30)}")
    if len(channels) > MAX_LIST:
        parts.append(f" ... (+{len(channels) - MAX_LIST})")
    return "".join(parts) if parts else "-"


def card(title: str, rows: Iterable[tuple[str, str]], extra: str = "", side: str = "") -> str:
    """A display: ``title``, a table of ``(label, html)`` rows, then ``extra``; ``side`` to the left.

    Values are HTML already (escape text with :func:`esc`).
    """
    body = "".join(f"<tr><th>{esc(k, 40)}</th><td>{v}</td></tr>" for k, v in rows)
    left = f"<div>{side}</div>" if side else ""
    return (
        f'{_STYLE}<div class="omeframe-card">{left}<div><b>{esc(title)}</b>'
        f"<table>{body}</table>{extra}</div></div>"
    )


def plan_facts(plan: LazyImage, *, read_facts: bool = True) -> list[tuple[str, str]]:
    """Rows describing ``plan``: shape, dtype, channels, pixel sizes, levels and, with
    ``read_facts``, the chunks and bytes its read touches (as ``explain()`` counts them).

    Only metadata is read (the read facts build the piece index, never decode).
    """
    shape = plan.shape
    rows = [
        ("shape", esc(" ".join(f"{a}={n}" for a, n in zip("TCZYX", shape, strict=True)))),
        ("dtype", f"{esc(plan.out_dtype.name)} ({fmt_bytes(plan.nbytes)} in memory)"),
    ]
    h = plan.header
    rows.append(("channels", channel_html(h.channels)))
    sizes = []
    for axis, (value, unit) in plan.physical_sizes.items():
        if value is not None:
            sizes.append(f"{axis} {value:g} {unit or '(no unit)'}")
    rows.append(("pixel size", esc(", ".join(sizes) or "unknown")))
    if h.image_type:
        rows.append(("image type", esc(h.image_type)))
    levels = plan.source.levels()
    if len(levels) > 1:
        shapes = [f"{lv.shape[3]}×{lv.shape[4]}" for lv in levels]
        rows.append(("levels", esc(", ".join(shorten(shapes)))))
    rows.append(("source", esc(plan.source.describe)))
    if read_facts:
        try:
            info = plan.info()
        except Exception as exc:  # noqa: BLE001 - a display must render whatever the source does
            rows.append(("read", esc(f"unknown ({type(exc).__name__}: {exc})")))
        else:
            rows.append((
                "read",
                esc(
                    f"{info.chunks_touched} of {info.chunks_total} chunks, {fmt_bytes(info.bytes_read)}"
                    + (f" (+{fmt_bytes(info.metadata_bytes)} metadata)" if info.metadata_bytes else "")
                    + (f"; filter {info.predicate} skips {info.chunks_skipped}" if info.predicate else "")
                ),
            ))
    return rows
