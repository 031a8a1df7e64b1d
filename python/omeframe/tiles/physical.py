"""Regions in physical units at a target resolution (pado's ``get_array_at_mpp``).

Example
-------
>>> import numpy as np, omeframe
>>> from omeframe.tiles import get_array_at_mpp
>>> img = omeframe.from_numpy(np.ones((1, 3, 1, 400, 400), np.uint8), dim_order="TCZYX",
...                           physical_size_x=0.25, physical_size_y=0.25)
>>> get_array_at_mpp(img, (100, 40), (32, 16), 1.0).shape   # 16 rows, 32 columns, 3 channels
(16, 32, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from omeframe.engine.derived import as_source
from omeframe.engine.lazy import LazyImage
from omeframe.engine.resample import level_sizes_um
from omeframe.model.errors import SelectionError

__all__ = ["get_array_at_mpp"]


def _pair(value: Any, name: str) -> tuple[int, int]:
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an (x, y) / (width, height) pair of integers, got {value!r}") from None
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must hold integers, got {value!r}")
    return int(a), int(b)


def get_array_at_mpp(
    image: Any,
    location: Sequence[int],
    region: Sequence[int],
    target_mpp: float,
    *,
    t: int = 0,
    z: int = 0,
    c: Sequence[int] | None = None,
) -> np.ndarray:
    """A region of ``image`` at ``target_mpp`` micrometres per pixel, the level chosen for you.

    Parameters
    ----------
    image
        Anything :func:`omeframe.engine.derived.as_source` accepts (a path, an
        ``OMEArrow``, a dataset image, a source); it needs physical pixel sizes.
    location
        ``(x, y)`` of the region's top-left corner in **full-resolution
        (level 0) pixels**, as in pado's ``get_array`` and OpenSlide's ``read_region``.
    region
        ``(width, height)`` of the result in pixels **at the target resolution**.
    target_mpp
        Micrometres per output pixel.
    t, z, c
        Time point, plane and channels (default: all channels).

    Returns
    -------
    numpy.ndarray
        ``(height, width, channels)`` in the image's dtype (channels last,
        like pado). The coarsest level at least as fine as ``target_mpp`` is
        read and the remainder resampled exactly (area-weighted mean; nearest
        for label images; see :mod:`omeframe.engine.resample`).

    Raises
    ------
    UnitError
        If the image has no physical pixel size or its unit is not a length.
    SelectionError
        If the region is empty or reaches outside the image.
    ValueError
        If ``target_mpp`` is not a positive number.
    """
    x, y = _pair(location, "location")
    w, h = _pair(region, "region")
    if w <= 0 or h <= 0:
        raise SelectionError(f"region must have a positive width and height, got {region!r}")
    src = as_source(image)
    py0, px0 = level_sizes_um([src])[0]
    plan = LazyImage(src).at_resolution(target_mpp)
    _, _, _, oy, ox = plan.shape
    x0 = int(math.floor(x * px0 / float(target_mpp) + 1e-9))
    y0 = int(math.floor(y * py0 / float(target_mpp) + 1e-9))
    if x < 0 or y < 0 or x0 + w > ox or y0 + h > oy:
        raise SelectionError(
            f"region {w}x{h} at {target_mpp:g} µm/pixel from level-0 location ({x}, {y}) reaches outside the "
            f"image, which is {ox}x{oy} pixels at that resolution ({src.shape[4]}x{src.shape[3]} at level 0)"
        )
    chans = None if c is None else list(c)
    out = plan.select(t=[t], z=[z], c=chans, y=(y0, y0 + h), x=(x0, x0 + w)).execute()
    return np.ascontiguousarray(np.moveaxis(out[0, :, 0], 0, -1))
