"""Column kernels over OME-Arrow records: the engine behind the SQL functions
and the Polars ``.ome`` namespace.

Every kernel takes a column of records (``pa.StructArray`` or
``pa.ChunkedArray``, either struct variant, legacy layouts with fields in
another order, ``list<int64>`` pixels, large/view string and binary types)
and returns one Arrow array with one value per row. Null records, and null
arguments, give null results.

* Header kernels (:func:`shape`, :func:`dtype`, :func:`sizes`,
  :func:`channel_names`) are pure Arrow compute on struct fields: no Python
  loop over rows.
* :func:`stats` decodes only the chunks of the requested channel (a loop
  over chunks, decoded by :mod:`omeframe.engine.codec`) and reduces them with segmented
  numpy reductions in cache-sized groups: no Python loop over pixels, exact
  sums for integer data up to 16 bits.
* :func:`crop` reads each row's region (only the chunks it touches) and
  builds every new record in one Arrow build; :func:`crop_bbox` takes the
  region from a shape table's ``bbox`` column.
* :func:`thumbnail` renders PNG bytes of the middle Z plane, all channels.
* :func:`chunk_values` / :func:`chunk_stats` decode single chunk payloads
  (a dataset's chunks table, or a record's unnested ``chunks``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omeframe.engine.codec import decode_payload
from omeframe.formats.dataset.inputs import header_from_record
from omeframe.formats.record.builder import RecordBuilder
from omeframe.formats.record.decode import read_region
from omeframe.formats.record.files import as_record_array
from omeframe.model.dtypes import to_numpy_dtype
from omeframe.model.errors import PixelPayloadError, SchemaError
from omeframe.model.header import select_channels
from omeframe.model.record import RecordView, looks_like_record_type
from omeframe.ops.thumbnail import composite_rgb, downsample_cyx

__all__ = [
    "STATS_TYPE",
    "SIZES_TYPE",
    "record_array",
    "shape",
    "dtype",
    "sizes",
    "channel_names",
    "stats",
    "crop",
    "crop_bbox",
    "thumbnail",
    "to_numpy",
    "chunk_values",
    "chunk_stats",
]

#: Result type of :func:`stats` and :func:`chunk_stats`.
STATS_TYPE = pa.struct(
    [
        pa.field("min", pa.float64()),
        pa.field("max", pa.float64()),
        pa.field("mean", pa.float64()),
        pa.field("std", pa.float64()),
    ]
)
#: Result type of :func:`sizes`.
SIZES_TYPE = pa.struct([pa.field(k, pa.int32()) for k in ("t", "c", "z", "y", "x")])

_SIZE_KEYS = ("size_t", "size_c", "size_z", "size_y", "size_x")
# Elements reduced per numpy pass: float64 temporaries stay in cache (fresh
# multi-MiB temporaries cost more in page faults than the arithmetic).
_GROUP_ELEMENTS = 1 << 16
# Longest segment one reduction covers (bigger pieces are cut): keeps the
# float64 sums of 16-bit integer data exact.
_PIECE = 1 << 16


# --------------------------------------------------------------------------
# input normalisation
def record_array(records: Any) -> pa.StructArray:
    """Return ``records`` as one ``pa.StructArray`` of OME-Arrow records.

    Accepts a ``StructArray``, a ``ChunkedArray``, a ``StructScalar`` or a
    sequence of records. Raises ``SchemaError`` when the struct lacks the
    OME-Arrow fields.
    """
    if isinstance(records, pa.ChunkedArray):
        if records.num_chunks == 1:
            arr = records.chunk(0)
        elif records.num_chunks == 0:
            arr = pa.array([], type=records.type)
        else:
            arr = records.combine_chunks()
    elif isinstance(records, pa.Array):
        arr = records
    elif isinstance(records, pa.StructScalar):
        arr = pa.repeat(records, 1)
    elif isinstance(records, Sequence) and not isinstance(records, (str, bytes)):
        return record_array(as_record_array(list(records)))
    else:
        raise TypeError(
            f"expected a column of OME-Arrow records (pyarrow StructArray or ChunkedArray), "
            f"got {type(records).__name__}"
        )
    if pa.types.is_null(arr.type):  # an all-null column without a struct type
        return arr
    if not looks_like_record_type(arr.type):
        raise SchemaError(
            "the column does not hold OME-Arrow records: its type lacks the fields "
            f"type, version, id, name, pixels_meta and chunks/planes; got {arr.type}"
        )
    return arr


def _valid(arr: pa.Array) -> np.ndarray:
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), dtype=bool)
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _has_path(t: pa.DataType, path: Sequence[str]) -> bool:
    for name in path:
        if not pa.types.is_struct(t) or t.get_field_index(name) < 0:
            return False
        t = t.field(name).type
    return True


def _get(arr: pa.Array, *path: str) -> pa.Array | None:
    """Nested struct field (parent nulls propagate), ``None`` when absent."""
    if pa.types.is_null(arr.type) or not _has_path(arr.type, path):
        return None
    return pc.struct_field(arr, list(path))


def _broadcast(value: Any, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A scalar or per-row argument as ``(int64 values, valid mask)`` of length n."""
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks() if value.num_chunks else pa.array([], pa.int64())
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    if isinstance(value, pa.Array):
        if len(value) == 1 and n != 1:
            value = pa.repeat(value[0], n) if value[0].is_valid else pa.nulls(n, pa.int64())
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} values for {n} records")
        if pa.types.is_null(value.type):
            return np.zeros(n, np.int64), np.zeros(n, bool)
        if not (pa.types.is_integer(value.type) or pa.types.is_floating(value.type)):
            raise TypeError(f"{name} must be an integer, got {value.type}")
        ok = _valid(value)
        vals = value.fill_null(0).to_numpy(zero_copy_only=False)
        if vals.dtype.kind == "f":
            if not np.all(np.isfinite(vals[ok])) or np.any(vals[ok] != np.round(vals[ok])):
                raise TypeError(f"{name} must hold whole numbers")
        return vals.astype(np.int64), ok
    if value is None:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    return np.full(n, int(value), np.int64), np.ones(n, bool)


