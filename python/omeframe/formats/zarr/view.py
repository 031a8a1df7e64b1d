"""A read-only zarr v3 view of any omeframe image: its chunks served as a zarr store.

:class:`ZarrView` is a :class:`zarr.abc.store.Store` that computes every key
it is asked for instead of looking it up: ``zarr.json`` documents from the
image's metadata and chunk keys from the image's pixels. Nothing is copied
or written, so ``zarr.open_array`` / ``zarr.open_group``, ``dask.array.from_zarr``,
xarray and any other zarr v3 reader read an omeframe image in place.

How a chunk is served depends on where the pixels live:

* **stored**: an unchanged dataset image whose codec zarr knows (``zstd``,
  including framed zstd chunks, or raw bytes): the zarr array uses omeframe's
  chunk grid and that codec, and an interior chunk is one byte-range read of
  the stored payload (CRC-32 checked), not decoded or re-encoded. Chunks that
  zarr's regular grid pads (at the right and bottom edges) and chunks a preset
  stored raw inside a zstd image are decoded, padded and compressed again.
* **decoded**: anything else (records, TIFF, OME-Zarr, plans with a selection
  or cast, other codecs): each zarr chunk is read through the plan and served
  as raw little-endian bytes (no codec).

:func:`zarr_view` builds the view of one level (the array at the store's
root); :func:`zarr_group_view` the OME-Zarr 0.5 image group over all levels
(arrays ``"0"``, ``"1"`` ... under a group whose ``ome`` attributes describe
the multiscale pyramid, channel labels and colours).

``zarr`` and ``pydantic`` are imported at module level: import this module
inside the functions that need it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from omeframe.engine.codec import encode_payload
from omeframe.engine.derived import is_identity
from omeframe.engine.lazy import LazyImage
from omeframe.engine.pieces import Pieces
from omeframe.engine.source import HeaderOverride, LazySource
from omeframe.formats.dataset.source import DatasetSource
from omeframe.formats.zarr import ZARR_MARKERS
from omeframe.formats.zarr.models import ImageMetadata
from omeframe.model.dtypes import dtype_name
from omeframe.model.errors import SelectionError
from omeframe.model.header import ImageHeader

__all__ = ["ZarrView", "ArrayServer", "zarr_view", "zarr_group_view"]

_DIMS = ["t", "c", "z", "y", "x"]
#: The metadata document of a zarr v3 node.
_META = ZARR_MARKERS[0]
#: zarr codec of an omeframe codec whose stored payloads zarr decodes as they are.
_ZARR_CODECS = {"zstd": {"name": "zstd", "configuration": {"level": 0, "checksum": False}}}
#: zstd level of chunks this view has to compress itself (edge and raw-stored chunks).
_REENCODE_LEVEL = 1


def _stored_source(plan: LazyImage) -> DatasetSource | None:
    """The dataset source whose stored chunks ``plan`` reads unchanged, else ``None``."""
    if not is_identity(plan):
        return None
    src: LazySource = plan.source
    while isinstance(src, HeaderOverride):
        src = src.inner
    return src if isinstance(src, DatasetSource) else None


@dataclass
class ArrayServer:
    """One zarr array of a view: its ``zarr.json`` and how each chunk is produced.

    Attributes
    ----------
    plan
        The pixels (one level of an image, or a plan over it).
    chunks
        The zarr chunk shape, TCZYX (T and C chunks are 1).
    codec
        ``"zstd"`` or ``None`` (raw bytes).
    stored
        The dataset source whose chunk payloads are served as stored, or ``None``.
    """

    plan: LazyImage
    chunks: tuple[int, int, int, int, int]
    codec: str | None
    stored: DatasetSource | None

    @classmethod
    def of(cls, plan: LazyImage) -> ArrayServer:
        """The server of ``plan``: stored chunks when the codec maps to zarr's, else decoded."""
        stored = _stored_source(plan)
        dtype = plan.out_dtype
        little = dtype.byteorder != ">"
        if stored is not None and little:
            e = stored.entry
            if e.codec is None or e.codec in _ZARR_CODECS:
                cz, cy, cx = e.chunk_shape
                return cls(plan, (1, 1, cz, cy, cx), e.codec, stored)
        _, _, sz, sy, sx = plan.shape
        cz, cy, cx = plan.source.chunk_shape() or (1, 512, 512)
        chunks = (1, 1, max(1, min(cz, sz)), max(1, min(cy, sy)), max(1, min(cx, sx)))
        return cls(plan, chunks, None, None)

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self.plan.shape

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of chunks along each TCZYX axis."""
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))

    def metadata(self) -> dict[str, Any]:
        """The array's ``zarr.json`` document."""
        dtype = self.plan.out_dtype
        codecs: list[dict[str, Any]] = [
            {"name": "bytes", "configuration": {"endian": "little"}} if dtype.itemsize > 1 else {"name": "bytes"}
        ]
        if self.codec is not None:
            codecs.append(_ZARR_CODECS[self.codec])
        return {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(self.shape),
            "data_type": dtype_name(dtype),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(self.chunks)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": False if dtype.kind == "b" else 0,
            "codecs": codecs,
            "attributes": {},
            "dimension_names": list(_DIMS),
        }

    def chunk_coords(self, parts: Sequence[str]) -> tuple[int, ...] | None:
        """Chunk coordinates of a key's parts after ``c/``, or ``None`` when not a chunk of this array."""
        if len(parts) != 5:
            return None
        try:
            idx = tuple(int(p) for p in parts)
        except ValueError:
            return None
        if any(i < 0 or i >= g for i, g in zip(idx, self.grid, strict=True)):
            return None
        return idx

    def chunk_keys(self) -> Iterable[str]:
        """Every chunk key of the array (relative to the array), in C order."""
        for idx in np.ndindex(*self.grid):
            yield "c/" + "/".join(str(int(i)) for i in idx)

    def chunk_bytes(self, idx: tuple[int, ...]) -> bytes:
        """The encoded bytes of chunk ``idx`` (TCZYX chunk coordinates)."""
        origin = [i * c for i, c in zip(idx, self.chunks, strict=True)]
        stop = [min(o + c, s) for o, c, s in zip(origin, self.chunks, self.shape, strict=True)]
        full = tuple(b - a for a, b in zip(origin, stop, strict=True)) == self.chunks
        if self.stored is not None:
            pieces: Pieces = self.stored.pixel_source()
            e = self.stored.entry
            i = int(np.ravel_multi_index(idx, self.grid))
            if full and e.chunk_codec(i) == self.codec:
                return bytes(self.stored.dataset.read_chunk_bytes(e.image_id, e.level, i, verify=True))
            ext = tuple(int(v) for v in pieces.extents[i])
            block = np.asarray(pieces.decode(i, True)).reshape(ext)
        else:
            t, c, z0, y0, x0 = origin
            _, _, z1, y1, x1 = stop
            region = self.plan.select(t=[t], c=[c], z=slice(z0, z1), y=(y0, y1), x=(x0, x1))
            block = region.execute()[0, 0]
        dtype = self.plan.out_dtype.newbyteorder("<")
        if not full:
            padded = np.zeros(self.chunks[2:], dtype=dtype)
            padded[: block.shape[0], : block.shape[1], : block.shape[2]] = block
            block = padded
        raw = np.ascontiguousarray(block, dtype=dtype)
        if self.codec == "zstd":
            return bytes(memoryview(encode_payload(raw, "zstd", _REENCODE_LEVEL)[1]))
        return raw.tobytes()


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")


