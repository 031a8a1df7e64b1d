"""Zeiss CZI files through ``pylibCZIrw`` (the ``czi`` extra), read lazily.

One source shows one scene. Its TCZYX shape comes from the file's total
bounding box (T, C, Z) and the scene's bounding rectangle (Y, X); pieces are
tiles of each ``(t, c, z)`` plane, read with ``CziReader.read(plane=, roi=)``
only when a plan touches them. Pixel types map to numpy dtypes (``Gray8`` →
uint8, ``Gray16`` → uint16, ``Gray32Float`` → float32); a ``Bgr24`` /
``Bgr48`` / ``Bgr96Float`` channel becomes three channels in R, G, B order.
Channels of different depths are read at the widest one. Pixel sizes come from
``Scaling/Items/Distance`` (metres in the file, µm in the header; unset
distances stay 1.0), channel names from ``Information/Image/Dimensions``.

``pylibCZIrw`` is imported on first use; without it the functions raise
:class:`~omeframe.errors.OptionalDependencyError` with the install hint.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from omeframe.engine.pieces import Pieces, make_pieces
from omeframe.engine.source import StoredSource
from omeframe.model.errors import CorruptFileError, OptionalDependencyError, SchemaError
from omeframe.model.header import ImageHeader

__all__ = ["CziSource", "open_czi_source", "czi_scenes", "import_pylibczirw", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'omeframe[czi]'"

_GRAY = {"Gray8": ("uint8", 1), "Gray16": ("uint16", 1), "Gray32Float": ("float32", 1)}
_BGR = {"Bgr24": ("uint8", 3), "Bgr48": ("uint16", 3), "Bgr96Float": ("float32", 3)}
_BY_DEPTH = {
    "uint8": ("Gray8", "Bgr24"),
    "uint16": ("Gray16", "Bgr48"),
    "float32": ("Gray32Float", "Bgr96Float"),
}


def import_pylibczirw() -> Any:
    """Import ``pylibCZIrw.czi`` or raise ``OptionalDependencyError`` with the install hint."""
    try:
        from pylibCZIrw import czi as pyczi
    except ImportError as exc:
        raise OptionalDependencyError(
            f"reading CZI files needs the optional package pylibCZIrw, which is not installed "
            f"({exc}); install it with: {INSTALL_HINT}"
        ) from exc
    return pyczi


def _open_reader(pyczi: Any, path: Path) -> Any:
    try:
        return pyczi.CziReader(str(path))
    except Exception as exc:  # noqa: BLE001 - libCZI raises RuntimeError / its own types
        raise CorruptFileError(f"{str(path)!r} is not a readable CZI file: {exc}") from exc


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _image_meta(md: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    meta = ((md or {}).get("ImageDocument") or {}).get("Metadata") or {}
    return meta, ((meta.get("Information") or {}).get("Image") or {})


def _channel_names(image: dict[str, Any]) -> list[str | None]:
    chans = _as_list(((image.get("Dimensions") or {}).get("Channels") or {}).get("Channel"))
    return [(c.get("@Name") or c.get("Name")) if isinstance(c, dict) else None for c in chans]


def _scaling(meta: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in _as_list(((meta.get("Scaling") or {}).get("Items") or {}).get("Distance")):
        if not isinstance(d, dict):
            continue
        try:
            v = float(d.get("Value") or 0.0)
        except (TypeError, ValueError):
            continue
        ax = str(d.get("@Id", "")).lower()
        if v > 0 and ax in ("x", "y", "z"):
            out[ax] = v * 1e6  # metres -> µm
    return out


def czi_scenes(path: str | os.PathLike[str]) -> list[int]:
    """Scene indices of a CZI file (``[0]`` when it has no scenes)."""
    pyczi = import_pylibczirw()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such CZI file: {str(p)!r}")
    r = _open_reader(pyczi, p)
    try:
        scenes = sorted(int(s) for s in (r.scenes_bounding_rectangle or {}))
    finally:
        r.close()
    return scenes or [0]


class CziSource(StoredSource):
    """One scene of a CZI file; pieces are ``tile``-sized tiles of each plane."""

    def __init__(self, path: str | os.PathLike[str], *, scene: int = 0, tile: int = 1024) -> None:
        super().__init__()
        pyczi = import_pylibczirw()
        self.path = p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no such CZI file: {str(p)!r}")
        if int(tile) <= 0:
            raise ValueError(f"tile must be a positive number of pixels, got {tile!r}")
        self.tile = int(tile)
        self._pyczi = pyczi
        r = _open_reader(pyczi, p)
        try:
            bbox = dict(r.total_bounding_box)
            scenes = dict(r.scenes_bounding_rectangle or {})
            pixel_types = dict(r.pixel_types)
            md = r.metadata
        except Exception:
            r.close()
            raise
        self._readers: list[Any] = [r]
        self._local = threading.local()
        self._local.reader = r
        self._rlock = threading.Lock()
        weakref.finalize(self, _close_all, self._readers)

        if scenes:
            if int(scene) not in scenes:
                raise SchemaError(f"{str(p)!r} has scenes {sorted(scenes)}; scene {scene} does not exist")
            rect = scenes[int(scene)]
            self.scene: int | None = int(scene)
        else:
            if int(scene) != 0:
                raise SchemaError(f"{str(p)!r} has no scenes; only scene=0 exists")
            rect = r.total_bounding_rectangle
            self.scene = None
        self.rect = (int(rect.x), int(rect.y), int(rect.w), int(rect.h))
        extra = {k: v for k, v in bbox.items() if k not in ("T", "C", "Z", "X", "Y") and v[1] - v[0] > 1}
        if extra:
            raise SchemaError(
                f"{str(p)!r} has CZI dimension(s) {sorted(extra)} beyond T/C/Z (sizes "
                f"{ {k: v[1] - v[0] for k, v in extra.items()} }), which omeframe does not map yet"
            )
        self._t0, t1 = bbox.get("T", (0, 1))
        self._z0, z1 = bbox.get("Z", (0, 1))
        c0, cend = bbox.get("C", (0, 1))
        self._has = {k: k in bbox for k in "TCZ"}

        kinds: list[tuple[int, str]] = []
        for ci in range(c0, cend):
            pt = pixel_types.get(ci) or pixel_types.get(ci - c0) or r.get_channel_pixel_type(ci)
            if pt not in _GRAY and pt not in _BGR:
                raise SchemaError(f"{str(p)!r} channel {ci} has pixel type {pt!r}, which omeframe cannot read")
            kinds.append((ci, pt))
        depth = np.result_type(*[np.dtype({**_GRAY, **_BGR}[pt][0]) for _, pt in kinds])
        self._dtype = np.dtype(depth)
        gray_name, bgr_name = _BY_DEPTH[self._dtype.name]
        #: output channel -> (czi channel, read pixel type, component or None)
        self._cmap: list[tuple[int, str, int | None]] = []
        meta, image = _image_meta(md)
        raw_names = _channel_names(image)
        names: list[str] = []
        for k, (ci, pt) in enumerate(kinds):
            base = raw_names[k] if k < len(raw_names) and raw_names[k] else None
            if pt in _BGR:
                for comp, letter in ((2, "R"), (1, "G"), (0, "B")):  # BGR in the file -> RGB
                    self._cmap.append((ci, bgr_name, comp))
                    names.append(f"{base}_{letter}" if base else letter)
            else:
                self._cmap.append((ci, gray_name, None))
                names.append(base or f"C{len(names)}")
        self._shape = (int(t1 - self._t0), len(self._cmap), int(z1 - self._z0), self.rect[3], self.rect[2])
        scale = _scaling(meta)
        title = ((meta.get("Information") or {}).get("Document") or {}).get("Title")
        multi = len(scenes) > 1
        sfx = f"_scene{self.scene}" if multi else ""
        self._header = ImageHeader.basic(
            f"{p.stem}{sfx}",
            str(title or p.name) + (f" scene {self.scene}" if multi else ""),
            self._shape[1],
            channel_names=names,
            physical=scale,
        )
        self.describe = (
            f"CZI {str(p)!r} scene {self.scene if self.scene is not None else 0} "
            f"({', '.join(pt for _, pt in kinds)}; tiles {self.tile}x{self.tile})"
        )


    def chunk_shape(self) -> tuple[int, int, int]:
        return (1, min(self.tile, self._shape[3]), min(self.tile, self._shape[4]))

    def _reader(self) -> Any:
        r = getattr(self._local, "reader", None)
        if r is None:  # one reader per thread: libCZI accessors are not shared across threads
            r = _open_reader(self._pyczi, self.path)
            self._local.reader = r
            with self._rlock:
                self._readers.append(r)
        return r

    def _open_pixels(self) -> Pieces:
        st, sc, sz, sy, sx = self._shape
        ty = tx = self.tile
        grid = (st, sc, sz, -(-sy // ty), -(-sx // tx))
        origins = np.indices(grid).reshape(5, -1).T.astype(np.int64) * np.array([1, 1, 1, ty, tx], dtype=np.int64)
        extents = np.stack(
            [
                np.ones(len(origins), dtype=np.int64),
                np.minimum(ty, sy - origins[:, 3]),
                np.minimum(tx, sx - origins[:, 4]),
            ],
            axis=1,
        )
        rx, ry = self.rect[0], self.rect[1]
        dtype = self._dtype

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c, z, y, x = (int(v) for v in origins[i])
            _, h, w = (int(v) for v in extents[i])
            ci, ptype, comp = self._cmap[c]
            plane: dict[str, int] = {}
            if self._has["T"]:
                plane["T"] = self._t0 + t
            if self._has["C"]:
                plane["C"] = ci
            if self._has["Z"]:
                plane["Z"] = self._z0 + z
            data = self._reader().read(roi=(rx + x, ry + y, w, h), plane=plane, scene=self.scene, pixel_type=ptype)
            data = data[..., 0] if comp is None else data[..., comp]
            return np.ascontiguousarray(data, dtype=dtype).reshape(1, h, w)

        nbytes = extents.prod(axis=1) * dtype.itemsize
        return make_pieces(self._shape, dtype, origins, extents, decode, nbytes.astype(np.int64), True, self.describe)


def _close_all(readers: list[Any]) -> None:
    for r in readers:
        try:
            r.close()
        except Exception:  # noqa: BLE001 - closing at exit is best effort
            pass
    readers.clear()


def open_czi_source(path: str | os.PathLike[str], *, scene: int = 0, tile: int = 1024) -> CziSource:
    """Open one scene of a CZI file lazily (needs the ``czi`` extra: ``pip install 'omeframe[czi]'``)."""
    return CziSource(path, scene=scene, tile=tile)
