"""CRC-32 (the zlib / IEEE 802.3 polynomial) fast, and combined without the data.

Two tools for checking many small checksummed pieces at the speed of one big
checksum:

* :func:`crc32` is ``zlib.crc32`` with the same values, computed by zlib-ng
  (PCLMUL folding: about 29 GB/s on one core here, against zlib's 4 GB/s).
* :func:`crc32_fold_equal` folds the CRCs of many pieces of one length (rows
  of crops of one shape) into the CRC of their concatenation: a pairwise tree
  whose every level multiplies by the same powers of ``x``, about four table
  lookups per piece in all.
* :func:`crc32_combine_groups` folds the CRCs of consecutive pieces into the
  CRC of each group's concatenation, for whole arrays of pieces at once in
  numpy (zlib's ``crc32_combine``, vectorised). A reader that stores one CRC
  per row can so check a run of rows with one :func:`crc32` call over their
  contiguous bytes: the run's CRC equals the fold of its rows' stored CRCs
  exactly when no row changed, and any damage confined to one row changes it.

The algebra (as in zlib): in zlib's reflected bit order,
``crc32(A + B) == crc32(A) * x**(8 * len(B)) ^ crc32(B)`` with the product in
GF(2)[x] modulo the CRC polynomial. Multiplying by a fixed power of ``x`` is
linear over 32 bits, so it is four 256-entry table lookups per value; the power
``x**(8 * n)`` is applied one hexadecimal digit of ``n`` at a time, with a table
set per digit position built once per process.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from typing import Any

import numpy as np

__all__ = [
    "crc32", "crc32_combine", "crc32_combine_groups", "crc32_fold_equal", "crc32_function", "run_each", "set_runner",
]

Runner = Callable[[Callable[[Any], object], Sequence[Any]], None]
_RUNNER: Runner | None = None


def set_runner(runner: Runner | None) -> None:
    """Let :func:`run_each` spread its items over ``runner`` (``None``: run them in the calling thread).

    The storage layer sits below the engine, so the engine's thread pool
    (:func:`omeframe.engine.threads.run_each`) registers itself here when it
    is imported.
    """
    global _RUNNER
    _RUNNER = runner


def run_each(fn: Callable[[Any], object], items: Sequence[Any]) -> None:
    """Call ``fn`` on every item: on the engine's threads when it registered them, else in turn.

    For checks over many large buffers (a CRC releases the GIL while it runs).
    The first exception is re-raised.

    Example
    -------
    >>> sums = []
    >>> run_each(lambda b: sums.append(crc32(b)), [b"a" * 10, b"b" * 10])
    >>> sorted(sums) == sorted([crc32(b"a" * 10), crc32(b"b" * 10)])
    True
    """
    if _RUNNER is None or len(items) < 2:
        for item in items:
            fn(item)
    else:
        _RUNNER(fn, items)

#: The reflected CRC-32 polynomial of zlib.
POLY = 0xEDB88320
_ONE = 1 << 31  # x**0 in the reflected representation


@cache
def crc32_function() -> Callable[..., int]:
    """The function behind :func:`crc32`, for loops over many buffers (saves a call per buffer).

    ``f(data, value=0)`` returns ``zlib.crc32(data, value)``: zlib-ng's (a
    dependency of omeframe) when it can be imported, else ``zlib.crc32``
    itself. Both release the GIL while they run over a large buffer.

    Example
    -------
    >>> import zlib
    >>> crc32_function()(b"abc") == zlib.crc32(b"abc")
    True
    """
    try:
        from zlib_ng.zlib_ng import crc32 as ng_crc32
    except ImportError:  # installed without its dependencies
        return zlib.crc32
    if ng_crc32(b"omeframe", 7) != zlib.crc32(b"omeframe", 7):  # pragma: no cover - a broken build
        return zlib.crc32
    return ng_crc32


def crc32(data: Any, value: int = 0) -> int:
    """CRC-32 of ``data`` (any contiguous buffer) continuing from ``value``; equals ``zlib.crc32``.

    Example
    -------
    >>> import zlib
    >>> crc32(b"pixels") == zlib.crc32(b"pixels")
    True
    """
    return int(crc32_function()(data, value)) & 0xFFFFFFFF


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc1 = crc32(A)``, ``crc2 = crc32(B)`` and ``length2 = len(B)``.

    zlib-ng's ``crc32_combine`` when it can be imported (a fraction of a
    microsecond), else the same product in Python.

    Example
    -------
    >>> import zlib
    >>> crc32_combine(zlib.crc32(b"pix"), zlib.crc32(b"els"), 3) == zlib.crc32(b"pixels")
    True
    """
    if length2 < 0:
        raise ValueError(f"length2 must be >= 0, got {length2}")
    return int(_combine_function()(int(crc1) & 0xFFFFFFFF, int(crc2) & 0xFFFFFFFF, int(length2))) & 0xFFFFFFFF


