"""Find where each chunk's stored bytes sit inside a finished part file.

Parquet (pixel column PLAIN, no dictionary, no Parquet compression) and
Vortex (binary data of already-compressed chunks is stored as is) both keep
every chunk payload verbatim and in row order inside the file. While writing,
the writer remembers each chunk's first bytes, length and CRC-32; afterwards
this module scans the file forward, finds each payload's first bytes from the
end of the previous one and accepts a position only when the CRC-32 of the
bytes there matches, so a wrong match is impossible in practice. The offsets
let readers fetch a chunk with a single ``pread``, whatever the container's
block or row-group layout. When a payload cannot be found (the container
re-encoded it), the result is ``None`` and readers fall back to the
container's own row access.

The scan reads the file sequentially in bounded windows (never mapping the
whole file), so its memory use does not grow with the file: ingesting a
multi-GiB image stays within the writer's own memory bound.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["locate_payloads", "HEAD_BYTES"]

#: How many leading bytes of each payload the writer keeps for the search.
HEAD_BYTES = 16
_WINDOW = 4 << 20


def _crc_at(fd: int, offset: int, n: int) -> int:
    crc = 0
    pos, end = offset, offset + n
    while pos < end:
        block = os.pread(fd, min(_WINDOW, end - pos), pos)
        if not block:
            break
        crc = zlib.crc32(block, crc)
        pos += len(block)
    return crc & 0xFFFFFFFF


def _find(fd: int, size: int, head: bytes, start: int) -> int:
    """First offset >= ``start`` where ``head`` occurs, or -1 (windowed forward scan)."""
    pos = start
    overlap = len(head) - 1
    win = 1 << 12  # the next payload usually starts a few bytes on: grow only when needed
    while pos < size:
        window = os.pread(fd, min(win, size - pos), pos)
        if not window:
            return -1
        hit = window.find(head)
        if hit >= 0:
            return pos + hit
        if pos + len(window) >= size:
            return -1
        pos += max(1, len(window) - overlap)
        win = min(win * 4, _WINDOW)
    return -1


def locate_payloads(
    path: str | os.PathLike[str],
    heads: Sequence[bytes],
    lengths: Sequence[int],
    checksums: Sequence[int],
) -> np.ndarray | None:
    """Absolute byte offset of every payload (in row order), or ``None`` if not all are verbatim."""
    offsets = np.empty(len(lengths), dtype=np.int64)
    if not len(lengths):
        return offsets
    fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        cursor = 0
        for i, (head, n, crc) in enumerate(zip(heads, lengths, checksums, strict=True)):
            n = int(n)
            pos = cursor
            while True:
                hit = _find(fd, size, head, pos) if head else pos
                if hit < 0 or hit + n > size:
                    return None
                if _crc_at(fd, hit, n) == int(crc):
                    break
                if not head:
                    return None
                pos = hit + 1
            offsets[i] = hit
            cursor = hit + n
    finally:
        os.close(fd)
    return offsets
