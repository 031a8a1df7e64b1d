"""to_numpy_batch: one pass over many records equals to_numpy per record."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import omeframe as of
from omeframe.errors import PixelPayloadError


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    out = [rng.integers(0, 255, size=(40, 30, 3), dtype=np.uint8) for _ in range(25)]
    out.append(rng.integers(0, 255, size=(700, 600, 3), dtype=np.uint8))  # several chunks per channel
    return out


def test_batch_equals_per_record(tmp_path, images) -> None:
    path = of.write_table(tmp_path / "t.parquet", images, dim_order="YXC", chunk_shape=(1, 256, 256))
    col = of.read_table(path)["ome_arrow"]
    batch = of.to_numpy_batch(col)
    assert len(batch) == len(images)
    for got, rec, img in zip(batch, col, images, strict=True):
        assert got.dtype == np.uint8
        assert np.array_equal(got, of.to_numpy(rec))
        assert np.array_equal(got[0, :, 0], img.transpose(2, 0, 1))


def test_batch_mixed_variants_and_chunked_input(images) -> None:
    byte_recs = of.records_from_arrays(images[:5], dim_order="YXC")
    list_recs = of.records_from_arrays(images[5:8], dim_order="YXC", chunk_encoding="list")
    chunked = pa.chunked_array([byte_recs.slice(1, 3)])  # a sliced array inside a ChunkedArray
    got = of.to_numpy_batch(chunked)
    assert [g.shape for g in got] == [of.to_numpy(r).shape for r in byte_recs.slice(1, 3)]
    for g, img in zip(got, images[1:4], strict=True):
        assert np.array_equal(g[0, :, 0], img.transpose(2, 0, 1))
    # list-variant records go through the per-record path and still decode
    for g, img in zip(of.to_numpy_batch(list_recs), images[5:8], strict=True):
        assert np.array_equal(g[0, :, 0], img.transpose(2, 0, 1))
    # a plain sequence of scalars works too
    assert np.array_equal(of.to_numpy_batch([byte_recs[0]])[0][0, :, 0], images[0].transpose(2, 0, 1))


def test_batch_dtype_and_clamp() -> None:
    a = np.array([[0, 300, 70000]], dtype=np.int32)
    rec = of.records_from_arrays([a], dim_order="YX")
    (clamped,) = of.to_numpy_batch(rec, dtype=np.uint16, clamp=True)
    assert clamped.dtype == np.uint16
    assert clamped[0, 0, 0].tolist() == [[0, 300, 65535]]


def test_batch_rejects_chunks_outside_the_image() -> None:
    rec = of.from_numpy(np.ones((4, 4), dtype=np.uint8), chunk_shape=(1, 2, 2))
    d = of.to_dict(rec)
    d["chunks"][1]["x"] = 3  # a 2-wide chunk starting at x=3 in a 4-wide image
    bad = pa.repeat(of.OMEArrow(d).data, 1)
    with pytest.raises(PixelPayloadError, match=r"lies outside the image TCZYX=\(1, 1, 1, 4, 4\)"):
        of.to_numpy_batch(bad)


@pytest.mark.parametrize("compression", ["zstd", None])
@pytest.mark.parametrize("chunk_shape", [(1, 512, 512), (1, 4, 4)])  # whole planes / chunks placed after
def test_payloads_decode_in_the_order_asked_for(compression, chunk_shape) -> None:
    from omeframe.formats.record.decode import _flat_struct
    from omeframe.formats.record.stack import decode_payloads, uniform_layout

    stack = np.random.default_rng(3).integers(0, 255, (9, 2, 8, 8), dtype=np.uint8)
    records = _flat_struct(
        of.records_from_arrays(stack, dim_order="CYX", chunk_shape=chunk_shape, compression=compression)
    )
    layout = uniform_layout(records)
    assert layout is not None and (layout.codec is None) == (compression is None)
    payloads = _flat_struct(records.field("chunks").flatten()).field("pixel_bytes")
    order = np.array([4, 0, 8, 2, 7, 1, 6, 3, 5])
    out6 = np.empty((9, *layout.shape), dtype=layout.dtype)
    decode_payloads(payloads, layout, out6, what="t", order=order)
    assert np.array_equal(out6[:, 0, :, 0], stack[order])
    decode_payloads(payloads, layout, out6, what="t")
    assert np.array_equal(out6[:, 0, :, 0], stack)
    with pytest.raises(ValueError, match="order names 3 records for 9"):
        decode_payloads(payloads, layout, out6, what="t", order=order[:3])



@pytest.mark.parametrize("permuted", [False, True])
def test_a_damaged_frame_names_its_row_and_chunk_in_any_order(permuted) -> None:
    from omeframe.formats.record.decode import _flat_struct
    from omeframe.formats.record.stack import decode_payloads, uniform_layout

    stack = np.random.default_rng(4).integers(0, 255, (9, 2, 8, 8), dtype=np.uint8)
    records = _flat_struct(of.records_from_arrays(stack, dim_order="CYX", compression="zstd"))
    layout = uniform_layout(records)
    assert layout is not None and len(layout.keys) == 2
    frames = _flat_struct(records.field("chunks").flatten()).field("pixel_bytes").to_pylist()
    frames[2 * 7 + 1] = frames[2 * 7 + 1][:-3] + b"\0\0\0"  # record 7, chunk 1: a checksum that fails
    payloads = pa.array(frames, pa.large_binary())
    rows = np.arange(100, 109)  # the rows the records were taken from
    order = np.array([4, 0, 8, 2, 7, 1, 6, 3, 5]) if permuted else None
    out6 = np.empty((9, *layout.shape), dtype=layout.dtype)
    with pytest.raises(of.PixelPayloadError, match=r"^t: row 107 chunk 1: a zstd chunk payload does not decode"):
        decode_payloads(payloads, layout, out6, what="t", rows=rows, order=order)
    with pytest.raises(of.PixelPayloadError, match=r"^t: record 7 chunk 1: "):
        decode_payloads(payloads, layout, out6, what="t", order=order)
