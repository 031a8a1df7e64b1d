"""Write OME-Zarr 0.4 (zarr v2) or 0.5 (zarr v3, optionally sharded), streaming.

:func:`to_ome_zarr` never holds the image in memory: it walks the output
array's write units (shards when sharding, else chunks), reads each unit's
TCZYX block through a lazy plan (only the source chunks it touches), and
stores it. Pyramid level ``k`` is computed from level ``k - 1`` *as written*
(a :class:`~omeframe.engine.pyramid.DownsampledSource` over the new zarr
array), so each level costs one pass over a quarter of the previous one.
Display windows of the ``omero`` metadata are measured on the way (per-channel
min/max of level 0).

The store is written into a temporary directory beside ``out_path`` and
renamed into place at the end: a failed export leaves nothing behind, and an
existing store is replaced only with ``overwrite=True``. With ``client=`` the
write units of each level are stored by tasks on ``dask.distributed``
workers; this process creates the arrays, writes the group's OME metadata
after the last level and renames the store into place.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import wait
from dataclasses import replace
from itertools import product
from pathlib import Path
from typing import Any, Literal

import numpy as np

from omeframe.engine import threads as _threads
from omeframe.engine.derived import as_source
from omeframe.engine.lazy import LazyImage
from omeframe.engine.pyramid import pyramid_levels
from omeframe.engine.source import LazySource
from omeframe.formats.zarr import ZARR_MARKERS
from omeframe.formats.zarr.array import ZarrArraySource
from omeframe.model.dims import CANONICAL
from omeframe.model.dtypes import dtype_name, to_numpy_dtype
from omeframe.model.errors import DimOrderError
from omeframe.model.header import default_channels
from omeframe.storage.remote import RemoteStore
from omeframe.storage.url import check_storage_options, parse_location

__all__ = ["to_ome_zarr", "as_export_source"]

_DEFAULT_CHUNKS = (1, 1, 4, 512, 512)

# compressor name -> blosc inner compressor
_BLOSC_CNAMES: dict[str, Literal["lz4", "lz4hc", "zstd", "zlib"]] = {
    "blosc": "lz4",
    "lz4": "lz4",
    "blosc-lz4": "lz4",
    "blosc-lz4hc": "lz4hc",
    "blosc-zstd": "zstd",
    "blosc-zlib": "zlib",
}


def as_export_source(data: Any) -> LazySource:
    """The :class:`LazySource` behind ``data`` (OMEArrow, plan, source, record, array, Dataset, path)."""
    return as_source(data)



def _check_dim_order(dim_order: str, shape: tuple[int, ...]) -> str:
    if not isinstance(dim_order, str):
        raise DimOrderError(f"dim_order must be a string like 'TCZYX', got {dim_order!r}")
    order = dim_order.strip().upper()
    bad = sorted({a for a in order if a not in CANONICAL})
    if bad or len(set(order)) != len(order):
        raise DimOrderError(
            f"dim_order {dim_order!r} must use each of the letters T, C, Z, Y, X at most once"
        )
    if "Y" not in order or "X" not in order:
        raise DimOrderError(f"dim_order {dim_order!r} must contain Y and X")
    if order != "".join(a for a in CANONICAL if a in order):
        raise DimOrderError(
            f"dim_order {dim_order!r} is not in OME-Zarr axis order: axes must come as time, "
            f"channel, then space (a subsequence of 'TCZYX', e.g. {''.join(a for a in CANONICAL if a in order)!r})"
        )
    for a, n in zip(CANONICAL, shape, strict=True):
        if a not in order and n != 1:
            raise DimOrderError(
                f"dim_order {dim_order!r} leaves out axis {a}, but the image has {a}={n}; only "
                "axes of size 1 can be left out"
            )
    return order


def _per_axis(value: Sequence[int], order: str, what: str) -> dict[str, int]:
    vals = [int(v) for v in value]
    if len(vals) == 5:
        d = dict(zip(CANONICAL, vals, strict=True))
    elif len(vals) == len(order):
        d = dict(zip(order, vals, strict=True))
    else:
        raise ValueError(
            f"{what} must give 5 sizes (T, C, Z, Y, X) or one per axis of dim_order {order!r}, got {tuple(value)}"
        )
    if min(d.values()) < 1:
        raise ValueError(f"{what} sizes must be >= 1, got {tuple(value)}")
    return d


def _codec(compressor: str | None, level: int | None, zarr_format: int) -> Any:
    name = None if compressor is None else str(compressor).lower()
    if name in (None, "none", "raw", ""):
        if level not in (None, 3):  # 3: to_ome_zarr's default, no request
            raise ValueError(
                f"compressor_level={level} applies to compressed chunks, but compressor is None; set compressor= "
                "or drop compressor_level="
            )
        return None
    if zarr_format == 3:
        from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

        if name == "zstd":
            return ZstdCodec(level=3 if level is None else int(level))
        if name in ("gzip", "zlib"):
            return GzipCodec(level=6 if level is None else int(level))
        if name in _BLOSC_CNAMES:
            return BloscCodec(cname=_BLOSC_CNAMES[name], clevel=5 if level is None else int(level), shuffle="shuffle")
    else:
        import numcodecs

        if name == "zstd":
            return numcodecs.Zstd(level=3 if level is None else int(level))
        if name == "gzip":
            return numcodecs.GZip(level=6 if level is None else int(level))
        if name == "zlib":
            return numcodecs.Zlib(level=6 if level is None else int(level))
        if name in _BLOSC_CNAMES:
            return numcodecs.Blosc(
                cname=_BLOSC_CNAMES[name], clevel=5 if level is None else int(level), shuffle=numcodecs.Blosc.SHUFFLE
            )
    raise ValueError(
        f"unknown compressor {compressor!r}; use 'zstd', 'gzip', 'zlib', 'blosc' "
        "('blosc-lz4', 'blosc-zstd', ...) or None"
    )


def _level_layout(
    shape: tuple[int, ...], chunks: dict[str, int], shards: dict[str, int] | None, order: str
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    full = dict(zip(CANONICAL, shape, strict=True))
    ch, sh = [], []
    for a in order:
        n = full[a]
        c = max(1, min(chunks[a], n))
        ch.append(c)
        if shards is not None:
            s = shards[a]
            if c < chunks[a]:
                s = c
            else:
                s = min(s, -(-n // c) * c)
            sh.append(s)
    return tuple(ch), (tuple(sh) if shards is not None else None)


def _unit_regions(shape: tuple[int, ...], unit: tuple[int, ...]) -> list[tuple[slice, ...]]:
    ranges = [range(0, n, u) for n, u in zip(shape, unit, strict=True)]
    return [
        tuple(slice(o, min(o + u, n)) for o, u, n in zip(origin, unit, shape, strict=True))
        for origin in product(*ranges)
    ]


#: Decoded bytes of write units per task of a distributed export, at most.
DASK_TASK_BYTES = 64 << 20
#: A distributed export cuts at least this many tasks per worker thread (when it has the units).
DASK_TASKS_PER_THREAD = 4


def _write_unit(
    arr: Any, plan: LazyImage, order: str, region: tuple[slice, ...], clamp: bool, measure: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """Read one write unit's block through ``plan``, store it; its per-channel (min, max) when ``measure``."""
    pos = {a: i for i, a in enumerate(order)}
    sel: dict[str, Any] = {}
    for a in CANONICAL:
        r = region[pos[a]] if a in pos else slice(0, 1)
        if a in "YX":
            sel[a.lower()] = (r.start, r.stop)
        else:
            sel[a.lower()] = slice(r.start, r.stop)
    block = plan.select(**sel).execute(clamp=clamp)
    out = block.reshape([block.shape[i] for i, a in enumerate(CANONICAL) if a in pos])
    arr[region] = out
    if not measure:
        return None
    sc = plan.source.shape[1]
    c0 = region[pos["C"]].start if "C" in pos else 0
    lo = np.full(sc, np.nan)
    hi = np.full(sc, np.nan)
    for j in range(block.shape[1]):
        part = block[:, j]
        if part.dtype.kind == "f":
            if np.isnan(part).all():
                continue
            lo[c0 + j], hi[c0 + j] = float(np.nanmin(part)), float(np.nanmax(part))
        else:
            lo[c0 + j], hi[c0 + j] = float(part.min()), float(part.max())
    return lo, hi


