"""Viewer benchmark: a pan/zoom trace over a 65536² pyramid, omeframe's TileProvider vs zarr v3 + dask.

The image is lazy and synthetic but realistic: a 4096² base of tissue-like
texture (smoothed noise, blobs, a gradient; uint16) is stored as
zstd-compressed 512² chunks per pyramid level and repeated periodically up to
65536² (levels down to 256²). Both readers decode the same kind of bytes:

* **omeframe**: a :class:`~omeframe.engine.source.LazySource` per level whose
  pieces decompress the stored chunks, read through
  :class:`omeframe.tiles.TileProvider` (shared cache, single flight,
  prefetching the neighbours of the view after each move);
* **zarr v3 + dask**: the same chunks served by a zarr ``MemoryStore`` whose
  chunk keys wrap around the stored period, one ``da.from_zarr`` per level;
  each visible tile is ``arr[y0:y1, x0:x1].compute()`` (dask and zarr keep no
  decoded chunks between computes);
* **tifffile aszarr**: the same chunks written (as they are, already
  zstd-compressed) into a pyramidal tiled OME-TIFF with tifffile (one SubIFD
  per level, 512² tiles), each level opened as
  ``zarr.open(tifffile.imread(path, aszarr=True, level=k))``; a visible tile
  is the slice of its tile in the stored period (the TIFF holds one period per
  level, so the file stays small however large the virtual image).

The trace: 500 viewport moves of a 1920x1080 screen (pans of 10-40 % of the
view, zoom steps of 2x with probability 0.15, a few jumps). Per move the tiles
the view covers at the level :meth:`~omeframe.tiles.TileProvider.best_level_for_scale`
picks are requested; the latency of each tile request is recorded.
Reported: tile latency p50/p95, cache hit rate, bytes read (stored bytes).
Targets: omeframe p95 ≤ 0.5x zarr+dask; overview of a 16384² image from its
pyramid ≤ 50 ms.

Run ``python benchmarks/bench_viewer.py`` (``--quick``: 100 moves over 16384²;
``--size`` / ``--moves`` choose other sizes, e.g. ``--size 4096 --moves 30`` for a
check that the script works). Ratios of omeframe's p50/p95 to each baseline's are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import zstandard  # noqa: E402

from omeframe.engine.cache import ByteCache  # noqa: E402
from omeframe.engine.pieces import RegularPieces, regular_pieces  # noqa: E402
from omeframe.engine.source import LazySource  # noqa: E402
from omeframe.model.header import ImageHeader  # noqa: E402
from omeframe.tiles import TileProvider  # noqa: E402

CHUNK = 512
BASE = 4096
SCREEN = (1080, 1920)


# --------------------------------------------------------------------------- data
def realistic_base(size: int = BASE, seed: int = 0) -> np.ndarray:
    """Tissue-like uint16 texture: smoothed noise, nuclei-like blobs, a slow gradient."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (size // 8, size // 8))
    k = np.array([1, 4, 6, 4, 1], float) / 16
    for _ in range(3):
        noise = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 0, noise)
        noise = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, noise)
    tex = np.kron(noise, np.ones((8, 8)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = 800 + 300 * tex + 200 * np.sin(yy / 700.0) * np.cos(xx / 900.0)
    cy, cx = rng.integers(0, size, 1500), rng.integers(0, size, 1500)
    blob = np.zeros((size, size), np.float32)
    blob[cy, cx] = 1
    for _ in range(3):  # spread the points into ~10 px nuclei
        blob = np.maximum.reduce([blob, np.roll(blob, 3, 0), np.roll(blob, -3, 0), np.roll(blob, 3, 1),
                                  np.roll(blob, -3, 1)])
    img += 1500 * blob + rng.normal(0, 40, (size, size))
    return np.clip(img, 0, 65535).astype(np.uint16)


def build_levels(size: int, base: np.ndarray) -> list[dict[str, Any]]:
    """Per level: shape, stored chunk period and the zstd-compressed chunks of one period."""
    cctx = zstandard.ZstdCompressor(level=3)
    levels = []
    img = base
    n = size
    while True:
        period = min(img.shape[0], n)
        m = -(-period // CHUNK)
        chunks = {}
        for i in range(m):
            for j in range(m):
                blk = np.zeros((CHUNK, CHUNK), np.uint16)
                part = img[i * CHUNK : (i + 1) * CHUNK, j * CHUNK : (j + 1) * CHUNK]
                blk[: part.shape[0], : part.shape[1]] = part
                chunks[(i, j)] = cctx.compress(blk.tobytes())
        levels.append({"size": n, "period_chunks": m, "chunks": chunks})
        if n <= 256:
            break
        n //= 2
        if img.shape[0] > 256:
            img = img.reshape(img.shape[0] // 2, 2, img.shape[1] // 2, 2).mean(axis=(1, 3)).astype(np.uint16)
    return levels


class SyntheticLevel(LazySource):
    """One level of the periodic pyramid; pieces decompress the stored zstd chunks."""

    def __init__(self, levels: list[dict[str, Any]], k: int) -> None:
        super().__init__()
        self.all = levels
        self.k = k
        self.info = levels[k]
        n = self.info["size"]
        self._shape = (1, 1, 1, n, n)
        self.describe = f"synthetic pyramid level {k} ({n}²)"

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.uint16)

    def header(self) -> ImageHeader:
        f = 2.0**self.k
        return ImageHeader.basic("synthetic", "synthetic", 1, physical={"x": 0.25 * f, "y": 0.25 * f})

    def chunk_shape(self) -> tuple[int, int, int]:
        n = self._shape[3]
        return (1, min(CHUNK, n), min(CHUNK, n))

    def levels(self) -> list[LazySource]:
        return [self, *(SyntheticLevel(self.all, j) for j in range(self.k + 1, len(self.all)))]

    def _open_pixels(self) -> RegularPieces:
        origins, extents = regular_pieces(self._shape, self.chunk_shape())
        m = self.info["period_chunks"]
        chunks = self.info["chunks"]
        local = threading.local()  # zstd decompression contexts are not thread-safe
        keys = [((int(o[3]) // CHUNK) % m, (int(o[4]) // CHUNK) % m) for o in origins]

        def decode(i: int, strict: bool) -> np.ndarray:
            dctx = getattr(local, "d", None) or zstandard.ZstdDecompressor()
            local.d = dctx
            raw = np.frombuffer(dctx.decompress(chunks[keys[i]]), np.uint16).reshape(CHUNK, CHUNK)
            _, dy, dx = (int(v) for v in extents[i])
            return raw[None, :dy, :dx]

        nbytes = np.array([len(chunks[k]) for k in keys], dtype=np.int64)
        return RegularPieces(self._shape, self.dtype, self.chunk_shape(), decode, nbytes, True, self.describe)


def zarr_levels(levels: list[dict[str, Any]]) -> tuple[list[Any], dict[str, int]]:
    """The same chunks as zarr v3 arrays (zstd) in a store whose chunk keys wrap around the period."""
    import zarr
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.storage import MemoryStore

    counter = {"bytes": 0}

    class PeriodicStore(MemoryStore):
        periods: dict[str, int] = {}

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            parts = key.split("/")
            if len(parts) == 4 and parts[1] == "c":
                m = self.periods[parts[0]]
                key = f"{parts[0]}/c/{int(parts[2]) % m}/{int(parts[3]) % m}"
            out = await super().get(key, prototype, byte_range)
            if out is not None and "/c/" in key:
                counter["bytes"] += len(out.to_bytes())
            return out

    store = PeriodicStore()
    arrays = []
    for k, lv in enumerate(levels):
        n, m = lv["size"], lv["period_chunks"]
        a = zarr.create_array(store, name=str(k), shape=(n, n), chunks=(min(CHUNK, n),) * 2, dtype="uint16",
                              serializer=BytesCodec(), compressors=[ZstdCodec(level=3)], fill_value=0)
        PeriodicStore.periods[str(k)] = m
        dctx = zstandard.ZstdDecompressor()
        for (i, j), blob in lv["chunks"].items():
            blk = np.frombuffer(dctx.decompress(blob), np.uint16).reshape(CHUNK, CHUNK)
            cy, cx = min(CHUNK, n - i * CHUNK), min(CHUNK, n - j * CHUNK)
            a[i * CHUNK : i * CHUNK + cy, j * CHUNK : j * CHUNK + cx] = blk[:cy, :cx]
        arrays.append(zarr.open_array(store, path=str(k), mode="r"))
    counter["bytes"] = 0
    asyncio.set_event_loop(None)
    return arrays, counter


# --------------------------------------------------------------------------- trace
def make_trace(size: int, moves: int, seed: int = 3) -> list[tuple[float, float, float]]:
    """``(center_y, center_x, scale)`` per move, in level-0 pixels."""
    rng = np.random.default_rng(seed)
    scales = [2.0**-k for k in range(int(math.log2(size // 256)) + 1)]
    si = len(scales) // 2
    cy = cx = size / 2
    out = []
    for _ in range(moves):
        r = rng.random()
        if r < 0.15:
            si = int(np.clip(si + rng.choice([-1, 1]), 0, len(scales) - 1))
        elif r < 0.18:
            cy, cx = rng.uniform(0, size, 2)
        else:
            s = scales[si]
            vh, vw = SCREEN[0] / s, SCREEN[1] / s
            cy += rng.uniform(-0.4, 0.4) * vh
            cx += rng.uniform(-0.4, 0.4) * vw
        cy, cx = float(np.clip(cy, 0, size - 1)), float(np.clip(cx, 0, size - 1))
        out.append((cy, cx, scales[si]))
    return out


def visible_tiles(size: int, level: int, cy: float, cx: float, scale: float) -> list[tuple[int, int]]:
    f = 2**level
    n = size // f
    hh, hw = SCREEN[0] / scale / 2 / f, SCREEN[1] / scale / 2 / f
    y0, y1 = max(0, int(cy / f - hh)), min(n, int(math.ceil(cy / f + hh)))
    x0, x1 = max(0, int(cx / f - hw)), min(n, int(math.ceil(cx / f + hw)))
    rows = range(y0 // CHUNK, (y1 - 1) // CHUNK + 1)
    return [(ty, tx) for ty in rows for tx in range(x0 // CHUNK, (x1 - 1) // CHUNK + 1)]


def run_omeframe(levels: list[dict[str, Any]], trace: list[Any]) -> dict[str, Any]:
    size = levels[0]["size"]
    tp = TileProvider(SyntheticLevel(levels, 0), tile=CHUNK, cache=ByteCache(512 << 20), workers=2)
    lat = []
    for cy, cx, scale in trace:
        lv = tp.best_level_for_scale(scale)
        tiles = visible_tiles(size, lv, cy, cx, scale)
        for ty, tx in tiles:
            t0 = time.perf_counter()
            tp.get_tile(lv, 0, 0, 0, ty, tx)
            lat.append(time.perf_counter() - t0)
        mid = tiles[len(tiles) // 2]
        tp.prefetch_neighbors(lv, 0, 0, 0, mid[0], mid[1], radius=2)
    st = tp.stats()
    tp.close()
    return {"lat": np.array(lat), "hit_rate": st.hit_rate, "bytes": st.bytes_read, "tiles": len(lat)}


def run_zarr_dask(arrays: list[Any], levels: list[dict[str, Any]], size: int, trace: list[Any]) -> dict[str, Any]:
    import dask.array as da

    darrs = [da.from_zarr(a) for a in arrays]
    shapes = [(1, 1, 1, a.shape[0], a.shape[1]) for a in arrays]
    from omeframe.engine.pyramid import level_for_scale

    lat = []
    nbytes = 0  # zarr and dask keep no decoded chunks: every request reads its chunk
    for cy, cx, scale in trace:
        lv = 0 if scale >= 1 else level_for_scale(shapes, 1 / scale)  # type: ignore[arg-type]
        n = arrays[lv].shape[0]
        for ty, tx in visible_tiles(size, lv, cy, cx, scale):
            t0 = time.perf_counter()
            darrs[lv][ty * CHUNK : min(n, (ty + 1) * CHUNK), tx * CHUNK : min(n, (tx + 1) * CHUNK)].compute(
                scheduler="threads"
            )
            lat.append(time.perf_counter() - t0)
            m = levels[lv]["period_chunks"]
            nbytes += len(levels[lv]["chunks"][(ty % m, tx % m)])
    return {"lat": np.array(lat), "hit_rate": 0.0, "bytes": nbytes, "tiles": len(lat)}


def write_tiff_pyramid(levels: list[dict[str, Any]], path: Path) -> Path:
    """A pyramidal tiled OME-TIFF holding one stored period per level: the same zstd chunks, written as they are."""
    import tifffile

    def tiles(lv: dict[str, Any]) -> Any:
        m = lv["period_chunks"]
        return (lv["chunks"][(i, j)] for i in range(m) for j in range(m))

    def shape(lv: dict[str, Any]) -> tuple[int, int]:
        return (lv["period_chunks"] * CHUNK,) * 2  # type: ignore[return-value]

    kw: dict[str, Any] = {"dtype": "uint16", "tile": (CHUNK, CHUNK), "compression": "zstd"}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(tiles(levels[0]), shape=shape(levels[0]), subifds=len(levels) - 1, metadata={"axes": "YX"}, **kw)
        for lv in levels[1:]:
            tw.write(tiles(lv), shape=shape(lv), subfiletype=1, **kw)
    return path


def run_tifffile_aszarr(path: Path, levels: list[dict[str, Any]], size: int, trace: list[Any]) -> dict[str, Any]:
    import tifffile
    import zarr

    arrays = [zarr.open(tifffile.imread(path, aszarr=True, level=k), mode="r") for k in range(len(levels))]
    first = np.frombuffer(zstandard.ZstdDecompressor().decompress(levels[0]["chunks"][(0, 0)]), np.uint16)
    assert np.array_equal(arrays[0][:CHUNK, :CHUNK].ravel(), first), "the TIFF does not hold the stored chunks"
    shapes = [(1, 1, 1, lv["size"], lv["size"]) for lv in levels]
    from omeframe.engine.pyramid import level_for_scale

    lat = []
    nbytes = 0  # no decoded chunks are kept between reads: every request reads its tile
    for cy, cx, scale in trace:
        lv = 0 if scale >= 1 else level_for_scale(shapes, 1 / scale)  # type: ignore[arg-type]
        n, m = levels[lv]["size"], levels[lv]["period_chunks"]
        for ty, tx in visible_tiles(size, lv, cy, cx, scale):
            h, w = min(n, (ty + 1) * CHUNK) - ty * CHUNK, min(n, (tx + 1) * CHUNK) - tx * CHUNK
            y0, x0 = (ty % m) * CHUNK, (tx % m) * CHUNK
            t0 = time.perf_counter()
            arrays[lv][y0 : y0 + h, x0 : x0 + w]
            lat.append(time.perf_counter() - t0)
            nbytes += len(levels[lv]["chunks"][(ty % m, tx % m)])
    return {"lat": np.array(lat), "hit_rate": 0.0, "bytes": nbytes, "tiles": len(lat)}


def overview(levels16: list[dict[str, Any]]) -> float:
    best = math.inf
    for _ in range(5):
        tp = TileProvider(SyntheticLevel(levels16, 0), tile=CHUNK, cache=ByteCache(64 << 20))
        t0 = time.perf_counter()
        ov = tp.load_overview(512)
        best = min(best, time.perf_counter() - t0)
        assert max(ov.shape[1:]) <= 512
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 moves over a 16384² pyramid")
    ap.add_argument("--size", type=int, default=None, help="side of the virtual image (a power of 2 >= 4096)")
    ap.add_argument("--moves", type=int, default=None, help="number of viewport moves")
    args = ap.parse_args(argv)
    size, moves = (16384, 100) if args.quick else (65536, 500)
    size = args.size or size
    moves = args.moves or moves
    if size < BASE or size & (size - 1):
        ap.error(f"--size must be a power of 2 >= {BASE}, got {size}")
    t0 = time.perf_counter()
    base = realistic_base()
    levels = build_levels(size, base)
    levels16 = build_levels(16384, base) if size != 16384 else levels
    print(f"pyramid {size}² ({len(levels)} levels) built in {time.perf_counter() - t0:.1f} s")
    trace = make_trace(size, moves)
    arrays, _ = zarr_levels(levels)
    of = run_omeframe(levels, trace)
    zd = run_zarr_dask(arrays, levels, size, trace)
    with tempfile.TemporaryDirectory() as tmp:
        tif = write_tiff_pyramid(levels, Path(tmp) / "pyramid.ome.tif")
        tz = run_tifffile_aszarr(tif, levels, size, trace)
    ov = overview(levels16)
    rows = [("omeframe TileProvider", of), ("zarr v3 + dask", zd), ("tifffile aszarr + zarr", tz)]
    print(f"\n{moves} viewport moves over {size}² (1920x1080 screen, 512² tiles)\n")
    print("| reader | tile requests | p50 ms | p95 ms | cache hit rate | MiB read |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        p50, p95 = np.percentile(r["lat"], [50, 95]) * 1e3
        print(f"| {name} | {r['tiles']} | {p50:.2f} | {p95:.2f} | {r['hit_rate']:.0%} | {r['bytes'] / 2**20:.1f} |")
    print()
    for name, r in rows[1:]:
        q50 = np.percentile(of["lat"], 50) / np.percentile(r["lat"], 50)
        q95 = np.percentile(of["lat"], 95) / np.percentile(r["lat"], 95)
        target = " (target <= 0.5)" if name.startswith("zarr") else ""
        print(f"omeframe / {name}: p50 ratio {q50:.2f}, p95 ratio {q95:.2f}{target}")
    print(f"overview (<= 512 px) of a 16384² image from its pyramid, cold cache: {ov * 1e3:.1f} ms (target <= 50 ms)")


if __name__ == "__main__":
    main()
