"""DuckDB: ``omeframe.duckdb.connect`` / ``register`` and the ``ome_*`` SQL functions.

Every SQL function is checked against numpy ground truth on real record
tables written by ``omeframe.write_table`` (64x64x3 uint8 crops and
multi-chunk uint16 images, byte and list variants, extra feature columns),
with nulls, legacy struct layouts, crops that decode back to the numpy crop,
PNG thumbnails Pillow opens, dataset directories (images and chunks views,
chunk-level functions) and ``EXPLAIN`` plans that show the filter inside the
scan operator (Parquet, Arrow datasets, and Vortex when the plain-type
dataset wrapper is available).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import omeframe as of
import omeframe.duckdb as ofdb
from omeframe.errors import NoOmeArrowColumnError
from omeframe.model.arrow import OME_ARROW_BYTE_STRUCT, OME_ARROW_STRUCT

duckdb = pytest.importorskip("duckdb")

N_CROPS = 24
WELLS = ["A1", "A2", "B1"]


def _vortex_wrapper():
    """The plain-type Vortex dataset wrapper, or skip (it is built separately)."""
    mod = pytest.importorskip(
        "omeframe.formats.vortex.arrow_dataset",
        reason="omeframe.formats.vortex.arrow_dataset (the plain-type Vortex dataset wrapper) is not available yet",
    )
    if not hasattr(mod, "vortex_plain_dataset"):
        pytest.skip("omeframe.formats.vortex.arrow_dataset has no vortex_plain_dataset yet")
    return mod.vortex_plain_dataset


# ------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("query_duckdb")
    rng = np.random.default_rng(7)
    crops = [rng.integers(0, 256, (3, 64, 64), dtype=np.uint8) for _ in range(N_CROPS)]
    crops[3][1] = 42  # a constant channel: std must be exactly 0
    cols = {
        "cell_id": list(range(N_CROPS)),
        "well": [WELLS[i % 3] for i in range(N_CROPS)],
        "area": [float(50 + 3 * i) for i in range(N_CROPS)],
    }
    paths = {}
    paths["bytes"] = of.write_table(
        root / "crops.parquet", crops, dim_order="CYX", columns=cols,
        channel_names=["DAPI", "GFP", "RFP"], image_ids=[f"cell-{i}" for i in range(N_CROPS)],
    )
    paths["list"] = of.write_table(
        root / "crops_list.parquet", crops, dim_order="CYX", columns=cols,
        channel_names=["DAPI", "GFP", "RFP"], chunk_encoding="list",
    )
    # uint16 2-D images of several sizes, several chunks each (edge chunks too)
    shapes = [(100, 80), (37, 51), (64, 64), (20, 90)]
    big = [rng.integers(0, 60000, s, dtype=np.uint16) for s in shapes]
    big[2][:] = 65535
    paths["u16"] = of.write_table(
        root / "u16.parquet", big, dim_order="YX", chunk_shape=(1, 32, 32),
        columns={"k": list(range(len(big)))},
    )
    # a TCZYX stack: statistics over T and Z, thumbnail of the middle Z plane
    stack = rng.integers(0, 4000, (2, 2, 5, 40, 30), dtype=np.uint16)
    paths["stack"] = of.write_table(root / "stack.parquet", [stack], dim_order="TCZYX", chunk_shape=(2, 16, 16))
    return {
        "root": root,
        "crops": [c[None, :, None] for c in crops],  # TCZYX
        "big": [b[None, None, None] for b in big],
        "stack": stack,
        "paths": paths,
        "cols": cols,
    }


@pytest.fixture()
def con():
    c = ofdb.connect()
    yield c
    c.close()


def _np_stats(a: np.ndarray) -> tuple[float, float, float, float]:
    a = a.astype(np.float64)
    return (a.min(), a.max(), a.mean(), a.std())


def _truth(data, table: str) -> list[np.ndarray]:
    return {"bytes": data["crops"], "list": data["crops"], "u16": data["big"], "stack": [data["stack"]]}[table]


def _src(data, table: str) -> str:
    return f"read_parquet('{data['paths'][table]}')"


# ------------------------------------------------------------------ connection
def test_connect_registers_every_function(con):
    names = {r[0] for r in con.sql("SELECT function_name FROM duckdb_functions()").fetchall()}
    assert set(ofdb.FUNCTIONS) <= names
    # registering again on the same connection is harmless
    ofdb.register_functions(con)
    assert con.sql("SELECT ome_dtype(NULL)").fetchall() == [(None,)]


def test_plain_connection_gets_functions(data):
    c = duckdb.connect()
    try:
        ofdb.register_functions(c)
        assert c.sql(f"SELECT ome_dtype(ome_arrow) FROM {_src(data, 'bytes')} LIMIT 1").fetchall() == [("uint8",)]
    finally:
        c.close()


# ------------------------------------------------------------------ header functions
@pytest.mark.parametrize("table", ["bytes", "list", "u16", "stack"])
def test_header_functions_match_numpy(con, data, table):
    rows = con.sql(
        f"SELECT ome_shape(ome_arrow), ome_dtype(ome_arrow), ome_sizes(ome_arrow), "
        f"ome_channel_names(ome_arrow) FROM {_src(data, table)}"
    ).fetchall()
    truth = _truth(data, table)
    assert len(rows) == len(truth)
    for (shape, dt, sizes, names), arr in zip(rows, truth, strict=True):
        assert tuple(shape) == arr.shape
        assert dt == arr.dtype.name
        assert sizes == dict(zip("tczyx", arr.shape, strict=True))
        assert len(names) == arr.shape[1]
    if table in ("bytes", "list"):
        assert rows[0][3] == ["DAPI", "GFP", "RFP"]
    sch = con.sql(
        f"SELECT ome_sizes(ome_arrow) AS s, ome_shape(ome_arrow) AS sh, ome_channel_names(ome_arrow) AS n "
        f"FROM {_src(data, table)}"
    ).to_arrow_table().schema
    assert [(f.name, f.type) for f in sch.field("s").type] == [(k, pa.int32()) for k in "tczyx"]
    assert sch.field("sh").type.value_type == pa.int32()
    assert pa.types.is_string(sch.field("n").type.value_type) or pa.types.is_large_string(
        sch.field("n").type.value_type
    )


# ------------------------------------------------------------------ stats
@pytest.mark.parametrize("table", ["bytes", "list"])
def test_stats_match_numpy_every_channel(con, data, table):
    got = con.sql(
        f"SELECT cell_id, ome_stats(ome_arrow, 0) AS s0, ome_stats(ome_arrow, 1) AS s1, "
        f"ome_stats(ome_arrow, 2) AS s2 FROM {_src(data, table)} ORDER BY cell_id"
    ).fetchall()
    for cid, *stats in got:
        for c, s in enumerate(stats):
            exp = _np_stats(data["crops"][cid][:, c])
            assert (s["min"], s["max"]) == exp[:2]
            assert s["mean"] == pytest.approx(exp[2], rel=1e-12)
            assert s["std"] == pytest.approx(exp[3], rel=1e-12)
    # the constant channel has exactly zero spread
    assert got[3][2]["std"] == 0.0 and got[3][2]["min"] == got[3][2]["max"] == 42.0


def test_stats_channel_per_row_and_aggregates(con, data):
    rows = con.sql(
        f"SELECT cell_id, ome_stats(ome_arrow, cell_id % 3).mean AS m FROM {_src(data, 'bytes')} "
        "WHERE area > 60 ORDER BY cell_id"
    ).fetchall()
    assert [r[0] for r in rows] == [i for i in range(N_CROPS) if 50 + 3 * i > 60]
    for cid, m in rows:
        assert m == pytest.approx(data["crops"][cid][:, cid % 3].mean(), rel=1e-12)
    per_well = dict(con.sql(
        f"SELECT well, avg(ome_stats(ome_arrow, 1).max) FROM {_src(data, 'bytes')} GROUP BY well"
    ).fetchall())
    for w in WELLS:
        exp = np.mean([data["crops"][i][:, 1].max() for i in range(N_CROPS) if WELLS[i % 3] == w])
        assert per_well[w] == pytest.approx(exp)


@pytest.mark.parametrize("table", ["u16", "stack"])
def test_stats_multi_chunk_images(con, data, table):
    truth = _truth(data, table)
    nc = truth[0].shape[1]
    for c in range(nc):
        got = con.sql(f"SELECT ome_stats(ome_arrow, {c}) FROM {_src(data, table)}").fetchall()
        for (s,), arr in zip(got, truth, strict=True):
            exp = _np_stats(arr[:, c])
            assert (s["min"], s["max"]) == exp[:2]
            assert s["mean"] == pytest.approx(exp[2], rel=1e-12)
            assert s["std"] == pytest.approx(exp[3], rel=1e-12, abs=1e-12)
    if table == "u16":  # the saturated image: exact zero spread
        assert got[2][0]["std"] == 0.0 and got[2][0]["mean"] == 65535.0


# ------------------------------------------------------------------ nulls
def test_nulls_propagate(con, data):
    src = _src(data, "bytes")
    rows = con.sql(f"""
        SELECT cell_id,
               ome_stats(CASE WHEN cell_id % 2 = 0 THEN ome_arrow END, 0) AS s_null_rec,
               ome_stats(ome_arrow, 3) AS s_out_of_range,
               ome_stats(ome_arrow, -1) AS s_negative,
               ome_stats(ome_arrow, CASE WHEN cell_id % 3 = 0 THEN 1 END) AS s_null_c,
               ome_shape(CASE WHEN cell_id % 2 = 0 THEN ome_arrow END) AS shape,
               ome_dtype(CASE WHEN cell_id % 2 = 0 THEN ome_arrow END) AS dt,
               ome_sizes(CASE WHEN cell_id % 2 = 0 THEN ome_arrow END) AS sz,
               ome_channel_names(CASE WHEN cell_id % 2 = 0 THEN ome_arrow END) AS names,
               ome_crop(ome_arrow, CASE WHEN cell_id % 2 = 0 THEN 1 END, 0, 8, 8) AS crop,
               ome_thumbnail(CASE WHEN cell_id % 2 = 0 THEN ome_arrow END, 16) AS thumb
        FROM {src} ORDER BY cell_id
    """).fetchall()
    for r in rows:
        cid = r[0]
        even = cid % 2 == 0
        assert (r[1] is None) == (not even)
        assert r[2] is None and r[3] is None
        assert (r[4] is None) == (cid % 3 != 0)
        for v in r[5:]:
            assert (v is None) == (not even)
    assert con.sql("SELECT ome_stats(NULL, 0), ome_shape(NULL), ome_thumbnail(NULL, 8)").fetchall() == [
        (None, None, None)
    ]


# ------------------------------------------------------------------ crop
@pytest.mark.parametrize("fn,struct", [("ome_crop", OME_ARROW_BYTE_STRUCT), ("ome_crop_list", OME_ARROW_STRUCT)])
@pytest.mark.parametrize("table", ["bytes", "list"])
def test_crop_returns_records_that_decode_to_the_numpy_crop(con, data, table, fn, struct):
    t = con.sql(
        f"SELECT cell_id, {fn}(ome_arrow, 5 + cell_id, 7, 20, 11) AS r FROM {_src(data, table)} ORDER BY cell_id"
    ).to_arrow_table()
    rtype = t.schema.field("r").type
    assert [f.name for f in rtype] == [f.name for f in struct]
    chunk_fields = [f.name for f in rtype.field("chunks").type.value_type]
    assert chunk_fields == [f.name for f in struct.field("chunks").type.value_type]
    for cid, rec in zip(t["cell_id"].to_pylist(), t["r"], strict=True):
        arr = of.to_numpy(rec)
        exp = data["crops"][cid][:, :, :, 7:18, 5 + cid : 25 + cid]
        assert arr.dtype == np.uint8 and np.array_equal(arr, exp)
        assert rec["id"].as_py() == f"cell-{cid}" if table == "bytes" else True
        assert [ch["name"] for ch in rec["pixels_meta"]["channels"].as_py()] == ["DAPI", "GFP", "RFP"]
    # the records round-trip through omeframe's own writer/reader
    back = pa.table({"ome_arrow": t["r"].cast(struct)})
    out = of.write_table(data["root"] / f"cropped_{table}_{fn}.parquet", back)
    assert np.array_equal(of.to_numpy(of.read_table(out)["ome_arrow"][1]), data["crops"][1][..., 7:18, 6:26])


def test_crop_clips_to_the_image_and_composes_with_stats(con, data):
    src = _src(data, "bytes")
    rows = con.sql(f"""
        SELECT cell_id,
               ome_shape(ome_crop(ome_arrow, 50, -5, 40, 20)) AS clipped,
               ome_crop(ome_arrow, 70, 0, 5, 5) IS NULL AS outside,
               ome_crop(ome_arrow, 0, 0, 0, 5) IS NULL AS empty,
               ome_stats(ome_crop(ome_arrow, 10, 12, 16, 8), 2) AS s
        FROM {src} ORDER BY cell_id
    """).fetchall()
    for cid, clipped, outside, empty, s in rows:
        assert tuple(clipped) == (1, 3, 1, 15, 14)
        assert outside and empty
        exp = _np_stats(data["crops"][cid][:, 2, :, 12:20, 10:26])
        assert (s["min"], s["max"]) == exp[:2]
        assert s["mean"] == pytest.approx(exp[2], rel=1e-12)
        assert s["std"] == pytest.approx(exp[3], rel=1e-12)


def test_crop_keeps_uint16_and_multi_chunk(con, data):
    q = f"SELECT k, ome_crop(ome_arrow, 20, 25, 40, 30) AS r FROM {_src(data, 'u16')} ORDER BY k"
    t = con.sql(q).to_arrow_table()
    for k, rec in zip(t["k"].to_pylist(), t["r"], strict=True):
        src = data["big"][k]
        exp = src[..., 25 : min(55, src.shape[3]), 20 : min(60, src.shape[4])]
        if exp.size == 0:
            assert not rec.is_valid
            continue
        got = of.to_numpy(rec)
        assert got.dtype == np.uint16 and np.array_equal(got, exp)


# ------------------------------------------------------------------ thumbnail
def test_thumbnail_png(con, data):
    from PIL import Image

    rows = con.sql(
        f"SELECT ome_thumbnail(ome_arrow, 32) AS p, ome_arrow FROM {_src(data, 'bytes')} LIMIT 3"
    ).to_arrow_table()
    for png, rec in zip(rows["p"].to_pylist(), rows["ome_arrow"], strict=True):
        im = Image.open(io.BytesIO(png))
        assert im.format == "PNG" and im.size == (32, 32) and im.mode == "RGB"
        assert png == of.thumbnail_png(rec, 32)
    # 100x80 at size 25: box factor ceil(100/25) = 4 -> 20 x 25 (W x H)
    (png,) = con.sql(f"SELECT ome_thumbnail(ome_arrow, 25) FROM {_src(data, 'u16')} WHERE k = 0").fetchall()[0]
    assert Image.open(io.BytesIO(png)).size == (20, 25)
    # the stack: middle Z plane of T=0, both channels
    (png, rec) = con.sql(f"SELECT ome_thumbnail(ome_arrow, 64), ome_arrow FROM {_src(data, 'stack')}").fetchall()[0]
    assert png == of.thumbnail_png(
        con.sql(f"SELECT ome_arrow FROM {_src(data, 'stack')}").to_arrow_table()["ome_arrow"][0], 64
    )
    with pytest.raises(duckdb.Error, match="positive"):
        con.sql(f"SELECT ome_thumbnail(ome_arrow, 0) FROM {_src(data, 'bytes')}").fetchall()


# ------------------------------------------------------------------ legacy layouts
def _legacy(col: pa.Array) -> pa.StructArray:
    """List-variant records with fields reversed and ``list<int64>`` pixels."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    chunks = col.field("chunks")
    inner = chunks.values
    fields = [inner.field(i) for i in range(inner.type.num_fields)]
    names = [f.name for f in inner.type]
    fields[names.index("pixels")] = fields[names.index("pixels")].cast(pa.list_(pa.int64()))
    new_inner = pa.StructArray.from_arrays(fields[::-1], names=names[::-1])
    new_chunks = pa.ListArray.from_arrays(chunks.offsets, new_inner)
    top = [col.field(i) for i in range(col.type.num_fields)]
    top_names = [f.name for f in col.type]
    top[top_names.index("chunks")] = new_chunks
    keep = [i for i, n in enumerate(top_names) if n not in ("masks", "planes")]
    return pa.StructArray.from_arrays([top[i] for i in keep][::-1], names=[top_names[i] for i in keep][::-1])