def _slice_bytes(data: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :] if byte_range.suffix else b""
    raise TypeError(f"unexpected byte range {byte_range!r}")


class ZarrView(Store):
    """A read-only zarr v3 store over omeframe images (see the module docstring).

    Parameters
    ----------
    arrays
        The arrays by path within the store (``""``: one array at the root).
    group_attributes
        When given, the root is a group with these attributes and the arrays
        sit below it.
    describe
        One line naming what the view shows (its ``repr``).

    Example
    -------
    >>> import zarr
    >>> store = omeframe.scan("slides/", image_id="s1").zarr_store(level=0)   # doctest: +SKIP
    >>> zarr.open_array(store, mode="r")[0, 0, 0, :256, :256]                 # doctest: +SKIP
    """

    def __init__(
        self, arrays: dict[str, ArrayServer], group_attributes: dict[str, Any] | None = None, describe: str = ""
    ) -> None:
        super().__init__(read_only=True)
        if group_attributes is None and set(arrays) != {""}:
            raise ValueError("a ZarrView without group attributes holds exactly one array, at the root ('')")
        self._arrays = dict(arrays)
        self._docs: dict[str, bytes] = {}
        if group_attributes is not None:
            self._docs[_META] = _json({"zarr_format": 3, "node_type": "group", "attributes": group_attributes})
        for path, server in self._arrays.items():
            self._docs[f"{path}/{_META}" if path else _META] = _json(server.metadata())
        self.describe = describe

    def __repr__(self) -> str:
        return f"<omeframe ZarrView (read-only) {self.describe}>"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def with_read_only(self, read_only: bool = False) -> Store:
        """This view (``read_only=True``); a writable view does not exist."""
        if not read_only:
            raise ValueError(self._read_only_message("open it for writing"))
        return self

    # ---- reading ------------------------------------------------------------
    def _locate(self, key: str) -> tuple[ArrayServer, tuple[int, ...]] | None:
        for path, server in self._arrays.items():
            prefix = f"{path}/c/" if path else "c/"
            if key.startswith(prefix):
                idx = server.chunk_coords(key[len(prefix) :].split("/"))
                if idx is not None:
                    return server, idx
        return None

    def get_bytes_sync(self, key: str) -> bytes | None:
        """The bytes of ``key`` (``None`` when the view has no such key), computed now."""
        doc = self._docs.get(key)
        if doc is not None:
            return doc
        found = self._locate(key)
        if found is None:
            return None
        server, idx = found
        return server.chunk_bytes(idx)

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """Read ``key`` (chunks are produced in a worker thread)."""
        proto = prototype or default_buffer_prototype()
        doc = self._docs.get(key)
        data = doc if doc is not None else await asyncio.to_thread(self.get_bytes_sync, key)
        if data is None:
            return None
        return proto.buffer.from_bytes(_slice_bytes(data, byte_range))

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        """Read several keys (or ranges of them) concurrently."""
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        return key in self._docs or self._locate(key) is not None

    # ---- listing ------------------------------------------------------------
    @property
    def supports_listing(self) -> bool:
        return True

    def _keys(self) -> Iterable[str]:
        yield from self._docs
        for path, server in self._arrays.items():
            for k in server.chunk_keys():
                yield f"{path}/{k}" if path else k

    async def list(self) -> AsyncIterator[str]:
        for k in self._keys():
            yield k

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for k in self._keys():
            if k.startswith(prefix):
                yield k

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        base = prefix.rstrip("/")
        base = base + "/" if base else ""
        seen: set[str] = set()
        for k in self._keys():
            if k.startswith(base):
                head = k[len(base) :].split("/", 1)[0]
                if head not in seen:
                    seen.add(head)
                    yield head

    # ---- writing: refused -----------------------------------------------------
    def _read_only_message(self, what: str) -> str:
        return (
            f"cannot {what}: an omeframe zarr view is read-only (it serves the image's chunks in place); "
            "to get a writable OME-Zarr copy, export it with omeframe.to_ome_zarr(image, path)"
        )

    @property
    def supports_writes(self) -> bool:
        return False

    @property
    def supports_deletes(self) -> bool:
        return False

    async def set(self, key: str, value: Buffer, byte_range: tuple[int, int] | None = None) -> None:
        raise ValueError(self._read_only_message(f"write {key!r}"))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        raise ValueError(self._read_only_message(f"write {key!r}"))

    async def delete(self, key: str) -> None:
        raise ValueError(self._read_only_message(f"delete {key!r}"))


