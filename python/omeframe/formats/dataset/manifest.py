"""The dataset manifest: the single file whose atomic replacement commits a write.

A dataset directory holds ``manifest.json``, one images table per committed
generation and any number of chunk part files. Writers add part files and a
new images table first and replace the manifest last (write to a temporary
file, then ``os.replace``), so a crash at any point leaves the previous
generation intact and readable; files no manifest names are ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omeframe._version import __version__
from omeframe.formats.dataset.schema import DATASET_FORMAT_VERSION
from omeframe.model.errors import CorruptFileError
from omeframe.storage.atomic import atomic_path

__all__ = ["Manifest", "read_manifest", "write_manifest", "MANIFEST_NAME"]

MANIFEST_NAME = "manifest.json"


@dataclass
class Manifest:
    """What one committed generation of a dataset consists of."""

    format: str  # "parquet" or "vortex"
    generation: int = 0
    images: str | None = None  # relative path of the images table
    parts: list[str] = field(default_factory=list)  # relative paths of chunk parts
    format_version: int = DATASET_FORMAT_VERSION
    writer: str = f"omeframe {__version__}"
    kind: str = "omeframe.formats.dataset"


def read_manifest(root: str | os.PathLike[str]) -> Manifest:
    """Read ``root/manifest.json``.

    Raises
    ------
    FileNotFoundError
        When ``root`` is not a dataset directory.
    CorruptFileError
        When the manifest is unreadable or of an unknown layout version.
    """
    root = Path(root)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset directory at {str(root)!r}")
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(root)!r} is not an omeframe dataset: it has no {MANIFEST_NAME}"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        m = Manifest(**{k: raw[k] for k in raw if k in Manifest.__dataclass_fields__})
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptFileError(f"unreadable dataset manifest {str(path)!r}: {exc}") from exc
    if m.kind != "omeframe.formats.dataset" or m.format_version > DATASET_FORMAT_VERSION:
        raise CorruptFileError(
            f"{str(path)!r} describes a dataset of kind {m.kind!r}, layout version "
            f"{m.format_version}; this omeframe reads layout <= {DATASET_FORMAT_VERSION}"
        )
    return m


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> None:
    """Atomically replace ``root/manifest.json`` (the commit point of a write)."""
    with atomic_path(Path(root) / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(asdict(manifest), indent=1) + "\n", encoding="utf-8")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
