"""Pyramid levels written by ``to_ome_zarr``: each from the level before it as written."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from omeframe.formats.zarr.writer import to_ome_zarr


def _attrs(group: zarr.Group, zarr_format: int) -> dict:
    attrs = group.attrs.asdict()
    return attrs["ome"] if zarr_format == 3 else attrs


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_more_levels_than_the_image_allows_stops_at_one_pixel(tmp_path, zarr_format):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 1000, (1, 1, 1, 4, 6)).astype(np.uint16)
    out = to_ome_zarr(data, tmp_path / "p.zarr", multiscale_levels=6, zarr_format=zarr_format)
    g = zarr.open_group(out, mode="r")
    paths = [d["path"] for d in _attrs(g, zarr_format)["multiscales"][0]["datasets"]]
    # 4x6 -> 2x3 -> 1x1; a 1-pixel level cannot be halved, so 3 levels, not 6
    assert paths == ["0", "1", "2"]
    assert [g[p].shape for p in paths] == [(1, 1, 1, 4, 6), (1, 1, 1, 2, 3), (1, 1, 1, 1, 1)]
    assert "3" not in g
    l1 = np.rint(data.reshape(1, 1, 1, 2, 2, 3, 2).mean(axis=(4, 6))).astype(np.uint16)
    np.testing.assert_array_equal(g["1"][...], l1)
    # level 2 is reduced from level 1 as stored (rounded), not from the source
    l2 = np.rint(g["1"][..., :2, :2].astype(np.float64).mean(axis=(3, 4), keepdims=True)).astype(np.uint16)
    np.testing.assert_array_equal(g["2"][...], l2)


def test_one_level_writes_no_pyramid(tmp_path):
    data = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(1, 2, 1, 8, 8)
    out = to_ome_zarr(data, tmp_path / "one.zarr", multiscale_levels=1)
    g = zarr.open_group(out, mode="r")
    assert [d["path"] for d in _attrs(g, 3)["multiscales"][0]["datasets"]] == ["0"]
    assert "1" not in g
    np.testing.assert_array_equal(g["0"][...], data)
