"""File records: what a catalog remembers about each source file.

A :class:`FileRecord` is the catalog's equivalent of pado's ``Image`` record
(``to_record()`` / ``from_obj()``): the file's location, size, modification
time and a content checksum, plus which reader opened it, which OME-Arrow spec
version its record follows and the image id it was given.

Identity. A file counts as *already ingested* when its ``urlpath``, ``size``,
``mtime`` (nanoseconds) **and** ``checksum`` all equal those of an ``ok`` row
of the catalog. ``touch`` (new mtime) or any size change re-ingests; the
checksum guards against a different file copied in with its old mtime
preserved (``cp -p``, ``rsync -t``).

Checksum. ``blake2b`` with a 16-byte digest over the file size and its first
and last MiB (:data:`CHECKSUM_ALGORITHM`): files up to 2 MiB are hashed in
full; for larger ones (slides, stacks) hashing the whole file would cost as
much as ingesting it, and together with size + mtime the edges identify a
file reliably (the one blind spot: an in-place edit in the middle of a file
that keeps both its size and its mtime). xxhash is not a dependency; blake2b
runs at ~1 GB/s, so a small TIFF costs microseconds. A directory store
(OME-Zarr) is summarised by its listing: ``size`` is the total bytes of its
files, ``mtime`` the newest mtime, and the checksum covers every relative path
with its size plus the full content of the zarr metadata documents.

Objects read from an object store (``s3://`` ...) keep their URL in
``urlpath``, their listed size and last-modified time, and as checksum the
store's ETag (``etag:...``) where the listing gives one, else this same edge
checksum read with ranged requests: see :mod:`omeframe.catalog.objects` for
why.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from omeframe.catalog.kinds import STORE_KINDS, detect_reader
from omeframe.formats.zarr import ZARR_MARKERS
from omeframe.model.arrow import OME_ARROW_TAG_VERSION
from omeframe.model.checks import is_integer
from omeframe.model.errors import FileChangedError, NotRegularFileError

__all__ = [
    "FileRecord",
    "FILE_RECORD_SCHEMA",
    "CHECKSUM_ALGORITHM",
    "file_checksum",
    "stat_path",
    "check_unread_changes",
    "detect_reader",
    "records_to_table",
    "records_from_table",
    "edge_ranges",
    "checksum_of_edges",
]

CHECKSUM_ALGORITHM = "blake2b-128(size|first 1 MiB|last 1 MiB); dirs: listing + zarr metadata"
_EDGE = 1 << 20
_ZARR_META = {*ZARR_MARKERS, ".zmetadata"}  # consolidated v2 metadata too

#: Arrow types of the file-record columns of ``images.parquet`` and ``catalog.parquet``.
FILE_RECORD_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("urlpath", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("mtime", pa.timestamp("ns", tz="UTC")),
        pa.field("checksum", pa.string()),
        pa.field("reader", pa.string()),
        pa.field("spec_version", pa.string()),
    ]
)

def _walk_files(root: Path) -> list[tuple[str, os.stat_result]]:
    out: list[tuple[str, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            full = os.path.join(dirpath, fn)
            try:
                st = os.stat(full)
            except OSError:
                continue
            out.append((os.path.relpath(full, root).replace(os.sep, "/"), st))
    return out


def stat_path(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a file, or of a directory store (total size, newest mtime)."""
    p = Path(path)
    st = os.stat(p)
    if not stat.S_ISDIR(st.st_mode):
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"{str(p)!r} is not a regular file (a FIFO, device or socket): not read")
        return int(st.st_size), int(st.st_mtime_ns)
    size, mtime = 0, int(st.st_mtime_ns)
    for _, fst in _walk_files(p):
        size += int(fst.st_size)
        mtime = max(mtime, int(fst.st_mtime_ns))
    return size, mtime


def check_unread_changes(path: str | os.PathLike[str], size: int, mtime: int, outcome: str) -> None:
    """Raise :class:`FileChangedError` when ``path`` no longer has the ``size`` and ``mtime`` it was
    stat-ed with before its pixels were read (a file still being written); ``outcome`` says what
    the build does about it."""
    if stat_path(path) != (size, mtime):
        raise FileChangedError(
            errno.ESTALE, f"the file changed while it was read (is it still being written?); {outcome}", os.fspath(path)
        )


