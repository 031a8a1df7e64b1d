"""TIFF / OME-TIFF: lazy tiled reads (:mod:`.source`) and OME-TIFF export (:mod:`.writer`)."""

#: File suffixes of TIFF files (classic, BigTIFF and their common aliases).
TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".btf", ".tf8", ".tf2")

__all__ = ["TIFF_SUFFIXES"]
