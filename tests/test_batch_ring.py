"""The batch ring: batches from a worker process through slots of memory both processes map once."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os

import numpy as np
import pytest

from omeframe.engine import batch_ring as br

pytestmark = pytest.mark.skipif(not br.supported(), reason="batch rings need memfd_create and /proc (Linux)")


@pytest.fixture(autouse=True)
def fresh_rings(monkeypatch):
    """Each test starts with no ring of its own and none attached; this process may attach its own rings."""
    import weakref

    monkeypatch.setattr(br, "_mine", None)
    monkeypatch.setattr(br, "_replaced", {})
    monkeypatch.setattr(br, "_attached", {})
    monkeypatch.setattr(br, "_older", weakref.WeakValueDictionary())
    monkeypatch.setattr(br, "_in_flight", {})
    monkeypatch.setattr(br, "_refused", set())
    monkeypatch.setattr(br, "_held", {})
    monkeypatch.setattr(br, "_self_attach", True)


def _attached_ring() -> br.RingAddress:
    """This process's ring for small batches, attached by this process itself."""
    assert br.pack([np.zeros(10, np.uint8)]) is None  # creates the ring; nobody has attached yet
    address = br.invitation()
    assert address is not None and address.pid == os.getpid() and br.attach(address)
    assert br.invitation() is None  # attached: nothing more to announce
    return address


def test_arrays_round_trip_through_a_slot():
    _attached_ring()
    arrays = [
        np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        np.arange(10.0)[::3],  # not contiguous
        np.array([True, False, True]),
        np.zeros((0, 5), np.uint32),
        np.arange(6, dtype=">u2"),  # byte order kept
    ]
    packed = br.pack(arrays)
    assert packed is not None and packed.slot == 0
    out = br.unpack(packed)
    for a, b in zip(arrays, out, strict=True):
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)
    assert all(b.ctypes.data % 64 == 0 for b in out)


def test_a_slot_is_reused_only_after_every_view_of_it_is_freed():
    _attached_ring()
    first = br.pack([np.full(8, 1, np.uint8)])
    assert first is not None
    (x,) = br.unpack(first)
    tail = x[4:]  # a view made by the reader keeps the slot
    del x
    gc.collect()
    assert br.pack([np.full(8, 2, np.uint8)]).slot == 1
    assert tail.tolist() == [1] * 4  # never overwritten while visible
    del tail
    gc.collect()
    assert br.pack([np.full(8, 3, np.uint8)]).slot == 0


_kept_views: list[np.ndarray] = []


def _drop_held() -> None:
    _kept_views.clear()
    gc.collect()


def test_a_child_forked_without_the_fork_hooks_frees_nothing_of_the_reader():
    import ctypes

    _attached_ring()
    _kept_views.extend(br.unpack(br.pack([np.full(16, 7, np.uint8)])))
    pid = ctypes.CDLL(None).fork()  # a fork from C: Python's at-fork hooks do not run
    if pid == 0:  # the child drops its inherited views: their finalizers run here
        try:
            _drop_held()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    try:
        assert br.pack([np.zeros(16, np.uint8)]).slot == 1  # slot 0 is still the reader's
        assert _kept_views[0].tolist() == [7] * 16
    finally:
        _kept_views.clear()


def test_with_every_slot_taken_a_new_ring_starts_and_the_old_one_lives_with_its_batches():
    old = _attached_ring()
    held = [br.unpack(br.pack([np.full(4, i, np.uint8)]))[0] for i in range(br.SLOTS)]
    assert br.pack([np.zeros(4, np.uint8)]) is None  # every slot taken: a new ring, to be attached
    new = br.invitation()
    assert new is not None and new.token != old.token and br.attach(new)
    assert old.token not in br._attached and old.token in br._older  # kept by its batches only
    assert br.pack([np.full(4, 99, np.uint8)]).slot == 0
    assert [int(h[0]) for h in held] == list(range(br.SLOTS))
    del held
    gc.collect()
    assert old.token not in br._older


def test_a_batch_sent_through_an_older_ring_arrives_after_the_new_ring_is_attached():
    old = _attached_ring()
    first = br.pack([np.full(8, 1, np.uint8)])  # sent, still on its way
    assert br.pack([np.zeros(2 * old.slot_bytes, np.uint8)]) is None  # larger: a new ring, announced
    new = br.invitation()
    assert br.attach(new) and old.token in br._in_flight
    gc.collect()
    (x,) = br.unpack(first)  # arrives after the batch that announced the new ring
    assert x.tolist() == [1] * 8 and old.token not in br._in_flight  # its view keeps the ring from here on
    del x
    gc.collect()
    assert old.token not in br._older


