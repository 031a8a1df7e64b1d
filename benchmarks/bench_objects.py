"""Objects: ``shapes_from_labels`` vs scikit-image ``regionprops``, ``crop_objects`` vs a zarr crop loop.

Data (fixed seed, generated once into ``bench-output/objects-data/``):

* ``labels.ome.zarr``: a 16384 x 16384 int32 label image (zarr v3, chunks
  1024 x 1024, zstd-3) of ~207k elliptical cells on a 36-pixel lattice with
  jittered centres and radii (``--quick``: 4096 x 4096, ~13k cells);
* ``slide``: a 16384 x 16384 uint16 one-channel image of the same size
  (smooth field + noise), stored twice with the same 512 x 512 chunks and
  zstd-3: as an omeframe dataset (``write_dataset``) and as a zarr v3 array.

Cases, each in a fresh interpreter (peak RSS is the case's own, minus the
interpreter's baseline after imports):

* ``labels-omeframe``: ``of.shapes_from_labels("labels.ome.zarr")``, reading
  the label image block by block from disk (time includes the reads);
* ``labels-skimage``: load the label array from the same zarr, then
  ``regionprops`` and read ``label``, ``area``, ``centroid`` and ``bbox`` of
  every region (time: regionprops only, load excluded; peak: with the loaded
  array, which regionprops needs);
* ``crops-omeframe``: ``of.crop_objects(dataset, shapes, size=32)`` for 100k
  objects (``--quick``: 10k): a record table of 32 x 32 crops;
* ``crops-zarr``: the same windows cut one by one from the zarr array
  (``arr[y0:y1, x0:x1]`` into a preallocated numpy stack, zero padding at the
  border), the plain-numpy way.

Results are checked (the object tables agree exactly; the crops are equal).
Targets (reported, not asserted): shapes ≥ 2x regionprops' speed with
< 0.25x its peak memory; crops ≥ 3x the zarr loop.

Usage::

    python benchmarks/bench_objects.py            # full size (data ~2 min once, cases ~5 min)
    python benchmarks/bench_objects.py --quick    # small sizes (about a minute)

Writes ``bench-output/bench_objects.md`` (``bench_objects-quick.md`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    OUT_DIR,
    CaseContext,
    case_main,
    fmt_mib,
    fmt_ratio,
    fmt_seconds,
    machine_summary,
    markdown_table,
    preload_pyarrow,
    run_case,
)

DATA = OUT_DIR / "objects-data"
SIZES = {"full": {"side": 16384, "crops": 100_000}, "quick": {"side": 4096, "crops": 10_000}}
PITCH = 36
CROP = 32


def _paths(mode: str) -> dict[str, Path]:
    d = DATA / mode
    return {"dir": d, "labels": d / "labels.ome.zarr", "slide_ds": d / "slide-ds", "slide_zarr": d / "slide.zarr",
            "marker": d / "done.json"}


# ------------------------------------------------------------------ data
def _label_band(side: int, y0: int, y1: int, rng_seed: int) -> Any:
    """Rows ``[y0, y1)`` of the label image (band aligned to the lattice)."""
    import numpy as np

    g = side // PITCH
    rng = np.random.default_rng(rng_seed)
    cy = (np.arange(g) * PITCH + PITCH / 2)[:, None] + rng.uniform(-5, 5, (g, g))
    cx = (np.arange(g) * PITCH + PITCH / 2)[None, :] + rng.uniform(-5, 5, (g, g))
    ry = rng.uniform(7, 15, (g, g))
    rx = ry * rng.uniform(0.7, 1.3, (g, g))
    keep = rng.random((g, g)) > 0.02  # a few empty lattice sites
    ids = np.where(keep, np.arange(1, g * g + 1).reshape(g, g), 0).astype(np.int32)
    out = np.zeros((y1 - y0, side), np.int32)
    yy, xx = np.mgrid[0:PITCH, 0:PITCH]
    for gy in range(y0 // PITCH, min(g, -(-y1 // PITCH))):
        for gx in range(g):
            if not ids[gy, gx]:
                continue
            oy, ox = gy * PITCH, gx * PITCH
            m = ((yy + oy - cy[gy, gx]) / ry[gy, gx]) ** 2 + ((xx + ox - cx[gy, gx]) / rx[gy, gx]) ** 2 <= 1
            a, b = max(oy, y0), min(oy + PITCH, y1)
            if a < b:
                sub = m[a - oy : b - oy]
                tile = out[a - y0 : b - y0, ox : ox + PITCH]
                tile[sub[:, : tile.shape[1]]] = ids[gy, gx]
    return out


def generate(mode: str) -> None:
    import numpy as np
    import zarr

    import omeframe as of

    p = _paths(mode)
    side = SIZES[mode]["side"]
    if p["marker"].exists() and json.loads(p["marker"].read_text()).get("side") == side:
        return
    p["dir"].mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    codec = zarr.codecs.ZstdCodec(level=3)
    # labels: an OME-Zarr image written band by band
    g = zarr.open_group(str(p["labels"]), mode="w", zarr_format=3)
    lab = g.create_array("0", shape=(side, side), dtype="int32", chunks=(1024, 1024), compressors=[codec],
                         fill_value=0)
    band = 1024  # cells cross band borders (the lattice pitch does not divide 1024)
    for y0 in range(0, side, band):
        lab[y0 : y0 + band] = _label_band(side, y0, min(side, y0 + band), 11)
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}],
        "name": "labels"}]}
    # slide: smooth field + noise, same pixels in a dataset and a zarr array
    rng = np.random.default_rng(5)
    yy = np.linspace(0, 6, side, dtype=np.float32)
    za = zarr.create_array(str(p["slide_zarr"]), shape=(side, side), dtype="uint16", chunks=(512, 512),
                           compressors=[codec], zarr_format=3, fill_value=0, overwrite=True)
    slide = np.empty((side, side), np.uint16)
    for y0 in range(0, side, 1024):
        field = 2000 + 1500 * np.sin(yy[y0 : y0 + 1024, None]) * np.cos(yy[None, :])
        slide[y0 : y0 + 1024] = np.clip(field + rng.normal(0, 80, field.shape), 0, 65535).astype(np.uint16)
        za[y0 : y0 + 1024] = slide[y0 : y0 + 1024]
    of.write_dataset([slide], p["slide_ds"], image_ids=["slide"], chunk_shape=(1, 512, 512), mode="overwrite",
                     progress=False)
    p["marker"].write_text(json.dumps({"side": side, "seconds": time.perf_counter() - t0}))


# ------------------------------------------------------------------ cases
def _windows(shapes: Any, n: int) -> Any:
    """The first ``n`` objects (by a fixed shuffle) and their 32 x 32 windows, as crop_objects places them."""
    import numpy as np

    rng = np.random.default_rng(3)
    pick = np.sort(rng.choice(shapes.num_rows, size=min(n, shapes.num_rows), replace=False))
    sub = shapes.take(pick)
    cen = np.array(sub["centroid"].to_pylist())
    y0 = np.floor(cen[:, 0] + 0.5).astype(np.int64) - CROP // 2
    x0 = np.floor(cen[:, 1] + 0.5).astype(np.int64) - CROP // 2
    return sub, y0, x0


def case_labels_omeframe(ctx: CaseContext) -> dict[str, Any]:
    import omeframe as of

    preload_pyarrow()
    p = _paths(ctx.params["mode"])
    import numpy as np

    # warm the imports on a tiny image (ru_maxrss is the process's lifetime peak, so the
    # warm-up must not read the benchmark image itself)
    of.shapes_from_labels(np.arange(64, dtype=np.int32).reshape(8, 8))
    import gc

    gc.collect()
    ctx.mark_baseline()
    t0 = time.perf_counter()
    t = of.shapes_from_labels(p["labels"])
    dt = time.perf_counter() - t0
    of.write_shapes(t, p["dir"] / "shapes.parquet")
    return {"seconds": dt, "objects": t.num_rows}


def case_labels_skimage(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np
    import zarr
    from skimage.measure import regionprops

    import omeframe as of

    preload_pyarrow()
    ctx.mark_baseline()
    p = _paths(ctx.params["mode"])
    arr = zarr.open_group(str(p["labels"]), mode="r")["0"][...]
    t0 = time.perf_counter()
    props = regionprops(arr)
    label = np.array([r.label for r in props])
    area = np.array([r.area for r in props])
    cen = np.array([r.centroid for r in props])
    box = np.array([r.bbox for r in props])
    dt = time.perf_counter() - t0
    ours = of.read_shapes(p["dir"] / "shapes.parquet")
    ok = (
        np.array_equal(ours["label_value"].to_numpy(), label)
        and np.array_equal(ours["area"].to_numpy(), area)
        and np.allclose(np.array(ours["centroid"].to_pylist()), cen)
        and np.array_equal(np.array([b["min"] + b["max"] for b in ours["bbox"].to_pylist()]), box)
    )
    return {"seconds": dt, "objects": int(label.size), "agree": bool(ok)}


def case_crops_omeframe(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np

    import omeframe as of

    preload_pyarrow()
    p = _paths(ctx.params["mode"])
    shapes = of.read_shapes(p["dir"] / "shapes.parquet")
    sub, y0, x0 = _windows(shapes, ctx.params["crops"])
    slide = of.scan(of.open_dataset(p["slide_ds"]), image_id="slide")
    of.crop_objects(slide, sub.slice(0, 10), size=CROP)  # warm imports
    ctx.mark_baseline()
    t0 = time.perf_counter()
    out = of.crop_objects(slide, sub, size=CROP)
    dt = time.perf_counter() - t0
    stack = of.to_numpy_stack(out["ome_arrow"], dims="YX")
    np.save(p["dir"] / "crops-omeframe.npy", stack)
    return {"seconds": dt, "crops": out.num_rows}


def case_crops_zarr(ctx: CaseContext) -> dict[str, Any]:
    import numpy as np
    import zarr

    import omeframe as of

    preload_pyarrow()
    p = _paths(ctx.params["mode"])
    shapes = of.read_shapes(p["dir"] / "shapes.parquet")
    _, y0, x0 = _windows(shapes, ctx.params["crops"])
    ctx.mark_baseline()
    t0 = time.perf_counter()
    arr = zarr.open_array(str(p["slide_zarr"]), mode="r")
    side_y, side_x = arr.shape
    out = np.zeros((y0.size, CROP, CROP), arr.dtype)
    for i, (a, c) in enumerate(zip(y0.tolist(), x0.tolist(), strict=True)):
        ya, yb, xa, xb = max(a, 0), min(a + CROP, side_y), max(c, 0), min(c + CROP, side_x)
        out[i, ya - a : yb - a, xa - c : xb - c] = arr[ya:yb, xa:xb]
    dt = time.perf_counter() - t0
    ours = np.load(p["dir"] / "crops-omeframe.npy")
    return {"seconds": dt, "crops": int(y0.size), "agree": bool(np.array_equal(ours.reshape(out.shape), out))}


CASES = {
    "labels-omeframe": case_labels_omeframe,
    "labels-skimage": case_labels_skimage,
    "crops-omeframe": case_crops_omeframe,
    "crops-zarr": case_crops_zarr,
}


# ------------------------------------------------------------------ driver
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ns = ap.parse_args()
    mode = "quick" if ns.quick else "full"
    t0 = time.perf_counter()
    generate(mode)
    print(f"data ready in {time.perf_counter() - t0:.1f} s ({_paths(mode)['dir']})", flush=True)
    params = {"mode": mode, "crops": SIZES[mode]["crops"]}
    res: dict[str, dict[str, Any]] = {}
    for name in CASES:
        res[name] = run_case(__file__, name, params)
        r = res[name]
        print(f"{name}: {fmt_seconds(r['seconds'])}, peak {fmt_mib(r['peak_rss'] - r['baseline_rss'])} MiB", flush=True)
    lo, ls = res["labels-omeframe"], res["labels-skimage"]
    co, cz = res["crops-omeframe"], res["crops-zarr"]

    def peak(r: dict[str, Any]) -> float:
        return float(max(r["peak_rss"] - r["baseline_rss"], 1))

    side = SIZES[mode]["side"]
    rows = [
        ["shapes_from_labels (omeframe, from disk)", f"{side}² int32, {lo['objects']} objects",
         fmt_seconds(lo["seconds"]), fmt_mib(peak(lo)), ""],
        ["regionprops (skimage, loaded array)", f"{ls['objects']} objects, agree={ls['agree']}",
         fmt_seconds(ls["seconds"]), fmt_mib(peak(ls)), ""],
        ["crop_objects size=32 (omeframe dataset)", f"{co['crops']} crops", fmt_seconds(co["seconds"]),
         fmt_mib(peak(co)), ""],
        ["numpy crop loop over zarr v3", f"{cz['crops']} crops, agree={cz['agree']}", fmt_seconds(cz["seconds"]),
         fmt_mib(peak(cz)), ""],
    ]
    speed_l = ls["seconds"] / lo["seconds"]
    mem_l = peak(lo) / peak(ls)
    speed_c = cz["seconds"] / co["seconds"]
    targets = [
        ["shapes: speed vs regionprops", "≥ 2x", fmt_ratio(speed_l), "PASS" if speed_l >= 2 else "MISS"],
        ["shapes: peak memory vs regionprops", "< 0.25x", f"{mem_l:.3f}x", "PASS" if mem_l < 0.25 else "MISS"],
        ["crops: speed vs zarr loop", "≥ 3x", fmt_ratio(speed_c), "PASS" if speed_c >= 3 else "MISS"],
    ]
    text = "\n\n".join([
        f"# bench_objects ({mode})", machine_summary(),
        markdown_table(["case", "data", "time", "peak MiB (over baseline)", ""], rows, "llrrl"),
        markdown_table(["target", "wanted", "measured", ""], targets, "llrl"),
    ]) + "\n"
    print(text)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / f"bench_objects{'-quick' if ns.quick else ''}.md").write_text(text, encoding="utf-8")
    return 0 if ls["agree"] and cz["agree"] else 1


if __name__ == "__main__":
    if "--case" in sys.argv:
        case_main(CASES)
    else:
        sys.exit(main())
