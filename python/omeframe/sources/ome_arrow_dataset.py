"""Reader for ome-arrow 0.1.0 typed-chunk dataset directories (filled in below)."""

from __future__ import annotations

from pathlib import Path


def is_ome_arrow_dataset(path: Path) -> bool:
    """True when ``path`` looks like an ome-arrow typed-chunk dataset directory."""
    return False


def open_ome_arrow_dataset(path: Path, *, image_id: str | None = None):  # type: ignore[no-untyped-def]
    raise NotImplementedError