def test_legacy_layout_records(con, data):
    tbl = of.read_table(data["paths"]["list"])
    legacy = pa.table({"img": _legacy(tbl["ome_arrow"]), "cell_id": tbl["cell_id"]})
    assert ofdb.register(con, "legacy", legacy) == ["legacy"]
    rows = con.sql(
        "SELECT cell_id, ome_shape(img), ome_stats(img, 1), ome_crop(img, 1, 2, 3, 4) FROM legacy ORDER BY cell_id"
    ).fetchall()
    for cid, shape, s, _ in rows:
        assert tuple(shape) == (1, 3, 1, 64, 64)
        assert s["mean"] == pytest.approx(data["crops"][cid][:, 1].mean(), rel=1e-12)
    t = con.sql("SELECT ome_crop(img, 1, 2, 3, 4) AS r FROM legacy ORDER BY cell_id").to_arrow_table()
    assert np.array_equal(of.to_numpy(t["r"][5]), data["crops"][5][..., 2:6, 1:4])


def test_non_record_struct_is_a_clear_error(con):
    with pytest.raises(duckdb.Error, match="OME-Arrow"):
        con.sql("SELECT ome_stats({'a': 1}, 0)").fetchall()


# ------------------------------------------------------------------ register + EXPLAIN
def _scan_box(plan: str, function: str) -> str:
    """The text of the plan box whose operator runs ``function``."""
    lines = plan.splitlines()
    hit = next(i for i, line in enumerate(lines) if function in line)
    col = lines[hit].index(function)
    top = max(i for i in range(hit + 1) if "╭" in lines[i][: col + 1])
    bottom = min(i for i in range(hit, len(lines)) if "╰" in lines[i][: col + 1])
    return "\n".join(lines[top : bottom + 1])


