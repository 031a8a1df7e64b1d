"""The façade: :class:`OMEArrow` (one image, in memory or as a lazy plan), :class:`Dataset` and the ingest functions.

Everything here is public API built on the layers below: the format
registry (:mod:`omeframe.registry`) opens inputs, the engine plans and reads,
and the dataset writer (:mod:`omeframe.formats.dataset.writer`) commits
manifests, which :func:`write_dataset` and the ingest functions wrap into a
:class:`Dataset`. The flat keyword arguments of the public functions become
:class:`~omeframe.engine.source.HeaderOptions` and
:class:`~omeframe.formats.dataset.writer.WriteOptions`, whose defaults are
the only ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pyarrow as pa

from omeframe.engine.derived import PlanSource, is_identity
from omeframe.engine.lazy import LazyImage, PlanInfo
from omeframe.engine.predicates import ChunkPredicate
from omeframe.engine.source import HeaderOptions, HeaderOverride, LazySource, SourceLike
from omeframe.formats.array.source import RecordSource
from omeframe.formats.dataset.ingest import Levels, check_clamp, ingest, to_record
from omeframe.formats.dataset.inputs import ImageInput
from omeframe.formats.dataset.reader import DatasetReader
from omeframe.formats.dataset.source import DatasetSource
from omeframe.formats.dataset.writer import (
    DEFAULT_CHUNK_ROW_GROUP_BYTES,
    DEFAULT_FRAME_BYTES,
    WriteItem,
    WriteOptions,
    write_items,
)
from omeframe.formats.record.arrays import DEFAULT_COMPRESSION, DEFAULT_COMPRESSION_LEVEL, from_numpy
from omeframe.formats.record.decode import to_dict, to_numpy
from omeframe.formats.record.files import read_record
from omeframe.formats.record.source import build_record
from omeframe.formats.record.tables import to_ome_parquet, to_ome_vortex
from omeframe.formats.stack.source import MissingPolicy, StackSource
from omeframe.formats.tiff.source import open_tiff_source
from omeframe.formats.tiff.writer import to_ome_tiff
from omeframe.formats.zarr.source import open_ome_zarr_source
from omeframe.formats.zarr.writer import to_ome_zarr
from omeframe.model.arrow import DEFAULT_COLUMN_NAME
from omeframe.model.errors import SchemaError, UnsupportedFormatError
from omeframe.model.record import RecordView, as_record_scalar
from omeframe.ops.describe import describe_ome_arrow
from omeframe.ops.slicing import _keep, slice_ome_arrow
from omeframe.ops.tensor_spec import ViewSpec
from omeframe.ops.tensor_view import LazyTensorView, TensorView
from omeframe.ops.view import view_matplotlib
from omeframe.registry import detect, open_source

__all__ = [
    "OMEArrow",
    "Dataset",
    "scan",
    "open_dataset",
    "write_dataset",
    "ingest_source",
    "from_tiff",
    "from_ome_zarr",
    "from_stack_pattern_path",
]


def _describe_shape(shape: tuple[int, int, int, int, int], dtype: np.dtype[Any]) -> dict[str, Any]:
    t, c, z, y, x = shape
    kind = (
        "2D image" if t == 1 and z == 1 else "3D image (z-stack)" if t == 1 else
        "movie / timelapse" if z == 1 else "4D timelapse-volume"
    )
    chan = f"multi-channel ({c} channels)" if c > 1 else "single-channel"
    return {
        "shape": shape,
        "type": kind,
        "channels": c,
        "is_multichannel": c > 1,
        "dtype": dtype.name,
        "summary": f"{kind}, {chan} - shape (T={t}, C={c}, Z={z}, Y={y}, X={x}), {dtype.name}",
    }


class OMEArrow(SourceLike):
    """One OME-Arrow image: a record in memory, or a lazy plan over a source.

    Parameters
    ----------
    data
        A path to a record table (``.parquet`` / ``.vortex``), a record
        (``pa.StructScalar``, one-row ``StructArray`` or dict), or a numpy
        array (ingested with :func:`omeframe.from_numpy`).
    tcz
        Default ``(t, c, z)`` plane for viewing helpers.
    dim_order
        Axes of ``data`` when it is an array (inferred from the rank if ``None``).
    column_name, row_index
        Which column and row to read from a table file.
    image_type
        Overrides the record's ``image_type`` (e.g. ``"label"``).
    lazy
        Plan instead of reading: the same as :meth:`OMEArrow.scan`.
    """

    def __init__(
        self,
        data: str | os.PathLike[str] | dict[str, Any] | pa.StructScalar | np.ndarray,
        tcz: tuple[int, int, int] = (0, 0, 0),
        *,
        dim_order: str | None = None,
        column_name: str = DEFAULT_COLUMN_NAME,
        row_index: int = 0,
        image_type: str | None = None,
        lazy: bool = False,
    ) -> None:
        self.tcz = tuple(int(v) for v in tcz)
        self._source: str | None = None
        self._plan: LazyImage | None = None
        self._data: pa.StructScalar | None = None
        self._image_type = image_type
        if lazy:
            self._plan = LazyImage(
                open_source(data, column_name=column_name, row_index=row_index, dim_order=dim_order)
            )
            self._source = str(data) if isinstance(data, (str, os.PathLike)) else None
            return
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            self._source = str(path)
            if not path.exists():
                raise FileNotFoundError(f"no such file: {str(path)!r}")
            entry = detect(path)
            if entry.name == "tiff":
                self._set_data(from_tiff(path, image_type=image_type))
                return
            if entry.name != "record-table":
                raise ValueError(
                    f"OMEArrow({str(path)!r}) reads record tables (.parquet / .vortex) and TIFF "
                    f"files, not {entry.description}; use OMEArrow.scan(path) (lazy) and .collect()"
                )
            scalar, _, _ = read_record(path, column_name=column_name, row_index=row_index)
        elif isinstance(data, np.ndarray):
            scalar = from_numpy(data, dim_order=dim_order, image_type=image_type)
        else:
            scalar = as_record_scalar(data)
        self._set_data(scalar)

    def _set_data(self, scalar: pa.StructScalar) -> None:
        it = self._image_type
        if it is not None and RecordView(scalar).header("image_type") != it:
            scalar = _with_field(scalar, "image_type", it)
        self._data = scalar

    # ---- construction ------------------------------------------------------
    @classmethod
    def scan(
        cls,
        data: Any,
        *,
        tcz: tuple[int, int, int] = (0, 0, 0),
        column_name: str = DEFAULT_COLUMN_NAME,
        row_index: int = 0,
        image_type: str | None = None,
        **source_options: Any,
    ) -> OMEArrow:
        """Plan over ``data`` without reading pixels (like Polars' ``scan_*``).

        ``data`` is a record table path (``column_name``, ``row_index``), a
        dataset directory or :class:`~omeframe.Dataset` (``image_id=``,
        ``level=``), an OME-Zarr store, a TIFF file, an array or a record.
        """
        src = open_source(data, column_name=column_name, row_index=row_index, **source_options)
        obj = cls._from_plan(LazyImage(src), tcz=tcz, image_type=image_type)
        obj._source = str(data) if isinstance(data, (str, os.PathLike)) else None
        return obj

    @classmethod
    def _from_plan(
        cls, plan: LazyImage, *, tcz: tuple[int, int, int] = (0, 0, 0), image_type: str | None = None
    ) -> OMEArrow:
        obj = cls.__new__(cls)
        obj.tcz = tuple(int(v) for v in tcz)
        obj._source = None
        obj._plan = plan
        obj._data = None
        obj._image_type = image_type
        return obj

    @classmethod
    def _from_record(cls, scalar: pa.StructScalar, *, tcz: tuple[int, int, int] = (0, 0, 0), image_type: str | None = None) -> OMEArrow:
        obj = cls.__new__(cls)
        obj.tcz = tuple(int(v) for v in tcz)
        obj._source = None
        obj._plan = None
        obj._data = None
        obj._image_type = image_type
        obj._set_data(scalar)
        return obj

    # ---- state -------------------------------------------------------------
    @property
    def is_lazy(self) -> bool:
        """True while this object is a plan that has not been collected."""
        return self._plan is not None

    @property
    def data(self) -> pa.StructScalar:
        """The record as a ``pa.StructScalar`` (a plan is run, once, to produce it)."""
        if self._data is None:
            assert self._plan is not None
            self._set_data(_materialize(self._plan))
        assert self._data is not None
        return self._data

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(T, C, Z, Y, X)`` (of the plan's result when lazy; no read needed)."""
        if self._plan is not None:
            return self._plan.shape
        return RecordView(self.data).shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel dtype (of the plan's result when lazy)."""
        if self._plan is not None:
            return self._plan.out_dtype
        return RecordView(self.data).dtype

    def info(self) -> dict[str, Any]:
        """Describe the image: shape, kind, channels, dtype (no pixel read when lazy)."""
        if self._plan is not None:
            return _describe_shape(self.shape, self.dtype)
        return describe_ome_arrow(self.data)

    def __repr__(self) -> str:
        src = f" from {self._source!r}" if self._source else ""
        lazy = " (lazy)" if self.is_lazy else ""
        return f"<OMEArrow{lazy} {self.info()['summary']}{src}>"

    # ---- lazy plans ----------------------------------------------------------
    def _lazy(self) -> LazyImage:
        if self._plan is not None:
            return self._plan
        return LazyImage(RecordSource(self.data))

    def to_source(self) -> LazySource:
        """The image as a :class:`~omeframe.engine.source.LazySource` (what writers and exporters read).

        A plan that changes nothing is its source; other plans read through
        :class:`~omeframe.engine.derived.PlanSource`; ``image_type`` overrides
        the header.
        """
        plan = self._lazy()
        src = plan.source if is_identity(plan) else PlanSource(plan)
        it = self._image_type
        return src if it is None else HeaderOverride(src, replace(src.header(), image_type=it))

    def collect(self) -> OMEArrow:
        """Run the plan (reading only the chunks it needs) and return a new, materialised OMEArrow.

        The plan itself is not changed; collecting an already materialised
        object returns it unchanged.
        """
        if self._plan is None:
            return self
        # Do not cache the result on the plan: collecting never changes it.
        scalar = self._data if self._data is not None else _materialize(self._plan)
        return OMEArrow._from_record(scalar, tcz=self.tcz, image_type=self._image_type)

    def explain(self) -> str:
        """The read plan: source, selection, chunks and bytes it will read."""
        return self._lazy().explain()

    def plan_info(self) -> PlanInfo:
        """The numbers behind :meth:`explain`, for code rather than eyes.

        Returns
        -------
        omeframe.PlanInfo
            ``source``, ``image_shape``, ``out_shape``, ``dtype``,
            ``chunk_keys`` (TCZYX origins of the chunks that will be read),
            ``chunks_total``/``chunks_touched``/``chunks_skipped``,
            ``bytes_read`` (stored bytes the read fetches: for framed dataset
            chunks only the frames under the selection) and ``metadata_bytes``.
            Nothing is decoded.
        """
        return self._lazy().info()

    def select(self, *, t: Any = None, c: Any = None, z: Any = None, y: Any = None, x: Any = None) -> OMEArrow:
        """A lazy plan narrowed to the given indices (int, slice or sequence; order kept).

        ``y``/``x`` take half-open ``(start, stop)`` ranges. Coordinates are
        those of this plan's result.
        """
        return OMEArrow._from_plan(self._lazy().select(t=t, c=c, z=z, y=y, x=x), tcz=self.tcz, image_type=self._image_type)

    def filter_chunks(self, predicate: ChunkPredicate) -> OMEArrow:
        """A lazy plan that skips chunks whose stored statistics fail ``predicate``.

        Example: ``img.filter_chunks(omeframe.chunk.max > 1000)``. Skipped
        chunks are not read and read as zero. Needs a dataset source.
        """
        return OMEArrow._from_plan(self._lazy().filter_chunks(predicate), tcz=self.tcz, image_type=self._image_type)

    def slice_lazy(
        self,
        x_min: int,
        x_max: int,
        y_min: int,
        y_max: int,
        t_indices: Iterable[int] | None = None,
        c_indices: Iterable[int] | None = None,
        z_indices: Iterable[int] | None = None,
        fill_missing: bool = True,
    ) -> OMEArrow:
        """Plan a crop; like :meth:`slice` but nothing is read until ``collect()``.

        On a materialised object this is the eager :meth:`slice`. Never
        mutates ``self``; chained calls compose into one selection.
        """
        if self._plan is None:
            return self.slice(x_min, x_max, y_min, y_max, t_indices, c_indices, z_indices, fill_missing)
        sel: dict[str, Any] = {"y": (y_min, y_max), "x": (x_min, x_max)}
        shape = self._plan.shape
        for axis, idx, size in (("t", t_indices, shape[0]), ("c", c_indices, shape[1]), ("z", z_indices, shape[2])):
            if idx is not None:
                # the same index-set rules as the eager slice (no negative indices)
                sel[axis] = _keep(idx, size, axis.upper())
        plan = self._plan.select(**sel)
        plan = replace(plan, fill_missing=plan.fill_missing and fill_missing)
        return OMEArrow._from_plan(plan, tcz=self.tcz, image_type=self._image_type)

    def tensor_view(
        self,
        *,
        scene: int | None = None,
        t: int | slice | Sequence[int] | None = None,
        z: int | slice | Sequence[int] | None = None,
        c: int | slice | Sequence[int] | None = None,
        roi: tuple[int, int, int, int] | None = None,
        roi3d: tuple[int, int, int, int, int, int] | None = None,
        roi_nd: tuple[int, ...] | None = None,
        roi_type: Literal["2d", "2d_timelapse", "3d", "4d"] | None = None,
        tile: tuple[int, int] | None = None,
        layout: str | None = None,
        dtype: Any = None,
        chunk_policy: Literal["auto", "combine", "keep"] = "auto",
        channel_policy: Literal["error", "first"] = "error",
    ) -> LazyTensorView | TensorView:
        """A tensor view of a selection: lazy (``LazyTensorView``) for plans, else ``TensorView``.

        See :class:`omeframe.TensorView` for the parameters. A lazy view
        knows its shape and dtype without reading and reads only the chunks
        it touches when collected. ``scene`` must be 0 or ``None`` (a record
        holds one scene). ``chunk_policy`` is validated for compatibility with
        code written for ``ome_arrow``, but it only matters for
        ``ChunkedArray`` inputs to :class:`~omeframe.TensorView`; an
        ``OMEArrow`` holds a single record, so every policy reads the same.
        """
        if scene not in (None, 0):
            raise ValueError(f"scene {scene} does not exist: an OME-Arrow record holds one scene (0)")
        if chunk_policy not in ("auto", "combine", "keep"):
            raise ValueError(f"chunk_policy must be 'auto', 'combine' or 'keep', got {chunk_policy!r}")
        spec = ViewSpec(t, z, c, roi, roi3d, roi_nd, roi_type, tile, layout, dtype, channel_policy)
        if self._plan is not None:
            return LazyTensorView(self._plan, spec)
        return TensorView._from_array(self._lazy(), spec, None)

    # ---- conversions -------------------------------------------------------
    def export(
        self,
        how: str = "numpy",
        dtype: Any = None,
        strict: bool = True,
        clamp: bool = False,
        *,
        out: str | os.PathLike[str] | None = None,
        dim_order: str = "TCZYX",
        compression: str | None = "zlib",
        compression_level: int = 6,
        tile: tuple[int, int] | None = None,
        chunks: tuple[int, int, int, int, int] | None = None,
        zarr_compressor: str | None = "zstd",
        zarr_level: int = 7,
        use_channel_colors: bool = False,
        tiff_options: dict[str, Any] | None = None,
        parquet_column_name: str = DEFAULT_COLUMN_NAME,
        parquet_compression: str | None = "zstd",
        parquet_metadata: dict[str, str] | None = None,
        vortex_column_name: str = DEFAULT_COLUMN_NAME,
        vortex_metadata: dict[str, str] | None = None,
    ) -> Any:
        """Export the image.

        Parameters
        ----------
        how
            ``"numpy"`` (TCZYX array), ``"dict"``, ``"scalar"``,
            ``"parquet"`` or ``"vortex"`` (write a one-row table to ``out``),
            ``"ome-tiff"`` / ``"ome-zarr"`` (write OME-TIFF / OME-Zarr to
            ``out``; lazy plans are streamed chunk by chunk).
        dtype, strict, clamp
            For ``"numpy"``: output dtype (native when ``None``), payload
            length checking, and clipping into ``dtype``'s range.
        out
            Output path for file formats.
        dim_order, chunks, zarr_compressor, zarr_level
            For ``"ome-zarr"``: axes order, TCZYX chunk shape, codec and level.
        compression, compression_level, tile, use_channel_colors
            For ``"ome-tiff"``: codec and level, tile shape and channel colours.
        tiff_options
            For ``"ome-tiff"``: further keyword arguments of
            :func:`omeframe.to_ome_tiff` (``pyramid_levels``, ``bigtiff`` ...).

        Returns
        -------
        numpy.ndarray | dict | pyarrow.StructScalar | str
            The array, dict or scalar, or the written path.
        """
        kind = how.lower().replace("_", "-")
        if kind == "numpy":
            if self._plan is not None and self._data is None:
                plan = self._plan if dtype is None else self._plan.with_dtype(dtype)
                return plan.execute(clamp=clamp, strict=strict)
            return to_numpy(self.data, dtype=dtype, strict=strict, clamp=clamp)
        if kind == "dict":
            return to_dict(self.data)
        if kind == "scalar":
            return self.data
        if kind in ("ome-tiff", "ometiff", "tiff", "tif"):
            if out is None:
                raise ValueError(f"export(how={how!r}) needs out=<path>")
            opts: dict[str, Any] = {
                "compression": compression,
                "compression_level": compression_level,
                "tile": tile,
                "use_channel_colors": use_channel_colors,
            }
            opts.update(tiff_options or {})
            return str(to_ome_tiff(self, out, dtype=dtype, clamp=clamp, dim_order=dim_order, **opts))
        if kind in ("ome-zarr", "omezarr", "zarr"):
            if out is None:
                raise ValueError(f"export(how={how!r}) needs out=<path>")
            return str(
                to_ome_zarr(
                    self, out, dtype=dtype, clamp=clamp, dim_order=dim_order, chunks=chunks,
                    compressor=zarr_compressor, compressor_level=zarr_level,
                )
            )
        if kind in ("parquet", "vortex"):
            if out is None:
                raise ValueError(f"export(how={how!r}) needs out=<path>")
            if kind == "parquet":
                to_ome_parquet(
                    self.data, out, column_name=parquet_column_name,
                    compression=parquet_compression, file_metadata=parquet_metadata,
                )
            else:
                to_ome_vortex(self.data, out, column_name=vortex_column_name, file_metadata=vortex_metadata)
            return str(out)
        raise ValueError(
            f"unknown export format {how!r}; expected 'numpy', 'dict', 'scalar', 'parquet', "
            "'vortex', 'ome-tiff' or 'ome-zarr'"
        )

    def slice(
        self,
        x_min: int,
        x_max: int,
        y_min: int,
        y_max: int,
        t_indices: Iterable[int] | None = None,
        c_indices: Iterable[int] | None = None,
        z_indices: Iterable[int] | None = None,
        fill_missing: bool = True,
    ) -> OMEArrow:
        """Return a cropped copy (half-open bounds; T/C/Z sorted and re-indexed from 0)."""
        if self._plan is not None:
            return self.slice_lazy(x_min, x_max, y_min, y_max, t_indices, c_indices, z_indices, fill_missing).collect()
        return OMEArrow._from_record(
            slice_ome_arrow(self.data, x_min, x_max, y_min, y_max, t_indices, c_indices, z_indices, fill_missing),
            tcz=self.tcz,
        )

    def view(
        self,
        how: str = "matplotlib",
        tcz: tuple[int, int, int] | None = None,
        autoscale: bool = True,
        vmin: float | None = None,
        vmax: float | None = None,
        cmap: str = "gray",
        show: bool = True,
    ) -> Any:
        """Render one ``(t, c, z)`` plane with Matplotlib; returns ``(figure, axes, image)``."""
        if how != "matplotlib":
            raise ValueError(f"unsupported view backend {how!r}; available: 'matplotlib'")
        t, c, z = tcz or self.tcz
        data = self.data if self._plan is None else self.select(t=[t], c=[c], z=[z]).data
        if self._plan is not None:
            t = c = z = 0
        return view_matplotlib(data, (t, c, z), autoscale=autoscale, vmin=vmin, vmax=vmax, cmap=cmap, show=show)


def scan(source: Any, **options: Any) -> OMEArrow:
    """Plan a lazy read of one image; see :meth:`OMEArrow.scan`.

    Examples
    --------
    >>> img = omeframe.scan("slides/", image_id="slide-1")        # doctest: +SKIP
    >>> roi = img.select(y=(1000, 1256), x=(2000, 2256))          # doctest: +SKIP
    >>> print(roi.explain())                                       # doctest: +SKIP
    >>> arr = roi.export("numpy")                                  # doctest: +SKIP
    """
    return OMEArrow.scan(source, **options)


def _with_field(scalar: pa.StructScalar, name: str, value: Any) -> pa.StructScalar:
    arr = pa.repeat(scalar, 1)
    fields = list(arr.type)
    cols = arr.flatten()
    idx = arr.type.get_field_index(name)
    if idx < 0:
        raise SchemaError(f"record has no field {name!r}")
    cols[idx] = pa.array([value], fields[idx].type)
    return pa.StructArray.from_arrays(cols, fields=fields)[0]


def _materialize(plan: LazyImage) -> pa.StructScalar:
    """Run ``plan`` and return its result as an OME-Arrow record (the source's chunking)."""
    return build_record(plan.execute(), PlanSource(plan).header(), chunk_shape=plan.source.chunk_shape())


# ---------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------
class Dataset(DatasetReader):
    """A chunked image dataset directory: reads, lazy plans and appends.

    Use :func:`open_dataset` or :func:`write_dataset` to get one.

    Example
    -------
    >>> ds = omeframe.open_dataset("slides/")                       # doctest: +SKIP
    >>> roi = ds.scan("slide-1").select(y=(0, 256), x=(0, 256))     # doctest: +SKIP
    """

    def scan(self, image_id: str | None = None, level: int = 0) -> OMEArrow:
        """A lazy plan over one image (see :class:`omeframe.OMEArrow`)."""
        return OMEArrow._from_plan(LazyImage(DatasetSource(self, image_id, level)))

    def append(self, images: Any, **options: Any) -> Dataset:
        """Add images (same options as :func:`write_dataset`); returns the new state."""
        return write_dataset(images, self.path, mode="append", **options)


def _write_source(obj: object, dim_order: str | None) -> LazySource | ImageInput:
    """What the writer reads for one of :func:`write_dataset`'s images."""
    if isinstance(obj, ImageInput):
        return obj
    if not isinstance(obj, (str, os.PathLike)):
        try:
            return open_source(obj, dim_order=dim_order)
        except UnsupportedFormatError:
            pass
    raise UnsupportedFormatError(
        f"cannot write an image from a {type(obj).__name__}; pass a numpy array, an OME-Arrow record, "
        "an OMEArrow, a source or lazy plan (for files: omeframe.scan(path)) or an ImageInput"
    )


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Open a chunked image dataset directory written by :func:`omeframe.write_dataset`.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a dataset directory.
    CorruptFileError
        If its manifest or images table is unreadable.

    Example
    -------
    >>> ds = omeframe.open_dataset("slides/")    # doctest: +SKIP
    >>> ds.image_ids                              # doctest: +SKIP
    """
    return Dataset(path)


def write_dataset(
    images: Any,
    path: str | os.PathLike[str],
    *,
    format: Literal["parquet", "vortex"] | None = None,
    mode: Literal["create", "append", "overwrite"] = "create",
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    image_ids: Sequence[str] | None = None,
    dim_order: str | None = None,
    level: int = 0,
    row_group_bytes: int = DEFAULT_CHUNK_ROW_GROUP_BYTES,
    frame_bytes: int | None = DEFAULT_FRAME_BYTES,
    progress: bool | None = None,
) -> Dataset:
    """Write images into a chunked dataset directory, streaming chunk by chunk.

    Parameters
    ----------
    images
        One image or a list: numpy arrays (axes ``dim_order``), OME-Arrow
        records, ``OMEArrow`` objects, sources or lazy plans (open files with
        :func:`omeframe.scan`), or
        :class:`~omeframe.formats.dataset.inputs.ImageInput` block readers;
        all are read block by block.
    path
        The dataset directory (created when missing).
    format, mode, chunk_shape, compression, compression_level, row_group_bytes, frame_bytes, progress
        See :class:`~omeframe.formats.dataset.writer.WriteOptions`.
    image_ids
        Identifiers, one per image (default: the record's id, else ``img-<n>``).
    dim_order
        Axes of numpy inputs (inferred from the rank when ``None``).
    level
        Pyramid level the images are written as (0 = full resolution).

    Returns
    -------
    Dataset
        The dataset as committed.

    Raises
    ------
    FileExistsError
        In ``"create"`` mode when ``path`` already holds a dataset.
    ValueError
        For duplicate image ids or bad options; nothing is committed then.

    Example
    -------
    >>> ds = omeframe.write_dataset(np.zeros((1, 2, 3, 600, 700), np.uint16), "out/", image_ids=["a"])  # doctest: +SKIP
    """
    given = list(images) if isinstance(images, (list, tuple)) else [images]
    if not given:
        raise ValueError("write_dataset needs at least one image")
    if image_ids is not None and len(image_ids) != len(given):
        raise ValueError(f"image_ids has {len(image_ids)} entries for {len(given)} images")
    items = [
        WriteItem(_write_source(obj, dim_order), None if image_ids is None else str(image_ids[i]), level, None)
        for i, obj in enumerate(given)
    ]
    opts = WriteOptions(
        format=format, mode=mode, chunk_shape=chunk_shape, compression=compression,
        compression_level=compression_level, row_group_bytes=row_group_bytes,
        frame_bytes=frame_bytes, progress=progress,
    )
    write_items(items, path, opts)
    return Dataset(path)


# ---------------------------------------------------------------------------
# ingest: sources into records or datasets
# ---------------------------------------------------------------------------
Out = str | os.PathLike[str]


@overload
def ingest_source(
    source: LazySource, *, out: None = None, format: Literal["parquet", "vortex"] | None = ...,
    mode: Literal["create", "append", "overwrite"] = ..., levels: Levels = ..., labels: bool = ...,
    image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    chunk_encoding: Literal["bytes", "list"] = ..., compression: str | None = ...,
    compression_level: int | None = ..., progress: bool | None = ...,
) -> pa.StructScalar: ...
@overload
def ingest_source(
    source: LazySource, *, out: Out, format: Literal["parquet", "vortex"] | None = ...,
    mode: Literal["create", "append", "overwrite"] = ..., levels: Levels = ..., labels: bool = ...,
    image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    chunk_encoding: Literal["bytes", "list"] = ..., compression: str | None = ...,
    compression_level: int | None = ..., progress: bool | None = ...,
) -> Dataset: ...
@overload
def ingest_source(
    source: LazySource, *, out: Out | None = ..., format: Literal["parquet", "vortex"] | None = ...,
    mode: Literal["create", "append", "overwrite"] = ..., levels: Levels = ..., labels: bool = ...,
    image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    chunk_encoding: Literal["bytes", "list"] = ..., compression: str | None = ...,
    compression_level: int | None = ..., progress: bool | None = ...,
) -> pa.StructScalar | Dataset: ...
def ingest_source(
    source: LazySource,
    *,
    out: Out | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    mode: Literal["create", "append", "overwrite"] = "create",
    levels: Levels = "first",
    labels: bool = False,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = False,
    chunk_shape: tuple[int, int, int] | None = None,
    chunk_encoding: Literal["bytes", "list"] = "bytes",
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    progress: bool | None = None,
) -> pa.StructScalar | Dataset:
    """Read ``source`` into a record (``out=None``) or stream it into a dataset at ``out``.

    Parameters
    ----------
    levels
        Pyramid levels to ingest into a dataset: ``"first"`` (full resolution
        only), ``"all"``, a count, or explicit level indices.
    labels
        Also ingest the source's label images (as images with
        ``image_type="label"`` and ``parent_id`` set).
    image_id, name, image_type, channel_names, acquisition_datetime
        Header overrides (:class:`~omeframe.engine.source.HeaderOptions`).
    clamp_to_uint16, chunk_encoding
        Records only: saturate into uint16, and ``"bytes"`` or ``"list"`` chunks.
    chunk_shape
        ``(Z, Y, X)`` chunk shape; default: the source's own chunking, else (1, 512, 512).
    format, mode, compression, compression_level, progress
        See :class:`~omeframe.formats.dataset.writer.WriteOptions`.

    Returns
    -------
    pyarrow.StructScalar or Dataset
        The record (level 0, read in full) or the dataset written.

    Example
    -------
    >>> ds = omeframe.ingest_source(omeframe.registry.open_source("big.ome.tif"), out="ds/")  # doctest: +SKIP
    """
    header = HeaderOptions(
        image_id=image_id, name=name, image_type=image_type,
        channel_names=channel_names, acquisition_datetime=acquisition_datetime,
    )
    write = WriteOptions(
        format=format, mode=mode, chunk_shape=chunk_shape, compression=compression,
        compression_level=compression_level, progress=progress,
    )
    if out is None:
        return to_record(source, header=header, write=write, clamp_to_uint16=clamp_to_uint16,
                         chunk_encoding=chunk_encoding)
    check_clamp(source, clamp_to_uint16)
    ingest(source, out, header=header, write=write, levels=levels, labels=labels)
    return Dataset(out)


@overload
def from_tiff(
    tiff_path: Out, image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., *, series: int = ..., out: None = None,
    format: Literal["parquet", "vortex"] | None = ..., levels: Levels = ...,
    chunk_shape: tuple[int, int, int] | None = ..., compression: str | None = ...,
    compression_level: int | None = ..., mode: Literal["create", "append", "overwrite"] = ...,
    progress: bool | None = ...,
) -> pa.StructScalar: ...
@overload
def from_tiff(
    tiff_path: Out, image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., *, series: int = ..., out: Out,
    format: Literal["parquet", "vortex"] | None = ..., levels: Levels = ...,
    chunk_shape: tuple[int, int, int] | None = ..., compression: str | None = ...,
    compression_level: int | None = ..., mode: Literal["create", "append", "overwrite"] = ...,
    progress: bool | None = ...,
) -> Dataset: ...
def from_tiff(
    tiff_path: Out,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = False,
    *,
    series: int = 0,
    out: Out | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    levels: Levels = "first",
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    mode: Literal["create", "append", "overwrite"] = "create",
    progress: bool | None = None,
) -> pa.StructScalar | Dataset:
    """Read a TIFF / OME-TIFF series into an OME-Arrow record, or stream it into a dataset.

    Without ``out`` it returns one OME-Arrow record (the whole image is read;
    for small images); with ``out`` it streams the image tile by tile into a
    chunked dataset (for large ones; ``levels="all"`` also stores the file's
    pyramid levels).

    Parameters
    ----------
    tiff_path
        The file.
    image_id, name
        Defaults: the file stem (``_s<series>`` appended for series > 0 of a
        multi-series file) and the OME image name or file name.
    image_type, channel_names, acquisition_datetime
        Overrides of the file's metadata (channel names and colours,
        wavelengths, physical sizes and acquisition date come from OME-XML,
        ImageJ metadata or resolution tags when present).
    clamp_to_uint16
        Records only: saturate pixels into uint16 (native dtype otherwise).
    series
        The series (scene) to read.
    out, format, mode
        Write a chunked dataset at ``out`` (Parquet or Vortex) instead of
        returning a record; ``mode`` as in :func:`omeframe.write_dataset`.
    levels
        Pyramid levels to store in the dataset: ``"first"``, ``"all"``, a
        count or level indices.
    chunk_shape
        ``(Z, Y, X)`` chunks; default the file's tiles (strips: 512x512).
    compression, compression_level
        Per-chunk codec.
    progress
        Show a progress bar while writing a dataset.

    Returns
    -------
    pyarrow.StructScalar or Dataset

    Example
    -------
    >>> rec = omeframe.from_tiff("cells.ome.tif")                         # doctest: +SKIP
    >>> ds = omeframe.from_tiff("slide.ome.tif", out="ds/", levels="all")  # doctest: +SKIP
    """
    with open_tiff_source(tiff_path, series=series) as src:
        return ingest_source(
            src, out=out, format=format, mode=mode, levels=levels, image_id=image_id, name=name,
            image_type=image_type, channel_names=channel_names, acquisition_datetime=acquisition_datetime,
            clamp_to_uint16=clamp_to_uint16, chunk_shape=chunk_shape, compression=compression,
            compression_level=compression_level, progress=progress,
        )


@overload
def from_ome_zarr(
    zarr_path: Out | Any, image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., *, level: int = ..., image_path: str | None = ..., out: None = None,
    format: Literal["parquet", "vortex"] | None = ..., mode: Literal["create", "append", "overwrite"] = ...,
    levels: Levels = ..., labels: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    compression: str | None = ..., compression_level: int | None = ..., progress: bool | None = ...,
) -> pa.StructScalar: ...
@overload
def from_ome_zarr(
    zarr_path: Out | Any, image_id: str | None = ..., name: str | None = ..., image_type: str | None = ...,
    channel_names: Sequence[str] | None = ..., acquisition_datetime: datetime | None = ...,
    clamp_to_uint16: bool = ..., *, level: int = ..., image_path: str | None = ..., out: Out,
    format: Literal["parquet", "vortex"] | None = ..., mode: Literal["create", "append", "overwrite"] = ...,
    levels: Levels = ..., labels: bool = ..., chunk_shape: tuple[int, int, int] | None = ...,
    compression: str | None = ..., compression_level: int | None = ..., progress: bool | None = ...,
) -> Dataset: ...
def from_ome_zarr(
    zarr_path: Out | Any,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    channel_names: Sequence[str] | None = None,
    acquisition_datetime: datetime | None = None,
    clamp_to_uint16: bool = False,
    *,
    level: int = 0,
    image_path: str | None = None,
    out: Out | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    mode: Literal["create", "append", "overwrite"] = "create",
    levels: Levels = "first",
    labels: bool = False,
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = DEFAULT_COMPRESSION,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    progress: bool | None = None,
) -> pa.StructScalar | Dataset:
    """Read an OME-Zarr image (0.4 on zarr v2, 0.5 on zarr v3) lazily, chunk by chunk.

    Keeps ome-arrow's signature (``zarr_path, image_id, name, image_type,
    channel_names, acquisition_datetime, clamp_to_uint16``) and adds streaming
    ingest: with ``out=`` the image is written chunk by chunk into a dataset,
    with every pyramid level (``levels="all"``) and label image
    (``labels=True``) it has.

    Parameters
    ----------
    zarr_path
        The image group's directory (e.g. ``"image.ome.zarr"``) or a ``zarr.Group``.
    image_id, name
        Default: the directory stem and the directory name (as ome-arrow).
    image_type
        Default: ``"label"`` for label images, else none.
    channel_names
        Override the names from ``omero`` (one per channel).
    acquisition_datetime
        Stored in the record (default: now).
    clamp_to_uint16
        Convert pixels to uint16 (records only). Default: keep the native dtype.
    level
        Resolution level to read (0 = full resolution).
    image_path
        Sub-group holding the image (e.g. ``"0"`` of a bioformats2raw container).
    out, format, mode
        ``None`` returns one OME-Arrow record (the image read in full; for small
        images). A directory writes a dataset (Parquet or Vortex) streaming
        chunk by chunk, never holding the image in memory.
    levels
        Pyramid levels written to the dataset: ``"first"``, ``"all"``, a count
        or level indices.
    labels
        Also write the label images of ``labels/`` (``image_type="label"``,
        ``parent_id`` = this image's id).
    chunk_shape
        ``(Z, Y, X)`` chunk shape of the result (default: the zarr chunks).
    compression, compression_level
        Per-chunk codec of the result.
    progress
        Progress bar for dataset writes (default: for more than 64 chunks).

    Returns
    -------
    pyarrow.StructScalar or Dataset

    Example
    -------
    >>> rec = omeframe.from_ome_zarr("cells.ome.zarr")                          # doctest: +SKIP
    >>> ds = omeframe.from_ome_zarr("cells.ome.zarr", out="ds/", labels=True)   # doctest: +SKIP
    """
    if isinstance(zarr_path, (str, os.PathLike)) and not Path(zarr_path).exists():
        raise FileNotFoundError(f"no such OME-Zarr store: {str(zarr_path)!r}")
    source = open_ome_zarr_source(zarr_path, level=level, image_path=image_path)
    return ingest_source(
        source, out=out, format=format, mode=mode, levels=levels, labels=labels, image_id=image_id,
        name=name, image_type=image_type, channel_names=channel_names,
        acquisition_datetime=acquisition_datetime, clamp_to_uint16=clamp_to_uint16,
        chunk_shape=chunk_shape, compression=compression, compression_level=compression_level,
        progress=progress,
    )


@overload
def from_stack_pattern_path(
    pattern_path: Out, default_dim_for_unspecified: str = ..., map_series_to: str | None = ...,
    clamp_to_uint16: bool = ..., channel_names: Sequence[str] | None = ..., image_id: str | None = ...,
    name: str | None = ..., image_type: str | None = ..., *, out: None = None,
    format: Literal["parquet", "vortex"] | None = ..., chunk_shape: tuple[int, int, int] | None = ...,
    compression: str | None = ..., progress: bool | None = ..., missing: MissingPolicy = ...,
) -> pa.StructScalar: ...
@overload
def from_stack_pattern_path(
    pattern_path: Out, default_dim_for_unspecified: str = ..., map_series_to: str | None = ...,
    clamp_to_uint16: bool = ..., channel_names: Sequence[str] | None = ..., image_id: str | None = ...,
    name: str | None = ..., image_type: str | None = ..., *, out: Out,
    format: Literal["parquet", "vortex"] | None = ..., chunk_shape: tuple[int, int, int] | None = ...,
    compression: str | None = ..., progress: bool | None = ..., missing: MissingPolicy = ...,
) -> Dataset: ...
def from_stack_pattern_path(
    pattern_path: Out,
    default_dim_for_unspecified: str = "C",
    map_series_to: str | None = "T",
    clamp_to_uint16: bool = False,
    channel_names: Sequence[str] | None = None,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    *,
    out: Out | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = DEFAULT_COMPRESSION,
    progress: bool | None = None,
    missing: MissingPolicy = "error",
) -> pa.StructScalar | Dataset:
    """Build an OME-Arrow record (or stream a dataset) from a file pattern describing a stack.

    Parameters
    ----------
    pattern_path
        Path whose file name holds ``<...>`` tokens, e.g.
        ``"imgs/img_C<0-2>_Z<000-009>.tif"`` or ``"imgs/img_<DAPI,GFP>_t<1-3>.tif"``
        (ranges ``a-b``, steps ``a-b:step``, letter ranges, comma lists);
        without tokens, an exact file, a regular expression or a glob whose
        matches stack along Z. See :mod:`omeframe.formats.stack.source` for the rules.
    default_dim_for_unspecified
        Dimension (``"T"``, ``"C"``, ``"Z"``) of tokens with no dimension prefix.
    map_series_to
        Dimension series tokens (``s<..>``, ``series<..>``) map to; ``None``
        rejects them.
    clamp_to_uint16
        Clip and cast pixels to uint16 (off by default: the native dtype is
        kept; ome-arrow 0.1.0 defaults to ``True``). Records only.
    channel_names
        Channel names (default: from a non-numeric channel token, else ``C0..``).
    image_id, name, image_type
        Overrides (defaults: the pattern's stem, the pattern, unset).
    out, format
        Write a chunked dataset at ``out`` (streamed; files read as needed)
        instead of returning a record.
    chunk_shape, compression, progress
        Chunking (default (1, 512, 512)), per-chunk codec and progress bar.
    missing
        ``"error"`` (default): files the pattern names but the folder lacks
        raise ``FileNotFoundError`` listing them. ``"zero"``: they read as
        zero planes (ome-arrow's behaviour).

    Returns
    -------
    pyarrow.StructScalar or Dataset

    Example
    -------
    >>> rec = omeframe.from_stack_pattern_path("imgs/img_C<0-1>_Z<000-004>.tif")   # doctest: +SKIP
    """
    src = StackSource(
        pattern_path, default_dim_for_unspecified, map_series_to, missing=missing,
        channel_names=channel_names, image_id=image_id, name=name,
    )
    return ingest_source(
        src, out=out, format=format, image_type=image_type, clamp_to_uint16=clamp_to_uint16,
        chunk_shape=chunk_shape, compression=compression, progress=progress,
    )
