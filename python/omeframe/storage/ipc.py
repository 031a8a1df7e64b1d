"""Arrow IPC files omeframe reads back (the images tables' copies): read whole, then validated in full.

pyarrow's IPC reader checks a file's structure, not the values of its offset
buffers: one flipped bit can leave a string or list column whose offsets point
far outside its data, and the first read of such a value reads unmapped memory
(a segmentation fault, seen when a damaged images index was opened). Every
table read here passes ``Table.validate(full=True)`` first, which refuses such
offsets (1.4 ms for the 3.4 MB index of 10,000 images).

Example
-------
>>> import pyarrow as pa
>>> sink = pa.BufferOutputStream()
>>> with pa.ipc.new_file(sink, pa.schema([("a", pa.string())])) as w:
...     w.write_table(pa.table({"a": ["x", "y"]}))
>>> read_ipc_file(sink.getvalue(), "'t.arrow'").column("a").to_pylist()
['x', 'y']
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from omeframe.model.errors import CorruptFileError

__all__ = ["read_ipc_file"]


def read_ipc_file(data: Any, what: str) -> pa.Table:
    """The table in the Arrow IPC file ``data`` (bytes or a buffer), checked in full.

    Raises
    ------
    CorruptFileError
        Naming ``what`` when the file does not parse or holds invalid arrays
        (offsets out of bounds, lengths that do not add up).
    """
    try:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"unreadable Arrow IPC file {what}: {exc}") from exc
    return table
