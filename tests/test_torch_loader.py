"""omeframe.torch: map-style and iterable datasets over record tables, patches of datasets.

Every test asks for the ``torch`` fixture (tests/conftest.py): it skips, with
the reason, where the test extra installs no torch (torch's CPU wheel is only
available for Python 3.11 on this machine) and fails under
``OMEFRAME_REQUIRE_EXTRAS=1`` when torch should be there but is not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import omeframe as of
from omeframe.engine import heap as _heap
from omeframe.model.errors import OptionalDependencyError, RowIndexError
from omeframe.torch import (
    DatasetPatchDataset,
    ImageTableDataset,
    ImageTableIterableDataset,
    collate,
    shuffled_rows,
)

pytestmark = pytest.mark.usefixtures("torch")

N = 40


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 255, (N, 2, 6, 5), dtype=np.uint8)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory, crops: np.ndarray) -> str:
    path = tmp_path_factory.mktemp("tables") / "crops.parquet"
    of.write_table(
        path, crops, dim_order="CYX",
        columns={"label": np.arange(N) % 3, "area": np.arange(N) * 1.5, "well": [f"w{i}" for i in range(N)]},
    )
    return str(path)


# -- map-style ----------------------------------------------------------------------------


def test_getitem_returns_the_written_image_and_columns(table, crops, torch):
    ds = ImageTableDataset(table, columns=["label", "well"])
    assert len(ds) == N
    s = ds[7]
    assert isinstance(s["image"], torch.Tensor) and s["image"].dtype == torch.uint8
    assert np.array_equal(s["image"].numpy(), crops[7])
    assert (s["row"], s["label"], s["well"]) == (7, 1, "w7")


def test_getitems_decodes_one_contiguous_batch(table, crops, torch):
    ds = ImageTableDataset(table, columns=["area", "well"])
    b = ds.__getitems__([9, 2, 30])
    assert b["image"].shape == (3, 2, 6, 5) and b["image"].is_contiguous()
    assert np.array_equal(b["image"].numpy(), crops[[9, 2, 30]])
    assert b["row"].tolist() == [9, 2, 30]
    assert b["area"].dtype == torch.float64 and b["area"].tolist() == [13.5, 3.0, 45.0]
    assert b["well"] == ["w9", "w2", "w30"]


def test_the_batch_tensor_shares_memory_with_the_decoded_array(table, monkeypatch):
    ds = ImageTableDataset(table)
    decoded = {}
    real = of.ImageTable.to_numpy

    def spy(self, rows=None, **kw):
        decoded["arr"] = real(self, rows, **kw)
        return decoded["arr"]

    monkeypatch.setattr(of.ImageTable, "to_numpy", spy)
    b = ds.__getitems__([1, 2])
    assert np.shares_memory(b["image"].numpy(), decoded["arr"])  # torch.from_numpy, no copy


def test_target_gives_tuples_and_dims_reorder(table, crops, torch):
    ds = ImageTableDataset(table, target="label", dims="YXC")
    x, y = ds[5]
    assert np.array_equal(x.numpy(), crops[5].transpose(1, 2, 0)) and y == 2
    xb, yb = ds.__getitems__([4, 5])
    assert xb.shape == (2, 6, 5, 2) and xb.is_contiguous() and yb.tolist() == [1, 2]


def test_transform_sees_batch_tensors(table, crops, torch):
    ds = ImageTableDataset(table, transform=lambda x: x.float() / 255)
    b = ds.__getitems__([0, 1])
    assert b["image"].dtype == torch.float32
    assert np.allclose(b["image"].numpy(), crops[:2] / 255)
    assert ds[3]["image"].shape == (2, 6, 5)


def test_bad_options_are_refused(table):
    with pytest.raises(ValueError, match="not both"):
        ImageTableDataset(table, columns=["area"], target="label")
    with pytest.raises(ValueError, match=r"no column\(s\) \['nope'\].*label"):
        ImageTableDataset(table, columns=["nope"])
    with pytest.raises(TypeError, match="list of column names"):
        ImageTableDataset(table, columns="label")
    with pytest.raises(ValueError, match="dims"):
        ImageTableDataset(table, dims="CQX")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        ImageTableDataset(Path(table).with_name("missing.parquet"))
    with pytest.raises(TypeError, match="ImageTable"):
        ImageTableDataset(42)  # type: ignore[arg-type]


def test_bad_indices_raise_index_errors(table):
    ds = ImageTableDataset(table)
    for bad in (N, -1):
        with pytest.raises(IndexError, match="out of range"):
            ds[bad]
    with pytest.raises(RowIndexError, match=f"row {N + 3} is out of range"):
        ds.__getitems__([1, N + 3])
    with pytest.raises(RowIndexError, match="row 4 is requested twice"):
        ds.__getitems__([4, 1, 4])
    with pytest.raises(TypeError, match="integer"):
        ds[1.0]  # type: ignore[index]


def test_dataloader_in_process_reads_every_row_once(table, crops, torch):
    ds = ImageTableDataset(table, target="label")
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, collate_fn=collate)
    seen = []
    for x, y in loader:
        assert x.is_contiguous() and x.shape[1:] == (2, 6, 5)
        seen.append((x.numpy(), y.numpy()))
    xs = np.concatenate([a for a, _ in seen])
    ys = np.concatenate([b for _, b in seen])
    assert len(xs) == N
    # every crop once, each with its own label
    order = [int(np.flatnonzero((crops == x).all(axis=(1, 2, 3)))[0]) for x in xs]
    assert sorted(order) == list(range(N)) and (ys == np.array(order) % 3).all()


def test_collate_falls_back_to_default_collate_for_sample_lists(table, torch):
    ds = ImageTableDataset(table, columns=["label"])
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 2, 6, 5) and batch["label"].tolist() == [0, 1]


def _same_batch(a, b, torch) -> bool:
    """Equal batches: the same container types, keys, tensor dtypes and values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_batch(a[k], b[k], torch) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_batch(x, y, torch) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return bool(a == b)


