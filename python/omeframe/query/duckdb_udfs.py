"""Vectorised DuckDB SQL functions over OME-Arrow records (Arrow UDFs).

:func:`register_functions` adds these scalar functions to a connection; each
receives whole DuckDB vectors as Arrow arrays (``type="arrow"``) and runs a
kernel of :mod:`omeframe.query.kernels` on them:

* ``ome_shape(img)`` -> ``INTEGER[]``: ``[T, C, Z, Y, X]``
* ``ome_dtype(img)`` -> ``VARCHAR``: the native pixel dtype
* ``ome_sizes(img)`` -> ``STRUCT(t, c, z, y, x INTEGER)``
* ``ome_channel_names(img)`` -> ``VARCHAR[]``
* ``ome_stats(img, c)`` -> ``STRUCT(min, max, mean, std DOUBLE)`` of channel
  ``c`` over all T, Z, Y, X (population std)
* ``ome_crop(img, x, y, w, h)`` -> a new record (byte variant), the box
  ``[y, y+h) x [x, x+w)`` clipped to the image (null when empty);
  ``ome_crop(img, bbox[, pad])`` takes the box from a shape table's ``bbox``
  column (``STRUCT(min DOUBLE[], max DOUBLE[])``, last two axes y, x; max one
  past the last pixel), grown by ``pad`` pixels, for joins of shape tables
  with image tables
* ``ome_crop_um(img, x_um, y_um, w_um, h_um, mpp)`` -> a new record (byte
  variant): the box in micrometres, clipped to the image, resampled to
  ``mpp`` µm per pixel (:func:`omeframe.query.units.crop_um`), so images of
  different pixel sizes give crops on one grid
* ``ome_crop_list(img, x, y, w, h)`` -> the same as a list-variant record
  (uint16-range data only; takes the same arguments)
* ``ome_thumbnail(img, size)`` -> ``BLOB``: PNG of the middle Z plane of
  T=0, all channels, longer side at most ``size`` (as ``thumbnail_png``)
* ``ome_chunk_values(pixel_bytes, codec, dtype, shape_z, shape_y, shape_x)``
  -> ``DOUBLE[]``: one chunk's decoded values in ZYX order
* ``ome_chunk_stats(pixel_bytes, codec, dtype, shape_z, shape_y, shape_x)``
  -> ``STRUCT(min, max, mean, std DOUBLE)`` of one chunk

``img`` is an OME-Arrow struct column of either variant (DuckDB hands the
struct over with its own field order and types; the kernels find fields by
name). Arguments are untyped (DuckDB ``ANY``), so integer columns of any
width work. Null records and null arguments give null (``null_handling``
is ``"special"``: the kernels see the nulls and keep them). A SQL function
has one return type, so ``ome_crop`` always returns the byte variant and
``ome_crop_list`` the list variant.

The chunk functions take the columns of a dataset's chunks table
(``pixel_bytes, codec, dtype, shape_z, shape_y, shape_x``) or of a record's
unnested ``chunks`` (``c.pixel_bytes, c.compression, c.dtype, c.shape_z,
c.shape_y, c.shape_x``) and let plain SQL compute anything over the pixels
of the chunks a query selects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from omeframe.model.arrow import OME_ARROW_BYTE_STRUCT, OME_ARROW_STRUCT
from omeframe.query import kernels, units

__all__ = ["FUNCTIONS", "register_functions", "duckdb_type"]

def duckdb_type(con: Any, arrow_type: pa.DataType) -> Any:
    """The DuckDB type DuckDB itself maps ``arrow_type`` to."""
    rel = con.from_arrow(pa.table({"x": pa.nulls(0, arrow_type)}))
    return rel.types[0]


def _unary(fn: Callable[[Any], pa.Array]) -> Callable[[Any], pa.Array]:
    def udf(img: Any) -> pa.Array:
        return fn(img)

    udf.__name__ = fn.__name__
    return udf


def _ome_stats(img: Any, c: Any) -> pa.Array:
    return kernels.stats(img, c)


def _crop(img: Any, args: tuple[Any, ...], encoding: str) -> pa.Array:
    if len(args) == 4:
        return kernels.crop(img, *args, encoding=encoding)
    if len(args) in (1, 2):
        return kernels.crop_bbox(img, *args, encoding=encoding)
    raise ValueError(
        f"ome_crop takes (img, x, y, w, h) or (img, bbox) or (img, bbox, pad); got {len(args) + 1} arguments"
    )


def _ome_crop_um(img: Any, x: Any, y: Any, w: Any, h: Any, mpp: Any) -> pa.Array:
    return units.crop_um(img, x, y, w, h, mpp)


def _ome_crop(img: Any, *args: Any) -> pa.Array:
    return _crop(img, args, "bytes")


def _ome_crop_list(img: Any, *args: Any) -> pa.Array:
    return _crop(img, args, "list")


def _ome_thumbnail(img: Any, size: Any) -> pa.Array:
    return kernels.thumbnail(img, size)


def _ome_chunk_values(pb: Any, codec: Any, dtype: Any, sz: Any, sy: Any, sx: Any) -> pa.Array:
    return kernels.chunk_values(pb, codec, dtype, sz, sy, sx)


def _ome_chunk_stats(pb: Any, codec: Any, dtype: Any, sz: Any, sy: Any, sx: Any) -> pa.Array:
    return kernels.chunk_stats(pb, codec, dtype, sz, sy, sx)


def _functions() -> dict[str, tuple[Callable[..., pa.Array], Any]]:
    return {
        "ome_shape": (_unary(kernels.shape), pa.list_(pa.int32())),
        "ome_dtype": (_unary(kernels.dtype), pa.string()),
        "ome_sizes": (_unary(kernels.sizes), kernels.SIZES_TYPE),
        "ome_channel_names": (_unary(kernels.channel_names), pa.list_(pa.string())),
        "ome_stats": (_ome_stats, kernels.STATS_TYPE),
        "ome_crop": (_ome_crop, OME_ARROW_BYTE_STRUCT),
        "ome_crop_um": (_ome_crop_um, OME_ARROW_BYTE_STRUCT),
        "ome_crop_list": (_ome_crop_list, OME_ARROW_STRUCT),
        "ome_thumbnail": (_ome_thumbnail, pa.binary()),
        "ome_chunk_values": (_ome_chunk_values, pa.list_(pa.float64())),
        "ome_chunk_stats": (_ome_chunk_stats, kernels.STATS_TYPE),
    }


#: Names of the SQL functions :func:`register_functions` adds.
FUNCTIONS = (
    "ome_shape",
    "ome_dtype",
    "ome_sizes",
    "ome_channel_names",
    "ome_stats",
    "ome_crop",
    "ome_crop_um",
    "ome_crop_list",
    "ome_thumbnail",
    "ome_chunk_values",
    "ome_chunk_stats",
)


def register_functions(con: Any, *, replace: bool = True) -> Any:
    """Add the ``ome_*`` SQL functions to a DuckDB connection; return it.

    ``replace`` drops functions of the same name first, so calling this twice
    on one connection is harmless.
    """
    import duckdb

    for name, (fn, ret) in _functions().items():
        if replace:
            try:
                con.remove_function(name)
            except (duckdb.InvalidInputException, duckdb.CatalogException):
                pass
        con.create_function(
            name,
            fn,
            None,  # ANY: DuckDB passes each argument with its own type
            duckdb_type(con, ret),
            type="arrow",
            null_handling="special",
            side_effects=False,
        )
    return con
