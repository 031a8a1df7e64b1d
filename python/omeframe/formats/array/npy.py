"""``.npy`` files: memory-mapped arrays, axes inferred from the shape."""

from __future__ import annotations

import os

import numpy as np

from omeframe.model.dims import default_dim_order

__all__ = ["infer_array_dims", "load_npy"]


def infer_array_dims(shape: tuple[int, ...]) -> str:
    """Axes of an array file without metadata.

    omeframe's defaults by rank (``YX``, ``ZYX``, ``TCYX``, ``TCZYX``), except
    that a trailing axis of 3 or 4 samples after two larger ones is RGB(A)
    channels (``YXC``).

    Examples
    --------
    >>> infer_array_dims((512, 512, 3))
    'YXC'
    >>> infer_array_dims((7, 512, 512))
    'ZYX'
    """
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4 and shape[1] > 4:
        return "YXC"
    return default_dim_order(len(shape))


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped (nothing is read until used).

    Raises
    ------
    ValueError
        When the file is not a numpy array file or holds Python objects.
    """
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)!r} is not a readable .npy array file: {exc}") from exc
