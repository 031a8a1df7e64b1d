"""The footer of each Vortex file omeframe writes is sealed by a CRC-32, checked before vortex parses it.

vortex-data trusts its footer: a flipped bit in the layout metadata can make
it allocate 10¹⁷ bytes and abort the process, beyond any ``except``. The
seal (in the hidden column's name, see ``omeframe.formats.vortex.seal``)
covers the bytes vortex reads when it opens a file, so such damage is
refused with ``CorruptFileError`` before vortex sees it. It also holds a
CRC-32 of the bytes before the footer (the body), which full reads check
before vortex decodes them, in place of the rows' checks.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

import omeframe as of
from omeframe.cli import main as cli_main
from omeframe.formats.vortex import file as vfile
from omeframe.formats.vortex import seal as vseal
from omeframe.formats.vortex.arrow_dataset import vortex_plain_dataset
from omeframe.storage import files

FOOTER = "footer of the Vortex file fails its CRC-32"


def _crops(n: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(2).integers(0, 255, (n, 3, size, size), dtype=np.uint8)


def _seal_of(path: Path) -> tuple[int, int, int, int | None]:
    data = path.read_bytes()
    found = vseal._sealed_name(data, vfile.SCHEMA_COLUMN_PREFIX.encode())
    assert found is not None
    return found


def _flipped(path: Path, out: Path, at: int, bit: int = 0) -> Path:
    data = bytearray(path.read_bytes())
    data[at] ^= 1 << bit
    out.write_bytes(bytes(data))
    return out


def test_a_written_table_is_sealed_and_its_seal_covers_what_vortex_reads_first(tmp_path):
    small, large = tmp_path / "small.vortex", tmp_path / "large.vortex"
    of.write_table(small, _crops(8), dim_order="CYX", format="vortex")
    of.write_table(large, _crops(2000), dim_order="CYX", format="vortex", columns={"area": np.arange(2000.0)})
    for path in (small, large):
        at, start, crc, body = _seal_of(path)
        size = path.stat().st_size
        assert start == max(0, size - vseal.FIRST_READ)  # vortex-data 0.93 reads the last 64 KiB first
        covered = bytearray(path.read_bytes()[start:])
        covered[at - start + 17 : at - start + 25] = b"0" * 8
        assert zlib.crc32(covered) == crc
        assert body == zlib.crc32(path.read_bytes()[:start])  # the body's CRC: 0 for a table sealed whole
        assert vfile.check_vortex_body(path)
    np.testing.assert_array_equal(of.to_numpy_stack(of.read_table(large).column(0)), _crops(2000))


def test_every_flipped_bit_of_a_small_table_is_refused_before_vortex_parses_the_damage(tmp_path):
    # a table smaller than vortex's first read is sealed whole: a flip anywhere is refused before vortex
    # opens the file, except in the hidden column's name itself (the seal is then not found, vortex parses
    # a footer intact but for the name, and the name's own CRC refuses it)
    path = tmp_path / "t.vortex"
    of.write_table(path, _crops(6, 8), dim_order="CYX", format="vortex", columns={"well": np.arange(6)})
    size = path.stat().st_size
    assert size < vseal.FIRST_READ
    seal_at = _seal_of(path)[0]
    name = range(path.read_bytes().rfind(vfile.SCHEMA_COLUMN_PREFIX.encode()), seal_at + 33 + 9)
    sealed = in_name = 0
    for at in range(0, size, 7):
        bad = _flipped(path, tmp_path / "bad.vortex", at, bit=at % 8)
        try:
            vfile._open(str(bad))
        except of.CorruptFileError as exc:
            if FOOTER in str(exc):
                sealed += 1
                continue
        assert at in name  # refused by vortex (a name that is not UTF-8), or by the name's CRC
        in_name += 1
        with pytest.raises(of.CorruptFileError):
            of.read_table(bad)
    assert sealed > 4 * in_name > 0


def test_a_damaged_footer_of_a_large_table_fails_every_kind_of_open(tmp_path):
    path = tmp_path / "t.vortex"
    n = 3000
    of.write_table(path, _crops(n), dim_order="CYX", format="vortex", columns={"area": np.arange(float(n))})
    size = path.stat().st_size
    assert size > 2 * vseal.FIRST_READ
    bad = _flipped(path, tmp_path / "bad.vortex", size - 700, bit=3)
    with pytest.raises(of.CorruptFileError, match=FOOTER):
        of.read_table(bad)
    with pytest.raises(of.CorruptFileError, match=FOOTER):
        of.open_table(bad).to_numpy([0, 1])
    with pytest.raises(of.CorruptFileError, match=FOOTER):
        vortex_plain_dataset(bad)
    assert cli_main(["verify", str(path)]) == 0
    assert cli_main(["verify", str(bad)]) == 1
    # a flipped pixel before the sealed bytes is not the seal's: the row CRCs name its row
    at = path.read_bytes().find(_crops(n)[10, 0].tobytes())
    assert 0 < at < size - vseal.FIRST_READ
    with pytest.raises(of.ChunkChecksumError, match=r"\(rows 10\)"):
        of.read_table(_flipped(path, tmp_path / "data.vortex", at + 5, bit=2))


def test_a_damaged_seal_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "t.vortex"
    of.write_table(path, _crops(4), dim_order="CYX", format="vortex")
    at, start, _, _ = _seal_of(path)
    data = bytearray(path.read_bytes())
    late = bytearray(data)
    late[at + 1 : at + 17] = f"{at + 100:016x}".encode()  # a start after the seal itself
    (tmp_path / "late.vortex").write_bytes(bytes(late))
    with pytest.raises(of.CorruptFileError, match="starts at byte .* after the seal itself"):
        of.read_table(tmp_path / "late.vortex")
    far = bytearray(data)
    far[at + 1 : at + 17] = f"{0:016x}".encode()
    monkeypatch.setattr(vseal, "SEARCH_BYTES", len(data) // 2)  # a start further from the end than a search goes
    (tmp_path / "far.vortex").write_bytes(bytes(far))
    with pytest.raises(of.CorruptFileError, match=r"starts at byte 0, more than \d+ bytes before the end"):
        of.read_table(tmp_path / "far.vortex")
    monkeypatch.undo()
    digit = bytearray(data)
    digit[at + 20] = ord("g")  # not hexadecimal: no seal found, and the name's schema no longer parses
    (tmp_path / "digit.vortex").write_bytes(bytes(digit))
    with pytest.raises(of.CorruptFileError):
        of.read_table(tmp_path / "digit.vortex")


def test_tables_without_a_seal_still_read(tmp_path, monkeypatch):
    crops = _crops(5)
    monkeypatch.setattr(vfile, "PLACEHOLDER", "")  # as written before the seal
    of.write_table(tmp_path / "old.vortex", crops, dim_order="CYX", format="vortex")
    monkeypatch.setattr(vfile, "PLACEHOLDER", vseal.PLACEHOLDER)
    monkeypatch.setattr(vfile, "seal_file", lambda path, vortex: False)  # a footer the writer could not seal
    of.write_table(tmp_path / "zeros.vortex", crops, dim_order="CYX", format="vortex")
    monkeypatch.undo()
    monkeypatch.setattr(vseal, "SEARCH_BYTES", 1000)  # what vortex reads at open lies further back: not sealed
    of.write_table(tmp_path / "far.vortex", crops, dim_order="CYX", format="vortex")
    monkeypatch.undo()
    assert _seal_of(tmp_path / "far.vortex")[1:] == (0, 0, 0)
    assert "@" not in vfile._import_vortex().open(str(tmp_path / "old.vortex")).dtype.names()[-1]
    assert _seal_of(tmp_path / "zeros.vortex")[1:] == (0, 0, 0)
    for name in ("old.vortex", "zeros.vortex", "far.vortex"):
        np.testing.assert_array_equal(of.to_numpy_stack(of.read_table(tmp_path / name).column(0)), crops)


def test_the_seal_is_found_past_a_lookalike_and_beyond_the_first_read():
    prefix = vfile.SCHEMA_COLUMN_PREFIX.encode()
    name = prefix + b"QUJD@" + b"0" * 15 + b"5" + b"1" * 8 + b"~abcdef01"
    tail = b"x" * 10 + name + b"y" * 5 + prefix + b"not a sealed name"
    assert vseal._sealed_name(tail, prefix) == (10 + len(prefix) + 4, 5, 0x11111111, None)  # before the body CRC
    body = prefix + b"QUJD@" + b"0" * 15 + b"5" + b"1" * 8 + b"2" * 8 + b"~abcdef01"
    assert vseal._sealed_name(b"x" + body, prefix) == (1 + len(prefix) + 4, 5, 0x11111111, 0x22222222)
    # a name further from the end than the first read: the search reads more
    reads = []
    data = b"z" * 100 + name + b"w" * 200_000

    def read(at: int, n: int) -> bytes:
        reads.append(n)
        return data[at : at + n]

    with pytest.raises(of.CorruptFileError, match=FOOTER + r" \(bytes 5 to"):  # a CRC that does not match
        vseal.check_seal(len(data), read, "x", prefix)
    assert reads[0] == vseal.FIRST_READ and max(reads) > vseal.FIRST_READ
    # a name written before the seal ends the search at the first read (nothing more is read for it)
    reads.clear()
    data = b"z" * 200_000 + prefix + b"QUJD~abcdef01" + b"w" * 20_000
    assert vseal.check_seal(len(data), read, "x", prefix) == vseal.Seal(
        len(data) - vseal.FIRST_READ, data[-vseal.FIRST_READ :]
    )
    assert reads == [vseal.FIRST_READ]
    assert re.fullmatch(r"@0{32}", vseal.PLACEHOLDER)


def test_a_remote_table_with_a_damaged_footer_is_refused(tmp_path):
    from omeframe.formats.vortex.file import read_vortex_table
    from omeframe.storage.remote import RemoteStore

    local = tmp_path / "t.vortex"
    of.write_table(local, _crops(10, 4), dim_order="CYX", format="vortex")
    store = RemoteStore(f"memory://omeframe-seal-{tmp_path.name}")
    store.put("good.vortex", local.read_bytes())
    store.put("bad.vortex", _flipped(local, tmp_path / "bad.vortex", local.stat().st_size - 300).read_bytes())
    assert read_vortex_table(store.open("good.vortex")).num_rows == 10
    with pytest.raises(of.CorruptFileError, match=FOOTER):
        read_vortex_table(store.open("bad.vortex"))


def _with_area(path: Path, n: int = 2000) -> tuple[np.ndarray, int]:
    """Write ``n`` crops beside an ``area`` feature to ``path``: the crops, and where the sealed footer starts."""
    crops = _crops(n)
    of.write_table(path, crops, dim_order="CYX", format="vortex", columns={"area": np.arange(float(n))})
    start = _seal_of(path)[1]
    assert start > 0  # a body before the footer
    return crops, start


def _counting_row_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the full reads that check their rows one by one (those whose body was not found intact)."""
    calls: list[int] = []
    check = vfile._check_crcs
    monkeypatch.setattr(vfile, "_check_crcs", lambda *a, **k: calls.append(1) or check(*a, **k))
    return calls


