"""DuckDB connections that know omeframe: SQL functions and table registration.

:func:`connect` opens a connection with the ``ome_*`` SQL functions
(:mod:`omeframe.query.duckdb_udfs`); :func:`register` makes record tables and
chunked datasets appear as views, so plain SQL reaches their metadata,
feature columns and chunk statistics with projection and filter pushdown:

* Parquet files are read by DuckDB's own reader (``read_parquet``): it prunes
  columns and row groups (by statistics) itself.
* Vortex files (DuckDB has no Vortex reader here) are registered through a
  ``pyarrow.dataset.Dataset`` that reports plain Arrow types
  (:func:`omeframe.formats.vortex.arrow_dataset.vortex_plain_dataset`); DuckDB
  pushes its projections and filters into that dataset's scanner.
* A dataset directory becomes two views: ``<name>_images`` (one row per
  image and level) and ``<name>_chunks`` (one row per chunk, all parts of
  the manifest: never a glob, which could pick up files the manifest does
  not name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omeframe.formats.dataset import CHUNKS_SCHEMA, DatasetReader
from omeframe.formats.dataset.schema import CHUNK_KEY
from omeframe.formats.record.files import TABLE_FORMATS, detect_format, find_record_column
from omeframe.formats.record.remote import ranged_filesystem, read_schema_remote
from omeframe.model.errors import NoOmeArrowColumnError, UnsupportedFormatError
from omeframe.query.duckdb_udfs import register_functions as _reg
from omeframe.storage.parquet_crc import CheckedParquetFile
from omeframe.storage.url import check_storage_options, local_path, parse_location

__all__ = ["connect", "register", "register_functions"]


def register_functions(con: Any) -> Any:
    """Add the ``ome_*`` SQL functions to an existing DuckDB connection; return it.

    Raises
    ------
    TypeError
        If ``con`` is not a DuckDB connection.
    """
    _check_connection(con)
    return _reg(con)


def _check_connection(con: Any) -> None:
    """A :class:`TypeError` unless ``con`` is a DuckDB connection."""
    try:
        import duckdb
    except ImportError:  # then nothing is a DuckDB connection
        ok = False
    else:
        ok = isinstance(con, duckdb.DuckDBPyConnection)
    if not ok:
        raise TypeError(
            f"con must be a DuckDB connection, got {type(con).__name__} {con!r}; open one with "
            "omeframe.duckdb.connect() (or duckdb.connect())"
        )


#: Top-level packages of the Arrow objects and data frames ``register`` hands to DuckDB as they are.
_FRAME_PACKAGES = ("pyarrow", "polars", "pandas")


def _check_path(path: Any) -> None:
    """A :class:`TypeError` unless ``path`` is something :func:`register` registers."""
    if isinstance(path, (str, os.PathLike)):
        if not os.fspath(path):
            raise ValueError("path must name a record table, a dataset directory or a URL, got an empty string")
        return
    if type(path).__module__.split(".", 1)[0] in _FRAME_PACKAGES:
        return
    many = (
        f"; register each of the {len(path)} under its own name"
        if isinstance(path, (list, tuple)) and path
        else ""
    )
    raise TypeError(
        "path must be one record table (Parquet or Vortex) or dataset directory, as a path or URL, or an "
        f"Arrow object (pyarrow.Table, pyarrow.dataset.Dataset, a Polars or pandas frame), got "
        f"{type(path).__name__} {path!r}{many}"
    )


def connect(database: str = ":memory:", **kwargs: Any) -> Any:
    """Open a DuckDB connection with the ``ome_*`` SQL functions registered.

    ``database`` and ``kwargs`` go to :func:`duckdb.connect`.
    """
    import duckdb

    con = duckdb.connect(database, **kwargs)
    register_functions(con)
    return con


def _ident(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a view name must be a non-empty string, got {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _literal(path: str | os.PathLike[str]) -> str:
    return "'" + os.fspath(path).replace("'", "''") + "'"


def _parquet_list(paths: list[Path]) -> str:
    return "[" + ", ".join(_literal(p) for p in paths) + "]"


def _vortex_dataset(path: Path, verify: bool, chunks: bool = False) -> Any:
    """``path`` as an Arrow dataset; a dataset's chunk part (``chunks``) checks each payload it reads.

    ``verify``: every byte of the file is checked now against its body CRC (see
    :func:`~omeframe.formats.vortex.arrow_dataset.vortex_plain_dataset`).
    """
    from omeframe.formats.vortex.arrow_dataset import PayloadCrcs, vortex_plain_dataset  # lazy: pyarrow.dataset

    crcs = PayloadCrcs("pixel_bytes", "checksum", CHUNK_KEY) if chunks else None
    return vortex_plain_dataset(path, payload_crcs=crcs, verify=verify)


def _drop(con: Any, name: str) -> None:
    """Remove a registered object or temporary view called ``name``."""
    try:
        con.unregister(name)
    except Exception:  # noqa: BLE001 - nothing registered under that name
        pass
    con.execute(f"DROP VIEW IF EXISTS temp.{_ident(name)}")


def _view(con: Any, name: str, sql: str) -> None:
    _drop(con, name)
    con.execute(f"CREATE TEMP VIEW {_ident(name)} AS {sql}")


def _register_arrow(con: Any, name: str, obj: Any) -> None:
    """Register a Python Arrow object (table or dataset) as a temporary view."""
    _drop(con, name)
    con.register(name, obj)


def _frame_schema(frame: Any) -> Any:
    """The Arrow schema of a Polars or pandas data frame (to check ``column_name`` against)."""
    import pyarrow as pa

    if hasattr(frame, "to_arrow"):  # Polars (zero-copy)
        return frame.to_arrow().schema
    try:
        return pa.Schema.from_pandas(frame)
    except (TypeError, pa.ArrowException) as exc:
        raise ValueError(
            f"column_name= cannot be checked against a {type(frame).__name__}; register an Arrow table, a "
            "Polars or pandas frame, a file or a dataset, or drop column_name="
        ) from exc


def _check_record_column(schema: Any, column_name: str | None, source: str) -> None:
    if column_name is None:
        return
    found = find_record_column(schema, column_name, source=source)
    if found != column_name:
        raise NoOmeArrowColumnError(
            f"{source} has no OME-Arrow column {column_name!r}; its OME-Arrow column is {found!r}"
        )


def _check_pages(paths: Sequence[Path]) -> None:
    """Check every page CRC of the local Parquet files ``paths`` (DuckDB's reader checks none)."""
    for path in paths:
        with CheckedParquetFile(path) as pf:
            pf.check()


def _register_file(con: Any, name: str, path: Path, column_name: str | None, verify: bool) -> list[str]:
    fmt = detect_format(path)
    if fmt == "parquet":
        if column_name is not None:
            import pyarrow.parquet as pq

            _check_record_column(pq.read_schema(path), column_name, repr(str(path)))
        if verify:
            _check_pages([path])
        _view(con, name, f"SELECT * FROM read_parquet({_literal(path)})")
        return [name]
    ds = _vortex_dataset(path, verify)
    _check_record_column(ds.schema, column_name, repr(str(path)))
    _register_arrow(con, name, ds)
    return [name]


def _register_dataset(con: Any, name: str, path: Path, verify: bool) -> list[str]:
    ds = DatasetReader(path)
    images, chunks = f"{name}_images", f"{name}_chunks"
    parts = ds.chunk_paths
    if verify:  # the views read the images table itself, not the checked copy readers open
        images_file = ds.images_path
        ds.manifest.check_file(images_file.name, images_file.read_bytes(), f"images table {str(images_file)!r}")
    if ds.format == "parquet":
        if verify:
            _check_pages(parts)
        _view(con, images, f"SELECT * FROM read_parquet({_literal(ds.images_path)})")
        if parts:
            _view(con, chunks, f"SELECT * FROM read_parquet({_parquet_list(parts)})")
        else:
            _register_arrow(con, chunks, CHUNKS_SCHEMA.empty_table())
        return [images, chunks]
    _register_arrow(con, images, _vortex_dataset(ds.images_path, verify))
    if len(parts) == 1:
        _register_arrow(con, chunks, _vortex_dataset(parts[0], verify, chunks=True))
    elif parts:
        # one registered scan per part under a UNION ALL view: DuckDB pushes
        # projections and filters into every branch
        selects = []
        for i, part in enumerate(parts):
            part_name = f"__{chunks}_part{i}"
            _register_arrow(con, part_name, _vortex_dataset(part, verify, chunks=True))
            selects.append(f"SELECT * FROM {_ident(part_name)}")
        _view(con, chunks, " UNION ALL ".join(selects))
    else:
        _register_arrow(con, chunks, CHUNKS_SCHEMA.empty_table())
    return [images, chunks]


def _remote_parquet(fs: Any, paths: list[str]) -> Any:
    import pyarrow.dataset as pads  # lazy: pyarrow.dataset
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    # pyarrow checks the page CRCs of what it decodes (DuckDB's own reader would not)
    fmt = pads.ParquetFileFormat(
        default_fragment_scan_options=pads.ParquetFragmentScanOptions(page_checksum_verification=True)
    )
    return pads.dataset(paths, format=fmt, filesystem=PyFileSystem(FSSpecHandler(fs)))


def _register_remote(
    con: Any, name: str, url: str, column_name: str | None, storage_options: Mapping[str, Any] | None
) -> list[str]:
    """Views over a remote record table or dataset.

    The URL's fsspec filesystem (block cache off) is registered on ``con``
    with DuckDB's ``register_filesystem``, so SQL may name ``s3://...`` files
    itself without the httpfs extension. The views omeframe creates are
    ``pyarrow.dataset`` scans over the same filesystem: DuckDB pushes its
    projections and filters into them, so a query reads the footer and the
    column chunks it needs (DuckDB's own fsspec reads fetched whole objects
    per query when measured, see docs/howto/object-storage.md).
    """
    loc = parse_location(url)
    assert loc is not None
    fs = ranged_filesystem(loc, storage_options)
    con.register_filesystem(fs)
    name_part = loc.url.split("?", 1)[0].rsplit("/", 1)[-1].lower()
    kind = TABLE_FORMATS.get("." + name_part.rsplit(".", 1)[-1]) if "." in name_part else None
    if kind == "parquet":
        if column_name is not None:
            _check_record_column(read_schema_remote(loc.url, storage_options), column_name, repr(loc.url))
        _register_arrow(con, name, _remote_parquet(fs, [loc.path]))
        return [name]
    if kind == "vortex":
        raise UnsupportedFormatError(
            f"{loc.url!r}: Vortex tables are queried from local files only; download it, or store it as Parquet"
        )
    if column_name is not None:
        raise ValueError("column_name applies to record tables, not to dataset directories")
    ds = DatasetReader(loc.url, storage_options=storage_options)
    if ds.format != "parquet":
        raise UnsupportedFormatError(
            f"{loc.url!r}: remote Vortex datasets cannot be queried with DuckDB; their images and chunks "
            "tables are read from local files only"
        )
    images, chunks = f"{name}_images", f"{name}_chunks"
    assert ds.manifest.images is not None
    _register_arrow(con, images, _remote_parquet(fs, [loc.join(ds.manifest.images).path]))
    if ds.manifest.parts:
        _register_arrow(con, chunks, _remote_parquet(fs, [loc.join(p).path for p in ds.manifest.parts]))
    else:
        _register_arrow(con, chunks, CHUNKS_SCHEMA.empty_table())
    return [images, chunks]


def register(
    con: Any,
    name: str,
    path: Any,
    *,
    column_name: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    verify: bool = True,
) -> list[str]:
    """Make a record table, a dataset or an Arrow object queryable as views.

    Parameters
    ----------
    con
        A DuckDB connection (from :func:`connect` or :func:`duckdb.connect`).
    name
        View name (a dataset gets ``<name>_images`` and ``<name>_chunks``).
    path
        A Parquet or Vortex record table, a dataset directory (with a
        ``manifest.json``), or an Arrow object (``pyarrow.Table``,
        ``pyarrow.dataset.Dataset``, a Polars/pandas frame) to register as it is.
    column_name
        When given, check that the table has this OME-Arrow column.
    storage_options
        For URLs (``s3://bucket/cells.parquet``, a remote dataset): options of
        the fsspec filesystem, which is registered on ``con`` with DuckDB's
        ``register_filesystem`` (no httpfs extension needed). Queries read
        ranges: a metadata-only query reads the footer and the columns it
        names, not the pixels.
    verify
        DuckDB's own Parquet reader checks no page CRCs, so a damaged page
        would come back as wrong values (pixels included). With ``True``
        (the default), the page CRCs of every local Parquet file a view reads
        are checked when it is registered, at memory speed (about 0.1 s for
        10⁵ crops 3×64×64 once the process has parsed the file's page
        headers, which takes about 1 s the first time), and a damaged file
        raises :class:`~omeframe.errors.ChunkChecksumError` instead of being
        registered; a dataset's images table is checked against the CRC its
        manifest records. Files replaced after registration are not checked
        again. ``False`` skips the check (for files verified before, e.g. by
        ``omeframe verify``). A local Vortex file (a record table, or a
        dataset's images table and chunk parts) is checked the same way
        against the CRC-32 of its body in the footer's seal (about 1 ms per
        33 MB in the page cache), and queries of the file version checked
        then skip the rows' checks: what they read and filter on was
        checked. Otherwise (``False``, or a file replaced after
        registration) a query checks each row it returns against its pixel
        CRCs and feature digests, and a query those cannot vouch for (a
        filter, some of the feature columns) checks the body first, once
        per file version and process (see
        :func:`~omeframe.formats.vortex.arrow_dataset.vortex_plain_dataset`);
        a Vortex file without a body CRC (older, another tool's) has only
        the rows' checks. Remote Parquet is read through pyarrow with its
        page check on, whatever this option.

    Returns
    -------
    list of str
        The names of the views created.

    Raises
    ------
    TypeError
        If ``con`` is not a DuckDB connection, or ``path`` is none of the
        above (a list of tables included: register each under its own name),
        or ``verify`` is not a bool.
    ValueError
        For an empty ``name`` or ``path``.
    FileNotFoundError
        If a local ``path`` does not exist.
    ChunkChecksumError
        With ``verify=True``, when a page of a local Parquet file the views
        read, or a dataset's images table, fails its CRC-32 (nothing is
        registered).
    CorruptFileError
        When a file is not readable (a damaged footer), or with
        ``verify=True`` when the body of a local Vortex file fails its CRC-32.

    Notes
    -----
    Parquet views read through ``read_parquet``: DuckDB prunes columns and
    row groups by their statistics. Vortex files and Arrow datasets are
    scanned through pyarrow, with DuckDB's projections and filters pushed
    into the scanner (``EXPLAIN`` shows them in the scan operator).
    """
    _check_connection(con)
    _ident(name)
    _check_path(path)
    check_storage_options(storage_options, path)
    if not isinstance(path, (str, os.PathLike)):
        import pyarrow as pa

        schema = getattr(path, "schema", None)
        if isinstance(schema, pa.Schema):
            _check_record_column(schema, column_name, "the registered object")
        elif column_name is not None:  # a Polars or pandas frame: check it as Arrow sees it
            _check_record_column(_frame_schema(path), column_name, "the registered object")
        _register_arrow(con, name, path)
        return [name]
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    if parse_location(path) is not None:
        return _register_remote(con, name, os.fspath(path), column_name, storage_options)
    p = Path(local_path(path)).expanduser().resolve()
    if p.is_dir():
        if column_name is not None:
            raise ValueError("column_name applies to record tables, not to dataset directories")
        return _register_dataset(con, name, p, verify)
    if not p.exists():
        raise FileNotFoundError(f"no such file or dataset directory: {os.fspath(path)!r}")
    return _register_file(con, name, p, column_name, verify)
