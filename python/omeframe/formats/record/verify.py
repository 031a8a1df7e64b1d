"""Check every stored byte of a record table and name each damaged image.

A Parquet table is read row group by row group through readers that verify
Parquet page checksums; every record is decoded (zstd frames verify their own
checksums and decoded sizes). When a batch fails, its records are decoded one
by one so that every damaged record is reported by row and id, not just the
first. A table with a pixel index also has the index checked against the
bytes it points to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.formats.record.decode import to_numpy, to_numpy_batch
from omeframe.formats.record.files import detect_format, find_record_column
from omeframe.formats.record.pixel_index import check_prefixes, load_index
from omeframe.formats.vortex.file import (
    check_vortex_body,
    read_vortex_schema,
    read_vortex_table,
    vortex_has_digests,
    vortex_num_rows,
)
from omeframe.model.errors import CorruptFileError, OmeframeError
from omeframe.storage.parquet import open_parquet
from omeframe.storage.parquet_crc import CheckedParquetFile

__all__ = ["Damage", "TableReport", "verify_table"]

_BATCH_ROWS = 4096


@dataclass(frozen=True)
class Damage:
    """One damaged record (``row``), or a damaged range of rows (``rows``)."""

    rows: tuple[int, int]
    image_id: str | None
    message: str

    def __str__(self) -> str:
        lo, hi = self.rows
        where = "table" if hi <= lo else f"row {lo}" if hi == lo + 1 else f"rows {lo}..{hi - 1}"
        name = f" ({self.image_id})" if self.image_id else ""
        return f"{where}{name}: {self.message}"


@dataclass
class TableReport:
    """What :func:`verify_table` checked and what it found."""

    path: str
    records: int = 0
    pixel_bytes: int = 0
    damaged: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged


def _check_records(column: pa.ChunkedArray | pa.Array, row0: int, report: TableReport) -> None:
    try:
        arrays = to_numpy_batch(column)
        report.pixel_bytes += sum(a.nbytes for a in arrays)
        report.records += len(arrays)
        return
    except (OmeframeError, ValueError, OSError, pa.ArrowException):
        pass
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    for i in range(len(arr)):  # only for a batch known to hold damage: name every bad record
        rec = arr[i]
        try:
            report.pixel_bytes += to_numpy(rec).nbytes
            report.records += 1
        except (OmeframeError, ValueError, OSError, pa.ArrowException) as exc:
            iid: Any = None
            try:
                iid = rec["id"].as_py()
            except (KeyError, IndexError, pa.ArrowException):
                iid = None
            report.damaged.append(Damage((row0 + i, row0 + i + 1), iid, str(exc).splitlines()[0]))


def verify_table(path: str | os.PathLike[str], *, column: str | None = None) -> TableReport:
    """Decode and check every record of a Parquet or Vortex record table.

    Parameters
    ----------
    path
        The table.
    column
        The OME-Arrow column (default: detected).

    Returns
    -------
    TableReport
        ``report.ok`` is true when nothing is damaged; ``report.damaged``
        lists every damaged record (or unreadable row group) with its rows and id.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    CorruptFileError
        When the file is not a readable table at all (no footer, no schema).

    Example
    -------
    >>> import numpy as np, omeframe as of, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.parquet")
    >>> _ = of.write_table(path, np.zeros((3, 8, 8), np.uint8), dim_order="YX")  # three 8x8 images
    >>> of.verify_table(path).ok
    True
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no such record table: {p!r}")
    report = TableReport(p)
    if detect_format(p) == "vortex":
        col = find_record_column(read_vortex_schema(p), column, source=repr(p))
        n = vortex_num_rows(p)
        for lo in range(0, n, _BATCH_ROWS):
            rows = list(range(lo, min(n, lo + _BATCH_ROWS)))
            try:
                part = read_vortex_table(p, columns=[col], rows=rows)[col]
            except (OmeframeError, OSError, RuntimeError, pa.ArrowException) as exc:
                bad = getattr(exc, "rows", None)  # rows failing their pixel CRC (or header digest), when known
                for span in [(r, r + 1) for r in bad] if bad else [(rows[0], rows[-1] + 1)]:
                    what = getattr(exc, "failed", "pixel bytes fail their CRC-32") if bad else str(exc).splitlines()[0]
                    report.damaged.append(Damage(span, None, what))
                continue
            _check_records(part, lo, report)
        _check_other_vortex_columns(p, col, n, report)
        if report.ok:  # damage that no row's check sees: bytes vortex does not decode into values
            try:
                check_vortex_body(p)
            except CorruptFileError as exc:
                report.damaged.append(Damage((0, 0), None, str(exc).splitlines()[0]))
        return report
    pf = open_parquet(p)
    try:
        col = find_record_column(pf.schema_arrow, column, source=repr(p))
        md = pf.metadata
        row0 = 0
        for g in range(md.num_row_groups):
            k = md.row_group(g).num_rows
            try:
                part = pf.read_row_group(g, columns=[col])[col]
            except (CorruptFileError, OSError, pa.ArrowException) as exc:
                _locate_damage(p, g, col, row0, k, str(exc).splitlines()[0], report)
                row0 += k
                continue
            _check_records(part, row0, report)
            row0 += k
        _check_other_columns(pf, col, report)
    finally:
        pf.close()
    _check_index(p, report)
    return report


