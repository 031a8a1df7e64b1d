"""Validate a dataset's manifest and images table before anything is read through them.

A dataset directory is input like any other: its manifest and images table
may be damaged or crafted. Opening a dataset therefore checks that

* every path they name (images table, chunk parts) resolves, symlinks
  followed, to a file inside the dataset directory: no ``..``, no absolute
  path, no symlink pointing out, so a read never touches a file outside it;
* every images-table row is internally consistent: positive sizes and chunk
  shapes, ``n_chunks`` equal to the chunk grid's size, per-chunk lists
  (lengths, checksums, offsets, parts, rows, raw flags) of ``n_chunks``
  entries, non-negative offsets and lengths whose byte ranges lie inside
  their part file, part indices naming listed parts, frame indexes of
  positive rows, known dtypes and codecs, no duplicate ``(image_id, level)``.

Everything is checked on whole columns at once (numpy over the flattened
lists), so opening a dataset of many small images stays fast. Violations
raise :class:`~omeframe.model.errors.CorruptFileError` naming the file, the
image and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omeframe.engine.codec import normalize_compression
from omeframe.model.dtypes import to_numpy_dtype
from omeframe.model.errors import CorruptFileError, DtypeError

__all__ = ["contained_path", "remote_name", "validate_manifest", "validate_images"]


def contained_path(root: str | os.PathLike[str], rel: object, *, what: str) -> Path:
    """``root / rel`` after checking it stays inside ``root`` (symlinks resolved).

    Parameters
    ----------
    root
        The dataset directory.
    rel
        A relative path read from the manifest or the images table.
    what
        Which field named it, for the message (e.g. ``"images table 'part'"``).

    Raises
    ------
    CorruptFileError
        When ``rel`` is not a non-empty string, is absolute, contains ``..``
        or a NUL byte, or resolves (through symlinks) outside ``root``.

    Example
    -------
    >>> contained_path("/data/ds", "parts/p-0.parquet", what="part").as_posix()
    '/data/ds/parts/p-0.parquet'
    >>> contained_path("/data/ds", "../secret", what="part")
    Traceback (most recent call last):
    ...
    omeframe.model.errors.CorruptFileError: dataset '/data/ds': part '../secret' ...
    """
    base = Path(root)
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise CorruptFileError(f"dataset {str(base)!r}: {what} {rel!r} is not a relative file path")
    pure = Path(rel)
    if pure.is_absolute() or rel.startswith(("/", "\\")) or ".." in pure.parts or pure.drive:
        raise CorruptFileError(
            f"dataset {str(base)!r}: {what} {rel!r} points outside the dataset directory "
            "(absolute or '..' paths are not allowed); the dataset is damaged or crafted"
        )
    path = base / pure
    real_root = os.path.realpath(base)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise CorruptFileError(
            f"dataset {str(base)!r}: {what} {rel!r} resolves to {real!r}, outside the dataset "
            "directory (a symlink points out); the dataset is damaged or crafted"
        )
    return path


def remote_name(root: str, rel: object, *, what: str) -> str:
    """``rel`` after checking it names an object below the dataset URL ``root``.

    Object stores have no symlinks and no local files are touched: the name
    must be a non-empty string that is not absolute, has no ``..`` part and
    no URL scheme.

    Raises
    ------
    CorruptFileError
        When ``rel`` is not such a name.

    Example
    -------
    >>> remote_name("s3://b/ds", "chunks/part-0.parquet", what="part")
    'chunks/part-0.parquet'
    >>> remote_name("s3://b/ds", "../other/x", what="part")
    Traceback (most recent call last):
    ...
    omeframe.model.errors.CorruptFileError: dataset 's3://b/ds': part '../other/x' ...
    """
    if (not isinstance(rel, str) or not rel or "\x00" in rel or rel.startswith(("/", "\\")) or "://" in rel
            or ".." in rel.replace("\\", "/").split("/")):
        raise CorruptFileError(
            f"dataset {root!r}: {what} {rel!r} is not a path inside the dataset (absolute, '..' and URL "
            "names are not allowed); the dataset is damaged or crafted"
        )
    return rel


def validate_manifest(root: str | os.PathLike[str], images: str | None, parts: list[str]) -> None:
    """Check that the manifest's images table (and its ``.arrow`` copy) and parts stay inside ``root``."""
    if images is not None:
        p = contained_path(root, images, what="manifest 'images'")
        fast = p.with_suffix(".arrow")
        if fast.is_symlink() or fast.exists():
            contained_path(root, os.path.relpath(fast, root), what="manifest 'images' (.arrow copy)")
    if not isinstance(parts, list):
        raise CorruptFileError(f"dataset {str(root)!r}: manifest 'parts' is {type(parts).__name__}, expected a list")
    for i, part in enumerate(parts):
        contained_path(root, part, what=f"manifest 'parts[{i}]'")


def _ints(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64)


