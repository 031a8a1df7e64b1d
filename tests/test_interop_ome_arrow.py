"""Interoperability with the reference implementation ``ome-arrow`` 0.1.0.

Files written by ``ome_arrow`` open in omeframe and omeframe's files open in
``ome_arrow``, with identical pixels, for every combination the peer itself
supports. What the peer cannot do (checked with ome-arrow 0.1.0, see the
``test_peer_limitation_*`` tests):

* ``ome_arrow.to_ome_vortex`` cannot write the byte variant: it rebuilds the
  record as ``OME_ARROW_STRUCT`` (``pa.array([record.as_py()],
  type=OME_ARROW_STRUCT)``), which silently drops ``chunks[].pixel_bytes`` and
  leaves ``chunks[].pixels`` null. No reader can recover those pixels;
  omeframe refuses them with ``PixelPayloadError("a chunk has null pixels")``
  and ome_arrow's own reader fails with ``ValueError: chunks[0] pixel payload
  length 1 != expected 512``.
* ``ome_arrow.from_ome_vortex`` cannot read byte-variant Vortex files (from any
  writer): Vortex returns ``string_view`` types, so the column type is not a
  known struct and ome_arrow normalises it to the *list* struct
  ``OME_ARROW_STRUCT`` via Python objects, dropping ``pixel_bytes`` (again
  ``ValueError ... pixel payload length 1 != expected``); with
  ``strict_schema=True`` it raises ``ValueError: Column 'image' schema is not
  a known OME-Arrow struct``.

So for Vortex only the list variant crosses between the two libraries; for
Parquet every variant, dtype and compression does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import omeframe as of
from omeframe.errors import PixelPayloadError

oa = pytest.importorskip("ome_arrow")
pytest.importorskip("vortex")

# ome_arrow warns when it normalises non-canonical structs or auto-detects columns.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _img(dtype: str, shape=(2, 2, 3, 37, 41), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        a = (rng.standard_normal(shape) * 100).astype(dt)
        a.reshape(-1)[:3] = [np.nan, np.inf, -0.0]
        return a
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_struct_types_are_identical():
    assert of.OME_ARROW_STRUCT == oa.OME_ARROW_STRUCT
    assert of.OME_ARROW_BYTE_STRUCT == oa.OME_ARROW_BYTE_STRUCT
    assert of.OME_ARROW_TAG_TYPE == oa.OME_ARROW_TAG_TYPE
    assert of.OME_ARROW_TAG_VERSION == oa.OME_ARROW_TAG_VERSION


# ---------------------------------------------------------------------------
# ome_arrow writes -> omeframe reads
# ---------------------------------------------------------------------------
PEER_CASES = [
    ("list", None, "uint16"),
    ("list", None, "uint8"),
    ("bytes", None, "uint16"),
    ("bytes", "zstd", "uint16"),
    ("bytes", None, "uint8"),
    ("bytes", "zstd", "uint8"),
    ("bytes", None, "float32"),
    ("bytes", "zstd", "float32"),
]


def _peer_record(enc, comp, dtype, **kw):
    arr = _img(dtype)
    rec = oa.from_numpy(
        arr, dim_order="TCZYX", clamp_to_uint16=False, chunk_encoding=enc,
        chunk_compression=comp, chunk_shape=(2, 16, 16), **kw,
    )
    return arr, rec


@pytest.mark.parametrize("column_name", ["image", "ome_arrow"])
@pytest.mark.parametrize("enc,comp,dtype", PEER_CASES)
def test_peer_parquet_read_by_omeframe(tmp_path, enc, comp, dtype, column_name):
    arr, rec = _peer_record(enc, comp, dtype)
    path = tmp_path / "peer.parquet"
    oa.to_ome_parquet(rec, str(path), column_name=column_name)
    got = of.from_ome_parquet(path, column_name=column_name)
    assert got.type == (of.OME_ARROW_BYTE_STRUCT if enc == "bytes" else of.OME_ARROW_STRUCT)
    out = of.to_numpy(got)
    assert _same(out, arr)  # native dtype, identical bits
    assert _same(of.plane_from_chunks(got, t=1, c=0, z=2), arr[1, 0, 2])
    # The in-memory peer record reads the same.
    assert _same(of.to_numpy(rec), arr)


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_peer_list_vortex_read_by_omeframe(tmp_path, dtype):
    arr, rec = _peer_record("list", None, dtype)
    path = tmp_path / "peer.vortex"
    oa.to_ome_vortex(rec, str(path), column_name="image")
    got = of.from_ome_vortex(path, column_name="image")
    assert _same(of.to_numpy(got), arr)
    assert of.from_ome_vortex(path, column_name=None) == got  # auto-detected


def test_peer_default_records_read_by_omeframe(tmp_path):
    """ome_arrow's defaults: clamp to uint16, list variant with planes and chunks."""
    arr = _img("uint16", (1, 2, 2, 20, 30))
    rec = oa.from_numpy(arr, dim_order="TCZYX")
    assert len(rec["planes"]) == 4 and len(rec["chunks"]) > 0  # pixels stored twice
    assert _same(of.to_numpy(rec), arr)
    planes_only = oa.from_numpy(arr, dim_order="TCZYX", build_chunks=False)
    path = tmp_path / "planes.parquet"
    oa.to_ome_parquet(planes_only, str(path), column_name="image")
    got = of.from_ome_parquet(path, column_name="image")
    assert of.describe_ome_arrow(got)["encoding"] == "planes"
    assert _same(of.to_numpy(got), arr)
    # Re-encoded to bytes by ome_arrow's writer on the way out.
    path2 = tmp_path / "inline.parquet"
    oa.to_ome_parquet(rec, str(path2), inline_chunk_encoding="bytes", inline_chunk_compression="zstd")
    got2 = of.from_ome_parquet(path2, column_name="image")
    assert got2.type == of.OME_ARROW_BYTE_STRUCT
    assert _same(of.to_numpy(got2), arr)


