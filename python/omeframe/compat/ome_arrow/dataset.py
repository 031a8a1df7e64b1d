"""Typed-chunk dataset folders (``ome_arrow.dataset``): the writer and a reader with ome-arrow's API.

:func:`write_ome_arrow_dataset` and :func:`choose_chunking` are omeframe's
(:mod:`omeframe.formats.ome_arrow_dataset.writer`); :class:`OMEArrowDataset`
reads through :class:`~omeframe.formats.ome_arrow_dataset.source.OMEArrowDatasetSource`,
decoding only the chunks a read touches.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from omeframe.engine.lazy import LazyImage
from omeframe.formats.ome_arrow_dataset.source import (
    CHUNKS,
    IMAGES,
    INDEX,
    OMEArrowDatasetSource,
)
from omeframe.formats.ome_arrow_dataset.writer import (
    AccessPattern,
    ChunkChoice,
    Layout,
    choose_chunking,
)
from omeframe.formats.ome_arrow_dataset.writer import write_ome_arrow_dataset as _write
from omeframe.registry import open_source

from .meta import OME_ARROW_TAG_TYPE, OME_ARROW_TAG_VERSION

__all__ = [
    "OME_ARROW_TAG_TYPE",
    "OME_ARROW_TAG_VERSION",
    "AccessPattern",
    "ArrayReturn",
    "ChunkChoice",
    "Layout",
    "OMEArrowDataset",
    "OMEArrowPixels",
    "choose_chunking",
    "write_ome_arrow_dataset",
]

ArrayReturn = Literal["numpy", "torch", "jax"]
Index = int | slice | None


def _as_source(image: Any) -> Any:
    """ome-arrow's inputs as sources: arrays by rank (YX, ZYX, TZYX, TCZYX), anything else as scanned."""
    if isinstance(image, np.ndarray):
        axes = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TCZYX"}.get(image.ndim)
        if axes is None:
            raise ValueError(f"NumPy image inputs must be 2D, 3D, 4D, or 5D (YX, ZYX, TZYX, TCZYX), got {image.ndim}-D")
        return open_source(image, dim_order=axes)
    return open_source(image)


def write_ome_arrow_dataset(
    images: Any,
    output_path: str | os.PathLike[str],
    *,
    layout: Layout = "auto",
    access_pattern: AccessPattern = "balanced",
    target_chunk_mb: float = 4.0,
    chunk_shape: Any = None,
    compression: str | None = "zstd",
    build_physical_index: bool = True,
    chunk_rows_per_row_group: int = 1,
    pixel_dtype: Any = None,
    clamp: bool = True,
) -> ChunkChoice:
    """Write numpy arrays, records or ``OMEArrow`` images as a typed-chunk dataset folder.

    See :func:`omeframe.formats.ome_arrow_dataset.writer.write_ome_arrow_dataset`;
    arrays are read by rank as ome-arrow does (2-D ``YX``, 3-D ``ZYX``,
    4-D ``TZYX``, 5-D ``TCZYX``).
    """
    if len(images) == 0:
        raise ValueError("images must contain at least one image")
    return _write(
        [_as_source(image) for image in images], output_path, layout=layout, access_pattern=access_pattern,
        target_chunk_mb=target_chunk_mb, chunk_shape=chunk_shape, compression=compression,
        build_physical_index=build_physical_index, chunk_rows_per_row_group=chunk_rows_per_row_group,
        pixel_dtype=pixel_dtype, clamp=clamp,
    )


def _convert(arr: np.ndarray, return_type: str) -> Any:
    if return_type == "numpy":
        return arr
    if return_type == "torch":
        import torch  # lazy: torch

        return torch.from_numpy(np.ascontiguousarray(arr))
    if return_type == "jax":
        import jax.numpy as jnp  # lazy: jax

        return jnp.asarray(arr)
    raise ValueError(f"return_type must be 'numpy', 'torch' or 'jax', got {return_type!r}")


def _span(sel: Index, size: int) -> slice:
    """An int or slice as a step-1 slice inside ``[0, size)``."""
    if sel is None:
        return slice(0, size)
    if isinstance(sel, slice):
        start, stop, step = sel.indices(size)
        if step != 1:
            raise ValueError(f"dataset reads take contiguous slices (step 1), got {sel!r}")
        return slice(start, max(start, stop))
    i = int(sel)
    if not 0 <= i < size:
        raise IndexError(f"index {i} is outside an axis of size {size}")
    return slice(i, i + 1)


