"""The CAREamics-style loader protocol: load_arrays, load_tiffs, load_iter_tiff,
load_zarrs, load_czis and load_custom_file over real files, axes validation,
the sample axis S, laziness, and use by plans, scan, ingest and datasets.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tifffile
import zarr

import omeframe as of
from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import LazySource
from omeframe.errors import CorruptFileError, DimOrderError, SchemaError
from omeframe.loaders import (
    ImageStack,
    ImageStacks,
    load_arrays,
    load_custom_file,
    load_czis,
    load_iter_tiff,
    load_tiffs,
    load_zarrs,
    parse_zarr_uri,
)

RNG = np.random.default_rng(3)


def _u16(*shape):
    return RNG.integers(0, 65535, shape, dtype=np.uint16)


def test_protocol_signatures():
    """Every loader takes (source, axes, ...) like CAREamics' ImageStackLoader."""
    for f in (load_arrays, load_tiffs, load_iter_tiff, load_zarrs, load_czis, load_custom_file):
        params = list(inspect.signature(f).parameters)
        assert params[:2] == ["source", "axes"], f.__name__
    kw = inspect.signature(load_custom_file).parameters
    assert kw["read_func"].kind is inspect.Parameter.KEYWORD_ONLY and "read_kwargs" in kw


# ------------------------------------------------------------------ axes
@pytest.mark.parametrize(
    "axes, message",
    [
        ("ZYX", r"names 3 axes but array 0 has 4 dimensions \(shape \(2, 3, 8, 9\)\)"),
        ("CQYX", r"unknown letter\(s\) \['Q'\]"),
        ("CCYX", r"repeats letter\(s\) \['C'\]"),
        ("TCZY", r"lacks \['X'\]"),
        ("", "non-empty string"),
    ],
)
def test_axes_errors(axes, message):
    with pytest.raises(DimOrderError, match=message) as ei:
        load_arrays([np.zeros((2, 3, 8, 9), np.uint8)], axes)
    assert isinstance(ei.value, ValueError)


# ------------------------------------------------------------------ arrays
def test_load_arrays_views_sample_axis_and_any_order():
    a = _u16(4, 3, 8, 9)
    stacks = load_arrays(a, "SCYX")
    assert isinstance(stacks, ImageStacks) and len(stacks) == 4
    assert all(isinstance(s, ImageStack) and isinstance(s, LazySource) for s in stacks)
    assert stacks.shapes == [(1, 3, 1, 8, 9)] * 4 and stacks[2].sample == 2
    np.testing.assert_array_equal(stacks[2].to_numpy(), a[2])
    assert stacks[1].header().image_id == "array0_s1"
    # axes in any order: Y X C (channels last)
    b = _u16(8, 9, 2)
    (s,) = load_arrays([b], "YXC")
    assert s.shape == (1, 2, 1, 8, 9)
    np.testing.assert_array_equal(s.read(c=[1])[0, 0, 0], b[..., 1])
    np.testing.assert_array_equal(s.to_numpy(), b)
    # several arrays
    many = load_arrays([_u16(5, 6), _u16(7, 8)], "YX")
    assert many.shapes == [(1, 1, 1, 5, 6), (1, 1, 1, 7, 8)]


def test_stacks_work_with_plans_scan_ingest_and_datasets(tmp_path):
    a = _u16(2, 3, 4, 16, 20)
    stacks = load_arrays([a], "TCZYX")
    s = stacks[0]
    img = stacks.scan(0)
    assert isinstance(img, of.OMEArrow) and img.is_lazy
    roi = img.select(t=[1], z=[2], y=(3, 9))
    assert "TCZYX" in roi.explain()
    np.testing.assert_array_equal(roi.export("numpy"), a[1:2, :, 2:3, 3:9])
    np.testing.assert_array_equal(LazyImage(s).select(c=[0]).execute(), a[:, :1])
    rec = s.ingest(image_id="arr")
    assert isinstance(rec, pa.StructScalar)
    np.testing.assert_array_equal(of.to_numpy(rec), a)
    samples = load_arrays(_u16(3, 10, 12), "SYX")
    ds = samples.write_dataset(tmp_path / "ds", chunk_shape=(1, 8, 8))
    assert sorted(ds.image_ids) == ["array0_s0", "array0_s1", "array0_s2"]
    np.testing.assert_array_equal(
        of.scan(ds, image_id="array0_s1").export("numpy")[0, 0, 0], samples[1].to_numpy()
    )
    of.write_dataset(list(load_arrays([a], "TCZYX")), tmp_path / "ds2", image_ids=["x"])
    np.testing.assert_array_equal(of.scan(tmp_path / "ds2", image_id="x").export("numpy"), a)


