"""Small predicates shared by argument checks across the package."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["is_integer"]


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer argument: a Python or numpy integer, not a bool.

    ``True``, ``1.5`` and ``"2"`` are not: an argument check refuses them
    rather than reading ``True`` as 1 or truncating ``1.5``.

    Example
    -------
    >>> import numpy as np
    >>> is_integer(3), is_integer(np.int64(3)), is_integer(True), is_integer(1.5), is_integer("2")
    (True, True, False, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
