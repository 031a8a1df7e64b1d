"""Tile/plane providers over the shared cache, and reads in physical units at a target resolution."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import omeframe
from omeframe.engine.cache import ByteCache
from omeframe.engine.derived import as_source
from omeframe.engine.lazy import LazyImage
from omeframe.engine.pieces import RegularPieces, regular_pieces
from omeframe.engine.pyramid import DownsampledSource
from omeframe.engine.resample import ResampledSource, band_weights
from omeframe.engine.source import HeaderOverride, LazySource
from omeframe.errors import SelectionError, UnitError
from omeframe.model.header import ImageHeader
from omeframe.tiles import PlaneProvider, TileProvider, get_array_at_mpp

RNG = np.random.default_rng(7)


def _record(shape: tuple[int, ...] = (1, 2, 3, 300, 260), dtype: Any = np.uint16, px: float = 0.5) -> Any:
    arr = RNG.integers(0, 4000, size=shape).astype(dtype)
    return arr, omeframe.from_numpy(arr, dim_order="TCZYX", physical_size_x=px, physical_size_y=px,
                                    chunk_shape=(1, 64, 64))


class CountingSource(LazySource):
    """A 2-D source that counts decodes, can block them on an event and can fail."""

    def __init__(self, arr: np.ndarray, *, gate: threading.Event | None = None, fail: bool = False) -> None:
        super().__init__()
        self.arr = arr
        self.calls = 0
        self.gate = gate
        self.fail = fail
        self.lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (1, 1, 1, *self.arr.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.arr.dtype

    def header(self) -> ImageHeader:
        return ImageHeader.basic("counting", "counting", 1)

    def _open_pixels(self) -> RegularPieces:
        origins, extents = regular_pieces(self.shape, (1, 32, 32))

        def decode(i: int, strict: bool) -> np.ndarray:
            with self.lock:
                self.calls += 1
            if self.gate is not None:
                self.gate.wait(10)
            if self.fail:
                raise OSError("disk on fire")
            _, _, _, y, x = (int(v) for v in origins[i])
            _, dy, dx = (int(v) for v in extents[i])
            return self.arr[None, y : y + dy, x : x + dx]

        nbytes = extents.prod(axis=1) * self.arr.itemsize
        return RegularPieces(self.shape, self.dtype, (1, 32, 32), decode, nbytes, False, "counting")


# --------------------------------------------------------------------------- providers
def test_tiles_of_stored_levels_and_computed_levels_match_the_image(tmp_path: Any) -> None:
    arr, rec = _record()
    tp = TileProvider(rec, tile=64, cache=ByteCache(64 << 20))
    assert tp.computed_levels == [False, True, True, True]
    assert [s[3:] for s in tp.levels] == [(300, 260), (150, 130), (75, 65), (37, 32)]
    np.testing.assert_array_equal(tp.get_tile(0, 0, 1, 2, 4, 3), arr[0, 1, 2, 256:300, 192:256])
    # a computed level built from cached tiles equals the engine's 2x reduction
    ref = LazyImage(DownsampledSource(DownsampledSource(as_source(rec)))).execute()[0, 1, 2]
    np.testing.assert_array_equal(tp.get_region(2, 0, 1, 2, (0, 75), (0, 65)), ref)
    assert not tp.get_tile(2, 0, 1, 2, 0, 0).flags.writeable
    # stored levels of a dataset are used as they are
    ds = omeframe.write_dataset(rec, tmp_path / "ds", image_ids=["a"], chunk_shape=(1, 64, 64))
    half = arr[:, :, :, ::2, ::2]
    omeframe.write_dataset(half, tmp_path / "ds", mode="append", image_ids=["a"], level=1, dim_order="TCZYX")
    src = omeframe.open_dataset(tmp_path / "ds").scan("a").to_source()
    tp2 = TileProvider(src, tile=64)
    assert tp2.computed_levels == [False, False] and tp2.levels[1][3:] == (150, 130)
    np.testing.assert_array_equal(tp2.get_tile(1, 0, 0, 1, 2, 2), half[0, 0, 1, 128:150, 128:130])
    assert ds is not None


def test_single_flight_and_failures_reach_every_waiter() -> None:
    gate = threading.Event()
    src = CountingSource(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), gate=gate)
    tp = TileProvider(src, tile=32, cache=ByteCache(1 << 20))
    out: list[Any] = []
    threads = [threading.Thread(target=lambda: out.append(tp.get_tile(0, 0, 0, 0, 1, 1))) for _ in range(6)]
    for th in threads:
        th.start()
    gate.set()
    for th in threads:
        th.join()
    assert src.calls == 1 and len(out) == 6 and all(o is out[0] for o in out)
    assert tp.stats().requests == 6 and tp.stats().hits == 5

    bad = CountingSource(np.zeros((64, 64), np.uint8), gate=threading.Event(), fail=True)
    tpb = TileProvider(bad, tile=32, cache=ByteCache(1 << 20))
    errors: list[BaseException] = []

    def read() -> None:
        try:
            tpb.get_tile(0, 0, 0, 0, 0, 0)
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for th in threads:
        th.start()
    assert bad.gate is not None
    bad.gate.set()
    for th in threads:
        th.join()
    assert len(errors) == 4 and bad.calls == 1
    bad.fail = False  # not poisoned: the next read tries again and succeeds
    assert tpb.get_tile(0, 0, 0, 0, 0, 0).shape == (32, 32) and bad.calls == 2


def test_bad_input_is_refused_clearly() -> None:
    _, rec = _record((1, 1, 1, 100, 100))
    tp = TileProvider(rec, tile=32)
    for scale in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale must be"):
            tp.best_level_for_scale(scale)
    with pytest.raises(SelectionError, match="tx=4 is outside"):
        tp.get_tile(0, 0, 0, 0, 0, 4)
    with pytest.raises(SelectionError, match="level=9"):
        tp.get_tile(9, 0, 0, 0, 0, 0)
    with pytest.raises(SelectionError, match="c=1"):
        tp.get_cached_tile(0, 0, 1, 0, 0, 0)
    with pytest.raises(ValueError, match="smaller than one 32x32"):
        TileProvider(rec, tile=32, cache=ByteCache(1000))
    assert tp.best_level_for_scale(2.0) == 0 and tp.best_level_for_scale(0.5) == 1
    assert tp.best_level_for_scale(0.01) == len(tp.levels) - 1


def test_prefetch_fills_the_cache_and_a_new_view_cancels_waiting_requests() -> None:
    arr = RNG.integers(0, 255, (128, 128)).astype(np.uint8)
    src = CountingSource(arr)
    tp = TileProvider(src, tile=32, cache=ByteCache(1 << 20), workers=1)
    assert tp.get_cached_tile(0, 0, 0, 0, 1, 1) is None
    assert tp.prefetch_neighbors(0, 0, 0, 0, 1, 1) == 8
    tp.wait()
    np.testing.assert_array_equal(tp.get_cached_tile(0, 0, 0, 0, 2, 2), arr[64:96, 64:96])  # type: ignore[arg-type]
    assert tp.stats().prefetched == 8

    gate = threading.Event()
    slow = CountingSource(arr, gate=gate)
    tps = TileProvider(slow, tile=32, cache=ByteCache(1 << 20), workers=1, max_pending=4)
    assert tps.prefetch_neighbors(0, 0, 0, 0, 0, 0, radius=3) == 4  # bounded
    tps.prefetch_neighbors(0, 0, 0, 0, 3, 3)  # the view moved
    gate.set()
    tps.wait()
    assert tps.stats().cancelled >= 3
    tps.close()


def test_plane_provider_stack_overview_and_prefetch() -> None:
    arr, rec = _record((1, 2, 4, 90, 70))
    pp = PlaneProvider(rec, cache=ByteCache(16 << 20))
    np.testing.assert_array_equal(pp.get_plane(0, 1, 2), arr[0, 1, 2])
    np.testing.assert_array_equal(pp.get_stack(0, 1), arr[0, 1])
    assert pp.get_cached_plane(0, 1, 3) is not None and pp.get_cached_plane(0, 0, 3) is None
    assert pp.prefetch_planes([(0, 0, z) for z in range(4)]) == 4
    pp.wait()
    assert pp.get_cached_plane(0, 0, 3) is not None
    ov = pp.load_overview(35)
    assert ov.shape == (2, 35, 27) and ov.dtype == np.uint16
    assert abs(float(ov[0].mean()) - float(arr[0, 0, 2].mean())) < 40
    assert "PlaneProvider" in repr(pp)
    pp.close()


# --------------------------------------------------------------------------- units
def test_select_in_micrometres_and_at_resolution_choose_level_and_resample() -> None:
    arr, rec = _record((1, 1, 1, 120, 96), px=0.5)
    plan = LazyImage(as_source(rec))
    assert plan.select(x_um=(1.0, 2.2), y_um=(0, 0.5)).shape[3:] == (1, 3)
    exact = plan.at_resolution(1.0)  # a 2x reduction: the area mean is the block mean
    np.testing.assert_array_equal(
        exact.execute()[0, 0, 0], np.rint(arr[0, 0, 0].reshape(60, 2, 48, 2).mean(axis=(1, 3))).astype(np.uint16)
    )
    odd = plan.at_resolution(0.8)
    assert isinstance(odd.source, ResampledSource) and odd.shape[3:] == (75, 60)
    whole = odd.execute()
    assert whole.dtype == np.uint16
    # tile-by-tile reads equal the whole read (each output pixel depends on its own coordinates)
    part = odd.select(y=(13, 61), x=(7, 59)).execute()
    np.testing.assert_array_equal(part, whole[..., 13:61, 7:59])
    assert plan.at_resolution(0.5).source is plan.source  # the level itself, no resampling
    idx, w = band_weights(0, 3, 1.6, 5)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_levels_are_chosen_coarsest_at_least_as_fine(tmp_path: Any) -> None:
    arr, rec = _record((1, 1, 1, 128, 128), px=0.25)
    omeframe.write_dataset(rec, tmp_path / "d", image_ids=["a"])
    lv1 = np.rint(arr.reshape(1, 1, 1, 64, 2, 64, 2).mean(axis=(4, 6))).astype(np.uint16)
    half = omeframe.from_numpy(lv1, dim_order="TCZYX", physical_size_x=0.5, physical_size_y=0.5)
    omeframe.write_dataset(half, tmp_path / "d", mode="append", image_ids=["a"], level=1)
    plan = LazyImage(omeframe.open_dataset(tmp_path / "d").scan("a").to_source())
    assert plan.at_resolution(0.5).source.level == 1  # type: ignore[attr-defined]
    p7 = plan.at_resolution(0.7)
    assert isinstance(p7.source, ResampledSource) and p7.source.parent.level == 1  # type: ignore[attr-defined]
    assert isinstance(plan.at_resolution(0.4).source, ResampledSource)
    assert plan.at_resolution(0.4).source.parent.level == 0  # type: ignore[attr-defined]


def test_labels_stay_labels_and_unit_errors_are_clear() -> None:
    labels = np.repeat(np.repeat(np.arange(16, dtype=np.uint32).reshape(4, 4), 9, 0), 9, 1)[None, None, None]
    rec = omeframe.from_numpy(labels, dim_order="TCZYX", image_type="label", physical_size_x=1.0,
                              physical_size_y=1.0)
    out = LazyImage(as_source(rec)).at_resolution(1.7).execute()
    assert set(np.unique(out)) <= set(range(16)) and out.dtype == np.uint32

    _, img = _record((1, 1, 1, 20, 20))
    src = as_source(img)
    h = src.header()
    no_size = LazyImage(HeaderOverride(src, replace(h, physical_size_x=None)))
    with pytest.raises(UnitError, match="no physical pixel size along X"):
        no_size.select(x_um=(0, 2))
    with pytest.raises(UnitError, match="no physical pixel size"):
        no_size.at_resolution(1.0)
    pixels = LazyImage(HeaderOverride(src, replace(h, physical_size_x_unit="pixel")))
    with pytest.raises(UnitError, match="'pixel' is not a length"):
        pixels.at_resolution(1.0)
    plan = LazyImage(src)
    with pytest.raises(SelectionError, match="spans 0..10 µm"):
        plan.select(x_um=(5, 11))
    with pytest.raises(ValueError, match="mpp must be"):
        plan.at_resolution(0)
    with pytest.raises(TypeError, match="not both"):
        plan.select(x=(0, 2), x_um=(0, 1))
    nm = LazyImage(HeaderOverride(src, replace(h, physical_size_x=500.0, physical_size_x_unit="nm",
                                                physical_size_y=500.0, physical_size_y_unit="nm")))
    assert nm.select(x_um=(1, 2)).shape[4] == 2


def test_get_array_at_mpp_and_facade_plans() -> None:
    arr, rec = _record((1, 3, 1, 200, 160), dtype=np.uint8, px=0.25)
    out = get_array_at_mpp(rec, (40, 80), (10, 6), 0.5)  # level-0 location, region at 0.5 µm
    ref = arr[0, :, 0, 80:92, 40:60].reshape(3, 6, 2, 10, 2).mean(axis=(2, 4))
    np.testing.assert_array_equal(out, np.moveaxis(np.rint(ref), 0, -1).astype(np.uint8))
    with pytest.raises(SelectionError, match="reaches outside"):
        get_array_at_mpp(rec, (150, 0), (20, 5), 0.5)
    lazy = omeframe.scan(rec).select(x_um=(10, 20), y_um=(0, 5)).at_resolution(1.0)
    assert lazy.shape[3:] == (5, 10)


def test_sql_crop_in_micrometres_over_images_of_different_pixel_sizes() -> None:
    duckdb = pytest.importorskip("duckdb")
    from omeframe.query.duckdb_udfs import register_functions

    a = np.full((1, 1, 1, 40, 40), 10, np.uint16)
    b = np.full((1, 1, 1, 80, 80), 20, np.uint16)
    recs = [omeframe.from_numpy(a, dim_order="TCZYX", physical_size_x=1.0, physical_size_y=1.0),
            omeframe.from_numpy(b, dim_order="TCZYX", physical_size_x=0.5, physical_size_y=0.5)]
    table = pa.table({"ome_arrow": pa.array([r.as_py() for r in recs], type=recs[0].type)})
    con = register_functions(duckdb.connect())
    con.register("t", table)
    res = con.sql("SELECT ome_crop_um(ome_arrow, 5, 5, 20, 10, 2.0) AS c FROM t").to_arrow_table()
    shapes = [omeframe.to_numpy(res["c"][i]).shape for i in range(2)]
    assert shapes == [(1, 1, 1, 6, 11), (1, 1, 1, 6, 11)]  # every 2 µm pixel the box touches
    assert res["c"][1]["pixels_meta"]["physical_size_x"].as_py() == 2.0
    empty = con.sql("SELECT ome_crop_um(ome_arrow, 500, 5, 20, 10, 2.0) AS c FROM t").to_arrow_table()
    assert empty["c"].null_count == 2
