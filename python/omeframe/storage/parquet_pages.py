"""Locate the values of an uncompressed, PLAIN-encoded Parquet column in its file.

Parquet page headers are Thrift compact-protocol structs. This module reads
just enough of them (page type, sizes, value counts, level lengths) to find
where each data page's values begin, so a caller that knows the length of
every value (because it wrote them) can compute each value's byte range in
the file. That turns a random take of a few rows into a few positional reads
instead of decoding whole row groups.

Only what such a column needs is supported: PLAIN encoding, no dictionary,
no nulls; data pages v1 without page compression, or v2 pages (whose levels
are stored apart from the values) uncompressed or zstd-compressed. Anything
else raises :class:`UnsupportedLayout` and the caller keeps Parquet's own
reader.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from omeframe.model.errors import CorruptFileError
from omeframe.storage.thrift_compact import FALSE, I32, STOP, STRUCT, TRUE, Field, decode_struct

if TYPE_CHECKING:
    import pyarrow.parquet as pq

__all__ = ["UnsupportedLayout", "V2Headers", "ValuePages", "read_header", "usual_v2_headers", "value_pages"]

_DATA_PAGE, _INDEX_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 1, 2, 3
_PLAIN = 0


class UnsupportedLayout(Exception):
    """The column is not stored in the layout value ranges can be computed for."""


@dataclass
class _Header:
    type: int = -1
    uncompressed_size: int = -1
    compressed_size: int = -1
    crc: int | None = None
    num_values: int = -1
    num_nulls: int = 0
    encoding: int = -1
    def_len: int = 0
    rep_len: int = 0
    is_compressed: bool = True


def _parse_header(buf: bytes) -> tuple[_Header, int]:
    """Any page header (the general path): ``(fields that matter, header length)``."""
    try:
        fields, end = decode_struct(buf)
    except CorruptFileError as exc:
        raise UnsupportedLayout(f"unreadable page header: {exc}") from None

    def ints(struct: list[Field]) -> dict[int, int]:
        return {f.id: int(f.value) for f in struct if f.type == I32}

    top = ints(fields)
    h = _Header(
        type=top.get(1, -1), uncompressed_size=top.get(2, -1), compressed_size=top.get(3, -1),
        crc=top[4] & 0xFFFFFFFF if 4 in top else None,
    )
    for f in fields:
        if f.type != STRUCT:
            continue
        inner = ints(f.value)
        if f.id == 5:  # DataPageHeader (v1)
            h.num_values, h.encoding = inner.get(1, -1), inner.get(2, -1)
        elif f.id == 8:  # DataPageHeaderV2
            h.num_values, h.num_nulls, h.encoding = inner.get(1, -1), inner.get(2, 0), inner.get(4, -1)
            h.def_len, h.rep_len = inner.get(5, 0), inner.get(6, 0)
            h.is_compressed = next((bool(g.value) for g in f.value if g.id == 7 and g.type in (TRUE, FALSE)), True)
    return h, end


_VARINT = rb"([\x80-\xff]{0,4}[\x00-\x7f])"
#: The v2 data-page header Arrow writes for a column without statistics:
#: type, sizes, CRC, then the v2 struct (values, nulls, rows, encoding, level
#: lengths, is_compressed, an empty statistics struct), each a short-form field.
_V2_HEADER = re.compile(
    rb"\x15\x06\x15" + _VARINT + rb"\x15" + _VARINT + rb"\x15" + _VARINT + rb"\x4c"
    + b"".join(rb"\x15" + _VARINT for _ in range(6)) + rb"([\x11\x12])(?:\x1c\x00)?\x00\x00",
    re.DOTALL,
)
_varints: dict[bytes, int] = {}
#: Byte values of the optional empty statistics struct (field 8, struct) in :data:`_V2_HEADER`.
_EMPTY_STATS = 0x1C
_TRUE_FLAG = 0x11


@dataclass(frozen=True)
class V2Headers:
    """Consecutive v2 data-page headers of the usual form (:data:`_V2_HEADER`), field by field.

    Each array holds one entry per page, in file order: where its header
    starts (``start``) and its body begins (``body``), then the header's
    fields. Built by :func:`usual_v2_headers`.
    """

    start: np.ndarray
    body: np.ndarray
    uncompressed_size: np.ndarray
    compressed_size: np.ndarray
    crc: np.ndarray  # the CRC-32 as an unsigned value (the usual header always carries one)
    num_values: np.ndarray
    num_nulls: np.ndarray
    encoding: np.ndarray
    def_len: np.ndarray
    rep_len: np.ndarray
    is_compressed: np.ndarray


def _zigzag_varints_at(u8: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The zigzag varints (at most 5 bytes, as the regex matched) starting at ``pos``, and the positions after them."""
    lanes = np.arange(5)
    b = u8[np.minimum(pos[:, None] + lanes, len(u8) - 1)].astype(np.int64)
    length = ((b & 0x80) == 0).argmax(axis=1) + 1
    v = (((b & 0x7F) << (7 * lanes)) * (lanes < length[:, None])).sum(axis=1)
    return (v >> 1) ^ -(v & 1), pos + length


