"""Eager transforms of records: crop and T/C/Z selection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from omeframe.formats.record.decode import read_region
from omeframe.formats.record.source import record_like
from omeframe.model.record import RecordView
from omeframe.model.selection import Selection

__all__ = ["slice_ome_arrow", "crop_selection", "record_like"]


def crop_selection(
    shape: Iterable[int],
    x_min: int,
    x_max: int,
    y_min: int,
    y_max: int,
    t_indices: Iterable[int] | None = None,
    c_indices: Iterable[int] | None = None,
    z_indices: Iterable[int] | None = None,
) -> Selection:
    """The :class:`Selection` a crop of an image of ``shape`` reads.

    Crop semantics: ``[y_min, y_max)`` and ``[x_min, x_max)`` are half-open
    pixel ranges; T/C/Z index sets count from 0 (no negative indices) and are
    sorted and de-duplicated. Validation and messages are
    :meth:`Selection.normalize`'s.

    Raises
    ------
    SelectionError
        For bounds outside the image, empty or reversed ranges, empty index
        sets and out-of-range indices.

    Example
    -------
    >>> crop_selection((2, 3, 4, 10, 10), 0, 5, 2, 8, z_indices=[3, 1, 3])
    Selection(t=None, c=None, z=(1, 3), y=(2, 8), x=(0, 5))
    """
    return Selection.normalize(
        tuple(shape),
        t=t_indices,
        c=c_indices,
        z=z_indices,
        y=(y_min, y_max),
        x=(x_min, x_max),
        negative_indices=False,
    ).sorted_unique()


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

    Bounds are half-open pixel indices. Index sets count from 0 (negative
    indices are out of range) and are sorted, de-duplicated and re-numbered
    ``0..n-1`` in the result. Only the chunks the crop touches are decoded;
    the result keeps the source's encoding, compression and chunk shape
    (clipped to the crop).

    Parameters
    ----------
    data
        Record as ``pa.StructScalar``, one-row ``StructArray`` or dict.
    x_min, x_max, y_min, y_max
        Half-open crop bounds, ``0 <= min < max <= size``.
    t_indices, c_indices, z_indices
        Indices to keep (``None`` keeps the whole axis).
    fill_missing
        Zero-fill selected planes the record does not store; when false, a
        selection that reaches such a plane raises ``SelectionError``.

    Returns
    -------
    pyarrow.StructScalar
        The cropped record.

    Raises
    ------
    SelectionError
        For bounds outside the image, empty or reversed ranges, and
        out-of-range indices (see :func:`crop_selection`).

    Example
    -------
    >>> import numpy as np, omeframe as of
    >>> rec = of.from_numpy(np.arange(96, dtype="uint8").reshape(1, 2, 1, 6, 8), dim_order="TCZYX")
    >>> of.to_numpy(slice_ome_arrow(rec, 2, 5, 0, 3, c_indices=[1])).shape
    (1, 1, 1, 3, 3)
    """
    view = RecordView(data)
    sel = crop_selection(view.shape, x_min, x_max, y_min, y_max, t_indices, c_indices, z_indices)
    pixels = read_region(view, t=sel.t, c=sel.c, z=sel.z, y=sel.y, x=sel.x, fill_missing=fill_missing)
    return record_like(view, pixels, channels=None if sel.c is None else list(sel.c))
