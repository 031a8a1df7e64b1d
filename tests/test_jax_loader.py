"""omeframe.jax.batches: jax arrays of record-table batches (the ``jax`` fixture skips
with the reason where the test extra's JAX is not installed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import omeframe as of
from omeframe.jax import batches
from omeframe.model.errors import OptionalDependencyError
from test_torch_loader import run_loader_examples  # the how-to's loader section, shared

pytestmark = pytest.mark.usefixtures("jax")

N = 23


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 4000, (N, 3, 5, 4), dtype=np.uint16)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory, crops: np.ndarray) -> str:
    path = tmp_path_factory.mktemp("jax") / "crops.parquet"
    of.write_table(path, crops, dim_order="CYX")
    return str(path)


def _row_of(crops: np.ndarray, img: np.ndarray) -> int:
    return int(np.flatnonzero((crops == img).all(axis=(1, 2, 3)))[0])


def test_batches_in_order(table, crops, jax):
    got = list(batches(table, 10))
    assert [b.shape for b in got] == [(10, 3, 5, 4), (10, 3, 5, 4), (3, 3, 5, 4)]
    assert all(isinstance(b, jax.Array) for b in got)
    assert np.array_equal(np.concatenate([np.asarray(b) for b in got]), crops)


def test_shuffled_batches_cover_every_row_once_and_follow_the_seed(table, crops):
    def order(seed: int, epoch: int) -> list[int]:
        out = []
        for b in batches(of.open_table(table), 4, shuffle=True, seed=seed, epoch=epoch, block_size=5, buffer_blocks=2):
            out += [_row_of(crops, img) for img in np.asarray(b)]
        return out

    a, again, other = order(3, 0), order(3, 0), order(3, 1)
    assert sorted(a) == list(range(N)) and a == again and a != other and a != list(range(N))


def test_drop_last_dims_and_bad_input(table, crops):
    got = list(batches(table, 5, drop_last=True, dims="YXC"))
    assert [b.shape for b in got] == [(5, 5, 4, 3)] * 4
    assert np.array_equal(np.asarray(got[0]), crops[:5].transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="batch_size"):
        batches(table, 0)
    with pytest.raises(ValueError, match="dims"):
        batches(table, 2, dims="QYX")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        batches(table.replace("crops", "nope"), 2)


def test_without_jax_batches_raises_optional_dependency_error(table, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.setitem(sys.modules, "jax.numpy", None)
    with pytest.raises(OptionalDependencyError, match="pip install 'omeframe\\[jax\\]'"):
        batches(table, 2)


def test_the_howto_jax_example_runs(tmp_path):
    assert run_loader_examples("jax", tmp_path) == 1


def test_batches_take_numpy_integers(jax, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.parquet"
    of.write_table(path, np.zeros((6, 1, 4, 4), np.uint8), dim_order="CYX")
    assert [b.shape for b in batches(path, np.int64(4))] == [(4, 1, 4, 4), (2, 1, 4, 4)]
    assert next(batches(path, 1, shuffle=True, seed=3)).shape[0] == 1
