"""Images whose physical pixel size is not known: stored as null, refused by every read in micrometres."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import tifffile

import omeframe
from omeframe.engine.derived import as_source
from omeframe.engine.lazy import LazyImage
from omeframe.errors import UnitError
from omeframe.tiles import TileProvider, get_array_at_mpp

ARR = np.arange(2 * 64 * 48, dtype=np.uint16).reshape(1, 2, 1, 64, 48)


def _unknown() -> pa.StructScalar:
    return omeframe.from_numpy(ARR, dim_order="TCZYX", image_id="cells-7", chunk_shape=(1, 32, 32))


def test_unknown_sizes_are_null_in_the_record_and_the_struct_is_unchanged() -> None:
    rec = _unknown()
    pm = rec["pixels_meta"].as_py()
    assert [pm[f"physical_size_{a}"] for a in "xyz"] == [None, None, None]
    assert [pm[f"physical_size_{a}_unit"] for a in "xyz"] == [None, None, None]
    assert rec.type == omeframe.from_numpy(ARR, dim_order="TCZYX", physical_size_x=0.5).type
    sizes = omeframe.scan(rec).physical_sizes
    assert sizes["x"].value is None and sizes["x"].unit is None
    # given sizes keep their unit; an axis not given stays unknown
    part = omeframe.from_numpy(ARR, dim_order="TCZYX", physical_size_x=0.5, physical_size_y=0.5)
    pm = part["pixels_meta"].as_py()
    assert (pm["physical_size_x"], pm["physical_size_x_unit"]) == (0.5, "µm")
    assert (pm["physical_size_z"], pm["physical_size_z_unit"]) == (None, None)


def test_every_read_in_micrometres_refuses_an_unknown_size_and_says_how_to_fix_it() -> None:
    rec = _unknown()
    plan = omeframe.scan(rec)
    calls = [
        lambda: plan.select(x_um=(0, 2)),
        lambda: plan.select(y_um=(0, 2)),
        lambda: plan.select(z_um=(0, 1)),
        lambda: plan.at_resolution(1.0),
        lambda: LazyImage(as_source(rec)).at_resolution(2.0),
        lambda: get_array_at_mpp(rec, (0, 0), (4, 4), 1.0),
    ]
    for call in calls:
        with pytest.raises(UnitError) as info:
            call()
        msg = str(info.value)
        assert "'cells-7'" in msg and "no physical pixel size" in msg and "not 1 µm" in msg
        assert "physical_size_x=" in msg  # how to fix it
    assert isinstance(UnitError("x"), ValueError)
    # pixel reads and tiles are unaffected
    np.testing.assert_array_equal(np.asarray(plan.select(x=(2, 9), y=(0, 4))), ARR[..., 0:4, 2:9])
    np.testing.assert_array_equal(TileProvider(rec, tile=32).get_tile(0, 0, 1, 0, 1, 1), ARR[0, 1, 0, 32:64, 32:48])


def test_sql_crop_in_micrometres_refuses_an_image_without_a_size() -> None:
    duckdb = pytest.importorskip("duckdb")
    from omeframe.query.duckdb_udfs import register_functions

    known = omeframe.from_numpy(ARR, dim_order="TCZYX", physical_size_x=1.0, physical_size_y=1.0)
    table = pa.table({"ome_arrow": pa.array([known.as_py(), _unknown().as_py()], type=known.type)})
    con = register_functions(duckdb.connect())
    con.register("t", table)
    with pytest.raises(duckdb.Error, match="cells-7.*no physical pixel size"):
        con.sql("SELECT ome_crop_um(ome_arrow, 0, 0, 8, 8, 2.0) AS c FROM t").to_arrow_table()
    one = con.sql("SELECT ome_crop_um(ome_arrow, 0, 0, 8, 8, 2.0) AS c FROM t LIMIT 1").to_arrow_table()
    assert omeframe.to_numpy(one["c"][0]).shape == (1, 2, 1, 4, 4)


def test_a_size_without_a_unit_is_unknown_in_micrometres() -> None:
    rec = omeframe.from_numpy(ARR, dim_order="TCZYX", image_id="nounit")
    d = omeframe.to_dict(rec)
    d["pixels_meta"].update(physical_size_x=0.5, physical_size_y=0.5)  # values, units still null
    with pytest.raises(UnitError, match="'nounit' has physical_size_x=0.5 without a unit"):
        omeframe.scan(pa.scalar(d, type=rec.type)).select(x_um=(0, 1))


def test_tiff_without_resolution_and_ome_zarr_without_units_are_unknown(tmp_path) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, ARR[0, 0, 0], metadata=None)
    with pytest.raises(UnitError, match="no physical pixel size along X"):
        omeframe.scan(plain).select(x_um=(0, 1))
    calibrated = tmp_path / "cal.tif"
    tifffile.imwrite(calibrated, ARR[0, 0, 0], resolution=(10000 / 0.5, 10000 / 0.5), resolutionunit="CENTIMETER")
    assert omeframe.scan(calibrated).select(x_um=(0, 2)).shape[4] == 4
    # OME-Zarr: omeframe writes an unknown size as scale 1 without a unit and reads it back as unknown
    z = omeframe.to_ome_zarr(_unknown(), tmp_path / "u.ome.zarr")
    assert omeframe.scan(z).physical_sizes["x"].unit is None
    with pytest.raises(UnitError, match="without a unit"):
        omeframe.scan(z).at_resolution(1.0)
    k = omeframe.to_ome_zarr(omeframe.from_numpy(ARR, dim_order="TCZYX", physical_size_x=0.5, physical_size_y=0.5),
                             tmp_path / "k.ome.zarr")
    assert omeframe.scan(k).at_resolution(1.0).shape[3:] == (32, 24)
    # an OME-TIFF of an unknown image carries no PhysicalSize and reads back unknown
    t = omeframe.to_ome_tiff(_unknown(), tmp_path / "u.ome.tif")
    assert omeframe.scan(t).physical_sizes["y"].value is None


def test_records_with_unknown_sizes_are_read_by_ome_arrow() -> None:
    oa = pytest.importorskip("ome_arrow")
    rec = _unknown()
    np.testing.assert_array_equal(oa.to_numpy(rec, dtype=np.uint16), ARR)
    assert oa.verify_ome_arrow(omeframe.to_dict(rec), rec.type)
