"""PyTorch datasets over record tables, chunked datasets and catalogs.

Three datasets feed a :class:`torch.utils.data.DataLoader`:

- :class:`ImageTableDataset`: map-style over a record table (one image per
  row). ``__getitems__`` decodes a whole mini-batch with one
  :meth:`ImageTable.to_numpy <omeframe.ImageTable.to_numpy>` call (positional
  reads plus one multi-frame decode, no Python work per row); pass
  ``collate_fn=omeframe.torch.collate`` so the loader hands the pre-built
  batch through.
- :class:`ImageTableIterableDataset`: iterable over a record table with
  shuffling that keeps reads local (blocks of neighbouring rows are shuffled,
  then rows inside a buffer of a few blocks), split across loader workers,
  reseeded per epoch by :meth:`~ImageTableIterableDataset.set_epoch`.
- :class:`DatasetPatchDataset`: map-style patches (seeded random or on a
  grid) of the images of a chunked dataset, optionally with the matching
  patch of a label image, read region by region.

torch itself is imported when a dataset is created, not when this module is
imported (``import omeframe`` never imports torch); without torch the
constructors raise :class:`~omeframe.OptionalDependencyError`.

Every dataset is safe with ``num_workers > 0`` under ``fork`` and ``spawn``:
it pickles as paths and options, and a process whose id differs from the one
that opened the source (a forked worker) reopens it before its first read, so
no memory map or file handle is shared across processes. A worker that cannot
reopen its source raises an error naming the file, which the loader re-raises.
Each worker decodes with its share of the cores (``cpu_count // num_workers``
threads, at least one) unless :func:`omeframe.set_num_threads` chose a count,
and keeps the memory of one batch for the next: glibc's ``malloc`` would hand
a batch's few MB back to the kernel and fault them in again for the next
(:mod:`omeframe.engine.heap`; 27,000 against 41,000 samples/s for crops
3×64×64 from Vortex with 2 workers on 2 cores). The environment's own malloc
tuning (``GLIBC_TUNABLES``, ``MALLOC_*_``) stands, and the process that
creates the loader is never changed. Batches leave a worker through its batch
ring (:mod:`omeframe.engine.batch_ring`): slots of one shared-memory file that
the worker and the main process map once, instead of a new segment per batch
(49,000–74,000 against 41,000 samples/s for crops 3×64×64 from Parquet with 2
workers on 2 cores); a slot is reused only once the main process has freed
every tensor viewing it.
Transforms stay outside the readers: ``transform`` is called on whole batch
tensors.

Example
-------
>>> import numpy as np, omeframe as of, tempfile, os                     # doctest: +SKIP
>>> from torch.utils.data import DataLoader                              # doctest: +SKIP
>>> from omeframe.torch import ImageTableDataset, collate                # doctest: +SKIP
>>> path = os.path.join(tempfile.mkdtemp(), "crops.parquet")             # doctest: +SKIP
>>> _ = of.write_table(path, np.zeros((64, 2, 16, 16), np.uint8), dim_order="CYX",
...                    columns={"label": np.arange(64) % 3})             # doctest: +SKIP
>>> ds = ImageTableDataset(path, target="label")                         # doctest: +SKIP
>>> x, y = next(iter(DataLoader(ds, batch_size=8, shuffle=True, collate_fn=collate)))  # doctest: +SKIP
>>> tuple(x.shape), tuple(y.shape)                                       # doctest: +SKIP
((8, 2, 16, 16), (8,))
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from omeframe.catalog.commit import CATALOG_NAME, DATASET_NAME, IMAGES_NAME
from omeframe.engine import batch_ring as _batch_ring
from omeframe.engine import heap as _heap
from omeframe.engine import threads as _threads
from omeframe.engine.limits import check_alloc
from omeframe.facade.dataset import Dataset, open_dataset
from omeframe.formats.record.image_table import ImageTable, normalize_rows
from omeframe.formats.record.stack import stack_dims
from omeframe.model.checks import is_integer
from omeframe.model.errors import (
    CorruptFileError,
    ImageNotFoundError,
    OmeframeError,
    OptionalDependencyError,
    RowIndexError,
)
from omeframe.storage.url import check_storage_options, is_remote

__all__ = [
    "ImageTableDataset",
    "ImageTableIterableDataset",
    "DatasetPatchDataset",
    "collate",
    "local_blocks",
    "shuffled_rows",
]

#: A batch transform: a tensor ``(n, *dims)`` in, a tensor out.
Transform = Callable[[Any], Any]


def _integer(name: str, value: Any, lo: int, what: str) -> int:
    """``value`` as an ``int`` (a Python or numpy integer, not a bool) of at least ``lo``.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (``"2"``, ``1.5`` and ``True`` are not).
    ValueError
        If it is below ``lo``.
    """
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer >= {lo} ({what}), got {type(value).__name__} {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo} ({what}), got {int(value)}")
    return int(value)


def _check_transform(transform: Any) -> Transform | None:
    """``transform`` if it is ``None`` or callable, else a :class:`TypeError`."""
    if transform is not None and not callable(transform):
        raise TypeError(
            f"transform must be a callable (batch tensor in, tensor out) or None, got "
            f"{type(transform).__name__} {transform!r}"
        )
    return transform


def _sizes(name: str, value: Any, lengths: tuple[int, ...], what: str) -> tuple[int, ...]:
    """``value`` as a tuple of positive integers (not bools) of one of ``lengths``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) not in lengths:
        raise ValueError(f"{name} must be {what} of positive integers, got {value!r}")
    bad = [v for v in value if not is_integer(v)]
    if bad:
        raise TypeError(f"{name} must be {what} of positive integers, got {value!r} (holding {bad[0]!r})")
    if min(value) < 1:
        raise ValueError(f"{name} must be {what} of positive integers, got {value!r}")
    return tuple(int(v) for v in value)


def _torch() -> Any:
    """The ``torch`` module, or :class:`OptionalDependencyError` with the install hint."""
    try:
        import torch
    except ImportError as exc:
        raise OptionalDependencyError(
            f"omeframe.torch needs PyTorch, which cannot be imported ({exc}); "
            "install it with: pip install 'omeframe[torch]'"
        ) from exc
    return torch


