"""Polars integration: ``omeframe.polars.scan`` and the ``.ome`` expression namespace.

``import omeframe.polars`` registers the ``.ome`` namespace on ``pl.Expr``
(when :mod:`omeframe.query.polars_ns` is available) and exposes :func:`scan`,
a lazy scan of record tables and dataset directories that routes each query
to Polars' own scan (``pl.scan_parquet``, ``pl.scan_pyarrow_dataset`` for
Vortex) or to omeframe's reader (nested reads of header fields, late
materialisation behind struct-field predicates), and :func:`scan_routes`,
which tells which one served a query.  See :mod:`omeframe.query.polars_scan`.
"""

from __future__ import annotations

from omeframe.query.polars_scan import (
    HEADER_FIELDS,
    READERS,
    ScanRoute,
    polars_schema,
    scan,
    scan_routes,
)

try:  # registers pl.Expr.ome (another module; optional until it exists)
    import omeframe.query.polars_ns  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - until that module exists
    if exc.name not in ("omeframe.query.polars_ns", "omeframe.query"):
        raise

__all__ = ["HEADER_FIELDS", "READERS", "ScanRoute", "polars_schema", "scan", "scan_routes"]
