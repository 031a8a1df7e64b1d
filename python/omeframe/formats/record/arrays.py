"""Ingest in-memory arrays (numpy, torch, JAX) and dicts as OME-Arrow records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.engine.codec import DEFAULT_LEVEL, check_level, normalize_compression
from omeframe.engine.limits import check_alloc
from omeframe.formats.record.builder import RecordBuilder, list_or_bytes_codec
from omeframe.model.arrow import OME_ARROW_TAG_TYPE, OME_ARROW_TAG_VERSION
from omeframe.model.checks import is_integer
from omeframe.model.dims import default_dim_order, to_tczyx
from omeframe.model.dtypes import SUPPORTED_DTYPES, to_numpy_dtype
from omeframe.model.errors import DtypeError, OptionalDependencyError, PixelPayloadError
from omeframe.model.header import ImageHeader, channels_of, default_channels, physical_fields
from omeframe.model.record import as_record_scalar
from omeframe.model.units import check_physical_sizes

__all__ = ["from_numpy", "from_torch_array", "from_jax_array", "to_ome_arrow", "clamp_u16"]

DEFAULT_COMPRESSION = "zstd"
DEFAULT_COMPRESSION_LEVEL = DEFAULT_LEVEL


class _Unset:
    """Marks an ome-arrow alias argument that was not passed."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def resolve_chunk_compression(
    compression: str | None,
    compression_level: int | None,
    chunk_compression: Any = UNSET,
    chunk_compression_level: Any = UNSET,
) -> tuple[str | None, int | None]:
    """Apply ome-arrow's names ``chunk_compression[_level]`` over omeframe's.

    ``ome_arrow.from_numpy(..., chunk_compression=None)`` means raw bytes, so an
    explicitly passed ``None`` wins over omeframe's ``zstd`` default.
    """
    if chunk_compression is not UNSET:
        # As in ome-arrow: without an explicit level, the codec's default.
        compression, compression_level = chunk_compression, None
    if chunk_compression_level is not UNSET:
        compression_level = chunk_compression_level
    check_level(normalize_compression(compression), compression_level)  # no level that would do nothing
    return compression, compression_level


def clamp_u16(arr: np.ndarray) -> np.ndarray:
    """Clip to ``[0, 65535]`` and cast to uint16 (NaN becomes 0)."""
    if arr.dtype == np.uint16:
        return arr
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr, nan=0.0)
    return np.clip(arr, 0, 65535).astype(np.uint16)


def _check_array(arr: Any) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(
            f"from_numpy expects a numpy.ndarray, got {type(arr).__name__}; convert with "
            "numpy.asarray(...) or use from_torch_array / from_jax_array"
        )
    if arr.ndim < 2:
        raise ValueError(f"an image needs at least Y and X axes; got a {arr.ndim}-D array")
    if arr.size == 0 or min(arr.shape) <= 0:
        raise ValueError(
            f"every axis must have length >= 1; got shape {arr.shape} (zero-size image)"
        )
    if arr.dtype.name not in SUPPORTED_DTYPES and arr.dtype.newbyteorder("=").name not in SUPPORTED_DTYPES:
        raise DtypeError(
            f"pixel dtype {arr.dtype} is not supported; expected one of "
            f"{', '.join(SUPPORTED_DTYPES)}"
        )
    return arr


