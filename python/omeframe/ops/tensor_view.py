"""Tensor views: numpy/DLPack/torch/JAX access to a selection, eager or lazy.

:class:`LazyTensorView` is a plan: its ``shape``, ``dtype``, ``layout`` and
``strides`` are known without reading pixels, and ``collect()`` reads only the
chunks the view touches. :class:`TensorView` holds the result (read once,
then reused). Both iterate batches or tiles with real prefetch: a background
thread reads the next ``prefetch`` items while the caller works on the current.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from omeframe.engine.lazy import LazyImage
from omeframe.formats.array.source import RecordSource
from omeframe.formats.custom.planes import PlaneLoaderSource
from omeframe.model.errors import OptionalDependencyError
from omeframe.model.selection import Selection
from omeframe.ops.display import tensor_view_html
from omeframe.ops.tensor_spec import (
    UNSET,
    ViewSpec,
    layout_shape,
    resolve_view,
    to_layout,
)

__all__ = ["TensorView", "LazyTensorView"]

Device = Literal["cpu", "cuda"]


def _check_device(device: str) -> str:
    d = str(device).strip().lower()
    if d not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return d


def _check_mode(mode: str) -> str:
    m = str(mode).strip().lower()
    if m not in ("arrow", "numpy"):
        raise ValueError(f"mode must be 'arrow' (flat 1-D buffer) or 'numpy' (shaped), got {mode!r}")
    return m


def _export(arr: np.ndarray, device: str, contiguous: bool, mode: str) -> Any:
    """A DLPack-compatible object for ``arr`` (numpy on CPU, torch tensor on CUDA)."""
    device, mode = _check_device(device), _check_mode(mode)
    if mode == "arrow":
        arr = np.ascontiguousarray(arr).reshape(-1)
    elif contiguous:
        arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # DLPack cannot export read-only numpy arrays
        arr = arr.copy()
    if device == "cuda":
        torch = _torch()
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was requested but torch reports no CUDA device")
        return torch.from_dlpack(arr).to("cuda")
    return arr


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise OptionalDependencyError("to_torch needs PyTorch: pip install 'omeframe[torch]'") from exc
    return torch


def _jax() -> Any:
    try:
        import jax
        import jax.numpy as jnp  # noqa: F401
    except ImportError as exc:
        raise OptionalDependencyError("to_jax needs JAX: pip install 'omeframe[jax]'") from exc
    return jax


def _prefetched(tasks: list[Any], run: Any, prefetch: int) -> Iterator[Any]:
    """Yield ``run(task)`` in order, computing up to ``prefetch`` items ahead."""
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, got {prefetch}")
    if prefetch == 0:
        for task in tasks:
            yield run(task)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="omeframe-prefetch") as ex:
        queue: deque[Future[Any]] = deque()
        it = iter(tasks)
        for task in it:
            queue.append(ex.submit(run, task))
            if len(queue) > prefetch:
                break
        while queue:
            fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(ex.submit(run, nxt))
            yield fut.result()


class _ViewBase:
    """What lazy and eager views share: the plan, the spec and iteration."""

    _plan: LazyImage
    _spec: ViewSpec

    def __init__(self, plan: LazyImage, spec: ViewSpec) -> None:
        self._base = plan
        self._spec = spec
        self._plan, self._layout, _ = resolve_view(plan, spec)

    @property
    def layout(self) -> str:
        """Axis letters of the output (e.g. ``"CYX"``, ``"TZCYX"``)."""
        return self._layout

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape in :attr:`layout` order (known without reading pixels)."""
        return layout_shape(self._plan.shape, self._layout)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Output dtype (known without reading pixels)."""
        return self._plan.out_dtype

    @property
    def strides(self) -> tuple[int, ...]:
        """Byte strides of the C-contiguous result in :attr:`layout` order."""
        shape = self.shape
        out = []
        acc = self.dtype.itemsize
        for n in reversed(shape):
            out.append(acc)
            acc *= n
        return tuple(reversed(out))

    @property
    def device(self) -> str:
        """Where the data lives (``"cpu"``)."""
        return "cpu"

    def explain(self) -> str:
        """The read plan behind this view."""
        return self._plan.explain() + f"\n  layout:    {self._layout} {self.shape}"

    # ---- iteration --------------------------------------------------------
    def _read_part(self, part: dict[str, Any]) -> np.ndarray:
        """TCZYX pixels of one iteration item (a selection in this view's coordinates)."""
        raise NotImplementedError

    def _items(
        self, *, batch_size: int | None, tile_size: tuple[int, ...] | None, three_d: bool
    ) -> list[dict[str, Any]]:
        st, sc, sz, sy, sx = self._plan.shape
        t_steps = [(0, st)]
        if batch_size is not None:
            if int(batch_size) <= 0:
                raise ValueError(f"batch_size must be positive, got {batch_size}")
            t_steps = [(a, min(st, a + int(batch_size))) for a in range(0, st, int(batch_size))]
        if tile_size is None:
            spatial = [((0, sz), (0, sy), (0, sx))]
        else:
            if three_d:
                tz, th, tw = (int(v) for v in tile_size)
            else:
                th, tw = (int(v) for v in tile_size)
                tz = sz
            if min(tz, th, tw) <= 0:
                raise ValueError(f"tile sizes must be positive, got {tile_size}")
            spatial = [
                ((z, min(sz, z + tz)), (y, min(sy, y + th)), (x, min(sx, x + tw)))
                for z in range(0, sz, tz)
                for y in range(0, sy, th)
                for x in range(0, sx, tw)
            ]
        return [
            {"t": slice(t0, t1), "z": slice(z0, z1), "y": (y0, y1), "x": (x0, x1)}
            for (t0, t1) in t_steps
            for (z0, z1), (y0, y1), (x0, x1) in spatial
        ]

    def _iterate(
        self,
        items: list[dict[str, Any]],
        *,
        shuffle: bool,
        seed: int | None,
        prefetch: int,
        device: str,
        contiguous: bool,
        mode: str,
    ) -> Iterator[Any]:
        _check_device(device)
        _check_mode(mode)
        if shuffle:
            random.Random(seed).shuffle(items)

        def run(sel: dict[str, Any]) -> Any:
            arr = to_layout(self._read_part(sel), self._layout)
            return _export(arr, device, contiguous, mode)

        return _prefetched(items, run, int(prefetch))

    def iter_dlpack(
        self,
        *,
        batch_size: int | None = None,
        tile_size: tuple[int, int] | None = None,
        tiles: tuple[int, int] | None = None,
        shuffle: bool = False,
        seed: int | None = None,
        prefetch: int = 0,
        device: Device = "cpu",
        contiguous: bool = True,
        mode: str = "arrow",
    ) -> Iterator[Any]:
        """Iterate DLPack-compatible arrays over T batches and/or 2-D tiles.

        Parameters
        ----------
        batch_size
            T indices per item (default: all T in one item).
        tile_size
            ``(tile_h, tile_w)`` spatial tiles (edge tiles are smaller).
        tiles
            Deprecated alias of ``tile_size``.
        shuffle, seed
            Visit items in a random (seeded) order.
        prefetch
            Items read ahead in a background thread while the caller works.
        device, contiguous, mode
            As in :meth:`to_dlpack`.
        """
        if tiles is not None:
            if tile_size is not None:
                raise ValueError("pass tile_size or its deprecated alias tiles, not both")
            tile_size = tiles
        items = self._items(batch_size=batch_size, tile_size=tile_size, three_d=False)
        return self._iterate(
            items, shuffle=shuffle, seed=seed, prefetch=prefetch, device=device, contiguous=contiguous, mode=mode
        )

    def iter_tiles_3d(
        self,
        *,
        tile_size: tuple[int, int, int],
        shuffle: bool = False,
        seed: int | None = None,
        prefetch: int = 0,
        device: Device = "cpu",
        contiguous: bool = True,
        mode: str = "numpy",
    ) -> Iterator[Any]:
        """Iterate ``(tile_z, tile_h, tile_w)`` 3-D tiles as DLPack-compatible arrays."""
        if len(tuple(tile_size)) != 3:
            raise ValueError(f"tile_size must be (tile_z, tile_h, tile_w), got {tile_size!r}")
        if mode != "numpy":
            raise ValueError(
                f"iter_tiles_3d supports only mode='numpy' (shaped tiles), got mode={mode!r}; "
                "flat Arrow buffers cannot hold a 3-D tile"
            )
        items = self._items(batch_size=None, tile_size=tuple(tile_size), three_d=True)
        return self._iterate(
            items, shuffle=shuffle, seed=seed, prefetch=prefetch, device=device, contiguous=contiguous, mode=mode
        )


class TensorView(_ViewBase):
    """A selection of an image's pixels as a tensor (read once, then reused).

    Parameters
    ----------
    data
        An OME-Arrow record (``StructScalar``, dict, or 1-row
        ``StructArray``/``ChunkedArray``) or a lazy plan.
    plane_loader
        Optional ``(t, z, c) -> (Y, X) array`` used instead of the record's
        pixels (for source-backed records whose ``data`` carries metadata only).
    t, z, c
        Index selection per axis: int, slice or sequence (default: all).
    roi
        ``(x, y, w, h)`` spatial crop.
    roi3d
        ``(x, y, z, w, h, d)``: ``roi`` plus ``z=slice(z, z + d)``.
    roi_nd, roi_type
        Min/max bounds: ``"2d"`` (ymin, xmin, ymax, xmax); ``"2d_timelapse"``
        (tmin, ymin, xmin, tmax, ymax, xmax); ``"3d"`` (zmin, ymin, xmin, zmax,
        ymax, xmax); ``"4d"`` (tmin, zmin, ymin, xmin, tmax, zmax, ymax, xmax).
    tile
        ``(tile_y, tile_x)`` index into the image's chunk grid.
    layout
        Output axis letters from TZCYX (H/W accepted for Y/X). Default:
        ``"CYX"`` for a single T and Z, else ``"TZCYX"``.
    dtype
        Output dtype (values clipped into its range).
    chunk_policy
        For ``ChunkedArray`` input: ``"combine"`` merges its chunks first;
        ``"auto"``/``"keep"`` read them where they are.
    channel_policy
        When the layout drops C with several channels selected: ``"error"``
        or ``"first"`` (keep channel 0 of the selection).
    """

    def __init__(
        self,
        data: Any,
        *,
        plane_loader: Any = None,
        t: int | slice | Sequence[int] | None = None,
        z: int | slice | Sequence[int] | None = None,
        c: int | slice | Sequence[int] | None = None,
        roi: tuple[int, int, int, int] | None = None,
        roi3d: tuple[int, int, int, int, int, int] | None = None,
        roi_nd: tuple[int, ...] | None = None,
        roi_type: Literal["2d", "2d_timelapse", "3d", "4d"] | None = None,
        tile: tuple[int, int] | None = None,
        layout: str | None = None,
        dtype: Any = None,
        chunk_policy: Literal["auto", "combine", "keep"] = "auto",
        channel_policy: Literal["error", "first"] = "error",
    ) -> None:
        if chunk_policy not in ("auto", "combine", "keep"):
            raise ValueError(f"chunk_policy must be 'auto', 'combine' or 'keep', got {chunk_policy!r}")
        if isinstance(data, LazyImage):
            if plane_loader is not None:
                raise ValueError("plane_loader= reads the planes of a record; data is a plan already: drop it")
            plan = data
        else:
            if isinstance(data, pa.ChunkedArray) and chunk_policy == "combine":
                data = data.combine_chunks()
            if plane_loader is not None:
                plan = LazyImage(PlaneLoaderSource(data, plane_loader))
            else:
                plan = LazyImage(RecordSource(data))
        spec = ViewSpec(t, z, c, roi, roi3d, roi_nd, roi_type, tile, layout, dtype, channel_policy)
        super().__init__(plan, spec)
        self._array: np.ndarray | None = None

    @classmethod
    def _from_array(cls, plan: LazyImage, spec: ViewSpec, array: np.ndarray | None) -> TensorView:
        view = cls.__new__(cls)
        _ViewBase.__init__(view, plan, spec)
        view._array = array
        return view

    def __getstate__(self) -> dict[str, Any]:
        # A view pickles as what it was opened from (its plan: a path and options, or
        # an in-memory record) and its spec; the receiving process reads it lazily.
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    def _tczyx(self) -> np.ndarray:
        if self._array is None:
            self._array = self._plan.execute()
        return self._array

    def _read_part(self, part: dict[str, Any]) -> np.ndarray:
        if self._array is None:  # not read yet: read just this part
            return self._plan.select(**part).execute()
        # already in memory: the same selection applied to the array
        return Selection.normalize(self._array.shape, **part).apply(self._array)

    def to_numpy(self, *, contiguous: bool = False) -> np.ndarray:
        """The view as a numpy array in :attr:`layout` (a view unless ``contiguous``)."""
        arr = to_layout(self._tczyx(), self._layout)
        return np.ascontiguousarray(arr) if contiguous else arr

    def to_dlpack(self, *, device: Device = "cpu", contiguous: bool = True, mode: str = "arrow") -> Any:
        """A DLPack-compatible array: flat 1-D (``mode="arrow"``) or shaped (``"numpy"``)."""
        return _export(self.to_numpy(), device, contiguous, mode)

    def to_torch(self, *, device: Device = "cpu", contiguous: bool = True, mode: str = "numpy") -> Any:
        """The view as a ``torch.Tensor`` (shares memory on CPU)."""
        torch = _torch()
        obj = self.to_dlpack(device=device, contiguous=contiguous, mode=mode)
        return obj if isinstance(obj, torch.Tensor) else torch.from_dlpack(obj)

    def to_jax(self, *, device: Device = "cpu", contiguous: bool = True, mode: str = "numpy") -> Any:
        """The view as a ``jax.Array``."""
        jax = _jax()
        if _check_device(device) != "cpu":
            raise RuntimeError("to_jax(device='cuda') is not supported; move the array with jax.device_put")
        return jax.numpy.from_dlpack(self.to_dlpack(device="cpu", contiguous=contiguous, mode=mode))

    def with_layout(self, layout: str) -> TensorView:
        """The same data in another layout (no re-read)."""
        spec = self._spec.updated(layout=layout)
        return TensorView._from_array(self._base, spec, self._array)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = self.to_numpy()
        return arr.astype(dtype) if dtype is not None else arr

    def __repr__(self) -> str:
        return f"<TensorView layout={self.layout} shape={self.shape} dtype={self.dtype}>"

    def _repr_html_(self) -> str:
        """Notebook display: layout, shape, dtype, channels (metadata only)."""
        return tensor_view_html(self, lazy=False)


class LazyTensorView(_ViewBase):
    """A deferred :class:`TensorView`: nothing is read until ``collect()``/``to_*``."""

    def __init__(self, plan: LazyImage, spec: ViewSpec | None = None, **kwargs: Any) -> None:
        super().__init__(plan, spec if spec is not None else ViewSpec(**kwargs))

    def collect(self) -> TensorView:
        """Read the view's chunks and return the concrete :class:`TensorView`."""
        return TensorView._from_array(self._base, self._spec, self._plan.execute())

    def _read_part(self, part: dict[str, Any]) -> np.ndarray:
        return self._plan.select(**part).execute()

    def select(
        self,
        *,
        t: Any = UNSET,
        z: Any = UNSET,
        c: Any = UNSET,
        roi: Any = UNSET,
        roi3d: Any = UNSET,
        roi_nd: Any = UNSET,
        roi_type: Any = UNSET,
        tile: Any = UNSET,
    ) -> LazyTensorView:
        """A new lazy view with some selections replaced (others kept)."""
        spec = self._spec.updated(t=t, z=z, c=c, roi=roi, roi3d=roi3d, roi_nd=roi_nd, roi_type=roi_type, tile=tile)
        return LazyTensorView(self._base, spec)

    def with_layout(self, layout: str) -> LazyTensorView:
        """A new lazy view with another layout."""
        return LazyTensorView(self._base, self._spec.updated(layout=layout))

    def to_numpy(self, *, contiguous: bool = False) -> np.ndarray:
        """Read and return the view as numpy (see :meth:`TensorView.to_numpy`)."""
        return self.collect().to_numpy(contiguous=contiguous)

    def to_dlpack(self, *, device: Device = "cpu", contiguous: bool = True, mode: str = "arrow") -> Any:
        return self.collect().to_dlpack(device=device, contiguous=contiguous, mode=mode)

    def to_torch(self, *, device: Device = "cpu", contiguous: bool = True, mode: str = "numpy") -> Any:
        return self.collect().to_torch(device=device, contiguous=contiguous, mode=mode)

    def to_jax(self, *, device: Device = "cpu", contiguous: bool = True, mode: str = "numpy") -> Any:
        return self.collect().to_jax(device=device, contiguous=contiguous, mode=mode)

    def __repr__(self) -> str:
        return f"<LazyTensorView layout={self.layout} shape={self.shape} dtype={self.dtype} (not read)>"

    def _repr_html_(self) -> str:
        """Notebook display: layout, shape, dtype, channels and what collecting reads."""
        return tensor_view_html(self, lazy=True)
