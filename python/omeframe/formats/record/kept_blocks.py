"""Decoded blocks of rows of local record tables, kept for takes that come back to them.

A loader asks a table for the same rows again and again: batches that walk it
in order ask for the same block of rows 32 times (batches of 256 in blocks of
8,192), and an epoch over a small table asks for every row once per epoch.
:func:`take_from_blocks` decodes a block whole, once, the first time a take is
*dense* in it, and keeps its pixel stack ``(rows of the block, T, C, Z, Y, X)``
in the process-wide byte cache (:func:`omeframe.set_cache_bytes`); later takes
of that block copy rows out of it and read no file bytes. Sparse takes (a
random mini-batch over a large table touches most blocks for a row or two)
keep gathering their rows from the file.

A take is dense in a block when it asks for at least :data:`DENSE_FRACTION` of
the block's rows, or for a run of at least :data:`DENSE_RUN` consecutive rows.
A table whose decoded images fit in :data:`WHOLE_TABLE_SHARE` of the cache
keeps every block a take touches (random mini-batches over it then cost a copy
once the first ones have decoded the table); once all of its blocks are kept,
they are stitched into one stack (:data:`WHOLE`), so a random batch is one
gather however many blocks its rows fall in. A format that gathers
consecutive rows about as cheaply as decoding them whole (Parquet through its
pixel index: about 1 µs a row of 3x16x16 crops) keeps blocks only for sparse
takes of a small table (``keep_dense=False``): a loader whose workers each
read every other batch in order would decode every block twice to copy half
of it (measured, 100,000 crops 3x16x16, 2 workers: 200,000 samples/s
through the pages, 124,000 from kept blocks). Only blocks whose decoded stack
fits :data:`MAX_BLOCK_BYTES` (and a quarter of the cache) are kept, and only
when their images share one shape and dtype (the fast path of
:func:`~omeframe.to_numpy_stack`); a block that does not is read row by row as
before.

The formats give the blocks: a Vortex table its splits
(:mod:`omeframe.formats.record.vortex_splits`), a Parquet table with a pixel
index runs of :data:`BLOCK_ROWS` rows decoded through the index
(:class:`~omeframe.formats.record.image_table.ImageTable`). Entries are keyed
by the file's identity (:func:`omeframe.storage.files.file_key`): a table
replaced under the same name (omeframe writes by rename) gets new entries. The
key names the version the blocks are decoded from: an ``ImageTable`` over
Parquet passes the identity of the file it mapped when opened.
A block's bytes are checked (row CRCs, page CRCs) when it is decoded, as in
any read; rows copied from a kept block are those checked bytes.

Example
-------
>>> import numpy as np
>>> dense_blocks(np.arange(300, 400), np.array([[0, 8192], [8192, 16384]])).tolist()
[True, False]
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from omeframe.engine.cache import shared_cache
from omeframe.formats.record.stack import shape_dims
from omeframe.formats.vortex.file import rows_per_split  # any (k, 2) row bounds, not only Vortex's

__all__ = [
    "BLOCK_ROWS", "DENSE_FRACTION", "DENSE_RUN", "MAX_BLOCK_BYTES", "MAX_TABLES", "WHOLE", "WHOLE_TABLE_SHARE",
    "dense_blocks", "fixed_blocks", "take_from_blocks",
]

#: Rows per block of a format without blocks of its own (Vortex's splits are this long too).
BLOCK_ROWS = 8192
#: A take is dense in a block when it asks for at least this share of its rows
#: (256 of 8,192: one loader batch of the usual size) ...
DENSE_FRACTION = 1 / 32
#: ... or for at least this many consecutive rows of it (a smaller batch of a
#: loader that walks the table in order).
DENSE_RUN = 32
#: A table whose decoded images take at most this share of the cache budget keeps
#: every block a take touches, dense or not: after a first random batch has decoded
#: them, random batches copy rows from memory (100,000 crops 3x16x16: 77 MB).
WHOLE_TABLE_SHARE = 0.5
#: The last part of the cache key of a small table's blocks stitched into one stack: random
#: batches then cost one gather (100,000 crops 3x16x16: 13 blocks, ~10 µs of gathering each).
WHOLE = "whole"
#: Decoded blocks larger than this are not kept (8,192 crops of 3x16x16 uint8
#: take 6 MiB; large images gather cheaply and would crowd the cache).
MAX_BLOCK_BYTES = 16 << 20

#: Tables whose decoded blocks are remembered, the least recently used forgotten first (a
#: forgotten table's blocks still in the cache are found again by the next take that decodes).
MAX_TABLES = 256
#: Blocks decoded so far, per table: a superset of those the cache still holds.
_DECODED: OrderedDict[tuple[Any, ...], set[int]] = OrderedDict()
_DECODED_LOCK = threading.Lock()


def _decoded_so_far(key: tuple[Any, ...]) -> np.ndarray:
    """The blocks of table ``key`` decoded so far (a superset of those still kept)."""
    with _DECODED_LOCK:
        ever = _DECODED.get(key)
        if ever is None:
            return np.empty(0, dtype=np.int64)
        _DECODED.move_to_end(key)
        return np.fromiter(ever, dtype=np.int64, count=len(ever))


def _sparse_and_new(key: tuple[Any, ...], bounds: np.ndarray, idx: np.ndarray) -> bool:
    """Whether the block of ``idx[0]`` is neither dense in the take (:func:`dense_blocks`) nor ever decoded.

    :func:`take_from_blocks` gives up on a large table's take when any block
    it touches is such a block; this asks about one block, without sorting
    the rows, so a random batch is turned away at its first row (about
    10 µs, against 50 for the blocks of every row).
    """
    b = int(np.searchsorted(bounds[:, 0], idx[0], side="right")) - 1
    lo, hi = int(bounds[b, 0]), int(bounds[b, 1])
    count = int(np.count_nonzero((idx >= lo) & (idx < hi)))
    if count >= DENSE_RUN or count >= max(1.0, (hi - lo) * DENSE_FRACTION):
        return False  # perhaps dense: every block decides
    with _DECODED_LOCK:
        ever = _DECODED.get(key)
        return ever is None or b not in ever


def _remember_decoded(key: tuple[Any, ...], blocks: np.ndarray) -> None:
    with _DECODED_LOCK:
        _DECODED.setdefault(key, set()).update(blocks.tolist())
        _DECODED.move_to_end(key)
        while len(_DECODED) > MAX_TABLES:
            _DECODED.popitem(last=False)


def dense_blocks(rows: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per block of ``bounds`` (``(k, 2)`` row bounds): is a take of ``rows`` (sorted, unique) dense in it?"""
    count, first, last = rows_per_split(rows, bounds)
    run = (count >= DENSE_RUN) & (last - first == count - 1)
    return (count > 0) & (run | (count >= np.maximum(1, (bounds[:, 1] - bounds[:, 0]) * DENSE_FRACTION)))