def _sizes_np(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 5)`` int64 TCZYX sizes and the rows whose sizes are all present."""
    n = len(arr)
    out = np.zeros((n, 5), dtype=np.int64)
    ok = _valid(arr)
    for j, key in enumerate(_SIZE_KEYS):
        col = _get(arr, "pixels_meta", key)
        if col is None:
            return out, np.zeros(n, bool)
        ok &= _valid(col)
        out[:, j] = col.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    ok &= (out > 0).all(axis=1)
    return out, ok


def _mask(ok: np.ndarray) -> pa.Array | None:
    return None if ok.all() else pa.array(~ok)


# --------------------------------------------------------------------------
# header kernels (pure Arrow compute)
def sizes(records: Any) -> pa.StructArray:
    """``{t, c, z, y, x}`` int32 sizes of each record (null for null records)."""
    arr = record_array(records)
    sz, ok = _sizes_np(arr)
    cols = [pa.array(sz[:, j].astype(np.int32)) for j in range(5)]
    return pa.StructArray.from_arrays(cols, fields=list(SIZES_TYPE), mask=_mask(ok))


def shape(records: Any) -> pa.ListArray:
    """``[T, C, Z, Y, X]`` (``list<int32>``) of each record."""
    arr = record_array(records)
    sz, ok = _sizes_np(arr)
    n = len(sz)
    offsets = pa.array(np.arange(0, 5 * n + 1, 5, dtype=np.int32))
    values = pa.array(sz.astype(np.int32).reshape(-1))
    return pa.ListArray.from_arrays(offsets, values, mask=_mask(ok))


def _dtype_names(arr: pa.Array) -> pa.Array:
    """Canonical dtype names per row (``uint16`` when unset), null for null rows."""
    n = len(arr)
    ok = _valid(arr)
    col = _get(arr, "pixels_meta", "type")
    if col is None:
        out = pa.repeat(pa.scalar("uint16"), n)
    else:
        enc = pc.dictionary_encode(col.cast(pa.string()) if col.type != pa.string() else col)
        canon = []
        for name in enc.dictionary.to_pylist():  # the distinct names only
            try:
                canon.append(to_numpy_dtype(name).name if name else "uint16")
            except Exception:  # noqa: BLE001 - unknown names are reported as they are
                canon.append(name)
        lookup = pa.array(canon + ["uint16"], pa.string())  # the last entry: unset
        out = lookup.take(enc.indices.fill_null(len(canon)))
    if not ok.all():
        out = pc.if_else(pa.array(ok), out, pa.scalar(None, pa.string()))
    return out


def dtype(records: Any) -> pa.StringArray:
    """Native pixel dtype name of each record (``pixels_meta.type``, canonical)."""
    return _dtype_names(record_array(records))


def channel_names(records: Any) -> pa.ListArray:
    """Channel names (``list<string>``) of each record."""
    arr = record_array(records)
    n = len(arr)
    ok = _valid(arr)
    chans = _get(arr, "pixels_meta", "channels")
    if chans is None:
        return pa.ListArray.from_arrays(
            pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string()), mask=_mask(np.zeros(n, bool))
        )
    if isinstance(chans, pa.ChunkedArray):  # pragma: no cover - defensive
        chans = chans.combine_chunks()
    lengths = pc.list_value_length(chans).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = pc.list_flatten(chans)
    names = (
        pc.struct_field(flat, ["name"]).cast(pa.string())
        if _has_path(flat.type, ["name"])
        else pa.nulls(len(flat), pa.string())
    )
    ok &= _valid(chans)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), names, mask=_mask(ok))


# --------------------------------------------------------------------------
# payload decoding
def _codec_name(comp: Any) -> str | None:
    """Lower-case codec name, ``None`` for raw payloads."""
    if comp is None:
        return None
    name = str(comp).strip().lower()
    return None if name in ("", "none", "null", "raw", "uncompressed", "false") else name


def _decode(payload: Any, comp: str | None, dt: np.dtype[Any], count: int, label: str) -> np.ndarray:
    """Decode one chunk payload into ``count`` values (the codec module's fast zstd path)."""
    return decode_payload(payload, _codec_name(comp), dt, count, label=label)


# --------------------------------------------------------------------------
# chunk columns
class _Chunks:
    """The ``chunks`` entries of a record column, flattened (one entry per chunk)."""

    def __init__(self, arr: pa.Array) -> None:
        n = len(arr)
        self.kind: str | None = None
        self.row_start = np.zeros(n, np.int64)
        self.row_end = np.zeros(n, np.int64)
        lst = _get(arr, "chunks")
        if lst is None or pa.types.is_null(lst.type):
            return
        ok = _valid(lst)
        offs = lst.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        self.row_start = np.where(ok, offs[:-1], 0)
        self.row_end = np.where(ok, offs[1:], 0)
        vals = lst.values
        names = [vals.type.field(i).name for i in range(vals.type.num_fields)]
        need = ("c", "shape_z", "shape_y", "shape_x")
        if any(k not in names for k in need):
            raise SchemaError(f"chunk entries lack one of the fields {need}: {vals.type}")
        self.c = self._ints(vals, "c")
        self.count = self._ints(vals, "shape_z") * self._ints(vals, "shape_y") * self._ints(vals, "shape_x")
        if "pixel_bytes" in names:
            self.kind = "bytes"
            pb = pc.struct_field(vals, ["pixel_bytes"])
            if not pa.types.is_large_binary(pb.type):
                pb = pb.cast(pa.large_binary())
            bufs = pb.buffers()
            self.offsets = np.frombuffer(bufs[1], dtype=np.int64)[pb.offset : pb.offset + len(pb) + 1]
            self.data = bufs[2] if bufs[2] is not None else pa.py_buffer(b"")
            self.payload_ok = _valid(pb)
            self.dtype_idx, self.dtype_names = self._dict(vals, "dtype", names)
            self.comp_idx, self.comp_names = self._dict(vals, "compression", names)
        elif "pixels" in names:
            self.kind = "list"
            px = pc.struct_field(vals, ["pixels"])
            if not (pa.types.is_list(px.type) or pa.types.is_large_list(px.type)):
                raise SchemaError(f"chunks[].pixels must be a list, got {px.type}")
            self.offsets = px.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
            self.values = px.values.to_numpy(zero_copy_only=False)
            self.payload_ok = _valid(px)
        else:
            raise SchemaError("chunk entries carry neither pixel_bytes nor pixels")

    @staticmethod
    def _ints(vals: pa.StructArray, name: str) -> np.ndarray:
        return pc.struct_field(vals, [name]).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)

    @staticmethod
    def _dict(vals: pa.StructArray, name: str, names: list[str]) -> tuple[np.ndarray, list[Any]]:
        if name not in names:
            return np.full(len(vals), -1, np.int64), []
        col = pc.struct_field(vals, [name])
        if pa.types.is_null(col.type):
            return np.full(len(vals), -1, np.int64), []
        enc = pc.dictionary_encode(col.cast(pa.string()))
        idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return idx, enc.dictionary.to_pylist()

    def decode_many(self, entries: np.ndarray, natives: list[np.dtype[Any]]) -> list[np.ndarray]:
        """Flat values of the chunk entries (stored dtype for the list variant)."""
        bad = ~self.payload_ok[entries]
        if bad.any():
            raise PixelPayloadError(f"chunk entry {int(entries[bad][0])} has a null payload")
        counts = self.count[entries].tolist()
        out: list[np.ndarray] = []
        if self.kind == "list":
            offs = self.offsets
            for i, count in zip(entries.tolist(), counts, strict=True):
                flat = self.values[offs[i] : offs[i + 1]]
                if flat.size != count:
                    raise PixelPayloadError(
                        f"chunks[{i}].pixels has {flat.size} values, expected {count}"
                    )
                out.append(flat)
            return out
        dts = [to_numpy_dtype(d) if d else None for d in self.dtype_names]
        comps = [_codec_name(c) for c in self.comp_names]
        d_idx = self.dtype_idx[entries].tolist()
        c_idx = self.comp_idx[entries].tolist()
        lo = self.offsets[entries].tolist()
        hi = self.offsets[entries + 1].tolist()
        mv = memoryview(self.data)
        for k, i in enumerate(entries.tolist()):
            di, ci = d_idx[k], c_idx[k]
            dt = dts[di] if di >= 0 and dts[di] is not None else natives[k]
            payload = mv[lo[k] : hi[k]]
            count = counts[k]
            comp = comps[ci] if ci >= 0 else None
            if comp is None and payload.nbytes == count * dt.itemsize:
                out.append(np.frombuffer(payload, dtype=dt))  # raw: zero-copy view
            else:
                out.append(_decode(payload, comp, dt, count, f"chunks[{i}]"))
        return out


