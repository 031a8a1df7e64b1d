"""Lazy TIFF / OME-TIFF sources read tile by tile (or strip group by strip group).

:func:`open_tiff_source` opens one series (scene) of a TIFF file with
``tifffile`` and describes its pixels as pieces without reading any:

* **tiled pages**: one piece per tile (and per sample when samples are
  interleaved), so a region read decodes only the tiles it touches;
* **stripped pages**: one piece per group of consecutive strips of about
  256 rows (at most ~4 MiB raw); uncompressed strips are cut at any row, so a
  single-strip 2 GiB image is still read a few MiB at a time;
* stored bytes per piece come from the ``TileByteCounts`` /
  ``StripByteCounts`` tags, so ``explain()`` reports what a read costs.

Segments are read with one ``pread``-like call under a lock and decoded with
``tifffile``'s own segment decoders outside it (in the shared thread pool).

Axes. ``tifffile`` axes map to TCZYX by name; ``S`` (samples, e.g. RGB)
becomes ``C`` when there is no ``C`` axis, and is merged with it otherwise
(``c = c_file * S + s``). Generic sequence axes (``I``, ``Q`` and the other
non-TCZYX codes) of length > 1 take the free axes in the order Z, T, C (one
generic axis is Z, like a 3-D array); length-1 axes are dropped. Anything that
cannot be mapped raises :class:`~omeframe.SchemaError` naming the axes.

Metadata. The header comes from the OME-XML when present (channel names,
colours, wavelengths in µm, physical sizes with their units, acquisition
date), else from ImageJ metadata (``spacing``, ``unit``, LUT colours) and the
resolution tags (read as declared: 72 dpi is 352.78 µm per pixel), else
defaults. **OME-XML that disagrees with the pixel data** (sizes that differ
from the IFD shapes, planes it declares that the file does not hold) is
reported with an :class:`~omeframe.formats.tiff.omexml.OMEXMLMismatchWarning`;
omeframe always follows the pixel data: missing planes read as zeros (as in
``tifffile``), physical sizes and the acquisition date are kept, channel
metadata is used only when its channel count matches.

Errors. Unreadable files raise :class:`~omeframe.CorruptFileError`; pixels
whose compression no installed codec decodes raise
:class:`UnsupportedTiffCompressionError` (naming the file and the
compression) when read, or :class:`TiffCodecNotInstalledError` (also an
:class:`~omeframe.OptionalDependencyError`) when the codec is one that
``imagecodecs``, the extra ``omeframe[tiff]``, would provide; truncated or corrupt segments raise
``CorruptFileError`` naming the file, page and segment.

Only ``tifffile``'s public API is used (``series.shape``/``.axes``,
``series.dataoffset``, ``TiffPage.decode``...), so the source works with the
releases Python 3.11 gets and with 2026.11+, which dropped
``TiffPageSeries.get_shape``/``get_axes``.

The file stays open while the source (or any of its pyramid levels) is alive;
``close()`` or a ``with`` block closes it, and a ``weakref`` finalizer closes it
when the last source is garbage-collected (no ``ResourceWarning``).
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from omeframe.engine.cache import shared_cache
from omeframe.engine.pieces import Pieces, make_pieces
from omeframe.engine.source import LazySource
from omeframe.formats.tiff.omexml import (
    OmeImage,
    OMEXMLMismatchWarning,
    header_channels,
    normalize_length_unit,
    parse_datetime,
    parse_ome_xml,
)
from omeframe.model.checks import is_integer
from omeframe.model.errors import (
    CorruptFileError,
    OmeframeError,
    OptionalDependencyError,
    SchemaError,
    reraise_access_error,
)
from omeframe.model.header import Channel, ImageHeader, default_channels
from omeframe.storage.remote import open_remote_file
from omeframe.storage.url import local_path

__all__ = [
    "TiffSource",
    "open_tiff_source",
    "list_tiff_series",
    "UnsupportedTiffCompressionError",
    "TiffCodecNotInstalledError",
    "imagecodecs_installed",
]

#: What to install for the TIFF codecs that tifffile takes from imagecodecs.
TIFF_EXTRA_HINT = "pip install 'omeframe[tiff]' (or pip install imagecodecs)"

#: Target size of a strip-group piece (rows are added while under this).
_STRIP_PIECE_BYTES = 4 << 20
_STRIP_PIECE_ROWS = 256

_SAMPLE_COLORS = (0xFF0000FF, 0x00FF00FF, 0x0000FFFF, 0xFFFFFFFF)



def _unit_of(phys: dict[str, float | None], units: dict[str, str | None], axis: str) -> str | None:
    """The unit of a pixel size the file gives (``None`` when the size or its unit is not given)."""
    return units.get(axis) if phys.get(axis) is not None else None

class UnsupportedTiffCompressionError(OmeframeError, ValueError):
    """A TIFF's pixels use a compression that no installed codec can decode."""


class TiffCodecNotInstalledError(UnsupportedTiffCompressionError, OptionalDependencyError):
    """A TIFF's compression needs ``imagecodecs`` (the extra ``omeframe[tiff]``), which is not installed."""


