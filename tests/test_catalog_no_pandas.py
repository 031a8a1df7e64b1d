"""Catalogs work where pandas is not installed (it is not a dependency of omeframe).

``catalog.parquet`` and ``images.parquet`` store file mtimes as
``timestamp[ns, UTC]``; pyarrow converts nanosecond timestamps to Python objects
only through pandas. A child interpreter in which ``import pandas`` fails runs
the whole catalogs how-to, a rebuild that must skip unchanged files, and the
pandas-free ways of reading a catalog row.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("tifffile")

ROOT = Path(__file__).resolve().parents[1]
HOWTO = ROOT / "docs" / "howto" / "catalogs.md"

_NO_PANDAS = textwrap.dedent(
    """
    import sys

    class _NoPandas:
        def find_spec(self, name, path=None, target=None):
            if name == "pandas" or name.startswith("pandas."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, _NoPandas())
    """
)

_CHECKS = textwrap.dedent(
    """
    import os
    import numpy as np
    import pyarrow.compute as pc
    from pathlib import Path
    import omeframe as of
    from omeframe.catalog import FileRecord
    from omeframe.catalog.records import records_from_table

    Path("npy").mkdir()
    np.save("npy/a.npy", np.arange(20, dtype=np.uint8).reshape(4, 5))
    ns = 1_700_000_000_123_456_789          # sub-microsecond digits: no datetime can hold them
    os.utime("npy/a.npy", ns=(ns, ns))
    of.catalog.build("npy", "npy.catalog", workers=1, progress=False)
    cat = of.catalog.read_catalog("npy.catalog")
    try:
        cat.to_pylist()
    except ValueError as exc:                # proves this interpreter really has no pandas
        assert "pandas" in str(exc), exc
    else:
        raise AssertionError("to_pylist() on a timestamp[ns] converted without pandas")
    row = cat.filter(pc.equal(cat["image_id"], "a")).to_struct_array()[0]
    rec = FileRecord.from_obj(row)
    assert rec.mtime == ns and rec.same_file(FileRecord.from_path("npy/a.npy"))
    assert records_from_table(cat)[0] == rec
    assert cat["mtime"].cast("int64").to_pylist() == [ns]
    again = of.catalog.build("npy", "npy.catalog", workers=1, progress=False)
    assert (again.n_skipped, again.n_ingested) == (1, 0)
    """
)


def _howto_blocks() -> str:
    fence = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
    return "\n".join(m.group(1) for m in fence.finditer(HOWTO.read_text(encoding="utf-8")))


def test_catalog_howto_and_rows_without_pandas(tmp_path):
    code = _howto_blocks()
    assert "FileRecord.from_path" in code and "to_struct_array" in code  # the blocks were found
    script = tmp_path / "run.py"
    # As the how-to says, a script whose catalog build may start worker processes
    # by forkserver or spawn (Python >= 3.12 with threads alive) keeps its work
    # under a main guard: the workers import the script without running it.
    body = textwrap.indent(code + "\n" + _CHECKS, "    ")
    script.write_text(
        _NO_PANDAS + "\n\ndef _main():\n" + body + "\n\nif __name__ == '__main__':\n    _main()\n",
        encoding="utf-8",
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
