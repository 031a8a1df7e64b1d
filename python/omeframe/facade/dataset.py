"""The public ``Dataset`` (a reader with plans) and ``open_dataset`` / ``write_dataset``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from omeframe.engine.dask_array import DEFAULT_BLOCK_BYTES
from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import LazySource
from omeframe.facade.omearrow import OMEArrow
from omeframe.formats.dataset.gc import DEFAULT_GC_GRACE_SECONDS, GcReport, collect_garbage
from omeframe.formats.dataset.inputs import ImageInput
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.formats.dataset.source import DatasetSource
from omeframe.formats.dataset.writer import (
    DEFAULT_CHUNK_ROW_GROUP_BYTES,
    DEFAULT_FRAME_BYTES,
    WriteItem,
    WriteOptions,
    write_items,
)
from omeframe.formats.record.arrays import DEFAULT_COMPRESSION, DEFAULT_COMPRESSION_LEVEL
from omeframe.model.errors import UnsupportedFormatError
from omeframe.model.header import check_labels
from omeframe.ops.display import dataset_html
from omeframe.registry import open_source
from omeframe.storage.url import check_storage_options


class Dataset(DatasetReader):
    """A chunked image dataset directory: reads, lazy plans and appends.

    Use :func:`open_dataset` or :func:`write_dataset` to get one.

    Example
    -------
    >>> ds = omeframe.open_dataset("slides/")                       # doctest: +SKIP
    >>> roi = ds.scan("slide-1").select(y=(0, 256), x=(0, 256))     # doctest: +SKIP
    """

    def scan(self, image_id: str | None = None, level: int = 0) -> OMEArrow:
        """A lazy plan over one image (see :class:`omeframe.OMEArrow`)."""
        return OMEArrow._from_plan(LazyImage(DatasetSource(self, image_id, level)))

    def to_dask(
        self, image_id: str | None = None, level: int = 0, *, block_bytes: int | None = DEFAULT_BLOCK_BYTES
    ) -> Any:
        """One image (and level) as a TCZYX ``dask.array`` of whole stored chunks, read by byte ranges.

        The tasks carry this dataset as its path and the generation it reads,
        so workers read exactly this generation even while others append.
        Neighbouring chunks are merged into blocks of about ``block_bytes``
        (default 16 MiB, aligned with the chunks); ``None`` gives one block
        (one byte-range read) per chunk.

        Example
        -------
        >>> arr = omeframe.open_dataset("slides/").to_dask("slide-1", level=1)   # doctest: +SKIP
        >>> arr[0, 0].max().compute()                                          # doctest: +SKIP
        """
        return LazyImage(DatasetSource(self, image_id, level)).to_dask(block_bytes)

    def _repr_html_(self) -> str:
        """Notebook display: path, format, generation and the first images (metadata only)."""
        return dataset_html(self)

    def zarr_store(self, image_id: str | None = None, level: int = 0) -> Any:
        """A read-only zarr v3 store of one image's ``level``, serving its stored chunks.

        See :meth:`omeframe.OMEArrow.zarr_store`.

        Example
        -------
        >>> zarr.open_array(omeframe.open_dataset("slides/").zarr_store("s1"), mode="r")   # doctest: +SKIP
        """
        return self.scan(image_id).zarr_store(level)

    def zarr_group(self, image_id: str | None = None) -> Any:
        """One image as a read-only OME-Zarr 0.5 ``zarr.Group`` over all its stored levels.

        See :meth:`omeframe.OMEArrow.zarr_group`.

        Example
        -------
        >>> omeframe.open_dataset("slides/").zarr_group("s1")["0"].shape   # doctest: +SKIP
        """
        return self.scan(image_id).zarr_group()

    def append(self, images: Any, **options: Any) -> Dataset:
        """Add images (same options as :func:`write_dataset`); returns the new state.

        This object keeps reading the generation it opened; the returned
        ``Dataset`` reads the new one. With ``retries=N`` an append that loses
        the commit race to another writer merges into its generation.

        Example
        -------
        >>> ds = ds.append(np.zeros((64, 64), np.uint8), image_ids=["extra"], retries=3)   # doctest: +SKIP
        """
        if self.store is not None:
            options.setdefault("storage_options", self.store.storage_options)
        return write_dataset(images, self.location, mode="append", **options)

    @property
    def generation(self) -> int:
        """The committed generation this object reads (fixed until the dataset is reopened)."""
        return self.manifest.generation

    def gc(self, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS) -> GcReport:
        """Remove superseded generations and unreferenced files older than ``grace_seconds``.

        The current generation is never removed; a generation superseded less
        than ``grace_seconds`` ago (default one hour) stays readable, and so do
        files written less than ``grace_seconds`` ago (a concurrent write in
        progress). Writers run this after every commit; call it to collect at
        once, e.g. ``grace_seconds=0`` when no other process uses the dataset.
        See ``docs/concepts/guarantees.md``.

        Returns
        -------
        GcReport
            The generations kept and the files removed.

        Example
        -------
        >>> omeframe.open_dataset("slides/").gc(grace_seconds=0).removed   # doctest: +SKIP
        """
        if self.store is not None:
            raise UnsupportedFormatError(
                f"garbage collection of datasets in object storage is not supported ({self.where!r}); "
                "expire superseded files with a bucket lifecycle rule, or copy the dataset locally and gc() it"
            )
        return collect_garbage(self.path, grace_seconds)


def _write_source(obj: object, dim_order: str | None) -> LazySource | ImageInput:
    """What the writer reads for one of :func:`write_dataset`'s images."""
    if isinstance(obj, ImageInput):
        return obj
    if isinstance(obj, Mapping) and "pixels_meta" not in obj:
        raise TypeError(
            f"a dict is read as one OME-Arrow record (record.as_py()), but this one has no 'pixels_meta' "
            f"(keys {sorted(map(str, obj))[:5]}); to write images under ids, pass a list and "
            "image_ids=: write_dataset(list(d.values()), path, image_ids=list(d))"
        )
    if not isinstance(obj, (str, os.PathLike)):
        try:
            # dim_order names the axes of arrays; other images carry their own (documented in write_dataset)
            return open_source(obj, dim_order=dim_order if isinstance(obj, np.ndarray) else None)
        except UnsupportedFormatError:
            pass
    raise UnsupportedFormatError(
        f"cannot write an image from a {type(obj).__name__}; pass a numpy array, an OME-Arrow record, "
        "an OMEArrow, a source or lazy plan (for files: omeframe.scan(path)) or an ImageInput"
    )


