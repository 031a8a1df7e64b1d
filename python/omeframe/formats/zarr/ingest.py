"""Ingest OME-Zarr 0.4 / 0.5 images into OME-Arrow records or datasets.

``from_ome_zarr`` keeps ome-arrow's signature (``zarr_path, image_id, name,
image_type, channel_names, acquisition_datetime, clamp_to_uint16``) and adds
streaming ingest: with ``out=`` the image is written chunk by chunk into a
dataset, with every pyramid level (``levels="all"``) and label image
(``labels=True``) it has.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

__all__ = ["from_ome_zarr"]


def from_ome_zarr(
    zarr_path: str | os.PathLike[str] | Any,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = False,
    *,
    level: int = 0,
    image_path: str | None = None,
    out: str | os.PathLike[str] | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    mode: Literal["create", "append", "overwrite"] = "create",
    levels: Literal["all", "first"] | int | Sequence[int] = "first",
    labels: bool = False,
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = "zstd",
    compression_level: int | None = None,
    progress: bool | None = None,
) -> pa.StructScalar | Any:
    """Read an OME-Zarr image (0.4 on zarr v2, 0.5 on zarr v3) lazily, chunk by chunk.

    Parameters
    ----------
    zarr_path
        The image group's directory (e.g. ``"image.ome.zarr"``) or a ``zarr.Group``.
    image_id, name
        Default: the directory stem and the directory name (as ome-arrow).
    image_type
        Default: ``"label"`` for label images, else none.
    channel_names
        Override the names from ``omero`` (one per channel).
    acquisition_datetime
        Stored in the record (default: now).
    clamp_to_uint16
        Convert pixels to uint16 (records only). Default: keep the native dtype.
    level
        Resolution level to read (0 = full resolution).
    image_path
        Sub-group holding the image (e.g. ``"0"`` of a bioformats2raw container).
    out, format, mode
        ``None`` returns one OME-Arrow record (the image read in full; for small
        images). A directory writes a dataset (Parquet or Vortex) streaming
        chunk by chunk, never holding the image in memory.
    levels
        Pyramid levels written to the dataset: ``"first"``, ``"all"``, a count
        or level indices.
    labels
        Also write the label images of ``labels/`` (``image_type="label"``,
        ``parent_id`` = this image's id).
    chunk_shape
        ``(Z, Y, X)`` chunk shape of the result (default: the zarr chunks).
    compression, compression_level
        Per-chunk codec of the result.
    progress
        Progress bar for dataset writes (default: for more than 64 chunks).

    Returns
    -------
    pyarrow.StructScalar or omeframe.Dataset
    """
    from omeframe.formats.record.arrays import DEFAULT_COMPRESSION_LEVEL
    from omeframe.formats.zarr.source import open_ome_zarr_source
    from omeframe.formats.dataset.ingest import ingest_source

    if isinstance(zarr_path, (str, os.PathLike)) and not Path(zarr_path).exists():
        raise FileNotFoundError(f"no such OME-Zarr store: {str(zarr_path)!r}")
    source = open_ome_zarr_source(zarr_path, level=level, image_path=image_path)
    return ingest_source(
        source,
        out=out,
        format=format,
        mode=mode,
        levels=levels,
        labels=labels,
        image_id=image_id,
        name=name,
        image_type=image_type,
        channel_names=channel_names,
        acquisition_datetime=acquisition_datetime,
        clamp_to_uint16=clamp_to_uint16,
        chunk_shape=chunk_shape,
        compression=compression,
        compression_level=DEFAULT_COMPRESSION_LEVEL if compression_level is None else compression_level,
        progress=progress,
    )
