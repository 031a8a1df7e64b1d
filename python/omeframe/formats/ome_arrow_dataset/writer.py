"""Writer for ome-arrow 0.1.0 typed-chunk dataset directories (the layout :mod:`.source` reads).

:func:`write_ome_arrow_dataset` writes the folder that
``ome_arrow.write_ome_arrow_dataset`` writes (``_ome_arrow_dataset.json``,
``images.parquet``, ``chunks.parquet`` and, optionally, ``index.parquet``,
all tagged ``ome.arrow.layout = typed-chunk-dataset``), so ome-arrow 0.1.0
opens it with ``OMEArrowDataset`` and omeframe opens it with ``scan``. Every
image is read from its source chunk row by chunk row (one band of chunks at a
time), never as a whole; pixels keep their dtype unless ``pixel_dtype`` is
given. The tables are written beside the target first and moved into place
when complete, so a failed write leaves the previous folder as it was.
:func:`choose_chunking` picks the chunk shape from an access pattern.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import LazySource
from omeframe.formats.ome_arrow_dataset.source import CHUNKS, IMAGES, INDEX, LAYOUT, MARKER
from omeframe.model.arrow import OME_ARROW_TAG_TYPE, OME_ARROW_TAG_VERSION
from omeframe.storage.atomic import fsync_dir

__all__ = [
    "AccessPattern",
    "ChunkChoice",
    "Layout",
    "choose_chunking",
    "write_ome_arrow_dataset",
    "IMAGE_TABLE_SCHEMA",
    "CHUNK_TABLE_SCHEMA",
    "INDEX_TABLE_SCHEMA",
]

#: Physical layouts: whole image, 2-D tiles, Z volumes, single planes, 3-D blocks.
Layout = Literal["auto", "image", "tile", "volume", "z-plane", "block", "hybrid"]
#: Access-pattern presets that choose a layout and chunk shape.
AccessPattern = Literal[
    "balanced",
    "full_image",
    "random_image",
    "crop_2d",
    "fast_crop_2d",
    "full_volume",
    "plane_3d",
    "subvolume_3d",
    "balanced_5d",
    "time_series",
]

_AXES = ("t", "c", "z", "y", "x")
_I32 = pa.int32()
_GEOMETRY = [pa.field(a, _I32) for a in _AXES] + [pa.field(f"shape_{a}", _I32) for a in _AXES]

IMAGE_TABLE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("image_type", pa.string()),
        pa.field("dtype", pa.string()),
        *(pa.field(f"size_{a}", _I32) for a in _AXES),
        pa.field("layout", pa.string()),
        *(pa.field(f"chunk_{a}", _I32) for a in _AXES),
        pa.field("compression", pa.string()),
        pa.field("channels_json", pa.string()),
    ]
)
CHUNK_TABLE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("chunk_id", pa.int64()),
        *_GEOMETRY,
        pa.field("dtype", pa.string()),
        pa.field("pixel_bytes", pa.large_binary()),
    ]
)
INDEX_TABLE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("chunk_id", pa.int64()),
        pa.field("row_group_id", _I32),
        pa.field("row_index_in_group", _I32),
        pa.field("fragment_path", pa.string()),
        *_GEOMETRY,
    ]
)

_PATTERN_LAYOUT = {
    "balanced": "block",
    "full_image": "image",
    "random_image": "image",
    "crop_2d": "tile",
    "fast_crop_2d": "tile",
    "full_volume": "volume",
    "plane_3d": "z-plane",
    "subvolume_3d": "block",
    "balanced_5d": "block",
    "time_series": "block",
}
_LAYOUTS = ("auto", "image", "tile", "volume", "z-plane", "block", "hybrid")


@dataclass(frozen=True)
class ChunkChoice:
    """A resolved chunking: layout, TCZYX chunk shape, Parquet codec and why.

    Example
    -------
    >>> choose_chunking((1, 1, 1, 600, 600), "uint8", access_pattern="crop_2d").chunk_shape
    (1, 1, 1, 512, 512)
    """

    layout: str
    chunk_shape: tuple[int, int, int, int, int]
    compression: str | None
    rationale: str


def _five(values: Sequence[int], what: str) -> tuple[int, int, int, int, int]:
    if len(values) != 5:
        raise ValueError(f"{what} must be a five-value TCZYX sequence, got {tuple(values)!r}")
    out = tuple(int(v) for v in values)
    return out  # type: ignore[return-value]


def choose_chunking(
    shape: Sequence[int],
    dtype: Any,
    *,
    layout: Layout = "auto",
    access_pattern: AccessPattern = "balanced",
    target_chunk_mb: float = 4.0,
    compression: str | None = "zstd",
    chunk_shape: Sequence[int] | None = None,
) -> ChunkChoice:
    """Choose the layout and TCZYX chunk shape of a typed-chunk dataset image.

    Parameters
    ----------
    shape
        Image shape ``(T, C, Z, Y, X)``.
    dtype
        Pixel dtype (sets the chunk size in bytes).
    layout
        ``"image"`` (one chunk), ``"volume"`` (one ZYX block per T, C),
        ``"z-plane"`` (one plane per chunk), ``"tile"`` (2-D tiles),
        ``"block"`` (3-D blocks), ``"hybrid"`` (as ``"image"``), or
        ``"auto"``: chosen from ``access_pattern``.
    access_pattern
        ``"balanced"``, ``"full_image"``, ``"random_image"``, ``"crop_2d"``,
        ``"fast_crop_2d"`` (256-pixel tiles), ``"full_volume"``,
        ``"plane_3d"``, ``"subvolume_3d"``, ``"balanced_5d"``,
        ``"time_series"``.
    target_chunk_mb
        Soft upper bound of a chunk's size; tiles and blocks larger than it
        shrink in Y and X (not for explicit ``chunk_shape`` or the whole-image,
        volume and plane layouts).
    compression
        The Parquet codec the dataset will use (recorded in the choice).
    chunk_shape
        An explicit TCZYX chunk shape (clipped to the image).

    Returns
    -------
    ChunkChoice

    Raises
    ------
    ValueError
        For a shape or chunk shape that is not five positive values, a
        non-positive ``target_chunk_mb``, or an unknown layout or pattern.

    Example
    -------
    >>> choose_chunking((1, 1, 4, 1024, 1024), "uint16", access_pattern="fast_crop_2d").chunk_shape
    (1, 1, 1, 256, 256)
    """
    st, sc, sz, sy, sx = bounds = _five(shape, "shape")
    if min(bounds) <= 0:
        raise ValueError(f"shape values must be positive, got {bounds}")
    dt = np.dtype(dtype)
    try:
        target = float(target_chunk_mb)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"target_chunk_mb must be a positive number (the chunk size_mb bound), got {target_chunk_mb!r}"
        ) from exc
    if not target > 0:
        raise ValueError(
            f"target_chunk_mb must be > 0 (it bounds each chunk's size_mb), got {target_chunk_mb!r}"
        )
    if access_pattern not in _PATTERN_LAYOUT:
        raise ValueError(f"access_pattern must be one of {sorted(_PATTERN_LAYOUT)}, got {access_pattern!r}")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {list(_LAYOUTS)}, got {layout!r}")
    resolved = _PATTERN_LAYOUT[access_pattern] if layout == "auto" else str(layout)
    if chunk_shape is not None:
        want = _five(chunk_shape, "chunk_shape")
    elif resolved in ("image", "hybrid"):
        want = bounds
    elif resolved == "volume":
        want = (1, 1, sz, sy, sx)
    elif resolved == "z-plane":
        want = (1, 1, 1, sy, sx)
    elif access_pattern == "fast_crop_2d":
        want = (1, 1, 1, 256, 256)
    elif resolved == "tile":
        want = (1, 1, 1, 512, 512)
    elif access_pattern == "time_series":
        want = (1, 1, 8, 256, 256)
    elif access_pattern == "balanced_5d":
        want = (1, 1, 16, 256, 256)
    else:
        want = (1, 1, 16, 128, 128)
    chunk = tuple(max(1, min(w, b)) for w, b in zip(want, bounds, strict=True))
    size_mb = float(np.prod(chunk)) * dt.itemsize / 2**20
    if chunk_shape is None and size_mb > target and resolved not in ("image", "volume", "z-plane"):
        scale = (target / size_mb) ** 0.5
        chunk = (*chunk[:3], max(1, min(sy, int(chunk[3] * scale))), max(1, min(sx, int(chunk[4] * scale))))
        size_mb = float(np.prod(chunk)) * dt.itemsize / 2**20
    rationale = (
        f"layout {resolved!r} with chunk_shape {chunk} and compression {compression!r}: "
        f"dtype {dt.name}, about {size_mb:.3g} MB per chunk, access_pattern {access_pattern!r}"
    )
    return ChunkChoice(resolved, chunk, compression, rationale)  # type: ignore[arg-type]


def _channels_json(src: LazySource) -> str:
    """The image's channels as the JSON list of ``pixels_meta.channels`` dicts."""
    return json.dumps([asdict(ch) for ch in src.header().channels])


