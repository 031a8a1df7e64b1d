"""Catalog workers and the build's seams.

* A forked worker decodes in parallel, correctly, although the parent's thread
  pool and helper threads were busy (and the pool's lock held) at the fork: the
  catalog relies on :mod:`omeframe.engine.threads`' after-fork hook, it has no
  reset of its own.
* The pool seam: workers that die at start-up give a :class:`CatalogError`
  that says so, instead of an error row for every file.
* The clock seam: ``ingested_at`` comes from :attr:`Seams.now`.
* ``progress=None`` (the default) shows no bar off a terminal.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

import omeframe as of
from omeframe.catalog import CatalogError, build, read_catalog
from omeframe.catalog.worker import init_worker
from omeframe.engine import threads as _threads

build_mod = importlib.import_module("omeframe.catalog.build")
Seams, build_with = build_mod.Seams, build_mod.build_with

@pytest.fixture()
def fork_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers start by fork (available on every Linux Python), so they inherit the test's patches."""
    monkeypatch.setenv("OMEFRAME_MP_START", "fork")


needs_fork = pytest.mark.usefixtures("fork_workers")


def _npy_tree(root: Path, n: int = 4) -> dict[str, np.ndarray]:
    root.mkdir(parents=True)
    arrays = {}
    for i in range(n):
        a = np.random.default_rng(i).integers(0, 255, (12, 10), dtype=np.uint8)
        np.save(root / f"img{i}.npy", a)
        arrays[f"img{i}"] = a
    return arrays


def _worker_main(conn: object, path: str) -> None:
    init_worker()  # what every catalog worker runs first
    conn.send(_decode_in_worker(path))  # type: ignore[attr-defined]
    conn.close()  # type: ignore[attr-defined]


def _decode_in_worker(path: str) -> tuple[np.ndarray, list[str], list[str]]:
    """In a catalog worker: decode a many-chunk image with two threads; report which
    threads took part (thread objects never survive a fork: any running here was
    started here)."""
    _threads.set_num_threads(2)
    try:
        ran_on: list[str] = []

        def item(_: int) -> None:
            ran_on.append(threading.current_thread().name)
            time.sleep(0.02)  # long enough for the woken helper to take items too

        _threads.run_each(item, list(range(8)))
        pixels = of.scan(path).export("numpy")
        alive = [t.name for t in threading.enumerate() if t.name.startswith("omeframe")]
        return pixels, sorted(set(ran_on)), alive
    finally:
        _threads.set_num_threads(1)


@needs_fork
def test_a_forked_worker_decodes_in_parallel_without_a_catalog_reset(tmp_path):
    a = np.random.default_rng(0).integers(0, 60000, (1, 1, 1, 1024, 1024), dtype=np.uint16)
    of.write_dataset(a, tmp_path / "ds", chunk_shape=(1, 256, 256), progress=False)
    saved = _threads.num_threads()
    _threads.set_num_threads(2)
    try:
        # the parent's pool and helpers run before the fork ...
        np.testing.assert_array_equal(of.scan(tmp_path / "ds").export("numpy"), a)
        _threads.pool().submit(int).result(timeout=30)
        assert any(t.name.startswith("omeframe") for t in threading.enumerate())
        ctx = build_mod.mp_context()
        receive, send = ctx.Pipe(duplex=False)
        worker = ctx.Process(target=_worker_main, args=(send, os.fspath(tmp_path / "ds")))
        # the fork happens while the pool's lock is held: a child that kept the
        # parent's lock would hang in init_worker's set_num_threads(1)
        with _threads._lock:
            worker.start()
        send.close()
        try:
            if not receive.poll(60):
                pytest.fail("the forked catalog worker hangs: its thread-pool state was not reset after fork")
            pixels, ran_on, alive = receive.recv()
        finally:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    finally:
        _threads.set_num_threads(saved)
    np.testing.assert_array_equal(pixels, a)
    assert "MainThread" in ran_on and any(n.startswith("omeframe-helper") for n in ran_on), ran_on
    assert alive  # thread pool / helpers started anew in the child


def _die_at_start() -> None:
    os._exit(7)


def _dying_pool(max_workers: int, mp_context: object) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=mp_context, initializer=_die_at_start)


@needs_fork
def test_workers_that_die_at_start_up_stop_the_build_with_a_clear_error(tmp_path):
    _npy_tree(tmp_path / "src")
    out = tmp_path / "cat"
    with pytest.raises(CatalogError, match="die at start-up"):
        build_with(tmp_path / "src", out, seams=Seams(open_pool=_dying_pool), workers=2, batch_size=1,
                   progress=False)
    assert not (out / "catalog.parquet").exists()  # no file was blamed
    res = build(tmp_path / "src", out, workers=2, batch_size=1, progress=False)  # the real pool works
    assert (res.n_ingested, res.n_errors) == (4, 0)


def test_ingested_at_comes_from_the_clock_seam(tmp_path):
    arrays = _npy_tree(tmp_path / "src")
    when = datetime(2031, 5, 17, 8, 30, tzinfo=UTC)
    res = build_with(tmp_path / "src", tmp_path / "cat", seams=Seams(now=lambda: when), workers=1,
                     progress=False)
    cat = read_catalog(tmp_path / "cat")
    assert res.n_ingested == len(arrays)
    assert pc.all(pc.equal(cat["ingested_at"], pc.cast(when, cat.schema.field("ingested_at").type))).as_py()
    with pytest.raises(ValueError, match="checkpoint_min_bytes"):
        Seams(checkpoint_min_bytes=0)


def test_progress_default_shows_no_bar_off_a_terminal(tmp_path, capsys, monkeypatch):
    _npy_tree(tmp_path / "src")
    monkeypatch.setenv("CI", "1")  # whatever the terminal: never in CI
    build(tmp_path / "src", tmp_path / "cat", workers=1)
    assert "ingest" not in capsys.readouterr().err
    build(tmp_path / "src", tmp_path / "cat2", workers=1, progress=True)
    assert "ingest" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress"):
        build(tmp_path / "src", tmp_path / "cat3", workers=1, progress="yes")  # type: ignore[arg-type]
