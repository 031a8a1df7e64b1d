"""Build image catalogs from many files, in parallel, resumably.

:func:`build` turns a directory, a glob or a list of files (TIFF / OME-TIFF,
OME-Zarr, ``.npy``, CZI when a reader is installed) into a catalog directory::

    out/
      images.parquet    record table: one OME-Arrow record per small image, plus
                        the path-derived columns and the file-record columns
      dataset/          chunked dataset holding the large images (streamed)
      catalog.parquet   one row per source file: file record, status ("ok" /
                        "error"), where its image lives, shape, dtype, error

Decisions
---------
* **Errors live in catalog.parquet** (``status = 'error'``, ``error_type``,
  ``error``): one table answers "what happened to file X", and ``omeframe sql``
  exposes an ``errors`` view. A bad file never stops the batch: its row records
  the error and every other file is ingested. Error rows are retried on the
  next build.
* **Parallelism**: files are grouped in small batches and sent to a
  ``ProcessPoolExecutor``. A worker stats and checksums each file, opens it
  and, for a small image, encodes its record; it writes the batch's rows to
  an Arrow IPC file in the catalog directory (cheaper than pickling megabytes
  through a pipe) and returns its path. The parent memory-maps it and appends
  the rows to ``images.parquet``'s temporary file right away, so writing the
  table overlaps the workers' reading instead of following it. Large images
  are reported back and streamed by the parent into ``dataset/`` (the dataset
  writer already encodes chunks in a thread pool) while the workers carry on,
  up to 16 per committed generation; a failing batch is retried image by
  image so the error lands on the right file (``layout="dataset"`` over many
  small files therefore does not scale with ``workers``: prefer ``"auto"``).
  Workers are forked on Linux (the parent's objects frozen for the fork, so
  the workers' garbage collector does not copy their pages): no re-import, no
  ``__main__`` guard needed. A worker that crashes (a codec segfault) costs
  nothing but its own files: they are re-run one by one in a fresh
  single-worker pool and the culprit gets an error row.
* **Commits are atomic and ordered**: dataset generations first, then
  ``images.parquet`` (streamed rewrite, row group by row group, of the kept
  rows plus the new ones into a temporary ``.pending-*.parquet`` file,
  renamed into place), then ``catalog.parquet``, the commit point of a build.
  New records go into that temporary file while the build runs, in file
  order whatever the number of workers (a batch that finishes ahead of an
  earlier one waits in memory until that one is in), so memory stays bounded
  and the parent does not write everything at the end. Checkpoints repeat
  the commit when the new records exceed ``max(1 GiB, size of images.parquet)``
  (geometric, so rewrites cost O(total) I/O), and Ctrl-C commits what is done.
  After a crash, files without an ``ok`` row are simply ingested again, and
  their stale rows or dataset images are replaced, never duplicated. A lock
  file keeps two builds from writing one catalog at once.
* **Resume / append**: a file whose ``(urlpath, size, mtime, checksum)`` equals
  an ``ok`` row is skipped; a changed file is re-ingested under its old image
  id (its old record or dataset image is replaced); new files are appended.
* Records keep the native dtype; ``acquisition_datetime`` defaults to the
  file's mtime (deterministic, unlike the ingestion time).
"""

from __future__ import annotations

import contextlib
import gc
import glob as _glob
import hashlib
import math
import multiprocessing as mp
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.catalog.records import (
    CHECKSUM_ALGORITHM,
    FILE_RECORD_SCHEMA,
    FileRecord,
    detect_reader,
    file_checksum,
    stat_path,
)
from omeframe.model.arrow import DEFAULT_COLUMN_NAME
from omeframe.model.errors import OmeframeError

__all__ = [
    "build",
    "discover",
    "read_catalog",
    "open_image",
    "CatalogResult",
    "CatalogError",
    "CATALOG_SCHEMA",
    "CATALOG_VERSION",
]

CATALOG_VERSION = "1"
IMAGES_NAME = "images.parquet"
CATALOG_NAME = "catalog.parquet"
DATASET_NAME = "dataset"
LOCK_NAME = ".omeframe-catalog.lock"

_IMAGE_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2", ".npy", ".czi")
_RESERVED = {
    "ome_arrow", "status", "location", "shape", "dtype", "error_type", "error",
    "ingested_at", "duration_s", *FILE_RECORD_SCHEMA.names,
}
_CHECKPOINT_MIN_BYTES = 1 << 30
_LARGE_BATCH_IMAGES = 16
_LARGE_BATCH_BYTES = 2 << 30

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


@dataclass
class CatalogResult:
    """What :func:`build` did."""

    out: Path
    n_files: int = 0
    n_ingested: int = 0
    n_records: int = 0
    n_dataset: int = 0
    n_skipped: int = 0
    n_errors: int = 0
    elapsed_s: float = 0.0
    workers: int = 1
    errors: pa.Table = field(default_factory=lambda: CATALOG_SCHEMA.empty_table())

    @property
    def images_path(self) -> Path:
        return self.out / IMAGES_NAME

    @property
    def dataset_path(self) -> Path:
        return self.out / DATASET_NAME

    @property
    def catalog_path(self) -> Path:
        return self.out / CATALOG_NAME

    @property
    def paths(self) -> dict[str, Path]:
        """The tables that exist after the build."""
        cand = {"images": self.images_path, "dataset": self.dataset_path, "catalog": self.catalog_path}
        return {k: p for k, p in cand.items() if p.exists()}

    @property
    def files_per_s(self) -> float:
        return (self.n_ingested + self.n_errors) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def catalog(self) -> pa.Table:
        """The whole ``catalog.parquet``."""
        return read_catalog(self.out)

    def summary(self) -> str:
        return (
            f"{self.n_ingested} ingested ({self.n_records} records in {IMAGES_NAME}, "
            f"{self.n_dataset} images in {DATASET_NAME}/), {self.n_skipped} unchanged skipped, "
            f"{self.n_errors} errors, in {self.elapsed_s:.1f} s ({self.files_per_s:.0f} files/s, "
            f"{self.workers} worker{'s' if self.workers != 1 else ''})"
        )


