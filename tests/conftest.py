"""Shared fixtures: the optional array libraries (torch, JAX) the tensor tests need.

pyproject's ``test`` extra declares JAX for every supported Python and torch
for Python 3.11 only (the one torch wheel this project's machines hold is a
CPU build for 3.11; elsewhere pip would download a multi-GB CUDA build). A
test that asks for one of these fixtures skips, with the reason, where the
package is not declared or not installed. Under ``OMEFRAME_REQUIRE_EXTRAS=1``
(set by ``make test`` and ``make test-all``, so by CI) a package the extra
declares for this Python but that cannot be imported fails the test instead
of skipping it, so a broken install never turns into silently skipped tests.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

import pytest

PY = f"{sys.version_info.major}.{sys.version_info.minor}"

#: torch is declared in the test extra for these Pythons only (see pyproject.toml).
TORCH_DECLARED = sys.version_info < (3, 12)

TORCH_SKIP_REASON = (
    f"torch is not tested on Python {PY}: torch is only available as a CPU build for Python 3.11 "
    "on this machine (torch==2.13.0 from the local wheel); for other Pythons pip would download "
    "a multi-GB CUDA build, so the test extra installs torch on 3.11 only"
)


def _require_extras() -> bool:
    return os.environ.get("OMEFRAME_REQUIRE_EXTRAS", "") not in ("", "0")


def _optional(name: str, declared: bool, skip_reason: str) -> ModuleType:
    """Import ``name``; skip with ``skip_reason`` when absent, fail when it should be there."""
    try:
        return __import__(name)
    except ImportError as exc:
        if declared and _require_extras():
            pytest.fail(
                f"{name} is declared in the test extra for Python {PY} but cannot be imported ({exc}); "
                "reinstall the test extra: pip install -e '.[test]' (make test-all does this when "
                "pyproject.toml changes)"
            )
        pytest.skip(skip_reason if not declared else f"{name} is not installed ({exc}); pip install -e '.[test]'")


@pytest.fixture
def torch() -> ModuleType:
    """The ``torch`` module (skips on Pythons the test extra installs no torch for)."""
    return _optional("torch", TORCH_DECLARED, TORCH_SKIP_REASON)


@pytest.fixture
def jax() -> ModuleType:
    """The ``jax`` module (declared in the test extra for every supported Python)."""
    return _optional("jax", True, "")


@pytest.fixture
def pyvista() -> ModuleType:
    """The ``pyvista`` module (declared in the test extra for every supported Python)."""
    return _optional("pyvista", True, "")
