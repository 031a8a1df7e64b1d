"""Dataset manifests: one immutable file per committed generation; creating it commits.

A dataset directory holds chunk part files (``chunks/``), one images table
per generation and, in ``_manifests/``, one manifest per committed
generation, named by its number (``_manifests/0000000007.json``). A writer
writes and fsyncs its part files and images table first, then commits by
*exclusively creating* the next generation's manifest (a hard link of a
complete, fsynced temporary file: :func:`~omeframe.storage.atomic.link_exclusive`).
That is a compare-and-swap on the generation number: of two writers based on
generation ``n``, exactly one creates ``n + 1``; the other gets
:class:`~omeframe.model.errors.ConcurrentWriteError`. A crash before the link
leaves generation ``n`` current; after it, ``n + 1``.

The current generation is the highest one in ``_manifests/``. ``manifest.json``
is kept as a copy of the current manifest for tools and older omeframe
versions (and to mark the folder as a dataset); datasets written before
``_manifests/`` existed have only ``manifest.json``, which is read as their
one generation. When ``manifest.json`` names a higher generation than
``_manifests/`` (an older omeframe version appended), it is the current one.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omeframe._version import __version__
from omeframe.formats.dataset.schema import DATASET_FORMAT_VERSION
from omeframe.model.errors import ConcurrentWriteError, CorruptFileError
from omeframe.storage.atomic import atomic_path, commit_step, fsync_dir, fsync_file, link_exclusive

__all__ = [
    "Manifest",
    "read_manifest",
    "read_manifest_file",
    "write_manifest",
    "list_generations",
    "generation_path",
    "manifest_file",
    "publish_copy",
    "MANIFEST_NAME",
    "MANIFESTS_DIR",
]

MANIFEST_NAME = "manifest.json"
#: Folder of the per-generation manifests.
MANIFESTS_DIR = "_manifests"
_GEN_RE = re.compile(r"^(\d+)\.json$")


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


def generation_path(root: str | os.PathLike[str], generation: int) -> Path:
    """Path of generation ``generation``'s manifest file."""
    return Path(root) / MANIFESTS_DIR / f"{int(generation):010d}.json"


def list_generations(root: str | os.PathLike[str]) -> list[int]:
    """Generation numbers present in ``root/_manifests`` (ascending; empty for the legacy layout)."""
    try:
        names = os.listdir(Path(root) / MANIFESTS_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(m.group(1)) for m in map(_GEN_RE.match, names) if m)


def _parse(path: Path, data: bytes | None = None) -> Manifest:
    try:
        raw = json.loads((path.read_bytes() if data is None else data).decode("utf-8"))
        m = Manifest(**{k: raw[k] for k in raw if k in Manifest.__dataclass_fields__})
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptFileError(f"unreadable dataset manifest {str(path)!r}: {exc}") from exc
    if m.kind != "omeframe.formats.dataset" or m.format_version > DATASET_FORMAT_VERSION:
        raise CorruptFileError(
            f"{str(path)!r} describes a dataset of kind {m.kind!r}, layout version "
            f"{m.format_version}; this omeframe reads layout <= {DATASET_FORMAT_VERSION}"
        )
    return m


def read_manifest_file(path: str | os.PathLike[str]) -> Manifest:
    """Parse one manifest file (a generation file or ``manifest.json``).

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    CorruptFileError
        When it is unreadable or of an unknown layout version.
    """
    return _parse(Path(path))


def _encode(manifest: Manifest) -> bytes:
    return (json.dumps(asdict(manifest), indent=1) + "\n").encode("utf-8")


