"""Polars scan of omeframe tables: ``omeframe.polars.scan(path)``.

:func:`scan` hands every Parquet read it cannot improve on to Polars' own
``pl.scan_parquet`` (after checking the page CRCs of what it will decode)
and reads the rest (and Vortex, where it is at least as
fast as ``pl.scan_pyarrow_dataset``) itself, inside a Polars IO plugin
(``polars.io.plugins.register_io_source``); the routing rule is in
:func:`scan`'s notes, and :func:`scan_routes` tells which reader served a
query.  omeframe's reader, reading with pyarrow / vortex through
:func:`omeframe.storage.files.open_input`:

* reads only the projected columns (Parquet column chunks, Vortex segments),
  and of a record struct only the leaves a header column or a struct-field
  predicate needs;
* applies the predicate exactly, with Polars itself (``DataFrame.filter``), and
  uses it twice to read less: row groups whose statistics rule it out are
  skipped (comparisons of integer/string columns and struct fields with
  literals, ``is_between``, ``is_null``, ``&``, ``|``), and the columns the
  predicate needs are read first, the others only for row groups with matching
  rows (late materialisation).  On Vortex files the convertible part of the
  predicate is also pushed into the Vortex scan;
* honours ``n_rows`` as Polars means it: the first ``n_rows`` *source* rows,
  before the predicate (``lf.head(5).filter(...)``), and stops reading there.

Polars projects **top-level** columns only: ``pl.col("ome_arrow").struct.field("id")``
makes any reader load the whole ``ome_arrow`` column, pixels included.  Pass
``header_columns=True`` to add flat virtual columns (``ome_id``, ``ome_name``,
``ome_size_t/c/z/y/x``, ``ome_dtype`` ... see :data:`HEADER_FIELDS`) that are read
by nested projection of just those leaves: an image-aware query such as
``scan(p, header_columns=True).filter(pl.col("ome_size_x") > 512).select("ome_id")``
reads no pixel bytes.

Files written by omeframe are plain Parquet: ``pl.read_parquet`` /
``pl.scan_parquet`` read them without omeframe.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from omeframe.formats.dataset.manifest import read_manifest
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.formats.dataset.schema import CHUNKS_SCHEMA
from omeframe.formats.record.files import TABLE_FORMATS, detect_format, field_type, find_record_column
from omeframe.formats.record.remote import ranged_filesystem
from omeframe.formats.vortex.file import row_crc_check, scan_batches
from omeframe.model.errors import CorruptFileError, OptionalDependencyError, reraise_access_error
from omeframe.storage import files
from omeframe.storage.parquet_crc import CheckedParquetFile
from omeframe.storage.parquet_footer import check_metadata, read_footer
from omeframe.storage.url import check_storage_options, parse_location

if TYPE_CHECKING:
    import polars as pl

    # for annotations inside functions whose local ``pl`` is the lazily imported module
    from polars import DataFrame as _DataFrame
    from polars import Expr as _Expr

__all__ = ["HEADER_FIELDS", "READERS", "ScanRoute", "polars_schema", "scan", "scan_routes"]

#: Virtual header columns (suffix after the prefix, default ``"ome_"``) and the
#: path of the OME-Arrow record field each one reads.
HEADER_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "name": ("name",),
    "image_type": ("image_type",),
    "acquisition_datetime": ("acquisition_datetime",),
    "dim_order": ("pixels_meta", "dimension_order"),
    "dtype": ("pixels_meta", "type"),
    "size_t": ("pixels_meta", "size_t"),
    "size_c": ("pixels_meta", "size_c"),
    "size_z": ("pixels_meta", "size_z"),
    "size_y": ("pixels_meta", "size_y"),
    "size_x": ("pixels_meta", "size_x"),
    "physical_size_x": ("pixels_meta", "physical_size_x"),
    "physical_size_y": ("pixels_meta", "physical_size_y"),
    "physical_size_z": ("pixels_meta", "physical_size_z"),
}

#: In a dataset's images table the record's top-level fields are columns.
_IMAGES_TABLE_FIELDS = {"id": ("image_id",)}

_MAX_BLOCK_BYTES = 256 << 20  # compressed bytes of the selected columns per read


def _import_polars() -> Any:
    try:
        import polars as pl
    except ImportError as exc:  # pragma: no cover - polars is installed in CI
        raise OptionalDependencyError(
            "omeframe.polars needs the 'polars' package; install it with `pip install polars`"
        ) from exc
    return pl


def polars_schema(schema: pa.Schema) -> pl.Schema:
    """The Polars schema of data read from an Arrow schema (large_binary -> Binary ...)."""
    pl = _import_polars()
    # An empty stream, not schema.empty_table(): building Arrow arrays makes
    # pyarrow import pandas (0.5 s on a cold start).
    empty = pa.RecordBatchReader.from_batches(schema, iter(()))
    return pl.DataFrame(empty).schema


# =========================================================== predicate analysis
@dataclass(frozen=True)
class _Ref:
    path: tuple[str, ...]  # top-level column (maybe virtual), then struct fields


@dataclass(frozen=True)
class _Lit:
    value: Any
    kind: str  # "int", "str", "bool", "float", "other"


@dataclass(frozen=True)
class _Cmp:
    ref: _Ref
    op: str  # eq ne lt le gt ge
    value: Any
    kind: str


@dataclass(frozen=True)
class _Between:
    ref: _Ref
    lo: Any
    hi: Any
    kind: str


@dataclass(frozen=True)
class _Null:
    ref: _Ref
    is_null: bool


@dataclass(frozen=True)
class _Bool:
    op: str  # "and" / "or"
    parts: tuple[Any, ...]


_POLARS_OPS = {"Eq": "eq", "NotEq": "ne", "Lt": "lt", "LtEq": "le", "Gt": "gt", "GtEq": "ge"}
_FLIP = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}
_INT_SCALARS = {f"{s}{b}" for s in ("Int", "UInt") for b in (8, 16, 32, 64)}


def _expr_json(expr: pl.Expr) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return json.loads(expr.meta.serialize(format="json"))


def _as_ref(node: Any) -> _Ref | None:
    if not isinstance(node, dict):
        return None
    if "Column" in node and isinstance(node["Column"], str):
        return _Ref((node["Column"],))
    fn = node.get("Function")
    if isinstance(fn, dict):
        f = fn.get("function")
        inputs = fn.get("input") or []
        if (
            isinstance(f, dict)
            and isinstance(f.get("StructExpr"), dict)
            and isinstance(f["StructExpr"].get("FieldByName"), str)
            and len(inputs) == 1
        ):
            inner = _as_ref(inputs[0])
            if inner is not None:
                return _Ref(inner.path + (f["StructExpr"]["FieldByName"],))
    return None


def _as_lit(node: Any) -> _Lit | None:
    if not isinstance(node, dict) or "Literal" not in node:
        return None
    lit = node["Literal"]
    if not isinstance(lit, dict):
        return None
    for wrapper in ("Scalar", "Dyn"):
        inner = lit.get(wrapper)
        if isinstance(inner, dict) and len(inner) == 1:
            (tag, value), = inner.items()
            if tag in _INT_SCALARS or tag == "Int":
                if isinstance(value, int) and not isinstance(value, bool):
                    return _Lit(value, "int")
            elif tag in ("String", "Str") and isinstance(value, str):
                return _Lit(value, "str")
            elif tag == "Boolean" and isinstance(value, bool):
                return _Lit(value, "bool")
            elif tag in ("Float32", "Float64", "Float"):
                return _Lit(value, "float")
            return _Lit(value, "other")
    return None


def _parse_pred(node: Any) -> Any:
    """Polars expression JSON -> a small predicate tree, or ``None`` (unknown)."""
    if not isinstance(node, dict):
        return None
    if "BinaryExpr" in node:
        b = node["BinaryExpr"]
        op = b.get("op")
        if op in ("And", "LogicalAnd", "Or", "LogicalOr"):
            left, right = _parse_pred(b.get("left")), _parse_pred(b.get("right"))
            kind = "and" if "And" in op else "or"
            if kind == "and":
                parts = tuple(p for p in (left, right) if p is not None)
                return _Bool("and", parts) if parts else None
            if left is None or right is None:
                return None
            return _Bool("or", (left, right))
        if op in _POLARS_OPS:
            left, right = b.get("left"), b.get("right")
            op = _POLARS_OPS[op]
            ref, lit = _as_ref(left), _as_lit(right)
            if ref is None:
                ref, lit, op = _as_ref(right), _as_lit(left), _FLIP[op]
            if ref is None or lit is None or lit.kind not in ("int", "str"):
                return None
            return _Cmp(ref, op, lit.value, lit.kind)
        return None
    fn = node.get("Function")
    if isinstance(fn, dict):
        f, inputs = fn.get("function"), fn.get("input") or []
        if isinstance(f, dict) and isinstance(f.get("Boolean"), (dict, str)):
            boolean = f["Boolean"]
            if boolean in ("IsNull", "IsNotNull") and len(inputs) == 1:
                ref = _as_ref(inputs[0])
                return _Null(ref, boolean == "IsNull") if ref is not None else None
            if isinstance(boolean, dict) and "IsBetween" in boolean and len(inputs) == 3:
                ref, lo, hi = _as_ref(inputs[0]), _as_lit(inputs[1]), _as_lit(inputs[2])
                if ref is None or lo is None or hi is None:
                    return None
                if lo.kind != hi.kind or lo.kind not in ("int", "str"):
                    return None
                return _Between(ref, lo.value, hi.value, lo.kind)
    return None


def _column_uses(node: Any, out: dict[str, set[tuple[str, ...]] | None]) -> None:
    """For each column in the expression: the struct paths it is read through,
    or ``None`` when the column is used whole."""
    if isinstance(node, dict):
        ref = _as_ref(node)
        if ref is not None:
            top = ref.path[0]
            if len(ref.path) == 1:
                out[top] = None
            elif top not in out or out[top] is not None:
                out.setdefault(top, set()).add(ref.path[1:])  # type: ignore[union-attr]
            return
        for value in node.values():
            _column_uses(value, out)
    elif isinstance(node, list):
        for value in node:
            _column_uses(value, out)


@dataclass
class _Predicate:
    expr: pl.Expr
    tree: Any  # parsed tree for pruning, or None
    uses: dict[str, set[tuple[str, ...]] | None]  # column -> nested paths (None: whole)


def _analyse(expr: pl.Expr) -> _Predicate:
    try:
        doc = _expr_json(expr)
    except Exception:  # noqa: BLE001 - an opaque expression: no pruning
        return _Predicate(expr, None, {c: None for c in expr.meta.root_names()})
    uses: dict[str, set[tuple[str, ...]] | None] = {}
    _column_uses(doc, uses)
    for c in expr.meta.root_names():
        uses.setdefault(c, None)
    try:
        tree = _parse_pred(doc)
    except Exception:  # noqa: BLE001
        tree = None
    return _Predicate(expr, tree, uses)


# ============================================================ table description
@dataclass
class _Table:
    """What a scan reads: files of one format with one schema, plus virtual columns."""

    paths: list[str]
    format: str  # "parquet" / "vortex"
    schema: pa.Schema  # file schema (plain types)
    virtual: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> leaf path
    label: str = ""

    def out_schema(self) -> pa.Schema:
        fields = list(self.schema)
        for name, path in self.virtual.items():
            t = field_type(self.schema, path)
            assert t is not None
            fields.append(pa.field(name, t))
        return pa.schema(fields, metadata=self.schema.metadata)

    def resolve(self, path: tuple[str, ...]) -> tuple[str, ...]:
        """A reference path with a virtual column replaced by its leaf path."""
        if path[0] in self.virtual:
            return self.virtual[path[0]] + path[1:]
        return path


# ------------------------------------------------------------ metadata caches
_PQ_META: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_PQ_LOCK = threading.Lock()


def _parquet_file(path: str, fh: files.InputFile) -> Any:
    """``pq.ParquetFile`` over ``fh``; the footer is parsed once per file version."""
    import pyarrow.parquet as pq

    key = files.file_key(path)
    with _PQ_LOCK:
        md = _PQ_META.get(key)
        if md is not None:
            _PQ_META.move_to_end(key)
    cached = md is not None
    footer = None
    try:
        if md is None:
            md, footer = read_footer(fh)
        pf = pq.ParquetFile(fh, metadata=md, page_checksum_verification=True)
        if not cached:
            check_metadata(pf.metadata, repr(path), footer)  # the scan asks for column-chunk sizes and statistics
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        reraise_access_error(exc)
        raise CorruptFileError(
            f"{path!r} is not a readable Parquet file (truncated or corrupt?): {exc}"
        ) from exc
    if not cached:
        with _PQ_LOCK:
            _PQ_META[key] = pf.metadata
            while len(_PQ_META) > 64:
                _PQ_META.popitem(last=False)
    return pf


#: (file version, format) -> its Arrow schema, and ((file version, format),
#: header columns) -> the scan's Polars schema: what :func:`scan` would
#: otherwise rebuild from the footer on every call.
_SCHEMAS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def _schema_cache_get(key: tuple[Any, ...] | None) -> Any:
    if key is None:
        return None
    with _PQ_LOCK:
        hit = _SCHEMAS.get(key)
        if hit is not None:
            _SCHEMAS.move_to_end(key)
        return hit


def _schema_cache_put(key: tuple[Any, ...], value: Any) -> None:
    with _PQ_LOCK:
        _SCHEMAS[key] = value
        while len(_SCHEMAS) > 128:
            _SCHEMAS.popitem(last=False)


#: Column chunks of file versions (:func:`files.file_key`) whose pages passed their CRCs
#: before Polars' own reader decoded them in this process: ``key -> {(row group, leaf)}``.
_VERIFIED: OrderedDict[tuple[Any, ...], set[tuple[Any, ...]]] = OrderedDict()
_VERIFIED_LOCK = threading.Lock()
#: File versions remembered in :data:`_VERIFIED`.
VERIFIED_FILES = 64


def _check_native_pages(tbl: _Table, columns: Sequence[str], n_rows: int | None, filtered: bool) -> None:
    """Check the page CRCs of the column chunks Polars' own Parquet reader is about to decode.

    Polars checks no page CRCs, so a damaged page would come back as wrong
    values (pixels included): the chunks of ``columns`` (top-level or header
    columns, which read their record column) are checked first, at memory
    speed (:class:`~omeframe.storage.parquet_crc.CheckedParquetFile`), in
    every row group or, for ``n_rows`` without a filter, in the row groups
    holding the first ``n_rows`` rows. A chunk is checked once per version of
    its file in a process (keyed by :func:`omeframe.storage.files.file_key`:
    path, size, modification time, inode), as DuckDB views are checked once
    when registered: later queries of the same file version cost a ``stat``.

    Raises
    ------
    ChunkChecksumError
        Naming the file, row group, column and page that fails its CRC-32.
    """
    tops = sorted({tbl.virtual[c][0] if c in tbl.virtual else c for c in columns})
    remaining = None if filtered else n_rows
    for path in tbl.paths:
        if remaining is not None and remaining <= 0:
            return
        key = files.file_key(path)
        query = ("all row groups", *tops)  # every row group of these columns, checked before
        with _VERIFIED_LOCK:
            done = _VERIFIED.get(key)
            if done is not None:
                _VERIFIED.move_to_end(key)
                if remaining is None and query in done:
                    continue
        with CheckedParquetFile(path) as pf:  # checks the footer as it opens
            md = pf.metadata
            groups: Sequence[int] = range(md.num_row_groups)
            if remaining is not None:
                ends = np.cumsum([md.row_group(g).num_rows for g in groups], dtype=np.int64)
                k = min(int(np.searchsorted(ends, remaining)) + 1, md.num_row_groups)
                groups = range(k)
                remaining -= int(ends[k - 1]) if k else 0
            leaves = pf._leaves(tops) if tops else []
            todo: list[tuple[Any, ...]] = [
                (g, leaf) for g in groups for leaf in leaves if done is None or (g, leaf) not in done
            ]
            for g in sorted({g for g, _ in todo}):
                pf.check([g], sorted(leaf for h, leaf in todo if h == g))
        if remaining is None:  # (all row groups were asked for)
            todo.append(query)
        with _VERIFIED_LOCK:
            _VERIFIED.setdefault(key, set()).update(todo)
            _VERIFIED.move_to_end(key)
            while len(_VERIFIED) > VERIFIED_FILES:
                _VERIFIED.popitem(last=False)


def _file_schema(path: str, fmt: str) -> pa.Schema:
    if fmt == "parquet":
        with files.open_input(path) as fh:
            return _parquet_file(path, fh).schema_arrow
    from omeframe.formats.vortex.arrow_dataset import open_vortex_input  # lazy: pyarrow.dataset

    with open_vortex_input(path) as vin:
        return vin.schema


# ================================================================== reading
def _leaf_paths(names: Sequence[str], nested: Sequence[tuple[str, ...]]) -> list[str]:
    cols = list(names)
    for path in nested:
        if path[0] not in names:
            cols.append(".".join(path))
    return list(dict.fromkeys(cols))


def _to_polars(table: pa.Table) -> pl.DataFrame:
    pl = _import_polars()
    return pl.from_arrow(table, rechunk=False)


def _add_virtual(df: pl.DataFrame, names: Sequence[str], tbl: _Table) -> pl.DataFrame:
    pl = _import_polars()
    exprs = []
    for name in names:
        path = tbl.virtual[name]
        e = pl.col(path[0])
        for f in path[1:]:
            e = e.struct.field(f)
        exprs.append(e.alias(name))
    return df.with_columns(exprs) if exprs else df


class _Reader:
    """One execution of the IO source (one ``collect``)."""

    def __init__(
        self,
        tbl: _Table,
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
        *,
        analysed: _Predicate | None = None,
    ) -> None:
        self.tbl = tbl
        all_names = tbl.out_schema().names
        self.out = list(with_columns) if with_columns is not None else all_names
        if analysed is not None:
            self.pred: _Predicate | None = analysed
        else:
            self.pred = _analyse(predicate) if predicate is not None else None
        self.n_rows = n_rows
        self.batch_size = max(int(batch_size or 100_000), 1)
        needed = list(dict.fromkeys(self.out + (list(self.pred.uses) if self.pred else [])))
        unknown = [c for c in needed if c not in all_names]
        if unknown:
            raise KeyError(f"no column(s) {unknown} in {tbl.label}; columns: {all_names}")
        self.needed = needed
        # Phase 1: what the predicate needs (struct columns read through field
        # accesses only: just those leaves).  Phase 2: the rest.
        p1_real: list[str] = []
        p1_nested: list[tuple[str, ...]] = []
        p1_virtual: list[str] = []
        if self.pred is not None:
            for col, paths in self.pred.uses.items():
                if col in tbl.virtual:
                    p1_virtual.append(col)
                    p1_nested.append(tbl.virtual[col])
                elif paths is None:
                    p1_real.append(col)
                else:
                    p1_nested.extend((col,) + p for p in paths)
        self.p1_real, self.p1_nested, self.p1_virtual = p1_real, p1_nested, p1_virtual
        p1_whole = set(p1_real) | set(p1_virtual)
        self.p2_real = [c for c in needed if c not in tbl.virtual and c not in p1_whole]
        self.p2_virtual = [c for c in needed if c in tbl.virtual and c not in p1_whole]

    # -- helpers ----------------------------------------------------------
    def _finish(self, df: pl.DataFrame) -> Iterator[pl.DataFrame]:
        df = df.select(self.out)
        for start in range(0, df.height, self.batch_size):
            yield df.slice(start, self.batch_size)

    def __iter__(self) -> Iterator[pl.DataFrame]:
        remaining = self.n_rows
        for path in self.tbl.paths:
            if remaining is not None and remaining <= 0:
                return
            if self.tbl.format == "parquet":
                it = self._parquet(path, remaining)
            else:
                it = self._vortex(path, remaining)
            for df, consumed in it:
                if remaining is not None:
                    remaining -= consumed
                if df is not None and df.height:
                    yield from self._finish(df)

    # -- Parquet ----------------------------------------------------------
    def _parquet(self, path: str, limit: int | None) -> Iterator[tuple[pl.DataFrame | None, int]]:
        with files.open_input(path) as fh:
            pf = _parquet_file(path, fh)
            md = pf.metadata
            leaves = [md.schema.column(j).path for j in range(md.num_columns)]
            groups = self._plan_groups(md, leaves, limit)
            two_phase = self.pred is not None and bool(self.p2_real or self.p2_virtual)
            if two_phase:
                # Worth a second pass only when the other columns outweigh the
                # predicate's (pixels, large structs); metadata reads in one go.
                virt = self.tbl.virtual
                p1 = self._leaf_indices(
                    leaves, self.p1_real, self.p1_nested + [virt[v] for v in self.p1_virtual]
                )
                p2 = self._leaf_indices(leaves, self.p2_real, [virt[v] for v in self.p2_virtual])
                two_phase = _column_bytes(md, p2) > 2 * _column_bytes(md, p1)
            for block, take_last, consumed in groups:
                if not block:
                    yield None, consumed
                    continue
                if two_phase:
                    df = self._parquet_two_phase(pf, md, block, take_last)
                else:
                    real = self.p2_real + self.p1_real
                    nested = [self.tbl.virtual[v] for v in self.p2_virtual + self.p1_virtual]
                    nested += self.p1_nested
                    df = self._read_groups(pf, block, real, nested, take_last)
                    df = _add_virtual(df, self.p2_virtual + self.p1_virtual, self.tbl)
                    if self.pred is not None:
                        df = df.filter(self.pred.expr)
                yield df, consumed

    def _read_groups(
        self,
        pf: Any,
        groups: list[int],
        real: Sequence[str],
        nested: Sequence[tuple[str, ...]],
        take_last: int | None,
    ) -> pl.DataFrame:
        cols = _leaf_paths(real, nested)
        if not cols:  # row count only: read the smallest column
            cols = [self._smallest_leaf(pf)]
        try:
            table = pf.read_row_groups(groups, columns=cols, use_threads=True)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            reraise_access_error(exc)
            raise CorruptFileError(f"cannot read row groups of {self.tbl.label}: {exc}") from exc
        if take_last is not None:
            md = pf.metadata
            cut = md.row_group(groups[-1]).num_rows - take_last
            table = table.slice(0, table.num_rows - cut)
        return _to_polars(table)

    @staticmethod
    def _smallest_leaf(pf: Any) -> str:
        md = pf.metadata
        if md.num_row_groups == 0:
            return md.schema.column(0).path
        rg = md.row_group(0)
        sizes = [rg.column(j).total_compressed_size for j in range(md.num_columns)]
        return md.schema.column(int(np.argmin(sizes))).path

    def _parquet_two_phase(
        self, pf: Any, md: Any, block: list[int], take_last: int | None
    ) -> pl.DataFrame | None:
        pl = _import_polars()
        assert self.pred is not None
        idx_name = "__omeframe_row__"
        p1 = self._read_groups(pf, block, self.p1_real, self.p1_nested, take_last)
        p1 = _add_virtual(p1, self.p1_virtual, self.tbl)
        hit = p1.with_row_index(idx_name).filter(self.pred.expr)
        if hit.height == 0:
            return None
        rows = hit[idx_name].to_numpy().astype(np.int64)
        sizes = np.array([md.row_group(g).num_rows for g in block], dtype=np.int64)
        if take_last is not None:
            sizes[-1] = take_last
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        owner = np.searchsorted(starts, rows, side="right") - 1
        # (np.unique would import numpy.ma: 50 ms on a cold start)
        keep = np.flatnonzero(np.bincount(owner, minlength=len(block)))
        # Positions of the hits inside the concatenation of the matching groups only.
        new_starts = np.concatenate([[0], np.cumsum(sizes[keep])[:-1]])
        remap = np.empty(len(block), dtype=np.int64)
        remap[keep] = new_starts
        local = rows - starts[owner] + remap[owner]
        groups = [block[i] for i in keep]
        last = take_last if (take_last is not None and keep[-1] == len(block) - 1) else None
        p2_nested = [self.tbl.virtual[v] for v in self.p2_virtual]
        p2 = self._read_groups(pf, groups, self.p2_real, p2_nested, last)
        p2 = _add_virtual(p2, self.p2_virtual, self.tbl)
        p2 = p2.select([c for c in self.p2_real + self.p2_virtual if c in p2.columns])
        p2 = p2[pl.Series(local)]
        left = hit.drop(idx_name)
        # Phase-1 struct columns read partially must not reach the output.
        drop = [c for c in left.columns if c in p2.columns or c not in self.needed]
        return pl.concat([left.drop(drop), p2], how="horizontal")

    def _plan_groups(
        self, md: Any, leaves: list[str], limit: int | None
    ) -> list[tuple[list[int], int | None, int]]:
        """Blocks of row groups to read: ``(groups, rows of the last one or None, source rows)``."""
        tree = self.pred.tree if self.pred is not None else None
        stats = _GroupStats(md, leaves, self.tbl) if tree is not None else None
        sel = self._selected_leaf_indices(leaves)
        blocks: list[tuple[list[int], int | None, int]] = []
        cur: list[int] = []
        cur_rows = cur_bytes = consumed = 0
        start = 0
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            n = rg.num_rows
            if limit is not None and start >= limit:
                break
            take = None
            if limit is not None and start + n > limit:
                take = limit - start
            used = n if take is None else take
            start += n
            consumed += used
            if stats is not None and not stats.may_match(g, tree):
                continue
            nbytes = sum(rg.column(j).total_compressed_size for j in sel)
            if cur and (cur_rows + used > self.batch_size or cur_bytes + nbytes > _MAX_BLOCK_BYTES):
                blocks.append((cur, None, 0))
                cur, cur_rows, cur_bytes = [], 0, 0
            cur.append(g)
            cur_rows += used
            cur_bytes += nbytes
            if take is not None:
                blocks.append((cur, take, 0))
                cur = []
                break
        if cur:
            blocks.append((cur, None, 0))
        if not blocks:
            blocks.append(([], None, 0))
        # Report the consumed source rows on the last block (for n_rows across files).
        last = blocks[-1]
        blocks[-1] = (last[0], last[1], consumed)
        return blocks

    def _selected_leaf_indices(self, leaves: list[str]) -> list[int]:
        nested = self.p1_nested + [self.tbl.virtual[v] for v in self.p1_virtual + self.p2_virtual]
        return self._leaf_indices(leaves, self.p1_real + self.p2_real, nested)

    @staticmethod
    def _leaf_indices(
        leaves: list[str], tops: Sequence[str], nested: Sequence[tuple[str, ...]]
    ) -> list[int]:
        """Parquet leaf columns read for top-level columns and struct paths."""
        top_set = set(tops)
        paths = {".".join(p) for p in nested}
        out = []
        for j, leaf in enumerate(leaves):
            head = leaf.split(".", 1)[0]
            if head in top_set or any(leaf == p or leaf.startswith(p + ".") for p in paths):
                out.append(j)
        return out

    # -- Vortex -----------------------------------------------------------
    def _vortex(self, path: str, limit: int | None) -> Iterator[tuple[pl.DataFrame | None, int]]:
        from omeframe.formats.vortex.arrow_dataset import open_vortex_input  # lazy: pyarrow.dataset

        pl = _import_polars()
        with open_vortex_input(path) as vin:
            total = len(vin)
            end = total if limit is None else min(total, limit)
            consumed = end
            two_phase = self.pred is not None and bool(self.p2_real or self.p2_virtual)
            if end == 0:
                yield None, 0
                return
            if not two_phase:
                real = self.p2_real + self.p1_real
                virtual = self.p2_virtual + self.p1_virtual
                nested = [self.tbl.virtual[v] for v in virtual] + self.p1_nested
                vx_filter = None
                if self.pred is not None and limit is None:
                    vx_filter = _vortex_filter(self.pred.tree, self.tbl)
                for df in self._vortex_read(vin, real, nested, vx_filter, None, end):
                    df = _add_virtual(df, virtual, self.tbl)
                    if self.pred is not None:
                        df = df.filter(self.pred.expr)
                    yield df, 0
                yield None, consumed
                return
            # Two phases: predicate columns for all rows, then the rest at the hits.
            assert self.pred is not None
            idx_name = "__omeframe_row__"
            hits: list[_DataFrame] = []
            offset = 0
            for p1 in self._vortex_read(vin, self.p1_real, self.p1_nested, None, None, end):
                p1 = _add_virtual(p1, self.p1_virtual, self.tbl)
                hit = p1.with_row_index(idx_name, offset=offset).filter(self.pred.expr)
                offset += p1.height
                if hit.height:
                    hits.append(hit)
            if hits:
                hit = pl.concat(hits)
                rows = hit[idx_name].to_numpy().astype(np.uint64)
                for start in range(0, len(rows), self.batch_size):
                    chunk = rows[start : start + self.batch_size]
                    p2_nested = [self.tbl.virtual[v] for v in self.p2_virtual]
                    parts = list(self._vortex_read(vin, self.p2_real, p2_nested, None, chunk, None))
                    p2 = pl.concat(parts) if parts else None
                    left = hit.slice(start, len(chunk)).drop(idx_name)
                    if p2 is not None:
                        p2 = _add_virtual(p2, self.p2_virtual, self.tbl)
                        p2 = p2.select([c for c in self.p2_real + self.p2_virtual])
                        drop = [c for c in left.columns if c in p2.columns or c not in self.needed]
                        left = pl.concat([left.drop(drop), p2], how="horizontal")
                    yield left, 0
            yield None, consumed

    def _vortex_read(
        self,
        vin: Any,
        real: Sequence[str],
        nested: Sequence[tuple[str, ...]],
        vx_filter: Any,
        indices: np.ndarray | None,
        end: int | None,
    ) -> Iterator[pl.DataFrame]:
        import vortex
        import vortex.expr as ve

        from omeframe.formats.vortex.arrow_dataset import vortex_column  # lazy: pyarrow.dataset

        pl = _import_polars()
        schema = self.tbl.schema
        real = list(real)
        nested = [p for p in nested if p[0] not in real]
        counting = not real and not nested  # rows alone: no value is returned
        if counting:
            real = [_cheapest(schema)]
        # Nested leaves come back as one struct per top-level column, like Parquet's.
        by_top: dict[str, list[tuple[str, ...]]] = {}
        for p in nested:
            by_top.setdefault(p[0], []).append(p[1:])
        if by_top:
            fields: dict[str, Any] = {c: ve.column(c) for c in real}
            target_fields = [schema.field(c) for c in real]
            for top, subpaths in by_top.items():
                expr, typ = _nested_pack(top, subpaths, schema.field(top).type, vortex_column)
                fields[top] = expr
                target_fields.append(pa.field(top, typ))
            projection: Any = ve.pack(fields)
        else:
            projection = real
            target_fields = [schema.field(c) for c in real]
        vf = vin.file
        rows = None  # the file rows of what the scan returns, in order (unknown under a filter)
        if indices is not None:
            rows = np.asarray(indices, dtype=np.int64)
        elif vx_filter is None:
            rows = np.arange(len(vin) if end is None else end, dtype=np.int64)
        # Every OME-Arrow column read whole: each row's pixel bytes are checked against
        # its CRC in the hidden column (read beside them, dropped after the check)
        read = [] if counting else real
        check = row_crc_check(vf, schema, read, os.fspath(vin.path), rows)
        # fields read pruned (``by_top``) are not covered by the rows' checks, nor are some feature columns
        # or a filter: then the file's body is checked, once per version (see VortexInput.verified)
        if vin.verified(check, [*read, *by_top], vx_filter is not None):
            check = None
        if check is not None:
            hidden = check.field.name
            projection = ve.pack({**fields, hidden: ve.column(hidden)}) if by_top else [*projection, hidden]
            target_fields.append(check.field)
        target = pa.schema(target_fields)
        picks = None
        if indices is not None:
            picks = vortex.array(pa.array(indices, pa.uint64()))
        elif end is not None and end < len(vin):
            picks = vortex.array(pa.array(np.arange(end, dtype=np.uint64)))
        if picks is not None:  # a take: map the file, touch only the needed pages
            from omeframe.formats.vortex.arrow_dataset import open_vortex_mapped  # lazy: pyarrow.dataset

            vf = open_vortex_mapped(vin.path)
        batches = scan_batches(
            vf, projection, target, repr(vin.path), indices=picks, expr=vx_filter, batch_size=self.batch_size
        )
        for batch in batches:
            if not batch.schema.equals(target):
                batch = pa.RecordBatch.from_arrays(
                    [c.cast(f.type) for c, f in zip(batch.columns, target, strict=True)], schema=target
                )
            if check is not None:
                batch = check(batch)
            yield pl.from_arrow(batch)


def _column_bytes(md: Any, leaves: Sequence[int]) -> int:
    total = 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        total += sum(rg.column(j).total_compressed_size for j in leaves)
    return total


def _nested_pack(
    top: str, subpaths: list[tuple[str, ...]], t: pa.DataType, column: Any
) -> tuple[Any, pa.DataType]:
    """Vortex expression and Arrow type of ``top`` pruned to the given struct paths."""
    import vortex.expr as ve

    def build(
        prefix: tuple[str, ...], paths: list[tuple[str, ...]], typ: pa.DataType
    ) -> tuple[Any, pa.DataType]:
        if any(len(p) == 0 for p in paths):  # the whole sub-tree
            return column(prefix), typ
        children: dict[str, list[tuple[str, ...]]] = {}
        for p in paths:
            children.setdefault(p[0], []).append(p[1:])
        fields, exprs = [], {}
        for name in [typ.field(i).name for i in range(typ.num_fields)]:
            if name in children:
                e, ft = build(prefix + (name,), children[name], typ.field(name).type)
                exprs[name] = e
                fields.append(pa.field(name, ft, typ.field(name).nullable))
        return ve.pack(exprs, nullable=True), pa.struct(fields)

    return build((top,), subpaths, t)


def _cheapest(schema: pa.Schema) -> str:
    def weight(t: pa.DataType) -> int:
        if pa.types.is_primitive(t):
            return max(t.bit_width, 1)
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return 1000
        return 10_000

    return min(schema, key=lambda f: weight(f.type)).name


class _GroupStats:
    """Parquet row-group statistics, evaluated against a parsed predicate."""

    def __init__(self, md: Any, leaves: list[str], tbl: _Table) -> None:
        self.md = md
        self.index = {leaf: j for j, leaf in enumerate(leaves)}
        self.tbl = tbl

    def _stats(self, g: int, ref: _Ref, kind: str) -> Any:
        path = self.tbl.resolve(ref.path)
        t = field_type(self.tbl.schema, path)
        if t is None:
            return None
        if kind == "int" and not pa.types.is_integer(t):
            return None
        if kind == "str" and not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            return None
        if kind not in ("int", "str", "null"):
            return None
        j = self.index.get(".".join(path))
        if j is None:
            return None
        st = self.md.row_group(g).column(j).statistics
        return st

    def may_match(self, g: int, node: Any) -> bool:
        try:
            return self._may(g, node)
        except Exception:  # noqa: BLE001 - never let pruning break a scan
            return True

    def _may(self, g: int, node: Any) -> bool:
        if isinstance(node, _Bool):
            results = (self._may(g, p) for p in node.parts)
            return all(results) if node.op == "and" else any(results)
        if isinstance(node, _Null):
            st = self._stats(g, node.ref, "null")
            if st is None or not st.has_null_count:
                return True
            return st.null_count > 0 if node.is_null else True
        if isinstance(node, (_Cmp, _Between)):
            st = self._stats(g, node.ref, node.kind)
            if st is None:
                return True
            n = self.md.row_group(g).num_rows
            if st.has_null_count and st.null_count >= n:
                return False  # all null: a comparison is never true
            if not st.has_min_max:
                return True
            mn, mx = st.min, st.max
            if isinstance(node, _Between):
                return bool(mx >= node.lo and mn <= node.hi)
            v = node.value
            op = node.op
            if op == "eq":
                return bool(mn <= v <= mx)
            if op == "ne":
                return not (mn == mx == v)
            if op == "lt":
                return bool(mn < v)
            if op == "le":
                return bool(mn <= v)
            if op == "gt":
                return bool(mx > v)
            if op == "ge":
                return bool(mx >= v)
        return True


def _vortex_filter(tree: Any, tbl: _Table) -> Any:
    """A Vortex expression implied by the predicate (weaker or equal), or ``None``."""
    if tree is None:
        return None
    import vortex.expr as ve

    from omeframe.formats.vortex.arrow_dataset import (  # lazy: pyarrow.dataset
        pushable_type,
        vortex_column,
        vortex_literal,
    )

    def conv(node: Any) -> Any:
        if isinstance(node, _Bool):
            parts = [conv(p) for p in node.parts]
            if node.op == "and":
                parts = [p for p in parts if p is not None]
                return ve.and_collect(parts) if parts else None
            return None if any(p is None for p in parts) else ve.or_collect(parts)
        if isinstance(node, (_Cmp, _Between, _Null)):
            path = tbl.resolve(node.ref.path)
            t = field_type(tbl.schema, path)
            if t is None:
                return None
            col = vortex_column(path)
            if isinstance(node, _Null):
                if pa.types.is_floating(t):
                    return None
                return ve.is_null(col) if node.is_null else ve.is_not_null(col)
            if not pushable_type(t) or pa.types.is_boolean(t):
                return None
            if (node.kind == "int") != pa.types.is_integer(t):
                return None
            try:
                if isinstance(node, _Between):
                    lo, hi = vortex_literal(t, node.lo), vortex_literal(t, node.hi)
                    return ve.and_(ve.gt_eq(col, lo), ve.lt_eq(col, hi))
                lit = vortex_literal(t, node.value)
            except (OverflowError, ValueError, TypeError):
                return None
            ops = {"eq": ve.eq, "ne": ve.not_eq, "lt": ve.lt, "le": ve.lt_eq, "gt": ve.gt}
            return ops.get(node.op, ve.gt_eq)(col, lit)
        return None

    try:
        return conv(tree)
    except Exception:  # noqa: BLE001 - pushdown is an optimisation only
        return None


# ================================================================== routing
#: Accepted values of ``scan(reader=...)``: ``"auto"`` routes each query (see
#: :func:`scan`), ``"omeframe"`` always reads with omeframe's reader,
#: ``"native"`` always with Polars' own scan.
READERS = ("auto", "omeframe", "native")

_ROUTE_TAG = "omeframe scan #"


@dataclass(frozen=True)
class ScanRoute:
    """Which reader served one execution of an omeframe scan, and why.

    Attributes
    ----------
    reader
        ``"native"`` (Polars' own scan of the same files) or ``"omeframe"``
        (omeframe's reader inside the IO plugin).
    via
        What read the files: ``"polars.scan_parquet"``,
        ``"polars.scan_pyarrow_dataset"`` or ``"omeframe"``.
    reason
        The routing rule that chose the reader.
    columns
        The columns Polars asked the scan for (those of the predicate included).
    predicate
        The predicate Polars pushed into the scan, as text, or ``None``.
    n_rows
        The row limit Polars pushed into the scan, or ``None``.

    Example
    -------
    >>> import polars as pl, omeframe.polars as ofpl
    >>> q = ofpl.scan("cells.parquet").select("well")      # doctest: +SKIP
    >>> _ = q.collect()                                     # doctest: +SKIP
    >>> print(ofpl.scan_routes(q)[0])                       # doctest: +SKIP
    native (polars.scan_parquet): plain columns; columns ['well']
    """

    reader: str
    via: str
    reason: str
    columns: tuple[str, ...]
    predicate: str | None
    n_rows: int | None

    def __str__(self) -> str:
        parts = [f"{self.reader} ({self.via}): {self.reason}", f"columns {list(self.columns)}"]
        if self.predicate is not None:
            parts.append(f"predicate {self.predicate}")
        if self.n_rows is not None:
            parts.append(f"n_rows {self.n_rows}")
        return "; ".join(parts)


def _choose_route(
    tbl: _Table, names: Sequence[str], pred: _Predicate | None, n_rows: int | None, mode: str
) -> tuple[str, str, str]:
    """``(reader, via, reason)`` for one query; the rule is documented in :func:`scan`."""
    native_via = "polars.scan_parquet" if tbl.format == "parquet" else "polars.scan_pyarrow_dataset"
    if not tbl.paths:
        return "omeframe", "omeframe", "no files yet (a dataset without chunk parts)"
    if mode == "omeframe":
        return "omeframe", "omeframe", "reader='omeframe'"
    if mode == "native":
        return "native", native_via, "reader='native'"
    projected = set(names)
    header = sorted(c for c in projected if c in tbl.virtual)
    if any(tbl.virtual[c][0] not in projected for c in header):
        return (
            "omeframe",
            "omeframe",
            f"header column(s) {header} read as single leaves of the record struct "
            "(the native scan reads the whole struct, pixels included)",
        )
    if pred is not None:
        fields = sorted(c for c, paths in pred.uses.items() if c in tbl.virtual or paths is not None)
        if fields:
            return (
                "omeframe",
                "omeframe",
                f"the predicate reads struct fields through {fields}: those leaves are read "
                "first, the other columns at matching rows only",
            )
    if tbl.format == "vortex":
        # Measured (benchmarks/bench_query_scan.py): omeframe's Vortex reader is
        # as fast as pl.scan_pyarrow_dataset on plain projections and several
        # times faster with a predicate (late materialisation) or n_rows, while
        # the nested native scan adds its own set-up: omeframe's reader always.
        if pred is not None:
            why = "a predicate on Vortex: applied with Polars semantics, pushed into the Vortex scan"
            return "omeframe", "omeframe", why + " where exact, the other columns read at matching rows only"
        if n_rows is not None:
            return "omeframe", "omeframe", "n_rows on Vortex: the read stops after n_rows rows"
        return "omeframe", "omeframe", "Vortex: omeframe's reader is at least as fast as pl.scan_pyarrow_dataset"
    if header:
        return "native", native_via, "plain columns; header columns derived from the record column read whole"
    return "native", native_via, "plain columns"


def _field_expr(path: tuple[str, ...]) -> _Expr:
    pl = _import_polars()
    e = pl.col(path[0])
    for f in path[1:]:
        e = e.struct.field(f)
    return e


def _native_frame(
    tbl: _Table, names: Sequence[str], predicate: _Expr | None, n_rows: int | None
) -> pl.LazyFrame:
    """The query on Polars' own scan of the table's files (header columns derived)."""
    pl = _import_polars()
    if tbl.format == "parquet":
        lf = pl.scan_parquet(tbl.paths, glob=False, hive_partitioning=False)
    else:
        from omeframe.formats.vortex.arrow_dataset import vortex_plain_dataset  # lazy: pyarrow.dataset

        # allow_pyarrow_filter=False: pyarrow's comparison semantics differ from
        # Polars' (NaN), so a predicate is applied by Polars, never by pyarrow.
        frames = [
            pl.scan_pyarrow_dataset(vortex_plain_dataset(p), allow_pyarrow_filter=False)
            for p in tbl.paths
        ]
        lf = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")
    if n_rows is not None:
        lf = lf.head(n_rows)
    wanted = set(names) | (set(predicate.meta.root_names()) if predicate is not None else set())
    derived = [c for c in tbl.virtual if c in wanted]
    if derived:
        lf = lf.with_columns([_field_expr(tbl.virtual[c]).alias(c) for c in derived])
    if predicate is not None:
        lf = lf.filter(predicate)
    return lf.select(list(names))


class _ScanSource:
    """The IO-plugin callable of one :func:`scan`: routes each query, remembers the last route."""

    def __init__(self, tbl: _Table, pl_schema: Any, mode: str) -> None:
        self.tbl = tbl
        self.pl_schema = pl_schema
        self.mode = mode
        self.last_route: ScanRoute | None = None

    def route(
        self, with_columns: Sequence[str] | None, predicate: _Expr | None, n_rows: int | None
    ) -> tuple[ScanRoute, _Predicate | None]:
        names = list(with_columns) if with_columns is not None else list(self.pl_schema.names())
        pred = _analyse(predicate) if predicate is not None else None
        reader, via, reason = _choose_route(self.tbl, names, pred, n_rows, self.mode)
        text = None if predicate is None else str(predicate)
        return ScanRoute(reader, via, reason, tuple(names), text, n_rows), pred

    def __call__(
        self,
        with_columns: list[str] | None,
        predicate: _Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[_DataFrame]:
        pl = _import_polars()
        route, pred = self.route(with_columns, predicate, n_rows)
        self.last_route = route
        schema = self.pl_schema
        if route.reader == "native":
            unknown = [c for c in route.columns if c not in schema]
            if unknown:
                raise KeyError(f"no column(s) {unknown} in {self.tbl.label}; columns: {schema.names()}")
            if self.tbl.format == "parquet":
                used = list(route.columns) + (list(predicate.meta.root_names()) if predicate is not None else [])
                _check_native_pages(self.tbl, used, n_rows, predicate is not None)
            try:
                df = _native_frame(self.tbl, route.columns, predicate, n_rows).collect()
            except pl.exceptions.ComputeError as exc:
                if not str(exc).startswith("parquet"):
                    raise
                # Polars' Parquet reader refuses what passed omeframe's checks (a page codec flipped
                # to another valid one, which nothing else records): the file is damaged
                raise CorruptFileError(f"Polars cannot read {self.tbl.label}: {exc} (the file is damaged)") from exc
            df = _match_schema(df, schema)
            step = max(int(batch_size or 100_000), 1)
            if df.height <= step:
                yield df
            else:
                for start in range(0, df.height, step):
                    yield df.slice(start, step)
            return
        reader = _Reader(self.tbl, with_columns, predicate, n_rows, batch_size, analysed=pred)
        empty = True
        for df in reader:
            if df.columns != reader.out:
                df = df.select(reader.out)
            empty = False
            yield _match_schema(df, schema)
        if empty:
            yield pl.DataFrame(schema={c: schema[c] for c in reader.out})


_SOURCES: weakref.WeakValueDictionary[int, _ScanSource] = weakref.WeakValueDictionary()
_SOURCE_IDS = itertools.count(1)


def scan_routes(lf: pl.LazyFrame) -> list[ScanRoute]:
    """How the omeframe scans in a query's plan were read the last time it ran.

    Parameters
    ----------
    lf
        A ``LazyFrame`` built on :func:`scan` (filters, selects, joins ...).

    Returns
    -------
    list of ScanRoute
        One entry per omeframe scan in the plan that has run, in plan order:
        the route of its most recent execution (by any query sharing that scan).

    Example
    -------
    >>> import polars as pl, omeframe.polars as ofpl
    >>> q = ofpl.scan("cells.parquet").filter(pl.col("area") > 90).select("ome_arrow")  # doctest: +SKIP
    >>> _ = q.collect()                                                                # doctest: +SKIP
    >>> [r.via for r in ofpl.scan_routes(q)]                                           # doctest: +SKIP
    ['polars.scan_parquet']
    """
    plan = lf.explain(optimized=False)
    out: list[ScanRoute] = []
    for key in dict.fromkeys(int(m) for m in re.findall(re.escape(_ROUTE_TAG) + r"(\d+)", plan)):
        src = _SOURCES.get(key)
        if src is not None and src.last_route is not None:
            out.append(src.last_route)
    return out


# ==================================================================== scan
def _describe(
    source: str | os.PathLike[str], table: str | None, format: str | None
) -> tuple[list[str], str, str]:
    """Files, format and kind (``"records"``, ``"images"``, ``"chunks"``) of a source."""
    p = Path(source)
    if p.is_dir():
        m = read_manifest(p)
        if format is not None and format != m.format:
            raise ValueError(
                f"format= names the format of record table files; dataset {str(p)!r} is {m.format} (its "
                "manifest says so); drop format="
            )
        kind = table or "images"
        if kind == "images":
            if m.images is None:
                raise CorruptFileError(f"dataset {str(p)!r} has no images table yet")
            paths = [str(p / m.images)]
        elif kind == "chunks":
            paths = [str(p / part) for part in m.parts]
        else:
            raise ValueError(f"table must be 'images' or 'chunks', got {table!r}")
        return paths, m.format, kind
    if table is not None:
        raise ValueError(f"table= applies to dataset directories; {str(p)!r} is a file")
    if not p.exists():
        raise FileNotFoundError(f"no such file or dataset: {str(p)!r}")
    return [str(p)], detect_format(p, format), "records"


def _virtual_columns(
    schema: pa.Schema, kind: str, column_name: str | None, header_columns: bool | str, label: str
) -> dict[str, tuple[str, ...]]:
    if not header_columns:
        return {}
    prefix = "ome_" if header_columns is True else str(header_columns)
    if kind == "chunks":
        raise ValueError("header_columns apply to record tables and images tables, not to chunks")
    out: dict[str, tuple[str, ...]] = {}
    if kind == "records":
        col = find_record_column(schema, column_name, source=label)
        for suffix, path in HEADER_FIELDS.items():
            full = (col,) + path
            if field_type(schema, full) is not None:
                out[prefix + suffix] = full
    else:  # images table: record fields are its columns
        for suffix, path in HEADER_FIELDS.items():
            full = _IMAGES_TABLE_FIELDS.get(suffix, path)
            if field_type(schema, full) is not None:
                out[prefix + suffix] = full
    clash = [n for n in out if n in schema.names]
    if clash:
        raise ValueError(
            f"header column(s) {clash} clash with columns of {label}; "
            "pass header_columns='<prefix>'"
        )
    return out


def _scan_remote(
    pl: Any, url: str, table: str | None, header_columns: bool | str, storage_options: Mapping[str, Any] | None
) -> pl.LazyFrame:
    """A remote Parquet record table or dataset table as a Polars scan of a ``pyarrow.dataset``."""
    import pyarrow.dataset as pads  # lazy: pyarrow.dataset

    if header_columns:
        raise ValueError(
            "header_columns are not available for remote tables; select the record's fields with "
            "pl.col(<column>).struct.field(...) instead"
        )
    loc = parse_location(url)
    assert loc is not None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs = PyFileSystem(FSSpecHandler(ranged_filesystem(loc, storage_options)))
    last = loc.url.split("?", 1)[0].rsplit("/", 1)[-1].lower()
    if "." in last and TABLE_FORMATS.get("." + last.rsplit(".", 1)[-1]) == "parquet":
        if table is not None:
            raise ValueError("table= applies to dataset directories, not to record tables")
        paths = [loc.path]
    else:
        ds = DatasetReader(loc.url, storage_options=storage_options)
        if ds.format != "parquet":
            raise ValueError(f"{loc.url!r}: remote Vortex datasets cannot be scanned; copy the dataset locally")
        which = table or "images"
        if which not in ("images", "chunks"):
            raise ValueError(f"table must be 'images' or 'chunks', got {table!r}")
        assert ds.manifest.images is not None
        rels = [ds.manifest.images] if which == "images" else list(ds.manifest.parts)
        paths = [loc.join(r).path for r in rels]
    return pl.scan_pyarrow_dataset(pads.dataset(paths, format="parquet", filesystem=fs))


def scan(
    source: str | os.PathLike[str],
    *,
    table: str | None = None,
    column_name: str | None = None,
    header_columns: bool | str = False,
    format: str | None = None,
    reader: str = "auto",
    storage_options: Mapping[str, Any] | None = None,
) -> pl.LazyFrame:
    """Lazily scan an omeframe table with Polars, each query read by the faster reader.

    Parameters
    ----------
    source
        A record table (``.parquet`` / ``.vortex``) or a dataset directory.
    table
        For a dataset directory: ``"images"`` (default, one row per image and
        level) or ``"chunks"`` (one row per chunk, all parts).
    column_name
        The OME-Arrow column of a record table (default: auto-detected); only
        used by ``header_columns``.
    header_columns
        ``True`` adds the virtual columns of :data:`HEADER_FIELDS` with the
        prefix ``"ome_"`` (a string sets another prefix).  omeframe's reader
        reads them by nested projection of single leaves of the record struct,
        so filtering or selecting them reads no pixel bytes.
    format
        ``"parquet"`` or ``"vortex"`` when the suffix does not tell.
    reader
        ``"auto"`` (default) routes each query as below; ``"omeframe"`` always
        uses omeframe's reader, ``"native"`` always Polars' own scan (header
        columns are then derived from the whole record struct).
    storage_options
        For a URL source (``s3://bucket/cells.parquet``, a remote dataset):
        options of its fsspec filesystem. Remote Parquet tables are scanned
        as a ``pyarrow.dataset`` over ranged reads, with projections and
        predicates pushed into the scan (``header_columns`` and ``reader``
        apply to local tables only).

    Returns
    -------
    polars.LazyFrame
        Its schema is the file's (Polars types of the stored Arrow schema, e.g.
        ``large_binary`` -> ``Binary``) plus the header columns.  Projection,
        predicate (applied exactly) and ``n_rows`` are pushed into the reader;
        ``lf.explain()`` shows ``PYTHON[omeframe] SCAN`` and
        :func:`scan_routes` tells which reader served the last execution.

    Raises
    ------
    FileNotFoundError
        If ``source`` does not exist.
    CorruptFileError
        If a file is not readable Parquet/Vortex.
    NoOmeArrowColumnError
        With ``header_columns`` on a table without an OME-Arrow column.
    ValueError
        For an unknown ``reader`` or ``table``.

    Notes
    -----
    Routing (``reader="auto"``), decided first from the options, then per query:

    * The scan is a Polars IO plugin.  Polars hands it each
      query's columns (those of the predicate included), predicate and
      ``n_rows``, and the plugin uses omeframe's reader when it reads less than
      the native scan would:

      1. a header column is needed without its record column (a nested
         projection: the native scans read the whole struct, pixels included);
      2. the predicate reads struct fields (``ome_size_x > 64``,
         ``pl.col("ome_arrow").struct.field("id") == ...``): those leaves are
         read first, the rest of the record at matching rows only;
      3. on Vortex, every query: with a predicate (applied with Polars
         semantics, pyarrow's differ on NaN; the other columns read at
         matching rows only) or ``n_rows`` (the read stops early) it is several
         times faster than ``pl.scan_pyarrow_dataset``, and on plain
         projections it is as fast, without the native scan's set-up.

      Any other query goes to ``pl.scan_parquet`` inside the plugin; header
      columns, whose record column is then read whole anyway, are derived
      from it with ``struct.field``.  ``reader="native"`` sends every query
      to Polars' own scan (``pl.scan_pyarrow_dataset`` over omeframe's Vortex
      Arrow dataset for Vortex).
      :func:`scan_routes` tells which reader served a query and why.
    * **Checksums.** Polars' Parquet reader checks no page CRCs: before it
      runs, the plugin checks the pages of the column chunks it will decode
      (:func:`_check_native_pages`). On Vortex files, a read of the whole
      record column checks each row's pixel bytes against its stored CRC.

    Either way the result is the same frame.

    Example
    -------
    >>> import polars as pl, omeframe.polars as ofpl
    >>> lf = ofpl.scan("cells.parquet", header_columns=True)          # doctest: +SKIP
    >>> lf.filter(pl.col("ome_size_x") > 32).select("ome_id").collect()  # doctest: +SKIP
    """
    pl = _import_polars()
    from polars.io.plugins import register_io_source

    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    check_storage_options(storage_options, source)
    if parse_location(source) is not None:
        return _scan_remote(pl, os.fspath(source), table, header_columns, storage_options)
    paths, fmt, kind = _describe(source, table, format)
    label = repr(os.fspath(source)) + (f" ({kind} table)" if kind != "records" else "")
    version = (files.file_key(paths[0]), fmt) if paths else None
    cached = _schema_cache_get(version)
    if cached is not None:
        schema = cached
    elif paths:
        schema = _file_schema(paths[0], fmt)
    else:  # a dataset without chunk parts yet
        schema = CHUNKS_SCHEMA
    virtual = _virtual_columns(schema, kind, column_name, header_columns, label)
    tbl = _Table(paths, fmt, schema, virtual, label)
    pl_key = (version, tuple(virtual.items())) if version is not None else None
    pl_schema = _schema_cache_get(pl_key)
    if pl_schema is None:
        pl_schema = polars_schema(tbl.out_schema())
        if version is not None and pl_key is not None:
            _schema_cache_put(version, schema)
            _schema_cache_put(pl_key, pl_schema)
    src = _ScanSource(tbl, pl_schema, reader)
    key = next(_SOURCE_IDS)
    _SOURCES[key] = src
    return register_io_source(
        src,
        schema=src.pl_schema,
        explain_name="omeframe",
        explain_detail=(
            f"{fmt} {kind} table {os.fspath(source)} ({len(paths)} file(s)); "
            f"reader={reader}; {_ROUTE_TAG}{key}"
        ),
    )


def _match_schema(df: pl.DataFrame, schema: Any) -> pl.DataFrame:
    """Cast columns whose dtype drifted (e.g. a partial struct) to the declared one."""
    bad = [c for c in df.columns if df.schema[c] != schema[c]]
    if not bad:
        return df
    pl = _import_polars()
    return df.with_columns([pl.col(c).cast(schema[c]) for c in bad])
