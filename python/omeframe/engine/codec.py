"""Chunk payload codecs: compress native-dtype chunk bytes and decode them back.

Codecs are the ones the OME-Arrow byte variant names in
``chunks[].compression``: zstd goes through ``zstandard`` (the same libzstd
frames Arrow's codec reads and writes, with far less per-call overhead and one
reusable context per thread), the others through ``pyarrow.Codec``. Payloads
written here decode in any OME-Arrow reader and the other way round. Both
release the GIL, so a thread pool decodes chunks in parallel.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.engine.limits import check_alloc
from omeframe.model.checks import is_integer
from omeframe.model.errors import PixelPayloadError

__all__ = [
    "normalize_compression",
    "encode_payload",
    "encode_framed",
    "decode_payload",
    "decode_frames",
    "frame_rows_for",
    "binary_offsets",
    "zstd_decompressor",
    "thread_scratch",
    "pack_large_binary",
    "resolve_codec",
    "check_level",
    "CODECS",
]

#: Compression names a chunk may carry (besides ``None`` for raw bytes).
CODECS = ("zstd", "lz4", "gzip", "brotli", "snappy", "bz2", "lz4_raw")

# Convenience presets understood by ome-arrow as well: the preset picks the codec
# and keeps the raw bytes when compression does not make the chunk smaller.
_PRESETS: dict[str, tuple[str, int | None]] = {
    "auto": ("zstd", 1),
    "balanced": ("zstd", 1),
    "small": ("zstd", 1),
    "fast": ("lz4", None),
}
_NONE = {"", "none", "null", "false", "raw", "uncompressed"}


def normalize_compression(compression: str | None) -> str | None:
    """Return the canonical compression name, ``None`` for raw bytes.

    Raises
    ------
    ValueError
        If the name is not a codec Arrow provides or a preset.
    """
    if compression is None:
        return None
    value = str(compression).strip().lower()
    if value in _NONE:
        return None
    if value in _PRESETS:
        return value
    if value not in CODECS or not _usable(value):
        raise ValueError(
            f"unknown chunk compression {compression!r}; expected None or one of "
            f"{', '.join(c for c in CODECS if _usable(c))} "
            f"or a preset ({', '.join(_PRESETS)})"
        )
    return value


@functools.cache
def _usable(name: str) -> bool:
    """Whether this Arrow build compresses chunks with codec ``name`` (bz2 is available, yet refuses one-shot)."""
    if not pa.Codec.is_available(name):
        return False
    try:
        pa.Codec(name).compress(b"\0" * 16)
    except (pa.ArrowException, NotImplementedError):
        return False
    return True


_tls = threading.local()


def zstd_decompressor() -> Any:
    """This thread's reusable zstd decompression context (``zstandard``), or ``None``."""
    d = getattr(_tls, "zd", False)
    if d is False:
        try:
            import zstandard
        except ImportError:  # pragma: no cover - zstandard is a dependency
            d = None
        else:
            d = zstandard.ZstdDecompressor()
        _tls.zd = d
    return d


#: Largest scratch buffer a thread keeps between calls (:func:`thread_scratch`).
SCRATCH_KEEP_BYTES = 4 << 20


