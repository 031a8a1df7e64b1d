"""Atomic file writes: write beside the target, then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    On any exception the temporary file or directory is removed and ``path`` is
    left exactly as it was, so a failed write never destroys existing data.
    """
    target = Path(path)
    parent = target.parent
    if not parent.exists():
        raise FileNotFoundError(
            f"cannot write {str(target)!r}: its directory {str(parent)!r} does not "
            "exist; create it first"
        )
    tmp = parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
