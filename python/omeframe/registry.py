"""The one table of image formats: how to recognise a path and open it as a :class:`LazySource`.

Every "open anything" entry point (``omeframe.scan``, ``OMEArrow``, the
loaders, the CLI, the writers' input resolution) goes through
:func:`open_source`, which asks :func:`detect` which :class:`FormatEntry`
claims a path. Unknown suffixes, unreadable paths and unsupported objects
raise :class:`~omeframe.errors.UnsupportedFormatError`, whose message lists
the formats known here and the extra to install where one is needed.

Adding a format
---------------
1. Write the reader in its own folder, ``formats/<name>/``, with a
   ``source.py`` whose :class:`~omeframe.engine.source.LazySource` subclass
   reads the pixels lazily (and the format's suffix constants in the
   folder's ``__init__.py``).
2. Add one :class:`FormatEntry` to :data:`FORMATS` below: its name, suffixes
   (or a ``matches`` test for directories), the function that opens it
   with :class:`OpenOptions`, and the extra to install when its reader
   needs an optional package.

Nothing else changes: ``scan``, the loaders, the CLI and the writers pick it up.

Example
-------
>>> import os, tempfile, numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "cells.npy")
>>> np.save(path, np.zeros((2, 8, 8), np.uint16))
>>> detect(path).name
'numpy'
>>> open_source(path, dim_order="CYX").shape
(1, 2, 1, 8, 8)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.engine.derived import known_source, set_resolver
from omeframe.engine.lazy import LazyImage
from omeframe.engine.reopen import file_stamp, recipe_of, set_recipe
from omeframe.engine.source import LazySource
from omeframe.formats.array import NPY_SUFFIXES
from omeframe.formats.array.npy import infer_array_dims, load_npy
from omeframe.formats.array.npy_remote import open_remote_npy
from omeframe.formats.array.source import ArraySource, RecordSource
from omeframe.formats.czi import CZI_EXTRA, CZI_SUFFIXES
from omeframe.formats.czi.source import open_czi_source
from omeframe.formats.dataset.manifest import MANIFEST_NAME
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.formats.dataset.source import DatasetSource
from omeframe.formats.ome_arrow_dataset.source import is_ome_arrow_dataset, open_ome_arrow_dataset
from omeframe.formats.record.arrays import _check_array
from omeframe.formats.record.files import TABLE_SUFFIXES
from omeframe.formats.record.source import RecordTableSource
from omeframe.formats.tiff import TIFF_SUFFIXES
from omeframe.formats.tiff.source import open_tiff_source
from omeframe.formats.zarr import ZARR_SUFFIX, is_zarr_dir
from omeframe.formats.zarr.source import open_ome_zarr_source, open_remote_zarr
from omeframe.model.arrow import DEFAULT_COLUMN_NAME
from omeframe.model.dims import default_dim_order, to_tczyx
from omeframe.model.errors import FileChangedError, UnsupportedFormatError
from omeframe.model.header import ImageHeader, default_channels
from omeframe.storage.url import RemoteURL, check_storage_options, local_path, parse_location

__all__ = [
    "FORMATS",
    "FormatEntry",
    "OpenOptions",
    "detect",
    "find",
    "by_suffix",
    "open_source",
    "open_path",
    "array_source",
    "formats_help",
    "open_lazy_plane_source",
    "UnsupportedFormatError",
]


@dataclass(frozen=True, kw_only=True)
class OpenOptions:
    """How to open an image: the options of :func:`open_source` (each format reads the ones it knows).

    Attributes
    ----------
    column_name, row_index, format
        Record tables: the OME-Arrow column (``None``: find it), the row, and
        ``"parquet"``/``"vortex"`` when the suffix misleads.
    image_id, level
        Datasets (and ome-arrow datasets: ``image_id``): which image and
        pyramid level; OME-Zarr and TIFF: ``level``.
    dim_order
        Axes of numpy arrays and zarr arrays (inferred when ``None``).
    series
        TIFF series / CZI scene.
    storage_options
        For URLs (``s3://``, ``gs://``, ``https://`` ...): options of the
        fsspec filesystem (credentials, ``endpoint_url`` ...).
    """

    column_name: str | None = DEFAULT_COLUMN_NAME
    row_index: int = 0
    image_id: str | None = None
    level: int = 0
    dim_order: str | None = None
    series: int = 0
    format: str | None = None
    storage_options: dict[str, Any] | None = None

    def check(self, accepted: frozenset[str], what: str) -> None:
        """Refuse options set away from their default that ``what`` does not read.

        ``accepted`` names the fields its opener uses (``storage_options``
        are checked where URLs are told from paths). An option that would do
        nothing is an error, not a silent no-op: ``image_id=`` on a record
        table would otherwise return row 0.

        Raises
        ------
        ValueError
            Naming the options, what was opened and the options it takes.
        """
        unused = [
            f.name for f in fields(self)
            if f.name != "storage_options" and f.name not in accepted
            and getattr(self, f.name) != getattr(_DEFAULT_OPTIONS, f.name)
        ]
        if unused:
            takes = ", ".join(f"{n}=" for n in sorted(accepted)) or "none of these options"
            named = ", ".join(f"{n}=" for n in unused)
            raise ValueError(
                f"{named} {'does' if len(unused) == 1 else 'do'} not apply to {what}, which takes {takes}; "
                f"drop {named}"
            )


_DEFAULT_OPTIONS = OpenOptions()


@dataclass(frozen=True, kw_only=True)
class FormatEntry:
    """One image format the registry knows.

    Attributes
    ----------
    name
        Short name (``"tiff"``, ``"ome-zarr"`` ...), shown in error messages.
    description
        What the format is, for error messages and ``omeframe info``.
    suffixes
        File (or directory) suffixes, lower case with the dot.
    open
        ``(path, options) -> LazySource``.
    matches
        ``path -> bool`` for formats recognised by content (directories with
        a marker file); ``None``: by suffix alone.
    directory
        True when the format is a directory rather than a file.
    extra
        The ``omeframe[<extra>]`` extra its reader needs, or ``None``.
    options
        The :class:`OpenOptions` fields its opener reads; others set to a
        non-default value are refused (:meth:`OpenOptions.check`).
    """

    name: str
    description: str
    suffixes: tuple[str, ...]
    open: Callable[[Path, OpenOptions], LazySource]
    matches: Callable[[Path], bool] | None = None
    directory: bool = False
    extra: str | None = None
    options: frozenset[str] = frozenset()

    def check(self, where: str, options: OpenOptions) -> None:
        """Refuse ``options`` this format does not read (``where`` names the path or URL)."""
        options.check(self.options, f"{where!r}, {_article(self.description)} {self.description}")

    def claims(self, path: Path) -> bool:
        """True when ``path`` (which exists) is of this format."""
        if path.is_dir() != self.directory:
            return False
        if self.matches is not None:
            return self.matches(path)
        return path.suffix.lower() in self.suffixes

    def label(self) -> str:
        """``name (suffixes)`` plus the install hint when an extra is needed."""
        what = ", ".join(self.suffixes) if self.suffixes else ("a directory" if self.directory else "")
        hint = f"; needs pip install 'omeframe[{self.extra}]'" if self.extra else ""
        return f"{self.name} ({what}{hint})"


def _article(text: str) -> str:
    return "an" if text[:1].lower() in "aeio" else "a"


def _is_dataset(p: Path) -> bool:
    return (p / MANIFEST_NAME).is_file()


def _is_zarr(p: Path) -> bool:
    return is_zarr_dir(p) and not _is_dataset(p)


def _is_table_file(p: Path) -> bool:
    if p.suffix.lower() in TABLE_SUFFIXES:
        return True
    with open(p, "rb") as fh:  # record tables under another suffix: the magic bytes
        return fh.read(4) in (b"PAR1", b"VTXF")


def _open_czi(p: Path, o: OpenOptions) -> LazySource:
    return open_czi_source(p, scene=o.series)  # imports the optional pylibCZIrw on first use


def _open_npy(p: Path, o: OpenOptions) -> LazySource:
    arr = load_npy(p)
    return array_source(arr, o.dim_order or infer_array_dims(arr.shape))


#: The formats, in detection order (the first entry that claims a path opens it).
FORMATS: tuple[FormatEntry, ...] = (
    FormatEntry(
        name="dataset", description=f"omeframe chunked dataset (directory with {MANIFEST_NAME})",
        suffixes=(), directory=True, matches=_is_dataset, options=frozenset({"image_id", "level"}),
        open=lambda p, o: DatasetSource(DatasetReader(p), o.image_id, o.level),
    ),
    FormatEntry(
        name="ome-zarr", description="OME-Zarr 0.4/0.5 image (zarr v2 or v3 store)",
        suffixes=(ZARR_SUFFIX,), directory=True, matches=_is_zarr, options=frozenset({"level", "dim_order"}),
        open=lambda p, o: open_ome_zarr_source(p, level=o.level, dim_order=o.dim_order),
    ),
    FormatEntry(
        name="ome-arrow-dataset", description="ome-arrow typed-chunk dataset directory",
        suffixes=(), directory=True, matches=is_ome_arrow_dataset, options=frozenset({"image_id"}),
        open=lambda p, o: open_ome_arrow_dataset(p, image_id=o.image_id),
    ),
    FormatEntry(
        name="tiff", description="TIFF / OME-TIFF file",
        suffixes=TIFF_SUFFIXES, options=frozenset({"series", "level"}),
        open=lambda p, o: open_tiff_source(p, series=o.series, level=o.level),
    ),
    FormatEntry(
        name="czi", description="Zeiss CZI file", suffixes=CZI_SUFFIXES, extra=CZI_EXTRA, open=_open_czi,
        options=frozenset({"series"}),
    ),
    FormatEntry(
        name="numpy", description="numpy array file (memory-mapped; axes from dim_order or the shape)",
        suffixes=NPY_SUFFIXES, open=_open_npy, options=frozenset({"dim_order"}),
    ),
    FormatEntry(
        name="record-table", description="OME-Arrow record table (Parquet or Vortex)",
        suffixes=TABLE_SUFFIXES, matches=_is_table_file, options=frozenset({"column_name", "row_index", "format"}),
        open=lambda p, o: RecordTableSource(p, column_name=o.column_name, row_index=o.row_index, format=o.format),
    ),
)


_RECORD_TABLE = next(e for e in FORMATS if e.name == "record-table")
_BY_NAME = {e.name: e for e in FORMATS}


def formats_help() -> str:
    """One line per known format: name, suffixes and the extra it needs."""
    return "; ".join(e.label() for e in FORMATS)


def by_suffix(path: str | os.PathLike[str]) -> FormatEntry | None:
    """The file format that claims ``path`` by its suffix alone (no file system access).

    For directory walks that already know a path is a file; ``None`` when no
    file format has that suffix.
    """
    suffix = Path(path).suffix.lower()
    for entry in FORMATS:
        if not entry.directory and suffix in entry.suffixes:
            return entry
    return None


def find(path: str | os.PathLike[str]) -> FormatEntry | None:
    """The entry that claims ``path``, or ``None`` (``path`` must exist)."""
    p = Path(path)
    for entry in FORMATS:
        if entry.claims(p):
            return entry
    return None


def detect(path: str | os.PathLike[str]) -> FormatEntry:
    """The format of the file or directory at ``path``.

    Raises
    ------
    FileNotFoundError
        When nothing exists at ``path``.
    UnsupportedFormatError
        When no known format claims it (the message lists the known ones).

    Example
    -------
    >>> detect("slides/").name     # doctest: +SKIP
    'dataset'
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"nothing to scan at {str(p)!r}: no such file or directory")
    entry = find(p)
    if entry is None:
        if p.is_dir():
            raise UnsupportedFormatError(
                f"{str(p)!r} is a directory but neither an omeframe dataset ({MANIFEST_NAME}), an "
                f"OME-Zarr store, nor an ome-arrow dataset; known formats: {formats_help()}"
            )
        raise UnsupportedFormatError(
            f"{str(p)!r} (suffix {p.suffix.lower() or '(none)'!r}) is of no format omeframe reads; "
            f"known formats: {formats_help()}. A record table under another suffix: pass "
            "format='parquet' or format='vortex'"
        )
    return entry


