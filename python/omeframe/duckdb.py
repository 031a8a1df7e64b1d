"""DuckDB for image tables: ``omeframe.duckdb.connect`` and ``register``.

>>> import omeframe.duckdb as ofdb
>>> con = ofdb.connect()                                  # doctest: +SKIP
>>> ofdb.register(con, "cells", "cells.parquet")          # doctest: +SKIP
>>> con.sql("SELECT well, ome_stats(ome_arrow, 0).mean FROM cells")  # doctest: +SKIP

The connection carries the ``ome_*`` SQL functions (see
:mod:`omeframe.query.duckdb_udfs`); :func:`register` exposes record tables
(Parquet natively, Vortex through a pushdown-capable Arrow dataset) and
dataset directories (``<name>_images``, ``<name>_chunks``) as views.
This module imports ``duckdb`` on first use only.
"""

from __future__ import annotations

from omeframe.query.duckdb_conn import connect, register, register_functions
from omeframe.query.duckdb_udfs import FUNCTIONS

__all__ = ["connect", "register", "register_functions", "FUNCTIONS"]
