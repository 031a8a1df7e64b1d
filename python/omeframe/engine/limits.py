"""The memory limit every allocation sized by a file's declarations is checked against.

Files and records declare sizes (``pixels_meta.size_x``, a dataset level's
shape, a chunk's extent) that an output array is allocated from. A hostile or
damaged file can declare anything, so before such an allocation the engine
calls :func:`check_alloc`, which raises
:class:`~omeframe.model.errors.ResourceLimitError` instead of letting the
allocation run the process out of memory. The limit is process-wide: half of
the physical memory by default, changed with :func:`set_max_bytes`.
"""

from __future__ import annotations

import operator
import os
import threading

from omeframe.model.errors import ResourceLimitError

__all__ = ["get_max_bytes", "set_max_bytes", "check_alloc", "physical_memory"]

_lock = threading.Lock()
_max_bytes: int | None = None  # None: the default (half of physical memory)
_FALLBACK = 8 << 30  # when the platform does not report its physical memory


def physical_memory() -> int:
    """Bytes of physical memory of this machine (8 GiB when the platform does not say)."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return _FALLBACK
    if pages <= 0 or size <= 0:  # pragma: no cover - exotic platforms
        return _FALLBACK
    return int(pages) * int(size)


def get_max_bytes() -> int:
    """The largest single allocation omeframe makes from declared sizes, in bytes.

    Example
    -------
    >>> import omeframe
    >>> omeframe.get_max_bytes() > 0
    True
    """
    m = _max_bytes
    return physical_memory() // 2 if m is None else m


def set_max_bytes(n: int | None) -> int:
    """Set the memory limit (bytes); ``None`` restores the default. Returns the previous limit.

    Parameters
    ----------
    n
        A positive number of bytes, or ``None`` for half of physical memory.

    Raises
    ------
    ValueError
        When ``n`` is not a positive integer.

    Example
    -------
    >>> import omeframe
    >>> old = omeframe.set_max_bytes(1 << 30)
    >>> omeframe.get_max_bytes()
    1073741824
    >>> _ = omeframe.set_max_bytes(old)
    """
    global _max_bytes
    if n is not None:
        if isinstance(n, bool) or not hasattr(n, "__index__"):
            raise ValueError(f"set_max_bytes expects a positive integer or None, got {n!r}")
        n = operator.index(n)
        if n <= 0:
            raise ValueError(f"set_max_bytes expects a positive number of bytes, got {n}")
    with _lock:
        prev = get_max_bytes()
        _max_bytes = n
    return prev


def check_alloc(nbytes: int, what: str) -> None:
    """Raise ``ResourceLimitError`` when allocating ``nbytes`` for ``what`` exceeds the limit.

    Parameters
    ----------
    nbytes
        Bytes about to be allocated (computed from declared sizes).
    what
        What is being allocated, for the message (e.g. ``"record 'a' TCZYX=(1, 1, 1, 1, 10**9) uint16"``).
    """
    limit = get_max_bytes()
    if nbytes > limit or nbytes < 0:
        raise ResourceLimitError(
            f"{what} needs {nbytes:,} bytes, more than the memory limit of {limit:,} bytes; "
            "if the size is genuine, raise the limit with omeframe.set_max_bytes(n) "
            "or read a region instead of the whole image"
        )
