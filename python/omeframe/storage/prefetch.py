"""Ask the kernel to read many scattered byte ranges of a file at once.

A take of random rows touches one small range per row. Through a memory map,
each range not yet in the page cache costs a page fault that waits for the
disk, one after the other: 256 rows of a table larger than the cache cost
256 sequential disk reads (340 ms on this project's test machine, against
8 ms when cached). :func:`will_need` first tells the kernel every range
(``posix_fadvise(POSIX_FADV_WILLNEED)``), so it queues all the reads at once
and the disk serves them in parallel; the faults that follow find the pages
read or in flight. On ranges already cached the advice costs about a
microsecond each (``madvise`` on the map costs up to 50 µs each on first
touch of a mapping, so the file's descriptor is advised instead), a quarter
to half a millisecond for a batch of 256 random crops: :class:`ResidencyCheck`
lets a reader skip it while the whole map is cached (:func:`resident`), asking
only once the advice given has cost as much as asking does.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
import time

import numpy as np

__all__ = [
    "ADVICE_S", "ASK_S_PER_PAGE", "CAN_ADVISE", "RESIDENT_RECHECK_FACTOR", "RESIDENT_RECHECK_S", "ResidencyCheck",
    "resident", "will_need",
]

#: Whether this platform can advise the kernel of reads to come (POSIX ``posix_fadvise``).
CAN_ADVISE = hasattr(os, "posix_fadvise") and hasattr(os, "POSIX_FADV_WILLNEED")
_PAGE = mmap.PAGESIZE
#: How long a map's answer from :func:`resident` stands (seconds) before it is asked again ...
RESIDENT_RECHECK_S = 1.0
#: ... at least, and at least this many times as long as asking took (a map of 100 GB takes
#: about a second to ask about: its answer then stands for minutes).
RESIDENT_RECHECK_FACTOR = 100


def _mincore() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).mincore
    except (OSError, AttributeError):  # pragma: no cover - a libc without mincore
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_MINCORE = _mincore()


def resident(mm: mmap.mmap) -> bool:
    """Whether every page of the memory map ``mm`` is in the page cache (Linux ``mincore``; else ``False``).

    One system call over the whole map (about 5 ms for 600 MB): callers ask
    it now and then (:class:`ResidencyCheck`), not per read.

    Example
    -------
    >>> import mmap, tempfile, os
    >>> fd, path = tempfile.mkstemp()
    >>> _ = os.write(fd, b"x" * 10000)
    >>> mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    >>> resident(mm) in (True, False)
    True
    >>> mm.close(); os.close(fd); os.remove(path)
    """
    n = len(mm)
    if _MINCORE is None or n == 0:
        return False
    view = np.frombuffer(mm, dtype=np.uint8)
    try:
        vec = np.zeros(-(-n // _PAGE), dtype=np.uint8)
        if _MINCORE(ctypes.c_void_p(view.ctypes.data), n, ctypes.c_void_p(vec.ctypes.data)) != 0:
            return False
        return bool((vec & 1).all())
    finally:
        del view  # release the map's buffer: it can close


#: What one advice call costs on pages already cached (seconds; about a microsecond on this
#: project's test machine).
ADVICE_S = 1e-6
#: What asking :func:`resident` costs per page of a map before it has been asked once (seconds:
#: about 65 ns, 130 ms for a map of 8 GB on the same machine).
ASK_S_PER_PAGE = 65e-9


class ResidencyCheck:
    """Whether a map is wholly in the page cache, asked only when asking pays.

    Advice on ranges already cached only costs time (about 1 µs a range, a
    quarter of a millisecond for a batch of 256 random crops), and asking
    costs time too (about 1 ms per 15 MB of map). So:

    - Until an answer says the map is cached, a reader advises every take
      and reports how many calls it made (:meth:`advised`). The map is asked
      about once that advice has cost as much as asking does (estimated from
      the map's size with :data:`ASK_S_PER_PAGE` until asked once, then what
      asking took): a fresh process's first take from a large table does not
      wait for the kernel to walk the whole map, and a reader never spends
      more than twice what the better choice would have cost.
    - An answer stands for at least :data:`RESIDENT_RECHECK_S` seconds, and
      at least :data:`RESIDENT_RECHECK_FACTOR` times as long as asking took.
      While the last answer says every page is cached, takes skip the advice.

    An answer can go stale within its interval (pages evicted meanwhile):
    reads then fault those pages in one at a time, as without advice, and
    are never wrong.
    """

    def __init__(self) -> None:
        self._until = -1.0
        self._answer = False
        self._owed = 0.0  # seconds of advice given since the last answer
        self._cost: float | None = None  # seconds the last answer took
        self._lock = threading.Lock()

    def advised(self, calls: int) -> None:
        """Report ``calls`` advice calls made because the last answer was not "cached"."""
        with self._lock:
            self._owed += calls * ADVICE_S

    def __call__(self, mm: mmap.mmap) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._until:
                return self._answer
            if not self._answer:
                cost = self._cost if self._cost is not None else ASK_S_PER_PAGE * -(-len(mm) // _PAGE)
                if self._owed < cost:
                    return False
            self._until = now + RESIDENT_RECHECK_S  # one caller asks; the others keep the last answer
        answer = resident(mm)
        took = time.monotonic() - now
        with self._lock:
            self._answer = answer
            self._cost = took
            self._owed = 0.0
            self._until = now + max(RESIDENT_RECHECK_S, RESIDENT_RECHECK_FACTOR * took)
        return answer


def will_need(fd: int, starts: np.ndarray, stops: np.ndarray) -> int:
    """Advise the kernel that the bytes ``starts[i]:stops[i]`` of open file ``fd`` will be read soon.

    Ranges are widened to whole pages and merged where they touch; returns
    the number of advice calls made (``0`` where the platform cannot advise).
    Never raises for advice the kernel refuses: it is a hint.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> fd, path = tempfile.mkstemp()
    >>> will_need(fd, np.array([0, 100, 500_000]), np.array([10, 200, 500_100])) in (0, 2)
    True
    >>> os.close(fd); os.remove(path)
    """
    if not CAN_ADVISE or not len(starts):
        return 0
    lo = (np.asarray(starts, dtype=np.int64) // _PAGE) * _PAGE
    hi = np.asarray(stops, dtype=np.int64)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    first = np.flatnonzero(np.concatenate([[True], lo[1:] > reach[:-1]]))
    last = np.concatenate([first[1:] - 1, [len(lo) - 1]])
    calls = 0
    advise, advice = os.posix_fadvise, os.POSIX_FADV_WILLNEED
    for a, b in zip(lo[first].tolist(), reach[last].tolist(), strict=True):
        if b > a:
            try:
                advise(fd, a, b - a, advice)
            except OSError:
                return calls
            calls += 1
    return calls