# --------------------------------------------------------------------------
# segmented statistics
def _group_moments(x: np.ndarray, sizes_: np.ndarray, exact_int: bool) -> tuple[np.ndarray, ...]:
    """``(min, max, mean, m2)`` of consecutive segments of ``x`` (float64)."""
    k = sizes_.size
    uniform = k > 1 and bool((sizes_ == sizes_[0]).all())
    if uniform or k == 1:
        x2 = x.reshape(k, -1)
        mn = x2.min(axis=1).astype(np.float64)
        mx = x2.max(axis=1).astype(np.float64)
        xd = x2.astype(np.float64)
        s1 = xd.sum(axis=1)
        if exact_int:
            s2 = np.einsum("ij,ij->i", xd, xd)
        else:
            mean = s1 / sizes_
            xd -= mean[:, None]
            return mn, mx, mean, np.einsum("ij,ij->i", xd, xd)
    else:
        starts = np.zeros(k, dtype=np.int64)
        np.cumsum(sizes_[:-1], out=starts[1:])
        mn = np.minimum.reduceat(x, starts).astype(np.float64)
        mx = np.maximum.reduceat(x, starts).astype(np.float64)
        xd = x.astype(np.float64)
        s1 = np.add.reduceat(xd, starts)
        if exact_int:
            s2 = np.add.reduceat(xd * xd, starts)
        else:
            mean = s1 / sizes_
            xd -= np.repeat(mean, sizes_)
            xd *= xd
            return mn, mx, mean, np.add.reduceat(xd, starts)
    # Integer data of at most 16 bits in segments of at most _PIECE elements:
    # the float64 sums s1, s2 are exact integers. With s1 = q*n + r the centred
    # sum of squares s2 - s1**2/n is (s2 - q*q*n - 2*q*r) - r*r/n: exact
    # integer terms and a fraction below n, so no cancellation.
    q = np.floor(s1 / sizes_)
    r = s1 - q * sizes_
    m2 = (s2 - q * q * sizes_ - 2 * q * r) - r * r / sizes_
    return mn, mx, s1 / sizes_, m2


