"""Validated metadata models (OME-Zarr 0.4 / 0.5).

Imported lazily: ``omeframe.models.ImageMetadata`` loads pydantic on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Axis",
    "Dataset",
    "ImageAttrs04",
    "ImageAttrs05",
    "ImageLabel",
    "ImageMetadata",
    "Multiscale",
    "Omero",
    "OmeroChannel",
    "ScaleTransform",
    "TranslationTransform",
    "Window",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from omeframe.formats.zarr import models as ome_zarr  # lazy: pydantic

        return getattr(ome_zarr, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
