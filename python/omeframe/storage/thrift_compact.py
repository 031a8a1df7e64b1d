"""Thrift's compact protocol as plain Python values: decode a struct, change fields, encode it back.

Parquet stores its footer (``FileMetaData``) and page headers in Thrift's
compact protocol. omeframe edits footers in one place (stitching Parquet parts
written in parallel, :mod:`omeframe.storage.parquet_parallel`), so this codec
is generic rather than schema-bound: a struct decodes to a list of
:class:`Field` in wire order, and :func:`encode_struct` writes exactly the
bytes it read when nothing changed (a test pins that on real footers).

Values by wire type: integers (``i8``, ``i16``, ``i32``, ``i64``) as ``int``,
``bool`` as ``bool``, ``double`` as its 8 raw bytes, ``binary`` as ``bytes``,
lists and sets as :class:`Seq`, maps as :class:`Map`, structs as ``list[Field]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omeframe.model.errors import CorruptFileError

__all__ = ["BINARY", "I16", "I32", "I64", "LIST", "STRUCT", "Field", "Map", "Seq", "decode_struct", "encode_struct"]

STOP, TRUE, FALSE, I8, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
_MAX_DEPTH = 64


@dataclass
class Field:
    """One field of a struct: its id, wire type and value (see the module docstring)."""

    id: int
    type: int
    value: Any


@dataclass
class Seq:
    """A list or set: the elements' wire type and the elements."""

    elem_type: int
    items: list[Any]
    kind: int = LIST  # LIST or SET


@dataclass
class Map:
    """A map: key and value wire types and the ``(key, value)`` pairs."""

    key_type: int
    value_type: int
    items: list[tuple[Any, Any]]


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def byte(self) -> int:
        b = self.buf[self.pos]  # an IndexError past the end: decode_struct reports a truncated footer
        self.pos += 1
        return int(b)

    def varint(self) -> int:
        buf, pos = self.buf, self.pos
        b = buf[pos]
        pos += 1
        if b < 0x80:  # most varints of a footer are one byte
            self.pos = pos
            return int(b)
        result, shift = b & 0x7F, 7
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return int(result)
            shift += 7
            if shift > 70:
                raise CorruptFileError("a Thrift varint runs over 10 bytes: the Parquet footer is damaged")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise CorruptFileError("a Thrift field runs past the end of its buffer: the Parquet footer is damaged")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def value(self, ttype: int, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise CorruptFileError("Thrift structures nest deeper than 64 levels: the Parquet footer is damaged")
        if ttype in (TRUE, FALSE):  # a bool inside a list, set or map: one byte
            return self.byte() == TRUE
        if ttype == I8:
            b = self.byte()
            return b - 256 if b > 127 else b
        if ttype in (I16, I32, I64):
            return self.zigzag()
        if ttype == DOUBLE:
            return self.raw(8)
        if ttype == BINARY:
            return self.raw(self.varint())
        if ttype in (LIST, SET):
            head = self.byte()
            size = head >> 4
            if size == 15:
                size = self.varint()
            elem = head & 0x0F
            return Seq(elem, [self.value(elem, depth + 1) for _ in range(size)], ttype)
        if ttype == MAP:
            size = self.varint()
            if size == 0:
                return Map(0, 0, [])
            kinds = self.byte()
            kt, vt = kinds >> 4, kinds & 0x0F
            return Map(kt, vt, [(self.value(kt, depth + 1), self.value(vt, depth + 1)) for _ in range(size)])
        if ttype == STRUCT:
            return self.struct(depth + 1)
        raise CorruptFileError(f"unknown Thrift wire type {ttype}: the Parquet footer is damaged")

    def struct(self, depth: int = 0) -> list[Field]:
        fields: list[Field] = []
        last = 0
        while True:
            head = self.byte()
            if head == STOP:
                return fields
            ttype, delta = head & 0x0F, head >> 4
            fid = last + delta if delta else self.zigzag()
            if ttype in (TRUE, FALSE):
                fields.append(Field(fid, ttype, ttype == TRUE))
            else:
                fields.append(Field(fid, ttype, self.value(ttype, depth)))
            last = fid


def decode_struct(buf: bytes | memoryview, pos: int = 0) -> tuple[list[Field], int]:
    """Decode the struct starting at ``buf[pos]``; return its fields and the position after it.

    Example
    -------
    >>> fields, end = decode_struct(bytes([0x15, 0x04, 0x00]))  # field 1, i32 = 2
    >>> (fields[0].id, fields[0].value, end)
    (1, 2, 3)
    """
    reader = _Reader(buf, pos)
    try:
        return reader.struct(), reader.pos
    except IndexError:
        raise CorruptFileError("a Thrift structure ends early: the Parquet footer is truncated or damaged") from None


def _varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(out: bytearray, n: int) -> None:
    _varint(out, (n << 1) ^ (n >> 63) if n < 0 else n << 1)


def _value(out: bytearray, ttype: int, value: Any) -> None:
    if ttype in (TRUE, FALSE):
        out.append(TRUE if value else FALSE)
    elif ttype == I8:
        out.append(value & 0xFF)
    elif ttype in (I16, I32, I64):
        _zigzag(out, int(value))
    elif ttype == DOUBLE:
        out += value
    elif ttype == BINARY:
        _varint(out, len(value))
        out += value
    elif ttype in (LIST, SET):
        size = len(value.items)
        if size < 15:
            out.append((size << 4) | value.elem_type)
        else:
            out.append(0xF0 | value.elem_type)
            _varint(out, size)
        for item in value.items:
            _value(out, value.elem_type, item)
    elif ttype == MAP:
        _varint(out, len(value.items))
        if value.items:
            out.append((value.key_type << 4) | value.value_type)
            for k, v in value.items:
                _value(out, value.key_type, k)
                _value(out, value.value_type, v)
    elif ttype == STRUCT:
        _struct(out, value)
    else:
        raise ValueError(f"unknown Thrift wire type {ttype}")


def _struct(out: bytearray, fields: list[Field]) -> None:
    last = 0
    for f in fields:
        ttype = (TRUE if f.value else FALSE) if f.type in (TRUE, FALSE) else f.type
        delta = f.id - last
        if 0 < delta <= 15:
            out.append((delta << 4) | ttype)
        else:
            out.append(ttype)
            _zigzag(out, f.id)
        if f.type not in (TRUE, FALSE):
            _value(out, f.type, f.value)
        last = f.id
    out.append(STOP)


def encode_struct(fields: list[Field]) -> bytes:
    """Encode ``fields`` as a compact-protocol struct (the inverse of :func:`decode_struct`).

    Example
    -------
    >>> encode_struct([Field(1, I32, 2)])
    b'\\x15\\x04\\x00'
    """
    out = bytearray()
    _struct(out, fields)
    return bytes(out)
