"""Ingest any lazy source into a record (small images) or a dataset (large ones).

This is the common tail of ``from_tiff``, ``from_ome_zarr``,
``from_stack_pattern_path`` and the loaders: the file-specific code only opens
a :class:`~omeframe.engine.source.LazySource`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import HeaderOverride, LazySource
from omeframe.model.header import default_channels
from omeframe.formats.record.builder import RecordBuilder
from omeframe.formats.record.arrays import (
    DEFAULT_COMPRESSION,
    DEFAULT_COMPRESSION_LEVEL,
    clamp_u16,
)

__all__ = ["ingest_source", "apply_overrides"]


def apply_overrides(
    source: LazySource,
    *,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
) -> Any:
    """The source's header with the caller's overrides applied."""
    h = source.header()
    changes: dict[str, Any] = {}
    if image_id is not None:
        changes["image_id"] = str(image_id)
    if name is not None:
        changes["name"] = str(name)
    if image_type is not None:
        changes["image_type"] = image_type
    if acquisition_datetime is not None:
        changes["acquisition_datetime"] = acquisition_datetime
    chans = [dict(c) for c in (h.channels or default_channels(None, source.shape[1]))]
    if channel_names is not None:
        if len(channel_names) != source.shape[1]:
            raise ValueError(
                f"channel_names has {len(channel_names)} names but the image has {source.shape[1]} channels"
            )
        for ch, n in zip(chans, channel_names):
            ch["name"] = str(n)
    changes["channels"] = chans
    return replace(h, **changes)


def ingest_source(
    source: LazySource,
    *,
    out: str | os.PathLike[str] | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    mode: Literal["create", "append", "overwrite"] = "create",
    levels: Literal["all", "first"] | int | Sequence[int] = "first",
    labels: bool = False,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = False,
    chunk_shape: tuple[int, int, int] | None = None,
    chunk_encoding: Literal["bytes", "list"] = "bytes",
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    progress: bool | None = None,
) -> pa.StructScalar | Any:
    """Read ``source`` into a record (``out=None``) or stream it into a dataset at ``out``.

    Parameters
    ----------
    levels
        Pyramid levels to ingest into a dataset: ``"first"`` (full resolution
        only), ``"all"``, a count, or explicit level indices.
    labels
        Also ingest the source's label images (as images with
        ``image_type="label"`` and ``parent_id`` set).
    chunk_shape
        ``(Z, Y, X)`` chunk shape; default: the source's own chunking, else (1, 512, 512).

    Returns
    -------
    pyarrow.StructScalar or omeframe.Dataset
        The record (level 0, read in full) or the dataset written.
    """
    header = apply_overrides(
        source, image_id=image_id, name=name, image_type=image_type,
        channel_names=channel_names, acquisition_datetime=acquisition_datetime,
    )
    cshape = chunk_shape or source.chunk_shape() or (1, 512, 512)
    if out is None:
        pixels = LazyImage(source).execute()
        if clamp_to_uint16:
            pixels = clamp_u16(pixels)
        builder = RecordBuilder(
            chunk_encoding=chunk_encoding,
            compression=compression if chunk_encoding == "bytes" else None,
            compression_level=compression_level if chunk_encoding == "bytes" else None,
            chunk_shape=cshape,
        )
        builder.add(pixels, header)
        return builder.build()[0]
    if clamp_to_uint16 and source.dtype != np.uint16:
        raise ValueError("clamp_to_uint16 applies to records; datasets keep the native dtype")
    from omeframe.formats.dataset.writer import write_items

    all_levels = source.levels()
    if levels == "first":
        picked = [0]
    elif levels == "all":
        picked = list(range(len(all_levels)))
    elif isinstance(levels, int):
        picked = list(range(min(levels, len(all_levels))))
    else:
        picked = [int(v) for v in levels]
    bad = [v for v in picked if not 0 <= v < len(all_levels)]
    if bad:
        raise ValueError(f"level(s) {bad} do not exist; the source has {len(all_levels)} levels")
    items: list[tuple[Any, str, int, str | None]] = []
    iid = header.image_id
    for lv in picked:
        src = all_levels[lv]
        h = replace(src.header(), image_id=iid, name=header.name, image_type=header.image_type,
                    channels=header.channels, acquisition_datetime=header.acquisition_datetime)
        items.append((HeaderOverride(src, h), iid, lv, None))
    if labels:
        for lname, lsrc in source.labels().items():
            lid = f"{iid}/labels/{lname}"
            lh = replace(lsrc.header(), image_id=lid, name=lname, image_type="label")
            label_levels = lsrc.levels()
            for lv in picked:
                if lv < len(label_levels):
                    items.append((HeaderOverride(label_levels[lv], replace(lh, image_id=lid)), lid, lv, iid))
    return write_items(
        items, out, format=format, mode=mode, chunk_shape=cshape, compression=compression,
        compression_level=compression_level, progress=progress,
    )
