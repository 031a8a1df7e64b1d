"""The pixel index of a Parquet record table: where every chunk payload lies in the file.

A record table stays one ordinary Parquet file. After its last row group,
omeframe inserts a small block between the data and the footer, which
Parquet readers skip (they find every column chunk by the offsets the footer
holds)::

    ... row groups ... | index blob | trailer (32 B) | footer | len | PAR1

The blob holds, for every chunk of every record, the stored length of its
payload, plus the page table of the ``pixel_bytes`` column (where each page's
values begin) and the distinct chunk layouts (shape, dtype, chunk keys,
codec) with one layout id per record. A chunk's byte range in the file is
computed from these with a few vectorised sums, so a random take of ``n``
rows is ``n`` positional reads and one multi-frame decode; a full scan reads
the payloads straight from the file without decoding Parquet pages.

The index is written only when the payload column is stored so that ranges
are exact: uncompressed, PLAIN pages (chunk payloads compressed per chunk with
zstd, each frame carrying its own checksum), which is what
:func:`~omeframe.write_table` writes by default. Every read checks the
4-byte length prefix Parquet stores before each value against the index, and
the blob carries a CRC, so a stale or damaged index is detected, never
trusted: the table then reads through Parquet as before.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from omeframe.engine import threads as _threads
from omeframe.engine.codec import binary_offsets, thread_scratch
from omeframe.formats.record.decode import _flat_struct
from omeframe.formats.record.stack import (
    DECODE_BLOCK_BYTES,
    DECODE_CALL_BYTES,
    FrameError,
    byte_runs,
    decode_frames_into,
    uniform_layout,
)
from omeframe.model.dtypes import dtype_name
from omeframe.model.errors import ChunkChecksumError, CorruptFileError, PixelPayloadError
from omeframe.storage.crc import crc32_function
from omeframe.storage.parquet_pages import UnsupportedLayout, ValuePages, value_pages

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "INDEX_KEY",
    "Layout",
    "IndexBuilder",
    "PixelIndex",
    "append_index",
    "load_index",
]

#: File metadata key marking a table that carries a pixel index (value: index version).
INDEX_KEY = b"omeframe.pixel_index"
#: Version 2 stores every integer array in its smallest type, as its values or as
#: differences (page numbers and offsets rise), whichever compresses smaller, and
#: page offsets relative to their page bodies: 0.74 instead of 1.41 MB for the
#: 100,000 pages of 100,000 crops 3×64×64. Version 1 indexes are still read.
INDEX_VERSION = "2"
READABLE_VERSIONS = frozenset({"1", "2"})
_MAGIC = b"OFPXIDX1"
_TRAILER = struct.Struct("<8sQQII")  # magic, blob offset, blob length, crc32, reserved


@dataclass(frozen=True)
class Layout:
    """How one record's pixels are chunked: shared by all records of a crop table."""

    shape: tuple[int, int, int, int, int]
    dtype: str
    keys: np.ndarray  # (k, 8) int64: t, c, z, y, x, shape_z, shape_y, shape_x
    codecs: tuple[str | None, ...]  # per chunk: "zstd" or None

    def ident(self) -> tuple[Any, ...]:
        return (self.shape, self.dtype, self.keys.tobytes(), self.codecs)

    @property
    def num_chunks(self) -> int:
        return len(self.keys)

    def as_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "keys": self.keys.tolist(),
            "codecs": list(self.codecs),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Layout:
        keys = np.asarray(d["keys"], dtype=np.int64).reshape(-1, 8)
        return cls(tuple(int(v) for v in d["shape"]), str(d["dtype"]), keys, tuple(d["codecs"]))  # type: ignore[arg-type]


