"""omeframe.compat.ome_arrow's own behaviour: the BioImage adapter, views, deferred warnings, shape errors."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import tifffile

import omeframe as of
from omeframe.compat.ome_arrow import OMEArrow, TensorView, ingest, make_shape_table, to_ome_parquet
from omeframe.compat.ome_arrow.export import to_numpy

ARR = np.arange(1 * 2 * 1 * 3 * 4, dtype=np.uint16).reshape(1, 2, 1, 3, 4)


def test_bioimage_adapter_reads_the_file(tmp_path: Path) -> None:
    p = tmp_path / "img.tif"
    plane = ARR[:, :1]
    tifffile.imwrite(p, plane[0, 0, 0], resolution=(2000.0, 1000.0), resolutionunit="CENTIMETER")
    img = ingest.BioImage(image=p)
    assert (img.dims.T, img.dims.C, img.dims.Z, img.dims.Y, img.dims.X) == (1, 1, 1, 3, 4)
    assert img.physical_pixel_sizes.X == pytest.approx(5.0)
    assert img.physical_pixel_sizes.Y == pytest.approx(10.0)
    np.testing.assert_array_equal(img.data, plane)
    assert len(img.channel_names) == 1
    np.testing.assert_array_equal(to_numpy(ingest.from_tiff(p)), plane)
    with pytest.raises(FileNotFoundError):
        ingest.BioImage(image=tmp_path / "missing.tif")


def test_replaced_bioimage_is_what_from_tiff_ingests(monkeypatch: pytest.MonkeyPatch) -> None:
    other = (ARR * 3).astype(np.uint16)
    fake = SimpleNamespace(
        data=other, dims=SimpleNamespace(T=1, C=2, Z=1, Y=3, X=4),
        physical_pixel_sizes=SimpleNamespace(X=0.5, Y=0.25, Z=2.0, unit="µm"), channel_names=["a", "b"],
    )
    monkeypatch.setattr(ingest, "BioImage", lambda **_kw: fake)
    rec = ingest.from_ome_zarr("nowhere.ome.zarr", chunk_encoding="bytes", chunk_compression="zstd")
    np.testing.assert_array_equal(to_numpy(rec), other)
    pm = rec.as_py()["pixels_meta"]
    assert (pm["physical_size_x"], pm["physical_size_y"], pm["physical_size_z"]) == (0.5, 0.25, 2.0)
    assert [c["name"] for c in pm["channels"]] == ["a", "b"]
    fake.dims.Y = 5
    with pytest.raises(ValueError, match="dims say TCZYX"):
        ingest.from_tiff("x.tif")


def test_views_spell_layouts_with_h_w_and_view_row_0_of_arrays() -> None:
    rec = ingest.from_numpy(ARR)
    other = ingest.from_numpy(ARR + 100)
    chunked = pa.chunked_array([pa.array([rec.as_py()], rec.type), pa.array([other.as_py()], rec.type)])
    view = TensorView(chunked, t=0, z=0)
    assert isinstance(view._data, pa.ChunkedArray) and view.layout == "CHW"
    np.testing.assert_array_equal(view.to_numpy(), ARR[0, :, 0])
    combined = TensorView(chunked, chunk_policy="combine", layout="YXC", t=0, z=0)
    assert isinstance(combined._data, pa.StructArray) and combined.layout == "HWC"
    assert combined.to_numpy().shape == (3, 4, 2)
    assert view.with_layout("TZCYX").layout == "TZCHW"
    with pytest.raises(ValueError, match="Unsupported chunk_policy"):
        TensorView(chunked, chunk_policy="never")
    with pytest.raises(ValueError, match="Unsupported device"):
        view.to_dlpack(device="tpu")
    # omeframe's own view refuses several rows and spells Y/X
    with pytest.raises(of.SchemaError, match="select one row"):
        of.TensorView(chunked)
    assert of.OMEArrow(rec).tensor_view(t=0, z=0).layout == "CYX"


def test_arrow_mode_is_zero_copy_from_parquet_and_warns_on_scalars(tmp_path: Path) -> None:
    out = tmp_path / "rec.parquet"
    to_ome_parquet(ingest.from_numpy(ARR), str(out))
    img = OMEArrow(str(out))
    assert img._struct_array is not None
    values = img.tensor_view(t=0, z=0, c=1).to_dlpack(mode="arrow")
    chunk = img._struct_array.field("chunks")[0].values.field("pixels")[1].values
    assert values.buffers()[1].address + values.offset * 2 == chunk.buffers()[1].address + chunk.offset * 2
    np.testing.assert_array_equal(np.from_dlpack(values), ARR[0, 1, 0].ravel())
    scalar_view = OMEArrow(ingest.from_numpy(ARR)).tensor_view(t=0, z=0, c=1)
    with pytest.warns(UserWarning, match="received a StructScalar"):
        flat = np.from_dlpack(scalar_view.to_dlpack(mode="arrow"))
    np.testing.assert_array_equal(flat, ARR[0, 1, 0].ravel())
    crop = img.tensor_view(t=0, z=0, c=1, roi=(1, 1, 2, 2)).to_dlpack(mode="arrow")  # a flat copy
    np.testing.assert_array_equal(np.from_dlpack(crop), ARR[0, 1, 0, 1:3, 1:3].ravel())


def test_scan_warnings_are_emitted_when_the_data_is_read(tmp_path: Path) -> None:
    out = tmp_path / "rec.parquet"
    to_ome_parquet(ingest.from_numpy(ARR), str(out), column_name="pixels_col")
    img = OMEArrow.scan(str(out))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sliced = img.slice_lazy(0, 2, 0, 2)
        view = img.tensor_view(t=0, z=0, c=0).with_layout("YX")
    assert view.layout == "YX"
    with pytest.warns(UserWarning, match="Requested column 'ome_arrow'"):
        arr = view.collect().to_numpy()
    np.testing.assert_array_equal(arr, ARR[0, 0, 0])
    with pytest.warns(UserWarning, match="Requested column 'ome_arrow'"):
        assert sliced.collect().info()["shape"] == (1, 2, 1, 2, 2)


def test_shape_errors_start_with_ome_arrows_words() -> None:
    with pytest.raises(of.ShapeValidationError, match=r"^geometry row 0: shape table row 0 \(object_id 'c'\)"):
        make_shape_table([{"object_id": "c", "geometry": [0.0, 1.0, 2.0]}], geometry_encoding="geoarrow.point")


def test_shape_parquet_pages_carry_crcs_that_reads_check(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from omeframe.compat.ome_arrow.shapes import read_shape_parquet, write_shape_parquet

    rows = [{"object_id": f"o{i}", "image_id": "img", "geometry": [float(i), 2.0]} for i in range(20)]
    path = tmp_path / "spots.parquet"
    write_shape_parquet(make_shape_table(rows, geometry_encoding="geoarrow.point"), path)
    assert read_shape_parquet(path).num_rows == 20
    cc = pq.read_metadata(path).row_group(0).column(0)  # object_id
    raw = bytearray(path.read_bytes())
    raw[(cc.dictionary_page_offset or cc.data_page_offset) + cc.total_compressed_size - 2] ^= 0x04
    path.write_bytes(bytes(raw))
    with pytest.raises(OSError, match="CRC"):
        read_shape_parquet(path)