def _lengths(col: pa.ChunkedArray) -> np.ndarray:
    """Per-row list lengths, -1 for null lists."""
    return _ints(pc.fill_null(pc.list_value_length(col), -1))


def _flat(col: pa.ChunkedArray) -> np.ndarray:
    """The values of a list column, concatenated (nulls inside a list become -1)."""
    return _ints(pc.fill_null(pc.list_flatten(col).cast(pa.int64()), -1))


def validate_images(root: str | os.PathLike[str], table: pa.Table, name: str, *, remote: bool = False) -> None:
    """Check the images table of the dataset at ``root``; ``name`` is its file name (for messages).

    With ``remote``, ``root`` is the dataset's URL: part names are checked with
    :func:`remote_name` and part sizes are not known, so byte ranges are
    checked for sign only (a range past the end of its object fails when read).

    Raises
    ------
    CorruptFileError
        On the first inconsistency, naming the file, the row's image and level, and the field.
    """
    n = table.num_rows
    if n == 0:
        return
    where = f"dataset {str(root)!r}: images table {name!r}"
    ids = table.column("image_id").to_pylist()
    levels = table.column("level")

    def fail(row: int, field: str, problem: str) -> CorruptFileError:
        lv = levels[row].as_py()
        return CorruptFileError(f"{where}, image {ids[row]!r} level {lv}: field {field!r} {problem}")

    def first(mask: Any) -> int | None:
        hit = np.flatnonzero(mask)
        return int(hit[0]) if hit.size else None

    for field in ("image_id", "level", "pixels_meta", "chunk_grid", "dtype", "n_chunks", "part", "row_start",
                  "chunk_lengths", "chunk_checksums"):
        col = table.column(field)
        if col.null_count:
            row = first(_ints(pc.is_null(col)).astype(bool))
            assert row is not None
            raise fail(row, field, "is null")
    if any(not isinstance(i, str) or not i for i in ids):
        row = next(k for k, i in enumerate(ids) if not isinstance(i, str) or not i)
        raise fail(row, "image_id", "is empty")
    lv = _ints(levels)
    if (row := first(lv < 0)) is not None:
        raise fail(row, "level", f"is {int(lv[row])}, expected >= 0")
    keys = pa.table({"i": table.column("image_id"), "l": levels})
    if keys.group_by(["i", "l"]).aggregate([]).num_rows != n:
        seen: set[tuple[str, int]] = set()
        for r, key in enumerate(zip(ids, lv.tolist(), strict=True)):
            if key in seen:
                raise fail(r, "image_id", "repeats an (image_id, level) pair of an earlier row")
            seen.add(key)

    pm_cols = {f: table.column("pixels_meta").combine_chunks().field(f) for f in ("size_t", "size_c", "size_z",
                                                                                  "size_y", "size_x")}
    grid_col = table.column("chunk_grid").combine_chunks()
    sizes = np.stack([_ints(pm_cols[f].fill_null(0)) for f in ("size_t", "size_c", "size_z", "size_y", "size_x")],
                     axis=1)
    chunk = np.stack([_ints(grid_col.field(f).fill_null(0)) for f in ("chunk_z", "chunk_y", "chunk_x")], axis=1)
    if (row := first((sizes <= 0).any(axis=1))) is not None:
        raise fail(row, "pixels_meta", f"declares TCZYX sizes {tuple(int(v) for v in sizes[row])}, expected positive")
    if (row := first((chunk <= 0).any(axis=1))) is not None:
        raise fail(row, "chunk_grid", f"declares ZYX chunk {tuple(int(v) for v in chunk[row])}, expected positive")
    grid = np.concatenate([sizes[:, :2], -(-sizes[:, 2:] // chunk)], axis=1).astype(np.float64)
    expected = np.prod(grid, axis=1)
    n_chunks = _ints(table.column("n_chunks"))
    if (row := first(expected != n_chunks)) is not None:
        raise fail(row, "n_chunks", f"is {int(n_chunks[row])}, but the chunk grid holds {int(expected[row])} chunks")

    for r, d in enumerate(table.column("dtype").to_pylist()):
        try:
            to_numpy_dtype(d)
        except DtypeError as exc:
            raise fail(r, "dtype", f"is unknown ({exc})") from None
    for r, c in enumerate(table.column("codec").to_pylist()):
        try:
            normalize_compression(c)
        except ValueError as exc:
            raise fail(r, "codec", f"is unknown ({exc})") from None

    row_start = _ints(table.column("row_start"))
    if (row := first(row_start < 0)) is not None:
        raise fail(row, "row_start", f"is {int(row_start[row])}, expected >= 0")
    for field, optional in (("chunk_lengths", False), ("chunk_checksums", False), ("chunk_offsets", True),
                            ("chunk_part", True), ("chunk_rows", True), ("chunk_raw", True)):
        ln = _lengths(table.column(field))
        bad = (ln != n_chunks) & ((ln != -1) | (not optional))
        if (row := first(bad)) is not None:
            raise fail(row, field, f"lists {int(ln[row])} entries, expected n_chunks = {int(n_chunks[row])}")
    lengths = _flat(table.column("chunk_lengths"))
    if (k := first(lengths < 0)) is not None:
        row = int(np.searchsorted(np.cumsum(n_chunks), k, side="right"))
        raise fail(row, "chunk_lengths", f"holds a negative length {int(lengths[k])}")
    checks = _flat(table.column("chunk_checksums"))
    if (k := first(checks < 0)) is not None:
        row = int(np.searchsorted(np.cumsum(n_chunks), k, side="right"))
        raise fail(row, "chunk_checksums", "holds a null checksum")

    # Paths: the main part and every listed part stay inside the dataset.
    parts_col = table.column("parts").to_pylist()
    part_names: dict[str, None] = {}
    def check(rel: object, what: str) -> None:
        if remote:
            remote_name(str(root), rel, what=what)
        else:
            contained_path(root, rel, what=what)

    for r, p in enumerate(table.column("part").to_pylist()):
        check(p, f"images table {name!r} image {ids[r]!r} field 'part'")
        part_names.setdefault(p, None)
        for q in parts_col[r] or []:
            check(q, f"images table {name!r} image {ids[r]!r} field 'parts'")
            part_names.setdefault(q, None)
    n_parts = np.array([len(p) if p else 1 for p in parts_col], dtype=np.int64)
    chunk_part_col = table.column("chunk_part")
    if chunk_part_col.null_count < n:
        cp_len = _lengths(chunk_part_col)
        cp = _flat(chunk_part_col)
        owner = np.repeat(np.arange(n), np.maximum(cp_len, 0))
        if (k := first((cp < 0) | (cp >= n_parts[owner]))) is not None:
            raise fail(int(owner[k]), "chunk_part", f"names part index {int(cp[k])} of {int(n_parts[owner[k]])} parts")
    rows_col = table.column("chunk_rows")
    if rows_col.null_count < n:
        cr = _flat(rows_col)
        owner = np.repeat(np.arange(n), np.maximum(_lengths(rows_col), 0))
        if (k := first(cr < 0)) is not None:
            raise fail(int(owner[k]), "chunk_rows", f"holds a negative row {int(cr[k])}")

    # Byte ranges inside their part files.
    offsets_col = table.column("chunk_offsets")
    if offsets_col.null_count < n:
        has = _lengths(offsets_col) >= 0
        offs = _flat(offsets_col)
        owner = np.repeat(np.arange(n), np.where(has, n_chunks, 0))
        lens = lengths[np.repeat(has, n_chunks)]
        if (k := first(offs < 0)) is not None:
            raise fail(int(owner[k]), "chunk_offsets", f"holds a negative offset {int(offs[k])}")
        # the part file of every located chunk: its index into a per-dataset list of part sizes
        names = list(part_names)
        index = {p: i for i, p in enumerate(names)}
        fsize = np.array([-1 if remote else _size(Path(root) / p) for p in names], dtype=np.float64)
        main = np.array([index[p] for p in table.column("part").to_pylist()], dtype=np.int64)
        file_of = main[owner]
        if chunk_part_col.null_count < n:
            # images spread over several parts (rare, large images): map per image
            base = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.where(has, n_chunks, 0), out=base[1:])
            for r, cps in enumerate(chunk_part_col.to_pylist()):
                if cps is None or not has[r]:
                    continue
                files_r = np.array([index[q] for q in (parts_col[r] or [table.column("part")[r].as_py()])])
                file_of[base[r] : base[r + 1]] = files_r[np.asarray(cps, dtype=np.int64)]
        limit = fsize[file_of]
        over = (offs.astype(np.float64) + lens > limit) & (limit >= 0)
        if (k := first(over)) is not None:
            raise fail(
                int(owner[k]), "chunk_offsets",
                f"places a chunk at bytes {int(offs[k])}..{int(offs[k] + lens[k])}, past the end of part "
                f"{names[int(file_of[k])]!r} ({int(limit[k])} bytes)",
            )

    fr = table.column("frame_rows")
    if fr.null_count < n:
        frv = _ints(fr.fill_null(1))
        if (row := first(frv <= 0)) is not None:
            raise fail(row, "frame_rows", f"is {int(frv[row])}, expected positive")
    fl = table.column("chunk_frame_lengths")
    if fl.null_count < n:
        flv = _flat(fl)
        owner = np.repeat(np.arange(n), np.maximum(_lengths(fl), 0))
        if (k := first(flv < 0)) is not None:
            raise fail(int(owner[k]), "chunk_frame_lengths", f"holds a negative or null length {int(flv[k])}")


def _size(path: Path) -> int:
    """Size of ``path`` in bytes, -1 when it is missing (reported when a read needs it)."""
    try:
        return path.stat().st_size
    except OSError:
        return -1
