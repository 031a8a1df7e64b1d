"""CRC-32 of the pixel bytes of OME-Arrow columns, and digests of their header fields, for Vortex files.

Vortex stores no checksums, and raw pixel chunks (the default for tiny crops)
carry none of their own, so a flipped byte in a Vortex record table could read
back as a wrong pixel, or as a wrong id, name or channel. omeframe's Vortex
writer therefore stores, in the hidden last column that already carries the
Arrow schema in its name (see :mod:`omeframe.formats.vortex.file`), one
``uint64`` per row (:func:`stored_crcs`); what it holds is the file's *scope*
(:data:`SCOPE`, recorded in the stored schema under :data:`SCOPE_KEY`).

Scope 3 (files written now):

* the low half is the row's own CRC-32 of its pixel bytes: what a take of
  pixels alone checks (it reads the pixel fields of the records, not their
  ids or channel names);
* the high half is that CRC XOR the low 32 bits of the row's *header digest*
  (:func:`header_digests`): the row digest of every field of its records but
  the pixel bytes (:mod:`omeframe.storage.digest`), so that a read of whole
  records checks their header fields with the pixels, for no extra stored
  byte.

A full read checks each batch with one CRC over its pixel bytes, taken by
the scan thread that has just converted the batch, against the fold of the
rows' expected CRCs (high half XOR header digest; :func:`folds_to`, rows of
one length) and the header digests of all rows computed at once after the
scan; only a batch that fails is searched row by row (:func:`bad_rows`),
and takes and filtered scans check each row. Measured on 50,000 crops
3×16×16 with two features, the header digests cost about 8 ms of CPU, a
quarter of the read (most of it the rows' ids), and the CRC 1–2 ms. Header
values hashed once in a process are found again by a fingerprint of their
decoded buffers (:func:`_fingerprint`: each buffer's size and CRC-32, the
buffers of the pixel bytes left out), which the scan's threads take batch by
batch beside the CRC (:func:`batch_prints`), so a table read again reuses
its digests; each read still checks them against its own stored CRCs.

Scope 2 (files written between 2026-11 and 2026-12-07): the high half is the
*running* CRC-32 of every pixel byte of the table from its first row
through this one, and a full read ties each batch to the running CRCs
before and after it (:func:`batch_crc_ok`, :func:`continues`); header fields
are not covered.

Pixel bytes are taken over every OME-Arrow column in schema order (the
``chunks[].pixel_bytes`` payloads of the bytes variant, the
``planes[].pixels`` values of the planes variant). Readers that see the hidden
column as before keep working; omeframe's reader checks every row it returns.

A row's pixel bytes are one contiguous span of the column's data buffer (the
chunks of a row are consecutive list items), and consecutive rows' spans are
adjacent. The writer makes one CRC call per row, continuing the running CRC,
and derives the rows' own CRCs from consecutive running CRCs
(``crc(A + B) == crc(A) * x**(8 len B) ^ crc(B)``, vectorised).

The batch check gives the row check's verdict on any damage confined to the
bytes of one row: the two CRCs differ by that row's own discrepancy times a
power of ``x``, which is zero exactly when the row's check would pass (every
flipped byte and every burst of up to 32 bits is caught; damage spread over
several rows passes only if it cancels, about 2**-32 for random damage). A
batch check does not bind where the batch's bytes are cut into rows: a damaged
offset that moves bytes between neighbouring rows is caught when the pixels are
decoded (chunk lengths against chunk shapes, zstd frame sizes and checksums),
and in scope 3 by the fold, which takes the rows' lengths.

Files written before running CRCs hold one ``uint32`` per row, the row's own
CRC; they are checked in blocks of rows against the fold of their stored CRCs
(:func:`omeframe.storage.crc.crc32_fold_equal` and
:func:`omeframe.storage.crc.crc32_combine_groups`).
"""

from __future__ import annotations

import collections
import functools
import threading
import zlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.model.record import looks_like_record_type
from omeframe.storage.crc import _times_x8n, crc32_combine, crc32_combine_groups, crc32_fold_equal, crc32_function
from omeframe.storage.digest import row_digests

__all__ = [
    "BLOCK_BYTES", "SCOPE", "SCOPE_KEY", "bad_rows", "bad_spans", "bad_values", "batch_crc", "batch_crc_ok",
    "batch_prints", "continues", "folds_to", "header_digests", "header_type", "joined_fingerprint", "ome_columns",
    "PIXEL_PATHS", "pixel_span", "row_and_running_crcs", "row_checks", "row_crcs", "stored_crcs",
]

