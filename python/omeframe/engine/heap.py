"""A process's C heap that keeps the memory of one batch for the next (glibc only).

A process that reads batch after batch of the same size (a DataLoader
worker, a training loop) allocates and frees the same few MB per batch: the
decoded pixels, zstd's output buffers, the payloads vortex-data gathers. glibc's
``malloc`` serves such blocks from the top of its heap or by ``mmap`` and,
once more than its trim threshold lies free at the top, hands the memory back
to the kernel; the next batch faults every page in again, each zeroed by the
kernel. A DataLoader worker reading 256 crops 3×64×64 from a Vortex table
took 2,000 page faults and 4 ms of kernel time a batch, half of what it
spent: 27,000 samples/s with 2 workers on 2 cores, 41,000 with the heap kept.
In one process, whose threads spread the work over glibc's arenas, a random
batch of 256 such crops took 7.7 ms, and 7.3 ms with it.

:func:`keep_batch_memory` makes glibc serve blocks below
:data:`MMAP_THRESHOLD` from its heap and keep up to :data:`TRIM_THRESHOLD`
of free memory at its top (``mallopt``). ``omeframe.torch`` calls it in
each loader worker, a process that exists to serve batches; the process
that imports omeframe is changed only when it calls it itself. It changes
nothing where the C library is not glibc, or where the environment already
tunes glibc's malloc (``GLIBC_TUNABLES`` naming ``glibc.malloc``, or one of
:data:`MALLOC_VARIABLES`, as a Dask worker's ``MALLOC_TRIM_THRESHOLD_``): the
user's choice stands.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Mapping

__all__ = ["MALLOC_VARIABLES", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_batch_memory", "user_tunes_malloc"]

#: Blocks below this many bytes come from the heap (glibc's largest allowed value on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free memory up to this many bytes at the top of the heap stays with the process.
TRIM_THRESHOLD = 64 << 20

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: The environment variables by which a user tunes glibc's malloc (``man 3 mallopt``).
MALLOC_VARIABLES = (
    "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_",
)  # fmt: skip

_lock = threading.Lock()
_kept: dict[int, bool] = {}  # per process id: what keep_batch_memory did


def user_tunes_malloc(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment tunes glibc's malloc (then omeframe leaves it alone).

    Parameters
    ----------
    environ
        The environment to look at (default: ``os.environ``).

    Examples
    --------
    >>> user_tunes_malloc({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    True
    >>> user_tunes_malloc({"PATH": "/usr/bin"})
    False
    """
    env = os.environ if environ is None else environ
    return "glibc.malloc." in env.get("GLIBC_TUNABLES", "") or any(v in env for v in MALLOC_VARIABLES)


def keep_batch_memory() -> bool:
    """Let this process's glibc heap keep a batch's memory for the next batch; whether it now does.

    Sets ``mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)`` and
    ``mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)``, once per process (see the
    module notes): blocks below 32 MB come from the heap, and up to 64 MB
    of free heap stay with the process instead of going back to the kernel.
    Fixed thresholds end glibc's own adjustment of them. The loader workers
    of ``omeframe.torch`` call it; call it in a process that reads many
    batches itself (a training loop without workers).

    Returns
    -------
    bool
        ``True`` once the thresholds are set; ``False``, changing nothing,
        where the C library is not glibc or the environment tunes malloc
        itself (:func:`user_tunes_malloc`).

    Examples
    --------
    A training loop that reads its batches in the main process:

    >>> import omeframe
    >>> omeframe.keep_batch_memory()  # doctest: +SKIP
    True
    >>> table = omeframe.open_table("crops.vortex")  # doctest: +SKIP
    >>> for rows in batches_of_rows:  # doctest: +SKIP
    ...     x = table.to_numpy(rows)
    """
    pid = os.getpid()
    with _lock:
        done = _kept.get(pid)
        if done is None:
            done = _kept[pid] = _set_thresholds()
    return done


def _set_thresholds() -> bool:
    if user_tunes_malloc() or not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")  # type: ignore[union-attr]
    except (ValueError, OSError, AttributeError):  # not a GNU system
        return False
