"""Lazy plans seen as sources, and the one resolver exporters and writers use.

:class:`PlanSource` turns a plan (a selection, dtype cast or chunk filter of
a source) back into a :class:`~omeframe.engine.source.LazySource` whose pieces
are read through the plan, so anything that consumes sources (exports,
pyramids, ingest) streams a plan chunk by chunk like any other image.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from omeframe.engine.lazy import LazyImage
from omeframe.engine.pieces import RegularPieces, regular_pieces
from omeframe.engine.source import LazySource, SourceLike
from omeframe.model.header import ImageHeader
from omeframe.model.selection import Selection

__all__ = ["PlanSource", "as_source", "known_source", "set_resolver", "is_identity"]


def is_identity(plan: LazyImage) -> bool:
    """True when running ``plan`` returns its source unchanged."""
    return plan.selection == Selection() and plan.cast is None and plan.predicate is None


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
        return self.plan.header

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


def known_source(data: object) -> LazySource | None:
    """The source behind a source, a plan or a :class:`SourceLike`; ``None`` for anything else.

    Plans that change nothing return their source itself.
    """
    if isinstance(data, LazySource):
        return data
    if isinstance(data, LazyImage):
        return data.source if is_identity(data) else PlanSource(data)
    if isinstance(data, SourceLike):
        return data.to_source()
    return None


_resolvers: list[Callable[[object], LazySource]] = []


def set_resolver(resolver: Callable[[object], LazySource]) -> None:
    """Install the function :func:`as_source` hands paths, arrays and records to.

    :mod:`omeframe.registry` installs its ``open_source`` when it is imported
    (the package's ``__init__`` always imports it), so the engine and the
    format writers resolve any input without importing the layer above them.
    """
    _resolvers[:] = [resolver]


def as_source(data: object) -> LazySource:
    """The :class:`LazySource` behind ``data``.

    ``data`` may be a source, a plan, an :class:`~omeframe.OMEArrow` (lazy or
    materialised), a record, an array, a :class:`~omeframe.Dataset` or a path;
    the last four go through :func:`omeframe.registry.open_source`.

    Example
    -------
    >>> src = as_source(omeframe.scan("img.ome.tif").select(c=[0]))   # doctest: +SKIP
    """
    src = known_source(data)
    if src is not None:
        return src
    if not _resolvers:
        # A format writer imported on its own (``from omeframe.formats.zarr.writer
        # import to_ome_zarr``): the registry installs its resolver when imported.
        importlib.import_module("omeframe.registry")
    if not _resolvers:  # pragma: no cover - the registry always installs one
        raise TypeError(f"cannot use a {type(data).__name__} as an image: no format registry is loaded")
    return _resolvers[0](data)
