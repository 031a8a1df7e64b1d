"""Catalogs in a bucket: build in a local working copy, publish by upload, commit point last.

A catalog at ``s3://bucket/plates.catalog`` has the local layout
(``catalog.parquet``, ``images.parquet``, ``dataset/``), but an object store
can neither rename nor replace two objects at once, so a build there works
differently from a local one (:mod:`omeframe.catalog.commit`):

* **Lock.** A build first creates ``.omeframe-catalog.lock`` with a
  *conditional* put (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``): of two builds exactly one
  creates it, the other raises :class:`~omeframe.catalog.commit.CatalogError`
  naming the URL and the holder. The lock records a random token; before
  each commit the build reads it back and stops (committing nothing) when
  the lock is no longer its own. A build that dies leaves its lock: the
  message of the next build says which object to delete. Stores without
  conditional writes (only S3, GCS and ``memory://`` have them here) are refused
  before anything is written.
* **Working copy.** ``catalog.parquet`` and ``images.parquet`` are fetched
  into a local temporary directory (whole objects: the build rewrites
  ``images.parquet`` anyway and resumes from ``catalog.parquet``); the build
  runs there exactly as a local one, its workers included.
* **Dataset.** Large images go straight to the remote ``dataset/``, which
  commits its own generations by conditional manifest creation
  (:func:`omeframe.formats.dataset.remote.commit_manifest_remote`); images of
  re-ingested files are dropped by committing a generation without them.
* **Publish.** Each commit of the working copy (checkpoints, Ctrl-C and the
  end) is followed by uploading ``images.parquet`` and then
  ``catalog.parquet``, the commit point, written last. Each PUT replaces its
  object at once, so a reader sees the previous or the new version of each;
  as for a local catalog, rows of ``images.parquet`` may run ahead of
  ``catalog.parquet`` between two PUTs, never behind it.

Example
-------
>>> res = omeframe.catalog.build("s3://bucket/plates/", "s3://bucket/plates.catalog",  # doctest: +SKIP
...                              storage_options={"endpoint_url": "http://127.0.0.1:9000"})
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from omeframe.catalog.commit import CATALOG_NAME, DATASET_NAME, IMAGES_NAME, LOCK_NAME, CatalogError
from omeframe.formats.dataset.manifest import Manifest
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.formats.dataset.remote import commit_manifest_remote
from omeframe.formats.dataset.writer import _write_images_table
from omeframe.model.errors import ConcurrentWriteError
from omeframe.storage.remote import RemoteStore

__all__ = ["RemoteCatalog", "drop_remote_dataset_images"]


@dataclass
class RemoteCatalog:
    """The catalog directory at ``url`` on an object store (see the module docstring).

    Attributes
    ----------
    url
        The catalog's URL (``s3://bucket/plates.catalog``).
    storage_options
        Options of its filesystem.
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    published: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.store = RemoteStore(self.url, self.storage_options)
        self.url = self.store.url
        self.token = uuid.uuid4().hex

    @property
    def dataset_url(self) -> str:
        return self.store.url_of(DATASET_NAME)

    # ---- the lock --------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[RemoteCatalog]:
        """Hold the catalog's lock object for the block (see the module docstring).

        Raises
        ------
        CatalogError
            When another build holds the lock.
        """
        body = json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
        try:
            self.store.put(LOCK_NAME, body, if_none_match=True)
        except ConcurrentWriteError:
            holder = self._holder()
            raise CatalogError(
                f"another build is writing the catalog {self.url!r} ({holder}); wait for it to finish. "
                f"If no build is running (one died), delete {self.store.url_of(LOCK_NAME)!r} and build again"
            ) from None
        try:
            yield self
        finally:
            if self._holder_token() == self.token:
                self.store.delete(LOCK_NAME)

    def _holder_token(self) -> str | None:
        try:
            return str(json.loads(self.store.cat(LOCK_NAME)).get("token"))
        except (FileNotFoundError, ValueError):
            return None

    def _holder(self) -> str:
        try:
            info = json.loads(self.store.cat(LOCK_NAME))
            return f"locked by host {info.get('host')!r} pid {info.get('pid')} since {info.get('started')}"
        except (FileNotFoundError, ValueError):
            return "its lock object was just released or is unreadable"

    # ---- the working copy ------------------------------------------------------
    def pull(self, work: Path) -> None:
        """Fetch ``catalog.parquet`` and ``images.parquet`` (when they exist) into ``work``."""
        names = [CATALOG_NAME, IMAGES_NAME]
        for name, data in zip(names, self.store.cat_many(names, missing_ok=True), strict=True):
            if data is not None:
                (work / name).write_bytes(data)
                self.published.add(name)

    def publish(self, work: Path) -> None:
        """Upload ``images.parquet``, then ``catalog.parquet`` (the commit point) from ``work``.

        Raises
        ------
        CatalogError
            When this build no longer holds the lock (nothing is uploaded).
        """
        if self._holder_token() != self.token:
            raise CatalogError(
                f"the lock of catalog {self.url!r} is no longer this build's (deleted or taken over by "
                "another build): nothing more was published; build again"
            )
        for name in (IMAGES_NAME, CATALOG_NAME):
            if (work / name).is_file():
                self.store.upload(work / name, name)
                self.published.add(name)

    def write_catalog(self, write: Any, work: Path) -> Any:
        """A ``write_catalog`` seam that writes the working copy, then publishes it."""

        def run(path: Path, table: pa.Table) -> None:
            write(path, table)
            self.publish(work)

        return run


def drop_remote_dataset_images(url: str, storage_options: Mapping[str, Any] | None, ids: set[str]) -> None:
    """Commit a generation of the remote dataset at ``url`` without the images ``ids``.

    The chunks stay (unreferenced); the new images table is uploaded first, then
    the generation committed by a conditional manifest put. Nothing happens when
    there is no dataset or it holds none of ``ids``.

    Raises
    ------
    ConcurrentWriteError
        When another writer committed the next generation first.
    """
    import pyarrow.compute as pc

    if not ids:
        return
    try:
        ds = DatasetReader(url, storage_options=storage_options)
    except FileNotFoundError:
        return
    table = ds.images_table
    mask = pc.is_in(table["image_id"], value_set=pa.array(sorted(ids), pa.string()))
    if not pc.any(mask).as_py():
        return
    m = ds.manifest
    gen = m.generation + 1
    ext = "parquet" if m.format == "parquet" else "vortex"
    images_rel = f"images-{gen:05d}-{uuid.uuid4().hex[:8]}.{ext}"
    kept = table.filter(pc.invert(mask))
    store = RemoteStore(url, storage_options)
    with tempfile.TemporaryDirectory(prefix="omeframe-drop-") as tmp:
        sums = _write_images_table(kept, Path(tmp) / images_rel, m.format)
        for rel in (images_rel, images_rel.rsplit(".", 1)[0] + ".arrow"):
            store.upload(Path(tmp) / rel, rel)
    commit_manifest_remote(store, Manifest(format=m.format, generation=gen, images=images_rel,
                                           parts=list(m.parts), checksums=sums), kept)
