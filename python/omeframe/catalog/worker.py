"""What a catalog worker does with one batch of files.

:func:`process_batch` runs in a worker process (or in the building process
when ``workers=1``). For each file it stats and checksums it (the file
record), opens it, and for a small image encodes its OME-Arrow record; a
large image is only measured and reported back (the parent streams it into
the dataset). A failing file never stops the batch: its outcome carries the
error. The batch's records come back as a table, or, from a worker process,
as the path of an Arrow IPC stream file in the catalog directory (cheaper to
hand over than megabytes pickled through a pipe).

Everything a worker needs travels in a :class:`WorkerOptions` (picklable:
plain values plus the ``open_image`` step, a module-level function).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.catalog.commit import DATASET_NAME, IMAGES_NAME, Records
from omeframe.catalog.discover import close_source, open_image
from omeframe.catalog.objects import RemoteInput, identity_checksum, location_of, name_of
from omeframe.catalog.records import FILE_RECORD_SCHEMA, FileRecord, check_unread_changes
from omeframe.engine import threads as _threads
from omeframe.engine.lazy import LazyImage
from omeframe.engine.limits import set_max_bytes
from omeframe.engine.source import HeaderOptions
from omeframe.formats.record.builder import RecordBuilder
from omeframe.model.errors import CorruptFileError, FileTimeoutError

__all__ = ["Task", "WorkerOptions", "process_batch", "init_worker", "one_line", "ping"]

#: One file of a batch: ``(index, path, image_id, reader, path-column values)``; the
#: path is a string, or the :class:`~omeframe.catalog.objects.RemoteInput` of an object.
Task = tuple[int, str | RemoteInput, str, str, tuple[Any, ...]]

#: What a worker does to open an input: ``(path, reader) -> LazySource``.
OpenImage = Callable[[Any, str | None], Any]


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker ingests its files (the build's options that matter there).

    Attributes
    ----------
    layout
        ``"auto"``, ``"records"`` or ``"dataset"`` (see :func:`omeframe.catalog.build`).
    max_record_bytes
        Largest decoded image that becomes a record with ``layout="auto"``.
    chunk_shape
        ``(Z, Y, X)`` chunk shape of records (``None``: (1, 512, 512)).
    compression, compression_level
        Per-chunk codec of the records.
    column_name
        OME-Arrow column of the records table.
    extra_names
        Names of the path-derived columns (the last element of each :data:`Task`).
    spool
        Path prefix of the IPC files a worker process hands its records over
        in; ``None``: return the table itself (same process).
    open_image
        Opens one input (:func:`omeframe.catalog.discover.open_image`, or a
        replacement injected through :class:`omeframe.catalog.build.Seams`).
    timeout
        Seconds one file may take (``None``: no limit); past it the file gets a
        :class:`~omeframe.model.errors.FileTimeoutError` row.
    max_bytes
        The memory limit (:func:`omeframe.set_max_bytes`) a worker process applies.
    """

    layout: Literal["auto", "records", "dataset"] = "auto"
    max_record_bytes: int = 64 << 20
    chunk_shape: tuple[int, int, int] | None = None
    compression: str | None = "zstd"
    compression_level: int | None = 3
    column_name: str = "ome_arrow"
    extra_names: tuple[str, ...] = ()
    spool: str | None = None
    open_image: OpenImage = open_image
    timeout: float | None = None
    max_bytes: int | None = None


def init_worker() -> None:
    """Initializer of a catalog worker process: one thread (one process per core), and
    Ctrl-C left to the parent.

    The thread pool of a forked worker needs no reset here: :mod:`omeframe.engine.threads`
    forgets the parent's pool and helper threads after every fork (``os.register_at_fork``).
    """
    _threads.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def ping() -> int:
    """A task that only proves a worker process starts (its pid)."""
    return os.getpid()