#: What a row CRC covers, stored in the table's schema metadata under
#: :data:`SCOPE_KEY`. 1 (files written before the key existed): the
#: ``chunks[].pixel_bytes`` of the bytes variant or the ``planes[].pixels``;
#: 2: also the ``chunks[].pixels`` of list-encoded chunks; 3: the same pixel
#: bytes, and the ``uint64`` per row holds the row's own CRC (low half) and
#: that CRC XOR the low 32 bits of the row's header digest (high half, see
#: :func:`header_digests`) instead of the running CRC.
SCOPE = 3
SCOPE_KEY = b"omeframe.pixel_crc_scope"
#: Rows whose pixel bytes start in one window of this many bytes are checked as one block.
BLOCK_BYTES = 32768  # blocks of small rows stay under 64 KiB: ~1 CRC call per 32 KiB
#: Fewer rows than this are checked row by row (cheaper than the fold's fixed numpy overhead).
ROWWISE_BELOW = 128


#: The fields of an OME-Arrow record that hold pixel bytes (covered by the CRC, left out of the header digest).
PIXEL_PATHS = frozenset({("chunks", "pixel_bytes"), ("chunks", "pixels"), ("planes", "pixels")})


@functools.lru_cache(maxsize=64)
def header_type(kind: pa.DataType, drop: frozenset[tuple[str, ...]] = PIXEL_PATHS) -> pa.DataType:
    """The type ``kind`` without the struct fields at the paths ``drop`` (list levels not named)."""
    if pa.types.is_struct(kind):
        kept = []
        for f in kind:
            if (f.name,) in drop:
                continue
            inner = frozenset(p[1:] for p in drop if len(p) > 1 and p[0] == f.name)
            kept.append(f.with_type(header_type(f.type, inner)) if inner else f)
        return pa.struct(kept)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        make = pa.list_ if pa.types.is_list(kind) else pa.large_list
        return make(kind.value_field.with_type(header_type(kind.value_type, drop)))
    return kind


