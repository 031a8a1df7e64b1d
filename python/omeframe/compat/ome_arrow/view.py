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

import numpy as np

from omeframe.formats.record.decode import to_dict, to_numpy
from omeframe.ops.view import view_matplotlib

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

    ``scaling_values`` are the (Z, Y, X) voxel spacings (the record's physical
    sizes by default); ``clim`` defaults to the ``percentile_clim``
    percentiles of the volume; ``backend`` is passed to
    ``pyvista.set_jupyter_backend`` unless ``"auto"``.

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
    step = max(1, int(downsample))
    vol = to_numpy(data)[0, int(c)][:, ::step, ::step].astype(np.float32)
    if scaling_values is None:
        pm = to_dict(data)["pixels_meta"]
        sz, sy, sx = (float(pm.get(f"physical_size_{a}") or 1.0) for a in "zyx")
    else:
        sz, sy, sx = scaling_values
    grid = pyvista.ImageData(dimensions=vol.shape[::-1], spacing=(sx * step, sy * step, sz))
    grid.point_data["intensity"] = vol.ravel(order="C")
    if clim is None:
        lo, hi = np.percentile(vol, percentile_clim)
        clim = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
    if backend != "auto":
        pyvista.set_jupyter_backend(backend)
    plotter = pyvista.Plotter(off_screen=not show)
    plotter.set_background(background)
    plotter.add_volume(
        grid, scalars="intensity", opacity=opacity, clim=clim, shade=False,
        mapper="smart", opacity_unit_distance=sampling_scale * min(sx, sy, sz),
    )
    plotter.volume.prop.interpolation_type = interpolation
    if show_axes:
        plotter.show_axes()
    if show:
        plotter.show()
    return plotter
