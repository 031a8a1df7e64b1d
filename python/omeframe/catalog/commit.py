"""The catalog on disk: its tables, their atomic commits, the lock, reading a catalog.

A catalog directory holds ``images.parquet`` (records), ``dataset/`` (large
images) and ``catalog.parquet`` (one row per source file, the commit point of a
build). This module writes them; :mod:`omeframe.catalog.build` decides when.

* :class:`ImagesWriter`: one atomic, streamed rewrite of ``images.parquet``.
* :class:`Staging`: new records of a build, written into an
  :class:`ImagesWriter` in file order whatever order batches finish in.
* :func:`write_catalog`, :func:`drop_dataset_images`: the other two commits.
* :class:`Lock`: one build per catalog directory at a time.
* :func:`read_catalog`: ``catalog.parquet`` as an Arrow table.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from omeframe.catalog.records import CHECKSUM_ALGORITHM, FILE_RECORD_SCHEMA
from omeframe.formats.dataset.gc import maybe_collect
from omeframe.formats.dataset.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from omeframe.formats.dataset.reader import DatasetReader as Dataset
from omeframe.formats.dataset.writer import _write_images_table
from omeframe.formats.record.files import record_row_sizes, table_metadata
from omeframe.model.arrow import DEFAULT_COLUMN_NAME
from omeframe.model.errors import OmeframeError
from omeframe.storage import parquet as pqio
from omeframe.storage.atomic import commit_step, fsync_dir, fsync_file
from omeframe.storage.remote import RemoteStore
from omeframe.storage.url import check_storage_options, local_path, parse_location

__all__ = [
    "CATALOG_VERSION",
    "CATALOG_SCHEMA",
    "CatalogError",
    "read_catalog",
    "ImagesWriter",
    "Staging",
    "Records",
    "load_records",
    "rewrite_images",
    "write_catalog",
    "drop_dataset_images",
    "Lock",
]

CATALOG_VERSION = "1"
IMAGES_NAME = "images.parquet"
CATALOG_NAME = "catalog.parquet"
DATASET_NAME = "dataset"
LOCK_NAME = ".omeframe-catalog.lock"

#: Columns of ``catalog.parquet`` (path-derived columns follow them).
CATALOG_SCHEMA = pa.schema(
    list(FILE_RECORD_SCHEMA)
    + [
        pa.field("status", pa.string()),
        pa.field("location", pa.string()),
        pa.field("shape", pa.list_(pa.int64())),
        pa.field("dtype", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("error", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
        pa.field("duration_s", pa.float64()),
    ]
)


class CatalogError(OmeframeError, RuntimeError):
    """A catalog build failed (``on_error="raise"``), or the catalog is locked or unusable."""


# The records of a batch: the table itself when the batch ran in this process,
# else the path of the Arrow IPC stream file the worker wrote them to.
Records: TypeAlias = "pa.Table | str | None"


# ---------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------
def read_catalog(out: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """``catalog.parquet`` of the catalog directory ``out``: one row per source file.

    Parameters
    ----------
    out
        The catalog directory, or its URL (``s3://bucket/plates.catalog``).
    storage_options
        Options of the URL's filesystem.

    Returns
    -------
    pyarrow.Table
        :data:`CATALOG_SCHEMA` columns, then the path-derived columns. ``mtime``
        is ``timestamp[ns, UTC]``: pyarrow turns nanosecond timestamps into
        Python objects only through pandas (``to_pylist()`` fails without it
        when a value has sub-microsecond digits), so take rows as Arrow scalars
        (``table.to_struct_array()[i]``, which :meth:`FileRecord.from_obj`
        reads exactly), or cast ``mtime`` to ``int64`` (nanoseconds) first.

    Raises
    ------
    FileNotFoundError
        When ``out`` holds no ``catalog.parquet``.
    CorruptFileError
        When ``catalog.parquet`` is damaged: a page fails its CRC-32
        (:class:`~omeframe.errors.ChunkChecksumError`), or its footer fails
        omeframe's checks, or pyarrow cannot decode it.

    Examples
    --------
    >>> import pyarrow.compute as pc
    >>> cat = read_catalog("plates.catalog")                       # doctest: +SKIP
    >>> cat.filter(pc.equal(cat["status"], "error")).num_rows      # doctest: +SKIP
    1
    """
    check_storage_options(storage_options, out)
    loc = parse_location(out)
    if loc is not None:
        try:
            data = RemoteStore(loc, storage_options).cat(CATALOG_NAME)
        except FileNotFoundError:
            raise FileNotFoundError(f"{loc.url!r} holds no catalog ({CATALOG_NAME} missing)") from None
        return _read_checked(pa.BufferReader(data), f"{loc.url}/{CATALOG_NAME}")
    p = local_path(out) / CATALOG_NAME
    if not p.is_file():
        raise FileNotFoundError(f"{str(out)!r} holds no catalog ({CATALOG_NAME} missing)")
    return _read_checked(p, str(p))


def _read_checked(source: Any, name: str, columns: list[str] | None = None) -> pa.Table:
    """A catalog table read whole, footer and page CRCs checked (:func:`~omeframe.storage.parquet.open_parquet`)."""
    with pqio.read_errors(name), pqio.open_parquet(source) as pf:
        return pf.read(columns=columns)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null, types cast)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            c = table[f.name]
            cols.append(c if c.type == f.type else c.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def unify(schemas: list[pa.Schema]) -> pa.Schema:
    names: dict[str, pa.Field] = {}
    for s in schemas:
        for f in s:
            names.setdefault(f.name, f)
    return pa.schema(list(names.values()))


def _file_meta() -> dict[str, str]:
    return {
        "omeframe.catalog.version": CATALOG_VERSION,
        "omeframe.catalog.checksum": CHECKSUM_ALGORITHM,
    }


class ImagesWriter:
    """One atomic rewrite of ``images.parquet``, fed incrementally.

    Opening it streams the kept rows of the existing file (those whose
    ``urlpath`` is not in ``drop``) row group by row group into a temporary
    file beside the catalog; :meth:`append` then adds new rows as they come,
    cut greedily into row groups of about ``row_group_bytes`` (default
    :data:`~omeframe.storage.parquet.DEFAULT_ROW_GROUP_BYTES`: the same groups
    a one-shot write of all new rows would make); :meth:`commit` renames the
    file into place and :meth:`abort` deletes it. The temporary file is named
    ``.pending-*.parquet``, so a build that crashes leaves nothing the next
    build does not clean up.
    """

    def __init__(
        self,
        path: Path,
        drop: set[str],
        new_schema: pa.Schema | None,
        *,
        column_name: str,
        compression: str | None,
        row_group_bytes: int | None = None,
    ) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.column_name = column_name
        self.tmp = path.parent / f".pending-{uuid.uuid4().hex[:12]}{path.suffix}"
        if row_group_bytes is not None and row_group_bytes <= 0:
            raise ValueError(f"row_group_bytes must be positive, got {row_group_bytes}")
        self._target = float(pqio.DEFAULT_ROW_GROUP_BYTES if row_group_bytes is None else row_group_bytes)
        self._parts: list[pa.Table] = []  # new rows of the row group being filled
        self._rows = 0
        self._acc = 0.0
        # Checked as it is read (footer, page CRCs): a damaged table is refused, never copied
        # into the new one under fresh CRCs
        old = pqio.open_parquet(path) if path.exists() else None
        try:
            schemas = ([old.schema_arrow] if old is not None else []) + ([new_schema] if new_schema is not None else [])
            if not schemas:
                raise ValueError(f"nothing to write to {str(path)!r}: no existing table and no new rows")
            schema = unify(schemas).remove_metadata()
            self.schema = schema.with_metadata(table_metadata(_file_meta()))
            kwargs = pqio._writer_kwargs(self.schema, "zstd", compression is not None)
            self._facts = pqio.footer_facts(self.schema, kwargs["compression"])
            self.writer: Any = pq.ParquetWriter(self.tmp, self.schema, **kwargs)
            try:
                if old is not None:
                    drop_arr = pa.array(sorted(drop), pa.string()) if drop else None
                    for g in range(old.metadata.num_row_groups):
                        t = old.read_row_group(g)
                        if drop_arr is not None:
                            import pyarrow.compute as pc

                            t = t.filter(pc.invert(pc.is_in(t["urlpath"], value_set=drop_arr)))
                        if t.num_rows:
                            self.writer.write_table(conform(t, self.schema), row_group_size=t.num_rows)
            except BaseException:
                self.abort()
                raise
        finally:
            if old is not None:
                old.close()  # released before any rename over it

    def append(self, table: pa.Table) -> None:
        """Add new rows (after every row added before), writing each row group once it is full."""
        if not table.num_rows:
            return
        t = conform(table, self.schema)
        sizes = np.asarray(record_row_sizes(t[self.column_name]), dtype=np.float64).tolist()
        start = 0
        for i, s in enumerate(sizes):
            if self._rows + i - start > 0 and self._acc + s > self._target:
                if i > start:
                    self._parts.append(t.slice(start, i - start))
                    self._rows += i - start
                self._write_group()
                start = i
            self._acc += s
        if start < t.num_rows:
            self._parts.append(t.slice(start))
            self._rows += t.num_rows - start

    def _write_group(self) -> None:
        parts, n = self._parts, self._rows
        self._parts, self._rows, self._acc = [], 0, 0.0
        if n:
            self.writer.write_table(pa.concat_tables(parts), row_group_size=n)

    def commit(self) -> None:
        """Write the last row group, close the file and rename it over ``images.parquet``."""
        try:
            self._write_group()
            self.writer.add_key_value_metadata(self._facts)
            self.writer.close()
            self.writer = None
            # durable before the catalog that lists its rows is committed
            fsync_file(self.tmp)
            commit_step(f"fsync:{self.path.name}")
            os.replace(self.tmp, self.path)
            commit_step(f"rename:{self.path.name}")
            fsync_dir(self.path.parent)
            commit_step(f"fsync-dir:{self.path.name}")
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and delete the temporary file; ``images.parquet`` stays as it was."""
        self._parts, self._rows, self._acc = [], 0, 0.0
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
            self.writer = None
        self.tmp.unlink(missing_ok=True)


def rewrite_images(
    path: Path,
    drop: set[str],
    new: pa.Table | None,
    *,
    column_name: str,
    compression: str | None,
    open_writer: Callable[..., ImagesWriter] = ImagesWriter,
) -> None:
    """Atomically rewrite ``images.parquet``: kept rows streamed group by group, then ``new``.

    ``open_writer`` makes the :class:`ImagesWriter` (same arguments).
    """
    if not path.exists() and new is None:
        return
    w = open_writer(path, drop, new.schema if new is not None else None,
                    column_name=column_name, compression=compression)
    if new is not None:
        w.append(new)
    w.commit()


def holds_any(images: Path, urlpaths: set[str]) -> bool:
    """Whether ``images.parquet`` has a row of any of ``urlpaths``."""
    import pyarrow.compute as pc

    col = _read_checked(images, str(images), ["urlpath"])["urlpath"]
    return bool(pc.any(pc.is_in(col, value_set=pa.array(sorted(urlpaths), pa.string()))).as_py())


def write_catalog(path: Path, table: pa.Table) -> None:
    """Write ``catalog.parquet`` atomically (the commit point of a build)."""
    meta = {k.encode(): v.encode() for k, v in _file_meta().items()}
    # page CRCs on every page, checked by read_catalog
    pqio.write_parquet_table(table.replace_schema_metadata(meta), path, compression="zstd")


def drop_dataset_images(root: Path, ids: set[str]) -> None:
    """Commit a dataset generation without the images ``ids`` (their chunks become garbage)."""
    import pyarrow.compute as pc

    if not ids or not (root / MANIFEST_NAME).is_file():
        return
    ds = Dataset(root)
    table = ds.images_table
    mask = pc.is_in(table["image_id"], value_set=pa.array(sorted(ids), pa.string()))
    if not pc.any(mask).as_py():
        return
    m = read_manifest(root)
    gen = m.generation + 1
    ext = "parquet" if m.format == "parquet" else "vortex"
    images_rel = f"images-{gen:05d}.{ext}"
    sums = _write_images_table(table.filter(pc.invert(mask)), root / images_rel, m.format)
    write_manifest(
        root, Manifest(format=m.format, generation=gen, images=images_rel, parts=list(m.parts), checksums=sums)
    )
    # Superseded images tables stay for readers of older generations until
    # their grace period ends (see docs/concepts/guarantees.md).
    maybe_collect(root)


# ---------------------------------------------------------------------------
# the lock
# ---------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """One build per catalog directory: a lock file holding the writer's pid.

    A lock left by a process that is gone is taken over.

    Raises
    ------
    CatalogError
        On entering, when a live process holds the lock.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME

    def __enter__(self) -> Lock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise CatalogError(
                        f"catalog {str(self.path.parent)!r} is being written by process {pid}; "
                        f"wait for it (or delete {self.path.name} if that process is gone)"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale lock
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise CatalogError(f"cannot lock catalog {str(self.path.parent)!r}")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


class Staging:
    """New records on their way into ``images.parquet``, in file order.

    Every batch of files has a sequence number (its position in the build's
    batch list). Record tables are handed to :meth:`add` as batches finish, in
    any order; they are written, in sequence order, into an
    :class:`ImagesWriter` as soon as every earlier batch has been accounted
    for (a batch without records counts too), so the file is written while
    the workers are still busy and its rows are in discovery order whatever
    the number of workers. Only the few batches that finish ahead of an
    earlier one wait in memory. :meth:`commit` writes what is still waiting
    (skipping gaps: files that never finished are retried by the next build)
    and renames the file into place.

    Parameters
    ----------
    out
        The catalog directory.
    column_name, compression
        OME-Arrow column and codec of ``images.parquet``.
    open_writer
        Makes the :class:`ImagesWriter` (same arguments); a build passes its
        :attr:`~omeframe.catalog.build.Seams.open_images_writer` seam.
    """

    def __init__(
        self,
        out: Path,
        *,
        column_name: str = DEFAULT_COLUMN_NAME,
        compression: str | None = "zstd",
        open_writer: Callable[..., ImagesWriter] = ImagesWriter,
    ) -> None:
        self.images = out / IMAGES_NAME
        self.column_name = column_name
        self.compression = compression
        self.open_writer = open_writer
        #: urlpaths whose old rows the next rewrite leaves out (set by the builder)
        self.drop: set[str] = set()
        self.writer: ImagesWriter | None = None
        self.waiting: dict[int, pa.Table | None] = {}
        self.next_seq = 0
        self.nbytes = 0  # bytes of new records since the last commit

    def add(self, seq: int | None, table: pa.Table | None) -> None:
        """The records of batch ``seq`` (``None``: no records); ``seq=None`` appends right away."""
        if table is not None:
            self.nbytes += table.nbytes
        if seq is None or seq < self.next_seq:  # re-runs of crashed batches, stragglers of a checkpoint
            if table is not None:
                self._write(table)
            return
        if seq in self.waiting:
            raise RuntimeError(f"catalog batch {seq} was handed in twice")
        self.waiting[seq] = table
        while self.next_seq in self.waiting:
            t = self.waiting.pop(self.next_seq)
            self.next_seq += 1
            if t is not None:
                self._write(t)

    def _write(self, table: pa.Table) -> None:
        t = table.drop_columns(["_index"])
        if self.writer is None:
            self.writer = self.open_writer(self.images, self.drop, t.schema,
                                           column_name=self.column_name, compression=self.compression)
        self.writer.append(t)

    def commit(self) -> bool:
        """Write every waiting table and rename the file into place; ``False`` when there was nothing new."""
        if self.waiting:
            last = max(self.waiting)
            for seq in sorted(self.waiting):
                t = self.waiting.pop(seq)
                if t is not None:
                    self._write(t)
            self.next_seq = last + 1
        self.nbytes = 0
        if self.writer is None:
            return False
        w, self.writer = self.writer, None
        w.commit()
        return True

    def discard(self) -> None:
        """Drop whatever is not committed (the temporary file included)."""
        self.waiting.clear()
        if self.writer is not None:
            w, self.writer = self.writer, None
            w.abort()


def load_records(records: Records) -> pa.Table | None:
    """A batch's records as a table; a worker's spool file is memory-mapped (no copy)
    and unlinked at once (the mapping outlives the name; where a mapped file cannot
    be unlinked, the build's final clean-up removes it)."""
    if records is None or isinstance(records, pa.Table):
        return records
    with pa.memory_map(records, "r") as src, pa.ipc.open_stream(src) as r:
        t = r.read_all()
    with contextlib.suppress(OSError):
        os.unlink(records)
    return t

