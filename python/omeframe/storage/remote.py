"""Remote objects (S3, GCS, Azure, HTTP, memory://) read by byte ranges.

:class:`RemoteStore` is a folder-like prefix of an object store (a dataset
root, or the folder of one table); :class:`RemoteFile` one object in it, a
read-only binary file object that pyarrow, tifffile and zarr accept, with
thread-safe ``read_range`` like :class:`omeframe.storage.files.InputFile`.

Reads cost round trips, not bytes:

* :meth:`RemoteFile.read_ranges` merges ranges closer than
  :data:`COALESCE_GAP` into one request (up to :data:`MAX_REQUEST_BYTES`) and
  issues the independent requests at once on a bounded thread pool
  (:data:`MAX_CONCURRENCY`);
* every block read lands in the process-wide byte cache
  (:func:`omeframe.engine.cache.shared_cache`, keys ``("remote", url,
  version, start, stop)``), so a second read of the same chunk costs no
  request; ``version`` is the ETag (else the last-modified time) the HEAD
  request of the file saw, so an object rewritten under the same URL is
  never served from the blocks of its previous content;
* a file held open while its object is overwritten never reads the new
  object: it raises :class:`~omeframe.model.errors.FileChangedError`. On
  ``s3://`` (obstore or s3fs) and ``http(s)://`` with a strong ETag, range
  GETs are conditional on the ETag seen at open (``If-Match``; the store
  answers 412 once the object changed). An HTTP(S) server is asked once per
  process whether it honours ``If-Match`` (a range GET conditional on an
  ETag no object has); one that answers anyway, as some servers and caches
  in front of them do, is treated like the following. Elsewhere (``gs://``,
  ``az://``, ``memory://``, servers without a strong ETag or that ignore
  ``If-Match``) each batch of range reads is followed by one HEAD request
  comparing the version, and nothing read is returned or cached before it
  matched;
* a caller that learnt an object's size and ETag from a listing opens it as
  that version (:func:`listed_version`): no HEAD, and reads of an object
  replaced since the listing raise ``FileChangedError`` like the above;
* failures that can pass (HTTP 5xx, 429 / ``SlowDown`` throttling, timeouts,
  dropped connections, truncated bodies) are retried with exponential backoff
  and jitter (:data:`RETRIES` times); other 4xx are not retried. What still
  fails raises :class:`~omeframe.model.errors.RemoteStorageError` naming the
  URL and the HTTP status (a missing object raises ``FileNotFoundError``).

The client is fsspec (s3fs for ``s3://``), which always works; GETs and
one-level listings of ``s3://`` go through obstore's Rust client instead where
it is installed and can stand in (:mod:`omeframe.storage.obstore_reads`).
Both clients' own retry loops are switched off so that one layer decides;
gcsfs's cannot be (its count is fixed per class), so errors it has already
retried are not retried again here, only reported with their HTTP status.
Every request is counted in :data:`STATS` (and per store), which is what
``explain()`` and the tests read.

Example
-------
>>> store = RemoteStore("memory://omeframe-doc")
>>> store.put("a.bin", b"0123456789")
>>> store.open("a.bin").read_ranges([(0, 2), (3, 5)])
[b'01', b'34']
"""

from __future__ import annotations

import errno
import functools
import os
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from omeframe.model.errors import ConcurrentWriteError, FileChangedError, OptionalDependencyError, RemoteStorageError
from omeframe.storage.files import PositionalFile
from omeframe.storage.obstore_reads import ObjectChangedError, ObstoreHTTPError, ObstoreReader, obstore_reader
from omeframe.storage.url import RemoteURL, join_url, parse_location

__all__ = [
    "COALESCE_GAP",
    "MAX_CONCURRENCY",
    "MAX_REQUEST_BYTES",
    "RETRIES",
    "STATS",
    "RemoteFile",
    "RemoteStore",
    "RequestStats",
    "coalesce",
    "filesystem",
    "listed_version",
    "object_version",
    "open_remote_file",
    "set_block_cache",
]

T = TypeVar("T")

#: Ranges separated by fewer bytes than this are read in one request.
COALESCE_GAP = 1 << 20
#: A merged request grows up to this many bytes (larger reads are split).
MAX_REQUEST_BYTES = 32 << 20
#: Requests in flight at once per batch of range reads.
MAX_CONCURRENCY = 16
#: Retries of a request that failed with a retryable error.
RETRIES = 4
#: First backoff delay (seconds); doubled each retry, with jitter, capped at 5 s.
BACKOFF_SECONDS = 0.05
#: Read-ahead of the file-object protocol (``read``/``readinto``), which
#: tifffile and pyarrow use for small metadata reads.
READAHEAD = 64 << 10

_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                "InternalError", "ServiceUnavailable", "TooManyRequests", "RequestLimitExceeded"}


