"""Build image catalogs from many files, in parallel, resumably: the orchestration.

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
  up to 16 per committed generation. With a ``timeout`` the streaming runs in
  a child process the parent kills when a group overruns its files' budget
  (a stalled or endlessly slow read cannot hang the build; a killed write
  leaves no committed generation); a failing batch is retried image by
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
  an ``ok`` row is skipped (an object-store input: its listed size,
  last-modified time and ETag, so an unchanged object is not read at all);
  a changed file is re-ingested under its old image id (its old record or
  dataset image is replaced); new files are appended.
* Records keep the native dtype; ``acquisition_datetime`` defaults to the
  file's mtime (deterministic, unlike the ingestion time).

Modules
-------
This module runs a build (:func:`build`: batches, the process pool, hand-over
of results, checkpoints, crash isolation). The other jobs live beside it:
:mod:`~omeframe.catalog.discover` (walking folders, file kinds, opening an
input, image ids and path columns), :mod:`~omeframe.catalog.worker` (what a
worker does with a batch), :mod:`~omeframe.catalog.commit` (the tables, their
atomic commits, the lock, :func:`read_catalog`),
:mod:`~omeframe.catalog.records` (file records and identity),
:mod:`~omeframe.catalog.objects` (inputs on an object store: one listing per
prefix, identity by ETag), :mod:`~omeframe.catalog.publish` (a catalog
written to a bucket: lock object, working copy, upload with the commit point
last) and :mod:`~omeframe.catalog.kinds` (file kinds).

Seams
-----
The steps a test or an instrumented run may replace (opening an input, the
process pool, the images writer, the catalog commit, the clock of
``ingested_at``, the checkpoint threshold) are the fields of :class:`Seams`,
passed to :func:`build_with` (``build`` is ``build_with`` with the default
seams). A replacement ``open_image`` must be picklable (a module-level
function) to reach worker processes.
"""


from __future__ import annotations

import contextlib
import functools
import gc
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.catalog.commit import (
    CATALOG_NAME,
    CATALOG_SCHEMA,
    CATALOG_VERSION,
    DATASET_NAME,
    IMAGES_NAME,
    LOCK_NAME,
    CatalogError,
    ImagesWriter,
    Lock,
    Records,
    Staging,
    conform,
    drop_dataset_images,
    holds_any,
    load_records,
    read_catalog,
    rewrite_images,
    unify,
    write_catalog,
)
from omeframe.catalog.discover import (
    EmptyImageIdError,
    close_source,
    detect_reader,
    discover,
    file_problem,
    image_id_for,
    open_image,
    path_columns,
)
from omeframe.catalog.distributed import client_pool, client_threads
from omeframe.catalog.objects import RemoteInput, identity_checksum, location_of, name_of
from omeframe.catalog.publish import RemoteCatalog, drop_remote_dataset_images
from omeframe.catalog.records import FILE_RECORD_SCHEMA, check_unread_changes, file_checksum, stat_path
from omeframe.catalog.worker import (
    OpenImage,
    Task,
    WorkerOptions,
    init_worker,
    one_line,
    ping,
    process_batch,
)
from omeframe.engine import progress as _progress
from omeframe.engine.codec import check_level, normalize_compression
from omeframe.engine.limits import get_max_bytes, set_max_bytes
from omeframe.formats.dataset.inputs import source_input
from omeframe.formats.dataset.writer import WriteOptions, write_items
from omeframe.formats.record.files import find_record_column
from omeframe.model.arrow import DEFAULT_COLUMN_NAME
from omeframe.model.checks import is_integer
from omeframe.model.errors import FileTimeoutError, NotRegularFileError, OmeframeError
from omeframe.model.header import normalize_chunk_shape
from omeframe.storage.url import local_path, parse_location

__all__ = [
    "build",
    "build_with",
    "Seams",
    "discover",
    "read_catalog",
    "open_image",
    "CatalogResult",
    "CatalogError",
    "CATALOG_SCHEMA",
    "CATALOG_VERSION",
    "LOCK_NAME",
]

_RESERVED = {
    "ome_arrow", "status", "location", "shape", "dtype", "error_type", "error",
    "ingested_at", "duration_s", *FILE_RECORD_SCHEMA.names,
}
_LARGE_BATCH_IMAGES = 16
_LARGE_BATCH_BYTES = 2 << 30

#: Makes the worker pool: ``(max_workers, mp_context) -> Executor``.
PoolFactory = Callable[[int, Any], Executor]