@dataclass
class IndexBuilder:
    """Collects layouts and payload lengths batch by batch while a table is written."""

    layouts: list[Layout] = field(default_factory=list)
    _ids: dict[tuple[Any, ...], int] = field(default_factory=dict)
    record_layout: list[np.ndarray] = field(default_factory=list)
    lengths: list[np.ndarray] = field(default_factory=list)
    usable: bool = True
    #: ``"frames"``: every chunk is its own zstd frame (pages stored raw);
    #: ``"pages"``: chunks are raw and Parquet compresses the pages.
    mode: str = "frames"

    def layout_id(self, layout: Layout) -> int:
        key = layout.ident()
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.layouts)
            self.layouts.append(layout)
        return found

    def observe(self, column: pa.Array | pa.ChunkedArray) -> None:
        """Record the layouts and payload lengths of a batch's OME-Arrow column."""
        if not self.usable:
            return
        parts = column.chunks if hasattr(column, "chunks") else [column]
        for part in parts:
            if not len(part):
                continue
            arr = _flat_struct(part)
            lay = layout_of(arr)
            if lay is not None and not self._fits(lay):
                self.usable = False
                return
            if lay is not None:
                ids = np.full(len(arr), self.layout_id(lay), dtype=np.uint32)
            else:  # ragged records: one layout each (the general path is per record anyway)
                found = [layout_of(arr.slice(i, 1)) for i in range(len(arr))]
                if any(f is None or not self._fits(f) for f in found):
                    self.usable = False
                    return
                ids = np.asarray([self.layout_id(f) for f in found if f is not None], dtype=np.uint32)
            chunks = arr.field("chunks")
            loffs = chunks.offsets.to_numpy()
            inner = _flat_struct(chunks.values.slice(int(loffs[0]), int(loffs[-1] - loffs[0])))
            poffs, _ = binary_offsets(inner.field("pixel_bytes"))
            self.record_layout.append(ids)
            self.lengths.append(np.diff(poffs))

    def _fits(self, lay: Layout) -> bool:
        """Frames mode takes zstd chunks (each checks itself); pages mode raw chunks
        (the page checksums cover them)."""
        want: str | None = "zstd" if self.mode == "frames" else None
        return all(c == want for c in lay.codecs)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.concatenate(self.record_layout) if self.record_layout else np.zeros(0, np.uint32)
        lens = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        return ids, lens


@dataclass(frozen=True)
class PlainValues:
    """Where the values of uncompressed PLAIN pages lie, without an offset per value.

    A value's bytes follow its 4-byte length prefix, back to back within its
    page: value ``v`` of page ``p`` starts at ``base[p] + before[v] + 4 * v``,
    where ``before[v]`` sums the lengths of the values ahead of ``v``. An
    offset is computed for the chunks a read asks for, so opening a table of
    millions of chunks builds one running sum instead of an offset array and
    its temporaries.
    """

    page_first: np.ndarray  # (pages,) int64 first value of each page
    base: np.ndarray  # (pages,) int64
    before: np.ndarray  # (values + 1,) int64 running sum of the lengths, from 0

    def offsets_of(self, ids: np.ndarray) -> np.ndarray:
        """File offsets of values ``ids`` (int64)."""
        ids = np.asarray(ids, dtype=np.int64)
        page = np.searchsorted(self.page_first, ids, side="right") - 1
        return self.base[page] + self.before[ids] + 4 * ids


@dataclass(frozen=True)
class PixelIndex:
    """Byte ranges of every chunk payload of a Parquet record table."""

    layouts: tuple[Layout, ...]
    record_layout: np.ndarray  # (n,) uint32
    first_chunk: np.ndarray  # (n + 1,) int64
    lengths: np.ndarray  # (chunks,) uint32 or int64 stored length of each payload
    #: Uncompressed pages: where each payload lies (see :meth:`offsets_of`).
    plain: PlainValues | None = None
    #: Compressed pages (raw chunks, zstd-compressed v2 pages): every chunk
    #: payload has ``value_size`` bytes and the page table says where each
    #: page's compressed values lie; ``None`` for uncompressed pages.
    pages: ValuePages | None = None
    value_size: int = 0

    @property
    def num_rows(self) -> int:
        return len(self.record_layout)

    def uniform(self) -> Layout | None:
        """The one layout of every record, or ``None`` when records differ."""
        return self.layouts[0] if len(self.layouts) == 1 else None

    def offsets_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        """File offset of the payload of each chunk in ``chunk_ids`` (uncompressed pages only)."""
        if self.plain is None:
            raise ValueError("the payloads of this table lie in compressed pages: read them with read_page_values")
        return self.plain.offsets_of(chunk_ids)


