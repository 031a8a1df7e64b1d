"""Garbage collection of a dataset's retired generations and unreferenced files.

The rule (also in ``docs/concepts/guarantees.md``):

* The **current** generation (the highest committed one) is never collected,
  nor the generation ``manifest.json`` names (what older omeframe versions
  read; a collection first brings a lagging ``manifest.json`` up to date).
* A generation is **retired** once its successor was committed more than
  ``grace_seconds`` ago (default :data:`DEFAULT_GC_GRACE_SECONDS`, one hour).
  Until then it is *live*: its manifest and every file it names stay, so a
  reader that opened it keeps reading it.
* A file no live generation names (images tables and chunk parts of retired
  generations, files of failed or killed writes) is removed only when it has
  not been modified for ``grace_seconds`` either; a writer still at work
  refreshes its files' modification times while it writes, so its
  uncommitted files are left alone.

Writers call :func:`maybe_collect` after each commit (it does real work only
when some generation has passed its grace period); :meth:`omeframe.Dataset.gc`
runs :func:`collect_garbage` on demand.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from omeframe.formats.dataset.manifest import (
    MANIFEST_NAME,
    MANIFESTS_DIR,
    Manifest,
    generation_path,
    list_generations,
    publish_copy,
    read_manifest,
    read_manifest_file,
)
from omeframe.model.errors import CorruptFileError
from omeframe.storage.atomic import fsync_dir

__all__ = ["DEFAULT_GC_GRACE_SECONDS", "GcReport", "collect_garbage", "maybe_collect"]

#: How long a superseded generation stays readable, and how long an
#: unreferenced file must sit unmodified before it is removed (seconds).
DEFAULT_GC_GRACE_SECONDS = 3600.0

# The only names GC ever removes: what dataset writers create.
_ROOT_FILE = re.compile(r"^(images-.+\.(parquet|vortex|arrow)|\.(images-|manifest\.json).*\.tmp-[0-9a-f]+)$")
_CHUNK_FILE = re.compile(r"^\.?part-.+$")
_MANIFEST_TMP = re.compile(r"^\..+\.tmp-[0-9a-f]+$")


@dataclass(frozen=True)
class GcReport:
    """What one garbage collection did.

    Attributes
    ----------
    current
        The current generation (never collected).
    kept
        Generations still live (current, ``manifest.json``'s, and those
        superseded less than the grace period ago), ascending.
    removed
        Paths removed, relative to the dataset folder.
    """

    current: int
    kept: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _mtime(p: Path) -> float | None:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return None


def _referenced(m: Manifest) -> set[str]:
    out = set(m.parts)
    if m.images:
        out.add(m.images)
        out.add(str(Path(m.images).with_suffix(".arrow")))
    return out


def collect_garbage(
    root: str | os.PathLike[str], grace_seconds: float = DEFAULT_GC_GRACE_SECONDS, *, now: float | None = None
) -> GcReport:
    """Remove retired generations and files no live generation names (see the module rule).

    Parameters
    ----------
    root
        The dataset folder.
    grace_seconds
        How long a superseded generation stays readable and an unreferenced
        file stays untouched before removal. ``0`` collects everything but the
        current generation at once: only safe when no other process reads or
        writes the dataset.
    now
        The time to judge ages against (``time.time()`` by default).

    Returns
    -------
    GcReport
        The generations kept and the paths removed.

    Raises
    ------
    ValueError
        For a negative ``grace_seconds``.
    FileNotFoundError, CorruptFileError
        When ``root`` is no dataset or a live manifest is unreadable (nothing
        is removed then).

    Example
    -------
    >>> collect_garbage("slides/", grace_seconds=600).removed   # doctest: +SKIP
    """
    if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, (int, float)) or not grace_seconds >= 0:
        raise ValueError(f"grace_seconds must be a non-negative number of seconds, got {grace_seconds!r}")
    root = Path(root)
    t = time.time() if now is None else float(now)
    current = read_manifest(root)
    gens = list_generations(root)
    legacy_path = root / MANIFEST_NAME
    live: dict[int, Manifest] = {current.generation: current}
    commit_time: dict[int, float] = {}
    for g in gens:
        mt = _mtime(generation_path(root, g))
        if mt is not None:
            commit_time[g] = mt
    legacy_time = _mtime(legacy_path)
    for i, g in enumerate(gens):
        if g in live:
            continue
        succ = gens[i + 1] if i + 1 < len(gens) else None
        superseded = commit_time.get(succ, legacy_time) if succ is not None else legacy_time
        if superseded is None or t - superseded < grace_seconds:
            try:
                live[g] = read_manifest(root, g)
            except FileNotFoundError:  # a concurrent collection removed it
                continue
    copy = _read_copy(legacy_path)  # what older omeframe versions read: kept live too
    if gens and (copy is None or copy.generation < current.generation):
        # A writer died between its commit and refreshing the copy: refresh it now.
        publish_copy(root)
        copy, legacy_time = _read_copy(legacy_path), _mtime(legacy_path)
    if copy is not None:
        live.setdefault(copy.generation, copy)
        if legacy_time is not None:
            commit_time.setdefault(copy.generation, legacy_time)
    referenced: set[str] = set()
    for m in live.values():
        referenced |= _referenced(m)
    oldest_live = min((commit_time.get(g, t) for g in live), default=t)

    removed: list[str] = []
    for g in gens:
        if g not in live:
            generation_path(root, g).unlink(missing_ok=True)
            removed.append(f"{MANIFESTS_DIR}/{g:010d}.json")
    candidates: list[tuple[str, Path]] = []
    for folder, pattern, prefix in (
        (root, _ROOT_FILE, ""),
        (root / "chunks", _CHUNK_FILE, "chunks/"),
        (root / MANIFESTS_DIR, _MANIFEST_TMP, f"{MANIFESTS_DIR}/"),
    ):
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        candidates += [(prefix + n, folder / n) for n in names if pattern.match(n)]
    touched: set[Path] = set()
    for rel, p in candidates:
        if rel in referenced:
            continue
        mt = _mtime(p)
        if mt is None or t - max(mt, oldest_live) < grace_seconds:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(rel)
        touched.add(p.parent)
    if removed:
        touched.add(root / MANIFESTS_DIR)
        for d in touched:
            if d.is_dir():
                fsync_dir(d)
    return GcReport(current=current.generation, kept=sorted(live), removed=sorted(removed))


def _read_copy(path: Path) -> Manifest | None:
    """``manifest.json`` as a manifest, or ``None`` when missing or unreadable (it is only a copy)."""
    try:
        return read_manifest_file(path)
    except (CorruptFileError, FileNotFoundError):
        return None


def maybe_collect(root: str | os.PathLike[str], grace_seconds: float = DEFAULT_GC_GRACE_SECONDS) -> GcReport | None:
    """Collect garbage only if some generation has passed its grace period (cheap otherwise).

    Called after each commit. Errors are not raised: collection is an
    optimisation, and it removes nothing unless it could read every live
    manifest. Returns the report, or ``None`` when nothing was due.
    """
    root = Path(root)
    gens = list_generations(root)
    if len(gens) < 2:
        return None
    succ = _mtime(generation_path(root, gens[1]))
    if succ is None or time.time() - succ < grace_seconds:
        return None
    try:
        return collect_garbage(root, grace_seconds)
    except (OSError, CorruptFileError):
        return None
