"""Pytest plugin: ``import ome_arrow`` (and ``ome_arrow.<module>``) imports omeframe's compat layer.

Loaded with ``-p ome_arrow_alias`` by :mod:`tests.compat.test_reference_suite`
in the subprocess that runs ome-arrow 0.1.0's own test suite. A meta-path
finder placed first answers every ``ome_arrow`` import with the matching
module of ``omeframe.compat.ome_arrow`` (``OMEFRAME_COMPAT_TARGET`` names
another target package, which is how the names-only baseline against the
top-level ``omeframe`` package is measured). The installed ``ome_arrow``
package, if any, is never imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

ALIAS = "ome_arrow"
TARGET = os.environ.get("OMEFRAME_COMPAT_TARGET", "omeframe.compat.ome_arrow")


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed by ``import_module``."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = TARGET + fullname[len(ALIAS) :]
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real), is_package=fullname == ALIAS)


def _install() -> None:
    for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _AliasFinder())


_install()
