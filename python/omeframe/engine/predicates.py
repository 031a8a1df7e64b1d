"""Predicates over per-chunk statistics: ``chunk.max > 1000`` and friends.

A predicate evaluates to one boolean per chunk from the statistics a dataset
stores (``min``, ``max``, ``mean``, ``nonzero``); a plan skips the chunks for
which it is false without reading them (their pixels read as zero).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

__all__ = ["chunk", "ChunkPredicate", "ChunkStat"]

Stats = dict[str, np.ndarray]
_STATS = ("min", "max", "mean", "nonzero")


# Module-level pieces of predicates (not lambdas), so plans with filters pickle.
def _both(a: ChunkPredicate, b: ChunkPredicate, s: Stats) -> np.ndarray:
    return a(s) & b(s)


def _either(a: ChunkPredicate, b: ChunkPredicate, s: Stats) -> np.ndarray:
    return a(s) | b(s)


def _negate(a: ChunkPredicate, s: Stats) -> np.ndarray:
    return ~a(s)


def _compare(op: Callable[[Any, Any], Any], name: str, value: float, s: Stats) -> np.ndarray:
    return np.asarray(op(s[name], value))


@dataclass(frozen=True)
class ChunkPredicate:
    """A boolean expression over chunk statistics."""

    fn: Callable[[Stats], np.ndarray]
    text: str

    def __call__(self, stats: Stats) -> np.ndarray:
        return np.asarray(self.fn(stats), dtype=bool)

    def _operand(self, op: str, other: object) -> ChunkPredicate:
        if not isinstance(other, ChunkPredicate):
            raise TypeError(
                f"a chunk predicate can only be combined with another chunk predicate, got "
                f"({self.text}) {op} {type(other).__name__} {other!r}; build both sides from omeframe.chunk, "
                "e.g. (chunk.max > 100) & (chunk.min < 5)"
            )
        return other

    def __and__(self, other: ChunkPredicate) -> ChunkPredicate:
        other = self._operand("&", other)
        return ChunkPredicate(partial(_both, self, other), f"({self.text}) & ({other.text})")

    def __or__(self, other: ChunkPredicate) -> ChunkPredicate:
        other = self._operand("|", other)
        return ChunkPredicate(partial(_either, self, other), f"({self.text}) | ({other.text})")

    def __invert__(self) -> ChunkPredicate:
        return ChunkPredicate(partial(_negate, self), f"~({self.text})")

    def __bool__(self) -> bool:
        raise TypeError("use & | ~ to combine chunk predicates, not 'and'/'or'/'not'")

    def __repr__(self) -> str:
        return f"<ChunkPredicate {self.text}>"


@dataclass(frozen=True)
class ChunkStat:
    """One statistic column (``chunk.max`` ...); compare it to build a predicate."""

    name: str

    def _cmp(self, op: Callable[[Any, Any], Any], sym: str, value: float) -> ChunkPredicate:
        if not isinstance(value, (int, float, np.number)):
            raise TypeError(f"compare chunk.{self.name} with a number, got {type(value).__name__}")
        if isinstance(value, (float, np.floating)) and math.isnan(value):
            raise ValueError(
                f"chunk.{self.name} {sym} nan would be {'true' if sym == '!=' else 'false'} for every chunk "
                "(NaN compares unequal to everything); compare with a real number"
            )
        name = self.name
        return ChunkPredicate(partial(_compare, op, name, value), f"chunk.{name} {sym} {value!r}")

    def __gt__(self, v: float) -> ChunkPredicate:
        return self._cmp(operator.gt, ">", v)

    def __ge__(self, v: float) -> ChunkPredicate:
        return self._cmp(operator.ge, ">=", v)

    def __lt__(self, v: float) -> ChunkPredicate:
        return self._cmp(operator.lt, "<", v)

    def __le__(self, v: float) -> ChunkPredicate:
        return self._cmp(operator.le, "<=", v)

    def __eq__(self, v: object) -> ChunkPredicate:  # type: ignore[override]
        return self._cmp(operator.eq, "==", v)  # type: ignore[arg-type]

    def __ne__(self, v: object) -> ChunkPredicate:  # type: ignore[override]
        return self._cmp(operator.ne, "!=", v)  # type: ignore[arg-type]

    __hash__ = object.__hash__


class _ChunkNamespace:
    """``omeframe.chunk``: the statistics a chunk predicate can use."""

    min = ChunkStat("min")
    max = ChunkStat("max")
    mean = ChunkStat("mean")
    nonzero = ChunkStat("nonzero")

    def __repr__(self) -> str:
        return f"<omeframe.chunk: {', '.join(_STATS)}>"


chunk = _ChunkNamespace()