# ---------------------------------------------------------------------------
# discovery and opening
# ---------------------------------------------------------------------------
def _is_store_dir(p: Path) -> bool:
    name = p.name.lower()
    if name.endswith(".zarr"):
        return True
    return any((p / n).exists() for n in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


def _has_magic(s: str) -> bool:
    return any(ch in s for ch in "*?[")


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
            if not name.startswith(".") and name.lower().endswith(_IMAGE_SUFFIXES):
                found.append(d / name)
    return found


def _inside(p: Path, root: Path) -> bool:
    try:
        Path(os.path.abspath(p)).relative_to(Path(os.path.abspath(root)))
        return True
    except ValueError:
        return False


def discover(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    exclude: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """The image files and stores named by ``sources``, in a stable order.

    Each source is a file (taken as it is, whatever its suffix), a directory
    (walked recursively for TIFF / ``.npy`` / CZI files and zarr stores; hidden
    entries skipped; an OME-Zarr directory counts as one image), or a glob
    pattern (``**`` allowed). Paths inside ``exclude`` (the catalog's own
    output) are left out. Missing explicit paths are kept, so that they get an
    error row.

    Raises
    ------
    ValueError
        When nothing at all is found.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    ex = Path(exclude) if exclude is not None else None
    out: list[Path] = []
    seen: set[str] = set()
    patterns_without_match: list[str] = []

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
            matches = sorted(_glob.glob(s, recursive=True))
            if not matches:
                patterns_without_match.append(s)
            for m in matches:
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


def _infer_npy_dims(shape: tuple[int, ...]) -> str:
    """Axes of a ``.npy`` array: omeframe's defaults by rank (``YX``, ``ZYX``,
    ``TCYX``, ``TCZYX``), except that trailing RGB(A) samples become channels."""
    from omeframe.model.dims import default_dim_order

    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4 and shape[1] > 4:
        return "YXC"
    return default_dim_order(len(shape))


def open_image(path: str | os.PathLike[str], reader: str | None = None) -> Any:
    """Open one catalog input lazily (a :class:`~omeframe.engine.source.LazySource`).

    ``.npy`` files are memory-mapped (axes by rank: ``YX``, ``ZYX`` — or
    ``YXC`` for a trailing RGB(A) axis — ``TCYX``, ``TCZYX``); everything else goes through
    :func:`omeframe.registry.open_source`. A TIFF whose series axes
    :func:`open_source` cannot map (tifffile's generic ``Q`` axes of
    metadata-less files) is read as a plain array with inferred axes.
    """
    from omeframe.registry import open_source

    p = Path(path)
    reader = reader or detect_reader(p)
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {str(p)!r}")
    if reader == "numpy":
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
        return open_source(arr, dim_order=_infer_npy_dims(arr.shape))
    if reader == "czi":
        try:
            return open_source(p)
        except (ValueError, TypeError, OmeframeError) as exc:
            from omeframe.model.errors import OptionalDependencyError

            raise OptionalDependencyError(
                f"cannot read CZI file {p.name!r}: {exc} (CZI support needs a CZI reader)"
            ) from exc
    try:
        return open_source(p)
    except OmeframeError as exc:
        if reader in ("tiff", "ome-tiff") and "cannot map to TCZYX" in str(exc):
            return _plain_tiff(p)
        raise


def _close_source(src: Any) -> None:
    """Release a source's open file now (a catalog opens thousands) rather than at GC."""
    try:
        if callable(getattr(src, "close", None)):
            src.close()
        elif callable(getattr(getattr(src, "_keep", None), "close", None)):
            src._keep.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


def _plain_tiff(p: Path) -> Any:
    import tifffile

    from omeframe.registry import open_source

    with tifffile.TiffFile(str(p)) as tf:
        arr = tf.series[0].asarray()
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim > 5:
        raise ValueError(f"{p.name!r}: a {arr.ndim}-D TIFF series without axes metadata")
    return open_source(np.ascontiguousarray(arr), dim_order=_infer_npy_dims(arr.shape))


# ---------------------------------------------------------------------------
# worker side
# ---------------------------------------------------------------------------
# A task: (index, path, image_id, reader, extra column values)
_Task = tuple[int, str, str, str, tuple[Any, ...]]


def _init_worker() -> None:
    import threading

    from omeframe.engine import threads as _threads

    # A forked worker inherits the parent's pool object and lock but not its
    # threads: forget them, then run single-threaded (one process per core).
    if hasattr(_threads, "_pool") and hasattr(_threads, "_lock"):
        _threads._pool = None
        _threads._lock = threading.Lock()
    _threads.set_num_threads(1)
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= 500 else msg[:497] + "..."


class _QuietReaders:
    """Readers' own log lines about bad files (tifffile's "invalid offset ...") are
    noise here: the failure is recorded in the file's error row instead."""

    _NAMES = ("tifffile", "zarr", "numcodecs")

    def __enter__(self) -> None:
        import logging

        self._saved = []
        for name in self._NAMES:
            lg = logging.getLogger(name)
            self._saved.append((lg, lg.level))
            lg.setLevel(max(lg.level, logging.ERROR + 1))

    def __exit__(self, *exc: object) -> None:
        for lg, level in self._saved:
            lg.setLevel(level)


# The records of a batch: the table itself when the batch ran in this process,
# else the path of the Arrow IPC stream file the worker wrote them to.
_Records = pa.Table | str | None


def _process_batch(tasks: list[_Task], opts: dict[str, Any]) -> tuple[list[dict[str, Any]], _Records]:
    """Worker entry point: ingest a batch; returns per-file outcomes and the batch's records."""
    with _QuietReaders():
        return _process_batch_inner(tasks, opts)


def _process_batch_inner(tasks: list[_Task], opts: dict[str, Any]) -> tuple[list[dict[str, Any]], _Records]:
    from dataclasses import replace as _replace

    from omeframe.engine.lazy import LazyImage
    from omeframe.formats.dataset.ingest import apply_overrides
    from omeframe.formats.record.builder import RecordBuilder

    outcomes: list[dict[str, Any]] = []
    arrays: list[pa.Array] = []
    rows: list[int] = []
    for index, path, image_id, reader, extras in tasks:
        t0 = time.perf_counter()
        oc: dict[str, Any] = {"index": index, "status": "error", "file": None}
        src = None
        try:
            rec = FileRecord.from_path(path, reader=reader, image_id=image_id)
            oc["file"] = rec.to_record()
            src = open_image(path, reader)
            shape = tuple(int(s) for s in src.shape)
            dtype = np.dtype(src.dtype)
            oc["shape"], oc["dtype"] = list(shape), str(dtype)
            nbytes = math.prod(shape) * dtype.itemsize
            small = opts["layout"] == "records" or (
                opts["layout"] == "auto" and nbytes <= opts["max_record_bytes"]
            )
            if small:
                header = apply_overrides(src, image_id=image_id, name=Path(path).name)
                if header.acquisition_datetime is None:
                    header = _replace(header, acquisition_datetime=rec.mtime_datetime)
                pixels = LazyImage(src).execute()
                builder = RecordBuilder(
                    chunk_encoding="bytes",
                    compression=opts["compression"],
                    compression_level=opts["compression_level"],
                    chunk_shape=opts["chunk_shape"] or (1, 512, 512),
                )
                builder.add(pixels, header)
                arrays.append(builder.build())
                rows.append(index)
                oc["status"], oc["location"] = "ok", IMAGES_NAME
            else:
                oc["status"], oc["location"] = "large", DATASET_NAME
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            oc["error_type"] = type(exc).__name__
            oc["error"] = _one_line(exc)
        finally:
            if src is not None:
                _close_source(src)
        oc["duration_s"] = time.perf_counter() - t0
        outcomes.append(oc)
    records: _Records = None
    if arrays:
        by_index = {oc["index"]: oc for oc in outcomes}
        in_rows = set(rows)
        try:
            records = _records_table(arrays, [by_index[i] for i in rows], [t for t in tasks if t[0] in in_rows], opts)
        except Exception as exc:  # noqa: BLE001 - should not happen; never lose the batch silently
            for i in rows:
                by_index[i].update(status="error", location=None, error_type=type(exc).__name__,
                                   error=f"could not assemble the record: {_one_line(exc)}")
    return outcomes, records


def _records_table(arrays: list[pa.Array], outcomes: list[dict[str, Any]], tasks: list[_Task], opts: dict[str, Any]) -> _Records:
    """The batch's records as a table, or, in a worker process (``opts["spool"]`` set), the
    path of the IPC stream file they were written to: a file in the catalog directory is
    cheaper to hand over than megabytes pickled through a pipe (no copies in Python, and
    the worker never waits for the parent to drain the pipe); the parent memory-maps it."""
    cols: dict[str, pa.Array] = {opts["column_name"]: pa.concat_arrays(arrays)}
    files = [oc["file"] for oc in outcomes]
    cols["image_id"] = pa.array([f["image_id"] for f in files], pa.string())
    for j, name in enumerate(opts["extra_names"]):
        cols[name] = pa.array([t[4][j] for t in tasks], pa.string())
    for f in FILE_RECORD_SCHEMA:
        if f.name != "image_id":
            cols[f.name] = pa.array([fr[f.name] for fr in files], f.type)
    cols["_index"] = pa.array([oc["index"] for oc in outcomes], pa.int64())
    table = pa.table(cols)
    spool = opts.get("spool")
    if spool is None:
        return table
    path = f"{spool}-{os.getpid()}-{int(tasks[0][0])}.arrows"
    try:
        with pa.OSFile(path, "wb") as fh, pa.ipc.new_stream(fh, table.schema) as w:
            w.write_table(table)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


# ---------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------
def read_catalog(out: str | os.PathLike[str]) -> pa.Table:
    """``catalog.parquet`` of the catalog directory ``out``."""
    import pyarrow.parquet as pq

    p = Path(out) / CATALOG_NAME
    if not p.is_file():
        raise FileNotFoundError(f"{str(out)!r} holds no catalog ({CATALOG_NAME} missing)")
    return pq.ParquetFile(p).read()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null, types cast)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            c = table[f.name]
            cols.append(c if c.type == f.type else c.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _unify(schemas: list[pa.Schema]) -> pa.Schema:
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


class _ImagesWriter:
    """One atomic rewrite of ``images.parquet``, fed incrementally.

    Opening it streams the kept rows of the existing file (those whose
    ``urlpath`` is not in ``drop``) row group by row group into a temporary
    file beside the catalog; :meth:`append` then adds new rows as they come,
    cut greedily into row groups of about
    :data:`~omeframe.storage.parquet.DEFAULT_ROW_GROUP_BYTES` (the same groups
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
    ) -> None:
        import pyarrow.parquet as pq

        from omeframe.formats.record.files import table_metadata
        from omeframe.storage import parquet as pqio

        self.path = path
        self.column_name = column_name
        self.tmp = path.parent / f".pending-{uuid.uuid4().hex[:12]}.parquet"
        self._target = float(pqio.DEFAULT_ROW_GROUP_BYTES)
        self._parts: list[pa.Table] = []  # new rows of the row group being filled
        self._rows = 0
        self._acc = 0.0
        old = pq.ParquetFile(path) if path.exists() else None
        try:
            schemas = ([old.schema_arrow] if old is not None else []) + ([new_schema] if new_schema is not None else [])
            if not schemas:
                raise ValueError(f"nothing to write to {str(path)!r}: no existing table and no new rows")
            schema = _unify(schemas).remove_metadata()
            self.schema = schema.with_metadata(table_metadata(_file_meta()))
            kwargs = pqio._writer_kwargs(self.schema, "zstd", compression is not None)
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
                            self.writer.write_table(_conform(t, self.schema), row_group_size=t.num_rows)
            except BaseException:
                self.abort()
                raise
        finally:
            if old is not None:
                old.close()  # released before any rename over it

    def append(self, table: pa.Table) -> None:
        """Add new rows (after every row added before), writing each row group once it is full."""
        from omeframe.formats.record.files import record_row_sizes

        if not table.num_rows:
            return
        t = _conform(table, self.schema)
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
            self.writer.close()
            self.writer = None
            os.replace(self.tmp, self.path)
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


def _rewrite_images(path: Path, drop: set[str], new: pa.Table | None, *, column_name: str, compression: str | None) -> None:
    """Atomically rewrite ``images.parquet``: kept rows streamed group by group, then ``new``."""
    if not path.exists() and new is None:
        return
    w = _ImagesWriter(path, drop, new.schema if new is not None else None,
                      column_name=column_name, compression=compression)
    if new is not None:
        w.append(new)
    w.commit()


def _holds_any(images: Path, urlpaths: set[str]) -> bool:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    col = pq.ParquetFile(images).read(columns=["urlpath"])["urlpath"]
    return bool(pc.any(pc.is_in(col, value_set=pa.array(sorted(urlpaths), pa.string()))).as_py())


def _write_catalog(path: Path, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    from omeframe.storage.atomic import atomic_path

    meta = {k.encode(): v.encode() for k, v in _file_meta().items()}
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _drop_dataset_images(root: Path, ids: set[str]) -> None:
    """Commit a dataset generation without the images ``ids`` (their chunks become garbage)."""
    import pyarrow.compute as pc

    from omeframe.formats.dataset.manifest import (
        Manifest,
        read_manifest,
        write_manifest,
    )
    from omeframe.formats.dataset.reader import DatasetReader as Dataset
    from omeframe.formats.dataset.writer import _write_images_table

    if not ids or not (root / "manifest.json").is_file():
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
    _write_images_table(table.filter(pc.invert(mask)), root / images_rel, m.format)
    write_manifest(root, Manifest(format=m.format, generation=gen, images=images_rel, parts=list(m.parts)))
    for f in root.glob(f"images-*.{ext}"):
        if f.name not in (images_rel, m.images):
            f.unlink(missing_ok=True)


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


class _Lock:
    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME

    def __enter__(self) -> _Lock:
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


# ---------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------
def _stem(p: Path) -> str:
    name = p.name
    for suf in (".ome.tiff", ".ome.tif", ".ome.btf", ".ome.zarr"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem if p.suffix else name


def _short_hash(s: str) -> str:
    return hashlib.blake2b(s.encode(), digest_size=4).hexdigest()


def _mp_context() -> Any:
    """Start method of the worker processes.

    ``fork`` on Linux: workers start in milliseconds, inherit the imported
    modules and never re-run the caller's ``__main__`` (so scripts need no
    ``if __name__ == "__main__"`` guard); the worker initializer resets the
    inherited thread-pool state. Elsewhere ``spawn``. ``OMEFRAME_MP_START``
    overrides (``fork`` / ``forkserver`` / ``spawn``).
    """
    import sys

    method = os.environ.get("OMEFRAME_MP_START")
    if not method:
        method = "fork" if sys.platform.startswith("linux") else "spawn"
    if method not in mp.get_all_start_methods():
        raise ValueError(f"OMEFRAME_MP_START={method!r} is not available here: {mp.get_all_start_methods()}")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["omeframe.catalog.build"])
    return ctx


def _ping() -> int:
    return os.getpid()


class _Staging:
    """New records on their way into ``images.parquet``, in file order.

    Every batch of files has a sequence number (its position in the build's
    batch list). Record tables are handed to :meth:`add` as batches finish, in
    any order; they are written, in sequence order, into an
    :class:`_ImagesWriter` as soon as every earlier batch has been accounted
    for (a batch without records counts too), so the file is written while
    the workers are still busy and its rows are in discovery order whatever
    the number of workers. Only the few batches that finish ahead of an
    earlier one wait in memory. :meth:`commit` writes what is still waiting
    (skipping gaps: files that never finished are retried by the next build)
    and renames the file into place.
    """

    def __init__(self, out: Path) -> None:
        self.images = out / IMAGES_NAME
        self.column_name = DEFAULT_COLUMN_NAME
        self.compression: str | None = "zstd"
        #: urlpaths whose old rows the next rewrite leaves out (set by the builder)
        self.drop: set[str] = set()
        self.writer: _ImagesWriter | None = None
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
            self.writer = _ImagesWriter(self.images, self.drop, t.schema,
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


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block is done, then raise ``KeyboardInterrupt``.

    Only in the main thread and while Python's default handler is installed;
    anywhere else this does nothing.
    """
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    hit: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: hit.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hit:
        raise KeyboardInterrupt


