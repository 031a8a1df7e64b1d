"""Sources over data already in memory: records and numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from omeframe.engine.pieces import Pieces, make_pieces
from omeframe.engine.source import LazySource
from omeframe.formats.dataset.inputs import header_from_record
from omeframe.formats.record.decode import record_source
from omeframe.model.header import ImageHeader
from omeframe.model.record import RecordView

__all__ = ["RecordSource", "ArraySource"]


def tc_stacks(shape: tuple[int, int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(origins, extents)`` of the pieces of a TCZYX image read one (t, c) stack at a time.

    Example
    -------
    >>> origins, extents = tc_stacks((1, 2, 3, 4, 5))
    >>> origins.tolist(), extents.tolist()
    ([[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]], [[3, 4, 5], [3, 4, 5]])
    """
    st, sc, sz, sy, sx = shape
    tc = np.indices((st, sc)).reshape(2, -1).T
    origins = np.zeros((len(tc), 5), dtype=np.int64)
    origins[:, :2] = tc
    return origins, np.tile(np.array([[sz, sy, sx]], dtype=np.int64), (len(tc), 1))


class RecordSource(LazySource):
    """An OME-Arrow record in memory."""

    def __init__(self, record: Any, describe: str | None = None) -> None:
        super().__init__()
        self.view = record if isinstance(record, RecordView) else RecordView(record)
        self.describe = describe or f"in-memory record {self.view.header('id')!r} ({self.view.variant} variant)"

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self.view.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.view.dtype

    def header(self) -> ImageHeader:
        return header_from_record(self.view)

    def _open_pixels(self) -> Pieces:
        return record_source(self.view).replace(describe=self.describe)

    def chunk_shape(self) -> tuple[int, int, int] | None:
        g = self.view.chunk_grid
        if not g:
            return None
        return (int(g["chunk_z"]), int(g["chunk_y"]), int(g["chunk_x"]))


class ArraySource(LazySource):
    """A TCZYX numpy array (pieces are Z-stacks per (t, c); reads are views)."""

    def __init__(self, tczyx: np.ndarray, header: ImageHeader) -> None:
        super().__init__()
        self.array = tczyx
        self._header = header
        self.describe = f"numpy array {tczyx.shape} {tczyx.dtype}"

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.array.dtype

    def header(self) -> ImageHeader:
        return self._header

    def _open_pixels(self) -> Pieces:
        origins, extents = tc_stacks(self.shape)
        arr = self.array

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c = (int(v) for v in origins[i, :2])
            return arr[t, c]

        nbytes = np.full(len(origins), int(np.prod(self.shape[2:])) * arr.dtype.itemsize, dtype=np.int64)
        return make_pieces(self.shape, arr.dtype, origins, extents, decode, nbytes, False, self.describe)