class OMEArrowDataset:
    """A typed-chunk dataset folder written by ``write_ome_arrow_dataset`` (omeframe's or ome-arrow's).

    Example
    -------
    >>> import numpy as np, tempfile, os
    >>> d = os.path.join(tempfile.mkdtemp(), "ds")
    >>> _ = write_ome_arrow_dataset([np.arange(12, dtype="uint16").reshape(3, 4)], d)
    >>> OMEArrowDataset(d).read_plane().shape
    (3, 4)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._sources: dict[str, OMEArrowDatasetSource] = {}
        first = OMEArrowDatasetSource(self.path, image_id=self._first_id())
        self._sources[first.image_id] = first
        self._ids = list(first.image_ids)
        self.images = pq.read_table(self.path / IMAGES, page_checksum_verification=True)
        self.index: pa.Table | None = (
            pq.read_table(self.path / INDEX, page_checksum_verification=True) if (self.path / INDEX).exists() else None
        )
        self.pixels = OMEArrowPixels(self)

    def _first_id(self) -> str:
        if not (self.path / IMAGES).exists():
            raise FileNotFoundError(f"no ome-arrow dataset at {str(self.path)!r} (missing {IMAGES})")
        ids = pq.read_table(self.path / IMAGES, columns=["image_id"], page_checksum_verification=True)
        ids = ids["image_id"].to_pylist()
        if not ids:
            raise ValueError(f"ome-arrow dataset {str(self.path)!r} holds no images")
        return str(ids[0])

    @property
    def image_ids(self) -> list[str]:
        """The image ids, in table order."""
        return list(self._ids)

    def _source(self, image_id: str | None) -> OMEArrowDatasetSource:
        key = self._ids[0] if image_id is None else str(image_id)
        if key not in self._sources:
            self._sources[key] = OMEArrowDatasetSource(self.path, image_id=key)
        return self._sources[key]

    def image_metadata(self, image_id: str) -> dict[str, Any]:
        """The image's row of ``images.parquet`` as a dict."""
        return dict(self._source(image_id).row)

    def _region(self, image_id: str | None, t: Index, c: Index, z: Index, y: Index, x: Index) -> np.ndarray:
        src = self._source(image_id)
        st, sc, sz, sy, sx = src.shape
        ys, xs = _span(y, sy), _span(x, sx)
        plan = LazyImage(src).select(
            t=_span(t, st), c=_span(c, sc), z=_span(z, sz), y=(ys.start, ys.stop), x=(xs.start, xs.stop)
        )
        return plan.execute()

    def read_image(self, image_id: str | None = None, *, return_type: ArrayReturn = "numpy") -> Any:
        """The whole image as a TCZYX array in its stored dtype."""
        return _convert(self._region(image_id, None, None, None, None, None), return_type)

    def read_many(self, image_ids: Iterable[str], *, return_type: ArrayReturn = "numpy") -> list[Any]:
        """Several whole images."""
        return [self.read_image(i, return_type=return_type) for i in image_ids]

    def read_channel(self, image_id: str | None = None, channel: int = 0, *, return_type: ArrayReturn = "numpy") -> Any:
        """One channel as a TZYX array."""
        return _convert(self._region(image_id, None, channel, None, None, None)[:, 0], return_type)

    def read_plane(
        self, image_id: str | None = None, *, t: int = 0, c: int = 0, z: int = 0, return_type: ArrayReturn = "numpy"
    ) -> Any:
        """One YX plane."""
        return _convert(self._region(image_id, t, c, z, None, None)[0, 0, 0], return_type)

    def read_region(
        self,
        image_id: str | None = None,
        *,
        y: slice,
        x: slice,
        t: Index = None,
        c: Index = None,
        z: Index = None,
        return_type: ArrayReturn = "numpy",
    ) -> Any:
        """A TCZYX crop (ints keep their axis with size 1); reads only the chunks it touches."""
        return _convert(self._region(image_id, t, c, z, y, x), return_type)

    def read_chunk_rows(
        self,
        image_id: str | None = None,
        *,
        y: slice | None = None,
        x: slice | None = None,
        t: Index = None,
        c: Index = None,
        z: Index = None,
    ) -> pa.Table:
        """The raw ``chunks.parquet`` rows (``pixel_bytes`` undecoded) of the chunks a region touches."""
        src = self._source(image_id)
        spans = [_span(s, n) for s, n in zip((t, c, z, y, x), src.shape, strict=True)]
        expr = pc.field("image_id") == src.image_id
        for axis, span in zip("tczyx", spans, strict=True):
            expr &= (pc.field(axis) < span.stop) & ((pc.field(axis) + pc.field(f"shape_{axis}")) > span.start)
        return pq.read_table(self.path / CHUNKS, filters=expr, page_checksum_verification=True)


class OMEArrowPixels:
    """Pixel reads of an :class:`OMEArrowDataset` by image id (numpy arrays)."""

    def __init__(self, dataset: OMEArrowDataset) -> None:
        self._dataset = dataset

    def read_image(self, image_id: str) -> np.ndarray:
        """The whole image (TCZYX)."""
        return np.asarray(self._dataset.read_image(image_id))

    def read_many(self, image_ids: Iterable[str]) -> list[np.ndarray]:
        """Several whole images."""
        return [self.read_image(i) for i in image_ids]

    def read_channel(self, image_id: str, channel: int) -> np.ndarray:
        """One channel (TZYX)."""
        return np.asarray(self._dataset.read_channel(image_id, channel))

    def read_plane(self, image_id: str, *, t: int = 0, c: int = 0, z: int = 0) -> np.ndarray:
        """One YX plane."""
        return np.asarray(self._dataset.read_plane(image_id, t=t, c=c, z=z))

    def read_region(
        self, image_id: str, *, y: slice, x: slice, t: Index = None, c: Index = None, z: Index = None
    ) -> np.ndarray:
        """A TCZYX crop."""
        return np.asarray(self._dataset.read_region(image_id, y=y, x=x, t=t, c=c, z=z))

    def read_chunk_rows(
        self, image_id: str, *, y: slice | None = None, x: slice | None = None, t: Index = None,
        c: Index = None, z: Index = None,
    ) -> pa.Table:
        """The raw chunk rows a region touches."""
        return self._dataset.read_chunk_rows(image_id, y=y, x=x, t=t, c=c, z=z)
