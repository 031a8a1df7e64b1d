"""Bio-Formats-style file patterns: many files, one lazy TCZYX image.

Pattern syntax (the file-name part of the path; the folder is literal)
--------------------------------------------------------------------
``<...>`` tokens enumerate the values a part of the file name takes:

* ``<0-9>``, ``<000-099>``: numeric ranges, inclusive. Zero padding follows
  Bio-Formats: the width of the bounds when they have the same width or the
  first one has a leading zero (``<000-099>`` gives ``000..099``, ``<1-10>``
  gives ``1..10``, ``<01-10>`` gives ``01..10``).
* ``<0-20:5>``: a range with a step (``0, 5, 10, 15, 20``).
* ``<A-H>``: a range of single letters (well rows).
* ``<DAPI,GFP,RFP>``: a list; items may themselves be ranges (``<1,3,5-7>``).
* ``<DAPI>``: a single literal value.

The dimension of a token comes from the letters just before it
(case-insensitive): ``c``/``ch``/``chan``/``channel``/``w``/``wavelength`` → C,
``t``/``tl``/``tp``/``time``/``timepoint``/``frame`` → T,
``z``/``zs``/``sec``/``slice``/``fp``/``focal``/``focalplane`` → Z,
``s``/``sp``/``series``/``pos``/``position`` → series. A camel-case tail also
counts (``stackZ<0-9>``). Tokens with no such prefix take
``default_dim_for_unspecified``; series tokens take ``map_series_to``.
Several tokens of one dimension combine (first token major).
Non-numeric channel tokens name the channels (``<DAPI,GFP>``).

A path without tokens is an exact file name, else a regular expression
(``fullmatch`` on the names in the folder), else a glob (``*``, ``?``, ``[]``);
the matches, in natural order (``z2`` before ``z10``), stack along Z.

Files
-----
Each file holds one plane or a sub-stack: TIFF (tifffile, any axes; pages of
unknown meaning count as Z, RGB samples as C), PNG/JPEG/BMP/... (Pillow; RGB
as C) or ``.npy`` (memory-mapped). All files must share one inner shape; a
file holding ``(t_in, c_in, z_in)`` planes fills that block of the grid.
Only the first file is opened when the source is built (shape, dtype,
physical sizes); every other file is read when a plan needs its pixels, and
its shape is checked then. Missing files raise ``FileNotFoundError`` listing
them, unless ``missing="zero"`` (their planes then read as zeros).
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from omeframe.engine.cache import shared_cache
from omeframe.engine.pieces import Pieces, make_pieces
from omeframe.engine.source import StoredSource
from omeframe.formats.tiff import TIFF_SUFFIXES
from omeframe.model.errors import CorruptFileError, DimOrderError, PixelPayloadError, reraise_access_error
from omeframe.model.header import ImageHeader

__all__ = [
    "PatternToken",
    "StackPattern",
    "parse_stack_pattern",
    "StackSource",
    "open_stack_source",
    "probe_image_file",
    "read_image_file",
]

DIM_NAMES: dict[str, frozenset[str]] = {
    "C": frozenset({"c", "ch", "chan", "channel", "w", "wl", "wavelength"}),
    "T": frozenset({"t", "tl", "tp", "time", "timepoint", "frame"}),
    "Z": frozenset({"z", "zs", "sec", "slice", "fp", "focal", "focalplane"}),
    "S": frozenset({"s", "sp", "series", "pos", "position"}),
}
_NUM_RANGE = re.compile(r"^(?P<a>\d+)-(?P<b>\d+)(?::(?P<step>\d+))?$")
_ALPHA_RANGE = re.compile(r"^(?P<a>[A-Za-z])-(?P<b>[A-Za-z])(?::(?P<step>\d+))?$")
MissingPolicy = Literal["error", "zero"]


# ---------------------------------------------------------------- patterns
@dataclass(frozen=True)
class PatternToken:
    """One ``<...>`` token: its text, expanded values and dimension."""

    raw: str
    choices: tuple[str, ...]
    dim: str  # effective dimension, one of T / C / Z
    declared: str | None  # what the file name said (T/C/Z/S), None when nothing
    numeric: bool


@dataclass(frozen=True)
class StackPattern:
    """A parsed file pattern: literal text between tokens, and the tokens."""

    pattern: str
    folder: Path
    literals: tuple[str, ...]  # len(tokens) + 1
    tokens: tuple[PatternToken, ...]

    def filename(self, combo: Sequence[str]) -> str:
        parts = [self.literals[0]]
        for value, lit in zip(combo, self.literals[1:], strict=True):
            parts += [value, lit]
        return "".join(parts)

    def sizes(self) -> dict[str, int]:
        """Grid size per dimension (T, C, Z) implied by the tokens."""
        out = {"T": 1, "C": 1, "Z": 1}
        for tok in self.tokens:
            out[tok.dim] *= len(tok.choices)
        return out


def _detect_dim(before: str) -> str | None:
    m = re.search(r"([A-Za-z]+)$", before)
    if not m:
        return None
    run = m.group(1)
    for dim, names in DIM_NAMES.items():
        if run.lower() in names:
            return dim
    # camel-case tail: "stackZ", "wellTime"
    for k in range(1, len(run)):
        if run[k].isupper() and run[k - 1].islower():
            tail = run[k:].lower()
            for dim, names in DIM_NAMES.items():
                if tail in names:
                    return dim
    return None


def _expand_part(part: str, raw: str) -> tuple[list[str], bool]:
    part = part.strip()
    if not part:
        raise ValueError(f"empty value in pattern token <{raw}>")
    m = _NUM_RANGE.match(part)
    if m:
        a, b = m.group("a"), m.group("b")
        step = int(m.group("step") or 1)
        start, stop = int(a), int(b)
        if step <= 0:
            raise ValueError(f"step must be positive in pattern token <{raw}>")
        if stop < start:
            raise ValueError(f"inverted range <{raw}>: {a} > {b}; write ranges low-high")
        width = len(a) if (len(a) == len(b) or (len(a) > 1 and a.startswith("0"))) else 0
        return [str(v).zfill(width) for v in range(start, stop + 1, step)], True
    m = _ALPHA_RANGE.match(part)
    if m:
        a, b = m.group("a"), m.group("b")
        if a.isupper() != b.isupper():
            raise ValueError(f"letter range <{raw}> mixes upper and lower case")
        if ord(b) < ord(a):
            raise ValueError(f"inverted range <{raw}>: {a} > {b}; write ranges low-high")
        step = int(m.group("step") or 1)
        return [chr(v) for v in range(ord(a), ord(b) + 1, step)], False
    return [part], part.isdigit()


def _expand_token(raw: str) -> tuple[tuple[str, ...], bool]:
    values: list[str] = []
    numeric = True
    for part in raw.split(","):
        vals, num = _expand_part(part, raw)
        values += vals
        numeric = numeric and num
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise ValueError(f"pattern token <{raw}> lists {dup} more than once")
    return tuple(values), numeric


def parse_stack_pattern(
    pattern_path: str | os.PathLike[str],
    default_dim_for_unspecified: str = "C",
    map_series_to: str | None = "T",
) -> StackPattern:
    """Parse a ``<...>`` file pattern (see the module docstring for the syntax).

    Raises ``ValueError`` for malformed tokens, an unknown default dimension,
    or a series token when ``map_series_to`` is ``None``.
    """
    pattern = os.fspath(pattern_path)
    path = Path(pattern)
    line = path.name.strip()
    if not line:
        raise ValueError(f"pattern path {pattern!r} is empty or ends with a separator")
    if "<" in str(path.parent) or ">" in str(path.parent):
        raise ValueError(f"pattern {pattern!r}: <...> tokens are only allowed in the file name, not in folders")
    default = str(default_dim_for_unspecified).upper()
    if default not in ("T", "C", "Z"):
        raise ValueError(f"default_dim_for_unspecified must be 'T', 'C' or 'Z', got {default_dim_for_unspecified!r}")
    series_dim = None if map_series_to is None else str(map_series_to).upper()
    if series_dim is not None and series_dim not in ("T", "C", "Z"):
        raise ValueError(f"map_series_to must be 'T', 'C', 'Z' or None, got {map_series_to!r}")
    literals: list[str] = []
    tokens: list[PatternToken] = []
    i, buf = 0, []
    while i < len(line):
        ch = line[i]
        if ch == ">":
            raise ValueError(f"pattern {line!r}: '>' at position {i} has no matching '<'")
        if ch != "<":
            buf.append(ch)
            i += 1
            continue
        j = line.find(">", i + 1)
        if j == -1:
            raise ValueError(f"pattern {line!r}: unclosed '<' at position {i}")
        raw = line[i + 1 : j]
        if "<" in raw:
            raise ValueError(f"pattern {line!r}: nested '<' inside token <{raw}>")
        before = "".join(buf)
        declared = _detect_dim(before)
        choices, numeric = _expand_token(raw)
        dim = declared or default
        if dim == "S":
            if series_dim is None:
                raise ValueError(
                    f"pattern token <{raw}> is a series token but map_series_to=None; pass "
                    "map_series_to='T' (or 'C'/'Z') to place series along a dimension"
                )
            dim = series_dim
        literals.append(before)
        tokens.append(PatternToken(raw, choices, dim, declared, numeric))
        buf = []
        i = j + 1
    literals.append("".join(buf))
    return StackPattern(pattern, path.parent, tuple(literals), tuple(tokens))


def _natural_key(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _match_files(folder: Path, line: str) -> list[Path]:
    exact = folder / line
    if exact.is_file():
        return [exact]
    if not folder.is_dir():
        raise FileNotFoundError(f"pattern folder {str(folder)!r} does not exist")
    names = sorted((p.name for p in folder.iterdir() if p.is_file()), key=_natural_key)
    try:
        rx = re.compile(line)
        hits = [n for n in names if rx.fullmatch(n)]
    except re.error:
        hits = []
    if not hits:
        hits = [n for n in names if fnmatch.fnmatchcase(n, line)]
    return [folder / n for n in hits]


# ---------------------------------------------------------------- files
@dataclass(frozen=True)
class FileInfo:
    """What one image file holds, normalised to ``(T, C, Z, Y, X)``."""

    shape: tuple[int, int, int, int, int]
    dtype: np.dtype[Any]
    axes: str  # the file's own axes, as read (e.g. 'ZYX', 'YXS')
    physical: dict[str, Any]


def _file_axes_to_tczyx(axes: str, shape: tuple[int, ...], path: Path) -> tuple[str, list[Any]]:
    """Map a reader's axes to TCZYX letters; returns (kept axes, index) for size-1 drops."""
    axes = axes.upper()
    out: list[str] = []
    index: list[Any] = []
    present = set(axes)
    for a, n in zip(axes, shape, strict=True):
        if a in "TCZYX":
            out.append(a)
            index.append(slice(None))
        elif a == "S" and "C" not in present:
            out.append("C")
            index.append(slice(None))
        elif n == 1:
            index.append(0)
        elif "Z" not in present and "Z" not in out:
            out.append("Z")
            index.append(slice(None))
        else:
            raise DimOrderError(
                f"{str(path)!r} has axes {axes!r} (shape {tuple(shape)}); omeframe cannot place axis "
                f"{a!r} (size {n}) in TCZYX. Express T/C/Z through the file pattern instead"
            )
    if "Y" not in out or "X" not in out:
        raise DimOrderError(f"{str(path)!r} has axes {axes!r}: no Y and X image plane")
    return "".join(out), index


