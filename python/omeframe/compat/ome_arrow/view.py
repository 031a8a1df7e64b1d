"""Viewing records (``ome_arrow.view``): matplotlib planes and PyVista volumes.

``view_pyvista`` needs the optional ``pyvista`` package; without it the call
warns (``RuntimeWarning``) and raises ``RuntimeError`` naming the extra to
install, as ome-arrow does.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

from omeframe.ops.view import view_matplotlib
from omeframe.ops.view3d import view_pyvista as _view_pyvista

__all__ = ["view_matplotlib", "view_pyvista"]

_NOT_LOADED = object()
#: The ``pyvista`` module once loaded, ``None`` when it is not installed.
pv: Any = _NOT_LOADED


def _pyvista() -> ModuleType | None:
    global pv
    if pv is _NOT_LOADED:
        try:
            pv = importlib.import_module("pyvista")  # lazy: pyvista
        except ImportError:
            pv = None
    return pv


def view_pyvista(
    data: Any,
    c: int = 0,
    downsample: int = 1,
    scaling_values: tuple[float, float, float] | None = None,
    opacity: str | float = "sigmoid",
    clim: tuple[float, float] | None = None,
    show_axes: bool = True,
    backend: str = "auto",
    interpolation: str = "nearest",
    background: str = "black",
    percentile_clim: tuple[float, float] = (1.0, 99.9),
    sampling_scale: float = 0.5,
    show: bool = True,
) -> Any:
    """Render channel ``c`` (first time point) as a PyVista volume and return the ``Plotter``.

    The reference's behaviour when PyVista is missing (a ``RuntimeWarning``,
    then ``RuntimeError``), then :func:`omeframe.view_pyvista`, which reads
    only channel ``c`` and every ``downsample``-th voxel lazily.

    Raises
    ------
    RuntimeError
        When PyVista is not installed (``pip install 'ome-arrow[viz]'`` /
        ``pip install pyvista``).
    """
    pyvista = _pyvista()
    if pyvista is None:
        warnings.warn(
            "PyVista is not installed; install ome-arrow[viz] (or pyvista) for 3-D views",
            RuntimeWarning,
            stacklevel=2,
        )
        raise RuntimeError("PyVista-based visualization needs the pyvista package: pip install pyvista")
    # ome-arrow treats a downsample below 1 as 1; omeframe's renderer refuses it
    return _view_pyvista(
        data, c, max(1, int(downsample)), scaling_values, opacity, clim, show_axes, backend,
        interpolation, background, percentile_clim, sampling_scale, show,
    )