def _bands(src: LazySource, chunk: tuple[int, ...], dtype: np.dtype[Any] | None, clamp: bool) -> Iterator[
    tuple[tuple[int, int, int, int], np.ndarray]
]:
    """``((t0, c0, z0, y0), block)`` for each band of chunks: one chunk row across the whole X."""
    st, sc, sz, sy, _ = src.shape
    ct, cc, cz, cy, _ = chunk
    plan = LazyImage(src)
    if dtype is not None:
        plan = plan.with_dtype(dtype)
    for t0 in range(0, st, ct):
        for c0 in range(0, sc, cc):
            for z0 in range(0, sz, cz):
                for y0 in range(0, sy, cy):
                    band = plan.select(
                        t=slice(t0, min(st, t0 + ct)), c=slice(c0, min(sc, c0 + cc)),
                        z=slice(z0, min(sz, z0 + cz)), y=(y0, min(sy, y0 + cy)),
                    )
                    yield (t0, c0, z0, y0), band.execute(clamp=clamp)


def _package_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("omeframe", "numpy", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


class _ChunkTableWriter:
    """Streams chunk rows into ``chunks.parquet``, ``rows_per_group`` rows per row group."""

    def __init__(self, path: Path, compression: str | None, rows_per_group: int, metadata: dict[bytes, bytes]):
        self.schema = CHUNK_TABLE_SCHEMA.with_metadata(metadata)
        self.writer = pq.ParquetWriter(
            path, self.schema, compression=compression or "none", write_page_checksum=True
        )
        self.rows_per_group = rows_per_group
        self.pending: list[dict[str, Any]] = []
        self.written = 0
        self.index: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        n = self.written + len(self.pending)
        self.index.append(
            {
                **{k: row[k] for k in ("image_id", "chunk_id")},
                "row_group_id": n // self.rows_per_group,
                "row_index_in_group": n % self.rows_per_group,
                "fragment_path": CHUNKS,
                **{k: row[k] for k in (*_AXES, *(f"shape_{a}" for a in _AXES))},
            }
        )
        self.pending.append(row)
        if len(self.pending) == self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            table = pa.Table.from_pylist(self.pending, schema=self.schema)
            self.writer.write_table(table, row_group_size=self.rows_per_group)
            self.written += len(self.pending)
            self.pending = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def write_ome_arrow_dataset(
    images: Sequence[LazySource],
    output_path: str | os.PathLike[str],
    *,
    layout: Layout = "auto",
    access_pattern: AccessPattern = "balanced",
    target_chunk_mb: float = 4.0,
    chunk_shape: Sequence[int] | None = None,
    compression: str | None = "zstd",
    build_physical_index: bool = True,
    chunk_rows_per_row_group: int = 1,
    pixel_dtype: Any = None,
    clamp: bool = True,
) -> ChunkChoice:
    """Write images as an ome-arrow 0.1.0 typed-chunk dataset folder.

    Parameters
    ----------
    images
        The images as lazy sources (``omeframe.registry.open_source`` of an
        array, record, path ...; ``omeframe.compat.ome_arrow`` converts
        ome-arrow's inputs). Each keeps its id, name, type and channels;
        images without an id are named ``image-00000``, ``image-00001`` ...
    output_path
        The folder. An existing file there is replaced by the folder; in an
        existing folder the tables are replaced (and a stale
        ``index.parquet`` removed when ``build_physical_index=False``).
    layout, access_pattern, target_chunk_mb, chunk_shape
        Chunking, resolved per image by :func:`choose_chunking`.
    compression
        Parquet codec of the tables (``"zstd"``, ``"snappy"``, ``None`` ...).
    build_physical_index
        Also write ``index.parquet`` (chunk → row group) for direct reads.
    chunk_rows_per_row_group
        Chunk rows per Parquet row group (1: one row group per chunk).
    pixel_dtype
        Store pixels as this dtype (``None`` keeps each image's dtype).
    clamp
        Clip values into ``pixel_dtype``'s range before casting.

    Returns
    -------
    ChunkChoice
        The choice of the first image.

    Raises
    ------
    ValueError
        For no images, ``chunk_rows_per_row_group < 1``, a duplicate
        ``image_id`` or invalid chunking.

    Example
    -------
    >>> import numpy as np, tempfile, os
    >>> from omeframe.registry import open_source
    >>> d = tempfile.mkdtemp()
    >>> src = open_source(np.zeros((4, 5), "uint8"), dim_order="YX")
    >>> write_ome_arrow_dataset([src], os.path.join(d, "ds"), layout="image").layout
    'image'
    """
    if len(images) == 0:
        raise ValueError("images must contain at least one image")
    if int(chunk_rows_per_row_group) <= 0:
        raise ValueError(f"chunk_rows_per_row_group must be > 0, got {chunk_rows_per_row_group!r}")
    rows_per_group = int(chunk_rows_per_row_group)
    out = Path(output_path)
    if not out.parent.exists():
        raise FileNotFoundError(f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist")
    sources = list(images)
    target_dtype = None if pixel_dtype is None else np.dtype(pixel_dtype)
    metadata = {
        b"ome.arrow.type": str(OME_ARROW_TAG_TYPE).encode(),
        b"ome.arrow.version": str(OME_ARROW_TAG_VERSION).encode(),
        b"ome.arrow.layout": LAYOUT.encode(),
    }
    stage = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    stage.mkdir()
    try:
        image_rows: list[dict[str, Any]] = []
        choices: list[ChunkChoice] = []
        seen: set[str] = set()
        chunks = _ChunkTableWriter(stage / CHUNKS, compression, rows_per_group, metadata)
        try:
            chunk_id = 0
            for i, src in enumerate(sources):
                head = src.header()
                image_id = str(head.image_id) if head.image_id not in (None, "", "unnamed") else f"image-{i:05d}"
                if image_id in seen:
                    raise ValueError(
                        f"Duplicate image_id {image_id!r} in the images to write; give every image its own id"
                    )
                seen.add(image_id)
                dt = target_dtype if target_dtype is not None else src.dtype
                choice = choose_chunking(
                    src.shape, dt, layout=layout, access_pattern=access_pattern,
                    target_chunk_mb=target_chunk_mb, compression=compression, chunk_shape=chunk_shape,
                )
                choices.append(choice)
                image_rows.append(
                    {
                        "image_id": image_id,
                        "name": str(head.name) if head.name not in (None, "", "unknown") else image_id,
                        "image_type": head.image_type,
                        "dtype": dt.name,
                        **{f"size_{a}": n for a, n in zip(_AXES, src.shape, strict=True)},
                        "layout": choice.layout,
                        **{f"chunk_{a}": n for a, n in zip(_AXES, choice.chunk_shape, strict=True)},
                        "compression": compression,
                        "channels_json": _channels_json(src),
                    }
                )
                cx = choice.chunk_shape[4]
                for (t0, c0, z0, y0), band in _bands(src, choice.chunk_shape, target_dtype, clamp):
                    nt, nc, nz, ny, nx_all = band.shape
                    for x0 in range(0, nx_all, cx):
                        block = np.ascontiguousarray(band[..., x0 : x0 + cx])
                        origin = (t0, c0, z0, y0, x0)
                        chunks.add(
                            {
                                "image_id": image_id,
                                "chunk_id": chunk_id,
                                **dict(zip(_AXES, origin, strict=True)),
                                **{f"shape_{a}": n for a, n in zip(_AXES, block.shape, strict=True)},
                                "dtype": dt.name,
                                "pixel_bytes": block.tobytes(),
                            }
                        )
                        chunk_id += 1
        finally:
            chunks.close()
        table = pa.Table.from_pylist(image_rows, schema=IMAGE_TABLE_SCHEMA.with_metadata(metadata))
        pq.write_table(table, stage / IMAGES, compression=compression or "none", write_page_checksum=True)
        if build_physical_index:
            index = pa.Table.from_pylist(chunks.index, schema=INDEX_TABLE_SCHEMA.with_metadata(metadata))
            pq.write_table(index, stage / INDEX, compression=compression or "none", write_page_checksum=True)
        manifest = {
            "type": str(OME_ARROW_TAG_TYPE),
            "version": str(OME_ARROW_TAG_VERSION),
            "layout": LAYOUT,
            "image_count": len(image_rows),
            "chunk_count": chunk_id,
            "choice": asdict(choices[0]),
            "package_versions": _package_versions(),
            "writer": "omeframe",
        }
        (stage / MARKER).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _commit(stage, out, build_physical_index)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return choices[0]


def _commit(stage: Path, out: Path, has_index: bool) -> None:
    """Move the staged tables into ``out`` (the marker last, so readers never see a half folder)."""
    if out.is_file() or out.is_symlink():
        out.unlink()
    if not out.exists():
        os.replace(stage, out)
        fsync_dir(out.parent)
        return
    (out / MARKER).unlink(missing_ok=True)
    for name in (IMAGES, CHUNKS, INDEX):
        if (stage / name).exists():
            os.replace(stage / name, out / name)
    if not has_index:
        (out / INDEX).unlink(missing_ok=True)
    os.replace(stage / MARKER, out / MARKER)
    fsync_dir(out)
    shutil.rmtree(stage, ignore_errors=True)
