"""Chunked image datasets: an images table plus a chunks table, in Parquet or Vortex."""

from .reader import Dataset, ImageEntry, open_dataset
from .schema import CHUNKS_SCHEMA, IMAGES_SCHEMA
from .writer import write_dataset

__all__ = ["Dataset", "ImageEntry", "open_dataset", "write_dataset", "CHUNKS_SCHEMA", "IMAGES_SCHEMA"]
