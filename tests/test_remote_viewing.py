"""Tile and plane providers and the zarr view over images in object storage (moto S3 on loopback)."""

from __future__ import annotations

import numpy as np

import omeframe
from omeframe.engine.cache import ByteCache
from omeframe.tiles import PlaneProvider, TileProvider


def _image() -> np.ndarray:
    return (np.arange(2 * 256 * 192, dtype=np.uint32).reshape(1, 2, 1, 256, 192) % 65521).astype(np.uint16)


def _remote_pyramid(url: str, opts: dict[str, object]) -> np.ndarray:
    a = _image()
    kw = {"image_ids": ["a"], "chunk_shape": (1, 64, 64), "storage_options": opts, "progress": False}
    omeframe.write_dataset(a, f"{url}/ds", **kw)
    omeframe.write_dataset(a[..., ::2, ::2].copy(), f"{url}/ds", level=1, mode="append", **kw)
    return a


def test_tile_and_plane_providers_over_a_dataset_in_s3(bucket) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    a = _remote_pyramid(url, opts)
    img = omeframe.open_dataset(f"{url}/ds", storage_options=opts).scan("a")
    cache = ByteCache(64 << 20)
    server.counts.reset()
    with TileProvider(img, tile=64, cache=cache) as tp:
        assert tp.levels == [(1, 2, 1, 256, 192), (1, 2, 1, 128, 96)] and tp.computed_levels == [False, False]
        assert tp.best_level_for_scale(0.5) == 1
        np.testing.assert_array_equal(tp.get_tile(0, 0, 1, 0, 2, 1), a[0, 1, 0, 128:192, 64:128])
        np.testing.assert_array_equal(tp.get_tile(1, 0, 0, 0, 1, 1), a[0, 0, 0, ::2, ::2][64:128, 64:96])
        gets = server.counts.requests("", "GET")
        assert gets >= 1
        tp.get_tile(0, 0, 1, 0, 2, 1)  # warm: served by the cache, no request
        assert server.counts.requests("", "GET") == gets
        tp.prefetch_neighbors(0, 0, 1, 0, 2, 1, radius=1)
        tp.wait()
        np.testing.assert_array_equal(tp.get_cached_tile(0, 0, 1, 0, 1, 0), a[0, 1, 0, 64:128, 0:64])
        np.testing.assert_array_equal(tp.load_overview(128), a[0, :, 0, ::2, ::2])  # the stored level 1
        assert tp.load_overview(64).shape == (2, 64, 48)  # level 1 reduced
    with PlaneProvider(img, cache=cache) as pp:
        np.testing.assert_array_equal(pp.get_plane(t=0, c=1, z=0, level=1), a[0, 1, 0, ::2, ::2])
        np.testing.assert_array_equal(pp.get_stack(t=0, c=0), a[0, 0])


def test_zarr_view_and_providers_over_an_ome_zarr_in_s3(bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import zarr

    from omeframe.storage.remote import RemoteStore

    url, opts, server = bucket
    a = _remote_pyramid(url, opts)
    ds = omeframe.open_dataset(f"{url}/ds", storage_options=opts)
    g = zarr.open_array(ds.zarr_store("a", level=1), mode="r")
    np.testing.assert_array_equal(g[...], a[..., ::2, ::2])
    group = ds.zarr_group("a")
    np.testing.assert_array_equal(group["0"][0, 1, 0, 100:150, 30:90], a[0, 1, 0, 100:150, 30:90])
    # an OME-Zarr with a stored pyramid, uploaded to the bucket, read tile by tile
    omeframe.to_ome_zarr(a, tmp_path / "p.ome.zarr", multiscale_levels=2)
    store = RemoteStore(url, opts)
    store.fs.put(str(tmp_path / "p.ome.zarr"), f"{store.location.path}/p.ome.zarr", recursive=True)
    tp = TileProvider(omeframe.scan(f"{url}/p.ome.zarr", storage_options=opts), tile=64, cache=ByteCache(8 << 20))
    assert len(tp.levels) == 2 and tp.computed_levels == [False, False]
    np.testing.assert_array_equal(tp.get_tile(0, 0, 0, 0, 3, 2), a[0, 0, 0, 192:256, 128:192])
    assert tp.get_tile(1, 0, 1, 0, 0, 0).shape == (64, 64)
    tp.close()