def test_a_full_read_checks_the_body_in_place_of_the_rows(tmp_path, monkeypatch):
    n = 2000
    path = tmp_path / "t.vortex"
    crops, start = _with_area(path, n)
    rows_checked = _counting_row_checks(monkeypatch)
    intact = of.read_table(path)
    np.testing.assert_array_equal(of.to_numpy_stack(intact.column(0)), crops)
    assert rows_checked == []  # the body's CRC stood for the rows' checks
    # the file replaced by another at the same path: its own body is checked, not the last one's map
    other = _crops(n)[::-1].copy()
    of.write_table(path, other, dim_order="CYX", format="vortex", columns={"area": np.arange(float(n))})
    np.testing.assert_array_equal(of.to_numpy_stack(of.read_table(path).column(0)), other)
    assert rows_checked == []
    of.write_table(path, crops, dim_order="CYX", format="vortex", columns={"area": np.arange(float(n))})
    # the leading magic, which vortex does not read: a damage no row's check sees
    magic = _flipped(path, tmp_path / "magic.vortex", 0, bit=2)
    with pytest.raises(of.CorruptFileError, match=rf"bytes 0 to {start} of the Vortex file .* fail their CRC-32"):
        vfile.check_vortex_body(magic)
    written = of.read_table(path)
    assert of.read_table(magic).equals(written)  # the rows, checked one by one, are intact: the exact table
    assert rows_checked == [1]
    report = of.verify_table(magic)
    assert [(d.rows, "fail their CRC-32" in d.message) for d in report.damaged] == [((0, 0), True)]
    assert cli_main(["verify", str(magic)]) == 1
    # a pixel flipped in place after a full read of the same file (same inode): found, and its row named
    at = path.read_bytes().find(crops[10, 0].tobytes())
    assert 0 < at < start
    with open(path, "r+b") as fh:
        fh.seek(at + 5)
        byte = fh.read(1)
        fh.seek(at + 5)
        fh.write(bytes([byte[0] ^ 4]))
    with pytest.raises(of.ChunkChecksumError, match=r"\(rows 10\)"):
        of.read_table(path)


