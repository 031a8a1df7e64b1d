"""The napari reader: any image omeframe opens as napari layer data, read lazily.

:func:`napari_get_reader` is the npe2 reader command (see ``napari.yaml``);
:func:`read_layers` builds the layer data tuples ``(data, kwargs, layer_type)``
for one path. What each input becomes:

* **datasets** (``.omeds`` or any directory with a dataset manifest): one
  multichannel image per image of the dataset, and one ``labels`` layer per
  label image (stored with ``image_type="label"`` and a ``parent_id``);
* **OME-Zarr** stores and **TIFF** / OME-TIFF files (and the other formats
  of :mod:`omeframe.registry`): the image, plus the ``labels/`` images of an
  OME-Zarr as ``labels`` layers;
* **record tables** (``.parquet`` / ``.vortex`` with an OME-Arrow column):
  when all image rows share one shape and dtype, **one stacked layer** whose
  leading axis is the row (a slider walks the table); otherwise one layer per
  row. Label rows (``image_type="label"``) follow the same rule as ``labels``
  layers.

Pixels stay where they are. An image's levels are zarr arrays over
omeframe's read-only zarr view (:func:`omeframe.formats.zarr.view.zarr_view`:
dataset chunks served from their stored bytes), so napari reads only the
chunks of the level and region it shows. An image with a stored pyramid is
multiscale with its stored levels; a single-level image whose plane is larger
than :data:`COMPUTE_LEVELS_ABOVE` pixels gets computed 2× levels (box mean,
nearest for labels) down to :data:`COARSEST_SIDE`. A record-table row is one
``dask`` block that decodes that row alone.

The layer keywords come from metadata: ``channel_axis=1`` (one layer per
channel, named after it), ``scale`` from the physical pixel sizes (T and any
axis without a known size get 1), ``units`` per axis when pint knows them
(an axis without a known size or unit is in ``"pixel"``, so an image without
physical sizes is never shown in µm), ``colormap`` from each channel's colour
(white or no colour: napari's defaults), ``contrast_limits`` from the stored
display windows (OME-Zarr ``omero``), else the stored chunk statistics
(datasets: min and max over the chunks of the coarsest stored level), else the dtype's range (floats:
``(0, 1)``). Nothing here reads pixels.

``napari`` itself is never imported: the tuples are plain data, so this
module works (and is tested) without a display. ``zarr`` and ``dask`` are
imported when a layer is built.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omeframe.engine.lazy import LazyImage
from omeframe.engine.pyramid import pyramid_levels
from omeframe.engine.source import LazySource
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.formats.dataset.source import DatasetSource
from omeframe.formats.record.files import detect_format, find_record_column
from omeframe.formats.record.image_table import ImageTable
from omeframe.formats.record.source import header_from_record
from omeframe.formats.vortex.file import read_vortex_schema, read_vortex_table
from omeframe.model.header import DEFAULT_COLOR_RGBA, ImageHeader
from omeframe.model.record import RecordView
from omeframe.registry import detect, find, open_path
from omeframe.storage import files
from omeframe.storage import parquet as pqio

__all__ = [
    "LayerData",
    "napari_get_reader",
    "read_layers",
    "source_layers",
    "COMPUTE_LEVELS_ABOVE",
    "COARSEST_SIDE",
]

#: ``(data, layer keyword arguments, layer type)``: what a napari reader returns per layer.
LayerData = tuple[Any, dict[str, Any], str]

#: A single-level image whose Y or X side exceeds this many pixels gets computed 2× levels.
COMPUTE_LEVELS_ABOVE = 2048
#: Computed levels stop once both sides are at most this many pixels.
COARSEST_SIDE = 512

_AXES = ("t", "z", "y", "x")
#: OME-Arrow header fields a record table's rows are planned from (pixels are not read).
_HEADER_FIELDS = ("type", "version", "id", "name", "image_type", "acquisition_datetime", "pixels_meta", "chunk_grid")


# ---- the npe2 command ----------------------------------------------------------------
def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """The npe2 reader command: :func:`read_layers` when omeframe reads ``path``, else ``None``.

    ``path`` may be a list of paths (napari's stacks): all of them must be
    readable. Paths omeframe does not recognise (by suffix, by a dataset
    manifest or zarr marker, or by a record table's magic bytes) return
    ``None`` so napari tries its other readers.

    Example
    -------
    >>> napari_get_reader("not-an-image.txt") is None
    True
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for p in paths:
        try:
            if not Path(p).exists() or find(p) is None:
                return None
        except OSError:  # unreadable: not ours to open
            return None
    return read_layers


def read_layers(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[LayerData]:
    """Napari layer data tuples for everything in ``path`` (or each path of a list), lazily.

    See the module docstring for what each kind of input becomes.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    omeframe.errors.UnsupportedFormatError
        When omeframe reads no format at ``path``.

    Example
    -------
    >>> import numpy as np, omeframe as of, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "s.omeds")
    >>> _ = of.write_dataset(np.zeros((2, 64, 64), np.uint16), p, dim_order="CYX", image_ids=["a"])
    >>> [(kw["name"], kind) for _, kw, kind in read_layers(p)]
    [(['C0', 'C1'], 'image')]
    """
    if not isinstance(path, (str, os.PathLike)):
        return [layer for p in path for layer in read_layers(p)]
    entry = detect(path)
    if entry.name == "dataset":
        return _dataset_layers(DatasetReader(path))
    if entry.name == "record-table":
        return _table_layers(Path(path))
    return source_layers(open_path(path))


# ---- images and labels of one source ---------------------------------------------------
def source_layers(source: LazySource, *, prefix: str | None = None) -> list[LayerData]:
    """The layers of one image: an ``image`` layer (split by channel) and its label images.

    Parameters
    ----------
    source
        The image at full resolution (its :meth:`~omeframe.engine.source.LazySource.levels`
        are the multiscale levels).
    prefix
        Put before every layer name (``"<prefix>: <channel>"``), to tell the
        images of one file apart.

    Example
    -------
    >>> from omeframe.registry import open_source
    >>> data, kw, kind = source_layers(open_source(np.zeros((3, 32, 32), np.uint8), dim_order="CYX"))[0]
    >>> kind, kw["channel_axis"], kw["name"]
    ('image', 1, ['C0', 'C1', 'C2'])
    """
    out = [_image_layer(source, prefix)]
    for lname, lsrc in source.labels().items():
        out.extend(_labels_layers(lsrc, lname if prefix is None else f"{prefix}: {lname}"))
    return out


def _level_sources(source: LazySource) -> list[LazySource]:
    """The source's stored levels, or computed 2× levels for a large single-level image."""
    levels = list(source.levels())
    _, _, _, sy, sx = source.shape
    if len(levels) > 1 or max(sy, sx) <= COMPUTE_LEVELS_ABOVE:
        return levels
    n = 1 + math.ceil(math.log2(max(sy, sx) / COARSEST_SIDE))
    return pyramid_levels(source, n)


def _zarr_levels(levels: Sequence[LazySource]) -> list[Any]:
    """Each level as a read-only zarr array over omeframe's zarr view (nothing is read)."""
    import zarr  # lazy: zarr

    from omeframe.formats.zarr.view import zarr_view  # lazy: zarr

    return [zarr.open_array(zarr_view(LazyImage(lv)), mode="r") for lv in levels]


def _multiscale(arrays: list[Any]) -> tuple[Any, bool]:
    return (arrays, True) if len(arrays) > 1 else (arrays[0], False)


def _image_layer(source: LazySource, prefix: str | None) -> LayerData:
    levels = _level_sources(source)
    data, multiscale = _multiscale(_zarr_levels(levels))
    h = source.header()
    n = source.shape[1]
    kwargs = _channel_kwargs(h, n, source.dtype, _stored_limits(source), prefix, leading=())
    kwargs.update(channel_axis=1, multiscale=multiscale)
    return (data, kwargs, "image")


def _labels_layers(source: LazySource, name: str) -> list[LayerData]:
    """One ``labels`` layer per channel of a label image (usually one), 4-D TZYX.

    The scale is the label image's own (OME-Zarr labels may be coarser than their image).
    """
    import dask.array as da  # lazy: dask

    arrays = _zarr_levels(_level_sources(source))
    h = source.header()
    n = source.shape[1]
    out: list[LayerData] = []
    for c in range(n):
        per_level = [da.from_zarr(a)[:, c] for a in arrays]
        data, multiscale = _multiscale(per_level)
        kwargs: dict[str, Any] = {
            "name": name if n == 1 else f"{name} [{_channel_name(h, c)}]",
            "scale": _scale(h, ()),
            "axis_labels": _AXES,
            "multiscale": multiscale,
            "metadata": {"omeframe": {"image_id": h.image_id, "channel": c}},
        }
        units = _units(h, ())
        if units is not None:
            kwargs["units"] = units
        out.append((data, kwargs, "labels"))
    return out


# ---- layer keywords from metadata -------------------------------------------------------
def _channel_name(h: ImageHeader, c: int) -> str:
    ch = h.channels[c] if c < len(h.channels) else None
    return (ch.name if ch is not None and ch.name else None) or f"C{c}"


def _scale(h: ImageHeader, leading: tuple[float, ...]) -> tuple[float, ...]:
    """Layer scale ``(*leading, t, z, y, x)`` from the header's pixel sizes (unknown: 1).

    A size stored without a unit keeps its value (the file's relative
    spacing); :func:`_units` then claims no length for it.
    """

    def size(v: float | None) -> float:
        return float(v) if v is not None and math.isfinite(v) and v > 0 else 1.0

    return (*leading, 1.0, size(h.physical_size_z), size(h.physical_size_y), size(h.physical_size_x))


def _units(h: ImageHeader, leading: tuple[str, ...]) -> tuple[str, ...] | None:
    """Layer units ``(*leading, t, z, y, x)``; ``None`` when no spatial size is known in a length.

    An axis whose size or unit is unknown (or not a unit pint knows) is in
    ``"pixel"``: an image without physical sizes is never shown as µm.
    """
    try:
        import pint  # lazy: pint (a napari dependency)
    except ImportError:  # pragma: no cover - napari installs pint
        return None
    reg = pint.get_application_registry()
    spatial = []
    for axis in "zyx":
        size, u = getattr(h, f"physical_size_{axis}"), getattr(h, f"physical_size_{axis}_unit")
        unit = "pixel"
        if u and size is not None:
            try:
                unit = str(reg.Unit(u))
            except Exception:  # noqa: BLE001 - pint raises several types for unknown units
                unit = "pixel"
        spatial.append(unit)
    if all(u == "pixel" for u in spatial):
        return None
    return (*leading, "pixel", *spatial)


def _colormaps(h: ImageHeader, n: int) -> list[str] | None:
    """``#rrggbb`` per channel from the stored colours; ``None`` (napari's defaults) when none has one.

    White and missing colours read as ``"gray"`` when another channel has a colour.
    """
    colours = [h.channels[c].color_rgba if c < len(h.channels) else None for c in range(n)]
    if all(v is None or v == DEFAULT_COLOR_RGBA for v in colours):
        return None
    return ["gray" if v is None or v == DEFAULT_COLOR_RGBA else f"#{(int(v) >> 8) & 0xFFFFFF:06x}" for v in colours]


def _dtype_limits(dtype: np.dtype[Any]) -> tuple[float, float]:
    if dtype.kind == "b":
        return (0.0, 1.0)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return (float(info.min), float(info.max))
    return (0.0, 1.0)


def _stored_limits(source: LazySource) -> list[tuple[float, float] | None]:
    """Per channel ``(low, high)`` from stored windows or chunk statistics (``None``: not stored)."""
    n = source.shape[1]
    windows = _omero_windows(source, n)
    if any(w is not None for w in windows):
        return windows
    # the coarsest stored level covers the whole image with the fewest chunks to summarise
    coarsest = source.levels()[-1]
    stats = coarsest.chunk_stats()
    if not stats or "min" not in stats or "max" not in stats:
        return [None] * n
    chan = np.asarray(coarsest.pixel_source().origins)[:, 1]
    lo = np.asarray(stats["min"], dtype=np.float64)
    hi = np.asarray(stats["max"], dtype=np.float64)
    if lo.shape != chan.shape or hi.shape != chan.shape:
        return [None] * n
    out: list[tuple[float, float] | None] = []
    for c in range(n):  # per channel, over that channel's chunks (vectorised)
        m = chan == c
        a, b = (np.nanmin(lo[m]), np.nanmax(hi[m])) if m.any() and np.isfinite(lo[m]).any() else (np.nan, np.nan)
        out.append((float(a), float(b)) if np.isfinite(a) and np.isfinite(b) else None)
    return out


def _omero_windows(source: LazySource, n: int) -> list[tuple[float, float] | None]:
    """OME-Zarr ``omero`` display windows (``start``, ``end``) per channel, when stored."""
    omero = getattr(getattr(source, "metadata", None), "omero", None)
    chans = list(getattr(omero, "channels", None) or ())
    out: list[tuple[float, float] | None] = []
    for c in range(n):
        w = chans[c].window if c < len(chans) else None
        out.append(None if w is None else (float(w.start), float(w.end)))
    return out


def _channel_kwargs(
    h: ImageHeader,
    n: int,
    dtype: np.dtype[Any],
    limits: list[tuple[float, float] | None],
    prefix: str | None,
    leading: tuple[float, ...],
    leading_labels: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Per-channel keywords (one entry per channel, as napari's ``channel_axis`` wants)."""
    names = [_channel_name(h, c) for c in range(n)]
    default = _dtype_limits(dtype)
    clims = []
    for lim in limits:
        lo, hi = lim if lim is not None else default
        clims.append((lo, hi if hi > lo else lo + 1.0))
    kwargs: dict[str, Any] = {
        "name": names if prefix is None else [f"{prefix}: {nm}" for nm in names],
        "scale": [_scale(h, leading)] * n,
        "axis_labels": [(*leading_labels, *_AXES)] * n,
        "contrast_limits": clims,
        "metadata": [{"omeframe": {"image_id": h.image_id, "channel": c}} for c in range(n)],
    }
    units = _units(h, tuple("pixel" for _ in leading))
    if units is not None:
        kwargs["units"] = [units] * n
    cmaps = _colormaps(h, n)
    if cmaps is not None:
        kwargs["colormap"] = cmaps
    return kwargs


# ---- datasets -------------------------------------------------------------------------
def _dataset_layers(reader: DatasetReader) -> list[LayerData]:
    """Every image of a dataset (then every label image) as layers."""
    ids = reader.image_ids
    images = [i for i in ids if reader.header(i).image_type != "label"]
    labels = [i for i in ids if reader.header(i).image_type == "label"]
    many = len(images) > 1
    out: list[LayerData] = []
    for iid in images:
        out.append(_image_layer(DatasetSource(reader, iid, 0), iid if many else None))
    for lid in labels:
        src = DatasetSource(reader, lid, 0)
        parent_id = reader.entry(lid, 0).row.get("parent_id")
        name = src.header().name or lid
        out.extend(_labels_layers(src, f"{parent_id}: {name}" if many and parent_id else name))
    return out


# ---- record tables ----------------------------------------------------------------------
def _row_headers(path: Path) -> tuple[list[RecordView], str]:
    """A header-only view of every row of a record table (Parquet: no pixel bytes are read)."""
    fmt = detect_format(path)
    if fmt == "parquet":
        fh = files.open_input(path)
        try:
            pf = pqio.open_parquet(fh)
            col = find_record_column(pf.schema_arrow, None, source=repr(str(path)))
            st = pf.schema_arrow.field(col).type
            present = [f for f in _HEADER_FIELDS if st.get_field_index(f) >= 0]
            rows = pf.read(columns=[f"{col}.{f}" for f in present])[col].to_pylist()
        finally:
            fh.close()
    else:  # Vortex reads whole top-level columns: the records' bytes come along (not decoded)
        col = find_record_column(read_vortex_schema(path), None, source=repr(str(path)))
        rows = read_vortex_table(path, columns=[col])[col].to_pylist()
    views = []
    for r in rows:
        rec = {k: r.get(k) for k in _HEADER_FIELDS}
        rec.update(chunks=[], planes=[], masks=None)
        views.append(RecordView(rec))
    return views, col


def _read_row(table: ImageTable, row: int) -> np.ndarray:
    """One row's TCZYX pixels (the task of a record-table layer's block)."""
    return table.to_numpy([row], dims="TCZYX")[0]


def _row_array(table: ImageTable, row: int, view: RecordView) -> Any:
    """Row ``row`` as a one-block ``dask.array`` (decoded when napari first shows it)."""
    import dask.array as da  # lazy: dask

    shape, dtype = view.shape, view.dtype
    # napari caches dask chunks by key: the name changes when the file is rewritten
    st = os.stat(table.path)
    token = hashlib.sha1(f"{table.path}\0{st.st_size}\0{st.st_mtime_ns}\0{row}".encode()).hexdigest()[:24]
    name = f"omeframe-row-{token}"
    graph = {(name, 0, 0, 0, 0, 0): (_read_row, table, row)}
    return da.Array(graph, name, tuple((s,) for s in shape), dtype=dtype)


def _table_layers(path: Path) -> list[LayerData]:
    """Image rows (stacked when uniform, else one layer each), then label rows the same way."""
    views, col = _row_headers(path)
    table = ImageTable(path, column=col)
    out: list[LayerData] = []
    for is_label in (False, True):
        rows = [i for i, v in enumerate(views) if (v.header("image_type") == "label") == is_label]
        if not rows:
            continue
        first = views[rows[0]]
        uniform = len(rows) > 1 and all(views[i].shape == first.shape and views[i].dtype == first.dtype for i in rows)
        if uniform:
            out.extend(_stacked_rows(table, views, rows, path.stem, is_label))
        else:
            for i in rows:
                out.extend(_one_row(table, views[i], i, len(views) > 1, is_label))
    return out


def _row_name(view: RecordView, row: int) -> str:
    return str(view.header("name") or view.header("id") or f"row {row}")


def _stacked_rows(
    table: ImageTable, views: list[RecordView], rows: list[int], stem: str, labels: bool
) -> list[LayerData]:
    import dask.array as da  # lazy: dask

    stack = da.stack([_row_array(table, i, views[i]) for i in rows])  # (row, T, C, Z, Y, X)
    h = header_from_record(views[rows[0]])
    n = views[rows[0]].shape[1]
    ids = [views[i].header("id") for i in rows]
    if labels:
        out: list[LayerData] = []
        for c in range(n):
            kwargs: dict[str, Any] = {
                "name": f"{stem} labels" if n == 1 else f"{stem} labels [{_channel_name(h, c)}]",
                "scale": _scale(h, (1.0,)),
                "axis_labels": ("row", *_AXES),
                "metadata": {"omeframe": {"rows": rows, "image_ids": ids, "channel": c}},
            }
            out.append((stack[:, :, c], kwargs, "labels"))
        return out
    kwargs = _channel_kwargs(h, n, views[rows[0]].dtype, [None] * n, stem, (1.0,), ("row",))
    for c, meta in enumerate(kwargs["metadata"]):
        meta["omeframe"] = {"rows": rows, "image_ids": ids, "channel": c}
    kwargs["channel_axis"] = 2
    return [(stack, kwargs, "image")]


def _one_row(table: ImageTable, view: RecordView, row: int, many: bool, labels: bool) -> list[LayerData]:
    arr = _row_array(table, row, view)
    h = header_from_record(view)
    n = view.shape[1]
    name = _row_name(view, row)
    if labels:
        return [
            (
                arr[:, c],
                {"name": name if n == 1 else f"{name} [{_channel_name(h, c)}]", "scale": _scale(h, ()),
                 "axis_labels": _AXES, "metadata": {"omeframe": {"row": row, "image_id": h.image_id}}},
                "labels",
            )
            for c in range(n)
        ]
    kwargs = _channel_kwargs(h, n, view.dtype, [None] * n, name if many else None, ())
    for meta in kwargs["metadata"]:
        meta["omeframe"]["row"] = row
    kwargs["channel_axis"] = 1
    return [(arr, kwargs, "image")]
