"""CRC-32s of the Vortex files omeframe writes: the footer's, checked before vortex parses it, and the body's.

Vortex stores no checksum of its own, and vortex-data 0.93 trusts its
footer: a flipped bit in the layout metadata there once made it ask for
1.4·10¹⁷ bytes and abort the process, before any check of omeframe's could
run. The writer therefore *seals* each file it writes: the name of the
hidden schema column (which lives in the footer, see
:mod:`omeframe.formats.vortex.file`) holds, after the base64 schema,
:data:`SEAL_MARK` and 32 hexadecimal digits, written as zeros by vortex and
filled in place afterwards (same length, so no offset moves):

* 16 digits: ``start``, the first byte vortex reads when it opens the file
  (found by opening the written file once through a reader that records its
  reads: vortex 0.93 reads the last 64 KiB, more for a larger footer);
* 8 digits: the CRC-32 of the bytes from ``start`` to the end of the file,
  with these 8 digits as zeros (the *footer's* CRC);
* 8 digits: the CRC-32 of the bytes before ``start`` (the *body's* CRC:
  every data segment; the first files sealed, earlier on 2026-12-07, end without it).

Every omeframe open of a local or remote Vortex file calls :func:`check_seal`
first: it reads the end of the file, finds the name, and compares the CRC
of those bytes, so a damaged footer is refused with
:class:`~omeframe.model.errors.CorruptFileError` instead of reaching vortex.
The cost is one read of what vortex reads next anyway (64 KiB, from the page
cache or a remote store's range cache) and its CRC (a few microseconds).

A read of a whole local table checks the body's CRC (:func:`body_intact`)
before vortex decodes a segment: one pass over the memory-mapped file at
memory speed, which then stands for every per-row check of the read.

Files written before the seal, by other tools, or by a vortex whose footer
does not hold the name as plain bytes carry none (or zeros) and are opened
as before; so is a file whose name lies further than :data:`SEARCH_BYTES`
from its end. The search stops at the first read for an omeframe file
(sealed or not); a foreign file is searched up to :data:`SEARCH_BYTES`
(about 0.6 ms per open).
"""

from __future__ import annotations

import collections
import mmap
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omeframe.model.errors import CorruptFileError
from omeframe.storage.crc import crc32

__all__ = [
    "SEAL_MARK", "PLACEHOLDER", "SEARCH_BYTES", "MAPPED_FILES", "Seal", "body_intact", "body_matches", "check_seal",
    "seal_file", "split_seal",
]

#: Starts the seal in the hidden column's name (not a base64 character).
SEAL_MARK = "@"
#: The seal as vortex writes it: ``start`` and the two CRC-32s as zeros.
PLACEHOLDER = SEAL_MARK + "0" * 32
#: How far from the end of a file :func:`check_seal` looks for the hidden column's name.
SEARCH_BYTES = 1 << 20
#: The first read of the search: what vortex-data 0.93 reads first when it opens a file.
FIRST_READ = 65535
#: The seal's digits, in hexadecimal: ``start``, the footer's CRC-32 and the body's (absent from files sealed
#: before the body's CRC was added).
_DIGITS = "([0-9a-f]{16})([0-9a-f]{8})([0-9a-f]{8})?"
_SEAL = re.compile(re.escape(SEAL_MARK) + _DIGITS + "$")


@dataclass(frozen=True)
class Seal:
    """What :func:`check_seal` read and found at the end of a Vortex file.

    Attributes
    ----------
    first : int
        Where ``tail`` starts in the file.
    tail : bytes
        The last bytes read: what vortex reads first when it opens the file,
        for a reader to serve from memory instead of reading it again.
    start : int or None
        The first byte of the sealed footer (``None``: the file has no seal).
    body_crc : int or None
        The CRC-32 of the bytes before ``start`` (``None``: no seal, or one
        written before the body's CRC).
    """

    first: int
    tail: bytes
    start: int | None = None
    body_crc: int | None = None


def split_seal(payload: str) -> tuple[str, tuple[int, ...] | None]:
    """``payload`` (a hidden column's name after its prefix, before its schema CRC) without its seal,
    and the seal's numbers ``(start, footer CRC[, body CRC])``, or ``None`` for a name without one.

    Example
    -------
    >>> split_seal("QUJD" + PLACEHOLDER)
    ('QUJD', (0, 0, 0))
    >>> split_seal("QUJD@" + "0" * 15 + "8" + "12345678")  # sealed before the body's CRC
    ('QUJD', (8, 305419896))
    >>> split_seal("QUJD")
    ('QUJD', None)
    """
    found = _SEAL.search(payload)
    if found is None:
        return payload, None
    return payload[: found.start()], tuple(int(g, 16) for g in found.groups() if g is not None)


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
        tail[at + 25 : at + 33] = f"{_crc_before(fh.fileno(), start):08x}".encode("ascii")
        crc = crc32(tail)  # the footer's CRC covers the body's
        tail[at + 17 : at + 25] = f"{crc:08x}".encode("ascii")
        fh.seek(start + at + 1)
        fh.write(bytes(tail[at + 1 : at + 33]))
    return True


