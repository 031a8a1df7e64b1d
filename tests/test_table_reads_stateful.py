"""Stateful test of record-table reads against numpy: takes, walks, full reads, cache budgets, replacements.

Tables of small crops read through the pixel index, kept blocks, stitched
stacks and Vortex's splits, whichever path a read takes: the rules pick
random rows (each once, in any order), runs of consecutive rows and whole
tables, change the shared cache's budget between reads, rewrite the file
under its name (replaced by rename, or for local files also copied over in
place, under the maps of open tables) and open it again while older tables
stay open. The file lies on the local disk, in fsspec's ``memory://`` store
or on the test S3 server (where a replacement overwrites the object). Every
read must return exactly the pixels of the version its table was opened on;
a table opened before the file was replaced may instead raise
``FileChangedError`` (a read that would open the file by its name again, a
take from a map whose file was rewritten in place, or a GET of an object
that has changed), and the tables of the current version never do.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

import omeframe as of
from omeframe.engine.cache import DEFAULT_CACHE_BYTES, shared_cache
from stateful_runs import stateful_case

BUDGETS = [0, 1 << 20, 8 << 20, DEFAULT_CACHE_BYTES]


def _crops(n: int, seed: int) -> np.ndarray:
    """``n`` crops 3x4x4 (uint8) or, for odd seeds, 2x8x8 (uint16): a replacement may change both."""
    rng = np.random.default_rng(seed)
    if seed % 2:
        return rng.integers(0, 4000, (n, 2, 8, 8)).astype(np.uint16)
    return rng.integers(0, 255, (n, 3, 4, 4)).astype(np.uint8)


class TableReads(RuleBasedStateMachine):
    """Open tables, each with the stack it must read."""

    s3: Any = None  # the test S3 server, set by the fixture below

    @initialize(fmt=st.sampled_from(["parquet", "vortex"]), n=st.sampled_from([300, 9000, 17000]),
                where=st.sampled_from(["local", "memory", "s3"]))
    def start(self, fmt: str, n: int, where: str) -> None:
        if fmt == "vortex":
            pytest.importorskip("vortex")
        shared_cache().set_max_bytes(DEFAULT_CACHE_BYTES)
        shared_cache().clear()
        self.options: dict[str, Any] = {}
        self.path: Path | str
        if where == "local":
            self.tmp = tempfile.mkdtemp(prefix="omeframe-reads-")
            self.path = Path(self.tmp) / f"crops.{fmt}"
        elif where == "memory":
            self.path = f"memory://reads-{uuid.uuid4().hex[:10]}/crops.{fmt}"
        else:
            import boto3

            bucket = f"reads-{uuid.uuid4().hex[:10]}"
            boto3.client("s3", endpoint_url=self.s3.endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
            self.path, self.options = f"s3://{bucket}/crops.{fmt}", self.s3.storage_options
        self.n = n
        self.seed = 0
        self.tables: list[tuple[of.ImageTable, np.ndarray, int]] = []  # (table, its pixels, its version)
        self._write()

    def _open(self) -> of.ImageTable:
        return of.open_table(self.path, storage_options=self.options or None)

    def _write(self) -> None:
        stack = _crops(self.n, self.seed)
        of.write_table(self.path, stack, dim_order="CYX", storage_options=self.options or None)
        self.tables.append((self._open(), stack, self.seed))

    def teardown(self) -> None:
        self.tables = []
        shared_cache().set_max_bytes(DEFAULT_CACHE_BYTES)
        shared_cache().clear()
        if hasattr(self, "tmp"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _check(self, which: int, rows: np.ndarray | None) -> None:
        """Read ``rows`` (``None``: all) of table ``which``: its own pixels, or FileChangedError if it is older."""
        table, stack, version = self.tables[which % len(self.tables)]
        try:
            got = table.to_numpy(rows)
        except of.FileChangedError:
            assert version != self.seed, "a table of the current version refused to read"
            return
        assert np.array_equal(got, stack if rows is None else stack[rows])

    @rule(which=st.integers(0, 7), data=st.data())
    def take_random_rows(self, which: int, data: st.DataObject) -> None:
        k = data.draw(st.sampled_from([1, 7, 64, 256]))
        k = min(k, self.n)
        rows = data.draw(st.lists(st.integers(0, self.n - 1), min_size=k, max_size=k, unique=True))
        self._check(which, np.asarray(rows, dtype=np.int64))

    @rule(which=st.integers(0, 7), start=st.integers(0, 20000), length=st.sampled_from([1, 64, 256, 1024]))
    def take_consecutive_rows(self, which: int, start: int, length: int) -> None:
        start %= self.n
        self._check(which, np.arange(start, min(self.n, start + length)))

    @rule(which=st.integers(0, 7))
    def read_whole(self, which: int) -> None:
        self._check(which, None)

    @rule(budget=st.sampled_from(BUDGETS))
    def set_budget(self, budget: int) -> None:
        of.set_cache_bytes(budget)

    @rule()
    def replace_the_file(self) -> None:
        """Rewrite the table under its name (a new seed); tables opened before stay open."""
        self.seed += 1
        self._write()

    @rule()
    def rewrite_in_place(self) -> None:
        """Copy a new version over the local file itself (the same inode, as ``cp`` does), under open maps."""
        if not isinstance(self.path, Path):
            return  # an object is always replaced whole
        self.seed += 1
        stack = _crops(self.n, self.seed)
        staged = Path(self.tmp) / f"staged{self.path.suffix}"
        of.write_table(staged, stack, dim_order="CYX")
        time.sleep(0.01)  # past the file system's timestamp granularity: same-size rewrites show by mtime only
        shutil.copyfile(staged, self.path)
        self.tables.append((self._open(), stack, self.seed))

    @rule()
    def reopen(self) -> None:
        _, stack, version = self.tables[-1]
        self.tables.append((self._open(), stack, version))


TestTableReads = stateful_case(TableReads, examples=15, steps=20)


@pytest.fixture(autouse=True)
def _s3_server(s3: Any) -> None:
    """The machine's S3 tables live on the session's test server."""
    TableReads.s3 = s3