@dataclass
class RequestStats:
    """Counters of requests made (thread-safe).

    Attributes
    ----------
    requests : int
        Requests sent, retries included.
    bytes : int
        Body bytes received.
    retries : int
        Requests that were retries of a failed one.
    ranges : int
        Ranges asked for by range reads.
    merged : int
        Requests the ranges were coalesced into.
    """

    requests: int = 0
    bytes: int = 0
    retries: int = 0
    ranges: int = 0
    merged: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict."""
        with self._lock:
            return {"requests": self.requests, "bytes": self.bytes, "retries": self.retries,
                    "ranges": self.ranges, "merged": self.merged}


#: Process-wide counters of every remote request omeframe makes.
STATS = RequestStats()

class BlockCache(Protocol):
    """What remote reads need of a cache (:class:`omeframe.engine.cache.ByteCache` is one)."""

    def get(self, key: Hashable, default: Any = None) -> Any: ...

    def put(self, key: Hashable, value: Any, nbytes: int | None = None) -> None: ...


_BLOCK_CACHE: BlockCache | None = None


def set_block_cache(cache: BlockCache | None) -> None:
    """Cache remote blocks in ``cache`` (the engine registers the process-wide one).

    The storage layer sits below the engine, so the engine's
    :func:`~omeframe.engine.cache.shared_cache` registers itself here when it
    is imported; ``None`` turns block caching off.
    """
    global _BLOCK_CACHE
    _BLOCK_CACHE = cache


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(MAX_CONCURRENCY, thread_name_prefix="omeframe-remote")
        return _POOL


def _run_all(fns: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``fns`` concurrently on the bounded pool (inline when there is one)."""
    if len(fns) == 1:
        return [fns[0]()]
    futures = [_pool().submit(fn) for fn in fns]
    return [f.result() for f in futures]


