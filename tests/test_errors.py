"""Bad inputs raise precise error types with messages that say what to fix."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.errors import (
    CorruptFileError,
    DimOrderError,
    DtypeError,
    NoOmeArrowColumnError,
    OmeframeError,
    PixelPayloadError,
    RowIndexError,
    SchemaError,
)

pytest.importorskip("vortex")

IMG = np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9)


# ---------------------------------------------------------------------------
# ingest
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dim_order,fragments",
    [
        ("ZX", ["'ZX'", "lacks", "['Y']", "Y and X"]),
        ("ZCY", ["lacks", "['X']"]),
        ("ZYY", ["repeats", "['Y']"]),
        ("YXX", ["repeats", "['X']"]),
        ("ZYQ", ["unknown axis letter", "['Q']", "T, C, Z, Y, X"]),
        ("SYX", ["unknown", "['S']"]),
        ("YX", ["names 2 axes", "3 dimensions", "one letter per dimension"]),
        ("TCZYX", ["names 5 axes", "3 dimensions"]),
    ],
)
def test_bad_dim_order(dim_order, fragments):
    with pytest.raises(DimOrderError) as ei:
        of.from_numpy(IMG, dim_order=dim_order)
    msg = str(ei.value)
    for frag in fragments:
        assert frag in msg, (frag, msg)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, OmeframeError)


def test_bad_dim_order_everywhere():
    with pytest.raises(DimOrderError, match="repeats"):
        of.records_from_arrays([IMG], dim_order="ZZX")
    with pytest.raises(DimOrderError, match="cannot infer axes for a 6-D array"):
        of.from_numpy(np.zeros((1, 1, 1, 1, 2, 2), np.uint8))
    with pytest.raises(DimOrderError, match="must be a string"):
        of.from_numpy(IMG, dim_order=["Z", "Y", "X"])


@pytest.mark.parametrize("value", [[[1, 2], [3, 4]], (1, 2), "pixels", 3.0, None])
def test_non_array_input_is_type_error(value):
    with pytest.raises(TypeError, match=r"expects a numpy\.ndarray, got .*numpy\.asarray"):
        of.from_numpy(value)


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (3, 0, 5), (0, 0)])
def test_zero_size_axes(shape):
    with pytest.raises(ValueError, match=rf"length >= 1.*{shape[0]}, {shape[1]}"):
        of.from_numpy(np.zeros(shape, np.uint16))
    with pytest.raises(ValueError, match="at least Y and X"):
        of.from_numpy(np.zeros(4, np.uint16))
    with pytest.raises(ValueError, match="size_x must be a positive integer, got 0"):
        of.to_ome_arrow(size_x=0)


@pytest.mark.parametrize("dtype", ["complex64", "float16", "datetime64[s]", "U3", "O"])
def test_unsupported_array_dtype(dtype):
    with pytest.raises(DtypeError, match=r"not supported; expected one of bool, uint8"):
        of.from_numpy(np.zeros((2, 2), dtype=dtype))


@pytest.mark.parametrize("name", ["uint12", "complex", "float128x", ""])
def test_unknown_dtype_string(name):
    rec = of.from_numpy(IMG)
    with pytest.raises(DtypeError, match=rf"unknown pixel dtype {name!r}; expected one of"):
        of.to_numpy(rec, dtype=name)
    with pytest.raises(DtypeError, match="unknown pixel dtype"):
        of.to_ome_arrow(dtype=name)
    with pytest.raises(DtypeError, match="unknown pixel dtype"):
        of.from_numpy(IMG, dtype_meta=name)


def test_record_with_unknown_dtype_in_metadata():
    d = of.to_dict(of.from_numpy(IMG))
    d["pixels_meta"]["type"] = "uint12"
    with pytest.raises(DtypeError, match="'uint12'"):
        of.to_numpy(d)


def test_list_variant_dtype_error_message():
    with pytest.raises(DtypeError) as ei:
        of.from_numpy(IMG.astype(np.float32), chunk_encoding="list")
    msg = str(ei.value)
    assert "list<uint16>" in msg and "float32" in msg
    assert "chunk_encoding='bytes'" in msg and "clamp_to_uint16=True" in msg


# ---------------------------------------------------------------------------
# pixel payloads
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["bytes", "list"])
def test_wrong_payload_length(encoding):
    rec = of.from_numpy(IMG, dim_order="ZYX", chunk_encoding=encoding, compression=None, chunk_shape=(1, 8, 9))
    d = of.to_dict(rec)
    if encoding == "bytes":
        d["chunks"][2]["pixel_bytes"] = d["chunks"][2]["pixel_bytes"][:-4]
        expect = r"chunks\[2\]: payload holds 70 values, expected 72 \(uint16\); pass strict=False"
    else:
        d["chunks"][2]["pixels"] = d["chunks"][2]["pixels"][:-1]
        expect = r"chunks\[2\]\.pixels has 71 values, expected 72; pass strict=False"
    with pytest.raises(PixelPayloadError, match=expect):
        of.to_numpy(d)
    with pytest.raises(PixelPayloadError):
        of.plane_from_chunks(d, t=0, c=0, z=2)
    assert np.array_equal(of.plane_from_chunks(d, t=0, c=0, z=0), IMG[0])  # other chunks fine


def test_odd_byte_count_and_out_of_bounds_chunk():
    d = of.to_dict(of.from_numpy(IMG, dim_order="ZYX", compression=None, chunk_shape=(1, 8, 9)))
    d["chunks"][0]["pixel_bytes"] = d["chunks"][0]["pixel_bytes"][:-1]
    with pytest.raises(PixelPayloadError, match="not a whole number of uint16 values"):
        of.to_numpy(d)
    d = of.to_dict(of.from_numpy(IMG, dim_order="ZYX", compression=None, chunk_shape=(1, 8, 9)))
    d["chunks"][1]["x"] = 4
    with pytest.raises(PixelPayloadError, match=r"chunks\[1\].*outside the image"):
        of.to_numpy(d)


def test_bad_planes_in_to_ome_arrow():
    with pytest.raises(PixelPayloadError, match=r"planes\[0\] has 3 pixels, expected size_y\*size_x = 4"):
        of.to_ome_arrow(size_x=2, size_y=2, planes=[{"t": 0, "c": 0, "z": 0, "pixels": [1, 2, 3]}])
    with pytest.raises(PixelPayloadError, match=r"planes\[0\] index \(t=0, c=0, z=5\) is outside"):
        of.to_ome_arrow(size_x=2, size_y=2, planes=[{"t": 0, "c": 0, "z": 5, "pixels": [1, 2, 3, 4]}])


def test_not_a_record():
    with pytest.raises(TypeError, match="expected an OME-Arrow record"):
        of.to_numpy(np.zeros((2, 2)))
    with pytest.raises(SchemaError, match="not an OME-Arrow record"):
        of.to_numpy(pa.scalar({"a": 1}))
    with pytest.raises(SchemaError, match="single OME-Arrow record, got an array of 2 rows"):
        of.to_numpy(of.records_from_arrays([IMG, IMG]))


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------
@pytest.fixture()
def table_file(tmp_path):
    path = of.write_table(tmp_path / "t.parquet", [IMG, IMG + 1], dim_order="ZYX", columns={"k": [1, 2]})
    return path


def test_no_ome_arrow_column(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2], "s": ["a", "b"], "st": [{"a": 1}, {"a": 2}]}), path)
    for col in ("ome_arrow", None):
        with pytest.raises(NoOmeArrowColumnError) as ei:
            of.from_ome_parquet(path, column_name=col)
        msg = str(ei.value)
        assert "no OME-Arrow column" in msg and "['x', 's', 'st']" in msg and "pixels_meta" in msg
        assert isinstance(ei.value, ValueError)
    with pytest.raises(SchemaError, match=r"column 'x' .* is not an OME-Arrow struct .*column_name=None"):
        of.from_ome_parquet(path, column_name="x")
    with pytest.raises(NoOmeArrowColumnError):
        of.OMEArrow(path)
    vpath = tmp_path / "plain.vortex"
    from omeframe.formats.vortex.file import write_vortex_table

    write_vortex_table(pa.table({"x": [1, 2]}), vpath)
    with pytest.raises(NoOmeArrowColumnError, match="no OME-Arrow column"):
        of.from_ome_vortex(vpath)


@pytest.mark.parametrize("row", [2, 5, -1, -3])
@pytest.mark.parametrize("suffix", [".parquet", ".vortex"])
def test_row_index_out_of_range(tmp_path, suffix, row):
    path = of.write_table(tmp_path / f"t{suffix}", [IMG, IMG + 1], dim_order="ZYX")
    reader = of.from_ome_parquet if suffix == ".parquet" else of.from_ome_vortex
    with pytest.raises(RowIndexError) as ei:
        reader(path, row_index=row)
    assert isinstance(ei.value, IndexError) and isinstance(ei.value, ValueError)
    msg = str(ei.value)
    assert str(row) in msg and "out of range" in msg and "2 rows" in msg
    with pytest.raises(IndexError):
        of.read_table(path, rows=[0, row])


def test_row_index_wrong_type(table_file):
    with pytest.raises(TypeError, match="row_index must be an integer, got str"):
        of.from_ome_parquet(table_file, row_index="1")


@pytest.mark.parametrize("suffix", [".parquet", ".vortex"])
def test_truncated_and_random_files(tmp_path, suffix):
    good = of.write_table(tmp_path / f"good{suffix}", [IMG, IMG + 1], dim_order="ZYX")
    data = good.read_bytes()
    reader = of.from_ome_parquet if suffix == ".parquet" else of.from_ome_vortex
    cases = {
        "truncated": data[: len(data) // 2],
        "tail-cut": data[:-3],
        "random": os.urandom(4096),
        "empty": b"",
    }
    fmt = "Parquet" if suffix == ".parquet" else "Vortex"
    for label, payload in cases.items():
        bad = tmp_path / f"{label}{suffix}"
        bad.write_bytes(payload)
        with pytest.raises(CorruptFileError) as ei:
            reader(bad)
        msg = str(ei.value)
        assert f"{label}{suffix}" in msg and fmt in msg, (label, msg)
        assert isinstance(ei.value, ValueError)
        with pytest.raises(CorruptFileError):
            of.read_table(bad)
        with pytest.raises(CorruptFileError):
            of.OMEArrow(bad)


def test_corrupt_parquet_pages(tmp_path, table_file):
    data = bytearray(table_file.read_bytes())
    rng = np.random.default_rng(0)
    data[100:2000] = rng.integers(0, 256, 1900, dtype=np.uint8).tobytes()
    bad = tmp_path / "pages.parquet"
    bad.write_bytes(bytes(data))
    with pytest.raises((CorruptFileError, PixelPayloadError)):
        of.to_numpy(of.from_ome_parquet(bad))


def test_unknown_format(tmp_path):
    p = tmp_path / "image.bin"
    p.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(CorruptFileError, match=r"neither a Parquet nor a Vortex file.*format="):
        of.read_table(p)


@pytest.mark.parametrize("name", ["missing.parquet", "missing.vortex", "sub/missing.parquet"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    reader = of.from_ome_vortex if name.endswith("vortex") else of.from_ome_parquet
    with pytest.raises(FileNotFoundError, match="no such file"):
        reader(path)
    with pytest.raises(FileNotFoundError, match="missing"):
        of.read_table(path)
    with pytest.raises(FileNotFoundError):
        of.OMEArrow(path)


def test_write_into_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        of.write_table(tmp_path / "nope" / "t.parquet", [IMG])


# ---------------------------------------------------------------------------
# nothing written half
# ---------------------------------------------------------------------------
def _snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_failed_parquet_write_mid_way_leaves_target_untouched(tmp_path, monkeypatch):
    target = of.write_table(tmp_path / "t.parquet", [IMG], dim_order="ZYX", columns={"k": [1]})
    before = _snapshot(tmp_path)
    calls = {"n": 0}
    original = pq.ParquetWriter.write_table

    def failing(self, table, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("disk full (simulated)")
        return original(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    imgs = [np.full((64, 64), i, np.uint16) for i in range(6)]
    with pytest.raises(OSError, match="disk full"):
        # Raw 8 KiB images in 8 KiB row groups: one write_table call per image.
        of.write_table(target, imgs, row_group_bytes=8 << 10, chunk_compression=None)
    assert calls["n"] >= 2  # failed after a row group had been written (a second writer lane may try one more)
    assert _snapshot(tmp_path) == before  # byte-identical, no temp files
    monkeypatch.undo()
    assert np.array_equal(of.to_numpy(of.from_ome_parquet(target))[0, 0], IMG)


def test_failed_vortex_write_leaves_target_untouched(tmp_path, monkeypatch):
    from omeframe.formats.vortex import file as vortex_file

    target = of.write_table(tmp_path / "t.vortex", [IMG], dim_order="ZYX")
    before = _snapshot(tmp_path)
    original = vortex_file.vortex_write_options

    class PartialThenFail:
        def __init__(self, real):
            self.real = real

        def write(self, table, path):
            self.real.write(table, path)
            with open(path, "r+b") as fh:
                fh.truncate(100)  # leave a half-written file behind
            raise RuntimeError("killed mid-write (simulated)")

    monkeypatch.setattr(vortex_file, "vortex_write_options", lambda vx, codec: PartialThenFail(original(vx, codec)))
    with pytest.raises(RuntimeError, match="killed mid-write"):
        of.write_table(target, [IMG + 5, IMG], dim_order="ZYX")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("suffix", [".parquet", ".vortex"])
def test_invalid_second_image_writes_nothing(tmp_path, suffix):
    target = of.write_table(tmp_path / f"t{suffix}", [IMG], dim_order="ZYX")
    before = _snapshot(tmp_path)
    with pytest.raises(DtypeError):
        of.write_table(target, [IMG, IMG.astype(np.complex64)], dim_order="ZYX")
    with pytest.raises(DimOrderError):
        of.write_table(target, [IMG, IMG[0]], dim_order="ZYX")
    with pytest.raises(ValueError, match="zero-size"):
        of.write_table(target, [IMG, np.zeros((3, 0, 4), np.uint16)], dim_order="ZYX")
    assert _snapshot(tmp_path) == before
    fresh = tmp_path / f"fresh{suffix}"
    with pytest.raises(DimOrderError):
        of.write_table(fresh, [IMG, IMG[0]], dim_order="ZYX")
    assert not fresh.exists() and _snapshot(tmp_path) == before
