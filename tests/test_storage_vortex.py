"""Tests for omeframe.formats.vortex.file against real Vortex files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

vortex = pytest.importorskip("vortex")

from omeframe.errors import CorruptFileError, RowIndexError  # noqa: E402
from omeframe.formats.vortex.file import (  # noqa: E402
    SCHEMA_COLUMN_PREFIX,
    read_vortex_schema,
    read_vortex_table,
    vortex_dataset,
    vortex_num_rows,
    write_vortex_table,
)

CHUNK = pa.struct(
    [("t", pa.int32()), ("c", pa.int16()), ("pixel_bytes", pa.large_binary())]
)
IMAGE = pa.struct(
    [("id", pa.string()), ("chunks", pa.list_(CHUNK)), ("masks", pa.null())]
)
OME_META = {b"ome.arrow.type": b"ome.arrow", b"ome.arrow.version": b"0.1.0"}


def make_table(n: int = 12) -> pa.Table:
    images = [
        {
            "id": f"img{i}",
            "chunks": [
                {"t": i, "c": c, "pixel_bytes": bytes([i % 256, c]) * (c + 1)}
                for c in range(i % 3)
            ],
            "masks": None,
        }
        for i in range(n)
    ]
    table = pa.table(
        {
            "n": pa.array(range(n), pa.int64()),
            "name": pa.array([f"name{i}" if i % 5 else None for i in range(n)]),
            "img": pa.array(images, type=IMAGE),
        }
    )
    return table.replace_schema_metadata(OME_META)


@pytest.fixture
def table() -> pa.Table:
    return make_table()


@pytest.fixture
def vfile(tmp_path: Path, table: pa.Table) -> Path:
    path = tmp_path / "t.vortex"
    write_vortex_table(table, path)
    return path


def test_round_trip_types_and_values(vfile: Path, table: pa.Table) -> None:
    read = read_vortex_table(vfile)
    assert read.schema.equals(table.schema, check_metadata=True)
    assert read.schema.field("name").type == pa.string()
    assert read.schema.field("img").type == IMAGE
    assert read.schema.field("img").type.field("chunks").type.value_type.field(
        "pixel_bytes"
    ).type == pa.large_binary()
    assert read.equals(table)
    assert read.column("img")[4].as_py() == table.column("img")[4].as_py()
    assert read.column("img")[5]["chunks"][1]["pixel_bytes"].as_py() == b"\x05\x01" * 2


def test_null_typed_struct_field_survives(vfile: Path) -> None:
    read = read_vortex_table(vfile, columns=["img"])
    masks = read.column("img").combine_chunks().field("masks")
    assert masks.type == pa.null()
    assert masks.null_count == len(masks) == 12


def test_schema_is_original_and_metadata_round_trips(
    tmp_path: Path, table: pa.Table
) -> None:
    path = tmp_path / "m.vortex"
    extra = {"omeframe.note": "hello", "ome.arrow.version": "9"}
    write_vortex_table(table, path, metadata=extra)
    schema = read_vortex_schema(path)
    expected_meta = {**OME_META, b"omeframe.note": b"hello", b"ome.arrow.version": b"9"}
    assert schema.metadata == expected_meta
    assert schema.names == ["n", "name", "img"]
    assert [f.type for f in schema] == [pa.int64(), pa.string(), IMAGE]
    read = read_vortex_table(path, columns=["name"], rows=[1])
    assert read.schema.metadata == expected_meta
    # metadata passed only as the keyword, on a table without schema metadata
    bare = tmp_path / "bare.vortex"
    write_vortex_table(table.replace_schema_metadata(None), bare, metadata={"k": "v"})
    assert read_vortex_schema(bare).metadata == {b"k": b"v"}


def test_schema_and_num_rows_do_not_scan(
    vfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was read")

    monkeypatch.setattr(vortex.file.VortexFile, "to_arrow", boom)
    monkeypatch.setattr(vortex.file.VortexFile, "scan", boom)
    monkeypatch.setattr(vortex.file.VortexFile, "to_repeated_scan", boom)
    assert vortex_num_rows(vfile) == 12
    assert read_vortex_schema(vfile).names == ["n", "name", "img"]
    with pytest.raises(AssertionError, match="data was read"):
        read_vortex_table(vfile)


def test_column_projection(vfile: Path, table: pa.Table) -> None:
    read = read_vortex_table(vfile, columns=["img", "n"])
    assert read.column_names == ["img", "n"]
    assert read.equals(table.select(["img", "n"]))
    assert read.schema.field("img").type == IMAGE
    none = read_vortex_table(vfile, columns=[])
    assert none.num_columns == 0 and none.num_rows == 12
    with pytest.raises(KeyError, match="nope"):
        read_vortex_table(vfile, columns=["n", "nope"])


def test_row_take_in_given_order(vfile: Path, table: pa.Table) -> None:
    rows = [7, 2, 7, 0, 11]
    read = read_vortex_table(vfile, rows=rows)
    assert read["n"].to_pylist() == rows
    assert read.equals(table.take(rows))
    assert read.schema.equals(table.schema, check_metadata=True)
    one = read_vortex_table(vfile, columns=["img"], rows=[5])
    assert one.column("img").to_pylist() == [table.column("img")[5].as_py()]
    empty = read_vortex_table(vfile, columns=["name", "img"], rows=[])
    assert empty.num_rows == 0
    expected = table.select(["name", "img"]).schema
    assert empty.schema.equals(expected, check_metadata=True)


def test_row_take_across_8192_row_blocks(tmp_path: Path) -> None:
    n = 9000
    strings = pa.array([f"s{i}" for i in range(n)])
    big = pa.table({"n": pa.array(range(n)), "s": strings})
    path = tmp_path / "big.vortex"
    write_vortex_table(big, path)
    rows = [8999, 0, 8192, 8191, 4000]
    read = read_vortex_table(path, rows=rows)
    assert read["n"].to_pylist() == rows
    assert read["s"].to_pylist() == [f"s{i}" for i in rows]
    assert read.schema.field("s").type == pa.string()


def test_sliced_nested_structs_are_written(tmp_path: Path) -> None:
    # vortex-data 0.93 panics on a sliced struct<struct<...>> in a written batch; the
    # writer hands it over at offset 0
    n = 1000
    inner = pa.StructArray.from_arrays([pa.array(range(n), pa.int32())], ["x"])
    outer = pa.StructArray.from_arrays([inner], ["inner"])
    table = pa.Table.from_batches([pa.RecordBatch.from_arrays([outer.slice(a, 400)], ["a"]) for a in range(0, n, 400)])
    write_vortex_table(table, tmp_path / "t.vortex")
    assert read_vortex_table(tmp_path / "t.vortex").column("a").combine_chunks().equals(outer)


def test_record_table_with_features_chunked_otherwise(tmp_path: Path) -> None:
    # features read from Parquet come in chunks of their own; the record column stays whole
    import numpy as np

    import omeframe as of

    n = 1000
    crops = (np.arange(n * 12) % 251).astype(np.uint8).reshape(n, 3, 2, 2)
    feats = pa.Table.from_batches(pa.table({"id": range(n), "w": [f"w{i % 7}" for i in range(n)]}).to_batches(300))
    assert feats.column("id").num_chunks == 4
    for fmt in ("vortex", "parquet"):
        path = tmp_path / f"crops.{fmt}"
        of.write_table(path, crops, dim_order="CYX", columns=feats)
        back = of.read_table(path)
        assert back.column("id").to_pylist() == list(range(n)) and back.column("w").equals(feats.column("w"))
        assert np.array_equal(of.to_numpy_stack(back.column(0)), crops)


@pytest.mark.parametrize(
    "rows",
    [[5], [5, 6, 7], [8190, 8191], [8191, 8192], list(range(8192, 8192 + 300)), list(range(2000, 0, -1)),
     [3, 3, 4], [8999], list(range(100, 4200))],
)
def test_row_takes_of_runs_return_exactly_the_rows_asked(tmp_path: Path, rows: list[int]) -> None:
    # a run of rows gets a neighbour read with it (vortex gathers instead of decoding
    # the whole block); the result holds the rows asked for, in their order, checked
    import numpy as np

    import omeframe as of

    n = 9000
    crops = (np.arange(n * 12, dtype=np.uint32) * 2654435761 % 251).astype(np.uint8).reshape(n, 3, 2, 2)
    path = tmp_path / "crops.vortex"
    of.write_table(path, crops, dim_order="CYX", columns={"n": np.arange(n)})
    read = read_vortex_table(path, rows=rows)
    assert read["n"].to_pylist() == rows
    assert np.array_equal(of.to_numpy_stack(read.column(0)), crops[rows])


@pytest.mark.parametrize(
    "field, values",
    [
        (pa.field("x", pa.large_string()), ["a", None]),
        (pa.field("x", pa.binary()), [b"a", None]),
        (pa.field("x", pa.large_list(pa.int8())), [[1], None]),
        (pa.field("x", pa.int32(), nullable=False), [1, 2]),
        (pa.field("x", pa.string(), metadata={"unit": "um"}), ["a", "b"]),
    ],
)
def test_other_types_keep_their_exact_arrow_type(
    tmp_path: Path, field: pa.Field, values: list[object]
) -> None:
    t = pa.table([pa.array(values, field.type)], schema=pa.schema([field]))
    path = tmp_path / "x.vortex"
    write_vortex_table(t, path)
    read = read_vortex_table(path, rows=[1, 0])
    assert read.schema.field("x").equals(field, check_metadata=True)
    assert read["x"].to_pylist() == values[::-1]


def test_zero_row_table(tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "z.vortex"
    write_vortex_table(table.slice(0, 0), path)
    assert vortex_num_rows(path) == 0
    read = read_vortex_table(path)
    assert read.num_rows == 0
    assert read.schema.equals(table.schema, check_metadata=True)


def test_row_out_of_range(vfile: Path) -> None:
    with pytest.raises(RowIndexError, match=r"row 12 .*12 rows") as info:
        read_vortex_table(vfile, rows=[0, 12])
    assert isinstance(info.value, IndexError) and isinstance(info.value, ValueError)
    with pytest.raises(RowIndexError, match=r"row -1 .*12 rows"):
        read_vortex_table(vfile, rows=[-1])
    with pytest.raises(TypeError):
        read_vortex_table(vfile, rows=[0.5])


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.vortex"
    with pytest.raises(FileNotFoundError):
        read_vortex_table(missing)
    with pytest.raises(FileNotFoundError):
        read_vortex_schema(missing)
    with pytest.raises(FileNotFoundError):
        vortex_num_rows(missing)
    with pytest.raises(FileNotFoundError):
        vortex_dataset(missing)


def test_truncated_file(vfile: Path) -> None:
    data = vfile.read_bytes()
    vfile.write_bytes(data[: len(data) // 2])
    for fn in (read_vortex_table, read_vortex_schema, vortex_num_rows, vortex_dataset):
        with pytest.raises(CorruptFileError, match=str(vfile.name)):
            fn(vfile)
    with pytest.raises(CorruptFileError, match=str(vfile.name)):
        read_vortex_table(vfile, rows=[0])


def test_random_bytes_file(tmp_path: Path) -> None:
    path = tmp_path / "random.vortex"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CorruptFileError, match="random.vortex"):
        read_vortex_table(path)
    with pytest.raises(CorruptFileError, match="random.vortex"):
        read_vortex_table(path, rows=[0])
    empty = tmp_path / "empty.vortex"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty.vortex"):
        read_vortex_schema(empty)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_unwritable_table_leaves_existing_file(vfile: Path) -> None:
    before = vfile.read_bytes()
    names_before = _siblings(vfile)
    union = pa.UnionArray.from_sparse(
        pa.array([0, 1], pa.int8()), [pa.array([1, 2]), pa.array(["a", "b"])]
    )
    with pytest.raises(TypeError, match="'u'"):
        write_vortex_table(pa.table({"u": union}), vfile)
    with pytest.raises(ValueError, match="reserved"):
        write_vortex_table(pa.table({SCHEMA_COLUMN_PREFIX + "x": [1]}), vfile)
    assert vfile.read_bytes() == before
    assert _siblings(vfile) == names_before


def test_failure_inside_write_leaves_existing_file(
    vfile: Path, table: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = vfile.read_bytes()
    names_before = _siblings(vfile)
    from omeframe.formats.vortex import file as vortex_file

    real_options = vortex_file.vortex_write_options

    class HalfThenFail:
        def __init__(self, real: object) -> None:
            self.real = real

        def write(self, data: object, path: str) -> None:
            self.real.write(data, path)  # type: ignore[attr-defined]  # a complete temp file exists ...
            Path(path).write_bytes(b"partial")  # ... is damaged ...
            raise RuntimeError("disk full")  # ... and the write fails

    monkeypatch.setattr(vortex_file, "vortex_write_options", lambda vx, codec: HalfThenFail(real_options(vx, codec)))
    with pytest.raises(RuntimeError, match="disk full"):
        write_vortex_table(table.slice(0, 3), vfile)
    assert vfile.read_bytes() == before
    assert _siblings(vfile) == names_before
    assert read_vortex_table(vfile).equals(table)


def test_overwrite_replaces_file(vfile: Path, table: pa.Table) -> None:
    write_vortex_table(table.slice(0, 3), vfile)
    assert vortex_num_rows(vfile) == 3
    assert read_vortex_table(vfile).equals(table.slice(0, 3))


def test_foreign_vortex_file_gets_plain_types(tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "plain.vortex"
    vortex.io.write(table, str(path))  # no stored schema
    schema = read_vortex_schema(path)
    assert schema.metadata is None  # vortex itself drops schema metadata
    assert schema.field("name").type == pa.string()
    chunk = schema.field("img").type.field("chunks").type.value_type
    pixel = chunk.field("pixel_bytes")
    assert pixel.type == pa.binary()  # large_binary is not recoverable
    read = read_vortex_table(path, rows=[3])
    assert read["n"].to_pylist() == [3]
    assert read.schema.field("img").type.field("masks").type == pa.null()


def test_dataset_reports_view_types_and_pushes_filters(vfile: Path) -> None:
    ds = vortex_dataset(vfile)
    assert ds.schema.field("name").type == pa.string_view()
    assert ds.schema.names[:3] == ["n", "name", "img"]
    assert ds.schema.names[3].startswith(SCHEMA_COLUMN_PREFIX)
    got = ds.to_table(columns=["n", "name"], filter=pc.field("n") >= 9)
    assert got.column_names == ["n", "name"]
    assert got["n"].to_pylist() == [9, 10, 11]
    assert got["name"].to_pylist() == ["name9", None, "name11"]


def test_batches_are_recut_into_whole_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # vortex writes batches that end inside a block ~4x slower: they reach it as whole blocks
    from omeframe.formats.vortex import file as vfile

    monkeypatch.setattr(vfile, "BLOCK_ROWS", 4)
    monkeypatch.setattr(vfile, "MAX_BATCH_ROWS", 8)
    sizes = [3, 0, 6, 8, 5, 13, 1]
    start = 0
    batches = []
    for k in sizes:
        batches.append(pa.record_batch({"n": pa.array(range(start, start + k), pa.int64())}))
        start += k
    out = list(vfile._in_blocks(batches))
    assert [b.num_rows for b in out] == [8, 8, 4, 8, 4, 4]  # whole blocks of 4 rows, at most 8 rows per batch
    assert pa.Table.from_batches(out)["n"].to_pylist() == list(range(start))
    aligned = [pa.record_batch({"n": pa.array(range(12), pa.int64())})]
    assert list(vfile._in_blocks(aligned))[0] is aligned[0]  # whole blocks pass unchanged
    assert all(c.offset == 0 for b in out for c in b.columns)


def test_record_table_streamed_in_odd_batches_reads_back(tmp_path: Path) -> None:
    import numpy as np

    import omeframe as of

    rng = np.random.default_rng(5)
    crops = rng.integers(0, 255, (20_000, 2, 3, 3), dtype=np.uint8)
    cuts = [0, 7000, 7001, 15_000, 20_000]  # batches of 7000, 1, 7999 and 5000 rows
    path = tmp_path / "odd.vortex"
    of.write_table(path, (crops[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)), dim_order="CYX")
    assert np.array_equal(of.open_table(path).to_numpy(), crops)  # every row's CRC checked on the way


def _cells(n: int, size: int, seed: int) -> np.ndarray:
    """Tiny crops of blobs plus noise (stored raw: the pixel column is Vortex's to compress)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0, size, (2, n, 1, 1, 1))
    blob = 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / size) * rng.uniform(0.3, 1, (n, 3, 1, 1))
    return np.clip(blob + rng.normal(10, 3, (n, 3, size, size)), 0, 255).astype(np.uint8)