def process_pool(max_workers: int, mp_context: Any) -> ProcessPoolExecutor:
    """The default worker pool: processes started by ``mp_context``, set up by
    :func:`~omeframe.catalog.worker.init_worker`."""
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=mp_context, initializer=init_worker)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Seams:
    """The replaceable steps of a catalog build (see :func:`build_with`).

    Every field defaults to what :func:`build` uses; a test replaces one to
    inject slowness, failures or crashes at a documented point instead of
    patching module internals.

    Attributes
    ----------
    open_image
        ``(path, reader) -> LazySource``: opens an input, in the workers (to
        ingest it) and in the building process (to stream a large image into
        the dataset); ``path`` is a string, or for an object-store input the
        :class:`~omeframe.catalog.objects.RemoteInput`. It is pickled to
        worker processes: pass a module-level function.
    open_pool
        ``(max_workers, mp_context) -> Executor``: the worker pool of a build
        with ``workers > 1``, of the one-by-one re-runs after a crash and of
        the start-up probe. Its workers must run
        :func:`~omeframe.catalog.worker.init_worker` (or do what it does).
    open_images_writer
        Makes the :class:`~omeframe.catalog.commit.ImagesWriter` of each
        rewrite of ``images.parquet`` (same arguments; e.g. a
        ``functools.partial`` with ``row_group_bytes=``).
    write_catalog
        ``(path, table) -> None``: writes ``catalog.parquet``, the commit point.
    now
        The clock of the ``ingested_at`` column (an aware UTC datetime).
    checkpoint_min_bytes
        New records (bytes) that trigger a checkpoint commit during a build,
        at least (the size of ``images.parquet`` when that is larger).

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> fixed = Seams(now=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))
    >>> res = build_with("plates", "plates.catalog", seams=fixed, workers=1)  # doctest: +SKIP
    """

    open_image: OpenImage = open_image
    open_pool: PoolFactory = process_pool
    open_images_writer: Callable[..., ImagesWriter] = ImagesWriter
    write_catalog: Callable[[Path, pa.Table], None] = write_catalog
    now: Callable[[], datetime] = _utc_now
    checkpoint_min_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.checkpoint_min_bytes < 1:
            raise ValueError(f"checkpoint_min_bytes must be >= 1, got {self.checkpoint_min_bytes}")


@dataclass
class CatalogResult:
    """What :func:`build` did.

    ``out`` is the catalog directory, or the catalog's URL when it was built
    into a bucket (then the ``*_path`` properties are URLs too).
    """

    out: Path | str
    n_files: int = 0
    n_ingested: int = 0
    n_records: int = 0
    n_dataset: int = 0
    n_skipped: int = 0
    n_errors: int = 0
    elapsed_s: float = 0.0
    workers: int = 1
    errors: pa.Table = field(default_factory=lambda: CATALOG_SCHEMA.empty_table())
    storage_options: dict[str, Any] | None = field(default=None, repr=False)
    remote_parts: tuple[str, ...] = ()

    def _at(self, name: str) -> Path | str:
        return f"{self.out}/{name}" if isinstance(self.out, str) else self.out / name

    @property
    def images_path(self) -> Path | str:
        return self._at(IMAGES_NAME)

    @property
    def dataset_path(self) -> Path | str:
        return self._at(DATASET_NAME)

    @property
    def catalog_path(self) -> Path | str:
        return self._at(CATALOG_NAME)

    @property
    def paths(self) -> dict[str, Path | str]:
        """The tables that exist after the build."""
        names = {"images": IMAGES_NAME, "dataset": DATASET_NAME, "catalog": CATALOG_NAME}
        if isinstance(self.out, str):
            return {k: self._at(n) for k, n in names.items() if n in self.remote_parts}
        return {k: p for k, n in names.items() if Path(p := self._at(n)).exists()}

    @property
    def files_per_s(self) -> float:
        return (self.n_ingested + self.n_errors) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def catalog(self) -> pa.Table:
        """The whole ``catalog.parquet``."""
        return read_catalog(self.out, storage_options=self.storage_options)

    def summary(self) -> str:
        return (
            f"{self.n_ingested} ingested ({self.n_records} records in {IMAGES_NAME}, "
            f"{self.n_dataset} images in {DATASET_NAME}/), {self.n_skipped} unchanged skipped, "
            f"{self.n_errors} errors, in {self.elapsed_s:.1f} s ({self.files_per_s:.0f} files/s, "
            f"{self.workers} worker{'s' if self.workers != 1 else ''})"
        )


def mp_context() -> Any:
    """Start method of the worker processes.

    On Linux, ``fork``: workers start in milliseconds, inherit the imported
    modules and never re-run the caller's ``__main__`` (so scripts need no
    ``if __name__ == "__main__"`` guard); the thread pools restart in the
    child by themselves (:mod:`omeframe.engine.threads` registers an
    after-fork hook). From Python 3.12 on, forking a process whose other
    threads are alive (Arrow's or omeframe's pools, the caller's) is
    deprecated (it may copy a lock another thread holds), so there
    ``forkserver`` is used once more than one thread runs: a clean server
    process (omeframe imported) forks the workers, and a script then needs
    the ``__main__`` guard. Elsewhere ``spawn``. ``OMEFRAME_MP_START``
    overrides (``fork`` / ``forkserver`` / ``spawn``).
    """
    import sys

    method = os.environ.get("OMEFRAME_MP_START")
    if not method:
        if not sys.platform.startswith("linux"):
            method = "spawn"
        elif sys.version_info >= (3, 12) and _os_thread_count() > 1:
            method = "forkserver"
        else:
            method = "fork"
    if method not in mp.get_all_start_methods():
        raise ValueError(f"OMEFRAME_MP_START={method!r} is not available here: {mp.get_all_start_methods()}")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["omeframe.catalog.worker"])
    return ctx


