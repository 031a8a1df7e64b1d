"""Row digests: every value of a Vortex table without OME-Arrow columns is checked on read.

Vortex stores no checksums; omeframe's writer stores each row's digest of its
values (:mod:`omeframe.storage.digest`) in the hidden column, and its readers
check it: a value that changed on disk raises instead of reading back.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import omeframe as of
from omeframe.cli import main as cli_main
from omeframe.formats.vortex import file as vfile
from omeframe.storage.digest import row_digests, value_hashes

sys.path.insert(0, str(Path(__file__).parent))
from vortex_damage import write_changed  # noqa: E402


def _rich(n: int = 300) -> pa.Table:
    rng = np.random.default_rng(1)
    f = rng.random(n)
    f[::7] = np.nan
    f[3] = -0.0
    f[5] = np.inf
    return pa.table({
        "i8": pa.array(rng.integers(-100, 100, n).astype(np.int8)),
        "u64": pa.array(rng.integers(0, 2**63, n, dtype=np.uint64)),
        "f": pa.array(f),
        "f32": pa.array(f.astype(np.float32), mask=rng.random(n) < 0.1),
        "b": pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1),
        "s": pa.array([None if i % 11 == 0 else f"cell-{i}" * (i % 4) for i in range(n)]),
        "lb": pa.array([bytes([i % 256]) * (i % 5) for i in range(n)], pa.large_binary()),
        "ts": pa.array(np.arange(n).astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
        "d": pa.array(np.arange(n).astype("datetime64[D]")),
        "poly": pa.array(
            [[[[float(i), float(j)] for j in range(i % 4)]] for i in range(n)],
            pa.list_(pa.list_(pa.list_(pa.float64()))),
        ),
        "st": pa.array([{"a": i, "b": None if i % 3 else "x"} for i in range(n)]),
        "cat": pa.array([["a", "b", "c"][i % 3] for i in range(n)]).dictionary_encode(),
        "nul": pa.nulls(n),
        "fsl": pa.array([[i, i + 1] for i in range(n)], pa.list_(pa.int32(), 2)),
    })


def test_a_digest_is_of_values_not_of_their_layout():
    t = _rich()
    d = row_digests(t.columns)
    assert len(np.unique(d)) == t.num_rows  # distinct rows, distinct digests
    # slices and chunks
    assert np.array_equal(row_digests(t.slice(17, 50).columns), d[17:67])
    assert np.array_equal(row_digests(pa.concat_tables([t.slice(0, 100), t.slice(100)]).columns), d)
    # large, view and dictionary variants of the same values
    s = t.column("s").combine_chunks()
    for kind in (pa.large_string(), pa.string_view()):
        assert np.array_equal(value_hashes(s.cast(kind)), value_hashes(s))
    assert np.array_equal(value_hashes(s.dictionary_encode()), value_hashes(s))
    poly = t.column("poly").combine_chunks()
    assert np.array_equal(value_hashes(poly.cast(pa.large_list(poly.type.value_type))), value_hashes(poly))
    # whatever lies under a null, and every NaN payload
    under = pa.Array.from_buffers(pa.int32(), 2, [pa.py_buffer(np.packbits([1, 0], bitorder="little")),
                                                   pa.py_buffer(np.array([5, 999], np.int32))])
    assert np.array_equal(value_hashes(under), value_hashes(pa.array([5, None], pa.int32())))
    nan2 = np.array([np.nan, 1.0]).view(np.uint64)
    nan2[0] |= 1  # another NaN payload
    assert np.array_equal(value_hashes(pa.array(nan2.view(np.float64))), value_hashes(pa.array([np.nan, 1.0])))
    with pytest.raises(TypeError, match="no row digest"):
        value_hashes(pa.UnionArray.from_sparse(pa.array([0], pa.int8()), [pa.array([1])]))
    with pytest.raises(ValueError, match="at least one column"):
        row_digests([])


_values = st.one_of(
    st.lists(st.integers(-(2**63), 2**63 - 1) | st.none(), min_size=1, max_size=20).map(
        lambda v: pa.array(v, pa.int64())
    ),
    st.lists(st.floats(allow_nan=False) | st.none(), min_size=1, max_size=20).map(
        lambda v: pa.array(v, pa.float64())
    ),
    st.lists(st.text(max_size=8) | st.none(), min_size=1, max_size=20).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.lists(st.integers(0, 255), max_size=5) | st.none(), min_size=1, max_size=20).map(
        lambda v: pa.array(v, pa.list_(pa.uint8()))
    ),
)


@settings(max_examples=200, deadline=None)
@given(_values, st.data())
def test_changing_any_value_changes_its_rows_digest_alone(arr, data):
    row = data.draw(st.integers(0, len(arr) - 1))
    values = arr.to_pylist()
    kinds = {
        pa.int64(): st.integers(-(2**63), 2**63 - 1), pa.float64(): st.floats(allow_nan=False),
        pa.string(): st.text(max_size=8),
    }
    new = data.draw(kinds.get(arr.type, st.lists(st.integers(0, 255), max_size=5)) | st.none())
    if new == values[row] or (isinstance(new, float) and isinstance(values[row], float) and new == 0 == values[row]
                              and np.signbit(new) == np.signbit(values[row])):
        return
    values[row] = new
    changed = pa.array(values, arr.type)
    before, after = row_digests([arr]), row_digests([changed])
    assert before[row] != after[row]
    assert np.array_equal(np.delete(before, row), np.delete(after, row))


def test_vortex_tables_store_and_check_row_digests(tmp_path):
    t = _rich()
    p = tmp_path / "t.vortex"
    vfile.write_vortex_table(t, p)
    assert vfile.vortex_has_digests(p)
    back = vfile.read_vortex_table(p)
    assert back.schema.equals(t.schema, check_metadata=True)  # the bookkeeping key is not the user's
    assert np.array_equal(row_digests(back.columns), row_digests(t.columns))
    assert vfile.read_vortex_table(p, rows=[5, 3, 299, 3]).column("s").to_pylist() == [
        t.column("s")[i].as_py() for i in (5, 3, 299, 3)
    ]
    assert vfile.read_vortex_table(p, columns=["s", "f"]).schema.names == ["s", "f"]


@pytest.mark.parametrize("column, value", [("f", 0.25), ("s", "cell-X"), ("poly", [[[1.0, 2.0]]]), ("nul", None),
                                           ("st", {"a": 7, "b": "y"}), ("u64", 12345)])
def test_a_changed_value_raises_on_every_read(tmp_path, column, value):
    t = _rich()
    p = tmp_path / "t.vortex"
    write_changed(p, t, row=42, column=column, value=value)
    if column == "nul":  # a null column cannot change: the write is intact
        assert vfile.read_vortex_table(p).num_rows == t.num_rows
        return
    where = r"values of 1 row\(s\) fail their row digest \(rows 42\)"
    with pytest.raises(of.ChunkChecksumError, match=where) as info:
        vfile.read_vortex_table(p)
    assert info.value.rows == [42]
    with pytest.raises(of.ChunkChecksumError, match=where):
        vfile.read_vortex_table(p, rows=[1, 42, 7])
    with pytest.raises(of.ChunkChecksumError, match=where):  # a projection: every column is read and checked
        vfile.read_vortex_table(p, columns=["i8"])
    assert vfile.read_vortex_table(p, rows=[1, 41, 43]).num_rows == 3  # the other rows read


def test_scans_check_row_digests(tmp_path):
    from omeframe.formats.vortex.arrow_dataset import VortexPlainDataset

    t = _rich()
    p = tmp_path / "t.vortex"
    write_changed(p, t, row=42, column="s", value="cell-X")
    ds = VortexPlainDataset(p)
    with pytest.raises(of.ChunkChecksumError, match=r"rows 42"):
        ds.to_table()
    with pytest.raises(of.CorruptFileError, match="fail their CRC-32"):
        ds.to_table(columns=["i8"])  # a projection the digests cannot vouch for checks the body, which fails
    intact = tmp_path / "ok.vortex"
    vfile.write_vortex_table(t, intact)
    assert VortexPlainDataset(intact).to_table().num_rows == t.num_rows


def test_shape_tables_in_vortex_are_checked_and_verified(tmp_path, capsys):
    rows = [
        {"object_id": f"cell-{i}", "image_id": "img", "label_image_id": "labels", "label_value": i + 1,
         "geometry": [[[0.0, 0.0], [0.0, 4.0 + i], [4.0, 4.0], [0.0, 0.0]]], "centroid": [2.0, 2.0 + i],
         "bbox": {"min": [0.0, 0.0], "max": [4.0, 4.0 + i]}, "class": "cell", "confidence": 0.5, "area": 16.0 + i}
        for i in range(20)
    ]
    t = of.make_shape_table(rows, geometry_encoding="geoarrow.polygon")
    good = of.write_shapes(t, tmp_path / "ok.vortex")
    assert cli_main(["verify", str(good)]) == 0
    assert "against its digest" in capsys.readouterr().out
    bad = tmp_path / "bad.vortex"
    write_changed(bad, t, row=6, column="centroid", value=[2.0, 9.0])
    with pytest.raises(of.ChunkChecksumError, match=r"rows 6\)"):
        of.read_shapes(bad)
    assert cli_main(["verify", str(bad)]) == 1
    assert "damaged:" in capsys.readouterr().err


def test_tables_without_digests_still_read(tmp_path, capsys):
    t = _rich()
    p = tmp_path / "old.vortex"
    vfile.write_vortex_stream(t.schema, t.to_batches(), p, digests=False)
    assert not vfile.vortex_has_digests(p)
    assert pa.types.is_null(vfile._open(p).dtype.fields()[-1].to_arrow_type())
    assert vfile.read_vortex_table(p).num_rows == t.num_rows


def test_a_damaged_stored_schema_is_refused(tmp_path):
    import vortex

    t = pa.table({"x": pa.array([1, 2, 3], pa.int32())})
    p = tmp_path / "t.vortex"
    vfile.write_vortex_table(t, p)
    name = vfile._open(p).dtype.names()[-1]
    payload, crc = name[len(vfile.SCHEMA_COLUMN_PREFIX):].rsplit(vfile.SCHEMA_CRC_SEPARATOR, 1)
    raw = bytearray(base64.b64decode(payload))
    raw[len(raw) // 2] ^= 0x01
    for bad_name in (
        vfile.SCHEMA_COLUMN_PREFIX + base64.b64encode(bytes(raw)).decode() + vfile.SCHEMA_CRC_SEPARATOR + crc,
        vfile.SCHEMA_COLUMN_PREFIX + payload + vfile.SCHEMA_CRC_SEPARATOR + "xyz",
    ):
        q = tmp_path / "bad.vortex"
        vortex.io.write(pa.table({"x": t.column("x"), bad_name: pa.array([0, 0, 0], pa.uint64())}), str(q))
        with pytest.raises(of.CorruptFileError, match="schema"):
            vfile.read_vortex_table(q)


def test_a_damaged_hidden_column_name_is_refused(tmp_path):
    import vortex

    t = pa.table({"x": pa.array([1, 2, 3], pa.int32())})
    p = tmp_path / "t.vortex"
    vfile.write_vortex_table(t, p)
    name = vfile._open(p).dtype.names()[-1]
    q = tmp_path / "bad.vortex"
    # one bit of the prefix; one that makes a control character, which vortex returns escaped ("\u{7f}")
    for bad_name in (name[:3] + chr(ord(name[3]) ^ 0x01) + name[4:], chr(ord(name[0]) ^ 0x20) + name[1:]):
        vortex.io.write(pa.table({"x": t.column("x"), bad_name: pa.array([0, 0, 0], pa.uint64())}), str(q))
        with pytest.raises(of.CorruptFileError, match="hidden schema column is damaged"):
            vfile.read_vortex_table(q)
    # a column of another tool's file that merely ends like a CRC is a column
    other = tmp_path / "other.vortex"
    vortex.io.write(pa.table({"x": t.column("x"), "note~0badf00d": pa.array([0, 0, 0], pa.uint64())}), str(other))
    assert vfile.read_vortex_table(other).schema.names == ["x", "note~0badf00d"]


def test_flipped_bits_in_a_vortex_shape_table_give_an_error_or_the_same_table(tmp_path):
    """Single-bit flips all over a Vortex shape table, its footer included: the intact table or a typed error."""
    rows = [
        {"object_id": f"cell-{i}", "image_id": "img-a" if i % 2 else "img-b", "label_image_id": "labels",
         "label_value": i + 1, "geometry": [[[0.0 + i, 0.0], [0.0, 6.0], [4.0, 6.0], [0.0 + i, 0.0]]],
         "centroid": [2.0, 2.0 + i], "bbox": {"min": [0.0, 0.0], "max": [4.0, 4.0 + i]},
         "class": "nucleus" if i % 3 else "cell", "confidence": 0.5 + i / 1000, "area": 16.0 + i}
        for i in range(40)
    ]
    path = Path(of.write_shapes(of.make_shape_table(rows, geometry_encoding="geoarrow.polygon"), tmp_path / "s.vortex"))
    intact = of.read_shapes(path)
    pristine = path.read_bytes()
    rng = np.random.default_rng(7)
    tail = len(pristine) // 4  # the footer (schema, layout, statistics) lies in the last quarter
    positions = np.concatenate([rng.choice(len(pristine) - tail, 60, replace=False),
                                len(pristine) - tail + rng.choice(tail, 60, replace=False)])
    wrong, errors = [], 0
    for pos in positions.tolist():
        damaged = bytearray(pristine)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        try:
            got = of.read_shapes(path)
        except of.OmeframeError:  # CorruptFileError, ChunkChecksumError, ShapeValidationError
            errors += 1
            continue
        if not got.equals(intact, check_metadata=True):
            wrong.append(pos)
    assert not wrong, f"silently changed shape table after flips at {wrong}"
    assert errors > 30  # most flips are noticed (the rest hit padding or unused bytes)


def test_dataset_chunk_parts_carry_payload_crcs_not_digests(tmp_path):
    img = np.random.default_rng(3).integers(0, 255, (2, 64, 64), dtype=np.uint8)
    ds = of.write_dataset(img, tmp_path / "d.omeds", dim_order="CYX", chunk_shape=(1, 32, 32), format="vortex")
    part = ds.chunk_paths[0]
    assert not vfile.vortex_has_digests(part)
    assert pa.types.is_null(vfile._open(part).dtype.fields()[-1].to_arrow_type())
    assert np.array_equal(ds.read(ds.image_ids[0]).reshape(img.shape), img)


@pytest.mark.parametrize(
    "items, dtype",
    [([5, 5, 5, 5, 5, 5], np.uint64), ([5, 7, 0, 2**64 - 1, 3, 9], np.uint64), ([5, 7, 0, 255, 3, 9], np.uint8),
     ([5, 7, 0, 255, 3, 5], np.uint8)],
)
def test_segment_polynomials_follow_their_definition(items, dtype):
    from omeframe.storage import digest

    bounds = np.array([0, 2, 2, 6], dtype=np.int64)
    got = digest._polynomials(np.array(items, dtype=dtype), bounds)
    mask = 2**64 - 1
    for i in range(len(bounds) - 1):
        a, b = int(bounds[i]), int(bounds[i + 1])
        poly = sum(items[j] * pow(digest._P, j - a, 2**64) for j in range(a, b)) & mask
        length = int(digest._scramble(np.array([((b - a) * int(digest._LEN)) & mask], dtype=np.uint64))[0])
        assert int(got[i]) == (poly + length) & mask


def _crops_with_features(n: int = 200) -> pa.Table:
    stack = np.random.default_rng(9).integers(0, 255, (n, 3, 16, 16), dtype=np.uint8)
    records = of.records_from_arrays(stack, dim_order="CYX")
    return pa.table({"ome_arrow": records, "well": pa.array(np.arange(n) % 96),
                     "area": pa.array(np.linspace(10, 20, n)), "label": pa.array([f"c{i}" for i in range(n)])})


def test_features_beside_records_are_checked_by_their_digest(tmp_path):
    import polars as pl

    import omeframe.polars as ofpl
    from omeframe.formats.vortex.arrow_dataset import VortexPlainDataset

    t = _crops_with_features()
    p = tmp_path / "cells.vortex"
    write_changed(p, t, row=77, column="area", value=99.5)
    assert vfile._stored_crc_type(vfile._open(p), vfile._open(p).dtype.names()[-1]).equals(vfile.CRC_AND_DIGEST)
    where = r"values of 1 row\(s\) fail their row digest \(rows 77\)"
    for read in (
        lambda: vfile.read_vortex_table(p),
        lambda: vfile.read_vortex_table(p, columns=["well"]),  # one feature: all of them read and checked
        lambda: vfile.read_vortex_table(p, rows=[3, 77]),
        lambda: of.read_table(p),
        lambda: VortexPlainDataset(p).to_table(),
        lambda: ofpl.scan(p).select(["ome_arrow", "well", "area", "label"]).collect(),
    ):
        with pytest.raises((of.ChunkChecksumError, pl.exceptions.ComputeError), match=where):
            read()
    # the records alone are intact, and read without the features
    records = vfile.read_vortex_table(p, columns=["ome_arrow"])
    assert records.column(0).equals(t.column(0))
    assert vfile.read_vortex_table(p, rows=[3, 76, 78]).num_rows == 3
    report = of.verify_table(p)
    assert [d.rows for d in report.damaged] == [(77, 78)]


def test_tables_of_records_with_features_read_back_exactly(tmp_path):
    t = _crops_with_features()
    p = tmp_path / "cells.vortex"
    vfile.write_vortex_table(t, p)
    assert vfile.read_vortex_table(p).equals(t)
    assert vfile.read_vortex_table(p, columns=["label", "ome_arrow"]).equals(t.select(["label", "ome_arrow"]))
    assert vfile.read_vortex_table(p, rows=[9, 1, 9]).equals(t.take([9, 1, 9]))
    stack = of.to_numpy_stack(t.column(0))
    assert np.array_equal(of.to_numpy_stack(of.read_table(p, rows=[4, 150]).column(0)), stack[[4, 150]])
    assert np.array_equal(of.open_table(p).to_numpy(rows=[150, 4]), stack[[150, 4]])  # a pixel take: the CRC part
    only_records = tmp_path / "records.vortex"
    vfile.write_vortex_table(t.select(["ome_arrow"]), only_records)  # nothing else: the plain uint64 CRC column
    assert pa.types.is_uint64(vfile._open(only_records).dtype.fields()[-1].to_arrow_type())


def _row_by_row(arr: pa.Array) -> np.ndarray:
    """The hashes of ``arr``'s values one slot at a time: no run of equal values to hash once."""
    return np.concatenate([value_hashes(arr.slice(i, 1)) for i in range(len(arr))])


