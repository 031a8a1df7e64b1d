"""Chunked image datasets: an images table plus a chunks table, in Parquet or Vortex.

The storage side only: :class:`DatasetReader`, :class:`DatasetSource` and
:func:`write_items` (which returns the committed :class:`Manifest`). The
public :class:`omeframe.Dataset`, ``open_dataset`` and ``write_dataset`` live
in :mod:`omeframe.facade`.
"""

from omeframe.formats.dataset.gc import DEFAULT_GC_GRACE_SECONDS, GcReport, collect_garbage
from omeframe.formats.dataset.manifest import MANIFEST_NAME, Manifest
from omeframe.formats.dataset.reader import DatasetReader, ImageEntry
from omeframe.formats.dataset.schema import CHUNKS_SCHEMA, IMAGES_SCHEMA
from omeframe.formats.dataset.source import DatasetSource
from omeframe.formats.dataset.writer import WriteItem, WriteOptions, write_items

__all__ = [
    "DatasetReader",
    "DatasetSource",
    "ImageEntry",
    "Manifest",
    "MANIFEST_NAME",
    "WriteItem",
    "WriteOptions",
    "write_items",
    "CHUNKS_SCHEMA",
    "IMAGES_SCHEMA",
    "collect_garbage",
    "GcReport",
    "DEFAULT_GC_GRACE_SECONDS",
]
