"""Chunk codecs and byte location: framed zstd, partial decode, damage, locate_payloads."""

from __future__ import annotations

import re
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import omeframe as of
from omeframe.engine.codec import decode_frames, decode_payload, encode_framed, encode_payload, normalize_compression
from omeframe.errors import ChunkChecksumError, PixelPayloadError
from omeframe.formats.dataset.locate import HEAD_BYTES, locate_payloads

PROPS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = ["uint8", "int16", "uint16", "int32", "float32", "float64"]


@st.composite
def blocks(draw: st.DrawFn) -> np.ndarray:
    """A ZYX chunk of smooth-plus-noise values (compressible, never constant)."""
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = np.add.outer(np.arange(shape[1]), np.arange(shape[2]))[None] + np.arange(shape[0])[:, None, None]
    vals = base + rng.integers(0, 4, shape)
    return vals.astype(dtype)


def frame_bytes(lengths: list[int], ka: int, kb: int) -> tuple[int, int]:
    ends = np.concatenate([[0], np.cumsum(lengths)])
    return int(ends[ka]), int(ends[kb])


# --------------------------------------------------------------------------- #
# framed zstd: encode -> partial decode
# --------------------------------------------------------------------------- #
@PROPS
@given(block=blocks(), data=st.data())
def test_framed_encode_then_partial_decode_of_any_row_range(block: np.ndarray, data: st.DataObject) -> None:
    dz, dy, dx = block.shape
    rows = dz * dy
    fr = data.draw(st.integers(1, rows + 2))
    stored, payload, lengths = encode_framed(block, "zstd", data.draw(st.sampled_from([None, 1, 3])), fr)
    assert stored == "zstd"
    flat = block.reshape(rows, dx)
    # the whole payload is one zstd stream any decoder reads
    whole = decode_payload(payload, "zstd", block.dtype, block.size, label="t")
    np.testing.assert_array_equal(whole, block.ravel())
    if lengths is None:
        assert fr >= rows  # one frame when the chunk is no taller than a frame
        return
    assert len(lengths) == -(-rows // fr) and sum(lengths) == len(payload)
    r0 = data.draw(st.integers(0, rows - 1))
    r1 = data.draw(st.integers(r0 + 1, rows))
    ka, kb = r0 // fr, -(-r1 // fr)
    lo, hi = frame_bytes(lengths, ka, kb)
    ra, rb = ka * fr, min(kb * fr, rows)
    part = decode_frames(memoryview(payload)[lo:hi], lengths[ka:kb], block.dtype, (rb - ra) * dx, label="t")
    np.testing.assert_array_equal(part.reshape(-1, dx), flat[ra:rb])
    np.testing.assert_array_equal(part.reshape(-1, dx)[r0 - ra : r1 - ra], flat[r0:r1])


@PROPS
@given(block=blocks(), data=st.data())
def test_damaged_frame_fails_to_decode_and_leaves_the_others_readable(block: np.ndarray, data: st.DataObject) -> None:
    dz, dy, dx = block.shape
    rows = dz * dy
    assume(rows >= 2)
    fr = data.draw(st.integers(1, rows - 1))
    _, payload, lengths = encode_framed(block, "zstd", 1, fr)
    assert lengths is not None
    k = data.draw(st.integers(0, len(lengths) - 1))
    lo, hi = frame_bytes(lengths, k, k + 1)
    # anywhere in the frame, or in its content checksum (the last 4 bytes)
    pos = data.draw(st.one_of(st.integers(lo, hi - 1), st.integers(hi - 4, hi - 1)))
    damaged = bytearray(payload)
    damaged[pos] ^= data.draw(st.integers(1, 255))
    ka = data.draw(st.integers(0, k))
    kb = data.draw(st.integers(k + 1, len(lengths)))
    a, b = frame_bytes(lengths, ka, kb)
    ra, rb = ka * fr, min(kb * fr, rows)
    flat = block.reshape(rows, dx)
    try:
        got = decode_frames(memoryview(damaged)[a:b], lengths[ka:kb], block.dtype, (rb - ra) * dx, label="t")
    except PixelPayloadError as exc:
        assert "zstd frame" in str(exc) or "decode to" in str(exc)
    else:
        # a few header bits are unused by decoders (zstd format spec): flipping
        # one leaves the frame valid; it must then decode to the original rows
        assert pos < hi - 4, "a damaged content checksum must never decode"
        np.testing.assert_array_equal(got.reshape(-1, dx), flat[ra:rb])
    for j in (j for j in range(len(lengths)) if j != k):  # every other frame still decodes alone
        a, b = frame_bytes(lengths, j, j + 1)
        got = decode_frames(memoryview(damaged)[a:b], lengths[j : j + 1], block.dtype,
                            (min((j + 1) * fr, rows) - j * fr) * dx, label="t")
        np.testing.assert_array_equal(got.reshape(-1, dx), flat[j * fr : (j + 1) * fr])


@settings(PROPS, max_examples=40)
@given(block=blocks(), codec=st.sampled_from([None, "zstd", "lz4", "gzip", "brotli", "snappy", "auto", "fast"]))
def test_encode_decode_payload_roundtrip(block: np.ndarray, codec: str | None) -> None:
    comp = normalize_compression(codec)
    stored, payload = encode_payload(block, comp, None)
    got = decode_payload(payload, stored, block.dtype, block.size, label="t")
    np.testing.assert_array_equal(got, block.ravel())
    if stored in (None, "zstd"):
        # (pyarrow's other codecs return a buffer of the asked size whatever the
        # payload holds, so a short payload cannot be told from a whole one there)
        with pytest.raises(PixelPayloadError, match="expected"):
            decode_payload(payload, stored, block.dtype, block.size + 1, label="t")


# --------------------------------------------------------------------------- #
# framed chunks in a dataset: the reader's partial decoder, damage -> ChunkChecksumError
# --------------------------------------------------------------------------- #
@settings(PROPS, max_examples=20)
@given(data=st.data())
def test_dataset_bands_decode_any_rows_and_damage_raises_checksum_error(data: st.DataObject) -> None:
    sz, sy, sx = data.draw(st.integers(1, 3)), data.draw(st.integers(4, 40)), data.draw(st.integers(2, 24))
    dtype = np.dtype(data.draw(st.sampled_from(["uint8", "uint16", "float32"])))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    arr = (np.add.outer(np.arange(sy), np.arange(sx)) + rng.integers(0, 3, (1, 1, sz, sy, sx))).astype(dtype)
    chunk = (data.draw(st.integers(1, sz)), data.draw(st.integers(2, sy)), data.draw(st.integers(1, sx)))
    fr = data.draw(st.integers(1, chunk[0] * chunk[1] - 1))  # rows per frame: several frames per chunk
    fmt = data.draw(st.sampled_from(["parquet", "vortex"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ds"
        of.write_dataset(arr, path, format=fmt, chunk_shape=chunk, frame_bytes=fr * chunk[2] * dtype.itemsize,
                         image_ids=["a"], dim_order="TCZYX", compression="zstd")
        ds = of.open_dataset(path)
        pieces = ds.pixel_source("a")
        assert pieces.partial_decode and pieces.grid == chunk
        e = ds.entry("a")
        i = data.draw(st.integers(0, len(pieces) - 1))
        (_, _, z0, y0, x0), (dz, dy, dx) = pieces.origins[i].tolist(), pieces.extents[i].tolist()
        rows = dz * dy
        chunk_rows = arr[0, 0, z0 : z0 + dz, y0 : y0 + dy, x0 : x0 + dx].reshape(rows, dx)
        r0 = data.draw(st.integers(0, rows - 1))
        r1 = data.draw(st.integers(r0 + 1, rows))
        assert pieces.bands is not None
        flat, ra = pieces.bands.decode_rows(i, r0, r1, True)
        got = flat.reshape(-1, dx)
        assert ra <= r0 and ra + got.shape[0] >= r1
        np.testing.assert_array_equal(got, chunk_rows[ra : ra + got.shape[0]])
        nbytes = pieces.bands.span_nbytes(i, r0, r1)
        assert 0 < nbytes <= int(e.lengths[i])
        ds.close()

        # damage one byte of one frame of chunk i (Parquet keeps payloads verbatim)
        if fmt != "parquet" or e.offsets is None or e.frames is None:
            return
        first, ends = e.frames
        fa, fb = int(first[i]), int(first[i + 1])
        if fb - fa < 2:
            return
        k = data.draw(st.integers(0, fb - fa - 1))
        lo, hi = int(ends[fa + k] - ends[fa]), int(ends[fa + k + 1] - ends[fa])
        pos = int(e.offsets[i]) + data.draw(st.one_of(st.integers(lo, hi - 1), st.integers(hi - 4, hi - 1)))
        part = path / e.part_of(i)
        raw = bytearray(part.read_bytes())
        raw[pos] ^= data.draw(st.integers(1, 255))
        part.write_bytes(bytes(raw))
        ds = of.open_dataset(path)
        pieces = ds.pixel_source("a")
        assert pieces.bands is not None
        krows = (k * fr, min((k + 1) * fr, rows))
        zd, yd = z0 + krows[0] // dy, y0 + krows[0] % dy  # a pixel stored in the damaged frame
        try:
            flat, ra = pieces.bands.decode_rows(i, krows[0], krows[1], True)
        except ChunkChecksumError as exc:
            assert re.search(r"image 'a' level 0 chunk .* zstd frames", str(exc))
            with pytest.raises(ChunkChecksumError):
                pieces.decode(i, True)
            with pytest.raises(ChunkChecksumError):
                ds.read("a", z=[zd], y=(yd, yd + 1), x=(x0, x0 + dx))
        else:  # an unused header bit: the frame is still valid and exact
            assert pos < int(e.offsets[i]) + hi - 4, "a damaged content checksum must never decode"
            np.testing.assert_array_equal(
                flat.reshape(-1, dx)[krows[0] - ra : krows[1] - ra], chunk_rows[krows[0] : krows[1]]
            )
        # rows of the other frames still read (the damaged frame is not fetched)
        other = next((j for j in range(fb - fa) if j != k), None)
        if other is not None:
            orows = (other * fr, min((other + 1) * fr, rows))
            flat, ra = pieces.bands.decode_rows(i, orows[0], orows[1], True)
            np.testing.assert_array_equal(
                flat.reshape(-1, dx)[orows[0] - ra : orows[1] - ra], chunk_rows[orows[0] : orows[1]]
            )
        ds.close()


# --------------------------------------------------------------------------- #
# locate_payloads
# --------------------------------------------------------------------------- #
def _write(tmp: str, blob: bytes) -> Path:
    p = Path(tmp) / "file.bin"
    p.write_bytes(blob)
    return p


def _contract(blob: bytes, payloads: list[bytes], offsets: np.ndarray) -> None:
    """Offsets point at the payloads' bytes, in order, without overlap."""
    end = 0
    for p, off in zip(payloads, offsets.tolist(), strict=True):
        assert off >= end
        assert blob[off : off + len(p)] == p
        end = off + len(p)


@PROPS
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=300), min_size=0, max_size=8),
    data=st.data(),
)
def test_locate_payloads_finds_every_payload(payloads: list[bytes], data: st.DataObject) -> None:
    parts: list[bytes] = []
    actual: list[int] = []
    pos = 0
    for p in payloads:
        filler = data.draw(st.binary(max_size=6000))  # crosses the 4 KiB first window
        if len(p) > HEAD_BYTES and data.draw(st.booleans()):
            # a decoy: the same first bytes, then different content
            decoy = bytearray(p)
            decoy[-1] ^= 0xFF
            filler += bytes(decoy)
        parts += [filler, p]
        actual.append(pos + len(filler))
        pos += len(filler) + len(p)
    parts.append(data.draw(st.binary(max_size=200)))
    blob = b"".join(parts)
    heads = [p[:HEAD_BYTES] for p in payloads]
    crcs = [zlib.crc32(p) & 0xFFFFFFFF for p in payloads]
    with tempfile.TemporaryDirectory() as tmp:
        got = locate_payloads(_write(tmp, blob), heads, [len(p) for p in payloads], crcs)
    assert got is not None and got.dtype == np.int64 and len(got) == len(payloads)
    _contract(blob, payloads, got)
    # where a payload's bytes occur only at its own place, that place is found
    end = 0
    for p, off, true in zip(payloads, got.tolist(), actual, strict=True):
        if blob.find(p, end) == true:
            assert off == true
        end = off + len(p)


@PROPS
@given(
    payloads=st.lists(st.binary(min_size=2, max_size=200), min_size=1, max_size=6),
    data=st.data(),
)
def test_locate_payloads_gives_up_on_payloads_not_stored_verbatim(payloads: list[bytes], data: st.DataObject) -> None:
    j = data.draw(st.integers(0, len(payloads) - 1))
    k = data.draw(st.integers(0, len(payloads[j]) - 1))
    stored = list(payloads)
    changed = bytearray(payloads[j])
    changed[k] ^= data.draw(st.integers(1, 255))
    stored[j] = bytes(changed)  # the container re-encoded payload j
    blob = b"".join(data.draw(st.binary(max_size=50)) + p for p in stored)
    heads = [p[:HEAD_BYTES] for p in payloads]
    crcs = [zlib.crc32(p) & 0xFFFFFFFF for p in payloads]
    with tempfile.TemporaryDirectory() as tmp:
        got = locate_payloads(_write(tmp, blob), heads, [len(p) for p in payloads], crcs)
    if blob.find(payloads[j]) < 0:
        assert got is None
    elif got is not None:  # payload j's bytes happen to occur elsewhere: still a valid answer
        _contract(blob, payloads, got)


def test_locate_payloads_examples(tmp_path: Path) -> None:
    a, b = b"A" * 40 + b"tail-a", b"B" * 30
    blob = b"xx" + a + b"yyyy" + b
    p = tmp_path / "f"
    p.write_bytes(blob)
    args: Any = ([a[:HEAD_BYTES], b[:HEAD_BYTES]], [len(a), len(b)], [zlib.crc32(a), zlib.crc32(b)])
    assert locate_payloads(p, *args).tolist() == [2, 2 + len(a) + 4]
    assert locate_payloads(p, [], [], []).tolist() == []
    p.write_bytes(blob[:-1])  # truncated: the last payload is not all there
    assert locate_payloads(p, *args) is None


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_every_single_byte_damage_of_a_small_chunk_raises_or_is_harmless(dtype: str) -> None:
    # includes headers that declare absurd content sizes (zstandard would try
    # to allocate them): those must be reported as damage, never as MemoryError
    block = (np.arange(2 * 3 * 5).reshape(2, 3, 5) % 7).astype(dtype)
    _, payload, lengths = encode_framed(block, "zstd", 1, 2)
    assert lengths is not None
    single = bytes(encode_payload(block, "zstd", 1)[1])
    for pos in range(max(len(payload), len(single))):
        for flip in (0x01, 0x10, 0x80, 0xFF):
            if pos < len(payload):  # framed: every frame carries its content checksum
                damaged = bytearray(payload)
                damaged[pos] ^= flip
                try:
                    got = decode_frames(bytes(damaged), lengths, block.dtype, block.size, label="t")
                except PixelPayloadError:
                    pass
                else:
                    np.testing.assert_array_equal(got, block.ravel())
            if pos < len(single):
                # one frame without a checksum (record payloads; datasets check
                # their CRC-32 first): damage may go unnoticed, but decoding
                # fails with PixelPayloadError or returns the right number of values
                damaged = bytearray(single)
                damaged[pos] ^= flip
                try:
                    got = decode_payload(bytes(damaged), "zstd", block.dtype, block.size, label="t")
                except PixelPayloadError:
                    continue
                assert got.size == block.size


def test_header_declaring_a_huge_content_size_is_damage_not_memory_error() -> None:
    block = np.array([[[0], [1]]], dtype=np.uint8)
    _, payload, lengths = encode_framed(block, "zstd", 3, 1)
    assert lengths is not None and bytes(payload)[:4] == b"\x28\xb5\x2f\xfd"
    damaged = bytearray(payload)
    damaged[4] ^= 0xC0  # frame header descriptor: an 8-byte content size field, read from the block bytes
    with pytest.raises(PixelPayloadError, match="declares .* bytes of content in its header|cannot decode"):
        decode_frames(bytes(damaged), lengths, block.dtype, block.size, label="t")
    with pytest.raises(PixelPayloadError, match="declares .* bytes of content in its header|cannot decode"):
        decode_payload(bytes(damaged)[: lengths[0]], "zstd", block.dtype, block.size, label="t")


@pytest.mark.parametrize("compression", ["gzip", "brotli", "lz4", "snappy", "zstd"])
def test_chunks_compressed_by_several_threads_at_once_decode(compression):
    """Arrow's gzip codec compresses through a zlib stream it holds: a codec object shared by the threads that
    compress a dataset's chunks corrupted their payloads (a gzip header, then another chunk's raw bytes) or
    failed. Each thread has its own codec objects."""
    import threading

    from omeframe.engine.codec import decode_payload, encode_payload

    rng = np.random.default_rng(0)
    blocks = [rng.integers(0, 4000, (64, 64), dtype=np.uint16) for _ in range(32)]
    failures: list[str] = []

    def work(first: int) -> None:
        for _ in range(20):
            for i in range(first, len(blocks), 4):
                try:
                    name, payload = encode_payload(blocks[i], compression, None)
                    out = decode_payload(payload, name, np.dtype(np.uint16), blocks[i].size, label=f"block {i}")
                    if not np.array_equal(out, blocks[i].reshape(-1)):
                        failures.append(f"block {i}: other values")
                except Exception as exc:  # noqa: BLE001 - every failure is reported below
                    failures.append(f"block {i}: {exc}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
