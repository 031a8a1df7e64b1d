"""Sources backed by zarr arrays: plain zarr, OME-Zarr 0.4/0.5 and tiled TIFF.

Pieces are the array's own chunks (the read unit of zarr and of TIFF tiles
through ``tifffile``'s zarr store), so a region read decodes only the chunks
or tiles it touches. Axes are mapped to TCZYX by name; TIFF samples (``S``)
become channels when the image has no ``C`` axis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..chunks.assemble import PixelSource
from ..chunks.grid import regular_pieces
from ..errors import DimOrderError, SchemaError
from ..ingest._builder import ImageHeader, default_channels
from ..ingest.dims import CANONICAL, default_dim_order, validate_dim_order
from .base import LazySource

__all__ = ["ZarrArraySource", "open_zarr_source", "open_tiff_source"]


class ZarrArraySource(LazySource):
    """A zarr array whose axes are a permutation of a subset of TCZYX."""

    def __init__(self, array: Any, axes: str, header: ImageHeader, describe: str, *, keep: Any = None) -> None:
        super().__init__()
        self.array = array
        self.axes = validate_dim_order(axes, array.ndim)
        self._header = header
        self.describe = describe
        self._keep = keep  # objects (files, stores) that must outlive the array
        shape = dict(zip(self.axes, (int(s) for s in array.shape)))
        self._shape = tuple(shape.get(a, 1) for a in CANONICAL)
        chunks = dict(zip(self.axes, (int(c) for c in array.chunks)))
        self._chunks = tuple(chunks.get(a, 1) for a in CANONICAL)
        #: Stored bytes of the whole array when the store cannot tell (TIFF tiles).
        self._stored_total: int | None = None

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.array.dtype)

    def header(self) -> ImageHeader:
        return self._header

    def chunk_shape(self) -> tuple[int, int, int]:
        return self._chunks[2:]  # type: ignore[return-value]

    def _open_pixels(self) -> PixelSource:
        origins, extents = regular_pieces(self._shape, self._chunks[2:])
        arr, axes = self.array, self.axes

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c, z, y, x = (int(v) for v in origins[i])
            dz, dy, dx = (int(v) for v in extents[i])
            region = {"T": t, "C": c, "Z": slice(z, z + dz), "Y": slice(y, y + dy), "X": slice(x, x + dx)}
            block = np.asarray(arr[tuple(region[a] for a in axes)])
            kept = [a for a in axes if a in "ZYX"]
            if "Z" not in kept:
                block = block[np.newaxis]
                kept = ["Z", *kept]
            return block.transpose([kept.index(a) for a in "ZYX"])

        nbytes = _stored_estimate(arr, len(origins), self._stored_total)
        return PixelSource(self._shape, self.dtype, origins, extents, decode, nbytes, True, self.describe)  # type: ignore[arg-type]


def _stored_estimate(arr: Any, n: int, total: int | None = None) -> np.ndarray:
    try:
        total = int(arr.nbytes_stored()) if total is None else int(total)
    except Exception:  # noqa: BLE001 - stores that cannot tell: fall back to raw size
        total = int(np.prod(arr.shape)) * np.dtype(arr.dtype).itemsize
    return np.full(n, total // max(n, 1), dtype=np.int64)


def _header(image_id: str, name: str, size_c: int, scale: dict[str, float] | None = None, unit: str | None = "µm", channel_names: list[str] | None = None) -> ImageHeader:
    scale = scale or {}
    return ImageHeader(
        image_id=image_id,
        name=name,
        image_type=None,
        acquisition_datetime=None,
        channels=default_channels(channel_names, size_c),
        physical_size_x=scale.get("x", 1.0),
        physical_size_y=scale.get("y", 1.0),
        physical_size_z=scale.get("z", 1.0),
        physical_size_x_unit=unit,
        physical_size_y_unit=unit,
        physical_size_z_unit=unit,
    )


def _ome_multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    if "ome" in attrs and isinstance(attrs["ome"], dict) and "multiscales" in attrs["ome"]:
        return attrs["ome"]["multiscales"]
    return attrs.get("multiscales")


def open_zarr_source(path_or_array: Any, *, level: int = 0, dim_order: str | None = None) -> ZarrArraySource:
    """Open a zarr array or an OME-Zarr image group (``level`` picks the resolution)."""
    import zarr

    if isinstance(path_or_array, (str, os.PathLike)):
        p = Path(path_or_array)
        if not p.exists():
            raise FileNotFoundError(f"no such zarr store: {str(p)!r}")
        node = zarr.open(str(p), mode="r")
        label = str(p)
    else:
        node = path_or_array
        label = f"zarr array {getattr(node, 'path', '') or ''}".strip()
    if isinstance(node, zarr.Group):
        ms = _ome_multiscales(dict(node.attrs))
        if not ms:
            raise SchemaError(
                f"zarr group {label!r} has no OME-Zarr 'multiscales' metadata; open one of its "
                f"arrays directly ({list(node.array_keys())[:5]}) with dim_order="
            )
        m = ms[0]
        datasets = m.get("datasets") or []
        if not 0 <= level < len(datasets):
            raise SchemaError(f"{label!r} has {len(datasets)} resolution levels; level {level} does not exist")
        ds = datasets[level]
        arr = node[ds["path"]]
        axes_meta = m.get("axes") or [{"name": a} for a in "tczyx"[-arr.ndim:]]
        names = [(a["name"] if isinstance(a, dict) else str(a)).upper() for a in axes_meta]
        axes = "".join(names)
        scale: dict[str, float] = {}
        for tr in ds.get("coordinateTransformations") or []:
            if tr.get("type") == "scale":
                scale = {n.lower(): float(s) for n, s in zip(names, tr["scale"])}
        unit = None
        for a in axes_meta:
            if isinstance(a, dict) and a.get("type") == "space" and a.get("unit"):
                unit = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm"}.get(a["unit"], a["unit"])
                break
        chans = None
        omero = dict(node.attrs).get("omero") or (dict(node.attrs).get("ome") or {}).get("omero")
        if isinstance(omero, dict) and omero.get("channels"):
            chans = [str(ch.get("label", f"C{i}")) for i, ch in enumerate(omero["channels"])]
        name = m.get("name") or Path(label).name
        try:
            src = ZarrArraySource(arr, axes, _header(name, name, 1, scale, unit or "µm"), f"OME-Zarr {label!r} level {level} (chunks {arr.chunks})")
        except DimOrderError as exc:
            raise SchemaError(f"OME-Zarr {label!r}: axes {axes!r} are not a subset of TCZYX ({exc})") from exc
        sc = src.shape[1]
        src._header.channels = default_channels(chans if chans and len(chans) == sc else None, sc)
        return src
    axes = dim_order or default_dim_order(node.ndim)
    src = ZarrArraySource(node, axes, _header("unnamed", "unknown", 1), f"zarr array {label!r} (chunks {node.chunks})")
    src._header.channels = default_channels(None, src.shape[1])
    return src


def open_tiff_source(path: str | os.PathLike[str], *, series: int = 0, level: int = 0) -> ZarrArraySource:
    """Open a (tiled) TIFF / OME-TIFF series lazily through tifffile's zarr store."""
    import tifffile
    import zarr

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such TIFF file: {str(p)!r}")
    try:
        tf = tifffile.TiffFile(str(p))
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise SchemaError(f"{str(p)!r} is not a readable TIFF file: {exc}") from exc
    if not 0 <= series < len(tf.series):
        raise SchemaError(f"{str(p)!r} has {len(tf.series)} series; series {series} does not exist")
    s = tf.series[series]
    if not 0 <= level < len(s.levels):
        raise SchemaError(f"{str(p)!r} series {series} has {len(s.levels)} levels; level {level} does not exist")
    lv = s.levels[level]
    axes = lv.axes.upper()
    if "S" in axes:
        axes = axes.replace("S", "C") if "C" not in axes else axes
    unknown = [a for a in axes if a not in CANONICAL]
    if unknown:
        raise SchemaError(
            f"TIFF series axes {lv.axes!r} include {unknown}, which omeframe cannot map to TCZYX yet"
        )
    arr = zarr.open(lv.aszarr(), mode="r")
    if isinstance(arr, zarr.Group):  # multi-level stores open as groups
        arr = arr[str(level)] if str(level) in arr else arr[next(iter(arr.array_keys()))]
    src = ZarrArraySource(arr, axes, _header(p.stem, p.name, 1), f"TIFF {str(p)!r} series {series} level {level} (tiles {arr.chunks})", keep=tf)
    # tifffile's zarr store reports only its JSON metadata as "stored" bytes;
    # the tiles' byte counts are in the pages.
    src._stored_total = sum(int(sum(pg.databytecounts)) for pg in lv.pages if pg is not None) or None
    src._header.channels = default_channels(None, src.shape[1])
    return src
