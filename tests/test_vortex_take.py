"""Sparse takes from local Vortex files go through their lazily scanned columns, leaf by leaf."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

pytest.importorskip("vortex")

import omeframe as of  # noqa: E402
from omeframe.engine.cache import DEFAULT_CACHE_BYTES, shared_cache  # noqa: E402
from omeframe.formats.record.vortex_pixels import take_vortex_stack  # noqa: E402
from omeframe.formats.vortex import file as vfile  # noqa: E402
from omeframe.formats.vortex import take as vtake  # noqa: E402
from vortex_damage import write_flipped  # noqa: E402

N = 36_000  # five splits of up to 8,192 rows
SPARSE = np.array([35_999, 5, 8_200, 77, 16_400, 5, 12_345, 30_000])  # unsorted, one repeat, every split


@pytest.fixture(autouse=True)
def no_kept_splits() -> None:
    """Keep decoded splits out of the way: these tests are about the lazy takes."""
    of.set_cache_bytes(0)
    shared_cache().clear()
    yield
    of.set_cache_bytes(DEFAULT_CACHE_BYTES)


def crops(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 3, 2, 2), dtype=np.uint8)


def mixed_table(n: int = N) -> pa.Table:
    """Every kind of leaf: constants, values that change between splits, nulls, NaN, nested structs, lists."""
    rng = np.random.default_rng(1)
    idx = np.arange(n)
    point = pa.StructArray.from_arrays(
        [pa.array(idx % 7, pa.int16()), pa.array(["p"] * n)],
        names=["k", "tag"],
        mask=pa.array(idx % 5 == 0),
    )
    return pa.table({
        "same": pa.array(np.full(n, 3, np.int32)),
        "split_const": pa.array((idx >= 8192).astype(np.int64)),  # constant within each split only
        "nan": pa.array(np.full(n, np.nan)),
        "zero": pa.array(np.where(idx >= 8192, -0.0, 0.0)),  # equal as numbers, not bit for bit
        "f": pa.array(rng.random(n).astype(np.float32)),
        "s": pa.array([f"cell-{i}" if i % 3 else None for i in range(n)]),
        "point": point,
        "tags": pa.array([[str(i % 4)] * (i % 3) for i in range(n)], pa.list_(pa.string())),
        "blob": pa.array([bytes([i % 251]) * (i % 9) for i in range(n)], pa.binary()),
        # 800 random bytes a row: enough bytes for vortex to cut the file into splits of 8,192 rows
        "payload": pa.array(list(rng.integers(0, 256, (n, 800), dtype=np.uint8)), pa.list_(pa.uint8())),
    })


def test_worth_taking_sparse_rows_of_several_splits() -> None:
    bounds = np.array([[0, 8192], [8192, 16384], [16384, 24576], [24576, 32768], [32768, 36000]])
    assert vtake.worth_taking(np.array([5, 9000, 17000, 25000]), bounds)
    assert not vtake.worth_taking(np.array([5, 9000, 17000]), bounds)  # three splits: the indices scan
    assert not vtake.worth_taking(np.array([5, 6, 7]), bounds)
    assert not vtake.worth_taking(np.arange(0, 36000, 2), bounds)  # ~3,600 rows per split
    assert vtake.worth_taking(np.arange(0, 36000, 40), bounds)
    assert not vtake.worth_taking(np.array([], dtype=np.int64), bounds)
    assert not vtake.worth_taking(np.array([1, 9000, 17000, 25000]), bounds[:3])


def test_sparse_takes_equal_a_full_read_taken(tmp_path: Path) -> None:
    table = mixed_table()
    path = tmp_path / "mixed.vortex"
    vfile.write_vortex_table(table, path)
    lazy = vtake.lazy_file(str(path))
    assert len(lazy.bounds) == 5
    whole = vfile.read_vortex_table(path)
    first = vfile.read_vortex_table(path, rows=SPARSE)
    assert not lazy._leaves  # a file's first sparse take goes through the indices scan
    got = vfile.read_vortex_table(path, rows=SPARSE)
    assert got.schema == whole.schema
    others = [c for c in whole.column_names if c != "nan"]  # NaN != NaN: compared apart
    assert lazy._leaves and first.select(others).equals(got.select(others))
    assert got.select(others).to_pylist() == whole.select(others).take(pa.array(SPARSE)).to_pylist()
    assert len(got) == len(SPARSE) and np.isnan(got["nan"].to_numpy()).all()
    assert got["point"].null_count == int((SPARSE % 5 == 0).sum())
    # one leaf per field taken, and a constant taken by repeating its value
    assert lazy._leaves[("same",)].constant is not None
    assert lazy._leaves[("split_const",)].constant is None
    assert lazy._leaves[("zero",)].constant is None
    assert np.signbit(got["zero"].to_numpy()).tolist() == (SPARSE >= 8192).tolist()
    # the same rows again (through the kept leaves), and a selection of columns
    cols = ["tags", "point"]
    again = vfile.read_vortex_table(path, columns=cols, rows=SPARSE)
    assert again.to_pylist() == whole.select(cols).take(pa.array(SPARSE)).to_pylist()


def test_two_threads_take_the_same_rows(tmp_path: Path, monkeypatch) -> None:
    table = mixed_table()
    path = tmp_path / "mixed.vortex"
    vfile.write_vortex_table(table, path)
    rows = np.random.default_rng(2).choice(N, 300, replace=False)
    lazy = vtake.lazy_file(str(path))
    fields = [table.schema.field(c) for c in ("s", "point", "tags", "blob")]
    uniq = np.unique(rows)
    monkeypatch.setattr(vtake, "PARALLEL_ROWS", 10**9)
    one = lazy.take(fields, uniq)
    monkeypatch.setattr(vtake, "PARALLEL_ROWS", 2)
    two = lazy.take(fields, uniq)
    assert [a.to_pylist() for a in one] == [b.to_pylist() for b in two]
    assert two[0].to_pylist() == table["s"].take(pa.array(uniq)).to_pylist()


def test_images_of_a_sparse_take_and_their_order(tmp_path: Path) -> None:
    stack = crops()
    path = tmp_path / "crops.vortex"
    of.write_table(path, stack, dim_order="CYX")
    t = of.ImageTable(path)
    rows = SPARSE[np.sort(np.unique(SPARSE, return_index=True)[1])]  # no repeats, unsorted
    assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert np.array_equal(t.to_numpy(rows, dims="YXC"), stack[rows].transpose(0, 2, 3, 1))
    # take_vortex_stack: pixel fields only; crops of one layout decode their frames in the order asked for
    out6, order = take_vortex_stack(path, t.column, rows)
    assert out6.shape == (len(rows), 1, 3, 1, 2, 2) and np.array_equal(out6[:, 0, :, 0], stack[rows])
    assert order is None
    pruned = vtake.lazy_file(str(path)).memo[("pixels", t.column)][0]
    assert [f.name for f in pruned.type] == ["pixels_meta", "chunk_grid", "chunks"]
    assert "channels" not in [f.name for f in pruned.type.field("pixels_meta").type]
    # rows of one split go by their pixel fields too (a loader's batch of consecutive rows) ...
    one_split = take_vortex_stack(path, t.column, np.arange(100, 200))
    assert one_split is not None and np.array_equal(one_split[0][:, 0, :, 0], stack[100:200])
    assert take_vortex_stack(path, t.column, np.arange(100, 2_000)) is None  # ... unless dense in it
    assert vtake.lazy_file(str(path))._leaves[("ome_arrow", "chunks")].pattern is not None
    whole = of.read_table(path, rows=rows)
    assert whole.column_names == ["ome_arrow"]
    assert np.array_equal(of.to_numpy_stack(whole["ome_arrow"]), stack[rows])


def test_batches_within_one_split_are_counted_and_then_gather_payloads(tmp_path: Path, monkeypatch) -> None:
    """A loader's batches of consecutive rows, each within one split (too large to keep decoded): the
    file's first batch reads its rows in full and counts as its first sparse take, and the next batches
    gather their payloads alone."""
    stack = crops()
    path = tmp_path / "crops.vortex"
    of.write_table(path, stack, dim_order="CYX")
    t = of.ImageTable(path)
    gathered: list[int] = []
    real = vtake.LazyFile.take_payloads

    def spy(self, fields, rows):
        gathered.append(len(rows))
        return real(self, fields, rows)

    monkeypatch.setattr(vtake.LazyFile, "take_payloads", spy)
    for lo in (0, 256, 512, 8_192 - 100):  # the last one reaches into the second split
        assert np.array_equal(t.to_numpy(np.arange(lo, lo + 256)), stack[lo : lo + 256])
    assert vtake.lazy_file(str(path))._sparse_takes == 4  # each counted once
    assert gathered == [256, 256, 256]


def _items(n: int, *, odd_row: int | None = None, null_element_row: int | None = None) -> pa.Array:
    """Three elements a row, the same but for their bytes (one row may differ or hold a null element)."""
    rng = np.random.default_rng(3)
    keys = np.tile(np.array([0, 1, 2], np.int16), n)
    if odd_row is not None:
        keys[3 * odd_row + 1] = 7
    element = pa.StructArray.from_arrays(
        [
            pa.array(keys),
            pa.array(["a", None, "c"] * n),
            pa.array(np.tile(np.array([0.5, -0.0, np.nan], np.float32), n)),
            pa.array(list(rng.integers(0, 256, (3 * n, 100), dtype=np.uint8).view("S100").ravel())),
        ],
        names=["k", "name", "f", "data"],
        mask=None if null_element_row is None else pa.array(np.arange(3 * n) == 3 * null_element_row),
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * 3), element)


def _same_items(got: pa.ChunkedArray, expected: pa.ChunkedArray) -> bool:
    """Bit for bit: -0.0 stays negative, NaN stays NaN (which ``equals`` would call different)."""
    a, b = (pc.list_flatten(x).combine_chunks() for x in (got, expected))
    bits = [x.field("f").to_numpy(zero_copy_only=False).view(np.uint32).tolist() for x in (a, b)]
    same = all(a.field(f).equals(b.field(f)) for f in ("k", "name", "data"))
    offsets = [pc.list_value_length(x).combine_chunks() for x in (got, expected)]
    return same and a.is_null().equals(b.is_null()) and bits[0] == bits[1] and offsets[0].equals(offsets[1])


def test_a_list_field_of_one_pattern_is_taken_through_its_bytes(tmp_path: Path) -> None:
    table = pa.table({
        "items": _items(N),
        "odd": _items(N, odd_row=30_000),  # one row in the last splits differs
        "hole": _items(N, null_element_row=20_000),
    })
    path = tmp_path / "items.vortex"
    vfile.write_vortex_table(table, path)
    rows = np.unique(SPARSE)
    expected = table.take(pa.array(rows))
    vfile.read_vortex_table(path, rows=rows)  # the first sparse take: indices scan
    got = vfile.read_vortex_table(path, rows=rows)
    lazy = vtake.lazy_file(str(path))
    items, odd, hole = (lazy._leaves[(c,)].pattern for c in table.column_names)
    assert items is not None and not items.broken  # taken through its bytes alone
    assert odd.broken and hole.broken  # the splits of rows 30,000 and 20,000 were touched
    for name in table.column_names:
        assert _same_items(got[name], expected[name])
    assert got["odd"].to_pylist()[-2][1]["k"] == 7  # row 30,000 kept its own key
    # the repeated elements come from the file: every row of a split touched is checked
    assert items.small.field("name").to_pylist() == ["a", None, "c"]


def test_a_pattern_is_checked_in_the_splits_a_take_touches(tmp_path: Path) -> None:
    table = pa.table({"odd": _items(N, odd_row=30_000)})  # in the fourth split of five
    path = tmp_path / "odd.vortex"
    vfile.write_vortex_table(table, path)
    early = np.array([5, 8_200, 8_300, 16_400, 20_000, 33_000])  # every split but the fourth
    vfile.read_vortex_table(path, rows=early)  # the first sparse take: indices scan
    assert _same_items(vfile.read_vortex_table(path, rows=early)["odd"], table.take(pa.array(early))["odd"])
    lazy = vtake.lazy_file(str(path))
    pattern = lazy._leaves[("odd",)].pattern
    assert not pattern.broken and pattern._checked.tolist() == [True, True, True, False, True]
    late = np.array([5, 8_200, 16_400, 29_999, 30_000, 35_999])
    got = vfile.read_vortex_table(path, rows=late)
    assert pattern.broken and _same_items(got["odd"], table.take(pa.array(late))["odd"])
    assert got["odd"].to_pylist()[4][1]["k"] == 7
    again = vfile.read_vortex_table(path, rows=early)["odd"]  # through the whole leaf now
    assert _same_items(again, table.take(pa.array(early))["odd"])


def test_a_list_of_fields_asked_for_again_reuses_its_plan(tmp_path: Path, monkeypatch) -> None:
    table = pa.table({"x": np.arange(N), "items": _items(N)})
    path = tmp_path / "plan.vortex"
    vfile.write_vortex_table(table, path)
    lazy = vtake.lazy_file(str(path))
    fields = list(table.schema)
    planned = []
    real = vtake._plan
    monkeypatch.setattr(vtake, "_plan", lambda f, p: planned.append(p) or real(f, p))
    rows = np.unique(SPARSE)
    for _ in range(3):
        got = lazy.take(fields, rows)
        assert got[0].to_pylist() == rows.tolist() and _same_items(
            pa.chunked_array([got[1]]), table.take(pa.array(rows))["items"]
        )
    assert planned == [("x",), ("items",)]  # planned by the first take only
    lazy.take(list(fields), rows)  # another list (its own plan, however equal)
    assert len(planned) == 4


def test_a_table_with_two_record_columns_is_read_in_full(tmp_path: Path) -> None:
    stack, other = crops(), crops(seed=5)
    path = tmp_path / "two.vortex"
    table = pa.table({
        "a": of.records_from_arrays(stack, dim_order="CYX"),
        "b": of.records_from_arrays(other, dim_order="CYX"),
    })
    vfile.write_vortex_table(table, path)
    assert take_vortex_stack(path, "a", SPARSE) is None  # their CRCs cover both columns
    t = of.ImageTable(path, column="b")
    rows = np.array([35_000, 3, 9_000, 17_000, 26_000])
    for _ in range(2):
        assert np.array_equal(t.to_numpy(rows), other[rows])


def test_a_damaged_row_fails_a_sparse_take(tmp_path: Path) -> None:
    stack = crops()
    path = tmp_path / "damaged.vortex"
    write_flipped(path, stack, row=8_200, chunk=1, mask=4)
    t = of.ImageTable(path)
    clean = np.array([5, 9_000, 17_000, 26_000, 34_000])
    for _ in range(2):  # the second take goes through the lazy columns
        assert np.array_equal(t.to_numpy(clean), stack[clean])
    assert vtake.lazy_file(str(path))._leaves
    for read in (lambda r: t.to_numpy(r), lambda r: of.read_table(path, rows=r)):
        with pytest.raises(of.ChunkChecksumError, match=r"rows 8200\b"):
            read(np.array([34_000, 17_000, 8_200, 26_000, 5]))


@pytest.mark.parametrize("encode", [{}, {"chunk_shape": (1, 1, 2), "chunk_compression": "zstd"}])
def test_crops_of_one_layout_are_taken_by_their_payloads_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encode: dict
) -> None:
    """Once one record has shown a table's layout, a take gathers the rows' payloads and CRCs alone: no
    record is assembled, on one thread or two, for raw planes and for zstd tiles (scattered into place)."""
    stack = crops()
    path = tmp_path / "crops.vortex"
    of.write_table(path, stack, dim_order="CYX", **encode)
    t = of.ImageTable(path)
    rows = np.array([35_999, 5, 8_200, 77, 16_400, 12_345, 30_000])
    for _ in range(2):  # the second sparse take goes through the lazy columns and works out the layout
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    layout = vtake.lazy_file(str(path)).memo[("layout", t.column)]
    assert (len(layout.keys), layout.codec) == ((6, "zstd") if encode else (3, None))

    def assembled(*args: object, **kwargs: object) -> None:
        raise AssertionError("a take assembled records")

    monkeypatch.setattr(vfile, "_take_records", assembled)
    monkeypatch.setattr(vtake.LazyFile, "take", assembled)
    for parallel in (10**9, 2):
        monkeypatch.setattr(vtake, "PARALLEL_ROWS", parallel)
        assert np.array_equal(t.to_numpy(rows), stack[rows])
        assert np.array_equal(t.to_numpy(rows[:4], dims="YXC"), stack[rows[:4]].transpose(0, 2, 3, 1))


def test_records_without_a_fast_layout_are_taken_as_records_without_gathering_payloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lz4 chunks repeat one pattern too, but the stack's fast path decodes raw and zstd chunks only: once
    one record has shown that, takes read records and gather no payloads they would throw away."""
    stack = crops()
    path = tmp_path / "lz4.vortex"
    of.write_table(path, stack, dim_order="CYX", chunk_compression="lz4")
    t = of.ImageTable(path)
    rows = np.array([35_999, 5, 8_200, 16_400, 30_000])
    for _ in range(2):
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert vtake.lazy_file(str(path)).memo[("layout", t.column)] is None

    def gathered(*args: object, **kwargs: object) -> None:
        raise AssertionError("payloads gathered")

    monkeypatch.setattr(vtake.LazyFile, "take_payloads", gathered)
    assert np.array_equal(t.to_numpy(rows[::-1]), stack[rows[::-1]])