def imagecodecs_installed() -> bool:
    """Whether ``imagecodecs``, tifffile's codec package (zstd, LZW, JPEG...), can be imported.

    Example
    -------
    >>> isinstance(imagecodecs_installed(), bool)
    True
    """
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------
# the open file, shared by a series' levels
# ---------------------------------------------------------------------------
class _TiffHandle:
    """One open ``tifffile.TiffFile``, closed when its last user is gone."""

    def __init__(self, path: Path, fileobj: Any = None) -> None:
        import tifffile

        self.path = path
        self.lock = threading.RLock()
        self.users = 0
        self.closed = False
        try:
            # A remote file: tifffile reads it through the file-object protocol (ranged GETs).
            self.tf = tifffile.TiffFile(fileobj, name=path.name) if fileobj is not None else tifffile.TiffFile(
                str(path)
            )
        except tifffile.TiffFileError as exc:
            raise CorruptFileError(f"{str(path)!r} is not a readable TIFF file: {exc}") from exc
        except (ValueError, EOFError, OSError, IndexError, KeyError, struct.error) as exc:
            reraise_access_error(exc)  # gone, denied, changed since opened: not damage
            raise CorruptFileError(f"{str(path)!r} is not a readable TIFF file ({type(exc).__name__}: {exc})") from exc
        try:
            self.series = list(self.tf.series)
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types on broken files
            self.tf.close()
            reraise_access_error(exc)
            raise CorruptFileError(
                f"{str(path)!r}: cannot parse the TIFF image series ({type(exc).__name__}: {exc})"
            ) from exc
        self._ome: list[OmeImage] | None | bool = False  # False: not parsed yet

    def levels(self, index: int) -> list[Any]:
        """Pyramid levels of series ``index``: tifffile's, or reduced series that follow it.

        ``tifffile`` does not merge every multi-series pyramid (e.g. reduced
        pages whose shaped metadata name other axes); series right after this
        one that are reduced-resolution copies of it (``NewSubfileType``
        reduced, same dtype, pages and samples, smaller Y/X) become its levels.
        """
        series = self.series
        base = series[index]
        levels = list(base.levels)
        if len(levels) > 1 or base.keyframe.is_reduced:
            return levels
        kf = base.keyframe
        frames = _frame_count(base)
        for cand in series[index + 1 :]:
            ck = cand.keyframe
            last = levels[-1].keyframe
            if not (
                ck.is_reduced
                and cand.dtype == base.dtype
                and _frame_count(cand) == frames
                and (ck.shaped[0], ck.shaped[1], ck.shaped[4]) == (kf.shaped[0], kf.shaped[1], kf.shaped[4])
                and ck.imagelength <= last.imagelength
                and ck.imagewidth <= last.imagewidth
                and (ck.imagelength, ck.imagewidth) != (last.imagelength, last.imagewidth)
            ):
                break
            levels.extend(cand.levels)
        return levels

    def acquire(self) -> None:
        with self.lock:
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users <= 0:
                self.close()

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.tf.close()

    def ome_images(self) -> list[OmeImage] | None:
        if self._ome is False:
            xml = self.tf.ome_metadata if self.tf.is_ome else None
            images = None
            if xml:
                try:
                    images = parse_ome_xml(xml)
                except SchemaError as exc:
                    warnings.warn(
                        f"{str(self.path)!r}: ignoring OME-XML that cannot be parsed ({exc})",
                        OMEXMLMismatchWarning,
                        stacklevel=4,
                    )
            self._ome = images
        return self._ome  # type: ignore[return-value]


def _frame_count(series: Any) -> int:
    kf = series.keyframe
    size = max(1, int(math.prod(kf.shaped)))
    return int(math.prod(series.shape)) // size


def _level_map(base: _AxisMap, series: Any, base_series: Any, label: str) -> _AxisMap:
    """The axis map of a pyramid level: the base's TCZ mapping with the level's Y/X."""
    kf, bk = series.keyframe, base_series.keyframe
    if (kf.shaped[0], kf.shaped[1], kf.shaped[4]) != (bk.shaped[0], bk.shaped[1], bk.shaped[4]) or _frame_count(
        series
    ) != _frame_count(base_series):
        raise SchemaError(
            f"{label}: the pyramid level has pages {kf.shaped} x {_frame_count(series)}, which do not match "
            f"the full-resolution pages {bk.shaped} x {_frame_count(base_series)}"
        )
    st, sc, sz, _, _ = base.shape
    return _AxisMap((st, sc, sz, int(kf.shaped[2]), int(kf.shaped[3])), base.lead_sizes, base.assign, series.axes)


# ---------------------------------------------------------------------------
# axes
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dim:
    letter: str
    size: int
    kind: str  # "frame" | "sample" | "depth"
    pos: int  # index among the leading (frame) axes for frames


@dataclass(frozen=True)
class _AxisMap:
    shape: tuple[int, int, int, int, int]
    lead_sizes: tuple[int, ...]
    assign: dict[str, tuple[_Dim, ...]]  # canonical T/C/Z -> dims (C may be (C, S))
    file_axes: str


