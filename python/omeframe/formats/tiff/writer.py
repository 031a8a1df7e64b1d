"""Write OME-TIFF with ``tifffile`` directly, streaming tile by tile.

:func:`to_ome_tiff` accepts an :class:`~omeframe.OMEArrow` (lazy or not), an
OME-Arrow record, a :class:`~omeframe.LazyImage` plan, a lazy source or a
numpy array. Pixels are read from the plan one band of tiles at a time and
handed to ``tifffile.TiffWriter.write`` as a generator, so an image larger
than memory (e.g. a chunked dataset) is exported with a few tiles in memory.
Pyramid levels are computed lazily (2x block means by default, or the
source's own levels when their shapes match) and written as SubIFDs, the
layout OME-TIFF readers expect. The file is written to a temporary name in
the target directory and renamed when complete.
"""

from __future__ import annotations

import io
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from omeframe.engine.derived import as_source
from omeframe.engine.executor import clamp_cast
from omeframe.engine.lazy import LazyImage
from omeframe.engine.pyramid import DownsampledSource
from omeframe.engine.source import LazySource
from omeframe.formats.record.remote import write_remote
from omeframe.formats.tiff.omexml import tifffile_ome_metadata
from omeframe.formats.tiff.source import TIFF_EXTRA_HINT, imagecodecs_installed
from omeframe.model.checks import is_integer
from omeframe.model.dtypes import output_dtype
from omeframe.model.errors import DimOrderError, DtypeError, OptionalDependencyError
from omeframe.storage.remote import RemoteStore
from omeframe.storage.url import check_storage_options, parse_location

__all__ = ["to_ome_tiff"]

#: Rough byte budget of one band of tiles read from the source.
_BAND_BYTES = 16 << 20
#: Above this many bytes of pixel data (all levels) the file is written as BigTIFF.
_BIGTIFF_THRESHOLD = (1 << 32) - (1 << 27)
#: Codecs whose encoder takes a ``level`` (``compression_level`` is passed to them only).
_LEVELED_CODECS = (
    "zlib", "deflate", "adobe_deflate", "zstd", "lzma", "webp", "jpeg", "jpegxl", "jpeg2000", "lerc", "brotli"
)

_OME_DTYPES = ("int8", "int16", "int32", "uint8", "uint16", "uint32", "float32", "float64", "bool")


def _as_source(data: Any) -> LazySource:
    """The image to export as a lazy source (plans with selections are wrapped)."""
    return as_source(data)