def _chunk_starts(layouts: tuple[Layout, ...], record_layout: np.ndarray) -> np.ndarray:
    per = np.asarray([lay.num_chunks for lay in layouts], dtype=np.int64)
    first = np.zeros(len(record_layout) + 1, dtype=np.int64)
    if len(record_layout):
        np.cumsum(per[record_layout], out=first[1:])
    return first


def _pack(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    import zstandard

    zc = zstandard.ZstdCompressor(level=3)
    parts: list[bytes] = []
    desc = []
    for name, arr in arrays.items():
        # Integer arrays as values or as differences (page offsets rise, row group by row group),
        # each in its smallest type: whichever compresses smaller.
        packed, a, how = min(
            ((zc.compress(c.tobytes()), c, h) for c, h in _narrowed(np.ascontiguousarray(arr))),
            key=lambda t: len(t[0]),
        )
        desc.append({"name": name, "dtype": a.dtype.str, "count": int(a.size), "nbytes": len(packed), **how})
        parts.append(packed)
    head = json.dumps({"version": INDEX_VERSION, "meta": meta, "arrays": desc}).encode()
    return struct.pack("<I", len(head)) + head + b"".join(parts)


def _narrowed(a: np.ndarray) -> list[tuple[np.ndarray, dict[str, str]]]:
    """Ways to store ``a``: itself, and for integers its values, or its first value (``base``) and the
    differences from each value to the next, in their smallest types."""
    if a.dtype.kind not in "iu" or not a.size:
        return [(a, {})]
    wide = a.astype(np.int64)
    ways = [(_smallest(wide), {"as": a.dtype.str})]
    if a.size > 1 and int(wide.max()) - int(wide.min()) < 2**62:  # differences of such values cannot overflow
        first = int(wide[0])
        ways.append((_smallest(np.diff(wide, prepend=wide[:1])), {"as": a.dtype.str, "delta": "1", "base": str(first)}))
    return ways


def _smallest(wide: np.ndarray) -> np.ndarray:
    """``wide`` (int64) in the smallest integer type that holds its values."""
    lo, hi = int(wide.min()), int(wide.max())
    for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return wide.astype(t)
    return wide


def _widen(a: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    """Undo :func:`_narrowed` for one stored array described by ``d``."""
    if "as" not in d:
        return a
    out = np.cumsum(a, dtype=np.int64) + int(d["base"]) if d.get("delta") == "1" else a.astype(np.int64)
    target = np.dtype(d["as"])
    if target.kind not in "iu":
        raise ValueError(f"pixel index array {d['name']!r} claims the type {target}")
    if out.size and (int(out.min()) < np.iinfo(target).min or int(out.max()) > np.iinfo(target).max):
        raise ValueError(f"pixel index array {d['name']!r} does not fit its type {target}")
    return out.astype(target)


def _unpack(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import zstandard

    (hlen,) = struct.unpack_from("<I", blob, 0)
    head = json.loads(blob[4 : 4 + hlen])
    if head.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"pixel index version {head.get('version')!r} is not one of {sorted(READABLE_VERSIONS)}")
    pos = 4 + hlen
    out: dict[str, np.ndarray] = {}
    zd = zstandard.ZstdDecompressor()
    for d in head["arrays"]:
        dt = np.dtype(d["dtype"])
        raw = zd.decompress(blob[pos : pos + d["nbytes"]], max_output_size=int(d["count"]) * dt.itemsize)
        if len(raw) != int(d["count"]) * dt.itemsize:
            raise ValueError(f"pixel index array {d['name']!r} has the wrong size")
        out[d["name"]] = _widen(np.frombuffer(raw, dtype=dt), d)
        pos += d["nbytes"]
    return out, head["meta"]


def _plain_values(
    lengths: np.ndarray, firsts: np.ndarray, starts: np.ndarray, counts: np.ndarray, end: int, what: str
) -> PlainValues:
    """Where the values lie, from the page table and the value lengths, checked against the data's ``end``.

    Raises :class:`CorruptFileError` when the pages do not hold the values in
    order, back to back, or a value would lie outside ``[4, end)``.
    """
    firsts, starts, counts = (np.asarray(a, dtype=np.int64) for a in (firsts, starts, counts))
    n = len(lengths)
    expect = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=expect[1:])
    if len(firsts) != len(counts) or (counts < 0).any() or not np.array_equal(firsts, expect):
        raise CorruptFileError(f"{what}: the pixel index page table does not cover the values in order")
    before = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=before[1:])
    base = starts + 4 - before[np.minimum(firsts, n)] - 4 * firsts
    used = counts > 0
    last = (firsts + counts - 1)[used]
    if used.any() and ((starts[used] < 0).any() or int((base[used] + before[last + 1] + 4 * last).max()) > end):
        raise CorruptFileError(f"{what}: the pixel index points outside the data")
    return PlainValues(firsts, base, before)