def _load_records(records: _Records) -> pa.Table | None:
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


@dataclass
class _Todo:
    index: int
    path: Path
    reader: str
    image_id: str
    extras: tuple[Any, ...]
    size: int


class _Builder:
    """State of one :func:`build` call."""

    def __init__(self, out: Path, opts: dict[str, Any], extra_names: list[str], progress: bool, on_error: str) -> None:
        self.out = out
        self.opts = opts
        self.extra_names = extra_names
        self.progress = progress
        self.on_error = on_error
        self.staging = _Staging(out)
        self.spool = os.fspath(out / f".pending-{uuid.uuid4().hex[:12]}-records")  # prefix of workers' record files
        self.done_rows: list[dict[str, Any]] = []  # catalog rows of this run
        self.large: list[tuple[_Todo, dict[str, Any]]] = []
        self.large_bytes = 0
        self.attempted: set[str] = set()
        self.committed_once = False
        self.commit_failed = False
        self.result = CatalogResult(out=out)
        self.first_error: str | None = None
        self.bar: Any = None

    # ---- outcomes -----------------------------------------------------------
    def catalog_row(self, todo: _Todo, oc: dict[str, Any]) -> dict[str, Any]:
        f = oc.get("file") or {}
        row = {
            "image_id": todo.image_id,
            "urlpath": f.get("urlpath", Path(os.path.abspath(todo.path)).as_posix()),
            "size": f.get("size"),
            "mtime": f.get("mtime"),
            "checksum": f.get("checksum"),
            "reader": todo.reader,
            "spec_version": f.get("spec_version"),
            "status": oc["status"],
            "location": oc.get("location") if oc["status"] == "ok" else None,
            "shape": oc.get("shape"),
            "dtype": oc.get("dtype"),
            "error_type": oc.get("error_type"),
            "error": oc.get("error"),
            "ingested_at": datetime.now(UTC),
            "duration_s": float(oc.get("duration_s") or 0.0),
            "_index": todo.index,
        }
        for name, v in zip(self.extra_names, todo.extras):
            row[name] = v
        return row

    def handle(self, todos: dict[int, _Todo], outcomes: list[dict[str, Any]], records: _Records, seq: int | None) -> None:
        """Take in a finished batch: ``seq`` is its position in the batch list
        (``None`` for files re-run one by one after a worker crash).

        Ctrl-C waits until the batch is in: its records and its catalog rows go
        together (an ``ok`` row always has its record in the next commit).
        """
        with _sigint_deferred():
            self._handle(todos, outcomes, records, seq)

    def _handle(self, todos: dict[int, _Todo], outcomes: list[dict[str, Any]], records: _Records, seq: int | None) -> None:
        self.staging.add(seq, _load_records(records))
        for oc in outcomes:
            todo = todos[oc["index"]]
            if oc["status"] == "large":
                self.large.append((todo, oc))
                shape = oc.get("shape") or [0]
                self.large_bytes += math.prod(shape) * np.dtype(oc.get("dtype") or "u1").itemsize
                continue
            self.record(todo, oc)
        if len(self.large) >= _LARGE_BATCH_IMAGES or self.large_bytes >= _LARGE_BATCH_BYTES:
            self.flush_large()

    def record(self, todo: _Todo, oc: dict[str, Any]) -> None:
        row = self.catalog_row(todo, oc)
        self.done_rows.append(row)
        if oc["status"] == "ok":
            self.result.n_ingested += 1
            if oc.get("location") == DATASET_NAME:
                self.result.n_dataset += 1
            else:
                self.result.n_records += 1
        else:
            self.result.n_errors += 1
            if self.first_error is None:
                self.first_error = f"{row['urlpath']}: {oc.get('error_type')}: {oc.get('error')}"
        if self.bar is not None:
            self.bar.update(1)
            if self.result.n_errors:
                self.bar.set_postfix(errors=self.result.n_errors, refresh=False)

    def flush_large(self) -> None:
        from omeframe.formats.dataset.inputs import source_input
        from omeframe.formats.dataset.writer import WriteOptions, write_items

        batch, self.large, self.large_bytes = self.large, [], 0
        if not batch:
            return
        root = self.out / DATASET_NAME

        def item(td: _Todo, oc: dict[str, Any], opened: list[Any]) -> tuple[Any, str, int, None]:
            src = open_image(td.path, td.reader)
            opened.append(src)
            inp = source_input(src)
            h = inp.header
            h.image_id, h.name = td.image_id, td.path.name
            if h.acquisition_datetime is None and (oc.get("file") or {}).get("mtime") is not None:
                h.acquisition_datetime = datetime.fromtimestamp(oc["file"]["mtime"] / 1e9, tz=UTC)
            return (inp, td.image_id, 0, None)

        def write(group: list[tuple[_Todo, dict[str, Any]]]) -> None:
            opened: list[Any] = []
            try:
                items = [item(td, oc, opened) for td, oc in group]
                write_items(items, root, WriteOptions(
                    mode="append", chunk_shape=self.opts["chunk_shape"],
                    compression=self.opts["compression"],
                    compression_level=self.opts["compression_level"], progress=False,
                ))
            finally:
                for src in opened:
                    _close_source(src)

        t0 = time.perf_counter()
        try:
            write(batch)
            share = (time.perf_counter() - t0) / len(batch)
            for td, oc in batch:
                self.record(td, {**oc, "status": "ok", "duration_s": (oc.get("duration_s") or 0) + share})
            return
        except Exception:  # noqa: BLE001 - find the culprit(s) one by one
            if len(batch) == 1:
                td, oc = batch[0]
                self._large_failed(td, oc)
                return
        for td, oc in batch:
            t1 = time.perf_counter()
            try:
                write([(td, oc)])
                self.record(td, {**oc, "status": "ok", "duration_s": (oc.get("duration_s") or 0) + time.perf_counter() - t1})
            except Exception:  # noqa: BLE001
                self._large_failed(td, oc)

    def _large_failed(self, td: _Todo, oc: dict[str, Any]) -> None:
        import sys

        exc = sys.exc_info()[1]
        assert exc is not None
        self.record(td, {**oc, "status": "error", "error_type": type(exc).__name__, "error": _one_line(exc)})

    def cleanup(self) -> None:
        """Remove what a build leaves behind uncommitted: the temporary images file and
        any record files of workers that were not taken in (crashed, interrupted)."""
        self.staging.discard()
        for f in self.out.glob(f"{Path(self.spool).name}-*.arrows"):
            f.unlink(missing_ok=True)

    # ---- commits ------------------------------------------------------------
    def commit(self, old_catalog: pa.Table | None) -> None:
        """Write images.parquet, then catalog.parquet, for everything processed so far.

        The first commit of a run drops the old rows of every file this run
        attempts (changed files, error retries, orphans of a crashed run);
        later ones (checkpoints) only append. After a commit that failed half
        way (its new records are gone), later ones write nothing: the catalog
        must not claim records that are not there; the next build redoes them.
        """
        if self.commit_failed:
            return
        try:
            self.flush_large()
            images = self.out / IMAGES_NAME
            drop = set() if self.committed_once else set(self.attempted)
            self.staging.drop = drop  # for a writer not opened yet
            if not self.staging.commit() and drop and images.exists() and _holds_any(images, drop):
                _rewrite_images(images, drop, None, column_name=self.opts["column_name"],
                                compression=self.opts["compression"])
        except BaseException:
            self.commit_failed = True
            raise
        self.staging.drop = set()  # later commits (checkpoints) only append
        self.committed_once = True
        parts: list[pa.Table] = []
        if old_catalog is not None and old_catalog.num_rows:
            import pyarrow.compute as pc

            gone = pa.array(sorted(self.attempted), pa.string())
            parts.append(old_catalog.filter(pc.invert(pc.is_in(old_catalog["urlpath"], value_set=gone))))
        if self.done_rows:
            parts.append(self._rows_table(sorted(self.done_rows, key=lambda r: r["_index"])))
        if parts:
            schema = _unify([p.schema for p in parts]).remove_metadata()
            _write_catalog(self.out / CATALOG_NAME, pa.concat_tables([_conform(p, schema) for p in parts]))

    def _rows_table(self, rows: list[dict[str, Any]]) -> pa.Table:
        fields_ = list(CATALOG_SCHEMA) + [pa.field(n, pa.string()) for n in self.extra_names]
        cols = {}
        for f in fields_:
            vals = [r.get(f.name) for r in rows]
            cols[f.name] = pa.array(vals, f.type)
        return pa.table(cols, schema=pa.schema(fields_))