def one_line(exc: BaseException) -> str:
    """An exception's message on one line of at most 500 characters."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= 500 else msg[:497] + "..."


class _QuietReaders:
    """Readers' own log lines about bad files (tifffile's "invalid offset ...") are
    noise here: the failure is recorded in the file's error row instead."""

    _NAMES = ("tifffile", "zarr", "numcodecs")

    def __enter__(self) -> None:
        self._saved = []
        for name in self._NAMES:
            lg = logging.getLogger(name)
            self._saved.append((lg, lg.level))
            lg.setLevel(max(lg.level, logging.ERROR + 1))

    def __exit__(self, *exc: object) -> None:
        for lg, level in self._saved:
            lg.setLevel(level)


def process_batch(tasks: list[Task], opts: WorkerOptions) -> tuple[list[dict[str, Any]], Records]:
    """Ingest a batch of files: per-file outcomes and the batch's records.

    Parameters
    ----------
    tasks
        The files, in file order.
    opts
        How to ingest them.

    Returns
    -------
    outcomes
        One dict per task: ``index``, ``status`` (``"ok"``: a record;
        ``"large"``: for the dataset; ``"error"``), ``file`` (the file record),
        ``shape``, ``dtype``, ``location``, ``error_type``, ``error``, ``duration_s``.
    records
        The records of the ``ok`` files (a table, or the path of the IPC file
        holding it when ``opts.spool`` is set), ``None`` when there are none.
    """
    with _QuietReaders():
        return _process_batch(tasks, opts)


#: Largest ratio of declared (decoded) image bytes to stored file bytes accepted
#: for an image: far beyond what any codec reaches on real data (all-zero
#: zstd tiles stay below it), so only a header that lies is refused.
MAX_EXPANSION = 1 << 20


