"""Zeiss CZI: lazy tiled reads through the optional pylibCZIrw package (:mod:`.source`)."""

#: File suffixes of CZI files.
CZI_SUFFIXES: tuple[str, ...] = (".czi",)
#: The extra that installs the CZI reader: ``pip install 'omeframe[czi]'``.
CZI_EXTRA = "czi"

__all__ = ["CZI_SUFFIXES", "CZI_EXTRA"]
