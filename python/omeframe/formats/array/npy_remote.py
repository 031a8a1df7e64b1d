"""``.npy`` files on an object store, read by byte ranges.

A local ``.npy`` is memory-mapped (:func:`omeframe.formats.array.npy.load_npy`);
a remote one has no memory map, so :func:`open_remote_npy` reads its header
(one ranged GET of the first 64 KiB; an array that fits in it is read
whole by that request) and hands out one piece per ``(t, c)`` Z-stack.
When the file stores its axes in TCZYX order (C order, no trailing RGB
axis: ``YX``, ``ZYX``, ``TCYX``, ``TCZYX``) each piece is one
contiguous byte range and costs one ranged GET of exactly its bytes; an
interleaved (``YXC``) or Fortran-order array is read in one GET of its
whole payload, once, when the first piece is decoded.

Example
-------
>>> from omeframe.storage.remote import RemoteStore
>>> import io, numpy as np
>>> buf = io.BytesIO(); np.save(buf, np.arange(12, dtype=np.uint16).reshape(3, 4))
>>> RemoteStore("memory://omeframe-npy-doc").put("a.npy", buf.getvalue())
>>> open_remote_npy("memory://omeframe-npy-doc/a.npy").shape
(1, 1, 1, 3, 4)
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from omeframe.engine.pieces import Pieces, make_pieces
from omeframe.engine.source import LazySource
from omeframe.formats.array.npy import infer_array_dims
from omeframe.formats.array.source import tc_stacks
from omeframe.model.dims import to_tczyx
from omeframe.model.errors import CorruptFileError
from omeframe.model.header import ImageHeader, default_channels
from omeframe.storage.remote import RemoteFile, open_remote_file

__all__ = ["RemoteNpySource", "open_remote_npy"]

_HEAD = 64 << 10


def _read_header(f: RemoteFile) -> tuple[tuple[int, ...], np.dtype[Any], bool, int, bytes]:
    """``(shape, dtype, fortran_order, data offset, first block)`` of the ``.npy`` object ``f``."""
    fmt = np.lib.format
    head = f.read_range(0, min(f.size, _HEAD))
    bio = io.BytesIO(head)
    try:
        version = fmt.read_magic(bio)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(bio)
        else:
            if len(head) < 12:
                raise ValueError("truncated header")
            n = int.from_bytes(head[8:12], "little")
            if 12 + n > len(head):  # a header beyond the first block (huge structured dtypes)
                bio = io.BytesIO(f.read_range(0, 12 + n))
                fmt.read_magic(bio)
            shape, fortran, dtype = fmt.read_array_header_2_0(bio)
    except ValueError as exc:
        raise CorruptFileError(f"{f.url!r} is not a readable .npy array file: {exc}") from exc
    if dtype.hasobject:
        raise CorruptFileError(f"{f.url!r} holds Python objects, not an image array")
    return tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), bio.tell(), head


class RemoteNpySource(LazySource):
    """A remote ``.npy`` array as a source (see the module docstring for its reads)."""

    def __init__(self, file: RemoteFile, dim_order: str | None = None) -> None:
        super().__init__()
        self.file = file
        shape, dtype, fortran, offset, head = _read_header(file)
        self.file_shape, self.file_dtype, self.fortran, self.offset = shape, dtype, fortran, offset
        if not 2 <= len(shape) <= 5:
            raise CorruptFileError(f"{file.url!r}: a {len(shape)}-D array is no image (2 to 5 axes expected)")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes > file.size:
            raise CorruptFileError(
                f"{file.url!r} is truncated: its header declares {nbytes:,} bytes of data, "
                f"the object holds {file.size - offset:,}"
            )
        self.dims = dim_order or infer_array_dims(shape)
        zero = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))
        self._shape5 = tuple(int(s) for s in to_tczyx(zero, self.dims).shape)
        canonical = "".join(a for a in "TCZYX" if a in self.dims)
        self.contiguous = not fortran and self.dims == canonical
        self.describe = f"remote .npy {file.url!r} {shape} {dtype}"
        # a small array came whole with the header block: no further request
        self._head = head if offset + nbytes <= len(head) else None
        self._whole: np.ndarray | None = None
        self._whole_lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._shape5  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.file_dtype.newbyteorder("=") if self.file_dtype.byteorder == ">" else self.file_dtype

    def header(self) -> ImageHeader:
        name = self.file.url.rsplit("/", 1)[-1]
        return ImageHeader(image_id=name.rsplit(".", 1)[0], name=name, image_type=None,
                           acquisition_datetime=None, channels=default_channels(None, self._shape5[1]))

    def _tczyx(self) -> np.ndarray:
        """The whole array (one GET of the payload, kept), as a TCZYX view."""
        with self._whole_lock:
            if self._whole is None:
                n = math.prod(self.file_shape) * self.file_dtype.itemsize
                data = self._head[self.offset:self.offset + n] if self._head is not None else (
                    self.file.read_range(self.offset, n))
                arr = np.frombuffer(data, self.file_dtype).reshape(
                    self.file_shape, order="F" if self.fortran else "C")
                self._whole = to_tczyx(arr, self.dims)
            return self._whole

    def _open_pixels(self) -> Pieces:
        _, sc, sz, sy, sx = self.shape
        origins, extents = tc_stacks(self.shape)
        stack = sz * sy * sx * self.file_dtype.itemsize
        native = self.dtype

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c = (int(v) for v in origins[i, :2])
            if self.contiguous and self._head is None:
                start = self.offset + (t * sc + c) * stack
                out = np.frombuffer(self.file.read_range(start, stack), self.file_dtype).reshape(sz, sy, sx)
            else:
                out = self._tczyx()[t, c]
            return out.astype(native, copy=False)

        nbytes = np.full(len(origins), stack, dtype=np.int64)
        return make_pieces(self.shape, native, origins, extents, decode, nbytes, False, self.describe)


def open_remote_npy(
    url: str, storage_options: Mapping[str, Any] | None = None, dim_order: str | None = None
) -> RemoteNpySource:
    """The ``.npy`` object at ``url`` as a lazy source (axes from ``dim_order`` or the shape).

    Raises
    ------
    FileNotFoundError
        When no object exists at ``url``.
    CorruptFileError
        When the object is no ``.npy`` file, holds Python objects or is truncated.
    """
    f = open_remote_file(url, storage_options)
    if f is None:
        raise ValueError(f"{url!r} is a local path, not a URL")
    return RemoteNpySource(f, dim_order)