def file_checksum(path: str | os.PathLike[str], size: int | None = None) -> str:
    """The identity checksum of a file or directory store (hex, 32 characters).

    Parameters
    ----------
    path
        A regular file, or a zarr / OME-Zarr directory store.
    size
        Hash the file as if it had this many bytes (at most its size: the
        size it was stat-ed with, so a file still growing hashes the same);
        ``None`` for its current size. Files only.

    Raises
    ------
    IsADirectoryError
        When ``path`` is a directory but no zarr store (a folder of files: hash
        each file).
    TypeError, ValueError
        When ``size`` is not a non-negative integer, or is given for a directory store.
    NotRegularFileError
        For a FIFO, device or socket.
    """
    if size is not None:
        if not is_integer(size):
            raise TypeError(f"size must be a non-negative integer number of bytes or None, got {size!r}")
        if size < 0:
            raise ValueError(f"size must be a non-negative integer number of bytes or None, got {size}")
    p = Path(path)
    h = hashlib.blake2b(digest_size=16)
    if p.is_dir():
        if detect_reader(p, is_dir=True) not in STORE_KINDS:
            raise IsADirectoryError(
                errno.EISDIR,
                "a directory that is no zarr store: file_checksum hashes a file or a (OME-)Zarr store; "
                "hash the files inside it one by one",
                os.fspath(p),
            )
        if size is not None:
            raise ValueError(
                f"size applies to files, but {str(p)!r} is a directory store (hashed by its listing); "
                "pass size=None"
            )
        h.update(b"dir\0")
        for rel, st in _walk_files(p):
            h.update(f"{rel}\0{st.st_size}\0".encode())
            if rel.rsplit("/", 1)[-1] in _ZARR_META:
                with open(p / rel, "rb") as fh:
                    h.update(fh.read())
        return h.hexdigest()
    # O_NONBLOCK: a FIFO swapped in after a stat must not block the open; the
    # fstat below then refuses it. Reads never go past the size stated.
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"{str(p)!r} is not a regular file (a FIFO, device or socket): not read")
        n = st.st_size if size is None else min(int(size), st.st_size)
        h.update(n.to_bytes(8, "little"))
        if n <= 2 * _EDGE:
            h.update(fh.read(n))
        else:
            h.update(fh.read(_EDGE))
            fh.seek(n - _EDGE)
            h.update(fh.read(_EDGE))
    return h.hexdigest()


