"""Run the code examples of README.md and docs/**/*.md.

Every fenced block whose info string is ``python`` is executed; the blocks of
one file run in order in a single namespace, inside a fresh temporary working
directory, so later blocks may use names and files made by earlier ones.
Blocks fenced as ``python no-run`` are shown to readers but not executed
(examples that need a GPU, an optional package or a large download).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import omeframe

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(?P<fence>```+)(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def _blocks(path: Path) -> list[tuple[int, str]]:
    """``(first_line, code)`` of every runnable python block of ``path``."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        words = m.group("info").strip().split()
        if not words or words[0] != "python" or "no-run" in words[1:]:
            continue
        first_line = text.count("\n", 0, m.start("body")) + 1
        out.append((first_line, m.group("body")))
    return out


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


RUNNABLE = [p for p in DOC_FILES if p.exists() and _blocks(p)]


def test_doc_files_exist():
    assert (ROOT / "README.md").exists()
    assert (ROOT / "docs" / "index.md").exists()
    assert RUNNABLE, "no runnable python examples found in the docs"


@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("path", RUNNABLE, ids=_rel)
def test_doc_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # an example's tempfile.mkdtemp() lands here, not in /tmp
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": f"docs:{_rel(path)}"}
    for first_line, code in _blocks(path):
        # Pad with newlines so tracebacks point at the line in the Markdown file.
        compiled = compile("\n" * (first_line - 1) + code, str(path), "exec")
        exec(compiled, namespace)  # noqa: S102 - the docs are our own code


#: Docs whose examples must run on a plain ``pip install omeframe``: the
#: optional packages (extras) listed are made unimportable while they run.
PLAIN_INSTALL_DOCS = {
    "docs/howto/tiff-and-zarr.md": ("imagecodecs", "torch", "jax", "dask", "matplotlib", "pylibCZIrw"),
}

_RUN_WITHOUT = """
import json, sys, warnings
blocked, doc = json.loads(sys.argv[1]), sys.argv[2]
for name in blocked:
    sys.modules[name] = None  # import name -> ImportError, as when the package is not installed
warnings.simplefilter("error", UserWarning)
namespace = {"__name__": "docs:" + doc}
for first_line, code in json.loads(sys.stdin.read()):
    exec(compile("\\n" * (first_line - 1) + code, doc, "exec"), namespace)
print("ran", doc)
"""


@pytest.mark.parametrize("doc", sorted(PLAIN_INSTALL_DOCS))
def test_doc_examples_run_on_a_plain_install(doc: str, tmp_path: Path) -> None:
    path = ROOT / doc
    blocks = _blocks(path)
    assert blocks, f"{doc} has no runnable examples"
    env = dict(os.environ, MPLBACKEND="Agg", TMPDIR=str(tmp_path))
    env["PYTHONPATH"] = str(ROOT / "python") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_WITHOUT, json.dumps(PLAIN_INSTALL_DOCS[doc]), str(path)],
        input=json.dumps(blocks), capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False,
    )
    assert proc.returncode == 0, (
        f"{doc} needs a package outside its plain install ({', '.join(PLAIN_INSTALL_DOCS[doc])} made "
        f"unimportable):\n{proc.stderr[-3000:]}"
    )
    assert f"ran {path}" in proc.stdout


@pytest.mark.parametrize("path", [p for p in DOC_FILES if p.exists()], ids=_rel)
def test_relative_links_resolve(path: Path) -> None:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    broken = []
    for m in _LINK.finditer(text):
        target = m.group("target").split("#", 1)[0]
        if not target or "://" in target or target.startswith("mailto:"):
            continue
        if not (path.parent / target).exists():
            broken.append(target)
    assert not broken, f"{_rel(path)} links to missing files: {broken}"


def _table_rows(header: str) -> list[list[str]]:
    """Cells of the rows of the README.md table whose header line starts with ``header``."""
    rows = []
    in_table = False
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith(header):
            in_table = True
            continue
        if in_table:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set(cells[0]) <= {"-", ":", " "}:
                continue
            rows.append(cells)
    return rows


def _status_rows() -> list[tuple[str, str]]:
    """``(name, status)`` of the reference-API status table in README.md."""
    return [(cells[0], cells[1]) for cells in _table_rows("| reference API")]


def _assert_names_exist(name_cell: str, status: str) -> None:
    names = re.findall(r"`([^`]+)`", name_cell)
    assert names, name_cell
    for name in names:
        obj: object = omeframe
        for part in name.split("(")[0].split("."):
            assert hasattr(obj, part), f"README says {name!r} is {status!r}, but it does not exist"
            obj = getattr(obj, part)


def test_status_table_matches_the_package():
    rows = _status_rows()
    assert len(rows) > 30, "README status table not found"
    for name_cell, status in rows:
        names = re.findall(r"`([^`]+)`", name_cell)
        assert names, name_cell
        if not (status.startswith("done") or status.startswith("partial")):
            continue
        for name in names:
            obj: object = omeframe
            for part in name.split("(")[0].split("."):
                assert hasattr(obj, part), f"README says {name!r} is {status!r}, but it does not exist"
                obj = getattr(obj, part)


def test_loader_table_matches_the_package():
    rows = _table_rows("| loader |")
    assert len(rows) >= 6, "README loader table not found"
    for cells in rows:
        if cells[1].startswith(("done", "partial")):
            _assert_names_exist(cells[0], cells[1])


def test_models_table_matches_the_package():
    rows = _table_rows("| ome-zarr-models name |")
    assert len(rows) >= 8, "README OME-Zarr models table not found"
    for cells in rows:
        if cells[2].startswith(("done", "partial")):
            _assert_names_exist(cells[1], cells[2])
