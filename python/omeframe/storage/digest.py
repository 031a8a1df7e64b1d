"""A 64-bit digest of each row's values, computed column by column in numpy.

Vortex files store no checksums. omeframe's Vortex writer stores one
:func:`row_digests` value per row in the file's hidden last column, over every
column of a table without OME-Arrow columns (shape, relationship and feature
tables) and over the columns beside the records of a record table (the
features of crops, next to the rows' pixel CRCs); its readers recompute it over
the rows they return: a value that changed on disk then fails its row's digest
instead of reading back silently.

The digest is a function of the row's *values* under their Arrow types, not of
how Arrow lays them out: slices, chunking, offsets that do not start at zero,
the bytes under null slots, dictionary encoding (decoded), view types (hashed
as their plain types) and extension types (hashed as their storage) give the
same digest. A NaN hashes as one canonical NaN.

How it is computed, all in vectorised numpy over whole columns (no Python
work per row):

* a fixed-width value (integers, floats, temporal types, booleans) is widened
  to 64 bits and scrambled by a bijection (a multiplication by an odd
  constant, then an xorshift), so that changes of several values do not
  cancel out in the sums below;
* a string or binary value is the polynomial ``sum(b[j] * P**j)`` of its bytes
  over positions ``j`` counted from the value's start, taken from prefix sums
  in one pass over the column and brought back to position 0 with the inverse
  of the odd ``P``, plus a hash of its length;
* a list (lists of lists of points included: the chain is flattened) is the
  same polynomial over the hashes of its innermost items, plus one such
  polynomial per inner level over the lengths (and validity) of that level's
  lists, so that items moved between inner lists change it;
* a struct adds its children's hashes, each times an odd constant of its own;
* a null is one constant;
* the row's digest adds its columns' hashes, each times the column's odd
  constant, and mixes the sum with SplitMix64's finaliser.

Everything is arithmetic modulo 2**64. A change of any one value changes its
item's hash by a non-zero amount, times an odd power or constant, so the
digest of its row always changes: every flipped bit in one stored value is
caught. Changes of several values at once pass with a chance of about 2**-64.
It is an integrity check against damage, not a cryptographic hash.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["row_digests", "value_hashes"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
#: The hash of a null (any value, any type).
_NULL = np.uint64(0x6A09E667F3BCC909)
#: The polynomial's base (odd, so it has an inverse modulo 2**64).
_P = 0x100000001B3
_P_INV = pow(_P, -1, 1 << 64)
_LEN = np.uint64(0x9E3779B97F4A7C15)
_NAN64 = np.uint64(0x7FF8000000000000)
_NAN32 = np.uint32(0x7FC00000)
_NAN16 = np.uint16(0x7E00)
_NANS: dict[int, Any] = {8: _NAN64, 4: _NAN32, 2: _NAN16}

_powers_lock = threading.Lock()
_powers: tuple[np.ndarray, np.ndarray, np.ndarray] = (
    np.ones(1, np.uint64), np.ones(1, np.uint64), np.zeros(1, np.uint64)
)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of ``x`` (``uint64``), in place: a bijection that spreads every bit."""
    _xorshift(x, 30)
    x *= _M1
    _xorshift(x, 27)
    x *= _M2
    return _xorshift(x, 31)


def _scramble(x: np.ndarray) -> np.ndarray:
    """A cheaper bijection of ``x`` (``uint64``), in place: a multiplication by an odd constant, then an xorshift.

    Applied to every item before it enters a sum, so that changes of several
    items (a whole block shifted by one amount, say) do not cancel out in the
    sum's arithmetic; three passes over the items against SplitMix64's eight.
    """
    x *= _M1
    return _xorshift(x, 32)


#: Shifts of longer arrays go block by block: a temporary as long as the array costs more in page
#: faults than the shift (11.6 against 4.5 ms for the scramble of 2.8 million values).
_SHIFT_BLOCK = 1 << 15


