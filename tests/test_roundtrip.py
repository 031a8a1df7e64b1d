"""Exact pixel round trips through OME-Arrow records (issue 3: ingest + export).

Every comparison is bit-exact (``_bits_equal`` compares raw bytes), so NaN
payloads, -0.0 and infinities must survive unchanged.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omeframe as of
from omeframe.errors import DtypeError, PixelPayloadError, SelectionError

INT_DTYPES = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]
FLOAT_DTYPES = ["float32", "float64"]
ALL_DTYPES = ["bool", *INT_DTYPES, *FLOAT_DTYPES]
LIST_DTYPES = ["bool", "uint8", "uint16"]
# (chunk_encoding, compression)
BYTE_ENCODINGS = [("bytes", None), ("bytes", "zstd"), ("bytes", "lz4")]
ALL_ENCODINGS = [*BYTE_ENCODINGS, ("list", None)]


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random pixels covering the whole range of ``dtype`` (negatives, NaN, inf)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        a = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
        flat = a.reshape(-1)
        extremes = np.array([info.min, info.max, 0, 1], dtype=dt)
        if dt.kind == "i":
            extremes = np.concatenate([extremes, np.array([-1], dtype=dt)])
        flat[: min(flat.size, extremes.size)] = extremes[: flat.size]
        return a
    a = (rng.standard_normal(shape) * 1e3).astype(dt)
    flat = a.reshape(-1)
    fin = np.finfo(dt)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, fin.max, -fin.max, fin.tiny], dtype=dt)
    flat[: min(flat.size, specials.size)] = specials[: flat.size]
    return a


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, same shape, same bytes (NaN == NaN, -0.0 != 0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def expected_tczyx(arr: np.ndarray, order: str) -> np.ndarray:
    """Reference TCZYX view: expand missing axes, then transpose into TCZYX."""
    axes = list(order)
    out = arr
    for ax in "TCZYX":
        if ax not in axes:
            out = np.expand_dims(out, -1)
            axes.append(ax)
    return np.transpose(out, [axes.index(ax) for ax in "TCZYX"])


def _rec(arr, encoding=("bytes", "zstd"), **kw):
    enc, comp = encoding
    return of.from_numpy(arr, chunk_encoding=enc, compression=comp, **kw)


# ---------------------------------------------------------------------------
# dtype x encoding
# ---------------------------------------------------------------------------
# The list variant holds bool/uint8/uint16 only (others: test_list_variant_rejects).
DTYPE_ENCODINGS = [
    (d, e) for d in ALL_DTYPES for e in ALL_ENCODINGS if e[0] == "bytes" or d in LIST_DTYPES
]


@pytest.mark.parametrize(
    "dtype,encoding", DTYPE_ENCODINGS, ids=[f"{d}-{e[0]}-{e[1]}" for d, e in DTYPE_ENCODINGS]
)
def test_exact_roundtrip_every_dtype(dtype, encoding):
    arr = sample(dtype, (2, 3, 2, 19, 23), seed=len(dtype))
    rec = _rec(arr, encoding, dim_order="TCZYX", chunk_shape=(1, 8, 8))
    out = of.to_numpy(rec)
    assert out.dtype == np.dtype(dtype)  # native dtype by default
    assert _bits_equal(out, arr)
    assert rec["pixels_meta"]["type"].as_py() == np.dtype(dtype).name
    expected_struct = of.OME_ARROW_STRUCT if encoding[0] == "list" else of.OME_ARROW_BYTE_STRUCT
    assert rec.type == expected_struct


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_float_specials_survive(dtype):
    arr = np.array([[np.nan, np.inf], [-np.inf, -0.0]], dtype=dtype)
    out = of.to_numpy(of.from_numpy(arr, dim_order="YX"))[0, 0, 0]
    assert np.isnan(out[0, 0]) and out[0, 1] == np.inf and out[1, 0] == -np.inf
    assert out[1, 1] == 0 and math.copysign(1.0, float(out[1, 1])) == -1.0


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
def test_negative_ints_keep_sign(dtype):
    arr = -np.arange(1, 13, dtype=dtype).reshape(3, 4)
    out = of.to_numpy(of.from_numpy(arr))[0, 0, 0]
    assert out.dtype == np.dtype(dtype)
    assert out.min() == -12 and np.array_equal(out, arr)


def test_non_contiguous_and_big_endian_inputs():
    base = sample("uint16", (6, 30, 40), seed=3)
    view = base[::-2, 3:, ::3]  # negative and non-unit strides
    assert not view.flags.c_contiguous
    assert np.array_equal(of.to_numpy(of.from_numpy(view, dim_order="ZYX"))[0, 0], view)
    fortran = np.asfortranarray(base)
    assert np.array_equal(of.to_numpy(of.from_numpy(fortran, dim_order="ZYX"))[0, 0], base)
    big = base.astype(">u2")
    out = of.to_numpy(of.from_numpy(big, dim_order="ZYX"))
    assert out.dtype == np.dtype("uint16") and np.array_equal(out[0, 0], base)


# ---------------------------------------------------------------------------
# dim orders
# ---------------------------------------------------------------------------
DIM_CASES = [
    ("YX", (13, 17)),
    ("XY", (17, 13)),
    ("CYX", (3, 13, 17)),
    ("YXC", (13, 17, 3)),
    ("ZYX", (4, 13, 17)),
    ("TYX", (2, 13, 17)),
    ("ZCYX", (4, 3, 13, 17)),
    ("CZYX", (3, 4, 13, 17)),
    ("TCYX", (2, 3, 13, 17)),
    ("YXZC", (13, 17, 4, 3)),
    ("TZCYX", (2, 4, 3, 13, 17)),
    ("TCZYX", (2, 3, 4, 13, 17)),
    ("XYZCT", (17, 13, 4, 3, 2)),
    ("CTXZY", (3, 2, 17, 4, 13)),
]


@pytest.mark.parametrize("order,shape", DIM_CASES, ids=[c[0] for c in DIM_CASES])
def test_dim_order_permutations(order, shape):
    arr = sample("int16", shape, seed=len(order))
    rec = of.from_numpy(arr, dim_order=order, chunk_shape=(2, 5, 7))
    out = of.to_numpy(rec)
    exp = expected_tczyx(arr, order)
    assert out.shape == exp.shape
    assert np.array_equal(out, exp)
    sizes = {ax: arr.shape[order.index(ax)] if ax in order else 1 for ax in "TCZYX"}
    meta = rec["pixels_meta"].as_py()
    assert (meta["size_t"], meta["size_c"], meta["size_z"], meta["size_y"], meta["size_x"]) == tuple(
        sizes[a] for a in "TCZYX"
    )


def test_explicit_axis_semantics():
    yxc = sample("uint8", (5, 6, 3), seed=1)
    out = of.to_numpy(of.from_numpy(yxc, dim_order="YXC"))
    for c in range(3):
        assert np.array_equal(out[0, c, 0], yxc[:, :, c])
    xy = sample("uint8", (6, 5), seed=2)
    out = of.to_numpy(of.from_numpy(xy, dim_order="XY"))
    assert np.array_equal(out[0, 0, 0], xy.T)
    tzcyx = sample("float32", (2, 3, 4, 5, 6), seed=3)
    out = of.to_numpy(of.from_numpy(tzcyx, dim_order="TZCYX"))
    assert _bits_equal(out[1, 2, 0], tzcyx[1, 0, 2])
    assert _bits_equal(out, np.swapaxes(tzcyx, 1, 2))


@pytest.mark.parametrize(
    "ndim,expected", [(2, (1, 1, 1, 7, 9)), (3, (1, 1, 4, 7, 9)), (4, (2, 3, 1, 7, 9)), (5, (2, 3, 4, 7, 9))]
)
def test_default_dim_order_from_rank(ndim, expected):
    shape = {2: (7, 9), 3: (4, 7, 9), 4: (2, 3, 7, 9), 5: (2, 3, 4, 7, 9)}[ndim]
    arr = sample("uint16", shape)
    out = of.to_numpy(of.from_numpy(arr))
    assert out.shape == expected
    assert np.array_equal(out.reshape(-1), arr.reshape(-1))


# ---------------------------------------------------------------------------
# chunk shapes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ALL_ENCODINGS, ids=lambda e: f"{e[0]}-{e[1]}")
@pytest.mark.parametrize("chunk_shape", [(1, 5, 7), (3, 4, 4), (2, 13, 1), (1, 1, 1)])
def test_odd_chunk_shapes_edge_chunks(encoding, chunk_shape):
    arr = sample("uint16", (1, 2, 5, 13, 17), seed=5)
    rec = _rec(arr, encoding, dim_order="TCZYX", chunk_shape=chunk_shape)
    assert np.array_equal(of.to_numpy(rec), arr)
    cz, cy, cx = chunk_shape
    chunks = rec["chunks"].values
    n_expected = 2 * math.ceil(5 / cz) * math.ceil(13 / cy) * math.ceil(17 / cx)
    assert len(chunks) == n_expected
    # Edge chunks are clipped to the image.
    sx = chunks.field("shape_x").to_numpy()
    xs = chunks.field("x").to_numpy()
    assert np.all(xs + sx <= 17) and (17 % cx == 0 or (sx == 17 % cx).any())
    sz = chunks.field("shape_z").to_numpy()
    assert np.all(chunks.field("z").to_numpy() + sz <= 5)


@pytest.mark.parametrize("encoding", ALL_ENCODINGS, ids=lambda e: f"{e[0]}-{e[1]}")
def test_chunk_shape_larger_than_image(encoding):
    arr = sample("uint8", (3, 10, 12), seed=6)
    rec = _rec(arr, encoding, dim_order="ZYX", chunk_shape=(8, 512, 512))
    grid = rec["chunk_grid"].as_py()
    assert (grid["chunk_z"], grid["chunk_y"], grid["chunk_x"]) == (3, 10, 12)
    assert len(rec["chunks"]) == 1
    assert np.array_equal(of.to_numpy(rec)[0, 0], arr)


# ---------------------------------------------------------------------------
# property test
# ---------------------------------------------------------------------------
@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(ALL_DTYPES))
    shape = tuple(draw(st.integers(1, 3)) for _ in range(3)) + (
        draw(st.integers(1, 24)),
        draw(st.integers(1, 24)),
    )
    chunk = (draw(st.integers(1, 4)), draw(st.integers(1, 30)), draw(st.integers(1, 30)))
    encs = ALL_ENCODINGS if dtype in LIST_DTYPES else BYTE_ENCODINGS
    enc = draw(st.sampled_from(encs))
    seed = draw(st.integers(0, 2**16))
    return dtype, shape, chunk, enc, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_property_roundtrip(case):
    dtype, shape, chunk, enc, seed = case
    arr = sample(dtype, shape, seed=seed)
    rec = _rec(arr, enc, dim_order="TCZYX", chunk_shape=chunk)
    assert _bits_equal(of.to_numpy(rec), arr)
    t, c, z = shape[0] - 1, shape[1] // 2, shape[2] - 1
    assert _bits_equal(of.plane_from_chunks(rec, t=t, c=c, z=z), arr[t, c, z])


# ---------------------------------------------------------------------------
# planes, dtype conversion, lenient reads
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ALL_ENCODINGS, ids=lambda e: f"{e[0]}-{e[1]}")
def test_plane_from_chunks_equals_plane(encoding):
    arr = sample("uint16", (2, 2, 3, 21, 19), seed=7)
    rec = _rec(arr, encoding, dim_order="TCZYX", chunk_shape=(2, 8, 6))
    for t, c, z in itertools.product(range(2), range(2), range(3)):
        plane = of.plane_from_chunks(rec, t=t, c=c, z=z)
        assert plane.shape == (21, 19) and plane.dtype == np.uint16
        assert np.array_equal(plane, arr[t, c, z])
    assert of.plane_from_chunks(rec, t=1, c=0, z=2, dtype=np.float64).dtype == np.float64


def test_to_numpy_clamp_integer_targets():
    arr = np.array([[-5, 3, 70000, 2**31 - 1]], dtype=np.int32)
    rec = of.from_numpy(arr)
    clamped = of.to_numpy(rec, dtype=np.uint16, clamp=True)[0, 0, 0, 0]
    assert clamped.dtype == np.uint16
    assert clamped.tolist() == [0, 3, 65535, 65535]
    wrapped = of.to_numpy(rec, dtype=np.uint16, clamp=False)[0, 0, 0, 0]
    assert wrapped.tolist() == arr.astype(np.uint16)[0].tolist()  # plain cast wraps
    assert wrapped.tolist() != clamped.tolist()
    f = np.array([[-1.5, 0.4, 254.6, 300.7]], dtype=np.float32)
    assert of.to_numpy(of.from_numpy(f), dtype="uint8", clamp=True)[0, 0, 0, 0].tolist() == [0, 0, 254, 255]


@pytest.mark.parametrize(
    "src,dst",
    [
        ("float32", "int32"),
        ("float32", "uint32"),
        ("float64", "int64"),
        ("float64", "uint64"),
        ("float64", "int32"),
        ("uint64", "int64"),
        ("int64", "uint64"),
        ("int64", "int32"),
    ],
)
def test_to_numpy_clamp_wide_types_saturate(src, dst):
    """Values beyond the target range saturate at its min/max (no wrap-around)."""
    sd = np.dtype(src)
    if sd.kind == "f":
        arr = np.array([[1e30, -1e30, 5, 2.0**62]], dtype=sd)
    else:
        info = np.iinfo(sd)
        arr = np.array([[info.max, info.min, 5, info.max - 1]], dtype=sd)
    out = of.to_numpy(of.from_numpy(arr), dtype=dst, clamp=True)[0, 0, 0, 0]
    dinfo = np.iinfo(dst)
    assert out.dtype == np.dtype(dst)
    assert int(out[0]) == min(dinfo.max, int(arr[0, 0]))
    assert int(out[1]) == max(dinfo.min, int(arr[0, 1]))
    assert int(out[2]) == 5
    assert int(out[3]) == min(dinfo.max, int(arr[0, 3]))


def _malformed_bytes(pay_len_delta: int) -> tuple[dict, np.ndarray]:
    arr = np.arange(2 * 12, dtype=np.uint16).reshape(2, 3, 4)
    rec = of.from_numpy(arr, dim_order="ZYX", compression=None, chunk_shape=(1, 3, 4))
    d = of.to_dict(rec)
    good = arr[0].reshape(-1)
    if pay_len_delta < 0:
        payload = good[:pay_len_delta]
    else:
        payload = np.concatenate([good, np.full(pay_len_delta, 999, np.uint16)])
    d["chunks"][0]["pixel_bytes"] = payload.tobytes()
    return d, arr


@pytest.mark.parametrize("delta", [-3, 2])
def test_strict_false_pads_or_truncates_byte_payload(delta):
    d, arr = _malformed_bytes(delta)
    with pytest.raises(PixelPayloadError, match=r"chunks\[0\].*expected 12"):
        of.to_numpy(d)
    out = of.to_numpy(d, strict=False)
    expected0 = arr[0].reshape(-1).copy()
    if delta < 0:
        expected0[delta:] = 0  # zero padding
    assert out[0, 0, 0].reshape(-1).tolist() == expected0.tolist()
    assert np.array_equal(out[0, 0, 1], arr[1])  # other chunks untouched


def test_strict_false_list_chunks_and_planes():
    arr = np.arange(2 * 12, dtype=np.uint16).reshape(2, 3, 4)
    d = of.to_dict(of.from_numpy(arr, dim_order="ZYX", chunk_encoding="list", chunk_shape=(1, 3, 4)))
    d["chunks"][1]["pixels"] = d["chunks"][1]["pixels"][:5]
    with pytest.raises(PixelPayloadError, match=r"chunks\[1\]\.pixels has 5 values, expected 12"):
        of.to_numpy(d, strict=True)
    out = of.to_numpy(d, strict=False)
    assert out[0, 0, 1].reshape(-1).tolist() == list(range(12, 17)) + [0] * 7
    d = of.to_dict(of.from_numpy(arr, dim_order="ZYX", chunk_encoding="list", build_chunks=False))
    d["planes"][0]["pixels"] = d["planes"][0]["pixels"] + [77, 78]
    with pytest.raises(PixelPayloadError, match=r"planes\[0\].*14 values"):
        of.to_numpy(d)
    out = of.to_numpy(d, strict=False)
    assert np.array_equal(out[0, 0], arr)


def test_malformed_compressed_payload_is_pixel_payload_error():
    arr = np.arange(12, dtype=np.uint16).reshape(3, 4)
    d = of.to_dict(of.from_numpy(arr, compression="zstd"))
    d["chunks"][0]["pixel_bytes"] = pa.Codec("zstd").compress(arr.reshape(-1)[:5].tobytes(), asbytes=True)
    with pytest.raises(PixelPayloadError, match="zstd"):
        of.to_numpy(d)


# ---------------------------------------------------------------------------
# clamp_to_uint16, list variant, storage layout
# ---------------------------------------------------------------------------
def test_native_dtype_by_default_and_clamp_to_uint16():
    arr = np.array([[-5.5, 3.2], [70000.0, np.nan]], dtype=np.float64)
    native = of.from_numpy(arr)
    assert native["pixels_meta"]["type"].as_py() == "float64"
    assert _bits_equal(of.to_numpy(native)[0, 0, 0], arr)
    clamped = of.from_numpy(arr, clamp_to_uint16=True)
    assert clamped["pixels_meta"]["type"].as_py() == "uint16"
    out = of.to_numpy(clamped)
    assert out.dtype == np.uint16 and out[0, 0, 0].tolist() == [[0, 3], [65535, 0]]


@pytest.mark.parametrize("dtype", ["int16", "float32", "uint32", "int8"])
def test_list_variant_rejects(dtype):
    arr = np.ones((4, 5), dtype=dtype)
    with pytest.raises(DtypeError, match="list<uint16>") as ei:
        of.from_numpy(arr, chunk_encoding="list")
    assert dtype in str(ei.value) and "clamp_to_uint16=True" in str(ei.value)
    arr[0, 0] = -7 if np.dtype(dtype).kind in "if" else 9
    rec = of.from_numpy(arr, chunk_encoding="list", clamp_to_uint16=True)
    assert rec.type == of.OME_ARROW_STRUCT
    out = of.to_numpy(rec)[0, 0, 0]
    assert out.dtype == np.uint16 and int(out[0, 0]) == max(0, int(arr[0, 0])) and int(out[1, 1]) == 1


@pytest.mark.parametrize("comp", [None, "zstd"])
def test_byte_variant_stores_no_planes(comp):
    arr = sample("uint16", (3, 20, 24), seed=9)
    rec = of.from_numpy(arr, dim_order="ZYX", compression=comp, chunk_shape=(1, 16, 16))
    assert rec["planes"].is_valid and len(rec["planes"]) == 0
    chunks = rec["chunks"].values
    stored = sum(len(b) for b in chunks.field("pixel_bytes").to_pylist())
    if comp is None:
        assert stored == arr.nbytes  # every pixel exactly once
        assert set(chunks.field("compression").to_pylist()) == {None}
    else:
        assert set(chunks.field("compression").to_pylist()) == {"zstd"}
    assert set(chunks.field("dtype").to_pylist()) == {"uint16"}


def test_list_variant_stores_chunks_only():
    arr = sample("uint8", (3, 20, 24), seed=10)
    rec = of.from_numpy(arr, dim_order="ZYX", chunk_encoding="list", chunk_shape=(1, 16, 16))
    assert len(rec["planes"]) == 0
    chunks = rec["chunks"].values
    assert sum(len(p) for p in chunks.field("pixels").to_pylist()) == arr.size
    planes_only = of.from_numpy(arr, dim_order="ZYX", chunk_encoding="list", build_chunks=False)
    assert not planes_only["chunks"].is_valid or len(planes_only["chunks"]) == 0
    assert len(planes_only["planes"]) == 3
    assert np.array_equal(of.to_numpy(planes_only)[0, 0], arr)


@pytest.mark.parametrize("encoding", [("bytes", "zstd"), ("list", None)], ids=["bytes", "list"])
def test_records_from_arrays_equals_from_numpy(encoding):
    enc, comp = encoding
    images = [sample("uint16", (2, 9 + i, 11 + 2 * i), seed=i) for i in range(4)]
    ids = [f"cell-{i}" for i in range(4)]
    arr = of.records_from_arrays(
        images, dim_order="ZYX", image_ids=ids, names=ids, chunk_shape=(1, 8, 8),
        chunk_encoding=enc, compression=comp,
    )
    assert isinstance(arr, pa.StructArray) and len(arr) == 4
    for i, img in enumerate(images):
        single = of.from_numpy(
            img, dim_order="ZYX", image_id=ids[i], name=ids[i], chunk_shape=(1, 8, 8),
            chunk_encoding=enc, compression=comp,
        )
        assert arr.type == single.type
        got, want = arr[i].as_py(), single.as_py()
        got.pop("acquisition_datetime")
        want.pop("acquisition_datetime")
        assert got == want
        assert np.array_equal(of.to_numpy(arr[i])[0, 0], img)


# ---------------------------------------------------------------------------
# to_ome_arrow, slicing, describe
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", [("bytes", "zstd"), ("list", None)], ids=["bytes", "list"])
def test_to_ome_arrow_from_planes(encoding):
    enc, comp = encoding
    arr = sample("uint16", (2, 2, 3, 6, 7), seed=11)
    planes = [
        {"t": t, "c": c, "z": z, "pixels": arr[t, c, z].reshape(-1).tolist()}
        for t in range(2) for c in range(2) for z in range(3)
        if (t, c, z) != (1, 1, 2)
    ]
    rec = of.to_ome_arrow(
        image_id="p1", name="planes", size_t=2, size_c=2, size_z=3, size_y=6, size_x=7,
        planes=planes, chunk_shape=(1, 4, 4), chunk_encoding=enc, compression=comp,
    )
    out = of.to_numpy(rec)
    exp = arr.copy()
    exp[1, 1, 2] = 0  # the missing plane is zero
    assert np.array_equal(out, exp)
    assert rec["id"].as_py() == "p1" and rec["image_type"].as_py() == "image"
    with pytest.raises(PixelPayloadError, match="expected size_y"):
        of.to_ome_arrow(size_y=6, size_x=7, planes=[{"t": 0, "c": 0, "z": 0, "pixels": [1, 2]}])


@pytest.mark.parametrize("encoding", ALL_ENCODINGS, ids=lambda e: f"{e[0]}-{e[1]}")
def test_slice_equals_numpy_and_reindexes(encoding):
    arr = sample("uint16", (3, 3, 4, 25, 31), seed=12)
    rec = _rec(arr, encoding, dim_order="TCZYX", chunk_shape=(2, 8, 8))
    out = of.slice_ome_arrow(rec, 5, 22, 3, 17, t_indices=[2, 0], c_indices=[1], z_indices=[3, 1, 2])
    exp = arr[np.ix_([0, 2], [1], [1, 2, 3])][..., 3:17, 5:22]
    got = of.to_numpy(out)
    assert got.shape == (2, 1, 3, 14, 17)
    assert np.array_equal(got, exp)
    meta = out["pixels_meta"].as_py()
    assert (meta["size_t"], meta["size_c"], meta["size_z"], meta["size_y"], meta["size_x"]) == (2, 1, 3, 14, 17)
    assert [ch["name"] for ch in meta["channels"]] == ["C1"]
    chunks = out["chunks"].values
    assert set(chunks.field("t").to_pylist()) == {0, 1}  # re-indexed from 0
    assert set(chunks.field("c").to_pylist()) == {0}
    assert out.type == rec.type  # keeps the source variant
    # Facade equivalent
    sliced = of.OMEArrow(rec).slice(5, 22, 3, 17, [2, 0], [1], [3, 1, 2])
    assert np.array_equal(sliced.export("numpy"), exp)
    with pytest.raises(SelectionError):
        of.slice_ome_arrow(rec, 0, 32, 0, 5)
    with pytest.raises(SelectionError):
        of.slice_ome_arrow(rec, 0, 5, 0, 5, t_indices=[3])


@pytest.mark.parametrize(
    "shape,kind,multi",
    [
        ((1, 1, 1, 4, 5), "2D image", False),
        ((1, 3, 1, 4, 5), "2D image", True),
        ((1, 2, 3, 4, 5), "3D image (z-stack)", True),
        ((3, 1, 1, 4, 5), "movie / timelapse", False),
        ((2, 1, 2, 4, 5), "4D timelapse-volume", False),
    ],
)
def test_describe_kinds(shape, kind, multi):
    d = of.describe_ome_arrow(of.from_numpy(np.zeros(shape, np.float32), dim_order="TCZYX"))
    assert d["shape"] == shape
    assert d["type"] == kind
    assert d["is_multichannel"] is multi
    assert d["dtype"] == "float32" and d["encoding"] == "bytes"
    assert kind in d["summary"] and f"X={shape[4]}" in d["summary"]
    assert ("multi-channel" in d["summary"]) is multi


def test_ome_arrow_compression_names():
    """chunk_compression[_level] (ome-arrow's names) override compression[_level]."""
    arr = sample("uint16", (2, 9, 10), seed=13)

    def comps(rec):
        return set(rec["chunks"].values.field("compression").to_pylist())

    assert comps(of.from_numpy(arr)) == {"zstd"}  # omeframe default
    assert comps(of.from_numpy(arr, chunk_compression=None)) == {None}  # explicit None wins
    assert comps(of.from_numpy(arr, compression=None, chunk_compression="lz4")) == {"lz4"}
    rec = of.from_numpy(arr, chunk_compression="zstd", chunk_compression_level=19)
    assert comps(rec) == {"zstd"} and np.array_equal(of.to_numpy(rec)[0, 0], arr)
    planes = [{"t": 0, "c": 0, "z": z, "pixels": arr[z].reshape(-1)} for z in range(2)]
    rec = of.to_ome_arrow(size_z=2, size_y=9, size_x=10, planes=planes, chunk_compression=None)
    assert comps(rec) == {None} and np.array_equal(of.to_numpy(rec)[0, 0], arr)
    many = of.records_from_arrays([arr, arr], dim_order="ZYX", chunk_compression="lz4")
    assert set(many.field("chunks").values.field("compression").to_pylist()) == {"lz4"}