def read_manifest(root: str | os.PathLike[str], generation: int | None = None) -> Manifest:
    """Read the current manifest of the dataset at ``root`` (or generation ``generation``'s).

    Raises
    ------
    FileNotFoundError
        When ``root`` is not a dataset directory, or ``generation`` is not
        (or no longer) stored.
    CorruptFileError
        When the manifest is unreadable or of an unknown layout version.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset directory at {str(root)!r}")
    legacy = root / MANIFEST_NAME
    if generation is not None:
        p = generation_path(root, generation)
        if p.is_file():
            return _parse(p)
        if legacy.is_file():
            m = _parse(legacy)
            if m.generation == generation:
                return m
        raise FileNotFoundError(
            f"dataset {str(root)!r} has no generation {generation} (it was never committed, or "
            f"was garbage-collected); its generations are {list_generations(root)}"
        )
    gens = list_generations(root)
    if not gens:
        if not legacy.is_file():
            raise FileNotFoundError(f"{str(root)!r} is not an omeframe dataset: it has no {MANIFEST_NAME}")
        return _parse(legacy)
    current = _parse(generation_path(root, gens[-1]))
    if legacy.is_file():
        # Only an older omeframe version (which knows no _manifests/) writes
        # manifest.json ahead of _manifests/; its commit is then the newest.
        try:
            copy = _parse(legacy)
        except CorruptFileError:
            return current  # the copy is a convenience; the generation files rule
        if copy.generation > current.generation:
            return copy
    return current


def manifest_file(root: str | os.PathLike[str], manifest: Manifest) -> Path:
    """The file ``manifest`` was read from: its generation file, else ``manifest.json``."""
    p = generation_path(root, manifest.generation)
    return p if p.is_file() else Path(root) / MANIFEST_NAME


def publish_copy(root: Path) -> None:
    """Point ``manifest.json`` at the highest generation (a copy of its manifest).

    Re-checked after each replace: when a concurrent commit overtook this one,
    the copy is refreshed again, so ``manifest.json`` ends at the newest
    generation whichever publisher renames last.
    """
    for _ in range(8):
        gens = list_generations(root)
        if not gens:
            return
        data = generation_path(root, gens[-1]).read_bytes()
        with atomic_path(root / MANIFEST_NAME) as tmp:
            tmp.write_bytes(data)
        if list_generations(root)[-1] == gens[-1]:
            return


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Commit ``manifest`` as generation ``manifest.generation`` of the dataset at ``root``.

    The commit is the exclusive creation of the generation's manifest file
    (after the file was written and fsynced beside it); the ``_manifests``
    folder is fsynced before this returns, then ``manifest.json`` is refreshed.
    When the base generation exists only as ``manifest.json`` (the legacy
    layout, or a commit by an older omeframe version) it is first recorded as
    a generation file, so garbage collection keeps it for the grace period.

    Returns
    -------
    Path
        The committed generation file.

    Raises
    ------
    ConcurrentWriteError
        When generation ``manifest.generation`` already exists: another writer
        committed first and nothing was committed by this call.
    """
    root = Path(root)
    mdir = root / MANIFESTS_DIR
    if not mdir.is_dir():
        mdir.mkdir(exist_ok=True)
        fsync_dir(root)
    legacy = root / MANIFEST_NAME
    prev = generation_path(root, manifest.generation - 1)
    if manifest.generation > 1 and not prev.is_file() and legacy.is_file():
        try:
            data = legacy.read_bytes()
            base = _parse(legacy, data)
        except CorruptFileError:
            base = None
        if base is not None and base.generation == manifest.generation - 1:
            _link_bytes(mdir, prev, data, missing_ok=True)
    target = generation_path(root, manifest.generation)
    try:
        _link_bytes(mdir, target, _encode(manifest), missing_ok=False)
    except FileExistsError:
        raise ConcurrentWriteError(
            f"concurrent write to dataset {str(root)!r}: generation {manifest.generation} was committed "
            f"by another writer first, so this write (based on generation {manifest.generation - 1}) "
            "committed nothing; reopen the dataset and write again, or pass retries=N to rebase and "
            "retry automatically"
        ) from None
    commit_step("commit")
    fsync_dir(mdir)
    commit_step("fsync-dir:_manifests")
    publish_copy(root)
    return target


def _link_bytes(folder: Path, target: Path, data: bytes, *, missing_ok: bool) -> None:
    """Write ``data`` to a fsynced temporary file in ``folder`` and link it exclusively as ``target``."""
    tmp = folder / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        tmp.write_bytes(data)
        fsync_file(tmp)
        commit_step(f"fsync:{target.name}")
        try:
            link_exclusive(tmp, target)
        except FileExistsError:
            if not missing_ok:
                raise
    finally:
        tmp.unlink(missing_ok=True)
