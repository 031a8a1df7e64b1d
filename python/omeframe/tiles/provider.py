"""Plane and tile providers: on-demand viewer reads through the process-wide cache.

A viewer asks for small pieces of an image many times: the tile under the
mouse, its neighbours, the same tile again after a pan. :class:`PlaneProvider`
(whole planes of regular images) and :class:`TileProvider` (fixed-size tiles
of every pyramid level) answer those requests from one byte-bounded cache
shared with every other image, source and provider in the process
(:func:`omeframe.engine.cache.shared_cache`; budget with
:func:`omeframe.set_cache_bytes`, counters with :func:`omeframe.cache_info`).

* Reads are **single-flight**: however many threads ask for a missing tile at
  once, it is decoded once and every caller receives it; if the source fails,
  every waiting caller receives the error and nothing is cached.
* Levels are the source's own (dataset levels, OME-Zarr multiscales, TIFF
  SubIFD/series pyramids). A large image without levels gets computed 2×
  levels (block mean; nearest for label images) down to one tile, built tile
  by tile from the cached tiles of the level below, so panning a zoomed-out
  view never decodes the full-resolution image twice.
* ``prefetch_neighbors`` / ``prefetch_planes`` read ahead in background
  threads; each call cancels the requests of the previous call that have not
  started (the view moved), and at most ``max_pending`` requests wait.
* Returned arrays are read-only views of cached values: copy before writing.

Example
-------
>>> import numpy as np, omeframe
>>> from omeframe.tiles import TileProvider
>>> img = omeframe.from_numpy(np.zeros((1, 1, 1, 1000, 1000), np.uint16), dim_order="TCZYX")
>>> tp = TileProvider(img, tile=256)
>>> [lv[3:] for lv in tp.levels]
[(1000, 1000), (500, 500), (250, 250)]
>>> tp.get_tile(1, 0, 0, 0, 1, 1).shape
(244, 244)
>>> tp.best_level_for_scale(0.3)
1
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from omeframe.engine.cache import ByteCache, shared_cache
from omeframe.engine.derived import as_source
from omeframe.engine.executor import assemble, select_pieces, selected_nbytes
from omeframe.engine.pyramid import DownsampledSource, level_for_scale
from omeframe.engine.resample import resample_block
from omeframe.engine.source import LazySource
from omeframe.model.checks import is_integer
from omeframe.model.errors import SelectionError
from omeframe.model.selection import Selection

__all__ = ["PlaneProvider", "ProviderStats", "TileProvider", "source_token"]

_TOKENS = itertools.count()
_TOKEN_LOCK = threading.Lock()
_TOKEN_OF: weakref.WeakKeyDictionary[LazySource, int] = weakref.WeakKeyDictionary()


def source_token(source: LazySource) -> int:
    """A process-unique number for ``source`` (the same object always gets the same one).

    Cache keys of providers start with it, so two providers over one source
    share their tiles, and entries of a collected source are dropped.
    """
    with _TOKEN_LOCK:
        tok = _TOKEN_OF.get(source)
        if tok is None:
            tok = _TOKEN_OF[source] = next(_TOKENS)
            cache = shared_cache()
            weakref.finalize(source, _forget, cache, tok)
        return tok


def _forget(cache: ByteCache, token: int) -> None:
    for kind in ("plane", "tile", "overview"):
        cache.discard_prefix((kind, token))


@dataclass(frozen=True)
class ProviderStats:
    """Counters of one provider (the cache's own are in :func:`omeframe.cache_info`).

    Attributes
    ----------
    requests
        Tiles/planes asked for in the foreground.
    hits
        Requests answered from the cache (or by another thread's read in flight).
    reads
        Tiles/planes decoded from the source (foreground and prefetch).
    bytes_read
        Stored bytes those reads fetched (as ``explain()`` counts them).
    prefetched, cancelled
        Background requests run / dropped because the view moved.
    """

    requests: int
    hits: int
    reads: int
    bytes_read: int
    prefetched: int
    cancelled: int

    @property
    def hit_rate(self) -> float:
        """``hits / requests`` (0 before the first request)."""
        return self.hits / self.requests if self.requests else 0.0


def _check_index(name: str, value: Any, size: int, what: str) -> int:
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if not 0 <= v < size:
        raise SelectionError(f"{name}={v} is outside {what}: valid values are 0..{size - 1}")
    return v


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class PlaneProvider:
    """Whole planes of an image, read on demand and kept in the shared cache.

    Parameters
    ----------
    source
        Anything :func:`omeframe.engine.derived.as_source` accepts: a path, an
        ``OMEArrow`` (record or plan), a dataset image, a source.
    cache
        The cache to use (default: the process-wide one).
    workers
        Background threads for prefetching.
    max_pending
        Most prefetch requests waiting at once; further ones are dropped.

    Example
    -------
    >>> pp = PlaneProvider("cells.ome.tif")                    # doctest: +SKIP
    >>> plane = pp.get_plane(t=0, c=1, z=5)                    # doctest: +SKIP
    >>> pp.prefetch_planes([(0, 1, z) for z in range(4, 8)])   # doctest: +SKIP
    """

    def __init__(
        self, source: Any, *, cache: ByteCache | None = None, workers: int = 2, max_pending: int = 64
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if not isinstance(max_pending, int) or max_pending < 0:
            raise ValueError(f"max_pending must be an integer >= 0, got {max_pending!r}")
        if cache is not None and not isinstance(cache, ByteCache):
            raise TypeError(
                f"cache must be an omeframe.engine.cache.ByteCache or None (the process-wide cache), got "
                f"{type(cache).__name__} {cache!r}; to change the budget pass ByteCache(max_bytes=...) or call "
                "omeframe.set_cache_bytes(...)"
            )
        self.source: LazySource = as_source(source)
        self.cache = shared_cache() if cache is None else cache
        self.workers = workers
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._generation = 0
        self._pending = 0
        self._closed = False
        self._counts = {"requests": 0, "hits": 0, "reads": 0, "bytes_read": 0, "prefetched": 0, "cancelled": 0}
        self._sources: list[LazySource] = self._build_levels()
        self._tokens = [source_token(s) for s in self._sources]

    # ---- levels -----------------------------------------------------------
    def _build_levels(self) -> list[LazySource]:
        return list(self.source.levels())

    @property
    def levels(self) -> list[tuple[int, int, int, int, int]]:
        """TCZYX shape of each level, full resolution first."""
        return [s.shape for s in self._sources]

    @property
    def level_sources(self) -> list[LazySource]:
        """The source of each level."""
        return list(self._sources)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.source.dtype

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """TCZYX shape of the full-resolution level."""
        return self._sources[0].shape

    def downsamples(self) -> list[float]:
        """How many full-resolution pixels one pixel of each level spans along X."""
        base = self._sources[0].shape[4]
        return [base / s.shape[4] for s in self._sources]

    def best_level_for_scale(self, scale: float) -> int:
        """The coarsest level that still shows ``scale`` screen pixels per image pixel.

        ``scale`` is the zoom: ``1`` shows full resolution, ``0.25`` a quarter
        (level with downsampling ≤ 4); scales above 1 use level 0.

        Raises
        ------
        ValueError
            If ``scale`` is not a positive finite number.
        """
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
            raise TypeError(f"scale must be a number, got {scale!r}")
        s = float(scale)
        if not math.isfinite(s) or s <= 0:
            raise ValueError(f"scale must be a finite number > 0 (screen pixels per image pixel), got {scale!r}")
        if s >= 1:
            return 0
        return level_for_scale([tuple(x) for x in self.levels], 1.0 / s)

    def _level(self, level: Any) -> int:
        return _check_index("level", level, len(self._sources), f"the {len(self._sources)} levels of this image")

    def _tcz(self, level: int, t: Any, c: Any, z: Any) -> tuple[int, int, int]:
        st, sc, sz = self._sources[level].shape[:3]
        return (
            _check_index("t", t, st, f"the image's {st} time points"),
            _check_index("c", c, sc, f"the image's {sc} channels"),
            _check_index("z", z, sz, f"the image's {sz} planes"),
        )

    # ---- reads ------------------------------------------------------------
    def _read(self, src: LazySource, sel: Selection) -> np.ndarray:
        pix = src.pixel_source()
        resolved = sel.resolve(src.shape)
        pieces = select_pieces(pix, resolved)
        nbytes = selected_nbytes(pix, resolved, pieces)
        out = assemble(pix, resolved, clamp=True)
        with self._lock:
            self._counts["reads"] += 1
            self._counts["bytes_read"] += int(nbytes)
        return out

    def _fetch(self, key: Hashable, compute: Any, *, foreground: bool = True) -> np.ndarray:
        ran = False

        def run() -> np.ndarray:
            nonlocal ran
            ran = True
            return _readonly(compute())

        value: np.ndarray = self.cache.get_or_compute(key, run)
        if foreground:
            with self._lock:
                self._counts["requests"] += 1
                self._counts["hits"] += 0 if ran else 1
        return value

    def get_plane(self, t: int = 0, c: int = 0, z: int = 0, level: int = 0) -> np.ndarray:
        """The ``(Y, X)`` plane ``t, c, z`` of ``level`` (read-only, cached).

        Raises
        ------
        SelectionError
            If an index or the level is outside the image.
        """
        lv = self._level(level)
        t, c, z = self._tcz(lv, t, c, z)
        src = self._sources[lv]
        key = ("plane", self._tokens[lv], t, c, z)
        return self._fetch(key, lambda: self._read(src, Selection(t=(t,), c=(c,), z=(z,)))[0, 0, 0])

    def get_cached_plane(self, t: int = 0, c: int = 0, z: int = 0, level: int = 0) -> np.ndarray | None:
        """The plane if it is in the cache now, else ``None`` (never reads)."""
        lv = self._level(level)
        t, c, z = self._tcz(lv, t, c, z)
        return self._peek(("plane", self._tokens[lv], t, c, z))

    def _peek(self, key: Hashable) -> np.ndarray | None:
        if key not in self.cache:
            return None
        return self.cache.get(key)

    def get_stack(self, t: int = 0, c: int = 0, level: int = 0) -> np.ndarray:
        """All Z planes of ``t, c`` as a ``(Z, Y, X)`` array; planes not cached are read in one pass."""
        lv = self._level(level)
        src = self._sources[lv]
        t, c, _ = self._tcz(lv, t, c, 0)
        nz = src.shape[2]
        tok = self._tokens[lv]
        keys = [("plane", tok, t, c, z) for z in range(nz)]
        have = [self._peek(k) for k in keys]
        missing = tuple(z for z, p in enumerate(have) if p is None)
        if missing:
            block = self._read(src, Selection(t=(t,), c=(c,), z=missing))[0, 0]
            for j, z in enumerate(missing):
                plane = _readonly(block[j])
                self.cache.put(keys[z], plane)
                have[z] = plane
        with self._lock:
            self._counts["requests"] += nz
            self._counts["hits"] += nz - len(missing)
        return np.stack(have)  # type: ignore[arg-type]

    def load_overview(
        self, max_size: int = 512, *, t: int = 0, z: int | None = None, c: Sequence[int] | None = None
    ) -> np.ndarray:
        """A ``(C, Y, X)`` view of the whole plane with its longer side at most ``max_size``.

        Reads the finest level that fits (cheap with a pyramid); when even the
        coarsest level is larger, it is reduced with the area-weighted mean of
        :mod:`omeframe.engine.resample`. ``z`` defaults to the middle plane,
        ``c`` to every channel.
        """
        if not is_integer(max_size) or max_size < 1:
            raise ValueError(f"max_size must be an integer >= 1, got {max_size!r}")
        fits = [i for i, s in enumerate(self.levels) if max(s[3], s[4]) <= max_size]
        lv = fits[0] if fits else len(self._sources) - 1
        src = self._sources[lv]
        st, sc, sz, sy, sx = src.shape
        zz = sz // 2 if z is None else z
        t, _, zz = self._tcz(lv, t, 0, zz)
        chans = tuple(range(sc)) if c is None else tuple(_check_index("c", v, sc, "the channels") for v in c)
        key = ("overview", self._tokens[lv], int(max_size), t, zz, chans)

        def compute() -> np.ndarray:
            plane = self._read(src, Selection(t=(t,), c=chans, z=(zz,)))[0, :, 0]
            if max(sy, sx) <= max_size:
                return plane
            f = max(sy, sx) / max_size
            oy, ox = max(1, int(sy / f)), max(1, int(sx / f))
            nearest = (src.header().image_type or "") == "label"
            return resample_block(
                plane, (0, oy, sy / oy, sy), (0, ox, sx / ox, sx), (0, 0), nearest=nearest, dtype=plane.dtype
            )

        return self._fetch(key, compute)

    # ---- prefetch -----------------------------------------------------------
    def cancel(self) -> None:
        """Drop every prefetch request that has not started (reads in progress finish)."""
        with self._lock:
            self._generation += 1

    def _submit(self, jobs: Iterable[Any], cancel_previous: bool) -> int:
        with self._lock:
            if self._closed:
                raise ValueError("the provider is closed")
            if cancel_previous:
                self._generation += 1
            gen = self._generation
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="omeframe-prefetch")
            pool = self._pool
        n = 0
        for job in jobs:
            with self._lock:
                if self._pending >= self.max_pending:
                    break
                self._pending += 1
            pool.submit(self._run_job, gen, job)
            n += 1
        return n

    def _run_job(self, gen: int, job: Any) -> None:
        try:
            with self._lock:
                if gen != self._generation or self._closed:
                    self._counts["cancelled"] += 1
                    return
            try:
                job()
            except Exception:  # noqa: BLE001 - a foreground read of the same key reports it
                return
            with self._lock:
                self._counts["prefetched"] += 1
        finally:
            with self._lock:
                self._pending -= 1

    def prefetch_planes(
        self, planes: Iterable[tuple[int, int, int]], level: int = 0, *, cancel_previous: bool = True
    ) -> int:
        """Read ``(t, c, z)`` planes of ``level`` in the background; returns how many were queued.

        Planes already cached are skipped; by default the requests of earlier
        prefetch calls that have not started are cancelled.
        """
        lv = self._level(level)
        if isinstance(planes, (str, bytes)) or not isinstance(planes, Iterable):
            raise TypeError(f"planes must be an iterable of (t, c, z) tuples, got {type(planes).__name__} {planes!r}")
        todo = []
        for p in planes:
            if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) != 3:
                raise ValueError(
                    f"planes must hold (t, c, z) index triples, got the item {p!r}; "
                    "pass e.g. [(0, 0, z) for z in range(4)]"
                )
            t, c, z = self._tcz(lv, *p)
            if ("plane", self._tokens[lv], t, c, z) not in self.cache:
                todo.append((t, c, z))

        def job(t: int, c: int, z: int) -> Any:
            src = self._sources[lv]
            key = ("plane", self._tokens[lv], t, c, z)
            return lambda: self._fetch(
                key, lambda: self._read(src, Selection(t=(t,), c=(c,), z=(z,)))[0, 0, 0], foreground=False
            )

        return self._submit((job(*p) for p in todo), cancel_previous)

    def wait(self) -> None:
        """Block until every queued prefetch request has run or been cancelled."""
        while True:
            with self._lock:
                if self._pending == 0:
                    return
            threading.Event().wait(0.002)

    def stats(self) -> ProviderStats:
        """This provider's counters."""
        with self._lock:
            return ProviderStats(**self._counts)

    # ---- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Cancel pending prefetches and stop the background threads (cached values stay)."""
        with self._lock:
            self._closed = True
            self._generation += 1
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PlaneProvider:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        shape = "x".join(str(v) for v in self.shape)
        return f"<{type(self).__name__} TCZYX {shape} {self.dtype.name}, {len(self._sources)} level(s)>"


class TileProvider(PlaneProvider):
    """Fixed-size tiles of every pyramid level, read on demand and kept in the shared cache.

    Parameters
    ----------
    source
        As for :class:`PlaneProvider`.
    tile
        Tile side in pixels (tiles at the right and bottom edges are smaller).
    cache, workers, max_pending
        As for :class:`PlaneProvider`.

    Raises
    ------
    ValueError
        If ``tile`` is not a positive integer, or the cache budget is smaller
        than one tile (raise it with :func:`omeframe.set_cache_bytes`).

    Example
    -------
    >>> tp = TileProvider("slide.ome.tif", tile=512)          # doctest: +SKIP
    >>> lv = tp.best_level_for_scale(0.1)                       # doctest: +SKIP
    >>> tile = tp.get_tile(lv, 0, 0, 0, ty=3, tx=7)            # doctest: +SKIP
    >>> tp.prefetch_neighbors(lv, 0, 0, 0, ty=3, tx=7)         # doctest: +SKIP
    """

    def __init__(
        self,
        source: Any,
        tile: int = 512,
        *,
        cache: ByteCache | None = None,
        workers: int = 2,
        max_pending: int = 64,
    ) -> None:
        if not is_integer(tile) or tile < 1:
            raise ValueError(f"tile must be an integer >= 1 (pixels per side), got {tile!r}")
        self.tile = int(tile)
        self._computed: list[bool] = []
        super().__init__(source, cache=cache, workers=workers, max_pending=max_pending)
        need = self.tile * self.tile * self.dtype.itemsize
        if self.cache.max_bytes < need:
            raise ValueError(
                f"the cache budget ({self.cache.max_bytes} bytes) is smaller than one {self.tile}x{self.tile} "
                f"{self.dtype.name} tile ({need} bytes); raise it with omeframe.set_cache_bytes(...) or pass "
                "a smaller tile="
            )

    def _build_levels(self) -> list[LazySource]:
        native = list(self.source.levels())
        self._computed = [False] * len(native)
        if len(native) > 1:
            return native
        levels = native
        method = "nearest" if (self.source.header().image_type or "") == "label" else "mean"
        while max(levels[-1].shape[3], levels[-1].shape[4]) > self.tile and min(levels[-1].shape[3:]) >= 2:
            levels.append(DownsampledSource(levels[-1], 2, tile=self.tile, method=method))
            self._computed.append(True)
        return levels

    @property
    def computed_levels(self) -> list[bool]:
        """Per level, whether omeframe computes it (2× reduction of the level above)."""
        return list(self._computed)

    def tile_grid(self, level: int = 0) -> tuple[int, int]:
        """``(rows, columns)`` of tiles at ``level``."""
        lv = self._level(level)
        _, _, _, sy, sx = self._sources[lv].shape
        return (-(-sy // self.tile), -(-sx // self.tile))

    def _tile_key(self, level: int, t: Any, c: Any, z: Any, ty: Any, tx: Any) -> tuple[Any, ...]:
        lv = self._level(level)
        t, c, z = self._tcz(lv, t, c, z)
        ny, nx = self.tile_grid(lv)
        ty = _check_index("ty", ty, ny, f"the {ny} tile rows of level {lv}")
        tx = _check_index("tx", tx, nx, f"the {nx} tile columns of level {lv}")
        return ("tile", self._tokens[lv], self.tile, t, c, z, ty, tx)

    def _compute_tile(self, key: tuple[Any, ...], lv: int) -> np.ndarray:
        _, _, T, t, c, z, ty, tx = key
        src = self._sources[lv]
        _, _, _, sy, sx = src.shape
        y0, y1 = ty * T, min((ty + 1) * T, sy)
        x0, x1 = tx * T, min((tx + 1) * T, sx)
        if not self._computed[lv]:
            return self._read(src, Selection(t=(t,), c=(c,), z=(z,), y=(y0, y1), x=(x0, x1)))[0, 0, 0]
        # a computed level: 2x reduction of up to 2x2 cached tiles of the level above
        pny, pnx = self.tile_grid(lv - 1)
        rows = [
            np.concatenate(
                [self._parent_tile(lv - 1, t, c, z, py, px) for px in range(2 * tx, min(2 * tx + 2, pnx))], axis=1
            )
            for py in range(2 * ty, min(2 * ty + 2, pny))
        ]
        block = np.concatenate(rows, axis=0)[: 2 * (y1 - y0), : 2 * (x1 - x0)]
        h, w = y1 - y0, x1 - x0
        ds = self._sources[lv]
        assert isinstance(ds, DownsampledSource)
        if ds.method == "nearest":
            return np.ascontiguousarray(block[::2, ::2])
        red = block.reshape(h, 2, w, 2).mean(axis=(1, 3), dtype=np.float64)
        if self.dtype.kind in "iub":
            red = np.rint(red)
        return red.astype(self.dtype)

    def _parent_tile(self, lv: int, t: int, c: int, z: int, ty: int, tx: int) -> np.ndarray:
        key = ("tile", self._tokens[lv], self.tile, t, c, z, ty, tx)
        return self.cache.get_or_compute(key, lambda: _readonly(self._compute_tile(key, lv)))

    def get_tile(self, level: int, t: int, c: int, z: int, ty: int, tx: int) -> np.ndarray:
        """Tile ``(ty, tx)`` of plane ``t, c, z`` at ``level`` as a read-only ``(Y, X)`` array.

        Tile ``(ty, tx)`` covers rows ``ty * tile ..`` and columns
        ``tx * tile ..`` of the level (edge tiles are smaller).

        Raises
        ------
        SelectionError
            If the level, an index or the tile position is outside the image.
        """
        key = self._tile_key(level, t, c, z, ty, tx)
        lv = int(level)
        return self._fetch(key, lambda: self._compute_tile(key, lv))

    def get_cached_tile(self, level: int, t: int, c: int, z: int, ty: int, tx: int) -> np.ndarray | None:
        """The tile if it is in the cache now, else ``None`` (never reads)."""
        return self._peek(self._tile_key(level, t, c, z, ty, tx))

    def get_region(
        self, level: int, t: int, c: int, z: int, y: tuple[int, int], x: tuple[int, int]
    ) -> np.ndarray:
        """Rows ``[y0, y1)`` and columns ``[x0, x1)`` of a plane at ``level``, assembled from tiles."""
        lv = self._level(level)
        _, _, _, sy, sx = self._sources[lv].shape
        sel = Selection.normalize(self._sources[lv].shape, y=y, x=x)
        (y0, y1), (x0, x1) = sel.y or (0, sy), sel.x or (0, sx)
        T = self.tile
        out = np.empty((y1 - y0, x1 - x0), dtype=self.dtype)
        for ty in range(y0 // T, (y1 - 1) // T + 1):
            for tx in range(x0 // T, (x1 - 1) // T + 1):
                tile = self.get_tile(lv, t, c, z, ty, tx)
                a, b = max(y0, ty * T), min(y1, ty * T + tile.shape[0])
                d, e = max(x0, tx * T), min(x1, tx * T + tile.shape[1])
                out[a - y0 : b - y0, d - x0 : e - x0] = tile[a - ty * T : b - ty * T, d - tx * T : e - tx * T]
        return out

    def prefetch_neighbors(
        self,
        level: int,
        t: int,
        c: int,
        z: int,
        ty: int,
        tx: int,
        *,
        radius: int = 1,
        z_radius: int = 0,
        cancel_previous: bool = True,
    ) -> int:
        """Read the tiles around ``(ty, tx)`` in the background (nearest first); returns how many were queued.

        ``radius`` rings of tiles at ``level`` and ``z_radius`` planes above
        and below; tiles already cached are skipped. By default requests of
        earlier prefetch calls that have not started are cancelled (the view
        moved).
        """
        key = self._tile_key(level, t, c, z, ty, tx)
        lv = int(level)
        if (
            any(not is_integer(r) for r in (radius, z_radius))
            or radius < 0
            or z_radius < 0
        ):
            raise ValueError(f"radius and z_radius must be integers >= 0, got {radius!r}, {z_radius!r}")
        ny, nx = self.tile_grid(lv)
        nz = self._sources[lv].shape[2]
        t, c, z, ty, tx = key[3], key[4], key[5], key[6], key[7]
        tok = self._tokens[lv]

        def job(k: tuple[Any, ...]) -> Any:
            return lambda: self._fetch(k, lambda: self._compute_tile(k, lv), foreground=False)

        keys = (
            ("tile", tok, self.tile, t, c, zz, yy, xx)
            for zz, yy, xx in _neighbors((z, ty, tx), (nz, ny, nx), z_radius, radius)
        )
        return self._submit((job(k) for k in keys if k not in self.cache), cancel_previous)


def _neighbors(
    at: tuple[int, int, int], grid: tuple[int, int, int], z_radius: int, radius: int
) -> Iterable[tuple[int, int, int]]:
    """The ``(z, ty, tx)`` positions of ``grid`` around ``at``, nearest ring first (lazily).

    Ring ``d`` holds the positions at Chebyshev distance ``d`` (``|dz| <= z_radius``,
    ``|dy|, |dx| <= radius``), in ascending ``(z, ty, tx)`` order. Only positions
    inside the grid are visited, so the work is proportional to the tiles that
    exist (and stops as soon as the caller stops), however large the radius.
    """
    z, ty, tx = at
    nz, ny, nx = grid
    zr = min(z_radius, max(z, nz - 1 - z))
    yxr = min(radius, max(ty, ny - 1 - ty, tx, nx - 1 - tx))
    for d in range(1, max(zr, yxr) + 1):
        dzr, r = min(d, zr), min(d, yxr)
        for zz in range(max(0, z - dzr), min(nz, z + dzr + 1)):
            on_z = abs(zz - z) == d
            if not on_z and d > yxr:
                continue  # the ring lies beyond the x/y radius: only its z faces exist
            for yy in range(max(0, ty - r), min(ny, ty + r + 1)):
                if on_z or abs(yy - ty) == d:
                    yield from ((zz, yy, xx) for xx in range(max(0, tx - r), min(nx, tx + r + 1)))
                else:
                    yield from ((zz, yy, xx) for xx in (tx - d, tx + d) if 0 <= xx < nx)