_row_values = st.fixed_dictionaries({
    "s": st.text(max_size=6) | st.none(),
    "i": st.integers(-(2**31), 2**31 - 1) | st.none(),
    "f": st.floats(width=32) | st.none(),
    "tags": st.lists(st.fixed_dictionaries({"k": st.text(max_size=3), "v": st.integers(0, 9) | st.none()}),
                     max_size=3) | st.none(),
    "deep": st.lists(st.lists(st.integers(0, 3), max_size=2), max_size=2),
})
_row_type = pa.struct([
    ("s", pa.string()), ("i", pa.int32()), ("f", pa.float32()),
    ("tags", pa.list_(pa.struct([("k", pa.string()), ("v", pa.int16())]))),
    ("deep", pa.list_(pa.list_(pa.int8()))),
])


@settings(max_examples=150, deadline=None)
@given(st.lists(_row_values, min_size=1, max_size=3), st.integers(1, 40), st.data())
def test_repeated_rows_hash_as_they_do_one_by_one(pattern, repeats, data):
    # a table of crops repeats most header values in every row: hashed once per pattern, the same hashes
    rows = pattern * repeats
    if data.draw(st.booleans()):  # one row differs somewhere: no shortcut may hide it
        at = data.draw(st.integers(0, len(rows) - 1))
        rows[at] = data.draw(_row_values)
    arr = pa.array(rows, _row_type)
    assert np.array_equal(value_hashes(arr), _row_by_row(arr))
    for name in ("s", "i", "f", "tags", "deep"):
        child = arr.field(name)
        assert np.array_equal(value_hashes(child), _row_by_row(child)), name