def _crc_before(fd: int, end: int) -> int:
    """The CRC-32 of the first ``end`` bytes of the open file ``fd``, read through a memory map."""
    if end <= 0:
        return crc32(b"")
    with mmap.mmap(fd, end, access=mmap.ACCESS_READ) as mm:
        return crc32(mm)


def body_intact(path: str, fd: int, seal: Seal) -> bool | None:
    """Whether the bytes before the sealed footer of the Vortex file ``path``, open as ``fd``, match the body's
    CRC-32.

    ``None`` when the seal holds no body CRC (a file sealed before it, or not
    sealed); ``fd`` must be the file whose end ``seal`` was read from. One
    pass over a memory map of the file, at memory speed: about 1.0 ms for
    33 MB from the page cache. The map of each of the last
    :data:`MAPPED_FILES` files checked is kept for the next check of the same
    file (same device, inode, size and modification time), which saves the
    page faults of a new map (another 0.6 ms there); a path that now names
    another file drops its old map.
    """
    if seal.start is None or seal.body_crc is None:
        return None
    return body_matches(seal, _mapping(path, fd) if seal.start else b"")  # a file sealed whole has no body


def body_matches(seal: Seal, data: Any) -> bool | None:
    """Whether ``data`` (the file's bytes from its first, at least up to ``seal.start``) matches the body's
    CRC-32 of ``seal``; ``None`` when the seal holds none (see :func:`body_intact`).

    Example
    -------
    >>> body_matches(Seal(0, b"", 3, 0x352441C2), b"abc" + b"footer")
    True
    """
    if seal.start is None or seal.body_crc is None:
        return None
    with memoryview(data)[: seal.start] as body:
        return crc32(body) == seal.body_crc


#: How many files :func:`body_intact` keeps mapped (each one a map and a file descriptor, no memory).
MAPPED_FILES = 4
_MAPS: collections.OrderedDict[str, tuple[tuple[int, int, int, int], mmap.mmap]] = collections.OrderedDict()
_MAPS_LOCK = threading.Lock()


def _mapping(path: str, fd: int) -> mmap.mmap:
    """A read-only map of the whole open file ``fd`` (named ``path``), the last one kept while it is the same file."""
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _MAPS_LOCK:
        kept = _MAPS.get(path)
        if kept is not None and kept[0] == key:
            _MAPS.move_to_end(path)
            return kept[1]
    mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    with _MAPS_LOCK:  # maps dropped here are closed when their last user lets them go
        _MAPS[path] = (key, mm)
        _MAPS.move_to_end(path)
        while len(_MAPS) > MAPPED_FILES:
            _MAPS.popitem(last=False)
    return mm


def check_seal(size: int, read_range: Callable[[int, int], bytes], where: str, prefix: bytes) -> Seal:
    """Check the footer of a Vortex file of ``size`` bytes against its seal, if it has one (see the module
    docstring), before vortex parses the footer.

    ``read_range(offset, length)`` reads the file (local or remote alike);
    ``where`` names it in errors; ``prefix``: the hidden column's name prefix, which the search looks for;
    the name must go on as one written with a seal (base64, the seal, ``~``
    and the schema's CRC), else the file is opened unchecked, as one written
    before the seal (a damaged name is then refused by the schema's own CRC).

    Returns the :class:`Seal`: the last bytes read and where they start, and
    the seal's ``start`` and body CRC when the file has them.

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
        return Seal(first, tail)  # not an omeframe file, written before the seal, or a name too far from the end
    seal_at, start, crc, body = found
    if (start, crc, body or 0) == (0, 0, 0):
        return Seal(first, tail)  # written by a vortex whose footer the writer could not seal
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
    return Seal(first, tail, start, body)


#: A sealed hidden column's name after its prefix: base64, the seal, the schema's CRC.
_SEALED = re.compile(("[A-Za-z0-9+/=]*" + re.escape(SEAL_MARK) + _DIGITS + "~[0-9a-f]{8}").encode("ascii"))


def _sealed_name(tail: bytes, prefix: bytes) -> tuple[int, int, int, int | None] | None:
    """``(position of the seal mark, start, footer crc, body crc or None)`` of the last sealed hidden column's
    name in ``tail``."""
    end = len(tail)
    while True:
        at = tail.rfind(prefix, 0, end)
        if at < 0:
            return None
        m = _SEALED.match(tail, at + len(prefix))
        if m is not None:
            body = m.group(3)
            return m.start(1) - 1, int(m.group(1), 16), int(m.group(2), 16), None if body is None else int(body, 16)
        end = at + len(prefix) - 1