def test_a_process_never_attaches_its_own_ring_and_reads_its_own_batches_as_copies(monkeypatch):
    monkeypatch.setattr(br, "_self_attach", False)
    assert br.pack([np.zeros(8, np.uint8)]) is None
    own = br.invitation()
    assert not br.attach(own) and br.invitation() == own  # still waiting for its reader
    br._mine.header[br._ATTACHED] = 1  # as when the reader attaches
    packed = br.pack([np.arange(8, dtype=np.uint8)])
    (copy,) = br.unpack(packed)  # a deep copy inside the worker
    assert copy.tolist() == list(range(8)) and copy.base is None
    assert br.pack([np.zeros(8, np.uint8)]).slot == packed.slot  # freed at once


def test_a_process_reads_its_own_batch_from_a_ring_it_has_since_replaced(monkeypatch):
    monkeypatch.setattr(br, "_self_attach", False)
    assert br.pack([np.zeros(8, np.uint8)]) is None
    br._mine.header[br._ATTACHED] = 1  # as when the reader attaches
    first = br._mine
    packed = [br.pack([np.full(8, i, np.uint8)]) for i in range(br.SLOTS)]
    assert br.pack([np.zeros(8, np.uint8)]) is None  # every slot taken: a new ring
    assert br._mine is not first and first.address.token in br._replaced
    (mine,) = br.unpack(packed[3])  # from the replaced ring, whose slot is freed
    assert mine.tolist() == [3] * 8 and not first.flags[3]
    br._mine.header[br._ATTACHED] = 1
    br.pack([np.zeros(8, np.uint8)])
    assert first.address.token in br._replaced  # seven slots still taken
    for p in packed[:3] + packed[4:]:
        br.unpack(p)
    br.pack([np.zeros(8, np.uint8)])
    assert first.address.token not in br._replaced  # every slot free: forgotten at the next pack


def test_a_packed_batch_is_received_once(monkeypatch):
    _attached_ring()
    packed = br.pack([np.arange(8, dtype=np.uint8)])
    (view,) = br.unpack(packed)
    with pytest.raises(RuntimeError, match="already received"):  # the same pickle read twice
        br.unpack(packed)
    del view
    gc.collect()
    again = br.pack([np.full(8, 5, np.uint8)])
    assert again.slot == packed.slot and again.number != packed.number
    with pytest.raises(RuntimeError, match="already received"):  # its slot now holds another batch
        br.unpack(packed)
    assert br.unpack(again)[0].tolist() == [5] * 8
    monkeypatch.setattr(br, "_self_attach", False)  # the worker's own copy is checked as well
    own = br.pack([np.full(8, 6, np.uint8)])
    assert br.unpack(own)[0].tolist() == [6] * 8
    with pytest.raises(RuntimeError, match="already received"):
        br.unpack(own)


def test_a_stale_batch_is_refused_while_its_slot_is_being_filled_again():
    _attached_ring()
    packed = br.pack([np.full(8, 1, np.uint8)])
    (view,) = br.unpack(packed)
    del view
    gc.collect()
    assert br._mine.claim() == packed.slot  # the worker has taken the slot and is copying the next batch in
    with pytest.raises(RuntimeError, match="already received"):
        br.unpack(packed)


def _read_inherited_after(conn) -> None:
    conn.recv()  # the parent has dropped its views and sent more batches
    conn.send(_kept_views[0].tolist())


def test_slots_held_when_the_reader_forks_are_never_written_again():
    _attached_ring()
    _kept_views.extend(br.unpack(br.pack([np.full(16, 7, np.uint8)])))
    here, there = mp.get_context("fork").Pipe()
    child = mp.get_context("fork").Process(target=_read_inherited_after, args=(there,))
    child.start()
    try:
        _kept_views.clear()
        gc.collect()  # the reader drops its views: the child still has its inherited copies
        first = br._mine.address.token
        for i in range(3 * br.SLOTS):  # batches read and dropped, slot after slot
            packed = br.pack([np.full(16, i, np.uint8)])
            if packed is None:  # only if every slot were taken: a new ring
                assert br.attach(br.invitation())
                continue
            assert not (packed.ring.token == first and packed.slot == 0)  # the pinned slot
            br.unpack(packed)
            gc.collect()
        here.send("look")
        assert here.poll(60) and here.recv() == [7] * 16
    finally:
        child.join(60)
        if child.is_alive():
            child.kill()


