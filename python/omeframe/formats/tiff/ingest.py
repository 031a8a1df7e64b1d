"""TIFF / OME-TIFF front end: ``from_tiff`` and ``open_lazy_plane_source``.

``from_tiff`` opens the file as a lazy :class:`~omeframe.formats.tiff.source.TiffSource`
and hands it to :func:`~omeframe.formats.dataset.ingest.ingest_source`: without ``out`` it
returns one OME-Arrow record (the whole image is read; for small images),
with ``out`` it streams the image tile by tile into a chunked dataset (for
large ones; ``levels="all"`` also stores the file's pyramid levels).
"""

from __future__ import annotations

from dataclasses import replace

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from omeframe.formats.record.arrays import DEFAULT_COMPRESSION_LEVEL
from omeframe.formats.tiff.source import open_tiff_source

__all__ = ["from_tiff", "open_lazy_plane_source"]

_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")


def from_tiff(
    tiff_path: str | os.PathLike[str],
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = False,
    *,
    series: int = 0,
    out: str | os.PathLike[str] | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    levels: Literal["all", "first"] | int | Sequence[int] = "first",
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = "zstd",
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    mode: Literal["create", "append", "overwrite"] = "create",
    progress: bool | None = None,
) -> Any:
    """Read a TIFF / OME-TIFF series into an OME-Arrow record, or stream it into a dataset.

    Parameters
    ----------
    tiff_path
        The file.
    image_id, name
        Defaults: the file stem (``_s<series>`` appended for series > 0 of a
        multi-series file) and the OME image name or file name.
    image_type, channel_names, acquisition_datetime
        Overrides of the file's metadata (channel names and colours,
        wavelengths, physical sizes and acquisition date come from OME-XML,
        ImageJ metadata or resolution tags when present).
    clamp_to_uint16
        Records only: saturate pixels into uint16 (native dtype otherwise).
    series
        The series (scene) to read.
    out, format, mode
        Write a chunked dataset at ``out`` (Parquet or Vortex) instead of
        returning a record; ``mode`` as in :func:`omeframe.write_dataset`.
    levels
        Pyramid levels to store in the dataset: ``"first"``, ``"all"``, a
        count or level indices.
    chunk_shape
        ``(Z, Y, X)`` chunks; default the file's tiles (strips: 512x512).
    compression, compression_level
        Per-chunk codec.
    progress
        Show a progress bar while writing a dataset.

    Returns
    -------
    pyarrow.StructScalar or omeframe.Dataset
    """
    from omeframe.formats.dataset.ingest import ingest_source

    with open_tiff_source(tiff_path, series=series) as src:
        return ingest_source(
            src,
            out=out,
            format=format,
            mode=mode,
            levels=levels,
            image_id=image_id,
            name=name,
            image_type=image_type,
            channel_names=channel_names,
            acquisition_datetime=acquisition_datetime,
            clamp_to_uint16=clamp_to_uint16,
            chunk_shape=chunk_shape,
            compression=compression,
            compression_level=compression_level,
            progress=progress,
        )


def _pixels_meta(src: Any) -> dict[str, Any]:
    return replace(src.header(), dtype_meta=None).pixels_meta(src.shape, src.dtype.name)


def open_lazy_plane_source(
    source: str,
) -> tuple[dict[str, Any], Callable[[int, int, int], np.ndarray]] | None:
    """``(pixels_meta, plane_loader)`` for a TIFF or OME-Zarr path, else ``None``.

    ``plane_loader(t, z, c)`` returns the ``(Y, X)`` plane in the native dtype,
    reading only that plane's tiles. The file stays open while the loader is
    referenced and is closed when it is garbage-collected.
    """
    if not isinstance(source, (str, os.PathLike)):
        return None
    text = os.fspath(source)
    if "://" in text:
        return None
    p = Path(text)
    suffix = p.suffix.lower()
    if suffix in _TIFF_SUFFIXES and p.is_file():
        src: Any = open_tiff_source(p)
    elif p.is_dir() and (
        suffix == ".zarr" or any((p / n).exists() for n in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))
    ):
        from omeframe.formats.zarr.source import open_ome_zarr_source

        try:
            src = open_ome_zarr_source(p)
        except Exception:  # noqa: BLE001 - not an image we can plane-load
            return None
    else:
        if suffix in _TIFF_SUFFIXES and not p.exists():
            raise FileNotFoundError(f"no such TIFF file: {text!r}")
        return None
    from omeframe.engine.lazy import LazyImage

    plan = LazyImage(src)
    st, sc, sz, _, _ = src.shape

    def plane_loader(t: int, z: int, c: int) -> np.ndarray:
        for name, v, n in (("t", t, st), ("z", z, sz), ("c", c, sc)):
            if not 0 <= int(v) < n:
                raise IndexError(f"{name}={v} is out of range [0, {n})")
        return plan.select(t=[int(t)], c=[int(c)], z=[int(z)]).execute()[0, 0, 0]

    return _pixels_meta(src), plane_loader
