"""Building records from arrays and files (``ome_arrow.ingest``) with ome-arrow's defaults.

The defaults are ome-arrow 0.1.0's: ``clamp_to_uint16=True`` (pixels become
``uint16``), list-encoded chunks (``chunk_encoding="list"``) without chunk
compression, and ``dim_order="TCZYX"`` for numpy arrays. Files are read with
omeframe's own readers (tifffile, zarr), not BioIO, behind a small
BioIO-shaped :class:`BioImage` adapter that can be replaced.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import omeframe as _of
from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import HeaderOptions, HeaderOverride, LazySource
from omeframe.formats.dataset.ingest import to_record
from omeframe.formats.dataset.writer import WriteOptions
from omeframe.formats.record.arrays import to_ome_arrow as _to_ome_arrow
from omeframe.registry import open_source

from .meta import OME_ARROW_KNOWN_STRUCTS, OME_ARROW_TAG_TYPE, OME_ARROW_TAG_VERSION

__all__ = [
    "BioImage",
    "OME_ARROW_KNOWN_STRUCTS",
    "OME_ARROW_TAG_TYPE",
    "OME_ARROW_TAG_VERSION",
    "from_jax_array",
    "from_numpy",
    "from_ome_parquet",
    "from_ome_vortex",
    "from_ome_zarr",
    "from_stack_pattern_path",
    "from_tiff",
    "from_torch_array",
    "open_lazy_plane_source",
    "pq",
    "to_ome_arrow",
]

open_lazy_plane_source = _of.open_lazy_plane_source


def _warn_schema(array: pa.Array, strict_schema: bool) -> None:
    if not strict_schema and array.type not in OME_ARROW_KNOWN_STRUCTS:
        warnings.warn(
            "OME-Arrow column schema differs from OME_ARROW_STRUCT; the record is read as stored "
            "(its fields are mapped by name)",
            UserWarning,
            stacklevel=3,
        )


def from_ome_parquet(
    parquet_path: str | os.PathLike[str],
    *,
    column_name: str | None = "ome_arrow",
    row_index: int = 0,
    strict_schema: bool = False,
    return_array: bool = False,
) -> pa.StructScalar | tuple[pa.StructScalar, pa.StructArray]:
    """One record of a Parquet record table (warns when the struct is not a canonical one)."""
    scalar, array = _of.from_ome_parquet(
        parquet_path, column_name=column_name, row_index=row_index, strict_schema=strict_schema, return_array=True
    )
    _warn_schema(array, strict_schema)
    return (scalar, array) if return_array else scalar


def from_ome_vortex(
    vortex_path: str | os.PathLike[str],
    *,
    column_name: str | None = "ome_arrow",
    row_index: int = 0,
    strict_schema: bool = False,
    return_array: bool = False,
) -> pa.StructScalar | tuple[pa.StructScalar, pa.StructArray]:
    """One record of a Vortex record table (warns when the struct is not a canonical one)."""
    scalar, array = _of.from_ome_vortex(
        vortex_path, column_name=column_name, row_index=row_index, strict_schema=strict_schema, return_array=True
    )
    _warn_schema(array, strict_schema)
    return (scalar, array) if return_array else scalar

Encoding = Literal["list", "bytes"]


def to_ome_arrow(
    type_: str = OME_ARROW_TAG_TYPE,
    version: str = OME_ARROW_TAG_VERSION,
    image_id: str = "unnamed",
    name: str = "unknown",
    image_type: str | None = "image",
    acquisition_datetime: datetime | None = None,
    dimension_order: str = "XYZCT",
    dtype: str = "uint16",
    size_x: int = 1,
    size_y: int = 1,
    size_z: int = 1,
    size_c: int = 1,
    size_t: int = 1,
    physical_size_x: float = 1.0,
    physical_size_y: float = 1.0,
    physical_size_z: float = 1.0,
    physical_size_unit: str = "µm",
    channels: list[dict[str, Any]] | None = None,
    planes: list[dict[str, Any]] | None = None,
    chunks: list[dict[str, Any]] | None = None,
    chunk_shape: tuple[int, int, int] | None = (1, 512, 512),
    chunk_order: str = "ZYX",
    chunk_encoding: Encoding = "list",
    chunk_compression: str | None = None,
    chunk_compression_level: int | None = None,
    build_chunks: bool = True,
    masks: Any = None,
) -> pa.StructScalar:
    """Build a record from its fields (list-encoded chunks by default).

    Example
    -------
    >>> to_ome_arrow(size_x=2, size_y=1, planes=[{"t": 0, "c": 0, "z": 0, "pixels": [1, 2]}]).type.num_fields > 0
    True
    """
    return _to_ome_arrow(
        type_, version, image_id, name, image_type, acquisition_datetime, dimension_order, dtype,
        size_x, size_y, size_z, size_c, size_t, physical_size_x, physical_size_y, physical_size_z,
        physical_size_unit, channels, planes, chunks, chunk_shape, chunk_order, build_chunks, masks,
        chunk_encoding=chunk_encoding, compression=chunk_compression, compression_level=chunk_compression_level,
    )


def from_numpy(
    arr: np.ndarray,
    *,
    dim_order: str = "TCZYX",
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = True,
    chunk_shape: tuple[int, int, int] | None = (1, 512, 512),
    chunk_order: str = "ZYX",
    chunk_encoding: Encoding = "list",
    chunk_compression: str | None = None,
    chunk_compression_level: int | None = None,
    build_chunks: bool = True,
    physical_size_x: float = 1.0,
    physical_size_y: float = 1.0,
    physical_size_z: float = 1.0,
    physical_size_unit: str = "µm",
    dtype_meta: str | None = None,
) -> pa.StructScalar:
    """A record from a numpy array (axes ``dim_order``, right-aligned when the array has fewer).

    Example
    -------
    >>> from_numpy(np.zeros((2, 3), "float32"), dim_order="YX").type == OME_ARROW_KNOWN_STRUCTS[0]
    True
    """
    return _of.from_numpy(
        arr, dim_order=dim_order, image_id=image_id, name=name, image_type=image_type,
        channel_names=channel_names, acquisition_datetime=acquisition_datetime,
        clamp_to_uint16=clamp_to_uint16, chunk_shape=chunk_shape, chunk_order=chunk_order,
        chunk_encoding=chunk_encoding, compression=chunk_compression,
        compression_level=chunk_compression_level, build_chunks=build_chunks,
        physical_size_x=physical_size_x, physical_size_y=physical_size_y,
        physical_size_z=physical_size_z, physical_size_unit=physical_size_unit, dtype_meta=dtype_meta,
    )


def _array_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("clamp_to_uint16", True)
    kwargs.setdefault("chunk_encoding", "list")
    kwargs["compression"] = kwargs.pop("chunk_compression", None)
    kwargs["compression_level"] = kwargs.pop("chunk_compression_level", None)
    return kwargs


def from_torch_array(arr: Any, *, dim_order: str | None = None, **kwargs: Any) -> pa.StructScalar:
    """A record from a torch tensor (axes inferred from the rank unless ``dim_order``); see :func:`from_numpy`."""
    return _of.from_torch_array(arr, dim_order=dim_order, **_array_kwargs(kwargs))


def from_jax_array(arr: Any, *, dim_order: str | None = None, **kwargs: Any) -> pa.StructScalar:
    """A record from a JAX array (axes inferred from the rank unless ``dim_order``); see :func:`from_numpy`."""
    return _of.from_jax_array(arr, dim_order=dim_order, **_array_kwargs(kwargs))


class BioImage:
    """omeframe's reader behind the part of ``bioio.BioImage`` that file ingest uses.

    ``from_tiff`` and ``from_ome_zarr`` look this name up in this module when
    they are called, so code (and tests) that replace ``ingest.BioImage``
    with another object exposing ``data``, ``dims`` and
    ``physical_pixel_sizes`` (and optionally ``channel_names``), as BioIO's
    ``BioImage`` does, get that object's pixels ingested. This class itself
    opens the file with omeframe's readers (tifffile, zarr): the attributes
    below are read from the file's header, and ``data`` reads every pixel,
    while the ingest functions stream the chunks through :attr:`source`
    instead.

    Parameters
    ----------
    image
        Path of a TIFF file or an OME-Zarr store.

    Raises
    ------
    FileNotFoundError
        When nothing exists at ``image``.

    Example
    -------
    >>> img = BioImage(image="cells.ome.tiff")          # doctest: +SKIP
    >>> img.dims.C, img.physical_pixel_sizes.X, img.data.shape   # doctest: +SKIP
    (2, 0.65, (1, 2, 1, 512, 512))
    """

    def __init__(self, image: str | os.PathLike[str]) -> None:
        self.source = open_source(image)
        self._header = self.source.header()

    @property
    def dims(self) -> SimpleNamespace:
        """Axis sizes as attributes ``T``, ``C``, ``Z``, ``Y``, ``X``."""
        return SimpleNamespace(**dict(zip("TCZYX", self.source.shape, strict=True)))

    @property
    def physical_pixel_sizes(self) -> SimpleNamespace:
        """``X``, ``Y``, ``Z`` pixel sizes and the ``unit`` of X (``None`` where unknown)."""
        h = self._header
        return SimpleNamespace(
            X=h.physical_size_x, Y=h.physical_size_y, Z=h.physical_size_z, unit=h.physical_size_x_unit
        )

    @property
    def channel_names(self) -> list[str]:
        """The channel names from the file's metadata (``C<i>`` where a channel has none)."""
        return [c.name or f"C{i}" for i, c in enumerate(self._header.channels)]

    @property
    def data(self) -> np.ndarray:
        """All pixels as a TCZYX array in their stored dtype (reads the whole image)."""
        return LazyImage(self.source).execute()


