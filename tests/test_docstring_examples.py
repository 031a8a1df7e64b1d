"""The examples in omeframe's docstrings run and print what they show.

Every module of the package is imported and its docstring examples run with
:mod:`doctest` (examples marked ``# doctest: +SKIP`` need data or services the
suite does not have: a remote bucket, a user's slide; ``...`` matches any
text, as in pytest's own doctests). An example that fails
fails its module's test, with doctest's report of what it printed instead.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import omeframe
from conftest import TORCH_DECLARED, TORCH_SKIP_REASON, _optional

#: Every module but ``omeframe.__main__`` (importing it runs the command line).
MODULES = sorted(m.name for m in pkgutil.walk_packages(omeframe.__path__, "omeframe.") if m.name != "omeframe.__main__")
#: Modules whose examples need an optional package, and that package's fixture arguments.
NEEDS = {"omeframe.torch": ("torch", TORCH_DECLARED, TORCH_SKIP_REASON)}


def test_every_module_is_listed() -> None:
    assert {"omeframe.registry", "omeframe.formats.vortex.take", "omeframe.engine.reopen"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if name in NEEDS:
        _optional(*NEEDS[name])
    module = importlib.import_module(name)
    monkeypatch.chdir(tmp_path)  # an example that writes a relative path writes it here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # and tempfile.mkdtemp() lands here too, not in /tmp
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(verbose=False, optionflags=doctest.ELLIPSIS)  # "..." ends long messages
    report = io.StringIO()
    with redirect_stdout(report):
        for test in finder.find(module, name, globs=dict(vars(module))):
            runner.run(test, out=report.write)
    failed, _ = runner.summarize(verbose=False)
    assert failed == 0, report.getvalue()


def test_examples_leave_nothing_in_the_system_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system_tmp = Path(tempfile.gettempdir())
    before = set(system_tmp.iterdir())
    test_docstring_examples("omeframe.registry", tmp_path, monkeypatch)  # its example calls tempfile.mkdtemp()
    assert any(tmp_path.rglob("cells.npy"))
    new = set(system_tmp.iterdir()) - before
    assert not [p for p in new if (p / "cells.npy").exists()]
