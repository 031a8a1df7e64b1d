"""Dask for images and image tables: ``omeframe.dask.read_table`` and the ``ome`` kernels.

>>> import omeframe.dask as ofd
>>> ddf = ofd.read_table("cells.parquet")                  # doctest: +SKIP
>>> ddf.map_partitions(lambda p: ofd.stats(p["ome_arrow"], c=0).struct.field("mean"),
...                    meta=("mean", "float64[pyarrow]")).compute()   # doctest: +SKIP

:func:`read_table` makes one partition per Parquet row group (or per table
file of a folder); the kernel functions take a pandas Series of records and
run inside ``map_partitions`` (see :mod:`omeframe.query.dask_frame`). Images
become dask arrays with ``omeframe.scan(path).to_dask()`` or
``omeframe.open_dataset(path).to_dask(image_id)``; ``write_dataset``,
``to_ome_zarr`` and ``omeframe.catalog.build`` take ``client=`` to run on a
``dask.distributed`` cluster. This module imports ``dask`` and ``pandas`` on
first use only.
"""

from __future__ import annotations

from omeframe.query.dask_frame import (
    channel_names,
    crop,
    dtype,
    partitions,
    read_partition,
    read_table,
    shape,
    sizes,
    stats,
    thumbnail,
    to_numpy,
)

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