def open_url(url: RemoteURL, options: OpenOptions = OpenOptions()) -> LazySource:
    """Open the image at a remote ``url``: by suffix (record tables, TIFF, ``.npy``, ``.zarr``),
    else as a dataset (a ``manifest.json`` / ``_manifests/`` below it), else as OME-Zarr.

    Raises
    ------
    FileNotFoundError
        When nothing at ``url`` is a dataset or a zarr store.
    """
    so = options.storage_options
    name = url.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if options.format is not None or suffix in TABLE_SUFFIXES:
        _RECORD_TABLE.check(url.url, options)
        return RecordTableSource(
            url.url, column_name=options.column_name, row_index=options.row_index, format=options.format,
            storage_options=so,
        )
    if suffix in TIFF_SUFFIXES:
        _BY_NAME["tiff"].check(url.url, options)
        return open_tiff_source(url.url, series=options.series, level=options.level, storage_options=so)
    if suffix in NPY_SUFFIXES:
        _BY_NAME["numpy"].check(url.url, options)
        return open_remote_npy(url.url, so, options.dim_order)
    if suffix != ZARR_SUFFIX:
        try:
            reader = DatasetReader(url.url, storage_options=so)
        except FileNotFoundError:
            pass
        else:
            _BY_NAME["dataset"].check(url.url, options)
            return DatasetSource(reader, options.image_id, options.level)
    _BY_NAME["ome-zarr"].check(url.url, options)
    group = open_remote_zarr(url.url, so)
    stem = name[: -len(ZARR_SUFFIX)] if name.endswith(ZARR_SUFFIX) else name
    return open_ome_zarr_source(group, level=options.level, dim_order=options.dim_order, image_id=stem, name=name)