def _map_axes(series: Any, label: str) -> _AxisMap:
    kf = series.keyframe
    # tifffile's public (default, squeezed) shape and axes: length-1 axes other than
    # Y and X may be dropped, which changes neither the page split nor the mapping.
    shape = tuple(int(s) for s in series.shape)
    axes = str(series.axes).upper()
    sep, depth, length, width, contig = (int(v) for v in kf.shaped)
    size = sep * depth * length * width * contig
    if size == 0:
        raise SchemaError(f"{label}: the image is empty (page shape {kf.shaped})")
    split = None
    p = 1
    for j in range(len(shape) - 1, -1, -1):
        p *= shape[j]
        if p == size:
            split = j
            break
    if split is None:
        raise SchemaError(f"{label}: series shape {shape} ({axes}) does not match its page shape {kf.shape}")
    lead = list(zip(axes[:split], shape[:split], strict=True))
    trail = list(zip(axes[split:], shape[split:], strict=True))
    samples = sep * contig
    s_letter, d_letter = "S", "Z"
    others = [(a, n) for a, n in trail if a not in "YX" and n > 1]
    if samples > 1:
        cand = [a for a, n in others if n == samples]
        s_letter = "S" if "S" in cand or not cand else cand[0]
    if depth > 1:
        cand = [a for a, n in others if n == depth and a != s_letter]
        d_letter = "Z" if "Z" in cand or not cand else cand[0]
    dims = [_Dim(a, n, "frame", i) for i, (a, n) in enumerate(lead) if n > 1]
    if depth > 1:
        dims.append(_Dim(d_letter, depth, "depth", -1))
    if samples > 1:
        dims.append(_Dim(s_letter, samples, "sample", -1))
    assign: dict[str, list[_Dim]] = {}
    generic: list[_Dim] = []
    sample_like: list[_Dim] = []
    for d in dims:
        if d.letter in "TCZ":
            assign.setdefault(d.letter, []).append(d)
        elif d.letter == "S":
            sample_like.append(d)
        else:
            generic.append(d)
    for d in sample_like:
        assign.setdefault("C", []).append(d)
    dup = {a: ds for a, ds in assign.items() if len(ds) > 1 and not (a == "C" and len(ds) == 2 and ds[1].letter == "S")}
    if dup:
        a, ds = next(iter(dup.items()))
        raise SchemaError(
            f"{label}: TIFF axes {series.axes!r} (shape {shape}) map "
            f"{[d.letter for d in ds]} to the same axis {a}; omeframe cannot represent this as TCZYX"
        )
    free = [a for a in "TCZ" if a not in assign]
    if len(generic) > len(free):
        raise SchemaError(
            f"{label}: TIFF axes {series.axes!r} (shape {shape}) have "
            f"{len(generic)} non-TCZYX axes {[d.letter for d in generic]} of length > 1 but only "
            f"{len(free)} free TCZ axes ({free}) to map them to"
        )
    if len(generic) == 1:
        target = next(a for a in ("Z", "T", "C") if a in free)
        assign[target] = [generic[0]]
    else:
        for d, a in zip(generic, free[len(free) - len(generic):], strict=True):
            assign[a] = [d]
    for a, ds in assign.items():
        for d in ds:
            if d.kind == "depth" and a != "Z":
                raise SchemaError(f"{label}: the volumetric page depth axis {d.letter!r} cannot be mapped to Z")
    sizes = {a: math.prod(d.size for d in assign.get(a, ())) for a in "TCZ"}
    return _AxisMap(
        (sizes["T"], sizes["C"], sizes["Z"], length, width),
        tuple(n for _, n in lead),
        {a: tuple(ds) for a, ds in assign.items()},
        str(series.axes),
    )


# ---------------------------------------------------------------------------
# decoded-segment cache
# ---------------------------------------------------------------------------
#: Per-pixel-source tokens: segment keys of the shared cache are
#: ``("tiff", token, frame, sample, segment)``.
_TOKENS = itertools.count()


def _segment_nbytes(value: np.ndarray | None) -> int:
    return 0 if value is None else int(value.nbytes)


# ---------------------------------------------------------------------------
# the source
# ---------------------------------------------------------------------------
def _compression_name(code: int) -> str:
    try:
        from tifffile import COMPRESSION

        return f"{COMPRESSION(code).name} ({int(code)})"
    except Exception:  # noqa: BLE001 - unknown codes
        return f"unknown code {int(code)}"