# ---------------------------------------------------------------------------
# filesystems
# ---------------------------------------------------------------------------
_FS_CACHE: dict[tuple[str, str], Any] = {}
_FS_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child: drop the parent's filesystems and request threads.

    An fsspec filesystem of an async client (s3fs, gcsfs) is bound to an event
    loop running on a thread of the parent, which the child does not have
    (s3fs refuses: "not fork-safe"); the child makes its own on first use.
    The module's locks are made anew: one held by a parent thread at the
    fork (an If-Match probe waiting for its server) would never be released
    in the child. What the probes learnt stays true and is kept.
    """
    global _POOL, _FS_LOCK, _POOL_LOCK, _IF_MATCH_LOCK, _MEMORY_LOCK
    _FS_CACHE.clear()
    _POOL = None
    _FS_LOCK = threading.Lock()
    _POOL_LOCK = threading.Lock()
    _IF_MATCH_LOCK = threading.Lock()
    _MEMORY_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _options_key(protocol: str, options: Mapping[str, Any]) -> tuple[str, str]:
    return protocol, repr(sorted((k, repr(v)) for k, v in options.items()))


def filesystem(protocol: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec filesystem for ``protocol`` with ``storage_options`` (one per options).

    For ``s3`` the client's own retries are turned off (this module retries),
    unless ``storage_options`` configures them.

    Raises
    ------
    OptionalDependencyError
        When the fsspec implementation of ``protocol`` is not installed.
    """
    opts = dict(storage_options or {})
    key = _options_key(protocol, opts)
    with _FS_LOCK:
        fs = _FS_CACHE.get(key)
        if fs is not None:
            return fs
    import fsspec  # type: ignore[import-untyped]  # heavy: only remote locations need it

    if protocol == "s3":
        cfg = dict(opts.get("config_kwargs") or {})
        cfg.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})  # no client-side retries
        opts["config_kwargs"] = cfg
    try:
        fs = fsspec.filesystem(protocol, skip_instance_cache=True, **opts)
    except ImportError as exc:
        pkg = {"s3": "s3fs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(protocol, "aiohttp")
        raise OptionalDependencyError(
            f"reading {protocol}:// URLs needs the fsspec implementation {pkg!r}: pip install {pkg} ({exc})"
        ) from exc
    if protocol == "s3" and "retries" not in (storage_options or {}):
        fs.retries = 1
    with _FS_LOCK:
        return _FS_CACHE.setdefault(key, fs)


# ---------------------------------------------------------------------------
# errors and retries
# ---------------------------------------------------------------------------
def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _status(exc: BaseException) -> tuple[int | None, str]:
    """``(HTTP status, error code)`` found anywhere in ``exc``'s chain."""
    for e in _chain(exc):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            meta = resp.get("ResponseMetadata") or {}
            code = str((resp.get("Error") or {}).get("Code") or "")
            status = meta.get("HTTPStatusCode")
            if status is None and code.isdigit():
                status = int(code)
            return (int(status) if status is not None else None), code
        status = getattr(e, "status", None) or getattr(e, "status_code", None)
        if isinstance(status, int):
            return status, ""
        if _client_retried(e):
            return int(e.code), ""  # type: ignore[attr-defined]
    return None, ""


def _client_retried(exc: BaseException) -> bool:
    """Whether ``exc`` is gcsfs's ``HttpError``: an answer gcsfs has already retried if it could.

    gcsfs retries failed requests itself (6 tries, with backoff); unlike
    s3fs's, its count is fixed when the class is defined and cannot be
    turned off per filesystem, so this module does not retry them again.
    """
    return type(exc).__name__ == "HttpError" and type(exc).__module__.startswith("gcsfs") and isinstance(
        getattr(exc, "code", None), int)


def _is_network(exc: BaseException) -> bool:
    """Dropped connections, timeouts and truncated bodies (no HTTP status)."""
    names = {"ClientPayloadError", "ServerDisconnectedError", "ClientConnectionError", "ClientOSError",
             "IncompleteRead", "IncompleteReadError", "ResponseStreamingError", "ReadTimeoutError",
             "ConnectTimeoutError", "EndpointConnectionError", "ConnectionClosedError", "ProtocolError",
             "FSTimeoutError", "HTTPClientError", "ResponseParserError", "ContentLengthError",
             "_Truncated"}
    for e in _chain(exc):
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in names:
            return True
    return False


class _Truncated(Exception):
    """A body shorter than the range asked for (retried)."""


_REMOVED = "the object was removed since it was opened"


def _file_changed(what: str, url: str, reason: str) -> FileChangedError:
    """The error of a request that found the object it reads no longer the version opened (``reason``)."""
    return FileChangedError(errno.ESTALE, f"{what}: {reason}; open it again to read its current version", url)


def _retryable(exc: BaseException) -> bool:
    status, code = _status(exc)
    if status is not None:
        return status >= 500 or status in (408, 429) or code in _RETRY_CODES
    return code in _RETRY_CODES or _is_network(exc)


def _call(what: str, url: str, fn: Callable[[], T], stats: RequestStats | None) -> T:
    """Run one request with retries; translate what still fails."""
    attempt = 0
    while True:
        STATS.add(requests=1, retries=1 if attempt else 0)
        if stats is not None:
            stats.add(requests=1, retries=1 if attempt else 0)
        try:
            return fn()
        except (ConcurrentWriteError, FileNotFoundError, ObjectChangedError) as exc:
            if isinstance(exc, FileNotFoundError) and _status(exc)[0] not in (None, 404):
                pass  # fall through: a FileNotFoundError wrapping another status
            else:
                if isinstance(exc, FileNotFoundError):
                    raise FileNotFoundError(f"{what} {url!r}: no such object (HTTP 404)") from exc
                if isinstance(exc, ObjectChangedError):
                    raise _file_changed(what, url, str(exc)) from exc
                raise
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt < RETRIES and _retryable(exc) and not _client_retried(exc):
                delay = min(5.0, BACKOFF_SECONDS * (2**attempt)) * (0.5 + random.random())
                time.sleep(delay)
                attempt += 1
                continue
            status, code = _status(exc)
            if status == 404:
                raise FileNotFoundError(f"{what} {url!r}: no such object (HTTP 404)") from exc
            head = f"HTTP {status}" + (f" {code}" if code and code != str(status) else "") if status else (
                f"{type(exc).__name__}: {exc}")
            retried = "the client's own retries" if _client_retried(exc) else f"{attempt} retries"
            hint = (
                "check the credentials (storage_options= or the environment) and the bucket policy"
                if status in (401, 403) else
                f"gave up after {retried}; the server or network keeps failing, try again later"
                if _retryable(exc) else "the request is not valid for this object; check the URL and options"
            )
            raise RemoteStorageError(f"{what} {url!r} failed: {head}; {hint}", url=url, status=status) from exc


# ---------------------------------------------------------------------------
# range coalescing
# ---------------------------------------------------------------------------
def coalesce(
    ranges: Sequence[tuple[int, int]], gap: int | None = None, limit: int | None = None
) -> list[tuple[int, int]]:
    """Merge ``[start, stop)`` ranges closer than ``gap`` into requests of at most ``limit`` bytes.

    ``gap`` and ``limit`` default to :data:`COALESCE_GAP` and :data:`MAX_REQUEST_BYTES`.

    Example
    -------
    >>> coalesce([(0, 10), (12, 20), (100, 110)], gap=5)
    [(0, 20), (100, 110)]
    """
    gap = COALESCE_GAP if gap is None else gap
    limit = MAX_REQUEST_BYTES if limit is None else limit
    out: list[tuple[int, int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if out and a - out[-1][1] < gap and max(b, out[-1][1]) - out[-1][0] <= limit:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


# ---------------------------------------------------------------------------
# stores and files
# ---------------------------------------------------------------------------
class RemoteStore:
    """A prefix (folder) in an object store, with reads, listings and conditional writes.

    Parameters
    ----------
    url
        ``s3://bucket/prefix`` (or any scheme :mod:`omeframe.storage.url` accepts).
    storage_options
        Passed to the fsspec filesystem (credentials, ``endpoint_url``,
        ``client_kwargs`` ...), as in pandas and Polars.

    Example
    -------
    >>> store = RemoteStore("memory://omeframe-doc2")
    >>> store.put("x.json", b"{}", if_none_match=True)
    >>> store.list("")
    ['x.json']
    """

    def __init__(self, url: str | RemoteURL, storage_options: Mapping[str, Any] | None = None) -> None:
        loc = parse_location(url)
        if loc is None:
            raise ValueError(f"{url!r} is a local path, not a remote URL")
        self.location = loc
        self.url = loc.url
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self.fs = filesystem(loc.protocol, self.storage_options)
        self.stats = RequestStats()
        # GETs and one-level listings go through obstore where it can stand in for s3fs.
        self.reader: ObstoreReader | None = obstore_reader(loc, self.storage_options)

    def __repr__(self) -> str:
        return f"<RemoteStore {self.url!r}>"

    def url_of(self, rel: str) -> str:
        """Full URL of ``rel`` below the store."""
        return join_url(self.url, rel)

    def _path(self, rel: str) -> str:
        return self.location.join(rel).path if rel else self.location.path

    def _read(self, with_obstore: Callable[[ObstoreReader], T], with_fsspec: Callable[[], T]) -> T:
        """One read through obstore where it serves this store, else through fsspec (inside one :func:`_call`)."""
        reader = self.reader
        if reader is not None and not reader.redirected:
            try:
                return with_obstore(reader)
            except ObstoreHTTPError as exc:
                if not exc.wrong_region:
                    raise
                reader.redirected = True  # the bucket lies elsewhere: s3fs looks its region up
        return with_fsspec()

    def _key(self, rel: str) -> str:
        """``rel``'s key inside its bucket (what :attr:`reader` is given)."""
        parts = self._path(rel).split("/", 1)
        return parts[1] if len(parts) > 1 else ""

    def child(self, rel: str) -> RemoteStore:
        """The store at ``rel`` below this one (same options)."""
        return RemoteStore(self.url_of(rel), self.storage_options)

    # ---- reads -------------------------------------------------------------
    def cat(self, rel: str) -> bytes:
        """The whole object ``rel``."""
        # s3fs would HEAD the object first to split big reads: one round trip too many here.
        kw = {"max_concurrency": 1} if self.location.protocol == "s3" else {}
        data = _call("GET", self.url_of(rel), lambda: self._read(
            lambda r: r.get(self._key(rel)), lambda: self.fs.cat_file(self._path(rel), **kw)), self.stats)
        n = len(data)
        STATS.add(bytes=n)
        self.stats.add(bytes=n)
        return bytes(data)

    def cat_many(self, rels: Sequence[str], missing_ok: bool = False) -> list[bytes | None]:
        """Several whole objects, fetched concurrently (``None`` for missing ones with ``missing_ok``)."""

        def one(rel: str) -> Callable[[], bytes | None]:
            def run() -> bytes | None:
                try:
                    return self.cat(rel)
                except FileNotFoundError:
                    if missing_ok:
                        return None
                    raise
            return run

        return _run_all([one(r) for r in rels])

    def size(self, rel: str) -> int:
        """Size in bytes of object ``rel`` (one HEAD request)."""
        return self.stat(rel)[0]

    def stat(self, rel: str) -> tuple[int, str | None]:
        """``(size, version)`` of object ``rel`` (one HEAD request).

        ``version`` is the object's ETag, else its last-modified time as the
        store reports it, else ``None``: it changes whenever the object is rewritten.
        Never answered from a listing this process made earlier (fsspec keeps
        them): another writer may have replaced the object since, and a file
        opened with a stale version would refuse every read.
        """
        path = self._path(rel)

        def head() -> Any:
            self.fs.invalidate_cache(path)
            return self.fs.info(path)

        info = _call("HEAD", self.url_of(rel), head, self.stats)
        return int(info["size"]), object_version(info)

    def exists(self, rel: str) -> bool:
        """Whether object ``rel`` exists."""
        try:
            self.size(rel)
            return True
        except FileNotFoundError:
            return False

    def list(self, rel: str) -> list[str]:
        """Names of the objects directly below ``rel`` (one LIST request; empty when none)."""
        path = self._path(rel)

        def ls() -> list[str]:
            return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False, refresh=True)]

        def run() -> list[str]:
            try:
                return self._read(lambda r: r.list_names(self._key(rel)), ls)
            except FileNotFoundError:
                return []

        return sorted(_call("LIST", self.url_of(rel), run, self.stats))

    def _listing(self, url: str, run: Callable[[], T]) -> T:
        """Run one listing call; a missing bucket is a ``FileNotFoundError`` that says so."""
        try:
            return _call("LIST", url, run, self.stats)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"cannot list {url!r}: its bucket (container) does not exist; check the URL"
            ) from exc

    def find(self, rel: str = "") -> dict[str, dict[str, Any]]:
        """Every object at or below ``rel``, with what the listing says of it.

        One paginated listing without a delimiter (S3 ``ListObjectsV2``: one
        request per 1000 objects), never a request per object. Keys are paths
        relative to this store (``""`` when the store URL itself names an object),
        sorted; values are the filesystem's listing entries (``size``, and
        where the store gives them ``ETag`` / ``LastModified`` ...). A prefix
        with nothing below it gives ``{}``.

        Raises
        ------
        FileNotFoundError
            When the bucket (container) does not exist.

        Example
        -------
        >>> store = RemoteStore("memory://omeframe-doc3")
        >>> store.put("a/b.bin", b"xy")
        >>> {k: v["size"] for k, v in store.find("a").items()}
        {'a/b.bin': 2}
        """
        path = self._path(rel).rstrip("/")
        base = self.location.path.rstrip("/")
        url = self.url_of(rel)

        def run() -> dict[str, dict[str, Any]]:
            self.fs.invalidate_cache(path)
            try:
                found = self.fs.find(path, detail=True, withdirs=False)
            except FileNotFoundError:
                if self.location.protocol == "memory":
                    return {}
                raise
            return dict(found)

        found = self._listing(url, run)
        out: dict[str, dict[str, Any]] = {}
        for p, info in found.items():
            p = str(p).rstrip("/")
            if p != path and not p.startswith(path + "/"):
                continue  # a key that merely starts like the prefix ("a.tif" for "a")
            if info.get("type", "file") != "file":
                continue
            out[p[len(base):].lstrip("/")] = dict(info)
        return dict(sorted(out.items()))

    def list_detail(self, rel: str) -> dict[str, dict[str, Any]]:
        """The objects directly below folder ``rel`` with their listing entries, keyed by
        path relative to the store (one listing with a delimiter; ``{}`` when none).

        Raises
        ------
        FileNotFoundError
            When the bucket (container) does not exist.
        """
        path = self._path(rel).rstrip("/")
        base = self.location.path.rstrip("/")
        url = self.url_of(rel)

        def run() -> list[dict[str, Any]]:
            try:
                return list(self.fs.ls(path, detail=True, refresh=True))
            except FileNotFoundError as exc:
                if _status(exc)[1] != "NoSuchBucket" and (self.location.protocol == "memory" or rel):
                    return []  # an empty folder; a missing bucket raises below
                raise

        entries = self._listing(url, run)
        out = {}
        for info in entries:
            p = str(info.get("name", "")).rstrip("/")
            if info.get("type", "file") == "file" and p.startswith(path + "/"):
                out[p[len(base):].lstrip("/")] = dict(info)
        return dict(sorted(out.items()))

    def open(self, rel: str, size: int | None = None) -> RemoteFile:
        """Object ``rel`` as a :class:`RemoteFile` (``size`` saves a HEAD request when known)."""
        return RemoteFile(self, rel, size)

    # ---- writes --------------------------------------------------------------
    def put(self, rel: str, data: bytes, *, if_none_match: bool = False) -> None:
        """Write object ``rel`` in one request.

        With ``if_none_match`` the write is conditional (S3 ``If-None-Match: *``,
        GCS ``ifGenerationMatch=0``): it fails with
        :class:`~omeframe.model.errors.ConcurrentWriteError` when the object
        exists, which makes it a compare-and-swap.
        """
        url = self.url_of(rel)
        path = self._path(rel)
        if if_none_match:
            fn = self._put_if_absent(url, path, data)
        else:
            def fn() -> None:
                self.fs.pipe_file(path, data)
        _call("PUT", url, fn, self.stats)
        self.fs.invalidate_cache(self._path(rel.rpartition("/")[0]) if "/" in rel else self.location.path)

    def _put_if_absent(self, url: str, path: str, data: bytes) -> Callable[[], None]:
        proto = self.location.protocol
        if proto == "s3":
            bucket, _, key = path.partition("/")

            def s3put() -> None:
                try:
                    self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                except Exception as exc:  # noqa: BLE001 - classified
                    status, code = _status(exc)
                    if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                        raise ConcurrentWriteError(f"{url!r} exists (conditional put refused)") from exc
                    raise
            return s3put
        if proto == "gcs":
            def gcsput() -> None:
                try:  # gcsfs sends ifGenerationMatch=0: GCS creates the object only if it has no live version
                    self.fs.pipe_file(path, data, mode="create")
                except FileExistsError as exc:  # gcsfs's name for GCS's 412
                    raise ConcurrentWriteError(f"{url!r} exists (conditional create refused)") from exc
            return gcsput
        if proto == "memory":
            lock = _MEMORY_LOCK

            def memput() -> None:
                with lock:
                    if self.fs.exists(path):
                        raise ConcurrentWriteError(f"{url!r} exists")
                    self.fs.pipe_file(path, data)
            return memput
        raise RemoteStorageError(
            f"cannot commit to {url!r}: conditional writes (a create that fails when the object exists) "
            f"are implemented for s3://, gs:// and memory:// only, not {proto}://; write the dataset to "
            "S3 (or an S3-compatible store), Google Cloud Storage or a local disk", url=url,
        )

    def upload(self, src: str | os.PathLike[str], rel: str) -> None:
        """Upload the complete local file ``src`` as object ``rel``.

        The object appears only when the upload completes (one PUT, or a
        multipart upload that the store publishes at once on completion).
        """
        url = self.url_of(rel)
        _call("PUT", url, lambda: self.fs.put_file(os.fspath(src), self._path(rel)), self.stats)

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy of object ``src`` to ``dst`` (whole, in one request)."""
        _call("COPY", self.url_of(dst), lambda: self.fs.copy(self._path(src), self._path(dst)), self.stats)

    def delete(self, rel: str) -> None:
        """Remove object ``rel`` (missing is fine)."""
        def run() -> None:
            try:
                self.fs.rm_file(self._path(rel))
            except FileNotFoundError:
                pass
        _call("DELETE", self.url_of(rel), run, self.stats)


_MEMORY_LOCK = threading.Lock()


def object_version(info: Mapping[str, Any]) -> str | None:
    """What changes when an object is rewritten, from its listing or HEAD entry:
    the ETag, else the last-modified time (as text), else ``None``."""
    for key in ("ETag", "etag", "Etag"):
        if info.get(key):
            return str(info[key]).strip('"')
    for key in ("LastModified", "last_modified", "Last-Modified", "mtime", "updated", "created"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return None


_LISTED: ContextVar[tuple[str, int, str] | None] = ContextVar("omeframe_listed_version", default=None)


@contextmanager
def listed_version(url: str, size: int, etag: str) -> Iterator[None]:
    """Open the object at ``url`` as the version a listing reported, within this block.

    A :class:`RemoteFile` of ``url`` that learns its size inside the block
    takes ``size`` and ``etag`` from the listing instead of a HEAD request,
    and so reads that version or raises
    :class:`~omeframe.model.errors.FileChangedError`: an object replaced
    between the listing and the read is never read as if it were the one
    listed (a catalog records the listing's size and ETag beside the pixels
    it read). The hint holds for the current thread (a context variable).

    Example
    -------
    >>> with listed_version("s3://bucket/a.tif", 1234, "9b2cf535f27731c9"):   # doctest: +SKIP
    ...     src = omeframe.registry.open_source("s3://bucket/a.tif")
    """
    token = _LISTED.set((url, int(size), etag))
    try:
        yield
    finally:
        _LISTED.reset(token)


#: For each HTTP(S) server (``scheme://host:port``), whether it refuses a range
#: GET whose ``If-Match`` names an ETag the object does not have (412): learnt
#: by one request per server and process (:meth:`RemoteFile._server_checks_if_match`).
_IF_MATCH_HONOURED: dict[str, bool] = {}
_IF_MATCH_LOCK = threading.Lock()
#: The ETag of that request: no object has it (ETags are hashes or versions).
_PROBE_ETAG = "omeframe-probe-no-object-has-this-etag"


def _etag(version: str | None) -> str | None:
    """The strong ETag in an :func:`object_version`, which a GET can be conditional on.

    ``None`` for a modification time (written as ``key=value``) and for a weak
    ETag (``W/...``), which ``If-Match`` never matches.
    """
    return version if version and "=" not in version and not version.startswith("W/") else None


async def _s3_get_if_match(fs: Any, path: str, start: int, stop: int, etag: str) -> bytes:
    """A range GET through s3fs that S3 answers only while the object's ETag is ``etag`` (else 412)."""
    bucket, key, _ = fs.split_path(path)
    resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}",
                             IfMatch=f'"{etag}"')
    try:
        return bytes(await resp["Body"].read())
    finally:
        resp["Body"].close()


