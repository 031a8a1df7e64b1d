"""Vortex files as :class:`pyarrow.dataset.Dataset` objects with *plain* Arrow types.

DuckDB 2.0 has no Vortex reader here, but it pushes projection and filters
into a registered ``pyarrow.dataset.Dataset``: for a Dataset it calls
``type(ds).scanner(ds, columns=[...], filter=<pyarrow Expression>)`` and reads
``scanner.to_reader()``; it does *not* re-apply a pushed filter, so the scan must
filter exactly.  vortex's own ``VortexFile.to_dataset()`` reports view types
(``string_view`` ...), the hidden schema column and no metadata, and its
filter translation fails on files with struct columns.  :func:`vortex_plain_dataset`
wraps a file instead:

* the schema is the one omeframe stored (``string``, ``large_binary``, ``list``,
  field and schema metadata), without the hidden ``__omeframe_arrow_schema__``
  column (see :mod:`omeframe.formats.vortex.file`);
* projection is pushed into the Vortex scan (only the projected columns' segments
  are read), and so are filters: the pyarrow expression is read through its
  Substrait form and rebuilt as a Vortex expression with literals of exactly the
  column's type, struct fields included (``pc.field("ome_arrow", "id") == "x"``).
  Parts Vortex cannot evaluate with pyarrow's semantics (float comparisons --
  Vortex orders NaN like a number, pyarrow does not --, casts, temporal or
  unsigned literals, ``is_in`` under a negation ...) are applied by pyarrow to the
  batches read, after reading the columns they reference;
* every byte is read through :func:`omeframe.storage.files.open_input`, so tests
  can count them; the footer of a file is read once and cached (keyed by path,
  size, mtime and inode).

``cheap_first`` (default) reports the cheapest fixed-width column first.  DuckDB
projects column 0 for ``count(*)``: with the OME-Arrow record column first (the
usual layout) a count would read every pixel.

The objects are Python subclasses of ``pyarrow.dataset.Dataset`` / ``Scanner``
(the pattern vortex itself uses): ``isinstance`` checks pass, every public method
is implemented here, and the C++ base is never initialised -- do not hand them to
pyarrow functions that reach into the C++ object (``pyarrow.dataset.dataset([ds])``,
``Scanner.from_dataset``).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

from omeframe.formats.vortex.checksum import bad_values, ome_columns
from omeframe.formats.vortex.file import (
    SCHEMA_COLUMN_PREFIX,
    RowCrcCheck,
    _import_vortex,
    _stored_schema,
    body_failure,
    corrupt_or_raise,
    is_verified,
    mark_verified,
    read_vortex_table,
    row_crc_check,
    rows_cover,
    scan_batches,
    unreadable,
    verified_version,
)
from omeframe.formats.vortex.seal import Seal, body_intact, check_seal
from omeframe.model.arrow import field_type
from omeframe.model.errors import ChunkChecksumError, CorruptFileError
from omeframe.storage import files

__all__ = [
    "PayloadCrcs",
    "VortexPlainDataset",
    "VortexPlainScanner",
    "VortexInput",
    "open_vortex_input",
    "open_vortex_mapped",
    "vortex_plain_dataset",
]


# --------------------------------------------------------------------------- IO
class _ReadBytesAt:
    """vortex ``ReadBytesAt`` over an omeframe :class:`~omeframe.storage.files.InputFile`.

    ``known``: ``(offset, bytes)`` already read from the file (the end that
    :func:`~omeframe.formats.vortex.seal.check_seal` read), served from
    memory while vortex opens the file; :meth:`forget` drops them.
    """

    __slots__ = ("_f", "_known")

    def __init__(self, f: files.InputFile, known: tuple[int, bytes] | None = None) -> None:
        self._f = f
        self._known = known

    def size(self) -> int:
        return self._f.size

    def read_at(self, offset: int, length: int) -> bytes:
        known = self._known
        if known is not None and known[0] <= offset and offset + length <= known[0] + len(known[1]):
            at = offset - known[0]
            return known[1][at : at + length]
        return self._f.read_range(offset, length)

    def forget(self) -> None:
        self._known = None


_FOOTER_CACHE: OrderedDict[tuple[Any, ...], tuple[Any, Seal | None]] = OrderedDict()
_FOOTER_CACHE_SIZE = 64
_FOOTER_LOCK = threading.Lock()


@dataclass
class VortexInput:
    """An open Vortex file read through :func:`~omeframe.storage.files.open_input`.

    ``file`` is the ``vortex.VortexFile``; ``schema`` the original Arrow schema
    (plain types, metadata, no hidden column); ``stored`` tells whether omeframe
    stored it.  Close it (or use it as a context manager) when the scan is done.
    """

    path: str
    file: Any
    schema: pa.Schema
    stored: bool
    _input: files.InputFile
    #: What the open found at the end of the file (checked then; kept with the cached footer).
    seal: Seal | None = None

    def close(self) -> None:
        self._input.close()

    def body_intact(self) -> bool | None:
        """Whether the bytes before the footer match the body's CRC-32 in the seal (``None``: the file has none).

        Read through this input's own descriptor, the one vortex reads through.
        """
        if self.seal is None:
            return None
        return body_intact(self.path, self._input.fileno(), self.seal)

    def version(self) -> tuple[Any, ...]:
        """The identity of the file this input reads (:func:`omeframe.storage.files.file_key` of its descriptor)."""
        return files.file_key(self.path, os.fstat(self._input.fileno()))

    def verified(self, check: RowCrcCheck | None, read: Sequence[str], filtered: bool) -> bool:
        """Whether every byte of this file version passed its body CRC, in this scan or before in the process.

        A scan that the rows' ``check`` does not cover (:func:`rows_cover`: it
        reads ``read`` whole, under a filter when ``filtered``) checks the body
        now, once per file version and process; then no rows' check is needed.
        ``False``: the file has no body CRC, or the rows' checks cover the scan
        (and nothing checked this version before).

        Raises
        ------
        CorruptFileError
            When the body fails its CRC-32 (a scan the rows' checks do not cover cannot name damaged rows).
        """
        if self.seal is None or self.seal.body_crc is None:
            return False
        key = self.version()
        if is_verified(key):
            return True
        if rows_cover(check, read, filtered):
            return False
        intact = self.body_intact()
        if intact is False:
            raise body_failure(self.path, self.seal)
        mark_verified(key)
        return True

    def __enter__(self) -> VortexInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.file)


def _cached_footer(key: tuple[Any, ...]) -> tuple[Any, Seal | None]:
    """The cached footer of the file version ``key`` and its checked seal, or ``(None, None)``."""
    with _FOOTER_LOCK:
        cached = _FOOTER_CACHE.get(key)
        if cached is None:
            return None, None
        _FOOTER_CACHE.move_to_end(key)
        return cached


def open_vortex_input(path: str | os.PathLike[str]) -> VortexInput:
    """Open a Vortex file for scans whose reads go through ``open_input``.

    The footer is read once per file version and cached, so later opens read
    nothing until data is scanned.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CorruptFileError
        If ``path`` is not a readable Vortex file.
    """
    vortex = _import_vortex()
    p = os.fspath(path)
    key = files.file_key(p)
    fh = files.open_input(p)
    try:
        footer, seal = _cached_footer(key)
        # the footer's seal before vortex parses the footer; vortex's first read is then served from memory
        known = None
        if footer is None:
            seal = check_seal(fh.size, fh.read_range, repr(p), SCHEMA_COLUMN_PREFIX.encode("ascii"))
            known = (seal.first, seal.tail)
        reader = _ReadBytesAt(fh, known)
        try:
            vf = vortex.open_readable(reader, footer=footer)
        except BaseException as exc:
            raise unreadable(exc, repr(p)) from exc
        finally:
            reader.forget()
        if footer is None:
            with _FOOTER_LOCK:
                _FOOTER_CACHE[key] = (vf.footer, seal)
                while len(_FOOTER_CACHE) > _FOOTER_CACHE_SIZE:
                    _FOOTER_CACHE.popitem(last=False)
        schema, stored = _stored_schema(vf, p)
    except BaseException:
        fh.close()
        raise
    return VortexInput(p, vf, schema, stored, fh, seal)


def open_vortex_mapped(path: str | os.PathLike[str]) -> Any:
    """A memory-mapped ``vortex.VortexFile`` for row takes.

    Vortex fetches whole segments (a column's 8192-row block) through its IO
    path; through a memory map a take of a few rows touches only the pages it
    needs (the approach of :func:`omeframe.formats.vortex.file.read_vortex_table`).
    These reads bypass :func:`~omeframe.storage.files.open_input`.  The cached
    footer is reused, so the open itself reads nothing.
    """
    vortex = _import_vortex()
    p = os.fspath(path)
    key = files.file_key(p)
    footer, _ = _cached_footer(key)
    if footer is None:
        open_vortex_input(p).close()
        footer, _ = _cached_footer(key)
    try:
        return vortex.open(p, memory_map=True, footer=footer)
    except BaseException as exc:
        raise corrupt_or_raise(exc, f"{p!r} is not a readable Vortex file") from exc


def vortex_literal(arrow_type: pa.DataType, value: Any) -> Any:
    """A Vortex literal of exactly the Vortex type of ``arrow_type`` (Vortex
    refuses comparisons between, say, ``i32`` and ``i64``)."""
    vortex = _import_vortex()
    import vortex.expr as ve

    if pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        arrow_type = pa.string()
    return ve.literal(vortex.DType.from_arrow(arrow_type), value)


def pushable_type(t: pa.DataType) -> bool:
    """Types whose comparisons Vortex evaluates exactly as pyarrow and Polars do.

    Floats are excluded: Vortex orders NaN above every number (and NaN == NaN),
    pyarrow follows IEEE 754.  Temporal types are excluded for want of a tested
    literal conversion.
    """
    return (
        pa.types.is_integer(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_boolean(t)
    )


def vortex_column(path: Sequence[str]) -> Any:
    """Vortex expression reading a top-level column or a struct field path."""
    import vortex.expr as ve

    e = ve.column(path[0])
    for name in path[1:]:
        e = ve.get_item(name, e)
    return e


# --------------------------------------------------------- pyarrow expressions
_CMP = {"equal": "eq", "not_equal": "ne", "lt": "lt", "lte": "le", "gt": "gt", "gte": "ge"}
_FLIP = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}
_LITERAL_KINDS = {
    "boolean": "bool",
    "i8": "int",
    "i16": "int",
    "i32": "int",
    "i64": "int",
    "string": "str",
}


class _Unsupported(Exception):
    pass


@dataclass
class FilterPlan:
    """How a pyarrow filter expression is evaluated over a Vortex file.

    ``refs``: top-level columns it references (``None``: unknown, read all);
    ``exact``: an equivalent Vortex expression, or ``None``;
    ``prefilter``: a weaker Vortex expression (conjuncts that convert), or ``None``.
    """

    refs: list[str] | None
    exact: Any
    prefilter: Any


def _substrait(expr: pc.Expression, schema: pa.Schema) -> Any:
    from substrait.proto import ExtendedExpression

    msg = ExtendedExpression()
    msg.ParseFromString(bytes(expr.to_substrait(schema)))
    return msg


class _SubstraitToVortex:
    """Rebuild a Substrait expression (as pyarrow writes it) as a Vortex expression."""

    def __init__(self, msg: Any, schema: pa.Schema) -> None:
        self.schema = schema
        self.functions: dict[int, str] = {}
        for ext in msg.extensions:
            if ext.HasField("extension_function"):
                f = ext.extension_function
                self.functions[f.function_anchor] = f.name.split(":", 1)[0]
        self.root = msg.referred_expr[0].expression
        self.refs: set[int] = set()

    # -- references -------------------------------------------------------
    def _path(self, sel: Any) -> tuple[str, ...]:
        if sel.WhichOneof("root_type") != "root_reference":
            raise _Unsupported("outer reference")
        if sel.WhichOneof("reference_type") != "direct_reference":
            raise _Unsupported("masked reference")
        seg = sel.direct_reference
        if seg.WhichOneof("reference_type") != "struct_field":
            raise _Unsupported("list/map reference")
        idx = seg.struct_field.field
        self.refs.add(idx)
        path = [self.schema.names[idx]]
        t = self.schema.field(idx).type
        seg = seg.struct_field
        while seg.HasField("child"):
            child = seg.child
            if child.WhichOneof("reference_type") != "struct_field" or not pa.types.is_struct(t):
                raise _Unsupported("non-struct child reference")
            f = t.field(child.struct_field.field)
            path.append(f.name)
            t = f.type
            seg = child.struct_field
        return tuple(path)

    def collect_refs(self, node: Any) -> None:
        """Record every top-level column referenced anywhere below ``node``."""
        if hasattr(node, "ListFields"):
            for desc, value in node.ListFields():
                if desc.name == "selection" and desc.message_type is not None:
                    try:
                        self._path(value)
                    except (_Unsupported, IndexError):
                        pass
                repeated = getattr(desc, "is_repeated", None)
                if repeated is None or not isinstance(repeated, bool):
                    repeated = desc.label == desc.LABEL_REPEATED
                if repeated:
                    for v in value:
                        if hasattr(v, "ListFields"):
                            self.collect_refs(v)
                elif hasattr(value, "ListFields"):
                    self.collect_refs(value)

    # -- conversion -------------------------------------------------------
    def _column(self, e: Any) -> tuple[tuple[str, ...], pa.DataType]:
        if e.WhichOneof("rex_type") != "selection":
            raise _Unsupported("not a column")
        path = self._path(e.selection)
        t = field_type(self.schema, path)
        if t is None or not pushable_type(t):
            raise _Unsupported(f"column type {t}")
        return path, t

    @staticmethod
    def _literal(e: Any) -> tuple[str, Any]:
        if e.WhichOneof("rex_type") != "literal":
            raise _Unsupported("not a literal")
        kind = e.literal.WhichOneof("literal_type")
        if kind not in _LITERAL_KINDS or e.literal.nullable:
            raise _Unsupported(f"literal {kind}")
        return _LITERAL_KINDS[kind], getattr(e.literal, kind)

    @staticmethod
    def _kind(t: pa.DataType) -> str:
        if pa.types.is_boolean(t):
            return "bool"
        if pa.types.is_integer(t):
            return "int"
        return "str"

    def _compare(self, op: str, args: list[Any]) -> Any:
        import vortex.expr as ve

        a, b = args
        if a.WhichOneof("rex_type") == "literal":
            a, b, op = b, a, _FLIP[op]
        path, t = self._column(a)
        kind, value = self._literal(b)
        if kind != self._kind(t):
            raise _Unsupported("literal of another type")
        col, lit = vortex_column(path), vortex_literal(t, value)
        return {
            "eq": ve.eq,
            "ne": ve.not_eq,
            "lt": ve.lt,
            "le": ve.lt_eq,
            "gt": ve.gt,
            "ge": ve.gt_eq,
        }[op](col, lit)

    def convert(self, e: Any, positive: bool = True) -> Any:
        import vortex.expr as ve

        rex = e.WhichOneof("rex_type")
        if rex == "selection":  # a boolean column used as a predicate
            path, t = self._column(e)
            if not pa.types.is_boolean(t):
                raise _Unsupported("non-boolean column as predicate")
            return vortex_column(path)
        if rex == "singular_or_list":
            if not positive:  # pyarrow's is_in yields false (not null) for nulls
                raise _Unsupported("is_in under a negation")
            path, t = self._column(e.singular_or_list.value)
            col = vortex_column(path)
            parts = []
            for opt in e.singular_or_list.options:
                kind, value = self._literal(opt)
                if kind != self._kind(t):
                    raise _Unsupported("is_in literal of another type")
                parts.append(ve.eq(col, vortex_literal(t, value)))
            if not parts:
                raise _Unsupported("empty is_in")
            return ve.or_collect(parts)
        if rex != "scalar_function":
            raise _Unsupported(rex or "empty expression")
        fn = e.scalar_function
        name = self.functions.get(fn.function_reference, "")
        args = [a.value for a in fn.arguments]
        if name in _CMP and len(args) == 2:
            return self._compare(_CMP[name], args)
        if name in ("and", "or") and args:
            parts = [self.convert(a, positive) for a in args]
            return ve.and_collect(parts) if name == "and" else ve.or_collect(parts)
        if name == "not" and len(args) == 1:
            inner = args[0]
            # Only over leaf predicates: Kleene and non-Kleene and/or differ under NOT.
            if inner.WhichOneof("rex_type") == "scalar_function":
                iname = self.functions.get(inner.scalar_function.function_reference, "")
                if iname in _CMP or iname in ("is_null", "is_not_null"):
                    return ve.not_(self.convert(inner, not positive))
            raise _Unsupported("not over a compound expression")
        if name in ("is_null", "is_not_null") and len(args) == 1:
            if args[0].WhichOneof("rex_type") != "selection":
                raise _Unsupported("is_null of an expression")
            path = self._path(args[0].selection)
            t = field_type(self.schema, path)
            if t is None or pa.types.is_floating(t):  # nan_is_null options
                raise _Unsupported("is_null on a float column")
            col = vortex_column(path)
            return ve.is_null(col) if name == "is_null" else ve.is_not_null(col)
        raise _Unsupported(f"function {name!r}")

    def prefilter(self, e: Any) -> Any:
        """Convertible top-level conjuncts (a weaker filter), or ``None``."""
        import vortex.expr as ve

        if e.WhichOneof("rex_type") == "scalar_function":
            fn = e.scalar_function
            if self.functions.get(fn.function_reference) == "and":
                found = (self.prefilter(a.value) for a in fn.arguments)
                parts = [p for p in found if p is not None]
                return ve.and_collect(parts) if parts else None
        try:
            return self.convert(e)
        except _Unsupported:
            return None


def plan_filter(expr: pc.Expression | None, schema: pa.Schema) -> FilterPlan:
    """Split a pyarrow filter into what Vortex evaluates and what pyarrow must."""
    if expr is None:
        return FilterPlan([], None, None)
    try:
        msg = _substrait(expr, schema)
    except Exception:  # noqa: BLE001 - casts, unsupported functions, no substrait module
        return FilterPlan(None, None, None)
    conv = _SubstraitToVortex(msg, schema)
    conv.collect_refs(conv.root)
    refs = [schema.names[i] for i in sorted(conv.refs)]
    try:
        exact = conv.convert(conv.root)
    except (_Unsupported, IndexError, ValueError, TypeError, RuntimeError):
        exact = None
    prefilter = None
    if exact is None:
        try:
            prefilter = conv.prefilter(conv.root)
        except (IndexError, ValueError, TypeError, RuntimeError):
            prefilter = None
    return FilterPlan(refs, exact, prefilter)


# --------------------------------------------------------------- column order
def _weight(t: pa.DataType) -> int:
    if pa.types.is_boolean(t):
        return 1
    if pa.types.is_primitive(t):  # ints, floats, temporal: fixed width
        return max(t.bit_width, 8)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return 1000
    return 10_000  # binary, lists, structs: may hold pixels


def _cheap_first(schema: pa.Schema) -> pa.Schema:
    if len(schema) < 2:
        return schema
    weights = [_weight(f.type) for f in schema]
    best = int(np.argmin(weights))
    if best == 0:
        return schema
    fields = [schema.field(best)] + [f for i, f in enumerate(schema) if i != best]
    return pa.schema(fields, metadata=schema.metadata)


# ------------------------------------------------------------------ scanning
def _and(a: pc.Expression | None, b: pc.Expression | None) -> pc.Expression | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


@dataclass(frozen=True)
class PayloadCrcs:
    """A column of payloads and the column of their CRC-32s, checked on every scan that reads the payloads.

    ``key`` names the columns that identify a row in the error (a dataset's
    chunk part: ``image_id``, ``level`` and the chunk's grid position).
    """

    payload: str
    crc: str
    key: tuple[str, ...] = ()

    def check(self, batch: pa.RecordBatch, path: str) -> None:
        """Raise :class:`ChunkChecksumError` naming the rows of ``batch`` whose payload fails its CRC-32."""
        stored = batch.column(self.crc)
        if stored.null_count:
            raise CorruptFileError(f"{path!r}: a row has no {self.crc!r} (the file is damaged)")
        bad = bad_values(batch.column(self.payload), stored.to_numpy(zero_copy_only=False))
        if bad.size:
            first = {n: batch.column(n)[int(bad[0])].as_py() for n in self.key}
            raise ChunkChecksumError(
                f"{path!r}: the {self.payload!r} of {bad.size} row(s) fail their CRC-32 (the first: {first}); "
                "the file is damaged — restore it from a copy, or run `omeframe verify` to list every damaged chunk"
            )


class _ScanSpec:
    """One scan: which columns, which filter, how to read them."""

    def __init__(
        self,
        ds: VortexPlainDataset,
        columns: Sequence[str] | None,
        filter: pc.Expression | None,
        batch_size: int | None,
    ) -> None:
        schema = ds.schema
        if columns is None:
            columns = list(schema.names)
        elif isinstance(columns, dict):
            raise NotImplementedError(
                "VortexPlainDataset.scanner takes a list of column names, not expressions"
            )
        elif isinstance(columns, str):
            raise TypeError("columns must be a list of column names, not a str")
        columns = list(columns)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise KeyError(f"no column(s) {missing} in {ds.path!r}; columns: {schema.names}")
        self.ds = ds
        self.columns = columns
        self.filter = filter
        self.batch_size = batch_size
        self.out_schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
        plan = plan_filter(filter, ds._file_schema)
        self.plan = plan
        if filter is None or plan.exact is not None:
            self.read_columns = list(columns)
            self.vx_filter = plan.exact
            self.post_filter = None
        else:
            refs = list(ds._file_schema.names) if plan.refs is None else plan.refs
            self.read_columns = list(dict.fromkeys(columns + refs))
            self.vx_filter = plan.prefilter
            self.post_filter = filter
        self.drop_all = not self.read_columns
        if self.drop_all:  # an empty projection still needs row counts
            self.read_columns = [ds._cheapest]

    def batches(self, whole: bool = False) -> Iterator[pa.RecordBatch]:
        """The scan's batches; ``whole``: the caller takes every one (a table, not a stream it may stop)."""
        ds = self.ds
        names = list(self.read_columns)
        fields = [ds._file_schema.field(c) for c in names]
        with open_vortex_input(ds.path) as vin:
            # every OME-Arrow column read whole: each row's pixel bytes are checked against
            # its CRC in the hidden column (read beside them, dropped after the check)
            rows = np.arange(len(vin)) if self.vx_filter is None else None  # unknown under a filter
            read = [] if self.drop_all else list(names)  # rows alone: no value returned
            check = row_crc_check(vin.file, ds._file_schema, read, os.fspath(ds.path), rows)
            if vin.verified(check, read, self.vx_filter is not None or self.post_filter is not None):
                # every byte of this file version was checked (by verify=True, or now: the rows' checks do not
                # cover a scan of some feature columns or under a filter): whatever this scan reads or filters
                # on was checked (payload CRCs, below, still are: they tie each payload to its writer's CRC)
                check = None
            elif (
                check is not None and whole and self.vx_filter is None and self.post_filter is None
                and (check.ome or not ome_columns(ds._file_schema)) and vin.body_intact()
            ):
                # every row and the pixels (or every column) of a table whose body passed its CRC-32 before
                # vortex decodes it: the rows' checks add nothing (see read_vortex_table); a body that fails
                # leaves them to name the damaged rows
                check = None
            if check is not None:
                names.append(check.field.name)
                fields.append(check.field)
            # payloads with a CRC-32 beside them (a dataset's chunk part): each payload read is
            # checked, the row's key read beside it to name a damaged one
            crcs = ds.payload_crcs if ds.payload_crcs is not None and ds.payload_crcs.payload in names else None
            if crcs is not None:
                for extra in (crcs.crc, *crcs.key):
                    if extra not in names:
                        names.append(extra)
                        fields.append(ds._file_schema.field(extra))
            target = pa.schema(fields)
            batches = scan_batches(
                vin.file, names, target, repr(ds.path), expr=self.vx_filter, batch_size=self.batch_size
            )
            for batch in batches:
                if not batch.schema.equals(target):
                    batch = pa.RecordBatch.from_arrays(
                        [c.cast(f.type) for c, f in zip(batch.columns, target, strict=True)], schema=target
                    )
                if check is not None:
                    batch = check(batch)
                if crcs is not None:
                    crcs.check(batch, ds.path)
                if self.post_filter is not None:
                    batch = _filter_batch(batch, self.post_filter)
                    if batch is None:
                        continue
                if self.drop_all:
                    batch = batch.select([])
                else:
                    batch = batch.select(self.columns)
                yield batch.replace_schema_metadata(self.out_schema.metadata)


def _filter_batch(batch: pa.RecordBatch, expr: pc.Expression) -> pa.RecordBatch | None:
    table = pa.Table.from_batches([batch]).filter(expr)
    if table.num_rows == 0:
        return None
    return table.combine_chunks().to_batches()[0]


class VortexPlainScanner(pds.Scanner):
    """Scanner of a :class:`VortexPlainDataset` (projection and filter pushed down)."""

    def __init__(self, spec: _ScanSpec) -> None:  # the C++ base stays uninitialised
        self._spec = spec

    @property
    def dataset_schema(self) -> pa.Schema:
        return self._spec.ds.schema

    @property
    def projected_schema(self) -> pa.Schema:
        return self._spec.out_schema

    def to_reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self._spec.out_schema, self._spec.batches())

    def to_batches(self) -> Iterator[pa.RecordBatch]:
        return self._spec.batches()

    def to_table(self) -> pa.Table:
        batches = list(self._spec.batches(whole=True))
        if not batches:
            return self._spec.out_schema.empty_table()
        return pa.Table.from_batches(batches, schema=self._spec.out_schema)

    def scan_batches(self) -> Iterator[Any]:
        raise NotImplementedError("scan_batches is not supported; use to_batches")

    def head(self, num_rows: int) -> pa.Table:
        out, n = [], 0
        if num_rows > 0:
            for b in self._spec.batches():
                out.append(b.slice(0, num_rows - n))
                n += out[-1].num_rows
                if n >= num_rows:
                    break
        if not out:
            return self._spec.out_schema.empty_table()
        return pa.Table.from_batches(out, schema=self._spec.out_schema)

    def count_rows(self) -> int:
        spec = self._spec
        if spec.filter is None:
            with open_vortex_input(spec.ds.path) as vin:
                return len(vin)
        counting = _ScanSpec(spec.ds, [], spec.filter, spec.batch_size)
        return sum(b.num_rows for b in counting.batches())

    def take(self, indices: Any) -> pa.Table:
        return self.to_table().take(indices)


class VortexPlainDataset(pds.Dataset):
    """A Vortex file as a pyarrow Dataset with the stored, plain Arrow schema.

    Build one with :func:`vortex_plain_dataset`.  ``schema``, ``scanner``,
    ``to_table``, ``to_batches``, ``head``, ``count_rows``, ``take`` and
    ``filter`` work; fragments, joins and sorting are not supported.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cheap_first: bool = True,
        payload_crcs: PayloadCrcs | None = None,
        verify: bool = False,
        _filter: pc.Expression | None = None,
    ) -> None:  # the C++ base stays uninitialised (as in vortex.dataset)
        self.path = os.fspath(path)
        if verify:  # every byte now: scans of this version then need no rows' checks
            verified_version(self.path)
        with open_vortex_input(self.path) as vin:
            self._file_schema = vin.schema
            self._num_rows = len(vin)
        if payload_crcs is not None:
            missing = [c for c in (payload_crcs.payload, payload_crcs.crc, *payload_crcs.key)
                       if c not in self._file_schema.names]
            if missing:
                raise ValueError(f"payload_crcs names column(s) {missing} that {self.path!r} does not have")
        self.payload_crcs = payload_crcs
        self.cheap_first = cheap_first
        self._schema = _cheap_first(vin.schema) if cheap_first else vin.schema
        weights = [_weight(f.type) for f in self._file_schema]
        self._cheapest = self._file_schema.names[int(np.argmin(weights))] if weights else ""
        self._filter = _filter

    # -- the Dataset interface ---------------------------------------------
    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def partition_expression(self) -> pc.Expression:
        return pds.scalar(True)

    def scanner(
        self,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        batch_size: int | None = None,
        batch_readahead: int | None = None,
        fragment_readahead: int | None = None,
        fragment_scan_options: Any = None,
        use_threads: bool = True,
        cache_metadata: bool | None = None,
        memory_pool: Any = None,
        **kwargs: Any,
    ) -> VortexPlainScanner:
        """A scanner reading ``columns`` of the rows where ``filter`` is true."""
        return VortexPlainScanner(_ScanSpec(self, columns, _and(self._filter, filter), batch_size))

    def to_table(
        self,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        **kwargs: Any,
    ) -> pa.Table:
        return self.scanner(columns, filter, **kwargs).to_table()

    def to_batches(
        self,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        **kwargs: Any,
    ) -> Iterator[pa.RecordBatch]:
        return self.scanner(columns, filter, **kwargs).to_batches()

    def head(
        self,
        num_rows: int,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        **kwargs: Any,
    ) -> pa.Table:
        return self.scanner(columns, filter, **kwargs).head(num_rows)

    def count_rows(self, filter: pc.Expression | None = None, **kwargs: Any) -> int:
        return self.scanner([], filter, **kwargs).count_rows()

    def take(
        self,
        indices: Any,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        **kwargs: Any,
    ) -> pa.Table:
        if filter is None and self._filter is None and self.payload_crcs is None:
            # Row takes straight from the file: vortex reads only the touched blocks.
            idx = np.asarray(indices.to_numpy() if hasattr(indices, "to_numpy") else indices)
            cols = list(self._schema.names) if columns is None else list(columns)
            return read_vortex_table(self.path, columns=cols, rows=idx.astype(np.int64))
        return self.scanner(columns, filter, **kwargs).take(indices)

    def filter(self, expression: pc.Expression) -> VortexPlainDataset:
        """A new dataset whose scans also apply ``expression``."""
        ds = VortexPlainDataset.__new__(VortexPlainDataset)
        ds.__dict__.update(self.__dict__)
        ds._filter = _and(self._filter, expression)
        return ds

    def get_fragments(self, filter: pc.Expression | None = None) -> Iterable[Any]:
        raise NotImplementedError("VortexPlainDataset has no fragments")

    def _get_fragments(self, filter: Any = None) -> Any:  # pragma: no cover - guard
        raise NotImplementedError("VortexPlainDataset has no fragments")

    def replace_schema(self, schema: pa.Schema) -> None:
        raise NotImplementedError("replace_schema is not supported")

    def join(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("join is not supported; read a table first")

    def join_asof(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("join_asof is not supported; read a table first")

    def sort_by(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("sort_by is not supported; read a table first")

    def __reduce__(self) -> Any:
        return (_rebuild, (self.path, self.cheap_first, self.payload_crcs, self._filter))

    def __repr__(self) -> str:
        return (
            f"<omeframe VortexPlainDataset {self.path!r} rows={self._num_rows} "
            f"columns={self._schema.names}>"
        )


def _rebuild(
    path: str, cheap_first: bool, payload_crcs: PayloadCrcs | None, flt: pc.Expression | None
) -> VortexPlainDataset:
    return VortexPlainDataset(path, cheap_first=cheap_first, payload_crcs=payload_crcs, _filter=flt)


def vortex_plain_dataset(
    path: str | os.PathLike[str],
    *,
    cheap_first: bool = True,
    payload_crcs: PayloadCrcs | None = None,
    verify: bool = False,
) -> VortexPlainDataset:
    """Wrap a Vortex file as a ``pyarrow.dataset.Dataset`` that DuckDB can register.

    >>> con.register("cells", vortex_plain_dataset("cells.vortex"))  # doctest: +SKIP
    >>> con.sql("SELECT cell_id FROM cells WHERE plate = 'P1'")       # doctest: +SKIP

    Parameters
    ----------
    path
        A Vortex file (omeframe's, with its stored schema, or any other).
    cheap_first
        Report the cheapest fixed-width column first (DuckDB reads column 0 for
        ``count(*)``); ``False`` keeps the file's column order.
    payload_crcs
        A payload column to check against a column of CRC-32s whenever a scan
        reads it (Vortex stores no checksums of its own).
    verify
        Check every byte of the file now, against the CRC-32 of its body in
        the footer's seal (one pass at memory speed once the file is in the
        page cache; it reads the whole file from disk otherwise), as
        ``omeframe.duckdb.register`` does. ``False`` (the default): the
        first scan that needs it does (below).

    Notes
    -----
    What a scan checks: each row it returns, against the pixel CRCs and
    feature digests in the hidden column, when it reads the records whole or
    every column beside them; a scan under a filter, or of only some feature
    columns, which the rows' checks cannot vouch for (a damaged value could
    leave a row out; a row's digest covers all its feature columns together),
    checks the file's body instead, once per file version (same inode, size
    and modification time) and process. Scans of a version checked whole
    need no rows' checks. A file without a body CRC (written by another
    tool, or by omeframe before 2026-12-07) has only the rows' checks.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``payload_crcs`` names columns the file does not have.
    CorruptFileError
        If it is not a readable Vortex file, or with ``verify=True`` when its
        body fails its CRC-32 (scans that check the body raise it too).
    """
    return VortexPlainDataset(path, cheap_first=cheap_first, payload_crcs=payload_crcs, verify=verify)
