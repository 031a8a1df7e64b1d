"""The source protocol that lazy plans read through.

A :class:`LazySource` knows an image's shape, dtype and header cheaply (no
pixel I/O) and hands out a :class:`~omeframe.engine.pieces.Pieces`
(its pieces and how to decode them) when a plan runs or is explained.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any

import numpy as np

from omeframe.engine.pieces import Pieces
from omeframe.model.header import ImageHeader

__all__ = ["LazySource", "HeaderOverride", "StoredSource"]


class LazySource(ABC):
    """An image that can be planned without reading pixels."""

    #: Short description for ``explain()``.
    describe: str = "source"

    def __init__(self) -> None:
        self._pixels: Pieces | None = None
        self._lock = threading.Lock()

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(T, C, Z, Y, X)``."""

    @property
    @abstractmethod
    def dtype(self) -> np.dtype[Any]:
        """Native pixel dtype."""

    @abstractmethod
    def header(self) -> ImageHeader:
        """Image metadata (ids, names, channels, physical sizes)."""

    @abstractmethod
    def _open_pixels(self) -> Pieces:
        """Build the piece description (may read metadata or, for records, the row)."""

    def pixel_source(self) -> Pieces:
        """The pieces of the image (built once, then reused)."""
        with self._lock:
            if self._pixels is None:
                self._pixels = self._open_pixels()
            return self._pixels

    def chunk_stats(self) -> dict[str, np.ndarray] | None:
        """Per-piece statistics (``min``, ``max``, ``mean``, ``nonzero``), if stored."""
        return None

    def chunk_shape(self) -> tuple[int, int, int] | None:
        """The source's ZYX chunk shape when regular (used when materialising)."""
        return None

    def levels(self) -> list[LazySource]:
        """Pyramid levels, full resolution first (``[self]`` when there is no pyramid)."""
        return [self]

    def labels(self) -> dict[str, LazySource]:
        """Label images linked to this image, by name (empty when there are none)."""
        return {}

    def image_input(self) -> Any:
        """Block reader for :func:`omeframe.write_dataset` (streams chunk by chunk)."""
        from omeframe.formats.dataset.inputs import ImageInput
        from omeframe.engine.lazy import LazyImage

        plan = LazyImage(self)

        def read_block(t: int, c: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            return plan.select(t=[t], c=[c], z=slice(z0, z1), y=(y0, y1), x=(x0, x1)).execute()[0, 0]

        h = self.header()
        header = replace(h, channels=[dict(c) for c in (h.channels or [])])
        return ImageInput(self.shape, self.dtype, header, read_block, chunk_hint=self.chunk_shape())


class HeaderOverride(LazySource):
    """``inner`` seen with another header (ids, names, channels, image type)."""

    def __init__(self, inner: LazySource, header: ImageHeader) -> None:
        super().__init__()
        self.inner = inner
        self._hdr = header
        self.describe = inner.describe

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self.inner.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.inner.dtype

    def header(self) -> ImageHeader:
        return self._hdr

    def chunk_shape(self) -> tuple[int, int, int] | None:
        return self.inner.chunk_shape()

    def chunk_stats(self) -> dict[str, np.ndarray] | None:
        return self.inner.chunk_stats()

    def _open_pixels(self) -> Pieces:
        return self.inner.pixel_source()


class StoredSource(LazySource):
    """Base for file sources that know shape, dtype and header when opened."""

    _shape: tuple[int, int, int, int, int]
    _dtype: np.dtype[Any]
    _header: ImageHeader

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    def header(self) -> ImageHeader:
        return self._header
