"""Numpy arrays and records already in memory (:mod:`.source`), and ``.npy`` files (:mod:`.npy`)."""

#: File suffixes of numpy array files (read memory-mapped).
NPY_SUFFIXES: tuple[str, ...] = (".npy",)

__all__ = ["NPY_SUFFIXES"]
