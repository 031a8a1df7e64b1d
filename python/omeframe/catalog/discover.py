"""What a catalog ingests: walking folders, file kinds, opening an input, image ids.

Three jobs of a catalog build that need no worker and no commit:

* **Discovery** (:func:`discover`): directories, globs and files become a
  stable, de-duplicated list of absolute paths; object-store URLs become
  :class:`~omeframe.catalog.objects.RemoteInput` s (listed by
  :mod:`omeframe.catalog.objects`).
* **Opening** (:func:`open_image`): one input as a lazy source, local or
  remote; what kind a path is, :func:`~omeframe.catalog.kinds.detect_reader`
  decides (re-exported here).
* **Path columns** (:func:`image_id_for`, :func:`path_columns`): the image id
  of a new file and the values of ``columns_from_path`` groups.
"""

from __future__ import annotations

import errno
import glob as _glob
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from omeframe.catalog.kinds import INGESTED_KINDS, OME_TIFF_ENDINGS, STORE_KINDS, detect_reader
from omeframe.catalog.objects import ETAG_PREFIX, RemoteInput, list_sources
from omeframe.formats.array.npy import infer_array_dims
from omeframe.formats.zarr import ZARR_SUFFIX
from omeframe.model.errors import NotRegularFileError, OmeframeError, OptionalDependencyError
from omeframe.registry import FORMATS, open_source
from omeframe.storage.remote import listed_version, open_remote_file
from omeframe.storage.url import check_storage_options, local_path, parse_location

__all__ = [
    "discover",
    "detect_reader",
    "open_image",
    "close_source",
    "INGESTED_KINDS",
    "image_id_for",
    "path_columns",
    "file_problem",
    "EmptyImageIdError",
    "KNOWN_READERS",
]

#: The kinds :func:`detect_reader` names (the ``reader`` values :func:`open_image` accepts).
KNOWN_READERS = frozenset(
    INGESTED_KINDS
    | {"table", "directory", "unknown"}
    | {e.name for e in FORMATS if e.directory and e.name != "ome-zarr"}  # "dataset", "ome-arrow-dataset"
)

def open_image(path: str | os.PathLike[str] | RemoteInput, reader: str | None = None) -> Any:
    """Open one catalog input lazily (a :class:`~omeframe.engine.source.LazySource`).

    Parameters
    ----------
    path
        The file or store, or an object-store input found by :func:`discover`
        (read through ranged requests with its ``storage_options``).
    reader
        Its kind (:func:`detect_reader`), when known already: one of
        :data:`KNOWN_READERS`.

    Returns
    -------
    LazySource
        ``.npy`` files are memory-mapped (axes by rank: ``YX``, ``ZYX`` — or
        ``YXC`` for a trailing RGB(A) axis — ``TCYX``, ``TCZYX``); everything
        else goes through :func:`omeframe.registry.open_source`. A TIFF whose
        series axes :func:`open_source` cannot map (tifffile's generic ``Q``
        axes of metadata-less files) is read as a plain array with inferred axes.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    OptionalDependencyError
        For a CZI file when no CZI reader is installed.
    ValueError
        For a CZI object on an object store (CZI is read from local files only),
        or a ``reader`` that is not one of :data:`KNOWN_READERS`.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "a.npy"); np.save(f, np.zeros((4, 5), np.uint8))
    >>> open_image(f).shape
    (1, 1, 1, 4, 5)
    """
    if reader is not None and (not isinstance(reader, str) or reader not in KNOWN_READERS):
        raise ValueError(
            f"reader must be one of {', '.join(sorted(KNOWN_READERS))} (a kind detect_reader() names) or None "
            f"to detect it, got {reader!r}"
        )
    if isinstance(path, RemoteInput):
        return _open_remote(path, reader or path.reader)
    p = Path(path)
    reader = reader or detect_reader(p)
    problem = file_problem(p)
    if problem is not None:
        raise problem
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {str(p)!r}")
    if reader == "czi":
        try:
            return open_source(p)
        except (ValueError, TypeError, OmeframeError) as exc:
            raise OptionalDependencyError(
                f"cannot read CZI file {p.name!r}: {exc} (CZI support needs a CZI reader)"
            ) from exc
    try:
        return open_source(p)
    except OmeframeError as exc:
        if reader in ("tiff", "ome-tiff") and "cannot map to TCZYX" in str(exc):
            return _plain_tiff(p)
        raise


def _open_remote(item: RemoteInput, reader: str) -> Any:
    """:func:`open_image` of an object-store input (ranged reads; zarr through its fsspec store)."""
    if not item.exists:
        raise FileNotFoundError(f"{item.url!r}: no such object (not in the listing of its folder)")
    if reader == "czi":
        raise ValueError(
            f"{item.url!r}: CZI files are read from local paths only; copy it to a local folder and "
            "build the catalog from there"
        )
    # Read the version listed (its size and ETag go into the catalog row), not one written since.
    etag = item.checksum[len(ETAG_PREFIX):] if item.checksum and item.checksum.startswith(ETAG_PREFIX) else None
    with listed_version(item.url, item.size, etag) if etag and item.size is not None else nullcontext():
        try:
            return open_source(item.url, storage_options=item.storage_options)
        except OmeframeError as exc:
            if reader in ("tiff", "ome-tiff") and "cannot map to TCZYX" in str(exc):
                fh = open_remote_file(item.url, item.storage_options)
                return _plain_tiff(Path(item.name), fh)
            raise


