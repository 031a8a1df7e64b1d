"""Reader for ome-arrow 0.1.0 typed-chunk dataset directories.

``ome_arrow.write_ome_arrow_dataset`` (the reference implementation, 0.1.0)
writes a directory of Parquet tables, all tagged with the schema metadata
``ome.arrow.layout = typed-chunk-dataset``::

    _ome_arrow_dataset.json   marker: {"type": "ome.arrow", "layout": "typed-chunk-dataset", ...}
    images.parquet            one row per image: image_id, name, image_type, dtype,
                              size_t..size_x, layout, chunk_t..chunk_x, compression,
                              channels_json (the record's pixels_meta.channels as JSON)
    chunks.parquet            one row per chunk: image_id, chunk_id, t, c, z, y, x
                              (TCZYX origin), shape_t..shape_x, dtype, pixel_bytes
                              (raw C-order native-dtype bytes of the TCZYX block);
                              ``chunk_rows_per_row_group`` rows per row group (1 by default)
    index.parquet             optional (``build_physical_index``): one row per chunk
                              with chunk_id, row_group_id, row_index_in_group,
                              fragment_path (relative to the directory) and the
                              chunk's origin/shape, so a reader finds a chunk
                              without touching chunks.parquet

Compression is Parquet's own column compression (``compression=`` names the
Parquet codec), so a chunk payload comes out of Parquet as raw bytes. Physical
pixel sizes are not stored by the peer: unless the images table carries
``physical_size_*`` columns they are unknown (``None``), and reads in µm say so.

A chunk spans ``shape_t x shape_c`` planes-stacks; omeframe's pieces are
single ``(t, c)`` ZYX blocks, so such a chunk becomes ``shape_t * shape_c``
pieces that share one row-group read (kept in a small cache). Reading a
piece reads only the ``chunk_id``/``pixel_bytes`` column chunks of the row
group that holds it. ``ome_arrow`` is never imported here.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from omeframe.engine.codec import decode_payload
from omeframe.engine.pieces import Pieces, make_pieces
from omeframe.engine.source import StoredSource
from omeframe.formats.dataset.manifest import MANIFEST_NAME
from omeframe.model.dtypes import to_numpy_dtype
from omeframe.model.errors import CorruptFileError, PixelPayloadError, SchemaError, reraise_access_error
from omeframe.model.header import Channel, ImageHeader, default_channels

_CHANNEL_KEYS = frozenset(f.name for f in fields(Channel))
from omeframe.storage import files
from omeframe.storage.files import open_input
from omeframe.storage.parquet import open_parquet, read_errors
from omeframe.storage.parquet_footer import check_metadata, read_footer

__all__ = ["OMEArrowDatasetSource", "is_ome_arrow_dataset", "open_ome_arrow_dataset"]

MARKER = "_ome_arrow_dataset.json"
IMAGES = "images.parquet"
CHUNKS = "chunks.parquet"
INDEX = "index.parquet"
LAYOUT = "typed-chunk-dataset"
_LAYOUT_KEY = b"ome.arrow.layout"

_AXES = ("t", "c", "z", "y", "x")
_GEOMETRY = [*_AXES, *(f"shape_{a}" for a in _AXES)]
_IMAGE_COLUMNS = ("image_id", "dtype", *(f"size_{a}" for a in _AXES))
_INDEX_COLUMNS = ("image_id", "chunk_id", "row_group_id", "row_index_in_group", *_GEOMETRY)

#: Upper bound of decoded row groups kept for chunks that several pieces share.
_CACHE_BYTES = 64 << 20


# ---------------------------------------------------------------- detection
def _marker_says_dataset(path: Path) -> bool:
    try:
        meta = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("layout") == LAYOUT


def _table_says_dataset(path: Path) -> bool:
    try:
        md = pq.read_schema(path / IMAGES).metadata or {}
    except (OSError, pa.ArrowException):
        return False
    return md.get(_LAYOUT_KEY) == LAYOUT.encode()


def is_ome_arrow_dataset(path: Path) -> bool:
    """True when ``path`` looks like an ome-arrow typed-chunk dataset directory.

    Checks the ``_ome_arrow_dataset.json`` marker, else the layout tag in
    ``images.parquet``'s schema metadata (footer only). omeframe datasets
    (``manifest.json``) and anything else give False.
    """
    try:
        p = Path(path)
        if not p.is_dir() or (p / MANIFEST_NAME).is_file():
            return False
        if (p / MARKER).is_file() and _marker_says_dataset(p):
            return True
        return (p / IMAGES).is_file() and _table_says_dataset(p)
    except OSError:
        return False


# ---------------------------------------------------------------- opening
def open_ome_arrow_dataset(path: Path, *, image_id: str | None = None) -> OMEArrowDatasetSource:
    """Open one image of an ome-arrow typed-chunk dataset directory lazily.

    Raises
    ------
    ValueError
        When the directory holds several images and ``image_id`` is None.
    KeyError
        When ``image_id`` is not in the dataset.
    """
    return OMEArrowDatasetSource(path, image_id=image_id)


def _ids_text(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:20])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")


def _read_parquet(path: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    """A whole table of the dataset, its footer and the CRC of every page it reads checked (when written)."""
    if not path.is_file():
        raise CorruptFileError(f"ome-arrow dataset is missing {what}: {str(path)!r}")
    with read_errors(path), open_parquet(path) as pf:
        return pf.read(columns=columns)


def _require(table: pa.Table, columns: tuple[str, ...], label: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise SchemaError(f"{label} lacks column(s) {missing}; not an ome-arrow 0.1.0 typed-chunk dataset")


class _Fragment:
    """One chunk Parquet file: its footer (read once) and per-group payload sizes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise CorruptFileError(f"ome-arrow dataset is missing its chunk table {str(path)!r}")
        try:
            # the footer is checked as stored, parsed from the same bytes (read once, at open)
            with files.open_input(path) as fh:
                md, footer = read_footer(fh)
            self.metadata = pq.read_metadata(path) if md is None else md
            check_metadata(self.metadata, repr(str(path)), footer)  # before asking for column-chunk sizes
        except (pa.ArrowException, OSError) as exc:
            reraise_access_error(exc)
            raise CorruptFileError(f"{str(path)!r} is not a readable Parquet file ({exc})") from exc
        schema = self.metadata.schema.to_arrow_schema()
        for col in ("chunk_id", "pixel_bytes"):
            if schema.get_field_index(col) < 0:
                raise SchemaError(f"chunk table {str(path)!r} has no {col!r} column")
        md = self.metadata
        leaf = next(i for i in range(md.num_columns) if md.schema.column(i).path == "pixel_bytes")
        self.group_rows = np.array([md.row_group(g).num_rows for g in range(md.num_row_groups)], dtype=np.int64)
        self.group_payload = np.array(
            [md.row_group(g).column(leaf).total_compressed_size for g in range(md.num_row_groups)], dtype=np.int64
        )
        self.codec = md.row_group(0).column(leaf).compression if md.num_row_groups else "UNCOMPRESSED"

    def read_group(self, group: int) -> pa.Table:
        """The ``chunk_id`` and ``pixel_bytes`` column chunks of one row group (nothing else)."""
        if not 0 <= group < len(self.group_rows):
            raise PixelPayloadError(
                f"{str(self.path)!r} has {len(self.group_rows)} row groups; the index points at row group {group}"
            )
        with read_errors(f"{self.path} (row group {group})"), open_input(self.path) as fh:
            pf = pq.ParquetFile(fh, metadata=self.metadata, page_checksum_verification=True)
            return pf.read_row_group(group, columns=["chunk_id", "pixel_bytes"])


