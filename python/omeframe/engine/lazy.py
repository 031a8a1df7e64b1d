"""Immutable lazy plans over one image: selections, chunk filters, explain, execute.

A :class:`LazyImage` is a value: every method returns a new plan, and running
one (``execute``) never changes it. Selections compose (a
slice of a slice maps straight back to source coordinates), so however a plan
was built, running it reads only the chunks its final selection touches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import numpy as np

from omeframe.engine.executor import assemble, select_pieces, selected_nbytes
from omeframe.engine.pieces import Pieces
from omeframe.engine.predicates import ChunkPredicate
from omeframe.engine.source import LazySource
from omeframe.model.errors import SelectionError
from omeframe.model.selection import ResolvedSelection, Selection

__all__ = ["LazyImage", "PlanInfo"]


@dataclass(frozen=True)
class PlanInfo:
    """What running a plan will do (the numbers behind ``explain()``)."""

    source: str
    image_shape: tuple[int, int, int, int, int]
    dtype: str
    out_shape: tuple[int, int, int, int, int]
    chunk_keys: np.ndarray  # (k, 5) TCZYX origins of the chunks that will be read
    chunks_total: int
    chunks_touched: int
    chunks_skipped: int
    bytes_read: int
    metadata_bytes: int
    selection: Selection
    predicate: str | None


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _fmt_axis(idx: tuple[int, ...] | None, size: int) -> str:
    if idx is None:
        return f"all {size}"
    if len(idx) > 1 and all(b - a == 1 for a, b in pairwise(idx)):
        return f"{idx[0]}:{idx[-1] + 1}"
    return "[" + ", ".join(map(str, idx[:8])) + (", ..." if len(idx) > 8 else "") + "]"


@dataclass(frozen=True)
class LazyImage:
    """A planned read of one image.

    Attributes
    ----------
    source
        Where the pixels come from.
    selection
        T/C/Z indices and Y/X ranges in *source* coordinates.
    predicate
        Optional chunk-statistics filter; chunks failing it are not read.
    dtype
        Output dtype (``None`` keeps the native one).
    fill_missing
        Zero-fill parts of the selection no chunk stores.
    """

    source: LazySource
    selection: Selection = Selection()
    predicate: ChunkPredicate | None = None
    dtype: Any = None
    fill_missing: bool = True

    # ---- shape ----------------------------------------------------------
    @property
    def source_shape(self) -> tuple[int, int, int, int, int]:
        return self.source.shape

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """TCZYX shape of the plan's result."""
        return self.selection.out_shape(self.source.shape)

    @property
    def out_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.dtype) if self.dtype is not None else self.source.dtype

    # ---- building -------------------------------------------------------
    def select(
        self, *, t: Any = None, c: Any = None, z: Any = None, y: Any = None, x: Any = None
    ) -> LazyImage:
        """Narrow the selection; arguments are in the current plan's coordinates.

        ``t``/``c``/``z`` take an int, a slice or a sequence (order and repeats
        kept); ``y``/``x`` take a half-open ``(start, stop)`` pair or a slice.
        """
        inner = Selection.normalize(self.shape, t=t, c=c, z=z, y=y, x=x)
        return replace(self, selection=self.selection.compose(inner))

    def filter_chunks(self, predicate: ChunkPredicate) -> LazyImage:
        """Skip chunks whose statistics fail ``predicate`` (e.g. ``chunk.max > 1000``).

        Skipped chunks are not read; their pixels are zero in the result.
        Several filters combine with AND.
        """
        if not isinstance(predicate, ChunkPredicate):
            raise TypeError(
                "filter_chunks expects a chunk predicate such as omeframe.chunk.max > 1000, "
                f"got {type(predicate).__name__}"
            )
        if self.source.chunk_stats() is None:
            raise SelectionError(
                f"filter_chunks needs per-chunk statistics, which this source does not store "
                f"({self.source.describe}); write the image with omeframe.write_dataset to get them"
            )
        combined = predicate if self.predicate is None else (self.predicate & predicate)
        return replace(self, predicate=combined)

    def with_dtype(self, dtype: Any) -> LazyImage:
        """Cast the result to ``dtype`` (values clipped into its range)."""
        return replace(self, dtype=None if dtype is None else np.dtype(dtype))

    # ---- planning -------------------------------------------------------
    def _pieces(self, src: Pieces, sel: ResolvedSelection) -> tuple[np.ndarray, int]:
        touched = select_pieces(src, sel)
        if self.predicate is None:
            return touched, 0
        stats = self.source.chunk_stats()
        assert stats is not None
        keep = self.predicate(stats)
        if keep.shape != (len(src),):
            raise SelectionError(
                f"chunk predicate returned {keep.shape} values for {len(src)} chunks"
            )
        kept = touched[keep[touched]]
        return kept, int(touched.size - kept.size)

    def info(self) -> PlanInfo:
        """The read this plan will do: chunks, bytes, output shape."""
        src = self.source.pixel_source()
        sel = self.selection.resolve(self.source.shape)
        pieces, skipped = self._pieces(src, sel)
        rg = src.extra.get("row_group_bytes")
        bytes_read = int(rg) if rg else selected_nbytes(src, sel, pieces)
        return PlanInfo(
            source=src.describe,
            image_shape=self.source.shape,
            dtype=self.out_dtype.name,
            out_shape=sel.out_shape,
            chunk_keys=src.origins[pieces],
            chunks_total=len(src),
            chunks_touched=int(pieces.size),
            chunks_skipped=skipped,
            bytes_read=bytes_read,
            metadata_bytes=int(src.metadata_nbytes),
            selection=self.selection,
            predicate=None if self.predicate is None else self.predicate.text,
        )

    def explain(self) -> str:
        """A readable description of the plan: source, selection, chunks, bytes."""
        info = self.info()
        st, sc, sz, sy, sx = info.image_shape
        s = info.selection
        keys = " ".join("(" + ",".join(str(int(v)) for v in k) + ")" for k in info.chunk_keys[:6])
        if len(info.chunk_keys) > 6:
            keys += f" ... (+{len(info.chunk_keys) - 6})"
        out_bytes = int(np.prod(info.out_shape)) * np.dtype(info.dtype).itemsize
        lines = [
            "omeframe plan",
            f"  source:    {info.source}",
            f"  image:     TCZYX {info.image_shape} {self.source.dtype.name}",
            f"  select:    T {_fmt_axis(s.t, st)} | C {_fmt_axis(s.c, sc)} | Z {_fmt_axis(s.z, sz)}"
            f" | Y {s.y[0] if s.y else 0}:{s.y[1] if s.y else sy}"
            f" | X {s.x[0] if s.x else 0}:{s.x[1] if s.x else sx}",
        ]
        if info.predicate:
            lines.append(f"  filter:    {info.predicate} (skips {info.chunks_skipped} touched chunks)")
        lines += [
            f"  output:    TCZYX {info.out_shape} {info.dtype} ({_fmt_bytes(out_bytes)})",
            f"  chunks:    {info.chunks_touched} of {info.chunks_total} (t,c,z,y,x): {keys or '-'}",
            f"  reads:     {_fmt_bytes(info.bytes_read)} of pixel data"
            + (f" + {_fmt_bytes(info.metadata_bytes)} metadata" if info.metadata_bytes else ""),
        ]
        src = self.source.pixel_source()
        requests = src.extra.get("requests")  # remote sources: the requests the read makes
        if requests is not None:
            lines.append(f"  requests:  {requests(self._pieces(src, self.selection.resolve(self.source.shape))[0])}")
        return "\n".join(lines)

    # ---- running --------------------------------------------------------
    def execute(self, *, clamp: bool = True, strict: bool = True) -> np.ndarray:
        """Read the selection into a new TCZYX array (only the chunks it needs)."""
        src = self.source.pixel_source()
        sel = self.selection.resolve(self.source.shape)
        pieces = None if self.predicate is None else self._pieces(src, sel)[0]
        return assemble(
            src, sel, dtype=self.dtype, clamp=clamp, strict=strict, fill_missing=self.fill_missing, pieces=pieces
        )