def open_dataset(path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None) -> Dataset:
    """Open a chunked image dataset directory written by :func:`omeframe.write_dataset`.

    ``path`` may be a URL (``s3://bucket/slides``, ``gs://``, ``az://``,
    ``https://``, ``file://``); ``storage_options`` go to its fsspec
    filesystem (credentials, ``endpoint_url`` ...; see
    ``docs/howto/object-storage.md``). A remote open costs one round trip
    (the listing and the images index, which carries the manifest, fetched together); a region read then
    fetches its chunks in one more (coalesced, concurrent requests).

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a dataset directory.
    CorruptFileError
        If its manifest or images table is unreadable.

    Example
    -------
    >>> ds = omeframe.open_dataset("slides/")    # doctest: +SKIP
    >>> ds.image_ids                              # doctest: +SKIP
    >>> remote = omeframe.open_dataset("s3://bucket/slides", storage_options={"anon": True})  # doctest: +SKIP
    """
    return Dataset(path, storage_options=storage_options)


def write_dataset(
    images: Any,
    path: str | os.PathLike[str],
    *,
    format: Literal["parquet", "vortex"] | None = None,
    mode: Literal["create", "append", "overwrite"] = "create",
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    image_ids: Sequence[str] | None = None,
    dim_order: str | None = None,
    level: int = 0,
    row_group_bytes: int = DEFAULT_CHUNK_ROW_GROUP_BYTES,
    frame_bytes: int | None = DEFAULT_FRAME_BYTES,
    progress: bool | None = None,
    retries: int = 0,
    gc_grace_seconds: float = DEFAULT_GC_GRACE_SECONDS,
    storage_options: Mapping[str, Any] | None = None,
    client: Any = None,
) -> Dataset:
    """Write images into a chunked dataset directory, streaming chunk by chunk.

    The write is atomic and durable: every file is fsynced and the new
    generation becomes visible at once when its manifest is created (by
    compare-and-swap, so of two concurrent writers exactly one commits on a
    given generation); a crash leaves the previous or the new dataset. Open
    ``Dataset`` objects keep reading the generation they opened. See
    ``docs/concepts/guarantees.md``.

    Parameters
    ----------
    images
        One image or a list: numpy arrays (axes ``dim_order``), OME-Arrow
        records, ``OMEArrow`` objects, sources or lazy plans (open files with
        :func:`omeframe.scan`), or
        :class:`~omeframe.formats.dataset.inputs.ImageInput` block readers;
        all are read block by block.
    path
        The dataset directory (created when missing), or an ``s3://`` /
        ``memory://`` URL: parts and the images table are uploaded first, then
        the generation is committed by a conditional put of its manifest.
    storage_options
        Options of the URL's fsspec filesystem (credentials, ``endpoint_url`` ...).
    format, mode, chunk_shape, compression, compression_level, row_group_bytes, frame_bytes, progress
        See :class:`~omeframe.formats.dataset.writer.WriteOptions`.
    retries
        When another process commits to the dataset while this write runs,
        rebase onto its generation and retry up to this many times (appends
        merge their images into it when the image ids do not clash). ``0``
        raises :class:`~omeframe.errors.ConcurrentWriteError` at once.
    gc_grace_seconds
        Grace period of the garbage collection run after the commit: a
        superseded generation stays readable at least this long.
    image_ids
        Identifiers, one per image (default: the record's id, else ``img-<n>``).
    dim_order
        Axes of numpy inputs (inferred from the rank when ``None``).
    level
        Pyramid level the images are written as (0 = full resolution).
    client
        A ``dask.distributed.Client``: read, encode and write the chunks in
        tasks on its workers (part files per task), then commit one manifest
        from this process. The workers must see ``path``; file-backed inputs
        travel as their paths. Pixels and chunk checksums equal a local
        write's. See ``docs/howto/scale-out-dask.md``.

    Returns
    -------
    Dataset
        The dataset as committed.

    Raises
    ------
    FileExistsError
        In ``"create"`` mode when ``path`` already holds a dataset.
    ValueError
        For duplicate image ids or bad options; nothing is committed then.
    ConcurrentWriteError
        When another writer committed first (and ``retries`` did not allow,
        or its images clash); nothing is committed then.

    Example
    -------
    >>> ds = omeframe.write_dataset(np.zeros((1, 2, 3, 600, 700), np.uint16), "out/", image_ids=["a"])  # doctest: +SKIP
    >>> ds = omeframe.write_dataset([omeframe.scan(p) for p in paths], "big/", client=client)  # doctest: +SKIP
    """
    check_storage_options(storage_options, path)
    given = list(images) if isinstance(images, (list, tuple)) else [images]
    if not given:
        raise ValueError("write_dataset needs at least one image")
    check_labels("image_ids", image_ids, len(given))
    items = [
        WriteItem(_write_source(obj, dim_order), None if image_ids is None else str(image_ids[i]), level, None)
        for i, obj in enumerate(given)
    ]
    opts = WriteOptions(
        format=format, mode=mode, chunk_shape=chunk_shape, compression=compression,
        compression_level=compression_level, row_group_bytes=row_group_bytes,
        frame_bytes=frame_bytes, progress=progress, retries=retries, gc_grace_seconds=gc_grace_seconds,
        storage_options=dict(storage_options) if storage_options else None,
    )
    committed = write_items(items, path, opts, client=client)
    return Dataset(path, generation=committed.generation, storage_options=storage_options)


# ---------------------------------------------------------------------------
# ingest: sources into records or datasets
# ---------------------------------------------------------------------------
