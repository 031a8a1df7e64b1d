"""The source protocol that lazy plans read through.

A :class:`LazySource` knows an image's shape, dtype and header cheaply (no
pixel I/O) and hands out a :class:`~omeframe.engine.pieces.Pieces`
(its pieces and how to decode them) when a plan runs or is explained.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from omeframe.engine.pieces import Pieces
from omeframe.engine.reopen import recipe_of, reopen
from omeframe.model.header import ImageHeader, default_channels

__all__ = ["LazySource", "HeaderOverride", "HeaderOptions", "SourceLike", "StoredSource"]


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

    # ---- pickling: file-backed sources travel as their recipe (engine/reopen.py) ----
    def __reduce_ex__(self, protocol: Any) -> Any:
        recipe = recipe_of(self)
        if recipe is not None:
            return (reopen, recipe)
        return super().__reduce_ex__(protocol)

    def __getstate__(self) -> dict[str, Any]:
        # In-memory sources pickle by value; the lock and the built pieces
        # (closures over open files) are made again on the other side.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state["_pixels"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class SourceLike(ABC):
    """An object that stands for one image and can present it as a :class:`LazySource`.

    Higher layers implement it (``omeframe.OMEArrow``) so that engine code,
    writers and exporters accept them through an ``isinstance`` check without
    importing them.
    """

    @abstractmethod
    def to_source(self) -> LazySource:
        """The image as a source (a plan's result, or the record in memory)."""


@dataclass(frozen=True, kw_only=True)
class HeaderOptions:
    """Overrides of an image's metadata applied when it is ingested or written.

    ``None`` keeps the source's value. Public functions (``from_tiff``,
    ``from_ome_zarr`` ...) build one from their flat keyword arguments.

    Example
    -------
    >>> opts = HeaderOptions(image_id="cell-1", channel_names=["dna", "actin"])  # doctest: +SKIP
    >>> src = opts.apply(source)                                                  # doctest: +SKIP
    """

    image_id: str | None = None
    name: str | None = None
    image_type: str | None = None
    channel_names: Sequence[str] | None = None
    acquisition_datetime: datetime | None = None

    def header(self, source: LazySource) -> ImageHeader:
        """A copy of ``source``'s header with these overrides (channels always copied).

        Raises
        ------
        ValueError
            When ``channel_names`` does not have one name per channel.
        """
        h = source.header()
        changes: dict[str, Any] = {}
        if self.image_id is not None:
            changes["image_id"] = str(self.image_id)
        if self.name is not None:
            changes["name"] = str(self.name)
        if self.image_type is not None:
            changes["image_type"] = self.image_type
        if self.acquisition_datetime is not None:
            changes["acquisition_datetime"] = self.acquisition_datetime
        n = source.shape[1]
        chans = h.channels or default_channels(None, n)
        if self.channel_names is not None:
            if len(self.channel_names) != n:
                raise ValueError(
                    f"channel_names has {len(self.channel_names)} names but the image has {n} channels; "
                    "pass one name per channel"
                )
            chans = tuple(replace(ch, name=str(name)) for ch, name in zip(chans, self.channel_names, strict=True))
        changes["channels"] = chans
        return replace(h, **changes)

    def apply(self, source: LazySource) -> LazySource:
        """``source`` seen with the overridden header (a :class:`HeaderOverride`)."""
        return HeaderOverride(source, self.header(source))


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
