"""Record checks and summaries (``ome_arrow.utils``)."""

from __future__ import annotations

from typing import Any

from omeframe.ops.describe import describe_ome_arrow as _describe
from omeframe.ops.describe import verify_ome_arrow

__all__ = ["describe_ome_arrow", "verify_ome_arrow"]

_KEYS = ("shape", "type", "summary", "channels", "is_multichannel")


def reference_info(info: dict[str, Any]) -> dict[str, Any]:
    """omeframe's description cut to ome-arrow's keys, with its dtype-less summary."""
    out = {k: info[k] for k in _KEYS}
    dtype = info.get("dtype")
    if dtype and out["summary"].endswith(f", {dtype}"):
        out["summary"] = out["summary"][: -len(f", {dtype}")]
    return out


def describe_ome_arrow(data: Any) -> dict[str, Any]:
    """Describe a record: ``shape``, ``type``, ``summary``, ``channels``, ``is_multichannel``.

    Example
    -------
    >>> import numpy as np
    >>> from omeframe.compat.ome_arrow.ingest import from_numpy
    >>> describe_ome_arrow(from_numpy(np.zeros((1, 1, 1, 2, 3), "uint16")))["type"]
    '2D image'
    """
    return reference_info(_describe(data))
