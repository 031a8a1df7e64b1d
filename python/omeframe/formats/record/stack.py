"""Decode many same-shape records into one ``(N, ...)`` array without per-record Python.

:func:`to_numpy_stack` checks once, over whole Arrow columns, that the
records agree (shape, dtype, chunk layout), then decodes every chunk payload
of the column in one ``zstandard`` multi-frame call (raw chunks are a single
copy) and scatters chunk ``j`` of all records at once. Records that do not
agree (ragged crops, list variant, mixed codecs) take the per-record path of
:func:`~omeframe.formats.record.decode.to_numpy_batch` and must still share a shape.
"""

from __future__ import annotations

import ctypes
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omeframe.engine import threads as _threads
from omeframe.engine.codec import binary_offsets, zstd_decompressor
from omeframe.formats.record.decode import _flat_struct, to_numpy_batch
from omeframe.model.dims import CANONICAL
from omeframe.model.dtypes import output_dtype, to_numpy_dtype
from omeframe.model.errors import PixelPayloadError, SchemaError

__all__ = [
    "to_numpy_stack", "stack_dims", "decode_payloads", "decode_zstd_into", "decode_frames_into", "byte_runs",
    "scatter_chunks",
    "UniformLayout",
]

_KEYS = ("t", "c", "z", "y", "x", "shape_z", "shape_y", "shape_x")


def stack_dims(dims: str) -> str:
    """Validate the per-image output axes of a stack (letters of ``TCZYX``, each once)."""
    d = str(dims).upper()
    if not d or len(set(d)) != len(d) or set(d) - set(CANONICAL) or not {"Y", "X"} <= set(d):
        raise ValueError(
            f"dims must name each output axis once from 'TCZYX' and include Y and X "
            f"(e.g. 'CYX', 'TCZYX', 'YXC'); got {dims!r}"
        )
    return d


def shape_dims(out6: np.ndarray, dims: str) -> np.ndarray:
    """Turn an ``(N, T, C, Z, Y, X)`` array into ``(N, *dims)`` (contiguous)."""
    dropped = [a for a in CANONICAL if a not in dims]
    shape = dict(zip(CANONICAL, out6.shape[1:], strict=True))
    big = [f"{a}={shape[a]}" for a in dropped if shape[a] != 1]
    if big:
        raise ValueError(
            f"dims={dims!r} drops axes of length > 1 ({', '.join(big)}); include them, e.g. "
            f"dims='{''.join(a for a in CANONICAL if a in dims or shape[a] != 1)}'"
        )
    kept = [a for a in CANONICAL if a in dims]
    view = out6.reshape(out6.shape[0], *(shape[a] for a in kept))
    if list(dims) == kept:
        return view
    return np.ascontiguousarray(view.transpose([0, *(1 + kept.index(a) for a in dims)]))