def test_peer_limitation_byte_variant_vortex_write(tmp_path):
    """ome_arrow.to_ome_vortex drops pixel_bytes; omeframe refuses, never returns zeros."""
    arr, rec = _peer_record("bytes", "zstd", "uint16")
    path = tmp_path / "peer_bytes.vortex"
    oa.to_ome_vortex(rec, str(path), column_name="image")
    got = of.from_ome_vortex(path, column_name="image")
    assert got.type == of.OME_ARROW_STRUCT  # the peer wrote the list struct
    assert got["chunks"][0]["pixels"].as_py() is None
    with pytest.raises(PixelPayloadError, match="null pixels"):
        of.to_numpy(got)
    with pytest.raises(ValueError, match="pixel payload length"):
        oa.to_numpy(oa.from_ome_vortex(str(path), column_name="image"))


# ---------------------------------------------------------------------------
# omeframe writes -> ome_arrow reads
# ---------------------------------------------------------------------------
OUR_CASES = [
    ("list", None, "uint16"),
    ("list", None, "uint8"),
    ("bytes", None, "uint16"),
    ("bytes", "zstd", "uint16"),
    ("bytes", "lz4", "uint8"),
    ("bytes", "zstd", "float32"),
    ("bytes", None, "int16"),
    ("bytes", "zstd", "float64"),
]