def _to_tczyx(arr: np.ndarray, axes: str, path: Path) -> np.ndarray:
    kept, index = _file_axes_to_tczyx(axes, arr.shape, path)
    view = arr[tuple(index)]
    letters = list(kept)
    for a in "TCZYX":
        if a not in letters:
            view = view[..., np.newaxis]
            letters.append(a)
    return view.transpose([letters.index(a) for a in "TCZYX"])


_PIL_MODES: dict[str, tuple[str, int]] = {
    "1": ("bool", 1),
    "L": ("uint8", 1),
    "P": ("uint8", 1),
    "LA": ("uint8", 2),
    "RGB": ("uint8", 3),
    "RGBA": ("uint8", 4),
    "CMYK": ("uint8", 4),
    "I;16": ("uint16", 1),
    "I;16L": ("uint16", 1),
    "I;16B": ("uint16", 1),
    "I": ("int32", 1),
    "F": ("float32", 1),
}


def _tiff_physical(tf: Any) -> dict[str, Any]:
    """Pixel sizes of a TIFF (OME-XML, then ImageJ, then resolution tags)."""
    out: dict[str, Any] = {}
    try:
        if tf.is_ome and tf.ome_metadata:
            from tifffile import xml2dict

            ome = xml2dict(tf.ome_metadata).get("OME", {})
            img = ome.get("Image", {})
            img = img[0] if isinstance(img, list) else img
            px = img.get("Pixels", {})
            for ax in "XYZ":
                v = px.get(f"PhysicalSize{ax}")
                if v:
                    out[ax.lower()] = float(v)
                    out["unit"] = px.get(f"PhysicalSize{ax}Unit", "µm")
            return out
        page = tf.pages[0]
        ij = tf.imagej_metadata or {}
        unit = ij.get("unit")
        for ax, tag in (("x", "XResolution"), ("y", "YResolution")):
            t = page.tags.get(tag)
            if t is not None:
                num, den = t.value
                if num and den and (unit or ij) and num / den not in (0, 1, 72):
                    out[ax] = den / num
        if ij.get("spacing"):
            out["z"] = float(ij["spacing"])
        if out:
            out["unit"] = {"micron": "µm", "um": "µm", "\\u00B5m": "µm"}.get(str(unit), unit or "µm")
    except Exception:  # noqa: BLE001 - metadata is best effort; pixels still read
        return {}
    return out