def collate(batch: Any) -> Any:
    """A ``collate_fn`` that passes batches built by ``__getitems__`` through.

    ``DataLoader(ds, batch_size=n, collate_fn=collate)`` calls the dataset's
    ``__getitems__`` with the ``n`` indices of a batch; it returns the batch
    itself (a ``dict`` or ``tuple`` of batch tensors), which this function
    returns unchanged. A ``list`` of single samples (a dataset without
    ``__getitems__``, a sampler that yields single indices, an
    :class:`ImageTableIterableDataset` without ``batch_size``) is collated as
    torch's ``default_collate`` does. In a loader worker, ``dict`` samples of
    tensors, ``int``, ``float`` and ``str`` values are stacked by omeframe,
    with the same keys, types and values, and the batch leaves the worker
    through its batch ring (see :func:`_for_transport`); other samples go to
    ``default_collate``.

    Example
    -------
    >>> from omeframe.torch import collate
    >>> collate({"image": "already a batch"})
    {'image': 'already a batch'}
    """
    if isinstance(batch, list):
        if not batch:
            raise ValueError(
                "collate needs at least one sample, got an empty list; a loader never passes one, "
                "so check the sampler or batch_sampler that produced it"
            )
        torch = _torch()
        if torch.utils.data.get_worker_info() is not None:
            stacked = _stack_samples(torch, batch)
            if stacked is not None:
                return _for_transport(torch, stacked)
        return torch.utils.data.default_collate(batch)
    return batch


def _stack_samples(torch: Any, samples: list[Any]) -> dict[str, Any] | None:
    """``dict`` samples stacked as ``default_collate`` stacks them, in the process's own memory.

    Tensors (CPU, strided, one shape and dtype per key) are stacked, Python
    ``int`` and ``float`` values become ``int64`` and ``float64`` tensors,
    strings a list. ``None`` for anything else (``default_collate`` then
    handles it, errors included). ``default_collate`` itself stacks into a new
    shared-memory segment when it runs in a loader worker.
    """
    if not samples or any(type(s) is not dict for s in samples):
        return None
    keys = list(samples[0])
    if any(list(s) != keys for s in samples):
        return None
    out: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor):
            if not all(
                isinstance(v, torch.Tensor) and v.layout == torch.strided and v.device.type == "cpu"
                and v.shape == first.shape and v.dtype == first.dtype
                for v in values
            ):
                return None
            out[key] = torch.stack(values)
        elif type(first) in (int, float, str) and all(type(v) is type(first) for v in values):
            if type(first) is str:
                out[key] = values
            else:
                out[key] = torch.tensor(values, dtype=torch.int64 if type(first) is int else torch.float64)
        else:
            return None
    return out


# -- one source per process -------------------------------------------------------------


class _PerProcess:
    """An open source (an :class:`ImageTable` or a :class:`Dataset`), reopened in each process.

    Keeps the source object only for the process that opened it: a forked
    child sees a different ``os.getpid()`` and reopens; a pickled copy (spawn)
    carries only the recipe and reopens on first use, so failures surface in
    the worker's first fetch, where the loader reports them.
    """

    def __init__(self, obj: Any, recipe: bytes, path: str, kind: str) -> None:
        self._obj: Any = obj
        self._pid: int | None = os.getpid()
        self._recipe = recipe  # pickle of the source: a path and options
        self.path = path
        self._kind = kind

    def get(self) -> Any:
        pid = os.getpid()
        if self._obj is None or self._pid != pid:
            self._obj = None
            try:
                obj = pickle.loads(self._recipe)
            except FileNotFoundError as exc:
                raise FileNotFoundError(
                    f"process {pid} cannot reopen the {self._kind} {self.path!r}: it no longer exists "
                    f"({exc}); was it moved or deleted after the loader was created?"
                ) from exc
            except OmeframeError as exc:
                if self.path in str(exc):
                    raise
                raise type(exc)(f"process {pid} cannot reopen the {self._kind} {self.path!r}: {exc}") from exc
            except (ValueError, pa.ArrowException) as exc:
                raise CorruptFileError(
                    f"process {pid} cannot reopen the {self._kind} {self.path!r}: {exc}"
                ) from exc
            except OSError as exc:
                raise OSError(f"process {pid} cannot reopen the {self._kind} {self.path!r}: {exc}") from exc
            self._obj, self._pid = obj, pid
            info = _torch().utils.data.get_worker_info()
            if info is not None:  # a loader worker: the workers share the cores; its heap keeps a batch's memory
                _threads.share_cores(int(info.num_workers))
                _heap.keep_batch_memory()
        return self._obj

    def __getstate__(self) -> dict[str, Any]:
        return {"recipe": self._recipe, "path": self.path, "kind": self._kind}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._obj, self._pid = None, None
        self._recipe, self.path, self._kind = state["recipe"], state["path"], state["kind"]


def _catalog_part(path: Path, part: str) -> Path:
    """``path`` itself, or its ``part`` when ``path`` is a catalog directory."""
    if path.is_dir() and (path / CATALOG_NAME).is_file():
        inner = path / part
        if not inner.exists():
            raise FileNotFoundError(
                f"catalog {str(path)!r} has no {part!r} (its images went to the "
                f"{'dataset' if part == IMAGES_NAME else 'record table'}); "
                f"use {'DatasetPatchDataset' if part == IMAGES_NAME else 'ImageTableDataset'} instead"
            )
        return inner
    return path