def _level_plan(plan: LazyImage, level: int) -> LazyImage:
    levels = plan.levels
    if not 0 <= level < len(levels):
        raise SelectionError(
            f"level {level} does not exist: this image has {len(levels)} level(s), 0..{len(levels) - 1}"
        )
    return levels[level]


def zarr_view(plan: LazyImage, level: int = 0) -> ZarrView:
    """The read-only zarr v3 store of one level of ``plan`` (the array at the store's root).

    Raises
    ------
    SelectionError
        When ``level`` is not one of the image's levels.

    Example
    -------
    >>> store = zarr_view(LazyImage(source))                 # doctest: +SKIP
    >>> zarr.open_array(store, mode="r").shape               # doctest: +SKIP
    """
    server = ArrayServer.of(_level_plan(plan, level))
    how = "stored chunks" if server.stored is not None else "decoded chunks"
    return ZarrView({"": server}, None, f"level {level} of {plan.source.describe} ({how})")


def zarr_group_view(plan: LazyImage, header: ImageHeader | None = None, *, name: str | None = None) -> ZarrView:
    """The read-only OME-Zarr 0.5 image group of ``plan``: one array per pyramid level.

    The group's ``ome`` attributes hold the ``multiscales`` (TCZYX axes with
    units, each level's scale from the full-resolution pixel size and the
    level's shape) and ``omero`` channel labels and colours (display windows
    span the dtype's range: no pixel is read to measure them).

    Example
    -------
    >>> group = zarr.open_group(zarr_group_view(LazyImage(source)), mode="r")   # doctest: +SKIP
    >>> group["1"].shape                                                      # doctest: +SKIP
    """
    h = header or plan.header
    levels = plan.levels
    shape0 = levels[0].shape
    pm = h.pixels_meta(shape0, dtype_name(plan.out_dtype))
    meta = ImageMetadata.from_pixels_meta(
        pm,
        len(levels),
        version="0.5",
        name=name or h.name,
        multiscale_type="nearest" if (h.image_type or "") == "label" else "local_mean",
    )
    attrs = meta.to_attrs()
    size0 = {"y": h.physical_size_y, "x": h.physical_size_x}
    for k, (ds, lv) in enumerate(zip(attrs["ome"]["multiscales"][0]["datasets"], levels, strict=True)):
        ds["path"] = str(k)
        scale = [float(v) for v in ds["coordinateTransformations"][0]["scale"]]
        # each level's own factor (stored pyramids need not halve exactly)
        for i in (3, 4):
            base = size0[_DIMS[i]]
            base = float(base) if base and base > 0 else 1.0
            scale[i] = base * shape0[i] / lv.shape[i]
        ds["coordinateTransformations"][0]["scale"] = scale
    arrays = {str(k): ArrayServer.of(lv) for k, lv in enumerate(levels)}
    return ZarrView(arrays, attrs, f"OME-Zarr 0.5 group of {plan.source.describe}, {len(levels)} level(s)")