def test_collate_in_a_worker_stacks_samples_as_default_collate_does(torch, monkeypatch):
    from omeframe.engine import batch_ring

    monkeypatch.setattr(batch_ring, "_mine", None)
    monkeypatch.setattr(batch_ring, "_attached", {})
    monkeypatch.setattr(batch_ring, "_self_attach", True)  # this process plays worker and reader
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # as in a worker
    samples = [
        {"image": torch.full((2, 3), i, dtype=torch.uint8), "row": i, "area": i * 1.5, "well": f"w{i}"}
        for i in range(5)
    ]
    expected = torch.utils.data.default_collate(samples)
    for _ in range(2):  # the first batch announces the ring, the second travels through it
        back = _over_queue(collate(samples))
        assert _same_batch(back, expected, torch)
    assert _in_ring(back["image"]) and _in_ring(back["row"])
    others = [  # default_collate's own: tuples become lists, bools, shapes that differ, keys that differ
        [(torch.zeros(2), 1), (torch.ones(2), 2)],
        [{"flag": True}, {"flag": False}],
        [{"a": torch.zeros(2)}, {"a": torch.zeros(3)}],
        [{"a": 1}, {"b": 2}],
    ]
    assert _same_batch(collate(others[0]), torch.utils.data.default_collate(others[0]), torch)
    assert _same_batch(collate(others[1]), torch.utils.data.default_collate(others[1]), torch)
    with pytest.raises(RuntimeError):
        collate(others[2])
    with pytest.raises(KeyError):
        collate(others[3])


def test_pin_memory_path(table, torch):
    ds = ImageTableDataset(table, columns=["label"])
    cuda = torch.cuda.is_available()
    loader = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=collate, pin_memory=cuda)
    b = next(iter(loader))
    assert b["image"].is_contiguous() and b["row"].is_contiguous() and b["label"].is_contiguous()
    if cuda:  # pragma: no cover - no CUDA on this machine
        assert b["image"].is_pinned()


def _over_queue(batch):
    """``batch`` sent as a DataLoader worker's result queue sends it (multiprocessing's pickler)."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    return pickle.loads(ForkingPickler.dumps(batch))


def _in_ring(t) -> bool:
    """Whether tensor ``t`` views a slot of a batch ring this process has attached."""
    from omeframe.engine import batch_ring

    at = t.data_ptr()
    for ring in [*batch_ring._attached.values(), *batch_ring._older.values()]:
        base = np.frombuffer(ring.map, dtype=np.uint8).ctypes.data
        if base <= at < base + len(ring.map):
            return True
    return False


@pytest.fixture
def no_rings(monkeypatch):
    """Batch rings off (in this process and in the workers it forks)."""
    from omeframe.engine import batch_ring

    monkeypatch.setattr(batch_ring, "supported", lambda: False)
    monkeypatch.setattr(batch_ring, "_mine", None)


@pytest.mark.parametrize("transport", ["ring", "value", "shared"])
def test_fork_workers_reopen_the_table(table, crops, torch, monkeypatch, request, transport):
    import omeframe.torch as oft

    if transport != "ring":
        request.getfixturevalue("no_rings")
    if transport == "shared":  # the forked workers inherit the limit: every batch is "large"
        monkeypatch.setattr(oft, "BY_VALUE_BYTES", 0)
    ds = ImageTableDataset(table)
    ds[0]  # the parent has opened (and memory-mapped) the table before the fork
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, shuffle=True, collate_fn=collate, num_workers=2,
        multiprocessing_context="fork", timeout=60,
    )
    rows, ringed = [], 0
    for b in loader:
        assert type(b) is dict and np.array_equal(b["image"].numpy(), crops[b["row"].numpy()])
        assert b["row"].dtype == torch.int64 and b["image"].is_contiguous()
        ringed += _in_ring(b["image"]) and _in_ring(b["row"])
        if transport == "value":  # a small batch arrives pickled: tensors in the main process's own memory
            assert not b["image"].is_shared() and not b["row"].is_shared()
        elif transport == "shared":  # a large one: the batch and its rows in one shared-memory segment
            assert b["image"].untyped_storage().data_ptr() == b["row"].untyped_storage().data_ptr()
            assert b["image"].is_shared()
        rows += b["row"].tolist()
    assert sorted(rows) == list(range(N))
    if transport == "ring":  # all but each worker's first batches (sent before the ring was attached)
        assert ringed >= N // 2 - 2 * 2 * 2
    else:
        assert ringed == 0


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_batches_the_reader_keeps_are_never_overwritten(table, crops, torch, context):
    from omeframe.engine import batch_ring

    ds = ImageTableDataset(table, columns=["area"])
    loader = torch.utils.data.DataLoader(
        ds, batch_size=1, collate_fn=collate, num_workers=2, multiprocessing_context=context, timeout=120,
    )
    kept = list(loader)  # 40 batches held: more than the slots of both workers' rings (each starts another)
    assert len(kept) == N > 2 * batch_ring.SLOTS
    assert 2 * batch_ring.SLOTS < sum(_in_ring(b["image"]) for b in kept) < N
    for b in kept:
        r = b["row"].numpy()
        assert np.array_equal(b["image"].numpy(), crops[r]) and b["area"].tolist() == (r * 1.5).tolist()
    del kept
    again = [(b["row"].tolist(), _in_ring(b["image"])) for b in loader]  # freed batches free their slots
    assert sorted(r for rows, _ in again for r in rows) == list(range(N))


def test_a_small_target_batch_travels_by_value(table, crops, torch):
    ds = ImageTableDataset(table, target="label")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=7, collate_fn=collate, num_workers=1, multiprocessing_context="fork", timeout=60,
    )
    x, y = next(iter(loader))
    assert type(x) is torch.Tensor and not x.is_shared() and x.shape[0] == 7 and y.shape == (7,)
    assert np.array_equal(x.numpy(), crops[:7])
    assert ds.__getitems__([0, 1])[0].shape[0] == 2  # outside a worker: the plain tuple


def test_batches_pickle_by_value_only_when_small(torch, monkeypatch, no_rings):
    import copy
    import pickle

    import omeframe.torch as oft

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # as in a worker
    small = {"image": torch.arange(12, dtype=torch.uint8).view(3, 4), "row": torch.arange(3), "well": ["a", "b", "c"]}
    sent = oft._for_transport(torch, small)
    assert type(copy.copy(sent)) is type(sent)  # the loader's default_convert copies batches
    back = _over_queue(sent)
    assert type(back) is dict and list(back) == ["image", "row", "well"] and back["well"] == ["a", "b", "c"]
    assert torch.equal(back["image"], small["image"]) and back["image"].data_ptr() != small["image"].data_ptr()
    pair = _over_queue(oft._for_transport(torch, (small["image"], torch.ones(3, dtype=torch.bfloat16))))
    assert type(pair) is tuple and pair[1].dtype == torch.bfloat16 and torch.equal(pair[0], small["image"])
    big = {"image": torch.zeros(oft.BY_VALUE_BYTES + 1, dtype=torch.uint8)}
    sent_big = oft._for_transport(torch, big)
    assert sent_big == big
    assert _over_queue(sent_big)["image"].is_shared()  # torch's own way
    plain = pickle.loads(pickle.dumps(sent_big))  # any other pickler: a plain dict, by value
    assert type(plain) is dict and not plain["image"].is_shared() and torch.equal(plain["image"], big["image"])


def test_a_worker_batch_travels_through_the_ring_once_attached(torch, monkeypatch):
    import copy

    import omeframe.torch as oft
    from omeframe.engine import batch_ring

    monkeypatch.setattr(batch_ring, "_mine", None)
    monkeypatch.setattr(batch_ring, "_attached", {})
    monkeypatch.setattr(batch_ring, "_self_attach", True)  # this process plays worker and reader
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # as in a worker
    batch = {
        "image": torch.from_numpy(np.arange(60, dtype=np.uint16).reshape(4, 3, 5)), "row": torch.arange(4),
        "half": torch.ones(4, dtype=torch.bfloat16), "well": list("abcd"),
    }
    first = _over_queue(oft._for_transport(torch, batch, merge=("image", "row")))
    assert not _in_ring(first["image"])  # sent by value, with the ring's address: now attached
    sent = oft._for_transport(torch, batch, merge=("image", "row"))
    back = _over_queue(sent)
    assert type(back) is dict and list(back) == list(batch) and back["well"] == list("abcd")
    assert _in_ring(back["image"]) and _in_ring(back["row"]) and not _in_ring(back["half"])
    assert all(torch.equal(back[k], batch[k]) for k in ("image", "row", "half"))
    again = _over_queue(sent)  # pickled twice: a slot of its own each time
    assert _in_ring(again["image"]) and again["image"].data_ptr() != back["image"].data_ptr()
    assert torch.equal(again["image"], batch["image"]) and torch.equal(back["image"], batch["image"])
    clone = copy.copy(sent)  # the loader's default_convert sends a copy
    assert type(clone) is type(sent) and torch.equal(_over_queue(clone)["image"], batch["image"])
    # changed after __getitems__ returned it (a subclass post-processing the batch): sent as it is then
    changed = oft._for_transport(torch, batch, merge=("image", "row"))
    changed["image"] = changed["image"].float() / 2
    changed["extra"] = torch.arange(3)
    changed["row"] = changed["row"].to(torch.bfloat16)
    got = _over_queue(changed)
    assert list(got) == [*batch, "extra"] and got["image"].dtype == torch.float32
    assert torch.equal(got["image"], batch["image"].float() / 2) and got["extra"].tolist() == [0, 1, 2]
    assert got["row"].dtype == torch.bfloat16 and got["row"].tolist() == [0, 1, 2, 3]
    pair = _over_queue(copy.deepcopy(oft._for_transport(torch, (batch["image"], batch["row"]))))
    assert type(pair) is tuple and torch.equal(pair[0], batch["image"]) and _in_ring(pair[0])


def test_a_worker_batch_pickled_or_saved_outside_the_queue_is_plain_and_takes_no_slot(torch, monkeypatch, tmp_path):
    import pickle

    import omeframe.torch as oft
    from omeframe.engine import batch_ring

    monkeypatch.setattr(batch_ring, "_mine", None)
    monkeypatch.setattr(batch_ring, "_attached", {})
    monkeypatch.setattr(batch_ring, "_self_attach", True)  # this process plays worker and reader
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # as in a worker
    batch = {"image": torch.arange(24, dtype=torch.uint8).view(2, 3, 4), "row": torch.arange(2)}
    _over_queue(oft._for_transport(torch, batch))  # announces the ring, which this process attaches
    assert batch_ring._mine.attached
    sent = oft._for_transport(torch, batch)
    as_dict = pickle.loads(pickle.dumps(sent))
    as_tuple = pickle.loads(pickle.dumps(oft._for_transport(torch, (batch["image"],))))
    assert type(as_dict) is dict and type(as_tuple) is tuple
    assert not any(_in_ring(t) for t in [*as_dict.values(), *as_tuple])
    assert torch.equal(as_dict["image"], batch["image"]) and torch.equal(as_tuple[0], batch["image"])
    torch.save(sent, tmp_path / "batch.pt")  # saved inside a worker: readable by any process later
    assert torch.equal(torch.load(tmp_path / "batch.pt", weights_only=False)["image"], batch["image"])
    assert not batch_ring._mine.flags.any()  # no slot was taken for any of them
    assert _in_ring(_over_queue(sent)["image"])  # the worker's queue still takes the ring


def _threads_seen(x):
    """A transform that reports the worker's omeframe thread count in every pixel."""
    from omeframe.engine import threads

    return x * 0 + threads.num_threads()


@pytest.mark.parametrize("chosen", [None, 3])
def test_fork_workers_share_the_cores_unless_a_count_was_chosen(table, torch, chosen):
    from omeframe.engine import threads

    before = (threads.num_threads(), threads._chosen)
    try:
        if chosen is not None:
            of.set_num_threads(chosen)
        else:  # as in a process where no one has chosen a count (other tests may have)
            threads._chosen = False
        ds = ImageTableDataset(table, transform=_threads_seen)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=10, collate_fn=collate, num_workers=2, multiprocessing_context="fork", timeout=60
        )
        seen = {int(b["image"].max()) for b in loader}
    finally:
        threads._set(before[0])
        threads._chosen = before[1]
    assert seen == {chosen if chosen is not None else max(1, (os.cpu_count() or 1) // 2)}
    assert threads.num_threads() == before[0]  # the parent keeps its own count


def _heap_gives_back(x):
    from heap_probe import goes_back

    return x * 0 + int(goes_back())


@pytest.mark.skipif(not _heap._glibc(), reason="the heap policy is glibc's")
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_keep_a_batchs_memory_and_the_parent_heap_is_left_alone(table, torch, monkeypatch, context):
    for name in (*_heap.MALLOC_VARIABLES, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    ds = ImageTableDataset(table, transform=_heap_gives_back)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=10, collate_fn=collate, num_workers=2, multiprocessing_context=context, timeout=120
    )
    assert {int(b["image"].max()) for b in loader} == {0}  # 8 MB freed in a worker stay in its heap
    assert os.getpid() not in _heap._kept  # the process that made the loader keeps glibc's own policy


def test_the_table_reopens_when_the_process_id_changes(table, monkeypatch):
    ds = ImageTableDataset(table)
    first = ds.table
    assert ds.table is first
    monkeypatch.setattr("os.getpid", lambda: -5)  # as in a forked child
    assert ds.table is not first and ds.table.path == first.path


def test_spawn_workers_split_an_iterable_epoch(table, crops, torch):
    ds = ImageTableIterableDataset(table, batch_size=4, block_size=5, buffer_blocks=2, seed=3)
    ds.set_epoch(1)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="spawn", timeout=120
    )
    rows = []
    for b in loader:
        assert np.array_equal(b["image"].numpy(), crops[b["row"].numpy()])
        # a small batch leaves a spawned worker by value
        assert type(b) is dict and not b["image"].is_shared() and b["row"].dtype == torch.int64
        rows += b["row"].tolist()
    assert sorted(rows) == list(range(N))
    expected = np.concatenate([ds.rows(0, 2), ds.rows(1, 2)])  # the epoch-1 plan, both workers
    assert sorted(rows) == sorted(expected.tolist()) and set(rows[:4]) <= set(expected.tolist())


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_worker_that_cannot_reopen_fails_with_the_file_name(tmp_path, crops, torch, damage):
    path = tmp_path / "gone.parquet"
    of.write_table(path, crops, dim_order="CYX")
    ds = ImageTableDataset(path)
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"not a parquet file at all, just bytes " * 20)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, collate_fn=collate, num_workers=1, multiprocessing_context="fork", timeout=60
    )
    with pytest.raises((OSError, ValueError)) as err:
        next(iter(loader))
    assert str(path) in str(err.value)


# -- iterable -----------------------------------------------------------------------------


def test_shuffled_rows_partition_and_stay_local():
    n, bs, bb, k = 103, 8, 3, 3
    parts = [
        shuffled_rows(n, seed=5, epoch=2, block_size=bs, buffer_blocks=bb, shard=s, num_shards=k) for s in range(k)
    ]
    allrows = np.concatenate([r for r, _ in parts])
    assert sorted(allrows.tolist()) == list(range(n))
    for rows, starts in parts:
        assert starts[0] == 0 and starts[-1] == len(rows)
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            assert len(np.unique(rows[a:b] // bs)) <= bb  # a buffer spans at most bb blocks
    r1, _ = shuffled_rows(n, seed=5, epoch=2, block_size=bs)
    r2, _ = shuffled_rows(n, seed=5, epoch=2, block_size=bs)
    r3, _ = shuffled_rows(n, seed=5, epoch=3, block_size=bs)
    assert np.array_equal(r1, r2) and not np.array_equal(r1, r3)
    assert not np.array_equal(r1, np.arange(n))
    plain, _ = shuffled_rows(n, shuffle=False, block_size=bs)
    assert np.array_equal(plain, np.arange(n))
    with pytest.raises(ValueError, match="shard"):
        shuffled_rows(n, shard=2, num_shards=2)
    with pytest.raises(ValueError, match="block_size"):
        shuffled_rows(n, block_size=0)


def test_iterable_samples_collated_in_workers_travel_through_the_ring(table, crops, torch):
    ds = ImageTableIterableDataset(table, block_size=6, buffer_blocks=2, seed=5, columns=["label", "well"])
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, collate_fn=collate, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    rows, ringed = [], 0
    for b in loader:
        r = b["row"].numpy()
        assert type(b) is dict and b["row"].dtype == torch.int64 and b["label"].dtype == torch.int64
        assert np.array_equal(b["image"].numpy(), crops[r]) and b["well"] == [f"w{i}" for i in r]
        ringed += _in_ring(b["image"])
        rows += r.tolist()
    assert sorted(rows) == list(range(N)) and ringed >= N // 3 - 2 * 2 * 2


def test_iterable_samples_each_row_once_per_epoch_and_reshuffle(table, crops, torch):
    ds = ImageTableIterableDataset(table, block_size=6, buffer_blocks=2, seed=11, columns=["label"])
    orders = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=60
        )
        rows = []
        for s in loader:
            r = int(s["row"])
            assert np.array_equal(s["image"].numpy(), crops[r]) and s["label"] == r % 3
            rows.append(r)
        assert sorted(rows) == list(range(N))
        orders.append(rows)
    assert orders[0] != orders[1]


def test_iterable_batches_in_process_follow_the_plan(table, crops, torch):
    ds = ImageTableIterableDataset(table, batch_size=7, block_size=10, buffer_blocks=1, target="label", drop_last=True)
    batches = list(ds)
    assert [len(x) for x, _ in batches] == [7] * (N // 7)
    rows = ds.rows()
    for i, (x, y) in enumerate(batches):
        r = rows[i * 7 : i * 7 + 7]
        assert np.array_equal(x.numpy(), crops[r]) and y.tolist() == (r % 3).tolist()
    ordered = ImageTableIterableDataset(table, batch_size=16, shuffle=False)
    got = list(ordered)
    assert [b["row"].tolist() for b in got] == [list(range(0, 16)), list(range(16, 32)), list(range(32, N))]
    assert isinstance(ordered, torch.utils.data.IterableDataset)
    with pytest.raises(ValueError, match="drop_last"):
        ImageTableIterableDataset(table, drop_last=True)
    with pytest.raises(ValueError, match="batch_size"):
        ImageTableIterableDataset(table, batch_size=0)


def test_vortex_tables_take_the_general_path(tmp_path, crops):
    pytest.importorskip("vortex")
    path = tmp_path / "crops.vortex"
    of.write_table(path, crops[:10], dim_order="CYX", columns={"label": np.arange(10)})
    ds = ImageTableDataset(path, target="label")
    x, y = ds.__getitems__([8, 3])
    assert np.array_equal(x.numpy(), crops[[8, 3]]) and y.tolist() == [8, 3]


# -- patches of datasets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 60000, (2, 2, 3, 50, 70), dtype=np.uint16)
    b = rng.integers(0, 60000, (1, 2, 1, 40, 36), dtype=np.uint16)
    imgs = {"a": a, "a_labels": (a[:, :1] % 5).astype(np.uint8), "b": b, "b_labels": (b[:, :1] % 7).astype(np.uint8)}
    path = tmp_path_factory.mktemp("ds") / "s.omeds"
    of.write_dataset(list(imgs.values()), path, dim_order="TCZYX", image_ids=list(imgs), chunk_shape=(1, 16, 16),
                     progress=False)
    return str(path), imgs


def test_random_patches_match_the_images_and_labels(chunked, torch):
    path, imgs = chunked
    ds = DatasetPatchDataset(path, patch_shape=(12, 10), n_patches=25, with_labels="{image_id}_labels", seed=4)
    assert len(ds) == 25 and ds.image_ids == ["a", "b"]
    assert set(ds.origins[:, 0].tolist()) == {0, 1}
    for i in range(len(ds)):
        s = ds[i]
        t, z, y, x = s["origin"].tolist()
        img = imgs[s["image_id"]]
        assert np.array_equal(s["image"].numpy(), img[t, :, z, y : y + 12, x : x + 10])
        assert np.array_equal(s["label"].numpy(), imgs[s["image_id"] + "_labels"][t, :, z, y : y + 12, x : x + 10])
    again = DatasetPatchDataset(path, patch_shape=(12, 10), n_patches=25, seed=4, images=["a", "b"])
    assert np.array_equal(again.origins, ds.origins)
    first = ds.origins.copy()
    ds.set_epoch(1)
    assert not np.array_equal(first, ds.origins)


def test_grid_patches_cover_the_image_in_3d_and_load_in_workers(chunked, torch):
    path, imgs = chunked
    ds = DatasetPatchDataset(of.open_dataset(path), patch_shape=(2, 16, 32), stride=(1, 16, 32), images=["a"])
    # T=2; z origins 0, 1; y origins 0, 16, 32, 34; x origins 0, 32, 38
    assert len(ds) == 2 * 2 * 4 * 3
    assert sorted(set(ds.origins[:, 3].tolist())) == [0, 16, 32, 34]
    assert sorted(set(ds.origins[:, 4].tolist())) == [0, 32, 38]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, collate_fn=collate, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    n = 0
    for b in loader:
        assert b["image"].shape[1:] == (2, 2, 16, 32) and b["image"].is_contiguous()
        for img, (t, z, y, x) in zip(b["image"].numpy(), b["origin"].tolist(), strict=True):
            assert np.array_equal(img, imgs["a"][t, :, z : z + 2, y : y + 16, x : x + 32])
            n += 1
    assert n == len(ds)


def test_workers_refuse_a_table_replaced_after_the_dataset_was_made(tmp_path, crops, torch):
    """Workers reopen the table by its path: one replaced since fails the loader, naming it, instead of
    serving rows of another version under the parent's length and columns."""
    path = tmp_path / "crops.parquet"
    of.write_table(path, crops, dim_order="CYX")
    ds = ImageTableDataset(str(path))
    of.write_table(path, crops[::-1].copy(), dim_order="CYX")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, collate_fn=collate, num_workers=1, multiprocessing_context="fork", timeout=60
    )
    with pytest.raises(Exception, match="replaced or rewritten since") as err:
        next(iter(loader))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_workers_read_the_generation_the_patches_were_planned_on(tmp_path, where, torch):
    """An overwrite after the dataset was opened does not reach the workers, local or in a bucket."""
    img = np.random.default_rng(6).integers(0, 60000, (1, 1, 1, 40, 40), dtype=np.uint16)
    path = str(tmp_path / "d.omeds") if where == "local" else f"memory://patches-{tmp_path.name}/d.omeds"
    of.write_dataset([img], path, dim_order="TCZYX", image_ids=["a"], chunk_shape=(1, 16, 16), progress=False)
    ds = DatasetPatchDataset(path, patch_shape=(16, 16), stride=(16, 16))
    of.write_dataset([img // 3 + 1], path, dim_order="TCZYX", image_ids=["a"], chunk_shape=(1, 16, 16),
                     mode="overwrite", progress=False)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, collate_fn=collate, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    n = 0
    for b in loader:
        for patch, (t, z, y, x) in zip(b["image"].numpy(), b["origin"].tolist(), strict=True):
            assert np.array_equal(patch, img[t, :, z, y : y + 16, x : x + 16])
            n += 1
    assert n == len(ds) == 9  # origins 0, 16 and 24 on each axis


def test_patch_errors(chunked):
    path, _ = chunked
    with pytest.raises(ValueError, match="exactly one"):
        DatasetPatchDataset(path, patch_shape=(8, 8))
    with pytest.raises(ValueError, match="smaller than the patch"):
        DatasetPatchDataset(path, patch_shape=(45, 8), n_patches=3, images=["b"])
    with pytest.raises(of.ImageNotFoundError, match="no label image 'a_seg'"):
        DatasetPatchDataset(path, patch_shape=(8, 8), n_patches=3, images=["a"], with_labels="{image_id}_seg")
    with pytest.raises(ValueError, match="does not match image 'a'"):
        DatasetPatchDataset(path, patch_shape=(8, 8), n_patches=3, images=["a"], with_labels=lambda i: "b_labels")
    with pytest.raises(ValueError, match="image_id"):
        DatasetPatchDataset(path, patch_shape=(8, 8), n_patches=3, with_labels="labels")
    ds = DatasetPatchDataset(path, patch_shape=(8, 8), n_patches=3)
    with pytest.raises(IndexError, match="patch 3 is out of range"):
        ds[3]


def test_catalog_directories(tmp_path, torch):
    tifffile = pytest.importorskip("tifffile")
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 255, (2, 8, 8), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(small):
        tifffile.imwrite(src / f"s{i}.tif", a, metadata={"axes": "CYX"})
    big = rng.integers(0, 255, (1, 64, 64), dtype=np.uint8)
    tifffile.imwrite(src / "big.tif", big, metadata={"axes": "CYX"})
    out = tmp_path / "cat"
    of.catalog.build(src, out, workers=1, progress=False, max_record_bytes=1000)
    records = ImageTableDataset(out)
    assert len(records) == 3
    got = sorted(records.__getitems__([0, 1, 2])["image"].numpy().tolist())
    assert got == sorted(a.tolist() for a in small)
    patches = DatasetPatchDataset(out, patch_shape=(16, 16), stride=(16, 16))
    assert patches.image_ids == ["big"] and len(patches) == 16
    s = patches[5]
    _, _, y, x = s["origin"].tolist()
    assert np.array_equal(s["image"].numpy(), big[:, y : y + 16, x : x + 16])


# -- optional dependency ------------------------------------------------------------------


def test_without_torch_the_datasets_raise_optional_dependency_error(table, chunked, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(OptionalDependencyError, match="pip install 'omeframe\\[torch\\]'"):
        ImageTableDataset(table)
    with pytest.raises(OptionalDependencyError):
        ImageTableIterableDataset(table)
    with pytest.raises(OptionalDependencyError):
        DatasetPatchDataset(chunked[0], patch_shape=(8, 8), n_patches=2)


def test_importing_the_module_does_not_import_torch():
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(of.__file__).parents[1])!r})\n"
        "import omeframe.torch, omeframe.jax\n"
        "print(json.dumps(['torch' in sys.modules, 'jax' in sys.modules]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [False, False]


# -- the how-to's examples ----------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "howto" / "ml-tensors.md"
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)


def run_loader_examples(extra: str, where: Path) -> int:
    """Run the loader section of the ML how-to: its plain blocks and those tagged ``extra``
    (``python no-run torch`` / ``python no-run jax``, which tests/test_docs.py skips because
    the package is optional). Returns how many tagged blocks ran."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Training loaders")
    ns: dict[str, object] = {"np": np, "of": of, "rng": np.random.default_rng(3), "__name__": "docs"}
    ran = 0
    for m in _FENCE.finditer(text, start):
        words = m.group("info").split()
        if not words or words[0] != "python":
            continue
        tagged = words[1:] == ["no-run", extra]
        if words[1:] and not tagged:
            continue
        first_line = text.count("\n", 0, m.start("body")) + 1
        cwd = os.getcwd()
        os.chdir(where)
        try:
            exec(compile("\n" * (first_line - 1) + m.group("body"), str(DOC), "exec"), ns)  # noqa: S102
        finally:
            os.chdir(cwd)
        ran += tagged
    return ran


def test_the_howto_loader_examples_run(tmp_path):
    assert run_loader_examples("torch", tmp_path) == 3
