"""Sources over array-likes with arbitrary axes, and over a user ``read_func``.

:class:`AxesArraySource` views any array-like (numpy array or memmap, zarr
array, h5py dataset, dask array, ...) whose axes are a subset of ``STCZYX`` in
any order as a TCZYX image. ``S`` is a *sample* axis (CAREamics' meaning): a
source shows one sample, so an array with ``S=4`` is four images.

:class:`CustomSource` reads a file with a user callback
``read_func(path, **read_kwargs) -> array-like``. The callback runs once, on
first use (shape, dtype, header or pixels), and its result is kept: an
in-memory array is sliced as views; a memmap or any lazily indexed array-like
(zarr, h5py, dask) is kept as is and sliced plane by plane, so only the planes
a plan touches are read from disk.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from omeframe.engine.pieces import Pieces, make_pieces
from omeframe.engine.source import LazySource, StoredSource
from omeframe.model.dims import CANONICAL
from omeframe.model.errors import DimOrderError
from omeframe.model.header import ImageHeader, default_channels

__all__ = ["LOADER_AXES", "check_axes", "AxesArraySource", "CustomSource", "LazyArray"]

#: Letters accepted in loader axes strings (S = sample / series axis).
LOADER_AXES = "STCZYX"


def check_axes(axes: Any, shape: tuple[int, ...] | None = None, *, what: str = "the data") -> str:
    """Validate an axes string (a subset of ``STCZYX`` in any order, with Y and X).

    When ``shape`` is given, the string must name exactly one axis per
    dimension. Raises :class:`~omeframe.errors.DimOrderError` (a ``ValueError``)
    with the offending letters or sizes.
    """
    if not isinstance(axes, str) or not axes.strip():
        raise DimOrderError(f"axes must be a non-empty string such as 'YX' or 'SCZYX', got {axes!r}")
    order = axes.strip().upper()
    unknown = sorted({a for a in order if a not in LOADER_AXES})
    if unknown:
        raise DimOrderError(
            f"axes {axes!r} has unknown letter(s) {unknown}; axes must be a subset of 'STCZYX'"
        )
    repeated = sorted({a for a in order if order.count(a) > 1})
    if repeated:
        raise DimOrderError(f"axes {axes!r} repeats letter(s) {repeated}")
    missing = [a for a in "YX" if a not in order]
    if missing:
        raise DimOrderError(f"axes {axes!r} lacks {missing}; every image needs Y and X")
    if shape is not None and len(order) != len(shape):
        raise DimOrderError(
            f"axes {axes!r} names {len(order)} axes but {what} has {len(shape)} dimensions "
            f"(shape {tuple(int(s) for s in shape)}); give exactly one letter per dimension"
        )
    return order


def _native(dtype: Any) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    return dt.newbyteorder("=") if dt.byteorder == ">" else dt


class AxesArraySource(StoredSource):
    """An array-like with axes from ``STCZYX`` seen as one TCZYX image.

    Parameters
    ----------
    array
        Anything with ``shape``, ``dtype`` and numpy-style ``__getitem__``.
    axes
        One letter per dimension, a subset of ``STCZYX`` (validated).
    header
        Image metadata (default: ids ``"unnamed"``, channels ``C0..``).
    sample
        The index along ``S`` this source shows (required when ``axes`` has
        ``S``, forbidden otherwise).
    keep
        Objects (open files, stores) that must live as long as the array.

    Pieces are the array's chunks when it has ``chunks`` (zarr), ``(t, c)``
    Z-stacks for in-memory numpy arrays, and single planes otherwise (memmaps
    and other lazily indexed array-likes), so a plan reads only what it needs.
    """

    def __init__(
        self,
        array: Any,
        axes: str,
        header: ImageHeader | None = None,
        describe: str | None = None,
        *,
        sample: int | None = None,
        keep: Any = None,
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in array.shape)
        self.axes = check_axes(axes, shape)
        self.array = array
        self._keep = keep
        sizes = dict(zip(self.axes, shape, strict=True))
        if "S" in self.axes:
            if sample is None:
                raise DimOrderError(
                    f"axes {self.axes!r} has a sample axis S (size {sizes['S']}); pick one with sample="
                )
            if not 0 <= int(sample) < sizes["S"]:
                raise IndexError(f"sample {sample} is out of range: S={sizes['S']}")
            self.sample: int | None = int(sample)
        elif sample not in (None, 0):
            raise DimOrderError(f"sample={sample} given but axes {self.axes!r} have no S axis")
        else:
            self.sample = None
        t, c, z, y, x = (sizes.get(a, 1) for a in CANONICAL)
        self._shape = (t, c, z, y, x)
        self._dtype = _native(array.dtype)
        self._header = header or ImageHeader.basic("unnamed", "unknown", self._shape[1])
        if len(self._header.channels or []) != self._shape[1]:
            self._header = replace(self._header, channels=default_channels(None, self._shape[1]))
        s = "" if self.sample is None else f" sample {self.sample}"
        self.describe = (describe or f"{type(array).__name__} {shape} {self._dtype}") + f" axes {self.axes}{s}"
        chunks = None if isinstance(array, np.ndarray) else _chunk_sizes(getattr(array, "chunks", None), len(shape))
        self._chunked = chunks is not None
        self._in_memory = isinstance(array, np.ndarray) and not isinstance(array, np.memmap)
        if chunks is not None:
            cs = dict(zip(self.axes, chunks, strict=True))
            self._chunks: tuple[int, int, int] | None = (cs.get("Z", 1), cs.get("Y", 1), cs.get("X", 1))
        else:
            self._chunks = None


    def chunk_shape(self) -> tuple[int, int, int] | None:
        return self._chunks

    def _open_pixels(self) -> Pieces:
        st, sc, sz, sy, sx = self._shape
        if self._chunks is not None:
            cz, cy, cx = self._chunks
        elif self._in_memory:
            cz, cy, cx = sz, sy, sx
        else:
            cz, cy, cx = 1, sy, sx
        grid = (st, sc, -(-sz // cz), -(-sy // cy), -(-sx // cx))
        origins = np.indices(grid).reshape(5, -1).T.astype(np.int64) * np.array([1, 1, cz, cy, cx], dtype=np.int64)
        extents = np.stack(
            [
                np.minimum(cz, sz - origins[:, 2]),
                np.minimum(cy, sy - origins[:, 3]),
                np.minimum(cx, sx - origins[:, 4]),
            ],
            axis=1,
        )
        arr, axes, s, dtype = self.array, self.axes, self.sample, self._dtype
        kept = [a for a in axes if a in "ZYX"]
        order = kept if "Z" in kept else ["Z", *kept]
        perm = [order.index(a) for a in "ZYX"]

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c, z, y, x = (int(v) for v in origins[i])
            dz, dy, dx = (int(v) for v in extents[i])
            region = {"S": s, "T": t, "C": c, "Z": slice(z, z + dz), "Y": slice(y, y + dy), "X": slice(x, x + dx)}
            block = np.asarray(arr[tuple(region[a] for a in axes)])
            if "Z" not in kept:
                block = block[np.newaxis]
            block = block.transpose(perm)
            return block if block.dtype == dtype else block.astype(dtype)

        nbytes = extents.prod(axis=1) * dtype.itemsize
        return make_pieces(
            self.shape, dtype, origins, extents, decode, nbytes.astype(np.int64), not self._in_memory, self.describe
        )


def _chunk_sizes(v: Any, n: int) -> tuple[int, ...] | None:
    """``v`` as ``n`` positive ints (a zarr-style ``chunks``), else ``None``."""
    try:
        sizes = tuple(int(c) for c in v)  # dask's tuple-of-tuples fails here
    except (TypeError, ValueError):
        return None
    return sizes if len(sizes) == n and all(c > 0 for c in sizes) else None


class LazyArray:
    """``read_func(path, **read_kwargs)``, called once on first :meth:`get` (thread-safe)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        read_func: Callable[..., Any],
        read_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not callable(read_func):
            raise TypeError(f"read_func must be callable, got {type(read_func).__name__}")
        self.path = Path(path)
        self.read_func = read_func
        self.read_kwargs = dict(read_kwargs or {})
        self._value: Any = None
        self._lock = threading.Lock()

    @property
    def func_name(self) -> str:
        return getattr(self.read_func, "__qualname__", None) or type(self.read_func).__name__

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def get(self) -> Any:
        with self._lock:
            if self._value is None:
                if not self.path.exists():
                    raise FileNotFoundError(f"no such file: {str(self.path)!r}")
                out = self.read_func(self.path, **self.read_kwargs)
                if out is None:
                    raise TypeError(
                        f"read_func {self.func_name} returned None for {str(self.path)!r}; it must return an array"
                    )
                if not (hasattr(out, "shape") and hasattr(out, "dtype") and hasattr(out, "__getitem__")):
                    out = np.asarray(out)
                if len(out.shape) < 2:
                    raise DimOrderError(
                        f"read_func {self.func_name} returned a {len(out.shape)}-D array for "
                        f"{str(self.path)!r}; images need at least Y and X"
                    )
                self._value = out
            return self._value