def _xorshift(x: np.ndarray, bits: int) -> np.ndarray:
    """``x ^= x >> bits`` in place (``uint64``), through one small temporary."""
    shift = np.uint64(bits)
    if len(x) <= 2 * _SHIFT_BLOCK:
        x ^= x >> shift
        return x
    for i in range(0, len(x), _SHIFT_BLOCK):
        part = x[i : i + _SHIFT_BLOCK]
        part ^= part >> shift
    return x


@functools.cache
def _odd(k: int) -> np.uint64:
    """The odd constant of position ``k`` (a column, a struct's field)."""
    return np.uint64(int(_mix(np.array([k + 1], dtype=np.uint64))[0]) | 1)


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(P**j, P**-j, sum(P**i for i < j))`` for ``j`` in ``[0, n)`` at least (cached, grown by doubling)."""
    have = _powers
    if len(have[0]) >= n:
        return have
    with _powers_lock:
        have = _powers
        if len(have[0]) >= n:
            return have
        size = max(n, 2 * len(have[0]), 1024)
        up = np.full(size, _P, dtype=np.uint64)
        up[0] = 1
        down = np.full(size, _P_INV, dtype=np.uint64)
        down[0] = 1
        np.cumprod(up, dtype=np.uint64, out=up)
        np.cumprod(down, dtype=np.uint64, out=down)
        geometric = np.zeros(size, dtype=np.uint64)
        np.cumsum(up[:-1], dtype=np.uint64, out=geometric[1:])
        made = (up, down, geometric)
        globals()["_powers"] = made
        return made


#: Prefix sums of up to this many items reuse one buffer per thread (64 MiB at most); longer ones
#: get their own. A fresh buffer of a few MiB costs more in page faults than the sums themselves.
_SCRATCH_ITEMS = 1 << 23
_scratch = threading.local()


def _prefix_buffer(n: int) -> np.ndarray:
    """A ``uint64`` buffer of ``n`` items, this thread's reused one when it is small enough."""
    if n > _SCRATCH_ITEMS:
        return np.empty(n, dtype=np.uint64)
    buf = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < n:
        buf = np.empty(max(n, 1 << 16, 2 * (0 if buf is None else len(buf))), dtype=np.uint64)
        _scratch.buf = buf
    return buf[:n]


