"""Decode OME-Arrow records into numpy arrays.

A record's chunks (or planes) become :class:`~omeframe.engine.pieces.Pieces`;
every read goes through :func:`~omeframe.engine.executor.assemble`, which
decodes only the pieces a selection touches and copies each straight into one
preallocated output.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.engine import threads as _threads
from omeframe.engine.codec import decode_payload, fit_length
from omeframe.engine.executor import assemble, clamp_cast
from omeframe.engine.limits import check_alloc, get_max_bytes
from omeframe.engine.pieces import Pieces, make_pieces
from omeframe.model.dtypes import to_numpy_dtype
from omeframe.model.errors import DtypeError, MissingChunksWarning, PixelPayloadError, SchemaError
from omeframe.model.record import RecordView, chunk_tiling
from omeframe.model.selection import Selection

__all__ = ["to_numpy", "to_numpy_batch", "plane_from_chunks", "to_dict", "read_region", "record_source"]


def _check_pieces(
    name: str, shape: tuple[int, int, int, int, int], origins: np.ndarray, extents: np.ndarray, field: str
) -> None:
    """Raise unless the pieces lie inside the image without overlapping; warn when some are missing.

    Missing chunks/planes read as 0 (sparse records are valid OME-Arrow and
    ``fill_missing=False`` turns them into an error); the warning makes a
    damaged chunk list visible instead of silently zero-filled.
    """
    missing = chunk_tiling(shape, origins, extents, label=f"{name} {field}")
    if not missing:
        return
    total = int(np.prod(np.asarray(shape, dtype=object)))
    msg = (
        f"{name}: its {field} cover {total - missing} of the image's {total} pixels "
        f"(TCZYX={shape}); {missing} pixels have no stored {field[:-1]}"
    )
    warnings.warn(
        msg + "; they read as 0 (pass fill_missing=False to make this an error)", MissingChunksWarning, stacklevel=4
    )


def _check_chunk_dtypes(name: str, native: np.dtype[Any], dts: Sequence[np.dtype[Any]]) -> None:
    """Raise when a chunk's ``dtype`` is not the record's ``pixels_meta.type``."""
    for i, d in enumerate(dts):
        if d != native:
            raise PixelPayloadError(
                f"{name}: chunks[{i}].dtype is {d.name!r} but pixels_meta.type says {native.name!r}; "
                "the record is inconsistent (its pixels would be reinterpreted)"
            )


def record_source(view: RecordView) -> Pieces:
    """Return the chunk (or plane) pieces of a record as :class:`~omeframe.engine.pieces.Pieces`.

    The chunks (or planes) must lie inside the image without overlapping:
    out-of-bounds, non-positive or overlapping chunks and chunk dtypes other
    than ``pixels_meta.type`` raise ``PixelPayloadError``; missing chunks read
    as 0 with a :class:`~omeframe.model.errors.MissingChunksWarning`.
    """
    shape = view.shape
    name = f"record {view.header('id')!r}"
    try:
        native = view.dtype
    except DtypeError as exc:
        raise DtypeError(f"{name}: pixels_meta.type: {exc}") from exc
    ct = view.chunks
    if ct is not None:
        ext = ct.extents
        _check_pieces(name, shape, ct.origins, ext, "chunks")
        sizes = np.diff(ct.offsets) * ct.offset_unit
        if ct.kind == "bytes":
            dts = [to_numpy_dtype(d) if d else native for d in ct.dtypes or []]
            _check_chunk_dtypes(name, native, dts)
            comps = ct.compressions or []

            def decode_bytes(i: int, strict: bool) -> np.ndarray:
                count = int(ext[i, 0] * ext[i, 1] * ext[i, 2])
                return decode_payload(
                    ct.payload(i), comps[i], dts[i], count, label=f"chunks[{i}]", strict=strict
                )

            compressed = any(c not in (None, "", "none") for c in comps)
            return make_pieces(
                shape, native, ct.origins, ext, decode_bytes, sizes, compressed, name + " (byte chunks)"
            )

        def decode_list(i: int, strict: bool) -> np.ndarray:
            count = int(ext[i, 0] * ext[i, 1] * ext[i, 2])
            flat = ct.payload(i)
            if flat.size != count:
                if strict:
                    raise PixelPayloadError(
                        f"chunks[{i}].pixels has {flat.size} values, expected {count}; "
                        "pass strict=False to pad/truncate"
                    )
                flat = fit_length(flat, count)
            return flat

        return make_pieces(shape, native, ct.origins, ext, decode_list, sizes, False, name + " (list chunks)")

    pt = view.planes
    if pt is None:
        raise SchemaError("record has neither chunks nor planes: no pixels to read")
    n = len(pt)
    origins = np.zeros((n, 5), dtype=np.int64)
    origins[:, :3] = pt.tcz
    extents = np.empty((n, 3), dtype=np.int64)
    extents[:] = (1, shape[3], shape[4])
    _check_pieces(name, shape, origins, extents, "planes")
    count = shape[3] * shape[4]

    def decode_plane(i: int, strict: bool) -> np.ndarray:
        flat = pt.payload(i)
        if flat.size != count:
            if strict:
                raise PixelPayloadError(
                    f"planes[{i}].pixels has {flat.size} values, expected size_y*size_x "
                    f"= {count}; pass strict=False to pad/truncate"
                )
            flat = fit_length(flat, count)
        return flat

    sizes = np.diff(pt.offsets) * pt.values.dtype.itemsize
    return make_pieces(shape, native, origins, extents, decode_plane, sizes, False, name + " (planes)")


def read_region(
    data: Any,
    *,
    t: Sequence[int] | None = None,
    c: Sequence[int] | None = None,
    z: Sequence[int] | None = None,
    y: tuple[int, int] | None = None,
    x: tuple[int, int] | None = None,
    dtype: Any = None,
    clamp: bool = False,
    strict: bool = True,
    fill_missing: bool = True,
) -> np.ndarray:
    """Read a TCZYX region of a record into a new array.

    ``t``/``c``/``z`` are index lists (``None`` = all; order and repeats are
    kept, like numpy fancy indexing); ``y``/``x`` are half-open ranges.
    Regions that no chunk covers are zero when ``fill_missing`` is true and an
    error otherwise.
    """
    view = data if isinstance(data, RecordView) else RecordView(data)
    src = record_source(view)
    sel = Selection.of(t=t, c=c, z=z, y=y, x=x).resolve(view.shape)
    return assemble(src, sel, dtype=dtype, clamp=clamp, strict=strict, fill_missing=fill_missing)


def to_numpy(data: Any, dtype: Any = None, strict: bool = True, clamp: bool = False) -> np.ndarray:
    """Decode a record into a dense ``(T, C, Z, Y, X)`` array.

    Parameters
    ----------
    data
        Record as ``pa.StructScalar``, one-row ``StructArray`` or dict.
    dtype
        Output dtype; ``None`` (default) keeps the native dtype of the record.
    strict
        Raise when a chunk or plane holds the wrong number of pixels; when
        false, such payloads are truncated or zero-padded.
    clamp
        Clip values into the range of ``dtype`` before casting.
    """
    return read_region(data, dtype=dtype, strict=strict, clamp=clamp)


def plane_from_chunks(
    data: Any,
    *,
    t: int,
    c: int,
    z: int,
    dtype: Any = None,
    strict: bool = True,
    clamp: bool = False,
) -> np.ndarray:
    """Decode the single ``(t, c, z)`` plane as a ``(Y, X)`` array.

    Only the chunks that hold the plane are decoded.
    """
    return read_region(data, t=[t], c=[c], z=[z], dtype=dtype, strict=strict, clamp=clamp)[0, 0, 0]


def to_dict(data: Any) -> dict[str, Any]:
    """Return the record as plain Python objects (pixel payloads as bytes/lists)."""
    return RecordView(data).scalar.as_py()


def _flat_struct(arr: pa.Array) -> pa.StructArray:
    """``arr`` with offset 0 so ``.field()`` children line up with its rows."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pa.StructArray.from_arrays(arr.flatten(), fields=list(arr.type)) if arr.offset else arr


