"""The package's layering: every module imports, and none imports a layer above it.

Layer order (a module may import its own layer and the ones below it):

    model < storage < engine < formats.vortex < formats.record < formats.dataset
    < other formats < registry < ops < facade/query < loaders/catalog/duckdb/polars
    < cli < omeframe/__init__

Within ``formats`` the sub-packages are layers of their own: ``formats.vortex``,
``formats.record`` and ``formats.dataset`` each sit below the next, and the
other formats (tiff, zarr, czi, stack ...) sit on top of all three and may use
each other. The rule holds inside functions too: a function-level import is
no way around it.

A function-level ``omeframe`` import is kept only to defer a heavy
third-party package: each one is listed in :data:`LAZY_IMPORTS` with that
package, and its line says so in a ``# lazy: <package>`` comment.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "python" / "omeframe"

#: (module prefix below ``omeframe``, rank); the first matching prefix wins.
LAYERS: list[tuple[str, float]] = [
    ("model", 0), ("_version", 0), ("_sample", 0),
    ("storage", 1),
    ("engine", 2),
    ("formats.vortex", 3),
    ("formats.record", 4),
    ("formats.dataset", 5),
    ("formats", 6),
    ("registry", 7),
    ("ops", 8), ("shapes", 8),
    ("tiles", 8.5),
    ("facade", 9), ("query", 9), ("models", 9), ("errors", 9),
    ("loaders", 10), ("catalog", 10), ("duckdb", 10), ("polars", 10), ("dask", 10), ("torch", 10), ("jax", 10),
    ("cli", 11), ("napari", 11), ("compat", 12),
    ("__main__", 12), ("", 12),
]


def layer(module: str) -> tuple[float, str]:
    """``(rank, group)`` of a dotted ``omeframe...`` module name."""
    rel = module[len("omeframe"):].lstrip(".")
    for prefix, rank in LAYERS:
        if rel == prefix or rel.startswith(prefix + ".") or (prefix == "" and rel == ""):
            return rank, prefix
    raise KeyError(f"{module!r} is in no layer; add its prefix to LAYERS in tests/test_layers.py")


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return dict(sorted(mods.items()))


MODULES = _modules()


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every ``omeframe`` module ``path`` imports (module level and inside functions)."""
    out = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("omeframe"):
                out.append((target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("omeframe")]
    return out


#: (importing module, imported module) -> the heavy package the function-level
#: import defers. A new lazy import must be added here deliberately.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("omeframe.models", "omeframe.formats.zarr.models"): "pydantic",
    ("omeframe.formats.zarr.source", "omeframe.formats.zarr.models"): "pydantic",
    ("omeframe.formats.zarr.writer", "omeframe.formats.zarr.models"): "pydantic",
    ("omeframe.facade.omearrow", "omeframe.formats.zarr.view"): "zarr",
    ("omeframe.napari.reader", "omeframe.formats.zarr.view"): "zarr",
    ("omeframe.query.duckdb_conn", "omeframe.formats.vortex.arrow_dataset"): "pyarrow.dataset",
    ("omeframe.query.polars_scan", "omeframe.formats.vortex.arrow_dataset"): "pyarrow.dataset",
}

#: Packages ``import omeframe`` must not load (each is optional or slow to import).
HEAVY = (
    "duckdb", "polars", "vortex", "zarr", "tifffile", "pydantic", "torch", "jax", "pyarrow.dataset", "dask",
    "pyvista", "vtk",
)