def test_rows_that_reach_another_layout_are_read_as_records(tmp_path: Path) -> None:
    """Raw chunks in the first four splits, zstd chunks after: takes within the first splits go by their
    payloads until a take reaches a split that breaks the pattern; from then on every take reads records,
    and every take returns the right pixels."""
    stack = crops()
    raw = of.records_from_arrays(stack[:32_768], dim_order="CYX", chunk_compression=None)
    packed = of.records_from_arrays(stack[32_768:], dim_order="CYX", chunk_compression="zstd")
    path = tmp_path / "two_codecs.vortex"
    vfile.write_vortex_table(pa.table({"ome_arrow": pa.concat_arrays([raw, packed])}), path)
    t = of.ImageTable(path)
    early, late = np.array([5, 8_300, 17_000, 25_000]), np.array([20, 9_000, 33_000, 35_000])
    for _ in range(2):
        assert np.array_equal(t.to_numpy(early), stack[early])
    lazy = vtake.lazy_file(str(path))
    pattern = lazy._leaves[("ome_arrow", "chunks")].pattern
    assert pattern is not None and not pattern.broken and lazy.memo[("layout", "ome_arrow")].codec is None
    for rows in (np.concatenate([early, late]), late, early):
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert pattern.broken


def test_a_raw_payload_of_the_wrong_length_is_named_by_its_row(tmp_path: Path) -> None:
    """A payload one byte short, stored with the CRC of the bytes it holds (its writer's mistake, not damage
    on disk): the take decodes nothing of it and names the file's row and the chunk."""
    stack = crops()
    recs = of.records_from_arrays(stack, dim_order="CYX", chunk_compression=None)
    items = recs.to_pylist()
    items[8_200]["chunks"][1]["pixel_bytes"] = items[8_200]["chunks"][1]["pixel_bytes"][:-1]
    path = tmp_path / "short.vortex"
    vfile.write_vortex_table(pa.table({"ome_arrow": pa.array(items, type=recs.type)}), path)
    t = of.ImageTable(path)
    clean = np.array([5, 9_000, 17_000, 26_000, 34_000])
    for _ in range(2):
        assert np.array_equal(t.to_numpy(clean), stack[clean])
    with pytest.raises(of.PixelPayloadError, match=r"short\.vortex.*row 8200 chunk 1 holds 3 raw bytes, expected 4"):
        t.to_numpy(np.array([34_000, 17_000, 8_200, 26_000, 5]))