class TiffSource(LazySource):
    """One series (scene) and pyramid level of a TIFF / OME-TIFF file, read lazily."""

    def __init__(self, handle: _TiffHandle, series: int = 0, level: int = 0) -> None:
        super().__init__()
        self._handle = handle
        self.path = handle.path
        self.series_index = int(series)
        self.level = int(level)
        base = handle.series[self.series_index]
        self._base = base
        self._all_levels = handle.levels(self.series_index)
        self._series = self._all_levels[self.level]
        self._label = f"{str(self.path)!r} series {self.series_index}" + (f" level {self.level}" if self.level else "")
        self._base_map = _map_axes(base, self._label)
        self._map = self._base_map if self.level == 0 else _level_map(self._base_map, self._series, base, self._label)
        kf = self._series.keyframe
        self._kf = kf
        self._tiled = bool(kf.is_tiled)
        self._header: ImageHeader | None = None
        self._levels: list[LazySource] | None = None
        comp = _compression_name(int(kf.compression))
        if self._tiled:
            tile = "x".join(str(int(v)) for v in (kf.tile or ()))
            layout = f"tiles {tile}"
        else:
            layout = f"strips of {min(int(kf.rowsperstrip), int(kf.imagelength))} rows"
        self.describe = f"TIFF {self._label} ({layout}, {comp})"
        handle.acquire()  # last: a source that failed to build holds nothing
        self._finalizer = weakref.finalize(self, handle.release)

    # ---- lifetime ---------------------------------------------------------
    def close(self) -> None:
        """Close the file (for this source and all its levels)."""
        self._finalizer()
        self._handle.close()

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def __enter__(self) -> TiffSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TiffSource {self._label} TCZYX={self.shape} {self.dtype.name}>"

    # ---- shape & metadata ---------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._map.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self._series.dtype).newbyteorder("=")

    @property
    def series_count(self) -> int:
        """Number of series (scenes) in the file."""
        return len(self._handle.series)

    @property
    def file_axes(self) -> str:
        """The series' axes as ``tifffile`` names them (its ``series.axes``)."""
        return self._map.file_axes

    def chunk_shape(self) -> tuple[int, int, int]:
        """Chunks for materialising: whole tiles, grouped to at least 256x256 (strips: 512x512)."""
        _, _, sz, sy, sx = self.shape
        kf = self._kf
        if self._tiled:
            th, tw = int(kf.tilelength), int(kf.tilewidth)
            th, tw = th * max(1, 256 // th), tw * max(1, 256 // tw)
            return (min(int(kf.tiledepth), sz) if kf.imagedepth > 1 else 1, min(th, sy), min(tw, sx))
        return (1, min(512, sy), min(512, sx))

    def levels(self) -> list[LazySource]:
        """Pyramid levels of the series (SubIFDs or multi-series pyramids), this level first."""
        if self._levels is None:  # the coarser levels only: no reference cycle through self
            self._levels = [
                TiffSource(self._handle, self.series_index, k) for k in range(self.level + 1, len(self._all_levels))
            ]
        return [self, *self._levels]

    def header(self) -> ImageHeader:
        if self._header is None:
            if self.level == 0:
                self._header = self._read_header()
            else:
                base = TiffSource(self._handle, self.series_index, 0)
                h = base.header()
                fy = base.shape[3] / max(1, self.shape[3])
                fx = base.shape[4] / max(1, self.shape[4])
                self._header = replace(
                    h,
                    physical_size_x=None if h.physical_size_x is None else h.physical_size_x * fx,
                    physical_size_y=None if h.physical_size_y is None else h.physical_size_y * fy,
                )
                base.close_quietly()
        return self._header

    def close_quietly(self) -> None:
        """Release this source's hold on the file without closing it for others."""
        self._finalizer()

    def _read_header(self) -> ImageHeader:
        tf = self._handle.tf
        p = self.path
        st, sc, sz, sy, sx = self.shape
        multi = len(self._handle.series) > 1
        low = p.name.lower()
        image_id = p.name[: low.rindex(".ome.")] if low.endswith((".ome.tif", ".ome.tiff", ".ome.btf")) else p.stem
        if multi and self.series_index > 0:
            image_id = f"{image_id}_s{self.series_index}"
        name = p.name
        channels: list[Channel] | None = None
        phys: dict[str, float | None] = {}
        units: dict[str, str | None] = {}
        acq: datetime | None = None
        c_letters = "".join(d.letter for d in self._map.assign.get("C", ()))
        rgb = self._kf.photometric == 2 and sc in (3, 4) and "S" in c_letters
        ome_imgs = self._handle.ome_images()
        if ome_imgs:
            img = self._ome_image(ome_imgs)
            if img is not None:
                if img.name and multi:
                    name = img.name
                elif img.name and not img.name.startswith("Image"):
                    name = img.name
                self._check_ome(img)
                channels = header_channels(img, sc, rgb=rgb)
                phys = dict(img.physical_size)
                units = dict(img.physical_size_unit)
                acq = img.acquisition_datetime
        elif tf.is_imagej and tf.imagej_metadata is not None:
            ij = tf.imagej_metadata
            unit = normalize_length_unit(ij.get("unit")) if ij.get("unit") not in (None, "pixel", "pixels") else None
            rx, ry = self._resolution()
            if rx is not None and ry is not None:
                phys["x"], phys["y"] = 1.0 / rx, 1.0 / ry
                units["x"] = units["y"] = unit
            if ij.get("spacing"):
                try:
                    phys["z"] = float(ij["spacing"])
                    units["z"] = unit
                except (TypeError, ValueError):
                    pass
            luts = ij.get("LUTs")
            if luts is not None and len(luts) == sc:
                channels = list(default_channels(None, sc))
                for i, lut in enumerate(luts):
                    lut = np.asarray(lut)
                    if lut.shape[:1] == (3,) and lut.shape[-1] >= 1:
                        r, g, b = (int(v) >> (8 if lut.dtype.itemsize > 1 else 0) for v in lut[:, -1])
                        channels[i] = replace(channels[i], color_rgba=(r << 24) | (g << 16) | (b << 8) | 0xFF)
        else:
            ps = self._resolution_um()
            if ps is not None:
                phys["x"], phys["y"] = ps
                units["x"] = units["y"] = "µm"
        if acq is None:
            acq = self._tiff_datetime()
        if channels is None:
            channels = list(default_channels(None, sc))
            if rgb:
                channels = [replace(ch, color_rgba=_SAMPLE_COLORS[i]) for i, ch in enumerate(channels)]
        return ImageHeader(
            image_id=image_id,
            name=name,
            image_type=None,
            acquisition_datetime=acq,
            channels=tuple(channels),
            # a size the file does not give is unknown (None), never 1 µm
            physical_size_x=phys.get("x"),
            physical_size_y=phys.get("y"),
            physical_size_z=phys.get("z"),
            physical_size_x_unit=_unit_of(phys, units, "x"),
            physical_size_y_unit=_unit_of(phys, units, "y"),
            physical_size_z_unit=_unit_of(phys, units, "z"),
        )

    def _ome_image(self, images: list[OmeImage]) -> OmeImage | None:
        series = self._handle.series
        s = self._base
        if s.kind == "ome":
            ome_series = [x for x in series if x.kind == "ome"]
            if len(ome_series) == len(images):
                return images[ome_series.index(s)]
            named = [im for im in images if im.name and im.name == s.name]
            if len(named) == 1:
                return named[0]
        if self.series_index < len(images):
            return images[self.series_index]
        return None

    def _check_ome(self, img: OmeImage) -> None:
        st, sc, sz, sy, sx = self._base_map.shape
        have = {"X": sx, "Y": sy, "Z": sz, "C": sc, "T": st}
        diffs = [(ax, img.sizes[ax], have[ax]) for ax in "XYZCT" if ax in img.sizes and img.sizes[ax] != have[ax]]
        missing = 0
        if not diffs and self._base.kind == "ome":
            try:
                missing = sum(1 for i in range(len(self._base)) if self._base[i] is None)
            except Exception:  # noqa: BLE001
                missing = 0
        if diffs:
            said = ", ".join(f"Size{a}={o}" for a, o, _ in diffs)
            has = ", ".join(f"{a}={h}" for a, _, h in diffs)
            warnings.warn(
                f"{self._label}: the OME-XML says {said} but the pixel data has {has}; omeframe "
                "follows the pixel data (channel metadata is used only if the channel counts agree)",
                OMEXMLMismatchWarning,
                stacklevel=5,
            )
        elif missing:
            warnings.warn(
                f"{self._label}: the OME-XML declares {len(self._base)} planes but {missing} of them are "
                "not in the file; they read as zeros",
                OMEXMLMismatchWarning,
                stacklevel=5,
            )

    def _resolution(self) -> tuple[float | None, float | None]:
        tags = self._kf.tags

        def val(code: int) -> float | None:
            t = tags.get(code)
            if t is None:
                return None
            v = t.value
            try:
                num, den = (v if isinstance(v, tuple) else (v, 1))[:2]
                r = float(num) / float(den)
            except (TypeError, ValueError, ZeroDivisionError):
                return None
            return r if math.isfinite(r) and r > 0 else None

        return val(282), val(283)

    def _resolution_um(self) -> tuple[float, float] | None:
        """Pixel size in µm from XResolution/YResolution in inch or cm units.

        The tags are read as the TIFF specification defines them (pixels per
        ResolutionUnit), as tifffile, BioIO and Bio-Formats read them: a
        72 dpi file has 25400 / 72 = 352.78 µm pixels, even where 72 dpi is an
        image editor's default rather than a property of the specimen. Files
        without a unit (ResolutionUnit 1, tifffile's default) have no size.
        """
        unit_tag = self._kf.tags.get(296)
        if unit_tag is None:
            return None
        per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit_tag.value))  # inch, centimetre
        rx, ry = self._resolution()
        if per_unit is None or rx is None or ry is None:
            return None
        return per_unit / rx, per_unit / ry

    def _tiff_datetime(self) -> datetime | None:
        t = self._kf.tags.get(306)
        return parse_datetime(t.value) if t is not None and isinstance(t.value, str) else None

    # ---- pixels -------------------------------------------------------------
    def _open_pixels(self) -> Pieces:
        if self._handle.closed:
            raise ValueError(f"{self._label}: the TIFF file is closed")
        kf = self._kf
        amap = self._map
        sep, depth, length, width, contig = (int(v) for v in kf.shaped)
        nframes = max(1, math.prod(amap.lead_sizes))
        item = np.dtype(self.dtype).itemsize
        bits = kf.bitspersample
        direct = (
            not self._tiled
            and int(kf.compression) == 1
            and int(kf.predictor) == 1
            and int(getattr(kf, "fillorder", 1)) == 1
            and isinstance(bits, int)
            and bits in (8, 16, 32, 64)
            and bits == item * 8
            and self.dtype.kind in "iuf"
        )
        if not self._tiled and depth > 1:
            raise SchemaError(f"{self._label}: stripped volumetric (ImageDepth > 1) TIFF pages are not supported")

        # ---- segment tables: offsets / byte counts per (frame, segment)
        if self._tiled:
            td, th, tw = int(kf.tiledepth), int(kf.tilelength), int(kf.tilewidth)
            nd, ny, nx = -(-depth // td), -(-length // th), -(-width // tw)
            nseg = sep * nd * ny * nx
        else:
            rps = max(1, min(int(kf.rowsperstrip), length))
            nstrips = -(-length // rps)
            nseg = sep * nstrips
        offsets, counts, pages = self._segment_tables(nframes, nseg)
        self._check_extent(offsets, counts, pages)

        # ---- pieces
        if self._tiled:
            g = np.indices((nframes, sep, nd, ny, nx, contig)).reshape(6, -1).astype(np.int64)
            f, ss, di, yi, xi, cs = g
            seg = ss * (nd * ny * nx) + di * (ny * nx) + yi * nx + xi
            z0, y0, x0 = di * td, yi * th, xi * tw
            ext = np.stack(
                [np.minimum(td, depth - z0), np.minimum(th, length - y0), np.minimum(tw, width - x0)], axis=1
            )
            nbytes = counts[f, seg] // contig
            piece_seg = seg
        else:
            row_bytes = width * contig * item
            target = max(1, min(_STRIP_PIECE_ROWS, _STRIP_PIECE_BYTES // max(1, row_bytes)))
            rows = target if direct else max(1, target // rps) * rps
            ngroups = -(-length // rows)
            g = np.indices((nframes, sep, ngroups, contig)).reshape(4, -1).astype(np.int64)
            f, ss, gi, cs = g
            y0 = gi * rows
            z0 = np.zeros_like(y0)
            x0 = np.zeros_like(y0)
            dy = np.minimum(rows, length - y0)
            ext = np.stack([np.ones_like(y0), dy, np.full_like(y0, width)], axis=1)
            if direct:
                nbytes = dy * width * item
            else:
                per = rows // rps
                padded = np.zeros((nframes, sep, ngroups * per), dtype=np.int64)
                padded[:, :, :nstrips] = counts.reshape(nframes, sep, nstrips)
                grp = padded.reshape(nframes, sep, ngroups, per).sum(axis=3)
                nbytes = grp[f, ss, gi] // contig
            piece_seg = gi
        s_idx = ss if sep > 1 else cs
        origins = np.zeros((len(f), 5), dtype=np.int64)
        lead_idx = np.unravel_index(f, amap.lead_sizes) if amap.lead_sizes else ()
        for col, a in ((0, "T"), (1, "C"), (2, "Z")):
            val = np.zeros(len(f), dtype=np.int64)
            for d in amap.assign.get(a, ()):
                if d.kind == "frame":
                    val = val * d.size + lead_idx[d.pos]
                elif d.kind == "sample":
                    val = val * d.size + s_idx
                else:  # depth: the tile's origin within the page
                    val = val * d.size + z0
            origins[:, col] = val
        origins[:, 3] = y0
        origins[:, 4] = x0

        decode_segment = self._decoder(offsets, counts, pages, direct, nseg)
        # Interleaved samples and strip groups decode a segment once for several
        # pieces: keep decoded segments in the process-wide cache under a token
        # of this pixel source (dropped when the source is collected).
        cache = shared_cache() if (contig > 1 or not self._tiled) else None
        token = next(_TOKENS)
        if cache is not None:
            weakref.finalize(self, cache.discard_prefix, ("tiff", token))
        fr, ssr, sgr, csr = f, ss, piece_seg, cs
        nodata = kf.nodata
        dtype = self.dtype
        if self._tiled:

            def region(i: int) -> np.ndarray | None:
                return decode_segment(int(fr[i]), int(ssr[i]), int(sgr[i]), None)
        else:

            def region(i: int) -> np.ndarray | None:
                r0 = int(sgr[i]) * rows
                return decode_segment(int(fr[i]), int(ssr[i]), r0, min(rows, length - r0))

        def decode(i: int, strict: bool) -> np.ndarray:
            dz, dy_, dx = (int(v) for v in ext[i])
            if cache is not None:
                key = ("tiff", token, int(fr[i]), int(ssr[i]), int(sgr[i]))
                block = cache.get_or_compute(key, lambda: region(i), _segment_nbytes)
            else:
                block = region(i)
            if block is None:  # missing page or segment
                return np.full((dz, dy_, dx), nodata or 0, dtype=dtype)
            return block[:dz, :dy_, :dx, int(csr[i])]

        describe = self.describe
        return make_pieces(
            self.shape, dtype, origins, ext.astype(np.int64), decode, nbytes.astype(np.int64), True, describe,
        )

    def _check_extent(self, offsets: np.ndarray, counts: np.ndarray, pages: list[Any]) -> None:
        """Fail before any read when pixel data lie beyond the end of the file."""
        tf = self._handle.tf
        if any(p is not None and p.parent is not tf for p in pages):
            return  # multi-file series: segments live in other files
        ends = np.where(counts > 0, offsets + counts, 0)
        size = int(tf.filehandle.size)
        if ends.size and int(ends.max()) > size:
            fi, si = np.unravel_index(int(np.argmax(ends)), ends.shape)
            raise CorruptFileError(
                f"{str(self.path)!r} is truncated: page {int(fi)} segment {int(si)} ends at byte "
                f"{int(ends.max())} but the file has {size} bytes"
            )

    def _segment_tables(self, nframes: int, nseg: int) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        series = self._series
        kf = self._kf
        offsets = np.zeros((nframes, nseg), dtype=np.int64)
        counts = np.zeros((nframes, nseg), dtype=np.int64)
        pages: list[Any] = [None] * nframes
        with self._handle.lock:
            # Uncompressed pages stored back to back (tifffile's dataoffset): offsets follow
            # from the first page, without reading every IFD (ImageJ hyperstacks index one).
            contiguous = series.dataoffset is not None and nframes > 1
            if contiguous:
                page0 = series[0]
                o = np.asarray(page0.dataoffsets, dtype=np.int64)[:nseg]
                c = np.asarray(page0.databytecounts, dtype=np.int64)[:nseg]
                step = int(kf.size) * np.dtype(kf.dtype).itemsize
                offsets[:, : len(o)] = o[None, :] + step * np.arange(nframes, dtype=np.int64)[:, None]
                counts[:, : len(c)] = c[None, :]
                pages = [page0] * nframes
            else:
                for fi in range(nframes):
                    try:
                        page = series[fi]
                    except Exception as exc:  # noqa: BLE001 - broken IFD chains
                        reraise_access_error(exc)
                        raise CorruptFileError(
                            f"{self._label}: cannot read page {fi} ({type(exc).__name__}: {exc})"
                        ) from exc
                    if page is None:
                        continue
                    pages[fi] = page
                    o = np.asarray(page.dataoffsets, dtype=np.int64)[:nseg]
                    c = np.asarray(page.databytecounts, dtype=np.int64)[:nseg]
                    offsets[fi, : len(o)] = o
                    counts[fi, : len(c)] = c
        return offsets, counts, pages

    def _decoder(
        self, offsets: np.ndarray, counts: np.ndarray, pages: list[Any], direct: bool, nseg: int
    ) -> Callable[[int, int, int, int | None], np.ndarray | None]:
        kf = self._kf
        handle = self._handle
        label = self._label
        path = str(self.path)
        sep, depth, length, width, contig = (int(v) for v in kf.shaped)
        file_dtype = np.dtype(self._handle.tf.byteorder + np.dtype(kf.dtype).char)
        code = int(kf.compression)
        tiled = self._tiled
        rps = max(1, min(int(kf.rowsperstrip), length)) if not tiled else 0
        nstrips = nseg // sep if not tiled else 0
        row_bytes = width * contig * file_dtype.itemsize

        def read(page: Any, offset: int, count: int, what: str) -> bytes:
            fh = page.parent.filehandle if page is not None else handle.tf.filehandle
            with handle.lock:
                if handle.closed or fh.closed:
                    raise ValueError(f"{label}: the TIFF file is closed")
                fh.seek(offset)
                data = fh.read(count)
            if len(data) != count:
                raise CorruptFileError(
                    f"{path!r}: {what} needs {count} bytes at offset {offset} but the file ends after "
                    f"{len(data)} of them (truncated or corrupt TIFF)"
                )
            return data

        def decode_raw(page: Any, data: bytes, index: int, what: str) -> np.ndarray | None:
            args: dict[str, Any] = {}  # edge tiles come back cropped to the image
            jt = getattr(page, "jpegtables", None)
            if jt is not None:
                args["jpegtables"] = jt
            if getattr(kf, "jpegheader", None) is not None:
                args["jpegheader"] = kf.jpegheader
            try:
                arr, _, _ = kf.decode(data, index, **args)
            except (ValueError, NotImplementedError, KeyError, ImportError) as exc:
                if _unsupported(code, exc) and not imagecodecs_installed():
                    raise TiffCodecNotInstalledError(
                        f"{path!r}: pixels compressed with TIFF compression {_compression_name(code)} need the "
                        f"imagecodecs package, which is not installed ({type(exc).__name__}: {exc}); "
                        f"install it with {TIFF_EXTRA_HINT}"
                    ) from exc
                if _unsupported(code, exc):
                    raise UnsupportedTiffCompressionError(
                        f"{path!r}: cannot decode pixels compressed with TIFF compression "
                        f"{_compression_name(code)}: {exc} (no codec for it in tifffile/imagecodecs here)"
                    ) from exc
                raise CorruptFileError(f"{path!r}: {what} cannot be decoded ({type(exc).__name__}: {exc})") from exc
            except Exception as exc:  # noqa: BLE001 - codec errors have many types
                reraise_access_error(exc)
                raise CorruptFileError(f"{path!r}: {what} cannot be decoded ({type(exc).__name__}: {exc})") from exc
            return arr  # None: tifffile found no pixels in the segment

        def segment(fi: int, ss: int, a: int, nrows: int | None) -> np.ndarray | None:
            page = pages[fi]
            if page is None:
                return None
            if tiled:
                off, cnt = int(offsets[fi, a]), int(counts[fi, a])
                what = f"page {fi} tile {a}"
                if off <= 0 or cnt <= 0:
                    return None
                arr = decode_raw(page, read(page, off, cnt, what), a, what)
                return arr  # (depth, length, width, contig)
            # strips: rows [a, a + nrows) of separate sample ss
            assert nrows is not None
            out = np.empty((1, nrows, width, contig), dtype=file_dtype)
            r = a
            while r < a + nrows:
                j = r // rps
                s0 = j * rps
                r1 = min(a + nrows, s0 + rps, length)
                idx = ss * nstrips + j
                off, cnt = int(offsets[fi, idx]), int(counts[fi, idx])
                what = f"page {fi} strip {idx}"
                if off <= 0 or cnt <= 0:
                    out[0, r - a : r1 - a] = kf.nodata or 0
                elif direct:
                    data = read(page, off + (r - s0) * row_bytes, (r1 - r) * row_bytes, what)
                    out[0, r - a : r1 - a] = np.frombuffer(data, file_dtype).reshape(r1 - r, width, contig)
                else:
                    raw = decode_raw(page, read(page, off, cnt, what), idx, what)
                    if raw is None:
                        raise CorruptFileError(f"{path!r}: {what} decodes to no pixels (truncated or corrupt TIFF)")
                    arr = np.asarray(raw).reshape(-1, width, contig)
                    need = min(s0 + rps, length) - s0
                    if arr.shape[0] < need:
                        raise CorruptFileError(
                            f"{path!r}: {what} decodes to {arr.shape[0]} rows, expected {need} "
                            "(truncated or corrupt TIFF)"
                        )
                    out[0, r - a : r1 - a] = arr[r - s0 : r1 - s0]
                r = r1
            return out

        return segment


def _unsupported(code: int, exc: BaseException) -> bool:
    if code == 1:
        return False
    if isinstance(exc, (NotImplementedError, ImportError, KeyError)):
        return True
    msg = str(exc)
    if "COMPRESSION" in msg or "imagecodecs" in msg or "not supported" in msg:
        return True
    try:
        from tifffile import TIFF

        TIFF.DECOMPRESSORS[code]
    except Exception:  # noqa: BLE001
        return True
    return False


def open_tiff_source(
    path: str | os.PathLike[str],
    *,
    series: int = 0,
    level: int = 0,
    storage_options: Mapping[str, Any] | None = None,
) -> TiffSource:
    """Open one series (scene) and pyramid level of a TIFF / OME-TIFF file lazily.

    Parameters
    ----------
    path
        The TIFF file: a path or a URL (``s3://``, ``https://`` ...), which is
        read through ranged GETs.
    storage_options
        Options of a URL's fsspec filesystem (credentials, ``endpoint_url`` ...).
    series
        Which series (scene) of a multi-series file (``tifffile``'s numbering).
    level
        Pyramid level (0 = full resolution); ``source.levels()`` lists the
        levels of the series from this one down.

    Returns
    -------
    TiffSource
        Holds the file open; close it with ``close()`` or a ``with`` block.
    """
    for name, value in (("series", series), ("level", level)):
        if not is_integer(value):
            raise TypeError(f"{name} must be an integer (counted from 0), got {value!r}")
    remote = open_remote_file(path, storage_options)
    if remote is not None:
        p = Path(remote.url.split("://", 1)[1])
        handle = _TiffHandle(p, remote)
    else:
        p = local_path(path)
        if not p.exists():
            raise FileNotFoundError(f"no such TIFF file: {str(p)!r}")
        if p.is_dir():
            raise IsADirectoryError(f"{str(p)!r} is a directory, not a TIFF file")
        handle = _TiffHandle(p)
    try:
        n = len(handle.series)
        if n == 0:
            raise CorruptFileError(f"{str(p)!r} holds no images (no readable TIFF pages)")
        if not 0 <= int(series) < n:
            raise SchemaError(f"{str(p)!r} has {n} series (0..{n - 1}); series {series} does not exist")
        nl = len(handle.levels(int(series)))
        if not 0 <= int(level) < nl:
            raise SchemaError(f"{str(p)!r} series {series} has {nl} pyramid levels; level {level} does not exist")
        return TiffSource(handle, int(series), int(level))
    except BaseException:
        handle.close()
        raise


def list_tiff_series(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Describe each series (scene) of a TIFF file: name, axes, TCZYX shape, dtype, level shapes."""
    out = []
    src = open_tiff_source(path)
    try:
        for i in range(src.series_count):
            s = src if i == 0 else TiffSource(src._handle, i, 0)
            out.append(
                {
                    "series": i,
                    "name": s._base.name or "",
                    "kind": s._base.kind,
                    "axes": s.file_axes,
                    "shape": s.shape,
                    "dtype": s.dtype.name,
                    "levels": [lv.shape for lv in s.levels()],
                }
            )
            if s is not src:
                for lv in s.levels():
                    lv.close_quietly()  # type: ignore[attr-defined]
    finally:
        src.close()
    return out
