"""Lazy OME-Zarr 0.4 (zarr v2) and 0.5 (zarr v3, sharded too) image sources.

:func:`open_ome_zarr_source` validates the group's metadata with
:class:`omeframe.formats.zarr.models.ImageMetadata` and returns an
:class:`OmeZarrSource`: a :class:`~omeframe.formats.zarr.array.ZarrArraySource`
over one resolution level whose pieces are the array's chunks (for sharded
zarr v3 arrays the *inner* chunks: a read decodes only the inner chunks it
touches, through the shard index).

* ``levels()``: every multiscale level from this one down, as sources.
* ``labels()``: the label images of the ``labels/`` group, by name, each with
  ``image_type="label"`` and linked to this image (``.parent``,
  ``.parent_id``).
* ``header()``: channel names and colours from ``omero``, physical sizes and
  units from the level's scale (``micrometer`` -> ``µm``).

Missing chunks. Zarr does not store chunks that were never written (or that
equal the fill value); reading them yields the array's ``fill_value`` (0 when
a zarr v2 array declares ``fill_value: null``). omeframe keeps that
behaviour: a sparse OME-Zarr reads like the dense array zarr itself returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from omeframe.engine.source import LazySource
from omeframe.formats.zarr.array import ZarrArraySource, open_zarr_source
from omeframe.model.dims import CANONICAL
from omeframe.model.errors import DimOrderError, SchemaError
from omeframe.model.header import ImageHeader, default_channels
from omeframe.storage.url import parse_location

__all__ = ["OmeZarrSource", "open_ome_zarr_source", "label_names"]


class OmeZarrSource(ZarrArraySource):
    """One resolution level of an OME-Zarr image (see the module docstring)."""

    def __init__(
        self,
        group: Any,
        metadata: Any,
        level: int,
        *,
        label: str,
        image_id: str,
        name: str,
        image_type: str | None = None,
        parent: LazySource | None = None,
        levels_cache: dict[int, OmeZarrSource] | None = None,
    ) -> None:
        ms = metadata.multiscale
        n_levels = len(ms.datasets)
        if not 0 <= level < n_levels:
            raise SchemaError(f"{label} has {n_levels} resolution level(s); level {level} does not exist")
        ds = ms.datasets[level]
        arr = _open_level_array(group, ds.path, label)
        names = [a.name for a in ms.axes]
        _check_axes(arr, names, ds.path, label)
        axes = "".join(n.upper() for n in names)
        self.group = group
        self.metadata = metadata
        self.level = level
        self.parent = parent
        self.label_metadata = metadata.image_label
        self._label = label
        self._ids = (image_id, name, image_type)
        self._levels_cache = levels_cache if levels_cache is not None else {}
        self._levels_cache[level] = self
        header = _header(metadata, level, tuple(int(s) for s in arr.shape), arr.dtype, image_id, name, image_type)
        shards = getattr(arr, "shards", None)
        desc = f"OME-Zarr {metadata.version} {label} level {level} ('{ds.path}', chunks {arr.chunks}"
        desc += f", shards {shards})" if shards else ")"
        try:
            super().__init__(arr, axes, header, desc)
        except DimOrderError as exc:
            raise SchemaError(f"{label}: axes {names} cannot be mapped to TCZYX ({exc})") from exc

    # ---- protocol --------------------------------------------------------
    @property
    def parent_id(self) -> str | None:
        """Image id of the image this label image belongs to (``None`` for images)."""
        return None if self.parent is None else self.parent.header().image_id

    @property
    def n_levels(self) -> int:
        return len(self.metadata.multiscale.datasets)

    def level_source(self, level: int) -> OmeZarrSource:
        """Level ``level`` of this image (shared, opened once)."""
        if level not in self._levels_cache:
            image_id, name, image_type = self._ids
            OmeZarrSource(
                self.group, self.metadata, level, label=self._label, image_id=image_id, name=name,
                image_type=image_type, parent=self.parent, levels_cache=self._levels_cache,
            )
        return self._levels_cache[level]

    def levels(self) -> list[LazySource]:
        """This level and every coarser one (full resolution first when opened at level 0)."""
        return [self.level_source(i) for i in range(self.level, self.n_levels)]

    def labels(self) -> dict[str, LazySource]:
        """Label images of the ``labels/`` group (same level as this source), by name."""
        if self.parent is not None:  # label images have no labels of their own
            return {}
        out: dict[str, LazySource] = {}
        lg = _labels_group(self.group)
        if lg is None:
            return out
        image_id = self._ids[0]
        for lname in label_names(lg, self._label):
            try:
                node = lg[lname]
            except KeyError:
                raise SchemaError(
                    f"{self._label}: labels group lists label {lname!r} but it does not exist"
                ) from None
            src = open_ome_zarr_source(
                node,
                image_id=f"{image_id}/labels/{lname}",
                name=lname,
                image_type="label",
                _label=f"{self._label} label {lname!r}",
                _parent=self,
            )
            if self.level:
                if not isinstance(src, OmeZarrSource):
                    raise SchemaError(
                        f"{self._label}: label {lname!r} is a plain zarr array (one level), but level "
                        f"{self.level} was asked for; OME-Zarr label images are multiscale image groups"
                    )
                if self.level < src.n_levels:
                    src = src.level_source(self.level)
            out[lname] = src
        return out


def _open_level_array(group: Any, path: str, label: str) -> Any:
    import zarr

    try:
        arr = group[path]
    except KeyError:
        raise SchemaError(
            f"{label}: multiscales dataset path {path!r} does not exist in the group "
            f"(arrays present: {sorted(group.array_keys())[:8]})"
        ) from None
    if not isinstance(arr, zarr.Array):
        raise SchemaError(f"{label}: multiscales dataset path {path!r} is a group, not an array")
    return arr


def _check_axes(arr: Any, names: list[str], path: str, label: str) -> None:
    if arr.ndim != len(names):
        raise SchemaError(
            f"{label}: the metadata names {len(names)} axes {names} but array {path!r} has "
            f"{arr.ndim} dimensions (shape {tuple(arr.shape)}); the axes must describe the data"
        )
    unknown = [n for n in names if n.upper() not in CANONICAL or len(n) != 1]
    if unknown:
        raise SchemaError(
            f"{label}: axes {names} include {unknown}, which omeframe cannot map to TCZYX "
            "(axis names must be t, c, z, y, x)"
        )
    dims = getattr(getattr(arr, "metadata", None), "dimension_names", None)
    if dims is not None and any(d is not None for d in dims):
        if [str(d).lower() if d is not None else None for d in dims] != [n.lower() for n in names]:
            raise SchemaError(
                f"{label}: array {path!r} has dimension_names {list(dims)} but the multiscales "
                f"axes are {names}; they must match"
            )


def _header(
    metadata: Any,
    level: int,
    shape: tuple[int, ...],
    dtype: Any,
    image_id: str,
    name: str,
    image_type: str | None,
) -> ImageHeader:
    pm = metadata.to_pixels_meta(shape, np.dtype(dtype).name if np.dtype(dtype).kind != "b" else "bool")
    ms = metadata.multiscale
    scale = dict(zip((a.name.lower() for a in ms.axes), ms.level_scale(level), strict=True))
    chans = pm["channels"] or default_channels(None, pm["size_c"])
    # An axis the image lacks has no size; an axis without a unit keeps its scale (relative spacing)
    # but no unit, so its size in micrometres is unknown (reads in µm refuse it rather than assume µm).
    from omeframe.formats.zarr.models import unit_to_ome_arrow  # lazy: pydantic

    units = {a.name.lower(): unit_to_ome_arrow(a.unit) for a in ms.axes}
    phys: dict[str, Any] = {}
    for ax in "xyz":
        phys[f"physical_size_{ax}"] = float(scale[ax]) if ax in scale else None
        phys[f"physical_size_{ax}_unit"] = units.get(ax) if ax in scale else None
    return ImageHeader(
        image_id=image_id,
        name=name,
        image_type=image_type,
        acquisition_datetime=None,
        channels=chans,
        **phys,
    )


def _labels_group(group: Any) -> Any:
    import zarr

    try:
        node = group["labels"]
    except KeyError:
        return None
    return node if isinstance(node, zarr.Group) else None


def label_names(labels_group: Any, label: str = "labels group") -> list[str]:
    """Names listed by a ``labels`` group (0.4: ``attrs.labels``; 0.5: ``attrs.ome.labels``).

    A group without the list yields its child groups that carry multiscales.
    """
    attrs = labels_group.attrs.asdict()
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    names = ome.get("labels", attrs.get("labels"))
    if names is None:
        found = []
        for key in sorted(labels_group.group_keys()):
            a = labels_group[key].attrs.asdict()
            if "multiscales" in a or "multiscales" in (a.get("ome") or {}):
                found.append(key)
        return found
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SchemaError(f"{label}: 'labels' must be a list of label group names, got {names!r}")
    return list(names)


def open_remote_zarr(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The zarr group (or array) at a remote ``url``, through zarr's own fsspec store (read-only).

    Raises
    ------
    FileNotFoundError
        When there is no zarr node at ``url``.

    Example
    -------
    >>> group = open_remote_zarr("s3://bucket/cells.ome.zarr", {"anon": True})   # doctest: +SKIP
    """
    import zarr
    from zarr.storage import FsspecStore

    loc = parse_location(url)
    if loc is None:
        raise ValueError(f"{url!r} is not a remote URL")
    store = FsspecStore.from_url(loc.url, storage_options=dict(storage_options or {}), read_only=True)
    try:
        return zarr.open(store=store, mode="r")
    except (FileNotFoundError, KeyError) as exc:
        raise FileNotFoundError(f"no dataset or zarr store at {url!r} ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds
        if "not found" in str(exc).lower() or type(exc).__name__ in ("GroupNotFoundError", "NodeNotFoundError"):
            raise FileNotFoundError(f"no dataset or zarr store at {url!r}: {exc}") from exc
        raise


def open_ome_zarr_source(
    path_or_group: Any,
    *,
    level: int = 0,
    image_path: str | None = None,
    dim_order: str | None = None,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    _label: str | None = None,
    _parent: OmeZarrSource | None = None,
) -> OmeZarrSource | ZarrArraySource:
    """Open an OME-Zarr image (0.4 / zarr v2 or 0.5 / zarr v3) lazily.

    Parameters
    ----------
    path_or_group
        A directory / store path, or an open ``zarr.Group``. A plain
        ``zarr.Array`` (or a path to one) is opened as a raw array with
        ``dim_order`` axes instead.
    level
        Resolution level (0 = full resolution).
    image_path
        Sub-group holding the image (e.g. ``"0"`` in a bioformats2raw
        container).
    image_id, name, image_type
        Header overrides (default: the directory stem, the directory name and
        ``"label"`` for groups with ``image-label`` metadata).

    Raises
    ------
    FileNotFoundError
        When the path does not exist.
    SchemaError
        For groups without (valid) multiscales metadata, missing level arrays
        and axes that do not match the arrays.
    """
    import zarr

    from omeframe.formats.zarr.models import ImageMetadata  # lazy: pydantic

    default_id: str | None
    default_name: str | None
    if isinstance(path_or_group, (str, os.PathLike)):
        p = Path(path_or_group)
        if not p.exists():
            raise FileNotFoundError(f"no such zarr store: {str(p)!r}")
        try:
            node = zarr.open(str(p), mode="r")
        except Exception as exc:  # noqa: BLE001 - zarr raises many kinds
            raise SchemaError(f"{str(p)!r} is not a zarr store: {exc}") from exc
        label = f"{str(p)!r}"
        # Like ome-arrow's from_ome_zarr: id = directory stem, name = directory name.
        default_id, default_name = p.stem, p.name
    else:
        node = path_or_group
        gp = getattr(node, "path", "") or ""
        label = f"zarr node {gp or '/'!r}"
        base = gp.rstrip("/").rsplit("/", 1)[-1] if gp else ""
        default_id, default_name = base or None, base or None
    if image_path:
        if not isinstance(node, zarr.Group) or image_path not in node:
            raise SchemaError(f"{label} has no image group {image_path!r}")
        node = node[image_path]
        label = f"{label} image {image_path!r}"
    if _label is not None:
        label = _label
    if isinstance(node, zarr.Array):
        if level:
            raise ValueError(
                f"level={level} applies to OME-Zarr groups (multiscale images); {label} is a plain zarr array "
                "with one resolution; drop level="
            )
        return open_zarr_source(node, dim_order=dim_order)
    if not isinstance(node, zarr.Group):
        raise SchemaError(f"{label} is neither a zarr group nor a zarr array")
    if dim_order is not None:
        raise ValueError(
            f"dim_order= applies to plain zarr arrays; {label} is an OME-Zarr group whose axes come from its "
            "multiscales metadata; drop dim_order="
        )
    where = label if label.startswith("zarr") else f"zarr group {label}"
    meta = ImageMetadata.from_attrs(node.attrs.asdict(), where=where)
    ms = meta.multiscale
    mname = ms.name if isinstance(ms.name, str) and ms.name else None
    iid = image_id or default_id or mname or "unnamed"
    nm = name or default_name or mname or iid
    itype = image_type if image_type is not None else ("label" if meta.image_label is not None else None)
    return OmeZarrSource(
        node, meta, level, label=label, image_id=str(iid), name=str(nm), image_type=itype, parent=_parent
    )
