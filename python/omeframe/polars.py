"""Polars integration: ``omeframe.polars.scan`` and the ``.ome`` expression namespace.

``import omeframe.polars`` registers the ``.ome`` namespace on ``pl.Expr``
(when :mod:`omeframe.query.polars_ns` is available) and exposes :func:`scan`,
a lazy IO-plugin scan of record tables and dataset directories that pushes
projection, the predicate (applied exactly) and ``n_rows`` into omeframe's
reader.  See :mod:`omeframe.query.polars_scan`.
"""

from __future__ import annotations

from omeframe.query.polars_scan import HEADER_FIELDS, polars_schema, scan

try:  # registers pl.Expr.ome (another module; optional until it exists)
    import omeframe.query.polars_ns  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - until that module exists
    if exc.name not in ("omeframe.query.polars_ns", "omeframe.query"):
        raise

__all__ = ["HEADER_FIELDS", "polars_schema", "scan"]