def _levels(src: LazySource, n: int, factor: int) -> list[LazySource]:
    """``n`` levels (fewer when the image gets too small): native levels when their shapes match."""
    if not is_integer(n) or n < 1:
        raise ValueError(f"pyramid_levels must be an integer >= 1, got {n!r}")
    if not is_integer(factor) or factor < 2:
        raise ValueError(f"downscale must be an integer >= 2, got {factor!r}")
    native = src.levels()
    out = [src]
    method = "nearest" if (src.header().image_type or "") == "label" else "mean"
    while len(out) < n:
        prev = out[-1]
        if min(prev.shape[3], prev.shape[4]) // factor < 1:
            break
        expect = (*prev.shape[:3], max(1, prev.shape[3] // factor), max(1, prev.shape[4] // factor))
        k = len(out)
        if k < len(native) and native[k].shape == expect and native[k].dtype == src.dtype:
            out.append(native[k])
        else:
            out.append(DownsampledSource(prev, factor, method=method))
    return out


def _check_dim_order(dim_order: str) -> str:
    order = str(dim_order).strip().upper()
    if sorted(order) != sorted("TCZYX") or not order.endswith("YX"):
        raise DimOrderError(
            f"dim_order {dim_order!r} must be a permutation of 'TCZYX' ending in 'YX' "
            "(e.g. 'TCZYX', 'TZCYX', 'CTZYX')"
        )
    return order


def _tile_blocks(
    src: LazySource, axes: str, tile: tuple[int, int] | None, out_dtype: np.dtype[Any], clamp: bool
) -> Any:
    """Generator of tiles (or planes when ``tile`` is None) in TIFF page/tile order."""
    plan = LazyImage(src)
    st, sc, sz, sy, sx = src.shape
    sizes = dict(zip("TCZ", (st, sc, sz), strict=True))
    lead = [a for a in axes if a in "TCZ"]
    item = max(1, np.dtype(out_dtype).itemsize, src.dtype.itemsize)

    def cast(a: np.ndarray) -> np.ndarray:
        if a.dtype == out_dtype:
            return a
        return clamp_cast(a, out_dtype) if clamp else a.astype(out_dtype)

    def pages() -> Any:
        for idx in np.ndindex(*(sizes[a] for a in lead)):
            pos = dict(zip(lead, idx, strict=True))
            yield pos["T"], pos["C"], pos["Z"]

    for t, c, z in pages():
        if tile is None:
            yield cast(plan.select(t=[t], c=[c], z=[z]).execute()[0, 0, 0])
            continue
        th, tw = tile
        hint = src.chunk_shape() or (1, th, tw)
        cy = int(hint[1])
        band_h = th
        if cy % th == 0 and cy > th and cy * sx * item <= _BAND_BYTES:
            band_h = cy  # whole source chunk rows: each source chunk decoded once
        if band_h * sx * item <= _BAND_BYTES:
            band_w = sx
        else:
            band_w = max(1, _BAND_BYTES // (band_h * tw * item)) * tw
        for by in range(0, sy, band_h):
            bh = min(band_h, sy - by)
            if band_w >= sx:
                band = plan.select(t=[t], c=[c], z=[z], y=(by, by + bh), x=(0, sx)).execute()[0, 0, 0]
                for ty in range(0, bh, th):
                    for tx in range(0, sx, tw):
                        yield cast(band[ty : ty + th, tx : tx + tw])
                del band
            else:
                for bx in range(0, sx, band_w):
                    bw = min(band_w, sx - bx)
                    band = plan.select(t=[t], c=[c], z=[z], y=(by, by + bh), x=(bx, bx + bw)).execute()[0, 0, 0]
                    for tx in range(0, bw, tw):
                        yield cast(band[:, tx : tx + tw])
                    del band


def to_ome_tiff(
    data: Any,
    out_path: str | os.PathLike[str],
    *,
    dtype: Any = None,
    clamp: bool = False,
    dim_order: str = "TCZYX",
    compression: str | None = "zlib",
    compression_level: int | None = 6,
    tile: tuple[int, int] | None = None,
    use_channel_colors: bool = False,
    pyramid_levels: int = 1,
    downscale: int = 2,
    bigtiff: bool | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write an image as OME-TIFF, streaming tiles from its plan.

    Parameters
    ----------
    data
        ``OMEArrow`` (lazy or materialised), OME-Arrow record, ``LazyImage``,
        lazy source, numpy array (axes from its rank) or anything ``scan`` opens.
    out_path
        Target file (``.ome.tif`` recommended), or a URL (``s3://bucket/a.ome.tif``,
        options in ``storage_options``): the file is written to a local
        temporary file and uploaded whole only when complete, so the key
        never holds half a file (a failed export leaves it untouched).
    dtype, clamp
        Output pixel type (native when ``None``); ``clamp`` saturates values
        outside its range instead of wrapping them.
    dim_order
        Page order of the file: a permutation of ``TCZYX`` ending in ``YX``
        (OME ``DimensionOrder`` is its reverse, e.g. ``XYZCT``).
    compression, compression_level
        A ``tifffile`` codec name (``"zlib"``, ``"zstd"``, ``"lzw"``,
        ``"jpeg"``...) or ``None``; the level where the codec has one.
        ``"zlib"``, ``"lzma"`` and ``None`` work on a plain install; the
        others need ``imagecodecs``: ``pip install 'omeframe[tiff]'``.
    tile
        ``(height, width)``, multiples of 16. Default ``(256, 256)`` for
        planes larger than 512 in Y or X, else one strip per plane.
    use_channel_colors
        Also write each channel's ``color_rgba`` as OME ``Color``.
    pyramid_levels, downscale
        Levels in all (1 = none) and the factor between them; levels 1.. are
        written as SubIFDs of each plane.
    bigtiff
        Force (or forbid) BigTIFF; ``None`` picks it when the pixel data
        approaches 4 GiB.
    overwrite
        Replace an existing file (else ``FileExistsError``).
    storage_options
        Options of the URL's filesystem (credentials, ``endpoint_url`` ...).

    Returns
    -------
    str
        The written path.

    Raises
    ------
    OptionalDependencyError
        ``compression`` needs ``imagecodecs``, which is not installed.
    ValueError
        tifffile cannot write ``compression`` for these pixels (unknown codec
        name, a codec that does not take this dtype...), or a bad ``tile``.

    Example
    -------
    >>> import numpy as np, tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "img.ome.tif")
    >>> to_ome_tiff(np.zeros((2, 64, 64), np.uint16), out, compression="zlib") == out
    True
    """
    remote = parse_location(out_path)
    if remote is not None:
        parent, _, name = remote.url.rpartition("/")
        if not overwrite and RemoteStore(parent, storage_options).exists(name):
            raise FileExistsError(f"{remote.url!r} exists; pass overwrite=True to replace it")
        _check_dim_order(dim_order)
        return write_remote(remote.url, storage_options, lambda local: (to_ome_tiff(
            data, local, dtype=dtype, clamp=clamp, dim_order=dim_order, compression=compression,
            compression_level=compression_level, tile=tile, use_channel_colors=use_channel_colors,
            pyramid_levels=pyramid_levels, downscale=downscale, bigtiff=bigtiff,
        ), remote.url)[1])
    check_storage_options(storage_options, out_path)
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{str(out)!r} exists; pass overwrite=True to replace it")
    if out.is_dir():
        raise IsADirectoryError(f"{str(out)!r} is a directory")
    if not out.parent.exists():
        raise FileNotFoundError(f"the directory of {str(out)!r} does not exist")
    axes = _check_dim_order(dim_order)
    src = _as_source(data)
    try:
        return _write(src, out, axes, dtype, clamp, compression, compression_level, tile,
                      use_channel_colors, pyramid_levels, downscale, bigtiff)
    finally:
        if isinstance(data, (str, os.PathLike)) and hasattr(src, "close"):
            src.close()  # a file we opened ourselves


def _check_codec(comp: Any, cargs: dict[str, Any] | None, dtype: np.dtype[Any], tile: tuple[int, int] | None) -> None:
    """Fail before anything is read or written when tifffile cannot encode ``comp`` here.

    A 16 x 16 page with the export's codec, arguments, dtype and layout is
    encoded in memory: whatever tifffile (and imagecodecs, where it needs it)
    accept, the export accepts, with no list of codec names to keep in sync.
    """
    if comp is None:
        return
    import tifffile

    try:
        tifffile.imwrite(
            io.BytesIO(), np.zeros((16, 16), dtype), photometric="minisblack",
            compression=comp, compressionargs=cargs, tile=(16, 16) if tile is not None else None,
        )
    except Exception as exc:  # tifffile and the codecs raise many types
        if not imagecodecs_installed():
            raise OptionalDependencyError(
                f"to_ome_tiff(compression={comp!r}) needs the imagecodecs package, which is not installed "
                f"({type(exc).__name__}: {exc}); install it with {TIFF_EXTRA_HINT}, or pass "
                f"compression='zlib', 'lzma' or None, which need nothing extra"
            ) from exc
        raise ValueError(
            f"tifffile cannot write {dtype.name} pages with compression={comp!r}"
            f"{'' if cargs is None else f' {cargs}'}: {type(exc).__name__}: {exc}"
        ) from exc


def _write(
    src: LazySource,
    out: Path,
    axes: str,
    dtype: Any,
    clamp: bool,
    compression: str | None,
    compression_level: int | None,
    tile: tuple[int, int] | None,
    use_channel_colors: bool,
    pyramid_levels: int,
    downscale: int,
    bigtiff: bool | None,
) -> str:
    import tifffile

    out_dtype = output_dtype(dtype) if dtype is not None else np.dtype(src.dtype)
    if out_dtype.name not in _OME_DTYPES:
        raise DtypeError(
            f"OME-TIFF cannot store {out_dtype.name} pixels; pass dtype= one of {', '.join(_OME_DTYPES)}"
        )
    if out_dtype.kind == "b":
        out_dtype = np.dtype(np.uint8)  # OME 'bit' pages are bilevel; store 0/1 bytes instead
    levels = _levels(src, pyramid_levels, downscale)
    st, sc, sz, sy, sx = src.shape
    if tile is None:
        tile = (256, 256) if max(sy, sx) > 512 else None
    if tile is not None:
        given = tile
        if (
            isinstance(given, (str, bytes)) or not isinstance(given, (tuple, list)) or len(given) != 2
            or not all(is_integer(v) for v in given)
        ):
            raise ValueError(f"tile must be (height, width) with multiples of 16, got {given!r}")
        tile = (int(given[0]), int(given[1]))
        if min(tile) < 16 or tile[0] % 16 or tile[1] % 16:
            raise ValueError(f"tile must be (height, width) with multiples of 16, got {given!r}")
    total = sum(math.prod(lv.shape) for lv in levels) * out_dtype.itemsize
    if bigtiff is None:
        bigtiff = total > _BIGTIFF_THRESHOLD
    comp: Any = None if compression in (None, "none", "None") else compression
    cargs = None
    if comp is not None and compression_level is not None and str(comp).lower() in _LEVELED_CODECS:
        cargs = {"level": int(compression_level)}
    _check_codec(comp, cargs, out_dtype, tile)
    header = src.header()
    md = tifffile_ome_metadata(
        header, axes=axes, use_channel_colors=use_channel_colors, size_c=sc, stacklevel=4
    )

    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with tifffile.TiffWriter(tmp, bigtiff=bool(bigtiff), ome=True) as tw:
            for k, lv in enumerate(levels):
                lsizes = dict(zip("TCZYX", lv.shape, strict=True))
                ltile = tile
                shape = tuple(lsizes[a] for a in axes)
                opts: dict[str, Any] = {
                    "shape": shape,
                    "dtype": out_dtype,
                    "photometric": "minisblack",
                    "compression": comp,
                    "compressionargs": cargs,
                }
                if ltile is not None:
                    opts["tile"] = ltile
                if k == 0:
                    opts["metadata"] = md
                    if len(levels) > 1:
                        opts["subifds"] = len(levels) - 1
                else:
                    opts["subfiletype"] = 1
                    opts["metadata"] = None
                tw.write(_tile_blocks(lv, axes, ltile, out_dtype, clamp), **opts)
        os.replace(tmp, out)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return str(out)
