"""Selection: normalise, compose, resolve (omeframe.model.selection).

The reference for every property is plain numpy indexing applied one axis at
a time, independent of the module under test.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omeframe.errors import OmeframeError, SelectionError
from omeframe.model.selection import ResolvedSelection, Selection

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- #
# reference and strategies
# --------------------------------------------------------------------------- #
def ref_apply(src: np.ndarray, specs: dict[str, Any]) -> np.ndarray:
    """Apply raw user specs with plain numpy indexing, one axis at a time."""
    out = src
    for a, name in enumerate("tczyx"):
        spec = specs.get(name)
        if spec is None:
            continue
        if isinstance(spec, (int, np.integer)):
            key: Any = [int(spec)]
        elif isinstance(spec, slice):
            key = spec
        elif name in "yx":
            key = slice(spec[0], spec[1])
        else:
            key = list(spec)
        out = out[(slice(None),) * a + (key,)]
    return out


@st.composite
def shapes(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    return tuple(draw(st.integers(1, 4)) for _ in range(3)) + tuple(  # type: ignore[return-value]
        draw(st.integers(1, 30)) for _ in range(2)
    )


@functools.cache  # building strategies dominates run time
def index_specs(n: int) -> st.SearchStrategy[Any]:
    """Raw T/C/Z specs: None, int, non-empty slice, or index list (negatives allowed)."""
    return st.one_of(
        st.none(),
        st.integers(-n, n - 1),
        st.slices(n).filter(lambda s: len(range(*s.indices(n))) > 0),
        st.lists(st.integers(-n, n - 1), min_size=1, max_size=8),
        st.lists(st.integers(0, n - 1), min_size=1, max_size=8).map(np.array),
    )


@functools.cache
def range_specs(n: int) -> st.SearchStrategy[Any]:
    """Raw Y/X specs: None, a non-empty half-open pair or a step-1 slice."""
    pair = st.lists(st.integers(0, n), min_size=2, max_size=2, unique=True).map(lambda p: (min(p), max(p)))
    return st.one_of(st.none(), pair, pair.map(lambda p: slice(*p)))


def raw_specs(draw: st.DrawFn, shape: tuple[int, ...]) -> dict[str, Any]:
    specs = {name: draw(index_specs(shape[a])) for a, name in enumerate("tcz")}
    specs["y"] = draw(range_specs(shape[3]))
    specs["x"] = draw(range_specs(shape[4]))
    return specs


def source(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)


# --------------------------------------------------------------------------- #
# normalize
# --------------------------------------------------------------------------- #
SHAPE = (3, 2, 5, 40, 30)


def test_normalize_forms() -> None:
    s = Selection.normalize(SHAPE, t=-1, c=None, z=slice(None, None, -2), y=(3, 9))
    assert s == Selection(t=(2,), c=None, z=(4, 2, 0), y=(3, 9), x=None)
    s = Selection.normalize(SHAPE, z=[4, -1, 0, 0, -5], x=slice(2, None))
    assert s.z == (4, 4, 0, 0, 0)
    assert s.x == (2, 30)
    s = Selection.normalize(np.zeros(SHAPE), z=np.array([1, 3]), t=range(3))
    assert s.z == (1, 3) and s.t == (0, 1, 2)
    assert all(type(v) is int for v in s.z)
    assert Selection.normalize(SHAPE, z=slice(1, 100, 3)) == Selection(z=(1, 4))


def test_out_shape() -> None:
    s = Selection.normalize(SHAPE, t=[0, 0, 1, 2], z=2, y=(10, 15))
    assert s.out_shape(SHAPE) == (4, 2, 1, 5, 30)
    assert Selection().out_shape(SHAPE) == SHAPE


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"t": 3}, r"t index 3 is out of range: axis T has size 3, valid indices are -3\.\.2"),
        ({"z": [0, -6]}, r"z index -6 is out of range: axis Z has size 5, valid indices are -5\.\.4"),
        ({"c": np.array([0, 2])}, r"c index 2 .*size 2.*-2\.\.1"),
        ({"z": []}, r"z selection is empty.*axis Z has size 5"),
        ({"t": slice(2, 1)}, r"t slice\(2, 1, None\) selects no index of axis T \(size 3\)"),
        ({"y": (9, 9)}, r"y range \(9, 9\) is empty or reversed: need 0 <= y0 < y1 <= 40"),
        ({"y": (9, 3)}, r"y range \(9, 3\) is empty or reversed.*<= 40"),
        ({"x": (-1, 5)}, r"x range \(-1, 5\) has a negative bound: need 0 <= x0 < x1 <= 30"),
        ({"x": (5, 31)}, r"x range \(5, 31\) extends past the image: need 0 <= x0 < x1 <= 30"),
        ({"y": slice(0, 10, 2)}, r"y slice.*step 2"),
        ({"y": slice(-3, None)}, r"y range \(-3, 40\) has a negative bound"),
    ],
)
def test_normalize_errors(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(SelectionError, match=pattern) as info:
        Selection.normalize(SHAPE, **kwargs)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, OmeframeError)


@pytest.mark.parametrize(
    "kwargs",
    [{"t": 1.0}, {"t": True}, {"z": "01"}, {"c": np.array([True, False])},
     {"z": [0, 1.5]}, {"y": 3}, {"x": (1, 2, 3)}],
)
def test_normalize_type_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        Selection.normalize(SHAPE, **kwargs)


def test_selection_constructor_validation() -> None:
    with pytest.raises(SelectionError, match="negative index -1"):
        Selection(t=(-1,))
    with pytest.raises(SelectionError, match="negative index -2"):
        Selection(z=[0, -2])
    with pytest.raises(SelectionError, match="empty"):
        Selection(z=())
    with pytest.raises(SelectionError, match=r"y range \(4, 2\) is empty or reversed"):
        Selection(y=(4, 2))
    with pytest.raises(SelectionError, match=r"x range \(-1, 2\) has a negative bound"):
        Selection(x=(-1, 2))
    with pytest.raises(TypeError, match="bool"):
        Selection(t=(True,))
    assert Selection(z=[1, 2]).z == (1, 2)  # lists are stored as tuples
    assert Selection(z=np.array([2, 1])).z == (2, 1)
    assert Selection(y=[1, 3]).y == (1, 3)
    assert hash(Selection(z=[1, 2])) == hash(Selection(z=(1, 2)))


@PROPS
@given(data=st.data())
def test_normalize_equals_numpy(data: st.DataObject) -> None:
    shape = data.draw(shapes())
    specs = raw_specs(data.draw, shape)
    sel = Selection.normalize(shape, **specs)
    src = source(shape)
    expected = ref_apply(src, specs)
    np.testing.assert_array_equal(sel.apply(src), expected)
    assert sel.out_shape(shape) == expected.shape
    # normalised values are plain, in-range, non-negative ints
    for name in "tcz":
        idx = getattr(sel, name)
        assert idx is None or all(type(v) is int and 0 <= v < shape["tcz".index(name)] for v in idx)
    # a normalised selection is a fixed point of the constructor
    assert Selection(t=sel.t, c=sel.c, z=sel.z, y=sel.y, x=sel.x) == sel


# --------------------------------------------------------------------------- #
# compose
# --------------------------------------------------------------------------- #
def test_compose_unit() -> None:
    outer = Selection(t=(2, 0), z=(4, 1, 3), y=(10, 20), x=None)
    inner = Selection(t=(1, 1), z=None, y=(2, 5), x=(3, 4))
    assert outer.compose(inner) == Selection(t=(0, 0), z=(4, 1, 3), y=(12, 15), x=(3, 4))
    assert outer.compose(Selection()) == outer
    assert Selection().compose(inner) == inner
    with pytest.raises(SelectionError, match=r"inner z index 3 is out of range.*0\.\.2"):
        outer.compose(Selection(z=(0, 3)))
    with pytest.raises(SelectionError, match=r"inner y range \(5, 11\) extends past.*<= 10"):
        outer.compose(Selection(y=(5, 11)))
    with pytest.raises(TypeError, match="inner must be a Selection"):
        outer.compose((0, 1))  # type: ignore[arg-type]


@PROPS
@given(data=st.data())
def test_compose_equals_applying_one_after_the_other(data: st.DataObject) -> None:
    shape = data.draw(shapes())
    src = source(shape)
    outer_raw = raw_specs(data.draw, shape)
    outer = Selection.normalize(shape, **outer_raw)
    mid = ref_apply(src, outer_raw)
    inner_raw = raw_specs(data.draw, mid.shape)
    inner = Selection.normalize(mid.shape, **inner_raw)
    composed = outer.compose(inner)
    twice = ref_apply(mid, inner_raw)
    np.testing.assert_array_equal(composed.apply(src), twice)
    assert composed.out_shape(shape) == twice.shape
    # the resolved form reads the same elements
    r = composed.resolve(shape)
    np.testing.assert_array_equal(src[np.ix_(r.t, r.c, r.z)][..., slice(*r.y), slice(*r.x)], twice)


@settings(PROPS, max_examples=60)
@given(data=st.data())
def test_compose_is_associative(data: st.DataObject) -> None:
    shape = data.draw(shapes())
    a = Selection.normalize(shape, **raw_specs(data.draw, shape))
    sa = a.out_shape(shape)
    b = Selection.normalize(sa, **raw_specs(data.draw, sa))
    sb = b.out_shape(sa)
    c = Selection.normalize(sb, **raw_specs(data.draw, sb))
    assert a.compose(b).compose(c) == a.compose(b.compose(c))


# --------------------------------------------------------------------------- #
# resolve
# --------------------------------------------------------------------------- #
def test_resolve_spells_out_whole_axes() -> None:
    r = Selection(c=(1, 1, 0), y=(2, 7)).resolve(SHAPE)
    assert isinstance(r, ResolvedSelection)
    assert r.t.tolist() == [0, 1, 2] and r.c.tolist() == [1, 1, 0] and r.z.tolist() == [0, 1, 2, 3, 4]
    assert r.t.dtype == np.int64
    assert (r.y, r.x) == ((2, 7), (0, 30))
    assert r.out_shape == (3, 3, 5, 5, 30)


def test_selection_checked_against_image_when_used() -> None:
    with pytest.raises(SelectionError, match=r"z index 7 is out of range.*0\.\.4"):
        Selection(z=(1, 7)).resolve(SHAPE)
    with pytest.raises(SelectionError, match=r"x range \(0, 31\) extends past"):
        Selection(x=(0, 31)).resolve(SHAPE)
    with pytest.raises(SelectionError, match="t index 3"):
        Selection(t=(3,)).out_shape(SHAPE)
    with pytest.raises(SelectionError, match="c index 2"):
        Selection(c=(0, 2)).apply(np.zeros(SHAPE))
    with pytest.raises(ValueError, match="5 entries"):
        Selection().resolve((1, 2, 3))


@PROPS
@given(data=st.data())
def test_resolve_agrees_with_out_shape_and_rejects_what_does_not_fit(data: st.DataObject) -> None:
    shape = data.draw(shapes())
    sel = Selection.normalize(shape, **raw_specs(data.draw, shape))
    r = sel.resolve(shape)
    assert r.out_shape == sel.out_shape(shape)
    for a, name in enumerate("tcz"):
        idx = getattr(sel, name)
        assert getattr(r, name).tolist() == (list(range(shape[a])) if idx is None else list(idx))
    # the same selection against a smaller image fails exactly when it does not fit
    axis = data.draw(st.integers(0, 4))
    smaller = list(shape)
    smaller[axis] = data.draw(st.integers(1, shape[axis]))
    name = "tczyx"[axis]
    val = getattr(sel, name)
    fits = val is None or (max(val) < smaller[axis] if axis < 3 else val[1] <= smaller[axis])
    if fits:
        assert sel.resolve(tuple(smaller)).out_shape == sel.out_shape(tuple(smaller))
    else:
        with pytest.raises(SelectionError, match=f"{name} (index|range)"):
            sel.resolve(tuple(smaller))
