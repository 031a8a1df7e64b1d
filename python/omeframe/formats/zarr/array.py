"""Sources backed by zarr arrays (the pixel access OME-Zarr sources build on).

Pieces are the array's own chunks (the read unit of zarr and of TIFF tiles
through ``tifffile``'s zarr store), so a region read decodes only the chunks
or tiles it touches. Axes are mapped to TCZYX by name; TIFF samples (``S``)
become channels when the image has no ``C`` axis.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from omeframe.engine.pieces import RegularPieces, regular_pieces
from omeframe.engine.source import LazySource
from omeframe.model.dims import CANONICAL, default_dim_order, validate_dim_order
from omeframe.model.header import ImageHeader, default_channels

__all__ = ["ZarrArraySource", "open_zarr_source"]


class ZarrArraySource(LazySource):
    """A zarr array whose axes are a permutation of a subset of TCZYX."""

    def __init__(self, array: Any, axes: str, header: ImageHeader, describe: str, *, keep: Any = None) -> None:
        super().__init__()
        self.array = array
        self.axes = validate_dim_order(axes, array.ndim)
        self._header = header
        self.describe = describe
        self._keep = keep  # objects (files, stores) that must outlive the array
        shape = dict(zip(self.axes, (int(s) for s in array.shape), strict=True))
        t, c, z, y, x = (shape.get(a, 1) for a in CANONICAL)
        self._shape = (t, c, z, y, x)
        chunks = dict(zip(self.axes, (int(n) for n in array.chunks), strict=True))
        cz, cy, cx = (chunks.get(a, 1) for a in "ZYX")
        self._chunk_zyx = (cz, cy, cx)
        #: Stored bytes of the whole array when the store cannot tell (TIFF tiles).
        self._stored_total: int | None = None

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.array.dtype)

    def header(self) -> ImageHeader:
        return self._header

    def chunk_shape(self) -> tuple[int, int, int]:
        return self._chunk_zyx

    def _open_pixels(self) -> RegularPieces:
        origins, extents = regular_pieces(self._shape, self._chunk_zyx)
        arr, axes = self.array, self.axes

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c, z, y, x = (int(v) for v in origins[i])
            dz, dy, dx = (int(v) for v in extents[i])
            region = {"T": t, "C": c, "Z": slice(z, z + dz), "Y": slice(y, y + dy), "X": slice(x, x + dx)}
            block = np.asarray(arr[tuple(region[a] for a in axes)])
            kept = [a for a in axes if a in "ZYX"]
            if "Z" not in kept:
                block = block[np.newaxis]
                kept = ["Z", *kept]
            return block.transpose([kept.index(a) for a in "ZYX"])

        nbytes = _stored_estimate(arr, len(origins), self._stored_total)
        return RegularPieces(self._shape, self.dtype, self._chunk_zyx, decode, nbytes, True, self.describe)


def _stored_estimate(arr: Any, n: int, total: int | None = None) -> np.ndarray:
    try:
        total = int(arr.nbytes_stored()) if total is None else int(total)
    except Exception:  # noqa: BLE001 - stores that cannot tell: fall back to raw size
        total = int(np.prod(arr.shape)) * np.dtype(arr.dtype).itemsize
    return np.full(n, total // max(n, 1), dtype=np.int64)


def open_zarr_source(array: Any, *, dim_order: str | None = None) -> ZarrArraySource:
    """A plain zarr array as a source (axes ``dim_order``, inferred from the rank).

    OME-Zarr image groups are opened by :func:`omeframe.formats.zarr.source.open_ome_zarr_source`,
    which reads their multiscales metadata and uses this for pixel access.
    """
    label = f"zarr array {getattr(array, 'path', '') or ''}".strip()
    axes = dim_order or default_dim_order(array.ndim)
    src = ZarrArraySource(array, axes, ImageHeader.basic("unnamed", "unknown", 1), f"{label} (chunks {array.chunks})")
    src._header = replace(src._header, channels=default_channels(None, src.shape[1]))
    return src
