"""Catalogs: many image files -> one record table + one chunked dataset, in parallel.

>>> res = omeframe.catalog.build("plates/", "plates.catalog", workers=4,  # doctest: +SKIP
...                              columns_from_path=r"(?P<plate>P\\d+)_(?P<well>[A-H]\\d+)")
>>> print(res.summary())                                                  # doctest: +SKIP

See :mod:`omeframe.catalog.build` for the layout and the resume/append rules
(and the :class:`~omeframe.catalog.build.Seams` a test may replace),
:mod:`omeframe.catalog.discover` for what is ingested and how it is opened,
:mod:`omeframe.catalog.worker` for the per-file work,
:mod:`omeframe.catalog.commit` for the tables and their atomic commits,
:mod:`omeframe.catalog.records` for file records and identity, and
:mod:`omeframe.catalog.objects` for inputs in a bucket (``s3://...`` sources
with ``storage_options=``) and :mod:`omeframe.catalog.publish` for catalogs
written to one.
"""

from __future__ import annotations

from omeframe.catalog.build import CatalogResult, build
from omeframe.catalog.commit import (
    CATALOG_SCHEMA,
    CATALOG_VERSION,
    CatalogError,
    read_catalog,
)
from omeframe.catalog.discover import discover, open_image
from omeframe.catalog.records import (
    CHECKSUM_ALGORITHM,
    FILE_RECORD_SCHEMA,
    FileRecord,
    file_checksum,
)

__all__ = [
    "build",
    "discover",
    "read_catalog",
    "open_image",
    "CatalogResult",
    "CatalogError",
    "FileRecord",
    "file_checksum",
    "CATALOG_SCHEMA",
    "CATALOG_VERSION",
    "FILE_RECORD_SCHEMA",
    "CHECKSUM_ALGORITHM",
]
