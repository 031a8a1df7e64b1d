"""Cropping records (``ome_arrow.transform``)."""

from __future__ import annotations

from omeframe.ops.slicing import slice_ome_arrow

__all__ = ["slice_ome_arrow"]