_OmeframeImage = BioImage


def _file_record(
    path: str | os.PathLike[str],
    header: HeaderOptions,
    clamp_to_uint16: bool,
    chunk_encoding: Encoding,
    chunk_compression: str | None,
    chunk_compression_level: int | None,
) -> pa.StructScalar:
    # the module-level name is looked up at call time: replacing ``ingest.BioImage`` changes the reader
    img: Any = BioImage(image=path)
    if isinstance(img, _OmeframeImage):
        write = WriteOptions(compression=chunk_compression, compression_level=chunk_compression_level)
        return to_record(
            _unit_sizes(img.source), header=header, write=write, clamp_to_uint16=clamp_to_uint16,
            chunk_encoding=chunk_encoding,
        )
    return _record_from_image(img, header, clamp_to_uint16, chunk_encoding, chunk_compression, chunk_compression_level)


def _record_from_image(
    img: Any,
    header: HeaderOptions,
    clamp_to_uint16: bool,
    chunk_encoding: Encoding,
    chunk_compression: str | None,
    chunk_compression_level: int | None,
) -> pa.StructScalar:
    """A record from a BioIO-style image object (``data``, ``dims``, ``physical_pixel_sizes``)."""
    arr = np.asarray(img.data)
    dims = tuple(int(getattr(img.dims, a)) for a in "TCZYX")
    if arr.shape != dims:
        raise ValueError(
            f"the image's data has shape {arr.shape} but its dims say TCZYX={dims}; "
            "BioImage.data must be a TCZYX array"
        )
    pps = getattr(img, "physical_pixel_sizes", None)

    def size(axis: str) -> float:
        value = getattr(pps, axis, None) if pps is not None else None
        return float(value) if value else 1.0

    names = header.channel_names
    if names is None or len(names) != dims[1]:
        found = getattr(img, "channel_names", None)
        names = [str(n) for n in found] if found is not None and len(found) == dims[1] else None
    return from_numpy(
        arr, dim_order="TCZYX", image_id=header.image_id, name=header.name, image_type=header.image_type,
        channel_names=names, acquisition_datetime=header.acquisition_datetime,
        clamp_to_uint16=clamp_to_uint16, chunk_encoding=chunk_encoding, chunk_compression=chunk_compression,
        chunk_compression_level=chunk_compression_level, physical_size_x=size("X"), physical_size_y=size("Y"),
        physical_size_z=size("Z"), physical_size_unit=str(getattr(pps, "unit", None) or "µm"),
    )


