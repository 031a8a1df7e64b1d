"""Catalog builds over hostile folders finish, with rows for the valid files and error rows for the rest.

The folder holds a FIFO, a symlink loop, a ``*.tif`` symlink to ``/dev/zero``,
a TIFF whose IFD claims 10**9 x 10**9 pixels and a ``.npy`` whose header lies,
next to valid files. Nothing hostile is opened (FIFOs, devices, loops), every
file's work has a time budget, and a resumed build neither redoes the valid
files nor duplicates them.
"""

from __future__ import annotations

import importlib
import os
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile

import omeframe as of
from omeframe.catalog import build, read_catalog
from omeframe.catalog.discover import file_problem, open_image
from omeframe.catalog.records import file_checksum, stat_path
from omeframe.model.errors import NotRegularFileError

build_mod = importlib.import_module("omeframe.catalog.build")
Seams, build_with = build_mod.Seams, build_mod.build_with

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks (POSIX)")

VALID = {"good1": np.arange(64, dtype=np.uint16).reshape(8, 8),
         "good2": np.arange(256, dtype=np.uint8).reshape(16, 16)}


def _huge_tiff(path: Path) -> None:
    """A valid 4x4 TIFF whose ImageWidth and ImageLength tags then claim 10**9 pixels each."""
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8))
    b = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", b, 4)[0]
    for i in range(struct.unpack_from("<H", b, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag = struct.unpack_from("<H", b, entry)[0]
        if tag in (256, 257):
            struct.pack_into("<HHII", b, entry, tag, 4, 1, 10**9)
    path.write_bytes(bytes(b))


def _lying_npy(path: Path) -> None:
    header = "{'descr': '<u2', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header = header.ljust(117) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(16))


@pytest.fixture
def hostile(tmp_path) -> Path:
    d = tmp_path / "hostile"
    d.mkdir()
    np.save(d / "good1.npy", VALID["good1"])
    tifffile.imwrite(d / "good2.tif", VALID["good2"])
    os.mkfifo(d / "fifo.tif")
    os.symlink("loop_b.tif", d / "loop_a.tif")
    os.symlink("loop_a.tif", d / "loop_b.tif")
    os.symlink("/dev/zero", d / "zero.tif")
    os.symlink(d / "missing.npy", d / "dangling.npy")
    _huge_tiff(d / "huge.tif")
    _lying_npy(d / "liar.npy")
    return d


EXPECTED_ERRORS = {
    "fifo.tif": "NotRegularFileError",
    "loop_a.tif": "NotRegularFileError",
    "loop_b.tif": "NotRegularFileError",
    "zero.tif": "NotRegularFileError",
    "dangling.npy": "NotRegularFileError",
    "huge.tif": "CorruptFileError",
    "liar.npy": "ValueError",
}


def _rows(out: Path) -> dict[str, dict]:
    return {Path(r["urlpath"]).name: r for r in read_catalog(out).to_pylist()}


def _check(out: Path) -> None:
    rows = _rows(out)
    assert set(rows) == set(EXPECTED_ERRORS) | {"good1.npy", "good2.tif"}
    for name, kind in EXPECTED_ERRORS.items():
        assert rows[name]["status"] == "error" and rows[name]["error_type"] == kind, rows[name]
    assert "never opened" in rows["fifo.tif"]["error"] and "symlink loop" in rows["loop_a.tif"]["error"]
    assert "character device (through a symlink)" in rows["zero.tif"]["error"]
    assert "header is damaged" in rows["huge.tif"]["error"]
    images = pq.read_table(out / "images.parquet")
    got = {iid: a for iid, a in zip(images["image_id"].to_pylist(),
                                    of.to_numpy_batch(images["ome_arrow"]), strict=True)}
    assert sorted(got) == ["good1", "good2"]
    for iid, a in VALID.items():
        np.testing.assert_array_equal(got[iid][0, 0, 0], a)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_hostile_folder_builds_with_rows_for_every_file(hostile, tmp_path, workers):
    out = tmp_path / f"cat{workers}"
    res = build(hostile, out, workers=workers, progress=False, timeout=60)
    assert (res.n_ingested, res.n_errors) == (2, len(EXPECTED_ERRORS))
    _check(out)
    # a resumed build skips the valid files, retries the others, duplicates nothing
    again = build(hostile, out, workers=workers, progress=False, timeout=60)
    assert (again.n_skipped, again.n_ingested, again.n_errors) == (2, 0, len(EXPECTED_ERRORS))
    _check(out)


def test_discovery_and_file_records_never_open_special_files(hostile):
    for name in ("fifo.tif", "loop_a.tif", "zero.tif", "dangling.npy"):
        problem = file_problem(hostile / name)
        assert isinstance(problem, NotRegularFileError) and isinstance(problem, OSError)
        with pytest.raises(NotRegularFileError):
            open_image(hostile / name)
    for name in ("fifo.tif", "zero.tif"):
        with pytest.raises(NotRegularFileError):
            stat_path(hostile / name)
        with pytest.raises(NotRegularFileError):
            file_checksum(hostile / name)
    assert file_problem(hostile / "good1.npy") is None and file_problem(hostile / "absent.npy") is None


def test_the_checksum_reads_no_more_than_the_stated_size(tmp_path):
    p = tmp_path / "a.npy"
    p.write_bytes(b"x" * 1000)
    before = file_checksum(p, 1000)
    with open(p, "ab") as fh:  # the file grows after discovery stated its size
        fh.write(b"y" * 10_000)
    assert file_checksum(p, 1000) == before


def _stuck_open(path, reader=None):
    """Opens the valid files; hangs on ``stuck.npy`` (in Python: the worker's timer interrupts it)."""
    if Path(path).name == "stuck.npy":
        time.sleep(600)
    return open_image(path, reader)


def _deaf_open(path, reader=None):
    """Hangs on ``stuck.npy`` with the timer's signal blocked: only killing the worker ends it."""
    if Path(path).name == "stuck.npy":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(600)
    return open_image(path, reader)


def _stuck_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", VALID["good1"])
    np.save(src / "stuck.npy", VALID["good1"])
    np.save(src / "z.npy", VALID["good1"])
    return src


def test_a_file_past_its_timeout_gets_an_error_row(tmp_path):
    src = _stuck_tree(tmp_path)
    out = tmp_path / "cat"
    res = build_with(src, out, seams=Seams(open_image=_stuck_open), workers=1, progress=False, timeout=1)
    rows = _rows(out)
    assert rows["stuck.npy"]["error_type"] == "FileTimeoutError" and "timeout=1" in rows["stuck.npy"]["error"]
    assert rows["a.npy"]["status"] == rows["z.npy"]["status"] == "ok"
    assert (res.n_ingested, res.n_errors) == (2, 1)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)  # the build's timer handler is gone


def _still_written_open(path, reader=None):
    """Opens the file, then the acquisition appends to ``growing.tif`` while omeframe reads it."""
    src = open_image(path, reader)
    if Path(path).name == "growing.tif":
        time.sleep(0.02)  # past the file system's timestamp granularity
        with open(path, "ab") as f:
            f.write(b"\0" * 512)
    return src


@pytest.mark.parametrize("layout", ["records", "dataset"])
def test_a_file_that_changes_while_it_is_read_gets_an_error_row_and_is_read_again_next_build(tmp_path, layout):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", VALID["good1"])
    tifffile.imwrite(src / "growing.tif", VALID["good2"])
    out = tmp_path / "cat"
    res = build_with(src, out, seams=Seams(open_image=_still_written_open), workers=1, progress=False,
                     layout=layout)
    rows = _rows(out)
    assert rows["growing.tif"]["error_type"] == "FileChangedError", rows["growing.tif"]
    assert "changed while it was read" in rows["growing.tif"]["error"] and rows["a.npy"]["status"] == "ok"
    assert (res.n_ingested, res.n_errors) == (1, 1)
    if layout == "dataset":  # nothing of the changing file was committed
        assert of.open_dataset(out / "dataset").image_ids == [rows["a.npy"]["image_id"]]
    again = build(src, out, workers=1, progress=False, layout=layout)  # complete now: read again
    rows = _rows(out)
    assert rows["growing.tif"]["status"] == "ok" and again.n_ingested == 1
    if layout == "records":
        assert len(of.open_table(out / "images.parquet")) == 2  # each image once
    else:
        got = of.open_dataset(out / "dataset")
        assert sorted(got.image_ids) == sorted(r["image_id"] for r in rows.values())
        assert np.array_equal(got.read(rows["growing.tif"]["image_id"]).reshape(16, 16), VALID["good2"])


@pytest.mark.slow
def test_a_worker_deaf_to_its_timer_is_killed_and_replaced(tmp_path, request, monkeypatch):
    if not (os.environ.get("OMEFRAME_SLOW") == "1" or "slow" in (request.config.getoption("markexpr", "") or "")):
        pytest.skip("slow: run with -m slow or OMEFRAME_SLOW=1")
    monkeypatch.setenv("OMEFRAME_MP_START", "fork")  # the workers inherit the test's reader
    src = _stuck_tree(tmp_path)
    out = tmp_path / "cat"
    res = build_with(src, out, seams=Seams(open_image=_deaf_open), workers=2, progress=False, timeout=1,
                     batch_size=1)
    rows = _rows(out)
    assert rows["stuck.npy"]["error_type"] == "FileTimeoutError" and "killed" in rows["stuck.npy"]["error"]
    assert rows["a.npy"]["status"] == rows["z.npy"]["status"] == "ok"
    assert res.n_errors == 1


def test_timeout_must_be_positive(hostile, tmp_path):
    for bad in (0, -1, "10", True):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            build(hostile, tmp_path / "c", timeout=bad, progress=False)  # type: ignore[arg-type]


_KILLED_REBUILD = """
import os, sys, numpy as np
import omeframe as of
from omeframe.catalog.build import Seams, build_with
from omeframe.catalog.commit import write_catalog

src, out, where = sys.argv[1], sys.argv[2], sys.argv[3]

def dying_write_catalog(path, table):
    if where == "before":
        os._exit(9)                      # kill -9 after images.parquet and the dataset were committed
    write_catalog(path, table)
    os._exit(9)                          # ... or right after the commit point

build_with(src, out, seams=Seams(write_catalog=dying_write_catalog), workers=1, progress=False,
           max_record_bytes=5000)
"""


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_rebuild_killed_at_its_commit_resumes_without_duplicates(tmp_path, where):
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        np.save(src / f"small{i}.npy", rng.integers(0, 255, (8, 8), dtype=np.uint8))
    np.save(src / "large.npy", rng.integers(0, 60000, (64, 64), dtype=np.uint16))  # 8 KiB: to the dataset
    out = tmp_path / "cat"
    build(src, out, workers=1, progress=False, max_record_bytes=5000)
    for name in ("small1.npy", "large.npy"):  # changed files: re-ingested under their old image ids
        np.save(src / name, rng.integers(0, 255, (8, 8) if "small" in name else (64, 64),
                                         dtype=np.uint8 if "small" in name else np.uint16))
    script = tmp_path / "run.py"
    script.write_text(_KILLED_REBUILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, str(script), str(src), str(out), where], env=env, capture_output=True)
    assert r.returncode == 9, r.stderr.decode()
    build(src, out, workers=1, progress=False, max_record_bytes=5000)
    images = pq.read_table(out / "images.parquet")
    ids = images["image_id"].to_pylist()
    assert sorted(ids) == ["small0", "small1", "small2"]
    ds = of.open_dataset(out / "dataset")
    assert ds.image_ids == ["large"]
    np.testing.assert_array_equal(ds.read("large")[0, 0, 0], np.load(src / "large.npy"))
    got = dict(zip(ids, of.to_numpy_batch(images["ome_arrow"]), strict=True))
    np.testing.assert_array_equal(got["small1"][0, 0, 0], np.load(src / "small1.npy"))
    cat = read_catalog(out)
    assert sorted(Path(u).name for u in cat["urlpath"].to_pylist()) == sorted(p.name for p in src.iterdir())
    assert set(cat["status"].to_pylist()) == {"ok"}
