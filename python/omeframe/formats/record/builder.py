"""Build OME-Arrow record arrays straight from numpy buffers.

One builder serves one image (``from_numpy``) and many (table writers): it
collects per-image headers and per-chunk payloads, then assembles a single
``pa.StructArray`` of the exact canonical type with ``from_buffers`` /
``from_arrays``. Pixels never pass through Python lists or dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.engine import threads as _threads
from omeframe.engine.codec import (
    DEFAULT_LEVEL,
    check_level,
    encode_payload,
    normalize_compression,
    pack_large_binary,
)
from omeframe.engine.pieces import regular_pieces
from omeframe.model.arrow import (
    BYTE_CHUNK_STRUCT,
    CHUNK_GRID_STRUCT,
    LIST_CHUNK_STRUCT,
    OME_ARROW_BYTE_STRUCT,
    OME_ARROW_STRUCT,
    PIXELS_META_STRUCT,
    PLANE_STRUCT,
)
from omeframe.model.dtypes import LIST_VARIANT_DTYPES, dtype_name
from omeframe.model.errors import DtypeError
from omeframe.model.header import ImageHeader, normalize_chunk_shape

ChunkEncoding = Literal["bytes", "list"]

# Above this many raw bytes an image's chunks are encoded in the thread pool.
_PARALLEL_MIN_BYTES = 4 << 20


@dataclass
class _Columns:
    """Per-chunk columns accumulated across images."""

    keys: list[np.ndarray] = field(default_factory=list)  # (n, 8) int64 per image
    dtypes: list[str] = field(default_factory=list)
    comps: list[str | None] = field(default_factory=list)
    payloads: list[Any] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # chunks per image


def _check_header_types(header: ImageHeader) -> None:
    """The header fields a record stores as strings and a timestamp hold those types (names the field)."""
    for field_name in ("image_id", "name", "image_type"):
        value = getattr(header, field_name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{field_name} must be a string (or None), got {type(value).__name__} {value!r}")
    when = header.acquisition_datetime
    if when is not None and not isinstance(when, datetime):
        raise TypeError(
            f"acquisition_datetime must be a datetime.datetime (or None), got {type(when).__name__} {when!r}; "
            "parse text first, e.g. datetime.fromisoformat('2020-01-31T12:00:00')"
        )


def list_or_bytes_codec(
    chunk_encoding: str, compression: str | None, compression_level: int | None
) -> tuple[str | None, int | None]:
    """The codec and level a :class:`RecordBuilder` of ``chunk_encoding`` gets from a writer's options.

    Writers default to zstd at level 3 for the byte variant; the list variant
    stores plain ``list<uint16>`` chunks, so those defaults mean nothing there,
    and anything else asked for would do nothing: it is refused.

    Raises
    ------
    ValueError
        For another compression or level with ``chunk_encoding="list"``.
    """
    if chunk_encoding != "list":
        return compression, compression_level
    if normalize_compression(compression) not in (None, "zstd") or compression_level not in (None, DEFAULT_LEVEL):
        raise ValueError(
            f"compression={compression!r} (level {compression_level}) applies to the byte variant only; the list "
            "variant stores plain list<uint16> (use the file's compression instead, or chunk_encoding='bytes')"
        )
    return None, None


class RecordBuilder:
    """Accumulate images and build one ``pa.StructArray`` of OME-Arrow records.

    Parameters
    ----------
    chunk_encoding
        ``"bytes"`` (native dtype, optional compression) or ``"list"``
        (``list<uint16>`` pixels; only for data that fits uint16 exactly).
    compression, compression_level
        Per-chunk codec of the byte variant (``None`` stores raw bytes).
    chunk_shape
        ``(Z, Y, X)`` chunk shape, clipped to each image.
    build_chunks
        ``True`` stores chunks (and no planes); ``False`` stores planes only
        (list variant only).
    """

    def __init__(
        self,
        *,
        chunk_encoding: ChunkEncoding = "bytes",
        compression: str | None = None,
        compression_level: int | None = None,
        chunk_shape: Sequence[int] | None = (1, 512, 512),
        chunk_order: str = "ZYX",
        build_chunks: bool = True,
    ) -> None:
        if chunk_encoding not in ("bytes", "list"):
            raise ValueError(
                f"chunk_encoding must be 'bytes' or 'list', got {chunk_encoding!r}"
            )
        if str(chunk_order).upper() != "ZYX":
            raise ValueError(
                f"chunk_order {chunk_order!r} is not supported; OME-Arrow defines 'ZYX' only"
            )
        if not build_chunks and chunk_encoding == "bytes":
            raise ValueError(
                "build_chunks=False stores pixels in planes[], which only the list "
                "variant has; pass chunk_encoding='list' or keep build_chunks=True"
            )
        if chunk_encoding == "list" and normalize_compression(compression) is not None:
            raise ValueError(
                "compression applies to the byte variant only; the list variant stores "
                "plain list<uint16> (use the file's compression instead)"
            )
        self.encoding: ChunkEncoding = chunk_encoding
        self.compression = normalize_compression(compression)
        self.level = check_level(self.compression, compression_level)
        self.chunk_shape = chunk_shape
        self.build_chunks = build_chunks
        self._headers: list[dict[str, Any]] = []
        self._grids: list[dict[str, Any] | None] = []
        self._cols = _Columns()

    @property
    def struct_type(self) -> pa.StructType:
        return OME_ARROW_BYTE_STRUCT if self.encoding == "bytes" else OME_ARROW_STRUCT

    def __len__(self) -> int:
        return len(self._headers)

    # ------------------------------------------------------------------
    def add(self, tczyx: np.ndarray, header: ImageHeader) -> None:
        """Encode one TCZYX image (any strides) and queue its record."""
        if tczyx.ndim != 5:
            raise ValueError(f"expected a TCZYX (5-D) array, got {tczyx.ndim}-D")
        name = dtype_name(tczyx.dtype)
        if tczyx.dtype.byteorder == ">" or (tczyx.dtype.byteorder == "<" and not np.little_endian):
            tczyx = tczyx.astype(tczyx.dtype.newbyteorder("="))
        if self.encoding == "list":
            if name not in LIST_VARIANT_DTYPES:
                raise DtypeError(
                    f"the list variant stores pixels as list<uint16>, which cannot hold "
                    f"{name} data without loss; use chunk_encoding='bytes' (native "
                    "dtype) or clamp_to_uint16=True to convert explicitly"
                )
        _check_header_types(header)
        st, sc, sz, sy, sx = (int(v) for v in tczyx.shape)
        self._headers.append(self._header_row(header, tczyx.shape, header.dtype_meta or name))
        if self.build_chunks:
            cz, cy, cx = normalize_chunk_shape(self.chunk_shape, sz, sy, sx)
            self._grids.append(
                {
                    "order": "TCZYX",
                    "chunk_t": 1,
                    "chunk_c": 1,
                    "chunk_z": cz,
                    "chunk_y": cy,
                    "chunk_x": cx,
                    "chunk_order": "ZYX",
                }
            )
            self._add_chunks(tczyx, (cz, cy, cx), name)
        else:
            self._grids.append(None)
            self._add_planes(tczyx)

    def _header_row(self, h: ImageHeader, shape: tuple[int, ...], dtype_str: str) -> dict[str, Any]:
        return {
            "type": h.type_,
            "version": h.version,
            "id": h.image_id,
            "name": h.name,
            "image_type": h.image_type,
            "acquisition_datetime": h.acquisition_datetime or datetime.now(UTC),
            # dtype_str is the exact name the caller chose (it already honours dtype_meta)
            "pixels_meta": replace(h, dtype_meta=None).pixels_meta(shape, dtype_str),
        }

    def _add_chunks(self, a: np.ndarray, cshape: tuple[int, int, int], dname: str) -> None:
        st, sc, sz, sy, sx = a.shape
        cz, cy, cx = cshape
        origins, extents = regular_pieces(a.shape, cshape)
        keys = np.concatenate([origins, extents], axis=1)
        n = len(keys)
        cols = self._cols
        cols.keys.append(keys)
        cols.counts.append(n)
        if self.encoding == "list":
            # One contiguous uint16 buffer holding every chunk back to back.
            sizes = keys[:, 5] * keys[:, 6] * keys[:, 7]
            flat = np.empty(int(sizes.sum()), dtype=np.uint16)
            pos = 0
            for k, size in zip(keys, sizes, strict=True):
                t, c, z, y, x, dz, dy, dx = (int(v) for v in k)
                flat[pos : pos + size].reshape(dz, dy, dx)[...] = a[
                    t, c, z : z + dz, y : y + dy, x : x + dx
                ]
                pos += int(size)
            cols.payloads.append((flat, sizes))
            return

        comp, level = self.compression, self.level

        def encode(k: np.ndarray) -> tuple[str | None, Any]:
            t, c, z, y, x, dz, dy, dx = (int(v) for v in k)
            return encode_payload(a[t, c, z : z + dz, y : y + dy, x : x + dx], comp, level)

        if comp is not None and n > 1 and a.nbytes >= _PARALLEL_MIN_BYTES and _threads.can_parallelize():
            results = list(_threads.pool().map(encode, keys))
        else:
            results = [encode(k) for k in keys]
        cols.dtypes.extend([dname] * n)
        for stored, payload in results:
            cols.comps.append(stored)
            cols.payloads.append(payload)

    def _add_planes(self, a: np.ndarray) -> None:
        st, sc, sz, sy, sx = a.shape
        keys = np.array(
            [(t, c, z) for t in range(st) for c in range(sc) for z in range(sz)], dtype=np.int64
        ).reshape(-1, 3)
        flat = np.ascontiguousarray(a, dtype=np.uint16).reshape(-1)
        self._cols.keys.append(keys)
        self._cols.counts.append(len(keys))
        self._cols.payloads.append((flat, np.full(len(keys), sy * sx, dtype=np.int64)))

    # ------------------------------------------------------------------
    def build(self) -> pa.StructArray:
        """Assemble every queued image into one ``StructArray`` (one row each)."""
        n = len(self._headers)
        hdr = self._headers
        top = {
            "type": pa.array([h["type"] for h in hdr], pa.string()),
            "version": pa.array([h["version"] for h in hdr], pa.string()),
            "id": pa.array([h["id"] for h in hdr], pa.string()),
            "name": pa.array([h["name"] for h in hdr], pa.string()),
            "image_type": pa.array([h["image_type"] for h in hdr], pa.string()),
            "acquisition_datetime": pa.array(
                [h["acquisition_datetime"] for h in hdr], pa.timestamp("us")
            ),
            "pixels_meta": pa.array([h["pixels_meta"] for h in hdr], PIXELS_META_STRUCT),
            "chunk_grid": pa.array(self._grids, CHUNK_GRID_STRUCT),
        }
        counts = np.asarray(self._cols.counts, dtype=np.int64)
        list_offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        empty_offsets = pa.array(np.zeros(n + 1, dtype=np.int32))
        if self.build_chunks:
            chunk_values = self._chunk_values()
            chunk_type = BYTE_CHUNK_STRUCT if self.encoding == "bytes" else LIST_CHUNK_STRUCT
            top["chunks"] = pa.ListArray.from_arrays(
                list_offsets, chunk_values, type=pa.list_(chunk_type)
            )
            top["planes"] = pa.ListArray.from_arrays(
                empty_offsets, pa.array([], PLANE_STRUCT), type=pa.list_(PLANE_STRUCT)
            )
        else:
            top["chunks"] = pa.nulls(n, pa.list_(LIST_CHUNK_STRUCT))
            top["planes"] = pa.ListArray.from_arrays(
                list_offsets, self._plane_values(), type=pa.list_(PLANE_STRUCT)
            )
        top["masks"] = pa.nulls(n, pa.null())
        st = self.struct_type
        return pa.StructArray.from_arrays([top[f.name] for f in st], fields=list(st))

    def _chunk_values(self) -> pa.StructArray:
        keys = (
            np.concatenate(self._cols.keys)
            if self._cols.keys
            else np.zeros((0, 8), dtype=np.int64)
        )
        key_types = [pa.int32(), pa.int16(), pa.int32(), pa.int32(), pa.int32(), pa.int32(), pa.int32(), pa.int32()]
        key_arrays = [
            pa.array(keys[:, i].astype(t.to_pandas_dtype()), type=t) for i, t in enumerate(key_types)
        ]
        if self.encoding == "bytes":
            pixel_bytes = pack_large_binary(self._cols.payloads)
            tail = [
                pa.array(self._cols.dtypes, pa.string()),
                pa.array(self._cols.comps, pa.string()),
                pixel_bytes,
            ]
            return pa.StructArray.from_arrays(key_arrays + tail, fields=list(BYTE_CHUNK_STRUCT))
        flats = [f for f, _ in self._cols.payloads]
        sizes = np.concatenate([s for _, s in self._cols.payloads]) if flats else np.zeros(0, np.int64)
        values = np.concatenate(flats) if flats else np.zeros(0, np.uint16)
        offs = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offs[1:])
        if offs[-1] > np.iinfo(np.int32).max:
            raise ValueError(
                "the list variant's list<uint16> holds at most 2**31-1 pixels per "
                "record batch; use chunk_encoding='bytes' for images this large"
            )
        pixels = pa.ListArray.from_arrays(pa.array(offs.astype(np.int32)), pa.array(values))
        return pa.StructArray.from_arrays(key_arrays + [pixels], fields=list(LIST_CHUNK_STRUCT))

    def _plane_values(self) -> pa.StructArray:
        keys = np.concatenate(self._cols.keys)
        flats = [f for f, _ in self._cols.payloads]
        sizes = np.concatenate([s for _, s in self._cols.payloads])
        offs = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offs[1:])
        if offs[-1] > np.iinfo(np.int32).max:
            raise ValueError("too many pixels for list<uint16> planes; use chunk_encoding='bytes'")
        pixels = pa.ListArray.from_arrays(pa.array(offs.astype(np.int32)), pa.array(np.concatenate(flats)))
        return pa.StructArray.from_arrays(
            [
                pa.array(keys[:, 2].astype(np.int32)),
                pa.array(keys[:, 0].astype(np.int32)),
                pa.array(keys[:, 1].astype(np.int16)),
                pixels,
            ],
            fields=list(PLANE_STRUCT),
        )