def _open_table(
    table_or_path: ImageTable | str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> _PerProcess:
    check_storage_options(storage_options, table_or_path)
    if isinstance(table_or_path, ImageTable):
        table = table_or_path
    elif is_remote(table_or_path):
        table = ImageTable(table_or_path, storage_options=storage_options)  # pickles with its options
    elif isinstance(table_or_path, (str, os.PathLike)):
        table = ImageTable(_catalog_part(Path(table_or_path), IMAGES_NAME), storage_options=storage_options)
    else:
        raise TypeError(
            f"expected an omeframe.ImageTable, a record table path or a catalog directory, "
            f"got {type(table_or_path).__name__}"
        )
    return _PerProcess(table, pickle.dumps(table), table.path, "record table")


def _read_error(path: str, exc: Exception) -> Exception:
    """A read failure that names ``path`` (Arrow's own messages often do not)."""
    if path in str(exc):
        return exc
    return CorruptFileError(f"reading {path!r} failed: {exc}")


def _scalar(v: Any) -> Any:
    """A numpy scalar as the Python value (other values as they are)."""
    return v.item() if isinstance(v, np.generic) else v


def _as_tensor(torch: Any, arr: np.ndarray) -> Any:
    """``arr`` as a CPU tensor sharing its memory (copied only if read-only or strided)."""
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = np.array(arr, order="C")
    return torch.from_numpy(arr)


#: Until a worker's batch ring is attached (its first batches) or while all its
#: slots are taken, a batch whose tensors hold at most this many bytes leaves a
#: DataLoader worker by value (pickled through the worker's pipe, rebuilt as
#: tensors in the main process); a larger one through shared memory. Measured with
#: 2 workers on 2 cores (samples/s, by value against shared memory): batches of 256
#: crops of 3x16x16 uint8 (196 KiB) 2.5-3.5x faster, of 1x48x48 (576 KiB) 1.5x, of
#: 3x32x32 (768 KiB) 1.2-1.5x; of 4x32x32 (1 MiB), 3x48x48 and 3x64x64 0.5-0.6x (a
#: pipe moves large batches slowly, shared memory costs a segment and a file
#: descriptor per tensor whatever its size).
BY_VALUE_BYTES = 512 << 10


def _one_segment(torch: Any, image: Any, rows: np.ndarray) -> tuple[Any, Any]:
    """``(image, rows)`` as tensors in one new shared-memory segment (inside a DataLoader worker).

    A worker sends every tensor of a batch that goes through shared memory in
    a segment of its own, and the main process fetches one file descriptor
    per segment. The image batch and its row indices in one segment halve that
    per-batch work. An image tensor that is not a contiguous CPU tensor stays
    as it is.
    """
    if not len(rows) or image.device.type != "cpu" or not image.is_contiguous():
        return image, torch.from_numpy(rows)
    nbytes = image.numel() * image.element_size()
    at = nbytes + (-nbytes % 8)  # the int64 rows start on an 8-byte boundary
    flat = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(at + 8 * len(rows)))
    shared = flat[:nbytes].view(image.dtype).view(image.shape)
    shared.copy_(image)
    row_tensor = flat[at:].view(torch.int64)
    row_tensor.copy_(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)))
    return shared, row_tensor


def _as_arrays(torch: Any, values: Sequence[Any]) -> list[np.ndarray | None]:
    """Numpy views of the CPU tensors among ``values`` (``None`` for everything else).

    Tensors of a dtype numpy lacks (``bfloat16`` ...), on another device or
    not strided are left to torch's own pickling.
    """
    out: list[np.ndarray | None] = []
    for v in values:
        arr = None
        if isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.layout == torch.strided:
            try:
                arr = v.detach().numpy()
            except (TypeError, RuntimeError):
                arr = None
        out.append(arr)
    return out


def _for_transport(torch: Any, batch: Any, *, merge: tuple[str, str] | None = None) -> Any:
    """``batch`` (a dict or tuple) as a DataLoader worker should return it.

    In a worker, the batch is returned as a dict (tuple) that chooses its way
    to the main process when the worker's queue pickles it (multiprocessing's
    ``ForkingPickler``), from the values it holds then (:func:`_reduce_sent`):
    its CPU tensors through the worker's batch ring
    (:mod:`omeframe.engine.batch_ring`), copied into a slot of memory both
    processes have mapped once and received as tensors viewing that slot,
    which is reused once the main process has freed them. The first batches
    (before the main process has mapped the ring) go the usual way: by value
    when their tensors hold at most :data:`BY_VALUE_BYTES`, else through
    torch's shared memory (with ``merge=(image_key, row_key)``, those two
    tensors in one segment). The main process always receives a plain dict
    (tuple). Any other pickling (``pickle.dumps``, ``torch.save`` in the
    worker) gives the plain dict (tuple) with its tensors by value, readable
    by any process (with ``torch.load(..., weights_only=False)``: the batch
    pickles as a call of ``dict`` or ``tuple``, which torch's weights-only
    loader refuses). Outside a worker, ``batch`` is returned as it is.
    """
    if torch.utils.data.get_worker_info() is None:
        return batch
    if not isinstance(batch, dict):
        return _SentTuple(batch)
    sent = _SentDict(batch)
    sent._merge = merge
    return sent


def _reduce_sent(keys: list[Any] | None, values: list[Any], merge: tuple[str, str] | None) -> tuple[Any, ...]:
    """What a sent batch pickles as: :func:`_received` and its arguments, packed from ``values`` now."""
    torch = _torch()
    arrays = _as_arrays(torch, values)
    carried = [a is not None for a in arrays]
    packed = _batch_ring.pack([a for a in arrays if a is not None]) if any(carried) else None
    if packed is not None:  # the tensors are in the ring's slot: send where, not what
        kind = "ring"
        values = [None if c else v for v, c in zip(values, carried, strict=True)]
    elif sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor)) <= BY_VALUE_BYTES:
        kind = "value"
        values = [a if a is not None else v for v, a in zip(values, arrays, strict=True)]
    else:
        kind = "shared"
        if keys is not None and merge is not None and merge[0] in keys and merge[1] in keys:
            i, j = keys.index(merge[0]), keys.index(merge[1])
            if isinstance(values[i], torch.Tensor) and isinstance(values[j], torch.Tensor):
                values = list(values)
                values[i], values[j] = _one_segment(torch, values[i], values[j].numpy())
    return _received, (keys, kind, values, carried, packed, _batch_ring.invitation())


class _SentDict(dict):
    """A batch dict as a worker sends it (see :func:`_for_transport`)."""

    _merge: tuple[str, str] | None = None

    def __reduce__(self) -> tuple[Any, ...]:  # pickled elsewhere than on the worker's queue: a plain dict
        return dict, (dict(self),)

    def __copy__(self) -> _SentDict:  # kept by the loader's default_convert (batch_size=None)
        clone = _SentDict(self)
        clone._merge = self._merge
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> _SentDict:
        import copy

        clone = _SentDict(copy.deepcopy(dict(self), memo))
        clone._merge = self._merge
        return clone


