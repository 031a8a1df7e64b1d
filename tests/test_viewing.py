"""Viewing and browsing: array-like plans, the zarr view, notebook displays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import omeframe as of
from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import LazySource
from omeframe.errors import ResourceLimitError, SelectionError


@pytest.fixture
def count_pixel_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of ``LazySource.pixel_source`` (the first step of any pixel read)."""
    calls: list[str] = []
    orig = LazySource.pixel_source

    def counting(self: LazySource) -> object:
        calls.append(self.describe)
        return orig(self)

    monkeypatch.setattr(LazySource, "pixel_source", counting)
    return calls


def _tiff(tmp_path: Path) -> tuple[Path, np.ndarray]:
    a = (np.arange(2 * 3 * 64 * 80, dtype=np.uint16) % 997).reshape(2, 3, 64, 80)
    p = tmp_path / "img.ome.tif"
    tifffile.imwrite(
        p, a, ome=True, tile=(32, 32),
        metadata={"axes": "CZYX", "Channel": {"Name": ["dna", "actin"]}, "PhysicalSizeX": 0.25,
                  "PhysicalSizeY": 0.25, "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"},
    )
    return p, a


# ---- array-like plans -------------------------------------------------------


def test_metadata_without_pixels(tmp_path: Path, count_pixel_opens: list[str]) -> None:
    p, a = _tiff(tmp_path)
    img = of.scan(p)
    assert img.shape == (1, 2, 3, 64, 80) and img.dtype == np.uint16 and img.ndim == 5
    assert img.channel_names == ("dna", "actin")
    assert img.physical_sizes["x"] == (0.25, "µm") and img.physical_sizes["y"].value == 0.25
    assert img.header.channels[1].name == "actin"
    assert len(img.levels) == 1
    sub = img[0, 1, :, 8:40, 16:48]
    assert sub.channel_names == ("actin",) and sub.shape == (1, 1, 3, 32, 32)
    assert count_pixel_opens == []  # nothing above built the pieces, let alone decoded
    np.testing.assert_array_equal(np.asarray(sub)[0, 0], a[1, :, 8:40, 16:48])
    assert count_pixel_opens  # the read did


def test_getitem_forms(tmp_path: Path) -> None:
    a = (np.arange(2 * 3 * 4 * 20 * 30) % 251).astype(np.uint8).reshape(2, 3, 4, 20, 30)
    plan = of.OMEArrow(a)._lazy()
    cases = [
        ((1, slice(1, None), Ellipsis, slice(2, 9), 5), a[1:2, 1:, :, 2:9, 5:6]),
        ((Ellipsis, slice(0, 100)), a),  # stops clip like numpy's
        ((slice(None), [2, 0]), a[:, [2, 0]]),
        ((Ellipsis,), a),
        (0, a[:1]),
    ]
    for key, want in cases:
        got = plan[key]
        assert isinstance(got, LazyImage)
        np.testing.assert_array_equal(np.asarray(got), want)
    assert np.asarray(plan[0, 0, 0, 0, 0], dtype=np.float32).dtype == np.float32
    for key, word in [((-1,), "negative"), ((slice(None, None, 2),), "step 2"),
                      ((Ellipsis, slice(-5, None)), "negative bound"), ((0,) * 6, "6 indices"),
                      ((Ellipsis, Ellipsis), "at most one"), ((Ellipsis, slice(30, 40)), "selects nothing"),
                      ((0, 5), "out of range")]:
        with pytest.raises(SelectionError, match=word):
            plan[key]
    with pytest.raises(TypeError, match="new axes"):
        plan[None]


def test_asarray_guard(tmp_path: Path) -> None:
    a = np.ones((1, 1, 1, 64, 64), np.uint16)
    img = of.scan(a)
    old = of.set_max_bytes(1000)
    try:
        with pytest.raises(ResourceLimitError, match=r"set_max_bytes"):
            np.asarray(img)
        assert np.asarray(img[..., :10, :10]).shape == (1, 1, 1, 10, 10)  # 200 bytes fit
    finally:
        of.set_max_bytes(old)
    assert np.asarray(img).dtype == np.uint16 and np.asarray(img).shape == a.shape
    with pytest.raises(ValueError, match="copy=False"):
        np.asarray(img, copy=False)


def test_levels_scale_the_selection(tmp_path: Path) -> None:
    a = (np.arange(64 * 64) % 200).astype(np.uint8).reshape(1, 1, 1, 64, 64)
    ds = of.write_dataset(a, tmp_path / "ds", image_ids=["a"], progress=False)
    of.write_dataset(a[..., ::2, ::2].copy(), tmp_path / "ds", image_ids=["a"], level=1, mode="append", progress=False)
    img = of.open_dataset(tmp_path / "ds").scan("a")
    assert ds.levels("a") == [0]  # the first handle keeps its generation
    roi = img[..., 10:31, 20:40]
    lv = roi.levels
    assert [x.shape for x in lv] == [(1, 1, 1, 21, 20), (1, 1, 1, 11, 10)]
    np.testing.assert_array_equal(np.asarray(lv[1]), a[..., ::2, ::2][..., 5:16, 10:20])
