"""Footers that contradict themselves are refused before pyarrow's metadata accessors abort the process.

pyarrow builds column-chunk metadata in C++ code whose exceptions it does not
translate: asking for it on such a footer ends the interpreter (SIGABRT). The
end-to-end cases run in a child process, so a missing check fails the test
instead of killing the suite.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.storage import parquet_footer
from omeframe.storage.parquet_footer import check_metadata
from omeframe.storage.thrift_compact import (
    BINARY,
    I32,
    I64,
    LIST,
    STRUCT,
    Field,
    Seq,
    decode_struct,
    encode_struct,
)

BYTE_ARRAY, INT32, INT64 = 6, 1, 2
I16 = 4
OPTIONAL, REQUIRED = 1, 0


def _crops(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    blob = 90 * np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 30.0)
    return np.clip(blob + rng.normal(20, 5, (n, 3, 16, 16)), 0, 255).astype(np.uint8)


def _footer(path: Path) -> tuple[bytes, list[Field], int]:
    data = path.read_bytes()
    n = struct.unpack("<I", data[-8:-4])[0]
    fields, _ = decode_struct(data[-8 - n : -8])
    return data, fields, len(data) - 8 - n


def _rewrite(path: Path, out: Path, edit: Callable[[list[Field]], None]) -> Path:
    """``path`` with its FileMetaData changed by ``edit`` (the pages stay where they are)."""
    data, fields, start = _footer(path)
    edit(fields)
    footer = encode_struct(fields)
    out.write_bytes(data[:start] + footer + struct.pack("<I", len(footer)) + b"PAR1")
    return out


def _get(fields: list[Field], fid: int) -> Field:
    return next(f for f in fields if f.id == fid)


def _leaf_elements(fields: list[Field]) -> dict[str, list[Field]]:
    """Schema elements of the leaves by dotted path."""
    elements = _get(fields, 2).value.items
    out: dict[str, list[Field]] = {}

    def walk(i: int, prefix: tuple[str, ...]) -> int:
        el = elements[i]
        name = next(f.value for f in el if f.id == 4).decode()
        path = (*prefix, name) if i else prefix
        kids = next((f.value for f in el if f.id == 5), 0)
        i += 1
        if not kids:
            out[".".join(path)] = el
        for _ in range(kids):
            i = walk(i, path)
        return i

    walk(0, ())
    return out


def _chunk_meta(fields: list[Field], group: int, column: int) -> list[Field]:
    chunk = _get(fields, 4).value.items[group]
    return _get(_get(chunk, 1).value.items[column], 3).value


def _set(struct_fields: list[Field], fid: int, ttype: int, value: object) -> None:
    for f in struct_fields:
        if f.id == fid:
            f.type, f.value = ttype, value
            return
    struct_fields.append(Field(fid, ttype, value))
    struct_fields.sort(key=lambda f: f.id)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("footer") / "crops.parquet"
    of.write_table(path, _crops(), dim_order="CYX", columns={"area": np.arange(40, dtype=np.int32)})
    return path


def _column(path: Path, dotted: str) -> int:
    md = pq.ParquetFile(path).metadata
    return next(j for j in range(md.num_columns) if md.schema.column(j).path == dotted)


def _id_as_int64(fields: list[Field]) -> None:
    """The ``id`` leaf declared INT64 while its chunks hold byte arrays with byte-array size statistics."""
    el = _leaf_elements(fields)["ome_arrow.id"]
    _set(el, 1, I32, INT64)
    for k in (6, 10):  # drop converted_type and logicalType (a string annotation on INT64 is refused at open)
        el[:] = [f for f in el if f.id != k]


def _area_required(fields: list[Field]) -> None:
    """The optional ``area`` leaf made required: its definition-level histogram is one entry long."""
    _set(_leaf_elements(fields)["area"], 3, I32, REQUIRED)


def _element(fields: list[Field], name: bytes) -> list[Field]:
    """The first schema element named ``name``."""
    return next(el for el in _get(fields, 2).value.items if any(f.id == 4 and f.value == name for f in el))


def _size_z_renamed(fields: list[Field]) -> None:
    """One flipped bit in a name of the Parquet schema: pyarrow would return a field ``size_{``."""
    _set(_element(fields, b"size_z"), 4, BINARY, b"size_{")


def _image_type_binary(fields: list[Field]) -> None:
    """A string leaf without its string annotations: DuckDB would return it as binary."""
    el = _element(fields, b"image_type")
    el[:] = [f for f in el if f.id not in (6, 10)]


def _key_values(fields: list[Field]) -> list[list[Field]]:
    return _get(fields, 5).value.items


def _version_changed(fields: list[Field]) -> None:
    """omeframe's metadata changed in the footer but not in the stored Arrow schema's copy."""
    kv = next(kv for kv in _key_values(fields) if _get(kv, 1).value == b"ome.arrow.version")
    _set(kv, 2, BINARY, b"9.9.9")


def _stored_schema_dropped(fields: list[Field]) -> None:
    """A footer of omeframe's without the Arrow schema it always stores."""
    _get(fields, 5).value.items[:] = [kv for kv in _key_values(fields) if _get(kv, 1).value != b"ARROW:schema"]


def _area_codec_gzip(fields: list[Field]) -> None:
    """The page codec of ``area`` (the last leaf) flipped from ZSTD to GZIP, another valid codec."""
    for group in _get(fields, 4).value.items:
        _set(_get(_get(group, 1).value.items[-1], 3).value, 4, I32, 2)


CASES: dict[str, tuple[Callable[[list[Field]], None], str]] = {
    "physical type": (_id_as_int64, "holds BYTE_ARRAY values, its schema leaf INT64"),
    "definition levels": (_area_required, "definition-level histogram of 2 entries, for a maximum level of 0"),
    "renamed field": (_size_z_renamed, "field 'ome_arrow.pixels_meta.size_z' is named 'size_{'"),
    "string annotation": (_image_type_binary, "'ome_arrow.image_type' is not annotated as a string"),
    "metadata value": (_version_changed, "metadata 'ome.arrow.version' differs from its copy"),
    "stored schema": (_stored_schema_dropped, "has no Arrow schema (ARROW:schema)"),
    "page codec": (_area_codec_gzip, "its pages are compressed with GZIP, the writer recorded ZSTD (omeframe.file)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_footers_are_refused_by_every_reader_without_aborting(tmp_path, table_path, case):
    """Open, take, read, verify and scan each end in CorruptFileError or a correct result, in a child process
    that exits normally. A take through the pixel index never asks for the column-chunk metadata the footer
    damages, so it returns the right pixels; a read of the table's columns is refused."""
    edit, message = CASES[case]
    bad = _rewrite(table_path, tmp_path / "bad.parquet", edit)
    check = textwrap.dedent(
        f"""
        import json, sys, numpy as np, omeframe as of, omeframe.polars, omeframe.duckdb as ofdb
        p = {str(bad)!r}
        calls = {{
            "duckdb register": lambda: ofdb.register(ofdb.connect(), "t", p, verify=True),
            "take": lambda: of.open_table(p).to_numpy(np.arange(3)).tolist(),
            "open_table read": lambda: of.open_table(p).read(["area"]),
            "read_table": lambda: of.read_table(p),
            "verify_table": lambda: of.verify_table(p),
            "polars scan": lambda: of.polars.scan(p).select("area").collect()["area"].to_list(),
        }}
        out = {{}}
        for name, call in calls.items():
            try:
                got = call()
                out[name] = got if isinstance(got, list) else "no error"
            except of.CorruptFileError as exc:
                out[name] = "CorruptFileError: " + str(exc)
            except Exception as exc:
                out[name] = type(exc).__name__ + ": " + str(exc)
        print(json.dumps(out))
        """
    )
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"the reader process died ({run.returncode}): {run.stderr[-2000:]}"
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for name, got in results.items():
        if name == "polars scan" and got == list(range(40)):
            continue  # Polars' own reader of the feature column: a correct result
        if name == "take" and got == _crops()[:3].tolist():
            continue  # pixels through the pixel index (its CRC and the frames' checksums hold): a correct result
        assert got.startswith("CorruptFileError") and message in got and "bad.parquet" in got, (name, got)


def test_each_contradiction_is_named(tmp_path, table_path):
    """check_metadata itself (it never asks pyarrow for column-chunk metadata): one case per rule."""
    area = _column(table_path, "area")
    pixels = _column(table_path, "ome_arrow.chunks.list.element.pixel_bytes")

    def fewer_columns(fields: list[Field]) -> None:
        chunk = _get(fields, 4).value.items[0]
        _get(chunk, 1).value.items.pop()

    def encrypted(fields: list[Field]) -> None:
        chunk = _get(_get(fields, 4).value.items[0], 1).value.items[area]
        _set(chunk, 8, STRUCT, [])

    def byte_sizes_on_ints(fields: list[Field]) -> None:
        sizes = next((f.value for f in _chunk_meta(fields, 0, area) if f.id == 16), None)
        if sizes is None:
            _set(_chunk_meta(fields, 0, area), 16, STRUCT, [Field(1, I64, 160)])
        else:
            _set(sizes, 1, I64, 160)

    def long_repetition_histogram(fields: list[Field]) -> None:
        meta = _chunk_meta(fields, 0, pixels)
        sizes = next(f.value for f in meta if f.id == 16)
        _set(sizes, 2, LIST, Seq(I64, [1, 2, 3, 4]))

    def short_min(fields: list[Field]) -> None:
        meta = _chunk_meta(fields, 0, area)
        _set(meta, 12, STRUCT, [Field(5, 8, b"\x01\x00\x00\x00"), Field(6, 8, b"\x00\x00\x00")])

    def missing_meta(fields: list[Field]) -> None:
        chunk = _get(_get(fields, 4).value.items[0], 1).value.items[area]
        chunk[:] = [f for f in chunk if f.id != 3]

    cases = {
        "fewer column chunks": (fewer_columns, "column chunks, but the schema has"),
        "encrypted": (encrypted, "its metadata is encrypted"),
        "byte sizes of ints": (byte_sizes_on_ints, "byte-array bytes of INT32 values"),
        "repetition histogram": (long_repetition_histogram, "repetition-level histogram of 4 entries"),
        "short statistic": (short_min, "min/max statistic of 3 bytes for INT32 values of 4"),
        "no metadata": (missing_meta, "has no metadata"),
        **CASES,
    }
    check_metadata(pq.ParquetFile(table_path).metadata, "intact")  # the intact file passes
    for name, (edit, message) in cases.items():
        bad = _rewrite(table_path, tmp_path / f"{name}.parquet", edit)
        try:
            md = pq.read_metadata(bad)
        except (OSError, pa.ArrowException):
            continue  # pyarrow refuses this one itself when it opens the footer
        with pytest.raises(of.CorruptFileError, match=re.escape(message)):
            check_metadata(md, name)
            pytest.fail(f"{name}: not refused")


def test_footer_fields_are_checked_as_stored(tmp_path, table_path):
    """Wire types, enum values, required fields and the footer's length, in the bytes as stored: readers
    generated from parquet.thrift (DuckDB's) refuse such footers, a lenient one may read on."""
    area = _column(table_path, "area")
    md = pq.ParquetFile(table_path).metadata

    def converted_as_i16(fields: list[Field]) -> None:
        el = _element(fields, b"image_type")
        next(f for f in el if f.id == 6).type = I16

    def negative_encoding(fields: list[Field]) -> None:
        encodings = next(f.value for f in _chunk_meta(fields, 0, area) if f.id == 2)
        encodings.items[0] = -1

    def no_num_values(fields: list[Field]) -> None:
        meta = _chunk_meta(fields, 0, area)
        meta[:] = [f for f in meta if f.id != 5]

    def negative_rows(fields: list[Field]) -> None:
        _set(fields, 3, I64, -40)

    def empty_union(fields: list[Field]) -> None:
        _get(fields, 7).value.items[0][:] = []  # a ColumnOrder with no member

    def no_bytes(fields: list[Field]) -> None:
        _set(_chunk_meta(fields, 0, area), 7, I64, 0)  # pyarrow reads the pages anyway; Polars reads none

    def created_by_not_text(fields: list[Field]) -> None:
        _set(fields, 6, BINARY, b"parquet-cpp-arrow \xff")

    cases = {
        "text": (created_by_not_text, "FileMetaData.created_by is not UTF-8 text"),
        "wire type": (converted_as_i16, "].converted_type is stored as i16, expected i32"),
        "enum value": (negative_encoding, "meta_data.encodings[0] is -1, outside 0..9"),
        "required field": (no_num_values, "(ColumnMetaData) lacks its required num_values"),
        "negative count": (negative_rows, "FileMetaData.num_rows is -40, outside 0.."),
        "union": (empty_union, "column_orders[0] (ColumnOrder, a union) has 0 members set, not one"),
        "no bytes": (no_bytes, "column 'area' in row group 0: the chunk holds 40 values in 0 bytes"),
    }
    for name, (edit, message) in cases.items():
        data, fields, start = _footer(table_path)
        edit(fields)
        with pytest.raises(of.CorruptFileError, match=re.escape(message)):
            check_metadata(md, name, encode_struct(fields))
    data, _, start = _footer(table_path)
    with pytest.raises(of.CorruptFileError, match=r"metadata ends after \d+ of its \d+ bytes"):
        check_metadata(md, "trailing", data[start:-8] + b"\x00")
    check_metadata(md, "intact", data[start:-8])


def test_a_chunk_whose_footer_miscounts_or_miscodes_it_is_refused(tmp_path, table_path):
    """Footer fields pyarrow reads past but Polars trusts: a chunk's value count (checked against its pages'
    when they are checked) and its codec (a valid other one: Polars' failure to decompress is reported as
    CorruptFileError naming the file)."""
    import omeframe.polars  # noqa: F401 - registers of.polars

    area = _column(table_path, "area")
    miscounted = _rewrite(table_path, tmp_path / "count.parquet", lambda f: _set(_chunk_meta(f, 0, area), 5, I64, 41))
    for read in (lambda: of.read_table(miscounted), lambda: of.polars.scan(miscounted).select("area").collect()):
        with pytest.raises(of.CorruptFileError, match=r"count.parquet.*'area'.*hold 40 values, the footer says 41"):
            read()
    gzip = 2  # CompressionCodec.GZIP, one bit away from ZSTD's zigzag encoding

    def miscode(fields: list[Field]) -> None:
        _set(_chunk_meta(fields, 0, area), 4, I32, gzip)

    # omeframe's file: its footer-only key records each column's codec
    miscoded = _rewrite(table_path, tmp_path / "codec.parquet", miscode)
    for read in (lambda: of.read_table(miscoded), lambda: of.polars.scan(miscoded).select("area").collect()):
        with pytest.raises(of.CorruptFileError, match=r"codec.parquet.*'area' in row group 0: the footer says its "
                           r"pages are compressed with GZIP, the writer recorded ZSTD"):
            read()

    def foreign(fields: list[Field]) -> None:  # the same, in a file nothing records the codecs of
        miscode(fields)
        _get(fields, 5).value.items[:] = [kv for kv in _key_values(fields) if _get(kv, 1).value != b"omeframe.file"]

    unrecorded = _rewrite(table_path, tmp_path / "foreign.parquet", foreign)
    with pytest.raises(of.CorruptFileError, match=r"Polars cannot read .*foreign.parquet.*\(the file is damaged\)"):
        of.polars.scan(unrecorded).select("area").collect()
    with pytest.raises(of.CorruptFileError, match="foreign.parquet"):
        of.read_table(unrecorded)


def _edit_stored_schema(fields: list[Field], edit: Callable[[bytes], bytes]) -> None:
    """Replace the footer's ARROW:schema by ``edit`` of its decoded bytes."""
    import base64

    kv = next(kv for kv in _key_values(fields) if _get(kv, 1).value == b"ARROW:schema")
    _set(kv, 2, BINARY, base64.b64encode(edit(base64.b64decode(_get(kv, 2).value))))


def test_the_stored_arrow_schema_is_checked(tmp_path, table_path):
    """Damage in the stored Arrow schema that pyarrow reads past, but Polars' reader refuses or panics on:
    bytes pyarrow's own encoding does not give back, a list item's name that is not UTF-8, a list made
    a fixed-size list of 0 items; and a physical type that cannot hold the column's Arrow type."""
    md = pq.ParquetFile(table_path).metadata
    raw = __import__("base64").b64decode(md.metadata[b"ARROW:schema"])
    intact = pa.ipc.read_schema(pa.py_buffer(raw))

    def reencoded_differently(data: bytes) -> bytes:
        """The first single-bit flip pyarrow decodes to the same schema, metadata included."""
        for at in range(len(data)):
            flipped = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
            try:
                if pa.ipc.read_schema(pa.py_buffer(flipped)).equals(intact, check_metadata=True):
                    return flipped
            except (pa.ArrowException, OSError, ValueError):
                continue
        raise AssertionError("no such flip")

    def item_name(data: bytes) -> bytes:
        at = data.index(b"item")
        return data[: at + 1] + b"\xf5" + data[at + 2 :]

    def fixed_size_channels(data: bytes) -> bytes:
        ome = intact.field("ome_arrow").type
        pm = ome.field("pixels_meta").type
        channels = pm.field("channels")
        pm2 = pa.struct([pm.field(i) if pm.field(i).name != "channels" else
                         channels.with_type(pa.list_(channels.type.value_field, 0)) for i in range(pm.num_fields)])
        ome2 = pa.struct([ome.field(i) if ome.field(i).name != "pixels_meta" else ome.field(i).with_type(pm2)
                          for i in range(ome.num_fields)])
        changed = intact.set(0, intact.field("ome_arrow").with_type(ome2))
        return changed.serialize().to_pybytes()

    def area_as_int64(fields: list[Field]) -> None:  # the schema leaf and its chunks agree, the Arrow schema not
        _set(_leaf_elements(fields)["area"], 1, I32, INT64)
        meta = _chunk_meta(fields, 0, _column(table_path, "area"))
        _set(meta, 1, I32, INT64)
        meta[:] = [f for f in meta if f.id != 12]  # no 4-byte statistics left over

    def list_annotated_string(fields: list[Field]) -> None:
        """A string leaf whose logical type turned LIST (its converted type still UTF8), in a file not marked
        as omeframe's: pyarrow reads such a leaf as binary."""
        _get(fields, 5).value.items[:] = [kv for kv in _key_values(fields) if _get(kv, 1).value != b"omeframe.file"]
        _set(_element(fields, b"image_type"), 10, STRUCT, [Field(3, STRUCT, [])])

    cases: dict[str, tuple[Callable[[list[Field]], None], str]] = {
        "logical type": (list_annotated_string, "'ome_arrow.image_type' is not annotated as a string (and nothing"),
        "re-encoded": (
            lambda f: _edit_stored_schema(f, reencoded_differently), "is not as the writer encodes it"
        ),
        "item name": (lambda f: _edit_stored_schema(f, item_name), "a field name of the stored Arrow schema is not"),
        "fixed size 0": (
            lambda f: _edit_stored_schema(f, fixed_size_channels), "is a fixed-size list of 0 items"
        ),
        "physical type": (area_as_int64, "field 'area' is stored as physical type 2, which cannot hold int32"),
        # names Arrow's writer gives the levels of a list in omeframe's files (pyarrow takes the damaged ones)
        "list element": (
            lambda f: _set(_element(f, b"element"), 4, BINARY, b"dlement"),
            "is named 'dlement' in the Parquet schema, which Arrow's writer names 'element' or 'item'",
        ),
        "repeated group": (
            lambda f: _set(_element(f, b"list"), 4, BINARY, b"lisu"),
            "has its repeated group named 'lisu', not 'list'",
        ),
        # an int16 leaf (a chunk key) whose converted type is gone: pyarrow derives another type from what is
        # left; in omeframe's files each element must be the one Arrow's writer gives the stored schema
        "converted type": (
            lambda f: _element(f, b"c").__setitem__(slice(None), [x for x in _element(f, b"c") if x.id != 6]),
            "field 'c' differs from the element Arrow's writer gives it",
        ),
    }
    for name, (edit, message) in cases.items():
        bad = _rewrite(table_path, tmp_path / f"{name}.parquet", edit)
        data, _, start = _footer(bad)
        with pytest.raises(of.CorruptFileError, match=re.escape(message)):
            check_metadata(pq.read_metadata(bad), name, data[start:-8])


def _variant_table(extensions: bool = False) -> pa.Table:
    """A table of every common column kind (maps, nested lists, fixed-size lists, dictionaries ...), with
    ``extensions`` Arrow's canonical extension types too (which DuckDB and Polars do not all take)."""
    import datetime
    import decimal

    n = 40
    table = pa.table(
        {
            "req": pa.array(np.arange(n, dtype=np.int8)),
            "u64": pa.array(np.arange(n, dtype=np.uint64)),
            "s": pa.array([f"x{i}" for i in range(n)]),
            "ls": pa.array(["y"] * n, pa.large_string()),
            "b": pa.array([b"ab"] * n),
            "lb": pa.array([b"ab"] * n, pa.large_binary()),
            "fsb": pa.array([b"abcd"] * n, pa.binary(4)),
            "dec": pa.array([decimal.Decimal("1.25")] * n, pa.decimal128(10, 2)),
            "ts": pa.array([datetime.datetime(2020, 1, 1)] * n, pa.timestamp("ns", tz="UTC")),
            "date": pa.array([datetime.date(2020, 1, 1)] * n),
            "dict": pa.array(["a", "b"] * (n // 2)).dictionary_encode(),
            "bool": pa.array([True, False] * (n // 2)),
            "lst": pa.array([[1, 2]] * n),
            "fsl": pa.array([[1, 2]] * n, pa.list_(pa.int32(), 2)),
            "st": pa.array([{"a": 1, "b": "x"}] * n),
            "m": pa.array([[("k", 1)]] * n, pa.map_(pa.string(), pa.int64())),
            "nested": pa.array([[{"a": [1], "s": {"q": "z"}}]] * n),
        }
    )
    table = table.cast(table.schema.set(0, pa.field("req", pa.int8(), nullable=False)))
    if extensions:
        storage = pa.array([[1, 2]] * n, pa.list_(pa.int32(), 2))
        table = table.append_column("tensor", pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.int32(), [2]),
                                                                             storage))
        table = table.append_column("uuid", pa.array([b"0123456789abcdef"] * n, pa.uuid()))
        table = table.append_column("json", pa.array(['{"a": 1}'] * n, pa.json_()))
        table = table.append_column("bool8", pa.array([1, 0] * (n // 2), pa.int8()).cast(pa.bool8()))
    return table


def _writer_options() -> list[dict[str, object]]:
    """Options of Arrow's Parquet writer whose footers differ."""
    return [
        {},
        {"data_page_version": "2.0", "compression": "zstd", "row_group_size": 7},
        {"use_dictionary": False, "write_statistics": False, "version": "1.0"},
        {"write_page_index": True, "write_page_checksum": True, "bloom_filter_options": {"s": True}},
        {"use_compliant_nested_type": False, "sorting_columns": [pq.SortingColumn(0)]},
        {"store_schema": False},
    ]


def _variants() -> dict[str, Callable[[Path], None]]:
    """Writers of tables whose footers are sound: pyarrow's options, DuckDB and Polars."""
    n = 40
    table = _variant_table()
    full = _variant_table(extensions=True).append_column("null", pa.nulls(n))
    out: dict[str, Callable[[Path], None]] = {
        f"pyarrow {o}": (lambda p, o=o: pq.write_table(full, p, **o))
        for o in _writer_options()
    }

    def duck(p: Path) -> None:
        import duckdb

        con = duckdb.connect()
        con.register("t", table)
        con.sql(f"copy t to '{p}' (format parquet)")

    def polars(p: Path) -> None:
        import polars as pl

        pl.from_arrow(table).write_parquet(p, statistics="full")

    out.update(duckdb=duck, polars=polars)
    return out


def test_a_time_zone_that_names_no_zone_is_refused(tmp_path):
    """The Parquet schema keeps no copy of a timestamp's time zone: a damaged one names no zone at all."""
    import datetime

    path = tmp_path / "tz.parquet"
    ts = pa.array([datetime.datetime(2020, 1, 1)], pa.timestamp("us", tz="Europe/Paris"))
    pq.write_table(pa.table({"t": ts, "f": pa.array([ts[0].value], pa.timestamp("us", tz="+05:30"))}), path)
    data, _, start = _footer(path)
    check_metadata(pq.read_metadata(path), "sound", data[start:-8])
    bad = _rewrite(path, tmp_path / "bad.parquet", lambda f: _edit_stored_schema(
        f, lambda b: b.replace(b"Europe/Paris", b"Europe/Parhs")))
    data, _, start = _footer(bad)
    with pytest.raises(of.CorruptFileError, match="field 't' has time zone 'Europe/Parhs' in the stored Arrow schema"):
        check_metadata(pq.read_metadata(bad), "bad", data[start:-8])


def test_sound_footers_of_other_writers_pass(tmp_path):
    """No false refusals: footers of every common writer and option pass, as stored and re-serialised."""
    for k, (name, write) in enumerate(_variants().items()):
        path = tmp_path / f"{k}.parquet"
        write(path)
        data, _, start = _footer(path)
        md = pq.ParquetFile(path).metadata
        parquet_footer._SOUND.clear()
        check_metadata(md, name, data[start:-8])
        check_metadata(md, name)


def test_sound_footers_of_omeframe_files_pass_its_stricter_rules(tmp_path):
    """omeframe's own files (its footer-only key) are held to its writer's rules: they pass for every column
    kind, in a table as built and as read back from Parquet (its maps keep their entries' Parquet name). A
    table read from such a file and written again by pyarrow, with any of its options, does not carry the
    key, so the rules do not hold it: no false refusal of a rewritten copy."""
    from omeframe.model.arrow import METADATA_KEY_FILE

    built = _variant_table(extensions=True)
    pq.write_table(built, tmp_path / "plain.parquet")
    for k, table in enumerate([built, pq.read_table(tmp_path / "plain.parquet")]):
        path = tmp_path / f"own{k}.parquet"
        with pq.ParquetWriter(path, table.schema) as w:
            w.write_table(table)
            w.add_key_value_metadata({METADATA_KEY_FILE: b"{}"})
        data, _, start = _footer(path)
        parquet_footer._SOUND.clear()
        check_metadata(pq.read_metadata(path), f"own {k}", data[start:-8])
        assert METADATA_KEY_FILE not in (pq.read_table(path).schema.metadata or {})
        copy = pq.ParquetFile(path).read()  # (this read hands the footer-only key over: in both copies then)
        assert METADATA_KEY_FILE in copy.schema.metadata
        for j, options in enumerate([*_writer_options(), {"compression": "snappy", "coerce_timestamps": "us"}]):
            rewritten = tmp_path / f"copy{k}-{j}.parquet"
            pq.write_table(copy, rewritten, **options)
            data, _, start = _footer(rewritten)
            check_metadata(pq.read_metadata(rewritten), f"copy {options}", data[start:-8])


def test_footer_bit_flips_give_an_error_or_the_same_table(tmp_path, table_path):
    """One bit flipped at sampled positions of a record table's footer: omeframe's read_table, a DuckDB
    view registered with verify=True and a Polars scan each return the intact table, schema and metadata
    included, or a
    typed error (from DuckDB's page reader, one naming the file), in a child process that must not die.
    (Names, string annotations and omeframe's metadata carry no checksum: the stored Arrow schema is their
    second copy.)"""
    script = textwrap.dedent(
        f"""
        import json, os, numpy as np, pyarrow as pa, duckdb, omeframe as of, omeframe.duckdb as ofdb
        import omeframe.polars
        src = {str(table_path)!r}
        data = open(src, "rb").read()
        n = int.from_bytes(data[-8:-4], "little")
        start = len(data) - 8 - n
        want = of.read_table(src)
        want_sql = duckdb.connect().sql(f"select * from '{{src}}'").to_arrow_table()
        want_pl = of.polars.scan(src).collect().to_arrow()
        def _sql(p):
            con = ofdb.connect()
            ofdb.register(con, "t", p, verify=True)
            return con.sql("select * from t").to_arrow_table()

        rng = np.random.default_rng(11)
        picked = sorted(rng.choice(np.arange(start, len(data) - 8), 300, replace=False).tolist())
        errors = (of.OmeframeError, OSError, ValueError, pa.ArrowException, duckdb.Error)
        wrong, untyped = [], []
        for i, q in enumerate(picked):
            d = bytearray(data)
            d[q] ^= 1 << int(rng.integers(0, 8))
            p = os.path.join({str(tmp_path)!r}, f"f{{i}}.parquet")
            open(p, "wb").write(bytes(d))
            for name, read, ref in (
                ("read_table", lambda: of.read_table(p), want),
                ("duckdb", lambda: _sql(p), want_sql),
                ("polars", lambda: of.polars.scan(p).collect().to_arrow(), want_pl),
            ):
                try:
                    got = read()
                except errors as exc:
                    # DuckDB's own errors reading pages (a codec flipped to another that is valid) name the file
                    if isinstance(exc, duckdb.Error) and os.path.basename(p) not in str(exc):
                        untyped.append((q - start, name, type(exc).__name__, str(exc)[:160]))
                    continue
                except BaseException as exc:  # (Polars hands its panics over as BaseException)
                    untyped.append((q - start, name, type(exc).__name__, str(exc)[:160]))
                    continue
                if not got.equals(ref, check_metadata=True):
                    wrong.append((q - start, name))
            os.remove(p)
        print(json.dumps({{"wrong": wrong, "untyped": untyped}}))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"the reader process died ({run.returncode}): {run.stderr[-2000:]}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert not result["wrong"], f"a changed table and no error after flips at footer offsets {result['wrong']}"
    assert not result["untyped"], json.dumps(result["untyped"])


def test_sound_footers_are_remembered(table_path, monkeypatch):
    md = pq.ParquetFile(table_path).metadata
    parquet_footer._SOUND.clear()
    check_metadata(md, "t")
    decoded = []
    monkeypatch.setattr(parquet_footer, "decode_struct", lambda *a, **k: decoded.append(1) or ([], 0))
    check_metadata(pq.ParquetFile(table_path).metadata, "t")  # another FileMetaData of the same footer
    assert not decoded
    parquet_footer._SOUND.clear()
    check_metadata(md, "t")
    assert decoded == [1]


def test_a_stored_footer_is_checked_as_stored_and_recognised_by_its_bytes(table_path, monkeypatch):
    """Given the footer bytes a FileMetaData came from, the check decodes those bytes and never
    re-serialises the metadata (pyarrow's write_metadata_file ends the process with SIGSEGV on some
    damaged footers); a reopen costs one CRC. Without the bytes, the metadata is serialised."""
    data, _, start = _footer(table_path)
    stored = data[start:-8]
    parquet_footer._SOUND.clear()
    serialised = []
    real = parquet_footer._thrift_bytes
    monkeypatch.setattr(parquet_footer, "_thrift_bytes", lambda md: serialised.append(1) or real(md))
    decoded = []
    real_decode = parquet_footer.decode_struct
    monkeypatch.setattr(parquet_footer, "decode_struct", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    check_metadata(pq.ParquetFile(table_path).metadata, "t", stored)
    assert not serialised and decoded == [1]
    check_metadata(pq.ParquetFile(table_path).metadata, "t", stored)
    assert not serialised and decoded == [1]  # found sound before: one CRC
    check_metadata(pq.ParquetFile(table_path).metadata, "t")
    assert serialised == [1]


def test_bit_flips_in_page_headers_and_footer_give_an_error_or_exact_pixels(tmp_path):
    """One bit flipped at sampled positions of every page header and of the footer of a record
    table (pixel index, raw tiny chunks in compressed pages): take, full read and read_table each
    return exact pixels or a typed error, in a child process that must not die."""
    stack = _crops(300, seed=3)
    path = of.write_table(tmp_path / "t.parquet", stack, dim_order="CYX")
    np.save(tmp_path / "stack.npy", stack)
    script = textwrap.dedent(
        f"""
        import json, os, warnings, numpy as np, pyarrow as pa, pyarrow.parquet as pq, omeframe as of
        from omeframe.storage.parquet_crc import chunk_pages
        src, stack = {str(path)!r}, np.load({str(tmp_path / "stack.npy")!r})
        data = open(src, "rb").read()
        md = pq.ParquetFile(src).metadata
        positions = set()
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                cc = md.row_group(g).column(c)
                start = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
                end = start + cc.total_compressed_size
                pages = chunk_pages(data, start, end, "t")
                body = np.zeros(end - start, bool)
                for s, n in zip(pages.starts.tolist(), pages.lengths.tolist()):
                    body[s - start : s - start + n] = True
                positions.update((start + np.flatnonzero(~body)).tolist())
        n = int.from_bytes(data[-8:-4], "little")
        positions.update(range(len(data) - 8 - n, len(data)))
        rng = np.random.default_rng(7)
        picked = sorted(rng.choice(sorted(positions), 400, replace=False).tolist())
        errors = (of.OmeframeError, OSError, ValueError, pa.ArrowException, RuntimeError, UserWarning)
        wrong, untyped, done = [], [], 0
        for i, q in enumerate(picked):
            d = bytearray(data)
            d[q] ^= 1 << int(rng.integers(0, 8))
            p = os.path.join({str(tmp_path)!r}, f"d{{i}}.parquet")  # a new file: no cached state
            open(p, "wb").write(bytes(d))
            rows = np.sort(rng.choice(len(stack), 10, replace=False))
            reads = {{
                "take": (rows, lambda: of.open_table(p).to_numpy(rows)),
                "full": (slice(None), lambda: of.open_table(p).to_numpy()),
                "read_table": (slice(None), lambda: of.to_numpy_stack(of.read_table(p).column(0))),
            }}
            for name, (want, read) in reads.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("error", of.MissingChunksWarning)
                    try:
                        got = read()
                    except errors:
                        continue
                    except Exception as exc:
                        untyped.append((q, name, type(exc).__name__, str(exc)[:200]))
                        continue
                if not np.array_equal(got, stack[want]):
                    wrong.append((q, name))
            os.remove(p)
            done += 1
        print(json.dumps({{"done": done, "wrong": wrong, "untyped": untyped}}))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"the reader process died ({run.returncode}): {run.stderr[-2000:]}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["done"] == 400
    assert not result["wrong"], f"silently wrong pixels after flips at {result['wrong']}"
    assert not result["untyped"], json.dumps(result["untyped"])


@pytest.mark.parametrize("compression", [None, "snappy", "gzip", "brotli", "lz4", "zstd"])
def test_omeframe_records_the_codec_of_every_leaf(tmp_path, compression):
    """The writer's copy of each leaf's codec (in omeframe.file) is what the footer holds, for every codec
    and for feature columns of nested kinds (maps, lists of structs, fixed-size lists, extension types); the
    key stays in the footer (a table read from the file does not carry it)."""
    from omeframe.model.arrow import METADATA_KEY_FILE

    n = 6
    tensor = pa.ExtensionArray.from_storage(
        pa.fixed_shape_tensor(pa.int32(), [2]), pa.array([[1, 2]] * n, pa.list_(pa.int32(), 2))
    )
    columns = {
        "area": np.arange(n),
        "m": pa.array([[("k", 1)]] * n, pa.map_(pa.string(), pa.int64())),
        "ls": pa.array([[{"a": 1, "b": "x"}]] * n),
        "t": tensor,
    }
    path = of.write_table(tmp_path / "t.parquet", _crops(n), dim_order="CYX", columns=columns, compression=compression)
    md = pq.read_metadata(path)
    recorded = json.loads(md.metadata[METADATA_KEY_FILE])["codecs"]
    thrift = {"UNCOMPRESSED": 0, "SNAPPY": 1, "GZIP": 2, "BROTLI": 4, "ZSTD": 6, "LZ4": 7}
    for g in range(md.num_row_groups):
        assert [str(thrift[md.row_group(g).column(j).compression]) for j in range(md.num_columns)] == list(recorded)
    assert of.read_table(path).num_rows == n
    assert METADATA_KEY_FILE not in of.read_table(path).schema.metadata
    assert METADATA_KEY_FILE not in pq.read_table(path).schema.metadata
