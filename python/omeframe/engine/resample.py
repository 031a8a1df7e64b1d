"""Physical units and automatic levels: micrometre selections and reads at a target resolution.

Plans select in pixels; this module turns micrometres into pixels and a
target resolution (µm per pixel, "mpp") into a pyramid level plus an exact
resampling of the remainder.

* :func:`um_to_pixels` converts ``(start, stop)`` intervals in µm into pixel
  ranges: every pixel the interval touches is included (a pixel ``i`` covers
  ``[i * size, (i + 1) * size)``).
* :func:`choose_level` picks the **coarsest level at least as fine as
  asked** (pixel size ≤ target along Y and X); when even the first level is
  coarser than the target, the first level is used and the remainder is an
  enlargement.
* :class:`ResampledSource` is a level seen at another pixel size. Output pixel
  ``i`` covers ``[i * target, (i + 1) * target)`` in physical units, i.e. input
  pixels ``[i * f, (i + 1) * f)`` with ``f = target / level_size``.

Interpolation. Intensity images use an **area-weighted mean** (a box filter
whose weights are the exact fractional overlaps of each output pixel with the
input pixels, normalised to sum to one): it conserves the mean intensity and
equals the level's own 2×2 block mean for ``f = 2``; with ``f < 1``
(enlarging) it copies the covering input pixel, blending only where an output
pixel straddles two. Integer outputs are rounded half to even and clipped to
the dtype's range, so integer dtypes stay integer. Label images
(``image_type == "label"``) and boolean images use **nearest** sampling (the
input pixel under each output pixel's centre), so label values are never
blended. Each output pixel depends on its global coordinate only, so reading
a region tile by tile gives the same values as reading it whole.

Example
-------
>>> import numpy as np
>>> idx, w = band_weights(0, 2, 1.5, 3)   # two outputs over three inputs
>>> idx.tolist(), np.round(w, 3).tolist()
([[0, 1], [1, 2]], [[0.667, 0.333], [0.333, 0.667]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from omeframe.engine.executor import assemble
from omeframe.engine.pieces import RegularPieces, regular_pieces
from omeframe.engine.source import LazySource
from omeframe.model.errors import SelectionError, UnitError
from omeframe.model.header import ImageHeader
from omeframe.model.selection import Selection
from omeframe.model.units import pixel_size_um

__all__ = [
    "ResampledSource",
    "band_weights",
    "choose_level",
    "level_sizes_um",
    "resample_block",
    "resolution_plan",
    "um_to_pixels",
]

_EPS = 1e-9
_TILE = 512


def _check_mpp(mpp: Any) -> float:
    if isinstance(mpp, bool) or not isinstance(mpp, (int, float, np.integer, np.floating)):
        raise TypeError(f"mpp must be a number of micrometres per pixel, got {mpp!r}")
    value = float(mpp)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"mpp must be a finite number of micrometres per pixel > 0, got {mpp!r}")
    return value


# --------------------------------------------------------------------------- #
# micrometres -> pixels
# --------------------------------------------------------------------------- #
def um_to_pixels(interval: Any, size_um: float, n: int, axis: str, name: str = "the image") -> tuple[int, int]:
    """The pixel range ``[p0, p1)`` touched by ``interval = (start_um, stop_um)``.

    Parameters
    ----------
    interval
        ``(start, stop)`` in µm from the first pixel's edge, ``start < stop``.
    size_um
        Pixel size along the axis in µm.
    n
        Number of pixels along the axis.
    axis
        Axis letter for messages.

    Raises
    ------
    SelectionError
        When the interval is empty, reversed or reaches outside the image
        (the message gives the image's extent in µm).

    Example
    -------
    >>> um_to_pixels((1.0, 2.2), 0.5, 10, "x")
    (2, 5)
    """
    try:
        a, b = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise TypeError(f"{axis}_um must be a (start, stop) pair in micrometres, got {interval!r}") from None
    extent = n * size_um
    if not (math.isfinite(a) and math.isfinite(b)) or b <= a:
        raise SelectionError(f"{axis}_um={interval!r} is empty or reversed; pass (start, stop) with start < stop")
    tol = _EPS * max(1.0, extent)
    if a < -tol or b > extent + tol:
        raise SelectionError(
            f"{axis}_um=({a:g}, {b:g}) reaches outside {name!r}, which spans 0..{extent:g} µm along "
            f"{axis.upper()} ({n} pixels of {size_um:g} µm)"
        )
    p0 = max(0, int(math.floor(a / size_um + _EPS)))
    p1 = min(n, int(math.ceil(b / size_um - _EPS)))
    return p0, max(p1, p0 + 1)


# --------------------------------------------------------------------------- #
# levels
# --------------------------------------------------------------------------- #
def level_sizes_um(levels: Sequence[LazySource]) -> list[tuple[float, float]]:
    """``(y, x)`` pixel sizes in µm of each level.

    A level whose header has no pixel size takes the first level's size scaled
    by the shape ratio (computed levels); the first level must have one.

    Raises
    ------
    UnitError
        When the first level has no physical pixel size or a unit that is not a length.
    """
    base = levels[0]
    h0 = base.header()
    py0, px0 = pixel_size_um(h0, "y"), pixel_size_um(h0, "x")
    out = [(py0, px0)]
    for lv in levels[1:]:
        h = lv.header()
        try:
            out.append((pixel_size_um(h, "y"), pixel_size_um(h, "x")))
        except UnitError:
            out.append((py0 * base.shape[3] / lv.shape[3], px0 * base.shape[4] / lv.shape[4]))
    return out


def choose_level(sizes: Sequence[tuple[float, float]], target_y: float, target_x: float) -> int:
    """Index of the coarsest level whose pixels are at most ``target`` along Y and X (else 0).

    Example
    -------
    >>> choose_level([(0.25, 0.25), (0.5, 0.5), (1.0, 1.0)], 0.7, 0.7)
    1
    """
    fine = [i for i, (py, px) in enumerate(sizes) if py <= target_y * (1 + 1e-6) and px <= target_x * (1 + 1e-6)]
    return max(fine, key=lambda i: (sizes[i][0] * sizes[i][1], i)) if fine else 0


# --------------------------------------------------------------------------- #
# resampling
# --------------------------------------------------------------------------- #
def band_weights(o0: int, o1: int, f: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Area weights of output pixels ``o0..o1`` over ``n`` input pixels, ``f`` inputs per output.

    Returns ``(idx, w)``, both ``(o1 - o0, K)``: input indices (clipped to the
    image) and their weights (exact overlaps, each row summing to one).
    """
    i = np.arange(o0, o1, dtype=np.float64)
    lo, hi = i * f, np.minimum((i + 1) * f, n)
    first = np.floor(lo + _EPS).astype(np.int64)
    k = int(math.ceil(f)) + 1
    idx = first[:, None] + np.arange(k)[None, :]
    left = np.maximum(lo[:, None], idx)
    right = np.minimum(hi[:, None], idx + 1)
    w = np.clip(right - left, 0.0, None)
    w[idx >= n] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w /= np.where(total > 0, total, 1.0)
    idx = np.minimum(idx, n - 1)
    used = np.flatnonzero(w.any(axis=0))
    keep = int(used[-1]) + 1 if used.size else 1
    return idx[:, :keep], w[:, :keep]


def _nearest(o0: int, o1: int, f: float, n: int) -> np.ndarray:
    i = np.arange(o0, o1, dtype=np.float64)
    return np.minimum(np.floor((i + 0.5) * f + _EPS).astype(np.int64), n - 1)


def resample_block(
    block: np.ndarray,
    rows: tuple[int, int, float, int],
    cols: tuple[int, int, float, int],
    offset: tuple[int, int],
    *,
    nearest: bool,
    dtype: np.dtype[Any],
) -> np.ndarray:
    """Resample ``block`` (``(..., h, w)``, input rows/cols starting at ``offset``) to output rows/cols.

    ``rows`` and ``cols`` are ``(o0, o1, f, n)``: the output range, inputs per
    output and the input axis length. The interpolation is described in the
    module docstring.
    """
    (ry0, ry1, fy, ny), (cx0, cx1, fx, nx) = rows, cols
    oy, ox = offset
    if nearest:
        iy = _nearest(ry0, ry1, fy, ny) - oy
        ix = _nearest(cx0, cx1, fx, nx) - ox
        return np.ascontiguousarray(block[..., iy[:, None], ix[None, :]]).astype(dtype, copy=False)
    iy, wy = band_weights(ry0, ry1, fy, ny)
    ix, wx = band_weights(cx0, cx1, fx, nx)
    data = block.astype(np.float64, copy=False)
    tmp = np.einsum("...ykx,yk->...yx", data[..., iy - oy, :], wy)
    res = np.einsum("...yxk,xk->...yx", tmp[..., ix - ox], wx)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(res), info.min, info.max).astype(dtype)
    return res.astype(dtype)