def from_numpy(
    arr: np.ndarray,
    *,
    dim_order: str | None = None,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = False,
    chunk_shape: tuple[int, int, int] | None = (1, 512, 512),
    chunk_order: str = "ZYX",
    build_chunks: bool = True,
    physical_size_x: float | None = None,
    physical_size_y: float | None = None,
    physical_size_z: float | None = None,
    physical_size_unit: str | None = "µm",
    dtype_meta: str | None = None,
    chunk_encoding: Literal["bytes", "list"] = "bytes",
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    chunk_compression: str | None = UNSET,
    chunk_compression_level: int | None = UNSET,
) -> pa.StructScalar:
    """Build an OME-Arrow record from a numpy array.

    Pixels keep their native dtype unless ``clamp_to_uint16=True``.

    Parameters
    ----------
    arr
        Image data, 2-D to 5-D, with axes described by ``dim_order``.
    dim_order
        One letter per axis from ``"TCZYX"`` in any order (``"YX"``, ``"CYX"``,
        ``"YXC"``, ``"TZCYX"`` ...). Must contain Y and X. ``None`` infers from
        the rank: 2-D ``YX``, 3-D ``ZYX``, 4-D ``TCYX``, 5-D ``TCZYX``.
    image_id, name
        Identifier and human label (default ``"unnamed"`` / ``"unknown"``).
    image_type
        Open-ended kind (``"image"``, ``"label"`` ...); ``None`` = unspecified.
    channel_names
        One name per channel; ``C0..C{n-1}`` when ``None`` or the count differs.
    acquisition_datetime
        Acquisition time; now (UTC) when ``None``.
    clamp_to_uint16
        Clip and cast to uint16 before storing (off by default).
    chunk_shape
        ``(Z, Y, X)`` chunk shape, clipped to the image.
    chunk_order
        Flattening order of chunk pixels; OME-Arrow defines ``"ZYX"`` only.
    build_chunks
        Store chunked pixels (default). ``False`` stores ``planes[]`` instead
        (list variant only).
    physical_size_x, physical_size_y, physical_size_z, physical_size_unit
        Pixel spacing and its unit. A size left ``None`` is unknown: it is
        stored as null (so is its unit) and reads in micrometres
        (``select(x_um=...)``, ``at_resolution``, ``ome_crop_um`` ...) raise
        :class:`~omeframe.errors.UnitError` instead of assuming 1 µm.
    dtype_meta
        Overrides the dtype name written to ``pixels_meta.type``.
    chunk_encoding
        ``"bytes"`` (default: native dtype, compressed) or ``"list"``
        (``list<uint16>``, SQL-friendly; only bool/uint8/uint16 data, or with
        ``clamp_to_uint16=True``).
    compression, compression_level
        Per-chunk codec of the byte variant: ``"zstd"`` (default, level 3),
        ``"lz4"``, ``"gzip"`` ..., or ``None`` for raw bytes.
    chunk_compression, chunk_compression_level
        ``ome_arrow``'s names for ``compression`` / ``compression_level``;
        when passed (even as ``None``) they take precedence.

    Returns
    -------
    pyarrow.StructScalar
        The record, typed ``OME_ARROW_BYTE_STRUCT`` or ``OME_ARROW_STRUCT``.

    Raises
    ------
    TypeError
        If ``arr`` is not a numpy array.
    DimOrderError
        If ``dim_order`` does not describe ``arr``.
    DtypeError
        For unsupported dtypes, or non-uint16 data in the list variant.
    """
    compression, compression_level = resolve_chunk_compression(
        compression, compression_level, chunk_compression, chunk_compression_level
    )
    arr = _check_array(arr)
    check_physical_sizes(
        {"physical_size_x": physical_size_x, "physical_size_y": physical_size_y, "physical_size_z": physical_size_z},
        physical_size_unit,
    )
    order = dim_order if dim_order is not None else default_dim_order(arr.ndim)
    tczyx = to_tczyx(arr, order)
    if clamp_to_uint16:
        tczyx = clamp_u16(tczyx)
    if dtype_meta is not None:
        dtype_meta = to_numpy_dtype(dtype_meta).name
    encoding = chunk_encoding
    codec, level = list_or_bytes_codec(encoding, compression, compression_level)
    builder = RecordBuilder(
        chunk_encoding=encoding,
        compression=codec,
        compression_level=level,
        chunk_shape=chunk_shape,
        chunk_order=chunk_order,
        build_chunks=build_chunks,
    )
    header = ImageHeader(
        image_id=str(image_id) if image_id is not None else "unnamed",
        name=str(name) if name is not None else "unknown",
        image_type=None if image_type is None else str(image_type),
        acquisition_datetime=acquisition_datetime,
        channels=default_channels(channel_names, tczyx.shape[1]),
        **physical_fields(physical_size_x, physical_size_y, physical_size_z, physical_size_unit),
        dtype_meta=dtype_meta,
    )
    builder.add(tczyx, header)
    return builder.build()[0]


