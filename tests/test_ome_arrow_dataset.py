"""Reading ome-arrow 0.1.0 typed-chunk dataset directories (``write_ome_arrow_dataset``).

Every dataset here is written by the reference implementation itself; omeframe
reads it without importing ``ome_arrow``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import omeframe as of
import omeframe.formats.ome_arrow_dataset.source as oad
from omeframe.errors import CorruptFileError
from omeframe.formats.ome_arrow_dataset.source import (
    OMEArrowDatasetSource,
    is_ome_arrow_dataset,
    open_ome_arrow_dataset,
)
from omeframe.storage.files import InputFile

oa = pytest.importorskip("ome_arrow")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64"]


def _img(dtype: str, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt.kind == "f":
        a = (rng.standard_normal(shape) * 100).astype(dt)
        a.reshape(-1)[:3] = [np.nan, np.inf, -0.0]
        return a
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)


def _tczyx(a: np.ndarray) -> np.ndarray:
    """How ome_arrow interprets numpy inputs: YX, ZYX, TZYX, TCZYX."""
    if a.ndim == 2:
        return a.reshape(1, 1, 1, *a.shape)
    if a.ndim == 3:
        return a.reshape(1, 1, *a.shape)
    if a.ndim == 4:
        return a.reshape(a.shape[0], 1, *a.shape[1:])
    return a


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _write(tmp_path, images, name="ds", **kw):
    out = tmp_path / name
    oa.write_ome_arrow_dataset(images, out, **kw)
    return out


# ---------------------------------------------------------------- pixels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compression", ["zstd", None])
def test_every_dtype_roundtrips_with_edge_chunks(tmp_path, dtype, compression):
    a = _img(dtype, (2, 3, 37, 41), seed=DTYPES.index(dtype))  # TZYX, odd sizes
    d = _write(tmp_path, [a], chunk_shape=(1, 1, 2, 16, 16), compression=compression)
    assert is_ome_arrow_dataset(d)
    img = of.scan(d)
    assert img.shape == (2, 1, 3, 37, 41)
    full = img.export("numpy")
    assert _same(full, _tczyx(a))
    roi = img.select(y=(5, 30), x=(13, 40)).export("numpy")
    assert _same(roi, _tczyx(a)[..., 5:30, 13:40])


@pytest.mark.parametrize(
    ("shape", "kw"),
    [
        ((37, 41), {"chunk_shape": (1, 1, 1, 16, 10)}),  # 2-D
        ((5, 29, 31), {"chunk_shape": (1, 1, 2, 8, 8)}),  # 3-D
        ((1, 3, 4, 23, 19), {"chunk_shape": (1, 1, 3, 10, 7)}),  # multichannel
        ((1, 3, 4, 23, 19), {"layout": "image"}),  # one chunk holding all channels
        ((3, 2, 2, 13, 17), {"chunk_shape": (2, 2, 1, 6, 8)}),  # chunks spanning T and C
        ((3, 2, 2, 13, 17), {"layout": "volume"}),
        ((2, 3, 37, 41), {"layout": "tile", "access_pattern": "fast_crop_2d"}),
    ],
)
@pytest.mark.parametrize("compression", ["zstd", None])
def test_shapes_and_layouts(tmp_path, shape, kw, compression):
    a = _img("uint16", shape, seed=len(shape))
    d = _write(tmp_path, [a], compression=compression, **kw)
    ref = _tczyx(a)
    img = of.scan(d)
    assert _same(img.export("numpy"), ref)
    sy, sx = ref.shape[3:]
    y, x = (sy // 3, sy - 2), (1, sx - sx // 4)
    assert _same(img.select(y=y, x=x).export("numpy"), ref[..., y[0] : y[1], x[0] : x[1]])
    if ref.shape[1] > 1:
        got = img.select(c=[2, 0] if ref.shape[1] > 2 else [1], y=y).export("numpy")
        want = ref[:, [2, 0] if ref.shape[1] > 2 else [1], :, y[0] : y[1]]
        assert _same(got, want)
    if ref.shape[2] > 1:
        assert _same(img.select(z=1, x=x).export("numpy"), ref[:, :, 1:2, :, x[0] : x[1]])


@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("rows_per_group", [1, 4])
def test_index_optional_and_packed_row_groups(tmp_path, index, rows_per_group):
    a = _img("float32", (2, 2, 3, 21, 26), seed=7)
    d = _write(
        tmp_path,
        [a],
        chunk_shape=(1, 1, 2, 8, 8),
        build_physical_index=index,
        chunk_rows_per_row_group=rows_per_group,
    )
    assert (d / "index.parquet").exists() is index
    img = of.scan(d)
    assert _same(img.export("numpy"), a)
    assert _same(img.select(t=1, c=0, y=(3, 17), x=(9, 25)).export("numpy"), a[1:2, 0:1, :, 3:17, 9:25])
    text = img.explain()
    assert ("index.parquet" in text) is index


def test_several_images_and_image_id(tmp_path):
    a = _img("uint8", (4, 9, 10), seed=1)
    b = _img("int32", (17, 15), seed=2)
    c = oa.from_numpy(
        _img("uint16", (1, 2, 3, 11, 12), seed=3),
        dim_order="TCZYX",
        image_id="named",
        name="A named image",
        channel_names=["DAPI", "GFP"],
    )
    d = _write(tmp_path, [a, b, oa.OMEArrow(c)], chunk_shape=(1, 1, 2, 5, 5))
    with pytest.raises(ValueError, match="image-00000.*image-00001.*named"):
        of.scan(d)
    with pytest.raises(KeyError, match="nope.*image-00000.*named"):
        of.scan(d, image_id="nope")
    with pytest.raises(KeyError, match="available"):
        open_ome_arrow_dataset(d, image_id="nope")
    assert _same(of.scan(d, image_id="image-00000").export("numpy"), _tczyx(a))
    assert _same(of.scan(d, image_id="image-00001").export("numpy"), _tczyx(b))
    want = oa.OMEArrow(c).export(how="numpy")
    assert _same(of.scan(d, image_id="named").export("numpy"), want)

    src = open_ome_arrow_dataset(d, image_id="named")
    assert isinstance(src, OMEArrowDatasetSource)
    assert src.shape == (1, 2, 3, 11, 12) and src.dtype == np.uint16
    assert src.chunk_shape() == (2, 5, 5)
    assert src.chunk_stats() is None
    h = src.header()
    assert (h.image_id, h.name) == ("named", "A named image")
    assert [ch.name for ch in h.channels] == ["DAPI", "GFP"]
    # the peer stores no pixel sizes: unknown, not 1 µm
    assert h.physical_size_x is None and h.physical_size_x_unit is None
    h0 = open_ome_arrow_dataset(d, image_id="image-00001").header()
    assert h0.image_id == "image-00001" and len(h0.channels) == 1


def test_explain_mentions_source_and_reads_only_touched_chunks(tmp_path):
    a = _img("uint16", (1, 1, 1, 64, 64), seed=4)
    d = _write(tmp_path, [a], chunk_shape=(1, 1, 1, 16, 16), compression=None)
    img = of.scan(d).select(y=(0, 16), x=(16, 32))
    text = img.explain()
    assert "ome-arrow dataset" in text and str(d) in text and "image-00000" in text
    assert "chunks:    1 of 16" in text
    # the one touched chunk's pixel_bytes column chunk (Parquet page overhead included)
    info = img._lazy().info()
    assert 512 <= info.bytes_read < 4096
    assert info.metadata_bytes > 0


def test_one_chunk_read_touches_one_row_group(tmp_path, monkeypatch):
    a = _img("uint16", (1, 1, 1, 256, 256), seed=5)
    d = _write(tmp_path, [a], chunk_shape=(1, 1, 1, 64, 64), compression=None)
    read: list[int] = []

    class Counting(InputFile):
        def read_range(self, offset, length):
            data = super().read_range(offset, length)
            read.append(len(data))
            return data

    monkeypatch.setattr(oad, "open_input", Counting)
    out = of.scan(d).select(y=(70, 80), x=(130, 140)).export("numpy")
    assert _same(out, a[..., 70:80, 130:140])
    chunk_bytes = 64 * 64 * 2
    # one chunk payload (plus its tiny chunk_id column chunk / page headers), not the file
    assert chunk_bytes <= sum(read) < chunk_bytes + 4096
    assert (d / "chunks.parquet").stat().st_size > 10 * chunk_bytes


def test_roundtrip_into_omeframe_dataset(tmp_path):
    c = oa.from_numpy(
        _img("uint16", (1, 2, 3, 30, 20), seed=6), dim_order="TCZYX", image_id="x1", channel_names=["a", "b"]
    )
    d = _write(tmp_path, [oa.OMEArrow(c)], chunk_shape=(1, 1, 2, 16, 16))
    img = of.scan(d)
    of.write_dataset(img, tmp_path / "copy", chunk_shape=(1, 8, 8))
    back = of.scan(tmp_path / "copy")
    assert _same(back.export("numpy"), img.export("numpy"))


# ---------------------------------------------------------------- detection & errors
def test_detection(tmp_path):
    d = _write(tmp_path, [np.zeros((4, 5), np.uint8)])
    assert is_ome_arrow_dataset(d)
    # without the marker file the layout tag in images.parquet still identifies it
    (d / "_ome_arrow_dataset.json").unlink()
    assert is_ome_arrow_dataset(d)
    assert _same(of.scan(d).export("numpy"), np.zeros((1, 1, 1, 4, 5), np.uint8))

    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_ome_arrow_dataset(empty)
    assert not is_ome_arrow_dataset(tmp_path / "missing")
    assert not is_ome_arrow_dataset(d / "images.parquet")

    ofd = tmp_path / "omeframe_ds"
    of.write_dataset([np.zeros((1, 1, 1, 8, 8), np.uint16)], ofd)
    assert (ofd / "manifest.json").exists()
    assert not is_ome_arrow_dataset(ofd)

    with pytest.raises(ValueError, match="neither"):
        of.scan(empty)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "_ome_arrow_dataset.json").write_text("{not json")
    assert not is_ome_arrow_dataset(bad)


def test_missing_chunk_table_is_a_clear_error(tmp_path):
    d = _write(tmp_path, [np.zeros((4, 5), np.uint8)], build_physical_index=False)
    (d / "chunks.parquet").unlink()
    src = open_ome_arrow_dataset(d)  # planning metadata is still there
    assert src.shape == (1, 1, 1, 4, 5)
    with pytest.raises(CorruptFileError, match="chunks.parquet"):
        src.pixel_source()


def test_no_warnings_from_omeframe_side(tmp_path):
    d = _write(tmp_path, [np.ones((3, 4), np.int16)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _same(of.scan(d).export("numpy"), np.ones((1, 1, 1, 3, 4), np.int16))


def test_flipped_bits_in_a_dataset_omeframe_wrote_give_an_error_or_exact_pixels(tmp_path):
    """omeframe's writer of the typed-chunk layout stores page CRCs, which its reader checks; footers are
    checked too: a flipped bit in any of the three tables gives exact pixels or a typed error, never other
    pixels (before: 179 of 4,425 sampled flips read other pixels, 16 raised OSError or UnicodeDecodeError)."""
    from omeframe.errors import OmeframeError
    from omeframe.formats.ome_arrow_dataset.writer import write_ome_arrow_dataset
    from omeframe.registry import open_source

    images = [_img("uint16", (2, 96, 80), seed=s) for s in (1, 2)]
    out = tmp_path / "x.oad"
    write_ome_arrow_dataset([open_source(a) for a in images], out, chunk_shape=(1, 1, 1, 64, 64))
    ids = ("image-00000", "image-00001")

    def read() -> list[np.ndarray]:
        return [of.scan(out, image_id=i).export("numpy") for i in ids]

    want = read()
    rng = np.random.default_rng(5)
    outcomes = {"same": 0, "refused": 0}
    kinds: set[tuple[str, str]] = set()
    for name, flips in (("chunks.parquet", 120), ("images.parquet", 90), ("index.parquet", 90)):
        path = out / name
        data = path.read_bytes()
        for at in rng.choice(len(data), flips, replace=False):
            raw = bytearray(data)
            raw[at] ^= 1 << int(rng.integers(0, 8))
            path.write_bytes(bytes(raw))
            try:
                got = read()
            except OmeframeError as exc:
                outcomes["refused"] += 1
                kinds.add((name, type(exc).__name__))
            else:
                assert all(_same(a, b) for a, b in zip(got, want, strict=True)), f"{name} byte {at}: other pixels"
                outcomes["same"] += 1
        path.write_bytes(data)
    assert outcomes["refused"] > 100, outcomes
    assert ("chunks.parquet", "ChunkChecksumError") in kinds  # a damaged page of pixels is named as such
