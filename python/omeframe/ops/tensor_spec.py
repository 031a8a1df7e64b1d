"""Resolve tensor-view arguments (t/z/c, roi forms, tile, layout) against a plan."""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from omeframe.engine.lazy import LazyImage
from omeframe.model.errors import SelectionError
from omeframe.model.selection import Selection, Shape5

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
        if self.roi_type is not None and self.roi_type not in _ROI_KINDS:
            raise ValueError(f"roi_type must be one of {sorted(_ROI_KINDS)}, got {self.roi_type!r}")
        if self.roi_type is not None and self.roi_nd is None:
            raise ValueError("roi_type= says how to read roi_nd; pass roi_nd= too, or drop roi_type=")
        if self.roi_nd is not None and self.roi_type is None:
            # 4 values can only be a 2-D box, 8 only a 4-D (T, Z, Y, X) box; 6 is 3-D or 2-D + time
            inferred = {4: "2d", 8: "4d"}.get(len(self.roi_nd))
            if inferred is None:
                raise ValueError(
                    f"roi_nd with {len(self.roi_nd)} values is ambiguous: pass roi_type "
                    "('2d', '2d_timelapse', '3d' or '4d'); 4 and 8 values infer '2d' and '4d'"
                )
            object.__setattr__(self, "roi_type", inferred)
        if self.roi3d is not None and self.z is not None:
            raise ValueError("Provide either z or roi3d, not both: roi3d already selects Z")

    def updated(self, **changes: Any) -> ViewSpec:
        """A copy with the given (non-UNSET) fields replaced."""
        real = {k: v for k, v in changes.items() if v is not UNSET}
        if any(k in real for k in ("roi", "roi3d", "roi_nd", "tile")):
            for k in ("roi", "roi3d", "roi_nd", "tile"):
                real.setdefault(k, None)
        return replace(self, **real)


#: roi_type -> the number of bounds roi_nd holds.
_ROI_KINDS: dict[str, int] = {"2d": 4, "2d_timelapse": 6, "3d": 6, "4d": 8}

_ROI_FIELDS: dict[str, str] = {
    "roi": "(x, y, w, h)",
    "roi3d": "(x, y, z, w, h, d)",
    "2d": "(ymin, xmin, ymax, xmax)",
    "2d_timelapse": "(tmin, ymin, xmin, tmax, ymax, xmax)",
    "3d": "(zmin, ymin, xmin, zmax, ymax, xmax)",
    "4d": "(tmin, zmin, ymin, xmin, tmax, zmax, ymax, xmax)",
}


def _ints(value: Any, label: str) -> tuple[int, ...]:
    """The integers of an ROI/tile tuple (its form only; the ranges are checked by Selection)."""
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{label} must be a tuple of ints, got {value!r}") from None
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{label} must hold integers, got the bool {v!r} in {items!r}")
        try:
            out.append(operator.index(v))
        except TypeError:
            raise TypeError(
                f"{label} must hold integers, got {type(v).__name__} {v!r} in {items!r}"
            ) from None
    return tuple(out)


def _roi_box(shape: Shape5, label: str, **ranges: tuple[int, int]) -> Selection:
    """``Selection.box`` of an ROI form; errors name the ROI argument as given."""
    try:
        return Selection.box(shape, **ranges)
    except SelectionError as exc:
        raise SelectionError(f"{label}: {exc}") from None


def _spatial(spec: ViewSpec, plan: LazyImage) -> Selection:
    """The box an ROI or tile argument selects, in the plan's coordinates."""
    shape = plan.shape
    if spec.roi is not None:
        r = _ints(spec.roi, "roi")
        label = f"roi={r!r} as {_ROI_FIELDS['roi']}"
        if len(r) != 4:
            raise ValueError(f"roi takes 4 values {_ROI_FIELDS['roi']}, got {len(r)}: {r!r}")
        x, y, w, h = r
        return _roi_box(shape, label, y=(y, y + h), x=(x, x + w))
    if spec.roi3d is not None:
        r = _ints(spec.roi3d, "roi3d")
        label = f"roi3d={r!r} as {_ROI_FIELDS['roi3d']}"
        if len(r) != 6:
            raise ValueError(f"roi3d takes 6 values {_ROI_FIELDS['roi3d']}, got {len(r)}: {r!r}")
        x, y, z, w, h, d = r
        return _roi_box(shape, label, z=(z, z + d), y=(y, y + h), x=(x, x + w))
    if spec.roi_nd is not None:
        r = _ints(spec.roi_nd, "roi_nd")
        kinds = _ROI_KINDS
        if spec.roi_type not in kinds:
            raise ValueError(f"roi_type must be one of {sorted(kinds)}, got {spec.roi_type!r}")
        if len(r) != kinds[spec.roi_type]:
            raise ValueError(f"roi_type {spec.roi_type!r} takes {kinds[spec.roi_type]} bounds, got {len(r)}")
        label = f"roi_nd={r!r} as {_ROI_FIELDS[spec.roi_type]}"
        if spec.roi_type == "2d":
            ymin, xmin, ymax, xmax = r
            return _roi_box(shape, label, y=(ymin, ymax), x=(xmin, xmax))
        if spec.roi_type == "2d_timelapse":
            tmin, ymin, xmin, tmax, ymax, xmax = r
            return _roi_box(shape, label, t=(tmin, tmax), y=(ymin, ymax), x=(xmin, xmax))
        if spec.roi_type == "3d":
            zmin, ymin, xmin, zmax, ymax, xmax = r
            return _roi_box(shape, label, z=(zmin, zmax), y=(ymin, ymax), x=(xmin, xmax))
        tmin, zmin, ymin, xmin, tmax, zmax, ymax, xmax = r
        return _roi_box(shape, label, t=(tmin, tmax), z=(zmin, zmax), y=(ymin, ymax), x=(xmin, xmax))
    if spec.tile is not None:
        tile = _ints(spec.tile, "tile")
        if len(tile) != 2:
            raise ValueError(f"tile takes 2 values (tile_y, tile_x), got {len(tile)}: {tile!r}")
        ty, tx = tile
        cz_cy_cx = plan.source.chunk_shape() or (1, 512, 512)
        cy, cx = cz_cy_cx[1], cz_cy_cx[2]
        sy, sx = shape[3], shape[4]
        ny, nx = -(-sy // cy), -(-sx // cx)
        if not (0 <= ty < ny and 0 <= tx < nx):
            raise SelectionError(f"tile ({ty}, {tx}) is outside the {ny} x {nx} tile grid of {cy}x{cx} tiles")
        return Selection.box(shape, y=(ty * cy, min(sy, (ty + 1) * cy)), x=(tx * cx, min(sx, (tx + 1) * cx)))
    return Selection()


def resolve_view(plan: LazyImage, spec: ViewSpec) -> tuple[LazyImage, str, bool]:
    """Apply ``spec`` to ``plan``: return (narrowed plan, layout, take-first-channel)."""
    box = _spatial(spec, plan)
    for axis in ("t", "z", "c"):
        if getattr(spec, axis) is not None and getattr(box, axis) is not None:
            raise ValueError(f"{axis}= conflicts with the {axis.upper()} range of the ROI")
    picked = Selection.normalize(plan.shape, t=spec.t, z=spec.z, c=spec.c)
    sel = Selection(
        t=picked.t if box.t is None else box.t,
        c=picked.c if box.c is None else box.c,
        z=picked.z if box.z is None else box.z,
        y=box.y,
        x=box.x,
    )
    narrowed = plan if sel == Selection() else plan.select(t=sel.t, c=sel.c, z=sel.z, y=sel.y, x=sel.x)
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

