"""A Vortex record table whose stored pixel CRCs are those of the intact pixels, with one byte flipped.

It stands for a table damaged on disk after it was written: the hidden
column holds the CRCs of the pixels as they were, the file the flipped byte,
and the footer's seal a CRC-32 of the file's body that its bytes no longer
match (:func:`stale_body`), so that full reads check the rows one by one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import omeframe as of
from omeframe.formats.vortex import checksum as vchecksum
from omeframe.formats.vortex import file as vfile
from omeframe.formats.vortex import seal as vseal


@contextlib.contextmanager
def stale_body() -> Iterator[None]:
    """Within it, the Vortex writer seals each file with a body CRC-32 that its bytes do not match.

    The file then stands for one whose body changed on disk after it was
    written: every full read finds the body damaged and checks the rows one by one.
    """
    crc_before = vseal._crc_before
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vseal, "_crc_before", lambda fd, end: crc_before(fd, end) ^ 0xFFFFFFFF)
        yield


def write_flipped(
    path: Path, stack: np.ndarray, row: int, chunk: int, mask: int, scope: int = vchecksum.SCOPE
) -> None:
    """Write ``stack`` (``(N, C, Y, X)``) with the first pixel byte of ``chunk`` of ``row`` XORed with ``mask``
    (``scope``: of the stored CRCs, an earlier one stands for a file omeframe wrote before)."""
    intact = of.records_from_arrays(stack, dim_order="CYX")
    packed = np.asarray(vchecksum.stored_crcs([intact], scope)[0], dtype=np.uint64)
    recs = intact.to_pylist()
    payload = recs[row]["chunks"][chunk]["pixel_bytes"]
    recs[row]["chunks"][chunk]["pixel_bytes"] = bytes([payload[0] ^ mask]) + payload[1:]
    _write_under(path, pa.table({"ome_arrow": pa.array(recs, type=intact.type)}), packed, scope)


def _write_under(path: Path, table: pa.Table, packed: np.ndarray, scope: int = vchecksum.SCOPE) -> None:
    """Write ``table`` with the stored CRCs ``packed`` (those of the intact rows, handed out batch by batch)."""
    at = [0]

    def intact_crcs(cols, _scope, start):  # type: ignore[no-untyped-def] # the intact CRCs, batch by batch
        part = packed[at[0] : at[0] + len(cols[0])]
        at[0] += len(part)
        return part, int(part[-1]) >> 32

    with pytest.MonkeyPatch.context() as mp, stale_body():
        mp.setattr(vfile, "stored_crcs", intact_crcs)
        mp.setattr(vfile, "SCOPE", scope)
        vfile.write_vortex_table(table, path)


def write_changed(path: Path, table: pa.Table, row: int, column: str, value: object) -> None:
    """Write ``table`` with ``column``'s value in ``row`` replaced by ``value``, under the digests of the intact rows.

    It stands for a Vortex table whose value in that row changed on disk after
    it was written (``column`` is not an OME-Arrow column).
    """
    from omeframe.storage.digest import row_digests

    # the digest covers every column of a table without records, the other columns beside records
    intact = row_digests([table.column(n) for n in table.column_names if n not in vchecksum.ome_columns(table.schema)])
    values = table.column(column).to_pylist()
    values[row] = value
    changed = table.set_column(
        table.schema.get_field_index(column), table.schema.field(column),
        pa.array(values, type=table.schema.field(column).type),
    )
    at = [0]

    def intact_digests(columns):  # type: ignore[no-untyped-def] # the intact digests, batch by batch
        part = intact[at[0] : at[0] + len(columns[0])]
        at[0] += len(part)
        return part

    with pytest.MonkeyPatch.context() as mp, stale_body():
        mp.setattr(vfile, "row_digests", intact_digests)
        vfile.write_vortex_table(changed, path)


def write_header_changed(path: Path, table: pa.Table, row: int, change: Any) -> None:
    """Write ``table`` with ``change(record)`` applied to the record of ``row`` in its ``ome_arrow`` column,
    under the pixel CRCs and header digests of the intact rows.

    It stands for a Vortex record table whose header field (an id, a channel
    name ...) changed on disk after it was written.
    """
    col = table.column("ome_arrow").combine_chunks()
    packed = np.asarray(vchecksum.stored_crcs([col])[0], dtype=np.uint64)
    recs = col.to_pylist()
    change(recs[row])
    changed = table.set_column(
        table.schema.get_field_index("ome_arrow"), table.schema.field("ome_arrow"), pa.array(recs, type=col.type)
    )
    _write_under(path, changed, packed)


def with_header_of(damaged: pa.Array | pa.ChunkedArray, intact: pa.Array | pa.ChunkedArray) -> pa.StructArray:
    """The records of ``damaged`` with every header field (all but ``chunks`` and ``planes``) of ``intact``.

    Records encoded twice differ in their ``acquisition_datetime`` (the time of
    encoding); a table that stands for ``intact`` with some pixel bytes changed
    on disk keeps its header.
    """
    d = damaged.combine_chunks() if isinstance(damaged, pa.ChunkedArray) else damaged
    i = intact.combine_chunks() if isinstance(intact, pa.ChunkedArray) else intact
    fields = [d.field(f.name) if f.name in ("chunks", "planes") else i.field(f.name) for f in i.type]
    return pa.StructArray.from_arrays(fields, fields=list(i.type))