def test_a_file_replaced_under_its_name_is_taken_anew(tmp_path: Path) -> None:
    path = tmp_path / "crops.vortex"
    first, second = crops(seed=1), crops(seed=2)
    of.write_table(path, first, dim_order="CYX")
    rows = np.array([3, 9_000, 18_000, 27_000])
    for _ in range(2):
        assert np.array_equal(of.ImageTable(path).to_numpy(rows), first[rows])
    of.write_table(path, second, dim_order="CYX")
    for _ in range(2):
        assert np.array_equal(of.ImageTable(path).to_numpy(rows), second[rows])
    assert vtake.lazy_file(str(path))._leaves


def test_only_a_few_files_stay_open(tmp_path: Path) -> None:
    paths = []
    for i in range(vtake.MAX_FILES + 2):
        p = tmp_path / f"t{i}.vortex"
        vfile.write_vortex_table(pa.table({"x": np.arange(10)}), p)
        paths.append(str(p))
        vtake.lazy_file(str(p))
    open_paths = {key[0] for key in vtake._FILES}
    assert len(vtake._FILES) <= vtake.MAX_FILES
    assert str(Path(paths[-1]).resolve()) in open_paths and str(Path(paths[0]).resolve()) not in open_paths


def test_compact_files_take_through_the_indices_scan(tmp_path: Path) -> None:
    stack = crops()
    path = tmp_path / "compact.vortex"
    of.write_table(path, stack, dim_order="CYX", compression="ZSTD", columns={"k": np.arange(N)})
    hidden = str(vtake.lazy_file(str(path)).file.dtype.names()[-1])
    assert vfile._compact(hidden)
    assert vfile.ENCODINGS_KEY not in (vfile.read_vortex_schema(path).metadata or {})  # not the user's metadata
    rows = np.array([35_000, 3, 9_000, 17_000, 26_000])
    for _ in range(2):
        assert take_vortex_stack(path, "ome_arrow", rows) is None
        assert np.array_equal(of.ImageTable(path).to_numpy(rows), stack[rows])
        assert of.read_table(path, rows=rows)["k"].to_pylist() == rows.tolist()
    assert not vtake.lazy_file(str(path))._leaves  # nothing scanned lazily
    plain = tmp_path / "plain.vortex"
    of.write_table(plain, stack[:10], dim_order="CYX")
    assert not vfile._compact(str(vtake.lazy_file(str(plain)).file.dtype.names()[-1]))


