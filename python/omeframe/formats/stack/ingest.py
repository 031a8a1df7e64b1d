"""``from_stack_pattern_path``: a Bio-Formats-style file pattern into a record or dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from omeframe.formats.stack.source import MissingPolicy, StackSource
from omeframe.formats.dataset.ingest import ingest_source

__all__ = ["from_stack_pattern_path"]


def from_stack_pattern_path(
    pattern_path: str | os.PathLike[str],
    default_dim_for_unspecified: str = "C",
    map_series_to: str | None = "T",
    clamp_to_uint16: bool = False,
    channel_names: Sequence[str] | None = None,
    image_id: str | None = None,
    name: str | None = None,
    image_type: str | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    format: Literal["parquet", "vortex"] | None = None,
    chunk_shape: tuple[int, int, int] | None = None,
    compression: str | None = "zstd",
    progress: bool | None = None,
    missing: MissingPolicy = "error",
) -> Any:
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
    pyarrow.StructScalar or omeframe.Dataset
    """
    src = StackSource(
        pattern_path,
        default_dim_for_unspecified,
        map_series_to,
        missing=missing,
        channel_names=channel_names,
        image_id=image_id,
        name=name,
    )
    return ingest_source(
        src,
        out=out,
        format=format,
        image_type=image_type,
        clamp_to_uint16=clamp_to_uint16,
        chunk_shape=chunk_shape,
        compression=compression,
        progress=progress,
    )