@functools.lru_cache(maxsize=16)
def fixed_blocks(num_rows: int, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """``(k, 2)`` row bounds of consecutive blocks of ``block_rows`` rows over ``num_rows`` (read-only).

    Example
    -------
    >>> fixed_blocks(20000).tolist()
    [[0, 8192], [8192, 16384], [16384, 20000]]
    """
    starts = np.arange(0, num_rows, block_rows, dtype=np.int64)
    bounds = np.stack([starts, np.minimum(starts + block_rows, num_rows)], axis=1).reshape(-1, 2)
    bounds.setflags(write=False)
    return bounds


def _small(bounds: np.ndarray, row_nbytes: int | None, budget: int) -> bool:
    """Whether the decoded images of a table with blocks ``bounds`` fit in :data:`WHOLE_TABLE_SHARE` of ``budget``."""
    return row_nbytes is not None and int(bounds[-1, 1]) * row_nbytes <= budget * WHOLE_TABLE_SHARE


def _decoded_blocks(
    cache: Any,
    key: tuple[Any, ...],
    bounds: np.ndarray,
    touched: np.ndarray,
    seen: np.ndarray,
    dense: np.ndarray,
    small: bool,
    row_nbytes: int | None,
    decode: Callable[[int, int], np.ndarray | None],
    keep_dense: bool,
) -> list[np.ndarray | None] | None:
    """The stacks of blocks ``touched``, decoding those not kept when the rules allow, else ``None``.

    ``seen``, ``dense``: per block touched, whether it was ever decoded and whether the take is dense
    in it; ``small``: whether the table's images fit in :data:`WHOLE_TABLE_SHARE` of the cache.
    """
    if row_nbytes is None:
        return None
    # only blocks once decoded can be in the cache: look those up (a random take touches ~all)
    kept = np.zeros(len(touched), dtype=bool)
    for i in np.flatnonzero(seen):
        kept[i] = (*key, int(touched[i])) in cache
    span = bounds[touched, 1] - bounds[touched, 0]
    fits = span * row_nbytes <= min(MAX_BLOCK_BYTES, cache.max_bytes // 4)
    # a table whose images fit in a share of the cache is kept whole, however it is touched
    wanted = (small | dense) if keep_dense else (small & ~dense)
    if not (kept | (fits & wanted)).all():
        return None
    _remember_decoded(key, touched)

    def block(s: int) -> np.ndarray | None:
        stack = decode(int(bounds[s, 0]), int(bounds[s, 1]))
        if stack is not None:
            stack.setflags(write=False)  # shared by every later take: never handed out, only copied from
        return stack

    return [cache.get_or_compute((*key, int(s)), functools.partial(block, int(s))) for s in touched]


def take_from_blocks(
    key: tuple[Any, ...],
    bounds: np.ndarray,
    idx: np.ndarray,
    dims: str,
    row_nbytes: int | None,
    decode: Callable[[int, int], np.ndarray | None],
    *,
    keep_dense: bool = True,
) -> np.ndarray | None:
    """Rows ``idx`` (no repeats) decoded to ``(len(idx), *dims)`` from kept blocks, or ``None``.

    Parameters
    ----------
    key
        The table's identity and column (the blocks' cache keys extend it).
    bounds
        ``(k, 2)`` row bounds of the table's blocks.
    idx
        The rows, in the order wanted.
    dims
        Axes of each image in the output.
    row_nbytes
        Decoded bytes of one image, once a take has shown it (``None``: not yet).
    decode
        ``decode(lo, hi)``: the ``(hi - lo, T, C, Z, Y, X)`` stack of rows
        ``lo:hi``, checked, or ``None`` when their images differ in layout.
    keep_dense
        Whether a take dense in a block has it decoded and kept (the format
        gathers consecutive rows at a cost near a block's decode per row).
        ``False``: only sparse takes of a small table keep blocks, for a
        format that gathers consecutive rows cheaply.

    ``None`` means the take should gather its rows as usual: some block it
    touches is neither kept nor dense, would not fit, or holds images of
    several layouts. The returned array is the caller's own (copied out).
    """
    cache = shared_cache()
    if cache.max_bytes <= 0 or not len(idx) or not len(bounds):
        return None
    small = _small(bounds, row_nbytes, cache.max_bytes)
    if not keep_dense and not small:
        return None  # only a small table keeps blocks: no lookups
    if small and (*key, WHOLE) in cache:  # in the cache: no miss counted for tables without one
        whole = cache.get((*key, WHOLE))
        if whole is not None and len(whole) == int(bounds[-1, 1]):
            return shape_dims(whole[idx], dims)
    if not small and _sparse_and_new(key, bounds, idx):
        return None  # a random batch of a large table: settled by the block of its first row
    which = np.searchsorted(bounds[:, 0], idx, side="right") - 1
    touched = np.unique(which)
    seen = np.isin(touched, _decoded_so_far(key))
    dense = dense_blocks(np.sort(idx), bounds)[touched]
    if not small and not (dense | seen).all():
        return None  # a block neither dense nor ever decoded (a random batch of a large table): no lookups
    stacks = cache.get_all([(*key, s) for s in touched.tolist()])  # every block kept: one lookup
    if stacks is None:
        stacks = _decoded_blocks(cache, key, bounds, touched, seen, dense, small, row_nbytes, decode, keep_dense)
        if stacks is None:
            return None
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
        # the rows grouped by block once (not one mask per block): positions in out6, rows in the block
        order = np.argsort(which, kind="stable")
        local = idx[order] - bounds[which[order], 0]
        ends = np.searchsorted(which[order], touched, side="right")
        start = 0
        for stack, end in zip(stacks, ends.tolist(), strict=True):
            assert stack is not None
            out6[order[start:end]] = stack[local[start:end]]
            start = end
    if small:
        _stitch(cache, key, bounds)
    return shape_dims(out6, dims)


def _stitch(cache: Any, key: tuple[Any, ...], bounds: np.ndarray) -> None:
    """Keep the blocks of a small table as one stack (under ``(*key, WHOLE)``) once all are kept.

    A random batch then costs one gather, however many blocks its rows fall
    in; the blocks' own entries are dropped (the stack holds their rows).
    Nothing happens while a block has not been decoded, or when the blocks
    differ in image shape or dtype.
    """
    if len(bounds) < 2 or int(bounds[0, 0]) != 0 or not np.array_equal(bounds[1:, 0], bounds[:-1, 1]):
        return
    if len(_decoded_so_far(key)) < len(bounds):  # cheap: a block was never decoded
        return
    stacks = cache.get_all([(*key, s) for s in range(len(bounds))])
    if stacks is None or any(s is None for s in stacks):
        return
    first = stacks[0]
    if any(s.shape[1:] != first.shape[1:] or s.dtype != first.dtype for s in stacks):
        return
    whole = np.concatenate(stacks)
    whole.setflags(write=False)  # shared by every later take: never handed out, only copied from
    cache.put((*key, WHOLE), whole, whole.nbytes)
    if (*key, WHOLE) in cache:  # kept (a budget shrunk meanwhile keeps nothing): the blocks are redundant
        for s in range(len(bounds)):
            cache.discard((*key, s))