def test_a_forked_child_opens_its_own_files(tmp_path: Path) -> None:
    stack = crops()
    path = tmp_path / "crops.vortex"
    of.write_table(path, stack, dim_order="CYX")
    rows = np.array([35_000, 3, 9_000, 17_000, 26_000])
    for _ in range(2):
        assert np.array_equal(of.ImageTable(path).to_numpy(rows), stack[rows])
    parent = vtake.lazy_file(str(path))
    assert parent._leaves
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh cache, its own open file, the same pixels
        ok = not vtake._FILES and vtake.lazy_file(str(path)) is not parent
        ok = ok and all(np.array_equal(of.ImageTable(path).to_numpy(rows), stack[rows]) for _ in range(2))
        ok = ok and bool(vtake.lazy_file(str(path))._leaves)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert vtake.lazy_file(str(path)) is parent


class _Const:
    """Stands for a vortex chunk stored as one constant (what ``_constant`` reads of it)."""

    id = "vortex.constant"

    def __init__(self, value: object) -> None:
        self.value = value

    def scalar_at(self, i: int) -> _Const:
        return self

    def as_py(self) -> object:
        return self.value


class _Chunks:
    def __init__(self, *values: object) -> None:
        self._chunks = [_Const(v) for v in values]

    def chunks(self) -> list[_Const]:
        return self._chunks