def edge_ranges(size: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` byte ranges the checksum of a file of ``size`` bytes covers."""
    if size <= 2 * _EDGE:
        return [(0, size)]
    return [(0, _EDGE), (size - _EDGE, size)]


def checksum_of_edges(size: int, parts: list[bytes]) -> str:
    """:func:`file_checksum` of a file from its size and the bytes of :func:`edge_ranges`.

    For objects read by ranged requests: the same bytes give the same checksum as a local file.

    Example
    -------
    >>> checksum_of_edges(3, [b"abc"]) == checksum_of_edges(3, [b"abd"])
    False
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(int(size).to_bytes(8, "little"))
    for part in parts:
        h.update(part)
    return h.hexdigest()


def _to_ns(value: Any) -> int:
    """Nanoseconds since the epoch from an int (ns), float (s), datetime or pandas Timestamp."""
    if value is None:
        raise ValueError("a file record needs an mtime")
    if isinstance(value, pa.TimestampScalar):  # exact, and needs no pandas (unlike .as_py())
        return int(value.cast(pa.timestamp("ns", value.type.tz)).value)
    if hasattr(value, "value") and hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        return int(value.value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    if isinstance(value, float):
        return int(round(value * 1e9))
    if hasattr(value, "astype") and str(getattr(value, "dtype", "")).startswith("datetime64"):
        import numpy as np

        return int(np.datetime64(value, "ns").astype("int64"))
    return int(value)


@dataclass(frozen=True)
class FileRecord:
    """One source file of a catalog (see the module docstring for identity rules).

    Attributes
    ----------
    urlpath
        Absolute local path of the file or directory store (POSIX separators), or
        the URL of an object (store) read from an object store.
    size
        Bytes (a directory store: the total of its files).
    mtime
        Modification time, integer nanoseconds since the epoch (UTC). In Arrow
        tables it is a ``timestamp[ns, UTC]`` column.
    checksum
        :func:`file_checksum` (``None`` when the file could not be read).
    reader
        Which reader opened it (:func:`detect_reader`).
    spec_version
        OME-Arrow spec version of the record written for it.
    image_id
        Id of the image in ``images.parquet`` or the dataset.
    """

    urlpath: str
    size: int
    mtime: int
    checksum: str | None = None
    reader: str | None = None
    spec_version: str = OME_ARROW_TAG_VERSION
    image_id: str | None = None

    # ---- construction -------------------------------------------------------
    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        checksum: bool = True,
        reader: str | None = None,
        image_id: str | None = None,
    ) -> FileRecord:
        """Stat (and checksum) ``path``."""
        p = Path(path)
        size, mtime = stat_path(p)
        return cls(
            urlpath=_urlpath(p),
            size=size,
            mtime=mtime,
            checksum=file_checksum(p, None if p.is_dir() else size) if checksum else None,
            reader=reader or detect_reader(p),
            image_id=image_id,
        )

    @classmethod
    def from_obj(cls, obj: Any) -> FileRecord:
        """A record from a path, a mapping (``to_record()`` output, a catalog row
        as dict / ``pyarrow.StructScalar`` / ``pandas.Series``) or a :class:`FileRecord`.

        ``mtime`` may be integer ns, float seconds, a datetime (µs precision),
        an Arrow timestamp scalar or a pandas Timestamp (both exact). A row
        taken as an Arrow scalar (``table.to_struct_array()[i]``) needs no
        pandas, unlike ``table.to_pylist()`` on the ``timestamp[ns]`` mtime."""
        if isinstance(obj, FileRecord):
            return obj
        if isinstance(obj, (str, os.PathLike)):
            return cls.from_path(obj)
        if isinstance(obj, pa.StructScalar):  # a row of a catalog table
            obj = _row_dict(obj)
        if isinstance(obj, Mapping) or hasattr(obj, "to_dict"):
            d = dict(obj.to_dict() if not isinstance(obj, Mapping) else obj)
            missing = [k for k in ("urlpath", "size", "mtime") if d.get(k) is None]
            if missing:
                raise ValueError(f"cannot build a FileRecord: missing {missing} in {sorted(d)}")
            names = {f.name for f in fields(cls)}
            kw = {k: d[k] for k in names if k in d and d[k] is not None}
            kw["size"] = int(d["size"])
            kw["mtime"] = _to_ns(d["mtime"])
            return cls(**kw)
        raise TypeError(
            f"cannot build a FileRecord from a {type(obj).__name__}; pass a path, a mapping or a FileRecord"
        )

    # ---- serialisation ------------------------------------------------------
    def to_record(self, image_id: str | None = None, **extra: Any) -> dict[str, Any]:
        """A flat dict for serialising (the column names of the catalog tables).

        ``image_id`` overrides the stored id; ``extra`` keys are added as they are.
        """
        rec = asdict(self)
        if image_id is not None:
            rec["image_id"] = image_id
        rec.update(extra)
        return rec

    # ---- identity -----------------------------------------------------------
    @property
    def identity(self) -> tuple[str, int, int, str | None]:
        """``(urlpath, size, mtime, checksum)``: equal identities = same file content."""
        return (self.urlpath, self.size, self.mtime, self.checksum)

    def same_file(self, other: Any) -> bool:
        """True when ``other`` (anything :meth:`from_obj` takes) has the same identity."""
        o = FileRecord.from_obj(other)
        return self.checksum is not None and self.identity == o.identity

    @property
    def mtime_datetime(self) -> datetime:
        """The modification time as an aware UTC datetime (microsecond precision)."""
        return datetime.fromtimestamp(self.mtime / 1e9, tz=UTC)

    @property
    def path(self) -> Path:
        return Path(self.urlpath)


def _row_dict(row: pa.StructScalar) -> dict[str, Any]:
    """A struct scalar's fields as a dict, timestamps left as Arrow scalars.

    ``StructScalar.as_py()`` turns a ``timestamp[ns]`` field into a
    ``pandas.Timestamp`` (or fails when pandas is not installed and the value
    has sub-microsecond digits); :func:`_to_ns` reads the scalar exactly instead.
    """
    if not row.is_valid:
        raise ValueError("cannot build a FileRecord from a null catalog row")
    return {
        name: (value if isinstance(value, pa.TimestampScalar) else value.as_py())
        for name, value in row.items()
    }


def _urlpath(p: Path) -> str:
    return Path(os.path.abspath(p)).as_posix()


def records_to_table(records: list[FileRecord]) -> pa.Table:
    """File records as a table with :data:`FILE_RECORD_SCHEMA`."""
    cols = {f.name: [getattr(r, f.name) for r in records] for f in FILE_RECORD_SCHEMA}
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in FILE_RECORD_SCHEMA})


def records_from_table(table: pa.Table) -> list[FileRecord]:
    """File records from a table holding the :data:`FILE_RECORD_SCHEMA` columns."""
    cols = {}
    for f in FILE_RECORD_SCHEMA:
        col = table[f.name]
        if f.name == "mtime":
            col = col.cast(pa.int64())
        cols[f.name] = col.to_pylist()
    return [
        FileRecord(
            urlpath=cols["urlpath"][i], size=int(cols["size"][i]), mtime=int(cols["mtime"][i]),
            checksum=cols["checksum"][i], reader=cols["reader"][i],
            spec_version=cols["spec_version"][i] or OME_ARROW_TAG_VERSION, image_id=cols["image_id"][i],
        )
        for i in range(table.num_rows)
    ]