class CustomSource(LazySource):
    """A file read by a user callback, planned lazily.

    Parameters
    ----------
    path
        The file handed to ``read_func``.
    read_func
        ``read_func(path, **read_kwargs) -> array-like``; called once, on
        first use. Return a memmap (e.g. ``np.load(path, mmap_mode="r")``)
        or another lazily indexed array to read plane by plane.
    axes
        Axes of the returned array, a subset of ``STCZYX``; checked against
        its number of dimensions when it is read.
    sample
        Index along ``S`` when ``axes`` has one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | LazyArray,
        read_func: Callable[..., Any] | None = None,
        axes: str = "YX",
        read_kwargs: Mapping[str, Any] | None = None,
        *,
        sample: int | None = None,
        image_id: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(path, LazyArray):
            self.lazy = path
        else:
            if read_func is None:
                raise TypeError("CustomSource needs read_func=, a callable read_func(path, **read_kwargs)")
            self.lazy = LazyArray(path, read_func, read_kwargs)
        self.axes = check_axes(axes)
        self.sample = sample
        p = self.lazy.path
        s = "" if sample is None else f"_s{sample}"
        self._image_id = image_id or f"{p.stem}{s}"
        self._name = name or p.name
        self.describe = f"custom read_func {self.lazy.func_name} on {str(p)!r}"
        self._inner: AxesArraySource | None = None
        self._inner_lock = threading.Lock()

    def _view(self) -> AxesArraySource:
        with self._inner_lock:
            if self._inner is None:
                arr = self.lazy.get()
                what = f"the array read_func {self.lazy.func_name} returned for {str(self.lazy.path)!r}"
                check_axes(self.axes, tuple(arr.shape), what=what)
                self._inner = AxesArraySource(
                    arr, self.axes, ImageHeader.basic(self._image_id, self._name, 1), self.describe, sample=self.sample
                )
            return self._inner

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._view().shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._view().dtype

    def header(self) -> ImageHeader:
        return self._view().header()

    def chunk_shape(self) -> tuple[int, int, int] | None:
        return self._view().chunk_shape()

    def _open_pixels(self) -> Pieces:
        return self._view().pixel_source()
