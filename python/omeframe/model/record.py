"""Zero-copy access to one OME-Arrow record, whatever its variant or layout.

:class:`RecordView` wraps a ``pa.StructScalar``, a one-row ``StructArray`` or a
plain ``dict`` and exposes the image header and the chunk/plane payloads as
numpy arrays. Fields are found by name, so records whose struct fields come in
another order, that lack optional fields (``image_type``, ``chunk_grid``,
``chunks``), or that store pixels as ``list<int64>`` are read as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.model.arrow import OME_ARROW_BYTE_STRUCT, OME_ARROW_STRUCT
from omeframe.model.dtypes import to_numpy_dtype
from omeframe.model.errors import PixelPayloadError, SchemaError

__all__ = ["RecordView", "ChunkTable", "PlaneTable", "as_record_scalar", "REQUIRED_FIELDS", "chunk_tiling"]

#: Fields a struct must have to be read as an OME-Arrow record.
REQUIRED_FIELDS = frozenset({"type", "version", "id", "name", "pixels_meta"})


def looks_like_record_type(t: pa.DataType) -> bool:
    """True when ``t`` is a struct with the fields of an OME-Arrow record."""
    if not pa.types.is_struct(t):
        return False
    names = {t.field(i).name for i in range(t.num_fields)}
    return REQUIRED_FIELDS.issubset(names) and ("chunks" in names or "planes" in names)


def as_record_scalar(data: Any) -> pa.StructScalar:
    """Normalise a record given as scalar, 1-row array or dict to a StructScalar."""
    if isinstance(data, RecordView):
        return data.scalar
    if isinstance(data, pa.StructScalar):
        scalar = data
    elif isinstance(data, (pa.StructArray, pa.ChunkedArray)):
        if len(data) != 1:
            raise SchemaError(
                f"expected a single OME-Arrow record, got an array of {len(data)} rows; "
                "select one row first (e.g. arr[i])"
            )
        scalar = data[0]
    elif isinstance(data, dict):
        chunks = data.get("chunks") or []
        is_bytes = bool(chunks) and "pixel_bytes" in chunks[0]
        struct = OME_ARROW_BYTE_STRUCT if is_bytes else OME_ARROW_STRUCT
        row = {f.name: data.get(f.name) for f in struct}
        try:
            scalar = pa.scalar(row, type=struct)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise SchemaError(f"dict is not a valid OME-Arrow record: {exc}") from exc
    else:
        raise TypeError(
            "expected an OME-Arrow record (pyarrow StructScalar, 1-row StructArray or "
            f"dict), got {type(data).__name__}"
        )
    if not looks_like_record_type(scalar.type):
        raise SchemaError(
            "value is not an OME-Arrow record: its struct lacks the fields "
            f"{sorted(REQUIRED_FIELDS)} plus chunks or planes; got {scalar.type}"
        )
    if not scalar.is_valid:
        raise SchemaError("the OME-Arrow record is null")
    return scalar


def _field(scalar: pa.StructScalar, name: str) -> Any:
    t = scalar.type
    if t.get_field_index(name) < 0:
        return None
    return scalar[name]


def _int_column(arr: pa.StructArray, name: str, default: int | None = None) -> np.ndarray:
    t = arr.type
    idx = t.get_field_index(name)
    if idx < 0:
        if default is None:
            raise SchemaError(f"chunk entries lack the field {name!r}")
        return np.full(len(arr), default, dtype=np.int64)
    col = arr.field(idx)
    if col.null_count:
        raise SchemaError(f"chunk field {name!r} has null entries")
    return col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


@dataclass(frozen=True)
class ChunkTable:
    """The chunks of one record as column arrays (one entry per chunk).

    ``origins`` is ``(n, 5)`` in TCZYX element coordinates, ``extents`` the
    ``(n, 3)`` ZYX chunk shapes (T and C extents are always 1 in a record).
    """

    origins: np.ndarray
    extents: np.ndarray
    kind: str  # "bytes" or "list"
    # byte variant
    data: pa.Buffer | None
    offsets: np.ndarray  # n + 1 payload offsets (bytes, or values for the list variant)
    valid: np.ndarray | None
    dtypes: list[str | None] | None
    compressions: list[str | None] | None
    # list variant
    values: np.ndarray | None

    def __len__(self) -> int:
        return int(self.origins.shape[0])

    def payload(self, i: int) -> Any:
        """The stored payload of chunk ``i``: a memoryview (bytes) or an array (list)."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        if self.kind == "bytes":
            if self.valid is not None and not self.valid[i]:
                raise PixelPayloadError(f"chunks[{i}].pixel_bytes is null")
            assert self.data is not None
            return memoryview(self.data)[lo:hi]
        assert self.values is not None
        return self.values[lo:hi]

    @property
    def offset_unit(self) -> int:
        """Bytes per unit of ``offsets``: 1 for byte payloads, the pixel itemsize for list payloads."""
        if self.kind == "bytes":
            return 1
        if self.values is None:
            raise SchemaError("a list-variant chunk table needs its pixel values")
        return int(self.values.dtype.itemsize)

    def stored_nbytes(self) -> int:
        """Bytes of pixel payload stored for all chunks (compressed size)."""
        if len(self) == 0:
            return 0
        return int(self.offsets[-1] - self.offsets[0]) * self.offset_unit