def thread_scratch(nbytes: int) -> np.ndarray:
    """A ``uint8`` buffer of ``nbytes`` that this thread reuses from call to call.

    For short-lived buffers of about a megabyte filled and dropped in a loop
    (decoded pages): a fresh allocation of that size returned to the system
    on every free makes every page of it fault again on first write (about
    30,000 faults for a scan of 123 MB of crops; measured). Buffers up to
    :data:`SCRATCH_KEEP_BYTES` are kept per thread; larger ones are fresh.
    The caller must be done with the buffer before it asks for the next one.

    Example
    -------
    >>> a = thread_scratch(1000); b = thread_scratch(10)
    >>> a.nbytes, b.nbytes, bool(np.shares_memory(a, b))
    (1000, 10, True)
    """
    if nbytes > SCRATCH_KEEP_BYTES:
        return np.empty(nbytes, dtype=np.uint8)
    buf = getattr(_tls, "scratch", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _tls.scratch = np.empty(max(nbytes, 1 << 20), dtype=np.uint8)
    return buf[:nbytes]


def _zstd_c(level: int | None, checksum: bool = False) -> Any:
    """This thread's reusable zstd compression context for ``level``, or ``None``.

    ``checksum`` adds zstd's content checksum to every frame, which any zstd
    decoder verifies: framed dataset chunks rely on it for partial reads.
    """
    cache = getattr(_tls, "zc", None)
    if cache is None:
        cache = _tls.zc = {}
    key = (3 if level is None else int(level), checksum)
    c = cache.get(key, False)
    if c is False:
        try:
            import zstandard
        except ImportError:  # pragma: no cover - zstandard is a dependency
            c = None
        else:
            c = zstandard.ZstdCompressor(level=key[0], write_content_size=True, write_checksum=checksum)
        cache[key] = c
    return c


@functools.lru_cache(maxsize=1)
def _decode_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (pa.ArrowException, ValueError, OSError)
    try:
        import zstandard
    except ImportError:  # pragma: no cover
        return errors
    return (*errors, zstandard.ZstdError)


def _codec(name: str, level: int | None) -> pa.Codec:
    """This thread's Arrow codec ``name`` at ``level``.

    One per thread, never shared: Arrow's gzip codec compresses and
    decompresses through a zlib stream held in the codec object, so two threads
    using one object corrupt each other's output (chunks compressed on the
    shared pool came out as a gzip header followed by another chunk's raw
    bytes, or failed with "zlib deflate failed").
    """
    cache: dict[tuple[str, int | None], pa.Codec] | None = getattr(_tls, "codecs", None)
    if cache is None:
        cache = _tls.codecs = {}
    codec = cache.get((name, level))
    if codec is None:
        codec = cache[(name, level)] = pa.Codec(name) if level is None else pa.Codec(name, compression_level=level)
    return codec


def _preset(compression: str) -> tuple[str, int | None]:
    """``(codec, default level)`` of a normalised compression name (presets resolved)."""
    return _PRESETS.get(compression, (compression, None))


#: The compression level chunks get unless one is asked for (zstd's default).
DEFAULT_LEVEL = 3


def check_level(compression: str | None, level: int | None) -> int | None:
    """The level to compress chunks of (normalised) ``compression`` at, or ``None`` for the codec's own.

    The default level (:data:`DEFAULT_LEVEL`, which every writer passes unless
    told otherwise) is no request: codecs without levels (``snappy``) and raw
    chunks simply take none. Any other level where it cannot apply is an error
    rather than a silent no-op.

    Raises
    ------
    TypeError
        For a level that is not an integer.
    ValueError
        For a level with ``compression=None`` or with a codec that takes
        none, or outside the codec's range (lz4 and brotli would otherwise
        clamp it silently; zstd, gzip and bz2 would fail on every chunk).

    Example
    -------
    >>> check_level("zstd", 7), check_level("snappy", DEFAULT_LEVEL), check_level(None, DEFAULT_LEVEL)
    (7, None, None)
    """
    if level is None:
        return None
    if not is_integer(level):
        raise TypeError(f"compression_level must be an integer or None, got {type(level).__name__} {level!r}")
    if compression is None:
        if level == DEFAULT_LEVEL:
            return None
        raise ValueError(
            f"compression_level={level} applies to compressed chunks, but compression is None (raw bytes); "
            "set compression= or drop compression_level="
        )
    name = _preset(compression)[0]
    if pa.Codec.supports_compression_level(name):
        lo, hi = pa.Codec.minimum_compression_level(name), pa.Codec.maximum_compression_level(name)
        if not lo <= level <= hi:
            raise ValueError(
                f"compression_level={level} is outside the levels of {name} ({lo} to {hi}); pick a level in that "
                "range or drop compression_level="
            )
        return int(level)
    if level == DEFAULT_LEVEL:
        return None
    raise ValueError(
        f"{name} chunks take no compression level, got compression_level={level}; drop compression_level= "
        "or pick a codec with levels (zstd, lz4, gzip, brotli, bz2)"
    )


def resolve_codec(compression: str | None) -> str | None:
    """The codec a normalised compression stores chunks with (presets resolved)."""
    return None if compression is None else _preset(compression)[0]


def frame_rows_for(
    compression: str | None, chunk_shape: tuple[int, int, int], itemsize: int, frame_bytes: int | None
) -> int | None:
    """Rows (of the flattened Z*Y row space) per zstd frame, or ``None`` for one frame per chunk.

    Chunks are split into frames only for zstd and only when a chunk holds
    more than one frame of about ``frame_bytes`` raw bytes.
    """
    if not frame_bytes or resolve_codec(compression) != "zstd":
        return None
    cz, cy, cx = chunk_shape
    rows = max(1, int(frame_bytes) // max(1, cx * itemsize))
    return rows if rows < cz * cy else None


def encode_framed(
    block: np.ndarray, compression: str | None, level: int | None, frame_rows: int | None
) -> tuple[str | None, Any, list[int] | None]:
    """Encode one chunk as concatenated independent zstd frames of ``frame_rows`` rows.

    Returns ``(stored_compression, bytes_like, frame_lengths)``;
    ``frame_lengths`` is ``None`` when the chunk is stored as a single frame
    or raw (see :func:`encode_payload`). The payload stays one valid zstd
    stream (a decoder concatenates the frames), and every frame carries zstd's
    content checksum, so a reader can fetch, decode and verify only the frames
    a selection touches.
    """
    raw = np.ascontiguousarray(block)
    rows = int(np.prod(raw.shape[:-1])) if raw.ndim > 1 else 1
    if frame_rows is None or rows <= frame_rows or compression is None:
        stored, payload = encode_payload(raw, compression, level)
        return stored, payload, None
    name, preset_level = _preset(compression)
    zc = _zstd_c(level if level is not None else preset_level, checksum=True) if name == "zstd" else None
    if zc is None:
        stored, payload = encode_payload(raw, compression, level)
        return stored, payload, None
    flat = raw.reshape(rows, -1)
    frames = [zc.compress(flat[r : r + frame_rows]) for r in range(0, rows, frame_rows)]
    lengths = [len(f) for f in frames]
    if compression in _PRESETS and sum(lengths) >= raw.nbytes:
        return None, raw, None
    return name, b"".join(frames), lengths


def encode_payload(
    block: np.ndarray, compression: str | None, level: int | None
) -> tuple[str | None, Any]:
    """Encode one C-contiguous chunk; return ``(stored_compression, bytes_like)``.

    ``compression`` must already be normalised. Presets fall back to raw bytes
    when compressing does not shrink the chunk.
    """
    raw = np.ascontiguousarray(block)
    if compression is None:
        return None, raw
    name, preset_level = _preset(compression)
    lvl = level if level is not None else preset_level
    # Every zstd chunk carries zstd's content checksum (4 bytes), which any
    # zstd decoder verifies: a damaged payload is an error, never wrong pixels.
    zc = _zstd_c(lvl, checksum=True) if name == "zstd" else None
    if zc is not None:
        # Same libzstd frames as Arrow's codec, with far less per-call overhead
        # (it matters for many small chunks such as cell crops).
        packed: Any = zc.compress(raw)
        size = len(packed)
        if size < (raw.nbytes * 3) // 4:
            # zstandard keeps the worst-case output allocation behind the
            # bytes object; an exact-size copy gives the rest back, or every
            # held chunk would cost about its raw size.
            packed = bytes(memoryview(packed))
    else:
        packed = _codec(name, lvl).compress(raw, asbytes=False)
        # Arrow allocates the worst-case compressed size and keeps that capacity
        # after compressing; give it back, or every held chunk costs ~its raw size.
        packed.resize(packed.size, shrink_to_fit=True)
        size = packed.size
    if compression in _PRESETS and size >= raw.nbytes:
        return None, raw
    return name, packed


def decode_payload(
    payload: Any,
    compression: str | None,
    dtype: np.dtype[Any],
    count: int,
    *,
    label: str,
    strict: bool = True,
) -> np.ndarray:
    """Decode one chunk payload into a flat array of ``count`` elements of ``dtype``.

    Raw payloads are returned as zero-copy, read-only views of the Arrow buffer.
    A zstd payload may hold several concatenated frames (when their lengths
    are known, :func:`decode_frames` avoids decoding the first one twice).

    Raises
    ------
    PixelPayloadError
        When the payload does not decode to ``count`` elements (``strict``),
        or the codec rejects the bytes.
    """
    nbytes = count * dtype.itemsize
    name = None if compression is None else str(compression).strip().lower()
    if name and name not in _NONE:
        check_alloc(nbytes, f"{label}: a decoded chunk of {count} {dtype} values")
        try:
            buf = _decompress_bounded(payload, name, nbytes, label)
        except MemoryError:
            _raise_if_header_damaged(payload, nbytes, f"{label}: the zstd payload")
            raise
        except PixelPayloadError:
            raise
        except _decode_errors() as exc:
            raise PixelPayloadError(
                f"{label}: cannot decode {name}-compressed payload of "
                f"{len(memoryview(payload))} bytes into {count} {dtype} values ({exc})"
            ) from exc
        if isinstance(buf, _Short):
            raise PixelPayloadError(
                f"{label}: {name}-compressed payload of {len(memoryview(payload))} bytes "
                + (f"declares {buf.declared} bytes" if buf.declared >= 0 else "does not decode")
                + f", expected {nbytes} ({count} {dtype} values)"
            )
        got = len(memoryview(buf))
        if got != nbytes and strict:
            more = "more than " if got > nbytes else ""
            raise PixelPayloadError(
                f"{label}: {name}-compressed payload decodes to {more}{min(got, nbytes)} bytes, "
                f"expected {nbytes} ({count} {dtype} values); pass strict=False to pad/truncate"
            )
        if got % dtype.itemsize or got > nbytes:
            buf = memoryview(buf)[: min(nbytes, got - got % dtype.itemsize)]
        flat = np.frombuffer(buf, dtype=dtype)
    else:
        mv = memoryview(payload)
        if mv.nbytes % dtype.itemsize:
            raise PixelPayloadError(
                f"{label}: payload of {mv.nbytes} bytes is not a whole number of "
                f"{dtype} values"
            )
        flat = np.frombuffer(mv, dtype=dtype)
    if flat.size != count:
        if strict:
            how = f"{name}-compressed payload decodes to" if name and name not in _NONE else "payload holds"
            raise PixelPayloadError(
                f"{label}: {how} {flat.size} values, expected {count} "
                f"({dtype}); pass strict=False to pad/truncate"
            )
        flat = fit_length(flat, count)
    return flat


def _decompress_bounded(payload: Any, name: str, nbytes: int, label: str) -> Any:
    """Decompress ``payload`` into at most ``nbytes + 1`` bytes, whatever its headers claim.

    The result may be shorter or one byte longer than ``nbytes`` (the caller
    compares); nothing larger is ever allocated, so a compression bomb or a
    header that lies cannot exhaust memory. Codecs whose one-shot API cannot
    say how many bytes they really produced are read as streams.
    """
    if name == "zstd":
        zd = zstd_decompressor()
        if zd is not None:
            return _zstd_bounded(zd, payload, nbytes, label)
    if name == "snappy":
        declared = _snappy_length(payload)
        if not 0 <= declared <= nbytes + 1:
            return _Short(declared)
        return _codec(name, None).decompress(payload, decompressed_size=declared, asbytes=False)
    if name == "lz4_raw":
        # A raw LZ4 block does not know its length: it decodes into nbytes but
        # not into nbytes - 1 exactly when it holds nbytes.
        codec = _codec(name, None)
        buf = codec.decompress(payload, decompressed_size=nbytes, asbytes=False)
        if nbytes:
            try:
                codec.decompress(payload, decompressed_size=nbytes - 1, asbytes=False)
            except (pa.ArrowException, OSError):
                return buf
            return _Short(-1)
        return buf
    # Frame formats (lz4 frame, gzip, brotli, bz2): a stream read of at most
    # nbytes + 1 bytes tells a short or long payload from an exact one.
    stream = pa.CompressedInputStream(pa.BufferReader(pa.py_buffer(payload)), name)
    return stream.read(nbytes + 1)


class _Short:
    """Stands for a payload that does not hold the expected bytes (``declared`` = what it holds, -1: unknown)."""

    def __init__(self, declared: int) -> None:
        self.declared = declared


def _snappy_length(payload: Any) -> int:
    """The uncompressed length a snappy block declares (its leading varint), -1 when unreadable."""
    mv = memoryview(payload).cast("B")
    value = shift = 0
    for i in range(min(10, mv.nbytes)):
        b = mv[i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7
    return -1


def _zstd_bounded(zd: Any, payload: Any, nbytes: int, label: str) -> Any:
    """Decode a zstd payload (one or more frames) without ever producing more than ``nbytes + 1`` bytes."""
    import zstandard

    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise PixelPayloadError(f"{label}: the payload is not a zstd frame ({exc})") from exc
    if declared > nbytes:
        raise PixelPayloadError(
            f"{label}: the zstd frame declares {declared} bytes of content in its header, "
            f"expected {nbytes}; the payload is damaged or not this chunk's"
        )
    if declared == nbytes:
        # zstd checks the decoded size against the declared one.
        return zd.decompress(payload)
    # Unknown content size, or a first frame followed by more: stream at most nbytes + 1.
    reader = zd.stream_reader(payload, read_across_frames=True)
    return reader.read(nbytes + 1)


def decode_frames(
    payload: Any, frame_lengths: Sequence[int], dtype: np.dtype[Any], count: int, *, label: str
) -> np.ndarray:
    """Decode consecutive zstd frames of known stored lengths into ``count`` values.

    Each frame is decoded with this thread's reusable context (and its
    checksum verified), then the frames' bytes are joined.

    Raises
    ------
    PixelPayloadError
        When a frame does not decode (damaged bytes, checksum mismatch) or the
        frames do not hold ``count`` values.
    """
    zd = zstd_decompressor()
    if zd is None or len(frame_lengths) == 0:  # pragma: no cover - zstandard is a dependency
        return decode_payload(payload, "zstd", dtype, count, label=label)
    mv = memoryview(payload).cast("B")
    nbytes = count * dtype.itemsize
    parts: list[bytes] = []
    pos = 0
    import zstandard

    got = 0
    try:
        for n in frame_lengths:
            frame = mv[pos : pos + n]
            declared = zstandard.frame_content_size(frame)
            if declared > nbytes - got:
                raise PixelPayloadError(
                    f"{label}: zstd frame {len(parts)} of {len(frame_lengths)} declares {declared} "
                    f"bytes of content in its header, more than the {nbytes - got} bytes left of "
                    "the chunk; the bytes are damaged"
                )
            part = zd.decompress(frame, max_output_size=max(1, nbytes - got))
            parts.append(part)
            got += len(part)
            pos += n
    except MemoryError:
        _raise_if_header_damaged(mv[pos:], nbytes, f"{label}: zstd frame {len(parts)} of {len(frame_lengths)}")
        raise
    except PixelPayloadError:
        raise
    except _decode_errors() as exc:
        raise PixelPayloadError(
            f"{label}: cannot decode zstd frame {len(parts)} of {len(frame_lengths)} "
            f"({frame_lengths[len(parts)]} bytes) ({exc})"
        ) from exc
    buf = parts[0] if len(parts) == 1 else b"".join(parts)
    if len(buf) != nbytes:
        raise PixelPayloadError(f"{label}: zstd frames decode to {len(buf)} bytes, expected {nbytes}")
    return np.frombuffer(buf, dtype=dtype)


def _raise_if_header_damaged(frame: Any, nbytes: int, what: str) -> None:
    """Raise ``PixelPayloadError`` when a zstd frame header declares more than ``nbytes`` of content.

    Called when decoding ran out of memory: a damaged header can declare an
    absurd content size, which ``zstandard`` tries to allocate before it
    decodes anything.
    """
    try:
        import zstandard

        declared = zstandard.frame_content_size(frame)
    except Exception:  # not a readable zstd header: the MemoryError stands
        return
    if declared > nbytes:
        raise PixelPayloadError(
            f"{what} declares {declared} bytes of content in its header, expected at most "
            f"{nbytes}: the bytes are damaged"
        ) from None


def fit_length(flat: np.ndarray, count: int) -> np.ndarray:
    """Truncate or zero-pad a flat array to ``count`` elements (lenient reads)."""
    if flat.size > count:
        return flat[:count]
    out = np.zeros(count, dtype=flat.dtype)
    out[: flat.size] = flat
    return out


def pack_large_binary(payloads: Sequence[Any]) -> pa.LargeBinaryArray:
    """One ``large_binary`` array holding ``payloads`` (buffer-like objects), one copy."""
    views = [memoryview(p).cast("B") for p in payloads]
    offsets = np.zeros(len(views) + 1, dtype=np.int64)
    np.cumsum([v.nbytes for v in views], out=offsets[1:])
    data = bytearray(int(offsets[-1]))
    out = memoryview(data)
    for v, lo, hi in zip(views, offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        out[lo:hi] = v
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(views), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def binary_offsets(values: pa.Array) -> tuple[np.ndarray, pa.Buffer]:
    """``(int64 offsets, data buffer)`` of a binary column of any Arrow flavour.

    ``large_binary`` and ``binary`` are read in place; other flavours (e.g.
    ``binary_view`` from some engines) are converted to ``large_binary`` first.

    Example
    -------
    >>> offsets, data = binary_offsets(pa.array([b"ab", b"", b"cde"]))
    >>> offsets.tolist(), data.to_pybytes()[:5]
    ([0, 2, 2, 5], b'abcde')
    """
    if pa.types.is_large_binary(values.type) or pa.types.is_binary(values.type):
        width = np.int64 if pa.types.is_large_binary(values.type) else np.int32
        offs = np.frombuffer(values.buffers()[1], dtype=width)[values.offset : values.offset + len(values) + 1]
        data = values.buffers()[2]
        return offs.astype(np.int64, copy=False), data if data is not None else pa.py_buffer(b"")
    return binary_offsets(values.cast(pa.large_binary()))