def _os_thread_count() -> int:
    """Threads of this process as the OS counts them (C++ pools included); 2 when unknown."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2


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


@dataclass
class _Todo:
    index: int
    path: Path | RemoteInput
    reader: str
    image_id: str
    extras: tuple[Any, ...]
    size: int


class _Builder:
    """State of one :func:`build` call."""

    def __init__(self, out: Path, opts: WorkerOptions, seams: Seams, on_error: str,
                 remote: RemoteCatalog | None = None) -> None:
        self.out = out
        self.remote = remote
        self.opts = opts
        self.seams = seams
        self.extra_names = list(opts.extra_names)
        self.on_error = on_error
        self.staging = Staging(out, column_name=opts.column_name, compression=opts.compression,
                               open_writer=seams.open_images_writer)
        self.spool = os.fspath(out / f".pending-{uuid.uuid4().hex[:12]}-records")  # prefix of workers' record files
        self.done_rows: list[dict[str, Any]] = []  # catalog rows of this run
        self.large: list[tuple[_Todo, dict[str, Any]]] = []
        self.large_bytes = 0
        self.attempted: set[str] = set()
        self.committed_once = False
        self.commit_failed = False
        self.result = CatalogResult(out=out)
        self.first_error: str | None = None
        self.bar: _progress.Bar = _progress.bar(False, total=0, desc="ingest", unit="file")

    # ---- outcomes -----------------------------------------------------------
    def catalog_row(self, todo: _Todo, oc: dict[str, Any]) -> dict[str, Any]:
        f = oc.get("file") or {}
        row = {
            "image_id": todo.image_id,
            "urlpath": f.get("urlpath", _urlpath(todo.path)),
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
            "ingested_at": self.seams.now(),
            "duration_s": float(oc.get("duration_s") or 0.0),
            "_index": todo.index,
        }
        for name, v in zip(self.extra_names, todo.extras, strict=True):
            row[name] = v
        return row

    def handle(
        self, todos: dict[int, _Todo], outcomes: list[dict[str, Any]], records: Records, seq: int | None
    ) -> None:
        """Take in a finished batch: ``seq`` is its position in the batch list
        (``None`` for files re-run one by one after a worker crash).

        Ctrl-C waits until the batch is in: its records and its catalog rows go
        together (an ``ok`` row always has its record in the next commit).
        """
        with _sigint_deferred():
            self._handle(todos, outcomes, records, seq)

    def _handle(
        self, todos: dict[int, _Todo], outcomes: list[dict[str, Any]], records: Records, seq: int | None
    ) -> None:
        self.staging.add(seq, load_records(records))
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
        self.bar.update(1)
        set_postfix = getattr(self.bar, "set_postfix", None)  # tqdm's; a hidden bar has none
        if self.result.n_errors and set_postfix is not None:
            set_postfix(errors=self.result.n_errors, refresh=False)

    def flush_large(self) -> None:
        batch, self.large, self.large_bytes = self.large, [], 0
        if not batch:
            return
        root: Path | str = self.out / DATASET_NAME if self.remote is None else self.remote.dataset_url
        so = None if self.remote is None else self.remote.storage_options

        def write(group: list[tuple[_Todo, dict[str, Any]]]) -> None:
            specs = [(_task_path(td.path), td.reader, td.image_id, (oc.get("file") or {}).get("mtime"),
                      (oc.get("file") or {}).get("size")) for td, oc in group]
            _stream_large_guarded(specs, root, self.opts, so)

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
                took = (oc.get("duration_s") or 0) + time.perf_counter() - t1
                self.record(td, {**oc, "status": "ok", "duration_s": took})
            except Exception:  # noqa: BLE001
                self._large_failed(td, oc)

    def _large_failed(self, td: _Todo, oc: dict[str, Any]) -> None:
        import sys

        exc = sys.exc_info()[1]
        assert exc is not None
        self.record(td, {**oc, "status": "error", "error_type": type(exc).__name__, "error": one_line(exc)})

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
            if not self.staging.commit() and drop and images.exists() and holds_any(images, drop):
                rewrite_images(images, drop, None, column_name=self.opts.column_name,
                               compression=self.opts.compression, open_writer=self.seams.open_images_writer)
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
            schema = unify([p.schema for p in parts]).remove_metadata()
            self.seams.write_catalog(self.out / CATALOG_NAME, pa.concat_tables([conform(p, schema) for p in parts]))

    def _rows_table(self, rows: list[dict[str, Any]]) -> pa.Table:
        fields_ = list(CATALOG_SCHEMA) + [pa.field(n, pa.string()) for n in self.extra_names]
        cols = {}
        for f in fields_:
            vals = [r.get(f.name) for r in rows]
            cols[f.name] = pa.array(vals, f.type)
        return pa.table(cols, schema=pa.schema(fields_))



#: What :func:`_stream_large` appends: ``(path, reader, image_id, mtime_ns, size)`` of each file, as stat-ed
#: when its worker read its header.
LargeSpec = tuple[str | RemoteInput, str, str, int | None, int | None]


def _stream_large(specs: list[LargeSpec], root: str, opts: WorkerOptions,
                  storage_options: dict[str, Any] | None = None) -> None:
    """Append large images to the dataset at ``root`` (a path, or a URL with its ``storage_options``).

    Runs in the building process (``timeout=None``) or in a child process of
    it. Nothing is committed when a local file's size or mtime differ, once
    its pixels are read, from what its worker saw (a file still being
    written): :class:`~omeframe.model.errors.FileChangedError`.
    """

    def unchanged() -> None:
        for path, _, _, mtime, size in specs:
            if not isinstance(path, RemoteInput) and mtime is not None and size is not None:
                check_unread_changes(
                    path, size, mtime, "nothing was committed for it, and the next build reads it again")

    opened: list[Any] = []
    try:
        items = []
        for path, reader, image_id, mtime, _ in specs:
            src = opts.open_image(path, reader)
            opened.append(src)
            inp = source_input(src)
            h = replace(inp.header, image_id=image_id, name=name_of(path))
            if h.acquisition_datetime is None and mtime is not None:
                h = replace(h, acquisition_datetime=datetime.fromtimestamp(mtime / 1e9, tz=UTC))
            items.append((replace(inp, header=h), image_id, 0, None))
        write_items(items, root if parse_location(root) is not None else Path(root), WriteOptions(
            mode="append", chunk_shape=opts.chunk_shape, compression=opts.compression,
            compression_level=opts.compression_level, progress=False, storage_options=storage_options,
            before_commit=unchanged,
        ))
    finally:
        for src in opened:
            close_source(src)


def _init_streamer(max_bytes: int | None) -> None:
    """Initializer of the child that streams large images: the build's memory limit, Ctrl-C to the parent.

    Unlike a catalog worker it keeps the thread pool (the dataset writer encodes chunks in it).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if max_bytes is not None:
        set_max_bytes(max_bytes)


