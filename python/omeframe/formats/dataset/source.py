"""One image (and pyramid level) of a chunked dataset, as a :class:`LazySource`."""

from __future__ import annotations

from typing import Any

import numpy as np

from omeframe.engine.pieces import Pieces
from omeframe.engine.reopen import set_recipe
from omeframe.engine.source import LazySource
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.model.header import ImageHeader

__all__ = ["DatasetSource"]


class DatasetSource(LazySource):
    """One image (and pyramid level) of a chunked dataset.

    Example
    -------
    >>> src = DatasetSource(DatasetReader("slides/"), "slide-1", level=0)   # doctest: +SKIP
    """

    def __init__(self, dataset: DatasetReader, image_id: str | None = None, level: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.entry = dataset.entry(image_id, level)
        self.level = level
        self._stats: dict[str, np.ndarray] | None = None
        # Pickles as (dataset, image, level): the dataset pickles as its path and generation.
        set_recipe(self, DatasetSource, (dataset, self.entry.image_id, level))
        self.describe = f"{dataset.format} dataset {dataset.where!r} image {self.entry.image_id!r} level {level}"

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self.entry.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.entry.dtype

    def header(self) -> ImageHeader:
        return self.dataset.header(self.entry.image_id, self.level)

    def _open_pixels(self) -> Pieces:
        return self.dataset.pixel_source(self.entry.image_id, self.level)

    def chunk_stats(self) -> dict[str, np.ndarray] | None:
        # Read once per source: filter_chunks, explain and execute all ask.
        with self._lock:
            if self._stats is None:
                self._stats = self.dataset.chunk_stats(self.entry.image_id, self.level)
            return self._stats

    def chunk_shape(self) -> tuple[int, int, int] | None:
        return self.entry.chunk_shape

    def levels(self) -> list[LazySource]:
        """This level and every coarser pyramid level the dataset stores for the image."""
        stored = self.dataset.levels(self.entry.image_id)
        return [self, *(DatasetSource(self.dataset, self.entry.image_id, lv) for lv in stored if lv > self.level)]
