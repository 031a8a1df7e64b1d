"""The façade: :class:`OMEArrow` (one image, in memory or as a lazy plan), :class:`Dataset` and the ingest functions.

Everything here is public API built on the layers below: the format
registry (:mod:`omeframe.registry`) opens inputs, the engine plans and reads,
and the dataset writer (:mod:`omeframe.formats.dataset.writer`) commits
manifests, which :func:`write_dataset` and the ingest functions wrap into a
:class:`Dataset`. The flat keyword arguments of the public functions become
:class:`~omeframe.engine.source.HeaderOptions` and
:class:`~omeframe.formats.dataset.writer.WriteOptions`, whose defaults are
the only ones.
"""

from __future__ import annotations

from omeframe.facade.dataset import Dataset, open_dataset, write_dataset
from omeframe.facade.ingest import from_ome_zarr, from_stack_pattern_path, from_tiff, ingest_source
from omeframe.facade.omearrow import OMEArrow, scan

__all__ = [
    "OMEArrow",
    "Dataset",
    "scan",
    "open_dataset",
    "write_dataset",
    "ingest_source",
    "from_tiff",
    "from_ome_zarr",
    "from_stack_pattern_path",
]
