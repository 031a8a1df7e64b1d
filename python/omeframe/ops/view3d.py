"""Volume rendering of one channel with PyVista (optional ``viz3d`` extra).

:func:`view_pyvista` reads one ``(t, c)`` volume through the lazy engine
(only the chunks of that channel and of every ``downsample``-th Z plane),
strides it in Y and X, and hands it to a :class:`pyvista.Plotter` as an
``ImageData`` volume whose spacing is the image's physical voxel size.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import numpy as np

from omeframe.engine.lazy import LazyImage
from omeframe.model.errors import OptionalDependencyError
from omeframe.registry import open_source

if TYPE_CHECKING:
    import pyvista

__all__ = ["view_pyvista"]

#: Notebook display backends ``view_pyvista`` accepts (``"auto"`` picks the best installed one).
BACKENDS = ("auto", "trame", "html", "static")
#: Backends that need the ``trame`` packages; without them the view falls back to ``"static"``.
_TRAME_BACKENDS = ("trame", "html")
#: Upper bound on the bytes of full-resolution planes read at once while downsampling.
_BATCH_BYTES = 128 * 1024 * 1024
#: Scalar name of the rendered volume's point data.
SCALARS = "intensity"


def _pyvista() -> Any:
    try:
        import pyvista  # lazy: pyvista
    except ImportError as exc:
        raise OptionalDependencyError(
            "view_pyvista needs PyVista (with VTK) for 3-D rendering, which is not installed; "
            "install the 'viz3d' extra: pip install 'omeframe[viz3d]'"
        ) from exc
    return pyvista


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r})")
    return int(value)


def _check_pair(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with low < high, got {value!r}")
    return lo, hi


def _spacing(src_header: Any, scaling_values: Any) -> tuple[float, float, float]:
    """``(dz, dy, dx)``: ``scaling_values`` (Z, Y, X) or the header's physical sizes (1.0 when unset)."""
    if scaling_values is not None:
        try:
            dz, dy, dx = (float(v) for v in scaling_values)
        except (TypeError, ValueError):
            raise TypeError(
                f"scaling_values must be three numbers (Z, Y, X), got {scaling_values!r}"
            ) from None
        if not all(np.isfinite(v) and v > 0 for v in (dz, dy, dx)):
            raise ValueError(f"scaling_values must be positive and finite (Z, Y, X), got {scaling_values!r}")
        return dz, dy, dx
    def size(v: float | None) -> float:
        return float(v) if v is not None and np.isfinite(v) and v > 0 else 1.0

    return size(src_header.physical_size_z), size(src_header.physical_size_y), size(src_header.physical_size_x)


def read_volume(data: Any, *, t: int = 0, c: int = 0, downsample: int = 1) -> np.ndarray:
    """The ``(Z, Y, X)`` volume of plane ``t``, channel ``c``, keeping every ``downsample``-th voxel.

    Only channel ``c`` and every ``downsample``-th Z plane are read; the full
    planes are read a bounded batch at a time and strided in Y and X, so peak
    memory stays near the size of the result.

    Example
    -------
    >>> vol = read_volume(omeframe.scan("cells.ome.tif"), c=1, downsample=2)   # doctest: +SKIP
    """
    src = open_source(data)
    st, sc, sz, sy, sx = src.shape
    c = _check_int(c, "c")
    t = _check_int(t, "t")
    downsample = _check_int(downsample, "downsample")
    if not 0 <= c < sc:
        raise ValueError(f"channel c={c} is out of range: the image has {sc} channel(s), valid c are 0..{sc - 1}")
    if not 0 <= t < st:
        raise ValueError(f"time point t={t} is out of range: the image has {st} time point(s), valid t are 0..{st - 1}")
    if downsample < 1:
        raise ValueError(f"downsample must be a positive integer (1 keeps every voxel), got {downsample}")
    plan = LazyImage(src).select(t=[t], c=[c])
    zs = np.arange(0, sz, downsample)
    if downsample == 1:
        return plan.execute()[0, 0]
    plane_bytes = max(1, sy * sx * src.dtype.itemsize)
    per_batch = max(1, _BATCH_BYTES // plane_bytes)
    out = np.empty((len(zs), len(range(0, sy, downsample)), len(range(0, sx, downsample))), dtype=src.dtype)
    for start in range(0, len(zs), per_batch):  # bounded batches of planes, not a loop per plane
        batch = zs[start:start + per_batch]
        out[start:start + len(batch)] = plan.select(z=batch).execute()[0, 0, :, ::downsample, ::downsample]
    return out


def _vtk_array(vol: np.ndarray) -> np.ndarray:
    """``vol`` in a dtype VTK volume mappers take (bool → uint8, 64-bit ints → float64)."""
    kind, size = vol.dtype.kind, vol.dtype.itemsize
    if kind == "b":
        return vol.astype(np.uint8)
    if kind in "iu" and size > 4:
        return vol.astype(np.float64)
    return np.ascontiguousarray(vol)


def _robust_clim(vol: np.ndarray, percentile_clim: tuple[float, float]) -> tuple[float, float]:
    values = vol if vol.dtype.kind != "f" else vol[np.isfinite(vol)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, percentile_clim))
    return lo, hi if hi > lo else lo + 1.0


