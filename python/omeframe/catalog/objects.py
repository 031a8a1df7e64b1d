"""Catalog inputs on an object store: listing a bucket prefix, and what identifies an object.

A catalog reads object-store URLs (``s3://``, ``gs://``, ``az://``,
``memory://`` ... see :mod:`omeframe.storage.url`) through the library's one
storage layer, :class:`~omeframe.storage.remote.RemoteStore`, with the
``storage_options`` of the build. A :class:`RemoteInput` is one input found
there: an object (a TIFF, a ``.npy`` ...) or a zarr store (a prefix). It
carries what the listing said about it, so neither the building process nor
a worker asks the store about it again; it pickles (URL, numbers and the
storage options) to worker processes and Dask workers.

Listing
-------
A folder (prefix) is listed with **one paginated listing without a
delimiter** (:meth:`RemoteStore.find`: one request per 1000 objects), never
a request per object. The listing is grouped like a local walk: a prefix
named ``*.zarr`` or holding zarr metadata directly (``zarr.json``,
``.zgroup``, ``.zattrs``, ``.zarray``) and no ``manifest.json`` is one store
(the outermost one wins), hidden names (``.*``) outside stores are skipped,
and objects are kept by file kind as :func:`~omeframe.catalog.kinds.detect_reader`
names them (TIFF / OME-TIFF, ``.npy``, CZI). A glob (``s3://b/plates/**/*.tif``)
lists the prefix before its first wildcard once and matches the listing.
Explicit object URLs are looked up in one one-level listing of their parent
folder each (one request per distinct folder). Inputs come out sorted by URL
per source, without duplicates: the row order of the catalog is deterministic.

Identity and checksum
---------------------
A local file is skipped on resume when size, mtime and a checksum of its
first and last MiB match (:mod:`omeframe.catalog.records`); that checksum is
recomputed on every build, which costs a read of 2 MiB per file. On an
object store the same rule would re-read every unchanged object: a bucket
of 100 000 slides would cost 200 000 ranged GETs just to find that nothing
changed. The store's **ETag** is used instead wherever the listing gives one
(S3 and S3-compatible stores, GCS, Azure): ``checksum = "etag:<ETag>"``.
The argument for it:

* An object is never changed in place; every write makes a new object with
  a new ETag (S3: the MD5 of the content for single-part uploads, an MD5 of
  the parts' MD5s for multipart ones, an opaque per-write value under
  SSE-KMS; GCS and Azure: a per-generation tag). So an ETag that did not
  change means the object was not rewritten, and with an MD5-style ETag
  it even means equal bytes. That is a stronger guarantee than the local
  edge checksum, which cannot see an edit in the middle of a file.
* It comes with the listing: resume costs one listing and **no read at all**
  for unchanged objects.
* ``LastModified`` of S3 has a resolution of one second, so size + mtime
  alone would miss two same-size writes in one second; the ETag does not.

An ETag is not the same across stores for the same bytes (multipart sizes,
encryption), so a catalog re-ingests an object copied to another bucket;
that is the price of reading nothing. Where the store gives no ETag
(``memory://``, some HTTP servers) the checksum is the local one, computed
from the object's first and last MiB with ranged reads (equal to the local
checksum of the same bytes), by the worker when it ingests the object and by
the building process on resume, exactly as for a local file.

A zarr store (many objects) has ``size`` = the total of its objects,
``mtime`` = the newest one and ``checksum = "listing:<blake2b>"`` over every
object's relative path, size and ETag (or mtime where there is none): any
rewritten chunk changes it, and it costs no read either.

Example
-------
>>> from omeframe.storage.remote import RemoteStore
>>> RemoteStore("memory://omeframe-objects-doc").put("plate/A1.tif", b"II*\\0")
>>> [i.name for i in list_inputs(["memory://omeframe-objects-doc/plate"])]
['A1.tif']
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from omeframe.catalog.kinds import INGESTED_KINDS, detect_reader
from omeframe.catalog.records import checksum_of_edges, edge_ranges
from omeframe.formats.dataset.manifest import MANIFEST_NAME
from omeframe.formats.zarr import ZARR_ATTRS_FILES, ZARR_MARKERS, ZARR_SUFFIX
from omeframe.storage.remote import RemoteStore
from omeframe.storage.url import parse_location

__all__ = ["ETAG_PREFIX", "RemoteInput", "list_inputs", "list_sources", "identity_checksum", "location_of", "name_of"]

_MAGIC = re.compile(r"[*?\[]")
#: Prefix of an identity checksum taken from the store's ETag (``"etag:<ETag>"``).
ETAG_PREFIX = "etag:"


@dataclass(frozen=True)
class RemoteInput:
    """One catalog input on an object store, as its listing described it.

    Attributes
    ----------
    url
        The object's (or store's) URL: the ``urlpath`` of its catalog row.
    reader
        Its kind (:func:`~omeframe.catalog.kinds.detect_reader` names).
    size
        Bytes (a store: the total of its objects); ``None`` when the URL was
        named explicitly but no such object exists (it gets an error row).
    mtime
        Last-modified time, integer nanoseconds since the epoch (``0`` when
        the store tells none).
    checksum
        The identity checksum known from the listing (``"etag:..."``,
        ``"listing:..."``), or ``None`` when it must be computed from the
        object's bytes (see the module docstring).
    storage_options
        Options of the store's filesystem (not shown in ``repr``).
    """

    url: str
    reader: str
    size: int | None
    mtime: int
    checksum: str | None
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The last component of the URL (``A1.ome.tif``)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def exists(self) -> bool:
        return self.size is not None


def location_of(item: Any) -> str:
    """The ``urlpath`` of a discovered input: a :class:`RemoteInput`'s URL, else the POSIX path."""
    if isinstance(item, RemoteInput):
        return item.url
    return PurePosixPath(item).as_posix() if not isinstance(item, str) else item


