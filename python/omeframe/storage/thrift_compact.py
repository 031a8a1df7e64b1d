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

An edit usually touches a few fields of a large struct, so :func:`decode_struct`
takes a ``keep`` spec naming the fields to decode (nested specs for structs and
lists of structs); every other field is walked over without building values
and kept as :class:`Raw`, its encoded bytes, which :func:`encode_struct` writes
back unchanged. Stitching a footer so decodes about a tenth of its values.
A check that only reads (:mod:`omeframe.storage.parquet_footer`) passes
``raw=False`` and the other fields are walked over and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omeframe.model.errors import CorruptFileError

__all__ = [
    "BINARY", "BOOL", "I8", "I16", "I32", "I64", "LIST", "STRING", "STRUCT", "Field", "Keep", "Map", "Raw", "Seq",
    "Shape", "by_id", "check_shape", "decode_struct", "encode_struct",
]

STOP, TRUE, FALSE, I8, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
#: The wire type a :class:`Shape` gives a boolean field (stored as ``TRUE`` or ``FALSE``).
BOOL = TRUE
#: What a :class:`Shape` gives as the inner spec of a ``BINARY`` field (or list element) that holds text:
#: Thrift's ``string``, which must be UTF-8.
STRING = "string"
_MAX_DEPTH = 64


@dataclass(slots=True)
class Field:
    """One field of a struct: its id, wire type and value (see the module docstring)."""

    id: int
    type: int
    value: Any


@dataclass(slots=True)
class Seq:
    """A list or set: the elements' wire type and the elements."""

    elem_type: int
    items: list[Any]
    kind: int = LIST  # LIST or SET


@dataclass(slots=True)
class Map:
    """A map: key and value wire types and the ``(key, value)`` pairs."""

    key_type: int
    value_type: int
    items: list[tuple[Any, Any]]


@dataclass(slots=True)
class Raw:
    """A value left encoded by a selective decode: its compact-protocol bytes, written back as they are."""

    data: bytes


#: Which fields :func:`decode_struct` decodes: field id -> the spec of its value (a nested
#: ``Keep`` for a struct, or for a list, set or map of structs; ``None``: decode all of it).
Keep = dict[int, "Keep | None"]


# Written as plain functions over (buffer, position) with the one-byte varint inlined: a footer
# holds tens of thousands of small values, and stitching a Parquet file decodes and encodes
# its footers on the write path (method calls per byte cost twice the time).


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]  # an IndexError past the end: decode_struct reports a truncated footer
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise CorruptFileError("a Thrift varint runs over 10 bytes: the Parquet footer is damaged")


def _list_header(buf: bytes | memoryview, pos: int) -> tuple[int, int, int]:
    """A list's or set's ``(size, element wire type, position after the header)``."""
    head = buf[pos]
    pos += 1
    size = head >> 4
    if size == 15:
        size, pos = _varint(buf, pos)
    return size, head & 0x0F, pos