def test_vortex_compression_chooses_the_encodings(tmp_path: Path) -> None:
    # "zstd" writes with Vortex's compact encodings: a smaller file of the same pixels;
    # None and "auto" (write_table's default) keep Vortex's default encodings
    import numpy as np

    import omeframe as of

    crops = _cells(20_000, 12, seed=3)
    sizes = {}
    for codec in ("zstd", None):
        path = tmp_path / f"{codec}.vortex"
        of.write_table(path, crops, dim_order="CYX", columns={"n": np.arange(len(crops))}, compression=codec)
        sizes[codec] = path.stat().st_size
        table = of.open_table(path)
        assert np.array_equal(table.to_numpy(), crops)
        assert np.array_equal(table.to_numpy([19_999, 5, 8192]), crops[[19_999, 5, 8192]])
    assert sizes["zstd"] < 0.95 * sizes[None], sizes
    default = tmp_path / "default.vortex"
    of.write_table(default, crops, dim_order="CYX", columns={"n": np.arange(len(crops))})
    assert default.stat().st_size == sizes[None]


@pytest.mark.parametrize("codec", ["snappy", "gzip", "lz4"])
def test_vortex_refuses_a_parquet_codec(tmp_path: Path, codec: str) -> None:
    import numpy as np

    import omeframe as of

    path = tmp_path / "t.vortex"
    with pytest.raises(ValueError, match="compression='auto' or None.*or 'zstd'"):
        of.write_table(path, np.zeros((4, 2, 2), np.uint8), dim_order="YX", compression=codec)
    assert not path.exists()
    of.write_table(tmp_path / "t.parquet", np.zeros((4, 2, 2), np.uint8), dim_order="YX", compression=codec)