class _SentTuple(tuple):
    """A batch tuple as a worker sends it (see :func:`_for_transport`)."""

    def __reduce__(self) -> tuple[Any, ...]:  # pickled elsewhere than on the worker's queue: a plain tuple
        return tuple, (tuple(self),)

    def __copy__(self) -> _SentTuple:
        return _SentTuple(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> _SentTuple:
        import copy

        return _SentTuple(copy.deepcopy(tuple(self), memo))


def _sent_dict_on_queue(sent: _SentDict) -> tuple[Any, ...]:
    return _reduce_sent(list(sent), list(sent.values()), sent._merge)


def _sent_tuple_on_queue(sent: _SentTuple) -> tuple[Any, ...]:
    return _reduce_sent(None, list(sent), None)


# A DataLoader worker's result queue pickles with multiprocessing's ForkingPickler: only
# there does a batch take the batch ring (its reader is the process that attached it).
ForkingPickler.register(_SentDict, _sent_dict_on_queue)
ForkingPickler.register(_SentTuple, _sent_tuple_on_queue)


def _received(
    keys: list[Any] | None,
    kind: str,
    values: list[Any],
    carried: list[bool],
    packed: _batch_ring.Packed | None,
    invite: _batch_ring.RingAddress | None,
) -> Any:
    """The plain dict (or tuple) of a batch sent by a worker, its arrays back as tensors."""
    torch = _torch()
    if invite is not None:
        _batch_ring.attach(invite)
    if kind == "ring" and packed is not None:
        arrays = _batch_ring.unpack(packed)
        if len(arrays) != sum(carried):
            raise RuntimeError(f"a batch arrived with {len(arrays)} arrays in its ring slot, expected {sum(carried)}")
        ring = iter(arrays)
        values = [torch.from_numpy(next(ring)) if c else v for v, c in zip(values, carried, strict=True)]
    elif kind == "value":
        values = [torch.from_numpy(v) if c else v for v, c in zip(values, carried, strict=True)]
    return dict(zip(keys, values, strict=True)) if keys is not None else tuple(values)


# -- record tables ----------------------------------------------------------------------


class ImageTableDataset:
    """Map-style dataset over a record table: one sample per row.

    Parameters
    ----------
    table_or_path
        An :class:`omeframe.ImageTable`, a record table path (Parquet or
        Vortex) or URL (``s3://...``), or a catalog directory (its
        ``images.parquet``).
    storage_options
        Options of a URL's filesystem (credentials, ``endpoint_url`` ...);
        workers reopen the table with them.
    columns
        Feature columns returned beside the pixels (read once per process and
        kept in memory; numeric columns become tensors, others lists).
    dims
        Axes of each image, from ``TCZYX`` (default ``"CYX"``); axes left out
        must have length 1.
    transform
        Called on the batch tensor ``(n, *dims)`` and returns a tensor;
        ``__getitem__`` calls it on a batch of one. Per-sample augmentation
        belongs in a later stage (e.g. on the GPU).
    target
        A column returned as the target: samples become ``(image, target)``
        tuples. Give ``columns`` or ``target``, not both.

    Notes
    -----
    Samples: ``{"image": tensor(*dims), "row": int, <column>: value, ...}``,
    or ``(image, target)`` with ``target=``. :meth:`__getitems__` returns the
    same keys holding whole batches: ``image`` ``(n, *dims)``, ``row``
    ``(n,)`` int64, numeric columns ``(n,)`` tensors. Use it with
    ``DataLoader(ds, batch_size=n, shuffle=True, collate_fn=collate)`` (torch
    >= 2.2 calls ``__getitems__`` with the batch's indices); batch tensors are
    contiguous, so ``pin_memory=True`` pins them as they are. Indices must be
    in range, non-negative and distinct within a batch (a sampler with
    replacement may repeat rows: use one without); otherwise
    :class:`~omeframe.RowIndexError` (an ``IndexError``).

    Example
    -------
    >>> import numpy as np, omeframe as of, tempfile, os                # doctest: +SKIP
    >>> from omeframe.torch import ImageTableDataset
    >>> path = os.path.join(tempfile.mkdtemp(), "crops.parquet")        # doctest: +SKIP
    >>> _ = of.write_table(path, np.zeros((10, 2, 8, 8), np.uint8), dim_order="CYX",
    ...                    columns={"well": ["A1"] * 10})               # doctest: +SKIP
    >>> ds = ImageTableDataset(path, columns=["well"])                  # doctest: +SKIP
    >>> ds[3]["image"].shape, ds[3]["well"]                              # doctest: +SKIP
    (torch.Size([2, 8, 8]), 'A1')
    >>> ds.__getitems__([0, 5])["image"].shape                           # doctest: +SKIP
    torch.Size([2, 2, 8, 8])
    """

    def __init__(
        self,
        table_or_path: ImageTable | str | os.PathLike[str],
        *,
        columns: Sequence[str] | None = None,
        dims: str = "CYX",
        transform: Transform | None = None,
        target: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        _torch()
        _check_transform(transform)
        self._source = _open_table(table_or_path, storage_options)
        table: ImageTable = self._source.get()
        self._dims = stack_dims(dims)
        if columns is not None and target is not None:
            raise ValueError(
                "give columns= (dict samples) or target= ((image, target) samples), not both; "
                "read more columns with dataset.table.take(rows, columns=...)"
            )
        if isinstance(columns, str):
            raise TypeError(f"columns must be a list of column names, got the string {columns!r}")
        wanted = list(columns or []) + ([target] if target is not None else [])
        if wanted:
            names = [n for n in table.schema.names if n != table.column]
            missing = [c for c in wanted if c not in names]
            if missing:
                raise ValueError(
                    f"{table.path!r} has no column(s) {missing}; its feature columns are {names}"
                )
            if len(set(wanted)) != len(wanted):
                raise ValueError(f"columns name a column twice: {wanted}")
        self._columns = list(columns or [])
        self._target = target
        self._transform = transform
        self._len = len(table)
        self._features: dict[str, np.ndarray] | None = None

    # -- state ---------------------------------------------------------------------------
    @property
    def table(self) -> ImageTable:
        """The :class:`omeframe.ImageTable` of this process (reopened after a fork)."""
        table: ImageTable = self._source.get()
        return table

    @property
    def path(self) -> str:
        """The record table's path."""
        return self._source.path

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"ImageTableDataset({self.path!r}, rows={self._len}, dims={self._dims!r})"

    def _feature_arrays(self) -> dict[str, np.ndarray]:
        if self._features is None:
            names = [*self._columns, *([self._target] if self._target is not None else [])]
            feats: dict[str, np.ndarray] = {}
            if names:
                try:
                    t = self.table.read(names)
                except (pa.ArrowException, OSError) as exc:
                    raise _read_error(self.path, exc) from exc
                for n in names:
                    feats[n] = t[n].to_numpy()
            self._features = feats
        return self._features

    def _values(self, torch: Any, col: np.ndarray) -> Any:
        if col.dtype.kind in "biuf":
            return _as_tensor(torch, col)
        return col.tolist()

    # -- reads ---------------------------------------------------------------------------
    def _read_batch(self, rows: Any) -> tuple[Any, np.ndarray]:
        """``(image batch tensor, row indices)`` with the transform applied."""
        torch = _torch()
        idx = normalize_rows(rows, self._len, repr(self.path))
        table = self.table
        try:
            arr = table.to_numpy(idx, dims=self._dims)
        except (pa.ArrowException, OSError) as exc:
            raise _read_error(self.path, exc) from exc
        x = _as_tensor(torch, arr)
        if self._transform is not None:
            x = self._transform(x)
        return x, idx

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any] | tuple[Any, Any]:
        """One batch for ``indices``, decoded in a single call (see the class notes)."""
        return _for_transport(_torch(), self._batch(indices), merge=("image", "row"))

    def _batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any] | tuple[Any, Any]:
        """The batch of ``indices`` as this process uses it (:meth:`__getitems__` prepares it for sending)."""
        torch = _torch()
        x, idx = self._read_batch(indices)
        feats = self._feature_arrays()
        if self._target is not None:
            return x, self._values(torch, feats[self._target][idx])
        out: dict[str, Any] = {"image": x, "row": torch.from_numpy(idx)}
        for c in self._columns:
            out[c] = self._values(torch, feats[c][idx])
        return out

    def __getitem__(self, index: int) -> dict[str, Any] | tuple[Any, Any]:
        """The sample of row ``index`` (see the class notes)."""
        if not is_integer(index):
            raise TypeError(
                f"index must be an integer row, got {type(index).__name__}; "
                "for a batch use __getitems__(indices)"
            )
        if not 0 <= int(index) < self._len:
            raise RowIndexError(
                f"row {int(index)} is out of range for {self.path!r}, which has {self._len} rows "
                f"(valid 0..{self._len - 1}; negative indices are not allowed)"
            )
        x, idx = self._read_batch([int(index)])
        feats = self._feature_arrays()
        if self._target is not None:
            return x[0], _scalar(feats[self._target][int(index)])
        out: dict[str, Any] = {"image": x[0], "row": int(idx[0])}
        for c in self._columns:
            out[c] = _scalar(feats[c][int(index)])
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_features"] = None  # reread in the worker rather than pickled
        return state


