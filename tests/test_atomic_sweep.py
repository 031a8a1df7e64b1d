"""Temporaries of killed writes: recognised by host and process, swept by the next write of the same file.

A record-table write killed with SIGKILL in the middle (its lanes' part files
on disk, nothing renamed) leaves hidden temporaries beside the target; the next
write of that target removes them, and never touches the temporaries of a
writer that is still alive or files of other names.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

import omeframe as of
from omeframe.storage import atomic
from omeframe.storage.atomic import STALE_TEMP_SECONDS, sweep_stale_temps

_KILLED_WRITE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import omeframe as of
    from omeframe.storage import parquet_parallel

    def die(*args, **kwargs):  # every lane has written its rows; nothing is stitched or renamed yet
        os.kill(os.getpid(), signal.SIGKILL)

    parquet_parallel._stitch = die
    of.set_num_threads(2)
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 255, (4000, 3, 32, 32), dtype=np.uint8)
    of.write_table(sys.argv[1], cells, dim_order="CYX", row_group_bytes=1 << 20, progress=False)
""")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_killed_parallel_write_leaves_litter_the_next_write_sweeps(tmp_path: Path) -> None:
    target = tmp_path / "crops.parquet"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(target)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    litter = _hidden(tmp_path)
    assert not target.exists()
    assert any(".tmp-" in n and ".part" not in n for n in litter), litter  # lane 0's file
    assert any(".part" in n for n in litter), litter  # another lane's part file
    cells = np.arange(20 * 3 * 8 * 8, dtype=np.uint16).reshape(20, 3, 8, 8)
    of.write_table(target, cells, dim_order="CYX", progress=False)
    assert _hidden(tmp_path) == []
    np.testing.assert_array_equal(of.open_table(target).to_numpy(), cells)


def _temp(folder: Path, target: str, owner: str, *, part: bool = False, age: float = 0.0) -> Path:
    name = f".{target}.tmp-{owner}{os.urandom(6).hex()}"
    path = folder / (f".{name}.part1-{os.urandom(4).hex()}" if part else name)
    path.write_bytes(b"x")
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_sweep_removes_only_abandoned_temporaries_of_that_target(tmp_path: Path) -> None:
    host = atomic._HOST
    dead = f"{host}{_dead_pid():08x}"
    alive = f"{host}{os.getpid():08x}"
    other_host = f"{(int(host, 16) ^ 1):08x}{os.getpid():08x}"
    gone = [
        _temp(tmp_path, "t.parquet", dead),
        _temp(tmp_path, "t.parquet", dead, part=True),
        _temp(tmp_path, "t.parquet", other_host, age=STALE_TEMP_SECONDS + 60),
        _temp(tmp_path, "t.parquet", "0123456789ab", age=STALE_TEMP_SECONDS + 60),  # an older naming
    ]
    gone_dir = tmp_path / f".t.parquet.tmp-{dead}{'0' * 12}"
    gone_dir.mkdir()
    (gone_dir / "inner").write_bytes(b"y")
    kept = [
        _temp(tmp_path, "t.parquet", alive),  # a live writer in this process
        _temp(tmp_path, "t.parquet", alive, part=True),
        _temp(tmp_path, "t.parquet", other_host),  # another host's writer, recent: cannot be checked
        _temp(tmp_path, "t.parquet", "0123456789ab"),
        _temp(tmp_path, "u.parquet", dead),  # another target
        _temp(tmp_path, "t.parquet.bak", dead),
    ]
    (tmp_path / "t.parquet").write_bytes(b"data")
    removed = sweep_stale_temps(tmp_path / "t.parquet")
    assert sorted(removed) == sorted([*gone, gone_dir])
    assert all(not p.exists() for p in [*gone, gone_dir])
    assert all(p.exists() for p in kept)
    assert (tmp_path / "t.parquet").read_bytes() == b"data"


def test_temporary_names_carry_host_and_pid(tmp_path: Path) -> None:
    seen: list[str] = []
    with atomic.atomic_path(tmp_path / "a.bin") as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"1")
    tag = seen[0].split(".tmp-", 1)[1]
    assert tag[:8] == atomic._HOST and int(tag[8:16], 16) == os.getpid()
    assert all(c in "0123456789abcdef" for c in tag)  # dataset GC recognises temporaries by hex names
