"""File-pattern stacks: pattern syntax, lazy reads from real TIFF/PNG files,
missing files, channel names, from_stack_pattern_path (records and datasets),
and interop with ome-arrow's own pattern parser.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tifffile

import omeframe as of
from omeframe.engine.lazy import LazyImage
from omeframe.errors import CorruptFileError, PixelPayloadError
from omeframe.facade import from_stack_pattern_path
from omeframe.formats.stack.source import StackSource, parse_stack_pattern
from omeframe.model.record import RecordView

RNG = np.random.default_rng(7)


def _u16(*shape):
    return RNG.integers(0, 65535, shape, dtype=np.uint16)


@pytest.fixture
def cz_stack(tmp_path: Path):
    """img_C<0-2>_Z<000-003>.tif: 3 channels x 4 planes of 24x30 uint16."""
    a = _u16(3, 4, 24, 30)
    for c in range(3):
        for z in range(4):
            tifffile.imwrite(tmp_path / f"img_C{c}_Z{z:03d}.tif", a[c, z])
    return tmp_path, a


# ------------------------------------------------------------------ syntax
def test_parse_ranges_padding_steps_and_dims():
    p = parse_stack_pattern("/d/img_C<0-2>_Z<000-009>.tif")
    assert [t.dim for t in p.tokens] == ["C", "Z"]
    assert p.tokens[1].choices[:2] == ("000", "001") and len(p.tokens[1].choices) == 10
    assert p.filename(["1", "007"]) == "img_C1_Z007.tif"
    assert parse_stack_pattern("x_t<0-20:5>.tif").tokens[0].choices == ("0", "5", "10", "15", "20")
    assert parse_stack_pattern("x_z<1-10>.tif").tokens[0].choices[-2:] == ("9", "10")  # no padding
    assert parse_stack_pattern("x_z<01-10>.tif").tokens[0].choices[0] == "01"  # leading zero pads
    assert parse_stack_pattern("x_<A-C>.tif").tokens[0].choices == ("A", "B", "C")
    assert parse_stack_pattern("x_<1,3,5-7>.tif").tokens[0].choices == ("1", "3", "5", "6", "7")


def test_parse_dimension_words_and_defaults():
    toks = parse_stack_pattern("a_channel<1-2>_time<1-3>_slice<1-2>_stackZ<1-2>.tif").tokens
    assert [t.dim for t in toks] == ["C", "T", "Z", "Z"]
    p = parse_stack_pattern("img_<DAPI,GFP>_t<1-3>.tif")
    assert [(t.dim, t.numeric) for t in p.tokens] == [("C", False), ("T", True)]
    assert parse_stack_pattern("img_<1-3>.tif", default_dim_for_unspecified="Z").tokens[0].dim == "Z"
    assert parse_stack_pattern("img_s<1-3>.tif").tokens[0].dim == "T"  # series -> map_series_to
    assert parse_stack_pattern("img_s<1-3>.tif", map_series_to="Z").tokens[0].dim == "Z"
    assert parse_stack_pattern("img_s<1-3>.tif").tokens[0].declared == "S"


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("img_<1-3.tif", "unclosed '<'"),
        ("img_1-3>.tif", "no matching '<'"),
        ("img_z<3-1>.tif", "inverted range"),
        ("img_c<a,b,a>.tif", "more than once"),
        ("img_c<>.tif", "empty value"),
        ("dir<1-2>/img.tif", "only allowed in the file name"),
    ],
)
def test_parse_errors(pattern, message):
    with pytest.raises(ValueError, match=message):
        parse_stack_pattern(pattern)


def test_parse_bad_options():
    with pytest.raises(ValueError, match="map_series_to=None"):
        parse_stack_pattern("img_series<1-2>.tif", map_series_to=None)
    with pytest.raises(ValueError, match="default_dim_for_unspecified"):
        parse_stack_pattern("img_<1-2>.tif", default_dim_for_unspecified="Q")


# ------------------------------------------------------------------ lazy reads
def test_cz_stack_lazy_reads_equal_numpy(cz_stack, monkeypatch):
    folder, a = cz_stack
    src = StackSource(str(folder / "img_C<0-2>_Z<000-003>.tif"))
    assert src.shape == (1, 3, 4, 24, 30) and src.dtype == np.uint16
    assert [c.name for c in src.header().channels] == ["C0", "C1", "C2"]
    # Only the files a selection touches are read.
    import omeframe.formats.stack.source as stack_mod

    read = []
    real = stack_mod.read_image_file
    monkeypatch.setattr(stack_mod, "read_image_file", lambda p: (read.append(Path(p).name), real(p))[1])
    roi = LazyImage(src).select(c=[2], z=slice(1, 3), y=(3, 20), x=(5, 9)).execute()
    np.testing.assert_array_equal(roi[0], a[2:3, 1:3, 3:20, 5:9])
    assert sorted(read) == ["img_C2_Z001.tif", "img_C2_Z002.tif"]
    np.testing.assert_array_equal(LazyImage(src).execute()[0], a)


def test_channel_names_from_tokens_and_time(tmp_path):
    a = _u16(3, 2, 10, 12)  # T, C, Y, X
    for t in range(3):
        for c, ch in enumerate(["DAPI", "GFP"]):
            tifffile.imwrite(tmp_path / f"img_{ch}_t{t + 1}.tif", a[t, c])
    src = StackSource(tmp_path / "img_<DAPI,GFP>_t<1-3>.tif")
    assert src.shape == (3, 2, 1, 10, 12)
    assert [c.name for c in src.header().channels] == ["DAPI", "GFP"]
    np.testing.assert_array_equal(LazyImage(src).execute()[:, :, 0], a)


def test_substack_files_fill_z_blocks(tmp_path):
    """Each file holds 3 Z planes; two Z tokens place them at z*3."""
    a = _u16(2, 6, 8, 9)  # C, Z, Y, X
    for c in range(2):
        for k in range(2):
            tifffile.imwrite(tmp_path / f"s_c{c}_z{k}.tif", a[c, 3 * k : 3 * k + 3], photometric="minisblack")
    src = StackSource(tmp_path / "s_c<0-1>_z<0-1>.tif")
    assert src.shape == (1, 2, 6, 8, 9)
    np.testing.assert_array_equal(LazyImage(src).execute()[0], a)
    np.testing.assert_array_equal(LazyImage(src).select(z=[4], c=[1]).execute()[0, 0, 0], a[1, 4])


def test_png_rgb_and_series_token(tmp_path):
    from PIL import Image

    a = RNG.integers(0, 255, (2, 12, 14, 3), dtype=np.uint8)
    for s in range(2):
        Image.fromarray(a[s]).save(tmp_path / f"rgb_series{s}.png")
    src = StackSource(tmp_path / "rgb_series<0-1>.png")  # series -> T, RGB -> C
    assert src.shape == (2, 3, 1, 12, 14) and src.dtype == np.uint8
    np.testing.assert_array_equal(LazyImage(src).execute()[:, :, 0], a.transpose(0, 3, 1, 2))


def test_png_16bit_gray(tmp_path):
    from PIL import Image

    a = RNG.integers(0, 65535, (3, 9, 11), dtype=np.uint16)
    for z in range(3):
        Image.fromarray(a[z]).save(tmp_path / f"g_z{z}.png")
    out = LazyImage(StackSource(tmp_path / "g_z<0-2>.png")).execute()
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[0, 0], a)


def test_regex_and_glob_fallbacks_stack_along_z_in_natural_order(tmp_path):
    a = _u16(11, 5, 6)
    for z in range(11):
        tifffile.imwrite(tmp_path / f"plane_{z}.tif", a[z])  # plane_10 sorts after plane_9
    (tmp_path / "notes.txt").write_text("x")
    for pattern in (r"plane_\d+\.tif", "plane_*.tif"):
        src = StackSource(tmp_path / pattern)
        assert src.shape == (1, 1, 11, 5, 6)
        np.testing.assert_array_equal(LazyImage(src).execute()[0, 0], a)
    single = StackSource(tmp_path / "plane_3.tif")
    np.testing.assert_array_equal(LazyImage(single).execute()[0, 0, 0], a[3])


# ------------------------------------------------------------------ errors
def test_missing_files_are_listed_or_zero_filled(cz_stack):
    folder, a = cz_stack
    (folder / "img_C1_Z002.tif").unlink()
    (folder / "img_C2_Z000.tif").unlink()
    pattern = str(folder / "img_C<0-2>_Z<000-003>.tif")
    with pytest.raises(FileNotFoundError, match=r"2 file\(s\) missing.*'img_C1_Z002.tif'.*missing='zero'") as ei:
        StackSource(pattern)
    assert "img_C2_Z000.tif" in str(ei.value)
    src = StackSource(pattern, missing="zero")
    out = LazyImage(src).execute()[0]
    ref = a.copy()
    ref[1, 2] = 0
    ref[2, 0] = 0
    np.testing.assert_array_equal(out, ref)


def test_nothing_matched(tmp_path):
    with pytest.raises(FileNotFoundError, match="no files matched"):
        StackSource(tmp_path / "img_C<0-2>.tif")
    with pytest.raises(FileNotFoundError, match="no files matched"):
        StackSource(tmp_path / "nothing_*.tif")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StackSource(tmp_path / "nofolder" / "x_*.tif")


def test_shape_mismatch_named_on_read(tmp_path):
    tifffile.imwrite(tmp_path / "m_z0.tif", _u16(8, 8))
    tifffile.imwrite(tmp_path / "m_z1.tif", _u16(8, 9))
    src = StackSource(tmp_path / "m_z<0-1>.tif")  # only the first file is probed
    with pytest.raises(PixelPayloadError, match=r"m_z1.tif.*same shape"):
        LazyImage(src).execute()


def test_corrupt_file(tmp_path):
    (tmp_path / "bad_z0.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(CorruptFileError, match="not a readable TIFF"):
        StackSource(tmp_path / "bad_z<0-0>.tif")


def test_channel_names_length_checked(cz_stack):
    folder, _ = cz_stack
    with pytest.raises(ValueError, match="channel_names length 2 != size_c 3"):
        from_stack_pattern_path(folder / "img_C<0-2>_Z<000-003>.tif", channel_names=["a", "b"])


# ------------------------------------------------------------------ ingest
def test_from_stack_pattern_path_record(cz_stack):
    folder, a = cz_stack
    rec = from_stack_pattern_path(
        folder / "img_C<0-2>_Z<000-003>.tif", channel_names=["r", "g", "b"], image_id="cz", name="CZ stack",
        image_type="image",
    )
    assert isinstance(rec, pa.StructScalar)
    view = RecordView(rec)
    assert view.shape == (1, 3, 4, 24, 30) and view.dtype == np.uint16
    assert view.header("id") == "cz" and view.header("name") == "CZ stack"
    assert [c["name"] for c in view.meta["channels"]] == ["r", "g", "b"]
    np.testing.assert_array_equal(of.to_numpy(rec)[0], a)


def test_from_stack_pattern_path_native_dtype_and_clamp(tmp_path):
    a = RNG.normal(100, 50, (2, 6, 7)).astype(np.float32)
    for z in range(2):
        tifffile.imwrite(tmp_path / f"f_z{z}.tif", a[z])
    rec = from_stack_pattern_path(tmp_path / "f_z<0-1>.tif")
    assert RecordView(rec).dtype == np.float32  # native dtype kept by default
    np.testing.assert_array_equal(of.to_numpy(rec)[0, 0], a)
    clamped = from_stack_pattern_path(tmp_path / "f_z<0-1>.tif", clamp_to_uint16=True)
    assert RecordView(clamped).dtype == np.uint16
    np.testing.assert_array_equal(of.to_numpy(clamped)[0, 0], np.clip(a, 0, 65535).astype(np.uint16))


def test_from_stack_pattern_path_dataset(cz_stack, tmp_path):
    folder, a = cz_stack
    ds = from_stack_pattern_path(
        folder / "img_C<0-2>_Z<000-003>.tif", image_id="cz", out=tmp_path / "ds", chunk_shape=(1, 16, 16)
    )
    img = of.scan(ds, image_id="cz")
    np.testing.assert_array_equal(img.select(c=[1], y=(4, 20)).export("numpy")[0], a[1:2, :, 4:20])


def test_ome_arrow_reads_the_same_pattern(cz_stack):
    """ome-arrow 0.1.0 parses the same pattern to the same pixels."""
    oa_ingest = pytest.importorskip("ome_arrow.ingest")
    pytest.importorskip("bioio")
    folder, a = cz_stack
    pattern = folder / "img_C<0-2>_Z<000-003>.tif"
    try:
        theirs = oa_ingest.from_stack_pattern_path(str(pattern))
    except Exception as exc:  # pragma: no cover - their optional readers may be missing
        pytest.skip(f"ome-arrow cannot read the stack here: {exc}")
    ours = from_stack_pattern_path(pattern)
    np.testing.assert_array_equal(of.to_numpy(theirs), of.to_numpy(ours))


def test_physical_sizes_and_byte_order(tmp_path):
    a = _u16(2, 8, 9)
    for k in range(2):
        tifffile.imwrite(
            tmp_path / f"ij_t{k}.tif", a, imagej=True, resolution=(4.0, 4.0),
            metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"},
        )
    h = StackSource(tmp_path / "ij_t<0-1>.tif").header()
    assert (h.physical_size_x, h.physical_size_y, h.physical_size_z) == (0.25, 0.25, 1.5)
    assert h.physical_size_x_unit == "µm"
    tifffile.imwrite(tmp_path / "be_z0.tif", a[0], byteorder=">")
    src = StackSource(tmp_path / "be_z<0-0>.tif")
    assert src.dtype == np.dtype("uint16") and src.dtype.isnative
    np.testing.assert_array_equal(LazyImage(src).execute()[0, 0, 0], a[0])


@pytest.mark.parametrize(
    ("values", "kind", "expected"),
    [
        (["uint8"] * 5, pa.string(), (True, "uint8")),
        (["uint8"] * 4 + ["uint9"], pa.string(), (False, None)),  # same length, other bytes
        (["uint8"] * 4 + ["int16"], pa.string(), (False, None)),
        (["uint8", "uint16"], pa.string(), (False, None)),  # other lengths
        ([None] * 3, pa.string(), (True, None)),
        (["zstd", None, "zstd"], pa.string(), (False, None)),  # a null beside a value
        (["", "", ""], pa.string(), (True, "")),
        (["µm"] * 3, pa.string(), (True, "µm")),
        (["uint8"] * 3, pa.large_string(), (True, "uint8")),
        ([], pa.string(), (True, None)),
    ],
)
def test_single_value_of_a_string_column(values, kind, expected) -> None:
    from omeframe.formats.record.stack import _single_value

    assert _single_value(pa.array(values, kind)) == expected


def test_single_value_honours_a_slice_and_refuses_bytes_that_are_not_text() -> None:
    from omeframe.formats.record.stack import _single_value

    col = pa.array(["a", "bb", "bb", "bb", "c"])
    assert _single_value(col.slice(1, 3)) == (True, "bb")
    assert _single_value(col.slice(0, 3)) == (False, None)
    offsets = pa.py_buffer(np.array([0, 1, 2], dtype=np.int32).tobytes())
    bad = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"\xff\xff")])
    assert _single_value(bad) == (False, None)
