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

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow.parquet as pq

__all__ = ["UnsupportedLayout", "ValuePages", "value_pages"]

# Thrift compact types
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)
_DATA_PAGE, _INDEX_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 1, 2, 3
_PLAIN = 0


class UnsupportedLayout(Exception):
    """The column is not stored in the layout value ranges can be computed for."""


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise EOFError
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise UnsupportedLayout("malformed Thrift varint in a page header")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def skip(self, ttype: int) -> None:
        if ttype in (_TRUE, _FALSE):
            return
        if ttype == _BYTE:
            self.pos += 1
        elif ttype in (_I16, _I32, _I64):
            self.varint()
        elif ttype == _DOUBLE:
            self.pos += 8
        elif ttype == _BINARY:
            size = self.varint()  # read the length before moving past it
            self.pos += size
        elif ttype in (_LIST, _SET):
            h = self.byte()
            size = h >> 4
            if size == 15:
                size = self.varint()
            et = h & 0x0F
            for _ in range(size):
                self.skip(et)
        elif ttype == _MAP:
            size = self.varint()
            if size:
                kv = self.byte()
                for _ in range(size):
                    self.skip(kv >> 4)
                    self.skip(kv & 0x0F)
        elif ttype == _STRUCT:
            self.struct(lambda fid, t: False)
        else:
            raise UnsupportedLayout(f"unknown Thrift type {ttype} in a page header")

    def struct(self, on_field: Callable[[int, int], bool]) -> None:
        """Walk a struct; ``on_field(id, type)`` reads the value and returns True, or skips."""
        last = 0
        while True:
            h = self.byte()
            ttype = h & 0x0F
            if ttype == _STOP:
                return
            delta = h >> 4
            fid = last + delta if delta else self.zigzag()
            last = fid
            if ttype in (_TRUE, _FALSE):
                on_field(fid, ttype)
                continue
            if not on_field(fid, ttype):
                self.skip(ttype)


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
    r = _Reader(buf)
    h = _Header()

    def page_header(fid: int, t: int) -> bool:
        if fid == 1 and t == _I32:
            h.type = r.zigzag()
        elif fid == 2 and t == _I32:
            h.uncompressed_size = r.zigzag()
        elif fid == 3 and t == _I32:
            h.compressed_size = r.zigzag()
        elif fid == 4 and t == _I32:
            h.crc = r.zigzag() & 0xFFFFFFFF
        elif fid == 5 and t == _STRUCT:
            r.struct(v1)
        elif fid == 8 and t == _STRUCT:
            r.struct(v2)
        else:
            return False
        return True

    def v1(fid: int, t: int) -> bool:
        if fid == 1 and t == _I32:
            h.num_values = r.zigzag()
        elif fid == 2 and t == _I32:
            h.encoding = r.zigzag()
        else:
            return False
        return True

    def v2(fid: int, t: int) -> bool:
        if t in (_TRUE, _FALSE):
            if fid == 7:
                h.is_compressed = t == _TRUE
            return True
        if t != _I32:
            return False
        value = r.zigzag()
        if fid == 1:
            h.num_values = value
        elif fid == 2:
            h.num_nulls = value
        elif fid == 4:
            h.encoding = value
        elif fid == 5:
            h.def_len = value
        elif fid == 6:
            h.rep_len = value
        return True

    r.struct(page_header)
    return h, r.pos


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
    firsts: list[int] = []
    starts: list[int] = []
    counts: list[int] = []
    stored: list[int] = []
    raw: list[int] = []
    bodies: list[int] = []
    body_lens: list[int] = []
    crcs: list[int] = []
    codecs: set[str] = set()
    seen = 0
    with open(os.fspath(path), "rb") as fh:
        for g in range(md.num_row_groups):
            cc = md.row_group(g).column(column_index)
            codecs.add(cc.compression)
            if cc.compression not in ("UNCOMPRESSED", "ZSTD"):
                raise UnsupportedLayout(f"row group {g}: the column is {cc.compression}-compressed")
            if cc.has_dictionary_page:
                raise UnsupportedLayout(f"row group {g}: the column has a dictionary page")
            pos = cc.data_page_offset
            end = cc.data_page_offset + cc.total_compressed_size
            while pos < end:
                fh.seek(pos)
                head = fh.read(min(256, end - pos))
                try:
                    h, hlen = _parse_header(head)
                except EOFError:
                    fh.seek(pos)
                    head = fh.read(min(1 << 16, end - pos))
                    try:
                        h, hlen = _parse_header(head)
                    except EOFError:
                        raise UnsupportedLayout(f"row group {g}: unreadable page header") from None
                body = pos + hlen
                vstored = vraw = 0
                if h.type == _DATA_PAGE:
                    if h.encoding != _PLAIN or cc.compression != "UNCOMPRESSED":
                        raise UnsupportedLayout(f"row group {g}: a v1 data page is compressed or not PLAIN")
                    fh.seek(body)
                    vstart = body
                    for present in (max_rep > 0, max_def > 0):  # v1: 4-byte-length-prefixed RLE levels
                        if present:
                            fh.seek(vstart)
                            vstart += 4 + int.from_bytes(fh.read(4), "little")
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
                    firsts.append(seen)
                    starts.append(vstart)
                    counts.append(n_values)
                    stored.append(vstored)
                    raw.append(vraw)
                    bodies.append(body)
                    body_lens.append(h.compressed_size)
                    crcs.append(-1 if h.crc is None else h.crc)
                    seen += n_values
                pos = body + h.compressed_size
    if len(codecs) > 1:
        raise UnsupportedLayout(f"the column's row groups use different codecs: {sorted(codecs)}")
    codec = codecs.pop() if codecs else "UNCOMPRESSED"
    as64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    if codec == "UNCOMPRESSED":
        return ValuePages(as64(firsts), as64(starts), as64(counts))
    return ValuePages(
        as64(firsts), as64(starts), as64(counts), codec, as64(stored), as64(raw), as64(bodies), as64(body_lens),
        as64(crcs),
    )
