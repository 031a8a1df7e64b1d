"""Notebook displays of images, plans, datasets and tensor views, with bounded thumbnails.

The thumbnails themselves (read from the coarsest pyramid level within a
read and decode budget, embedded as a small PNG or JPEG) are made by
:mod:`omeframe.engine.thumbnail`, re-exported here, so a plan renders one too.

:func:`display` wraps anything image-like (records included: a record is a
``pyarrow.StructScalar``, whose own repr prints every pixel byte) in an object
whose ``repr`` and ``_repr_html_`` are bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.engine.derived import as_source
from omeframe.engine.display import card, esc, fmt_bytes, plan_facts, shorten
from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import LazySource, SourceLike
from omeframe.engine.thumbnail import (
    THUMBNAIL_DECODE_BUDGET,
    THUMBNAIL_MAX_BYTES,
    THUMBNAIL_READ_BUDGET,
    THUMBNAIL_SIZE,
    image_html,
    thumbnail_of,
)
from omeframe.formats.array.source import RecordSource
from omeframe.model.record import as_record_scalar

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

