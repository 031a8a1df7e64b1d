"""Tensor views (``ome_arrow.tensor``) with ome-arrow 0.1.0's spelling and backing data.

:class:`TensorView` and :class:`LazyTensorView` are omeframe's views (same
plans, same reads) with what ome-arrow's views show on top:

- layouts are spelled with ``H``/``W`` (``"CHW"``, ``"TZCHW"``, ``"HWC"``);
  ``Y``/``X`` are accepted on input. A lazy view reports a layout given to it
  as it was given.
- ``_data`` is the backing data as given, a ``ChunkedArray`` normalised by
  ``chunk_policy`` (``"combine"`` merges its chunks, ``"auto"`` unwraps a
  single chunk, ``"keep"`` keeps it); an array of several rows is viewed at
  its first row, as ome-arrow does.
- ``to_dlpack(mode="arrow")`` of one full ``(t, z, c)`` plane of a list-encoded
  record hands out the plane's Arrow values buffer itself (zero-copy) when
  the view is backed by an Arrow array (``OMEArrow`` read from Parquet or
  Vortex keeps one). A view over a ``StructScalar`` or dict first converts
  the record to an Arrow array through Python objects
  (:meth:`TensorView._data_py_dict`) and warns that zero-copy is not
  guaranteed, as ome-arrow does. Everything else (several planes, crops, a
  dtype other than the stored list type, byte-encoded chunks) is exported as
  a flat copy, where ome-arrow raises ``ValueError``.
- ``to_numpy`` and the iterators read through omeframe's plans and never
  build Python records.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omeframe.engine.lazy import LazyImage
from omeframe.formats.array.source import RecordSource
from omeframe.ops import tensor_view as _tv
from omeframe.ops.tensor_spec import UNSET, ViewSpec

__all__ = ["LazyTensorView", "TensorView"]

_HW = str.maketrans({"Y": "H", "X": "W"})
_CHUNK_POLICIES = ("auto", "combine", "keep")


def hw_layout(layout: str) -> str:
    """``layout`` spelled as ome-arrow spells it: ``H``/``W`` for ``Y``/``X``.

    Example
    -------
    >>> hw_layout("TZCYX")
    'TZCHW'
    """
    return layout.translate(_HW)


def check_chunk_policy(chunk_policy: str) -> str:
    """The normalised ``chunk_policy`` (``ValueError`` in ome-arrow's words otherwise)."""
    policy = str(chunk_policy).strip().lower()
    if policy not in _CHUNK_POLICIES:
        raise ValueError(f"Unsupported chunk_policy {chunk_policy!r}. Expected one of: auto, combine, keep.")
    return policy


def _check_device(device: str) -> str:
    d = str(device).strip().lower()
    if d not in ("cpu", "cuda"):
        raise ValueError(f"Unsupported device {device!r}; expected 'cpu' or 'cuda'.")
    return d


def emit_deferred(caught: Sequence[warnings.WarningMessage]) -> None:
    """Re-emit warnings recorded while a source was opened, attributed to the caller's caller."""
    for w in caught:
        warnings.warn(str(w.message), w.category, stacklevel=3)


def _plane_values(struct_arr: pa.StructArray, t: int, z: int, c: int, size_y: int, size_x: int) -> pa.Array | None:
    """The Arrow values of plane ``(t, z, c)`` of the array's first record, without copying.

    ``None`` when the plane is not one contiguous run of a list-encoded
    ``planes`` entry or ``chunks`` entry (byte-encoded chunks, tiled chunks,
    a missing plane).
    """
    row = struct_arr.slice(0, 1)
    names = {f.name for f in row.type}
    chunks = row.field("chunks") if "chunks" in names else None
    if chunks is not None and chunks.is_valid()[0].as_py() and len(chunks[0]) > 0:
        items = pc.list_flatten(chunks)
        if "pixels" not in {f.name for f in items.type}:
            return None  # byte-encoded chunks: decoding is a copy
        grid = row.field("chunk_grid")[0].as_py() if "chunk_grid" in names else None
        if grid and str(grid.get("chunk_order") or "ZYX").upper() != "ZYX":
            return None
        z0 = items.field("z").to_numpy(zero_copy_only=False)
        sz = items.field("shape_z").to_numpy(zero_copy_only=False)
        hit = np.flatnonzero(
            (items.field("t").to_numpy(zero_copy_only=False) == t)
            & (items.field("c").to_numpy(zero_copy_only=False) == c)
            & (z0 <= z) & (z < z0 + sz)
            & (items.field("y").to_numpy(zero_copy_only=False) == 0)
            & (items.field("x").to_numpy(zero_copy_only=False) == 0)
            & (items.field("shape_y").to_numpy(zero_copy_only=False) == size_y)
            & (items.field("shape_x").to_numpy(zero_copy_only=False) == size_x)
        )
        if len(hit) != 1:
            return None
        i = int(hit[0])
        values = items.field("pixels")[i].values
        n = size_y * size_x
        start = (z - int(z0[i])) * n
        return values.slice(start, n) if len(values) >= start + n else None
    if "planes" not in names or not row.field("planes").is_valid()[0].as_py():
        return None
    planes = pc.list_flatten(row.field("planes"))
    hit = np.flatnonzero(
        (planes.field("t").to_numpy(zero_copy_only=False) == t)
        & (planes.field("z").to_numpy(zero_copy_only=False) == z)
        & (planes.field("c").to_numpy(zero_copy_only=False) == c)
    )
    if len(hit) != 1:
        return None
    values = planes.field("pixels")[int(hit[0])].values
    return values if len(values) == size_y * size_x else None


class TensorView(_tv.TensorView):
    """omeframe's :class:`~omeframe.TensorView` with ome-arrow 0.1.0's layout spelling and backing data.

    Parameters are those of :class:`omeframe.TensorView`; ``data`` may also
    be a ``StructArray`` / ``ChunkedArray`` of several rows (its first record
    is viewed).

    Example
    -------
    >>> import numpy as np
    >>> from omeframe.compat.ome_arrow.ingest import from_numpy
    >>> view = TensorView(from_numpy(np.zeros((1, 2, 1, 3, 4), "uint16")), t=0, z=0)
    >>> view.layout, view.to_numpy().shape
    ('CHW', (2, 3, 4))
    """

    _data: Any
    _struct_array: pa.StructArray | None
    _struct_scalar: pa.StructScalar | None
    _data_py: dict[str, Any] | None

    def __init__(
        self,
        data: Any,
        *,
        plane_loader: Any = None,
        t: int | slice | Sequence[int] | None = None,
        z: int | slice | Sequence[int] | None = None,
        c: int | slice | Sequence[int] | None = None,
        roi: tuple[int, int, int, int] | None = None,
        roi3d: tuple[int, int, int, int, int, int] | None = None,
        roi_nd: tuple[int, ...] | None = None,
        roi_type: Literal["2d", "2d_timelapse", "3d", "4d"] | None = None,
        tile: tuple[int, int] | None = None,
        layout: str | None = None,
        dtype: Any = None,
        chunk_policy: Literal["auto", "combine", "keep"] = "auto",
        channel_policy: Literal["error", "first"] = "error",
    ) -> None:
        policy = check_chunk_policy(chunk_policy)
        if isinstance(data, pa.ChunkedArray):
            if policy == "combine" or (policy == "auto" and data.num_chunks == 1):
                data = data.chunk(0) if data.num_chunks == 1 else data.combine_chunks()
        record = data
        if isinstance(data, (pa.StructArray, pa.ChunkedArray)):
            if len(data) == 0:
                raise ValueError("TensorView needs an OME-Arrow record, got an array of 0 rows")
            record = data[0]  # a view into the array's buffers, not a copy
        super().__init__(
            record, plane_loader=plane_loader, t=t, z=z, c=c, roi=roi, roi3d=roi3d, roi_nd=roi_nd,
            roi_type=roi_type, tile=tile, layout=layout, dtype=dtype, chunk_policy="auto",
            channel_policy=channel_policy,
        )
        self._data = data
        self._struct_array = data if isinstance(data, pa.StructArray) else None
        self._struct_scalar = record if isinstance(record, pa.StructScalar) else None
        if self._struct_scalar is None and isinstance(self._base.source, RecordSource):
            self._struct_scalar = self._base.source.view.scalar
        self._data_py = record if isinstance(record, dict) else None

    @classmethod
    def _from_array(cls, plan: LazyImage, spec: ViewSpec, array: np.ndarray | None) -> TensorView:
        view = super()._from_array(plan, spec, array)
        assert isinstance(view, TensorView)
        view._data = None
        view._struct_array = None
        view._struct_scalar = None
        view._data_py = None
        return view

    @property
    def layout(self) -> str:
        """Axis letters of the output, spelled with H/W (``"CHW"``, ``"TZCHW"``, ``"HWC"``)."""
        return hw_layout(self._layout)

    def with_layout(self, layout: str) -> TensorView:
        """The same data in another layout (no re-read)."""
        view = type(self)._from_array(self._base, self._spec.updated(layout=layout), self._array)
        view._data, view._struct_array = self._data, self._struct_array
        view._struct_scalar, view._data_py = self._struct_scalar, self._data_py
        return view

    def _data_py_dict(self) -> dict[str, Any]:
        """The backing record as Python objects (built once, on the ``mode="arrow"`` path of a scalar).

        Raises
        ------
        ValueError
            When the view reads a plan (a scanned file) rather than an in-memory record.
        """
        if self._data_py is None:
            if self._struct_scalar is None:
                raise ValueError(
                    "this view reads from a plan (a scanned file), not an in-memory record; "
                    "there is no record to convert to Python objects"
                )
            self._data_py = self._struct_scalar.as_py()
        return self._data_py

    def _single_plane(self) -> tuple[int, int, int] | None:
        """``(t, z, c)`` when the view is one full-frame plane in the stored dtype, else ``None``."""
        plan = self._plan
        st, sc, sz, sy, sx = plan.shape
        full_y, full_x = plan.source.shape[3:]
        if (st, sc, sz) != (1, 1, 1) or (sy, sx) != (full_y, full_x) or plan.out_dtype != plan.source.dtype:
            return None
        sel = plan.selection
        return (sel.t[0] if sel.t else 0, sel.z[0] if sel.z else 0, sel.c[0] if sel.c else 0)

    def _arrow_values(self) -> pa.Array | None:
        """The selected plane's Arrow values (zero-copy from the backing array), or ``None``."""
        plane = self._single_plane()
        if plane is None:
            return None
        struct_arr = self._struct_array
        if struct_arr is None:
            scalar = self._struct_scalar
            if scalar is None:
                return None
            warnings.warn(
                "mode='arrow' received a StructScalar; converting via as_py(), "
                "so zero-copy is not guaranteed for this export.",
                UserWarning,
                stacklevel=3,
            )
            struct_arr = pa.array([self._data_py_dict()], type=scalar.type)
        sy, sx = self._plan.source.shape[3:]
        values = _plane_values(struct_arr, *plane, size_y=sy, size_x=sx)
        if values is None or values.null_count or values.type != pa.from_numpy_dtype(self.dtype):
            return None
        return values

    def to_dlpack(self, *, device: str = "cpu", contiguous: bool = True, mode: str = "arrow") -> Any:
        """A DLPack-compatible array: flat 1-D (``mode="arrow"``) or shaped (``"numpy"``).

        ``mode="arrow"`` on one full plane of a list-encoded record returns
        the Arrow values array of that plane (zero-copy when the view is
        Arrow-backed; see the module notes), else a flat numpy copy.
        """
        if _check_device(device) == "cpu" and _tv._check_mode(mode) == "arrow":
            values = self._arrow_values()
            if values is not None:
                return values
        return super().to_dlpack(device=device, contiguous=contiguous, mode=mode)  # type: ignore[arg-type]


class LazyTensorView(_tv.LazyTensorView):
    """omeframe's :class:`~omeframe.LazyTensorView` with ome-arrow's layout spelling.

    Warnings recorded when the source was opened (``open_warnings``, e.g. the
    column auto-detection warning of a scanned Parquet file) are emitted when
    the view is collected, which is when ome-arrow opens the file.
    ``layout_as_given`` is the layout string to report (default: the spec's).

    Example
    -------
    >>> import numpy as np
    >>> from omeframe.engine.lazy import LazyImage
    >>> from omeframe.registry import open_source
    >>> lazy = LazyTensorView(LazyImage(open_source(np.zeros((1, 1, 1, 3, 4), "uint8"), dim_order="TCZYX")))
    >>> lazy.layout, lazy.with_layout("YX").layout, lazy.collect().to_numpy().shape
    ('CHW', 'YX', (1, 3, 4))
    """

    def __init__(
        self,
        plan: LazyImage,
        spec: ViewSpec | None = None,
        *,
        open_warnings: Sequence[warnings.WarningMessage] = (),
        layout_as_given: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(plan, spec, **kwargs)
        self._open_warnings = tuple(open_warnings)
        if layout_as_given is None:
            layout_as_given = self._spec.layout
        self._layout_given: str | None = layout_as_given

    @property
    def layout(self) -> str:
        """The layout as given to the view, else the default spelled with H/W."""
        return self._layout_given if self._layout_given is not None else hw_layout(self._layout)

    def collect(self) -> TensorView:
        """Read the view's chunks and return the concrete :class:`TensorView`."""
        emit_deferred(self._open_warnings)
        return TensorView._from_array(self._base, self._spec, self._plan.execute())

    def _spawn(self, spec: ViewSpec, layout_given: str | None) -> LazyTensorView:
        return LazyTensorView(self._base, spec, open_warnings=self._open_warnings, layout_as_given=layout_given)

    def select(
        self,
        *,
        t: Any = UNSET,
        z: Any = UNSET,
        c: Any = UNSET,
        roi: Any = UNSET,
        roi3d: Any = UNSET,
        roi_nd: Any = UNSET,
        roi_type: Any = UNSET,
        tile: Any = UNSET,
    ) -> LazyTensorView:
        """A new lazy view with some selections replaced (others kept)."""
        spec = self._spec.updated(t=t, z=z, c=c, roi=roi, roi3d=roi3d, roi_nd=roi_nd, roi_type=roi_type, tile=tile)
        return self._spawn(spec, self._layout_given)

    def with_layout(self, layout: str) -> LazyTensorView:
        """A new lazy view with another layout (reported as given)."""
        return self._spawn(self._spec.updated(layout=layout), layout)
