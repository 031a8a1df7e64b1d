"""omeframe: Arrow-native columnar image tables.

Images of any dimensionality (TCZYX) become rows of Arrow tables in the
canonical OME-Arrow schema, stored in Parquet or Vortex, queryable with
DuckDB, Polars and pyarrow, and read back region by region.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from omeframe._version import __version__

if TYPE_CHECKING:
    from omeframe import catalog, loaders, models, shapes
    from omeframe.engine.cache import cache_info, set_cache_bytes
    from omeframe.engine.heap import keep_batch_memory
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
    from omeframe.formats.omero.source import OmeroSource, omero_catalog, open_omero
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
    from omeframe.formats.record.image_table import ImageTable, open_table
    from omeframe.formats.record.stack import to_numpy_stack
    from omeframe.formats.record.tables import (
        from_ome_parquet,
        from_ome_vortex,
        read_table,
        records_from_arrays,
        to_ome_parquet,
        to_ome_vortex,
        write_table,
    )
    from omeframe.formats.record.verify import verify_table
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
        ConcurrentWriteError,
        CorruptFileError,
        DimOrderError,
        DtypeError,
        FileChangedError,
        FileTimeoutError,
        ImageNotFoundError,
        InvalidOMEXMLValueWarning,
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
        ShapeValidationError,
        UnitError,
        UnsupportedFormatError,
    )
    from omeframe.ops.describe import describe_ome_arrow, verify_ome_arrow
    from omeframe.ops.display import display
    from omeframe.ops.slicing import slice_ome_arrow
    from omeframe.ops.tensor_view import LazyTensorView, TensorView
    from omeframe.ops.thumbnail import thumbnail_png
    from omeframe.ops.view import view_matplotlib
    from omeframe.ops.view3d import view_pyvista
    from omeframe.registry import open_lazy_plane_source
    from omeframe.shapes import (
        crop_objects,
        make_relationship_table,
        make_shape_table,
        read_shapes,
        relationship_schema,
        shape_schema,
        shapes_from_labels,
        validate_relationship_table,
        validate_shape_table,
        write_shapes,
    )
    from omeframe.tiles import PlaneProvider, TileProvider, get_array_at_mpp

# Public names load on first use (PEP 562), so ``import omeframe`` stays cheap
# and a fresh process that only opens a table imports only what that needs.
_WITHOUT_REGISTRY = (
    "omeframe.formats.record.",
    "omeframe.model.",
    "omeframe.engine.threads",
    "omeframe.engine.limits",
    "omeframe.engine.cache",
    "omeframe.engine.heap",
)
_LAZY: dict[str, tuple[str, str | None]] = {
    "get_max_bytes": ("omeframe.engine.limits", 'get_max_bytes'),
    "set_max_bytes": ("omeframe.engine.limits", 'set_max_bytes'),
    "set_cache_bytes": ("omeframe.engine.cache", 'set_cache_bytes'),
    "cache_info": ("omeframe.engine.cache", 'cache_info'),
    "TileProvider": ("omeframe.tiles", 'TileProvider'),
    "PlaneProvider": ("omeframe.tiles", 'PlaneProvider'),
    "get_array_at_mpp": ("omeframe.tiles", 'get_array_at_mpp'),
    "OmeroSource": ("omeframe.formats.omero.source", 'OmeroSource'),
    "open_omero": ("omeframe.formats.omero.source", 'open_omero'),
    "omero_catalog": ("omeframe.formats.omero.source", 'omero_catalog'),
    "UnitError": ("omeframe.model.errors", 'UnitError'),
    "FileChangedError": ("omeframe.model.errors", 'FileChangedError'),
    "FileTimeoutError": ("omeframe.model.errors", 'FileTimeoutError'),
    "MissingChunksWarning": ("omeframe.model.errors", 'MissingChunksWarning'),
    "NotRegularFileError": ("omeframe.model.errors", 'NotRegularFileError'),
    "ResourceLimitError": ("omeframe.model.errors", 'ResourceLimitError'),
    "catalog": ("omeframe.catalog", None),
    "loaders": ("omeframe.loaders", None),
    "models": ("omeframe.models", None),
    "LazyImage": ("omeframe.engine.lazy", 'LazyImage'),
    "PlanInfo": ("omeframe.engine.lazy", 'PlanInfo'),
    "chunk": ("omeframe.engine.predicates", 'chunk'),
    "num_threads": ("omeframe.engine.threads", 'num_threads'),
    "set_num_threads": ("omeframe.engine.threads", 'set_num_threads'),
    "keep_batch_memory": ("omeframe.engine.heap", 'keep_batch_memory'),
    "Dataset": ("omeframe.facade", 'Dataset'),
    "OMEArrow": ("omeframe.facade", 'OMEArrow'),
    "from_ome_zarr": ("omeframe.facade", 'from_ome_zarr'),
    "from_stack_pattern_path": ("omeframe.facade", 'from_stack_pattern_path'),
    "from_tiff": ("omeframe.facade", 'from_tiff'),
    "ingest_source": ("omeframe.facade", 'ingest_source'),
    "open_dataset": ("omeframe.facade", 'open_dataset'),
    "scan": ("omeframe.facade", 'scan'),
    "write_dataset": ("omeframe.facade", 'write_dataset'),
    "from_jax_array": ("omeframe.formats.record.arrays", 'from_jax_array'),
    "from_numpy": ("omeframe.formats.record.arrays", 'from_numpy'),
    "from_torch_array": ("omeframe.formats.record.arrays", 'from_torch_array'),
    "to_ome_arrow": ("omeframe.formats.record.arrays", 'to_ome_arrow'),
    "plane_from_chunks": ("omeframe.formats.record.decode", 'plane_from_chunks'),
    "to_dict": ("omeframe.formats.record.decode", 'to_dict'),
    "to_numpy": ("omeframe.formats.record.decode", 'to_numpy'),
    "to_numpy_batch": ("omeframe.formats.record.decode", 'to_numpy_batch'),
    "ImageTable": ("omeframe.formats.record.image_table", 'ImageTable'),
    "open_table": ("omeframe.formats.record.image_table", 'open_table'),
    "to_numpy_stack": ("omeframe.formats.record.stack", 'to_numpy_stack'),
    "verify_table": ("omeframe.formats.record.verify", 'verify_table'),
    "from_ome_parquet": ("omeframe.formats.record.tables", 'from_ome_parquet'),
    "from_ome_vortex": ("omeframe.formats.record.tables", 'from_ome_vortex'),
    "read_table": ("omeframe.formats.record.tables", 'read_table'),
    "records_from_arrays": ("omeframe.formats.record.tables", 'records_from_arrays'),
    "to_ome_parquet": ("omeframe.formats.record.tables", 'to_ome_parquet'),
    "to_ome_vortex": ("omeframe.formats.record.tables", 'to_ome_vortex'),
    "write_table": ("omeframe.formats.record.tables", 'write_table'),
    "OMEXMLMismatchWarning": ("omeframe.formats.tiff.omexml", 'OMEXMLMismatchWarning'),
    "UnsupportedTiffCompressionError": ("omeframe.formats.tiff.source", 'UnsupportedTiffCompressionError'),
    "to_ome_tiff": ("omeframe.formats.tiff.writer", 'to_ome_tiff'),
    "to_ome_zarr": ("omeframe.formats.zarr.writer", 'to_ome_zarr'),
    "ImageStack": ("omeframe.loaders", 'ImageStack'),
    "load_arrays": ("omeframe.loaders", 'load_arrays'),
    "load_custom_file": ("omeframe.loaders", 'load_custom_file'),
    "load_czis": ("omeframe.loaders", 'load_czis'),
    "load_iter_tiff": ("omeframe.loaders", 'load_iter_tiff'),
    "load_tiffs": ("omeframe.loaders", 'load_tiffs'),
    "load_zarrs": ("omeframe.loaders", 'load_zarrs'),
    "OME_ARROW_BYTE_STRUCT": ("omeframe.model.arrow", 'OME_ARROW_BYTE_STRUCT'),
    "OME_ARROW_KNOWN_STRUCTS": ("omeframe.model.arrow", 'OME_ARROW_KNOWN_STRUCTS'),
    "OME_ARROW_STRUCT": ("omeframe.model.arrow", 'OME_ARROW_STRUCT'),
    "OME_ARROW_TAG_TYPE": ("omeframe.model.arrow", 'OME_ARROW_TAG_TYPE'),
    "OME_ARROW_TAG_VERSION": ("omeframe.model.arrow", 'OME_ARROW_TAG_VERSION'),
    "ChunkChecksumError": ("omeframe.model.errors", 'ChunkChecksumError'),
    "ConcurrentWriteError": ("omeframe.model.errors", 'ConcurrentWriteError'),
    "CorruptFileError": ("omeframe.model.errors", 'CorruptFileError'),
    "DimOrderError": ("omeframe.model.errors", 'DimOrderError'),
    "DtypeError": ("omeframe.model.errors", 'DtypeError'),
    "ImageNotFoundError": ("omeframe.model.errors", 'ImageNotFoundError'),
    "InvalidOMEXMLValueWarning": ("omeframe.model.errors", 'InvalidOMEXMLValueWarning'),
    "NoOmeArrowColumnError": ("omeframe.model.errors", 'NoOmeArrowColumnError'),
    "OmeframeError": ("omeframe.model.errors", 'OmeframeError'),
    "OptionalDependencyError": ("omeframe.model.errors", 'OptionalDependencyError'),
    "PixelPayloadError": ("omeframe.model.errors", 'PixelPayloadError'),
    "RowIndexError": ("omeframe.model.errors", 'RowIndexError'),
    "SchemaError": ("omeframe.model.errors", 'SchemaError'),
    "SelectionError": ("omeframe.model.errors", 'SelectionError'),
    "UnsupportedFormatError": ("omeframe.model.errors", 'UnsupportedFormatError'),
    "describe_ome_arrow": ("omeframe.ops.describe", 'describe_ome_arrow'),
    "verify_ome_arrow": ("omeframe.ops.describe", 'verify_ome_arrow'),
    "slice_ome_arrow": ("omeframe.ops.slicing", 'slice_ome_arrow'),
    "LazyTensorView": ("omeframe.ops.tensor_view", 'LazyTensorView'),
    "TensorView": ("omeframe.ops.tensor_view", 'TensorView'),
    "thumbnail_png": ("omeframe.ops.thumbnail", 'thumbnail_png'),
    "display": ("omeframe.ops.display", 'display'),
    "view_matplotlib": ("omeframe.ops.view", 'view_matplotlib'),
    "view_pyvista": ("omeframe.ops.view3d", 'view_pyvista'),
    "open_lazy_plane_source": ("omeframe.registry", 'open_lazy_plane_source'),
    "shapes": ("omeframe.shapes", None),
    "make_shape_table": ("omeframe.shapes", 'make_shape_table'),
    "make_relationship_table": ("omeframe.shapes", 'make_relationship_table'),
    "validate_shape_table": ("omeframe.shapes", 'validate_shape_table'),
    "validate_relationship_table": ("omeframe.shapes", 'validate_relationship_table'),
    "shape_schema": ("omeframe.shapes", 'shape_schema'),
    "relationship_schema": ("omeframe.shapes", 'relationship_schema'),
    "read_shapes": ("omeframe.shapes", 'read_shapes'),
    "write_shapes": ("omeframe.shapes", 'write_shapes'),
    "shapes_from_labels": ("omeframe.shapes", 'shapes_from_labels'),
    "crop_objects": ("omeframe.shapes", 'crop_objects'),
    "ShapeValidationError": ("omeframe.model.errors", 'ShapeValidationError'),
}

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
    "display",
    "from_ome_zarr",
    "to_ome_zarr",
    "models",
    "from_stack_pattern_path",
    "loaders",
    "from_tiff",
    "open_lazy_plane_source",
    "to_ome_tiff",
    "OMEXMLMismatchWarning",
    "InvalidOMEXMLValueWarning",
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
    "open_table",
    "ImageTable",
    "to_numpy_stack",
    "verify_table",
    "records_from_arrays",
    "slice_ome_arrow",
    "describe_ome_arrow",
    "verify_ome_arrow",
    "view_matplotlib",
    "view_pyvista",
    "num_threads",
    "set_num_threads",
    "keep_batch_memory",
    "get_max_bytes",
    "set_max_bytes",
    "set_cache_bytes",
    "cache_info",
    "TileProvider",
    "PlaneProvider",
    "get_array_at_mpp",
    "OmeroSource",
    "open_omero",
    "omero_catalog",
    "UnitError",
    "OmeframeError",
    "DimOrderError",
    "DtypeError",
    "SchemaError",
    "NoOmeArrowColumnError",
    "RowIndexError",
    "PixelPayloadError",
    "CorruptFileError",
    "ChunkChecksumError",
    "ConcurrentWriteError",
    "SelectionError",
    "ImageNotFoundError",
    "OptionalDependencyError",
    "UnsupportedFormatError",
    "ResourceLimitError",
    "MissingChunksWarning",
    "NotRegularFileError",
    "FileChangedError",
    "FileTimeoutError",
    "ShapeValidationError",
    "shapes",
    "make_shape_table",
    "make_relationship_table",
    "validate_shape_table",
    "validate_relationship_table",
    "shape_schema",
    "relationship_schema",
    "read_shapes",
    "write_shapes",
    "shapes_from_labels",
    "crop_objects",
]


def __getattr__(name: str) -> object:
    """Load a public name (or ``omeframe.duckdb`` / ``omeframe.polars``) on first use."""
    found = _LAZY.get(name)
    if found is None:
        if name in ("duckdb", "polars", "torch", "jax"):
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'omeframe' has no attribute {name!r}")
    module, attr = found
    if not module.startswith(_WITHOUT_REGISTRY):
        # Anything beyond record tables may resolve paths and arrays to
        # sources, which needs the format registry wired into the engine.
        importlib.import_module("omeframe.registry")
    value = importlib.import_module(module) if attr is None else getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