def _header(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The header fields of records: ``column`` cast to its :func:`header_type` (no copy of any value)."""
    target = header_type(column.type)
    return column if target.equals(column.type) else column.cast(target)


def header_digests(
    columns: Sequence[pa.Array | pa.ChunkedArray], fingerprint: tuple[Any, ...] | None = None
) -> np.ndarray:
    """The low 32 bits of each row's digest of every field of its OME-Arrow ``columns`` but the pixel bytes.

    The fields the pixel CRC does not cover (ids, names, channels, sizes,
    chunk positions and shapes ...): the row digest
    (:func:`omeframe.storage.digest.row_digests`) of the records cast to
    their :func:`header_type`. A changed header value fails its row's
    check, as a changed pixel byte does. ``fingerprint``: the
    :func:`_fingerprint` of ``columns`` when the caller has it (a scan takes
    it batch by batch, :func:`batch_prints` and :func:`joined_fingerprint`),
    else computed here.

    Example
    -------
    >>> import numpy as np, omeframe
    >>> col = omeframe.records_from_arrays([np.zeros((4, 4), np.uint8)] * 2, dim_order="YX")
    >>> h = header_digests([col])
    >>> h.dtype, bool(h[0] != h[1])  # the rows' ids differ
    (dtype('uint32'), True)
    """
    key = _fingerprint(columns) if fingerprint is None else fingerprint
    if key is not None:
        with _DIGESTS_LOCK:
            known = _DIGESTS.get(key)
            if known is not None:
                _DIGESTS.move_to_end(key)
                return known
    headers = [_header(c) for c in columns]
    # the batches of a read as one array: a few numpy calls per header field for the whole read
    # instead of per batch (about 8 against 11 ms for 50,000 crop records; only header values are copied)
    merged = [pa.concat_arrays(h.chunks) if isinstance(h, pa.ChunkedArray) and h.num_chunks > 1 else h for h in headers]
    digests = row_digests(merged).astype(np.uint32)
    if key is not None:
        digests.flags.writeable = False
        with _DIGESTS_LOCK:
            _DIGESTS[key] = digests
            while len(_DIGESTS) > DIGESTS_KEPT:
                _DIGESTS.popitem(last=False)
    return digests


#: Header digests of the last few header contents seen in this process, by :func:`_fingerprint`: a
#: table read again hashes its header fields once (the fingerprint costs about 3 ms of CPU for the
#: 17 MB of header buffers of 50,000 crop records, on the scan's threads; the digests 8 ms). Sound
#: whatever file the values come from: equal fingerprints mean equal header values (up to CRC-32
#: collisions, as for the pixels), and the digests are a function of the values; each read still
#: checks them against its own file's stored CRCs.
DIGESTS_KEPT = 8
_DIGESTS: collections.OrderedDict[tuple[Any, ...], np.ndarray] = collections.OrderedDict()
_DIGESTS_LOCK = threading.Lock()


def _fingerprint(columns: Sequence[pa.Array | pa.ChunkedArray]) -> tuple[Any, ...] | None:
    """The types and lengths of OME-Arrow ``columns``, and the size and CRC-32 of every buffer but those of
    their pixel bytes (:func:`_print`), or ``None`` when an array or a child starts at an offset (its
    buffers would not determine its values alone).

    Equal fingerprints mean equal header fields (up to CRC-32 collisions): the
    buffers left out hold pixel bytes alone, which the row CRCs cover. No cast
    to the :func:`header_type` (which costs more than the CRCs of the buffers).
    """
    key: list[Any] = []
    for column in columns:
        key.append(column.type)
        for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
            part = _print(chunk)
            if part is None:
                return None
            key.extend(part)
    return tuple(key)


def batch_prints(columns: Sequence[pa.Array]) -> tuple[tuple[Any, ...], ...] | None:
    """What :func:`_fingerprint` takes of each of a batch's OME-Arrow ``columns``, for
    :func:`joined_fingerprint`; ``None`` when one of them has none (a slice).

    A scan takes it in the thread that has just converted the batch, where the
    buffers are still in cache and Vortex decodes the next batches beside it.
    """
    parts = []
    for column in columns:
        part = _print(column)
        if part is None:
            return None
        parts.append(part)
    return tuple(parts)


def joined_fingerprint(
    kinds: Sequence[pa.DataType], prints: Sequence[tuple[tuple[Any, ...], ...] | None]
) -> tuple[Any, ...] | None:
    """The :func:`_fingerprint` of OME-Arrow columns of types ``kinds`` made of batches with
    :func:`batch_prints` ``prints``, in order (``None`` when a batch has none): the key
    :func:`header_digests` would compute from the columns."""
    if any(p is None for p in prints):
        return None
    key: list[Any] = []
    for j, kind in enumerate(kinds):
        key.append(kind)
        for p in prints:
            assert p is not None
            key.extend(p[j])
    return tuple(key)


def _print(arr: pa.Array) -> tuple[Any, ...] | None:
    """The length of records ``arr`` and the size and CRC-32 of each of its buffers but those that hold
    their pixel bytes (:func:`_pixel_buffers`), or ``None`` when the buffers do not determine the values
    alone (:func:`_unsliced`)."""
    if not _unsliced(arr):
        return None
    crc = crc32_function()
    skip = _pixel_buffers(arr)
    key: list[Any] = [len(arr)]
    key.extend(
        (-1, 0) if b is None else (b.size, 0 if (b.address, b.size) in skip else crc(b)) for b in arr.buffers()
    )
    return tuple(key)


def _pixel_buffers(records: pa.Array) -> set[tuple[int, int]]:
    """``(address, size)`` of the buffers that hold the pixel bytes of unsliced ``records``: the values
    below each of :data:`PIXEL_PATHS` (the data of ``chunks[].pixel_bytes``, the items of
    ``chunks[].pixels`` and ``planes[].pixels``), not their validity or offsets."""
    found: set[tuple[int, int]] = set()
    kind = records.type
    for outer, leaf in PIXEL_PATHS:
        if not isinstance(kind, pa.StructType) or kind.get_field_index(outer) < 0:
            continue
        items = records.field(outer)
        if not isinstance(items.type, (pa.ListType, pa.LargeListType)):
            continue
        values = items.values
        if not isinstance(values.type, pa.StructType) or values.type.get_field_index(leaf) < 0:
            continue
        found.update((b.address, b.size) for b in values.field(leaf).buffers()[2:] if b is not None)
    return found


def _unsliced(arr: pa.Array) -> bool:
    """Whether ``arr`` and every child array below it start at offset 0, and are of types whose values
    their buffers alone hold (structs, lists, primitives, strings; not dictionaries, whose dictionary
    :meth:`pyarrow.Array.buffers` leaves out)."""
    return _plain(arr.type) and _at_zero(arr)


def _at_zero(arr: pa.Array) -> bool:
    """Whether ``arr`` and every child array below it (of a :func:`_plain` type) start at offset 0."""
    if arr.offset:
        return False
    kind = arr.type
    if isinstance(kind, pa.StructType):
        return all(_at_zero(arr.field(i)) for i in range(kind.num_fields))
    if isinstance(kind, (pa.ListType, pa.LargeListType)):
        return _at_zero(arr.values)
    return True


@functools.lru_cache(maxsize=64)
def _plain(kind: pa.DataType) -> bool:
    """Whether values of type ``kind`` are held by their buffers alone (see :func:`_unsliced`)."""
    if pa.types.is_struct(kind):
        return all(_plain(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _plain(kind.value_type)
    return bool(
        pa.types.is_primitive(kind) or pa.types.is_null(kind) or pa.types.is_string(kind)
        or pa.types.is_large_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
        or pa.types.is_string_view(kind) or pa.types.is_binary_view(kind)
    )


def ome_columns(schema: pa.Schema) -> list[str]:
    """Names of the OME-Arrow record columns of ``schema``, in schema order."""
    return [f.name for f in schema if looks_like_record_type(f.type)]


def _child(struct: pa.StructArray, name: str) -> pa.Array:
    """Field ``name`` of ``struct`` aligned with its rows (honours a slice offset)."""
    child = struct.field(name)  # pyarrow applies the struct's offset and length here
    if len(child) != len(struct):  # an older pyarrow returned the whole child
        child = child.slice(struct.offset, len(struct))
    return child


def _list_parts(lst: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """``(absolute offsets, unsliced values)`` of a list array of any width."""
    offs = np.asarray(lst.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    return offs, lst.values


def _list_spans(lst: pa.Array, outer: np.ndarray) -> tuple[Any, np.ndarray, int]:
    """``(data buffer, element bounds per row, itemsize)`` of a list column of fixed-width pixels."""
    inner_offs, values = _list_parts(lst)
    bounds = inner_offs[outer] + values.offset
    itemsize = values.type.bit_width // 8 if values.type.bit_width >= 8 else 1
    return values.buffers()[1], bounds, itemsize


def _view_bounds(values: pa.Array) -> tuple[Any, np.ndarray] | None:
    """``(data buffer, item bounds)`` of a ``binary_view`` array whose items lie back to back in one buffer.

    ``None`` when they do not (inline items of up to 12 bytes, several data
    buffers, gaps): the caller then copies the array into a plain binary one.
    """
    n = len(values)
    buffers = values.buffers()
    if n == 0 or len(buffers) < 3 or buffers[1] is None:
        return None
    views = np.frombuffer(buffers[1], dtype="<i4").reshape(-1, 4)[values.offset : values.offset + n]
    lengths, which, offsets = views[:, 0], views[:, 2], views[:, 3]
    if lengths.min() <= 12 or (which != which[0]).any():
        return None
    # int32 sums: an overflow (a buffer near 2 GiB) can only break the equality, never fake it
    if not np.array_equal(offsets[1:], offsets[:-1] + lengths[:-1]):
        return None
    bounds = np.empty(n + 1, dtype=np.int64)
    bounds[:-1] = offsets
    bounds[-1] = int(offsets[-1]) + int(lengths[-1])
    return buffers[2 + int(which[0])], bounds


def _binary_bounds(values: pa.Array) -> tuple[Any, np.ndarray]:
    """``(data buffer, item bounds)`` of a binary, large binary or binary view array."""
    viewed = _view_bounds(values) if pa.types.is_binary_view(values.type) else None
    if viewed is not None:  # Vortex reads binary views: one data buffer, payloads back to back
        return viewed
    if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
        values = values.cast(pa.large_binary())
    width = np.int64 if pa.types.is_large_binary(values.type) else np.int32
    inner = np.frombuffer(values.buffers()[1], dtype=width)[values.offset : values.offset + len(values) + 1]
    return values.buffers()[2], np.asarray(inner, dtype=np.int64)


def bad_values(values: pa.Array | pa.ChunkedArray, expected: np.ndarray) -> np.ndarray:
    """Indices of the items of a binary array whose bytes fail their CRC-32 ``expected``.

    Checked block-wise, as :func:`bad_spans` checks spans.

    Example
    -------
    >>> import zlib, numpy as np, pyarrow as pa
    >>> values = pa.array([b"abc", b"de"], pa.large_binary())
    >>> bad_values(values, np.array([zlib.crc32(b"abc"), zlib.crc32(b"dX")])).tolist()
    [1]
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if len(values) == 0:
        return np.zeros(0, dtype=np.intp)
    data, bounds = _binary_bounds(values)
    view = memoryview(data).cast("B") if data is not None else memoryview(b"")
    return bad_spans(view, bounds[:-1], bounds[1:], expected)


def _byte_spans(arr: pa.Array | pa.ChunkedArray, scope: int = SCOPE) -> tuple[memoryview, np.ndarray, np.ndarray]:
    """``(data, starts, stops)``: row ``r``'s pixel bytes are ``data[starts[r]:stops[r]]``."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    names = {arr.type.field(i).name for i in range(arr.type.num_fields)}
    n = len(arr)
    chunk_type = arr.type.field("chunks").type.value_type if "chunks" in names else None
    if scope >= 2 and chunk_type is not None and chunk_type.get_field_index("pixels") >= 0:
        outer, items = _list_parts(_child(arr, "chunks"))  # list-encoded chunks: chunks[].pixels
        data, bounds, itemsize = _list_spans(_child(items, "pixels"), outer)
    elif chunk_type is not None and chunk_type.get_field_index("pixel_bytes") >= 0:
        outer, items = _list_parts(_child(arr, "chunks"))
        data, inner = _binary_bounds(_child(items, "pixel_bytes"))
        bounds = inner[outer]
        itemsize = 1
    elif "planes" in names:
        outer, items = _list_parts(_child(arr, "planes"))
        data, bounds, itemsize = _list_spans(_child(items, "pixels"), outer)
    else:
        return memoryview(b""), np.zeros(n, np.int64), np.zeros(n, np.int64)
    view = memoryview(data).cast("B") if data is not None else memoryview(b"")
    return view, bounds[:-1] * itemsize, bounds[1:] * itemsize


def row_crcs(columns: Sequence[pa.Array | pa.ChunkedArray], scope: int = SCOPE) -> np.ndarray:
    """CRC-32 of each row's pixel bytes over ``columns`` (OME-Arrow arrays of equal length).

    ``scope`` is what the CRC covers (see :data:`SCOPE`); files record theirs.

    Example
    -------
    >>> import numpy as np, omeframe
    >>> col = omeframe.records_from_arrays([np.arange(16, dtype=np.uint8).reshape(4, 4)], dim_order="YX")
    >>> crc = row_crcs([col])
    >>> crc.dtype, len(crc)
    (dtype('uint32'), 1)
    """
    if not columns:
        return np.zeros(0, np.uint32)
    n = len(columns[0])
    out = np.zeros(n, dtype=np.uint32)
    spans = [_byte_spans(col, scope) for col in columns]
    for data, starts, stops in spans:
        out = _span_crcs(data, starts, stops, out)
    return out


def _span_crcs(data: memoryview, starts: np.ndarray, stops: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """CRC-32 of each span ``data[starts[i]:stops[i]]``, continuing from ``init[i]`` (default 0), one call a span."""
    inits = [0] * len(starts) if init is None else init.tolist()
    return np.fromiter(
        (zlib.crc32(data[s:e], int(c)) for s, e, c in zip(starts.tolist(), stops.tolist(), inits, strict=True)),
        dtype=np.uint32, count=len(starts),
    )


def row_and_running_crcs(
    columns: Sequence[pa.Array | pa.ChunkedArray], scope: int = SCOPE, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(row CRCs, running CRCs)`` of the pixel bytes over ``columns``, as the writer stores them.

    The running CRC of row ``r`` is the CRC-32 of every pixel byte from the
    first row of the table through row ``r`` (``start``: the running CRC
    before the first row given, from the previous batch), so that a full read
    checks a batch with one CRC call continuing from the previous batch's last
    value, and no fold. Row CRCs (:func:`row_crcs`) follow from consecutive
    running CRCs by one vectorised multiplication each, so the writer still
    makes one CRC call per row and column.

    Example
    -------
    >>> import numpy as np, omeframe, pyarrow as pa
    >>> images = [np.full((4, 4), i, np.uint8) for i in range(3)]
    >>> col = omeframe.records_from_arrays(images, dim_order="YX", compression=None)
    >>> rows, running = row_and_running_crcs([col])
    >>> bool((rows == row_crcs([col])).all())
    True
    >>> int(running[-1]) == zlib.crc32(b"".join(bytes([i]) * 16 for i in range(3)))
    True
    """
    n = len(columns[0]) if columns else 0
    running = np.zeros(n, dtype=np.uint32)
    if not n:
        return np.zeros(0, np.uint32), running
    spans = [_byte_spans(col, scope) for col in columns]
    crc = crc32_function()
    value = int(start) & 0xFFFFFFFF
    lengths = np.zeros(n, dtype=np.int64)
    if len(spans) == 1:
        data, starts, stops = spans[0]
        out = []
        for s, e in zip(starts.tolist(), stops.tolist(), strict=True):
            value = crc(data[s:e], value)
            out.append(value)
        running[:] = out
        lengths = stops - starts
    else:  # a row's bytes chain its columns in schema order
        bounds = [(data, st.tolist(), sp.tolist()) for data, st, sp in spans]
        for r in range(n):
            for data, st, sp in bounds:
                value = crc(data[st[r] : sp[r]], value)
            running[r] = value
        for _, st, sp in spans:
            lengths += sp - st
    before = np.empty(n, dtype=np.uint32)
    before[0] = start
    before[1:] = running[:-1]
    # crc(A + B) == crc(A) * x**(8 len B) ^ crc(B): a row's own CRC from the running CRCs around it
    rows = (_times_x8n(before, lengths) ^ running).astype(np.uint32)
    return rows, running


def stored_crcs(
    columns: Sequence[pa.Array | pa.ChunkedArray], scope: int = SCOPE, start: int = 0
) -> tuple[np.ndarray, int]:
    """The ``uint64`` per row a writer stores, and the running CRC after the last row (scope 2).

    Scope 3 (:data:`SCOPE`): high half, the row's own pixel CRC XOR its
    :func:`header_digests`; low half, the row's own pixel CRC (what a take of
    pixels alone, without the header, checks). Scope 2: high half, the running
    CRC of the pixel bytes through the row (see :func:`row_and_running_crcs`);
    low half, the row's own pixel CRC.

    Example
    -------
    >>> import numpy as np, omeframe
    >>> col = omeframe.records_from_arrays([np.zeros((4, 4), np.uint8)], dim_order="YX")
    >>> stored, _ = stored_crcs([col])
    >>> int(stored[0] >> 32) == int(row_crcs([col])[0] ^ header_digests([col])[0])
    True
    """
    rows, running = row_and_running_crcs(columns, scope, start)
    if not len(rows):
        return np.zeros(0, dtype=np.uint64), int(start)
    high = rows ^ header_digests(columns) if scope >= 3 else running
    return (high.astype(np.uint64) << np.uint64(32)) | rows.astype(np.uint64), int(running[-1])


def row_checks(
    columns: Sequence[pa.Array | pa.ChunkedArray], stored: np.ndarray, scope: int, digests: np.ndarray | None = None
) -> np.ndarray:
    """What each row's pixel CRC must be, from the stored values of a batch (``uint32``) and its whole
    OME-Arrow ``columns``: a row whose pixel bytes or header fields changed fails :func:`bad_rows` against it.

    Scope 3: the high half XOR the rows' :func:`header_digests` (``digests``
    when the caller has them already, else computed from ``columns``);
    earlier files: the row's own CRC (the low half, or the ``uint32`` value).
    """
    values = np.asarray(stored)
    if scope >= 3 and values.dtype == np.uint64:
        return (values >> np.uint64(32)).astype(np.uint32) ^ (header_digests(columns) if digests is None else digests)
    return values.astype(np.uint32)


def batch_crc_ok(
    columns: Sequence[pa.Array | pa.ChunkedArray], scope: int, stored: np.ndarray, start: int
) -> bool | None:
    """Whether the pixel bytes of a batch of rows continue the running CRC ``start`` to its last row's.

    ``stored`` are the batch's ``uint64`` values (:func:`stored_crcs`), whose
    last high half is the running CRC through the batch. One CRC call over the
    batch's bytes, which lie back to back in one buffer, and no work per row: a
    few array calls in all (each costs tens of microseconds right after a read,
    when the caches hold the pixels), so a full read pays little more than the
    CRC itself. ``None`` when the rows' bytes are not in one buffer (several
    OME-Arrow columns): the caller checks row by row.

    Damage confined to the bytes of one row gets that row's own verdict (see the
    module docstring). What a batch check does not bind is where the batch's
    bytes are cut into rows: a damaged offset that moves bytes from one row to
    its neighbour changes the rows' chunk lengths, which every decode checks
    against the chunk shapes (raw chunks) or zstd's frame sizes and checksums.
    """
    values = np.asarray(stored, dtype=np.uint64)
    if not len(values):
        return True
    found = pixel_span(columns, scope, len(values))
    if not isinstance(found, tuple):  # None: not in one buffer; False: a row count that disagrees
        return found
    data, a, b = found
    return (int(crc32_function()(data[a:b], int(start))) & 0xFFFFFFFF) == int(values[-1]) >> 32


def pixel_span(
    columns: Sequence[pa.Array | pa.ChunkedArray], scope: int, num_rows: int
) -> tuple[Any, int, int] | Literal[False] | None:
    """``(data, start, stop)``: the pixel bytes of a batch of ``num_rows`` rows, back to back in one buffer.

    ``None`` when they are not in one buffer (several OME-Arrow columns, a
    chunked column); ``False`` when the column does not hold ``num_rows`` rows.
    """
    if len(columns) != 1:
        return None
    column = columns[0]
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks != 1:
            return None
        column = column.chunk(0)
    if len(column) != num_rows:
        return False
    found = _byte_range(column)
    if found is None:  # another layout: its rows' spans, which lie back to back
        data, starts, stops = _byte_spans(column, scope)
        found = (data, int(starts[0]), int(stops[-1])) if len(starts) else (memoryview(b""), 0, 0)
    return found


def batch_crc(columns: Sequence[pa.Array | pa.ChunkedArray], scope: int) -> tuple[int, int] | None:
    """``(CRC-32, length)`` of a batch's pixel bytes, for :func:`continues` (``None``: not in one buffer).

    A scan computes it in the thread that has just converted the batch, while
    Vortex decodes the next ones; :func:`continues` later ties it to the
    stored running CRCs at no cost per byte.
    """
    n = len(columns[0]) if columns else 0
    found = pixel_span(columns, scope, n)
    if not isinstance(found, tuple):
        return None
    data, a, b = found
    return int(crc32_function()(data[a:b], 0)) & 0xFFFFFFFF, b - a


def folds_to(
    columns: Sequence[pa.Array | pa.ChunkedArray], expected: np.ndarray, measured: tuple[int, int], scope: int
) -> bool:
    """Whether a batch's pixel bytes, measured as ``(CRC-32, length)`` (:func:`batch_crc`), are the rows'
    bytes whose CRCs are ``expected``: the fold of those CRCs by the rows' lengths (one OME-Arrow column).

    ``False`` also when the fold does not apply (several columns): the caller then searches the rows
    (:func:`bad_rows`), which gives the verdict either way.

    Example
    -------
    >>> import zlib, numpy as np, omeframe
    >>> col = omeframe.records_from_arrays([np.full((4, 4), i, np.uint8) for i in range(3)], dim_order="YX",
    ...                                    compression=None)
    >>> rows = row_crcs([col])
    >>> folds_to([col], rows, batch_crc([col], SCOPE), SCOPE), folds_to([col], rows ^ 1, batch_crc([col], SCOPE), SCOPE)
    (True, False)
    """
    if len(columns) != 1 or not len(expected):
        return False
    _, starts, stops = _byte_spans(columns[0], scope)
    lengths = stops - starts
    crc, length = measured
    if len(lengths) != len(expected) or int(lengths.sum()) != length:
        return False
    if lengths[0] == lengths[-1] and bool((lengths == lengths[0]).all()):  # crops of one shape, raw
        return crc32_fold_equal(expected, int(lengths[0])) == crc
    return int(crc32_combine_groups(expected, lengths, np.zeros(1, dtype=np.intp))[0]) == crc  # zstd frames


def continues(start: int, measured: tuple[int, int], end: int) -> bool:
    """Whether bytes of ``measured = (CRC-32, length)`` (:func:`batch_crc`) take the running CRC
    ``start`` to ``end`` (the stored running CRCs before a batch and through its last row).

    ``crc(A + B) == crc(A) * x**(8 len B) ^ crc(B)`` gives the verdict of
    :func:`batch_crc_ok` over the same bytes, without reading them again.

    Example
    -------
    >>> import zlib
    >>> a, b = b"first batch", b"second batch"
    >>> continues(zlib.crc32(a), (zlib.crc32(b), len(b)), zlib.crc32(a + b))
    True
    """
    crc, length = measured
    return crc32_combine(start, crc, length) == end


def _byte_range(arr: pa.Array) -> tuple[Any, int, int] | None:
    """``(data, start, stop)`` of all rows' ``chunks[].pixel_bytes`` of a bytes-variant column (offsets only).

    The bytes of consecutive rows are consecutive (one list of chunks per
    row, one binary buffer), so the whole column is one span found from four
    offsets; ``None`` for other layouts (views, list-encoded chunks, planes).
    """
    kind = arr.type
    at = kind.get_field_index("chunks")
    if at < 0 or not pa.types.is_list(kind.field(at).type):
        return None
    chunk_type = kind.field(at).type.value_type
    pix = chunk_type.get_field_index("pixel_bytes")
    if pix < 0 or chunk_type.get_field_index("pixels") >= 0 or not pa.types.is_large_binary(chunk_type.field(pix).type):
        return None
    lst = _child(arr, "chunks")
    n = len(lst)
    if not n:
        return memoryview(b""), 0, 0
    offsets = lst.buffers()[1]
    first = int(np.frombuffer(offsets, dtype=np.int32, count=1, offset=4 * lst.offset)[0])
    last = int(np.frombuffer(offsets, dtype=np.int32, count=1, offset=4 * (lst.offset + n))[0])
    values = _child(lst.values, "pixel_bytes")  # logical positions of the list's items
    inner = values.buffers()[1]
    first_at = int(np.frombuffer(inner, dtype=np.int64, count=1, offset=8 * (values.offset + first))[0])
    last_at = int(np.frombuffer(inner, dtype=np.int64, count=1, offset=8 * (values.offset + last))[0])
    data = values.buffers()[2]
    return (memoryview(data).cast("B") if data is not None else memoryview(b"")), first_at, last_at


def bad_rows(
    columns: Sequence[pa.Array | pa.ChunkedArray], expected: np.ndarray, scope: int = SCOPE
) -> np.ndarray:
    """Indices of the rows whose pixel bytes over ``columns`` fail their stored CRC-32 ``expected``.

    Same answer as ``np.flatnonzero(row_crcs(columns) != expected)``, computed
    block-wise for a single OME-Arrow column of at least :data:`ROWWISE_BELOW`
    rows (see the module docstring): one CRC call per block of rows plus a
    vectorised fold of the stored CRCs, and per-row CRCs only in blocks that fail.

    Example
    -------
    >>> import numpy as np, omeframe, pyarrow as pa
    >>> col = omeframe.records_from_arrays([np.full((4, 4), i, np.uint8) for i in range(3)], dim_order="YX")
    >>> crcs = row_crcs([col])
    >>> crcs[1] ^= 1  # a damaged stored CRC
    >>> bad_rows([col], crcs).tolist()
    [1]
    """
    expected = np.asarray(expected, dtype=np.uint32)
    if len(columns) != 1:  # the row CRC chains several columns: check row by row
        return np.flatnonzero(row_crcs(columns, scope) != expected)
    column = columns[0]
    if isinstance(column, pa.ChunkedArray):  # chunk by chunk: no copy into one array
        found, at = [], 0
        for chunk in column.chunks:
            found.append(bad_rows([chunk], expected[at : at + len(chunk)], scope) + at)
            at += len(chunk)
        return np.concatenate(found) if found else np.zeros(0, dtype=np.intp)
    data, starts, stops = _byte_spans(column, scope)
    return bad_spans(data, starts, stops, expected)


def bad_spans(data: memoryview, starts: np.ndarray, stops: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Indices of the rows whose bytes ``data[starts[r]:stops[r]]`` fail their CRC-32 ``expected[r]``.

    The work of :func:`bad_rows` once a column's rows are byte spans: spans
    back to back are checked block-wise (one CRC call per block and a
    vectorised fold of the stored CRCs; rows of one length with a single
    call), others row by row.

    Example
    -------
    >>> import zlib, numpy as np
    >>> data = memoryview(b"abcdef")
    >>> crcs = np.array([zlib.crc32(b"abc"), zlib.crc32(b"deX")], dtype=np.uint32)
    >>> bad_spans(data, np.array([0, 3]), np.array([3, 6]), crcs).tolist()
    [1]
    """
    expected = np.asarray(expected, dtype=np.uint32)
    n = len(starts)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    if n < ROWWISE_BELOW or not np.array_equal(starts[1:], stops[:-1]):  # few, or not adjacent: row by row
        return np.flatnonzero(_span_crcs(data, starts, stops) != expected)
    lengths = stops - starts
    crc = crc32_function()
    if lengths[0] == lengths[-1] and np.all(lengths == lengths[0]):  # crops of one shape: one CRC, one fold
        if int(crc(data[int(starts[0]) : int(stops[-1])])) & 0xFFFFFFFF == crc32_fold_equal(expected, int(lengths[0])):
            return np.zeros(0, dtype=np.intp)
    big = lengths >= BLOCK_BYTES
    window = starts // BLOCK_BYTES
    new = np.ones(n, dtype=bool)
    new[1:] = (window[1:] != window[:-1]) | big[1:] | big[:-1]
    firsts = np.flatnonzero(new)
    lasts = np.append(firsts[1:], n) - 1
    folded = crc32_combine_groups(expected, lengths, firsts)
    lo, hi = starts[firsts].tolist(), stops[lasts].tolist()
    actual = np.fromiter((crc(data[a:b]) for a, b in zip(lo, hi, strict=True)), dtype=np.uint32, count=len(lo))
    failed = np.flatnonzero(actual != folded)
    if failed.size == 0:
        return np.zeros(0, dtype=np.intp)
    rows = np.concatenate([np.arange(firsts[g], lasts[g] + 1) for g in failed.tolist()])
    return rows[_span_crcs(data, starts[rows], stops[rows]) != expected[rows]]
