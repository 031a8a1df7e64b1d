"""Record tables as ``dask.dataframe``s, and the ``ome`` kernels on pandas columns of records.

:func:`read_table` makes one partition per Parquet row group of a table file
(or one per table file of a folder, so the driver lists the folder but opens
no file); each partition reads its row group on a worker, with Arrow-backed
pandas columns (``pd.ArrowDtype``) so records stay Arrow structs and the
kernels read them without conversion.

The kernel functions (:func:`shape`, :func:`stats`, :func:`crop` ...) take a
pandas Series of records and return a pandas Series, so they run inside
``map_partitions``; the ``.ome`` Series accessor offers the same methods
(``part["ome_arrow"].ome.stats(0)``) in a process where this module is
imported. pandas and dask are imported on first use.

Example
-------
>>> import omeframe.dask as ofd
>>> ddf = ofd.read_table("cells.parquet")                             # doctest: +SKIP
>>> means = ddf.map_partitions(
...     lambda p: ofd.stats(p["ome_arrow"], c=0).struct.field("mean"),
...     meta=("mean", "float64[pyarrow]"))                               # doctest: +SKIP
>>> means.mean().compute()                                             # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from omeframe.formats.record.files import TABLE_SUFFIXES, detect_format
from omeframe.formats.vortex.file import read_vortex_table
from omeframe.model.errors import OptionalDependencyError
from omeframe.query import kernels
from omeframe.storage.parquet import open_parquet

__all__ = [
    "read_table",
    "partitions",
    "read_partition",
    "shape",
    "dtype",
    "sizes",
    "channel_names",
    "stats",
    "crop",
    "thumbnail",
    "to_numpy",
]

#: One partition: ``(path, row group or None for the whole file, columns or None)``.
Partition = tuple[str, int | None, tuple[str, ...] | None]

_registered = False


def _pandas() -> Any:
    try:
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # lazy: pandas
    except ImportError as exc:  # pragma: no cover - dask.dataframe needs pandas
        raise OptionalDependencyError(
            "omeframe.dask needs pandas and dask; install them with pip install 'omeframe[dask]'"
        ) from exc
    _register_accessor(pd)
    return pd


def _table_files(path: Path) -> list[Path]:
    """The table files of a folder, sorted by name (hidden files and other suffixes skipped)."""
    out = sorted(
        p for p in path.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.suffix.lower() in TABLE_SUFFIXES
    )
    if not out:
        raise FileNotFoundError(
            f"folder {str(path)!r} holds no record table files ({', '.join(TABLE_SUFFIXES)}); "
            "pass a table file or a folder of them"
        )
    return out


def partitions(path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> list[Partition]:
    """The partitions :func:`read_table` makes: a Parquet file's row groups, a folder's files.

    Raises
    ------
    FileNotFoundError
        When nothing exists at ``path`` or a folder holds no table files.
    """
    p = Path(path)
    cols = None if columns is None else tuple(columns)
    if p.is_dir():
        return [(str(f), None, cols) for f in _table_files(p)]
    if not p.exists():
        raise FileNotFoundError(f"no record table at {str(p)!r}: no such file or folder")
    if detect_format(p) == "parquet":
        pf = open_parquet(p)
        return [(str(p), g, cols) for g in range(max(1, pf.metadata.num_row_groups))]
    return [(str(p), None, cols)]


def _read_arrow(part: Partition) -> pa.Table:
    path, group, cols = part
    columns = None if cols is None else list(cols)
    if detect_format(path) == "parquet":
        pf = open_parquet(path)
        if group is None:
            return pf.read(columns=columns)
        if pf.metadata.num_row_groups == 0:
            return pf.schema_arrow.empty_table() if columns is None else pf.schema_arrow.empty_table().select(columns)
        return pf.read_row_group(group, columns=columns)
    return read_vortex_table(path, columns=columns)


def read_partition(part: Partition) -> Any:
    """One partition as a pandas DataFrame with Arrow-backed columns (the task :func:`read_table` runs)."""
    pd = _pandas()
    return _read_arrow(part).to_pandas(types_mapper=pd.ArrowDtype)


def read_table(path: str | os.PathLike[str], *, columns: Sequence[str] | None = None) -> Any:
    """A record table (or a folder of them) as a lazy ``dask.dataframe.DataFrame``.

    Parameters
    ----------
    path
        A Parquet or Vortex record table (one partition per Parquet row
        group; a Vortex file is one partition), or a folder of table files
        (one partition per file, in name order; all must share a schema).
    columns
        Read only these columns (e.g. leave the record column out for a
        metadata-only query).

    Returns
    -------
    dask.dataframe.DataFrame
        Arrow-backed columns (``pd.ArrowDtype``); records are struct columns
        the kernels of this module read without conversion.

    Raises
    ------
    FileNotFoundError
        When nothing exists at ``path`` or a folder holds no table files.
    OptionalDependencyError
        When dask or pandas is not installed.

    Example
    -------
    >>> ddf = omeframe.dask.read_table("plates/", columns=["well", "ome_arrow"])   # doctest: +SKIP
    >>> ddf.npartitions                                                           # doctest: +SKIP
    """
    pd = _pandas()
    try:
        import dask.dataframe as dd  # lazy: dask
    except ImportError as exc:  # pragma: no cover - in the dask extra
        raise OptionalDependencyError(
            "omeframe.dask.read_table needs dask[dataframe]; install it with pip install 'omeframe[dask]'"
        ) from exc
    parts = partitions(path, columns)
    first = parts[0][0]
    if detect_format(first) == "parquet":
        schema = open_parquet(first).schema_arrow
    else:
        schema = read_vortex_table(first, rows=[]).schema
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ValueError(f"columns {missing} are not in the table {first!r}; it has {schema.names}")
        schema = pa.schema([schema.field(c) for c in columns])
    meta = schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
    return dd.from_map(read_partition, parts, meta=meta, enforce_metadata=False)


# ---- kernels on pandas Series of records ---------------------------------------------


def _arrow_of(series: Any) -> pa.ChunkedArray | pa.Array:
    arr = series.array
    if hasattr(arr, "__arrow_array__"):
        return arr.__arrow_array__()
    return pa.array(list(series))  # an object column of record dicts


def _series(result: pa.Array | pa.ChunkedArray, like: Any, name: str) -> Any:
    pd = _pandas()
    return pd.Series(pd.arrays.ArrowExtensionArray(result), index=like.index, name=name)


def _arg(value: Any) -> Any:
    """A scalar argument as is; a per-row pandas Series as an Arrow array."""
    return _arrow_of(value) if hasattr(value, "array") and hasattr(value, "index") else value


def shape(records: Any) -> Any:
    """``[T, C, Z, Y, X]`` of each record (a pandas Series of ``list<int32>``)."""
    return _series(kernels.shape(_arrow_of(records)), records, "shape")


def dtype(records: Any) -> Any:
    """Native pixel dtype name of each record."""
    return _series(kernels.dtype(_arrow_of(records)), records, "dtype")


def sizes(records: Any) -> Any:
    """``{t, c, z, y, x}`` sizes of each record (a struct Series)."""
    return _series(kernels.sizes(_arrow_of(records)), records, "sizes")


def channel_names(records: Any) -> Any:
    """Channel names of each record."""
    return _series(kernels.channel_names(_arrow_of(records)), records, "channel_names")


def stats(records: Any, c: Any = 0) -> Any:
    """``{min, max, mean, std}`` of channel ``c`` of each record (decodes only that channel's chunks)."""
    return _series(kernels.stats(_arrow_of(records), _arg(c)), records, "stats")


def crop(records: Any, x: Any, y: Any, w: Any, h: Any, *, encoding: str | None = None) -> Any:
    """Each record cropped to ``(x, y, w, h)`` (scalars or per-row Series); new records."""
    arr = _arrow_of(records)
    out = kernels.crop(arr, _arg(x), _arg(y), _arg(w), _arg(h), encoding=encoding)
    return _series(out, records, "crop")


def thumbnail(records: Any, size: Any = 256) -> Any:
    """PNG bytes of each record's middle Z plane, all channels, at most ``size`` pixels wide."""
    return _series(kernels.thumbnail(_arrow_of(records), _arg(size)), records, "thumbnail")


def to_numpy(records: Any, dtype: Any = None) -> list[Any]:
    """Each record's pixels as a TCZYX numpy array (``None`` for null records)."""
    return kernels.to_numpy(_arrow_of(records), dtype=dtype)


class _OmeAccessor:
    """``series.ome``: the kernels of :mod:`omeframe.query.dask_frame` on a Series of records."""

    def __init__(self, series: Any) -> None:
        self._s = series

    def shape(self) -> Any:
        return shape(self._s)

    def dtype(self) -> Any:
        return dtype(self._s)

    def sizes(self) -> Any:
        return sizes(self._s)

    def channel_names(self) -> Any:
        return channel_names(self._s)

    def stats(self, c: Any = 0) -> Any:
        return stats(self._s, c)

    def crop(self, x: Any, y: Any, w: Any, h: Any, *, encoding: str | None = None) -> Any:
        return crop(self._s, x, y, w, h, encoding=encoding)

    def thumbnail(self, size: Any = 256) -> Any:
        return thumbnail(self._s, size)

    def to_numpy(self, dtype: Any = None) -> list[Any]:
        return to_numpy(self._s, dtype)


def _register_accessor(pd: Any) -> None:
    global _registered
    if not _registered:
        _registered = True
        pd.api.extensions.register_series_accessor("ome")(_OmeAccessor)