def test_a_leaf_is_one_constant_only_when_every_chunk_holds_it_bit_for_bit() -> None:
    assert vtake._constant(_Chunks(3, 3), pa.int32()).to_pylist() == [3]
    assert vtake._constant(_Chunks(3, 4), pa.int32()) is None
    assert vtake._constant(_Chunks(0.0, -0.0), pa.float64()) is None  # equal numbers, different bits
    assert np.isnan(vtake._constant(_Chunks(np.nan, np.nan), pa.float32()).to_numpy()).all()
    assert vtake._constant(_Chunks(None, None), pa.string()).to_pylist() == [None]
    assert vtake._constant(_Chunks(1, True), pa.int64()) is None  # True == 1, but not the same value
    assert vtake._constant(_Chunks([1], [1]), pa.list_(pa.int8())) is None  # lists are taken as stored


def test_records_of_list_encoded_chunks_are_read_in_full(tmp_path: Path) -> None:
    stack = crops()
    path = tmp_path / "lists.vortex"
    of.write_table(path, stack, dim_order="CYX", chunk_encoding="list")
    rows = np.array([35_000, 3, 9_000, 17_000, 26_000])
    t = of.ImageTable(path)
    for _ in range(2):  # warm, and still no pruned read: only the bytes variant is pruned
        assert np.array_equal(t.to_numpy(rows), stack[rows])
    assert take_vortex_stack(path, "ome_arrow", rows) is None


