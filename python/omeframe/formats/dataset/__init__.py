"""Chunked image datasets: an images table plus a chunks table, in Parquet or Vortex."""

from omeframe.formats.dataset.reader import Dataset, ImageEntry, open_dataset
from omeframe.formats.dataset.schema import CHUNKS_SCHEMA, IMAGES_SCHEMA
from omeframe.formats.dataset.writer import write_dataset

__all__ = ["Dataset", "ImageEntry", "open_dataset", "write_dataset", "CHUNKS_SCHEMA", "IMAGES_SCHEMA"]