def _check_other_columns(pf: Any, col: str, report: TableReport) -> None:
    """Check the page CRCs of every column besides the record column, row group by row group.

    A damaged feature column does not touch pixels, but every reader that
    checks CRCs refuses it (and readers that do not return wrong values), so
    the report names it with the rows of its row group.
    """
    others = [name for name in pf.schema_arrow.names if name != col]
    if not others or not isinstance(pf, CheckedParquetFile):
        return
    leaves = pf._leaves(others)
    md = pf.metadata
    row0 = 0
    for g in range(md.num_row_groups):
        k = md.row_group(g).num_rows
        try:
            pf.check([g], leaves)
        except CorruptFileError as exc:
            report.damaged.append(Damage((row0, row0 + k), None, str(exc).splitlines()[0]))
        row0 += k


def _check_other_vortex_columns(path: str, col: str, n: int, report: TableReport) -> None:
    """Check the columns besides the record column of a Vortex table against their rows' digests.

    Tables written by omeframe store each row's digest of them (reads check it
    too); the report names each row that fails it. Earlier files have none.
    """
    others = [name for name in read_vortex_schema(path).names if name != col]
    if not others or not vortex_has_digests(path):  # nothing to check them against: not read
        return
    for lo in range(0, n, _BATCH_ROWS):
        rows = list(range(lo, min(n, lo + _BATCH_ROWS)))
        try:
            read_vortex_table(path, columns=others, rows=rows)
        except (OmeframeError, OSError, RuntimeError, pa.ArrowException) as exc:
            bad = getattr(exc, "rows", None)
            for span in [(r, r + 1) for r in bad] if bad else [(rows[0], rows[-1] + 1)]:
                what = "the other columns' values fail their row digest" if bad else str(exc).splitlines()[0]
                report.damaged.append(Damage(span, None, what))


def _locate_damage(path: str, group: int, col: str, row0: int, k: int, error: str, report: TableReport) -> None:
    """A row group failed its page checksums: name the damaged records when they can be found.

    The group is read again without page verification and every record is
    decoded (zstd frames carry their own checksums). Records that then fail
    are reported one by one; if none does, the damage lies in bytes no
    record-level check covers and the whole group is reported.
    """
    import pyarrow.parquet as pq

    before = len(report.damaged)
    try:
        with pq.ParquetFile(path, memory_map=True, page_checksum_verification=False) as raw:
            part = raw.read_row_group(group, columns=[col])[col]
    except (OSError, pa.ArrowException):
        part = None
    if part is not None:
        _check_records(part, row0, report)
    if len(report.damaged) == before:
        report.damaged.append(Damage((row0, row0 + k), None, f"row group {group}: {error}"))


def _check_index(path: str, report: TableReport) -> None:
    import mmap

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        try:
            index = load_index(path, mm)
        except OmeframeError as exc:
            report.damaged.append(Damage((0, 0), None, f"pixel index: {exc}"))
            return
        if index is None:
            return
        if index.num_rows != report.records + sum(d.rows[1] - d.rows[0] for d in report.damaged):
            report.damaged.append(Damage((0, 0), None, "pixel index: its row count differs from the table's"))
            return
        ok = index.plain is None or check_prefixes(mm, index.offsets_of(np.arange(len(index.lengths))), index.lengths)
        del index
    if not ok:
        report.damaged.append(Damage((0, 0), None, "pixel index: byte ranges do not match the stored values"))