@contextlib.contextmanager
def _time_budget(seconds: float | None, path: str) -> Iterator[None]:
    """Raise :class:`FileTimeoutError` in this (main) thread after ``seconds``.

    A ``SIGALRM`` timer: it interrupts blocking system calls and Python code.
    Outside the main thread, or without ``SIGALRM``, it does nothing: the
    building process then enforces the limit by replacing the worker.
    """
    usable = (
        seconds is not None and hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise FileTimeoutError(f"{path!r}: reading it took longer than timeout={seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))  # type: ignore[arg-type]
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _process_batch(tasks: list[Task], opts: WorkerOptions) -> tuple[list[dict[str, Any]], Records]:
    if opts.max_bytes is not None and opts.spool is not None:  # a worker process: the build's limit
        set_max_bytes(opts.max_bytes)
    outcomes: list[dict[str, Any]] = []
    arrays: list[pa.Array] = []
    rows: list[int] = []
    for index, path, image_id, reader, _extras in tasks:
        t0 = time.perf_counter()
        oc: dict[str, Any] = {"index": index, "status": "error", "file": None}
        try:
            with _time_budget(opts.timeout, location_of(path)):
                _ingest_one(path, image_id, reader, opts, oc, arrays, rows, index)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            oc["status"], oc["location"] = "error", None
            oc["error_type"] = type(exc).__name__
            oc["error"] = one_line(exc)
            if rows and rows[-1] == index:  # its record was built before the time ran out
                rows.pop()
                arrays.pop()
        finally:
            src = oc.pop("_src", None)
            if src is not None:
                close_source(src)
        oc["duration_s"] = time.perf_counter() - t0
        outcomes.append(oc)
    records: Records = None
    if arrays:
        by_index = {oc["index"]: oc for oc in outcomes}
        in_rows = set(rows)
        try:
            records = _records_table(arrays, [by_index[i] for i in rows], [t for t in tasks if t[0] in in_rows], opts)
        except Exception as exc:  # noqa: BLE001 - should not happen; never lose the batch silently
            for i in rows:
                by_index[i].update(status="error", location=None, error_type=type(exc).__name__,
                                   error=f"could not assemble the record: {one_line(exc)}")
    return outcomes, records


def _file_record(path: str | RemoteInput, reader: str, image_id: str) -> FileRecord:
    """The file record of an input: a local file is stat-ed and checksummed; an object
    keeps what its listing said (its checksum read only when the store gives no ETag)."""
    if not isinstance(path, RemoteInput):
        return FileRecord.from_path(path, reader=reader, image_id=image_id)
    if path.size is None:
        raise FileNotFoundError(f"{path.url!r}: no such object (not in the listing of its folder)")
    return FileRecord(urlpath=path.url, size=path.size, mtime=path.mtime, checksum=identity_checksum(path),
                      reader=reader, image_id=image_id)


def _ingest_one(
    path: str | RemoteInput, image_id: str, reader: str, opts: WorkerOptions, oc: dict[str, Any],
    arrays: list[pa.Array], rows: list[int], index: int,
) -> None:
    """Stat, checksum, open and (small images) encode one file; fills ``oc`` in place."""
    rec = _file_record(path, reader, image_id)
    oc["file"] = rec.to_record()
    src = oc["_src"] = opts.open_image(path, reader)
    shape = tuple(int(s) for s in src.shape)
    dtype = np.dtype(src.dtype)
    oc["shape"], oc["dtype"] = list(shape), str(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max(1, rec.size) * MAX_EXPANSION:
        raise CorruptFileError(
            f"{location_of(path)!r} declares a {'x'.join(map(str, shape))} {dtype} image ({nbytes:,} bytes) "
            f"in a file of {rec.size:,} bytes: more than any codec can expand to; its header is damaged"
        )
    small = opts.layout == "records" or (opts.layout == "auto" and nbytes <= opts.max_record_bytes)
    if small:
        header = HeaderOptions(image_id=image_id, name=name_of(path)).header(src)
        if header.acquisition_datetime is None:
            header = replace(header, acquisition_datetime=rec.mtime_datetime)
        pixels = LazyImage(src).execute()
        if not isinstance(path, RemoteInput):
            check_unread_changes(path, rec.size, rec.mtime, "its row is an error, so the next build reads it again")
        builder = RecordBuilder(
            chunk_encoding="bytes",
            compression=opts.compression,
            compression_level=opts.compression_level,
            chunk_shape=opts.chunk_shape or (1, 512, 512),
        )
        builder.add(pixels, header)
        arrays.append(builder.build())
        rows.append(index)
        oc["status"], oc["location"] = "ok", IMAGES_NAME
    else:
        oc["status"], oc["location"] = "large", DATASET_NAME


def _records_table(arrays: list[pa.Array], outcomes: list[dict[str, Any]], tasks: list[Task],
                   opts: WorkerOptions) -> Records:
    """The batch's records as a table, or, in a worker process (``opts.spool`` set), the
    path of the IPC stream file they were written to: a file in the catalog directory is
    cheaper to hand over than megabytes pickled through a pipe (no copies in Python, and
    the worker never waits for the parent to drain the pipe); the parent memory-maps it."""
    cols: dict[str, pa.Array] = {opts.column_name: pa.concat_arrays(arrays)}
    files = [oc["file"] for oc in outcomes]
    cols["image_id"] = pa.array([f["image_id"] for f in files], pa.string())
    for j, name in enumerate(opts.extra_names):
        cols[name] = pa.array([t[4][j] for t in tasks], pa.string())
    for f in FILE_RECORD_SCHEMA:
        if f.name != "image_id":
            cols[f.name] = pa.array([fr[f.name] for fr in files], f.type)
    cols["_index"] = pa.array([oc["index"] for oc in outcomes], pa.int64())
    table = pa.table(cols)
    if opts.spool is None:
        return table
    path = f"{opts.spool}-{os.getpid()}-{int(tasks[0][0])}.arrows"
    try:
        with pa.OSFile(path, "wb") as fh, pa.ipc.new_stream(fh, table.schema) as w:
            w.write_table(table)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path
