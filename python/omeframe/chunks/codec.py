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

from ..errors import PixelPayloadError

__all__ = ["normalize_compression", "encode_payload", "decode_payload", "pack_large_binary", "CODECS"]

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
    if value not in CODECS or not pa.Codec.is_available(value):
        raise ValueError(
            f"unknown chunk compression {compression!r}; expected None or one of "
            f"{', '.join(c for c in CODECS if pa.Codec.is_available(c))} "
            f"or a preset ({', '.join(_PRESETS)})"
        )
    return value


_tls = threading.local()


def _zstd_d() -> Any:
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


def _zstd_c(level: int | None) -> Any:
    """This thread's reusable zstd compression context for ``level``, or ``None``."""
    cache = getattr(_tls, "zc", None)
    if cache is None:
        cache = _tls.zc = {}
    key = 3 if level is None else int(level)
    c = cache.get(key, False)
    if c is False:
        try:
            import zstandard
        except ImportError:  # pragma: no cover - zstandard is a dependency
            c = None
        else:
            c = zstandard.ZstdCompressor(level=key, write_content_size=True)
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


@functools.lru_cache(maxsize=64)
def _codec(name: str, level: int | None) -> pa.Codec:
    if level is None:
        return pa.Codec(name)
    return pa.Codec(name, compression_level=level)


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
    name, preset_level = _PRESETS.get(compression, (compression, None))
    lvl = level if level is not None else preset_level
    zc = _zstd_c(lvl) if name == "zstd" else None
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

    Raises
    ------
    PixelPayloadError
        When the payload does not decode to ``count`` elements (``strict``),
        or the codec rejects the bytes.
    """
    nbytes = count * dtype.itemsize
    name = None if compression is None else str(compression).strip().lower()
    if name and name not in _NONE:
        zd = _zstd_d() if name == "zstd" else None
        try:
            if zd is not None:
                buf = zd.decompress(payload, max_output_size=nbytes)
            else:
                buf = _codec(name, None).decompress(payload, decompressed_size=nbytes, asbytes=False)
        except _decode_errors() as exc:
            raise PixelPayloadError(
                f"{label}: cannot decode {name}-compressed payload of "
                f"{len(memoryview(payload))} bytes into {count} {dtype} values ({exc})"
            ) from exc
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
    for v, lo, hi in zip(views, offsets[:-1].tolist(), offsets[1:].tolist()):
        out[lo:hi] = v
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(views), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
