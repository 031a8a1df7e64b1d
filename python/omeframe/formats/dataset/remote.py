"""Datasets in object storage: the remote forms of opening, reading and committing.

A dataset under ``s3://bucket/prefix`` has the same layout as on disk
(``_manifests/<generation>.json``, ``manifest.json``, ``images-*.arrow`` /
``.parquet``, ``chunks/part-*``). What differs is how it is opened and
committed, and that is all here:

* **open** — the listing of ``_manifests/`` and the copy of the newest
  images index (:data:`LATEST_INDEX`), which carries its generation's
  manifest in its schema metadata, are fetched concurrently: two requests,
  one round trip. Only when the copy is missing, damaged or of an older
  generation than the listing's newest is that generation's manifest (and
  then its images index) fetched too; ``manifest.json`` is read only for a
  dataset without ``_manifests/`` (the layout before generations). The
  chunks a region touches, coalesced and fetched concurrently, are the
  second round trip.
* **commit** — parts and the images table are uploaded first, then the
  generation's manifest is created with a *conditional* put (S3
  ``If-None-Match: *``, GCS ``ifGenerationMatch=0``): of two writers based on generation ``n`` exactly one
  creates ``n + 1``; the other gets
  :class:`~omeframe.model.errors.ConcurrentWriteError` (and with
  ``retries=`` rebases and tries again). Readers list generations, so they
  never see a generation whose files are not all there.
"""

from __future__ import annotations

import re

import pyarrow as pa

from omeframe.formats.dataset.manifest import MANIFEST_NAME, MANIFESTS_DIR, Manifest, _encode, _parse
from omeframe.formats.vortex.file import read_vortex_table
from omeframe.model.errors import ConcurrentWriteError, CorruptFileError, reraise_access_error
from omeframe.storage.crc import crc32_function
from omeframe.storage.ipc import read_ipc_file
from omeframe.storage.remote import RemoteStore, _run_all

__all__ = [
    "read_manifest_remote",
    "read_images_remote",
    "list_generations_remote",
    "commit_manifest_remote",
]

_GEN_RE = re.compile(r"^(\d+)\.json$")

#: A copy of the newest generation's images index (Arrow IPC), fetched with the
#: listing so that a cold open needs no separate round trip for it. Its schema
#: metadata names the images table it copies and holds its generation's
#: manifest; a stale or damaged copy is simply not used.
LATEST_INDEX = "_index/images-latest.arrow"
_INDEX_KEY = b"omeframe.images"
_MANIFEST_KEY = b"omeframe.manifest"


def _gen_rel(generation: int) -> str:
    return f"{MANIFESTS_DIR}/{int(generation):010d}.json"


def list_generations_remote(store: RemoteStore) -> list[int]:
    """Generation numbers under ``_manifests/`` (ascending; one LIST request)."""
    return sorted(int(m.group(1)) for m in map(_GEN_RE.match, store.list(MANIFESTS_DIR)) if m)


def read_manifest_remote(
    store: RemoteStore, generation: int | None = None, hint: dict[str, bytes] | None = None
) -> tuple[Manifest, int]:
    """The current (or ``generation``'s) manifest and the bytes read for it.

    The current manifest costs one round trip of two requests when the
    latest-index copy is current: the ``_manifests/`` listing and the copy,
    which carries the manifest. ``hint``, when given, then receives the copy
    under ``"index"`` for :func:`read_images_remote` (without ``hint`` the
    copy is not fetched, and the manifest is the newest generation's file).

    Raises
    ------
    FileNotFoundError
        When there is no dataset at the store's URL, or no such generation.
    CorruptFileError
        When the manifest is unreadable.
    """
    where = store.url
    if generation is not None:
        try:
            data = store.cat(_gen_rel(generation))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"dataset {where!r} has no generation {generation} (it was never committed, or was "
                f"garbage-collected); its generations are {list_generations_remote(store)}"
            ) from None
        return _parse_remote(store, _gen_rel(generation), data), len(data)

    def latest() -> bytes | None:
        try:
            return store.cat(LATEST_INDEX)
        except FileNotFoundError:
            return None

    gens_box: list[list[int]] = []

    def listing() -> bytes | None:
        gens_box.append(list_generations_remote(store))
        return None

    index = _run_all([listing, latest])[1] if hint is not None else listing()
    gens = gens_box[0]
    if index is not None and hint is not None:
        hint["index"] = index  # read_images_remote uses it when it copies the manifest's images table
    if gens:
        carried = _carried_manifest(store, index) if index is not None else None
        if carried is not None and carried.generation == gens[-1]:
            return carried, len(index or b"")
        data = store.cat(_gen_rel(gens[-1]))
        return _parse_remote(store, _gen_rel(gens[-1]), data), len(data) + len(index or b"")
    try:
        data = store.cat(MANIFEST_NAME)  # a dataset of the layout before _manifests/
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{where!r} is not an omeframe dataset: it has no {MANIFEST_NAME} and no {MANIFESTS_DIR}/ "
            "(check the URL; write one with omeframe.write_dataset)"
        ) from None
    return _parse_remote(store, MANIFEST_NAME, data), len(data) + len(index or b"")


def _parse_remote(store: RemoteStore, rel: str, data: bytes) -> Manifest:
    # _parse only formats its path into messages when given the bytes: the URL reads right there.
    return _parse(store.url_of(rel), data)  # type: ignore[arg-type]


