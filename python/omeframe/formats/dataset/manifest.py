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

import errno
import json
import os
import re
import stat
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omeframe._version import __version__
from omeframe.formats.dataset.schema import DATASET_FORMAT_VERSION
from omeframe.model.errors import ChunkChecksumError, ConcurrentWriteError, CorruptFileError, NotRegularFileError
from omeframe.storage.atomic import atomic_path, commit_step, fsync_dir, fsync_file, link_exclusive
from omeframe.storage.crc import crc32_function

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
    #: CRC-32 of the bytes of this generation's images table and its Arrow IPC
    #: copy, by relative path (empty in manifests written before omeframe
    #: recorded them: their images files are read unchecked).
    checksums: dict[str, int] = field(default_factory=dict)

    def check_file(self, rel: str, data: bytes | memoryview, what: str) -> None:
        """Raise :class:`ChunkChecksumError` naming ``what`` when ``data`` (file ``rel``'s bytes) fails its CRC.

        Files the manifest records no CRC for pass unchecked.

        Example
        -------
        >>> m = Manifest(format="parquet", checksums={"a.arrow": zlib.crc32(b"abc")})
        >>> m.check_file("a.arrow", b"abc", "'a.arrow'")
        >>> m.check_file("b.arrow", b"anything", "'b.arrow'")
        """
        want = self.checksums.get(rel)
        if want is not None and crc32_function()(data) != want:
            raise ChunkChecksumError(
                f"{what} fails the CRC-32 that generation {self.generation}'s manifest records for it "
                "(the file is damaged or was replaced); restore it from a copy, or write the dataset again"
            )


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


#: The manifest's own CRC-32, over the rest of its content (see :func:`_content_crc`).
_SELF_CRC = "crc32"


def _content_crc(raw: dict[str, object]) -> int:
    """CRC-32 of a manifest's content without its own CRC: its keys sorted, in compact JSON."""
    body = {k: v for k, v in raw.items() if k != _SELF_CRC}
    return zlib.crc32(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def _read_regular(path: Path) -> bytes:
    """The bytes of manifest ``path``, which must be a regular file, not a symbolic link.

    A FIFO or device is never read from (opening a FIFO waits for a writer:
    O_NONBLOCK, and the check is on the open file), and a symbolic link is
    not followed: omeframe writes none, and one could point outside the dataset.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():
            raise NotRegularFileError(
                f"dataset manifest {str(path)!r} is a symbolic link: not followed (omeframe writes none, and it "
                "could point outside the dataset); replace it with the file it points to"
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(
                f"dataset manifest {str(path)!r} is not a regular file (a directory, FIFO or device): not read"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def _check_fields(m: Manifest) -> None:
    """Raise ``TypeError``/``ValueError`` for a manifest field of the wrong type or value."""
    if m.format not in ("parquet", "vortex"):
        raise ValueError(f"'format' is {m.format!r}, expected 'parquet' or 'vortex'")
    if not isinstance(m.generation, int) or isinstance(m.generation, bool) or m.generation < 0:
        raise TypeError(f"'generation' is {m.generation!r}, expected an integer >= 0")
    if m.images is not None and not isinstance(m.images, str):
        raise TypeError(f"'images' is {m.images!r}, expected a relative path")
    if not isinstance(m.parts, list) or not all(isinstance(p, str) for p in m.parts):
        raise TypeError("'parts' is not a list of relative paths")
    if not isinstance(m.checksums, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in m.checksums.items()
    ):
        raise TypeError("'checksums' is not an object of file names and CRC-32 values")


def _parse(path: Path, data: bytes | None = None) -> Manifest:
    try:
        raw = json.loads((_read_regular(path) if data is None else data).decode("utf-8"))
        if not isinstance(raw, dict):
            raise TypeError(f"a manifest is a JSON object, got {type(raw).__name__}")
        stored = raw.get(_SELF_CRC)
        if stored is not None and stored != _content_crc(raw):
            raise ValueError("its content fails its CRC-32 (the file is damaged)")
        m = Manifest(**{k: raw[k] for k in raw if k in Manifest.__dataclass_fields__})
        if m.kind == "omeframe.formats.dataset" and m.format_version <= DATASET_FORMAT_VERSION:
            _check_fields(m)  # (a manifest of another kind or newer layout is refused below)
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
    raw: dict[str, object] = asdict(manifest)
    raw[_SELF_CRC] = _content_crc(raw)
    return (json.dumps(raw, indent=1) + "\n").encode("utf-8")


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
        except (CorruptFileError, NotRegularFileError):
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
        data = _read_regular(generation_path(root, gens[-1]))
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
            data = _read_regular(legacy)
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