def _ascii_unit(unit: str) -> str:
    """``unit`` for VTK's default font, which has no micro sign (``µm`` → ``um``)."""
    return unit.replace("\u00b5", "u").replace("\u03bc", "u")


def _jupyter_backend(backend: str) -> str:
    """The notebook backend to show with: ``backend``, or ``"static"`` when trame is missing."""
    has_trame = importlib.util.find_spec("trame") is not None and importlib.util.find_spec("trame_vtk") is not None
    if backend == "auto":
        return "trame" if has_trame else "static"
    if backend in _TRAME_BACKENDS and not has_trame:
        return "static"
    return backend


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
    *,
    t: int = 0,
    off_screen: bool | None = None,
) -> pyvista.Plotter:
    """Render one channel of an image as a 3-D volume; return the :class:`pyvista.Plotter`.

    Parameters
    ----------
    data
        Anything omeframe reads as one image: a record (``pa.StructScalar`` or
        dict), an :class:`~omeframe.OMEArrow` (lazy plans read only what is
        shown), a source, a plan, a path or a TCZYX numpy array.
    c
        Channel to render.
    downsample
        Keep every ``downsample``-th voxel along Z, Y and X (1 keeps all);
        the spacing grows by the same factor so the volume keeps its size.
    scaling_values
        Voxel size ``(Z, Y, X)`` in world units; ``None`` uses the image's
        physical sizes (1.0 for an unset size).
    opacity
        A PyVista opacity transfer function name (``"sigmoid"``, ``"linear"``,
        ``"geom"`` ...) or a constant in ``[0, 1]``.
    clim
        Contrast limits ``(low, high)``; ``None`` takes the
        ``percentile_clim`` percentiles of the rendered voxels.
    show_axes
        Add the orientation axes widget.
    backend
        Notebook display backend: ``"auto"`` (trame when installed, else
        static), ``"trame"``, ``"html"`` or ``"static"``; trame backends fall
        back to static without trame. Used only when ``show=True`` inside a
        Jupyter kernel.
    interpolation
        ``"nearest"`` (crisp voxels) or ``"linear"`` sampling.
    background
        Background colour; bounds and labels are drawn in a contrasting grey.
    percentile_clim
        Percentiles used for the automatic ``clim``.
    sampling_scale
        Ray step as a fraction of the smallest voxel spacing (smaller is
        sharper and slower).
    show
        Show the plotter before returning it (a window, or the notebook
        widget). With ``show=False`` call ``plotter.show()`` or
        ``plotter.screenshot(...)`` later.
    t
        Time point to render (keyword only).
    off_screen
        Render without a window (headless servers, CI, screenshots);
        ``None`` uses PyVista's global setting (``PYVISTA_OFF_SCREEN``).

    Returns
    -------
    pyvista.Plotter
        The plotter holding one volume actor (scalars named ``"intensity"``,
        VTK dimensions ``(X, Y, Z)`` of the downsampled volume).

    Raises
    ------
    OptionalDependencyError
        PyVista is not installed (``pip install 'omeframe[viz3d]'``).
    ValueError
        ``c`` or ``t`` out of range, ``downsample < 1``, invalid ``clim``,
        ``opacity``, ``interpolation``, ``backend`` or ``sampling_scale``.
    TypeError
        A non-integer index or a malformed tuple.

    Notes
    -----
    A single-plane (Z = 1) image renders as a one-voxel-thick slab, as in
    ome-arrow; use :meth:`omeframe.OMEArrow.view` with ``how="matplotlib"``
    for planes.

    Example
    -------
    >>> pl = view_pyvista(omeframe.scan("nuclei.ome.tif"), c=0, downsample=2,
    ...                   off_screen=True, show=False)                 # doctest: +SKIP
    >>> pl.screenshot("nuclei.png")                                    # doctest: +SKIP
    """
    pv = _pyvista()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    interp = str(interpolation).lower()
    if interp not in ("nearest", "linear"):
        raise ValueError(f"interpolation must be 'nearest' or 'linear', got {interpolation!r}")
    if isinstance(opacity, (bool, np.bool_)) or not isinstance(opacity, (str, int, float, np.number)):
        raise TypeError(f"opacity must be a transfer-function name or a number in [0, 1], got {opacity!r}")
    if not isinstance(opacity, str) and not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"a constant opacity must lie in [0, 1], got {opacity!r}")
    scale = float(sampling_scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"sampling_scale must be a positive number, got {sampling_scale!r}")
    pct = _check_pair(percentile_clim, "percentile_clim")
    if not (0.0 <= pct[0] and pct[1] <= 100.0):
        raise ValueError(f"percentile_clim must lie within [0, 100], got {percentile_clim!r}")
    limits = None if clim is None else _check_pair(clim, "clim")

    src = open_source(data)
    vol = _vtk_array(read_volume(src, t=t, c=c, downsample=downsample))
    dz, dy, dx = (s * downsample for s in _spacing(src.header(), scaling_values))
    if limits is None:
        limits = _robust_clim(vol, pct)

    grid = pv.ImageData(dimensions=vol.shape[::-1], spacing=(dx, dy, dz))
    grid.point_data[SCALARS] = vol.reshape(-1)  # C-order ZYX is VTK's X-fastest order
    grid.point_data.active_scalars_name = SCALARS

    plotter = pv.Plotter(off_screen=off_screen)
    plotter.set_background(background)
    step = min(dx, dy, dz)
    actor = plotter.add_volume(
        grid,
        scalars=SCALARS,
        cmap="gray",
        opacity=float(opacity) if not isinstance(opacity, str) else opacity,
        clim=limits,
        shade=False,
        opacity_unit_distance=step,
        scalar_bar_args={"title": SCALARS},
    )
    prop = actor.prop
    if interp == "nearest":
        prop.SetInterpolationTypeToNearest()
    else:
        prop.SetInterpolationTypeToLinear()
    mapper = actor.mapper
    mapper.SetAutoAdjustSampleDistances(False)
    mapper.SetSampleDistance(step * scale)

    if show_axes:
        plotter.add_axes()
    r, g, b = pv.Color(background).float_rgb
    ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
    h = src.header()
    units = (h.physical_size_x_unit, h.physical_size_y_unit, h.physical_size_z_unit)
    titles = [
        axis if scaling_values is not None or not unit else f"{axis} ({_ascii_unit(unit)})"
        for axis, unit in zip("XYZ", units, strict=True)
    ]
    plotter.show_bounds(color=ink, location="outer", ticks="both", xtitle=titles[0], ytitle=titles[1], ztitle=titles[2])
    if show:
        if plotter.notebook:
            plotter.show(jupyter_backend=_jupyter_backend(backend))
        else:
            plotter.show()
    return plotter
