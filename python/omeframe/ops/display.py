"""Notebook displays of images, plans, datasets and tensor views, with bounded thumbnails.

A thumbnail is read from the coarsest pyramid level that is still at least
:data:`THUMBNAIL_SIZE` pixels on its longer side (the full-resolution image
when there is no pyramid): one ``(t=0, middle z)`` plane of the first few
channels. Before reading, the plan's own accounting (``explain()``'s numbers)
is checked against :data:`THUMBNAIL_READ_BUDGET` stored bytes and
:data:`THUMBNAIL_DECODE_BUDGET` decoded bytes; a display whose thumbnail would
cost more shows a note instead, so rendering an image is cheap whatever its
size. The picture is embedded as a PNG (JPEG when the PNG would be larger than
:data:`THUMBNAIL_MAX_BYTES`), so a display stays a few kilobytes.

:func:`display` wraps anything image-like (records included: a record is a
``pyarrow.StructScalar``, whose own repr prints every pixel byte) in an object
whose ``repr`` and ``_repr_html_`` are bounded.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.engine.derived import as_source
from omeframe.engine.display import card, esc, fmt_bytes, plan_facts, shorten
from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import LazySource, SourceLike
from omeframe.formats.array.source import RecordSource
from omeframe.model.record import as_record_scalar
from omeframe.ops.thumbnail import composite_rgb, downsample_cyx

__all__ = [
    "display",
    "Display",
    "thumbnail_of",
    "image_html",
    "dataset_html",
    "tensor_view_html",
    "THUMBNAIL_SIZE",
    "THUMBNAIL_READ_BUDGET",
    "THUMBNAIL_DECODE_BUDGET",
    "THUMBNAIL_MAX_BYTES",
]

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


def dataset_html(ds: Any) -> str:
    """The display of a dataset (a :class:`~omeframe.formats.dataset.reader.DatasetReader`): metadata only."""
    ids = ds.image_ids
    rows = [
        ("path", esc(ds.path)),
        ("format", esc(f"{ds.format}, generation {ds.manifest.generation}")),
        ("images", esc(len(ids))),
    ]
    lines = []
    for iid in ids[:8]:
        e = ds.entry(iid, 0)
        levels = ds.levels(iid)
        lines.append(
            f"<tr><td>{esc(iid, 40)}</td><td>{esc(' '.join(map(str, e.shape)))}</td><td>{esc(e.dtype.name)}</td>"
            f"<td>{esc(len(levels))}</td><td>{esc(e.codec or 'raw')}</td>"
            f"<td>{esc(fmt_bytes(int(e.row['stored_bytes'])))}</td></tr>"
        )
    more = f"<div>... (+{len(ids) - 8} images)</div>" if len(ids) > 8 else ""
    table = (
        "<table><tr><th>image</th><th>TCZYX</th><th>dtype</th><th>levels</th><th>codec</th><th>stored</th></tr>"
        + "".join(lines)
        + "</table>"
        + more
    )
    return card("omeframe Dataset", rows, extra=table if ids else "")


def tensor_view_html(view: Any, lazy: bool) -> str:
    """The display of a tensor view: layout, shape, dtype, the plan under it (and its read cost)."""
    plan: LazyImage = view._plan
    rows = [
        ("layout", esc(view.layout)),
        ("shape", esc(tuple(view.shape))),
        ("dtype", esc(view.dtype)),
        ("state", "not read (collect() reads it)" if lazy else "read"),
    ]
    rows += [r for r in plan_facts(plan, read_facts=lazy) if r[0] in ("channels", "pixel size", "source", "read")]
    return card("omeframe LazyTensorView" if lazy else "omeframe TensorView", rows)


def _record_plan(obj: Any) -> LazyImage | None:
    if isinstance(obj, (pa.StructScalar, pa.StructArray, pa.ChunkedArray, Mapping)):
        return LazyImage(RecordSource(as_record_scalar(obj)))
    return None


@dataclass(frozen=True)
class Display:
    """A bounded display of an object: ``repr`` is one line, ``_repr_html_`` a few kilobytes.

    Returned by :func:`display`; Jupyter renders it with ``_repr_html_``.
    """

    text: str
    html: str

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.html


def display(obj: Any) -> Display:
    """A bounded notebook display of ``obj`` (records, images, plans, datasets, tables, views).

    A record (what :func:`omeframe.from_numpy` and friends return) is a
    ``pyarrow.StructScalar``; its own repr prints every pixel byte (megabytes
    for a large image). ``omeframe.display(record)`` shows its shape, dtype,
    channels, pixel sizes and a small thumbnail instead, in a few kilobytes.

    Parameters
    ----------
    obj
        A record (``StructScalar``, dict or one-row ``StructArray``), an
        :class:`~omeframe.OMEArrow`, a plan, a source, a numpy array, or any
        object with its own ``_repr_html_`` (datasets, tables, views).

    Example
    -------
    >>> import numpy as np, omeframe
    >>> rec = omeframe.from_numpy(np.zeros((64, 64), np.uint8), dim_order="YX")
    >>> repr(omeframe.display(rec))
    '<OME-Arrow record TCZYX (1, 1, 1, 64, 64) uint8, channels C0>'
    """
    plan = _record_plan(obj)
    if plan is not None:
        names = ", ".join(shorten(list(plan.channel_names)))
        return Display(
            f"<OME-Arrow record TCZYX {plan.shape} {plan.out_dtype.name}, channels {names}>",
            image_html(plan, "OME-Arrow record", lazy=False),
        )
    if isinstance(obj, LazyImage):
        return Display(repr(obj), image_html(obj, "omeframe LazyImage (plan)"))
    if hasattr(obj, "_repr_html_"):
        text = repr(obj)
        return Display(text if len(text) <= 300 else text[:297] + "...", str(obj._repr_html_()))
    if isinstance(obj, (str, bytes)) or not isinstance(obj, (np.ndarray, LazySource, SourceLike)):
        raise TypeError(
            "omeframe.display shows records, images, plans, sources, numpy arrays, datasets and tables; "
            f"got a {type(obj).__name__} (for a file, display omeframe.scan(path))"
        )
    plan = LazyImage(as_source(obj))
    title = "numpy array" if isinstance(obj, np.ndarray) else "omeframe source"
    return Display(repr(plan), image_html(plan, title, lazy=not isinstance(obj, np.ndarray)))

