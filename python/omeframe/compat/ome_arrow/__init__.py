"""ome-arrow 0.1.0's Python API on omeframe's engine: ``import omeframe.compat.ome_arrow as ome_arrow``.

The modules (``core``, ``ingest``, ``export``, ``meta``, ``transform``,
``utils``, ``view``, ``tensor``, ``dataset``, ``shapes``) and their public
names, defaults, exception types and warning categories follow ome-arrow
0.1.0; the pixels are read and written by omeframe. What still differs is
listed in the README ("Differences from ome-arrow 0.1.0") and checked by
running ome-arrow's own test suite against this package
(``tests/compat/test_reference_suite.py``).
"""

from __future__ import annotations

from omeframe._version import __version__ as ome_arrow_version

from .core import OMEArrow
from .dataset import (
    AccessPattern,
    ChunkChoice,
    Layout,
    OMEArrowDataset,
    OMEArrowPixels,
    choose_chunking,
    write_ome_arrow_dataset,
)
from .export import to_numpy, to_ome_parquet, to_ome_tiff, to_ome_vortex, to_ome_zarr
from .ingest import (
    from_jax_array,
    from_numpy,
    from_ome_parquet,
    from_ome_vortex,
    from_ome_zarr,
    from_tiff,
    from_torch_array,
    to_ome_arrow,
)
from .meta import OME_ARROW_BYTE_STRUCT, OME_ARROW_STRUCT, OME_ARROW_TAG_TYPE, OME_ARROW_TAG_VERSION
from .shapes import (
    OME_ARROW_RELATIONSHIPS_METADATA_KEY,
    OME_ARROW_SHAPES_METADATA_KEY,
    OMEArrowShapes,
    geometry_storage_type,
    make_relationship_table,
    make_shape_table,
    read_shape_parquet,
    relationship_schema,
    shape_schema,
    validate_relationship_table,
    validate_shape_table,
    write_shape_parquet,
)
from .tensor import LazyTensorView, TensorView
from .utils import describe_ome_arrow, verify_ome_arrow
from .view import view_matplotlib, view_pyvista

__version__ = ome_arrow_version

__all__ = [
    "OMEArrow",
    "AccessPattern",
    "ChunkChoice",
    "Layout",
    "OMEArrowDataset",
    "OMEArrowPixels",
    "choose_chunking",
    "write_ome_arrow_dataset",
    "to_numpy",
    "to_ome_parquet",
    "to_ome_tiff",
    "to_ome_vortex",
    "to_ome_zarr",
    "from_jax_array",
    "from_numpy",
    "from_ome_parquet",
    "from_ome_vortex",
    "from_ome_zarr",
    "from_tiff",
    "from_torch_array",
    "to_ome_arrow",
    "OME_ARROW_BYTE_STRUCT",
    "OME_ARROW_STRUCT",
    "OME_ARROW_TAG_TYPE",
    "OME_ARROW_TAG_VERSION",
    "OME_ARROW_RELATIONSHIPS_METADATA_KEY",
    "OME_ARROW_SHAPES_METADATA_KEY",
    "OMEArrowShapes",
    "geometry_storage_type",
    "make_relationship_table",
    "make_shape_table",
    "read_shape_parquet",
    "relationship_schema",
    "shape_schema",
    "validate_relationship_table",
    "validate_shape_table",
    "write_shape_parquet",
    "LazyTensorView",
    "TensorView",
    "describe_ome_arrow",
    "verify_ome_arrow",
    "view_matplotlib",
    "view_pyvista",
    "ome_arrow_version",
]