def usual_v2_headers(buf: bytes | mmap.mmap | memoryview, pos: int, end: int) -> tuple[V2Headers | None, int]:
    """The run of usual v2 page headers (:data:`_V2_HEADER`) from ``pos``, and where the run stops.

    A page table is a chain (each page's position follows from the one
    before), so the walk itself is a loop: one regex match (in C) and one
    varint per page. Every other field is decoded afterwards for all pages at
    once from the matched bytes. The run stops at ``end`` or at the first
    header of another form, which the caller parses with
    :func:`read_header`; ``(None, pos)`` when the header at ``pos`` already
    is one. The run also stops after a page of negative size; the pages'
    sizes are not checked against ``end`` here.

    Example
    -------
    >>> import io, pyarrow as pa, pyarrow.parquet as pq
    >>> sink = io.BytesIO()
    >>> pq.write_table(pa.table({"v": [b"x" * 100] * 50}), sink, data_page_version="2.0",
    ...                write_statistics=False, write_page_checksum=True, data_page_size=1000,
    ...                write_batch_size=10, use_dictionary=False)
    >>> cc = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata.row_group(0).column(0)
    >>> heads, stop = usual_v2_headers(sink.getvalue(), cc.data_page_offset,
    ...                                cc.data_page_offset + cc.total_compressed_size)
    >>> heads.num_values.tolist(), stop == cc.data_page_offset + cc.total_compressed_size
    ([10, 10, 10, 10, 10], True)
    """
    match, z = _V2_HEADER.match, _zigzag_varint
    starts: list[int] = []
    bodies: list[int] = []
    while pos < end:
        m = match(buf, pos)
        if m is None or m.end() > end:
            break
        starts.append(pos)
        body = m.end()
        bodies.append(body)
        size = z(m.group(2))
        if size < 0:  # a damaged size: the caller refuses the page (never walk backwards)
            pos = body
            break
        pos = body + size
    if not starts:
        return None, pos
    u8 = np.frombuffer(buf, dtype=np.uint8)
    p = np.asarray(starts, dtype=np.int64) + 3  # \x15\x06\x15: type DATA_PAGE_V2, then field 2
    fields = []
    for skip in (0, 1, 1, 2, 1, 1, 1, 1, 1):  # \x15 before each field; \x4c opens the v2 struct
        p = p + skip
        value, p = _zigzag_varints_at(u8, p)
        fields.append(value)
    flag = u8[p]
    p = p + 1
    p = p + 2 * (u8[np.minimum(p, len(u8) - 1)] == _EMPTY_STATS) + 2
    body_arr = np.asarray(bodies, dtype=np.int64)
    if not np.array_equal(p, body_arr):  # pragma: no cover - the regex fixes the layout decoded above
        raise UnsupportedLayout("page headers decode differently from how they matched")
    unc, comp, crc, nv, nn, _rows, enc, dl, rl = fields
    heads = V2Headers(
        np.asarray(starts, dtype=np.int64), body_arr, unc, comp, crc & 0xFFFFFFFF, nv, nn, enc, dl, rl,
        flag == _TRUE_FLAG,
    )
    return heads, pos


def read_header(buf: bytes | mmap.mmap | memoryview, pos: int, end: int) -> tuple[_Header, int]:
    """The page header at ``buf[pos:]`` (it must end by ``end``) and where its page body starts.

    The usual headers go through :func:`_fast_header`, anything else through
    :func:`_parse_header`. Raises :class:`UnsupportedLayout` for a header
    that cannot be parsed.
    """
    parsed = _fast_header(buf, pos)
    if parsed is not None and parsed[1] <= end:
        return parsed
    h, hlen = _parse_header(bytes(buf[pos : min(pos + (1 << 16), end)]))
    return h, pos + hlen


def _zigzag_varint(b: bytes) -> int:
    v = _varints.get(b)
    if v is None:
        v = 0
        for i, x in enumerate(b):
            v |= (x & 0x7F) << (7 * i)
        v = (v >> 1) ^ -(v & 1)
        if len(_varints) < 1 << 16:  # sizes and counts repeat from page to page; CRCs do not
            _varints[b] = v
    return v


