"""Queries over image tables: DuckDB SQL functions and the Polars ``.ome`` namespace.

* :mod:`omeframe.query.kernels`: vectorised kernels over columns of records
  (header fields, per-channel statistics, crops, thumbnails, chunk decoding).
* :mod:`omeframe.query.duckdb_udfs` / :mod:`omeframe.query.duckdb_conn`:
  the ``ome_*`` SQL functions, ``connect`` and ``register`` (also reachable
  as :mod:`omeframe.duckdb`).
* :mod:`omeframe.query.polars_ns`: the ``.ome`` expression and series
  namespace (registered when imported; :mod:`omeframe.polars` imports it).
* :mod:`omeframe.query.polars_scan`: the Polars IO-plugin scan.

Importing this package imports none of them: duckdb and polars load on use.
"""

from __future__ import annotations

__all__: list[str] = []