def decode_zstd_into(
    out: np.ndarray,
    data: Any,
    starts: np.ndarray,
    lengths: np.ndarray,
    sizes: np.ndarray,
    *,
    what: str,
) -> None:
    """Decode zstd frames lying anywhere in ``data`` back to back into ``out``.

    Frame ``i`` is ``data[starts[i]:starts[i] + lengths[i]]`` (``data``: any
    buffer, e.g. an Arrow buffer or a memory map) and must decode to exactly
    ``sizes[i]`` bytes (no frame may expand beyond it) and pass its checksum.
    Frames are decoded in blocks of about :data:`DECODE_BLOCK_BYTES` by
    ``zstandard``'s multi-frame decoder, one block per thread of the shared
    pool, each block copied into place by the thread that decoded it.

    Raises
    ------
    PixelPayloadError
        Naming the first frame that does not decode.
    """
    n = len(starts)
    flat = out.reshape(-1).view(np.uint8)
    if flat.size != int(np.sum(sizes)):
        raise PixelPayloadError(f"{what}: {n} frames of {int(np.sum(sizes))} bytes do not fill {flat.size} bytes")
    if n == 0:
        return
    sizes = np.asarray(sizes, dtype=np.int64)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=cum[1:])
    # Blocks of about DECODE_BLOCK_BYTES decoded bytes, each decoded and copied into
    # place by one thread while its buffer is still in cache: the copy runs in
    # parallel too, and zstd's own output buffers stay small.
    # A take smaller than one block still uses every thread: at least MIN_BLOCK_BYTES each.
    per = min(DECODE_BLOCK_BYTES, max(MIN_BLOCK_BYTES, -(-int(cum[-1]) // _threads.num_threads())))
    bounds = byte_runs(cum, per)

    def block(b: int) -> None:
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        _decode_block(flat[int(cum[lo]) : int(cum[hi])], data, starts[lo:hi], lengths[lo:hi], sizes[lo:hi], lo, what)

    _threads.run_each(block, range(len(bounds) - 1))


#: Decoded bytes per block of a bulk decode (one thread decodes and places a block).
DECODE_BLOCK_BYTES = 4 << 20
#: Smallest block a decode is split into to use every thread (a random batch of crops).
MIN_BLOCK_BYTES = 256 << 10
#: Decoded bytes per call of zstd's multi-frame decoder (at least one frame). The
#: decoder returns a buffer of its own for each call. Calls of a bounded size get
#: theirs from reused heap memory once glibc's mmap threshold has grown to them; a
#: call per take (or per thread's share of it) got a fresh mapping whose every page
#: faulted on first write: 256 random rows of 3×64×64 crops in raw-chunk pages took
#: 4.7 ms in a fresh process with 1,600 page faults, in calls of this size 2.6 ms
#: with 130; calls of 120 KiB cost more in Python (6 ms, and a full scan 2.5 s
#: instead of 0.8 s) (measured).
DECODE_CALL_BYTES = 1 << 20



class FrameError(Exception):
    """A zstd frame of a run that does not decode: ``index`` counts from the run's first frame (or ``None``)."""

    def __init__(self, index: int | None, cause: Exception) -> None:
        super().__init__(str(cause))
        self.index = index


def byte_runs(cum: np.ndarray, limit: int) -> list[int]:
    """Bounds of runs of consecutive items of about ``limit`` bytes (at least one item each).

    ``cum`` holds the items' cumulative sizes from 0 (``n + 1`` values); a run
    starts at each item holding a multiple of ``limit``. Returns ``[0, ..., n]``.

    Example
    -------
    >>> byte_runs(np.array([0, 4, 8, 12, 16]), 8)
    [0, 2, 4]
    """
    n = len(cum) - 1
    cuts = np.searchsorted(cum, np.arange(0, int(cum[-1]), max(1, limit)), side="right") - 1
    return np.unique(np.concatenate([[0], cuts, [n]])).astype(int).tolist()


def decode_frames_into(flat: np.ndarray, data: Any, starts: np.ndarray, lengths: np.ndarray, sizes: np.ndarray) -> None:
    """Decode zstd frames ``data[starts[i]:starts[i] + lengths[i]]`` back to back into ``flat`` in this thread.

    Frame ``i`` must decode to exactly ``sizes[i]`` bytes (no frame may expand
    beyond it) and pass its checksum; ``flat`` holds ``sizes.sum()`` bytes.
    Frames are decoded in calls of at most :data:`DECODE_CALL_BYTES` each.

    Raises
    ------
    FrameError
        For the first frame that does not decode.
    """
    import zstandard

    sizes = np.asarray(sizes, dtype=np.int64)
    cum = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=cum[1:])
    bounds = byte_runs(cum, DECODE_CALL_BYTES)
    seg = np.empty((len(sizes), 2), dtype=np.uint64)
    seg[:, 0] = starts
    seg[:, 1] = lengths
    want = sizes.astype(np.uint64)
    d = zstd_decompressor()
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        try:
            decoded = d.multi_decompress_to_buffer(
                zstandard.BufferWithSegments(data, seg[a:b].tobytes()),
                decompressed_sizes=want[a:b].tobytes(), threads=0,
            )
        except zstandard.ZstdError as exc:
            m = re.search(r"item (\d+)", str(exc))
            raise FrameError(a + int(m.group(1)) if m else None, exc) from exc
        gather_segments(decoded, sizes[a:b], flat[int(cum[a]) : int(cum[b])])


def _decode_block(
    flat: np.ndarray, data: Any, starts: np.ndarray, lengths: np.ndarray, sizes: np.ndarray, first: int, what: str
) -> None:
    """Decode one run of frames into ``flat`` in this thread (frame numbers count from ``first``)."""
    try:
        decode_frames_into(flat, data, starts, lengths, sizes)
    except FrameError as exc:
        frame = None if exc.index is None else first + exc.index
        where = "" if frame is None else f" (frame {frame})"
        error = PixelPayloadError(f"{what}: a zstd chunk payload does not decode{where}: {exc}")
        error.frame = frame
        raise error from exc


def gather_segments(decoded: Any, sizes: np.ndarray, flat: np.ndarray) -> None:
    """Copy the decoded frames of a ``BufferWithSegmentsCollection`` back to back into ``flat``.

    The collection holds one buffer per decoding thread (or a few), each with
    its frames back to back. Each buffer's run of frames is found by bisection
    on the frames' offsets (a new buffer restarts at offset 0) and copied with
    one memory copy, so the work does not grow with the number of frames.
    """
    n = len(sizes)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=cum[1:])
    if n == 0 or not (sizes > 0).all():
        flat[:] = np.frombuffer(b"".join(decoded[i] for i in range(n)), dtype=np.uint8)
        return
    i0 = 0
    while i0 < n:
        base = int(cum[i0])
        lo, hi = i0, n - 1
        while lo < hi:  # the last frame of the buffer that holds frame i0
            mid = (lo + hi + 1) // 2
            if decoded[mid].offset == int(cum[mid]) - base + decoded[i0].offset:
                lo = mid
            else:
                hi = mid - 1
        i1 = lo + 1
        first = np.frombuffer(decoded[i0], dtype=np.uint8)
        last = np.frombuffer(decoded[i1 - 1], dtype=np.uint8)
        length = int(cum[i1]) - base
        if last.ctypes.data - first.ctypes.data != int(cum[i1 - 1]) - base or last.size != int(sizes[i1 - 1]):
            # not one contiguous run after all: copy frame by frame
            for i in range(i0, i1):
                flat[int(cum[i]) : int(cum[i + 1])] = np.frombuffer(decoded[i], dtype=np.uint8)
        else:
            run = (ctypes.c_uint8 * length).from_address(first.ctypes.data)
            flat[base : base + length] = np.ctypeslib.as_array(run)
        i0 = i1


@dataclass(frozen=True)
class UniformLayout:
    """The layout every record of a column shares: the fast path's precondition."""

    shape: tuple[int, int, int, int, int]
    dtype: np.dtype[Any]
    keys: np.ndarray  # (k, 8) chunk keys of one record, in stored order
    codec: str | None  # "zstd" or None (raw)

    @property
    def whole_blocks(self) -> bool:
        """True when chunk ``j`` is plane set ``(t, c) = divmod(j, C)`` in full."""
        keys = np.ascontiguousarray(self.keys, dtype=np.int64)
        return _grid_facts(keys.tobytes(), len(keys), tuple(self.shape))[1]

    def chunk_bytes(self) -> np.ndarray:
        return self.keys[:, 5:].prod(axis=1) * self.dtype.itemsize


def _column_values(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False)


def _has_fields(kind: pa.DataType, names: Sequence[str]) -> bool:
    """Whether struct type ``kind`` has every field in ``names`` (without building its fields)."""
    return all(kind.get_field_index(name) >= 0 for name in names)


def _single_value(col: pa.Array) -> tuple[bool, Any]:
    """``(True, value)`` when every item of the string column ``col`` is one value (``None``: all null).

    A column of one repeated string is recognised from its buffers (every
    item as long as the first and holding its bytes), without hashing; other
    columns go through ``pyarrow.compute.unique``.
    """
    n = len(col)
    if n == 0 or col.null_count == n:
        return True, None
    if not col.null_count and pa.types.is_string(col.type):
        offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
        width = int(offsets[1] - offsets[0])
        data = col.buffers()[2]
        if bool((np.diff(offsets) == width).all()):
            if width == 0:
                return True, ""
            start = int(offsets[0])
            items = np.frombuffer(data, dtype=np.uint8)[start : start + n * width].reshape(n, width)
            if not bool((items == items[0]).all()):
                return False, None
            try:
                return True, items[0].tobytes().decode("utf-8")
            except UnicodeDecodeError:  # not text: let the caller's slow path judge the records
                return False, None
    uniq = pc.unique(col)
    return (True, uniq[0].as_py()) if len(uniq) == 1 else (False, None)


_SIZES = tuple(f"size_{a}" for a in "tczyx")


def uniform_layout(arr: pa.StructArray) -> UniformLayout | None:
    """The shared layout of a flat record array, or ``None`` when records differ."""
    if not _has_fields(arr.type, ("pixels_meta", "chunks")) or arr.null_count:
        return None
    pm = arr.field("pixels_meta")
    if pm.null_count or not _has_fields(pm.type, (*_SIZES, "type")):
        return None
    sizes = [pm.field(name) for name in _SIZES]
    if any(s.null_count for s in sizes):
        return None
    vals = np.stack([_column_values(s) for s in sizes])
    shape = tuple(int(v) for v in vals[:, 0])
    if bool((vals != vals[:, :1]).any()) or min(shape) <= 0:
        return None
    single, kind = _single_value(pm.field("type"))
    if not single or kind is None:
        return None
    try:
        dtype = to_numpy_dtype(kind)
    except Exception:
        return None
    chunks = arr.field("chunks")
    if chunks.null_count:
        return None
    loffs = chunks.offsets.to_numpy()
    counts = np.diff(loffs)
    k = int(counts[0])
    if k == 0 or (counts != k).any():
        return None
    inner = chunks.values.slice(int(loffs[0]), int(loffs[-1] - loffs[0]))
    if not _has_fields(inner.type, (*_KEYS, "pixel_bytes", "dtype", "compression")):
        return None
    inner = _flat_struct(inner)
    keys = np.stack([_column_values(inner.field(f)) for f in _KEYS], axis=1).astype(np.int64)
    first = keys[:k]
    if not (keys.reshape(-1, k, 8) == first).all():
        return None
    single, chunk_dtype = _single_value(inner.field("dtype"))
    if not single or (chunk_dtype is not None and to_numpy_dtype(chunk_dtype) != dtype):
        return None
    single, compression = _single_value(inner.field("compression"))
    if not single:
        return None
    codec = None if compression is None or str(compression).lower() in ("", "none") else str(compression).lower()
    if codec not in (None, "zstd"):
        return None
    if not _grid_facts(first.tobytes(), len(first), shape)[0]:
        return None
    return UniformLayout(shape=shape, dtype=dtype, keys=first, codec=codec)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _grid_facts(keys: bytes, k: int, shape: tuple[int, int, int, int, int]) -> tuple[bool, bool]:
    """``(tiles, whole_blocks)`` of one record's ``(k, 8)`` int64 chunk ``keys`` (given as bytes) for ``shape``.

    ``tiles``: the chunk boxes cover the image exactly once (:func:`_tiles`);
    ``whole_blocks``: chunk ``j`` is plane set ``(t, c) = divmod(j, C)`` in
    full. Remembered: a loader asks about one layout again and again, and the
    checks cost about 60 µs.
    """
    grid = np.frombuffer(keys, dtype=np.int64).reshape(k, 8)
    st, sc, sz, sy, sx = shape
    whole = k == st * sc and bool(
        np.array_equal(grid[:, :2], np.stack([np.repeat(np.arange(st), sc), np.tile(np.arange(sc), st)], axis=1))
        and not grid[:, 2:5].any()
        and (grid[:, 5:] == (sz, sy, sx)).all()
    )
    return _tiles(grid, shape), whole


def _tiles(keys: np.ndarray, shape: tuple[int, ...]) -> bool:
    """True when the chunk boxes cover the image exactly once."""
    st, sc, sz, sy, sx = shape
    if (keys[:, 5:] <= 0).any() or (keys[:, :5] < 0).any():
        return False
    ends = keys[:, 2:5] + keys[:, 5:]
    if (keys[:, 0] >= st).any() or (keys[:, 1] >= sc).any() or (ends > (sz, sy, sx)).any():
        return False
    if int(keys[:, 5:].prod(axis=1).sum()) != st * sc * sz * sy * sx:
        return False
    cover = np.zeros(shape, dtype=np.uint8)
    for t, c, z, y, x, dz, dy, dx in keys.tolist():  # one record's chunks, once per column
        cover[t, c, z : z + dz, y : y + dy, x : x + dx] += 1
    return bool((cover == 1).all())


def decode_uniform(
    arr: pa.StructArray, layout: UniformLayout, out6: np.ndarray, *, what: str
) -> None:
    """Decode a flat record array sharing ``layout`` into ``out6`` ``(N, T, C, Z, Y, X)``."""
    chunks = arr.field("chunks")
    loffs = chunks.offsets.to_numpy()
    inner = _flat_struct(chunks.values.slice(int(loffs[0]), int(loffs[-1] - loffs[0])))
    decode_payloads(inner.field("pixel_bytes"), layout, out6, what=what)


def decode_payloads(
    payloads: pa.Array,
    layout: UniformLayout,
    out6: np.ndarray,
    *,
    what: str,
    rows: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> None:
    """Decode the chunk payloads of records sharing ``layout`` into ``out6`` ``(N, T, C, Z, Y, X)``.

    ``payloads`` is a binary array of the records' ``pixel_bytes``, record
    after record, each record's chunks in the layout's order (``N * k`` items).
    ``rows`` names the records in errors (default: their positions).
    ``order`` (a permutation of ``0..N-1``) decodes record ``order[i]`` into
    ``out6[i]``: the frames are decoded in that order, without a copy of the
    decoded records to put them in order.

    Raises
    ------
    PixelPayloadError
        When a raw chunk holds the wrong number of bytes, or a zstd frame
        does not decode to its chunk (either names the record, or its row
        through ``rows``, and the chunk).
    """
    poffs, data = binary_offsets(payloads)
    n = out6.shape[0]
    k = len(layout.keys)
    if len(poffs) != n * k + 1:
        raise PixelPayloadError(f"{what}: {len(poffs) - 1} chunk payloads for {n} records of {k} chunks each")
    if order is not None and len(order) != n:
        raise ValueError(f"order names {len(order)} records for {n} decoded ones")
    sizes = layout.chunk_bytes()
    if layout.whole_blocks and len(set(sizes.tolist())) == 1:
        target = out6
        block = int(sizes[0])
    else:
        target = np.empty(n * int(sizes.sum()), dtype=np.uint8)
        block = 0
    stored = np.diff(poffs)
    if layout.codec is None:
        expect = np.tile(sizes, n)
        bad = np.flatnonzero(stored != expect)
        if bad.size:
            j = int(bad[0])
            record = f"record {j // k}" if rows is None else f"row {int(rows[j // k])}"
            raise PixelPayloadError(
                f"{what}: {record} chunk {j % k} holds {int(stored[j])} raw bytes, expected {int(expect[j])}"
            )
        src = np.frombuffer(data, dtype=np.uint8)[int(poffs[0]) : int(poffs[-1])]
        flat = target.reshape(-1).view(np.uint8)
        if order is None:
            flat[:] = src
        else:  # records of equal size, back to back: one gather
            np.take(src.reshape(n, -1), order, axis=0, out=flat.reshape(n, -1))
    else:
        starts = poffs[:-1]
        if order is not None:
            frames = (np.asarray(order, dtype=np.int64)[:, None] * k + np.arange(k)).reshape(-1)
            starts, stored = starts[frames], stored[frames]
        try:
            decode_zstd_into(target, data, starts, stored, np.tile(sizes, n), what=what)
        except PixelPayloadError as exc:
            if exc.frame is None:
                raise
            j = int(order[exc.frame // k]) if order is not None else exc.frame // k
            record = f"record {j}" if rows is None else f"row {int(rows[j])}"
            raise PixelPayloadError(
                f"{what}: {record} chunk {exc.frame % k}: a zstd chunk payload does not decode: {exc.__cause__}"
            ) from exc
    if not block:
        scatter_chunks(target, layout, out6)


def scatter_chunks(decoded: np.ndarray, layout: UniformLayout, out6: np.ndarray) -> None:
    """Place records' decoded chunks (back to back, record-major) into ``out6``.

    One assignment per chunk of the layout, covering every record at once.
    """
    n = out6.shape[0]
    sizes = layout.chunk_bytes()
    flat = decoded.reshape(n, -1)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for j, (t, c, z, y, x, dz, dy, dx) in enumerate(layout.keys.tolist()):  # chunks of one record
        part = flat[:, starts[j] : starts[j + 1]].view(layout.dtype).reshape(n, dz, dy, dx)
        out6[:, t, c, z : z + dz, y : y + dy, x : x + dx] = part


def _parts(records: Any) -> list[pa.StructArray] | None:
    if isinstance(records, pa.ChunkedArray):
        return [_flat_struct(c) for c in records.chunks if len(c)]
    if isinstance(records, pa.StructArray):
        return [_flat_struct(records)] if len(records) else []
    return None


def to_numpy_stack(records: Any, *, dims: str = "CYX", dtype: Any = None) -> np.ndarray:
    """Decode records of one shape into a single ``(N, *dims)`` array.

    The fast path handles a column whose records share shape, dtype and
    chunk layout with raw or zstd chunks (every table written by
    :func:`~omeframe.write_table` from a stack): all chunks are decoded in
    one multi-threaded call, without Python work per record. Other records
    are decoded one by one and stacked.

    Parameters
    ----------
    records
        An OME-Arrow column (``StructArray`` / ``ChunkedArray``) or a
        sequence of records.
    dims
        Axes of each image in the output, from ``TCZYX`` (default ``"CYX"``:
        ``(N, C, Y, X)``). Axes left out must have length 1.
    dtype
        Cast the result (default: the stored pixel type).

    Returns
    -------
    numpy.ndarray
        C-contiguous, shape ``(N, *sizes of dims)``.

    Raises
    ------
    ValueError
        When the records differ in shape, or ``dims`` drops an axis longer than 1.
    PixelPayloadError
        When a chunk payload does not decode (names the record).

    Example
    -------
    >>> import numpy as np, omeframe as of
    >>> recs = of.records_from_arrays(list(np.zeros((4, 2, 8, 8), np.uint8)), dim_order="CYX")
    >>> of.to_numpy_stack(recs).shape
    (4, 2, 8, 8)
    """
    d = stack_dims(dims)
    dtype = None if dtype is None else output_dtype(dtype)  # DtypeError for a name numpy does not know
    fast = uniform_stack(records, d)
    if fast is not None:
        return fast if dtype is None else fast.astype(dtype)
    parts = _parts(records)
    for part in parts or []:
        _require_fields(part.type)
    arrays = to_numpy_batch(records)
    return stack_arrays(arrays, d, dtype)


def uniform_stack(records: Any, dims: str | None) -> np.ndarray | None:
    """The fast path of :func:`to_numpy_stack`: ``(N, *dims)``, or ``None`` when it does not apply.

    It applies when the records share shape, dtype and chunk layout, with raw
    or zstd chunks; ``None`` means "decode them one by one" (nothing was decoded).
    ``dims`` is already checked (:func:`stack_dims`); ``None`` returns ``(N, T, C, Z, Y, X)``.
    """
    parts = _parts(records)
    layouts = [uniform_layout(p) for p in parts] if parts is not None else None
    if not parts or layouts is None or not all(layouts):
        return None
    first = layouts[0]
    assert first is not None
    if not all(lay.shape == first.shape and lay.dtype == first.dtype for lay in layouts if lay):
        return None
    total = sum(len(p) for p in parts)
    out6 = np.empty((total, *first.shape), dtype=first.dtype)
    pos = 0
    for p, lay in zip(parts, layouts, strict=True):
        assert lay is not None
        decode_uniform(p, lay, out6[pos : pos + len(p)], what=f"records {pos}..{pos + len(p) - 1}")
        pos += len(p)
    return out6 if dims is None else shape_dims(out6, dims)


def _require_fields(t: pa.DataType) -> None:
    """Raise ``SchemaError`` when a record type lacks what decoding needs."""
    names = {f.name for f in t}
    missing = [f for f in ("pixels_meta",) if f not in names]
    if not missing:
        pm = t.field("pixels_meta").type
        pm_names = {f.name for f in pm} if pa.types.is_struct(pm) else set()
        missing = [f"pixels_meta.{f}" for f in ("type", *(f"size_{a}" for a in "tczyx")) if f not in pm_names]
    if not missing and "chunks" not in names and "planes" not in names:
        missing = ["chunks"]
    if missing:
        raise SchemaError(
            f"the records lack field(s) {', '.join(missing)} that decoding needs; the table "
            "is damaged or not OME-Arrow"
        )


def stack_arrays(arrays: Sequence[np.ndarray], dims: str, dtype: Any = None) -> np.ndarray:
    """Stack decoded TCZYX arrays of one shape into ``(N, *dims)``."""
    if not arrays:
        raise ValueError("no records to stack")
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != shape:
            raise ValueError(
                f"records differ in shape: record 0 is {shape} (TCZYX) but record {i} is "
                f"{a.shape}; crop or pad them to one shape, or decode them one by one with "
                "to_numpy_batch"
            )
    out6 = np.stack(arrays)
    res = shape_dims(out6, dims)
    return res if dtype is None else res.astype(dtype)