def _stream_large_guarded(
    specs: list[LargeSpec], root: Path | str, opts: WorkerOptions,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """:func:`_stream_large` under the per-file ``opts.timeout``.

    Without a timeout, in this process. With one, in a child process that is
    killed when the group takes longer than ``len(specs) * timeout`` plus a
    grace period (its reads stalled on a hung mount or crawl through a
    hostile file): :class:`FileTimeoutError`, and the dataset keeps its last
    committed generation (the killed write never committed; its litter is
    collected later). A child that dies raises ``BrokenProcessPool``.
    """
    if opts.timeout is None:
        _stream_large(specs, os.fspath(root), opts, storage_options)
        return
    limit = len(specs) * opts.timeout + _grace(opts.timeout)
    pool = ProcessPoolExecutor(max_workers=1, mp_context=mp_context(), initializer=_init_streamer,
                               initargs=(opts.max_bytes,))
    killed = False
    try:
        future = pool.submit(_stream_large, specs, os.fspath(root), opts, storage_options)
        try:
            future.result(timeout=limit)
        except FutureTimeout:
            _kill_workers(pool)
            killed = True
            names = ", ".join(repr(location_of(p)) for p, *_ in specs[:3]) + (" ..." if len(specs) > 3 else "")
            raise FileTimeoutError(
                f"{names}: streaming into the dataset took longer than timeout={opts.timeout} s per file; "
                "the writing process was killed and nothing of it was committed"
            ) from None
    finally:
        pool.shutdown(wait=not killed, cancel_futures=True)


#: Seconds one file may take in a catalog worker (``build(timeout=)``).
DEFAULT_TIMEOUT = 600.0
#: Extra seconds the building process grants a worker past ``timeout`` before it kills it.
_KILL_GRACE = 15.0

#: The dataset writer's option defaults: a catalog compresses records and chunks alike.
_WRITE_DEFAULTS = WriteOptions()


def _check_record_column(images: Path, column_name: str) -> None:
    """Refuse a build whose ``column_name`` differs from the record column of the catalog's ``images.parquet``.

    Records of another column would go into a second record column, each
    with nulls where the other has its rows.
    """
    if not images.is_file():
        return
    import pyarrow.parquet as pq

    try:
        found = find_record_column(pq.read_schema(images), None, source=repr(str(images)))
    except (OSError, pa.ArrowException, OmeframeError):
        return  # an unreadable images.parquet is reported (and rebuilt) where it is read
    if found != column_name:
        raise ValueError(
            f"this catalog stores its records in column {found!r} of {str(images)!r}, not {column_name!r}; "
            f"build it with column_name={found!r}, or into another folder"
        )


def build(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    layout: Literal["auto", "records", "dataset"] = "auto",
    workers: int | None = None,
    progress: bool | None = None,
    columns_from_path: str | re.Pattern[str] | None = None,
    on_error: Literal["collect", "raise"] = "collect",
    image_id_from: Literal["stem", "path"] | Callable[[Path], str] = "stem",
    max_record_bytes: int = 64 << 20,
    resume: bool = True,
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = _WRITE_DEFAULTS.compression,
    compression_level: int | None = _WRITE_DEFAULTS.compression_level,
    column_name: str = DEFAULT_COLUMN_NAME,
    batch_size: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    client: Any = None,
    storage_options: Mapping[str, Any] | None = None,
) -> CatalogResult:
    """Ingest many image files into the catalog directory ``out`` (created or appended).

    Parameters
    ----------
    sources
        A directory, a glob pattern, a file, or a list of them (see :func:`discover`);
        each may be an object-store URL (``s3://bucket/plates/``,
        ``s3://bucket/plates/**/*.tif``, ``memory://`` ...): the prefix is
        listed once and each object read by ranged requests; its ``urlpath``
        is the URL, and its identity the listed size, last-modified time and
        ETag (see :mod:`omeframe.catalog.objects`).
    out
        Catalog directory: ``images.parquet`` (small images as OME-Arrow
        records plus extra columns), ``dataset/`` (large images, chunked) and
        ``catalog.parquet`` (one row per file, including errors). A local
        path, or a URL (``s3://bucket/plates.catalog``): then the build
        runs in a local working copy and publishes to the bucket under a
        lock object (see :mod:`omeframe.catalog.publish`).
    layout
        ``"auto"``: images up to ``max_record_bytes`` (decoded) become records,
        larger ones go to the dataset; ``"records"`` / ``"dataset"``: all of them.
    workers
        Worker processes (default: CPU count). ``1`` ingests in this process.
    progress
        A progress bar (files done, errors so far): ``True`` always, ``False``
        never, ``None`` (default) only when standard error is an interactive
        terminal (never in logs, pipes or CI; see :mod:`omeframe.engine.progress`).
    columns_from_path
        A regex with named groups matched (``re.search``) against each file's
        absolute path (an object's URL); every group becomes a string column of both tables
        (``None`` where it does not match), e.g.
        ``r"(?P<plate>P\\d+)_(?P<well>[A-H]\\d+)"``.
    on_error
        ``"collect"`` (default): a failing file gets a ``status='error'`` row and
        the build goes on. ``"raise"``: stop at the first failure, commit what
        succeeded, then raise :class:`CatalogError`.
    image_id_from
        ``"stem"`` (file name without its image suffix; clashes get ``-<hash>``
        appended), ``"path"`` (the absolute path; an object's URL) or a callable
        ``Path -> str`` (given the URL string for an object-store input).
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
    timeout
        Seconds one file may take in a worker (default 600; ``None``: no
        limit). A file past it gets a ``FileTimeoutError`` row; a worker that
        does not give up by itself is killed and replaced. Large images are
        streamed into ``dataset/`` by a child process under the same budget
        per file: one whose reads stall is killed with its write uncommitted,
        the image gets a ``FileTimeoutError`` row and the others are written. Workers also apply
        the memory limit (:func:`omeframe.set_max_bytes`) of this process.
        FIFOs, devices, sockets and symlink loops get a
        ``NotRegularFileError`` row without being opened.
    client
        A ``dask.distributed.Client``: the per-file work runs on its cluster
        (``workers`` defaults to its thread count) with the same row order,
        checkpoints and resumability; its workers must see ``sources`` and
        ``out`` under the same paths (see :mod:`omeframe.catalog.distributed`).
    storage_options
        Options of the object stores' filesystem for URL ``sources`` and
        ``out`` (credentials, ``endpoint_url`` ...), as in
        :func:`omeframe.open_table`; they travel with each input to the
        workers, so they must pickle.

    Returns
    -------
    CatalogResult
        Counts, timing, output paths and this run's error rows.

    Raises
    ------
    ValueError
        For an invalid option (checked before any file is listed or read:
        ``chunk_shape``, ``compression``, ``compression_level``,
        ``batch_size``, a ``columns_from_path`` that does not compile ...),
        when ``sources`` name no image file, or when an ``image_id_from``
        callable returns an empty id (the message names the file).
    TypeError
        For an option of the wrong type (``columns_from_path=5``, a
        ``client`` that is no ``dask.distributed.Client``, an
        ``image_id_from`` callable returning a non-string ...).
    FileNotFoundError
        When the bucket of a URL source does not exist.
    RemoteStorageError
        When listing a URL source is refused (credentials) or keeps failing.
    CatalogError
        When another process (another build, for a catalog in a bucket) is
        writing the catalog, when two files get the
        same image id, or (``on_error="raise"``) after the first failing file.

    Examples
    --------
    >>> res = build("plates", "plates.catalog", workers=2,               # doctest: +SKIP
    ...             columns_from_path=r"(?P<plate>P\\d+)_(?P<well>[A-H]\\d+)")
    >>> print(res.summary())                                            # doctest: +SKIP
    7 ingested (6 records in images.parquet, 1 images in dataset/), 0 unchanged skipped, ...
    >>> res = build("s3://bucket/plates/", "plates.catalog",              # doctest: +SKIP
    ...             storage_options={"endpoint_url": "http://127.0.0.1:9000"})
    """
    seams = _DEFAULT_SEAMS
    if client is not None and not all(
        callable(getattr(client, a, None)) for a in ("run", "scheduler_info", "get_executor")
    ):
        raise TypeError(
            f"client must be a dask.distributed.Client (or None for a local build), got a {type(client).__name__}"
        )
    if client is not None:
        seams = replace(seams, open_pool=functools.partial(client_pool, client))
        # at least 2: one "worker" would ingest in this process instead of on the cluster
        workers = workers or max(2, client_threads(client))
    return build_with(
        sources, out, seams=seams, layout=layout, workers=workers, progress=progress,
        columns_from_path=columns_from_path, on_error=on_error, image_id_from=image_id_from,
        max_record_bytes=max_record_bytes, resume=resume, chunk_shape=chunk_shape,
        compression=compression, compression_level=compression_level, column_name=column_name,
        batch_size=batch_size, timeout=timeout, storage_options=storage_options,
    )


_DEFAULT_SEAMS = Seams()


def build_with(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    seams: Seams,
    layout: Literal["auto", "records", "dataset"] = "auto",
    workers: int | None = None,
    progress: bool | None = None,
    columns_from_path: str | re.Pattern[str] | None = None,
    on_error: Literal["collect", "raise"] = "collect",
    image_id_from: Literal["stem", "path"] | Callable[[Path], str] = "stem",
    max_record_bytes: int = 64 << 20,
    resume: bool = True,
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = _WRITE_DEFAULTS.compression,
    compression_level: int | None = _WRITE_DEFAULTS.compression_level,
    column_name: str = DEFAULT_COLUMN_NAME,
    batch_size: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    storage_options: Mapping[str, Any] | None = None,
) -> CatalogResult:
    """:func:`build` with the replaceable steps ``seams`` (see :class:`Seams`).

    The other parameters, the result and the errors are those of :func:`build`.
    Meant for tests and instrumented runs: inject a slow, failing or crashing
    reader, a different pool or images writer, a failing catalog commit, a
    fixed clock or a small checkpoint threshold.

    Examples
    --------
    >>> slow = Seams(checkpoint_min_bytes=1)   # commit after every batch
    >>> res = build_with("plates", "plates.catalog", seams=slow, workers=1)  # doctest: +SKIP
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
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    regex = _path_regex(columns_from_path)
    chunk_shape = _check_chunk_shape(chunk_shape)
    _check_codec(compression, compression_level)
    if batch_size is not None:
        if not is_integer(batch_size):
            raise TypeError(
                f"batch_size must be an integer >= 1 (files per worker task) or None to size it from the file "
                f"count, got {type(batch_size).__name__} {batch_size!r}"
            )
        if batch_size < 1:
            raise ValueError(
                f"batch_size must be >= 1 (files per worker task) or None to size it from the file count, "
                f"got {batch_size}"
            )
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
    _progress.wanted(progress)  # a TypeError now for anything but True, False or None

    out_loc = parse_location(out)
    rc: RemoteCatalog | None = None
    if out_loc is not None:  # a catalog in a bucket: built in a local working copy, published (publish.py)
        rc = RemoteCatalog(out_loc.url, dict(storage_options or {}))
        sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
        urls_in = any(parse_location(s) is not None for s in sources)  # else the options are the output's
        files = [f for f in discover(sources, storage_options=storage_options if urls_in else None)
                 if not (isinstance(f, RemoteInput) and (f.url + "/").startswith(rc.url + "/"))]
        out_p = Path(tempfile.mkdtemp(prefix="omeframe-catalog-"))
        seams = replace(seams, write_catalog=rc.write_catalog(seams.write_catalog, out_p))
    else:
        out_p = local_path(out)
        if out_p.exists() and not out_p.is_dir():
            raise ValueError(f"catalog output {str(out_p)!r} exists and is not a directory")
        files = discover(sources, exclude=out_p, storage_options=storage_options)
        out_p.mkdir(parents=True, exist_ok=True)

    if workers is None:
        workers = max(1, os.cpu_count() or 1)
    opts = WorkerOptions(
        layout=layout,
        max_record_bytes=int(max_record_bytes),
        chunk_shape=chunk_shape,
        compression=compression,
        compression_level=compression_level,
        column_name=column_name,
        extra_names=tuple(extra_names),
        open_image=seams.open_image,
        timeout=None if timeout is None else float(timeout),
        max_bytes=get_max_bytes(),
    )

    with _held(out_p, rc):
        for stale in out_p.glob(".pending-*"):  # records and temporary files of a crashed build
            if stale.is_file():
                stale.unlink(missing_ok=True)
        old_catalog = read_catalog(out_p) if (out_p / CATALOG_NAME).is_file() else None
        _check_record_column(out_p / IMAGES_NAME, column_name)
        old_by_path: dict[str, dict[str, Any]] = {}
        used_ids: dict[str, str] = {}  # image_id -> urlpath
        if old_catalog is not None:
            t = old_catalog.select(["urlpath", "size", "mtime", "checksum", "status", "image_id"])
            # integer nanoseconds: exact, and to_pylist() needs no pandas
            t = t.set_column(t.schema.get_field_index("mtime"), "mtime", t["mtime"].cast(pa.int64()))
            for r in t.to_pylist():
                old_by_path[r["urlpath"]] = r
                if r["image_id"]:
                    used_ids[r["image_id"]] = r["urlpath"]

        b = _Builder(out_p, opts, seams, on_error, rc)
        todos: list[_Todo] = []
        refused: list[tuple[_Todo, NotRegularFileError]] = []  # never opened: error rows right away

        def assign_id(p: Path | RemoteInput, old: dict[str, Any] | None, urlpath: str) -> str:
            """The file's image id: kept from the previous build, else derived and made unique."""
            if old is not None and old.get("image_id"):
                iid = str(old["image_id"])
            else:
                try:
                    iid = image_id_for(p, image_id_from, used_ids)
                except EmptyImageIdError:
                    raise  # a bad image_id_from, not a clash of ids
                except ValueError as exc:
                    raise CatalogError(str(exc)) from None
            used_ids[iid] = urlpath
            return iid

        for p in files:
            urlpath = location_of(p)  # discover() returns absolute paths and URLs
            old = old_by_path.get(urlpath)
            size = 0
            if isinstance(p, RemoteInput):
                if resume and _unchanged_object(p, old):
                    b.result.n_skipped += 1
                    continue
                iid = assign_id(p, old, urlpath)
                todos.append(_Todo(len(todos) + len(refused), p, p.reader, iid, path_columns(regex, urlpath),
                                   p.size or 0))
                b.attempted.add(urlpath)
                continue
            problem = file_problem(p)
            if problem is not None:
                iid = assign_id(p, old, urlpath)
                refused.append((_Todo(len(todos) + len(refused), p, detect_reader(p, is_dir=False), iid,
                                      path_columns(regex, urlpath), 0), problem))
                b.attempted.add(urlpath)
                continue
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
            iid = assign_id(p, old, urlpath)
            todos.append(_Todo(len(todos) + len(refused), p, detect_reader(p), iid, path_columns(regex, urlpath), size))
            b.attempted.add(urlpath)

        b.result.n_files = len(files)
        b.staging.drop = set(b.attempted)  # the first commit replaces the old rows of these files
        for td, problem in refused:
            b.record(td, {"index": td.index, "status": "error", "error_type": type(problem).__name__,
                          "error": one_line(problem)})
        if refused and not todos:
            try:
                b.commit(old_catalog)
            finally:
                b.cleanup()

        if todos:
            # Images of re-ingested files (or left by a crashed run) are replaced, not duplicated.
            if rc is None:
                drop_dataset_images(out_p / DATASET_NAME, {td.image_id for td in todos})
            else:
                drop_remote_dataset_images(rc.dataset_url, rc.storage_options, {td.image_id for td in todos})
            if batch_size is None:  # ~16 tasks per worker for balance, <= 32 files for progress
                per = max(1, min(32, len(todos) // (workers * 16) or 1))
            else:
                per = int(batch_size)
            batches = _make_batches(todos, per, 64 << 20)
            n_workers = min(workers, len(batches))
            b.result.workers = n_workers
            b.bar = _progress.bar(progress, total=len(todos), desc="ingest", unit="file")
            try:
                by_index = {td.index: td for td in todos}
                try:
                    _run(b, batches, by_index, n_workers, old_catalog)
                except KeyboardInterrupt:
                    b.commit(old_catalog)  # keep what is done: the next build resumes from it
                    raise
                finally:
                    b.bar.close()
                b.commit(old_catalog)
            finally:
                b.cleanup()
        b.result.elapsed_s = time.perf_counter() - t_start
        errs = [r for r in b.done_rows if r["status"] == "error"]
        if errs:
            b.result.errors = b._rows_table(errs)
        else:
            errors_schema = pa.schema(list(CATALOG_SCHEMA) + [pa.field(n, pa.string()) for n in extra_names])
            b.result.errors = errors_schema.empty_table()
    if rc is not None:
        b.result.out = rc.url
        b.result.storage_options = rc.storage_options
        b.result.remote_parts = tuple(sorted(rc.published | ({DATASET_NAME} if rc.store.list(DATASET_NAME) else set())))
    if on_error == "raise" and b.first_error is not None:
        raise CatalogError(f"ingest failed: {b.first_error}")
    return b.result


def _path_regex(columns_from_path: Any) -> re.Pattern[str] | None:
    """``columns_from_path`` compiled (``None`` stays ``None``).

    Raises
    ------
    TypeError
        For anything but a string, a compiled ``str`` pattern or ``None``.
    ValueError
        For a string that is no valid regular expression.
    """
    if columns_from_path is None:
        return None
    if isinstance(columns_from_path, re.Pattern) and isinstance(columns_from_path.pattern, str):
        return columns_from_path
    if not isinstance(columns_from_path, str):
        raise TypeError(
            f"columns_from_path must be a regular expression (a string or a compiled str pattern) with named "
            rf"groups, like r'(?P<plate>P\d+)', or None; got {type(columns_from_path).__name__} "
            f"{columns_from_path!r}"
        )
    try:
        return re.compile(columns_from_path)
    except re.error as exc:
        raise ValueError(
            f"columns_from_path {columns_from_path!r} is not a valid regular expression ({exc}); fix the "
            r"pattern, e.g. r'(?P<plate>P\d+)_(?P<well>[A-H]\d+)'"
        ) from None


def _check_chunk_shape(chunk_shape: Any) -> tuple[int, int, int] | None:
    """``chunk_shape`` as three positive integers, checked as the writers check it (``None`` stays ``None``)."""
    if chunk_shape is None:
        return None
    if isinstance(chunk_shape, (str, bytes)):
        raise ValueError(f"chunk_shape must be three positive integers (Z, Y, X), got {chunk_shape!r}")
    big = 1 << 62  # no clipping: only the check
    return normalize_chunk_shape(chunk_shape, big, big, big)


def _check_codec(compression: Any, compression_level: Any) -> None:
    """Refuse a compression or level the records and dataset writers would fail on, before any file is read.

    The writers' own checks (:func:`~omeframe.engine.codec.normalize_compression`,
    :func:`~omeframe.engine.codec.check_level`), run once here instead of
    failing in every file.

    Raises
    ------
    TypeError
        For a level that is not an integer.
    ValueError
        For an unknown codec, or a level where it cannot apply or outside the codec's range.
    """
    check_level(normalize_compression(compression), compression_level)


@contextlib.contextmanager
def _held(work: Path, rc: RemoteCatalog | None) -> Iterator[None]:
    """The build's locks: the directory's lock file, and for a catalog in a bucket its lock
    object, with the working copy pulled into ``work`` (removed afterwards)."""
    try:
        with contextlib.ExitStack() as stack:
            if rc is not None:
                stack.enter_context(rc.locked())
                rc.pull(work)
            stack.enter_context(Lock(work))
            yield
    finally:
        if rc is not None:
            shutil.rmtree(work, ignore_errors=True)


def _unchanged_object(item: RemoteInput, old: dict[str, Any] | None) -> bool:
    """Whether object-store input ``item`` is the one an ``ok`` row ``old`` recorded.

    Size and last-modified time from the listing, then the checksum: the
    ETag (or store listing hash) costs nothing, the edge checksum of an
    object without an ETag costs one or two ranged reads (as for a local file).
    """
    if old is None or old["status"] != "ok" or not item.exists:
        return False
    if old["size"] != item.size or old["mtime"] != item.mtime:
        return False
    try:
        return bool(old["checksum"] == identity_checksum(item))
    except OSError:  # gone, or unreadable now: the worker reports it
        return False


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


def _task_path(path: Path | RemoteInput) -> str | RemoteInput:
    """What a worker gets for an input: the path as a string, or the object-store input itself."""
    return path if isinstance(path, RemoteInput) else os.fspath(path)


def _urlpath(path: Path | RemoteInput) -> str:
    """The ``urlpath`` of an input: its URL, or its absolute POSIX path."""
    return path.url if isinstance(path, RemoteInput) else Path(os.path.abspath(path)).as_posix()


def _tasks(batch: list[_Todo]) -> list[Task]:
    return [(td.index, _task_path(td.path), td.image_id, td.reader, td.extras) for td in batch]


def _should_stop(b: _Builder) -> bool:
    return b.on_error == "raise" and b.first_error is not None


def _maybe_checkpoint(b: _Builder, old_catalog: pa.Table | None) -> None:
    images = b.out / IMAGES_NAME
    existing = images.stat().st_size if images.exists() else 0
    if b.staging.nbytes >= max(b.seams.checkpoint_min_bytes, existing):
        b.commit(old_catalog)


def _run(b: _Builder, batches: list[list[_Todo]], by_index: dict[int, _Todo], n_workers: int,
         old_catalog: pa.Table | None) -> None:
    if n_workers <= 1:
        for seq, batch in enumerate(batches):
            if _should_stop(b):
                break
            outcomes, records = process_batch(_tasks(batch), b.opts)
            b.handle(by_index, outcomes, records, seq)
            _maybe_checkpoint(b, old_catalog)
        return
    suspects: list[_Todo] = []
    opts = replace(b.opts, spool=b.spool)  # workers hand their records over in files
    ctx = mp_context()
    if ctx.get_start_method() == "fork":
        _warm_imports()  # forked workers inherit them instead of each importing on first use
    completed = 0

    def suspect(seq: int, batch: list[_Todo]) -> None:
        # re-run one by one after the pool is done; their records come last
        suspects.extend(batch)
        b.staging.add(seq, None)

    pool = b.seams.open_pool(n_workers, ctx)
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
        started: dict[Future[Any], float] = {}  # when a future was first seen running
        broken = False
        while queue or running:
            while queue and not broken and not _should_stop(b) and len(running) < n_workers * 2:
                seq, batch = queue.pop()
                try:
                    running[pool.submit(process_batch, _tasks(batch), opts)] = (seq, batch)
                except BrokenProcessPool:
                    broken = True
                    suspect(seq, batch)
                finally:
                    if thaw:  # the workers exist now
                        gc.unfreeze()
                        thaw = False
            if not running:
                break
            done, _ = wait(running, timeout=None if opts.timeout is None else 1.0, return_when=FIRST_COMPLETED)
            if not done and opts.timeout is not None and _overdue(running, started, opts.timeout):
                # A worker ignores its own timer (stuck in C code): kill the pool; its
                # batches are re-run file by file below, each under a hard limit.
                _kill_workers(pool)
                continue
            for fut in sorted(done, key=lambda f: running[f][0]):
                seq, batch = running.pop(fut)
                started.pop(fut, None)
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
            _probe_workers(b.seams, ctx)
        _isolate(b, sorted(suspects, key=lambda td: td.index), by_index, opts, ctx)


def _overdue(running: dict[Future[Any], tuple[int, list[_Todo]]], started: dict[Future[Any], float],
             timeout: float) -> bool:
    """Whether a running batch has had more than its files' time budget (plus a grace period).

    A future counts from when it is first seen running; it may still wait in
    the pool's call queue behind one other batch then, so each gets twice its budget.
    """
    now = time.monotonic()
    for fut, (_, batch) in running.items():
        if fut.running():
            t0 = started.setdefault(fut, now)
            if now - t0 > 2 * len(batch) * (timeout + _grace(timeout)):
                return True
    return False


def _grace(timeout: float) -> float:
    """Seconds past ``timeout`` before a worker is killed: its own timer should fire first."""
    return max(1.0, min(_KILL_GRACE, timeout))


def _kill_workers(pool: Executor) -> None:
    """Kill the worker processes of ``pool`` (a ``ProcessPoolExecutor``); the pool then breaks."""
    procs = getattr(pool, "_processes", None) or {}
    for proc in list(procs.values()):
        with contextlib.suppress(Exception):
            proc.kill()


def _warm_imports() -> None:
    import importlib

    for name in ("omeframe.registry", "omeframe.formats.dataset.ingest", "omeframe.engine.lazy", "tifffile", "zarr"):
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - optional readers
            pass


def _probe_workers(seams: Seams, ctx: Any) -> None:
    """Raise when worker processes cannot even start (rather than blaming every file)."""
    try:
        with seams.open_pool(1, ctx) as pool:
            pool.submit(ping).result(timeout=120)
    except Exception as exc:  # noqa: BLE001
        raise CatalogError(
            f"catalog worker processes die at start-up ({type(exc).__name__}: {one_line(exc)}); with "
            f"the {ctx.get_start_method()!r} start method a script needs an "
            "`if __name__ == '__main__':` guard; or pass workers=1"
        ) from exc


def _isolate(b: _Builder, todos: list[_Todo], by_index: dict[int, _Todo], opts: WorkerOptions, ctx: Any) -> None:
    """Re-run files of crashed workers one at a time; a crash marks just that file."""
    pool: Executor | None = None
    try:
        for td in todos:
            if _should_stop(b):
                break
            if pool is None:
                pool = b.seams.open_pool(1, ctx)
            limit = None if opts.timeout is None else opts.timeout + _grace(opts.timeout)
            try:
                outcomes, records = pool.submit(process_batch, _tasks([td]), opts).result(timeout=limit)
            except FutureTimeout:
                _kill_workers(pool)
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
                exc = FileTimeoutError(
                    f"{_urlpath(td.path)!r}: reading it took longer than timeout={opts.timeout} s; "
                    "the worker was killed and replaced"
                )
                b.record(td, {"index": td.index, "status": "error", "error_type": type(exc).__name__,
                              "error": one_line(exc)})
                continue
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
                b.record(td, {"index": td.index, "status": "error", "error_type": "WorkerCrashed",
                              "error": "the worker process died while reading this file (crash in a reader or codec?)"})
                continue
            except Exception as exc:  # noqa: BLE001
                b.record(td, {"index": td.index, "status": "error", "error_type": type(exc).__name__,
                              "error": one_line(exc)})
                continue
            b.handle(by_index, outcomes, records, None)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