def check_prefixes(mm: Any, offsets: np.ndarray, lengths: np.ndarray) -> bool:
    """True when the 4-byte length prefix before every payload equals its indexed length."""
    if not len(offsets):
        return True
    raw = np.frombuffer(mm, dtype=np.uint8)
    if int(offsets.min()) < 4 or int((offsets + lengths).max()) > raw.size:
        return False
    pos = (offsets - 4)[:, None] + np.arange(4)
    prefix = raw[pos].copy().view("<u4").reshape(-1)
    return bool(np.array_equal(prefix.astype(np.int64), lengths))


def append_index(path: str | os.PathLike[str], column_path: str, builder: IndexBuilder) -> bool:
    """Insert the pixel index of the freshly written Parquet file at ``path``.

    ``column_path`` is the dotted Parquet path of the ``pixel_bytes`` leaf. Returns
    ``False`` (and leaves the file as it is) when its pages are not in the
    layout byte ranges can be computed for.
    """
    import mmap

    import pyarrow.parquet as pq

    if not builder.usable:
        return False
    ids, lengths = builder.finish()
    layouts = tuple(builder.layouts)
    p = os.fspath(path)
    pf = pq.ParquetFile(p)
    try:
        paths = [pf.schema.column(i).path for i in range(len(pf.schema))]
        if column_path not in paths:
            return False
        try:
            pages = value_pages(p, pf, paths.index(column_path))
        except UnsupportedLayout:
            return False
    finally:
        pf.close()
    if int(pages.num_values.sum()) != len(lengths) or int(_chunk_starts(layouts, ids)[-1]) != len(lengths):
        return False
    arrays = {
        "record_layout": ids,
        "lengths": lengths.astype(np.uint32) if lengths.size and lengths.max() < 2**32 else lengths,
        "page_first": pages.first_value,
        "page_start": pages.values_start,
        "page_count": pages.num_values,
    }
    compressed = pages.codec != "UNCOMPRESSED"
    if compressed != (builder.mode == "pages") or (compressed and pages.codec != "ZSTD"):
        return False
    if compressed:
        assert pages.values_stored is not None and pages.values_raw is not None
        assert pages.body_start is not None and pages.body_len is not None and pages.crc is not None
        # Raw chunks of one size: a page's values are (4-byte length, bytes) records
        # of one width, which must add up to the page's decompressed size.
        if not len(lengths) or (lengths != lengths[0]).any():
            return False
        if not np.array_equal(pages.num_values * (4 + int(lengths[0])), pages.values_raw):
            return False
        # A page's values start a few bytes (its levels) into its body, and its body is its values'
        # compressed bytes plus those: stored as these few bytes, they compress to almost nothing.
        arrays.update(
            page_start=pages.values_start - pages.body_start, page_stored=pages.values_stored,
            page_raw=pages.values_raw, page_body=pages.body_start,
            page_body_extra=pages.body_len - np.abs(pages.values_stored), page_crc=pages.crc,
        )
    else:
        try:
            plain = _plain_values(
                lengths, pages.first_value, pages.values_start, pages.num_values, os.path.getsize(p), repr(p)
            )
        except CorruptFileError:  # the page table does not describe these values: no index
            return False
        offsets = plain.offsets_of(np.arange(len(lengths)))
    with open(p, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if not compressed and not check_prefixes(mm, offsets, lengths):
                return False
            footer_len = struct.unpack_from("<I", mm, size - 8)[0]
            footer_start = size - 8 - footer_len
            tail = mm[footer_start:size]
        blob = _pack(arrays, {"layouts": [lay.as_json() for lay in layouts], "pages": pages.codec.lower()})
        trailer = _TRAILER.pack(_MAGIC, footer_start, len(blob), zlib.crc32(blob), 0)
        fh.seek(footer_start)
        fh.write(blob)
        fh.write(trailer)
        fh.write(tail)
        fh.truncate()  # the caller's atomic write fsyncs the file before it appears
    return True


def load_index(path: str | os.PathLike[str], mm: Any) -> PixelIndex | None:
    """Read the pixel index of the Parquet file mapped in ``mm``, or ``None`` if it has none.

    Raises
    ------
    CorruptFileError
        When the trailer is present but the blob is damaged (CRC mismatch).
    """
    size = len(mm)
    if size < 12 + _TRAILER.size or mm[size - 4 : size] != b"PAR1":
        return None
    footer_len = struct.unpack_from("<I", mm, size - 8)[0]
    at = size - 8 - footer_len - _TRAILER.size
    if at < 4:
        return None
    magic, off, length, crc, _ = _TRAILER.unpack_from(mm, at)
    if magic != _MAGIC:
        return None
    if off + length != at:
        raise CorruptFileError(f"{os.fspath(path)!r}: the pixel index trailer points outside its block")
    blob = bytes(mm[off : off + length])
    if zlib.crc32(blob) != crc:
        raise CorruptFileError(
            f"{os.fspath(path)!r}: the pixel index is damaged (CRC mismatch); rewrite the table "
            "or read it with pyarrow / omeframe.read_table(..., use_index=False)"
        )
    try:
        arrays, meta = _unpack(blob)
        layouts = tuple(Layout.from_json(d) for d in meta["layouts"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{os.fspath(path)!r}: unreadable pixel index ({exc})") from exc
    ids = arrays["record_layout"].astype(np.int64)
    if ids.size and (ids.max() >= len(layouts)):
        raise CorruptFileError(f"{os.fspath(path)!r}: the pixel index names an unknown layout")
    lengths = arrays["lengths"]
    if lengths.dtype != np.uint32:  # written as uint32; any other integers are checked as int64
        if lengths.dtype.kind not in "iu":
            raise CorruptFileError(f"{os.fspath(path)!r}: the pixel index stores lengths as {lengths.dtype}")
        lengths = lengths.astype(np.int64)
        if len(lengths) and int(lengths.min()) < 0:
            raise CorruptFileError(f"{os.fspath(path)!r}: the pixel index holds a negative length")
    first = _chunk_starts(layouts, ids)
    if int(first[-1]) != len(lengths) or int(arrays["page_count"].sum()) != len(lengths):
        raise CorruptFileError(f"{os.fspath(path)!r}: the pixel index chunk counts disagree")
    if meta.get("pages", "uncompressed") == "zstd":
        try:
            body = arrays["page_body"].astype(np.int64)
            stored = arrays["page_stored"].astype(np.int64)
            start = arrays["page_start"].astype(np.int64)
            if "page_body_extra" in arrays:  # version 2: offsets within the page body (see append_index)
                start = body + start
                body_len = np.abs(stored) + arrays["page_body_extra"].astype(np.int64)
            else:
                body_len = arrays["page_body_len"].astype(np.int64)
            pages = ValuePages(
                arrays["page_first"].astype(np.int64), start, arrays["page_count"].astype(np.int64), "ZSTD",
                stored, arrays["page_raw"].astype(np.int64), body, body_len, arrays["page_crc"].astype(np.int64),
            )
        except (KeyError, ValueError) as exc:
            raise CorruptFileError(f"{os.fspath(path)!r}: the pixel index lacks or garbles {exc}") from None
        assert pages.body_start is not None and pages.body_len is not None and pages.values_stored is not None
        if len(lengths) and (
            (lengths != lengths[0]).any()
            or int((pages.body_start + pages.body_len).max()) > off
            or (pages.values_start + np.abs(pages.values_stored) > pages.body_start + pages.body_len).any()
        ):
            raise CorruptFileError(f"{os.fspath(path)!r}: the pixel index points outside the data")
        value_size = int(lengths[0]) if len(lengths) else 0
        return PixelIndex(layouts, ids.astype(np.uint32), first, lengths, None, pages, value_size)
    plain = _plain_values(
        lengths, arrays["page_first"], arrays["page_start"], arrays["page_count"], off, repr(os.fspath(path))
    )
    return PixelIndex(layouts, ids.astype(np.uint32), first, lengths, plain)


def layout_of_record(arr: pa.StructArray, i: int) -> Layout | None:
    """The layout of record ``i`` of a flat record array (ragged tables), or ``None``."""
    return layout_of(arr.slice(i, 1))


def layout_of(arr: pa.StructArray) -> Layout | None:
    """The one layout every record of ``arr`` shares, or ``None`` when they differ."""
    lay = uniform_layout(arr)
    if lay is None:
        return None
    return Layout(lay.shape, dtype_name(lay.dtype), lay.keys, (lay.codec,) * len(lay.keys))


def read_page_values(
    mm: Any, index: PixelIndex, chunk_ids: np.ndarray, *, what: str, out: np.ndarray | None = None
) -> np.ndarray:
    """The payloads of ``chunk_ids`` from a table whose raw chunks lie in compressed pages.

    Reads each page the chunks live in once, checks its Parquet CRC-32 and
    decompresses it; pages are handled in blocks of at most
    :data:`DECODE_BLOCK_BYTES` decoded bytes, each decoded, checked and
    copied into place by one thread of the shared pool while it is in cache
    (a full scan holds no more than a block per thread beside its result).
    Returns (or fills ``out`` with) a ``(len(chunk_ids), value_size)`` uint8
    array in the order asked.

    Raises
    ------
    ChunkChecksumError
        When a page's bytes do not match its CRC.
    PixelPayloadError
        When a page does not decompress to its declared size.
    CorruptFileError
        When a value's stored length disagrees with the index.
    """
    pages = index.pages
    assert pages is not None and pages.values_raw is not None
    vsize = index.value_size
    width = vsize + 4
    n = len(chunk_ids)
    if out is None:
        out = np.empty((n, vsize), dtype=np.uint8)
    elif out.shape != (n, vsize) or out.dtype != np.uint8:
        raise ValueError(f"out must be a ({n}, {vsize}) uint8 array, got {out.shape} {out.dtype}")
    if not n:
        return out
    page_of = np.searchsorted(pages.first_value, chunk_ids, side="right") - 1
    order = None if n == 1 or bool((np.diff(page_of) >= 0).all()) else np.argsort(page_of, kind="stable")
    spages = page_of if order is None else page_of[order]
    sids = chunk_ids if order is None else chunk_ids[order]
    used, first = np.unique(spages, return_index=True)
    pos = np.append(first, n)  # the chunks of used page u sit at sorted positions pos[u]:pos[u + 1]
    raw = pages.values_raw[used].astype(np.int64)
    cum = np.zeros(len(used) + 1, dtype=np.int64)
    np.cumsum(raw, out=cum[1:])
    # A scan: blocks of at most DECODE_BLOCK_BYTES, each checked, decoded and placed by
    # one thread of the pool while in cache. A take within one block: one share per
    # thread, decoded while one thread checks every page's CRC (a loop that holds the
    # GIL, so it runs on one thread, beside decoders that release it).
    block_bytes = DECODE_BLOCK_BYTES
    split = int(cum[-1]) <= block_bytes and len(used) > 8 and _threads.can_parallelize()
    if split:
        block_bytes = -(-int(cum[-1]) // _threads.num_threads())
    bounds = byte_runs(cum, block_bytes)

    def place(v0: int, v1: int) -> None:
        """Decode pages ``used[v0:v1]`` and place the values asked for."""
        try:
            rows = _decode_pages(mm, pages, used[v0:v1], raw[v0:v1], what).reshape(-1, width)
        except PixelPayloadError:
            if split:  # the CRCs are checked on another thread: name the damage the same way whichever ends first
                _check_pages(mm, pages, used[v0:v1], what)
            raise
        s0, s1 = int(pos[v0]), int(pos[v1])
        page_row = (cum[v0:v1] - cum[v0]) // width  # first row of each page in ``rows``
        local = page_row[np.searchsorted(used[v0:v1], spages[s0:s1])] + (sids[s0:s1] - pages.first_value[spages[s0:s1]])
        whole = order is None and s1 - s0 == len(rows) and int(local[0]) == 0 and bool((np.diff(local) == 1).all())
        picked = rows if whole else rows[local]
        prefix = np.ndarray((len(picked),), dtype="<u4", buffer=picked, strides=(width,))
        if (prefix != vsize).any():
            raise CorruptFileError(f"{what}: a value's stored length disagrees with the pixel index")
        if order is None:
            out[s0:s1] = picked[:, 4:]
        else:
            out[order[s0:s1]] = picked[:, 4:]

    def block(b: int) -> None:
        if b < 0:
            _check_pages(mm, pages, used, what)
            return
        u0, u1 = bounds[b], bounds[b + 1]
        if not split:
            _check_pages(mm, pages, used[u0:u1], what)
        # Runs of pages of about DECODE_CALL_BYTES: the decoded pages stay small and in cache
        # (and in reused heap memory) until their values are placed.
        runs = byte_runs(cum[u0 : u1 + 1] - cum[u0], DECODE_CALL_BYTES)
        for v0, v1 in zip(runs[:-1], runs[1:], strict=True):
            place(u0 + v0, u0 + v1)

    if split:
        _threads.run_each(block, range(-1, len(bounds) - 1))
    elif len(bounds) == 2:
        block(0)
    else:
        _threads.run_each(block, range(len(bounds) - 1))
    return out


def _check_pages(mm: Any, pages: ValuePages, used: np.ndarray, what: str) -> None:
    """Raise :class:`ChunkChecksumError` unless every page in ``used`` matches its Parquet CRC-32."""
    assert pages.body_start is not None and pages.body_len is not None and pages.crc is not None
    crc32 = crc32_function()
    view = memoryview(mm).cast("B")
    starts, stops = pages.body_start[used], pages.body_start[used] + pages.body_len[used]
    try:  # one CRC per page read, not per chunk
        rows = zip(used.tolist(), pages.crc[used].tolist(), starts.tolist(), stops.tolist(), strict=True)
        for p, crc, lo, hi in rows:
            if crc >= 0 and crc32(view[lo:hi]) != crc:
                raise ChunkChecksumError(
                    f"{what}: page {p} of the pixel column fails its CRC-32 (the file is damaged)"
                )
    finally:
        view.release()


def _decode_pages(mm: Any, pages: ValuePages, used: np.ndarray, raw: np.ndarray, what: str) -> np.ndarray:
    """The values of pages ``used`` back to back (``raw[i]`` bytes each), their CRCs not checked.

    The values are in this thread's scratch buffer (:func:`thread_scratch`):
    valid until the thread decodes its next pages.
    """
    assert pages.values_stored is not None
    stored = pages.values_stored[used]
    buf = thread_scratch(int(raw.sum()))
    at = np.zeros(len(used) + 1, dtype=np.int64)
    np.cumsum(raw, out=at[1:])
    packed = np.flatnonzero(stored >= 0)  # pages whose values are zstd frames (the writer may keep some raw)
    if len(packed):
        whole = len(packed) == len(used)
        into = buf if whole else np.empty(int(raw[packed].sum()), dtype=np.uint8)
        try:
            decode_frames_into(into, mm, pages.values_start[used[packed]], stored[packed], raw[packed])
        except FrameError as exc:
            raise PixelPayloadError(f"{what}: a page of the pixel column does not decompress: {exc}") from exc
        if whole:
            return buf
        offs = np.zeros(len(packed) + 1, dtype=np.int64)
        np.cumsum(raw[packed], out=offs[1:])
        for j, i in enumerate(packed.tolist()):  # pages stored raw are rare: copy the others one by one
            buf[at[i] : at[i + 1]] = into[offs[j] : offs[j + 1]]
    for i in np.flatnonzero(stored < 0).tolist():
        lo = int(pages.values_start[used[i]])
        buf[at[i] : at[i + 1]] = np.frombuffer(mm[lo : lo + int(raw[i])], dtype=np.uint8)
    return buf