# ------------------------------------------------------------------ TIFF
@pytest.fixture
def tiffs(tmp_path):
    z = _u16(5, 12, 14)
    tifffile.imwrite(tmp_path / "zstack.tif", z, photometric="minisblack")
    p = _u16(12, 14)
    tifffile.imwrite(tmp_path / "plane.tif", p)
    rgb = RNG.integers(0, 255, (12, 14, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    return tmp_path, z, p, rgb


def test_load_tiffs_axes_override_and_split(tiffs):
    folder, z, p, rgb = tiffs
    (zs,) = load_tiffs([folder / "zstack.tif"], "ZYX")
    assert zs.shape == (1, 1, 5, 12, 14) and zs.kind == "tiff"
    np.testing.assert_array_equal(zs.read(z=[1, 3], y=(2, 9))[0, 0], z[[1, 3], 2:9])
    samples = load_tiffs(folder / "zstack.tif", "SYX")
    assert len(samples) == 5 and samples.shapes[0] == (1, 1, 1, 12, 14)
    np.testing.assert_array_equal(samples[4].to_numpy(), z[4])
    (c,) = load_tiffs([folder / "zstack.tif"], "CYX")
    assert c.shape == (1, 5, 1, 12, 14)
    (pl,) = load_tiffs([str(folder / "plane.tif")], "YX")
    np.testing.assert_array_equal(pl.to_numpy(), p)
    (col,) = load_tiffs([folder / "rgb.tif"], "YXC")
    assert col.shape == (1, 3, 1, 12, 14) and col.dtype == np.uint8
    np.testing.assert_array_equal(col.to_numpy(), rgb)


def test_load_tiffs_errors(tiffs):
    folder, *_ = tiffs
    with pytest.raises(DimOrderError, match=r"'CZYX' names 4 axes but TIFF .*zstack.tif.* has 3 dimensions"):
        load_tiffs([folder / "zstack.tif"], "CZYX")
    with pytest.raises(FileNotFoundError, match="no such TIFF file"):
        load_tiffs([folder / "nope.tif"], "YX")
    (folder / "junk.tif").write_bytes(b"junk")
    with pytest.raises(CorruptFileError, match="not a readable TIFF"):
        load_tiffs([folder / "junk.tif"], "YX")
    with pytest.raises(SchemaError, match="series 3 does not exist"):
        load_tiffs([folder / "plane.tif"], "YX", series=3)


def test_load_iter_tiff_is_lazy_over_files(tiffs):
    folder, z, p, _ = tiffs
    it = load_iter_tiff([folder / "plane.tif", folder / "missing.tif"], "YX")
    assert isinstance(it, Iterator)
    first = next(it)  # the missing second file is not touched yet
    np.testing.assert_array_equal(first.to_numpy(), p)
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        next(it)
    out = list(load_iter_tiff([folder / "zstack.tif"], "SYX"))
    assert len(out) == 5 and all(isinstance(s, ImageStack) for s in out)


# ------------------------------------------------------------------ zarr
def _ome_zarr(path: Path, a: np.ndarray) -> None:
    """A minimal OME-Zarr 0.4 image (czyx) with two levels."""
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    g.create_array("0", shape=a.shape, chunks=(1, 1, 8, 8), dtype=a.dtype)[:] = a
    half = a[..., ::2, ::2]
    g.create_array("1", shape=half.shape, chunks=(1, 1, 8, 8), dtype=a.dtype)[:] = half
    g.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": "ome",
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 2.0, 0.5, 0.5]}]},
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1, 2.0, 1.0, 1.0]}]},
            ],
        }
    ]


