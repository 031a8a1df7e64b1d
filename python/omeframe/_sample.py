"""A small synthetic microscopy sample (procedural, no download): cells in 3 channels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Sample", "make_sample"]


@dataclass(frozen=True)
class Sample:
    """A slide image, its cells and their bounding boxes."""

    slide: np.ndarray  # (C, Y, X) uint16: nuclei, membrane, cytoplasm
    centers: np.ndarray  # (n, 2) int: y, x
    radii: np.ndarray  # (n,) float
    channel_names: tuple[str, ...] = ("DAPI", "Membrane", "Cytoplasm")


def make_sample(size: int = 2048, n_cells: int = 300, seed: int = 7) -> Sample:
    """Render ``n_cells`` cells on a ``size`` x ``size`` slide with camera-like noise."""
    rng = np.random.default_rng(seed)
    margin = 40
    centers = rng.integers(margin, size - margin, size=(n_cells, 2))
    radii = rng.uniform(7.0, 16.0, size=n_cells)
    yy, xx = np.mgrid[-32:33, -32:33].astype(np.float32)
    dist = np.sqrt(yy**2 + xx**2)
    field = np.zeros((3, size, size), dtype=np.float32)
    for (cy, cx), r in zip(centers, radii, strict=True):
        nucleus = np.exp(-((dist / (0.55 * r)) ** 4))
        membrane = np.exp(-(((dist - r) / 1.6) ** 2))
        cyto = np.exp(-((dist / r) ** 6)) - 0.7 * nucleus
        sl = (slice(cy - 32, cy + 33), slice(cx - 32, cx + 33))
        field[0][sl] += 3000.0 * nucleus
        field[1][sl] += 1800.0 * membrane
        field[2][sl] += 1200.0 * np.clip(cyto, 0.0, None)
    ramp = np.linspace(0.85, 1.15, size, dtype=np.float32)
    field *= ramp[None, :, None]
    field += rng.normal(180.0, 12.0, size=field.shape).astype(np.float32)
    slide = np.clip(rng.poisson(np.clip(field, 0, None)), 0, 65535).astype(np.uint16)
    return Sample(slide=slide, centers=centers, radii=radii)