@cache
def _combine_function() -> Callable[[int, int, int], int]:
    try:
        from zlib_ng.zlib_ng import crc32_combine as ng_combine
    except ImportError:  # installed without its dependencies
        return _py_combine
    if ng_combine(0x1234, 0x5678, 9) != _py_combine(0x1234, 0x5678, 9):  # pragma: no cover - a broken build
        return _py_combine
    return ng_combine


def _py_combine(crc1: int, crc2: int, length2: int) -> int:
    """``crc(A) * x**(8 len B) ^ crc(B)``: zlib's ``crc32_combine`` in Python."""
    return _mulmod(_x_pow(8 * length2), crc1) ^ crc2


def _mulmod(a: int, b: int) -> int:
    """``a * b`` modulo the CRC polynomial, reflected representation (zlib's ``multmodp``)."""
    m, p = _ONE, 0
    while m:
        if a & m:
            p ^= b
        b = (b >> 1) ^ POLY if b & 1 else b >> 1
        m >>= 1
    return p


@cache
def _x_pow_2k(k: int) -> int:
    """``x ** (2 ** k)`` modulo the polynomial."""
    if k == 0:
        return _ONE >> 1  # x**1
    half = _x_pow_2k(k - 1)
    return _mulmod(half, half)


def _x_pow(e: int) -> int:
    """``x ** e`` modulo the polynomial, by squaring."""
    p, k = _ONE, 0
    while e:
        if e & 1:
            p = _mulmod(_x_pow_2k(k), p)
        e >>= 1
        k += 1
    return p


@cache
def _digit_tables(position: int) -> np.ndarray:
    """Flat ``uint32`` tables ``T[d, i, b] = (b << 8*i) * x**(8 * d * 16**position)``, d < 16.

    Multiplying a CRC ``v`` by ``x**(8 * d * 16**position)`` is
    ``T[d,0,v&255] ^ T[d,1,(v>>8)&255] ^ T[d,2,(v>>16)&255] ^ T[d,3,v>>24]``.
    """
    consts = np.array([_x_pow(8 * d * 16**position) for d in range(16)], dtype=np.uint64)
    a = (np.arange(256, dtype=np.uint64)[None, :] << (8 * np.arange(4, dtype=np.uint64))[:, None])[None]
    b = np.broadcast_to(consts[:, None, None], (16, 4, 256)).copy()
    p = np.zeros((16, 4, 256), dtype=np.uint64)
    m = np.uint64(_ONE)
    for _ in range(32):  # 32 vectorised steps of zlib's multmodp over all 16 x 1024 entries
        p ^= np.where(a & m, b, np.uint64(0))
        b = (b >> np.uint64(1)) ^ np.where(b & np.uint64(1), np.uint64(POLY), np.uint64(0))
        m >>= np.uint64(1)
    return p.astype(np.uint32).reshape(-1)


