"""Block-wise checking of Vortex row CRCs: same verdict as the row-by-row check, cheaper.

The reader checks runs of rows with one CRC over their contiguous bytes against
the fold of the rows' stored CRC-32s (omeframe.storage.crc); these tests pin
the algebra against zlib and the verdict against the row-by-row reference, for
every kind of damage a row can take.
"""

from __future__ import annotations

import re
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import omeframe as of
from omeframe.formats.vortex import checksum as vchecksum
from omeframe.formats.vortex import file as vfile
from omeframe.formats.vortex.checksum import _byte_spans, _view_bounds, bad_rows, row_crcs
from omeframe.storage import crc as crcmod
from omeframe.storage.crc import crc32, crc32_combine_groups, crc32_fold_equal

sys.path.insert(0, str(Path(__file__).parent))
from vortex_damage import stale_body, with_header_of  # noqa: E402


def test_crc32_equals_zlib_with_and_without_zlib_ng(monkeypatch):
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8)
    view = memoryview(data).cast("B")
    for lo, hi, start in [(0, 0, 0), (0, 1, 0), (3, 9_999, 0), (17, 4_113, 0xDEADBEEF)]:
        assert crc32(view[lo:hi], start) == zlib.crc32(view[lo:hi], start)
    crcmod.crc32_function.cache_clear()
    for name in ("zlib_ng", "zlib_ng.zlib_ng"):  # not installed: zlib itself
        monkeypatch.setitem(sys.modules, name, None)
    try:
        assert crcmod.crc32_function() is zlib.crc32
        assert crc32(view[5:50], 9) == zlib.crc32(view[5:50], 9)
    finally:
        crcmod.crc32_function.cache_clear()


def test_crc32_combine_equals_zlib_of_the_concatenation_with_and_without_zlib_ng(monkeypatch):
    rng = np.random.default_rng(4)
    cases = [(b"", b""), (b"abc", b""), (b"", b"abc")]
    def noise(n):
        return rng.integers(0, 256, int(n), dtype=np.uint8).tobytes()

    cases += [(noise(a), noise(b)) for a, b in rng.integers(0, 70_000, (20, 2))]
    for fallback in (False, True):
        crcmod._combine_function.cache_clear()
        if fallback:  # not installed: the same product in Python
            for name in ("zlib_ng", "zlib_ng.zlib_ng"):
                monkeypatch.setitem(sys.modules, name, None)
        try:
            assert (crcmod._combine_function() is crcmod._py_combine) == fallback
            for a, b in cases:
                assert crcmod.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
        finally:
            crcmod._combine_function.cache_clear()
    with pytest.raises(ValueError, match="length2 must be >= 0"):
        crcmod.crc32_combine(1, 2, -1)


def test_a_batch_measured_where_it_was_scanned_ties_to_the_stored_running_crcs():
    """continues() gives batch_crc_ok()'s verdict from a batch's (CRC, length) alone (files of scope 2,
    whose high halves are running CRCs)."""
    crops = (np.arange(300 * 3 * 16 * 16) % 241).astype(np.uint8).reshape(300, 3, 16, 16)
    col = of.records_from_arrays(crops, dim_order="CYX", chunk_compression=None)
    stored, _ = vchecksum.stored_crcs([col], 2, 0)
    first, second = col.slice(0, 120), col.slice(120)
    start = int(stored[119]) >> 32
    measured = vchecksum.batch_crc([second], 2)
    assert measured is not None and measured[1] == 180 * 3 * 256
    assert vchecksum.continues(start, measured, int(stored[-1]) >> 32)
    assert vchecksum.batch_crc_ok([second], 2, stored[120:], start)
    assert not vchecksum.continues(start ^ 1, measured, int(stored[-1]) >> 32)  # another start
    assert not vchecksum.continues(start, (measured[0], measured[1] - 1), int(stored[-1]) >> 32)  # another length
    assert vchecksum.continues(0, vchecksum.batch_crc([first], 2), start)
    assert vchecksum.batch_crc([first, second], 2) is None  # two columns: not one buffer