def _explain(con, sql: str) -> str:
    return "\n".join(r[1] for r in con.sql("EXPLAIN " + sql).fetchall())


def test_register_parquet_record_table_and_filter_pushdown(con, data):
    assert ofdb.register(con, "cells", data["paths"]["bytes"], column_name="ome_arrow") == ["cells"]
    sql = "SELECT cell_id, ome_stats(ome_arrow, 1).mean AS m FROM cells WHERE well = 'A1'"
    rows = con.sql(sql + " ORDER BY cell_id").fetchall()
    assert [r[0] for r in rows] == [i for i in range(N_CROPS) if WELLS[i % 3] == "A1"]
    plan = _explain(con, sql)
    box = _scan_box(plan, "READ_PARQUET")
    assert "Filters:" in box and "well" in box and "'A1'" in box, plan
    assert "─ Filter ─" not in plan, plan
    # re-registering replaces the view
    assert ofdb.register(con, "cells", data["paths"]["list"]) == ["cells"]
    assert con.sql("SELECT count(*) FROM cells").fetchall()[0] == (N_CROPS,)


def test_register_arrow_dataset_pushes_filters_into_the_arrow_scan(con, data):
    import pyarrow.dataset as pds

    ofdb.register(con, "cells_ds", pds.dataset(data["paths"]["bytes"]))
    sql = "SELECT cell_id, ome_dtype(ome_arrow) FROM cells_ds WHERE well = 'B1'"
    assert len(con.sql(sql).fetchall()) == N_CROPS // 3
    plan = _explain(con, sql)
    box = _scan_box(plan, "ARROW_SCAN")
    assert "Filters:" in box and "well" in box and "'B1'" in box, plan