def test_load_zarrs_store_uri_and_samples(tmp_path):
    a = _u16(3, 2, 16, 18)
    z = zarr.create_array(str(tmp_path / "plain.zarr"), shape=a.shape, chunks=(1, 1, 8, 8), dtype=a.dtype)
    z[:] = a
    stacks = load_zarrs([tmp_path / "plain.zarr"], "SCYX")
    assert len(stacks) == 3 and stacks[0].kind == "zarr"
    np.testing.assert_array_equal(stacks[1].to_numpy(), a[1])
    plan = LazyImage(stacks[2]).select(c=[1], y=(0, 8), x=(0, 8))
    assert plan.info().chunks_touched == 1  # chunk-level reads
    np.testing.assert_array_equal(plan.execute()[0, 0, 0], a[2, 1, :8, :8])

    g = zarr.open_group(str(tmp_path / "store.zarr"), mode="w")
    g.create_array("grp/arr", shape=a.shape, chunks=(1, 1, 8, 8), dtype=a.dtype)[:] = a
    uri = f"file://{tmp_path}/store.zarr/grp/arr"
    assert parse_zarr_uri(uri) == (tmp_path / "store.zarr", "grp/arr")
    (tz,) = load_zarrs([uri], "TCYX")
    assert tz.shape == (3, 2, 1, 16, 18)
    np.testing.assert_array_equal(tz.to_numpy(), a)


def test_load_zarrs_ome_levels(tmp_path):
    a = _u16(2, 3, 16, 20)
    _ome_zarr(tmp_path / "img.zarr", a)
    (full,) = load_zarrs([tmp_path / "img.zarr"], "CZYX")
    assert full.shape == (1, 2, 3, 16, 20)
    assert full.header().physical_size_z == pytest.approx(2.0)
    np.testing.assert_array_equal(full.to_numpy(), a)
    (low,) = load_zarrs([tmp_path / "img.zarr"], "CZYX", level=1)
    (lowest,) = load_zarrs([tmp_path / "img.zarr"], "CZYX", level=-1)
    assert low.shape == lowest.shape == (1, 2, 3, 8, 10)
    np.testing.assert_array_equal(lowest.to_numpy(), a[..., ::2, ::2])
    # axes that differ from the metadata view the level array as the caller says
    samples = load_zarrs([tmp_path / "img.zarr"], "SZYX")
    assert len(samples) == 2
    np.testing.assert_array_equal(samples[1].to_numpy(), a[1])


def test_load_zarrs_errors(tmp_path):
    a = _u16(2, 3, 16, 20)
    _ome_zarr(tmp_path / "img.zarr", a)
    with pytest.raises(SchemaError, match="2 resolution levels; level 5 does not exist"):
        load_zarrs([tmp_path / "img.zarr"], "CZYX", level=5)
    with pytest.raises(DimOrderError, match=r"'ZYX' names 3 axes but OME-Zarr .*level 0.* has 4 dimensions"):
        load_zarrs([tmp_path / "img.zarr"], "ZYX")
    g = zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    g.create_array("x", shape=(4, 4), dtype="u1")
    with pytest.raises(SchemaError, match=r"without OME-Zarr 'multiscales'.*file://"):
        load_zarrs([tmp_path / "bare.zarr"], "YX")
    with pytest.raises(FileNotFoundError, match="no such zarr store"):
        load_zarrs([tmp_path / "none.zarr"], "YX")
    with pytest.raises(ValueError, match=r"must end with '\.zarr'"):
        load_zarrs(["file:///tmp/not_a_store/arr"], "YX")
    with pytest.raises(FileNotFoundError, match="has no node 'nope'"):
        load_zarrs([f"file://{tmp_path}/bare.zarr/nope"], "YX")


# ------------------------------------------------------------------ CZI
def test_load_czis_axes_validation_needs_no_reader():
    for bad in ("CYX", "SYX", "SZCYX", "YX"):
        with pytest.raises(DimOrderError, match="must be one of"):
            load_czis(["whatever.czi"], bad)