def open_path(path: str | os.PathLike[str], options: OpenOptions = OpenOptions()) -> LazySource:
    """Open the image at ``path`` (a local path or a URL) with the format :func:`detect` finds.

    The source pickles as ``path`` and ``options`` (see ``engine/reopen.py``):
    another process reopens it from there (a URL with its ``storage_options``).
    """
    loc = parse_location(path)
    if loc is not None:
        src = open_url(loc, options)
        if recipe_of(src) is None:
            set_recipe(src, _reopen_path, (os.fspath(path), options, None))
        return src
    p = local_path(path)
    entry = _RECORD_TABLE if options.format is not None and p.is_file() else detect(p)  # format=: a table
    entry.check(os.fspath(path), options)
    src = entry.open(p, options)
    if recipe_of(src) is None:
        set_recipe(src, _reopen_path, (os.fspath(path), options, file_stamp(p)))
    return src


def _reopen_path(path: str, options: OpenOptions, stamp: tuple[int, int] | None) -> LazySource:
    """:func:`open_path` again, in another process: the file must still be the one first opened.

    ``stamp`` is the local file's size and mtime when it was first opened
    (``None`` for URLs). A file replaced or rewritten since raises
    :class:`~omeframe.model.errors.FileChangedError`: the plan that carried
    the source was made from the old file's header (shape, type, chunks), and
    its tasks must not mix in pixels of another file. Checked after opening,
    so the version opened is the version checked.
    """
    src = open_path(path, options)
    if stamp is not None and file_stamp(path) != stamp:
        raise FileChangedError(
            errno.ESTALE,
            "the image file was replaced or rewritten since the plan that reads it was made (its size or "
            "modification time differs); make the plan again from the file as it is now",
            path,
        )
    return src


