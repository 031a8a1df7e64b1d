"""Shape tables from label images, computed block by block.

:func:`shapes_from_labels` reads a label image (any source omeframe opens: a
dataset's label image, OME-Zarr labels, a TIFF, a numpy array ...) one block
of chunks at a time and reduces every block to *runs*: maximal stretches of
one label value along X. Per object it accumulates the pixel count, the
coordinate sums (for the centroid) and the coordinate minima and maxima (for
the bounding box) over those runs with sort-based reductions
(``np.add.reduceat`` / ``np.minimum.reduceat``); per-block partial results are
merged by label value the same way, so an object that crosses chunk and block
borders is one row. Nothing loops per pixel or per run in Python, and memory
stays at one block plus one row of partial sums per object and block.

Outlines (``outlines=True``, 2-D labels) need each object's pixels: a second
pass reads, per block, the region covering the bounding boxes of the objects
whose box starts in that block, and traces each object's boundary with
scikit-image's ``find_contours`` (the one step done per object).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import LazySource
from omeframe.registry import open_source
from omeframe.shapes.schema import shape_schema

__all__ = ["shapes_from_labels", "BLOCK_BYTES"]

#: Label pixels read and reduced per block (the bound on working memory).
BLOCK_BYTES = 16 << 20
# Partial per-object rows kept before they are merged into one row per label.
_COMPACT_ROWS = 1 << 21

# Columns of a partial-sum row.
_LABEL, _AREA, _SZ, _SY, _SX, _MINZ, _MINY, _MINX, _MAXZ, _MAXY, _MAXX = range(11)
_SUM_COLS = slice(_AREA, _SX + 1)
_MIN_COLS = slice(_MINZ, _MINX + 1)
_MAX_COLS = slice(_MAXZ, _MAXX + 1)


def _label_source(source: Any, *, image_id: str | None, level: int) -> LazySource:
    if isinstance(source, LazySource):
        return source
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3):
            raise ValueError(
                f"a label array must be 2-D (Y, X) or 3-D (Z, Y, X), got shape {source.shape}; "
                "pass a source or a path for images with T or C axes"
            )
        return open_source(source, dim_order="YX" if source.ndim == 2 else "ZYX")
    return open_source(source, image_id=image_id, level=level)


def _block_shape(src: LazySource, target_bytes: int) -> tuple[int, int, int]:
    """ZYX block shape: whole chunks of the source's grid, about ``target_bytes`` of labels."""
    _, _, sz, sy, sx = src.shape
    item = max(1, src.dtype.itemsize)
    grid = src.pixel_source().grid
    if grid is None:  # bands of whole rows, one plane deep
        rows = max(1, target_bytes // max(1, sx * item))
        return 1, min(sy, rows), sx
    cz, cy, cx = (max(1, int(v)) for v in grid)
    bz = min(sz, cz)
    per_chunk = bz * cy * cx * item
    n = max(1, target_bytes // max(1, per_chunk))  # chunks per block
    nx = min(-(-sx // cx), max(1, int(np.sqrt(n))))
    ny = min(-(-sy // cy), max(1, n // nx))
    return bz, min(sy, ny * cy), min(sx, nx * cx)


def _reduce(rows: np.ndarray) -> np.ndarray:
    """Merge partial rows of the same label: sums add, minima and maxima combine."""
    if rows.shape[0] == 0:
        return rows
    order = np.argsort(rows[:, _LABEL], kind="stable")
    srt = rows[order]
    starts = np.flatnonzero(np.r_[True, srt[1:, _LABEL] != srt[:-1, _LABEL]])
    if starts.size == srt.shape[0]:
        return srt
    out = np.empty((starts.size, rows.shape[1]), dtype=np.int64)
    out[:, _LABEL] = srt[starts, _LABEL]
    out[:, _SUM_COLS] = np.add.reduceat(srt[:, _SUM_COLS], starts, axis=0)
    out[:, _MIN_COLS] = np.minimum.reduceat(srt[:, _MIN_COLS], starts, axis=0)
    out[:, _MAX_COLS] = np.maximum.reduceat(srt[:, _MAX_COLS], starts, axis=0)
    return out


def _block_rows(lab: np.ndarray, z0: int, y0: int, x0: int) -> np.ndarray:
    """Partial-sum rows (one per label) of a ``(Z, Y, X)`` label block at ``(z0, y0, x0)``."""
    bz, by, bx = lab.shape
    flat = lab.reshape(bz * by, bx)
    start = np.empty(flat.shape, dtype=bool)
    start[:, 0] = True
    np.not_equal(flat[:, 1:], flat[:, :-1], out=start[:, 1:])
    idx = np.flatnonzero(start)
    del start
    vals = flat.reshape(-1)[idx]
    ends = np.empty_like(idx)
    ends[:-1] = idx[1:]
    ends[-1] = flat.size
    keep = vals != 0
    idx, ends, vals = idx[keep], ends[keep], vals[keep].astype(np.int64)
    length = ends - idx
    row, xs = np.divmod(idx, bx)
    zs, ys = np.divmod(row, by)
    zs += z0
    ys += y0
    xs += x0
    rows = np.empty((idx.size, 11), dtype=np.int64)
    rows[:, _LABEL] = vals
    rows[:, _AREA] = length
    rows[:, _SZ] = length * zs
    rows[:, _SY] = length * ys
    rows[:, _SX] = length * xs + length * (length - 1) // 2
    rows[:, _MINZ] = zs
    rows[:, _MINY] = ys
    rows[:, _MINX] = xs
    rows[:, _MAXZ] = zs
    rows[:, _MAXY] = ys
    rows[:, _MAXX] = xs + length - 1
    return _reduce(rows)


def _check_label_dtype(src: LazySource) -> None:
    dt = src.dtype
    if dt.kind not in "iub":
        raise TypeError(
            f"a label image holds integer label values, but this one is {dt}; "
            "convert it (e.g. arr.astype(np.int32)) or pass the label image, not the intensity image"
        )


def _blocks(src: LazySource, t: int, c: int, block: tuple[int, int, int]) -> list[tuple[int, int, int, int, int, int]]:
    _, _, sz, sy, sx = src.shape
    bz, by, bx = block
    zs, ys, xs = np.arange(0, sz, bz), np.arange(0, sy, by), np.arange(0, sx, bx)
    g = np.stack(np.meshgrid(zs, ys, xs, indexing="ij"), axis=-1).reshape(-1, 3)
    return [
        (int(z), min(int(z) + bz, sz), int(y), min(int(y) + by, sy), int(x), min(int(x) + bx, sx))
        for z, y, x in g.tolist()
    ]


def _measure(src: LazySource, t: int, c: int, block: tuple[int, int, int]) -> np.ndarray:
    plan = LazyImage(src)
    parts: list[np.ndarray] = []
    held = 0
    for z0, z1, y0, y1, x0, x1 in _blocks(src, t, c, block):
        lab = plan.select(t=[t], c=[c], z=slice(z0, z1), y=(y0, y1), x=(x0, x1)).execute()[0, 0]
        if lab.dtype.kind == "u" and lab.dtype.itemsize == 8 and lab.size and int(lab.max()) > np.iinfo(np.int64).max:
            raise ValueError("label values above 2**63 - 1 are not supported; relabel the image")
        part = _block_rows(lab, z0, y0, x0)
        del lab
        if part.size:
            parts.append(part)
            held += part.shape[0]
        if held > _COMPACT_ROWS and len(parts) > 1:
            parts = [_reduce(np.concatenate(parts))]
            held = parts[0].shape[0]
    if not parts:
        return np.empty((0, 11), dtype=np.int64)
    return _reduce(np.concatenate(parts)) if len(parts) > 1 else parts[0]


# ----------------------------------------------------------------------------
# outlines
def _ring_area(ring: np.ndarray) -> float:
    y, x = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _polygon(mask: np.ndarray, y0: int, x0: int) -> list[list[list[float]]]:
    """Rings (exterior first, then its holes) of the largest part of a 2-D mask, in image coordinates."""
    try:
        from skimage.measure import find_contours  # lazy: skimage
    except ImportError as exc:  # pragma: no cover - scikit-image is in the test extra
        raise ImportError(
            "outlines=True traces outlines with scikit-image, which is not installed; "
            "pip install 'omeframe[objects]' (or scikit-image), or use outlines=False"
        ) from exc

    padded = np.pad(mask, 1).astype(np.uint8)
    rings = [r for r in find_contours(padded, 0.5, fully_connected="high") if r.shape[0] >= 4]
    if not rings:  # a single pixel or line the tracer closes into < 4 points
        ys, xs = np.nonzero(mask)
        cy, cx = float(ys.mean()), float(xs.mean())
        box = [[cy - 0.5, cx - 0.5], [cy - 0.5, cx + 0.5], [cy + 0.5, cx + 0.5], [cy + 0.5, cx - 0.5]]
        return [[[p[0] + y0, p[1] + x0] for p in [*box, box[0]]]]
    areas = np.array([_ring_area(r) for r in rings])
    ext = int(np.argmax(np.abs(areas)))
    sign = np.sign(areas[ext])
    lo, hi = rings[ext].min(axis=0), rings[ext].max(axis=0)
    keep = [ext] + [
        i for i, r in enumerate(rings)
        if i != ext and np.sign(areas[i]) != sign and bool(np.all(r.min(axis=0) >= lo) and np.all(r.max(axis=0) <= hi))
    ]
    shift = np.array([y0 - 1, x0 - 1], dtype=np.float64)
    out = []
    for i in keep:
        r = rings[i] + shift
        r[-1] = r[0]
        out.append(r.tolist())
    return out


def _outlines(
    src: LazySource, t: int, c: int, block: tuple[int, int, int], labels: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> list[list[list[list[float]]]]:
    """Polygon rings of every object (``lo``/``hi``: inclusive YX bbox corners, one row per label)."""
    plan = LazyImage(src)
    _, _, _, sy, sx = src.shape
    _, by, bx = block
    group = (lo[:, 0] // by) * (-(-sx // bx)) + lo[:, 1] // bx
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1], True])
    out: list[list[list[list[float]]]] = [[] for _ in range(labels.size)]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        members = order[a:b]
        ry0, rx0 = (int(v) for v in lo[members].min(axis=0))
        ry1, rx1 = (int(v) + 1 for v in hi[members].max(axis=0))
        region = plan.select(t=[t], c=[c], z=[0], y=(ry0, ry1), x=(rx0, rx1)).execute()[0, 0, 0]
        for k in members.tolist():
            (y0, x0), (y1, x1) = lo[k], hi[k]
            mask = region[y0 - ry0 : y1 - ry0 + 1, x0 - rx0 : x1 - rx0 + 1] == labels[k]
            out[k] = _polygon(mask, int(y0), int(x0))
    return out


# ----------------------------------------------------------------------------
def shapes_from_labels(
    source: Any,
    *,
    outlines: bool = False,
    image_id: str | None = None,
    label_image_id: str | None = None,
    t: int = 0,
    c: int = 0,
    level: int = 0,
    block_bytes: int = BLOCK_BYTES,
) -> pa.Table:
    """One shape-table row per object of a label image, computed block by block.

    Every non-zero value of the label image is one object. The label image is
    read in blocks of about ``block_bytes`` (whole chunks of its grid), so a
    label image much larger than memory works; objects that cross chunk or
    block borders are merged into one row.

    Parameters
    ----------
    source
        The label image: a 2-D ``(Y, X)`` or 3-D ``(Z, Y, X)`` integer numpy
        array, or anything :func:`omeframe.scan` opens (an OME-Zarr label
        image, a TIFF, a dataset with ``image_id=`` naming its label image,
        a record, an ``OMEArrow``, a lazy plan or source).
    outlines
        Also trace each object's outline: the geometry column becomes
        ``geoarrow.polygon`` (the exterior ring of the object's largest part
        and its holes, on pixel-centre coordinates, as
        ``skimage.measure.find_contours`` traces them, pixels touching at a
        corner being one part as in 8-connected labelling); needs
        scikit-image and a 2-D label image. Without outlines the geometry is the bounding box
        (``ome.boundingbox``).
    image_id
        The image the objects belong to (the ``image_id`` column; default:
        the label image's id). Object ids are ``"<image_id>:<label value>"``.
    label_image_id
        The ``label_image_id`` column (default: the label image's own id);
        for a dataset, also which of its images to read (e.g.
        ``"well-A01/labels/cells"``).
    t, c
        The time point and channel of the label image to read.
    level
        Pyramid level to read, for paths and datasets.
    block_bytes
        About how many bytes of labels each block holds.

    Returns
    -------
    pyarrow.Table
        A shape table (see :func:`omeframe.shapes.shape_schema`) sorted by
        label value, with axes ``("y", "x")`` for 2-D labels and
        ``("z", "y", "x")`` for 3-D ones: ``label_value``; ``centroid`` (mean
        pixel index per axis, as scikit-image's ``regionprops``); ``bbox``
        with ``min`` the first pixel index and ``max`` one past the last per
        axis (like numpy slices and ``regionprops``' ``bbox``); and a
        measurement column ``area`` (pixel count; ``volume``, the voxel count,
        for 3-D labels).

    Raises
    ------
    TypeError
        The image's pixels are not integers.
    ValueError
        ``t`` / ``c`` out of range, outlines of 3-D labels, a bad array rank.

    Example
    -------
    >>> import numpy as np
    >>> lab = np.zeros((6, 8), np.uint16)
    >>> lab[1:3, 1:4] = 7
    >>> t = shapes_from_labels(lab, image_id="img")
    >>> t.select(["object_id", "area"]).to_pylist(), t["bbox"][0].as_py()
    ([{'object_id': 'img:7', 'area': 6}], {'min': [1.0, 1.0], 'max': [3.0, 4.0]})
    """
    src = _label_source(source, image_id=label_image_id if not isinstance(source, np.ndarray) else None, level=level)
    _check_label_dtype(src)
    st, sc, sz, sy, sx = src.shape
    for name, v, n in (("t", t, st), ("c", c, sc)):
        if not 0 <= int(v) < n:
            raise ValueError(f"{name}={v} is out of range for a label image with {n} {name.upper()} index(es)")
    three_d = sz > 1
    if outlines and three_d:
        raise ValueError(
            f"outlines are 2-D polygons, but this label image has {sz} Z planes; "
            "use outlines=False (bounding boxes) or pass one plane"
        )
    if int(block_bytes) < 1:
        raise ValueError(f"block_bytes must be positive, got {block_bytes}")
    block = _block_shape(src, int(block_bytes))
    rows = _measure(src, int(t), int(c), block)
    header = src.header()
    lid = str(label_image_id) if label_image_id is not None else header.image_id
    iid = str(image_id) if image_id is not None else lid
    n = rows.shape[0]
    labels = rows[:, _LABEL]
    area = rows[:, _AREA]
    dims = slice(0, 3) if three_d else slice(1, 3)
    cent = (rows[:, _SUM_COLS][:, 1:] / np.maximum(area, 1)[:, None])[:, dims]
    lo = rows[:, _MIN_COLS][:, dims]
    hi = rows[:, _MAX_COLS][:, dims]
    k = lo.shape[1]

    def coords(a: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(
            pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32)), pa.array(a.astype(np.float64).ravel())
        )

    bbox = pa.StructArray.from_arrays([coords(lo), coords(hi + 1)], names=["min", "max"])
    axes = ("z", "y", "x") if three_d else ("y", "x")
    encoding = "geoarrow.polygon" if outlines else "ome.boundingbox"
    measure = "volume" if three_d else "area"
    schema = shape_schema(encoding, axes=axes, measurement_fields=[pa.field(measure, pa.int64())])
    geometry: pa.Array
    if outlines:
        polys = _outlines(src, int(t), int(c), block, labels, lo, hi)
        geometry = pa.array(polys, type=schema.field("geometry").type)
    else:
        geometry = bbox
    lab_str = pa.array(labels).cast(pa.string())
    object_ids = pc.binary_join_element_wise(pa.scalar(iid), lab_str, ":")
    columns = [
        object_ids,
        pa.repeat(pa.scalar(iid), n),
        pa.repeat(pa.scalar(lid), n),
        pa.array(labels, type=pa.int64()),
        geometry,
        coords(cent),
        bbox,
        pa.nulls(n, pa.string()),
        pa.nulls(n, pa.float32()),
        pa.array(area, type=pa.int64()),
    ]
    arrays = [col.cast(f.type) if col.type != f.type else col for col, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)