class ResampledSource(LazySource):
    """``parent`` seen with pixels of ``size_um = (y, x)`` micrometres (see the module docstring).

    Its pieces are output tiles; decoding one reads only the input window the
    tile covers. The header reports the new pixel size in µm.

    Example
    -------
    >>> src = ResampledSource(level, parent_um=(0.25, 0.25), size_um=(0.4, 0.4))   # doctest: +SKIP
    """

    def __init__(
        self,
        parent: LazySource,
        parent_um: tuple[float, float],
        size_um: tuple[float, float],
        *,
        tile: int = _TILE,
    ) -> None:
        super().__init__()
        self.parent = parent
        self.parent_um = (float(parent_um[0]), float(parent_um[1]))
        self.size_um = (float(size_um[0]), float(size_um[1]))
        self.fy = self.size_um[0] / self.parent_um[0]
        self.fx = self.size_um[1] / self.parent_um[1]
        st, sc, sz, sy, sx = parent.shape
        oy = max(1, int(math.floor(sy / self.fy + _EPS)))
        ox = max(1, int(math.floor(sx / self.fx + _EPS)))
        self._shape = (st, sc, sz, oy, ox)
        self.tile = int(tile)
        h = parent.header()
        self.nearest = (h.image_type or "") == "label" or parent.dtype.kind == "b"
        how = "nearest" if self.nearest else "area-weighted"
        self.describe = f"{parent.describe} resampled to {self.size_um[1]:g} µm/pixel ({how})"

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.parent.dtype

    def header(self) -> ImageHeader:
        return replace(
            self.parent.header(),
            physical_size_y=self.size_um[0],
            physical_size_x=self.size_um[1],
            physical_size_y_unit="µm",
            physical_size_x_unit="µm",
        )

    def chunk_shape(self) -> tuple[int, int, int]:
        return (1, min(self.tile, self._shape[3]), min(self.tile, self._shape[4]))

    def read(self, t: Sequence[int], c: Sequence[int], z: Sequence[int], y: tuple[int, int],
             x: tuple[int, int]) -> np.ndarray:
        """Output pixels ``[y0, y1) x [x0, x1)`` of the given T/C/Z indices, as a TCZYX array."""
        _, _, _, ny, nx = self.parent.shape
        if self.nearest:
            iy, ix = _nearest(*y, self.fy, ny), _nearest(*x, self.fx, nx)
            ys, xs = (int(iy.min()), int(iy.max()) + 1), (int(ix.min()), int(ix.max()) + 1)
        else:
            iy, _ = band_weights(*y, self.fy, ny)
            ix, _ = band_weights(*x, self.fx, nx)
            ys, xs = (int(iy.min()), int(iy.max()) + 1), (int(ix.min()), int(ix.max()) + 1)
        sel = Selection(t=tuple(t), c=tuple(c), z=tuple(z), y=ys, x=xs).resolve(self.parent.shape)
        block = assemble(self.parent.pixel_source(), sel, clamp=True)
        return resample_block(
            block, (*y, self.fy, ny), (*x, self.fx, nx), (ys[0], xs[0]), nearest=self.nearest, dtype=self.dtype
        )

    def _open_pixels(self) -> RegularPieces:
        origins, extents = regular_pieces(self._shape, self.chunk_shape())

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c, z, y, x = (int(v) for v in origins[i])
            dz, dy, dx = (int(v) for v in extents[i])
            out = self.read([t], [c], list(range(z, z + dz)), (y, y + dy), (x, x + dx))
            return out[0, 0]

        item = self.dtype.itemsize
        nbytes = (extents[:, 1] * self.fy * extents[:, 2] * self.fx * item).astype(np.int64)
        return RegularPieces(self._shape, self.dtype, self.chunk_shape(), decode, nbytes, True, self.describe)


