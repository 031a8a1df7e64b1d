"""Crops of objects out of their images: a record table, one row per object.

:func:`crop_objects` turns a shape table into windows (an object's bounding
box plus a margin, or a fixed-size window around its centroid), checks every
window first, then reads the images through lazy plans: windows are grouped
by the block of the image (whole chunks, about :data:`BLOCK_PIXELS` pixels a
plane) their centre falls in, each group is one read of the chunks its
windows touch, and groups are read in parallel on omeframe's thread pool. A
fixed ``size`` gathers a group's crops with one fancy-indexing step into a
uniform stack, which the bulk encoder turns into records without Python work
per crop.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omeframe.engine import threads as _threads
from omeframe.engine.lazy import LazyImage
from omeframe.engine.limits import check_alloc
from omeframe.engine.source import LazySource
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.formats.record.tables import records_from_arrays
from omeframe.model.arrow import DEFAULT_COLUMN_NAME, OME_ARROW_BYTE_STRUCT
from omeframe.model.checks import is_integer
from omeframe.model.columns import check_column_name
from omeframe.model.errors import ShapeValidationError
from omeframe.registry import open_source
from omeframe.shapes.io import read_shapes
from omeframe.shapes.schema import read_shape_metadata
from omeframe.shapes.validate import ERROR_COLUMN, Errors, validate_shape_table

__all__ = ["crop_objects", "BLOCK_PIXELS"]

#: Pixels per plane of the image blocks crops are grouped by (one read per group).
BLOCK_PIXELS = 2048 * 2048
#: Name of the mask channel ``masks=True`` appends.
MASK_CHANNEL = "mask"


@dataclass
class _Image:
    """One image's source, the rows cropped from it and, with masks, its label source."""

    source: LazySource
    rows: list[int] = field(default_factory=list)
    labels: LazySource | None = None


def _is_image_mapping(image: Any) -> bool:
    """A mapping of image ids to images (not a record given as a dict or an Arrow scalar)."""
    if isinstance(image, (pa.Scalar, pa.Array, pa.ChunkedArray)):
        return False
    if isinstance(image, dict):
        return not ({"type", "pixels_meta"} & set(image))
    return isinstance(image, Mapping)


def _shape_table(shapes: Any) -> pa.Table:
    if isinstance(shapes, (str, os.PathLike)):
        return read_shapes(shapes)
    if not isinstance(shapes, pa.Table):
        raise TypeError(f"shapes must be a shape table (pyarrow.Table) or a path to one, got {type(shapes).__name__}")
    return shapes