def test_register_errors(con, data, tmp_path):
    with pytest.raises(FileNotFoundError):
        ofdb.register(con, "nope", tmp_path / "missing.parquet")
    with pytest.raises(NoOmeArrowColumnError):
        ofdb.register(con, "cells", data["paths"]["bytes"], column_name="image")
    with pytest.raises(ValueError):
        ofdb.register(con, "", data["paths"]["bytes"])


def test_vortex_record_table(con, data):
    _vortex_wrapper()
    tbl = of.read_table(data["paths"]["bytes"])
    path = of.write_table(data["root"] / "crops.vortex", tbl)
    assert ofdb.register(con, "vx", path) == ["vx"]
    sql = "SELECT cell_id, ome_stats(ome_arrow, 2).max AS mx FROM vx WHERE well = 'A2'"
    rows = con.sql(sql + " ORDER BY cell_id").fetchall()
    assert [r[0] for r in rows] == [i for i in range(N_CROPS) if WELLS[i % 3] == "A2"]
    for cid, mx in rows:
        assert mx == data["crops"][cid][:, 2].max()
    plan = _explain(con, sql)
    box = _scan_box(plan, "ARROW_SCAN")
    assert "Filters:" in box and "well" in box, plan


# ------------------------------------------------------------------ datasets
@pytest.fixture(scope="module")
def dataset(data):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3000, (2, 70, 90), dtype=np.uint16)
    a[1, 32:, 32:] = 0
    b = rng.integers(0, 3000, (1, 40, 40), dtype=np.uint16)
    path = data["root"] / "slides.omeds"
    of.write_dataset(a, path, dim_order="CYX", image_ids=["s1"], chunk_shape=(1, 32, 32))
    of.write_dataset(b, path, dim_order="CYX", image_ids=["s2"], mode="append")
    return path, {"s1": a[None, :, None], "s2": b[None, :, None]}


