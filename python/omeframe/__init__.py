"""omeframe: Arrow-native columnar image tables.

Images of any dimensionality (TCZYX) become rows of Arrow tables in the
canonical OME-Arrow schema, stored in Parquet or Vortex, queryable with
DuckDB, Polars and pyarrow, and read back region by region.
"""

from __future__ import annotations

from ._threads import num_threads, set_num_threads
from ._version import __version__
from .core import OMEArrow, scan
from .dataset import Dataset, open_dataset, write_dataset
from .plan.lazy import LazyImage, PlanInfo
from .plan.predicates import chunk
from .tensor.view import LazyTensorView, TensorView
from .errors import (
    ChunkChecksumError,
    CorruptFileError,
    DimOrderError,
    DtypeError,
    ImageNotFoundError,
    NoOmeArrowColumnError,
    OmeframeError,
    OptionalDependencyError,
    PixelPayloadError,
    RowIndexError,
    SchemaError,
    SelectionError,
)
from .export.pixels import plane_from_chunks, to_dict, to_numpy, to_numpy_batch
from .ingest.arrays import from_jax_array, from_numpy, from_torch_array, to_ome_arrow
from .schema.types import (
    OME_ARROW_BYTE_STRUCT,
    OME_ARROW_KNOWN_STRUCTS,
    OME_ARROW_STRUCT,
    OME_ARROW_TAG_TYPE,
    OME_ARROW_TAG_VERSION,
)
from .tables import (
    from_ome_parquet,
    from_ome_vortex,
    read_table,
    records_from_arrays,
    to_ome_parquet,
    to_ome_vortex,
    write_table,
)
from .transform import slice_ome_arrow
from .utils import describe_ome_arrow, verify_ome_arrow
from .view import view_matplotlib
from .io.thumbnail import thumbnail_png
from .io.zarr_io import from_ome_zarr
from .export.ome_zarr import to_ome_zarr
from . import models
from .io.stack_io import from_stack_pattern_path
from . import loaders
from .io.tiff_io import from_tiff, open_lazy_plane_source
from .export.ome_tiff import to_ome_tiff
from .omexml import OMEXMLMismatchWarning
from .sources.tiff import UnsupportedTiffCompressionError
from . import catalog
from .loaders import ImageStack, load_arrays, load_czis, load_custom_file, load_iter_tiff, load_tiffs, load_zarrs

ome_arrow_version = __version__

__all__ = [
    "__version__",
    "OMEArrow",
    "scan",
    "Dataset",
    "open_dataset",
    "write_dataset",
    "LazyImage",
    "PlanInfo",
    "chunk",
    "TensorView",
    "LazyTensorView",
    "OME_ARROW_STRUCT",
    "OME_ARROW_BYTE_STRUCT",
    "OME_ARROW_KNOWN_STRUCTS",
    "OME_ARROW_TAG_TYPE",
    "OME_ARROW_TAG_VERSION",
    "from_numpy",
    "from_torch_array",
    "from_jax_array",
    "to_ome_arrow",
    "to_numpy",
    "to_numpy_batch",
    "plane_from_chunks",
    "to_dict",
    "thumbnail_png",
    "from_ome_zarr",
    "to_ome_zarr",
    "models",
    "from_stack_pattern_path",
    "loaders",
    "from_tiff",
    "open_lazy_plane_source",
    "to_ome_tiff",
    "OMEXMLMismatchWarning",
    "UnsupportedTiffCompressionError",
    "catalog",
    "ImageStack",
    "load_arrays",
    "load_tiffs",
    "load_iter_tiff",
    "load_zarrs",
    "load_czis",
    "load_custom_file",
    "to_ome_parquet",
    "to_ome_vortex",
    "from_ome_parquet",
    "from_ome_vortex",
    "write_table",
    "read_table",
    "records_from_arrays",
    "slice_ome_arrow",
    "describe_ome_arrow",
    "verify_ome_arrow",
    "view_matplotlib",
    "num_threads",
    "set_num_threads",
    "OmeframeError",
    "DimOrderError",
    "DtypeError",
    "SchemaError",
    "NoOmeArrowColumnError",
    "RowIndexError",
    "PixelPayloadError",
    "CorruptFileError",
    "ChunkChecksumError",
    "SelectionError",
    "ImageNotFoundError",
    "OptionalDependencyError",
]


def __getattr__(name: str) -> object:
    """``omeframe.duckdb`` / ``omeframe.polars``: imported on first use (keeps import light)."""
    if name in ("duckdb", "polars"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'omeframe' has no attribute {name!r}")
