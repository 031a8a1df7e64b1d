"""Immutable lazy plans over one image: selections, chunk filters, explain, execute.

A :class:`LazyImage` is a value: every method returns a new plan, and running
one (``execute``) never changes it. Selections compose (a
slice of a slice maps straight back to source coordinates), so however a plan
was built, running it reads only the chunks its final selection touches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np

from omeframe.engine import resample as _resample
from omeframe.engine.dask_array import DEFAULT_BLOCK_BYTES, plan_to_dask
from omeframe.engine.executor import assemble, select_pieces, selected_nbytes
from omeframe.engine.limits import check_alloc
from omeframe.engine.pieces import Pieces
from omeframe.engine.predicates import ChunkPredicate
from omeframe.engine.source import LazySource
from omeframe.engine.thumbnail import image_html
from omeframe.model.dtypes import output_dtype
from omeframe.model.errors import SelectionError
from omeframe.model.header import ImageHeader, select_channels
from omeframe.model.selection import ResolvedSelection, Selection
from omeframe.model.units import pixel_size_um

__all__ = ["LazyImage", "PlanInfo", "PhysicalSize"]

_AXES = "tczyx"


class PhysicalSize(NamedTuple):
    """The size of one pixel along an axis: ``value`` in ``unit`` (``None`` when unknown).

    Example
    -------
    >>> PhysicalSize(0.65, "µm")
    PhysicalSize(value=0.65, unit='µm')
    """

    value: float | None
    unit: str | None


def _index_item(item: Any, axis: str, size: int) -> Any:
    """One item of ``plan[...]`` as a :meth:`LazyImage.select` argument for ``axis``.

    Ints, slices with step 1 and (T/C/Z) sequences of ints are accepted;
    negative indices and other steps raise :class:`SelectionError`.
    """
    label = axis.upper()
    if isinstance(item, (bool, np.bool_)) or item is None:
        raise TypeError(
            f"plan[...] takes ints, slices and '...' per TCZYX axis; got {item!r} for axis {label} "
            "(new axes and boolean masks are not supported: a plan is always TCZYX)"
        )
    if isinstance(item, (int, np.integer)):
        i = int(item)
        if i < 0:
            hint = f"use {size + i} for the element {-i} from the end" if size + i >= 0 else "it has no such element"
            raise SelectionError(
                f"plan[...] index {i} on axis {label} is negative; plans take non-negative indices "
                f"(axis {label} has size {size}: {hint})"
            )
        if i >= size:
            raise SelectionError(f"plan[...] index {i} is out of range for axis {label} of size {size}")
        return [i] if axis in "tcz" else (i, i + 1)
    if isinstance(item, slice):
        if item.step not in (None, 1):
            raise SelectionError(
                f"plan[...] slice {item!r} on axis {label} has step {item.step}; plans read contiguous "
                "ranges: read the range and stride the numpy result, or use a pyramid level (plan.levels)"
            )
        for bound in (item.start, item.stop):
            if bound is not None and int(bound) < 0:
                raise SelectionError(
                    f"plan[...] slice {item!r} on axis {label} has a negative bound; plans take "
                    f"non-negative bounds (axis {label} has size {size})"
                )
        lo = 0 if item.start is None else min(int(item.start), size)
        hi = size if item.stop is None else min(int(item.stop), size)
        if hi <= lo:
            raise SelectionError(f"plan[...] slice {item!r} selects nothing of axis {label} (size {size})")
        return list(range(lo, hi)) if axis in "tcz" else (lo, hi)
    if axis in "tcz" and not isinstance(item, (str, bytes)):
        return item  # a sequence of indices: select validates it
    raise TypeError(
        f"plan[...] takes ints, slices and '...' per TCZYX axis (sequences of ints on T, C, Z); "
        f"got {type(item).__name__} for axis {label}"
    )


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
    cast
        Output dtype (``None`` keeps the native one); :attr:`dtype` is the
        resulting dtype.
    fill_missing
        Zero-fill parts of the selection no chunk stores.
    """

    source: LazySource
    selection: Selection = Selection()
    predicate: ChunkPredicate | None = None
    cast: Any = None
    fill_missing: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.source, LazySource):
            raise TypeError(
                f"LazyImage plans over a LazySource, got {type(self.source).__name__}; open images with "
                "omeframe.scan(...) (paths, arrays, records, datasets) or omeframe.registry.open_source(...)"
            )
        if not isinstance(self.selection, Selection):
            raise TypeError(f"selection must be an omeframe Selection, got {type(self.selection).__name__}")
        if self.predicate is not None and not isinstance(self.predicate, ChunkPredicate):
            raise TypeError(
                f"predicate must be a chunk predicate (e.g. omeframe.chunk.max > 100), got "
                f"{type(self.predicate).__name__}"
            )

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
        """Dtype of the plan's result (the cast when one was asked, else the source's)."""
        return np.dtype(self.cast) if self.cast is not None else self.source.dtype

    # ---- array-like metadata (never reads pixels) ------------------------
    @property
    def dtype(self) -> np.dtype[Any]:
        """Dtype of the plan's result, from metadata (same as :attr:`out_dtype`)."""
        return self.out_dtype

    @property
    def ndim(self) -> int:
        """Always 5: a plan's result is TCZYX."""
        return 5

    @property
    def size(self) -> int:
        """Number of pixels the plan's result holds."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the plan's result once read (``size * itemsize``)."""
        return self.size * self.out_dtype.itemsize

    @property
    def header(self) -> ImageHeader:
        """The result's header: the source's, with the selected channels (no pixel read).

        Example
        -------
        >>> plan = LazyImage(src).select(c=[1])        # doctest: +SKIP
        >>> plan.header.channels[0].name               # doctest: +SKIP
        'actin'
        """
        h = self.source.header()
        chans = select_channels(h.channels or [], self.selection.c, self.shape[1])
        return replace(h, channels=chans, dtype_meta=None if self.cast is not None else h.dtype_meta)

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Names of the result's channels (``"C<i>"`` when the source names none)."""
        return tuple(ch.name or f"C{i}" for i, ch in enumerate(self.header.channels))

    @property
    def physical_sizes(self) -> dict[str, PhysicalSize]:
        """Pixel size per spatial axis: ``{"z": PhysicalSize(value, unit), "y": ..., "x": ...}``."""
        h = self.header
        return {
            "z": PhysicalSize(h.physical_size_z, h.physical_size_z_unit),
            "y": PhysicalSize(h.physical_size_y, h.physical_size_y_unit),
            "x": PhysicalSize(h.physical_size_x, h.physical_size_x_unit),
        }

    @property
    def levels(self) -> tuple[LazyImage, ...]:
        """This plan at every pyramid level of its source, full resolution first.

        T/C/Z selections and the cast are kept; the Y/X ranges are scaled to
        each level (widened to whole pixels). A source without a pyramid has
        one level, this plan without its chunk filter (statistics are per level).
        """
        sources = self.source.levels()
        _, _, _, sy, sx = self.source.shape
        sel = self.selection
        out: list[LazyImage] = []
        for k, src in enumerate(sources):
            if k == 0:
                out.append(self)
                continue
            _, _, _, ly, lx = src.shape
            y = None if sel.y is None else _scale_range(sel.y, sy, ly)
            x = None if sel.x is None else _scale_range(sel.x, sx, lx)
            out.append(
                LazyImage(src, replace(sel, y=y, x=x), None, self.cast, self.fill_missing)
            )
        return tuple(out)

    def __repr__(self) -> str:
        cast = f" cast to {self.out_dtype.name}" if self.cast is not None else ""
        desc = self.source.describe
        desc = desc if len(desc) <= 100 else desc[:97] + "..."
        return f"<LazyImage TCZYX {self.shape} {self.source.dtype.name}{cast} from {desc}>"

    def _repr_html_(self) -> str:
        """Notebook display: a bounded thumbnail, shape, dtype, channels, pixel sizes, levels, read cost.

        The thumbnail is one plane of the coarsest level at least 128 pixels
        wide, read only within the budgets of :mod:`omeframe.engine.thumbnail`
        (at most 4 MiB stored, 16 MiB decoded); the display is a few KB.
        """
        return image_html(self, "omeframe LazyImage (plan)")

    def __getitem__(self, key: Any) -> LazyImage:
        """``plan[t, c, z, y0:y1, x0:x1]``: a lazy :meth:`select` (nothing is read).

        Ints, slices (step 1, non-negative bounds, clipped like numpy's) and
        ``...`` per TCZYX axis; T/C/Z also take sequences of ints. Axes are
        never dropped: an int keeps its axis with length 1.

        Example
        -------
        >>> roi = plan[0, :, 0, 100:356, 200:456]       # doctest: +SKIP
        >>> roi.shape                                    # doctest: +SKIP
        (1, 2, 1, 256, 256)
        """
        items = list(key) if isinstance(key, tuple) else [key]
        n_ell = sum(1 for it in items if it is Ellipsis)
        if n_ell > 1:
            raise SelectionError("plan[...] takes at most one '...'")
        if len(items) - n_ell > 5:
            raise SelectionError(f"plan[...] got {len(items) - n_ell} indices for the 5 TCZYX axes")
        if n_ell:
            at = items.index(Ellipsis)
            items[at : at + 1] = [slice(None)] * (5 - (len(items) - 1))
        items += [slice(None)] * (5 - len(items))
        shape = self.shape
        args = {
            axis: (None if it == slice(None) else _index_item(it, axis, shape[i]))
            for i, (axis, it) in enumerate(zip(_AXES, items, strict=True))
        }
        return self.select(**args)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(plan)``: read the plan (guarded by the memory limit).

        Raises
        ------
        ResourceLimitError
            When the result is larger than :func:`omeframe.get_max_bytes`
            (raise it with :func:`omeframe.set_max_bytes`, or select a region).
        ValueError
            For ``copy=False``: a plan has no buffer to share.
        """
        if copy is False:
            raise ValueError(
                "a plan holds no pixels to share, so np.asarray(plan, copy=False) cannot work; "
                "call np.asarray(plan) (it reads the plan) or plan.execute()"
            )
        check_alloc(
            self.nbytes,
            f"np.asarray(plan) of TCZYX {self.shape} {self.out_dtype.name} from {self.source.describe}",
        )
        out = self.execute()
        return out if dtype is None else out.astype(dtype, copy=False)

    # ---- building -------------------------------------------------------
    def select(
        self,
        *,
        t: Any = None,
        c: Any = None,
        z: Any = None,
        y: Any = None,
        x: Any = None,
        x_um: Any = None,
        y_um: Any = None,
        z_um: Any = None,
    ) -> LazyImage:
        """Narrow the selection; arguments are in the current plan's coordinates.

        ``t``/``c``/``z`` take an int, a slice or a sequence (order and repeats
        kept); ``y``/``x`` take a half-open ``(start, stop)`` pair or a slice.
        ``x_um``/``y_um``/``z_um`` take ``(start, stop)`` in micrometres from
        the plan's first pixel and select every pixel the interval touches;
        they need physical pixel sizes (:class:`~omeframe.errors.UnitError`
        otherwise) and replace ``x``/``y``/``z``.

        Example
        -------
        >>> plan.select(x_um=(100, 250), y_um=(0, 80)).at_resolution(mpp=2.0)   # doctest: +SKIP
        """
        if x_um is not None or y_um is not None or z_um is not None:
            h = self.source.header()
            name = h.image_id
            _, _, sz, sy, sx = self.shape
            for axis, um, px, n in (("x", x_um, x, sx), ("y", y_um, y, sy), ("z", z_um, z, sz)):
                if um is None:
                    continue
                if px is not None:
                    raise TypeError(f"pass either {axis}= (pixels) or {axis}_um= (micrometres), not both")
                pair = _resample.um_to_pixels(um, pixel_size_um(h, axis), n, axis, name)
                if axis == "x":
                    x = pair
                elif axis == "y":
                    y = pair
                else:
                    z = slice(*pair)
        inner = Selection.normalize(self.shape, t=t, c=c, z=z, y=y, x=x)
        return replace(self, selection=self.selection.compose(inner))

    def at_resolution(self, mpp: float) -> LazyImage:
        """The same region read at ``mpp`` micrometres per pixel (Y and X).

        Reads the coarsest pyramid level at least as fine as ``mpp`` and
        resamples the remainder exactly (area-weighted mean; nearest for label
        images; integer dtypes stay integer; see :mod:`omeframe.engine.resample`).
        Later ``select`` calls are in the new pixel grid.

        Raises
        ------
        UnitError
            When the image has no physical pixel size or its unit is not a length.
        ValueError
            When ``mpp`` is not a positive number.

        Example
        -------
        >>> plan.at_resolution(mpp=0.5).execute()   # doctest: +SKIP
        """
        if self.predicate is not None:
            raise SelectionError(
                "at_resolution cannot keep a chunk filter (the resampled image has no chunk statistics); "
                "call at_resolution before filter_chunks on the level you want, or drop the filter"
            )
        source, selection = _resample.resolution_plan(self.source, self.selection, mpp)
        return replace(self, source=source, selection=selection)

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
        return replace(self, cast=None if dtype is None else output_dtype(dtype))

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
            src, sel, dtype=self.cast, clamp=clamp, strict=strict, fill_missing=self.fill_missing, pieces=pieces
        )

    # ---- distributed ------------------------------------------------------
    def to_dask(self, block_bytes: int | None = DEFAULT_BLOCK_BYTES) -> Any:
        """The plan's TCZYX result as a ``dask.array`` whose blocks are whole stored chunks.

        Blocks align with the source's chunks (pieces), each task reads only
        its own (for datasets byte-range reads) and the plan pickles as the
        path and options it was opened from. Neighbouring chunks are merged
        into blocks of about ``block_bytes`` (default 16 MiB: a scheduler's
        cost per task outweighs reading one small chunk); ``None`` gives one
        block per chunk. See ``engine/dask_array.py``.

        Example
        -------
        >>> plan.to_dask().max(axis=(3, 4)).compute()   # doctest: +SKIP
        """
        return plan_to_dask(self, block_bytes)

def _scale_range(r: tuple[int, int], full: int, level: int) -> tuple[int, int]:
    """Range ``r`` of an axis of size ``full`` mapped onto the same axis of size ``level`` (widened)."""
    lo = min(level - 1, (r[0] * level) // full)
    hi = max(lo + 1, min(level, -(-(r[1] * level) // full)))
    return (lo, hi)
