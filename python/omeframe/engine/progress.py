"""Progress bars that appear only where a person is watching.

A bar is shown when the caller asks for one (``progress=True``) or, with
``progress=None`` (the default of every public function that takes the
option), when standard error is an interactive terminal and the work is
large enough to be worth watching. Pipes, log files and CI output never get
one, so a captured log stays clean.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Bar(Protocol):
    """What callers use of a progress bar."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> Any: ...


class _NoBar:
    """A bar that shows nothing (the default off a terminal)."""

    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def interactive() -> bool:
    """Whether standard error is a terminal a person watches (not CI, not a pipe)."""
    if os.environ.get("CI"):
        return False
    stream = sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def wanted(progress: bool | None, *, large: bool = True) -> bool:
    """Resolve a ``progress`` argument: ``True``/``False`` as given; ``None`` means
    "on an interactive terminal, when the work is ``large``"."""
    if progress is None:
        return large and interactive()
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    return progress


def bar(progress: bool | None, *, total: int, desc: str, unit: str, large: bool = True) -> Bar:
    """A progress bar for ``total`` steps, or one that shows nothing.

    Examples
    --------
    >>> b = bar(False, total=10, desc="writing", unit="chunk")
    >>> b.update(3); b.close()
    """
    if not wanted(progress, large=large):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


def track(items: Iterable[T], progress: bool | None, *, total: int, desc: str, unit: str,
          large: bool = True) -> Iterator[T]:
    """Iterate ``items``, advancing a bar (see :func:`bar`) by one per item."""
    b = bar(progress, total=total, desc=desc, unit=unit, large=large)
    try:
        for item in items:
            yield item
            b.update(1)
    finally:
        b.close()
