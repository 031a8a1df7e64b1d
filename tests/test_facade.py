"""The OMEArrow facade and the reference (ome-arrow 0.1.0) API surface."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import omeframe as of

oa = pytest.importorskip("ome_arrow")
pytest.importorskip("vortex")


def _arr(shape=(2, 3, 20, 24), dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1000, shape).astype(dtype)


@pytest.fixture()
def arr():
    return _arr()


@pytest.fixture()
def rec(arr):
    return of.from_numpy(arr, dim_order="CZYX", image_id="img-7", name="cells", chunk_shape=(2, 8, 8))


# ---------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".vortex"])
def test_from_path(tmp_path, suffix):
    imgs = [_arr(seed=s) for s in range(3)]
    path = of.write_table(tmp_path / f"t{suffix}", imgs, dim_order="CZYX", columns={"k": [1, 2, 3]})
    o = of.OMEArrow(path, row_index=2)
    assert o.shape == (1, 2, 3, 20, 24) and o.dtype == np.int16
    assert np.array_equal(o.export("numpy")[0], imgs[2])
    assert np.array_equal(of.OMEArrow(str(path)).export()[0], imgs[0])
    assert np.array_equal(of.OMEArrow(path, column_name="ome_arrow", row_index=1).export()[0], imgs[1])
    assert str(path) in repr(o)


def test_from_path_custom_column_and_missing(tmp_path, rec, arr):
    path = tmp_path / "one.parquet"
    of.to_ome_parquet(rec, str(path))  # reference default column "image"
    # "ome_arrow" -> "image" is the conventional fallback: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        o = of.OMEArrow(path)
    assert np.array_equal(o.export()[0], arr)
    # Any other missing name still warns before auto-detecting.
    with pytest.warns(UserWarning, match="'cells' not found"):
        assert of.OMEArrow(path, column_name="cells").data == o.data
    assert of.OMEArrow(path, column_name="image").data == o.data
    with pytest.raises(FileNotFoundError):
        of.OMEArrow(tmp_path / "nope.parquet")


def test_from_dict_scalar_array_ndarray(rec, arr):
    from_scalar = of.OMEArrow(rec)
    assert isinstance(from_scalar.data, pa.StructScalar)
    assert from_scalar.data == rec
    from_dict = of.OMEArrow(of.to_dict(rec))
    assert from_dict.data.type == rec.type
    assert np.array_equal(from_dict.export()[0], arr)
    from_array = of.OMEArrow(pa.repeat(rec, 1))
    assert from_array.data == rec
    from_nd = of.OMEArrow(arr, dim_order="CZYX")
    assert from_nd.shape == (1, 2, 3, 20, 24)
    assert np.array_equal(from_nd.export("numpy")[0], arr)
    from_2d = of.OMEArrow(arr[0, 0])  # dim_order inferred from the rank
    assert from_2d.shape == (1, 1, 1, 20, 24)
    with pytest.raises(TypeError):
        of.OMEArrow(12345)


def test_image_type_override(rec, arr):
    assert rec["image_type"].as_py() is None
    lab = of.OMEArrow(rec, image_type="label")
    assert lab.data["image_type"].as_py() == "label"
    assert lab.data.type == rec.type
    assert np.array_equal(lab.export()[0], arr)  # pixels untouched
    assert lab.data["id"].as_py() == "img-7"
    assert of.OMEArrow(arr, dim_order="CZYX", image_type="label").data["image_type"].as_py() == "label"
    assert of.OMEArrow(rec).data["image_type"].as_py() is None


# ---------------------------------------------------------------------------
# info / export / slice / view
# ---------------------------------------------------------------------------
def test_info(rec):
    info = of.OMEArrow(rec).info()
    assert info["shape"] == (1, 2, 3, 20, 24)
    assert info["type"] == "3D image (z-stack)"
    assert info["dtype"] == "int16" and info["is_multichannel"] is True
    assert "multi-channel (2 channels)" in info["summary"]
    assert info == of.describe_ome_arrow(rec)


def test_export_in_memory(rec, arr):
    o = of.OMEArrow(rec)
    out = o.export("numpy")
    assert out.dtype == np.int16 and np.array_equal(out[0], arr)  # native dtype by default
    u8 = o.export("numpy", dtype=np.uint8, clamp=True)
    assert u8.dtype == np.uint8 and np.array_equal(u8[0], np.clip(arr, 0, 255).astype(np.uint8))
    d = o.export("dict")
    assert isinstance(d, dict) and d["id"] == "img-7" and d["pixels_meta"]["size_c"] == 2
    assert d == of.to_dict(rec)
    assert o.export("scalar") is o.data
    with pytest.raises(ValueError, match="unknown export format 'bmp'"):
        o.export("bmp")
    with pytest.raises(ValueError, match=r"export\(how='tiff'\) needs out=<path>"):
        o.export("tiff")
    with pytest.raises(ValueError, match="needs out="):
        o.export("parquet")


def test_export_files(tmp_path, rec, arr):
    o = of.OMEArrow(rec)
    pq_out = o.export("parquet", out=tmp_path / "o.parquet", parquet_metadata={"who": "me"})
    assert pq_out == str(tmp_path / "o.parquet")
    assert pq.read_schema(pq_out).names == ["ome_arrow"]
    assert pq.read_schema(pq_out).metadata[b"who"] == b"me"
    vx_out = o.export("vortex", out=str(tmp_path / "o.vortex"), vortex_column_name="img")
    assert vx_out == str(tmp_path / "o.vortex")
    assert np.array_equal(of.OMEArrow(pq_out).export()[0], arr)
    assert np.array_equal(of.OMEArrow(vx_out, column_name="img").export()[0], arr)
    # The peer reads the exported Parquet file too.
    peer = oa.from_ome_parquet(pq_out, column_name="ome_arrow")
    assert np.array_equal(oa.to_numpy(peer, dtype=np.int16)[0], arr)


def test_slice(rec, arr):
    s = of.OMEArrow(rec).slice(3, 19, 2, 11, c_indices=[1], z_indices=[0, 2])
    assert isinstance(s, of.OMEArrow)
    assert s.shape == (1, 1, 2, 9, 16)
    assert np.array_equal(s.export()[0, 0], arr[1][[0, 2]][:, 2:11, 3:19])
    assert s.data["id"].as_py() == "img-7"


def test_view_returns_figure(rec, arr):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    fig, ax, img = of.OMEArrow(rec, tcz=(0, 1, 2)).view(show=False)
    try:
        assert isinstance(fig, Figure)
        assert np.array_equal(np.asarray(img.get_array()), arr[1, 2])
        assert ax.get_title() == "t=0 c=1 z=2"
        fig2, _, img2 = of.OMEArrow(rec).view(tcz=(0, 0, 1), vmin=-5, vmax=5, show=False)
        assert img2.get_clim() == (-5, 5)
        assert np.array_equal(np.asarray(img2.get_array()), arr[0, 1])
        plt.close(fig2)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="unsupported view backend"):
        of.OMEArrow(rec).view(how="vtk", show=False)


# ---------------------------------------------------------------------------
# the reference API surface
# ---------------------------------------------------------------------------
IMPLEMENTED = [
    "OMEArrow",
    "from_numpy",
    "from_torch_array",
    "from_jax_array",
    "to_ome_arrow",
    "to_numpy",
    "plane_from_chunks",
    "to_ome_parquet",
    "to_ome_vortex",
    "from_ome_parquet",
    "from_ome_vortex",
    "slice_ome_arrow",
    "describe_ome_arrow",
    "verify_ome_arrow",
    "view_matplotlib",
    "view_pyvista",
    "OME_ARROW_STRUCT",
    "OME_ARROW_BYTE_STRUCT",
    "OME_ARROW_TAG_TYPE",
    "OME_ARROW_TAG_VERSION",
]
# Not covered here (other issues): from_tiff, from_ome_zarr, from_stack_pattern_path,
# to_ome_tiff, to_ome_zarr, TensorView / LazyTensorView, and the
# OMEArrow lazy API (scan, slice_lazy, collect, tensor_view, lazy=).


def _reference(name):
    from ome_arrow.export import plane_from_chunks
    from ome_arrow.transform import slice_ome_arrow

    extra = {"plane_from_chunks": plane_from_chunks, "slice_ome_arrow": slice_ome_arrow}
    return extra.get(name) or getattr(oa, name)


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_reference_names_importable(name):
    import importlib

    mod = importlib.import_module("omeframe")
    assert hasattr(mod, name) and name in of.__all__
    assert _reference(name) is not None  # the peer has it too


SIGNATURE_FUNCS = [
    "from_numpy",
    "to_numpy",
    "plane_from_chunks",
    "to_ome_parquet",
    "from_ome_parquet",
    "from_ome_vortex",
    "to_ome_vortex",
    "to_ome_arrow",
    "slice_ome_arrow",
    "describe_ome_arrow",
    "verify_ome_arrow",
    "view_pyvista",
]


@pytest.mark.parametrize("name", SIGNATURE_FUNCS)
def test_reference_parameter_names(name):
    ref = inspect.signature(_reference(name)).parameters
    ours = inspect.signature(getattr(of, name)).parameters
    missing = [p for p in ref if p not in ours]
    assert not missing, f"omeframe.{name} lacks reference parameter(s) {missing}"
    # Parameters the reference accepts positionally are positional here too.
    ref_pos = [p for p, v in ref.items() if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    our_pos = [p for p, v in ours.items() if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    # ome-arrow 0.1.0 inserts chunk_encoding/chunk_compression* between chunk_order
    # and build_chunks of to_ome_arrow; nobody passes 25 positional arguments, so
    # only the leading positional parameters are compared there.
    n = ref_pos.index("chunk_order") + 1 if name == "to_ome_arrow" else len(ref_pos)
    assert our_pos[:n] == ref_pos[:n]


# OMEArrow parameters of the reference not implemented yet (see comment above).
NOT_YET = {
    "__init__": {"lazy"},
    "export": {  # OME-TIFF / OME-Zarr writer options
        "dim_order", "compression", "compression_level", "tile", "chunks",
        "zarr_compressor", "zarr_level", "use_channel_colors",
    },
}


@pytest.mark.parametrize("method", ["__init__", "export", "slice", "view", "info"])
def test_facade_parameter_names(method):
    ref = inspect.signature(getattr(oa.OMEArrow, method)).parameters
    ours = inspect.signature(getattr(of.OMEArrow, method)).parameters
    missing = [p for p in ref if p not in ours and p not in NOT_YET.get(method, set())]
    assert not missing, f"OMEArrow.{method} lacks {missing}"


def test_verify_ome_arrow(rec):
    assert of.verify_ome_arrow(rec, of.OME_ARROW_BYTE_STRUCT)
    assert not of.verify_ome_arrow(rec, of.OME_ARROW_STRUCT)
    assert of.verify_ome_arrow(of.to_dict(rec), of.OME_ARROW_BYTE_STRUCT)
    assert not of.verify_ome_arrow({"type": 5, "pixels_meta": "x"}, of.OME_ARROW_STRUCT)
    lst = of.from_numpy(np.zeros((3, 4), np.uint8), chunk_encoding="list")
    assert of.verify_ome_arrow(of.to_dict(lst), of.OME_ARROW_STRUCT)
    assert oa.verify_ome_arrow(of.to_dict(lst), oa.OME_ARROW_STRUCT)