def _check_dataset_views(con, name, truth):
    imgs = con.sql(f"SELECT image_id, n_chunks FROM {name}_images ORDER BY image_id").fetchall()
    assert [r[0] for r in imgs] == ["s1", "s2"]
    assert imgs[0][1] == 2 * 3 * 3
    sql = (
        f"SELECT image_id, c, y, x, shape_y, shape_x, min, max, mean, "
        f"ome_chunk_values(pixel_bytes, codec, dtype, shape_z, shape_y, shape_x) AS v, "
        f"ome_chunk_stats(pixel_bytes, codec, dtype, shape_z, shape_y, shape_x) AS s "
        f"FROM {name}_chunks WHERE image_id = 's1'"
    )
    rows = con.sql(sql).fetchall()
    assert len(rows) == 18
    for _, c, y, x, sy, sx, mn, mx, mean, v, s in rows:
        block = truth["s1"][0, c, 0, y : y + sy, x : x + sx]
        assert np.array_equal(np.asarray(v).reshape(sy, sx), block)
        assert (s["min"], s["max"]) == (mn, mx) == (block.min(), block.max())
        assert s["mean"] == pytest.approx(mean) and s["std"] == pytest.approx(block.std(), rel=1e-12)
    # SQL over decoded chunk values: an exact whole-image aggregate from chunks
    (total,) = con.sql(
        f"SELECT sum(list_sum(ome_chunk_values(pixel_bytes, codec, dtype, shape_z, shape_y, shape_x))) "
        f"FROM {name}_chunks WHERE image_id = 's2'"
    ).fetchall()[0]
    assert total == truth["s2"].sum(dtype=np.int64)
    empty = con.sql(f"SELECT c, y, x FROM {name}_chunks WHERE image_id = 's1' AND nonzero = 0").fetchall()
    assert sorted(empty) == [(1, 32, 32), (1, 32, 64), (1, 64, 32), (1, 64, 64)]
    return sql


