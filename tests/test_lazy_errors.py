"""Bad inputs to lazy plans and tensor views: precise error types, messages that say
what is wrong and what is valid, and ``fill_missing`` semantics.

Conventions checked here: region/index problems raise
:class:`omeframe.SelectionError` (a ``ValueError``); bad layouts and option
values raise ``ValueError``; an unknown image id raises ``KeyError`` listing the
ids that exist; nothing is read before the error (plans validate eagerly).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import omeframe as of
from omeframe.errors import OmeframeError, RowIndexError, SelectionError

SHAPE = (2, 3, 4, 50, 70)


@pytest.fixture(scope="module")
def arr():
    return np.arange(np.prod(SHAPE), dtype=np.uint32).reshape(SHAPE).astype(np.uint16)


@pytest.fixture(scope="module")
def ds_path(tmp_path_factory, arr):
    path = tmp_path_factory.mktemp("errors") / "ds"
    of.write_dataset([arr, arr[:, :1]], path, chunk_shape=(2, 16, 32), image_ids=["img", "other"],
                     dim_order="TCZYX", progress=False)
    return path


@pytest.fixture(params=["dataset", "record"])
def plan(request, ds_path, arr):
    if request.param == "dataset":
        return of.scan(ds_path, image_id="img")
    return of.scan(of.from_numpy(arr, dim_order="TCZYX", chunk_shape=(2, 16, 32)))


def test_selection_error_is_a_value_error():
    assert issubclass(SelectionError, ValueError) and issubclass(SelectionError, OmeframeError)


# ---------------------------------------------------------------------------
# slice_lazy / select: ROI and index problems
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        # ROI partly or wholly outside the image
        ((0, 100, 0, 10), r"x range \(0, 100\) extends past the image: need 0 <= x0 < x1 <= 70 \(axis X has size 70\)"),
        ((0, 10, 40, 60), r"y range \(40, 60\) extends past the image: need 0 <= y0 < y1 <= 50"),
        ((80, 90, 0, 10), r"x range \(80, 90\) extends past the image"),
        # empty ROI
        ((10, 10, 0, 10), r"x range \(10, 10\) is empty or reversed: need 0 <= x0 < x1 <= 70"),
        ((0, 10, 7, 7), r"y range \(7, 7\) is empty or reversed"),
        # negative bounds
        ((-5, 10, 0, 10), r"x range \(-5, 10\) has a negative bound: need 0 <= x0 < x1 <= 70"),
        ((0, 10, -1, 5), r"y range \(-1, 5\) has a negative bound"),
        # reversed bounds
        ((20, 10, 0, 10), r"x range \(20, 10\) is empty or reversed"),
        ((0, 10, 30, 5), r"y range \(30, 5\) is empty or reversed"),
    ],
)
def test_slice_lazy_bad_roi(plan, args, message):
    with pytest.raises(SelectionError, match=message):
        plan.slice_lazy(*args)
    # the eager slice agrees on the error type
    with pytest.raises(SelectionError):
        plan.collect().slice(*args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(t_indices=[5]), r"t index 5 is out of range: axis T has size 2, valid indices are 0\.\.1"),
        (dict(c_indices=[0, 3]), r"c index 3 is out of range: axis C has size 3, valid indices are 0\.\.2"),
        (dict(z_indices=[-1]), r"z index -1 is out of range: axis Z has size 4, valid indices are 0\.\.3"),
        (dict(z_indices=[]), r"z selection is empty: at least one index is required \(axis Z has size 4\)"),
    ],
)
def test_slice_lazy_bad_indices(plan, kwargs, message):
    with pytest.raises(SelectionError, match=message):
        plan.slice_lazy(0, 10, 0, 10, **kwargs)
    # lazy and eager slices reject the same index sets with the same message
    with pytest.raises(SelectionError, match=message):
        plan.collect().slice(0, 10, 0, 10, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        (dict(t=[2]), SelectionError, r"t index 2 is out of range: axis T has size 2, valid indices are -2..1"),
        (dict(c=3), SelectionError, r"c index 3 is out of range: axis C has size 3"),
        (dict(z=[0, -5]), SelectionError, r"z index -5 is out of range: axis Z has size 4"),
        (dict(t=[]), SelectionError, r"t selection is empty: at least one index is required"),
        (dict(z=slice(4, 9)), SelectionError, r"z slice\(4, 9, None\) selects no index of axis Z \(size 4\)"),
        (dict(y=(0, 51)), SelectionError, r"y range \(0, 51\) extends past the image"),
        (dict(x=(-1, 5)), SelectionError, r"x range \(-1, 5\) has a negative bound"),
        (dict(y=(9, 3)), SelectionError, r"y range \(9, 3\) is empty or reversed"),
        (dict(x=slice(0, 10, 2)), SelectionError, r"X selections are contiguous ranges \(step 1\)"),
        (dict(t=True), TypeError, r"t index must be an integer, not a bool"),
        (dict(c="0"), TypeError, r"c selection must be None, an int, a slice or an iterable of ints"),
        (dict(z=np.array([True, False, True, False])), TypeError, r"pass integer indices"),
        (dict(t=[0.5]), TypeError, r"t index must be an integer, got float"),
        (dict(y=(1, 2, 3)), TypeError, r"y range must be a \(start, stop\) pair"),
    ],
)
def test_select_bad_input(plan, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        plan.select(**kwargs)


def test_nested_selection_checked_against_the_outer_result(plan):
    inner = plan.select(t=[1], y=(10, 20), x=(0, 30))
    with pytest.raises(SelectionError, match=r"y range \(5, 20\) extends past the image: need 0 <= y0 < y1 <= 10"):
        inner.select(y=(5, 20))
    with pytest.raises(SelectionError, match=r"t index 1 is out of range: axis T has size 1"):
        inner.select(t=[1])
    with pytest.raises(SelectionError, match=r"x range \(25, 40\) extends past the image"):
        inner.slice_lazy(25, 40, 0, 5)
    # the valid part still works
    assert inner.select(y=(5, 10)).shape == (1, 3, 4, 5, 30)


# ---------------------------------------------------------------------------
# tensor_view arguments
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        (dict(t=0, z=0, roi=(60, 0, 20, 10)), SelectionError,
         r"roi=\(60, 0, 20, 10\) as \(x, y, w, h\): x range \(60, 80\) extends past the image: "
         r"need 0 <= x0 < x1 <= 70 \(axis X has size 70\)"),
        (dict(t=0, z=0, roi=(0, 45, 10, 10)), SelectionError,
         r"roi=\(0, 45, 10, 10\) as \(x, y, w, h\): y range \(45, 55\) extends past the image: "
         r"need 0 <= y0 < y1 <= 50"),
        (dict(t=0, z=0, roi=(-5, 0, 20, 10)), SelectionError,
         r"roi=\(-5, 0, 20, 10\) .*: x range \(-5, 15\) has a negative bound"),
        (dict(t=0, z=0, roi=(5, 0, 0, 10)), SelectionError,
         r"roi=\(5, 0, 0, 10\) as \(x, y, w, h\): x range \(5, 5\) is empty or reversed"),
        (dict(t=0, z=0, roi=(5, 0, 10, -3)), SelectionError,
         r"roi=\(5, 0, 10, -3\) as \(x, y, w, h\): y range \(0, -3\) has a negative bound"),
        (dict(t=0, roi3d=(0, 0, 3, 10, 10, 2)), SelectionError,
         r"roi3d=\(0, 0, 3, 10, 10, 2\) as \(x, y, z, w, h, d\): z range \(3, 5\) extends past the image: "
         r"need 0 <= z0 < z1 <= 4"),
        (dict(t=0, roi3d=(0, 0, 0, 10, 10, 0)), SelectionError,
         r"roi3d=\(0, 0, 0, 10, 10, 0\) .*: z range \(0, 0\) is empty or reversed"),
        (dict(t=0, z=0, roi_nd=(10, 10, 5, 20), roi_type="2d"), SelectionError,
         r"roi_nd=\(10, 10, 5, 20\) as \(ymin, xmin, ymax, xmax\): y range \(10, 5\) is empty or reversed"),
        (dict(t=0, z=0, roi_nd=(0, 30, 10, 30), roi_type="2d"), SelectionError,
         r"roi_nd=\(0, 30, 10, 30\) .*: x range \(30, 30\) is empty or reversed"),
        (dict(t=0, roi_nd=(0, 0, 0, 9, 5, 5), roi_type="3d"), SelectionError,
         r"roi_nd=\(0, 0, 0, 9, 5, 5\) as \(zmin, .*\): z range \(0, 9\) extends past the image: "
         r"need 0 <= z0 < z1 <= 4"),
        (dict(z=0, roi_nd=(-1, 0, 0, 1, 5, 5), roi_type="2d_timelapse"), SelectionError,
         r"roi_nd=\(-1, 0, 0, 1, 5, 5\) as \(tmin, .*\): t range \(-1, 1\) has a negative bound: "
         r"need 0 <= t0 < t1 <= 2"),
        (dict(roi_nd=(1, 0, 0, 0, 1, 4, 5, 5), roi_type="4d"), SelectionError,
         r"roi_nd=\(1, 0, 0, 0, 1, 4, 5, 5\) .*: t range \(1, 1\) is empty or reversed"),
        (dict(t=0, z=0, roi_nd=(0, 0, 5), roi_type="2d"), ValueError, r"roi_type '2d' takes 4 bounds, got 3"),
        (dict(t=0, roi_nd=(0, 0, 0, 1, 5, 5)), ValueError, r"roi_nd with 6 values is ambiguous"),
        (dict(t=0, z=0, roi_nd=(0, 0, 5, 5), roi_type="5d"), ValueError, r"roi_type must be one of"),
        (dict(t=0, z=0, tile=(4, 0)), SelectionError, r"tile \(4, 0\) is outside the 4 x 3 tile grid of 16x32 tiles"),
        (dict(t=0, z=0, tile=(0, -1)), SelectionError, r"tile \(0, -1\) is outside the 4 x 3 tile grid"),
        (dict(roi=(0, 0, 5, 5), tile=(0, 0)), ValueError, r"give at most one of roi, roi3d, roi_nd, tile"),
        (dict(z=1, roi3d=(0, 0, 0, 5, 5, 1)), ValueError, r"roi3d already selects Z"),
        (dict(t=5), SelectionError, r"t index 5 is out of range: axis T has size 2"),
        (dict(c=[0, 7]), SelectionError, r"c index 7 is out of range"),
        (dict(scene=1), ValueError, r"scene 1 does not exist"),
        (dict(channel_policy="last"), ValueError, r"channel_policy must be 'error' or 'first', got 'last'"),
        (dict(chunk_policy="never"), ValueError, r"chunk_policy must be 'auto', 'combine' or 'keep'"),
    ],
)
def test_tensor_view_bad_input(plan, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        plan.tensor_view(**kwargs)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("CQX", r"layout 'CQX' has unknown letter\(s\) \['Q'\]; use T, Z, C, Y, X \(H and W are accepted"),
        ("abc", r"unknown letter\(s\) \['A', 'B'\]"),
        ("CYXX", r"layout 'CYXX' repeats a dimension"),
        ("CHY", r"layout 'CHY' repeats a dimension"),  # H is an alias of Y
        ("CX", r"layout 'CX' must keep the spatial axes Y and X"),
        ("", r"layout must be a non-empty string"),
        ("YX", r"layout 'YX' drops C, but 3 C indices are selected; select one \(c=...\) or channel_policy='first'"),
        ("CYX", r"layout 'CYX' drops T, but 2 T indices are selected"),
    ],
)
def test_tensor_view_bad_layout(plan, layout, message):
    kwargs = dict(z=0) if layout == "CYX" else dict(t=0, z=0)
    with pytest.raises(ValueError, match=message):
        plan.tensor_view(layout=layout, **kwargs)


def test_bad_layout_on_existing_views(plan):
    lv = plan.tensor_view(t=0, z=0)
    with pytest.raises(ValueError, match=r"unknown letter\(s\) \['Q'\]"):
        lv.with_layout("QYX")
    with pytest.raises(ValueError, match=r"unknown letter"):
        lv.collect().with_layout("CYXQ")
    with pytest.raises(SelectionError, match=r"roi=\(60, 0, 20, 10\) .*: x range \(60, 80\) extends past the image"):
        lv.select(roi=(60, 0, 20, 10))
    with pytest.raises(ValueError, match="batch_size must be positive"):
        list(lv.iter_dlpack(batch_size=0))
    with pytest.raises(ValueError, match="tile sizes must be positive"):
        list(lv.iter_dlpack(tile_size=(0, 4)))
    with pytest.raises(ValueError, match=r"tile_size must be \(tile_z, tile_h, tile_w\)"):
        list(lv.iter_tiles_3d(tile_size=(4, 4)))
    with pytest.raises(ValueError, match="mode must be 'arrow'"):
        lv.to_dlpack(mode="torch")


# ---------------------------------------------------------------------------
# missing images and sources
# ---------------------------------------------------------------------------
def test_missing_image_id(ds_path):
    msg = r"no image 'nope' in dataset .*; it holds 2 images: \['img', 'other'\]"
    with pytest.raises(KeyError, match=msg):
        of.scan(ds_path, image_id="nope")
    ds = of.open_dataset(ds_path)
    with pytest.raises(KeyError, match=msg):
        ds.scan("nope")
    with pytest.raises(KeyError, match=msg):
        ds.read("nope")
    with pytest.raises(KeyError, match=msg):
        ds.image_metadata("nope")
    with pytest.raises(SelectionError, match=r"image 'img' has no level 2; levels: \[0\]"):
        ds.scan("img", level=2)
    with pytest.raises(ValueError, match=r"the dataset holds 2 images; pass image_id="):
        of.scan(ds_path)


def test_bad_sources(tmp_path, arr):
    with pytest.raises(FileNotFoundError, match="nothing to scan at"):
        of.scan(tmp_path / "missing.parquet")
    with pytest.raises(TypeError, match="cannot scan a int"):
        of.scan(42)
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(ValueError, match="neither an omeframe dataset"):
        of.scan(tmp_path / "empty-dir")
    path = of.write_table(tmp_path / "t.parquet", [arr[0, 0], arr[1, 1]], dim_order="ZYX")
    with pytest.raises(RowIndexError, match=r"row_index 2 is out of range: the table has 2 rows"):
        of.scan(path, row_index=2)


# ---------------------------------------------------------------------------
# fill_missing
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sparse_record():
    """A record whose chunks do not cover plane (t=0, c=1, z=2) nor one tile of (0, 0, 0)."""
    a = (np.arange(1 * 2 * 3 * 20 * 24, dtype=np.uint16).reshape(1, 2, 3, 20, 24) % 1000) + 1
    rec = of.from_numpy(a, dim_order="TCZYX", image_id="sparse", chunk_shape=(1, 8, 8))
    d = rec.as_py()
    d["chunks"] = [
        ch for ch in d["chunks"]
        if not (ch["c"] == 1 and ch["z"] == 2)
        and not (ch["c"] == 0 and ch["z"] == 0 and ch["y"] == 8 and ch["x"] == 16)
    ]
    sparse = pa.scalar(d, type=rec.type)
    expected = a.copy()
    expected[0, 1, 2] = 0
    expected[0, 0, 0, 8:16, 16:24] = 0
    return sparse, expected


def test_fill_missing_true_zero_fills(sparse_record, tmp_path):
    rec, expected = sparse_record
    plan = of.scan(rec)
    assert np.array_equal(plan.export("numpy"), expected)
    got = plan.slice_lazy(4, 24, 2, 18, c_indices=[1], z_indices=[1, 2]).collect()
    assert np.array_equal(got.export("numpy"), expected[:, [1]][:, :, 1:3, 2:18, 4:24])
    assert not got.export("numpy")[0, 0, 1].any()  # the missing plane is zeros
    eager = of.OMEArrow(rec).slice(4, 24, 2, 18, c_indices=[1], z_indices=[1, 2])
    assert np.array_equal(eager.export("numpy"), got.export("numpy"))
    # the same from a record table on disk
    path = of.write_table(tmp_path / "sparse.parquet", [rec])
    assert np.array_equal(of.scan(path).slice_lazy(0, 24, 0, 20).collect().export("numpy"), expected)


def test_fill_missing_false_raises(sparse_record):
    rec, expected = sparse_record
    plan = of.scan(rec)
    msg = r"the selection covers \d+ pixels but the stored pieces hold only \d+ of them; pass fill_missing=True"
    lazy = plan.slice_lazy(0, 24, 0, 20, c_indices=[1], fill_missing=False)  # planning does not read
    with pytest.raises(SelectionError, match=msg):
        lazy.collect()
    with pytest.raises(SelectionError, match=msg):
        lazy.export("numpy")
    with pytest.raises(SelectionError, match=msg):
        of.OMEArrow(rec).slice(0, 24, 0, 20, c_indices=[1], fill_missing=False)
    # a missing tile counts as missing too
    with pytest.raises(SelectionError, match=msg):
        plan.slice_lazy(10, 20, 5, 12, c_indices=[0], z_indices=[0], fill_missing=False).collect()
    # selections that avoid the holes read normally
    ok = plan.slice_lazy(0, 24, 0, 20, c_indices=[1], z_indices=[0, 1], fill_missing=False).collect()
    assert np.array_equal(ok.export("numpy"), expected[:, [1]][:, :, 0:2])
    ok2 = plan.slice_lazy(0, 16, 0, 20, c_indices=[0], z_indices=[0], fill_missing=False).collect()
    assert np.array_equal(ok2.export("numpy"), expected[:, [0]][:, :, 0:1, :, 0:16])
    # fill_missing=False is kept by later slices of the plan
    with pytest.raises(SelectionError, match=msg):
        plan.slice_lazy(0, 24, 0, 20, fill_missing=False).slice_lazy(0, 24, 0, 20).collect()