def _dict_codes(col: pa.Array) -> tuple[np.ndarray, list[Any]]:
    """Per-row codes into a small list of distinct values (strings, nulls allowed)."""
    enc = col.dictionary_encode()
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, enc.dictionary.to_pylist()


#: Fields the batch path reads from ``pixels_meta`` and from each chunk entry.
_SIZE_FIELDS = frozenset({"size_t", "size_c", "size_z", "size_y", "size_x", "type"})
_CHUNK_FIELDS = frozenset({"t", "c", "z", "y", "x", "shape_z", "shape_y", "shape_x", "pixel_bytes"})


def _batch_byte_variant(
    arr: pa.StructArray, dtype: Any, strict: bool, clamp: bool
) -> list[np.ndarray | None]:
    """Decode every byte-variant record of ``arr``; ``None`` where another path is needed."""
    n = len(arr)
    out: list[np.ndarray | None] = [None] * n
    pm = arr.field("pixels_meta")
    if pm.null_count or arr.null_count or not _SIZE_FIELDS <= {f.name for f in pm.type}:
        return out  # the record path decodes them, or names what is missing
    sizes = np.stack(
        [
            pm.field(k).to_numpy(zero_copy_only=False).astype(np.int64)
            for k in ("size_t", "size_c", "size_z", "size_y", "size_x")
        ],
        axis=1,
    )
    tcodes, tnames = _dict_codes(pm.field("type"))
    natives = []
    for k, t in enumerate(tnames):
        try:
            natives.append(to_numpy_dtype(t) if t else np.dtype("uint16"))
        except DtypeError as exc:
            i = int(np.flatnonzero(tcodes == k)[0])
            raise DtypeError(f"record {i}: pixels_meta.type: {exc}") from exc
    lst = arr.field("chunks")
    counts = lst.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    loffs = lst.offsets.to_numpy().astype(np.int64)
    # A sliced list array's offsets index into its whole child: cut the child
    # to the covered range and rebase the offsets onto it.
    inner = _flat_struct(lst.values.slice(int(loffs[0]), int(loffs[-1] - loffs[0])))
    loffs = loffs - loffs[0]
    names = set(inner.type.names) if hasattr(inner.type, "names") else {f.name for f in inner.type}
    if not _CHUNK_FIELDS <= names:
        return out  # the record path names the missing field
    keys = np.stack(
        [
            inner.field(k).to_numpy(zero_copy_only=False).astype(np.int64)
            for k in ("t", "c", "z", "y", "x", "shape_z", "shape_y", "shape_x")
        ],
        axis=1,
    )
    pb = inner.field("pixel_bytes")
    if not pa.types.is_large_binary(pb.type):
        pb = pb.cast(pa.large_binary())
    if pb.null_count:
        return out
    bufs = pb.buffers()
    poffs = np.frombuffer(bufs[1], dtype=np.int64)[pb.offset : pb.offset + len(pb) + 1]
    data = memoryview(bufs[2] if bufs[2] is not None else b"")
    ccodes, cnames = _dict_codes(inner.field("compression")) if "compression" in names else (
        np.full(len(inner), -1, dtype=np.int64), [])
    dcodes, dnames = _dict_codes(inner.field("dtype")) if "dtype" in names else (
        np.full(len(inner), -1, dtype=np.int64), [])
    chunk_dtypes = [to_numpy_dtype(d) if d else None for d in dnames]
    # Which rows this path handles: ones with chunks and chunks inside the image.
    rec = np.repeat(np.arange(n, dtype=np.int64), counts)
    first = loffs[:-1]
    ok = counts > 0
    if keys.size:
        s = sizes[rec]
        bad = (
            (keys[:, :5] < 0).any(axis=1)
            | (keys[:, 5:] <= 0).any(axis=1)
            | (keys[:, 0] >= s[:, 0])
            | (keys[:, 1] >= s[:, 1])
            | (keys[:, 2] + keys[:, 5] > s[:, 2])
            | (keys[:, 3] + keys[:, 6] > s[:, 3])
            | (keys[:, 4] + keys[:, 7] > s[:, 4])
        )
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise PixelPayloadError(
                f"record {int(rec[j])}: chunks[{j - int(first[rec[j]])}] at TCZYX origin "
                f"{tuple(int(v) for v in keys[j, :5])} with ZYX shape {tuple(int(v) for v in keys[j, 5:])} "
                f"lies outside the image TCZYX={tuple(int(v) for v in sizes[rec[j]])}"
            )
    out_dtype = None if dtype is None else to_numpy_dtype(dtype)
    if keys.size:
        _check_batch_chunks(sizes, keys, rec, first, counts, tcodes, natives, dcodes, chunk_dtypes)
    _check_batch_alloc(sizes, tcodes, natives, ok, out_dtype)
    for i in np.flatnonzero(ok).tolist():
        nat = natives[tcodes[i]] if tcodes[i] >= 0 else np.dtype("uint16")
        out[i] = np.zeros(tuple(int(v) for v in sizes[i]), dtype=out_dtype or nat)

    def run(lo: int, hi: int) -> None:
        for j in range(lo, hi):
            i = int(rec[j])
            target = out[i]
            t, c, z, y, x, dz, dy, dx = (int(v) for v in keys[j])
            dt = chunk_dtypes[dcodes[j]] if dcodes[j] >= 0 and chunk_dtypes[dcodes[j]] is not None else (
                natives[tcodes[i]] if tcodes[i] >= 0 else np.dtype("uint16"))
            comp = cnames[ccodes[j]] if ccodes[j] >= 0 else None
            flat = decode_payload(
                data[int(poffs[j]) : int(poffs[j + 1])], comp, dt, dz * dy * dx,
                label=f"record {i} chunks[{j - int(first[i])}]", strict=strict,
            )
            block = flat.reshape(dz, dy, dx)
            if clamp and block.dtype != target.dtype:  # type: ignore[union-attr]
                block = clamp_cast(block, target.dtype)  # type: ignore[union-attr]
            target[t, c, z : z + dz, y : y + dy, x : x + dx] = block  # type: ignore[index]

    total = len(keys)
    stored = int(poffs[-1] - poffs[0]) if total else 0
    if total > 1 and stored >= (4 << 20) and _threads.can_parallelize():
        k = _threads.num_threads() * 4
        bounds = np.linspace(0, total, k + 1).astype(int)
        for fut in [_threads.pool().submit(run, int(a), int(b)) for a, b in pairwise(bounds)]:
            fut.result()
    else:
        run(0, total)
    return out


