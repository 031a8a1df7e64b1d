"""Images on an OMERO server as lazy sources, through omero-py's BlitzGateway.

:class:`OmeroSource` opens one OMERO image from a connected
``omero.gateway.BlitzGateway`` and an image id (or :func:`open_omero` from an
``omero://host[:port]/image/<id>`` URL and credentials) and describes its
pixels as pieces without reading any:

* **regular images** (the server's ``requiresPixelsPyramid()`` is false and
  there is one resolution level): one piece per ``(t, c, z)`` plane, read with
  ``RawPixelsStore.getPlane``;
* **large and pyramidal images**: one piece per server tile
  (``getTileSize()``) of every plane, read with ``RawPixelsStore.getTile``,
  so a region read fetches only the tiles it touches.

Pyramid levels. OMERO numbers resolution levels from the smallest:
``setResolutionLevel(0)`` selects the coarsest level and
``setResolutionLevel(n - 1)`` the full resolution, while
``getResolutionDescriptions()`` lists the level sizes full resolution first.
omeframe's level ``k`` (0 = full resolution, like every other source) is
OMERO's level ``n - 1 - k`` with the size of description ``k``
(:func:`omero_level`). ``levels()`` returns one source per level, so
:class:`~omeframe.tiles.TileProvider`, ``at_resolution`` and the zarr view use
the server's pyramid.

Reads. Pixel bytes come big-endian from the server and are converted to the
native byte order with numpy. Raw pixel stores are stateful server services:
a source keeps a small pool (``max_stores``, default 4) shared by its levels,
each store used by one thread at a time, and closes them with ``close()``,
a ``with`` block, or when the source is garbage-collected. A source holds a
live connection and cannot be pickled (write it to a dataset first).

Metadata (:func:`get_image_metadata`): sizes, the numpy dtype, physical pixel
sizes in µm (``None`` when unset or not convertible to a length), and per
channel the name, colour, emission and excitation wavelengths and the display
window and active flag of the rendering settings. The header carries names,
colours (``0xRRGGBBAA``), wavelengths (µm) and pixel sizes; the windows are in
:meth:`OmeroSource.metadata`.

Errors. An id the session cannot see raises
:class:`~omeframe.errors.ImageNotFoundError` naming the id; a connection that
is closed, or a server call that fails, raises :class:`OmeroConnectionError`
naming the call and the image. omero-py is imported only by
:func:`open_omero` (a connection you pass in is used as it is).

Every omero-py name used here is listed in :mod:`omeframe.formats.omero.api`.

Example
-------
>>> from omero.gateway import BlitzGateway                       # doctest: +SKIP
>>> conn = BlitzGateway("user", "secret", host="omero.example.org", port=4064)  # doctest: +SKIP
>>> conn.connect()                                               # doctest: +SKIP
>>> src = OmeroSource(conn, 1234)                                # doctest: +SKIP
>>> plan = omeframe.scan(src).select(c=[0], y=(0, 512), x=(0, 512))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.engine.pieces import RegularPieces, regular_pieces
from omeframe.engine.source import LazySource
from omeframe.formats.omero import OMERO_DEFAULT_PORT, OMERO_EXTRA, OMERO_URL_SCHEME
from omeframe.model.errors import (
    ImageNotFoundError,
    OmeframeError,
    OptionalDependencyError,
    PixelPayloadError,
    SchemaError,
)
from omeframe.model.header import DEFAULT_COLOR_RGBA, Channel, ImageHeader

__all__ = [
    "OmeroSource",
    "OmeroConnectionError",
    "get_image_metadata",
    "is_large_image",
    "omero_catalog",
    "omero_level",
    "open_omero",
    "parse_omero_url",
    "INSTALL_HINT",
    "OMERO_CATALOG_SCHEMA",
]

INSTALL_HINT = f"pip install 'omeframe[{OMERO_EXTRA}]'"

#: OMERO pixel types -> numpy dtypes (``bit`` images are not supported).
_PIXEL_TYPES: dict[str, str] = {
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
    "int32": "int32", "uint32": "uint32", "float": "float32", "double": "float64",
}

_URL = re.compile(r"^omero://(?P<host>[^/:]+)(?::(?P<port>\d+))?/image/(?P<id>\d+)/?$", re.IGNORECASE)

#: Columns of :func:`omero_catalog`: one row per OMERO image, metadata only.
OMERO_CATALOG_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("omero_id", pa.int64()),
        pa.field("urlpath", pa.string()),
        pa.field("name", pa.string()),
        pa.field("shape", pa.list_(pa.int64())),
        pa.field("dtype", pa.string()),
        pa.field("physical_size_x", pa.float64()),
        pa.field("physical_size_y", pa.float64()),
        pa.field("physical_size_z", pa.float64()),
        pa.field("channel_names", pa.list_(pa.string())),
        pa.field("large", pa.bool_()),
    ]
)


class OmeroConnectionError(OmeframeError, ConnectionError):
    """The OMERO connection is closed or unreachable, or a server call failed."""


# ---------------------------------------------------------------------------
# server calls
# ---------------------------------------------------------------------------
def _call(what: str, image_id: Any, fn: Any, *args: Any) -> Any:
    """``fn(*args)``; a failure of the server call becomes :class:`OmeroConnectionError`.

    ``AttributeError`` and ``TypeError`` pass through: they mean the call
    itself is wrong (e.g. an omero-py release that renamed it), not the server.
    """
    try:
        return fn(*args)
    except (OmeframeError, AttributeError, TypeError):
        raise
    except Exception as exc:  # noqa: BLE001 - Ice and omero.ServerError types need omero-py to name them
        target = "" if image_id is None else f" for image {image_id}"
        raise OmeroConnectionError(
            f"OMERO call {what}{target} failed ({type(exc).__name__}: {exc}); check that "
            "the session is still connected (conn.isConnected(), reconnect with conn.connect()) and that "
            "its user may read the image"
        ) from exc


def _check_connected(conn: Any) -> None:
    try:
        ok = bool(conn.isConnected())
    except (AttributeError, TypeError):
        raise TypeError(
            f"expected a connected omero.gateway.BlitzGateway, got {type(conn).__name__}; create one with "
            "BlitzGateway(user, password, host=..., port=...) and call connect() (or use open_omero(url, ...))"
        ) from None
    except Exception as exc:  # noqa: BLE001 - Ice raises its own types when the server is gone
        raise OmeroConnectionError(
            f"the OMERO connection cannot be used ({type(exc).__name__}: {exc}); reconnect with conn.connect()"
        ) from exc
    if not ok:
        raise OmeroConnectionError(
            "the OMERO connection is not connected (conn.isConnected() is False); call conn.connect() and "
            "check its result (conn.getLastError() says why a connect failed)"
        )


def _image_id(image_id: Any) -> int:
    if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer, str)):
        raise TypeError(f"an OMERO image id must be an integer, got {image_id!r}")
    try:
        value = int(image_id)
    except ValueError:
        raise ValueError(f"an OMERO image id must be an integer, got {image_id!r}") from None
    if value < 0:
        raise ValueError(f"an OMERO image id must be >= 0, got {image_id!r}")
    return value


def _get_image(conn: Any, image_id: Any) -> Any:
    """The ``ImageWrapper`` of ``image_id`` (checks the connection; clear error when missing)."""
    iid = _image_id(image_id)
    _check_connected(conn)
    image = _call("getObject('Image', ...)", iid, conn.getObject, "Image", iid)
    if image is None:
        raise ImageNotFoundError(
            f"no OMERO image with id {iid} is visible to this session: check the id, and that the image "
            "is in the session's current group (conn.SERVICE_OPTS.setOmeroGroup(-1) searches all groups)"
        )
    return image


# ---------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------
def _value(length: Any) -> float | None:
    return None if length is None else float(length.getValue())


def _length(getter: Any, unit: str) -> float | None:
    """A length from an omero-py getter converted to ``unit`` (``None`` when unset or not a length)."""
    try:
        return _value(getter(units=unit))
    except Exception as exc:  # noqa: BLE001
        # omero-py's unit conversion raises a plain Exception ("... cannot be converted to ...",
        # e.g. a size in PIXEL units); server errors are subclasses and propagate
        if type(exc) is Exception:
            return None
        raise


def _dtype_of(pixel_type: str, image_id: Any) -> np.dtype[Any]:
    name = _PIXEL_TYPES.get(str(pixel_type))
    if name is None:
        raise SchemaError(
            f"OMERO image {image_id} has pixel type {pixel_type!r}, which omeframe does not read; "
            f"supported: {sorted(_PIXEL_TYPES)}"
        )
    return np.dtype(name)


def _hex(color: Any) -> str | None:
    if color is None:
        return None
    return f"{int(color.getRed()):02X}{int(color.getGreen()):02X}{int(color.getBlue()):02X}"


def _rgba(color: Any) -> int:
    if color is None:
        return DEFAULT_COLOR_RGBA
    r, g, b, a = (int(color.getRed()), int(color.getGreen()), int(color.getBlue()), int(color.getAlpha()))
    return (r << 24) | (g << 16) | (b << 8) | a


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def get_image_metadata(image: Any) -> dict[str, Any]:
    """Metadata of an omero-py ``ImageWrapper`` as a plain dict (reads no pixels).

    Keys: ``id``, ``name``, ``size_x`` ``size_y`` ``size_z`` ``size_c``
    ``size_t``, ``pixel_type`` (numpy dtype name), ``pixel_size_x``
    ``pixel_size_y`` ``pixel_size_z`` (µm or ``None``), ``acquisition_date``
    (``datetime`` or ``None``), and ``channels``: one dict per channel with
    ``name``, ``color`` (``"RRGGBB"`` or ``None`` without rendering settings),
    ``color_rgba`` (``0xRRGGBBAA``), ``emission_wavelength`` and
    ``excitation_wavelength`` (nm or ``None``), ``window_start``,
    ``window_end`` and ``active`` (from the rendering settings).

    Raises
    ------
    SchemaError
        When the image's pixel type is not one omeframe reads (``bit``).
    OmeroConnectionError
        When a server call fails.

    Example
    -------
    >>> meta = get_image_metadata(conn.getObject("Image", 1234))    # doctest: +SKIP
    >>> [c["name"] for c in meta["channels"]], meta["pixel_size_x"]  # doctest: +SKIP
    (['DAPI', 'GFP'], 0.325)
    """
    return _call("reading image metadata (getChannels, getPixelSizeX ...)", None, _read_metadata, image)


def _read_metadata(image: Any) -> dict[str, Any]:
    iid = int(image.getId())
    pixel_type = image.getPixelsType()
    channels = []
    for ch in image.getChannels() or ():
        color = ch.getColor()
        channels.append(
            {
                "name": str(ch.getLabel()),
                "color": _hex(color),
                "color_rgba": _rgba(color),
                "emission_wavelength": _length(ch.getEmissionWave, "NANOMETER"),
                "excitation_wavelength": _length(ch.getExcitationWave, "NANOMETER"),
                "window_start": _float(ch.getWindowStart()),
                "window_end": _float(ch.getWindowEnd()),
                "active": bool(ch.isActive()),
            }
        )
    acquired = image.getAcquisitionDate()
    return {
        "id": iid,
        "name": str(image.getName() or ""),
        "size_x": int(image.getSizeX()),
        "size_y": int(image.getSizeY()),
        "size_z": int(image.getSizeZ()),
        "size_c": int(image.getSizeC()),
        "size_t": int(image.getSizeT()),
        "pixel_type": _dtype_of(pixel_type, iid).name,
        "pixel_size_x": _length(image.getPixelSizeX, "MICROMETER"),
        "pixel_size_y": _length(image.getPixelSizeY, "MICROMETER"),
        "pixel_size_z": _length(image.getPixelSizeZ, "MICROMETER"),
        "acquisition_date": acquired if isinstance(acquired, datetime) else None,
        "channels": channels,
    }


def is_large_image(image: Any) -> bool:
    """Whether the server serves ``image`` by tiles (its planes are larger than the server's maximum plane).

    Example
    -------
    >>> is_large_image(conn.getObject("Image", 1234))    # doctest: +SKIP
    True
    """
    return bool(_call("requiresPixelsPyramid", None, image.requiresPixelsPyramid))


def _header(meta: dict[str, Any]) -> ImageHeader:
    chans = tuple(
        Channel(
            id=f"ch-{i}",
            name=ch["name"],
            emission_um=None if ch["emission_wavelength"] is None else ch["emission_wavelength"] / 1000.0,
            excitation_um=None if ch["excitation_wavelength"] is None else ch["excitation_wavelength"] / 1000.0,
            color_rgba=ch["color_rgba"],
        )
        for i, ch in enumerate(meta["channels"])
    )
    if len(chans) != meta["size_c"]:  # channel objects missing: default entries
        chans = tuple(Channel(id=f"ch-{i}", name=f"C{i}", color_rgba=DEFAULT_COLOR_RGBA) for i in range(meta["size_c"]))
    return ImageHeader(
        image_id=str(meta["id"]),
        name=meta["name"] or f"omero image {meta['id']}",
        image_type=None,
        acquisition_datetime=meta["acquisition_date"],
        channels=chans,
        physical_size_x=meta["pixel_size_x"],
        physical_size_y=meta["pixel_size_y"],
        physical_size_z=meta["pixel_size_z"],
        physical_size_x_unit=None if meta["pixel_size_x"] is None else "µm",
        physical_size_y_unit=None if meta["pixel_size_y"] is None else "µm",
        physical_size_z_unit=None if meta["pixel_size_z"] is None else "µm",
        dimension_order="XYZCT",
    )


def omero_level(level: int, n_levels: int) -> int:
    """OMERO's resolution level (0 = smallest) of omeframe's ``level`` (0 = full resolution).

    Example
    -------
    >>> [omero_level(k, 3) for k in range(3)]
    [2, 1, 0]
    """
    if not 0 <= int(level) < int(n_levels):
        raise ValueError(f"level {level} is outside the image's {n_levels} resolution levels (0..{n_levels - 1})")
    return int(n_levels) - 1 - int(level)


# ---------------------------------------------------------------------------
# raw pixel stores
# ---------------------------------------------------------------------------
class _StorePool:
    """Raw pixel stores of one image, each used by one thread at a time (at most ``max_stores``)."""

    def __init__(self, conn: Any, pixels_id: int, image_id: int, max_stores: int) -> None:
        self.conn = conn
        self.pixels_id = pixels_id
        self.image_id = image_id
        self.max_stores = max_stores
        self._cond = threading.Condition()
        self._idle: list[list[Any]] = []  # [store, current OMERO level or None]
        self._all: list[Any] = []
        self.closed = False

    def _new(self) -> list[Any]:
        store = _call("createRawPixelsStore", self.image_id, self.conn.createRawPixelsStore)
        try:
            _call("setPixelsId", self.image_id, store.setPixelsId, self.pixels_id, True, self.conn.SERVICE_OPTS)
        except BaseException:
            with contextlib.suppress(Exception):
                store.close()
            raise
        return [store, None]

    @contextlib.contextmanager
    def store(self) -> Iterator[list[Any]]:
        with self._cond:
            while True:
                if self.closed:
                    raise ValueError(f"the OMERO source of image {self.image_id} is closed; open it again")
                if self._idle:
                    entry = self._idle.pop()
                    break
                if len(self._all) < self.max_stores:
                    entry = self._new()
                    self._all.append(entry[0])
                    break
                self._cond.wait()
        try:
            yield entry
        finally:
            with self._cond:
                self._idle.append(entry)
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            if self.closed:
                return
            self.closed = True
            stores, self._all, self._idle = self._all, [], []
            self._cond.notify_all()
        for s in stores:
            with contextlib.suppress(Exception):  # closing a store of a dead session is best effort
                s.close()


def _finalize(pool: _StorePool, conn: Any, owns_conn: bool) -> None:
    pool.close()
    if owns_conn:
        with contextlib.suppress(Exception):
            conn.close()


class _OmeroImage:
    """What the levels of one OMERO image share: metadata, level sizes, tiles and the store pool."""

    def __init__(self, conn: Any, image_id: Any, *, max_stores: int, owns_conn: bool) -> None:
        if isinstance(max_stores, bool) or not isinstance(max_stores, int) or max_stores < 1:
            raise ValueError(f"max_stores must be an integer >= 1, got {max_stores!r}")
        image = _get_image(conn, image_id)
        self.conn = conn
        self.meta = get_image_metadata(image)
        self.image_id = self.meta["id"]
        self.dtype = np.dtype(self.meta["pixel_type"])
        self.header = _header(self.meta)
        pixels_id = int(_call("getPixelsId", self.image_id, image.getPixelsId))
        large = is_large_image(image)
        self.pool = _StorePool(conn, pixels_id, self.image_id, max_stores)
        self._finalizer = weakref.finalize(self, _finalize, self.pool, conn, owns_conn)
        try:
            self._describe_levels(large)
        except BaseException:
            self.pool.close()
            raise

    def _describe_levels(self, large: bool) -> None:
        sx, sy = self.meta["size_x"], self.meta["size_y"]
        with self.pool.store() as entry:
            store = entry[0]
            n = int(_call("getResolutionLevels", self.image_id, store.getResolutionLevels))
            if n > 1:
                descs = list(_call("getResolutionDescriptions", self.image_id, store.getResolutionDescriptions))
                sizes = [(int(d.sizeY), int(d.sizeX)) for d in descs]
                if len(sizes) != n or sizes[0] != (sy, sx):
                    raise SchemaError(
                        f"OMERO image {self.image_id}: the server describes {len(sizes)} resolution levels "
                        f"{sizes} for {n} levels of a {sx}x{sy} image; expected the full size first"
                    )
            else:
                sizes = [(sy, sx)]
            self.tiled = large or n > 1
            if self.tiled:
                tw, th = (int(v) for v in _call("getTileSize", self.image_id, store.getTileSize))
                if tw < 1 or th < 1:
                    raise SchemaError(f"OMERO image {self.image_id}: the server reports tile size {tw}x{th}")
                self.tile: tuple[int, int] | None = (th, tw)
            else:
                self.tile = None
        self.sizes = sizes
        self.n_levels = n

    def read(self, level: int, t: int, c: int, z: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Pixels ``[y:y+h, x:x+w]`` of plane ``(t, c, z)`` at omeframe level ``level``, native byte order."""
        with self.pool.store() as entry:
            store = entry[0]
            if self.n_levels > 1:
                want = omero_level(level, self.n_levels)
                if entry[1] != want:
                    _call("setResolutionLevel", self.image_id, store.setResolutionLevel, want)
                    entry[1] = want
            if self.tiled:
                buf = _call("getTile", self.image_id, store.getTile, z, c, t, x, y, w, h)
            else:
                buf = _call("getPlane", self.image_id, store.getPlane, z, c, t)
        raw = np.frombuffer(buf, dtype=self.dtype.newbyteorder(">"))
        if raw.size != h * w:
            raise PixelPayloadError(
                f"OMERO image {self.image_id}: the server returned {len(buf)} bytes for the {w}x{h} region at "
                f"x={x}, y={y} of plane t={t}, c={c}, z={z} (level {level}); expected {h * w * self.dtype.itemsize}"
            )
        return raw.astype(self.dtype).reshape(1, h, w)

    def close(self) -> None:
        self._finalizer()


class OmeroSource(LazySource):
    """One OMERO image (one pyramid level of it) read lazily through a BlitzGateway connection.

    Parameters
    ----------
    conn
        A connected ``omero.gateway.BlitzGateway``.
    image_id
        The OMERO image id.
    level
        Pyramid level, 0 = full resolution (OMERO's own numbering is the
        reverse; see :func:`omero_level`).
    max_stores
        Most raw pixel stores (server-side services) the source opens at once;
        parallel reads beyond that wait for a free store.

    Raises
    ------
    ImageNotFoundError
        When no image with ``image_id`` is visible to the session.
    OmeroConnectionError
        When the connection is closed or a server call fails.

    Example
    -------
    >>> src = OmeroSource(conn, 1234)                               # doctest: +SKIP
    >>> src.shape, src.dtype, len(src.levels())                      # doctest: +SKIP
    ((1, 3, 1, 40000, 60000), dtype('uint8'), 6)
    >>> omeframe.write_dataset(src, "slides/")                       # doctest: +SKIP
    """

    def __init__(self, conn: Any, image_id: int, *, level: int = 0, max_stores: int = 4) -> None:
        self._init(_OmeroImage(conn, image_id, max_stores=max_stores, owns_conn=False), level)

    @classmethod
    def _at(cls, shared: _OmeroImage, level: int) -> OmeroSource:
        src = cls.__new__(cls)
        src._init(shared, level)
        return src

    def _init(self, shared: _OmeroImage, level: int) -> None:
        super().__init__()
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise TypeError(f"level must be an integer, got {level!r}")
        if not 0 <= int(level) < shared.n_levels:
            raise ValueError(
                f"OMERO image {shared.image_id} has {shared.n_levels} resolution level(s); level {level} "
                f"does not exist (0 = full resolution .. {shared.n_levels - 1})"
            )
        self._shared = shared
        self.level = int(level)
        self._levels: list[LazySource] | None = None
        sy, sx = shared.sizes[self.level]
        m = shared.meta
        self._shape = (m["size_t"], m["size_c"], m["size_z"], sy, sx)
        how = f"tiles {shared.tile[1]}x{shared.tile[0]} (getTile)" if shared.tile else "planes (getPlane)"
        self.describe = f"OMERO image {shared.image_id} {m['name']!r} level {self.level}: {how}"

    @property
    def image_id(self) -> int:
        """The OMERO image id."""
        return int(self._shared.image_id)

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._shared.dtype

    def header(self) -> ImageHeader:
        h = self._shared.header
        if self.level == 0:
            return h
        sy0, sx0 = self._shared.sizes[0]
        sy, sx = self._shared.sizes[self.level]
        return replace(
            h,
            physical_size_x=None if h.physical_size_x is None else h.physical_size_x * sx0 / sx,
            physical_size_y=None if h.physical_size_y is None else h.physical_size_y * sy0 / sy,
        )

    def metadata(self) -> dict[str, Any]:
        """:func:`get_image_metadata` plus ``levels`` (``(size_x, size_y)`` per level, full first) and
        ``tile_size`` (``(width, height)`` of the server's tiles, ``None`` for plane reads)."""
        out = dict(self._shared.meta)
        out["channels"] = [dict(c) for c in out["channels"]]
        out["levels"] = [(sx, sy) for sy, sx in self._shared.sizes]
        out["tile_size"] = None if self._shared.tile is None else (self._shared.tile[1], self._shared.tile[0])
        return out

    def chunk_shape(self) -> tuple[int, int, int]:
        _, _, _, sy, sx = self._shape
        if self._shared.tile is None:
            return (1, sy, sx)
        th, tw = self._shared.tile
        return (1, min(th, sy), min(tw, sx))

    def levels(self) -> list[LazySource]:
        """This level and the coarser ones, full resolution first."""
        if self._levels is None:
            self._levels = [OmeroSource._at(self._shared, k) for k in range(self.level + 1, self._shared.n_levels)]
        return [self, *self._levels]

    def _open_pixels(self) -> RegularPieces:
        chunk = self.chunk_shape()
        origins, extents = regular_pieces(self._shape, chunk)
        shared, level = self._shared, self.level

        def decode(i: int, strict: bool) -> np.ndarray:
            t, c, z, y, x = (int(v) for v in origins[i])
            _, h, w = (int(v) for v in extents[i])
            return shared.read(level, t, c, z, y, x, h, w).ravel()

        nbytes = extents.prod(axis=1) * self.dtype.itemsize
        return RegularPieces(self._shape, self.dtype, chunk, decode, nbytes.astype(np.int64), True, self.describe)

    def close(self) -> None:
        """Close the raw pixel stores (and the connection when :func:`open_omero` made it)."""
        self._shared.close()

    def __enter__(self) -> OmeroSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"an OmeroSource (image {self.image_id}) holds a live OMERO connection and cannot be pickled or "
            "sent to another process; write it to a dataset first (omeframe.write_dataset(src, path))"
        )

    def __repr__(self) -> str:
        return f"OmeroSource(image_id={self.image_id}, level={self.level}, shape={self._shape}, dtype={self.dtype})"


