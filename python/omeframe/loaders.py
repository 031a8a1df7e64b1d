"""Image-stack loaders with the CAREamics ``ImageStackLoader`` protocol.

Every loader is called as ``loader(source, axes, **options)``: ``source``
wholly determines *what* is loaded (arrays, file paths, zarr stores or URIs),
``axes`` names the axes of the data as stored, and options only change *how*
it is read. Each returns image stacks that read nothing until asked:
:class:`ImageStack` objects, which are :class:`~omeframe.engine.source.LazySource`
instances, so they plug straight into ``LazyImage``, ``OMEArrow.scan``,
``omeframe.write_dataset`` and ``ingest_source``.

Axes
----
``axes`` is a subset of ``"STCZYX"`` in any order, with one letter per
dimension of the data and always ``Y`` and ``X`` (e.g. ``"YX"``, ``"SYX"``,
``"CZYX"``, ``"YXC"``). ``S`` is the *sample* axis: each index along it
becomes its own image stack. A string that does not fit the data (wrong
length, unknown or repeated letters, no ``Y``/``X``) raises
:class:`~omeframe.errors.DimOrderError` (a ``ValueError``) naming the source,
its shape and the axes. Files are checked when they are opened (headers only),
custom files when ``read_func`` first runs (on load when ``axes`` has ``S``,
since the number of samples must be known; on first use otherwise).

Remote files
------------
:func:`load_tiffs`, :func:`load_iter_tiff` and :func:`load_zarrs` also take
URLs (``s3://``, ``gs://``, ``https://`` ..., see
:mod:`omeframe.storage.url`) with ``storage_options=``: TIFF headers, tiles
and strips are read by ranged requests, zarr chunks through zarr's
``FsspecStore``. Every stack a loader returns for a file or URL pickles as
that file and the loader's arguments and is opened again in the process that
unpickles it (``DataLoader`` and Dask workers; see ``engine/reopen.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa

from omeframe.engine.lazy import LazyImage
from omeframe.engine.pieces import Pieces
from omeframe.engine.reopen import set_recipe
from omeframe.engine.source import LazySource
from omeframe.facade import Dataset, OMEArrow, ingest_source, write_dataset
from omeframe.formats.custom.source import (
    AxesArraySource,
    CustomSource,
    LazyArray,
    check_axes,
)
from omeframe.formats.czi.source import czi_scenes, import_pylibczirw, open_czi_source
from omeframe.formats.stack.source import _tiff_physical
from omeframe.formats.zarr import ZARR_SUFFIX, is_zarr_dir
from omeframe.formats.zarr.source import open_ome_zarr_source, open_remote_zarr
from omeframe.model.errors import CorruptFileError, DimOrderError, SchemaError, reraise_access_error
from omeframe.model.header import ImageHeader
from omeframe.registry import open_source
from omeframe.storage.remote import open_remote_file
from omeframe.storage.url import RemoteURL, check_storage_options, parse_location

__all__ = [
    "ImageStack",
    "ImageStacks",
    "load_arrays",
    "load_tiffs",
    "load_iter_tiff",
    "load_zarrs",
    "load_czis",
    "load_custom_file",
    "parse_zarr_uri",
    "LOADERS",
]


class ImageStack(LazySource):
    """One lazily loaded image: a source plus where it came from.

    Attributes
    ----------
    source
        The underlying :class:`LazySource` (TCZYX view).
    origin
        The file, store/URI or ``"array[i]"`` it was loaded from.
    axes
        The axes string the loader was given (original layout of the data).
    sample
        Index along ``S`` (or the CZI scene) this stack shows, else ``None``.
    kind
        ``"array"``, ``"tiff"``, ``"zarr"``, ``"czi"`` or ``"custom"``.
    """

    def __init__(self, source: LazySource, *, origin: str, axes: str, kind: str, sample: int | None = None) -> None:
        if not isinstance(source, LazySource):
            raise TypeError(
                f"ImageStack wraps a LazySource (what the loaders return, e.g. a TIFF or zarr source), got "
                f"{type(source).__name__}; for arrays call omeframe.load_arrays(arrays, axes) instead"
            )
        super().__init__()
        self.source = source
        self.origin = origin
        self.axes = axes
        self.kind = kind
        self.sample = sample
        self.describe = source.describe

    def __repr__(self) -> str:
        s = "" if self.sample is None else f", sample={self.sample}"
        return f"ImageStack({self.kind} {self.origin!r}, axes={self.axes!r}{s})"

    # ---- LazySource protocol (delegated) ---------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self.source.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.source.dtype

    def header(self) -> ImageHeader:
        return self.source.header()

    def _open_pixels(self) -> Pieces:
        return self.source.pixel_source()

    def chunk_stats(self) -> dict[str, np.ndarray] | None:
        return self.source.chunk_stats()

    def chunk_shape(self) -> tuple[int, int, int] | None:
        return self.source.chunk_shape()

    def levels(self) -> list[LazySource]:
        lv = self.source.levels()
        return [self, *lv[1:]] if lv and lv[0] is self.source else lv

    def labels(self) -> dict[str, LazySource]:
        return self.source.labels()

    # ---- conveniences ------------------------------------------------------
    @property
    def data_axes(self) -> str:
        """The original axes without ``S`` (the layout of :meth:`to_numpy`)."""
        return "".join(a for a in self.axes if a != "S")

    def plan(self) -> LazyImage:
        """A :class:`~omeframe.LazyImage` over this stack."""
        return LazyImage(self)

    def scan(self, *, tcz: tuple[int, int, int] = (0, 0, 0), image_type: str | None = None) -> OMEArrow:
        """This stack as a lazy :class:`~omeframe.OMEArrow` (``select`` / ``explain`` / ``collect``)."""
        obj = OMEArrow._from_plan(self.plan(), tcz=tcz, image_type=image_type)
        obj._source = self.origin
        return obj

    def read(self, *, t: Any = None, c: Any = None, z: Any = None, y: Any = None, x: Any = None) -> np.ndarray:
        """Read a TCZYX selection (only the pieces it touches)."""
        return self.plan().select(t=t, c=c, z=z, y=y, x=x).execute()

    def to_numpy(self) -> np.ndarray:
        """The whole stack in its original axes (:attr:`data_axes`)."""
        full = self.plan().execute()
        order = self.data_axes
        if not order:  # pragma: no cover - axes always have Y and X
            return full
        idx = tuple(slice(None) if a in order else 0 for a in "TCZYX")
        kept = [a for a in "TCZYX" if a in order]
        return full[idx].transpose([kept.index(a) for a in order])

    def ingest(self, **options: Any) -> pa.StructScalar | Dataset:
        """Ingest into a record (``out=None``) or a dataset; see :func:`omeframe.ingest_source`."""
        return ingest_source(self, **options)


class ImageStacks(list[ImageStack]):
    """The list a loader returns, with a few helpers over its stacks."""

    @property
    def sources(self) -> list[LazySource]:
        return [s.source for s in self]

    @property
    def shapes(self) -> list[tuple[int, int, int, int, int]]:
        return [s.shape for s in self]

    @property
    def dtypes(self) -> list[np.dtype[Any]]:
        return [s.dtype for s in self]

    def scan(self, i: int = 0, **options: Any) -> OMEArrow:
        """Stack ``i`` as a lazy :class:`~omeframe.OMEArrow`."""
        return self[i].scan(**options)

    def write_dataset(self, path: str | os.PathLike[str], **options: Any) -> Dataset:
        """Stream every stack into one chunked dataset (ids from the stacks' headers)."""
        ids, seen = [], set()
        for k, s in enumerate(self):
            iid = s.header().image_id
            iid = iid if iid not in seen else f"{iid}-{k}"
            seen.add(iid)
            ids.append(iid)
        options.setdefault("image_ids", ids)
        return write_dataset(list(self), path, **options)


def _paths(source: Any, what: str) -> list[Any]:
    if isinstance(source, (str, os.PathLike)):
        return [source]
    if isinstance(source, Iterable):
        return list(source)
    raise TypeError(f"{what} expects a path or a sequence of paths, got {type(source).__name__}")


def _split(
    make: Callable[[int | None], LazySource], shape: tuple[int, ...], axes: str, *, origin: str, kind: str
) -> list[ImageStack]:
    if "S" not in axes:
        return [ImageStack(make(None), origin=origin, axes=axes, kind=kind)]
    n = int(shape[axes.index("S")])
    return [ImageStack(make(s), origin=origin, axes=axes, kind=kind, sample=s) for s in range(n)]


def _sid(base: str, s: int | None) -> str:
    return base if s is None else f"{base}_s{s}"


def _with_recipes(
    stacks: list[ImageStack], kind: str, item: str, axes: str, options: dict[str, Any]
) -> list[ImageStack]:
    """Make each stack pickle as ``(loader kind, file or URL, axes, options, position)``."""
    opts = tuple(sorted(options.items()))
    for k, st in enumerate(stacks):
        set_recipe(st, _reload_stack, (kind, item, axes, opts, k))
    return stacks


def _reload_stack(kind: str, item: str, axes: str, options: tuple[tuple[str, Any], ...], k: int) -> ImageStack:
    """Stack ``k`` of ``LOADERS[kind](item, axes, **options)`` (the unpickling side of a stack)."""
    return list(LOADERS[kind](item, axes, **dict(options)))[k]


# ------------------------------------------------------------------ arrays
def load_arrays(source: Any, axes: str) -> ImageStacks:
    """Image stacks over in-memory arrays (views: nothing is copied).

    Parameters
    ----------
    source
        A numpy array or a sequence of array-likes (numpy, memmap, zarr,
        dask, h5py: anything with ``shape``, ``dtype`` and slicing).
    axes
        Axes of every array, a subset of ``"STCZYX"``; ``S`` splits an array
        into one stack per sample.
    """
    arrays = [source] if hasattr(source, "shape") and hasattr(source, "dtype") else list(source)
    out = ImageStacks()
    for i, arr in enumerate(arrays):
        if not (hasattr(arr, "shape") and hasattr(arr, "dtype")):
            arr = np.asarray(arr)
        order = check_axes(axes, tuple(arr.shape), what=f"array {i}")

        def make(s: int | None, arr: Any = arr, i: int = i, order: str = order) -> LazySource:
            sizes = dict(zip(order, arr.shape, strict=True))
            h = ImageHeader.basic(_sid(f"array{i}", s), f"array {i}", sizes.get("C", 1))
            return AxesArraySource(arr, order, h, sample=s)

        out += _split(make, tuple(arr.shape), order, origin=f"array[{i}]", kind="array")
    return out


# ------------------------------------------------------------------ TIFF
def _file_axes(axes: str) -> str:
    axes = axes.upper()
    return axes.replace("S", "C") if "S" in axes and "C" not in axes else axes


def _open_tiff(
    path: Any, axes: str, series: int, level: int, storage_options: Mapping[str, Any] | None = None
) -> list[ImageStack]:
    stacks = _open_tiff_stacks(path, axes, series, level, storage_options)
    opts: dict[str, Any] = {"series": series, "level": level}
    if storage_options:
        opts["storage_options"] = dict(storage_options)
    return _with_recipes(stacks, "tiff", os.fspath(path), axes, opts)


def _open_tiff_stacks(
    path: Any, axes: str, series: int, level: int, storage_options: Mapping[str, Any] | None
) -> list[ImageStack]:
    import tifffile
    import zarr

    remote = parse_location(path)
    check_storage_options(storage_options, path)
    handle: Any
    if remote is not None:
        # ranged GETs: the IFDs through a read-ahead block, tiles and strips as asked
        handle = open_remote_file(remote.url, storage_options)  # FileNotFoundError names the URL
        p = Path(remote.url.split("?", 1)[0].rsplit("/", 1)[-1])
        label = remote.url
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no such TIFF file: {str(p)!r}")
        handle, label = str(p), str(p)
    try:
        tf = tifffile.TiffFile(handle, name=p.name) if remote is not None else tifffile.TiffFile(handle)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        if remote is not None and isinstance(exc, OSError) and not isinstance(exc, tifffile.TiffFileError):
            raise
        reraise_access_error(exc)
        raise CorruptFileError(f"{label!r} is not a readable TIFF file: {exc}") from exc
    try:
        if not 0 <= series < len(tf.series):
            raise SchemaError(f"{label!r} has {len(tf.series)} series; series {series} does not exist")
        s = tf.series[series]
        if not 0 <= level < len(s.levels):
            raise SchemaError(f"{label!r} series {series} has {len(s.levels)} levels; level {level} does not exist")
        lv = s.levels[level]
        shape = tuple(int(v) for v in lv.shape)
        order = check_axes(axes, shape, what=f"TIFF {label!r} (tifffile axes {lv.axes!r})")
        sizes = dict(zip(order, shape, strict=True))
        expected = tuple(sizes.get(a, 1) for a in "TCZYX")
        if "S" not in order and _file_axes(lv.axes) == order:
            # The file agrees with the caller: use the regular TIFF source (pyramids, metadata).
            try:
                src = open_source(remote.url if remote is not None else p, series=series, level=level,
                                  storage_options=storage_options)
            except Exception:  # noqa: BLE001 - fall back to the raw view below
                src = None
            if src is not None and tuple(src.shape) == expected:
                tf.close()
                return [ImageStack(src, origin=label, axes=order, kind="tiff")]
        phys = _tiff_physical(tf)
        arr = zarr.open(lv.aszarr(), mode="r")
        if isinstance(arr, zarr.Group):
            arr = arr[str(level)] if str(level) in arr else arr[next(iter(arr.array_keys()))]
    except BaseException:
        tf.close()
        raise

    def make(si: int | None) -> LazySource:
        h = ImageHeader.basic(_sid(p.stem, si), p.name, sizes.get("C", 1), physical=phys)
        return AxesArraySource(arr, order, h, f"TIFF {label!r} series {series} level {level}", sample=si, keep=tf)

    return _split(make, shape, order, origin=label, kind="tiff")


def load_tiffs(
    source: Any, axes: str, *, series: int = 0, level: int = 0, storage_options: Mapping[str, Any] | None = None
) -> ImageStacks:
    """Image stacks over TIFF files, read tile by tile / page by page on demand.

    ``axes`` describes the stored array of each file (the shape tifffile
    reports for ``series``), overriding the file's own axis names, so pages
    can be declared as samples (``"SYX"``), channels (``"CYX"``), Z, etc.
    When it agrees with the file's axes, the regular TIFF source is used
    (pyramid levels and OME metadata kept). Only headers are read here.

    Paths may be URLs (``s3://bucket/a.tif``; credentials and endpoint in
    ``storage_options``), read by ranged requests.

    Example
    -------
    >>> import numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "pages.tif")
    >>> tifffile.imwrite(path, np.zeros((3, 16, 16), np.uint8), photometric="minisblack")
    >>> [s.shape for s in load_tiffs(path, "SYX")]
    [(1, 1, 1, 16, 16), (1, 1, 1, 16, 16), (1, 1, 1, 16, 16)]
    """
    out = ImageStacks()
    for path in _paths(source, "load_tiffs"):
        out += _open_tiff(path, axes, series, level, storage_options)
    return out


def load_iter_tiff(
    source: Any, axes: str, *, series: int = 0, level: int = 0, storage_options: Mapping[str, Any] | None = None
) -> Iterator[ImageStack]:
    """Like :func:`load_tiffs`, but a generator: each file is opened only when iterated to.

    Errors for a file (missing, unreadable, axes that do not fit) are raised
    when the iteration reaches it.
    """
    for path in _paths(source, "load_iter_tiff"):
        yield from _open_tiff(path, axes, series, level, storage_options)


# ------------------------------------------------------------------ zarr
def parse_zarr_uri(uri: str) -> tuple[Path, str]:
    """Split ``file://path/to/store.zarr/group/array`` into ``(store, "group/array")``."""
    if not uri.startswith("file://"):
        raise ValueError(f"zarr URI {uri!r} must start with 'file://'")
    rest = unquote(uri[len("file://") :])
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    parts = Path(rest).parts
    for k, part in enumerate(parts):
        if part.lower().endswith(ZARR_SUFFIX):
            return Path(*parts[: k + 1]), "/".join(parts[k + 1 :])
    raise ValueError(
        f"zarr URI {uri!r} names no store: one path component must end with '.zarr' "
        "(file://path/to/store.zarr/group/array)"
    )


def _ome_meta(node: Any) -> list[dict[str, Any]] | None:
    attrs = dict(node.attrs)
    if isinstance(attrs.get("ome"), dict) and "multiscales" in attrs["ome"]:
        return attrs["ome"]["multiscales"]
    return attrs.get("multiscales")


def _split_remote_zarr(url: RemoteURL) -> tuple[str, str]:
    """``s3://b/p/store.zarr/group/array`` -> ``("s3://b/p/store.zarr", "group/array")`` (whole URL if no ``.zarr``)."""
    scheme, rest = url.url.split("://", 1)
    parts = rest.split("/")
    for k, part in enumerate(parts):
        if k and part.lower().endswith(ZARR_SUFFIX):
            return f"{scheme}://" + "/".join(parts[: k + 1]), "/".join(parts[k + 1 :])
    return url.url, ""


def _open_zarr_item(
    item: Any, axes: str, level: int, storage_options: Mapping[str, Any] | None = None
) -> list[ImageStack]:
    stacks = _open_zarr_stacks(item, axes, level, storage_options)
    if not isinstance(item, str):
        return stacks  # a zarr object given directly: nothing to reopen from
    opts: dict[str, Any] = {"level": level}
    if storage_options:
        opts["storage_options"] = dict(storage_options)
    return _with_recipes(stacks, "zarr", item, axes, opts)


def _open_zarr_stacks(
    item: Any, axes: str, level: int, storage_options: Mapping[str, Any] | None
) -> list[ImageStack]:
    import zarr

    remote = parse_location(item) if isinstance(item, str) else None
    check_storage_options(storage_options, item)
    if remote is not None:
        store_url, inner = _split_remote_zarr(remote)
        root = open_remote_zarr(store_url, storage_options)  # FileNotFoundError names the URL
        node: Any = root
        if inner:
            try:
                node = root[inner] if isinstance(root, zarr.Group) else None
            except KeyError:
                node = None
            if node is None:
                raise FileNotFoundError(f"zarr URL {item!r}: store {store_url!r} has no node {inner!r}")
        label = remote.url
        stem = store_url.rsplit("/", 1)[-1]
        stem = stem[: -len(ZARR_SUFFIX)] if stem.lower().endswith(ZARR_SUFFIX) else stem
        base_id = f"{stem}/{inner}" if inner else stem
        disk: Path | None = None
    elif isinstance(item, str) and item.startswith("file://"):
        store, inner = parse_zarr_uri(item)
        if not store.exists():
            raise FileNotFoundError(f"zarr URI {item!r}: no such store {str(store)!r}")
        root = zarr.open(str(store), mode="r")
        node = root
        if inner:
            if not isinstance(root, zarr.Group):
                raise FileNotFoundError(
                    f"zarr URI {item!r}: store {str(store)!r} is an array, not a group; it has no node {inner!r}"
                )
            try:
                node = root[inner]
            except KeyError:
                raise FileNotFoundError(f"zarr URI {item!r}: store {str(store)!r} has no node {inner!r}") from None
        disk, label = store / inner if inner else store, item
        base_id = f"{store.stem}/{inner}" if inner else store.stem
    else:
        disk = Path(item)
        if not disk.exists():
            raise FileNotFoundError(f"no such zarr store: {str(disk)!r}")
        if not is_zarr_dir(disk):
            raise SchemaError(
                f"{str(disk)!r} is not a zarr store (no zarr.json, .zgroup or .zarray); load TIFF files with "
                "omeframe.load_tiffs and other images with omeframe.scan"
            )
        node = zarr.open(str(disk), mode="r")
        label, base_id = str(disk), disk.stem
    if isinstance(node, zarr.Group):
        ms = _ome_meta(node)
        if not ms:
            raise SchemaError(
                f"{label!r} is a zarr group without OME-Zarr 'multiscales' metadata; point to one of "
                f"its arrays {sorted(node.array_keys())[:5]} with a URI such as "
                + (f"'file://{disk}/<array>'" if disk is not None else f"'{label}/<array>'")
            )
        datasets = ms[0].get("datasets") or []
        n = len(datasets)
        lv = level + n if level < 0 else level
        if not 0 <= lv < n:
            raise SchemaError(f"OME-Zarr {label!r} has {n} resolution levels; level {level} does not exist")
        arr = node[datasets[lv]["path"]]
        if not isinstance(arr, zarr.Array):
            raise SchemaError(
                f"OME-Zarr {label!r}: level {lv} path {datasets[lv]['path']!r} is a group, not an array"
            )
        meta_axes = "".join(
            (a["name"] if isinstance(a, dict) else str(a)).upper() for a in (ms[0].get("axes") or [])
        ) or "TCZYX"[-arr.ndim :]
        shape = tuple(int(v) for v in arr.shape)
        order = check_axes(axes, shape, what=f"OME-Zarr {label!r} level {lv} (metadata axes {meta_axes!r})")
        if "S" not in order and order == meta_axes:
            src = (
                open_source(disk, level=lv) if disk is not None
                else open_ome_zarr_source(node, level=lv, image_id=base_id, name=label)
            )
            return [ImageStack(src, origin=label, axes=order, kind="zarr")]
        # Caller's axes differ from the metadata: view the level array with them.
        array, desc = arr, f"OME-Zarr {label!r} level {lv} (chunks {arr.chunks})"
    else:
        shape = tuple(int(v) for v in node.shape)
        order = check_axes(axes, shape, what=f"zarr array {label!r}")
        array, desc = node, f"zarr array {label!r} (chunks {node.chunks})"
    sizes = dict(zip(order, shape, strict=True))

    def make(s: int | None) -> LazySource:
        h = ImageHeader.basic(_sid(base_id, s), base_id, sizes.get("C", 1))
        return AxesArraySource(array, order, h, desc, sample=s)

    return _split(make, shape, order, origin=label, kind="zarr")


def load_zarrs(
    source: Any, axes: str, *, level: int = 0, storage_options: Mapping[str, Any] | None = None
) -> ImageStacks:
    """Image stacks over zarr arrays, read chunk by chunk.

    Parameters
    ----------
    source
        Store paths (``.../store.zarr``: a zarr array, or an OME-Zarr image
        group) and/or URIs ``file://path/to/store.zarr/group/array`` naming
        one array (or an OME-Zarr image group) inside a store.
    axes
        Axes of the array, a subset of ``"STCZYX"``.
    level
        OME-Zarr resolution level (0 = full resolution; negative counts from
        the smallest, ``-1`` = lowest). Plain arrays have one level and
        ignore it.
    storage_options
        Options of the filesystem of remote stores: ``source`` may hold URLs
        such as ``s3://bucket/cells.ome.zarr`` or
        ``s3://bucket/store.zarr/group/array``, read through zarr's
        ``FsspecStore``.
    """
    out = ImageStacks()
    for item in _paths(source, "load_zarrs"):
        out += _open_zarr_item(
            os.fspath(item) if isinstance(item, os.PathLike) else item, axes, level, storage_options
        )
    return out


# ------------------------------------------------------------------ CZI
_CZI_AXES = ("SCYX", "SCZYX", "SCTYX", "SCTZYX")


def load_czis(source: Any, axes: str, *, tile: int = 1024) -> ImageStacks:
    """Image stacks over CZI files, one per scene (needs ``pip install 'omeframe[czi]'``).

    ``axes`` must be ``"SCYX"``, ``"SCZYX"``, ``"SCTYX"`` (or ``"SCTZYX"``):
    ``S`` (scenes) and ``C`` are always present, possibly of size 1. A file
    with more than one Z plane (or time point) needs ``Z`` (``T``) in
    ``axes``; otherwise a ``DimOrderError`` says which axis to add. Planes are
    read tile by tile (``tile`` pixels) when a plan touches them.
    """
    order = axes.strip().upper() if isinstance(axes, str) else axes
    if order not in _CZI_AXES:
        raise DimOrderError(
            f"load_czis axes must be one of {list(_CZI_AXES)} (S = scenes and C are required), got {axes!r}"
        )
    import_pylibczirw()
    out = ImageStacks()
    for path in _paths(source, "load_czis"):
        for scene in czi_scenes(path):
            src = open_czi_source(path, scene=scene, tile=tile)
            st, _, sz, _, _ = src.shape
            for letter, size in (("Z", sz), ("T", st)):
                if size > 1 and letter not in order:
                    both = (letter == "Z" and "T" in order) or (letter == "T" and "Z" in order)
                    hint = "SCTZYX" if both else f"SC{letter}YX"
                    raise DimOrderError(
                        f"CZI {str(path)!r} scene {scene} has {letter}={size} but axes {order!r} have no "
                        f"{letter}; use axes={hint!r}"
                    )
            out.append(ImageStack(src, origin=str(path), axes=order, kind="czi", sample=scene))
    return out


# ------------------------------------------------------------------ custom
def load_custom_file(
    source: Any,
    axes: str,
    *,
    read_func: Callable[..., Any],
    read_kwargs: Mapping[str, Any] | None = None,
) -> ImageStacks:
    """Image stacks over files of any type, read by ``read_func(path, **read_kwargs)``.

    ``read_func`` returns an array-like with axes ``axes``. It runs at most
    once per file: on first use of the stack (shape, header or pixels), or at
    load time when ``axes`` has ``S`` (the number of samples must be known).
    Return a memmap or another lazily indexed array to read plane by plane.
    """
    if not callable(read_func):
        raise TypeError(f"read_func must be callable, got {type(read_func).__name__}")
    order = check_axes(axes)
    out = ImageStacks()
    for path in _paths(source, "load_custom_file"):
        lazy = LazyArray(path, read_func, read_kwargs)
        if "S" in order:
            arr = lazy.get()
            shape = tuple(int(v) for v in arr.shape)
            check_axes(order, shape, what=f"the array read_func {lazy.func_name} returned for {str(lazy.path)!r}")

            def make(s: int | None, lazy: LazyArray = lazy) -> LazySource:
                return CustomSource(lazy, axes=order, sample=s)

            out += _split(make, shape, order, origin=str(lazy.path), kind="custom")
        else:
            out.append(ImageStack(CustomSource(lazy, axes=order), origin=str(lazy.path), axes=order, kind="custom"))
    return out


#: The loaders by kind, for callers that pick one from configuration.
LOADERS: dict[str, Callable[..., Any]] = {
    "array": load_arrays,
    "tiff": load_tiffs,
    "iter_tiff": load_iter_tiff,
    "zarr": load_zarrs,
    "czi": load_czis,
    "custom": load_custom_file,
}
