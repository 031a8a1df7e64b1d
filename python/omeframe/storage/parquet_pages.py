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

__all__ = ["UnsupportedLayout", "ValuePages", "read_header", "value_pages"]

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
    # per page: first value, values start, value count, stored and raw bytes of the values,
    # body start, body length, CRC (-1: none)
    recs: list[tuple[int, int, int, int, int, int, int, int]] = []
    match, z = _V2_HEADER.match, _zigzag_varint
    codecs: set[str] = set()
    seen = 0
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
                m = match(mm, pos)
                if m is not None and m.end() <= end:  # the usual v2 page header, matched in C
                    unc, comp, crc, nv, nn, _rows, enc, dl, rl, flag = m.groups()
                    levels = z(dl) + z(rl)
                    comp_size, n_values = z(comp), z(nv)
                    if z(enc) != _PLAIN or z(nn):
                        raise UnsupportedLayout(f"row group {g}: a v2 data page holds nulls or is not PLAIN")
                    body = m.end()
                    vstored, vraw = comp_size - levels, z(unc) - levels
                    if flag == b"\x12" and cc.compression != "UNCOMPRESSED":  # values kept raw (see below)
                        if vstored != vraw:
                            raise UnsupportedLayout(f"row group {g}: a raw-stored page has two sizes")
                        vstored = -vraw
                    if n_values:
                        crc32 = z(crc) & 0xFFFFFFFF
                        recs.append((seen, body + levels, n_values, vstored, vraw, body, comp_size, crc32))
                        seen += n_values
                    pos = body + comp_size
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
                if n_values:
                    recs.append(
                        (seen, vstart, n_values, vstored, vraw, body, h.compressed_size, -1 if h.crc is None else h.crc)
                    )
                    seen += n_values
                pos = body + h.compressed_size
    if len(codecs) > 1:
        raise UnsupportedLayout(f"the column's row groups use different codecs: {sorted(codecs)}")
    codec = codecs.pop() if codecs else "UNCOMPRESSED"
    cols = np.asarray(recs, dtype=np.int64).reshape(-1, 8).T.copy()
    firsts, starts, counts, stored, raw, bodies, body_lens, crcs = cols
    if codec == "UNCOMPRESSED":
        return ValuePages(firsts, starts, counts)
    return ValuePages(firsts, starts, counts, codec, stored, raw, bodies, body_lens, crcs)