def test_combine_groups_equals_zlib_of_the_concatenation():
    rng = np.random.default_rng(1)
    for trial in range(30):
        n = int(rng.integers(1, 40))
        lengths = rng.integers(0, 2_000, n) * (rng.random(n) > 0.25)  # empty pieces too
        parts = [rng.integers(0, 256, int(k), dtype=np.uint8).tobytes() for k in lengths]
        crcs = np.array([zlib.crc32(p) for p in parts], dtype=np.uint32)
        firsts = np.unique(np.concatenate([[0], rng.integers(0, n, int(rng.integers(0, n)))]))
        ends = [*firsts.tolist()[1:], n]
        expected = [zlib.crc32(b"".join(parts[a:b])) for a, b in zip(firsts.tolist(), ends, strict=True)]
        assert crc32_combine_groups(crcs, lengths, firsts).tolist() == expected, trial
    # A piece shifted past ~1.3 MiB uses six hexadecimal digits of the byte count.
    big = [b"head", bytes(1_300_007), b"tail!"]
    crcs = np.array([zlib.crc32(p) for p in big], dtype=np.uint32)
    got = crc32_combine_groups(crcs, np.array([len(p) for p in big]), np.array([0]))
    assert got.tolist() == [zlib.crc32(b"".join(big))]


def test_combine_groups_rejects_bad_groups():
    crcs, lengths = np.zeros(3, np.uint32), np.ones(3, np.int64)
    with pytest.raises(ValueError, match="firsts must be strictly increasing"):
        crc32_combine_groups(crcs, lengths, np.array([1, 2]))
    with pytest.raises(ValueError, match="firsts must be strictly increasing"):
        crc32_combine_groups(crcs, lengths, np.array([0, 2, 2]))
    with pytest.raises(ValueError, match="one length"):
        crc32_combine_groups(crcs, lengths[:2], np.array([0]))


def test_fold_of_equal_pieces_equals_zlib_of_the_concatenation():
    rng = np.random.default_rng(4)
    for n, length in [(1, 5), (2, 7), (15, 1), (16, 3), (17, 2), (255, 768), (4_097, 12), (6, 0)]:
        parts = [rng.integers(0, 256, length, dtype=np.uint8).tobytes() for _ in range(n)]
        crcs = np.array([zlib.crc32(p) for p in parts], dtype=np.uint32)
        assert crc32_fold_equal(crcs, length) == zlib.crc32(b"".join(parts)), (n, length)
        assert crc32_fold_equal(crcs, length) == crc32_combine_groups(crcs, np.full(n, length), np.array([0]))[0]
    assert crc32_fold_equal(np.zeros(0, np.uint32), 9) == 0
    with pytest.raises(ValueError, match="length must be >= 0"):
        crc32_fold_equal(np.zeros(2, np.uint32), -1)


def _crops(n: int = 300) -> tuple[pa.StructArray, np.ndarray]:
    """Raw-chunk crops of one shape (one chunk per channel): the equal-rows fast path."""
    crops = np.random.default_rng(6).integers(0, 256, (n, 3, 6, 5), dtype=np.uint8)
    return of.records_from_arrays(list(crops), dim_order="CYX", chunk_compression=None), crops


def test_crops_of_one_shape_name_every_damaged_row():
    col, crops = _crops()
    crcs = row_crcs([col])
    assert bad_rows([col], crcs).size == 0
    for row in (0, 1, 150, 299):
        for byte in (0, 37, 89):
            damaged = crops.copy()
            damaged[row].reshape(-1)[byte] ^= np.uint8(1 << (byte % 8))
            bad = of.records_from_arrays(list(damaged), dim_order="CYX", chunk_compression=None)
            assert bad_rows([bad], crcs).tolist() == [row], (row, byte)
        flipped = crcs.copy()
        flipped[row] ^= np.uint32(1 << 30)
        assert bad_rows([col], flipped).tolist() == [row]


def _views(lengths_offsets: list[tuple[int, int]], data: bytes) -> pa.Array:
    """A ``binary_view`` array over one data buffer, item ``i`` at ``(length, offset)``."""
    views = np.zeros((len(lengths_offsets), 4), dtype="<i4")
    for i, (length, offset) in enumerate(lengths_offsets):
        views[i] = [length, int.from_bytes(data[offset : offset + 4], "little", signed=True), 0, offset]
    buffers = [None, pa.py_buffer(views.tobytes()), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.binary_view(), len(views), buffers)


