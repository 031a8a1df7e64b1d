"""Turn whatever a user passes to ``scan`` into a :class:`LazySource`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.formats.dataset.inputs import as_image_input
from omeframe.formats.dataset.reader import Dataset
from omeframe.engine.source import LazySource
from omeframe.formats.array.source import ArraySource, RecordSource
from omeframe.formats.record.source import DatasetSource, RecordTableSource
from omeframe.formats.zarr.source import open_ome_zarr_source
from omeframe.formats.tiff.source import open_tiff_source

__all__ = ["open_source"]

_TIFF = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_TABLE = (".parquet", ".pq", ".parq", ".vortex", ".vtx")


def _is_zarr_dir(p: Path) -> bool:
    return p.is_dir() and (
        p.suffix.lower() == ".zarr"
        or any((p / n).exists() for n in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))
    )


def open_source(
    obj: Any,
    *,
    column_name: str | None = "ome_arrow",
    row_index: int = 0,
    image_id: str | None = None,
    level: int = 0,
    dim_order: str | None = None,
    series: int = 0,
    format: str | None = None,
) -> LazySource:
    """Open ``obj`` lazily.

    ``obj`` may be a record table file (``.parquet``/``.vortex``: ``column_name``,
    ``row_index``), a dataset directory or :class:`Dataset` (``image_id``,
    ``level``), an OME-Zarr store or zarr array (``level``, ``dim_order``), a
    TIFF/OME-TIFF file (``series``, ``level``), a numpy array (``dim_order``),
    an OME-Arrow record, or an existing source.
    """
    if isinstance(obj, LazySource):
        return obj
    if isinstance(obj, Dataset):
        return DatasetSource(obj, image_id, level)
    if isinstance(obj, np.ndarray):
        from omeframe.model.dims import default_dim_order, to_tczyx

        header = as_image_input(obj, dim_order=dim_order).header
        return ArraySource(to_tczyx(obj, dim_order or default_dim_order(obj.ndim)), header)
    if isinstance(obj, (pa.StructScalar, pa.StructArray, pa.ChunkedArray, dict)):
        return RecordSource(obj)
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        if not p.exists():
            raise FileNotFoundError(f"nothing to scan at {str(p)!r}: no such file or directory")
        if p.is_dir():
            if (p / "manifest.json").is_file():
                return DatasetSource(Dataset(p), image_id, level)
            if _is_zarr_dir(p):
                return open_ome_zarr_source(p, level=level, dim_order=dim_order)
            from omeframe.formats.ome_arrow_dataset.source import (
                is_ome_arrow_dataset,
                open_ome_arrow_dataset,
            )

            if is_ome_arrow_dataset(p):
                return open_ome_arrow_dataset(p, image_id=image_id)
            raise ValueError(
                f"{str(p)!r} is a directory but neither an omeframe dataset (manifest.json), an "
                "OME-Zarr store, nor an ome-arrow dataset"
            )
        suffix = p.suffix.lower()
        if suffix == ".czi":
            from omeframe.formats.czi.source import open_czi_source

            return open_czi_source(p, scene=series)
        if suffix in _TIFF:
            return open_tiff_source(p, series=series, level=level)
        return RecordTableSource(p, column_name=column_name, row_index=row_index, format=format)
    try:
        import zarr

        if isinstance(obj, (zarr.Array, zarr.Group)):
            return open_ome_zarr_source(obj, level=level, dim_order=dim_order)
    except ImportError:  # pragma: no cover - zarr is a dependency
        pass
    raise TypeError(
        f"cannot scan a {type(obj).__name__}; pass a path (record table, dataset, OME-Zarr, "
        "TIFF), a Dataset, a numpy array, a zarr array or an OME-Arrow record"
    )