def _check_batch_alloc(
    sizes: np.ndarray, tcodes: np.ndarray, natives: list[np.dtype[Any]], ok: np.ndarray, out_dtype: np.dtype[Any] | None
) -> None:
    """Refuse (``ResourceLimitError``) outputs larger than the memory limit, before allocating any."""
    if not ok.any():
        return
    item = np.array([d.itemsize for d in natives] + [2], dtype=np.float64)[tcodes]
    if out_dtype is not None:
        item[:] = out_dtype.itemsize
    need = np.prod(sizes.astype(np.float64), axis=1) * item
    need[~ok] = 0
    limit = get_max_bytes()
    if need.max() > limit:
        i = int(np.argmax(need))
        check_alloc(int(need[i]), f"record {i} (TCZYX={tuple(int(v) for v in sizes[i])})")
    check_alloc(int(need.sum()), f"the {int(ok.sum())} decoded records of the batch")


def _check_batch_chunks(
    sizes: np.ndarray,
    keys: np.ndarray,
    rec: np.ndarray,
    first: np.ndarray,
    counts: np.ndarray,
    tcodes: np.ndarray,
    natives: list[np.dtype[Any]],
    dcodes: np.ndarray,
    chunk_dtypes: list[np.dtype[Any] | None],
) -> None:
    """Validate every record's chunk list at once (numpy over the chunk keys, no per-chunk Python).

    Chunk dtypes must be the record's ``pixels_meta.type``; chunks must not
    overlap (records whose chunks form a regular grid are checked together,
    any other layout record by record); records whose chunks leave pixels
    uncovered are reported by one :class:`MissingChunksWarning`.
    """
    n = len(sizes)
    # chunk dtype == pixels_meta.type
    if len(chunk_dtypes):
        nat_codes = np.where(tcodes >= 0, tcodes, len(natives))
        nats = [*natives, np.dtype("uint16")]
        clash = np.array(
            [[d is not None and d != nd for nd in nats] for d in chunk_dtypes], dtype=bool
        ).reshape(len(chunk_dtypes), len(nats))
        has = dcodes >= 0
        bad = np.zeros(len(keys), dtype=bool)
        bad[has] = clash[dcodes[has], nat_codes[rec[has]]]
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            i = int(rec[j])
            raise PixelPayloadError(
                f"record {i}: chunks[{j - int(first[i])}].dtype is {chunk_dtypes[dcodes[j]]!s} but "
                f"pixels_meta.type says {nats[nat_codes[i]]!s}; the record is inconsistent "
                "(its pixels would be reinterpreted)"
            )
    with_chunks = np.flatnonzero(counts > 0)
    ext = keys[:, 5:]
    cs = np.maximum.reduceat(ext, first[with_chunks], axis=0)
    slot = np.zeros(n, dtype=np.int64)
    slot[with_chunks] = np.arange(with_chunks.size)
    cs_chunk = cs[slot[rec]]
    s = sizes[rec]
    aligned = ((keys[:, 2:5] % cs_chunk) == 0).all(axis=1) & (
        ext == np.minimum(cs_chunk, s[:, 2:] - keys[:, 2:5])
    ).all(axis=1)
    regular = np.bincount(rec, weights=~aligned, minlength=n) == 0
    missing = np.zeros(n, dtype=np.float64)
    reg_chunk = regular[rec]
    if reg_chunk.any():
        cell = np.concatenate([rec[:, None], keys[:, :2], keys[:, 2:5] // cs_chunk], axis=1)[reg_chunk]
        order = np.lexsort(cell.T[::-1])
        same = (cell[order[1:]] == cell[order[:-1]]).all(axis=1)
        if same.any():
            k = int(np.flatnonzero(same)[0])
            ja, jb = (int(v) for v in np.flatnonzero(reg_chunk)[order[k : k + 2]])
            i = int(rec[ja])
            raise PixelPayloadError(
                f"record {i}: chunks[{ja - int(first[i])}] and chunks[{jb - int(first[i])}] both cover "
                f"TCZYX origin {tuple(int(v) for v in keys[ja, :5])}; the chunk list is damaged"
            )
        vol = np.prod(ext.astype(np.float64), axis=1)
        missing = np.prod(sizes.astype(np.float64), axis=1) - np.bincount(rec, weights=vol, minlength=n)
        missing[~regular] = 0
    for i in with_chunks[~regular[with_chunks]].tolist():  # irregular layouts only
        lo, hi = int(first[i]), int(first[i]) + int(counts[i])
        shape = tuple(int(v) for v in sizes[i])
        missing[i] = chunk_tiling(shape, keys[lo:hi, :5], ext[lo:hi], label=f"record {i}")  # type: ignore[arg-type]
    missing[counts == 0] = 0
    if (missing > 0).any():
        idx = np.flatnonzero(missing > 0)
        warnings.warn(
            f"{idx.size} record(s) store chunks that do not cover the whole image (record "
            f"{int(idx[0])}: {int(missing[idx[0]])} pixels uncovered); the missing pixels read as 0",
            MissingChunksWarning,
            stacklevel=4,
        )


def to_numpy_batch(
    records: Any, dtype: Any = None, strict: bool = True, clamp: bool = False
) -> list[np.ndarray]:
    """Decode many records (e.g. a table's OME-Arrow column) into TCZYX arrays.

    One pass over all the records' chunks: far less per-record overhead than
    calling :func:`to_numpy` in a loop (tens of thousands of cell crops decode
    in well under a second). Records the fast path cannot take (list
    variant, planes only) are decoded one by one with :func:`to_numpy`.

    Parameters
    ----------
    records
        A ``StructArray`` / ``ChunkedArray`` of records (``table["ome_arrow"]``),
        or a sequence of records.
    dtype, strict, clamp
        As in :func:`to_numpy`.
    """
    if isinstance(records, pa.ChunkedArray):
        parts = records.chunks
    elif isinstance(records, pa.Array):
        parts = [records]
    elif isinstance(records, (str, bytes, dict)) or not isinstance(records, Iterable):
        raise TypeError(
            "records must be OME-Arrow records: a StructArray or ChunkedArray (e.g. table['ome_arrow']) "
            f"or a sequence of records, got {type(records).__name__}"
        )
    else:
        return [to_numpy(r, dtype=dtype, strict=strict, clamp=clamp) for r in records]
    result: list[np.ndarray] = []
    for part in parts:
        arr = _flat_struct(part)
        fields = {f.name for f in arr.type}
        fast: list[np.ndarray | None] = [None] * len(arr)
        if {"pixels_meta", "chunks"} <= fields:
            fast = _batch_byte_variant(arr, dtype, strict, clamp)
        for i, a in enumerate(fast):
            result.append(a if a is not None else to_numpy(arr[i], dtype=dtype, strict=strict, clamp=clamp))
    return result