def test_binary_views_are_read_in_place_only_when_back_to_back():
    data = bytes(range(256)) * 2
    in_order = _views([(20, 0), (30, 20), (16, 50)], data)
    assert in_order.to_pylist() == [data[0:20], data[20:50], data[50:66]]
    buffer, bounds = _view_bounds(in_order)
    assert bounds.tolist() == [0, 20, 50, 66] and bytes(buffer[:66]) == data[:66]
    assert _view_bounds(in_order.slice(1)) is not None
    assert _view_bounds(_views([(20, 30), (30, 0)], data)) is None  # out of order
    assert _view_bounds(_views([(20, 0), (30, 21)], data)) is None  # a gap
    assert _view_bounds(pa.array([b"short", b"x" * 20], type=pa.binary_view())) is None  # an inline item
    # The spans of a view column are those of the plain binary column it stands for.
    col, _ = _crops(40)
    as_views = col.cast(_with_views(col.type))
    assert _view_bounds(as_views.field("chunks").flatten().field("pixel_bytes")) is not None
    assert vchecksum.row_crcs([as_views]).tolist() == row_crcs([col]).tolist()


def _with_views(t: pa.DataType) -> pa.DataType:
    """``t`` with every binary type replaced by ``binary_view`` (the types Vortex reads back)."""
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _with_views(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(_with_views(t.value_type))
    return pa.binary_view() if pa.types.is_binary(t) or pa.types.is_large_binary(t) else t


@pytest.fixture(params=[512, None], ids=["512-byte-blocks", "default-blocks"])
def block_bytes(request, monkeypatch) -> int:
    """The block size under test: small (many blocks, rows of their own) and the default."""
    monkeypatch.setattr(vchecksum, "ROWWISE_BELOW", 0)  # blocks for these few rows too
    if request.param is not None:
        monkeypatch.setattr(vchecksum, "BLOCK_BYTES", request.param)
    return vchecksum.BLOCK_BYTES


def _column() -> tuple[pa.StructArray, list[np.ndarray]]:
    """Raw-chunk records of mixed sizes: 1-byte rows, small crops, and rows longer than a block."""
    rng = np.random.default_rng(2)
    shapes = [(1, 1), (3, 5), (200, 180), (16, 16), (40, 40), (1, 1), (190, 200)] + [(64, 64)] * 30 + [(2, 3)] * 8
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    return of.records_from_arrays(images, dim_order="YX", chunk_compression=None), images


def _damaged(images: list[np.ndarray], row: int, byte: int, bit: int) -> pa.StructArray:
    image = images[row].copy()
    image.reshape(-1)[byte] ^= np.uint8(1 << bit)
    return of.records_from_arrays([*images[:row], image, *images[row + 1 :]], dim_order="YX", chunk_compression=None)


def test_the_column_spans_blocks_of_small_rows_and_rows_of_their_own(block_bytes):
    col, _ = _column()
    _, starts, stops = _byte_spans(col)
    lengths = stops - starts
    assert (lengths >= block_bytes).sum() >= 2 and (lengths < 8).sum() >= 9
    assert stops[-1] > 4 * block_bytes  # several blocks


def test_every_damaged_pixel_row_is_named_exactly(block_bytes):
    col, images = _column()
    crcs = row_crcs([col])
    assert bad_rows([col], crcs).size == 0
    rng = np.random.default_rng(3)
    for row in range(len(images)):
        size = images[row].size
        for byte in {0, size - 1, int(rng.integers(0, size))}:  # first, last and some byte of the row
            damaged = _damaged(images, row, byte, int(rng.integers(0, 8)))
            assert bad_rows([damaged], crcs).tolist() == [row], (row, byte)


def test_damaged_stored_crcs_and_several_rows_are_named(block_bytes):
    col, images = _column()
    crcs = row_crcs([col])
    for row in (0, 2, 5, 20, len(images) - 1):
        for bit in (0, 13, 31):
            flipped = crcs.copy()
            flipped[row] ^= np.uint32(1 << bit)
            assert bad_rows([col], flipped).tolist() == [row]
    damaged = _damaged(images, 9, 5, 2)
    both = crcs.copy()
    both[10] ^= np.uint32(7)  # a neighbour in the same block: its stored CRC
    assert bad_rows([damaged], both).tolist() == [9, 10]


def test_chunked_and_sliced_columns_and_several_columns(block_bytes):
    col, images = _column()
    crcs = row_crcs([col])
    chunked = pa.chunked_array([col.slice(0, 11), col.slice(11, 20), col.slice(31)])
    assert bad_rows([chunked], crcs).size == 0
    damaged = _damaged(images, 33, 0, 0)
    parts = pa.chunked_array([damaged.slice(0, 11), damaged.slice(11, 20), damaged.slice(31)])
    assert bad_rows([parts], crcs).tolist() == [33]
    assert bad_rows([col.slice(30, 8)], crcs[30:38]).size == 0
    two = row_crcs([col, col])
    assert bad_rows([col, col], two).size == 0
    assert bad_rows([col, damaged], two).tolist() == [33]


def _zlib_row_crcs(columns: list[pa.Array], scope: int = vchecksum.SCOPE) -> np.ndarray:
    """Per-row CRCs as the first writer computed them: zlib, row by row, columns chained."""
    out = []
    spans = [_byte_spans(c, scope) for c in columns]
    for r in range(len(columns[0])):
        value = 0
        for data, starts, stops in spans:
            value = zlib.crc32(data[int(starts[r]) : int(stops[r])], value)
        out.append(value)
    return np.array(out, dtype=np.uint32)


def _legacy_vortex(table: pa.Table, path, crcs: np.ndarray) -> None:
    """A Vortex file as omeframe wrote them before running CRCs: one ``uint32`` row CRC in the hidden column."""
    import vortex

    probe = path.with_name("probe-" + path.name)
    vfile.write_vortex_table(table, probe)  # only for the schema-bearing name of the hidden column
    hidden = str(vfile._open(probe).dtype.names()[-1])
    hidden = re.sub(r"@[0-9a-f]{32}(?=~)", "", hidden)  # no footer seal then (see omeframe.formats.vortex.seal)
    probe.unlink()
    out = table.append_column(pa.field(hidden, pa.uint32()), pa.array(crcs, type=pa.uint32()))
    vortex.io.write(out, str(path))


def test_files_with_row_crcs_read_and_a_damaged_row_is_named(tmp_path, block_bytes):
    """Files of the earlier format (one row CRC per row) read back exactly, and a row whose
    pixels changed is named whether it is read whole or taken."""
    col, images = _column()
    table = pa.table({"img": col})
    _legacy_vortex(table, tmp_path / "ok.vortex", _zlib_row_crcs([col]))
    back = of.read_table(tmp_path / "ok.vortex")
    assert back.column("img").to_pylist() == col.to_pylist()
    # Store the intact rows' CRCs next to damaged pixels (as a flip in a Vortex segment would).
    _legacy_vortex(pa.table({"img": _damaged(images, 20, 100, 4)}), tmp_path / "bad.vortex", _zlib_row_crcs([col]))
    with pytest.raises(of.ChunkChecksumError, match=r"1 row\(s\) fail their CRC-32 \(rows 20\)"):
        of.read_table(tmp_path / "bad.vortex")
    with pytest.raises(of.ChunkChecksumError, match=r"rows 20\)"):
        of.read_table(tmp_path / "bad.vortex", rows=[40, 20, 3])
    taken = of.read_table(tmp_path / "bad.vortex", rows=[19, 21]).column("img").to_pylist()
    assert [r["chunks"] for r in taken] == [r["chunks"] for r in col.take([19, 21]).to_pylist()]


def _write_with_intact_crcs(intact: pa.Table, damaged: pa.Table, path, monkeypatch) -> None:
    """Write ``damaged`` with the CRCs of ``intact`` (as a flip inside a Vortex segment would leave them)."""
    stored = vchecksum.stored_crcs([intact.column(0).combine_chunks()])
    monkeypatch.setattr(vfile, "stored_crcs", lambda cols, scope, start: stored)
    with stale_body():
        vfile.write_vortex_table(damaged, path)
    monkeypatch.undo()


def _decode_visibly(table: pa.Table) -> None:
    """Decode every record; a missing chunk must be announced (as the hostile-record tests require)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", of.MissingChunksWarning)
        of.to_numpy_stack(table.column(0))


def test_running_crcs_name_damaged_rows_and_headers_fail_at_decode(tmp_path, monkeypatch):
    """A full read names every row whose pixel bytes changed; a changed chunk key or image size fails
    the read (their rows' header digests, scope 3) or the decode, and so does a cut between two rows'
    bytes (the rows' lengths no longer fold to the batch's CRC)."""
    col, images = _column()
    table = pa.table({"img": col})
    vfile.write_vortex_table(table, tmp_path / "ok.vortex")
    assert of.read_table(tmp_path / "ok.vortex").column("img").to_pylist() == col.to_pylist()
    recs = col.to_pylist()

    def written(rows_changed, edit):
        changed = [dict(r) for r in recs]
        for r in rows_changed:
            edit(changed[r])
        return pa.table({"img": pa.array(changed, type=col.type)})

    def flip_pixel(rec):
        rec["chunks"] = [dict(c) for c in rec["chunks"]]
        b = rec["chunks"][0]["pixel_bytes"]
        rec["chunks"][0]["pixel_bytes"] = bytes([b[0] ^ 1]) + b[1:]

    path = tmp_path / "pixels.vortex"
    _write_with_intact_crcs(table, written((5, 31), flip_pixel), path, monkeypatch)
    with pytest.raises(of.ChunkChecksumError, match=r"2 row\(s\) fail their CRC-32 \(rows 5, 31\)"):
        of.read_table(path)
    with pytest.raises(of.ChunkChecksumError, match=r"rows 31\)"):
        of.read_table(path, rows=[40, 31, 3])

    def move_chunk(rec):  # a chunk key changed: its bytes would land elsewhere
        rec["chunks"] = [dict(c) for c in rec["chunks"]]
        rec["chunks"][0]["x"] += 1

    def grow_image(rec):
        rec["pixels_meta"] = dict(rec["pixels_meta"], size_x=rec["pixels_meta"]["size_x"] + 1)

    for name, edit in (("key", move_chunk), ("size", grow_image)):
        path = tmp_path / f"{name}.vortex"
        _write_with_intact_crcs(table, written((5, 31), edit), path, monkeypatch)
        with pytest.raises((of.OmeframeError, of.MissingChunksWarning)):
            _decode_visibly(of.read_table(path))
    # Bytes moved from row 9 to row 8 (a damaged offset): the batch's bytes as a whole are intact,
    # the two rows' chunks no longer have their shapes' lengths.
    moved = [dict(r) for r in recs]
    a = [dict(c) for c in moved[8]["chunks"]]
    b = [dict(c) for c in moved[9]["chunks"]]
    a[-1]["pixel_bytes"] = a[-1]["pixel_bytes"] + b[0]["pixel_bytes"][:2]
    b[0]["pixel_bytes"] = b[0]["pixel_bytes"][2:]
    moved[8]["chunks"], moved[9]["chunks"] = a, b
    path = tmp_path / "moved.vortex"
    _write_with_intact_crcs(table, pa.table({"img": pa.array(moved, type=col.type)}), path, monkeypatch)
    with pytest.raises((of.OmeframeError, of.MissingChunksWarning)):
        _decode_visibly(of.read_table(path))
    with pytest.raises(of.ChunkChecksumError, match=r"rows 8\)"):  # a take checks each row's own CRC
        of.read_table(path, rows=[8])


@pytest.mark.parametrize("threads", [1, 2])
def test_a_full_read_of_many_batches_names_damaged_rows_in_every_batch(tmp_path, monkeypatch, threads):
    """A read of more than one Vortex batch (8,192 rows each) checks the batches on the caller's
    thread and the engine's helpers, which take them from one queue: every damaged row is named,
    in file order, whichever thread checked its batch; intact rows read back exactly."""
    n = 20_000  # three batches
    crops = (np.arange(n * 256, dtype=np.uint32).reshape(n, 1, 16, 16) % 251).astype(np.uint8)
    area = np.arange(n, dtype=np.float32)  # a feature column first: the records are the scan's second column
    table = pa.table({"area": area, "img": of.records_from_arrays(crops, dim_order="CYX", chunk_compression=None)})
    damaged = crops.copy()
    rows = [3, 8_200, 8_191, 19_999]  # batches 0, 1, 0 and 2
    for r in rows:
        damaged[r, 0, 7, 9] ^= 0x10
    bad_records = of.records_from_arrays(damaged, dim_order="CYX", chunk_compression=None)
    bad = pa.table({"area": area, "img": with_header_of(bad_records, table.column("img"))})
    path = tmp_path / "many.vortex"
    stored, _ = vchecksum.stored_crcs([table.column("img").combine_chunks()], vchecksum.SCOPE, 0)
    at = [0]

    def intact_crcs(cols, scope, start):  # the writer asks batch by batch
        part = stored[at[0] : at[0] + len(cols[0])]
        at[0] += len(part)
        return part, int(part[-1]) >> 32

    monkeypatch.setattr(vfile, "stored_crcs", intact_crcs)
    with stale_body():
        vfile.write_vortex_table(bad, path)
    monkeypatch.undo()
    assert at[0] == n
    assert len(vfile._open(path).splits()) == 3  # three batches
    previous = of.num_threads()
    of.set_num_threads(threads)
    try:
        with pytest.raises(of.ChunkChecksumError, match=r"4 row\(s\) fail their CRC-32 \(rows 3, 8191, 8200, 19999\)"):
            of.read_table(path)
        intact = tmp_path / "intact.vortex"
        vfile.write_vortex_table(table, intact)
        assert np.array_equal(of.to_numpy_stack(of.read_table(intact).column("img")).reshape(crops.shape), crops)
    finally:
        of.set_num_threads(previous)


def _list_encoded(n: int = 200) -> tuple[np.ndarray, pa.Table]:
    crops = np.random.default_rng(8).integers(0, 4000, (n, 2, 8, 8), dtype=np.uint16)
    recs = of.records_from_arrays(list(crops), dim_order="CYX", chunk_encoding="list")
    return crops, pa.table({"ome_arrow": recs})


def test_row_crcs_cover_list_encoded_chunk_pixels():
    crops, table = _list_encoded(5)
    col = table.column("ome_arrow")
    crc = row_crcs([col])
    changed = crops.copy()
    changed[3, 1, 4, 4] ^= 1
    recs = of.records_from_arrays(list(changed), dim_order="CYX", chunk_encoding="list")
    again = row_crcs([pa.chunked_array([recs])])
    assert (again != crc).tolist() == [False, False, False, True, False]
    assert (row_crcs([col], 1) == 0).all()  # the scope of older files covered no list-encoded pixels


def test_vortex_tables_of_list_encoded_chunks_check_their_pixels(tmp_path, monkeypatch):
    crops, table = _list_encoded()
    path = tmp_path / "list.vortex"
    changed = crops.copy()
    changed[7, 1, 4, 4] ^= 1  # as if row 7's pixel bytes had changed after the CRC was taken
    recs = of.records_from_arrays(list(changed), dim_order="CYX", chunk_encoding="list")
    recs = with_header_of(recs, table.column("ome_arrow"))  # the same header: its pixels changed alone
    _write_with_intact_crcs(table, pa.table({"ome_arrow": recs}), path, monkeypatch)
    with pytest.raises(of.ChunkChecksumError, match=r"rows 7\b"):
        vfile.read_vortex_table(path)
    vfile.write_vortex_table(table, path)
    back = vfile.read_vortex_table(path)
    assert vchecksum.SCOPE_KEY not in (back.schema.metadata or {})  # bookkeeping stays hidden
    assert np.array_equal(of.to_numpy_stack(back["ome_arrow"]), crops)


def test_vortex_tables_written_with_the_older_crc_scope_still_read(tmp_path, monkeypatch):
    crops, table = _list_encoded()
    monkeypatch.setattr(vfile, "SCOPE", 1)  # what files written before the scope key hold
    vfile.write_vortex_table(table, tmp_path / "old.vortex")
    monkeypatch.undo()
    assert np.array_equal(of.to_numpy_stack(vfile.read_vortex_table(tmp_path / "old.vortex")["ome_arrow"]), crops)
