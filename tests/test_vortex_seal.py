"""The footer of each Vortex file omeframe writes is sealed by a CRC-32, checked before vortex parses it.

vortex-data trusts its footer: a flipped bit in the layout metadata can make
it allocate 10¹⁷ bytes and abort the process, beyond any ``except``. The
seal (in the hidden column's name, see ``omeframe.formats.vortex.seal``)
covers the bytes vortex reads when it opens a file, so such damage is
refused with ``CorruptFileError`` before vortex sees it.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pytest

import omeframe as of
from omeframe.cli import main as cli_main
from omeframe.formats.vortex import file as vfile
from omeframe.formats.vortex import seal as vseal
from omeframe.formats.vortex.arrow_dataset import vortex_plain_dataset

FOOTER = "footer of the Vortex file fails its CRC-32"


def _crops(n: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(2).integers(0, 255, (n, 3, size, size), dtype=np.uint8)


def _seal_of(path: Path) -> tuple[int, int, int]:
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
        at, start, crc = _seal_of(path)
        size = path.stat().st_size
        assert start == max(0, size - vseal.FIRST_READ)  # vortex-data 0.93 reads the last 64 KiB first
        covered = bytearray(path.read_bytes()[start:])
        covered[at - start + 17 : at - start + 25] = b"0" * 8
        assert zlib.crc32(covered) == crc
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
    name = range(path.read_bytes().rfind(vfile.SCHEMA_COLUMN_PREFIX.encode()), seal_at + 25 + 9)
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
    at, start, _ = _seal_of(path)
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
    assert _seal_of(tmp_path / "far.vortex")[1:] == (0, 0)
    assert "@" not in vfile._import_vortex().open(str(tmp_path / "old.vortex")).dtype.names()[-1]
    assert _seal_of(tmp_path / "zeros.vortex")[1:] == (0, 0)
    for name in ("old.vortex", "zeros.vortex", "far.vortex"):
        np.testing.assert_array_equal(of.to_numpy_stack(of.read_table(tmp_path / name).column(0)), crops)


def test_the_seal_is_found_past_a_lookalike_and_beyond_the_first_read():
    prefix = vfile.SCHEMA_COLUMN_PREFIX.encode()
    name = prefix + b"QUJD@" + b"0" * 15 + b"5" + b"1" * 8 + b"~abcdef01"
    tail = b"x" * 10 + name + b"y" * 5 + prefix + b"not a sealed name"
    assert vseal._sealed_name(tail, prefix) == (10 + len(prefix) + 4, 5, 0x11111111)
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
    assert vseal.check_seal(len(data), read, "x", prefix) == (len(data) - vseal.FIRST_READ, data[-vseal.FIRST_READ :])
    assert reads == [vseal.FIRST_READ]
    assert re.fullmatch(r"@0{24}", vseal.PLACEHOLDER)


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