def _seal_before_body_crc(path: Path, vortex: object) -> bool:
    """Seal ``path`` as omeframe did before the body's CRC: ``start`` and the footer's CRC-32 alone."""
    data = bytearray(Path(path).read_bytes())
    start = max(0, len(data) - vseal.FIRST_READ)
    at = data.index(b"@" + b"0" * 24, start)
    data[at + 1 : at + 17] = f"{start:016x}".encode()
    data[at + 17 : at + 25] = f"{zlib.crc32(data[start:]):08x}".encode()
    Path(path).write_bytes(bytes(data))
    return True


def test_files_sealed_before_the_body_crc_read_with_their_rows_checked(tmp_path, monkeypatch):
    n = 2000
    crops = _crops(n)
    path = tmp_path / "old.vortex"
    with monkeypatch.context() as m:
        m.setattr(vfile, "PLACEHOLDER", "@" + "0" * 24)
        m.setattr(vfile, "seal_file", _seal_before_body_crc)
        of.write_table(path, crops, dim_order="CYX", format="vortex")
    _, start, _, body = _seal_of(path)
    assert start > 0 and body is None
    assert vfile.check_vortex_body(path) is False  # nothing to check the body against
    rows_checked = _counting_row_checks(monkeypatch)
    np.testing.assert_array_equal(of.to_numpy_stack(of.read_table(path).column(0)), crops)
    assert rows_checked == [1]
    with pytest.raises(of.CorruptFileError, match=FOOTER):  # its footer's seal is still checked
        of.read_table(_flipped(path, tmp_path / "footer.vortex", path.stat().st_size - 300))
    at = path.read_bytes().find(crops[7, 1].tobytes())
    with pytest.raises(of.ChunkChecksumError, match=r"\(rows 7\)"):
        of.read_table(_flipped(path, tmp_path / "pixel.vortex", at + 3))


def test_a_file_renamed_over_after_its_open_is_not_taken_for_the_one_checked(tmp_path, monkeypatch):
    crops = _crops(2000)
    path, copy = tmp_path / "t.vortex", tmp_path / "copy.vortex"
    of.write_table(path, crops, dim_order="CYX", format="vortex")
    copy.write_bytes(path.read_bytes())
    at = path.read_bytes().find(crops[3, 2].tobytes())
    _flipped(copy, path, at + 1)  # the file vortex opens has a damaged pixel
    _, sealed = vfile._open_local(str(path))
    assert sealed is not None and sealed.body_intact(str(path)) is False
    copy.replace(path)  # an intact copy renamed over it: its body matches the seal ...
    assert sealed.body_intact(str(path)) is False  # ... but vortex still reads the damaged file it opened
    assert vfile._open_local(str(path))[1].body_intact(str(path)) is True
    # a rename between the seal's check and vortex's open: no seal to trust
    vortex = vfile._import_vortex()
    other = tmp_path / "other.vortex"
    of.write_table(other, crops, dim_order="CYX", format="vortex")

    class Renaming:
        def open(self, p: str, **kw: object) -> object:
            other.replace(p)
            return vortex.open(p, **kw)

    monkeypatch.setattr(vfile, "_import_vortex", Renaming)
    assert vfile._open_local(str(path))[1] is None


def test_a_whole_scan_of_the_dataset_checks_the_body_in_place_of_the_rows(tmp_path, monkeypatch):
    from vortex_damage import write_flipped

    n = 2000
    path = tmp_path / "t.vortex"
    crops, _ = _with_area(path, n)
    checked: list[int] = []
    call = vfile.RowCrcCheck.__call__
    monkeypatch.setattr(vfile.RowCrcCheck, "__call__", lambda self, b: checked.append(b.num_rows) or call(self, b))
    ds = vortex_plain_dataset(path)
    table = ds.to_table()  # what Polars' scan_pyarrow_dataset asks for: every batch taken
    np.testing.assert_array_equal(of.to_numpy_stack(table.column("ome_arrow")), crops)
    assert checked == []
    # a stream the caller may stop: the rows' checks, not the whole body
    assert sum(b.num_rows for b in ds.to_batches()) == n and sum(checked) == n
    checked.clear()
    # a filter (rows chosen by value), the features alone: the body, once for this version of the file
    assert ds.to_table(filter=pc.field("area") < 10).num_rows == 10 and not checked
    assert vfile.is_verified(files.file_key(path))
    assert ds.to_table(columns=["area"]).column("area").to_pylist() == list(np.arange(float(n)))
    assert sum(b.num_rows for b in ds.to_batches()) == n and not checked
    # a body that fails its CRC: the rows are checked and the damaged one named
    write_flipped(tmp_path / "bad.vortex", crops[:300], row=27, chunk=1, mask=0x10)
    with pytest.raises(of.ChunkChecksumError, match=r"rows 27\b"):
        vortex_plain_dataset(tmp_path / "bad.vortex").to_table()


def test_a_full_read_of_a_remote_table_fetches_it_whole_and_checks_its_body(tmp_path, monkeypatch):
    from omeframe.formats.vortex.file import read_vortex_table
    from omeframe.storage.remote import RemoteStore

    local = tmp_path / "t.vortex"
    crops, start = _with_area(local)
    at = local.read_bytes().find(crops[12, 1].tobytes())
    assert 0 < at < start
    store = RemoteStore(f"memory://omeframe-body-{tmp_path.name}")
    store.put("good.vortex", local.read_bytes())
    store.put("magic.vortex", _flipped(local, tmp_path / "magic.vortex", 0, bit=2).read_bytes())
    store.put("pixel.vortex", _flipped(local, tmp_path / "pixel.vortex", at + 2).read_bytes())
    rows_checked = _counting_row_checks(monkeypatch)
    monkeypatch.setattr(vfile, "MAX_REQUEST_BYTES", 100_000)  # fetched in several concurrent pieces
    np.testing.assert_array_equal(of.to_numpy_stack(read_vortex_table(store.open("good.vortex")).column(0)), crops)
    assert rows_checked == []
    # bytes no value comes from: the rows, checked one by one, give the exact table
    assert read_vortex_table(store.open("magic.vortex")).equals(read_vortex_table(store.open("good.vortex")))
    assert rows_checked == [1]
    with pytest.raises(of.ChunkChecksumError, match=r"\(rows 12\)"):
        read_vortex_table(store.open("pixel.vortex"))
    # an object larger than a quarter of the memory limit: read by ranges, its rows checked
    rows_checked.clear()
    previous = of.set_max_bytes(4 * local.stat().st_size - 1)
    try:
        np.testing.assert_array_equal(of.to_numpy_stack(read_vortex_table(store.open("good.vortex")).column(0)), crops)
    finally:
        of.set_max_bytes(previous)
    assert rows_checked == [1]
    # some columns: ranged reads of what they need, and the rows' checks
    rows_checked.clear()
    part = read_vortex_table(store.open("good.vortex"), columns=["ome_arrow"])
    np.testing.assert_array_equal(of.to_numpy_stack(part.column(0)), crops)
    assert rows_checked == [1]
    store.put("footer.vortex", _flipped(local, tmp_path / "footer.vortex", local.stat().st_size - 300).read_bytes())
    with pytest.raises(of.CorruptFileError, match=FOOTER):  # the footer, checked again on the bytes fetched
        read_vortex_table(store.open("footer.vortex"))
