"""What the dataset writer reads: block readers over sources.

An :class:`ImageInput` knows an image's shape, dtype and metadata and can read
any ``(t, c, z0:z1, y0:y1, x0:x1)`` block, so the writer streams chunk by
chunk and never needs the whole image in memory. :func:`source_input` makes
one from any :class:`~omeframe.engine.source.LazySource` (files, arrays,
records, lazy plans); callers with their own block reader build an
``ImageInput`` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import LazySource
from omeframe.formats.record.source import header_from_record
from omeframe.model.header import ImageHeader

__all__ = ["ImageInput", "BlockReader", "source_input", "header_from_record"]

#: ``(t, c, z0, z1, y0, y1, x0, x1) -> (z1 - z0, y1 - y0, x1 - x0)`` array.
BlockReader = Callable[[int, int, int, int, int, int, int, int], np.ndarray]


@dataclass
class ImageInput:
    """An image the writer can read block by block.

    Example
    -------
    >>> inp = ImageInput((1, 1, 1, 64, 64), np.dtype(np.uint8), header,
    ...                  lambda t, c, z0, z1, y0, y1, x0, x1:
    ...                      np.zeros((z1 - z0, y1 - y0, x1 - x0), np.uint8))  # doctest: +SKIP
    """

    shape: tuple[int, int, int, int, int]
    dtype: np.dtype[Any]
    header: ImageHeader
    read_block: BlockReader
    parent_id: str | None = None
    chunk_hint: tuple[int, int, int] | None = None  # the source's own ZYX chunking


def source_input(source: LazySource) -> ImageInput:
    """A block reader over ``source`` (streams chunk by chunk through a lazy plan).

    Headers are immutable: the writer renames an image by replacing the
    input's header, never the source's.
    """
    plan = LazyImage(source)

    def read_block(t: int, c: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return plan.select(t=[t], c=[c], z=slice(z0, z1), y=(y0, y1), x=(x0, x1)).execute()[0, 0]

    return ImageInput(source.shape, source.dtype, source.header(), read_block, chunk_hint=source.chunk_shape())
