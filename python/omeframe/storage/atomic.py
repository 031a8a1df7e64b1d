"""Atomic, durable file writes: write beside the target, fsync, rename into place, fsync the folder.

Every step that makes data durable or visible (a file's fsync, a rename, a
folder's fsync, a manifest's exclusive create) calls :func:`commit_step` with
a name. In normal use that does nothing; tests set :data:`COMMIT_HOOK` to a
callable that kills the process at a chosen step, which is how the crash
tests prove that every step leaves either the old or the new state.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "atomic_path", "commit_step", "fsync_file", "fsync_dir", "link_exclusive", "sweep_stale_temps", "COMMIT_HOOK",
    "STALE_TEMP_SECONDS",
]

#: Test hook: called with the step's name after each named commit step
#: (``None`` in normal use). A test sets it to kill the process at one step.
COMMIT_HOOK: Callable[[str], None] | None = None


def commit_step(name: str) -> None:
    """Mark that commit step ``name`` has just completed (calls :data:`COMMIT_HOOK`)."""
    hook = COMMIT_HOOK
    if hook is not None:
        hook(name)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data and metadata to stable storage."""
    fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (new, renamed or removed names) to stable storage.

    A no-op where folders cannot be opened (Windows), where renames are durable
    once they return.
    """
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):  # Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on folders
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def link_exclusive(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Give the complete file ``src`` the name ``dst`` only if ``dst`` does not exist.

    The compare-and-swap of dataset commits: of several processes linking to
    the same ``dst`` exactly one succeeds, and ``dst`` appears with its full
    content at once. On filesystems without hard links the fallback is an
    exclusive create (``O_CREAT | O_EXCL``) followed by a write and an fsync:
    still exactly one winner, but a crash during that write can leave ``dst``
    truncated (readers then report it as corrupt).

    Raises
    ------
    FileExistsError
        When ``dst`` already exists (another writer won).
    """
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    data = Path(src).read_bytes()
    fd = os.open(os.fspath(dst), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True, sweep: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    On any exception the temporary file or directory is removed and ``path`` is
    left exactly as it was, so a failed write never destroys existing data.
    With ``durable`` (the default) the written file is fsynced before the
    rename and its folder after it, so once the block exits the new content
    survives a power loss; commit steps ``fsync:<name>``, ``rename:<name>``
    and ``fsync-dir:<name>`` are reported to :func:`commit_step`.

    The temporary name carries its writer's host and process, so that a write
    killed before it could clean up (``kill -9``, a power loss) leaves litter
    a later write can recognise: with ``sweep``, the temporaries of earlier
    writes of the same ``path`` whose process is gone are removed first (see
    :func:`sweep_stale_temps`).

    Raises
    ------
    IsADirectoryError
        When ``path`` is a directory (nothing is written).
    FileNotFoundError
        When its directory does not exist.
    """
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {str(target)!r}: it is a directory; name a file inside it")
    if not parent.exists():
        raise FileNotFoundError(
            f"cannot write {str(target)!r}: its directory {str(parent)!r} does not "
            "exist; create it first"
        )
    if sweep:
        sweep_stale_temps(target)
    tmp = parent / f".{target.name}.tmp-{_OWNER}{uuid.uuid4().hex[:12]}"
    try:
        yield tmp
        if durable and tmp.is_file():
            fsync_file(tmp)
            commit_step(f"fsync:{target.name}")
        os.replace(tmp, target)
        if durable:
            commit_step(f"rename:{target.name}")
            fsync_dir(parent)
            commit_step(f"fsync-dir:{target.name}")
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


#: Age after which a temporary of another host (whose process cannot be
#: checked) counts as abandoned: 24 hours.
STALE_TEMP_SECONDS = 24 * 3600.0

# Host and process of this writer, as temporary names begin after ".tmp-": 8 hex digits of
# the host name's CRC-32, then 8 of the pid (hex only: dataset GC knows temporaries by that).
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_OWNER = f"{_HOST}{os.getpid() & 0xFFFFFFFF:08x}"


def _refresh_owner() -> None:  # a forked child writes under its own pid
    global _OWNER
    _OWNER = f"{_HOST}{os.getpid() & 0xFFFFFFFF:08x}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_refresh_owner)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):  # alive under another user, or cannot tell
        return False
    return False


def sweep_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that killed writes of ``path`` left beside it; return what was removed.

    A temporary (``.<name>.tmp-<host><pid><id>`` in hex, and the part files
    ``..<name>.tmp-...`` a parallel writer adds beside it) is removed when it
    was written on this host by a process that no longer exists, or when it is
    older than :data:`STALE_TEMP_SECONDS` (another host's writer cannot be
    checked). Temporaries of live writers are never touched; names of other
    files never match.
    """
    target = Path(path)
    prefixes = (f".{target.name}.tmp-", f"..{target.name}.tmp-")
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None:
            continue
        tag = name[len(prefix) :]
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        mine = len(tag) >= 28 and tag[:8] == _HOST and all(c in "0123456789abcdef" for c in tag[8:16])
        if not ((mine and _process_gone(int(tag[8:16], 16))) or age > STALE_TEMP_SECONDS):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed
