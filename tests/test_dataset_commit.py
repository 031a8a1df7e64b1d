"""Dataset commits: compare-and-swap generations, reader isolation, GC grace, crash safety.

* Two real processes appending at once: without retries exactly one commits
  and the other raises ``ConcurrentWriteError``; with ``retries`` both land
  (or, when their image ids clash, the loser raises).
* A reader holding an open ``Dataset`` keeps reading its generation while
  another process appends and overwrites; new readers never fail either.
* Garbage collection keeps the current generation and everything superseded
  less than the grace period ago.
* A writer killed (SIGKILL) after every commit step of create, append and
  overwrite leaves exactly the old dataset before the commit point and the
  new one after it.
* Datasets written before ``_manifests/`` existed still open and take appends.

The crash sweep over Vortex (and the long reader run) is marked ``slow``:
run it with ``-m slow`` or ``OMEFRAME_SLOW=1``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import omeframe as of
import omeframe.storage.atomic as atomic
from omeframe.errors import ConcurrentWriteError
from omeframe.formats.dataset import collect_garbage
from omeframe.formats.dataset.manifest import (
    MANIFEST_NAME,
    generation_path,
    list_generations,
    read_manifest,
)

pytest.importorskip("vortex")

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"
PYTHON_PATH = str(Path(of.__file__).resolve().parents[1])


def _slow_enabled(config: pytest.Config) -> bool:
    expr = config.getoption("-m") or ""
    return os.environ.get("OMEFRAME_SLOW") == "1" or ("slow" in expr and "not slow" not in expr)


def _arr(image_id: str, shape: tuple[int, ...] = (1, 1, 1, 40, 36)) -> np.ndarray:
    """The pixels of image ``image_id`` (the same in every process)."""
    return np.random.default_rng(zlib.crc32(image_id.encode())).integers(0, 4000, shape, dtype=np.uint16)


def _write(path: Path, ids: list[str], mode: str = "create", fmt: str = "parquet", **kw: Any) -> of.Dataset:
    return of.write_dataset([_arr(i) for i in ids], path, format=fmt if mode != "append" else None,
                            mode=mode, image_ids=ids, chunk_shape=(1, 16, 16), dim_order="TCZYX",
                            progress=False, **kw)


def _state(path: Path) -> dict[str, np.ndarray] | None:
    """The dataset's images (``None`` when there is no dataset)."""
    try:
        ds = of.open_dataset(path)
    except FileNotFoundError:
        return None
    with ds:
        return {iid: ds.read(iid) for iid in ds.image_ids}


def _expected(ids: list[str]) -> dict[str, np.ndarray]:
    return {i: _arr(i) for i in ids}


def _same(a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray] | None) -> bool:
    if a is None or b is None:
        return a is b
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def _referenced_only(path: Path) -> None:
    """After a collection with grace 0 the folder holds exactly the current generation's files."""
    m = read_manifest(path)
    named = set(m.parts) | {m.images, str(Path(m.images or "").with_suffix(".arrow"))}
    chunks = {f"chunks/{p.name}" for p in (path / "chunks").iterdir()}
    images = {p.name for p in path.iterdir() if p.name.startswith(("images-", ".images-"))}
    assert chunks == set(m.parts)
    assert images <= named and m.images in images
    assert list_generations(path) == [m.generation]


# ---------------------------------------------------------------------------
# two processes appending at the same time
# ---------------------------------------------------------------------------
def _appender(jobs: Any, out: Any, barrier: Any) -> None:
    """A worker process: append one image per job, waiting for the other worker before committing.

    Both workers have read the base generation and written their chunks when
    they pass the barrier, so their commits race on the same generation.
    """
    waited: list[bool] = []

    def hook(step: str) -> None:
        if step == "fsync-dir:chunks" and not waited:
            waited.append(True)
            barrier.wait(timeout=60)

    atomic.COMMIT_HOOK = hook
    while (job := jobs.get()) is not None:
        path, image_id, retries = job
        waited.clear()
        try:
            of.write_dataset(_arr(image_id), path, mode="append", image_ids=[image_id],
                             dim_order="TCZYX", retries=retries, progress=False)
            out.put((image_id, "ok", ""))
        except ConcurrentWriteError as exc:
            out.put((image_id, "conflict", str(exc)))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out.put((image_id, "error", f"{type(exc).__name__}: {exc}"))


@pytest.fixture(scope="module")
def race() -> Any:
    """``race(path, [id1, id2], retries)``: two real processes append at the same moment."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    queues = [ctx.Queue(), ctx.Queue()]
    procs = [ctx.Process(target=_appender, args=(q, out, barrier), daemon=True) for q in queues]
    for p in procs:
        p.start()

    def run(path: Path, ids: list[str], retries: int) -> dict[str, tuple[str, str]]:
        for q, iid in zip(queues, ids, strict=True):
            q.put((str(path), iid, retries))
        results = [out.get(timeout=120) for _ in queues]
        return {f"{iid}#{n}": (status, msg) for n, (iid, status, msg) in enumerate(results)}

    yield run
    for q in queues:
        q.put(None)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_concurrent_appenders_exactly_one_wins(tmp_path: Path, fmt: str, race: Any) -> None:
    path = tmp_path / "ds"
    _write(path, ["base"], fmt=fmt)
    res = race(path, ["p", "q"], retries=0)
    statuses = sorted(s for s, _ in res.values())
    assert statuses == ["conflict", "ok"], res
    msg = next(m for s, m in res.values() if s == "conflict")
    assert str(path) in msg and "generation 2 was committed by another writer" in msg
    winner = next(k.split("#")[0] for k, (s, _) in res.items() if s == "ok")
    assert _same(_state(path), _expected(["base", winner]))
    assert of.open_dataset(path).generation == 2 and list_generations(path) == [1, 2]
    # the loser removed its own files: only the two generations' files are there
    m = read_manifest(path)
    assert {f"chunks/{p.name}" for p in (path / "chunks").iterdir()} == set(m.parts)


def test_concurrent_appenders_both_land_with_retries(tmp_path: Path, race: Any) -> None:
    path = tmp_path / "ds"
    _write(path, ["base"])
    res = race(path, ["p", "q"], retries=2)
    assert sorted(s for s, _ in res.values()) == ["ok", "ok"], res
    ds = of.open_dataset(path)
    assert ds.generation == 3 and ds.image_ids[0] == "base" and sorted(ds.image_ids[1:]) == ["p", "q"]
    assert _same({k: ds.read(k) for k in sorted(ds.image_ids)}, _expected(sorted(["base", "p", "q"])))
    assert ds.verify()["images"] == 3


def test_concurrent_appenders_clashing_ids_do_not_merge(tmp_path: Path, race: Any) -> None:
    path = tmp_path / "ds"
    _write(path, ["base"])
    res = race(path, ["dup", "dup"], retries=2)
    assert sorted(s for s, _ in res.values()) == ["conflict", "ok"], res
    msg = next(m for s, m in res.values() if s == "conflict")
    assert "already holds image 'dup' level 0" in msg and "cannot be merged" in msg
    assert of.open_dataset(path).image_ids == ["base", "dup"]


def test_commit_is_compare_and_swap(tmp_path: Path) -> None:
    """Two writers based on the same generation, interleaved in one process."""
    path = tmp_path / "ds"
    _write(path, ["base"])
    holder: list[of.Dataset] = []

    def hook(step: str) -> None:  # commit another append while this one is between steps
        if step == "fsync-dir:chunks" and not holder:
            atomic.COMMIT_HOOK = None
            holder.append(_write(path, [f"other{len(list_generations(path))}"], mode="append"))

    atomic.COMMIT_HOOK = hook
    try:
        with pytest.raises(ConcurrentWriteError, match="generation 2 was committed by another writer"):
            _write(path, ["mine"], mode="append")
    finally:
        atomic.COMMIT_HOOK = None
    assert of.open_dataset(path).image_ids == ["base", "other1"]
    assert {f"chunks/{p.name}" for p in (path / "chunks").iterdir()} == set(read_manifest(path).parts)
    holder.clear()
    atomic.COMMIT_HOOK = hook
    try:
        ds = _write(path, ["mine"], mode="append", retries=1)  # loses once, rebases, commits
    finally:
        atomic.COMMIT_HOOK = None
    assert ds.generation == 4 and ds.image_ids == ["base", "other1", "other2", "mine"]
    assert _same({k: ds.read(k) for k in ds.image_ids}, _expected(ds.image_ids))
    with pytest.raises(ValueError, match="retries must be a non-negative integer"):
        _write(path, ["x"], mode="append", retries=-1)


# ---------------------------------------------------------------------------
# readers keep their generation; garbage collection grace
# ---------------------------------------------------------------------------
def test_open_reader_keeps_its_generation_and_gc_grace(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    _write(path, ["a", "b"])
    old = of.open_dataset(path)
    assert old.generation == 1
    _write(path, ["c"], mode="append")
    _write(path, ["o"], mode="overwrite")  # in place: a new generation, old files stay
    assert of.open_dataset(path).image_ids == ["o"] and of.open_dataset(path).generation == 3
    assert _same({k: old.read(k) for k in old.image_ids}, _expected(["a", "b"]))
    old.close()  # drops its open files: the next read opens them again
    # within the grace period nothing a live generation names is removed
    report = collect_garbage(path, grace_seconds=3600)
    assert report.kept == [1, 2, 3] and report.removed == []
    # a debris file of a write in progress (fresh) is kept; an old one goes
    fresh = path / "chunks" / "part-99999-deadbeef.parquet.tmp"
    fresh.write_bytes(b"x")
    stale = path / "chunks" / "part-99998-deadbeef.parquet"
    stale.write_bytes(b"y")
    later = time.time() + 7200
    os.utime(stale, (later - 4000, later - 4000))
    os.utime(fresh, (later - 10, later - 10))
    # two hours on, generations 1 and 2 were superseded long enough ago
    report = collect_garbage(path, grace_seconds=3600, now=later)
    assert report.kept == [3] and "chunks/part-99998-deadbeef.parquet" in report.removed
    assert (path / "chunks" / "part-99999-deadbeef.parquet.tmp").exists()  # modified "just now"
    assert of.open_dataset(path).image_ids == ["o"]
    with pytest.raises(FileNotFoundError, match="generation 1, which this Dataset opened, was garbage-collected"):
        old.read("a")
    with pytest.raises(FileNotFoundError, match="has no generation 1"):
        of.Dataset(path, generation=1)
    (path / "chunks" / "part-99999-deadbeef.parquet.tmp").unlink()
    of.open_dataset(path).gc(grace_seconds=0)
    _referenced_only(path)
    with pytest.raises(ValueError, match="grace_seconds must be a non-negative"):
        collect_garbage(path, grace_seconds=-1)


def test_writers_collect_after_commit_once_grace_passed(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    _write(path, ["a"])
    _write(path, ["b"], mode="append")
    _write(path, ["c"], mode="append")
    assert list_generations(path) == [1, 2, 3]
    # age generation 2 and 3's commits: generations 1 and 2 are past their grace
    past = time.time() - 7200
    for g in (1, 2, 3):
        os.utime(generation_path(path, g), (past, past))
    ds = _write(path, ["d"], mode="append")
    assert list_generations(path) == [3, 4]  # 3 was superseded just now
    assert ds.image_ids == ["a", "b", "c", "d"]
    ds = _write(path, ["e"], mode="append", gc_grace_seconds=0)
    assert list_generations(path) == [5]


_READER = """
import sys, time, numpy as np, omeframe as of
path, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    a = np.full((1, 1, 1, 40, 36), i, np.uint16)
    of.write_dataset(a, path, mode="overwrite" if i % 3 == 2 else "append", image_ids=[f"w{i}"],
                     chunk_shape=(1, 16, 16), dim_order="TCZYX", progress=False, retries=5)
"""


@pytest.mark.parametrize("n_writes", [12, pytest.param(60, marks=pytest.mark.slow)])
def test_reader_under_appends_never_fails(tmp_path: Path, request: pytest.FixtureRequest, n_writes: int) -> None:
    if n_writes > 12 and not _slow_enabled(request.config):
        pytest.skip("slow: run with -m slow or OMEFRAME_SLOW=1")
    path = tmp_path / "ds"
    _write(path, ["a", "b"])
    held = of.open_dataset(path)  # opened before the writer starts, read throughout
    expected = _expected(["a", "b"])
    env = {**os.environ, "PYTHONPATH": PYTHON_PATH}
    writer = subprocess.Popen([sys.executable, "-c", _READER, str(path), str(n_writes)], env=env,
                              stderr=subprocess.PIPE, text=True)
    reads = fresh = 0
    try:
        while writer.poll() is None or reads == 0:
            got = {k: held.read(k, y=(0, 40), x=(0, 36)) for k in ("a", "b")}
            assert _same(got, expected)
            reads += 1
            with of.open_dataset(path) as ds:  # a fresh reader sees a complete generation
                for iid in ds.image_ids:
                    arr = ds.read(iid)
                    if iid.startswith("w"):
                        assert (arr == int(iid[1:])).all()
                fresh += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    assert reads > 0 and fresh > 0
    assert _same({k: held.read(k) for k in ("a", "b")}, expected)
    final = of.open_dataset(path)
    last_overwrite = max(i for i in range(n_writes) if i % 3 == 2)
    assert final.image_ids == [f"w{i}" for i in range(last_overwrite, n_writes)]


# ---------------------------------------------------------------------------
# kill -9 at every commit step
# ---------------------------------------------------------------------------
def _crash_child(path: str, op: str, fmt: str, kill_at: int, log: str) -> None:
    """Run one write, SIGKILLing this process right after commit step number ``kill_at``."""
    steps: list[str] = []

    def hook(step: str) -> None:
        if len(steps) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        steps.append(step)

    atomic.COMMIT_HOOK = hook
    ids, mode = OPS[op]
    _write(Path(path), ids, mode=mode, fmt=fmt)
    Path(log).write_text(json.dumps(steps))


#: operation -> (image ids written, mode); the dataset before append/overwrite holds "a", "b"
OPS: dict[str, tuple[list[str], str]] = {
    "create": (["a", "b"], "create"),
    "append": (["c"], "append"),
    "overwrite": (["o"], "overwrite"),
}
_BEFORE = {"create": None, "append": ["a", "b"], "overwrite": ["a", "b"]}
_AFTER = {"create": ["a", "b"], "append": ["a", "b", "c"], "overwrite": ["o"]}


@pytest.fixture(scope="module")
def forkserver() -> Any:
    """A forkserver context with omeframe preloaded: a killed writer costs a fork, not an interpreter start."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["pytest", "omeframe", "pyarrow.parquet", "vortex", __name__])
    return ctx


def _run_crash(ctx: Any, path: Path, op: str, fmt: str, kill_at: int, log: Path) -> int:
    proc = ctx.Process(target=_crash_child, args=(str(path), op, fmt, kill_at, str(log)))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode in (0, -signal.SIGKILL), proc.exitcode
    return int(proc.exitcode)


def _sweep(ctx: Any, tmp_path: Path, op: str, fmt: str) -> None:
    template = tmp_path / "template"
    if _BEFORE[op] is not None:
        _write(template, _BEFORE[op], fmt=fmt)
    path = tmp_path / "work" / "ds"
    log = tmp_path / "steps.json"

    def reset() -> None:
        shutil.rmtree(tmp_path / "work", ignore_errors=True)
        (tmp_path / "work").mkdir()
        if template.exists():
            shutil.copytree(template, path)

    reset()
    assert _run_crash(ctx, path, op, fmt, -1, log) == 0  # a full run lists the steps
    steps = json.loads(log.read_text())
    commit = steps.index("rename:dataset" if op == "create" else "commit")
    assert "fsync-dir:chunks" in steps and steps.index("fsync-dir:chunks") < commit
    before = None if _BEFORE[op] is None else _expected(_BEFORE[op])
    after = _expected(_AFTER[op])
    for k in range(len(steps)):
        reset()
        assert _run_crash(ctx, path, op, fmt, k, log) == -signal.SIGKILL
        # killed after step k: the commit point is passed when k >= commit
        got = _state(path)
        assert _same(got, after if k >= commit else before), f"killed after step {k} ({steps[k]}) of {op}"
        if got is not None:
            # the debris is collectable and the dataset takes the next write
            collect_garbage(path, grace_seconds=0)
            _referenced_only(path)
            ds = _write(path, ["next"], mode="append")
            assert ds.image_ids[-1] == "next" and ds.verify()["images"] == len(got) + 1
            assert json.loads((path / MANIFEST_NAME).read_text())["generation"] == ds.generation


@pytest.mark.parametrize("op", ["create", "append", "overwrite"])
def test_kill_at_every_commit_step(tmp_path: Path, forkserver: Any, op: str) -> None:
    _sweep(forkserver, tmp_path, op, "parquet")


@pytest.mark.slow
@pytest.mark.parametrize("op", ["create", "append", "overwrite"])
def test_kill_at_every_commit_step_vortex(
    tmp_path: Path, forkserver: Any, request: pytest.FixtureRequest, op: str
) -> None:
    if not _slow_enabled(request.config):
        pytest.skip("slow: run with -m slow or OMEFRAME_SLOW=1")
    _sweep(forkserver, tmp_path, op, "vortex")


def test_commit_steps_fsync_every_file(tmp_path: Path) -> None:
    """Each file a write makes is fsynced before the commit, and the folders after their renames."""
    path = tmp_path / "ds"
    _write(path, ["a"])
    steps: list[str] = []
    atomic.COMMIT_HOOK = steps.append
    try:
        ds = _write(path, ["b"], mode="append")
    finally:
        atomic.COMMIT_HOOK = None
    m = ds.manifest
    images = Path(m.images or "").name
    commit = steps.index("commit")
    before = steps[:commit]
    for name in (m.parts[-1], images, Path(images).with_suffix(".arrow").name, f"{m.generation:010d}.json"):
        assert f"fsync:{name}" in before, (name, steps)
    assert {"fsync-dir:chunks", f"fsync-dir:{images}"} <= set(before)
    assert steps[commit + 1] == "fsync-dir:_manifests"
    assert (path / MANIFEST_NAME).read_bytes() == generation_path(path, m.generation).read_bytes()


# ---------------------------------------------------------------------------
# datasets of the legacy layout (manifest.json only)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_legacy_layout_opens_and_takes_appends(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "legacy"
    shutil.copytree(LEGACY / f"legacy-{fmt}", path)
    a, b = np.load(LEGACY / "legacy-a.npy"), np.load(LEGACY / "legacy-b.npy")
    assert not (path / "_manifests").exists()
    old = of.open_dataset(path)
    assert old.generation == 2 and old.image_ids == ["a", "b"] and old.format == fmt
    assert np.array_equal(old.read("a"), a) and np.array_equal(old.read("b"), b)
    assert old.verify()["images"] == 2
    ds = _write(path, ["c"], mode="append")
    assert ds.generation == 3 and ds.image_ids == ["a", "b", "c"]
    # the legacy generation was recorded, so the CAS and the GC grace cover it
    assert list_generations(path) == [2, 3]
    assert np.array_equal(old.read("b"), b) and np.array_equal(of.open_dataset(path).read("a"), a)
    assert json.loads((path / MANIFEST_NAME).read_text())["generation"] == 3
    ds.gc(grace_seconds=0)
    _referenced_only(path)
    assert not (path / f"images-00001.{fmt}").exists() and not (path / f"images-00002.{fmt}").exists()
    assert _same(_state(path), {"a": a, "b": b, "c": _arr("c")})


def test_commit_by_older_version_is_seen(tmp_path: Path) -> None:
    """An older omeframe writes only manifest.json; when it is ahead of _manifests/ it is current."""
    path = tmp_path / "ds"
    _write(path, ["a"])
    ds = _write(path, ["b"], mode="append")
    copy = json.loads((path / MANIFEST_NAME).read_text())
    # a commit list that names one part, by a version that records no CRCs
    older = {**{k: v for k, v in copy.items() if k not in ("crc32", "checksums")}, "generation": 3,
             "parts": copy["parts"][:1]}
    (path / MANIFEST_NAME).write_text(json.dumps(older))
    assert read_manifest(path).generation == 3 and read_manifest(path).parts == copy["parts"][:1]
    assert of.open_dataset(path).generation == 3
    assert ds.generation == 2  # an open Dataset keeps its generation