@dataclass(frozen=True)
class PlaneTable:
    """The planes of one record (``planes[]``), for records without chunks."""

    tcz: np.ndarray  # (n, 3)
    offsets: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.tcz.shape[0])

    def payload(self, i: int) -> np.ndarray:
        return self.values[int(self.offsets[i]) : int(self.offsets[i + 1])]


class RecordView:
    """Read-only, zero-copy view of one OME-Arrow record.

    Parameters
    ----------
    data
        A ``pa.StructScalar``, a one-row ``StructArray``/``ChunkedArray`` or a
        dict following the OME-Arrow schema (either variant, any field order).
    """

    __slots__ = ("scalar", "__dict__")

    def __init__(self, data: Any) -> None:
        self.scalar: pa.StructScalar = as_record_scalar(data)

    # ---- header ---------------------------------------------------------
    @cached_property
    def meta(self) -> dict[str, Any]:
        """``pixels_meta`` as a dict (sizes, dtype, physical sizes, channels)."""
        pm = _field(self.scalar, "pixels_meta")
        if pm is None or not pm.is_valid:
            raise SchemaError("record has no pixels_meta")
        return pm.as_py()

    @cached_property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(T, C, Z, Y, X)`` sizes from ``pixels_meta``."""
        m = self.meta
        try:
            sizes = tuple(int(m[k]) for k in ("size_t", "size_c", "size_z", "size_y", "size_x"))
        except (KeyError, TypeError) as exc:
            raise SchemaError(f"pixels_meta lacks a size field: {exc}") from exc
        if min(sizes) <= 0:
            raise SchemaError(f"pixels_meta sizes must be positive, got TCZYX={sizes}")
        return sizes  # type: ignore[return-value]

    @cached_property
    def dtype(self) -> np.dtype[Any]:
        """The native pixel dtype (``pixels_meta.type``)."""
        name = self.meta.get("type")
        if not name:
            return np.dtype("uint16")
        return to_numpy_dtype(name)

    def header(self, name: str) -> Any:
        """A top-level scalar field as a Python value (``None`` when absent)."""
        v = _field(self.scalar, name)
        return None if v is None else v.as_py()

    @cached_property
    def chunk_grid(self) -> dict[str, Any] | None:
        """``chunk_grid`` as a dict, or ``None``."""
        return self.header("chunk_grid")

    @property
    def variant(self) -> str:
        """``"bytes"``, ``"list"`` (chunked pixels) or ``"planes"`` (no chunks)."""
        ct = self.chunks
        return ct.kind if ct is not None else "planes"

    # ---- payloads -------------------------------------------------------
    @cached_property
    def chunks(self) -> ChunkTable | None:
        """The chunk table, or ``None`` when the record stores planes only."""
        lst = _field(self.scalar, "chunks")
        if lst is None or not lst.is_valid:
            return None
        arr = lst.values
        if arr is None or len(arr) == 0:
            return None
        if isinstance(arr, pa.ChunkedArray):  # pragma: no cover - defensive
            arr = arr.combine_chunks()
        if arr.offset:  # make child access independent of the parent's offset
            arr = pa.StructArray.from_arrays(arr.flatten(), fields=list(arr.type))
        grid = self.chunk_grid or {}
        order = str(grid.get("chunk_order") or "ZYX").upper()
        if order != "ZYX":
            raise SchemaError(f"unsupported chunk_order {order!r}; only 'ZYX' is defined")
        names = [f.name for f in arr.type]
        origins = np.stack(
            [_int_column(arr, k) for k in ("t", "c", "z", "y", "x")], axis=1
        )
        extents = np.stack(
            [_int_column(arr, k) for k in ("shape_z", "shape_y", "shape_x")], axis=1
        )
        if "pixel_bytes" in names:
            col = arr.field("pixel_bytes")
            if not pa.types.is_large_binary(col.type):
                col = col.cast(pa.large_binary())
            bufs = col.buffers()
            offsets = np.frombuffer(bufs[1], dtype=np.int64)[col.offset : col.offset + len(col) + 1]
            valid = None
            if col.null_count:
                valid = col.is_valid().to_numpy(zero_copy_only=False)
            dts: list[str | None] = arr.field("dtype").to_pylist() if "dtype" in names else [None] * len(arr)
            comps: list[str | None] = (
                arr.field("compression").to_pylist() if "compression" in names else [None] * len(arr)
            )
            data = bufs[2] if bufs[2] is not None else pa.py_buffer(b"")
            return ChunkTable(origins, extents, "bytes", data, offsets, valid, dts, comps, None)
        if "pixels" in names:
            col = arr.field("pixels")
            if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
                raise SchemaError(f"chunks[].pixels must be a list, got {col.type}")
            if col.null_count:
                raise PixelPayloadError("a chunk has null pixels")
            offsets = col.offsets.to_numpy().astype(np.int64, copy=False)
            values = col.values.to_numpy(zero_copy_only=False)
            return ChunkTable(origins, extents, "list", None, offsets, None, None, None, values)
        raise SchemaError("chunk entries carry neither pixel_bytes nor pixels")

    @cached_property
    def planes(self) -> PlaneTable | None:
        """The plane table, or ``None`` when the record has no planes."""
        lst = _field(self.scalar, "planes")
        if lst is None or not lst.is_valid:
            return None
        arr = lst.values
        if arr is None or len(arr) == 0:
            return None
        if arr.offset:
            arr = pa.StructArray.from_arrays(arr.flatten(), fields=list(arr.type))
        tcz = np.stack([_int_column(arr, k) for k in ("t", "c", "z")], axis=1)
        col = arr.field("pixels")
        if col.null_count:
            raise PixelPayloadError("a plane has null pixels")
        offsets = col.offsets.to_numpy().astype(np.int64, copy=False)
        values = col.values.to_numpy(zero_copy_only=False)
        return PlaneTable(tcz, offsets, values)

    def pixel_nbytes(self) -> int:
        """Uncompressed size of the image in bytes (``prod(shape) * itemsize``)."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def chunk_tiling(
    shape: tuple[int, int, int, int, int], origins: np.ndarray, extents: np.ndarray, *, label: str
) -> int:
    """Check that chunks lie inside the image and do not overlap; return the pixels no chunk covers.

    Parameters
    ----------
    shape
        ``(T, C, Z, Y, X)`` of the image.
    origins, extents
        ``(n, 5)`` TCZYX chunk origins and ``(n, 3)`` ZYX extents (T and C extents are 1).
    label
        What the chunks belong to, for messages (``"record 'a'"``).

    Returns
    -------
    int
        How many pixels of the image no chunk covers (0 when the chunks tile it exactly).

    Raises
    ------
    PixelPayloadError
        When a chunk has a non-positive extent, lies (partly) outside the image,
        or overlaps another chunk.

    Example
    -------
    >>> import numpy as np
    >>> o = np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 2]])
    >>> e = np.array([[1, 2, 2], [1, 2, 2]])
    >>> chunk_tiling((1, 1, 1, 2, 4), o, e, label="r")
    0
    >>> chunk_tiling((1, 1, 1, 2, 6), o, e, label="r")
    4
    """
    o = np.asarray(origins, dtype=np.int64).reshape(-1, 5)
    e = np.asarray(extents, dtype=np.int64).reshape(-1, 3)
    size = np.asarray(shape, dtype=np.int64)
    total = int(np.prod(size.astype(object)))
    if not len(o):
        return total
    bad = (
        (o < 0).any(axis=1)
        | (e <= 0).any(axis=1)
        | (o[:, 0] >= size[0])
        | (o[:, 1] >= size[1])
        | (o[:, 2:] + e > size[2:]).any(axis=1)
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "has a non-positive extent (image " if (e[i] <= 0).any() else "lies outside the image ("
        raise PixelPayloadError(
            f"{label}: chunks[{i}] at TCZYX origin {tuple(int(v) for v in o[i])} with ZYX shape "
            f"{tuple(int(v) for v in e[i])} {what} TCZYX={tuple(int(v) for v in size)})"
        )
    covered = int(np.prod(e, axis=1).sum())
    dup = _overlapping_chunk(size, o, e)
    if dup is not None:
        i, j = dup
        raise PixelPayloadError(
            f"{label}: chunks[{i}] (TCZYX origin {tuple(int(v) for v in o[i])}, ZYX shape "
            f"{tuple(int(v) for v in e[i])}) overlaps chunks[{j}] (origin "
            f"{tuple(int(v) for v in o[j])}, shape {tuple(int(v) for v in e[j])}); "
            "the chunk list is damaged"
        )
    return total - covered


def _overlapping_chunk(size: np.ndarray, o: np.ndarray, e: np.ndarray) -> tuple[int, int] | None:
    """Indices of two overlapping chunks (all inside the image), or ``None`` (vectorised)."""
    n = len(o)
    if n < 2:
        return None
    cs = e.max(axis=0)
    aligned = bool(
        (o[:, 2:] % cs == 0).all() and np.array_equal(e, np.minimum(cs, size[2:] - o[:, 2:]))
    )
    if aligned:
        # A regular grid: chunks overlap only when two share a grid cell.
        cell = np.concatenate([o[:, :2], o[:, 2:] // cs], axis=1)
        order = np.lexsort(cell.T[::-1])
        same = (cell[order[1:]] == cell[order[:-1]]).all(axis=1)
        if same.any():
            k = int(np.flatnonzero(same)[0])
            return int(order[k]), int(order[k + 1])
        return None
    # Any layout: count coverage on the grid of all chunk boundaries (a
    # difference array over compressed coordinates, prefix-summed per axis).
    bounds = [np.unique(np.concatenate([o[:, 2 + a], o[:, 2 + a] + e[:, a]])) for a in range(3)]
    cells = int(size[0]) * int(size[1]) * int(np.prod([b.size for b in bounds]))
    if cells <= 64 * n + (1 << 22):
        lo = [np.searchsorted(bounds[a], o[:, 2 + a]) for a in range(3)]
        hi = [np.searchsorted(bounds[a], o[:, 2 + a] + e[:, a]) for a in range(3)]
        grid = np.zeros((int(size[0]), int(size[1]), *(b.size for b in bounds)), dtype=np.int32)
        for corner in range(8):
            idx = [hi[a] if corner >> a & 1 else lo[a] for a in range(3)]
            sign = -1 if bin(corner).count("1") % 2 else 1
            np.add.at(grid, (o[:, 0], o[:, 1], idx[0], idx[1], idx[2]), sign)
        for axis in (2, 3, 4):
            np.cumsum(grid, axis=axis, out=grid)
        if int(grid.max()) <= 1:
            return None
    # Find the pair (also the fallback for huge irregular layouts): blocks of pairwise tests.
    end = o[:, 2:] + e
    step = max(1, (1 << 22) // n)
    for start in range(0, n, step):
        a = slice(start, min(n, start + step))
        hit = (
            (o[a, None, 0] == o[None, :, 0])
            & (o[a, None, 1] == o[None, :, 1])
            & (o[a, None, 2:] < end[None, :, :]).all(axis=2)
            & (o[None, :, 2:] < end[a, None, :]).all(axis=2)
        )
        hit[np.arange(hit.shape[0]), np.arange(start, a.stop)] = False
        if hit.any():
            i, j = np.argwhere(hit)[0]
            return int(start + i), int(j)
    return None