def test_header_digests_leave_out_the_pixel_bytes_alone():
    from omeframe.formats.vortex.checksum import header_digests

    stack = np.arange(4 * 2 * 3 * 3, dtype=np.uint8).reshape(4, 2, 3, 3)
    col = of.records_from_arrays(stack, dim_order="CYX")
    before = header_digests([col])
    assert len(set(before.tolist())) == 4  # the rows' ids differ
    recs = col.to_pylist()
    for rec in recs:  # other pixels, the same header
        for chunk in rec["chunks"]:
            chunk["pixel_bytes"] = bytes(255 - b for b in chunk["pixel_bytes"])
    assert np.array_equal(header_digests([pa.array(recs, col.type)]), before)
    recs = col.to_pylist()
    recs[2]["pixels_meta"]["channels"][1]["name"] = "DNA"
    after = header_digests([pa.array(recs, col.type)])
    assert np.flatnonzero(after != before).tolist() == [2]


def test_repeated_lists_with_a_field_null_throughout_hash_as_one_by_one():
    # the channels of crops: several per row, the same in every row, a field null in all of them
    rows = [{"s": "x", "i": 1, "f": None, "tags": [{"k": "a", "v": None}, {"k": "bc", "v": None}], "deep": []}] * 50
    arr = pa.array(rows, _row_type)
    assert np.array_equal(value_hashes(arr), _row_by_row(arr))
    assert np.array_equal(value_hashes(arr.field("tags")), _row_by_row(arr.field("tags")))


