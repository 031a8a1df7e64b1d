"""A lazy plan as a ``dask.array`` whose blocks are whole storage chunks, each task reading only its own.

The blocks of the array follow the source's pieces: for a dataset (and any
source on a regular grid) blocks of whole stored chunks of one ``(t, c)``
plane or sub-stack, clipped to the plan's selection, so a task reads exactly
its chunks: for a dataset byte-range reads at their indexed offsets. Sources
made of irregular pieces (TIFF strips, file patterns ...) get blocks cut at
piece edges, so no block straddles a piece boundary.

By default neighbouring chunks are merged into blocks of about
:data:`DEFAULT_BLOCK_BYTES` (16 MiB): a distributed scheduler spends a few
milliseconds per task, more than reading and decoding a 512² chunk, so a
per-chunk reduction of an 8192² uint16 image took 1.0-1.2 s on one worker as
256 one-chunk tasks and 0.34 s as 12 merged ones (``benchmarks/bench_dask.py``).
``block_bytes=None`` keeps one block per chunk.

The array's graph is one blockwise layer of data-producing tasks (the layer
``dask.array.from_array`` makes), not a materialized dict: a task is the
plan and the slices of its block, and blockwise operations on the array
(``map_blocks``, elementwise arithmetic, the first step of a reduction) fuse
into the reading task, so a per-chunk reduction is one task per chunk, not a
read task, a reduce task and an alias between them. Tasks carry the plan,
which pickles as the path (or URL) and options it was opened from (a few
hundred bytes, see ``engine/reopen.py``): a worker opens the source once and
then reuses it for every block it computes. ``dask`` is imported only when
an array is built (``pip install 'omeframe[dask]'``).

Example
-------
>>> arr = omeframe.open_dataset("slides/").to_dask("slide-1")   # doctest: +SKIP
>>> arr.chunksize          # uint16, 512² chunks: 6 x 5 chunks  # doctest: +SKIP
(1, 1, 1, 3072, 2560)
>>> arr.max(axis=(3, 4)).compute()                               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from omeframe.engine.pieces import Pieces
from omeframe.model.errors import OptionalDependencyError

if TYPE_CHECKING:
    from omeframe.engine.lazy import LazyImage

__all__ = ["plan_to_dask", "block_grid", "BlockGrid"]

#: ``(t_index, c_index, (z0, z1), (y0, y1), (x0, x1))`` of one block, in the plan's output coordinates.
Block = tuple[int, int, tuple[int, int], tuple[int, int], tuple[int, int]]


class BlockGrid:
    """The blocks of a plan's output that align with the source's pieces.

    Attributes
    ----------
    chunks
        Block sizes per TCZYX axis, in ``dask.array``'s ``chunks`` form.
    """

    def __init__(self, chunks: tuple[tuple[int, ...], ...]) -> None:
        self.chunks = chunks

    def __len__(self) -> int:
        return int(np.prod([len(c) for c in self.chunks]))

    def blocks(self) -> Iterator[tuple[tuple[int, ...], Block]]:
        """``(block index, block)`` for every block, in C order."""
        starts = [np.concatenate(([0], np.cumsum(c))).tolist() for c in self.chunks]
        for idx in np.ndindex(*(len(c) for c in self.chunks)):
            it, ic, iz, iy, ix = (int(v) for v in idx)
            st, sc, sz, sy, sx = starts
            yield (it, ic, iz, iy, ix), (
                st[it], sc[ic], (sz[iz], sz[iz + 1]), (sy[iy], sy[iy + 1]), (sx[ix], sx[ix + 1])
            )


def _edges(pieces: Pieces, axis: int, size: int) -> np.ndarray:
    """Sorted piece boundaries along ZYX ``axis`` (0, 1, 2) of the source, 0 and ``size`` included."""
    grid = pieces.grid
    if grid is not None:
        step = grid[axis]
        return np.unique(np.append(np.arange(0, size, step, dtype=np.int64), size))
    lo = pieces.origins[:, 2 + axis].astype(np.int64)
    hi = lo + pieces.extents[:, axis].astype(np.int64)
    return np.unique(np.concatenate(([0, size], lo, hi)).clip(0, size))


def _range_blocks(edges: np.ndarray, start: int, stop: int) -> tuple[int, ...]:
    """Block sizes of the output range ``[start, stop)`` cut at the source ``edges`` inside it."""
    inner = edges[(edges > start) & (edges < stop)]
    bounds = np.concatenate(([start], inner, [stop]))
    return tuple(int(v) for v in np.diff(bounds)) or (0,)


def _index_blocks(edges: np.ndarray, index: np.ndarray) -> tuple[int, ...]:
    """Block sizes along an index axis: runs of output indices that fall in the same source piece."""
    if index.size == 0:
        return (0,)
    piece = np.searchsorted(edges, index, side="right")
    cuts = np.flatnonzero(np.diff(piece)) + 1
    bounds = np.concatenate(([0], cuts, [index.size]))
    return tuple(int(v) for v in np.diff(bounds))


def _merge(sizes: tuple[int, ...], k: int) -> tuple[int, ...]:
    """Block sizes of groups of at most ``k`` consecutive blocks, as even as possible.

    ``ceil(n / k)`` groups whose counts differ by at most one (16 blocks by 5:
    4, 4, 4, 4, not 5, 5, 5, 1), so no task is a sliver that leaves a worker
    idle while another reads a full group.
    """
    if k <= 1 or len(sizes) <= 1:
        return sizes
    groups = -(-len(sizes) // k)
    base, extra = divmod(len(sizes), groups)
    out, i = [], 0
    for g in range(groups):
        n = base + (g < extra)
        out.append(sum(sizes[i : i + n]))
        i += n
    return tuple(out)


def _pieces_per_block(ny: int, nx: int, k: int, py: int, px: int) -> tuple[int, int]:
    """Pieces per block along Y and X (at most ``k`` in all): the fewest blocks, then the squarest.

    Fewer blocks are fewer tasks; among as many, the one closest to square
    (pieces of ``py`` by ``px`` pixels). A grid of 32 x 32 pieces of 512²
    with room for 32 per block: 4 x 8 pieces, 32 equal tasks (not 6 x 5
    pieces, whose 42 tasks come in four sizes).

    Example
    -------
    >>> _pieces_per_block(32, 32, 32, 512, 512)
    (4, 8)
    >>> _pieces_per_block(1, 16, 5, 4, 4)
    (1, 5)
    """
    best: tuple[tuple[int, float], int, int] | None = None
    for ky in range(1, min(k, ny) + 1):
        kx = min(nx, k // ky)
        blocks = -(-ny // ky) * -(-nx // kx)
        key = (blocks, abs(float(np.log((ky * max(py, 1)) / (kx * max(px, 1))))))  # a 0-wide piece: no division by 0
        if best is None or key < best[0]:
            best = (key, ky, kx)
    assert best is not None
    return best[1], best[2]


#: Default size of a ``to_dask`` block: neighbouring chunks merged up to about this many bytes.
DEFAULT_BLOCK_BYTES = 16 << 20


def block_grid(plan: LazyImage, block_bytes: int | None = None) -> BlockGrid:
    """The blocks of ``plan``'s output, cut where the source's pieces are cut.

    With ``block_bytes``, neighbouring blocks along Y and X are merged (still
    cut at piece edges) into blocks of at most about that many bytes, or one
    piece where a piece is larger: fewer, bigger tasks for a scheduler whose
    cost per task would otherwise outweigh reading a small chunk: as few
    blocks as fit, then the squarest (:func:`_pieces_per_block`), and along
    each axis groups holding as even a number of pieces as possible.

    T and C blocks are one plane each (pieces are per ``(t, c)``); Z, Y and X
    blocks end wherever a piece ends, clipped to the selection.

    Example
    -------
    >>> grid = block_grid(omeframe.open_dataset("slides/").scan("a")._plan)   # doctest: +SKIP
    >>> len(grid), grid.chunks[3]                                            # doctest: +SKIP
    """
    if block_bytes is not None and (isinstance(block_bytes, bool) or not isinstance(block_bytes, int)
                                    or block_bytes <= 0):
        raise ValueError(f"block_bytes must be a positive number of bytes or None, got {block_bytes!r}")
    src = plan.source
    pieces = src.pixel_source()
    sel = plan.selection.resolve(src.shape)
    _, _, sz, sy, sx = src.shape
    zb = _index_blocks(_edges(pieces, 0, sz), sel.z)
    yb = _range_blocks(_edges(pieces, 1, sy), *sel.y)
    xb = _range_blocks(_edges(pieces, 2, sx), *sel.x)
    if block_bytes is not None:
        one = max(zb) * max(yb) * max(xb) * np.dtype(plan.out_dtype).itemsize
        ky, kx = _pieces_per_block(len(yb), len(xb), max(1, block_bytes // max(one, 1)), max(yb), max(xb))
        yb, xb = _merge(yb, ky), _merge(xb, kx)
    chunks = ((1,) * int(sel.t.size) or (0,), (1,) * int(sel.c.size) or (0,), zb, yb, xb)
    return BlockGrid(chunks)


#: Allocations below this many bytes come from the heap in dask worker processes (see
#: :func:`_worker_allocator`); glibc's own default grows its threshold up to 32 MiB.
WORKER_MMAP_THRESHOLD = 4 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_allocator_done = False


def _worker_allocator() -> None:
    """Keep chunk-sized buffers on the heap in a dask worker process (once per process; Linux/glibc).

    ``distributed``'s nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set,
    which also freezes glibc's mmap threshold at 128 KiB: every chunk-sized
    buffer a task allocates (the compressed bytes, the decoded chunk, the
    output block) is then a fresh memory map, and its page faults cost more
    than the decode (a 512² uint16 chunk: 1.8 ms per task instead of 0.7 ms).
    This raises the threshold to :data:`WORKER_MMAP_THRESHOLD`, as glibc's
    dynamic threshold would, leaving the trim threshold (memory handed back to
    the system) as the nanny set it. A worker whose environment sets
    ``MALLOC_MMAP_THRESHOLD_`` itself is left alone.
    """
    global _allocator_done
    if _allocator_done:
        return
    _allocator_done = True
    import os
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:  # glibc's dynamic threshold is still on
        return
    try:
        from distributed import get_worker  # lazy: distributed

        get_worker()
    except (ImportError, ValueError):  # not inside a dask worker
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        return


def read_block(plan: LazyImage, block: tuple[slice, ...]) -> Any:
    """The block of ``plan``'s output at the TCZYX ``block`` slices (the task a ``dask.array`` of the plan runs).

    T and C slices hold one index each (blocks are one plane); Z, Y and X
    slices are ranges of the plan's output.
    """
    _worker_allocator()
    t, c, z, y, x = block
    return plan.select(t=[t.start], c=[c.start], z=z, y=(y.start, y.stop), x=(x.start, x.stop)).execute()


def _token(plan: LazyImage) -> str:
    """A deterministic name for the plan's array: the same plan (same files, selection) gets the same one."""
    return hashlib.sha1(pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()[:24]


def plan_to_dask(plan: LazyImage, block_bytes: int | None = DEFAULT_BLOCK_BYTES) -> Any:
    """``plan``'s TCZYX result as a lazy ``dask.array.Array`` whose blocks are whole stored chunks.

    Each task runs the plan narrowed to its block, which touches only its
    pieces of the source (chunk filters of the plan still apply: skipped
    chunks read as zeros). The array is 5-D (TCZYX) with the plan's output
    dtype. A task reads neighbouring chunks merged into a block of about
    ``block_bytes`` (see :func:`block_grid`; blocks still align with the
    stored chunks), or exactly one chunk with ``block_bytes=None``. The graph
    is one blockwise layer, so blockwise operations on the array run in the
    task that reads the block.

    Raises
    ------
    OptionalDependencyError
        When ``dask`` is not installed.

    Example
    -------
    >>> arr = plan_to_dask(omeframe.scan("big.ome.tif")._plan)   # doctest: +SKIP
    >>> arr.mean().compute()                                     # doctest: +SKIP
    """
    try:
        import dask.array as da  # lazy: dask
        from dask.array.core import graph_from_arraylike
    except ImportError as exc:  # pragma: no cover - dask is in the test extra
        raise OptionalDependencyError(
            "LazyImage.to_dask needs dask; install it with pip install 'omeframe[dask]'"
        ) from exc
    grid = block_grid(plan, block_bytes)
    name = "omeframe-" + _token(plan) + ("" if block_bytes is None else f"-{block_bytes}")
    shape = tuple(sum(c) for c in grid.chunks)
    if all(shape):
        # the plan is inlined into every task (it pickles small); the tasks are data producers
        graph = graph_from_arraylike(plan, grid.chunks, shape, name, getitem=read_block, inline_array=True)
        return da.Array(graph, name, grid.chunks, dtype=plan.out_dtype)
    # an empty selection: one empty block
    return da.Array({(name, 0, 0, 0, 0, 0): (np.zeros, shape, plan.out_dtype)}, name, grid.chunks, dtype=plan.out_dtype)
