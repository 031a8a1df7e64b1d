"""Pyramid levels computed lazily from a full-resolution source.

A :class:`DownsampledSource` is a 2x (or ``factor``) box-mean reduction in
Y and X of its parent. Its pieces are tiles of the output; decoding one reads
only the matching ``factor``-times-larger region of the parent, so exporting
or ingesting a pyramid streams chunk by chunk like any other source.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from omeframe.engine.lazy import LazyImage
from omeframe.engine.pieces import RegularPieces, regular_pieces
from omeframe.engine.source import LazySource
from omeframe.model.header import ImageHeader

__all__ = ["DownsampledSource", "pyramid_levels", "level_for_scale"]


class DownsampledSource(LazySource):
    """``parent`` reduced by ``factor`` in Y and X (block mean; labels: block mode-free stride)."""

    def __init__(self, parent: LazySource, factor: int = 2, *, tile: int = 512, method: str = "mean") -> None:
        super().__init__()
        if factor < 2:
            raise ValueError(f"downsampling factor must be >= 2, got {factor}")
        if method not in ("mean", "nearest"):
            raise ValueError(f"method must be 'mean' or 'nearest', got {method!r}")
        self.parent = parent
        self.factor = int(factor)
        self.method = method
        self.tile = int(tile)
        st, sc, sz, sy, sx = parent.shape
        self._shape = (st, sc, sz, max(1, sy // factor), max(1, sx // factor))
        self.describe = f"{factor}x {method} downsampling of {parent.describe}"

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.parent.dtype

    def header(self) -> ImageHeader:
        h = self.parent.header()
        f = float(self.factor)
        return replace(
            h,
            physical_size_x=None if h.physical_size_x is None else h.physical_size_x * f,
            physical_size_y=None if h.physical_size_y is None else h.physical_size_y * f,
        )

    def chunk_shape(self) -> tuple[int, int, int]:
        pc = self.parent.chunk_shape()
        cy = min(self.tile, self._shape[3]) if pc is None else max(1, min(pc[1], self._shape[3]))
        cx = min(self.tile, self._shape[4]) if pc is None else max(1, min(pc[2], self._shape[4]))
        return (1, cy, cx)

    def _open_pixels(self) -> RegularPieces:
        origins, extents = regular_pieces(self._shape, self.chunk_shape())
        parent = LazyImage(self.parent)
        f = self.factor
        dtype = self.dtype

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c, z, y, x = (int(v) for v in origins[i])
            _, dy, dx = (int(v) for v in extents[i])
            window = parent.select(t=[t], c=[c], z=[z], y=(y * f, (y + dy) * f), x=(x * f, (x + dx) * f))
            block = window.execute()[0, 0, 0]
            if self.method == "nearest":
                return block[::f, ::f]
            red = block.reshape(dy, f, dx, f).mean(axis=(1, 3), dtype=np.float64)
            if dtype.kind in "iub":
                red = np.rint(red)
            return red.astype(dtype)

        nbytes = extents[:, 1] * extents[:, 2] * dtype.itemsize * f * f
        return RegularPieces(self._shape, dtype, self.chunk_shape(), decode, nbytes, True, self.describe)


def pyramid_levels(
    source: LazySource, n_levels: int, *, factor: int = 2, method: str | None = None, min_size: int = 1
) -> list[LazySource]:
    """``[source, source/f, source/f², ...]`` (``n_levels`` in all, stopping early below ``min_size``).

    Label images (``image_type == "label"``) use nearest sampling so label
    values are never averaged.
    """
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    if method is None:
        method = "nearest" if (source.header().image_type or "") == "label" else "mean"
    levels = [source]
    while len(levels) < n_levels:
        prev = levels[-1]
        if min(prev.shape[3], prev.shape[4]) // factor < max(1, min_size):
            break
        levels.append(DownsampledSource(prev, factor, method=method))
    return levels


def level_for_scale(shapes: list[tuple[int, ...]], downsample: float) -> int:
    """Index of the coarsest level whose downsampling (vs level 0) does not exceed ``downsample``."""
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    base = shapes[0][-1]
    best = 0
    for i, s in enumerate(shapes):
        if base / s[-1] <= downsample * (1 + 1e-9):
            best = i
    return best
