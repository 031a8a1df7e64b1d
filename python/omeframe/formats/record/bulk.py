"""Encode a whole stack of same-shape images into records in one vectorised pass.

:func:`encode_stack` is the bulk path of :func:`~omeframe.write_table` for an
``(N, ...)`` array: headers become repeated Arrow scalars, chunk keys a tiled
numpy block, and every chunk payload one segment of the stack's own buffer,
compressed by ``zstandard``'s multi-frame compressor in its own threads.
There is no Python work per image: the cost per record is the codec's.

The fast path covers the layout that small images use: each chunk holds a
whole ZYX block of one (t, c) plane set (the chunk shape covers the image)
and chunks are raw or zstd. Anything else returns ``None`` and the caller
takes the general per-image builder.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omeframe.engine import threads as _threads
from omeframe.engine.codec import normalize_compression, resolve_codec
from omeframe.engine.pieces import regular_pieces
from omeframe.model.arrow import (
    BYTE_CHUNK_STRUCT,
    CHUNK_GRID_STRUCT,
    OME_ARROW_BYTE_STRUCT,
    PIXELS_META_STRUCT,
    PLANE_STRUCT,
)
from omeframe.model.dims import to_tczyx
from omeframe.model.dtypes import SUPPORTED_DTYPES, dtype_name
from omeframe.model.errors import DtypeError
from omeframe.model.header import ImageHeader, normalize_chunk_shape
from omeframe.model.units import check_physical_sizes

__all__ = ["stack_tczyx", "encode_stack", "zstd_frames", "segments_of"]

_KEY_TYPES = (pa.int32(), pa.int16(), pa.int32(), pa.int32(), pa.int32(), pa.int32(), pa.int32(), pa.int32())


def stack_tczyx(stack: np.ndarray, dim_order: str) -> np.ndarray:
    """View an ``(N, *image_axes)`` stack as ``(N, T, C, Z, Y, X)`` (no copy).

    ``dim_order`` names the axes of one image (e.g. ``"CYX"``); missing axes
    become length 1.
    """
    return to_tczyx(stack, dim_order, stacked=True)


def segments_of(offsets: np.ndarray) -> bytes:
    """``zstandard`` segment table (``uint64`` offset/length pairs) of consecutive payloads."""
    seg = np.empty((len(offsets) - 1, 2), dtype=np.uint64)
    seg[:, 0] = offsets[:-1]
    seg[:, 1] = np.diff(offsets)
    return seg.tobytes()


def zstd_frames(
    data: Any, offsets: np.ndarray, level: int | None, *, checksum: bool = True
) -> tuple[bytes, np.ndarray]:
    """Compress consecutive segments of ``data`` into independent zstd frames.

    Parameters
    ----------
    data
        A contiguous buffer.
    offsets
        ``n + 1`` increasing byte offsets: segment ``i`` is ``data[offsets[i]:offsets[i+1]]``.
    level
        zstd level (``None``: 3).
    checksum
        Add zstd's content checksum to every frame (any decoder verifies it).

    Returns
    -------
    (bytes, numpy.ndarray)
        The frames back to back and their ``n`` stored lengths.
    """
    import zstandard

    n = len(offsets) - 1
    if n == 0:
        return b"", np.zeros(0, dtype=np.int64)
    zc = zstandard.ZstdCompressor(
        level=3 if level is None else int(level), write_content_size=True, write_checksum=checksum
    )
    buf = zstandard.BufferWithSegments(data, segments_of(offsets))
    threads = _threads.num_threads() if _threads.can_parallelize() and n > 64 else 0
    frames = zc.multi_compress_to_buffer(buf, threads=threads)
    parts: list[Any] = [frames[i] for i in range(n)]
    lengths = np.fromiter((len(f) for f in parts), dtype=np.int64, count=n)
    return b"".join(parts), lengths


def _ids(values: Sequence[Any] | np.ndarray | None, prefix: str, start: int, n: int) -> pa.Array:
    if values is None:
        numbers = pc.cast(pa.array(np.arange(start, start + n, dtype=np.int64)), pa.string())
        return pc.binary_join_element_wise(pa.scalar(prefix), numbers, "")
    if len(values) != n:
        raise ValueError(f"got {len(values)} ids/names for {n} images")
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return pc.cast(pa.array(values), pa.string())
    return pa.array([str(v) for v in values], pa.string())


def _repeat_struct(value: dict[str, Any], type_: pa.StructType, n: int) -> pa.Array:
    """``n`` copies of one struct value, by a vectorised take (``pa.repeat`` of a nested struct
    scalar costs ~1 µs per row: 86% of encoding 10,000 tiny crops)."""
    return pa.array([value], type_).take(pa.array(np.zeros(n, dtype=np.int32)))


def encode_stack(
    stack: np.ndarray,
    *,
    dim_order: str,
    compression: str | None,
    compression_level: int | None,
    chunk_shape: Sequence[int] | None,
    image_ids: Sequence[Any] | np.ndarray | None = None,
    names: Sequence[Any] | np.ndarray | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    physical_size_x: float | None = None,
    physical_size_y: float | None = None,
    physical_size_z: float | None = None,
    physical_size_unit: str | None = "µm",
    start: int = 0,
) -> pa.StructArray | None:
    """Encode ``N`` same-shape images as one ``StructArray`` of byte-variant records.

    Returns ``None`` when the stack needs the general builder (a chunk shape
    smaller than the image, or a codec other than zstd / raw); the records
    are then byte-identical in content to the general path's.
    Default ids and names are ``img-<start + i>``.
    """
    if stack.ndim < 3:
        raise ValueError(f"a stack of images needs at least 3 axes (N, Y, X); got {stack.ndim}")
    check_physical_sizes(
        {"physical_size_x": physical_size_x, "physical_size_y": physical_size_y, "physical_size_z": physical_size_z},
        physical_size_unit,
    )
    if stack.dtype.name not in SUPPORTED_DTYPES and stack.dtype.newbyteorder("=").name not in SUPPORTED_DTYPES:
        raise DtypeError(
            f"pixel dtype {stack.dtype} is not supported; expected one of {', '.join(SUPPORTED_DTYPES)}"
        )
    if stack.size == 0 or min(stack.shape[1:]) <= 0:
        raise ValueError(f"every image axis must have length >= 1; got stack shape {stack.shape}")
    comp = normalize_compression(compression)
    codec = resolve_codec(comp)
    if codec not in (None, "zstd") or comp not in (None, "zstd"):
        return None
    six = stack_tczyx(stack, dim_order)
    n, st, sc, sz, sy, sx = (int(v) for v in six.shape)
    if tuple(normalize_chunk_shape(chunk_shape, sz, sy, sx)) != (sz, sy, sx):
        return None
    if six.dtype.byteorder == ">" or (six.dtype.byteorder == "<" and not np.little_endian):
        six = six.astype(six.dtype.newbyteorder("="))
    six = np.ascontiguousarray(six)
    dname = dtype_name(six.dtype)
    per = st * sc  # chunks per image
    block = sz * sy * sx * six.dtype.itemsize
    raw_offsets = np.arange(n * per + 1, dtype=np.int64) * block
    if codec == "zstd":
        payload, lengths = zstd_frames(six.reshape(-1).view(np.uint8), raw_offsets, compression_level)
        data = pa.py_buffer(payload)
        offsets = np.zeros(n * per + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        comp_col = pa.repeat(pa.scalar("zstd"), n * per)
    else:
        data = pa.py_buffer(six.reshape(-1).view(np.uint8))  # zero copy
        offsets = raw_offsets
        comp_col = pa.nulls(n * per, pa.string())
    header = ImageHeader.basic(
        "", "", sc, channel_names=channel_names, image_type=image_type,
        physical={"x": physical_size_x, "y": physical_size_y, "z": physical_size_z, "unit": physical_size_unit},
    )
    origins, extents = regular_pieces((st, sc, sz, sy, sx), (sz, sy, sx))
    keys = np.tile(np.concatenate([origins, extents], axis=1), (n, 1))
    chunk_values = pa.StructArray.from_arrays(
        [pa.array(keys[:, i].astype(t.to_pandas_dtype()), type=t) for i, t in enumerate(_KEY_TYPES)]
        + [
            pa.repeat(pa.scalar(dname), n * per),
            comp_col,
            pa.LargeBinaryArray.from_buffers(
                pa.large_binary(), n * per, [None, pa.py_buffer(offsets), data]
            ),
        ],
        fields=list(BYTE_CHUNK_STRUCT),
    )
    list_offsets = pa.array(np.arange(n + 1, dtype=np.int32) * per)
    grid = {
        "order": "TCZYX", "chunk_t": 1, "chunk_c": 1, "chunk_z": sz, "chunk_y": sy, "chunk_x": sx,
        "chunk_order": "ZYX",
    }
    top = {
        "type": pa.repeat(pa.scalar(header.type_), n),
        "version": pa.repeat(pa.scalar(header.version), n),
        "id": _ids(image_ids, "img-", start, n),
        "name": _ids(names, "img-", start, n),
        "image_type": pa.repeat(pa.scalar(image_type, pa.string()), n),
        "acquisition_datetime": pa.repeat(pa.scalar(datetime.now(UTC), pa.timestamp("us")), n),
        "pixels_meta": _repeat_struct(header.pixels_meta((st, sc, sz, sy, sx), dname), PIXELS_META_STRUCT, n),
        "chunk_grid": _repeat_struct(grid, CHUNK_GRID_STRUCT, n),
        "chunks": pa.ListArray.from_arrays(list_offsets, chunk_values, type=pa.list_(BYTE_CHUNK_STRUCT)),
        "planes": pa.ListArray.from_arrays(
            pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], PLANE_STRUCT), type=pa.list_(PLANE_STRUCT)
        ),
        "masks": pa.nulls(n, pa.null()),
    }
    st_type = OME_ARROW_BYTE_STRUCT
    return pa.StructArray.from_arrays([top[f.name] for f in st_type], fields=list(st_type))
