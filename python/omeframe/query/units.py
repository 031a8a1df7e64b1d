"""Crops in physical units at a common resolution, over columns of records (``ome_crop_um``).

A table can hold images of different pixel sizes. :func:`crop_um` cuts the
same box *in micrometres* out of every record and resamples each crop to one
target resolution (µm per pixel), so the results line up whatever each image's
pixel size: the read goes through :meth:`omeframe.engine.lazy.LazyImage.at_resolution`
(the coarsest stored level at least as fine as asked, then the exact
area-weighted resampling documented in :mod:`omeframe.engine.resample`; integer
dtypes stay integer). The box is clipped to each image (like ``ome_crop``);
rows whose clipped box is empty, and null rows or arguments, give null. An
image without a physical pixel size, or with a unit that is not a length,
raises :class:`~omeframe.errors.UnitError`.

Example
-------
>>> crops = crop_um(table["ome_arrow"], 10.0, 10.0, 50.0, 50.0, 0.5)   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.engine.lazy import LazyImage
from omeframe.formats.array.source import RecordSource
from omeframe.formats.record.builder import RecordBuilder
from omeframe.model.header import select_channels
from omeframe.model.record import RecordView
from omeframe.model.units import pixel_size_um
from omeframe.query.kernels import _valid, record_array

__all__ = ["crop_um"]


def _floats(value: Any, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A scalar or per-row number as ``(float64 values, valid mask)`` of length n."""
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks() if value.num_chunks else pa.array([], pa.float64())
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    if isinstance(value, pa.Array):
        if len(value) == 1 and n != 1:
            value = pa.repeat(value[0], n) if value[0].is_valid else pa.nulls(n, pa.float64())
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} values for {n} records")
        if pa.types.is_null(value.type):
            return np.zeros(n), np.zeros(n, bool)
        if not (pa.types.is_integer(value.type) or pa.types.is_floating(value.type) or pa.types.is_decimal(value.type)):
            raise TypeError(f"{name} must be a number of micrometres, got {value.type}")
        ok = _valid(value)
        return value.cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64), ok
    if value is None:
        return np.zeros(n), np.zeros(n, bool)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number of micrometres, got {type(value).__name__}")
    return np.full(n, float(value)), np.ones(n, bool)


def crop_um(records: Any, x_um: Any, y_um: Any, w_um: Any, h_um: Any, mpp: Any) -> pa.StructArray:
    """Crop each record to ``[x_um, x_um + w_um) x [y_um, y_um + h_um)`` µm at ``mpp`` µm per pixel.

    Arguments are scalars or one value per row. Returns byte-variant records
    (all T, C, Z) whose pixel size is ``mpp`` µm.

    Raises
    ------
    UnitError
        When an image has no physical pixel size or a unit that is not a length.
    ValueError
        When ``mpp`` is not positive.
    """
    arr = record_array(records)
    n = len(arr)
    xs, okx = _floats(x_um, n, "x_um")
    ys, oky = _floats(y_um, n, "y_um")
    ws, okw = _floats(w_um, n, "w_um")
    hs, okh = _floats(h_um, n, "h_um")
    ms, okm = _floats(mpp, n, "mpp")
    if (ms[okm] <= 0).any():
        raise ValueError(f"mpp must be > 0 micrometres per pixel, got {float(ms[okm][ms[okm] <= 0][0])}")
    ok = okx & oky & okw & okh & okm & _valid(arr)
    builder = RecordBuilder(chunk_encoding="bytes", chunk_shape=(1, 512, 512))
    rows: list[int] = []
    for i in np.flatnonzero(ok).tolist():
        view = RecordView(arr[i])
        src = RecordSource(view)
        h = src.header()
        py, px = pixel_size_um(h, "y"), pixel_size_um(h, "x")
        _, _, _, sy, sx = src.shape
        x0, x1 = max(xs[i], 0.0), min(xs[i] + ws[i], sx * px)
        y0, y1 = max(ys[i], 0.0), min(ys[i] + hs[i], sy * py)
        if x1 <= x0 or y1 <= y0:
            continue
        plan = LazyImage(src).select(x_um=(x0, x1), y_um=(y0, y1)).at_resolution(float(ms[i]))
        pix = plan.execute()
        out_h = plan.source.header()
        chans = select_channels(out_h.channels, None, pix.shape[1])
        builder.add(pix, replace(out_h, channels=chans))
        rows.append(i)
    if not rows:
        return pa.nulls(n, builder.struct_type)
    built = builder.build()
    if len(rows) == n:
        return built
    take = np.full(n, -1, dtype=np.int64)
    take[rows] = np.arange(len(rows))
    mask = np.ones(n, dtype=bool)
    mask[rows] = False
    return built.take(pa.array(take, mask=mask))
