"""Regenerate ``docs/images/view3d-nuclei.png`` from ``docs/howto/viewing-3d.md``.

Runs the page's ``python`` code blocks (as ``tests/test_docs.py`` does) in a
temporary directory, off-screen, and copies the ``nuclei-3d.png`` they render
into ``docs/images/``, re-encoded as an optimised palette PNG to keep it small.

Usage: ``python docs/render_view3d.py`` (needs the ``viz3d`` extra).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).resolve().parent
PAGE = DOCS / "howto" / "viewing-3d.md"
OUT = DOCS / "images" / "view3d-nuclei.png"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def main() -> None:
    code = _BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    if not code:
        raise SystemExit(f"{PAGE} has no python block to run")
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            namespace: dict[str, object] = {"__name__": "render_view3d"}
            for block in code:
                exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - our own docs
            picture = Image.open(Path(tmp) / "nuclei-3d.png").convert("RGB")
        finally:
            os.chdir(cwd)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    picture.quantize(colors=128).save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB, {picture.size[0]} x {picture.size[1]})")


if __name__ == "__main__":
    main()
