"""Normalise what users hand to the dataset writer into block readers.

An :class:`ImageInput` knows an image's shape, dtype and metadata and can read
any ``(t, c, z0:z1, y0:y1, x0:x1)`` block, so the writer streams chunk by
chunk and never needs the whole image in memory (unless the caller already
holds it, as with a numpy array).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from omeframe.formats.record.decode import read_region
from omeframe.model.header import ImageHeader, default_channels
from omeframe.formats.record.arrays import _check_array
from omeframe.model.dims import default_dim_order, to_tczyx
from omeframe.model.record import RecordView

__all__ = ["ImageInput", "SupportsImageInput", "as_image_input", "header_from_record"]

BlockReader = Callable[[int, int, int, int, int, int, int, int], np.ndarray]


@dataclass
class ImageInput:
    """An image the writer can read block by block."""

    shape: tuple[int, int, int, int, int]
    dtype: np.dtype[Any]
    header: ImageHeader
    read_block: BlockReader  # (t, c, z0, z1, y0, y1, x0, x1) -> (dz, dy, dx)
    parent_id: str | None = None
    chunk_hint: tuple[int, int, int] | None = None  # the source's own ZYX chunking


@runtime_checkable
class SupportsImageInput(Protocol):
    """Anything with an ``image_input()`` method (sources, lazy plans) can be written."""

    def image_input(self) -> ImageInput: ...


def header_from_record(view: RecordView) -> ImageHeader:
    """The :class:`ImageHeader` of an existing record."""
    return ImageHeader.from_meta(
        view.meta,
        image_id=view.header("id"),
        name=view.header("name"),
        image_type=view.header("image_type"),
        acquisition_datetime=view.header("acquisition_datetime"),
        type_=view.header("type"),
        version=view.header("version"),
    )


def as_image_input(
    obj: Any,
    *,
    dim_order: str | None = None,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    physical_size: tuple[float, float, float] | None = None,
    physical_size_unit: str = "µm",
) -> ImageInput:
    """Wrap a numpy array, a record, an ``OMEArrow`` or a source/plan as an ImageInput."""
    if isinstance(obj, ImageInput):
        inp = obj
    elif isinstance(obj, SupportsImageInput):
        inp = obj.image_input()
    elif isinstance(obj, np.ndarray):
        arr = _check_array(obj)
        view = to_tczyx(arr, dim_order or default_dim_order(arr.ndim))
        if view.dtype.byteorder == ">":
            view = view.astype(view.dtype.newbyteorder("="))
        pz, py, px = physical_size or (1.0, 1.0, 1.0)
        header = ImageHeader(
            image_id="unnamed",
            name="unknown",
            image_type=None,
            acquisition_datetime=None,
            channels=default_channels(channel_names, view.shape[1]),
            physical_size_x=px,
            physical_size_y=py,
            physical_size_z=pz,
            physical_size_x_unit=physical_size_unit,
            physical_size_y_unit=physical_size_unit,
            physical_size_z_unit=physical_size_unit,
        )

        def read_array(t: int, c: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            return view[t, c, z0:z1, y0:y1, x0:x1]

        inp = ImageInput(tuple(int(s) for s in view.shape), view.dtype, header, read_array)  # type: ignore[arg-type]
    elif isinstance(obj, (pa.StructScalar, pa.StructArray, dict)) or hasattr(obj, "_record_view"):
        rv = obj._record_view() if hasattr(obj, "_record_view") else RecordView(obj)
        if rv is None:  # a lazy OMEArrow without image_input support
            raise TypeError("this lazy image cannot be written; collect() it first")

        def read_record(t: int, c: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            return read_region(rv, t=[t], c=[c], z=range(z0, z1), y=(y0, y1), x=(x0, x1))[0, 0]

        grid = rv.chunk_grid or {}
        hint = None
        if grid:
            hint = (int(grid.get("chunk_z") or 1), int(grid.get("chunk_y") or 512), int(grid.get("chunk_x") or 512))
        inp = ImageInput(rv.shape, rv.dtype, header_from_record(rv), read_record, chunk_hint=hint)
    else:
        raise TypeError(
            "cannot write an image from a "
            f"{type(obj).__name__}; pass a numpy array, an OME-Arrow record, an OMEArrow, "
            "or a source/plan with an image_input() method"
        )
    h = inp.header
    if image_id is not None:
        h.image_id = str(image_id)
    if name is not None:
        h.name = str(name)
    if image_type is not None:
        h.image_type = image_type
    if channel_names is not None:
        if len(channel_names) != inp.shape[1]:
            raise ValueError(
                f"channel_names has {len(channel_names)} names for {inp.shape[1]} channels"
            )
        for ch, n in zip(h.channels, channel_names):
            ch["name"] = str(n)
    return inp