class _GroupCache:
    """Small byte-bounded LRU of row groups shared by several pieces (one read each)."""

    def __init__(self, limit: int = _CACHE_BYTES) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, int], threading.Lock] = {}
        self._items: OrderedDict[tuple[str, int], pa.Table] = OrderedDict()
        self._bytes = 0

    def get(self, frag: _Fragment, group: int) -> pa.Table:
        key = (str(frag.path), group)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
            klock = self._key_locks.setdefault(key, threading.Lock())
        with klock:
            with self._lock:
                hit = self._items.get(key)
                if hit is not None:
                    return hit
            table = frag.read_group(group)
            with self._lock:
                self._items[key] = table
                self._bytes += table.nbytes
                while self._bytes > self.limit and len(self._items) > 1:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes
                self._key_locks.pop(key, None)
            return table


class OMEArrowDatasetSource(StoredSource):
    """One image of an ome-arrow typed-chunk dataset directory."""

    def __init__(self, path: str | Path, *, image_id: str | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"no ome-arrow dataset directory at {str(self.path)!r}")
        images = _read_parquet(self.path / IMAGES, "its image table")
        _require(images, _IMAGE_COLUMNS, f"image table {str(self.path / IMAGES)!r}")
        ids = [str(v) for v in images["image_id"].to_pylist()]
        if not ids:
            raise ValueError(f"ome-arrow dataset {str(self.path)!r} holds no images")
        if image_id is None:
            if len(ids) > 1:
                raise ValueError(
                    f"ome-arrow dataset {str(self.path)!r} holds {len(ids)} images; pass image_id= "
                    f"one of {_ids_text(ids)}"
                )
            image_id = ids[0]
        image_id = str(image_id)
        if image_id not in ids:
            raise KeyError(
                f"image_id {image_id!r} is not in ome-arrow dataset {str(self.path)!r}; "
                f"available: {_ids_text(ids)}"
            )
        self.image_id = image_id
        self.image_ids = ids
        self.row: dict[str, Any] = images.slice(ids.index(image_id), 1).to_pylist()[0]
        self._dtype = to_numpy_dtype(str(self.row["dtype"]))
        self._shape: tuple[int, int, int, int, int] = tuple(  # type: ignore[assignment]
            int(self.row[f"size_{a}"]) for a in _AXES
        )
        if min(self._shape) <= 0:
            raise SchemaError(f"image {image_id!r} has invalid TCZYX size {self._shape}")
        self._cache = _GroupCache()
        self.describe = f"ome-arrow dataset {str(self.path)!r} image {image_id!r}"

    # ---- cheap metadata --------------------------------------------------
    def chunk_shape(self) -> tuple[int, int, int] | None:
        try:
            cz, cy, cx = (int(self.row[f"chunk_{a}"]) for a in "zyx")
        except (KeyError, TypeError, ValueError):
            return None
        _, _, sz, sy, sx = self._shape
        if min(cz, cy, cx) <= 0:
            return None
        return (min(cz, sz), min(cy, sy), min(cx, sx))

    def header(self) -> ImageHeader:
        row = self.row
        sc = self._shape[1]
        chans = self._channels(row.get("channels_json"), sc)

        # ome-arrow 0.1.0 does not store physical sizes; use them when a table has them.
        def num(key: str) -> float | None:
            # a size the images table does not carry is unknown, never 1 µm
            return None if row.get(key) is None else float(row[key])

        def unit(key: str) -> str | None:
            if num(key.removesuffix("_unit")) is None:
                return None
            return row[key] if key in row else "µm"

        return ImageHeader(
            image_id=self.image_id,
            name=str(row.get("name") or self.image_id),
            image_type=row.get("image_type"),
            acquisition_datetime=row.get("acquisition_datetime"),
            channels=chans,
            physical_size_x=num("physical_size_x"),
            physical_size_y=num("physical_size_y"),
            physical_size_z=num("physical_size_z"),
            physical_size_x_unit=unit("physical_size_x_unit"),
            physical_size_y_unit=unit("physical_size_y_unit"),
            physical_size_z_unit=unit("physical_size_z_unit"),
            dtype_meta=str(row["dtype"]),
            dimension_order=row.get("dimension_order"),
        )

    @staticmethod
    def _channels(text: Any, size_c: int) -> tuple[Channel, ...]:
        defaults = default_channels(None, size_c)
        try:
            stored = json.loads(text) if text else []
        except (TypeError, ValueError):
            stored = []
        if not isinstance(stored, list) or len(stored) != size_c:
            return defaults
        out = []
        for base, ch in zip(defaults, stored, strict=True):
            if isinstance(ch, str):
                ch = {"name": ch}
            if not isinstance(ch, dict):
                return defaults
            out.append(replace(base, **{k: v for k, v in ch.items() if v is not None and k in _CHANNEL_KEYS}))
        return tuple(out)

    # ---- pieces ----------------------------------------------------------
    def _chunk_rows(self) -> tuple[pa.Table, list[str], bool]:
        """This image's chunk rows (geometry + physical location), without pixel bytes."""
        index_path = self.path / INDEX
        if index_path.is_file():
            t = _read_parquet(index_path, "its index")
            _require(t, _INDEX_COLUMNS, f"index {str(index_path)!r}")
            t = t.filter(pc.equal(t["image_id"], self.image_id))
            if "fragment_path" in t.column_names:
                frags = [str(f) if f else CHUNKS for f in t["fragment_path"].to_pylist()]
            else:
                frags = [CHUNKS] * t.num_rows
            return t, frags, True
        # No physical index: project the small columns of chunks.parquet and
        # derive each row's row group from the row-group sizes.
        frag = _Fragment(self.path / CHUNKS)
        cols = ["image_id", "chunk_id", *_GEOMETRY]
        t = _read_parquet(self.path / CHUNKS, "its chunk table", columns=cols)
        starts = np.concatenate([[0], np.cumsum(frag.group_rows)])
        rows = np.arange(t.num_rows, dtype=np.int64)
        group = np.searchsorted(starts, rows, side="right") - 1
        t = t.append_column("row_group_id", pa.array(group.astype(np.int32)))
        t = t.append_column("row_index_in_group", pa.array((rows - starts[group]).astype(np.int32)))
        t = t.filter(pc.equal(t["image_id"], self.image_id))
        return t, [CHUNKS] * t.num_rows, False

    def _open_pixels(self) -> Pieces:
        table, frag_names, indexed = self._chunk_rows()
        names = ("chunk_id", "row_group_id", "row_index_in_group", *_GEOMETRY)
        table_cols = {name: table[name].to_numpy().astype(np.int64) for name in names}
        order = np.argsort(table_cols["chunk_id"], kind="stable")
        g = {k: v[order] for k, v in table_cols.items()}
        frag_names = [frag_names[i] for i in order]

        fragments: dict[str, _Fragment] = {}
        for name in dict.fromkeys(frag_names):
            p = (self.path / name).resolve()
            if self.path.resolve() not in p.parents:
                raise SchemaError(f"index fragment_path {name!r} points outside {str(self.path)!r}")
            fragments[name] = _Fragment(p)
        frag_of_chunk = [fragments[n] for n in frag_names]

        n_chunks = len(order)
        nt, nc = g["shape_t"], g["shape_c"]
        if n_chunks and (np.minimum(nt, nc) <= 0).any():
            raise PixelPayloadError(f"image {self.image_id!r} has a chunk with shape_t or shape_c <= 0")
        per = nt * nc
        piece_chunk = np.repeat(np.arange(n_chunks, dtype=np.int64), per)
        first = np.concatenate([[0], np.cumsum(per)[:-1]]) if n_chunks else np.zeros(0, np.int64)
        sub = np.arange(int(per.sum()), dtype=np.int64) - np.repeat(first, per)
        dt, dc = sub // np.repeat(nc, per), sub % np.repeat(nc, per)
        pc_ = piece_chunk
        origins = np.stack(
            [g["t"][pc_] + dt, g["c"][pc_] + dc, g["z"][pc_], g["y"][pc_], g["x"][pc_]], axis=1
        ).astype(np.int64).reshape(-1, 5)
        extents = np.stack(
            [g["shape_z"][piece_chunk], g["shape_y"][piece_chunk], g["shape_x"][piece_chunk]], axis=1
        ).astype(np.int64).reshape(-1, 3)

        # Stored bytes: the row group's pixel_bytes column chunk, shared by its rows and pieces.
        groups, rig, cids = g["row_group_id"], g["row_index_in_group"], g["chunk_id"]
        chunk_bytes = np.zeros(n_chunks, dtype=np.int64)
        shared = np.zeros(n_chunks, dtype=bool)
        for k in range(n_chunks):
            f, grp = frag_of_chunk[k], int(groups[k])
            if 0 <= grp < len(f.group_rows):
                chunk_bytes[k] = f.group_payload[grp] // max(int(f.group_rows[grp]), 1)
                shared[k] = f.group_rows[grp] > 1
        shared |= per > 1
        stored = (chunk_bytes // np.maximum(per, 1))[piece_chunk] if n_chunks else np.zeros(0, np.int64)

        dtype, iid, cache = self._dtype, self.image_id, self._cache
        label_src = str(self.path)

        def payload(k: int) -> Any:
            f, grp, r, cid = frag_of_chunk[k], int(groups[k]), int(rig[k]), int(cids[k])
            tbl = cache.get(f, grp) if shared[k] else f.read_group(grp)
            ids = tbl["chunk_id"]
            if not (0 <= r < tbl.num_rows and ids[r].as_py() == cid):
                hits = np.flatnonzero(ids.to_numpy() == cid)
                if not hits.size:
                    raise PixelPayloadError(
                        f"ome-arrow dataset {label_src!r} image {iid!r}: chunk {cid} is not in row group "
                        f"{grp} of {str(f.path)!r}"
                    )
                r = int(hits[0])
            value = tbl["pixel_bytes"][r]
            if not value.is_valid:
                raise PixelPayloadError(
                    f"ome-arrow dataset {label_src!r} image {iid!r}: chunk {cid} has null pixel_bytes"
                )
            return value.as_buffer()

        def decode(i: int, strict: bool) -> np.ndarray:
            k = int(piece_chunk[i])
            count = int(g["shape_z"][k] * g["shape_y"][k] * g["shape_x"][k])
            label = f"ome-arrow dataset image {iid!r} chunk {int(cids[k])}"
            flat = decode_payload(payload(k), None, dtype, count * int(per[k]), label=label, strict=strict)
            if per[k] == 1:
                return flat
            j = int(sub[i])
            return flat[j * count : (j + 1) * count]

        meta_files = (IMAGES, MARKER, *((INDEX,) if indexed else ()))
        meta = sum((self.path / n).stat().st_size for n in meta_files if (self.path / n).is_file())
        meta += sum(f.metadata.serialized_size for f in fragments.values())
        ct = tuple(int(self.row.get(f"chunk_{a}") or 0) for a in _AXES)
        codec = next(iter(fragments.values())).codec if fragments else "-"
        rows_per_group = int(max((f.group_rows.max() for f in fragments.values() if f.group_rows.size), default=1))
        how = "index.parquet" if indexed else "a chunk-table scan (no physical index)"
        describe = (
            f"{self.describe} (chunks {ct} TCZYX, parquet {str(codec).lower()}, "
            f"{rows_per_group} chunk(s) per row group, located via {how})"
        )
        return make_pieces(
            self._shape,
            dtype,
            origins,
            extents,
            decode,
            stored,
            True,
            describe,
            metadata_nbytes=int(meta),
            extra={"ome_arrow_dataset": self},
        )