def _segment_stats(pieces: list[np.ndarray], owner: np.ndarray, n_rows: int) -> tuple[np.ndarray, ...]:
    """Per-row ``(count, min, max, mean, m2)`` of the pieces each row owns.

    ``owner`` (sorted) names the row of each piece. Pieces are cut into
    segments of at most ``_PIECE`` elements and reduced in cache-sized groups
    of one dtype (rows of a 2-D view when the segments have one size, else
    ``ufunc.reduceat``); segment results merge into rows with Chan's formula.
    """
    segs: list[np.ndarray] = []
    seg_owner: list[int] = []
    for p, o in zip(pieces, owner.tolist(), strict=True):
        if p.dtype.kind == "b":
            p = p.view(np.uint8)
        if p.size <= _PIECE:
            segs.append(p)
            seg_owner.append(o)
        else:
            for a in range(0, p.size, _PIECE):
                segs.append(p[a : a + _PIECE])
                seg_owner.append(o)
    k = len(segs)
    cnt = np.array([p.size for p in segs], dtype=np.float64)
    out = [np.empty(k) for _ in range(4)]
    by_dtype: dict[np.dtype[Any], list[int]] = {}
    for i, p in enumerate(segs):
        by_dtype.setdefault(p.dtype, []).append(i)
    for dt, idx in by_dtype.items():
        exact_int = dt.kind in "iu" and dt.itemsize <= 2
        pos = 0
        while pos < len(idx):
            group = [idx[pos]]
            total = segs[idx[pos]].size
            pos += 1
            while pos < len(idx) and total + segs[idx[pos]].size <= _GROUP_ELEMENTS:
                group.append(idx[pos])
                total += segs[idx[pos]].size
                pos += 1
            gp = [segs[i] for i in group]
            x = gp[0] if len(gp) == 1 else np.concatenate(gp)
            res = _group_moments(x, cnt[group], exact_int)
            g = np.asarray(group)
            for j in range(4):
                out[j][g] = res[j]
    return _combine(np.asarray(seg_owner, dtype=np.int64), n_rows, cnt, *out)