def array_source(arr: np.ndarray, dim_order: str | None = None) -> ArraySource:
    """A numpy array (axes ``dim_order``, inferred from the rank when ``None``) as a source.

    The header is the default one of unnamed arrays (id ``"unnamed"``, physical
    sizes unknown); big-endian arrays are converted to native byte order.
    """
    arr = _check_array(arr)
    view = to_tczyx(arr, dim_order or default_dim_order(arr.ndim))
    if view.dtype.byteorder == ">":
        view = view.astype(view.dtype.newbyteorder("="))
    header = ImageHeader(
        image_id="unnamed", name="unknown", image_type=None, acquisition_datetime=None,
        channels=default_channels(None, view.shape[1]),
    )
    return ArraySource(view, header)


def open_source(
    obj: object,
    *,
    column_name: str | None = DEFAULT_COLUMN_NAME,
    row_index: int = 0,
    image_id: str | None = None,
    level: int = 0,
    dim_order: str | None = None,
    series: int = 0,
    format: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> LazySource:
    """Open ``obj`` lazily.

    Paths may be URLs (``s3://``, ``gs://``, ``az://``, ``https://``,
    ``file://``, ``memory://``); ``storage_options`` configure their fsspec
    filesystem.

    ``obj`` may be a path of any format in :data:`FORMATS` (record table:
    ``column_name``, ``row_index``, ``format``; dataset: ``image_id``,
    ``level``; OME-Zarr: ``level``, ``dim_order``; TIFF: ``series``,
    ``level``; CZI: ``series``), a :class:`DatasetReader` / ``Dataset``, a
    numpy array (``dim_order``), a zarr array or group, an OME-Arrow record,
    a source, a lazy plan or an :class:`~omeframe.OMEArrow`.

    Raises
    ------
    FileNotFoundError
        For a path where nothing exists.
    UnsupportedFormatError
        For paths of no known format and objects of unsupported types.

    Example
    -------
    >>> src = open_source("slides/", image_id="slide-1", level=1)   # doctest: +SKIP
    """
    check_storage_options(storage_options, obj)
    opts = OpenOptions(
        column_name=column_name, row_index=row_index, image_id=image_id, level=level,
        dim_order=dim_order, series=series, format=format,
        storage_options=dict(storage_options) if storage_options else None,
    )
    what = f"{_article(type(obj).__name__)} {type(obj).__name__}"
    src = known_source(obj)
    if src is not None:
        opts.check(frozenset(), f"{what} (an image opened already)")
        return src
    if isinstance(obj, DatasetReader):
        opts.check(frozenset({"image_id", "level"}), what)
        return DatasetSource(obj, image_id, level)
    if isinstance(obj, np.ndarray):
        opts.check(frozenset({"dim_order"}), "a numpy array")
        return array_source(obj, dim_order)
    if isinstance(obj, (pa.StructScalar, pa.StructArray, pa.ChunkedArray, dict)):
        opts.check(frozenset(), f"{what} (an OME-Arrow record)")
        return RecordSource(obj)
    if type(obj).__module__.partition(".")[0] == "zarr":
        import zarr  # heavy: imported only when a zarr object is passed

        if isinstance(obj, (zarr.Array, zarr.Group)):
            opts.check(frozenset({"level", "dim_order"}), f"a zarr {type(obj).__name__}")
            return open_ome_zarr_source(obj, level=level, dim_order=dim_order)
    if isinstance(obj, (str, os.PathLike)):
        return open_path(obj, opts)
    raise UnsupportedFormatError(
        f"cannot scan a {type(obj).__name__}: it is no image omeframe can open; "
        f"pass a path ({formats_help()}), a Dataset, "
        "a numpy array, a zarr array or group, an OME-Arrow record, an OMEArrow or a lazy plan"
    )


def open_lazy_plane_source(
    source: str | os.PathLike[str],
) -> tuple[dict[str, Any], Callable[[int, int, int], np.ndarray]] | None:
    """``(pixels_meta, plane_loader)`` for a TIFF or OME-Zarr path, else ``None``.

    ``plane_loader(t, z, c)`` returns the ``(Y, X)`` plane in the native dtype,
    reading only that plane's tiles. The file stays open while the loader is
    referenced and is closed when it is garbage-collected.

    Raises
    ------
    FileNotFoundError
        For a TIFF path where no file exists.

    Example
    -------
    >>> meta, load = open_lazy_plane_source("cells.ome.tif")   # doctest: +SKIP
    >>> plane = load(0, 0, 1)                                   # doctest: +SKIP
    """
    if not isinstance(source, (str, os.PathLike)):
        return None
    text = os.fspath(source)
    if "://" in text:
        return None
    p = Path(text)
    if not p.exists():
        if p.suffix.lower() in TIFF_SUFFIXES:
            raise FileNotFoundError(f"no such TIFF file: {text!r}")
        return None
    entry = find(p)
    src: LazySource
    if entry is not None and entry.name == "tiff":
        src = open_tiff_source(p)
    elif entry is not None and entry.name == "ome-zarr":
        try:
            src = open_ome_zarr_source(p)
        except Exception:  # noqa: BLE001 - not an image we can plane-load
            return None
    else:
        return None
    plan = LazyImage(src)
    st, sc, sz, _, _ = src.shape

    def plane_loader(t: int, z: int, c: int) -> np.ndarray:
        for name, v, n in (("t", t, st), ("z", z, sz), ("c", c, sc)):
            if not 0 <= int(v) < n:
                raise IndexError(f"{name}={v} is out of range [0, {n})")
        return plan.select(t=[int(t)], c=[int(c)], z=[int(z)]).execute()[0, 0, 0]

    meta = replace(src.header(), dtype_meta=None).pixels_meta(src.shape, src.dtype.name)
    return meta, plane_loader


def _resolve(obj: object) -> LazySource:
    return open_source(obj)


set_resolver(_resolve)