def test_load_czis_scenes(tmp_path):
    pytest.importorskip("pylibCZIrw")
    from pylibCZIrw import czi as pyczi

    s0 = _u16(2, 16, 20)
    s1 = _u16(2, 10, 12)
    with pyczi.create_czi(str(tmp_path / "two.czi"), exist_ok=True) as w:
        for z in range(2):
            w.write(s0[z][..., None], plane={"Z": z, "C": 0}, location=(0, 0), scene=0)
            w.write(s1[z][..., None], plane={"Z": z, "C": 0}, location=(200, 0), scene=1)
    stacks = load_czis([tmp_path / "two.czi"], "SCZYX")
    assert [s.sample for s in stacks] == [0, 1] and stacks.shapes == [(1, 1, 2, 16, 20), (1, 1, 2, 10, 12)]
    np.testing.assert_array_equal(stacks[1].to_numpy()[0], s1)
    with pytest.raises(DimOrderError, match=r"has Z=2 but axes 'SCYX' have no Z; use axes='SCZYX'"):
        load_czis([tmp_path / "two.czi"], "SCYX")


# ------------------------------------------------------------------ custom
def test_load_custom_file_is_lazy_and_reads_once(tmp_path):
    a = _u16(2, 6, 7)
    (tmp_path / "a.raw").write_bytes(a.tobytes())
    calls = []

    def read_raw(path, *, shape, dtype):
        calls.append(Path(path).name)
        return np.fromfile(path, dtype=dtype).reshape(shape)

    stacks = load_custom_file([tmp_path / "a.raw"], "CYX", read_func=read_raw,
                              read_kwargs={"shape": (2, 6, 7), "dtype": "uint16"})
    assert calls == []  # nothing read until used
    s = stacks[0]
    assert s.shape == (1, 2, 1, 6, 7) and s.kind == "custom"
    np.testing.assert_array_equal(s.to_numpy(), a)
    np.testing.assert_array_equal(s.read(c=[1])[0, 0, 0], a[1])
    assert calls == ["a.raw"]


def test_load_custom_file_memmap_reads_planes(tmp_path):
    a = _u16(6, 10, 11)
    np.save(tmp_path / "m.npy", a)
    (s,) = load_custom_file([tmp_path / "m.npy"], "ZYX", read_func=lambda p: np.load(p, mmap_mode="r"))
    info = LazyImage(s).select(z=[4]).info()
    assert info.chunks_total == 6 and info.chunks_touched == 1  # one plane of six
    np.testing.assert_array_equal(LazyImage(s).select(z=[4]).execute()[0, 0, 0], a[4])


def test_load_custom_file_samples_and_errors(tmp_path):
    a = _u16(3, 5, 6)
    np.save(tmp_path / "s.npy", a)
    stacks = load_custom_file([tmp_path / "s.npy"], "SYX", read_func=np.load)
    assert len(stacks) == 3 and stacks[2].header().image_id == "s_s2"
    np.testing.assert_array_equal(stacks[2].to_numpy(), a[2])

    (wrong,) = load_custom_file([tmp_path / "s.npy"], "CZYX", read_func=np.load)
    with pytest.raises(DimOrderError, match=r"'CZYX' names 4 axes but the array read_func load returned for .*s.npy"):
        _ = wrong.shape
    with pytest.raises(DimOrderError, match="names 4 axes"):
        load_custom_file([tmp_path / "s.npy"], "SCYX", read_func=np.load)
    (none,) = load_custom_file([tmp_path / "s.npy"], "YX", read_func=lambda p: None)
    with pytest.raises(TypeError, match="returned None"):
        LazyImage(none).execute()
    with pytest.raises(TypeError, match="read_func must be callable"):
        load_custom_file([tmp_path / "s.npy"], "YX", read_func="np.load")
    (gone,) = load_custom_file([tmp_path / "gone.npy"], "YX", read_func=np.load)
    with pytest.raises(FileNotFoundError, match="gone.npy"):
        _ = gone.shape