def _times_x8n(v: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``v[i] * x**(8 * n[i])`` for arrays of CRCs ``v`` (uint32) and byte counts ``n`` (int64 >= 0)."""
    v = np.ascontiguousarray(v, dtype="<u4")
    top = int(n.max()) if n.size else 0
    position = 0
    while top >> (4 * position):
        digit = (n >> (4 * position)) & 15
        if digit.any():
            table = _digit_tables(position)
            base = digit * 1024
            octets = v.view(np.uint8).reshape(-1, 4)  # little-endian: octet i is bits 8i..8i+7
            v = table[base + octets[:, 0]]
            for i in (1, 2, 3):
                v ^= table[base + (256 * i) + octets[:, i]]
        position += 1
    return v


def crc32_combine_groups(crcs: np.ndarray, lengths: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """CRC-32 of each group of consecutive pieces, from the pieces' CRCs and byte lengths.

    Parameters
    ----------
    crcs, lengths : numpy.ndarray
        ``crcs[i]`` is the CRC-32 of piece ``i``, ``lengths[i]`` its length in bytes.
    firsts : numpy.ndarray
        Index of the first piece of each group, strictly increasing, starting at 0;
        group ``g`` is pieces ``firsts[g]`` up to (excluding) ``firsts[g + 1]``.

    Returns
    -------
    numpy.ndarray
        ``uint32``: for each group, ``zlib.crc32`` of its pieces' bytes concatenated
        (0 for a group of empty pieces whose CRCs are 0).

    Example
    -------
    >>> import zlib, numpy as np
    >>> parts = [b"ab", b"", b"cde", b"f"]
    >>> crcs = np.array([zlib.crc32(p) for p in parts], dtype=np.uint32)
    >>> got = crc32_combine_groups(crcs, np.array([2, 0, 3, 1]), np.array([0, 2]))
    >>> [int(c) for c in got] == [zlib.crc32(b"ab"), zlib.crc32(b"cdef")]
    True
    """
    crcs = np.asarray(crcs, dtype=np.uint32)
    lengths = np.asarray(lengths, dtype=np.int64)
    firsts = np.asarray(firsts, dtype=np.intp)
    if crcs.shape != lengths.shape or crcs.ndim != 1:
        raise ValueError(
            f"crcs and lengths must be 1-d arrays of one length, got shapes {crcs.shape} and {lengths.shape}"
        )
    if crcs.size == 0:
        return np.zeros(0, dtype=np.uint32)
    if firsts.size == 0 or firsts[0] != 0 or np.any(np.diff(firsts) <= 0) or firsts[-1] >= crcs.size:
        raise ValueError("firsts must be strictly increasing piece indices starting at 0, each < len(crcs)")
    # Bytes after each piece up to the end of its group: the power of x its CRC is shifted by.
    ends = np.cumsum(lengths)
    group_end = np.repeat(ends[np.append(firsts[1:], crcs.size) - 1], np.diff(np.append(firsts, crcs.size)))
    return np.bitwise_xor.reduceat(_times_x8n(crcs, group_end - ends), firsts).astype(np.uint32)


@lru_cache(maxsize=256)
def _const_table(nbytes: int) -> np.ndarray:
    """Flat ``uint32`` table ``T[256 * i + b] = (b << 8*i) * x**(8 * nbytes)`` (see :func:`_digit_tables`)."""
    const = _x_pow(8 * nbytes)
    basis = np.array([_mulmod(1 << p, const) for p in range(32)], dtype=np.uint32).reshape(4, 8)
    bits = ((np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1).astype(bool)  # (256, 8)
    table = np.bitwise_xor.reduce(np.where(bits[None], basis[:, None, :], np.uint32(0)), axis=2)
    return np.ascontiguousarray(table, dtype=np.uint32).reshape(-1)


@lru_cache(maxsize=64)
def _radix_tables(nbytes: int) -> np.ndarray:
    """Tables of :data:`_RADIX` multipliers, ``x**(8 * nbytes * (_RADIX - 1 - j))`` for column ``j``, flat."""
    return np.concatenate([_const_table(nbytes * (_RADIX - 1 - j)) for j in range(_RADIX)])


#: Pieces folded per tree node by :func:`crc32_fold_equal` (fewer levels, fewer numpy calls).
_RADIX = 16
_RADIX_BASE = (np.arange(_RADIX)[:, None] * 1024 + np.arange(4)[None, :] * 256).astype(np.intp)


def crc32_fold_equal(crcs: np.ndarray, length: int) -> int:
    """CRC-32 of the concatenation of pieces of ``length`` bytes each, from their CRCs alone.

    Same value as ``crc32_combine_groups(crcs, full(len(crcs), length), [0])[0]``
    for a fraction of the work: the pieces are folded in a tree of 16 pieces per node,
    where piece ``j`` of every node of one level is multiplied by the same
    power of ``x`` (pieces of zero length and CRC 0 pad a level on the left),
    so the fold costs about four table lookups per piece in a few numpy calls.

    Example
    -------
    >>> import zlib, numpy as np
    >>> parts = [b"abc", b"def", b"ghi"]
    >>> crcs = np.array([zlib.crc32(p) for p in parts], dtype=np.uint32)
    >>> crc32_fold_equal(crcs, 3) == zlib.crc32(b"abcdefghi")
    True
    """
    v = np.asarray(crcs, dtype=np.uint32).reshape(-1)
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if v.size == 0:
        return 0
    size = int(length)
    while v.size > 1:
        pad = -v.size % _RADIX  # zero-length pieces of CRC 0 on the left: 0 * x**k ^ b == b
        if pad:
            v = np.concatenate([np.zeros(pad, dtype=np.uint32), v])
        octets = np.ascontiguousarray(v, dtype="<u4").view(np.uint8).reshape(-1, _RADIX, 4)
        products = _radix_tables(size)[_RADIX_BASE + octets]
        v = np.bitwise_xor.reduce(products.reshape(len(octets), -1), axis=1)
        size *= _RADIX
    return int(v[0])
