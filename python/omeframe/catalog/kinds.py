"""What kind of input a path is: the catalog's one decision about file kinds.

:func:`detect_reader` names the reader a path goes through (the ``reader``
column of a catalog). Discovery (local walks and object-store listings), the
file records and :func:`~omeframe.catalog.discover.open_image` all ask it;
it is the single place to hand over to :func:`omeframe.registry.detect` once
the registry knows every kind the catalog reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from omeframe.formats.tiff import TIFF_SUFFIXES
from omeframe.formats.zarr import ZARR_ATTRS_FILES, ZARR_SUFFIX
from omeframe.registry import by_suffix, find

__all__ = ["detect_reader", "INGESTED_KINDS", "STORE_KINDS", "OME_TIFF_ENDINGS"]

#: Catalog kinds of the registry's file formats (the ``reader`` column of a catalog).
_KIND_OF_FORMAT = {"tiff": "tiff", "czi": "czi", "numpy": "numpy", "record-table": "table"}
#: Name endings of OME-TIFF files (a ``tiff`` whose metadata is OME-XML).
OME_TIFF_ENDINGS = tuple(".ome" + s for s in TIFF_SUFFIXES)

#: Kinds (:func:`detect_reader` names) of the files and stores a directory walk picks up.
INGESTED_KINDS = frozenset({"tiff", "ome-tiff", "numpy", "czi", "zarr", "ome-zarr"})
STORE_KINDS = frozenset({"zarr", "ome-zarr"})


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
    if entry.name == "tiff" and p.name.lower().endswith(OME_TIFF_ENDINGS):
        return "ome-tiff"
    return _KIND_OF_FORMAT[entry.name]
