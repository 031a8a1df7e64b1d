"""A catalog's own tables are checked like every other stored byte.

``catalog.parquet`` (one row per source file: paths, sizes, checksums, status)
is written with a CRC-32 in every page header and read through omeframe's
checked Parquet reader, so one flipped bit anywhere in it is a
``CorruptFileError`` or changes nothing. A rebuild refuses to copy the rows of
a damaged ``images.parquet`` into the new one (where they would get fresh,
valid CRCs), and ``images.parquet`` is on disk (fsynced, then its folder)
before ``catalog.parquet`` lists its rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile

import omeframe.catalog.commit as commit_mod
from omeframe.catalog import build, read_catalog
from omeframe.cli import main
from omeframe.model.errors import ChunkChecksumError, CorruptFileError
from omeframe.storage import atomic


def _source(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        tifffile.imwrite(folder / f"img{i}.tif", rng.integers(0, 4000, (2, 24, 24), dtype=np.uint16))


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    _source(tmp_path / "src", 4)
    out = tmp_path / "out.catalog"
    build(tmp_path / "src", out, workers=1, progress=False)
    return out


def _page_of(path: Path, column: str) -> int:
    """A byte inside the last page body of ``column`` in the first row group."""
    md = pq.read_metadata(path)
    for j in range(md.num_columns):
        cc = md.row_group(0).column(j)
        if cc.path_in_schema == column:
            start = cc.dictionary_page_offset or cc.data_page_offset
            return int(start + cc.total_compressed_size) - 2
    raise AssertionError(f"no column {column}")


def test_every_flipped_bit_of_catalog_parquet_is_refused_or_harmless(catalog: Path) -> None:
    path = catalog / "catalog.parquet"
    good = read_catalog(catalog)
    data = path.read_bytes()
    outcomes: dict[str, int] = {}
    for i in range(len(data)):
        raw = bytearray(data)
        raw[i] ^= 1
        path.write_bytes(bytes(raw))
        try:
            got = read_catalog(catalog)
        except CorruptFileError as exc:  # ChunkChecksumError among them
            assert str(path) in str(exc), exc
            kind = type(exc).__name__
        else:
            assert got.equals(good, check_metadata=True), f"byte {i}: a changed catalog read without an error"
            kind = "same"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    path.write_bytes(data)
    # page bodies are caught by their CRCs, the footer by its checks
    assert outcomes.get(ChunkChecksumError.__name__, 0) > 0 and outcomes.get(CorruptFileError.__name__, 0) > 0


def test_a_catalog_written_without_page_crcs_still_reads(catalog: Path) -> None:
    path = catalog / "catalog.parquet"
    table = read_catalog(catalog)
    pq.write_table(table, path, compression="zstd")  # as catalogs were written before page CRCs
    assert read_catalog(catalog).equals(table)


def test_verify_checks_catalog_parquet(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(catalog)]) == 0
    assert "ok: 4 source files listed" in capsys.readouterr().out
    path = catalog / "catalog.parquet"
    raw = bytearray(path.read_bytes())
    raw[_page_of(path, "urlpath")] ^= 0x10
    path.write_bytes(bytes(raw))
    assert main(["verify", str(catalog)]) == 1
    cap = capsys.readouterr()
    assert f"damaged: {path}" in cap.err and "CRC-32" in cap.err
    assert "FAILED: catalog.parquet is damaged" in cap.out


def test_a_rebuild_refuses_to_copy_a_damaged_images_table(catalog: Path, tmp_path: Path) -> None:
    images = catalog / "images.parquet"
    raw = bytearray(images.read_bytes())
    raw[_page_of(images, "urlpath")] ^= 0x10
    images.write_bytes(bytes(raw))
    _source(tmp_path / "src", 1, start=4)  # one new file: the rebuild rewrites images.parquet
    with pytest.raises(ChunkChecksumError, match="images.parquet"):
        build(tmp_path / "src", catalog, workers=1, progress=False)
    assert images.read_bytes() == bytes(raw)  # left as it was, not rewritten with fresh CRCs
    assert not list(catalog.glob(".pending-*"))


def test_images_parquet_is_durable_before_catalog_parquet_lists_it(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    synced: list[str] = []
    real_file, real_dir = commit_mod.fsync_file, commit_mod.fsync_dir
    monkeypatch.setattr(atomic, "COMMIT_HOOK", steps.append)
    monkeypatch.setattr(commit_mod, "fsync_file", lambda p: (synced.append(Path(p).name), real_file(p)))
    monkeypatch.setattr(commit_mod, "fsync_dir", lambda p: (synced.append(f"{Path(p).name}/"), real_dir(p)))
    _source(tmp_path / "src", 1, start=4)
    build(tmp_path / "src", catalog, workers=1, progress=False)
    assert [s for s in steps if s.endswith("images.parquet")] == [
        "fsync:images.parquet", "rename:images.parquet", "fsync-dir:images.parquet"
    ]
    assert steps.index("fsync-dir:images.parquet") < steps.index("rename:catalog.parquet")
    assert any(s.startswith(".pending-") for s in synced) and f"{catalog.name}/" in synced