def _combine(
    owner: np.ndarray, n_rows: int, cnt: np.ndarray, mn: np.ndarray, mx: np.ndarray, mean: np.ndarray, m2: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Merge segment statistics into per-row ones (Chan et al.); ``owner`` is sorted."""
    r_cnt = np.zeros(n_rows)
    r_min = np.full(n_rows, np.nan)
    r_max = np.full(n_rows, np.nan)
    r_mean = np.full(n_rows, np.nan)
    r_m2 = np.zeros(n_rows)
    if owner.size == 0:
        return r_cnt, r_min, r_max, r_mean, r_m2
    rows, starts = np.unique(owner, return_index=True)
    if rows.size == owner.size:  # one segment per row: nothing to merge
        r_cnt[rows], r_min[rows], r_max[rows], r_mean[rows], r_m2[rows] = cnt, mn, mx, mean, m2
        return r_cnt, r_min, r_max, r_mean, r_m2
    tot = np.add.reduceat(cnt, starts)
    rmean = np.add.reduceat(cnt * mean, starts) / tot
    dev = mean - np.repeat(rmean, np.diff(np.append(starts, owner.size)))
    r_cnt[rows] = tot
    r_min[rows] = np.minimum.reduceat(mn, starts)
    r_max[rows] = np.maximum.reduceat(mx, starts)
    r_mean[rows] = rmean
    r_m2[rows] = np.add.reduceat(m2 + cnt * dev * dev, starts)
    return r_cnt, r_min, r_max, r_mean, r_m2


def _stats_array(ok: np.ndarray, mn: np.ndarray, mx: np.ndarray, mean: np.ndarray, std: np.ndarray) -> pa.StructArray:
    cols = [pa.array(v.astype(np.float64)) for v in (mn, mx, mean, std)]
    return pa.StructArray.from_arrays(cols, fields=list(STATS_TYPE), mask=_mask(ok))


def stats(records: Any, c: Any = 0) -> pa.StructArray:
    """``{min, max, mean, std}`` (float64) of channel ``c`` of each record.

    Statistics run over every T, Z, Y, X pixel of the channel (population
    ``std``, ``ddof=0``), as ``numpy`` computes them on ``to_numpy(rec)[:, c]``.
    ``c`` is a scalar or one value per row; null records, null ``c`` and
    ``c`` outside ``[0, size_c)`` give null. Only the chunks of channel ``c``
    are decoded; parts of the channel no chunk stores count as zeros (as
    ``to_numpy`` fills them).
    """
    arr = record_array(records)
    n = len(arr)
    cc, c_ok = _broadcast(c, n, "c")
    sz, ok = _sizes_np(arr)
    ok &= c_ok & (cc >= 0) & (cc < sz[:, 1])
    mn = np.full(n, np.nan)
    mx = np.full(n, np.nan)
    mean = np.full(n, np.nan)
    std = np.full(n, np.nan)
    if not ok.any():
        return _stats_array(ok, mn, mx, mean, std)
    ch = _Chunks(arr)
    has_chunks = ch.row_end > ch.row_start
    fast = ok & has_chunks
    if fast.any():
        dnames = _dtype_names(arr).fill_null("uint16")
        enc = pc.dictionary_encode(dnames)
        d_idx = enc.indices.to_numpy(zero_copy_only=False)
        d_np = [to_numpy_dtype(d) for d in enc.dictionary.to_pylist()]
        lens = (ch.row_end - ch.row_start)[fast]
        owner = np.repeat(np.flatnonzero(fast), lens)
        # chunk entry indices of the selected rows: row_start[r] + 0..len-1
        first = np.zeros(lens.size, dtype=np.int64)
        np.cumsum(lens[:-1], out=first[1:])
        entry = np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(ch.row_start[fast] - first, lens)
        keep = ch.c[entry] == cc[owner]
        entry, owner = entry[keep], owner[keep]
        pieces = ch.decode_many(entry, [d_np[k] for k in d_idx[owner].tolist()])
        r_cnt, r_min, r_max, r_mean, r_m2 = _segment_stats(pieces, owner, n)
        # pixels of the channel that no chunk stores read as zeros
        expected = (sz[:, 0] * sz[:, 2] * sz[:, 3] * sz[:, 4]).astype(np.float64)
        zeros = np.where(fast, np.maximum(expected - r_cnt, 0), 0)
        z = zeros > 0
        if z.any():
            tot = r_cnt + zeros
            new_mean = np.where(r_cnt > 0, r_mean * r_cnt, 0.0) / np.where(tot > 0, tot, 1)
            old_mean = np.where(r_cnt > 0, r_mean, 0.0)
            r_m2 = np.where(
                z,
                r_m2 + r_cnt * (old_mean - new_mean) ** 2 + zeros * new_mean**2,
                r_m2,
            )
            r_min = np.where(z, np.fmin(r_min, 0.0), r_min)
            r_max = np.where(z, np.fmax(r_max, 0.0), r_max)
            r_mean = np.where(z, new_mean, r_mean)
            r_cnt = tot
        sel = fast
        mn[sel] = r_min[sel]
        mx[sel] = r_max[sel]
        mean[sel] = r_mean[sel]
        std[sel] = np.sqrt(np.maximum(r_m2[sel], 0.0) / r_cnt[sel])
    slow = ok & ~has_chunks
    if slow.any():  # planes-only records: decode the channel through read_region
        for i in np.flatnonzero(slow):
            a = read_region(arr[int(i)], c=[int(cc[i])])
            mn[i], mx[i], mean[i], std[i] = a.min(), a.max(), a.mean(dtype=np.float64), a.std(dtype=np.float64)
    return _stats_array(ok, mn, mx, mean, std)


# --------------------------------------------------------------------------
# per-row pixel kernels
def _header(view: Any) -> Any:
    from dataclasses import replace

    h = header_from_record(view)
    return replace(h, channels=select_channels(h.channels, None, view.shape[1]))


def _variant(arr: pa.Array) -> str:
    t = arr.type
    if pa.types.is_struct(t) and t.get_field_index("chunks") >= 0:
        inner = t.field("chunks").type
        if (pa.types.is_list(inner) or pa.types.is_large_list(inner)) and pa.types.is_struct(inner.value_type):
            if inner.value_type.get_field_index("pixel_bytes") >= 0:
                return "bytes"
    return "list"


_SAME: Any = object()


def crop(
    records: Any,
    x: Any,
    y: Any,
    w: Any,
    h: Any,
    *,
    encoding: str | None = None,
    compression: str | None = _SAME,
) -> pa.StructArray:
    """Crop each record to ``[y, y+h) x [x, x+w)`` (all T, C, Z); new records.

    ``x, y, w, h`` are scalars or one value per row. The box is clipped to
    the image (like numpy slicing); rows whose clipped box is empty, and
    null rows/arguments, give null. Only the chunks a box touches are
    decoded. The result has the canonical struct of ``encoding`` (default:
    the input's variant), the input's chunk codec (unless ``compression``
    is given) and chunk shape clipped to the crop. All rows are built at once.
    """
    arr = record_array(records)
    n = len(arr)
    enc = encoding or _variant(arr)
    if enc not in ("bytes", "list"):
        raise ValueError(f"encoding must be 'bytes' or 'list', got {encoding!r}")
    xs, okx = _broadcast(x, n, "x")
    ys, oky = _broadcast(y, n, "y")
    ws, okw = _broadcast(w, n, "w")
    hs, okh = _broadcast(h, n, "h")
    sz, ok = _sizes_np(arr)
    ok &= okx & oky & okw & okh
    x0 = np.maximum(xs, 0)
    y0 = np.maximum(ys, 0)
    x1 = np.minimum(xs + ws, sz[:, 4])
    y1 = np.minimum(ys + hs, sz[:, 3])
    ok &= (x1 > x0) & (y1 > y0)
    rows = np.flatnonzero(ok)
    comp = None
    grid = None
    if rows.size:
        first = RecordView(arr[int(rows[0])])
        grid = first.chunk_grid or {}
        if enc == "bytes":
            if compression is not _SAME:
                comp = compression
            else:
                ct = first.chunks
                if ct is not None and ct.kind == "bytes" and ct.compressions:
                    comp = next((cz for cz in ct.compressions if cz), None)
    builder = RecordBuilder(
        chunk_encoding=enc,  # type: ignore[arg-type]
        compression=comp if enc == "bytes" else None,
        chunk_shape=(
            int((grid or {}).get("chunk_z") or 1),
            int((grid or {}).get("chunk_y") or 512),
            int((grid or {}).get("chunk_x") or 512),
        ),
    )
    for i in rows.tolist():
        view = RecordView(arr[i])
        pix = read_region(view, y=(int(y0[i]), int(y1[i])), x=(int(x0[i]), int(x1[i])))
        builder.add(pix, _header(view))
    struct_type = builder.struct_type
    if not rows.size:
        return pa.nulls(n, struct_type)
    built = builder.build()
    if rows.size == n:
        return built
    take = np.full(n, -1, dtype=np.int64)
    take[rows] = np.arange(rows.size)
    idx = pa.array(take, mask=~ok)
    return built.take(idx)


def _bbox_corner(coords: pa.Array, n: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last two values (y, x) of every ``list<number>`` row: ``(y, x, valid)``."""
    if pa.types.is_null(coords.type):
        return np.zeros(n), np.zeros(n), np.zeros(n, bool)
    if not (pa.types.is_list(coords.type) or pa.types.is_large_list(coords.type)
            or pa.types.is_fixed_size_list(coords.type)):
        raise TypeError(f"bbox {what} must be a list of coordinates ([.., y, x]), got {coords.type}")
    lengths = np.asarray(pc.list_value_length(coords).fill_null(0), dtype=np.int64)
    ok = _valid(coords) & (lengths >= 2)
    values = np.asarray(pc.list_flatten(coords).cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
    ends = np.cumsum(lengths)
    y = np.where(ok, values[np.clip(ends - 2, 0, max(values.size - 1, 0))] if values.size else 0.0, 0.0)
    x = np.where(ok, values[np.clip(ends - 1, 0, max(values.size - 1, 0))] if values.size else 0.0, 0.0)
    ok &= np.isfinite(y) & np.isfinite(x)
    return np.where(ok, y, 0.0), np.where(ok, x, 0.0), ok


def crop_bbox(
    records: Any,
    bbox: Any,
    pad: Any = 0,
    *,
    encoding: str | None = None,
    compression: str | None = _SAME,
) -> pa.StructArray:
    """Crop each record to a shape table's ``bbox`` (``{min: [.., y, x], max: [.., y, x]}``), grown by ``pad``.

    The box covers the pixels ``[floor(min), ceil(max))`` of its last two
    axes (y, x), as :func:`omeframe.shapes_from_labels` writes it (``max``
    one past the last pixel), plus ``pad`` on every side, clipped to the
    image; all T, C and Z are kept. ``bbox`` is a struct column (one box per
    row) or one box as a dict; null boxes and records give null. The rest is
    :func:`crop`.

    Example
    -------
    >>> import numpy as np, omeframe as of
    >>> rec = of.records_from_arrays([np.arange(100, dtype=np.uint8).reshape(10, 10)])
    >>> out = crop_bbox(rec, {"min": [2.0, 3.0], "max": [4.0, 8.0]}, 1)
    >>> of.to_numpy(out[0]).shape
    (1, 1, 1, 4, 7)
    """
    arr = record_array(records)
    n = len(arr)
    box = bbox
    if isinstance(box, pa.ChunkedArray):
        box = box.combine_chunks() if box.num_chunks else pa.nulls(0, pa.struct([]))
    if isinstance(box, (dict, pa.StructScalar)):
        box = pa.array([box.as_py() if isinstance(box, pa.StructScalar) else box] * n)
    if not isinstance(box, pa.StructArray):
        raise TypeError(f"bbox must be a struct of min and max coordinate lists, got {type(box).__name__}")
    if len(box) != n:
        raise ValueError(f"bbox has {len(box)} values for {n} records")
    if box.type.get_field_index("min") < 0 or box.type.get_field_index("max") < 0:
        raise TypeError(f"bbox must have fields 'min' and 'max' (a shape table's bbox), got {box.type}")
    pads, okp = _broadcast(pad, n, "pad")
    if (pads[okp] < 0).any():
        raise ValueError(f"pad must be >= 0, got {int(pads[okp][pads[okp] < 0][0])}")
    y0, x0, ok0 = _bbox_corner(pc.struct_field(box, "min"), n, "min")
    y1, x1, ok1 = _bbox_corner(pc.struct_field(box, "max"), n, "max")
    ok = _valid(box) & ok0 & ok1 & okp
    ys = np.floor(y0).astype(np.int64) - pads
    xs = np.floor(x0).astype(np.int64) - pads
    hs = np.ceil(y1).astype(np.int64) + pads - ys
    ws = np.ceil(x1).astype(np.int64) + pads - xs
    args = [pa.array(v, mask=~ok) for v in (xs, ys, ws, hs)]
    return crop(arr, *args, encoding=encoding, compression=compression)


def _broadcast_size(size: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    vals, ok = _broadcast(size, n, "size")
    if (vals[ok] <= 0).any():
        raise ValueError(f"thumbnail size must be positive, got {int(vals[ok][vals[ok] <= 0][0])}")
    return vals, ok


def thumbnail(records: Any, size: Any = 256) -> pa.BinaryArray:
    """PNG bytes of a composite preview of each record (like :func:`omeframe.thumbnail_png`).

    The preview shows the middle Z plane of T=0, all channels tinted with
    their ``color_rgba`` (grey for one channel), box-downsampled so the longer
    side is at most ``size``. Only that plane's chunks are decoded.
    """
    from PIL import Image

    arr = record_array(records)
    n = len(arr)
    sizes_, ok_s = _broadcast_size(size, n)
    sz, ok = _sizes_np(arr)
    ok &= ok_s
    out: list[bytes | None] = [None] * n
    for i in np.flatnonzero(ok).tolist():
        view = RecordView(arr[i])
        sc = int(sz[i, 1])
        cyx = read_region(view, t=[0], z=[int(sz[i, 2]) // 2])[0, :, 0]
        chans = view.meta.get("channels") or []
        colors = [ch.get("color_rgba") for ch in chans] if len(chans) == sc else None
        rgb = composite_rgb(downsample_cyx(cyx, int(sizes_[i])), colors)
        buf = io.BytesIO()
        Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", optimize=True)
        out[i] = buf.getvalue()
    return pa.array(out, pa.binary())


def to_numpy(records: Any, dtype: Any = None) -> list[np.ndarray | None]:
    """Decode each record into a TCZYX array (``None`` for null rows)."""
    arr = record_array(records)
    ok = _valid(arr)
    return [read_region(arr[i], dtype=dtype) if ok[i] else None for i in range(len(arr))]


# --------------------------------------------------------------------------
# chunk-level kernels (dataset chunks tables, unnested record chunks)
def _chunk_args(
    pixel_bytes: Any, codec: Any, dtype_: Any, shape_z: Any, shape_y: Any, shape_x: Any
) -> tuple[int, np.ndarray, Any]:
    pb = pixel_bytes.combine_chunks() if isinstance(pixel_bytes, pa.ChunkedArray) else pixel_bytes
    if not isinstance(pb, pa.Array):
        pb = pa.array(pixel_bytes, pa.large_binary())
    n = len(pb)

    def strings(v: Any, name: str) -> tuple[list[Any], np.ndarray]:
        if isinstance(v, pa.ChunkedArray):
            v = v.combine_chunks() if v.num_chunks else pa.array([], pa.string())
        if isinstance(v, pa.Array):
            if len(v) == 1 and n != 1:
                v = pa.repeat(v[0], n) if v[0].is_valid else pa.nulls(n, pa.string())
            if pa.types.is_null(v.type):
                return [None] * n, np.ones(n, bool)
            e = pc.dictionary_encode(v.cast(pa.string()))
            d = e.dictionary.to_pylist() + [None]
            idx = e.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            return [d[i] for i in idx.tolist()], np.ones(n, bool)
        return [v] * n, np.ones(n, bool)

    codecs, _ = strings(codec, "codec")
    dtypes, _ = strings(dtype_, "dtype")
    zz, okz = _broadcast(shape_z, n, "shape_z")
    yy, oky = _broadcast(shape_y, n, "shape_y")
    xx, okx = _broadcast(shape_x, n, "shape_x")
    if pa.types.is_null(pb.type):
        pb = pa.nulls(n, pa.large_binary())
    elif not pa.types.is_large_binary(pb.type):
        pb = pb.cast(pa.large_binary())
    ok = _valid(pb) & okz & oky & okx & np.array([d is not None for d in dtypes], dtype=bool)
    count = zz * yy * xx
    ok &= count > 0
    bufs = pb.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[pb.offset : pb.offset + n + 1] if n else np.zeros(1, np.int64)
    data = bufs[2] if bufs[2] is not None else pa.py_buffer(b"")
    decoded: list[np.ndarray | None] = [None] * n
    for i in np.flatnonzero(ok).tolist():
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        decoded[i] = _decode(
            memoryview(data)[lo:hi], codecs[i], to_numpy_dtype(dtypes[i]), int(count[i]), f"chunk row {i}"
        )
    return n, ok, decoded


def chunk_values(
    pixel_bytes: Any, codec: Any, dtype: Any, shape_z: Any, shape_y: Any, shape_x: Any
) -> pa.ListArray:
    """Decode chunk payloads to ``list<double>`` (ZYX order), one list per row.

    ``codec`` is the chunk compression (null/``"none"`` for raw bytes),
    ``dtype`` the stored pixel dtype name. Null payload or arguments give null.
    """
    n, ok, decoded = _chunk_args(pixel_bytes, codec, dtype, shape_z, shape_y, shape_x)
    lengths = np.array([0 if d is None else d.size for d in decoded], dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    parts = [d.astype(np.float64) for d in decoded if d is not None]
    values = np.concatenate(parts) if parts else np.zeros(0)
    otype = pa.int32() if offsets[-1] < 2**31 else pa.int64()
    cls = pa.ListArray if otype == pa.int32() else pa.LargeListArray
    return cls.from_arrays(pa.array(offsets, otype), pa.array(values), mask=_mask(ok))


def chunk_stats(
    pixel_bytes: Any, codec: Any, dtype: Any, shape_z: Any, shape_y: Any, shape_x: Any
) -> pa.StructArray:
    """``{min, max, mean, std}`` of each decoded chunk payload (null for nulls)."""
    n, ok, decoded = _chunk_args(pixel_bytes, codec, dtype, shape_z, shape_y, shape_x)
    rows = np.flatnonzero(ok)
    mn = np.full(n, np.nan)
    mx = np.full(n, np.nan)
    mean = np.full(n, np.nan)
    std = np.full(n, np.nan)
    if rows.size:
        cnt, a, b, m, m2 = _segment_stats([decoded[i] for i in rows.tolist()], rows, n)
        mn[rows], mx[rows], mean[rows] = a[rows], b[rows], m[rows]
        std[rows] = np.sqrt(np.maximum(m2[rows], 0.0) / cnt[rows])
    return _stats_array(ok, mn, mx, mean, std)
