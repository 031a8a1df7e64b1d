"""Render a record plane with Matplotlib (optional ``viz`` extra)."""

from __future__ import annotations

from typing import Any

import numpy as np

from omeframe.formats.record.decode import plane_from_chunks
from omeframe.model.errors import OptionalDependencyError

__all__ = ["view_matplotlib"]


def view_matplotlib(
    data: Any,
    tcz: tuple[int, int, int] = (0, 0, 0),
    autoscale: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "gray",
    show: bool = True,
) -> tuple[Any, Any, Any]:
    """Render one ``(t, c, z)`` plane; return ``(figure, axes, image)``.

    Only the chunks holding that plane are decoded.
    """
    try:
        import matplotlib

        if not show:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise OptionalDependencyError(
            "view_matplotlib needs matplotlib: pip install 'omeframe[viz]'"
        ) from exc
    t, c, z = tcz
    plane = plane_from_chunks(data, t=t, c=c, z=z)
    if autoscale and (vmin is None or vmax is None):
        lo, hi = np.percentile(plane, (0.5, 99.5)) if plane.size else (0, 1)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    fig, ax = plt.subplots()
    img = ax.imshow(plane, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(f"t={t} c={c} z={z}")
    ax.set_axis_off()
    if show:
        plt.show()
    return fig, ax, img