def build(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    layout: Literal["auto", "records", "dataset"] = "auto",
    workers: int | None = None,
    progress: bool = True,
    columns_from_path: str | re.Pattern[str] | None = None,
    on_error: Literal["collect", "raise"] = "collect",
    image_id_from: Literal["stem", "path"] | Callable[[Path], str] = "stem",
    max_record_bytes: int = 64 << 20,
    resume: bool = True,
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = "zstd",
    compression_level: int | None = 3,
    column_name: str = DEFAULT_COLUMN_NAME,
    batch_size: int | None = None,
) -> CatalogResult:
    """Ingest many image files into the catalog directory ``out`` (created or appended).

    Parameters
    ----------
    sources
        A directory, a glob pattern, a file, or a list of them (see :func:`discover`).
    out
        Catalog directory: ``images.parquet`` (small images as OME-Arrow
        records plus extra columns), ``dataset/`` (large images, chunked) and
        ``catalog.parquet`` (one row per file, including errors).
    layout
        ``"auto"``: images up to ``max_record_bytes`` (decoded) become records,
        larger ones go to the dataset; ``"records"`` / ``"dataset"``: all of them.
    workers
        Worker processes (default: CPU count). ``1`` ingests in this process.
    progress
        Show a tqdm progress bar (files done, errors so far).
    columns_from_path
        A regex with named groups matched (``re.search``) against each file's
        absolute path; every group becomes a string column of both tables
        (``None`` where it does not match), e.g.
        ``r"(?P<plate>P\\d+)_(?P<well>[A-H]\\d+)"``.
    on_error
        ``"collect"`` (default): a failing file gets a ``status='error'`` row and
        the build goes on. ``"raise"``: stop at the first failure, commit what
        succeeded, then raise :class:`CatalogError`.
    image_id_from
        ``"stem"`` (file name without its image suffix; clashes get ``-<hash>``
        appended), ``"path"`` (the absolute path) or a callable ``Path -> str``.
        A re-ingested file keeps the id it already had.
    resume
        Skip files whose path, size, mtime and checksum equal an ``ok`` row.
        ``False`` re-ingests everything given (still replacing, never duplicating).
    chunk_shape
        ``(Z, Y, X)`` chunk shape of records (default (1, 512, 512)) and of the
        dataset (default: the source's, else the dataset's existing one).
    compression, compression_level
        Per-chunk codec of records and dataset chunks.
    batch_size
        Files per worker task (default: sized from the file count and ~64 MiB).

    Returns
    -------
    CatalogResult
        Counts, timing, output paths and this run's error rows.
    """
    t_start = time.perf_counter()
    if layout not in ("auto", "records", "dataset"):
        raise ValueError(f"layout must be 'auto', 'records' or 'dataset', got {layout!r}")
    if on_error not in ("collect", "raise"):
        raise ValueError(f"on_error must be 'collect' or 'raise', got {on_error!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if max_record_bytes <= 0:
        raise ValueError(f"max_record_bytes must be positive, got {max_record_bytes}")
    regex = re.compile(columns_from_path) if isinstance(columns_from_path, str) else columns_from_path
    extra_names: list[str] = list(regex.groupindex) if regex is not None else []
    if regex is not None and not extra_names:
        raise ValueError(
            f"columns_from_path {regex.pattern!r} has no named groups; name them like "
            r"(?P<plate>P\d+)"
        )
    clash = sorted(set(extra_names) & (_RESERVED | {column_name}))
    if clash:
        raise ValueError(f"columns_from_path group name(s) {clash} clash with catalog columns")
    if not (callable(image_id_from) or image_id_from in ("stem", "path")):
        raise ValueError(f"image_id_from must be 'stem', 'path' or a callable, got {image_id_from!r}")

    out_p = Path(out)
    if out_p.exists() and not out_p.is_dir():
        raise ValueError(f"catalog output {str(out_p)!r} exists and is not a directory")
    files = discover(sources, exclude=out_p)
    out_p.mkdir(parents=True, exist_ok=True)

    with _Lock(out_p):
        for stale in out_p.glob(".pending-*"):  # records and temporary files of a crashed build
            if stale.is_file():
                stale.unlink(missing_ok=True)
        old_catalog = read_catalog(out_p) if (out_p / CATALOG_NAME).is_file() else None
        old_by_path: dict[str, dict[str, Any]] = {}
        used_ids: dict[str, str] = {}  # image_id -> urlpath
        if old_catalog is not None:
            t = old_catalog.select(["urlpath", "size", "mtime", "checksum", "status", "image_id"])
            t = t.set_column(t.schema.get_field_index("mtime"), "mtime", t["mtime"].cast(pa.int64()))
            for r in t.to_pylist():
                old_by_path[r["urlpath"]] = r
                if r["image_id"]:
                    used_ids[r["image_id"]] = r["urlpath"]

        b = _Builder(out_p, {}, extra_names, progress, on_error)
        todos: list[_Todo] = []
        for p in files:
            urlpath = p.as_posix()  # discover() returns absolute paths
            old = old_by_path.get(urlpath)
            size = 0
            try:
                size, mtime = stat_path(p)
                if (
                    resume and old is not None and old["status"] == "ok"
                    and old["size"] == size and old["mtime"] == mtime
                    and old["checksum"] == file_checksum(p, None if p.is_dir() else size)
                ):
                    b.result.n_skipped += 1
                    continue
            except OSError:
                pass  # the worker reports it
            if old is not None and old.get("image_id"):
                iid = old["image_id"]
            else:
                if callable(image_id_from):
                    iid = str(image_id_from(p))
                elif image_id_from == "path":
                    iid = urlpath
                else:
                    iid = _stem(p)
                if iid in used_ids and used_ids[iid] != urlpath:
                    iid = f"{iid}-{_short_hash(urlpath)}"
                    if iid in used_ids and used_ids[iid] != urlpath:
                        raise CatalogError(f"image id {iid!r} is used by two files; pass image_id_from=")
            used_ids[iid] = urlpath
            extras: tuple[Any, ...] = ()
            if regex is not None:
                m = regex.search(urlpath)
                extras = tuple(m.group(n) if m else None for n in extra_names)
            todos.append(_Todo(len(todos), p, detect_reader(p), iid, extras, size))
            b.attempted.add(urlpath)

        b.result.n_files = len(files)
        if workers is None:
            workers = max(1, os.cpu_count() or 1)
        opts = {
            "layout": layout,
            "max_record_bytes": int(max_record_bytes),
            "chunk_shape": tuple(chunk_shape) if chunk_shape else None,
            "compression": compression,
            "compression_level": compression_level,
            "column_name": column_name,
            "extra_names": extra_names,
        }
        b.opts = opts
        b.staging.column_name, b.staging.compression = column_name, compression
        b.staging.drop = set(b.attempted)  # the first commit replaces the old rows of these files

        if todos:
            # Images of re-ingested files (or left by a crashed run) are replaced, not duplicated.
            _drop_dataset_images(out_p / DATASET_NAME, {td.image_id for td in todos})
            if batch_size is None:  # ~16 tasks per worker for balance, <= 32 files for progress
                per = max(1, min(32, len(todos) // (workers * 16) or 1))
            else:
                per = max(1, int(batch_size))
            batches = _make_batches(todos, per, 64 << 20)
            n_workers = min(workers, len(batches))
            b.result.workers = n_workers
            if progress:
                from tqdm.auto import tqdm

                b.bar = tqdm(total=len(todos), desc="ingest", unit="file", dynamic_ncols=True)
            try:
                by_index = {td.index: td for td in todos}
                try:
                    _run(b, batches, by_index, n_workers, opts, old_catalog)
                except KeyboardInterrupt:
                    b.commit(old_catalog)  # keep what is done: the next build resumes from it
                    raise
                finally:
                    if b.bar is not None:
                        b.bar.close()
                b.commit(old_catalog)
            finally:
                b.cleanup()
        b.result.elapsed_s = time.perf_counter() - t_start
        errs = [r for r in b.done_rows if r["status"] == "error"]
        if errs:
            b.result.errors = b._rows_table(errs)
        else:
            b.result.errors = pa.schema(list(CATALOG_SCHEMA) + [pa.field(n, pa.string()) for n in extra_names]).empty_table()
    if on_error == "raise" and b.first_error is not None:
        raise CatalogError(f"ingest failed: {b.first_error}")
    return b.result


def _make_batches(todos: list[_Todo], per: int, max_bytes: int) -> list[list[_Todo]]:
    batches: list[list[_Todo]] = []
    cur: list[_Todo] = []
    acc = 0
    for td in todos:
        if cur and (len(cur) >= per or acc + td.size > max_bytes):
            batches.append(cur)
            cur, acc = [], 0
        cur.append(td)
        acc += td.size
    if cur:
        batches.append(cur)
    return batches


def _tasks(batch: list[_Todo]) -> list[_Task]:
    return [(td.index, os.fspath(td.path), td.image_id, td.reader, td.extras) for td in batch]


def _should_stop(b: _Builder) -> bool:
    return b.on_error == "raise" and b.first_error is not None


def _maybe_checkpoint(b: _Builder, old_catalog: pa.Table | None) -> None:
    images = b.out / IMAGES_NAME
    existing = images.stat().st_size if images.exists() else 0
    if b.staging.nbytes >= max(_CHECKPOINT_MIN_BYTES, existing):
        b.commit(old_catalog)


def _run(b: _Builder, batches: list[list[_Todo]], by_index: dict[int, _Todo], n_workers: int, opts: dict[str, Any], old_catalog: pa.Table | None) -> None:
    if n_workers <= 1:
        for seq, batch in enumerate(batches):
            if _should_stop(b):
                break
            outcomes, records = _process_batch(_tasks(batch), opts)
            b.handle(by_index, outcomes, records, seq)
            _maybe_checkpoint(b, old_catalog)
        return
    suspects: list[_Todo] = []
    opts = {**opts, "spool": b.spool}  # workers hand their records over in files
    ctx = _mp_context()
    if ctx.get_start_method() == "fork":
        _warm_imports()  # forked workers inherit them instead of each importing on first use
    completed = 0

    def suspect(seq: int, batch: list[_Todo]) -> None:
        # re-run one by one after the pool is done; their records come last
        suspects.extend(batch)
        b.staging.add(seq, None)

    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_init_worker)
    # Forked workers share the parent's memory copy-on-write; a garbage collection
    # in a worker would write to (and so copy) every page holding a parent object.
    # Frozen objects are left alone by the collector: freeze them for the fork,
    # which happens at the first submit, then let the parent collect them again.
    thaw = ctx.get_start_method() == "fork" and gc.get_freeze_count() == 0
    if thaw:
        gc.freeze()
    try:
        queue = list(reversed(list(enumerate(batches))))
        running: dict[Future[Any], tuple[int, list[_Todo]]] = {}
        broken = False
        while queue or running:
            while queue and not broken and not _should_stop(b) and len(running) < n_workers * 2:
                seq, batch = queue.pop()
                try:
                    running[pool.submit(_process_batch, _tasks(batch), opts)] = (seq, batch)
                except BrokenProcessPool:
                    broken = True
                    suspect(seq, batch)
                finally:
                    if thaw:  # the workers exist now
                        gc.unfreeze()
                        thaw = False
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: running[f][0]):
                seq, batch = running.pop(fut)
                try:
                    outcomes, records = fut.result()
                except BrokenProcessPool:
                    broken = True
                    suspect(seq, batch)
                    continue
                except Exception:  # noqa: BLE001 - e.g. a result that failed to travel back
                    suspect(seq, batch)
                    continue
                completed += 1
                b.handle(by_index, outcomes, records, seq)
            if broken:
                for seq, batch in reversed(queue):
                    suspect(seq, batch)
                queue = []
            _maybe_checkpoint(b, old_catalog)
    finally:
        if thaw:
            gc.unfreeze()
        pool.shutdown(wait=True, cancel_futures=True)
    if suspects and not _should_stop(b):
        if not completed:
            _probe_workers(ctx)
        _isolate(b, sorted(suspects, key=lambda td: td.index), by_index, opts, ctx)


def _warm_imports() -> None:
    import importlib

    for name in ("omeframe.registry", "omeframe.formats.dataset.ingest", "omeframe.engine.lazy", "tifffile", "zarr"):
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - optional readers
            pass


def _probe_workers(ctx: Any) -> None:
    """Raise when worker processes cannot even start (rather than blaming every file)."""
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker) as pool:
            pool.submit(_ping).result(timeout=120)
    except Exception as exc:  # noqa: BLE001
        raise CatalogError(
            f"catalog worker processes die at start-up ({type(exc).__name__}: {_one_line(exc)}); with "
            f"the {ctx.get_start_method()!r} start method a script needs an "
            "`if __name__ == '__main__':` guard; or pass workers=1"
        ) from exc


def _isolate(b: _Builder, todos: list[_Todo], by_index: dict[int, _Todo], opts: dict[str, Any], ctx: Any) -> None:
    """Re-run files of crashed workers one at a time; a crash marks just that file."""
    pool: ProcessPoolExecutor | None = None
    try:
        for td in todos:
            if _should_stop(b):
                break
            if pool is None:
                pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker)
            try:
                outcomes, records = pool.submit(_process_batch, _tasks([td]), opts).result()
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
                b.record(td, {"index": td.index, "status": "error", "error_type": "WorkerCrashed",
                              "error": "the worker process died while reading this file (crash in a reader or codec?)"})
                continue
            except Exception as exc:  # noqa: BLE001
                b.record(td, {"index": td.index, "status": "error", "error_type": type(exc).__name__,
                              "error": _one_line(exc)})
                continue
            b.handle(by_index, outcomes, records, None)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