def test_register_parquet_dataset_directory(con, dataset):
    path, truth = dataset
    assert ofdb.register(con, "slides", path) == ["slides_images", "slides_chunks"]
    sql = _check_dataset_views(con, "slides", truth)
    plan = _explain(con, sql)
    box = _scan_box(plan, "READ_PARQUET")
    assert "Filters:" in box and "image_id" in box, plan


def test_register_vortex_dataset_directory(con, data, dataset):
    _vortex_wrapper()
    _, truth = dataset
    path = data["root"] / "slides_vx.omeds"
    of.write_dataset(
        truth["s1"][0, :, 0], path, format="vortex", dim_order="CYX", image_ids=["s1"], chunk_shape=(1, 32, 32)
    )
    of.write_dataset(truth["s2"][0, :, 0], path, dim_order="CYX", image_ids=["s2"], mode="append")
    assert ofdb.register(con, "vxs", path) == ["vxs_images", "vxs_chunks"]
    sql = _check_dataset_views(con, "vxs", truth)
    assert "Filters:" in _scan_box(_explain(con, sql), "ARROW_SCAN")


def test_chunk_functions_on_unnested_record_chunks(con, data):
    rows = con.sql(f"""
        SELECT cell_id, ch.c, ome_chunk_values(ch.pixel_bytes, ch.compression, ch.dtype,
                                               ch.shape_z, ch.shape_y, ch.shape_x) AS v
        FROM (SELECT cell_id, unnest(ome_arrow.chunks) AS ch FROM {_src(data, 'bytes')} WHERE cell_id < 3)
        ORDER BY cell_id, ch.c
    """).fetchall()
    assert len(rows) == 9
    for cid, c, v in rows:
        assert np.array_equal(np.asarray(v, dtype=np.float64), data["crops"][cid][0, c, 0].reshape(-1))
    assert con.sql("SELECT ome_chunk_values(NULL, 'zstd', 'uint8', 1, 2, 2)").fetchall() == [(None,)]