#: Rows per shuffle buffer when ``buffer_blocks`` is not given (:func:`local_blocks`).
BUFFER_ROWS = 8192


def local_blocks(table: ImageTable, block_size: int | None, buffer_blocks: int | None) -> tuple[int, int]:
    """``(block_size, buffer_blocks)`` for shuffling ``table`` so that reads stay local.

    Given values are kept (each must be an integer >= 1: a :class:`TypeError`
    or :class:`ValueError` otherwise). Without ``block_size``: the rows ``table`` reads
    together (:attr:`ImageTable.block_rows`: a local Vortex table's splits),
    else 1,024. Without ``buffer_blocks``: buffers of about
    :data:`BUFFER_ROWS` rows.

    Example
    -------
    >>> import numpy as np, omeframe as of, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "crops.parquet")
    >>> t = of.ImageTable(of.write_table(path, np.zeros((4, 1, 2, 2), np.uint8), dim_order="CYX"))
    >>> local_blocks(t, None, None), local_blocks(t, 100, None), local_blocks(t, 100, 2)
    ((1024, 8), (100, 81), (100, 2))
    """
    if block_size is not None:
        _integer("block_size", block_size, 1, "rows per shuffle block, or None for the table's own")
    if buffer_blocks is not None:
        _integer("buffer_blocks", buffer_blocks, 1, "blocks per shuffle buffer, or None")
    size = int(block_size) if block_size is not None else (table.block_rows or 1024)
    count = int(buffer_blocks) if buffer_blocks is not None else max(1, BUFFER_ROWS // size)
    return size, count


def shuffled_rows(
    num_rows: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    block_size: int = 1024,
    buffer_blocks: int = 8,
    shard: int = 0,
    num_shards: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows one shard reads in one epoch, shuffled so that reads stay local.

    Rows are cut into blocks of ``block_size`` neighbours; the blocks are
    permuted (seeded by ``seed`` and ``epoch``, the same for every shard),
    dealt round-robin to the ``num_shards`` shards, and each shard shuffles
    rows only inside buffers of ``buffer_blocks`` consecutive blocks of its
    own. Over all shards every row appears exactly once.

    Returns
    -------
    (rows, buffer_starts)
        ``rows``: ``int64`` row indices in reading order. ``buffer_starts``:
        offsets into ``rows`` where each buffer begins (plus ``len(rows)``).

    Example
    -------
    >>> from omeframe.torch import shuffled_rows
    >>> rows, starts = shuffled_rows(10, block_size=4, buffer_blocks=1, shuffle=False)
    >>> rows.tolist(), starts.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 4, 8, 10])
    """
    for name, v, lo, what in (
        ("num_rows", num_rows, 0, "rows of the table"),
        ("block_size", block_size, 1, "rows per shuffle block"),
        ("buffer_blocks", buffer_blocks, 1, "blocks per shuffle buffer"),
        ("num_shards", num_shards, 1, "shards the rows are dealt to"),
        ("seed", seed, 0, "the seed of the shuffle"),
        ("epoch", epoch, 0, "the epoch, which reseeds the shuffle"),
    ):
        _integer(name, v, lo, what)
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in 0..{num_shards - 1}, got {shard}")
    n_blocks = -(-num_rows // block_size)
    rng = np.random.default_rng([int(seed), int(epoch)])
    blocks = rng.permutation(n_blocks) if shuffle else np.arange(n_blocks)
    mine = blocks[shard::num_shards].astype(np.int64)
    rows = (mine[:, None] * block_size + np.arange(block_size, dtype=np.int64)).reshape(-1)
    buf = np.repeat(np.arange(len(mine), dtype=np.int64) // buffer_blocks, block_size)
    keep = rows < num_rows
    rows, buf = rows[keep], buf[keep]
    if shuffle:
        rng = np.random.default_rng([int(seed), int(epoch), int(shard) + 1])
        order = np.lexsort((rng.random(len(rows)), buf))
        rows, buf = rows[order], buf[order]
    starts = np.flatnonzero(np.diff(buf, prepend=-1) != 0) if len(rows) else np.zeros(0, np.int64)
    return rows, np.append(starts, len(rows)).astype(np.int64)


class ImageTableIterableDataset:
    """Iterable dataset over a record table with local shuffling, split across workers.

    Parameters
    ----------
    table_or_path
        An :class:`omeframe.ImageTable`, a record table path or a catalog directory.
    batch_size
        Yield whole batches of this many rows (each decoded in one call; use
        ``DataLoader(ds, batch_size=None)``), or ``None`` (default) to yield
        single samples (decoded a buffer at a time).
    shuffle
        Shuffle blocks, then rows within buffers (see :func:`shuffled_rows`);
        ``False`` reads in row order.
    seed
        Seed of the shuffle; each epoch (:meth:`set_epoch`) reshuffles.
    block_size, buffer_blocks
        Rows per block and blocks per shuffle buffer: reads touch about
        ``block_size * buffer_blocks`` neighbouring rows at a time. Default
        (:func:`local_blocks`): the blocks the table's format reads together
        (a local Vortex table's splits of 8,192 rows, which a walking take
        decodes once), else 1,024 rows, in buffers of about 8,192 rows.
    drop_last
        With ``batch_size``, drop each worker's last, short batch.
    columns, dims, transform, target
        As for :class:`ImageTableDataset`; samples and batches have the same
        form.

    Notes
    -----
    With ``num_workers = k`` each worker reads a disjoint share of the
    blocks, so every row comes exactly once per epoch. Call
    :meth:`set_epoch` before iterating each epoch (as with torch's
    ``DistributedSampler``); the loader copies the dataset into its workers
    when an epoch starts, so with ``persistent_workers=True`` the epoch seen
    by the workers stays the one set before the first epoch.

    Example
    -------
    >>> from torch.utils.data import DataLoader                          # doctest: +SKIP
    >>> ds = ImageTableIterableDataset("crops.parquet", batch_size=64, seed=1)  # doctest: +SKIP
    >>> loader = DataLoader(ds, batch_size=None, num_workers=2)          # doctest: +SKIP
    >>> for epoch in range(3):                                           # doctest: +SKIP
    ...     ds.set_epoch(epoch)
    ...     for batch in loader:
    ...         ...
    """

    def __init__(
        self,
        table_or_path: ImageTable | str | os.PathLike[str],
        *,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        block_size: int | None = None,
        buffer_blocks: int | None = None,
        drop_last: bool = False,
        columns: Sequence[str] | None = None,
        dims: str = "CYX",
        transform: Transform | None = None,
        target: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        torch = _torch()
        # DataLoader tells iterable datasets apart with isinstance(ds, IterableDataset);
        # registering keeps torch out of this module's import.
        torch.utils.data.IterableDataset.register(ImageTableIterableDataset)
        if batch_size is not None:
            _integer("batch_size", batch_size, 1, "rows per batch, or None for single samples")
        _integer("seed", seed, 0, "the seed of the shuffle")
        if drop_last and batch_size is None:
            raise ValueError("drop_last applies to batches; give batch_size= too")
        if seed and not shuffle:
            raise ValueError("seed= applies to shuffled epochs; pass shuffle=True too, or drop seed=")
        self._map = ImageTableDataset(
            table_or_path, columns=columns, dims=dims, transform=transform, target=target,
            storage_options=storage_options,
        )
        self._batch_size = None if batch_size is None else int(batch_size)
        self._shuffle = bool(shuffle)
        self._seed = int(seed)
        self._block_size, self._buffer_blocks = local_blocks(self._map.table, block_size, buffer_blocks)
        self._drop_last = bool(drop_last)
        self._epoch = 0

    @property
    def dataset(self) -> ImageTableDataset:
        """The map-style dataset that reads the batches."""
        return self._map

    @property
    def epoch(self) -> int:
        """The epoch whose order :meth:`__iter__` follows."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call it before each epoch's loop)."""
        self._epoch = _integer("epoch", epoch, 0, "the epoch, which reseeds the shuffle")

    def __repr__(self) -> str:
        return (
            f"ImageTableIterableDataset({self._map.path!r}, rows={len(self._map)}, "
            f"batch_size={self._batch_size}, shuffle={self._shuffle}, epoch={self._epoch})"
        )

    def rows(self, shard: int = 0, num_shards: int = 1) -> np.ndarray:
        """The rows one worker (``shard`` of ``num_shards``) reads this epoch, in order."""
        return self._plan(shard, num_shards)[0]

    def _plan(self, shard: int, num_shards: int) -> tuple[np.ndarray, np.ndarray]:
        return shuffled_rows(
            len(self._map), shuffle=self._shuffle, seed=self._seed, epoch=self._epoch,
            block_size=self._block_size, buffer_blocks=self._buffer_blocks, shard=shard, num_shards=num_shards,
        )

    def __iter__(self) -> Iterator[Any]:
        info = _torch().utils.data.get_worker_info()
        shard, num_shards = (0, 1) if info is None else (int(info.id), int(info.num_workers))
        rows, starts = self._plan(shard, num_shards)
        if self._batch_size is not None:
            bs = self._batch_size
            stop = len(rows) - len(rows) % bs if self._drop_last else len(rows)
            for i in range(0, stop, bs):
                yield self._map.__getitems__(rows[i : i + bs])
            return
        for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
            yield from _unbatch(self._map._batch(rows[a:b]), b - a)