def _plain_tiff(p: Path, fileobj: Any = None) -> Any:
    import tifffile

    with (tifffile.TiffFile(fileobj, name=p.name) if fileobj is not None else tifffile.TiffFile(str(p))) as tf:
        arr = tf.series[0].asarray()
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim > 5:
        raise ValueError(f"{p.name!r}: a {arr.ndim}-D TIFF series without axes metadata")
    return open_source(np.ascontiguousarray(arr), dim_order=infer_array_dims(arr.shape))


def close_source(src: Any) -> None:
    """Release a source's open file now (a catalog opens thousands) rather than at GC."""
    try:
        if callable(getattr(src, "close", None)):
            src.close()
        elif callable(getattr(getattr(src, "_keep", None), "close", None)):
            src._keep.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


# ---------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------
def _is_store_dir(p: Path) -> bool:
    return detect_reader(p, is_dir=True) in STORE_KINDS


def _has_magic(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _inside(p: Path, root: Path) -> bool:
    try:
        Path(os.path.abspath(p)).relative_to(Path(os.path.abspath(root)))
        return True
    except ValueError:
        return False


def _walk_dir(root: Path, exclude: Path | None) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            sub = d / name
            if name.startswith("."):
                continue
            if exclude is not None and _inside(sub, exclude):
                continue
            if _is_store_dir(sub):
                found.append(sub)
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            if not name.startswith(".") and detect_reader(d / name, is_dir=False) in INGESTED_KINDS:
                found.append(d / name)
    return found


def discover(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    exclude: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Path | RemoteInput]:
    """The image files and stores named by ``sources``, in a stable order.

    Parameters
    ----------
    sources
        Each is a file (taken as it is, whatever its suffix), a directory
        (walked recursively for TIFF / ``.npy`` / CZI files and zarr stores;
        hidden entries skipped; an OME-Zarr directory counts as one image), or
        a glob pattern (``**`` allowed). Missing explicit paths are kept, so
        that they get an error row. Each may also be a ``file://`` URL, or an
        object-store URL (``s3://bucket/prefix``, ``gs://``, ``az://``,
        ``memory://`` ...) of a folder, a glob, an object or a zarr store,
        listed as :mod:`omeframe.catalog.objects` describes.
    exclude
        A directory whose contents are left out (the catalog's own output).
    storage_options
        Options of the object stores' filesystem (credentials,
        ``endpoint_url`` ...), as elsewhere in omeframe.

    Returns
    -------
    list of Path or RemoteInput
        Absolute paths, directory by directory in sorted order, and for URLs
        :class:`~omeframe.catalog.objects.RemoteInput` s sorted by URL per
        source; without duplicates.

    Raises
    ------
    ValueError
        When nothing at all is found, a source is an empty string (pass
        ``"."`` for the current directory), or ``storage_options`` are
        given without any URL among ``sources``.
    TypeError
        When a source is not a string or path.
    FileNotFoundError
        When the bucket of a URL does not exist.
    RemoteStorageError
        When listing a URL is refused (credentials) or keeps failing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "a.npy").write_bytes(b""); (d / "notes.txt").write_text("")
    0
    0
    >>> [p.name for p in discover(d)]
    ['a.npy']
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = list(sources)
    for src in sources:
        if not isinstance(src, (str, os.PathLike)):
            raise TypeError(
                f"sources must be paths, URLs or glob patterns (str or os.PathLike), or a list of them; "
                f"got {type(src).__name__} {src!r}"
            )
        if os.fspath(src) == "":
            raise ValueError(
                "sources holds an empty path ''; name a directory, a file, a glob or a URL (pass '.' for the "
                "current directory)"
            )
    check_storage_options(storage_options, *sources)
    urls = [os.fspath(s) for s in sources if parse_location(s) is not None]
    remote = iter(list_sources(urls, storage_options)) if urls else iter(())
    ex = Path(exclude) if exclude is not None else None
    out: list[Path | RemoteInput] = []
    seen: set[str] = set()

    ex_abs = os.path.abspath(ex) if ex is not None else None

    def add(p: Path) -> None:
        key = os.path.abspath(p)
        if key in seen or (ex_abs is not None and (key == ex_abs or key.startswith(ex_abs + os.sep))):
            return
        seen.add(key)
        out.append(Path(key))

    for src in sources:
        if parse_location(src) is not None:
            for item in next(remote):
                if item.url not in seen:
                    seen.add(item.url)
                    out.append(item)
            continue
        p = local_path(src)
        s = os.fspath(p)
        if p.is_dir():
            if _is_store_dir(p):
                add(p)
            else:
                for f in _walk_dir(p, ex):
                    add(f)
        elif p.exists():
            add(p)
        elif _has_magic(s):
            for m in sorted(_glob.glob(s, recursive=True)):
                mp_ = Path(m)
                if mp_.is_dir() and not _is_store_dir(mp_):
                    for f in _walk_dir(mp_, ex):
                        add(f)
                else:
                    add(mp_)
        else:
            add(p)  # a missing file: reported as an error row
    if not out:
        what = ", ".join(repr(os.fspath(s)) for s in sources) or "(no sources given)"
        raise ValueError(f"no image files found in {what}")
    return out


def file_problem(path: str | os.PathLike[str]) -> NotRegularFileError | None:
    """Why ``path`` must not be opened (a FIFO, device, socket, symlink loop or dangling symlink), else ``None``.

    Only ``stat``/``lstat`` are used: nothing is opened, so a FIFO or a
    symlink to ``/dev/zero`` cannot block or flood the build. Missing paths
    and directories return ``None`` (the worker reports a missing file; a
    directory is a store).

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); os.symlink("/dev/zero", os.path.join(d, "z.tif"))
    >>> str(file_problem(os.path.join(d, "z.tif"))).split("z.tif': ")[-1]
    'a character device (through a symlink), not a regular file: never opened'
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return NotRegularFileError(f"{p!r}: a symlink loop, not a regular file: never opened")
        if os.path.islink(p):
            return NotRegularFileError(f"{p!r}: a dangling symlink, not a regular file: never opened")
        return None
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = (
        "a FIFO" if stat.S_ISFIFO(mode)
        else "a character device" if stat.S_ISCHR(mode)
        else "a block device" if stat.S_ISBLK(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "a special file"
    )
    via = " (through a symlink)" if os.path.islink(p) else ""
    return NotRegularFileError(f"{p!r}: {kind}{via}, not a regular file: never opened")


# ---------------------------------------------------------------------------
# path columns
# ---------------------------------------------------------------------------
class EmptyImageIdError(ValueError):
    """An ``image_id_from`` callable returned an empty id (a bad argument, not a clash of ids)."""


def _stem(p: Path | RemoteInput) -> str:
    name = p.name
    if isinstance(p, RemoteInput):
        p = Path(name)
    for suf in (*OME_TIFF_ENDINGS, ".ome" + ZARR_SUFFIX):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem if p.suffix else name


def _short_hash(s: str) -> str:
    return hashlib.blake2b(s.encode(), digest_size=4).hexdigest()


def image_id_for(
    p: Path | RemoteInput, image_id_from: str | Callable[[Path], str], used: dict[str, str]
) -> str:
    """The image id of a new file ``p`` (absolute), unique among ``used`` (id -> urlpath).

    ``image_id_from`` is ``"stem"`` (file name without its image suffix),
    ``"path"`` (the absolute POSIX path; an object's URL) or a callable
    ``Path -> str`` (given the URL string for an object-store input). An id
    that another file holds gets ``-<hash of the path>`` appended.

    Raises
    ------
    ValueError
        When even the suffixed id is taken (two paths give the same id and hash),
        or (:class:`EmptyImageIdError`) the callable returns an empty id.
    TypeError
        When the callable returns anything but a string.

    Examples
    --------
    >>> image_id_for(Path("/d/P1_A1.ome.tif"), "stem", {})
    'P1_A1'
    """
    urlpath = p.url if isinstance(p, RemoteInput) else p.as_posix()
    if callable(image_id_from):
        iid = image_id_from(p.url if isinstance(p, RemoteInput) else p)  # type: ignore[arg-type]
        if not isinstance(iid, str):
            raise TypeError(
                f"image_id_from returned {type(iid).__name__} {iid!r} for {urlpath!r}; it must return the "
                "image id as a non-empty string"
            )
        if not iid:
            raise EmptyImageIdError(
                f"image_id_from returned an empty image id {iid!r} for {urlpath!r}; it must return a "
                "non-empty string (every image needs an id)"
            )
    elif image_id_from == "path":
        iid = urlpath
    else:
        iid = _stem(p)
    if iid in used and used[iid] != urlpath:
        iid = f"{iid}-{_short_hash(urlpath)}"
        if iid in used and used[iid] != urlpath:
            raise ValueError(
                f"image id {iid!r} is used by two files; pass image_id_from= (e.g. 'path') to tell them apart"
            )
    return iid


def path_columns(regex: re.Pattern[str] | None, urlpath: str) -> tuple[str | None, ...]:
    """Values of ``regex``'s named groups searched in ``urlpath`` (``None`` where it does not match).

    Examples
    --------
    >>> path_columns(re.compile(r"(?P<plate>P\\d+)_(?P<well>[A-H]\\d+)"), "/d/P1_B2.tif")
    ('P1', 'B2')
    """
    if regex is None:
        return ()
    m = regex.search(urlpath)
    return tuple(m.group(n) if m else None for n in regex.groupindex)
