"""Axis strings: validate a ``dim_order`` and view any array as TCZYX."""

from __future__ import annotations

import numpy as np

from omeframe.model.errors import DimOrderError

__all__ = ["CANONICAL", "default_dim_order", "validate_dim_order", "to_tczyx"]

CANONICAL = "TCZYX"
_DEFAULTS = {2: "YX", 3: "ZYX", 4: "TCYX", 5: "TCZYX"}


def default_dim_order(ndim: int) -> str:
    """The axes assumed for an array of ``ndim`` dimensions when none are given."""
    try:
        return _DEFAULTS[ndim]
    except KeyError:
        raise DimOrderError(
            f"cannot infer axes for a {ndim}-D array; pass dim_order with one letter "
            "per axis from 'TCZYX' (e.g. 'YX', 'CYX', 'TZYX')"
        ) from None


def validate_dim_order(dim_order: str, ndim: int) -> str:
    """Return ``dim_order`` upper-cased after checking it describes ``ndim`` axes.

    Raises
    ------
    DimOrderError
        For unknown or repeated letters, a missing Y or X, or a length that
        differs from the array's number of dimensions.
    """
    if not isinstance(dim_order, str):
        raise DimOrderError(f"dim_order must be a string like 'TCZYX', got {dim_order!r}")
    order = dim_order.strip().upper()
    unknown = sorted({a for a in order if a not in CANONICAL})
    if unknown:
        raise DimOrderError(
            f"dim_order {dim_order!r} has unknown axis letter(s) {unknown}; "
            "allowed letters are T, C, Z, Y, X"
        )
    repeated = sorted({a for a in order if order.count(a) > 1})
    if repeated:
        raise DimOrderError(f"dim_order {dim_order!r} repeats axis letter(s) {repeated}")
    missing = [a for a in "YX" if a not in order]
    if missing:
        raise DimOrderError(
            f"dim_order {dim_order!r} lacks the spatial axis/axes {missing}; every image "
            "needs Y and X"
        )
    if len(order) != ndim:
        raise DimOrderError(
            f"dim_order {dim_order!r} names {len(order)} axes but the array has {ndim} "
            "dimensions; give exactly one letter per dimension"
        )
    return order


def to_tczyx(arr: np.ndarray, dim_order: str, *, stacked: bool = False) -> np.ndarray:
    """Return a TCZYX view of ``arr`` (missing axes become length-1; no copy).

    With ``stacked``, the first axis indexes images (an ``(N, ...)`` stack),
    ``dim_order`` names the axes of one image and the view is ``(N, T, C, Z, Y, X)``.
    """
    lead = 1 if stacked else 0
    order = validate_dim_order(dim_order, arr.ndim - lead)
    view = arr
    axes = list(order)
    for a in CANONICAL:
        if a not in axes:
            view = view[..., np.newaxis]
            axes.append(a)
    return view.transpose([*range(lead), *(lead + axes.index(a) for a in CANONICAL)])
