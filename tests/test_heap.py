"""omeframe.engine.heap: a loader worker's glibc heap keeps a batch's memory for the next batch.

Each case runs ``tests/heap_probe.py`` in a fresh process, so this process's
heap is never changed: the probe allocates, touches and frees an 8 MB block
and reports whether the block left the process (mmapped, or trimmed off the
top of the heap).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omeframe.engine import heap

PROBE = Path(__file__).with_name("heap_probe.py")


def _probe(*args: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in heap.MALLOC_VARIABLES and k != "GLIBC_TUNABLES"}
    done = subprocess.run(
        [sys.executable, str(PROBE), *args], env={**clean, **env}, capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


pytestmark = pytest.mark.skipif(
    not heap._glibc(), reason="mallopt thresholds are glibc's; this C library is not glibc"
)


def test_without_it_a_freed_batch_buffer_goes_back_to_the_kernel():
    assert _probe() == {"kept": None, "goes_back": True}  # the probe sees what it is meant to see


def test_with_it_the_heap_keeps_the_buffer_for_the_next_batch():
    assert _probe("keep") == {"kept": True, "goes_back": False}


@pytest.mark.parametrize(
    "env", [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}]
)
def test_the_environments_own_malloc_tuning_stands(env):
    assert _probe("keep", **env) == {"kept": False, "goes_back": True}


def test_user_tunes_malloc_reads_the_variables_glibc_reads():
    assert heap.user_tunes_malloc({"MALLOC_ARENA_MAX": "2"})
    assert heap.user_tunes_malloc({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512:glibc.malloc.tcache_count=0"})
    assert not heap.user_tunes_malloc({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512"})
    assert not heap.user_tunes_malloc({"MALLOC_CONF": "narenas:2"})  # jemalloc's, not glibc's
