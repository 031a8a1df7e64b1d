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


# ---- zarr view ----------------------------------------------------------------


def _pyramid_dataset(path: Path, compression: str | None = "zstd") -> np.ndarray:
    """A 2-level dataset whose chunks do not divide the image (edge chunks are clipped)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4000, (1, 2, 3, 70, 90), dtype=np.uint16)
    opts = {"chunk_shape": (2, 32, 32), "compression": compression, "progress": False, "image_ids": ["a"]}
    of.write_dataset(a, path, frame_bytes=512, **opts)
    of.write_dataset(a[..., ::2, ::2].copy(), path, level=1, mode="append", **opts)
    return a


@pytest.mark.parametrize("compression, codecs", [("zstd", ["bytes", "zstd"]), (None, ["bytes"]), ("lz4", ["bytes"])])
def test_zarr_view_of_a_dataset(tmp_path: Path, compression: str | None, codecs: list[str]) -> None:
    import zarr

    a = _pyramid_dataset(tmp_path / "ds", compression)
    ds = of.open_dataset(tmp_path / "ds")
    g = ds.zarr_group("a")
    assert sorted(g.array_keys()) == ["0", "1"]
    np.testing.assert_array_equal(g["0"][...], a)
    np.testing.assert_array_equal(g["1"][...], a[..., ::2, ::2])
    assert [c.to_dict()["name"] for c in g["0"].metadata.codecs] == codecs
    store = ds.zarr_store("a", level=0)
    arr = zarr.open_array(store, mode="r")
    assert arr.shape == a.shape and arr.chunks == (1, 1, 2, 32, 32)
    np.testing.assert_array_equal(arr[0, 1, 1:3, 30:65, 10:80], a[0, 1, 1:3, 30:65, 10:80])
    if compression != "lz4":  # zstd and raw: interior chunks are the stored payloads, byte for byte
        assert store.get_bytes_sync("c/0/0/0/0/0") == bytes(ds.read_chunk_bytes("a", 0, 0))
    else:
        assert store.describe.endswith("(decoded chunks)")


def test_zarr_view_readers(tmp_path: Path) -> None:
    import dask.array as da
    import xarray as xr
    from ome_zarr_models.v05.image import Image

    a = _pyramid_dataset(tmp_path / "ds")
    img = of.open_dataset(tmp_path / "ds").scan("a")
    g = img.zarr_group()
    Image.from_zarr(g)  # validates the OME-Zarr 0.5 metadata
    ms = g.attrs["ome"]["multiscales"][0]
    assert [ax["name"] for ax in ms["axes"]] == ["t", "c", "z", "y", "x"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"][3:] == [70 / 35, 90 / 45]
    lazy = da.from_zarr(img.zarr_store(level=1))
    np.testing.assert_array_equal(lazy[:, 1].compute(), a[:, 1, :, ::2, ::2])
    xa = xr.DataArray(lazy, dims=list("tczyx"))
    assert int(xa.sel(c=0).max()) == int(a[..., ::2, ::2][:, 0].max())
    single = of.scan(a[0, 0]).zarr_group()  # one level: xarray opens the group itself
    dsx = xr.open_zarr(single.store, consolidated=False)
    np.testing.assert_array_equal(dsx["0"].values[0, 0], a[0, 0])


def test_zarr_view_of_plans_and_files(tmp_path: Path) -> None:
    import zarr

    p, a = _tiff(tmp_path)
    img = of.scan(p)
    plan = img[0, 1, 1:3, 5:50, 7:70]
    arr = zarr.open_array(plan.zarr_store(), mode="r")
    np.testing.assert_array_equal(arr[...], a[None, 1:2, 1:3, 5:50, 7:70])
    assert [c.to_dict()["name"] for c in arr.metadata.codecs] == ["bytes"]
    g = plan.zarr_group()
    assert g.attrs["ome"]["omero"]["channels"][0]["label"] == "actin"
    assert g.attrs["ome"]["multiscales"][0]["axes"][4]["unit"] == "micrometer"
    with pytest.raises(SelectionError, match="level 3 does not exist"):
        img.zarr_store(level=3)


def test_zarr_view_is_read_only(tmp_path: Path) -> None:
    import asyncio

    import zarr
    from zarr.core.buffer import default_buffer_prototype

    store = of.scan(np.zeros((8, 8), np.uint8)).zarr_store()
    assert store.read_only and not store.supports_writes
    buf = default_buffer_prototype().buffer.from_bytes(b"x")
    with pytest.raises(ValueError, match="read-only.*to_ome_zarr"):
        asyncio.run(store.set("c/0/0/0/0/0", buf))
    with pytest.raises(ValueError, match="read-only"):
        asyncio.run(store.delete("zarr.json"))
    with pytest.raises(ValueError):
        zarr.open_array(store, mode="r+")[...] = 1
    assert asyncio.run(store.exists("c/0/0/0/0/0")) and not asyncio.run(store.exists("c/0/0/0/0/9"))
    assert asyncio.run(store.get("nope")) is None


# ---- notebook displays --------------------------------------------------------------


class _Gradient(LazySource):
    """A synthetic ``n``×``n`` uint8 image of 1024² chunks (cheap to write, compresses well)."""

    describe = "synthetic gradient"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (1, 1, 1, self.n, self.n)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def header(self):  # noqa: ANN201 - ImageHeader
        from omeframe.model.header import ImageHeader

        return ImageHeader.basic("big", "big", 1)

    def chunk_shape(self) -> tuple[int, int, int]:
        return (1, 1024, 1024)

    def _open_pixels(self):  # noqa: ANN202 - RegularPieces
        from omeframe.engine.pieces import RegularPieces, regular_pieces

        o, e = regular_pieces(self.shape, (1, 1024, 1024))
        row = (np.arange(1024) % 251).astype(np.uint8)

        def decode(i: int, strict: bool) -> np.ndarray:
            _, ey, ex = (int(v) for v in e[i])
            return np.broadcast_to(row[:ex] + np.uint8(i % 5), (ey, ex)).ravel()

        return RegularPieces(self.shape, self.dtype, (1, 1024, 1024), decode, e.prod(axis=1), False)


@pytest.fixture(scope="module")
def big_pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16384² dataset with stored 2× levels down to 128²."""
    path = tmp_path_factory.mktemp("big") / "ds"
    opts = {"image_ids": ["big"], "progress": False, "chunk_shape": (1, 1024, 1024)}
    of.write_dataset(_Gradient(16384), path, **opts)
    for k in range(1, 8):
        of.write_dataset(_Gradient(16384 >> k), path, level=k, mode="append", **opts)
    return path


