"""Resolve tensor-view arguments (t/z/c, roi forms, tile, layout) against a plan."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from omeframe.engine.lazy import LazyImage
from omeframe.model.errors import SelectionError

__all__ = ["ViewSpec", "resolve_view", "normalize_layout", "UNSET"]

RoiType = Literal["2d", "2d_timelapse", "3d", "4d"]
_ALIASES = str.maketrans({"H": "Y", "W": "X"})


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def normalize_layout(layout: str) -> str:
    """Upper-case a layout, map H/W to Y/X and check its letters (TZCYX, no repeats)."""
    if not isinstance(layout, str) or not layout.strip():
        raise ValueError(f"layout must be a non-empty string like 'CYX' or 'TZCYX', got {layout!r}")
    out = layout.strip().upper().translate(_ALIASES)
    bad = sorted({a for a in out if a not in "TZCYX"})
    if bad:
        raise ValueError(
            f"layout {layout!r} has unknown letter(s) {bad}; use T, Z, C, Y, X (H and W are "
            "accepted for Y and X), e.g. 'CYX', 'YXC', 'TZCYX'"
        )
    if len(set(out)) != len(out):
        raise ValueError(f"layout {layout!r} repeats a dimension")
    if "Y" not in out or "X" not in out:
        raise ValueError(f"layout {layout!r} must keep the spatial axes Y and X")
    return out


@dataclass(frozen=True)
class ViewSpec:
    """The arguments of ``tensor_view`` (as given, before resolution)."""

    t: Any = None
    z: Any = None
    c: Any = None
    roi: tuple[int, int, int, int] | None = None
    roi3d: tuple[int, int, int, int, int, int] | None = None
    roi_nd: tuple[int, ...] | None = None
    roi_type: RoiType | None = None
    tile: tuple[int, int] | None = None
    layout: str | None = None
    dtype: Any = None
    channel_policy: Literal["error", "first"] = "error"

    def __post_init__(self) -> None:
        if self.channel_policy not in ("error", "first"):
            raise ValueError(f"channel_policy must be 'error' or 'first', got {self.channel_policy!r}")
        if self.layout is not None:
            object.__setattr__(self, "layout", normalize_layout(self.layout))
        given = [n for n in ("roi", "roi3d", "roi_nd", "tile") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of roi, roi3d, roi_nd, tile; got {given}")
        if self.roi_nd is not None and self.roi_type is None:
            raise ValueError("roi_nd needs roi_type ('2d', '2d_timelapse', '3d' or '4d')")
        if self.roi3d is not None and self.z is not None:
            raise ValueError("roi3d already selects Z; do not pass z= as well")

    def updated(self, **changes: Any) -> ViewSpec:
        """A copy with the given (non-UNSET) fields replaced."""
        real = {k: v for k, v in changes.items() if v is not UNSET}
        if any(k in real for k in ("roi", "roi3d", "roi_nd", "tile")):
            for k in ("roi", "roi3d", "roi_nd", "tile"):
                real.setdefault(k, None)
        return replace(self, **real)


def _pair(lo: int, hi: int, axis: str) -> tuple[int, int]:
    lo, hi = int(lo), int(hi)
    if hi <= lo:
        raise SelectionError(f"empty or reversed {axis} range [{lo}, {hi})")
    return lo, hi


def _axis_range(lo: int, hi: int, size: int, axis: str) -> slice:
    """A T/Z ROI range as a slice, refusing bounds outside ``[0, size]`` (no clipping)."""
    lo, hi = _pair(lo, hi, axis)
    if lo < 0 or hi > size:
        raise SelectionError(
            f"ROI {axis} range [{lo}, {hi}) lies outside the image ({axis}={size}); "
            f"bounds must be within [0, {size}]"
        )
    return slice(lo, hi)


def _spatial(spec: ViewSpec, plan: LazyImage) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    if spec.roi is not None:
        x, y, w, h = (int(v) for v in spec.roi)
        if w <= 0 or h <= 0:
            raise SelectionError(f"roi width and height must be positive, got w={w}, h={h}")
        sel["y"], sel["x"] = _pair(y, y + h, "Y"), _pair(x, x + w, "X")
    elif spec.roi3d is not None:
        x, y, z, w, h, d = (int(v) for v in spec.roi3d)
        if min(w, h, d) <= 0:
            raise SelectionError(f"roi3d sizes must be positive, got w={w}, h={h}, d={d}")
        sel["y"], sel["x"], sel["z"] = _pair(y, y + h, "Y"), _pair(x, x + w, "X"), slice(z, z + d)
        if z < 0 or z + d > plan.shape[2]:
            raise SelectionError(f"roi3d Z range [{z}, {z + d}) is outside Z={plan.shape[2]}")
    elif spec.roi_nd is not None:
        r = tuple(int(v) for v in spec.roi_nd)
        kinds = {"2d": 4, "2d_timelapse": 6, "3d": 6, "4d": 8}
        if spec.roi_type not in kinds:
            raise ValueError(f"roi_type must be one of {sorted(kinds)}, got {spec.roi_type!r}")
        if len(r) != kinds[spec.roi_type]:
            raise ValueError(f"roi_type {spec.roi_type!r} takes {kinds[spec.roi_type]} bounds, got {len(r)}")
        st, _, sz, _, _ = plan.shape
        if spec.roi_type == "2d":
            ymin, xmin, ymax, xmax = r
        elif spec.roi_type == "2d_timelapse":
            tmin, ymin, xmin, tmax, ymax, xmax = r
            sel["t"] = _axis_range(tmin, tmax, st, "T")
        elif spec.roi_type == "3d":
            zmin, ymin, xmin, zmax, ymax, xmax = r
            sel["z"] = _axis_range(zmin, zmax, sz, "Z")
        else:
            tmin, zmin, ymin, xmin, tmax, zmax, ymax, xmax = r
            sel["t"], sel["z"] = _axis_range(tmin, tmax, st, "T"), _axis_range(zmin, zmax, sz, "Z")
        sel["y"], sel["x"] = _pair(ymin, ymax, "Y"), _pair(xmin, xmax, "X")
    elif spec.tile is not None:
        ty, tx = (int(v) for v in spec.tile)
        cz_cy_cx = plan.source.chunk_shape() or (1, 512, 512)
        cy, cx = cz_cy_cx[1], cz_cy_cx[2]
        sy, sx = plan.shape[3], plan.shape[4]
        ny, nx = -(-sy // cy), -(-sx // cx)
        if not (0 <= ty < ny and 0 <= tx < nx):
            raise SelectionError(f"tile ({ty}, {tx}) is outside the {ny} x {nx} tile grid of {cy}x{cx} tiles")
        sel["y"] = (ty * cy, min(sy, (ty + 1) * cy))
        sel["x"] = (tx * cx, min(sx, (tx + 1) * cx))
    return sel


def _check_roi_bounds(sel: dict[str, Any], shape: tuple[int, ...]) -> None:
    for axis, size in (("y", shape[3]), ("x", shape[4])):
        if axis in sel:
            lo, hi = sel[axis]
            if lo < 0 or hi > size:
                raise SelectionError(
                    f"ROI {axis.upper()} range [{lo}, {hi}) lies outside the image ({axis.upper()}={size}); "
                    f"bounds must be within [0, {size}]"
                )


def resolve_view(plan: LazyImage, spec: ViewSpec) -> tuple[LazyImage, str, bool]:
    """Apply ``spec`` to ``plan``: return (narrowed plan, layout, take-first-channel)."""
    sel = _spatial(spec, plan)
    _check_roi_bounds(sel, plan.shape)
    for axis in ("t", "z", "c"):
        v = getattr(spec, axis)
        if v is not None:
            if axis in sel:
                raise ValueError(f"{axis}= conflicts with the {axis.upper()} range of the ROI")
            sel[axis] = [v] if isinstance(v, (int, np.integer)) else v
    narrowed = plan.select(**sel) if sel else plan
    if spec.dtype is not None:
        narrowed = narrowed.with_dtype(spec.dtype)
    st, sc, sz, _, _ = narrowed.shape
    layout = spec.layout or ("CYX" if st == 1 and sz == 1 else "TZCYX")
    first_channel = False
    for axis, size in (("T", st), ("Z", sz), ("C", sc)):
        if axis not in layout and size != 1:
            if axis == "C" and spec.channel_policy == "first":
                first_channel = True
                continue
            hint = " or channel_policy='first'" if axis == "C" else ""
            raise ValueError(
                f"layout {layout!r} drops {axis}, but {size} {axis} indices are selected; select "
                f"one ({axis.lower()}=...){hint} or keep {axis} in the layout"
            )
    if first_channel:
        narrowed = narrowed.select(c=[0])
    return narrowed, layout, first_channel


def layout_shape(tczyx: tuple[int, int, int, int, int], layout: str) -> tuple[int, ...]:
    sizes = dict(zip("TCZYX", tczyx, strict=True))
    return tuple(sizes[a] for a in layout)


def to_layout(arr: np.ndarray, layout: str) -> np.ndarray:
    """View a TCZYX array in ``layout`` (dropped axes must have length 1)."""
    keep = [i for i, a in enumerate("TCZYX") if a in layout]
    drop = tuple(i for i, a in enumerate("TCZYX") if a not in layout)
    squeezed = arr.reshape(tuple(arr.shape[i] for i in keep)) if drop else arr
    present = [a for a in "TCZYX" if a in layout]
    return squeezed.transpose([present.index(a) for a in layout])