def _write_regions(
    arr: Any, plan: LazyImage, order: str, regions: list[tuple[slice, ...]], clamp: bool, measure: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``regions`` of ``arr`` (a few at a time in the thread pool); per-channel (min, max) of all.

    The task a distributed export runs on a worker, too.
    """
    sc = plan.source.shape[1]
    lo_all = np.full(sc, np.nan)
    hi_all = np.full(sc, np.nan)

    def fold(res: tuple[np.ndarray, np.ndarray] | None) -> None:
        if res is not None:
            np.fmin(lo_all, res[0], out=lo_all)
            np.fmax(hi_all, res[1], out=hi_all)

    if len(regions) > 1 and _threads.can_parallelize():
        step = max(1, _threads.num_threads() * 2)  # bounded: a few units in flight
        pool = _threads.pool()
        for i in range(0, len(regions), step):
            futs = [pool.submit(_write_unit, arr, plan, order, r, clamp, measure) for r in regions[i : i + step]]
            wait(futs)  # all settle before an error propagates (nothing writes after cleanup)
            for f in futs:
                fold(f.result())
    else:
        for region in regions:
            fold(_write_unit(arr, plan, order, region, clamp, measure))
    return lo_all, hi_all


def _regions_on_client(
    client: Any, arr: Any, plan: LazyImage, order: str, regions: list[tuple[slice, ...]], unit_bytes: int,
    clamp: bool, measure: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_write_regions` in tasks on ``client``'s workers (runs of regions); the folded (min, max).

    Every task writes whole write units (shards or chunks), so no two tasks
    touch one stored object and a task re-run after its worker died rewrites
    exactly its own objects.
    """
    slots = sum(int(n) for n in client.nthreads().values())
    n = len(regions)
    n_tasks = max(1, min(n, max(-(-n * unit_bytes // DASK_TASK_BYTES), DASK_TASKS_PER_THREAD * max(1, slots))))
    bounds = np.unique(np.linspace(0, n, n_tasks + 1).round().astype(np.int64)).tolist()
    futures = [
        client.submit(_write_regions, arr, plan, order, regions[a:b], clamp, measure, pure=False)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    try:
        results = client.gather(futures)
    except BaseException:
        client.cancel(futures)
        raise
    sc = plan.source.shape[1]
    lo_all, hi_all = np.full(sc, np.nan), np.full(sc, np.nan)
    for lo, hi in results:
        np.fmin(lo_all, lo, out=lo_all)
        np.fmax(hi_all, hi, out=hi_all)
    return lo_all, hi_all


def _write_level(
    arr: Any,
    src: LazySource,
    order: str,
    unit: tuple[int, ...],
    *,
    out_dtype: np.dtype[Any],
    clamp: bool,
    measure: bool,
    client: Any = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Stream ``src`` into ``arr`` unit by unit (on ``client``'s workers if given); per-channel (min, max)."""
    plan = LazyImage(src)
    if src.dtype != out_dtype:
        plan = plan.with_dtype(out_dtype)
    regions = _unit_regions(tuple(int(s) for s in arr.shape), unit)
    if client is not None and regions:
        unit_bytes = int(np.prod(unit)) * out_dtype.itemsize
        lo, hi = _regions_on_client(client, arr, plan, order, regions, unit_bytes, clamp, measure)
    else:
        lo, hi = _write_regions(arr, plan, order, regions, clamp, measure)
    return (lo, hi) if measure else None


def _windows(lo: np.ndarray, hi: np.ndarray, dtype: np.dtype[Any]) -> list[tuple[float, float, float, float]]:
    out = []
    for a, b in zip(lo, hi, strict=True):
        a = 0.0 if math.isnan(a) else float(a)
        b = a if math.isnan(b) else float(b)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            out.append((float(info.min), float(info.max), a, b))
        elif dtype.kind == "b":
            out.append((0.0, 1.0, a, b))
        else:
            out.append((a, b, a, b))
    return out


def to_ome_zarr(
    data: Any,
    out_path: str | os.PathLike[str],
    *,
    dtype: Any = None,
    clamp: bool = False,
    dim_order: str = "TCZYX",
    multiscale_levels: int = 1,
    downscale_spatial_by: int = 2,
    zarr_format: int = 3,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | None = None,
    compressor: str | None = "zstd",
    compressor_level: int | None = 3,
    image_name: str | None = None,
    overwrite: bool = False,
    client: Any = None,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write ``data`` as an OME-Zarr image, streaming chunk by chunk.

    Parameters
    ----------
    data
        An ``OMEArrow`` (lazy plans are streamed), a ``LazyImage`` or source,
        an OME-Arrow record, a numpy array, a :class:`~omeframe.Dataset`
        (first image; use ``omeframe.scan(ds, image_id=...)`` for another) or
        any path ``omeframe.scan`` opens.
    out_path
        The store directory to create (e.g. ``"image.ome.zarr"``), or a URL
        (``s3://bucket/image.ome.zarr``, options in ``storage_options``). A
        remote store is written to a local temporary store first, then
        uploaded object by object (each object whole, in one request): the
        arrays' metadata and chunks first, the root group's metadata
        (``zarr.json``, or ``.zgroup`` / ``.zattrs``), which makes the image
        visible, last. A failed export publishes nothing; with ``overwrite``
        the old root metadata is removed first and objects of the old store
        that the new one lacks are removed before the new root is published.
    dtype, clamp
        Output dtype (``None`` keeps the native one) and whether values are
        clipped into its range (otherwise numpy casting rules apply).
    dim_order
        Axes of the written arrays: a subsequence of ``"TCZYX"`` (OME-Zarr
        requires time, channel, space order); left-out axes must have size 1.
    multiscale_levels, downscale_spatial_by
        Number of pyramid levels and the Y/X factor between them (block mean;
        nearest for label images). Fewer levels are written when the image
        gets smaller than one pixel.
    zarr_format
        ``2`` writes OME-Zarr 0.4, ``3`` writes OME-Zarr 0.5.
    chunks, shards
        ``(T, C, Z, Y, X)`` chunk and shard shapes (or one size per axis of
        ``dim_order``). Default chunks ``(1, 1, 4, 512, 512)`` clipped to the
        image; shards (zarr v3 only) must be multiples of the chunks.
    compressor, compressor_level
        ``"zstd"`` (default), ``"gzip"``, ``"zlib"`` (v2; v3 writes gzip),
        ``"blosc"`` / ``"blosc-lz4"`` / ``"blosc-zstd"`` or ``None``.
    image_name
        ``multiscales[0].name`` (default: the image's name).
    overwrite
        Replace an existing ``out_path``; otherwise it is an error.
    client
        A ``dask.distributed.Client``: the chunks (or shards) of every level
        are read, encoded and stored by tasks on its workers (runs of whole
        write units, so no object is written by two tasks, and they measure
        the display windows on the way); this process creates the arrays,
        writes the OME group metadata last and moves the store into place. The workers must see
        ``out_path`` (one machine or a shared file system); the source
        travels to them by pickle (a file as its path). The result equals a
        local export's.

    storage_options
        Options of the URL's filesystem (credentials, ``endpoint_url`` ...).

    Returns
    -------
    str
        ``out_path``.

    Example
    -------
    >>> omeframe.to_ome_zarr(omeframe.scan("big.ome.tif"), "big.ome.zarr", multiscale_levels=3)  # doctest: +SKIP
    >>> omeframe.to_ome_zarr(omeframe.scan("big.ome.tif"), "big.ome.zarr", client=client)        # doctest: +SKIP
    """
    remote = parse_location(out_path)
    if remote is not None:
        store = RemoteStore(remote, storage_options)
        old = [n for n in _ROOT_META if store.exists(n)]
        if old and not overwrite:
            raise FileExistsError(f"{remote.url!r} already holds a zarr store; pass overwrite=True to replace it")
        with tempfile.TemporaryDirectory(prefix="omeframe-zarr-") as staging:
            local = Path(staging) / (remote.url.rsplit("/", 1)[-1] or "image.ome.zarr")
            to_ome_zarr(
                data, local, dtype=dtype, clamp=clamp, dim_order=dim_order, multiscale_levels=multiscale_levels,
                downscale_spatial_by=downscale_spatial_by, zarr_format=zarr_format, chunks=chunks, shards=shards,
                compressor=compressor, compressor_level=compressor_level, image_name=image_name, client=client,
            )
            upload_store(local, store, replace=bool(old))
        return remote.url
    check_storage_options(storage_options, out_path)
    import zarr

    from omeframe.formats.zarr.models import ImageMetadata  # lazy: pydantic

    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 (OME-Zarr 0.4) or 3 (OME-Zarr 0.5), got {zarr_format!r}")
    fmt: Literal[2, 3] = 3 if zarr_format == 3 else 2
    if shards is not None and zarr_format != 3:
        raise ValueError("shards need zarr_format=3 (OME-Zarr 0.5); zarr v2 has no sharding")
    if int(multiscale_levels) < 1:
        raise ValueError(f"multiscale_levels must be >= 1, got {multiscale_levels}")
    if int(multiscale_levels) > 1 and int(downscale_spatial_by) < 2:
        raise ValueError(f"downscale_spatial_by must be >= 2, got {downscale_spatial_by}")
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{str(out)!r} already exists; pass overwrite=True to replace it")
    if not out.parent.exists():
        raise FileNotFoundError(f"parent directory of {str(out)!r} does not exist")
    if client is not None and not all(callable(getattr(client, a, None)) for a in ("submit", "nthreads")):
        raise TypeError(
            f"client must be a dask.distributed.Client (or None for a local export), got a {type(client).__name__}"
        )

    source = as_export_source(data)
    shape = source.shape
    order = _check_dim_order(dim_order, shape)
    out_dtype = source.dtype if dtype is None else to_numpy_dtype(dtype)
    chunk_d: dict[str, int]
    if chunks is None:
        chunk_d = dict(zip(CANONICAL, _DEFAULT_CHUNKS, strict=True))
    else:
        chunk_d = _per_axis(chunks, order, "chunks")
    shard_d: dict[str, int] | None = None
    if shards is not None:
        shard_d = _per_axis(shards, order, "shards")
        bad = [a for a in order if shard_d[a] % chunk_d[a]]
        if bad:
            raise ValueError(
                f"shards {tuple(shards)} must be multiples of chunks on every axis; not on {bad} "
                f"(chunks {tuple(chunk_d[a] for a in CANONICAL)})"
            )
    codec = _codec(compressor, compressor_level, zarr_format)
    header = source.header()
    if header.channels is None or len(header.channels) != shape[1]:
        header = replace(header, channels=default_channels(None, shape[1]))

    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=fmt)
        level_src: LazySource = source
        level_shapes: list[tuple[int, ...]] = []
        windows = None
        n_levels = int(multiscale_levels)
        for lv in range(n_levels):
            full = dict(zip(CANONICAL, level_src.shape, strict=True))
            arr_shape = tuple(full[a] for a in order)
            ch, sh = _level_layout(level_src.shape, chunk_d, shard_d, order)
            kwargs: dict[str, Any] = {
                "name": str(lv),
                "shape": arr_shape,
                "dtype": out_dtype,
                "chunks": ch,
                "compressors": codec,
                "fill_value": False if out_dtype.kind == "b" else 0,
            }
            if zarr_format == 3:
                kwargs["dimension_names"] = [a.lower() for a in order]
                kwargs["shards"] = sh
            arr = root.create_array(**kwargs)
            measured = _write_level(
                arr, level_src, order, sh or ch, out_dtype=out_dtype, clamp=clamp, measure=lv == 0, client=client
            )
            if measured is not None:
                windows = _windows(measured[0], measured[1], out_dtype)
            level_shapes.append(arr_shape)
            if lv + 1 == n_levels:
                break
            # the next level is reduced from this level as written (not from the source)
            written = ZarrArraySource(arr, order, replace(header), f"written level {lv}")
            nxt = pyramid_levels(written, 2, factor=int(downscale_spatial_by))
            if len(nxt) < 2:  # too small to reduce further
                break
            level_src = nxt[1]
        pm = {
            "type": dtype_name(out_dtype),
            "size_c": shape[1],
            "size_z": shape[2],
            "physical_size_x": header.physical_size_x,
            "physical_size_y": header.physical_size_y,
            "physical_size_z": header.physical_size_z,
            "physical_size_x_unit": header.physical_size_x_unit,
            "physical_size_y_unit": header.physical_size_y_unit,
            "physical_size_z_unit": header.physical_size_z_unit,
            "channels": [c.as_dict() for c in header.channels],
        }
        meta = ImageMetadata.from_pixels_meta(
            pm,
            len(level_shapes),
            downscale=int(downscale_spatial_by),
            dim_order=order,
            version="0.5" if zarr_format == 3 else "0.4",
            name=image_name or header.name,
            windows=windows,
            multiscale_type="nearest" if (header.image_type or "") == "label" else "local_mean",
        )
        root.attrs.update(meta.to_attrs())
        if out.exists():  # overwrite=True (checked above): swap in, then drop the old one
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, trash)
            os.replace(tmp, out)
            if trash.is_dir():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink(missing_ok=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out)


#: Objects at the root of a zarr store whose presence makes it (and its image) visible to readers.
_ROOT_META = ZARR_MARKERS


def upload_store(local: Path, store: RemoteStore, *, replace: bool = False) -> None:
    """Upload the local zarr store ``local`` to ``store``, publishing its root metadata last.

    Every object is uploaded whole (one PUT, or a multipart upload the store
    publishes on completion), the objects below the root concurrently, then
    the root's own files. With ``replace`` (an older store is there) the old
    root metadata is deleted first, so readers never see the old root over a
    mix of old and new arrays, and old objects the new store lacks are
    deleted before the new root appears.

    Example
    -------
    >>> import numpy as np, tempfile
    >>> local = Path(tempfile.mkdtemp()) / "a.ome.zarr"
    >>> _ = to_ome_zarr(np.zeros((8, 8), np.uint8), local)
    >>> upload_store(local, RemoteStore("memory://omeframe-doc/a.ome.zarr"))
    >>> RemoteStore("memory://omeframe-doc/a.ome.zarr").exists("zarr.json")
    True
    """
    from concurrent.futures import ThreadPoolExecutor

    files = sorted(p for p in local.rglob("*") if p.is_file())
    rels = [p.relative_to(local).as_posix() for p in files]
    inner = [(p, r) for p, r in zip(files, rels, strict=True) if "/" in r]
    root = [(p, r) for p, r in zip(files, rels, strict=True) if "/" not in r]
    if replace:
        for name in _ROOT_META:
            store.delete(name)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda pr: store.upload(pr[0], pr[1]), inner))
    if replace:
        prefix = store.location.path.rstrip("/") + "/"
        keep = set(rels)
        found = store.fs.find(store.location.path)
        stale = [str(k)[len(prefix):] for k in found if str(k).startswith(prefix)]
        for rel in stale:
            if rel not in keep:
                store.delete(rel)
    for p, r in root:
        if r not in _ROOT_META:
            store.upload(p, r)
    for p, r in sorted(root, key=lambda pr: pr[1] in ZARR_MARKERS[:2]):  # the v3 / v2 group marker last
        if r in _ROOT_META:
            store.upload(p, r)
