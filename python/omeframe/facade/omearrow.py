"""The ``OMEArrow`` object (the reference API's class) and ``scan``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.engine.dask_array import DEFAULT_BLOCK_BYTES
from omeframe.engine.derived import PlanSource, is_identity
from omeframe.engine.lazy import LazyImage, PhysicalSize, PlanInfo
from omeframe.engine.predicates import ChunkPredicate
from omeframe.engine.source import HeaderOptions, HeaderOverride, LazySource, SourceLike
from omeframe.formats.array.source import RecordSource
from omeframe.formats.dataset.ingest import to_record
from omeframe.formats.record.arrays import from_numpy
from omeframe.formats.record.decode import to_dict, to_numpy
from omeframe.formats.record.files import read_record
from omeframe.formats.record.source import build_record
from omeframe.formats.record.tables import to_ome_parquet, to_ome_vortex
from omeframe.formats.tiff.source import open_tiff_source
from omeframe.formats.tiff.writer import to_ome_tiff
from omeframe.formats.zarr.writer import to_ome_zarr
from omeframe.model.arrow import DEFAULT_COLUMN_NAME
from omeframe.model.checks import is_integer
from omeframe.model.errors import SchemaError
from omeframe.model.header import ImageHeader
from omeframe.model.record import RecordView, as_record_scalar
from omeframe.ops.describe import describe_ome_arrow
from omeframe.ops.display import image_html
from omeframe.ops.slicing import crop_selection, slice_ome_arrow
from omeframe.ops.tensor_spec import ViewSpec
from omeframe.ops.tensor_view import LazyTensorView, TensorView
from omeframe.ops.view import view_matplotlib
from omeframe.ops.view3d import view_pyvista
from omeframe.registry import OpenOptions, detect, open_source


def _as_tcz(tcz: Any) -> tuple[int, int, int]:
    """``tcz`` as a tuple of three non-negative ints; a clear error for anything else."""
    if (
        isinstance(tcz, (str, bytes)) or not isinstance(tcz, (tuple, list)) or len(tcz) != 3
        or not all(is_integer(v) and int(v) >= 0 for v in tcz)
    ):
        raise ValueError(f"tcz must be a (t, c, z) plane index of three non-negative ints, got {tcz!r}")
    return int(tcz[0]), int(tcz[1]), int(tcz[2])


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
        self.tcz = _as_tcz(tcz)
        if image_type is not None and not isinstance(image_type, str):
            raise TypeError(f"image_type must be a string (or None), got {type(image_type).__name__} {image_type!r}")
        self._source: str | None = None
        self._plan: LazyImage | None = None
        self._data: pa.StructScalar | None = None
        self._image_type = image_type
        if lazy:
            self._plan = LazyImage(
                open_source(data, column_name=column_name, row_index=row_index, dim_order=dim_order)
            )
            self._source = str(data) if isinstance(data, (str, os.PathLike)) else None
            self._check_tcz()
            return
        options = OpenOptions(column_name=column_name, row_index=row_index, dim_order=dim_order)
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            self._source = str(path)
            if not path.exists():
                raise FileNotFoundError(f"no such file: {str(path)!r}")
            entry = detect(path)
            entry.check(str(path), options)  # no option it would not read (dim_order= on a table ...)
            if entry.name == "tiff":
                with open_tiff_source(path) as tiff:
                    self._set_data(to_record(tiff, header=HeaderOptions(image_type=image_type)))
                self._check_tcz()
                return
            if entry.name != "record-table":
                raise ValueError(
                    f"OMEArrow({str(path)!r}) reads record tables (.parquet / .vortex) and TIFF "
                    f"files, not {entry.description}; use OMEArrow.scan(path) (lazy) and .collect()"
                )
            scalar, _, _ = read_record(path, column_name=column_name, row_index=row_index)
        elif isinstance(data, np.ndarray):
            options.check(frozenset({"dim_order"}), "a numpy array")
            scalar = from_numpy(data, dim_order=dim_order, image_type=image_type)
        else:
            options.check(frozenset(), f"a {type(data).__name__} (an OME-Arrow record)")
            scalar = as_record_scalar(data)
        self._set_data(scalar)
        self._check_tcz()

    def _set_data(self, scalar: pa.StructScalar) -> None:
        it = self._image_type
        if it is not None and RecordView(scalar).header("image_type") != it:
            scalar = _with_field(scalar, "image_type", it)
        self._data = scalar

    def _check_tcz(self) -> None:
        """The default plane ``tcz`` lies inside the image (``ValueError`` naming its sizes)."""
        t, c, z = self.tcz
        st, sc, sz = self.shape[:3]
        if t >= st or c >= sc or z >= sz:
            raise ValueError(f"tcz={self.tcz} is outside the image: T={st}, C={sc}, Z={sz} (indices from 0)")

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
        An option ``data`` does not read (``image_id=`` for a record table,
        ``dim_order=`` for an OME-Zarr group ...) raises ``ValueError``
        naming the options it takes, rather than being ignored.
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
        obj.tcz = _as_tcz(tcz)
        obj._source = None
        obj._plan = plan
        obj._data = None
        obj._image_type = image_type
        return obj

    @classmethod
    def _from_record(
        cls, scalar: pa.StructScalar, *, tcz: tuple[int, int, int] = (0, 0, 0), image_type: str | None = None
    ) -> OMEArrow:
        obj = cls.__new__(cls)
        obj.tcz = _as_tcz(tcz)
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

    @property
    def ndim(self) -> int:
        """Always 5 (TCZYX)."""
        return 5

    @property
    def header(self) -> ImageHeader:
        """The image's header (ids, channels, physical sizes), from metadata only.

        Example
        -------
        >>> omeframe.scan("big.ome.tif").header.channels[0].name    # doctest: +SKIP
        'DAPI'
        """
        h = self._lazy().header
        it = self._image_type
        return h if it is None else replace(h, image_type=it)

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Channel names, from metadata only (a lazy image reads no pixels)."""
        return self._lazy().channel_names

    @property
    def physical_sizes(self) -> dict[str, PhysicalSize]:
        """Pixel size per axis ``{"z", "y", "x"}`` as ``PhysicalSize(value, unit)`` (no pixel read)."""
        return self._lazy().physical_sizes

    @property
    def levels(self) -> tuple[OMEArrow, ...]:
        """This image (or plan) at every pyramid level of its source, full resolution first.

        See :attr:`omeframe.LazyImage.levels`; nothing is read.
        """
        return tuple(
            OMEArrow._from_plan(p, tcz=self.tcz, image_type=self._image_type) for p in self._lazy().levels
        )

    def __getitem__(self, key: Any) -> OMEArrow:
        """``img[t, c, z, y0:y1, x0:x1]``: a lazy selection (see :meth:`omeframe.LazyImage.__getitem__`).

        Example
        -------
        >>> roi = omeframe.scan("slides/", image_id="s1")[0, :, 0, :512, :512]   # doctest: +SKIP
        """
        return OMEArrow._from_plan(self._lazy()[key], tcz=self.tcz, image_type=self._image_type)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(img)``: the TCZYX pixels (a lazy plan is read, within the memory limit)."""
        if self._plan is None:
            if copy is False:
                raise ValueError("np.asarray(img, copy=False): a record's pixels are decoded, never shared")
            out = to_numpy(self.data)
            return out if dtype is None else out.astype(dtype, copy=False)
        return self._plan.__array__(dtype, copy)

    def zarr_store(self, level: int = 0) -> Any:
        """A read-only zarr v3 store of one pyramid level (the array at the store's root).

        Any zarr v3 reader reads the image in place: unchanged dataset images
        serve their stored chunks (zstd or raw) by byte range; anything else
        serves decoded chunks. See ``docs/howto/viewing.md``.

        Returns
        -------
        omeframe.formats.zarr.view.ZarrView
            A :class:`zarr.abc.store.Store`; writes raise ``ValueError``.

        Example
        -------
        >>> import zarr
        >>> arr = zarr.open_array(omeframe.scan("slides/", image_id="s1").zarr_store(), mode="r")  # doctest: +SKIP
        >>> arr[0, 0, 0, :256, :256].shape                                                          # doctest: +SKIP
        (256, 256)
        """
        from omeframe.formats.zarr.view import zarr_view  # lazy: zarr

        return zarr_view(self._lazy(), level)

    def zarr_group(self) -> Any:
        """The image as a read-only OME-Zarr 0.5 ``zarr.Group``: one array per pyramid level.

        ``group.store`` is the :class:`~omeframe.formats.zarr.view.ZarrView`
        to hand to other tools (``ome-zarr-models``, napari-ome-zarr ...).

        Example
        -------
        >>> g = omeframe.scan("slides/", image_id="s1").zarr_group()      # doctest: +SKIP
        >>> g.attrs["ome"]["multiscales"][0]["datasets"][1]["path"]        # doctest: +SKIP
        '1'
        """
        import zarr  # lazy: zarr

        from omeframe.formats.zarr.view import zarr_group_view  # lazy: zarr

        return zarr.open_group(zarr_group_view(self._lazy(), self.header), mode="r")

    def info(self) -> dict[str, Any]:
        """Describe the image: shape, kind, channels, dtype (no pixel read when lazy)."""
        if self._plan is not None:
            return _describe_shape(self.shape, self.dtype)
        return describe_ome_arrow(self.data)

    def __repr__(self) -> str:
        src = f" from {self._source!r}" if self._source else ""
        lazy = " (lazy)" if self.is_lazy else ""
        return f"<OMEArrow{lazy} {self.info()['summary']}{src}>"

    def _repr_html_(self) -> str:
        """Notebook display: a bounded thumbnail, shape, dtype, channels, sizes, levels, read cost.

        The thumbnail comes from the coarsest pyramid level and reads at most
        4 MiB (see :mod:`omeframe.ops.display`); the whole display is a few KB.
        """
        title = "OMEArrow (lazy plan)" if self.is_lazy else "OMEArrow"
        return image_html(self._lazy(), title + (f" from {self._source}" if self._source else ""), lazy=self.is_lazy)

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

    def to_dask(self, block_bytes: int | None = DEFAULT_BLOCK_BYTES) -> Any:
        """The image (or the plan's selection) as a TCZYX ``dask.array`` whose blocks are whole stored chunks.

        Neighbouring chunks are merged into blocks of about ``block_bytes``
        (default 16 MiB, still aligned with them); ``None`` gives one block
        per stored chunk.

        Example
        -------
        >>> omeframe.scan("slides/", image_id="a").to_dask().mean().compute()   # doctest: +SKIP
        """
        return self._lazy().to_dask(block_bytes)

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

    def select(
        self, *, t: Any = None, c: Any = None, z: Any = None, y: Any = None, x: Any = None,
        x_um: Any = None, y_um: Any = None, z_um: Any = None,
    ) -> OMEArrow:
        """A lazy plan narrowed to the given indices (int, slice or sequence; order kept).

        ``y``/``x`` take half-open ``(start, stop)`` ranges. Coordinates are
        those of this plan's result. ``x_um``/``y_um``/``z_um`` take
        ``(start, stop)`` in micrometres instead (see
        :meth:`omeframe.engine.lazy.LazyImage.select`).
        """
        plan = self._lazy().select(t=t, c=c, z=z, y=y, x=x, x_um=x_um, y_um=y_um, z_um=z_um)
        return OMEArrow._from_plan(plan, tcz=self.tcz, image_type=self._image_type)

    def at_resolution(self, mpp: float) -> OMEArrow:
        """A lazy plan of the same region at ``mpp`` micrometres per pixel (level chosen for you).

        See :meth:`omeframe.engine.lazy.LazyImage.at_resolution`.

        Example
        -------
        >>> omeframe.scan("slide.ome.tif").select(x_um=(0, 500), y_um=(0, 500)).at_resolution(2.0)  # doctest: +SKIP
        """
        return OMEArrow._from_plan(self._lazy().at_resolution(mpp), tcz=self.tcz, image_type=self._image_type)

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
        # the eager slice's rules (no negative indices, sorted and de-duplicated index sets)
        crop = crop_selection(self._plan.shape, x_min, x_max, y_min, y_max, t_indices, c_indices, z_indices)
        plan = self._plan.select(t=crop.t, c=crop.c, z=crop.z, y=crop.y, x=crop.x)
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
        if not isinstance(how, str):
            raise TypeError(f"how must be the name of an export format, got {type(how).__name__} {how!r}")
        kind = how.lower().replace("_", "-")
        if kind in ("numpy", "dict", "scalar") and out is not None:
            raise ValueError(
                f"export(how={how!r}) returns the image in memory; out= is for the formats that write files "
                "('parquet', 'vortex', 'ome-tiff', 'ome-zarr'): drop out= or pick one of them"
            )
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
        c: int | None = None,
        downsample: int = 1,
        opacity: str | float = "sigmoid",
        clim: tuple[float, float] | None = None,
        show_axes: bool = True,
        scaling_values: tuple[float, float, float] | None = None,
    ) -> Any:
        """Render one ``(t, c, z)`` plane with Matplotlib, or a channel's volume with PyVista.

        ``how="matplotlib"`` returns ``(figure, axes, image)`` and uses
        ``tcz``, ``autoscale``, ``vmin``, ``vmax`` and ``cmap``.
        ``how="pyvista"`` returns a ``pyvista.Plotter`` (see
        :func:`omeframe.view_pyvista`) of time point ``tcz[0]`` and channel
        ``c`` (``tcz[1]`` when ``None``), using ``downsample``, ``opacity``,
        ``clim``, ``show_axes`` and ``scaling_values`` (Z, Y, X); a lazy plan
        reads only that channel.
        """
        if how not in ("matplotlib", "pyvista"):
            raise ValueError(f"unsupported view backend {how!r}; available: 'matplotlib', 'pyvista'")
        t, cc, z = tcz or self.tcz
        if how == "pyvista":
            return view_pyvista(
                self, c=cc if c is None else c, downsample=downsample, scaling_values=scaling_values,
                opacity=opacity, clim=clim, show_axes=show_axes, show=show, t=t,
            )
        data = self.data if self._plan is None else self.select(t=[t], c=[cc], z=[z]).data
        if self._plan is not None:
            t = cc = z = 0
        return view_matplotlib(data, (t, cc, z), autoscale=autoscale, vmin=vmin, vmax=vmax, cmap=cmap, show=show)


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