def _carried_manifest(store: RemoteStore, index: bytes) -> Manifest | None:
    """The manifest a latest-index copy carries, or ``None`` (no such metadata, or damaged)."""
    try:
        meta = pa.ipc.open_file(pa.BufferReader(index)).schema.metadata or {}
    except (pa.ArrowException, OSError, UnicodeDecodeError):
        return None  # a damaged copy is only a missed shortcut
    raw = meta.get(_MANIFEST_KEY)
    if raw is None:
        return None
    try:
        m = _parse_remote(store, LATEST_INDEX, raw)
    except CorruptFileError:
        return None
    return m if meta.get(_INDEX_KEY) == (m.images or "").encode() else None


def read_images_remote(
    store: RemoteStore, manifest: Manifest, hint: dict[str, bytes] | None = None
) -> tuple[pa.Table, str, int]:
    """The images table of ``manifest``: ``(table, file name read, bytes read)``.

    Uses the latest-index copy in ``hint`` when it copies ``manifest``'s
    images table (no request); else reads the Arrow IPC copy (one GET); falls
    back to the Parquet table when the copy is missing. Vortex images tables
    without a copy are read whole.
    """
    if manifest.images is None:
        raise CorruptFileError(
            f"dataset {store.url!r}: generation {manifest.generation}'s manifest names no images table"
        )
    rel = manifest.images
    fast = rel.rsplit(".", 1)[0] + ".arrow"
    if hint and "index" in hint:
        try:
            t = read_ipc_file(hint["index"], "(latest index)")
            meta = t.schema.metadata or {}
            if meta.get(_INDEX_KEY) == rel.encode() and _copies(t, manifest, fast):
                return t.replace_schema_metadata(None), fast, 0
        except CorruptFileError:
            pass  # a damaged copy is only a missed shortcut: read the real index
    try:
        data = store.cat(fast)
    except FileNotFoundError:
        pass
    else:
        what = f"(images index) {store.url_of(fast)!r}"
        manifest.check_file(fast, data, what)
        return read_ipc_file(data, what), fast, len(data)
    try:
        data = store.cat(rel)
    except FileNotFoundError:
        raise CorruptFileError(f"dataset {store.url!r} lacks its images table {rel!r}") from None
    manifest.check_file(rel, data, f"images table {store.url_of(rel)!r}")
    try:
        if manifest.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(pa.BufferReader(data)).read(), rel, len(data)
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "images.vortex"
            p.write_bytes(data)
            return read_vortex_table(p), rel, len(data)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        reraise_access_error(exc)
        raise CorruptFileError(f"unreadable images table {store.url_of(rel)!r}: {exc}") from exc


def _copies(index: pa.Table, manifest: Manifest, fast: str) -> bool:
    """Whether the latest-index table ``index`` holds the bytes of ``manifest``'s checked IPC copy ``fast``.

    The latest index is the copy written again with two more metadata keys;
    written again without them it must give the copy's bytes, whose CRC-32
    the manifest records. A manifest without that CRC (written before
    omeframe recorded one) takes the index as it is. A mismatch (damage, or
    another pyarrow writing IPC files differently) only skips the shortcut.
    """
    want = manifest.checksums.get(fast)
    if want is None:
        return True
    meta = {k: v for k, v in (index.schema.metadata or {}).items() if k not in (_INDEX_KEY, _MANIFEST_KEY)}
    sink = pa.BufferOutputStream()
    plain = index.replace_schema_metadata(meta or None)
    with pa.ipc.new_file(sink, plain.schema) as w:
        w.write_table(plain)
    return bool(crc32_function()(sink.getvalue()) == want)


def commit_manifest_remote(store: RemoteStore, manifest: Manifest, images: pa.Table | None = None) -> None:
    """Commit ``manifest`` as its generation by a conditional put, then refresh ``manifest.json``
    (and, given the generation's ``images`` table, the latest-index copy).

    Raises
    ------
    ConcurrentWriteError
        When the generation exists already (another writer committed first);
        nothing was committed by this call.
    """
    try:
        store.put(_gen_rel(manifest.generation), _encode(manifest), if_none_match=True)
    except ConcurrentWriteError:
        raise ConcurrentWriteError(
            f"concurrent write to dataset {store.url!r}: generation {manifest.generation} was committed "
            f"by another writer first, so this write (based on generation {manifest.generation - 1}) "
            "committed nothing; reopen the dataset and write again, or pass retries=N to rebase and "
            "retry automatically"
        ) from None
    # manifest.json is a convenience copy for tools; readers trust the listing.
    gens = list_generations_remote(store)
    if gens and gens[-1] == manifest.generation:
        if images is not None and manifest.images is not None:
            meta = dict(images.schema.metadata or {})
            meta[_INDEX_KEY] = manifest.images.encode()
            meta[_MANIFEST_KEY] = _encode(manifest)
            sink = pa.BufferOutputStream()
            tagged = images.replace_schema_metadata(meta)
            with pa.ipc.new_file(sink, tagged.schema) as w:
                w.write_table(tagged)
            store.put(LATEST_INDEX, sink.getvalue().to_pybytes())
        store.put(MANIFEST_NAME, _encode(manifest))
