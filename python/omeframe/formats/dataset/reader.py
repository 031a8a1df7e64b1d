"""Open chunked image datasets and read pixels chunk by chunk.

Opening reads the manifest and the (small) images table only. Pixel
reads use the byte index in the images table: one positional read per chunk,
its CRC-32 checked before decoding, so a region read touches exactly the chunks
it needs and nothing else. Images whose payloads could not be located (a
container that re-encoded them) are read through the container's own row
access instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa

from omeframe.engine import cache as _cache  # also registers the shared cache for remote blocks
from omeframe.engine.codec import decode_frames, decode_payload, resolve_codec
from omeframe.engine.executor import assemble
from omeframe.engine.pieces import RegularPieces, RowBands, regular_pieces
from omeframe.engine.reopen import reopen
from omeframe.formats.dataset.manifest import Manifest, list_generations, manifest_file, read_manifest
from omeframe.formats.dataset.remote import read_images_remote, read_manifest_remote
from omeframe.formats.dataset.schema import CHUNKS_SCHEMA, IMAGES_SCHEMA
from omeframe.formats.dataset.validate import remote_name, validate_images, validate_manifest
from omeframe.formats.record.builder import RecordBuilder
from omeframe.formats.vortex.file import read_vortex_table
from omeframe.model.arrow import BYTE_CHUNK_STRUCT, OME_ARROW_BYTE_STRUCT
from omeframe.model.checks import is_integer
from omeframe.model.columns import check_columns
from omeframe.model.dtypes import to_numpy_dtype
from omeframe.model.errors import (
    ChunkChecksumError,
    CorruptFileError,
    ImageNotFoundError,
    PixelPayloadError,
    RowIndexError,
    SelectionError,
    UnsupportedFormatError,
    reraise_access_error,
)
from omeframe.model.header import ImageHeader
from omeframe.model.selection import Selection
from omeframe.storage import files, remote
from omeframe.storage.crc import crc32
from omeframe.storage.ipc import read_ipc_file
from omeframe.storage.parquet import open_parquet
from omeframe.storage.remote import RemoteFile, RemoteStore, _run_all, coalesce
from omeframe.storage.url import check_storage_options, local_path, parse_location

__all__ = ["DatasetReader", "ImageEntry"]


def _slice_row_groups(pf: Any, cols: list[str], start: int, n: int) -> pa.Table:
    """Rows ``[start, start + n)`` of Parquet file ``pf``, reading only the row groups they overlap."""
    md = pf.metadata
    acc, groups, first = 0, [], None
    for g in range(md.num_row_groups):
        k = md.row_group(g).num_rows
        if acc + k > start and acc < start + n:
            groups.append(g)
            first = acc if first is None else first
        acc += k
    t = pf.read_row_groups(groups, columns=cols, use_threads=False)
    return t.slice(start - (first or 0), n)


def _check_remote_names(where: str, manifest: Manifest) -> None:
    """The manifest's relative names must stay below the dataset's URL (no ``..``, no absolute names)."""
    if not isinstance(manifest.parts, list):
        raise CorruptFileError(f"dataset {where!r}: manifest 'parts' is not a list")
    if manifest.images:
        remote_name(where, manifest.images, what="manifest 'images'")
    for i, part in enumerate(manifest.parts):
        remote_name(where, part, what=f"manifest 'parts[{i}]'")


def _conform_images(t: pa.Table) -> pa.Table:
    """Cast to the current images schema; columns added since a table was written read as null."""
    if t.schema == IMAGES_SCHEMA:
        return t
    for f in IMAGES_SCHEMA:
        if f.name not in t.column_names:
            t = t.append_column(f, pa.nulls(t.num_rows, f.type))
    return t.select(IMAGES_SCHEMA.names).cast(IMAGES_SCHEMA)


class ImageEntry:
    """One (image, level) row of the images table, with its chunk index."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        pm = row["pixels_meta"]
        self.image_id: str = row["image_id"]
        self.level: int = int(row["level"])
        self.shape: tuple[int, int, int, int, int] = (
            int(pm["size_t"]),
            int(pm["size_c"]),
            int(pm["size_z"]),
            int(pm["size_y"]),
            int(pm["size_x"]),
        )
        self.dtype = to_numpy_dtype(row["dtype"])
        g = row["chunk_grid"]
        self.chunk_shape: tuple[int, int, int] = (int(g["chunk_z"]), int(g["chunk_y"]), int(g["chunk_x"]))
        self.codec: str | None = resolve_codec(row["codec"])
        self.part: str = row["part"]
        self.row_start: int = int(row["row_start"])
        # Chunks spread over several parts (Vortex roll-over): per-chunk part and row.
        self.parts: list[str] = list(row.get("parts") or [self.part])
        cp, cr = row.get("chunk_part"), row.get("chunk_rows")
        self.chunk_part = None if cp is None else np.asarray(cp, dtype=np.int64)
        self.chunk_rows = None if cr is None else np.asarray(cr, dtype=np.int64)
        self.n_chunks: int = int(row["n_chunks"])
        self.offsets = None if row["chunk_offsets"] is None else np.asarray(row["chunk_offsets"], dtype=np.int64)
        self.lengths = np.asarray(row["chunk_lengths"], dtype=np.int64)
        self.checksums = np.asarray(row["chunk_checksums"], dtype=np.int64)
        fr = row.get("frame_rows")
        self.frame_rows: int | None = None if fr is None else int(fr)
        fl = row.get("chunk_frame_lengths")
        #: stored length of every frame, chunk after chunk (framed zstd chunks), else None
        self.frame_lengths: np.ndarray | None = None if fl is None else np.asarray(fl, dtype=np.int64)
        raw = row.get("chunk_raw")
        self.raw: np.ndarray | None = None if raw is None else np.asarray(raw, dtype=bool)

    def chunk_codec(self, index: int) -> str | None:
        """Codec of chunk ``index`` (``None`` for chunks a preset stored raw)."""
        return None if self.raw is not None and self.raw[index] else self.codec

    @cached_property
    def frames(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The frame index of framed zstd chunks, or ``None``.

        ``(first, ends)``: chunk ``i``'s frames are ``first[i]:first[i + 1]``
        and frame ``j`` spans bytes ``ends[j] - ends[first[i]]`` .. up to
        ``ends[j + 1] - ends[first[i]]`` of the chunk payload.
        """
        if self.frame_rows is None or self.frame_lengths is None:
            return None
        _, ext = self.origins_extents()
        rows = ext[:, 0] * ext[:, 1]
        counts = -(-rows // self.frame_rows)
        if self.raw is not None:
            counts[self.raw] = 0
        first = np.zeros(self.n_chunks + 1, dtype=np.int64)
        np.cumsum(counts, out=first[1:])
        ends = np.zeros(self.frame_lengths.size + 1, dtype=np.int64)
        np.cumsum(self.frame_lengths, out=ends[1:])
        if first[-1] != self.frame_lengths.size or not np.array_equal(
            (ends[first[1:]] - ends[first[:-1]])[counts > 0], self.lengths[counts > 0]
        ):
            raise CorruptFileError(
                f"image {self.image_id!r} level {self.level}: the frame index of its chunks "
                f"({self.frame_lengths.size} frames of {self.frame_rows} rows) does not match "
                "the chunk lengths; the images table is damaged"
            )
        return first, ends

    def chunk_key(self, index: int) -> dict[str, int]:
        """TCZYX origin of chunk ``index`` as a dict (for error messages)."""
        o, _ = self.origins_extents()
        return dict(zip("tczyx", (int(v) for v in o[index]), strict=True))

    def part_of(self, index: int) -> str:
        """The part file holding chunk ``index`` (grid order)."""
        return self.part if self.chunk_part is None else self.parts[int(self.chunk_part[index])]

    def row_of(self, index: int) -> int:
        """Chunk ``index``'s row within :meth:`part_of`."""
        return self.row_start + index if self.chunk_rows is None else int(self.chunk_rows[index])

    def part_ranges(self) -> list[tuple[str, int, int]]:
        """``(part, first_row, n_rows)`` runs covering the image's chunks in grid order."""
        if self.chunk_part is None:
            return [(self.part, self.row_start, self.n_chunks)]
        runs: list[tuple[str, int, int]] = []
        for i in range(self.n_chunks):
            part, row = self.part_of(i), self.row_of(i)
            if runs and runs[-1][0] == part and runs[-1][1] + runs[-1][2] == row:
                runs[-1] = (part, runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((part, row, 1))
        return runs

    @property
    def grid_shape(self) -> tuple[int, int, int, int, int]:
        st, sc, sz, sy, sx = self.shape
        cz, cy, cx = self.chunk_shape
        return (st, sc, -(-sz // cz), -(-sy // cy), -(-sx // cx))

    def origins_extents(self) -> tuple[np.ndarray, np.ndarray]:
        """Chunk origins (n, 5) and ZYX extents (n, 3) in storage (grid C) order."""
        return regular_pieces(self.shape, self.chunk_shape)

    def metadata(self) -> dict[str, Any]:
        """Header fields as a plain dict (``pixels_meta``, grid, ids, sizes)."""
        r = self.row
        return {
            "image_id": self.image_id,
            "level": self.level,
            "name": r["name"],
            "image_type": r["image_type"],
            "parent_id": r["parent_id"],
            "acquisition_datetime": r["acquisition_datetime"],
            "shape": self.shape,
            "dtype": self.dtype.name,
            "chunk_shape": self.chunk_shape,
            "n_chunks": self.n_chunks,
            "stored_bytes": int(r["stored_bytes"]),
            "codec": self.codec,
            "pixels_meta": r["pixels_meta"],
            "chunk_grid": r["chunk_grid"],
        }


def _open_generation(
    cls: type[DatasetReader], where: str, generation: int, storage_options: Mapping[str, Any] | None
) -> DatasetReader:
    """``cls`` at ``where`` (a directory or a URL), reading ``generation``: what a pickled reader reopens."""
    return cls(where, generation, storage_options=storage_options)


class DatasetReader:
    """Reads a chunked image dataset directory (images table + chunks table parts).

    The storage side of :class:`omeframe.Dataset` (which adds lazy plans and
    appends); use :func:`omeframe.open_dataset` to get one.

    Example
    -------
    >>> reader = DatasetReader("slides/")             # doctest: +SKIP
    >>> reader.read("slide-1", y=(0, 256), x=(0, 256))  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        generation: int | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_storage_options(storage_options, path)
        if generation is not None and (
            not is_integer(generation) or generation < 1
        ):
            raise ValueError(f"generation must be an integer >= 1 (a committed generation) or None, got {generation!r}")
        loc = parse_location(path)
        #: The object store holding the dataset, or ``None`` for a local directory.
        self.store: RemoteStore | None = None
        self._meta_nbytes = 0
        self._remote_images: tuple[pa.Table, str] | None = None
        if loc is not None:
            self.store = RemoteStore(loc, storage_options)
            self.path = Path(loc.path)
            self.where = loc.url
            self._hint: dict[str, bytes] = {}
            self.manifest, self._meta_nbytes = read_manifest_remote(self.store, generation, self._hint)
            _check_remote_names(self.where, self.manifest)
        else:
            self.path = local_path(path)
            self.where = str(self.path)
            # The generation is fixed at open: later commits by other writers are
            # seen only by a new reader (``generation``: open that one, not the current).
            self.manifest = read_manifest(self.path, generation)
            validate_manifest(self.path, self.manifest.images, self.manifest.parts)
        self._files: dict[str, files.InputFile | RemoteFile] = {}
        self._lock = threading.Lock()

    @property
    def location(self) -> str | Path:
        """The dataset's URL (remote) or directory path (local): what to pass to reopen it."""
        return self.where if self.store is not None else self.path

    # ---- tables ---------------------------------------------------------
    @property
    def format(self) -> str:
        """``"parquet"`` or ``"vortex"``."""
        return self.manifest.format

    @property
    def images_path(self) -> Path:
        """Path of the current images table."""
        if self.manifest.images is None:
            raise CorruptFileError(
                f"dataset {self.where!r}: generation {self.manifest.generation}'s manifest names no images table"
            )
        return self.path / self.manifest.images

    @property
    def images_read_path(self) -> Path:
        """The images file a reader opens: the Arrow IPC copy when present, else the table."""
        fast = self.images_path.with_suffix(".arrow")
        return fast if fast.is_file() else self.images_path

    @property
    def chunk_paths(self) -> list[Path]:
        """Paths of the chunks table parts."""
        return [self.path / p for p in self.manifest.parts]

    @cached_property
    def images_table(self) -> pa.Table:
        """The images table (one row per image and level)."""
        if self.store is not None:
            t, name, n = read_images_remote(self.store, self.manifest, self._hint)
            self._hint.clear()
            self._remote_images = (t, name)
            self._meta_nbytes += n
            return _conform_images(t)
        p = self.images_path
        if not p.is_file():  # missing, or not a file (a directory named by a damaged manifest)
            raise self._lacks("images table", p.name)
        fast = self.images_read_path
        if fast != p:
            # The writer's Arrow IPC copy of the same table: opening it needs no
            # Parquet or Vortex reader, which keeps a cold open to milliseconds.
            with files.open_input(fast) as fh:
                data = fh.read_range(0, fh.size)
            what = f"(images index) {str(fast)!r}"
            self.manifest.check_file(fast.name, data, what)
            return _conform_images(read_ipc_file(data, what))
        # The images table itself (small): its bytes are checked before they are parsed
        with files.open_input(p) as fh:
            data = fh.read_range(0, fh.size)
        self.manifest.check_file(p.name, data, f"images table {str(p)!r}")
        if self.format == "parquet":
            import pyarrow.parquet as pq

            try:
                t = pq.ParquetFile(pa.BufferReader(data)).read()
                t.validate(full=True)  # offsets and UTF-8 of every value, before any is read
            except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
                reraise_access_error(exc)
                raise CorruptFileError(f"unreadable images table {str(p)!r}: {exc}") from exc
        else:
            t = read_vortex_table(p)  # the file checked above, unless replaced in between (never by omeframe)
            try:
                t.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise CorruptFileError(f"unreadable images table {str(p)!r}: {exc}") from exc
        return _conform_images(t)

    @cached_property
    def _entries(self) -> dict[tuple[str, int], ImageEntry]:
        table = self.images_table
        if self.store is not None:
            name = self._remote_images[1] if self._remote_images else "images"
            validate_images(self.where, table, name, remote=True)
        else:
            name = self.images_read_path.name
            validate_images(self.path, table, name)
        try:
            rows = table.to_pylist()
        except (OverflowError, ValueError) as exc:  # e.g. a timestamp beyond Python's datetime
            raise CorruptFileError(
                f"{name!r}: a value of the images table cannot be read ({exc}); the file is damaged"
            ) from exc
        return {(r["image_id"], int(r["level"])): ImageEntry(r) for r in rows}

    @property
    def image_ids(self) -> list[str]:
        """Image identifiers, in write order."""
        seen: dict[str, None] = {}
        for iid, _ in self._entries:
            seen.setdefault(iid, None)
        return list(seen)

    def levels(self, image_id: str) -> list[int]:
        """Pyramid levels stored for ``image_id`` (0 = full resolution)."""
        lv = sorted(lv for iid, lv in self._entries if iid == image_id)
        if not lv:
            raise self._missing(image_id)
        return lv

    def entry(self, image_id: str | None = None, level: int = 0) -> ImageEntry:
        """The images-table entry of ``image_id`` at ``level``."""
        if image_id is None:
            ids = self.image_ids
            if len(ids) != 1:
                raise ValueError(
                    f"the dataset holds {len(ids)} images; pass image_id= (one of {ids[:5]}"
                    f"{' ...' if len(ids) > 5 else ''})"
                )
            image_id = ids[0]
        if is_integer(image_id):  # ids given as integers are stored as their strings
            image_id = str(image_id)
        if not isinstance(image_id, str):
            raise TypeError(f"image_id must be a string (one of {self.image_ids[:5]}), got {image_id!r}")
        if not is_integer(level):
            raise TypeError(f"level must be an integer (0 = full resolution), got {level!r}")
        try:
            return self._entries[(image_id, int(level))]
        except KeyError:
            if any(iid == image_id for iid, _ in self._entries):
                raise SelectionError(
                    f"image {image_id!r} has no level {level}; levels: {self.levels(image_id)}"
                ) from None
            raise self._missing(image_id) from None

    def _missing(self, image_id: str) -> ImageNotFoundError:
        ids = self.image_ids
        return ImageNotFoundError(
            f"no image {image_id!r} in dataset {self.where!r}; it holds {len(ids)} images: "
            f"{ids[:5]}{' ...' if len(ids) > 5 else ''}"
        )

    def image_metadata(self, image_id: str | None = None, level: int = 0) -> dict[str, Any]:
        """Metadata of one image: shape, dtype, chunk grid, pixels_meta ..."""
        return self.entry(image_id, level).metadata()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return f"<omeframe.Dataset {self.where!r} format={self.format} images={len(self)}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles as its location (a URL with its storage options, or a directory) and the
        # generation it reads; reopened once per process.
        options = dict(self.store.storage_options) if self.store is not None else None
        return (reopen, (_open_generation, (type(self), self.where, self.manifest.generation, options)))

    # ---- chunk access ---------------------------------------------------
    def _file(self, part: str) -> files.InputFile | RemoteFile:
        with self._lock:
            f = self._files.get(part)
            if f is None and self.store is not None:
                f = self._files[part] = self.store.open(part)
            if f is None:
                p = self.path / part
                if not p.exists():
                    raise self._lacks("chunk part", part)
                f = self._files[part] = files.open_input(p)
            return f

    def _lacks(self, what: str, rel: str) -> Exception:
        """The error for a file of this reader's generation that is not there."""
        if self.store is not None:
            return CorruptFileError(f"dataset {self.where!r} lacks its {what} {rel!r}")
        gens = list_generations(self.path)
        newest = gens[-1] if gens else self.manifest.generation
        if newest > self.manifest.generation:
            return FileNotFoundError(
                f"dataset {self.where!r}: the {what} {rel!r} of generation {self.manifest.generation}, "
                f"which this Dataset opened, was garbage-collected (generation {newest} is current; a "
                "superseded generation stays readable for the writers' gc_grace_seconds); reopen the dataset"
            )
        return CorruptFileError(f"dataset {self.where!r} lacks its {what} {rel!r}")

    def close(self) -> None:
        """Close the files the dataset opened for reading."""
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_chunk_bytes(self, image_id: str | None, level: int, index: int, *, verify: bool = True) -> bytes:
        """Stored (encoded) bytes of chunk ``index`` (grid order) of an image.

        Raises
        ------
        RowIndexError
            For an index that is not an integer in ``[0, n_chunks)`` (an ``IndexError``).
        """
        e = self.entry(image_id, level)
        if not is_integer(index) or not 0 <= index < e.n_chunks:
            raise RowIndexError(
                f"chunk index {index!r} is not in [0, {e.n_chunks}) for image {e.image_id!r} level {e.level} of "
                f"{self.where!r}"
            )
        if e.offsets is not None:
            data = self._file(e.part_of(index)).read_range(int(e.offsets[index]), int(e.lengths[index]))
        else:
            self._local_only("chunks without a byte index (payloads a container re-encoded)")
            t = read_vortex_table(self.path / e.part_of(index), columns=["pixel_bytes"], rows=[e.row_of(index)])
            data = t.column(0)[0].as_buffer()
        if verify:
            crc = crc32(memoryview(data).cast("B"))  # zlib-ng: memory speed
            if crc != int(e.checksums[index]) or len(data) != int(e.lengths[index]):
                key = e.chunk_key(index)
                raise ChunkChecksumError(
                    f"corrupt chunk in dataset {self.where!r}: image {e.image_id!r} level "
                    f"{e.level} chunk {key} (part {e.part_of(index)!r}) has CRC-32 {crc:#010x} over "
                    f"{len(data)} bytes, expected {int(e.checksums[index]):#010x} over "
                    f"{int(e.lengths[index])} bytes"
                )
        return data

    def pixel_source(self, image_id: str | None = None, level: int = 0, *, verify: bool = True) -> RegularPieces:
        """The image as :class:`~omeframe.engine.pieces.RegularPieces` for the shared executor."""
        e = self.entry(image_id, level)
        origins, extents = e.origins_extents()
        dtype = e.dtype
        iid = e.image_id
        frames = e.frames
        frame_lengths = e.frame_lengths

        def frames_error(i: int, ka: int, kb: int, lo: int, hi: int, exc: Exception) -> ChunkChecksumError:
            return ChunkChecksumError(
                f"corrupt chunk in dataset {self.where!r}: image {iid!r} level {level} chunk "
                f"{e.chunk_key(i)} (part {e.part_of(i)!r}): its zstd frames {ka}..{kb - 1} "
                f"(bytes {lo}..{hi} of the chunk) fail to decode or to match their checksums ({exc})"
            )

        def decode(i: int, strict: bool) -> np.ndarray:
            count = int(extents[i, 0] * extents[i, 1] * extents[i, 2])
            n = 0 if frames is None else int(frames[0][i + 1] - frames[0][i])
            if frames is None or frame_lengths is None or n <= 1:
                data = self.read_chunk_bytes(iid, level, i, verify=verify)
                return decode_payload(
                    data, e.chunk_codec(i), dtype, count, label=f"image {iid!r} chunk {i}", strict=strict
                )
            # Several frames: each carries zstd's checksum of its content, which
            # decoding verifies, so the chunk's CRC-32 would only check twice.
            data = self.read_chunk_bytes(iid, level, i, verify=False)
            fa = int(frames[0][i])
            try:
                return decode_frames(
                    data, frame_lengths[fa : fa + n].tolist(), dtype, count, label=f"image {iid!r} chunk {i}"
                )
            except PixelPayloadError as exc:
                raise frames_error(i, 0, n, 0, int(e.lengths[i]), exc) from exc

        def frame_span(i: int, r0: int, r1: int) -> tuple[int, int, int, int, int] | None:
            """``(first frame index, ka, kb, byte lo, byte hi)``: frames ``ka:kb`` of chunk ``i``
            cover rows ``[r0, r1)``; ``None`` when the whole chunk must be read."""
            if frames is None:
                return None
            first, ends = frames
            fa, fb = first[i : i + 2].tolist()  # few numpy calls: this runs per chunk of a read
            fr = e.frame_rows or 1
            ka, kb = r0 // fr, min(fb - fa, -(-r1 // fr))
            if fb - fa <= 1 or (ka == 0 and kb == fb - fa):
                return None
            base, lo, hi = ends[[fa, fa + ka, fa + kb]].tolist()
            return fa, ka, kb, lo - base, hi - base

        def decode_rows(i: int, r0: int, r1: int, strict: bool) -> tuple[np.ndarray, int]:
            span = frame_span(i, r0, r1)
            if span is None or frame_lengths is None:  # no frame index: e.frames is None too
                return decode(i, strict), 0
            fa, ka, kb, lo, hi = span
            data = self._read_part_range(e, i, lo, hi)
            fr = e.frame_rows or 1
            ez, ey, ex = extents[i].tolist()
            row_a = ka * fr
            count = (min(kb * fr, ez * ey) - row_a) * ex
            try:
                flat = decode_frames(
                    data, frame_lengths[fa + ka : fa + kb].tolist(), dtype, count, label=f"image {iid!r} chunk {i}"
                )
            except PixelPayloadError as exc:
                raise frames_error(i, ka, kb, lo, hi, exc) from exc
            return flat, row_a

        def span_nbytes(i: int, r0: int, r1: int) -> int:
            if self.store is not None:
                return int(e.lengths[i])  # remote reads fetch (and cache) whole chunks
            span = frame_span(i, r0, r1)
            return int(e.lengths[i]) if span is None else span[4] - span[3]

        extra: dict[str, Any] = {"dataset": self, "entry": e}
        if self.store is not None:
            _ = self._entries  # the images index is read (and counted) before the chunks
            meta_bytes = self._meta_nbytes
            how = f"ranged GETs from {self.store.location.scheme}://, coalesced and concurrent"
            extra["prefetch"] = lambda picked, spans: self._prefetch(e, picked)
            extra["requests"] = lambda picked: self._describe_requests(e, picked)
        else:
            try:
                meta_bytes = (
                    self.images_read_path.stat().st_size + manifest_file(self.path, self.manifest).stat().st_size
                )
            except FileNotFoundError:
                raise self._lacks("images table", self.images_path.name) from None
            how = "byte-range reads" if e.offsets is not None else "vortex row takes"
        return RegularPieces(
            e.shape,
            dtype,
            e.chunk_shape,
            decode,
            e.lengths,
            True,
            f"{self.format} dataset {self.where!r} image {iid!r} level {level} "
            f"(chunks {e.chunk_shape} ZYX, codec {e.codec}"
            + (f" in frames of {e.frame_rows} rows" if frames is not None else "")
            + f", {how})",
            metadata_nbytes=meta_bytes,
            extra=extra,
            # Remote reads fetch whole chunks (one coalesced round trip, cached for the next
            # region) and decode only the frames of the rows a read needs.
            bands=RowBands(decode_rows, span_nbytes) if frames is not None else None,
        )

    def _chunk_ranges(self, e: ImageEntry, picked: np.ndarray) -> dict[str, list[tuple[int, int]]]:
        """Byte ranges of chunks ``picked`` of ``e``, by part."""
        out: dict[str, list[tuple[int, int]]] = {}
        if e.offsets is None:
            return out
        for i in np.asarray(picked, dtype=np.int64).tolist():
            a = int(e.offsets[i])
            out.setdefault(e.part_of(i), []).append((a, a + int(e.lengths[i])))
        return out

    def _prefetch(self, e: ImageEntry, picked: np.ndarray) -> None:
        """Fetch the chunks a read touches at once: coalesced ranges, concurrent requests, cached.

        At most half the shared cache's budget is fetched ahead (the first
        chunks in grid order); the rest are read as they are decoded, so a
        read larger than the cache never evicts what it fetched before using it.
        """
        budget = _cache.shared_cache().max_bytes // 2
        if e.offsets is not None and budget > 0:
            sizes = np.cumsum(e.lengths[np.asarray(picked, dtype=np.int64)])
            picked = np.asarray(picked)[: int(np.searchsorted(sizes, budget, side="right"))]
        elif budget <= 0:
            return
        by_part = self._chunk_ranges(e, picked)
        jobs = []
        for part, ranges in by_part.items():
            f = self._file(part)
            if isinstance(f, RemoteFile):
                jobs.append(functools.partial(f.read_ranges, ranges))
        if jobs:
            _run_all(jobs)

    def _describe_requests(self, e: ImageEntry, picked: np.ndarray) -> str:
        """What a remote read of chunks ``picked`` costs: requests, bytes and the merged ranges."""
        by_part = self._chunk_ranges(e, picked)
        merged = {part: coalesce(r) for part, r in by_part.items()}
        n = sum(len(m) for m in merged.values())
        nbytes = sum(b - a for m in merged.values() for a, b in m)
        shown = "; ".join(
            f"{part}: " + ", ".join(f"{a}-{b}" for a, b in m[:4]) + (" ..." if len(m) > 4 else "")
            for part, m in merged.items()
        )
        chunks = int(np.asarray(picked).size)
        return (
            f"{n} concurrent GET{'s' if n != 1 else ''} ({nbytes} bytes) for {chunks} chunk"
            f"{'s' if chunks != 1 else ''} after coalescing ranges < {remote.COALESCE_GAP} bytes apart"
            + (f" [{shown}]" if shown else "")
        )

    def _local_only(self, what: str) -> None:
        if self.store is not None:
            raise UnsupportedFormatError(
                f"dataset {self.where!r}: reading {what} from object storage is not supported; "
                "copy the dataset to a local directory first"
            )

    def _read_part_range(self, e: ImageEntry, index: int, lo: int, hi: int) -> Any:
        """Bytes ``lo:hi`` of chunk ``index``'s payload: one pread when the byte index is known
        (remote: a slice of the whole chunk, which the read fetched and cached)."""
        if e.offsets is not None and self.store is None:
            return self._file(e.part_of(index)).read_range(int(e.offsets[index]) + lo, hi - lo)
        data = self.read_chunk_bytes(e.image_id, e.level, index, verify=False)
        return memoryview(data)[lo:hi]

    def chunk_table(
        self, image_id: str | None = None, level: int | None = 0, *, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Rows of the chunks table (without ``pixel_bytes`` unless asked) for one image or all.

        Raises
        ------
        KeyError
            For a column the chunks table does not have (``TypeError`` for a string).
        """
        cols = check_columns(columns, CHUNKS_SCHEMA.names, f"the chunks table of {self.where!r}") or [
            f.name for f in CHUNKS_SCHEMA if f.name != "pixel_bytes"
        ]
        if image_id is not None:
            e = self.entry(image_id, level or 0)
            pieces = [self._read_rows(part, cols, start, n) for part, start, n in e.part_ranges()]
            return pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
        parts = [self._read_rows(p, cols, None, None) for p in self.manifest.parts]
        return pa.concat_tables(parts) if parts else CHUNKS_SCHEMA.empty_table().select(cols)

    def _read_rows(self, part: str, cols: list[str], start: int | None, n: int | None) -> pa.Table:
        """Rows ``start .. start + n`` (all without ``start``) of part ``part``: columns ``cols``, as the chunks
        table types them; a part whose columns are not the chunks table's is corrupt (a damaged footer)."""
        where = repr(str(self.path / part)) if self.store is None else repr(self.store.url_of(part))
        try:
            t = self._read_part_rows(part, cols, start, n)
        except (pa.ArrowException, UnicodeDecodeError) as exc:  # OSError subclasses propagate as they are
            raise CorruptFileError(f"chunks table {where} cannot be read (the file is damaged): {exc}") from exc
        if t.column_names != cols:
            raise CorruptFileError(
                f"chunks table {where} holds columns {t.column_names} where {cols} were asked for: its footer "
                "is damaged (restore the file from a copy)"
            )
        want = pa.schema([CHUNKS_SCHEMA.field(c) for c in cols])
        if not t.schema.equals(want, check_metadata=False):
            try:
                t = t.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise CorruptFileError(
                    f"chunks table {where}: its columns' types {t.schema.types} are not the chunks table's "
                    f"{want.types} (its footer is damaged): {exc}"
                ) from exc
        return t

    def _read_part_rows(self, part: str, cols: list[str], start: int | None, n: int | None) -> pa.Table:
        p = self.path / part
        if self.store is not None:
            if self.format != "parquet":
                self._local_only("vortex chunk tables")
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(self.store.open(part), pre_buffer=True, page_checksum_verification=True)
            if start is None:
                return pf.read(columns=cols, use_threads=False)
            return _slice_row_groups(pf, cols, start, n or 0)
        if self.format == "parquet":
            # Memory-mapped through Arrow's own file, never a Python file object:
            # pyarrow reading a Python file from worker threads can abort the
            # interpreter at exit.
            with contextlib.closing(open_parquet(p)) as pf:
                if start is None:
                    return pf.read(columns=cols)
                return _slice_row_groups(pf, cols, start, n or 0)
        rows = None if start is None else range(start, start + (n or 0))
        return read_vortex_table(p, columns=cols, rows=rows)

    def chunk_stats(self, image_id: str | None = None, level: int = 0) -> dict[str, np.ndarray]:
        """Per-chunk ``min``/``max``/``mean``/``nonzero`` arrays in grid order."""
        t = self.chunk_table(image_id, level, columns=["min", "max", "mean", "nonzero"])
        return {name: t[name].to_numpy() for name in t.column_names}

    # ---- whole-image conveniences ----------------------------------------
    def read(
        self,
        image_id: str | None = None,
        level: int = 0,
        *,
        t: Sequence[int] | None = None,
        c: Sequence[int] | None = None,
        z: Sequence[int] | None = None,
        y: tuple[int, int] | None = None,
        x: tuple[int, int] | None = None,
        dtype: Any = None,
    ) -> np.ndarray:
        """Read a TCZYX region eagerly (only the chunks it touches)."""
        src = self.pixel_source(image_id, level)
        sel = Selection.of(t=t, c=c, z=z, y=y, x=x).resolve(src.shape)
        return assemble(src, sel, dtype=dtype)

    def header(self, image_id: str | None = None, level: int = 0) -> ImageHeader:
        """The :class:`~omeframe.model.header.ImageHeader` of one image."""
        e = self.entry(image_id, level)
        return ImageHeader.from_meta(
            e.row["pixels_meta"],
            image_id=e.image_id,
            name=e.row["name"] or e.image_id,
            image_type=e.row["image_type"],
            acquisition_datetime=e.row["acquisition_datetime"],
        )

    def to_record(self, image_id: str | None = None, level: int = 0) -> pa.StructScalar:
        """The image as an OME-Arrow byte-variant record (chunks copied, not re-encoded)."""
        e = self.entry(image_id, level)
        t = self.chunk_table(e.image_id, level, columns=[f.name for f in CHUNKS_SCHEMA])
        header = RecordBuilder(chunk_encoding="bytes")._header_row(
            self.header(e.image_id, level), e.shape, e.dtype.name
        )
        chunks = pa.StructArray.from_arrays(
            [
                t["t"].combine_chunks(), t["c"].combine_chunks(), t["z"].combine_chunks(),
                t["y"].combine_chunks(), t["x"].combine_chunks(), t["shape_z"].combine_chunks(),
                t["shape_y"].combine_chunks(), t["shape_x"].combine_chunks(), t["dtype"].combine_chunks(),
                t["codec"].combine_chunks(), t["pixel_bytes"].combine_chunks(),
            ],
            fields=list(BYTE_CHUNK_STRUCT),
        )
        g = e.row["chunk_grid"]
        arrays = {
            "type": pa.array([header["type"]]), "version": pa.array([header["version"]]),
            "id": pa.array([header["id"]]), "name": pa.array([header["name"]]),
            "image_type": pa.array([header["image_type"]], pa.string()),
            "acquisition_datetime": pa.array([header["acquisition_datetime"]], pa.timestamp("us")),
            "pixels_meta": pa.array([e.row["pixels_meta"]], OME_ARROW_BYTE_STRUCT.field("pixels_meta").type),
            "chunk_grid": pa.array([g], OME_ARROW_BYTE_STRUCT.field("chunk_grid").type),
            "chunks": pa.ListArray.from_arrays(pa.array([0, len(chunks)], pa.int32()), chunks),
            "planes": pa.ListArray.from_arrays(
                pa.array([0, 0], pa.int32()), pa.array([], OME_ARROW_BYTE_STRUCT.field("planes").type.value_type)
            ),
            "masks": pa.nulls(1, pa.null()),
        }
        return pa.StructArray.from_arrays(
            [arrays[f.name] for f in OME_ARROW_BYTE_STRUCT], fields=list(OME_ARROW_BYTE_STRUCT)
        )[0]

    def verify(self, *, collect: bool = False) -> dict[str, Any]:
        """Check every chunk's checksum; return counts.

        Parameters
        ----------
        collect : bool
            ``False`` (default) raises :class:`ChunkChecksumError` on the first
            damaged chunk. ``True`` checks every chunk and returns the messages
            of all damaged ones under ``"damaged"`` (one per chunk, naming the
            image, level, chunk key and part file).

        Returns
        -------
        dict
            ``images``, ``chunks`` and ``bytes`` checked, and with ``collect=True``
            ``damaged`` (a list of str, empty when the dataset is intact).
        """
        n = 0
        nbytes = 0
        damaged: list[str] = []
        for (iid, lv), e in self._entries.items():
            for i in range(e.n_chunks):
                try:
                    nbytes += len(self.read_chunk_bytes(iid, lv, i, verify=True))
                except (CorruptFileError, OSError) as exc:
                    if not collect:
                        raise
                    damaged.append(str(exc).splitlines()[0])
                n += 1
        out: dict[str, Any] = {"images": len(self._entries), "chunks": n, "bytes": nbytes}
        if collect:
            out["damaged"] = damaged
        return out
