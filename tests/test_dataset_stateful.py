"""Stateful test of dataset write / append / overwrite against an in-memory model.

The model is a dict ``image_id -> pixels`` (or ``None`` before the first
write). Every rule does the same operation to a real dataset on disk and to
the model; after each step the dataset must hold exactly the model's images
with exactly their pixels, and a random region read must equal numpy slicing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import omeframe as of
from stateful_runs import stateful_case

IDS = ["a", "b", "c", "d"]


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    shape = (1, draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    dtype = draw(st.sampled_from(["uint8", "uint16", "float32"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 200, shape).astype(dtype)


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[str, np.ndarray]]:
    """One to three images with ids from a small pool (repeats happen on purpose)."""
    n = draw(st.integers(1, 3))
    return [(draw(st.sampled_from(IDS)), draw(images())) for _ in range(n)]


options = st.fixed_dictionaries(
    {
        "chunk_shape": st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 16), st.integers(1, 16))),
        "compression": st.sampled_from(["zstd", None]),
        "frame_bytes": st.sampled_from([0, 16, 64 << 10]),
    }
)


class DatasetModel(RuleBasedStateMachine):
    """Dataset on disk vs ``dict`` of images."""

    @initialize(fmt=st.sampled_from(["parquet", "vortex"]))
    def start(self, fmt: str) -> None:
        self.tmp = tempfile.mkdtemp(prefix="omeframe-stateful-")
        self.path = Path(self.tmp) / "ds"
        self.fmt = fmt
        self.model: dict[str, np.ndarray] | None = None

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _write(self, batch: list[tuple[str, np.ndarray]], mode: str, opts: dict[str, Any]) -> None:
        of.write_dataset(
            [a for _, a in batch], self.path, format=self.fmt, mode=mode, image_ids=[i for i, _ in batch],
            dim_order="TCZYX", **opts,
        )

    @staticmethod
    def _unique(batch: list[tuple[str, np.ndarray]]) -> bool:
        return len({i for i, _ in batch}) == len(batch)

    @rule(batch=batches(), opts=options)
    def create(self, batch: list[tuple[str, np.ndarray]], opts: dict[str, Any]) -> None:
        if self.model is not None:
            with pytest.raises(FileExistsError, match="already holds a dataset"):
                self._write(batch, "create", opts)
        elif not self._unique(batch):
            with pytest.raises(ValueError, match="already in the dataset \\(or given twice\\)"):
                self._write(batch, "create", opts)
            assert not (self.path / "manifest.json").exists()  # nothing committed
        else:
            self._write(batch, "create", opts)
            self.model = dict(batch)

    @rule(batch=batches(), opts=options)
    def append(self, batch: list[tuple[str, np.ndarray]], opts: dict[str, Any]) -> None:
        present = set() if self.model is None else set(self.model)
        if not self._unique(batch) or present & {i for i, _ in batch}:
            with pytest.raises(ValueError, match="already in the dataset"):
                self._write(batch, "append", opts)
        else:
            self._write(batch, "append", opts)
            self.model = {**(self.model or {}), **dict(batch)}

    @rule(batch=batches(), opts=options)
    def overwrite(self, batch: list[tuple[str, np.ndarray]], opts: dict[str, Any]) -> None:
        if not self._unique(batch):
            with pytest.raises(ValueError, match="given twice"):
                self._write(batch, "overwrite", opts)
        else:
            self._write(batch, "overwrite", opts)
            self.model = dict(batch)

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data())
    def read_region(self, data: st.DataObject) -> None:
        assert self.model is not None
        iid = data.draw(st.sampled_from(sorted(self.model)))
        arr = self.model[iid]
        _, sc, sz, sy, sx = arr.shape
        c = data.draw(st.lists(st.integers(0, sc - 1), min_size=1, max_size=3))
        z = data.draw(st.lists(st.integers(0, sz - 1), min_size=1, max_size=3))
        y0 = data.draw(st.integers(0, sy - 1))
        y1 = data.draw(st.integers(y0 + 1, sy))
        x0 = data.draw(st.integers(0, sx - 1))
        x1 = data.draw(st.integers(x0 + 1, sx))
        with of.open_dataset(self.path) as ds:
            got = ds.read(iid, c=c, z=z, y=(y0, y1), x=(x0, x1))
        np.testing.assert_array_equal(got, arr[:, c][:, :, z][..., y0:y1, x0:x1])

    @invariant()
    def dataset_matches_model(self) -> None:
        if self.model is None:
            assert not (self.path / "manifest.json").exists()
            return
        with of.open_dataset(self.path) as ds:
            assert sorted(ds.image_ids) == sorted(self.model)
            assert ds.format == self.fmt
            for iid, arr in self.model.items():
                got = ds.read(iid)
                assert got.dtype == arr.dtype
                np.testing.assert_array_equal(got, arr)
            assert ds.verify()["chunks"] == sum(ds.entry(i).n_chunks for i in self.model)


TestDatasetModel = stateful_case(DatasetModel, examples=12, steps=6)
