"""Record tables in object storage: ranged reads through Arrow, upload-then-publish writes.

Reads hand pyarrow a file system over the URL's fsspec filesystem with its
block cache turned off, so every read Arrow asks for (the footer, the column
chunks a projection needs, coalesced by Arrow's pre-buffering) is one ranged
GET and nothing more. Writes go to a local temporary file first; the complete
file is then uploaded under its final key in one PUT (or a multipart upload,
which the store publishes at once when it completes), so no reader ever sees
half a table under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from omeframe.formats.record.image_table import normalize_rows
from omeframe.storage.remote import RemoteStore, filesystem
from omeframe.storage.url import RemoteURL, parse_location

__all__ = ["arrow_filesystem", "read_schema_remote", "read_table_remote", "write_remote", "ranged_filesystem"]

T = TypeVar("T")


def ranged_filesystem(loc: RemoteURL, storage_options: Mapping[str, Any] | None) -> Any:
    """The fsspec filesystem of ``loc`` whose file objects read exactly the ranges asked for."""
    opts = dict(storage_options or {})
    if loc.protocol in ("s3", "gcs"):
        opts.setdefault("default_cache_type", "none")
    return filesystem(loc.protocol, opts)


def arrow_filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(pyarrow.fs.FileSystem, path)`` for a remote ``url`` (ranged reads, no block cache).

    Example
    -------
    >>> fs, path = arrow_filesystem("memory://omeframe-doc/t.parquet")
    >>> path
    '/omeframe-doc/t.parquet'
    """
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    loc = parse_location(url)
    if loc is None:
        raise ValueError(f"{url!r} is a local path, not a URL")
    return PyFileSystem(FSSpecHandler(ranged_filesystem(loc, storage_options))), loc.path


def read_schema_remote(url: str, storage_options: Mapping[str, Any] | None = None) -> pa.Schema:
    """The Arrow schema of a remote Parquet table (reads the footer only)."""
    import pyarrow.parquet as pq

    fs, path = arrow_filesystem(url, storage_options)
    try:
        return pq.ParquetFile(fs.open_input_file(path)).schema_arrow
    except FileNotFoundError:
        raise FileNotFoundError(f"no record table at {url!r}") from None


def read_table_remote(
    url: str,
    *,
    columns: Sequence[str] | None = None,
    rows: Sequence[int] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Read a remote Parquet record table (``columns``; ``rows`` reads only their row groups).

    Raises
    ------
    FileNotFoundError
        When there is no object at ``url``.
    RowIndexError
        For rows outside the table.
    """
    import numpy as np
    import pyarrow.parquet as pq

    fs, path = arrow_filesystem(url, storage_options)
    try:
        pf = pq.ParquetFile(fs.open_input_file(path), pre_buffer=True, page_checksum_verification=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no record table at {url!r}") from None
    cols = list(columns) if columns is not None else None
    if rows is None:
        return pf.read(columns=cols, use_threads=False)
    idx = np.asarray(normalize_rows(rows, pf.metadata.num_rows, repr(url)), dtype=np.int64)
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    groups = np.unique(np.searchsorted(starts, idx, side="right") - 1)
    t = pf.read_row_groups(groups.tolist(), columns=cols, use_threads=False)
    held = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in groups])  # global rows read, ascending
    return t.take(pa.array(np.searchsorted(held, idx), pa.int64()))


def write_remote(url: str, storage_options: Mapping[str, Any] | None, write: Callable[[Path], T]) -> T:
    """Call ``write(local_path)`` on a temporary file, then upload the complete file to ``url``.

    The final key is written once, by the upload of the finished file; when
    ``write`` fails nothing is uploaded.
    """
    loc = parse_location(url)
    if loc is None:
        raise ValueError(f"{url!r} is a local path, not a URL")
    parent, _, name = loc.url.rpartition("/")
    store = RemoteStore(parent, storage_options)
    with tempfile.TemporaryDirectory(prefix="omeframe-upload-") as tmp:
        local = Path(tmp) / name
        out = write(local)
        store.upload(os.fspath(local), name)
    return out
