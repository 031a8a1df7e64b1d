"""The public exception types (defined in :mod:`omeframe.model.errors`).

Every error derives from :class:`OmeframeError` and from the builtin a caller
would catch (``ValueError``, ``KeyError``, ``IndexError``, ``OSError`` …).
"""

from __future__ import annotations

from omeframe.model.errors import *  # noqa: F403
from omeframe.model.errors import __all__ as __all__  # noqa: F401
