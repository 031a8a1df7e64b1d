"""Arrow schemas of a chunked image dataset: the images table and the chunks table.

Both are plain tables: DuckDB, Polars and pyarrow read them without omeframe.
A record's ``chunks`` list, unnested and keyed by ``image_id``/``level``, has
the same key fields as the chunks table: the two layouts are views of one model.
"""

from __future__ import annotations

import pyarrow as pa

from omeframe.model.arrow import CHUNK_GRID_STRUCT, PIXELS_META_STRUCT

__all__ = ["CHUNKS_SCHEMA", "IMAGES_SCHEMA", "DATASET_FORMAT_VERSION", "dataset_schemas", "CHUNK_KEY"]

#: Version of the dataset directory layout (manifest ``format_version``).
DATASET_FORMAT_VERSION = 1

#: Sort key of the chunks table within an image.
CHUNK_KEY = ("image_id", "level", "t", "c", "z", "y", "x")

CHUNKS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("level", pa.int16(), nullable=False),
        pa.field("t", pa.int32(), nullable=False),
        pa.field("c", pa.int16(), nullable=False),
        pa.field("z", pa.int32(), nullable=False),
        pa.field("y", pa.int32(), nullable=False),
        pa.field("x", pa.int32(), nullable=False),
        pa.field("shape_z", pa.int32(), nullable=False),
        pa.field("shape_y", pa.int32(), nullable=False),
        pa.field("shape_x", pa.int32(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("codec", pa.string()),
        pa.field("min", pa.float64()),
        pa.field("max", pa.float64()),
        pa.field("mean", pa.float64()),
        pa.field("nonzero", pa.int64()),
        pa.field("checksum", pa.uint32(), nullable=False),
        pa.field("nbytes", pa.int64(), nullable=False),
        pa.field("pixel_bytes", pa.large_binary(), nullable=False),
    ]
)

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("level", pa.int16(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("image_type", pa.string()),
        pa.field("parent_id", pa.string()),
        pa.field("acquisition_datetime", pa.timestamp("us")),
        pa.field("pixels_meta", PIXELS_META_STRUCT),
        pa.field("chunk_grid", CHUNK_GRID_STRUCT),
        pa.field("dtype", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("n_chunks", pa.int64()),
        pa.field("stored_bytes", pa.int64()),
        pa.field("part", pa.string()),
        pa.field("row_start", pa.int64()),
        # Where each chunk's stored bytes sit inside the part file, in grid
        # (t, c, z, y, x) order: lets a reader fetch one chunk with one pread.
        pa.field("chunk_offsets", pa.list_(pa.int64())),
        pa.field("chunk_lengths", pa.list_(pa.int64())),
        pa.field("chunk_checksums", pa.list_(pa.uint32())),
        # When an image's chunks span several part files (Vortex writes roll
        # over to bound memory): the parts, and each chunk's part index and
        # row within it. Null when every chunk lies in ``part`` from ``row_start``.
        pa.field("parts", pa.list_(pa.string())),
        pa.field("chunk_part", pa.list_(pa.int16())),
        pa.field("chunk_rows", pa.list_(pa.int64())),
        # Framed zstd chunks: each chunk is concatenated independent zstd
        # frames (with content checksums) of ``frame_rows`` rows of its
        # flattened Z*Y row space; ``chunk_frame_lengths`` lists every frame's
        # stored length, chunk after chunk in grid order, so a reader fetches
        # and decodes only the frames a selection touches. Null: one frame per chunk.
        pa.field("frame_rows", pa.int32()),
        pa.field("chunk_frame_lengths", pa.list_(pa.int32())),
        # True where a chunk is stored raw although ``codec`` names a codec
        # (compression presets keep chunks that do not shrink raw). Null: none.
        pa.field("chunk_raw", pa.list_(pa.bool_())),
    ]
)


def dataset_schemas() -> dict[str, tuple[pa.Schema, str]]:
    """Schemas published in ``schemas/`` for the dataset layout."""
    return {
        "dataset_images": (
            IMAGES_SCHEMA,
            "Dataset images table: one row per image and pyramid level, with the chunk byte index.",
        ),
        "dataset_chunks": (
            CHUNKS_SCHEMA,
            "Dataset chunks table: one row per chunk, sorted by (t, c, z, y, x) within an image.",
        ),
    }