def _tensor_to_numpy(arr: Any, kind: str) -> np.ndarray:
    if kind == "torch":
        try:
            import torch  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise OptionalDependencyError(
                "from_torch_array needs PyTorch: pip install 'omeframe[torch]'"
            ) from exc
        if not hasattr(arr, "detach"):
            raise TypeError(f"from_torch_array expects a torch.Tensor, got {type(arr).__name__}")
        return arr.detach().cpu().numpy()
    try:
        import jax  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise OptionalDependencyError(
            "from_jax_array needs JAX: pip install 'omeframe[jax]'"
        ) from exc
    if not hasattr(arr, "__array__") or not hasattr(arr, "device"):
        raise TypeError(f"from_jax_array expects a jax.Array, got {type(arr).__name__}")
    return np.asarray(arr)


def from_torch_array(arr: Any, *, dim_order: str | None = None, **kwargs: Any) -> pa.StructScalar:
    """Build an OME-Arrow record from a ``torch.Tensor`` (moved to CPU first).

    Takes the same keyword arguments as :func:`from_numpy`; ``dim_order=None``
    infers the axes from the rank (2-D ``YX`` ... 5-D ``TCZYX``).
    """
    return from_numpy(_tensor_to_numpy(arr, "torch"), dim_order=dim_order, **kwargs)