def from_tiff(
    tiff_path: str | os.PathLike[str],
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = True,
    chunk_encoding: Encoding = "list",
    chunk_compression: str | None = None,
    chunk_compression_level: int | None = None,
) -> pa.StructScalar:
    """Read a (OME-)TIFF file into one record (``uint16`` and list chunks by default).

    The file is opened with this module's :class:`BioImage` (omeframe's TIFF reader).
    """
    head = HeaderOptions(
        image_id=image_id, name=name, image_type=image_type, channel_names=channel_names,
        acquisition_datetime=acquisition_datetime,
    )
    return _file_record(tiff_path, head, clamp_to_uint16, chunk_encoding, chunk_compression, chunk_compression_level)


def from_ome_zarr(
    zarr_path: str | os.PathLike[str],
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = True,
    chunk_encoding: Encoding = "list",
    chunk_compression: str | None = None,
    chunk_compression_level: int | None = None,
) -> pa.StructScalar:
    """Read an OME-Zarr image (level 0) into one record (``uint16`` and list chunks by default).

    The store is opened with this module's :class:`BioImage` (omeframe's OME-Zarr reader).
    """
    head = HeaderOptions(
        image_id=image_id, name=name, image_type=image_type, channel_names=channel_names,
        acquisition_datetime=acquisition_datetime,
    )
    return _file_record(zarr_path, head, clamp_to_uint16, chunk_encoding, chunk_compression, chunk_compression_level)


def from_stack_pattern_path(
    pattern_path: str | os.PathLike[str],
    default_dim_for_unspecified: str = "C",
    map_series_to: str | None = "T",
    clamp_to_uint16: bool = True,
    channel_names: list[str] | None = None,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
) -> pa.StructScalar:
    """Read a Bio-Formats-style file pattern (``img_C<0-2>_Z<000-009>.tif``) into one record."""
    return _to_list(
        _of.from_stack_pattern_path(
            pattern_path, default_dim_for_unspecified, map_series_to, clamp_to_uint16, channel_names,
            image_id, name, image_type,
        )
    )


def _to_list(scalar: pa.StructScalar) -> pa.StructScalar:
    """The record re-encoded with list chunks (ome-arrow's encoding), pixels unchanged."""
    return to_record(_unit_sizes(open_source(scalar)), chunk_encoding="list", write=WriteOptions(compression=None))


def _unit_sizes(source: LazySource) -> LazySource:
    """``source`` with ome-arrow's fill-in for unknown pixel sizes: 1.0 and ``"µm"``.

    omeframe keeps an unknown size unknown (null); ome-arrow 0.1.0 records
    1.0 µm for it, and this module reproduces ome-arrow.
    """
    h = source.header()
    changes: dict[str, Any] = {}
    for ax in "xyz":
        if getattr(h, f"physical_size_{ax}") is None:
            changes[f"physical_size_{ax}"] = 1.0
        if getattr(h, f"physical_size_{ax}_unit") is None:
            changes[f"physical_size_{ax}_unit"] = "µm"
    return HeaderOverride(source, replace(h, **changes)) if changes else source
