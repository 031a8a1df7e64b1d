"""slice_ome_arrow and tensor_view ROIs against plain numpy slicing (property tests).

Both faces build a :class:`~omeframe.model.selection.Selection`; these tests
check what a user sees: valid crops and ROIs equal numpy slicing of the same
array, and out-of-range ones raise ``SelectionError`` (a ``ValueError``).
The reference is numpy indexing written out here, independent of omeframe.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omeframe as of
from omeframe.errors import SelectionError

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# a few image shapes (records are built once per shape; chunks of 1 x 8 x 8
# make crops cross chunk borders)
SHAPES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 1, 1, 5, 7),
    (2, 3, 4, 19, 13),
    (3, 2, 2, 8, 24),
)


@functools.cache
def image(shape: tuple[int, int, int, int, int]) -> tuple[np.ndarray, pa.StructScalar]:
    arr = (np.arange(int(np.prod(shape)), dtype=np.uint32) % 65521).astype(np.uint16).reshape(shape)
    rec = of.from_numpy(arr, dim_order="TCZYX", chunk_shape=(1, 8, 8))
    return arr, rec


def ranges(n: int) -> st.SearchStrategy[tuple[int, int]]:
    """A valid half-open range ``[lo, hi)`` with ``0 <= lo < hi <= n``."""
    return st.tuples(st.integers(0, n - 1), st.integers(1, n)).map(
        lambda p: (min(p[0], p[1] - 1), max(p[0] + 1, p[1]))
    )


def bad_ranges(n: int) -> st.SearchStrategy[tuple[int, int]]:
    """A range that is empty, reversed, negative or reaches past ``n``."""
    return st.one_of(
        st.integers(0, n).map(lambda lo: (lo, lo)),  # empty
        st.tuples(st.integers(1, n), st.integers(0, n)).filter(lambda p: p[1] < p[0]),  # reversed
        st.tuples(st.integers(-5, -1), st.integers(1, n)),  # negative start
        st.tuples(st.integers(0, n - 1), st.integers(n + 1, n + 5)),  # past the end
    )


def index_sets(n: int) -> st.SearchStrategy[list[int] | None]:
    return st.one_of(st.none(), st.lists(st.integers(0, n - 1), min_size=1, max_size=6))


def numpy_crop(arr: np.ndarray, y: tuple[int, int], x: tuple[int, int], tcz: list[list[int] | None]) -> np.ndarray:
    """The crop with numpy: index sets sorted and de-duplicated, then ``[y0:y1, x0:x1]``."""
    keys = [np.arange(arr.shape[a]) if idx is None else np.array(sorted(set(idx))) for a, idx in enumerate(tcz)]
    return arr[np.ix_(*keys)][..., y[0] : y[1], x[0] : x[1]]


# --------------------------------------------------------------------------- #
# slice_ome_arrow
# --------------------------------------------------------------------------- #
@PROPS
@given(data=st.data())
def test_slice_ome_arrow_equals_numpy(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    arr, rec = image(shape)
    y, x = data.draw(ranges(shape[3])), data.draw(ranges(shape[4]))
    tcz = [data.draw(index_sets(shape[a])) for a in range(3)]
    t, c, z = tcz
    out = of.slice_ome_arrow(rec, x[0], x[1], y[0], y[1], t_indices=t, c_indices=c, z_indices=z)
    want = numpy_crop(arr, y, x, tcz)
    got = of.to_numpy(out)
    assert got.shape == want.shape
    assert np.array_equal(got, want)
    # the lazy crop of the same record agrees
    lazy = of.scan(rec).slice_lazy(x[0], x[1], y[0], y[1], t, c, z).collect().export("numpy")
    assert np.array_equal(lazy, want)


@PROPS
@given(data=st.data())
def test_slice_ome_arrow_rejects_bad_ranges(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    _, rec = image(shape)
    axis = data.draw(st.sampled_from("yx"))
    size = shape[3] if axis == "y" else shape[4]
    bad = data.draw(bad_ranges(size))
    y = bad if axis == "y" else (0, shape[3])
    x = bad if axis == "x" else (0, shape[4])
    pattern = rf"{axis} range \({bad[0]}, {bad[1]}\) (extends past the image|is empty or reversed|has a negative bound)"
    with pytest.raises(SelectionError, match=pattern):
        of.slice_ome_arrow(rec, x[0], x[1], y[0], y[1])
    with pytest.raises(SelectionError, match=pattern):
        of.scan(rec).slice_lazy(x[0], x[1], y[0], y[1])


@PROPS
@given(data=st.data())
def test_slice_ome_arrow_rejects_bad_indices(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    _, rec = image(shape)
    a = data.draw(st.integers(0, 2))
    n = shape[a]
    bad = data.draw(st.one_of(st.integers(n, n + 5), st.integers(-5, -1)))  # negatives are out of range here
    idx = data.draw(st.lists(st.integers(0, n - 1), max_size=3)) + [bad]
    tcz: list[list[int] | None] = [None, None, None]
    tcz[a] = idx
    name = "tcz"[a]
    pattern = rf"{name} index {bad} is out of range: axis {name.upper()} has size {n}, valid indices are 0\.\.{n - 1}"
    with pytest.raises(SelectionError, match=pattern):
        of.slice_ome_arrow(rec, 0, shape[4], 0, shape[3], tcz[0], tcz[1], tcz[2])
    with pytest.raises(SelectionError, match=pattern):
        of.scan(rec).slice_lazy(0, shape[4], 0, shape[3], tcz[0], tcz[1], tcz[2])


def test_slice_ome_arrow_rejects_empty_and_non_integer_index_sets() -> None:
    _, rec = image(SHAPES[1])
    msg = r"c selection is empty: at least one index is required \(axis C has size 3\)"
    with pytest.raises(SelectionError, match=msg):
        of.slice_ome_arrow(rec, 0, 5, 0, 5, c_indices=[])
    with pytest.raises(TypeError, match="z index must be an integer, got float"):
        of.slice_ome_arrow(rec, 0, 5, 0, 5, z_indices=[0.5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="x range start must be an integer, got float"):
        of.slice_ome_arrow(rec, 0.5, 5, 0, 5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# tensor_view ROIs
# --------------------------------------------------------------------------- #
@PROPS
@given(data=st.data())
def test_tensor_view_roi_equals_numpy(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    arr, rec = image(shape)
    y, x = data.draw(ranges(shape[3])), data.draw(ranges(shape[4]))
    roi = (x[0], y[0], x[1] - x[0], y[1] - y[0])
    want = arr[..., y[0] : y[1], x[0] : x[1]]
    for obj in (of.OMEArrow(rec), of.scan(rec)):
        view = obj.tensor_view(roi=roi, layout="TCZYX")
        assert view.shape == want.shape
        assert np.array_equal(np.asarray(view.to_numpy()), want)


@PROPS
@given(data=st.data())
def test_tensor_view_roi_nd_equals_numpy(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    arr, rec = image(shape)
    t, z = data.draw(ranges(shape[0])), data.draw(ranges(shape[2]))
    y, x = data.draw(ranges(shape[3])), data.draw(ranges(shape[4]))
    bounds = (t[0], z[0], y[0], x[0], t[1], z[1], y[1], x[1])
    want = arr[t[0] : t[1], :, z[0] : z[1], y[0] : y[1], x[0] : x[1]]
    view = of.scan(rec).tensor_view(roi_nd=bounds, roi_type="4d", layout="TCZYX")
    assert np.array_equal(np.asarray(view.to_numpy()), want)
    d3 = of.scan(rec).tensor_view(roi3d=(x[0], y[0], z[0], x[1] - x[0], y[1] - y[0], z[1] - z[0]), layout="TCZYX")
    assert np.array_equal(np.asarray(d3.to_numpy()), arr[:, :, z[0] : z[1], y[0] : y[1], x[0] : x[1]])


@PROPS
@given(data=st.data())
def test_tensor_view_rejects_bad_roi(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    _, rec = image(shape)
    axis = data.draw(st.sampled_from("yx"))
    size = shape[3] if axis == "y" else shape[4]
    bad = data.draw(bad_ranges(size))
    y = bad if axis == "y" else (0, shape[3])
    x = bad if axis == "x" else (0, shape[4])
    roi = (x[0], y[0], x[1] - x[0], y[1] - y[0])
    pattern = (
        rf"roi=\({roi[0]}, {roi[1]}, {roi[2]}, {roi[3]}\) as \(x, y, w, h\): {axis} range "
        rf"\({bad[0]}, {bad[1]}\) (extends past the image|is empty or reversed|has a negative bound): "
        rf"need 0 <= {axis}0 < {axis}1 <= {size}"
    )
    for obj in (of.OMEArrow(rec), of.scan(rec)):
        with pytest.raises(SelectionError, match=pattern):
            obj.tensor_view(roi=roi, layout="TCZYX")


@PROPS
@given(data=st.data())
def test_tensor_view_rejects_bad_roi_nd_t_and_z(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    _, rec = image(shape)
    a = data.draw(st.sampled_from([0, 2]))
    name = "tcz"[a]
    bad = data.draw(bad_ranges(shape[a]))
    t = bad if a == 0 else (0, shape[0])
    z = bad if a == 2 else (0, shape[2])
    bounds = (t[0], z[0], 0, 0, t[1], z[1], shape[3], shape[4])
    pattern = rf"{name} range \({bad[0]}, {bad[1]}\) .*: need 0 <= {name}0 < {name}1 <= {shape[a]}"
    with pytest.raises(SelectionError, match=pattern):
        of.scan(rec).tensor_view(roi_nd=bounds, roi_type="4d", layout="TCZYX")


def test_tensor_view_roi_form_errors() -> None:
    _, rec = image(SHAPES[1])
    plan = of.scan(rec)
    with pytest.raises(ValueError, match=r"roi takes 4 values \(x, y, w, h\), got 3"):
        plan.tensor_view(roi=(0, 0, 5))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"roi must hold integers, got float 2\.5"):
        plan.tensor_view(roi=(0, 0, 2.5, 5))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="roi3d must hold integers, got the bool True"):
        plan.tensor_view(roi3d=(0, 0, True, 5, 5, 1))
    with pytest.raises(ValueError, match=r"tile takes 2 values \(tile_y, tile_x\), got 3"):
        plan.tensor_view(tile=(0, 0, 0))  # type: ignore[arg-type]
    # numpy integers are integers
    roi = (np.int64(1), np.int64(2), np.int64(3), np.int64(4))
    v = plan.tensor_view(roi=roi, layout="TCZYX")  # type: ignore[arg-type]
    assert v.shape == (2, 3, 4, 4, 3)


@PROPS
@given(data=st.data())
def test_tensor_view_tiles_of_a_roi_equal_numpy(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    arr, rec = image(shape)
    y, x = data.draw(ranges(shape[3])), data.draw(ranges(shape[4]))
    c = data.draw(st.lists(st.integers(0, shape[1] - 1), min_size=1, max_size=3))
    th, tw = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    lazy = of.scan(rec).tensor_view(c=c, roi=(x[0], y[0], x[1] - x[0], y[1] - y[0]), layout="TCZYX")
    roi = arr[:, c][..., y[0] : y[1], x[0] : x[1]]
    want = [
        roi[..., y0 : y0 + th, x0 : x0 + tw] for y0 in range(0, roi.shape[3], th) for x0 in range(0, roi.shape[4], tw)
    ]
    # lazy views read each tile; a collected view slices its array in memory
    for view in (lazy, lazy.collect()):
        got = list(view.iter_dlpack(tile_size=(th, tw), mode="numpy", prefetch=0))
        assert len(got) == len(want)
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
