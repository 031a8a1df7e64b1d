"""The :class:`OMEArrow` façade: one image record and what you can do with it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import SchemaError
from .export.pixels import to_dict, to_numpy
from .ingest.arrays import from_numpy
from .schema.record import RecordView, as_record_scalar
from .schema.types import DEFAULT_COLUMN_NAME
from .storage.records import detect_format, read_record
from .tables import to_ome_parquet, to_ome_vortex
from .transform import slice_ome_arrow
from .utils import describe_ome_arrow

__all__ = ["OMEArrow"]

_TABLE_SUFFIXES = (".parquet", ".pq", ".parq", ".vortex", ".vtx")


class OMEArrow:
    """One OME-Arrow image record with convenience methods.

    Parameters
    ----------
    data
        A path to a record table (``.parquet`` / ``.vortex``), a record
        (``pa.StructScalar``, one-row ``StructArray`` or dict), or a numpy
        array (ingested with :func:`omeframe.from_numpy`).
    tcz
        Default ``(t, c, z)`` plane for viewing helpers.
    dim_order
        Axes of ``data`` when it is an array (inferred from the rank if ``None``).
    column_name, row_index
        Which column and row to read from a table file.
    image_type
        Overrides the record's ``image_type`` (e.g. ``"label"``).
    """

    def __init__(
        self,
        data: str | os.PathLike[str] | dict[str, Any] | pa.StructScalar | np.ndarray,
        tcz: tuple[int, int, int] = (0, 0, 0),
        *,
        dim_order: str | None = None,
        column_name: str = DEFAULT_COLUMN_NAME,
        row_index: int = 0,
        image_type: str | None = None,
    ) -> None:
        self.tcz = tuple(int(v) for v in tcz)
        self._source: str | None = None
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            self._source = str(path)
            if path.suffix.lower() not in _TABLE_SUFFIXES and not path.is_file():
                raise FileNotFoundError(f"no such file: {str(path)!r}")
            detect_format(path)  # precise error for files that are not tables
            scalar, _, _ = read_record(path, column_name=column_name, row_index=row_index)
        elif isinstance(data, np.ndarray):
            scalar = from_numpy(data, dim_order=dim_order, image_type=image_type)
        else:
            scalar = as_record_scalar(data)
        if image_type is not None and RecordView(scalar).header("image_type") != image_type:
            scalar = _with_field(scalar, "image_type", image_type)
        self._data: pa.StructScalar = scalar
        self._view = RecordView(scalar)

    # ---- state -------------------------------------------------------------
    @property
    def data(self) -> pa.StructScalar:
        """The record as a ``pa.StructScalar``."""
        return self._data

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(T, C, Z, Y, X)``."""
        return self._view.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Native pixel dtype."""
        return self._view.dtype

    def info(self) -> dict[str, Any]:
        """Describe the image: shape, kind, channels, dtype, encoding, summary."""
        return describe_ome_arrow(self._data)

    def __repr__(self) -> str:
        src = f" from {self._source!r}" if self._source else ""
        return f"<OMEArrow {self.info()['summary']}{src}>"

    # ---- conversions -------------------------------------------------------
    def export(
        self,
        how: str = "numpy",
        dtype: Any = None,
        strict: bool = True,
        clamp: bool = False,
        *,
        out: str | os.PathLike[str] | None = None,
        parquet_column_name: str = DEFAULT_COLUMN_NAME,
        parquet_compression: str | None = "zstd",
        parquet_metadata: dict[str, str] | None = None,
        vortex_column_name: str = DEFAULT_COLUMN_NAME,
        vortex_metadata: dict[str, str] | None = None,
    ) -> Any:
        """Export the record.

        Parameters
        ----------
        how
            ``"numpy"`` (TCZYX array), ``"dict"``, ``"scalar"``,
            ``"parquet"`` or ``"vortex"`` (write a one-row table to ``out``).
        dtype, strict, clamp
            For ``"numpy"``: output dtype (native when ``None``), payload
            length checking, and clipping into ``dtype``'s range.
        out
            Output path for file formats.

        Returns
        -------
        numpy.ndarray | dict | pyarrow.StructScalar | str
            The array, dict or scalar, or the written path.
        """
        kind = how.lower().replace("_", "-")
        if kind == "numpy":
            return to_numpy(self._data, dtype=dtype, strict=strict, clamp=clamp)
        if kind == "dict":
            return to_dict(self._data)
        if kind == "scalar":
            return self._data
        if kind in ("parquet", "vortex"):
            if out is None:
                raise ValueError(f"export(how={how!r}) needs out=<path>")
            if kind == "parquet":
                to_ome_parquet(
                    self._data,
                    out,
                    column_name=parquet_column_name,
                    compression=parquet_compression,
                    file_metadata=parquet_metadata,
                )
            else:
                to_ome_vortex(
                    self._data, out, column_name=vortex_column_name, file_metadata=vortex_metadata
                )
            return str(out)
        raise ValueError(
            f"unknown export format {how!r}; expected 'numpy', 'dict', 'scalar', "
            "'parquet' or 'vortex'"
        )

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
        """Return a cropped copy (half-open bounds; T/C/Z re-indexed from 0)."""
        return OMEArrow(
            slice_ome_arrow(
                self._data, x_min, x_max, y_min, y_max, t_indices, c_indices, z_indices, fill_missing
            ),
            self.tcz,
        )

    def view(
        self,
        how: str = "matplotlib",
        tcz: tuple[int, int, int] | None = None,
        autoscale: bool = True,
        vmin: float | None = None,
        vmax: float | None = None,
        cmap: str = "gray",
        show: bool = True,
    ) -> Any:
        """Render one plane with Matplotlib; returns ``(figure, axes, image)``."""
        if how != "matplotlib":
            raise ValueError(f"unsupported view backend {how!r}; available: 'matplotlib'")
        from .view import view_matplotlib

        return view_matplotlib(
            self._data, tcz or self.tcz, autoscale=autoscale, vmin=vmin, vmax=vmax, cmap=cmap, show=show
        )


def _with_field(scalar: pa.StructScalar, name: str, value: Any) -> pa.StructScalar:
    arr = pa.repeat(scalar, 1)
    fields = list(arr.type)
    cols = arr.flatten()
    idx = arr.type.get_field_index(name)
    if idx < 0:
        raise SchemaError(f"record has no field {name!r}")
    cols[idx] = pa.array([value], fields[idx].type)
    return pa.StructArray.from_arrays(cols, fields=fields)[0]