def test_a_larger_batch_gets_a_ring_of_larger_slots_which_must_be_attached_again():
    old = _attached_ring()
    big = np.ones(old.slot_bytes + 1, np.uint8)
    assert br.pack([big]) is None
    new = br.invitation()
    assert new is not None and new.token != old.token and new.slot_bytes >= 2 * old.slot_bytes
    assert br.attach(new)
    (back,) = br.unpack(br.pack([big]))
    assert np.array_equal(back, big)


def test_a_batch_over_the_slot_limit_goes_the_usual_way_and_makes_no_ring(monkeypatch):
    monkeypatch.setattr(br, "MAX_SLOT_BYTES", 1024)
    assert br.pack([np.zeros(1025, np.uint8)]) is None and br._mine is None
    assert br.pack([np.zeros(1024, np.uint8)]) is None and br._mine is not None  # made; not attached yet


def test_slots_double_when_batches_grow_but_never_past_the_limit(monkeypatch):
    monkeypatch.setattr(br, "MAX_SLOT_BYTES", 3 * br._PAGE)
    _attached_ring()  # one-page slots
    assert br.pack([np.zeros(br._PAGE + 1, np.uint8)]) is None
    assert br.invitation().slot_bytes == 2 * br._PAGE
    assert br.attach(br.invitation())
    assert br.pack([np.zeros(2 * br._PAGE + 1, np.uint8)]) is None
    assert br.invitation().slot_bytes == 3 * br._PAGE  # not 4: the limit


def test_attach_refuses_a_ring_that_is_not_the_one_announced():
    good = _attached_ring()
    assert not br.attach(good._replace(token=os.urandom(16)))  # another token at that descriptor
    assert not br.attach(good._replace(token=os.urandom(16), slots=good.slots + 1))  # another size
    closed = good._replace(token=os.urandom(16), fd=9999)
    assert not br.attach(closed)
    assert closed.token in br._refused and not br.attach(closed)


def test_unpacking_from_a_ring_this_process_never_attached_is_an_error():
    _attached_ring()
    packed = br.pack([np.zeros(3, np.uint8)])
    br._attached.clear()
    with pytest.raises(RuntimeError, match="has not mapped"):
        br.unpack(packed)


def _worker(conn, count: int) -> None:
    """A worker: announces its ring, waits for the attach, then sends ``count`` batches (or ``None``)."""
    arrays = [np.arange(3000, dtype=np.uint16).reshape(3, 1000)]
    assert br.pack(arrays) is None
    conn.send(br.invitation())
    conn.recv()  # attached
    for i in range(count):
        batch = [arrays[0] + i]
        conn.send((br.pack(batch), i))
    conn.recv()  # the reader is done with what it holds


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_reader_that_holds_batches_never_sees_them_change(context):
    ctx = mp.get_context(context)
    here, there = ctx.Pipe()
    count = br.SLOTS + 3
    child = ctx.Process(target=_worker, args=(there, count))
    child.start()
    try:
        assert here.poll(60), "the worker did not announce its ring"
        address = here.recv()
        assert address.pid == child.pid and br.attach(address)
        here.send("attached")
        held, fell_back = [], []
        for _ in range(count):
            packed, i = here.recv()
            if packed is None:
                fell_back.append(i)
            else:
                held.append((br.unpack(packed)[0], i))
        assert fell_back == list(range(br.SLOTS, count))  # every slot was taken by a held batch
        for arr, i in held:
            assert np.array_equal(arr, np.arange(3000, dtype=np.uint16).reshape(3, 1000) + i)
        here.send("done")
        child.join(60)
        assert child.exitcode == 0
        # another worker's ring attaches: the exited worker's ring is dropped, its batches stay readable
        _attached_ring()
        assert address.token not in br._attached
        assert all(np.array_equal(arr, np.arange(3000, dtype=np.uint16).reshape(3, 1000) + i) for arr, i in held)
    finally:
        if child.is_alive():
            child.kill()
