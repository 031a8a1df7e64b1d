"""Ingest any lazy source into a record (small images) or a dataset (large ones).

This is the common tail of ``from_tiff``, ``from_ome_zarr``,
``from_stack_pattern_path`` and the loaders: the file-specific code only opens
a :class:`~omeframe.engine.source.LazySource`; the public functions (in
:mod:`omeframe.facade`) build the option objects from their flat keywords.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import HeaderOptions, HeaderOverride, LazySource
from omeframe.formats.dataset.manifest import Manifest
from omeframe.formats.dataset.writer import WriteItem, WriteOptions, write_items
from omeframe.formats.record.arrays import clamp_u16
from omeframe.formats.record.source import build_record

__all__ = ["ingest", "to_record", "pick_levels", "check_clamp", "Levels"]

#: Pyramid levels to ingest: ``"first"``, ``"all"``, a count, or level indices.
Levels = Literal["all", "first"] | int | Sequence[int]

# The defaults of ``header=`` / ``write=``: both are frozen dataclasses, so one shared
# instance is safe, and it is built once instead of at every call.
_NO_HEADER_OPTIONS = HeaderOptions()
_DEFAULT_WRITE = WriteOptions()


def pick_levels(levels: Levels, n: int) -> list[int]:
    """The level indices ``levels`` names among ``n`` levels.

    Raises
    ------
    ValueError
        For indices outside ``[0, n)``.
    """
    if levels == "first":
        picked = [0]
    elif levels == "all":
        picked = list(range(n))
    elif isinstance(levels, int):
        picked = list(range(min(levels, n)))
    else:
        picked = [int(v) for v in levels]
    bad = [v for v in picked if not 0 <= v < n]
    if bad:
        raise ValueError(f"level(s) {bad} do not exist; the source has {n} levels (0..{n - 1})")
    return picked


def to_record(
    source: LazySource,
    *,
    header: HeaderOptions = _NO_HEADER_OPTIONS,
    write: WriteOptions = _DEFAULT_WRITE,
    clamp_to_uint16: bool = False,
    chunk_encoding: Literal["bytes", "list"] = "bytes",
) -> pa.StructScalar:
    """Read ``source`` in full into one OME-Arrow record.

    ``write`` supplies the chunk shape (default: the source's chunking) and
    the codec of ``"bytes"`` chunks.
    """
    h = header.header(source)
    pixels = LazyImage(source).execute()
    if clamp_to_uint16:
        pixels = clamp_u16(pixels)
    return build_record(
        pixels, h, chunk_shape=write.chunk_shape or source.chunk_shape(), chunk_encoding=chunk_encoding,
        compression=write.compression, compression_level=write.compression_level,
    )


def ingest(
    source: LazySource,
    out: str | os.PathLike[str],
    *,
    header: HeaderOptions = _NO_HEADER_OPTIONS,
    write: WriteOptions = _DEFAULT_WRITE,
    levels: Levels = "first",
    labels: bool = False,
) -> Manifest:
    """Stream ``source`` (its picked pyramid levels, and label images when asked) into a dataset.

    Parameters
    ----------
    levels
        Pyramid levels to ingest (``"first"``: full resolution only).
    labels
        Also ingest the source's label images (as images with
        ``image_type="label"`` and ``parent_id`` set).
    write
        Dataset options; ``chunk_shape`` ``None`` means the source's own
        chunking, else (1, 512, 512).

    Returns
    -------
    Manifest
        The committed manifest.
    """
    hdr = header.header(source)
    write = replace(write, chunk_shape=write.chunk_shape or source.chunk_shape() or (1, 512, 512))
    all_levels = source.levels()
    picked = pick_levels(levels, len(all_levels))
    items: list[WriteItem] = []
    iid = hdr.image_id
    for lv in picked:
        src = all_levels[lv]
        h = replace(src.header(), image_id=iid, name=hdr.name, image_type=hdr.image_type,
                    channels=hdr.channels, acquisition_datetime=hdr.acquisition_datetime)
        items.append(WriteItem(HeaderOverride(src, h), iid, lv, None))
    if labels:
        for lname, lsrc in source.labels().items():
            lid = f"{iid}/labels/{lname}"
            lh = replace(lsrc.header(), image_id=lid, name=lname, image_type="label")
            label_levels = lsrc.levels()
            for lv in picked:
                if lv < len(label_levels):
                    items.append(WriteItem(HeaderOverride(label_levels[lv], replace(lh, image_id=lid)), lid, lv, iid))
    return write_items(items, out, write)


def check_out_options(out: object, given: Mapping[str, tuple[Any, Any]]) -> None:
    """Refuse options that apply to the other kind of result than the one ``out`` asks for.

    ``given`` maps each option to ``(value, default)``. Without ``out`` the
    image comes back as one record, so the dataset options (``format``,
    ``mode``, ``levels``, ``labels``, ``progress``) would do nothing; with
    ``out`` a dataset is written, which has no ``chunk_encoding``.

    Raises
    ------
    ValueError
        Naming the options set and what to do instead.
    """
    record_only = {"chunk_encoding"}
    unused = [
        k for k, (v, d) in given.items()
        if v != d and ((out is None) != (k in record_only))
    ]
    if not unused:
        return
    named = ", ".join(f"{k}={given[k][0]!r}" for k in unused)
    if out is None:
        raise ValueError(
            f"{named} {'applies' if len(unused) == 1 else 'apply'} to datasets, but without out= the image is "
            "returned as one record (level 0, no label images); pass out=<directory> to write a dataset, or drop "
            f"{', '.join(k + '=' for k in unused)}"
        )
    raise ValueError(
        f"{named} {'applies' if len(unused) == 1 else 'apply'} to records (out=None); a dataset stores "
        f"compressed byte chunks; drop {', '.join(k + '=' for k in unused)}"
    )


def check_clamp(source: LazySource, clamp_to_uint16: bool) -> None:
    """Reject ``clamp_to_uint16`` for datasets (they keep the native dtype)."""
    if clamp_to_uint16 and source.dtype != np.uint16:
        raise ValueError(
            "clamp_to_uint16 applies to records; datasets keep the native dtype "
            "(drop clamp_to_uint16, or pass out=None for a uint16 record)"
        )
