"""Whether glibc hands a freshly freed block back to the kernel (tests of omeframe.engine.heap).

``python tests/heap_probe.py [keep]`` prints, as JSON, what :func:`probe`
saw in a fresh process, after ``keep_batch_memory()`` when asked.
"""

from __future__ import annotations

import ctypes
import json
import sys


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]  # fmt: skip


def probe(nbytes: int = 8 << 20) -> dict[str, int]:
    """Allocate and free ``nbytes`` with the C heap: how much of it was mmapped, and how much the heap returned."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2()
    block = libc.malloc(nbytes)
    ctypes.memset(block, 1, nbytes)
    during = libc.mallinfo2()
    libc.free(block)
    after = libc.mallinfo2()
    return {"mmapped": during.hblkhd - before.hblkhd, "returned": max(0, during.arena - after.arena)}


def goes_back(nbytes: int = 8 << 20) -> bool:
    """Whether a block of ``nbytes`` freed now leaves the process (mmapped, or trimmed off the heap)."""
    seen = probe(nbytes)
    return seen["mmapped"] >= nbytes or seen["returned"] >= nbytes


if __name__ == "__main__":
    kept = None
    if sys.argv[1:] == ["keep"]:
        from omeframe.engine.heap import keep_batch_memory

        kept = keep_batch_memory()
    print(json.dumps({"kept": kept, "goes_back": goes_back()}))