def _polynomials(items: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``sum(items[j] * P**(j - bounds[i]))`` over each segment ``[bounds[i], bounds[i + 1])``, plus its length's hash.

    ``items``: unsigned integers (the bytes of strings, hashes); ``bounds``: positions in them.
    """
    n_items = len(items)
    bounds = bounds.astype(np.intp, copy=False)  # gathers with other index types convert them each time
    counts = np.diff(bounds)
    lengths = counts.astype(np.uint64)
    lengths *= _LEN
    poly = _scramble(lengths)
    # (a probe of the last and middle items first: the full comparison is a pass over the items)
    if n_items and items[-1] == items[0] == items[n_items // 2] and bool((items == items[0]).all()):
        # one value throughout (the lengths of a polygon's points, say): its polynomial over a segment
        # of m items is the value times sum(P**j for j < m), the same sum with no pass over the items
        poly += np.uint64(items[0]) * _power_tables(int(counts.max()) + 1)[2][counts]
    elif n_items:
        up, down, _ = _power_tables(n_items + 1)
        prefix = _prefix_buffer(n_items + 1)
        prefix[0] = 0
        if items.dtype == np.uint64:
            np.multiply(items, up[:n_items], out=prefix[1:])
        else:  # widened to uint64 first: a multiplication of mixed types costs twice as much
            prefix[1:] = items
            np.multiply(prefix[1:], up[:n_items], out=prefix[1:])
        np.cumsum(prefix, out=prefix)
        starts = bounds[:-1]
        poly += (prefix[bounds[1:]] - prefix[starts]) * down[starts]
    return poly


def _is_bytes(t: pa.DataType) -> bool:
    return (
        pa.types.is_binary(t) or pa.types.is_string(t) or pa.types.is_large_binary(t)
        or pa.types.is_large_string(t) or pa.types.is_binary_view(t) or pa.types.is_string_view(t)
        or pa.types.is_fixed_size_binary(t) or pa.types.is_decimal(t)
    )


def _is_list(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        or pa.types.is_map(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)
    )


def _nested_lists(arr: pa.Array, period: int) -> _Hashes:
    """The hashes of a list array, nested lists flattened: one polynomial per level over each slot's span.

    A chain of lists (``list<list<list<double>>>``, a polygon) is hashed as the
    polynomial of each slot's innermost items, from the slot's first one, plus
    one polynomial per inner level of its lists' lengths (and validity), so
    that bytes moved between inner lists change the hash: one pass per level
    over the whole column instead of a hash per inner list. A single list
    level whose lists repeat every ``period`` slots (the channels of every
    crop) is hashed once for the first ``period`` slots.
    """
    n = len(arr)
    cur, bounds = _list_items(arr)
    out = np.zeros(n, dtype=np.uint64)
    level = 1
    while _is_list(cur.type) and not isinstance(cur.type, pa.BaseExtensionType):
        values, offsets = _list_items(cur)
        # the lengths and validity of this level's lists, per slot of the top array
        shape = np.diff(offsets).astype(np.uint64)
        shape <<= np.uint64(1)
        valid = _valid(cur)
        shape |= np.uint64(1) if valid is None else valid.astype(np.uint64)
        out += _polynomials(_scramble(shape), bounds) * _odd(100 + level)
        bounds = offsets[bounds]
        cur, level = values, level + 1
    # one list level whose lengths repeat every `period` slots: the items of those slots may repeat too
    repeats = level == 1 and _periodic(np.diff(bounds), period)
    block = int(bounds[period] - bounds[0]) if repeats else 0
    items = _hashes(cur, block)
    if repeats and (
        block == 0 or (isinstance(items, _Tiled) and len(items.block) == block)
        or _periodic(items := _full(items), block)
    ):  # the same lists in every period of slots: hashed once
        first = items.block if isinstance(items, _Tiled) else items[:block]
        return _Tiled(_scramble(_polynomials(first, bounds[: period + 1])), n)
    out += _polynomials(_full(items), bounds)
    return _scramble(out)


def _width(t: pa.DataType) -> int:
    """The bit width of a fixed-width type, 0 for any other."""
    try:
        return int(t.bit_width)
    except ValueError:
        return 0


def _valid(arr: pa.Array) -> np.ndarray | None:
    """Validity of ``arr``'s slots, or ``None`` when none is null."""
    if arr.null_count == 0:
        return None
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _fixed(arr: pa.Array, width: int, period: int) -> _Hashes:
    """The values of a fixed-width array of ``width`` bytes (1, 2, 4 or 8), widened to ``uint64`` and scrambled.

    Values that repeat every ``period`` slots are scrambled once (see :func:`_periodic`).
    """
    data = arr.buffers()[1]
    n = len(arr)
    if data is None or n == 0:
        return np.zeros(n, dtype=np.uint64)
    raw = np.frombuffer(data, dtype=f"<u{width}", count=arr.offset + n)[arr.offset :]
    if pa.types.is_floating(arr.type):  # every NaN as the one NaN of its width
        nan = _NANS[width]
        floats = raw.view(f"<f{width}") if width > 2 else None
        # min() is NaN when any value is: one reduction, no mask, for the usual column without NaN
        if floats is None or bool(np.isnan(floats.min())):
            is_nan = np.isnan(floats) if floats is not None else ((raw & 0x7C00) == 0x7C00) & ((raw & 0x3FF) != 0)
            if is_nan.any():
                raw = np.where(is_nan, nan, raw)
    if _periodic(raw, period):  # the same values in every row (a header field of crops): scrambled once
        return _Tiled(_scramble(raw[:period].astype(np.uint64)), n)
    if width == 8:  # scrambled out of place: no copy of the values first
        return _xorshift(np.multiply(raw, _M1), 32)
    return _scramble(raw.astype(np.uint64))


class _Tiled:
    """The hashes of ``n`` slots that repeat their first ``len(block)`` values, kept as that one block."""

    __slots__ = ("block", "n")

    def __init__(self, block: np.ndarray, n: int) -> None:
        self.block, self.n = block, n

    def full(self) -> np.ndarray:
        return np.tile(self.block, self.n // len(self.block))


#: Hashes of slots: all of them, or one block that repeats.
_Hashes = np.ndarray | _Tiled


def _full(h: _Hashes) -> np.ndarray:
    return h.full() if isinstance(h, _Tiled) else h


def _periodic(values: np.ndarray, period: int) -> bool:
    """Whether ``values`` repeat their first ``period`` items throughout, at least twice (a probe of the last
    period first, then the full comparison): a header field of a table of crops, the same in every row."""
    n = len(values)
    if period < 1 or n < 2 * period or n % period:
        return False
    if not np.array_equal(values[:period], values[n - period :]):
        return False
    # periodic exactly when equal to itself shifted by one period (a contiguous comparison, no broadcast)
    return bool(np.array_equal(values[period:], values[:-period]))


def _bytes_hashes(arr: pa.Array, period: int) -> _Hashes:
    """The hashes of a binary-like array's values: the polynomial of their bytes, and of their length.

    Values that repeat every ``period`` slots are hashed once (see :func:`_periodic`).
    """
    raw, offsets = _bytes_items(arr)
    n = len(offsets) - 1
    if _periodic(np.diff(offsets), period):
        block = int(offsets[period])
        if block == 0 or _periodic(raw, block):
            return _Tiled(_scramble(_polynomials(raw[:block], offsets[: period + 1])), n)
    return _scramble(_polynomials(raw, offsets))


def _bytes_items(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(bytes as uint8, offsets from 0)`` of a binary-like array."""
    t = arr.type
    if pa.types.is_fixed_size_binary(t) or pa.types.is_decimal(t):
        width = t.byte_width
        data = arr.buffers()[1]
        n = len(arr)
        raw = (
            np.frombuffer(data, dtype=np.uint8, count=(arr.offset + n) * width)[arr.offset * width :]
            if data is not None else np.zeros(0, np.uint8)
        )
        return raw, np.arange(n + 1, dtype=np.int64) * width
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        arr = arr.cast(pa.large_string() if pa.types.is_string_view(t) else pa.large_binary())
    wide = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    offsets_buf, data = arr.buffers()[1], arr.buffers()[2]
    n = len(arr)
    if offsets_buf is None:  # an empty array may come without buffers
        return np.zeros(0, np.uint8), np.zeros(n + 1, np.int64)
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if wide else np.int32, count=arr.offset + n + 1)
    offsets = offsets[arr.offset :]
    lo, hi = int(offsets[0]), int(offsets[-1])
    raw = np.frombuffer(data, dtype=np.uint8, count=hi)[lo:] if data is not None and hi > lo else np.zeros(0, np.uint8)
    return raw, (offsets - np.asarray(lo, dtype=offsets.dtype)) if lo else offsets


def _list_items(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``(the values of the slots, offsets from 0)`` of a list-like array."""
    t = arr.type
    n = len(arr)
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        values = arr.values.slice(arr.offset * size, n * size)
        return values, np.arange(n + 1, dtype=np.int64) * size
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        arr = arr.cast(pa.large_list(t.value_field))
    offsets = arr.offsets.to_numpy(zero_copy_only=False)  # int32 or int64, as stored
    lo, hi = int(offsets[0]), int(offsets[-1])
    return arr.values.slice(lo, hi - lo), (offsets - lo if lo else offsets)


def value_hashes(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each value of ``arr`` (``uint64``, one per slot), as described in the module.

    Raises
    ------
    TypeError
        For a type with no digest (unions, run-end encoded arrays).

    Example
    -------
    >>> import pyarrow as pa
    >>> a = value_hashes(pa.array(["ab", "cd", None]))
    >>> b = value_hashes(pa.array(["x", "ab", "cd", None], pa.large_string()).slice(1))
    >>> bool((a == b).all())
    True
    """
    return _full(_hashes(arr, 1))


def _hashes(arr: pa.Array | pa.ChunkedArray, period: int) -> _Hashes:
    """:func:`value_hashes`, with values that may repeat every ``period`` slots (0: no such hint) hashed once."""
    if isinstance(arr, pa.ChunkedArray):
        parts = [_full(_hashes(c, period)) for c in arr.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    t = arr.type
    n = len(arr)
    if isinstance(t, pa.BaseExtensionType):
        return _hashes(arr.storage, period)
    if pa.types.is_dictionary(t):
        return _hashes(arr.dictionary_decode(), period)
    if pa.types.is_null(t) or (n and arr.null_count == n):
        return _Tiled(np.full(1, _NULL, dtype=np.uint64), n) if n else np.zeros(0, dtype=np.uint64)
    out: _Hashes
    if pa.types.is_boolean(t):
        out = _scramble(np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=np.uint64) + _LEN)
    elif pa.types.is_struct(t):
        out = _struct_hashes(arr, period)
    elif _is_list(t):
        out = _nested_lists(arr, period)
    elif _is_bytes(t):
        out = _bytes_hashes(arr, period)
    elif _width(t) in (8, 16, 32, 64):
        out = _fixed(arr, _width(t) // 8, period)
    else:
        raise TypeError(f"no row digest for Arrow type {t}")
    valid = _valid(arr)
    if valid is not None:
        out = _full(out)
        out[~valid] = _NULL
    return out


def _struct_hashes(arr: pa.StructArray, period: int) -> _Hashes:
    """The weighted sum of a struct's children's hashes, scrambled (kept as one block while they all repeat)."""
    t = arr.type
    n = len(arr)
    parts: list[tuple[_Hashes, np.uint64]] = []
    strings: list[tuple[pa.Array, _Hashes]] = []
    for i in range(t.num_fields):
        child = arr.field(i)  # pyarrow applies the struct's offset and length here
        if len(child) != n:  # an older pyarrow returned the whole child
            child = child.slice(arr.offset, n)
        same = next((h for c, h in strings if c.type == child.type and c.equals(child)), None)
        hashed = same if same is not None else _hashes(child, period)
        if same is None and _is_bytes(child.type):  # a record's name is often its id: hashed once
            strings.append((child, hashed))
        parts.append((hashed, _odd(i)))
    longest = max((len(h.block) for h, _ in parts if isinstance(h, _Tiled)), default=0)
    if longest and all(isinstance(h, _Tiled) and longest % len(h.block) == 0 for h, _ in parts):
        block = np.zeros(longest, dtype=np.uint64)
        for h, weight in parts:  # a block of one value (a null field) repeats within the longer ones
            assert isinstance(h, _Tiled)
            block.reshape(-1, len(h.block))[:] += h.block * weight
        return _Tiled(_scramble(block), n)
    out = np.zeros(n, dtype=np.uint64)
    for h, weight in parts:
        if isinstance(h, _Tiled):  # one block, tiled into the sum without a copy per child
            out.reshape(-1, len(h.block))[:] += h.block * weight
        else:
            out += h * weight
    return _scramble(out)


def row_digests(columns: Sequence[pa.Array | pa.ChunkedArray]) -> np.ndarray:
    """The digest of each row of ``columns`` (equal lengths, in the table's column order), ``uint64``.

    Example
    -------
    >>> import pyarrow as pa
    >>> t = pa.table({"id": [1, 2], "name": ["a", "b"]})
    >>> d = row_digests(t.columns)
    >>> bool((row_digests(t.slice(1).columns) == d[1:]).all())
    True
    >>> bool((row_digests(pa.table({"id": [1, 3], "name": ["a", "b"]}).columns) == d).all())
    False
    """
    if not columns:
        raise ValueError("a row digest needs at least one column")
    out = np.zeros(len(columns[0]), dtype=np.uint64)
    for k, col in enumerate(columns):
        out += value_hashes(col) * _odd(k)
    return _mix(out)