def test_long_columns_hash_as_their_short_slices_do():
    # columns long enough for the block-wise shifts, floats with NaN payloads of several kinds
    from omeframe.storage import digest

    n = 3 * digest._SHIFT_BLOCK + 17
    rng = np.random.default_rng(4)
    f = rng.random(n)
    f[rng.integers(0, n, 50)] = np.nan
    bits = f.view(np.uint64)
    bits[np.flatnonzero(np.isnan(f))[::2]] |= 5  # other NaN payloads
    t = pa.table({
        "f": pa.array(f), "i": pa.array(rng.integers(-(2**62), 2**62, n)),
        "poly": pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                                         pa.array(rng.random(2 * n))),
    })
    whole = row_digests(t.columns)
    step = digest._SHIFT_BLOCK // 3  # slices short enough for the plain shift
    parts = np.concatenate([row_digests(t.slice(a, step).columns) for a in range(0, n, step)])
    assert np.array_equal(whole, parts)
    x = rng.integers(0, 2**63, n, dtype=np.uint64)
    assert np.array_equal(digest._xorshift(x.copy(), 29), x ^ (x >> np.uint64(29)))
    canonical = f.copy()
    canonical[np.isnan(f)] = np.nan
    assert np.array_equal(value_hashes(pa.array(canonical)), value_hashes(pa.array(f)))
