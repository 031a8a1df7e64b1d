"""Eager transforms of records: crop and T/C/Z selection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from omeframe.formats.record.decode import read_region
from omeframe.formats.record.source import record_like
from omeframe.model.errors import SelectionError
from omeframe.model.record import RecordView

__all__ = ["slice_ome_arrow", "record_like"]


def _keep(sel: Iterable[int] | None, size: int, axis: str) -> list[int] | None:
    if sel is None:
        return None
    keep = sorted({int(i) for i in sel})
    if not keep:
        raise SelectionError(f"empty {axis} selection: keep at least one index in [0, {size})")
    bad = [i for i in keep if not 0 <= i < size]
    if bad:
        raise SelectionError(
            f"{axis} index {bad[0]} is out of range for {axis}={size} (valid 0..{size - 1})"
        )
    return keep


def slice_ome_arrow(
    data: Any,
    x_min: int,
    x_max: int,
    y_min: int,
    y_max: int,
    t_indices: Iterable[int] | None = None,
    c_indices: Iterable[int] | None = None,
    z_indices: Iterable[int] | None = None,
    fill_missing: bool = True,
) -> pa.StructScalar:
    """Crop a record to ``[y_min:y_max, x_min:x_max]`` and keep the given T/C/Z.

    Bounds are half-open pixel indices. Index sets are sorted, de-duplicated
    and re-numbered ``0..n-1`` in the result. Only the chunks the crop touches
    are decoded; the result keeps the source's encoding, compression and
    chunk shape (clipped to the crop).

    Parameters
    ----------
    fill_missing
        Zero-fill selected planes the record does not store; when false, a
        selection that reaches such a plane raises ``SelectionError``.

    Raises
    ------
    SelectionError
        For bounds outside the image, empty or reversed ranges, and
        out-of-range indices.
    """
    view = RecordView(data)
    st, sc, sz, sy, sx = view.shape
    keep_c = _keep(c_indices, sc, "C")
    pixels = read_region(
        view,
        t=_keep(t_indices, st, "T"),
        c=keep_c,
        z=_keep(z_indices, sz, "Z"),
        y=(y_min, y_max),
        x=(x_min, x_max),
        fill_missing=fill_missing,
    )
    return record_like(view, pixels, channels=keep_c)
