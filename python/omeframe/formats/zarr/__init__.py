"""OME-Zarr 0.4 / 0.5: lazy chunked reads (:mod:`.source`) and export (:mod:`.writer`)."""

from pathlib import Path

#: Directory suffix of Zarr stores.
ZARR_SUFFIX = ".zarr"
#: Metadata files that mark a directory as a Zarr v3 (``zarr.json``) or v2 node.
ZARR_MARKERS: tuple[str, ...] = ("zarr.json", ".zgroup", ".zarray", ".zattrs")
#: The metadata files that hold a node's attributes (v3 ``zarr.json``, v2 ``.zattrs``).
ZARR_ATTRS_FILES: tuple[str, ...] = ("zarr.json", ".zattrs")


def is_zarr_dir(path: Path) -> bool:
    """True when ``path`` is a directory named ``*.zarr`` or holding Zarr metadata."""
    return path.is_dir() and (
        path.suffix.lower() == ZARR_SUFFIX or any((path / n).exists() for n in ZARR_MARKERS)
    )


__all__ = ["ZARR_SUFFIX", "ZARR_MARKERS", "ZARR_ATTRS_FILES", "is_zarr_dir"]
