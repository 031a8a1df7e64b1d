"""Decoded splits of local Vortex record tables, kept for takes that walk the table.

Vortex reads a table in splits (blocks of 8,192 rows), and converting a split
of small images whose pixel bytes it compressed (FSST) costs several
milliseconds however few of its rows a take gathers. A loader that walks the
table in batches asks for the same split again and again (32 batches of 256
rows per split), so :func:`take_from_splits` decodes a split whole, once, the
first time a take is *dense* in it, and keeps the pixel stack
``(rows of the split, T, C, Z, Y, X)`` in the process-wide byte cache
(:func:`omeframe.set_cache_bytes`); later takes of that split copy rows out of
it and read no file bytes. Sparse takes (a random mini-batch touches most
splits for a row or two) keep gathering rows through Vortex.

A take is dense in a split when it asks for at least :data:`DENSE_FRACTION` of
the split's rows, or for a run of at least :data:`DENSE_RUN` consecutive rows.
A table whose decoded images fit in :data:`WHOLE_TABLE_SHARE` of the cache
keeps every split a take touches (random mini-batches over it then cost a
copy once the first ones have decoded the table).
Only splits whose decoded stack fits :data:`MAX_SPLIT_BYTES` (and a quarter of
the cache) are kept, and only when their records share one shape, dtype and
chunk layout (the fast path of :func:`~omeframe.to_numpy_stack`); a split that
does not is remembered as such and read row by row as before. Entries are
keyed by the file's identity (device, inode, size, modification time): a table
replaced under the same name (omeframe writes by rename) gets new entries.
The pixel bytes of a split are CRC-checked when the split is read, as in any read.

Measured on 1,000,000 crops 3x16x16 (one run, 2 cores): 256 consecutive rows
take about 2 ms gathered and 0.07 ms from a kept split; decoding a split
(8,192 rows) takes 11-30 ms; a DataLoader epoch with 2 workers in order went
from 125,091 to 244,772 samples/s (Lance's own dataset: 183,271).

Example
-------
>>> import numpy as np
>>> dense_splits(np.arange(300, 400), np.array([[0, 8192], [8192, 16384]])).tolist()
[True, False]
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from omeframe.engine.cache import shared_cache
from omeframe.formats.record.stack import shape_dims, uniform_stack
from omeframe.formats.vortex.file import read_vortex_table, rows_per_split, vortex_splits

__all__ = [
    "DENSE_FRACTION", "DENSE_RUN", "MAX_SPLIT_BYTES", "WHOLE_TABLE_SHARE", "dense_splits", "split_bounds",
    "take_from_splits",
]

#: A take is dense in a split when it asks for at least this share of its rows
#: (256 of 8,192: one loader batch of the usual size) ...
DENSE_FRACTION = 1 / 32
#: ... or for at least this many consecutive rows of it (a smaller batch of a
#: loader that walks the table in order).
DENSE_RUN = 32
#: A table whose decoded images take at most this share of the cache budget keeps
#: every split a take touches, dense or not: after a first random batch has decoded
#: them, random batches copy rows from memory (100,000 crops 3x16x16: 77 MB).
WHOLE_TABLE_SHARE = 0.5

#: Splits decoded so far, per file and column: a superset of those the cache still holds.
_DECODED: dict[tuple[Any, ...], set[int]] = {}

#: Decoded splits larger than this are not kept (about 8,192 crops of 3x16x16 uint8
#: take 6 MiB; large images gather cheaply and would crowd the cache).
MAX_SPLIT_BYTES = 16 << 20


def dense_splits(rows: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """Per split of ``splits`` (``(k, 2)`` row bounds): is a take of ``rows`` (sorted, unique) dense in it?"""
    count, first, last = rows_per_split(rows, splits)
    run = (count >= DENSE_RUN) & (last - first == count - 1)
    return (count > 0) & (run | (count >= np.maximum(1, (splits[:, 1] - splits[:, 0]) * DENSE_FRACTION)))


@functools.lru_cache(maxsize=64)
def _bounds(path: str, identity: tuple[int, ...]) -> np.ndarray:
    bounds = vortex_splits(path)
    bounds.setflags(write=False)
    return bounds


def _identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def split_bounds(path: str) -> np.ndarray:
    """``(k, 2)`` row bounds of the splits of the local Vortex table ``path`` (read-only; remembered per file)."""
    return _bounds(path, _identity(path))


def _decode_split(path: str, column: str, lo: int, hi: int) -> np.ndarray | None:
    records = read_vortex_table(path, columns=[column], rows=np.arange(lo, hi))[column]
    stack = uniform_stack(records, None)
    if stack is not None:
        stack.setflags(write=False)  # shared by every later take: never handed out, only copied from
    return stack


def take_from_splits(path: str, column: str, idx: np.ndarray, dims: str, row_nbytes: int | None) -> np.ndarray | None:
    """Rows ``idx`` (no repeats) decoded to ``(len(idx), *dims)`` from kept splits, or ``None``.

    ``None`` means the take should gather its rows as usual: some split it
    touches is neither kept nor dense, would not fit (``row_nbytes``, the
    decoded bytes of one image, is unknown or too large), or holds records of
    several layouts. The returned array is the caller's own (copied out).
    """
    cache = shared_cache()
    if cache.max_bytes <= 0 or not len(idx):
        return None
    identity = _identity(path)
    bounds = _bounds(path, identity)
    if not len(bounds):
        return None
    which = np.searchsorted(bounds[:, 0], idx, side="right") - 1
    touched = np.unique(which)
    key: tuple[Any, ...] = ("vortex-split", path, *identity, column)
    # only splits once decoded can be in the cache: look those up (a random take touches ~all)
    kept = np.zeros(len(touched), dtype=bool)
    ever = _DECODED.get(key)
    if ever:
        for i in np.flatnonzero(np.isin(touched, np.fromiter(ever, dtype=np.int64, count=len(ever)))):
            kept[i] = (*key, int(touched[i])) in cache
    if not kept.all():
        if row_nbytes is None:
            return None
        span = bounds[touched, 1] - bounds[touched, 0]
        fits = span * row_nbytes <= min(MAX_SPLIT_BYTES, cache.max_bytes // 4)
        # a table whose images fit in a share of the cache is kept whole, however it is touched
        small = int(bounds[-1, 1]) * row_nbytes <= cache.max_bytes * WHOLE_TABLE_SHARE
        wanted = True if small else dense_splits(np.sort(idx), bounds)[touched]
        if not (kept | (fits & wanted)).all():
            return None
    _DECODED.setdefault(key, set()).update(int(s) for s in touched)
    stacks = [
        cache.get_or_compute(
            (*key, int(s)), functools.partial(_decode_split, path, column, int(bounds[s, 0]), int(bounds[s, 1]))
        )
        for s in touched
    ]
    if any(s is None for s in stacks):
        return None
    first = stacks[0]
    assert first is not None
    if any(s.shape[1:] != first.shape[1:] or s.dtype != first.dtype for s in stacks if s is not None):
        return None
    if len(stacks) == 1:
        local = idx - bounds[touched[0], 0]
        if bool((np.diff(local) == 1).all()):
            out6 = first[int(local[0]) : int(local[0]) + len(local)].copy()
        else:
            out6 = first[local]
    else:
        out6 = np.empty((len(idx), *first.shape[1:]), dtype=first.dtype)
        # the rows grouped by split once (not one mask per split): positions in out6, rows in the split
        order = np.argsort(which, kind="stable")
        local = idx[order] - bounds[which[order], 0]
        ends = np.searchsorted(which[order], touched, side="right")
        start = 0
        for stack, end in zip(stacks, ends.tolist(), strict=True):
            assert stack is not None
            out6[order[start:end]] = stack[local[start:end]]
            start = end
    return shape_dims(out6, dims)
