"""Local input files with positional (range) reads.

Every byte omeframe reads from a dataset goes through :func:`open_input`,
which returns an :class:`InputFile`: ``read_range`` is a thread-safe
``pread``, and the object is also a read-only binary file object that pyarrow
accepts (``pq.ParquetFile(open_input(p))``). Tests substitute a counting
subclass to prove how many bytes a read touches.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Any

__all__ = ["InputFile", "PositionalFile", "file_key", "file_version", "open_input"]


class PositionalFile(io.RawIOBase):
    """A read-only binary file object over positional reads, shared by local and remote files.

    Subclasses set ``_pos`` and ``_lock`` and provide ``size`` and
    ``_read_at(pos, n)`` (``n`` bytes at ``pos``, fewer only at the end); this
    class adds the file-object protocol pyarrow and tifffile need: ``seek``,
    ``tell``, ``read``, ``readinto``, thread-safe for the position.
    """

    _pos: int
    _lock: threading.Lock

    @property
    def size(self) -> int:
        raise NotImplementedError

    def _read_at(self, pos: int, n: int) -> bytes:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._lock:
            if whence == io.SEEK_SET:
                self._pos = offset
            elif whence == io.SEEK_CUR:
                self._pos += offset
            else:
                self._pos = self.size + offset
            return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        with self._lock:
            pos = self._pos
        data = self._read_at(pos, len(b))
        n = len(data)
        memoryview(b)[:n] = data
        with self._lock:
            self._pos = pos + n
        return n

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            pos = self._pos
        if size is None or size < 0:
            size = self.size - pos
        data = self._read_at(pos, size)
        with self._lock:
            self._pos = pos + len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)


class InputFile(PositionalFile):
    """A read-only local file with thread-safe ``read_range(offset, length)``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._size = os.fstat(self._fd).st_size
        self._pos = 0
        self._lock = threading.Lock()

    # --- range reads -----------------------------------------------------
    def read_range(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset`` (fewer only at end of file)."""
        return os.pread(self._fd, length, offset)

    @property
    def size(self) -> int:
        return self._size

    def fileno(self) -> int:
        return self._fd

    def _read_at(self, pos: int, n: int) -> bytes:
        return self.read_range(pos, n)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def open_input(path: str | os.PathLike[str]) -> InputFile:
    """Open ``path`` for range reads (the single entry point tests may wrap)."""
    return InputFile(path)


def file_key(path: str | os.PathLike[str], stat: os.stat_result | None = None) -> tuple[Any, ...]:
    """The identity of the current version of local file ``path``: real path, size, modification time, inode.

    Caches of what was read from a file key on it, so that a file replaced
    (by a rename, as omeframe's writers do) or rewritten is read anew. A
    reader that keeps a file open passes ``stat``, the ``os.fstat`` of its
    descriptor, so that its key names the version it reads even after the
    path has been replaced.

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.bin")
    >>> _ = open(p, "wb").write(b"one")
    >>> before = file_key(p)
    >>> _ = open(p + ".new", "wb").write(b"three")
    >>> os.replace(p + ".new", p)
    >>> file_key(p) == before
    False
    """
    st = os.stat(path) if stat is None else stat
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def file_version(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What tells versions of one open file apart, from its ``os.stat``/``os.fstat``: device, inode, size, mtime.

    :func:`file_key` without the real path (a ``stat`` alone, no path
    resolution): a reader that keeps a path compares the version it opened
    with ``file_version(os.stat(path))`` before trusting a read by that path.
    """
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