# ---------------------------------------------------------------------------
# URLs and catalogs
# ---------------------------------------------------------------------------
def parse_omero_url(url: str) -> tuple[str, int, int]:
    """``(host, port, image_id)`` of ``omero://host[:port]/image/<id>`` (port 4064 when absent).

    Raises
    ------
    ValueError
        When ``url`` is not of that form.

    Example
    -------
    >>> parse_omero_url("omero://omero.example.org/image/1234")
    ('omero.example.org', 4064, 1234)
    """
    m = _URL.match(str(url).strip())
    if m is None:
        raise ValueError(
            f"{url!r} is no OMERO image URL; expected {OMERO_URL_SCHEME}://host[:port]/image/<id>, "
            "e.g. omero://omero.example.org:4064/image/1234"
        )
    return m.group("host"), int(m.group("port") or OMERO_DEFAULT_PORT), int(m.group("id"))


def open_omero(
    url: str, *, username: str, password: str, secure: bool = True, level: int = 0, max_stores: int = 4
) -> OmeroSource:
    """Connect to the server of ``omero://host[:port]/image/<id>`` and open that image.

    The source owns the connection: ``close()`` (or a ``with`` block) closes
    the pixel stores and the session. Needs omero-py (``pip install
    'omeframe[omero]'``).

    Raises
    ------
    ValueError
        When ``url`` is not an OMERO image URL.
    OptionalDependencyError
        When omero-py is not installed.
    OmeroConnectionError
        When the connection fails (with the server's reason).

    Example
    -------
    >>> with open_omero("omero://omero.example.org/image/1234", username="me", password="...") as src:  # doctest: +SKIP
    ...     tile = omeframe.TileProvider(src).get_tile(2, 0, 0, 0, 0, 0)
    """
    host, port, image_id = parse_omero_url(url)
    try:
        from omero.gateway import BlitzGateway  # lazy: omero
    except ImportError as exc:
        raise OptionalDependencyError(
            f"reading from OMERO needs omero-py, which is not installed ({exc}); install it with: {INSTALL_HINT}"
        ) from exc
    conn = BlitzGateway(username=username, passwd=password, host=host, port=port, secure=secure)
    try:
        ok = _call("connect", image_id, conn.connect)
    except OmeroConnectionError as exc:
        raise OmeroConnectionError(f"could not connect to OMERO at {host}:{port} as {username!r}: {exc}") from exc
    if not ok:
        reason = conn.getLastError()
        raise OmeroConnectionError(
            f"could not connect to OMERO at {host}:{port} as {username!r}"
            + (f": {reason}" if reason else "; check the host, port and credentials")
        )
    try:
        shared = _OmeroImage(conn, image_id, max_stores=max_stores, owns_conn=True)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise
    try:
        return OmeroSource._at(shared, level)
    except BaseException:
        shared.close()
        raise