@pytest.mark.parametrize("column_name", ["image", "ome_arrow"])
@pytest.mark.parametrize("enc,comp,dtype", OUR_CASES)
def test_omeframe_parquet_read_by_peer(tmp_path, enc, comp, dtype, column_name):
    arrs = [_img(dtype, seed=s) for s in range(3)]
    # chunk_compression: the chunk codec (write_table's own ``compression`` is Parquet's).
    kw = dict(dim_order="TCZYX", chunk_encoding=enc, chunk_compression=comp, chunk_shape=(2, 16, 16))
    # Single record via to_ome_parquet.
    rec = of.from_numpy(arrs[0], **kw)
    if enc == "bytes":
        assert {c["compression"] for c in rec["chunks"].as_py()} == {comp}
    one = tmp_path / "one.parquet"
    of.to_ome_parquet(rec, str(one), column_name=column_name)
    peer = oa.from_ome_parquet(str(one), column_name=column_name)
    assert peer.type == rec.type
    assert _same(oa.to_numpy(peer, dtype=np.dtype(dtype)), arrs[0])
    # A multi-row table with extra columns via write_table.
    many = of.write_table(
        tmp_path / "many.parquet", arrs, column_name=column_name,
        columns={"well": ["A1", "A2", "B1"], "n": [1, 2, 3]}, **kw,
    )
    stored = of.read_table(many, columns=[column_name])[column_name]
    if enc == "bytes":
        assert {c["compression"] for r in stored.to_pylist() for c in r["chunks"]} == {comp}
    for k in (2, 0, 1):
        peer = oa.from_ome_parquet(str(many), column_name=column_name, row_index=k)
        assert _same(oa.to_numpy(peer, dtype=np.dtype(dtype)), arrs[k])
    # ome_arrow auto-detects our column too.
    peer = oa.from_ome_parquet(str(many), column_name=None, row_index=1)
    assert _same(oa.to_numpy(peer, dtype=np.dtype(dtype)), arrs[1])
    # ...and its plane reader agrees.
    from ome_arrow.export import plane_from_chunks as oa_plane

    assert _same(oa_plane(peer, t=1, c=1, z=2, dtype=np.dtype(dtype)), arrs[1][1, 1, 2])


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_omeframe_list_vortex_read_by_peer(tmp_path, dtype):
    arrs = [_img(dtype, seed=s) for s in range(2)]
    kw = dict(dim_order="TCZYX", chunk_encoding="list", chunk_shape=(2, 16, 16))
    one = tmp_path / "one.vortex"
    of.to_ome_vortex(of.from_numpy(arrs[0], **kw), str(one), column_name="image")
    peer = oa.from_ome_vortex(str(one), column_name="image")
    assert _same(oa.to_numpy(peer, dtype=np.dtype(dtype)), arrs[0])
    many = of.write_table(tmp_path / "many.vortex", arrs, columns={"k": [5, 6]}, **kw)
    peer = oa.from_ome_vortex(str(many), column_name="ome_arrow", row_index=1)
    assert _same(oa.to_numpy(peer, dtype=np.dtype(dtype)), arrs[1])


def test_peer_limitation_byte_variant_vortex_read(tmp_path):
    """ome_arrow.from_ome_vortex normalises byte records to the list struct (no pixels)."""
    arr = _img("uint16")
    path = tmp_path / "ours_bytes.vortex"
    of.to_ome_vortex(of.from_numpy(arr, dim_order="TCZYX", chunk_shape=(2, 16, 16)), str(path))
    assert _same(of.to_numpy(of.from_ome_vortex(path, column_name="image")), arr)  # we read it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = oa.from_ome_vortex(str(path), column_name="image")
    assert peer.type == oa.OME_ARROW_STRUCT  # pixel_bytes dropped by the peer
    with pytest.raises(ValueError, match="pixel payload length"):
        oa.to_numpy(peer, dtype=np.uint16)
    with pytest.raises(ValueError, match="not a known OME-Arrow struct"):
        oa.from_ome_vortex(str(path), column_name="image", strict_schema=True)


@pytest.mark.parametrize("enc,comp,dtype", OUR_CASES)
def test_in_memory_records_read_by_peer(enc, comp, dtype):
    arr = _img(dtype, (1, 2, 3, 20, 22))
    rec = of.from_numpy(arr, dim_order="TCZYX", chunk_encoding=enc, compression=comp, chunk_shape=(1, 7, 9))
    assert _same(oa.to_numpy(rec, dtype=np.dtype(dtype)), arr)
    assert oa.describe_ome_arrow(rec)["shape"] == of.describe_ome_arrow(rec)["shape"]
    assert oa.verify_ome_arrow(of.to_dict(rec), rec.type)


@pytest.mark.parametrize("target,comp", [("bytes", "zstd"), ("bytes", None), ("list", None)])
def test_inline_chunk_encoding_read_by_peer(tmp_path, target, comp):
    """omeframe's to_ome_parquet re-encodes like ome_arrow's (inline_chunk_*)."""
    arr = _img("uint16", (1, 2, 2, 20, 30))
    src = of.from_numpy(arr, dim_order="TCZYX", chunk_encoding="list" if target == "bytes" else "bytes")
    path = tmp_path / "inline.parquet"
    of.to_ome_parquet(
        src, str(path), inline_chunk_encoding=target, inline_chunk_compression=comp
    )
    peer = oa.from_ome_parquet(str(path), column_name="image", strict_schema=True)
    assert peer.type == (oa.OME_ARROW_BYTE_STRUCT if target == "bytes" else oa.OME_ARROW_STRUCT)
    if target == "bytes":
        assert {c["compression"] for c in peer["chunks"].as_py()} == {comp}
    assert _same(oa.to_numpy(peer, dtype=np.uint16), arr)
    assert _same(of.to_numpy(of.from_ome_parquet(path, column_name="image")), arr)
