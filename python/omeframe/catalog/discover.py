"""What a catalog ingests: walking folders, file kinds, opening an input, image ids.

Three jobs of a catalog build that need no worker and no commit:

* **Discovery** (:func:`discover`): directories, globs and files become a
  stable, de-duplicated list of absolute paths.
* **File kinds** (:func:`detect_reader`, :func:`open_image`):
  :func:`detect_reader` is the catalog's *only* decision about what a path
  is; the walk, the file records and :func:`open_image` all ask it. (It is
  the single place to hand over to :func:`omeframe.registry.detect` once the
  registry knows every kind the catalog reads.)
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from omeframe.formats.array.npy import infer_array_dims
from omeframe.formats.tiff import TIFF_SUFFIXES
from omeframe.formats.zarr import ZARR_ATTRS_FILES, ZARR_SUFFIX
from omeframe.model.errors import NotRegularFileError, OmeframeError, OptionalDependencyError
from omeframe.registry import by_suffix, find, open_source

__all__ = [
    "discover",
    "detect_reader",
    "open_image",
    "close_source",
    "INGESTED_KINDS",
    "image_id_for",
    "path_columns",
    "file_problem",
]

#: Catalog kinds of the registry's file formats (the ``reader`` column of a catalog).
_KIND_OF_FORMAT = {"tiff": "tiff", "czi": "czi", "numpy": "numpy", "record-table": "table"}
#: Name endings of OME-TIFF files (a ``tiff`` whose metadata is OME-XML).
_OME_TIFF_ENDINGS = tuple(".ome" + s for s in TIFF_SUFFIXES)

#: Kinds (:func:`detect_reader` names) of the files and stores a directory walk picks up.
INGESTED_KINDS = frozenset({"tiff", "ome-tiff", "numpy", "czi", "zarr", "ome-zarr"})
_STORE_KINDS = frozenset({"zarr", "ome-zarr"})


# ---------------------------------------------------------------------------
# file kinds
# ---------------------------------------------------------------------------
def detect_reader(path: str | os.PathLike[str], *, is_dir: bool | None = None) -> str:
    """Name of the reader a path goes through.

    Parameters
    ----------
    path
        A file or directory (it need not exist: a missing file is named by its suffix).
    is_dir
        Whether ``path`` is a directory, when the caller knows already (a
        directory walk); ``None`` asks the file system.

    Returns
    -------
    str
        ``tiff``, ``ome-tiff``, ``ome-zarr``, ``zarr``, ``numpy``, ``czi``,
        ``table``, ``dataset`` (an omeframe dataset directory), ``directory``
        (a directory that is no store: a folder to walk) or ``unknown``.

    Examples
    --------
    >>> detect_reader("plate/P01_A1.ome.tif", is_dir=False)
    'ome-tiff'
    >>> detect_reader("stack.npy", is_dir=False)
    'numpy'
    """
    p = Path(path)
    if p.is_dir() if is_dir is None else is_dir:
        entry = find(p)
        if entry is None:
            return "directory"
        if entry.name != "ome-zarr":
            return entry.name  # "dataset", "ome-arrow-dataset"
        if p.name.lower().endswith(".ome" + ZARR_SUFFIX):
            return "ome-zarr"
        for meta in ZARR_ATTRS_FILES:  # attributes holding OME multiscales
            f = p / meta
            if f.is_file():
                try:
                    if b"multiscales" in f.read_bytes():
                        return "ome-zarr"
                except OSError:
                    pass
        return "zarr"
    entry = by_suffix(p)
    if entry is None:
        return "unknown"
    if entry.name == "tiff" and p.name.lower().endswith(_OME_TIFF_ENDINGS):
        return "ome-tiff"
    return _KIND_OF_FORMAT[entry.name]


def open_image(path: str | os.PathLike[str], reader: str | None = None) -> Any:
    """Open one catalog input lazily (a :class:`~omeframe.engine.source.LazySource`).

    Parameters
    ----------
    path
        The file or store.
    reader
        Its kind (:func:`detect_reader`), when known already.

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

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "a.npy"); np.save(f, np.zeros((4, 5), np.uint8))
    >>> open_image(f).shape
    (1, 1, 1, 4, 5)
    """
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


def _plain_tiff(p: Path) -> Any:
    import tifffile

    with tifffile.TiffFile(str(p)) as tf:
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
    return detect_reader(p, is_dir=True) in _STORE_KINDS


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
) -> list[Path]:
    """The image files and stores named by ``sources``, in a stable order.

    Parameters
    ----------
    sources
        Each is a file (taken as it is, whatever its suffix), a directory
        (walked recursively for TIFF / ``.npy`` / CZI files and zarr stores;
        hidden entries skipped; an OME-Zarr directory counts as one image), or
        a glob pattern (``**`` allowed). Missing explicit paths are kept, so
        that they get an error row.
    exclude
        A directory whose contents are left out (the catalog's own output).

    Returns
    -------
    list of Path
        Absolute paths, directory by directory in sorted order, without duplicates.

    Raises
    ------
    ValueError
        When nothing at all is found.

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
    ex = Path(exclude) if exclude is not None else None
    out: list[Path] = []
    seen: set[str] = set()

    ex_abs = os.path.abspath(ex) if ex is not None else None

    def add(p: Path) -> None:
        key = os.path.abspath(p)
        if key in seen or (ex_abs is not None and (key == ex_abs or key.startswith(ex_abs + os.sep))):
            return
        seen.add(key)
        out.append(Path(key))

    for src in sources:
        s = os.fspath(src)
        p = Path(s)
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
    >>> str(file_problem(os.path.join(d, "z.tif"))).split(": ")[-1]
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
def _stem(p: Path) -> str:
    name = p.name
    for suf in (*_OME_TIFF_ENDINGS, ".ome" + ZARR_SUFFIX):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem if p.suffix else name


def _short_hash(s: str) -> str:
    return hashlib.blake2b(s.encode(), digest_size=4).hexdigest()


def image_id_for(p: Path, image_id_from: str | Callable[[Path], str], used: dict[str, str]) -> str:
    """The image id of a new file ``p`` (absolute), unique among ``used`` (id -> urlpath).

    ``image_id_from`` is ``"stem"`` (file name without its image suffix),
    ``"path"`` (the absolute POSIX path) or a callable ``Path -> str``. An id
    that another file holds gets ``-<hash of the path>`` appended.

    Raises
    ------
    ValueError
        When even the suffixed id is taken (two paths give the same id and hash).

    Examples
    --------
    >>> image_id_for(Path("/d/P1_A1.ome.tif"), "stem", {})
    'P1_A1'
    """
    urlpath = p.as_posix()
    if callable(image_id_from):
        iid = str(image_id_from(p))
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
