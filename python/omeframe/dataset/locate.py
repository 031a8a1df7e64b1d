"""Find where each chunk's stored bytes sit inside a finished part file.

Parquet (pixel column PLAIN, no dictionary, no Parquet compression) and
Vortex (binary data of already-compressed chunks is stored as is) both keep
every chunk payload verbatim and in row order inside the file. While writing,
the writer remembers each chunk's first bytes, length and CRC-32; afterwards
this module finds each payload with ``mmap.find`` from the end of the previous
one and accepts a position only when the CRC-32 of the bytes there matches,
so a wrong match is impossible in practice. The offsets let readers fetch a
chunk with a single ``pread``, whatever the container's block or row-group
layout. When a payload cannot be found (the container re-encoded it), the
result is ``None`` and readers fall back to the container's own row access.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["locate_payloads", "HEAD_BYTES"]

#: How many leading bytes of each payload the writer keeps for the search.
HEAD_BYTES = 16


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
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            cursor = 0
            size = len(mm)
            for i, (head, n, crc) in enumerate(zip(heads, lengths, checksums)):
                n = int(n)
                pos = cursor
                while True:
                    hit = mm.find(head, pos)
                    if hit < 0 or hit + n > size:
                        return None
                    if zlib.crc32(view[hit : hit + n]) & 0xFFFFFFFF == int(crc):
                        break
                    pos = hit + 1
                offsets[i] = hit
                cursor = hit + n
        finally:
            view.release()
    return offsets