def _bounds_from_geometry(col: pa.Array, encoding: str, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``(min, max)`` of a geometry column's coordinates (NaN where none)."""
    n = len(col)
    lo = np.full((n, dims), np.nan)
    hi = np.full((n, dims), np.nan)
    if encoding == "ome.boundingbox":
        return _coord_matrix(col.field("min"), dims), _coord_matrix(col.field("max"), dims)
    if encoding in ("ome.labelmask", "ome.mesh3d"):
        return lo, hi
    depth = {"geoarrow.point": 0, "geoarrow.linestring": 1, "ome.pointcloud": 1,
             "geoarrow.polygon": 2, "geoarrow.multipolygon": 3}[encoding]
    rows = np.arange(n)
    arr: pa.Array = col
    for _ in range(depth):
        parents = np.asarray(pc.list_parent_indices(arr), dtype=np.int64)
        arr = pc.list_flatten(arr)
        rows = rows[parents]
    pts = _coord_matrix(arr, dims)
    if rows.size:
        np.fmin.at(lo, rows, pts)
        np.fmax.at(hi, rows, pts)
    return lo, hi


def _coord_matrix(coords: pa.Array, dims: int) -> np.ndarray:
    """A ``list<double>`` array of ``dims`` values each as ``(n, dims)`` (NaN rows for nulls)."""
    n = len(coords)
    out = np.full((n, dims), np.nan)
    if n == 0:
        return out
    lengths = np.asarray(pc.list_value_length(coords).fill_null(0), dtype=np.int64)
    ok = lengths == dims
    values = np.asarray(pc.list_flatten(coords).cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if ok.any():
        out[ok] = values[starts[ok][:, None] + np.arange(dims)[None, :]]
    return out


def _size3(size: int | Sequence[int], spatial: int) -> np.ndarray:
    if is_integer(size):
        vals = [int(size)] * spatial  # type: ignore[arg-type]
    elif isinstance(size, Sequence) and not isinstance(size, str) and all(is_integer(v) for v in size):
        vals = [int(v) for v in size]
    else:
        raise TypeError(f"size must be an integer or a tuple of integers ((Y, X) or (Z, Y, X)), got {size!r}")
    if len(vals) not in (2, 3) or (len(vals) == 3 and spatial == 2):
        raise ValueError(
            f"size must be an int, a (Y, X) pair or, for shapes with a z axis, a (Z, Y, X) triple; got {size!r}"
        )
    if min(vals) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return np.array(([0] if len(vals) == 2 else []) + vals, dtype=np.int64)


def _channel_indices(channels: Any, src: LazySource) -> list[int]:
    n = src.shape[1]
    if channels is None:
        return list(range(n))
    items = [channels] if isinstance(channels, (int, str, np.integer)) else list(channels)
    names = [ch.name for ch in src.header().channels]
    out = []
    for ch in items:
        if isinstance(ch, str):
            if ch not in names:
                raise ValueError(f"channel {ch!r} is not in the image; its channels are {names}")
            out.append(names.index(ch))
        elif 0 <= int(ch) < n:
            out.append(int(ch))
        else:
            raise ValueError(f"channel {ch} is out of range for an image with {n} channel(s)")
    return out


class _Problems:
    """The first problem of every row; under ``errors="raise"`` the lowest row's is raised before any read."""

    def __init__(self, n: int, ids: list[Any], initial: list[str | None] | None) -> None:
        self.msgs: list[str | None] = list(initial) if initial is not None else [None] * n
        self.fields: list[str | None] = [None if m is None else "geometry" for m in self.msgs]
        self.ids = ids

    def add(self, rows: np.ndarray, field_: str, message: str) -> None:
        for r in np.asarray(rows, dtype=np.int64).tolist():
            if self.msgs[r] is None:
                self.msgs[r] = f"{field_}: {message}"
                self.fields[r] = field_

    def ok(self) -> np.ndarray:
        return np.array([m is None for m in self.msgs], dtype=bool)

    def raise_first(self) -> None:
        bad = np.flatnonzero(~self.ok())
        if bad.size:
            r = int(bad[0])
            oid = None if self.ids[r] is None else str(self.ids[r])
            raise ShapeValidationError(
                f"object {oid!r} (row {r}), {self.msgs[r]}", row=r, field=self.fields[r], object_id=oid
            )


def _resolve_images(
    image: Any, image_ids: list[Any], problems: _Problems
) -> tuple[dict[str | None, _Image], list[str | None]]:
    """Sources by image id and the key of every row (``None``: the one image)."""
    n = len(image_ids)
    if isinstance(image, DatasetReader) or _is_image_mapping(image):
        known = set(image.image_ids) if isinstance(image, DatasetReader) else {str(k) for k in image}
        keys: list[str | None] = [None if v is None else str(v) for v in image_ids]
        missing = np.array([k is None or k not in known for k in keys], dtype=bool)
        if missing.any():
            first = keys[int(np.flatnonzero(missing)[0])]
            problems.add(
                np.flatnonzero(missing), "image_id",
                f"image_id {first!r} is not among the images given ({sorted(known)[:8]}"
                f"{' ...' if len(known) > 8 else ''}); add the image or drop the object",
            )
        out: dict[str | None, _Image] = {}
        for r, k in enumerate(keys):
            if problems.msgs[r] is not None:
                continue
            if k not in out:
                src = (open_source(image, image_id=k) if isinstance(image, DatasetReader)
                       else open_source(image[k]))
                out[k] = _Image(src)
            out[k].rows.append(r)
        return out, keys
    one = _Image(open_source(image), rows=[r for r in range(n) if problems.msgs[r] is None])
    return {None: one}, [None] * n


def _label_source(image: Any, labels: Any, img: _Image, label_image_id: str | None) -> LazySource | None:
    """The label image behind an object's mask, or ``None`` when it cannot be found."""
    if labels is not None:
        if isinstance(labels, DatasetReader):
            return open_source(labels, image_id=label_image_id) if label_image_id in labels.image_ids else None
        if _is_image_mapping(labels):
            found = labels.get(label_image_id)
            return None if found is None else open_source(found)
        return open_source(labels)
    if isinstance(image, DatasetReader) and label_image_id in image.image_ids:
        return open_source(image, image_id=label_image_id)
    for name, src in img.source.labels().items():
        if label_image_id in (name, src.header().image_id):
            return src
    return None


def _windows(
    lo: np.ndarray, hi: np.ndarray, centre: np.ndarray, size: np.ndarray | None, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """Integer ZYX windows ``[w0, w1)`` (float bbox/centroid in pixel-index space)."""
    if size is None:
        w0 = np.floor(lo).astype(np.int64) - pad
        w1 = np.maximum(np.ceil(hi).astype(np.int64), np.floor(lo).astype(np.int64) + 1) + pad
        return w0, w1
    w0 = np.floor(centre + 0.5).astype(np.int64) - size // 2 - pad
    return w0, w0 + size + 2 * pad


def _groups(w0: np.ndarray, w1: np.ndarray, block_yx: tuple[int, int]) -> list[np.ndarray]:
    """Indices of windows read together: by the image block their centre falls in; sparse groups split."""
    cy = (w0[:, 1] + w1[:, 1]) // 2 // block_yx[0]
    cx = (w0[:, 2] + w1[:, 2]) // 2 // block_yx[1]
    key = cy * (1 << 31) + cx
    order = np.argsort(key, kind="stable")
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    out: list[np.ndarray] = []
    for g in np.split(order, cuts):
        vol = np.prod(w1[g] - w0[g], axis=1).sum()
        union = np.prod(w1[g].max(axis=0) - w0[g].min(axis=0))
        if g.size > 1 and union > 4 * vol:  # scattered windows: read each alone
            out.extend(g[i : i + 1] for i in range(g.size))
        else:
            out.append(g)
    return out


def _block_yx(src: LazySource) -> tuple[int, int]:
    grid = src.pixel_source().grid
    side = int(np.sqrt(BLOCK_PIXELS))
    if grid is None:
        return side, side
    cy, cx = max(1, int(grid[1])), max(1, int(grid[2]))
    return max(cy, side // cy * cy), max(cx, side // cx * cx)


def _read(plan: LazyImage, shape: tuple[int, ...], a: np.ndarray, b: np.ndarray, **sel: Any) -> np.ndarray:
    """Read the window ``[a, b)`` (ZYX), zero outside the image."""
    _, _, sz, sy, sx = shape
    lim = np.array([sz, sy, sx])
    ca, cb = np.maximum(a, 0), np.minimum(b, lim)
    inner = plan.select(z=slice(int(ca[0]), int(cb[0])), y=(int(ca[1]), int(cb[1])), x=(int(ca[2]), int(cb[2])), **sel)
    data = inner.execute()
    if (ca == a).all() and (cb == b).all():
        return data
    out = np.zeros(data.shape[:2] + tuple(int(v) for v in (b - a)), dtype=data.dtype)
    o = ca - a
    out[:, :, o[0] : o[0] + data.shape[2], o[1] : o[1] + data.shape[3], o[2] : o[2] + data.shape[4]] = data
    return out


def crop_objects(
    image: Any,
    shapes: Any,
    *,
    size: int | Sequence[int] | None = None,
    pad: int = 0,
    channels: Any = None,
    masks: bool = False,
    labels: Any = None,
    errors: Errors = "raise",
    column_name: str = DEFAULT_COLUMN_NAME,
) -> pa.Table:
    """Crop every object of a shape table out of its image: one OME-Arrow record per object.

    Every window is checked before any pixel is read; then the image blocks
    the windows touch are read (only the chunks under the windows; crops
    sharing chunks are read together, groups in parallel).

    Parameters
    ----------
    image
        The image: anything :func:`omeframe.scan` opens (path, array,
        ``OMEArrow``, record, plan), used for every object; or a mapping
        ``image_id -> image`` or a ``Dataset``, in which each object's image
        is found by its ``image_id``.
    shapes
        A shape table (or the path of one). Windows come from the ``bbox``
        column (where null: from the geometry's coordinates) and, with
        ``size``, the ``centroid`` (where null: the box centre). Shapes
        without a ``z`` axis crop all Z planes; all time points are kept.
    size
        ``None``: crop each object's bounding box (``bbox`` min is the first
        pixel, max one past the last), grown by ``pad`` and clipped to the
        image. An int, ``(Y, X)`` or ``(Z, Y, X)``: a window of that size
        (plus ``2 * pad``) centred on the centroid; parts outside the image
        are zero, so every crop has the same shape.
    pad
        Pixels added on every side of the window (>= 0).
    channels
        Channel indices or names to keep (all by default).
    masks
        Append a channel named ``"mask"``: 1 where the object's label image
        holds its label value, else 0 (in the image's dtype). The label image
        is named by ``ome.labelmask`` geometries or by the ``label_image_id`` /
        ``label_value`` columns, and found in ``labels``, in the ``Dataset``
        given as ``image`` or among the image's own label images (OME-Zarr).
    labels
        Label images for ``masks``: one label image (for every object), a
        mapping ``label_image_id -> label image`` or a ``Dataset``.
    errors
        ``"raise"``: the first bad object (invalid geometry, unknown image,
        window outside the image, missing label image) raises a
        :class:`~omeframe.errors.ShapeValidationError` naming it.
        ``"skip"``: its record is null and an ``error`` column says why.
    column_name
        Name of the record column.

    Returns
    -------
    pyarrow.Table
        Columns ``object_id``, ``image_id``, ``column_name`` (byte-variant
        OME-Arrow records named by object id; with a fixed ``size`` encoded
        as one uniform stack) and, with ``errors="skip"``, ``error``; rows in
        the shape table's order. Write it with :func:`omeframe.write_table`.

    Example
    -------
    >>> import numpy as np, omeframe as of
    >>> img = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    >>> lab = np.zeros((64, 64), np.uint8); lab[10:20, 30:36] = 1; lab[40:44, 5:9] = 2
    >>> crops = of.crop_objects(img, of.shapes_from_labels(lab), size=16)
    >>> crops.num_rows, of.to_numpy(crops["ome_arrow"][0]).shape
    (2, (1, 1, 1, 16, 16))
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    check_column_name(column_name)
    if not is_integer(pad) or pad < 0:
        raise ValueError(f"pad must be an integer >= 0 (pixels), got {pad!r}")
    if labels is not None and not masks:
        raise ValueError("labels= are the label images of masks; pass masks=True too, or drop labels=")
    pad = int(pad)
    table = _shape_table(shapes)
    meta = read_shape_metadata(table.schema)
    axes = list(meta["axes"])
    if "y" not in axes or "x" not in axes:
        raise ShapeValidationError(f"crops need shapes with y and x axes; these have {axes}", field="axes")
    has_z = "z" in axes
    pos = [axes.index(a) for a in (("z",) if has_z else ()) + ("y", "x")]
    dims = len(axes)
    size3 = None if size is None else _size3(size, 3 if has_z else 2)
    n = table.num_rows
    checked = validate_shape_table(table, errors=errors)
    initial = checked[ERROR_COLUMN].to_pylist() if ERROR_COLUMN in checked.column_names else None
    ids = checked["object_id"].to_pylist()
    problems = _Problems(n, ids, initial)
    gcol, enc = meta["geometry_column"], meta["geometry_encoding"]

    def column(name: str) -> pa.Array:
        col = checked[name]
        return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col

    lo = np.full((n, dims), np.nan)
    hi = np.full((n, dims), np.nan)
    if "bbox" in checked.column_names:
        bb = column("bbox")
        lo, hi = _coord_matrix(bb.field("min"), dims), _coord_matrix(bb.field("max"), dims)
        lo[~np.asarray(bb.is_valid())] = np.nan
        hi[~np.asarray(bb.is_valid())] = np.nan
    need = np.isnan(lo).any(axis=1)
    if need.any():
        glo, ghi = _bounds_from_geometry(column(gcol), enc, dims)
        lo[need], hi[need] = glo[need], ghi[need]
    centre = (lo + hi - 1) / 2  # pixel-index centre of [min, max)
    if size3 is not None and "centroid" in checked.column_names:
        cen = _coord_matrix(column("centroid"), dims)
        have = ~np.isnan(cen).any(axis=1)
        centre[have] = cen[have]
    # ZYX (z = 0 placeholder without a z axis)
    def zyx(a: np.ndarray) -> np.ndarray:
        out = np.zeros((n, 3))
        out[:, 3 - len(pos) :] = a[:, pos]
        return out

    lo3, hi3, centre3 = zyx(lo), zyx(hi), zyx(centre)
    no_box = np.isnan(hi3).any(axis=1) | (np.isnan(centre3).any(axis=1) if size3 is not None else False)
    problems.add(
        np.flatnonzero(no_box & problems.ok()), "bbox",
        "the object has no bounding box (null bbox and a geometry without coordinates)"
        + ("" if size3 is None else " and no centroid") + "; fill the bbox column",
    )
    images, _ = _resolve_images(image, checked["image_id"].to_pylist() if "image_id" in checked.column_names
                                   else [None] * n, problems)
    # bboxes inside their image
    w0 = np.zeros((n, 3), np.int64)
    w1 = np.ones((n, 3), np.int64)
    for img in images.values():
        rows = np.array([r for r in img.rows if problems.msgs[r] is None], dtype=np.int64)
        if rows.size == 0:
            continue
        _, _, sz, sy, sx = img.source.shape
        lim = np.array([sz if has_z else 1, sy, sx], dtype=np.float64)
        lo_r, hi_r = lo3[rows], hi3[rows]
        if not has_z:
            lo_r[:, 0], hi_r[:, 0] = 0, 1
        outside = (lo_r < 0).any(axis=1) | (hi_r > lim).any(axis=1)
        if outside.any():
            r = int(rows[outside][0])
            problems.add(
                rows[outside], "bbox",
                f"the bbox {lo3[r, 3 - len(pos):].tolist()} .. {hi3[r, 3 - len(pos):].tolist()} lies outside the "
                f"image {img.source.header().image_id!r} of {'ZYX' if has_z else 'YX'} size "
                f"{lim[3 - len(pos):].astype(int).tolist()}",
            )
        a, b = _windows(lo_r, hi_r, centre3[rows], size3, pad)
        if not has_z:
            a[:, 0], b[:, 0] = 0, sz
        if size3 is None:  # clip bbox windows (grown by pad) to the image
            a = np.maximum(a, 0)
            b = np.minimum(b, lim.astype(np.int64) if has_z else np.array([sz, sy, sx]))
        w0[rows], w1[rows] = a, b
    # label images for masks
    values = np.zeros(n, dtype=np.int64)
    if masks:
        if enc == "ome.labelmask":
            g = column(gcol)
            lids, vals = g.field("label_image_id").to_pylist(), g.field("label_value").to_pylist()
        else:
            lids = checked["label_image_id"].to_pylist() if "label_image_id" in checked.column_names else [None] * n
            vals = checked["label_value"].to_pylist() if "label_value" in checked.column_names else [None] * n
        bad = np.array([v is None for v in vals], dtype=bool) & problems.ok()
        problems.add(np.flatnonzero(bad), "label_value", "masks=True needs the object's label value, which is null")
        values = np.array([0 if v is None else int(v) for v in vals], dtype=np.int64)
        for img in images.values():
            by_lid: dict[str | None, LazySource | None] = {}
            for r in img.rows:
                if problems.msgs[r] is not None:
                    continue
                lid = lids[r]
                if lid not in by_lid:
                    by_lid[lid] = _label_source(image, labels, img, lid)
                lsrc = by_lid[lid]
                if lsrc is None:
                    problems.add(np.array([r]), "label_image_id",
                                 f"label image {lid!r} was not found; pass it with labels=")
                elif lsrc.shape[3:] != img.source.shape[3:] or lsrc.shape[2] not in (1, img.source.shape[2]):
                    problems.add(np.array([r]), "label_image_id",
                                 f"label image {lid!r} has ZYX size {lsrc.shape[2:]}, the image "
                                 f"{img.source.shape[2:]}; they must match (Z may be 1)")
            found = {lsrc for lsrc in by_lid.values() if lsrc is not None}
            if len(found) > 1:
                raise ValueError("masks=True supports one label image per image; split the shape table by label image")
            img.labels = next(iter(found), None)
    if errors == "raise":
        problems.raise_first()
    ok = problems.ok()
    # read
    chan_of = {k: _channel_indices(channels, img.source) for k, img in images.items()}
    crops: list[np.ndarray | None] = [None] * n
    stack: np.ndarray | None = None
    work: list[tuple[_Image, list[int], np.ndarray]] = []
    for k, img in images.items():
        rows = np.array([r for r in img.rows if ok[r]], dtype=np.int64)
        if rows.size:
            work.extend((img, chan_of[k], rows[g]) for g in _groups(w0[rows], w1[rows], _block_yx(img.source)))
    if size3 is not None and ok.any():
        first = next(iter(img for img, _, _ in work))
        shapes_seen = {(img.source.shape[0], len(ch), 0 if has_z else img.source.shape[2], img.source.dtype.str)
                       for img, ch, _ in work}
        if len(shapes_seen) > 1:
            raise ValueError(
                f"a fixed size stacks every crop, but the images differ in T, channel count, Z or dtype "
                f"({sorted(shapes_seen)}); crop each image separately or pick channels= to match"
            )
        st = first.source.shape[0]
        nc = len(work[0][1]) + (1 if masks else 0)
        zdim = int(w1[ok][0, 0] - w0[ok][0, 0])
        ext = (w1[ok] - w0[ok])[0]
        dims6 = (int(ok.sum()), st, nc, zdim, int(ext[1]), int(ext[2]))
        check_alloc(math.prod(dims6) * np.dtype(first.source.dtype).itemsize, f"{dims6[0]} crops of size {size!r}")
        stack = np.zeros(dims6, dtype=first.source.dtype)
    slot = np.cumsum(ok) - 1

    def run(item: tuple[_Image, list[int], np.ndarray]) -> None:
        img, chans, rows = item
        a, b = w0[rows].min(axis=0), w1[rows].max(axis=0)
        region = _read(LazyImage(img.source), img.source.shape, a, b, c=chans)
        lab_region = None
        if masks and img.labels is not None:
            lz = img.labels.shape[2]
            la, lb = (a, b) if lz > 1 else (np.r_[0, a[1:]], np.r_[1, b[1:]])
            lab_region = _read(LazyImage(img.labels), img.labels.shape, la, lb, t=[0], c=[0])[0, 0]
        rel0 = w0[rows] - a
        if stack is not None:
            ext = w1[rows[0]] - w0[rows[0]]
            iz = rel0[:, 0:1] + np.arange(ext[0])
            iy = rel0[:, 1:2] + np.arange(ext[1])
            ix = rel0[:, 2:3] + np.arange(ext[2])
            grab = region[:, :, iz[:, :, None, None], iy[:, None, :, None], ix[:, None, None, :]]
            dest = slot[rows]
            stack[dest, :, : len(chans)] = np.moveaxis(grab, 2, 0)
            if lab_region is not None:
                lzi = iz if lab_region.shape[0] > 1 else np.zeros_like(iz)
                lg = lab_region[lzi[:, :, None, None], iy[:, None, :, None], ix[:, None, None, :]]
                m = lg == values[rows][:, None, None, None]
                stack[dest, :, len(chans)] = m[:, None].astype(stack.dtype)
            return
        for k, r in enumerate(rows.tolist()):
            z0, y0, x0 = rel0[k]
            z1, y1, x1 = rel0[k] + (w1[r] - w0[r])
            part = region[:, :, z0:z1, y0:y1, x0:x1]
            if lab_region is not None:
                lp = lab_region[(z0 if lab_region.shape[0] > 1 else 0) : (z1 if lab_region.shape[0] > 1 else 1),
                                y0:y1, x0:x1]
                m = np.broadcast_to((lp == values[r]).astype(part.dtype), part.shape[:1] + (1,) + part.shape[2:])
                part = np.concatenate([part, m], axis=1)
            else:
                part = part.copy()
            crops[r] = part

    _threads.run_each(run, work)
    return _table(images, ok, ids, problems, stack, crops, chan_of, masks, errors, column_name,
                  checked["image_id"].to_pylist() if "image_id" in checked.column_names else [None] * n)


def _encode(img: _Image, chans: list[int], masks: bool, ids: list[str], data: Any) -> pa.StructArray:
    """Records of one image's crops (a uniform stack or a list of TCZYX arrays), named by object id."""
    h = img.source.header()
    names = [h.channels[c].name for c in chans] + ([MASK_CHANNEL] if masks else [])
    chunk = tuple(int(v) for v in data.shape[3:]) if isinstance(data, np.ndarray) else (1, 512, 512)
    return records_from_arrays(
        data, dim_order="TCZYX", image_ids=ids, names=ids, channel_names=names, chunk_shape=chunk,  # type: ignore[arg-type]
        physical_size_x=h.physical_size_x, physical_size_y=h.physical_size_y,
        physical_size_z=h.physical_size_z, physical_size_unit=h.physical_size_x_unit,
    )


def _table(
    images: dict[str | None, _Image],
    ok: np.ndarray,
    ids: list[Any],
    problems: _Problems,
    stack: np.ndarray | None,
    crops: list[np.ndarray | None],
    chan_of: dict[str | None, list[int]],
    masks: bool,
    errors: Errors,
    column_name: str,
    image_ids: list[Any],
) -> pa.Table:
    n = len(ids)
    oid = [str(v) for v in ids]
    slot = np.cumsum(ok) - 1
    parts: list[pa.StructArray] = []
    order: list[np.ndarray] = []
    for k, img in images.items():
        rows = np.array([r for r in img.rows if ok[r]], dtype=np.int64)
        if rows.size == 0:
            continue
        sel_ids = [oid[r] for r in rows.tolist()]
        if stack is not None:
            data: Any = stack if rows.size == stack.shape[0] else stack[slot[rows]]
        else:
            data = [crops[r] for r in rows.tolist()]
        parts.append(_encode(img, chan_of[k], masks, sel_ids, data))
        order.append(rows)
    records: pa.Array
    if not parts:
        records = pa.nulls(n, OME_ARROW_BYTE_STRUCT)
    else:
        built = pa.concat_arrays(parts) if len(parts) > 1 else parts[0]
        rows = np.concatenate(order)
        if rows.size == n and (rows == np.arange(n)).all():
            records = built
        else:
            take = np.full(n, -1, dtype=np.int64)
            take[rows] = np.arange(rows.size)
            records = built.take(pa.array(take, mask=take < 0))
    cols: dict[str, pa.Array] = {
        "object_id": pa.array(oid, type=pa.string()),
        "image_id": pa.array([None if v is None else str(v) for v in image_ids], type=pa.string()),
        column_name: records,
    }
    if errors == "skip":
        cols[ERROR_COLUMN] = pa.array(problems.msgs, type=pa.string())
    return pa.table(cols)
