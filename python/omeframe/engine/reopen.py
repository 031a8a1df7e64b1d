"""Pickle file-backed objects as what they were opened from, and reopen them once per process.

A source opened from a path (or URL) holds open files, locks and parsed
metadata that cannot cross a process boundary. What can is its *recipe*: the
function that opened it and that function's arguments (path strings and
option values). :func:`set_recipe` attaches one to an object; such objects
pickle as ``reopen(fn, args)``, so the receiving process (a spawn-started
worker, a ``dask.distributed`` worker, a PyTorch ``DataLoader`` worker) opens
the object afresh from its path when it unpickles it.

Unpickling the same recipe again in one process returns the object opened the
first time (a small per-process LRU of :data:`MAX_REOPENED` objects): a Dask
graph of ten thousand chunk tasks that each carry the same plan opens its
dataset once per worker, not once per task. Recipes carry what makes them
safe to share: a dataset's recipe names its committed generation, a file's
recipe its size and modification time when it was opened, so a file rewritten
in place is opened anew rather than served from the cache.

Example
-------
A source opened from a file carries its recipe (the registry's opener, the
path, the options and the file's size and modification time):

>>> import os, pickle, tempfile, numpy as np
>>> from omeframe.engine.reopen import recipe_of
>>> from omeframe.registry import open_source
>>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
>>> np.save(path, np.zeros((4, 4), np.uint8))
>>> src = open_source(path)
>>> recipe_of(src)[1][0] == path
True
>>> copy = pickle.loads(pickle.dumps(src))  # reopened from the path ...
>>> copy is src, copy is pickle.loads(pickle.dumps(src))  # ... once per process
(False, True)
"""

from __future__ import annotations

import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["MAX_REOPENED", "Recipe", "recipe_of", "reopen", "set_recipe", "file_stamp", "clear_reopened"]

#: How many reopened objects a process keeps (least recently used dropped first).
MAX_REOPENED = 128

#: ``(function, arguments)``: calling ``function(*arguments)`` opens the object again.
Recipe = tuple[Callable[..., Any], tuple[Any, ...]]

_T = TypeVar("_T")
_ATTR = "_omeframe_recipe"
_opened: OrderedDict[tuple[Callable[..., Any], bytes], Any] = OrderedDict()
_lock = threading.Lock()
_pid = os.getpid()


def set_recipe(obj: _T, fn: Callable[..., Any], args: tuple[Any, ...]) -> _T:
    """Record that ``fn(*args)`` opens ``obj`` again; returns ``obj``.

    ``fn`` must be importable by name (a module-level function or class) and
    ``args`` picklable; keep them small (paths, option values), since they
    are what a pickle of ``obj`` carries.
    """
    try:
        object.__setattr__(obj, _ATTR, (fn, tuple(args)))
    except AttributeError as exc:  # objects with __slots__ and no __dict__
        raise TypeError(f"cannot attach a reopen recipe to a {type(obj).__name__}: {exc}") from exc
    return obj


def recipe_of(obj: object) -> Recipe | None:
    """The recipe :func:`set_recipe` attached to ``obj``, or ``None``."""
    recipe: Recipe | None = getattr(obj, _ATTR, None)
    return recipe


def reopen(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``fn(*args)``, opened once per process and then reused (the unpickling side of a recipe).

    Raises
    ------
    Exception
        Whatever ``fn`` raises (e.g. ``FileNotFoundError`` when the path is
        gone); nothing is cached then.
    """
    global _pid
    key = (fn, pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL))
    with _lock:
        if os.getpid() != _pid:  # a forked child: objects of the parent hold its file handles
            _opened.clear()
            _pid = os.getpid()
        obj = _opened.get(key)
        if obj is not None:
            _opened.move_to_end(key)
            return obj
    obj = fn(*args)
    if recipe_of(obj) is None:
        set_recipe(obj, fn, args)
    with _lock:
        obj = _opened.setdefault(key, obj)
        _opened.move_to_end(key)
        while len(_opened) > MAX_REOPENED:
            _opened.popitem(last=False)
    return obj


def clear_reopened() -> None:
    """Forget the objects this process reopened (the next unpickle opens them anew)."""
    with _lock:
        _opened.clear()


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a local file or directory, ``None`` when it cannot be stat'ed (URLs)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (int(st.st_size), int(st.st_mtime_ns))