def _panic() -> BaseException:
    """An exception of the type pyo3 raises for a Rust panic: ``pyo3_runtime.PanicException``, a BaseException."""
    kind = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})
    return kind("range end index 306024 out of range for slice of length 284384\nBacktrace: ...")


def test_a_panic_inside_vortex_is_a_corrupt_file_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vortex-data panics on some damaged files instead of returning an error; pyo3 hands the panic over
    as a BaseException that ``except Exception`` misses. Every read of omeframe's names the file instead:
    full reads and dense takes (the scan), sparse takes (the lazy columns) and the pixel fields alone."""
    stack = crops()
    path = tmp_path / "t.vortex"
    of.write_table(path, stack, dim_order="CYX")
    assert vfile.is_vortex_panic(_panic()) and not vfile.is_vortex_panic(RuntimeError("x"))

    def panics(*args: object, **kwargs: object) -> None:
        raise _panic()

    with monkeypatch.context() as m:  # scans name the file
        import vortex

        m.setattr(vortex.file.VortexFile, "to_repeated_scan", panics)
        with pytest.raises(of.CorruptFileError, match=r"t\.vortex.* cannot be read: range end index"):
            next(vfile.scan_batches(vortex.open(str(path)), ["ome_arrow"], pa.schema([]), repr(str(path))))
    with monkeypatch.context() as m:  # full reads and dense takes go through the scan
        m.setattr(vfile, "_scan_to_arrow", panics)
        for read in (lambda: of.read_table(path), lambda: of.ImageTable(path).to_numpy(np.arange(10))):
            with pytest.raises(of.CorruptFileError, match=r"t\.vortex.* cannot be read: range end index"):
                read()
    sparse = np.array([5, 9_000, 17_000, 26_000, 34_000])
    t = of.ImageTable(path)
    for _ in range(2):  # the second sparse take goes through the lazy columns
        assert np.array_equal(t.to_numpy(sparse), stack[sparse])
    monkeypatch.setattr(vtake.LazyFile, "take_payloads", panics)  # crops of one layout: their payloads alone
    with pytest.raises(of.CorruptFileError, match="range end index"):
        t.to_numpy(sparse)
    monkeypatch.setattr(vtake.LazyFile, "take", panics)
    for read in (lambda: t.to_numpy(sparse), lambda: of.read_table(path, rows=sparse)):
        with pytest.raises(of.CorruptFileError, match="range end index"):
            read()
    interrupt = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())  # noqa: E731
    for name in ("take_payloads", "take"):  # anything else propagates as it is
        with pytest.raises(KeyboardInterrupt):
            monkeypatch.setattr(vtake.LazyFile, name, interrupt)
            t.to_numpy(sparse) if name == "take_payloads" else of.read_table(path, rows=sparse)


def test_the_scan_reads_what_the_arrow_stream_reads(tmp_path: Path) -> None:
    """_scan_to_arrow (two halves of the file on two threads) returns the rows and types vortex's
    Arrow stream returns, for every row, for rows by index and for an empty file."""
    stack = crops()
    path = tmp_path / "t.vortex"
    of.write_table(path, stack, dim_order="CYX", columns={"area": np.arange(len(stack), dtype=np.float32)})
    import vortex

    vf = vortex.open(str(path))
    names = [str(n) for n in vf.dtype.names()]
    target = of.read_table(path, rows=[0]).schema
    target = target.append(pa.field(names[-1], vf.dtype.to_arrow_schema().field(names[-1]).type))
    target = pa.schema([target.field(n) if n in target.names else pa.field(n, pa.null()) for n in names])
    picks = vortex.array(pa.array(np.array([3, 4, 8_191, 8_192, 20_000, 34_999], dtype=np.uint64)))
    for indices in (None, picks):
        got, sizes = vfile._scan_to_arrow(vf, names, indices, target, lambda batch: batch.num_rows)
        want = vf.to_arrow(names, indices=indices, schema=target).read_all()
        assert got.equals(want)
        # each batch's measure, taken where it was converted, lines up with the table's chunks
        assert sizes == [len(chunk) for chunk in got.column(0).chunks] and len(sizes) > (1 if indices is None else 0)
    import vortex.expr as ve

    from omeframe.formats.vortex.arrow_dataset import vortex_literal

    small = pa.schema([target.field("area")])
    above = ve.column("area") > vortex_literal(pa.float32(), 20_000.5)
    for options in ({"expr": above}, {"batch_size": 1000}, {"indices": picks}):
        got = pa.Table.from_batches(list(vfile.scan_batches(vf, ["area"], small, "t.vortex", **options)), small)
        want = vf.to_arrow(["area"], schema=small, **options).read_all()
        assert got.equals(want) and got.num_rows
    assert got.column("area").to_pylist() == [3.0, 4.0, 8191.0, 8192.0, 20000.0, 34999.0]  # in order
    empty = tmp_path / "e.vortex"
    vortex.io.write(pa.table({"x": pa.array([], pa.int64())}), str(empty))
    got, measured = vfile._scan_to_arrow(vortex.open(str(empty)), ["x"], None, pa.schema([("x", pa.int64())]))
    assert got.num_rows == 0 and measured == [] and got.schema == pa.schema([("x", pa.int64())])


def test_scan_batches_takes_a_chunked_conversion_apart() -> None:
    """vortex converts a chunked array (a run of splits over a column stored in other chunks, seen on a
    Polars filter of 10⁶ rows) to a ChunkedArray: each chunk becomes a batch, in order."""
    schema = pa.schema([("x", pa.float32())])
    values = pa.StructArray.from_arrays([pa.array(np.arange(5, dtype=np.float32))], fields=list(schema))

    class Converted:
        def __init__(self, lo: int, hi: int) -> None:
            self.lo, self.hi = lo, hi

        def to_arrow_array(self, arrow_type: pa.DataType) -> pa.ChunkedArray:
            assert arrow_type == pa.struct(list(schema))
            part = values.slice(self.lo, self.hi - self.lo)
            return pa.chunked_array([part.slice(0, 1), part.slice(1)])

    class File:
        def splits(self) -> list[tuple[int, int]]:
            return [(0, 2), (2, 5)]

        def __len__(self) -> int:
            return 5

        def to_repeated_scan(self, projection: list[str], **options: object) -> File:
            return self

        def execute(self, row_range: tuple[int, int]) -> list[Converted]:
            return [Converted(*row_range)]

    batches = list(vfile.scan_batches(File(), ["x"], schema, "f.vortex"))
    assert [b.num_rows for b in batches] == [1, 1, 1, 2]
    assert pa.Table.from_batches(batches).column("x").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]
