"""Lazy plans: scan over every source kind, immutability, composition, explain,
single-read guarantees, chunk-statistics filters, property tests and tensor views.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omeframe as of
from omeframe.engine.lazy import _fmt_bytes
from omeframe.storage import files

pytest.importorskip("vortex")

SHAPE = (2, 3, 4, 50, 70)
CHUNK = (2, 16, 32)


def _ref(a, t=None, c=None, z=None, y=None, x=None):
    """numpy reference of a TCZYX selection (index lists, half-open ranges)."""
    t = range(a.shape[0]) if t is None else t
    c = range(a.shape[1]) if c is None else c
    z = range(a.shape[2]) if z is None else z
    y = (0, a.shape[3]) if y is None else y
    x = (0, a.shape[4]) if x is None else x
    return a[np.ix_(list(t), list(c), list(z))][..., y[0] : y[1], x[0] : x[1]]


class CountingInput(files.InputFile):
    """Counts bytes returned by ``read_range`` (all dataset and Parquet reads)."""

    nbytes = 0
    calls = 0

    def read_range(self, offset: int, length: int) -> bytes:
        data = super().read_range(offset, length)
        CountingInput.nbytes += len(data)
        CountingInput.calls += 1
        return data


@pytest.fixture()
def counting(monkeypatch):
    CountingInput.nbytes = 0
    CountingInput.calls = 0
    monkeypatch.setattr(files, "open_input", CountingInput)
    return CountingInput


@pytest.fixture(scope="module")
def arr():
    rng = np.random.default_rng(42)
    return rng.integers(0, 4000, SHAPE).astype(np.uint16)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, arr):
    """One path (or object) per source kind, all holding ``arr`` (TIFF: one plane)."""
    zarr = pytest.importorskip("zarr")
    tifffile = pytest.importorskip("tifffile")
    root = tmp_path_factory.mktemp("sources")
    out: dict[str, dict] = {}

    other = (arr[::-1] + 1).astype(arr.dtype)
    of.write_table(root / "t.parquet", [other, arr, other], dim_order="TCZYX", chunk_shape=CHUNK,
                   column_name="img", row_group_bytes=1 << 10)
    out["record-parquet"] = dict(source=root / "t.parquet", kw=dict(column_name="img", row_index=1), a=arr)
    of.write_table(root / "t.vortex", [other, other, arr], dim_order="TCZYX", chunk_shape=CHUNK)
    out["record-vortex"] = dict(source=root / "t.vortex", kw=dict(row_index=2), a=arr)

    of.write_dataset([other, arr], root / "ds", image_ids=["other", "img"], chunk_shape=CHUNK, dim_order="TCZYX")
    out["dataset"] = dict(source=root / "ds", kw=dict(image_id="img"), a=arr)
    of.write_dataset([arr], root / "dsv", image_ids=["img"], chunk_shape=CHUNK, format="vortex", dim_order="TCZYX")
    out["dataset-vortex"] = dict(source=root / "dsv", kw=dict(image_id="img"), a=arr)

    axes = [
        {"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2.0, 0.5, 0.5]}]}]
    g = zarr.open_group(str(root / "v04.zarr"), mode="w", zarr_format=2)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets, "name": "v04"}]
    z = zarr.create_array(store=str(root / "v04.zarr"), name="0", shape=arr.shape, chunks=(1, 1) + CHUNK,
                          dtype=arr.dtype, zarr_format=2)
    z[:] = arr
    out["ome-zarr-0.4"] = dict(source=root / "v04.zarr", kw={}, a=arr)

    g = zarr.open_group(str(root / "v05.zarr"), mode="w", zarr_format=3)
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets, "name": "v05"}]}
    z = zarr.create_array(store=str(root / "v05.zarr"), name="0", shape=arr.shape, chunks=(1, 1) + CHUNK,
                          dtype=arr.dtype, zarr_format=3)
    z[:] = arr
    out["ome-zarr-0.5"] = dict(source=root / "v05.zarr", kw={}, a=arr)

    zyx = arr[0, 0]
    tifffile.imwrite(root / "tiled.tif", zyx, tile=(16, 32), photometric="minisblack", metadata={"axes": "ZYX"})
    out["tiff"] = dict(source=root / "tiled.tif", kw={}, a=zyx[None, None])

    out["numpy"] = dict(source=arr, kw={}, a=arr)
    return out


SOURCE_KINDS = ["record-parquet", "record-vortex", "dataset", "dataset-vortex", "ome-zarr-0.4",
                "ome-zarr-0.5", "tiff", "numpy"]


# ---------------------------------------------------------------------------
# scan over every source kind
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_scan_each_source_kind(sources, kind):
    s = sources[kind]
    a = s["a"]
    plan = of.scan(s["source"], **s["kw"])
    assert plan.is_lazy and plan.shape == a.shape and plan.dtype == a.dtype
    assert isinstance(plan, of.OMEArrow)
    assert np.array_equal(plan.export("numpy"), a)
    st_, sc, sz, sy, sx = a.shape
    sel = dict(t=[st_ - 1, 0][: st_], c=[sc - 1], z=[sz - 1, 0][: sz], y=(7, 41), x=(19, 60))
    sub = plan.select(**sel)
    assert sub.shape == _ref(a, **sel).shape
    assert np.array_equal(sub.export("numpy"), _ref(a, **sel))
    # OMEArrow.scan is the same entry point
    assert np.array_equal(of.OMEArrow.scan(s["source"], **s["kw"]).select(**sel).export("numpy"), _ref(a, **sel))
    # collect() materialises an OME-Arrow record with the selection's pixels
    col = sub.collect()
    assert not col.is_lazy and np.array_equal(col.export("numpy"), _ref(a, **sel))
    assert np.array_equal(of.to_numpy(col.data), _ref(a, **sel))
    text = sub.explain()
    assert "source:" in text and "chunks:" in text and "reads:" in text


def test_scan_record_table_options(sources, arr):
    p = sources["record-parquet"]["source"]
    assert not np.array_equal(of.scan(p, column_name="img", row_index=0).export("numpy"), arr)
    assert np.array_equal(of.scan(p, column_name="img", row_index=1).export("numpy"), arr)
    assert "column 'img' row 1" in of.scan(p, column_name="img", row_index=1).explain()
    v = sources["record-vortex"]["source"]
    assert np.array_equal(of.scan(v, column_name="ome_arrow", row_index=2).export("numpy"), arr)


def test_dataset_scan_and_open_dataset_scan_agree(sources, arr):
    ds = of.open_dataset(sources["dataset"]["source"])
    p1, p2 = ds.scan("img"), of.scan(ds, image_id="img")
    assert p1.shape == p2.shape == arr.shape
    assert np.array_equal(p1.select(c=[1]).export("numpy"), p2.select(c=[1]).export("numpy"))


# ---------------------------------------------------------------------------
# immutability and composition
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dataset", "record-parquet", "ome-zarr-0.5"])
def test_plans_are_immutable(sources, kind):
    s = sources[kind]
    plan = of.scan(s["source"], **s["kw"])
    before_explain, before_shape = plan.explain(), plan.shape
    before_state = dict(vars(plan))
    narrowed = plan.select(t=[1], c=[2, 0], y=(3, 40))
    sliced = plan.slice_lazy(5, 60, 2, 30, t_indices=[0], z_indices=[3, 1])
    filtered = plan.filter_chunks(of.chunk.max > 10) if kind == "dataset" else plan
    tv = plan.tensor_view(t=0, z=1)
    collected = plan.collect()
    collected_again = plan.collect()
    _ = narrowed.collect(), sliced.collect(), filtered.export("numpy"), tv.to_numpy()
    assert collected is not plan and collected_again is not collected
    assert not collected.is_lazy and plan.is_lazy and narrowed.is_lazy and sliced.is_lazy
    assert vars(plan) == before_state  # no cached result, no changed field
    assert plan.explain() == before_explain and plan.shape == before_shape
    assert narrowed.shape == (1, 2, 4, 37, 70) and sliced.shape == (1, 3, 2, 28, 55)
    assert np.array_equal(collected.export("numpy"), collected_again.export("numpy"))
    # the LazyImage underneath is a frozen value
    with pytest.raises(AttributeError):
        plan._plan.selection = None  # type: ignore[misc]


def test_composition_slice_of_slice(sources, arr):
    plan = of.scan(sources["dataset"]["source"], image_id="img")
    first = plan.slice_lazy(10, 60, 5, 45, t_indices=[1], c_indices=[2, 0])
    second = first.slice_lazy(3, 20, 2, 30, c_indices=[1])
    want = arr[np.ix_([1], [2], range(4))][..., 7:35, 13:30]
    assert second.shape == want.shape
    assert np.array_equal(second.collect().export("numpy"), want)
    # select composes with order and repeats (numpy fancy-index semantics)
    s1 = plan.select(t=[1, 0, 1], c=[2, 1], z=slice(None, None, -1), y=(4, 48), x=(1, 69))
    s2 = s1.select(t=[2, 0], c=[1, 1, 0], z=[0, 3], y=(10, 20), x=(30, 68))
    ref1 = _ref(arr, t=[1, 0, 1], c=[2, 1], z=[3, 2, 1, 0], y=(4, 48), x=(1, 69))
    assert np.array_equal(s2.export("numpy"), _ref(ref1, t=[2, 0], c=[1, 1, 0], z=[0, 3], y=(10, 20), x=(30, 68)))
    # the composed plan reads in source coordinates: explain shows them
    assert "Y 14:24 | X 31:69" in s2.explain()
    # slice_lazy on a materialised object is the eager slice
    eager = plan.collect().slice_lazy(10, 60, 5, 45, t_indices=[1], c_indices=[2, 0])
    assert not eager.is_lazy
    assert np.array_equal(eager.export("numpy"), arr[np.ix_([1], [0, 2], range(4))][..., 5:45, 10:60])


def test_explain_contents(sources, arr):
    path = sources["dataset"]["source"]
    plan = of.scan(path, image_id="img").select(t=[1], c=[2, 0], z=[3], y=(20, 40), x=(30, 40))
    text = plan.explain()
    info = plan._lazy().info()
    assert text.startswith("omeframe plan")
    assert re.search(r"source:\s+parquet dataset .*'img' level 0", text) and str(path) in text
    assert "select:    T [1] | C [2, 0] | Z [3] | Y 20:40 | X 30:40" in text
    assert "output:    TCZYX (1, 2, 1, 20, 10) uint16" in text
    # chunk keys: Z chunk 2 (z 2..3), Y chunks 16 and 32, X chunk 0 and 32, channels 0 and 2
    keys = {tuple(int(v) for v in k) for k in info.chunk_keys}
    assert keys == {(1, c, 2, y, x) for c in (0, 2) for y in (16, 32) for x in (0, 32)}
    assert f"chunks:    8 of {2 * 3 * 2 * 4 * 3}" in text
    assert "(1,0,2,16,0)" in text
    ds = of.open_dataset(path)
    e = ds.entry("img")
    o, _ = e.origins_extents()
    idx = [int(np.flatnonzero((o == k).all(axis=1))[0]) for k in keys]
    assert info.bytes_read == int(e.lengths[idx].sum())
    assert f"reads:     {_fmt_bytes(info.bytes_read)} of pixel data" in text
    assert "metadata" in text
    # a chunked source lists the chunk keys; many keys are abbreviated
    assert "... (+" in of.scan(path, image_id="img").explain()


# ---------------------------------------------------------------------------
# one read: collect, then tensor_view
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dataset", "record-parquet"])
def test_collect_then_tensor_view_reads_source_once(sources, counting, kind):
    s = sources[kind]
    a = s["a"]
    plan = of.scan(s["source"], **s["kw"])
    after_scan = counting.nbytes
    col = plan.slice_lazy(10, 60, 5, 45, t_indices=[1], c_indices=[0, 2]).collect()
    after_collect = counting.nbytes
    assert after_collect > after_scan  # the collect read pixels
    tv = col.tensor_view(z=[2, 3], roi=(5, 3, 20, 30), layout="ZCYX")
    got = tv.to_numpy()
    assert isinstance(tv, of.TensorView)
    assert counting.nbytes == after_collect, "tensor_view after collect re-read the source"
    want = a[np.ix_([1], [0, 2], [2, 3])][..., 5 + 3 : 5 + 33, 10 + 5 : 10 + 25][0].transpose(1, 0, 2, 3)
    assert np.array_equal(got, want)
    assert np.array_equal(col.export("numpy"), a[np.ix_([1], [0, 2], range(4))][..., 5:45, 10:60])
    assert counting.nbytes == after_collect
    # the counter does see reads: a view of a fresh plan goes back to the source
    of.scan(s["source"], **s["kw"]).tensor_view(t=0, z=0, c=0, layout="YX").to_numpy()
    assert counting.nbytes > after_collect


def test_lazy_view_metadata_needs_no_pixels(sources, counting, arr):
    plan = of.scan(sources["dataset"]["source"], image_id="img")
    base = counting.nbytes  # images table only
    lv = plan.tensor_view(t=1, roi=(10, 5, 30, 20), layout="ZCHW", dtype="float32")
    assert isinstance(lv, of.LazyTensorView)
    assert lv.shape == (4, 3, 20, 30) and lv.dtype == np.float32 and lv.layout == "ZCYX"
    assert lv.strides == (3 * 20 * 30 * 4, 20 * 30 * 4, 30 * 4, 4)
    assert lv.device == "cpu" and "not read" in repr(lv)
    assert "layout:    ZCYX (4, 3, 20, 30)" in lv.explain()
    assert counting.nbytes == base, "shape/dtype/strides/explain read pixels"
    out = lv.to_numpy()
    assert counting.nbytes > base
    assert out.shape == lv.shape and out.dtype == np.float32
    assert np.array_equal(out, arr[1, :, :, 5:25, 10:40].transpose(1, 0, 2, 3).astype(np.float32))
    assert lv.to_numpy(contiguous=True).strides == lv.strides


# ---------------------------------------------------------------------------
# chunk statistics filters
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stats_ds(tmp_path_factory):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 900, (1, 2, 1, 64, 64)).astype(np.uint16)
    hot = [(0, 0, 16), (0, 32, 48), (1, 16, 0)]  # (c, y, x) chunks with bright pixels
    for c, y, x in hot:
        a[0, c, 0, y + 3, x + 5] = 5000
    a[0, 1, 0, 48:64, 48:64] = 0  # an empty chunk
    path = tmp_path_factory.mktemp("stats") / "ds"
    of.write_dataset(a, path, chunk_shape=(1, 16, 16), image_ids=["s"], dim_order="TCZYX")
    return path, a, hot


def test_filter_chunks_skips_reads(stats_ds, counting, monkeypatch):
    from omeframe.formats.dataset import reader as reader_mod

    opened: list[str] = []  # chunk-table reads go through Arrow's memory-mapped files

    def counting_open(p):
        opened.append(str(p))
        return real_open(p)

    real_open = reader_mod.open_parquet
    monkeypatch.setattr(reader_mod, "open_parquet", counting_open)
    path, a, hot = stats_ds
    plan = of.scan(path, image_id="s")
    base = counting.nbytes
    full = plan.export("numpy")
    full_bytes = counting.nbytes - base
    assert np.array_equal(full, a)

    before = len(opened)
    f = plan.filter_chunks(of.chunk.max > 1000)  # reads the statistics columns, once
    assert len(opened) - before >= 1
    stats_reads = len(opened)
    text = f.explain()
    assert "filter:    chunk.max > 1000 (skips 29 touched chunks)" in text
    assert "chunks:    3 of 32" in text
    base = counting.nbytes
    got = f.export("numpy")
    filtered_bytes = counting.nbytes - base
    want = np.zeros_like(a)
    for c, y, x in hot:
        want[0, c, 0, y : y + 16, x : x + 16] = a[0, c, 0, y : y + 16, x : x + 16]
    assert np.array_equal(got, want)
    e = of.open_dataset(path).entry("s")
    o, _ = e.origins_extents()
    kept = [int(np.flatnonzero((o[:, 1] == c) & (o[:, 3] == y) & (o[:, 4] == x))[0]) for c, y, x in hot]
    # the statistics are not read again; only the 3 kept chunks are
    assert filtered_bytes == int(e.lengths[kept].sum()) < full_bytes / 8
    assert len(opened) == stats_reads
    # filters combine with a selection and with each other
    g = plan.select(c=[1]).filter_chunks(of.chunk.max > 1000).filter_chunks(of.chunk.nonzero > 0)
    assert np.array_equal(g.export("numpy"), want[:, [1]])
    empty = plan.filter_chunks(of.chunk.nonzero == 0)
    assert "chunks:    1 of 32" in empty.explain()
    assert not empty.export("numpy").any()
    both = plan.filter_chunks((of.chunk.max > 1000) | ~(of.chunk.mean > -1))
    assert "(chunk.max > 1000) | (~(chunk.mean > -1))" in both.explain()
    assert np.array_equal(both.export("numpy"), want)
    # the unfiltered plan is untouched
    assert "filter:" not in plan.explain()


def test_filter_chunks_errors(stats_ds, sources):
    path, _, _ = stats_ds
    plan = of.scan(path, image_id="s")
    with pytest.raises(TypeError, match="chunk predicate such as omeframe.chunk.max > 1000"):
        plan.filter_chunks(lambda s: s["max"] > 3)
    with pytest.raises(TypeError, match="use & | ~"):
        plan.filter_chunks((of.chunk.max > 1) and (of.chunk.min < 3))
    with pytest.raises(TypeError, match="compare chunk.max with a number"):
        of.chunk.max > "big"  # noqa: B015
    rec = of.scan(sources["record-parquet"]["source"], column_name="img", row_index=1)
    with pytest.raises(of.SelectionError, match="needs per-chunk statistics"):
        rec.filter_chunks(of.chunk.max > 1)


# ---------------------------------------------------------------------------
# property test: lazy result == numpy slicing
# ---------------------------------------------------------------------------
DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]


@st.composite
def _case(draw):
    shape = tuple(draw(st.integers(1, n)) for n in (3, 3, 4, 40, 40))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    chunk = tuple(draw(st.integers(1, s)) for s in shape[2:])
    seed = draw(st.integers(0, 2**16))

    def sel(sh):
        out = {}
        for axis, n in zip("tcz", sh[:3], strict=True):
            if draw(st.booleans()):
                out[axis] = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5))
        for axis, n in zip("yx", sh[3:], strict=True):
            if draw(st.booleans()):
                lo = draw(st.integers(0, n - 1))
                out[axis] = (lo, draw(st.integers(lo + 1, n)))
        return out

    first = sel(shape)
    mid = _ref(np.empty(shape, np.uint8), **first).shape
    second = sel(mid) if draw(st.booleans()) else None
    source = draw(st.sampled_from(["dataset", "dataset-vortex", "record"]))
    return shape, dtype, chunk, seed, first, second, source


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_property_lazy_equals_numpy(case):
    shape, dtype, chunk, seed, first, second, source = case
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        a = rng.normal(0, 1e3, shape).astype(dtype)
    elif dtype.kind == "b":
        a = rng.random(shape) > 0.5
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        if source.startswith("dataset"):
            fmt = "vortex" if source == "dataset-vortex" else "parquet"
            # zstd frames of 0 (one per chunk), 1, 2 or 3 rows: partial-chunk decodes
            frame_bytes = (seed % 4) * min(chunk[-1], shape[-1]) * dtype.itemsize
            of.write_dataset(a, Path(tmp) / "ds", format=fmt, chunk_shape=chunk, image_ids=["p"],
                             dim_order="TCZYX", progress=False, frame_bytes=frame_bytes)
            plan = of.scan(Path(tmp) / "ds", image_id="p")
        else:
            of.write_table(Path(tmp) / "t.parquet", [a, a[::-1]], dim_order="TCZYX", chunk_shape=chunk)
            plan = of.scan(Path(tmp) / "t.parquet", row_index=0)
        want = _ref(a, **first)
        p = plan.select(**first)
        if second is not None:
            want = _ref(want, **second)
            p = p.select(**second)
        assert p.shape == want.shape and p.dtype == a.dtype
        got = p.export("numpy")
        assert got.dtype == a.dtype
        np.testing.assert_array_equal(got, want)
        # materialised through a record, then read again
        np.testing.assert_array_equal(p.collect().export("numpy"), want)


# ---------------------------------------------------------------------------
# tensor views
# ---------------------------------------------------------------------------
@pytest.fixture()
def plan(sources):
    return of.scan(sources["dataset"]["source"], image_id="img")


def test_tensor_view_roi_forms(plan, arr):
    v = plan.tensor_view(t=1, z=2, roi=(10, 5, 30, 20))
    assert v.layout == "CYX" and v.shape == (3, 20, 30)
    assert np.array_equal(v.to_numpy(), arr[1, :, 2, 5:25, 10:40])
    v3 = plan.tensor_view(t=0, roi3d=(10, 5, 1, 30, 20, 2))
    assert v3.layout == "TZCYX" and v3.shape == (1, 2, 3, 20, 30)
    assert np.array_equal(v3.to_numpy(), arr[0:1, :, 1:3, 5:25, 10:40].transpose(0, 2, 1, 3, 4))
    cases = {
        "2d": ((5, 10, 25, 40), dict(t=[0], z=[1]), np.s_[0:1, :, 1:2, 5:25, 10:40]),
        "2d_timelapse": ((1, 5, 10, 2, 25, 40), dict(z=[3]), np.s_[1:2, :, 3:4, 5:25, 10:40]),
        "3d": ((1, 5, 10, 3, 25, 40), dict(t=[1]), np.s_[1:2, :, 1:3, 5:25, 10:40]),
        "4d": ((0, 1, 5, 10, 2, 4, 25, 40), {}, np.s_[0:2, :, 1:4, 5:25, 10:40]),
    }
    for roi_type, (bounds, extra, sl) in cases.items():
        v = plan.tensor_view(roi_nd=bounds, roi_type=roi_type, layout="TCZYX", **extra)
        assert v.shape == arr[sl].shape, roi_type
        assert np.array_equal(v.to_numpy(), arr[sl]), roi_type
    # tile indexes the chunk grid (16 x 32 tiles here)
    vt = plan.tensor_view(t=0, z=0, c=1, tile=(1, 1), layout="YX")
    assert vt.shape == (16, 32)
    assert np.array_equal(vt.to_numpy(), arr[0, 1, 0, 16:32, 32:64])
    edge = plan.tensor_view(t=0, z=0, c=1, tile=(3, 2), layout="YX")
    assert np.array_equal(edge.to_numpy(), arr[0, 1, 0, 48:50, 64:70])


def test_tensor_view_layout_dtype_channel_policy(plan, arr):
    chw = plan.tensor_view(t=0, z=0, layout="chw")
    assert chw.layout == "CYX" and np.array_equal(chw.to_numpy(), arr[0, :, 0])
    hwc = plan.tensor_view(t=0, z=0, layout="HWC")
    assert hwc.layout == "YXC" and np.array_equal(hwc.to_numpy(), arr[0, :, 0].transpose(1, 2, 0))
    tzchw = plan.tensor_view(layout="TZCHW")
    assert np.array_equal(tzchw.to_numpy(), arr.transpose(0, 2, 1, 3, 4))
    u8 = plan.tensor_view(t=0, z=0, c=[2], dtype=np.uint8)
    assert u8.dtype == np.uint8
    assert np.array_equal(u8.to_numpy(), np.clip(arr[0, [2], 0], 0, 255).astype(np.uint8))  # saturating
    with pytest.raises(ValueError, match="layout 'YX' drops C, but 3 C indices are selected"):
        plan.tensor_view(t=0, z=0, layout="YX")
    first = plan.tensor_view(t=0, z=0, c=[2, 1], layout="YX", channel_policy="first")
    assert first.shape == (50, 70) and np.array_equal(first.to_numpy(), arr[0, 2, 0])
    with pytest.raises(ValueError, match="drops Z"):
        plan.tensor_view(t=0, layout="CYX", channel_policy="first")


def test_lazy_tensor_view_select_and_with_layout(plan, arr, counting):
    lv = plan.tensor_view(t=1, z=0, roi=(10, 5, 30, 20))
    base = counting.nbytes
    lv2 = lv.select(t=0)  # replaces t, keeps z and roi
    assert lv2.shape == (3, 20, 30) and np.array_equal(lv2.to_numpy(), arr[0, :, 0, 5:25, 10:40])
    lv3 = lv.select(tile=(0, 1))  # a new spatial selection replaces the roi
    assert lv3.shape == (3, 16, 32) and np.array_equal(lv3.to_numpy(), arr[1, :, 0, 0:16, 32:64])
    lv4 = lv.select(roi=None, c=[1])
    assert lv4.shape == (1, 50, 70) and np.array_equal(lv4.to_numpy(), arr[1, [1], 0])
    wl = lv.with_layout("YXC")
    assert wl.shape == (20, 30, 3) and isinstance(wl, of.LazyTensorView)
    assert np.array_equal(wl.to_numpy(), arr[1, :, 0, 5:25, 10:40].transpose(1, 2, 0))
    # the original view is unchanged by all of the above
    assert lv.shape == (3, 20, 30) and lv.layout == "CYX"
    # an eager TensorView re-lays out without reading again
    tv = lv.collect()
    assert isinstance(tv, of.TensorView)
    n = counting.nbytes
    assert np.array_equal(tv.with_layout("HWC").to_numpy(), arr[1, :, 0, 5:25, 10:40].transpose(1, 2, 0))
    assert np.array_equal(np.asarray(tv), arr[1, :, 0, 5:25, 10:40])
    assert counting.nbytes == n
    assert counting.nbytes > base


def test_iterators_with_prefetch(plan, arr):
    lv = plan.tensor_view(layout="TZCYX")
    plain = list(lv.iter_dlpack(batch_size=1, mode="numpy"))
    pre = list(lv.iter_dlpack(batch_size=1, prefetch=2, mode="numpy"))
    assert len(plain) == len(pre) == 2
    for a_, b_, t in zip(plain, pre, range(2), strict=True):
        assert np.array_equal(a_, b_) and np.array_equal(a_, arr[t : t + 1].transpose(0, 2, 1, 3, 4))
    tiles = list(lv.iter_dlpack(tile_size=(16, 32), prefetch=2))
    tiles0 = list(lv.iter_dlpack(tile_size=(16, 32)))
    assert len(tiles) == 4 * 3
    assert all(np.array_equal(x, y) for x, y in zip(tiles, tiles0, strict=True))
    assert tiles[0].ndim == 1  # mode="arrow": flat buffers
    assert np.array_equal(tiles[0], arr[:, :, :, 0:16, 0:32].transpose(0, 2, 1, 3, 4).reshape(-1))
    both = list(lv.iter_dlpack(batch_size=1, tile_size=(32, 64), prefetch=2, mode="numpy"))
    assert len(both) == 2 * 2 * 2
    assert np.array_equal(both[-1], arr[1:2, :, :, 32:50, 64:70].transpose(0, 2, 1, 3, 4))
    shuffled = list(lv.iter_dlpack(tile_size=(16, 32), shuffle=True, seed=1, prefetch=2))
    assert sorted(x.tobytes() for x in shuffled) == sorted(x.tobytes() for x in tiles)
    # 3-D tiles
    cube = plan.tensor_view(t=1, c=2, layout="ZYX")
    t3 = list(cube.iter_tiles_3d(tile_size=(2, 32, 64), prefetch=2))
    assert len(t3) == 2 * 2 * 2
    assert np.array_equal(t3[0], arr[1, 2, 0:2, 0:32, 0:64])
    assert np.array_equal(t3[-1], arr[1, 2, 2:4, 32:50, 64:70])
    # the eager view iterates from memory and agrees
    eager = cube.collect()
    tiles = eager.iter_tiles_3d(tile_size=(2, 32, 64), prefetch=2)
    assert all(np.array_equal(x, y) for x, y in zip(tiles, t3, strict=True))
    with pytest.raises(ValueError, match="prefetch must be >= 0"):
        list(lv.iter_dlpack(batch_size=1, prefetch=-1))


def test_dlpack_export(plan, arr):
    v = plan.tensor_view(t=0, z=0, c=0, layout="YX")
    flat = v.to_dlpack()
    assert flat.ndim == 1 and np.array_equal(flat, arr[0, 0, 0].reshape(-1))
    shaped = v.to_dlpack(mode="numpy")
    assert np.array_equal(np.from_dlpack(shaped), arr[0, 0, 0])
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        v.to_dlpack(device="tpu")


def test_to_torch(plan, arr, torch):  # torch: tests/conftest.py (skips with the reason where absent)
    t = plan.tensor_view(t=0, z=0, layout="CHW", dtype="float32").to_torch()
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == (3, 50, 70)
    assert np.array_equal(t.numpy(), arr[0, :, 0].astype(np.float32))


def test_to_jax(plan, arr, jax):  # jax: tests/conftest.py
    j = plan.tensor_view(t=0, z=0, layout="CHW", dtype="float32").to_jax()
    assert tuple(j.shape) == (3, 50, 70)
    assert np.array_equal(np.asarray(j), arr[0, :, 0].astype(np.float32))


def test_torch_jax_absent_raise_clear_error(plan, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch_jax(name, *a, **k):
        if name.split(".")[0] in ("torch", "jax"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_torch_jax)
    v = plan.tensor_view(t=0, z=0)
    with pytest.raises(of.OptionalDependencyError, match="PyTorch"):
        v.to_torch()
    with pytest.raises(of.OptionalDependencyError, match="JAX"):
        v.to_jax()



def test_plan_info_is_public_and_matches_explain(tmp_path):
    a = np.arange(2 * 300 * 300, dtype=np.uint16).reshape(1, 2, 1, 300, 300)
    of.write_dataset(a, tmp_path / "d", dim_order="TCZYX", chunk_shape=(1, 128, 128), image_ids=["p"], progress=False)
    plan = of.scan(tmp_path / "d", image_id="p").select(c=[1], y=(100, 200), x=(0, 300))
    info = plan.plan_info()
    assert isinstance(info, of.PlanInfo)
    assert info.out_shape == (1, 1, 1, 100, 300) and info.chunks_touched == 6 and info.chunks_total == 18
    assert f"chunks:    {info.chunks_touched} of {info.chunks_total}" in plan.explain()
    assert plan.is_lazy  # nothing was read
