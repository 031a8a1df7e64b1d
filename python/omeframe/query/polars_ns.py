"""The Polars ``.ome`` namespace over OME-Arrow struct columns.

Importing this module registers ``.ome`` on expressions and on series::

    import polars as pl
    import omeframe.query.polars_ns  # noqa: F401  (omeframe.polars imports it)

    df = pl.read_parquet("cells.parquet")
    df.select(
        pl.col("ome_arrow").ome.shape(),            # List(Int32): [T, C, Z, Y, X]
        pl.col("ome_arrow").ome.dtype(),            # String
        pl.col("ome_arrow").ome.sizes(),            # Struct{t, c, z, y, x}
        pl.col("ome_arrow").ome.channel_names(),    # List(String)
        pl.col("ome_arrow").ome.stats(c=1),         # Struct{min, max, mean, std}
        pl.col("ome_arrow").ome.crop(4, 4, 16, 16), # new records (same variant)
        pl.col("ome_arrow").ome.crop_bbox(pl.col("bbox"), pad=2),  # a shape table's bbox
        pl.col("ome_arrow").ome.thumbnail(64),      # Binary: PNG bytes
    )
    arrays = df["ome_arrow"].ome.to_numpy()         # list of TCZYX arrays

Every method runs a kernel of :mod:`omeframe.query.kernels` on whole batches
(``map_batches``): the column goes to Arrow (``Series.to_arrow``, large or
view string/binary types are fine), the kernel runs, the result comes back
with ``pl.from_arrow``. Arguments are Python ints or expressions (one value
per row, e.g. ``pl.col("x")``). Null records and null arguments give null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from omeframe.model.arrow import OME_ARROW_BYTE_STRUCT, OME_ARROW_STRUCT
from omeframe.query import kernels

__all__ = ["OmeExprNamespace", "OmeSeriesNamespace", "to_numpy"]

_SIZES = pl.Struct({k: pl.Int32 for k in ("t", "c", "z", "y", "x")})
_STATS = pl.Struct({k: pl.Float64 for k in ("min", "max", "mean", "std")})


def _arrow(s: pl.Series) -> pa.Array:
    """A Polars series as one Arrow array."""
    arr = s.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _arg(v: Any) -> Any:
    """Python scalars stay; a Polars series becomes an Arrow array."""
    if isinstance(v, pl.Series):
        return _arrow(v)
    return v


def _series(arr: pa.Array, name: str, dtype: Any = None) -> pl.Series:
    return pl.Series(name, arr) if dtype is None else pl.Series(name, arr, dtype=dtype)


def _struct_dtype(arrow_type: pa.DataType) -> pl.DataType:
    return pl.Series("x", pa.nulls(0, arrow_type)).dtype


def _map(expr: pl.Expr, args: list[Any], fn: Any, return_dtype: Any) -> pl.Expr:
    """Run ``fn(records, *args)`` over batches; expressions among ``args`` are columns."""
    exprs = [a for a in args if isinstance(a, pl.Expr)]
    if not exprs:

        def one(s: pl.Series) -> pl.Series:
            out_dtype = return_dtype if isinstance(return_dtype, pl.DataType) else None
            return _series(fn(_arrow(s), *args), s.name, out_dtype)

        return expr.map_batches(one, return_dtype=return_dtype, is_elementwise=True)

    positions = [i for i, a in enumerate(args) if isinstance(a, pl.Expr)]

    def many(series: Sequence[pl.Series]) -> pl.Series:
        s = series[0]
        values = list(args)
        for pos, col in zip(positions, series[1:], strict=True):
            values[pos] = _arg(col)
        return _series(fn(_arrow(s), *values), s.name, return_dtype if isinstance(return_dtype, pl.DataType) else None)

    return pl.map_batches([expr, *exprs], many, return_dtype=return_dtype, is_elementwise=True)


def to_numpy(series: pl.Series, dtype: Any = None) -> list[np.ndarray | None]:
    """Decode a series of records into TCZYX numpy arrays (``None`` for nulls)."""
    return kernels.to_numpy(_arrow(series), dtype=dtype)


def _crop_dtype(expr: pl.Expr, encoding: str | None) -> Any:
    if encoding is None:
        return pl.dtype_of(expr)  # same variant as the input
    if encoding == "bytes":
        return _struct_dtype(OME_ARROW_BYTE_STRUCT)
    if encoding == "list":
        return _struct_dtype(OME_ARROW_STRUCT)
    raise ValueError(f"encoding must be None, 'bytes' or 'list', got {encoding!r}")


@pl.api.register_expr_namespace("ome")
class OmeExprNamespace:
    """``pl.col("ome_arrow").ome``: pixel-aware expressions over OME-Arrow records."""

    def __init__(self, expr: pl.Expr) -> None:
        self._expr = expr

    def shape(self) -> pl.Expr:
        """``[T, C, Z, Y, X]`` as ``List(Int32)``."""
        return _map(self._expr, [], kernels.shape, pl.List(pl.Int32))

    def dtype(self) -> pl.Expr:
        """Native pixel dtype name (``String``)."""
        return _map(self._expr, [], kernels.dtype, pl.String)

    def sizes(self) -> pl.Expr:
        """``Struct{t, c, z, y, x}`` of ``Int32``."""
        return _map(self._expr, [], kernels.sizes, _SIZES)

    def channel_names(self) -> pl.Expr:
        """Channel names as ``List(String)``."""
        return _map(self._expr, [], kernels.channel_names, pl.List(pl.String))

    def stats(self, c: int | pl.Expr = 0) -> pl.Expr:
        """``Struct{min, max, mean, std}`` (``Float64``) of channel ``c`` (all T, Z, Y, X)."""
        return _map(self._expr, [c], kernels.stats, _STATS)

    def crop(
        self,
        x: int | pl.Expr,
        y: int | pl.Expr,
        w: int | pl.Expr,
        h: int | pl.Expr,
        *,
        encoding: str | None = None,
    ) -> pl.Expr:
        """New records cropped to ``[y, y+h) x [x, x+w)``, clipped to each image.

        ``encoding=None`` keeps the input's struct variant (the input must be
        a canonical OME-Arrow struct); ``"bytes"`` / ``"list"`` pick one.
        """

        def fn(records: pa.Array, *a: Any) -> pa.Array:
            enc = encoding or kernels._variant(records)
            return kernels.crop(records, *a, encoding=enc)

        return _map(self._expr, [x, y, w, h], fn, _crop_dtype(self._expr, encoding))

    def crop_bbox(self, bbox: pl.Expr, pad: int | pl.Expr = 0, *, encoding: str | None = None) -> pl.Expr:
        """New records cropped to a shape table's ``bbox`` (``Struct{min, max}``), grown by ``pad``.

        As SQL's ``ome_crop(img, bbox, pad)``: the box's last two axes are y
        and x, ``max`` is one past the last pixel, the window is clipped to
        each image; for joins of shape tables with image tables.

        Example
        -------
        >>> df.join(shapes, on="image_id").select(  # doctest: +SKIP
        ...     "object_id", pl.col("ome_arrow").ome.crop_bbox(pl.col("bbox"), pad=4))
        """

        def fn(records: pa.Array, *a: Any) -> pa.Array:
            enc = encoding or kernels._variant(records)
            return kernels.crop_bbox(records, *a, encoding=enc)

        return _map(self._expr, [bbox, pad], fn, _crop_dtype(self._expr, encoding))

    def thumbnail(self, size: int | pl.Expr = 256) -> pl.Expr:
        """PNG bytes (``Binary``) of the middle Z plane, all channels, longer side <= size."""
        return _map(self._expr, [size], kernels.thumbnail, pl.Binary)

    def to_numpy(self) -> pl.Expr:
        """TCZYX numpy arrays as an ``Object`` column (prefer ``Series.ome.to_numpy``)."""

        def fn(s: pl.Series) -> pl.Series:
            return pl.Series(s.name, to_numpy(s), dtype=pl.Object)

        return self._expr.map_batches(fn, return_dtype=pl.Object, is_elementwise=True)


@pl.api.register_series_namespace("ome")
class OmeSeriesNamespace:
    """``df["ome_arrow"].ome``: the same kernels on a series, plus ``to_numpy``."""

    def __init__(self, series: pl.Series) -> None:
        self._s = series

    def _run(self, fn: Any, *args: Any) -> pl.Series:
        return pl.Series(self._s.name, fn(_arrow(self._s), *[_arg(a) for a in args]))

    def shape(self) -> pl.Series:
        return self._run(kernels.shape)

    def dtype(self) -> pl.Series:
        return self._run(kernels.dtype)

    def sizes(self) -> pl.Series:
        return self._run(kernels.sizes)

    def channel_names(self) -> pl.Series:
        return self._run(kernels.channel_names)

    def stats(self, c: int | pl.Series = 0) -> pl.Series:
        return self._run(kernels.stats, c)

    def crop(self, x: Any, y: Any, w: Any, h: Any, *, encoding: str | None = None) -> pl.Series:
        arr = _arrow(self._s)
        out = kernels.crop(arr, _arg(x), _arg(y), _arg(w), _arg(h), encoding=encoding)
        return pl.Series(self._s.name, out)

    def crop_bbox(self, bbox: Any, pad: Any = 0, *, encoding: str | None = None) -> pl.Series:
        arr = _arrow(self._s)
        return pl.Series(self._s.name, kernels.crop_bbox(arr, _arg(bbox), _arg(pad), encoding=encoding))

    def thumbnail(self, size: int | pl.Series = 256) -> pl.Series:
        return self._run(kernels.thumbnail, size)

    def to_numpy(self, dtype: Any = None) -> list[np.ndarray | None]:
        """Decode every record into a TCZYX numpy array (``None`` for nulls)."""
        return to_numpy(self._s, dtype=dtype)