class RemoteFile(PositionalFile):
    """One remote object: thread-safe cached range reads and a read-only file object.

    Use :meth:`RemoteStore.open`. ``read_range(offset, length)`` matches
    :class:`omeframe.storage.files.InputFile`; ``read_ranges`` reads many
    ranges in the fewest concurrent requests.

    The HEAD request that learns :attr:`size` also pins the object's version:
    from then on every read returns bytes of that version or raises
    :class:`~omeframe.model.errors.FileChangedError` (see the module
    docstring). A file that never made that request (its ``size`` given, or
    never asked) reads whatever the object holds: for objects never
    rewritten, such as a dataset's chunk parts.
    """

    def __init__(self, store: RemoteStore, rel: str, size: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.rel = rel
        self.url = store.url_of(rel)
        self.path = self.url
        self._size = size
        self._version: str | None = None
        self.failure: OSError | None = None  # the last failed read a caller (vortex) could not pass on
        self._pos = 0
        self._lock = threading.Lock()
        self._block: tuple[int, bytes] = (0, b"")

    def __repr__(self) -> str:
        return f"<RemoteFile {self.url!r}>"

    @property
    def size(self) -> int:
        """Object size in bytes (one HEAD request the first time, unless given or listed).

        Inside :func:`listed_version` for this URL, the listing's size and
        ETag are taken instead of a HEAD request's.
        """
        if self._size is None:
            listed = _LISTED.get()
            if listed is not None and listed[0] == self.url:
                self._size, self._version = listed[1], listed[2]
            else:
                self._size, self._version = self.store.stat(self.rel)
        return self._size

    def _if_match(self) -> str | None:
        """The ETag range GETs are conditional on, or ``None`` where the client cannot send one.

        s3:// (obstore and s3fs alike) and http(s):// send ``If-Match``; the
        other schemes check the version after reading (:meth:`_check_unchanged`).
        """
        proto = self.store.location.protocol
        if proto not in ("s3", "http", "https"):
            return None
        etag = _etag(self._version)
        if etag is None or proto == "s3" or self._server_checks_if_match():
            return etag
        return None

    def _server_checks_if_match(self) -> bool:
        """Whether this object's HTTP(S) server honours ``If-Match`` (one probe per server and process).

        The probe is a one-byte range GET of this object conditional on an
        ETag no object has: a server that checks answers 412; one that
        returns the byte ignores the header, and its objects are read with a
        HEAD request after each batch instead. Other answers (the object
        gone, empty) teach nothing: this read gets the HEAD check, and the
        next read asks again.
        """
        parts = urlsplit(self.url)
        server = f"{parts.scheme}://{parts.netloc}"
        with _IF_MATCH_LOCK:
            known = _IF_MATCH_HONOURED.get(server)
            if known is not None:
                return known
            path = self.store._path(self.rel)

            def probe() -> bool | None:
                try:
                    self._fsspec_range(path, 0, 1, _PROBE_ETAG)
                except FileNotFoundError:
                    return None  # gone since it was opened: the read itself reports that
                except Exception as exc:
                    status = _status(exc)[0]
                    if status == 412:
                        return True
                    if status is None or _retryable(exc):
                        raise  # no answer yet: retried, then reported
                    return None  # another refusal (e.g. 416 for an empty object) tells nothing
                return False  # the bytes, whatever the ETag: the server ignores If-Match

            answer = _call("GET", self.url, probe, self.store.stats)
            if answer is None:
                return False  # not learnt: this read is checked by a HEAD request
            _IF_MATCH_HONOURED[server] = answer
            return answer

    def _fsspec_range(self, path: str, start: int, stop: int, etag: str | None) -> bytes:
        fs = self.store.fs
        if etag is None:
            return bytes(fs.cat_file(path, start=start, end=stop))
        if self.store.location.protocol == "s3":
            import fsspec.asyn  # type: ignore[import-untyped]

            return bytes(fsspec.asyn.sync(fs.loop, _s3_get_if_match, fs, path, start, stop, etag))
        headers = {**(fs.kwargs.get("headers") or {}), "If-Match": f'"{etag}"'}  # keep the user's headers
        return bytes(fs.cat_file(path, start=start, end=stop, headers=headers))

    def _changed(self) -> str | None:
        """What changed since the object was opened (one HEAD), or ``None`` while its version is the same."""
        try:
            now: str | None = self.store.stat(self.rel)[1]
        except FileNotFoundError:
            return _REMOVED
        if now == self._version:
            return None
        return f"the object was overwritten since it was opened (its version {self._version!r} is now {now!r})"

    def _check_unchanged(self) -> None:
        """Raise :class:`FileChangedError` unless the object still has the version it was opened at (one HEAD)."""
        change = self._changed()
        if change is not None:
            raise _file_changed("GET", self.url, change)

    def _fetch(self, start: int, stop: int) -> bytes:
        path = self.store._path(self.rel)
        etag = self._if_match()

        def run() -> bytes:
            try:
                data = self.store._read(
                    lambda r: r.get_range(self.store._key(self.rel), start, stop, if_match=etag),
                    lambda: self._fsspec_range(path, start, stop, etag),
                )
            except ObjectChangedError:
                raise
            except Exception as exc:
                if etag is not None and _status(exc)[0] == 412:
                    raise ObjectChangedError() from exc
                raise
            if len(data) != stop - start and (self._size is None or stop <= self._size):
                change = self._changed() if etag is None and self._version is not None else None
                if change is not None:  # a shorter object under the same name: no retry mends that
                    raise ObjectChangedError(change)
                raise _Truncated(f"got {len(data)} bytes of range {start}..{stop}")
            return bytes(data)

        try:
            data = _call("GET", self.url, run, self.store.stats)
        except FileNotFoundError as exc:
            if self._version is None:
                raise
            raise _file_changed("GET", self.url, _REMOVED) from exc
        except RemoteStorageError as exc:
            if isinstance(exc.__cause__, _Truncated) or any(isinstance(e, _Truncated) for e in _chain(exc)):
                raise RemoteStorageError(
                    f"GET {self.url!r} bytes {start}..{stop}: the server kept returning truncated bodies "
                    f"({exc}); the object may be changing or the connection is unreliable", url=self.url,
                ) from exc
            raise
        STATS.add(bytes=len(data))
        self.store.stats.add(bytes=len(data))
        return data

    def read_ranges(self, ranges: Sequence[tuple[int, int]], *, cache: bool = True) -> list[bytes]:
        """Bytes of each ``[start, stop)`` range, in order.

        Ranges in the shared cache cost nothing; the others are coalesced
        (:func:`coalesce`) and the merged requests run concurrently. Each range
        is then cached under ``("remote", url, version, start, stop)`` (see the module docstring).
        """
        c = _BLOCK_CACHE if cache else None
        v = self._version
        out: list[bytes | None] = [c.get(("remote", self.url, v, a, b)) if c is not None else None for a, b in ranges]
        todo = [(a, b) for (a, b), v in zip(ranges, out, strict=True) if v is None and b > a]
        if todo:
            merged = coalesce(todo)
            STATS.add(ranges=len(todo), merged=len(merged))
            self.store.stats.add(ranges=len(todo), merged=len(merged))
            blocks = _run_all([functools.partial(self._fetch, a, b) for a, b in merged])
            if self._version is not None and self._if_match() is None:
                self._check_unchanged()  # before anything read is returned or cached
            starts = [a for a, _ in merged]
            import bisect

            got: dict[tuple[int, int], bytes] = {}
            for a, b in todo:
                j = bisect.bisect_right(starts, a) - 1
                m0 = merged[j][0]
                got[(a, b)] = blocks[j][a - m0 : b - m0]
                if c is not None:
                    c.put(("remote", self.url, self._version, a, b), got[(a, b)])
            out = [v if v is not None else (got.get((a, b), b"")) for (a, b), v in zip(ranges, out, strict=True)]
        return [v if v is not None else b"" for v in out]

    def read_range(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (cached; fewer only at the end of the object)."""
        if length <= 0:
            return b""
        stop = offset + length
        if self._size is not None:
            stop = min(stop, self._size)
            if stop <= offset:
                return b""
        return self.read_ranges([(offset, stop)])[0]

    def _read_at(self, pos: int, size: int) -> bytes:
        """Sequential reads through a read-ahead block (small metadata reads cost one request)."""
        end = min(pos + size, self.size)
        if end <= pos:
            return b""
        b0, block = self._block
        if b0 <= pos and end <= b0 + len(block):
            return block[pos - b0 : end - b0]
        if end - pos >= READAHEAD:
            return self.read_range(pos, end - pos)
        stop = min(self.size, pos + READAHEAD)
        block = self.read_ranges([(pos, stop)], cache=False)[0]
        self._block = (pos, block)
        return block[: end - pos]


def open_remote_file(location: object, storage_options: Mapping[str, Any] | None = None) -> RemoteFile | None:
    """The object at ``location`` as a :class:`RemoteFile`, or ``None`` when ``location`` is local.

    Costs one HEAD request (for the size, which Parquet and TIFF readers need).

    Raises
    ------
    FileNotFoundError
        When the object does not exist.
    """
    loc = parse_location(location)
    if loc is None:
        return None
    parent, _, name = loc.url.rpartition("/")
    if "://" not in parent or not name:
        raise ValueError(f"{loc.url!r} names no object (expected <scheme>://<bucket>/<key>)")
    store = RemoteStore(parent, storage_options)
    f = store.open(name)
    _ = f.size  # fails early, naming the URL, when the object is missing
    return f