def omero_catalog(conn: Any, image_ids: Iterable[Any]) -> pa.Table:
    """A table of OMERO images, one row per id, from metadata only (no pixels, no pixel stores).

    Columns (:data:`OMERO_CATALOG_SCHEMA`): ``image_id`` (the id omeframe gives
    the image, as in a dataset written from :class:`OmeroSource`),
    ``omero_id``, ``urlpath`` (``omero://host/image/<id>`` when the gateway
    knows its host), ``name``, ``shape`` (TCZYX), ``dtype``,
    ``physical_size_x/y/z`` (µm), ``channel_names`` and ``large`` (served by
    tiles). Ingest the pixels with
    ``omeframe.write_dataset([OmeroSource(conn, i) for i in ids], path)``.

    Raises
    ------
    ImageNotFoundError
        Naming the first id the session cannot see.
    OmeroConnectionError
        When the connection is closed or a server call fails.

    Example
    -------
    >>> table = omero_catalog(conn, [1234, 1235, 1236])   # doctest: +SKIP
    >>> table.column("shape").to_pylist()[0]              # doctest: +SKIP
    [1, 3, 12, 2048, 2048]
    """
    host = getattr(conn, "host", None)
    rows: dict[str, list[Any]] = {f.name: [] for f in OMERO_CATALOG_SCHEMA}
    for raw_id in image_ids:  # one server round trip per image: metadata only
        image = _get_image(conn, raw_id)
        m = get_image_metadata(image)
        rows["image_id"].append(str(m["id"]))
        rows["omero_id"].append(m["id"])
        rows["urlpath"].append(f"{OMERO_URL_SCHEME}://{host}/image/{m['id']}" if host else None)
        rows["name"].append(m["name"])
        rows["shape"].append([m["size_t"], m["size_c"], m["size_z"], m["size_y"], m["size_x"]])
        rows["dtype"].append(m["pixel_type"])
        for ax in "xyz":
            rows[f"physical_size_{ax}"].append(m[f"pixel_size_{ax}"])
        rows["channel_names"].append([c["name"] for c in m["channels"]])
        rows["large"].append(is_large_image(image))
    return pa.table(rows, schema=OMERO_CATALOG_SCHEMA)