#: Slots of :func:`_fast_header`'s result.
_TYPE, _UNCOMP, _COMP, _CRC, _NVALUES, _NNULLS, _ENCODING, _DEFLEN, _REPLEN, _ISCOMP = range(10)
_TOP_SLOTS = {1: _TYPE, 2: _UNCOMP, 3: _COMP, 4: _CRC}
_V1_SLOTS = {1: _NVALUES, 2: _ENCODING}
_V2_SLOTS = {1: _NVALUES, 2: _NNULLS, 4: _ENCODING, 5: _DEFLEN, 6: _REPLEN}


def _fast_header(buf: bytes | mmap.mmap | memoryview, pos: int) -> tuple[_Header, int] | None:
    """:func:`_parse_header` for the headers writers usually emit, in one flat loop.

    Reads a header at ``buf[pos:]`` made of short-form field ids, I32 fields
    and the v1/v2 data-page structs (no statistics). Returns ``None`` for
    anything else (or a header cut off by the end of ``buf``), and the caller
    falls back to the general parser. A table of small images has one page
    per few kilobytes, so this loop runs tens of thousands of times per file.
    """
    vals = [-1, -1, -1, -1, -1, 0, -1, 0, 0, 1]
    has_crc = False
    slots = _TOP_SLOTS
    top = True
    last = outer_last = 0
    try:
        while True:
            head = buf[pos]
            pos += 1
            t = head & 0x0F
            if t == STOP:
                if top:
                    break
                top, slots, last = True, _TOP_SLOTS, outer_last
                continue
            delta = head >> 4
            if not delta:
                return None
            last += delta
            if t == I32:
                b = buf[pos]
                pos += 1
                v = b & 0x7F
                shift = 7
                while b & 0x80:
                    b = buf[pos]
                    pos += 1
                    v |= (b & 0x7F) << shift
                    shift += 7
                slot = slots.get(last)
                if slot is not None:
                    vals[slot] = (v >> 1) ^ -(v & 1)
                    has_crc |= slot == _CRC and top
            elif t == STRUCT and top and last in (5, 8):
                top, slots, outer_last, last = False, (_V1_SLOTS if last == 5 else _V2_SLOTS), last, 0
            elif t in (TRUE, FALSE) and not top and slots is _V2_SLOTS and last == 7:
                vals[_ISCOMP] = int(t == TRUE)
            elif t == STRUCT and not top and buf[pos] == STOP:  # empty statistics
                pos += 1
            else:
                return None
    except IndexError:
        return None
    h = _Header(
        vals[_TYPE], vals[_UNCOMP], vals[_COMP], vals[_CRC] & 0xFFFFFFFF if has_crc else None, vals[_NVALUES],
        vals[_NNULLS], vals[_ENCODING], vals[_DEFLEN], vals[_REPLEN], bool(vals[_ISCOMP]),
    )
    return h, pos


@dataclass(frozen=True)
class ValuePages:
    """Where a column's values start, page by page.

    ``first_value[p]`` is the index (over the whole column, all row groups)
    of the first value of page ``p``; ``values_start[p]`` is the file offset
    of that value's 4-byte length prefix; ``num_values[p]`` counts its values.
    """

    first_value: np.ndarray
    values_start: np.ndarray
    num_values: np.ndarray
    #: ``"UNCOMPRESSED"``, or the codec of every page's values (``"ZSTD"``):
    #: then ``values_start`` is where a page's compressed values begin, and
    #: the next three arrays describe each page.
    codec: str = "UNCOMPRESSED"
    values_stored: np.ndarray | None = None  # compressed bytes of the values (negative: stored raw)
    values_raw: np.ndarray | None = None  # their decompressed size
    body_start: np.ndarray | None = None  # page body (levels + values): what the page CRC covers
    body_len: np.ndarray | None = None
    crc: np.ndarray | None = None  # the page's CRC-32 (-1: none written)


