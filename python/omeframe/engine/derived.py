"""Lazy plans seen as sources, and the one resolver exporters and writers use.

:class:`PlanSource` turns a plan (a selection, dtype cast or chunk filter of
a source) back into a :class:`~omeframe.engine.source.LazySource` whose pieces
are read through the plan, so anything that consumes sources (exports,
pyramids, ingest) streams a plan chunk by chunk like any other image.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from omeframe.engine.pieces import RegularPieces, regular_pieces
from omeframe.model.selection import Selection
from omeframe.model.header import ImageHeader, select_channels
from omeframe.engine.source import HeaderOverride, LazySource
from omeframe.engine.lazy import LazyImage

__all__ = ["PlanSource", "as_source", "is_identity"]


def is_identity(plan: LazyImage) -> bool:
    """True when running ``plan`` returns its source unchanged."""
    return plan.selection == Selection() and plan.dtype is None and plan.predicate is None


class PlanSource(LazySource):
    """The result of ``plan`` as a source (pieces follow the source's chunking)."""

    def __init__(self, plan: LazyImage, *, clamp: bool = True) -> None:
        super().__init__()
        self.plan = plan
        self.clamp = clamp
        self.describe = f"plan over {plan.source.describe}"

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self.plan.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.plan.out_dtype

    def header(self) -> ImageHeader:
        plan = self.plan
        h = plan.source.header()
        chans = select_channels(h.channels or [], plan.selection.c, self.shape[1])
        return replace(h, channels=chans, dtype_meta=None if plan.dtype is not None else h.dtype_meta)

    def chunk_shape(self) -> tuple[int, int, int]:
        _, _, sz, sy, sx = self.shape
        cz, cy, cx = self.plan.source.chunk_shape() or (1, 512, 512)
        return (max(1, min(cz, sz)), max(1, min(cy, sy)), max(1, min(cx, sx)))

    def _open_pixels(self) -> RegularPieces:
        origins, extents = regular_pieces(self.shape, self.chunk_shape())
        plan, clamp = self.plan, self.clamp

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c, z, y, x = (int(v) for v in origins[i])
            dz, dy, dx = (int(v) for v in extents[i])
            sel = plan.select(t=[t], c=[c], z=slice(z, z + dz), y=(y, y + dy), x=(x, x + dx))
            return sel.execute(clamp=clamp, strict=strict)[0, 0]

        nbytes = extents.prod(axis=1) * self.dtype.itemsize
        return RegularPieces(self.shape, self.dtype, self.chunk_shape(), decode, nbytes, True, self.describe)


def as_source(data: Any) -> LazySource:
    """The :class:`LazySource` behind ``data``.

    ``data`` may be a source, a plan, an :class:`~omeframe.OMEArrow` (lazy or
    materialised), a record, an array, a :class:`~omeframe.Dataset` or a path.
    Plans that change nothing return their source itself.
    """
    if isinstance(data, LazySource):
        return data
    if isinstance(data, LazyImage):
        return data.source if is_identity(data) else PlanSource(data)
    if hasattr(data, "_lazy") and hasattr(data, "is_lazy"):  # OMEArrow
        plan = data._lazy()
        src = plan.source if is_identity(plan) else PlanSource(plan)
        it = getattr(data, "_image_type", None)
        return src if it is None else HeaderOverride(src, replace(src.header(), image_type=it))
    from omeframe.registry import open_source

    return open_source(data)