def probe_image_file(path: str | os.PathLike[str]) -> FileInfo:
    """Shape, dtype, axes and pixel sizes of an image file, without reading pixels."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such image file: {str(p)!r}")
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(str(p)) as tf:
                s = tf.series[0]
                axes, shape, dtype = s.axes, tuple(int(v) for v in s.shape), np.dtype(s.dtype)
                phys = _tiff_physical(tf)
        except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
            reraise_access_error(exc)
            raise CorruptFileError(f"{str(p)!r} is not a readable TIFF file: {exc}") from exc
    elif suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r")
        except ValueError as exc:
            raise CorruptFileError(f"{str(p)!r} is not a readable .npy file: {exc}") from exc
        shape, dtype = tuple(arr.shape), arr.dtype
        axes = "TCZYX"[-len(shape):] if len(shape) <= 5 else "?" * len(shape)
        phys = {}
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as im:
                mode, (w, h) = im.mode, im.size
                frames = int(getattr(im, "n_frames", 1) or 1)
        except (UnidentifiedImageError, OSError) as exc:
            reraise_access_error(exc)
            raise CorruptFileError(f"{str(p)!r} is not an image file Pillow can read: {exc}") from exc
        if mode not in _PIL_MODES:
            raise CorruptFileError(f"{str(p)!r}: Pillow image mode {mode!r} is not supported")
        dt, n = _PIL_MODES[mode]
        shape = (h, w) if n == 1 else (h, w, n)
        axes = "YX" if n == 1 else "YXS"
        if frames > 1:
            shape, axes = (frames, *shape), "Z" + axes
        dtype, phys = np.dtype(dt), {}
    dtype = dtype.newbyteorder("=") if dtype.byteorder == ">" else dtype
    kept, index = _file_axes_to_tczyx(axes, shape, p)
    sizes = dict(zip(kept, (n for n, ix in zip(shape, index, strict=True) if not isinstance(ix, int)), strict=True))
    return FileInfo(tuple(sizes.get(a, 1) for a in "TCZYX"), dtype, axes, phys)  # type: ignore[arg-type]


def read_image_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a whole image file as a native-byte-order TCZYX array."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file disappeared: {str(p)!r}")
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(str(p)) as tf:
                s = tf.series[0]
                arr, axes = s.asarray(), s.axes
        except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
            reraise_access_error(exc)
            raise CorruptFileError(f"{str(p)!r} is not a readable TIFF file: {exc}") from exc
    elif suffix == ".npy":
        arr = np.load(p, mmap_mode="r")
        axes = "TCZYX"[-arr.ndim:]
    else:
        from PIL import Image, ImageSequence

        with Image.open(p) as im:
            frames = [np.asarray(f.copy()) for f in ImageSequence.Iterator(im)]
        arr = frames[0] if len(frames) == 1 else np.stack(frames)
        axes = ("YX" if arr.ndim - (len(frames) > 1) == 2 else "YXS")
        if len(frames) > 1:
            axes = "Z" + axes
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return _to_tczyx(arr, axes, p)


_TOKENS = itertools.count()


class _FileCache:
    """Decoded files of one stack source, kept in the process-wide cache.

    Dataset writes read a plane tile by tile; without this every tile would
    decode the whole file again. Entries are keyed ``("stack", token, path)``
    with a token per source and loaded once however many threads ask
    (:meth:`~omeframe.engine.cache.ByteCache.get_or_compute`); when a file
    decodes to more than ``max_bytes`` nothing is kept and each use decodes
    it again. The entries are dropped when the cache object is collected.
    """

    def __init__(self, max_bytes: int, file_nbytes: int) -> None:
        self.max_bytes = max_bytes
        self.keep = 0 < file_nbytes <= max_bytes
        self.token = next(_TOKENS)
        self._cache = shared_cache()
        weakref.finalize(self, self._cache.discard_prefix, ("stack", self.token))

    def get(self, path: Path, load: Any) -> np.ndarray:
        if not self.keep:
            return load(path)
        return self._cache.get_or_compute(("stack", self.token, path), lambda: load(path))


# ---------------------------------------------------------------- source
class StackSource(StoredSource):
    """Files named by a pattern, seen as one TCZYX image (one file = one piece per T/C plane).

    Parameters
    ----------
    pattern_path
        The pattern (see the module docstring); without ``<...>`` tokens, an
        exact name, a regular expression or a glob whose matches stack along Z.
    default_dim_for_unspecified, map_series_to
        Dimension of tokens without a prefix, and of series tokens.
    missing
        ``"error"`` (default): raise ``FileNotFoundError`` listing files the
        pattern names but the folder lacks. ``"zero"``: read them as zeros.
    channel_names
        Names for the C axis (default: from non-numeric C tokens, else ``C0..``).
    cache_bytes
        Largest decoded file kept for reuse (in the process-wide cache,
        :func:`omeframe.set_cache_bytes`); larger files, or every file when
        ``0``, are decoded on each read.
    """

    def __init__(
        self,
        pattern_path: str | os.PathLike[str],
        default_dim_for_unspecified: str = "C",
        map_series_to: str | None = "T",
        *,
        missing: MissingPolicy = "error",
        channel_names: Sequence[str] | None = None,
        image_id: str | None = None,
        name: str | None = None,
        cache_bytes: int = 64 << 20,
    ) -> None:
        super().__init__()
        if missing not in ("error", "zero"):
            raise ValueError(f"missing must be 'error' or 'zero', got {missing!r}")
        self.pattern = parse_stack_pattern(pattern_path, default_dim_for_unspecified, map_series_to)
        pat = self.pattern
        grid: dict[tuple[int, int, int], Path] = {}
        absent: list[Path] = []
        literal_names: list[str] | None = None
        if pat.tokens:
            sizes = pat.sizes()
            for combo in itertools.product(*(range(len(t.choices)) for t in pat.tokens)):
                pos = {"T": 0, "C": 0, "Z": 0}
                for tok, k in zip(pat.tokens, combo, strict=True):
                    pos[tok.dim] = pos[tok.dim] * len(tok.choices) + k
                f = pat.folder / pat.filename([tok.choices[k] for tok, k in zip(pat.tokens, combo, strict=True)])
                if f.is_file():
                    grid[(pos["T"], pos["C"], pos["Z"])] = f
                else:
                    absent.append(f)
            ctoks = [t for t in pat.tokens if t.dim == "C"]
            if ctoks and not all(t.numeric for t in ctoks):
                literal_names = ["_".join(v) for v in itertools.product(*(t.choices for t in ctoks))]
        else:
            files = _match_files(pat.folder, pat.literals[0])
            sizes = {"T": 1, "C": 1, "Z": len(files)}
            grid = {(0, 0, z): f for z, f in enumerate(files)}
        if not grid:
            raise FileNotFoundError(
                f"no files matched pattern {pat.pattern!r}"
                + (f" (looked for e.g. {absent[0].name!r} in {str(pat.folder)!r})" if absent else "")
            )
        if absent and missing == "error":
            shown = ", ".join(repr(p.name) for p in absent[:10])
            more = f" and {len(absent) - 10} more" if len(absent) > 10 else ""
            raise FileNotFoundError(
                f"pattern {pat.pattern!r} names {len(absent)} file(s) missing from {str(pat.folder)!r}: "
                f"{shown}{more}; pass missing='zero' to read them as zero planes"
            )
        self.missing = absent
        self.files = grid
        first = grid[min(grid)]
        info = probe_image_file(first)
        self.file_info = info
        t_in, c_in, z_in, sy, sx = info.shape
        self.inner_shape = info.shape
        self._shape = (sizes["T"] * t_in, sizes["C"] * c_in, sizes["Z"] * z_in, sy, sx)
        self._dtype = info.dtype
        if literal_names is not None and c_in > 1:
            literal_names = [f"{n}_{k}" for n in literal_names for k in range(c_in)]
        names = list(channel_names) if channel_names is not None else literal_names
        if channel_names is not None and len(names) != self._shape[1]:  # type: ignore[arg-type]
            raise ValueError(f"channel_names length {len(names)} != size_c {self._shape[1]}")  # type: ignore[arg-type]
        self._header = ImageHeader.basic(
            image_id or Path(pat.pattern).stem,
            name or pat.pattern,
            self._shape[1],
            channel_names=names,
            physical=info.physical,
        )
        self._cache = _FileCache(cache_bytes, int(np.prod(info.shape)) * np.dtype(info.dtype).itemsize)
        n = len(grid)
        self.describe = (
            f"file stack {pat.pattern!r} ({n} file{'s' if n != 1 else ''}, "
            f"{info.shape[2]}x{sy}x{sx} {info.axes} each)"
        )


    def _read(self, path: Path) -> np.ndarray:
        arr = read_image_file(path)
        if tuple(arr.shape) != tuple(self.inner_shape):
            raise PixelPayloadError(
                f"{str(path)!r} holds TCZYX {tuple(arr.shape)} but the stack's files hold "
                f"{tuple(self.inner_shape)} (from {self.files[min(self.files)].name!r}); all files "
                "of a pattern must have the same shape"
            )
        return arr

    def _open_pixels(self) -> Pieces:
        t_in, c_in, z_in, sy, sx = self.inner_shape
        keys = sorted(self.files)
        rows = [(k, tl, cl) for k in keys for tl in range(t_in) for cl in range(c_in)]
        origins = np.array(
            [[t * t_in + tl, c * c_in + cl, z * z_in, 0, 0] for (t, c, z), tl, cl in rows], dtype=np.int64
        ).reshape(-1, 5)
        extents = np.tile(np.array([[z_in, sy, sx]], dtype=np.int64), (len(rows), 1))
        paths = [self.files[k] for k, _, _ in rows]
        local = [(tl, cl) for _, tl, cl in rows]
        dtype = self._dtype

        def decode(i: int, strict: bool) -> np.ndarray:
            arr = self._cache.get(paths[i], self._read)
            tl, cl = local[i]
            block = arr[tl, cl]
            return block if block.dtype == dtype else block.astype(dtype)

        file_bytes = np.array(
            [max(os.stat(p).st_size // max(t_in * c_in, 1), 1) for p in paths], dtype=np.int64
        )
        return make_pieces(self._shape, dtype, origins, extents, decode, file_bytes, True, self.describe)


def open_stack_source(
    pattern_path: str | os.PathLike[str],
    default_dim_for_unspecified: str = "C",
    map_series_to: str | None = "T",
    **kwargs: Any,
) -> StackSource:
    """Open a Bio-Formats-style file pattern lazily (see :class:`StackSource`)."""
    return StackSource(pattern_path, default_dim_for_unspecified, map_series_to, **kwargs)
