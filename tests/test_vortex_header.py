"""The header fields of Vortex record tables are checked as their pixels are.

A record's pixel CRC covers its pixel bytes alone. Since scope 3 the value
stored beside each row also binds the row's header digest (every field of the
record but its pixel bytes): an id, a name, a channel name or a timestamp that
changed on disk fails its row's check instead of reading back silently.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import omeframe as of
from omeframe.formats.vortex import checksum as vchecksum
from omeframe.formats.vortex import file as vfile

sys.path.insert(0, str(Path(__file__).parent))
from vortex_damage import write_flipped, write_header_changed  # noqa: E402

N = 300  # more rows than bad_rows checks one by one: the block-wise fold is exercised
ROW = 137


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(record: dict[str, Any]) -> None:
        node: Any = record
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _later(record: dict[str, Any]) -> None:
    record["acquisition_datetime"] = record["acquisition_datetime"] + datetime.timedelta(microseconds=1)


CHANGES = {
    "id": _set(("id",), "img-X"),
    "name": _set(("name",), "img-1370"),
    "type": _set(("type",), "ome.arroW"),
    "channel name": _set(("pixels_meta", "channels", 1, "name"), "C9"),
    "channel id": _set(("pixels_meta", "channels", 0, "id"), "ch-7"),
    "unit": _set(("pixels_meta", "physical_size_x_unit"), "nm"),
    "timestamp": _later,
}


def _table(features: bool = False) -> pa.Table:
    stack = np.random.default_rng(3).integers(0, 255, (N, 2, 8, 8), dtype=np.uint8)
    t = pa.table({"ome_arrow": of.records_from_arrays(stack, dim_order="CYX")})
    return t.append_column("area", pa.array(np.linspace(1, 2, N))) if features else t


@pytest.mark.parametrize("change", CHANGES.values(), ids=list(CHANGES))
def test_a_changed_header_field_fails_its_rows_check(tmp_path, change):
    t = _table()
    p = tmp_path / "t.vortex"
    write_header_changed(p, t, ROW, change)
    where = rf"pixel bytes or header fields of 1 row\(s\) fail their CRC-32 \(rows {ROW}\)"
    for read in (
        lambda: of.read_table(p),
        lambda: vfile.read_vortex_table(p, rows=[5, ROW]),
        lambda: vfile.read_vortex_table(p, columns=["ome_arrow"]),
    ):
        with pytest.raises(of.ChunkChecksumError, match=where) as caught:
            read()
        assert caught.value.rows == [ROW]  # type: ignore[attr-defined]
    # the rows around it read back as written
    assert vfile.read_vortex_table(p, rows=[ROW - 1, ROW + 1]).column(0).equals(t.column(0).take([ROW - 1, ROW + 1]))
    report = of.verify_table(p)
    failed = "pixel bytes or header fields fail their CRC-32"
    assert [(d.rows, d.message) for d in report.damaged] == [((ROW, ROW + 1), failed)]


def test_scans_check_the_header_fields(tmp_path):
    import polars as pl

    import omeframe.polars as ofpl
    from omeframe.formats.vortex.arrow_dataset import VortexPlainDataset

    t = _table(features=True)
    p = tmp_path / "t.vortex"
    write_header_changed(p, t, ROW, CHANGES["channel name"])
    with pytest.raises(of.ChunkChecksumError, match=rf"header fields .*rows {ROW}"):
        VortexPlainDataset(p).to_table()
    with pytest.raises(of.CorruptFileError, match="fail their CRC-32"):  # a filtered scan: the body is checked
        VortexPlainDataset(p).to_table(filter=pa.compute.field("area") > 1.2)
    with pytest.raises((of.ChunkChecksumError, pl.exceptions.ComputeError), match="header fields"):
        ofpl.scan(p).select(["ome_arrow", "area"]).collect()


def test_pixel_takes_of_intact_rows_read_through_a_damaged_header_elsewhere(tmp_path):
    t = _table()
    p = tmp_path / "t.vortex"
    write_header_changed(p, t, ROW, CHANGES["channel name"])
    stack = np.random.default_rng(3).integers(0, 255, (N, 2, 8, 8), dtype=np.uint8)
    rows = [ROW + 1, 3, ROW - 1]
    assert np.array_equal(of.open_table(p).to_numpy(rows=rows), stack[rows])
    # a take of pixels reads the pixel fields and the rows' own CRCs, not the channel names: its pixels are right
    assert np.array_equal(of.open_table(p).to_numpy(rows=[ROW, 3]), stack[[ROW, 3]])


@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_files_of_earlier_scopes_still_read_and_check_their_pixels(tmp_path, monkeypatch, mask):
    t = _table()
    p = tmp_path / "old.vortex"
    monkeypatch.setattr(vfile, "SCOPE", 2)  # running CRCs beside the rows' own, as omeframe wrote them before
    vfile.write_vortex_table(t, p)
    monkeypatch.undo()
    assert vfile._crc_scope(vfile._open(p).dtype.names()[-1]) == 2
    intact = t.column(0).combine_chunks()
    assert of.read_table(p).column("ome_arrow").combine_chunks().equals(intact)
    assert vfile.read_vortex_table(p, rows=[ROW]).column(0).combine_chunks().equals(intact.take([ROW]))
    stack = np.random.default_rng(3).integers(0, 255, (N, 2, 8, 8), dtype=np.uint8)
    damaged = tmp_path / "damaged.vortex"
    write_flipped(damaged, stack, ROW, 1, mask, scope=2)
    assert vfile._crc_scope(vfile._open(damaged).dtype.names()[-1]) == 2
    for read in (lambda: of.read_table(damaged), lambda: vfile.read_vortex_table(damaged, rows=[4, ROW])):
        with pytest.raises(of.ChunkChecksumError, match=rf"the pixel bytes of 1 row\(s\) .*rows {ROW}\)"):
            read()
    new = tmp_path / "new.vortex"
    vfile.write_vortex_table(t, new)
    assert vfile._crc_scope(vfile._open(new).dtype.names()[-1]) == vchecksum.SCOPE == 3


def test_a_scanned_batch_folds_to_its_rows_crcs_whatever_their_lengths():
    # a full read ties the CRC the scan took of a batch to the rows' expected CRCs without a second pass
    rng = np.random.default_rng(5)
    shapes = [(3, 5), (16, 16), (1, 1), (40, 7)] * 40
    for compression in (None, "zstd"):  # raw rows of several lengths; zstd frames of as many lengths
        col = of.records_from_arrays([rng.integers(0, 9, s, dtype=np.uint8) for s in shapes], dim_order="YX",
                                     chunk_compression=compression)
        rows = vchecksum.row_crcs([col])
        measured = vchecksum.batch_crc([col], vchecksum.SCOPE)
        assert measured is not None
        assert vchecksum.folds_to([col], rows, measured, vchecksum.SCOPE)
        damaged = rows.copy()
        damaged[77] ^= 4
        assert not vchecksum.folds_to([col], damaged, measured, vchecksum.SCOPE)
        assert not vchecksum.folds_to([col], rows, (measured[0], measured[1] + 1), vchecksum.SCOPE)
    same = of.records_from_arrays(rng.integers(0, 9, (200, 4, 4), dtype=np.uint8), dim_order="YX",
                                  chunk_compression=None)  # one length: the fold of equal pieces
    measured = vchecksum.batch_crc([same], vchecksum.SCOPE)
    assert measured is not None and vchecksum.folds_to([same], vchecksum.row_crcs([same]), measured, vchecksum.SCOPE)


def test_a_table_read_again_reuses_its_header_digests_and_damage_still_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(vfile, "body_intact", lambda *a: None)  # as files sealed before the body's CRC: rows checked
    t = _table()
    intact, damaged = tmp_path / "intact.vortex", tmp_path / "damaged.vortex"
    vfile.write_vortex_table(t, intact)
    write_header_changed(damaged, t, ROW, CHANGES["name"])
    vchecksum._DIGESTS.clear()  # the writer's own digests may be kept: start from none
    calls = []
    digests = vchecksum.row_digests
    monkeypatch.setattr(vchecksum, "row_digests", lambda columns: calls.append(1) or digests(columns))
    first = of.read_table(intact)
    hashed = len(calls)
    assert hashed >= 1
    assert of.read_table(intact).equals(first)
    assert len(calls) == hashed  # the same header values: their digests are reused, not hashed again
    for _ in range(2):  # the damaged table's header values differ: hashed, and failing, every time
        with pytest.raises(of.ChunkChecksumError, match=rf"header fields .*\(rows {ROW}\)"):
            of.read_table(damaged)
    assert len(calls) == hashed + 1  # its digests are kept too: the second read fails against them
    assert vchecksum._fingerprint([pa.chunked_array([t.column(0).combine_chunks().slice(1)])]) is None  # a slice



def test_the_fingerprint_a_scan_takes_batch_by_batch_is_the_one_of_the_whole_column(tmp_path, monkeypatch):
    batches = pa.chunked_array(
        [of.records_from_arrays(np.full((k, 2, 8, 8), k, np.uint8), dim_order="CYX") for k in (3, 5)]
    )
    whole = vchecksum._fingerprint([batches])
    joined = vchecksum.joined_fingerprint([batches.type], [vchecksum.batch_prints([c]) for c in batches.chunks])
    assert whole is not None and joined == whole
    assert vchecksum.joined_fingerprint([batches.type], [None, vchecksum.batch_prints([batches.chunk(1)])]) is None
    # the key a full read takes from its scan finds the digests a call on the read column looks for
    monkeypatch.setattr(vfile, "body_intact", lambda *a: None)  # as a file sealed before the body's CRC
    vfile.write_vortex_table(_table(), tmp_path / "t.vortex")
    vchecksum._DIGESTS.clear()
    column = of.read_table(tmp_path / "t.vortex").column(0)
    assert list(vchecksum._DIGESTS) == [vchecksum._fingerprint([column])]


def test_the_fingerprint_leaves_out_the_pixel_bytes_alone():
    def records(pixels: int, name: str) -> pa.Array:
        col = of.records_from_arrays(np.full((4, 2, 8, 8), pixels, np.uint8), dim_order="CYX", compression=None)
        rows = col.to_pylist()
        for r in rows:  # the same header values whatever the pixels (records_from_arrays stamps the time)
            r["acquisition_datetime"] = datetime.datetime(2026, 1, 1)
        rows[2]["name"] = name
        return pa.array(rows, col.type)

    base = vchecksum._fingerprint([records(1, "a")])
    assert base is not None
    assert vchecksum._fingerprint([records(2, "a")]) == base  # other pixel bytes: the digests still apply
    assert vchecksum._fingerprint([records(1, "b")]) != base  # another name: hashed again
