"""omeframe: Arrow-native columnar image tables.

Images of any dimensionality (TCZYX) become rows of Arrow tables in the
canonical OME-Arrow schema, stored in Parquet or Vortex, queryable with
DuckDB, Polars and pyarrow, and read back region by region.
"""

from __future__ import annotations

from omeframe import catalog, loaders, models
from omeframe._version import __version__
from omeframe.engine.lazy import LazyImage, PlanInfo
from omeframe.engine.limits import get_max_bytes, set_max_bytes
from omeframe.engine.predicates import chunk
from omeframe.engine.threads import num_threads, set_num_threads
from omeframe.facade import (
    Dataset,
    OMEArrow,
    from_ome_zarr,
    from_stack_pattern_path,
    from_tiff,
    ingest_source,
    open_dataset,
    scan,
    write_dataset,
)
from omeframe.formats.record.arrays import (
    from_jax_array,
    from_numpy,
    from_torch_array,
    to_ome_arrow,
)
from omeframe.formats.record.decode import (
    plane_from_chunks,
    to_dict,
    to_numpy,
    to_numpy_batch,
)
from omeframe.formats.record.tables import (
    from_ome_parquet,
    from_ome_vortex,
    read_table,
    records_from_arrays,
    to_ome_parquet,
    to_ome_vortex,
    write_table,
)
from omeframe.formats.tiff.omexml import OMEXMLMismatchWarning
from omeframe.formats.tiff.source import UnsupportedTiffCompressionError
from omeframe.formats.tiff.writer import to_ome_tiff
from omeframe.formats.zarr.writer import to_ome_zarr
from omeframe.loaders import (
    ImageStack,
    load_arrays,
    load_custom_file,
    load_czis,
    load_iter_tiff,
    load_tiffs,
    load_zarrs,
)
from omeframe.model.arrow import (
    OME_ARROW_BYTE_STRUCT,
    OME_ARROW_KNOWN_STRUCTS,
    OME_ARROW_STRUCT,
    OME_ARROW_TAG_TYPE,
    OME_ARROW_TAG_VERSION,
)
from omeframe.model.errors import (
    ChunkChecksumError,
    CorruptFileError,
    DimOrderError,
    DtypeError,
    FileTimeoutError,
    ImageNotFoundError,
    MissingChunksWarning,
    NoOmeArrowColumnError,
    NotRegularFileError,
    OmeframeError,
    OptionalDependencyError,
    PixelPayloadError,
    ResourceLimitError,
    RowIndexError,
    SchemaError,
    SelectionError,
    UnsupportedFormatError,
)
from omeframe.ops.describe import describe_ome_arrow, verify_ome_arrow
from omeframe.ops.slicing import slice_ome_arrow
from omeframe.ops.tensor_view import LazyTensorView, TensorView
from omeframe.ops.thumbnail import thumbnail_png
from omeframe.ops.view import view_matplotlib
from omeframe.registry import open_lazy_plane_source

ome_arrow_version = __version__

__all__ = [
    "__version__",
    "OMEArrow",
    "scan",
    "Dataset",
    "open_dataset",
    "write_dataset",
    "ingest_source",
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
    "get_max_bytes",
    "set_max_bytes",
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
    "UnsupportedFormatError",
    "ResourceLimitError",
    "MissingChunksWarning",
    "NotRegularFileError",
    "FileTimeoutError",
]


def __getattr__(name: str) -> object:
    """``omeframe.duckdb`` / ``omeframe.polars``: imported on first use (keeps import light)."""
    if name in ("duckdb", "polars"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'omeframe' has no attribute {name!r}")