@pytest.fixture
def dataset_io(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """``(bytes read, bytes decoded)`` by dataset reads from here on, as one-item lists."""
    from omeframe.formats.dataset import reader
    from omeframe.storage import files

    read, decoded = [0], [0]
    orig_range = files.InputFile.read_range

    def counting_range(self: files.InputFile, offset: int, length: int) -> bytes:
        read[0] += length
        return orig_range(self, offset, length)

    def counting(fn):  # noqa: ANN001, ANN202
        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            out = fn(*args, **kwargs)
            decoded[0] += out.nbytes
            return out
        return wrapped

    monkeypatch.setattr(files.InputFile, "read_range", counting_range)
    monkeypatch.setattr(reader, "decode_payload", counting(reader.decode_payload))
    monkeypatch.setattr(reader, "decode_frames", counting(reader.decode_frames))
    return read, decoded


def test_repr_of_a_large_pyramid_is_bounded(big_pyramid: Path, dataset_io: tuple[list[int], list[int]]) -> None:
    read, decoded = dataset_io
    img = of.open_dataset(big_pyramid).scan("big")
    html = img._repr_html_()
    assert read[0] <= 4 << 20 and decoded[0] <= 4 << 20, (read, decoded)
    assert decoded[0] == 128 * 128  # one plane of the coarsest level wide enough: 128²
    assert len(html) < 8000 and "<img src=\"data:image/" in html and "level 7 (128×128)" in html
    assert "Y=16384 X=16384" in html and "256 of 256 chunks" in html
    assert len(repr(img)) < 200
    roi = img[..., 4096:8192, 4096:8192]  # a plan: the thumbnail follows its selection
    read[0] = decoded[0] = 0
    html = roi._repr_html_()
    assert decoded[0] <= 1 << 20 and "16 of 256 chunks" in html
    listing = of.open_dataset(big_pyramid)._repr_html_()
    assert "<td>big</td><td>1 1 1 16384 16384</td><td>uint8</td><td>8</td>" in listing


def test_plan_display_has_a_bounded_thumbnail(
    big_pyramid: Path, dataset_io: tuple[list[int], list[int]]
) -> None:
    from omeframe.engine.lazy import LazyImage

    read, decoded = dataset_io
    plan = of.open_dataset(big_pyramid).scan("big")._lazy()
    assert isinstance(plan, LazyImage)
    html = plan._repr_html_()
    assert html.count("<img") == 1 and "level 7 (128×128)" in html and "omeframe LazyImage (plan)" in html
    assert read[0] <= 4 << 20 and decoded[0] == 128 * 128, (read, decoded)  # one plane of the coarsest level
    assert len(html) < 8000
    read[0] = decoded[0] = 0
    roi = plan.select(y=(0, 2048), x=(0, 2048))  # the thumbnail follows the selection: level 4 (128²)
    assert "level 4 (128×128)" in roi._repr_html_() and 0 < decoded[0] <= 1 << 20  # within one stored chunk
    # without a pyramid, a plane over the decode budget is not read: the display says so
    html = of.scan(_Gradient(16384))._lazy()._repr_html_()
    assert "<img" not in html and "no thumbnail" in html and "more than 16.0 MiB" in html


def test_record_display_is_small(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rec = of.from_numpy(rng.integers(0, 60000, (3, 512, 512), dtype=np.uint16), dim_order="CYX")
    assert len(repr(rec)) > 100_000  # pyarrow's own repr prints the pixels: why display exists
    d = of.display(rec)
    assert repr(d) == "<OME-Arrow record TCZYX (1, 3, 1, 512, 512) uint16, channels C0, C1, C2>"
    assert len(d._repr_html_()) < 20_000 and "image/jpeg" in d._repr_html_()  # noise: JPEG, capped
    img = of.OMEArrow(rec)
    assert len(img._repr_html_()) < 20_000 and len(repr(img)) < 200
    assert of.display(rec.as_py())._repr_html_().count("<img") == 1  # dicts too
    assert "numpy array" in of.display(np.zeros((2, 30, 40), np.float32))._repr_html_()
    with pytest.raises(TypeError, match="omeframe.scan"):
        of.display("img.tif")


def test_displays_of_tables_datasets_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omeframe.engine import thumbnail as display  # where the thumbnail budgets live

    a = np.arange(2 * 40 * 50, dtype=np.uint16).reshape(2, 40, 50)
    ds = of.write_dataset([a, a], tmp_path / "ds", image_ids=["<b>x</b>", "y"], dim_order="CYX", progress=False)
    h = ds._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;" in h and "<b>x</b>" not in h and "generation" in h
    of.write_table(tmp_path / "t.parquet", np.zeros((5, 8, 8), np.uint8), dim_order="YX")
    t = of.open_table(tmp_path / "t.parquet")
    assert "5 images" in t._repr_html_()
    img = ds.scan("y")
    tv = img.tensor_view(c=0)
    assert "not read" in tv._repr_html_() and "read" in tv.collect()._repr_html_()
    plan = img._lazy()[0, 1]
    assert "omeframe LazyImage" in plan._repr_html_() and repr(plan).startswith("<LazyImage TCZYX (1, 1, 1, 40, 50)")
    monkeypatch.setattr(display, "THUMBNAIL_READ_BUDGET", 100)
    h = img._repr_html_()
    assert "<img" not in h and "no thumbnail: its plane would read" in h
    monkeypatch.setattr(display, "composite_rgb", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(display, "THUMBNAIL_READ_BUDGET", 4 << 20)
    assert "no thumbnail (ZeroDivisionError" in img._repr_html_()  # a display never raises