def name_of(item: Any) -> str:
    """The file (or store) name of a discovered input or a path."""
    if isinstance(item, RemoteInput):
        return item.name
    return PurePosixPath(str(item)).name


# ---------------------------------------------------------------------------
# identity
# ---------------------------------------------------------------------------
def _etag(info: Mapping[str, Any]) -> str | None:
    for key in ("ETag", "etag", "Etag"):
        v = info.get(key)
        if v:
            return str(v).strip('"')
    return None


def _ns(dt: datetime) -> int:
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _mtime_ns(info: Mapping[str, Any]) -> int:
    """Last-modified time of a listing entry in ns (``0`` when the store tells none)."""
    for key in ("LastModified", "last_modified", "mtime", "updated", "created"):
        v = info.get(key)
        if isinstance(v, datetime):
            return _ns(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return int(round(float(v) * 1e9))
        if isinstance(v, str):
            try:
                return _ns(datetime.fromisoformat(v.replace("Z", "+00:00")))
            except ValueError:
                continue
    return 0


def identity_checksum(item: RemoteInput) -> str:
    """The identity checksum of ``item``: the one its listing gave, else the
    first-and-last-MiB checksum read with ranged GETs (one or two requests).

    Raises
    ------
    FileNotFoundError
        When the object does not exist (any more).
    """
    if item.checksum is not None:
        return item.checksum
    if item.size is None:
        raise FileNotFoundError(f"{item.url!r}: no such object")
    parent, _, name = item.url.rpartition("/")
    f = RemoteStore(parent, item.storage_options).open(name, item.size)
    ranges = edge_ranges(item.size)
    return checksum_of_edges(item.size, f.read_ranges(ranges, cache=False))


# ---------------------------------------------------------------------------
# listing
# ---------------------------------------------------------------------------
def _stores(keys: Iterable[str]) -> set[str]:
    """Relative prefixes that are zarr stores (outermost only), from a listing's keys."""
    markers = set(ZARR_MARKERS)
    candidates: set[str] = set()
    datasets: set[str] = set()
    for key in keys:
        parts = key.split("/")
        for i in range(1, len(parts)):
            if parts[i - 1].lower().endswith(ZARR_SUFFIX):
                candidates.add("/".join(parts[:i]))
        if len(parts) > 1 and parts[-1] in markers:
            candidates.add("/".join(parts[:-1]))
        if parts[-1] == MANIFEST_NAME:
            datasets.add("/".join(parts[:-1]))
    stores = {c for c in candidates if c not in datasets}
    return {s for s in stores if not any(s.startswith(o + "/") for o in stores)}


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


class _Lister:
    """Turns listings of one store (bucket) into :class:`RemoteInput` s."""

    def __init__(self, root: str, storage_options: Mapping[str, Any]) -> None:
        self.store = RemoteStore(root, storage_options)
        self.options = dict(storage_options)

    def url(self, rel: str) -> str:
        return self.store.url_of(rel)

    def file(self, rel: str, info: Mapping[str, Any]) -> RemoteInput:
        etag = _etag(info)
        return RemoteInput(
            url=self.url(rel), reader=detect_reader(PurePosixPath(rel), is_dir=False), size=int(info["size"]),
            mtime=_mtime_ns(info), checksum=None if etag is None else f"{ETAG_PREFIX}{etag}",
            storage_options=self.options,
        )

    def store_input(self, rel: str, objects: Mapping[str, Mapping[str, Any]]) -> RemoteInput:
        """A zarr store at ``rel`` from the listing entries of its objects (relative to the store)."""
        h = hashlib.blake2b(digest_size=16)
        size, mtime = 0, 0
        for sub, info in sorted(objects.items()):
            t = _mtime_ns(info)
            size += int(info["size"])
            mtime = max(mtime, t)
            h.update(f"{sub}\0{info['size']}\0{_etag(info) or t}\0".encode())
        return RemoteInput(url=self.url(rel), reader=self._zarr_kind(rel, objects), size=size, mtime=mtime,
                           checksum=f"listing:{h.hexdigest()}", storage_options=self.options)

    def _zarr_kind(self, rel: str, objects: Mapping[str, Any]) -> str:
        """``ome-zarr`` or ``zarr``: by name, else by the attributes document (one GET)."""
        if rel.lower().endswith(".ome" + ZARR_SUFFIX):
            return "ome-zarr"
        docs = [n for n in ZARR_ATTRS_FILES if n in objects]
        for data in self.store.cat_many([f"{rel}/{n}" if rel else n for n in docs], missing_ok=True):
            if data is not None and b"multiscales" in data:
                return "ome-zarr"
        return "zarr"

    def walk(self, listing: Mapping[str, Mapping[str, Any]], below: str,
             keep: Any = None) -> list[RemoteInput]:
        """Inputs of ``listing`` (keys relative to the store) below ``below``.

        ``keep(rel, is_store)`` selects entries (a glob); ``None``: the kinds a
        directory walk ingests, hidden names skipped.
        """
        cut = len(below) + 1 if below else 0
        stores = _stores(k[cut:] for k in listing)
        grouped: dict[str, dict[str, Mapping[str, Any]]] = {s: {} for s in stores}
        out: list[RemoteInput] = []
        for key, info in listing.items():
            rel = key[cut:]
            owner = next((s for s in _ancestors(rel) if s in stores), None)
            if owner is not None:
                grouped[owner][rel[len(owner) + 1:]] = info
                continue
            if keep is not None:
                if keep(rel, False):
                    out.append(self.file(key, info))
            elif not _hidden(rel) and detect_reader(PurePosixPath(rel), is_dir=False) in INGESTED_KINDS:
                out.append(self.file(key, info))
        for s, objects in grouped.items():
            if (keep(s, True) if keep is not None else not _hidden(s)):
                out.append(self.store_input(f"{below}/{s}" if below else s, objects))
        return sorted(out, key=lambda i: i.url)


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex of a ``/``-separated glob: ``**`` any depth, ``*`` / ``?`` within a name."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                out += re.escape(pattern[i])
                i += 1
            else:
                body = pattern[i + 1:j]
                out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = j + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def _split_root(url: str) -> tuple[str, str]:
    """``(bucket URL, key)`` of an object-store URL (``memory://``: the first component)."""
    scheme, rest = url.split("://", 1)
    bucket, _, key = rest.partition("/")
    return f"{scheme}://{bucket}", key


def list_inputs(sources: Iterable[str], storage_options: Mapping[str, Any] | None = None) -> list[RemoteInput]:
    """The catalog inputs named by object-store URLs, in a stable order (see :func:`list_sources`).

    Returns
    -------
    list of RemoteInput
        Sorted by URL within each source, sources in the order given, without duplicates.
    """
    seen: set[str] = set()
    out: list[RemoteInput] = []
    for slot in list_sources(sources, storage_options):
        for item in slot:
            if item.url not in seen:
                seen.add(item.url)
                out.append(item)
    return out


def list_sources(
    sources: Iterable[str], storage_options: Mapping[str, Any] | None = None
) -> list[list[RemoteInput]]:
    """The catalog inputs named by object-store URLs, in a stable order.

    Parameters
    ----------
    sources
        URLs of folders (prefixes: listed recursively for the kinds a local
        walk takes), of globs (``*``, ``?``, ``[...]``, ``**``; a matching
        object is taken whatever its kind, a matching folder is walked), of
        objects (taken whatever their kind; a missing one is kept with
        ``size=None`` so that it gets an error row) or of zarr stores.
    storage_options
        Options of the stores' filesystem (credentials, ``endpoint_url`` ...).

    Returns
    -------
    list of list of RemoteInput
        One list per source, sorted by URL (duplicates across sources are kept).

    Raises
    ------
    FileNotFoundError
        When a bucket does not exist.
    RemoteStorageError
        When a listing is refused (credentials, policy) or keeps failing; the message names the URL.
    """
    so = dict(storage_options or {})
    explicit: dict[tuple[str, str], list[tuple[int, str]]] = {}  # (bucket, parent) -> [(slot, name)]
    slots: list[list[RemoteInput]] = []
    for src in sources:
        loc = parse_location(src)
        if loc is None:
            raise ValueError(f"{src!r} is a local path, not an object-store URL")
        if loc.protocol in ("http", "https"):
            raise ValueError(
                f"cannot catalog {loc.url!r}: HTTP servers have no listing, and catalog inputs come from "
                "object stores (s3://, gs://, az://, memory://) or local paths; download the files first, or "
                "serve them from a bucket"
            )
        root, key = _split_root(loc.url)
        lister = _Lister(root, so)
        slot: list[RemoteInput] = []
        slots.append(slot)
        magic = _MAGIC.search(key)
        if magic is not None:
            base = key[: magic.start()].rpartition("/")[0]
            pattern = key[len(base) + 1:] if base else key
            regex = _glob_regex(pattern)
            # as glob.glob: wildcards match no hidden name unless the pattern names one
            hidden_ok = any(part.startswith(".") for part in pattern.split("/"))

            def keep(rel: str, is_store: bool, regex: re.Pattern[str] = regex, hidden_ok: bool = hidden_ok) -> bool:
                if not hidden_ok and _hidden(rel):
                    return False
                parts = rel.split("/")
                for i in range(1, len(parts) + 1):
                    head = "/".join(parts[:i])
                    if regex.match(head):
                        # the entry itself, or a folder above it (walked: kinds and hidden names apply)
                        return i == len(parts) or (not _hidden(rel) and (
                            is_store or detect_reader(PurePosixPath(rel), is_dir=False) in INGESTED_KINDS))
                return False

            slot.extend(lister.walk(lister.store.find(base), base, keep))
            continue
        name = key.rsplit("/", 1)[-1]
        looks_like_file = (
            "." in name and not name.lower().endswith(ZARR_SUFFIX)
            and detect_reader(PurePosixPath(name), is_dir=False) != "unknown"
        )
        if looks_like_file:
            explicit.setdefault((root, key.rpartition("/")[0]), []).append((len(slots) - 1, key))
            continue
        listing = lister.store.find(key)
        if key in listing:  # the URL names an object (whatever its name)
            slot.append(lister.file(key, listing[key]))
            continue
        if not listing:  # nothing there: an error row names the URL
            slot.append(RemoteInput(url=loc.url, reader=detect_reader(PurePosixPath(name), is_dir=False),
                                    size=None, mtime=0, checksum=None, storage_options=so))
            continue
        cut = len(key) + 1 if key else 0
        objects = {k[cut:]: v for k, v in listing.items()}
        if key and MANIFEST_NAME not in objects and (
                name.lower().endswith(ZARR_SUFFIX) or any(m in objects for m in ZARR_MARKERS)):
            slot.append(lister.store_input(key, objects))  # the URL names a zarr store
        else:
            slot.extend(lister.walk(listing, key))
    for (root, parent), wanted in explicit.items():
        lister = _Lister(root, so)
        listing = lister.store.list_detail(parent)
        for slot_i, key in wanted:
            info = listing.get(key)
            if info is not None:
                slots[slot_i].append(lister.file(key, info))
            else:
                slots[slot_i].append(RemoteInput(
                    url=lister.url(key), reader=detect_reader(PurePosixPath(key), is_dir=False), size=None,
                    mtime=0, checksum=None, storage_options=so))
    return slots