def _unbatch(batch: dict[str, Any] | tuple[Any, Any], n: int) -> Iterator[Any]:
    """The single samples of a batch from :meth:`ImageTableDataset.__getitems__`."""
    if isinstance(batch, tuple):
        x, y = batch
        for j in range(n):
            yield x[j], (y[j].item() if hasattr(y[j], "item") else y[j])
        return
    for j in range(n):
        s: dict[str, Any] = {}
        for k, v in batch.items():
            e = v[j]
            s[k] = e.item() if hasattr(e, "item") and getattr(e, "ndim", 0) == 0 else e
        yield s


# -- chunked datasets -------------------------------------------------------------------


def _open_chunked(
    dataset_or_path: Dataset | str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> _PerProcess:
    check_storage_options(storage_options, dataset_or_path)
    so = dict(storage_options or {})
    if isinstance(dataset_or_path, Dataset):
        ds = dataset_or_path
    elif is_remote(dataset_or_path):
        ds = open_dataset(str(dataset_or_path), storage_options=so)
    elif isinstance(dataset_or_path, (str, os.PathLike)):
        ds = open_dataset(_catalog_part(Path(dataset_or_path), DATASET_NAME), storage_options=so)
    else:
        raise TypeError(
            f"expected an omeframe.Dataset, a dataset directory or a catalog directory, "
            f"got {type(dataset_or_path).__name__}"
        )
    # A dataset pickles as its location, storage options and generation: every worker reads the
    # generation the samples were planned on, even after another writer appends or overwrites.
    return _PerProcess(ds, pickle.dumps(ds), ds.where, "dataset")


def _label_namer(with_labels: str | Callable[[str], str] | None) -> Callable[[str], str] | None:
    if with_labels is None:
        return None
    if callable(with_labels):
        return with_labels
    if isinstance(with_labels, str) and "{image_id}" in with_labels:
        pattern = with_labels
        return lambda image_id: pattern.format(image_id=image_id)
    raise ValueError(
        f"with_labels must be a pattern holding '{{image_id}}' (e.g. '{{image_id}}_labels') or a "
        f"callable image_id -> label image id, got {with_labels!r}"
    )


class DatasetPatchDataset:
    """Map-style patches of the images of a chunked dataset (or a catalog's dataset).

    Parameters
    ----------
    dataset_or_path
        An :class:`omeframe.Dataset`, a dataset directory or URL, or a
        catalog directory (its ``dataset/``).
    patch_shape
        ``(Y, X)`` for 2-D patches (one plane of one time point) or
        ``(Z, Y, X)`` for 3-D patches.
    images
        Image ids to cut patches from (default: every image that is not the
        label image of another).
    level
        Pyramid level to read.
    with_labels
        Return the matching patch of a label image too: a pattern such as
        ``"{image_id}_labels"`` or a callable ``image_id -> label image id``.
        The label image must have the image's T, Z, Y and X sizes.
    n_patches
        Random patches: this many per epoch, placed uniformly over all valid
        positions of all images (so larger images give more), seeded by
        ``seed`` and :meth:`set_epoch`.
    stride
        Gridded patches instead: origins every ``stride`` pixels along each
        patch axis (``(Y, X)`` or ``(Z, Y, X)``), over every time point (and
        plane, for 2-D patches); the last row and column of the grid end at
        the image's edge. Give ``n_patches`` or ``stride``.
    seed
        Seed of the random patches.
    transform
        Called on the batch tensor ``(n, C, [Z,] Y, X)`` of image patches
        (``__getitem__`` calls it on a batch of one); labels are not
        transformed.

    Notes
    -----
    A sample is ``{"image": tensor(C, [Z,] Y, X), "image_id": str,
    "origin": tensor([t, z, y, x])}`` plus ``"label"`` with ``with_labels``.
    Each patch reads only the chunks it overlaps. ``__getitems__`` stacks a
    batch into contiguous tensors (use ``collate_fn=omeframe.torch.collate``).

    Example
    -------
    >>> import numpy as np, omeframe as of                              # doctest: +SKIP
    >>> img = np.zeros((1, 2, 1, 128, 128), np.uint16)                  # doctest: +SKIP
    >>> of.write_dataset([img, img[:, :1].astype(np.uint8)], "s.omeds", dim_order="TCZYX",
    ...                  image_ids=["a", "a_labels"], progress=False)   # doctest: +SKIP
    >>> ds = DatasetPatchDataset("s.omeds", patch_shape=(32, 32), n_patches=100,
    ...                          with_labels="{image_id}_labels")       # doctest: +SKIP
    >>> ds[0]["image"].shape, ds[0]["label"].shape                       # doctest: +SKIP
    (torch.Size([2, 32, 32]), torch.Size([1, 32, 32]))
    """

    def __init__(
        self,
        dataset_or_path: Dataset | str | os.PathLike[str],
        *,
        patch_shape: Sequence[int],
        images: Sequence[str] | None = None,
        level: int = 0,
        with_labels: str | Callable[[str], str] | None = None,
        n_patches: int | None = None,
        stride: Sequence[int] | None = None,
        seed: int = 0,
        transform: Transform | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        _torch()
        ps = _sizes("patch_shape", patch_shape, (2, 3), "(Y, X) or (Z, Y, X)")
        _check_transform(transform)
        _integer("seed", seed, 0, "the seed of the random patches")
        self._source = _open_chunked(dataset_or_path, storage_options)
        ds: Dataset = self._source.get()
        self._patch = ps if len(ps) == 3 else (1, *ps)
        self._three_d = len(ps) == 3
        if (n_patches is None) == (stride is None):
            raise ValueError("give n_patches= (random patches) or stride= (a grid of patches), exactly one")
        namer = _label_namer(with_labels)
        all_ids = ds.image_ids
        if images is None:
            label_ids = {namer(i) for i in all_ids} if namer else set()
            ids = [i for i in all_ids if i not in label_ids]
        else:
            if isinstance(images, str):
                raise TypeError(f"images must be a list of image ids, got the string {images!r}")
            ids = list(images)
        if not ids:
            raise ValueError(f"no images to cut patches from in {self._source.path!r}")
        self._level = int(level)
        self._ids = ids
        self._labels: list[str] | None = None
        shapes = []
        for iid in ids:
            shape = ds.entry(iid, self._level).shape  # ImageNotFoundError names the dataset
            t, _, z, y, x = shape
            if y < self._patch[1] or x < self._patch[2] or z < self._patch[0]:
                raise ValueError(
                    f"image {iid!r} (TCZYX {shape}) is smaller than the patch {ps}; pick a smaller "
                    "patch_shape or leave the image out with images="
                )
            shapes.append(shape)
        if namer is not None:
            self._labels = []
            for iid, shape in zip(ids, shapes, strict=True):
                lid = namer(iid)
                try:
                    lshape = ds.entry(lid, self._level).shape
                except ImageNotFoundError as exc:
                    raise ImageNotFoundError(f"image {iid!r} has no label image {lid!r}: {exc}") from exc
                if (lshape[0], *lshape[2:]) != (shape[0], *shape[2:]):
                    raise ValueError(
                        f"label image {lid!r} (TCZYX {lshape}) does not match image {iid!r} (TCZYX "
                        f"{shape}) in T, Z, Y and X"
                    )
                self._labels.append(lid)
        self._shapes = np.asarray(shapes, dtype=np.int64).reshape(len(ids), 5)
        self._transform = transform
        self._seed = int(seed)
        self._epoch = 0
        self._n_patches = None if n_patches is None else _integer("n_patches", n_patches, 1, "random patches per epoch")
        self._stride: tuple[int, int, int] | None = None
        if stride is not None:
            st = _sizes("stride", stride, (len(ps),), f"{len(ps)} sizes like patch_shape {ps}")
            self._stride = (st[0], st[1], st[2]) if len(st) == 3 else (1, st[0], st[1])
        self._origins = self._make_origins()

    # -- patch positions ---------------------------------------------------------------
    def _valid(self) -> np.ndarray:
        """Per image: number of valid origins along T, Z, Y, X (``(n_images, 4)``)."""
        s = self._shapes
        pz, py, px = self._patch
        return np.stack([s[:, 0], s[:, 2] - pz + 1, s[:, 3] - py + 1, s[:, 4] - px + 1], axis=1)

    def _make_origins(self) -> np.ndarray:
        """``(n, 5)`` int64: image index, t, z, y, x of every patch."""
        valid = self._valid()
        if self._n_patches is not None:
            check_alloc(self._n_patches * 5 * 8 * 3, f"the origins of n_patches={self._n_patches} patches")
            rng = np.random.default_rng([self._seed, self._epoch])
            weight = valid.prod(axis=1).astype(np.float64)
            img = rng.choice(len(valid), size=self._n_patches, p=weight / weight.sum())
            pos = np.floor(rng.random((self._n_patches, 4)) * valid[img]).astype(np.int64)
            return np.concatenate([img[:, None], pos], axis=1)
        assert self._stride is not None
        out = []
        for i, (nt, nz, ny, nx) in enumerate(valid.tolist()):
            axes = [np.arange(nt)]
            for n, s in zip((nz, ny, nx), self._stride, strict=True):
                g = np.arange(0, n, s)
                if g[-1] != n - 1:
                    g = np.append(g, n - 1)  # the last patch ends at the edge
                axes.append(g)
            grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 4)
            out.append(np.concatenate([np.full((len(grid), 1), i), grid], axis=1))
        return np.concatenate(out).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Draw new random patches for ``epoch`` (gridded patches do not change)."""
        self._epoch = _integer("epoch", epoch, 0, "the epoch, which reseeds the random patches")
        self._origins = self._make_origins()

    @property
    def origins(self) -> np.ndarray:
        """``(n, 5)`` int64 array of (image index, t, z, y, x) patch origins."""
        return self._origins

    @property
    def image_ids(self) -> list[str]:
        """The images patches are cut from (``origins[:, 0]`` indexes them)."""
        return list(self._ids)

    @property
    def dataset(self) -> Dataset:
        """The :class:`omeframe.Dataset` of this process (reopened after a fork)."""
        ds: Dataset = self._source.get()
        return ds

    def __len__(self) -> int:
        return len(self._origins)

    def __repr__(self) -> str:
        return (
            f"DatasetPatchDataset({self._source.path!r}, images={len(self._ids)}, patches={len(self)}, "
            f"patch_shape={self._patch if self._three_d else self._patch[1:]})"
        )

    # -- reads ---------------------------------------------------------------------------
    def _region(self, ds: Dataset, image_id: str, o: np.ndarray) -> np.ndarray:
        _, t, z, y, x = (int(v) for v in o)
        pz, py, px = self._patch
        try:
            a = ds.read(image_id, self._level, t=[t], z=list(range(z, z + pz)), y=(y, y + py), x=(x, x + px))
        except (pa.ArrowException, OSError) as exc:
            raise _read_error(self._source.path, exc) from exc
        a = a[0]  # C, Z, Y, X
        return a if self._three_d else a[:, 0]

    def _check(self, index: Any) -> int:
        if not is_integer(index):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if not 0 <= int(index) < len(self._origins):
            raise RowIndexError(
                f"patch {int(index)} is out of range: the dataset has {len(self._origins)} patches "
                f"(valid 0..{len(self._origins) - 1}; negative indices are not allowed)"
            )
        return int(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Patch ``index`` as a sample (see the class notes)."""
        return _unbatch_one(self._batch([self._check(index)]))

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A batch of patches, stacked into contiguous tensors."""
        return _for_transport(_torch(), self._batch(indices))

    def _batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch of ``indices`` as this process uses it (:meth:`__getitems__` prepares it for sending)."""
        torch = _torch()
        idx = [self._check(i) for i in indices]
        if not idx:
            raise ValueError("__getitems__ needs at least one patch index")
        ds = self.dataset
        o = self._origins[idx]
        images = np.stack([self._region(ds, self._ids[int(r[0])], r) for r in o])
        x = _as_tensor(torch, images)
        if self._transform is not None:
            x = self._transform(x)
        out: dict[str, Any] = {
            "image": x,
            "image_id": [self._ids[int(r[0])] for r in o],
            "origin": torch.from_numpy(np.ascontiguousarray(o[:, 1:])),
        }
        if self._labels is not None:
            labels = self._labels
            out["label"] = _as_tensor(torch, np.stack([self._region(ds, labels[int(r[0])], r) for r in o]))
        return out


def _unbatch_one(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v[0] for k, v in batch.items()}

