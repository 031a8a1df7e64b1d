"""Arrays and files from records (``ome_arrow.export``) with ome-arrow's defaults.

``to_numpy``, ``plane_from_chunks``, ``to_ome_tiff`` and ``to_ome_zarr``
default to ``dtype=numpy.uint16`` as in ome-arrow 0.1.0; the file writers
replace an existing file or store and return ``None``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import omeframe as _of

from .meta import OME_ARROW_TAG_TYPE, OME_ARROW_TAG_VERSION

__all__ = [
    "OME_ARROW_TAG_TYPE",
    "OME_ARROW_TAG_VERSION",
    "plane_from_chunks",
    "to_numpy",
    "to_ome_parquet",
    "to_ome_tiff",
    "to_ome_vortex",
    "to_ome_zarr",
]

to_ome_parquet = _of.to_ome_parquet
to_ome_vortex = _of.to_ome_vortex


def to_numpy(data: Any, dtype: Any = np.uint16, strict: bool = True, clamp: bool = False) -> np.ndarray:
    """The record's pixels as a TCZYX array of ``dtype`` (``uint16`` by default).

    Example
    -------
    >>> from omeframe.compat.ome_arrow.ingest import from_numpy
    >>> to_numpy(from_numpy(np.ones((1, 1, 1, 2, 2), "uint8"))).dtype
    dtype('uint16')
    """
    return _of.to_numpy(data, dtype=dtype, strict=strict, clamp=clamp)


def plane_from_chunks(
    data: Any, *, t: int, c: int, z: int, dtype: Any = np.uint16, strict: bool = True, clamp: bool = False
) -> np.ndarray:
    """One YX plane of the record as ``dtype`` (``uint16`` by default)."""
    return _of.plane_from_chunks(data, t=t, c=c, z=z, dtype=dtype, strict=strict, clamp=clamp)


def to_ome_tiff(
    data: Any,
    out_path: str,
    *,
    dtype: Any = np.uint16,
    clamp: bool = False,
    dim_order: str = "TCZYX",
    compression: str | None = "zlib",
    compression_level: int = 6,
    tile: tuple[int, int] | None = None,
    use_channel_colors: bool = False,
) -> None:
    """Write an OME-TIFF (``uint16`` by default), replacing an existing file."""
    _of.to_ome_tiff(
        data, out_path, dtype=dtype, clamp=clamp, dim_order=dim_order, compression=compression,
        compression_level=compression_level, tile=tile, use_channel_colors=use_channel_colors, overwrite=True,
    )


def to_ome_zarr(
    data: Any,
    out_path: str,
    *,
    dtype: Any = np.uint16,
    clamp: bool = False,
    dim_order: str = "TCZYX",
    multiscale_levels: int = 1,
    downscale_spatial_by: int = 2,
    zarr_format: int = 3,
    chunks: tuple[int, int, int, int, int] | None = None,
    shards: tuple[int, int, int, int, int] | None = None,
    compressor: str | None = "zstd",
    compressor_level: int = 3,
    image_name: str | None = None,
) -> None:
    """Write an OME-Zarr store (``uint16`` by default), replacing an existing store."""
    _of.to_ome_zarr(
        data, out_path, dtype=dtype, clamp=clamp, dim_order=dim_order, multiscale_levels=multiscale_levels,
        downscale_spatial_by=downscale_spatial_by, zarr_format=zarr_format, chunks=chunks, shards=shards,
        compressor=compressor, compressor_level=compressor_level, image_name=image_name, overwrite=True,
    )
