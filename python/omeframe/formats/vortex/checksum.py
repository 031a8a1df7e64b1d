"""Per-row CRC-32 of the pixel bytes of OME-Arrow columns, for Vortex files.

Vortex stores no checksums, and raw pixel chunks (the default for tiny crops)
carry none of their own, so a flipped byte in a Vortex record table could read
back as a wrong pixel. omeframe's Vortex writer therefore stores, in the hidden
last column that already carries the Arrow schema in its name (see
:mod:`omeframe.formats.vortex.file`), one ``uint32`` per row: the CRC-32 of
that row's pixel bytes over every OME-Arrow column in schema order (the
``chunks[].pixel_bytes`` payloads of the bytes variant, the ``planes[].pixels``
values of the planes variant). Readers that see the hidden column as before
keep working; omeframe's reader checks the CRC of every row it returns in
full.

A row's pixel bytes are one contiguous span of the column's data buffer (the
chunks of a row are consecutive list items), so one ``zlib.crc32`` call per row
and column covers them: about 0.6 µs per row plus 3 GB/s.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from omeframe.model.record import looks_like_record_type

__all__ = ["ome_columns", "row_crcs"]


def ome_columns(schema: pa.Schema) -> list[str]:
    """Names of the OME-Arrow record columns of ``schema``, in schema order."""
    return [f.name for f in schema if looks_like_record_type(f.type)]


def _child(struct: pa.StructArray, name: str) -> pa.Array:
    """Field ``name`` of ``struct`` aligned with its rows (honours a slice offset)."""
    child = struct.field(name)
    if struct.offset:
        child = child.slice(struct.offset, len(struct))
    return child


def _list_parts(lst: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """``(absolute offsets, unsliced values)`` of a list array of any width."""
    offs = np.asarray(lst.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    return offs, lst.values


def _byte_spans(arr: pa.Array) -> tuple[memoryview, np.ndarray, np.ndarray]:
    """``(data, starts, stops)``: row ``r``'s pixel bytes are ``data[starts[r]:stops[r]]``."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    names = {arr.type.field(i).name for i in range(arr.type.num_fields)}
    n = len(arr)
    if "chunks" in names and arr.type.field("chunks").type.value_type.get_field_index("pixel_bytes") >= 0:
        outer, items = _list_parts(_child(arr, "chunks"))
        values = _child(items, "pixel_bytes")
        if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
            values = values.cast(pa.large_binary())
        width = np.int64 if pa.types.is_large_binary(values.type) else np.int32
        inner = np.frombuffer(values.buffers()[1], dtype=width)[values.offset : values.offset + len(values) + 1]
        data = values.buffers()[2]
        bounds = inner.astype(np.int64)[outer]
        itemsize = 1
    elif "planes" in names:
        outer, items = _list_parts(_child(arr, "planes"))
        pixels = _child(items, "pixels")
        inner_offs, values = _list_parts(pixels)
        bounds = inner_offs[outer] + values.offset
        itemsize = values.type.bit_width // 8 if values.type.bit_width >= 8 else 1
        data = values.buffers()[1]
    else:
        return memoryview(b""), np.zeros(n, np.int64), np.zeros(n, np.int64)
    view = memoryview(data) if data is not None else memoryview(b"")
    return view, bounds[:-1] * itemsize, bounds[1:] * itemsize


def row_crcs(columns: Sequence[pa.Array]) -> np.ndarray:
    """CRC-32 of each row's pixel bytes over ``columns`` (OME-Arrow arrays of equal length).

    Example
    -------
    >>> import numpy as np, omeframe
    >>> rec = omeframe.from_numpy(np.arange(16, dtype=np.uint8).reshape(4, 4), dim_order="YX")
    >>> import pyarrow as pa
    >>> crc = row_crcs([pa.array([rec])])
    >>> crc.dtype, len(crc)
    (dtype('uint32'), 1)
    """
    if not columns:
        return np.zeros(0, np.uint32)
    n = len(columns[0])
    out = np.zeros(n, dtype=np.uint32)
    spans = [_byte_spans(col) for col in columns]
    for data, starts, stops in spans:
        out[:] = [
            zlib.crc32(data[s:e], int(c))
            for s, e, c in zip(starts.tolist(), stops.tolist(), out.tolist(), strict=True)
        ]
    return out
