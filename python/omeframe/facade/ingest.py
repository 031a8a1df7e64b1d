"""Files and sources into records or datasets: ``from_tiff``, ``from_ome_zarr``,
``from_stack_pattern_path`` and ``ingest_source``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, overload

import pyarrow as pa

from omeframe.engine.source import HeaderOptions, LazySource
from omeframe.facade.dataset import Dataset
from omeframe.formats.dataset.ingest import Levels, check_clamp, check_out_options, ingest, to_record
from omeframe.formats.dataset.writer import (
    WriteOptions,
)
from omeframe.formats.record.arrays import DEFAULT_COMPRESSION, DEFAULT_COMPRESSION_LEVEL
from omeframe.formats.stack.source import MissingPolicy, StackSource
from omeframe.formats.tiff.source import open_tiff_source
from omeframe.formats.zarr import ZARR_SUFFIX
from omeframe.formats.zarr.source import open_ome_zarr_source, open_remote_zarr
from omeframe.storage.url import check_storage_options, is_remote

Out = str | os.PathLike[str]


@overload
def ingest_source(
    source: LazySource, *, out: None = None, format: Literal["parquet", "vortex"] | None = ...,
    mode: Literal["create", "append", "overwrite"] = ..., levels: Levels = ..., labels: bool = ...,
    image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    chunk_encoding: Literal["bytes", "list"] = ..., compression: str | None = ...,
    compression_level: int | None = ..., progress: bool | None = ...,
    storage_options: Mapping[str, Any] | None = ...,
) -> pa.StructScalar: ...
@overload
def ingest_source(
    source: LazySource, *, out: Out, format: Literal["parquet", "vortex"] | None = ...,
    mode: Literal["create", "append", "overwrite"] = ..., levels: Levels = ..., labels: bool = ...,
    image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    chunk_encoding: Literal["bytes", "list"] = ..., compression: str | None = ...,
    compression_level: int | None = ..., progress: bool | None = ...,
    storage_options: Mapping[str, Any] | None = ...,
) -> Dataset: ...
@overload
def ingest_source(
    source: LazySource, *, out: Out | None = ..., format: Literal["parquet", "vortex"] | None = ...,
    mode: Literal["create", "append", "overwrite"] = ..., levels: Levels = ..., labels: bool = ...,
    image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    chunk_encoding: Literal["bytes", "list"] = ..., compression: str | None = ...,
    compression_level: int | None = ..., progress: bool | None = ...,
    storage_options: Mapping[str, Any] | None = ...,
) -> pa.StructScalar | Dataset: ...
def ingest_source(
    source: LazySource,
    *,
    out: Out | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    mode: Literal["create", "append", "overwrite"] = "create",
    levels: Levels = "first",
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
    storage_options: Mapping[str, Any] | None = None,
) -> pa.StructScalar | Dataset:
    """Read ``source`` into a record (``out=None``) or stream it into a dataset at ``out``.

    Parameters
    ----------
    levels
        Pyramid levels to ingest into a dataset: ``"first"`` (full resolution
        only), ``"all"``, a count, or explicit level indices.
    labels
        Also ingest the source's label images (as images with
        ``image_type="label"`` and ``parent_id`` set).
    image_id, name, image_type, channel_names, acquisition_datetime
        Header overrides (:class:`~omeframe.engine.source.HeaderOptions`).
    clamp_to_uint16, chunk_encoding
        Records only: saturate into uint16, and ``"bytes"`` or ``"list"`` chunks.
    chunk_shape
        ``(Z, Y, X)`` chunk shape; default: the source's own chunking, else (1, 512, 512).
    format, mode, compression, compression_level, progress
        See :class:`~omeframe.formats.dataset.writer.WriteOptions`.

    storage_options
        Options of the fsspec filesystem when the input or ``out`` is a URL
        (``s3://`` ..., see docs/howto/object-storage.md).

    Returns
    -------
    pyarrow.StructScalar or Dataset
        The record (level 0, read in full) or the dataset written.

    Example
    -------
    >>> ds = omeframe.ingest_source(omeframe.registry.open_source("big.ome.tif"), out="ds/")  # doctest: +SKIP
    """
    if not isinstance(source, LazySource):
        raise TypeError(
            f"ingest_source reads a LazySource, got {type(source).__name__}; open it with "
            "omeframe.registry.open_source(...), or write arrays and records with omeframe.write_dataset"
        )
    check_storage_options(storage_options, out)
    check_out_options(out, {
        "format": (format, None), "mode": (mode, "create"), "levels": (levels, "first"), "labels": (labels, False),
        "progress": (progress, None), "chunk_encoding": (chunk_encoding, "bytes"),
    })
    header = HeaderOptions(
        image_id=image_id, name=name, image_type=image_type,
        channel_names=channel_names, acquisition_datetime=acquisition_datetime,
    )
    write = WriteOptions(
        format=format, mode=mode, chunk_shape=chunk_shape, compression=compression,
        compression_level=compression_level, progress=progress,
        storage_options=dict(storage_options) if storage_options else None,
    )
    if out is None:
        return to_record(source, header=header, write=write, clamp_to_uint16=clamp_to_uint16,
                         chunk_encoding=chunk_encoding)
    check_clamp(source, clamp_to_uint16)
    ingest(source, out, header=header, write=write, levels=levels, labels=labels)
    return Dataset(out, storage_options=storage_options)


def _remote_only(storage_options: Mapping[str, Any] | None, location: object) -> Mapping[str, Any] | None:
    """``storage_options`` for ``location`` when it is a URL, else ``None`` (they were given for another one)."""
    return storage_options if isinstance(location, (str, os.PathLike)) and is_remote(location) else None


@overload
def from_tiff(
    tiff_path: Out, image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., *, series: int = ..., out: None = None,
    format: Literal["parquet", "vortex"] | None = ..., levels: Levels = ...,
    chunk_shape: tuple[int, int, int] | None = ..., compression: str | None = ...,
    compression_level: int | None = ..., mode: Literal["create", "append", "overwrite"] = ...,
    progress: bool | None = ...,
    storage_options: Mapping[str, Any] | None = ...,
) -> pa.StructScalar: ...
@overload
def from_tiff(
    tiff_path: Out, image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., *, series: int = ..., out: Out,
    format: Literal["parquet", "vortex"] | None = ..., levels: Levels = ...,
    chunk_shape: tuple[int, int, int] | None = ..., compression: str | None = ...,
    compression_level: int | None = ..., mode: Literal["create", "append", "overwrite"] = ...,
    progress: bool | None = ...,
    storage_options: Mapping[str, Any] | None = ...,
) -> Dataset: ...
def from_tiff(
    tiff_path: Out,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = False,
    *,
    series: int = 0,
    out: Out | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    levels: Levels = "first",
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    mode: Literal["create", "append", "overwrite"] = "create",
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.StructScalar | Dataset:
    """Read a TIFF / OME-TIFF series into an OME-Arrow record, or stream it into a dataset.

    Without ``out`` it returns one OME-Arrow record (the whole image is read;
    for small images); with ``out`` it streams the image tile by tile into a
    chunked dataset (for large ones; ``levels="all"`` also stores the file's
    pyramid levels).

    Parameters
    ----------
    tiff_path
        The file.
    image_id, name
        Defaults: the file stem (``_s<series>`` appended for series > 0 of a
        multi-series file) and the OME image name or file name.
    image_type, channel_names, acquisition_datetime
        Overrides of the file's metadata (channel names and colours,
        wavelengths, physical sizes and acquisition date come from OME-XML,
        ImageJ metadata or resolution tags when present).
    clamp_to_uint16
        Records only: saturate pixels into uint16 (native dtype otherwise).
    series
        The series (scene) to read.
    out, format, mode
        Write a chunked dataset at ``out`` (Parquet or Vortex) instead of
        returning a record; ``mode`` as in :func:`omeframe.write_dataset`.
    levels
        Pyramid levels to store in the dataset: ``"first"``, ``"all"``, a
        count or level indices.
    chunk_shape
        ``(Z, Y, X)`` chunks; default the file's tiles (strips: 512x512).
    compression, compression_level
        Per-chunk codec.
    progress
        Show a progress bar while writing a dataset.

    storage_options
        Options of the fsspec filesystem when the input or ``out`` is a URL
        (``s3://`` ..., see docs/howto/object-storage.md).

    Returns
    -------
    pyarrow.StructScalar or Dataset

    Example
    -------
    >>> rec = omeframe.from_tiff("cells.ome.tif")                         # doctest: +SKIP
    >>> ds = omeframe.from_tiff("slide.ome.tif", out="ds/", levels="all")  # doctest: +SKIP
    """
    check_storage_options(storage_options, tiff_path, out)
    with open_tiff_source(tiff_path, series=series, storage_options=_remote_only(storage_options, tiff_path)) as src:
        return ingest_source(
            src, out=out, format=format, mode=mode, levels=levels, image_id=image_id, name=name,
            image_type=image_type, channel_names=channel_names, acquisition_datetime=acquisition_datetime,
            clamp_to_uint16=clamp_to_uint16, chunk_shape=chunk_shape, compression=compression,
            compression_level=compression_level, progress=progress,
            storage_options=_remote_only(storage_options, out),
        )


@overload
def from_ome_zarr(
    zarr_path: Out | Any, image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., *, level: int = ..., image_path: str | None = ..., out: None = None,
    format: Literal["parquet", "vortex"] | None = ..., mode: Literal["create", "append", "overwrite"] = ...,
    levels: Levels = ..., labels: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    compression: str | None = ..., compression_level: int | None = ..., progress: bool | None = ...,
    storage_options: Mapping[str, Any] | None = ...,
) -> pa.StructScalar: ...
@overload
def from_ome_zarr(
    zarr_path: Out | Any, image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., *, level: int = ..., image_path: str | None = ..., out: Out,
    format: Literal["parquet", "vortex"] | None = ..., mode: Literal["create", "append", "overwrite"] = ...,
    levels: Levels = ..., labels: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    compression: str | None = ..., compression_level: int | None = ..., progress: bool | None = ...,
    storage_options: Mapping[str, Any] | None = ...,
) -> Dataset: ...
def from_ome_zarr(
    zarr_path: Out | Any,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = False,
    *,
    level: int = 0,
    image_path: str | None = None,
    out: Out | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    mode: Literal["create", "append", "overwrite"] = "create",
    levels: Levels = "first",
    labels: bool = False,
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.StructScalar | Dataset:
    """Read an OME-Zarr image (0.4 on zarr v2, 0.5 on zarr v3) lazily, chunk by chunk.

    Keeps ome-arrow's signature (``zarr_path, image_id, name, image_type,
    channel_names, acquisition_datetime, clamp_to_uint16``) and adds streaming
    ingest: with ``out=`` the image is written chunk by chunk into a dataset,
    with every pyramid level (``levels="all"``) and label image
    (``labels=True``) it has.

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

    storage_options
        Options of the fsspec filesystem when the input or ``out`` is a URL
        (``s3://`` ..., see docs/howto/object-storage.md).

    Returns
    -------
    pyarrow.StructScalar or Dataset

    Example
    -------
    >>> rec = omeframe.from_ome_zarr("cells.ome.zarr")                          # doctest: +SKIP
    >>> ds = omeframe.from_ome_zarr("cells.ome.zarr", out="ds/", labels=True)   # doctest: +SKIP
    """
    check_storage_options(storage_options, zarr_path, out)
    if is_remote(zarr_path):
        url = os.fspath(zarr_path)
        stem = url.rstrip("/").rsplit("/", 1)[-1]
        source = open_ome_zarr_source(
            open_remote_zarr(url, storage_options), level=level, image_path=image_path,
            image_id=image_id or stem.removesuffix(ZARR_SUFFIX), name=name or stem,
        )
    else:
        if isinstance(zarr_path, (str, os.PathLike)) and not Path(zarr_path).exists():
            raise FileNotFoundError(f"no such OME-Zarr store: {str(zarr_path)!r}")
        source = open_ome_zarr_source(zarr_path, level=level, image_path=image_path)
    return ingest_source(
        source, out=out, format=format, mode=mode, levels=levels, labels=labels, image_id=image_id,
        name=name, image_type=image_type, channel_names=channel_names,
        acquisition_datetime=acquisition_datetime, clamp_to_uint16=clamp_to_uint16,
        chunk_shape=chunk_shape, compression=compression, compression_level=compression_level,
        progress=progress, storage_options=_remote_only(storage_options, out),
    )


@overload
def from_stack_pattern_path(
    pattern_path: Out, default_dim_for_unspecified: str = ..., map_series_to: str | None = ...,
    clamp_to_uint16: bool = ..., channel_names: Sequence[str] | None = ..., image_id: str | None = ...,
    name: str | None = ..., image_type: str | None = ..., *, out: None = None,
    format: Literal["parquet", "vortex"] | None = ..., chunk_shape: tuple[int, int, int] | None = ...,
    compression: str | None = ..., progress: bool | None = ..., missing: MissingPolicy = ...,
) -> pa.StructScalar: ...
@overload
def from_stack_pattern_path(
    pattern_path: Out, default_dim_for_unspecified: str = ..., map_series_to: str | None = ...,
    clamp_to_uint16: bool = ..., channel_names: Sequence[str] | None = ..., image_id: str | None = ...,
    name: str | None = ..., image_type: str | None = ..., *, out: Out,
    format: Literal["parquet", "vortex"] | None = ..., chunk_shape: tuple[int, int, int] | None = ...,
    compression: str | None = ..., progress: bool | None = ..., missing: MissingPolicy = ...,
) -> Dataset: ...
def from_stack_pattern_path(
    pattern_path: Out,
    default_dim_for_unspecified: str = "C",
    map_series_to: str | None = "T",
    clamp_to_uint16: bool = False,
    channel_names: Sequence[str] | None = None,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    *,
    out: Out | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = DEFAULT_COMPRESSION,
    progress: bool | None = None,
    missing: MissingPolicy = "error",
) -> pa.StructScalar | Dataset:
    """Build an OME-Arrow record (or stream a dataset) from a file pattern describing a stack.

    Parameters
    ----------
    pattern_path
        Path whose file name holds ``<...>`` tokens, e.g.
        ``"imgs/img_C<0-2>_Z<000-009>.tif"`` or ``"imgs/img_<DAPI,GFP>_t<1-3>.tif"``
        (ranges ``a-b``, steps ``a-b:step``, letter ranges, comma lists);
        without tokens, an exact file, a regular expression or a glob whose
        matches stack along Z. See :mod:`omeframe.formats.stack.source` for the rules.
    default_dim_for_unspecified
        Dimension (``"T"``, ``"C"``, ``"Z"``) of tokens with no dimension prefix.
    map_series_to
        Dimension series tokens (``s<..>``, ``series<..>``) map to; ``None``
        rejects them.
    clamp_to_uint16
        Clip and cast pixels to uint16 (off by default: the native dtype is
        kept; ome-arrow 0.1.0 defaults to ``True``). Records only.
    channel_names
        Channel names (default: from a non-numeric channel token, else ``C0..``).
    image_id, name, image_type
        Overrides (defaults: the pattern's stem, the pattern, unset).
    out, format
        Write a chunked dataset at ``out`` (streamed; files read as needed)
        instead of returning a record.
    chunk_shape, compression, progress
        Chunking (default (1, 512, 512)), per-chunk codec and progress bar.
    missing
        ``"error"`` (default): files the pattern names but the folder lacks
        raise ``FileNotFoundError`` listing them. ``"zero"``: they read as
        zero planes (ome-arrow's behaviour).

    Returns
    -------
    pyarrow.StructScalar or Dataset

    Example
    -------
    >>> rec = omeframe.from_stack_pattern_path("imgs/img_C<0-1>_Z<000-004>.tif")   # doctest: +SKIP
    """
    src = StackSource(
        pattern_path, default_dim_for_unspecified, map_series_to, missing=missing,
        channel_names=channel_names, image_id=image_id, name=name,
    )
    return ingest_source(
        src, out=out, format=format, image_type=image_type, clamp_to_uint16=clamp_to_uint16,
        chunk_shape=chunk_shape, compression=compression, progress=progress,
    )