def test_kernels_accept_duckdb_struct_batches(data):
    """The arrays DuckDB hands to UDFs (binary pixel_bytes, DuckDB field types) decode."""
    from omeframe.query import kernels

    c = duckdb.connect()
    try:
        t = c.sql(f"SELECT ome_arrow FROM {_src(data, 'bytes')}").to_arrow_table()
    finally:
        c.close()
    col = t["ome_arrow"]
    st = kernels.stats(col, pa.array([0, 1, 2] * (N_CROPS // 3)))
    assert pc.struct_field(st, "max").to_pylist()[:3] == [
        data["crops"][i][:, i % 3].max() for i in range(3)
    ]


# ------------------------------------------------------------------ files written by ome-arrow 0.1.0
@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # list variant, chunks and planes
        {"chunk_encoding": "bytes", "chunk_compression": "zstd"},
        {"build_chunks": False},  # planes only
    ],
    ids=["list", "bytes-zstd", "planes-only"],
)
def test_records_written_by_ome_arrow(con, tmp_path, kwargs):
    ome_arrow = pytest.importorskip("ome_arrow")
    a = np.random.default_rng(5).integers(0, 1000, (2, 3, 40, 50), dtype=np.uint16)
    path = tmp_path / "oa.parquet"
    ome_arrow.to_ome_parquet(ome_arrow.from_numpy(a, dim_order="CZYX", chunk_shape=(1, 16, 32), **kwargs), str(path))
    ofdb.register(con, "oa", path)
    q = "SELECT ome_shape(image), ome_stats(image, 1), ome_crop(image, 3, 4, 20, 30) FROM oa"
    shape, s, crop = con.sql(q).fetchall()[0]
    assert tuple(shape) == (1, 2, 3, 40, 50)
    b = a[1].astype(np.float64)
    assert (s["min"], s["max"]) == (b.min(), b.max())
    assert s["mean"] == pytest.approx(b.mean(), rel=1e-12) and s["std"] == pytest.approx(b.std(), rel=1e-12)
    t = con.sql("SELECT ome_crop(image, 3, 4, 20, 30) AS r, ome_thumbnail(image, 16) AS p FROM oa").to_arrow_table()
    assert np.array_equal(of.to_numpy(t["r"][0])[0], a[:, :, 4:34, 3:23])
    assert t["p"][0].as_py()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ register() = the native scans
SCAN_QUERIES = {
    "header-only count by well": "SELECT well, count(*) AS n FROM {t} GROUP BY well ORDER BY well",
    "filter + pixels": "SELECT cell_id, ome_arrow FROM {t} WHERE area > 80 ORDER BY cell_id",
    "all rows + pixels": "SELECT cell_id, ome_arrow FROM {t} ORDER BY cell_id",
    "filter + pixel function": (
        "SELECT cell_id, ome_stats(ome_arrow, 1).mean AS m FROM {t} WHERE well = 'A2' ORDER BY cell_id"
    ),
}


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
@pytest.mark.parametrize("name", list(SCAN_QUERIES))
def test_register_reads_through_the_native_scan(con, data, fmt, name):
    """A registered record table is DuckDB's read_parquet (Parquet) or the Vortex Arrow
    dataset (Vortex) as it is: same rows, and EXPLAIN shows that scan operator."""
    path = data["paths"]["bytes"]
    if fmt == "vortex":
        vortex_plain_dataset = _vortex_wrapper()
        path = of.write_table(data["root"] / "scan.vortex", of.read_table(path))
        con.register("native_vx", vortex_plain_dataset(path))
        native, operator = "native_vx", "ARROW_SCAN"
    else:
        native, operator = f"read_parquet('{path}')", "READ_PARQUET"
    ofdb.register(con, "cells", path)
    sql = SCAN_QUERIES[name]
    ours = con.sql(sql.format(t="cells")).to_arrow_table()
    theirs = con.sql(sql.format(t=native)).to_arrow_table()
    assert ours.num_rows > 0 and ours.equals(theirs)
    plan = _explain(con, sql.format(t="cells"))
    assert operator in plan, plan


def test_damaged_pixels_never_reach_duckdb(tmp_path):
    """DuckDB's Parquet reader checks no page CRCs: register() checks them first (verify=True); Vortex
    views check each row's pixel CRC whenever a query reads the record column."""
    import duckdb

    from omeframe.storage.parquet_crc import CheckedParquetFile
    from vortex_damage import write_flipped

    stack = np.random.default_rng(4).integers(0, 255, (30, 3, 16, 16), dtype=np.uint8)
    path = of.write_table(tmp_path / "t.parquet", stack, dim_order="CYX", columns={"cell_id": list(range(30))})
    con = ofdb.connect()
    ofdb.register(con, "fine", path)
    assert con.sql("SELECT count(*) FROM fine").fetchall() == [(30,)]
    with CheckedParquetFile(path) as pf:
        leaf = pf._leaves(["ome_arrow"])[-1]
        pages = pf._pages(pf.metadata.row_group(0), 0, leaf)
        at = int(pages.starts[0] + pages.lengths[0] // 2)
    data = bytearray(path.read_bytes())
    data[at] ^= 0x08
    path.write_bytes(bytes(data))
    with pytest.raises(of.ChunkChecksumError, match="t.parquet.*fails its CRC-32"):
        ofdb.register(con, "cells", path)
    ofdb.register(con, "cells", path, verify=False)  # the caller's choice: the view reads unchecked
    with pytest.raises(TypeError, match="verify must be True or False"):
        ofdb.register(con, "x", path, verify="yes")

    vx = tmp_path / "t.vortex"
    write_flipped(vx, stack, row=13, chunk=2, mask=0x40)
    with pytest.raises(of.CorruptFileError, match=r"t.vortex.*before the footer\) fail their CRC-32"):
        ofdb.register(con, "vcells", vx)  # its body, checked at register like Parquet's pages
    ofdb.register(con, "vcells", vx, verify=False)  # the scans' row checks still name the row
    for sql in ("SELECT ome_arrow FROM vcells", "SELECT ome_stats(ome_arrow, 2) FROM vcells"):
        with pytest.raises(duckdb.Error, match=r"header fields of 1 row\(s\) fail their CRC-32 \(rows 13\)"):
            con.sql(sql).fetchall()

    ds = of.write_dataset(stack[0], tmp_path / "ds", dim_order="CYX", chunk_shape=(1, 8, 8), image_ids=["a"])
    images = ds.images_path
    raw = bytearray(images.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    images.write_bytes(bytes(raw))
    with pytest.raises(of.ChunkChecksumError, match="images table.*fails the CRC-32"):
        ofdb.register(con, "slide", tmp_path / "ds")


def test_damaged_chunks_of_a_vortex_dataset_never_reach_duckdb(tmp_path):
    """A Vortex dataset's chunks view checks every payload a query reads against its row's checksum
    (Vortex stores no checksums of its own; Parquet parts are checked page by page at register)."""
    import duckdb

    from omeframe.formats.vortex.file import read_vortex_table, write_vortex_table

    stack = np.random.default_rng(5).integers(0, 255, (3, 16, 16), dtype=np.uint8)
    root = tmp_path / "vds"
    of.write_dataset(stack, root, dim_order="CYX", chunk_shape=(1, 8, 8), image_ids=["a"], format="vortex")
    (part,) = (root / "chunks").glob("part-*.vortex")
    con = ofdb.connect()
    ofdb.register(con, "fine", root)
    intact = con.sql("SELECT pixel_bytes FROM fine_chunks ORDER BY c, y, x").fetchall()
    assert len(intact) == 12
    # damaged on disk after it was written: one payload byte differs, its checksum is the intact one
    table = read_vortex_table(part)
    payloads = table.column("pixel_bytes").to_pylist()
    payloads[5] = bytes([payloads[5][0] ^ 0x10]) + payloads[5][1:]
    at = table.schema.get_field_index("pixel_bytes")
    write_vortex_table(table.set_column(at, "pixel_bytes", pa.array(payloads, pa.large_binary())), part)
    ofdb.register(con, "slide", root)
    assert con.sql("SELECT count(*), sum(nbytes) FROM slide_chunks").fetchall()[0][0] == 12  # no payload read
    for sql in (
        "SELECT pixel_bytes FROM slide_chunks",
        "SELECT octet_length(pixel_bytes) FROM slide_chunks WHERE c = 1",
    ):
        with pytest.raises(
            duckdb.Error, match=r"the .pixel_bytes. of 1 row\(s\) fail their CRC-32 \(the first: \{.image_id.: .a."
        ):
            con.sql(sql).fetchall()
    assert con.sql("SELECT octet_length(pixel_bytes) FROM slide_chunks WHERE c = 2").fetchall()  # other chunks read

    from omeframe.formats.vortex.arrow_dataset import PayloadCrcs, vortex_plain_dataset

    checked = vortex_plain_dataset(part, payload_crcs=PayloadCrcs("pixel_bytes", "checksum", ("image_id",)))
    with pytest.raises(of.ChunkChecksumError, match=r"1 row\(s\) fail their CRC-32 \(the first: \{'image_id': 'a'\}"):
        checked.take([4, 5], columns=["pixel_bytes"])  # takes go through the check too
    with pytest.raises(ValueError, match=r"names column\(s\) \['crc'\]"):
        vortex_plain_dataset(part, payload_crcs=PayloadCrcs("pixel_bytes", "crc"))