def _function_imports(module: str, path: Path) -> list[tuple[str, int]]:
    """``omeframe`` modules imported inside a function body of ``path`` (``from pkg import
    submodule`` names the submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                if target.startswith("omeframe"):
                    subs = [f"{target}.{a.name}" for a in child.names if f"{target}.{a.name}" in MODULES]
                    out.extend((s, child.lineno) for s in subs or [target])
            elif in_function and isinstance(child, ast.Import):
                out.extend((a.name, child.lineno) for a in child.names if a.name.startswith("omeframe"))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return out


def test_every_module_has_a_layer():
    for m in MODULES:
        layer(m)


def test_layer_table_rejects_unknown_and_orders_formats():
    assert layer("omeframe.formats.tiff.source")[0] > layer("omeframe.formats.dataset.writer")[0]
    assert layer("omeframe.engine.lazy")[0] < layer("omeframe.formats.vortex.file")[0]
    with pytest.raises(KeyError, match="in no layer"):
        layer("omeframe.nowhere")


def test_no_module_imports_a_layer_above_it():
    bad = []
    for m, path in MODULES.items():
        rank, group = layer(m)
        for target, line in _imports(m, path):
            t_rank, t_group = layer(target)
            upward = t_rank > rank
            # formats.vortex / .record / .dataset are separate layers of one rank group
            sideways = t_rank == rank and t_group != group and group.startswith("formats")
            if upward or sideways:
                bad.append(
                    f"{path.relative_to(PKG.parent)}:{line}: {m} (layer {rank}) imports {target} (layer {t_rank})"
                )
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_the_checker_sees_function_level_imports(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from omeframe.facade import OMEArrow\n    return OMEArrow\n")
    assert _imports("omeframe.engine.mod", src) == [("omeframe.facade", 2)]


def test_every_module_imports_in_a_fresh_interpreter():
    """No module is broken or caught in an import cycle (importing any module runs
    ``omeframe/__init__`` first, so one fresh interpreter sees the one import order)."""
    code = (
        "import importlib, json, sys, traceback\n"
        f"sys.path.insert(0, {str(PKG.parent)!r})\n"
        "failed = {}\n"
        f"for name in {[m for m in MODULES if not m.endswith('__main__')]!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed[name] = traceback.format_exc(limit=4)\n"
        "print(json.dumps(failed))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    failed = json.loads(res.stdout.strip().splitlines()[-1])
    assert not failed, "modules that do not import:\n" + "\n".join(f"{k}:\n{v}" for k, v in failed.items())


def test_function_level_imports_only_defer_heavy_packages():
    """Every function-level ``omeframe`` import is in LAZY_IMPORTS and its line names the
    package it defers; every LAZY_IMPORTS entry is still used."""
    bad, used = [], set()
    for m, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for target, line in _function_imports(m, path):
            where = f"{path.relative_to(PKG.parent)}:{line}: {m} imports {target} inside a function"
            reason = LAZY_IMPORTS.get((m, target))
            if reason is None:
                bad.append(f"{where}; move it to module level (or add it to LAZY_IMPORTS with the "
                           "heavy package it defers)")
            elif f"# lazy: {reason}" not in lines[line - 1]:
                bad.append(f"{where}; its line needs the comment '# lazy: {reason}'")
            used.add((m, target))
    stale = sorted(set(LAZY_IMPORTS) - used)
    assert not bad, "unjustified function-level imports:\n" + "\n".join(bad)
    assert not stale, f"LAZY_IMPORTS entries with no such import left (remove them): {stale}"


def test_the_lazy_import_checker_sees_only_function_bodies(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from omeframe.model import errors\n"
        "if TYPE_CHECKING:\n"
        "    from omeframe.engine.lazy import LazyImage\n"
        "class C:\n"
        "    def f(self):\n"
        "        from omeframe.formats.zarr import models\n"
        "        import omeframe.storage.files\n"
        "        return models\n"
    )
    assert _function_imports("omeframe.ops.mod", src) == [
        ("omeframe.formats.zarr.models", 7),
        ("omeframe.storage.files", 8),
    ]


def _loaded_after(code: str) -> list[str]:
    """The HEAVY packages loaded once ``code`` ran in a fresh interpreter."""
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(PKG.parent)!r})\n"
        f"{code}\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_import_omeframe_loads_no_heavy_package():
    assert _loaded_after("import omeframe") == []


@pytest.mark.parametrize("importer, target", sorted(set(LAZY_IMPORTS)))
def test_each_lazy_import_defers_its_package(importer, target):
    """The reason holds: importing the importer leaves the package unloaded, the target loads it."""
    heavy = LAZY_IMPORTS[(importer, target)]
    assert heavy not in _loaded_after(f"import {importer}")
    assert heavy in _loaded_after(f"import {target}")
