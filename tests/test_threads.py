"""Nested parallel work must not deadlock the shared pool, and must stay correct."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import omeframe as of
from forking import run_forked
from omeframe.engine import threads as _threads


def test_pool_workers_do_not_resubmit() -> None:
    seen: list[bool] = []

    def probe() -> None:
        seen.append(_threads.can_parallelize())

    _threads.pool().submit(probe).result(timeout=10)
    assert seen == [False]
    assert _threads.can_parallelize() is (of.num_threads() > 1)


def test_write_dataset_from_compressed_plan_is_not_deadlocked(tmp_path: Path) -> None:
    # Writing encodes chunks in the pool; each block read runs a plan whose
    # decode would use the pool too. Big compressed chunks make that decode
    # "heavy" enough to go parallel, which used to deadlock both workers.
    rng = np.random.default_rng(3)
    a = rng.integers(0, 60000, size=(1, 2, 2, 1536, 1536), dtype=np.uint16)
    src = of.write_dataset(a, tmp_path / "src", chunk_shape=(1, 512, 512), progress=False)
    plan = src.scan().select(c=[1, 0])
    done: list[object] = []

    def run() -> None:
        done.append(
            of.write_dataset(plan, tmp_path / "dst", chunk_shape=(2, 1024, 1024), progress=False)
        )

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    if worker.is_alive():
        pytest.fail("write_dataset from a lazy plan did not finish in 120 s (pool deadlock)")
    dst = done[0]
    assert np.array_equal(dst.read(), a[:, [1, 0]])  # type: ignore[attr-defined]


def test_set_num_threads_validates_and_single_thread_reads_match(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="integer >= 1"):
        of.set_num_threads(0)
    a = np.arange(2 * 700 * 900, dtype=np.uint16).reshape(2, 700, 900)
    rec = of.from_numpy(a, dim_order="CYX", chunk_shape=(1, 128, 128))
    before = of.num_threads()
    try:
        of.set_num_threads(1)
        assert not _threads.can_parallelize()
        one = of.to_numpy(rec)
    finally:
        of.set_num_threads(before)
    assert np.array_equal(one, of.to_numpy(rec))
    assert np.array_equal(one[0, :, 0], a)


def test_run_each_uses_caller_and_helpers_and_reraises() -> None:
    if of.num_threads() < 2:
        pytest.skip("needs at least 2 threads")
    done: list[int] = []
    names: set[str] = set()
    gate = threading.Barrier(2, timeout=10)

    def work(i: int) -> None:
        if i < 2:
            gate.wait()  # both threads must run at once, or this times out
        names.add(threading.current_thread().name)
        done.append(i)

    _threads.run_each(work, list(range(20)))
    assert sorted(done) == list(range(20))
    assert threading.current_thread().name in names and any(n.startswith("omeframe-helper") for n in names)

    def fail(i: int) -> None:
        if i == 3:
            raise KeyError("piece 3")

    with pytest.raises(KeyError, match="piece 3"):
        _threads.run_each(fail, list(range(50)))
    # helpers are back in service after an error
    seen: list[int] = []
    _threads.run_each(seen.append, list(range(10)))
    assert sorted(seen) == list(range(10))


def test_run_each_does_not_wait_for_a_busy_helper() -> None:
    if of.num_threads() != 2:
        pytest.skip("needs exactly 2 threads (one helper)")
    release = threading.Event()
    started = threading.Event()

    def hold(i: int) -> None:
        if i == 1:  # the helper takes item 1 and keeps busy until released
            started.set()
            release.wait(10)

    other = threading.Thread(target=_threads.run_each, args=(hold, [0, 1]))
    other.start()
    assert started.wait(10)
    # The only helper is busy: this call must finish on the calling thread alone.
    seen: list[int] = []
    _threads.run_each(seen.append, list(range(5)))
    assert seen == list(range(5))
    release.set()
    other.join(10)
    assert not other.is_alive()


def test_helpers_restart_after_fork(tmp_path: Path) -> None:
    if of.num_threads() < 2:
        pytest.skip("needs 2 threads")
    run_forked(
        "import threading, omeframe.engine.threads as t\n"
        "t.run_each(lambda i: None, [0, 1, 2])\n",  # helpers exist in the parent
        "gate, out = threading.Barrier(2, timeout=10), []\n"
        "def work(i):\n"
        "    if i < 2:\n"
        "        gate.wait()\n"  # needs a live helper in the child
        "    out.append(i)\n"
        "try:\n"
        "    t.run_each(work, list(range(8)))\n"
        "except threading.BrokenBarrierError:\n"
        "    os._exit(4)\n"
        "os._exit(0 if sorted(out) == list(range(8)) else 3)\n",
    )


def test_finished_read_does_not_keep_the_record_payloads_alive(tmp_path: Path) -> None:
    # Pool helpers hold their last task until they get another one. A finished
    # to_numpy must not pin the record's payload buffers through that task:
    # they must go away with the table they came from.
    import gc

    import pyarrow as pa

    if of.num_threads() < 2:
        pytest.skip("needs at least 2 threads (the decode must go parallel)")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:512, 0:512]
    smooth = (yy * 7 + xx * 3) % 4000
    a = (smooth + rng.integers(0, 4000, size=(1, 1, 4, 512, 512))).astype(np.uint16)
    path = of.write_table(tmp_path / "t.parquet", [a], dim_order="TCZYX", chunk_shape=(1, 128, 128))
    table = of.read_table(path)
    payload = table["ome_arrow"].chunk(0).field("chunks").values.field("pixel_bytes")
    stored = sum(b.size for b in payload.buffers() if b is not None)
    assert stored > 1 << 20  # compressed, big enough for the parallel decode
    del payload, table
    gc.collect()
    before = pa.total_allocated_bytes()
    out = of.to_numpy(of.read_table(path)["ome_arrow"][0])
    gc.collect()
    assert np.array_equal(out, a)
    assert pa.total_allocated_bytes() - before < stored // 4


def test_read_ahead_keeps_order_runs_one_ahead_and_reraises() -> None:
    pulled: list[int] = []
    threads: set[str] = set()

    def produce():
        for i in range(5):
            pulled.append(i)
            threads.add(threading.current_thread().name)
            yield i

    it = _threads.read_ahead(produce())
    assert next(it) == 0
    assert next(it) == 1
    assert pulled[-1] <= 2  # at most one item computed ahead of the consumer
    assert list(it) == [2, 3, 4]
    assert all(name.startswith("omeframe-ahead") for name in threads)

    def failing():
        yield 1
        raise RuntimeError("batch 2 is broken")

    with pytest.raises(RuntimeError, match="batch 2 is broken"):
        list(_threads.read_ahead(failing()))


def test_an_abandoned_read_ahead_does_not_wait_for_the_item_in_flight() -> None:
    """Closing a read-ahead (as the garbage collector does after a failed write) returns at once:
    joining the producer from a finalizer can deadlock inside threading's bookkeeping."""
    release = threading.Event()

    def produce():
        yield 0
        release.wait(30)  # the item in flight when the consumer gives up
        yield 1

    it = _threads.read_ahead(produce())
    assert next(it) == 0
    closer = threading.Thread(target=it.close)
    closer.start()
    closer.join(5)
    try:
        assert not closer.is_alive(), "closing the read-ahead waited for the producer"
    finally:
        release.set()
        closer.join()


def test_a_failing_batch_stream_leaves_no_table(tmp_path: Path) -> None:
    def batches():
        yield np.zeros((4, 2, 8, 8), np.uint8)
        raise ValueError("the third camera went away")

    target = tmp_path / "t.parquet"
    with pytest.raises(ValueError, match="camera went away"):
        of.write_table(target, batches(), dim_order="CYX")
    assert not target.exists() and list(tmp_path.iterdir()) == []
