"""Cheap per-chunk statistics and checksums, computed while chunks are encoded."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ChunkStats", "chunk_stats", "checksum"]


@dataclass(frozen=True)
class ChunkStats:
    """Statistics of one decoded chunk (NaN values propagate into min/max/mean)."""

    min: float
    max: float
    mean: float
    nonzero: int


def chunk_stats(block: np.ndarray) -> ChunkStats:
    """Min, max, mean (float64) and count of non-zero values of ``block``."""
    if block.dtype == np.bool_:
        nz = int(np.count_nonzero(block))
        return ChunkStats(float(nz > 0 and block.all()), float(nz > 0), nz / block.size, nz)
    return ChunkStats(
        float(block.min()),
        float(block.max()),
        float(block.mean(dtype=np.float64)),
        int(np.count_nonzero(block)),
    )


def checksum(payload: Any) -> int:
    """CRC-32 of the stored (encoded) bytes of a chunk, as an unsigned 32-bit int."""
    return zlib.crc32(memoryview(payload).cast("B")) & 0xFFFFFFFF