def from_jax_array(arr: Any, *, dim_order: str | None = None, **kwargs: Any) -> pa.StructScalar:
    """Build an OME-Arrow record from a ``jax.Array``.

    Takes the same keyword arguments as :func:`from_numpy`; ``dim_order=None``
    infers the axes from the rank (2-D ``YX`` ... 5-D ``TCZYX``).
    """
    return from_numpy(_tensor_to_numpy(arr, "jax"), dim_order=dim_order, **kwargs)


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
    physical_size_x: float | None = None,
    physical_size_y: float | None = None,
    physical_size_z: float | None = None,
    physical_size_unit: str | None = "µm",
    channels: list[dict[str, Any]] | None = None,
    planes: list[dict[str, Any]] | None = None,
    chunks: list[dict[str, Any]] | None = None,
    chunk_shape: tuple[int, int, int] | None = (1, 512, 512),
    chunk_order: str = "ZYX",
    build_chunks: bool = True,
    masks: Any = None,
    *,
    chunk_encoding: Literal["bytes", "list"] = "bytes",
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    chunk_compression: str | None = UNSET,
    chunk_compression_level: int | None = UNSET,
) -> pa.StructScalar:
    """Build a record from header fields plus planes (or ready-made chunks).

    Planes (``{"t", "c", "z", "pixels"}`` dicts with ``size_y * size_x``
    pixels each) are assembled into the image and, with ``build_chunks``,
    stored as chunks; missing planes are zero. Ready-made ``chunks`` dicts are
    stored as given (the variant follows from whether they carry
    ``pixel_bytes``). With neither, the image is all zeros.
    ``chunk_compression[_level]`` are ome-arrow's names for
    ``compression[_level]`` and take precedence when passed.

    Raises
    ------
    PixelPayloadError
        If a plane has the wrong number of pixels or indices out of range.
    """
    compression, compression_level = resolve_chunk_compression(
        compression, compression_level, chunk_compression, chunk_compression_level
    )
    if masks is not None:
        raise ValueError("masks is reserved by the OME-Arrow schema and must be None")
    np_dtype = to_numpy_dtype(dtype)
    sizes = {"size_t": size_t, "size_c": size_c, "size_z": size_z, "size_y": size_y, "size_x": size_x}
    for key, v in sizes.items():
        if not is_integer(v) or v <= 0:
            raise ValueError(f"{key} must be a positive integer, got {v!r}")
    shape = (int(size_t), int(size_c), int(size_z), int(size_y), int(size_x))
    if (
        not isinstance(dimension_order, str) or not dimension_order
        or not set(dimension_order.upper()) <= set("TCZYX") or len(set(dimension_order)) != len(dimension_order)
    ):
        raise ValueError(
            f"dimension_order must name axes among X, Y, Z, C and T, each once (OME: 'XYZCT' ...), "
            f"got {dimension_order!r}"
        )
    check_physical_sizes(
        {"physical_size_x": physical_size_x, "physical_size_y": physical_size_y, "physical_size_z": physical_size_z},
        physical_size_unit,
    )

    chan = channels_of(channels) if channels is not None else default_channels(None, shape[1])
    if chunks is not None:
        for i, ch in enumerate(chunks):
            missing = [k for k in ("t", "c", "z", "y", "x", "shape_z", "shape_y", "shape_x") if k not in ch]
            if missing:
                raise PixelPayloadError(f"chunks[{i}] lacks field(s) {missing} of an OME-Arrow chunk")
        is_bytes = bool(chunks) and "pixel_bytes" in chunks[0]
        cz, cy, cx = (int(chunks[0][k]) for k in ("shape_z", "shape_y", "shape_x")) if chunks else (1, 1, 1)
        record = {
            "type": type_,
            "version": version,
            "id": image_id,
            "name": name,
            "image_type": image_type,
            "acquisition_datetime": acquisition_datetime or datetime.now().astimezone(),
            "pixels_meta": {
                "dimension_order": dimension_order,
                "type": np_dtype.name,
                "size_x": shape[4],
                "size_y": shape[3],
                "size_z": shape[2],
                "size_c": shape[1],
                "size_t": shape[0],
                **physical_fields(physical_size_x, physical_size_y, physical_size_z, physical_size_unit),
                "channels": [c.as_dict() for c in chan],
            },
            "chunk_grid": {
                "order": "TCZYX", "chunk_t": 1, "chunk_c": 1,
                "chunk_z": cz, "chunk_y": cy, "chunk_x": cx, "chunk_order": chunk_order,
            },
            "chunks": chunks,
            "planes": [],
            "masks": None,
        }
        if not is_bytes:
            record["chunks"] = [dict(c) for c in chunks]
        return as_record_scalar(record)
    what = f"the {'x'.join(map(str, shape))} {np_dtype} image of to_ome_arrow"
    check_alloc(math.prod(shape) * np_dtype.itemsize, what)
    full = np.zeros(shape, dtype=np_dtype)
    for i, p in enumerate(planes or []):
        missing = [k for k in ("t", "c", "z", "pixels") if k not in p]
        if missing:
            raise PixelPayloadError(f"planes[{i}] lacks field(s) {missing}; a plane is {{'t', 'c', 'z', 'pixels'}}")
        t, c, z = int(p["t"]), int(p["c"]), int(p["z"])
        if not (0 <= t < shape[0] and 0 <= c < shape[1] and 0 <= z < shape[2]):
            raise PixelPayloadError(
                f"planes[{i}] index (t={t}, c={c}, z={z}) is outside sizes "
                f"T={shape[0]}, C={shape[1]}, Z={shape[2]}"
            )
        pix = np.asarray(p["pixels"])
        if pix.size != shape[3] * shape[4]:
            raise PixelPayloadError(
                f"planes[{i}] has {pix.size} pixels, expected size_y*size_x = "
                f"{shape[3] * shape[4]}"
            )
        full[t, c, z] = pix.reshape(shape[3], shape[4])
    codec, level = list_or_bytes_codec(chunk_encoding, compression, compression_level)
    builder = RecordBuilder(
        chunk_encoding=chunk_encoding,
        compression=codec,
        compression_level=level,
        chunk_shape=chunk_shape,
        chunk_order=chunk_order,
        build_chunks=build_chunks,
    )
    builder.add(
        full,
        ImageHeader(
            image_id=str(image_id),
            name=str(name),
            image_type=image_type,
            acquisition_datetime=acquisition_datetime,
            channels=chan,
            **physical_fields(physical_size_x, physical_size_y, physical_size_z, physical_size_unit),
            dimension_order=dimension_order,
            type_=type_,
            version=version,
        ),
    )
    return builder.build()[0]