def resolution_plan(
    source: LazySource, selection: Selection, mpp: Any
) -> tuple[LazySource, Selection]:
    """The source and selection that read ``selection`` of ``source`` at ``mpp`` µm per pixel.

    Chooses the level with :func:`choose_level` among ``source.levels()``;
    returns that level itself when its pixel size equals ``mpp``, else a
    :class:`ResampledSource` of it. The Y/X ranges of ``selection`` are mapped
    to the output grid (every output pixel the region touches); T/C/Z are kept.

    Raises
    ------
    UnitError
        When the image has no physical pixel size or its unit is not a length.
    ValueError
        When ``mpp`` is not a positive finite number.
    """
    target = _check_mpp(mpp)
    levels = source.levels()
    sizes = level_sizes_um(levels)
    k = choose_level(sizes, target, target)
    level, (py, px) = levels[k], sizes[k]
    py0, px0 = sizes[0]
    if abs(py / target - 1) <= 1e-6 and abs(px / target - 1) <= 1e-6:
        out: LazySource = level
    else:
        out = ResampledSource(level, (py, px), (target, target))
    _, _, _, oy, ox = out.shape
    sy, sx = source.shape[3], source.shape[4]
    kw: dict[str, Any] = {}
    for axis, pair, base_um, n, size in (("y", selection.y, py0, oy, sy), ("x", selection.x, px0, ox, sx)):
        if pair is None or pair == (0, size):
            kw[axis] = None
            continue
        a, b = pair[0] * base_um / target, pair[1] * base_um / target
        p0 = min(max(0, int(math.floor(a + _EPS))), n - 1)
        p1 = min(n, int(math.ceil(b - _EPS)))
        kw[axis] = (p0, max(p1, p0 + 1))
    return out, Selection(t=selection.t, c=selection.c, z=selection.z, y=kw["y"], x=kw["x"])