def value_pages(path: str | os.PathLike[str], pf: pq.ParquetFile, column_index: int) -> ValuePages:
    """Parse the page headers of leaf column ``column_index`` in every row group.

    Raises
    ------
    UnsupportedLayout
        When a page is compressed, dictionary-encoded, not PLAIN, or holds nulls.
    """
    md = pf.metadata
    col_schema = pf.schema.column(column_index)
    max_rep, max_def = col_schema.max_repetition_level, col_schema.max_definition_level
    # per block of pages: values start, value count, stored and raw bytes of the values,
    # body start, body length, CRC (-1: none); the first value of each page follows from the counts
    blocks: list[np.ndarray] = []
    codecs: set[str] = set()
    with open(os.fspath(path), "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for g in range(md.num_row_groups):
            cc = md.row_group(g).column(column_index)
            codecs.add(cc.compression)
            if cc.compression not in ("UNCOMPRESSED", "ZSTD"):
                raise UnsupportedLayout(f"row group {g}: the column is {cc.compression}-compressed")
            if cc.has_dictionary_page:
                raise UnsupportedLayout(f"row group {g}: the column has a dictionary page")
            pos = cc.data_page_offset
            end = cc.data_page_offset + cc.total_compressed_size
            if end > len(mm) or pos < 0:
                raise UnsupportedLayout(f"row group {g}: the column chunk lies past the end of the file")
            while pos < end:
                heads, pos = usual_v2_headers(mm, pos, end)
                if heads is not None:  # the usual v2 page headers, matched in C and decoded in bulk
                    blocks.append(_usual_pages(heads, g, cc.compression))
                    continue
                try:
                    h, body = read_header(mm, pos, end)
                except UnsupportedLayout as exc:
                    raise UnsupportedLayout(f"row group {g}: {exc}") from None
                vstored = vraw = 0
                if h.type == _DATA_PAGE:
                    if h.encoding != _PLAIN or cc.compression != "UNCOMPRESSED":
                        raise UnsupportedLayout(f"row group {g}: a v1 data page is compressed or not PLAIN")
                    vstart = body
                    for present in (max_rep > 0, max_def > 0):  # v1: 4-byte-length-prefixed RLE levels
                        if present:
                            vstart += 4 + int.from_bytes(mm[vstart : vstart + 4], "little")
                    n_values = h.num_values
                elif h.type == _DATA_PAGE_V2:
                    if h.encoding != _PLAIN:
                        raise UnsupportedLayout(f"row group {g}: a v2 data page is not PLAIN-encoded")
                    if h.num_nulls:
                        raise UnsupportedLayout(f"row group {g}: a data page holds nulls")
                    vstart = body + h.rep_len + h.def_len
                    vstored = h.compressed_size - h.rep_len - h.def_len
                    vraw = h.uncompressed_size - h.rep_len - h.def_len
                    if cc.compression != "UNCOMPRESSED" and not h.is_compressed:
                        # A writer may store a page's values raw when compressing
                        # does not shrink them: stored size == raw size, no codec.
                        if vstored != vraw:
                            raise UnsupportedLayout(f"row group {g}: a raw-stored page has two sizes")
                        vstored = -vraw
                    n_values = h.num_values
                elif h.type == _DICTIONARY_PAGE:
                    raise UnsupportedLayout(f"row group {g}: the column has a dictionary page")
                else:
                    n_values = 0
                    vstart = body
                if h.compressed_size < 0:
                    raise UnsupportedLayout(f"row group {g}: a page header has no size")
                crc = -1 if h.crc is None else h.crc
                blocks.append(np.array([[vstart, n_values, vstored, vraw, body, h.compressed_size, crc]], np.int64))
                pos = body + h.compressed_size
    if len(codecs) > 1:
        raise UnsupportedLayout(f"the column's row groups use different codecs: {sorted(codecs)}")
    codec = codecs.pop() if codecs else "UNCOMPRESSED"
    table = np.concatenate(blocks) if blocks else np.zeros((0, 7), dtype=np.int64)
    if (table[:, 1] < 0).any():
        raise UnsupportedLayout("a data page header has no value count")
    table = table[table[:, 1] > 0]  # pages without values (index pages ...) locate nothing
    starts, counts, stored, raw, bodies, body_lens, crcs = table.T.copy()
    firsts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=firsts[1:])
    if codec == "UNCOMPRESSED":
        return ValuePages(firsts, starts, counts)
    return ValuePages(firsts, starts, counts, codec, stored, raw, bodies, body_lens, crcs)


def _usual_pages(heads: V2Headers, g: int, compression: str) -> np.ndarray:
    """:func:`value_pages`' rows for a run of usual v2 headers of row group ``g`` (values in ``compression``)."""
    if (heads.compressed_size < 0).any():
        raise UnsupportedLayout(f"row group {g}: a page header has no size")
    if (heads.encoding != _PLAIN).any() or heads.num_nulls.any():
        raise UnsupportedLayout(f"row group {g}: a v2 data page holds nulls or is not PLAIN")
    levels = heads.def_len + heads.rep_len
    stored = heads.compressed_size - levels
    raw = heads.uncompressed_size - levels
    kept_raw = ~heads.is_compressed & (compression != "UNCOMPRESSED")  # values kept raw (see value_pages)
    if (stored[kept_raw] != raw[kept_raw]).any():
        raise UnsupportedLayout(f"row group {g}: a raw-stored page has two sizes")
    stored = np.where(kept_raw, -raw, stored)
    return np.stack(
        [heads.body + levels, heads.num_values, stored, raw, heads.body, heads.compressed_size, heads.crc], axis=1
    )
