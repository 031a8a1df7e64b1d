"""Viewer-grade access: plane and tile providers over the shared cache, reads in physical units.

* :class:`TileProvider` / :class:`PlaneProvider` (:mod:`omeframe.tiles.provider`):
  tiles and planes of every pyramid level on demand, single-flight, cached in
  the process-wide byte-budget cache, with background prefetching.
* :func:`get_array_at_mpp` (:mod:`omeframe.tiles.physical`): a region at a
  target resolution in µm per pixel, the level chosen for you.

This package sits above ``ops`` and below the façade in the layer order.
"""

from __future__ import annotations

import omeframe.registry  # noqa: F401  (installs the path/record resolver that as_source uses)
from omeframe.tiles.physical import get_array_at_mpp
from omeframe.tiles.provider import PlaneProvider, ProviderStats, TileProvider, source_token

__all__ = ["PlaneProvider", "ProviderStats", "TileProvider", "get_array_at_mpp", "source_token"]