def _binary_span(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Where the bytes of the binary value at ``buf[pos]`` start and end (after its length)."""
    n = buf[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = _varint(buf, pos)
    if pos + n > len(buf):
        raise CorruptFileError("a Thrift field runs past the end of its buffer: the Parquet footer is damaged")
    return pos, pos + n


def _read_value(buf: bytes | memoryview, pos: int, ttype: int, depth: int) -> tuple[Any, int]:
    if ttype == I32 or ttype == I64 or ttype == I16:
        b = buf[pos]
        if b < 0x80:
            return (b >> 1) ^ -(b & 1), pos + 1
        n, pos = _varint(buf, pos)
        return (n >> 1) ^ -(n & 1), pos
    if ttype == BINARY:
        pos, end = _binary_span(buf, pos)
        return bytes(buf[pos:end]), end
    if ttype == STRUCT:
        return _read_struct(buf, pos, depth + 1)
    if ttype == LIST or ttype == SET:
        size, elem, pos = _list_header(buf, pos)
        items: list[Any] = []
        append = items.append
        if elem == I32 or elem == I64 or elem == I16:
            for _ in range(size):
                b = buf[pos]
                if b < 0x80:
                    pos += 1
                    append((b >> 1) ^ -(b & 1))
                else:
                    n, pos = _varint(buf, pos)
                    append((n >> 1) ^ -(n & 1))
        else:
            if depth > _MAX_DEPTH:
                raise CorruptFileError("Thrift structures nest deeper than 64 levels: the Parquet footer is damaged")
            for _ in range(size):
                item, pos = _read_value(buf, pos, elem, depth + 1)
                append(item)
        return Seq(elem, items, ttype), pos
    if ttype == TRUE or ttype == FALSE:  # a bool inside a list, set or map: one byte
        return buf[pos] == TRUE, pos + 1
    if ttype == I8:
        b = buf[pos]
        return (b - 256 if b > 127 else b), pos + 1
    if ttype == DOUBLE:
        if pos + 8 > len(buf):
            raise CorruptFileError("a Thrift field runs past the end of its buffer: the Parquet footer is damaged")
        return bytes(buf[pos : pos + 8]), pos + 8
    if ttype == MAP:
        size, pos = _varint(buf, pos)
        if size == 0:
            return Map(0, 0, []), pos
        kinds = buf[pos]
        pos += 1
        kt, vt = kinds >> 4, kinds & 0x0F
        pairs: list[tuple[Any, Any]] = []
        for _ in range(size):
            key, pos = _read_value(buf, pos, kt, depth + 1)
            val, pos = _read_value(buf, pos, vt, depth + 1)
            pairs.append((key, val))
        return Map(kt, vt, pairs), pos
    raise CorruptFileError(f"unknown Thrift wire type {ttype}: the Parquet footer is damaged")


def _read_struct(
    buf: bytes | memoryview, pos: int, depth: int, keep: Keep | None = None, raw: bool = True
) -> tuple[list[Field], int]:
    """A struct's fields; with ``keep``, only the fields it names are decoded, the others kept as :class:`Raw`.

    ``raw=False`` drops the others instead (a read-only decode: nothing copied).
    """
    if depth > _MAX_DEPTH:
        raise CorruptFileError("Thrift structures nest deeper than 64 levels: the Parquet footer is damaged")
    fields: list[Field] = []
    append = fields.append
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == STOP:
            return fields, pos
        ttype, delta = head & 0x0F, head >> 4
        if delta:
            fid = last + delta
        else:
            n, pos = _varint(buf, pos)
            fid = (n >> 1) ^ -(n & 1)
        if ttype == TRUE or ttype == FALSE:
            append(Field(fid, ttype, ttype == TRUE))
        elif keep is None:
            value, pos = _read_value(buf, pos, ttype, depth)
            append(Field(fid, ttype, value))
        elif fid in keep:
            value, pos = _read_kept(buf, pos, ttype, keep[fid], depth, raw)
            append(Field(fid, ttype, value))
        else:
            end = _skip_value(buf, pos, ttype, depth)
            if raw:
                append(Field(fid, ttype, Raw(bytes(buf[pos:end]))))
            pos = end
        last = fid


def _skip_value(buf: bytes | memoryview, pos: int, ttype: int, depth: int) -> int:
    """The position after the value of wire type ``ttype`` at ``buf[pos]``, without building it."""
    if ttype == I32 or ttype == I64 or ttype == I16:
        while buf[pos] >= 0x80:
            pos += 1
        return pos + 1
    if ttype == BINARY:
        return _binary_span(buf, pos)[1]
    if depth > _MAX_DEPTH:
        raise CorruptFileError("Thrift structures nest deeper than 64 levels: the Parquet footer is damaged")
    if ttype == STRUCT:
        while True:
            head = buf[pos]
            pos += 1
            if head == STOP:
                return pos
            if not head >> 4:  # a long-form field id
                while buf[pos] >= 0x80:
                    pos += 1
                pos += 1
            t = head & 0x0F
            if t == I32 or t == I64 or t == I16:  # most fields: walked here, not by a call
                while buf[pos] >= 0x80:
                    pos += 1
                pos += 1
            elif t == BINARY:
                pos = _binary_span(buf, pos)[1]
            elif t != TRUE and t != FALSE:
                pos = _skip_value(buf, pos, t, depth + 1)
    if ttype == LIST or ttype == SET:
        size, elem, pos = _list_header(buf, pos)
        if elem == I32 or elem == I64 or elem == I16:
            for _ in range(size):
                while buf[pos] >= 0x80:
                    pos += 1
                pos += 1
            return pos
        for _ in range(size):
            pos = _skip_value(buf, pos, elem, depth + 1)
        return pos
    if ttype == TRUE or ttype == FALSE or ttype == I8:
        return pos + 1
    if ttype == DOUBLE:
        return pos + 8
    if ttype == MAP:
        size, pos = _varint(buf, pos)
        if size == 0:
            return pos
        kinds = buf[pos]
        pos += 1
        for _ in range(size):
            pos = _skip_value(buf, pos, kinds >> 4, depth + 1)
            pos = _skip_value(buf, pos, kinds & 0x0F, depth + 1)
        return pos
    raise CorruptFileError(f"unknown Thrift wire type {ttype}: the Parquet footer is damaged")


def _read_kept(
    buf: bytes | memoryview, pos: int, ttype: int, spec: Keep | None, depth: int, raw: bool = True
) -> tuple[Any, int]:
    """A value decoded as far as ``spec`` asks (``None``: all of it)."""
    if spec is None:
        return _read_value(buf, pos, ttype, depth)
    if ttype == STRUCT:
        return _read_struct(buf, pos, depth + 1, spec, raw)
    if ttype == LIST or ttype == SET:
        size, elem, pos = _list_header(buf, pos)
        items = []
        for _ in range(size):
            item, pos = _read_kept(buf, pos, elem, spec, depth + 1, raw)
            items.append(item)
        return Seq(elem, items, ttype), pos
    return _read_value(buf, pos, ttype, depth)


def by_id(value: Any) -> dict[int, Any]:
    """The values of a decoded struct's fields by field id (``{}`` for anything but a struct).

    Example
    -------
    >>> by_id(decode_struct(bytes([0x15, 0x04, 0x00]))[0])
    {1: 2}
    """
    return {f.id: f.value for f in value} if isinstance(value, list) else {}


def decode_struct(
    buf: bytes | memoryview, pos: int = 0, keep: Keep | None = None, *, raw: bool = True
) -> tuple[list[Field], int]:
    """Decode the struct starting at ``buf[pos]``; return its fields and the position after it.

    ``keep`` (default: everything) names the fields to decode, nested for
    structs and lists of structs (see :data:`Keep`); the others are kept as
    :class:`Raw` bytes, or left out with ``raw=False`` (a decode that only
    reads: cheaper, but the result cannot be encoded back).

    Example
    -------
    >>> fields, end = decode_struct(bytes([0x15, 0x04, 0x00]))  # field 1, i32 = 2
    >>> (fields[0].id, fields[0].value, end)
    (1, 2, 3)
    >>> decode_struct(bytes([0x15, 0x04, 0x18, 0x01, 0x61, 0x00]), keep={1: None})[0]
    [Field(id=1, type=5, value=2), Field(id=2, type=8, value=Raw(data=b'\\x01a'))]
    >>> decode_struct(bytes([0x15, 0x04, 0x18, 0x01, 0x61, 0x00]), keep={1: None}, raw=False)[0]
    [Field(id=1, type=5, value=2)]
    """
    try:
        return _read_struct(buf, pos, 0, keep, raw)
    except IndexError:
        raise CorruptFileError("a Thrift structure ends early: the Parquet footer is truncated or damaged") from None


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put_zigzag(out: bytearray, n: int) -> None:
    n = n << 1 if n >= 0 else (n << 1) ^ -1
    if n < 0x80:
        out.append(n)
    else:
        _put_varint(out, n)


def _write_value(out: bytearray, ttype: int, value: Any) -> None:
    if type(value) is Raw:
        out += value.data
    elif ttype == I32 or ttype == I64 or ttype == I16:
        _put_zigzag(out, int(value))
    elif ttype == BINARY:
        _put_varint(out, len(value))
        out += value
    elif ttype == STRUCT:
        _write_struct(out, value)
    elif ttype == LIST or ttype == SET:
        items, elem = value.items, value.elem_type
        size = len(items)
        if size < 15:
            out.append((size << 4) | elem)
        else:
            out.append(0xF0 | elem)
            _put_varint(out, size)
        if elem == STRUCT:
            for item in items:
                _write_struct(out, item)
        else:
            for item in items:
                _write_value(out, elem, item)
    elif ttype == TRUE or ttype == FALSE:
        out.append(TRUE if value else FALSE)
    elif ttype == I8:
        out.append(value & 0xFF)
    elif ttype == DOUBLE:
        out += value
    elif ttype == MAP:
        _put_varint(out, len(value.items))
        if value.items:
            out.append((value.key_type << 4) | value.value_type)
            for k, v in value.items:
                _write_value(out, value.key_type, k)
                _write_value(out, value.value_type, v)
    else:
        raise ValueError(f"unknown Thrift wire type {ttype}")


def _write_struct(out: bytearray, fields: list[Field]) -> None:
    last = 0
    append = out.append
    for f in fields:
        fid, ttype = f.id, f.type
        if ttype == TRUE or ttype == FALSE:
            ttype = TRUE if f.value else FALSE
        delta = fid - last
        if 0 < delta <= 15:
            append((delta << 4) | ttype)
        else:
            append(ttype)
            _put_zigzag(out, fid)
        if ttype != TRUE and ttype != FALSE:
            _write_value(out, ttype, f.value)
        last = fid
    append(STOP)


def encode_struct(fields: list[Field]) -> bytes:
    """Encode ``fields`` as a compact-protocol struct (the inverse of :func:`decode_struct`).

    Example
    -------
    >>> encode_struct([Field(1, I32, 2)])
    b'\\x15\\x04\\x00'
    """
    out = bytearray()
    _write_struct(out, fields)
    return bytes(out)


@dataclass(frozen=True)
class Shape:
    """The wire types a struct's fields must have, and the fields it must hold (see :func:`check_shape`).

    ``fields`` maps a field id to its name, its wire type and, for a struct,
    its :class:`Shape`, for text, :data:`STRING`; for a list, ``(element wire
    type, element Shape, STRING, the range of an integer element's values, or
    None)``. Fields it does not name may have any type. ``values`` bounds
    integer fields (enums, sizes) to the values they may take.
    """

    name: str
    fields: dict[int, tuple[str, int, Any]]
    required: frozenset[int] = frozenset()
    values: dict[int, range] = field(default_factory=dict)
    #: A Thrift union: exactly one field set.
    union: bool = False


def _type_name(ttype: int) -> str:
    names = ("stop", "bool", "bool", "i8", "i16", "i32", "i64", "double", "binary", "list", "set", "map", "struct")
    return names[ttype] if 0 <= ttype < len(names) else f"type {ttype}"


class _ShapeError(Exception):
    """A shape violation; the path to it is prepended while it unwinds (built only on failure)."""

    def __init__(self, path: list[str], problem: str) -> None:
        super().__init__(problem)
        self.path, self.problem = path, problem


def _int_value(buf: bytes | memoryview, pos: int, ttype: int) -> tuple[int, int]:
    if ttype == I8:
        return buf[pos] - 256 * (buf[pos] > 127), pos + 1
    n, pos = _varint(buf, pos)
    return (n >> 1) ^ -(n & 1), pos


def _check_text(buf: bytes | memoryview, pos: int, at: str) -> int:
    """The end of the ``string`` at ``buf[pos]``, which must be UTF-8."""
    start, end = _binary_span(buf, pos)
    try:
        bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise _ShapeError([at], " is not UTF-8 text") from None
    return end


def _check_struct(buf: bytes | memoryview, pos: int, shape: Shape, depth: int) -> int:
    if depth > _MAX_DEPTH:
        raise CorruptFileError("Thrift structures nest deeper than 64 levels: the Parquet footer is damaged")
    fields, values, required = shape.fields, shape.values, shape.required
    seen: set[int] | None = set() if required or shape.union else None
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == STOP:
            if seen is not None and not required <= seen:
                names = ", ".join(fields[f][0] for f in sorted(required - seen))
                raise _ShapeError([], f" ({shape.name}) lacks its required {names}")
            if shape.union and len(seen or ()) != 1:
                raise _ShapeError([], f" ({shape.name}, a union) has {len(seen or ())} members set, not one")
            return pos
        ttype, delta = head & 0x0F, head >> 4
        if delta:
            fid = last + delta
        else:
            n, pos = _varint(buf, pos)
            fid = (n >> 1) ^ -(n & 1)
        last = fid
        if seen is not None:
            seen.add(fid)
        spec = fields.get(fid)
        if spec is None:
            if ttype != TRUE and ttype != FALSE:
                pos = _skip_value(buf, pos, ttype, depth)
            continue
        want, inner = spec[1], spec[2]
        if ttype != want and not (want == BOOL and ttype == FALSE):
            raise _ShapeError([f".{spec[0]}"], f" is stored as {_type_name(ttype)}, expected {_type_name(want)}")
        allowed = values.get(fid) if values else None
        if allowed is not None and ttype in (I8, I16, I32, I64):
            value, pos = _int_value(buf, pos, ttype)
            if value not in allowed:
                raise _ShapeError([f".{spec[0]}"], f" is {value}, outside {allowed.start}..{allowed.stop - 1}")
        elif inner is STRING:
            pos = _check_text(buf, pos, f".{spec[0]}")
        elif ttype == STRUCT and inner is not None:
            try:
                pos = _check_struct(buf, pos, inner, depth + 1)
            except _ShapeError as exc:
                exc.path.insert(0, f".{spec[0]}")
                raise
        elif ttype == LIST and inner is not None:
            size, elem, pos = _list_header(buf, pos)
            elem_want, elem_shape = inner
            if size and elem != elem_want:
                raise _ShapeError(
                    [f".{spec[0]}"], f" is a list of {_type_name(elem)}, expected {_type_name(elem_want)}"
                )
            if isinstance(elem_shape, Shape):
                for k in range(size):
                    try:
                        pos = _check_struct(buf, pos, elem_shape, depth + 1)
                    except _ShapeError as exc:
                        exc.path.insert(0, f".{spec[0]}[{k}]")
                        raise
            elif elem_shape is STRING and elem == BINARY:
                for k in range(size):
                    pos = _check_text(buf, pos, f".{spec[0]}[{k}]")
            elif isinstance(elem_shape, range) and elem in (I8, I16, I32, I64):
                for k in range(size):
                    value, pos = _int_value(buf, pos, elem)
                    if value not in elem_shape:
                        raise _ShapeError(
                            [f".{spec[0]}[{k}]"], f" is {value}, outside {elem_shape.start}..{elem_shape.stop - 1}"
                        )
            else:
                for _ in range(size):
                    pos = _skip_value(buf, pos, elem, depth + 1)
        elif ttype != TRUE and ttype != FALSE:
            pos = _skip_value(buf, pos, ttype, depth)


def check_shape(buf: bytes | memoryview, shape: Shape, what: str) -> int:
    """Check that the struct at ``buf[0]`` has the wire types, values and required fields of ``shape``; return its end.

    A reader generated from the Thrift schema (DuckDB's, Polars') skips a
    field whose wire type is not the schema's and then refuses the struct for
    the required field it lacks; a lenient decoder (pyarrow's) may read on.
    ``what`` names the struct in the error.

    Raises
    ------
    CorruptFileError
        Naming the field (by its path) that has another type or value, or is missing.

    Example
    -------
    >>> point = Shape("Point", {1: ("x", I32, None)}, frozenset({1}))
    >>> check_shape(bytes([0x15, 0x04, 0x00]), point, "p")
    3
    >>> check_shape(bytes([0x16, 0x04, 0x00]), point, "p")
    Traceback (most recent call last):
    ...
    omeframe.model.errors.CorruptFileError: p.x is stored as i64, expected i32
    >>> check_shape(bytes([0x00]), point, "p")
    Traceback (most recent call last):
    ...
    omeframe.model.errors.CorruptFileError: p (Point) lacks its required x
    """
    try:
        return _check_struct(buf, 0, shape, 0)
    except _ShapeError as exc:
        raise CorruptFileError(what + "".join(exc.path) + exc.problem) from None
    except IndexError:
        raise CorruptFileError(f"{what}: a Thrift structure ends early (truncated)") from None
