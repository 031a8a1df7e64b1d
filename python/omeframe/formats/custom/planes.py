"""A source whose planes come from a user callback ``plane_loader(t, z, c)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from omeframe.engine.pieces import Pieces, make_pieces
from omeframe.formats.array.source import RecordSource
from omeframe.model.errors import PixelPayloadError
from omeframe.model.record import RecordView

__all__ = ["PlaneLoaderSource"]


class PlaneLoaderSource(RecordSource):
    """Metadata from a record (or ``pixels_meta`` dict), pixels from ``plane_loader``."""

    def __init__(self, meta: Any, plane_loader: Callable[[int, int, int], np.ndarray]) -> None:
        if isinstance(meta, dict) and "pixels_meta" not in meta and "size_x" in meta:
            meta = {"type": "ome.arrow", "version": "0.1.0", "id": "unnamed", "name": "unknown",
                    "pixels_meta": meta, "chunks": [], "planes": []}
        if isinstance(meta, dict):
            meta = {**meta, "chunks": [], "planes": []}
        super().__init__(RecordView(meta), describe="plane loader callback")
        self.loader = plane_loader

    def chunk_shape(self) -> tuple[int, int, int] | None:
        return None  # planes come from the callback, whatever grid the metadata names

    def _open_pixels(self) -> Pieces:
        st, sc, sz, sy, sx = self.shape
        tcz = np.indices((st, sc, sz)).reshape(3, -1).T
        origins = np.zeros((len(tcz), 5), dtype=np.int64)
        origins[:, :3] = tcz
        extents = np.tile(np.array([[1, sy, sx]], dtype=np.int64), (len(tcz), 1))

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c, z = (int(v) for v in origins[i, :3])
            plane = np.asarray(self.loader(t, z, c))
            if plane.shape != (sy, sx):
                raise PixelPayloadError(
                    f"plane_loader({t}, {z}, {c}) returned shape {plane.shape}, expected {(sy, sx)}"
                )
            return plane

        nbytes = np.full(len(tcz), sy * sx * self.dtype.itemsize, dtype=np.int64)
        return make_pieces(self.shape, self.dtype, origins, extents, decode, nbytes, True, self.describe)
