"""Check that a Parquet footer's schema agrees with the Arrow schema stored beside it (``ARROW:schema``).

A Parquet footer carries no checksum. Arrow's Parquet writer stores the table's
Arrow schema twice: as the Parquet schema (names, nesting, repetition, logical
types) and, serialised, in the footer's key-value metadata under
``ARROW:schema``, together with the table's own key-value metadata. One flipped
byte in a field name or in a string annotation of the Parquet schema is
otherwise read without complaint: pyarrow then returns a column ``size_{``
instead of ``size_z``, and DuckDB a ``binary`` column where the table has a
``string`` one. One flipped byte in a key or value of omeframe's metadata
(``omeframe.*``, ``ome.arrow.*``) changes what omeframe makes of the table.

:func:`check_stored_schema` compares the two copies: the same fields with the
same names, nesting and nullability, strings annotated as strings and binary
columns not (strings by nothing but text), timestamps' time zones that
name a zone, and the same ``omeframe.*`` / ``ome.arrow.*`` metadata. A
footer without ``ARROW:schema`` (written by another tool) is compared with
nothing, except that omeframe's own writers always store one.

A file omeframe's writers wrote carries ``omeframe.file`` in its footer
alone (:data:`~omeframe.model.arrow.METADATA_KEY_FILE`; a copy of the table
written elsewhere does not carry it). Such a file is held to their rules:
its Parquet schema elements are exactly those Arrow's writer (default
options) gives the stored schema, when the pyarrow running here wrote it,
and its lists' levels carry Arrow's names.

Example
-------
>>> import io, pyarrow as pa, pyarrow.parquet as pq
>>> from omeframe.storage.thrift_compact import by_id, decode_struct
>>> sink = io.BytesIO()
>>> pq.write_table(pa.table({"a": ["x"]}), sink)
>>> data = sink.getvalue()
>>> n = int.from_bytes(data[-8:-4], "little")
>>> fields, _ = decode_struct(data[-8 - n : -8])
>>> check_stored_schema(by_id(fields), "t.parquet")  # sound; written by pyarrow, not by omeframe
False
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from typing import Any

import pyarrow as pa

from omeframe.model.arrow import METADATA_KEY_FILE
from omeframe.model.errors import CorruptFileError
from omeframe.storage.thrift_compact import Field, Seq, by_id, decode_struct

__all__ = ["check_stored_schema", "key_values", "OWN_PREFIXES"]

#: Key-value metadata omeframe (and ome-arrow) write, compared between the two copies.
OWN_PREFIXES = (b"omeframe.", b"ome.arrow.")

_STORED = b"ARROW:schema"
#: The ``created_by`` of files written by the pyarrow running here.
_THIS_WRITER = f"parquet-cpp-arrow version {pa.__version__}".encode()
_DAMAGED = "(the Parquet footer is damaged)"

#: Thrift field ids of ``parquet.thrift``
_SCHEMA, _KEY_VALUE, _CREATED_BY = 2, 5, 6  # FileMetaData
_KEY, _VALUE = 1, 2  # KeyValue
_TYPE, _REPETITION, _NAME, _NUM_CHILDREN, _CONVERTED, _LOGICAL = 1, 3, 4, 5, 6, 10  # SchemaElement
_REQUIRED, _OPTIONAL = 0, 1
_UTF8, _ENUM, _JSON = 0, 4, 19  # ConvertedType values that mark text
_STRING, _LOGICAL_ENUM, _LOGICAL_JSON = 1, 4, 12  # LogicalType members that mark text


def key_values(items: Any) -> dict[bytes, bytes]:
    """The key-value metadata of a decoded ``FileMetaData`` field 5 (the first value of a repeated key)."""
    out: dict[bytes, bytes] = {}
    for kv in items.items if isinstance(items, Seq) else []:
        f = by_id(kv)
        key, value = f.get(_KEY), f.get(_VALUE, b"")
        if isinstance(key, bytes) and isinstance(value, bytes):
            out.setdefault(key, value)
    return out


_TEXT_CONVERTED = (_UTF8, _ENUM, _JSON)
_TEXT_LOGICAL = frozenset({_STRING, _LOGICAL_ENUM, _LOGICAL_JSON})


def _text(el: dict[int, Any]) -> bool:
    """Whether a schema element has any annotation as text (UTF-8 string, enum or JSON)."""
    logical = by_id(el.get(_LOGICAL))
    return el.get(_CONVERTED) in _TEXT_CONVERTED or bool(_TEXT_LOGICAL & set(logical))


def _only_text(el: dict[int, Any]) -> bool:
    """Whether a schema element is annotated as text, and by nothing else.

    Readers take the logical type over the converted one: a string column whose
    logical type became another (one flipped bit in its union's field header)
    reads as binary even though its converted type still says UTF-8.
    """
    converted, logical = el.get(_CONVERTED), set(by_id(el.get(_LOGICAL)))
    if converted is None and not logical:
        return False
    return (converted is None or converted in _TEXT_CONVERTED) and logical <= _TEXT_LOGICAL


def _storage(t: pa.DataType) -> pa.DataType:
    while True:
        if isinstance(t, pa.BaseExtensionType):
            t = t.storage_type
        elif pa.types.is_dictionary(t):
            t = t.value_type
        else:
            return t


def _holds_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _holds_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


#: Parquet physical types (``Type``) by name
_BOOLEAN, _INT32, _INT64, _INT96, _FLOAT, _DOUBLE, _BYTE_ARRAY, _FIXED = range(8)


def _physical(t: pa.DataType) -> frozenset[int] | None:
    """The Parquet physical types Arrow's writer may store a leaf of Arrow type ``t`` as (``None``: not checked)."""
    types = pa.types
    if types.is_boolean(t):
        return frozenset({_BOOLEAN})
    if types.is_uint32(t):  # INT64 under format version 1.0
        return frozenset({_INT32, _INT64})
    if types.is_integer(t):
        return frozenset({_INT64} if t.bit_width == 64 else {_INT32})
    if types.is_float16(t):
        return frozenset({_FIXED})
    if types.is_float32(t):
        return frozenset({_FLOAT})
    if types.is_float64(t):
        return frozenset({_DOUBLE})
    if types.is_date(t) or types.is_time32(t) or types.is_null(t):
        return frozenset({_INT32})
    if types.is_time64(t) or types.is_duration(t):
        return frozenset({_INT64})
    if types.is_timestamp(t):
        return frozenset({_INT64, _INT96})
    if _holds_text(t) or _holds_bytes(t):
        return frozenset({_BYTE_ARRAY})
    if types.is_fixed_size_binary(t) and not types.is_decimal(t):
        return frozenset({_FIXED})
    return None


def _is_list(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


def _has_map(t: pa.DataType) -> bool:
    """Whether ``t`` is or holds a map type."""
    t = _storage(t)
    if pa.types.is_map(t):
        return True
    return any(_has_map(t.field(i).type) for i in range(t.num_fields))


def _shown(name: Any) -> str:
    return repr(name.decode("utf-8", "replace") if isinstance(name, bytes) else name)


class _Walk:
    """Walks the flat list of Parquet schema elements beside the Arrow fields, depth first."""

    def __init__(self, elements: list[list[Field]], what: str, own: bool) -> None:
        self.elements = elements
        self.what = what
        self.own = own  # written by omeframe
        self.i = 1  # element 0 is the schema's root

    def _next(self, path: str) -> dict[int, Any]:
        if self.i >= len(self.elements):
            self._fail(path, "is missing from the Parquet schema")
        el = self.elements[self.i]
        self.i += 1
        return by_id(el)

    def _fail(self, path: str, problem: str) -> None:
        raise CorruptFileError(
            f"{self.what}: field {path!r} {problem}, unlike in the Arrow schema stored beside it "
            f"(ARROW:schema) {_DAMAGED}"
        )

    def _children(self, el: dict[int, Any], n: int, path: str) -> None:
        got = el.get(_NUM_CHILDREN, 0)
        if got != n:
            self._fail(path, f"has {got} child field(s) in the Parquet schema, not {n}")

    def field(self, f: pa.Field, path: str, named: bool = True, names: tuple[bytes, ...] = ()) -> None:
        """Check the elements of ``f`` (``named``: the Parquet name is ``f``'s; else, in omeframe's
        files, one of ``names``: a list's element, a map's key and value)."""
        el = self._next(path)
        f.name.encode("utf-8")  # every name decoded, list items' too: a damaged one may not be UTF-8
        if named:
            name = el.get(_NAME)
            if name != f.name.encode("utf-8"):
                self._fail(path, f"is named {_shown(name)} in the Parquet schema")
        elif self.own and el.get(_NAME) not in names:
            self._fail(path, f"is named {_shown(el.get(_NAME))} in the Parquet schema, which Arrow's writer "
                       f"names {' or '.join(repr(n.decode()) for n in names)}")
        want = _OPTIONAL if f.nullable else _REQUIRED
        if el.get(_REPETITION) != want:
            self._fail(path, f"has repetition {el.get(_REPETITION)!r} in the Parquet schema, not {want}")
        t = _storage(f.type)
        if pa.types.is_struct(t):
            self._children(el, t.num_fields, path)
            for k in range(t.num_fields):
                child = t.field(k)
                self.field(child, f"{path}.{child.name}")
        elif _is_list(t) or pa.types.is_map(t):
            if self.own and pa.types.is_fixed_size_list(t) and t.list_size == 0:
                self._fail(path, "is a fixed-size list of 0 items, which omeframe never writes")
            self._children(el, 1, path)
            repeated = self._next(path)
            pair = pa.types.is_map(t)
            group = b"key_value" if pair else b"list"
            if self.own and repeated.get(_NAME) != group:
                self._fail(path, f"has its repeated group named {_shown(repeated.get(_NAME))}, not {group.decode()!r}")
            self._children(repeated, 2 if pair else 1, path)
            if pair:
                self.field(t.key_field, f"{path}.key", named=False, names=(b"key",))
                self.field(t.item_field, f"{path}.value", named=False, names=(b"value",))
            else:
                item = t.value_field.name.encode("utf-8")
                self.field(t.value_field, f"{path}[]", named=False, names=(b"element", item))
        else:
            self._children(el, 0, path)
            kinds = _physical(t)
            if kinds is not None and el.get(_TYPE) not in kinds:
                self._fail(path, f"is stored as physical type {el.get(_TYPE)!r}, which cannot hold {t} values")
            if pa.types.is_timestamp(t) and t.tz is not None and not known_zone(t.tz):
                self._fail(path, f"has time zone {t.tz!r} in the stored Arrow schema, which names no time zone")
            if _holds_text(t):
                if not _only_text(el):
                    self._fail(path, "is not annotated as a string (and nothing else) in the Parquet schema")
            elif _holds_bytes(t) and _text(el):
                self._fail(path, "is annotated as a string in the Parquet schema, but holds binary values")


_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")


@functools.lru_cache(maxsize=256)
def known_zone(name: str) -> bool:
    """Whether ``name`` is a time zone Arrow can use: a fixed offset (``+01:00``) or a zone of the tz database.

    The Parquet schema keeps no copy of a timestamp column's time zone (only
    that its values are UTC), so a damaged name in the stored Arrow schema
    (``UTC`` turned ``UTD``) is caught by being no zone at all. Where this
    Python has no tz database (not even ``UTC`` loads), every name is taken.

    Example
    -------
    >>> known_zone("UTC"), known_zone("Europe/Paris"), known_zone("+05:30"), known_zone("UTD")
    (True, True, True, False)
    """
    import zoneinfo

    if _OFFSET.fullmatch(name):
        return True
    try:
        zoneinfo.ZoneInfo(name)
        return True
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        try:
            zoneinfo.ZoneInfo("UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            return True  # no tz database to tell
        return False


def check_stored_schema(footer: dict[int, Any], what: str) -> bool:
    """Raise :class:`CorruptFileError` when a footer's two schemas disagree (see the module docstring).

    ``footer`` maps the Thrift field ids of the decoded ``FileMetaData`` to
    their values (the schema elements and the key-value metadata decoded in
    full), whose wire types :mod:`omeframe.storage.parquet_shape` checked;
    ``what`` names the file. Returns whether the file is one omeframe's
    writers wrote (:data:`~omeframe.model.arrow.METADATA_KEY_FILE` in its
    footer alone), which these checks then hold to their rules.
    """
    kv = key_values(footer.get(_KEY_VALUE))
    stored = kv.get(_STORED)
    if stored is None:
        if METADATA_KEY_FILE in kv:
            raise CorruptFileError(
                f"{what}: the footer has no Arrow schema (ARROW:schema), which omeframe's writer always "
                f"stores {_DAMAGED}"
            )
        return False
    try:
        raw = base64.b64decode(stored, validate=True)
        schema = pa.ipc.read_schema(pa.py_buffer(raw))
        names = [f.name for f in schema]  # (field names decoded here: a damaged one is not UTF-8)
        # written by this very pyarrow: its own encoding of what it decodes gives the same bytes back,
        # unless some were damaged where pyarrow does not look (Polars' reader does). Except for maps:
        # one read from Parquet keeps its entries' name there, which pyarrow's decoder does not return
        same = (
            footer.get(_CREATED_BY) != _THIS_WRITER
            or any(_has_map(f.type) for f in schema)
            or schema.serialize().to_pybytes() == raw
        )
    except (binascii.Error, ValueError, pa.ArrowException, OSError) as exc:
        raise CorruptFileError(
            f"{what}: the stored Arrow schema (ARROW:schema) cannot be decoded: {exc} {_DAMAGED}"
        ) from exc
    if not same:
        raise CorruptFileError(
            f"{what}: the stored Arrow schema (ARROW:schema) is not as the writer encodes it {_DAMAGED}"
        )
    meta = schema.metadata or {}
    # omeframe's footer-only key has no copy: a table read from a file of omeframe's and written
    # again carries the other keys into the new file, never this one
    own = METADATA_KEY_FILE in kv and METADATA_KEY_FILE not in meta
    for key in sorted({k for k in (*kv, *meta) if k.startswith(OWN_PREFIXES) and k != METADATA_KEY_FILE}):
        if kv.get(key) != meta.get(key):
            raise CorruptFileError(
                f"{what}: the footer's metadata {key.decode('utf-8', 'replace')!r} differs from its copy in the "
                f"stored Arrow schema (ARROW:schema) {_DAMAGED}"
            )
    items = footer.get(_SCHEMA)
    elements = list(items.items) if isinstance(items, Seq) else []
    walk = _Walk(elements, what, own)
    if not elements:
        walk._fail("<root>", "is missing")
    walk._children(by_id(elements[0]), len(names), "<root>")
    try:
        for f in schema:
            walk.field(f, f.name)
    except UnicodeError as exc:
        raise CorruptFileError(f"{what}: a field name of the stored Arrow schema is not UTF-8 {_DAMAGED}") from exc
    if walk.i != len(elements):
        walk._fail("<root>", f"has {len(elements) - walk.i} more schema element(s) in the Parquet schema")
    if walk.own and footer.get(_CREATED_BY) == _THIS_WRITER:
        # omeframe writes with Arrow's default schema options: the elements are exactly those Arrow's
        # writer gives the stored schema (annotations, field ids, levels' names ... a flipped bit in
        # any of them makes readers derive another type)
        expected = _writer_elements(raw)
        if len(expected) != len(elements):
            walk._fail("<root>", f"has {len(elements)} schema elements, Arrow's writer gives it {len(expected)}")
        for i, (got, want) in enumerate(zip(elements, expected, strict=True)):
            if got != want:
                walk._fail(_shown(by_id(got).get(_NAME))[1:-1] if i else "<root>",
                           "differs from the element Arrow's writer gives it")
    return own


@functools.lru_cache(maxsize=64)
def _writer_elements(raw: bytes) -> list[Any]:
    """The Parquet schema elements Arrow's writer (default options) gives the serialised Arrow schema ``raw``.

    Shared with every caller: never modified.
    """
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_metadata(pa.ipc.read_schema(pa.py_buffer(raw)), sink)  # a footer without row groups
    data = sink.getvalue().to_pybytes()
    n = int.from_bytes(data[-8:-4], "little")
    fields, _ = decode_struct(data[-8 - n : -8], keep={_SCHEMA: None}, raw=False)
    items = by_id(fields).get(_SCHEMA)
    return list(items.items) if isinstance(items, Seq) else []
