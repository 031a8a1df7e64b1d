"""The ``OMEArrow`` class with ome-arrow 0.1.0's behaviour (``ome_arrow.core``).

A subclass of :class:`omeframe.OMEArrow` (same engine, same plans) whose
differences are ome-arrow's: ``collect()`` materialises in place and returns
``self``; ``info()`` has ome-arrow's five keys; ``export`` defaults to
``dtype=numpy.uint16`` and writes ``"parquet"`` as a typed-chunk dataset
folder; the constructor also takes Bio-Formats patterns, OME-Zarr stores and
dataset folders, ingests arrays with ``dim_order="TCZYX"``, ``uint16`` and
list chunks, and refuses ``dim_order`` for non-array inputs. ``scan`` opens
the source when the plan is first used, so errors about the file surface
then, not at ``scan``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

import omeframe as _of
from omeframe.engine.lazy import LazyImage
from omeframe.formats.record.files import detect_format
from omeframe.ops.tensor_spec import ViewSpec
from omeframe.registry import detect, open_source

from . import ingest as _ingest
from .dataset import write_ome_arrow_dataset
from .export import to_ome_tiff, to_ome_zarr
from .ingest import from_jax_array, from_numpy, from_stack_pattern_path, from_tiff, from_torch_array
from .tensor import LazyTensorView, TensorView, check_chunk_policy, emit_deferred
from .utils import reference_info
from .view import view_matplotlib, view_pyvista

__all__ = ["OMEArrow"]

_PATTERN_CHARS = "<>*"
_VIEW_MODES = ("matplotlib", "pyvista")


def _is_torch(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "numpy")


def _is_jax(obj: Any) -> bool:
    return type(obj).__module__.startswith(("jax", "jaxlib")) and hasattr(obj, "__array__")


class OMEArrow(_of.OMEArrow):
    """One OME-Arrow image with ome-arrow 0.1.0's API and defaults.

    Parameters
    ----------
    data
        A path (TIFF, OME-Zarr store, Parquet/Vortex record table, typed-chunk
        dataset folder, or a Bio-Formats pattern such as ``img_C<0-2>.tif``),
        a numpy/torch/JAX array, a record dict or ``pa.StructScalar``.
    tcz
        Default ``(t, c, z)`` plane for viewing.
    dim_order
        Axes of an array input (numpy default ``"TCZYX"``; torch/JAX inferred
        from the rank); a ``ValueError`` for other inputs.
    column_name, row_index
        Which column and row of a record table.
    image_type
        Sets the record's ``image_type``.
    lazy
        Defer reading a path until the data is used (as :meth:`scan`).

    Example
    -------
    >>> img = OMEArrow(np.zeros((1, 1, 1, 4, 5), dtype="uint8"))
    >>> img.data.type == _of.OME_ARROW_STRUCT, img.info()["shape"]
    (True, (1, 1, 1, 4, 5))
    """

    def __init__(
        self,
        data: Any,
        tcz: tuple[int, int, int] = (0, 0, 0),
        *,
        dim_order: str | None = None,
        column_name: str = "ome_arrow",
        row_index: int = 0,
        image_type: str | None = None,
        lazy: bool = False,
    ) -> None:
        is_array = isinstance(data, np.ndarray) or _is_torch(data) or _is_jax(data)
        if dim_order is not None and not is_array:
            raise ValueError(
                "dim_order is supported only for numpy.ndarray, torch.Tensor or jax.Array inputs, "
                f"not {type(data).__name__}; drop dim_order for files and records"
            )
        self.tcz = tuple(int(v) for v in tcz)  # type: ignore[assignment]
        self._source = None
        self._data = None
        self._image_type = image_type
        self._pending: tuple[str, str, int] | None = None
        self._plan_value: LazyImage | None = None
        self._open_warnings: tuple[warnings.WarningMessage, ...] = ()
        self._struct_array: pa.StructArray | None = None
        if lazy:
            if not isinstance(data, (str, os.PathLike)):
                raise TypeError(
                    f"lazy=True currently supports only string file inputs, not {type(data).__name__}"
                )
            if any(ch in str(data) for ch in _PATTERN_CHARS):
                raise TypeError(
                    "lazy=True does not support Bio-Formats pattern strings; use "
                    "OMEArrow(pattern) (eager) to read a file pattern"
                )
            self._pending = (str(data), column_name, row_index)
            self._source = str(data)
            return
        if isinstance(data, (str, os.PathLike)):
            self._source = str(data)
            scalar, array = self._read_path(str(data), column_name, row_index, image_type)
            self._set_data(scalar)
            if array is not None and self._data is scalar:  # the record is that array's row
                self._struct_array = array
        elif isinstance(data, np.ndarray):
            self._set_data(from_numpy(data, dim_order=dim_order or "TCZYX", image_type=image_type))
        elif _is_torch(data):
            self._set_data(from_torch_array(data, dim_order=dim_order, image_type=image_type))
        elif _is_jax(data):
            self._set_data(from_jax_array(data, dim_order=dim_order, image_type=image_type))
        elif isinstance(data, (dict, pa.StructScalar)):
            super().__init__(data, tcz, column_name=column_name, row_index=row_index, image_type=image_type)
        else:
            raise TypeError(
                "input data must be str, dict, pa.StructScalar, numpy.ndarray, torch.Tensor or jax.Array; "
                f"got {type(data).__module__}.{type(data).__qualname__}"
            )

    @staticmethod
    def _read_path(
        path: str, column_name: str, row_index: int, image_type: str | None
    ) -> tuple[pa.StructScalar, pa.StructArray | None]:
        """The record at ``path`` and, for record tables, the one-row Arrow array it is a row of."""
        if any(ch in path for ch in _PATTERN_CHARS):
            return from_stack_pattern_path(path, image_type=image_type), None
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"no such file or folder: {path!r}")
        entry = detect(p)
        if entry.name == "tiff":
            return from_tiff(p, image_type=image_type), None
        if entry.name == "record-table":
            reader = _ingest.from_ome_vortex if detect_format(p) == "vortex" else _ingest.from_ome_parquet
            scalar, array = reader(p, column_name=column_name, row_index=row_index, return_array=True)
            return scalar, array
        if entry.name in ("ome-zarr", "zarr"):
            return _ingest.from_ome_zarr(p, image_type=image_type), None
        # dataset folders (omeframe's and ome-arrow's typed-chunk folders) keep their dtype
        src = open_source(p)
        return _ingest.to_record(src, chunk_encoding="list", write=_ingest.WriteOptions(compression=None)), None

    @classmethod
    def scan(  # type: ignore[override]
        cls,
        data: str,
        *,
        tcz: tuple[int, int, int] = (0, 0, 0),
        column_name: str = "ome_arrow",
        row_index: int = 0,
        image_type: str | None = None,
    ) -> OMEArrow:
        """A lazy image over a path; the file is opened when the image is first used."""
        return cls(data, tcz, column_name=column_name, row_index=row_index, image_type=image_type, lazy=True)

    # ---- deferred plans -----------------------------------------------------
    @property
    def _plan(self) -> LazyImage | None:
        if self._plan_value is None and self._pending is not None:
            path, column_name, row_index = self._pending
            # ome-arrow opens a scanned file when the data is read: warnings about the
            # file (such as the column auto-detection) are kept and emitted then
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._plan_value = LazyImage(open_source(path, column_name=column_name, row_index=row_index))
            self._open_warnings = tuple(caught)
            self._pending = None
        return self._plan_value

    @_plan.setter
    def _plan(self, value: LazyImage | None) -> None:
        self._plan_value = value
        self._pending = None

    @property
    def is_lazy(self) -> bool:
        """True until the image is materialised (by :meth:`collect` or by reading ``data``)."""
        return self._pending is not None or self._plan_value is not None

    def _adopt(self, obj: _of.OMEArrow) -> OMEArrow:
        new = OMEArrow.__new__(OMEArrow)
        new._pending = None
        new._plan_value = None
        new._struct_array = None
        new._open_warnings = self._open_warnings if obj._plan is not None else ()
        for key, value in vars(obj).items():
            setattr(new, key, value)
        return new

    @property
    def data(self) -> pa.StructScalar:
        """The record; reading it runs the plan of a lazy image (the source's warnings are emitted then)."""
        if self._data is None and self._plan is not None:
            emit_deferred(self._open_warnings)
        return super().data

    def collect(self) -> OMEArrow:
        """Materialise in place (read the plan's chunks) and return ``self``."""
        if self.is_lazy:
            scalar = self.data
            self._plan = None
            self._data = scalar
            self._open_warnings = ()
        return self

    def tensor_view(
        self,
        *,
        scene: int | None = None,
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
    ) -> LazyTensorView | TensorView:
        """A tensor view: lazy for a scanned or planned image, else over the record (or its Arrow array).

        Layouts are spelled with H/W (``"CHW"``); see :mod:`omeframe.compat.ome_arrow.tensor`.
        """
        if scene not in (None, 0):
            raise ValueError(f"scene {scene} does not exist: an OME-Arrow record holds one scene (0)")
        check_chunk_policy(chunk_policy)
        if self._plan is not None:
            spec = ViewSpec(t, z, c, roi, roi3d, roi_nd, roi_type, tile, layout, dtype, channel_policy)
            return LazyTensorView(self._plan, spec, open_warnings=self._open_warnings, layout_as_given=layout)
        return TensorView(
            self._struct_array if self._struct_array is not None else self.data, t=t, z=z, c=c, roi=roi,
            roi3d=roi3d, roi_nd=roi_nd, roi_type=roi_type, tile=tile, layout=layout, dtype=dtype,
            chunk_policy=chunk_policy, channel_policy=channel_policy,
        )

    def info(self) -> dict[str, Any]:
        """``shape``, ``type``, ``summary``, ``channels``, ``is_multichannel`` (ome-arrow's keys)."""
        return reference_info(super().info())

    def slice(
        self,
        x_min: int,
        x_max: int,
        y_min: int,
        y_max: int,
        t_indices: Iterable[int] | None = None,
        c_indices: Iterable[int] | None = None,
        z_indices: Iterable[int] | None = None,
        fill_missing: bool = True,
    ) -> OMEArrow:
        """Crop to ``[x_min, x_max) x [y_min, y_max)`` and the given T/C/Z indices."""
        return self._adopt(super().slice(x_min, x_max, y_min, y_max, t_indices, c_indices, z_indices, fill_missing))

    def slice_lazy(
        self,
        x_min: int,
        x_max: int,
        y_min: int,
        y_max: int,
        t_indices: Iterable[int] | None = None,
        c_indices: Iterable[int] | None = None,
        z_indices: Iterable[int] | None = None,
        fill_missing: bool = True,
    ) -> OMEArrow:
        """Plan a crop (eager on a materialised image); nothing is read until ``collect()``."""
        out = super().slice_lazy(x_min, x_max, y_min, y_max, t_indices, c_indices, z_indices, fill_missing)
        return self._adopt(out)

    def export(  # type: ignore[override]
        self,
        how: str = "numpy",
        dtype: Any = np.uint16,
        strict: bool = True,
        clamp: bool = False,
        *,
        out: str | None = None,
        dim_order: str = "TCZYX",
        compression: str | None = "zlib",
        compression_level: int = 6,
        tile: tuple[int, int] | None = None,
        chunks: tuple[int, int, int, int, int] | None = None,
        zarr_compressor: str | None = "zstd",
        zarr_level: int = 7,
        use_channel_colors: bool = False,
        parquet_column_name: str = "ome_arrow",
        parquet_compression: str | None = "zstd",
        parquet_metadata: dict[str, str] | None = None,
        vortex_column_name: str = "ome_arrow",
        vortex_metadata: dict[str, str] | None = None,
    ) -> Any:
        """Export as ome-arrow does: ``"numpy"`` (``uint16`` by default), ``"dict"``, ``"scalar"``,
        ``"ome-tiff"``, ``"ome-zarr"``, ``"parquet"`` / ``"ome-parquet"`` (a typed-chunk dataset
        folder; ``parquet_column_name`` and ``parquet_metadata`` do not apply to that layout and
        must stay at their defaults) and ``"vortex"`` / ``"ome-vortex"`` (a one-row record table).
        File exports replace what is at ``out`` and return ``out``.
        """
        kind = how.lower().replace("_", "-")
        if kind in ("numpy", "dict", "scalar"):
            return super().export(kind, dtype=dtype, strict=strict, clamp=clamp)
        if not out:
            raise ValueError(f"export(how={how!r}) requires 'out' path.")
        if kind in ("ome-tiff", "ometiff", "tiff"):
            to_ome_tiff(
                self.data, out, dtype=dtype, clamp=clamp, dim_order=dim_order, compression=compression,
                compression_level=compression_level, tile=tile, use_channel_colors=use_channel_colors,
            )
        elif kind in ("ome-zarr", "omezarr", "zarr"):
            to_ome_zarr(
                self.data, out, dtype=dtype, clamp=clamp, dim_order=dim_order, chunks=chunks,
                compressor=zarr_compressor, compressor_level=zarr_level,
            )
        elif kind in ("ome-parquet", "omeparquet", "parquet"):
            if parquet_column_name != "ome_arrow" or parquet_metadata is not None:
                raise ValueError(
                    "export(how='parquet') writes a typed-chunk dataset folder, which has no struct "
                    "column or file metadata; use to_ome_parquet(...) for a one-row record table"
                )
            write_ome_arrow_dataset([self], out, compression=parquet_compression, pixel_dtype=dtype, clamp=clamp)
        elif kind in ("ome-vortex", "omevortex", "vortex"):
            _of.to_ome_vortex(self.data, out, column_name=vortex_column_name, file_metadata=vortex_metadata)
        else:
            raise ValueError(
                f"Unknown export method: {how!r}; expected numpy, dict, scalar, ome-tiff, ome-zarr, parquet or vortex"
            )
        return out

    def view(  # type: ignore[override]
        self,
        how: str = "matplotlib",
        tcz: tuple[int, int, int] = (0, 0, 0),
        autoscale: bool = True,
        vmin: int | None = None,
        vmax: int | None = None,
        cmap: str = "gray",
        show: bool = True,
        c: int | None = None,
        downsample: int = 1,
        opacity: str | float = "sigmoid",
        clim: tuple[float, float] | None = None,
        show_axes: bool = True,
        scaling_values: tuple[float, float, float] | None = None,
    ) -> Any:
        """Render a plane with matplotlib or the volume of channel ``c`` with PyVista."""
        if how not in _VIEW_MODES:
            raise ValueError(f"Unsupported view mode: {how!r}. Use 'matplotlib' or 'pyvista'.")
        if how == "matplotlib":
            return view_matplotlib(self.data, tcz=tcz, autoscale=autoscale, vmin=vmin, vmax=vmax, cmap=cmap, show=show)
        return view_pyvista(
            self.data, c=self.tcz[1] if c is None else c, downsample=downsample, scaling_values=scaling_values,
            opacity=opacity, clim=clim, show_axes=show_axes, show=show,
        )

