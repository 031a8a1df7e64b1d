"""A CRC-32 of the footer of the Vortex files omeframe writes, checked before vortex parses the footer.

Vortex stores no checksum of its own, and vortex-data 0.93 trusts its
footer: a flipped bit in the layout metadata there once made it ask for
1.4·10¹⁷ bytes and abort the process, before any check of omeframe's could
run. The writer therefore *seals* each file it writes: the name of the
hidden schema column (which lives in the footer, see
:mod:`omeframe.formats.vortex.file`) holds, after the base64 schema,
:data:`SEAL_MARK` and 24 hexadecimal digits, written as zeros by vortex and
filled in place afterwards (same length, so no offset moves):

* 16 digits: ``start``, the first byte vortex reads when it opens the file
  (found by opening the written file once through a reader that records its
  reads: vortex 0.93 reads the last 64 KiB, more for a larger footer);
* 8 digits: the CRC-32 of the bytes from ``start`` to the end of the file,
  with these 8 digits as zeros.

Every omeframe open of a local or remote Vortex file calls :func:`check_seal`
first: it reads the end of the file, finds the name, and compares the CRC
of those bytes, so a damaged footer is refused with
:class:`~omeframe.model.errors.CorruptFileError` instead of reaching vortex.
The cost is one read of what vortex reads next anyway (64 KiB, from the page
cache or a remote store's range cache) and its CRC (a few microseconds).

Files written before the seal, by other tools, or by a vortex whose footer
does not hold the name as plain bytes carry none (or zeros) and are opened
as before; so is a file whose name lies further than :data:`SEARCH_BYTES`
from its end. The search stops at the first read for an omeframe file
(sealed or not); a foreign file is searched up to :data:`SEARCH_BYTES`
(about 0.6 ms per open).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from omeframe.model.errors import CorruptFileError
from omeframe.storage.crc import crc32

__all__ = ["SEAL_MARK", "PLACEHOLDER", "SEARCH_BYTES", "check_seal", "seal_file", "split_seal"]

#: Starts the seal in the hidden column's name (not a base64 character).
SEAL_MARK = "@"
#: The seal as vortex writes it: ``start`` and the CRC-32 as zeros.
PLACEHOLDER = SEAL_MARK + "0" * 24
#: How far from the end of a file :func:`check_seal` looks for the hidden column's name.
SEARCH_BYTES = 1 << 20
#: The first read of the search: what vortex-data 0.93 reads first when it opens a file.
FIRST_READ = 65535
#: The seal's digits: ``start`` and the CRC-32, in hexadecimal.
_DIGITS = "([0-9a-f]{16})([0-9a-f]{8})"
_SEAL = re.compile(re.escape(SEAL_MARK) + _DIGITS + "$")


def split_seal(payload: str) -> tuple[str, tuple[int, int] | None]:
    """``payload`` (a hidden column's name after its prefix, before its schema CRC) without its seal,
    and the seal's ``(start, crc)``, or ``None`` for a name without one.

    Example
    -------
    >>> split_seal("QUJD" + PLACEHOLDER)
    ('QUJD', (0, 0))
    >>> split_seal("QUJD")
    ('QUJD', None)
    """
    found = _SEAL.search(payload)
    if found is None:
        return payload, None
    return payload[: found.start()], (int(found.group(1), 16), int(found.group(2), 16))


def seal_file(path: str | os.PathLike[str], vortex: Any) -> bool:
    """Fill in the seal of the Vortex file just written at ``path`` (before it is renamed into place).

    Returns whether it was sealed: ``False`` when the footer does not hold the
    placeholder exactly once as plain bytes (the seal then stays zeros, and
    readers open the file unchecked, as one written before the seal).
    """
    p = os.fspath(path)
    size = os.path.getsize(p)
    reads: list[int] = []

    class Recorder:  # vortex's ReadBytesAt, recording where the open reads
        def size(self) -> int:
            return size

        def read_at(self, offset: int, length: int) -> bytes:
            reads.append(int(offset))
            with open(p, "rb") as fh:
                fh.seek(offset)
                return fh.read(length)

    vortex.open_readable(Recorder())
    start = min(reads) if reads else 0
    if size - start > SEARCH_BYTES:
        return False  # a footer larger than readers search: left unsealed
    with open(p, "r+b") as fh:
        fh.seek(start)
        tail = bytearray(fh.read())
        marker = PLACEHOLDER.encode("ascii")
        at = tail.find(marker)
        if at < 0 or tail.find(marker, at + 1) >= 0:
            return False
        tail[at + 1 : at + 17] = f"{start:016x}".encode("ascii")
        crc = crc32(tail)
        tail[at + 17 : at + 25] = f"{crc:08x}".encode("ascii")
        fh.seek(start + at + 1)
        fh.write(bytes(tail[at + 1 : at + 25]))
    return True


def check_seal(size: int, read_range: Callable[[int, int], bytes], where: str, prefix: bytes) -> tuple[int, bytes]:
    """Check the footer of a Vortex file of ``size`` bytes against its seal, if it has one (see the module
    docstring), before vortex parses the footer.

    ``read_range(offset, length)`` reads the file (local or remote alike);
    ``where`` names it in errors; ``prefix``: the hidden column's name prefix, which the search looks for;
    the name must go on as one written with a seal (base64, the seal, ``~``
    and the schema's CRC), else the file is opened unchecked, as one written
    before the seal (a damaged name is then refused by the schema's own CRC).

    Returns the last bytes it read and where they start, ``(offset, data)``:
    what vortex reads first when it opens the file, for a reader to serve
    from memory instead of reading it again.

    Raises
    ------
    CorruptFileError
        If the bytes vortex would parse first fail the seal's CRC-32, or the
        seal names a start beyond the name itself: the file is damaged.
    """
    span = min(size, FIRST_READ)
    while True:
        tail = read_range(size - span, span)
        found = _sealed_name(tail, prefix)
        # a name without a seal (a file written before it) ends the search as a sealed one does
        if found is not None or prefix in tail or span >= min(size, SEARCH_BYTES):
            break
        span = min(size, SEARCH_BYTES, 4 * span)
    first = size - span  # where `tail` starts in the file
    if found is None:
        return first, tail  # not an omeframe file, written before the seal, or a name too far from the end
    seal_at, start, crc = found
    if (start, crc) == (0, 0):
        return first, tail  # written by a vortex whose footer the writer could not seal
    name_at = first + seal_at
    if start > name_at or size - start > SEARCH_BYTES:
        raise CorruptFileError(
            f"{where}: the seal of the Vortex footer starts at byte {start}, "
            + ("after the seal itself" if start > name_at else f"more than {SEARCH_BYTES} bytes before the end")
            + f" (the seal is at byte {name_at} of {size}); the file is damaged"
        )
    covered = bytearray(read_range(start, size - start) if start < first else tail[start - first :])
    at = name_at - start
    covered[at + 17 : at + 25] = b"0" * 8
    if crc32(covered) != crc:
        raise CorruptFileError(
            f"{where}: the footer of the Vortex file fails its CRC-32 (bytes {start} to {size}); the file is "
            "damaged (restore it from a copy)"
        )
    return first, tail


#: A sealed hidden column's name after its prefix: base64, the seal, the schema's CRC.
_SEALED = re.compile(("[A-Za-z0-9+/=]*" + re.escape(SEAL_MARK) + _DIGITS + "~[0-9a-f]{8}").encode("ascii"))


def _sealed_name(tail: bytes, prefix: bytes) -> tuple[int, int, int] | None:
    """``(position of the seal mark, start, crc)`` of the last sealed hidden column's name in ``tail``."""
    end = len(tail)
    while True:
        at = tail.rfind(prefix, 0, end)
        if at < 0:
            return None
        m = _SEALED.match(tail, at + len(prefix))
        if m is not None:
            return m.start(1) - 1, int(m.group(1), 16), int(m.group(2), 16)
        end = at + len(prefix) - 1
